//! The `ferry` client keeps step with the server after every kind of failure (issue 11): at
//! the interactive prompt on a pty, each failure is followed by commands whose replies are
//! checked, against ferryd and against pyftpdlib. The kinds: Ctrl-C during `put` over a file
//! that was there before (ferryd must keep it as it was; also over TLS), `get` into a missing
//! local directory, into a read-only one (as root, ferry runs unprivileged), onto a directory,
//! onto a full disk (/dev/full), `get` of a missing remote file and `put` of a missing local
//! file.

use crate::common;

use std::fs::{self, OpenOptions};
use std::io::Write;
use std::os::unix::fs::{OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use common::pty::{self, EXPECT_MS, Pty, temp_home};
use common::pyftpd::{self, PyFtpd};
use common::{FERRYD, TestServer, pseudo_random, run_bounded};
use tempfile::TempDir;

const USER: &str = "carol";
const PASS: &str = "carol-secret-words-7";
/// The remote file every test is about; there before each test.
const KEPT: &str = "kept.bin";
/// Larger than the socket buffers, so a download of it is under way when it fails.
const KEPT_LEN: usize = 2 * 1024 * 1024 + 5;

/// One of the servers under test.
enum Server {
    Ferryd(TestServer),
    Pyftpdlib(PyFtpd),
}

impl Server {
    /// ferryd, then pyftpdlib.
    fn both() -> [Server; 2] {
        [Server::ferryd(&[]), Server::pyftpdlib()]
    }

    /// ferryd started with `args`, with an account and [`KEPT`] in its home.
    fn ferryd(args: &[&str]) -> Server {
        let ferryd = TestServer::start(args);
        drop(ferryd.register_and_login(USER, PASS));
        Server::Ferryd(ferryd).seeded()
    }

    /// pyftpdlib with [`KEPT`] in its home.
    fn pyftpdlib() -> Server {
        Server::Pyftpdlib(PyFtpd::start()).seeded()
    }

    fn seeded(self) -> Server {
        fs::write(self.home().join(KEPT), kept_content()).expect("seed the remote file");
        self
    }

    fn name(&self) -> &'static str {
        match self {
            Server::Ferryd(_) => "ferryd",
            Server::Pyftpdlib(_) => "pyftpdlib",
        }
    }

    fn home(&self) -> PathBuf {
        match self {
            Server::Ferryd(s) => s.home(USER),
            Server::Pyftpdlib(s) => s.home.clone(),
        }
    }

    /// ferry at its prompt in `home`, logged in; run as user `id` when given.
    fn session(&self, home: &TempDir, id: Option<u32>) -> Pty {
        let (port, user, pass) = match self {
            Server::Ferryd(s) => (s.port(), USER, PASS),
            Server::Pyftpdlib(s) => (s.port, pyftpd::USER, pyftpd::PASS),
        };
        let mut pty = Pty::spawn_as(home, &[&format!("127.0.0.1:{port}")], id);
        pty.expect("220 ");
        pty.prompt();
        pty.login(user, pass);
        pty
    }

    /// The next commands get their own replies: `size` says what the server holds now, `pwd`
    /// says `/`.
    fn assert_in_step(&self, pty: &mut Pty, after: &str) {
        let name = self.name();
        let out = pty.run(&format!("size {KEPT}"));
        let held = fs::metadata(self.home().join(KEPT))
            .expect("the remote file")
            .len();
        assert_eq!(
            out.trim(),
            held.to_string(),
            "{name}: `size` after {after} got another reply:\n{}",
            pty.transcript
        );
        let out = pty.run("pwd");
        assert_eq!(
            out.trim(),
            "/",
            "{name}: `pwd` after {after} got another reply:\n{}",
            pty.transcript
        );
    }
}

fn kept_content() -> Vec<u8> {
    pseudo_random(KEPT_LEN, 11)
}

/// Runs `command` at a prompt logged in to each server; it must fail with an error that
/// names `error` (the local path, or the server's code), and the session must stay in step.
fn fails_in_step(prepare: impl Fn(&Path), command: &str, error: &str) {
    fails_in_step_as(None, prepare, command, error);
}

/// [`fails_in_step`] with ferry run as user `id` when given.
fn fails_in_step_as(id: Option<u32>, prepare: impl Fn(&Path), command: &str, error: &str) {
    for server in Server::both() {
        let home = temp_home();
        prepare(home.path());
        let mut pty = server.session(&home, id);
        let out = pty.run(command);
        assert!(
            out.contains("ferry: ") && out.contains(error),
            "{}: `{command}` did not fail with {error:?}:\n{out}",
            server.name()
        );
        server.assert_in_step(&mut pty, command);
        pty.exit();
    }
}

#[test]
fn get_into_a_missing_local_directory() {
    fails_in_step(
        |_| {},
        "get kept.bin no/such/dir/kept.bin",
        "no/such/dir/kept.bin",
    );
}

#[test]
fn get_into_a_read_only_local_directory() {
    let make_read_only = |home: &Path| {
        // An unprivileged ferry keeps its history there.
        fs::set_permissions(home, fs::Permissions::from_mode(0o777)).expect("open home");
        let dir = home.join("ro");
        fs::create_dir(&dir).expect("local dir");
        fs::set_permissions(&dir, fs::Permissions::from_mode(0o555)).expect("read-only");
    };
    let probe = temp_home();
    make_read_only(probe.path());
    // Root writes into any directory, so then ferry runs as a user without privileges, who
    // must be able to reach the binary.
    let id = if fs::File::create(probe.path().join("ro/probe")).is_ok() {
        let ferry = Path::new(pty::FERRY);
        let reachable = ferry.ancestors().skip(1).all(|dir| mode(dir) & 0o001 != 0)
            && mode(ferry) & 0o005 == 0o005;
        if !reachable {
            println!(
                "skipped: {} is out of reach of an unprivileged user",
                pty::FERRY
            );
            return;
        }
        Some(UNPRIVILEGED)
    } else {
        None
    };
    fails_in_step_as(
        id,
        make_read_only,
        "get kept.bin ro/kept.bin",
        "ro/kept.bin",
    );
}

/// `nobody` on Debian; the kernel needs no account behind a user id.
const UNPRIVILEGED: u32 = 65534;

fn mode(path: &Path) -> u32 {
    fs::metadata(path).map_or(0, |m| m.permissions().mode())
}

#[test]
fn get_onto_a_local_directory() {
    fails_in_step(
        |home| fs::create_dir(home.join("a-local-dir")).expect("local dir"),
        "get kept.bin a-local-dir",
        "a-local-dir",
    );
}

#[test]
fn get_onto_a_full_disk() {
    // Every write to /dev/full fails with ENOSPC, as on a full disk.
    fails_in_step(|_| {}, "get kept.bin /dev/full", "/dev/full");
}

#[test]
fn get_of_a_missing_remote_file() {
    fails_in_step(|_| {}, "get nothing.bin", "550");
}

#[test]
fn put_of_a_missing_local_file() {
    fails_in_step(|_| {}, "put nothing.bin kept.bin", "nothing.bin");
}

#[test]
fn ctrl_c_during_put_keeps_the_file_that_was_there() {
    for server in Server::both() {
        let home = temp_home();
        // Started first so that it is dropped last: ferry's end frees a feeder stuck in a write.
        let feeder = Feeder::start(&home);
        let pty = server.session(&home, None);
        abort_a_put(&server, feeder, pty);
    }
}

#[test]
fn ctrl_c_during_put_over_tls() {
    // TLS has no urgent data: the Synch goes inline, and the TLS data connection is reset.
    let certs = temp_home();
    let out = run_bounded(
        Command::new(FERRYD)
            .args(["cert", "generate", "--out"])
            .arg(certs.path())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("spawn ferryd cert generate"),
        Duration::from_millis(EXPECT_MS),
    );
    assert!(out.status.success(), "ferryd cert generate: {out:?}");
    let (cert, key) = (certs.path().join("cert.pem"), certs.path().join("key.pem"));
    let [cert, key] = [&cert, &key].map(|p| p.to_str().expect("UTF-8 temp path"));
    let server = Server::ferryd(&["--tls-cert", cert, "--tls-key", key]);
    let Server::Ferryd(ferryd) = &server else {
        unreachable!("started as ferryd")
    };
    let target = format!("127.0.0.1:{}", ferryd.port());
    let home = temp_home();
    let feeder = Feeder::start(&home);
    let mut pty = Pty::spawn(&home, &["--tls", "--ca-file", cert, &target]);
    pty.expect("220 ");
    pty.prompt();
    pty.login(USER, PASS);
    abort_a_put(&server, feeder, pty);
}

/// `put` from the feeder's FIFO over [`KEPT`], Ctrl-C once bytes flow; then ferryd still has
/// the old file and the session is in step.
fn abort_a_put(server: &Server, feeder: Feeder, mut pty: Pty) {
    let name = server.name();
    pty.line(&format!("put {FIFO} {KEPT}"));
    feeder
        .flowing
        .recv_timeout(Duration::from_millis(EXPECT_MS))
        .unwrap_or_else(|_| panic!("{name}: the upload did not start:\n{}", pty.transcript));
    pty.session.send_control('c').expect("send Ctrl-C");
    pty.expect("transfer aborted");
    pty.prompt();
    let _ = feeder.stop.send(());
    if let Server::Ferryd(_) = server {
        // ABOR came before the end of the file: the upload is rolled back.
        assert!(
            fs::read(server.home().join(KEPT)).expect("kept") == kept_content(),
            "ferryd: the aborted upload replaced {KEPT}:\n{}",
            pty.transcript
        );
    }
    server.assert_in_step(&mut pty, "Ctrl-C during put");
    pty.exit();
}

/// The FIFO a [`Feeder`] feeds, in ferry's local directory.
const FIFO: &str = "endless.fifo";

/// Feeds a FIFO that ferry uploads, then stalls without ending it: the upload runs until it is
/// aborted.
struct Feeder {
    /// Says when the upload is under way (ferry has read more than the pipe holds).
    flowing: mpsc::Receiver<()>,
    stop: mpsc::Sender<()>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl Feeder {
    /// Makes [`FIFO`] in `home` and feeds it once ferry opens it.
    fn start(home: &TempDir) -> Feeder {
        let fifo = home.path().join(FIFO);
        nix::unistd::mkfifo(&fifo, nix::sys::stat::Mode::S_IRWXU).expect("mkfifo");
        let (flowing_tx, flowing) = mpsc::channel();
        let (stop, stop_rx) = mpsc::channel::<()>();
        let thread = std::thread::spawn(move || {
            let Some(mut pipe) = open_writer(&fifo) else {
                return;
            };
            if pipe.write_all(&vec![0x5a; 1 << 20]).is_err() {
                return;
            }
            let _ = flowing_tx.send(());
            // Then the source stalls, as a pipe or FIFO does: ferry must see the Ctrl-C while
            // nothing comes to read. The pipe stays open until told (bounded) or ferry closes it.
            let _ = stop_rx.recv_timeout(Duration::from_millis(4 * EXPECT_MS));
            drop(pipe);
        });
        Feeder {
            flowing,
            stop,
            thread: Some(thread),
        }
    }
}

impl Drop for Feeder {
    fn drop(&mut self) {
        let _ = self.stop.send(());
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}

/// Opens the FIFO for writing once ferry has opened it for reading (bounded), blocking after.
fn open_writer(fifo: &Path) -> Option<fs::File> {
    let deadline = Instant::now() + Duration::from_millis(EXPECT_MS);
    while Instant::now() < deadline {
        // Without a reader, a non-blocking open fails (ENXIO) instead of waiting forever.
        match OpenOptions::new()
            .write(true)
            .custom_flags(nix::fcntl::OFlag::O_NONBLOCK.bits())
            .open(fifo)
        {
            Ok(pipe) => {
                nix::fcntl::fcntl(
                    &pipe,
                    nix::fcntl::FcntlArg::F_SETFL(nix::fcntl::OFlag::empty()),
                )
                .ok()?;
                return Some(pipe);
            }
            Err(_) => std::thread::sleep(Duration::from_millis(10)),
        }
    }
    None
}
