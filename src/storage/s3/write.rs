//! Uploads: one sink for every mode. The bytes gather in a buffer of one part (5 MiB, the S3
//! minimum but for the last, growing with the upload: [`part_size`]); a full part goes to a
//! multipart upload, at most [`IN_FLIGHT`] parts at a time, so an upload holds a few parts,
//! never the file. A file smaller than a
//! part is one PUT at the commit. Nothing is visible before the commit completes the upload.
//!
//! STOR replaces at the commit. APPE and REST+STOR cannot write in place: at the first byte
//! (or an empty commit) the upload streams the kept bytes from the old object (ranged, tied
//! to its ETag), then the client's, and the commit replaces the object; they hold the write
//! lock, as on the local backend. STOU writes create-only, so a name that appeared meanwhile
//! is never overwritten: a single PUT with If-None-Match; a multipart upload cannot be
//! completed create-only through object_store 0.14 (its `MultipartUpload::complete` always
//! overwrites; If-None-Match on the completion is used only inside its own copies), so the
//! name is checked again at the end, under the user's quota lock and the STOU's write lock
//! on the name. What remains is the time between that check and the completion request, and
//! only against writers those locks do not order: a STOR of the same name by the same user
//! when no quota ledger is kept, or another program writing the bucket. An interrupted STOR
//! kept under a new name is checked the same way.
//!
//! How an upload ends is decided in [`Upload::end`], sync code on a blocking thread under the
//! user's quota lock (as the local backend's rename into place is): it checks the target
//! again, charges what the object adds against what it replaces, and completes or aborts the
//! multipart upload. An interrupted upload (the sink dropped) ends the same way, in the
//! background: `Drop` decides the end and returns at once, never blocking the transfer thread
//! or arbiter it runs on; every later request of the user waits for that end first (bounded,
//! [`S3Storage::settled`]), so the next command finds what the interruption kept.

use std::sync::{Arc, Mutex};

use bytes::{Bytes, BytesMut};
use futures::StreamExt as _;
use object_store::aws::AmazonS3;
use object_store::path::Path as ObjectPath;
use object_store::{
    GetOptions, GetRange, MultipartUpload, ObjectMeta, ObjectStore as _, ObjectStoreExt as _,
    PutPayload,
};
use tokio::task::JoinSet;

use super::errors::store_error;
use super::keys::{check_key, check_names, key_hash, object, split};
use super::tree::put_create;
use super::{S3Storage, blocking, io_runtime, on_io, wait};
use crate::quota::{Charge, FileId, Tx};
use crate::state::Lease;
use crate::storage::vpath::VPath;
use crate::storage::{
    Abort, ByteSink, ClientProbe, LocalTarget, StoreError, WriteMode, unique_candidates,
};

/// The size of the first parts (the S3 minimum for every part but the last).
pub(super) const PART: usize = 5 * 1024 * 1024;
/// The largest part S3 takes.
const MAX_PART: usize = 5 * 1024 * 1024 * 1024;
/// Parts of one size before the size doubles.
const PARTS_PER_SIZE: usize = 900;

/// The size of part `n` (from 0): [`PART`], doubling every [`PARTS_PER_SIZE`] parts up to
/// [`MAX_PART`]. S3 takes at most 10 000 parts; at this pace they reach 5 TiB (the largest
/// object) while a file's parts stay within about a thousandth of its size. (Doubling every
/// 1000 would stop short, at 4.9 TiB.)
pub(super) fn part_size(n: usize) -> usize {
    let doublings = u32::try_from(n / PARTS_PER_SIZE).unwrap_or(u32::MAX);
    PART.checked_shl(doublings)
        .filter(|&size| size <= MAX_PART)
        .unwrap_or(MAX_PART)
}
/// Parts uploading at once, per upload.
const IN_FLIGHT: usize = 2;

/// What the upload writes.
enum Mode {
    /// STOR; `keep`: an interruption keeps what arrived (the name held no object at the open,
    /// and the store keeps partial uploads).
    Replace { keep: bool },
    /// APPE, REST+STOR: the first `keep` bytes of `old` (none for a new name), then the
    /// client's; `started` once they are on their way.
    Rewrite {
        old: Option<ObjectMeta>,
        keep: u64,
        started: bool,
    },
    /// STOU: create-only.
    Unique,
}

/// How an upload ends.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum End {
    Commit,
    Interrupted,
    Refused,
    Failed,
}

/// A multipart upload and its parts in flight (object_store's `WriteMultipart` has one part
/// size for the whole upload: 10 000 of 5 MiB stop at 48.8 GiB).
struct Multipart {
    upload: Box<dyn MultipartUpload>,
    tasks: JoinSet<object_store::Result<()>>,
    /// Parts sent so far.
    sent: usize,
}

impl Multipart {
    /// The size of the next part.
    fn next_size(&self) -> usize {
        part_size(self.sent)
    }

    /// Sends `part` (on the S3 runtime, the caller's).
    fn put(&mut self, part: Bytes) {
        self.tasks
            .spawn(self.upload.put_part(PutPayload::from_bytes(part)));
        self.sent += 1;
    }

    /// Waits until fewer than `max` parts are in flight (none for 0).
    async fn wait_for_capacity(&mut self, max: usize) -> object_store::Result<()> {
        while !self.tasks.is_empty() && self.tasks.len() >= max {
            match self.tasks.join_next().await {
                Some(Ok(sent)) => sent?,
                Some(Err(e)) => {
                    return Err(object_store::Error::Generic {
                        store: "S3",
                        source: Box::new(e),
                    });
                }
                None => break,
            }
        }
        Ok(())
    }

    /// Sends `rest` as the last part, waits for every part and completes the upload; aborts
    /// it on a failure.
    async fn finish(mut self, rest: Bytes) -> object_store::Result<()> {
        if !rest.is_empty() {
            self.put(rest);
        }
        if let Err(e) = self.wait_for_capacity(0).await {
            self.abort().await?;
            return Err(e);
        }
        match self.upload.complete().await {
            Ok(_) => Ok(()),
            Err(e) => {
                self.abort().await?;
                Err(e)
            }
        }
    }

    /// Aborts the upload once its parts in flight have ended: a part the server is still
    /// receiving when the abort lands would stay behind it, an orphan no one lists or removes.
    async fn abort(mut self) -> object_store::Result<()> {
        // A failed part changes nothing: the upload goes anyway.
        let _ = self.wait_for_capacity(0).await;
        self.upload.abort().await
    }
}

/// The bytes not yet sent and the multipart upload they go to, worked on by steps on the S3
/// runtime (the upload's part tasks live there). Dropped with an upload still open, it
/// aborts it: no orphan parts whatever path led here.
struct Parts {
    store: Arc<AmazonS3>,
    /// Where the kept bytes of a rewrite are read.
    reader: Arc<AmazonS3>,
    path: ObjectPath,
    buf: BytesMut,
    upload: Option<Multipart>,
}

/// A step of an upload that runs on the S3 runtime.
enum Step {
    /// Send every full part in the buffer.
    Ship,
    /// Stream the first `keep` bytes of `old` in (a rewrite's kept bytes).
    Fill { old: ObjectMeta, keep: u64 },
    /// Wait for the parts in flight.
    Settle,
}

impl Parts {
    async fn run(&mut self, step: Step) -> object_store::Result<()> {
        match step {
            Step::Ship => self.ship_full().await,
            Step::Fill { old, keep } => self.fill_from(old, keep).await,
            Step::Settle => match &mut self.upload {
                Some(upload) => upload.wait_for_capacity(0).await,
                None => Ok(()),
            },
        }
    }

    /// The size the next part needs.
    fn next_size(&self) -> usize {
        self.upload.as_ref().map_or(PART, Multipart::next_size)
    }

    /// Whether the buffer holds a full part.
    fn full(&self) -> bool {
        self.buf.len() >= self.next_size()
    }

    /// Sends every full part in the buffer, starting the multipart upload at the first.
    async fn ship_full(&mut self) -> object_store::Result<()> {
        while self.full() {
            let size = self.next_size();
            let upload = match &mut self.upload {
                Some(upload) => upload,
                None => self.upload.insert(Multipart {
                    upload: self.store.put_multipart(&self.path).await?,
                    tasks: JoinSet::new(),
                    sent: 0,
                }),
            };
            // Fewer than IN_FLIGHT before this one goes.
            upload.wait_for_capacity(IN_FLIGHT).await?;
            upload.put(self.buf.split_to(size).freeze());
        }
        Ok(())
    }

    async fn fill_from(&mut self, old: ObjectMeta, keep: u64) -> object_store::Result<()> {
        if keep == 0 {
            return Ok(());
        }
        let options = GetOptions {
            range: Some(GetRange::Bounded(0..keep)),
            if_match: old.e_tag.clone(),
            ..GetOptions::default()
        };
        let mut body = self
            .reader
            .get_opts(&old.location, options)
            .await?
            .into_stream();
        let mut got = 0u64;
        while let Some(chunk) = body.next().await {
            let chunk: Bytes = chunk?;
            got += chunk.len() as u64;
            self.buf.extend_from_slice(&chunk);
            self.ship_full().await?;
        }
        if got != keep {
            return Err(object_store::Error::Generic {
                store: "S3",
                source: format!("the kept bytes ended at {got} of {keep}").into(),
            });
        }
        Ok(())
    }

    /// Puts the object in place: the last part and the completion, or one PUT.
    async fn complete(mut self, create_only: bool) -> object_store::Result<()> {
        let rest = std::mem::take(&mut self.buf).freeze();
        match self.upload.take() {
            Some(upload) => upload.finish(rest).await,
            None if create_only => put_create(&self.store, &self.path, rest).await,
            None => self
                .store
                .put(&self.path, PutPayload::from_bytes(rest))
                .await
                .map(drop),
        }
    }

    /// Aborts the multipart upload, if one started.
    async fn abort(mut self) -> object_store::Result<()> {
        match self.upload.take() {
            Some(upload) => upload.abort().await,
            None => Ok(()),
        }
    }
}

impl Drop for Parts {
    fn drop(&mut self) {
        if let Some(upload) = self.upload.take() {
            let key = self.path.to_string();
            io_runtime().spawn(async move {
                if let Err(e) = upload.abort().await {
                    log::warn!("cannot abort the multipart upload of {key}: {e}");
                }
            });
        }
    }
}

/// One upload's state.
struct Upload {
    s3: S3Storage,
    user: String,
    target: VPath,
    key: String,
    mode: Mode,
    /// Shared with the blocking threads that charge it.
    charge: Arc<Mutex<Charge>>,
    /// Shared with the step running on the S3 runtime, which goes on if its caller is
    /// cancelled (ABOR mid-part): the end waits for it and finds every byte there. `None`
    /// once the upload has ended.
    parts: Arc<tokio::sync::Mutex<Option<Parts>>>,
    /// Bytes of the new object so far (kept ones included).
    written: u64,
    lease: Option<Lease>,
}

fn lock(charge: &Mutex<Charge>) -> std::sync::MutexGuard<'_, Charge> {
    charge.lock().unwrap_or_else(|e| e.into_inner())
}

impl Upload {
    /// Charges `n` more bytes before they go anywhere.
    async fn charge(&mut self, n: u64) -> Result<(), StoreError> {
        if self.s3.ledger(&self.user).is_none() {
            return Ok(());
        }
        let charge = Arc::clone(&self.charge);
        Ok(blocking(move || lock(&charge).add(n)).await?)
    }

    /// Runs `step` on the parts, on the S3 runtime.
    async fn step(&mut self, what: &str, step: Step) -> Result<(), StoreError> {
        let parts = Arc::clone(&self.parts);
        let result = on_io(async move {
            match parts.lock_owned().await.as_mut() {
                Some(parts) => parts.run(step).await.map_err(Some),
                None => Err(None),
            }
        })
        .await;
        match result {
            Ok(()) => Ok(()),
            Err(Some(e)) => Err(store_error(what, &self.key, e)),
            Err(None) => Err(ended()),
        }
    }

    /// A rewrite's kept bytes, once: at the first byte or an empty commit.
    async fn start(&mut self) -> Result<(), StoreError> {
        let Mode::Rewrite { old, keep, started } = &mut self.mode else {
            return Ok(());
        };
        if *started {
            return Ok(());
        }
        let (old, keep) = (old.clone(), *keep);
        if let Some(old) = old {
            self.charge(keep).await?;
            self.written = keep;
            self.step("GET", Step::Fill { old, keep }).await?;
        }
        // Only now: an upload whose kept bytes did not all arrive must never be completed.
        if let Mode::Rewrite { started, .. } = &mut self.mode {
            *started = true;
        }
        Ok(())
    }

    async fn write(&mut self, data: &[u8]) -> Result<(), StoreError> {
        self.start().await?;
        self.charge(data.len() as u64).await?;
        let full = {
            let mut parts = self.parts.lock().await;
            let parts = parts.as_mut().ok_or_else(ended)?;
            parts.buf.extend_from_slice(data);
            parts.full()
        };
        self.written += data.len() as u64;
        if full {
            self.step("upload part", Step::Ship).await?;
        }
        Ok(())
    }

    /// Whether an interruption keeps what was written.
    fn keeps(&self, end: End) -> bool {
        match (&self.mode, end) {
            (_, End::Commit) => true,
            (_, End::Refused) => false,
            (Mode::Rewrite { started, .. }, _) => *started,
            (Mode::Replace { keep }, End::Interrupted) => *keep && self.written > 0,
            (Mode::Unique, End::Interrupted) => self.written > 0,
            (Mode::Replace { .. } | Mode::Unique, End::Failed) => false,
        }
    }

    /// Ends the upload (see the module's doc). Sync: runs on a blocking thread.
    fn end(self, end: End) -> Result<(), StoreError> {
        // Waits for a step still running (its caller cancelled).
        let Some(parts) = self.parts.blocking_lock().take() else {
            return Err(ended());
        };
        if !self.keeps(end) {
            return wait(parts.abort()).map_err(|e| store_error("abort", &self.key, e));
        }
        let s3 = self.s3.clone();
        let user = self.user.clone();
        let charge = Arc::clone(&self.charge);
        let outcome = match s3.ledger(&user) {
            Some(ledger) => ledger.change(&user, |tx| self.finish(tx, parts, &charge, end)),
            None => self.finish(&mut Tx::untracked(), parts, &charge, end),
        };
        match outcome {
            Ok(true) => {
                if end != End::Commit {
                    log::info!(
                        "{}: kept {} bytes of the interrupted upload of {}",
                        self.user,
                        self.written,
                        self.target
                    );
                }
                Ok(())
            }
            // Not kept: dropped, and said why.
            Ok(false) => Ok(()),
            Err(e) => Err(e),
        }
    }

    /// Checks the target again, charges what the object adds, completes the upload: `true`.
    /// An interrupted upload that may not be kept after all is aborted: `false`.
    fn finish(
        &self,
        tx: &mut Tx<'_>,
        parts: Parts,
        charge: &Mutex<Charge>,
        end: End,
    ) -> Result<bool, StoreError> {
        let commit = end == End::Commit;
        let s3 = self.s3.clone();
        let (user, target, key) = (self.user.clone(), self.target.clone(), self.key.clone());
        let checked = wait(async move {
            if let Ok((parent, _)) = split(&target) {
                s3.need_dir(&user, &parent).await?;
            }
            if s3.probe_dir(&key).await?.is_some() {
                return Err(StoreError::IsADirectory);
            }
            s3.head(&key).await
        });
        let create_only = matches!(self.mode, Mode::Unique) || (!commit && self.is_replace());
        let checked = match checked {
            Ok(Some(_)) if create_only => Err(StoreError::AlreadyExists),
            Ok(now) => self.unchanged(now),
            Err(e) => Err(e),
        };
        let replaced = match checked {
            Ok(existing) => existing.map(|meta| meta.size),
            Err(e) => {
                self.drop_parts(parts);
                if commit {
                    return Err(e);
                }
                log::warn!(
                    "{}: the interrupted upload of {} is dropped ({e})",
                    self.user,
                    self.target
                );
                return Ok(false);
            }
        };
        let bytes = i128::from(self.written) - i128::from(replaced.unwrap_or(0));
        let files = i128::from(replaced.is_none());
        tx.settle(&mut lock(charge));
        if let Err(e) = tx.fits(bytes, files) {
            self.drop_parts(parts);
            if commit {
                return Err(e.into());
            }
            log::info!(
                "{}: the interrupted upload of {} does not fit the quota; dropped",
                self.user,
                self.target
            );
            return Ok(false);
        }
        tx.mark()?;
        wait(parts.complete(create_only)).map_err(|e| store_error("complete", &self.key, e))?;
        tx.record(bytes, files);
        Ok(true)
    }

    /// Refuses to complete a rewrite whose kept bytes no longer are the object's: another
    /// session replaced or removed it since (or created it, when there was none). Completing
    /// would undo that change; the local backend's in-place writer loses its bytes to it the
    /// same way, so the rewrite is the one dropped. [`StoreError::Io`] (451, transient: the
    /// client may send it again against the new object), with a log line.
    fn unchanged(&self, now: Option<ObjectMeta>) -> Result<Option<ObjectMeta>, StoreError> {
        let Mode::Rewrite { old, .. } = &self.mode else {
            return Ok(now);
        };
        let same = match (old, &now) {
            (None, None) => true,
            (Some(old), Some(now)) => {
                old.e_tag == now.e_tag
                    && old.size == now.size
                    && old.last_modified == now.last_modified
            }
            _ => false,
        };
        if same {
            return Ok(now);
        }
        log::warn!(
            "{}: {} changed since the rewrite opened it; the rewrite is dropped",
            self.user,
            self.target
        );
        Err(StoreError::Io(std::io::Error::other(
            "the file changed since the upload opened it",
        )))
    }

    fn is_replace(&self) -> bool {
        matches!(self.mode, Mode::Replace { .. })
    }

    /// Aborts the multipart upload, logging a failure.
    fn drop_parts(&self, parts: Parts) {
        if let Err(e) = wait(parts.abort()) {
            log::warn!("cannot abort the multipart upload of {}: {e}", self.key);
        }
    }
}

fn ended() -> StoreError {
    StoreError::Io(std::io::Error::other("the upload has already ended"))
}

/// The sink handed out; dropped unfinished, it ends its upload as interrupted.
struct S3Sink {
    target: VPath,
    upload: Option<Upload>,
}

impl S3Sink {
    /// Ends the upload as `end` on a blocking thread; decided before any await, so a
    /// cancelled caller cannot change the outcome.
    async fn end(&mut self, end: End) -> Result<(), StoreError> {
        let upload = self.upload.take().ok_or_else(ended)?;
        blocking(move || upload.end(end)).await
    }
}

#[async_trait::async_trait]
impl ByteSink for S3Sink {
    fn target(&self) -> &VPath {
        &self.target
    }

    async fn write(&mut self, data: &[u8]) -> Result<(), StoreError> {
        self.upload.as_mut().ok_or_else(ended)?.write(data).await
    }

    fn local_target(&mut self) -> Option<LocalTarget<'_>> {
        None
    }

    async fn commit(mut self: Box<Self>, client: ClientProbe) -> Result<(), StoreError> {
        let upload = self.upload.as_mut().ok_or_else(ended)?;
        let sent = match upload.start().await {
            Ok(()) => upload.step("upload part", Step::Settle).await,
            Err(e) => Err(e),
        };
        if let Err(e) = sent {
            // Bytes are missing: never kept, whatever an interruption would keep.
            if let Err(end) = self.end(End::Refused).await {
                log::warn!(
                    "a failed upload of {} did not end cleanly: {end}",
                    self.target
                );
            }
            return Err(e);
        }
        if client.gone() {
            self.end(End::Interrupted).await?;
            return Err(StoreError::Interrupted);
        }
        if self
            .upload
            .as_ref()
            .and_then(|upload| upload.lease.as_ref())
            .is_some_and(|lease| !lease.held())
        {
            // Another node may have written the object meanwhile: not replaced.
            self.end(End::Refused).await?;
            return Err(StoreError::Io(std::io::Error::other(
                crate::state::LOST_LOCK,
            )));
        }
        self.end(End::Commit).await
    }

    async fn abort(mut self: Box<Self>, why: Abort) {
        let end = match why {
            Abort::Refused => End::Refused,
            Abort::Failed => End::Failed,
        };
        if let Err(e) = self.end(end).await {
            log::warn!(
                "an aborted upload of {} did not end cleanly: {e}",
                self.target
            );
        }
    }
}

impl Drop for S3Sink {
    /// Decides the end here (an interruption), runs it in the background: the thread dropping
    /// the sink goes on at once; the user's next request waits for it (see
    /// [`S3Storage::settled`]).
    fn drop(&mut self) {
        let Some(upload) = self.upload.take() else {
            return;
        };
        let ending = upload.s3.ending(&upload.user);
        io_runtime().spawn_blocking(move || {
            let target = upload.target.clone();
            if let Err(e) = upload.end(End::Interrupted) {
                log::warn!("an interrupted upload of {target} did not end cleanly: {e}");
            }
            drop(ending);
        });
    }
}

impl S3Storage {
    /// The quota's accounting of an upload (see [`crate::quota::QuotaLedger::charge`]).
    async fn charge(
        &self,
        user: &str,
        new_file: bool,
        replaces: Option<&ObjectMeta>,
    ) -> Result<Charge, StoreError> {
        let Some(ledger) = self.ledger(user).cloned() else {
            return Ok(Charge::unlimited());
        };
        let replaces = replaces.map(|meta| FileId {
            dev: self.dev,
            ino: key_hash(meta.location.as_ref()),
            len: meta.size,
        });
        let user = user.to_owned();
        Ok(blocking(move || ledger.charge(&user, new_file, replaces)).await?)
    }

    fn sink(
        &self,
        user: &str,
        (target, key): (VPath, String),
        mode: Mode,
        charge: Charge,
        lease: Option<Lease>,
    ) -> Result<Box<dyn ByteSink>, StoreError> {
        let parts = Parts {
            store: Arc::clone(&self.store),
            reader: Arc::clone(&self.reader),
            path: object(&key)?,
            buf: BytesMut::new(),
            upload: None,
        };
        Ok(Box::new(S3Sink {
            target: target.clone(),
            upload: Some(Upload {
                s3: self.clone(),
                user: user.to_owned(),
                target,
                key,
                mode,
                charge: Arc::new(Mutex::new(charge)),
                parts: Arc::new(tokio::sync::Mutex::new(Some(parts))),
                written: 0,
                lease,
            }),
        }))
    }

    /// Starts an upload (see [`crate::storage::Storage::open_write`]).
    pub(super) async fn open_upload(
        &self,
        user: &str,
        path: &VPath,
        mode: WriteMode,
    ) -> Result<Box<dyn ByteSink>, StoreError> {
        let (parent, _) = split(path)?;
        let key = self.key(user, path)?;
        check_key(&key)?;
        self.need_dir(user, &parent).await?;
        if self.probe_dir(&key).await?.is_some() {
            return Err(StoreError::IsADirectory);
        }
        let existing = self.head(&key).await?;
        if existing.is_none() {
            self.check_limits(path, (0, 0))?;
        }
        let max = self.settings.rewrite_max_bytes;
        let too_big = |meta: &ObjectMeta| meta.size > max;
        let at = (path.clone(), key.clone());
        match mode {
            WriteMode::Replace => {
                let charge = self
                    .charge(user, existing.is_none(), existing.as_ref())
                    .await?;
                let keep = existing.is_none() && self.keep_partial;
                self.sink(user, at, Mode::Replace { keep }, charge, None)
            }
            WriteMode::Append => {
                if existing.as_ref().is_some_and(too_big) {
                    return Err(StoreError::TooBigToRewrite(max));
                }
                let lease = self.write_lock(&key).await?;
                let charge = self
                    .charge(user, existing.is_none(), existing.as_ref())
                    .await?;
                let keep = existing.as_ref().map_or(0, |meta| meta.size);
                let mode = Mode::Rewrite {
                    old: existing,
                    keep,
                    started: false,
                };
                self.sink(user, at, mode, charge, Some(lease))
            }
            WriteMode::At(offset) => {
                let Some(old) = existing else {
                    return Err(StoreError::NotFound);
                };
                if offset > old.size {
                    return Err(StoreError::BadOffset);
                }
                if too_big(&old) {
                    return Err(StoreError::TooBigToRewrite(max));
                }
                let lease = self.write_lock(&key).await?;
                let charge = self.charge(user, false, Some(&old)).await?;
                let mode = Mode::Rewrite {
                    old: Some(old),
                    keep: offset,
                    started: false,
                };
                self.sink(user, at, mode, charge, Some(lease))
            }
            WriteMode::Unique => self.create_unique(user, path).await,
        }
    }

    /// STOU: the first name among `name`, `name.1`, ... `name.999` next to `path` that holds
    /// nothing and no other upload has picked, locked and with its file slot reserved.
    async fn create_unique(
        &self,
        user: &str,
        path: &VPath,
    ) -> Result<Box<dyn ByteSink>, StoreError> {
        for found in unique_candidates(path) {
            let (_, candidate) = found?;
            check_names(&candidate)?;
            self.check_limits(&candidate, (0, 0))?;
            let key = self.key(user, &candidate)?;
            check_key(&key)?;
            if self.probe_dir(&key).await?.is_some() || self.head(&key).await?.is_some() {
                continue;
            }
            // Another STOU (or an APPE) has picked this name and not created it yet.
            let Ok(lease) = self.write_lock(&key).await else {
                continue;
            };
            let charge = self.charge(user, true, None).await?;
            return self.sink(user, (candidate, key), Mode::Unique, charge, Some(lease));
        }
        Err(StoreError::AlreadyExists)
    }
}
