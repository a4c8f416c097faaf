//! The `ferry` client against an FTP server nobody on this project wrote: pyftpdlib on
//! loopback (installed by `scripts/test`), in passive and in active mode.

mod common;

use std::path::Path;
use std::process::{Command, Stdio};
use std::time::Duration;

use common::pyftpd::{PASS, PyFtpd};
use common::{pseudo_random, run_bounded};

const FERRY: &str = env!("CARGO_BIN_EXE_ferry");
const RUN_TIMEOUT: Duration = Duration::from_secs(30);

struct Out {
    code: Option<i32>,
    stdout: String,
    stderr: String,
}

fn ferry(cwd: &Path, args: &[&str]) -> Out {
    let mut child = Command::new(FERRY)
        .args(args)
        .current_dir(cwd)
        .env("HOME", cwd)
        .env("FERRY_HISTORY", cwd.join(".history"))
        .env("FERRY_PASSWORD", PASS)
        .env_remove("FERRY_NEW_PASSWORD")
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawn ferry");
    drop(child.stdin.take());
    let out = run_bounded(child, RUN_TIMEOUT);
    Out {
        code: out.status.code(),
        stdout: String::from_utf8_lossy(&out.stdout).into_owned(),
        stderr: String::from_utf8_lossy(&out.stderr).into_owned(),
    }
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
        out.stderr.starts_with("ferry: get nothing.bin: 550"),
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
