//! The `ferry` client at its interactive prompt, driven through a pseudo-terminal (rexpect)
//! against `ferryd`: the `ferry> ` prompt, a password typed without echo, a progress bar during
//! a 20 MB upload, tab completion of a remote name, and Ctrl-C aborting a download.

mod common;

use std::process::Command;
use std::time::{Duration, Instant};

use common::{TestServer, pseudo_random};
use rexpect::session::{Options, PtySession};
use tempfile::TempDir;

const FERRY: &str = env!("CARGO_BIN_EXE_ferry");
/// Bound on every wait for output.
const EXPECT_MS: u64 = 10_000;
const PROMPT: &str = "ferry> ";
const USER: &str = "alice";
const PASS: &str = "hunter2-secret-words";

/// A ferry process on a pty, with everything it printed kept for later assertions.
struct Pty {
    session: PtySession,
    transcript: String,
}

impl Pty {
    fn spawn(home: &TempDir, args: &[&str]) -> Pty {
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
    fn expect(&mut self, needle: &str) -> String {
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

    fn prompt(&mut self) -> String {
        self.expect(PROMPT)
    }

    fn send(&mut self, text: &str) {
        self.session.send(text).expect("send");
        self.session.flush().expect("flush");
    }

    /// Types a line at the prompt and presses Enter, all in one write as a paste or a fast
    /// typist over ssh delivers it (rustyline 17 in `signal-hook` mode left such keys
    /// unprocessed until the next key arrived).
    ///
    /// rustyline may redraw `ferry> ` and the line while keys come in; everything up to the
    /// newline it prints on Enter is consumed here so the next prompt found is the new one.
    fn line(&mut self, line: &str) {
        self.send(&format!("{line}\r"));
        self.expect("\n");
    }

    /// Answers a password prompt (read by rpassword in cooked mode, so sent in one piece).
    fn secret(&mut self, line: &str) {
        self.session.send_line(line).expect("send line");
    }

    /// Types a command at the prompt and returns its output up to the next prompt.
    fn run(&mut self, line: &str) -> String {
        self.line(line);
        self.prompt()
    }

    /// `exit`, then the process must end by itself.
    fn exit(mut self) -> String {
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

fn temp_home() -> TempDir {
    tempfile::Builder::new()
        .prefix("ferry-pty-")
        .tempdir()
        .expect("temp home")
}

/// Starts ferry at the prompt connected to `server`, logged in by typing the password.
fn logged_in(server: &TestServer, home: &TempDir) -> Pty {
    let mut pty = Pty::spawn(home, &[&format!("127.0.0.1:{}", server.port())]);
    pty.expect("220 ");
    pty.prompt();
    pty.line(&format!("login {USER}"));
    pty.expect("Password:");
    pty.secret(PASS);
    let out = pty.prompt();
    assert!(out.contains("Logged in as alice."), "{out}");
    pty
}

#[test]
fn prompt_password_without_echo_progress_and_completion() {
    let mut server = TestServer::start(&[]);
    drop(server.register_and_login(USER, PASS));
    let home = temp_home();
    let big = pseudo_random(20 * 1024 * 1024, 7);
    std::fs::write(home.path().join("twenty.bin"), &big).expect("20 MB file");
    std::fs::write(
        server.home(USER).join("quite-unique-report.txt"),
        b"completed\n",
    )
    .expect("seed");

    let mut pty = logged_in(&server, &home);
    let out = pty.run("whoami");
    assert!(out.contains("alice on 127.0.0.1:"), "{out}");

    // A wrong command is reported and the prompt comes back.
    let out = pty.run("frobnicate");
    assert!(out.contains("unknown command \"frobnicate\""), "{out}");

    // 20 MB upload: a progress bar, then the summary line.
    let out = pty.run("put twenty.bin");
    assert!(
        out.contains("twenty.bin [") && out.contains("/20.00 MiB"),
        "no progress bar in:\n{out}"
    );
    assert!(out.contains("twenty.bin: 20971520 bytes in "), "{out}");
    // The summary takes a line of its own, not the tail of the bar's line.
    assert!(
        screen_lines(&out).any(|l| l.starts_with("twenty.bin: 20971520 bytes in ")),
        "summary glued to the bar:\n{out:?}"
    );
    assert_eq!(
        std::fs::read(server.home(USER).join("twenty.bin")).expect("uploaded"),
        big
    );

    // Tab completion of a remote name: `get quite` + Tab completes, Enter downloads it.
    pty.send("get quite\t");
    pty.expect("quite-unique-report.txt");
    pty.line("");
    let out = pty.prompt();
    assert!(
        out.contains("quite-unique-report.txt: 10 bytes in "),
        "completed get did not run:\n{out}"
    );
    assert_eq!(
        std::fs::read(home.path().join("quite-unique-report.txt")).expect("downloaded"),
        b"completed\n"
    );

    // The server shuts down (421): the session is over, and `open` starts a new one.
    server.restart();
    let out = pty.run("pwd");
    assert!(out.contains("ferry: 421 "), "{out}");
    let out = pty.run("whoami");
    assert!(
        out.contains("not connected"),
        "a 421 left the session open:\n{out}"
    );
    let out = pty.run(&format!("open 127.0.0.1 {}", server.port()));
    assert!(out.contains("220 "), "{out}\nserver:\n{}", server.stderr());
    let out = pty.run("whoami");
    assert!(
        out.contains("not logged in (connected to 127.0.0.1:"),
        "{out}"
    );

    let transcript = pty.exit();
    assert!(
        !transcript.contains(PASS),
        "the password was echoed:\n{transcript}"
    );
    assert!(
        home.path().join("history").exists(),
        "no history file written"
    );
}

#[test]
fn ctrl_c_aborts_a_download_and_returns_to_the_prompt() {
    let server = TestServer::start(&[]);
    drop(server.register_and_login(USER, PASS));
    let huge = std::fs::File::create(server.home(USER).join("huge.bin")).expect("huge");
    huge.set_len(8 * 1024 * 1024 * 1024).expect("sparse 8 GB");
    drop(huge);
    let home = temp_home();

    let mut pty = logged_in(&server, &home);
    pty.line("get huge.bin /dev/null");
    // The bar is drawn once bytes flow.
    pty.expect("huge.bin [");
    pty.expect("GiB");
    let pressed = Instant::now();
    pty.session.send_control('c').expect("send Ctrl-C");
    pty.expect("transfer aborted");
    pty.prompt();
    assert!(
        pressed.elapsed() < Duration::from_secs(10),
        "abort took {:?}",
        pressed.elapsed()
    );
    // The session still works.
    let out = pty.run("pwd");
    assert!(out.contains('/'), "{out}");
    let out = pty.run("size huge.bin");
    assert!(out.contains("8589934592"), "{out}");
    pty.exit();

    // Ctrl-C also backs out of a question, here register's name prompt (someone not logged
    // in yet).
    let mut pty = Pty::spawn(&home, &[&format!("127.0.0.1:{}", server.port())]);
    pty.expect("220 ");
    pty.prompt();
    pty.line("register");
    pty.expect("New user name: ");
    pty.session.send_control('c').expect("send Ctrl-C");
    pty.expect("cancelled");
    pty.prompt();
    // Answered, the same prompt goes on to the password, asked twice, and the new account.
    pty.line("register");
    pty.expect("New user name: ");
    pty.line("bobby");
    pty.expect("New password:");
    pty.secret("bobby-password");
    pty.expect("New password again:");
    pty.secret("bobby-password");
    let out = pty.prompt();
    assert!(
        out.contains("Account bobby created.") && out.contains("Logged in as bobby."),
        "{out}"
    );
    pty.exit();
}

#[test]
fn register_states_the_rule_and_asks_again_only_what_was_refused() {
    let server = TestServer::start(&[]);
    drop(server.register_and_login(USER, PASS));
    let home = temp_home();
    let mut pty = Pty::spawn(&home, &[&format!("127.0.0.1:{}", server.port())]);
    pty.expect("220 ");
    pty.prompt();
    pty.line("register");
    pty.expect("User names: 1-32 of a-z 0-9 . _ -, starting with a letter or digit.");
    pty.expect("New user name: ");
    // A bad name is refused at once, before any password is asked.
    pty.line("Bad!");
    let before = pty.expect("New user name: ");
    assert!(
        before.contains("bad user name") && !before.contains("assword"),
        "{before}"
    );
    // A taken name: refused by the server, and then only the name is asked again.
    pty.line(USER);
    pty.expect("New password: ");
    pty.secret("bobby-password");
    pty.expect("New password again: ");
    pty.secret("bobby-password");
    pty.expect("That user name is taken. Please choose again.");
    pty.expect("New user name: ");
    pty.line("bobby");
    let out = pty.prompt();
    assert!(
        !out.contains("assword"),
        "the password was asked again:\n{out}"
    );
    assert!(
        out.contains("Account bobby created.") && out.contains("Logged in as bobby."),
        "{out}"
    );
    // passwd asks for the new password as such.
    pty.line("passwd");
    pty.expect("Current password: ");
    pty.secret("bobby-password");
    pty.expect("New password: ");
    pty.secret("bobby-password-2");
    pty.expect("New password again: ");
    pty.secret("bobby-password-2");
    let out = pty.prompt();
    assert!(out.contains("Password changed."), "{out}");
    pty.exit();

    // A weak password: only the password is asked again.
    let mut pty = Pty::spawn(&home, &[&format!("127.0.0.1:{}", server.port())]);
    pty.expect("220 ");
    pty.prompt();
    pty.line("register carl");
    pty.expect("New password: ");
    pty.secret("short");
    pty.expect("New password again: ");
    pty.secret("short");
    pty.expect("Password too weak");
    let before = pty.expect("New password: ");
    assert!(
        !before.contains("user name"),
        "the name was asked again:\n{before}"
    );
    pty.secret("carl-password");
    pty.expect("New password again: ");
    pty.secret("carl-password");
    let out = pty.prompt();
    assert!(out.contains("Account carl created."), "{out}");
    pty.exit();
}

/// The lines a terminal would show: ANSI escape sequences dropped, split at CR and LF, each
/// trimmed at the start.
fn screen_lines(out: &str) -> impl Iterator<Item = String> + '_ {
    let mut plain = String::with_capacity(out.len());
    let mut chars = out.chars();
    while let Some(c) = chars.next() {
        if c == '\x1b' {
            // CSI: ESC [ parameters, ended by a letter.
            for c in chars.by_ref() {
                if c.is_ascii_alphabetic() {
                    break;
                }
            }
        } else {
            plain.push(c);
        }
    }
    plain
        .split(['\r', '\n'])
        .map(|l| l.trim_start().to_owned())
        .collect::<Vec<_>>()
        .into_iter()
}
