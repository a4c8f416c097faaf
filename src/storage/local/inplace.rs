//! In-place uploads (APPE, REST+STOR, STOU) and the write lock each holds on its file.

use std::ffi::{OsStr, OsString};
use std::fs::File;
use std::io::{self, Seek, SeekFrom, Write};
use std::os::unix::fs::MetadataExt as _;

use cap_std::fs::{Dir, MetadataExt as _, OpenOptions};

use crate::quota::Charge;
use crate::state::Lease;
use crate::storage::vpath::VPath;
use crate::storage::{StoreError, unique_candidates};

use super::fs::*;
use super::jail::*;
use super::upload::*;

/// How an in-place upload opens its target when the first byte arrives.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Opening {
    /// APPE: append to the file, created if it is missing (when a file slot fits then).
    Append,
    /// REST+STOR: the existing file, written from the marker; never created.
    Existing,
    /// STOU: a new file (`O_EXCL`) under the name picked, its file slot reserved.
    New,
}

/// The target of an in-place upload. Nothing on disk changes until the first byte arrives
/// (or an empty transfer completes): only then is the file opened, created or truncated, so a
/// transfer that is refused or never connects leaves the file as it was. It is reached only
/// through the handle of its directory (opened beneath the home) and its name there, never
/// following a link at that name, and once open only through the open file, so a directory
/// swapped for a link meanwhile cannot lead it out of the home. Holds the file's write lock
/// throughout.
#[derive(Debug)]
pub struct InPlace {
    /// The directory holding the target.
    pub(super) dir: Dir,
    /// The target's name in `dir`.
    pub(super) name: OsString,
    pub(super) opening: Opening,
    pub(super) file: Option<File>,
    /// REST: truncate to this when opening, then write from here; `None`: append.
    pub(super) pos: Option<u64>,
    /// The length after opening (and truncating): where a roll back returns to.
    pub(super) start: u64,
    pub(super) created: bool,
    pub(super) lock: WriteLock,
}

impl InPlace {
    /// Opens the target in `dir` by name: the file and whether this created it, or `None` when
    /// it would have to create it and `may_create` is false.
    pub(super) fn open(&self, may_create: bool) -> io::Result<Option<(File, bool)>> {
        let open = |options: &OpenOptions| self.dir.open_with(&self.name, options);
        let (file, created) = match self.opening {
            Opening::New if !may_create => return Ok(None),
            Opening::New => (open(in_place_options().write(true).create_new(true))?, true),
            Opening::Existing => (open(in_place_options().write(true))?, false),
            Opening::Append => match open(in_place_options().append(true)) {
                Err(e) if e.kind() == io::ErrorKind::NotFound => {
                    if !may_create {
                        return Ok(None);
                    }
                    // create_new: a name that appeared meanwhile is not taken over.
                    (
                        open(in_place_options().append(true).create_new(true))?,
                        true,
                    )
                }
                opened => (opened?, false),
            },
        };
        let file = file.into_std();
        if !file.metadata()?.is_file() {
            return Err(io::ErrorKind::NotFound.into());
        }
        Ok(Some((file, created)))
    }

    /// The open file, opening (creating, truncating) it first if this is the first use.
    pub(super) fn opened(&mut self, charge: &mut Charge) -> Result<&File, UploadError> {
        if self.file.is_none() {
            let (mut file, created) =
                charge.open_in_place(|may_create| self.open(may_create))??;
            self.created = created;
            if let Some(offset) = self.pos {
                let len = file.metadata()?.len();
                if offset > len {
                    return Err(io::Error::other("the file shrank below the restart offset").into());
                }
                // Resuming rewrites everything after the marker (RFC 3659 §5.3).
                truncate(charge, &file, offset)?;
                file.seek(SeekFrom::Start(offset))?;
            }
            self.start = file.metadata()?.len();
            self.file = Some(file);
        }
        self.file
            .as_ref()
            .ok_or_else(|| io::Error::other("the upload's file is not open").into())
    }

    pub(super) fn write(&mut self, charge: &mut Charge, data: &[u8]) -> Result<(), UploadError> {
        if !self.lock.lease.held() {
            return Err(io::Error::other(crate::state::LOST_LOCK).into());
        }
        let pos = self.pos;
        let file = self.opened(charge)?;
        let n = data.len() as u64;
        let bound = move |size: u64| pos.map_or(n, |p| (p + n).saturating_sub(size));
        let mut writer = file;
        charge.grow(file, bound, || writer.write_all(data))??;
        if let Some(p) = self.pos.as_mut() {
            *p += n;
        }
        Ok(())
    }

    pub(super) fn roll_back(&mut self, charge: &mut Charge) {
        let Some(file) = &self.file else {
            // Never opened: nothing changed.
            return;
        };
        let result = if self.created {
            // Remove the name only if it still leads to this upload's own file; else (renamed
            // away meanwhile) empty the file itself.
            charge
                .unlink(file, || {
                    let ours = file.metadata()?;
                    match self.dir.symlink_metadata(&self.name) {
                        Ok(m) if (m.dev(), m.ino()) == (ours.dev(), ours.ino()) => {
                            self.dir.remove_file(&self.name).map(|()| true)
                        }
                        _ => Ok(false),
                    }
                })
                .and_then(|()| match file.metadata()?.nlink() {
                    0 => Ok(()),
                    _ => truncate(charge, file, 0),
                })
        } else {
            truncate(charge, file, self.start)
        };
        if let Err(e) = result {
            log::error!("cannot roll back an upload of {:?}: {e}", self.name);
        }
    }
}

/// Truncates an in-place upload's `file` to `len`, charged.
pub(super) fn truncate(charge: &mut Charge, file: &File, len: u64) -> io::Result<()> {
    charge
        .grow(file, |_| 0, || file.set_len(len))
        .map_err(io::Error::other)?
}

/// Exclusive right to write one file in place; released on drop. Two in-place writers of one
/// file would interleave their bytes, so the second is refused ([`StoreError::Busy`]).
#[derive(Debug)]
pub struct WriteLock {
    /// The shared state's lock on the file, held for its drop.
    pub(super) lease: Lease,
}

impl LocalFs {
    /// An in-place upload of `target` (`name` in `dir`), opened as `opening` says when its
    /// first byte arrives; `pos` is the REST offset.
    pub(super) fn in_place(
        target: VPath,
        (dir, name): (Dir, OsString),
        lock: WriteLock,
        charge: Charge,
        opening: Opening,
        pos: Option<u64>,
    ) -> Upload {
        Upload {
            target,
            finish: Finish::InPlace(InPlace {
                dir,
                name,
                opening,
                file: None,
                pos,
                start: 0,
                created: false,
                lock,
            }),
            charge,
        }
    }

    pub(super) fn lock(&self, key: LockKey) -> Result<WriteLock, StoreError> {
        match self.state.write_lock(&key) {
            Ok(Some(lease)) => Ok(WriteLock { lease }),
            Ok(None) => Err(StoreError::Busy),
            Err(e) => Err(StoreError::Io(io::Error::other(e))),
        }
    }

    /// STOU: picks the first free name among `name`, `name.1`, ... `name.999` next to
    /// `path`, locked and with its file slot reserved; the file is created (`O_EXCL`, through
    /// the directory's handle) when the first byte arrives.
    pub(super) fn create_unique(&self, user: &str, path: &VPath) -> Result<Upload, StoreError> {
        let home = self.home(user)?;
        let parent = path.parent().unwrap_or_else(VPath::root);
        let dir = open_dir(&home, &relative(&parent)?)?;
        for found in unique_candidates(path) {
            let (name, candidate) = found?;
            if name.len() > NAME_MAX {
                return Err(StoreError::TooLong);
            }
            self.check_limits(user, &candidate, (0, 0))?;
            // Any entry, a link included, takes the name.
            if lstat(&dir, OsStr::new(&name))?.is_some() {
                continue;
            }
            // Another STOU (or an APPE) has picked this name and not created it yet.
            let Ok(lock) = self.lock(lock_key(&dir, OsStr::new(&name))?) else {
                continue;
            };
            let charge = self.charge(user, true, None)?;
            return Ok(Self::in_place(
                candidate,
                (dir, name.into()),
                lock,
                charge,
                Opening::New,
                None,
            ));
        }
        Err(StoreError::AlreadyExists)
    }
}
