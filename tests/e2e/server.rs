//! End-to-end behaviour of `ferryd` over real TCP with the raw control client from
//! `common`: concurrency, jails, login failures, restart, graceful shutdown, session caps,
//! timeouts, the codec on the wire, the operator commands and aborted uploads.

use crate::common;

use std::io::{Read, Write};
use std::net::Shutdown;
use std::time::{Duration, Instant};

use common::{Control, TestServer, has_event, pseudo_random};
use serde_json::json;

#[test]
fn fifty_concurrent_sessions_each_upload_and_download() {
    const SESSIONS: usize = 50;
    let server = TestServer::start(&[]);
    // Connect and greet all of them first, so the 50 sessions are open at the same time.
    let controls: Vec<Control> = (0..SESSIONS)
        .map(|_| {
            let (ctl, greeting) = server.connect();
            assert_eq!(greeting.code, 220, "{greeting:?}");
            ctl
        })
        .collect();
    let workers: Vec<_> = controls
        .into_iter()
        .enumerate()
        .map(|(i, mut ctl)| {
            std::thread::spawn(move || {
                let user = format!("user{i:02}");
                let pass = format!("password-{i:02}");
                ctl.expect(&format!("SITE REGISTER {user} {pass}"), 200);
                ctl.login(&user, &pass);
                let payload = pseudo_random(200 * 1024 + i, 100 + i as u64);
                let reply = ctl.stor("mine.bin", &payload);
                assert_eq!(reply.code, 226, "{user}: {reply:?}");
                let back = ctl.retr("mine.bin");
                assert!(back == payload, "{user}: downloaded bytes differ");
                ctl.expect("QUIT", 221);
                (user, payload)
            })
        })
        .collect();
    let mut failures = Vec::new();
    let mut done = Vec::new();
    for (i, worker) in workers.into_iter().enumerate() {
        match worker.join() {
            Ok(result) => done.push(result),
            Err(_) => failures.push(i),
        }
    }
    assert!(failures.is_empty(), "sessions {failures:?} failed");
    for (user, payload) in done {
        let stored = std::fs::read(server.home(&user).join("mine.bin")).expect("stored file");
        assert!(stored == payload, "{user}: stored bytes differ");
    }
}

#[test]
fn users_cannot_see_or_touch_each_other() {
    let server = TestServer::start(&[]);
    let mut bob = server.register_and_login("bob", "bob-password");
    bob.expect("MKD private", 257);
    let secret = b"bob's secret".to_vec();
    assert_eq!(bob.stor("private/secret.txt", &secret).code, 226);
    assert_eq!(bob.stor("x", b"x").code, 226);

    let mut alice = server.register_and_login("alice", "alice-password");
    let bob_home = server.home("bob");
    let real_file = bob_home.join("private/secret.txt");
    let real_dir = bob_home.join("private");
    let files = [
        "../bob/x".to_owned(),
        "/../bob/x".to_owned(),
        "../bob/private/secret.txt".to_owned(),
        "/../../bob/private/secret.txt".to_owned(),
        "/home/bob/private/secret.txt".to_owned(),
        "../../home/bob/x".to_owned(),
        real_file.display().to_string(),
    ];
    let dirs = [
        "../bob".to_owned(),
        "/../bob".to_owned(),
        "/home/bob".to_owned(),
        "../bob/private".to_owned(),
        bob_home.display().to_string(),
        real_dir.display().to_string(),
    ];
    for path in &files {
        let (reply, bytes) = alice.fetch(&format!("RETR {path}"));
        assert_eq!(reply.code, 550, "RETR {path}: {reply:?}");
        assert!(bytes.is_empty());
        alice.expect(&format!("DELE {path}"), 550);
        alice.expect(&format!("RNFR {path}"), 550);
        alice.expect(&format!("SIZE {path}"), 550);
    }
    for path in files.iter().chain(&dirs) {
        let (reply, bytes) = alice.fetch(&format!("LIST {path}"));
        assert_eq!(
            reply.code,
            550,
            "LIST {path}: {reply:?} {:?}",
            String::from_utf8_lossy(&bytes)
        );
    }
    for path in &dirs {
        alice.expect(&format!("CWD {path}"), 550);
        alice.expect(&format!("RMD {path}"), 550);
    }
    // After all that alice still stands in her own, empty root.
    alice.expect("CWD ..", 250);
    let pwd = alice.expect("PWD", 257);
    assert!(pwd.text().contains("\"/\""), "{pwd:?}");
    let (reply, listing) = alice.fetch("NLST");
    assert_eq!(reply.code, 226);
    assert!(
        listing.is_empty(),
        "alice sees {:?}",
        String::from_utf8_lossy(&listing)
    );

    assert_eq!(std::fs::read(&real_file).expect("bob's file"), secret);
    assert_eq!(std::fs::read(bob_home.join("x")).expect("bob's x"), b"x");
    assert_eq!(bob.retr("private/secret.txt"), secret);
}

#[test]
fn failed_logins_get_530_are_audited_and_the_third_closes() {
    let server = TestServer::start(&[]);
    let (mut ctl, _) = server.connect();
    ctl.expect("SITE REGISTER alice alice-password", 200);
    for attempt in 1..=3 {
        ctl.expect("USER alice", 331);
        let reply = ctl.cmd("PASS wrong-password");
        assert_eq!(reply.code, 530, "attempt {attempt}: {reply:?}");
    }
    let last = ctl.try_reply().expect("a 421 after the third failure");
    assert_eq!(last.code, 421, "{last:?}");
    ctl.assert_closed();

    let events = server.wait_audit("three login_failed events", |ev| {
        ev.iter()
            .filter(|e| e["event"] == "login_failed" && e["user"] == "alice")
            .count()
            == 3
    });
    assert!(!has_event(&events, &[("event", json!("login_ok"))]));
    assert!(!server.audit_text().contains("wrong-password"));

    // The right password still works on a new connection.
    let (mut ctl, _) = server.connect();
    ctl.login("alice", "alice-password");
}

/// Every log line of a session names it and its client address, as the audit log does, so
/// the two can be matched; the ban line too, which is written by the session that banned.
#[test]
fn session_log_lines_carry_the_session_and_client_address() {
    let server = TestServer::start(&["--ban-after-failures", "1", "--login-failure-delay-ms", "0"]);
    let (mut ctl, _) = server.connect();
    ctl.expect("USER nobody", 331);
    assert_eq!(ctl.cmd("PASS wrong-password").code, 530);
    let events = server.wait_audit("a login_failed event", |ev| {
        ev.iter().any(|e| e["event"] == "login_failed")
    });
    let failed = events
        .iter()
        .find(|e| e["event"] == "login_failed")
        .expect("login_failed");
    let client = ctl.stream().local_addr().expect("local address");
    assert_eq!(failed["peer"], json!(client.to_string()), "{failed}");
    let stamp = format!("session {} {client}: ", failed["session"]);
    server.wait_stderr(&format!("{stamp}login failed for \"nobody\""));
    server.wait_stderr(&format!("{stamp}address banned for "));
}

#[test]
fn restart_keeps_accounts_and_files() {
    let mut server = TestServer::start(&[]);
    let payload = pseudo_random(123_457, 7);
    let mut ctl = server.register_and_login("carol", "carol-password");
    ctl.expect("MKD keep", 257);
    assert_eq!(ctl.stor("keep/data.bin", &payload).code, 226);
    ctl.expect("QUIT", 221);

    server.restart();
    let (mut ctl, greeting) = server.connect();
    assert_eq!(greeting.code, 220);
    ctl.login("carol", "carol-password");
    assert!(
        ctl.retr("keep/data.bin") == payload,
        "content changed across restart"
    );
    // The name is still taken after the restart.
    let (mut other, _) = server.connect();
    other.expect("SITE REGISTER carol another-password", 550);
}

#[test]
fn sigterm_sends_421_to_idle_sessions_and_exits_0() {
    let mut server = TestServer::start(&[]);
    let mut ctl = server.register_and_login("dave", "dave-password");
    ctl.expect("NOOP", 200);
    server.stop();
    let reply = ctl.try_reply().expect("a 421 on shutdown");
    assert_eq!(reply.code, 421, "{reply:?}");
    ctl.assert_closed();
    // The process has exited, so the audit log is complete now: no waiting.
    let events = server.audit_events();
    assert!(
        has_event(
            &events,
            &[("event", json!("session_close")), ("user", json!("dave"))]
        ),
        "{events:#?}"
    );
}

#[test]
fn sigint_during_startup_is_not_lost_even_when_inherited_as_ignored() {
    use std::io::BufRead;
    // A script's background job starts with SIGINT ignored; the server installs its own
    // handler before starting up. An unfinished upload left in tmp/ makes it log a line
    // during start-up, before "listening on": the signal is sent right then.
    let dir = tempfile::tempdir().expect("temp dir");
    std::fs::create_dir_all(dir.path().join("tmp")).expect("tmp dir");
    let stale = dir.path().join("tmp/00000000deadbeef.part");
    std::fs::write(&stale, b"half an upload").expect("stale upload");
    let mut child = std::process::Command::new("sh")
        .arg("-c")
        .arg("trap '' INT; exec \"$0\" --listen 127.0.0.1:0 --data-dir \"$1\"")
        .arg(common::FERRYD)
        .arg(dir.path())
        .env("RUST_LOG", "info")
        .stderr(std::process::Stdio::piped())
        .spawn()
        .expect("spawn ferryd");
    let mut lines = std::io::BufReader::new(child.stderr.take().expect("stderr")).lines();
    let mut seen = Vec::new();
    for line in lines.by_ref().take(50) {
        let line = line.expect("stderr line");
        seen.push(line.clone());
        if line.contains("unfinished uploads") {
            break;
        }
    }
    assert!(
        seen.iter()
            .any(|l| l.contains("removed 1 unfinished uploads")),
        "{seen:?}"
    );
    assert!(!stale.exists(), "the stale upload was not removed");
    let pid = child.id().to_string();
    common::require_program("kill");
    let kill = std::process::Command::new("kill")
        .args(["-INT", &pid])
        .status()
        .expect("run kill");
    assert!(kill.success());
    let status = common::wait_timeout(&mut child, Duration::from_secs(20)).unwrap_or_else(|| {
        let _ = child.kill();
        panic!("a SIGINT during start-up was lost; stderr: {seen:?}");
    });
    let rest: Vec<String> = lines.map_while(Result::ok).collect();
    assert!(status.success(), "{status}; stderr: {seen:?} {rest:?}");
    assert!(rest.iter().any(|l| l.contains("stopped")), "{rest:?}");
}

#[test]
fn sigterm_lets_a_running_download_finish_then_421() {
    let mut server = TestServer::start(&[]);
    let mut ctl = server.register_and_login("mia", "mia-password");
    let payload = pseudo_random(20 * 1024 * 1024, 31);
    assert_eq!(ctl.stor("big.bin", &payload).code, 226);

    let mut data = ctl.data_connection();
    ctl.expect("RETR big.bin", 150);
    // Nobody reads yet, so the socket buffers fill and the transfer is still running when the
    // server starts to shut down; the reader is released only once it has.
    server.send_sigterm();
    server.wait_stderr("shutting down");
    let reader = std::thread::spawn(move || {
        let mut got = Vec::new();
        data.read_to_end(&mut got).map(|_| got)
    });
    let status = server.wait_exit();
    assert!(status.success(), "exit status {status}");
    let got = reader
        .join()
        .expect("reader thread")
        .expect("read the download");
    assert!(
        got == payload,
        "download cut short: {} of {} bytes",
        got.len(),
        payload.len()
    );
    let done = ctl.reply();
    assert_eq!(done.code, 226, "{done:?}");
    let bye = ctl.try_reply().expect("a 421 after the transfer");
    assert_eq!(bye.code, 421, "{bye:?}");
    ctl.assert_closed();
    let events = server.audit_events();
    assert!(has_event(
        &events,
        &[
            ("event", json!("download")),
            ("user", json!("mia")),
            ("bytes", json!(payload.len())),
            ("code", json!(226))
        ]
    ));
}

#[test]
fn data_timeout_when_the_client_never_connects() {
    let server = TestServer::start(&["--data-timeout-secs", "1"]);
    let mut ctl = server.register_and_login("nina", "nina-password");
    ctl.pasv();
    ctl.expect("STOR never.bin", 150);
    let reply = ctl.reply();
    assert_eq!(reply.code, 425, "{reply:?}");
    ctl.expect("NOOP", 200);
    assert!(!server.home("nina").join("never.bin").exists());
    assert_tmp_empties(&server);
}

#[test]
fn navigation_and_info_commands() {
    let server = TestServer::start(&[]);
    let mut ctl = server.register_and_login("omar", "omar-password");
    ctl.expect("MKD a", 257);
    let made = ctl.expect("XMKD a/b \"q\"", 257);
    assert!(
        made.text().contains("\"/a/b \"\"q\"\"\""),
        "257 doubles quotes: {made:?}"
    );
    ctl.expect("CWD a", 250);
    let pwd = ctl.expect("XPWD", 257);
    assert!(pwd.text().contains("\"/a\""), "{pwd:?}");
    ctl.expect("CDUP", 250);
    let pwd = ctl.expect("PWD", 257);
    assert!(pwd.text().contains("\"/\""), "{pwd:?}");
    assert_eq!(ctl.stor("a/f.txt", b"12345").code, 226);
    assert_eq!(ctl.expect("SIZE a/f.txt", 213).text(), "213 5");
    let mdtm = ctl.expect("MDTM a/f.txt", 213);
    assert!(mdtm.text()[4..].len() >= 14, "{mdtm:?}");
    let mlst = ctl.expect("MLST a/f.txt", 250);
    assert!(
        mlst.lines.len() >= 3 && mlst.text().contains("size=5;"),
        "{mlst:?}"
    );
    let feat = ctl.expect("FEAT", 211);
    for feature in ["MLST", "SIZE", "MDTM", "EPSV"] {
        assert!(feat.text().contains(feature), "{feat:?}");
    }
    ctl.expect("HELP", 214);
    ctl.expect("SITE HELP", 214);
    ctl.expect("SYST", 215);
    ctl.expect("TYPE A", 200);
    ctl.expect("TYPE I", 200);
    ctl.expect("MODE S", 200);
    ctl.expect("STRU F", 200);
    ctl.expect("SIZE a/none", 550);
    ctl.expect("CWD a/f.txt", 550);
    ctl.expect("RMD a", 550);
    let (reply, names) = ctl.fetch("NLST a");
    assert_eq!(reply.code, 226);
    let names = String::from_utf8_lossy(&names).into_owned();
    assert!(
        names.contains("f.txt") && names.contains("b \"q\""),
        "{names:?}"
    );
    // EPSV works as well as PASV.
    let epsv = ctl.expect("EPSV", 229);
    let port: u16 = epsv
        .text()
        .split("|||")
        .nth(1)
        .and_then(|s| s.split('|').next())
        .and_then(|p| p.parse().ok())
        .unwrap_or_else(|| panic!("no port in {epsv:?}"));
    let mut data = std::net::TcpStream::connect(("127.0.0.1", port)).expect("EPSV connect");
    data.set_read_timeout(Some(common::IO_TIMEOUT))
        .expect("timeout");
    ctl.expect("RETR a/f.txt", 150);
    let mut got = Vec::new();
    data.read_to_end(&mut got).expect("read");
    assert_eq!(got, b"12345");
    assert_eq!(ctl.reply().code, 226);
}

#[test]
fn site_passwd_changes_the_password() {
    let server = TestServer::start(&[]);
    let mut ctl = server.register_and_login("pia", "old-password");
    ctl.expect("SITE PASSWD wrong-password new-password", 530);
    let weak = ctl.expect("SITE PASSWD old-password short", 501);
    // The reply says what is needed (the default minimum is 8 characters).
    assert!(weak.text().contains("at least 8 characters"), "{weak:?}");
    ctl.expect("SITE PASSWD old-password new-password", 200);
    ctl.expect("QUIT", 221);
    let (mut ctl, _) = server.connect();
    ctl.expect("USER pia", 331);
    ctl.expect("PASS old-password", 530);
    ctl.expect("USER pia", 331);
    ctl.expect("PASS new-password", 230);
    server.wait_audit("SITE PASSWD audited without passwords", |ev| {
        ev.iter().any(|e| {
            e["command"]
                .as_str()
                .is_some_and(|c| c.starts_with("SITE PASSWD"))
        })
    });
    let audit = server.audit_text();
    assert!(
        !audit.contains("old-password") && !audit.contains("new-password"),
        "{audit}"
    );
}

#[test]
fn per_ip_session_cap_refuses_then_admits_again() {
    let server = TestServer::start(&["--max-sessions-per-ip", "2"]);
    let (mut first, g1) = server.connect();
    let (mut second, g2) = server.connect();
    assert_eq!((g1.code, g2.code), (220, 220));
    let (mut third, g3) = server.connect();
    assert_eq!(g3.code, 421, "{g3:?}");
    third.assert_closed();
    second.expect("NOOP", 200);

    first.expect("QUIT", 221);
    first.assert_closed();
    // The slot is released asynchronously: retry, bounded.
    let mut admitted = None;
    for _ in 0..50 {
        let (ctl, greeting) = server.connect();
        if greeting.code == 220 {
            admitted = Some(ctl);
            break;
        }
        assert_eq!(greeting.code, 421, "{greeting:?}");
        std::thread::sleep(Duration::from_millis(100));
    }
    let mut fourth = admitted.expect("a new session after one quit");
    fourth.expect("NOOP", 200);
    second.expect("NOOP", 200);
}

#[test]
fn total_session_cap_refuses_with_421() {
    let server = TestServer::start(&["--max-sessions", "1"]);
    let (mut first, greeting) = server.connect();
    assert_eq!(greeting.code, 220);
    let (mut second, refused) = server.connect();
    assert_eq!(refused.code, 421, "{refused:?}");
    second.assert_closed();
    first.expect("NOOP", 200);
}

#[test]
fn login_timeout_closes_idle_unauthenticated_connection() {
    let server = TestServer::start(&["--login-timeout-secs", "1"]);
    let (mut ctl, greeting) = server.connect();
    assert_eq!(greeting.code, 220);
    let started = Instant::now();
    let reply = ctl.try_reply().expect("a 421 on login timeout");
    assert_eq!(reply.code, 421, "{reply:?}");
    ctl.assert_closed();
    assert!(
        started.elapsed() >= Duration::from_millis(500),
        "closed too early"
    );
}

#[test]
fn idle_timeout_closes_logged_in_session() {
    let server = TestServer::start(&["--idle-timeout-secs", "1"]);
    let mut ctl = server.register_and_login("erin", "erin-password");
    let reply = ctl.try_reply().expect("a 421 on idle timeout");
    assert_eq!(reply.code, 421, "{reply:?}");
    ctl.assert_closed();
}

#[test]
fn codec_survives_an_over_long_line() {
    let server = TestServer::start(&[]);
    let (mut ctl, _) = server.connect();
    let long = vec![b'A'; 1024 * 1024];
    ctl.send_raw(&long);
    ctl.send_raw(b"\r\nNOOP\r\n");
    let first = ctl.reply();
    assert_eq!(first.code, 500, "{first:?}");
    let second = ctl.reply();
    assert_eq!(second.code, 200, "{second:?}");
}

#[test]
fn codec_rejects_non_utf8_and_keeps_going() {
    let server = TestServer::start(&[]);
    let (mut ctl, _) = server.connect();
    // No 0xFF bytes here: those are Telnet IAC and get stripped before decoding.
    for line in [
        &b"USER \xc3\x28\x80\r\n"[..],
        b"\xe9t\xe9\r\n",
        b"CWD caf\xe9\r\n",
    ] {
        ctl.send_raw(line);
        let reply = ctl.reply();
        assert_eq!(
            reply.code,
            501,
            "{:?}: {reply:?}",
            String::from_utf8_lossy(line)
        );
    }
    ctl.expect("NOOP", 200);
}

#[test]
fn pipelined_commands_are_answered_in_order() {
    let server = TestServer::start(&[]);
    let (mut ctl, _) = server.connect();
    ctl.send_raw(b"USER a\r\nPASS b\r\nNOOP\r\nSYST\r\n");
    let codes: Vec<u16> = (0..4).map(|_| ctl.reply().code).collect();
    assert_eq!(codes, [331, 530, 200, 215]);
}

#[test]
fn protocol_errors_get_the_right_codes() {
    let server = TestServer::start(&[]);
    let (mut ctl, _) = server.connect();
    ctl.expect("FOOBAR x", 502);
    ctl.expect("RETR x", 530);
    ctl.expect("LIST", 530);
    ctl.expect("PASS nobody-asked", 503);
    ctl.expect("SITE REGISTER frank frank-password", 200);
    ctl.expect("SITE REGISTER frank frank-password", 550);
    ctl.expect("SITE REGISTER ../x frank-password", 501);
    ctl.expect("SITE REGISTER gina short", 501);
    ctl.login("frank", "frank-password");
    ctl.expect("RNTO y", 503);
    ctl.expect("STOR y", 425);
    ctl.expect("RETR y", 425);
    ctl.expect("PORT 10,0,0,1,4,1", 500);
    ctl.expect("PORT 127,0,0,1,0,21", 500);
    ctl.expect("EPRT |1|10.0.0.1|1025|", 500);
    ctl.expect("EPRT |3|x|1025|", 522);
    ctl.pasv();
    ctl.expect("STOR newdir/", 553);
    assert!(!server.home("frank").join("newdir").exists());
    ctl.expect("FOOBAR", 502);
    ctl.expect("QUIT", 221);
    ctl.assert_closed();
}

#[test]
fn closed_registration_refuses_site_register() {
    let server = TestServer::start(&["--registration", "closed"]);
    let (mut ctl, _) = server.connect();
    ctl.expect("SITE REGISTER henry henry-password", 550);
    assert!(!server.data_dir().join("accounts/henry.json").exists());
}

#[test]
fn operator_commands_add_list_and_show_log() {
    let server = TestServer::start(&[]);
    let out = server.admin(
        &[
            "user",
            "add",
            "ivan",
            "--password-stdin",
            "--iterations",
            "1000",
        ],
        Some("ivan-password\n"),
    );
    assert!(
        out.status.success(),
        "user add: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(server.home("ivan").is_dir());

    let out = server.admin(&["user", "list"], None);
    assert!(
        out.status.success(),
        "user list: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let listed = String::from_utf8_lossy(&out.stdout);
    // Output ends with a newline, so the shell prompt starts on a line of its own.
    assert!(
        listed.contains("ivan") && listed.ends_with('\n'),
        "{listed:?}"
    );

    // Log in with a client we did not write.
    let mut ftp =
        suppaftp::FtpStream::connect_timeout(server.addr(), common::IO_TIMEOUT).expect("connect");
    ftp.get_ref()
        .set_read_timeout(Some(common::IO_TIMEOUT))
        .expect("timeout");
    ftp.login("ivan", "ivan-password")
        .expect("login as operator-made user");
    ftp.mkdir("made-by-ivan").expect("MKD");
    ftp.quit().expect("QUIT");
    // Someone else, whose events must not show up.
    let mut other = server.register_and_login("judy", "judy-password");
    other.expect("MKD made-by-judy", 257);
    other.expect("QUIT", 221);

    server.wait_audit("ivan's and judy's sessions closed", |ev| {
        has_event(
            ev,
            &[("event", json!("session_close")), ("user", json!("ivan"))],
        ) && has_event(
            ev,
            &[("event", json!("session_close")), ("user", json!("judy"))],
        )
    });
    let out = server.admin(&["log", "--user", "ivan", "--tail", "5"], None);
    assert!(
        out.status.success(),
        "log: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let table = String::from_utf8_lossy(&out.stdout).into_owned();
    assert!(table.ends_with('\n'), "{table:?}");
    assert!(
        !table.contains('\x1b'),
        "ANSI escapes in piped output: {table:?}"
    );
    let rows: Vec<&str> = table
        .lines()
        .filter(|l| l.starts_with('|'))
        .skip(1)
        .collect();
    assert_eq!(rows.len(), 5, "--tail 5:\n{table}");
    assert!(rows.iter().all(|r| r.contains(" ivan ")), "{table}");
    assert!(table.contains("ivan"), "{table}");
    assert!(table.contains("session_close"), "{table}");
    assert!(
        table.contains("made-by-ivan") || table.contains("mkdir"),
        "{table}"
    );
    assert!(!table.contains("judy"), "{table}");
    assert!(!table.contains("ivan-password"), "{table}");

    let out = server.admin(&["log", "--event", "mkdir"], None);
    let table = String::from_utf8_lossy(&out.stdout).into_owned();
    assert!(
        table.contains("made-by-ivan") && table.contains("made-by-judy"),
        "{table}"
    );
    assert!(!table.contains("login_ok"), "{table}");

    let out = server.admin(&["user", "del", "ivan"], None);
    assert!(
        out.status.success(),
        "user del: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let out = server.admin(&["user", "list"], None);
    assert!(!String::from_utf8_lossy(&out.stdout).contains("ivan"));
}

/// Waits (bounded) until `DIR/tmp` holds no staged upload.
fn assert_tmp_empties(server: &TestServer) {
    let tmp = server.data_dir().join("tmp");
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let left: Vec<_> = std::fs::read_dir(&tmp)
            .map(|d| d.filter_map(Result::ok).map(|e| e.file_name()).collect())
            .unwrap_or_default();
        if left.is_empty() {
            return;
        }
        assert!(
            Instant::now() < deadline,
            "staged uploads left in tmp/: {left:?}"
        );
        std::thread::sleep(Duration::from_millis(100));
    }
}

#[test]
fn aborted_upload_with_abor_keeps_previous_content() {
    let server = TestServer::start(&[]);
    let mut ctl = server.register_and_login("kim", "kim-password");
    let original = pseudo_random(64 * 1024, 11);
    assert_eq!(ctl.stor("file.bin", &original).code, 226);

    let mut data = ctl.data_connection();
    ctl.expect("STOR file.bin", 150);
    data.write_all(&pseudo_random(512 * 1024, 12))
        .expect("send part");
    data.flush().expect("flush");
    ctl.send("ABOR");
    // RFC 959: 426 for the STOR, then 226 for ABOR (a quick transfer may also end in 226 + 225/226).
    let mut codes = vec![ctl.reply().code];
    if codes[0] == 426 {
        codes.push(ctl.reply().code);
    }
    assert_eq!(codes, [426, 226], "STOR + ABOR replies");
    drop(data);
    ctl.expect("NOOP", 200);

    assert!(std::fs::read(server.home("kim").join("file.bin")).expect("file") == original);
    assert_tmp_empties(&server);
    assert!(ctl.retr("file.bin") == original);
}

#[test]
fn dropped_connection_mid_upload_keeps_previous_content() {
    let server = TestServer::start(&[]);
    let mut ctl = server.register_and_login("lee", "lee-password");
    let original = pseudo_random(64 * 1024, 21);
    assert_eq!(ctl.stor("file.bin", &original).code, 226);

    let mut data = ctl.data_connection();
    ctl.expect("STOR file.bin", 150);
    data.write_all(&pseudo_random(512 * 1024, 22))
        .expect("send part");
    // Drop the control connection while the data socket is still open, and only close the
    // data socket once the server has ended the session (so it never sees a clean EOF first).
    ctl.stream()
        .shutdown(Shutdown::Both)
        .expect("shutdown control");
    drop(ctl);
    server.wait_audit("lee's session_close", |ev| {
        has_event(
            ev,
            &[("event", json!("session_close")), ("user", json!("lee"))],
        )
    });
    // The server should have dropped its side of the data connection too.
    let mut rest = Vec::new();
    match data.read_to_end(&mut rest) {
        Ok(_) => {}
        Err(e) if e.kind() == std::io::ErrorKind::ConnectionReset => {}
        Err(e) => panic!("server kept the data connection of a closed session: {e}"),
    }
    drop(data);

    assert_tmp_empties(&server);
    assert!(std::fs::read(server.home("lee").join("file.bin")).expect("file") == original);
    let events = server.audit_events();
    assert!(
        !has_event(
            &events,
            &[
                ("event", json!("upload")),
                ("user", json!("lee")),
                ("code", json!(226)),
                ("bytes", json!(512 * 1024))
            ]
        ),
        "aborted upload recorded as complete"
    );
}

#[test]
fn mlsd_of_a_directory_holding_one_file_lists_it_and_mlsd_of_a_file_is_501() {
    let server = TestServer::start(&[]);
    let mut ctl = server.register_and_login("judy", "judy-password");
    ctl.expect("MKD solo", 257);
    assert_eq!(ctl.stor("solo/only.txt", b"x").code, 226);
    let (reply, bytes) = ctl.fetch("MLSD solo");
    assert_eq!(reply.code, 226);
    let text = String::from_utf8(bytes).expect("utf8");
    assert!(
        text.contains("type=file;size=1;") && text.ends_with(" only.txt\r\n"),
        "{text:?}"
    );
    let (reply, _) = ctl.fetch("MLSD solo/only.txt");
    assert_eq!(reply.code, 501);
}

#[test]
fn an_ipv6_listener_serves_a_whole_session() {
    let server = TestServer::start(&["--listen", "[::1]:0"]);
    server.wait_stderr("listening on [::1]:");
    let v6: std::net::SocketAddr = server
        .stderr()
        .lines()
        .find_map(|l| {
            l.split("listening on ")
                .nth(1)
                .filter(|a| a.starts_with('['))
        })
        .and_then(|a| a.trim().parse().ok())
        .expect("an IPv6 listening line");
    let mut ctl = Control::connect(v6);
    assert_eq!(ctl.reply().code, 220);
    ctl.expect("SITE REGISTER kate kate-password", 200);
    ctl.login("kate", "kate-password");
    ctl.expect("PASV", 425);
    let bytes = pseudo_random(100_000, 6);
    assert_eq!(ctl.stor("v6.bin", &bytes).code, 226);
    assert_eq!(ctl.retr("v6.bin"), bytes);
    ctl.expect("QUIT", 221);
}

#[test]
fn a_client_gone_mid_transfer_still_leaves_the_command_in_the_audit_log() {
    let server = TestServer::start(&[]);
    let mut ctl = server.register_and_login("otto", "otto-password");
    // Larger than what loopback socket buffers hold, so the download cannot end on its own
    // while the data connection is not read.
    let big = pseudo_random(48 * 1024 * 1024, 31);
    std::fs::write(server.home("otto").join("big.bin"), &big).expect("write big.bin");
    let mut upload = ctl.data_connection();
    ctl.expect("STOR part.bin", 150);
    upload.write_all(b"some bytes").expect("send part");
    // The upload waits for more; a download starts on a second session of the same user.
    let mut other = Control::connect(server.addr());
    assert_eq!(other.reply().code, 220);
    other.login("otto", "otto-password");
    let download = other.data_connection();
    other.expect("RETR big.bin", 150);
    // Both clients vanish, their data connections still open: the sessions end on the control
    // connection's EOF while the transfers run.
    for ctl in [ctl, other] {
        ctl.stream()
            .shutdown(Shutdown::Both)
            .expect("shutdown control");
    }
    let events = server.wait_sessions_closed("otto", 2);
    drop((upload, download));
    for command in ["STOR part.bin", "RETR big.bin"] {
        assert!(
            has_event(
                &events,
                &[
                    ("event", json!("command")),
                    ("user", json!("otto")),
                    ("command", json!(command)),
                    ("code", json!(426)),
                ]
            ),
            "no command event for {command}: {events:?}"
        );
    }
}

/// Runs `ferryd ARGS` in `cwd` (no `--data-dir`: the default `./var` is `cwd/var`), without a
/// controlling terminal (`setsid`), feeding `stdin`.
fn ferryd_in(cwd: &std::path::Path, args: &[&str], stdin: &str) -> common::Run {
    let mut child = std::process::Command::new("setsid")
        .arg("--wait")
        .arg(common::FERRYD)
        .args(args)
        .current_dir(cwd)
        .env_remove("RUST_LOG")
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .expect("spawn setsid ferryd");
    let mut pipe = child.stdin.take().expect("piped stdin");
    pipe.write_all(stdin.as_bytes()).expect("write stdin");
    drop(pipe);
    common::Run::from(common::run_bounded(child, Duration::from_secs(30)))
}

#[test]
fn operator_commands_name_the_default_data_dir_and_reading_creates_nothing() {
    let cwd = tempfile::tempdir().expect("temp dir");
    let var = cwd.path().join("var");
    let shown = var.display().to_string();
    for args in [
        &["user", "list"][..],
        &["log"],
        &["invite", "list"],
        &["user", "quota", "nobody"],
        // Nothing to delete where there is no data directory.
        &["user", "del", "nobody"],
    ] {
        let run = ferryd_in(cwd.path(), args, "");
        let lines: Vec<&str> = run.stderr.lines().collect();
        assert!(
            lines.first().is_some_and(|l| l.contains(&shown)),
            "ferryd {args:?} does not name {shown}:\n{}",
            run.stderr
        );
        assert!(
            !var.exists(),
            "ferryd {args:?} created {shown}:\n{}",
            run.stderr
        );
    }
    assert!(
        ferryd_in(cwd.path(), &["user", "list"], "").code == Some(0),
        "user list of a missing data dir is an empty list"
    );

    // A write names the directory it creates; once it holds accounts, nothing more is said.
    let add = [
        "user",
        "add",
        "vera",
        "--password-stdin",
        "--iterations",
        "1000",
    ];
    let run = ferryd_in(cwd.path(), &add, "vera-password\n");
    assert_eq!(run.code, Some(0), "{}", run.stderr);
    assert!(run.stderr.contains(&shown), "{}", run.stderr);
    assert!(var.join("accounts").is_dir());
    let run = ferryd_in(cwd.path(), &["user", "list"], "");
    run.ok("user list with accounts in ./var").has("vera");

    // Without a terminal a password can only come from standard input: say so.
    let run = ferryd_in(cwd.path(), &["user", "add", "walt"], "walt-password\n");
    assert_ne!(run.code, Some(0), "{}", run.stdout);
    assert!(run.stderr.contains("--password-stdin"), "{}", run.stderr);
    let run = ferryd_in(cwd.path(), &["user", "passwd", "vera"], "other-password\n");
    assert_ne!(run.code, Some(0), "{}", run.stdout);
    assert!(run.stderr.contains("--password-stdin"), "{}", run.stderr);
    let run = ferryd_in(cwd.path(), &["user", "list"], "");
    run.ok("user list").lacks("walt");
}
