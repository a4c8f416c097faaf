//! ferryd on S3 storage (issue 13), against a real S3 server (s3s-fs, which checks SigV4):
//! what object storage changes for a client. Large uploads go through multipart and arrive
//! byte-exact; an aborted replace leaves the old object and no parts; REST+RETR are ranged GETs;
//! APPE rewrites up to `--s3-rewrite-max-bytes`; directories are markers and prefixes; a
//! directory rename copies up to `--s3-max-rename-objects`; a bucket that goes away costs the
//! session a 451, not the session; a bucket that cannot be used stops the start with one line.
//! The client flows both backends share are in the other modules (`interop`, `ftp_clients`,
//! `client_script`).

use crate::common;

use std::io::{Read as _, Write as _};
use std::net::{TcpListener, TcpStream};
use std::path::Path;
use std::process::{Command, Output, Stdio};
use std::time::{Duration, Instant};

use common::s3::{BUCKET, PREFIX, S3Bucket};
use common::*;
use serde_json::json;

/// Runs `curl -sS ARGS` in `cwd`, bounded.
fn curl(cwd: &Path, args: &[&str]) -> Output {
    let mut all = vec!["-sS", "--max-time", "120", "--connect-timeout", "10"];
    all.extend_from_slice(args);
    run_client_within("curl", &all, cwd, None, Duration::from_secs(150))
}

fn utf8(path: &Path) -> &str {
    path.to_str().expect("utf-8 path")
}

/// Asserts that the files `a` and `b` hold the same bytes, comparing 1 MiB at a time.
fn assert_same_file(a: &Path, b: &Path) {
    let open = |p: &Path| std::fs::File::open(p).unwrap_or_else(|e| panic!("{}: {e}", p.display()));
    let (mut fa, mut fb) = (open(a), open(b));
    let (la, lb) = (
        fa.metadata().expect("meta").len(),
        fb.metadata().expect("meta").len(),
    );
    assert_eq!(
        la,
        lb,
        "{} and {} differ in length",
        a.display(),
        b.display()
    );
    let (mut ba, mut bb) = (vec![0; 1 << 20], vec![0; 1 << 20]);
    let mut at = 0u64;
    while at < la {
        let n = usize::try_from((la - at).min(1 << 20)).expect("chunk");
        fa.read_exact(&mut ba[..n]).expect("read a");
        fb.read_exact(&mut bb[..n]).expect("read b");
        assert!(
            ba[..n] == bb[..n],
            "the files differ within bytes {at}..{}",
            at + n as u64
        );
        at += n as u64;
    }
}

#[test]
fn a_200_mib_stor_goes_through_multipart_byte_exact_and_comes_back() {
    let server = TestServer::start_s3(&[]);
    let (user, pass) = ("max", "multipart-1");
    register(&server, user, pass);
    let work = tempfile::tempdir().expect("work dir");
    let big = work.path().join("big.bin");
    let mut file = std::fs::File::create(&big).expect("create big.bin");
    for i in 0..200 {
        file.write_all(&pseudo_random(1 << 20, 1000 + i))
            .expect("write big.bin");
    }
    drop(file);
    let base = format!("ftp://{user}:{pass}@127.0.0.1:{}", server.port());
    let out = curl(work.path(), &["-T", utf8(&big), &format!("{base}/big.bin")]);
    assert_success(&out, "curl -T 200 MiB");
    assert_same_file(&big, &server.home(user).join("big.bin"));
    let parts = server.s3().multipart_part_counts();
    assert!(
        parts.iter().any(|&n| n >= 2),
        "the upload was completed from several parts: {parts:?}"
    );
    server.s3().wait_no_uploads();
    let out = curl(work.path(), &["-o", "back.bin", &format!("{base}/big.bin")]);
    assert_success(&out, "curl download of 200 MiB");
    assert_same_file(&big, &work.path().join("back.bin"));
    let events = server.wait_sessions_closed(user, 3);
    assert_transfer(&events, user, "upload", "/big.bin", 200 << 20);
    assert_transfer(&events, user, "download", "/big.bin", 200 << 20);
}

/// Sends bytes on an upload's data connection until (bounded) the S3 server holds a part of
/// its unfinished multipart upload.
fn send_until_a_part(data: &mut TcpStream, bucket: &S3Bucket) {
    let has_part = || {
        bucket
            .upload_leftovers()
            .iter()
            .any(|p| p.to_string_lossy().contains(".part-"))
    };
    let chunk = pseudo_random(1 << 20, 6);
    for _ in 0..40 {
        data.write_all(&chunk).expect("send the new bytes");
        if has_part() {
            return;
        }
    }
    let deadline = Instant::now() + Duration::from_secs(30);
    while !has_part() {
        assert!(
            Instant::now() < deadline,
            "no multipart part reached the S3 server"
        );
        std::thread::sleep(Duration::from_millis(20));
    }
}

#[test]
fn an_aborted_replace_keeps_the_old_object_and_leaves_no_parts() {
    let server = TestServer::start_s3(&[]);
    let (user, pass) = ("abby", "abort-pass-1");
    let mut ctl = server.register_and_login(user, pass);
    ctl.expect("TYPE I", 200);
    let old = pseudo_random(70_000, 5);
    assert_eq!(ctl.stor("keep.bin", &old).code, 226);

    // ABOR in the middle of a replace that has sent parts to the S3 server.
    let mut data = ctl.data_connection();
    ctl.expect("STOR keep.bin", 150);
    send_until_a_part(&mut data, server.s3());
    ctl.send("ABOR");
    assert_eq!(ctl.reply().code, 426, "the transfer is aborted");
    assert_eq!(ctl.reply().code, 226, "ABOR is answered");
    drop(data);
    server.s3().wait_no_uploads();
    assert!(
        std::fs::read(server.home(user).join("keep.bin")).expect("keep.bin") == old,
        "the old object is intact"
    );
    assert!(ctl.retr("keep.bin") == old);

    // A replace whose data connection is reset: the same.
    let mut data = ctl.data_connection();
    ctl.expect("STOR keep.bin", 150);
    send_until_a_part(&mut data, server.s3());
    socket2::SockRef::from(&data)
        .set_linger(Some(Duration::ZERO))
        .expect("linger 0");
    drop(data);
    let reply = ctl.reply();
    assert!(matches!(reply.code, 426 | 451), "{reply:?}");
    server.s3().wait_no_uploads();
    assert!(ctl.retr("keep.bin") == old, "the old object is intact");
    ctl.expect("QUIT", 221);
}

#[test]
fn rest_and_retr_are_ranged_gets() {
    let server = TestServer::start_s3(&[]);
    let (user, pass) = ("rena", "ranges-pass-1");
    let mut ctl = server.register_and_login(user, pass);
    let payload = pseudo_random(3 << 20, 7);
    assert_eq!(ctl.stor("r.bin", &payload).code, 226);
    ctl.expect("TYPE I", 200);
    ctl.expect("REST 1000000", 350);
    assert!(ctl.retr("r.bin") == payload[1_000_000..]);
    ctl.expect(&format!("REST {}", payload.len()), 350);
    assert!(
        ctl.retr("r.bin").is_empty(),
        "REST at the end sends nothing"
    );
    ctl.expect(&format!("REST {}", payload.len() + 1), 350);
    let (reply, _) = ctl.fetch("RETR r.bin");
    assert_eq!(reply.code, 554, "REST beyond the end: {reply:?}");
    ctl.expect("QUIT", 221);

    let work = tempfile::tempdir().expect("work dir");
    let url = format!("ftp://{user}:{pass}@127.0.0.1:{}/r.bin", server.port());
    let out = curl(work.path(), &["-r", "100-199", "-o", "a.part", &url]);
    assert_success(&out, "curl -r 100-199");
    assert!(std::fs::read(work.path().join("a.part")).expect("a.part") == payload[100..200]);
    let out = curl(work.path(), &["-r", "2500000-", "-o", "b.part", &url]);
    assert_success(&out, "curl -r 2500000-");
    assert!(std::fs::read(work.path().join("b.part")).expect("b.part") == payload[2_500_000..]);
    let events = server.wait_sessions_closed(user, 3);
    assert_transfer(
        &events,
        user,
        "download",
        "/r.bin",
        payload.len() - 1_000_000,
    );
    assert_event(
        &events,
        &[
            ("event", json!("command")),
            ("command", json!("REST 2500000")),
            ("code", json!(350)),
        ],
    );
}

#[test]
fn appe_and_rest_stor_rewrite_up_to_the_limit_and_say_why_beyond() {
    let server = TestServer::start_s3(&["--s3-rewrite-max-bytes", "100000"]);
    let (user, pass) = ("apel", "append-pass-1");
    let mut ctl = server.register_and_login(user, pass);
    ctl.expect("TYPE I", 200);
    let head = pseudo_random(60_000, 8);
    let tail = pseudo_random(30_000, 9);
    assert_eq!(ctl.stor("a.bin", &head).code, 226);
    let mut data = ctl.data_connection();
    ctl.expect("APPE a.bin", 150);
    data.write_all(&tail).expect("append");
    drop(data);
    assert_eq!(ctl.reply().code, 226);
    let whole = [head.clone(), tail.clone()].concat();
    assert!(ctl.retr("a.bin") == whole, "APPE within the limit");
    // REST+STOR within the limit: keep 50000 bytes, then the new ones.
    ctl.expect("REST 50000", 350);
    let mut data = ctl.data_connection();
    ctl.expect("STOR a.bin", 150);
    data.write_all(&tail).expect("resume");
    drop(data);
    assert_eq!(ctl.reply().code, 226);
    let resumed = [&whole[..50_000], &tail[..]].concat();
    assert!(ctl.retr("a.bin") == resumed, "REST+STOR within the limit");

    // 110000 bytes: past the limit, APPE and REST+STOR are refused and say why.
    let big = pseudo_random(110_000, 10);
    assert_eq!(ctl.stor("big.bin", &big).code, 226);
    let _data = ctl.data_connection();
    let reply = ctl.cmd("APPE big.bin");
    assert_eq!(reply.code, 550, "{reply:?}");
    assert!(
        reply.text().contains("too large") && reply.text().contains("100000"),
        "{reply:?}"
    );
    ctl.expect("REST 1000", 350);
    let _data = ctl.data_connection();
    let reply = ctl.cmd("STOR big.bin");
    assert_eq!(reply.code, 550, "{reply:?}");
    assert!(
        ctl.retr("big.bin") == big,
        "a refused rewrite changes nothing"
    );
    ctl.expect("QUIT", 221);
    server.s3().wait_no_uploads();
}

/// The names of an NLST of `dir`, sorted.
fn names(ctl: &mut Control, dir: &str) -> Vec<String> {
    let (reply, bytes) = ctl.fetch(&format!("NLST {dir}"));
    assert_eq!(reply.code, 226, "NLST {dir}: {reply:?}");
    let mut names: Vec<String> = String::from_utf8_lossy(&bytes)
        .lines()
        .map(|l| l.rsplit('/').next().unwrap_or(l).to_owned())
        .collect();
    names.sort();
    names
}

/// Asserts that the directory `path` is gone: CWD into it fails. With 550, or with 451 where
/// s3s-fs still has the emptied directory on its disk: it answers a HEAD of that key with 500
/// (real S3 servers say 404), which ferryd reports as the server error it is.
fn assert_gone(ctl: &mut Control, path: &str) {
    let reply = ctl.cmd(&format!("CWD {path}"));
    assert!(matches!(reply.code, 550 | 451), "CWD {path}: {reply:?}");
}

#[test]
fn directories_are_markers_and_prefixes() {
    let server = TestServer::start_s3(&[]);
    let (user, pass) = ("dora", "dirs-pass-1");
    let mut ctl = server.register_and_login(user, pass);
    ctl.expect("MKD d", 257);
    ctl.expect("MKD d", 550);
    ctl.expect("MKD missing/child", 550);
    assert_eq!(names(&mut ctl, "/"), ["d"]);
    assert!(
        server.home(user).join("d").is_dir(),
        "the marker is in the bucket"
    );
    ctl.expect("CWD nowhere", 550);
    ctl.expect("CWD d", 250);
    assert_eq!(ctl.stor("f.txt", b"in d\n").code, 226);
    ctl.expect("MKD sub", 257);
    ctl.expect("CDUP", 250);
    ctl.expect("RMD d", 550);
    let (reply, listing) = ctl.fetch("LIST d");
    assert_eq!(reply.code, 226);
    let listing = String::from_utf8_lossy(&listing);
    assert!(
        listing
            .lines()
            .any(|l| l.starts_with('d') && l.ends_with(" sub")),
        "{listing}"
    );
    assert!(
        listing
            .lines()
            .any(|l| l.starts_with('-') && l.ends_with(" f.txt")),
        "{listing}"
    );
    let (reply, mlsd) = ctl.fetch("MLSD d");
    assert_eq!(reply.code, 226);
    let mlsd = String::from_utf8_lossy(&mlsd);
    assert!(mlsd.contains("type=file;size=5;"), "{mlsd}");
    assert!(mlsd.to_lowercase().contains("type=dir;"), "{mlsd}");
    ctl.expect("SIZE d/f.txt", 213);
    ctl.expect("MDTM d/f.txt", 213);
    let (reply, _) = ctl.fetch("RETR d");
    assert_eq!(reply.code, 550, "RETR of a directory: {reply:?}");
    ctl.expect("DELE d/f.txt", 250);
    ctl.expect("RMD d", 550);
    ctl.expect("RMD d/sub", 250);
    ctl.expect("RMD d", 250);
    assert!(names(&mut ctl, "/").is_empty());
    assert_gone(&mut ctl, "d");
    ctl.expect("RMD /", 550);
    ctl.expect("QUIT", 221);
}

#[test]
fn a_directory_rename_copies_its_objects_up_to_the_limit() {
    let server = TestServer::start_s3(&["--s3-max-rename-objects", "6"]);
    let (user, pass) = ("rolf", "rename-pass-1");
    let mut ctl = server.register_and_login(user, pass);
    ctl.expect("MKD small", 257);
    ctl.expect("MKD small/sub", 257);
    assert_eq!(ctl.stor("small/a.txt", b"a\n").code, 226);
    assert_eq!(ctl.stor("small/sub/b.txt", b"bb\n").code, 226);
    ctl.expect("RNFR small", 350);
    ctl.expect("RNTO moved", 250);
    assert_eq!(names(&mut ctl, "/"), ["moved"]);
    assert_eq!(names(&mut ctl, "/moved"), ["a.txt", "sub"]);
    assert_eq!(ctl.retr("moved/sub/b.txt"), b"bb\n");
    assert_gone(&mut ctl, "small");
    // A file: copy then delete.
    ctl.expect("RNFR moved/a.txt", 350);
    ctl.expect("RNTO c.txt", 250);
    assert_eq!(ctl.retr("c.txt"), b"a\n");
    ctl.expect("SIZE moved/a.txt", 550);

    ctl.expect("MKD big", 257);
    for i in 0..8 {
        assert_eq!(ctl.stor(&format!("big/{i}.txt"), b"x").code, 226);
    }
    ctl.expect("RNFR big", 350);
    let reply = ctl.cmd("RNTO big2");
    assert_eq!(reply.code, 550, "{reply:?}");
    assert!(reply.text().contains("more than 6"), "{reply:?}");
    assert_eq!(names(&mut ctl, "/big").len(), 8, "nothing moved");
    ctl.expect("CWD big2", 550);
    ctl.expect("QUIT", 221);
}

#[test]
fn a_bucket_that_goes_away_costs_a_451_not_the_session() {
    let mut server = TestServer::start_s3(&[]);
    let (user, pass) = ("gwen", "gone-pass-1");
    let mut ctl = server.register_and_login(user, pass);
    assert_eq!(ctl.stor("f.txt", b"here\n").code, 226);
    server.s3_mut().kill();
    // object_store retries with backoff; every wait of the harness is longer than its bound.
    ctl.stream()
        .set_read_timeout(Some(Duration::from_secs(90)))
        .expect("read timeout");
    for command in ["LIST", "RETR f.txt"] {
        let started = Instant::now();
        let (reply, _) = ctl.fetch(command);
        assert_eq!(reply.code, 451, "{command}: {reply:?}");
        assert!(
            started.elapsed() < Duration::from_secs(60),
            "{command} took {:?}",
            started.elapsed()
        );
    }
    ctl.expect("SIZE f.txt", 451);
    ctl.expect("NOOP", 200);
    ctl.expect("QUIT", 221);
    assert!(!server.stderr().contains("panicked"), "{}", server.stderr());
}

/// Runs `ferryd ARGS` (a start that must fail) with `env`, bounded.
fn failed_start(args: &[&str], env: &[(String, String)]) -> (Option<i32>, String) {
    let data = tempfile::tempdir().expect("data dir");
    let child = Command::new(FERRYD)
        .args(["--listen", "127.0.0.1:0", "--data-dir", utf8(data.path())])
        .args(args)
        .env_remove("AWS_ACCESS_KEY_ID")
        .env_remove("AWS_SECRET_ACCESS_KEY")
        .env_remove("AWS_SESSION_TOKEN")
        .env_remove("RUST_LOG")
        .envs(env.iter().map(|(k, v)| (k, v)))
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawn ferryd");
    let out = run_bounded(child, Duration::from_secs(60));
    (
        out.status.code(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

/// The one line a failed start prints: `ferryd: ` and the reason, nothing else, exit 1.
fn one_line(outcome: &(Option<i32>, String), needle: &str) {
    let (code, stderr) = outcome;
    assert_eq!(*code, Some(1), "{stderr}");
    let lines: Vec<&str> = stderr.lines().collect();
    assert_eq!(lines.len(), 1, "one line wanted:\n{stderr}");
    assert!(
        lines[0].starts_with("ferryd: ") && lines[0].contains(needle),
        "wanted `ferryd: ...{needle}...`, got {:?}",
        lines[0]
    );
}

#[test]
fn a_bucket_that_cannot_be_used_stops_the_start_with_one_line() {
    let bucket = S3Bucket::start();
    let args = bucket.args();
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    let keys = S3Bucket::env();
    let at = format!("cannot use bucket {BUCKET} at {}", bucket.endpoint());

    let wrong = vec![
        keys[0].clone(),
        (
            "AWS_SECRET_ACCESS_KEY".to_owned(),
            "not-the-secret".to_owned(),
        ),
    ];
    let outcome = failed_start(&args, &wrong);
    one_line(&outcome, &at);
    one_line(&outcome, "credentials were refused");
    assert!(
        !outcome.1.contains("not-the-secret"),
        "the secret is never printed"
    );

    let missing: Vec<&str> = args
        .iter()
        .map(|a| if *a == BUCKET { "no-such-bucket" } else { a })
        .collect();
    one_line(&failed_start(&missing, &keys), "the bucket does not exist");

    let closed = TcpListener::bind("127.0.0.1:0").expect("bind");
    let port = closed.local_addr().expect("addr").port();
    drop(closed);
    let nowhere = format!("http://127.0.0.1:{port}");
    let unreachable: Vec<&str> = args
        .iter()
        .map(|a| {
            if *a == bucket.endpoint() {
                nowhere.as_str()
            } else {
                a
            }
        })
        .collect();
    one_line(&failed_start(&unreachable, &keys), "cannot connect");

    one_line(&failed_start(&args, &[]), "no access key");
    let mut anonymous = args.clone();
    anonymous.extend(["--anonymous-root", "/tmp"]);
    one_line(&failed_start(&anonymous, &keys), "anonymous_root");
    one_line(
        &failed_start(&["--s3-bucket", BUCKET], &keys),
        "storage is local",
    );
    let plain: Vec<&str> = args
        .iter()
        .copied()
        .filter(|a| *a != "--s3-allow-http")
        .collect();
    one_line(&failed_start(&plain, &keys), "--s3-allow-http");
}

#[test]
fn mfmt_and_site_chmod_are_left_out_and_refused() {
    let local = TestServer::start(&[]);
    let s3 = TestServer::start_s3(&[]);
    let (user, pass) = ("mona", "no-mfmt-1");
    for (server, on_s3) in [(&local, false), (&s3, true)] {
        let mut ctl = server.register_and_login(user, pass);
        assert_eq!(ctl.stor("f.txt", b"x").code, 226);
        let feat = ctl.expect("FEAT", 211).text();
        let has_mfmt = feat.lines().any(|l| l.trim() == "MFMT");
        assert_eq!(has_mfmt, !on_s3, "{feat}");
        let help = ctl.expect("HELP SITE", 214).text();
        assert_eq!(help.contains("CHMOD"), !on_s3, "{help}");
        let want = if on_s3 { 550 } else { 213 };
        ctl.expect("MFMT 20200102030405 f.txt", want);
        let want = if on_s3 { 550 } else { 200 };
        ctl.expect("SITE CHMOD 600 f.txt", want);
        ctl.expect("QUIT", 221);
    }
}

#[test]
fn quota_audit_and_xferlog_work_as_on_local_storage() {
    let server = TestServer::start_s3(&["--default-quota-bytes", "100000"]);
    let (user, pass) = ("quin", "quota-pass-1");
    let mut ctl = server.register_and_login(user, pass);
    let first = pseudo_random(60_000, 11);
    assert_eq!(ctl.stor("one.bin", &first).code, 226);
    let quota = ctl.expect("SITE QUOTA", 211).text();
    assert!(quota.contains("Bytes used: 60000 of 100000"), "{quota}");
    assert!(quota.contains("Files used: 1 of "), "{quota}");
    // Past the byte limit: 552 (the server may close the data connection early), nothing kept.
    let mut data = ctl.data_connection();
    ctl.expect("STOR two.bin", 150);
    for chunk in pseudo_random(3 << 20, 12).chunks(64 * 1024) {
        if data.write_all(chunk).is_err() {
            break;
        }
    }
    drop(data);
    let reply = ctl.reply();
    assert_eq!(reply.code, 552, "past the byte limit: {reply:?}");
    ctl.expect("SIZE two.bin", 550);
    server.s3().wait_no_uploads();
    let quota = ctl.expect("SITE QUOTA", 211).text();
    assert!(quota.contains("Bytes used: 60000 of 100000"), "{quota}");
    assert!(ctl.retr("one.bin") == first);
    ctl.expect("DELE one.bin", 250);
    let quota = ctl.expect("SITE QUOTA", 211).text();
    assert!(quota.contains("Bytes used: 0 of 100000"), "{quota}");
    ctl.expect("QUIT", 221);

    let events = server.wait_sessions_closed(user, 1);
    assert_transfer(&events, user, "upload", "/one.bin", first.len());
    assert_transfer(&events, user, "download", "/one.bin", first.len());
    let xferlog = std::fs::read_to_string(server.data_dir().join("log/xferlog")).expect("xferlog");
    let fields: Vec<Vec<&str>> = xferlog
        .lines()
        .map(|l| l.split_whitespace().collect())
        .collect();
    for direction in ["i", "o"] {
        assert!(
            fields.iter().any(|f| f.len() == 18
                && f[7] == "60000"
                && f[8] == "/one.bin"
                && f[11] == direction
                && f[13] == user
                && f[17] == "c"),
            "{direction}: {xferlog}"
        );
    }
}

#[test]
fn operator_commands_create_and_purge_homes_in_the_bucket() {
    let server = TestServer::start_s3(&[]);
    let add = |name: &str| {
        server.admin(
            &["user", "add", name, "--password-stdin"],
            Some("op-pass-12\n"),
        )
    };
    let out = add("olga");
    assert_success(&out, "user add on S3");
    let mut ctl = server.connect().0;
    ctl.login("olga", "op-pass-12");
    assert!(names(&mut ctl, "/").is_empty());
    assert_eq!(ctl.stor("kept.txt", b"olga's\n").code, 226);
    ctl.expect("QUIT", 221);
    server.wait_sessions_closed("olga", 1);

    let place = format!("s3://{BUCKET}/{PREFIX}/olga/");
    let out = server.admin(&["user", "del", "olga"], None);
    assert_success(&out, "user del");
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        text.contains("; kept ") && text.contains(&place) && !text.contains("removed"),
        "{text}"
    );
    let out = add("olga");
    assert!(!out.status.success(), "the name is held by what remains");
    assert!(String::from_utf8_lossy(&out.stderr).contains(&place));
    // Nor can a stranger register it.
    let (mut ctl, _) = server.connect();
    ctl.expect("SITE REGISTER olga stranger-pass-1", 550);
    // --adopt-home gives the objects to a new account and recounts them from the bucket.
    let out = server.admin(
        &["user", "add", "olga", "--password-stdin", "--adopt-home"],
        Some("op-pass-12\n"),
    );
    assert_success(&out, "user add --adopt-home");
    let mut adopted = server.connect().0;
    adopted.login("olga", "op-pass-12");
    assert_eq!(adopted.retr("kept.txt"), b"olga's\n");
    let quota = adopted.expect("SITE QUOTA", 211).text();
    assert!(quota.contains("Bytes used: 7 "), "{quota}");
    assert!(quota.contains("Files used: 1 "), "{quota}");
    adopted.expect("QUIT", 221);
    let out = server.admin(&["user", "quota", "olga", "--recount"], None);
    assert_success(&out, "user quota --recount");
    assert!(String::from_utf8_lossy(&out.stdout).contains("Bytes used: 7 "));

    let out = server.admin(&["user", "del", "olga", "--purge"], None);
    assert_success(&out, "user del --purge");
    assert!(String::from_utf8_lossy(&out.stdout).contains(&place));
    assert!(
        !server.home("olga").join("kept.txt").exists(),
        "the object is gone from the bucket"
    );
    ctl.expect("SITE REGISTER olga stranger-pass-1", 200);
    ctl.login("olga", "stranger-pass-1");
    assert!(
        names(&mut ctl, "/").is_empty(),
        "the new account starts empty"
    );
    ctl.expect("QUIT", 221);
}
