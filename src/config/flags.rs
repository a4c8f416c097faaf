//! Command-line flags over the TOML file: `ferryd` flattens these into its argument parser, and
//! the merge here gives the [`Config`] the server runs with. A flag that is given overrides the
//! file's key of the same name; one left out keeps it; the defaults fill what neither names.

use std::net::{IpAddr, SocketAddr};
use std::path::PathBuf;

use clap::Args;

use super::{Config, ConfigError, PortRange, Registration, Secret, StorageKind};

/// Where the configuration comes from: a TOML file, then flags. Every `ferryd` command has
/// these.
#[derive(Args, Debug, Clone, Default)]
pub struct ConfigFlags {
    /// TOML configuration file; flags override it.
    #[arg(long, global = true)]
    pub config: Option<PathBuf>,
    /// Data directory (accounts/, home/, log/, tmp/). Default ./var.
    #[arg(long, global = true)]
    pub data_dir: Option<PathBuf>,
    /// Keep accounts and the shared state in PostgreSQL: `postgres://USER[:PASS]@HOST:PORT/DB`
    /// (the password better comes from PGPASSWORD or database_password_file). The operator
    /// commands work on the database then. Default: none.
    #[arg(long, global = true, value_name = "URL")]
    pub database_url: Option<String>,
}

impl ConfigFlags {
    /// The configuration file (or the defaults without one), with `--data-dir` over it.
    ///
    /// # Errors
    /// [`ConfigError::Read`] or [`ConfigError::Parse`] for the file.
    pub fn load(&self) -> Result<Config, ConfigError> {
        let mut config = match &self.config {
            Some(path) => Config::from_file(path)?,
            None => Config::default(),
        };
        if let Some(dir) = &self.data_dir {
            config.data_dir = dir.clone();
        }
        if let Some(url) = &self.database_url {
            config.database_url = Some(Secret(url.clone()));
        }
        Ok(config)
    }
}

/// The flags of `ferryd serve`: one per common TOML key (see [`Config`] for each default).
#[derive(Args, Debug, Clone, Default)]
pub struct ServeFlags {
    /// The configuration file and data directory.
    #[command(flatten)]
    pub common: ConfigFlags,
    /// Control-channel address; repeat for several (IPv4 and IPv6). Default 127.0.0.1:2121.
    #[arg(long)]
    pub listen: Vec<SocketAddr>,
    /// Passive data ports, LOW-HIGH. Default: any port from the OS.
    #[arg(long)]
    pub passive_ports: Option<PortRange>,
    /// IPv4 address announced in PASV replies (behind NAT).
    #[arg(long)]
    pub passive_address: Option<IpAddr>,
    /// Serve this directory read-only to `anonymous` / `ftp` (any password; local storage
    /// only). Default: off.
    #[arg(long)]
    pub anonymous_root: Option<PathBuf>,
    /// PEM certificate chain for FTPS (AUTH TLS and implicit TLS).
    #[arg(long)]
    pub tls_cert: Option<PathBuf>,
    /// PEM private key for --tls-cert.
    #[arg(long)]
    pub tls_key: Option<PathBuf>,
    /// Address for implicit FTPS (TLS from the first byte; port 990 in production). Repeatable.
    #[arg(long)]
    pub implicit_tls_listen: Vec<SocketAddr>,
    /// Refuse USER/PASS and SITE REGISTER before AUTH TLS.
    #[arg(long)]
    pub require_tls_login: bool,
    /// Refuse transfers over unencrypted data connections (PROT C).
    #[arg(long)]
    pub require_tls_data: bool,
    /// Protected data connections must resume the control connection's TLS session.
    #[arg(long)]
    pub require_tls_resumption: bool,
    /// Whether SITE REGISTER is accepted (invite: only with a code from `ferryd invite`).
    #[arg(long, value_enum)]
    pub registration: Option<Registration>,
    /// Accounts one client address may register per hour. Default 30.
    #[arg(long)]
    pub max_registrations_per_ip_per_hour: Option<u32>,
    /// Byte limit for newly registered accounts. Default: none.
    #[arg(long)]
    pub default_quota_bytes: Option<u64>,
    /// File limit (files and directories) for new accounts (0: none). Default 10000.
    #[arg(long)]
    pub default_quota_files: Option<u64>,
    /// PBKDF2 rounds for new password hashes. Default 600000.
    #[arg(long)]
    pub pbkdf2_iterations: Option<u32>,
    /// Control connections in all. Default 2000.
    #[arg(long)]
    pub max_sessions: Option<usize>,
    /// Control connections per client address. Default 200.
    #[arg(long)]
    pub max_sessions_per_ip: Option<usize>,
    /// Seconds to log in after connecting. Default 60.
    #[arg(long)]
    pub login_timeout_secs: Option<u64>,
    /// Seconds without a command before the server closes the session. Default 300.
    #[arg(long)]
    pub idle_timeout_secs: Option<u64>,
    /// Seconds to wait for a data connection or for transfer progress. Default 60.
    #[arg(long)]
    pub data_timeout_secs: Option<u64>,
    /// Keep what an interrupted STOR of a new name received, to be resumed (true or false).
    /// Default true.
    #[arg(long, value_name = "BOOL")]
    pub keep_partial_uploads: Option<bool>,
    /// Delay of the first 530 after a wrong password, doubling per failure. Default 1000.
    #[arg(long)]
    pub login_failure_delay_ms: Option<u64>,
    /// Failed passwords on one connection before it is closed. Default 3.
    #[arg(long)]
    pub max_login_failures: Option<u8>,
    /// Failed logins from one address within --ban-window-secs that ban it (0: never).
    /// Default 10.
    #[arg(long)]
    pub ban_after_failures: Option<usize>,
    /// Window for --ban-after-failures. Default 600.
    #[arg(long)]
    pub ban_window_secs: Option<u64>,
    /// How long a banned address is refused. Default 900.
    #[arg(long)]
    pub ban_secs: Option<u64>,
    /// Password hashes one address may have running or queued at once (0: no limit).
    /// Default 2.
    #[arg(long)]
    pub max_password_checks_per_ip: Option<usize>,
    /// Logged-in sessions per user (0: no limit). Default 0.
    #[arg(long)]
    pub max_sessions_per_user: Option<usize>,
    /// Concurrent uploads and downloads per user, listings apart (0: no limit). Default 0.
    #[arg(long)]
    pub max_transfers_per_user: Option<usize>,
    /// Bytes per second for all of one user's uploads together (0: no limit).
    #[arg(long)]
    pub max_upload_rate_per_user: Option<u64>,
    /// Bytes per second for all of one user's downloads together (0: no limit).
    #[arg(long)]
    pub max_download_rate_per_user: Option<u64>,
    /// Bytes per second for all uploads on the server (0: no limit).
    #[arg(long)]
    pub max_upload_rate: Option<u64>,
    /// Bytes per second for all downloads on the server (0: no limit).
    #[arg(long)]
    pub max_download_rate: Option<u64>,
    /// Consecutive malformed or unknown commands that close the session (0: never). Default 10.
    #[arg(long)]
    pub max_bad_commands: Option<u32>,
    /// Size at which audit.jsonl and xferlog rotate (0: never). Default 64 MiB.
    #[arg(long)]
    pub audit_max_bytes: Option<u64>,
    /// Rotated files kept of each log. Default 5.
    #[arg(long)]
    pub audit_keep: Option<usize>,
    /// Free bytes below which only forensic audit events are written (0: no floor).
    /// Default 256 MiB.
    #[arg(long)]
    pub audit_min_free_bytes: Option<u64>,
    /// Where the files are kept: the home directories under the data dir, or an S3 bucket.
    /// Default local.
    #[arg(long, value_enum)]
    pub storage: Option<StorageKind>,
    /// The S3 bucket (required with --storage s3). Credentials come from AWS_ACCESS_KEY_ID and
    /// AWS_SECRET_ACCESS_KEY (or the file), never from a flag.
    #[arg(long, value_name = "NAME")]
    pub s3_bucket: Option<String>,
    /// Key prefix in the bucket: keys are PREFIX/USER/PATH. Default: none.
    #[arg(long, value_name = "PREFIX")]
    pub s3_prefix: Option<String>,
    /// The S3 server's URL (MinIO, Ceph RGW, Garage, R2). Default: AWS.
    #[arg(long, value_name = "URL")]
    pub s3_endpoint: Option<String>,
    /// The bucket's region. Default us-east-1.
    #[arg(long, value_name = "REGION")]
    pub s3_region: Option<String>,
    /// Allow a plain http:// S3 endpoint (unencrypted).
    #[arg(long)]
    pub s3_allow_http: bool,
    /// Objects a directory rename may copy on S3; a bigger directory is refused. Default 1000.
    #[arg(long, value_name = "N")]
    pub s3_max_rename_objects: Option<usize>,
    /// Largest object APPE or REST+STOR may rewrite on S3. Default 512 MiB.
    #[arg(long, value_name = "BYTES")]
    pub s3_rewrite_max_bytes: Option<u64>,
    /// This node's name in logs, audit events and the database. Default: the host name.
    #[arg(long, value_name = "NAME")]
    pub node_name: Option<String>,
    /// With --database-url and local storage: the data dir is one file system every node
    /// shares (NFS, CephFS).
    #[arg(long)]
    pub shared_local_storage: bool,
    /// A load balancer's network (CIDR, repeatable): connections from it must begin with a
    /// PROXY protocol v1/v2 header naming the client.
    #[arg(long, value_name = "CIDR")]
    pub proxy_protocol_from: Vec<ipnet::IpNet>,
    /// The admin HTTP listener (/metrics, /health, /ready), e.g. 127.0.0.1:9121. Default: off.
    #[arg(long, value_name = "ADDR:PORT")]
    pub admin_listen: Option<SocketAddr>,
    /// A file with the bearer token the admin listener requires (needed off loopback).
    #[arg(long, value_name = "FILE")]
    pub admin_token_file: Option<PathBuf>,
}

/// Puts `value` into `slot` when the flag was given.
fn set<T>(slot: &mut T, value: Option<T>) {
    if let Some(v) = value {
        *slot = v;
    }
}

/// Puts an optional setting into `slot` when the flag was given.
fn set_opt<T>(slot: &mut Option<T>, value: Option<T>) {
    if value.is_some() {
        *slot = value;
    }
}

/// Puts a list flag into `slot` when it was given at least once.
fn set_list<T>(slot: &mut Vec<T>, values: Vec<T>) {
    if !values.is_empty() {
        *slot = values;
    }
}

impl ServeFlags {
    /// The configuration `ferryd serve` runs with: the file (or the defaults), the flags over
    /// it, validated.
    ///
    /// # Errors
    /// [`ConfigError::Read`] or [`ConfigError::Parse`] for the file, [`ConfigError::Invalid`]
    /// for a value or a combination the server refuses (see [`Config::validate`]).
    pub fn config(self) -> Result<Config, ConfigError> {
        let mut config = self.common.load()?;
        self.apply(&mut config);
        config.validate()?;
        Ok(config)
    }

    /// Writes every given flag over `config`. The `require_tls_*` and `--s3-allow-http`
    /// switches can only turn a setting on: the file's `true` stands without them.
    pub fn apply(self, config: &mut Config) {
        if let Some(dir) = self.common.data_dir {
            config.data_dir = dir;
        }
        set_list(&mut config.listen, self.listen);
        set_list(&mut config.implicit_tls_listen, self.implicit_tls_listen);
        set_opt(&mut config.passive_ports, self.passive_ports);
        set_opt(&mut config.passive_address, self.passive_address);
        set_opt(&mut config.anonymous_root, self.anonymous_root);
        set_opt(&mut config.tls_cert, self.tls_cert);
        set_opt(&mut config.tls_key, self.tls_key);
        set_opt(&mut config.default_quota_bytes, self.default_quota_bytes);
        set_opt(&mut config.default_quota_files, self.default_quota_files);
        config.require_tls_login |= self.require_tls_login;
        config.require_tls_data |= self.require_tls_data;
        config.require_tls_resumption |= self.require_tls_resumption;
        set(&mut config.registration, self.registration);
        set(
            &mut config.max_registrations_per_ip_per_hour,
            self.max_registrations_per_ip_per_hour,
        );
        set(&mut config.pbkdf2_iterations, self.pbkdf2_iterations);
        set(&mut config.max_sessions, self.max_sessions);
        set(&mut config.max_sessions_per_ip, self.max_sessions_per_ip);
        set(&mut config.login_timeout_secs, self.login_timeout_secs);
        set(&mut config.idle_timeout_secs, self.idle_timeout_secs);
        set(&mut config.data_timeout_secs, self.data_timeout_secs);
        set(&mut config.keep_partial_uploads, self.keep_partial_uploads);
        set(
            &mut config.login_failure_delay_ms,
            self.login_failure_delay_ms,
        );
        set(&mut config.max_login_failures, self.max_login_failures);
        set(&mut config.ban_after_failures, self.ban_after_failures);
        set(&mut config.ban_window_secs, self.ban_window_secs);
        set(&mut config.ban_secs, self.ban_secs);
        set(
            &mut config.max_password_checks_per_ip,
            self.max_password_checks_per_ip,
        );
        set(
            &mut config.max_sessions_per_user,
            self.max_sessions_per_user,
        );
        set(
            &mut config.max_transfers_per_user,
            self.max_transfers_per_user,
        );
        set(
            &mut config.max_upload_rate_per_user,
            self.max_upload_rate_per_user,
        );
        set(
            &mut config.max_download_rate_per_user,
            self.max_download_rate_per_user,
        );
        set(&mut config.max_upload_rate, self.max_upload_rate);
        set(&mut config.max_download_rate, self.max_download_rate);
        set(&mut config.max_bad_commands, self.max_bad_commands);
        set(&mut config.audit_max_bytes, self.audit_max_bytes);
        set(&mut config.audit_keep, self.audit_keep);
        set(&mut config.audit_min_free_bytes, self.audit_min_free_bytes);
        set(&mut config.storage, self.storage);
        set_opt(&mut config.s3_bucket, self.s3_bucket);
        set_opt(&mut config.s3_prefix, self.s3_prefix);
        set_opt(&mut config.s3_endpoint, self.s3_endpoint);
        set_opt(&mut config.s3_region, self.s3_region);
        config.s3_allow_http |= self.s3_allow_http;
        set(
            &mut config.s3_max_rename_objects,
            self.s3_max_rename_objects,
        );
        set(&mut config.s3_rewrite_max_bytes, self.s3_rewrite_max_bytes);
        set_opt(&mut config.node_name, self.node_name);
        config.shared_local_storage |= self.shared_local_storage;
        if !self.proxy_protocol_from.is_empty() {
            config.proxy_protocol_from = self.proxy_protocol_from;
        }
        set_opt(&mut config.admin_listen, self.admin_listen);
        set_opt(&mut config.admin_token_file, self.admin_token_file);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::Parser;

    #[derive(Parser)]
    struct Cli {
        #[command(flatten)]
        flags: ServeFlags,
    }

    fn flags_str(args: &str) -> ServeFlags {
        flags(&args.split_whitespace().collect::<Vec<_>>())
    }

    fn flags(args: &[&str]) -> ServeFlags {
        let argv = std::iter::once("ferryd").chain(args.iter().copied());
        Cli::try_parse_from(argv).expect("valid flags").flags
    }

    /// Every key a flag can override, set in a file (`require_tls_login` on, the other two
    /// requirements off).
    const FILE: &str = r#"
        listen = ["127.0.0.1:2000"]
        data_dir = "/file/data"
        registration = "closed"
        max_registrations_per_ip_per_hour = 1
        default_quota_bytes = 2
        default_quota_files = 3
        pbkdf2_iterations = 4
        passive_ports = "1000-1001"
        passive_address = "10.0.0.1"
        anonymous_root = "/file/anon"
        tls_cert = "/file/cert.pem"
        tls_key = "/file/key.pem"
        implicit_tls_listen = ["127.0.0.1:990"]
        require_tls_login = true
        require_tls_data = false
        require_tls_resumption = false
        max_sessions = 5
        max_sessions_per_ip = 6
        login_timeout_secs = 7
        idle_timeout_secs = 8
        data_timeout_secs = 9
        keep_partial_uploads = false
        login_failure_delay_ms = 10
        max_login_failures = 11
        ban_after_failures = 12
        ban_window_secs = 13
        ban_secs = 14
        max_password_checks_per_ip = 15
        max_sessions_per_user = 16
        max_transfers_per_user = 17
        max_upload_rate_per_user = 18
        max_download_rate_per_user = 19
        max_upload_rate = 20
        max_download_rate = 21
        max_bad_commands = 22
        audit_max_bytes = 23
        audit_keep = 24
        audit_min_free_bytes = 25
    "#;

    /// A config file in a fresh directory, and the `--config` flag naming it.
    fn file(text: &str) -> (tempfile::TempDir, String) {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("ferryd.toml");
        std::fs::write(&path, text).expect("write config");
        let path = path.to_str().expect("utf-8 temp path").to_owned();
        (dir, path)
    }

    /// `Config` has no `PartialEq` (nothing else needs one); its `Debug` shows every field.
    fn same(a: &Config, b: &Config) {
        assert_eq!(format!("{a:#?}"), format!("{b:#?}"));
    }

    #[test]
    fn each_flag_overrides_the_file() {
        let (_dir, path) = file(FILE);
        let from_file = Config::from_file(path.as_ref()).expect("valid file");
        let args = format!(
            "--config {path} --data-dir /flag/data --listen 127.0.0.1:3000 \
             --listen [::1]:3000 --registration invite \
             --max-registrations-per-ip-per-hour 101 --default-quota-bytes 102 \
             --default-quota-files 103 --pbkdf2-iterations 104 --passive-ports 2000-2001 \
             --passive-address 10.0.0.2 --anonymous-root /flag/anon \
             --tls-cert /flag/cert.pem --tls-key /flag/key.pem \
             --implicit-tls-listen 127.0.0.1:991 --require-tls-login --require-tls-data \
             --require-tls-resumption --max-sessions 105 --max-sessions-per-ip 106 \
             --login-timeout-secs 107 --idle-timeout-secs 108 --data-timeout-secs 109 \
             --keep-partial-uploads true --login-failure-delay-ms 110 \
             --max-login-failures 111 --ban-after-failures 112 --ban-window-secs 113 \
             --ban-secs 114 --max-password-checks-per-ip 115 --max-sessions-per-user 116 \
             --max-transfers-per-user 117 --max-upload-rate-per-user 118 \
             --max-download-rate-per-user 119 --max-upload-rate 120 --max-download-rate 121 \
             --max-bad-commands 122 --audit-max-bytes 123 --audit-keep 124 \
             --audit-min-free-bytes 125"
        );
        let merged = flags_str(&args).config().expect("valid merge");
        let expected = Config {
            listen: vec![
                "127.0.0.1:3000".parse().expect("addr"),
                "[::1]:3000".parse().expect("addr"),
            ],
            data_dir: "/flag/data".into(),
            registration: Registration::Invite,
            max_registrations_per_ip_per_hour: 101,
            default_quota_bytes: Some(102),
            default_quota_files: Some(103),
            pbkdf2_iterations: 104,
            passive_ports: Some(PortRange {
                low: 2000,
                high: 2001,
            }),
            passive_address: Some("10.0.0.2".parse().expect("ip")),
            anonymous_root: Some("/flag/anon".into()),
            tls_cert: Some("/flag/cert.pem".into()),
            tls_key: Some("/flag/key.pem".into()),
            implicit_tls_listen: vec!["127.0.0.1:991".parse().expect("addr")],
            require_tls_login: true,
            require_tls_data: true,
            require_tls_resumption: true,
            max_sessions: 105,
            max_sessions_per_ip: 106,
            login_timeout_secs: 107,
            idle_timeout_secs: 108,
            data_timeout_secs: 109,
            keep_partial_uploads: true,
            login_failure_delay_ms: 110,
            max_login_failures: 111,
            ban_after_failures: 112,
            ban_window_secs: 113,
            ban_secs: 114,
            max_password_checks_per_ip: 115,
            max_sessions_per_user: 116,
            max_transfers_per_user: 117,
            max_upload_rate_per_user: 118,
            max_download_rate_per_user: 119,
            max_upload_rate: 120,
            max_download_rate: 121,
            max_bad_commands: 122,
            audit_max_bytes: 123,
            audit_keep: 124,
            audit_min_free_bytes: 125,
            ..from_file
        };
        same(&merged, &expected);
    }

    #[test]
    fn absent_flags_keep_the_file() {
        let (_dir, path) = file(FILE);
        let from_file = Config::from_file(path.as_ref()).expect("valid file");
        assert_eq!(from_file.max_sessions, 5, "the file was read");
        same(
            &flags(&["--config", &path]).config().expect("valid"),
            &from_file,
        );
        // A switch left out does not turn off what the file requires.
        let mut config = from_file.clone();
        flags(&["--require-tls-data"]).apply(&mut config);
        assert!(config.require_tls_login && config.require_tls_data);
        assert!(!config.require_tls_resumption);
    }

    #[test]
    fn defaults_when_neither_file_nor_flag() {
        same(
            &flags(&[]).config().expect("the defaults are valid"),
            &Config::default(),
        );
        let config = flags(&["--max-sessions", "7"]).config().expect("valid");
        same(
            &config,
            &Config {
                max_sessions: 7,
                ..Config::default()
            },
        );
        let admin = ConfigFlags {
            data_dir: Some("/elsewhere".into()),
            config: None,
            database_url: None,
        };
        same(
            &admin.load().expect("defaults"),
            &Config {
                data_dir: "/elsewhere".into(),
                ..Config::default()
            },
        );
    }

    /// Every S3 key, in a file that chooses S3.
    const S3_FILE: &str = r#"
        storage = "s3"
        s3_bucket = "file-bucket"
        s3_prefix = "file/prefix"
        s3_endpoint = "http://127.0.0.1:9000"
        s3_region = "eu-north-1"
        s3_allow_http = true
        s3_access_key_id = "file-key"
        s3_secret_access_key = "file-secret"
        s3_max_rename_objects = 5
        s3_rewrite_max_bytes = 6
    "#;

    #[test]
    fn s3_flags_override_the_file_and_no_secret_is_a_flag() {
        let (_dir, path) = file(S3_FILE);
        let from_file = Config::from_file(path.as_ref()).expect("valid file");
        assert_eq!(from_file.storage, StorageKind::S3);
        assert_eq!(from_file.s3_access_key_id.as_deref(), Some("file-key"));
        assert_eq!(
            from_file
                .s3_secret_access_key
                .as_ref()
                .map(|s| s.0.as_str()),
            Some("file-secret")
        );
        assert!(
            !format!("{from_file:?}").contains("file-secret"),
            "Debug hides the secret"
        );
        same(
            &flags(&["--config", &path]).config().expect("valid"),
            &from_file,
        );
        let args = format!(
            "--config {path} --storage s3 --s3-bucket flag-bucket --s3-prefix flag/prefix \
             --s3-endpoint https://s3.example --s3-region us-west-2 --s3-allow-http \
             --s3-max-rename-objects 105 --s3-rewrite-max-bytes 106"
        );
        let merged = flags_str(&args).config().expect("valid merge");
        let expected = Config {
            s3_bucket: Some("flag-bucket".into()),
            s3_prefix: Some("flag/prefix".into()),
            s3_endpoint: Some("https://s3.example".into()),
            s3_region: Some("us-west-2".into()),
            s3_max_rename_objects: 105,
            s3_rewrite_max_bytes: 106,
            ..from_file
        };
        same(&merged, &expected);
        // From flags alone, over the defaults.
        let config = flags(&["--storage", "s3", "--s3-bucket", "b"])
            .config()
            .expect("valid");
        same(
            &config,
            &Config {
                storage: StorageKind::S3,
                s3_bucket: Some("b".into()),
                ..Config::default()
            },
        );
        for args in [
            &[
                "--storage",
                "s3",
                "--s3-bucket",
                "b",
                "--s3-secret-access-key",
                "x",
            ][..],
            &[
                "--storage",
                "s3",
                "--s3-bucket",
                "b",
                "--s3-access-key-id",
                "x",
            ],
            &["--storage", "nfs"],
        ] {
            let argv = std::iter::once("ferryd").chain(args.iter().copied());
            assert!(Cli::try_parse_from(argv).is_err(), "{args:?}");
        }
    }

    #[test]
    fn cluster_keys_are_checked() {
        let invalid = |args: &[&str]| match flags(args).config() {
            Err(ConfigError::Invalid(why)) => why,
            other => panic!("{args:?} gave {other:?}"),
        };
        let url = "postgres://ferry@127.0.0.1:5432/ferry";
        assert!(invalid(&["--database-url", url]).contains("shared_local_storage"));
        assert!(invalid(&["--database-url", "mysql://x"]).contains("postgres://"));
        assert!(invalid(&["--shared-local-storage"]).contains("need database_url"));
        assert!(invalid(&["--node-name", "a b"]).contains("node_name"));
        let config = flags(&[
            "--database-url",
            url,
            "--shared-local-storage",
            "--node-name",
            "n1",
            "--proxy-protocol-from",
            "10.0.0.0/8",
            "--proxy-protocol-from",
            "fd00::/8",
        ])
        .config()
        .expect("valid");
        assert_eq!(config.database_url, Some(Secret(url.into())));
        assert_eq!(config.node_name(), "n1");
        assert!(config.proxied("10.1.2.3".parse().expect("ip")));
        assert!(config.proxied("::ffff:10.1.2.3".parse().expect("ip")));
        assert!(config.proxied("fd12::1".parse().expect("ip")));
        assert!(!config.proxied("127.0.0.1".parse().expect("ip")));
        assert!(!Config::default().node_name().is_empty());
    }

    #[test]
    fn s3_keys_must_fit_the_storage() {
        let invalid = |args: &[&str]| match flags(args).config() {
            Err(ConfigError::Invalid(why)) => why,
            other => panic!("{args:?} gave {other:?}"),
        };
        assert!(invalid(&["--storage", "s3"]).contains("s3_bucket"));
        assert!(invalid(&["--storage", "s3", "--s3-bucket", ""]).contains("s3_bucket"));
        let why = invalid(&[
            "--storage",
            "s3",
            "--s3-bucket",
            "b",
            "--anonymous-root",
            "/a",
        ]);
        assert!(why.contains("anonymous_root"), "{why}");
        let why = invalid(&[
            "--storage",
            "s3",
            "--s3-bucket",
            "b",
            "--s3-max-rename-objects",
            "0",
        ]);
        assert!(why.contains("s3_max_rename_objects"), "{why}");
        // S3 keys without storage = "s3": each named, so a typo does not serve local files.
        let why = invalid(&["--s3-bucket", "b", "--s3-region", "r", "--s3-allow-http"]);
        assert!(
            why.starts_with("s3_bucket, s3_region, s3_allow_http given, but storage is local"),
            "{why}"
        );
        let (_dir, path) = file(&S3_FILE.replace("storage = \"s3\"", "storage = \"local\""));
        let why = match flags(&["--config", &path]).config() {
            Err(ConfigError::Invalid(why)) => why,
            other => panic!("{other:?}"),
        };
        for key in [
            "s3_bucket",
            "s3_prefix",
            "s3_endpoint",
            "s3_region",
            "s3_allow_http",
            "s3_access_key_id",
            "s3_secret_access_key",
            "s3_max_rename_objects",
            "s3_rewrite_max_bytes",
        ] {
            assert!(why.contains(key), "{key} in {why}");
        }
        // The flag mends the file's storage.
        assert_eq!(
            flags(&["--config", &path, "--storage", "s3"])
                .config()
                .expect("mended")
                .storage,
            StorageKind::S3
        );
        let (_dir, typo) = file("storage = \"s4\"\n");
        assert!(matches!(
            flags(&["--config", &typo]).config(),
            Err(ConfigError::Parse { .. })
        ));
    }

    #[test]
    fn invalid_combinations_are_refused() {
        let invalid = |args: &[&str]| match flags(args).config() {
            Err(ConfigError::Invalid(why)) => why,
            other => panic!("{args:?} gave {other:?}"),
        };
        assert!(invalid(&["--tls-cert", "/c.pem"]).contains("tls_key"));
        assert!(invalid(&["--tls-key", "/k.pem"]).contains("tls_cert"));
        assert!(invalid(&["--require-tls-login"]).contains("tls_cert"));
        assert!(invalid(&["--implicit-tls-listen", "127.0.0.1:990"]).contains("tls_cert"));
        assert!(invalid(&["--max-sessions", "0"]).contains("max_sessions"));
        assert!(invalid(&["--audit-keep", "0"]).contains("audit_keep"));
        assert!(invalid(&["--pbkdf2-iterations", "0"]).contains("pbkdf2_iterations"));
        // The flag is merged before validation: it can mend what the file gets wrong.
        let (_dir, path) = file("max_sessions = 0\n");
        assert!(flags(&["--config", &path]).config().is_err());
        assert_eq!(
            flags(&["--config", &path, "--max-sessions", "3"])
                .config()
                .expect("mended")
                .max_sessions,
            3
        );
        let (_dir, bad) = file("max_session = 3\n");
        assert!(matches!(
            flags(&["--config", &bad]).config(),
            Err(ConfigError::Parse { .. })
        ));
        for args in [
            &["--passive-ports", "10-5"][..],
            &["--registration", "sometimes"],
            &["--keep-partial-uploads", "maybe"],
            &["--listen", "localhost"],
        ] {
            let argv = std::iter::once("ferryd").chain(args.iter().copied());
            assert!(Cli::try_parse_from(argv).is_err(), "{args:?}");
        }
    }
}
