//! Interoperability: real FTP clients we did not write (curl, lftp, Python's ftplib, rclone,
//! wget) against `ferryd`. Every test compares the files byte for byte (whole trees where the
//! client mirrors) and checks the audit-log entries the client's session caused.
//!
//! The client programs are installed by `scripts/test`. Each test starts its own server and runs
//! the clients with a UTF-8 locale (lftp and wget mangle non-ASCII names under the C locale)
//! and `HOME` in a temporary directory, so no user configuration leaks in.

use crate::common;
use crate::common::s3::{Backend, on_both_backends};

use std::collections::BTreeMap;
use std::path::Path;
use std::process::Output;
use std::time::{Duration, UNIX_EPOCH};

use common::{
    TestServer, assert_event, assert_success, assert_transfer, has_event, pseudo_random, register,
    run_client, run_client_within,
};
use serde_json::{Value, json};

fn utf8(path: &Path) -> &str {
    path.to_str().expect("utf-8 path")
}

/// The files of the test tree: nested directories, empty files, names with spaces and UTF-8.
/// Relative paths with `/`, and their contents.
fn tree_files() -> Vec<(&'static str, Vec<u8>)> {
    vec![
        ("empty.txt", Vec::new()),
        ("grüße.txt", "Grüße aus Köln\n".as_bytes().to_vec()),
        ("日本.txt", "日本語のテキスト\r\n".as_bytes().to_vec()),
        ("top.bin", pseudo_random(70_001, 11)),
        ("sub dir/with space.bin", pseudo_random(300 * 1024 + 5, 12)),
        ("sub dir/deep/empty too.dat", Vec::new()),
        ("sub dir/deep/deeper/x.bin", pseudo_random(4099, 13)),
        ("ü/ä ö.txt", b"umlauts\n".to_vec()),
    ]
}

/// The contents of one file of the test tree.
fn tree_file(rel: &str) -> Vec<u8> {
    tree_files()
        .into_iter()
        .find(|(name, _)| *name == rel)
        .unwrap_or_else(|| panic!("{rel} is not in the test tree"))
        .1
}

/// Directories of the test tree that hold no file.
const EMPTY_DIRS: [&str; 1] = ["empty-dir"];

/// Writes the test tree under `root` (created if missing).
fn make_tree(root: &Path) {
    for (rel, bytes) in tree_files() {
        let path = root.join(rel);
        std::fs::create_dir_all(path.parent().expect("parent")).expect("create dirs");
        std::fs::write(&path, bytes).expect("write tree file");
    }
    for dir in EMPTY_DIRS {
        std::fs::create_dir_all(root.join(dir)).expect("create empty dir");
    }
}

/// Everything under `root`: relative path → `Some(bytes)` for a file, `None` for a directory.
fn snapshot(root: &Path) -> BTreeMap<String, Option<Vec<u8>>> {
    fn walk(root: &Path, dir: &Path, out: &mut BTreeMap<String, Option<Vec<u8>>>) {
        let entries =
            std::fs::read_dir(dir).unwrap_or_else(|e| panic!("read_dir {}: {e}", dir.display()));
        for entry in entries {
            let path = entry.expect("dir entry").path();
            let rel = path
                .strip_prefix(root)
                .expect("under root")
                .to_str()
                .unwrap_or_else(|| panic!("non-UTF-8 name {}", path.display()))
                .to_owned();
            if path.is_dir() {
                out.insert(rel, None);
                walk(root, &path, out);
            } else {
                out.insert(rel, Some(std::fs::read(&path).expect("read file")));
            }
        }
    }
    let mut out = BTreeMap::new();
    walk(root, root, &mut out);
    out
}

/// Asserts that the trees under `a` and `b` hold the same names, kinds and bytes.
fn assert_same_tree(a: &Path, b: &Path, what: &str) {
    let (left, right) = (snapshot(a), snapshot(b));
    let names = |m: &BTreeMap<String, Option<Vec<u8>>>| -> Vec<String> {
        m.iter()
            .map(|(k, v)| match v {
                Some(bytes) => format!("{k} ({} bytes)", bytes.len()),
                None => format!("{k}/"),
            })
            .collect()
    };
    assert_eq!(names(&left), names(&right), "{what}: tree listing differs");
    for (name, bytes) in &left {
        assert!(right[name] == *bytes, "{what}: {name} differs");
    }
}

/// Asserts a `command` event by `user` with this command line and reply code.
fn assert_command(events: &[Value], user: &str, command: &str, code: u16) {
    assert_event(
        events,
        &[
            ("event", json!("command")),
            ("user", json!(user)),
            ("command", json!(command)),
            ("code", json!(code)),
        ],
    );
}

// ---------------------------------------------------------------------------------------------
// curl
// ---------------------------------------------------------------------------------------------

/// Runs `curl -sS ARGS` in `cwd`, bounded.
pub(crate) fn curl(cwd: &Path, args: &[&str]) -> Output {
    let mut all = vec!["-sS", "--max-time", "30", "--connect-timeout", "10"];
    all.extend_from_slice(args);
    run_client("curl", &all, cwd)
}

fn curl_transfers_resume_active_mode_quote_and_create_dirs_on(backend: Backend) {
    let server = TestServer::start_on(backend, &[]);
    let (user, pass) = ("cory", "curl-pass-7");
    register(&server, user, pass);
    let home = server.home(user);
    let work = tempfile::tempdir().expect("temp dir");
    let w = work.path();
    let base = format!("ftp://{user}:{pass}@127.0.0.1:{}", server.port());

    let payload = pseudo_random(1024 * 1024 + 17, 21);
    let full = w.join("full.bin");
    std::fs::write(&full, &payload).expect("write payload");
    let small = b"small file\n".to_vec();
    std::fs::write(w.join("small.bin"), &small).expect("write small");

    // Missing directories created on the way (CWD fails, MKD, CWD, per level).
    let out = curl(
        w,
        &[
            "--ftp-create-dirs",
            "-T",
            utf8(&full),
            &format!("{base}/a/b/c/nested.bin"),
        ],
    );
    assert_success(&out, "curl --ftp-create-dirs -T");
    assert!(std::fs::read(home.join("a/b/c/nested.bin")).expect("nested") == payload);

    // -Q before the transfer: MKD, then upload into the new directory.
    let out = curl(
        w,
        &[
            "-Q",
            "MKD made",
            "-T",
            utf8(&w.join("small.bin")),
            &format!("{base}/made/"),
        ],
    );
    assert_success(&out, "curl -Q MKD -T");
    assert_eq!(
        std::fs::read(home.join("made/small.bin")).expect("small"),
        small
    );

    // Passive download, then active (EPRT to 127.0.0.1) download and upload.
    let out = curl(
        w,
        &[
            "--ftp-pasv",
            "-o",
            "pasv.bin",
            &format!("{base}/a/b/c/nested.bin"),
        ],
    );
    assert_success(&out, "curl --ftp-pasv download");
    assert!(std::fs::read(w.join("pasv.bin")).expect("pasv.bin") == payload);
    let out = curl(
        w,
        &[
            "--ftp-port",
            "127.0.0.1",
            "-o",
            "active.bin",
            &format!("{base}/a/b/c/nested.bin"),
        ],
    );
    assert_success(&out, "curl --ftp-port download");
    assert!(std::fs::read(w.join("active.bin")).expect("active.bin") == payload);
    let out = curl(
        w,
        &[
            "--ftp-port",
            "127.0.0.1",
            "-T",
            utf8(&full),
            &format!("{base}/active-up.bin"),
        ],
    );
    assert_success(&out, "curl --ftp-port upload");
    assert!(std::fs::read(home.join("active-up.bin")).expect("active-up") == payload);

    // Resumed download: the first 100000 bytes are there locally (SIZE, REST 100000, RETR).
    let head = 100_000;
    std::fs::write(w.join("resumed.bin"), &payload[..head]).expect("write partial");
    let out = curl(
        w,
        &[
            "-C",
            "-",
            "-o",
            "resumed.bin",
            &format!("{base}/a/b/c/nested.bin"),
        ],
    );
    assert_success(&out, "curl -C - download");
    assert!(std::fs::read(w.join("resumed.bin")).expect("resumed") == payload);

    // Resumed upload: 300000 bytes on the server, curl asks SIZE and APPEs the rest.
    let part = 300_000;
    std::fs::write(w.join("part.bin"), &payload[..part]).expect("write part");
    let out = curl(
        w,
        &[
            "-T",
            utf8(&w.join("part.bin")),
            &format!("{base}/resume-up.bin"),
        ],
    );
    assert_success(&out, "curl -T part");
    let out = curl(
        w,
        &[
            "-C",
            "-",
            "-T",
            utf8(&full),
            &format!("{base}/resume-up.bin"),
        ],
    );
    assert_success(&out, "curl -C - -T");
    assert!(std::fs::read(home.join("resume-up.bin")).expect("resume-up") == payload);

    // Name list, and a post-transfer quote command deleting a file.
    let out = curl(w, &["--list-only", &format!("{base}/a/b/c/")]);
    assert_success(&out, "curl --list-only");
    assert_eq!(
        String::from_utf8_lossy(&out.stdout)
            .lines()
            .collect::<Vec<_>>(),
        ["nested.bin"]
    );
    let out = curl(
        w,
        &[
            "-Q",
            "-DELE small.bin",
            "--list-only",
            &format!("{base}/made/"),
        ],
    );
    assert_success(&out, "curl -Q -DELE");
    assert_eq!(String::from_utf8_lossy(&out.stdout).trim(), "small.bin");
    assert!(!home.join("made/small.bin").exists());

    let events = server.wait_sessions_closed(user, 11);
    for dir in ["/a", "/a/b", "/a/b/c", "/made"] {
        assert_event(
            &events,
            &[
                ("event", json!("mkdir")),
                ("user", json!(user)),
                ("path", json!(dir)),
            ],
        );
    }
    let len = payload.len();
    assert_transfer(&events, user, "upload", "/a/b/c/nested.bin", len);
    assert_transfer(&events, user, "upload", "/made/small.bin", small.len());
    assert_transfer(&events, user, "upload", "/active-up.bin", len);
    assert_transfer(&events, user, "upload", "/resume-up.bin", part);
    assert_transfer(&events, user, "upload", "/resume-up.bin", len - part);
    assert_transfer(&events, user, "download", "/a/b/c/nested.bin", len);
    assert_transfer(&events, user, "download", "/a/b/c/nested.bin", len - head);
    assert_event(
        &events,
        &[
            ("event", json!("delete")),
            ("user", json!(user)),
            ("path", json!("/made/small.bin")),
        ],
    );
    assert_command(&events, user, "CWD a", 550);
    assert_command(&events, user, "MKD a", 257);
    assert_command(&events, user, "MKD made", 257);
    assert_command(&events, user, &format!("REST {head}"), 350);
    assert_command(&events, user, "SIZE resume-up.bin", 213);
    assert_command(&events, user, "APPE resume-up.bin", 226);
    assert_command(&events, user, "DELE small.bin", 250);
    assert_command(&events, user, "NLST", 226);
    assert!(
        events.iter().any(|e| e["event"] == "command"
            && e["command"]
                .as_str()
                .is_some_and(|c| c.starts_with("EPRT 127.0.0.1:"))
            && e["code"] == 200),
        "no accepted EPRT in the audit log"
    );
    assert!(!server.audit_text().contains(pass), "password in clear");
}

on_both_backends!(curl_transfers_resume_active_mode_quote_and_create_dirs_on: curl_transfers_resume_active_mode_quote_and_create_dirs, curl_transfers_resume_active_mode_quote_and_create_dirs_on_s3);

// ---------------------------------------------------------------------------------------------
// lftp
// ---------------------------------------------------------------------------------------------

/// Runs `lftp -c "settings; open ...; COMMANDS"` in `cwd`.
fn lftp(server: &TestServer, cwd: &Path, user: &str, pass: &str, commands: &str) -> Output {
    let script = format!(
        "set net:max-retries 1; set net:timeout 10; set ftp:ssl-allow no; \
         set cmd:fail-exit yes; open -u {user},{pass} -p {} 127.0.0.1; {commands}",
        server.port()
    );
    run_client("lftp", &["-c", &script], cwd)
}

fn lftp_mirror_round_trip_list_move_and_remove_on(backend: Backend) {
    let server = TestServer::start_on(backend, &[]);
    let (user, pass) = ("lena", "lftp-pass-3");
    register(&server, user, pass);
    let home = server.home(user);
    let work = tempfile::tempdir().expect("temp dir");
    let w = work.path();
    make_tree(&w.join("src"));

    // Each mirror twice: the second run finds sizes and times equal (MLSD facts, MFMT) and
    // transfers nothing, which the audit checks below (one transfer per file).
    for _ in 0..2 {
        let out = lftp(&server, w, user, pass, "mirror -R src up");
        assert_success(&out, "lftp mirror -R");
        let view = server.home_view(user);
        assert_same_tree(&w.join("src"), &view.join("up"), "after mirror -R");
    }
    for _ in 0..2 {
        let out = lftp(&server, w, user, pass, "mirror up down");
        assert_success(&out, "lftp mirror");
        assert_same_tree(&w.join("src"), &w.join("down"), "after mirror back");
    }

    // Active mode (PORT), resumed upload (SIZE, REST, STOR) and resumed download (REST, RETR).
    let big = pseudo_random(600_000, 41);
    std::fs::write(w.join("big.bin"), &big).expect("write big");
    std::fs::write(w.join("head.bin"), &big[..250_000]).expect("write head");
    std::fs::write(w.join("got.bin"), &big[..100_000]).expect("write partial local");
    let out = lftp(
        &server,
        w,
        user,
        pass,
        "set ftp:passive-mode off; put head.bin -o resumed.bin; put -c big.bin -o resumed.bin; \
         get -c resumed.bin -o got.bin",
    );
    assert_success(&out, "lftp active put, put -c, get -c");
    assert!(std::fs::read(home.join("resumed.bin")).expect("resumed.bin") == big);
    assert!(std::fs::read(w.join("got.bin")).expect("got.bin") == big);

    let out = lftp(&server, w, user, pass, "cls -l up 'up/sub dir'");
    assert_success(&out, "lftp cls -l");
    let listing = String::from_utf8_lossy(&out.stdout).into_owned();
    let line = |name: &str| -> String {
        listing
            .lines()
            .find(|l| l.ends_with(name))
            .unwrap_or_else(|| panic!("{name} not in cls -l output:\n{listing}"))
            .to_owned()
    };
    for (name, size) in [
        ("up/grüße.txt", "Grüße aus Köln\n".len()),
        ("up/日本.txt", "日本語のテキスト\r\n".len()),
        ("up/empty.txt", 0),
        ("up/sub dir/with space.bin", 300 * 1024 + 5),
    ] {
        let l = line(name);
        assert!(l.starts_with('-'), "{l}");
        assert!(l.contains(&format!(" {size} ")), "size {size} in {l}");
    }
    for dir in ["up/sub dir/", "up/empty-dir/", "up/ü/", "up/sub dir/deep/"] {
        assert!(line(dir).starts_with('d'), "{}", line(dir));
    }

    let out = lftp(
        &server,
        w,
        user,
        pass,
        "mv up/grüße.txt 'up/sub dir/moved ü.txt'; rm -r 'up/sub dir/deep'",
    );
    assert_success(&out, "lftp mv, rm -r");
    let home = server.home_view(user);
    assert!(!home.join("up/grüße.txt").exists());
    assert_eq!(
        std::fs::read(home.join("up/sub dir/moved ü.txt")).expect("moved file"),
        "Grüße aus Köln\n".as_bytes()
    );
    assert!(!home.join("up/sub dir/deep").exists());
    assert!(home.join("up/sub dir/with space.bin").is_file());

    let out = lftp(&server, w, user, pass, "rm -r up");
    assert_success(&out, "lftp rm -r up");
    let home = server.home_view(user);
    assert!(!home.join("up").exists());
    assert!(home.is_dir());

    let events = server.wait_sessions_closed(user, 9);
    let transfers = |kind: &str, path: &str| {
        events
            .iter()
            .filter(|e| e["event"] == kind && e["path"] == path)
            .count()
    };
    for (rel, bytes) in tree_files() {
        let path = format!("/up/{rel}");
        assert_eq!(transfers("upload", &path), 1, "uploads of {path}");
        assert_eq!(
            transfers("download", &path),
            usize::from(!bytes.is_empty()),
            "downloads of {path}"
        );
    }
    assert_transfer(&events, user, "upload", "/resumed.bin", 250_000);
    assert_transfer(&events, user, "upload", "/resumed.bin", 350_000);
    assert_transfer(&events, user, "download", "/resumed.bin", 500_000);
    assert_command(&events, user, "REST 250000", 350);
    assert_command(&events, user, "STOR resumed.bin", 226);
    assert_command(&events, user, "REST 100000", 350);
    assert_command(&events, user, "RETR resumed.bin", 226);
    assert!(
        events.iter().any(|e| e["event"] == "command"
            && e["command"]
                .as_str()
                .is_some_and(|c| c.starts_with("PORT 127.0.0.1:"))
            && e["code"] == 200),
        "no accepted PORT from lftp in the audit log"
    );
    for (rel, bytes) in tree_files() {
        let path = format!("/up/{rel}");
        assert_transfer(&events, user, "upload", &path, bytes.len());
        // lftp creates empty files locally from the listing without a RETR.
        if !bytes.is_empty() {
            assert_transfer(&events, user, "download", &path, bytes.len());
        }
    }
    for dir in [
        "/up",
        "/up/empty-dir",
        "/up/sub dir",
        "/up/sub dir/deep",
        "/up/sub dir/deep/deeper",
        "/up/ü",
    ] {
        for kind in ["mkdir", "rmdir"] {
            assert_event(
                &events,
                &[
                    ("event", json!(kind)),
                    ("user", json!(user)),
                    ("path", json!(dir)),
                ],
            );
        }
    }
    assert_event(
        &events,
        &[
            ("event", json!("rename")),
            ("user", json!(user)),
            ("path", json!("/up/grüße.txt")),
            ("target", json!("/up/sub dir/moved ü.txt")),
        ],
    );
    for file in [
        "/up/sub dir/deep/deeper/x.bin",
        "/up/sub dir/deep/empty too.dat",
        "/up/sub dir/moved ü.txt",
        "/up/sub dir/with space.bin",
        "/up/日本.txt",
        "/up/ü/ä ö.txt",
    ] {
        assert_event(
            &events,
            &[
                ("event", json!("delete")),
                ("user", json!(user)),
                ("path", json!(file)),
            ],
        );
    }
    assert!(
        events
            .iter()
            .any(|e| e["event"] == "command" && e["command"] == "MLSD" && e["code"] == 226),
        "lftp lists with MLSD"
    );
}

on_both_backends!(lftp_mirror_round_trip_list_move_and_remove_on: lftp_mirror_round_trip_list_move_and_remove, lftp_mirror_round_trip_list_move_and_remove_on_s3);

// ---------------------------------------------------------------------------------------------
// Python ftplib
// ---------------------------------------------------------------------------------------------

const FTPLIB_SCRIPT: &str = r#"
import ftplib, io, sys
port, user, password, src = int(sys.argv[1]), sys.argv[2], sys.argv[3], sys.argv[4]
data = open(src, 'rb').read()
ftp = ftplib.FTP()
ftp.connect('127.0.0.1', port, timeout=15)
ftp.login(user, password)
for pasv, name in ((True, 'passive.bin'), (False, 'active.bin')):
    ftp.set_pasv(pasv)
    ftp.storbinary('STOR ' + name, io.BytesIO(data))
    out = io.BytesIO()
    ftp.retrbinary('RETR ' + name, out.write)
    assert out.getvalue() == data, (name, len(out.getvalue()))
    out = io.BytesIO()
    ftp.retrbinary('RETR ' + name, out.write, rest=12345)
    assert out.getvalue() == data[12345:], (name, 'rest', len(out.getvalue()))
    facts = dict(ftp.mlsd(facts=['type', 'size', 'perm']))
    assert facts[name]['type'] == 'file', facts
    assert int(facts[name]['size']) == len(data), facts
    assert facts['.']['type'] == 'cdir', facts

# ABOR in the middle of a download: 426 for the transfer, then 226 for ABOR, then NOOP.
ftp.voidcmd('TYPE I')  # mlsd() left TYPE A
assert ftp.size('active.bin') == len(data)
ftp.set_pasv(True)
conn = ftp.transfercmd('RETR passive.bin')
got = conn.recv(4096)
assert got and data.startswith(got), len(got)
resp = ftp.abort()
assert resp.startswith('426'), resp
resp = ftp.getresp()
assert resp.startswith('226'), resp
conn.close()
assert ftp.sendcmd('NOOP').startswith('200')
out = io.BytesIO()
ftp.retrbinary('RETR passive.bin', out.write)
assert out.getvalue() == data, 'RETR after ABOR differs'
ftp.quit()
print('OK')
"#;

fn python_ftplib_passive_active_rest_mlsd_and_abort_on(backend: Backend) {
    let server = TestServer::start_on(backend, &[]);
    let (user, pass) = ("pyth", "ftplib-pass-5");
    register(&server, user, pass);
    let work = tempfile::tempdir().expect("temp dir");
    let w = work.path();
    std::fs::write(w.join("client.py"), FTPLIB_SCRIPT).expect("write script");
    // Large enough that the ABOR arrives while the server is still sending.
    let payload = pseudo_random(24 * 1024 * 1024 + 3, 31);
    std::fs::write(w.join("data.bin"), &payload).expect("write payload");

    let out = run_client(
        "python3",
        &[
            "client.py",
            &server.port().to_string(),
            user,
            pass,
            "data.bin",
        ],
        w,
    );
    assert_success(&out, "ftplib script");
    assert!(out.stdout.starts_with(b"OK"));
    for name in ["passive.bin", "active.bin"] {
        assert!(
            std::fs::read(server.home(user).join(name)).expect("stored") == payload,
            "{name} differs"
        );
    }

    let events = server.wait_sessions_closed(user, 2);
    let len = payload.len();
    for name in ["/passive.bin", "/active.bin"] {
        assert_transfer(&events, user, "upload", name, len);
        assert_transfer(&events, user, "download", name, len);
        assert_transfer(&events, user, "download", name, len - 12345);
    }
    assert_command(&events, user, "REST 12345", 350);
    assert_command(&events, user, "RETR active.bin", 226);
    assert_command(&events, user, "MLSD", 226);
    assert!(
        events.iter().any(|e| e["event"] == "command"
            && e["command"]
                .as_str()
                .is_some_and(|c| c.starts_with("PORT 127.0.0.1:"))
            && e["code"] == 200),
        "no accepted PORT in the audit log"
    );
    // The aborted download: a partial download event with 426, then ABOR answered 226.
    let aborted = events
        .iter()
        .find(|e| e["event"] == "download" && e["code"] == 426)
        .expect("a download event with code 426");
    assert_eq!(aborted["path"], "/passive.bin");
    let sent = aborted["bytes"].as_u64().expect("bytes");
    assert!(sent < len as u64, "aborted download sent {sent} of {len}");
    assert_command(&events, user, "RETR passive.bin", 426);
    assert_command(&events, user, "ABOR", 226);
    assert_command(&events, user, "NOOP", 200);
    assert!(
        !events.iter().any(|e| e["event"] == "command"
            && e["user"] == user
            && e["code"].as_u64().is_some_and(|c| c >= 500)),
        "a command of the ftplib session failed"
    );
}

on_both_backends!(python_ftplib_passive_active_rest_mlsd_and_abort_on: python_ftplib_passive_active_rest_mlsd_and_abort, python_ftplib_passive_active_rest_mlsd_and_abort_on_s3);

// ---------------------------------------------------------------------------------------------
// rclone
// ---------------------------------------------------------------------------------------------

/// An on-the-fly rclone remote (no config file) for `user` on `server`, at `dir`.
fn rclone_remote(server: &TestServer, w: &Path, user: &str, pass: &str, dir: &str) -> String {
    let obscured = run_client("rclone", &["obscure", pass], w);
    assert_success(&obscured, "rclone obscure");
    let obscured = String::from_utf8(obscured.stdout).expect("utf-8");
    format!(
        ":ftp,host=127.0.0.1,port={},user={user},pass={}:{dir}",
        server.port(),
        obscured.trim()
    )
}

/// The time of a `213 YYYYMMDDHHMMSS` reply to MDTM, in seconds since the epoch.
fn parse_mdtm(line: &str) -> i64 {
    let format = time::macros::format_description!("[year][month][day][hour][minute][second]");
    time::PrimitiveDateTime::parse(line.trim_start_matches("213 ").trim(), format)
        .unwrap_or_else(|e| panic!("MDTM reply {line:?}: {e}"))
        .assume_utc()
        .unix_timestamp()
}

fn rclone_copy_check_and_modification_times_on(backend: Backend) {
    let server = TestServer::start_on(backend, &[]);
    let (user, pass) = ("rita", "rclone-pass-8");
    register(&server, user, pass);
    let home = server.home(user);
    let work = tempfile::tempdir().expect("temp dir");
    let w = work.path();
    let src = w.join("src");
    make_tree(&src);
    // Distinct whole-second modification times in the past.
    let base_time = 1_600_000_000u64; // 2020-09-13T12:26:40Z
    let mut mtimes = BTreeMap::new();
    for (i, (rel, _)) in tree_files().into_iter().enumerate() {
        let t = base_time + 3_600 * i as u64 + 7;
        let f = std::fs::File::options()
            .write(true)
            .open(src.join(rel))
            .expect("open tree file");
        f.set_modified(UNIX_EPOCH + Duration::from_secs(t))
            .expect("set mtime");
        mtimes.insert(rel.to_owned(), t as i64);
    }

    // Object storage cannot set a modification time (no MFMT on S3): there rclone's files
    // carry the time of their upload instead.
    let times_kept = backend == Backend::Local;
    let started = time::OffsetDateTime::now_utc().unix_timestamp() - 1;
    let remote = rclone_remote(&server, w, user, pass, "dst");
    let rclone = |args: &[&str]| -> Output {
        let mut all = vec![
            "--config",
            "/dev/null",
            "--retries",
            "1",
            "--timeout",
            "20s",
        ];
        all.extend_from_slice(args);
        run_client("rclone", &all, w)
    };

    let out = rclone(&["copy", "--create-empty-src-dirs", "src", &remote]);
    assert_success(&out, "rclone copy");
    assert_same_tree(
        &src,
        &server.home_view(user).join("dst"),
        "after rclone copy",
    );

    let out = rclone(&["check", "src", &remote]);
    assert_success(&out, "rclone check");
    let out = rclone(&["check", "--download", "src", &remote]);
    assert_success(&out, "rclone check --download");

    // lsjson: every file with its size and the source's modification time, to the second.
    let out = rclone(&["lsjson", "-R", &remote]);
    assert_success(&out, "rclone lsjson");
    let listed: Vec<Value> = serde_json::from_slice(&out.stdout).expect("lsjson output");
    for (rel, bytes) in tree_files() {
        let item = listed
            .iter()
            .find(|v| v["Path"] == rel)
            .unwrap_or_else(|| panic!("{rel} not in lsjson: {listed:?}"));
        assert_eq!(item["IsDir"], false, "{item}");
        assert_eq!(item["Size"], json!(bytes.len()), "{item}");
        let modtime = item["ModTime"].as_str().expect("ModTime");
        let parsed =
            time::OffsetDateTime::parse(modtime, &time::format_description::well_known::Rfc3339)
                .unwrap_or_else(|e| panic!("ModTime {modtime:?}: {e}"));
        if !times_kept {
            assert!(
                parsed.unix_timestamp() >= started,
                "{rel}: ModTime {modtime} is the upload's"
            );
            continue;
        }
        assert_eq!(
            parsed.unix_timestamp(),
            mtimes[rel],
            "{rel}: ModTime {modtime}"
        );
        let on_disk = std::fs::metadata(home.join("dst").join(rel))
            .and_then(|m| m.modified())
            .expect("server file mtime");
        let secs = on_disk
            .duration_since(UNIX_EPOCH)
            .expect("after epoch")
            .as_secs();
        assert_eq!(secs as i64, mtimes[rel], "{rel}: mtime on the server");
    }
    for dir in [
        "sub dir",
        "sub dir/deep",
        "sub dir/deep/deeper",
        "ü",
        "empty-dir",
    ] {
        assert!(
            listed
                .iter()
                .any(|v| v["Path"] == dir && v["IsDir"] == true),
            "directory {dir} not in lsjson"
        );
    }

    // A ranged read: REST, RETR, and rclone closes the data connection after --count bytes.
    let out = rclone(&[
        "cat",
        "--offset",
        "1000",
        "--count",
        "50000",
        &format!("{remote}/sub dir/with space.bin"),
    ]);
    assert_success(&out, "rclone cat --offset --count");
    assert!(
        out.stdout == tree_file("sub dir/with space.bin")[1000..51_000],
        "rclone cat range differs"
    );

    // MDTM agrees with the source, too.
    let mut ctl = server.connect().0;
    ctl.login(user, pass);
    let reply = ctl.expect("MDTM dst/sub dir/with space.bin", 213);
    let shown = if times_kept {
        mtimes["sub dir/with space.bin"]
    } else {
        parse_mdtm(&reply.lines[0])
    };
    assert!(times_kept || shown >= started, "{reply:?}");
    let expected = time::OffsetDateTime::from_unix_timestamp(shown)
        .expect("timestamp")
        .format(time::macros::format_description!(
            "[year][month][day][hour][minute][second]"
        ))
        .expect("format");
    assert_eq!(reply.lines[0], format!("213 {expected}"));
    ctl.expect("QUIT", 221);

    // The MDTM session came last: once its MDTM is in the log, so is every rclone login, and
    // then every one of those sessions must be closed too.
    let events = server.wait_audit("all of rita's sessions closed", |ev| {
        let count = |kind: &str| {
            ev.iter()
                .filter(|e| e["event"] == kind && e["user"] == user)
                .count()
        };
        has_event(
            ev,
            &[
                ("event", json!("command")),
                ("user", json!(user)),
                ("command", json!("MDTM dst/sub dir/with space.bin")),
            ],
        ) && count("session_close") == count("login_ok")
    });
    for (rel, bytes) in tree_files() {
        assert_transfer(&events, user, "upload", &format!("/dst/{rel}"), bytes.len());
        assert_transfer(
            &events,
            user,
            "download",
            &format!("/dst/{rel}"),
            bytes.len(),
        );
        let stamp = time::OffsetDateTime::from_unix_timestamp(mtimes[rel])
            .expect("timestamp")
            .format(time::macros::format_description!(
                "[year][month][day][hour][minute][second]"
            ))
            .expect("format");
        let mfmt = events.iter().any(|e| {
            e["event"] == "command"
                && e["code"] == 213
                && e["command"]
                    .as_str()
                    .is_some_and(|c| c.starts_with(&format!("MFMT {stamp}")) && c.ends_with(rel))
        });
        assert_eq!(mfmt, times_kept, "MFMT {stamp} .. {rel} answered 213");
    }
    assert_command(&events, user, "REST 1000", 350);
    for dir in ["/dst", "/dst/sub dir", "/dst/empty-dir", "/dst/ü"] {
        assert_event(
            &events,
            &[
                ("event", json!("mkdir")),
                ("user", json!(user)),
                ("path", json!(dir)),
            ],
        );
    }
}

on_both_backends!(rclone_copy_check_and_modification_times_on: rclone_copy_check_and_modification_times, rclone_copy_check_and_modification_times_on_s3);

// ---------------------------------------------------------------------------------------------
// Parallel clients on the default configuration
// ---------------------------------------------------------------------------------------------

/// Bound on one run of a client moving the many-files tree.
const PARALLEL_TIMEOUT: Duration = Duration::from_secs(180);

/// 200 small files in four directories and three larger ones at the top, under `root`.
fn make_many_files(root: &Path) {
    for i in 0..200u64 {
        let path = root.join(format!("d{}/f{i:03}.bin", i % 4));
        std::fs::create_dir_all(path.parent().expect("parent")).expect("create dirs");
        std::fs::write(&path, pseudo_random(100 + 37 * i as usize, i)).expect("write file");
    }
    for i in 0..3u64 {
        let bytes = pseudo_random((3 << 20) + i as usize, 1000 + i);
        std::fs::write(root.join(format!("large{i}.bin")), bytes).expect("write file");
    }
}

fn rclone_with_32_transfers_and_32_checkers_on_the_defaults_on(backend: Backend) {
    // Only the data dir, a free port and cheap hashes differ from the defaults. With per-user
    // caps (the old 20 sessions, 10 transfers) rclone's connections beyond them failed, and
    // with one retry pass and one low-level retry nothing hides such a failure.
    let server = TestServer::start_on_defaults_on(backend);
    let (user, pass) = ("pia", "parallel-pass-1");
    register(&server, user, pass);
    let work = tempfile::tempdir().expect("temp dir");
    let w = work.path();
    let src = w.join("src");
    make_many_files(&src);
    let remote = rclone_remote(&server, w, user, pass, "up");
    let rclone = |from: &str, to: &str| -> Output {
        let args = [
            "--config",
            "/dev/null",
            "copy",
            "--transfers",
            "32",
            "--checkers",
            "32",
            "--retries",
            "1",
            "--low-level-retries",
            "1",
            "--timeout",
            "30s",
            from,
            to,
        ];
        run_client_within("rclone", &args, w, None, PARALLEL_TIMEOUT)
    };
    let out = rclone("src", &remote);
    assert_success(&out, "rclone copy up");
    assert_same_tree(
        &src,
        &server.home_view(user).join("up"),
        "after rclone copy up",
    );
    let out = rclone(&remote, "back");
    assert_success(&out, "rclone copy down");
    assert_same_tree(&src, &w.join("back"), "after rclone copy down");
}

on_both_backends!(rclone_with_32_transfers_and_32_checkers_on_the_defaults_on: rclone_with_32_transfers_and_32_checkers_on_the_defaults, rclone_with_32_transfers_and_32_checkers_on_the_defaults_on_s3);

fn lftp_parallel_mirror_on_the_defaults_gets_no_425_on(backend: Backend) {
    let server = TestServer::start_on_defaults_on(backend);
    let (user, pass) = ("lia", "parallel-pass-2");
    register(&server, user, pass);
    let work = tempfile::tempdir().expect("temp dir");
    let w = work.path();
    let src = w.join("src");
    // 64 files of 128 KiB, each sent at 256 KiB/s with bursts of 32 KiB (lftp's limits per
    // connection): every transfer lasts about half a second, so sixteen of them really run at
    // once (the old per-user cap of 10 transfers answered the rest 425).
    for i in 0..64u64 {
        let path = src.join(format!("d{}/f{i:02}.bin", i % 4));
        std::fs::create_dir_all(path.parent().expect("parent")).expect("create dirs");
        std::fs::write(&path, pseudo_random(128 << 10, 500 + i)).expect("write file");
    }
    let script = format!(
        "set net:max-retries 1; set net:timeout 20; set ftp:ssl-allow no; \
         set cmd:fail-exit yes; set net:limit-rate 262144; set net:limit-max 32768; \
         open -u {user},{pass} -p {} 127.0.0.1; \
         mirror -R --parallel=16 src up; mirror --parallel=16 up back",
        server.port()
    );
    let out = run_client_within("lftp", &["-c", &script], w, None, PARALLEL_TIMEOUT);
    assert_success(&out, "lftp mirror --parallel=16");
    let printed = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(!printed.contains("425"), "lftp got a 425:\n{printed}");
    assert_same_tree(&src, &server.home_view(user).join("up"), "after mirror -R");
    assert_same_tree(&src, &w.join("back"), "after mirror back");
    let events = server.audit_events();
    assert!(
        !events.iter().any(|e| e["code"] == 425),
        "a 425 in the audit log"
    );
}

on_both_backends!(lftp_parallel_mirror_on_the_defaults_gets_no_425_on: lftp_parallel_mirror_on_the_defaults_gets_no_425, lftp_parallel_mirror_on_the_defaults_gets_no_425_on_s3);

// ---------------------------------------------------------------------------------------------
// wget
// ---------------------------------------------------------------------------------------------

fn wget_recursive_download_of_a_nested_tree_on(backend: Backend) {
    let server = TestServer::start_on(backend, &[]);
    let (user, pass) = ("walt", "wget-pass-4");
    register(&server, user, pass);
    let home = server.home(user);
    make_tree(&home.join("pub"));
    server.seeded(user);
    let work = tempfile::tempdir().expect("temp dir");
    let w = work.path();

    let url = format!("ftp://{user}:{pass}@127.0.0.1:{}/pub/", server.port());
    let out = run_client(
        "wget",
        &[
            "-q",
            "-r",
            "-nH",
            "--tries=1",
            "--timeout=10",
            "--restrict-file-names=nocontrol",
            &url,
        ],
        w,
    );
    assert_success(&out, "wget -r");
    // wget fetches files and the directories it lists (no .listing left behind); an empty
    // directory comes along as an empty directory.
    assert_same_tree(
        &server.home_view(user).join("pub"),
        &w.join("pub"),
        "after wget -r",
    );

    let events = server.wait_sessions_closed(user, 2);
    for (rel, bytes) in tree_files() {
        assert_transfer(
            &events,
            user,
            "download",
            &format!("/pub/{rel}"),
            bytes.len(),
        );
    }
    assert!(
        events.iter().any(|e| e["event"] == "command"
            && e["user"] == user
            && e["command"].as_str().is_some_and(|c| c.starts_with("LIST"))
            && e["code"] == 226),
        "wget lists with LIST"
    );
    assert!(
        !events
            .iter()
            .any(|e| matches!(e["event"].as_str(), Some("upload" | "delete" | "mkdir"))),
        "a download-only client changed something"
    );
}

on_both_backends!(wget_recursive_download_of_a_nested_tree_on: wget_recursive_download_of_a_nested_tree, wget_recursive_download_of_a_nested_tree_on_s3);
