//! The backend conformance suite: each behaviour of the [`Storage`] contract written once, as
//! a function of a way to build a backend, and run against every backend (the macro at the
//! end makes one test per case and backend). Everything goes through `Arc<dyn Storage>`, as
//! the sessions use it; each case gets fresh homes ("alice", "bob") in a temporary directory
//! of its own (the local one's files, the S3 one's s3s-fs, and the quota ledgers).
//!
//! Two cases are about files written in place, which object storage cannot do (an APPE there
//! rewrites the object, seen at the commit, under the name it had at the open): they run on
//! the local and memory backends only. A case that needs a capability a backend lacks checks
//! the refusal instead.
//!
//! - this file: the backends, the helpers, and the cases of the tree (homes, listings,
//!   directories, renames, attributes, digests);
//! - [`uploads`]: the cases of uploads (staged and in place, commit, drop, abort, quota).

mod uploads;

use std::sync::Arc;
use std::time::{Duration, SystemTime};

use tempfile::TempDir;
use tokio::io::AsyncReadExt as _;

use super::local::LocalStorage;
use super::memory::MemoryStorage;
use super::s3::testing::S3TestServer;
use super::s3::{S3Settings, S3Storage};
use super::vpath::VPath;
use super::{ByteSink, ByteSource, ClientProbe, HashAlgo, Listing, PathLimits, Storage};
use super::{StoreError, WriteMode};
use crate::codec::entry::{FileInfo, FileKind};
use crate::codec::glob::NamePattern;
use crate::config::{Config, Quota};
use crate::quota::{QuotaLedger, Usage};

const ALICE: &str = "alice";
const BOB: &str = "bob";

/// What a case needs of its backend beyond the defaults.
#[derive(Debug, Clone, Copy, Default)]
struct Setup {
    listing_limit: Option<usize>,
    quota: Option<Quota>,
    keep_partial: bool,
    path_limits: Option<PathLimits>,
}

/// A backend built for one case, with the temporary directory that must outlive it.
struct Subject {
    storage: Arc<dyn Storage>,
    _server: Option<S3TestServer>,
    _dir: TempDir,
}

/// Builds a backend for a case.
type Make = fn(Setup) -> Subject;

fn ledger(dir: &TempDir, homes: &str, quota: Quota) -> QuotaLedger {
    QuotaLedger::new(
        dir.path().join("usage"),
        dir.path().join(homes),
        Arc::new(move |_: &str| quota),
    )
    .expect("ledger")
}

fn memory(setup: Setup) -> Subject {
    let dir = TempDir::new().expect("temp dir");
    let mut store = MemoryStorage::new().with_partial_uploads(setup.keep_partial);
    if let Some(max) = setup.listing_limit {
        store = store.with_listing_limit(max);
    }
    if let Some(limits) = setup.path_limits {
        store = store.with_path_limits(limits);
    }
    if let Some(quota) = setup.quota {
        // An empty homes directory: the ledger counts nothing there, as memory starts empty.
        store = store.with_quota(Arc::new(ledger(&dir, "none", quota)));
    }
    Subject {
        storage: Arc::new(store),
        _server: None,
        _dir: dir,
    }
}

fn local(setup: Setup) -> Subject {
    let dir = TempDir::new().expect("temp dir");
    let mut store = LocalStorage::new(dir.path().join("home"), dir.path().join("tmp"))
        .expect("storage")
        .with_partial_uploads(setup.keep_partial);
    if let Some(max) = setup.listing_limit {
        store = store.with_listing_limit(max);
    }
    if let Some(limits) = setup.path_limits {
        store = store.with_path_limits(limits);
    }
    if let Some(quota) = setup.quota {
        store = store.with_quota(Arc::new(ledger(&dir, "home", quota)));
    }
    Subject {
        storage: Arc::new(store),
        _server: None,
        _dir: dir,
    }
}

/// The S3 backend on an s3s-fs of the case's own (it starts in about 100 ms), keys under a
/// prefix, the ledger counting the bucket.
fn s3(setup: Setup) -> Subject {
    let dir = TempDir::new().expect("temp dir");
    let server = S3TestServer::start(&dir.path().join("s3")).expect("s3s-fs");
    server.create_bucket("ferry").expect("bucket");
    let mut config = Config::default();
    server.configure(&mut config, "ferry");
    config.s3_prefix = Some("homes".to_owned());
    let settings = S3Settings::from_config(&config, |_| None).expect("settings");
    let mut store = S3Storage::new(settings)
        .expect("client")
        .with_partial_uploads(setup.keep_partial);
    if let Some(max) = setup.listing_limit {
        store = store.with_listing_limit(max);
    }
    if let Some(limits) = setup.path_limits {
        store = store.with_path_limits(limits);
    }
    if let Some(quota) = setup.quota {
        let ledger = ledger(&dir, "none", quota).with_counter(store.usage_counter());
        store = store.with_quota(Arc::new(ledger));
    }
    Subject {
        storage: Arc::new(store),
        _server: Some(server),
        _dir: dir,
    }
}

/// A backend for `setup` with homes for alice and bob.
async fn subject(make: Make, setup: Setup) -> Subject {
    let subject = make(setup);
    for user in [ALICE, BOB] {
        subject.storage.create_home(user).await.expect("home");
    }
    subject
}

fn vp(path: &str) -> VPath {
    VPath::root().resolve(path).expect("valid test path")
}

fn pattern(text: &str) -> NamePattern {
    NamePattern::parse(text).expect("a wildcard pattern")
}

fn present() -> ClientProbe {
    ClientProbe::new(|| false)
}

fn names(infos: &[FileInfo]) -> Vec<&str> {
    infos.iter().map(|info| info.name.as_str()).collect()
}

/// Asserts that `result` failed with an error matching `pattern`.
macro_rules! refused {
    ($result:expr, $pattern:pat) => {{
        match $result {
            Ok(_) => panic!("{}: succeeded", stringify!($result)),
            Err(err) => assert!(matches!(err, $pattern), "{}: {err:?}", stringify!($result)),
        }
    }};
}
use refused;

async fn open(s: &dyn Storage, path: &str, mode: WriteMode) -> Box<dyn ByteSink> {
    s.open_write(ALICE, &vp(path), mode)
        .await
        .unwrap_or_else(|e| panic!("open_write {path}: {e:?}"))
}

/// Uploads `bytes` to alice's `path` (STOR) and commits.
async fn put(s: &dyn Storage, path: &str, bytes: &[u8]) {
    let mut sink = open(s, path, WriteMode::Replace).await;
    sink.write(bytes).await.expect("write");
    sink.commit(present()).await.expect("commit");
}

async fn read_all(mut source: Box<dyn ByteSource>) -> Vec<u8> {
    let mut bytes = Vec::new();
    source.read_to_end(&mut bytes).await.expect("read");
    bytes
}

/// Alice's `path` in full.
async fn get(s: &dyn Storage, path: &str) -> Vec<u8> {
    read_all(s.open_read(ALICE, &vp(path), 0).await.expect("open_read")).await
}

async fn exists(s: &dyn Storage, path: &str) -> bool {
    match s.stat(ALICE, &vp(path)).await {
        Ok(_) => true,
        Err(StoreError::NotFound) => false,
        Err(e) => panic!("stat {path}: {e:?}"),
    }
}

async fn list(s: &dyn Storage, path: &str) -> Listing {
    s.list(ALICE, &vp(path)).await.expect("list")
}

async fn usage(s: &dyn Storage) -> Usage {
    s.quota(ALICE).await.expect("quota").usage
}

// ---- the cases of the tree ----

async fn homes_are_apart_and_bad_names_have_none(make: Make) {
    let sub = subject(make, Setup::default()).await;
    let s = &*sub.storage;
    s.create_home(ALICE).await.expect("a second time is fine");
    for bad in ["", ".", "..", "a/b"] {
        refused!(s.create_home(bad).await, StoreError::NotFound);
        refused!(s.stat(bad, &VPath::root()).await, StoreError::NotFound);
    }
    refused!(s.list("carol", &VPath::root()).await, StoreError::NotFound);
    put(s, "/mine", b"alice's").await;
    refused!(s.stat(BOB, &vp("/mine")).await, StoreError::NotFound);
    assert!(
        s.list(BOB, &VPath::root())
            .await
            .expect("bob")
            .entries
            .is_empty()
    );
    let home = s.stat(ALICE, &VPath::root()).await.expect("home");
    assert_eq!((home.name.as_str(), home.kind), ("/", FileKind::Dir));
}

async fn stat_list_and_glob(make: Make) {
    let sub = subject(make, Setup::default()).await;
    let s = &*sub.storage;
    s.mkdir(ALICE, &vp("/d")).await.expect("mkdir");
    s.mkdir(ALICE, &vp("/d/sub")).await.expect("mkdir");
    put(s, "/d/b", b"bb").await;
    put(s, "/d/a", b"a").await;
    put(s, "/d/.hidden", b"h").await;

    let a = s.stat(ALICE, &vp("/d/a")).await.expect("stat");
    assert_eq!(
        (a.name.as_str(), a.kind, a.size, a.nlink),
        ("a", FileKind::File, 1, 1)
    );
    let b = s.stat(ALICE, &vp("/d/b")).await.expect("stat");
    assert_ne!(a.unique, b.unique);
    let d = s.stat(ALICE, &vp("/d")).await.expect("stat dir");
    assert_eq!((d.name.as_str(), d.kind), ("d", FileKind::Dir));
    refused!(s.stat(ALICE, &vp("/d/nope")).await, StoreError::NotFound);
    refused!(s.stat(ALICE, &vp("/nope/a")).await, StoreError::NotFound);
    refused!(
        s.stat(ALICE, &vp("/d/a/x")).await,
        StoreError::NotADirectory
    );
    refused!(
        s.stat(ALICE, &vp(&"n".repeat(256))).await,
        StoreError::TooLong
    );

    let listing = list(s, "/d").await;
    assert!(listing.is_dir && !listing.matched);
    assert_eq!(names(&listing.entries), [".hidden", "a", "b", "sub"]);
    let kinds: Vec<_> = listing.entries.iter().map(|e| e.kind).collect();
    assert_eq!(
        kinds,
        [
            FileKind::File,
            FileKind::File,
            FileKind::File,
            FileKind::Dir
        ]
    );
    assert_eq!(listing.entries[2].size, 2);
    let this = listing.this.expect("the directory itself");
    let parent = listing.parent.expect("its parent");
    assert_eq!((this.name.as_str(), this.kind), (".", FileKind::Dir));
    assert_eq!((parent.name.as_str(), parent.kind), ("..", FileKind::Dir));
    assert_eq!(this.unique, d.unique);
    assert_eq!(
        parent.unique,
        s.stat(ALICE, &VPath::root()).await.expect("/").unique
    );
    let root = list(s, "/").await;
    assert!(root.this.is_some() && root.parent.is_none());
    assert_eq!(names(&root.entries), ["d"]);

    let one = list(s, "/d/b").await;
    assert!(!one.is_dir && !one.matched && one.this.is_none() && one.parent.is_none());
    assert_eq!(names(&one.entries), ["b"]);
    assert_eq!(one.entries[0].size, 2);
    refused!(s.list(ALICE, &vp("/nope")).await, StoreError::NotFound);

    let all = s.glob(ALICE, &vp("/d"), &pattern("*")).await.expect("glob");
    assert!(all.matched && !all.is_dir && all.this.is_none());
    assert_eq!(
        names(&all.entries),
        ["a", "b", "sub"],
        "hidden names need a dot"
    );
    let some = s
        .glob(ALICE, &vp("/d"), &pattern("[b-z]*"))
        .await
        .expect("glob");
    assert_eq!(names(&some.entries), ["b", "sub"]);
    let dots = s
        .glob(ALICE, &vp("/d"), &pattern(".*"))
        .await
        .expect("glob");
    assert_eq!(names(&dots.entries), [".hidden"]);
    let none = s
        .glob(ALICE, &vp("/d"), &pattern("x*"))
        .await
        .expect("glob");
    assert!(none.entries.is_empty());
    refused!(
        s.glob(ALICE, &vp("/d/a"), &pattern("*")).await,
        StoreError::NotADirectory
    );
    refused!(
        s.glob(ALICE, &vp("/nope"), &pattern("*")).await,
        StoreError::NotFound
    );
}

async fn listings_past_the_limit_are_refused(make: Make) {
    let setup = Setup {
        listing_limit: Some(3),
        ..Setup::default()
    };
    let sub = subject(make, setup).await;
    let s = &*sub.storage;
    for name in ["/a", "/b", "/c"] {
        put(s, name, b"x").await;
    }
    assert_eq!(list(s, "/").await.entries.len(), 3, "at the limit");
    put(s, "/d", b"x").await;
    refused!(
        s.list(ALICE, &VPath::root()).await,
        StoreError::TooManyEntries(3)
    );
    // Every name read counts, matched or not.
    refused!(
        s.glob(ALICE, &VPath::root(), &pattern("a*")).await,
        StoreError::TooManyEntries(3)
    );
    // One file is still one entry.
    assert_eq!(names(&list(s, "/a").await.entries), ["a"]);
}

async fn directories(make: Make) {
    let sub = subject(make, Setup::default()).await;
    let s = &*sub.storage;
    s.mkdir(ALICE, &vp("/d")).await.expect("mkdir");
    refused!(s.mkdir(ALICE, &vp("/d")).await, StoreError::AlreadyExists);
    refused!(
        s.mkdir(ALICE, &VPath::root()).await,
        StoreError::AlreadyExists
    );
    refused!(s.mkdir(ALICE, &vp("/x/y")).await, StoreError::NotFound);
    s.mkdir(ALICE, &vp("/d/e")).await.expect("mkdir nested");
    assert!(
        list(s, "/d/e").await.entries.is_empty(),
        "an empty directory exists"
    );
    refused!(s.rmdir(ALICE, &vp("/d")).await, StoreError::NotEmpty);
    refused!(
        s.rmdir(ALICE, &VPath::root()).await,
        StoreError::PermissionDenied
    );
    refused!(s.remove(ALICE, &vp("/d")).await, StoreError::IsADirectory);
    refused!(
        s.remove(ALICE, &VPath::root()).await,
        StoreError::IsADirectory
    );
    put(s, "/d/e/f", b"x").await;
    refused!(
        s.mkdir(ALICE, &vp("/d/e/f")).await,
        StoreError::AlreadyExists
    );
    refused!(
        s.mkdir(ALICE, &vp("/d/e/f/g")).await,
        StoreError::NotADirectory
    );
    refused!(
        s.rmdir(ALICE, &vp("/d/e/f")).await,
        StoreError::NotADirectory
    );
    refused!(s.rmdir(ALICE, &vp("/d/e")).await, StoreError::NotEmpty);
    s.remove(ALICE, &vp("/d/e/f")).await.expect("remove");
    refused!(s.remove(ALICE, &vp("/d/e/f")).await, StoreError::NotFound);
    s.rmdir(ALICE, &vp("/d/e")).await.expect("rmdir");
    s.rmdir(ALICE, &vp("/d")).await.expect("rmdir");
    refused!(s.rmdir(ALICE, &vp("/d")).await, StoreError::NotFound);
    refused!(s.remove(ALICE, &vp("/d")).await, StoreError::NotFound);
    assert!(list(s, "/").await.entries.is_empty());
}

async fn renames(make: Make) {
    let sub = subject(make, Setup::default()).await;
    let s = &*sub.storage;
    put(s, "/a", b"aaa").await;
    put(s, "/b", b"b").await;
    s.rename(ALICE, &vp("/a"), &vp("/c")).await.expect("rename");
    assert!(!exists(s, "/a").await);
    assert_eq!(get(s, "/c").await, b"aaa");
    // Over an existing file: replaced, as rename(2) does.
    s.rename(ALICE, &vp("/c"), &vp("/b"))
        .await
        .expect("over a file");
    assert_eq!(get(s, "/b").await, b"aaa");
    assert!(!exists(s, "/c").await);
    s.rename(ALICE, &vp("/b"), &vp("/b"))
        .await
        .expect("onto itself");
    assert_eq!(get(s, "/b").await, b"aaa");

    // A directory moves with everything below it.
    s.mkdir(ALICE, &vp("/d")).await.expect("mkdir");
    s.mkdir(ALICE, &vp("/d/e")).await.expect("mkdir");
    put(s, "/d/e/f", b"deep").await;
    s.mkdir(ALICE, &vp("/t")).await.expect("mkdir");
    s.rename(ALICE, &vp("/d"), &vp("/t/moved"))
        .await
        .expect("move a tree");
    assert_eq!(get(s, "/t/moved/e/f").await, b"deep");
    assert!(!exists(s, "/d").await);
    refused!(
        s.rename(ALICE, &vp("/t"), &vp("/t/moved/e/t")).await,
        StoreError::InvalidName
    );
    refused!(
        s.rename(ALICE, &vp("/t/moved"), &vp("/t/moved/x")).await,
        StoreError::InvalidName
    );
    refused!(
        s.rename(ALICE, &VPath::root(), &vp("/x")).await,
        StoreError::PermissionDenied
    );
    refused!(
        s.rename(ALICE, &vp("/b"), &VPath::root()).await,
        StoreError::PermissionDenied
    );
    refused!(
        s.rename(ALICE, &vp("/nope"), &vp("/x")).await,
        StoreError::NotFound
    );
    refused!(
        s.rename(ALICE, &vp("/b"), &vp("/nope/x")).await,
        StoreError::NotFound
    );
    // Kinds must agree, and a directory replaced must be empty.
    refused!(
        s.rename(ALICE, &vp("/b"), &vp("/t")).await,
        StoreError::IsADirectory
    );
    refused!(
        s.rename(ALICE, &vp("/t"), &vp("/b")).await,
        StoreError::NotADirectory
    );
    s.mkdir(ALICE, &vp("/empty")).await.expect("mkdir");
    refused!(
        s.rename(ALICE, &vp("/empty"), &vp("/t")).await,
        StoreError::NotEmpty
    );
    s.rename(ALICE, &vp("/t"), &vp("/empty"))
        .await
        .expect("over an empty dir");
    assert_eq!(get(s, "/empty/moved/e/f").await, b"deep");
    assert_eq!(names(&list(s, "/").await.entries), ["b", "empty"]);
    // Bob's tree is another tree.
    refused!(
        s.rename(BOB, &vp("/b"), &vp("/c")).await,
        StoreError::NotFound
    );
}

async fn paths_past_the_limits_are_refused(make: Make) {
    let setup = Setup {
        path_limits: Some(PathLimits {
            max_depth: 3,
            max_length: 12,
        }),
        ..Setup::default()
    };
    let sub = subject(make, setup).await;
    let s = &*sub.storage;
    for dir in ["/a", "/a/b", "/a/b/c"] {
        s.mkdir(ALICE, &vp(dir)).await.expect("within the limits");
    }
    refused!(s.mkdir(ALICE, &vp("/a/b/c/d")).await, StoreError::TooLong);
    refused!(
        s.open_write(ALICE, &vp("/a/b/c/f"), WriteMode::Replace)
            .await,
        StoreError::TooLong
    );
    refused!(
        s.open_write(ALICE, &vp("/a/b/c/f"), WriteMode::Unique)
            .await,
        StoreError::TooLong
    );
    refused!(
        s.mkdir(ALICE, &vp("/abcdefghijkl")).await,
        StoreError::TooLong
    );
    refused!(
        s.mkdir(ALICE, &vp(&"n".repeat(256))).await,
        StoreError::TooLong
    );
    s.mkdir(ALICE, &vp("/x")).await.expect("x");
    s.mkdir(ALICE, &vp("/x/y")).await.expect("x/y");
    refused!(
        s.rename(ALICE, &vp("/x"), &vp("/a/b/x")).await,
        StoreError::TooLong
    );
    assert!(exists(s, "/x/y").await, "nothing moved");
    s.rename(ALICE, &vp("/a/b"), &vp("/b")).await.expect("up");
    s.rename(ALICE, &vp("/x"), &vp("/z"))
        .await
        .expect("sibling");
    refused!(
        s.rename(ALICE, &vp("/z"), &vp("/zzzzzzzzzzz")).await,
        StoreError::TooLong
    );
    s.rename(ALICE, &vp("/z"), &vp("/zzzzzzzzz"))
        .await
        .expect("as long as allowed");
    assert!(exists(s, "/zzzzzzzzz/y").await);
}

async fn times_and_modes(make: Make) {
    let sub = subject(make, Setup::default()).await;
    let s = &*sub.storage;
    put(s, "/f", b"x").await;
    s.mkdir(ALICE, &vp("/d")).await.expect("mkdir");
    let when = SystemTime::UNIX_EPOCH + Duration::from_secs(1_000_000_000);
    let caps = s.capabilities();
    if caps.set_mtime {
        for path in ["/f", "/d", "/"] {
            s.set_modified(ALICE, &vp(path), when)
                .await
                .expect("set_modified");
            assert_eq!(
                s.stat(ALICE, &vp(path)).await.expect("stat").modified,
                when,
                "{path}"
            );
        }
        let listed = list(s, "/").await;
        assert_eq!(listed.this.expect("home").modified, when);
        refused!(
            s.set_modified(ALICE, &vp("/nope"), when).await,
            StoreError::NotFound
        );
    } else {
        refused!(
            s.set_modified(ALICE, &vp("/f"), when).await,
            StoreError::PermissionDenied
        );
    }
    if !caps.chmod {
        refused!(
            s.chmod(ALICE, &vp("/f"), 0o600).await,
            StoreError::PermissionDenied
        );
        assert_eq!(get(s, "/f").await, b"x");
        return;
    }
    s.chmod(ALICE, &vp("/f"), 0o600).await.expect("chmod");
    assert_eq!(s.stat(ALICE, &vp("/f")).await.expect("stat").mode, 0o600);
    s.chmod(ALICE, &vp("/d"), 0o7751).await.expect("chmod");
    assert_eq!(
        s.stat(ALICE, &vp("/d")).await.expect("stat").mode,
        0o751,
        "only 0o777"
    );
    refused!(
        s.chmod(ALICE, &VPath::root(), 0o777).await,
        StoreError::PermissionDenied
    );
    refused!(
        s.chmod(ALICE, &vp("/nope"), 0o777).await,
        StoreError::NotFound
    );
    // A read-only file is still the server's to read.
    s.chmod(ALICE, &vp("/f"), 0o400).await.expect("chmod");
    assert_eq!(get(s, "/f").await, b"x");
}

async fn digests_are_the_known_ones(make: Make) {
    let sub = subject(make, Setup::default()).await;
    let s = &*sub.storage;
    put(s, "/abc", b"abc").await;
    put(s, "/empty", b"").await;
    let known = [
        (
            HashAlgo::Sha256,
            "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad",
        ),
        (
            HashAlgo::Sha512,
            "ddaf35a193617abacc417349ae20413112e6fa4e89a97ea20a9eeee64b55d39a\
             2192992a274fc1a836ba3c23a3feebbd454d4423643ce80e2a9ac94fa54ca49f",
        ),
        (HashAlgo::Sha1, "a9993e364706816aba3e25717850c26c9cd0d89d"),
        (HashAlgo::Md5, "900150983cd24fb0d6963f7d28e17f72"),
        (HashAlgo::Crc32, "352441c2"),
    ];
    for (algo, hex) in known {
        let got = s.hash(ALICE, &vp("/abc"), algo).await.expect("hash");
        assert_eq!(got, (hex.to_owned(), 3), "{}", algo.name());
    }
    let empty = s
        .hash(ALICE, &vp("/empty"), HashAlgo::Sha256)
        .await
        .expect("hash");
    assert_eq!(
        empty,
        (
            "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855".to_owned(),
            0
        )
    );
    // More than one chunk of the digest's reads.
    let big: Vec<u8> = (0..600_000u32).map(|i| (i % 253) as u8).collect();
    put(s, "/big", &big).await;
    let want = HashAlgo::Md5.digest(&mut &big[..]).expect("memory");
    assert_eq!(
        s.hash(ALICE, &vp("/big"), HashAlgo::Md5)
            .await
            .expect("hash"),
        (want, 600_000)
    );
    s.mkdir(ALICE, &vp("/d")).await.expect("mkdir");
    refused!(
        s.hash(ALICE, &vp("/d"), HashAlgo::Sha256).await,
        StoreError::IsADirectory
    );
    refused!(
        s.hash(ALICE, &vp("/nope"), HashAlgo::Sha256).await,
        StoreError::NotFound
    );
}

/// Makes one test per case for each backend, in a module per backend; the cases after `;`
/// are about files written in place, which S3 does not have.
macro_rules! conformance {
    ($($case:ident),* $(,)?; $($in_place:ident),* $(,)?) => {
        mod memory_backend {
            $(#[tokio::test]
            async fn $case() {
                super::$case(super::memory).await;
            })*
            $(#[tokio::test]
            async fn $in_place() {
                super::$in_place(super::memory).await;
            })*
        }
        mod local_backend {
            $(#[tokio::test]
            async fn $case() {
                super::$case(super::local).await;
            })*
            $(#[tokio::test]
            async fn $in_place() {
                super::$in_place(super::local).await;
            })*
        }
        mod s3_backend {
            $(#[tokio::test]
            async fn $case() {
                super::$case(super::s3).await;
            })*
        }
    };
}

use uploads::*;

conformance! {
    homes_are_apart_and_bad_names_have_none,
    stat_list_and_glob,
    listings_past_the_limit_are_refused,
    directories,
    renames,
    paths_past_the_limits_are_refused,
    times_and_modes,
    digests_are_the_known_ones,
    replace_is_seen_only_after_the_commit,
    readers_keep_the_file_they_opened,
    concurrent_replacements_never_mix,
    a_commit_checks_the_target_again,
    interrupted_uploads_are_dropped,
    interrupted_uploads_of_new_names_are_kept,
    in_place_uploads_change_nothing_before_their_first_byte,
    a_second_in_place_writer_is_busy,
    restart_offsets,
    unique_names,
    quota_refusals_leave_nothing,
    the_file_limit_refuses_new_names;
    in_place_writes_are_seen_as_they_land,
    in_place_writes_are_charged_while_their_file_is_in_the_tree,
}
