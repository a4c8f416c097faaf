//! The state that every node of a cluster must share, behind one trait: failed logins and
//! bans per address, registrations per address, session leases (per address and per user),
//! transfer leases per user with their bandwidth buckets, write locks, and the quota
//! reservations of running uploads. Admission, the session's limits, the file store and the
//! quota ledger reach it only through [`SharedState`], held as an `Arc<dyn SharedState>` built
//! once in `server.rs`; [`local::LocalState`] is a single server's, in process;
//! [`postgres::PgState`] a cluster's, in its database.

pub mod bucket;
pub mod limits;
pub mod local;
pub mod postgres;

use std::fmt;
use std::future::Future;
use std::net::IpAddr;
use std::pin::Pin;
use std::sync::Arc;
use std::time::{Duration, Instant};

use tokio::sync::OwnedSemaphorePermit;

pub use bucket::RateLimiter;
pub use limits::{Limits, LimitsCell};
pub use local::LocalState;
pub use postgres::{GRANT, PgState};

/// The shared state could not be read or changed (a database that is down, in a cluster).
/// Callers fail closed: the connection, login or transfer asked for is refused.
#[derive(Debug, thiserror::Error)]
pub enum StateError {
    /// The backing store did not answer.
    #[error("shared state unavailable: {0}")]
    Unavailable(String),
}

/// A future a [`SharedState`] hands out; `Send`, as it may run on a transfer runtime.
pub type StateFuture<T> = Pin<Box<dyn Future<Output = T> + Send>>;

/// The state the nodes of a cluster share.
///
/// Object-safe (held as `Arc<dyn SharedState>`: no generic methods). Every fallible call
/// returns a [`Result`], since a database-backed implementation can fail where the local one
/// cannot.
///
/// **Sync, and two kinds of call.** The methods are plain calls, not futures, because every
/// caller decides on their answer in the same step (the acceptor before it starts a session,
/// a session handler before it replies, a file-store thread before it opens) and making them
/// async would turn each of those steps into a continuation. Which threads call them splits
/// them in two, and every implementation keeps the split:
///
/// - Called on the threads that serve control channels, so they answer from memory at once
///   and never wait for I/O: [`banned`](SharedState::banned),
///   [`login_failed`](SharedState::login_failed),
///   [`address_session`](SharedState::address_session),
///   [`user_session`](SharedState::user_session), [`transfer`](SharedState::transfer),
///   [`take_registration`](SharedState::take_registration),
///   [`give_back_registration`](SharedState::give_back_registration), and
///   [`hash_turn`](SharedState::hash_turn) (the one that waits, as a future, for a turn).
///   A cluster's implementation ([`postgres::PgState`]) answers them from the node's view
///   (its own counts exactly, the other nodes' as last read, bans as notified) and writes
///   what they change from a task of its own: two nodes can both admit a last slot within
///   one refresh of each other.
/// - Called on blocking threads (a file store's, `spawn_blocking`), never a runtime's
///   worker, so they may wait for the database, within its query limit, and are exact
///   across nodes: [`write_lock`](SharedState::write_lock),
///   [`quota_reserved`](SharedState::quota_reserved),
///   [`reserve_quota`](SharedState::reserve_quota),
///   [`quota_claim`](SharedState::quota_claim). A database that does not answer makes them
///   return [`StateError::Unavailable`], and their callers refuse the write.
///   [`release_quota`](SharedState::release_quota) and every [`Lease`]'s drop never wait:
///   they give back in the background (retried until the database takes it; what a dead
///   node held is swept after the lease time).
///
/// Leases ([`Lease`]) are given back when dropped or by [`Lease::release`]; a release never
/// fails to the caller (the implementation retries, or lets the lease expire).
pub trait SharedState: Send + Sync + fmt::Debug {
    /// Puts the limits of `config` in force (SIGHUP): the caps count from the next session,
    /// login or transfer; a changed rate applies to transfers that start after it.
    fn reconfigure(&self, config: &crate::config::Config);

    /// Is `ip` banned now?
    ///
    /// # Errors
    /// [`StateError`] when the state cannot be read.
    fn banned(&self, ip: IpAddr) -> Result<bool, StateError>;

    /// Records a failed login from `ip`: how many the address had within the ban window, and
    /// the ban length when this failure starts a ban. Failures are counted even when bans are
    /// off, for the login delay.
    ///
    /// # Errors
    /// [`StateError`] when the failure cannot be recorded.
    fn login_failed(&self, ip: IpAddr) -> Result<Failure, StateError>;

    /// Waits for a turn to hash a password for `ip`: at most `max_password_checks_per_ip` of
    /// one address run or queue at the hashing threads at once. The turns guard this node's
    /// hashing threads, so even a cluster implementation counts them per node.
    fn hash_turn(&self, ip: IpAddr) -> StateFuture<HashTurn>;

    /// A session from `ip`, unless `max_sessions_per_ip` sessions from it are open.
    ///
    /// # Errors
    /// [`StateError`] when the lease cannot be taken.
    fn address_session(&self, ip: IpAddr) -> Result<Option<Lease>, StateError>;

    /// A session for `user`, unless the per-user session limit is reached.
    ///
    /// # Errors
    /// [`StateError`] when the lease cannot be taken.
    fn user_session(&self, user: &str) -> Result<Option<Lease>, StateError>;

    /// A transfer for `user`, unless the per-user transfer limit is reached (listings are
    /// never refused); it draws from the user's and the global budget of `direction`.
    ///
    /// # Errors
    /// [`StateError`] when the lease cannot be taken.
    fn transfer(
        &self,
        user: &str,
        direction: Direction,
    ) -> Result<Option<TransferPermit>, StateError>;

    /// Takes a registration slot for `ip` at `now` if fewer than `max` were taken within the
    /// last hour; `false` when the cap is reached.
    ///
    /// # Errors
    /// [`StateError`] when the count cannot be read or changed.
    fn take_registration(&self, ip: IpAddr, now: Instant, max: u32) -> Result<bool, StateError>;

    /// Gives back the slot `ip` took at `at` (the registration failed for another reason).
    fn give_back_registration(&self, ip: IpAddr, at: Instant);

    /// The exclusive right to write the file named by `key` in place, unless another writer
    /// holds it. The key is the storage's name for the file.
    ///
    /// # Errors
    /// [`StateError`] when the lock cannot be taken.
    fn write_lock(&self, key: &[u8]) -> Result<Option<Lease>, StateError>;

    /// What the running uploads of `user` hold reserved against the quota.
    ///
    /// # Errors
    /// [`StateError`] when the reservations cannot be read.
    fn quota_reserved(&self, user: &str) -> Result<Reserved, StateError>;

    /// Reserves `more` for `user` if, together with what is reserved already, it fits in
    /// `room` (each part is checked only when it is not zero): one check-and-add, as one
    /// `UPDATE ... WHERE` would do it. `false` when it does not fit; nothing is reserved then.
    ///
    /// # Errors
    /// [`StateError`] when the reservations cannot be changed.
    fn reserve_quota(&self, user: &str, more: Reserved, room: Room) -> Result<bool, StateError>;

    /// Gives back `less` of what `user`'s uploads reserved.
    fn release_quota(&self, user: &str, less: Reserved);

    /// The right of one upload of `user` to count on reusing the size of the file it replaces
    /// (named by `file`, the storage's key for it), unless another upload holds it.
    ///
    /// # Errors
    /// [`StateError`] when the claim cannot be taken.
    fn quota_claim(&self, user: &str, file: &[u8]) -> Result<Option<Lease>, StateError>;

    /// Registers `watcher`, called with each address another node banned, so this node ends
    /// its sessions from it (a ban decided here is told by the session that caused it). A
    /// single server has no other nodes: the default does nothing.
    fn watch_bans(&self, _watcher: BanWatcher) {}
}

/// Called with an address that another node just banned.
pub type BanWatcher = Arc<dyn Fn(IpAddr) + Send + Sync>;

/// Bytes and files that the running uploads of a user hold reserved against the quota.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Reserved {
    /// Bytes staged uploads may still add.
    pub bytes: u64,
    /// New files uploads will create.
    pub files: u64,
}

/// What a user's limits leave beyond their usage; `None` is unlimited.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Room {
    /// Bytes left.
    pub bytes: Option<u64>,
    /// Files left.
    pub files: Option<u64>,
    /// The stored usage the room was computed from, when the state can read that usage again
    /// (a cluster's database): the reservation then checks against the usage at its own
    /// moment, so another node's upload settled meanwhile is not counted twice or missed.
    pub basis: Option<Reserved>,
}

/// Logs that `what` is refused because the state is unavailable: callers fail closed.
pub fn unavailable(what: &str, error: &StateError) {
    log::error!("{what} refused: {error}");
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

/// What a [`Lease`] holds, so its holder knows what to give back.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum LeaseKey {
    /// One session from an address.
    Address(IpAddr),
    /// One session of a user.
    UserSession(String),
    /// One transfer of a user.
    UserTransfer(String),
    /// The right to write one file in place.
    WriteLock(Vec<u8>),
    /// A turn to hash a password for an address.
    HashTurn(IpAddr),
    /// An upload's claim on the size of the file it replaces: the user, the file's key.
    QuotaClaim(String, Vec<u8>),
}

/// Whoever gives a [`Lease`] back: the implementation's inner state.
pub trait Release: Send + Sync + fmt::Debug {
    /// Gives back what `key` holds. Must not block (see [`SharedState`]).
    fn release(&self, key: &LeaseKey);

    /// Whether `key` is still held: a cluster's write lock is lost when its node was away
    /// from the database for longer than the lease (another node may have taken it). Must
    /// not block.
    fn holds(&self, _key: &LeaseKey) -> bool {
        true
    }
}

/// Why a writer stops when its write lock is no longer held (see [`Lease::held`]).
pub const LOST_LOCK: &str =
    "this node lost its write lock on the file while it was away from the cluster's database";

/// A share of the shared state (a session, a transfer, a write lock), given back on drop or by
/// [`Lease::release`].
#[derive(Debug)]
pub struct Lease {
    holder: Arc<dyn Release>,
    key: LeaseKey,
}

impl Lease {
    /// A lease on `key`, which `holder` gives back.
    pub fn new(holder: Arc<dyn Release>, key: LeaseKey) -> Lease {
        Lease { holder, key }
    }

    /// What it holds.
    pub fn key(&self) -> &LeaseKey {
        &self.key
    }

    /// Whether it is still held (see [`Release::holds`]): a writer checks before it changes
    /// what the lease guards.
    pub fn held(&self) -> bool {
        self.holder.holds(&self.key)
    }

    /// Gives it back now.
    pub fn release(self) {}
}

impl Drop for Lease {
    fn drop(&mut self) {
        self.holder.release(&self.key);
    }
}

/// A turn to run one password hash (login, registration, password change) for an address;
/// the address's share is given back on drop.
#[derive(Debug)]
pub struct HashTurn {
    // Declared first, so it is dropped before the lease looks whether anyone still waits.
    permit: Option<OwnedSemaphorePermit>,
    lease: Option<Lease>,
}

impl HashTurn {
    /// A turn: `permit` from the address's semaphore, `lease` to tidy its entry afterwards;
    /// both `None` when no per-address limit applies.
    pub fn new(permit: Option<OwnedSemaphorePermit>, lease: Option<Lease>) -> HashTurn {
        HashTurn { permit, lease }
    }

    /// Whether it holds a place under a per-address limit.
    pub fn limited(&self) -> bool {
        self.permit.is_some() && self.lease.is_some()
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

/// A running transfer's place under the per-user transfer limit, and the bandwidth budgets it
/// draws from; released on drop.
#[derive(Debug)]
pub struct TransferPermit {
    /// The place under the transfer limit (listings hold none).
    lease: Option<Lease>,
    budgets: Vec<Arc<RateLimiter>>,
}

impl TransferPermit {
    /// A permit holding `lease` and drawing from `budgets`.
    pub fn new(lease: Option<Lease>, budgets: Vec<Arc<RateLimiter>>) -> TransferPermit {
        TransferPermit { lease, budgets }
    }

    /// Whether it holds a place under the per-user transfer limit.
    pub fn counted(&self) -> bool {
        self.lease.is_some()
    }

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
