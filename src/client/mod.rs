//! The `ferry` client's library part: the FTP protocol client ([`ftp`]), the commands
//! ([`shell`]), what it prints ([`render`]), line editing ([`complete`]), its defaults
//! ([`config`]) and how a session runs: interactively at a `ferry>` prompt, from `-c` /
//! standard input as a script, or as one transfer ([`OneShot`]); and the exit status
//! ([`exit_status`]).

pub mod bookmarks;
pub mod complete;
pub mod config;
pub mod entries;
pub mod ftp;
pub mod netrc;
pub mod render;
pub mod shell;
pub mod stream;
pub mod tickets;
pub mod words;

use std::cell::RefCell;
use std::io::{self, BufRead, IsTerminal};
use std::path::PathBuf;
use std::rc::Rc;
use std::sync::Arc;
use std::sync::atomic::AtomicBool;
use std::time::Duration;

use rustyline::error::ReadlineError;
use rustyline::history::{DefaultHistory, History};
use rustyline::{Config, Editor};

use complete::ShellHelper;
use shell::{Flow, Options, Shell, ShellError};

/// How `ferry` was started.
#[derive(Debug, Clone)]
pub struct Launch {
    /// `HOST[:PORT]` or `ftp://[USER@]HOST[:PORT][/DIR]` to open first.
    pub target: Option<String>,
    /// `-c "CMD; CMD"`: run these and exit.
    pub commands: Option<String>,
    /// `ferry get URL` / `ferry put FILE URL`: this transfer alone.
    pub one_shot: Option<OneShot>,
    /// Passwords from this file's first line.
    pub password_file: Option<PathBuf>,
    /// Active mode (PORT/EPRT).
    pub active: bool,
    /// Control and data timeout.
    pub timeout: Duration,
    /// Plain FTP, or FTPS (explicit or implicit).
    pub security: stream::Security,
    /// `-q`: no greeting, confirmations or transfer summaries; only what was asked for.
    pub quiet: bool,
    /// Connections `mget`, `mput` and `mirror` use at once unless `-P` says otherwise.
    pub parallel: usize,
    /// How often a transfer that failed for a passing reason is tried again.
    pub retries: u32,
}

/// A parsed `ftp://` URL or `HOST[:PORT]`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Target {
    /// User to log in as.
    pub user: Option<String>,
    /// Host name or address (IPv6 without brackets).
    pub host: String,
    /// Port, 21 when not given.
    pub port: u16,
    /// Directory to change to after login.
    pub dir: Option<String>,
}

/// The exit statuses of `ferry` (README, "Exit status"). 5, some transfers of a batch failed
/// while the others were done, is for `mget`, `mput` and `mirror` to map in [`exit_status`].
pub mod exit {
    /// Everything succeeded.
    pub const OK: u8 = 0;
    /// A command failed.
    pub const FAILED: u8 = 1;
    /// Bad usage or configuration (clap's own status for usage errors).
    pub const USAGE: u8 = 2;
    /// Could not connect: resolve, connect, TLS, or a greeting other than 220.
    pub const CONNECT: u8 = 3;
    /// The server refused the login.
    pub const LOGIN: u8 = 4;
    /// Some transfers of a batch (`mget`, `mput`, `mirror`) failed; the others were done.
    pub const PARTIAL: u8 = 5;
}

/// The exit status a script or a one-shot transfer ends with when `e` stopped it.
pub fn exit_status(e: &ShellError) -> u8 {
    match e {
        ShellError::Connect(_) => exit::CONNECT,
        ShellError::Login(_) => exit::LOGIN,
        ShellError::Partial { .. } => exit::PARTIAL,
        _ => exit::FAILED,
    }
}

/// A transfer on its own, for scripts: log in, transfer, QUIT.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum OneShot {
    /// `ferry get URL [LOCAL | -]`: into LOCAL (a directory keeps the remote name), the
    /// remote name here, or standard output.
    Get {
        /// The server, user and remote file.
        target: Target,
        /// Where to: a path, or `-`.
        local: Option<String>,
    },
    /// `ferry put LOCAL URL`: to the URL's path, or into it under the local name when it
    /// ends in `/` (or is only the server).
    Put {
        /// The local file.
        local: String,
        /// The server, user and remote path.
        target: Target,
    },
}

/// One-shot usage lines, for errors.
const GET_USAGE: &str = "usage: ferry get ftp://USER@HOST[:PORT]/PATH [LOCAL | -]";
const PUT_USAGE: &str = "usage: ferry put LOCAL ftp://USER@HOST[:PORT]/[DIR/ | PATH]";

impl OneShot {
    /// The one-shot form of the positional arguments (`get`/`put` then more words), or `None`
    /// for the session form (`ferry [TARGET]`). `get` or `put` alone is an error, not a host
    /// of that name (`ftp://get` or `get:21` reaches one).
    ///
    /// # Errors
    /// A usage line: too few or too many words, a URL without a file to get.
    pub fn from_words(target: Option<&str>, rest: &[String]) -> Result<Option<OneShot>, String> {
        let words: Vec<&str> = rest.iter().map(String::as_str).collect();
        let url = |text: &str, usage: &str| parse_target(text).map_err(|e| format!("{e}; {usage}"));
        match (target, words.as_slice()) {
            (None, _) => Ok(None),
            (Some("get"), [remote, local @ ..]) if local.len() <= 1 => {
                let target = url(remote, GET_USAGE)?;
                if target.dir.as_ref().is_none_or(|path| path.ends_with('/')) {
                    return Err(format!("{remote}: no file named; {GET_USAGE}"));
                }
                Ok(Some(OneShot::Get {
                    target,
                    local: local.first().map(|l| (*l).to_owned()),
                }))
            }
            (Some("get"), _) => Err(GET_USAGE.to_owned()),
            (Some("put"), [local, remote]) => Ok(Some(OneShot::Put {
                local: (*local).to_owned(),
                target: url(remote, PUT_USAGE)?,
            })),
            (Some("put"), _) => Err(PUT_USAGE.to_owned()),
            (Some(_), []) => Ok(None),
            (Some(_), [extra, ..]) => Err(format!(
                "unexpected argument {extra:?}: one target only (or: {GET_USAGE}, {PUT_USAGE})"
            )),
        }
    }

    /// Whether the transfer's data goes to standard output (so nothing else may).
    pub fn to_stdout(&self) -> bool {
        matches!(self, OneShot::Get { local: Some(l), .. } if l == "-")
    }
}

/// Parses `ftp://user@host:port/dir` or `host[:port]`.
///
/// # Errors
/// A bad port or an empty host.
pub fn parse_target(text: &str) -> Result<Target, ShellError> {
    let rest = text.strip_prefix("ftp://").unwrap_or(text);
    let (authority, dir) = match rest.split_once('/') {
        Some((a, d)) if !d.is_empty() => (a, Some(format!("/{d}"))),
        Some((a, _)) => (a, None),
        None => (rest, None),
    };
    let (user, hostport) = match authority.rsplit_once('@') {
        Some((user, hp)) => (Some(user.to_owned()), hp),
        None => (None, authority),
    };
    let (host, port) = shell::split_host_port(hostport)?;
    if host.is_empty() {
        return Err(ShellError::Message(format!("no host in {text:?}")));
    }
    Ok(Target {
        user,
        host,
        port,
        dir,
    })
}

/// Where the interactive history is kept: `$FERRY_HISTORY`, else `~/.ferry_history`.
fn history_path() -> Option<PathBuf> {
    std::env::var_os("FERRY_HISTORY")
        .map(PathBuf::from)
        .or_else(|| std::env::var_os("HOME").map(|h| PathBuf::from(h).join(".ferry_history")))
}

/// Runs the client; returns the process exit status ([`exit`]).
pub fn run(launch: Launch) -> u8 {
    // A one-shot transfer asks for a missing name or password on a terminal, as `login` does.
    let interactive = launch.commands.is_none() && io::stdin().is_terminal();
    let abort = Arc::new(AtomicBool::new(false));
    if interactive {
        // Ctrl-C during a transfer aborts it (ABOR) and returns to the prompt; at the prompt
        // the line editor reads Ctrl-C itself.
        let flag = Arc::clone(&abort);
        if let Err(e) = ctrlc::set_handler(move || {
            flag.store(true, std::sync::atomic::Ordering::Relaxed);
        }) {
            eprintln!("ferry: Ctrl-C will not abort transfers: {e}");
        }
    }
    let opts = Options {
        active: launch.active,
        password_file: launch.password_file.clone(),
        timeout: launch.timeout,
        interactive,
        progress: io::stderr().is_terminal(),
        security: launch.security.clone(),
        quiet: launch.quiet || launch.one_shot.as_ref().is_some_and(OneShot::to_stdout),
        parallel: launch.parallel,
        retries: launch.retries,
    };
    let shell = Rc::new(RefCell::new(Shell::new(opts, abort)));
    if let Some(job) = &launch.one_shot {
        return match shell.borrow_mut().one_shot(job) {
            Ok(()) => exit::OK,
            Err(e) => {
                eprintln!("ferry: {e}");
                exit_status(&e)
            }
        };
    }
    let mut status = exit::OK;
    if let Some(target) = &launch.target
        && let Err(e) = open_target(&mut shell.borrow_mut(), target)
    {
        eprintln!("ferry: {e}");
        if !interactive {
            return exit_status(&e);
        }
    }
    if let Some(commands) = &launch.commands {
        for command in words::split_commands(commands) {
            if !run_one(&shell, &command, &mut status) {
                break;
            }
        }
    } else if interactive {
        repl(&shell);
    } else {
        for line in io::stdin().lock().lines() {
            let Ok(line) = line else { break };
            let line = line.trim();
            if line.is_empty() || line.starts_with('#') {
                continue;
            }
            if !run_one(&shell, line, &mut status) {
                break;
            }
        }
    }
    status
}

/// Runs one scripted command; false stops the script (exit, or the first failure, whose
/// status is the script's).
fn run_one(shell: &Rc<RefCell<Shell>>, command: &str, status: &mut u8) -> bool {
    match shell.borrow_mut().execute(command) {
        Ok(Flow::Continue) => true,
        Ok(Flow::Exit) => false,
        Err(e) => {
            eprintln!("ferry: {command}: {e}");
            *status = exit_status(&e);
            false
        }
    }
}

/// `ferry TARGET`: a bookmark's URL, or the URL or host itself.
fn open_target(shell: &mut Shell, text: &str) -> Result<(), ShellError> {
    let url = shell.bookmarked(text)?.unwrap_or_else(|| text.to_owned());
    shell.open_url(&url)
}

fn repl(shell: &Rc<RefCell<Shell>>) {
    let config = Config::builder().auto_add_history(true).build();
    let path = history_path();
    let mut history = DefaultHistory::new();
    if let Some(path) = &path {
        // A missing history file is normal on the first run.
        let _ = history.load(path);
    }
    loop {
        // One editor per line: rustyline takes SIGINT for as long as its terminal lives, and
        // while a command runs Ctrl-C must reach the transfer (ABOR). Its `signal-hook` mode,
        // which leaves SIGINT alone, does not process keys that arrive together (a paste, fast
        // typing over ssh) until the next key.
        let mut editor: Editor<ShellHelper, DefaultHistory> =
            match Editor::with_history(config.clone(), history) {
                Ok(editor) => editor,
                Err(e) => {
                    eprintln!("ferry: no line editor ({e})");
                    return;
                }
            };
        editor.set_helper(Some(ShellHelper::new(Rc::clone(shell))));
        let read = editor.readline("ferry> ");
        history = std::mem::replace(editor.history_mut(), DefaultHistory::new());
        drop(editor);
        match read {
            Ok(line) => match shell.borrow_mut().execute(&line) {
                Ok(Flow::Continue) => {}
                Ok(Flow::Exit) => break,
                Err(e) => eprintln!("ferry: {e}"),
            },
            Err(ReadlineError::Interrupted) => {}
            Err(ReadlineError::Eof) => {
                let _ = shell.borrow_mut().execute("exit");
                break;
            }
            Err(e) => {
                eprintln!("ferry: {e}");
                break;
            }
        }
    }
    if let Some(path) = &path
        && let Err(e) = history.save(path)
    {
        eprintln!("ferry: history not saved to {}: {e}", path.display());
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn targets() {
        let t = parse_target("ftp://alice@127.0.0.1:2121/pub/x").expect("url");
        assert_eq!(
            t,
            Target {
                user: Some("alice".into()),
                host: "127.0.0.1".into(),
                port: 2121,
                dir: Some("/pub/x".into()),
            }
        );
        let t = parse_target("example.org").expect("host");
        assert_eq!((t.host.as_str(), t.port, t.user), ("example.org", 21, None));
        let t = parse_target("ftp://[::1]:21/").expect("v6");
        assert_eq!((t.host.as_str(), t.port, t.dir), ("::1", 21, None));
        assert!(parse_target("ftp://:21").is_err());
    }

    fn words(words: &[&str]) -> Result<Option<OneShot>, String> {
        let (target, rest) = words
            .split_first()
            .map_or((None, &[][..]), |(t, r)| (Some(*t), r));
        let rest: Vec<String> = rest.iter().map(|w| (*w).to_owned()).collect();
        OneShot::from_words(target, &rest)
    }

    #[test]
    fn one_shot_forms_and_the_session_form() {
        assert_eq!(words(&[]), Ok(None));
        assert_eq!(words(&["example.org:2121"]), Ok(None));
        let get = words(&["get", "ftp://al@h:2121/pub/f.bin", "-"]).expect("get");
        let Some(OneShot::Get { target, local }) = &get else {
            panic!("{get:?}")
        };
        assert_eq!(
            (target.user.as_deref(), target.port, target.dir.as_deref()),
            (Some("al"), 2121, Some("/pub/f.bin"))
        );
        assert_eq!(local.as_deref(), Some("-"));
        assert!(get.as_ref().is_some_and(OneShot::to_stdout));
        let put = words(&["put", "f.bin", "ftp://al@h/in/"]).expect("put");
        assert!(
            matches!(&put, Some(OneShot::Put { local, target }) if local == "f.bin"
                && target.dir.as_deref() == Some("/in/")),
            "{put:?}"
        );
        for bad in [
            &["get"][..],
            &["put"],
            &["put", "f.bin"],
            &["get", "ftp://al@h/"],
            &["get", "ftp://al@h"],
            &["get", "ftp://al@h/f", "a", "b"],
            &["get", "ftp://al@h:x/f"],
            &["example.org", "extra"],
        ] {
            let err = words(bad).expect_err(&bad.join(" "));
            assert!(err.contains("usage: ferry "), "{bad:?}: {err}");
        }
    }
}
