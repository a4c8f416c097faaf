//! [`LocalState`]: the shared state of a single server, in process. Plain data behind a few
//! mutexes, each held only to update counters; the leases it hands out give their share back
//! on drop, so a session that ends in any way gives everything back. Addresses come in
//! canonical form (the acceptor turns `::ffff:a.b.c.d` into `a.b.c.d`).

use std::collections::{HashMap, HashSet, VecDeque};
use std::net::IpAddr;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant};

use tokio::sync::Semaphore;

use crate::config::Config;
use crate::state::{
    Direction, Failure, HashTurn, Lease, LeaseKey, Limits, LimitsCell, RateLimiter, Release,
    Reserved, Room, SharedState, StateError, StateFuture, TransferPermit,
};

/// Past this many tracked addresses, expired entries are swept on the next update, so a flood
/// of addresses cannot grow the tables without bound.
const SWEEP_AT: usize = 4096;

/// How far back the per-address registration cap looks.
pub const REGISTRATION_WINDOW: Duration = Duration::from_secs(3600);

#[derive(Debug, Default)]
struct UserState {
    sessions: usize,
    transfers: usize,
    up: Option<Arc<RateLimiter>>,
    down: Option<Arc<RateLimiter>>,
}

#[derive(Debug, Default)]
struct State {
    failures: HashMap<IpAddr, VecDeque<Instant>>,
    bans: HashMap<IpAddr, Instant>,
    users: HashMap<String, UserState>,
    /// Open sessions per address.
    addresses: HashMap<IpAddr, usize>,
    /// Password hashes each address may run at once; an entry lives while someone holds or
    /// waits for one of its permits.
    hashing: HashMap<IpAddr, Arc<Semaphore>>,
}

#[derive(Debug)]
struct Inner {
    state: Mutex<State>,
    /// Recent registrations per client address, for the hourly cap. Entries older than the
    /// window are forgotten whenever the table is touched, so it holds at most an hour of
    /// registrations.
    registrations: Mutex<HashMap<IpAddr, VecDeque<Instant>>>,
    /// Files written in place now.
    write_locks: Mutex<HashSet<Vec<u8>>>,
    /// What running uploads hold, per user with any (an entry goes when it is back to zero).
    reserved: Mutex<HashMap<String, Reserved>>,
    /// Files whose size a staged upload counts on reusing, per user: one upload each.
    claims: Mutex<HashSet<(String, Vec<u8>)>>,
    limits: LimitsCell,
}

/// The shared state of one server process.
#[derive(Debug, Clone)]
pub struct LocalState {
    inner: Arc<Inner>,
}

fn lock<T>(mutex: &Mutex<T>) -> MutexGuard<'_, T> {
    // Plain counters: still consistent after a panic elsewhere.
    mutex.lock().unwrap_or_else(|e| e.into_inner())
}

impl LocalState {
    /// The state with the limits configured in `config`.
    pub fn new(config: &Config) -> LocalState {
        LocalState {
            inner: Arc::new(Inner {
                state: Mutex::default(),
                registrations: Mutex::default(),
                write_locks: Mutex::default(),
                reserved: Mutex::default(),
                claims: Mutex::default(),
                limits: LimitsCell::new(Limits::new(config)),
            }),
        }
    }

    /// The same, as the trait object the server shares.
    pub fn shared(config: &Config) -> Arc<dyn SharedState> {
        Arc::new(LocalState::new(config))
    }

    fn lease(&self, key: LeaseKey) -> Lease {
        Lease::new(Arc::clone(&self.inner) as Arc<dyn Release>, key)
    }
}

impl Inner {
    fn lock(&self) -> MutexGuard<'_, State> {
        lock(&self.state)
    }

    fn release_user(&self, user: &str, update: impl FnOnce(&mut UserState)) {
        let mut state = self.lock();
        if let Some(entry) = state.users.get_mut(user) {
            update(entry);
            if entry.sessions == 0 && entry.transfers == 0 {
                state.users.remove(user);
            }
        }
    }
}

impl Release for Inner {
    fn release(&self, key: &LeaseKey) {
        match key {
            LeaseKey::Address(ip) => {
                let mut state = self.lock();
                if let Some(n) = state.addresses.get_mut(ip) {
                    *n = n.saturating_sub(1);
                    if *n == 0 {
                        state.addresses.remove(ip);
                    }
                }
            }
            LeaseKey::UserSession(user) => {
                self.release_user(user, |u| u.sessions = u.sessions.saturating_sub(1));
            }
            LeaseKey::UserTransfer(user) => {
                self.release_user(user, |u| u.transfers = u.transfers.saturating_sub(1));
            }
            LeaseKey::WriteLock(key) => {
                lock(&self.write_locks).remove(key);
            }
            LeaseKey::QuotaClaim(user, file) => {
                lock(&self.claims).remove(&(user.clone(), file.clone()));
            }
            LeaseKey::HashTurn(ip) => {
                let mut state = self.lock();
                // Only the table holds it now: nobody from this address hashes or waits.
                if state
                    .hashing
                    .get(ip)
                    .is_some_and(|s| Arc::strong_count(s) == 1)
                {
                    state.hashing.remove(ip);
                }
            }
        }
    }
}

impl SharedState for LocalState {
    fn reconfigure(&self, config: &Config) {
        let old = self.inner.limits.reload(config);
        let new = self.inner.limits.get();
        let mut state = self.inner.lock();
        if old.user_rates != new.user_rates {
            // Each user's next transfer makes a budget at the new rate.
            for entry in state.users.values_mut() {
                entry.up = None;
                entry.down = None;
            }
        }
        if old.hashes_per_ip != new.hashes_per_ip {
            // Turns already taken keep their semaphore; new ones get the new size.
            state.hashing.clear();
        }
    }

    fn banned(&self, ip: IpAddr) -> Result<bool, StateError> {
        let mut state = self.inner.lock();
        Ok(match state.bans.get(&ip) {
            Some(until) if *until > Instant::now() => true,
            Some(_) => {
                state.bans.remove(&ip);
                false
            }
            None => false,
        })
    }

    fn login_failed(&self, ip: IpAddr) -> Result<Failure, StateError> {
        let inner = &self.inner;
        let limits = inner.limits.get();
        let now = Instant::now();
        let mut state = inner.lock();
        if state.failures.len() > SWEEP_AT {
            let window = limits.ban_window;
            state.failures.retain(|_, times| {
                times
                    .back()
                    .is_some_and(|t| now.duration_since(*t) < window)
            });
            state.bans.retain(|_, until| *until > now);
        }
        let times = state.failures.entry(ip).or_default();
        times.push_back(now);
        while times.len() > 1
            && times
                .front()
                .is_some_and(|t| now.duration_since(*t) >= limits.ban_window)
        {
            times.pop_front();
        }
        let recent = times.len();
        if limits.ban_after == 0 || recent < limits.ban_after {
            return Ok(Failure { recent, ban: None });
        }
        state.failures.remove(&ip);
        state.bans.insert(ip, now + limits.ban_for);
        Ok(Failure {
            recent,
            ban: Some(limits.ban_for),
        })
    }

    /// The rest wait here (each session has at most one request open, so the waiters are
    /// bounded by `max_sessions_per_ip`).
    fn hash_turn(&self, ip: IpAddr) -> StateFuture<HashTurn> {
        let hashes = self.inner.limits.get().hashes_per_ip;
        let semaphore = (hashes > 0).then(|| {
            let mut state = self.inner.lock();
            if state.hashing.len() > SWEEP_AT {
                // Entries whose waiters all went away.
                state.hashing.retain(|_, s| Arc::strong_count(s) > 1);
            }
            Arc::clone(
                state
                    .hashing
                    .entry(ip)
                    .or_insert_with(|| Arc::new(Semaphore::new(hashes))),
            )
        });
        let lease = semaphore
            .is_some()
            .then(|| self.lease(LeaseKey::HashTurn(ip)));
        Box::pin(async move {
            let permit = match semaphore {
                // Never closed, so acquiring only fails if that changes: then it does not wait.
                Some(semaphore) => semaphore.acquire_owned().await.ok(),
                None => None,
            };
            HashTurn::new(permit, lease)
        })
    }

    fn address_session(&self, ip: IpAddr) -> Result<Option<Lease>, StateError> {
        let cap = self.inner.limits.get().sessions_per_ip;
        let mut state = self.inner.lock();
        let open = state.addresses.entry(ip).or_insert(0);
        if *open >= cap {
            if *open == 0 {
                state.addresses.remove(&ip);
            }
            return Ok(None);
        }
        *open += 1;
        drop(state);
        Ok(Some(self.lease(LeaseKey::Address(ip))))
    }

    fn user_session(&self, user: &str) -> Result<Option<Lease>, StateError> {
        let cap = self.inner.limits.get().sessions_per_user;
        let mut state = self.inner.lock();
        let entry = state.users.entry(user.to_owned()).or_default();
        if cap > 0 && entry.sessions >= cap {
            return Ok(None);
        }
        entry.sessions += 1;
        drop(state);
        Ok(Some(self.lease(LeaseKey::UserSession(user.to_owned()))))
    }

    fn transfer(
        &self,
        user: &str,
        direction: Direction,
    ) -> Result<Option<TransferPermit>, StateError> {
        let inner = &self.inner;
        let limits = inner.limits.get();
        let mut state = inner.lock();
        // The user's entry lives while they are logged in (their session counts), so one a
        // listing finds or makes does not outlive them.
        let counted = direction != Direction::Listing;
        let entry = state.users.entry(user.to_owned()).or_default();
        if counted {
            if limits.transfers_per_user > 0 && entry.transfers >= limits.transfers_per_user {
                return Ok(None);
            }
            entry.transfers += 1;
        }
        let (side, slot) = match direction {
            Direction::Upload => (0, &mut entry.up),
            Direction::Download | Direction::Listing => (1, &mut entry.down),
        };
        let (rate, global) = (limits.user_rates[side], &limits.global[side]);
        let mut budgets = Vec::with_capacity(2);
        if rate > 0 {
            budgets.push(Arc::clone(
                slot.get_or_insert_with(|| Arc::new(RateLimiter::new(rate))),
            ));
        }
        budgets.extend(global.iter().cloned());
        drop(state);
        let lease = counted.then(|| self.lease(LeaseKey::UserTransfer(user.to_owned())));
        Ok(Some(TransferPermit::new(lease, budgets)))
    }

    fn take_registration(&self, ip: IpAddr, now: Instant, max: u32) -> Result<bool, StateError> {
        let mut recent = lock(&self.inner.registrations);
        recent.retain(|_, times| {
            while times
                .front()
                .is_some_and(|t| now.saturating_duration_since(*t) >= REGISTRATION_WINDOW)
            {
                times.pop_front();
            }
            !times.is_empty()
        });
        let times = recent.entry(ip).or_default();
        if times.len() >= max as usize {
            if times.is_empty() {
                recent.remove(&ip);
            }
            return Ok(false);
        }
        times.push_back(now);
        Ok(true)
    }

    fn give_back_registration(&self, ip: IpAddr, at: Instant) {
        let mut recent = lock(&self.inner.registrations);
        if let Some(times) = recent.get_mut(&ip) {
            if let Some(pos) = times.iter().position(|t| *t == at) {
                times.remove(pos);
            }
            if times.is_empty() {
                recent.remove(&ip);
            }
        }
    }

    fn write_lock(&self, key: &[u8]) -> Result<Option<Lease>, StateError> {
        if !lock(&self.inner.write_locks).insert(key.to_owned()) {
            return Ok(None);
        }
        Ok(Some(self.lease(LeaseKey::WriteLock(key.to_owned()))))
    }

    fn quota_reserved(&self, user: &str) -> Result<Reserved, StateError> {
        Ok(lock(&self.inner.reserved)
            .get(user)
            .copied()
            .unwrap_or_default())
    }

    fn reserve_quota(&self, user: &str, more: Reserved, room: Room) -> Result<bool, StateError> {
        let mut reserved = lock(&self.inner.reserved);
        let held = reserved.get(user).copied().unwrap_or_default();
        let over = |held: u64, more: u64, room: Option<u64>| {
            more > 0 && room.is_some_and(|room| u128::from(held) + u128::from(more) > room.into())
        };
        if over(held.bytes, more.bytes, room.bytes) || over(held.files, more.files, room.files) {
            return Ok(false);
        }
        let entry = reserved.entry(user.to_owned()).or_default();
        entry.bytes = entry.bytes.saturating_add(more.bytes);
        entry.files = entry.files.saturating_add(more.files);
        Ok(true)
    }

    fn release_quota(&self, user: &str, less: Reserved) {
        let mut reserved = lock(&self.inner.reserved);
        if let Some(entry) = reserved.get_mut(user) {
            entry.bytes = entry.bytes.saturating_sub(less.bytes);
            entry.files = entry.files.saturating_sub(less.files);
            if *entry == Reserved::default() {
                reserved.remove(user);
            }
        }
    }

    fn quota_claim(&self, user: &str, file: &[u8]) -> Result<Option<Lease>, StateError> {
        let key = (user.to_owned(), file.to_owned());
        if !lock(&self.inner.claims).insert(key.clone()) {
            return Ok(None);
        }
        Ok(Some(self.lease(LeaseKey::QuotaClaim(key.0, key.1))))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn config() -> Config {
        Config {
            ban_after_failures: 3,
            ban_window_secs: 600,
            ban_secs: 900,
            max_sessions_per_ip: 2,
            max_sessions_per_user: 2,
            max_transfers_per_user: 1,
            max_upload_rate_per_user: 1000,
            ..Config::default()
        }
    }

    fn ip(text: &str) -> IpAddr {
        text.parse().expect("ip")
    }

    /// A failure that starts no ban.
    fn counted(recent: usize) -> Failure {
        Failure { recent, ban: None }
    }

    /// Nothing is held for any address or user.
    fn is_idle(local: &LocalState) -> bool {
        let state = local.inner.lock();
        state.users.is_empty() && state.addresses.is_empty() && state.hashing.is_empty()
    }

    #[test]
    fn bans_after_failures_in_the_window() {
        let limits = LocalState::shared(&config());
        let ip = ip("10.1.2.3");
        let other: IpAddr = "10.1.2.4".parse().expect("ip");
        let fail = |ip| limits.login_failed(ip).expect("recorded");
        assert_eq!(fail(ip), counted(1));
        assert_eq!(fail(other), counted(1));
        assert_eq!(fail(ip), counted(2));
        assert!(!limits.banned(ip).expect("read"));
        assert_eq!(
            fail(ip),
            Failure {
                recent: 3,
                ban: Some(Duration::from_secs(900))
            }
        );
        assert!(limits.banned(ip).expect("read"));
        assert!(!limits.banned(other).expect("read"));
    }

    #[test]
    fn failures_are_counted_without_bans_for_the_delay() {
        let limits = LocalState::shared(&Config {
            ban_after_failures: 0,
            ..config()
        });
        let ip = ip("10.1.2.3");
        for n in 1..=20 {
            assert_eq!(limits.login_failed(ip).expect("recorded"), counted(n));
        }
        assert!(!limits.banned(ip).expect("read"));
    }

    #[test]
    fn failures_count_within_their_window_only() {
        // A window of nothing: every earlier failure has left it when the next one comes.
        let limits = LocalState::shared(&Config {
            ban_window_secs: 0,
            ..config()
        });
        let ip = ip("10.1.2.3");
        for _ in 0..5 {
            assert_eq!(limits.login_failed(ip).expect("recorded"), counted(1));
        }
        assert!(!limits.banned(ip).expect("read"));
    }

    #[test]
    fn bans_expire() {
        let local = LocalState::new(&Config {
            ban_after_failures: 1,
            ban_secs: 0,
            ..config()
        });
        let limits: &dyn SharedState = &local;
        let ip = ip("10.1.2.3");
        let failure = limits.login_failed(ip).expect("recorded");
        assert_eq!(
            failure.ban,
            Some(Duration::ZERO),
            "this failure starts a ban"
        );
        assert!(
            !limits.banned(ip).expect("read"),
            "a ban of no length is over"
        );
        assert!(
            local.inner.lock().bans.is_empty(),
            "an expired ban is forgotten"
        );
    }

    #[tokio::test]
    async fn hash_turns_are_shared_per_address() {
        let local = LocalState::new(&Config {
            max_password_checks_per_ip: 2,
            ..config()
        });
        let limits: &dyn SharedState = &local;
        let a = ip("10.0.0.1");
        let b = ip("10.0.0.2");
        let first = limits.hash_turn(a).await;
        assert!(first.limited());
        let second = limits.hash_turn(a).await;
        let mut third = limits.hash_turn(a);
        let wait = tokio::time::timeout(Duration::from_millis(50), &mut third).await;
        assert!(wait.is_err(), "a third turn of one address waits");
        let other = tokio::time::timeout(Duration::from_secs(5), limits.hash_turn(b))
            .await
            .expect("another address does not wait");
        drop(first);
        let third = tokio::time::timeout(Duration::from_secs(5), third)
            .await
            .expect("a freed turn goes to the waiter");
        drop((second, third, other));
        assert!(is_idle(&local), "idle addresses are forgotten");
    }

    #[tokio::test]
    async fn hash_turns_are_free_without_a_limit() {
        let limits = LocalState::shared(&Config {
            max_password_checks_per_ip: 0,
            ..config()
        });
        let turn = limits.hash_turn(ip("10.0.0.1")).await;
        assert!(!turn.limited());
    }

    #[test]
    fn per_user_sessions_and_transfers_are_released_on_drop() {
        let local = LocalState::new(&config());
        let limits: &dyn SharedState = &local;
        let session = |user| limits.user_session(user).expect("state");
        let transfer = |direction| limits.transfer("alice", direction).expect("state");
        let a = session("alice").expect("first");
        let b = session("alice").expect("second");
        assert!(session("alice").is_none());
        assert!(session("bob").is_some());
        drop(a);
        assert!(session("alice").is_some());
        let t = transfer(Direction::Upload).expect("first transfer");
        assert!(t.counted());
        assert!(transfer(Direction::Download).is_none());
        let listing = transfer(Direction::Listing).expect("a listing is no transfer for the limit");
        assert!(!listing.counted());
        drop(t);
        let again = transfer(Direction::Download);
        assert!(again.is_some(), "the listing holds no place");
        drop((listing, again, b));
        assert!(is_idle(&local), "nothing is left behind");
    }

    #[test]
    fn address_sessions_are_capped_and_released() {
        let local = LocalState::new(&config());
        let limits: &dyn SharedState = &local;
        let a = ip("10.0.0.1");
        let first = limits.address_session(a).expect("state").expect("first");
        let second = limits.address_session(a).expect("state").expect("second");
        assert_eq!(second.key(), &LeaseKey::Address(a));
        assert!(limits.address_session(a).expect("state").is_none());
        let other = limits.address_session(ip("10.0.0.2")).expect("state");
        assert!(other.is_some(), "another address has its own cap");
        first.release();
        let again = limits.address_session(a).expect("state");
        assert!(again.is_some(), "an explicit release frees the place");
        drop((second, other, again));
        assert!(is_idle(&local));
    }

    #[test]
    fn no_address_sessions_when_the_cap_is_zero() {
        let local = LocalState::new(&Config {
            max_sessions_per_ip: 0,
            ..config()
        });
        assert!(
            local
                .address_session(ip("10.0.0.1"))
                .expect("state")
                .is_none()
        );
        assert!(is_idle(&local), "a refusal leaves no entry");
    }

    #[test]
    fn write_locks_are_exclusive_until_dropped() {
        let limits = LocalState::shared(&config());
        let lock = limits
            .write_lock(b"alice/a.txt")
            .expect("state")
            .expect("free");
        assert!(limits.write_lock(b"alice/a.txt").expect("state").is_none());
        let other = limits.write_lock(b"alice/b.txt").expect("state");
        assert!(other.is_some(), "another file has its own lock");
        drop(lock);
        assert!(limits.write_lock(b"alice/a.txt").expect("state").is_some());
    }

    #[test]
    fn registrations_are_capped_per_address_and_forgotten_after_an_hour() {
        let local = LocalState::new(&config());
        let limiter: &dyn SharedState = &local;
        let take = |ip, at, max| limiter.take_registration(ip, at, max).expect("state");
        let a = IpAddr::from([10, 0, 0, 1]);
        let b = IpAddr::from([10, 0, 0, 2]);
        let addresses = || lock(&local.inner.registrations).len();
        let t0 = Instant::now();
        assert!(take(a, t0, 2));
        assert!(take(a, t0 + Duration::from_secs(1), 2));
        assert!(!take(a, t0 + Duration::from_secs(2), 2));
        assert!(take(b, t0 + Duration::from_secs(2), 2));
        limiter.give_back_registration(b, t0 + Duration::from_secs(2));
        assert_eq!(addresses(), 1);
        let later = t0 + REGISTRATION_WINDOW + Duration::from_secs(1);
        assert!(take(a, later, 2));
        assert!(take(a, later, 2));
        assert!(!take(a, later, 2));
        // Old entries are gone: only the two new ones are remembered.
        assert_eq!(addresses(), 1);
        assert!(!take(a, later, 0));
    }

    #[test]
    fn uploads_draw_from_the_users_budget_only() {
        let limits = LocalState::shared(&config());
        let up = limits
            .transfer("carol", Direction::Upload)
            .expect("state")
            .expect("up");
        assert!(!up.unthrottled(), "the user's upload budget applies");
        assert_eq!(up.chunk(4096), 512, "a small budget reads small chunks");
        drop(up);
        let down = limits
            .transfer("carol", Direction::Download)
            .expect("state")
            .expect("down");
        assert!(down.unthrottled(), "no download budget configured");
        assert_eq!(down.chunk(4096), 4096);
    }

    #[test]
    fn quota_reservations_fit_the_room_together() {
        let local = LocalState::new(&config());
        let state: &dyn SharedState = &local;
        let bytes = |bytes| Reserved { bytes, files: 0 };
        let room = Room {
            bytes: Some(100),
            files: Some(1),
            basis: None,
        };
        assert!(
            state
                .reserve_quota("alice", bytes(60), room)
                .expect("state")
        );
        assert!(
            !state
                .reserve_quota("alice", bytes(41), room)
                .expect("state")
        );
        assert!(
            state
                .reserve_quota("alice", bytes(40), room)
                .expect("state")
        );
        assert!(
            state.reserve_quota("bob", bytes(100), room).expect("state"),
            "each user has their own reservations"
        );
        let file = Reserved { bytes: 0, files: 1 };
        assert!(state.reserve_quota("alice", file, room).expect("state"));
        assert!(
            !state.reserve_quota("alice", file, room).expect("state"),
            "the file slot is taken"
        );
        let unlimited = Room::default();
        assert!(
            state
                .reserve_quota("alice", file, unlimited)
                .expect("state")
        );
        let held = state.quota_reserved("alice").expect("state");
        assert_eq!(
            held,
            Reserved {
                bytes: 100,
                files: 2
            }
        );
        state.release_quota("alice", held);
        state.release_quota("bob", bytes(100));
        assert_eq!(
            state.quota_reserved("alice").expect("state"),
            Reserved::default()
        );
        assert!(
            lock(&local.inner.reserved).is_empty(),
            "nothing is left behind"
        );
    }

    #[test]
    fn a_quota_claim_is_held_by_one_upload_until_dropped() {
        let local = LocalState::new(&config());
        let state: &dyn SharedState = &local;
        let claim = state
            .quota_claim("alice", b"file")
            .expect("state")
            .expect("free");
        assert!(
            state
                .quota_claim("alice", b"file")
                .expect("state")
                .is_none()
        );
        let other = state.quota_claim("bob", b"file").expect("state");
        assert!(other.is_some(), "claims are per user");
        drop((claim, other));
        assert!(lock(&local.inner.claims).is_empty());
        assert!(
            state
                .quota_claim("alice", b"file")
                .expect("state")
                .is_some()
        );
    }
}
