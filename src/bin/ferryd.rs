//! `ferryd`: the ferry FTP server. Parses the command line, sets up logging and runs either the
//! server or an operator command; the work itself lives in the library.

use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Args, Parser, Subcommand};
use ferry::actors::audit_log::EventKind;
use ferry::admin::{self, LogFilter};
use ferry::config::Config;
use ferry::config::flags::{ConfigFlags, ServeFlags};
use ferry::packaging::{self, Invocation};
use ferry::server::Server;

/// ferryd: a multi-user FTP server with self-registration, jailed homes and an audit log.
#[derive(Parser)]
#[command(name = "ferryd", version, args_conflicts_with_subcommands = true)]
struct Cli {
    #[command(subcommand)]
    command: Option<Cmd>,
    #[command(flatten)]
    serve: ServeFlags,
}

#[derive(Subcommand)]
enum Cmd {
    /// Run the server (the default).
    Serve(Box<ServeFlags>),
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
    /// Show the live sessions of a running server (through its admin listener).
    Who(AdminArgs),
    /// End a live session of a running server: its transfer gets 426, then the session 421.
    Kick {
        /// The session's id (`ferryd who` shows it).
        id: u64,
        #[command(flatten)]
        admin: AdminArgs,
    },
}

/// Where a running server's admin listener is.
#[derive(Args)]
struct AdminArgs {
    /// The admin listener, ADDR:PORT or http://ADDR:PORT. Default: admin_listen of --config.
    #[arg(long, value_name = "ADDR:PORT")]
    admin: Option<String>,
    /// The file with its bearer token. Default: admin_token_file of --config.
    #[arg(long, value_name = "FILE")]
    admin_token_file: Option<PathBuf>,
    /// The server's configuration file, for admin_listen and admin_token_file.
    #[arg(long, value_name = "FILE")]
    config: Option<PathBuf>,
}

impl AdminArgs {
    fn target(&self) -> Result<admin::live::AdminTarget, String> {
        let config = match &self.config {
            Some(file) => Config::from_file(file).map_err(|e| e.to_string())?,
            None => Config::default(),
        };
        admin::live::AdminTarget::new(
            self.admin.as_deref(),
            self.admin_token_file.as_deref(),
            &config,
        )
        .map_err(|e| e.to_string())
    }
}

#[derive(Subcommand)]
enum InviteCmd {
    /// Create a random invitation code and print it.
    Create {
        /// How many registrations the code allows.
        #[arg(long, default_value_t = 1)]
        uses: u32,
        #[command(flatten)]
        common: ConfigFlags,
    },
    /// List the codes with their uses left.
    List {
        #[command(flatten)]
        common: ConfigFlags,
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

#[derive(Subcommand)]
enum UserCmd {
    /// Create an account (and its home directory).
    Add {
        // Not a doc comment: rustdoc would read the brackets as links.
        #[arg(help = "Account name: [a-z0-9][a-z0-9._-]{0,31}")]
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
        common: ConfigFlags,
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
        common: ConfigFlags,
    },
    /// Set an account's password.
    Passwd {
        /// Account name.
        name: String,
        /// Read the password from one line of standard input instead of a prompt.
        #[arg(long)]
        password_stdin: bool,
        #[command(flatten)]
        common: ConfigFlags,
    },
    /// Disable an account: it cannot log in, and its live sessions end (on every node).
    Disable {
        /// Account name.
        name: String,
        #[command(flatten)]
        common: ConfigFlags,
    },
    /// Enable a disabled account again.
    Enable {
        /// Account name.
        name: String,
        #[command(flatten)]
        common: ConfigFlags,
    },
    /// List accounts.
    List {
        #[command(flatten)]
        common: ConfigFlags,
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
        common: ConfigFlags,
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
    /// Only events of this node.
    #[arg(long)]
    node: Option<String>,
    /// With --database-url (or `database_url` in --config): the audit_log table of every node
    /// in that database instead of this node's audit.jsonl.
    #[command(flatten)]
    common: ConfigFlags,
}

/// The configuration of an operator command. When its data directory is the default `./var`
/// and holds no accounts (and they are not in a database), one stderr line says which directory that is: run in the wrong
/// directory, the command would otherwise show nothing, or start a new data directory,
/// without a word.
fn admin_config(common: &ConfigFlags) -> Result<Config, String> {
    let config = common.load().map_err(|e| e.to_string())?;
    if common.data_dir.is_none()
        && config.database_url.is_none()
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

fn serve(args: ServeFlags) -> Result<(), String> {
    let config = args.clone().config().map_err(|e| e.to_string())?;
    let node =
        (config.node_name.is_some() || config.database_url.is_some()).then(|| config.node_name());
    init_logging(node);
    actix_rt::System::new().block_on(async move {
        // Watch the signals before "listening on" is logged: a script that waits for that
        // line and then signals must get the clean shutdown, also when its background jobs
        // start with SIGINT ignored.
        let stop = stop_signal()?;
        let mut hangup = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::hangup())
            .map_err(|e| format!("cannot watch SIGHUP: {e}"))?;
        let server = Server::start(config).await.map_err(|e| e.to_string())?;
        tokio::pin!(stop);
        loop {
            tokio::select! {
                () = &mut stop => break,
                // The file read again, the same command line over it.
                _ = hangup.recv() => server.reload(args.clone().config()).await,
            }
        }
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
            println!("{}", deleted.summary(&name));
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
        UserCmd::Disable { name, common } => {
            admin::user_disable(&admin_config(&common)?, &name, true).map_err(err)?;
            println!("disabled {name}");
        }
        UserCmd::Enable { name, common } => {
            admin::user_disable(&admin_config(&common)?, &name, false).map_err(err)?;
            println!("enabled {name}");
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

/// Starts the stderr log. With a `node` (a node name set, or database mode) every line names
/// it, `[time LEVEL node=NAME target] message`, so the lines of a cluster's nodes can be told
/// apart once collected; without, env_logger's own format.
fn init_logging(node: Option<String>) {
    use std::io::Write as _;
    // rustls warns about what clients do all the time (lftp names the server by its IP
    // address in SNI, TLS warning alerts): only its errors, unless RUST_LOG names rustls.
    // The admin listener's actix-server logs its workers starting, and object_store each
    // retry (its tracing events reach the log since actix-web turned on tracing's `log`
    // feature), though a failure that outlasts them is reported once: only their warnings.
    let mut builder = env_logger::Builder::new();
    builder
        .parse_filters("info,rustls=error,actix_server=warn,object_store=warn")
        .parse_env(env_logger::Env::default());
    if let Some(node) = node {
        builder.format(move |buf, record| {
            let style = buf.default_level_style(record.level());
            writeln!(
                buf,
                "[{} {style}{:<5}{style:#} node={node} {}] {}",
                buf.timestamp(),
                record.level(),
                record.target(),
                record.args()
            )
        });
    }
    builder.init();
}

fn main() -> ExitCode {
    let cli = match packaging::parse::<Cli>() {
        Invocation::Run(cli) => cli,
        Invocation::Generate(flags) => return exit(flags.run::<Cli>().map_err(|e| e.to_string())),
    };
    if !matches!(cli.command, None | Some(Cmd::Serve(_))) {
        init_logging(None);
    }
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
        Some(Cmd::Who(args)) => args.target().and_then(|target| {
            admin::live::who(&target)
                .map(|table| println!("{table}"))
                .map_err(|e| e.to_string())
        }),
        Some(Cmd::Kick { id, admin }) => admin.target().and_then(|target| {
            admin::live::kick(&target, id)
                .map(|()| println!("ended session {id}"))
                .map_err(|e| e.to_string())
        }),
        Some(Cmd::Log(args)) => admin_config(&args.common).and_then(|config| {
            let filter = LogFilter {
                user: args.user,
                event: args.event,
                tail: args.tail,
                node: args.node,
            };
            admin::log_table(&config, &filter, &mut std::io::stdout().lock())
                .map_err(|e| e.to_string())
        }),
    };
    exit(result)
}

/// The exit status of a command, its error on stderr.
fn exit(result: Result<(), String>) -> ExitCode {
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("ferryd: {e}");
            ExitCode::FAILURE
        }
    }
}
