//! The FileStore actor and its messages: every file operation a session asks for, answered by
//! awaiting the [`Storage`] backend, which runs blocking work on threads of its own. It hands
//! back byte sources and sinks: bulk bytes never pass through its mailbox.
//!
//! [`LongJobs`] takes the long jobs (listings, HASH) with a per-user share, so one user's long
//! jobs cannot hold every long-job thread of the backend.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::SystemTime;

use actix::{Actor, Addr, Context, Handler, Message, ResponseFuture};
use futures::StreamExt as _;
use tokio::sync::{OwnedSemaphorePermit, Semaphore};

use crate::codec::entry::FileInfo;
use crate::codec::glob::NamePattern;
use crate::quota::QuotaReport;
use crate::storage::vpath::VPath;
use crate::storage::{
    ByteSink, ByteSource, ClientProbe, HashAlgo, Listing, ListingPages, Storage, StoreError,
    WriteMode,
};

/// The file-store actor: each message is answered by a future awaiting `storage`, so calls run
/// side by side; the backend bounds its own blocking work.
pub struct FileStore {
    storage: Arc<dyn Storage>,
}

impl Actor for FileStore {
    type Context = Context<Self>;
}

impl FileStore {
    /// Starts the actor on the current arbiter.
    pub fn start(storage: Arc<dyn Storage>) -> Addr<FileStore> {
        FileStore { storage }.start()
    }
}

/// Lists `path`; when `expand` and it exists nowhere, expands wildcards in its last component.
async fn list(storage: Arc<dyn Storage>, msg: List) -> Result<Listing, StoreError> {
    let listed = storage.list(&msg.user, &msg.path).await;
    if !msg.expand || !matches!(listed, Err(StoreError::NotFound)) {
        return listed;
    }
    glob(&storage, &msg.user, &msg.path).await.unwrap_or(listed)
}

/// As [`list`], the entries a page at a time; an expansion is one page.
async fn list_pages(storage: Arc<dyn Storage>, msg: ListPages) -> Result<ListingPages, StoreError> {
    let listed = storage.list_pages(&msg.user, &msg.path).await;
    if !msg.expand || !matches!(listed, Err(StoreError::NotFound)) {
        return listed;
    }
    match glob(&storage, &msg.user, &msg.path).await {
        Some(expanded) => expanded.map(ListingPages::from),
        None => listed,
    }
}

/// The expansion of the wildcards in the last component of `path`, a name that exists
/// nowhere; `None` when that component is no pattern.
async fn glob(
    storage: &Arc<dyn Storage>,
    user: &str,
    path: &VPath,
) -> Option<Result<Listing, StoreError>> {
    // Only a name that exists nowhere is a pattern, so a file called `a[1]` stays listable.
    let dir = path.parent()?;
    let pattern = path.file_name().and_then(NamePattern::parse)?;
    Some(storage.glob(user, &dir, &pattern).await)
}

/// Long file-store jobs (HASH, listings), at most `per_user` of one user's running at a time
/// (the rest wait their turn): one user's long jobs can neither hold every long-job thread of
/// the backend nor, as those are apart, delay the short calls (CWD, SIZE, opening files).
pub struct LongJobs {
    storage: Arc<dyn Storage>,
    per_user: usize,
    /// Each user's share, while one of their jobs runs or waits.
    shares: Arc<Mutex<HashMap<Arc<str>, Arc<Semaphore>>>>,
}

impl Actor for LongJobs {
    type Context = Context<Self>;
}

impl LongJobs {
    /// Starts the queue (on the current arbiter).
    pub fn start(storage: Arc<dyn Storage>, per_user: usize) -> Addr<LongJobs> {
        LongJobs {
            storage,
            per_user: per_user.max(1),
            shares: Arc::default(),
        }
        .start()
    }

    /// Waits until `user` has a free share, and takes it.
    fn turn(&self, user: Arc<str>) -> impl Future<Output = Result<Turn, StoreError>> + 'static {
        let shares = Arc::clone(&self.shares);
        let share = {
            let mut map = shares.lock().unwrap_or_else(|e| e.into_inner());
            let share = map
                .entry(Arc::clone(&user))
                .or_insert_with(|| Arc::new(Semaphore::new(self.per_user)));
            Arc::clone(share)
        };
        async move {
            // Made before the wait, so a wait given up (the session gone) also cleans up.
            let mut turn = Turn {
                running: None,
                share,
                user,
                shares,
            };
            match Arc::clone(&turn.share).acquire_owned().await {
                Ok(running) => {
                    turn.running = Some(running);
                    Ok(turn)
                }
                // Never closed; answered like a failed store all the same.
                Err(e) => Err(StoreError::Io(std::io::Error::other(e))),
            }
        }
    }

    /// Runs `job` once `user` has a free share.
    fn run<T: Send + 'static>(
        &self,
        user: Arc<str>,
        job: impl Future<Output = Result<T, StoreError>> + 'static,
    ) -> ResponseFuture<Result<T, StoreError>> {
        let turn = self.turn(user);
        Box::pin(async move {
            let _turn = turn.await?;
            job.await
        })
    }
}

/// One of a user's shares, taken while it lives (or waited for); the last of a user's turns
/// forgets the user.
struct Turn {
    running: Option<OwnedSemaphorePermit>,
    share: Arc<Semaphore>,
    user: Arc<str>,
    shares: Arc<Mutex<HashMap<Arc<str>, Arc<Semaphore>>>>,
}

impl Drop for Turn {
    fn drop(&mut self) {
        drop(self.running.take());
        let mut map = self.shares.lock().unwrap_or_else(|e| e.into_inner());
        // Only the map and this turn still hold it: nobody runs or waits; forget the user.
        if Arc::strong_count(&self.share) == 2 {
            map.remove(&self.user);
        }
    }
}

impl Handler<List> for LongJobs {
    type Result = ResponseFuture<Result<Listing, StoreError>>;
    fn handle(&mut self, msg: List, _: &mut Self::Context) -> Self::Result {
        let user = Arc::clone(&msg.user);
        self.run(user, list(Arc::clone(&self.storage), msg))
    }
}

impl Handler<ListPages> for LongJobs {
    type Result = ResponseFuture<Result<ListingPages, StoreError>>;
    fn handle(&mut self, msg: ListPages, _: &mut Self::Context) -> Self::Result {
        let turn = self.turn(Arc::clone(&msg.user));
        let storage = Arc::clone(&self.storage);
        Box::pin(async move {
            let turn = turn.await?;
            let mut found = list_pages(storage, msg).await?;
            // A streamed listing holds the share while its pages are read (as the data
            // connection takes them), so one user's streamed listings stay within their share
            // too; one read whole gives the share back now, as a whole listing does.
            if found.streamed {
                found.pages = Box::pin(found.pages.map(move |page| {
                    let _held = &turn;
                    page
                }));
            } else {
                drop(turn);
            }
            Ok(found)
        })
    }
}

impl Handler<Hash> for LongJobs {
    type Result = ResponseFuture<Result<(String, u64), StoreError>>;
    fn handle(&mut self, msg: Hash, _: &mut Self::Context) -> Self::Result {
        let storage = Arc::clone(&self.storage);
        let user = Arc::clone(&msg.user);
        self.run(user, async move {
            storage.hash(&msg.user, &msg.path, msg.algo).await
        })
    }
}

/// Create a user's home directory (idempotent).
#[derive(Debug, Message)]
#[rtype(result = "Result<(), StoreError>")]
pub struct CreateHome {
    /// The account name.
    pub user: Arc<str>,
}

/// Describe one file or directory.
#[derive(Debug, Message)]
#[rtype(result = "Result<FileInfo, StoreError>")]
pub struct Stat {
    /// Whose home.
    pub user: Arc<str>,
    /// What to describe.
    pub path: VPath,
}

/// List a directory (or describe a file as a one-entry listing).
#[derive(Debug, Message)]
#[rtype(result = "Result<Listing, StoreError>")]
pub struct List {
    /// Whose home.
    pub user: Arc<str>,
    /// What to list.
    pub path: VPath,
    /// Whether wildcards in the last component of a `path` that does not exist are expanded
    /// in its directory (LIST and NLST; not MLSD or STAT).
    pub expand: bool,
}

/// List a directory as [`List`] does, its entries a page at a time while a data connection
/// sends them (LIST, NLST, MLSD).
#[derive(Debug, Message)]
#[rtype(result = "Result<ListingPages, StoreError>")]
pub struct ListPages {
    /// Whose home.
    pub user: Arc<str>,
    /// What to list.
    pub path: VPath,
    /// As [`List::expand`]; an expansion is one page.
    pub expand: bool,
}

/// Open a file for download.
#[derive(Debug, Message)]
#[rtype(result = "Result<Box<dyn ByteSource>, StoreError>")]
pub struct OpenRead {
    /// Whose home.
    pub user: Arc<str>,
    /// The file to read.
    pub path: VPath,
    /// Where to start (REST).
    pub offset: u64,
}

/// Start an upload.
#[derive(Debug, Message)]
#[rtype(result = "Result<Box<dyn ByteSink>, StoreError>")]
pub struct OpenWrite {
    /// Whose home.
    pub user: Arc<str>,
    /// The file the upload will replace or create.
    pub path: VPath,
    /// Replace, append, resume or unique.
    pub mode: WriteMode,
}

/// Put a finished upload in place ([`ByteSink::commit`]).
#[derive(Message)]
#[rtype(result = "Result<(), StoreError>")]
pub struct CommitUpload {
    /// The upload, after every byte was written.
    pub sink: Box<dyn ByteSink>,
    /// Asked at the end whether the client is still there.
    pub client: ClientProbe,
}

/// Create a directory.
#[derive(Debug, Message)]
#[rtype(result = "Result<(), StoreError>")]
pub struct Mkdir {
    /// Whose home.
    pub user: Arc<str>,
    /// The directory to create.
    pub path: VPath,
}

/// Remove an empty directory.
#[derive(Debug, Message)]
#[rtype(result = "Result<(), StoreError>")]
pub struct Rmdir {
    /// Whose home.
    pub user: Arc<str>,
    /// The directory to remove.
    pub path: VPath,
}

/// Remove a file or symlink.
#[derive(Debug, Message)]
#[rtype(result = "Result<(), StoreError>")]
pub struct Remove {
    /// Whose home.
    pub user: Arc<str>,
    /// The file to remove.
    pub path: VPath,
}

/// Rename a file or directory.
#[derive(Debug, Message)]
#[rtype(result = "Result<(), StoreError>")]
pub struct Rename {
    /// Whose home.
    pub user: Arc<str>,
    /// The existing name (RNFR).
    pub from: VPath,
    /// The new name (RNTO).
    pub to: VPath,
}

/// Usage and limits of a user (SITE QUOTA).
#[derive(Debug, Message)]
#[rtype(result = "Result<QuotaReport, StoreError>")]
pub struct QuotaStatus {
    /// Whose.
    pub user: Arc<str>,
}

/// Set a modification time (MFMT).
#[derive(Debug, Message)]
#[rtype(result = "Result<(), StoreError>")]
pub struct SetModified {
    /// Whose home.
    pub user: Arc<str>,
    /// The file or directory.
    pub path: VPath,
    /// The new time.
    pub time: SystemTime,
}

/// Set permission bits (SITE CHMOD).
#[derive(Debug, Message)]
#[rtype(result = "Result<(), StoreError>")]
pub struct Chmod {
    /// Whose home.
    pub user: Arc<str>,
    /// The file or directory.
    pub path: VPath,
    /// Bits, at most 0o777.
    pub mode: u32,
}

/// Digest a file (HASH).
#[derive(Debug, Message)]
#[rtype(result = "Result<(String, u64), StoreError>")]
pub struct Hash {
    /// Whose home.
    pub user: Arc<str>,
    /// The file.
    pub path: VPath,
    /// Which digest.
    pub algo: HashAlgo,
}

/// Answers `$msg` with `$result` from the future `$body` builds of the storage and the message.
macro_rules! handle {
    ($msg:ty => $result:ty, |$storage:ident, $m:ident| $body:expr) => {
        impl Handler<$msg> for FileStore {
            type Result = ResponseFuture<Result<$result, StoreError>>;
            fn handle(&mut self, $m: $msg, _: &mut Self::Context) -> Self::Result {
                let $storage = Arc::clone(&self.storage);
                Box::pin(async move { $body })
            }
        }
    };
}

handle!(CreateHome => (), |s, m| s.create_home(&m.user).await);
handle!(Stat => FileInfo, |s, m| s.stat(&m.user, &m.path).await);
handle!(List => Listing, |s, m| list(s, m).await);
handle!(ListPages => ListingPages, |s, m| list_pages(s, m).await);
handle!(OpenRead => Box<dyn ByteSource>, |s, m| s.open_read(&m.user, &m.path, m.offset).await);
handle!(OpenWrite => Box<dyn ByteSink>, |s, m| s.open_write(&m.user, &m.path, m.mode).await);
handle!(CommitUpload => (), |_s, m| m.sink.commit(m.client).await);
handle!(Mkdir => (), |s, m| s.mkdir(&m.user, &m.path).await);
handle!(Rmdir => (), |s, m| s.rmdir(&m.user, &m.path).await);
handle!(Remove => (), |s, m| s.remove(&m.user, &m.path).await);
handle!(Rename => (), |s, m| s.rename(&m.user, &m.from, &m.to).await);
handle!(SetModified => (), |s, m| s.set_modified(&m.user, &m.path, m.time).await);
handle!(Chmod => (), |s, m| s.chmod(&m.user, &m.path, m.mode).await);
handle!(Hash => (String, u64), |s, m| s.hash(&m.user, &m.path, m.algo).await);
handle!(QuotaStatus => QuotaReport, |s, m| s.quota(&m.user).await);

#[cfg(test)]
mod tests {
    use tokio::io::AsyncReadExt as _;

    use super::*;
    use crate::storage::local::LocalStorage;
    use crate::storage::memory::MemoryStorage;

    fn vp(path: &str) -> VPath {
        VPath::root().resolve(path).expect("valid test path")
    }

    fn names(infos: &[FileInfo]) -> Vec<&str> {
        infos.iter().map(|info| info.name.as_str()).collect()
    }

    #[actix::test]
    async fn actor_round_trip_on_local_storage() {
        let dir = tempfile::TempDir::new().expect("temp dir");
        let storage = LocalStorage::new(dir.path().join("home"), dir.path().join("tmp"))
            .expect("storage")
            .with_threads(2, 1);
        actor_round_trip(Arc::new(storage)).await;
    }

    #[actix::test]
    async fn actor_round_trip_on_memory_storage() {
        actor_round_trip(Arc::new(MemoryStorage::new())).await;
    }

    #[actix::test]
    async fn a_streamed_listing_holds_its_users_share_until_its_pages_are_dropped() {
        use crate::config::Config;
        use crate::storage::s3::testing::S3TestServer;
        use crate::storage::s3::{S3Settings, S3Storage};

        let dir = tempfile::tempdir().expect("temp dir");
        let server = S3TestServer::start(&dir.path().join("s3")).expect("s3s-fs");
        server.create_bucket("ferry-jobs").expect("bucket");
        let mut config = Config::default();
        server.configure(&mut config, "ferry-jobs");
        let settings = S3Settings::from_config(&config, |_| None).expect("settings");
        let storage = S3Storage::new(settings).expect("client");
        for user in ["alice", "bob"] {
            storage.create_home(user).await.expect("home");
        }
        let jobs = LongJobs::start(Arc::new(storage), 1);
        let list = |user: &str| list_pages_of(&jobs, user);
        let wait = std::time::Duration::from_secs(5);
        let first = tokio::time::timeout(wait, list("alice"))
            .await
            .expect("first listing in time")
            .expect("mailbox")
            .expect("list");
        assert!(first.streamed);
        // Alice's one share is held by the pages not yet read: her next listing waits.
        let mut second = Box::pin(list("alice"));
        let early = std::time::Duration::from_millis(300);
        assert!(tokio::time::timeout(early, &mut second).await.is_err());
        // Another user's is not held up.
        let other = tokio::time::timeout(wait, list("bob")).await;
        assert!(matches!(other, Ok(Ok(Ok(_)))));
        drop(first);
        let second = tokio::time::timeout(wait, second).await;
        assert!(
            matches!(second, Ok(Ok(Ok(_)))),
            "the share was not given back"
        );
    }

    #[actix::test]
    async fn a_listing_read_whole_gives_its_users_share_back_at_once() {
        let storage = MemoryStorage::new();
        storage.create_home("alice").await.expect("home");
        let jobs = LongJobs::start(Arc::new(storage), 1);
        let wait = std::time::Duration::from_secs(5);
        let first = tokio::time::timeout(wait, list_pages_of(&jobs, "alice"))
            .await
            .expect("first listing in time")
            .expect("mailbox")
            .expect("list");
        assert!(!first.streamed);
        // Its pages are not read yet, and still the next listing runs: nothing more is read.
        let second = tokio::time::timeout(wait, list_pages_of(&jobs, "alice")).await;
        assert!(matches!(second, Ok(Ok(Ok(_)))), "the share was held");
        drop(first);
    }

    fn list_pages_of(
        jobs: &Addr<LongJobs>,
        user: &str,
    ) -> actix::prelude::Request<LongJobs, ListPages> {
        jobs.send(ListPages {
            user: Arc::from(user),
            path: VPath::root(),
            expand: false,
        })
    }

    async fn actor_round_trip(storage: Arc<dyn Storage>) {
        let addr = FileStore::start(storage);
        let user: Arc<str> = Arc::from("carol");
        addr.send(CreateHome { user: user.clone() })
            .await
            .expect("mailbox")
            .expect("home");
        let path = vp("/docs");
        addr.send(Mkdir {
            user: user.clone(),
            path: path.clone(),
        })
        .await
        .expect("mailbox")
        .expect("mkdir");
        let file = path.resolve("f").expect("path");
        let upload = |path: VPath, bytes: &'static [u8]| {
            let (addr, user) = (addr.clone(), user.clone());
            async move {
                let mut upload = addr
                    .send(OpenWrite {
                        user,
                        path,
                        mode: WriteMode::Replace,
                    })
                    .await
                    .expect("mailbox")
                    .expect("open_write");
                upload.write(bytes).await.expect("write");
                addr.send(CommitUpload {
                    sink: upload,
                    client: ClientProbe::new(|| false),
                })
                .await
                .expect("mailbox")
                .expect("commit");
            }
        };
        upload(file.clone(), b"via actor").await;
        let listing = addr
            .send(List {
                user: user.clone(),
                path,
                expand: false,
            })
            .await
            .expect("mailbox")
            .expect("list")
            .entries;
        assert_eq!(names(&listing), ["f"]);
        let list = |path: &str, expand| {
            addr.send(List {
                user: user.clone(),
                path: vp(path),
                expand,
            })
        };
        let expanded = list("/docs/[e-g]", true)
            .await
            .expect("mailbox")
            .expect("expanded");
        assert!(expanded.matched);
        assert_eq!(names(&expanded.entries), ["f"]);
        assert!(matches!(
            list("/docs/[e-g]", false).await.expect("mailbox"),
            Err(StoreError::NotFound)
        ));
        // A name that exists is listed as itself, wildcard characters and all.
        upload(vp("/docs/[e-g]"), b"literal").await;
        let literal = list("/docs/[e-g]", true)
            .await
            .expect("mailbox")
            .expect("literal");
        assert!(!literal.matched && !literal.is_dir);
        assert_eq!(names(&literal.entries), ["[e-g]"]);
        let handle = addr
            .send(OpenRead {
                user: user.clone(),
                path: file.clone(),
                offset: 4,
            })
            .await
            .expect("mailbox")
            .expect("open_read");
        assert_eq!(handle.size(), 9);
        let mut read = Vec::new();
        let mut handle = handle;
        handle.read_to_end(&mut read).await.expect("read");
        assert_eq!(read, b"actor");
        let missing = addr
            .send(Stat {
                user,
                path: vp("/../nope"),
            })
            .await
            .expect("mailbox");
        assert!(matches!(missing, Err(StoreError::NotFound)));
    }
}
