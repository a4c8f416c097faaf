//! Tests of the ledger, charges and recounts over temp-dir homes.

use std::fs::File;
use std::io::Write;
use std::sync::Arc;

use super::ledger::Stored;
use super::*;

fn ledger(bytes: Option<u64>, files: Option<u64>) -> (tempfile::TempDir, Arc<QuotaLedger>) {
    let dir = tempfile::tempdir().expect("tempdir");
    fs::create_dir_all(dir.path().join("home/alice")).expect("home");
    let limits = move |_: &str| Quota { bytes, files };
    let ledger = QuotaLedger::new(
        dir.path().join("usage"),
        dir.path().join("home"),
        Arc::new(limits),
    )
    .expect("ledger");
    (dir, Arc::new(ledger))
}

/// A staged upload's commit as the file store does it: `size` bytes over a file of
/// `replaced` bytes (`None`: a new file).
fn commit(
    ledger: &QuotaLedger,
    mut charge: Charge,
    size: u64,
    replaced: Option<u64>,
) -> Result<(), QuotaError> {
    let bytes = i128::from(size) - i128::from(replaced.unwrap_or(0));
    let files = i128::from(replaced.is_none());
    ledger.change("alice", |tx| {
        tx.settle(&mut charge);
        tx.fits(bytes, files)?;
        tx.mark()?;
        tx.record(bytes, files);
        Ok::<_, QuotaError>(())
    })
}

fn stored(dir: &tempfile::TempDir) -> Stored {
    let bytes = fs::read(dir.path().join("usage/alice.json")).expect("ledger file");
    serde_json::from_slice(&bytes).expect("ledger json")
}

#[test]
fn reservations_of_concurrent_uploads_share_the_limit() {
    let (_dir, ledger) = ledger(Some(100), None);
    let mut a = ledger.charge("alice", true, None).expect("a");
    let mut b = ledger.charge("alice", true, None).expect("b");
    a.add(60).expect("a 60");
    assert!(matches!(b.add(50), Err(QuotaError::Exceeded)));
    b.add(40).expect("b 40 fits exactly");
    assert!(matches!(a.add(1), Err(QuotaError::Exceeded)));
    drop(b);
    a.add(40).expect("b's bytes were given back");
    commit(&ledger, a, 100, None).expect("commit");
    let usage = ledger.usage("alice").expect("usage");
    assert_eq!(
        usage,
        Usage {
            bytes: 100,
            files: 1
        }
    );
    let reserved = ledger.state.quota_reserved("alice").expect("reserved");
    assert_eq!((reserved.bytes, reserved.files), (0, 0));
}

#[test]
fn a_replaced_file_is_credited_once_and_checked_again_at_the_commit() {
    let (dir, ledger) = ledger(Some(100), Some(2));
    let old = dir.path().join("home/alice/old");
    fs::write(&old, [0; 90]).expect("old file");
    let meta = fs::metadata(&old).expect("meta");
    assert_eq!(ledger.usage("alice").expect("usage").bytes, 90);
    let mut first = ledger
        .charge("alice", false, Some(FileId::from(&meta)))
        .expect("replace");
    first.add(95).expect("90 of them are the old file's");
    assert!(matches!(first.add(10), Err(QuotaError::Exceeded)));
    // A second upload over the same file gets no credit while the first runs.
    let mut second = ledger
        .charge("alice", false, Some(FileId::from(&meta)))
        .expect("second");
    assert!(matches!(second.add(10), Err(QuotaError::Exceeded)));
    drop(second);
    // The old file was renamed away meanwhile: the commit adds all 95 bytes, too many.
    assert!(matches!(
        commit(&ledger, first, 95, None),
        Err(QuotaError::Exceeded)
    ));
    assert_eq!(ledger.usage("alice").expect("usage").bytes, 90);
    let again = ledger
        .charge("alice", false, Some(FileId::from(&meta)))
        .expect("again");
    commit(&ledger, again, 95, Some(90)).expect("a real replacement fits");
    assert_eq!(ledger.usage("alice").expect("usage").bytes, 95);
    assert!(!stored(&dir).dirty);
}

#[test]
fn ledger_survives_and_recounts_directories_too() {
    let (dir, ledger) = ledger(None, None);
    fs::write(dir.path().join("home/alice/f"), b"12345").expect("write");
    fs::create_dir(dir.path().join("home/alice/d")).expect("mkdir");
    fs::write(dir.path().join("home/alice/d/g"), b"123").expect("write");
    // No ledger file yet: the first use counts the home.
    let counted = Usage {
        bytes: 8 + DIR_BYTES,
        files: 3,
    };
    assert_eq!(ledger.usage("alice").expect("usage"), counted);
    ledger
        .change("alice", |tx| {
            tx.record(2, 0);
            Ok::<_, QuotaError>(())
        })
        .expect("change");
    let again = QuotaLedger::new(
        dir.path().join("usage"),
        dir.path().join("home"),
        Arc::new(|_: &str| Quota::default()),
    )
    .expect("ledger");
    assert_eq!(
        again.usage("alice").expect("usage").bytes,
        counted.bytes + 2
    );
    assert_eq!(again.recount("alice").expect("recount"), counted);
}

#[test]
fn in_place_writes_are_charged_by_what_the_open_file_grew() {
    let (dir, ledger) = ledger(Some(10), None);
    let path = dir.path().join("home/alice/f");
    fs::write(&path, b"abc").expect("write");
    assert_eq!(ledger.usage("alice").expect("usage").bytes, 3);
    let mut c = ledger.charge("alice", false, None).expect("charge");
    let mut file = fs::OpenOptions::new()
        .append(true)
        .open(&path)
        .expect("open");
    let mut write = |c: &mut Charge, data: &[u8]| {
        let n = data.len() as u64;
        c.grow(
            &file.try_clone().expect("clone"),
            |_| n,
            || file.write_all(data),
        )
    };
    write(&mut c, b"defg").expect("fits").expect("written");
    assert!(stored(&dir).dirty, "dirty while the write runs");
    // Renamed away: still in the tree, still counted.
    fs::rename(&path, dir.path().join("home/alice/moved")).expect("rename");
    write(&mut c, b"hij").expect("fits").expect("written");
    assert!(matches!(write(&mut c, b"k"), Err(QuotaError::Exceeded)));
    assert_eq!(ledger.usage("alice").expect("usage").bytes, 10);
    // Deleted: what it held and what it gains no longer count.
    ledger
        .change("alice", |tx| {
            fs::remove_file(dir.path().join("home/alice/moved"))
                .map_err(QuotaError::Unavailable)?;
            tx.record(-10, -1);
            Ok::<_, QuotaError>(())
        })
        .expect("delete");
    write(&mut c, b"lmn").expect("fits").expect("written");
    drop(c);
    assert_eq!(ledger.usage("alice").expect("usage"), Usage::default());
    let left = stored(&dir);
    assert!(!left.dirty, "clean once the writer ended");
    assert_eq!(left.usage(), ledger.recount("alice").expect("recount"));
}

#[test]
fn a_dirty_ledger_is_recounted_at_start() {
    let (dir, ledger) = ledger(None, None);
    fs::write(dir.path().join("home/alice/f"), [1; 7]).expect("write");
    fs::write(
        dir.path().join("usage/alice.json"),
        br#"{"bytes":1,"files":1,"dirty":true}"#,
    )
    .expect("dirty ledger");
    fs::write(dir.path().join("usage/alice.json.tmp-00"), b"{").expect("temp");
    assert_eq!(ledger.recover().expect("recover"), ["alice"]);
    assert_eq!(stored(&dir).usage(), Usage { bytes: 7, files: 1 });
    assert!(!dir.path().join("usage/alice.json.tmp-00").exists());
    assert!(ledger.recover().expect("recover").is_empty());
}

#[test]
fn count_tree_walks_deeper_than_path_max() {
    let dir = tempfile::tempdir().expect("tempdir");
    let name = "d".repeat(200);
    // 30 levels of 201 bytes: over 6 000 bytes of path, beyond PATH_MAX (4096).
    let mut here = File::open(dir.path()).expect("root");
    for _ in 0..30 {
        nix::sys::stat::mkdirat(&here, name.as_str(), nix::sys::stat::Mode::S_IRWXU)
            .expect("mkdirat");
        let fd = nix::fcntl::openat(
            &here,
            name.as_str(),
            nix::fcntl::OFlag::O_RDONLY | nix::fcntl::OFlag::O_DIRECTORY,
            nix::sys::stat::Mode::empty(),
        )
        .expect("openat");
        here = File::from(fd);
    }
    let fd = nix::fcntl::openat(
        &here,
        "leaf",
        nix::fcntl::OFlag::O_WRONLY | nix::fcntl::OFlag::O_CREAT,
        nix::sys::stat::Mode::S_IRWXU,
    )
    .expect("leaf");
    File::from(fd).write_all(&[0; 11]).expect("write leaf");
    assert_eq!(
        count_tree(dir.path()).expect("count"),
        Usage {
            bytes: 30 * DIR_BYTES + 11,
            files: 31
        }
    );
}

#[test]
fn count_tree_follows_the_home_link_and_no_link_below_it() {
    let dir = tempfile::tempdir().expect("tempdir");
    let (real, outside) = (dir.path().join("disk2/alice"), dir.path().join("outside"));
    fs::create_dir_all(&real).expect("home");
    fs::create_dir_all(outside.join("sub")).expect("outside");
    fs::write(outside.join("big"), [0; 5000]).expect("outside file");
    fs::write(real.join("f"), b"12345").expect("file");
    std::os::unix::fs::symlink(&outside, real.join("out")).expect("link out");
    std::os::unix::fs::symlink(outside.join("big"), real.join("big")).expect("file link");
    // The operator's link to a home on another disk.
    std::os::unix::fs::symlink(&real, dir.path().join("alice")).expect("home link");
    assert_eq!(
        count_tree(&dir.path().join("alice")).expect("count"),
        Usage { bytes: 5, files: 1 }
    );
}

#[test]
fn report_lines_say_none_when_unlimited() {
    let report = QuotaReport {
        usage: Usage { bytes: 5, files: 1 },
        limits: Quota {
            bytes: Some(10),
            files: None,
        },
    };
    assert_eq!(
        report.lines(),
        [
            "Bytes used: 5 of 10".to_owned(),
            "Files used: 1 of none".to_owned()
        ]
    );
}
