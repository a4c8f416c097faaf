//! The `ferry` client in script mode (`-c "cmd; cmd"` and commands on standard input) against
//! `ferryd` on an OS-chosen port: every command at least once, checked on stdout, stderr, the
//! exit status and the files on both sides, plus the ways a session fails.

use crate::common;
use crate::common::s3::{Backend, on_both_backends};

use std::io::{BufRead, BufReader, Write};
use std::net::TcpListener;
use std::path::PathBuf;
use std::process::{Child, ChildStdin, Command, Stdio};
use std::sync::mpsc;
use std::time::Duration;

use common::{Run, TestServer, pseudo_random, read, run_bounded};
use tempfile::TempDir;

/// The client binary built by cargo for these tests.
const FERRY: &str = env!("CARGO_BIN_EXE_ferry");
/// Bound on one client run.
const RUN_TIMEOUT: Duration = Duration::from_secs(30);
/// Bound on one line of output from a client driven line by line.
const LINE_TIMEOUT: Duration = Duration::from_secs(15);
pub(crate) const USER: &str = "alice";
pub(crate) const PASS: &str = "correct-horse-1";

/// A client's surroundings: a temporary HOME (history goes there) and working directory.
pub(crate) struct Client {
    pub(crate) home: TempDir,
    cwd: PathBuf,
    env: Vec<(String, String)>,
}

impl Client {
    pub(crate) fn new() -> Client {
        let home = tempfile::Builder::new()
            .prefix("ferry-client-")
            .tempdir()
            .expect("temp home");
        let cwd = home.path().join("work");
        std::fs::create_dir(&cwd).expect("work dir");
        Client {
            home,
            cwd,
            env: Vec::new(),
        }
    }

    /// A client with FERRY_PASSWORD set.
    pub(crate) fn with_password(pass: &str) -> Client {
        let mut c = Client::new();
        c.set("FERRY_PASSWORD", pass);
        c
    }

    pub(crate) fn set(&mut self, key: &str, value: &str) -> &mut Client {
        self.env.push((key.to_owned(), value.to_owned()));
        self
    }

    pub(crate) fn local(&self, name: &str) -> PathBuf {
        self.cwd.join(name)
    }

    pub(crate) fn write(&self, name: &str, bytes: &[u8]) {
        std::fs::write(self.local(name), bytes).expect("write local file");
    }

    pub(crate) fn command(&self, args: &[&str]) -> Command {
        let mut cmd = Command::new(FERRY);
        cmd.args(args)
            .current_dir(&self.cwd)
            .env("HOME", self.home.path())
            .env("FERRY_HISTORY", self.home.path().join("history"))
            .env_remove("FERRY_PASSWORD")
            .env_remove("FERRY_NEW_PASSWORD")
            // A configuration file of the person running the tests stays out of them.
            .env_remove("FERRY_CONFIG")
            .env_remove("XDG_CONFIG_HOME")
            .stdout(Stdio::piped())
            .stderr(Stdio::piped());
        for (k, v) in &self.env {
            cmd.env(k, v);
        }
        cmd
    }

    /// Runs `ferry ARGS` with `stdin` (or nothing) as standard input, bounded.
    pub(crate) fn run(&self, args: &[&str], stdin: Option<&str>) -> Run {
        let mut child = self
            .command(args)
            .stdin(Stdio::piped())
            .spawn()
            .expect("spawn ferry");
        {
            let mut pipe = child.stdin.take().expect("stdin");
            // A client that stops before reading its script (a bad configuration) closes the
            // pipe: what it did is in its status and output.
            if let Some(text) = stdin
                && let Err(e) = pipe.write_all(text.as_bytes())
            {
                assert_eq!(
                    e.kind(),
                    std::io::ErrorKind::BrokenPipe,
                    "write script: {e}"
                );
            }
        }
        Run::from(run_bounded(child, RUN_TIMEOUT))
    }

    /// `ferry 127.0.0.1:PORT -c SCRIPT`.
    pub(crate) fn script(&self, server: &TestServer, script: &str) -> Run {
        self.run(&[&target(server), "-c", script], None)
    }
}

pub(crate) fn target(server: &TestServer) -> String {
    format!("127.0.0.1:{}", server.port())
}

/// A server with `alice` registered.
pub(crate) fn server_with_user() -> TestServer {
    server_with_user_on(Backend::Local)
}

/// A server on `backend` with `alice` registered.
fn server_with_user_on(backend: Backend) -> TestServer {
    let server = TestServer::start_on(backend, &[]);
    drop(server.register_and_login(USER, PASS));
    server
}

#[test]
fn register_whoami_help_and_exit() {
    let server = TestServer::start(&[]);
    let client = Client::with_password(PASS);
    client
        .script(
            &server,
            "whoami; register alice; whoami; help; help get; exit; mkdir after-exit",
        )
        .ok("register")
        .has("220 ")
        .has(&format!("not logged in (connected to {})", target(&server)))
        .has("Account alice created.")
        .has("Logged in as alice.")
        .has(&format!("alice on {}", target(&server)))
        .has("get [-c] [--verify] REMOTE [LOCAL]\n    download a file; -c resumes a partial download");
    let out = client.script(&server, "help");
    out.ok("help");
    for name in [
        "open", "close", "register", "login", "whoami", "dir", "cd", "pwd", "lcd", "lpwd", "lls",
        "get", "pget", "put", "mget", "mput", "mirror", "bookmark", "mkdir", "rmdir", "rm",
        "rename", "size", "stat", "passwd", "quote", "help", "exit",
    ] {
        assert!(
            out.stdout.lines().any(|l| l.trim_start().starts_with(name)),
            "help does not list {name}:\n{}",
            out.stdout
        );
    }
    assert!(server.home(USER).is_dir(), "alice has no home");
    assert!(
        !server.home(USER).join("after-exit").exists(),
        "a command after exit ran"
    );
    // The account works with the password it was registered with.
    let mut ctl = server.register_and_login("bob", PASS);
    ctl.expect("QUIT", 221);

    // A taken name fails with the server's reason; so does an unknown help topic.
    client
        .script(&server, "register alice")
        .fails("taken", "register alice: ", "550")
        .lacks("Account alice created");
    assert!(
        client
            .script(&server, "register alice")
            .stderr
            .contains("taken"),
        "the reason is the server's"
    );
    client.run(&["-c", "help nosuch"], None).fails(
        "help",
        "help nosuch: ",
        "no command \"nosuch\"",
    );
    // register in a script without a name or without a password says what is missing.
    client
        .script(&server, "register")
        .fails("no name", "register: ", "give it as an argument");
    Client::new().script(&server, "register carol").fails(
        "no password",
        "register carol: ",
        "FERRY_PASSWORD",
    );
    // Logged in already: refused before any question, and no account is made.
    client
        .script(&server, "login alice; register dora")
        .fails("logged in", "register dora: ", "logged in as alice")
        .lacks("Account dora created");
    assert!(!server.home("dora").exists(), "dora was registered");
}

fn put_and_get_are_byte_exact_on(backend: Backend) {
    let server = server_with_user_on(backend);
    let client = Client::with_password(PASS);
    let big = pseudo_random(3 * 1024 * 1024 + 17, 1);
    client.write("big.bin", &big);
    client.write("with space.txt", b"spaces in the name\r\nand CRLF\n");
    client.write("empty", b"");
    let out = client.script(
        &server,
        "login alice; put big.bin; put 'with space.txt'; put empty; put big.bin \"copy of big\"; \
         get big.bin back.bin; get 'with space.txt' \"space back.txt\"; get empty empty.back; \
         get \"copy of big\"",
    );
    out.ok("put/get")
        .has("big.bin: 3145745 bytes in ")
        .has("with space.txt: 29 bytes in ")
        .has("empty: 0 bytes in ");
    let home = server.home(USER);
    assert_eq!(read(&home.join("big.bin")), big);
    assert_eq!(read(&home.join("copy of big")), big);
    assert_eq!(
        read(&home.join("with space.txt")),
        b"spaces in the name\r\nand CRLF\n"
    );
    assert_eq!(read(&home.join("empty")), b"");
    assert_eq!(read(&client.local("back.bin")), big);
    assert_eq!(read(&client.local("copy of big")), big);
    assert_eq!(
        read(&client.local("space back.txt")),
        b"spaces in the name\r\nand CRLF\n"
    );
    assert_eq!(
        read(&client.local("empty.back")),
        b"",
        "empty get makes a file"
    );
}

on_both_backends!(put_and_get_are_byte_exact_on: put_and_get_are_byte_exact, put_and_get_are_byte_exact_on_s3);

fn resume_against_ferryd_finishes_partial_files_on(backend: Backend) {
    // get -c continues with REST + RETR, put -c with APPE: both end byte-exact.
    let server = server_with_user_on(backend);
    let client = Client::with_password(PASS);
    let data = pseudo_random(100_000, 2);
    std::fs::write(server.home(USER).join("data.bin"), &data).expect("seed");
    client.write("data.bin", &data[..40_000]);
    client
        .script(&server, "login alice; get -c data.bin")
        .ok("get -c")
        .has("data.bin: 60000 bytes in ");
    assert_eq!(read(&client.local("data.bin")), data);

    std::fs::write(server.home(USER).join("up.bin"), &data[..30_000]).expect("seed");
    client.write("up.bin", &data);
    client
        .script(&server, "login alice; put -c up.bin")
        .ok("put -c")
        .has("up.bin: 70000 bytes in ");
    assert_eq!(read(&server.home(USER).join("up.bin")), data);

    // Nothing to resume: complete files are left alone, a missing remote file is uploaded.
    client.write("whole.bin", &data);
    std::fs::write(server.home(USER).join("whole.bin"), &data).expect("seed");
    client
        .script(
            &server,
            "login alice; get -c whole.bin; put -c whole.bin; put -c up.bin fresh.bin",
        )
        .ok("resume of complete files")
        .has("whole.bin is already complete (100000 bytes).")
        .has("up.bin: 100000 bytes in ");
    assert_eq!(read(&server.home(USER).join("fresh.bin")), data);
}

on_both_backends!(resume_against_ferryd_finishes_partial_files_on: resume_against_ferryd_finishes_partial_files, resume_against_ferryd_finishes_partial_files_on_s3);

fn directories_rename_rm_size_stat_quote_on(backend: Backend) {
    let server = server_with_user_on(backend);
    let client = Client::with_password(PASS);
    client.write("f.txt", b"0123456789");
    let out = client.script(
        &server,
        "login alice; mkdir sub; cd sub; pwd; put f.txt; dir; size f.txt; cd ..; pwd; \
         dir sub; ls; rename sub/f.txt g.txt; mv g.txt 'h h.txt'; stat; stat 'h h.txt'; \
         quote NOOP; quote HELP; size 'h h.txt'; mkdir gone; rmdir gone; rm 'h h.txt'; \
         delete sub/nothing-here",
    );
    out.fails("dirs", "delete sub/nothing-here: ", "550")
        .has("\n/sub\n")
        .has("\n10\n")
        .has("| f.txt ")
        .has("| sub ")
        .has("| dir ")
        .has("Logged in as alice")
        .has("200 NOOP ok.")
        .has("214");
    let pwds: Vec<&str> = out.stdout.lines().filter(|l| l.starts_with('/')).collect();
    assert_eq!(pwds, ["/sub", "/"], "{}", out.stdout);
    assert!(
        out.stdout.contains("h h.txt"),
        "stat of a path:\n{}",
        out.stdout
    );
    let view = server.home_view(USER);
    assert!(view.join("sub").is_dir());
    assert!(!view.join("sub/f.txt").exists());
    assert!(!view.join("g.txt").exists());
    assert!(!view.join("h h.txt").exists(), "rm removed it");
    assert!(!view.join("gone").exists(), "rmdir removed it");
    let home = server.home(USER);

    // A refused raw command fails the script with the server's code.
    client.script(&server, "login alice; quote XYZZY").fails(
        "quote",
        "quote XYZZY: ",
        "server replied 50",
    );
    // rmdir of a non-empty directory, rename of nothing.
    std::fs::write(home.join("sub/keep"), b"x").expect("seed");
    client
        .script(&server, "login alice; rmdir sub")
        .fails("rmdir", "rmdir sub: ", "55");
    assert!(home.join("sub/keep").exists());
    client
        .script(&server, "login alice; rename nothing other")
        .fails("rename", "rename nothing other: ", "550");
    client
        .script(&server, "login alice; cd nowhere")
        .fails("cd", "cd nowhere: ", "550");
    client
        .script(&server, "login alice; size sub")
        .fails("size of a dir", "size sub: ", "550");
}

on_both_backends!(directories_rename_rm_size_stat_quote_on: directories_rename_rm_size_stat_quote, directories_rename_rm_size_stat_quote_on_s3);

fn mget_mput_globs_and_lcd_on(backend: Backend) {
    let server = server_with_user_on(backend);
    let client = Client::with_password(PASS);
    for (name, seed) in [("a1.dat", 11), ("a2.dat", 12), ("b.txt", 13)] {
        client.write(name, &pseudo_random(5000 + seed as usize, seed));
    }
    std::fs::create_dir(client.local("down")).expect("down");
    client
        .script(
            &server,
            "login alice; mput a?.dat *.nomatch-is-fine-if-others-match",
        )
        .ok("mput");
    let home = server.home(USER);
    assert_eq!(read(&home.join("a1.dat")), read(&client.local("a1.dat")));
    assert_eq!(read(&home.join("a2.dat")), read(&client.local("a2.dat")));
    assert!(!home.join("b.txt").exists(), "mput took only the matches");

    std::fs::create_dir(home.join("pub")).expect("pub");
    std::fs::write(home.join("pub/x1.log"), b"one").expect("seed");
    std::fs::write(home.join("pub/x2.log"), b"two").expect("seed");
    std::fs::write(home.join("pub/y.txt"), b"no").expect("seed");
    let out = client.script(
        &server,
        "login alice; lcd down; lpwd; mget a*.dat pub/x*.log; lls; get /pub/y.txt; lcd; lpwd",
    );
    out.ok("mget");
    let down = client.local("down").canonicalize().expect("canon");
    assert!(
        out.stdout.contains(&format!("\n{}\n", down.display())),
        "lcd/lpwd print the new dir:\n{}",
        out.stdout
    );
    assert!(
        out.stdout.contains(&format!(
            "\n{}\n",
            client.home.path().canonicalize().unwrap().display()
        )),
        "lcd alone goes HOME:\n{}",
        out.stdout
    );
    assert!(
        out.stdout.contains("| x2.log "),
        "lls lists:\n{}",
        out.stdout
    );
    assert_eq!(read(&down.join("a1.dat")), read(&client.local("a1.dat")));
    assert_eq!(read(&down.join("a2.dat")), read(&client.local("a2.dat")));
    assert_eq!(read(&down.join("x1.log")), b"one");
    assert_eq!(read(&down.join("x2.log")), b"two");
    assert_eq!(
        read(&down.join("y.txt")),
        b"no",
        "get after lcd lands in the new dir"
    );
    assert!(!client.local("y.txt").exists());

    client.script(&server, "login alice; mget *.none").fails(
        "mget none",
        "mget *.none: ",
        "no remote file matches",
    );
    client.script(&server, "login alice; mput *.none").fails(
        "mput none",
        "mput *.none: ",
        "no local file matches",
    );
    client.script(&server, "lcd no-such-dir").fails(
        "lcd",
        "lcd no-such-dir: ",
        "cannot change to no-such-dir: no such directory",
    );
}

on_both_backends!(mget_mput_globs_and_lcd_on: mget_mput_globs_and_lcd, mget_mput_globs_and_lcd_on_s3);

#[test]
fn stdin_scripts_skip_comments_and_stop_at_the_first_failure() {
    let server = server_with_user();
    let client = Client::with_password(PASS);
    let script = "# a comment\n\nlogin alice\n  pwd  \nmkdir one\nmkdir one\nmkdir two\n";
    client
        .run(&[&target(&server)], Some(script))
        .fails("stdin", "mkdir one: ", "550")
        .has("Logged in as alice.\n/\n");
    assert!(server.home(USER).join("one").is_dir());
    assert!(
        !server.home(USER).join("two").exists(),
        "the script stopped"
    );
    // Without a target the script opens the connection itself; quit works as exit.
    let script = format!(
        "open 127.0.0.1 {}\nlogin alice\nwhoami\nquit\nmkdir three\n",
        server.port()
    );
    client
        .run(&[], Some(&script))
        .ok("open in stdin")
        .has(&format!("alice on {}", target(&server)));
    assert!(!server.home(USER).join("three").exists());
    client
        .run(&["-c", "bogus"], None)
        .fails("unknown", "bogus: ", "unknown command");
    client.run(&["-c", "get"], None).fails(
        "usage",
        "get: ",
        "usage: get [-c] [--verify] REMOTE [LOCAL]",
    );
}

#[test]
fn close_then_open_again_and_the_url_form() {
    let server = server_with_user();
    std::fs::create_dir_all(server.home(USER).join("pub/deep")).expect("dirs");
    let client = Client::with_password(PASS);
    let url = format!("ftp://alice@127.0.0.1:{}/pub/deep", server.port());
    client
        .run(
            &[
                &url,
                "-c",
                &format!(
                    "pwd; close; whoami; pwd; open 127.0.0.1 {}; login alice; pwd; bye",
                    server.port()
                ),
            ],
            None,
        )
        .fails("pwd after close", "pwd: ", "not connected")
        .has("Logged in as alice.\nNow in /pub/deep.\n/pub/deep\n")
        .has("not connected\n");
    let out = client.run(
        &[
            &url,
            "-c",
            &format!(
                "close; whoami; open 127.0.0.1:{}; login alice; pwd; whoami",
                server.port()
            ),
        ],
        None,
    );
    out.ok("reopen")
        .has(&format!("alice on {}", target(&server)));
    let pwds: Vec<&str> = out.stdout.lines().filter(|l| l.starts_with('/')).collect();
    assert_eq!(pwds, ["/"], "a new session starts at home:\n{}", out.stdout);
    // A URL with a directory that does not exist fails at start.
    let bad = format!("ftp://alice@127.0.0.1:{}/nowhere", server.port());
    let out = client.run(&[&bad, "-c", "pwd"], None);
    assert_eq!(out.code, Some(1), "{}", out.stderr);
    assert!(
        out.stderr
            .contains("ferry: cd /nowhere: cannot change to /nowhere: 550"),
        "{}",
        out.stderr
    );
}

#[test]
fn passwords_from_file_env_and_passwd() {
    let server = server_with_user();
    let mut client = Client::new();
    let pwfile = client.home.path().join("pw");
    std::fs::write(&pwfile, format!("{PASS}\nignored second line\n")).expect("pw file");
    let pw_arg = pwfile.to_str().expect("utf8 path");
    client
        .run(
            &[
                &target(&server),
                "--password-file",
                pw_arg,
                "-c",
                "login alice; whoami",
            ],
            None,
        )
        .ok("password file")
        .has("alice on ");
    // FERRY_PASSWORD wins over the file.
    std::fs::write(&pwfile, "wrong-password\n").expect("pw file");
    client.set("FERRY_PASSWORD", PASS);
    client
        .run(
            &[
                &target(&server),
                "--password-file",
                pw_arg,
                "-c",
                "login alice",
            ],
            None,
        )
        .ok("env first");
    // passwd in a script: the old password from FERRY_PASSWORD, the new from FERRY_NEW_PASSWORD.
    client.script(&server, "login alice; passwd").fails(
        "passwd without new",
        "passwd: ",
        "FERRY_NEW_PASSWORD",
    );
    client.set("FERRY_NEW_PASSWORD", "battery-staple-2");
    client
        .script(&server, "login alice; passwd")
        .ok("passwd")
        .has("Password changed.");
    client
        .script(&server, "login alice")
        .fails_with(4, "old password", "login alice: ", "530");
    let out = Client::with_password("battery-staple-2").script(&server, "login alice; whoami");
    out.ok("new password").has("alice on ");
    // A missing password file is named.
    Client::new()
        .run(
            &[
                &target(&server),
                "--password-file",
                "/nonexistent/pw",
                "-c",
                "login alice",
            ],
            None,
        )
        .fails("no pw file", "login alice: ", "/nonexistent/pw");
    Client::new().script(&server, "login alice").fails(
        "no password",
        "login alice: ",
        "no password",
    );
}

#[test]
fn errors_are_one_clear_line() {
    let server = server_with_user();
    let client = Client::with_password(PASS);
    // Connection refused: a port nobody listens on.
    let port = {
        let l = TcpListener::bind("127.0.0.1:0").expect("bind");
        l.local_addr().expect("addr").port()
    };
    let out = client.run(&[&format!("127.0.0.1:{port}"), "-c", "pwd"], None);
    out.fails_with(3, "refused", "cannot connect to ", "refused");
    assert!(out.stdout.is_empty(), "{}", out.stdout);
    client
        .run(&["-c", &format!("open 127.0.0.1 {port}")], None)
        .fails_with(
            3,
            "open refused",
            &format!("open 127.0.0.1 {port}: cannot connect"),
            "refused",
        );
    // Wrong password, not logged in, not connected.
    Client::with_password("wrong-one")
        .script(&server, "login alice")
        .fails_with(4, "wrong password", "login alice: ", "530")
        .lacks("Logged in");
    client
        .script(&server, "dir")
        .fails("not logged in", "dir: ", "530");
    client.run(&["-c", "pwd"], None).fails(
        "not connected",
        "pwd: ",
        "not connected; use: open HOST [PORT]",
    );
    // No such remote file: no local file is left behind.
    client
        .script(&server, "login alice; get missing.bin; pwd")
        .fails("no remote", "get missing.bin: ", "550");
    assert!(
        !client.local("missing.bin").exists(),
        "an empty local file was left"
    );
    client
        .script(&server, "login alice; get missing.bin other-name")
        .fails("no remote", "get missing.bin other-name: ", "550");
    assert!(!client.local("other-name").exists());
    // No such local file.
    client
        .script(&server, "login alice; put nothere.txt")
        .fails(
            "no local",
            "put nothere.txt: ",
            "cannot open nothere.txt: no such file",
        );
    assert!(!server.home(USER).join("nothere.txt").exists());
    // An unterminated quote.
    client.script(&server, "login alice; get 'oops").fails(
        "quote",
        "get 'oops: ",
        "unterminated quote",
    );
}

/// A client fed its script line by line, so the test can act between commands.
struct Driven {
    child: Child,
    stdin: ChildStdin,
    lines: mpsc::Receiver<String>,
}

impl Driven {
    fn start(client: &Client, args: &[&str]) -> Driven {
        let mut child = client
            .command(args)
            .stdin(Stdio::piped())
            .spawn()
            .expect("spawn ferry");
        let stdin = child.stdin.take().expect("stdin");
        let stdout = child.stdout.take().expect("stdout");
        let (tx, lines) = mpsc::channel();
        std::thread::spawn(move || {
            for line in BufReader::new(stdout).lines() {
                let Ok(line) = line else { break };
                if tx.send(line).is_err() {
                    break;
                }
            }
        });
        Driven {
            child,
            stdin,
            lines,
        }
    }

    /// Writes one command. ferry may already have stopped at a failed command (that is what
    /// some tests check), so a broken pipe is not an error here; the exit status tells.
    fn send(&mut self, line: &str) {
        let _ = writeln!(self.stdin, "{line}");
    }

    /// Waits (bounded) for a stdout line containing `needle`.
    fn wait_for(&self, needle: &str) {
        loop {
            match self.lines.recv_timeout(LINE_TIMEOUT) {
                Ok(line) if line.contains(needle) => return,
                Ok(_) => {}
                Err(e) => panic!("no line with {needle:?} ({e})"),
            }
        }
    }

    /// Closes stdin and collects the rest.
    fn finish(self) -> Run {
        drop(self.stdin);
        let mut child = self.child;
        let status = common::wait_timeout(&mut child, RUN_TIMEOUT).unwrap_or_else(|| {
            let _ = child.kill();
            panic!("ferry did not end");
        });
        let mut stderr = String::new();
        if let Some(mut err) = child.stderr.take() {
            std::io::Read::read_to_string(&mut err, &mut stderr).expect("stderr");
        }
        let stdout: Vec<String> = self.lines.try_iter().collect();
        Run {
            code: status.code(),
            stdout: stdout.join("\n"),
            stderr,
        }
    }
}

#[test]
fn server_going_away_mid_script() {
    let mut server = server_with_user();
    let client = Client::with_password(PASS);

    // The server stops while the script runs: the next command fails in one line.
    let mut ferry = Driven::start(&client, &[&target(&server)]);
    ferry.send("login alice");
    ferry.wait_for("Logged in as alice.");
    server.restart();
    ferry.send("pwd");
    ferry.send("mkdir never");
    let out = ferry.finish();
    assert_eq!(out.code, Some(1), "{}", out.stderr);
    let lines: Vec<&str> = out.stderr.lines().collect();
    assert_eq!(lines.len(), 1, "{}", out.stderr);
    assert!(
        lines[0].starts_with("ferry: pwd: ")
            && (lines[0].contains("421") || lines[0].contains("closed the connection")),
        "{}",
        lines[0]
    );
    assert!(!server.home(USER).join("never").exists());

    // In the same script, `open` reaches the restarted server (new port) and work goes on.
    let mut ferry = Driven::start(&client, &[&target(&server)]);
    ferry.send("login alice");
    ferry.wait_for("Logged in as alice.");
    server.restart();
    ferry.send(&format!("open 127.0.0.1 {}", server.port()));
    ferry.send("login alice");
    ferry.send("mkdir after-restart");
    ferry.send("whoami");
    ferry.wait_for(&format!("alice on {}", target(&server)));
    let out = ferry.finish();
    out.ok("open after restart");
    assert!(server.home(USER).join("after-restart").is_dir());
}

#[test]
fn active_mode_against_ferryd() {
    // PORT/EPRT: ferryd connects back to the client's own address.
    let server = server_with_user();
    let client = Client::with_password(PASS);
    let data = pseudo_random(300_000, 9);
    client.write("f.txt", &data);
    client
        .run(
            &[
                "--active",
                &target(&server),
                "-c",
                "login alice; put f.txt; dir; get f.txt x",
            ],
            None,
        )
        .ok("active put, dir, get")
        .has("| f.txt ");
    assert_eq!(read(&server.home(USER).join("f.txt")), data);
    assert_eq!(read(&client.local("x")), data);
}

#[test]
fn login_again_as_the_same_or_another_user() {
    let server = server_with_user();
    let client = Client::with_password(PASS);
    client.write("f.txt", b"carol's");
    client
        .script(
            &server,
            "register carol; login carol; put f.txt; login alice; whoami; put f.txt c.txt",
        )
        .ok("login again")
        .has("Already logged in as carol.")
        .has("Logged in as alice.")
        .has(&format!("alice on {}", target(&server)));
    assert_eq!(read(&server.home("carol").join("f.txt")), b"carol's");
    assert_eq!(read(&server.home(USER).join("c.txt")), b"carol's");
}

#[test]
fn register_checks_the_name_before_the_password() {
    let server = TestServer::start(&[]);
    // No password source at all: the bad name is refused before one is needed.
    Client::new().script(&server, "register Bad!").fails(
        "bad name",
        "register Bad!: ",
        "\"Bad!\": bad user name: use 1-32 of a-z 0-9 . _ -, starting with a letter or digit",
    );
    assert!(
        !server.audit_text().contains("SITE REGISTER"),
        "the name went to the server:\n{}",
        server.audit_text()
    );
}

#[test]
fn ls_options_and_dir_of_one_file() {
    let server = server_with_user();
    let client = Client::with_password(PASS);
    client.write("f.txt", b"12345");
    let out = client.script(
        &server,
        "login alice; put f.txt; mkdir sub; put f.txt sub/g.txt; ls -l; ls -la sub; dir f.txt",
    );
    out.ok("ls -l");
    let tables: Vec<&str> = out.stdout.split("| name ").skip(1).collect();
    assert_eq!(tables.len(), 3, "{}", out.stdout);
    assert!(tables[0].contains("| f.txt ") && tables[0].contains("| sub "));
    assert!(tables[1].contains("| g.txt ") && !tables[1].contains("| f.txt "));
    // The file alone: one row.
    assert_eq!(tables[2].matches("| file ").count(), 1, "{}", tables[2]);
    assert!(tables[2].contains("| f.txt | file | 5 "), "{}", tables[2]);
    client
        .script(&server, "login alice; dir missing.txt")
        .fails(
            "dir of nothing",
            "dir missing.txt: ",
            "cannot list missing.txt: 550",
        );
}

#[test]
fn netrc_logs_in_and_is_refused_when_others_can_read_it() {
    use std::os::unix::fs::PermissionsExt;
    let server = server_with_user();
    let client = Client::new();
    let netrc = client.home.path().join(".netrc");
    std::fs::write(
        &netrc,
        format!(
            "machine elsewhere.example login bob password nope\n\
             machine 127.0.0.1 login {USER} password {PASS}\n"
        ),
    )
    .expect("netrc");
    std::fs::set_permissions(&netrc, std::fs::Permissions::from_mode(0o600)).expect("chmod");
    // ftp's auto-login: the URL names no user, the netrc does, and its password is used.
    let out = client.script(&server, "whoami");
    out.ok("netrc auto-login");
    assert!(
        out.stdout.contains(&format!("{USER} on 127.0.0.1:")),
        "{}",
        out.stdout
    );
    let out = client.script(
        &server,
        "close; open 127.0.0.1 PORT; login; whoami"
            .replace("PORT", &server.port().to_string())
            .as_str(),
    );
    out.ok("login without a name");
    assert!(
        out.stdout.contains(&format!("{USER} on 127.0.0.1:")),
        "{}",
        out.stdout
    );
    // Readable by others: its passwords are not used, and ferry says why.
    std::fs::set_permissions(&netrc, std::fs::Permissions::from_mode(0o644)).expect("chmod");
    let out = client.script(&server, "whoami");
    assert_ne!(out.code, Some(0), "{}", out.stdout);
    assert!(
        out.stderr
            .contains("may be read by other users, so its passwords are not used (chmod 600"),
        "{}",
        out.stderr
    );
    assert!(out.stderr.contains("no password"), "{}", out.stderr);
}

#[test]
fn bookmarks_round_trip_without_passwords_and_open_by_name() {
    let server = server_with_user();
    let mut client = Client::with_password(PASS);
    let config = client.home.path().join("config");
    client.set("XDG_CONFIG_HOME", config.to_str().expect("utf-8"));
    let file = config.join("ferry").join("bookmarks.toml");
    // This connection, its user and directory.
    let out = client.script(&server, "login alice; mkdir pub; cd pub; bookmark add work");
    out.ok("bookmark add");
    let url = format!("ftp://{USER}@127.0.0.1:{}/pub", server.port());
    assert!(
        out.stdout.contains(&format!("Bookmark work: {url}.")),
        "{}",
        out.stdout
    );
    // A URL given with a password keeps only the user.
    let out = client.script(
        &server,
        &format!(
            "bookmark add root ftp://{USER}:{PASS}@127.0.0.1:{}/; bookmark list",
            server.port()
        ),
    );
    assert_eq!(out.code, Some(0), "{}", out.stderr);
    assert_eq!(
        out.stderr.trim(),
        "ferry: the password is not kept in a bookmark (~/.netrc can hold it)"
    );
    let saved = std::fs::read_to_string(&file).expect("bookmarks file");
    assert!(!saved.contains(PASS), "{saved}");
    assert!(
        out.stdout.contains(&format!("work\t{url}")),
        "{}",
        out.stdout
    );
    // `open NAME` and `ferry NAME` go there and log in.
    let out = client.run(&["-c", "open work; pwd; whoami"], None);
    out.ok("open work");
    assert!(out.stdout.contains("/pub"), "{}", out.stdout);
    assert!(
        out.stdout.contains(&format!("{USER} on 127.0.0.1:")),
        "{}",
        out.stdout
    );
    let out = client.run(&["work", "-c", "pwd"], None);
    out.ok("ferry work");
    assert!(out.stdout.contains("/pub"), "{}", out.stdout);
    let out = client.run(&["-c", "bookmark del work; bookmark list"], None);
    out.ok("bookmark del");
    assert!(!out.stdout.contains("work\t"), "{}", out.stdout);
    client.run(&["-c", "bookmark del work"], None).fails(
        "del of nothing",
        "bookmark del work: ",
        "no bookmark \"work\"",
    );
}

#[test]
fn verify_compares_digests_and_catches_a_corrupt_resume() {
    let server = server_with_user();
    let client = Client::with_password(PASS);
    let data = common::pseudo_random(300_007, 41);
    client.write("v.bin", &data);
    let out = client.script(
        &server,
        "login alice; put --verify v.bin; get --verify v.bin back.bin",
    );
    out.ok("verified both ways");
    let sha = {
        use sha2::Digest as _;
        hex::encode(sha2::Sha256::digest(&data))
    };
    assert_eq!(
        out.stdout
            .matches(&format!("v.bin: SHA-256 verified ({sha})."))
            .count(),
        2,
        "{}",
        out.stdout
    );
    // A partial local file whose bytes are not the server's: the resume completes it, the
    // digest says it is wrong, and the exit status too.
    let mut bad = data[..100_000].to_vec();
    bad[5] ^= 0xff;
    client.write("part.bin", &bad);
    client
        .script(&server, "login alice; get -c --verify v.bin part.bin")
        .fails(
            "a corrupt resume",
            "get -c --verify v.bin part.bin: ",
            "v.bin: verification failed: the SHA-256 digests differ",
        );
}

#[test]
fn pget_of_200_mib_over_4_connections_is_byte_exact() {
    let server = server_with_user();
    let client = Client::with_password(PASS);
    let data = common::pseudo_random(200 << 20, 43);
    std::fs::write(server.home(USER).join("big.bin"), &data).expect("seed");
    let out = client.script(&server, "login alice; pget -n 4 big.bin copy.bin");
    out.ok("pget");
    assert!(out.stdout.contains("(4 connections)"), "{}", out.stdout);
    assert!(read(&client.local("copy.bin")) == data, "the copy differs");
    assert!(
        !client.local("copy.bin.ferry-pget").exists(),
        "state file left"
    );
    // The four segments were four logins, each with its REST.
    let rests = |events: &[serde_json::Value]| {
        events
            .iter()
            .filter(|e| {
                e["command"]
                    .as_str()
                    .is_some_and(|c| c.starts_with("REST "))
            })
            .count()
    };
    // The audit log is written behind the sessions: wait for what the segments logged.
    let events = server.wait_audit("four logins and their RESTs", |events| {
        events.iter().filter(|e| e["event"] == "login_ok").count() >= 5 && rests(events) >= 3
    });
    let rests = rests(&events);
    assert_eq!(rests, 3, "segments 2 to 4 start with REST");
}

#[test]
fn an_interrupted_pget_goes_on_where_each_segment_stopped() {
    let server = TestServer::start(&["--max-download-rate-per-user", "4000000"]);
    drop(server.register_and_login(USER, PASS));
    let client = Client::with_password(PASS);
    let data = common::pseudo_random(24 << 20, 47);
    std::fs::write(server.home(USER).join("big.bin"), &data).expect("seed");
    let target = target(&server);
    let mut first = client
        .command(&[&target, "-c", "login alice; pget -n 3 big.bin"])
        .stdin(Stdio::null())
        .spawn()
        .expect("spawn ferry");
    // Killed (no chance to clean up) once the state file says some bytes are in.
    let state = client.local("big.bin.ferry-pget");
    let deadline = std::time::Instant::now() + Duration::from_secs(20);
    let partial = loop {
        let done: u64 = std::fs::read_to_string(&state)
            .ok()
            .and_then(|t| serde_json::from_str::<serde_json::Value>(&t).ok())
            .map(|plan| {
                plan["segments"]
                    .as_array()
                    .map(|all| all.iter().filter_map(|s| s["done"].as_u64()).sum())
                    .unwrap_or(0)
            })
            .unwrap_or(0);
        if done > 0 {
            break done;
        }
        assert!(std::time::Instant::now() < deadline, "no progress recorded");
        std::thread::sleep(Duration::from_millis(100));
    };
    first.kill().expect("kill ferry");
    let _ = first.wait();
    assert!(partial < data.len() as u64, "killed before the end");
    let out = client.script(&server, "login alice; pget -n 3 big.bin");
    out.ok("pget again");
    assert!(
        read(&client.local("big.bin")) == data,
        "the resumed copy differs"
    );
    assert!(!state.exists(), "state file left");
}

#[test]
fn dir_json_is_one_parseable_array_per_listing() {
    let server = server_with_user();
    let client = Client::with_password(PASS);
    client.write("f.txt", b"12345");
    let out = client.script(
        &server,
        "login alice; put f.txt; mkdir sub; dir --json; ls --json -l f.txt",
    );
    out.ok("dir --json");
    let arrays: Vec<serde_json::Value> = out
        .stdout
        .lines()
        .filter(|l| l.starts_with('['))
        .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("{e}: {l}")))
        .collect();
    assert_eq!(arrays.len(), 2, "{}", out.stdout);
    let listing = arrays[0].as_array().expect("array");
    let file = listing
        .iter()
        .find(|e| e["name"] == "f.txt")
        .unwrap_or_else(|| panic!("f.txt in {listing:?}"));
    assert_eq!(file["type"], "file");
    assert_eq!(file["size"], 5);
    let modified = file["modified"].as_str().expect("a time");
    assert!(
        modified.ends_with('Z') && modified.parse::<jiff::Timestamp>().is_ok(),
        "{modified}"
    );
    let sub = listing.iter().find(|e| e["name"] == "sub").expect("sub");
    assert_eq!(sub["type"], "dir");
    let one = arrays[1].as_array().expect("array");
    assert_eq!(one.len(), 1, "{one:?}");
    assert_eq!(one[0]["name"], "f.txt");
}

#[test]
fn changes_are_confirmed_unless_quiet() {
    let server = server_with_user();
    let client = Client::with_password(PASS);
    client.write("f.txt", b"x");
    let script = "login alice; mkdir d; cd d; cd ..; put f.txt; rename f.txt g.txt; rm g.txt; \
                  rmdir d";
    let out = client.script(&server, script);
    out.ok("confirmed");
    for line in [
        "Created directory /d.",
        "Now in /d.",
        "Now in /.",
        "Renamed f.txt to g.txt.",
        "Deleted g.txt.",
        "Removed directory d.",
    ] {
        assert!(
            out.stdout.lines().any(|l| l == line),
            "no line {line:?}:\n{}",
            out.stdout
        );
    }
    let quiet = client.run(&["-q", &target(&server), "-c", script], None);
    quiet.ok("quiet");
    assert_eq!(quiet.stdout, "", "-q printed");
    // Asked-for output still comes with -q.
    client
        .run(&["-q", &target(&server), "-c", "login alice; pwd"], None)
        .ok("quiet pwd");
}

#[test]
fn errors_name_the_file_and_read_as_sentences() {
    let server = server_with_user();
    let client = Client::with_password(PASS);
    client.write("f.txt", b"x");
    client.script(&server, "login alice; rm nothere").fails(
        "rm",
        "rm nothere: ",
        "cannot delete nothere: 550",
    );
    client.script(&server, "login alice; mkdir a/b/c").fails(
        "mkdir",
        "mkdir a/b/c: ",
        "cannot create a/b/c: 550",
    );
    client.script(&server, "login alice; cd nowhere").fails(
        "cd",
        "cd nowhere: ",
        "cannot change to nowhere: 550",
    );
    client.script(&server, "login alice; get nothere").fails(
        "get",
        "get nothere: ",
        "cannot download nothere: 550",
    );
    client.script(&server, "login alice; size nothere").fails(
        "size",
        "size nothere: ",
        "no size for nothere: 550",
    );
    client.script(&server, "login alice; stat nothere").fails(
        "stat",
        "stat nothere: ",
        "cannot show the status of nothere: ",
    );
    let out = client.script(&server, "login alice; put f.txt; get f.txt ./x/y");
    out.fails(
        "local",
        "get f.txt ./x/y: ",
        "cannot create ./x/y: no such directory",
    );
    assert!(!out.stderr.contains("os error"), "{}", out.stderr);
    let out = client.run(&["-c", "lcd /no/such/dir"], None);
    out.fails(
        "lcd",
        "lcd /no/such/dir: ",
        "cannot change to /no/such/dir: no such directory",
    );
    assert!(!out.stderr.contains("os error"), "{}", out.stderr);
}

#[test]
fn times_are_local() {
    let server = server_with_user();
    let mut client = Client::with_password(PASS);
    client.set("TZ", "Asia/Tokyo");
    let when = std::time::SystemTime::UNIX_EPOCH + Duration::from_secs(1_768_480_496);
    for file in [server.home(USER).join("r.txt"), client.local("l.txt")] {
        std::fs::write(&file, b"r").expect("seed");
        std::fs::File::options()
            .write(true)
            .open(&file)
            .and_then(|f| f.set_modified(when))
            .expect("set mtime");
    }
    // 2026-01-15 12:34:56 UTC is 21:34 in Tokyo.
    let row = |name: &str| format!("| {name} | file | 1    | 2026-01-15 21:34 |");
    client
        .script(&server, "login alice; dir; lls")
        .ok("dir in Tokyo")
        .has(&row("r.txt"))
        .has(&row("l.txt"));
    client.set("TZ", "UTC");
    client
        .script(&server, "login alice; dir r.txt")
        .ok("dir in UTC")
        .has("| r.txt | file | 1    | 2026-01-15 12:34 |");
}

#[test]
fn lcd_expands_the_home_directory() {
    let client = Client::new();
    let home = client.home.path().canonicalize().expect("home");
    let out = client.run(&["-c", "lcd ~; lpwd; lcd ~/work; lpwd; lcd; lpwd"], None);
    out.ok("lcd ~");
    let lines: Vec<&str> = out.stdout.lines().collect();
    let home = home.display().to_string();
    let work = format!("{home}/work");
    assert_eq!(
        lines,
        [&home, &home, &work, &work, &home, &home],
        "{}",
        out.stdout
    );
}
