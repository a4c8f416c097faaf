//! Attacks on the quota and on files a refused transfer touches (issue 10, items 2 and 6), over
//! real sockets against a `ferryd` child process: two sessions of one user racing in bounded
//! loops (STOR over a file renamed away, APPE against a STOR over the same name, APPE against a
//! rename), a directory flood under a byte quota, `kill -9` during an APPE, a tree deeper than
//! PATH_MAX, a lost or unreadable ledger, and REST+STOR / APPE / STOU refused with 425 or 521.
//!
//! After every round the server's ledger (`SITE QUOTA`) must equal a recount of the home made
//! here, and the home must never hold more than the limit plus one chunk in flight.

use crate::common;

use std::io::Write;
use std::net::{Shutdown, TcpStream};
use std::os::unix::fs::MetadataExt;
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use common::{Control, FERRYD, Reply, TestServer, run_bounded};

const LIMIT: u64 = 1_000_000;
/// What a directory costs against the byte limit.
const DIR_BYTES: u64 = 4096;
/// The transfer loop's chunk: the most a check may lag behind the bytes on disk.
const CHUNK: u64 = 256 * 1024;
const ROUNDS: usize = 20;
const PASSWORD: &str = "password1";

/// `SITE QUOTA` as (bytes used, files used).
fn ledger(ctl: &mut Control) -> (u64, u64) {
    let text = ctl.expect("SITE QUOTA", 211).text();
    let number = |prefix: &str| -> u64 {
        text.lines()
            .find_map(|l| l.trim().strip_prefix(prefix))
            .and_then(|rest| rest.split_whitespace().next())
            .and_then(|n| n.parse().ok())
            .unwrap_or_else(|| panic!("no {prefix:?} in {text}"))
    };
    (number("Bytes used: "), number("Files used: "))
}

/// What the home holds, counted the way the quota counts: regular files by size, directories
/// at [`DIR_BYTES`], one file each; symbolic links nothing.
fn disk_usage(home: &Path) -> (u64, u64) {
    let (mut bytes, mut files) = (0, 0);
    let mut stack = vec![home.to_path_buf()];
    while let Some(dir) = stack.pop() {
        for entry in std::fs::read_dir(&dir).expect("read_dir") {
            let entry = entry.expect("entry");
            let Ok(meta) = std::fs::symlink_metadata(entry.path()) else {
                continue;
            };
            if meta.is_dir() {
                files += 1;
                bytes += DIR_BYTES;
                stack.push(entry.path());
            } else if meta.is_file() {
                files += 1;
                bytes += meta.len();
            }
        }
    }
    (bytes, files)
}

/// The invariants every round must keep: the ledger is the home's real usage, and the home
/// never passes the limit by more than a chunk.
fn assert_consistent(server: &TestServer, ctl: &mut Control, user: &str, round: usize) {
    let disk = disk_usage(&server.home(user));
    let counted = ledger(ctl);
    assert_eq!(
        counted, disk,
        "round {round}: ledger (bytes, files) {counted:?} but the home holds {disk:?}"
    );
    assert!(
        disk.0 <= LIMIT + CHUNK,
        "round {round}: {} bytes stored under a {LIMIT}-byte quota",
        disk.0
    );
}

fn login(server: &TestServer, user: &str) -> Control {
    let (mut ctl, greeting) = server.connect();
    assert_eq!(greeting.code, 220);
    ctl.login(user, PASSWORD);
    ctl
}

/// Writes `bytes` into a data connection; the server may cut it off (552), which is no error.
fn send(data: &mut TcpStream, bytes: &[u8]) {
    for chunk in bytes.chunks(64 * 1024) {
        if data.write_all(chunk).is_err() {
            return;
        }
    }
}

/// A whole upload that tolerates the server closing the data connection early.
fn upload(ctl: &mut Control, verb: &str, path: &str, bytes: &[u8]) -> Reply {
    let mut data = ctl.data_connection();
    let first = ctl.cmd(&format!("{verb} {path}"));
    if first.code != 150 && first.code != 125 {
        return first;
    }
    send(&mut data, bytes);
    let _ = data.shutdown(Shutdown::Write);
    drop(data);
    ctl.reply()
}

/// Waits (bounded) until `path` exists with at least `len` bytes: the server has opened the
/// file and written what was sent so far.
fn wait_len(path: &Path, len: u64) {
    let deadline = Instant::now() + Duration::from_secs(10);
    while std::fs::metadata(path).map_or(0, |m| m.len()) < len {
        assert!(
            Instant::now() < deadline,
            "{} never reached {len} bytes",
            path.display()
        );
        std::thread::sleep(Duration::from_millis(5));
    }
}

fn quota_server() -> TestServer {
    TestServer::start(&["--default-quota-bytes", &LIMIT.to_string()])
}

#[test]
fn stor_over_a_file_renamed_away_cannot_pass_the_quota() {
    let server = quota_server();
    let mut a = server.register_and_login("alice", PASSWORD);
    let mut b = login(&server, "alice");
    let body = vec![7u8; 900_000];
    for round in 0..ROUNDS {
        // Each round starts from one 900 KB file, `f`, the credit the attack counts on.
        for name in std::fs::read_dir(server.home("alice")).expect("home") {
            let name = name.expect("entry").file_name();
            a.expect(&format!("DELE {}", name.to_string_lossy()), 250);
        }
        assert_eq!(
            upload(&mut a, "STOR", "f", &body).code,
            226,
            "round {round}"
        );
        // A replaces f; before its commit, B renames f away: the credit is gone.
        let mut data = a.data_connection();
        assert_eq!(a.cmd("STOR f").code, 150, "round {round}");
        send(&mut data, &body);
        b.expect("RNFR f", 350);
        b.expect(&format!("RNTO g{round}"), 250);
        let _ = data.shutdown(Shutdown::Write);
        drop(data);
        let reply = a.reply();
        assert_eq!(reply.code, 552, "round {round}: {reply:?}");
        assert!(!server.home("alice").join("f").exists());
        assert_consistent(&server, &mut a, "alice", round);
    }
}

#[test]
fn appe_while_another_session_stores_over_the_name_is_counted_right() {
    let server = quota_server();
    let mut a = server.register_and_login("alice", PASSWORD);
    let mut b = login(&server, "alice");
    let f = server.home("alice").join("f");
    for round in 0..ROUNDS {
        assert_eq!(upload(&mut a, "STOR", "f", &[1; 500_000]).code, 226);
        let mut data = a.data_connection();
        assert_eq!(a.cmd("APPE f").code, 150, "round {round}");
        send(&mut data, &[2; 100_000]);
        wait_len(&f, 600_000);
        // B replaces f (the name) with 1 byte while A still appends to the old file.
        assert_eq!(upload(&mut b, "STOR", "f", b"x").code, 226, "round {round}");
        send(&mut data, &[3; 100_000]);
        let _ = data.shutdown(Shutdown::Write);
        drop(data);
        let reply = a.reply();
        assert!(matches!(reply.code, 226 | 552), "round {round}: {reply:?}");
        assert_eq!(std::fs::read(&f).expect("f"), b"x");
        assert_consistent(&server, &mut a, "alice", round);
    }
}

#[test]
fn appe_to_a_file_renamed_away_meanwhile_is_still_counted() {
    let server = quota_server();
    let mut a = server.register_and_login("alice", PASSWORD);
    let mut b = login(&server, "alice");
    let mut refused = 0;
    for round in 0..ROUNDS {
        let name = format!("f{round}");
        let mut data = a.data_connection();
        assert_eq!(a.cmd(&format!("APPE {name}")).code, 150, "round {round}");
        send(&mut data, &[4; 100_000]);
        if round < 3 {
            wait_len(&server.home("alice").join(&name), 100_000);
        }
        // Renamed away while A writes to it: the bytes still land in the home.
        let mut vanished = false;
        if b.cmd(&format!("RNFR {name}")).code == 350 {
            let moved = b.cmd(&format!("RNTO g{round}"));
            match moved.code {
                250 => {}
                // A's upload was refused (552) between RNFR and RNTO and removed the file it
                // had created.
                550 => vanished = true,
                _ => panic!("round {round}: RNTO {moved:?}"),
            }
        }
        send(&mut data, &[5; 100_000]);
        let _ = data.shutdown(Shutdown::Write);
        drop(data);
        let reply = a.reply();
        match reply.code {
            226 => assert!(!vanished, "round {round}: the file vanished, yet 226"),
            552 => refused += 1,
            _ => panic!("round {round}: {reply:?}"),
        }
        assert_consistent(&server, &mut a, "alice", round);
    }
    assert!(refused > 0, "20 x 200 KB never met the 1 MB quota");
}

#[test]
fn appe_cannot_create_a_file_past_the_file_limit_through_a_rename() {
    let server = TestServer::start(&["--default-quota-files", "2"]);
    let mut a = server.register_and_login("alice", PASSWORD);
    let mut b = login(&server, "alice");
    assert_eq!(upload(&mut a, "STOR", "f", b"f").code, 226);
    assert_eq!(upload(&mut a, "STOR", "g", b"g").code, 226);
    for round in 0..ROUNDS {
        // APPE of an existing file needs no new slot; the name is moved away before the
        // first byte, so appending would have to create it: the file limit must still hold.
        let mut data = a.data_connection();
        assert_eq!(a.cmd("APPE f").code, 150, "round {round}");
        b.expect("RNFR f", 350);
        b.expect(&format!("RNTO h{round}"), 250);
        send(&mut data, b"more");
        let _ = data.shutdown(Shutdown::Write);
        drop(data);
        let reply = a.reply();
        assert_eq!(reply.code, 552, "round {round}: {reply:?}");
        assert_eq!(disk_usage(&server.home("alice")).1, 2, "round {round}");
        assert_eq!(ledger(&mut a), disk_usage(&server.home("alice")));
        b.expect(&format!("RNFR h{round}"), 350);
        b.expect("RNTO f", 250);
    }
}

#[test]
fn a_directory_flood_meets_the_byte_quota() {
    let server = quota_server();
    let mut a = server.register_and_login("alice", PASSWORD);
    let mut b = login(&server, "alice");
    let mut made = 0u64;
    let refused_at = (0..2000).find(|i| {
        let ctl = if i % 2 == 0 { &mut a } else { &mut b };
        match ctl.cmd(&format!("MKD d{i}")).code {
            257 => {
                made += 1;
                false
            }
            552 => true,
            code => panic!("MKD d{i}: {code}"),
        }
    });
    assert!(
        refused_at.is_some(),
        "2000 directories made under a {LIMIT}-byte quota"
    );
    assert_eq!(made, LIMIT / DIR_BYTES, "directories made before the 552");
    assert_consistent(&server, &mut a, "alice", 0);
}

#[test]
fn registered_accounts_get_a_file_limit_by_default() {
    let server = TestServer::start(&[]);
    let mut ctl = server.register_and_login("alice", PASSWORD);
    let text = ctl.expect("SITE QUOTA", 211).text();
    assert!(text.contains("Files used: 0 of 10000"), "{text}");
}

#[test]
fn kill_9_during_appe_then_restart_recounts_the_ledger() {
    let mut server = quota_server();
    let mut a = server.register_and_login("alice", PASSWORD);
    assert_eq!(upload(&mut a, "STOR", "f", &[1; 100_000]).code, 226);
    let mut data = a.data_connection();
    assert_eq!(a.cmd("APPE f").code, 150);
    send(&mut data, &[2; 500_000]);
    wait_len(&server.home("alice").join("f"), 600_000);
    server.crash_restart();
    drop(data);
    let mut a = login(&server, "alice");
    assert_consistent(&server, &mut a, "alice", 0);
    // And the recounted ledger holds the limit.
    assert_eq!(upload(&mut a, "STOR", "g", &[3; 500_000]).code, 552);
}

/// `ferryd user quota alice ARGS` on the server's data dir: (success, stdout + stderr).
fn admin_quota(server: &TestServer, args: &[&str]) -> (bool, String) {
    let mut all = vec!["user", "quota", "alice"];
    all.extend_from_slice(args);
    let out = server.admin(&all, None);
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    (out.status.success(), text)
}

/// Makes a chain of `levels` directories named `name` from the cwd down, and returns to "/".
fn chain(ctl: &mut Control, name: &str, levels: usize) {
    for _ in 0..levels {
        ctl.expect(&format!("MKD {name}"), 257);
        ctl.expect(&format!("CWD {name}"), 250);
    }
    ctl.expect("CWD /", 250);
}

/// Moves `/<from>` of `home` to the bottom of the chain `/<onto>` x `levels` on disk, by
/// directory handles (what an old tree, built before a server limited depth, looks like).
fn move_on_disk(home: &Path, from: &str, onto: &str, levels: usize) {
    use nix::fcntl::{OFlag, open, openat, renameat};
    use nix::sys::stat::Mode;
    let flags = OFlag::O_RDONLY | OFlag::O_DIRECTORY;
    let top = open(home, flags, Mode::empty()).expect("open home");
    let mut bottom = openat(&top, onto, flags, Mode::empty()).expect("openat");
    for _ in 1..levels {
        bottom = openat(&bottom, onto, flags, Mode::empty()).expect("openat");
    }
    renameat(&top, from, &bottom, from).expect("renameat");
}

const LEVELS: usize = 15;
/// What [`deep_tree`] holds: 45 directories and one 1000-byte file.
const DEEP: (u64, u64) = (3 * LEVELS as u64 * DIR_BYTES + 1000, 3 * LEVELS as u64 + 1);

/// Builds, as alice, 45 levels of 201-byte names (over twice PATH_MAX, 4096) with a file at
/// the bottom: three chains of 15, each moved (RNTO) under the bottom of the next. A server
/// that refuses to nest that deep (553) makes the same tree the way an old one was made.
fn deep_tree(server: &TestServer, ctl: &mut Control) {
    let names = ["x", "y", "z"].map(|c| c.repeat(200));
    let path_of = |name: &str| format!("/{name}").repeat(LEVELS);
    chain(ctl, &names[0], LEVELS);
    let leaf = format!("{}/leaf", path_of(&names[0]));
    assert_eq!(upload(ctl, "STOR", &leaf, &[9; 1000]).code, 226);
    for pair in names.windows(2) {
        chain(ctl, &pair[1], LEVELS);
        ctl.expect(&format!("RNFR /{}", pair[0]), 350);
        let moved = ctl.cmd(&format!("RNTO {}/{}", path_of(&pair[1]), pair[0]));
        match moved.code {
            250 => {}
            553 => move_on_disk(&server.home("alice"), &pair[0], &pair[1], LEVELS),
            _ => panic!("RNTO: {moved:?}"),
        }
    }
}

#[test]
fn a_tree_deeper_than_path_max_is_recounted() {
    let server = quota_server();
    let mut a = server.register_and_login("alice", PASSWORD);
    deep_tree(&server, &mut a);
    let (ok, text) = admin_quota(&server, &["--recount"]);
    assert!(ok, "recount failed: {text}");
    assert!(
        text.contains(&format!("Bytes used: {} of {LIMIT}", DEEP.0)),
        "{text}"
    );
    let (ok, text) = admin_quota(&server, &["--bytes", &LIMIT.to_string()]);
    assert!(ok, "--bytes failed: {text}");
    assert_eq!(ledger(&mut a), DEEP);
}

#[test]
fn a_lost_or_unreadable_ledger_still_enforces_the_quota() {
    let server = quota_server();
    let mut a = server.register_and_login("alice", PASSWORD);
    deep_tree(&server, &mut a);
    // The ledger lost: the next write recounts first (the deep tree too), and the limit holds.
    let usage_file = server.data_dir().join("usage/alice.json");
    std::fs::remove_file(&usage_file).expect("remove ledger");
    let refused = upload(
        &mut a,
        "STOR",
        "big",
        &vec![1; (LIMIT - DEEP.0 + 1) as usize],
    );
    assert_eq!(refused.code, 552, "{refused:?}");
    assert!(!server.home("alice").join("big").exists());
    assert_eq!(ledger(&mut a), DEEP);
    // The ledger unreadable: writes are refused (451) rather than let through unchecked.
    std::fs::remove_file(&usage_file).expect("remove ledger");
    std::fs::create_dir(&usage_file).expect("a directory where the ledger was");
    let refused = upload(&mut a, "STOR", "small", b"12345");
    assert_eq!(refused.code, 451, "{refused:?}");
    assert!(!server.home("alice").join("small").exists());
    assert_eq!(a.cmd("MKD d").code, 451);
}

/// A file's content and inode, to show it was left exactly as it was.
fn snapshot(path: &Path) -> Option<(Vec<u8>, u64)> {
    let meta = std::fs::metadata(path).ok()?;
    Some((std::fs::read(path).ok()?, meta.ino()))
}

/// REST+STOR, APPE (existing and new file) and STOU, each refused before any byte: the file
/// must be byte-identical, a new one must not exist. `attempt` runs one command and returns
/// its final reply.
fn refused_transfers_change_nothing(
    server: &TestServer,
    ctl: &mut Control,
    expected: u16,
    mut attempt: impl FnMut(&mut Control, &str) -> Reply,
) {
    let home = server.home("alice");
    let before = snapshot(&home.join("f"));
    assert!(before.is_some());
    for (rest, command) in [
        (true, "STOR f"),
        (false, "APPE f"),
        (false, "APPE new"),
        (false, "STOU new"),
    ] {
        if rest {
            ctl.expect("REST 3", 350);
        }
        let reply = attempt(ctl, command);
        assert_eq!(reply.code, expected, "{command}: {reply:?}");
        assert_eq!(snapshot(&home.join("f")), before, "{command} changed f");
        assert!(!home.join("new").exists(), "{command} created a file");
    }
    // The ledger saw nothing either.
    assert_eq!(ledger(ctl), disk_usage(&home));
}

#[test]
fn transfers_refused_as_too_many_leave_files_untouched() {
    let server = TestServer::start(&["--max-transfers-per-user", "1"]);
    let mut a = server.register_and_login("alice", PASSWORD);
    assert_eq!(upload(&mut a, "STOR", "f", b"0123456789").code, 226);
    assert_eq!(upload(&mut a, "STOR", "big", &[0; 4 << 20]).code, 226);
    // B's download runs (unread, so it stays running) and takes the user's one transfer.
    let mut b = login(&server, "alice");
    let held = b.data_connection();
    assert_eq!(b.cmd("RETR big").code, 150);
    refused_transfers_change_nothing(&server, &mut a, 425, |ctl, command| {
        ctl.pasv();
        ctl.cmd(command)
    });
    drop(held);
}

#[test]
fn transfers_without_a_data_connection_leave_files_untouched() {
    let server = TestServer::start(&["--data-timeout-secs", "1"]);
    let mut a = server.register_and_login("alice", PASSWORD);
    assert_eq!(upload(&mut a, "STOR", "f", b"0123456789").code, 226);
    refused_transfers_change_nothing(&server, &mut a, 425, |ctl, command| {
        // PASV, and then never connect.
        ctl.pasv();
        let first = ctl.cmd(command);
        if first.code == 150 {
            ctl.reply()
        } else {
            first
        }
    });
}

#[test]
fn transfers_refused_for_want_of_tls_leave_files_untouched() {
    let certs = tempfile::tempdir().expect("temp dir");
    let child = Command::new(FERRYD)
        .args(["cert", "generate", "--out"])
        .arg(certs.path())
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawn ferryd cert generate");
    let out = run_bounded(child, Duration::from_secs(40));
    assert!(out.status.success(), "ferryd cert generate: {out:?}");
    let path = |name: &str| certs.path().join(name).to_string_lossy().into_owned();
    let (cert, key) = (path("cert.pem"), path("key.pem"));
    let server = TestServer::start(&["--tls-cert", &cert, "--tls-key", &key, "--require-tls-data"]);
    let mut a = server.register_and_login("alice", PASSWORD);
    // No plain upload can make it; the operator puts the file there and recounts.
    std::fs::write(server.home("alice").join("f"), b"0123456789").expect("write f");
    let out = server.admin(&["user", "quota", "alice", "--recount"], None);
    assert!(out.status.success(), "recount: {out:?}");
    refused_transfers_change_nothing(&server, &mut a, 521, |ctl, command| {
        ctl.pasv();
        ctl.cmd(command)
    });
}
