//! A `ferry` process at its interactive prompt on a pseudo-terminal (rexpect), for the tests
//! that need a person's session: a prompt, passwords typed without echo, Ctrl-C.

use std::os::unix::process::CommandExt;
use std::process::Command;

use rexpect::session::{Options, PtySession};
use tempfile::TempDir;

/// The client binary cargo built for these tests.
pub const FERRY: &str = env!("CARGO_BIN_EXE_ferry");
/// Bound on every wait for output.
pub const EXPECT_MS: u64 = 10_000;
/// What ferry prints when it waits for a command.
pub const PROMPT: &str = "ferry> ";

/// A ferry process on a pty, with everything it printed kept for later assertions.
pub struct Pty {
    /// The rexpect session (for Ctrl-C and the process).
    pub session: PtySession,
    /// Everything read so far.
    pub transcript: String,
}

impl Pty {
    /// Starts ferry with `args` in `home` (also its HOME), on a terminal that echoes.
    pub fn spawn(home: &TempDir, args: &[&str]) -> Pty {
        Pty::spawn_as(home, args, None)
    }

    /// [`Pty::spawn`], as user and group `id` when given (the test runs as root, and a
    /// person's permissions matter).
    pub fn spawn_as(home: &TempDir, args: &[&str], id: Option<u32>) -> Pty {
        // rexpect turns the terminal's echo off before it starts the program; a person's
        // terminal echoes, so turn it back on or "no echo of the password" proves nothing.
        let mut cmd = Command::new("sh");
        cmd.args(["-c", "stty echo && exec \"$0\" \"$@\"", FERRY])
            .args(args)
            .current_dir(home.path())
            .env("HOME", home.path())
            .env("FERRY_HISTORY", home.path().join("history"))
            .env("TERM", "xterm")
            .env_remove("FERRY_PASSWORD")
            .env_remove("FERRY_NEW_PASSWORD");
        if let Some(id) = id {
            cmd.uid(id).gid(id);
        }
        let options = Options {
            timeout_ms: Some(EXPECT_MS),
            strip_ansi_escape_codes: true,
        };
        let session = rexpect::spawn_with_options(cmd, options).expect("spawn ferry on a pty");
        Pty {
            session,
            transcript: String::new(),
        }
    }

    /// Waits for `needle`; returns what came before it.
    pub fn expect(&mut self, needle: &str) -> String {
        match self.session.exp_string(needle) {
            Ok(before) => {
                self.transcript.push_str(&before);
                self.transcript.push_str(needle);
                before
            }
            Err(e) => panic!(
                "no {needle:?} within {EXPECT_MS} ms ({e}); output so far:\n{}",
                self.transcript
            ),
        }
    }

    pub fn prompt(&mut self) -> String {
        self.expect(PROMPT)
    }

    pub fn send(&mut self, text: &str) {
        self.session.send(text).expect("send");
        self.session.flush().expect("flush");
    }

    /// Types a line at the prompt and presses Enter, all in one write as a paste or a fast
    /// typist over ssh delivers it (rustyline 17 in `signal-hook` mode left such keys
    /// unprocessed until the next key arrived).
    ///
    /// rustyline may redraw `ferry> ` and the line while keys come in; everything up to the
    /// newline it prints on Enter is consumed here so the next prompt found is the new one.
    pub fn line(&mut self, line: &str) {
        self.send(&format!("{line}\r"));
        self.expect("\n");
    }

    /// Answers a password prompt (read by rpassword in cooked mode, so sent in one piece).
    pub fn secret(&mut self, line: &str) {
        self.session.send_line(line).expect("send line");
    }

    /// Types a command at the prompt and returns its output up to the next prompt.
    pub fn run(&mut self, line: &str) -> String {
        self.line(line);
        self.prompt()
    }

    /// `exit`, then the process must end by itself.
    pub fn exit(mut self) -> String {
        self.line("exit");
        match self.session.exp_eof() {
            Ok(rest) => self.transcript.push_str(&rest),
            Err(e) => panic!("ferry did not end after exit ({e}):\n{}", self.transcript),
        }
        let status = self.session.process.wait().expect("wait");
        assert!(
            matches!(status, rexpect::process::wait::WaitStatus::Exited(_, 0)),
            "ferry ended with {status:?}"
        );
        self.transcript
    }
}

pub fn temp_home() -> TempDir {
    tempfile::Builder::new()
        .prefix("ferry-pty-")
        .tempdir()
        .expect("temp home")
}

/// Starts ferry at the prompt connected to `port` on loopback, logged in as `user` by typing
/// `pass` at the password prompt.
pub fn logged_in(port: u16, home: &TempDir, user: &str, pass: &str) -> Pty {
    let mut pty = Pty::spawn(home, &[&format!("127.0.0.1:{port}")]);
    pty.expect("220 ");
    pty.prompt();
    pty.login(user, pass);
    pty
}

impl Pty {
    /// `login USER` at the prompt, the password typed at its prompt; must succeed.
    pub fn login(&mut self, user: &str, pass: &str) {
        self.line(&format!("login {user}"));
        self.expect("Password:");
        self.secret(pass);
        let out = self.prompt();
        assert!(out.contains(&format!("Logged in as {user}.")), "{out}");
    }
}
