//! [`Storage`] for [`S3Storage`]: each method in the words of the trait, over the pieces in
//! `read`, `write` and `tree`; and the usage counter the quota ledger recounts with.

use std::io;
use std::sync::Arc;
use std::time::{SystemTime, UNIX_EPOCH};

use futures::TryStreamExt as _;
use object_store::{ObjectMeta, ObjectStore as _};
use tokio::io::AsyncReadExt as _;

use super::keys::{MARKER, object};
use super::read::Kind;
use super::{S3Storage, wait};
use crate::codec::entry::FileInfo;
use crate::codec::glob::NamePattern;
use crate::quota::{DIR_BYTES, QuotaReport, Usage, UsageCounter};
use crate::storage::digest::CHUNK;
use crate::storage::vpath::VPath;
use crate::storage::{
    ByteSink, ByteSource, Capabilities, GLOB_TIME_LIMIT, HashAlgo, Listing, ListingPages, Storage,
    StoreError, WriteMode,
};

/// What object storage can do: appends and resumes by rewriting, directory renames object
/// by object; no times or modes to set, no directories without a marker or keys.
const CAPABILITIES: Capabilities = Capabilities {
    append: true,
    write_at: true,
    rename_dirs: true,
    set_mtime: false,
    chmod: false,
    empty_dirs: false,
};

impl S3Storage {
    /// The directory `path` (at `key`) listed with the entries that pass `keep`.
    async fn listing(
        &self,
        user: &str,
        path: &VPath,
        seen: Option<SystemTime>,
        keep: impl Fn(&str) -> bool,
    ) -> Result<Listing, StoreError> {
        let key = self.key(user, path)?;
        let found = self.entries(&key, keep).await?;
        let modified = found.marker.or(seen).unwrap_or(UNIX_EPOCH);
        Ok(Listing {
            is_dir: true,
            matched: false,
            this: Some(self.dir_info(".".to_owned(), &key, modified)),
            parent: self.parent_info(user, path).await?,
            entries: found.entries,
        })
    }

    /// The parent of `path` as a listing names it (MLSD's `pdir`); `None` for the home.
    async fn parent_info(&self, user: &str, path: &VPath) -> Result<Option<FileInfo>, StoreError> {
        let Some(parent) = path.parent() else {
            return Ok(None);
        };
        let parent_key = self.key(user, &parent)?;
        let time = self.probe_dir(&parent_key).await?.unwrap_or(UNIX_EPOCH);
        Ok(Some(self.dir_info("..".to_owned(), &parent_key, time)))
    }

    /// The one-entry listing of the object `meta` at `path`.
    fn file_listing(&self, path: &VPath, meta: &ObjectMeta) -> Listing {
        let name = path.file_name().unwrap_or("/").to_owned();
        Listing {
            is_dir: false,
            matched: false,
            this: None,
            parent: None,
            entries: vec![self.file_info(name, meta)],
        }
    }
}

/// Every request of a user first waits for that user's interrupted uploads to end
/// (`S3Storage::settled`), so it sees what they kept; the ends themselves use the pieces
/// below these methods, which do not wait.
#[async_trait::async_trait]
impl Storage for S3Storage {
    fn capabilities(&self) -> Capabilities {
        CAPABILITIES
    }

    async fn answers(&self) -> Result<(), String> {
        self.reachable().await.map_err(|e| e.to_string())
    }

    async fn create_home(&self, user: &str) -> Result<(), StoreError> {
        self.make_home(user).await
    }

    async fn stat(&self, user: &str, path: &VPath) -> Result<FileInfo, StoreError> {
        self.settled(user).await;
        let name = path.file_name().unwrap_or("/").to_owned();
        match self.kind(user, path).await? {
            Kind::File(meta) => Ok(self.file_info(name, &meta)),
            Kind::Dir(seen) => {
                let key = self.key(user, path)?;
                Ok(self.dir_info(name, &key, seen.unwrap_or(UNIX_EPOCH)))
            }
            Kind::Missing => Err(self.missing(user, path).await),
        }
    }

    async fn list(&self, user: &str, path: &VPath) -> Result<Listing, StoreError> {
        self.settled(user).await;
        match self.kind(user, path).await? {
            Kind::File(meta) => Ok(self.file_listing(path, &meta)),
            // A home nothing was ever written to (not even its marker) does not exist.
            Kind::Dir(None) | Kind::Missing => Err(StoreError::NotFound),
            Kind::Dir(seen) => self.listing(user, path, seen, |_| true).await,
        }
    }

    /// The directory's time is that of the first key below it, read before the first page:
    /// its marker's, unless a name sorts before the marker's `.` (`-a`, `!a`), where the whole
    /// listing would find the marker further on.
    async fn list_pages(&self, user: &str, path: &VPath) -> Result<ListingPages, StoreError> {
        self.settled(user).await;
        match self.kind(user, path).await? {
            Kind::File(meta) => Ok(self.file_listing(path, &meta).into()),
            Kind::Dir(None) | Kind::Missing => Err(StoreError::NotFound),
            Kind::Dir(Some(seen)) => {
                let key = self.key(user, path)?;
                Ok(ListingPages {
                    is_dir: true,
                    matched: false,
                    this: Some(self.dir_info(".".to_owned(), &key, seen)),
                    parent: self.parent_info(user, path).await?,
                    pages: self.entry_pages(key),
                    streamed: true,
                })
            }
        }
    }

    async fn glob(
        &self,
        user: &str,
        dir: &VPath,
        pattern: &NamePattern,
    ) -> Result<Listing, StoreError> {
        self.settled(user).await;
        let expand = async {
            match self.kind(user, dir).await? {
                Kind::File(_) => Err(StoreError::NotADirectory),
                Kind::Dir(None) | Kind::Missing => Err(StoreError::NotFound),
                Kind::Dir(Some(_)) => {
                    let key = self.key(user, dir)?;
                    self.entries(&key, |name| pattern.matches(name)).await
                }
            }
        };
        let found = tokio::time::timeout(GLOB_TIME_LIMIT, expand)
            .await
            .map_err(|_| StoreError::TimedOut)??;
        Ok(Listing {
            is_dir: false,
            matched: true,
            this: None,
            parent: None,
            entries: found.entries,
        })
    }

    async fn open_read(
        &self,
        user: &str,
        path: &VPath,
        offset: u64,
    ) -> Result<Box<dyn ByteSource>, StoreError> {
        self.settled(user).await;
        match self.kind(user, path).await? {
            Kind::File(meta) => self.download(&meta, offset).await,
            Kind::Dir(_) => Err(StoreError::IsADirectory),
            Kind::Missing => Err(self.missing(user, path).await),
        }
    }

    async fn open_write(
        &self,
        user: &str,
        path: &VPath,
        mode: WriteMode,
    ) -> Result<Box<dyn ByteSink>, StoreError> {
        self.settled(user).await;
        self.open_upload(user, path, mode).await
    }

    async fn mkdir(&self, user: &str, path: &VPath) -> Result<(), StoreError> {
        self.settled(user).await;
        self.make_dir(user, path).await
    }

    async fn rmdir(&self, user: &str, path: &VPath) -> Result<(), StoreError> {
        self.settled(user).await;
        self.remove_dir(user, path).await
    }

    async fn remove(&self, user: &str, path: &VPath) -> Result<(), StoreError> {
        self.settled(user).await;
        self.remove_file(user, path).await
    }

    async fn rename(&self, user: &str, from: &VPath, to: &VPath) -> Result<(), StoreError> {
        self.settled(user).await;
        self.move_path(user, from, to).await
    }

    async fn set_modified(&self, _: &str, _: &VPath, _: SystemTime) -> Result<(), StoreError> {
        Err(StoreError::PermissionDenied)
    }

    async fn chmod(&self, _: &str, _: &VPath, _: u32) -> Result<(), StoreError> {
        Err(StoreError::PermissionDenied)
    }

    async fn hash(
        &self,
        user: &str,
        path: &VPath,
        algo: HashAlgo,
    ) -> Result<(String, u64), StoreError> {
        let mut source = self.open_read(user, path, 0).await?;
        let size = source.size();
        let mut digest = algo.start();
        let mut buf = vec![0; CHUNK];
        loop {
            let n = source.read(&mut buf).await?;
            if n == 0 {
                break;
            }
            digest.update(&buf[..n]);
        }
        Ok((digest.finish(), size))
    }

    async fn quota(&self, user: &str) -> Result<QuotaReport, StoreError> {
        self.settled(user).await;
        let Some(ledger) = self.ledger(user).cloned() else {
            return Ok(QuotaReport::default());
        };
        let user = user.to_owned();
        Ok(super::blocking(move || ledger.report(&user)).await?)
    }
}

impl UsageCounter for S3Storage {
    /// Lists every key of the home: each object a file of its size, each directory marker
    /// one directory ([`DIR_BYTES`]); the home's own marker counts for nothing.
    fn count(&self, user: &str) -> io::Result<Usage> {
        let home = self.home_key(user).map_err(io::Error::other)?;
        let prefix = object(&home).map_err(io::Error::other)?;
        let home_marker = format!("{home}/{MARKER}");
        let store = Arc::clone(&self.store);
        let listed = wait(async move {
            store
                .list(Some(&prefix))
                .try_fold(Usage::default(), |mut usage, meta| {
                    let key = meta.location.as_ref();
                    if key != home_marker {
                        usage.files += 1;
                        usage.bytes += if meta.location.filename() == Some(MARKER) {
                            DIR_BYTES
                        } else {
                            meta.size
                        };
                    }
                    futures::future::ready(Ok(usage))
                })
                .await
        });
        listed.map_err(io::Error::other)
    }
}
