//! The `ferry` client at its interactive prompt, driven through a pseudo-terminal (rexpect)
//! against `ferryd`: the `ferry> ` prompt, a password typed without echo, a progress bar during
//! a 20 MB upload, tab completion of a remote name, Ctrl-C aborting a download, and parallel
//! downloads under one display (a line per transfer and a total) that Ctrl-C stops together.

use crate::common;

use std::time::{Duration, Instant};

use common::pty::{self, Pty, temp_home};
use common::{TestServer, pseudo_random};
use tempfile::TempDir;

const USER: &str = "alice";
const PASS: &str = "hunter2-secret-words";

/// Starts ferry at the prompt connected to `server`, logged in by typing the password.
fn logged_in(server: &TestServer, home: &TempDir) -> Pty {
    pty::logged_in(server.port(), home, USER, PASS)
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
#[test]
fn parallel_downloads_share_one_display_and_ctrl_c_stops_them_all() {
    let server = TestServer::start(&[]);
    drop(server.register_and_login(USER, PASS));
    for name in ["one.bin", "two.bin", "three.bin"] {
        let huge = std::fs::File::create(server.home(USER).join(name)).expect("huge");
        huge.set_len(8 * 1024 * 1024 * 1024).expect("sparse 8 GB");
    }
    let home = temp_home();
    std::fs::create_dir(home.path().join("sink")).expect("sink");
    for name in ["one.bin", "two.bin", "three.bin"] {
        std::os::unix::fs::symlink("/dev/null", home.path().join("sink").join(name))
            .expect("to /dev/null");
    }

    let mut pty = logged_in(&server, &home);
    pty.run("lcd sink");
    pty.line("mget -P 2 *.bin");
    // A line for each of the two running transfers, and the total below them.
    pty.expect("total 0/3 files [");
    pty.expect("one.bin [");
    pty.expect("three.bin [");
    pty.expect("GiB");
    pty.session.send_control('c').expect("send Ctrl-C");
    pty.expect("transfer aborted");
    pty.prompt();
    let out = pty.run("pwd");
    assert!(out.contains('/'), "the session goes on: {out}");
    pty.exit();
}

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
