//! The one place the backends are built from the configuration: the account and invite stores,
//! the quota ledger, the file storage, the audit log and the TLS configs. `ferryd serve`
//! ([`crate::server::Server::start`]) and the operator commands ([`crate::admin`]) both build
//! them here, so both read and write the same files in the same way, and a second backend
//! (another account store, another storage) is chosen here and nowhere else.

use std::future::Future;
use std::io;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use actix::Addr;
use tokio_rustls::TlsAcceptor;

use crate::accounts::invites::{InviteStore, JsonInviteStore};
use crate::accounts::{HomeElsewhere, PgAccountStore, PgInviteStore};
use crate::actors::account_registry::{
    AccountLimits, AccountStore, JsonAccountStore, RegistrySettings, Remains, UserName,
};
use crate::actors::audit_log::{AuditLog, AuditPolicy};
use crate::audit::metrics::Metrics;
use crate::codec::entry::FileKind;
use crate::config::{Config, StorageKind};
use crate::db::{Database, DbError};
use crate::quota::QuotaLedger;
use crate::state::{LocalState, PgState, SharedState};
use crate::storage::local::LocalStorage;
use crate::storage::s3::{S3Settings, S3SetupError, S3Storage};
use crate::storage::vpath::VPath;
use crate::storage::{PathLimits, Storage, StoreError};

/// A part of the data directory could not be prepared.
#[derive(Debug, thiserror::Error)]
#[error("cannot prepare data directory {path}: {source}")]
pub struct DataDirError {
    /// The directory.
    pub path: PathBuf,
    /// The cause.
    pub source: io::Error,
}

/// Why the backends could not be opened.
#[derive(Debug, thiserror::Error)]
pub enum OpenError {
    /// A part of the data directory could not be prepared.
    #[error(transparent)]
    DataDir(#[from] DataDirError),
    /// The S3 settings are incomplete, or the bucket cannot be used (the probe's reason).
    #[error(transparent)]
    S3(#[from] S3SetupError),
    /// The database (`database_url`) cannot be used.
    #[error(transparent)]
    Database(#[from] DbError),
}

/// Names the directory an I/O error is about.
fn in_dir(path: PathBuf) -> impl FnOnce(io::Error) -> DataDirError {
    move |source| DataDirError { path, source }
}

/// The JSON account store (`DATA/accounts/`, created when missing).
///
/// # Errors
/// The directory cannot be created.
pub fn account_store(config: &Config) -> io::Result<JsonAccountStore> {
    JsonAccountStore::new(config.accounts_dir())
}

/// The account store: the cluster's database when there is one, else [`account_store`].
///
/// # Errors
/// The JSON store's directory cannot be created.
pub fn accounts(
    config: &Config,
    database: Option<&Arc<Database>>,
) -> Result<Arc<dyn AccountStore>, DataDirError> {
    Ok(match database {
        Some(db) => Arc::new(PgAccountStore::new(Arc::clone(db))),
        None => Arc::new(account_store(config).map_err(in_dir(config.accounts_dir()))?),
    })
}

/// The account store if there is one: commands that only read, or find nothing to change
/// without it, must not create a data directory (a mistyped `--data-dir`, or a command run in
/// the wrong directory, would leave an empty one behind). The database's always exists.
///
/// # Errors
/// The directory exists but cannot be opened as a store.
pub fn existing_accounts(
    config: &Config,
    database: Option<&Arc<Database>>,
) -> Result<Option<Arc<dyn AccountStore>>, DataDirError> {
    if database.is_some() || config.accounts_dir().is_dir() {
        accounts(config, database).map(Some)
    } else {
        Ok(None)
    }
}

/// The cluster's database for an operator command (see [`Database::open_tool`]), when
/// `database_url` is set. Blocks: for the command's own thread, never a runtime's.
///
/// # Errors
/// The database cannot be used.
pub fn tool_database(config: &Config) -> Result<Option<Arc<Database>>, DbError> {
    if config.database_url.is_none() {
        return Ok(None);
    }
    let config = config.clone();
    crate::db::wait_here(async move { Database::open_tool(&config).await }).map(Some)
}

/// The usage ledger (`DATA/usage/`, created when missing; the `quota_usage` table with a
/// cluster's `database`), with each user's limits read from `accounts`, counting homes where
/// the storage keeps them.
///
/// # Errors
/// The directory cannot be created.
pub fn quota_ledger(
    config: &Config,
    accounts: Arc<dyn AccountStore>,
    database: Option<&Arc<Database>>,
) -> io::Result<QuotaLedger> {
    let ledger = QuotaLedger::new(
        config.usage_dir(),
        config.homes_dir(),
        Arc::new(AccountLimits(accounts)),
    )?;
    let ledger = match database {
        Some(db) => ledger.with_database(Arc::clone(db)),
        None => ledger,
    };
    Ok(match config.storage {
        StorageKind::Local => ledger,
        // Recounts (after a crash, `--recount`, `--adopt-home`) list the bucket.
        StorageKind::S3 => ledger.with_counter(
            s3_home_storage(config)
                .map_err(io::Error::other)?
                .usage_counter(),
        ),
    })
}

/// The JSON invitation codes (`DATA/invites/`, created when missing).
///
/// # Errors
/// The directory cannot be created.
pub fn invite_store(config: &Config) -> io::Result<JsonInviteStore> {
    JsonInviteStore::new(config.invites_dir())
}

/// The invitation codes: the cluster's database when there is one, else [`invite_store`].
///
/// # Errors
/// The JSON store's directory cannot be created.
pub fn invites(
    config: &Config,
    database: Option<&Arc<Database>>,
) -> Result<Arc<dyn InviteStore>, DataDirError> {
    Ok(match database {
        Some(db) => Arc::new(PgInviteStore::new(Arc::clone(db))),
        None => Arc::new(invite_store(config).map_err(in_dir(config.invites_dir()))?),
    })
}

/// What a deleted account leaves behind (its home, in the bucket with S3 storage; its usage
/// ledger, a row with a cluster's `database`).
///
/// # Errors
/// The S3 settings are incomplete.
pub fn remains(config: &Config, database: Option<&Arc<Database>>) -> Result<Remains, S3SetupError> {
    let mut remains = Remains::new(config.homes_dir(), config.usage_dir());
    if config.storage == StorageKind::S3 {
        remains = remains.with_homes_elsewhere(Arc::new(BucketHomes::new(config)?));
    }
    if let Some(db) = database {
        remains = remains.with_homes_elsewhere(Arc::new(UsageRows(Arc::clone(db))));
    }
    Ok(remains)
}

/// The usage rows of a cluster's database, as [`Remains`] sees them.
#[derive(Debug)]
struct UsageRows(Arc<Database>);

/// How the operator commands name `user`'s usage row.
fn usage_row(user: &UserName) -> PathBuf {
    PathBuf::from(format!("postgres:quota_usage/{user}"))
}

impl HomeElsewhere for UsageRows {
    fn remains_of(&self, name: &UserName) -> io::Result<Option<PathBuf>> {
        Ok(crate::quota::table::exists(&self.0, name.as_str())?.then(|| usage_row(name)))
    }
}

/// `ferryd user del --purge` in a cluster: deletes `user`'s usage row; what it removed.
///
/// # Errors
/// The database cannot be used.
pub fn purge_usage_row(db: &Arc<Database>, user: &UserName) -> io::Result<Option<PathBuf>> {
    Ok(crate::quota::table::remove(db, user.as_str())?.then(|| usage_row(user)))
}

/// The homes in an S3 bucket, as [`Remains`] and the operator commands see them.
#[derive(Debug)]
struct BucketHomes {
    storage: S3Storage,
    /// `s3://bucket/prefix/`, for messages.
    place: String,
}

impl BucketHomes {
    fn new(config: &Config) -> Result<BucketHomes, S3SetupError> {
        let settings = s3_settings(config)?;
        let place = if settings.prefix.is_empty() {
            format!("s3://{}/", settings.bucket)
        } else {
            format!("s3://{}/{}/", settings.bucket, settings.prefix)
        };
        Ok(BucketHomes {
            storage: S3Storage::new(settings)?,
            place,
        })
    }

    /// Where `user`'s home is, for messages.
    fn place_of(&self, user: &str) -> PathBuf {
        PathBuf::from(format!("{}{user}/", self.place))
    }
}

impl HomeElsewhere for BucketHomes {
    fn remains_of(&self, name: &UserName) -> io::Result<Option<PathBuf>> {
        match wait_for(self.storage.list(name.as_str(), &VPath::root()))? {
            Ok(listing) if listing.entries.is_empty() => Ok(None),
            Ok(_) => Ok(Some(self.place_of(name.as_str()))),
            Err(StoreError::NotFound) => Ok(None),
            Err(e) => Err(io::Error::other(format!(
                "cannot check {}: {e}",
                self.place_of(name.as_str()).display()
            ))),
        }
    }
}

/// Runs a storage call to its end on a thread that has no runtime of its own: the operator
/// commands and the account registry's threads, which block by design.
fn wait_for<T>(work: impl Future<Output = T>) -> io::Result<T> {
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    Ok(runtime.block_on(work))
}

/// Creates `user`'s home (a directory under the data dir, or a marker in the bucket).
///
/// # Errors
/// The home cannot be created; for S3, the settings are incomplete or the bucket refuses.
pub fn create_home(config: &Config, user: &str) -> Result<(), StoreError> {
    match config.storage {
        StorageKind::Local => home_storage(config)?.blocking().create_home(user),
        StorageKind::S3 => {
            let storage =
                s3_home_storage(config).map_err(|e| StoreError::Io(io::Error::other(e)))?;
            wait_for(storage.create_home(user))?
        }
    }
}

/// Removes every file and directory of `user`'s home in the bucket (`ferryd user del
/// --purge` with S3 storage) and returns where it was, or `None` when nothing was there. The
/// local remains (usage ledger) are [`remains`]' to remove.
///
/// # Errors
/// The settings are incomplete, or the bucket refuses a listing or a removal.
pub fn purge_bucket_home(config: &Config, user: &UserName) -> Result<Option<PathBuf>, StoreError> {
    if config.storage != StorageKind::S3 {
        return Ok(None);
    }
    let homes = BucketHomes::new(config).map_err(|e| StoreError::Io(io::Error::other(e)))?;
    let removed = wait_for(remove_tree(&homes.storage, user.as_str(), VPath::root()))??;
    Ok((removed > 0).then(|| homes.place_of(user.as_str())))
}

/// Removes what lies below `dir` through the storage, deepest first; returns how many entries
/// went. A missing directory holds nothing.
async fn remove_tree(storage: &dyn Storage, user: &str, dir: VPath) -> Result<usize, StoreError> {
    let listing = match storage.list(user, &dir).await {
        Ok(listing) => listing,
        Err(StoreError::NotFound) => return Ok(0),
        Err(e) => return Err(e),
    };
    let mut removed = 0;
    for entry in listing.entries {
        let path = dir
            .resolve(&entry.name)
            .map_err(|_| StoreError::InvalidName)?;
        if entry.kind == FileKind::Dir {
            removed += Box::pin(remove_tree(storage, user, path.clone())).await?;
            storage.rmdir(user, &path).await?;
        } else {
            storage.remove(user, &path).await?;
        }
        removed += 1;
    }
    Ok(removed)
}

/// The homes and the upload staging directory, without quota or limits: enough to create a
/// home directory.
///
/// # Errors
/// A directory cannot be created.
pub fn home_storage(config: &Config) -> io::Result<LocalStorage> {
    LocalStorage::new(config.homes_dir(), config.tmp_dir())
}

/// The file storage a server runs with: [`local_storage`] or [`s3_storage`], as
/// `config.storage` says; this is the only place the backend is chosen.
///
/// # Errors
/// [`OpenError`] from the chosen backend.
pub fn storage(
    config: &Config,
    ledger: Arc<QuotaLedger>,
    state: Arc<dyn SharedState>,
) -> Result<Arc<dyn Storage>, OpenError> {
    Ok(match config.storage {
        StorageKind::Local => Arc::new(local_storage(config, ledger, state)?),
        StorageKind::S3 => Arc::new(s3_storage(config, ledger, state)?),
    })
}

/// The local file storage: quota charged to `ledger`, the path, listing and partial-upload
/// settings, the anonymous area when one is configured, and no unfinished upload of a
/// previous run left in staging.
///
/// # Errors
/// [`DataDirError`] for the homes, the staging directory or the anonymous root.
pub fn local_storage(
    config: &Config,
    ledger: Arc<QuotaLedger>,
    state: Arc<dyn SharedState>,
) -> Result<LocalStorage, DataDirError> {
    let mut storage = home_storage(config)
        .map_err(in_dir(config.homes_dir()))?
        .with_quota(ledger)
        .with_shared_state(state)
        .with_path_limits(path_limits(config))
        .with_listing_limit(config.max_listing_entries)
        .with_partial_uploads(config.keep_partial_uploads)
        .with_threads(config.blocking_threads, config.long_job_threads);
    let stale = storage
        .remove_stale_staged()
        .map_err(in_dir(config.tmp_dir()))?;
    if stale > 0 {
        log::warn!("removed {stale} unfinished uploads left by the previous run");
    }
    if let Some(root) = &config.anonymous_root {
        storage = storage
            .with_anonymous_root(root)
            .map_err(in_dir(root.clone()))?;
    }
    Ok(storage)
}

/// How deep and how long a path clients may create.
fn path_limits(config: &Config) -> PathLimits {
    PathLimits {
        max_depth: config.max_path_depth,
        max_length: config.max_path_length,
    }
}

/// The S3 settings of `config`, credentials from the file or the process's AWS environment.
///
/// # Errors
/// [`S3SetupError::Config`] for a missing bucket or credentials, or a bad endpoint.
pub fn s3_settings(config: &Config) -> Result<S3Settings, S3SetupError> {
    S3Settings::from_config(config, |name| std::env::var(name).ok())
}

/// The S3 client of `config`, without quota or limits: enough to create a home.
///
/// # Errors
/// As for [`s3_settings`] and [`S3Storage::new`].
pub fn s3_home_storage(config: &Config) -> Result<S3Storage, S3SetupError> {
    S3Storage::new(s3_settings(config)?)
}

/// The S3 storage with the same quota ledger, shared state, limits and partial-upload setting
/// as the local one. It makes no request: [`Backends::open`] has probed the bucket before the
/// ledger's recount, so a server that cannot use its bucket does not start.
///
/// # Errors
/// [`S3SetupError`]: the settings.
pub fn s3_storage(
    config: &Config,
    ledger: Arc<QuotaLedger>,
    state: Arc<dyn SharedState>,
) -> Result<S3Storage, S3SetupError> {
    let settings = s3_settings(config)?;
    let keys = if settings.prefix.is_empty() {
        "<user>/".to_owned()
    } else {
        format!("{}/<user>/", settings.prefix)
    };
    let shown = format!(
        "S3 bucket {} at {}, keys {keys}",
        settings.bucket,
        settings.endpoint.as_deref().unwrap_or("AWS")
    );
    let storage = S3Storage::new(settings)?
        .with_quota(ledger)
        .with_shared_state(state)
        .with_path_limits(path_limits(config))
        .with_listing_limit(config.max_listing_entries)
        .with_partial_uploads(config.keep_partial_uploads);
    log::info!("storage: {shown}");
    Ok(storage)
}

/// The backends of a running server, built in the order the server needs them.
pub struct Backends {
    /// The account store (JSON files, or the cluster's database).
    pub accounts: Arc<dyn AccountStore>,
    /// The invitation codes, when `registration = "invite"`.
    pub invites: Option<Arc<dyn InviteStore>>,
    /// The file storage (local or S3), charging the quota ledger.
    pub storage: Arc<dyn Storage>,
    /// The audit log actor over its sinks (`audit.jsonl`, `xferlog`).
    pub audit: Addr<AuditLog>,
    /// The state the nodes of a cluster share: in process, or in the cluster's database.
    pub state: Arc<dyn SharedState>,
    /// What deleted accounts left (registration refuses their names).
    pub remains: Remains,
    /// The cluster's database, with `database_url`.
    pub database: Option<Arc<Database>>,
    /// What the admin listener's `/metrics` shows (counted by the audit log).
    pub metrics: Arc<Metrics>,
}

impl Backends {
    /// Opens (and creates where missing) every backend of `config`; a usage ledger a crash left
    /// dirty is recounted before any session can start, and an S3 bucket is probed. Call
    /// inside a running `System` (the audit log is an actor).
    ///
    /// # Errors
    /// [`OpenError`] naming the directory that failed, or why the bucket cannot be used.
    pub async fn open(config: &Config) -> Result<Backends, OpenError> {
        // The database first: a node that cannot reach it must not touch anything else.
        let database = match &config.database_url {
            Some(_) => Some(Database::open(config).await?),
            None => None,
        };
        if config.storage == StorageKind::S3 {
            // Incomplete settings and a bucket that cannot be used are named as such, before
            // the ledger's recount would list the bucket and fail less clearly.
            s3_home_storage(config)?.probe().await?;
        }
        let state = match &database {
            Some(db) => PgState::shared(config, Arc::clone(db)),
            None => LocalState::shared(config),
        };
        let accounts = accounts(config, database.as_ref())?;
        let ledger = quota_ledger(config, Arc::clone(&accounts), database.as_ref())
            .map_err(in_dir(config.usage_dir()))?
            .with_shared_state(Arc::clone(&state));
        // A recount walks a home or lists a bucket: off the runtime thread.
        let ledger = tokio::task::spawn_blocking(move || ledger.recover().map(|_| ledger))
            .await
            .map_err(|e| in_dir(config.usage_dir())(io::Error::other(e)))?
            .map_err(in_dir(config.usage_dir()))?;
        // Opened whatever the mode: a reload may turn invitations on.
        let invites = Some(invites(config, database.as_ref())?);
        let storage = storage(config, Arc::new(ledger), Arc::clone(&state))?;
        let remains = remains(config, database.as_ref())?;
        let metrics = Arc::new(Metrics::new(&config.node_name()));
        let audit = AuditLog::start(
            &config.log_dir(),
            AuditPolicy::from_config(config),
            &config.node_name(),
            database.clone(),
            Some(Arc::clone(&metrics)),
        )
        .map_err(in_dir(config.log_dir()))?;
        Ok(Backends {
            accounts,
            invites,
            storage,
            audit,
            state,
            remains,
            database,
            metrics,
        })
    }
}

/// The admin listener's token, from `admin_token_file` (the first line; never empty).
///
/// # Errors
/// The file cannot be read or holds no token.
pub fn admin_token(file: Option<&Path>) -> io::Result<Option<String>> {
    let Some(file) = file else {
        return Ok(None);
    };
    let text = std::fs::read_to_string(file).map_err(|e| {
        io::Error::new(
            e.kind(),
            format!("admin_token_file {}: {e}", file.display()),
        )
    })?;
    let token = text.lines().next().unwrap_or_default().trim();
    if token.is_empty() {
        return Err(io::Error::other(format!(
            "admin_token_file {} holds no token",
            file.display()
        )));
    }
    Ok(Some(token.to_owned()))
}

/// How the account registry registers and checks accounts, from `config`.
pub fn registry_settings(
    config: &Config,
    invites: Option<Arc<dyn InviteStore>>,
    remains: Remains,
    state: Arc<dyn SharedState>,
) -> RegistrySettings {
    RegistrySettings {
        iterations: config.pbkdf2_iterations,
        min_password_length: config.min_password_length,
        registration: config.registration,
        default_quota: config.default_quota(),
        max_registrations_per_ip_per_hour: config.max_registrations_per_ip_per_hour,
        invites,
        remains,
        state,
    }
}

/// The server's TLS (see [`Tls`]); none without a certificate.
///
/// # Errors
/// The certificate or the key cannot be read or used.
pub fn tls(config: &Config) -> Result<Option<Tls>, crate::tls::TlsError> {
    match (&config.tls_cert, &config.tls_key) {
        (Some(cert), Some(key)) => {
            let certificate = crate::tls::Certificate::load(cert, key)?;
            let server = crate::tls::server_config(Arc::clone(&certificate))?;
            let upload = crate::tls::upload_config(&server);
            Ok(Some(Tls {
                control: TlsAcceptor::from(server),
                upload: TlsAcceptor::from(upload),
                certificate,
            }))
        }
        _ => Ok(None),
    }
}

/// The server's TLS: the acceptors, and the certificate both present (reloaded on SIGHUP).
pub struct Tls {
    /// Control connections, downloads and listings.
    pub control: TlsAcceptor,
    /// Upload data connections (no session tickets sent: see [`crate::tls::upload_config`]).
    pub upload: TlsAcceptor,
    /// What both present.
    pub certificate: Arc<crate::tls::Certificate>,
}
