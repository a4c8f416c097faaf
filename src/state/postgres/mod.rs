//! [`PgState`]: the shared state of a cluster, in PostgreSQL (migrations/0003_state.sql).
//!
//! Two kinds of call, as [`SharedState`] says. The calls of the control-channel threads
//! (bans, failed logins, session and transfer counts, registrations, hash turns) answer from
//! this node's view in memory: its own counts exactly, the other nodes' as last read. What
//! they change goes into an outbox that a background task on the database runtime writes
//! (`sync`); the same task reads the other nodes' rows every third of the lease, and bans
//! arrive at once by LISTEN/NOTIFY. The calls of blocking threads (write locks, quota
//! reservations and claims) go to the database and are exact across nodes; what they take
//! belongs to this node's instance, and every node's sweeper deletes the rows of instances
//! whose heartbeat is older than the lease.
//!
//! A node judges another dead only once its own heartbeat has run for a whole lease without a
//! gap ([`Database::settled`]): after the database itself was away every heartbeat is old, and
//! the first node back must not sweep the others. A node whose own heartbeat is older than the
//! lease ([`Database::fresh`]) takes no write lock or reservation, and the write locks it took
//! before such a gap are lost ([`Lease::held`] says so to the upload holding one, which fails
//! rather than write over what another node may have written meanwhile); when it is back, it
//! writes its counts, reservations and quota claims again, as the others may have swept them.
//!
//! The window: two nodes can both admit the last session or transfer slot of a user or an
//! address (or the last registration of an address) when both do so within one refresh
//! (a third of the lease) of each other; their counts then pass the cap by at most one per
//! node until those sessions end. A ban decided on one node reaches the others within a
//! notification's delay (or the next refresh, if the notification is lost).

mod sync;

use std::collections::{HashMap, HashSet, VecDeque};
use std::net::IpAddr;
use std::sync::atomic::{AtomicBool, AtomicI64, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant, SystemTime};

use crate::config::Config;
use crate::db::{Database, DbError, secs};
use crate::state::local::REGISTRATION_WINDOW;
use crate::state::{
    BanWatcher, Direction, Failure, HashTurn, Lease, LeaseKey, Limits, LimitsCell, LocalState,
    RateLimiter, Release, Reserved, Room, SharedState, StateError, StateFuture, TransferPermit,
};

/// The most changes the outbox keeps while the database is away; past it the oldest
/// failed logins, registrations and bans are dropped (each node keeps its own view of them),
/// never what gives back a lock or a reservation.
const MAX_OUTBOX: usize = 20_000;

/// How much a reservation takes ahead of what an upload asked for, so a running upload goes
/// to the database once per grant rather than once per chunk (never past the room).
pub const GRANT: u64 = 4 << 20;

/// What one count in `state_counts` counts.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
enum Count {
    /// Sessions from an address.
    Address,
    /// Sessions of a user.
    User,
    /// Transfers of a user.
    Transfer,
}

impl Count {
    fn name(self) -> &'static str {
        match self {
            Count::Address => "address",
            Count::User => "user",
            Count::Transfer => "transfer",
        }
    }

    fn parse(name: &str) -> Option<Count> {
        match name {
            "address" => Some(Count::Address),
            "user" => Some(Count::User),
            "transfer" => Some(Count::Transfer),
            _ => None,
        }
    }
}

/// What an exclusive lease in `state_locks` is.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
enum LockKind {
    Write,
    Claim,
}

impl LockKind {
    fn name(self) -> &'static str {
        match self {
            LockKind::Write => "write",
            LockKind::Claim => "claim",
        }
    }
}

/// A change the background task writes to the database.
#[derive(Debug, Clone)]
enum Op {
    /// A failed login from `ip` at `at`.
    Failure { ip: IpAddr, at: SystemTime },
    /// `ip` is banned for `length` from now.
    Ban { ip: IpAddr, length: Duration },
    /// A registration slot taken.
    Registration {
        ip: IpAddr,
        seq: i64,
        at: SystemTime,
    },
    /// A registration slot given back.
    GiveBack { seq: i64 },
    /// What this instance holds reserved for `user`, whole; `version` orders the writes.
    Reserve {
        user: String,
        held: Reserved,
        version: i64,
    },
    /// A lease given back.
    Unlock {
        kind: LockKind,
        key: Vec<u8>,
        token: i64,
    },
    /// Takings whose answer was lost (tokens up to `upto`): their rows go unless held.
    Prune { upto: i64 },
    /// This node's quota claims, written again after a gap (with their tokens).
    Reclaim { claims: Vec<(Vec<u8>, i64)> },
}

impl Op {
    /// Whether the outbox may drop it when full: each node keeps its own view of these.
    fn droppable(&self) -> bool {
        matches!(
            self,
            Op::Failure { .. } | Op::Ban { .. } | Op::Registration { .. } | Op::GiveBack { .. }
        )
    }
}

/// This node's view: its own counts, exact, and the others' as last read.
#[derive(Debug, Default)]
struct View {
    bans: HashMap<IpAddr, Instant>,
    /// This node's failed logins per address within the window.
    failures: HashMap<IpAddr, VecDeque<Instant>>,
    /// The other nodes' failed logins within the window.
    other_failures: HashMap<IpAddr, usize>,
    /// This node's registrations per address within the hour, with their row numbers.
    registrations: HashMap<IpAddr, VecDeque<(Instant, i64)>>,
    other_registrations: HashMap<IpAddr, usize>,
    own: HashMap<(Count, String), usize>,
    others: HashMap<(Count, String), usize>,
    /// Own counts changed since they were last written.
    dirty: HashSet<(Count, String)>,
    /// Bandwidth budgets of the users with a session or transfer on this node.
    budgets: HashMap<String, [Option<Arc<RateLimiter>>; 2]>,
}

/// A lease this node holds: its token, and the heartbeat run it was taken in.
#[derive(Debug, Clone, Copy)]
struct Held {
    token: i64,
    /// [`Database::rejoined`] when it was taken: a write lock from before a gap is lost.
    epoch: u64,
}

impl View {
    fn count(&self, kind: Count, key: &str) -> usize {
        let key = (kind, key.to_owned());
        self.own.get(&key).copied().unwrap_or(0) + self.others.get(&key).copied().unwrap_or(0)
    }

    fn add(&mut self, kind: Count, key: &str) {
        *self.own.entry((kind, key.to_owned())).or_insert(0) += 1;
        self.dirty.insert((kind, key.to_owned()));
    }

    fn sub(&mut self, kind: Count, key: &str) {
        let entry = (kind, key.to_owned());
        if let Some(n) = self.own.get_mut(&entry) {
            *n = n.saturating_sub(1);
            if *n == 0 {
                self.own.remove(&entry);
            }
        }
        if matches!(kind, Count::User | Count::Transfer)
            && !self.own.contains_key(&(Count::User, key.to_owned()))
            && !self.own.contains_key(&(Count::Transfer, key.to_owned()))
        {
            self.budgets.remove(key);
        }
        self.dirty.insert(entry);
    }
}

/// What this node holds reserved in the database for one user, and how much of it its
/// uploads use (the rest is the unused part of a grant).
#[derive(Debug, Default)]
struct Grant {
    held: Reserved,
    used: Reserved,
}

#[derive(Debug)]
struct Inner {
    db: Arc<Database>,
    /// The per-node parts: hash turns guard this node's hashing threads.
    local: LocalState,
    view: Mutex<View>,
    outbox: Mutex<VecDeque<Op>>,
    /// Changes the full outbox dropped during the current outage (logged when it ends).
    dropped: AtomicU64,
    wake: tokio::sync::Notify,
    grants: Mutex<HashMap<String, Arc<Mutex<Grant>>>>,
    /// The leases this node holds.
    held: Mutex<HashMap<(LockKind, Vec<u8>), Held>>,
    next: AtomicI64,
    /// Is the database down, as the background task saw it last (it logs each outage once).
    down: AtomicBool,
    /// Told of every ban, this node's and the others' (admission ends the sessions).
    ban_watchers: Watchers,
    limits: LimitsCell,
}

/// The ban watchers (closures, so shown by their number).
struct Watchers(Mutex<Vec<BanWatcher>>);

impl std::fmt::Debug for Watchers {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{} ban watchers", lock(&self.0).len())
    }
}

fn lock<T>(mutex: &Mutex<T>) -> MutexGuard<'_, T> {
    // Plain data: still consistent after a panic elsewhere.
    mutex.lock().unwrap_or_else(|e| e.into_inner())
}

fn unavailable(e: DbError) -> StateError {
    StateError::Unavailable(e.to_string())
}

/// `n` as a database bigint (saturated: no quota is near 2^63).
fn big(n: u64) -> i64 {
    i64::try_from(n).unwrap_or(i64::MAX)
}

/// A bigint from the database as a count (never negative: the table checks it).
fn count(n: i64) -> u64 {
    u64::try_from(n).unwrap_or(0)
}

/// The shared state of one node of a cluster, in the cluster's database.
#[derive(Debug, Clone)]
pub struct PgState {
    inner: Arc<Inner>,
}

impl PgState {
    /// The state over `db` with the limits of `config`; starts the background task (writes,
    /// refreshes, the sweeper, the ban listener), which ends when the last handle is dropped.
    pub fn new(config: &Config, db: Arc<Database>) -> PgState {
        let inner = Arc::new(Inner {
            db,
            local: LocalState::new(config),
            view: Mutex::default(),
            outbox: Mutex::default(),
            dropped: AtomicU64::new(0),
            wake: tokio::sync::Notify::new(),
            grants: Mutex::default(),
            held: Mutex::default(),
            next: AtomicI64::new(1),
            down: AtomicBool::new(false),
            ban_watchers: Watchers(Mutex::default()),
            limits: LimitsCell::new(Limits::new(config)),
        });
        sync::start(&inner);
        PgState { inner }
    }

    /// The same, as the trait object the server shares.
    pub fn shared(config: &Config, db: Arc<Database>) -> Arc<dyn SharedState> {
        Arc::new(PgState::new(config, db))
    }

    fn lease(&self, key: LeaseKey) -> Lease {
        Lease::new(Arc::clone(&self.inner) as Arc<dyn Release>, key)
    }

    /// Takes one count of `kind` for `key` unless `cap` (0: none for users, all for
    /// addresses) is reached over the cluster as this node sees it.
    fn take_count(&self, kind: Count, key: &str, cap: Option<usize>) -> bool {
        let mut view = lock(&self.inner.view);
        if cap.is_some_and(|cap| view.count(kind, key) >= cap) {
            return false;
        }
        view.add(kind, key);
        drop(view);
        self.inner.wake.notify_one();
        true
    }

    /// Takes the exclusive lease `(kind, key)` in the database, unless this node or a live
    /// one holds it (a dead one's is taken over only once this node is settled).
    fn take_lock(&self, kind: LockKind, key: Vec<u8>) -> Result<bool, StateError> {
        let inner = &self.inner;
        inner.fence()?;
        let token = inner.next.fetch_add(1, Ordering::Relaxed);
        let epoch = inner.db.rejoined();
        {
            let mut held = lock(&inner.held);
            if held.contains_key(&(kind, key.clone())) {
                return Ok(false);
            }
            // Claimed here first, so two threads of this node never both go for it.
            held.insert((kind, key.clone()), Held { token, epoch });
        }
        let db = Arc::clone(&inner.db);
        let instance = db.instance().to_owned();
        let lease = secs(db.lease());
        let settled = db.settled();
        let row = key.clone();
        // A row of this instance that it no longer holds (a delete still in the outbox) is
        // free too: the local claim above says nobody here holds it.
        let taken = db.wait(move |client| async move {
            Ok(client
                .execute(
                    "INSERT INTO state_locks (kind, key, instance, token) VALUES ($1, $2, $3, $4) \
                     ON CONFLICT (kind, key) DO UPDATE \
                       SET instance = EXCLUDED.instance, token = EXCLUDED.token, \
                           taken_at = now() \
                       WHERE state_locks.instance = EXCLUDED.instance OR ($6 AND NOT EXISTS ( \
                         SELECT 1 FROM nodes n WHERE n.instance = state_locks.instance \
                           AND n.heartbeat_at >= now() - make_interval(secs => $5)))",
                    &[&kind.name(), &row, &instance, &token, &lease, &settled],
                )
                .await?)
        });
        match taken {
            Ok(1) => Ok(true),
            Ok(_) => {
                lock(&inner.held).remove(&(kind, key));
                Ok(false)
            }
            Err(e) => {
                lock(&inner.held).remove(&(kind, key));
                // It may have been taken before the answer was lost: delete it to be sure.
                inner.queue(Op::Prune { upto: token });
                Err(unavailable(e))
            }
        }
    }

    /// The grant of `user` on this node.
    fn grant(&self, user: &str) -> Arc<Mutex<Grant>> {
        Arc::clone(lock(&self.inner.grants).entry(user.to_owned()).or_default())
    }
}

impl Inner {
    /// Queues `op` for the background task. A newer whole reservation of a user replaces the
    /// queued one, a newer prune covers the older; when the outbox is full, the oldest change
    /// it may drop goes.
    fn queue(&self, op: Op) {
        let mut outbox = lock(&self.outbox);
        match &op {
            Op::Reserve { user, .. } => {
                outbox.retain(|queued| !matches!(queued, Op::Reserve { user: u, .. } if u == user));
            }
            Op::Prune { .. } => outbox.retain(|queued| !matches!(queued, Op::Prune { .. })),
            Op::Reclaim { .. } => outbox.retain(|queued| !matches!(queued, Op::Reclaim { .. })),
            _ => {}
        }
        outbox.push_back(op);
        if outbox.len() > MAX_OUTBOX
            && let Some(oldest) = outbox.iter().position(Op::droppable)
        {
            outbox.remove(oldest);
            self.dropped.fetch_add(1, Ordering::Relaxed);
        }
        drop(outbox);
        self.wake.notify_one();
    }

    /// Refuses new write locks and reservations while the other nodes may think this node
    /// dead (its last confirmed heartbeat is older than the lease).
    fn fence(&self) -> Result<(), StateError> {
        if self.db.fresh() {
            Ok(())
        } else {
            Err(StateError::Unavailable(
                "this node's heartbeat has not reached the database within the lease".into(),
            ))
        }
    }

    /// Queues `user`'s whole reservation as `grant` holds it; with the grant's lock held, so
    /// versions follow the changes.
    fn queue_reservation(&self, user: &str, grant: &Grant) {
        self.queue(Op::Reserve {
            user: user.to_owned(),
            held: grant.held,
            version: self.next.fetch_add(1, Ordering::Relaxed),
        });
    }

    /// Bans `ip` in this node's view for `length`.
    fn ban(&self, ip: IpAddr, length: Duration) {
        let until = Instant::now() + length;
        let mut view = lock(&self.view);
        let entry = view.bans.entry(ip).or_insert(until);
        *entry = (*entry).max(until);
        view.failures.remove(&ip);
        view.other_failures.remove(&ip);
    }
}

impl Release for Inner {
    fn release(&self, key: &LeaseKey) {
        let (kind, bytes) = match key {
            LeaseKey::Address(ip) => {
                lock(&self.view).sub(Count::Address, &ip.to_string());
                self.wake.notify_one();
                return;
            }
            LeaseKey::UserSession(user) => {
                lock(&self.view).sub(Count::User, user);
                self.wake.notify_one();
                return;
            }
            LeaseKey::UserTransfer(user) => {
                lock(&self.view).sub(Count::Transfer, user);
                self.wake.notify_one();
                return;
            }
            // The local state's own: its lease holds it.
            LeaseKey::HashTurn(_) => return,
            LeaseKey::WriteLock(key) => (LockKind::Write, key.clone()),
            LeaseKey::QuotaClaim(user, file) => (LockKind::Claim, claim_key(user, file)),
        };
        if let Some(held) = lock(&self.held).remove(&(kind, bytes.clone())) {
            self.queue(Op::Unlock {
                kind,
                key: bytes,
                token: held.token,
            });
        }
    }

    /// A write lock is held while this node is fresh and has not been away since it took it;
    /// the rest are this node's own as long as it runs.
    fn holds(&self, key: &LeaseKey) -> bool {
        let LeaseKey::WriteLock(bytes) = key else {
            return true;
        };
        let taken = lock(&self.held)
            .get(&(LockKind::Write, bytes.clone()))
            .map(|held| held.epoch);
        taken == Some(self.db.rejoined()) && self.db.fresh()
    }
}

/// The lock key of `user`'s claim on `file`: the name, a NUL (never in a name), the file.
fn claim_key(user: &str, file: &[u8]) -> Vec<u8> {
    [user.as_bytes(), &[0], file].concat()
}

impl SharedState for PgState {
    fn reconfigure(&self, config: &Config) {
        self.inner.local.reconfigure(config);
        let old = self.inner.limits.reload(config);
        if old.user_rates != self.inner.limits.get().user_rates {
            // Each user's next transfer makes a budget at the new rate.
            lock(&self.inner.view).budgets.clear();
        }
    }

    fn banned(&self, ip: IpAddr) -> Result<bool, StateError> {
        let mut view = lock(&self.inner.view);
        Ok(match view.bans.get(&ip) {
            Some(until) if *until > Instant::now() => true,
            Some(_) => {
                view.bans.remove(&ip);
                false
            }
            None => false,
        })
    }

    fn login_failed(&self, ip: IpAddr) -> Result<Failure, StateError> {
        let inner = &self.inner;
        let limits = inner.limits.get();
        let now = Instant::now();
        let mut view = lock(&inner.view);
        let times = view.failures.entry(ip).or_default();
        times.push_back(now);
        while times
            .front()
            .is_some_and(|t| now.duration_since(*t) >= limits.ban_window)
            && times.len() > 1
        {
            times.pop_front();
        }
        let recent = times.len() + view.other_failures.get(&ip).copied().unwrap_or(0);
        drop(view);
        if limits.ban_after == 0 || recent < limits.ban_after {
            inner.queue(Op::Failure {
                ip,
                at: SystemTime::now(),
            });
            return Ok(Failure { recent, ban: None });
        }
        inner.queue(Op::Ban {
            ip,
            length: limits.ban_for,
        });
        inner.ban(ip, limits.ban_for);
        Ok(Failure {
            recent,
            ban: Some(limits.ban_for),
        })
    }

    fn hash_turn(&self, ip: IpAddr) -> StateFuture<HashTurn> {
        self.inner.local.hash_turn(ip)
    }

    fn address_session(&self, ip: IpAddr) -> Result<Option<Lease>, StateError> {
        let cap = Some(self.inner.limits.get().sessions_per_ip);
        Ok(self
            .take_count(Count::Address, &ip.to_string(), cap)
            .then(|| self.lease(LeaseKey::Address(ip))))
    }

    fn user_session(&self, user: &str) -> Result<Option<Lease>, StateError> {
        let cap = Some(self.inner.limits.get().sessions_per_user).filter(|cap| *cap > 0);
        Ok(self
            .take_count(Count::User, user, cap)
            .then(|| self.lease(LeaseKey::UserSession(user.to_owned()))))
    }

    fn transfer(
        &self,
        user: &str,
        direction: Direction,
    ) -> Result<Option<TransferPermit>, StateError> {
        let inner = &self.inner;
        let limits = inner.limits.get();
        let counted = direction != Direction::Listing;
        if counted {
            let cap = Some(limits.transfers_per_user).filter(|cap| *cap > 0);
            if !self.take_count(Count::Transfer, user, cap) {
                return Ok(None);
            }
        }
        let side = usize::from(direction != Direction::Upload);
        let mut budgets = Vec::with_capacity(2);
        let rate = limits.user_rates[side];
        if rate > 0 {
            let mut view = lock(&inner.view);
            let slot = &mut view.budgets.entry(user.to_owned()).or_default()[side];
            budgets.push(Arc::clone(
                slot.get_or_insert_with(|| Arc::new(RateLimiter::new(rate))),
            ));
        }
        budgets.extend(limits.global[side].iter().cloned());
        let lease = counted.then(|| self.lease(LeaseKey::UserTransfer(user.to_owned())));
        Ok(Some(TransferPermit::new(lease, budgets)))
    }

    fn take_registration(&self, ip: IpAddr, now: Instant, max: u32) -> Result<bool, StateError> {
        let mut view = lock(&self.inner.view);
        let others = view.other_registrations.get(&ip).copied().unwrap_or(0);
        let times = view.registrations.entry(ip).or_default();
        while times
            .front()
            .is_some_and(|(t, _)| now.saturating_duration_since(*t) >= REGISTRATION_WINDOW)
        {
            times.pop_front();
        }
        if times.len() + others >= max as usize {
            if times.is_empty() {
                view.registrations.remove(&ip);
            }
            return Ok(false);
        }
        let seq = self.inner.next.fetch_add(1, Ordering::Relaxed);
        times.push_back((now, seq));
        drop(view);
        self.inner.queue(Op::Registration {
            ip,
            seq,
            at: SystemTime::now(),
        });
        Ok(true)
    }

    fn give_back_registration(&self, ip: IpAddr, at: Instant) {
        let mut view = lock(&self.inner.view);
        let Some(times) = view.registrations.get_mut(&ip) else {
            return;
        };
        let seq = times
            .iter()
            .position(|(t, _)| *t == at)
            .and_then(|pos| times.remove(pos))
            .map(|(_, seq)| seq);
        if times.is_empty() {
            view.registrations.remove(&ip);
        }
        drop(view);
        if let Some(seq) = seq {
            self.inner.queue(Op::GiveBack { seq });
        }
    }

    fn write_lock(&self, key: &[u8]) -> Result<Option<Lease>, StateError> {
        Ok(self
            .take_lock(LockKind::Write, key.to_owned())?
            .then(|| self.lease(LeaseKey::WriteLock(key.to_owned()))))
    }

    /// The other nodes' reservations as the database has them, and what this node's running
    /// uploads use (its own row may still hold a part of a grant being given back).
    fn quota_reserved(&self, user: &str) -> Result<Reserved, StateError> {
        let name = user.to_owned();
        let instance = self.inner.db.instance().to_owned();
        let others = self
            .inner
            .db
            .wait(move |client| async move {
                let row = client
                    .query_one(
                        "SELECT coalesce(sum(bytes), 0)::bigint, coalesce(sum(files), 0)::bigint \
                         FROM quota_reservations WHERE user_name = $1 AND instance <> $2",
                        &[&name, &instance],
                    )
                    .await?;
                Ok(Reserved {
                    bytes: count(row.get(0)),
                    files: count(row.get(1)),
                })
            })
            .map_err(unavailable)?;
        let grant = self.grant(user);
        let used = lock(&grant).used;
        Ok(Reserved {
            bytes: others.bytes.saturating_add(used.bytes),
            files: others.files.saturating_add(used.files),
        })
    }

    /// From the unused part of this node's grant when it covers `more`; otherwise one
    /// transaction under the user's advisory lock: the sum of every node's reservations plus
    /// what is asked must fit the room, and up to [`GRANT`] more bytes are taken ahead when
    /// they fit too.
    fn reserve_quota(&self, user: &str, more: Reserved, room: Room) -> Result<bool, StateError> {
        let grant = self.grant(user);
        let mut grant = lock(&grant);
        let spare = |held: u64, used: u64| held.saturating_sub(used);
        let need = Reserved {
            bytes: more
                .bytes
                .saturating_sub(spare(grant.held.bytes, grant.used.bytes)),
            files: more
                .files
                .saturating_sub(spare(grant.held.files, grant.used.files)),
        };
        if need != Reserved::default() {
            let inner = &self.inner;
            inner.fence()?;
            let db = Arc::clone(&inner.db);
            let instance = db.instance().to_owned();
            let name = user.to_owned();
            let mine = grant.held;
            let version = inner.next.fetch_add(1, Ordering::Relaxed);
            let taken = db.wait(move |mut client| async move {
                let tx = client.transaction().await?;
                tx.execute(
                    "SELECT pg_advisory_xact_lock(hashtextextended('quota/' || $1, 0))",
                    &[&name],
                )
                .await?;
                // One statement, one snapshot: an upload another node settled is either
                // still reserved or already in the usage, never neither.
                let row = tx
                    .query_one(
                        "SELECT coalesce(sum(r.bytes), 0)::bigint, \
                                coalesce(sum(r.files), 0)::bigint, \
                                (SELECT bytes FROM quota_usage WHERE user_name = $1), \
                                (SELECT files FROM quota_usage WHERE user_name = $1) \
                         FROM quota_reservations r WHERE r.user_name = $1 AND r.instance <> $2",
                        &[&name, &instance],
                    )
                    .await?;
                let all = Reserved {
                    bytes: count(row.get(0)).saturating_add(mine.bytes),
                    files: count(row.get(1)).saturating_add(mine.files),
                };
                let usage = row
                    .get::<_, Option<i64>>(2)
                    .zip(row.get::<_, Option<i64>>(3))
                    .map(|(bytes, files)| Reserved {
                        bytes: count(bytes),
                        files: count(files),
                    });
                let Some(taken) = fit(all, need, narrowed(room, usage)) else {
                    return Ok(None);
                };
                let now = Reserved {
                    bytes: mine.bytes + taken.bytes,
                    files: mine.files + taken.files,
                };
                write_reservation(&tx, &instance, &name, now, version).await?;
                tx.commit().await?;
                Ok(Some(taken))
            });
            let taken = match taken {
                Ok(Some(taken)) => taken,
                Ok(None) => return Ok(false),
                Err(e) => {
                    // The commit may have happened before the answer was lost: the row is
                    // put back to what this node knows it holds.
                    inner.queue_reservation(user, &grant);
                    return Err(unavailable(e));
                }
            };
            grant.held.bytes += taken.bytes;
            grant.held.files += taken.files;
        }
        grant.used.bytes += more.bytes;
        grant.used.files += more.files;
        Ok(true)
    }

    /// Gives the unused part of the grant back with it: the database rows then hold what
    /// running uploads use, and no more once they have all ended.
    fn release_quota(&self, user: &str, less: Reserved) {
        let grant = self.grant(user);
        let mut grant = lock(&grant);
        grant.used.bytes = grant.used.bytes.saturating_sub(less.bytes);
        grant.used.files = grant.used.files.saturating_sub(less.files);
        let changed = grant.held != grant.used;
        grant.held = grant.used;
        if changed {
            self.inner.queue_reservation(user, &grant);
        }
        let idle = grant.used == Reserved::default();
        drop(grant);
        if idle {
            lock(&self.inner.grants).retain(|_, g| Arc::strong_count(g) > 1 || !lock(g).idle());
        }
    }

    fn quota_claim(&self, user: &str, file: &[u8]) -> Result<Option<Lease>, StateError> {
        Ok(self
            .take_lock(LockKind::Claim, claim_key(user, file))?
            .then(|| self.lease(LeaseKey::QuotaClaim(user.to_owned(), file.to_owned()))))
    }

    fn watch_bans(&self, watcher: BanWatcher) {
        lock(&self.inner.ban_watchers.0).push(watcher);
    }
}

impl Grant {
    fn idle(&self) -> bool {
        self.held == Reserved::default() && self.used == Reserved::default()
    }
}

/// Writes this instance's whole reservation for `user`, unless a newer write is there.
async fn write_reservation(
    client: &impl deadpool_postgres::GenericClient,
    instance: &str,
    user: &str,
    held: Reserved,
    version: i64,
) -> Result<(), DbError> {
    client
        .execute(
            "INSERT INTO quota_reservations (instance, user_name, bytes, files, version) \
             VALUES ($1, $2, $3, $4, $5) ON CONFLICT (instance, user_name) DO UPDATE \
               SET bytes = EXCLUDED.bytes, files = EXCLUDED.files, version = EXCLUDED.version \
               WHERE quota_reservations.version < EXCLUDED.version",
            &[
                &instance,
                &user,
                &big(held.bytes),
                &big(held.files),
                &version,
            ],
        )
        .await?;
    Ok(())
}

/// `room` less what the stored usage grew by since the room was computed from it (`basis`);
/// a usage that shrank meanwhile leaves it as it is.
fn narrowed(room: Room, usage: Option<Reserved>) -> Room {
    let (Some(basis), Some(usage)) = (room.basis, usage) else {
        return room;
    };
    let less = |room: Option<u64>, now: u64, then: u64| {
        room.map(|room| room.saturating_sub(now.saturating_sub(then)))
    };
    Room {
        bytes: less(room.bytes, usage.bytes, basis.bytes),
        files: less(room.files, usage.files, basis.files),
        basis: room.basis,
    }
}

/// What to take when `all` is reserved and `need` more is asked within `room`: `need`, plus
/// up to [`GRANT`] bytes ahead while they fit; `None` when `need` itself does not fit.
fn fit(all: Reserved, need: Reserved, room: Room) -> Option<Reserved> {
    let free = |room: Option<u64>, all: u64| room.map(|room| room.saturating_sub(all));
    let over = |free: Option<u64>, need: u64| need > 0 && free.is_some_and(|free| need > free);
    let bytes_free = free(room.bytes, all.bytes);
    if over(bytes_free, need.bytes) || over(free(room.files, all.files), need.files) {
        return None;
    }
    let bytes = if need.bytes == 0 {
        0
    } else {
        let ahead = need.bytes.max(GRANT);
        bytes_free.map_or(ahead, |free| ahead.min(free))
    };
    Some(Reserved {
        bytes,
        files: need.files,
    })
}

#[cfg(test)]
pub(crate) mod tests;
