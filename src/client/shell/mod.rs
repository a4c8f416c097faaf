//! The client's commands: what `ferry>` understands, with their help, run against an
//! [`FtpClient`]. Output goes to stdout; errors are returned for the caller to print.
//!
//! Files: `commands.rs` (the command table and help), `account.rs` (login, registration,
//! passwords), `transfer.rs` (get, put and their multi-file forms); the [`Shell`], its
//! dispatch, the connection and listing commands are here.

mod account;
mod batch;
mod commands;
mod mirror;
mod pget;
mod transfer;
mod verify;

pub use commands::{ArgKind, COMMANDS, CommandSpec, find_command};

use commands::print_help;

use std::fs;
use std::io;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use crate::client::bookmarks::{self, Bookmarks};
use crate::client::entries::{self, EntryKind, Modified, RemoteEntry};
use crate::client::ftp::{ClientError, FtpClient};
use crate::client::render;
use crate::client::stream::Security;
use crate::client::words::split_words;
use crate::codec::reply_parser::unquote_path;

/// Why a command failed; one line for the user.
#[derive(Debug, thiserror::Error)]
pub enum ShellError {
    /// The FTP side failed.
    #[error(transparent)]
    Client(#[from] ClientError),
    /// The command was used wrongly.
    #[error("usage: {0}")]
    Usage(&'static str),
    /// The FTP side failed doing `what` (e.g. "cannot delete f.txt").
    #[error("{what}: {source}")]
    About {
        /// What was attempted, naming the file.
        what: String,
        /// The failure.
        source: ClientError,
    },
    /// Anything else, already phrased for the user.
    #[error("{0}")]
    Message(String),
    /// Some transfers of a batch (`mget`, `mput`, `mirror`) failed, each named as it failed;
    /// the others were done.
    #[error("{failed} of {total} transfers failed")]
    Partial {
        /// How many failed.
        failed: usize,
        /// How many there were.
        total: usize,
    },
}

impl ShellError {
    /// Wraps an FTP failure with what was attempted; a local error is already phrased.
    fn about(what: impl Into<String>) -> impl FnOnce(ClientError) -> ShellError {
        let what = what.into();
        move |source| ShellError::About { what, source }
    }

    fn client_error(&self) -> Option<&ClientError> {
        match self {
            ShellError::Client(e) | ShellError::About { source: e, .. } => Some(e),
            _ => None,
        }
    }
}

/// Commands that only read, run again after a lost connection is opened again (the transfer
/// commands retry on their own).
const RUN_AGAIN: &[&str] = &["dir", "cd", "pwd", "size", "stat"];

/// Whether the shell goes on after a command.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Flow {
    /// Read the next command.
    Continue,
    /// Leave.
    Exit,
}

/// How the client was started.
#[derive(Debug, Clone)]
pub struct Options {
    /// Use active mode (PORT/EPRT) instead of passive.
    pub active: bool,
    /// Read passwords from this file (first line) instead of prompting.
    pub password_file: Option<PathBuf>,
    /// Control and data timeout.
    pub timeout: Duration,
    /// A person is typing: prompts may ask, errors may be retried.
    pub interactive: bool,
    /// Draw progress bars (stderr is a terminal).
    pub progress: bool,
    /// Plain FTP, or FTPS (explicit or implicit).
    pub security: Security,
    /// Print only what was asked for (listings, sizes, errors), no confirmations.
    pub quiet: bool,
    /// Connections `mget`, `mput` and `mirror` use at once unless `-P` says otherwise.
    pub parallel: usize,
    /// How often a transfer that failed for a passing reason (a reset, 421, 425, 426, 450, a
    /// timeout) is tried again, resuming where it stopped.
    pub retries: u32,
}

/// The client's state between commands.
pub struct Shell {
    client: Option<FtpClient>,
    server: Option<String>,
    /// Host and port of the open connection, to connect again (a new login without REIN).
    endpoint: Option<(String, u16)>,
    user: Option<String>,
    opts: Options,
    abort: Arc<AtomicBool>,
    /// Remote names per directory, for tab completion; cleared after every command.
    completion_cache: Option<(String, Vec<(String, bool)>)>,
    /// The password of the login in force, for the extra connections of `pget` (in memory
    /// only).
    secret: Option<String>,
    /// `~/.netrc`, read at the first login that may use it.
    netrc: std::cell::OnceCell<Option<crate::client::netrc::Netrc>>,
    /// The remote directory `cd` went to, to go back to after a lost connection is opened
    /// again (`None`: the login directory).
    cwd: Option<String>,
}

impl Shell {
    /// A shell with no connection. `abort` is set by Ctrl-C to stop a running transfer.
    pub fn new(opts: Options, abort: Arc<AtomicBool>) -> Shell {
        Shell {
            client: None,
            server: None,
            endpoint: None,
            user: None,
            opts,
            abort,
            completion_cache: None,
            secret: None,
            netrc: std::cell::OnceCell::new(),
            cwd: None,
        }
    }

    /// Runs one command line.
    ///
    /// # Errors
    /// [`ShellError`] describing the failure in one line.
    pub fn execute(&mut self, line: &str) -> Result<Flow, ShellError> {
        self.completion_cache = None;
        let words = split_words(line).map_err(|e| ShellError::Message(e.to_string()))?;
        let Some((name, args)) = words.split_first() else {
            return Ok(Flow::Continue);
        };
        let Some(spec) = find_command(name) else {
            return Err(ShellError::Message(format!(
                "unknown command {name:?}; try help"
            )));
        };
        let args: Vec<&str> = args.iter().map(String::as_str).collect();
        let result = self.run(spec, &args);
        let lost = result
            .as_ref()
            .err()
            .and_then(ShellError::client_error)
            .is_some_and(ClientError::is_fatal);
        if !lost {
            return result;
        }
        // The control connection is gone. Logged in, the shell opens it again in the same
        // directory (a command that only reads runs again); otherwise it is forgotten so
        // that `open` works again.
        self.client = None;
        if self.opts.retries > 0 && self.reconnect().is_ok() {
            if RUN_AGAIN.contains(&spec.name) {
                return self.run(spec, &args);
            }
            return result;
        }
        self.server = None;
        self.endpoint = None;
        self.user = None;
        self.secret = None;
        result
    }

    /// After a failed transfer attempt: a lost connection is dropped, to be opened again.
    fn forget_if_lost<T>(&mut self, result: &Result<T, ShellError>) {
        if let Err(e) = result
            && e.client_error().is_some_and(ClientError::is_fatal)
        {
            self.client = None;
        }
    }

    /// Opens the connection again when it was lost (see [`Shell::reconnect`]).
    fn reconnect_if_lost(&mut self) -> Result<(), ShellError> {
        if self.client.is_some() {
            return Ok(());
        }
        self.reconnect()
    }

    /// A new connection with the login in force, back in the directory of the lost one.
    fn reconnect(&mut self) -> Result<(), ShellError> {
        let login = self.login_again()?;
        let client = login.connect().map_err(|e| {
            eprintln!("ferry: the connection was lost and cannot be opened again: {e}");
            ShellError::from(e)
        })?;
        self.client = Some(client);
        if let Some(dir) = self.cwd.clone() {
            self.client()?
                .ok(&format!("CWD {dir}"))
                .map_err(ShellError::about(format!("cannot change back to {dir}")))?;
        }
        eprintln!(
            "ferry: the connection was lost; logged in again as {} in {}",
            login.user,
            self.cwd.as_deref().unwrap_or("the login directory")
        );
        Ok(())
    }

    /// Host, user and password of this login, for more connections like it.
    fn login_again(&self) -> Result<batch::Login, ShellError> {
        let (host, port) = self.endpoint.clone().ok_or(ClientError::NotConnected)?;
        let (Some(user), Some(password)) = (self.user.clone(), self.secret.clone()) else {
            return Err(ShellError::Message("log in first".into()));
        };
        Ok(batch::Login {
            host,
            port,
            user,
            password,
            timeout: self.opts.timeout,
            active: self.opts.active,
            security: self.opts.security.clone(),
        })
    }

    fn run(&mut self, spec: &'static CommandSpec, args: &[&str]) -> Result<Flow, ShellError> {
        let usage = || ShellError::Usage(spec.usage);
        match (spec.name, args) {
            ("open", [target]) => match self.bookmarked(target)? {
                Some(url) => self.open_url(&url)?,
                None if target.starts_with("ftp://") => self.open_url(target)?,
                None => self.open(target, None)?,
            },
            ("bookmark", _) => self.bookmark(args)?,
            ("open", [host, port]) => {
                let port = port.parse().map_err(|_| usage())?;
                self.open(host, Some(port))?;
            }
            ("close", []) => self.close(),
            ("register", [] | [_]) => self.register(args.first().copied())?,
            ("login", [] | [_]) => self.login(args.first().copied())?,
            ("whoami", []) => match (&self.user, &self.server) {
                (Some(user), Some(server)) => println!("{user} on {server}"),
                (None, Some(server)) => println!("not logged in (connected to {server})"),
                _ => println!("not connected"),
            },
            ("dir", _) => {
                let (json, args) = take_flag(args, "--json");
                // `ls -la` and the like: a person's habit; the table shows what they would show.
                match skip_options(&args) {
                    [] => self.dir(None, json)?,
                    [path] => self.dir(Some(path), json)?,
                    _ => return Err(usage()),
                }
            }
            ("cd", [path]) => {
                let client = self.client()?;
                client
                    .ok(&format!("CWD {path}"))
                    .map_err(ShellError::about(format!("cannot change to {path}")))?;
                let now = client.pwd().unwrap_or_else(|_| (*path).to_owned());
                self.say(format_args!("Now in {now}."));
                self.cwd = Some(now);
            }
            ("pwd", []) => println!("{}", self.client()?.pwd()?),
            ("lcd", [] | [_]) => {
                let dir = expand_home(args.first().copied().unwrap_or("~"))?;
                std::env::set_current_dir(&dir).map_err(|e| {
                    ShellError::Message(format!(
                        "cannot change to {}: {}",
                        dir.display(),
                        render::io_reason(&e, "no such directory")
                    ))
                })?;
                self.say(current_dir()?.display());
            }
            ("lpwd", []) => println!("{}", current_dir()?.display()),
            ("lls", _) => {
                let dir = match skip_options(args) {
                    [] => PathBuf::from("."),
                    [dir] => expand_home(dir)?,
                    _ => return Err(usage()),
                };
                println!("{}", render::entries_table(&local_entries(&dir)?));
            }
            ("get", _) => self.get(args)?,
            ("pget", _) => self.pget(args)?,
            ("put", _) => self.put(args)?,
            ("mget", _) => self.mget(args)?,
            ("mput", _) => self.mput(args)?,
            ("mirror", _) => self.mirror(args)?,
            ("mkdir", [dir]) => {
                let reply = self
                    .client()?
                    .ok(&format!("MKD {dir}"))
                    .map_err(ShellError::about(format!("cannot create {dir}")))?;
                let made = unquote_path(reply.text()).unwrap_or_else(|| (*dir).to_owned());
                self.say(format_args!("Created directory {made}."));
            }
            ("rmdir", [dir]) => {
                self.client()?
                    .ok(&format!("RMD {dir}"))
                    .map_err(ShellError::about(format!("cannot remove {dir}")))?;
                self.say(format_args!("Removed directory {dir}."));
            }
            ("rm", [file]) => {
                self.client()?
                    .ok(&format!("DELE {file}"))
                    .map_err(ShellError::about(format!("cannot delete {file}")))?;
                self.say(format_args!("Deleted {file}."));
            }
            ("rename", [from, to]) => {
                let client = self.client()?;
                let about = || ShellError::about(format!("cannot rename {from} to {to}"));
                let reply = client.command(&format!("RNFR {from}")).map_err(about())?;
                if reply.code != 350 {
                    return Err(about()(ClientError::Refused(reply)));
                }
                client.ok(&format!("RNTO {to}")).map_err(about())?;
                self.say(format_args!("Renamed {from} to {to}."));
            }
            ("size", [file]) => {
                let reply = self
                    .client()?
                    .ok(&format!("SIZE {file}"))
                    .map_err(ShellError::about(format!("no size for {file}")))?;
                println!("{}", reply.text().trim());
            }
            ("stat", [] | [_]) => {
                let line = match args.first() {
                    Some(path) => format!("STAT {path}"),
                    None => "STAT".to_owned(),
                };
                let reply =
                    self.client()?
                        .ok(&line)
                        .map_err(ShellError::about(match args.first() {
                            Some(path) => format!("cannot show the status of {path}"),
                            None => "cannot show the status".to_owned(),
                        }))?;
                for l in &reply.lines {
                    println!("{l}");
                }
            }
            ("passwd", []) => self.passwd()?,
            ("quote", [_, ..]) => self.quote(&args.join(" "))?,
            ("help", []) => print_help(),
            ("help", [name]) => match find_command(name) {
                Some(spec) => println!("{}\n    {}", spec.usage, spec.help),
                None => {
                    return Err(ShellError::Message(format!("no command {name:?}")));
                }
            },
            ("exit", []) => {
                self.close();
                return Ok(Flow::Exit);
            }
            _ => return Err(usage()),
        }
        Ok(Flow::Continue)
    }

    fn client(&mut self) -> Result<&mut FtpClient, ShellError> {
        self.client
            .as_mut()
            .ok_or(ShellError::Client(ClientError::NotConnected))
    }

    fn reset_abort(&self) -> Arc<AtomicBool> {
        self.abort.store(false, Ordering::Relaxed);
        Arc::clone(&self.abort)
    }

    /// Connects to `host` (`HOST`, `HOST:PORT`, `[v6]:PORT`), replacing any connection.
    ///
    /// # Errors
    /// Resolve, connect or greeting failures.
    pub fn open(&mut self, host: &str, port: Option<u16>) -> Result<(), ShellError> {
        let (host, port) = match port {
            Some(p) => (host.trim_matches(['[', ']']).to_owned(), p),
            None => split_host_port(host)?,
        };
        self.close();
        let (client, greeting) = FtpClient::connect(
            &host,
            port,
            self.opts.timeout,
            self.opts.active,
            &self.opts.security,
        )?;
        self.say(&greeting);
        self.server = Some(if host.contains(':') {
            format!("[{host}]:{port}")
        } else {
            format!("{host}:{port}")
        });
        self.endpoint = Some((host, port));
        self.client = Some(client);
        Ok(())
    }

    /// Opens `ftp://[USER@]HOST[:PORT][/DIR]` (or `HOST[:PORT]`): connects, logs in as the
    /// user (or the one `~/.netrc` names for the host), changes to the directory.
    ///
    /// # Errors
    /// Connecting, logging in or the change of directory failed.
    pub fn open_url(&mut self, text: &str) -> Result<(), ShellError> {
        let target = crate::client::parse_target(text)?;
        self.open(&target.host, Some(target.port))?;
        // Without a user in the URL, `~/.netrc` may name one (ftp's auto-login).
        if target.user.is_some() || self.netrc_login().is_some() {
            self.login(target.user.as_deref())?;
            if let Some(dir) = &target.dir {
                let cd = format!("cd {}", crate::client::words::quote_word(dir));
                // Named like a script's failing command: `ferry: cd DIR: 550 ...`.
                self.execute(&cd)
                    .map_err(|e| ShellError::Message(format!("{cd}: {e}")))?;
            }
        }
        Ok(())
    }

    /// The URL kept under `name`, if there is such a bookmark.
    ///
    /// # Errors
    /// The bookmarks file cannot be read.
    pub fn bookmarked(&self, name: &str) -> Result<Option<String>, ShellError> {
        let Some(path) = bookmarks::default_path() else {
            return Ok(None);
        };
        let marks = Bookmarks::load(&path).map_err(|e| ShellError::Message(e.to_string()))?;
        Ok(marks.bookmarks.get(name).cloned())
    }

    /// `bookmark add NAME [URL]`, `bookmark list`, `bookmark del NAME`.
    fn bookmark(&mut self, args: &[&str]) -> Result<(), ShellError> {
        let usage =
            ShellError::Usage("bookmark add NAME [URL] | bookmark list | bookmark del NAME");
        let path = bookmarks::default_path().ok_or_else(|| {
            ShellError::Message("no place for bookmarks: set HOME or XDG_CONFIG_HOME".into())
        })?;
        let unreadable = |e: io::Error| ShellError::Message(e.to_string());
        let mut marks = Bookmarks::load(&path).map_err(unreadable)?;
        match args {
            ["list"] => {
                for (name, url) in &marks.bookmarks {
                    println!("{name}\t{url}");
                }
                return Ok(());
            }
            ["add", name, rest @ ..] if rest.len() <= 1 => {
                let url = match rest.first() {
                    Some(url) => (*url).to_owned(),
                    None => self.here()?,
                };
                let (url, had_password) = bookmarks::without_password(&url);
                if had_password {
                    eprintln!(
                        "ferry: the password is not kept in a bookmark (~/.netrc can hold it)"
                    );
                }
                crate::client::parse_target(&url)?;
                self.say(format_args!("Bookmark {name}: {url}."));
                marks.bookmarks.insert((*name).to_owned(), url);
            }
            ["del", name] => {
                if marks.bookmarks.remove(*name).is_none() {
                    return Err(ShellError::Message(format!("no bookmark {name:?}")));
                }
                self.say(format_args!("Bookmark {name} deleted."));
            }
            _ => return Err(usage),
        }
        marks.save(&path).map_err(|e| {
            ShellError::Message(format!("bookmarks not saved to {}: {e}", path.display()))
        })
    }

    /// This connection as a URL: user, host, port and remote directory.
    fn here(&mut self) -> Result<String, ShellError> {
        let server = self.server.clone().ok_or(ClientError::NotConnected)?;
        let user = self
            .user
            .clone()
            .map(|u| format!("{u}@"))
            .unwrap_or_default();
        let dir = match self.user {
            Some(_) => self.client()?.pwd().unwrap_or_default(),
            None => String::new(),
        };
        let dir = if dir.starts_with('/') {
            dir
        } else {
            format!("/{dir}")
        };
        Ok(format!("ftp://{user}{server}{dir}"))
    }

    fn close(&mut self) {
        if let Some(client) = self.client.take() {
            client.quit();
        }
        self.server = None;
        self.endpoint = None;
        self.user = None;
        self.secret = None;
        self.cwd = None;
    }

    /// Prints a confirmation or progress line, unless `-q`.
    fn say(&self, text: impl std::fmt::Display) {
        if !self.opts.quiet {
            println!("{text}");
        }
    }

    /// `dir [PATH]`: a directory as a table, or a file as one row. MLST tells which (RFC 3659
    /// §7); a server without it gets `LIST PATH`, which lists a file as itself.
    fn dir(&mut self, path: Option<&str>, json: bool) -> Result<(), ShellError> {
        let show = |entries: &[RemoteEntry]| {
            if json {
                println!("{}", render::entries_json(entries));
            } else {
                println!("{}", render::entries_table(entries));
            }
        };
        let about = || ShellError::about(format!("cannot list {}", path.unwrap_or(".")));
        if let Some(path) = path {
            let reply = self
                .client()?
                .command(&format!("MLST {path}"))
                .map_err(about())?;
            // 421 ends the session; any other refusal (no MLST, or a pattern that a listing
            // may expand) is left to the listing, which says what is wrong if anything is.
            if reply.code == 421 {
                return Err(about()(ClientError::Refused(reply)));
            }
            let file = (reply.code == 250)
                .then(|| {
                    reply
                        .lines
                        .iter()
                        .skip(1)
                        .find_map(|l| l.strip_prefix(' ').and_then(entries::parse_mlsx_line))
                })
                .flatten()
                .filter(|e| e.kind != EntryKind::Dir);
            if let Some(mut entry) = file {
                entry.name = path.to_owned();
                show(&[entry]);
                return Ok(());
            }
        }
        let abort = self.reset_abort();
        let entries = self.client()?.list(path, &abort).map_err(about())?;
        show(&entries);
        Ok(())
    }

    fn quote(&mut self, line: &str) -> Result<(), ShellError> {
        let client = self.client()?;
        let mut reply = client.command(line)?;
        println!("{reply}");
        // A 1xx is followed by the final reply (the server gives up on a missing data
        // connection with 425).
        while reply.is_preliminary() {
            reply = client.reply()?;
            println!("{reply}");
        }
        if reply.code >= 400 {
            return Err(ShellError::Message(format!(
                "server replied {}",
                reply.code
            )));
        }
        Ok(())
    }

    /// Remote names below `dir` for tab completion: `(name, is_dir)`, cached until the next
    /// command. Errors just mean no completions.
    pub fn remote_names(&mut self, dir: &str) -> Vec<(String, bool)> {
        if let Some((cached, names)) = &self.completion_cache
            && cached == dir
        {
            return names.clone();
        }
        let abort = self.reset_abort();
        let Some(client) = self.client.as_mut() else {
            return Vec::new();
        };
        let arg = (!dir.is_empty()).then_some(dir);
        let names: Vec<(String, bool)> = match client.list(arg, &abort) {
            Ok(entries) => entries
                .into_iter()
                .map(|e| (e.name, e.kind == EntryKind::Dir))
                .collect(),
            Err(_) => Vec::new(),
        };
        self.completion_cache = Some((dir.to_owned(), names.clone()));
        names
    }
}

fn take_flag<'a>(args: &[&'a str], flag: &str) -> (bool, Vec<&'a str>) {
    let rest: Vec<&str> = args.iter().copied().filter(|a| *a != flag).collect();
    (rest.len() != args.len(), rest)
}

fn base_name(path: &str) -> &str {
    path.trim_end_matches('/')
        .rsplit('/')
        .next()
        .unwrap_or(path)
}

fn current_dir() -> Result<PathBuf, ShellError> {
    std::env::current_dir().map_err(|e| ShellError::Message(format!("local directory: {e}")))
}

/// `~` and `~/x` as the shell expands them: below `$HOME`.
fn expand_home(path: &str) -> Result<PathBuf, ShellError> {
    let rest = match path.strip_prefix('~') {
        Some("") => "",
        Some(rest) if rest.starts_with('/') => &rest[1..],
        _ => return Ok(PathBuf::from(path)),
    };
    let home = std::env::var_os("HOME")
        .ok_or_else(|| ShellError::Message("cannot expand ~: HOME is not set".into()))?;
    Ok(PathBuf::from(home).join(rest))
}

/// The arguments after leading `-x` options (`ls -la`), which the table makes moot.
fn skip_options<'a, 'b>(args: &'a [&'b str]) -> &'a [&'b str] {
    let options = args
        .iter()
        .take_while(|a| a.starts_with('-') && a.len() > 1)
        .count();
    &args[options..]
}

/// Splits `host`, `host:port`, `[v6]:port` or a bare IPv6 address; port 21 by default.
///
/// # Errors
/// A port that is not a number.
pub fn split_host_port(text: &str) -> Result<(String, u16), ShellError> {
    let bad = || ShellError::Message(format!("bad port in {text:?}"));
    if let Some(rest) = text.strip_prefix('[') {
        let (host, after) = rest
            .split_once(']')
            .ok_or_else(|| ShellError::Message(format!("bad address {text:?}")))?;
        let port = match after.strip_prefix(':') {
            Some(p) => p.parse().map_err(|_| bad())?,
            None => 21,
        };
        return Ok((host.to_owned(), port));
    }
    match text.rsplit_once(':') {
        Some((host, port)) if !host.contains(':') => {
            Ok((host.to_owned(), port.parse().map_err(|_| bad())?))
        }
        _ => Ok((text.to_owned(), 21)),
    }
}

fn local_entries(dir: &Path) -> Result<Vec<RemoteEntry>, ShellError> {
    let err = |e: io::Error| {
        ShellError::Message(format!(
            "cannot list {}: {}",
            dir.display(),
            render::io_reason(&e, "no such directory")
        ))
    };
    let mut entries = Vec::new();
    for dirent in fs::read_dir(dir).map_err(err)? {
        let dirent = dirent.map_err(err)?;
        let Ok(meta) = dirent.metadata() else {
            continue;
        };
        let kind = if meta.is_dir() {
            EntryKind::Dir
        } else if meta.is_file() {
            EntryKind::File
        } else {
            EntryKind::Other
        };
        entries.push(RemoteEntry {
            name: dirent.file_name().to_string_lossy().into_owned(),
            kind,
            size: meta.is_file().then_some(meta.len()),
            modified: meta
                .modified()
                .ok()
                .and_then(|t| jiff::Timestamp::try_from(t).ok())
                .map(Modified::At),
        });
    }
    entries.sort_by(|a, b| a.name.cmp(&b.name));
    Ok(entries)
}

#[cfg(test)]
mod tests;
