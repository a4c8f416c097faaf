//! The `ferry` client against vsftpd, an FTP server nobody on this project wrote, on loopback
//! (installed by `scripts/test`; see `common::vsftpd` for its login): listings, byte-exact
//! transfers in passive and active mode, resume, segmented download, verification without a
//! digest, patterns, mirror both ways, and FTPS with vsftpd's default `require_ssl_reuse`.

use crate::common;

use std::path::Path;
use std::time::Duration;

use common::vsftpd::{PASS, USER, Vsftpd, WRITABLE};
use common::{Run, assert_same, pseudo_random, read};
use serde_json::Value;

/// `ferry ARGS` in `cwd` with the anonymous password.
fn ferry(cwd: &Path, args: &[&str]) -> Run {
    common::ferry(cwd, PASS, args)
}

/// A script that logs in and enters the writable directory, then runs `commands`.
fn script(commands: &str) -> String {
    format!("login {USER}; cd /{WRITABLE}; {commands}")
}

fn names(dir: &Path) -> Vec<String> {
    let mut names: Vec<String> = std::fs::read_dir(dir)
        .expect("list dir")
        .map(|e| e.expect("entry").file_name().to_string_lossy().into_owned())
        .collect();
    names.sort();
    names
}

#[test]
fn vsftpd_login_and_listings() {
    let server = Vsftpd::start();
    let local = tempfile::tempdir().expect("temp dir");
    let file = server.files.join("a.txt");
    std::fs::write(&file, b"hello\n").expect("seed");
    std::fs::create_dir(server.files.join("sub")).expect("seed dir");
    // Three days ago on a whole minute: vsftpd's LIST shows the time of day, in UTC.
    let now = jiff::Timestamp::now().as_second();
    let when = jiff::Timestamp::from_second(now - now % 60 - 3 * 86_400).expect("time");
    let secs = u64::try_from(when.as_second()).expect("after 1970");
    std::fs::File::options()
        .write(true)
        .open(&file)
        .and_then(|f| f.set_modified(std::time::UNIX_EPOCH + Duration::from_secs(secs)))
        .expect("set mtime");

    let out = ferry(
        local.path(),
        &[&server.target(), "-c", &script("dir; dir --json; whoami")],
    );
    out.ok("login and listings")
        .has(&format!("Logged in as {USER}."))
        .has("| a.txt ")
        .has("| sub ")
        .has(&format!("{USER} on {}", server.target()));
    let json = out
        .stdout
        .lines()
        .find(|l| l.starts_with('['))
        .unwrap_or_else(|| panic!("no JSON listing:\n{}", out.stdout));
    let entries: Vec<Value> = serde_json::from_str(json).expect("dir --json is JSON");
    let find = |name: &str| {
        entries
            .iter()
            .find(|e| e["name"] == name)
            .unwrap_or_else(|| panic!("no {name} in {json}"))
    };
    let a = find("a.txt");
    assert_eq!(
        (&a["type"], &a["size"], &a["modified"]),
        (&"file".into(), &6.into(), &when.to_string().into()),
        "{json}"
    );
    assert_eq!(find("sub")["type"], "dir", "{json}");
    assert_eq!(entries.len(), 2, "{json}");
}

/// Upload, download, mkdir, rename, rm and rmdir, then a refusal, in passive or active mode.
fn session(active: bool) {
    let mode = if active { "active" } else { "passive" };
    let server = Vsftpd::start();
    let local = tempfile::tempdir().expect("temp dir");
    let cwd = local.path();
    let up = pseudo_random((3 << 20) + 5, if active { 41 } else { 42 });
    let theirs = pseudo_random((2 << 20) + 3, 43);
    std::fs::write(cwd.join("up load.bin"), &up).expect("local file");
    std::fs::write(server.files.join("theirs.bin"), &theirs).expect("seed");
    let target = server.target();
    let run = |commands: &str| {
        let mut args = vec![target.as_str(), "-c", commands];
        if active {
            args.insert(0, "--active");
        }
        ferry(cwd, &args)
    };

    let commands = script(
        "mkdir stuff; cd stuff; put 'up load.bin'; size 'up load.bin'; cd ..; get theirs.bin",
    );
    run(&commands)
        .ok(mode)
        .has(&format!("\n{}\n", up.len()))
        .has(&format!("up load.bin: {} bytes in ", up.len()))
        .has(&format!("theirs.bin: {} bytes in ", theirs.len()));
    assert_same(&read(&server.files.join("stuff/up load.bin")), &up, mode);
    assert_same(&read(&cwd.join("theirs.bin")), &theirs, mode);

    let commands = script("rename 'stuff/up load.bin' moved.bin; rm moved.bin; rmdir stuff; dir");
    run(&commands)
        .ok(mode)
        .has("| theirs.bin ")
        .lacks("moved.bin |");
    assert_eq!(names(&server.files), ["theirs.bin"], "{mode}");

    // A refusal from this server is reported as it said it.
    run(&script("get nothing.bin")).fails(
        mode,
        "get nothing.bin: cannot download nothing.bin: 550",
        "",
    );
    assert!(!cwd.join("nothing.bin").exists(), "{mode}");
    // Every data connection went the way asked.
    let log = server.log();
    let (used, unused) = if active {
        ("\"PORT ", "\"EPSV\"")
    } else {
        ("\"EPSV\"", "\"PORT ")
    };
    assert!(
        log.contains(used) && !log.contains(unused),
        "{mode}: wanted {used}, not {unused}, in\n{log}"
    );
}

#[test]
fn vsftpd_passive() {
    session(false);
}

#[test]
fn vsftpd_active() {
    session(true);
}

#[test]
fn vsftpd_get_c_resumes_with_rest() {
    let server = Vsftpd::start();
    let local = tempfile::tempdir().expect("temp dir");
    let cwd = local.path();
    let data = pseudo_random(1_000_003, 44);
    std::fs::write(server.files.join("down.bin"), &data).expect("seed");
    std::fs::write(cwd.join("down.bin"), &data[..300_000]).expect("partial");
    ferry(cwd, &[&server.target(), "-c", &script("get -c down.bin")]).ok("get -c");
    assert_same(&read(&cwd.join("down.bin")), &data, "resumed download");
    // Resumed, not fetched again from the start.
    assert!(server.log().contains("\"REST 300000\""), "{}", server.log());
}

#[test]
fn vsftpd_pget_is_byte_exact() {
    let server = Vsftpd::start();
    let local = tempfile::tempdir().expect("temp dir");
    let cwd = local.path();
    let data = pseudo_random((50 << 20) + 7, 45);
    std::fs::write(server.files.join("seg.bin"), &data).expect("seed");
    ferry(cwd, &[&server.target(), "-c", &script("pget -n 4 seg.bin")])
        .ok("pget")
        .has("(4 connections)");
    assert_same(&read(&cwd.join("seg.bin")), &data, "pget copy");
    let log = server.log();
    let retrs: Vec<&str> = log
        .lines()
        .filter(|l| l.contains("FTP command") && l.contains("\"RETR "))
        .collect();
    assert_eq!(retrs.len(), 4, "{retrs:#?}");
}

#[test]
fn vsftpd_verify_falls_back_to_the_size_and_says_so() {
    let server = Vsftpd::start();
    let local = tempfile::tempdir().expect("temp dir");
    let cwd = local.path();
    std::fs::write(cwd.join("v.bin"), pseudo_random(100_003, 46)).expect("local file");
    let out = ferry(
        cwd,
        &[
            &server.target(),
            "-c",
            &script("put --verify v.bin; get --verify v.bin back.bin"),
        ],
    );
    assert_eq!(out.code, Some(0), "{}\n{}", out.stdout, out.stderr);
    let warning = "ferry: v.bin: the server offers no digest (HASH, XSHA256, XMD5); \
                   only the size was compared (100003 bytes)";
    assert_eq!(out.stderr.matches(warning).count(), 2, "{}", out.stderr);
    assert_eq!(out.stderr.lines().count(), 2, "{}", out.stderr);
    assert_same(
        &read(&cwd.join("back.bin")),
        &read(&cwd.join("v.bin")),
        "v.bin",
    );
}

#[test]
fn vsftpd_mget_and_mput_take_patterns() {
    let server = Vsftpd::start();
    let local = tempfile::tempdir().expect("temp dir");
    let cwd = local.path();
    for (i, name) in ["a1.txt", "a2.txt", "b.txt", "a3.bin"].iter().enumerate() {
        std::fs::write(
            server.files.join(name),
            pseudo_random(5_000 + i, 50 + i as u64),
        )
        .expect("seed");
    }
    for (i, name) in ["c1.log", "c2.log", "c10.log", "d.txt"].iter().enumerate() {
        std::fs::write(cwd.join(name), pseudo_random(7_000 + i, 60 + i as u64)).expect("local");
    }
    ferry(
        cwd,
        &[
            &server.target(),
            "-c",
            &script("mget 'a*.txt' b.?xt; mput 'c?.log'"),
        ],
    )
    .ok("mget and mput");
    for name in ["a1.txt", "a2.txt", "b.txt"] {
        assert_same(
            &read(&cwd.join(name)),
            &read(&server.files.join(name)),
            name,
        );
    }
    assert!(!cwd.join("a3.bin").exists(), "a3.bin matches no pattern");
    for name in ["c1.log", "c2.log"] {
        assert_same(
            &read(&server.files.join(name)),
            &read(&cwd.join(name)),
            name,
        );
    }
    assert_eq!(
        names(&server.files),
        ["a1.txt", "a2.txt", "a3.bin", "b.txt", "c1.log", "c2.log"]
    );
}

/// `ferry --tls --ca-file CERT TARGET -c SCRIPT`.
fn ferry_tls(cwd: &Path, server: &Vsftpd, commands: &str) -> Run {
    let cert = server.cert.as_ref().expect("an FTPS server");
    let cert = cert.to_str().expect("UTF-8 path");
    ferry(
        cwd,
        &[
            "--tls",
            "--ca-file",
            cert,
            &server.target(),
            "-c",
            &script(commands),
        ],
    )
}

#[test]
fn vsftpd_ftps_put_and_get_are_byte_exact() {
    let server = Vsftpd::start_tls();
    let local = tempfile::tempdir().expect("temp dir");
    let cwd = local.path();
    let up = pseudo_random((2 << 20) + 9, 47);
    let theirs = pseudo_random((3 << 20) + 1, 48);
    std::fs::write(cwd.join("up.bin"), &up).expect("local file");
    std::fs::write(server.files.join("theirs.bin"), &theirs).expect("seed");
    ferry_tls(cwd, &server, "put up.bin; get theirs.bin").ok("FTPS put and get");
    assert_same(&read(&server.files.join("up.bin")), &up, "FTPS upload");
    assert_same(&read(&cwd.join("theirs.bin")), &theirs, "FTPS download");
    let log = server.log();
    for needle in ["\"AUTH TLS\"", "\"PROT P\""] {
        assert!(log.contains(needle), "no {needle} in\n{log}");
    }
}

#[test]
fn vsftpd_ftps_twelve_uploads_in_one_session() {
    // Every data connection must resume the control connection's TLS session
    // (require_ssl_reuse): one upload after another needs a ticket for each.
    let server = Vsftpd::start_tls();
    let local = tempfile::tempdir().expect("temp dir");
    let cwd = local.path();
    let files: Vec<(String, Vec<u8>)> = (1..=12)
        .map(|i| {
            (
                format!("f{i:02}.bin"),
                pseudo_random(65_536 + i, 70 + i as u64),
            )
        })
        .collect();
    for (name, data) in &files {
        std::fs::write(cwd.join(name), data).expect("local file");
    }
    let puts: Vec<String> = files
        .iter()
        .map(|(name, _)| format!("put {name}"))
        .collect();
    let out = ferry_tls(cwd, &server, &puts.join("; "));
    assert!(
        out.code == Some(0) && out.stderr.is_empty(),
        "12 FTPS uploads: exit {:?}\nstdout:\n{}\nstderr:\n{}\nvsftpd's last lines:\n{}",
        out.code,
        out.stdout,
        out.stderr,
        tail(&server.log(), 12)
    );
    for (name, data) in &files {
        assert_same(&read(&server.files.join(name)), data, name);
    }
}

fn tail(text: &str, n: usize) -> String {
    let lines: Vec<&str> = text.lines().collect();
    lines[lines.len().saturating_sub(n)..].join("\n")
}

#[test]
fn vsftpd_mirror_both_ways_and_again_with_nothing_to_do() {
    let server = Vsftpd::start();
    let local = tempfile::tempdir().expect("temp dir");
    let cwd = local.path();
    let theirs = server.files.join("tree");
    let ours = cwd.join("mine");
    for (i, rel) in ["a.txt", "d/b.bin", "d/e/c.bin"].iter().enumerate() {
        for root in [&theirs, &ours] {
            let path = root.join(rel);
            std::fs::create_dir_all(path.parent().expect("parent")).expect("dirs");
            std::fs::write(&path, pseudo_random(10_000 + i, 80 + i as u64)).expect("seed");
        }
    }
    let transfers = |verb: &str| {
        let needle = format!("\"{verb} ");
        server
            .log()
            .lines()
            .filter(|l| l.contains("FTP command") && l.contains(&needle))
            .count()
    };
    let mirror = |args: &str| {
        ferry(
            cwd,
            &[&server.target(), "-c", &script(&format!("mirror {args}"))],
        )
    };

    mirror("tree down")
        .ok("mirror")
        .has("mirror: 3 of 3 files copied");
    for rel in ["a.txt", "d/b.bin", "d/e/c.bin"] {
        assert_same(
            &read(&cwd.join("down").join(rel)),
            &read(&theirs.join(rel)),
            rel,
        );
    }
    mirror("-R mine up")
        .ok("mirror -R")
        .has("mirror: 3 of 3 files copied");
    for rel in ["a.txt", "d/b.bin", "d/e/c.bin"] {
        assert_same(
            &read(&server.files.join("up").join(rel)),
            &read(&ours.join(rel)),
            rel,
        );
    }
    // vsftpd's LIST gives times to the minute and it has no MFMT: nothing is copied again.
    let (retrs, stors) = (transfers("RETR"), transfers("STOR"));
    mirror("tree down").ok("mirror again");
    mirror("-R mine up").ok("mirror -R again");
    assert_eq!(
        (transfers("RETR"), transfers("STOR")),
        (retrs, stors),
        "copied again:\n{}",
        tail(&server.log(), 40)
    );
    // vsftpd lists a missing directory as an empty one; mirror still says it is not there.
    mirror("no-such-tree down2").fails(
        "mirror of a missing tree",
        "mirror no-such-tree down2: ",
        "mirror: no-such-tree does not exist",
    );
}
