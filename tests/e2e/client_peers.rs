//! The `ferry` client against an FTP server nobody on this project wrote: pyftpdlib on
//! loopback (installed by `scripts/test`), in passive and in active mode; one-shot transfers,
//! a bookmark and the JSON listing.

use crate::common;

use std::path::Path;
use std::time::Duration;

use common::pyftpd::{PASS, PyFtpd};
use common::{CLIENT_ZONE, Run, pseudo_random};

/// `ferry ARGS` in `cwd` with pyftpdlib's password.
fn ferry(cwd: &Path, args: &[&str]) -> Run {
    common::ferry(cwd, PASS, args)
}

fn session(active: bool) {
    let server = PyFtpd::start();
    let local = tempfile::Builder::new()
        .prefix("ferry-peer-client-")
        .tempdir()
        .expect("temp dir");
    let cwd = local.path();
    let data = pseudo_random(2 * 1024 * 1024 + 3, if active { 21 } else { 22 });
    std::fs::write(cwd.join("up load.bin"), &data).expect("local file");
    std::fs::write(server.home.join("theirs.txt"), b"from pyftpdlib\r\n").expect("seed");

    let target = format!("127.0.0.1:{}", server.port);
    let script = "login peer; dir; mkdir stuff; cd stuff; put 'up load.bin'; pwd; dir; \
                  size 'up load.bin'; get 'up load.bin' back.bin; rename 'up load.bin' moved.bin; \
                  cd /; get theirs.txt; rename stuff/moved.bin top.bin; rm top.bin; rmdir stuff; \
                  dir; whoami";
    let mut args = vec![target.as_str(), "-c", script];
    if active {
        args.insert(0, "--active");
    }
    let out = ferry(cwd, &args);
    let mode = if active { "active" } else { "passive" };
    assert_eq!(
        out.code,
        Some(0),
        "{mode}: ferry failed\nstdout:\n{}\nstderr:\n{}",
        out.stdout,
        out.stderr
    );
    assert!(out.stderr.is_empty(), "{mode}: stderr:\n{}", out.stderr);
    for needle in [
        "Logged in as peer.",
        "| theirs.txt ",
        "\n/stuff\n",
        "| up load.bin ",
        "\n2097155\n",
        "up load.bin: 2097155 bytes in ",
        "theirs.txt: 16 bytes in ",
        &format!("peer on {target}"),
    ] {
        assert!(
            out.stdout.contains(needle),
            "{mode}: stdout lacks {needle:?}:\n{}",
            out.stdout
        );
    }
    assert_eq!(std::fs::read(cwd.join("back.bin")).expect("back"), data);
    assert_eq!(
        std::fs::read(cwd.join("theirs.txt")).expect("theirs"),
        b"from pyftpdlib\r\n"
    );
    // What the server holds at the end: the upload went through rename and rm, the dir is gone.
    let mut names: Vec<String> = std::fs::read_dir(&server.home)
        .expect("home")
        .map(|e| e.expect("entry").file_name().to_string_lossy().into_owned())
        .collect();
    names.sort();
    assert_eq!(names, ["theirs.txt"], "{mode}");

    // A refusal from this server is reported as it said it.
    let out = ferry(cwd, &[&target, "-c", "login peer; get nothing.bin"]);
    assert_eq!(out.code, Some(1), "{mode}: {}", out.stderr);
    assert!(
        out.stderr
            .starts_with("ferry: get nothing.bin: cannot download nothing.bin: 550"),
        "{mode}: {}",
        out.stderr
    );
    assert!(!cwd.join("nothing.bin").exists());
}

#[test]
fn pyftpdlib_passive() {
    session(false);
}

#[test]
fn pyftpdlib_active() {
    session(true);
}

#[test]
fn pyftpdlib_resume_with_rest_and_appe() {
    // pyftpdlib implements REST and APPE, so get -c / put -c really resume there.
    let server = PyFtpd::start();
    let local = tempfile::Builder::new()
        .prefix("ferry-peer-client-")
        .tempdir()
        .expect("temp dir");
    let cwd = local.path();
    let data = pseudo_random(1_000_000, 23);
    std::fs::write(server.home.join("down.bin"), &data).expect("seed");
    std::fs::write(cwd.join("down.bin"), &data[..300_000]).expect("partial");
    std::fs::write(server.home.join("up.bin"), &data[..400_000]).expect("partial");
    std::fs::write(cwd.join("up.bin"), &data).expect("whole");
    let target = format!("127.0.0.1:{}", server.port);
    let out = ferry(
        cwd,
        &[&target, "-c", "login peer; get -c down.bin; put -c up.bin"],
    );
    assert_eq!(out.code, Some(0), "{}\n{}", out.stdout, out.stderr);
    assert_eq!(std::fs::read(cwd.join("down.bin")).expect("down"), data);
    assert_eq!(std::fs::read(server.home.join("up.bin")).expect("up"), data);
}

#[test]
fn pyftpdlib_without_mlsd_mlst_or_rein() {
    let server = PyFtpd::start_with(&["plain"]);
    let local = tempfile::Builder::new()
        .prefix("ferry-peer-client-")
        .tempdir()
        .expect("temp dir");
    let file = server.home.join("a.txt");
    std::fs::write(&file, b"abc").expect("seed");
    // Three days ago, on a whole minute: LIST shows the time of day (in UTC, pyftpdlib's
    // default) and no seconds.
    let now = jiff::Timestamp::now().as_second();
    let when = jiff::Timestamp::from_second(now - now % 60 - 3 * 86_400).expect("time");
    std::fs::File::options()
        .write(true)
        .open(&file)
        .and_then(|f| f.set_modified(std::time::SystemTime::UNIX_EPOCH + secs(when)))
        .expect("set mtime");
    let shown = when
        .to_zoned_datetime(jiff::tz::TimeZone::get(CLIENT_ZONE).expect("zone"))
        .strftime("%Y-%m-%d %H:%M")
        .to_string();
    let target = format!("127.0.0.1:{}", server.port);
    let out = ferry(
        local.path(),
        &[
            &target,
            "-c",
            "login peer; login peer; login peer2; whoami; dir; ls -l a.txt",
        ],
    );
    assert_eq!(out.code, Some(0), "{}\n{}", out.stdout, out.stderr);
    for needle in [
        "Already logged in as peer.",
        // No REIN: the new login went over a fresh connection.
        &format!("peer2 on {target}"),
        &format!("| a.txt | file | 3    | {shown} |"),
    ] {
        assert!(
            out.stdout.contains(needle),
            "lacks {needle:?}:\n{}",
            out.stdout
        );
    }
    assert_eq!(out.stdout.matches("220 ").count(), 2, "{}", out.stdout);
    // `ls -l a.txt` lists the one file (LIST a.txt): its table has one row.
    let last_table = out.stdout.rsplit("| name ").next().unwrap_or_default();
    assert_eq!(last_table.matches("| a.txt ").count(), 1, "{}", out.stdout);
}

fn secs(t: jiff::Timestamp) -> Duration {
    Duration::from_secs(u64::try_from(t.as_second()).expect("after 1970"))
}

#[test]
fn pyftpdlib_verify_falls_back_to_the_size_and_says_so() {
    let server = PyFtpd::start();
    let local = tempfile::tempdir().expect("temp dir");
    let cwd = local.path();
    std::fs::write(cwd.join("v.bin"), pseudo_random(100_003, 31)).expect("local file");
    let target = format!("127.0.0.1:{}", server.port);
    let out = ferry(
        cwd,
        &[
            &target,
            "-c",
            "login peer; put --verify v.bin; get --verify v.bin back.bin",
        ],
    );
    assert_eq!(out.code, Some(0), "{}\n{}", out.stdout, out.stderr);
    assert_eq!(
        out.stderr
            .matches("the server offers no digest (HASH, XSHA256, XMD5); only the size was compared (100003 bytes)")
            .count(),
        2,
        "{}",
        out.stderr
    );
    assert_eq!(
        std::fs::read(cwd.join("back.bin")).expect("back"),
        std::fs::read(cwd.join("v.bin")).expect("v")
    );
}

#[test]
fn pyftpdlib_pget_is_byte_exact() {
    let server = PyFtpd::start();
    let local = tempfile::tempdir().expect("temp dir");
    let cwd = local.path();
    let data = pseudo_random((8 << 20) + 11, 33);
    std::fs::write(server.home.join("seg.bin"), &data).expect("seed");
    let target = format!("127.0.0.1:{}", server.port);
    let out = ferry(cwd, &[&target, "-c", "login peer; pget -n 4 seg.bin"]);
    assert_eq!(out.code, Some(0), "{}\n{}", out.stdout, out.stderr);
    assert!(out.stdout.contains("(4 connections)"), "{}", out.stdout);
    assert!(
        std::fs::read(cwd.join("seg.bin")).expect("copy") == data,
        "the copy differs"
    );
}

#[test]
fn pyftpdlib_one_shot_transfers_json_listing_and_a_bookmark() {
    let server = PyFtpd::start();
    let local = tempfile::tempdir().expect("temp dir");
    let cwd = local.path();
    let data = pseudo_random(300_001, 34);
    std::fs::create_dir(server.home.join("in")).expect("remote dir");
    std::fs::write(server.home.join("theirs.bin"), &data).expect("seed");
    std::fs::write(cwd.join("mine.bin"), &data).expect("local file");
    let url = format!("ftp://peer@127.0.0.1:{}", server.port);

    let out = ferry(cwd, &["get", &format!("{url}/theirs.bin"), "got.bin"]);
    assert_eq!(out.code, Some(0), "{}\n{}", out.stdout, out.stderr);
    assert!(std::fs::read(cwd.join("got.bin")).expect("got") == data);
    let out = ferry(cwd, &["put", "mine.bin", &format!("{url}/in/")]);
    assert_eq!(out.code, Some(0), "{}\n{}", out.stdout, out.stderr);
    assert!(std::fs::read(server.home.join("in/mine.bin")).expect("put") == data);
    let out = ferry(cwd, &["get", &format!("{url}/missing.bin")]);
    assert_eq!(out.code, Some(1), "a refusal is status 1: {}", out.stderr);

    // A bookmark of this server and directory, opened by name; the listing as JSON.
    let out = ferry(cwd, &[&format!("{url}/in"), "-c", "bookmark add peer-in"]);
    assert_eq!(out.code, Some(0), "{}\n{}", out.stdout, out.stderr);
    let out = ferry(cwd, &["-q", "peer-in", "-c", "dir --json"]);
    assert_eq!(out.code, Some(0), "{}\n{}", out.stdout, out.stderr);
    let listed: serde_json::Value = serde_json::from_str(out.stdout.trim()).expect("JSON");
    assert_eq!(listed[0]["name"], "mine.bin", "{listed}");
    assert_eq!(listed[0]["type"], "file");
    assert_eq!(listed[0]["size"], 300_001);
}
