//! The one place the backends are built from the configuration: the account and invite stores,
//! the quota ledger, the file storage, the audit log and the TLS configs. `ferryd serve`
//! ([`crate::server::Server::start`]) and the operator commands ([`crate::admin`]) both build
//! them here, so both read and write the same files in the same way, and a second backend
//! (another account store, another storage) is chosen here and nowhere else.

use std::io;
use std::path::PathBuf;
use std::sync::Arc;

use actix::Addr;
use tokio_rustls::TlsAcceptor;

use crate::accounts::invites::InviteStore;
use crate::actors::account_registry::{
    AccountLimits, AccountStore, JsonAccountStore, RegistrySettings, Remains,
};
use crate::actors::audit_log::{AuditLog, AuditPolicy};
use crate::config::{Config, Registration};
use crate::quota::QuotaLedger;
use crate::state::{LocalState, SharedState};
use crate::storage::PathLimits;
use crate::storage::local::LocalStorage;

/// A part of the data directory could not be prepared.
#[derive(Debug, thiserror::Error)]
#[error("cannot prepare data directory {path}: {source}")]
pub struct DataDirError {
    /// The directory.
    pub path: PathBuf,
    /// The cause.
    pub source: io::Error,
}

/// Names the directory an I/O error is about.
fn in_dir(path: PathBuf) -> impl FnOnce(io::Error) -> DataDirError {
    move |source| DataDirError { path, source }
}

/// The account store (`DATA/accounts/`, created when missing).
///
/// # Errors
/// The directory cannot be created.
pub fn account_store(config: &Config) -> io::Result<JsonAccountStore> {
    JsonAccountStore::new(config.accounts_dir())
}

/// The account store if its directory exists: commands that only read, or find nothing to
/// change without it, must not create a data directory (a mistyped `--data-dir`, or a command
/// run in the wrong directory, would leave an empty one behind).
///
/// # Errors
/// The directory exists but cannot be opened as a store.
pub fn existing_account_store(config: &Config) -> io::Result<Option<JsonAccountStore>> {
    if config.accounts_dir().is_dir() {
        account_store(config).map(Some)
    } else {
        Ok(None)
    }
}

/// The usage ledger (`DATA/usage/`, created when missing), with each user's limits read from
/// `accounts`.
///
/// # Errors
/// The directory cannot be created.
pub fn quota_ledger(config: &Config, accounts: Arc<dyn AccountStore>) -> io::Result<QuotaLedger> {
    QuotaLedger::new(
        config.usage_dir(),
        config.homes_dir(),
        Arc::new(AccountLimits(accounts)),
    )
}

/// The invitation codes (`DATA/invites/`, created when missing).
///
/// # Errors
/// The directory cannot be created.
pub fn invite_store(config: &Config) -> io::Result<InviteStore> {
    InviteStore::new(config.invites_dir())
}

/// What a deleted account leaves behind (its home, its usage ledger).
pub fn remains(config: &Config) -> Remains {
    Remains::new(config.homes_dir(), config.usage_dir())
}

/// The homes and the upload staging directory, without quota or limits: enough to create a
/// home directory.
///
/// # Errors
/// A directory cannot be created.
pub fn home_storage(config: &Config) -> io::Result<LocalStorage> {
    LocalStorage::new(config.homes_dir(), config.tmp_dir())
}

/// The file storage a server runs with: quota charged to `ledger`, the path, listing and
/// partial-upload settings, the anonymous area when one is configured, and no unfinished
/// upload of a previous run left in staging.
///
/// # Errors
/// [`DataDirError`] for the homes, the staging directory or the anonymous root.
pub fn storage(
    config: &Config,
    ledger: Arc<QuotaLedger>,
    state: Arc<dyn SharedState>,
) -> Result<LocalStorage, DataDirError> {
    let mut storage = home_storage(config)
        .map_err(in_dir(config.homes_dir()))?
        .with_quota(ledger)
        .with_shared_state(state)
        .with_path_limits(PathLimits {
            max_depth: config.max_path_depth,
            max_length: config.max_path_length,
        })
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

/// The backends of a running server, built in the order the server needs them.
pub struct Backends {
    /// The account store.
    pub accounts: Arc<JsonAccountStore>,
    /// The invitation codes, when `registration = "invite"`.
    pub invites: Option<Arc<InviteStore>>,
    /// The file storage, charging the quota ledger.
    pub storage: LocalStorage,
    /// The audit log actor over its sinks (`audit.jsonl`, `xferlog`).
    pub audit: Addr<AuditLog>,
    /// The state the nodes of a cluster share (in process today; a cluster's in issue 14).
    pub state: Arc<dyn SharedState>,
}

impl Backends {
    /// Opens (and creates where missing) every backend of `config`; a usage ledger a crash left
    /// dirty is recounted before any session can start. Call inside a running `System` (the
    /// audit log is an actor).
    ///
    /// # Errors
    /// [`DataDirError`] naming the directory that failed.
    pub fn open(config: &Config) -> Result<Backends, DataDirError> {
        let state = LocalState::shared(config);
        let accounts = Arc::new(account_store(config).map_err(in_dir(config.accounts_dir()))?);
        let ledger = quota_ledger(config, Arc::clone(&accounts) as Arc<dyn AccountStore>)
            .map_err(in_dir(config.usage_dir()))?
            .with_shared_state(Arc::clone(&state));
        ledger.recover().map_err(in_dir(config.usage_dir()))?;
        let invites = match config.registration {
            Registration::Invite => Some(Arc::new(
                invite_store(config).map_err(in_dir(config.invites_dir()))?,
            )),
            _ => None,
        };
        let storage = storage(config, Arc::new(ledger), Arc::clone(&state))?;
        let audit = AuditLog::start(&config.log_dir(), AuditPolicy::from_config(config))
            .map_err(in_dir(config.log_dir()))?;
        Ok(Backends {
            accounts,
            invites,
            storage,
            audit,
            state,
        })
    }
}

/// How the account registry registers and checks accounts, from `config`.
pub fn registry_settings(
    config: &Config,
    invites: Option<Arc<InviteStore>>,
    state: Arc<dyn SharedState>,
) -> RegistrySettings {
    RegistrySettings {
        iterations: config.pbkdf2_iterations,
        min_password_length: config.min_password_length,
        registration: config.registration,
        default_quota: config.default_quota(),
        max_registrations_per_ip_per_hour: config.max_registrations_per_ip_per_hour,
        invites,
        remains: remains(config),
        state,
    }
}

/// The TLS acceptors of the control connections and of upload data connections (no session
/// tickets there: see [`crate::tls::upload_config`]); none without a certificate.
///
/// # Errors
/// The certificate or the key cannot be read or used.
pub fn tls(
    config: &Config,
) -> Result<(Option<TlsAcceptor>, Option<TlsAcceptor>), crate::tls::TlsError> {
    match (&config.tls_cert, &config.tls_key) {
        (Some(cert), Some(key)) => {
            let server = crate::tls::server_config(cert, key)?;
            let upload = crate::tls::upload_config(&server);
            Ok((
                Some(TlsAcceptor::from(server)),
                Some(TlsAcceptor::from(upload)),
            ))
        }
        _ => Ok((None, None)),
    }
}
