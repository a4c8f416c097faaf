//! The account commands: log in and out, register, change the password, and how passwords
//! and answers are read (a file, a prompt without echo, or standard input).

use std::fs;
use std::io::{self, IsTerminal};

use crate::accounts::{NAME_RULE, UserName};
use crate::client::ftp::ClientError;
use crate::client::netrc::{self, Netrc};

use super::{Shell, ShellError};

impl Shell {
    /// Logs in as `user` (when absent: the login `~/.netrc` gives for the host, else asked),
    /// the password from FERRY_PASSWORD, the password file, `~/.netrc`, or a prompt without
    /// echo.
    ///
    /// # Errors
    /// No connection, no password source, or the server's refusal.
    pub fn login(&mut self, user: Option<&str>) -> Result<(), ShellError> {
        self.client()?;
        let user = match user.map(str::to_owned).or_else(|| self.netrc_login()) {
            Some(u) => u,
            None => self.ask_line("Name: ")?,
        };
        if self.user.as_deref() == Some(user.as_str()) {
            self.say(format_args!("Already logged in as {user}."));
            return Ok(());
        }
        let from_netrc = if self.has_explicit_password() {
            None
        } else {
            self.netrc_password(&user)
        };
        let password = match from_netrc {
            Some(password) => password,
            None => self.password("Password: ")?,
        };
        if self.user.is_some() {
            self.log_out()?;
        }
        self.client()?.login(&user, &password)?;
        self.say(format_args!("Logged in as {user}."));
        self.user = Some(user);
        self.cwd = None;
        self.secret = Some(password);
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
        self.secret = None;
        Ok(())
    }

    pub(super) fn register(&mut self, name: Option<&str>) -> Result<(), ShellError> {
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
                    self.cwd = None;
                    self.secret = Some(secret);
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

    pub(super) fn passwd(&mut self) -> Result<(), ShellError> {
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
    /// `~/.netrc` (or `$NETRC`), read once; a warning about it is printed once.
    fn netrc(&self) -> Option<&Netrc> {
        self.netrc
            .get_or_init(|| {
                let path = netrc::default_path()?;
                match Netrc::load(&path) {
                    Ok(Some((netrc, warning))) => {
                        if let Some(warning) = warning {
                            eprintln!("ferry: {warning}");
                        }
                        Some(netrc)
                    }
                    Ok(None) => None,
                    Err(e) => {
                        eprintln!("ferry: {} not read: {e}", path.display());
                        None
                    }
                }
            })
            .as_ref()
    }

    /// The login `~/.netrc` gives for the connected host.
    pub(crate) fn netrc_login(&self) -> Option<String> {
        let (host, _) = self.endpoint.as_ref()?;
        self.netrc()?.find(host)?.login.clone()
    }

    fn netrc_password(&self, user: &str) -> Option<String> {
        let (host, _) = self.endpoint.as_ref()?;
        self.netrc()?.password(host, user).map(str::to_owned)
    }

    /// Whether a password was given outright (FERRY_PASSWORD or the password file), which
    /// goes before `~/.netrc`.
    fn has_explicit_password(&self) -> bool {
        std::env::var_os("FERRY_PASSWORD").is_some() || self.opts.password_file.is_some()
    }

    pub(super) fn password(&self, prompt: &str) -> Result<String, ShellError> {
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
}

fn prompt_secret(prompt: &str) -> Result<String, ShellError> {
    rpassword::prompt_password(prompt)
        .map_err(|e| ShellError::Message(format!("cannot read the password: {e}")))
}
