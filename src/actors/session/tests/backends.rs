//! The storage backends the transfer tests run on: the real [`FileStore`] over the local
//! backend in a temporary directory, over the memory backend, or over the S3 backend on an
//! s3s-fs of the test's own. Files are put in place and read back through the backend
//! itself, so a test says the same on each; the macro makes one test per backend of each
//! case.

use super::*;
use crate::storage::memory::MemoryStorage;
use crate::storage::s3::testing::S3TestServer;
use crate::storage::s3::{S3Settings, S3Storage};
use crate::storage::vpath::VPath;
use crate::storage::{ClientProbe, Storage, WriteMode};

/// A backend for one test, with the temporary directory the local one lives in.
pub(super) struct Backend {
    pub(super) storage: Arc<dyn Storage>,
    /// Where the homes lie on disk (the local backend's, or the S3 server's bucket, whose
    /// files are its objects); `None` for memory.
    homes: Option<std::path::PathBuf>,
    server: Option<S3TestServer>,
    _dir: Option<tempfile::TempDir>,
}

fn vp(path: &str) -> VPath {
    VPath::root().resolve(path).expect("valid test path")
}

impl Backend {
    pub(super) fn local() -> Backend {
        let dir = tempfile::tempdir().expect("temp dir");
        let storage = LocalStorage::new(dir.path().join("home"), dir.path().join("tmp"))
            .expect("temp storage");
        Backend {
            storage: Arc::new(storage),
            homes: Some(dir.path().join("home")),
            server: None,
            _dir: Some(dir),
        }
    }

    pub(super) fn memory() -> Backend {
        Backend {
            storage: Arc::new(MemoryStorage::new()),
            homes: None,
            server: None,
            _dir: None,
        }
    }

    pub(super) fn s3() -> Backend {
        Backend::s3_with(|store| store)
    }

    /// The S3 backend, its store set up by `tweak`.
    pub(super) fn s3_with(tweak: impl FnOnce(S3Storage) -> S3Storage) -> Backend {
        let dir = tempfile::tempdir().expect("temp dir");
        let server = S3TestServer::start(&dir.path().join("s3")).expect("s3s-fs");
        server.create_bucket("ferry").expect("bucket");
        let mut config = Config::default();
        server.configure(&mut config, "ferry");
        let settings = S3Settings::from_config(&config, |_| None).expect("settings");
        Backend {
            storage: Arc::new(tweak(S3Storage::new(settings).expect("client"))),
            homes: Some(server.bucket_dir("ferry")),
            server: Some(server),
            _dir: Some(dir),
        }
    }

    /// A session on the real file store over this backend, logged out, its greeting read.
    pub(super) async fn connect(&self, config: Config) -> Client {
        let files = FileStore::start(Arc::clone(&self.storage));
        connect_to(config, self.storage.capabilities(), |audit| {
            Services::new(&StubAccounts::start(), &files, audit)
        })
        .await
        .greeted()
        .await
    }

    /// Puts `bytes` at alice's `path`, behind the session's back.
    pub(super) async fn put(&self, path: &str, bytes: &[u8]) {
        self.storage.create_home("alice").await.expect("home");
        let mut sink = self
            .storage
            .open_write("alice", &vp(path), WriteMode::Replace)
            .await
            .expect("open_write");
        sink.write(bytes).await.expect("write");
        sink.commit(ClientProbe::new(|| false))
            .await
            .expect("commit");
    }

    /// Alice's `path` in full.
    pub(super) async fn read(&self, path: &str) -> Vec<u8> {
        let mut source = self
            .storage
            .open_read("alice", &vp(path), 0)
            .await
            .expect("open_read");
        let mut bytes = Vec::new();
        source.read_to_end(&mut bytes).await.expect("read");
        bytes
    }

    pub(super) async fn exists(&self, path: &str) -> bool {
        match self.storage.stat("alice", &vp(path)).await {
            Ok(_) => true,
            Err(StoreError::NotFound) => false,
            Err(e) => panic!("stat {path}: {e:?}"),
        }
    }

    /// Puts `n` one-byte files `f0000`, `f0001`, ... in alice's directory `dir` (made here):
    /// on disk where the backend has one (the S3 server's files are its objects), else
    /// through the backend.
    pub(super) async fn many(&self, dir: &str, n: usize) {
        self.storage.create_home("alice").await.expect("home");
        let names = (0..n).map(|i| format!("{dir}/f{i:04}"));
        match &self.homes {
            Some(homes) => {
                let on_disk = homes.join("alice").join(dir.trim_start_matches('/'));
                std::fs::create_dir_all(&on_disk).expect("mkdir");
                for i in 0..n {
                    std::fs::write(on_disk.join(format!("f{i:04}")), b"x").expect("write");
                }
            }
            None => {
                self.storage.mkdir("alice", &vp(dir)).await.expect("mkdir");
                for name in names {
                    self.put(&name, b"x").await;
                }
            }
        }
    }

    /// Stops the S3 server at once (a bucket that goes away mid-session).
    pub(super) fn kill_s3(&mut self) {
        self.server.as_mut().expect("an S3 backend").kill();
    }

    /// Puts a file at alice's `path` far larger than the socket buffers, so that a download
    /// nobody reads stalls: sparse on disk (the S3 server serves its file as the object); in
    /// memory, only as large as stalling needs.
    pub(super) async fn big(&self, path: &str) {
        match &self.homes {
            Some(homes) => {
                self.storage.create_home("alice").await.expect("home");
                let name = path.trim_start_matches('/');
                let big = std::fs::File::create(homes.join("alice").join(name)).expect("create");
                big.set_len(256 << 20).expect("set_len");
            }
            None => self.put(path, &vec![0; 32 << 20]).await,
        }
    }
}

/// One test per backend of each case (an `async fn` taking a [`Backend`]).
macro_rules! on_every_backend {
    ($($case:ident),* $(,)?) => {
        mod on_local {
            $(#[actix::test]
            async fn $case() {
                super::$case(super::Backend::local()).await;
            })*
        }
        mod on_memory {
            $(#[actix::test]
            async fn $case() {
                super::$case(super::Backend::memory()).await;
            })*
        }
        mod on_s3 {
            $(#[actix::test]
            async fn $case() {
                super::$case(super::Backend::s3()).await;
            })*
        }
    };
}
pub(super) use on_every_backend;
