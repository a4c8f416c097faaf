//! Attack tests for disk filling through the logs (issue 10 item 1): a client that never logs in
//! floods garbage lines and NOOPs, a banned address reconnects in a loop, a thief keeps
//! connecting to someone else's passive port. Each measures what the server wrote (audit.jsonl
//! and its rotations, plus stderr) against what the client sent, and asserts a fixed bound.
//! The audit cap and the free-space floor are checked to keep the forensic events.
//!
//! Every flood is bounded in count and in time; everything runs on 127.0.0.1 (the thief on
//! 127.0.0.2) against a server on an OS-chosen port.

use crate::common;

use std::io::{ErrorKind, Read, Write};
use std::net::{Shutdown, SocketAddr, TcpStream};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use common::{AUDIT_TIMEOUT, IO_TIMEOUT, TestServer, has_event};
use serde_json::{Value, json};

/// Most the server may write (audit files plus stderr) for one flood, whatever its size.
const LOG_BOUND: u64 = 64 * 1024;
/// Time limit of each flood.
const FLOOD_TIME: Duration = Duration::from_secs(30);

/// Bytes in `audit.jsonl*` and `xferlog*`, plus the server's stderr so far.
fn log_bytes(server: &TestServer) -> u64 {
    let dir = server.data_dir().join("log");
    let files: u64 = std::fs::read_dir(&dir)
        .map(|entries| {
            entries
                .filter_map(Result::ok)
                .filter_map(|e| e.metadata().ok())
                .map(|m| m.len())
                .sum()
        })
        .unwrap_or(0);
    files + server.stderr().len() as u64
}

fn count(events: &[Value], kind: &str) -> usize {
    events.iter().filter(|e| e["event"] == kind).count()
}

/// What one flood did.
struct Flood {
    sent: u64,
    lines: usize,
    replies: String,
}

/// Sends `pattern` again and again (`lines` lines in all, or until [`FLOOD_TIME`], or until the
/// server closes) on a connection whose greeting was read, while another thread drains and keeps
/// the replies' first and last few KB.
fn flood(addr: SocketAddr, pattern: &[&[u8]], lines: usize) -> Flood {
    let stream = TcpStream::connect_timeout(&addr, IO_TIMEOUT).expect("connect");
    stream.set_read_timeout(Some(IO_TIMEOUT)).expect("timeout");
    stream.set_write_timeout(Some(IO_TIMEOUT)).expect("timeout");
    let mut reader = stream.try_clone().expect("clone");
    let done = Arc::new(AtomicBool::new(false));
    let reader_done = Arc::clone(&done);
    let drain = std::thread::spawn(move || {
        let mut head = Vec::new();
        let mut tail: Vec<u8> = Vec::new();
        let mut buf = [0u8; 65536];
        let start = Instant::now();
        while start.elapsed() < FLOOD_TIME + IO_TIMEOUT {
            match reader.read(&mut buf) {
                Ok(0) => break,
                Ok(n) => {
                    if head.len() < 4096 {
                        head.extend_from_slice(&buf[..n.min(4096)]);
                    }
                    tail.extend_from_slice(&buf[..n]);
                    if tail.len() > 8192 {
                        tail.drain(..tail.len() - 4096);
                    }
                }
                Err(e) if e.kind() == ErrorKind::WouldBlock || e.kind() == ErrorKind::TimedOut => {
                    if reader_done.load(Ordering::SeqCst) {
                        break;
                    }
                }
                Err(_) => break,
            }
        }
        format!(
            "{}\n...\n{}",
            String::from_utf8_lossy(&head),
            String::from_utf8_lossy(&tail)
        )
    });
    let mut chunk = Vec::new();
    let per_chunk = 4096;
    for i in 0..per_chunk {
        chunk.extend_from_slice(pattern[i % pattern.len()]);
    }
    let mut writer = stream;
    let (mut sent, mut written) = (0u64, 0usize);
    let start = Instant::now();
    while written < lines && start.elapsed() < FLOOD_TIME {
        if writer.write_all(&chunk).is_err() {
            break;
        }
        sent += chunk.len() as u64;
        written += per_chunk;
    }
    // Let the server answer what it read, then hang up.
    let _ = writer.shutdown(Shutdown::Write);
    done.store(true, Ordering::SeqCst);
    let replies = drain.join().expect("drain thread");
    Flood {
        sent,
        lines: written,
        replies,
    }
}

/// Every complete line of `audit.jsonl` and its rotated files, oldest first. A line still being
/// written (no newline yet) is left for the next read: big batches are not one atomic write.
fn read_events(server: &TestServer) -> Vec<Value> {
    let dir = server.data_dir().join("log");
    let mut events = Vec::new();
    for name in ["audit.jsonl.2", "audit.jsonl.1", "audit.jsonl"] {
        let text = std::fs::read_to_string(dir.join(name)).unwrap_or_default();
        let complete = text.rfind('\n').map_or("", |end| &text[..=end]);
        for line in complete.lines() {
            events.push(serde_json::from_str(line).unwrap_or_else(|e| panic!("{line:?}: {e}")));
        }
    }
    events
}

/// Polls [`read_events`] until `pred` holds; panics after [`AUDIT_TIMEOUT`].
fn wait_events(server: &TestServer, what: &str, pred: impl Fn(&[Value]) -> bool) -> Vec<Value> {
    let deadline = Instant::now() + AUDIT_TIMEOUT;
    loop {
        let events = read_events(server);
        if pred(&events) {
            return events;
        }
        assert!(Instant::now() < deadline, "audit log never showed {what}");
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// Waits (bounded) until every session that opened has closed; returns the events.
fn all_closed(server: &TestServer) -> Vec<Value> {
    wait_events(server, "every session closed", |ev| {
        count(ev, "session_open") > 0 && count(ev, "session_open") == count(ev, "session_close")
    })
}

#[test]
fn a_garbage_flood_before_login_writes_a_bounded_log_and_is_closed() {
    let server = TestServer::start(&[]);
    let before = log_bytes(&server);
    let pattern: &[&[u8]] = &[b"\r\n", b"\xff\xfe\xfd\r\n", b"XYZZY\r\n"];
    let run = flood(server.addr(), pattern, 200_000);
    let events = all_closed(&server);
    // The audit log is flushed; give stderr's pipe reader a moment to catch up.
    std::thread::sleep(Duration::from_millis(300));
    let wrote = log_bytes(&server) - before;
    eprintln!(
        "garbage flood: {} lines, {} bytes sent; {wrote} bytes logged ({:.3} per byte sent)",
        run.lines,
        run.sent,
        wrote as f64 / run.sent as f64
    );
    assert!(
        run.replies.contains("421 "),
        "the session was not closed for sending only garbage: {}",
        run.replies
    );
    assert!(
        wrote <= LOG_BOUND,
        "{wrote} bytes logged for {} bytes of garbage",
        run.sent
    );
    let close = events
        .iter()
        .find(|e| e["event"] == "session_close")
        .expect("session_close");
    assert_eq!(close["code"], 421, "{close}");
}

#[test]
fn a_noop_flood_before_login_is_summarised() {
    let mut server = TestServer::start(&[]);
    let before = log_bytes(&server);
    let run = flood(server.addr(), &[b"NOOP\r\n"], 100_000);
    all_closed(&server);
    // Summaries of what was not logged one by one are written at the latest at shutdown.
    server.stop();
    let wrote = log_bytes(&server) - before;
    eprintln!(
        "NOOP flood: {} lines, {} bytes sent; {wrote} bytes logged ({:.3} per byte sent)",
        run.lines,
        run.sent,
        wrote as f64 / run.sent as f64
    );
    assert!(run.replies.matches("200 ").count() > 100, "{}", run.replies);
    assert!(
        wrote <= LOG_BOUND,
        "{wrote} bytes logged for {} sent",
        run.sent
    );
    let events = read_events(&server);
    let summarised: u64 = events
        .iter()
        .filter(|e| e["event"] == "suppressed")
        .filter_map(|e| e["count"].as_u64())
        .sum();
    let logged = events.iter().filter(|e| e["command"] == "NOOP").count() as u64;
    // What was not written one by one is counted: nothing vanishes without a trace. The last
    // NOOPs may have been cut off by the hang-up, hence the margin.
    assert!(
        logged + summarised + 10_000 >= run.lines as u64 && logged <= 1000,
        "{logged} logged + {summarised} summarised for {} sent",
        run.lines
    );
}

#[test]
fn unknown_verbs_between_real_commands_are_not_closed_but_write_a_bounded_log() {
    let mut server = TestServer::start(&[]);
    let before = log_bytes(&server);
    // SYST answers, so the bad-command count never reaches its bound: only the budget helps.
    let run = flood(server.addr(), &[b"XYZZY\r\n", b"SYST\r\n"], 100_000);
    all_closed(&server);
    server.stop();
    let wrote = log_bytes(&server) - before;
    let stderr_lines = server.stderr().matches("not implemented: XYZZY").count();
    eprintln!(
        "XYZZY+SYST flood: {} lines, {} bytes sent; {wrote} bytes logged ({:.3} per byte sent), {stderr_lines} stderr lines",
        run.lines,
        run.sent,
        wrote as f64 / run.sent as f64
    );
    assert!(!run.replies.contains("421 "), "{}", run.replies);
    assert!(
        wrote <= LOG_BOUND,
        "{wrote} bytes logged for {} sent",
        run.sent
    );
    assert!(stderr_lines <= 200, "{stderr_lines}");
}

#[test]
fn a_banned_address_reconnecting_in_a_loop_writes_bounded_lines() {
    let server = TestServer::start(&[
        "--login-failure-delay-ms",
        "0",
        "--ban-after-failures",
        "1",
        "--ban-secs",
        "600",
    ]);
    let (mut ctl, _) = server.connect();
    ctl.expect("USER nobody", 331);
    ctl.expect("PASS wrong-password", 530);
    wait_events(&server, "banned", |ev| count(ev, "banned") == 1);
    drop(ctl);
    let before = log_bytes(&server);
    let start = Instant::now();
    let mut attempts = 0usize;
    while attempts < 3000 && start.elapsed() < FLOOD_TIME {
        let mut stream = TcpStream::connect_timeout(&server.addr(), IO_TIMEOUT).expect("connect");
        stream.set_read_timeout(Some(IO_TIMEOUT)).expect("timeout");
        let mut reply = Vec::new();
        let _ = stream.read_to_end(&mut reply);
        assert!(
            reply.starts_with(b"421 "),
            "{:?}",
            String::from_utf8_lossy(&reply)
        );
        attempts += 1;
    }
    all_closed(&server);
    wait_events(&server, "a refused connection", |ev| {
        count(ev, "refused") > 0
    });
    std::thread::sleep(Duration::from_millis(1500));
    let wrote = log_bytes(&server) - before;
    let stderr_refusals = server.stderr().matches("refused connection from").count();
    let events = read_events(&server);
    eprintln!(
        "ban loop: {attempts} connections; {wrote} bytes logged, {} refused events, {stderr_refusals} stderr lines",
        count(&events, "refused")
    );
    assert!(
        wrote <= LOG_BOUND,
        "{wrote} bytes logged for {attempts} refusals"
    );
    assert!(
        count(&events, "refused") <= 200,
        "{}",
        count(&events, "refused")
    );
    assert!(stderr_refusals <= 200, "{stderr_refusals}");
}

/// Connects to `addr` from the local address `from`.
fn connect_from(from: &str, addr: SocketAddr) -> std::io::Result<TcpStream> {
    let socket = socket2::Socket::new(socket2::Domain::IPV4, socket2::Type::STREAM, None)?;
    let local: SocketAddr = format!("{from}:0").parse().expect("address");
    socket.bind(&local.into())?;
    socket.connect_timeout(&addr.into(), IO_TIMEOUT)?;
    Ok(socket.into())
}

#[test]
fn a_passive_port_thief_writes_bounded_lines() {
    let server = TestServer::start(&[]);
    let mut ctl = server.register_and_login("victim", "victim-password");
    let pasv = ctl.pasv();
    ctl.expect("NLST", 150);
    let before = log_bytes(&server);
    let start = Instant::now();
    let mut attempts = 0usize;
    while attempts < 3000 && start.elapsed() < FLOOD_TIME {
        let Ok(mut thief) = connect_from("127.0.0.2", pasv) else {
            break;
        };
        thief.set_read_timeout(Some(IO_TIMEOUT)).expect("timeout");
        let mut stolen = Vec::new();
        let _ = thief.read_to_end(&mut stolen);
        assert!(stolen.is_empty(), "data leaked");
        attempts += 1;
    }
    let data = TcpStream::connect_timeout(&pasv, IO_TIMEOUT).expect("rightful connection");
    drop(data);
    assert_eq!(ctl.reply().code, 226);
    ctl.expect("QUIT", 221);
    all_closed(&server);
    std::thread::sleep(Duration::from_millis(1500));
    let wrote = log_bytes(&server) - before;
    let stderr_thefts = server.stderr().matches("refused data connection").count();
    eprintln!(
        "port thief: {attempts} connections; {wrote} bytes logged, {stderr_thefts} stderr lines"
    );
    assert!(attempts >= 1000, "only {attempts} thefts attempted");
    assert!(
        wrote <= LOG_BOUND,
        "{wrote} bytes logged for {attempts} thefts"
    );
    assert!(stderr_thefts <= 200, "{stderr_thefts}");
}

#[test]
fn the_audit_cap_rotates_and_keeps_forensic_events() {
    let server = TestServer::start(&["--audit-max-bytes", "20000", "--audit-keep", "2"]);
    let mut ctl = server.register_and_login("olga", "olga-password");
    // Logged-in commands are logged one by one: about 150 bytes each, 30 times the cap.
    for _ in 0..4000 {
        ctl.send("NOOP");
    }
    for _ in 0..4000 {
        assert_eq!(ctl.reply().code, 200);
    }
    assert_eq!(ctl.stor("kept.txt", b"forensics").code, 226);
    ctl.expect("DELE kept.txt", 250);
    ctl.expect("QUIT", 221);
    let mut again = server.register_and_login("olga2", "olga2-password");
    again.expect("QUIT", 221);
    let all = wait_events(&server, "the last login", |ev| {
        has_event(
            ev,
            &[("event", json!("login_ok")), ("user", json!("olga2"))],
        )
    });
    let dir = server.data_dir().join("log");
    let mut names: Vec<String> = std::fs::read_dir(&dir)
        .expect("log dir")
        .filter_map(Result::ok)
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .filter(|n| n.starts_with("audit.jsonl"))
        .collect();
    names.sort();
    assert_eq!(names, ["audit.jsonl", "audit.jsonl.1", "audit.jsonl.2"]);
    for name in &names {
        let len = std::fs::metadata(dir.join(name)).expect("stat").len();
        // One batch may carry a file past the cap before it rotates.
        assert!(len <= 20000 + 64 * 1024, "{name}: {len} bytes");
    }
    // 4000 NOOPs were far more than three files hold: the oldest were rotated away.
    let noops = all.iter().filter(|e| e["command"] == "NOOP").count();
    assert!(noops < 4000, "{noops} NOOPs kept");
    for (kind, user) in [
        ("upload", "olga"),
        ("delete", "olga"),
        ("login_ok", "olga2"),
    ] {
        assert!(
            has_event(&all, &[("event", json!(kind)), ("user", json!(user))]),
            "{kind} of {user} lost"
        );
    }
}

#[test]
fn below_the_free_space_floor_only_forensic_events_are_written() {
    // A floor no disk can meet: the log behaves as on a disk that is nearly full.
    let mut server = TestServer::start(&["--audit-min-free-bytes", "1000000000000000"]);
    server.wait_stderr("writing only forensic events");
    // A reconnect loop: sessions that never log in are only counted below the floor.
    for _ in 0..300 {
        let (mut ctl, greeting) = server.connect();
        assert_eq!(greeting.code, 220);
        ctl.expect("QUIT", 221);
    }
    let mut ctl = server.register_and_login("pia", "pia-password");
    for _ in 0..200 {
        ctl.expect("NOOP", 200);
    }
    assert_eq!(ctl.stor("f.txt", b"data").code, 226);
    ctl.expect("QUIT", 221);
    let pia_closed = [("event", json!("session_close")), ("user", json!("pia"))];
    let events = wait_events(&server, "the upload and the close", |ev| {
        count(ev, "upload") == 1 && has_event(ev, &pia_closed)
    });
    for kind in ["register", "login_ok", "upload", "session_close"] {
        assert_eq!(count(&events, kind), 1, "{kind}: {events:?}");
    }
    assert_eq!(count(&events, "command"), 0, "{events:?}");
    assert_eq!(count(&events, "session_open"), 0, "{events:?}");
    let xferlog = std::fs::read_to_string(server.data_dir().join("log/xferlog")).expect("xferlog");
    assert_eq!(xferlog.lines().count(), 1, "{xferlog}");
    // What was held back is counted, per kind, at the latest at shutdown.
    server.stop();
    let events = read_events(&server);
    let held = |what: &str| -> u64 {
        events
            .iter()
            .filter(|e| e["event"] == "suppressed")
            .filter(|e| e["command"].as_str().is_some_and(|c| c.starts_with(what)))
            .filter_map(|e| e["count"].as_u64())
            .sum()
    };
    assert_eq!(held("session_open:"), 301, "{events:?}");
    assert_eq!(held("session_close:"), 300, "{events:?}");
    assert!(held("not forensic") >= 200, "{events:?}");
}

#[test]
fn bad_commands_in_a_row_close_the_session_and_real_progress_resets_the_count() {
    let server = TestServer::start(&["--max-bad-commands", "3"]);
    let (mut ctl, _) = server.connect();
    ctl.expect("XYZZY", 502);
    ctl.send_raw(b"\r\n");
    assert_eq!(ctl.reply().code, 500);
    // A known verb refused for want of a login is no garbage, and no progress either.
    ctl.expect("LIST", 530);
    // SYST is a real answer: the count starts again.
    ctl.expect("SYST", 215);
    ctl.expect("XYZZY", 502);
    ctl.expect("PLUGH", 502);
    // NOOP is no progress: it keeps the count.
    ctl.expect("NOOP", 200);
    ctl.send_raw(b"\xc3\x28\r\n");
    let bad = ctl.reply();
    assert!(bad.text().contains("UTF-8"), "{bad:?}");
    let closing = ctl.reply();
    assert_eq!(closing.code, 421, "{closing:?}");
    ctl.assert_closed();
    let events = all_closed(&server);
    assert!(
        has_event(
            &events,
            &[
                ("event", json!("session_close")),
                ("code", json!(421)),
                ("command", json!("too many bad commands"))
            ]
        ),
        "{events:?}"
    );
}
