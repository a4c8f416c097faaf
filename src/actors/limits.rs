//! Server-wide defences and limits shared by every session: failed logins and bans per address
//! (counted over all of the address's connections), the password-hash share per address,
//! sessions and concurrent transfers per user, and bandwidth budgets (per user, shared by all of
//! that user's sessions, and global; uploads and downloads separately).
//!
//! Plain data behind one mutex, held only to update counters; the guards it hands out release
//! their share on drop, so a session that ends in any way gives everything back. Addresses come
//! in canonical form (the acceptor turns `::ffff:a.b.c.d` into `a.b.c.d`).

use std::collections::{HashMap, VecDeque};
use std::net::IpAddr;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant};

use tokio::sync::{OwnedSemaphorePermit, Semaphore};

use crate::config::Config;

/// Past this many tracked addresses, expired entries are swept on the next update, so a flood
/// of addresses cannot grow the tables without bound.
const SWEEP_AT: usize = 4096;

/// A token bucket shared by every transfer it applies to: `rate` bytes per second on average,
/// with bursts of a tenth of a second.
#[derive(Debug)]
pub struct RateLimiter {
    rate: f64,
    burst: f64,
    state: Mutex<(f64, Instant)>,
}

impl RateLimiter {
    /// A limiter for `rate` bytes per second (at least 1).
    pub fn new(rate: u64) -> RateLimiter {
        // Precision loss only past 2^53 bytes per second.
        #[allow(clippy::cast_precision_loss)]
        let rate = rate.max(1) as f64;
        let burst = (rate / 10.0).max(1.0);
        RateLimiter {
            rate,
            burst,
            state: Mutex::new((burst, Instant::now())),
        }
    }

    /// Takes `bytes` from the bucket; returns how long the caller must wait to stay under the
    /// rate. Debts accumulate, so several transfers sharing the bucket share the rate.
    pub fn take(&self, bytes: u64) -> Duration {
        let mut state = self.state.lock().unwrap_or_else(|e| e.into_inner());
        let (tokens, last) = &mut *state;
        let now = Instant::now();
        *tokens = (*tokens + now.duration_since(*last).as_secs_f64() * self.rate).min(self.burst);
        *last = now;
        #[allow(clippy::cast_precision_loss)]
        {
            *tokens -= bytes as f64;
        }
        if *tokens >= 0.0 {
            Duration::ZERO
        } else {
            Duration::from_secs_f64(-*tokens / self.rate)
        }
    }

    /// A read size that keeps the pacing smooth: about a twentieth of a second of traffic.
    pub fn chunk(&self) -> usize {
        // Truncation is fine: this is a buffer size hint.
        #[allow(clippy::cast_possible_truncation, clippy::cast_sign_loss)]
        let chunk = (self.rate / 20.0) as usize;
        chunk.clamp(512, 256 * 1024)
    }
}

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
    /// Password hashes each address may run at once; an entry lives while someone holds or
    /// waits for one of its permits.
    hashing: HashMap<IpAddr, Arc<Semaphore>>,
}

/// What one failed login from an address leads to.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Failure {
    /// Failures of the address within the ban window, this one included, over all of its
    /// connections (the login delay grows with it).
    pub recent: usize,
    /// The ban length, when this failure starts a ban.
    pub ban: Option<Duration>,
}

/// A turn to run one password hash (login, registration, password change) for an address;
/// the address's share is given back on drop.
#[derive(Debug)]
pub struct HashTurn {
    limits: Arc<Limits>,
    ip: IpAddr,
    permit: Option<OwnedSemaphorePermit>,
}

impl Drop for HashTurn {
    fn drop(&mut self) {
        if self.permit.take().is_some() {
            let mut state = self.limits.lock();
            // Only the table holds it now: nobody from this address hashes or waits.
            if state
                .hashing
                .get(&self.ip)
                .is_some_and(|s| Arc::strong_count(s) == 1)
            {
                state.hashing.remove(&self.ip);
            }
        }
    }
}

/// The shared limits of one server.
#[derive(Debug)]
pub struct Limits {
    state: Mutex<State>,
    ban_after: usize,
    ban_window: Duration,
    ban_for: Duration,
    hashes_per_ip: usize,
    sessions_per_user: usize,
    transfers_per_user: usize,
    user_up: u64,
    user_down: u64,
    global_up: Option<Arc<RateLimiter>>,
    global_down: Option<Arc<RateLimiter>>,
}

/// A user's place under the per-user session limit, released on drop.
#[derive(Debug)]
pub struct UserSession {
    limits: Arc<Limits>,
    user: String,
}

impl Drop for UserSession {
    fn drop(&mut self) {
        self.limits
            .release(&self.user, |u| u.sessions = u.sessions.saturating_sub(1));
    }
}

/// A running transfer's place under the per-user transfer limit, and the bandwidth budgets it
/// draws from; released on drop.
#[derive(Debug)]
pub struct TransferPermit {
    limits: Arc<Limits>,
    user: String,
    /// Whether it holds a place under the transfer limit (listings do not).
    counted: bool,
    budgets: Vec<Arc<RateLimiter>>,
}

impl TransferPermit {
    /// Waits as long as the budgets require after moving `bytes`.
    pub async fn pace(&self, bytes: u64) {
        let wait = self
            .budgets
            .iter()
            .map(|b| b.take(bytes))
            .max()
            .unwrap_or(Duration::ZERO);
        if !wait.is_zero() {
            tokio::time::sleep(wait).await;
        }
    }

    /// True when no bandwidth budget applies.
    pub fn unthrottled(&self) -> bool {
        self.budgets.is_empty()
    }

    /// The read size to use: small enough for smooth pacing when a budget applies.
    pub fn chunk(&self, unlimited: usize) -> usize {
        self.budgets
            .iter()
            .map(|b| b.chunk())
            .min()
            .unwrap_or(unlimited)
    }
}

impl Drop for TransferPermit {
    fn drop(&mut self) {
        if self.counted {
            self.limits
                .release(&self.user, |u| u.transfers = u.transfers.saturating_sub(1));
        }
    }
}

/// Direction of a transfer, for the bandwidth budgets.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Direction {
    /// Client to server.
    Upload,
    /// Server to client.
    Download,
    /// A directory listing: server to client, drawing from the download budgets, but not a
    /// transfer for the per-user transfer limit (a client that runs many parallel transfers
    /// lists directories besides them).
    Listing,
}

impl Limits {
    /// The limits configured in `config`.
    pub fn new(config: &Config) -> Arc<Limits> {
        let limiter = |rate: u64| (rate > 0).then(|| Arc::new(RateLimiter::new(rate)));
        Arc::new(Limits {
            state: Mutex::default(),
            ban_after: config.ban_after_failures,
            ban_window: Duration::from_secs(config.ban_window_secs),
            ban_for: Duration::from_secs(config.ban_secs),
            hashes_per_ip: config.max_password_checks_per_ip,
            sessions_per_user: config.max_sessions_per_user,
            transfers_per_user: config.max_transfers_per_user,
            user_up: config.max_upload_rate_per_user,
            user_down: config.max_download_rate_per_user,
            global_up: limiter(config.max_upload_rate),
            global_down: limiter(config.max_download_rate),
        })
    }

    fn lock(&self) -> MutexGuard<'_, State> {
        // Plain counters: still consistent after a panic elsewhere.
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Is `ip` banned now?
    pub fn banned(&self, ip: IpAddr) -> bool {
        let mut state = self.lock();
        match state.bans.get(&ip) {
            Some(until) if *until > Instant::now() => true,
            Some(_) => {
                state.bans.remove(&ip);
                false
            }
            None => false,
        }
    }

    /// Records a failed login from `ip`: how many the address had within the ban window, and
    /// the ban length when this failure starts a ban (`ban_after` failures within
    /// `ban_window`). Failures are counted even when bans are off, for the login delay.
    pub fn login_failed(&self, ip: IpAddr) -> Failure {
        let now = Instant::now();
        let mut state = self.lock();
        if state.failures.len() > SWEEP_AT {
            let window = self.ban_window;
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
                .is_some_and(|t| now.duration_since(*t) >= self.ban_window)
        {
            times.pop_front();
        }
        let recent = times.len();
        if self.ban_after == 0 || recent < self.ban_after {
            return Failure { recent, ban: None };
        }
        state.failures.remove(&ip);
        state.bans.insert(ip, now + self.ban_for);
        Failure {
            recent,
            ban: Some(self.ban_for),
        }
    }

    /// Waits for a turn to hash a password for `ip`: at most `max_password_checks_per_ip` of
    /// one address run or queue at the hashing threads at once, so a flood from a few
    /// addresses cannot fill the queue in front of everybody else's logins. The rest wait
    /// here (each session has at most one request open, so the waiters are bounded by
    /// `max_sessions_per_ip`).
    pub fn hash_turn(
        self: &Arc<Self>,
        ip: IpAddr,
    ) -> impl std::future::Future<Output = HashTurn> + 'static {
        let semaphore = (self.hashes_per_ip > 0).then(|| {
            let mut state = self.lock();
            if state.hashing.len() > SWEEP_AT {
                // Entries whose waiters all went away.
                state.hashing.retain(|_, s| Arc::strong_count(s) > 1);
            }
            Arc::clone(
                state
                    .hashing
                    .entry(ip)
                    .or_insert_with(|| Arc::new(Semaphore::new(self.hashes_per_ip))),
            )
        });
        let limits = Arc::clone(self);
        async move {
            let permit = match semaphore {
                // Never closed, so acquiring only fails if that changes: then it does not wait.
                Some(semaphore) => semaphore.acquire_owned().await.ok(),
                None => None,
            };
            HashTurn { limits, ip, permit }
        }
    }

    /// A session for `user`, unless the per-user session limit is reached.
    pub fn user_session(self: &Arc<Self>, user: &str) -> Option<UserSession> {
        let mut state = self.lock();
        let entry = state.users.entry(user.to_owned()).or_default();
        if self.sessions_per_user > 0 && entry.sessions >= self.sessions_per_user {
            return None;
        }
        entry.sessions += 1;
        Some(UserSession {
            limits: Arc::clone(self),
            user: user.to_owned(),
        })
    }

    /// A transfer for `user`, unless the per-user transfer limit is reached (listings are
    /// never refused); it draws from the user's and the global budget of `direction`.
    pub fn transfer(self: &Arc<Self>, user: &str, direction: Direction) -> Option<TransferPermit> {
        let mut state = self.lock();
        // The user's entry lives while they are logged in (their session counts), so one a
        // listing finds or makes does not outlive them.
        let counted = direction != Direction::Listing;
        let entry = state.users.entry(user.to_owned()).or_default();
        if counted {
            if self.transfers_per_user > 0 && entry.transfers >= self.transfers_per_user {
                return None;
            }
            entry.transfers += 1;
        }
        let (rate, slot, global) = match direction {
            Direction::Upload => (self.user_up, &mut entry.up, &self.global_up),
            Direction::Download | Direction::Listing => {
                (self.user_down, &mut entry.down, &self.global_down)
            }
        };
        let mut budgets = Vec::with_capacity(2);
        if rate > 0 {
            budgets.push(Arc::clone(
                slot.get_or_insert_with(|| Arc::new(RateLimiter::new(rate))),
            ));
        }
        budgets.extend(global.iter().cloned());
        Some(TransferPermit {
            limits: Arc::clone(self),
            user: user.to_owned(),
            counted,
            budgets,
        })
    }

    fn release(&self, user: &str, update: impl FnOnce(&mut UserState)) {
        let mut state = self.lock();
        if let Some(entry) = state.users.get_mut(user) {
            update(entry);
            if entry.sessions == 0 && entry.transfers == 0 {
                state.users.remove(user);
            }
        }
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
            max_sessions_per_user: 2,
            max_transfers_per_user: 1,
            max_upload_rate_per_user: 1000,
            ..Config::default()
        }
    }

    #[test]
    fn bans_after_failures_in_the_window() {
        let limits = Limits::new(&config());
        let ip: IpAddr = "10.1.2.3".parse().expect("ip");
        let other: IpAddr = "10.1.2.4".parse().expect("ip");
        let fail = |ip| limits.login_failed(ip);
        assert_eq!(
            fail(ip),
            Failure {
                recent: 1,
                ban: None
            }
        );
        assert_eq!(
            fail(other),
            Failure {
                recent: 1,
                ban: None
            }
        );
        assert_eq!(
            fail(ip),
            Failure {
                recent: 2,
                ban: None
            }
        );
        assert!(!limits.banned(ip));
        assert_eq!(
            fail(ip),
            Failure {
                recent: 3,
                ban: Some(Duration::from_secs(900))
            }
        );
        assert!(limits.banned(ip));
        assert!(!limits.banned(other));
    }

    #[test]
    fn failures_are_counted_without_bans_for_the_delay() {
        let limits = Limits::new(&Config {
            ban_after_failures: 0,
            ..config()
        });
        let ip: IpAddr = "10.1.2.3".parse().expect("ip");
        for n in 1..=20 {
            assert_eq!(
                limits.login_failed(ip),
                Failure {
                    recent: n,
                    ban: None
                }
            );
        }
        assert!(!limits.banned(ip));
    }

    #[tokio::test]
    async fn hash_turns_are_shared_per_address() {
        let limits = Limits::new(&Config {
            max_password_checks_per_ip: 2,
            ..config()
        });
        let a: IpAddr = "10.0.0.1".parse().expect("ip");
        let b: IpAddr = "10.0.0.2".parse().expect("ip");
        let first = limits.hash_turn(a).await;
        let second = limits.hash_turn(a).await;
        let mut third = Box::pin(limits.hash_turn(a));
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
        assert!(
            limits.lock().hashing.is_empty(),
            "idle addresses are forgotten"
        );
    }

    #[test]
    fn per_user_sessions_and_transfers_are_released_on_drop() {
        let limits = Limits::new(&config());
        let a = limits.user_session("alice").expect("first");
        let b = limits.user_session("alice").expect("second");
        assert!(limits.user_session("alice").is_none());
        assert!(limits.user_session("bob").is_some());
        drop(a);
        assert!(limits.user_session("alice").is_some());
        let t = limits
            .transfer("alice", Direction::Upload)
            .expect("first transfer");
        assert!(limits.transfer("alice", Direction::Download).is_none());
        let listing = limits
            .transfer("alice", Direction::Listing)
            .expect("a listing is no transfer for the limit");
        drop(t);
        let again = limits.transfer("alice", Direction::Download);
        assert!(again.is_some(), "the listing holds no place");
        drop((listing, again, b));
        assert!(limits.lock().users.is_empty(), "nothing is left behind");
    }

    #[test]
    fn a_shared_budget_paces_its_takers() {
        let bucket = RateLimiter::new(1000);
        assert_eq!(bucket.take(100), Duration::ZERO, "the burst is free");
        let wait = bucket.take(1000);
        assert!(
            wait > Duration::from_millis(900) && wait <= Duration::from_millis(1000),
            "{wait:?}"
        );
        let more = bucket.take(500);
        assert!(more > wait, "debts accumulate: {more:?} after {wait:?}");
        assert_eq!(RateLimiter::new(1_000_000).chunk(), 50_000);
        assert_eq!(RateLimiter::new(10).chunk(), 512);
    }

    #[test]
    fn uploads_draw_from_the_users_budget_only() {
        let limits = Limits::new(&config());
        let up = limits.transfer("carol", Direction::Upload).expect("up");
        assert_eq!(up.budgets.len(), 1);
        drop(up);
        let down = limits.transfer("carol", Direction::Download).expect("down");
        assert!(down.budgets.is_empty(), "no download budget configured");
        assert_eq!(down.chunk(4096), 4096);
    }
}
