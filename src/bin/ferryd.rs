//! `ferryd`: the ferry FTP server. Parses the command line, sets up logging and runs either the
//! server or an operator command; the work itself lives in the library.

use std::net::{IpAddr, SocketAddr};
use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Args, Parser, Subcommand};
use ferry::actors::audit_log::EventKind;
use ferry::admin::{self, LogFilter};
use ferry::config::{Config, PortRange, Registration};
use ferry::server::Server;

/// ferryd: a multi-user FTP server with self-registration, jailed homes and an audit log.
#[derive(Parser)]
#[command(version, args_conflicts_with_subcommands = true)]
struct Cli {
    #[command(subcommand)]
    command: Option<Cmd>,
    #[command(flatten)]
    serve: ServeArgs,
}

#[derive(Subcommand)]
enum Cmd {
    /// Run the server (the default).
    Serve(Box<ServeArgs>),
    /// Manage accounts.
    #[command(subcommand)]
    User(UserCmd),
    /// Show the audit log as a table.
    Log(LogArgs),
    /// TLS certificates.
    #[command(subcommand)]
    Cert(CertCmd),
    /// Invitation codes for `registration = "invite"`.
    #[command(subcommand)]
    Invite(InviteCmd),
}

#[derive(Subcommand)]
enum InviteCmd {
    /// Create a random invitation code and print it.
    Create {
        /// How many registrations the code allows.
        #[arg(long, default_value_t = 1)]
        uses: u32,
        #[command(flatten)]
        common: Common,
    },
    /// List the codes with their uses left.
    List {
        #[command(flatten)]
        common: Common,
    },
}

/// A limit on the command line: a number, or `none` for unlimited.
#[derive(Clone, Copy)]
struct Limit(Option<u64>);

fn parse_limit(s: &str) -> Result<Limit, String> {
    if s.eq_ignore_ascii_case("none") {
        return Ok(Limit(None));
    }
    s.parse::<u64>()
        .map(|n| Limit(Some(n)))
        .map_err(|e| format!("expected a number or \"none\": {e}"))
}

#[derive(Subcommand)]
enum CertCmd {
    /// Write a self-signed certificate (DIR/cert.pem) and key (DIR/key.pem) for localhost, to
    /// try FTPS out.
    Generate {
        /// Where to write the files.
        #[arg(long)]
        out: PathBuf,
    },
}

/// Where the configuration comes from: a TOML file, then flags.
#[derive(Args, Clone, Default)]
struct Common {
    /// TOML configuration file; flags override it.
    #[arg(long, global = true)]
    config: Option<PathBuf>,
    /// Data directory (accounts/, home/, log/, tmp/). Default ./var.
    #[arg(long, global = true)]
    data_dir: Option<PathBuf>,
}

#[derive(Args, Clone, Default)]
struct ServeArgs {
    #[command(flatten)]
    common: Common,
    /// Control-channel address; repeat for several (IPv4 and IPv6). Default 127.0.0.1:2121.
    #[arg(long)]
    listen: Vec<SocketAddr>,
    /// Passive data ports, LOW-HIGH. Default: any port from the OS.
    #[arg(long)]
    passive_ports: Option<PortRange>,
    /// IPv4 address announced in PASV replies (behind NAT).
    #[arg(long)]
    passive_address: Option<IpAddr>,
    /// Serve this directory read-only to `anonymous` / `ftp` (any password). Default: off.
    #[arg(long)]
    anonymous_root: Option<PathBuf>,
    /// PEM certificate chain for FTPS (AUTH TLS and implicit TLS).
    #[arg(long)]
    tls_cert: Option<PathBuf>,
    /// PEM private key for --tls-cert.
    #[arg(long)]
    tls_key: Option<PathBuf>,
    /// Address for implicit FTPS (TLS from the first byte; port 990 in production). Repeatable.
    #[arg(long)]
    implicit_tls_listen: Vec<SocketAddr>,
    /// Refuse USER/PASS and SITE REGISTER before AUTH TLS.
    #[arg(long)]
    require_tls_login: bool,
    /// Refuse transfers over unencrypted data connections (PROT C).
    #[arg(long)]
    require_tls_data: bool,
    /// Protected data connections must resume the control connection's TLS session.
    #[arg(long)]
    require_tls_resumption: bool,
    /// Whether SITE REGISTER is accepted (invite: only with a code from `ferryd invite`).
    #[arg(long, value_enum)]
    registration: Option<Registration>,
    /// Accounts one client address may register per hour. Default 30.
    #[arg(long)]
    max_registrations_per_ip_per_hour: Option<u32>,
    /// Byte limit for newly registered accounts. Default: none.
    #[arg(long)]
    default_quota_bytes: Option<u64>,
    /// File limit (files and directories) for new accounts (0: none). Default 10000.
    #[arg(long)]
    default_quota_files: Option<u64>,
    /// PBKDF2 rounds for new password hashes. Default 600000.
    #[arg(long)]
    pbkdf2_iterations: Option<u32>,
    /// Control connections in all. Default 2000.
    #[arg(long)]
    max_sessions: Option<usize>,
    /// Control connections per client address. Default 200.
    #[arg(long)]
    max_sessions_per_ip: Option<usize>,
    /// Seconds to log in after connecting. Default 60.
    #[arg(long)]
    login_timeout_secs: Option<u64>,
    /// Seconds without a command before the server closes the session. Default 300.
    #[arg(long)]
    idle_timeout_secs: Option<u64>,
    /// Seconds to wait for a data connection or for transfer progress. Default 60.
    #[arg(long)]
    data_timeout_secs: Option<u64>,
    /// Keep what an interrupted STOR of a new name received, to be resumed (true or false).
    /// Default true.
    #[arg(long, value_name = "BOOL")]
    keep_partial_uploads: Option<bool>,
    /// Delay of the first 530 after a wrong password, doubling per failure. Default 1000.
    #[arg(long)]
    login_failure_delay_ms: Option<u64>,
    /// Failed passwords on one connection before it is closed. Default 3.
    #[arg(long)]
    max_login_failures: Option<u8>,
    /// Failed logins from one address within --ban-window-secs that ban it (0: never).
    /// Default 10.
    #[arg(long)]
    ban_after_failures: Option<usize>,
    /// Window for --ban-after-failures. Default 600.
    #[arg(long)]
    ban_window_secs: Option<u64>,
    /// How long a banned address is refused. Default 900.
    #[arg(long)]
    ban_secs: Option<u64>,
    /// Password hashes one address may have running or queued at once (0: no limit).
    /// Default 2.
    #[arg(long)]
    max_password_checks_per_ip: Option<usize>,
    /// Logged-in sessions per user (0: no limit). Default 0.
    #[arg(long)]
    max_sessions_per_user: Option<usize>,
    /// Concurrent uploads and downloads per user, listings apart (0: no limit). Default 0.
    #[arg(long)]
    max_transfers_per_user: Option<usize>,
    /// Bytes per second for all of one user's uploads together (0: no limit).
    #[arg(long)]
    max_upload_rate_per_user: Option<u64>,
    /// Bytes per second for all of one user's downloads together (0: no limit).
    #[arg(long)]
    max_download_rate_per_user: Option<u64>,
    /// Bytes per second for all uploads on the server (0: no limit).
    #[arg(long)]
    max_upload_rate: Option<u64>,
    /// Bytes per second for all downloads on the server (0: no limit).
    #[arg(long)]
    max_download_rate: Option<u64>,
    /// Consecutive malformed or unknown commands that close the session (0: never). Default 10.
    #[arg(long)]
    max_bad_commands: Option<u32>,
    /// Size at which audit.jsonl and xferlog rotate (0: never). Default 64 MiB.
    #[arg(long)]
    audit_max_bytes: Option<u64>,
    /// Rotated files kept of each log. Default 5.
    #[arg(long)]
    audit_keep: Option<usize>,
    /// Free bytes below which only forensic audit events are written (0: no floor).
    /// Default 256 MiB.
    #[arg(long)]
    audit_min_free_bytes: Option<u64>,
}

#[derive(Subcommand)]
enum UserCmd {
    /// Create an account (and its home directory).
    Add {
        /// Account name: [a-z0-9][a-z0-9._-]{0,31}.
        name: String,
        /// Read the password from one line of standard input instead of a prompt.
        #[arg(long)]
        password_stdin: bool,
        /// PBKDF2 rounds for this account's hash. Default: the configuration's.
        #[arg(long)]
        iterations: Option<u32>,
        /// The account may list and download but never write.
        #[arg(long)]
        read_only: bool,
        /// Give the new account the home (and usage) a deleted account of this name left;
        /// without it such remains refuse the name.
        #[arg(long)]
        adopt_home: bool,
        #[command(flatten)]
        common: Common,
    },
    /// Delete an account. Its home directory and usage ledger are kept (and keep the name
    /// reserved) unless --purge is given.
    Del {
        /// Account name.
        name: String,
        /// Also remove the home directory and the usage ledger (also those of an account
        /// deleted earlier), which frees the name.
        #[arg(long)]
        purge: bool,
        #[command(flatten)]
        common: Common,
    },
    /// Set an account's password.
    Passwd {
        /// Account name.
        name: String,
        /// Read the password from one line of standard input instead of a prompt.
        #[arg(long)]
        password_stdin: bool,
        #[command(flatten)]
        common: Common,
    },
    /// List accounts.
    List {
        #[command(flatten)]
        common: Common,
    },
    /// Show an account's usage and limits; set limits; recount usage from the home directory.
    Quota {
        /// Account name.
        name: String,
        /// Byte limit: a number, or `none` for unlimited.
        #[arg(long, value_parser = parse_limit)]
        bytes: Option<Limit>,
        /// File limit (files and directories): a number, or `none` for unlimited.
        #[arg(long, value_parser = parse_limit)]
        files: Option<Limit>,
        /// Recompute the usage from the home directory (after changes behind the server's
        /// back).
        #[arg(long)]
        recount: bool,
        #[command(flatten)]
        common: Common,
    },
}

#[derive(Args)]
struct LogArgs {
    /// Only this user's events.
    #[arg(long)]
    user: Option<String>,
    /// Only events of this kind (e.g. login_failed, upload, download, command).
    #[arg(long)]
    event: Option<EventKind>,
    /// Only the last N events.
    #[arg(long)]
    tail: Option<usize>,
    #[command(flatten)]
    common: Common,
}

fn load_config(common: &Common) -> Result<Config, String> {
    let mut config = match &common.config {
        Some(path) => Config::from_file(path).map_err(|e| e.to_string())?,
        None => Config::default(),
    };
    if let Some(dir) = &common.data_dir {
        config.data_dir = dir.clone();
    }
    Ok(config)
}

/// The configuration of an operator command. When its data directory is the default `./var`
/// and holds no accounts, one stderr line says which directory that is: run in the wrong
/// directory, the command would otherwise show nothing, or start a new data directory,
/// without a word.
fn admin_config(common: &Common) -> Result<Config, String> {
    let config = load_config(common)?;
    if common.data_dir.is_none()
        && config.data_dir == Config::default().data_dir
        && !admin::holds_accounts(&config)
    {
        let dir = std::path::absolute(&config.data_dir).unwrap_or_else(|_| config.data_dir.clone());
        eprintln!(
            "ferryd: data directory {} (the default ./var), which holds no accounts; --data-dir DIR names another",
            dir.display()
        );
    }
    Ok(config)
}

fn serve(args: ServeArgs) -> Result<(), String> {
    let mut config = load_config(&args.common)?;
    if !args.listen.is_empty() {
        config.listen = args.listen;
    }
    config.passive_ports = args.passive_ports.or(config.passive_ports);
    config.passive_address = args.passive_address.or(config.passive_address);
    config.anonymous_root = args.anonymous_root.or(config.anonymous_root);
    config.tls_cert = args.tls_cert.or(config.tls_cert);
    config.tls_key = args.tls_key.or(config.tls_key);
    if !args.implicit_tls_listen.is_empty() {
        config.implicit_tls_listen = args.implicit_tls_listen;
    }
    config.require_tls_login |= args.require_tls_login;
    config.require_tls_data |= args.require_tls_data;
    config.require_tls_resumption |= args.require_tls_resumption;
    if let Some(v) = args.registration {
        config.registration = v;
    }
    if let Some(v) = args.max_registrations_per_ip_per_hour {
        config.max_registrations_per_ip_per_hour = v;
    }
    config.default_quota_bytes = args.default_quota_bytes.or(config.default_quota_bytes);
    config.default_quota_files = args.default_quota_files.or(config.default_quota_files);
    if let Some(v) = args.pbkdf2_iterations {
        config.pbkdf2_iterations = v;
    }
    if let Some(v) = args.max_sessions {
        config.max_sessions = v;
    }
    if let Some(v) = args.max_sessions_per_ip {
        config.max_sessions_per_ip = v;
    }
    if let Some(v) = args.max_bad_commands {
        config.max_bad_commands = v;
    }
    if let Some(v) = args.audit_max_bytes {
        config.audit_max_bytes = v;
    }
    if let Some(v) = args.audit_keep {
        config.audit_keep = v;
    }
    if let Some(v) = args.audit_min_free_bytes {
        config.audit_min_free_bytes = v;
    }
    if let Some(v) = args.login_timeout_secs {
        config.login_timeout_secs = v;
    }
    if let Some(v) = args.idle_timeout_secs {
        config.idle_timeout_secs = v;
    }
    if let Some(v) = args.data_timeout_secs {
        config.data_timeout_secs = v;
    }
    if let Some(v) = args.keep_partial_uploads {
        config.keep_partial_uploads = v;
    }
    let set = |slot: &mut u64, value: Option<u64>| {
        if let Some(v) = value {
            *slot = v;
        }
    };
    set(
        &mut config.login_failure_delay_ms,
        args.login_failure_delay_ms,
    );
    set(&mut config.ban_window_secs, args.ban_window_secs);
    set(&mut config.ban_secs, args.ban_secs);
    set(
        &mut config.max_upload_rate_per_user,
        args.max_upload_rate_per_user,
    );
    set(
        &mut config.max_download_rate_per_user,
        args.max_download_rate_per_user,
    );
    set(&mut config.max_upload_rate, args.max_upload_rate);
    set(&mut config.max_download_rate, args.max_download_rate);
    if let Some(v) = args.ban_after_failures {
        config.ban_after_failures = v;
    }
    if let Some(v) = args.max_login_failures {
        config.max_login_failures = v;
    }
    if let Some(v) = args.max_password_checks_per_ip {
        config.max_password_checks_per_ip = v;
    }
    if let Some(v) = args.max_sessions_per_user {
        config.max_sessions_per_user = v;
    }
    if let Some(v) = args.max_transfers_per_user {
        config.max_transfers_per_user = v;
    }
    actix_rt::System::new().block_on(async move {
        // Watch the signals before "listening on" is logged: a script that waits for that
        // line and then signals must get the clean shutdown, also when its background jobs
        // start with SIGINT ignored.
        let stop = stop_signal()?;
        let server = Server::start(config).await.map_err(|e| e.to_string())?;
        stop.await;
        server.shutdown().await;
        Ok(())
    })
}

/// Starts watching SIGINT and SIGTERM; the future resolves on the first of them.
fn stop_signal() -> Result<impl Future<Output = ()>, String> {
    use tokio::signal::unix::{SignalKind, signal};
    let watch = |kind: SignalKind, name: &str| {
        signal(kind).map_err(|e| format!("cannot watch {name}: {e}"))
    };
    let mut int = watch(SignalKind::interrupt(), "SIGINT")?;
    let mut term = watch(SignalKind::terminate(), "SIGTERM")?;
    Ok(async move {
        tokio::select! {
            _ = int.recv() => {}
            _ = term.recv() => {}
        }
    })
}

fn user(cmd: UserCmd) -> Result<(), String> {
    let err = |e: admin::AdminError| e.to_string();
    match cmd {
        UserCmd::Add {
            name,
            password_stdin,
            iterations,
            read_only,
            adopt_home,
            common,
        } => {
            let config = admin_config(&common)?;
            let password = admin::read_password("Password: ", password_stdin).map_err(err)?;
            let iterations = iterations.unwrap_or(config.pbkdf2_iterations);
            admin::user_add(&config, &name, &password, iterations, read_only, adopt_home)
                .map_err(err)?;
            println!("added {name}");
        }
        UserCmd::Del {
            name,
            purge,
            common,
        } => {
            let deleted = admin::user_del(&admin_config(&common)?, &name, purge).map_err(err)?;
            let what = if deleted.account {
                format!("deleted {name}")
            } else {
                format!("no account {name}")
            };
            if !deleted.removed.is_empty() {
                println!("{what}; removed {}", admin::paths_list(&deleted.removed));
            } else if deleted.kept.is_empty() {
                println!("{what}");
            } else {
                println!(
                    "{what}; kept {} (the name stays reserved: `ferryd user del {name} --purge` removes them, `ferryd user add {name} --adopt-home` reuses them)",
                    admin::paths_list(&deleted.kept)
                );
            }
        }
        UserCmd::Passwd {
            name,
            password_stdin,
            common,
        } => {
            let config = admin_config(&common)?;
            let password = admin::read_password("New password: ", password_stdin).map_err(err)?;
            admin::user_passwd(&config, &name, &password, config.pbkdf2_iterations).map_err(err)?;
            println!("password of {name} changed");
        }
        UserCmd::List { common } => {
            println!(
                "{}",
                admin::user_list(&admin_config(&common)?).map_err(err)?
            );
        }
        UserCmd::Quota {
            name,
            bytes,
            files,
            recount,
            common,
        } => {
            let change = admin::QuotaChange {
                bytes: bytes.map(|l| l.0),
                files: files.map(|l| l.0),
            };
            let report =
                admin::user_quota(&admin_config(&common)?, &name, change, recount).map_err(err)?;
            print!("{report}");
        }
    }
    Ok(())
}

fn main() -> ExitCode {
    // rustls warns about what clients do all the time (lftp names the server by its IP
    // address in SNI, TLS warning alerts): only its errors, unless RUST_LOG names rustls.
    env_logger::Builder::new()
        .parse_filters("info,rustls=error")
        .parse_env(env_logger::Env::default())
        .init();
    let cli = Cli::parse();
    let result = match cli.command {
        None => serve(cli.serve),
        Some(Cmd::Serve(args)) => serve(*args),
        Some(Cmd::User(cmd)) => user(cmd),
        Some(Cmd::Invite(InviteCmd::Create { uses, common })) => admin_config(&common)
            .and_then(|config| admin::invite_create(&config, uses).map_err(|e| e.to_string()))
            .map(|invite| println!("{}", invite.code)),
        Some(Cmd::Invite(InviteCmd::List { common })) => admin_config(&common)
            .and_then(|config| admin::invite_list(&config).map_err(|e| e.to_string()))
            .map(|table| println!("{table}")),
        Some(Cmd::Cert(CertCmd::Generate { out })) => ferry::tls::generate_self_signed(&out)
            .map(|()| {
                println!(
                    "wrote {} and {}",
                    out.join("cert.pem").display(),
                    out.join("key.pem").display()
                );
            })
            .map_err(|e| e.to_string()),
        Some(Cmd::Log(args)) => admin_config(&args.common).and_then(|config| {
            let filter = LogFilter {
                user: args.user,
                event: args.event,
                tail: args.tail,
            };
            admin::log_table(&config, &filter)
                .map(|table| println!("{table}"))
                .map_err(|e| e.to_string())
        }),
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("ferryd: {e}");
            ExitCode::FAILURE
        }
    }
}
