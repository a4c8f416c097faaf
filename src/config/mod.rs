//! Server configuration: every limit and timeout lives here with its default, nowhere else.
//!
//! A TOML file gives the base (`--config FILE`), command-line flags override it. Unknown keys in
//! the file are refused so that a typo cannot silently leave a default in force.

use std::net::{IpAddr, SocketAddr};
use std::path::{Path, PathBuf};
use std::time::Duration;

use serde::{Deserialize, Serialize};

pub mod flags;
mod reload;

pub use reload::{LiveConfig, RELOADED, RESTART_ONLY, Reload};

/// Whether `SITE REGISTER` is accepted.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, clap::ValueEnum)]
#[serde(rename_all = "lowercase")]
pub enum Registration {
    /// Anyone may register an account before logging in.
    Open,
    /// Only the operator creates accounts (`ferryd user add`).
    Closed,
    /// Registration needs an invitation code from `ferryd invite create`:
    /// `SITE REGISTER <user> <password> <code>`.
    Invite,
}

/// Where the files are kept.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize, clap::ValueEnum)]
#[serde(rename_all = "lowercase")]
pub enum StorageKind {
    /// The home directories under the data dir.
    #[default]
    Local,
    /// An S3-compatible bucket (`s3_bucket`, keys `<s3_prefix>/<user>/<path>`).
    S3,
}

/// A secret from the configuration file, never shown by `Debug` (configurations get logged).
#[derive(Clone, PartialEq, Eq, Deserialize)]
#[serde(transparent)]
pub struct Secret(pub String);

impl std::fmt::Debug for Secret {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Secret(..)")
    }
}

/// An inclusive range of TCP ports for passive data connections.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PortRange {
    /// Lowest port, inclusive.
    pub low: u16,
    /// Highest port, inclusive.
    pub high: u16,
}

impl std::str::FromStr for PortRange {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let (low, high) = s
            .split_once('-')
            .ok_or_else(|| format!("expected LOW-HIGH, got {s:?}"))?;
        let low: u16 = low
            .trim()
            .parse()
            .map_err(|e| format!("bad low port: {e}"))?;
        let high: u16 = high
            .trim()
            .parse()
            .map_err(|e| format!("bad high port: {e}"))?;
        if low == 0 || low > high {
            return Err(format!("port range {low}-{high} is empty or starts at 0"));
        }
        Ok(PortRange { low, high })
    }
}

impl<'de> Deserialize<'de> for PortRange {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let s = String::deserialize(d)?;
        s.parse().map_err(serde::de::Error::custom)
    }
}

/// The whole server configuration. Field docs give the TOML key and the default.
/// (`PartialEq`: a reload compares settings one by one, and tests/e2e/packaging.rs holds
/// contrib/ferryd.toml to the defaults.)
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct Config {
    /// `listen`: control-channel addresses. Default `["127.0.0.1:2121"]`.
    pub listen: Vec<SocketAddr>,
    /// `data_dir`: root of `accounts/`, `home/`, `log/`, `tmp/`. Default `./var`.
    pub data_dir: PathBuf,
    /// `registration`: `open`, `closed` or `invite`. Default `open`.
    pub registration: Registration,
    /// `max_registrations_per_ip_per_hour`: accounts one client address may register within an
    /// hour (`SITE REGISTER`); more are refused with 550. Default 30.
    pub max_registrations_per_ip_per_hour: u32,
    /// `default_quota_bytes`: byte limit given to new accounts. Default: none (unlimited).
    pub default_quota_bytes: Option<u64>,
    /// `default_quota_files`: file limit (files and directories) given to new accounts
    /// (0: none). Default 10 000: registration is open by default, so a stranger's account
    /// must not be able to use up the inodes of the data disk.
    pub default_quota_files: Option<u64>,
    /// `pbkdf2_iterations`: PBKDF2-HMAC-SHA256 rounds for new password hashes. Default 600 000.
    pub pbkdf2_iterations: u32,
    /// `min_password_length`: shortest password accepted, in characters. Default 8.
    pub min_password_length: usize,
    /// `passive_ports`: `"LOW-HIGH"` range for PASV/EPSV listeners. Default: any port from the OS.
    pub passive_ports: Option<PortRange>,
    /// `passive_address`: IPv4 address announced in 227 replies (NAT). Default: the control
    /// connection's local address.
    pub passive_address: Option<IpAddr>,
    /// `anonymous_root`: serve this directory read-only to `anonymous`/`ftp` with any password
    /// (local storage only). Default: none (anonymous access off).
    pub anonymous_root: Option<PathBuf>,
    /// `tls_cert`: PEM certificate chain for FTPS (`AUTH TLS`, implicit TLS). Default: none
    /// (no TLS).
    pub tls_cert: Option<PathBuf>,
    /// `tls_key`: PEM private key for `tls_cert`.
    pub tls_key: Option<PathBuf>,
    /// `implicit_tls_listen`: addresses where the connection is TLS from the first byte
    /// (port 990 in production). Default: none.
    pub implicit_tls_listen: Vec<SocketAddr>,
    /// `require_tls_login`: refuse USER/PASS and SITE REGISTER before `AUTH TLS`. Default false.
    pub require_tls_login: bool,
    /// `require_tls_data`: refuse transfers over unprotected data connections (`PROT C`).
    /// Default false.
    pub require_tls_data: bool,
    /// `require_tls_resumption`: a protected data connection must resume the control
    /// connection's TLS session (stops data-connection theft; some clients cannot). Default
    /// false.
    pub require_tls_resumption: bool,
    /// `max_sessions`: control connections in all. Default 2000.
    pub max_sessions: usize,
    /// `max_sessions_per_ip`: control connections from one address. Default 200.
    pub max_sessions_per_ip: usize,
    /// `max_line_length`: longest command line in bytes. Default 4096.
    pub max_line_length: usize,
    /// `max_path_depth`: names below the home a created path may have (MKD, uploads, RNTO,
    /// counting the tree below a moved directory). Default 64.
    pub max_path_depth: usize,
    /// `max_path_length`: bytes a created path may have as the client sees it (at most 4096;
    /// never as long on disk as `PATH_MAX` either). Default 4096.
    pub max_path_length: usize,
    /// `max_login_failures`: failed PASS attempts before the connection is closed. Default 3.
    pub max_login_failures: u8,
    /// `login_failure_delay_ms`: the 530 for a failed password comes after this delay, doubled
    /// for each further failure on the connection (capped at 8 times). Default 1000.
    pub login_failure_delay_ms: u64,
    /// `ban_after_failures`: failed logins from one address within `ban_window_secs` that ban
    /// it (0: never). Default 10.
    pub ban_after_failures: usize,
    /// `ban_window_secs`: see `ban_after_failures`. Default 600.
    pub ban_window_secs: u64,
    /// `ban_secs`: how long a banned address is refused (421). Default 900.
    pub ban_secs: u64,
    /// `max_password_checks_per_ip`: password hashes (logins, registrations, password
    /// changes) one client address may have running or queued at once; more wait their turn
    /// (0: no limit). Default 2.
    pub max_password_checks_per_ip: usize,
    /// `max_sessions_per_user`: logged-in sessions of one user (0: no limit). Default 0.
    pub max_sessions_per_user: usize,
    /// `max_transfers_per_user`: concurrent uploads and downloads of one user over all of
    /// their sessions; listings do not count (0: no limit). Default 0.
    pub max_transfers_per_user: usize,
    /// `max_upload_rate_per_user`: bytes per second for all uploads of one user together
    /// (0: no limit). Default 0.
    pub max_upload_rate_per_user: u64,
    /// `max_download_rate_per_user`: bytes per second for all downloads (and listings) of one
    /// user together (0: no limit). Default 0.
    pub max_download_rate_per_user: u64,
    /// `max_upload_rate`: bytes per second for all uploads on the server (0: no limit).
    /// Default 0.
    pub max_upload_rate: u64,
    /// `max_download_rate`: bytes per second for all downloads on the server (0: no limit).
    /// Default 0.
    pub max_download_rate: u64,
    /// `login_timeout_secs`: time to log in after connecting. Default 60.
    pub login_timeout_secs: u64,
    /// `idle_timeout_secs`: time without a command, outside transfers. Default 300.
    pub idle_timeout_secs: u64,
    /// `data_timeout_secs`: wait for a passive data connection, or for progress in a transfer.
    /// Default 60.
    pub data_timeout_secs: u64,
    /// `keep_partial_uploads`: a STOR of a name that held no file and ends early (426, ABOR,
    /// connection lost) keeps what arrived under that name, to be resumed. Default true.
    pub keep_partial_uploads: bool,
    /// `shutdown_grace_secs`: how long running transfers may go on after SIGINT/SIGTERM.
    /// Default 10.
    pub shutdown_grace_secs: u64,
    /// `workers`: session arbiters (threads). Default: one per core.
    pub workers: usize,
    /// `blocking_threads`: threads for password hashing and for file-system calls, each.
    /// Default: one per core.
    pub blocking_threads: usize,
    /// `max_listing_entries`: entries a directory may have to be listed whole (STAT, wildcard
    /// expansions, and LIST, NLST, MLSD on the local backend, which reads a directory whole
    /// to sort it); a bigger one is refused with 550, so one listing never holds more. On S3,
    /// LIST, NLST and MLSD stream a page of keys at a time, hold one page whatever the
    /// directory's size, and are not limited. Default 100 000.
    pub max_listing_entries: usize,
    /// `long_job_threads`: threads for long file-store jobs (HASH, listings), apart from the
    /// `blocking_threads` that serve short calls (CWD, SIZE, opening files). Default 4.
    pub long_job_threads: usize,
    /// `long_jobs_per_user`: long jobs of one user running at once; more wait their turn.
    /// Default 2.
    pub long_jobs_per_user: usize,
    /// `transfer_threads`: threads that run data connections, apart from the session
    /// arbiters so bulk transfers never delay control replies. Default: one per core.
    pub transfer_threads: usize,
    /// `max_bad_commands`: lines in a row that are no command (empty, too long, not UTF-8) or
    /// name an unknown verb, after which the session is closed with 421 (0: never); any
    /// answered command but NOOP resets the count. Default 10.
    pub max_bad_commands: u32,
    /// `audit_max_bytes`: `audit.jsonl` and `xferlog` are rotated (`.1`, `.2`, ..) before they
    /// pass this size (0: never). Default 64 MiB.
    pub audit_max_bytes: u64,
    /// `audit_keep`: rotated files kept of each log. Default 5.
    pub audit_keep: usize,
    /// `audit_min_free_bytes`: below this much free space on the log's file system only
    /// forensic events are written (0: no floor). Default 256 MiB.
    pub audit_min_free_bytes: u64,
    /// `log_burst_per_address`: noise events (commands before login, malformed or unknown
    /// commands, refused connections, data-port thefts, refused registrations) of one kind from
    /// one address logged one by one per 10 s; the rest are counted in one summary line.
    /// Default 100.
    pub log_burst_per_address: u32,
    /// `log_burst_total`: noise events logged one by one per 10 s from all addresses together.
    /// Default 1000.
    pub log_burst_total: u32,
    /// `storage`: `local` (the home directories under the data dir) or `s3` (a bucket).
    /// Default `local`.
    pub storage: StorageKind,
    /// `s3_bucket`: the bucket, with `storage = "s3"`. Default: none (required for S3).
    pub s3_bucket: Option<String>,
    /// `s3_prefix`: keys are `<s3_prefix>/<user>/<path>`. Default: none (keys start at the
    /// user).
    pub s3_prefix: Option<String>,
    /// `s3_endpoint`: the S3 server's URL (MinIO, Ceph RGW, Garage, R2). Default: AWS.
    pub s3_endpoint: Option<String>,
    /// `s3_region`: the bucket's region. Default `us-east-1`.
    pub s3_region: Option<String>,
    /// `s3_allow_http`: allow an `http://` endpoint (unencrypted). Default false.
    pub s3_allow_http: bool,
    /// `s3_access_key_id`: the access key, when not in `AWS_ACCESS_KEY_ID`. Default: none.
    pub s3_access_key_id: Option<String>,
    /// `s3_secret_access_key`: its secret, when not in `AWS_SECRET_ACCESS_KEY` (file only,
    /// never a flag). Default: none.
    pub s3_secret_access_key: Option<Secret>,
    /// `s3_max_rename_objects`: objects a directory rename may copy; a bigger directory is
    /// refused with 550. Default 1000.
    pub s3_max_rename_objects: usize,
    /// `s3_rewrite_max_bytes`: largest object APPE or REST+STOR rewrite on S3 (which cannot
    /// append); a bigger one is refused with 550. Default 512 MiB.
    pub s3_rewrite_max_bytes: u64,
    /// `database_url`: `postgres://USER[:PASS]@HOST:PORT/DB`. With it, accounts, invitations,
    /// quota usage and the shared state (bans, counters, session counts, write locks, quota
    /// reservations) live in PostgreSQL, for a cluster of nodes. Default: none (files under
    /// the data dir, one node).
    pub database_url: Option<Secret>,
    /// `database_password_file`: a file holding the database password, when the URL has none
    /// and `PGPASSWORD` is not set. Default: none.
    pub database_password_file: Option<PathBuf>,
    /// `database_pool_size`: connections this node keeps to the database. Default 16.
    pub database_pool_size: usize,
    /// `node_name`: this node's name in logs, audit events and the database. Default: the
    /// host name.
    pub node_name: Option<String>,
    /// `cluster_lease_secs`: a node renews its heartbeat, leases and reservations every third
    /// of this; when it stops (a crash), other nodes return what it held after this long.
    /// Default 15.
    pub cluster_lease_secs: u64,
    /// `shared_local_storage`: with `database_url` and `storage = "local"`, the operator
    /// states that the data dir's homes are one shared file system (NFS, CephFS) for every
    /// node; without it such a node refuses to start. Default false.
    pub shared_local_storage: bool,
    /// `proxy_protocol_from`: networks (CIDR) of the load balancers. A connection from them,
    /// control or passive data, must begin with a PROXY protocol v1 or v2 header, which names
    /// the client; connections from elsewhere must not send one. Default: none.
    pub proxy_protocol_from: Vec<ipnet::IpNet>,
    /// `admin_listen`: the admin HTTP listener (`/metrics`, `/health`, `/ready`). Default:
    /// none (off).
    pub admin_listen: Option<SocketAddr>,
    /// `admin_token_file`: a file holding the bearer token every admin request but `/health`
    /// needs; required when `admin_listen` is not a loopback address. Default: none.
    pub admin_token_file: Option<PathBuf>,
}

impl Default for Config {
    fn default() -> Self {
        let cores = std::thread::available_parallelism().map_or(2, |n| n.get());
        Config {
            listen: vec![SocketAddr::from(([127, 0, 0, 1], 2121))],
            data_dir: PathBuf::from("./var"),
            registration: Registration::Open,
            max_registrations_per_ip_per_hour: 30,
            default_quota_bytes: None,
            default_quota_files: Some(10_000),
            pbkdf2_iterations: 600_000,
            min_password_length: 8,
            passive_ports: None,
            passive_address: None,
            anonymous_root: None,
            tls_cert: None,
            tls_key: None,
            implicit_tls_listen: Vec::new(),
            require_tls_login: false,
            require_tls_data: false,
            require_tls_resumption: false,
            max_sessions: 2000,
            max_sessions_per_ip: 200,
            max_line_length: 4096,
            max_path_depth: 64,
            max_path_length: 4096,
            max_login_failures: 3,
            login_failure_delay_ms: 1000,
            ban_after_failures: 10,
            ban_window_secs: 600,
            ban_secs: 900,
            max_password_checks_per_ip: 2,
            max_sessions_per_user: 0,
            max_transfers_per_user: 0,
            max_upload_rate_per_user: 0,
            max_download_rate_per_user: 0,
            max_upload_rate: 0,
            max_download_rate: 0,
            login_timeout_secs: 60,
            idle_timeout_secs: 300,
            data_timeout_secs: 60,
            keep_partial_uploads: true,
            shutdown_grace_secs: 10,
            workers: cores,
            blocking_threads: cores,
            max_listing_entries: 100_000,
            long_job_threads: 4,
            long_jobs_per_user: 2,
            transfer_threads: cores,
            max_bad_commands: 10,
            audit_max_bytes: 64 << 20,
            audit_keep: 5,
            audit_min_free_bytes: 256 << 20,
            log_burst_per_address: 100,
            log_burst_total: 1000,
            storage: StorageKind::Local,
            s3_bucket: None,
            s3_prefix: None,
            s3_endpoint: None,
            s3_region: None,
            s3_allow_http: false,
            s3_access_key_id: None,
            s3_secret_access_key: None,
            s3_max_rename_objects: 1000,
            s3_rewrite_max_bytes: 512 << 20,
            database_url: None,
            database_password_file: None,
            database_pool_size: 16,
            node_name: None,
            cluster_lease_secs: 15,
            shared_local_storage: false,
            proxy_protocol_from: Vec::new(),
            admin_listen: None,
            admin_token_file: None,
        }
    }
}

/// Why a configuration could not be loaded.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    /// The file could not be read.
    #[error("cannot read {path}: {source}")]
    Read {
        /// The file.
        path: PathBuf,
        /// The cause.
        source: std::io::Error,
    },
    /// The file is not valid TOML for [`Config`].
    #[error("bad configuration in {path}: {source}")]
    Parse {
        /// The file.
        path: PathBuf,
        /// The cause.
        source: toml::de::Error,
    },
    /// A value is out of range.
    #[error("bad configuration: {0}")]
    Invalid(String),
}

/// A node name fits logs, audit fields and database rows: `[A-Za-z0-9._-]{1,63}`.
fn valid_node_name(name: &str) -> bool {
    (1..=63).contains(&name.len())
        && name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'-' | b'_'))
}

/// An IPv4-mapped IPv6 address (a dual-stack listener's view of an IPv4 peer) as IPv4, so that
/// `10.0.0.0/8` matches it.
fn canonical(ip: IpAddr) -> IpAddr {
    match ip {
        IpAddr::V6(v6) => v6.to_ipv4_mapped().map_or(ip, IpAddr::V4),
        IpAddr::V4(_) => ip,
    }
}

/// Limits of one account; `None` means unlimited.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Quota {
    /// Most bytes the account's files may hold together.
    #[serde(default)]
    pub bytes: Option<u64>,
    /// Most files and directories the account may have.
    #[serde(default)]
    pub files: Option<u64>,
}

impl Quota {
    /// True when neither limit is set.
    pub fn is_unlimited(&self) -> bool {
        self.bytes.is_none() && self.files.is_none()
    }
}

impl Config {
    /// Reads a TOML configuration file; keys it leaves out keep their defaults.
    ///
    /// # Errors
    /// [`ConfigError::Read`] or [`ConfigError::Parse`].
    pub fn from_file(path: &Path) -> Result<Config, ConfigError> {
        let text = std::fs::read_to_string(path).map_err(|source| ConfigError::Read {
            path: path.to_owned(),
            source,
        })?;
        toml::from_str(&text).map_err(|source| ConfigError::Parse {
            path: path.to_owned(),
            source,
        })
    }

    /// Checks values that would make the server misbehave rather than fail to start.
    ///
    /// # Errors
    /// [`ConfigError::Invalid`] naming the first bad key.
    pub fn validate(&self) -> Result<(), ConfigError> {
        let bad = |key: &str| Err(ConfigError::Invalid(format!("{key} must be at least 1")));
        if self.listen.is_empty() {
            return Err(ConfigError::Invalid("listen must name an address".into()));
        }
        if self.pbkdf2_iterations == 0 {
            return bad("pbkdf2_iterations");
        }
        if self.max_sessions == 0 {
            return bad("max_sessions");
        }
        if self.max_sessions_per_ip == 0 {
            return bad("max_sessions_per_ip");
        }
        if self.max_line_length < 64 {
            return Err(ConfigError::Invalid(
                "max_line_length must be at least 64".into(),
            ));
        }
        if self.workers == 0 {
            return bad("workers");
        }
        if self.max_path_depth == 0 {
            return bad("max_path_depth");
        }
        if !(2..=4096).contains(&self.max_path_length) {
            return Err(ConfigError::Invalid(
                "max_path_length must be between 2 and 4096".into(),
            ));
        }
        let wants_tls = !self.implicit_tls_listen.is_empty()
            || self.require_tls_login
            || self.require_tls_data
            || self.require_tls_resumption;
        if self.tls_cert.is_some() != self.tls_key.is_some()
            || (wants_tls && self.tls_cert.is_none())
        {
            return Err(ConfigError::Invalid(
                "TLS needs both tls_cert and tls_key".into(),
            ));
        }
        if self.blocking_threads == 0 {
            return bad("blocking_threads");
        }
        if self.max_listing_entries == 0 {
            return bad("max_listing_entries");
        }
        if self.long_job_threads == 0 {
            return bad("long_job_threads");
        }
        if self.long_jobs_per_user == 0 {
            return bad("long_jobs_per_user");
        }
        if self.transfer_threads == 0 {
            return bad("transfer_threads");
        }
        if self.audit_max_bytes > 0 && self.audit_keep == 0 {
            return Err(ConfigError::Invalid(
                "audit_keep must be at least 1 when audit_max_bytes is set".into(),
            ));
        }
        self.validate_storage()?;
        self.validate_cluster()?;
        self.validate_admin()
    }

    /// The admin listener: never reachable from another machine without a token.
    fn validate_admin(&self) -> Result<(), ConfigError> {
        match self.admin_listen {
            None if self.admin_token_file.is_some() => Err(ConfigError::Invalid(
                "admin_token_file needs admin_listen".into(),
            )),
            Some(addr) if !addr.ip().is_loopback() && self.admin_token_file.is_none() => {
                Err(ConfigError::Invalid(format!(
                    "admin_listen {addr} is not a loopback address: set admin_token_file \
                     (--admin-token-file) so that only holders of the token reach it"
                )))
            }
            _ => Ok(()),
        }
    }

    /// The cluster keys: a database URL of the right scheme, a usable node name, and local
    /// storage in database mode only when the operator says it is shared.
    fn validate_cluster(&self) -> Result<(), ConfigError> {
        if let Some(name) = &self.node_name
            && !valid_node_name(name)
        {
            return Err(ConfigError::Invalid(
                "node_name must be 1 to 63 letters, digits, '.', '-' or '_'".into(),
            ));
        }
        if self.cluster_lease_secs < 3 {
            return Err(ConfigError::Invalid(
                "cluster_lease_secs must be at least 3".into(),
            ));
        }
        let Some(url) = &self.database_url else {
            if self.database_password_file.is_some() || self.shared_local_storage {
                return Err(ConfigError::Invalid(
                    "database_password_file and shared_local_storage need database_url".into(),
                ));
            }
            return Ok(());
        };
        if !(url.0.starts_with("postgres://") || url.0.starts_with("postgresql://")) {
            return Err(ConfigError::Invalid(
                "database_url must be postgres://USER[:PASS]@HOST:PORT/DB".into(),
            ));
        }
        if self.database_pool_size == 0 {
            return Err(ConfigError::Invalid(
                "database_pool_size must be at least 1".into(),
            ));
        }
        if self.storage == StorageKind::Local && !self.shared_local_storage {
            return Err(ConfigError::Invalid(
                "with database_url every node must serve the same files: use storage = \"s3\", \
                 or say that the data dir is one shared file system (NFS, CephFS) with \
                 shared_local_storage = true (--shared-local-storage)"
                    .into(),
            ));
        }
        Ok(())
    }

    /// This node's name: `node_name`, else the host name (`node` if it has none usable).
    pub fn node_name(&self) -> String {
        if let Some(name) = &self.node_name {
            return name.clone();
        }
        nix::unistd::gethostname()
            .ok()
            .and_then(|h| h.into_string().ok())
            .map(|h| h.split('.').next().unwrap_or_default().to_owned())
            .filter(|h| valid_node_name(h))
            .unwrap_or_else(|| "node".to_owned())
    }

    /// Whether a connection from `ip` must begin with a PROXY header.
    pub fn proxied(&self, ip: IpAddr) -> bool {
        let ip = canonical(ip);
        self.proxy_protocol_from.iter().any(|net| net.contains(&ip))
    }

    /// The storage keys fit the storage: S3 needs a bucket and cannot serve the anonymous area
    /// (a local directory); S3 keys given with local storage are refused by name, so that a
    /// mistyped `storage` does not silently serve the data dir instead of the bucket.
    fn validate_storage(&self) -> Result<(), ConfigError> {
        match self.storage {
            StorageKind::S3 => {
                if self.s3_bucket.as_deref().is_none_or(str::is_empty) {
                    return Err(ConfigError::Invalid(
                        "storage = \"s3\" needs s3_bucket (--s3-bucket)".into(),
                    ));
                }
                if self.anonymous_root.is_some() {
                    return Err(ConfigError::Invalid(
                        "anonymous_root is a local directory and cannot be served with \
                         storage = \"s3\"; leave it out or use local storage"
                            .into(),
                    ));
                }
                if self.s3_max_rename_objects == 0 {
                    return Err(ConfigError::Invalid(
                        "s3_max_rename_objects must be at least 1".into(),
                    ));
                }
                Ok(())
            }
            StorageKind::Local => {
                let defaults = Config::default();
                let given: Vec<&str> = [
                    ("s3_bucket", self.s3_bucket.is_some()),
                    ("s3_prefix", self.s3_prefix.is_some()),
                    ("s3_endpoint", self.s3_endpoint.is_some()),
                    ("s3_region", self.s3_region.is_some()),
                    ("s3_allow_http", self.s3_allow_http),
                    ("s3_access_key_id", self.s3_access_key_id.is_some()),
                    ("s3_secret_access_key", self.s3_secret_access_key.is_some()),
                    (
                        "s3_max_rename_objects",
                        self.s3_max_rename_objects != defaults.s3_max_rename_objects,
                    ),
                    (
                        "s3_rewrite_max_bytes",
                        self.s3_rewrite_max_bytes != defaults.s3_rewrite_max_bytes,
                    ),
                ]
                .into_iter()
                .filter_map(|(key, set)| set.then_some(key))
                .collect();
                if given.is_empty() {
                    Ok(())
                } else {
                    Err(ConfigError::Invalid(format!(
                        "{} given, but storage is local: add storage = \"s3\" (--storage s3) \
                         or leave them out",
                        given.join(", ")
                    )))
                }
            }
        }
    }

    /// Directory of the account files.
    pub fn accounts_dir(&self) -> PathBuf {
        self.data_dir.join("accounts")
    }

    /// Directory holding one home directory per user.
    pub fn homes_dir(&self) -> PathBuf {
        self.data_dir.join("home")
    }

    /// Directory of `audit.jsonl` and `xferlog`.
    pub fn log_dir(&self) -> PathBuf {
        self.data_dir.join("log")
    }

    /// Staging directory for uploads in progress (same file system as the homes, so the final
    /// rename is atomic).
    pub fn tmp_dir(&self) -> PathBuf {
        self.data_dir.join("tmp")
    }

    /// Directory of the usage ledger: `<user>.json` with bytes and files stored.
    pub fn usage_dir(&self) -> PathBuf {
        self.data_dir.join("usage")
    }

    /// Directory of the invitation codes: `<code>.json`.
    pub fn invites_dir(&self) -> PathBuf {
        self.data_dir.join("invites")
    }

    /// The limits given to new accounts.
    pub fn default_quota(&self) -> Quota {
        Quota {
            bytes: self.default_quota_bytes,
            files: self.default_quota_files.filter(|&n| n > 0),
        }
    }

    /// Login timeout as a duration.
    pub fn login_timeout(&self) -> Duration {
        Duration::from_secs(self.login_timeout_secs)
    }

    /// Idle timeout as a duration.
    pub fn idle_timeout(&self) -> Duration {
        Duration::from_secs(self.idle_timeout_secs)
    }

    /// Data-connection timeout as a duration.
    pub fn data_timeout(&self) -> Duration {
        Duration::from_secs(self.data_timeout_secs)
    }

    /// Shutdown grace period as a duration.
    pub fn shutdown_grace(&self) -> Duration {
        Duration::from_secs(self.shutdown_grace_secs)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn file_keys_override_defaults_and_unknown_keys_fail() {
        let cfg: Config =
            toml::from_str("pbkdf2_iterations = 1000\npassive_ports = \"50000-50010\"\n")
                .expect("valid toml");
        assert_eq!(cfg.pbkdf2_iterations, 1000);
        assert_eq!(
            cfg.passive_ports,
            Some(PortRange {
                low: 50000,
                high: 50010
            })
        );
        assert_eq!(cfg.max_line_length, 4096);
        assert_eq!((cfg.max_path_depth, cfg.max_path_length), (64, 4096));
        assert!(toml::from_str::<Config>("pbkdf2_iteration = 5\n").is_err());
        let cfg: Config = toml::from_str(
            "registration = \"invite\"\ndefault_quota_bytes = 1000\nmax_registrations_per_ip_per_hour = 2\n",
        )
        .expect("valid toml");
        assert_eq!(cfg.registration, Registration::Invite);
        assert_eq!(cfg.default_quota_bytes, Some(1000));
        assert_eq!(cfg.default_quota().files, Some(10_000));
        let unlimited: Config = toml::from_str("default_quota_files = 0\n").expect("valid toml");
        assert_eq!(unlimited.default_quota().files, None);
        assert_eq!(cfg.max_registrations_per_ip_per_hour, 2);
    }

    #[test]
    fn defaults_fit_parallel_clients() {
        let cfg = Config::default();
        assert_eq!(cfg.max_sessions_per_user, 0);
        assert_eq!(cfg.max_transfers_per_user, 0);
        assert_eq!(cfg.max_sessions_per_ip, 200);
        assert_eq!(cfg.max_registrations_per_ip_per_hour, 30);
        cfg.validate().expect("the defaults are valid");
    }

    #[test]
    fn audit_keys_parse_and_rotation_needs_a_kept_file() {
        let cfg: Config = toml::from_str(
            "audit_max_bytes = 1000\naudit_keep = 2\naudit_min_free_bytes = 0\nmax_bad_commands = 0\nlog_burst_per_address = 5\nlog_burst_total = 50\n",
        )
        .expect("valid toml");
        assert_eq!((cfg.audit_max_bytes, cfg.audit_keep), (1000, 2));
        assert_eq!((cfg.log_burst_per_address, cfg.log_burst_total), (5, 50));
        assert!(cfg.validate().is_ok());
        let cfg: Config = toml::from_str("audit_keep = 0\n").expect("valid toml");
        assert!(cfg.validate().is_err());
        let cfg: Config =
            toml::from_str("audit_keep = 0\naudit_max_bytes = 0\n").expect("valid toml");
        assert!(cfg.validate().is_ok());
    }

    #[test]
    fn path_limits_are_validated() {
        let cfg: Config =
            toml::from_str("max_path_depth = 8\nmax_path_length = 200\n").expect("valid toml");
        assert_eq!((cfg.max_path_depth, cfg.max_path_length), (8, 200));
        cfg.validate().expect("valid limits");
        for bad in [
            "max_path_depth = 0",
            "max_path_length = 1",
            "max_path_length = 4097",
        ] {
            let cfg: Config = toml::from_str(bad).expect("valid toml");
            assert!(cfg.validate().is_err(), "{bad}");
        }
    }

    #[test]
    fn partial_uploads_are_kept_unless_turned_off() {
        assert!(Config::default().keep_partial_uploads);
        let cfg: Config = toml::from_str("keep_partial_uploads = false\n").expect("valid toml");
        assert!(!cfg.keep_partial_uploads);
    }

    #[test]
    fn port_range_rejects_reversed_and_zero() {
        assert!("10-5".parse::<PortRange>().is_err());
        assert!("0-5".parse::<PortRange>().is_err());
        assert!("5".parse::<PortRange>().is_err());
        assert_eq!(
            "7-7".parse::<PortRange>(),
            Ok(PortRange { low: 7, high: 7 })
        );
    }
}
