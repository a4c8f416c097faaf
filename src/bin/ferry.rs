//! `ferry`: the line-oriented FTP client. Parses the command line; the client itself lives in
//! `ferry::client`.

use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

use clap::Parser;
use ferry::client::{self, Launch};

/// ferry: an FTP client with a `ferry>` prompt, or a script runner with -c / standard input.
#[derive(Parser)]
#[command(version)]
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
    /// Seconds to wait for the server before giving up.
    #[arg(long, default_value_t = 30)]
    timeout_secs: u64,
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    ExitCode::from(client::run(Launch {
        target: cli.target,
        commands: cli.commands,
        password_file: cli.password_file,
        active: cli.active,
        timeout: Duration::from_secs(cli.timeout_secs.max(1)),
    }))
}
