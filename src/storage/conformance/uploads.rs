//! The cases of uploads: staged (STOR) and in place (APPE, REST+STOR, STOU), each ending in
//! a commit, an abort or a drop, and the quota refusing them.

use super::*;
use crate::storage::Abort;

fn gone() -> ClientProbe {
    ClientProbe::new(|| true)
}

/// Opens alice's `path` as `mode` and writes `bytes`.
async fn started(s: &dyn Storage, path: &str, mode: WriteMode, bytes: &[u8]) -> Box<dyn ByteSink> {
    let mut sink = open(s, path, mode).await;
    sink.write(bytes).await.expect("write");
    sink
}

pub(super) async fn replace_is_seen_only_after_the_commit(make: Make) {
    let sub = subject(make, Setup::default()).await;
    let s = &*sub.storage;
    put(s, "/f", b"old").await;
    let mut sink = started(s, "/f", WriteMode::Replace, b"new ").await;
    assert_eq!(sink.target(), &vp("/f"));
    sink.write(b"contents").await.expect("write");
    assert_eq!(get(s, "/f").await, b"old");
    assert_eq!(s.stat(ALICE, &vp("/f")).await.expect("stat").size, 3);
    sink.commit(present()).await.expect("commit");
    assert_eq!(get(s, "/f").await, b"new contents");

    let sink = started(s, "/g", WriteMode::Replace, b"g").await;
    assert!(!exists(s, "/g").await, "a new name appears at the commit");
    sink.commit(present()).await.expect("commit");
    assert_eq!(get(s, "/g").await, b"g");
    // An empty upload makes an empty file.
    open(s, "/e", WriteMode::Replace)
        .await
        .commit(present())
        .await
        .expect("commit");
    assert_eq!(get(s, "/e").await, b"");
    assert_eq!(names(&list(s, "/").await.entries), ["e", "f", "g"]);
}

pub(super) async fn readers_keep_the_file_they_opened(make: Make) {
    let sub = subject(make, Setup::default()).await;
    let s = &*sub.storage;
    put(s, "/f", b"old bytes").await;
    let replaced = s.open_read(ALICE, &vp("/f"), 0).await.expect("open_read");
    put(s, "/f", b"new").await;
    assert_eq!(replaced.size(), 9);
    assert_eq!(read_all(replaced).await, b"old bytes");
    let removed = s.open_read(ALICE, &vp("/f"), 1).await.expect("open_read");
    s.remove(ALICE, &vp("/f")).await.expect("remove");
    assert_eq!(
        (removed.size(), read_all(removed).await),
        (3, b"ew".to_vec())
    );
}

pub(super) async fn concurrent_replacements_never_mix(make: Make) {
    let sub = subject(make, Setup::default()).await;
    let s = &*sub.storage;
    let mut first = open(s, "/f", WriteMode::Replace).await;
    let mut second = open(s, "/f", WriteMode::Replace).await;
    for _ in 0..100 {
        first.write(&[b'a'; 100]).await.expect("write");
        second.write(&[b'b'; 100]).await.expect("write");
    }
    first.commit(present()).await.expect("commit first");
    assert_eq!(get(s, "/f").await, [b'a'; 10_000]);
    second.commit(present()).await.expect("commit second");
    assert_eq!(get(s, "/f").await, [b'b'; 10_000]);
}

pub(super) async fn a_commit_checks_the_target_again(make: Make) {
    let sub = subject(make, Setup::default()).await;
    let s = &*sub.storage;
    s.mkdir(ALICE, &vp("/d")).await.expect("mkdir");
    let sink = started(s, "/d/f", WriteMode::Replace, b"x").await;
    s.rmdir(ALICE, &vp("/d"))
        .await
        .expect("rmdir: the staged bytes are elsewhere");
    refused!(sink.commit(present()).await, StoreError::NotFound);
    assert!(!exists(s, "/d").await);

    let sink = started(s, "/g", WriteMode::Replace, b"x").await;
    s.mkdir(ALICE, &vp("/g"))
        .await
        .expect("a directory takes the name");
    refused!(sink.commit(present()).await, StoreError::IsADirectory);
    assert!(list(s, "/g").await.is_dir);
    // The checks at the open.
    s.mkdir(ALICE, &vp("/e")).await.expect("mkdir");
    put(s, "/file", b"x").await;
    for mode in [WriteMode::Replace, WriteMode::Append, WriteMode::Unique] {
        refused!(
            s.open_write(ALICE, &vp("/e"), mode).await,
            StoreError::IsADirectory
        );
        refused!(
            s.open_write(ALICE, &VPath::root(), mode).await,
            StoreError::IsADirectory
        );
        refused!(
            s.open_write(ALICE, &vp("/nope/f"), mode).await,
            StoreError::NotFound
        );
        refused!(
            s.open_write(ALICE, &vp("/file/f"), mode).await,
            StoreError::NotADirectory
        );
    }
}

/// Without partial uploads kept, an upload that is not committed leaves nothing and the old
/// file stays.
pub(super) async fn interrupted_uploads_are_dropped(make: Make) {
    let sub = subject(make, Setup::default()).await;
    let s = &*sub.storage;
    put(s, "/f", b"old").await;
    drop(started(s, "/f", WriteMode::Replace, b"partial").await);
    drop(started(s, "/new", WriteMode::Replace, b"partial").await);
    for why in [Abort::Refused, Abort::Failed] {
        started(s, "/f", WriteMode::Replace, b"x")
            .await
            .abort(why)
            .await;
        started(s, "/new", WriteMode::Replace, b"x")
            .await
            .abort(why)
            .await;
    }
    refused!(
        started(s, "/new", WriteMode::Replace, b"x")
            .await
            .commit(gone())
            .await,
        StoreError::Interrupted
    );
    assert_eq!(get(s, "/f").await, b"old");
    assert_eq!(names(&list(s, "/").await.entries), ["f"]);
}

/// With partial uploads kept, an interrupted upload of a name that held no file is kept
/// under it for a resume; nothing else is.
pub(super) async fn interrupted_uploads_of_new_names_are_kept(make: Make) {
    let setup = Setup {
        keep_partial: true,
        // Room for the directories made on the way.
        quota: Some(Quota {
            bytes: Some(10_000),
            files: None,
        }),
        ..Setup::default()
    };
    let sub = subject(make, setup).await;
    let s = &*sub.storage;
    drop(started(s, "/new", WriteMode::Replace, b"first part").await);
    assert_eq!(get(s, "/new").await, b"first part");
    assert_eq!(
        usage(s).await,
        Usage {
            bytes: 10,
            files: 1
        }
    );
    // Over an existing file: it stays, exactly.
    drop(started(s, "/new", WriteMode::Replace, b"other bytes").await);
    assert_eq!(get(s, "/new").await, b"first part");
    // Nothing arrived: no empty file.
    drop(open(s, "/empty", WriteMode::Replace).await);
    // A refusal or a failure keeps nothing.
    started(s, "/refused", WriteMode::Replace, b"12345")
        .await
        .abort(Abort::Refused)
        .await;
    started(s, "/failed", WriteMode::Replace, b"12345")
        .await
        .abort(Abort::Failed)
        .await;
    // Another upload took the name meanwhile: its file stays.
    let raced = started(s, "/raced", WriteMode::Replace, b"partial").await;
    put(s, "/raced", b"winner").await;
    drop(raced);
    assert_eq!(get(s, "/raced").await, b"winner");
    // A complete upload whose commit fails is not kept either.
    s.mkdir(ALICE, &vp("/d")).await.expect("mkdir");
    let vanished = started(s, "/d/f", WriteMode::Replace, b"x").await;
    s.mkdir(ALICE, &vp("/d/f"))
        .await
        .expect("a directory at the name");
    assert!(vanished.commit(present()).await.is_err());
    assert!(list(s, "/d/f").await.is_dir);
    s.rmdir(ALICE, &vp("/d/f")).await.expect("rmdir");
    s.rmdir(ALICE, &vp("/d")).await.expect("rmdir");
    assert_eq!(names(&list(s, "/").await.entries), ["new", "raced"]);
    assert_eq!(
        usage(s).await,
        Usage {
            bytes: 16,
            files: 2
        }
    );
    // The client went away before the commit: interrupted, and kept as such.
    for (path, want) in [("/gone", &b"cut"[..]), ("/new", &b"first part"[..])] {
        let sink = started(s, path, WriteMode::Replace, b"cut").await;
        refused!(sink.commit(gone()).await, StoreError::Interrupted);
        assert_eq!(get(s, path).await, want);
    }
    assert_eq!(
        usage(s).await,
        Usage {
            bytes: 19,
            files: 3
        }
    );
}

pub(super) async fn in_place_uploads_change_nothing_before_their_first_byte(make: Make) {
    let sub = subject(make, Setup::default()).await;
    let s = &*sub.storage;
    put(s, "/f", b"0123456789").await;
    drop(open(s, "/f", WriteMode::At(4)).await);
    drop(open(s, "/f", WriteMode::Append).await);
    drop(open(s, "/new", WriteMode::Append).await);
    let unique = open(s, "/u", WriteMode::Unique).await;
    assert_eq!(unique.target(), &vp("/u"));
    drop(unique);
    assert_eq!(get(s, "/f").await, b"0123456789");
    assert_eq!(names(&list(s, "/").await.entries), ["f"]);
    // The first byte truncates at the marker, then writes; an interruption keeps it.
    drop(started(s, "/f", WriteMode::At(4), b"ab").await);
    assert_eq!(get(s, "/f").await, b"0123ab");
    started(s, "/f", WriteMode::At(2), b"XY")
        .await
        .commit(present())
        .await
        .expect("rest");
    assert_eq!(get(s, "/f").await, b"01XY");
    started(s, "/f", WriteMode::Append, b"++")
        .await
        .commit(present())
        .await
        .expect("appe");
    assert_eq!(get(s, "/f").await, b"01XY++");
    // A failure keeps what was written, as any interruption does.
    started(s, "/f", WriteMode::Append, b"!")
        .await
        .abort(Abort::Failed)
        .await;
    assert_eq!(get(s, "/f").await, b"01XY++!");
    // An empty transfer that completes still creates (or truncates) its file.
    open(s, "/new", WriteMode::Append)
        .await
        .commit(present())
        .await
        .expect("appe");
    assert_eq!(get(s, "/new").await, b"");
    open(s, "/f", WriteMode::At(3))
        .await
        .commit(present())
        .await
        .expect("rest");
    assert_eq!(get(s, "/f").await, b"01X");
    // The client went away: interrupted, and what arrived stays.
    let cut = started(s, "/f", WriteMode::Append, b"4").await;
    refused!(cut.commit(gone()).await, StoreError::Interrupted);
    assert_eq!(get(s, "/f").await, b"01X4");
}

pub(super) async fn in_place_writes_are_seen_as_they_land(make: Make) {
    let sub = subject(make, Setup::default()).await;
    let s = &*sub.storage;
    put(s, "/f", b"01X").await;
    let reader = s.open_read(ALICE, &vp("/f"), 0).await.expect("open_read");
    let mut sink = started(s, "/f", WriteMode::Append, b"45").await;
    assert_eq!(get(s, "/f").await, b"01X45");
    sink.write(b"6").await.expect("write");
    sink.commit(present()).await.expect("commit");
    assert_eq!(read_all(reader).await, b"01X456");
}

pub(super) async fn a_second_in_place_writer_is_busy(make: Make) {
    let sub = subject(make, Setup::default()).await;
    let s = &*sub.storage;
    put(s, "/f", b"abc").await;
    let first = open(s, "/f", WriteMode::Append).await;
    refused!(
        s.open_write(ALICE, &vp("/f"), WriteMode::Append).await,
        StoreError::Busy
    );
    refused!(
        s.open_write(ALICE, &vp("/f"), WriteMode::At(1)).await,
        StoreError::Busy
    );
    // Bob's file of the same name is another file; a staged upload takes no lock.
    drop(
        s.open_write(BOB, &vp("/f"), WriteMode::Append)
            .await
            .expect("bob"),
    );
    started(s, "/f", WriteMode::Replace, b"new")
        .await
        .commit(present())
        .await
        .expect("stor");
    drop(first);
    started(s, "/f", WriteMode::At(1), b"!")
        .await
        .commit(present())
        .await
        .expect("free again");
    assert_eq!(get(s, "/f").await, b"n!");
    // A new name is locked from its open, before the file exists.
    let new = open(s, "/n", WriteMode::Append).await;
    refused!(
        s.open_write(ALICE, &vp("/n"), WriteMode::Append).await,
        StoreError::Busy
    );
    drop(new);
}

pub(super) async fn restart_offsets(make: Make) {
    let sub = subject(make, Setup::default()).await;
    let s = &*sub.storage;
    put(s, "/f", b"0123456789").await;
    let source = s.open_read(ALICE, &vp("/f"), 4).await.expect("open_read");
    assert_eq!(source.size(), 10, "the whole file's size");
    assert_eq!(read_all(source).await, b"456789");
    let end = s.open_read(ALICE, &vp("/f"), 10).await.expect("at the end");
    assert_eq!(read_all(end).await, b"");
    refused!(
        s.open_read(ALICE, &vp("/f"), 11).await,
        StoreError::BadOffset
    );
    refused!(
        s.open_write(ALICE, &vp("/f"), WriteMode::At(11)).await,
        StoreError::BadOffset
    );
    refused!(
        s.open_write(ALICE, &vp("/nope"), WriteMode::At(0)).await,
        StoreError::NotFound
    );
    s.mkdir(ALICE, &vp("/d")).await.expect("mkdir");
    refused!(
        s.open_read(ALICE, &vp("/d"), 0).await,
        StoreError::IsADirectory
    );
    refused!(
        s.open_read(ALICE, &vp("/nope"), 0).await,
        StoreError::NotFound
    );
    started(s, "/f", WriteMode::At(10), b"ab")
        .await
        .commit(present())
        .await
        .expect("at the end");
    assert_eq!(get(s, "/f").await, b"0123456789ab");
    started(s, "/f", WriteMode::At(0), b"X")
        .await
        .commit(present())
        .await
        .expect("from 0");
    assert_eq!(get(s, "/f").await, b"X");
}

pub(super) async fn unique_names(make: Make) {
    let sub = subject(make, Setup::default()).await;
    let s = &*sub.storage;
    put(s, "/u", b"taken").await;
    let first = started(s, "/u", WriteMode::Unique, b"one").await;
    assert_eq!(first.target(), &vp("/u.1"));
    // Picked but not yet committed: the next one passes it by.
    let second = open(s, "/u", WriteMode::Unique).await;
    assert_eq!(second.target(), &vp("/u.2"));
    first.commit(present()).await.expect("commit");
    second.commit(present()).await.expect("empty commit");
    assert_eq!(get(s, "/u").await, b"taken");
    assert_eq!(get(s, "/u.1").await, b"one");
    assert_eq!(get(s, "/u.2").await, b"");
    s.mkdir(ALICE, &vp("/d")).await.expect("mkdir");
    let fresh = started(s, "/d/v", WriteMode::Unique, b"v").await;
    assert_eq!(fresh.target(), &vp("/d/v"));
    fresh.commit(present()).await.expect("commit");
    assert_eq!(get(s, "/d/v").await, b"v");
    // A directory takes a name too, once the name asked for is a file.
    s.mkdir(ALICE, &vp("/u.3")).await.expect("mkdir");
    let next = open(s, "/u", WriteMode::Unique).await;
    assert_eq!(next.target(), &vp("/u.4"));
}

pub(super) async fn quota_refusals_leave_nothing(make: Make) {
    let setup = Setup {
        quota: Some(Quota {
            bytes: Some(10),
            files: None,
        }),
        ..Setup::default()
    };
    let sub = subject(make, setup).await;
    let s = &*sub.storage;
    put(s, "/a", b"123456").await;
    let report = s.quota(ALICE).await.expect("quota");
    assert_eq!(report.usage, Usage { bytes: 6, files: 1 });
    assert_eq!(report.limits.bytes, Some(10));

    let mut staged = started(s, "/b", WriteMode::Replace, b"1234").await;
    refused!(staged.write(b"5").await, StoreError::QuotaExceeded);
    staged.abort(Abort::Refused).await;
    assert!(!exists(s, "/b").await);
    let mut appended = started(s, "/a", WriteMode::Append, b"12").await;
    refused!(appended.write(b"345").await, StoreError::QuotaExceeded);
    appended.abort(Abort::Refused).await;
    assert_eq!(get(s, "/a").await, b"123456");
    let mut created = started(s, "/c", WriteMode::Append, b"12").await;
    refused!(created.write(b"345").await, StoreError::QuotaExceeded);
    created.abort(Abort::Refused).await;
    assert!(!exists(s, "/c").await);
    let mut unique = started(s, "/u", WriteMode::Unique, b"1234").await;
    refused!(unique.write(b"5").await, StoreError::QuotaExceeded);
    unique.abort(Abort::Refused).await;
    let mut resumed = started(s, "/a", WriteMode::At(6), b"1234").await;
    refused!(resumed.write(b"5").await, StoreError::QuotaExceeded);
    resumed.abort(Abort::Refused).await;
    assert_eq!(
        get(s, "/a").await,
        b"123456",
        "back to its length at the open"
    );
    assert_eq!(names(&list(s, "/").await.entries), ["a"]);
    assert_eq!(usage(s).await, Usage { bytes: 6, files: 1 });
    // A directory costs bytes too.
    refused!(s.mkdir(ALICE, &vp("/d")).await, StoreError::QuotaExceeded);

    // Replacing a file may reuse its bytes; what is written in place counts.
    put(s, "/a", b"1234567890").await;
    assert_eq!(
        usage(s).await,
        Usage {
            bytes: 10,
            files: 1
        }
    );
    started(s, "/a", WriteMode::At(8), b"ab")
        .await
        .commit(present())
        .await
        .expect("fits");
    s.remove(ALICE, &vp("/a")).await.expect("remove");
    assert_eq!(usage(s).await, Usage::default());
    put(s, "/x", b"12345").await;
    started(s, "/x", WriteMode::Append, b"678")
        .await
        .commit(present())
        .await
        .expect("fits");
    assert_eq!(usage(s).await, Usage { bytes: 8, files: 1 });
    s.rename(ALICE, &vp("/x"), &vp("/y")).await.expect("rename");
    assert_eq!(usage(s).await, Usage { bytes: 8, files: 1 });
    assert_eq!(
        s.quota(ALICE).await.expect("quota").lines(),
        [
            "Bytes used: 8 of 10".to_owned(),
            "Files used: 1 of none".to_owned()
        ]
    );
}

pub(super) async fn the_file_limit_refuses_new_names(make: Make) {
    let setup = Setup {
        quota: Some(Quota {
            bytes: None,
            files: Some(2),
        }),
        ..Setup::default()
    };
    let sub = subject(make, setup).await;
    let s = &*sub.storage;
    put(s, "/a", b"a").await;
    s.mkdir(ALICE, &vp("/d"))
        .await
        .expect("a directory is a file too");
    for mode in [WriteMode::Replace, WriteMode::Unique, WriteMode::Append] {
        refused!(
            s.open_write(ALICE, &vp("/b"), mode).await,
            StoreError::QuotaExceeded
        );
    }
    refused!(s.mkdir(ALICE, &vp("/e")).await, StoreError::QuotaExceeded);
    // Existing files can still be rewritten.
    put(s, "/a", b"again").await;
    started(s, "/a", WriteMode::Append, b"!")
        .await
        .commit(present())
        .await
        .expect("appe");
    assert_eq!(get(s, "/a").await, b"again!");
    s.rmdir(ALICE, &vp("/d")).await.expect("rmdir");
    put(s, "/b", b"b").await;
    assert_eq!(usage(s).await, Usage { bytes: 7, files: 2 });
    // Bob has limits of his own.
    let mut sink = s
        .open_write(BOB, &vp("/b"), WriteMode::Replace)
        .await
        .expect("bob");
    sink.write(b"bob").await.expect("write");
    sink.commit(present()).await.expect("commit");
    assert_eq!(
        s.quota(BOB).await.expect("quota").usage,
        Usage { bytes: 3, files: 1 }
    );
}

pub(super) async fn in_place_writes_are_charged_while_their_file_is_in_the_tree(make: Make) {
    let setup = Setup {
        quota: Some(Quota {
            bytes: Some(100),
            files: None,
        }),
        ..Setup::default()
    };
    let sub = subject(make, setup).await;
    let s = &*sub.storage;
    put(s, "/f", b"ab").await;
    // Renamed away meanwhile: the upload follows its file, which still counts.
    let mut sink = started(s, "/f", WriteMode::Append, b"cd").await;
    s.rename(ALICE, &vp("/f"), &vp("/g")).await.expect("rename");
    sink.write(b"ef").await.expect("write");
    sink.commit(present()).await.expect("commit");
    assert_eq!(get(s, "/g").await, b"abcdef");
    assert!(!exists(s, "/f").await);
    assert_eq!(usage(s).await, Usage { bytes: 6, files: 1 });
    // Removed meanwhile: what it holds and gains no longer counts.
    let mut sink = started(s, "/g", WriteMode::Append, b"x").await;
    s.remove(ALICE, &vp("/g")).await.expect("remove");
    sink.write(b"yz").await.expect("write");
    sink.commit(present()).await.expect("commit");
    assert!(!exists(s, "/g").await);
    assert_eq!(usage(s).await, Usage::default());
}
