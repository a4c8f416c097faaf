//! The `ferry` client's library part: the FTP protocol client ([`ftp`]), the commands
//! ([`shell`]), what it prints ([`render`]), line editing ([`complete`]) and how a session runs:
//! interactively at a `ferry>` prompt, or from `-c` / standard input as a script.

pub mod bookmarks;
pub mod complete;
pub mod entries;
pub mod ftp;
pub mod netrc;
pub mod render;
pub mod shell;
pub mod stream;
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

/// Runs the client; returns the process exit status (0 when every command succeeded).
pub fn run(launch: Launch) -> u8 {
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
        quiet: launch.quiet,
        parallel: launch.parallel,
        retries: launch.retries,
    };
    let shell = Rc::new(RefCell::new(Shell::new(opts, abort)));
    let mut failed = false;
    if let Some(target) = &launch.target
        && let Err(e) = open_target(&mut shell.borrow_mut(), target)
    {
        eprintln!("ferry: {e}");
        if !interactive {
            return 1;
        }
    }
    if let Some(commands) = &launch.commands {
        for command in words::split_commands(commands) {
            if !run_one(&shell, &command, &mut failed) {
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
            if !run_one(&shell, line, &mut failed) {
                break;
            }
        }
    }
    u8::from(failed)
}

/// Runs one scripted command; false stops the script (exit, or the first failure).
fn run_one(shell: &Rc<RefCell<Shell>>, command: &str, failed: &mut bool) -> bool {
    match shell.borrow_mut().execute(command) {
        Ok(Flow::Continue) => true,
        Ok(Flow::Exit) => false,
        Err(e) => {
            eprintln!("ferry: {command}: {e}");
            *failed = true;
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
}
