//! What reads the bucket: what a path is (object, directory, nothing), listings page by page
//! (whole ones stopping once past the listing limit, streamed ones a page at a time), and
//! downloads as a stream fed from the S3 runtime
//! through a small channel (backpressure: at most [`READ_AHEAD`] chunks wait).

use std::io;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll, ready};
use std::time::{SystemTime, UNIX_EPOCH};

use bytes::Bytes;
use futures::StreamExt as _;
use object_store::list::{PaginatedListOptions, PaginatedListResult, PaginatedListStore as _};
use object_store::path::Path;
use object_store::{GetOptions, GetRange, ListResult, ObjectMeta, ObjectStore as _};
use tokio::io::{AsyncRead, ReadBuf};
use tokio::sync::mpsc;

use super::errors::store_error;
use super::keys::MARKER;
use super::{S3Storage, io_runtime, on_io};
use crate::codec::entry::{FileInfo, FileKind};
use crate::quota::DIR_BYTES;
use crate::storage::vpath::VPath;
use crate::storage::{ByteSource, Pages, StoreError};

/// Keys asked for per listing request (the S3 maximum).
pub(super) const PAGE: usize = 1000;
/// Chunks of a download read ahead of the client.
const READ_AHEAD: usize = 4;

/// What a path is in the bucket.
pub(super) enum Kind {
    /// Nothing: no object, nothing below it.
    Missing,
    /// An object.
    File(ObjectMeta),
    /// A directory (a marker, or keys below it), with the time of the first key found below
    /// it; `None` only for a home with nothing in it (no home, then).
    Dir(Option<SystemTime>),
}

/// A directory's entries as a listing shows them, and its marker's time.
pub(super) struct Entries {
    pub(super) entries: Vec<FileInfo>,
    pub(super) marker: Option<SystemTime>,
}

impl S3Storage {
    /// The object at `key`, if there is one: the first key of a listing with `key` as the
    /// prefix (no other key with that prefix sorts before it). A listing, not a HEAD: s3s-fs
    /// answers a HEAD of a key that is a directory on its disk (an emptied one stays) with 500.
    pub(super) async fn head(&self, key: &str) -> Result<Option<ObjectMeta>, StoreError> {
        let store = Arc::clone(&self.store);
        let prefix = key.to_owned();
        let options = PaginatedListOptions {
            max_keys: Some(1),
            ..PaginatedListOptions::default()
        };
        let page = on_io(async move { store.list_paginated(Some(&prefix), options).await })
            .await
            .map_err(|e| store_error("LIST", key, e))?;
        Ok(page
            .result
            .objects
            .into_iter()
            .next()
            .filter(|meta| meta.location.as_ref() == key))
    }

    /// One page of the keys below the directory `dir` (`dir/` as the prefix): with the
    /// delimiter, its entries; without, every key below it.
    pub(super) async fn page(
        &self,
        dir: &str,
        delimiter: bool,
        max: usize,
        token: Option<String>,
    ) -> Result<PaginatedListResult, StoreError> {
        let store = Arc::clone(&self.store);
        let prefix = format!("{dir}/");
        let options = PaginatedListOptions {
            delimiter: delimiter.then(|| "/".into()),
            max_keys: Some(max),
            page_token: token,
            ..PaginatedListOptions::default()
        };
        on_io(async move { store.list_paginated(Some(&prefix), options).await })
            .await
            .map_err(|e| store_error("LIST", dir, e))
    }

    /// Whether anything lies below the directory `dir`, and the time of the first key there
    /// (its marker, when it has one: `.` sorts before letters and digits).
    pub(super) async fn probe_dir(&self, dir: &str) -> Result<Option<SystemTime>, StoreError> {
        let page = self.page(dir, false, 1, None).await?;
        if let Some(first) = page.result.objects.first() {
            return Ok(Some(first.last_modified.into()));
        }
        Ok((!page.result.common_prefixes.is_empty()).then_some(UNIX_EPOCH))
    }

    /// What `path` is: a directory if anything lies below it, else an object or nothing.
    pub(super) async fn kind(&self, user: &str, path: &VPath) -> Result<Kind, StoreError> {
        let key = self.key(user, path)?;
        let below = self.probe_dir(&key).await?;
        if below.is_some() || path.is_root() {
            return Ok(Kind::Dir(below));
        }
        Ok(match self.head(&key).await? {
            Some(meta) => Kind::File(meta),
            None => Kind::Missing,
        })
    }

    /// Refuses `dir` unless it is a directory: [`StoreError::NotFound`] when missing,
    /// [`StoreError::NotADirectory`] for an object.
    pub(super) async fn need_dir(&self, user: &str, dir: &VPath) -> Result<(), StoreError> {
        match self.kind(user, dir).await? {
            Kind::Dir(Some(_)) => Ok(()),
            Kind::Dir(None) | Kind::Missing => Err(StoreError::NotFound),
            Kind::File(_) => Err(StoreError::NotADirectory),
        }
    }

    /// Why `path` is missing: [`StoreError::NotADirectory`] when the nearest of its parents
    /// that exists is an object (`/file/x/y` as `/file/x`), as on a file system.
    pub(super) async fn missing(&self, user: &str, path: &VPath) -> StoreError {
        let mut at = path.parent();
        // At most one request per name of the path.
        while let Some(parent) = at.filter(|parent| !parent.is_root()) {
            match self.kind(user, &parent).await {
                Ok(Kind::File(_)) => return StoreError::NotADirectory,
                Ok(Kind::Missing) => at = parent.parent(),
                Ok(Kind::Dir(_)) => return StoreError::NotFound,
                Err(e) => return e,
            }
        }
        StoreError::NotFound
    }

    /// The facts of the object `meta`, named `name`.
    pub(super) fn file_info(&self, name: String, meta: &ObjectMeta) -> FileInfo {
        FileInfo {
            name,
            kind: FileKind::File,
            size: meta.size,
            modified: meta.last_modified.into(),
            mode: 0o644,
            nlink: 1,
            unique: self.unique(meta.location.as_ref()),
        }
    }

    /// The facts of the directory at `key`, named `name`.
    pub(super) fn dir_info(&self, name: String, key: &str, modified: SystemTime) -> FileInfo {
        FileInfo {
            name,
            kind: FileKind::Dir,
            size: DIR_BYTES,
            modified,
            mode: 0o755,
            nlink: 2,
            unique: self.unique(&format!("{key}/")),
        }
    }

    /// The entries of the directory `dir` whose names pass `keep`, sorted by name. Every
    /// name read counts against the listing limit, kept or not; pages stop once past it, so
    /// no more than the limit is ever held.
    pub(super) async fn entries(
        &self,
        dir: &str,
        keep: impl Fn(&str) -> bool,
    ) -> Result<Entries, StoreError> {
        let max = self.max_listing_entries;
        let base = format!("{dir}/");
        let mut found = Entries {
            entries: Vec::new(),
            marker: None,
        };
        let mut seen = 0usize;
        let mut token = None;
        loop {
            let page = self
                .page(dir, true, self.listing_page, token.take())
                .await?;
            for (name, location, meta) in names(&base, &page.result) {
                if name == MARKER && meta.is_some() {
                    found.marker = meta.map(|m| m.last_modified.into());
                    continue;
                }
                seen += 1;
                if seen > max {
                    return Err(StoreError::TooManyEntries(max));
                }
                if keep(name) {
                    found.entries.push(self.entry(name, location, meta));
                }
            }
            token = page.page_token;
            if token.is_none() {
                break;
            }
        }
        found.entries = sorted(found.entries);
        Ok(found)
    }

    /// The entries of the directory `dir` a page of keys at a time, each page sorted by name
    /// (its marker left out); the pages in the bucket's key order, so a directory `a` (the
    /// prefix `a/`) may come after `a.txt` of the next page. Not under the listing limit: the
    /// stream holds one page. A name both an object and a directory shows once within a page
    /// and twice when the two fall in different pages.
    pub(super) fn entry_pages(&self, dir: String) -> Pages {
        let base = format!("{dir}/");
        // `None` once the last page is read; else the token of the next.
        let start: Option<Option<String>> = Some(None);
        let pages = futures::stream::try_unfold(
            (self.clone(), dir, base, start),
            |(store, dir, base, token)| async move {
                let Some(token) = token else {
                    return Ok(None);
                };
                let page = store.page(&dir, true, store.listing_page, token).await?;
                let entries = names(&base, &page.result)
                    .filter(|(name, _, meta)| !(*name == MARKER && meta.is_some()))
                    .map(|(name, location, meta)| store.entry(name, location, meta))
                    .collect();
                let next = page.page_token.map(Some);
                Ok(Some((sorted(entries), (store, dir, base, next))))
            },
        );
        Box::pin(pages)
    }

    /// The entry `name` of a listing: the object `meta`, else the directory at `location`.
    fn entry(&self, name: &str, location: &Path, meta: Option<&ObjectMeta>) -> FileInfo {
        match meta {
            Some(meta) => self.file_info(name.to_owned(), meta),
            None => self.dir_info(name.to_owned(), location.as_ref(), UNIX_EPOCH),
        }
    }

    /// A download of the object `meta` from `offset` (checked against its size).
    pub(super) async fn download(
        &self,
        meta: &ObjectMeta,
        offset: u64,
    ) -> Result<Box<dyn ByteSource>, StoreError> {
        if offset > meta.size {
            return Err(StoreError::BadOffset);
        }
        let (tx, rx) = mpsc::channel(READ_AHEAD);
        let source = S3Source {
            size: meta.size,
            left: meta.size - offset,
            rx,
            chunk: Bytes::new(),
        };
        if offset == meta.size {
            return Ok(Box::new(source));
        }
        // Tied to the version opened: a replacement mid-read fails the read rather than mix
        // two objects (where the server honours If-Match on GET; s3s-fs does not).
        let options = GetOptions {
            range: (offset > 0).then_some(GetRange::Offset(offset)),
            if_match: meta.e_tag.clone(),
            ..GetOptions::default()
        };
        let store = Arc::clone(&self.reader);
        let location = meta.location.clone();
        let key = location.to_string();
        let stream = on_io(async move { store.get_opts(&location, options).await })
            .await
            .map_err(|e| store_error("GET", &key, e))?
            .into_stream();
        io_runtime().spawn(pump(stream, tx, key));
        Ok(Box::new(source))
    }
}

/// The names one page of a listing below `base` holds, with each key and its object (`None`
/// for a directory), the marker included. Keys no client could have made (empty names, control
/// characters, a `dir/` key of another tool) are left out.
fn names<'a>(
    base: &'a str,
    page: &'a ListResult,
) -> impl Iterator<Item = (&'a str, &'a Path, Option<&'a ObjectMeta>)> + 'a {
    let dirs = page.common_prefixes.iter().map(|p| (p, None));
    let objects = page.objects.iter().map(|m| (&m.location, Some(m)));
    dirs.chain(objects).filter_map(move |(location, meta)| {
        let name = location.as_ref().strip_prefix(base)?;
        let bad = name.is_empty() || name.contains('/') || name.chars().any(char::is_control);
        (!bad).then_some((name, location, meta))
    })
}

/// `entries` sorted by name; a name both an object and a directory (written by another tool)
/// shown once.
fn sorted(mut entries: Vec<FileInfo>) -> Vec<FileInfo> {
    entries.sort_by(|a, b| a.name.cmp(&b.name));
    entries.dedup_by(|a, b| a.name == b.name);
    entries
}

/// Feeds a download's chunks to its reader until the body ends or the reader goes.
async fn pump(
    mut stream: futures::stream::BoxStream<'static, object_store::Result<Bytes>>,
    tx: mpsc::Sender<io::Result<Bytes>>,
    key: String,
) {
    while let Some(chunk) = stream.next().await {
        let chunk = chunk.map_err(|e| {
            log::warn!("S3 GET of {key} failed mid-body: {e}");
            io::Error::other(e)
        });
        let failed = chunk.is_err();
        if tx.send(chunk).await.is_err() || failed {
            return;
        }
    }
}

/// A download: the chunks the pump sends, read as one stream.
struct S3Source {
    size: u64,
    /// Bytes still due: a body that ends early is an error, not a short file.
    left: u64,
    rx: mpsc::Receiver<io::Result<Bytes>>,
    chunk: Bytes,
}

impl AsyncRead for S3Source {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        loop {
            if !this.chunk.is_empty() {
                let n = this.chunk.len().min(buf.remaining());
                buf.put_slice(&this.chunk.split_to(n));
                this.left = this.left.saturating_sub(n as u64);
                return Poll::Ready(Ok(()));
            }
            if this.left == 0 {
                return Poll::Ready(Ok(()));
            }
            match ready!(this.rx.poll_recv(cx)) {
                Some(Ok(chunk)) => this.chunk = chunk,
                Some(Err(e)) => return Poll::Ready(Err(e)),
                None => {
                    return Poll::Ready(Err(io::Error::new(
                        io::ErrorKind::UnexpectedEof,
                        "the object's body ended early",
                    )));
                }
            }
        }
    }
}

impl ByteSource for S3Source {
    fn size(&self) -> u64 {
        self.size
    }

    fn local_file(&self) -> Option<&std::fs::File> {
        None
    }
}
