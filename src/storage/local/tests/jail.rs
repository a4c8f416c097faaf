//! The jail: lookups, links, swaps and special files never lead out of a home.

use rustix::io::Errno;

use super::*;
use crate::storage::local::upload::UploadError;

#[test]
fn a_listing_past_the_limit_is_refused_and_one_at_it_is_not() {
    let fx = Fixture::new();
    fs::create_dir(fx.home("alice").join("d")).expect("mkdir");
    for i in 0..3 {
        fx.write(&format!("alice/d/f{i}"), b"x");
    }
    let at = LocalFs::new(fx.dir.path().join("home"), fx.dir.path().join("tmp"))
        .expect("storage")
        .with_listing_limit(3);
    assert_eq!(at.list("alice", &vp("/d")).expect("list").entries.len(), 3);
    let below = LocalFs::new(fx.dir.path().join("home"), fx.dir.path().join("tmp"))
        .expect("storage")
        .with_listing_limit(2);
    assert!(matches!(
        below.list("alice", &vp("/d")),
        Err(StoreError::TooManyEntries(2))
    ));
    // A file is one entry, whatever the limit.
    assert_eq!(
        below
            .list("alice", &vp("/d/f0"))
            .expect("file")
            .entries
            .len(),
        1
    );
}

#[test]
fn glob_keeps_matching_names_of_one_directory_inside_the_home() {
    let fx = Fixture::new();
    let alice = fx.home("alice");
    fs::create_dir_all(alice.join("d/sub.dat")).expect("mkdir");
    for name in ["a.dat", "b.dat", "c.txt", ".hidden.dat"] {
        fx.write(&format!("alice/d/{name}"), b"x");
    }
    fx.write("bob/secret.dat", b"bob's");
    symlink(fx.home("bob").join("secret.dat"), alice.join("d/out.dat")).expect("link");
    symlink("a.dat", alice.join("d/in.dat")).expect("link");
    let found = fx
        .store
        .glob("alice", &vp("/d"), &pattern("*.dat"))
        .expect("glob");
    assert!(found.matched && !found.is_dir);
    // The link out of the home is left out as in a listing; the one inside is followed.
    assert_eq!(
        names(&found.entries),
        ["a.dat", "b.dat", "in.dat", "sub.dat"]
    );
    let dirs: Vec<_> = found.entries.iter().map(|e| e.kind).collect();
    assert_eq!(dirs[3], FileKind::Dir);
    // `..` in the directory part never climbs above the home.
    let top = fx
        .store
        .glob("alice", &vp("/../../.."), &pattern("*"))
        .expect("glob at the top");
    assert_eq!(names(&top.entries), ["d"]);
    assert!(matches!(
        fx.store.glob("alice", &vp("/d/a.dat"), &pattern("*")),
        Err(StoreError::NotADirectory)
    ));
    assert!(matches!(
        fx.store.glob("alice", &vp("/none"), &pattern("*")),
        Err(StoreError::NotFound)
    ));
}

#[test]
fn glob_counts_every_name_read_and_stops_at_its_deadline() {
    let fx = Fixture::new();
    for i in 0..3 {
        fx.write(&format!("alice/f{i}"), b"x");
    }
    let limited =
        || LocalFs::new(fx.dir.path().join("home"), fx.dir.path().join("tmp")).expect("storage");
    // One match, but three names read: a directory too big to list is too big to glob.
    assert!(matches!(
        limited()
            .with_listing_limit(2)
            .glob("alice", &VPath::root(), &pattern("f0*")),
        Err(StoreError::TooManyEntries(2))
    ));
    assert_eq!(
        limited()
            .with_listing_limit(3)
            .glob("alice", &VPath::root(), &pattern("f0*"))
            .expect("at the limit")
            .entries
            .len(),
        1
    );
    assert!(matches!(
        limited().with_glob_time_limit(Duration::ZERO).glob(
            "alice",
            &VPath::root(),
            &pattern("f*")
        ),
        Err(StoreError::TimedOut)
    ));
}

#[test]
fn traversal_stays_in_home() {
    let fx = Fixture::new();
    fx.write("alice/x", b"mine");
    fx.write("x", b"beside the homes");
    let cwd = vp("/sub");
    for arg in ["../x", "../../x", "/../x", "//x", "/./x", "x/../../x"] {
        let path = cwd.resolve(arg).expect("resolves");
        let handle = fx.store.open_read("alice", &path, 0).expect(arg);
        assert_eq!(read_all(handle), b"mine", "{arg:?}");
    }
    for arg in ["..", "../..", "/.."] {
        let path = cwd.resolve(arg).expect("resolves");
        assert_eq!(
            fx.store.stat("alice", &path).expect(arg).name,
            "/",
            "{arg:?}"
        );
    }
    // A sibling's home is just a missing directory from inside this one.
    fx.write("bob/y", b"bob's");
    let bob = cwd.resolve("../../bob/y").expect("resolves");
    assert!(matches!(
        fx.store.stat("alice", &bob),
        Err(StoreError::NotFound)
    ));
}

#[test]
fn stat_and_list() {
    let fx = Fixture::new();
    fx.write("alice/b.txt", b"hello");
    fs::create_dir(fx.home("alice").join("a")).expect("mkdir");
    let root = fx.store.stat("alice", &VPath::root()).expect("stat root");
    assert_eq!((root.name.as_str(), root.kind), ("/", FileKind::Dir));
    let file = fx.store.stat("alice", &vp("/b.txt")).expect("stat file");
    assert_eq!(
        (file.name.as_str(), file.kind, file.size),
        ("b.txt", FileKind::File, 5)
    );
    assert!(file.unique.contains('g'));
    let listing = fx
        .store
        .list("alice", &VPath::root())
        .expect("list")
        .entries;
    assert_eq!(names(&listing), ["a", "b.txt"]);
    assert_eq!(listing[0].kind, FileKind::Dir);
    let one = fx
        .store
        .list("alice", &vp("/b.txt"))
        .expect("list file")
        .entries;
    assert_eq!(one, vec![file]);
    assert!(matches!(
        fx.store.stat("alice", &vp("/nope")),
        Err(StoreError::NotFound)
    ));
    assert!(matches!(
        fx.store.stat("alice", &vp("/b.txt/x")),
        Err(StoreError::NotADirectory)
    ));
}

#[test]
fn special_files_are_hidden() {
    let fx = Fixture::new();
    // A socket stands in for FIFOs and devices: opening one could block a store thread.
    let _socket =
        std::os::unix::net::UnixListener::bind(fx.home("alice").join("sock")).expect("bind socket");
    fx.write("alice/f", b"x");
    let listing = fx
        .store
        .list("alice", &VPath::root())
        .expect("list")
        .entries;
    assert_eq!(names(&listing), ["f"]);
    assert!(matches!(
        fx.store.stat("alice", &vp("/sock")),
        Err(StoreError::NotFound)
    ));
    assert!(matches!(
        fx.store.open_read("alice", &vp("/sock"), 0),
        Err(StoreError::NotFound)
    ));
}

#[test]
fn open_read_at_offset() {
    let fx = Fixture::new();
    fx.write("alice/f", b"0123456789");
    let handle = fx.store.open_read("alice", &vp("/f"), 4).expect("open");
    assert_eq!(handle.size, 10);
    assert_eq!(read_all(handle), b"456789");
    assert!(matches!(
        fx.store.open_read("alice", &VPath::root(), 0),
        Err(StoreError::IsADirectory)
    ));
}

#[test]
fn symlinks_out_of_home_look_missing() {
    let fx = Fixture::new();
    fx.write("bob/secret.txt", b"bob's secret");
    let alice = fx.home("alice");
    symlink(fx.home("bob"), alice.join("bob")).expect("link");
    symlink("/etc", alice.join("etc")).expect("link");
    symlink(fx.home("bob").join("secret.txt"), alice.join("secret")).expect("link");
    symlink(alice.join("nowhere"), alice.join("dangling")).expect("link");
    fx.write("alice/mine", b"alice's");

    let store = &fx.store;
    let not_found = |result: Result<(), StoreError>, what: &str| {
        assert!(
            matches!(result, Err(StoreError::NotFound)),
            "{what}: {result:?}"
        );
    };
    for path in [
        "/bob",
        "/bob/secret.txt",
        "/etc",
        "/etc/passwd",
        "/secret",
        "/dangling",
    ] {
        not_found(store.stat("alice", &vp(path)).map(drop), path);
        not_found(store.list("alice", &vp(path)).map(drop), path);
        not_found(store.open_read("alice", &vp(path), 0).map(drop), path);
        not_found(store.remove("alice", &vp(path)), path);
        not_found(store.rename("alice", &vp(path), &vp("/stolen")), path);
    }
    for path in [
        "/bob/new",
        "/bob/secret.txt",
        "/secret",
        "/etc/passwd",
        "/etc/new",
    ] {
        not_found(
            store
                .open_write("alice", &vp(path), WriteMode::Replace)
                .map(drop),
            path,
        );
    }
    not_found(store.mkdir("alice", &vp("/bob/d")), "mkdir");
    not_found(store.rmdir("alice", &vp("/bob")), "rmdir");
    not_found(
        store.rename("alice", &vp("/mine"), &vp("/bob/mine")),
        "rename into",
    );
    not_found(
        store.rename("alice", &vp("/mine"), &vp("/secret")),
        "rename over",
    );

    let listing = store.list("alice", &VPath::root()).expect("list").entries;
    assert_eq!(names(&listing), ["mine"]);
    let mut bobs = fs::read_dir(fx.home("bob"))
        .expect("bob")
        .map(|e| e.expect("entry").file_name())
        .collect::<Vec<_>>();
    bobs.sort();
    assert_eq!(bobs, ["secret.txt"]);
    assert_eq!(fx.read("bob/secret.txt"), b"bob's secret");
    assert_eq!(fx.read("alice/mine"), b"alice's");
    assert_eq!(fx.temps(), 0);
}

#[test]
fn sibling_prefix_is_not_inside() {
    let fx = Fixture::new();
    fx.store.create_home("al").expect("al home");
    fx.write("alice/file", b"alice's");
    // Textually "home/alice/file" starts with "home/al"; component-wise it does not.
    symlink("../alice/file", fx.home("al").join("x")).expect("link");
    symlink("../alice", fx.home("al").join("d")).expect("link");
    assert!(matches!(
        fx.store.stat("al", &vp("/x")),
        Err(StoreError::NotFound)
    ));
    assert!(matches!(
        fx.store.open_read("al", &vp("/d/file"), 0),
        Err(StoreError::NotFound)
    ));
    assert!(matches!(
        fx.store.open_write("al", &vp("/x"), WriteMode::Replace),
        Err(StoreError::NotFound)
    ));
    assert!(
        fx.store
            .list("al", &VPath::root())
            .expect("list")
            .entries
            .is_empty()
    );
}

#[test]
fn symlinks_inside_home_work() {
    let fx = Fixture::new();
    let alice = fx.home("alice");
    fs::create_dir(alice.join("real")).expect("mkdir");
    fx.write("alice/real/f", b"data");
    symlink("real", alice.join("docs")).expect("link");
    symlink("real/f", alice.join("f-link")).expect("link");

    let docs = fx.store.stat("alice", &vp("/docs")).expect("stat");
    assert_eq!((docs.name.as_str(), docs.kind), ("docs", FileKind::Dir));
    assert_eq!(
        names(&fx.store.list("alice", &vp("/docs")).expect("list").entries),
        ["f"]
    );
    let handle = fx
        .store
        .open_read("alice", &vp("/docs/f"), 0)
        .expect("open");
    assert_eq!(read_all(handle), b"data");

    // Uploading through a link replaces the file it points to, and keeps the link.
    let mut upload = fx
        .store
        .open_write("alice", &vp("/f-link"), WriteMode::Replace)
        .expect("open_write");
    upload.write(b"new").expect("write");
    fx.store.commit(staged(upload.finish)).expect("commit");
    assert_eq!(fx.read("alice/real/f"), b"new");
    assert!(
        fs::symlink_metadata(alice.join("f-link"))
            .expect("lstat")
            .is_symlink()
    );

    // rmdir and remove act on the link, never on what it points to.
    assert!(matches!(
        fx.store.rmdir("alice", &vp("/docs")),
        Err(StoreError::NotADirectory)
    ));
    fx.store.remove("alice", &vp("/docs")).expect("remove link");
    assert!(alice.join("real/f").exists());
    fx.store
        .rename("alice", &vp("/f-link"), &vp("/g-link"))
        .expect("rename link");
    assert!(
        fs::symlink_metadata(alice.join("g-link"))
            .expect("lstat")
            .is_symlink()
    );
}

/// The directory an upload is renamed into is synced by the handle the commit holds
/// (an `O_PATH` handle refused `fsync` with `EBADF`, so no rename was made durable).
#[test]
fn renames() {
    let fx = Fixture::new();
    let store = &fx.store;
    store.mkdir("alice", &vp("/a")).expect("mkdir");
    store.mkdir("alice", &vp("/a/b")).expect("mkdir");
    for to in ["/a/b/a", "/a/a"] {
        assert!(
            matches!(
                store.rename("alice", &vp("/a"), &vp(to)),
                Err(StoreError::InvalidName)
            ),
            "{to}"
        );
    }
    assert!(matches!(
        store.rename("alice", &VPath::root(), &vp("/x")),
        Err(StoreError::PermissionDenied)
    ));
    assert!(matches!(
        store.rename("alice", &vp("/a"), &VPath::root()),
        Err(StoreError::PermissionDenied)
    ));
    store
        .rename("alice", &vp("/a"), &vp("/ab"))
        .expect("sibling with a prefix name");
    store
        .rename("alice", &vp("/ab/b"), &vp("/b"))
        .expect("move up");
    fx.write("alice/f", b"f");
    store
        .rename("alice", &vp("/f"), &vp("/b/g"))
        .expect("move file");
    assert_eq!(fx.read("alice/b/g"), b"f");
    assert!(matches!(
        store.rename("alice", &vp("/missing"), &vp("/x")),
        Err(StoreError::NotFound)
    ));
}

#[test]
fn bad_user_names_are_not_found() {
    let fx = Fixture::new();
    for user in ["", ".", "..", "a/b", "../alice"] {
        assert!(
            matches!(fx.store.create_home(user), Err(StoreError::NotFound)),
            "{user:?}"
        );
        assert!(
            matches!(
                fx.store.stat(user, &VPath::root()),
                Err(StoreError::NotFound)
            ),
            "{user:?}"
        );
    }
    assert!(matches!(
        fx.store.stat("carol", &VPath::root()),
        Err(StoreError::NotFound)
    ));
    fx.store.create_home("alice").expect("idempotent");
}

#[test]
fn swapped_directory_never_leads_out() {
    use rustix::fs::{CWD, RenameFlags, renameat_with};
    use std::sync::atomic::{AtomicBool, Ordering};

    let fx = Fixture::new();
    let outside = TempDir::new().expect("outside");
    let alice = fx.home("alice");
    for dir in [outside.path(), alice.join("d").as_path()] {
        fs::create_dir_all(dir).expect("mkdir");
        for name in ["f", "g", "m"] {
            fs::write(dir.join(name), b"x").expect("file");
        }
        fs::set_permissions(dir.join("m"), fs::Permissions::from_mode(0o600)).expect("mode");
    }
    fs::write(outside.path().join("f"), b"OUTSIDE").expect("secret");
    fs::write(outside.path().join("only-outside"), b"").expect("marker");
    symlink(outside.path(), alice.join("l")).expect("link");
    let before = snapshot(outside.path());
    let stop = AtomicBool::new(false);
    std::thread::scope(|s| {
        s.spawn(|| {
            for _ in 0..2_000_000 {
                if stop.load(Ordering::Relaxed) {
                    break;
                }
                renameat_with(
                    CWD,
                    alice.join("d"),
                    CWD,
                    alice.join("l"),
                    RenameFlags::EXCHANGE,
                )
                .expect("exchange");
            }
        });
        let store = &fx.store;
        for i in 0..3_000 {
            if let Ok(handle) = store.open_read("alice", &vp("/d/f"), 0) {
                assert_ne!(read_all(handle), b"OUTSIDE");
            }
            if let Ok(listing) = store.list("alice", &vp("/d")) {
                assert!(listing.entries.iter().all(|e| e.name != "only-outside"));
            }
            if let Ok(upload) =
                store.open_write("alice", &vp(&format!("/d/n{i}")), WriteMode::Replace)
            {
                let _ = store.commit(staged(upload.finish));
            }
            let _ = store.mkdir("alice", &vp(&format!("/d/m{i}")));
            let _ = store.remove("alice", &vp("/d/g"));
            let _ = store.rename("alice", &vp("/d/f"), &vp("/d/f2"));
            let _ = store.rename("alice", &vp("/d/f2"), &vp("/d/f"));
            let _ = store.chmod("alice", &vp("/d/m"), 0o777);
            let _ = store.set_modified("alice", &vp("/d/m"), SystemTime::UNIX_EPOCH);
        }
        stop.store(true, Ordering::Relaxed);
    });
    assert_eq!(before, snapshot(outside.path()));
}

/// Every entry of `dir`, sorted: name, contents, mode and mtime.
fn snapshot(dir: &Path) -> Vec<(OsString, Vec<u8>, u32, i64, i64)> {
    let mut entries: Vec<_> = fs::read_dir(dir)
        .expect("read dir")
        .map(|e| {
            let e = e.expect("entry");
            let m = e.metadata().expect("meta");
            let bytes = fs::read(e.path()).expect("read");
            (e.file_name(), bytes, m.mode(), m.mtime(), m.mtime_nsec())
        })
        .collect();
    entries.sort();
    entries
}

/// In-place uploads (APPE, REST+STOR, STOU) open their file only at the first byte: `/d` is
/// exchanged with a link to a directory outside between the command and that byte, and
/// between a first chunk and a quota refusal's roll back. They still open, write and roll
/// back the file in the directory they resolved, which stays in the home: nothing outside
/// is created, written, truncated or removed, and the ledger agrees with a recount.
#[test]
fn in_place_uploads_through_a_swapped_directory_stay_inside() {
    use crate::config::Quota;
    use crate::quota::count_tree;
    use rustix::fs::{CWD, RenameFlags, renameat_with};

    let fx = Fixture::new();
    let limit = 1 << 20;
    let ledger = QuotaLedger::new(
        fx.dir.path().join("usage"),
        fx.dir.path().join("home"),
        Arc::new(move |_: &str| Quota {
            bytes: Some(limit),
            files: None,
        }),
    )
    .expect("ledger");
    let store = LocalFs::new(fx.dir.path().join("home"), fx.dir.path().join("tmp"))
        .expect("storage")
        .with_quota(Arc::new(ledger));
    let outside = TempDir::new().expect("outside");
    let alice = fx.home("alice");
    fs::create_dir(alice.join("d")).expect("mkdir");
    for name in ["a", "r"] {
        fs::write(alice.join("d").join(name), b"inside").expect("file");
    }
    for name in ["a", "r", "b", "u"] {
        fs::write(outside.path().join(name), b"OUTSIDE").expect("secret");
    }
    symlink(outside.path(), alice.join("l")).expect("link");
    let before = snapshot(outside.path());
    let swap = || {
        renameat_with(
            CWD,
            alice.join("d"),
            CWD,
            alice.join("l"),
            RenameFlags::EXCHANGE,
        )
        .expect("exchange");
    };
    // Always past the byte limit: refused after the file is opened, then rolled back.
    let too_much = vec![b'z'; usize::try_from(limit).expect("small") + 1];
    let cases: [(&str, WriteMode, &[u8]); 9] = [
        ("/d/a", WriteMode::Append, b"+"),
        ("/d/p", WriteMode::Append, b"new"),
        ("/d/e", WriteMode::Append, b""),
        ("/d/r", WriteMode::At(2), b"rest"),
        ("/d/s", WriteMode::Unique, b"unique"),
        ("/d/q", WriteMode::Append, &too_much),
        ("/d/a", WriteMode::Append, &too_much),
        ("/d/r", WriteMode::At(2), &too_much),
        ("/d/t", WriteMode::Unique, &too_much),
    ];
    for (path, mode, data) in cases {
        let mut upload = store.open_write("alice", &vp(path), mode).expect(path);
        swap();
        let written = match data {
            b"" => upload.complete(),
            _ => upload.write(data),
        };
        match written {
            Ok(()) => assert!(data.len() < 10, "{path}: the limit let it through"),
            Err(UploadError::Quota(_)) if data.len() > 10 => upload.roll_back(),
            Err(e) => panic!("{path}: {e}"),
        }
        drop(upload);
        swap();
    }
    for (path, mode) in [("/d/b", WriteMode::Append), ("/d/u", WriteMode::Unique)] {
        let mut upload = store.open_write("alice", &vp(path), mode).expect(path);
        upload.write(b"first").expect("first chunk");
        swap();
        let refused = upload.write(&too_much);
        assert!(matches!(refused, Err(UploadError::Quota(_))), "{refused:?}");
        upload.roll_back();
        drop(upload);
        swap();
    }
    assert_eq!(before, snapshot(outside.path()));
    let d = alice.join("d");
    assert_eq!(fx.read("alice/d/a"), b"inside+");
    assert_eq!(fx.read("alice/d/p"), b"new");
    assert_eq!(fx.read("alice/d/e"), b"");
    // "inrest", then the refused REST 2 kept what lies before its marker.
    assert_eq!(fx.read("alice/d/r"), b"in");
    assert_eq!(fx.read("alice/d/s"), b"unique");
    for gone in ["q", "t", "b", "u"] {
        assert!(!d.join(gone).exists(), "{gone} was not rolled back");
    }
    assert_eq!(
        store.quota("alice").expect("usage").usage,
        count_tree(&alice).expect("recount")
    );
}

#[test]
fn chmod_never_changes_the_home() {
    let fx = Fixture::new();
    let alice = fx.home("alice");
    symlink(".", alice.join("self")).expect("link");
    fx.write("alice/f", b"x");
    let mode = |p: &Path| fs::metadata(p).expect("stat").mode() & 0o777;
    for path in ["/", "/self"] {
        assert!(
            matches!(
                fx.store.chmod("alice", &vp(path), 0o000),
                Err(StoreError::PermissionDenied)
            ),
            "{path}"
        );
    }
    assert_eq!(mode(&alice), 0o700);
    // A file whose bits forbid every access can still be given them back.
    fx.store
        .chmod("alice", &vp("/f"), 0o000)
        .expect("chmod 000");
    assert_eq!(mode(&alice.join("f")), 0o000);
    fx.store
        .chmod("alice", &vp("/f"), 0o640)
        .expect("chmod back");
    assert_eq!(mode(&alice.join("f")), 0o640);
    let when = SystemTime::UNIX_EPOCH + std::time::Duration::from_secs(1_000_000_000);
    fx.store
        .set_modified("alice", &vp("/f"), when)
        .expect("mfmt");
    assert_eq!(
        fs::metadata(alice.join("f"))
            .expect("stat")
            .modified()
            .expect("mtime"),
        when
    );
    let before_1970 = SystemTime::UNIX_EPOCH - std::time::Duration::new(86_400, 500);
    fx.store
        .set_modified("alice", &vp("/f"), before_1970)
        .expect("mfmt 1969");
    assert_eq!(
        fs::metadata(alice.join("f"))
            .expect("stat")
            .modified()
            .expect("mtime"),
        before_1970
    );
}

#[test]
fn full_disk_and_long_names_have_their_own_errors() {
    let errno = |e: Errno| StoreError::from(io::Error::from(e));
    assert!(matches!(errno(Errno::NOSPC), StoreError::NoSpace));
    assert!(matches!(errno(Errno::DQUOT), StoreError::NoSpace));
    assert!(matches!(errno(Errno::NAMETOOLONG), StoreError::TooLong));
    assert!(matches!(errno(Errno::LOOP), StoreError::NotFound));
    assert!(matches!(errno(Errno::IO), StoreError::Io(_)));
}
