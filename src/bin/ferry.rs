//! `ferry`: the line-oriented FTP client. Parses the command line; the client itself lives in
//! `ferry::client`.

use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

use clap::Parser;
use ferry::client::stream::Security;
use ferry::client::{self, Launch};
use ferry::packaging::{self, Invocation};
use ferry::tls::Trust;

/// ferry: an FTP client with a `ferry>` prompt, or a script runner with -c / standard input.
#[derive(Parser)]
#[command(name = "ferry", version)]
struct Cli {
    /// Server to open: HOST[:PORT] or ftp://[USER@]HOST[:PORT][/DIR].
    target: Option<String>,
    /// Commands to run, separated by `;`, then exit (status 1 at the first failure).
    #[arg(short = 'c', long = "command")]
    commands: Option<String>,
    /// Read the password from this file's first line (FERRY_PASSWORD also works).
    #[arg(long)]
    password_file: Option<PathBuf>,
    /// Active mode: the server connects back (PORT/EPRT) instead of passive EPSV/PASV.
    #[arg(long)]
    active: bool,
    /// Quiet: print only what was asked for (listings, sizes, errors), no greeting,
    /// confirmations or transfer summaries.
    #[arg(short = 'q', long)]
    quiet: bool,
    /// Seconds to wait for the server before giving up.
    #[arg(long, default_value_t = 30)]
    timeout_secs: u64,
    /// FTPS: AUTH TLS after the greeting, then encrypted data connections (RFC 4217).
    #[arg(long, conflicts_with = "implicit_tls")]
    tls: bool,
    /// Implicit FTPS: TLS from the first byte (servers on port 990).
    #[arg(long)]
    implicit_tls: bool,
    /// Trust only the CA certificates in this PEM file (e.g. a self-signed server's cert.pem).
    #[arg(long, conflicts_with = "insecure")]
    ca_file: Option<PathBuf>,
    /// Do not check the server's certificate at all (encrypted, but not authenticated).
    #[arg(long)]
    insecure: bool,
    /// Connections mget, mput and mirror use at once (their -P N overrides it).
    #[arg(short = 'P', long, default_value_t = 1, value_parser = clap::value_parser!(u16).range(1..=64))]
    parallel: u16,
    /// Times a transfer that failed for a passing reason (reset, timeout, 421, 425, 426, 450)
    /// is tried again, resuming where it stopped.
    #[arg(long, default_value_t = 3)]
    retries: u32,
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
    let security = if cli.tls || cli.implicit_tls {
        let trust = match (&cli.ca_file, cli.insecure) {
            (Some(file), _) => Trust::CaFile(file),
            (None, true) => Trust::Insecure,
            (None, false) => Trust::System,
        };
        match ferry::tls::client_config(&trust) {
            Ok(config) if cli.implicit_tls => Security::Implicit(config),
            Ok(config) => Security::Explicit(config),
            Err(e) => {
                eprintln!("ferry: {e}");
                return ExitCode::FAILURE;
            }
        }
    } else {
        Security::Plain
    };
    ExitCode::from(client::run(Launch {
        security,
        target: cli.target,
        commands: cli.commands,
        password_file: cli.password_file,
        active: cli.active,
        quiet: cli.quiet,
        parallel: usize::from(cli.parallel),
        retries: cli.retries,
        timeout: Duration::from_secs(cli.timeout_secs.max(1)),
    }))
}
