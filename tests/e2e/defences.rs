//! End-to-end tests of the server's defences and limits over real sockets: the growing delay
//! after failed logins, closing after `max_login_failures`, address bans, per-user session and
//! transfer limits (off by default, so set here), bandwidth budgets (per user, shared by all
//! of a user's sessions, and global), and the data, login and idle timeouts. Every wait is
//! bounded.

use crate::common;

use std::io::{Read, Write};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use common::{Control, TestServer, pseudo_random};
use serde_json::{Value, json};

/// One MB, the size of each rate-limited transfer.
const MB: usize = 1_000_000;

/// Writes a TOML config file into a fresh temp dir; the dir must outlive the server.
fn config_file(text: &str) -> (tempfile::TempDir, String) {
    let dir = tempfile::tempdir().expect("config dir");
    let path = dir.path().join("ferry.toml");
    std::fs::write(&path, text).expect("write config");
    let path = path.to_str().expect("utf-8 path").to_owned();
    (dir, path)
}

/// Sends PASS and returns the reply and how long it took.
fn timed_pass(ctl: &mut Control, user: &str, pass: &str) -> (common::Reply, Duration) {
    ctl.expect(&format!("USER {user}"), 331);
    let start = Instant::now();
    let reply = ctl.cmd(&format!("PASS {pass}"));
    (reply, start.elapsed())
}

fn count(events: &[Value], kind: &str) -> usize {
    events.iter().filter(|e| e["event"] == kind).count()
}

#[test]
fn the_delay_after_a_failed_login_grows_and_unknown_users_look_the_same() {
    let server = TestServer::start(&["--login-failure-delay-ms", "200"]);
    drop(server.register_and_login("dora", "dora-password"));
    let (mut ctl, _) = server.connect();
    let (wrong, first) = timed_pass(&mut ctl, "dora", "not-her-password");
    assert_eq!(wrong.code, 530, "{wrong:?}");
    assert!(
        first >= Duration::from_millis(200),
        "first 530 after {first:?}"
    );
    let (unknown, second) = timed_pass(&mut ctl, "nobody-here", "whatever-password");
    assert_eq!(unknown.code, 530, "{unknown:?}");
    assert!(
        second >= Duration::from_millis(400),
        "second 530 after {second:?}"
    );
    assert_eq!(
        wrong.lines, unknown.lines,
        "unknown user and wrong password differ"
    );
    assert_eq!(wrong.lines, vec!["530 Login incorrect.".to_owned()]);
    // The right password still works on the same connection (two failures of three).
    ctl.login("dora", "dora-password");
    ctl.expect("NOOP", 200);
}

#[test]
fn the_connection_closes_with_421_after_max_login_failures() {
    let server = TestServer::start(&["--login-failure-delay-ms", "0"]);
    drop(server.register_and_login("emil", "emil-password"));
    let (mut ctl, _) = server.connect();
    for _ in 0..2 {
        let (reply, _) = timed_pass(&mut ctl, "emil", "wrong-password");
        assert_eq!(reply.code, 530, "{reply:?}");
    }
    let (third, _) = timed_pass(&mut ctl, "emil", "wrong-password");
    assert_eq!(third.code, 530, "{third:?}");
    let closing = ctl.reply();
    assert_eq!(closing.code, 421, "{closing:?}");
    ctl.assert_closed();
}

#[test]
fn an_address_is_banned_after_failures_then_served_again() {
    let (_dir, config) = config_file("max_login_failures = 10\n");
    let server = TestServer::start(&[
        "--config",
        &config,
        "--login-failure-delay-ms",
        "0",
        "--ban-after-failures",
        "4",
        "--ban-window-secs",
        "60",
        "--ban-secs",
        "2",
    ]);
    drop(server.register_and_login("fay", "fay-password"));
    let (mut ctl, _) = server.connect();
    for _ in 0..3 {
        let (reply, _) = timed_pass(&mut ctl, "fay", "wrong-password");
        assert_eq!(reply.code, 530, "{reply:?}");
    }
    // The fourth failure starts the ban: 530, then 421 and close.
    let (fourth, _) = timed_pass(&mut ctl, "fay", "wrong-password");
    let banned_at = Instant::now();
    assert_eq!(fourth.code, 530, "{fourth:?}");
    let closing = ctl.reply();
    assert_eq!(closing.code, 421, "{closing:?}");
    ctl.assert_closed();

    // A new connection from the banned address is refused before any greeting.
    let (mut refused, greeting) = server.connect();
    assert_eq!(greeting.code, 421, "{greeting:?}");
    assert!(
        greeting.text().contains("Too many failed logins"),
        "{greeting:?}"
    );
    refused.assert_closed();

    let events = server.wait_audit("4 login_failed, banned, refused", |ev| {
        count(ev, "login_failed") == 4 && count(ev, "banned") == 1 && count(ev, "refused") == 1
    });
    let refusal = events
        .iter()
        .find(|e| e["event"] == "refused")
        .expect("refused event");
    assert_eq!(refusal["code"], json!(421), "{refusal}");

    // After the ban (2 s) a connection is served again; bounded at 4 s after the ban.
    let deadline = banned_at + Duration::from_secs(4);
    loop {
        let (mut ctl, greeting) = server.connect();
        if greeting.code == 220 {
            ctl.login("fay", "fay-password");
            ctl.expect("NOOP", 200);
            break;
        }
        assert_eq!(greeting.code, 421, "{greeting:?}");
        assert!(
            Instant::now() < deadline,
            "still banned {:?} after the ban began",
            banned_at.elapsed()
        );
        std::thread::sleep(Duration::from_millis(200));
    }
    assert!(
        banned_at.elapsed() >= Duration::from_millis(1800),
        "the ban ended early, after {:?}",
        banned_at.elapsed()
    );
}

#[test]
fn sessions_per_user_are_capped_and_freed_on_quit() {
    let server = TestServer::start(&["--max-sessions-per-user", "2"]);
    let mut first = server.register_and_login("gus", "gus-password");
    let (mut second, _) = server.connect();
    second.login("gus", "gus-password");
    let (mut third, _) = server.connect();
    let (reply, _) = timed_pass(&mut third, "gus", "gus-password");
    // 421, which clients retry (a 530 reads as a wrong password), and the session ends.
    assert_eq!(reply.code, 421, "{reply:?}");
    assert!(reply.text().contains("Too many sessions"), "{reply:?}");
    third.assert_closed();
    server.wait_audit("refused for gus", |ev| {
        ev.iter()
            .any(|e| e["event"] == "refused" && e["user"] == "gus" && e["code"] == 421)
    });

    // Another user is not affected.
    let mut other = server.register_and_login("hal", "hal-password");
    other.expect("NOOP", 200);

    // Once one of gus's sessions has ended, the third logs in (bounded retries: the slot is
    // freed when the session actor is gone, just after the client sees the close).
    first.expect("QUIT", 221);
    first.assert_closed();
    let deadline = Instant::now() + Duration::from_secs(5);
    let mut third = loop {
        let (mut third, _) = server.connect();
        let (reply, _) = timed_pass(&mut third, "gus", "gus-password");
        if reply.code == 230 {
            break third;
        }
        assert_eq!(reply.code, 421, "{reply:?}");
        assert!(Instant::now() < deadline, "the slot was never freed");
        std::thread::sleep(Duration::from_millis(50));
    };
    third.expect("PWD", 257);
    second.expect("NOOP", 200);
}

#[test]
fn transfers_per_user_are_capped_across_sessions() {
    let server = TestServer::start(&["--max-transfers-per-user", "1"]);
    let mut a = server.register_and_login("ivy", "ivy-password");
    std::fs::File::create(server.home("ivy").join("huge.bin"))
        .expect("create sparse file")
        .set_len(1 << 32)
        .expect("set_len");
    let data_a = a.data_connection();
    a.expect("RETR huge.bin", 150);

    let (mut b, _) = server.connect();
    b.login("ivy", "ivy-password");
    // A listing is no transfer for the cap: B lists while A's download holds the only place.
    let (listed, listing) = b.fetch("LIST");
    assert_eq!(listed.code, 226, "{listed:?}");
    assert!(String::from_utf8_lossy(&listing).contains("huge.bin"));
    let _data_b = b.data_connection();
    let refused = b.cmd("RETR huge.bin");
    assert_eq!(refused.code, 425, "{refused:?}");
    assert!(refused.text().contains("Too many transfers"), "{refused:?}");

    // Another user may transfer meanwhile.
    let mut other = server.register_and_login("jay", "jay-password");
    assert_eq!(other.stor("x.txt", b"x").code, 226);

    a.send("ABOR");
    assert_eq!(a.reply().code, 426);
    assert_eq!(a.reply().code, 226);
    drop(data_a);
    // The permit is released with the aborted transfer; B may upload now.
    assert_eq!(b.stor("y.txt", b"y").code, 226);
}

/// Creates `name` with `len` pseudo-random bytes in `user`'s home; returns the bytes.
fn put_file(server: &TestServer, user: &str, name: &str, len: usize, seed: u64) -> Vec<u8> {
    let bytes = pseudo_random(len, seed);
    std::fs::write(server.home(user).join(name), &bytes).expect("write file");
    bytes
}

/// Runs each `(control, file, expected bytes)` download at the same time; returns the wall
/// time from the first RETR to the last 226.
fn parallel_downloads(jobs: Vec<(Control, String, Vec<u8>)>) -> Duration {
    let start = Instant::now();
    std::thread::scope(|s| {
        let handles: Vec<_> = jobs
            .into_iter()
            .map(|(mut ctl, name, want)| {
                s.spawn(move || {
                    let got = ctl.retr(&name);
                    assert!(got == want, "{name}: wrong bytes ({} received)", got.len());
                })
            })
            .collect();
        for h in handles {
            h.join().expect("download thread");
        }
    });
    start.elapsed()
}

/// Runs each `(control, file, bytes)` upload at the same time; returns the wall time from the
/// first STOR to the last 226.
fn parallel_uploads(jobs: Vec<(Control, String, Vec<u8>)>) -> Duration {
    let start = Instant::now();
    std::thread::scope(|s| {
        let handles: Vec<_> = jobs
            .into_iter()
            .map(|(mut ctl, name, bytes)| {
                s.spawn(move || {
                    let reply = ctl.stor(&name, &bytes);
                    assert_eq!(reply.code, 226, "STOR {name}: {reply:?}");
                })
            })
            .collect();
        for h in handles {
            h.join().expect("upload thread");
        }
    });
    start.elapsed()
}

/// Asserts that `bytes` in `elapsed` is within 20% of `rate` bytes per second; returns it.
fn assert_rate(what: &str, bytes: usize, elapsed: Duration, rate: f64) -> f64 {
    #[allow(clippy::cast_precision_loss)]
    let measured = bytes as f64 / elapsed.as_secs_f64();
    eprintln!("{what}: {bytes} bytes in {elapsed:?} = {measured:.0} B/s (limit {rate:.0})");
    assert!(
        (measured - rate).abs() <= rate * 0.2,
        "{what}: {measured:.0} B/s is not within 20% of {rate:.0} B/s ({bytes} bytes in {elapsed:?})"
    );
    measured
}

#[test]
fn a_users_download_budget_is_shared_by_their_sessions() {
    let server = TestServer::start(&["--max-download-rate-per-user", "1000000"]);
    let a = server.register_and_login("kim", "kim-password");
    let (mut b, _) = server.connect();
    b.login("kim", "kim-password");
    let one = put_file(&server, "kim", "one.bin", MB, 1);
    let two = put_file(&server, "kim", "two.bin", MB, 2);
    let elapsed = parallel_downloads(vec![(a, "one.bin".into(), one), (b, "two.bin".into(), two)]);
    assert_rate("per-user download, 2 sessions", 2 * MB, elapsed, 1e6);
}

#[test]
fn a_users_upload_budget_is_shared_by_their_sessions() {
    let server = TestServer::start(&["--max-upload-rate-per-user", "1000000"]);
    let a = server.register_and_login("lee", "lee-password");
    let (mut b, _) = server.connect();
    b.login("lee", "lee-password");
    let one = pseudo_random(MB, 3);
    let two = pseudo_random(MB, 4);
    let elapsed = parallel_uploads(vec![
        (a, "one.bin".into(), one.clone()),
        (b, "two.bin".into(), two.clone()),
    ]);
    assert_rate("per-user upload, 2 sessions", 2 * MB, elapsed, 1e6);
    assert!(std::fs::read(server.home("lee").join("one.bin")).expect("one") == one);
    assert!(std::fs::read(server.home("lee").join("two.bin")).expect("two") == two);
}

#[test]
fn the_global_download_budget_is_shared_by_all_users() {
    let server = TestServer::start(&["--max-download-rate", "1000000"]);
    let a = server.register_and_login("max", "max-password");
    let b = server.register_and_login("ned", "ned-password");
    let one = put_file(&server, "max", "one.bin", MB, 5);
    let two = put_file(&server, "ned", "two.bin", MB, 6);
    let elapsed = parallel_downloads(vec![(a, "one.bin".into(), one), (b, "two.bin".into(), two)]);
    assert_rate("global download, 2 users", 2 * MB, elapsed, 1e6);
}

#[test]
fn the_global_upload_budget_is_shared_by_all_users() {
    let server = TestServer::start(&["--max-upload-rate", "1000000"]);
    let a = server.register_and_login("oli", "oli-password");
    let b = server.register_and_login("pam", "pam-password");
    let elapsed = parallel_uploads(vec![
        (a, "one.bin".into(), pseudo_random(MB, 7)),
        (b, "two.bin".into(), pseudo_random(MB, 8)),
    ]);
    assert_rate("global upload, 2 users", 2 * MB, elapsed, 1e6);
}

#[test]
fn one_users_budget_does_not_slow_another_user() {
    // Every user has a budget of their own: two users downloading at the same time each get
    // the full rate, not half of it.
    let server = TestServer::start(&["--max-download-rate-per-user", "1000000"]);
    let mut quin = server.register_and_login("quin", "quin-password");
    let mut rex = server.register_and_login("rex", "rex-password");
    let quin_bytes = put_file(&server, "quin", "q.bin", 3 * MB / 2, 9);
    let rex_bytes = put_file(&server, "rex", "r.bin", 3 * MB / 2, 10);
    fn timed(ctl: &mut Control, name: &str, want: &[u8]) -> Duration {
        let start = Instant::now();
        assert!(ctl.retr(name) == want, "{name}: wrong bytes");
        start.elapsed()
    }
    std::thread::scope(|s| {
        let q = s.spawn(|| timed(&mut quin, "q.bin", &quin_bytes));
        let r = s.spawn(|| timed(&mut rex, "r.bin", &rex_bytes));
        let q = q.join().expect("quin");
        let r = r.join().expect("rex");
        assert_rate("user quin alongside rex", 3 * MB / 2, q, 1e6);
        assert_rate("user rex alongside quin", 3 * MB / 2, r, 1e6);
    });
}

/// A stalled STOR of a new name ends in 426 and keeps what arrived, to be resumed (issue 11).
#[test]
fn a_stalled_upload_ends_with_426_and_keeps_what_arrived() {
    let server = TestServer::start(&["--data-timeout-secs", "1"]);
    let mut ctl = server.register_and_login("sam", "sam-password");
    let mut data = ctl.data_connection();
    ctl.expect("STOR stalled.bin", 150);
    let sent = pseudo_random(10_000, 11);
    data.write_all(&sent).expect("write part of the upload");
    let start = Instant::now();
    let reply = ctl.reply();
    assert_eq!(reply.code, 426, "{reply:?}");
    assert!(
        start.elapsed() < Duration::from_secs(5),
        "426 only after {:?}",
        start.elapsed()
    );
    // The server has closed its end of the data connection.
    let mut rest = Vec::new();
    match data.read_to_end(&mut rest) {
        Ok(_) => assert!(rest.is_empty()),
        Err(e) if e.kind() == std::io::ErrorKind::ConnectionReset => {}
        Err(e) => panic!("the stalled data connection stayed open: {e}"),
    }
    drop(data);
    ctl.expect("NOOP", 200);
    let size = ctl.expect("SIZE stalled.bin", 213);
    assert_eq!(size.text(), "213 10000");
    assert!(std::fs::read(server.home("sam").join("stalled.bin")).expect("kept") == sent);
    let deadline = Instant::now() + Duration::from_secs(5);
    loop {
        let left: Vec<_> = std::fs::read_dir(server.data_dir().join("tmp"))
            .map(|d| d.filter_map(Result::ok).map(|e| e.file_name()).collect())
            .unwrap_or_default();
        if left.is_empty() {
            break;
        }
        assert!(Instant::now() < deadline, "temporary files left: {left:?}");
        std::thread::sleep(Duration::from_millis(100));
    }
    let (reply, listing) = ctl.fetch("NLST");
    assert_eq!(reply.code, 226, "{reply:?}");
    assert_eq!(String::from_utf8_lossy(&listing), "stalled.bin\r\n");
}

/// A client writing `line` one byte every 200 ms on its own thread, never finishing it; the
/// reader waits for the server's last reply and the close. Returns (last reply code, time to
/// the close).
fn trickle(mut ctl: Control) -> std::thread::JoinHandle<(Option<u16>, Duration)> {
    let mut writer = ctl.stream().try_clone().expect("clone");
    let stop = Arc::new(AtomicBool::new(false));
    let stop_writer = Arc::clone(&stop);
    std::thread::spawn(move || {
        let start = Instant::now();
        let trickler = std::thread::spawn(move || {
            let deadline = Instant::now() + Duration::from_secs(15);
            for byte in b"NOOP NOOP NOOP NOOP NOOP NOOP NOOP NOOP NOOP NOOP NOOP NOOP NOOP NOOP"
                .iter()
                .cycle()
            {
                if stop_writer.load(Ordering::SeqCst) || Instant::now() > deadline {
                    break;
                }
                if writer.write_all(&[*byte]).is_err() {
                    break;
                }
                std::thread::sleep(Duration::from_millis(200));
            }
        });
        let last = ctl.try_reply().map(|r| r.code);
        stop.store(true, Ordering::SeqCst);
        // After its last reply the server closes (EOF or, if a trickled byte crossed the close,
        // a reset).
        let mut rest = Vec::new();
        let _ = ctl.stream().set_read_timeout(Some(Duration::from_secs(10)));
        let mut reader = ctl.stream().try_clone().expect("clone");
        match reader.read_to_end(&mut rest) {
            Ok(_) => {}
            Err(e) if e.kind() == std::io::ErrorKind::ConnectionReset => {}
            Err(e) => panic!("the trickling connection was not closed: {e}"),
        }
        let elapsed = start.elapsed();
        trickler.join().expect("trickler");
        (last, elapsed)
    })
}

#[test]
fn tricklers_are_closed_by_the_timeouts_while_others_are_served() {
    let server = TestServer::start(&["--login-timeout-secs", "2", "--idle-timeout-secs", "2"]);
    let mut busy = server.register_and_login("tom", "tom-password");
    let (before_login, _) = server.connect();
    let mut logged_in = server.register_and_login("una", "una-password");
    logged_in.expect("NOOP", 200);
    let tricklers = [trickle(before_login), trickle(logged_in)];
    // Meanwhile another session answers promptly; it keeps itself alive with NOOPs.
    let deadline = Instant::now() + Duration::from_secs(10);
    let mut worst = Duration::ZERO;
    while !tricklers.iter().all(|t| t.is_finished()) {
        assert!(Instant::now() < deadline, "a trickler was never closed");
        let start = Instant::now();
        busy.expect("NOOP", 200);
        worst = worst.max(start.elapsed());
        std::thread::sleep(Duration::from_millis(100));
    }
    assert!(worst < Duration::from_millis(500), "a NOOP took {worst:?}");
    for (which, t) in ["before login", "logged in"].iter().zip(tricklers) {
        let (last, elapsed) = t.join().expect("trickle thread");
        if let Some(code) = last {
            assert_eq!(code, 421, "{which}: last reply {code}");
        }
        assert!(
            elapsed >= Duration::from_millis(1500) && elapsed < Duration::from_secs(6),
            "{which}: closed after {elapsed:?}"
        );
    }
    busy.expect("NOOP", 200);
}
