//! The S3 backend: every home a key prefix `<prefix>/<user>/` in one bucket of an
//! S3-compatible object store (AWS S3, MinIO, Ceph RGW, Garage, R2), through `object_store`.
//!
//! All HTTP work runs on one runtime of this module's own ([`io_runtime`]): the callers are
//! session arbiters and transfer threads, each a single-threaded runtime, and a connection
//! pool must live on one runtime that outlives every request.
//!
//! - [`testing`]: a local S3 server (s3s-fs) for tests and benchmarks.

pub mod testing;

use std::future::Future;
use std::sync::{Arc, OnceLock};
use std::time::Duration;

use object_store::aws::{AmazonS3, AmazonS3Builder};
use object_store::path::Path as ObjectPath;
use object_store::{ObjectStore as _, ObjectStoreExt as _, PutPayload, RetryConfig};

use crate::config::{Config, StorageKind};

/// The key every start-up probe writes and removes under the prefix.
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
}

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
        /// " at <endpoint>", or nothing for AWS.
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

/// The S3 [`Storage`](crate::storage::Storage). Cheap to clone; clones share the client.
#[derive(Debug, Clone)]
pub struct S3Storage {
    store: Arc<AmazonS3>,
    settings: Arc<S3Settings>,
}

impl S3Storage {
    /// A client for the bucket in `settings`. Makes no request: see [`S3Storage::probe`].
    ///
    /// # Errors
    /// [`S3SetupError::Config`] when the settings do not make a client (a bad endpoint URL).
    pub fn new(settings: S3Settings) -> Result<S3Storage, S3SetupError> {
        // reqwest's TLS needs a process-wide provider: ring, the one the FTP side uses. An
        // error means one is installed already.
        let _ = rustls::crypto::ring::default_provider().install_default();
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
            });
        if let Some(endpoint) = &settings.endpoint {
            // Path-style requests: local and self-hosted servers rarely have bucket DNS names.
            builder = builder
                .with_endpoint(endpoint)
                .with_virtual_hosted_style_request(false);
        }
        if let Some(token) = &settings.session_token {
            builder = builder.with_token(token);
        }
        let store = builder
            .build()
            .map_err(|e| S3SetupError::Config(e.to_string()))?;
        Ok(S3Storage {
            store: Arc::new(store),
            settings: Arc::new(settings),
        })
    }

    /// Checks the bucket is reachable and writable: writes, reads back and removes a probe
    /// object under the prefix.
    ///
    /// # Errors
    /// [`S3SetupError::Unreachable`], saying why in words (wrong endpoint, credentials,
    /// missing bucket).
    pub async fn probe(&self) -> Result<(), S3SetupError> {
        let store = Arc::clone(&self.store);
        let key = self.key_of(PROBE_KEY);
        let prefix = self.key_of("");
        let outcome = on_io(async move {
            // A listing first: some servers create a missing bucket on a put.
            store.list_with_delimiter(Some(&prefix)).await?;
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

    /// The key of `rest` below the prefix.
    fn key_of(&self, rest: &str) -> ObjectPath {
        if self.settings.prefix.is_empty() {
            ObjectPath::from(rest)
        } else {
            ObjectPath::from(format!("{}/{rest}", self.settings.prefix))
        }
    }
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
mod tests {
    use super::testing::S3TestServer;
    use super::*;

    fn settings(server: &S3TestServer, bucket: &str) -> S3Settings {
        let mut config = Config::default();
        server.configure(&mut config, bucket);
        S3Settings::from_config(&config, |_| None).expect("settings")
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
