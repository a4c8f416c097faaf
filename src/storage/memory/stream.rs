//! What the memory backend hands out: a [`MemorySource`] reading a file's inode, and a
//! [`MemorySink`] for an upload, staged in a buffer (STOR) or written in place (APPE,
//! REST+STOR, STOU) under its write lock, ending as the [`ByteSink`] contract says.

use std::io;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::SystemTime;

use tokio::io::{AsyncRead, ReadBuf};

use super::tree::{Inode, Node, lock};
use super::{MemoryStorage, write_target};
use crate::quota::Charge;
use crate::state::Lease;
use crate::storage::vpath::VPath;
use crate::storage::{Abort, ByteSink, ByteSource, ClientProbe, LocalTarget, StoreError};

/// A file being read: its inode, so a rename, replacement or removal meanwhile changes
/// nothing, while an in-place upload's bytes show as they would through a descriptor.
#[derive(Debug)]
pub(super) struct MemorySource {
    inode: Arc<Inode>,
    pos: u64,
    size: u64,
}

impl MemorySource {
    /// Reads `inode` from `offset`.
    ///
    /// # Errors
    /// [`StoreError::BadOffset`] beyond the end.
    pub(super) fn new(inode: Arc<Inode>, offset: u64) -> Result<MemorySource, StoreError> {
        let size = inode.len();
        if offset > size {
            return Err(StoreError::BadOffset);
        }
        Ok(MemorySource {
            inode,
            pos: offset,
            size,
        })
    }
}

impl AsyncRead for MemorySource {
    fn poll_read(
        mut self: Pin<&mut Self>,
        _: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let this = &mut *self;
        let body = lock(&this.inode.body);
        let start = usize::try_from(this.pos)
            .unwrap_or(usize::MAX)
            .min(body.bytes.len());
        let n = buf.remaining().min(body.bytes.len() - start);
        buf.put_slice(&body.bytes[start..start + n]);
        this.pos += n as u64;
        Poll::Ready(Ok(()))
    }
}

impl ByteSource for MemorySource {
    fn size(&self) -> u64 {
        self.size
    }

    fn local_file(&self) -> Option<&std::fs::File> {
        None
    }
}

/// How an in-place upload opens its file when the first byte arrives.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Opening {
    /// APPE: append, created if missing (when a file slot fits then).
    Append,
    /// REST+STOR: the existing file from the marker; never created.
    Existing,
    /// STOU: a new file under the name picked, its file slot reserved.
    New,
}

/// The target of an in-place upload: nothing changes until its first byte (or an empty
/// upload's commit); it holds the file's write lock throughout.
#[derive(Debug)]
pub(super) struct InPlace {
    /// The directory holding the target, and its number.
    dir: VPath,
    dir_id: u64,
    name: String,
    opening: Opening,
    file: Option<Arc<Inode>>,
    /// REST: truncate to this when opening, then write from here; `None`: append.
    pos: Option<u64>,
    /// The length after opening (and truncating): where a roll back returns to.
    start: u64,
    created: bool,
    _lease: Lease,
}

impl InPlace {
    pub(super) fn new(
        (dir, dir_id, name): (VPath, u64, String),
        opening: Opening,
        pos: Option<u64>,
        lease: Lease,
    ) -> InPlace {
        InPlace {
            dir,
            dir_id,
            name,
            opening,
            file: None,
            pos,
            start: 0,
            created: false,
            _lease: lease,
        }
    }
}

#[derive(Debug)]
enum Kind {
    /// STOR: the bytes so far, put in place at the commit.
    Staged {
        bytes: Vec<u8>,
        modified: SystemTime,
        /// Kept under the target's name if interrupted (a new name, partial uploads kept).
        keep: bool,
    },
    InPlace(InPlace),
}

/// An upload to memory. Dropped without a commit, it is an interrupted upload.
#[derive(Debug)]
pub(super) struct MemorySink {
    store: MemoryStorage,
    user: Arc<str>,
    target: VPath,
    charge: Charge,
    kind: Kind,
    /// Committed or aborted: nothing is left to do when it is dropped.
    ended: bool,
}

impl MemorySink {
    /// A staged upload of `target`; `keep`: kept if interrupted.
    pub(super) fn staged(
        store: &MemoryStorage,
        user: &str,
        target: VPath,
        charge: Charge,
        keep: bool,
    ) -> Box<dyn ByteSink> {
        MemorySink::boxed(
            store,
            user,
            target,
            charge,
            Kind::Staged {
                bytes: Vec::new(),
                modified: SystemTime::now(),
                keep,
            },
        )
    }

    /// An in-place upload of `target` at `place`.
    pub(super) fn in_place(
        store: &MemoryStorage,
        user: &str,
        target: VPath,
        charge: Charge,
        place: InPlace,
    ) -> Box<dyn ByteSink> {
        MemorySink::boxed(store, user, target, charge, Kind::InPlace(place))
    }

    fn boxed(
        store: &MemoryStorage,
        user: &str,
        target: VPath,
        charge: Charge,
        kind: Kind,
    ) -> Box<dyn ByteSink> {
        Box::new(MemorySink {
            store: store.clone(),
            user: Arc::from(user),
            target,
            charge,
            kind,
            ended: false,
        })
    }

    /// The in-place file, opened (created, truncated at the marker) on first use.
    fn opened(&mut self) -> Result<Arc<Inode>, StoreError> {
        let Kind::InPlace(place) = &mut self.kind else {
            return Err(StoreError::Io(io::Error::other("not an in-place upload")));
        };
        if let Some(file) = &place.file {
            return Ok(Arc::clone(file));
        }
        let (store, user, charge) = (&self.store, &*self.user, &mut self.charge);
        let (inode, created) = store.change(user, |tx, tree| {
            let id = tree.next_id();
            let dir = tree.dir_by_id(user, &place.dir, place.dir_id)?;
            match (place.opening, dir.entries.get(&place.name)) {
                (_, Some(Node::Dir(_))) => Err(StoreError::IsADirectory),
                (Opening::New, Some(Node::File(_))) => Err(StoreError::AlreadyExists),
                (_, Some(Node::File(inode))) => Ok((Arc::clone(inode), false)),
                (Opening::Existing, None) => Err(StoreError::NotFound),
                (Opening::Append | Opening::New, None) => {
                    // The file slot reserved at the open becomes usage now.
                    tx.settle(charge);
                    tx.fits(0, 1)?;
                    tx.mark()?;
                    let inode = Inode::new(id, Vec::new(), SystemTime::now());
                    dir.insert(place.name.clone(), Node::File(Arc::clone(&inode)));
                    tx.record(0, 1);
                    Ok((inode, true))
                }
            }
        })?;
        place.created = created;
        if let Some(offset) = place.pos {
            // Resuming rewrites everything after the marker (RFC 3659 §5.3).
            store.account(user, |tx| {
                let mut body = lock(&inode.body);
                let len = body.bytes.len() as u64;
                if offset > len {
                    return Err(StoreError::Io(io::Error::other(
                        "the file shrank below the restart offset",
                    )));
                }
                tx.mark()?;
                body.bytes
                    .truncate(usize::try_from(offset).unwrap_or(usize::MAX));
                body.modified = SystemTime::now();
                if body.linked {
                    tx.record(i128::from(offset) - i128::from(len), 0);
                }
                Ok(())
            })?;
        }
        place.start = inode.len();
        place.file = Some(Arc::clone(&inode));
        Ok(inode)
    }

    /// Writes `data` in place, charged by what the file grows, if it is still in the tree.
    fn write_in_place(&mut self, data: &[u8]) -> Result<(), StoreError> {
        let inode = self.opened()?;
        let Kind::InPlace(place) = &mut self.kind else {
            return Err(StoreError::Io(io::Error::other("not an in-place upload")));
        };
        let pos = place.pos;
        self.store.account(&self.user, |tx| {
            let mut body = lock(&inode.body);
            let len = body.bytes.len();
            let at = pos.map_or(len, |p| usize::try_from(p).unwrap_or(usize::MAX));
            let end = at.saturating_add(data.len());
            let growth = end.saturating_sub(len) as u64;
            tx.fits(i128::from(growth), 0)?;
            tx.mark()?;
            if body.bytes.len() < end {
                body.bytes.resize(end, 0);
            }
            body.bytes[at..end].copy_from_slice(data);
            body.modified = SystemTime::now();
            if body.linked {
                tx.record(i128::from(growth), 0);
            }
            Ok(())
        })?;
        if let Some(p) = place.pos.as_mut() {
            *p += data.len() as u64;
        }
        Ok(())
    }

    /// After a quota refusal: the in-place file goes back to its length when it was opened,
    /// or away if this upload created it (while its name still leads to it; else emptied).
    fn roll_back(&mut self) {
        let Kind::InPlace(place) = &self.kind else {
            return;
        };
        let Some(inode) = &place.file else {
            return;
        };
        let result = self.store.change(&self.user, |tx, tree| {
            tx.mark()?;
            if place.created {
                let ours = tree
                    .dir_by_id(&self.user, &place.dir, place.dir_id)
                    .ok()
                    .filter(|dir| {
                        matches!(dir.entries.get(&place.name),
                            Some(Node::File(f)) if Arc::ptr_eq(f, inode))
                    });
                if let Some(dir) = ours {
                    dir.remove(&place.name);
                    tx.record(-i128::from(inode.unlink()), -1);
                    return Ok(());
                }
            }
            let start = if place.created { 0 } else { place.start };
            let mut body = lock(&inode.body);
            let len = body.bytes.len() as u64;
            body.bytes
                .truncate(usize::try_from(start).unwrap_or(usize::MAX));
            if body.linked {
                tx.record(i128::from(start.min(len)) - i128::from(len), 0);
            }
            Ok(())
        });
        if let Err(e) = result {
            log::error!("cannot roll back an upload of {}: {e}", self.target);
        }
    }

    /// Puts what an interrupted staged upload received in place, as a commit would, if the
    /// name still holds nothing and the bytes fit the quota. Returns the bytes kept.
    fn keep_partial(&mut self) -> Result<Option<u64>, StoreError> {
        let Kind::Staged {
            bytes, modified, ..
        } = &mut self.kind
        else {
            return Ok(None);
        };
        if bytes.is_empty() {
            // Nothing arrived (no data connection, say): no empty file to resume.
            return Ok(None);
        }
        let (user, target) = (&*self.user, &self.target);
        self.store.change(user, |tx, tree| {
            if write_target(tree, user, target)?.existing.is_some() {
                log::warn!(
                    "{user}: {target} was created meanwhile; the interrupted upload is dropped"
                );
                return Ok(None);
            }
            let size = bytes.len() as u64;
            if tx.fits(i128::from(size), 1).is_err() {
                log::info!(
                    "{user}: the interrupted upload of {target} does not fit the quota; dropped"
                );
                return Ok(None);
            }
            tx.mark()?;
            let inode = Inode::new(tree.next_id(), std::mem::take(bytes), *modified);
            let (parent, name) = super::tree::split(target)?;
            tree.dir_mut(user, &parent)?
                .insert(name.to_owned(), Node::File(inode));
            tx.record(i128::from(size), 1);
            Ok(Some(size))
        })
    }

    /// Puts a staged upload in place, measured again against the file it replaces now.
    fn commit_staged(&mut self) -> Result<(), StoreError> {
        let Kind::Staged {
            bytes, modified, ..
        } = &mut self.kind
        else {
            return Ok(());
        };
        // Outlives the change: dropping a charge takes the user's quota lock.
        let mut charge = std::mem::take(&mut self.charge);
        let (user, target) = (&*self.user, &self.target);
        self.store.change(user, |tx, tree| {
            let existing = write_target(tree, user, target)?.existing;
            let size = bytes.len() as u64;
            let replaced = existing.as_ref().map(|inode| inode.len());
            let grown = i128::from(size) - i128::from(replaced.unwrap_or(0));
            let files = i128::from(replaced.is_none());
            tx.settle(&mut charge);
            tx.fits(grown, files)?;
            tx.mark()?;
            let inode = Inode::new(tree.next_id(), std::mem::take(bytes), *modified);
            let (parent, name) = super::tree::split(target)?;
            tree.dir_mut(user, &parent)?
                .insert(name.to_owned(), Node::File(inode));
            if let Some(old) = existing {
                old.unlink();
            }
            tx.record(grown, files);
            Ok(())
        })
    }
}

impl Drop for MemorySink {
    fn drop(&mut self) {
        if self.ended {
            return;
        }
        // Its reservations go before the kept bytes are charged as usage.
        drop(std::mem::take(&mut self.charge));
        if !matches!(self.kind, Kind::Staged { keep: true, .. }) {
            return;
        }
        match self.keep_partial() {
            Ok(Some(bytes)) => log::info!(
                "{}: kept {bytes} bytes of the interrupted upload of {} for a resume",
                self.user,
                self.target
            ),
            Ok(None) => {}
            Err(e) => log::warn!(
                "{}: cannot keep the interrupted upload of {}: {e}",
                self.user,
                self.target
            ),
        }
    }
}

#[async_trait::async_trait]
impl ByteSink for MemorySink {
    fn target(&self) -> &VPath {
        &self.target
    }

    async fn write(&mut self, data: &[u8]) -> Result<(), StoreError> {
        match &mut self.kind {
            Kind::Staged {
                bytes, modified, ..
            } => {
                self.charge.add(data.len() as u64)?;
                bytes.extend_from_slice(data);
                *modified = SystemTime::now();
                Ok(())
            }
            Kind::InPlace(_) => self.write_in_place(data),
        }
    }

    fn local_target(&mut self) -> Option<LocalTarget<'_>> {
        None
    }

    async fn commit(mut self: Box<Self>, client: ClientProbe) -> Result<(), StoreError> {
        match &mut self.kind {
            Kind::Staged { keep, .. } => {
                if client.gone() {
                    // Dropped as an interrupted upload: kept, if it may be.
                    return Err(StoreError::Interrupted);
                }
                // A complete upload that cannot be committed is dropped, not kept.
                *keep = false;
                let result = self.commit_staged();
                self.ended = true;
                result
            }
            Kind::InPlace(_) => {
                // An empty upload still creates or truncates its target.
                let opened = self.opened().map(drop);
                self.ended = true;
                // The file's lock goes before the client can send its next command.
                drop(self);
                opened?;
                if client.gone() {
                    return Err(StoreError::Interrupted);
                }
                Ok(())
            }
        }
    }

    async fn abort(mut self: Box<Self>, why: Abort) {
        match why {
            Abort::Refused => self.roll_back(),
            Abort::Failed => {}
        }
        // A staged upload keeps nothing after either; an in-place one keeps what it wrote
        // after a failure, as after any other interruption.
        if let Kind::Staged { keep, .. } = &mut self.kind {
            *keep = false;
        }
    }
}
