//! `ferry`: the line-oriented FTP client. Parses the command line; the client itself lives in
//! `ferry::client`.

use std::path::PathBuf;
use std::process::ExitCode;

use clap::Parser;
use ferry::client::config::{Choices, MAX_PARALLEL, TlsMode};
use ferry::client::stream::{ClientTls, Security};
use ferry::client::{self, Launch, OneShot, exit};
use ferry::packaging::{self, Invocation};
use ferry::tls::Trust;

/// ferry: an FTP client with a `ferry>` prompt, a script runner with -c / standard input, or
/// one transfer (`ferry get URL`, `ferry put FILE URL`).
#[derive(Parser)]
#[command(
    name = "ferry",
    version,
    override_usage = "ferry [OPTIONS] [TARGET] [-c COMMANDS]\n       \
                      ferry [OPTIONS] get ftp://USER@HOST[:PORT]/PATH [LOCAL | -]\n       \
                      ferry [OPTIONS] put LOCAL ftp://USER@HOST[:PORT]/[DIR/ | PATH]",
    after_help = "Exit status: 0 all done; 1 a command failed; 2 bad usage or configuration; \
                  3 could not connect (resolve, connect, TLS, greeting); 4 login refused; \
                  5 some transfers of mget, mput or mirror failed.\n\
                  Defaults come from --config, $FERRY_CONFIG or $XDG_CONFIG_HOME/ferry/config.toml \
                  (~/.config/ferry/config.toml); flags win over the file."
)]
struct Cli {
    /// Server to open: HOST[:PORT], ftp://[USER@]HOST[:PORT][/DIR] or a bookmark; or `get` or
    /// `put` for one transfer.
    target: Option<String>,
    /// After `get`: URL [LOCAL | -] (- is standard output); after `put`: LOCAL URL (a URL
    /// ending in / names a directory, the file keeps its name).
    #[arg(value_name = "ARGS")]
    args: Vec<String>,
    /// Commands to run, separated by `;`, then exit (at the first failure, with its status).
    #[arg(short = 'c', long = "command")]
    commands: Option<String>,
    /// Read the defaults from this file instead (/dev/null: none).
    #[arg(long, value_name = "PATH")]
    config: Option<PathBuf>,
    /// Read the password from this file's first line (FERRY_PASSWORD also works).
    #[arg(long)]
    password_file: Option<PathBuf>,
    /// Active mode: the server connects back (PORT/EPRT) instead of passive EPSV/PASV.
    #[arg(long, conflicts_with = "passive")]
    active: bool,
    /// Passive mode (EPSV/PASV), whatever the configuration file says.
    #[arg(long)]
    passive: bool,
    /// Quiet: print only what was asked for (listings, sizes, errors), no greeting,
    /// confirmations or transfer summaries.
    #[arg(short = 'q', long)]
    quiet: bool,
    /// Seconds to wait for the server before giving up [default: 30].
    #[arg(long, value_parser = clap::value_parser!(u64).range(1..))]
    timeout_secs: Option<u64>,
    /// FTPS: AUTH TLS after the greeting, then encrypted data connections (RFC 4217).
    #[arg(long, conflicts_with_all = ["implicit_tls", "no_tls"])]
    tls: bool,
    /// Implicit FTPS: TLS from the first byte (servers on port 990).
    #[arg(long, conflicts_with = "no_tls")]
    implicit_tls: bool,
    /// Plain FTP, whatever the configuration file says.
    #[arg(long)]
    no_tls: bool,
    /// Trust only the CA certificates in this PEM file (e.g. a self-signed server's cert.pem).
    #[arg(long, conflicts_with = "insecure")]
    ca_file: Option<PathBuf>,
    /// Do not check the server's certificate at all (encrypted, but not authenticated).
    #[arg(long)]
    insecure: bool,
    /// Connections mget, mput and mirror use at once (their -P N overrides it) [default: 1].
    #[arg(short = 'P', long, value_parser = clap::value_parser!(u16).range(1..=i64::from(MAX_PARALLEL)))]
    parallel: Option<u16>,
    /// Times a transfer that failed for a passing reason (reset, timeout, 421, 425, 426, 450)
    /// is tried again, resuming where it stopped [default: 3].
    #[arg(long)]
    retries: Option<u32>,
}

impl Cli {
    /// What the command line chose, for [`Choices::or`] over the file's.
    fn choices(&self) -> Choices {
        let tls = if self.tls {
            Some(TlsMode::Explicit)
        } else if self.implicit_tls {
            Some(TlsMode::Implicit)
        } else {
            self.no_tls.then_some(TlsMode::Off)
        };
        let active = if self.active {
            Some(true)
        } else {
            self.passive.then_some(false)
        };
        Choices {
            active,
            tls,
            ca_file: self.ca_file.clone(),
            insecure: self.insecure.then_some(true),
            parallel: self.parallel,
            retries: self.retries,
            timeout_secs: self.timeout_secs,
            quiet: self.quiet.then_some(true),
        }
    }
}

fn main() -> ExitCode {
    let cli = match packaging::parse::<Cli>() {
        Invocation::Run(cli) => cli,
        Invocation::Generate(flags) => {
            return match flags.run::<Cli>() {
                Ok(()) => ExitCode::SUCCESS,
                Err(e) => {
                    eprintln!("ferry: {e}");
                    ExitCode::FAILURE
                }
            };
        }
    };
    // Quiet unless RUST_LOG asks (e.g. RUST_LOG=debug shows replies dropped to keep in step).
    env_logger::init();
    let usage = |message: &dyn std::fmt::Display| {
        eprintln!("ferry: {message}");
        ExitCode::from(exit::USAGE)
    };
    let file = match Choices::load(cli.config.as_deref()) {
        Ok(file) => file,
        Err(e) => return usage(&e),
    };
    let settings = cli.choices().or(file).settings();
    let one_shot = match OneShot::from_words(cli.target.as_deref(), &cli.args) {
        Ok(one_shot) => one_shot,
        Err(e) => return usage(&e),
    };
    if one_shot.is_some() && cli.commands.is_some() {
        return usage(&"-c does not go with get or put");
    }
    let security = if settings.tls == TlsMode::Off {
        Security::Plain
    } else {
        let trust = match (&settings.ca_file, settings.insecure) {
            (Some(file), _) => Trust::CaFile(file),
            (None, true) => Trust::Insecure,
            (None, false) => Trust::System,
        };
        match ClientTls::new(&trust) {
            Ok(tls) if settings.tls == TlsMode::Implicit => Security::Implicit(tls),
            Ok(tls) => Security::Explicit(tls),
            Err(e) => return usage(&e),
        }
    };
    ExitCode::from(client::run(Launch {
        security,
        target: cli.target.filter(|_| one_shot.is_none()),
        one_shot,
        commands: cli.commands,
        password_file: cli.password_file,
        active: settings.active,
        quiet: settings.quiet,
        parallel: settings.parallel,
        retries: settings.retries,
        timeout: settings.timeout,
    }))
}
