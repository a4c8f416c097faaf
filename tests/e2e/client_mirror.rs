//! `ferry`'s tree and batch transfers (issue 16): `mirror` both ways of a tree of 500 files in
//! nested directories, with changes, deletions, an exclusion and a partial file on each side,
//! against ferryd and pyftpdlib (with MLSD, and with LIST only); `mput`/`mget -P 8` while a
//! second session lists; a failure in one transfer of a batch that does not stop the others;
//! transfers cut by a server that drops the data connection, or the control connection too,
//! resumed by the retry (and not with `--retries 0`); `mirror --verify` checking every copy;
//! listed names that would leave the directory (`../x`) are not downloaded.

use crate::common;

use std::collections::BTreeMap;
use std::fs::{self, File};
use std::path::Path;
use std::time::{Duration, SystemTime};

use common::pyftpd::{self, PyFtpd};
use common::{Run, TestServer, pseudo_random};

/// Bound on one client run: a mirror of 500 files against a debug build.
const RUN_TIMEOUT: Duration = Duration::from_secs(120);
const USER: &str = "mira";
const PASS: &str = "mirror-password-42";
/// Files in the test tree, besides `big.bin`.
const FILES: usize = 500;
const BIG: usize = (1 << 20) + 7;

/// `ferry ARGS` in `cwd` (also its HOME), logging in with `password`.
fn ferry(cwd: &Path, password: &str, args: &[&str]) -> Run {
    common::ferry_within(cwd, password, args, RUN_TIMEOUT)
}

/// 500 small files in 20 directories of 3 subdirectories each, a few at the top, and one
/// larger file.
fn build_tree(root: &Path) {
    for i in 0..FILES {
        let dir = if i % 50 == 0 {
            root.to_path_buf()
        } else {
            root.join(format!("d{:02}/s{}", i % 20, (i / 20) % 3))
        };
        fs::create_dir_all(&dir).expect("tree dir");
        let len = 50 + (i * 37) % 4000;
        fs::write(
            dir.join(format!("f{i:03}.txt")),
            pseudo_random(len, i as u64),
        )
        .expect("file");
    }
    fs::write(root.join("d00/big.bin"), pseudo_random(BIG, 999)).expect("big");
}

/// Every file below `root` by relative path, with its bytes; directories as `None`.
fn snapshot(root: &Path) -> BTreeMap<String, Option<Vec<u8>>> {
    let mut out = BTreeMap::new();
    let mut pending = vec![root.to_path_buf()];
    while let Some(dir) = pending.pop() {
        for dirent in fs::read_dir(&dir).unwrap_or_else(|e| panic!("{}: {e}", dir.display())) {
            let path = dirent.expect("dirent").path();
            let rel = path
                .strip_prefix(root)
                .expect("below root")
                .to_string_lossy()
                .into_owned();
            if path.is_dir() {
                out.insert(rel, None);
                pending.push(path);
            } else {
                out.insert(rel, Some(fs::read(&path).expect("read")));
            }
        }
    }
    out
}

fn assert_same_tree(a: &Path, b: &Path, what: &str) {
    let (left, right) = (snapshot(a), snapshot(b));
    let only_left: Vec<_> = left.keys().filter(|k| !right.contains_key(*k)).collect();
    let only_right: Vec<_> = right.keys().filter(|k| !left.contains_key(*k)).collect();
    let differ: Vec<_> = left
        .iter()
        .filter(|(k, v)| right.get(*k).is_some_and(|w| w != *v))
        .map(|(k, _)| k)
        .collect();
    assert!(
        only_left.is_empty() && only_right.is_empty() && differ.is_empty(),
        "{what}: only in {}: {only_left:?}; only in {}: {only_right:?}; different: {differ:?}",
        a.display(),
        b.display()
    );
}

fn set_mtime(path: &Path, when: SystemTime) {
    File::options()
        .write(true)
        .open(path)
        .and_then(|f| f.set_modified(when))
        .unwrap_or_else(|e| panic!("{}: {e}", path.display()));
}

fn mtime_secs(path: &Path) -> u64 {
    fs::metadata(path)
        .and_then(|m| m.modified())
        .map(|t| {
            t.duration_since(SystemTime::UNIX_EPOCH)
                .expect("after 1970")
                .as_secs()
        })
        .unwrap_or_else(|e| panic!("{}: {e}", path.display()))
}

fn ok(run: &Run, what: &str) {
    assert_eq!(
        run.code,
        Some(0),
        "{what}\nstdout:\n{}\nstderr:\n{}",
        run.stdout,
        run.stderr
    );
}

fn has(run: &Run, needle: &str, what: &str) {
    assert!(
        run.stdout.contains(needle),
        "{what}: no {needle:?} in\n{}\nstderr:\n{}",
        run.stdout,
        run.stderr
    );
}

/// The whole round: up with -R, again (nothing to do), local changes up with --delete, down
/// into an empty directory, remote changes down with --delete, a dry run. `remote` is where
/// the server keeps the user's files; `user` logs in.
fn mirror_round_trip(target: &str, remote: &Path, user: &str, password: &str) {
    let work = tempfile::Builder::new()
        .prefix("ferry-mirror-")
        .tempdir()
        .expect("temp dir");
    let cwd = work.path();
    let tree = cwd.join("tree");
    build_tree(&tree);
    let script = |commands: &str| format!("login {user}; {commands}");
    let run = |commands: &str| ferry(cwd, password, &[target, "-c", &script(commands)]);
    let up = remote.join("up");
    let later = |secs| SystemTime::now() + Duration::from_secs(secs);

    let out = run("mirror -R -P 4 tree up");
    ok(&out, "first upload");
    has(&out, "mirror: 501 of 501 files copied", "first upload");
    assert_same_tree(&tree, &up, "after the first upload");
    let out = run("mirror -R tree up");
    ok(&out, "second upload");
    has(
        &out,
        "mirror: nothing to copy; 501 up to date, 0 deleted, 0 failed",
        "second upload",
    );

    // Local changes: one file rewritten at its size, one grown, five deleted and a whole
    // directory, two new ones in a new directory, an excluded one, and the server's copy of
    // the big file cut short after the source last changed (an interrupted upload).
    let same_size = tree.join("d01/s0/f001.txt");
    let len = fs::metadata(&same_size).expect("meta").len() as usize;
    fs::write(&same_size, pseudo_random(len, 5001)).expect("rewrite");
    set_mtime(&same_size, later(120));
    fs::write(tree.join("d03/s0/f003.txt"), pseudo_random(7777, 5002)).expect("grow");
    for i in [4, 24, 44, 64, 84] {
        fs::remove_file(tree.join(format!("d{:02}/s{}/f{i:03}.txt", i % 20, (i / 20) % 3)))
            .expect("delete");
    }
    fs::remove_dir_all(tree.join("d02/s1")).expect("delete a directory");
    fs::create_dir_all(tree.join("new/deeper")).expect("new dir");
    fs::write(tree.join("new/deeper/n1.txt"), b"one").expect("new");
    fs::write(tree.join("new/n2.txt"), b"two").expect("new");
    fs::write(tree.join("skip.tmp"), b"never sent").expect("excluded");
    let cut = 300 * 1024;
    File::options()
        .write(true)
        .open(up.join("d00/big.bin"))
        .and_then(|f| f.set_len(cut as u64))
        .expect("cut short");
    set_mtime(&up.join("d00/big.bin"), later(60));
    let out = run("mirror -R --delete --exclude '*.tmp' -P 3 tree up");
    ok(&out, "upload of the changes");
    has(&out, "mirror: 5 of 5 files copied", "upload of the changes");
    has(
        &out,
        &format!("d00/big.bin: {} bytes", BIG - cut),
        "the partial upload is resumed",
    );
    assert!(!up.join("skip.tmp").exists(), "excluded");
    fs::remove_file(tree.join("skip.tmp")).expect("excluded");
    assert_same_tree(&tree, &up, "after the changes went up");

    // An old file: LIST gives only its day (MDTM the time), 2024-03-10 10:00 UTC.
    let old = up.join("d07/s0/f007.txt");
    let long_ago = SystemTime::UNIX_EPOCH + Duration::from_secs(1_710_064_800);
    set_mtime(&old, long_ago);

    // Down into an empty directory; the copies keep the server's times.
    let out = run("mirror -P 8 up down");
    ok(&out, "download");
    has(&out, "files copied", "download");
    let down = cwd.join("down");
    assert_same_tree(&up, &down, "after the download");
    assert_eq!(
        mtime_secs(&down.join("d03/s0/f003.txt")),
        mtime_secs(&up.join("d03/s0/f003.txt")),
        "the download keeps the time"
    );
    assert_eq!(
        mtime_secs(&down.join("d07/s0/f007.txt")),
        1_710_064_800,
        "to the second"
    );
    let out = run("mirror up down");
    ok(&out, "download again");
    has(&out, "mirror: nothing to copy", "download again");

    // Remote changes: one file rewritten, three deleted; here an extra file and the big one
    // cut short after the source last changed (an interrupted download).
    let changed = up.join("d05/s0/f005.txt");
    fs::write(&changed, pseudo_random(999, 6001)).expect("rewrite");
    set_mtime(&changed, later(300));
    for i in [6, 26, 46] {
        fs::remove_file(up.join(format!("d{:02}/s{}/f{i:03}.txt", i % 20, (i / 20) % 3)))
            .expect("delete");
    }
    // The old file rewritten at its size an hour later the same day: only MDTM tells.
    let len = fs::metadata(&old).expect("meta").len() as usize;
    fs::write(&old, pseudo_random(len, 6002)).expect("rewrite");
    set_mtime(&old, long_ago + Duration::from_secs(3600));
    fs::write(down.join("extra.txt"), b"not on the server").expect("extra");
    File::options()
        .write(true)
        .open(down.join("d00/big.bin"))
        .and_then(|f| f.set_len(100 * 1024))
        .expect("cut short");
    set_mtime(&down.join("d00/big.bin"), later(600));
    let dry = run("mirror --dry-run --delete up down");
    ok(&dry, "dry run");
    has(&dry, "get d05/s0/f005.txt (changed, 999 bytes)", "dry run");
    has(&dry, "get d00/big.bin (partial", "dry run");
    has(&dry, "get d07/s0/f007.txt (changed", "dry run");
    has(&dry, "rm extra.txt", "dry run");
    has(&dry, "rm d06/s0/f006.txt", "dry run");
    assert!(down.join("extra.txt").exists(), "a dry run changes nothing");
    let out = run("mirror --delete up down");
    ok(&out, "download of the changes");
    has(
        &out,
        "mirror: 3 of 3 files copied",
        "download of the changes",
    );
    has(
        &out,
        &format!("d00/big.bin: {} bytes", BIG - 100 * 1024),
        "the partial download is resumed",
    );
    has(&out, "4 deleted", "download of the changes");
    assert_same_tree(&up, &down, "after the changes came down");
}

#[test]
fn mirror_both_ways_against_ferryd() {
    let server = TestServer::start(&[]);
    drop(server.register_and_login(USER, PASS));
    let target = format!("127.0.0.1:{}", server.port());
    mirror_round_trip(&target, &server.home(USER), USER, PASS);
    // --verify checks every copy with the server's digest.
    let work = tempfile::tempdir().expect("temp dir");
    let out = ferry(
        work.path(),
        PASS,
        &[
            &target,
            "-c",
            &format!("login {USER}; mirror --verify -P 2 up checked"),
        ],
    );
    ok(&out, "mirror --verify");
    assert_eq!(
        out.stdout.matches(", SHA-256 verified").count(),
        snapshot(&server.home(USER).join("up"))
            .values()
            .filter(|v| v.is_some())
            .count(),
        "{}",
        out.stdout
    );
    assert_same_tree(
        &server.home(USER).join("up"),
        &work.path().join("checked"),
        "verified",
    );
}

#[test]
fn mirror_both_ways_against_pyftpdlib() {
    let server = PyFtpd::start();
    mirror_round_trip(
        &format!("127.0.0.1:{}", server.port),
        &server.home,
        pyftpd::USER,
        pyftpd::PASS,
    );
}

#[test]
fn mirror_both_ways_against_pyftpdlib_without_mlsd() {
    let server = PyFtpd::start_with(&["plain"]);
    mirror_round_trip(
        &format!("127.0.0.1:{}", server.port),
        &server.home,
        pyftpd::USER,
        pyftpd::PASS,
    );
}

#[test]
fn parallel_transfers_while_another_session_lists() {
    let server = TestServer::start(&[]);
    drop(server.register_and_login(USER, PASS));
    let target = format!("127.0.0.1:{}", server.port());
    let work = tempfile::tempdir().expect("temp dir");
    let cwd = work.path().to_path_buf();
    let files: Vec<(String, Vec<u8>)> = (0..40)
        .map(|i| {
            (
                format!("p{i:02}.bin"),
                pseudo_random(200_000 + i, 70 + i as u64),
            )
        })
        .collect();
    for (name, data) in &files {
        fs::write(cwd.join(name), data).expect("local file");
    }
    let lister_cwd = tempfile::tempdir().expect("temp dir");
    let lister = {
        let target = target.clone();
        let dir = lister_cwd.path().to_path_buf();
        std::thread::spawn(move || {
            let script = format!("login {USER}{}", "; dir".repeat(30));
            ferry(&dir, PASS, &[&target, "-c", &script])
        })
    };
    let out = ferry(
        &cwd,
        PASS,
        &[&target, "-c", &format!("login {USER}; mput -P 8 p*.bin")],
    );
    ok(&out, "mput -P 8");
    has(&out, "40 of 40 files", "mput -P 8");
    let listed = lister.join().expect("lister thread");
    ok(&listed, "the other session's listings");
    let home = server.home(USER);
    for (name, data) in &files {
        assert!(
            fs::read(home.join(name)).expect("uploaded") == *data,
            "{name} differs"
        );
    }
    fs::create_dir(cwd.join("back")).expect("back");
    let out = ferry(
        &cwd,
        PASS,
        &[
            &target,
            "-c",
            &format!("login {USER}; lcd back; mget -P 8 --verify p*.bin"),
        ],
    );
    ok(&out, "mget -P 8");
    has(&out, "40 of 40 files", "mget -P 8");
    assert_eq!(
        out.stdout.matches("SHA-256 verified").count(),
        40,
        "{}",
        out.stdout
    );
    for (name, data) in &files {
        assert!(
            fs::read(cwd.join("back").join(name)).expect("downloaded") == *data,
            "{name}"
        );
    }
}

#[test]
fn one_failed_transfer_does_not_stop_the_others() {
    let server = TestServer::start(&[]);
    drop(server.register_and_login(USER, PASS));
    let home = server.home(USER);
    for i in 0..6 {
        fs::write(home.join(format!("g{i}.txt")), format!("file {i}")).expect("seed");
    }
    let work = tempfile::tempdir().expect("temp dir");
    // The local name of one download is taken by a directory.
    fs::create_dir(work.path().join("g3.txt")).expect("in the way");
    let out = ferry(
        work.path(),
        PASS,
        &[
            &format!("127.0.0.1:{}", server.port()),
            "-c",
            &format!("login {USER}; mget -P 3 g*.txt; pwd"),
        ],
    );
    assert_eq!(
        out.code,
        Some(5),
        "a partial batch has its own status\n{}",
        out.stdout
    );
    assert!(
        out.stderr.contains("g3.txt"),
        "the failure is named:\n{}",
        out.stderr
    );
    assert!(
        out.stderr.contains("1 of 6 transfers failed"),
        "{}",
        out.stderr
    );
    has(&out, "5 of 6 files", "the summary");
    for i in [0, 1, 2, 4, 5] {
        assert_eq!(
            fs::read_to_string(work.path().join(format!("g{i}.txt"))).expect("downloaded"),
            format!("file {i}")
        );
    }
}

/// `ferry FLAGS 127.0.0.1:PORT -c SCRIPT` against pyftpdlib.
fn at_peer(cwd: &Path, server: &PyFtpd, flags: &[&str], script: &str) -> Run {
    let target = format!("127.0.0.1:{}", server.port);
    let args: Vec<&str> = flags
        .iter()
        .copied()
        .chain([target.as_str(), "-c", script])
        .collect();
    ferry(cwd, pyftpd::PASS, &args)
}

#[test]
fn a_dropped_data_connection_is_resumed_by_the_retry() {
    let server = PyFtpd::start_with(&["flaky"]);
    let work = tempfile::tempdir().expect("temp dir");
    let cwd = work.path();
    let data = pseudo_random(BIG, 81);
    fs::write(server.home.join("down.bin"), &data).expect("seed");
    fs::write(cwd.join("up.bin"), &data).expect("local");
    let out = at_peer(
        cwd,
        &server,
        &[],
        "login peer; get down.bin; put up.bin; dir",
    );
    ok(&out, "transfers through a flaky server");
    assert_eq!(
        out.stderr.matches("(trying again in 1 s: 1 of 3)").count(),
        2,
        "each transfer was retried once:\n{}",
        out.stderr
    );
    assert!(
        fs::read(cwd.join("down.bin")).expect("down") == data,
        "download differs"
    );
    assert!(
        fs::read(server.home.join("up.bin")).expect("up") == data,
        "upload differs"
    );

    // With --retries 0 the same cut is the end of the transfer.
    let server = PyFtpd::start_with(&["flaky"]);
    fs::write(server.home.join("down.bin"), &data).expect("seed");
    let out = at_peer(
        cwd,
        &server,
        &["--retries", "0"],
        "login peer; get down.bin again.bin",
    );
    assert_eq!(out.code, Some(1), "{}", out.stderr);
    assert!(!out.stderr.contains("trying again"), "{}", out.stderr);
    assert!(out.stderr.contains("426"), "{}", out.stderr);
}

#[test]
fn a_lost_control_connection_is_opened_again_in_the_same_directory() {
    let server = PyFtpd::start_with(&["drop"]);
    let work = tempfile::tempdir().expect("temp dir");
    let cwd = work.path();
    let data = pseudo_random(BIG, 82);
    fs::create_dir(server.home.join("sub")).expect("sub");
    fs::write(server.home.join("sub/down.bin"), &data).expect("seed");
    let out = at_peer(cwd, &server, &[], "login peer; cd sub; get down.bin; pwd");
    ok(&out, "a download through a dropped session");
    assert!(
        out.stderr.contains("logged in again as peer in /sub"),
        "{}",
        out.stderr
    );
    assert!(
        out.stdout.ends_with("/sub\n"),
        "still in /sub:\n{}",
        out.stdout
    );
    assert!(
        fs::read(cwd.join("down.bin")).expect("down") == data,
        "download differs"
    );
}

#[test]
fn names_that_leave_the_directory_are_not_downloaded() {
    let server = PyFtpd::start_with(&["hostile"]);
    let beside = server
        .home
        .parent()
        .expect("home's parent")
        .join("escape.txt");
    fs::write(&beside, b"outside the home").expect("seed");
    fs::write(server.home.join("ok.txt"), b"inside").expect("seed");
    let work = tempfile::tempdir().expect("temp dir");
    let cwd = work.path().join("deep");
    fs::create_dir(&cwd).expect("cwd");
    let out = at_peer(&cwd, &server, &[], "login peer; mget *; mirror / tree");
    ok(&out, "mget and mirror of a listing with ../escape.txt");
    assert_eq!(fs::read(cwd.join("ok.txt")).expect("mget"), b"inside");
    assert_eq!(
        fs::read(cwd.join("tree/ok.txt")).expect("mirror"),
        b"inside"
    );
    assert!(
        !work.path().join("escape.txt").exists(),
        "written outside the directory"
    );
}
