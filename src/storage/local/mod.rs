//! The local backend: user U's home is the directory `homes_dir/U`.
//!
//! The jail: a [`VPath`] cannot contain `..`, and every path is resolved from the home's
//! directory handle with `cap-std` (`openat2` with `RESOLVE_BENEATH`, or a walk one name at a
//! time with `O_NOFOLLOW`), so no lookup ever leaves the home, even while another process swaps
//! a directory for a link: symlinks (which operators may create) are followed only while they
//! stay inside, and operations then act on handles (the directory holding a name, the opened
//! file), never on a path looked up again. Anything outside, dangling, or not a regular file or
//! directory looks exactly like a missing entry. Absolute links lead out by definition.
//!
//! [`LocalFs`] does the work as blocking calls; [`LocalStorage`] is the async [`Storage`] in
//! front of it, running them on bounded blocking pools: one for short calls, one of its own
//! for the long jobs (listings, wildcard expansions, HASH), so those never starve the short
//! ones (CWD, SIZE, opening files).
//!
//! - `fs`: [`LocalFs`], its settings and the operations.
//! - `jail`: resolution beneath a home.
//! - `staging`: staged uploads (STOR).
//! - `inplace`: in-place uploads (APPE, REST+STOR, STOU) and their write locks.
//! - `upload`: an upload as the blocking core sees it.
//! - `stream`: the [`ByteSource`] and [`ByteSink`] the backend hands out.

mod fs;
mod inplace;
mod jail;
mod staging;
mod stream;
#[cfg(test)]
mod tests;
mod upload;

use std::io;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::SystemTime;

use tokio::sync::Semaphore;

pub use fs::LocalFs;
pub use inplace::{InPlace, WriteLock};
pub use staging::StagedUpload;
pub use upload::{Finish, ReadHandle, Upload, UploadError};

use crate::codec::entry::FileInfo;
use crate::codec::glob::NamePattern;
use crate::quota::{QuotaLedger, QuotaReport};
use crate::state::SharedState;
use crate::storage::vpath::VPath;
use crate::storage::{
    ByteSink, ByteSource, Capabilities, HashAlgo, Listing, PathLimits, Storage, StoreError,
    WriteMode,
};
use stream::{LocalSink, LocalSource};

/// Blocking calls running at once when nothing else is configured, per pool.
const DEFAULT_THREADS: usize = 4;

/// The async [`Storage`] on the local file system: [`LocalFs`] behind two bounded pools of
/// blocking threads. Cheap to clone; clones share the pools.
#[derive(Debug, Clone)]
pub struct LocalStorage {
    fs: Arc<LocalFs>,
    pools: Pools,
}

/// The bounds on blocking calls in flight: short calls and long jobs apart.
#[derive(Debug, Clone)]
pub(crate) struct Pools {
    short: Arc<Semaphore>,
    long: Arc<Semaphore>,
}

impl Pools {
    fn new(short: usize, long: usize) -> Pools {
        Pools {
            short: Arc::new(Semaphore::new(short.max(1))),
            long: Arc::new(Semaphore::new(long.max(1))),
        }
    }

    /// Runs `op` on a blocking thread once `pool` has a free permit.
    pub(crate) async fn run<T: Send + 'static>(
        pool: &Arc<Semaphore>,
        op: impl FnOnce() -> Result<T, StoreError> + Send + 'static,
    ) -> Result<T, StoreError> {
        let Ok(permit) = Arc::clone(pool).acquire_owned().await else {
            // Never closed; answered like a failed store all the same.
            return Err(StoreError::Io(io::Error::other(
                "the storage pool is closed",
            )));
        };
        // The permit goes with the call, so a caller that stops waiting cannot free its place
        // while the call still runs.
        tokio::task::spawn_blocking(move || {
            let _permit = permit;
            op()
        })
        .await
        .unwrap_or_else(|e| Err(StoreError::Io(io::Error::other(e))))
    }

    pub(crate) async fn short<T: Send + 'static>(
        &self,
        op: impl FnOnce() -> Result<T, StoreError> + Send + 'static,
    ) -> Result<T, StoreError> {
        Pools::run(&self.short, op).await
    }

    async fn long<T: Send + 'static>(
        &self,
        op: impl FnOnce() -> Result<T, StoreError> + Send + 'static,
    ) -> Result<T, StoreError> {
        Pools::run(&self.long, op).await
    }
}

impl LocalStorage {
    /// A store for homes below `homes_dir`, staging uploads in `tmp_dir` (same file system,
    /// so a commit is an atomic rename). Both directories are created if missing.
    ///
    /// # Errors
    /// If a directory cannot be created or resolved.
    pub fn new(homes_dir: PathBuf, tmp_dir: PathBuf) -> io::Result<LocalStorage> {
        Ok(LocalStorage {
            fs: Arc::new(LocalFs::new(homes_dir, tmp_dir)?),
            pools: Pools::new(DEFAULT_THREADS, DEFAULT_THREADS),
        })
    }

    /// The blocking core, for callers outside a runtime (the admin commands) and tests.
    pub fn blocking(&self) -> &LocalFs {
        &self.fs
    }

    /// Applies a [`LocalFs`] setting; a core already shared (by an upload in progress) is
    /// copied, so the setting applies to what is opened from now on.
    fn set(mut self, change: impl FnOnce(&mut LocalFs)) -> LocalStorage {
        change(Arc::make_mut(&mut self.fs));
        self
    }

    /// Runs at most `short` blocking calls at once, and besides them at most `long` long jobs
    /// (listings, wildcard expansions, HASH).
    pub fn with_threads(mut self, short: usize, long: usize) -> LocalStorage {
        self.pools = Pools::new(short, long);
        self
    }

    /// See [`LocalFs::with_partial_uploads`].
    pub fn with_partial_uploads(self, keep: bool) -> LocalStorage {
        self.set(|fs| fs.keep_partial = keep)
    }

    /// See [`LocalFs::with_shared_state`].
    pub fn with_shared_state(self, state: Arc<dyn SharedState>) -> LocalStorage {
        self.set(|fs| fs.state = state)
    }

    /// See [`LocalFs::with_path_limits`].
    pub fn with_path_limits(self, limits: PathLimits) -> LocalStorage {
        self.set(|fs| fs.limits = limits)
    }

    /// See [`LocalFs::with_listing_limit`].
    pub fn with_listing_limit(self, max: usize) -> LocalStorage {
        self.set(|fs| fs.max_listing_entries = max)
    }

    /// See [`LocalFs::with_quota`].
    pub fn with_quota(self, ledger: Arc<QuotaLedger>) -> LocalStorage {
        self.set(|fs| fs.quota = Some(ledger))
    }

    /// See [`LocalFs::with_anonymous_root`].
    ///
    /// # Errors
    /// If `root` cannot be created or resolved.
    pub fn with_anonymous_root(self, root: &Path) -> io::Result<LocalStorage> {
        let root = LocalFs::anonymous_root(root)?;
        Ok(self.set(|fs| fs.anonymous = Some(root)))
    }

    /// Gives each wildcard expansion `limit` instead of [`crate::storage::GLOB_TIME_LIMIT`].
    #[cfg(test)]
    pub(crate) fn with_glob_time_limit(self, limit: std::time::Duration) -> LocalStorage {
        self.set(|fs| fs.glob_time_limit = limit)
    }

    /// See [`LocalFs::remove_stale_staged`].
    ///
    /// # Errors
    /// When the staging dir cannot be read.
    pub fn remove_stale_staged(&self) -> io::Result<usize> {
        self.fs.remove_stale_staged()
    }

    /// Runs `op` on the core in the short pool.
    async fn short<T: Send + 'static>(
        &self,
        op: impl FnOnce(&LocalFs) -> Result<T, StoreError> + Send + 'static,
    ) -> Result<T, StoreError> {
        let fs = Arc::clone(&self.fs);
        self.pools.short(move || op(&fs)).await
    }

    /// Runs `op` on the core in the long-job pool.
    async fn long<T: Send + 'static>(
        &self,
        op: impl FnOnce(&LocalFs) -> Result<T, StoreError> + Send + 'static,
    ) -> Result<T, StoreError> {
        let fs = Arc::clone(&self.fs);
        self.pools.long(move || op(&fs)).await
    }
}

#[async_trait::async_trait]
impl Storage for LocalStorage {
    fn capabilities(&self) -> Capabilities {
        Capabilities::ALL
    }

    async fn answers(&self) -> Result<(), String> {
        let homes = self.fs.homes.clone();
        let meta =
            tokio::task::spawn_blocking(move || std::fs::metadata(&homes).map(|m| (homes, m)))
                .await
                .map_err(|e| e.to_string())?;
        match meta {
            Ok((_, meta)) if meta.is_dir() => Ok(()),
            Ok((homes, _)) => Err(format!("{} is not a directory", homes.display())),
            Err(e) => Err(format!("{}: {e}", self.fs.homes.display())),
        }
    }

    async fn create_home(&self, user: &str) -> Result<(), StoreError> {
        let user = user.to_owned();
        self.short(move |fs| fs.create_home(&user)).await
    }

    async fn stat(&self, user: &str, path: &VPath) -> Result<FileInfo, StoreError> {
        let (user, path) = (user.to_owned(), path.clone());
        self.short(move |fs| fs.stat(&user, &path)).await
    }

    async fn list(&self, user: &str, path: &VPath) -> Result<Listing, StoreError> {
        let (user, path) = (user.to_owned(), path.clone());
        self.long(move |fs| fs.list(&user, &path)).await
    }

    async fn glob(
        &self,
        user: &str,
        dir: &VPath,
        pattern: &NamePattern,
    ) -> Result<Listing, StoreError> {
        let (user, dir, pattern) = (user.to_owned(), dir.clone(), pattern.clone());
        self.long(move |fs| fs.glob(&user, &dir, &pattern)).await
    }

    async fn open_read(
        &self,
        user: &str,
        path: &VPath,
        offset: u64,
    ) -> Result<Box<dyn ByteSource>, StoreError> {
        let (user, path) = (user.to_owned(), path.clone());
        let handle = self
            .short(move |fs| fs.open_read(&user, &path, offset))
            .await?;
        Ok(Box::new(LocalSource::new(handle)))
    }

    async fn open_write(
        &self,
        user: &str,
        path: &VPath,
        mode: WriteMode,
    ) -> Result<Box<dyn ByteSink>, StoreError> {
        let (user, path) = (user.to_owned(), path.clone());
        let upload = self
            .short(move |fs| fs.open_write(&user, &path, mode))
            .await?;
        Ok(Box::new(LocalSink::new(upload, self.clone())))
    }

    async fn mkdir(&self, user: &str, path: &VPath) -> Result<(), StoreError> {
        let (user, path) = (user.to_owned(), path.clone());
        self.short(move |fs| fs.mkdir(&user, &path)).await
    }

    async fn rmdir(&self, user: &str, path: &VPath) -> Result<(), StoreError> {
        let (user, path) = (user.to_owned(), path.clone());
        self.short(move |fs| fs.rmdir(&user, &path)).await
    }

    async fn remove(&self, user: &str, path: &VPath) -> Result<(), StoreError> {
        let (user, path) = (user.to_owned(), path.clone());
        self.short(move |fs| fs.remove(&user, &path)).await
    }

    async fn rename(&self, user: &str, from: &VPath, to: &VPath) -> Result<(), StoreError> {
        let (user, from, to) = (user.to_owned(), from.clone(), to.clone());
        self.short(move |fs| fs.rename(&user, &from, &to)).await
    }

    async fn set_modified(
        &self,
        user: &str,
        path: &VPath,
        time: SystemTime,
    ) -> Result<(), StoreError> {
        let (user, path) = (user.to_owned(), path.clone());
        self.short(move |fs| fs.set_modified(&user, &path, time))
            .await
    }

    async fn chmod(&self, user: &str, path: &VPath, mode: u32) -> Result<(), StoreError> {
        let (user, path) = (user.to_owned(), path.clone());
        self.short(move |fs| fs.chmod(&user, &path, mode)).await
    }

    async fn hash(
        &self,
        user: &str,
        path: &VPath,
        algo: HashAlgo,
    ) -> Result<(String, u64), StoreError> {
        let (user, path) = (user.to_owned(), path.clone());
        self.long(move |fs| fs.hash(&user, &path, algo)).await
    }

    async fn quota(&self, user: &str) -> Result<QuotaReport, StoreError> {
        let user = user.to_owned();
        self.short(move |fs| fs.quota(&user)).await
    }
}
