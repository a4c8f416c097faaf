//! PostgreSQL, for a cluster of nodes (`database_url`): the connection pool, the schema
//! migrations, and this node's row with its heartbeat. The accounts, the audit table and the
//! shared state build on [`Database`].
//!
//! All database I/O runs on one runtime of this module's own (two threads), never on a
//! session's arbiter or a transfer thread: [`Database::with`] from async code,
//! [`Database::wait`] from sync code on a blocking thread. Every call is bounded by
//! [`QUERY_LIMIT`], so a database that hangs turns into [`DbError::Unavailable`], not a hung
//! session.

pub mod migrate;
pub mod testing;

use std::future::Future;
use std::path::Path;
use std::str::FromStr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, OnceLock};
use std::time::{Duration, Instant};

use deadpool_postgres::{Manager, ManagerConfig, Object, Pool, RecyclingMethod};
use tokio_postgres::NoTls;

use crate::config::Config;

/// The longest one database call (a pooled connection, then the work) may take.
pub const QUERY_LIMIT: Duration = Duration::from_secs(10);

/// What went wrong with the database.
#[derive(Debug, thiserror::Error)]
pub enum DbError {
    /// The database did not answer, refused, or failed the statement.
    #[error("database unavailable: {0}")]
    Unavailable(String),
    /// The configuration cannot name a database (a bad URL, an unreadable password file).
    #[error("bad database configuration: {0}")]
    Config(String),
    /// The schema could not be brought up to date, or another live node has this name.
    #[error("{0}")]
    Refused(String),
}

impl From<tokio_postgres::Error> for DbError {
    fn from(e: tokio_postgres::Error) -> DbError {
        // The server's own message (a constraint, a missing table) says more than the
        // wrapper's "db error".
        match e.as_db_error() {
            Some(db) => DbError::Unavailable(format!("{}: {}", db.code().code(), db.message())),
            None => DbError::Unavailable(e.to_string()),
        }
    }
}

impl From<deadpool_postgres::PoolError> for DbError {
    fn from(e: deadpool_postgres::PoolError) -> DbError {
        match e {
            deadpool_postgres::PoolError::Backend(e) => DbError::from(e),
            e => DbError::Unavailable(e.to_string()),
        }
    }
}

fn db_runtime() -> &'static tokio::runtime::Runtime {
    static RUNTIME: OnceLock<tokio::runtime::Runtime> = OnceLock::new();
    RUNTIME.get_or_init(|| {
        tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .thread_name("ferry-db")
            .enable_all()
            .build()
            .unwrap_or_else(|e| panic!("cannot start the database runtime: {e}"))
    })
}

/// Runs `work` on the database runtime and waits for it from any runtime (or none).
pub async fn on_db<T: Send + 'static>(work: impl Future<Output = T> + Send + 'static) -> T {
    match db_runtime().spawn(work).await {
        Ok(value) => value,
        Err(e) => std::panic::resume_unwind(e.into_panic()),
    }
}

/// Runs `work` on the database runtime and blocks this thread until it ends: for sync code
/// on a blocking thread, never a runtime's worker.
pub fn wait_here<T: Send + 'static>(work: impl Future<Output = T> + Send + 'static) -> T {
    let (tx, rx) = std::sync::mpsc::channel();
    spawn_on_db(async move {
        let _ = tx.send(work.await);
    });
    match rx.recv() {
        Ok(value) => value,
        // The task panicked (and dropped the sender): a bug, surfaced as one.
        Err(_) => panic!("a database task panicked"),
    }
}

/// Starts `work` on the database runtime in the background (a listener, a heartbeat).
pub fn spawn_on_db(work: impl Future<Output = ()> + Send + 'static) {
    drop(db_runtime().spawn(work));
}

/// One node's handle on the cluster's database.
#[derive(Debug)]
pub struct Database {
    pool: Pool,
    pg: tokio_postgres::Config,
    node: String,
    instance: String,
    lease: Duration,
    beats: Mutex<Beats>,
    /// How many times the heartbeat came back after a gap longer than the lease.
    rejoined: AtomicU64,
}

/// What this process knows of its own heartbeat.
#[derive(Debug, Default, Clone, Copy)]
struct Beats {
    /// When the last beat the database confirmed was sent (the stored time is no older).
    last: Option<Instant>,
    /// When the current run of beats, none further apart than the lease, began.
    since: Option<Instant>,
}

impl Database {
    /// Connects as `config` says, brings the schema up to date (once, however many nodes
    /// start together) and takes this node's row, then keeps its heartbeat.
    ///
    /// # Errors
    /// [`DbError::Config`] for a bad URL or password file, [`DbError::Unavailable`] when the
    /// database cannot be reached, [`DbError::Refused`] when the schema cannot be migrated or
    /// a live node already has this node's name.
    pub async fn open(config: &Config) -> Result<Arc<Database>, DbError> {
        let db = Arc::new(Database::connect(config)?);
        let opened = Arc::clone(&db);
        on_db(async move {
            migrate::run(&opened).await?;
            opened.join().await
        })
        .await?;
        let beating = Arc::clone(&db);
        spawn_on_db(async move { beating.heartbeat().await });
        Ok(db)
    }

    /// For the operator commands (`ferryd user`, `ferryd invite`, `ferryd log`): the pool,
    /// with the schema brought up to date, but without this node's row or heartbeat, so a
    /// command run beside a live node of the same name is not refused.
    ///
    /// # Errors
    /// As for [`Database::open`], but for a node's name.
    pub async fn open_tool(config: &Config) -> Result<Arc<Database>, DbError> {
        let db = Arc::new(Database::connect(config)?);
        let opened = Arc::clone(&db);
        on_db(async move { migrate::run(&opened).await }).await?;
        Ok(db)
    }

    /// For operator commands that only read (`ferryd log`): the pool, without migrations
    /// (no advisory lock, no DDL: a read-only role will do) or this node's row. It connects
    /// at its first call.
    ///
    /// # Errors
    /// [`DbError::Config`] for a bad URL or password file.
    pub fn open_reader(config: &Config) -> Result<Arc<Database>, DbError> {
        Database::connect(config).map(Arc::new)
    }

    /// The pool for `config`, without connecting yet.
    fn connect(config: &Config) -> Result<Database, DbError> {
        let url = config
            .database_url
            .as_ref()
            .ok_or_else(|| DbError::Config("no database_url".into()))?;
        let mut pg = tokio_postgres::Config::from_str(&url.0)
            .map_err(|e| DbError::Config(format!("database_url: {e}")))?;
        if pg.get_password().is_none() {
            if let Some(password) = std::env::var_os("PGPASSWORD") {
                pg.password(password.as_encoded_bytes());
            } else if let Some(file) = &config.database_password_file {
                pg.password(read_password(file)?);
            }
        }
        pg.application_name(format!("ferryd {}", config.node_name()));
        pg.connect_timeout(Duration::from_secs(5));
        let manager = Manager::from_config(
            pg.clone(),
            NoTls,
            ManagerConfig {
                recycling_method: RecyclingMethod::Fast,
            },
        );
        let pool = Pool::builder(manager)
            .max_size(config.database_pool_size)
            .runtime(deadpool_postgres::Runtime::Tokio1)
            .wait_timeout(Some(QUERY_LIMIT))
            .create_timeout(Some(Duration::from_secs(5)))
            .recycle_timeout(Some(Duration::from_secs(5)))
            .build()
            .map_err(|e| DbError::Config(e.to_string()))?;
        Ok(Database {
            pool,
            pg,
            node: config.node_name(),
            instance: instance_token(),
            lease: Duration::from_secs(config.cluster_lease_secs),
            beats: Mutex::default(),
            rejoined: AtomicU64::new(0),
        })
    }

    /// This node's name.
    pub fn node(&self) -> &str {
        &self.node
    }

    /// This run of the node: what its leases and reservations are recorded under.
    pub fn instance(&self) -> &str {
        &self.instance
    }

    /// How long what a node holds outlives its last heartbeat.
    pub fn lease(&self) -> Duration {
        self.lease
    }

    /// Whether the other nodes still see this node alive: its last confirmed heartbeat is
    /// younger than the lease. Once it is not, what this node holds may be swept or taken,
    /// so it must not go on using its write locks or take new ones.
    pub fn fresh(&self) -> bool {
        self.beats()
            .last
            .is_some_and(|sent| sent.elapsed() < self.lease)
    }

    /// Whether this node has beaten without a gap for a whole lease, so that any node that
    /// is alive has had the time to beat too: only then may it judge other nodes dead by
    /// their heartbeats (after the database itself was away, every heartbeat is old).
    pub fn settled(&self) -> bool {
        let beats = self.beats();
        self.fresh()
            && beats
                .since
                .is_some_and(|since| since.elapsed() >= self.lease)
    }

    /// How many times this node's heartbeat came back after a gap longer than the lease (what
    /// it held may have been swept meanwhile and must be asserted again).
    pub fn rejoined(&self) -> u64 {
        self.rejoined.load(Ordering::Acquire)
    }

    fn beats(&self) -> Beats {
        *self.beats.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Records a beat the database confirmed, sent at `sent`.
    fn beat_confirmed(&self, sent: Instant) {
        let mut beats = self.beats.lock().unwrap_or_else(|e| e.into_inner());
        let gap = beats
            .last
            .is_none_or(|last| sent.saturating_duration_since(last) >= self.lease);
        if gap {
            beats.since = Some(sent);
            if beats.last.is_some() {
                self.rejoined.fetch_add(1, Ordering::AcqRel);
            }
        }
        beats.last = Some(sent);
    }

    /// Runs `work` with a pooled connection on the database runtime, within [`QUERY_LIMIT`].
    ///
    /// # Errors
    /// [`DbError::Unavailable`] when no connection can be had, the work fails, or the limit
    /// passes.
    pub async fn with<T, F, Fut>(&self, work: F) -> Result<T, DbError>
    where
        T: Send + 'static,
        F: FnOnce(Object) -> Fut + Send + 'static,
        Fut: Future<Output = Result<T, DbError>> + Send + 'static,
    {
        let pool = self.pool.clone();
        on_db(async move {
            let call = async move { work(pool.get().await?).await };
            tokio::time::timeout(QUERY_LIMIT, call)
                .await
                .unwrap_or_else(|_| Err(DbError::Unavailable("the database timed out".into())))
        })
        .await
    }

    /// [`Database::with`] for sync code: blocks this thread until the work ends. Only for
    /// blocking threads (the file store's, `spawn_blocking`), never a runtime's worker.
    ///
    /// # Errors
    /// As for [`Database::with`].
    pub fn wait<T, F, Fut>(self: &Arc<Self>, work: F) -> Result<T, DbError>
    where
        T: Send + 'static,
        F: FnOnce(Object) -> Fut + Send + 'static,
        Fut: Future<Output = Result<T, DbError>> + Send + 'static,
    {
        let (tx, rx) = std::sync::mpsc::channel();
        let db = Arc::clone(self);
        spawn_on_db(async move {
            let _ = tx.send(db.with(work).await);
        });
        // `with` ends within QUERY_LIMIT; the margin covers a runtime that is slow to start it.
        rx.recv_timeout(QUERY_LIMIT + Duration::from_secs(5))
            .unwrap_or_else(|_| Err(DbError::Unavailable("the database timed out".into())))
    }

    /// A connection of its own, outside the pool, driven on the database runtime (for
    /// LISTEN, whose notifications arrive on the connection). `on_message` gets every
    /// asynchronous message the server sends on it; the connection ends when the returned
    /// client is dropped or the server goes.
    ///
    /// # Errors
    /// [`DbError::Unavailable`] when the database cannot be reached.
    pub async fn dedicated(
        &self,
        on_message: impl FnMut(tokio_postgres::AsyncMessage) + Send + 'static,
    ) -> Result<tokio_postgres::Client, DbError> {
        let pg = self.pg.clone();
        on_db(async move {
            let (client, mut connection) = pg.connect(NoTls).await?;
            let mut on_message = on_message;
            tokio::spawn(async move {
                let mut messages = futures::stream::poll_fn(move |cx| connection.poll_message(cx));
                while let Some(message) = futures::StreamExt::next(&mut messages).await {
                    match message {
                        Ok(m) => on_message(m),
                        Err(e) => {
                            log::warn!("database connection lost: {e}");
                            break;
                        }
                    }
                }
            });
            Ok(client)
        })
        .await
    }

    /// Takes this node's row: refused while another instance of the same name beats.
    async fn join(&self) -> Result<(), DbError> {
        let client = self.pool.get().await?;
        let lease = secs(self.lease);
        let sent = Instant::now();
        let taken = client
            .execute(
                "INSERT INTO nodes (name, instance) VALUES ($1, $2) \
                 ON CONFLICT (name) DO UPDATE \
                   SET instance = EXCLUDED.instance, started_at = now(), heartbeat_at = now() \
                   WHERE nodes.heartbeat_at < now() - make_interval(secs => $3)",
                &[&self.node, &self.instance, &lease],
            )
            .await?;
        if taken == 0 {
            return Err(DbError::Refused(format!(
                "another node named {} is running (its heartbeat is younger than {} s); \
                 give each node its own --node-name",
                self.node,
                self.lease.as_secs()
            )));
        }
        self.beat_confirmed(sent);
        Ok(())
    }

    /// Renews this node's heartbeat every third of the lease, for as long as the process
    /// runs, on a connection of its own: a pool that busy uploads have exhausted must not make
    /// the node look dead. A failed beat is logged and tried again at the next, on a new
    /// connection when the old one is gone.
    async fn heartbeat(&self) {
        let mut tick = tokio::time::interval(self.lease / 3);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        let mut client: Option<tokio_postgres::Client> = None;
        loop {
            tick.tick().await;
            let sent = Instant::now();
            let beat = async {
                if client
                    .as_ref()
                    .is_none_or(tokio_postgres::Client::is_closed)
                {
                    client = None;
                    client = Some(self.dedicated(|_| {}).await?);
                }
                let Some(beating) = client.as_ref() else {
                    return Err(DbError::Unavailable("no heartbeat connection".into()));
                };
                beating
                    .execute(
                        "UPDATE nodes SET heartbeat_at = now() WHERE name = $1 AND instance = $2",
                        &[&self.node, &self.instance],
                    )
                    .await
                    .map_err(DbError::from)
            };
            match tokio::time::timeout(QUERY_LIMIT, beat).await {
                Ok(Ok(1)) => self.beat_confirmed(sent),
                Ok(Ok(_)) => log::error!(
                    "node {}: its row was taken by another instance; leases of this node \
                     may be swept",
                    self.node
                ),
                Ok(Err(e)) => log::warn!("node {}: heartbeat failed: {e}", self.node),
                Err(_) => {
                    // A connection that hung is not used again.
                    client = None;
                    log::warn!("node {}: heartbeat timed out", self.node);
                }
            }
        }
    }
}

/// `d` in seconds, as PostgreSQL's `make_interval` takes them.
pub fn secs(d: Duration) -> f64 {
    d.as_secs_f64()
}

/// The password in `file`, without the line end.
fn read_password(file: &Path) -> Result<String, DbError> {
    let text = std::fs::read_to_string(file)
        .map_err(|e| DbError::Config(format!("database_password_file {}: {e}", file.display())))?;
    Ok(text.trim_end_matches(['\r', '\n']).to_owned())
}

/// A random name for this run of the node.
pub(crate) fn instance_token() -> String {
    use rand::Rng;
    let bytes: [u8; 8] = rand::thread_rng().r#gen();
    hex::encode(bytes)
}

#[cfg(test)]
mod tests;
