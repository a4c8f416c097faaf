//! Uploads: staged and in place, committed, dropped or interrupted; and the path limits.

use super::*;
use crate::storage::ClientProbe;
use crate::storage::local::jail::write_target;
use crate::storage::local::upload::Upload;

#[test]
fn the_directory_of_a_commit_can_be_synced() {
    let fx = Fixture::new();
    fs::create_dir(fx.home("alice").join("sub")).expect("mkdir");
    let home = fx.store.home("alice").expect("home");
    let target = write_target(&home, &vp("/sub/f")).expect("target");
    sync_dir(&target.dir).expect("fsync of the target's directory");
}

#[test]
fn upload_dropped_without_commit_leaves_nothing() {
    let fx = Fixture::new();
    fx.write("alice/f", b"old");
    let mut upload = fx
        .store
        .open_write("alice", &vp("/f"), WriteMode::Replace)
        .expect("open_write");
    upload.write(b"partial").expect("write");
    assert_eq!(fx.temps(), 1);
    drop(upload);
    assert_eq!(fx.temps(), 0);
    assert_eq!(fx.read("alice/f"), b"old");
}

/// An interrupted STOR (the upload dropped, as ABOR or a lost connection drops it) of a
/// name that held no file leaves what arrived there, charged; over an existing file, or
/// refused, or with the setting off, it leaves nothing, and a name taken meanwhile stays.
#[test]
fn interrupted_uploads_of_new_names_are_kept_and_nothing_else() {
    use crate::config::Quota;

    let fx = Fixture::new();
    let ledger = Arc::new(
        QuotaLedger::new(
            fx.dir.path().join("usage"),
            fx.dir.path().join("home"),
            Arc::new(|_: &str| Quota {
                bytes: Some(100),
                files: None,
            }),
        )
        .expect("ledger"),
    );
    let store = LocalFs::new(fx.dir.path().join("home"), fx.dir.path().join("tmp"))
        .expect("storage")
        .with_quota(Arc::clone(&ledger))
        .with_partial_uploads(true);
    // As the session commits: the charge goes with the staged file.
    let commit = |upload: Upload| {
        let mut staged = staged(upload.finish);
        staged.attach(upload.charge);
        store.commit(staged)
    };
    let interrupt = |path: &str, bytes: &[u8]| {
        let mut upload = store
            .open_write("alice", &vp(path), WriteMode::Replace)
            .expect("open_write");
        upload.write(bytes).expect("write");
        upload
    };
    drop(interrupt("/new", b"first part"));
    assert_eq!(fx.read("alice/new"), b"first part");
    assert_eq!(fx.temps(), 0);
    let usage = ledger.usage("alice").expect("usage");
    assert_eq!((usage.bytes, usage.files), (10, 1));

    // Over an existing file (now /new): the old one stays, exactly.
    drop(interrupt("/new", b"other bytes"));
    assert_eq!(fx.read("alice/new"), b"first part");
    // Nothing arrived: no empty file.
    drop(interrupt("/empty", b""));
    assert!(!fx.home("alice").join("empty").exists());
    // A quota refusal or a local failure keeps nothing.
    let mut refused = interrupt("/refused", b"12345");
    refused.roll_back();
    drop(refused);
    let mut failed = interrupt("/failed", b"12345");
    failed.discard_partial();
    drop(failed);
    assert!(!fx.home("alice").join("refused").exists());
    assert!(!fx.home("alice").join("failed").exists());
    // Another upload created the name meanwhile: its file stays, the partial goes.
    let raced = interrupt("/raced", b"partial");
    let mut winner = store
        .open_write("alice", &vp("/raced"), WriteMode::Replace)
        .expect("open_write");
    winner.write(b"winner").expect("write");
    commit(winner).expect("commit");
    drop(raced);
    assert_eq!(fx.read("alice/raced"), b"winner");
    // A complete upload whose commit fails is not kept as interrupted either.
    fs::create_dir(fx.home("alice").join("d")).expect("mkdir");
    let vanished = interrupt("/d/f", b"x");
    fs::remove_dir(fx.home("alice").join("d")).expect("rmdir");
    fs::create_dir(fx.home("alice").join("d")).expect("mkdir again");
    fs::create_dir(fx.home("alice").join("d/f")).expect("a directory at the name");
    assert!(commit(vanished).is_err());
    assert!(fx.home("alice").join("d/f").is_dir());
    fs::remove_dir_all(fx.home("alice").join("d")).expect("rm d");
    assert_eq!(fx.temps(), 0);
    let usage = ledger.usage("alice").expect("usage");
    assert_eq!(usage.bytes, 16);

    // The client went away before the commit: interrupted, kept as such over a new name;
    // an existing file stays.
    for (path, want) in [("/gone", &b"cut"[..]), ("/new", &b"first part"[..])] {
        let mut upload = interrupt(path, b"cut");
        if let Finish::Staged { staged, .. } = &mut upload.finish {
            staged.watch_client(ClientProbe::new(|| true));
        }
        assert!(matches!(commit(upload), Err(StoreError::Interrupted)));
        assert_eq!(fx.read(&format!("alice{path}")), want);
    }
    assert_eq!(fx.temps(), 0);
    assert_eq!(ledger.usage("alice").expect("usage").bytes, 19);

    // Bytes past what the quota allows now are not kept.
    let over = interrupt("/over", &[b'o'; 80]);
    fx.write("alice/operator", &[b'p'; 50]);
    ledger.recount("alice").expect("recount");
    drop(over);
    assert!(!fx.home("alice").join("over").exists());
    assert_eq!(fx.temps(), 0);

    // The setting off: nothing is kept.
    drop(
        fx.store
            .open_write("alice", &vp("/off"), WriteMode::Replace)
            .map(|mut u| u.write(b"x").map(|()| u))
            .expect("open_write")
            .expect("write"),
    );
    assert!(!fx.home("alice").join("off").exists());
    assert_eq!(fx.temps(), 0);
}

#[test]
fn upload_commit_replaces_target() {
    let fx = Fixture::new();
    fx.write("alice/f", b"old");
    let mut upload = fx
        .store
        .open_write("alice", &vp("/f"), WriteMode::Replace)
        .expect("open_write");
    upload.write(b"new contents").expect("write");
    assert_eq!(upload.target, vp("/f"));
    // Readers see the old file until the commit.
    assert_eq!(fx.read("alice/f"), b"old");
    fx.store.commit(staged(upload.finish)).expect("commit");
    assert_eq!(fx.read("alice/f"), b"new contents");
    assert_eq!(fx.temps(), 0);

    let mut upload = fx
        .store
        .open_write("alice", &vp("/g"), WriteMode::Replace)
        .expect("new file");
    upload.write(b"g").expect("write");
    fx.store.commit(staged(upload.finish)).expect("commit");
    assert_eq!(fx.read("alice/g"), b"g");
}

#[test]
fn upload_commit_fails_cleanly_when_target_vanished() {
    let fx = Fixture::new();
    fs::create_dir(fx.home("alice").join("d")).expect("mkdir");
    let upload = fx
        .store
        .open_write("alice", &vp("/d/f"), WriteMode::Replace)
        .expect("open_write");
    fs::remove_dir(fx.home("alice").join("d")).expect("rmdir");
    assert!(matches!(
        fx.store.commit(staged(upload.finish)),
        Err(StoreError::NotFound)
    ));
    assert_eq!(fx.temps(), 0);
}

#[test]
fn interleaved_uploads_never_mix() {
    let fx = Fixture::new();
    let mut first = fx
        .store
        .open_write("alice", &vp("/f"), WriteMode::Replace)
        .expect("first");
    let mut second = fx
        .store
        .open_write("alice", &vp("/f"), WriteMode::Replace)
        .expect("second");
    for _ in 0..100 {
        first.write(&[b'a'; 100]).expect("write");
        second.write(&[b'b'; 100]).expect("write");
    }
    fx.store.commit(staged(first.finish)).expect("commit first");
    fx.store
        .commit(staged(second.finish))
        .expect("commit second");
    let got = fx.read("alice/f");
    assert_eq!(got.len(), 10_000);
    assert!(got.iter().all(|&b| b == got[0]), "mixed bytes");
    assert_eq!(fx.temps(), 0);
}

#[test]
fn in_place_uploads_change_nothing_before_their_first_byte() {
    let fx = Fixture::new();
    fx.write("alice/f", b"0123456789");
    // Opened and dropped (a refused transfer, or no data connection): nothing changed.
    drop(
        fx.store
            .open_write("alice", &vp("/f"), WriteMode::At(4))
            .expect("rest"),
    );
    drop(
        fx.store
            .open_write("alice", &vp("/f"), WriteMode::Append)
            .expect("appe"),
    );
    drop(
        fx.store
            .open_write("alice", &vp("/new"), WriteMode::Append)
            .expect("appe new"),
    );
    let unique = fx
        .store
        .open_write("alice", &vp("/u"), WriteMode::Unique)
        .expect("stou");
    assert_eq!(unique.target, vp("/u"));
    drop(unique);
    assert_eq!(fx.read("alice/f"), b"0123456789");
    assert!(!fx.home("alice").join("new").exists());
    assert!(!fx.home("alice").join("u").exists());
    // The first byte truncates at the marker, then writes.
    let mut rest = fx
        .store
        .open_write("alice", &vp("/f"), WriteMode::At(4))
        .expect("rest");
    rest.write(b"ab").expect("write");
    drop(rest);
    assert_eq!(fx.read("alice/f"), b"0123ab");
    // An empty transfer that completes still creates its file.
    let mut empty = fx
        .store
        .open_write("alice", &vp("/new"), WriteMode::Append)
        .expect("appe");
    empty.complete().expect("complete");
    drop(empty);
    assert_eq!(fx.read("alice/new"), b"");
}

#[test]
fn open_write_checks_target() {
    let fx = Fixture::new();
    fs::create_dir(fx.home("alice").join("d")).expect("mkdir");
    fx.write("alice/file", b"x");
    let store = &fx.store;
    let err = |path: &str| {
        store
            .open_write("alice", &vp(path), WriteMode::Replace)
            .map(drop)
            .unwrap_err()
    };
    assert!(matches!(err("/d"), StoreError::IsADirectory));
    assert!(matches!(err("/"), StoreError::IsADirectory));
    assert!(matches!(err("/missing/f"), StoreError::NotFound));
    assert!(matches!(err("/file/f"), StoreError::NotADirectory));
    assert_eq!(fx.temps(), 0);
}

#[test]
fn directories() {
    let fx = Fixture::new();
    let store = &fx.store;
    store.mkdir("alice", &vp("/d")).expect("mkdir");
    assert!(matches!(
        store.mkdir("alice", &vp("/d")),
        Err(StoreError::AlreadyExists)
    ));
    assert!(matches!(
        store.mkdir("alice", &VPath::root()),
        Err(StoreError::AlreadyExists)
    ));
    assert!(matches!(
        store.mkdir("alice", &vp("/x/y")),
        Err(StoreError::NotFound)
    ));
    store.mkdir("alice", &vp("/d/e")).expect("mkdir nested");
    assert!(matches!(
        store.rmdir("alice", &vp("/d")),
        Err(StoreError::NotEmpty)
    ));
    assert!(matches!(
        store.rmdir("alice", &VPath::root()),
        Err(StoreError::PermissionDenied)
    ));
    assert!(matches!(
        store.remove("alice", &vp("/d")),
        Err(StoreError::IsADirectory)
    ));
    fx.write("alice/d/e/f", b"x");
    assert!(matches!(
        store.rmdir("alice", &vp("/d/e/f")),
        Err(StoreError::NotADirectory)
    ));
    store.remove("alice", &vp("/d/e/f")).expect("remove");
    store.rmdir("alice", &vp("/d/e")).expect("rmdir");
    store.rmdir("alice", &vp("/d")).expect("rmdir");
    assert!(matches!(
        store.rmdir("alice", &vp("/d")),
        Err(StoreError::NotFound)
    ));
    assert!(matches!(
        store.remove("alice", &vp("/d")),
        Err(StoreError::NotFound)
    ));
}

/// Exchanges `/d` in alice's home with a link to a directory outside while the store works
/// through `/d`: nothing outside is ever read, created, changed or removed.
#[test]
fn paths_past_the_limits_are_refused() {
    let fx = Fixture::new();
    let store = LocalFs::new(fx.dir.path().join("home"), fx.dir.path().join("tmp"))
        .expect("storage")
        .with_path_limits(PathLimits {
            max_depth: 3,
            max_length: 12,
        });
    let too_long = |r: Result<(), StoreError>, what: &str| {
        assert!(matches!(r, Err(StoreError::TooLong)), "{what}: {r:?}");
    };
    store.mkdir("alice", &vp("/a")).expect("1 deep");
    store.mkdir("alice", &vp("/a/b")).expect("2 deep");
    store.mkdir("alice", &vp("/a/b/c")).expect("3 deep");
    too_long(store.mkdir("alice", &vp("/a/b/c/d")), "4 deep");
    too_long(
        store
            .open_write("alice", &vp("/a/b/c/f"), WriteMode::Replace)
            .map(drop),
        "file 4 deep",
    );
    too_long(
        store
            .open_write("alice", &vp("/a/b/c/f"), WriteMode::Unique)
            .map(drop),
        "unique 4 deep",
    );
    too_long(store.mkdir("alice", &vp("/abcdefghijkl")), "13 bytes");
    too_long(store.mkdir("alice", &vp(&"n".repeat(256))), "NAME_MAX");
    too_long(
        store.stat("alice", &vp(&"n".repeat(256))).map(drop),
        "NAME_MAX stat",
    );
    // A tree 1 deep moved to 3 deep would reach 4: refused, nothing moves.
    store.mkdir("alice", &vp("/x")).expect("x");
    store.mkdir("alice", &vp("/x/y")).expect("x/y");
    too_long(
        store.rename("alice", &vp("/x"), &vp("/a/b/x")),
        "moved deeper",
    );
    assert!(fx.home("alice").join("x/y").is_dir());
    // Moving a tree up is always fine; so is a same-depth rename within the length.
    store.rename("alice", &vp("/a/b"), &vp("/b")).expect("up");
    store
        .rename("alice", &vp("/x"), &vp("/z"))
        .expect("sibling");
    // A longer name for the top of a tree counts the longest path below it.
    too_long(
        store.rename("alice", &vp("/z"), &vp("/zzzzzzzzzzz")),
        "longer",
    );
    store
        .rename("alice", &vp("/z"), &vp("/zzzzzzzzz"))
        .expect("as long as allowed");
    assert!(fx.home("alice").join("zzzzzzzzz/y").is_dir());
}

#[test]
fn stale_staged_uploads_are_removed_and_nothing_else() {
    let f = Fixture::new();
    let tmp = f.dir.path().join("tmp");
    fs::write(tmp.join("0123456789abcdef.part"), b"half an upload").expect("stale");
    fs::write(tmp.join("notes.txt"), b"not ours to remove").expect("other");
    // A live upload staged through the store itself is a .part file too.
    let (_, live) = f.store.create_temp().expect("temp");
    drop(live);
    assert_eq!(f.store.remove_stale_staged().expect("swept"), 2);
    let left: Vec<_> = fs::read_dir(&tmp)
        .expect("tmp")
        .filter_map(Result::ok)
        .map(|e| e.file_name())
        .collect();
    assert_eq!(left, ["notes.txt"]);
}

/// A server-side failure (Abort::Failed) keeps nothing of a staged upload, even when the abort
/// is cancelled at once (ABOR or the session's end drop the transfer task that awaits it) while
/// every pool thread is busy.
#[tokio::test]
async fn a_cancelled_abort_of_a_failed_upload_keeps_nothing() {
    use crate::storage::{Abort, Storage};
    let dir = TempDir::new().expect("temp dir");
    let storage =
        crate::storage::local::LocalStorage::new(dir.path().join("home"), dir.path().join("tmp"))
            .expect("storage")
            .with_partial_uploads(true)
            .with_threads(1, 1);
    storage.create_home("alice").await.expect("home");
    let mut sink = storage
        .open_write("alice", &vp("/new"), WriteMode::Replace)
        .await
        .expect("open_write");
    sink.write(b"maybe garbage").await.expect("write");
    // Another session's short call holds the only short permit (a commit's fsync, say).
    let busy = storage.clone();
    let hold = tokio::spawn(async move {
        busy.short(|_| {
            std::thread::sleep(Duration::from_millis(300));
            Ok(())
        })
        .await
    });
    tokio::time::sleep(Duration::from_millis(50)).await;
    // Polled once, then dropped: as a cancelled transfer task leaves it.
    let _ = futures_poll_once(sink.abort(Abort::Failed)).await;
    let kept = dir.path().join("home/alice/new");
    assert!(
        !kept.exists(),
        "a failed upload was kept as an interrupted one: {:?}",
        fs::read(&kept)
    );
    hold.await.expect("join").expect("hold");
    assert!(!kept.exists(), "nothing kept later either");
}

/// A quota refusal of an in-place upload rolls it back even when the abort is cancelled at once
/// while every pool thread is busy.
#[tokio::test]
async fn a_cancelled_abort_of_a_refused_append_rolls_it_back() {
    use crate::config::Quota;
    use crate::storage::{Abort, Storage};
    let dir = TempDir::new().expect("temp dir");
    let ledger = Arc::new(
        QuotaLedger::new(
            dir.path().join("usage"),
            dir.path().join("home"),
            Arc::new(|_: &str| Quota {
                bytes: Some(10),
                files: None,
            }),
        )
        .expect("ledger"),
    );
    let storage =
        crate::storage::local::LocalStorage::new(dir.path().join("home"), dir.path().join("tmp"))
            .expect("storage")
            .with_quota(ledger)
            .with_threads(1, 1);
    storage.create_home("alice").await.expect("home");
    let mut sink = storage
        .open_write("alice", &vp("/appended"), WriteMode::Append)
        .await
        .expect("open_write");
    sink.write(b"12345678").await.expect("write");
    assert!(matches!(
        sink.write(b"over the limit").await,
        Err(StoreError::QuotaExceeded)
    ));
    let busy = storage.clone();
    let hold = tokio::spawn(async move {
        busy.short(|_| {
            std::thread::sleep(Duration::from_millis(300));
            Ok(())
        })
        .await
    });
    tokio::time::sleep(Duration::from_millis(50)).await;
    let _ = futures_poll_once(sink.abort(Abort::Refused)).await;
    let kept = dir.path().join("home/alice/appended");
    assert!(
        !kept.exists(),
        "a refused APPE was not rolled back: {:?}",
        fs::read(&kept)
    );
    hold.await.expect("join").expect("hold");
    assert!(!kept.exists(), "nothing appears later either");
}

/// Polls `fut` once and drops it: what a cancelled task does to the future it awaited.
async fn futures_poll_once<F: std::future::Future>(fut: F) -> std::task::Poll<F::Output> {
    let mut fut = std::pin::pin!(fut);
    std::future::poll_fn(|cx| std::task::Poll::Ready(fut.as_mut().poll(cx))).await
}
