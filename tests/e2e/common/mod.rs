//! Shared harness for the end-to-end tests: a `ferryd` child process on a fresh temporary data
//! directory and an OS-chosen port, a raw control-channel client that reads multi-line replies,
//! and helpers to wait (always bounded) for the audit log.

pub mod browser;
pub mod haproxy;
pub mod pty;
pub mod pyftpd;
pub mod s3;
pub mod vsftpd;

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{Shutdown, SocketAddr, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Output, Stdio};
use std::sync::mpsc;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use serde_json::Value;
use tempfile::TempDir;

/// Path of the server binary built by cargo for these tests.
pub const FERRYD: &str = env!("CARGO_BIN_EXE_ferryd");
/// How long the server may take to print its `listening on` line.
const START_TIMEOUT: Duration = Duration::from_secs(20);
/// How long a stopped server may take to exit.
const STOP_TIMEOUT: Duration = Duration::from_secs(20);
/// The time zone [`ferry`] runs the client in (UTC+9, no daylight saving time): listing times
/// are shown in the local zone, and a fixed one lets a test say which.
pub const CLIENT_ZONE: &str = "Asia/Tokyo";
/// Bound on one run of a real FTP client.
const CLIENT_TIMEOUT: Duration = Duration::from_secs(40);
/// Read timeout on every control and data socket of the raw client.
pub const IO_TIMEOUT: Duration = Duration::from_secs(15);
/// Bound for waits on the audit log (flushed at least once a second).
pub const AUDIT_TIMEOUT: Duration = Duration::from_secs(10);

/// A running `ferryd` on its own temporary data directory.
pub struct TestServer {
    child: Option<Child>,
    addr: SocketAddr,
    data_dir: TempDir,
    extra_args: Vec<String>,
    /// Environment the server and the operator commands get (the S3 credentials).
    env: Vec<(String, String)>,
    stderr: Arc<Mutex<Vec<String>>>,
    /// Whether the hourly registration cap is lifted (every test registers from 127.0.0.1).
    lift_caps: bool,
    /// The S3 server, for a server on S3 storage.
    s3: Option<s3::S3Bucket>,
}

impl TestServer {
    /// Starts `ferryd` on `127.0.0.1:0` with a fresh data dir and the given extra flags.
    pub fn start(extra_args: &[&str]) -> TestServer {
        TestServer::spawn_new(extra_args, true)
    }

    /// Starts `ferryd` on the default configuration: only the listen address (a free port),
    /// the data dir and the PBKDF2 rounds are set.
    pub fn start_on_defaults() -> TestServer {
        TestServer::spawn_new(&[], false)
    }

    fn spawn_new(extra_args: &[&str], lift_caps: bool) -> TestServer {
        let data_dir = tempfile::Builder::new()
            .prefix("ferry-e2e-")
            .tempdir()
            .expect("create temp data dir");
        let extra_args: Vec<String> = extra_args.iter().map(|s| s.to_string()).collect();
        let stderr = Arc::new(Mutex::new(Vec::new()));
        let (child, addr) = spawn(data_dir.path(), &extra_args, &[], lift_caps, &stderr);
        TestServer {
            child: Some(child),
            addr,
            data_dir,
            extra_args,
            env: Vec::new(),
            stderr,
            lift_caps,
            s3: None,
        }
    }

    /// The control-channel address.
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// The server's process id (for /proc/PID/status and /proc/PID/fd).
    pub fn pid(&self) -> u32 {
        self.child.as_ref().expect("server is running").id()
    }

    /// The control-channel port.
    pub fn port(&self) -> u16 {
        self.addr.port()
    }

    /// The data directory (accounts/, home/, log/, tmp/).
    pub fn data_dir(&self) -> &Path {
        self.data_dir.path()
    }

    /// A user's home directory: under the data dir, or where the S3 server keeps the user's
    /// objects.
    pub fn home(&self, user: &str) -> PathBuf {
        match &self.s3 {
            Some(bucket) => bucket.home(user),
            None => self.data_dir().join("home").join(user),
        }
    }

    /// Everything the server wrote to stderr so far.
    pub fn stderr(&self) -> String {
        self.stderr.lock().expect("stderr lock").join("\n")
    }

    /// Waits (bounded) until the server's stderr contains `needle`.
    pub fn wait_stderr(&self, needle: &str) {
        let deadline = Instant::now() + START_TIMEOUT;
        while !self.stderr().contains(needle) {
            assert!(
                Instant::now() < deadline,
                "stderr never showed {needle:?}:\n{}",
                self.stderr()
            );
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// The audit log as parsed JSON objects (possibly not yet flushed: see [`Self::wait_audit`]).
    pub fn audit_events(&self) -> Vec<Value> {
        read_audit(self.data_dir())
    }

    /// The raw text of `log/audit.jsonl`.
    pub fn audit_text(&self) -> String {
        std::fs::read_to_string(self.data_dir().join("log/audit.jsonl")).unwrap_or_default()
    }

    /// Polls the audit log until `pred` holds over all events; panics after [`AUDIT_TIMEOUT`].
    pub fn wait_audit(&self, what: &str, pred: impl Fn(&[Value]) -> bool) -> Vec<Value> {
        wait_audit_in(self.data_dir(), what, pred)
    }

    /// Sends SIGTERM, waits (bounded) for the process to exit and asserts exit status 0.
    pub fn stop(&mut self) {
        let status = self.terminate();
        assert!(
            status.success(),
            "ferryd exited with {status}; stderr:\n{}",
            self.stderr()
        );
    }

    /// Sends SIGTERM and waits (bounded) for the exit status, without judging it.
    pub fn terminate(&mut self) -> ExitStatus {
        self.send_sigterm();
        self.wait_exit()
    }

    /// Sends SIGTERM without waiting for the process to exit.
    pub fn send_sigterm(&self) {
        self.signal("TERM");
    }

    /// Sends the signal `name` (`HUP`, `TERM`).
    pub fn signal(&self, name: &str) {
        let child = self.child.as_ref().expect("server is running");
        let pid = child.id().to_string();
        require_program("kill");
        let kill = Command::new("kill")
            .args([&format!("-{name}"), &pid])
            .status()
            .expect("run kill");
        assert!(kill.success(), "kill -{name} {pid} failed");
    }

    /// Waits (bounded) for the process to exit and returns its status; kills it on timeout.
    pub fn wait_exit(&mut self) -> ExitStatus {
        let mut child = self.child.take().expect("server is running");
        match wait_timeout(&mut child, STOP_TIMEOUT) {
            Some(status) => status,
            None => {
                let _ = child.kill();
                let _ = child.wait();
                panic!(
                    "ferryd did not exit within {STOP_TIMEOUT:?} of SIGTERM; stderr:\n{}",
                    self.stderr()
                );
            }
        }
    }

    /// Stops the server, then starts it again on the same data dir and flags (new port).
    pub fn restart(&mut self) {
        self.stop();
        let (child, addr) = spawn(
            self.data_dir.path(),
            &self.extra_args,
            &self.env,
            self.lift_caps,
            &self.stderr,
        );
        self.child = Some(child);
        self.addr = addr;
    }

    /// Kills the server with SIGKILL (a crash: nothing is flushed or cleaned up), then starts
    /// it again on the same data dir and flags (new port).
    pub fn crash_restart(&mut self) {
        let mut child = self.child.take().expect("server is running");
        child.kill().expect("kill -9 ferryd");
        let _ = child.wait();
        let (child, addr) = spawn(
            self.data_dir.path(),
            &self.extra_args,
            &self.env,
            self.lift_caps,
            &self.stderr,
        );
        self.child = Some(child);
        self.addr = addr;
    }

    /// A raw control connection, greeting read and returned.
    pub fn connect(&self) -> (Control, Reply) {
        let mut ctl = Control::connect(self.addr);
        let greeting = ctl.reply();
        (ctl, greeting)
    }

    /// A raw control connection with `user` registered (SITE REGISTER) and logged in.
    pub fn register_and_login(&self, user: &str, pass: &str) -> Control {
        let (mut ctl, greeting) = self.connect();
        assert_eq!(greeting.code, 220, "{greeting:?}");
        ctl.expect(&format!("SITE REGISTER {user} {pass}"), 200);
        ctl.login(user, pass);
        ctl
    }

    /// Runs an operator command (`ferryd user ...`, `ferryd log ...`) on this data dir (and,
    /// on S3, with the bucket's configuration file and credentials).
    pub fn admin(&self, args: &[&str], stdin: Option<&str>) -> Output {
        let mut all: Vec<String> = args.iter().map(|s| s.to_string()).collect();
        // A node of a cluster has the file without a bucket of its own.
        let config = self.data_dir().join(s3::CONFIG);
        if self.s3.is_some() || config.exists() {
            all.extend(["--config".to_owned(), config.display().to_string()]);
        }
        let all: Vec<&str> = all.iter().map(String::as_str).collect();
        admin(self.data_dir(), &all, stdin, &self.env)
    }
}

impl Drop for TestServer {
    fn drop(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

/// Spawns ferryd and waits (bounded) for its `listening on` line; stderr keeps being drained
/// into `log` by a thread so the pipe never fills.
fn spawn(
    data_dir: &Path,
    extra: &[String],
    env: &[(String, String)],
    lift_caps: bool,
    log: &Arc<Mutex<Vec<String>>>,
) -> (Child, SocketAddr) {
    // Every test registers from 127.0.0.1: lift the hourly cap unless the test sets its own.
    const CAP: &str = "--max-registrations-per-ip-per-hour";
    let cap: &[&str] = if !lift_caps || extra.iter().any(|a| a == CAP) {
        &[]
    } else {
        &[CAP, "100000"]
    };
    // Cheap hashes keep the tests fast, unless a test measures hashing.
    const ROUNDS: &str = "--pbkdf2-iterations";
    let rounds: &[&str] = if extra.iter().any(|a| a == ROUNDS) {
        &[]
    } else {
        &[ROUNDS, "1000"]
    };
    let mut child = Command::new(FERRYD)
        .arg("--listen")
        .arg("127.0.0.1:0")
        .arg("--data-dir")
        .arg(data_dir)
        .args(rounds)
        .args(cap)
        .args(extra)
        .envs(env.iter().map(|(k, v)| (k, v)))
        .env("RUST_LOG", "info")
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawn ferryd");
    let stderr = child.stderr.take().expect("piped stderr");
    let (tx, rx) = mpsc::channel::<SocketAddr>();
    let sink = Arc::clone(log);
    std::thread::spawn(move || {
        let mut tx = Some(tx);
        for line in BufReader::new(stderr).lines() {
            let Ok(line) = line else { break };
            if let Some(rest) = line.split("listening on ").nth(1)
                && let Some(tx) = tx.take()
                && let Ok(addr) = rest.trim().parse()
            {
                let _ = tx.send(addr);
            }
            sink.lock().expect("stderr lock").push(line);
        }
    });
    match rx.recv_timeout(START_TIMEOUT) {
        Ok(addr) => (child, addr),
        Err(e) => {
            let _ = child.kill();
            let _ = child.wait();
            panic!(
                "ferryd did not report `listening on` ({e}); stderr so far:\n{}",
                log.lock().expect("stderr lock").join("\n")
            );
        }
    }
}

/// Waits up to `timeout` for the child to exit.
pub fn wait_timeout(child: &mut Child, timeout: Duration) -> Option<ExitStatus> {
    let deadline = Instant::now() + timeout;
    loop {
        if let Some(status) = child.try_wait().expect("try_wait") {
            return Some(status);
        }
        if Instant::now() >= deadline {
            return None;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// Runs `ferryd ARGS --data-dir DIR` with `env` added to the environment, feeding `stdin` if
/// given, bounded in time.
pub fn admin(
    data_dir: &Path,
    args: &[&str],
    stdin: Option<&str>,
    env: &[(String, String)],
) -> Output {
    let mut child = Command::new(FERRYD)
        .args(args)
        .arg("--data-dir")
        .arg(data_dir)
        .envs(env.iter().map(|(k, v)| (k, v)))
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawn ferryd admin command");
    {
        let mut pipe = child.stdin.take().expect("piped stdin");
        if let Some(text) = stdin {
            pipe.write_all(text.as_bytes()).expect("write stdin");
        }
    }
    run_bounded(child, Duration::from_secs(30))
}

/// What one `ferry` client run left behind, with assertions that show all of it on failure.
pub struct Run {
    /// Exit status (None: killed by a signal).
    pub code: Option<i32>,
    /// Standard output.
    pub stdout: String,
    /// Standard error.
    pub stderr: String,
}

impl From<Output> for Run {
    fn from(out: Output) -> Run {
        Run {
            code: out.status.code(),
            stdout: String::from_utf8_lossy(&out.stdout).into_owned(),
            stderr: String::from_utf8_lossy(&out.stderr).into_owned(),
        }
    }
}

impl Run {
    /// Exit status 0 and nothing on stderr.
    pub fn ok(&self, what: &str) -> &Run {
        assert_eq!(
            self.code,
            Some(0),
            "{what}: expected success\nstdout:\n{}\nstderr:\n{}",
            self.stdout,
            self.stderr
        );
        assert!(self.stderr.is_empty(), "{what}: stderr:\n{}", self.stderr);
        self
    }

    /// Exit status 1 and exactly one stderr line `ferry: <prefix>...` containing `needle`.
    pub fn fails(&self, what: &str, prefix: &str, needle: &str) -> &Run {
        self.fails_with(1, what, prefix, needle)
    }

    /// Exit status `code` and exactly one stderr line `ferry: <prefix>...` containing
    /// `needle`.
    pub fn fails_with(&self, code: i32, what: &str, prefix: &str, needle: &str) -> &Run {
        assert_eq!(
            self.code,
            Some(code),
            "{what}: expected exit {code}\nstdout:\n{}\nstderr:\n{}",
            self.stdout,
            self.stderr
        );
        let lines: Vec<&str> = self.stderr.lines().collect();
        assert_eq!(
            lines.len(),
            1,
            "{what}: one error line wanted:\n{}",
            self.stderr
        );
        assert!(
            lines[0].starts_with(&format!("ferry: {prefix}")) && lines[0].contains(needle),
            "{what}: wanted `ferry: {prefix}...{needle}...`, got {:?}",
            lines[0]
        );
        self
    }

    /// stdout contains `needle`.
    pub fn has(&self, needle: &str) -> &Run {
        assert!(
            self.stdout.contains(needle),
            "stdout lacks {needle:?}:\n{}\nstderr:\n{}",
            self.stdout,
            self.stderr
        );
        self
    }

    /// stdout does not contain `needle`.
    pub fn lacks(&self, needle: &str) -> &Run {
        assert!(
            !self.stdout.contains(needle),
            "stdout has {needle:?}:\n{}",
            self.stdout
        );
        self
    }
}

/// Collects a child's output, killing it if it runs longer than `timeout`.
pub fn run_bounded(mut child: Child, timeout: Duration) -> Output {
    let mut out = child.stdout.take();
    let mut err = child.stderr.take();
    let out_t = std::thread::spawn(move || {
        let mut buf = Vec::new();
        if let Some(out) = out.as_mut() {
            let _ = out.read_to_end(&mut buf);
        }
        buf
    });
    let err_t = std::thread::spawn(move || {
        let mut buf = Vec::new();
        if let Some(err) = err.as_mut() {
            let _ = err.read_to_end(&mut buf);
        }
        buf
    });
    let status = match wait_timeout(&mut child, timeout) {
        Some(status) => status,
        None => {
            let _ = child.kill();
            let _ = child.wait();
            panic!("child process ran longer than {timeout:?}");
        }
    };
    Output {
        status,
        stdout: out_t.join().expect("stdout reader"),
        stderr: err_t.join().expect("stderr reader"),
    }
}

/// Parses the whole lines of `log/audit.jsonl` under `data_dir`; a missing file is an empty
/// log.
pub fn read_audit(data_dir: &Path) -> Vec<Value> {
    let text = std::fs::read_to_string(data_dir.join("log/audit.jsonl")).unwrap_or_default();
    // Only whole lines: a batch the server is writing right now may end mid-line.
    let whole = text.rfind('\n').map_or("", |end| &text[..end]);
    whole
        .lines()
        .filter(|l| !l.trim().is_empty())
        .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("bad audit line {l:?}: {e}")))
        .collect()
}

/// Polls the audit log under `data_dir` until `pred` holds; panics after [`AUDIT_TIMEOUT`].
pub fn wait_audit_in(data_dir: &Path, what: &str, pred: impl Fn(&[Value]) -> bool) -> Vec<Value> {
    let deadline = Instant::now() + AUDIT_TIMEOUT;
    loop {
        let events = read_audit(data_dir);
        if pred(&events) {
            return events;
        }
        if Instant::now() >= deadline {
            panic!(
                "audit log never showed {what} within {AUDIT_TIMEOUT:?}; it holds:\n{}",
                events
                    .iter()
                    .map(Value::to_string)
                    .collect::<Vec<_>>()
                    .join("\n")
            );
        }
        std::thread::sleep(Duration::from_millis(100));
    }
}

/// True if some event has every `(key, value)` pair given (values compared as JSON).
pub fn has_event(events: &[Value], fields: &[(&str, Value)]) -> bool {
    events
        .iter()
        .any(|e| fields.iter().all(|(k, v)| e.get(*k) == Some(v)))
}

/// Registers `user` with `SITE REGISTER` over a plain control connection and leaves.
pub fn register(server: &TestServer, user: &str, pass: &str) {
    let mut ctl = server.register_and_login(user, pass);
    ctl.expect("QUIT", 221);
}

/// Runs a real FTP client, `program ARGS`, in `cwd` with a UTF-8 locale and `HOME=cwd`, bounded
/// in time. Certificate overrides from the environment are dropped, so TLS clients see only the
/// system store and what the test passes them.
pub fn run_client(program: &str, args: &[&str], cwd: &Path) -> Output {
    run_client_with_input(program, args, cwd, None)
}

/// [`run_client`] with `input` on the client's standard input (then closed), for clients such
/// as tnftp and inetutils `ftp` that read their commands there.
pub fn run_client_with_input(
    program: &str,
    args: &[&str],
    cwd: &Path,
    input: Option<&str>,
) -> Output {
    run_client_within(program, args, cwd, input, CLIENT_TIMEOUT)
}

/// [`run_client_with_input`] bounded by `timeout` instead.
pub fn run_client_within(
    program: &str,
    args: &[&str],
    cwd: &Path,
    input: Option<&str>,
    timeout: Duration,
) -> Output {
    require_program(program);
    let mut child = Command::new(program)
        .args(args)
        .current_dir(cwd)
        .env("LC_ALL", "C.UTF-8")
        .env("LANG", "C.UTF-8")
        .env("HOME", cwd)
        .env_remove("SSL_CERT_FILE")
        .env_remove("SSL_CERT_DIR")
        .stdin(if input.is_some() {
            Stdio::piped()
        } else {
            Stdio::null()
        })
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap_or_else(|e| panic!("run {program}: {e}"));
    if let (Some(input), Some(mut stdin)) = (input, child.stdin.take()) {
        // Small scripts fit the pipe; a client that exits early only makes this write fail.
        let _ = stdin.write_all(input.as_bytes());
    }
    run_bounded(child, timeout)
}

/// Runs the `ferry` client, `ferry ARGS`, in `cwd` with `FERRY_PASSWORD=pass`, `HOME` and its
/// history in `cwd`, the time zone [`CLIENT_ZONE`] and no standard input, bounded in time.
/// Certificate overrides from the environment are dropped, as in [`run_client`].
pub fn ferry(cwd: &Path, pass: &str, args: &[&str]) -> Run {
    ferry_within(cwd, pass, args, CLIENT_TIMEOUT)
}

/// [`ferry`] with its own bound, for long runs (a mirror of a big tree).
pub fn ferry_within(cwd: &Path, pass: &str, args: &[&str], timeout: Duration) -> Run {
    let child = Command::new(pty::FERRY)
        .args(args)
        .current_dir(cwd)
        .env("HOME", cwd)
        .env("FERRY_HISTORY", cwd.join(".history"))
        .env("FERRY_PASSWORD", pass)
        .env("TZ", CLIENT_ZONE)
        .env_remove("FERRY_NEW_PASSWORD")
        // A developer's own configuration must not change what the tests see.
        .env_remove("FERRY_CONFIG")
        .env_remove("XDG_CONFIG_HOME")
        .env_remove("SSL_CERT_FILE")
        .env_remove("SSL_CERT_DIR")
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawn ferry");
    Run::from(run_bounded(child, timeout))
}

/// Fails the test with one line unless `program` is on `PATH`: a fresh machine lacks the
/// clients and tools the tests drive, and `scripts/test` installs them.
pub fn require_program(program: &str) {
    use std::os::unix::fs::PermissionsExt;
    let found = std::env::var_os("PATH").is_some_and(|paths| {
        std::env::split_paths(&paths).any(|dir| {
            std::fs::metadata(dir.join(program))
                .is_ok_and(|m| m.is_file() && m.permissions().mode() & 0o111 != 0)
        })
    });
    assert!(
        found,
        "{program} is not installed: run scripts/test, which installs it"
    );
}

/// Like [`require_program`] for a Python module (`python3 -c "import MODULE"`).
pub fn require_python_module(module: &str) {
    require_program("python3");
    let imported = Command::new("python3")
        .args(["-c", &format!("import {module}")])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .is_ok_and(|s| s.success());
    assert!(
        imported,
        "the Python module {module} is not installed: run scripts/test, which installs it"
    );
}

/// Panics with the client's output unless it exited 0.
pub fn assert_success(out: &Output, what: &str) {
    assert!(
        out.status.success(),
        "{what}: exit {}\nstdout:\n{}\nstderr:\n{}",
        out.status,
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
}

/// Asserts that some audit event has every `(key, value)` pair; the message lists the log.
pub fn assert_event(events: &[Value], fields: &[(&str, Value)]) {
    assert!(
        has_event(events, fields),
        "no event with {fields:?} in the audit log:\n{}",
        events
            .iter()
            .map(Value::to_string)
            .collect::<Vec<_>>()
            .join("\n")
    );
}

/// Asserts an upload or download event of `path` with `bytes` bytes, completed with 226.
pub fn assert_transfer(events: &[Value], user: &str, kind: &str, path: &str, bytes: usize) {
    assert_event(
        events,
        &[
            ("event", serde_json::json!(kind)),
            ("user", serde_json::json!(user)),
            ("path", serde_json::json!(path)),
            ("bytes", serde_json::json!(bytes)),
            ("code", serde_json::json!(226)),
        ],
    );
}

impl TestServer {
    /// Waits until `user` has `n` closed sessions in the audit log (all their events are in).
    pub fn wait_sessions_closed(&self, user: &str, n: usize) -> Vec<Value> {
        self.wait_audit(&format!("{n} session_close of {user}"), |ev| {
            ev.iter()
                .filter(|e| e["event"] == "session_close" && e["user"] == user)
                .count()
                >= n
        })
    }
}

/// Deterministic pseudo-random bytes (xorshift64*), distinct per seed.
pub fn pseudo_random(len: usize, seed: u64) -> Vec<u8> {
    let mut state = seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1;
    let mut out = Vec::with_capacity(len + 8);
    while out.len() < len {
        state ^= state >> 12;
        state ^= state << 25;
        state ^= state >> 27;
        out.extend_from_slice(&state.wrapping_mul(0x2545_F491_4F6C_DD1D).to_le_bytes());
    }
    out.truncate(len);
    out
}

/// The bytes of the file at `path`; panics naming it.
pub fn read(path: &Path) -> Vec<u8> {
    std::fs::read(path).unwrap_or_else(|e| panic!("read {}: {e}", path.display()))
}

/// Asserts that `a == b` without printing megabytes on failure.
pub fn assert_same(a: &[u8], b: &[u8], what: &str) {
    assert!(
        a == b,
        "{what}: contents differ ({} vs {} bytes)",
        a.len(),
        b.len()
    );
}

/// One FTP reply: its code and every text line (without CRLF), first to last.
#[derive(Debug, Clone)]
pub struct Reply {
    /// The three-digit code.
    pub code: u16,
    /// The raw lines, including the code prefixes.
    pub lines: Vec<String>,
}

impl Reply {
    /// All lines joined by newlines.
    pub fn text(&self) -> String {
        self.lines.join("\n")
    }
}

/// A raw control-channel client: write lines, read (multi-line) replies, every read bounded.
pub struct Control {
    reader: BufReader<TcpStream>,
    writer: TcpStream,
}

impl Control {
    /// Connects (bounded) and sets read/write timeouts; does not read the greeting.
    pub fn connect(addr: SocketAddr) -> Control {
        let stream = TcpStream::connect_timeout(&addr, IO_TIMEOUT).expect("connect to ferryd");
        stream
            .set_read_timeout(Some(IO_TIMEOUT))
            .expect("read timeout");
        stream
            .set_write_timeout(Some(IO_TIMEOUT))
            .expect("write timeout");
        let writer = stream.try_clone().expect("clone stream");
        Control {
            reader: BufReader::new(stream),
            writer,
        }
    }

    /// The underlying socket (for timeouts, shutdown, peer address).
    pub fn stream(&self) -> &TcpStream {
        &self.writer
    }

    /// Writes raw bytes as they are.
    pub fn send_raw(&mut self, bytes: &[u8]) {
        self.writer
            .write_all(bytes)
            .expect("write to control channel");
    }

    /// Writes one command line, adding CRLF.
    pub fn send(&mut self, line: &str) {
        self.send_raw(format!("{line}\r\n").as_bytes());
    }

    /// Reads one reply; `None` if the server closed the connection first.
    pub fn try_reply(&mut self) -> Option<Reply> {
        let first = self.read_line()?;
        let code: u16 = first
            .get(..3)
            .and_then(|c| c.parse().ok())
            .unwrap_or_else(|| panic!("not a reply line: {first:?}"));
        let mut lines = vec![first.clone()];
        if first.as_bytes().get(3) == Some(&b'-') {
            let end = format!("{code} ");
            loop {
                let line = self.read_line().unwrap_or_else(|| {
                    panic!("connection closed inside multi-line reply {lines:?}")
                });
                let done = line.starts_with(&end) || line == end.trim_end();
                lines.push(line);
                if done {
                    break;
                }
            }
        }
        Some(Reply { code, lines })
    }

    /// Reads one reply; panics if the connection closed.
    pub fn reply(&mut self) -> Reply {
        self.try_reply()
            .expect("server closed the control connection")
    }

    /// Sends a command and reads its reply.
    pub fn cmd(&mut self, line: &str) -> Reply {
        self.send(line);
        self.reply()
    }

    /// Sends a command and asserts the reply code.
    pub fn expect(&mut self, line: &str, code: u16) -> Reply {
        let reply = self.cmd(line);
        assert_eq!(reply.code, code, "{line:?} -> {reply:?}");
        reply
    }

    /// USER + PASS, asserting 331 and 230.
    pub fn login(&mut self, user: &str, pass: &str) {
        self.expect(&format!("USER {user}"), 331);
        self.expect(&format!("PASS {pass}"), 230);
    }

    /// Asserts that the server closes the connection (EOF or reset) within [`IO_TIMEOUT`],
    /// ignoring nothing: any further reply is returned in the panic message.
    pub fn assert_closed(&mut self) {
        let mut buf = Vec::new();
        match self.reader.read_to_end(&mut buf) {
            Ok(_) => assert!(
                buf.is_empty(),
                "expected close, got more bytes: {:?}",
                String::from_utf8_lossy(&buf)
            ),
            Err(e) if e.kind() == std::io::ErrorKind::ConnectionReset => {}
            Err(e) => panic!("expected the server to close the connection, got {e}"),
        }
    }

    /// PASV: returns the data address from the 227 reply.
    pub fn pasv(&mut self) -> SocketAddr {
        let reply = self.expect("PASV", 227);
        let text = reply.text();
        let inner = text
            .split('(')
            .nth(1)
            .and_then(|s| s.split(')').next())
            .unwrap_or_else(|| panic!("no (h,h,h,h,p,p) in {text:?}"));
        let n: Vec<u16> = inner
            .split(',')
            .map(|x| x.trim().parse().expect("number in 227 reply"))
            .collect();
        assert_eq!(n.len(), 6, "{text:?}");
        let ip = std::net::Ipv4Addr::new(n[0] as u8, n[1] as u8, n[2] as u8, n[3] as u8);
        SocketAddr::from((ip, n[4] * 256 + n[5]))
    }

    /// EPSV: returns the data address (the control peer's address, the port from the 229 reply).
    pub fn epsv(&mut self) -> SocketAddr {
        let reply = self.expect("EPSV", 229);
        let text = reply.text();
        let port = text
            .split("|||")
            .nth(1)
            .and_then(|s| s.split('|').next())
            .and_then(|p| p.parse().ok())
            .unwrap_or_else(|| panic!("no (|||port|) in {text:?}"));
        SocketAddr::new(self.writer.peer_addr().expect("peer").ip(), port)
    }

    /// Opens a passive data connection: PASV over IPv4, EPSV over IPv6, then connect.
    pub fn data_connection(&mut self) -> TcpStream {
        let v6 = self.writer.peer_addr().expect("peer").is_ipv6();
        let addr = if v6 { self.epsv() } else { self.pasv() };
        let data = TcpStream::connect_timeout(&addr, IO_TIMEOUT).expect("connect data channel");
        data.set_read_timeout(Some(IO_TIMEOUT))
            .expect("read timeout");
        data.set_write_timeout(Some(IO_TIMEOUT))
            .expect("write timeout");
        data
    }

    /// STOR over a passive connection; returns the final reply (150 then 226 expected).
    pub fn stor(&mut self, path: &str, bytes: &[u8]) -> Reply {
        let mut data = self.data_connection();
        let first = self.cmd(&format!("STOR {path}"));
        if first.code != 150 && first.code != 125 {
            return first;
        }
        data.write_all(bytes).expect("write data");
        data.shutdown(Shutdown::Write).expect("shutdown data");
        drop(data);
        self.reply()
    }

    /// A command that sends data to us (RETR, LIST, NLST, MLSD): the final reply and the bytes.
    pub fn fetch(&mut self, line: &str) -> (Reply, Vec<u8>) {
        let mut data = self.data_connection();
        let first = self.cmd(line);
        if first.code != 150 && first.code != 125 {
            return (first, Vec::new());
        }
        let mut bytes = Vec::new();
        data.read_to_end(&mut bytes).expect("read data");
        (self.reply(), bytes)
    }

    /// RETR that must succeed; returns the bytes.
    pub fn retr(&mut self, path: &str) -> Vec<u8> {
        let (reply, bytes) = self.fetch(&format!("RETR {path}"));
        assert_eq!(reply.code, 226, "RETR {path} -> {reply:?}");
        bytes
    }

    /// Reads one CRLF- (or LF-) terminated line; `None` on EOF or reset before any byte.
    fn read_line(&mut self) -> Option<String> {
        let mut buf = Vec::new();
        match self.reader.read_until(b'\n', &mut buf) {
            Ok(0) => None,
            Ok(_) => {
                while matches!(buf.last(), Some(b'\n' | b'\r')) {
                    buf.pop();
                }
                Some(String::from_utf8_lossy(&buf).into_owned())
            }
            Err(e) if e.kind() == std::io::ErrorKind::ConnectionReset => None,
            Err(e) => panic!("reading a reply: {e}"),
        }
    }
}
