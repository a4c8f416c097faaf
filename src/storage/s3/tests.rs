//! The S3 backend's own behaviour against a real S3 server (s3s-fs on loopback): multipart
//! uploads and what an abort or an interruption leaves, rewrites, STOU, directories written
//! by other tools, renames that fail midway, paginated listings, a server that goes away,
//! and usage recounted from the bucket. The Storage contract itself is in the conformance
//! suite.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant};

use futures::TryStreamExt as _;
use tempfile::TempDir;
use tokio::io::AsyncReadExt as _;

use super::testing::S3TestServer;
use super::write::{PART, part_size};
use super::{S3Settings, S3Storage};
use crate::config::{Config, Quota};
use crate::quota::{QuotaLedger, Usage};
use crate::storage::vpath::VPath;
use crate::storage::{Abort, ByteSink, ClientProbe, Storage, StoreError, WriteMode};

const ALICE: &str = "alice";
const BUCKET: &str = "ferry";

/// A bucket on an s3s-fs of its own, and a store on it (keys under `homes/`).
struct Bucket {
    server: S3TestServer,
    dir: TempDir,
    store: S3Storage,
}

impl Bucket {
    fn new(tweak: impl FnOnce(&mut S3Settings)) -> Bucket {
        let dir = TempDir::new().expect("temp dir");
        let server = S3TestServer::start(&dir.path().join("s3")).expect("s3s-fs");
        server.create_bucket(BUCKET).expect("bucket");
        let mut config = Config::default();
        server.configure(&mut config, BUCKET);
        config.s3_prefix = Some("homes".to_owned());
        let mut settings = S3Settings::from_config(&config, |_| None).expect("settings");
        tweak(&mut settings);
        let store = S3Storage::new(settings).expect("client");
        Bucket { server, dir, store }
    }

    /// The bucket, ready, with a quota ledger (1 MiB) under `usage/` that recounts it.
    async fn with_ledger(self) -> (Bucket, Arc<QuotaLedger>) {
        let limits = Arc::new(|_: &str| Quota {
            bytes: Some(1 << 20),
            files: None,
        });
        let (usage, none) = (self.dir.path().join("usage"), self.dir.path().join("none"));
        let ledger = QuotaLedger::new(usage, none, limits)
            .expect("ledger")
            .with_counter(self.store.usage_counter());
        let ledger = Arc::new(ledger);
        let b = Bucket {
            store: self.store.clone().with_quota(Arc::clone(&ledger)),
            ..self
        };
        (b.ready().await, ledger)
    }

    async fn ready(self) -> Bucket {
        self.store.create_home(ALICE).await.expect("home");
        self
    }

    /// Where an object of alice's lies on the server's disk.
    fn disk(&self, path: &str) -> PathBuf {
        self.server
            .bucket_dir(BUCKET)
            .join("homes")
            .join(ALICE)
            .join(path.trim_start_matches('/'))
    }

    /// The server's files of multipart uploads in progress (parts and upload records).
    fn upload_files(&self) -> Vec<String> {
        let root = self.dir.path().join("s3");
        let mut found = Vec::new();
        for entry in std::fs::read_dir(root).expect("server root") {
            let name = entry
                .expect("entry")
                .file_name()
                .to_string_lossy()
                .into_owned();
            if name.starts_with(".upload") {
                found.push(name);
            }
        }
        found
    }

    async fn open(&self, path: &str, mode: WriteMode) -> Box<dyn ByteSink> {
        self.store
            .open_write(ALICE, &vp(path), mode)
            .await
            .unwrap_or_else(|e| panic!("open_write {path}: {e:?}"))
    }

    async fn put(&self, path: &str, bytes: &[u8]) {
        let mut sink = self.open(path, WriteMode::Replace).await;
        sink.write(bytes).await.expect("write");
        sink.commit(present()).await.expect("commit");
    }

    async fn get_from(&self, path: &str, offset: u64) -> Vec<u8> {
        let mut source = self
            .store
            .open_read(ALICE, &vp(path), offset)
            .await
            .unwrap_or_else(|e| panic!("open_read {path}: {e:?}"));
        let mut bytes = Vec::new();
        source.read_to_end(&mut bytes).await.expect("read");
        bytes
    }

    async fn get(&self, path: &str) -> Vec<u8> {
        self.get_from(path, 0).await
    }

    async fn names(&self, path: &str) -> Vec<String> {
        let listing = self.store.list(ALICE, &vp(path)).await.expect("list");
        listing.entries.into_iter().map(|e| e.name).collect()
    }
}

fn vp(path: &str) -> VPath {
    VPath::root().resolve(path).expect("valid test path")
}

fn present() -> ClientProbe {
    ClientProbe::new(|| false)
}

/// `n` bytes that differ from part to part and within each.
fn pattern(n: usize, seed: u8) -> Vec<u8> {
    (0..n)
        .map(|i| (i % 251) as u8 ^ seed ^ (i / PART) as u8)
        .collect()
}

/// Writes `bytes` in chunks of 64 KiB, as a data connection delivers them.
async fn write_all(sink: &mut Box<dyn ByteSink>, bytes: &[u8]) {
    for chunk in bytes.chunks(64 * 1024) {
        sink.write(chunk).await.expect("write");
    }
}

fn write_file(path: &Path, bytes: &[u8]) {
    std::fs::create_dir_all(path.parent().expect("parent")).expect("mkdir");
    std::fs::write(path, bytes).expect("write");
}

#[tokio::test]
async fn a_multipart_upload_is_byte_exact_and_unseen_until_its_commit() {
    let b = Bucket::new(|_| {}).ready().await;
    b.put("/f", b"old").await;
    let bytes = pattern(2 * PART + PART / 2, 7);
    let mut sink = b.open("/f", WriteMode::Replace).await;
    write_all(&mut sink, &bytes).await;
    // A multipart upload is open on the server (two parts sent), the rest in the sink's
    // buffer; readers see the old file.
    assert!(!b.upload_files().is_empty(), "no multipart upload");
    assert_eq!(b.get("/f").await, b"old");
    sink.commit(present()).await.expect("commit");
    assert!(
        b.get("/f").await == bytes,
        "the object differs from the upload"
    );
    let info = b.store.stat(ALICE, &vp("/f")).await.expect("stat");
    assert_eq!(info.size, bytes.len() as u64);
    assert!(b.upload_files().is_empty(), "{:?}", b.upload_files());
    // A ranged read across part boundaries.
    let from = PART as u64 - 10;
    assert!(b.get_from("/f", from).await == bytes[PART - 10..]);
}

#[tokio::test]
async fn an_aborted_or_dropped_upload_leaves_no_parts_and_the_old_object() {
    let b = Bucket::new(|s| s.rewrite_max_bytes = 64 << 20)
        .ready()
        .await;
    b.put("/f", b"old").await;
    for why in [Some(Abort::Refused), Some(Abort::Failed), None] {
        let mut sink = b.open("/f", WriteMode::Replace).await;
        write_all(&mut sink, &pattern(2 * PART + 1, 1)).await;
        assert!(!b.upload_files().is_empty(), "parts were sent");
        match why {
            Some(why) => sink.abort(why).await,
            None => {
                drop(sink);
                b.store.settled(ALICE).await;
            }
        }
        assert!(
            b.upload_files().is_empty(),
            "{why:?}: {:?}",
            b.upload_files()
        );
        assert_eq!(b.get("/f").await, b"old", "{why:?}");
    }
    // A refused rewrite leaves the object as it was too.
    let mut sink = b.open("/f", WriteMode::Append).await;
    write_all(&mut sink, &pattern(PART + 1, 2)).await;
    sink.abort(Abort::Refused).await;
    assert!(b.upload_files().is_empty(), "{:?}", b.upload_files());
    assert_eq!(b.get("/f").await, b"old");
}

#[tokio::test]
async fn an_interrupted_upload_of_a_new_name_keeps_what_arrived() {
    let b = Bucket::new(|_| {});
    let b = Bucket {
        store: b.store.clone().with_partial_uploads(true),
        ..b
    }
    .ready()
    .await;
    let bytes = pattern(PART + 1000, 3);
    let mut sink = b.open("/new", WriteMode::Replace).await;
    write_all(&mut sink, &bytes).await;
    drop(sink);
    assert!(b.get("/new").await == bytes, "the kept bytes differ");
    // Cancelled (ABOR) while a write waits for its parts in flight: every byte it took
    // still lands and is kept.
    let long = pattern(3 * PART, 5);
    let mut sink = b.open("/cut", WriteMode::Replace).await;
    sink.write(&long[..2 * PART])
        .await
        .expect("two parts on their way");
    let cut = tokio::time::timeout(Duration::from_millis(1), sink.write(&long[2 * PART..]));
    assert!(
        cut.await.is_err(),
        "the parts took under 1 ms: nothing was cancelled"
    );
    drop(sink);
    assert!(
        b.get("/cut").await == long,
        "the bytes of a cancelled write differ"
    );
    assert!(b.upload_files().is_empty(), "{:?}", b.upload_files());
    // Resumed with REST+STOR from where it stopped.
    let rest = pattern(1000, 4);
    let mut sink = b.open("/new", WriteMode::At(bytes.len() as u64)).await;
    write_all(&mut sink, &rest).await;
    sink.commit(present()).await.expect("commit");
    let whole = [bytes, rest].concat();
    assert!(b.get("/new").await == whole, "the resumed file differs");
}

#[tokio::test]
async fn rewrites_keep_their_bytes_within_the_limit_and_are_refused_beyond_it() {
    let limit = (PART + PART / 2) as u64;
    let b = Bucket::new(|s| s.rewrite_max_bytes = limit).ready().await;
    let first = pattern(PART + 100, 5);
    b.put("/f", &first).await;
    let more = pattern(3000, 6);
    let mut sink = b.open("/f", WriteMode::Append).await;
    write_all(&mut sink, &more).await;
    sink.commit(present()).await.expect("appe");
    let appended = [first.clone(), more].concat();
    assert!(b.get("/f").await == appended, "APPE differs");
    let mut sink = b.open("/f", WriteMode::At(PART as u64 + 1)).await;
    sink.write(b"tail").await.expect("write");
    sink.commit(present()).await.expect("rest+stor");
    let resumed = [&appended[..=PART], b"tail"].concat();
    assert!(b.get("/f").await == resumed, "REST+STOR differs");

    // The old object went before the first byte: its kept bytes cannot be read, and the
    // rewrite fails without putting anything in place.
    let mut sink = b.open("/f", WriteMode::Append).await;
    b.store.remove(ALICE, &vp("/f")).await.expect("remove");
    match sink.write(b"x").await {
        Err(StoreError::NotFound) => {}
        other => panic!("{other:?}"),
    }
    drop(sink);
    match b.store.stat(ALICE, &vp("/f")).await {
        Err(StoreError::NotFound) => {}
        other => panic!("{other:?}"),
    }
    assert!(b.upload_files().is_empty(), "{:?}", b.upload_files());

    b.put("/big", &pattern(limit as usize + 1, 7)).await;
    for mode in [WriteMode::Append, WriteMode::At(1)] {
        match b.store.open_write(ALICE, &vp("/big"), mode).await {
            Err(StoreError::TooBigToRewrite(max)) => assert_eq!(max, limit),
            other => panic!("{mode:?}: {:?}", other.map(|_| ())),
        }
    }
}

#[tokio::test]
async fn stou_never_overwrites_a_name_that_appeared_meanwhile() {
    let b = Bucket::new(|_| {}).ready().await;
    let mut sink = b.open("/u", WriteMode::Unique).await;
    assert_eq!(sink.target(), &vp("/u"));
    sink.write(b"mine").await.expect("write");
    // Another server (or tool) writes the name before the commit.
    write_file(&b.disk("/u"), b"theirs");
    match sink.commit(present()).await {
        Err(StoreError::AlreadyExists) => {}
        other => panic!("{other:?}"),
    }
    assert_eq!(b.get("/u").await, b"theirs");
    // The create-only PUT itself: s3s-fs honours If-None-Match.
    let key = b.store.key(ALICE, &vp("/u")).expect("key");
    match b.store.put_new(&key).await {
        Err(StoreError::AlreadyExists) => {}
        other => panic!("{other:?}"),
    }
    assert_eq!(b.get("/u").await, b"theirs");
    let next = b.open("/u", WriteMode::Unique).await;
    assert_eq!(next.target(), &vp("/u.1"));
}

#[tokio::test]
async fn directories_of_other_tools_and_the_marker_name() {
    let b = Bucket::new(|_| {}).ready().await;
    // A key written by another tool makes its directories.
    write_file(&b.disk("/ext/deep/file"), b"x");
    assert_eq!(b.names("/").await, ["ext"]);
    assert_eq!(b.names("/ext").await, ["deep"]);
    assert_eq!(b.get("/ext/deep/file").await, b"x");
    match b.store.rmdir(ALICE, &vp("/ext")).await {
        Err(StoreError::NotEmpty) => {}
        other => panic!("{other:?}"),
    }
    // Without a marker, the directory goes with its last key (no empty directories).
    b.store
        .remove(ALICE, &vp("/ext/deep/file"))
        .await
        .expect("remove");
    assert!(b.names("/").await.is_empty());
    // The marker's name is not a client's to see or use.
    b.store.mkdir(ALICE, &vp("/d")).await.expect("mkdir");
    assert!(b.disk("/d/.ferry-dir").is_file());
    assert!(b.names("/d").await.is_empty());
    for path in ["/d/.ferry-dir", "/.ferry-dir"] {
        match b.store.stat(ALICE, &vp(path)).await {
            Err(StoreError::InvalidName) => {}
            other => panic!("{path}: {other:?}"),
        }
        match b
            .store
            .open_write(ALICE, &vp(path), WriteMode::Replace)
            .await
        {
            Err(StoreError::InvalidName) => {}
            other => panic!("{path}: {:?}", other.map(|_| ())),
        }
    }
    // Names with characters URLs and signatures must escape.
    for name in ["/a b", "/100%", "/what?#", "/star*[x]", "/ünï"] {
        b.put(name, name.as_bytes()).await;
        assert_eq!(b.get(name).await, name.as_bytes(), "{name}");
    }
    assert_eq!(
        b.names("/").await,
        ["100%", "a b", "d", "star*[x]", "what?#", "ünï"]
    );
    // A key object_store cannot parse (another tool's: a control character, an empty
    // segment) fails the listing of its directory with a local error, nothing worse; the
    // directories around it list as before.
    write_file(&b.disk("/d/bad\u{1}name"), b"x");
    match b.store.list(ALICE, &vp("/d")).await {
        Err(StoreError::Io(_)) => {}
        other => panic!("{other:?}"),
    }
    assert_eq!(b.names("/").await.len(), 6);
    match b.store.list(ALICE, &vp("/nope")).await {
        Err(StoreError::NotFound) => {}
        other => panic!("{other:?}"),
    }
}

#[tokio::test]
async fn a_directory_rename_that_fails_midway_leaves_every_object_in_place() {
    let b = Bucket::new(|s| s.max_rename_objects = 5).ready().await;
    b.store.mkdir(ALICE, &vp("/d")).await.expect("mkdir");
    b.put("/d/a", b"a").await;
    b.put("/d/z", b"z").await;
    // The copy of d/z cannot land: a directory lies at its key on the server's disk.
    std::fs::create_dir_all(b.disk("/e/z")).expect("mkdir on disk");
    match b.store.rename(ALICE, &vp("/d"), &vp("/e")).await {
        Err(StoreError::Io(_)) => {}
        other => panic!("{other:?}"),
    }
    assert_eq!(b.get("/d/a").await, b"a");
    assert_eq!(b.get("/d/z").await, b"z");
    assert!(!b.disk("/e/a").exists(), "the copies made are removed");
    std::fs::remove_dir_all(b.disk("/e")).expect("clean up");
    b.store
        .rename(ALICE, &vp("/d"), &vp("/e"))
        .await
        .expect("rename");
    assert_eq!(b.names("/e").await, ["a", "z"]);
    assert_eq!(b.names("/").await, ["e"]);
    // Past the rename limit: refused before anything moves.
    for n in 0..5 {
        b.put(&format!("/e/{n}"), b"n").await;
    }
    match b.store.rename(ALICE, &vp("/e"), &vp("/f")).await {
        Err(StoreError::TooManyToRename(5)) => {}
        other => panic!("{other:?}"),
    }
    b.store
        .rename(ALICE, &vp("/e"), &vp("/e"))
        .await
        .expect("renaming a directory past the limit onto itself changes nothing");
    assert_eq!(b.names("/").await, ["e"]);
}

#[tokio::test]
async fn listings_read_every_page_and_stop_past_the_limit() {
    let b = Bucket::new(|_| {});
    let b = Bucket {
        store: b.store.clone().with_listing_limit(1500),
        ..b
    }
    .ready()
    .await;
    // More than one page (1000 keys) of names.
    for n in 0..1200 {
        write_file(&b.disk(&format!("/big/f{n:04}")), b"x");
    }
    let names = b.names("/big").await;
    assert_eq!(names.len(), 1200);
    assert_eq!(
        (names[0].as_str(), names[1199].as_str()),
        ("f0000", "f1199")
    );
    let limited = Bucket {
        store: b.store.clone().with_listing_limit(1100),
        ..b
    };
    match limited.store.list(ALICE, &vp("/big")).await {
        Err(StoreError::TooManyEntries(1100)) => {}
        other => panic!("{:?}", other.map(|l| l.entries.len())),
    }
}

#[tokio::test]
async fn streamed_listings_come_a_page_at_a_time_in_key_order_past_the_limit() {
    let b = Bucket::new(|_| {});
    let b = Bucket {
        store: b.store.clone().with_listing_page(2).with_listing_limit(1),
        ..b
    }
    .ready()
    .await;
    b.store.mkdir(ALICE, &vp("/d")).await.expect("mkdir");
    // Keys in byte order: `.ferry-dir` (the marker), `a.txt`, `a/` (a directory), `b`, `c`.
    for path in ["/d/a.txt", "/d/a/x", "/d/b", "/d/c"] {
        write_file(&b.disk(path), b"x");
    }
    let found = b
        .store
        .list_pages(ALICE, &vp("/d"))
        .await
        .expect("list_pages");
    assert!(found.is_dir && !found.matched);
    assert_eq!(found.this.map(|d| d.name).as_deref(), Some("."));
    assert_eq!(found.parent.map(|p| p.name).as_deref(), Some(".."));
    let pages: Vec<Vec<String>> = found
        .pages
        .map_ok(|page| page.into_iter().map(|e| e.name).collect())
        .try_collect()
        .await
        .expect("pages");
    // Each page sorted by name, the marker left out; `a` after `a.txt`, across pages.
    assert_eq!(pages, [vec!["a.txt"], vec!["a", "b"], vec!["c"]]);
    // The whole listing, under the same limit, is refused.
    assert!(matches!(
        b.store.list(ALICE, &vp("/d")).await,
        Err(StoreError::TooManyEntries(1))
    ));
    // A file is a one-entry listing, a missing path an error before any page.
    let file = b.store.list_pages(ALICE, &vp("/d/b")).await.expect("file");
    assert!(!file.is_dir);
    let missing = b.store.list_pages(ALICE, &vp("/nowhere")).await;
    assert!(matches!(missing, Err(StoreError::NotFound)));
}

#[tokio::test]
async fn a_server_that_goes_away_is_a_local_error_in_bounded_time() {
    let mut b = Bucket::new(|_| {}).ready().await;
    b.put("/f", b"old").await;
    let mut sink = b.open("/g", WriteMode::Replace).await;
    sink.write(b"before").await.expect("write");
    b.server.kill();
    let started = Instant::now();
    match sink.commit(present()).await {
        Err(StoreError::Io(_)) => {}
        other => panic!("{other:?}"),
    }
    match b.store.stat(ALICE, &vp("/f")).await {
        Err(StoreError::Io(_)) => {}
        other => panic!("{other:?}"),
    }
    assert!(
        started.elapsed() < Duration::from_secs(60),
        "{:?}",
        started.elapsed()
    );
}

#[tokio::test]
async fn usage_is_recounted_from_the_bucket() {
    let (b, ledger) = Bucket::new(|_| {}).with_ledger().await;
    let usage_dir = b.dir.path().join("usage");
    b.store.mkdir(ALICE, &vp("/d")).await.expect("mkdir");
    b.put("/d/f", b"12345").await;
    let counted = Usage {
        bytes: 4096 + 5,
        files: 2,
    };
    assert_eq!(b.store.quota(ALICE).await.expect("quota").usage, counted);
    // Lost ledger: counted again from the bucket, with what another tool wrote.
    std::fs::remove_file(usage_dir.join("alice.json")).expect("ledger file");
    write_file(&b.disk("/other"), b"abc");
    let recounted = Usage {
        bytes: 4096 + 8,
        files: 3,
    };
    assert_eq!(b.store.quota(ALICE).await.expect("quota").usage, recounted);
    let from_admin = tokio::task::spawn_blocking(move || ledger.recount(ALICE))
        .await
        .expect("join")
        .expect("recount");
    assert_eq!(from_admin, recounted);
}

#[tokio::test]
async fn an_append_fails_rather_than_undo_a_stor_committed_meanwhile() {
    let b = Bucket::new(|_| {}).ready().await;
    b.put("/f", b"old").await;
    let mut appe = b.open("/f", WriteMode::Append).await;
    appe.write(b"+more").await.expect("write");
    // Another session of the same user replaces the file and gets its 226.
    b.put("/f", b"new from another session").await;
    let result = appe.commit(present()).await;
    assert!(matches!(result, Err(StoreError::Io(_))), "{result:?}");
    assert_eq!(b.get("/f").await, b"new from another session");
    assert!(b.upload_files().is_empty(), "{:?}", b.upload_files());
}

#[tokio::test]
async fn an_append_fails_rather_than_resurrect_a_file_removed_meanwhile() {
    let b = Bucket::new(|_| {}).ready().await;
    b.put("/f", b"old").await;
    let mut appe = b.open("/f", WriteMode::Append).await;
    appe.write(b"+more").await.expect("write");
    b.store
        .remove(ALICE, &vp("/f"))
        .await
        .expect("DELE from another session");
    let result = appe.commit(present()).await;
    assert!(matches!(result, Err(StoreError::Io(_))), "{result:?}");
    let after = b.store.stat(ALICE, &vp("/f")).await.map(|i| i.size);
    assert!(
        matches!(after, Err(StoreError::NotFound)),
        "DELE undone: f is back ({after:?})"
    );
}

#[tokio::test]
async fn dropping_a_sink_does_not_block_its_thread() {
    let mut b = Bucket::new(|_| {}).ready().await;
    let store = b.store.clone().with_partial_uploads(true);
    let mut sink = store
        .open_write(ALICE, &vp("/new"), WriteMode::Replace)
        .await
        .expect("open");
    sink.write(b"some bytes").await.expect("write");
    // The server hangs instead of refusing: a listener on its port that never answers.
    let addr = b.server.endpoint().trim_start_matches("http://").to_owned();
    b.server.kill();
    let hole = std::net::TcpListener::bind(&addr).expect("bind the server's port");
    std::thread::spawn(move || {
        let mut held = Vec::new();
        for conn in hole.incoming().take(64) {
            held.push(conn);
        }
    });
    let started = Instant::now();
    drop(sink);
    let took = started.elapsed();
    assert!(
        took < Duration::from_secs(5),
        "drop blocked the (shared, current-thread) runtime thread for {took:?}"
    );
}

#[tokio::test]
async fn a_failed_rename_into_an_empty_directory_keeps_that_directory() {
    let b = Bucket::new(|_| {}).ready().await;
    b.store.mkdir(ALICE, &vp("/d")).await.expect("mkdir");
    b.put("/d/a", b"a").await;
    b.put("/d/z", b"z").await;
    b.store.mkdir(ALICE, &vp("/e")).await.expect("mkdir");
    std::fs::create_dir_all(b.disk("/e/z")).expect("mkdir on disk");
    match b.store.rename(ALICE, &vp("/d"), &vp("/e")).await {
        Err(StoreError::Io(_)) => {}
        other => panic!("{other:?}"),
    }
    assert_eq!(b.get("/d/a").await, b"a");
    b.store
        .stat(ALICE, &vp("/e"))
        .await
        .expect("the empty destination directory survives a failed rename");
    assert!(b.names("/e").await.is_empty(), "nothing copied stays");
    // Once it can succeed, the rename moves everything and the directory counts once.
    std::fs::remove_dir(b.disk("/e/z")).expect("rmdir on disk");
    b.store
        .rename(ALICE, &vp("/d"), &vp("/e"))
        .await
        .expect("rename");
    assert_eq!(b.names("/e").await, ["a", "z"]);
    assert_eq!(b.get("/e/z").await, b"z");
}

#[test]
fn parts_grow_so_that_ten_thousand_reach_five_tib() {
    const GIB: usize = 1 << 30;
    let sizes: Vec<usize> = (0..10_000).map(part_size).collect();
    assert_eq!(sizes[0], PART);
    assert!(sizes.windows(2).all(|w| w[0] <= w[1]), "never shrink");
    assert!(
        sizes.iter().all(|&size| size <= 5 * GIB),
        "S3's largest part"
    );
    let total: u128 = sizes.iter().map(|&size| size as u128).sum();
    assert!(total >= 5u128 << 40, "{total} bytes in 10 000 parts");
    // Small files keep small parts: 1 GiB fits in parts of 5 MiB.
    assert!(sizes[..205].iter().all(|&size| size == PART));
    assert_eq!(part_size(usize::MAX), 5 * GIB);
}

#[tokio::test]
async fn a_path_past_the_s3_key_limit_is_too_long() {
    let b = Bucket::new(|_| {}).ready().await;
    // Names of 230 bytes, within NAME_MAX and the path limits (4096): four make a key of
    // 946 bytes with the marker ("homes/alice" + 4 * 231 + "/.ferry-dir"), five pass the
    // 1024 bytes an S3 key may have (AWS, MinIO). The tree is written on the server's disk:
    // s3s-fs keeps each object's metadata in a file named after its whole key in base64,
    // which no file system takes for keys this long.
    let name = "n".repeat(230);
    let path = format!("/{name}").repeat(4);
    let fits = format!("{path}/{}", "f".repeat(79));
    write_file(&b.disk(&fits), b"x");
    let deep = format!("{path}/{name}");
    let too_long = |what: &str, got: Result<(), StoreError>| match got {
        Err(StoreError::TooLong) => {}
        other => panic!("{what} of a {}-byte path: {other:?}", deep.len()),
    };
    let opened = b
        .store
        .open_write(ALICE, &vp(&deep), WriteMode::Replace)
        .await;
    too_long("STOR", opened.map(drop));
    let unique = b
        .store
        .open_write(ALICE, &vp(&deep), WriteMode::Unique)
        .await;
    too_long("STOU", unique.map(drop));
    too_long("MKD", b.store.mkdir(ALICE, &vp(&deep)).await);
    // A file whose key fits (1015 bytes), renamed to one that does not.
    too_long("RNTO", b.store.rename(ALICE, &vp(&fits), &vp(&deep)).await);
    // A directory whose objects would pass the limit below its new name.
    let (top, renamed) = (format!("/{name}"), format!("/{}", "r".repeat(250)));
    too_long(
        "RNTO of a directory",
        b.store.rename(ALICE, &vp(&top), &vp(&renamed)).await,
    );
    assert_eq!(b.get(&fits).await, b"x", "nothing moved");
}

#[tokio::test]
async fn a_rename_of_an_object_past_the_copy_limit_is_refused() {
    let b = Bucket::new(|s| s.max_copy_bytes = 4).ready().await;
    b.put("/small", b"1234").await;
    b.put("/big", b"12345").await;
    b.store.mkdir(ALICE, &vp("/d")).await.expect("mkdir");
    b.put("/d/big", b"12345").await;
    for (from, to) in [("/big", "/moved"), ("/d", "/e")] {
        match b.store.rename(ALICE, &vp(from), &vp(to)).await {
            Err(StoreError::TooBigToRename(4)) => {}
            other => panic!("{from}: {other:?}"),
        }
    }
    assert_eq!(b.get("/big").await, b"12345");
    assert_eq!(b.get("/d/big").await, b"12345");
    b.store
        .rename(ALICE, &vp("/small"), &vp("/moved"))
        .await
        .expect("within the limit");
    assert_eq!(b.names("/").await, ["big", "d", "moved"]);
}

#[tokio::test]
async fn a_retried_mkdir_whose_first_put_landed_succeeds() {
    let b = Bucket::new(|_| {}).ready().await;
    // s3s-fs writes the marker of a 150-byte name, then fails (500) to write its metadata
    // file (named after the whole key in base64, past NAME_MAX); the client's retry then
    // meets the marker the first attempt left (412).
    let dir = format!("/{}", "m".repeat(150));
    b.store.mkdir(ALICE, &vp(&dir)).await.expect("mkdir");
    assert!(b.store.stat(ALICE, &vp(&dir)).await.is_ok());
    // A marker another writer made is still AlreadyExists.
    let theirs = format!("/{}", "t".repeat(150));
    write_file(&b.disk(&format!("{theirs}/.ferry-dir")), b"");
    let key = b.store.key(ALICE, &vp(&theirs)).expect("key");
    match b.store.put_new(&format!("{key}/.ferry-dir")).await {
        Err(StoreError::AlreadyExists) => {}
        other => panic!("{other:?}"),
    }
}

#[tokio::test]
async fn a_directory_rename_copies_many_objects_and_counts_them_once() {
    let (b, ledger) = Bucket::new(|_| {}).with_ledger().await;
    b.store.mkdir(ALICE, &vp("/d")).await.expect("mkdir");
    b.store.mkdir(ALICE, &vp("/d/sub")).await.expect("mkdir");
    let mut want = Vec::new();
    for n in 0..30 {
        b.put(&format!("/d/sub/f{n:02}"), format!("{n}").as_bytes())
            .await;
        want.push(format!("f{n:02}"));
    }
    // Into an empty directory: its marker and the source's become one.
    b.store.mkdir(ALICE, &vp("/e")).await.expect("mkdir");
    b.store
        .rename(ALICE, &vp("/d"), &vp("/e"))
        .await
        .expect("rename");
    assert_eq!(b.names("/").await, ["e"]);
    assert_eq!(b.names("/e/sub").await, want);
    assert_eq!(b.get("/e/sub/f29").await, b"29");
    let kept = b.store.quota(ALICE).await.expect("quota").usage;
    let recounted = tokio::task::spawn_blocking(move || ledger.recount(ALICE))
        .await
        .expect("join")
        .expect("recount");
    assert_eq!(kept, recounted);
}

#[tokio::test]
async fn a_retried_stou_whose_first_put_landed_succeeds() {
    let b = Bucket::new(|_| {}).ready().await;
    // As for the marker above: s3s-fs stores the object of this 170-byte name, then fails
    // (500) on its metadata file; the retry of the create-only PUT meets it (412).
    let name = format!("/{}", "u".repeat(170));
    let mut sink = b.open(&name, WriteMode::Unique).await;
    assert_eq!(sink.target(), &vp(&name));
    sink.write(b"mine").await.expect("write");
    sink.commit(present()).await.expect("STOU");
    assert_eq!(b.get(&name).await, b"mine");
}

#[tokio::test]
async fn a_path_below_a_file_is_not_a_directory_at_any_depth() {
    let b = Bucket::new(|_| {}).ready().await;
    b.put("/file", b"x").await;
    for path in ["/file/x", "/file/x/y", "/file/x/y/z"] {
        match b.store.stat(ALICE, &vp(path)).await {
            Err(StoreError::NotADirectory) => {}
            other => panic!("{path}: {other:?}"),
        }
    }
    match b.store.stat(ALICE, &vp("/none/x/y")).await {
        Err(StoreError::NotFound) => {}
        other => panic!("{other:?}"),
    }
}
