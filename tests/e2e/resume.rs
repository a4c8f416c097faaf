//! Resumable uploads (issue 11, point 3): an interrupted STOR of a name that held no file keeps
//! what arrived under that name, audited as incomplete, so that SIZE answers its length and
//! the real clients' resume (curl `-C -` with APPE, lftp `put -c` with REST+STOR, ftplib,
//! `ferry put -c`) sends only the rest. An interrupted STOR over an existing file leaves that
//! file exactly as it was; with `--keep-partial-uploads false` nothing is kept.
//!
//! Clients are killed with SIGKILL in the middle of a rate-limited upload, once the server's
//! staged file shows that bytes arrived (every wait bounded).

use crate::common;

use std::io::Write;
use std::net::Shutdown;
use std::os::unix::fs::MetadataExt;
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use common::*;
use serde_json::{Value, json};

/// Upload sizes: a killed upload at 256 KiB/s is well short of them.
const FULL: usize = 4 << 20;
/// Bound on the wait for the first bytes of an upload to reach the server.
const ARRIVAL_TIMEOUT: Duration = Duration::from_secs(20);

/// Bytes in the server's staged uploads (`DATA/tmp/*.part`).
fn staged_bytes(server: &TestServer) -> u64 {
    std::fs::read_dir(server.data_dir().join("tmp"))
        .map(|dir| {
            dir.filter_map(Result::ok)
                .filter(|e| e.path().extension().is_some_and(|x| x == "part"))
                .filter_map(|e| e.metadata().ok())
                .map(|m| m.len())
                .sum()
        })
        .unwrap_or(0)
}

/// Waits (bounded) until the staged uploads hold at least `bytes`.
fn wait_staged(server: &TestServer, bytes: u64) {
    let deadline = Instant::now() + ARRIVAL_TIMEOUT;
    while staged_bytes(server) < bytes {
        assert!(
            Instant::now() < deadline,
            "the upload's first {bytes} bytes never arrived; stderr:\n{}",
            server.stderr()
        );
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// Starts a real client in `cwd` (environment as for [`run_client`]), output discarded.
fn spawn_client(program: &str, args: &[&str], cwd: &Path) -> Child {
    common::require_program(program);
    Command::new(program)
        .args(args)
        .current_dir(cwd)
        .env("LC_ALL", "C.UTF-8")
        .env("LANG", "C.UTF-8")
        .env("HOME", cwd)
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap_or_else(|e| panic!("run {program}: {e}"))
}

/// Lets `client` upload until the server has staged 256 KiB, then kills it with SIGKILL.
fn kill_mid_upload(server: &TestServer, mut client: Child) {
    wait_staged(server, 256 << 10);
    client.kill().expect("kill -9 the client");
    let status = client.wait().expect("reap the client");
    assert!(
        !status.success(),
        "the client finished before it was killed"
    );
}

/// The upload events of `path`, in the order they were recorded.
fn uploads<'a>(events: &'a [Value], path: &str) -> Vec<&'a Value> {
    events
        .iter()
        .filter(|e| e["event"] == "upload" && e["path"] == path)
        .collect()
}

/// Once the interrupted upload of `path` is audited (its session has ended): what the server
/// kept, as SIZE answers it, which must be what the audit says arrived, as incomplete (426,
/// `complete: false`).
fn kept_after_interruption(server: &TestServer, user: &str, pass: &str, path: &str) -> u64 {
    let events = server.wait_audit("the interrupted upload", |ev| !uploads(ev, path).is_empty());
    let kept = size(server, user, pass, path);
    let first = uploads(&events, path)[0];
    assert_eq!(first["bytes"], json!(kept), "{first}");
    assert_eq!(first["complete"], json!(false), "{first}");
    assert_eq!(first["code"], json!(426), "{first}");
    kept
}

/// SIZE of `path` over a fresh control connection.
fn size(server: &TestServer, user: &str, pass: &str, path: &str) -> u64 {
    let (mut ctl, _) = server.connect();
    ctl.login(user, pass);
    let reply = ctl.expect(&format!("SIZE {path}"), 213);
    ctl.expect("QUIT", 221);
    reply.text()[4..].trim().parse().expect("SIZE number")
}

/// After a kill and a resume of `path`: the audit holds the incomplete upload of `kept` bytes
/// and then the complete one of the rest, and the xferlog says `i` then `c`.
fn assert_incomplete_then_complete(server: &TestServer, path: &str, kept: u64) {
    let events = server.wait_audit("the resumed upload", |ev| uploads(ev, path).len() >= 2);
    let ups = uploads(&events, path);
    assert_eq!(ups.len(), 2, "{ups:?}");
    assert_eq!(
        (&ups[0]["complete"], &ups[0]["bytes"]),
        (&json!(false), &json!(kept)),
        "{ups:?}"
    );
    assert_eq!(
        (&ups[1]["complete"], &ups[1]["code"], &ups[1]["bytes"]),
        (&json!(true), &json!(226), &json!(FULL as u64 - kept)),
        "{ups:?}"
    );
    // The xferlog is written in the same batch, right after audit.jsonl.
    let deadline = Instant::now() + AUDIT_TIMEOUT;
    loop {
        let xferlog =
            std::fs::read_to_string(server.data_dir().join("log/xferlog")).unwrap_or_default();
        let status: Vec<&str> = xferlog
            .lines()
            .filter(|l| l.split_whitespace().nth(8) == Some(path))
            .filter_map(|l| l.split_whitespace().last())
            .collect();
        if status.len() >= 2 || Instant::now() >= deadline {
            assert_eq!(status, ["i", "c"], "{xferlog}");
            return;
        }
        std::thread::sleep(Duration::from_millis(50));
    }
}

#[test]
fn curl_resumes_an_upload_it_was_killed_in() {
    let server = TestServer::start(&[]);
    let (user, pass) = ("cora", "curl-resume-1");
    register(&server, user, pass);
    let work = tempfile::tempdir().expect("work dir");
    let payload = pseudo_random(FULL, 31);
    std::fs::write(work.path().join("big.bin"), &payload).expect("write big.bin");
    let url = format!("ftp://{user}:{pass}@127.0.0.1:{}/big.bin", server.port());
    let curl = spawn_client(
        "curl",
        &["-sS", "--limit-rate", "256k", "-T", "big.bin", &url],
        work.path(),
    );
    kill_mid_upload(&server, curl);

    let kept = kept_after_interruption(&server, user, pass, "/big.bin");
    assert!(kept > 0 && kept < FULL as u64, "kept {kept}");
    let out = run_client(
        "curl",
        &["-sS", "--max-time", "30", "-C", "-", "-T", "big.bin", &url],
        work.path(),
    );
    assert_success(&out, "curl -C - -T");
    assert!(std::fs::read(server.home(user).join("big.bin")).expect("big.bin") == payload);
    assert_incomplete_then_complete(&server, "/big.bin", kept);

    // Killed again, now over the complete file: that file stays exactly as it was, although
    // the client's kernel may close the data connection (its end of file) before the control
    // connection.
    let before = std::fs::metadata(server.home(user).join("big.bin")).expect("big.bin");
    std::fs::write(work.path().join("other.bin"), pseudo_random(FULL, 36)).expect("other.bin");
    let curl = spawn_client(
        "curl",
        &["-sS", "--limit-rate", "256k", "-T", "other.bin", &url],
        work.path(),
    );
    kill_mid_upload(&server, curl);
    let events = server.wait_audit("the upload over the file", |ev| {
        uploads(ev, "/big.bin").len() == 3
    });
    assert_eq!(uploads(&events, "/big.bin")[2]["complete"], json!(false));
    let after = std::fs::metadata(server.home(user).join("big.bin")).expect("big.bin");
    assert_eq!(after.ino(), before.ino());
    assert!(std::fs::read(server.home(user).join("big.bin")).expect("big.bin") == payload);
    assert_eq!(staged_bytes(&server), 0);
}

#[test]
fn lftp_put_c_resumes_an_upload_it_was_killed_in() {
    let server = TestServer::start(&[]);
    let (user, pass) = ("lars", "lftp-resume-1");
    register(&server, user, pass);
    let work = tempfile::tempdir().expect("work dir");
    let payload = pseudo_random(FULL, 32);
    std::fs::write(work.path().join("big.bin"), &payload).expect("write big.bin");
    let script = |settings: &str, command: &str| {
        format!(
            "set net:max-retries 1; set net:timeout 10; set ftp:ssl-allow no; \
             set cmd:fail-exit yes; {settings} open -u {user},{pass} -p {} 127.0.0.1; {command}",
            server.port()
        )
    };
    let lftp = spawn_client(
        "lftp",
        &[
            "-c",
            &script("set net:limit-rate 262144;", "put big.bin -o up.bin"),
        ],
        work.path(),
    );
    kill_mid_upload(&server, lftp);

    let kept = kept_after_interruption(&server, user, pass, "/up.bin");
    assert!(kept > 0 && kept < FULL as u64, "kept {kept}");
    let out = run_client(
        "lftp",
        &["-c", &script("", "put -c big.bin -o up.bin")],
        work.path(),
    );
    assert_success(&out, "lftp put -c");
    assert!(std::fs::read(server.home(user).join("up.bin")).expect("up.bin") == payload);
    assert_incomplete_then_complete(&server, "/up.bin", kept);
    // lftp resumed with REST + STOR.
    let events = server.audit_events();
    assert_event(
        &events,
        &[
            ("event", json!("command")),
            ("command", json!(format!("REST {kept}"))),
            ("code", json!(350)),
        ],
    );
}

/// Python's ftplib: `abort()` in the middle of a STOR. Over a new name, SIZE then answers what
/// arrived and REST+STOR finishes it; over an existing file, that file stays as it was.
#[test]
fn ftplib_abort_keeps_a_new_name_and_leaves_an_existing_file_as_it_was() {
    let server = TestServer::start(&[]);
    let (user, pass) = ("fitz", "ftplib-resume-1");
    register(&server, user, pass);
    let home = server.home(user);
    let original = pseudo_random(100_000, 33);
    std::fs::write(home.join("old.bin"), &original).expect("seed old.bin");
    let before = std::fs::metadata(home.join("old.bin")).expect("old.bin");
    let work = tempfile::tempdir().expect("work dir");
    let script = r#"
import ftplib, glob, os, sys, time
port, user, pw, tmp = int(sys.argv[1]), sys.argv[2], sys.argv[3], sys.argv[4]
data = bytes((i * 7 + 3) % 251 for i in range(300000))
f = ftplib.FTP()
f.connect("127.0.0.1", port, timeout=15)
f.login(user, pw)
f.voidcmd("TYPE I")
def interrupted(name):
    conn = f.transfercmd("STOR " + name)
    conn.sendall(data[:200000])
    deadline = time.time() + 15
    while sum(os.path.getsize(p) for p in glob.glob(tmp + "/*.part")) < 200000:
        assert time.time() < deadline, "the bytes never arrived"
        time.sleep(0.02)
    resp = f.abort()
    if resp.startswith("426"):
        resp = f.getresp()
    assert resp[:3] in ("225", "226"), resp
    conn.close()
interrupted("new.bin")
print(f.sendcmd("SIZE new.bin"))
import io
print(f.storbinary("STOR new.bin", io.BytesIO(data[200000:]), rest=200000))
interrupted("old.bin")
print(f.sendcmd("SIZE old.bin"))
f.quit()
"#;
    let tmp = server.data_dir().join("tmp");
    let out = run_client(
        "python3",
        &[
            "-c",
            script,
            &server.port().to_string(),
            user,
            pass,
            tmp.to_str().expect("utf-8 path"),
        ],
        work.path(),
    );
    assert_success(&out, "ftplib abort");
    let stdout = String::from_utf8_lossy(&out.stdout);
    let lines: Vec<&str> = stdout.lines().collect();
    assert_eq!(lines[0], "213 200000", "{stdout}");
    assert!(lines[1].starts_with("226"), "{stdout}");
    assert_eq!(lines[2], "213 100000", "{stdout}");
    let want: Vec<u8> = (0..300_000u32).map(|i| ((i * 7 + 3) % 251) as u8).collect();
    assert!(std::fs::read(home.join("new.bin")).expect("new.bin") == want);
    let after = std::fs::metadata(home.join("old.bin")).expect("old.bin");
    assert!(std::fs::read(home.join("old.bin")).expect("old.bin") == original);
    assert_eq!(
        (after.ino(), after.mtime(), after.mtime_nsec()),
        (before.ino(), before.mtime(), before.mtime_nsec())
    );
    assert_eq!(staged_bytes(&server), 0);
    let events = server.wait_audit("both aborted uploads", |ev| {
        uploads(ev, "/old.bin").len() == 1 && uploads(ev, "/new.bin").len() == 2
    });
    for path in ["/new.bin", "/old.bin"] {
        assert_eq!(uploads(&events, path)[0]["complete"], json!(false));
    }
}

/// `ferry put -c` (SIZE, then APPE) sends only what a lost connection did not deliver.
#[test]
fn ferry_put_c_resumes_what_a_lost_connection_left() {
    let server = TestServer::start(&[]);
    let (user, pass) = ("fern", "ferry-resume-1");
    let mut ctl = server.register_and_login(user, pass);
    let payload = pseudo_random(600_000, 34);
    let part = 250_000;
    let mut data = ctl.data_connection();
    ctl.expect("STOR up.bin", 150);
    data.write_all(&payload[..part]).expect("send part");
    wait_staged(&server, part as u64);
    // The control connection goes first, as when the client dies, then the data connection.
    ctl.stream()
        .shutdown(Shutdown::Both)
        .expect("shutdown control");
    drop(ctl);
    assert_eq!(
        kept_after_interruption(&server, user, pass, "/up.bin"),
        part as u64
    );
    drop(data);

    let work = tempfile::tempdir().expect("work dir");
    std::fs::write(work.path().join("up.bin"), &payload).expect("write up.bin");
    let child = Command::new(env!("CARGO_BIN_EXE_ferry"))
        .args([
            &format!("127.0.0.1:{}", server.port()),
            "-c",
            &format!("login {user}; put -c up.bin"),
        ])
        .current_dir(work.path())
        .env("HOME", work.path())
        .env("FERRY_HISTORY", work.path().join("history"))
        .env("FERRY_PASSWORD", pass)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawn ferry");
    let out = run_bounded(child, Duration::from_secs(30));
    assert_success(&out, "ferry put -c");
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        stdout.contains(&format!("up.bin: {} bytes in ", payload.len() - part)),
        "{stdout}"
    );
    assert!(std::fs::read(server.home(user).join("up.bin")).expect("up.bin") == payload);
    let events = server.wait_audit("the APPE", |ev| uploads(ev, "/up.bin").len() == 2);
    assert_transfer(&events, user, "upload", "/up.bin", payload.len() - part);
    assert_event(
        &events,
        &[
            ("event", json!("command")),
            ("command", json!("APPE up.bin")),
            ("code", json!(226)),
        ],
    );
}

/// With the setting off, an interrupted STOR of a new name keeps nothing (audited as
/// incomplete all the same); in-place writes (APPE) keep what they wrote, as always.
#[test]
fn with_keep_partial_uploads_off_an_interrupted_stor_keeps_nothing() {
    let server = TestServer::start(&["--keep-partial-uploads", "false"]);
    let (user, pass) = ("otto", "no-partials-1");
    let mut ctl = server.register_and_login(user, pass);
    let mut data = ctl.data_connection();
    ctl.expect("STOR gone.bin", 150);
    data.write_all(&pseudo_random(100_000, 35)).expect("send");
    wait_staged(&server, 100_000);
    ctl.send("ABOR");
    assert_eq!(ctl.reply().code, 426);
    assert_eq!(ctl.reply().code, 226);
    drop(data);
    ctl.expect("SIZE gone.bin", 550);
    assert!(!server.home(user).join("gone.bin").exists());
    assert_eq!(staged_bytes(&server), 0);

    let mut data = ctl.data_connection();
    ctl.expect("APPE log.bin", 150);
    data.write_all(b"appended").expect("send");
    let deadline = Instant::now() + ARRIVAL_TIMEOUT;
    while std::fs::metadata(server.home(user).join("log.bin")).map_or(0, |m| m.len()) < 8 {
        assert!(
            Instant::now() < deadline,
            "the appended bytes never arrived"
        );
        std::thread::sleep(Duration::from_millis(20));
    }
    ctl.send("ABOR");
    assert_eq!(ctl.reply().code, 426);
    assert_eq!(ctl.reply().code, 226);
    drop(data);
    ctl.expect("SIZE log.bin", 213);
    let events = server.wait_audit("the aborted uploads", |ev| {
        !uploads(ev, "/gone.bin").is_empty() && !uploads(ev, "/log.bin").is_empty()
    });
    assert_eq!(uploads(&events, "/gone.bin")[0]["complete"], json!(false));
    assert_eq!(uploads(&events, "/log.bin")[0]["complete"], json!(false));
}
