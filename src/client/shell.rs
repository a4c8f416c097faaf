//! The client's commands: what `ferry>` understands, with their help, run against an
//! [`FtpClient`]. Output goes to stdout; errors are returned for the caller to print.

use std::fs::{self, File, OpenOptions};
use std::io::{self, IsTerminal, Seek, SeekFrom, Write};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use crate::accounts::{NAME_RULE, UserName};
use crate::client::entries::{self, EntryKind, Modified, RemoteEntry};
use crate::client::ftp::{ClientError, FtpClient, Polled};
use crate::client::render::{self, Progress};
use crate::client::stream::Security;
use crate::client::words::split_words;
use crate::codec::reply_parser::unquote_path;

/// What a command's arguments are, for help and tab completion.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ArgKind {
    /// No argument worth completing.
    Nothing,
    /// Remote paths.
    Remote,
    /// Local paths.
    Local,
    /// Command names.
    Command,
}

/// One client command.
#[derive(Debug)]
pub struct CommandSpec {
    /// Its name.
    pub name: &'static str,
    /// Other names for it.
    pub aliases: &'static [&'static str],
    /// Syntax line.
    pub usage: &'static str,
    /// One-line description.
    pub help: &'static str,
    /// What its arguments complete to.
    pub args: ArgKind,
}

const fn spec(
    name: &'static str,
    aliases: &'static [&'static str],
    usage: &'static str,
    help: &'static str,
    args: ArgKind,
) -> CommandSpec {
    CommandSpec {
        name,
        aliases,
        usage,
        help,
        args,
    }
}

/// Every command, in the order `help` lists them.
pub const COMMANDS: &[CommandSpec] = &[
    spec(
        "open",
        &[],
        "open HOST [PORT]",
        "connect to an FTP server (port 21 by default)",
        ArgKind::Nothing,
    ),
    spec(
        "close",
        &[],
        "close",
        "disconnect from the server",
        ArgKind::Nothing,
    ),
    spec(
        "register",
        &[],
        "register [NAME]",
        "create an account (SITE REGISTER) and log in as it",
        ArgKind::Nothing,
    ),
    spec(
        "login",
        &["user"],
        "login [USER]",
        "log in; the password is asked without echo",
        ArgKind::Nothing,
    ),
    spec(
        "whoami",
        &[],
        "whoami",
        "show who and where you are logged in",
        ArgKind::Nothing,
    ),
    spec(
        "dir",
        &["ls"],
        "dir [-OPTIONS] [PATH]",
        "list a remote directory, or one file, as a table (ls options are ignored)",
        ArgKind::Remote,
    ),
    spec(
        "cd",
        &[],
        "cd PATH",
        "change the remote directory",
        ArgKind::Remote,
    ),
    spec(
        "pwd",
        &[],
        "pwd",
        "show the remote directory",
        ArgKind::Nothing,
    ),
    spec(
        "lcd",
        &[],
        "lcd [DIR]",
        "change the local directory (downloads go there; ~ is your home)",
        ArgKind::Local,
    ),
    spec(
        "lpwd",
        &[],
        "lpwd",
        "show the local directory",
        ArgKind::Nothing,
    ),
    spec(
        "lls",
        &[],
        "lls [DIR]",
        "list a local directory as a table",
        ArgKind::Local,
    ),
    spec(
        "get",
        &[],
        "get [-c] REMOTE [LOCAL]",
        "download a file; -c resumes a partial download",
        ArgKind::Remote,
    ),
    spec(
        "put",
        &[],
        "put [-c] LOCAL [REMOTE]",
        "upload a file; -c resumes a partial upload",
        ArgKind::Local,
    ),
    spec(
        "mget",
        &[],
        "mget PATTERN...",
        "download the remote files matching the patterns (* ? [..])",
        ArgKind::Remote,
    ),
    spec(
        "mput",
        &[],
        "mput PATTERN...",
        "upload the local files matching the patterns (* ? [..])",
        ArgKind::Local,
    ),
    spec(
        "mkdir",
        &[],
        "mkdir DIR",
        "create a remote directory",
        ArgKind::Remote,
    ),
    spec(
        "rmdir",
        &[],
        "rmdir DIR",
        "remove an empty remote directory",
        ArgKind::Remote,
    ),
    spec(
        "rm",
        &["delete"],
        "rm FILE",
        "delete a remote file",
        ArgKind::Remote,
    ),
    spec(
        "rename",
        &["mv"],
        "rename FROM TO",
        "rename or move a remote file or directory",
        ArgKind::Remote,
    ),
    spec(
        "size",
        &[],
        "size FILE",
        "show a remote file's size in bytes",
        ArgKind::Remote,
    ),
    spec(
        "stat",
        &[],
        "stat [PATH]",
        "show server status, or a path's status",
        ArgKind::Remote,
    ),
    spec(
        "passwd",
        &[],
        "passwd",
        "change your password (SITE PASSWD)",
        ArgKind::Nothing,
    ),
    spec(
        "quote",
        &[],
        "quote LINE",
        "send a raw command line and show the reply",
        ArgKind::Nothing,
    ),
    spec(
        "help",
        &["?"],
        "help [COMMAND]",
        "list commands, or explain one",
        ArgKind::Command,
    ),
    spec(
        "exit",
        &["quit", "bye"],
        "exit",
        "disconnect and leave",
        ArgKind::Nothing,
    ),
];

/// Finds a command by name or alias.
pub fn find_command(name: &str) -> Option<&'static CommandSpec> {
    COMMANDS
        .iter()
        .find(|c| c.name == name || c.aliases.contains(&name))
}

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
        if let Some(e) = result.as_ref().err().and_then(ShellError::client_error)
            && e.is_fatal()
        {
            // The control connection is gone: forget it so `open` works again.
            self.client = None;
            self.server = None;
            self.endpoint = None;
            self.user = None;
        }
        result
    }

    fn run(&mut self, spec: &'static CommandSpec, args: &[&str]) -> Result<Flow, ShellError> {
        let usage = || ShellError::Usage(spec.usage);
        match (spec.name, args) {
            ("open", [host]) => self.open(host, None)?,
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
                // `ls -la` and the like: a person's habit; the table shows what they would show.
                match skip_options(args) {
                    [] => self.dir(None)?,
                    [path] => self.dir(Some(path))?,
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
            ("put", _) => self.put(args)?,
            ("mget", [_, ..]) => self.mget(args)?,
            ("mput", [_, ..]) => self.mput(args)?,
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

    fn close(&mut self) {
        if let Some(client) = self.client.take() {
            client.quit();
        }
        self.server = None;
        self.endpoint = None;
        self.user = None;
    }

    /// Prints a confirmation or progress line, unless `-q`.
    fn say(&self, text: impl std::fmt::Display) {
        if !self.opts.quiet {
            println!("{text}");
        }
    }

    /// `dir [PATH]`: a directory as a table, or a file as one row. MLST tells which (RFC 3659
    /// §7); a server without it gets `LIST PATH`, which lists a file as itself.
    fn dir(&mut self, path: Option<&str>) -> Result<(), ShellError> {
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
                println!("{}", render::entries_table(&[entry]));
                return Ok(());
            }
        }
        let abort = self.reset_abort();
        let entries = self.client()?.list(path, &abort).map_err(about())?;
        println!("{}", render::entries_table(&entries));
        Ok(())
    }

    /// Logs in as `user` (asked when absent), the password from FERRY_PASSWORD, the password
    /// file, or a prompt without echo.
    ///
    /// # Errors
    /// No connection, no password source, or the server's refusal.
    pub fn login(&mut self, user: Option<&str>) -> Result<(), ShellError> {
        self.client()?;
        let user = match user {
            Some(u) => u.to_owned(),
            None => self.ask_line("Name: ")?,
        };
        if self.user.as_deref() == Some(user.as_str()) {
            self.say(format_args!("Already logged in as {user}."));
            return Ok(());
        }
        let password = self.password("Password: ")?;
        if self.user.is_some() {
            self.log_out()?;
        }
        self.client()?.login(&user, &password)?;
        self.say(format_args!("Logged in as {user}."));
        self.user = Some(user);
        Ok(())
    }

    /// Ends the current login so that another can follow: REIN (RFC 959 §4.1.1), or a fresh
    /// connection to the same server when it does not implement REIN (a USER after a login
    /// only earns a 530 from most servers).
    fn log_out(&mut self) -> Result<(), ShellError> {
        let client = self.client()?;
        let mut reply = client.command("REIN")?;
        // 120: ready in a moment; the 220 follows.
        while reply.code == 120 {
            reply = client.reply()?;
        }
        match reply.code {
            220 => {}
            500 | 502 | 504 => {
                let (host, port) = self.endpoint.clone().ok_or(ClientError::NotConnected)?;
                self.open(&host, Some(port))?;
            }
            _ => return Err(ClientError::Refused(reply).into()),
        }
        self.user = None;
        Ok(())
    }

    fn register(&mut self, name: Option<&str>) -> Result<(), ShellError> {
        self.client()?;
        // The server registers only before a login; say so before asking for anything.
        if let Some(user) = &self.user {
            return Err(ShellError::Message(format!(
                "logged in as {user}: register from a new connection (close, then open)"
            )));
        }
        // The name rule is the server's own (ferryd's UserName), checked here so that a bad
        // name is refused before any password is asked.
        if self.opts.interactive && name.is_none() {
            println!("User names: {NAME_RULE}.");
        }
        let mut name = name.map(str::to_owned);
        let mut password = None;
        loop {
            let user = match name.take() {
                Some(n) => n,
                None => self.ask_line("New user name: ")?,
            };
            if let Err(e) = UserName::parse(&user) {
                let why = format!("{user:?}: {e}");
                self.retry_or(ShellError::Message(why.clone()))?;
                eprintln!("{why}. Please choose again.");
                continue;
            }
            let secret = match password.take() {
                Some(p) => p,
                None => self.new_password()?,
            };
            match self.client()?.register(&user, &secret) {
                Ok(_) => {
                    self.say(format_args!("Account {user} created."));
                    self.client()?.login(&user, &secret)?;
                    self.say(format_args!("Logged in as {user}."));
                    self.user = Some(user);
                    return Ok(());
                }
                Err(ClientError::Refused(reply)) if matches!(reply.code, 501 | 550) => {
                    // Ask again only for the part the server refused; anything else
                    // (registration closed, an invitation needed) is final.
                    let text = reply.text().to_ascii_lowercase();
                    if text.contains("name") {
                        password = Some(secret);
                    } else if text.starts_with("password") {
                        name = Some(user);
                    } else {
                        return Err(ClientError::Refused(reply).into());
                    }
                    let why = reply.text().to_owned();
                    self.retry_or(ShellError::Client(ClientError::Refused(reply)))?;
                    eprintln!("{why} Please choose again.");
                }
                Err(e) => return Err(e.into()),
            }
        }
    }

    /// In a person's session, say why and go on; in a script, fail with `err`.
    fn retry_or(&self, err: ShellError) -> Result<(), ShellError> {
        if self.opts.interactive {
            Ok(())
        } else {
            Err(err)
        }
    }

    /// A new password: asked twice without echo in a person's session (until both match), or
    /// taken from FERRY_PASSWORD / the password file in a script.
    fn new_password(&self) -> Result<String, ShellError> {
        if !self.opts.interactive {
            return self.password("New password: ");
        }
        loop {
            let first = prompt_secret("New password: ")?;
            let second = prompt_secret("New password again: ")?;
            if first == second {
                return Ok(first);
            }
            eprintln!("The passwords differ; try again.");
        }
    }

    fn passwd(&mut self) -> Result<(), ShellError> {
        self.client()?;
        let (old, new) = if self.opts.interactive {
            (prompt_secret("Current password: ")?, self.new_password()?)
        } else {
            let new = std::env::var("FERRY_NEW_PASSWORD").map_err(|_| {
                ShellError::Message("set FERRY_NEW_PASSWORD for passwd in scripts".into())
            })?;
            (self.password("Password: ")?, new)
        };
        self.client()?.ok(&format!("SITE PASSWD {old} {new}"))?;
        self.say("Password changed.");
        Ok(())
    }

    /// The password for a login: FERRY_PASSWORD, then `--password-file`, then a prompt
    /// without echo when a person is there.
    fn password(&self, prompt: &str) -> Result<String, ShellError> {
        if let Ok(p) = std::env::var("FERRY_PASSWORD") {
            return Ok(p);
        }
        if let Some(path) = &self.opts.password_file {
            let text = fs::read_to_string(path)
                .map_err(|e| ShellError::Message(format!("{}: {e}", path.display())))?;
            return Ok(text.lines().next().unwrap_or("").to_owned());
        }
        if self.opts.interactive || io::stdin().is_terminal() {
            return prompt_secret(prompt);
        }
        Err(ShellError::Message(
            "no password: set FERRY_PASSWORD or use --password-file".into(),
        ))
    }

    fn ask_line(&self, prompt: &str) -> Result<String, ShellError> {
        if !self.opts.interactive {
            return Err(ShellError::Message(format!(
                "{} needed: give it as an argument",
                prompt.trim_end_matches([':', ' '])
            )));
        }
        // A line editor of its own, so Ctrl-C cancels here as at the main prompt (a plain
        // read would leave Ctrl-C to the transfer-abort handler, which ignores it here).
        let mut editor = rustyline::DefaultEditor::new()
            .map_err(|e| ShellError::Message(format!("no line editor: {e}")))?;
        match editor.readline(prompt) {
            Ok(line) => Ok(line.trim().to_owned()),
            Err(
                rustyline::error::ReadlineError::Interrupted | rustyline::error::ReadlineError::Eof,
            ) => Err(ShellError::Message("cancelled".into())),
            Err(e) => Err(ShellError::Message(e.to_string())),
        }
    }

    fn get(&mut self, args: &[&str]) -> Result<(), ShellError> {
        let (resume, rest) = take_flag(args, "-c");
        let (remote, local) = match rest.as_slice() {
            [remote] => (*remote, base_name(remote).to_owned()),
            [remote, local] => (*remote, (*local).to_owned()),
            _ => return Err(ShellError::Usage("get [-c] REMOTE [LOCAL]")),
        };
        self.download(remote, Path::new(&local), resume)
    }

    fn download(&mut self, remote: &str, local: &Path, resume: bool) -> Result<(), ShellError> {
        let local_name = local.display().to_string();
        let local_err = |source| {
            ShellError::Client(ClientError::Local {
                path: local_name.clone(),
                source,
            })
        };
        let size = self.remote_size(remote)?;
        let offset = if resume {
            match fs::metadata(local) {
                Ok(meta) => meta.len(),
                Err(e) if e.kind() == io::ErrorKind::NotFound => 0,
                Err(e) => return Err(local_err(e)),
            }
        } else {
            0
        };
        if resume && size == Some(offset) {
            self.say(format_args!(
                "{local_name} is already complete ({offset} bytes)."
            ));
            return Ok(());
        }
        let mut sink = LazyFile {
            path: local.to_path_buf(),
            append: resume,
            file: None,
        };
        let abort = self.reset_abort();
        let mut progress = Progress::start(remote, size, self.opts.progress);
        progress.resume_at(offset);
        let client = self.client()?;
        let result = client.retrieve(
            remote,
            offset,
            &mut sink,
            &local_name,
            &mut |n| progress.advance(n),
            &abort,
        );
        let created = sink.file.is_some();
        let result = result.and_then(|n| {
            sink.finish()
                .map(|()| n)
                .map_err(|source| ClientError::Local {
                    path: local_name.clone(),
                    source,
                })
        });
        match result {
            // The local file could not even be made: say so as a sentence.
            Err(ClientError::Local { path, source }) if !created => {
                progress.abandon();
                Err(ShellError::Message(format!(
                    "cannot create {path}: {}",
                    render::io_reason(&source, "no such directory")
                )))
            }
            result => self.report(progress, result, format!("cannot download {remote}")),
        }
    }

    fn put(&mut self, args: &[&str]) -> Result<(), ShellError> {
        let (resume, rest) = take_flag(args, "-c");
        let (local, remote) = match rest.as_slice() {
            [local] => (*local, base_name(local).to_owned()),
            [local, remote] => (*local, (*remote).to_owned()),
            _ => return Err(ShellError::Usage("put [-c] LOCAL [REMOTE]")),
        };
        self.upload(Path::new(local), &remote, resume)
    }

    fn upload(&mut self, local: &Path, remote: &str, resume: bool) -> Result<(), ShellError> {
        let local_name = local.display().to_string();
        let local_err = |source| {
            ShellError::Client(ClientError::Local {
                path: local_name.clone(),
                source,
            })
        };
        let mut file = File::open(local).map_err(|e| {
            ShellError::Message(format!(
                "cannot open {local_name}: {}",
                render::io_reason(&e, "no such file")
            ))
        })?;
        let meta = file.metadata().map_err(local_err)?;
        // A pipe or FIFO has no length to show progress against.
        let size = meta.is_file().then_some(meta.len());
        let offset = if resume {
            self.remote_size(remote)?.unwrap_or(0)
        } else {
            0
        };
        if resume && size.is_some_and(|size| offset >= size) {
            self.say(format_args!(
                "{remote} is already complete ({offset} bytes)."
            ));
            return Ok(());
        }
        // Only a resume seeks, so that a pipe can be uploaded too.
        if offset > 0 {
            file.seek(SeekFrom::Start(offset)).map_err(local_err)?;
        }
        let abort = self.reset_abort();
        let mut progress = Progress::start(&local_name, size, self.opts.progress);
        progress.resume_at(offset);
        let client = self.client()?;
        // Resuming appends the rest (APPE), as lftp and curl do.
        let result = client.store(
            remote,
            resume && offset > 0,
            &mut Polled(file),
            &local_name,
            &mut |n| progress.advance(n),
            &abort,
        );
        self.report(progress, result, format!("cannot upload to {remote}"))
    }

    /// The summary line of a transfer, or its error; the server's refusal is named by `what`.
    fn report(
        &self,
        progress: Progress,
        result: Result<u64, ClientError>,
        what: String,
    ) -> Result<(), ShellError> {
        match result {
            Ok(_) => {
                self.say(progress.finish());
                Ok(())
            }
            Err(e) => {
                progress.abandon();
                Err(match e {
                    ClientError::Refused(_) => ShellError::about(what)(e),
                    e => e.into(),
                })
            }
        }
    }

    /// SIZE of a remote file in binary mode; `None` when the server will not say.
    fn remote_size(&mut self, remote: &str) -> Result<Option<u64>, ShellError> {
        let reply = self.client()?.command(&format!("SIZE {remote}"))?;
        Ok(if reply.code == 213 {
            reply.text().trim().parse().ok()
        } else {
            None
        })
    }

    fn mget(&mut self, patterns: &[&str]) -> Result<(), ShellError> {
        let mut matched = 0;
        for pattern in patterns {
            let (dir, name_pattern) = match pattern.rsplit_once('/') {
                Some((dir, name)) => (Some(if dir.is_empty() { "/" } else { dir }), name),
                None => (None, *pattern),
            };
            let glob = glob::Pattern::new(name_pattern)
                .map_err(|e| ShellError::Message(format!("{pattern}: {e}")))?;
            let abort = self.reset_abort();
            let entries = self.client()?.list(dir, &abort)?;
            for entry in entries
                .iter()
                .filter(|e| e.kind == EntryKind::File && glob.matches(&e.name))
            {
                let remote = match dir {
                    Some("/") => format!("/{}", entry.name),
                    Some(d) => format!("{d}/{}", entry.name),
                    None => entry.name.clone(),
                };
                self.download(&remote, Path::new(&entry.name), false)?;
                matched += 1;
            }
        }
        if matched == 0 {
            return Err(ShellError::Message("no remote file matches".into()));
        }
        Ok(())
    }

    fn mput(&mut self, patterns: &[&str]) -> Result<(), ShellError> {
        let mut matched = 0;
        for pattern in patterns {
            let paths =
                glob::glob(pattern).map_err(|e| ShellError::Message(format!("{pattern}: {e}")))?;
            for path in paths.filter_map(Result::ok).filter(|p| p.is_file()) {
                let remote = base_name(&path.to_string_lossy()).to_owned();
                self.upload(&path, &remote, false)?;
                matched += 1;
            }
        }
        if matched == 0 {
            return Err(ShellError::Message("no local file matches".into()));
        }
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

/// The local side of a download: created (or opened for appending) at the first byte, so a
/// refused RETR leaves no empty file behind; a partial file stays for `get -c`.
struct LazyFile {
    path: PathBuf,
    append: bool,
    file: Option<File>,
}

impl LazyFile {
    fn open(&mut self) -> io::Result<&mut File> {
        if self.file.is_none() {
            let file = if self.append {
                OpenOptions::new()
                    .create(true)
                    .append(true)
                    .open(&self.path)?
            } else {
                File::create(&self.path)?
            };
            self.file = Some(file);
        }
        self.file
            .as_mut()
            .ok_or_else(|| io::Error::other("local file not open"))
    }

    /// Makes sure the file exists (an empty download writes no byte) and is flushed.
    fn finish(mut self) -> io::Result<()> {
        self.open()?.flush()
    }
}

impl Write for LazyFile {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        self.open()?.write(buf)
    }

    fn flush(&mut self) -> io::Result<()> {
        match &mut self.file {
            Some(file) => file.flush(),
            None => Ok(()),
        }
    }
}

fn print_help() {
    println!("Commands (help COMMAND for more):");
    for spec in COMMANDS {
        let aliases = if spec.aliases.is_empty() {
            String::new()
        } else {
            format!(" (also {})", spec.aliases.join(", "))
        };
        println!("  {:<26} {}{aliases}", spec.usage, spec.help);
    }
}

fn prompt_secret(prompt: &str) -> Result<String, ShellError> {
    rpassword::prompt_password(prompt)
        .map_err(|e| ShellError::Message(format!("cannot read the password: {e}")))
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
mod tests {
    use super::*;

    #[test]
    fn host_and_port_forms() {
        let hp = |t: &str| split_host_port(t).expect("valid");
        assert_eq!(hp("example.org"), ("example.org".into(), 21));
        assert_eq!(hp("127.0.0.1:2121"), ("127.0.0.1".into(), 2121));
        assert_eq!(hp("[::1]:2121"), ("::1".into(), 2121));
        assert_eq!(hp("::1"), ("::1".into(), 21));
        assert!(split_host_port("h:port").is_err());
    }

    #[test]
    fn every_command_has_help_and_is_found_by_alias() {
        for spec in COMMANDS {
            assert!(find_command(spec.name).is_some());
            for alias in spec.aliases {
                assert_eq!(find_command(alias).map(|s| s.name), Some(spec.name));
            }
            assert!(spec.usage.starts_with(spec.name));
        }
        assert!(find_command("nope").is_none());
    }

    #[test]
    fn flags_and_names() {
        assert_eq!(take_flag(&["-c", "a"], "-c"), (true, vec!["a"]));
        assert_eq!(take_flag(&["a"], "-c"), (false, vec!["a"]));
        assert_eq!(base_name("/x/y.txt"), "y.txt");
        assert_eq!(base_name("y.txt"), "y.txt");
    }

    #[test]
    fn options_and_home() {
        assert_eq!(skip_options(&["-l", "-a", "dir"]), ["dir"]);
        assert_eq!(skip_options(&["-la"]), [] as [&str; 0]);
        // A lone `-` is a name, and so is what follows the first name.
        assert_eq!(skip_options(&["-", "-x"]), ["-", "-x"]);
        assert_eq!(skip_options(&["a", "-l"]), ["a", "-l"]);
        // Only `~` and `~/...` are the home; `~user` and `a/~` are names.
        for plain in ["~user", "a/~", "/x"] {
            assert_eq!(expand_home(plain).expect("plain"), PathBuf::from(plain));
        }
    }
}
