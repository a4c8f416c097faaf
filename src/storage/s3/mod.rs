//! The S3 backend: every home a key prefix `<prefix>/<user>/` in one bucket of an
//! S3-compatible object store (AWS S3, MinIO, Ceph RGW, Garage, R2), through `object_store`.
//!
//! All HTTP work runs on one runtime of this module's own (`io_runtime`): the callers are
//! session arbiters and transfer threads, each a single-threaded runtime, and a connection
//! pool must live on one runtime that outlives every request.
//!
//! Object storage has no directories, no appends and no renames; what ferryd does instead:
//! a directory is a marker object (`<dir>/.ferry-dir`, a name clients may neither see nor use)
//! or any key below it; APPE and REST+STOR rewrite the object (the kept bytes streamed from
//! the old one into a new multipart upload, up to `rewrite_max_bytes`); a rename copies, then
//! deletes (a directory object by object, up to `max_rename_objects`; objects up to
//! [`MAX_COPY_BYTES`], what one CopyObject takes); MFMT and SITE CHMOD
//! are not offered. Quotas, the usage ledger and write locks work as on the local backend:
//! the ledger's calls (sync, under the user's lock) run on the runtime's blocking threads and
//! wait there for the requests they make.
//!
//! - `keys`: homes and paths as keys, and the names a client may use.
//! - `errors`: object-store errors as [`StoreError`]s.
//! - `read`: stat, listings, downloads and digests.
//! - `write`: uploads (the sink).
//! - `tree`: directories, removal and renames.
//! - `storage`: the [`Storage`](crate::storage::Storage) methods over these, and the usage
//!   counter.
//! - [`testing`]: a local S3 server (s3s-fs) for tests and benchmarks.

mod errors;
mod keys;
mod read;
mod storage;
pub mod testing;
#[cfg(test)]
mod tests;
mod tree;
mod write;

use std::collections::HashMap;
use std::future::Future;
use std::io;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, OnceLock};
use std::time::Duration;

use object_store::aws::{AmazonS3, AmazonS3Builder};
use object_store::list::{PaginatedListOptions, PaginatedListStore as _};
use object_store::path::Path as ObjectPath;
use object_store::{ClientOptions, ObjectStoreExt as _, PutPayload, RetryConfig};

use crate::config::{Config, StorageKind};
use crate::quota::{QuotaLedger, UsageCounter};
use crate::state::{LocalState, SharedState};
use crate::storage::{ANONYMOUS, PathLimits, StoreError};

/// The start of the key a start-up probe writes and removes under the prefix; a random token
/// follows, so nodes of a cluster that start together never read or remove each other's.
const PROBE_KEY: &str = ".ferry-probe";

/// Where the bucket is and how to reach it, from the configuration and the environment.
#[derive(Clone, PartialEq, Eq)]
pub struct S3Settings {
    /// The bucket.
    pub bucket: String,
    /// Keys start with `<prefix>/` (no leading or trailing `/`; empty: none).
    pub prefix: String,
    /// The endpoint URL; `None` for AWS.
    pub endpoint: Option<String>,
    /// The region.
    pub region: String,
    /// Whether an `http://` endpoint is allowed.
    pub allow_http: bool,
    /// The access key id.
    pub access_key_id: String,
    /// The secret access key.
    pub secret_access_key: String,
    /// A session token (temporary credentials).
    pub session_token: Option<String>,
    /// Objects a directory rename may copy.
    pub max_rename_objects: usize,
    /// Largest object APPE or REST+STOR may rewrite.
    pub rewrite_max_bytes: u64,
    /// Largest object a rename copies: [`MAX_COPY_BYTES`] (tests lower it).
    pub max_copy_bytes: u64,
}

/// The largest object S3 copies in one request (CopyObject); a larger one would need a
/// multipart copy, which object_store does not offer, so a rename of one is refused.
pub const MAX_COPY_BYTES: u64 = 5 << 30;

impl std::fmt::Debug for S3Settings {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("S3Settings")
            .field("bucket", &self.bucket)
            .field("prefix", &self.prefix)
            .field("endpoint", &self.endpoint)
            .field("region", &self.region)
            .field("access_key_id", &self.access_key_id)
            .finish_non_exhaustive()
    }
}

/// Why the S3 backend cannot start: each message is the one line ferryd prints before it
/// exits.
#[derive(Debug, thiserror::Error)]
pub enum S3SetupError {
    /// A setting is missing or malformed.
    #[error("S3 storage: {0}")]
    Config(String),
    /// The bucket could not be written and read back.
    #[error("S3 storage: cannot use bucket {bucket}{at}: {why}")]
    Unreachable {
        /// The bucket.
        bucket: String,
        /// " at ENDPOINT", or nothing for AWS.
        at: String,
        /// What went wrong, in words.
        why: String,
    },
}

impl S3Settings {
    /// The settings of `config` (with `storage = "s3"`), credentials from the file or else the
    /// standard `AWS_ACCESS_KEY_ID`, `AWS_SECRET_ACCESS_KEY` and `AWS_SESSION_TOKEN`
    /// environment, looked up with `env`.
    ///
    /// # Errors
    /// [`S3SetupError::Config`] for a missing bucket or credentials, or a bad endpoint.
    pub fn from_config(
        config: &Config,
        env: impl Fn(&str) -> Option<String>,
    ) -> Result<S3Settings, S3SetupError> {
        if config.storage != StorageKind::S3 {
            return Err(S3SetupError::Config("storage is not s3".into()));
        }
        let bucket = config
            .s3_bucket
            .clone()
            .filter(|b| !b.is_empty())
            .ok_or_else(|| S3SetupError::Config("--s3-bucket (s3_bucket) is required".into()))?;
        let prefix = config
            .s3_prefix
            .as_deref()
            .unwrap_or("")
            .trim_matches('/')
            .to_owned();
        // Keys are built by segments, which refuse these: a prefix of them would pass the
        // probe and then fail every request.
        if prefix
            .split('/')
            .any(|part| part.is_empty() || part == "." || part == "..")
            && !prefix.is_empty()
        {
            return Err(S3SetupError::Config(format!(
                "s3_prefix {prefix:?} has an empty, \".\" or \"..\" segment"
            )));
        }
        if let Some(url) = &config.s3_endpoint
            && url
                .split_once("://")
                .map_or(url.as_str(), |(_, rest)| rest)
                .split('/')
                .next()
                .is_some_and(|authority| authority.contains('@'))
        {
            // It would be printed at start and in every error: credentials go elsewhere.
            return Err(S3SetupError::Config(
                "s3_endpoint must not hold credentials (user:password@); use \
                 AWS_ACCESS_KEY_ID/AWS_SECRET_ACCESS_KEY or the s3_access_key_id and \
                 s3_secret_access_key keys"
                    .into(),
            ));
        }
        let from_env = |name: &str| env(name).filter(|v| !v.is_empty());
        let access_key_id = config
            .s3_access_key_id
            .clone()
            .or_else(|| from_env("AWS_ACCESS_KEY_ID"))
            .ok_or_else(|| {
                S3SetupError::Config(
                    "no access key: set AWS_ACCESS_KEY_ID or s3_access_key_id".into(),
                )
            })?;
        let secret_access_key = config
            .s3_secret_access_key
            .as_ref()
            .map(|s| s.0.clone())
            .or_else(|| from_env("AWS_SECRET_ACCESS_KEY"))
            .ok_or_else(|| {
                S3SetupError::Config(
                    "no secret key: set AWS_SECRET_ACCESS_KEY or s3_secret_access_key".into(),
                )
            })?;
        if let Some(url) = &config.s3_endpoint
            && url.starts_with("http://")
            && !config.s3_allow_http
        {
            return Err(S3SetupError::Config(format!(
                "endpoint {url} is plain HTTP: add --s3-allow-http (s3_allow_http) to allow it"
            )));
        }
        Ok(S3Settings {
            bucket,
            prefix,
            endpoint: config.s3_endpoint.clone(),
            region: config
                .s3_region
                .clone()
                .unwrap_or_else(|| "us-east-1".to_owned()),
            allow_http: config.s3_allow_http,
            access_key_id,
            secret_access_key,
            session_token: from_env("AWS_SESSION_TOKEN"),
            max_rename_objects: config.s3_max_rename_objects,
            rewrite_max_bytes: config.s3_rewrite_max_bytes,
            max_copy_bytes: MAX_COPY_BYTES,
        })
    }

    /// " at <endpoint>" for messages, or nothing for AWS.
    fn at(&self) -> String {
        self.endpoint
            .as_ref()
            .map_or_else(String::new, |e| format!(" at {e}"))
    }
}

/// The runtime every S3 request runs on: two threads, started on first use, never stopped
/// (a runtime cannot be dropped from inside another, and sessions hold the store to the end).
fn io_runtime() -> &'static tokio::runtime::Runtime {
    static RUNTIME: OnceLock<tokio::runtime::Runtime> = OnceLock::new();
    RUNTIME.get_or_init(|| {
        tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .thread_name("ferry-s3")
            .enable_all()
            .build()
            .unwrap_or_else(|e| panic!("cannot start the S3 I/O runtime: {e}"))
    })
}

/// Runs `work` on the S3 runtime and waits for it from any runtime (or none).
async fn on_io<T: Send + 'static>(work: impl Future<Output = T> + Send + 'static) -> T {
    match io_runtime().spawn(work).await {
        Ok(value) => value,
        Err(e) => std::panic::resume_unwind(e.into_panic()),
    }
}

/// Runs `work` on the S3 runtime and blocks this thread until it ends: for the sync code that
/// runs under the quota ledger's locks, on a blocking thread (never on a runtime's worker).
fn wait<T: Send + 'static>(work: impl Future<Output = T> + Send + 'static) -> T {
    let (tx, rx) = std::sync::mpsc::channel();
    io_runtime().spawn(async move {
        let _ = tx.send(work.await);
    });
    match rx.recv() {
        Ok(value) => value,
        // The task panicked (and dropped the sender): a bug, surfaced as one.
        Err(_) => panic!("an S3 request task panicked"),
    }
}

/// Runs `work`, sync code that may [`wait`], on the S3 runtime's blocking threads.
async fn blocking<T: Send + 'static>(work: impl FnOnce() -> T + Send + 'static) -> T {
    match io_runtime().spawn_blocking(work).await {
        Ok(value) => value,
        Err(e) => std::panic::resume_unwind(e.into_panic()),
    }
}

/// How long a request waits for the ends of its user's dropped uploads.
const SETTLE_WAIT: Duration = Duration::from_secs(60);

/// The ends of dropped (interrupted) uploads still running in the background, per user: a
/// drop must not block the thread it happens on (a transfer thread, an arbiter), yet the
/// user's next request must find what the interruption kept or removed.
#[derive(Debug, Default)]
struct Ends {
    running: Mutex<HashMap<String, usize>>,
    done: tokio::sync::Notify,
}

/// One end running for `user`; counted off when dropped (a panic included).
pub(super) struct Ending {
    ends: Arc<Ends>,
    user: String,
}

impl Ends {
    fn running(&self) -> std::sync::MutexGuard<'_, HashMap<String, usize>> {
        self.running.lock().unwrap_or_else(|e| e.into_inner())
    }
}

impl Drop for Ending {
    fn drop(&mut self) {
        let mut running = self.ends.running();
        if let Some(n) = running.get_mut(&self.user) {
            *n -= 1;
            if *n == 0 {
                running.remove(&self.user);
            }
        }
        drop(running);
        self.ends.done.notify_waiters();
    }
}

impl S3Storage {
    /// Counts an end of `user`'s upload as running until the returned guard drops.
    pub(super) fn ending(&self, user: &str) -> Ending {
        *self.ends.running().entry(user.to_owned()).or_insert(0) += 1;
        Ending {
            ends: Arc::clone(&self.ends),
            user: user.to_owned(),
        }
    }

    /// Waits (without blocking the thread) until no end of `user`'s dropped uploads runs,
    /// at most [`SETTLE_WAIT`].
    pub(super) async fn settled(&self, user: &str) {
        let wait = async {
            loop {
                // Registered before the check, so a notification in between is not lost.
                let done = self.ends.done.notified();
                if !self.ends.running().contains_key(user) {
                    return;
                }
                done.await;
            }
        };
        if tokio::time::timeout(SETTLE_WAIT, wait).await.is_err() {
            log::warn!("{user}: an interrupted upload is still ending; going on without it");
        }
    }
}

/// How long one request may take to connect.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(10);
/// How long one request may take in all (a 5 MiB part at 100 KB/s fits); downloads are
/// bounded by [`READ_TIMEOUT`] instead.
const REQUEST_TIMEOUT: Duration = Duration::from_secs(60);
/// How long a download's body may send nothing (or its reader read nothing).
const READ_TIMEOUT: Duration = Duration::from_secs(60);

/// Numbers each store, as a device number: the `unique` facts and lock keys of two stores
/// never meet.
static NEXT_DEV: AtomicU64 = AtomicU64::new(1);

/// The S3 [`Storage`](crate::storage::Storage). Cheap to clone; clones share the client.
#[derive(Debug, Clone)]
pub struct S3Storage {
    /// Every request but the downloads.
    store: Arc<AmazonS3>,
    /// Downloads (GET bodies streamed to a client, a rewrite's kept bytes).
    reader: Arc<AmazonS3>,
    settings: Arc<S3Settings>,
    dev: u64,
    limits: PathLimits,
    max_listing_entries: usize,
    /// Keys asked for per listing request.
    listing_page: usize,
    keep_partial: bool,
    quota: Option<Arc<QuotaLedger>>,
    /// Where the rewrite and STOU write locks are taken.
    state: Arc<dyn SharedState>,
    ends: Arc<Ends>,
}

impl S3Storage {
    /// A client for the bucket in `settings`. Makes no request: see [`S3Storage::probe`].
    ///
    /// # Errors
    /// [`S3SetupError::Config`] when the settings do not make a client (a bad endpoint URL).
    pub fn new(settings: S3Settings) -> Result<S3Storage, S3SetupError> {
        crate::tls::install_process_provider();
        let options = ClientOptions::new()
            .with_connect_timeout(CONNECT_TIMEOUT)
            .with_allow_http(settings.allow_http);
        let store = client(&settings, options.clone().with_timeout(REQUEST_TIMEOUT))?;
        // A download streams as fast as its FTP client reads, for as long as that takes: no
        // bound on the whole request, only on each read.
        let reader = client(
            &settings,
            options
                .with_timeout_disabled()
                .with_read_timeout(READ_TIMEOUT),
        )?;
        Ok(S3Storage {
            store: Arc::new(store),
            reader: Arc::new(reader),
            settings: Arc::new(settings),
            dev: NEXT_DEV.fetch_add(1, Ordering::Relaxed),
            limits: PathLimits::default(),
            max_listing_entries: usize::MAX,
            listing_page: read::PAGE,
            keep_partial: false,
            quota: None,
            state: LocalState::shared(&Config::default()),
            ends: Arc::default(),
        })
    }

    /// Refuses to create paths past `limits` ([`StoreError::TooLong`]).
    pub fn with_path_limits(mut self, limits: PathLimits) -> S3Storage {
        self.limits = limits;
        self
    }

    /// Refuses whole listings (STAT, wildcard expansions) of directories with more than
    /// `max` entries ([`StoreError::TooManyEntries`]); a listing stops reading pages once past
    /// it. Streamed listings (`list_pages`: LIST, NLST, MLSD) hold one page and are not limited.
    pub fn with_listing_limit(mut self, max: usize) -> S3Storage {
        self.max_listing_entries = max;
        self
    }

    /// Asks for `keys` keys per listing request (at least 1), so tests see many pages.
    #[cfg(test)]
    pub(crate) fn with_listing_page(mut self, keys: usize) -> S3Storage {
        self.listing_page = keys.max(1);
        self
    }

    /// Keeps what an interrupted STOR of a name that held no object received, under that name.
    pub fn with_partial_uploads(mut self, keep: bool) -> S3Storage {
        self.keep_partial = keep;
        self
    }

    /// Keeps every account's usage in `ledger` and enforces its limits. Give the ledger this
    /// store's [`S3Storage::usage_counter`], so a recount lists the bucket.
    pub fn with_quota(mut self, ledger: Arc<QuotaLedger>) -> S3Storage {
        self.quota = Some(ledger);
        self
    }

    /// Takes the write locks in `state` (by default a state of this store's own).
    pub fn with_shared_state(mut self, state: Arc<dyn SharedState>) -> S3Storage {
        self.state = state;
        self
    }

    /// What counts a home for the quota ledger: a listing of the user's keys.
    pub fn usage_counter(&self) -> Arc<dyn UsageCounter> {
        Arc::new(self.clone())
    }

    /// The ledger that accounts for `user`, if any (never for the anonymous area).
    fn ledger(&self, user: &str) -> Option<&Arc<QuotaLedger>> {
        self.quota.as_ref().filter(|_| user != ANONYMOUS)
    }

    /// The exclusive right to rewrite (or create as STOU) the object `key`; on a blocking
    /// thread, as a cluster's state asks the database.
    async fn write_lock(&self, key: &str) -> Result<crate::state::Lease, StoreError> {
        let lock = format!("s3/{:x}/{key}", self.dev);
        let state = Arc::clone(&self.state);
        match blocking(move || state.write_lock(lock.as_bytes())).await {
            Ok(Some(lease)) => Ok(lease),
            Ok(None) => Err(StoreError::Busy),
            Err(e) => Err(StoreError::Io(io::Error::other(e))),
        }
    }

    /// Checks the bucket answers: one listing of one key under the prefix, not the whole
    /// prefix (every home). What `/ready` asks often; [`S3Storage::probe`] checks writing
    /// too, once at start.
    ///
    /// # Errors
    /// [`S3SetupError::Unreachable`], saying why in words.
    pub async fn reachable(&self) -> Result<(), S3SetupError> {
        let store = Arc::clone(&self.store);
        let prefix = self.key_of("").to_string();
        let outcome = on_io(async move {
            let one = PaginatedListOptions {
                max_keys: Some(1),
                ..PaginatedListOptions::default()
            };
            store.list_paginated(Some(&prefix), one).await.map(drop)
        })
        .await;
        outcome.map_err(|e| S3SetupError::Unreachable {
            bucket: self.settings.bucket.clone(),
            at: self.settings.at(),
            why: explain(&e),
        })
    }

    /// Checks the bucket is reachable and writable: writes, reads back and removes a probe
    /// object under the prefix.
    ///
    /// # Errors
    /// [`S3SetupError::Unreachable`], saying why in words (wrong endpoint, credentials,
    /// missing bucket).
    pub async fn probe(&self) -> Result<(), S3SetupError> {
        // A listing first: some servers create a missing bucket on a put.
        self.reachable().await?;
        let store = Arc::clone(&self.store);
        let key = self.key_of(&format!("{PROBE_KEY}-{:016x}", rand::random::<u64>()));
        let outcome = on_io(async move {
            store.put(&key, PutPayload::from_static(b"ferryd")).await?;
            store.get(&key).await?.bytes().await?;
            store.delete(&key).await
        })
        .await;
        outcome.map_err(|e| S3SetupError::Unreachable {
            bucket: self.settings.bucket.clone(),
            at: self.settings.at(),
            why: explain(&e),
        })
    }

    /// The key of `rest` below the prefix (the probe's).
    fn key_of(&self, rest: &str) -> ObjectPath {
        if self.settings.prefix.is_empty() {
            ObjectPath::from(rest)
        } else {
            ObjectPath::from(format!("{}/{rest}", self.settings.prefix))
        }
    }
}

/// A client for the bucket in `settings` with `options`.
fn client(settings: &S3Settings, options: ClientOptions) -> Result<AmazonS3, S3SetupError> {
    let mut builder = AmazonS3Builder::new()
        .with_bucket_name(&settings.bucket)
        .with_region(&settings.region)
        .with_access_key_id(&settings.access_key_id)
        .with_secret_access_key(&settings.secret_access_key)
        .with_allow_http(settings.allow_http)
        .with_retry(RetryConfig {
            max_retries: 4,
            retry_timeout: Duration::from_secs(30),
            ..RetryConfig::default()
        })
        .with_client_options(options);
    if let Some(endpoint) = &settings.endpoint {
        // Path-style requests: local and self-hosted servers rarely have bucket DNS names.
        builder = builder
            .with_endpoint(endpoint)
            .with_virtual_hosted_style_request(false);
    }
    if let Some(token) = &settings.session_token {
        builder = builder.with_token(token);
    }
    builder
        .build()
        .map_err(|e| S3SetupError::Config(e.to_string()))
}

/// An object-store error in words an operator acts on, then the error itself. object_store
/// reports most S3 refusals as generic errors whose text carries the S3 error code.
fn explain(err: &object_store::Error) -> String {
    let text = err.to_string();
    let why = match err {
        object_store::Error::Unauthenticated { .. } => Some(CREDENTIALS),
        object_store::Error::PermissionDenied { .. } => Some(DENIED),
        _ if text.contains("NoSuchBucket") => Some("the bucket does not exist"),
        _ if [
            "SignatureDoesNotMatch",
            "InvalidAccessKeyId",
            "InvalidToken",
        ]
        .iter()
        .any(|code| text.contains(code)) =>
        {
            Some(CREDENTIALS)
        }
        _ if text.contains("AccessDenied") => Some(DENIED),
        _ if text.contains("Connection refused") || text.contains("error sending request") => {
            Some("cannot connect to the endpoint")
        }
        _ => None,
    };
    match why {
        Some(why) => format!("{why} ({text})"),
        None => text,
    }
}

const CREDENTIALS: &str = "the credentials were refused (check the access key and secret)";
const DENIED: &str = "access denied (the credentials may not write this bucket)";

#[cfg(test)]
mod probe_tests {
    use super::testing::S3TestServer;
    use super::*;

    fn settings(server: &S3TestServer, bucket: &str) -> S3Settings {
        let mut config = Config::default();
        server.configure(&mut config, bucket);
        S3Settings::from_config(&config, |_| None).expect("settings")
    }

    #[test]
    fn prefixes_with_empty_segments_and_endpoints_with_credentials_are_refused() {
        let mut config = Config {
            storage: StorageKind::S3,
            s3_bucket: Some("ferry-b".into()),
            s3_access_key_id: Some("k".into()),
            s3_secret_access_key: Some(crate::config::Secret("s".into())),
            ..Config::default()
        };
        for good in ["", "/team/ftp/", "a.b/c-d"] {
            config.s3_prefix = Some(good.into());
            assert!(
                S3Settings::from_config(&config, |_| None).is_ok(),
                "{good:?}"
            );
        }
        for bad in ["team//ftp", "a/./b", "../x", "a/.."] {
            config.s3_prefix = Some(bad.into());
            let err = S3Settings::from_config(&config, |_| None).expect_err(bad);
            assert!(err.to_string().contains("segment"), "{bad:?}: {err}");
        }
        config.s3_prefix = None;
        config.s3_endpoint = Some("https://key:secret@s3.example.net/".into());
        let err = S3Settings::from_config(&config, |_| None).expect_err("userinfo");
        assert!(!err.to_string().contains("secret@"), "{err}");
        assert!(
            err.to_string().contains("must not hold credentials"),
            "{err}"
        );
        config.s3_endpoint = Some("https://s3.example.net/a@b".into());
        assert!(S3Settings::from_config(&config, |_| None).is_ok());
    }

    #[actix_rt::test]
    async fn the_probe_passes_on_a_bucket_and_says_why_it_fails() {
        let dir = tempfile::tempdir().expect("tempdir");
        let server = S3TestServer::start(dir.path()).expect("s3s-fs");
        server.create_bucket("ferry-ok").expect("bucket");
        let good = S3Storage::new(settings(&server, "ferry-ok")).expect("client");
        good.probe().await.expect("probe of a writable bucket");

        let missing = S3Storage::new(settings(&server, "ferry-missing")).expect("client");
        let err = missing.probe().await.expect_err("no such bucket");
        assert!(err.to_string().contains("bucket ferry-missing"), "{err}");
        assert!(err.to_string().contains("does not exist"), "{err}");

        let mut wrong = settings(&server, "ferry-ok");
        wrong.secret_access_key = "not-the-secret".into();
        let err = S3Storage::new(wrong)
            .expect("client")
            .probe()
            .await
            .expect_err("wrong secret");
        assert!(
            err.to_string().contains("credentials were refused"),
            "{err}"
        );

        let mut closed = settings(&server, "ferry-ok");
        closed.endpoint = Some("http://127.0.0.1:9".into());
        let err = S3Storage::new(closed)
            .expect("client")
            .probe()
            .await
            .expect_err("nothing listens on port 9");
        assert!(err.to_string().contains("cannot connect"), "{err}");
    }
}
