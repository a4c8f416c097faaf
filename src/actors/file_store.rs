//! FileStore: the home-directory jail and every file operation a session asks for.
//!
//! Owns the [`Storage`] trait (object-safe, so another backend can replace the local one),
//! [`LocalStorage`] (files under `homes_dir/<user>`), [`StoreError`], and the [`FileStore`]
//! actor with its messages. The actor runs on a `SyncArbiter` because `std::fs` blocks; it
//! resolves, authorises and opens, and hands back file handles: bulk bytes never pass
//! through its mailbox.
//!
//! The jail: a [`VPath`] cannot contain `..`, and every path is resolved from the home's
//! directory handle with `cap-std` (`openat2` with `RESOLVE_BENEATH`, or a walk one name at a
//! time with `O_NOFOLLOW`), so no lookup ever leaves the home, even while another process swaps
//! a directory for a link: symlinks (which operators may create) are followed only while they
//! stay inside, and operations then act on handles (the directory holding a name, the opened
//! file), never on a path looked up again. Anything outside, dangling, or not a regular file or
//! directory looks exactly like a missing entry. Absolute links lead out by definition.

use std::collections::HashMap;
use std::ffi::{OsStr, OsString};
use std::fs::{self, File};
use std::io::{self, Seek, SeekFrom, Write};
use std::os::unix::ffi::OsStrExt as _;
use std::os::unix::fs::{DirBuilderExt, MetadataExt as _};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime};

use actix::{Actor, Addr, Context, Handler, Message, ResponseFuture, SyncArbiter, SyncContext};
use cap_std::ambient_authority;
use cap_std::fs::{Dir, Metadata, MetadataExt as _, OpenOptions, OpenOptionsExt as _};
use rustix::fs::{AtFlags, Mode, OFlags, Timespec, Timestamps, UTIME_OMIT, chmodat, utimensat};
use rustix::io::Errno;
use rustix::path::DecInt;
use rustix_linux_procfs::proc_self_fd;
use tokio::sync::Semaphore;

use crate::codec::entry::{FileInfo, FileKind};
use crate::codec::glob::NamePattern;
use crate::config::Config;
use crate::quota::{Charge, DIR_BYTES, FileId, QuotaError, QuotaLedger, QuotaReport, Tx};
use crate::state::{Lease, LocalState, SharedState};
use crate::storage::vpath::VPath;
use crate::storage::{
    ANONYMOUS, ClientProbe, GLOB_TIME_LIMIT, HashAlgo, Listing, StoreError, WriteMode,
};

/// A storage backend: every file operation, already confined to one user's home.
///
/// Object-safe (no generic methods), so sessions can share an `Arc<dyn Storage>`.
pub trait Storage: Send + Sync + 'static {
    /// Create the user's home directory; succeeds if it already exists.
    ///
    /// # Errors
    ///
    /// [`StoreError::NotFound`] for a name that cannot be a home ("", ".", "..", contains '/').
    fn create_home(&self, user: &str) -> Result<(), StoreError>;

    /// Describe one file or directory.
    ///
    /// # Errors
    ///
    /// [`StoreError::NotFound`] if it does not exist or lies outside the home.
    fn stat(&self, user: &str, path: &VPath) -> Result<FileInfo, StoreError>;

    /// A directory's entries sorted by name; for a file, a one-entry listing of that file.
    /// Entries that lead outside the home, dangle, or are special files are left out.
    ///
    /// # Errors
    ///
    /// [`StoreError::NotFound`] if `path` does not exist or lies outside the home.
    fn list(&self, user: &str, path: &VPath) -> Result<Listing, StoreError>;

    /// The entries of directory `dir` whose names match `pattern`, sorted by name, left out as
    /// for `list`; the directory is read under the same entry limit, and within a deadline.
    ///
    /// # Errors
    ///
    /// As for `list`; [`StoreError::NotADirectory`] if `dir` is a file;
    /// [`StoreError::TimedOut`] past the deadline.
    fn glob(&self, user: &str, dir: &VPath, pattern: &NamePattern) -> Result<Listing, StoreError>;

    /// Open a regular file for reading, positioned at `offset`.
    ///
    /// # Errors
    ///
    /// [`StoreError::IsADirectory`] for a directory; [`StoreError::NotFound`] as for `stat`.
    fn open_read(&self, user: &str, path: &VPath, offset: u64) -> Result<ReadHandle, StoreError>;

    /// Prepare an upload. [`WriteMode::Replace`] writes a new temporary file in the staging
    /// dir (committed by [`Storage::commit`]); the other modes write the target in place while
    /// holding its write lock, and open, create or truncate it only when the first byte
    /// arrives ([`InPlace`]). The target is checked now: its parent must be an existing
    /// directory inside the jail and it must not be a directory.
    ///
    /// # Errors
    ///
    /// [`StoreError::IsADirectory`], [`StoreError::NotADirectory`] (parent is a file),
    /// [`StoreError::NotFound`] (parent missing or outside the home; or a missing file for
    /// `At`), [`StoreError::Busy`] (another in-place writer has the file),
    /// [`StoreError::BadOffset`] (`At` beyond the end), [`StoreError::TooLong`] (a new file
    /// past the path limits), [`StoreError::QuotaExceeded`] (a new file past the file limit).
    fn open_write(&self, user: &str, path: &VPath, mode: WriteMode) -> Result<Upload, StoreError>;

    /// Atomically rename the staged temporary file over its target, re-checking the jail; the
    /// file is synced to disk before the rename and its directory after it. On error the
    /// temporary file is removed and the old target is left intact.
    ///
    /// # Errors
    ///
    /// As for [`Storage::open_write`], if the target changed since; [`StoreError::NoSpace`];
    /// [`StoreError::QuotaExceeded`] when what the upload adds, measured against the file it
    /// replaces now (not when it started), does not fit.
    fn commit(&self, staged: StagedUpload) -> Result<(), StoreError>;

    /// Create a directory.
    ///
    /// # Errors
    ///
    /// [`StoreError::AlreadyExists`]; [`StoreError::NotFound`] if the parent is missing;
    /// [`StoreError::TooLong`] past the path limits.
    fn mkdir(&self, user: &str, path: &VPath) -> Result<(), StoreError>;

    /// Remove an empty directory; never the home itself.
    ///
    /// # Errors
    ///
    /// [`StoreError::NotEmpty`], [`StoreError::NotADirectory`] (also for a symlink),
    /// [`StoreError::PermissionDenied`] for "/".
    fn rmdir(&self, user: &str, path: &VPath) -> Result<(), StoreError>;

    /// Remove a file or a symlink (the link itself, not its target).
    ///
    /// # Errors
    ///
    /// [`StoreError::IsADirectory`] for a directory.
    fn remove(&self, user: &str, path: &VPath) -> Result<(), StoreError>;

    /// Rename a file, directory or symlink. Replaces an existing file at `to`, as rename(2)
    /// does.
    ///
    /// # Errors
    ///
    /// [`StoreError::PermissionDenied`] if either path is "/"; [`StoreError::InvalidName`] when
    /// moving a directory into its own subtree; [`StoreError::TooLong`] when the moved tree
    /// would pass the path limits.
    fn rename(&self, user: &str, from: &VPath, to: &VPath) -> Result<(), StoreError>;

    /// Set the modification time of a file or directory (MFMT).
    ///
    /// # Errors
    ///
    /// [`StoreError::NotFound`] as for `stat`.
    fn set_modified(&self, user: &str, path: &VPath, time: SystemTime) -> Result<(), StoreError>;

    /// Set the permission bits (at most 0o777) of a file or directory (SITE CHMOD), never of
    /// the home itself.
    ///
    /// # Errors
    ///
    /// [`StoreError::NotFound`] as for `stat`; [`StoreError::PermissionDenied`] for the home.
    fn chmod(&self, user: &str, path: &VPath, mode: u32) -> Result<(), StoreError>;

    /// Digest of a regular file's contents (HASH): lowercase hex, and the file size.
    ///
    /// # Errors
    ///
    /// [`StoreError::IsADirectory`]; [`StoreError::NotFound`] as for `stat`.
    fn hash(&self, user: &str, path: &VPath, algo: HashAlgo) -> Result<(String, u64), StoreError>;

    /// The user's usage and limits (SITE QUOTA).
    ///
    /// # Errors
    ///
    /// [`StoreError::Io`] when the usage cannot be read or counted.
    fn quota(&self, user: &str) -> Result<QuotaReport, StoreError>;
}

/// A regular file opened for reading.
#[derive(Debug)]
pub struct ReadHandle {
    /// The open file, positioned at the requested offset.
    pub file: File,
    /// The file's full size in bytes (not reduced by the offset).
    pub size: u64,
}

/// An upload in progress: where its bytes go, and how it ends. Write it with
/// [`Upload::write`], which charges the quota first.
#[derive(Debug)]
pub struct Upload {
    /// The path the client sees (for STOU, the name chosen).
    pub target: VPath,
    /// The quota accounting. Declared before `finish`, so that it is dropped first: its
    /// reservations are given back before an interrupted upload is kept (which charges the
    /// bytes as usage), and an in-place upload's growth is in the ledger before its lock goes.
    pub charge: Charge,
    /// Where the bytes go and what completes it.
    pub finish: Finish,
}

/// Where an upload's bytes go, and how it is completed.
#[derive(Debug)]
pub enum Finish {
    /// STOR: a temporary file; pass `staged` to [`Storage::commit`] (or [`CommitUpload`]) once
    /// every byte is written. Reserve with [`Charge::add`] before writing to `file` directly.
    Staged {
        /// The temporary file.
        file: File,
        /// What the commit needs.
        staged: StagedUpload,
    },
    /// APPE, REST+STOR, STOU: the target itself, opened only when the first byte arrives.
    InPlace(InPlace),
}

/// Why a chunk of an upload could not be written.
#[derive(Debug, thiserror::Error)]
pub enum UploadError {
    /// Refused by the quota (552), or the ledger is unavailable (451).
    #[error(transparent)]
    Quota(#[from] QuotaError),
    /// Writing the file failed (451).
    #[error(transparent)]
    Io(#[from] io::Error),
}

impl Upload {
    /// Writes the next chunk, charged to the quota before it reaches the file, so the file
    /// never holds a byte beyond the limit.
    ///
    /// # Errors
    /// [`UploadError::Quota`] (nothing of the chunk is written), [`UploadError::Io`].
    pub fn write(&mut self, data: &[u8]) -> Result<(), UploadError> {
        match &mut self.finish {
            Finish::Staged { file, .. } => {
                self.charge.add(data.len() as u64)?;
                Ok(file.write_all(data)?)
            }
            Finish::InPlace(place) => place.write(&mut self.charge, data),
        }
    }

    /// After the last byte of a successful transfer: an in-place upload that received none
    /// still creates (APPE, STOU) or truncates (REST+STOR) its file, as an empty upload must.
    ///
    /// # Errors
    /// As for [`Upload::write`].
    pub fn complete(&mut self) -> Result<(), UploadError> {
        match &mut self.finish {
            Finish::Staged { .. } => Ok(()),
            Finish::InPlace(place) => place.opened(&mut self.charge).map(drop),
        }
    }

    /// After a quota refusal: an in-place upload's file goes back to its length when the
    /// upload opened it (removed, if the upload created it); a staged upload keeps nothing,
    /// not even as an interrupted upload (see [`Upload::discard_partial`]).
    pub fn roll_back(&mut self) {
        match &mut self.finish {
            Finish::InPlace(place) => place.roll_back(&mut self.charge),
            Finish::Staged { staged, .. } => staged.partial = None,
        }
    }

    /// After a failure on the server's side (disk full, an I/O error): a staged upload keeps
    /// nothing when dropped, since what it holds may not be what the client sent. An in-place
    /// upload keeps what it wrote, as after any other interruption.
    pub fn discard_partial(&mut self) {
        if let Finish::Staged { staged, .. } = &mut self.finish {
            staged.partial = None;
        }
    }
}

/// How an in-place upload opens its target when the first byte arrives.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Opening {
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
    dir: Dir,
    /// The target's name in `dir`.
    name: OsString,
    opening: Opening,
    file: Option<File>,
    /// REST: truncate to this when opening, then write from here; `None`: append.
    pos: Option<u64>,
    /// The length after opening (and truncating): where a roll back returns to.
    start: u64,
    created: bool,
    _lock: WriteLock,
}

impl InPlace {
    /// Opens the target in `dir` by name: the file and whether this created it, or `None` when
    /// it would have to create it and `may_create` is false.
    fn open(&self, may_create: bool) -> io::Result<Option<(File, bool)>> {
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
    fn opened(&mut self, charge: &mut Charge) -> Result<&File, UploadError> {
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

    fn write(&mut self, charge: &mut Charge, data: &[u8]) -> Result<(), UploadError> {
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

    fn roll_back(&mut self, charge: &mut Charge) {
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
fn truncate(charge: &mut Charge, file: &File, len: u64) -> io::Result<()> {
    charge
        .grow(file, |_| 0, || file.set_len(len))
        .map_err(io::Error::other)?
}

/// Exclusive right to write one file in place; released on drop. Two in-place writers of one
/// file would interleave their bytes, so the second is refused ([`StoreError::Busy`]).
#[derive(Debug)]
pub struct WriteLock {
    /// The shared state's lock on the file, held for its drop.
    _lease: Lease,
}

/// Temp file path + target. Its `Drop` removes the temp file unless committed, so a failed or
/// aborted upload leaves no temporary behind and the previous file intact; except that an
/// interrupted upload of a name that held no file is kept under that name, to be resumed
/// (when interrupted uploads are kept: [`LocalStorage::with_partial_uploads`]).
#[derive(Debug)]
pub struct StagedUpload {
    temp: PathBuf,
    user: Arc<str>,
    target: VPath,
    committed: bool,
    charge: Option<Charge>,
    /// Set when the target held no file and interrupted uploads are kept.
    partial: Option<Box<Partial>>,
    client: Option<ClientProbe>,
}

/// What keeping an interrupted upload needs, taken when it starts.
#[derive(Debug)]
struct Partial {
    /// The staging dir (a second handle on it).
    staging: Dir,
    /// The user's home, where the target is resolved again.
    home: Dir,
    ledger: Option<Arc<QuotaLedger>>,
}

impl StagedUpload {
    /// Hands the upload's quota accounting back before the commit, which turns it into usage.
    pub fn attach(&mut self, charge: Charge) {
        self.charge = Some(charge);
    }

    /// Makes the commit refuse ([`StoreError::Interrupted`]) once `probe` says the client has
    /// gone: the upload is then kept or dropped as an interrupted one.
    pub fn watch_client(&mut self, probe: ClientProbe) {
        self.client = Some(probe);
    }

    /// Moves what an interrupted upload received to its target, as a commit would (synced,
    /// renamed into place, charged as usage), provided the name still holds nothing and the
    /// bytes fit the quota. Returns the bytes kept, `None` when nothing was kept. It runs where
    /// the upload is dropped, on the transfer thread for an ABOR or a failed connection, so
    /// the file is in place before the transfer's replies go out.
    fn keep_partial(&mut self, partial: &Partial) -> Result<Option<u64>, StoreError> {
        let name = self.temp.file_name().ok_or(StoreError::NotFound)?;
        let file = partial.staging.open(name)?;
        let size = file.metadata()?.len();
        if size == 0 {
            // Nothing arrived (no data connection, say): no empty file to resume.
            return Ok(None);
        }
        file.sync_all()?;
        let mut keep = |tx: &mut Tx<'_>| -> Result<Option<Dir>, StoreError> {
            let target = write_target(&partial.home, &self.target)?;
            if target.existing.is_some() {
                log::warn!(
                    "{}: another upload created {} meanwhile; the interrupted upload is dropped",
                    self.user,
                    self.target
                );
                return Ok(None);
            }
            if tx.fits(i128::from(size), 1).is_err() {
                log::info!(
                    "{}: the interrupted upload of {} does not fit the quota; dropped",
                    self.user,
                    self.target
                );
                return Ok(None);
            }
            tx.mark()?;
            // NOREPLACE: a file that appeared since the check (an operator's, say) stays.
            match rustix::fs::renameat_with(
                &partial.staging,
                name,
                &target.dir,
                target.name.as_os_str(),
                rustix::fs::RenameFlags::NOREPLACE,
            ) {
                Ok(()) => {}
                Err(Errno::EXIST) => {
                    log::warn!(
                        "{}: {} appeared meanwhile; the interrupted upload is dropped",
                        self.user,
                        self.target
                    );
                    return Ok(None);
                }
                Err(e) => return Err(e.into()),
            }
            self.committed = true;
            tx.record(i128::from(size), 1);
            Ok(Some(target.dir))
        };
        let kept = match &partial.ledger {
            Some(ledger) => ledger.change(&self.user, keep)?,
            None => keep(&mut Tx::untracked())?,
        };
        let Some(dir) = kept else {
            return Ok(None);
        };
        if let Err(err) = sync_dir(&dir) {
            log::warn!(
                "partial upload renamed into place, but its directory was not synced: {err}"
            );
        }
        Ok(Some(size))
    }
}

impl Drop for StagedUpload {
    fn drop(&mut self) {
        if self.committed {
            return;
        }
        // Its reservations go before the kept bytes are charged as usage.
        drop(self.charge.take());
        if let Some(partial) = self.partial.take() {
            match self.keep_partial(&partial) {
                Ok(Some(bytes)) => {
                    log::info!(
                        "{}: kept {bytes} bytes of the interrupted upload of {} for a resume",
                        self.user,
                        self.target
                    );
                    return;
                }
                Ok(None) => {}
                Err(err) => log::warn!(
                    "{}: cannot keep the interrupted upload of {}: {err}",
                    self.user,
                    self.target
                ),
            }
        }
        if let Err(err) = fs::remove_file(&self.temp) {
            log::warn!("cannot remove temporary {}: {err}", self.temp.display());
        }
    }
}

/// A [`Storage`] on the local file system: user U's home is `homes_dir/U`.
#[derive(Debug)]
pub struct LocalStorage {
    homes: PathBuf,
    tmp: PathBuf,
    /// The staging dir, by handle: commits rename from it into a home by handle.
    staging: Dir,
    anonymous: Option<PathBuf>,
    /// Where the in-place write locks are taken.
    state: Arc<dyn SharedState>,
    quota: Option<Arc<QuotaLedger>>,
    limits: PathLimits,
    /// Entries a listing may have; a bigger directory is refused, so no listing holds more.
    max_listing_entries: usize,
    /// How long one wildcard expansion may read and match ([`GLOB_TIME_LIMIT`]).
    glob_time_limit: Duration,
    /// An interrupted STOR of a name that held no file keeps what arrived.
    keep_partial: bool,
}

/// Linux `NAME_MAX`: the longest name of one directory entry, in bytes.
const NAME_MAX: usize = 255;
/// Makes a rename into `dir` durable. cap-std's directory handles are `O_PATH`, on which
/// `fsync` fails with `EBADF`, so the directory is opened again for reading, by handle.
fn sync_dir(dir: &Dir) -> io::Result<()> {
    let fd = rustix::fs::openat(
        dir,
        ".",
        OFlags::RDONLY | OFlags::DIRECTORY | OFlags::CLOEXEC | OFlags::NOFOLLOW,
        Mode::empty(),
    )?;
    rustix::fs::fsync(fd)?;
    Ok(())
}

/// Linux `PATH_MAX`, with its terminating NUL: no path on disk may reach it, so every tree the
/// server builds can also be walked by path (`ferryd user quota --recount`, backups).
const PATH_MAX: usize = 4096;
/// Symbolic links followed to find an upload's target, as the kernel allows (`ELOOP`).
const MAX_LINKS: usize = 40;

/// How deep and how long a path the store lets a client create (MKD, STOR, STOU, APPE, RNTO,
/// including everything below a renamed directory). Past either: [`StoreError::TooLong`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PathLimits {
    /// Names below the home: "/a/b" is 2 deep.
    pub max_depth: usize,
    /// Bytes of the path as the client sees it: "/a/b" is 4 long.
    pub max_length: usize,
}

impl Default for PathLimits {
    fn default() -> PathLimits {
        PathLimits {
            max_depth: 64,
            max_length: 4096,
        }
    }
}

/// What an in-place write lock is taken on: the directory (device, inode) and the name in it,
/// so every path to one file, through links or not, meets the same lock.
type LockKey = Vec<u8>;

/// A name in a directory, both reached from the home without leaving it.
struct Located {
    /// The directory holding `name`, opened beneath the home.
    dir: Dir,
    /// `dir`'s path below the home as it was named ("." for the home; may pass through links
    /// that stay inside).
    dir_rel: PathBuf,
    /// The final component, not followed.
    name: OsString,
    /// `lstat` of `name`, if it exists.
    link_meta: Option<Metadata>,
}

/// An existing, visible entry.
struct Entry {
    /// Where it is; acting on `loc.name` acts on a link itself (remove, rename).
    loc: Located,
    /// `lstat` of the name.
    link_meta: Metadata,
    /// What it leads to: the entry itself, or a link's target inside the home.
    meta: Metadata,
    /// Whether the name is a symbolic link.
    is_link: bool,
}

/// Where an upload's bytes land: an existing regular file or a new name, with links inside the
/// home followed to the file they lead to.
struct Target {
    /// The directory holding `name`, opened beneath the home.
    dir: Dir,
    /// The final component: a regular file or nothing yet, never a link.
    name: OsString,
    /// The regular file there now, if any.
    existing: Option<Metadata>,
}

/// The path below the home for `path` ("." for the home itself).
///
/// # Errors
/// [`StoreError::TooLong`] for a name longer than `NAME_MAX`.
fn relative(path: &VPath) -> Result<PathBuf, StoreError> {
    let mut rel = PathBuf::from(".");
    for name in path.components() {
        if name.len() > NAME_MAX {
            return Err(StoreError::TooLong);
        }
        rel.push(name);
    }
    Ok(rel)
}

/// Opens `rel` below `home` as a directory, following links only while they stay inside.
fn open_dir(home: &Dir, rel: &Path) -> Result<Dir, StoreError> {
    let rel = if rel.as_os_str().is_empty() {
        Path::new(".")
    } else {
        rel
    };
    Ok(home.open_dir(rel)?)
}

/// What `path` leads to below `home` (links followed while they stay inside): a regular file or
/// a directory.
fn target_meta(home: &Dir, path: &VPath) -> Result<Metadata, StoreError> {
    let meta = home.metadata(relative(path)?)?;
    if !meta.is_file() && !meta.is_dir() {
        return Err(StoreError::NotFound);
    }
    Ok(meta)
}

/// Finds `path`'s directory beneath `home` and `lstat`s its final name there.
///
/// # Errors
/// [`StoreError::PermissionDenied`] for the home itself (callers that accept it check first);
/// the parent's errors: [`StoreError::NotFound`] (missing, or reached only through a link out),
/// [`StoreError::NotADirectory`].
fn locate(home: &Dir, path: &VPath) -> Result<Located, StoreError> {
    let (Some(parent), Some(name)) = (path.parent(), path.file_name()) else {
        return Err(StoreError::PermissionDenied);
    };
    if name.len() > NAME_MAX {
        return Err(StoreError::TooLong);
    }
    let dir_rel = relative(&parent)?;
    let dir = open_dir(home, &dir_rel)?;
    let link_meta = lstat(&dir, OsStr::new(name))?;
    Ok(Located {
        dir,
        dir_rel,
        name: name.into(),
        link_meta,
    })
}

/// `lstat` of one name in `dir`; `None` when there is none.
fn lstat(dir: &Dir, name: &OsStr) -> Result<Option<Metadata>, StoreError> {
    match dir.symlink_metadata(name) {
        Ok(meta) => Ok(Some(meta)),
        Err(err) if err.kind() == io::ErrorKind::NotFound => Ok(None),
        Err(err) => Err(err.into()),
    }
}

/// The jail check of an existing name: a link must lead to a file or directory inside `home`,
/// and only regular files and directories are shown. Anything else looks missing.
fn visible(home: &Dir, loc: Located) -> Result<Entry, StoreError> {
    let Some(link_meta) = loc.link_meta.clone() else {
        return Err(StoreError::NotFound);
    };
    let is_link = link_meta.is_symlink();
    let meta = if is_link {
        // Any failure to follow it (out of the home, dangling, a loop) hides it.
        home.metadata(loc.dir_rel.join(&loc.name))
            .map_err(|_| StoreError::NotFound)?
    } else {
        link_meta.clone()
    };
    if !meta.is_file() && !meta.is_dir() {
        return Err(StoreError::NotFound);
    }
    Ok(Entry {
        loc,
        link_meta,
        meta,
        is_link,
    })
}

/// Resolves an existing, visible entry.
fn existing(home: &Dir, path: &VPath) -> Result<Entry, StoreError> {
    visible(home, locate(home, path)?)
}

/// Where an upload of `path` lands: a new name, or the regular file that the name (or a chain
/// of links inside the home) leads to.
fn write_target(home: &Dir, path: &VPath) -> Result<Target, StoreError> {
    if path.is_root() {
        return Err(StoreError::IsADirectory);
    }
    let mut loc = locate(home, path)?;
    for followed in 0..MAX_LINKS {
        let meta = match loc.link_meta.take() {
            // A link must lead somewhere: a dangling one is invisible.
            None if followed > 0 => return Err(StoreError::NotFound),
            None => None,
            Some(meta) if meta.is_dir() => return Err(StoreError::IsADirectory),
            Some(meta) if meta.is_file() => Some(meta),
            Some(meta) if meta.is_symlink() => {
                let link = loc.dir.read_link_contents(&loc.name)?;
                if link.is_absolute() {
                    return Err(StoreError::NotFound);
                }
                let joined = loc.dir_rel.join(link);
                let (Some(parent), Some(name)) = (joined.parent(), joined.file_name()) else {
                    // Ends in "..": a directory, if it is there at all.
                    return match home.metadata(&joined) {
                        Ok(meta) if meta.is_dir() => Err(StoreError::IsADirectory),
                        _ => Err(StoreError::NotFound),
                    };
                };
                let dir = open_dir(home, parent).map_err(|_| StoreError::NotFound)?;
                let link_meta = lstat(&dir, name)?;
                loc = Located {
                    dir,
                    dir_rel: parent.to_path_buf(),
                    name: name.to_owned(),
                    link_meta,
                };
                continue;
            }
            Some(_) => return Err(StoreError::NotFound),
        };
        return Ok(Target {
            dir: loc.dir,
            name: loc.name,
            existing: meta,
        });
    }
    Err(StoreError::NotFound)
}

/// The lock key of `name` in `dir`.
fn lock_key(dir: &Dir, name: &OsStr) -> Result<LockKey, StoreError> {
    let meta = dir.dir_metadata()?;
    let mut key = Vec::with_capacity(16 + name.len());
    key.extend_from_slice(&meta.dev().to_le_bytes());
    key.extend_from_slice(&meta.ino().to_le_bytes());
    key.extend_from_slice(name.as_bytes());
    Ok(key)
}

/// Open options that never block on a FIFO swapped in at the last moment, and never follow a
/// link at the final name (`ELOOP`, seen as [`StoreError::NotFound`]).
fn in_place_options() -> OpenOptions {
    let mut options = OpenOptions::new();
    options.custom_flags((OFlags::NOFOLLOW | OFlags::NONBLOCK).bits() as i32);
    options
}

/// An `O_PATH` handle on what `path` leads to below `home`: enough to `fstat` it and to change
/// its mode or times through `/proc/self/fd`, whatever its permission bits, without a second
/// lookup by name that a swap could redirect.
fn open_path(home: &Dir, path: &VPath) -> Result<(File, fs::Metadata), StoreError> {
    let file = home
        .open_with(
            relative(path)?,
            OpenOptions::new()
                .read(true)
                .custom_flags(OFlags::PATH.bits() as i32),
        )?
        .into_std();
    let meta = file.metadata()?;
    if !meta.is_file() && !meta.is_dir() {
        return Err(StoreError::NotFound);
    }
    Ok((file, meta))
}

/// How deep and long the tree below `dir` is, in names and bytes ("/" plus each name), failing
/// as soon as it passes `max_depth` or `max_length`. Links are not followed.
fn subtree_extent(
    dir: &Dir,
    max_depth: usize,
    max_length: usize,
) -> Result<(usize, usize), StoreError> {
    let mut extent = (0, 0);
    let mut stack = vec![(PathBuf::from("."), 0usize, 0usize)];
    while let Some((rel, depth, length)) = stack.pop() {
        for entry in dir.read_dir(&rel)? {
            let entry = entry?;
            let name = entry.file_name();
            let (depth, length) = (depth + 1, length + 1 + name.len());
            if depth > max_depth || length > max_length {
                return Err(StoreError::TooLong);
            }
            extent = (extent.0.max(depth), extent.1.max(length));
            if entry.file_type()?.is_dir() {
                stack.push((rel.join(name), depth, length));
            }
        }
    }
    Ok(extent)
}

impl LocalStorage {
    /// Use `homes_dir` for the homes and `tmp_dir` for staged uploads, creating both. They must
    /// be on one file system (both under the data dir) so committing an upload is a rename.
    ///
    /// # Errors
    ///
    /// If either directory cannot be created or resolved.
    pub fn new(homes_dir: PathBuf, tmp_dir: PathBuf) -> io::Result<LocalStorage> {
        fs::create_dir_all(&homes_dir)?;
        fs::create_dir_all(&tmp_dir)?;
        let tmp = fs::canonicalize(tmp_dir)?;
        Ok(LocalStorage {
            homes: fs::canonicalize(homes_dir)?,
            staging: Dir::open_ambient_dir(&tmp, ambient_authority())?,
            tmp,
            anonymous: None,
            state: LocalState::shared(&Config::default()),
            quota: None,
            limits: PathLimits::default(),
            max_listing_entries: usize::MAX,
            glob_time_limit: GLOB_TIME_LIMIT,
            keep_partial: false,
        })
    }

    /// Keeps what an interrupted STOR of a name that held no file received, under that name,
    /// so that the client can resume it (SIZE, then REST+STOR or APPE); off by default.
    pub fn with_partial_uploads(mut self, keep: bool) -> LocalStorage {
        self.keep_partial = keep;
        self
    }

    /// Takes the in-place write locks in `state` (shared with the sessions; by default a
    /// state of this storage's own).
    pub fn with_shared_state(mut self, state: Arc<dyn SharedState>) -> LocalStorage {
        self.state = state;
        self
    }

    /// Refuses to create paths past `limits`.
    pub fn with_path_limits(mut self, limits: PathLimits) -> LocalStorage {
        self.limits = limits;
        self
    }

    /// Refuses listings of directories with more than `max` entries
    /// ([`StoreError::TooManyEntries`]); reading stops at the first entry too many.
    pub fn with_listing_limit(mut self, max: usize) -> LocalStorage {
        self.max_listing_entries = max;
        self
    }

    /// Gives each wildcard expansion `limit` instead of [`GLOB_TIME_LIMIT`].
    #[cfg(test)]
    pub(crate) fn with_glob_time_limit(mut self, limit: Duration) -> LocalStorage {
        self.glob_time_limit = limit;
        self
    }

    /// The entries of `dir` (the directory `rel` below `home`) whose names pass `keep`, sorted
    /// by name. Names that are not UTF-8, links that dangle or lead out, and special files are
    /// left out. Every name read counts against `max_listing_entries`, kept or not, so a
    /// pattern cannot make a directory too big to list cheaper to read.
    fn entries(
        &self,
        home: &Dir,
        rel: &Path,
        dir: &Dir,
        keep: impl Fn(&str) -> bool,
        deadline: Option<Instant>,
    ) -> Result<Vec<FileInfo>, StoreError> {
        let mut infos = Vec::new();
        let mut read = 0usize;
        for dirent in dir.entries()? {
            let dirent = dirent?;
            read += 1;
            if read > self.max_listing_entries {
                return Err(StoreError::TooManyEntries(self.max_listing_entries));
            }
            if deadline.is_some_and(|end| Instant::now() >= end) {
                return Err(StoreError::TimedOut);
            }
            // A name that is not UTF-8 could not be named back by a client; leave it out.
            let Ok(name) = dirent.file_name().into_string() else {
                continue;
            };
            if !keep(&name) {
                continue;
            }
            let lmeta = match dirent.metadata() {
                Ok(lmeta) => lmeta,
                // Removed between reading the directory and here.
                Err(err) if err.kind() == io::ErrorKind::NotFound => continue,
                Err(err) => return Err(err.into()),
            };
            let meta = if lmeta.is_symlink() {
                // Followed from the home, so a link may lead anywhere inside it, never out.
                match home.metadata(rel.join(&name)) {
                    Ok(meta) => meta,
                    Err(_) => continue,
                }
            } else {
                lmeta
            };
            if meta.is_file() || meta.is_dir() {
                infos.push(file_info(name, &meta));
            }
        }
        infos.sort_by(|a, b| a.name.cmp(&b.name));
        Ok(infos)
    }

    /// Removes staged uploads (`*.part` in the staging dir) that a previous run left behind:
    /// a crash, or transfers still running when a shutdown's grace period ran out. Only the
    /// server calls this at start; admin commands share the directory with a running server.
    ///
    /// # Errors
    /// When the staging dir cannot be read; files that cannot be removed are skipped.
    pub fn remove_stale_staged(&self) -> io::Result<usize> {
        let mut removed = 0;
        for entry in fs::read_dir(&self.tmp)? {
            let path = entry?.path();
            if path.extension().is_some_and(|e| e == "part") && fs::remove_file(&path).is_ok() {
                removed += 1;
            }
        }
        Ok(removed)
    }

    /// Keeps every account's usage in `ledger` and enforces its limits.
    pub fn with_quota(mut self, ledger: Arc<QuotaLedger>) -> LocalStorage {
        self.quota = Some(ledger);
        self
    }

    /// The ledger that accounts for `user`, if any (never for the anonymous area).
    fn ledger(&self, user: &str) -> Option<&Arc<QuotaLedger>> {
        self.quota.as_ref().filter(|_| user != ANONYMOUS)
    }

    /// Runs `op`, a change to `user`'s tree, under the user's quota lock (see
    /// [`QuotaLedger::change`]): resolve, measure, check, change and record inside it.
    fn change<T>(
        &self,
        user: &str,
        op: impl FnOnce(&mut Tx<'_>) -> Result<T, StoreError>,
    ) -> Result<T, StoreError> {
        match self.ledger(user) {
            Some(ledger) => ledger.change(user, op),
            None => op(&mut Tx::untracked()),
        }
    }

    /// Starts the accounting of an upload (see [`QuotaLedger::charge`]).
    fn charge(
        &self,
        user: &str,
        new_file: bool,
        replaces: Option<&Metadata>,
    ) -> Result<Charge, StoreError> {
        let replaces = replaces.map(|m| FileId {
            dev: m.dev(),
            ino: m.ino(),
            len: m.len(),
        });
        match self.ledger(user) {
            Some(ledger) => Ok(ledger.charge(user, new_file, replaces)?),
            None => Ok(Charge::unlimited()),
        }
    }

    /// An in-place upload of `target` (`name` in `dir`), opened as `opening` says when its
    /// first byte arrives; `pos` is the REST offset.
    fn in_place(
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
                _lock: lock,
            }),
            charge,
        }
    }

    /// Serves `root` as the home of the [`ANONYMOUS`] user.
    ///
    /// # Errors
    ///
    /// If `root` cannot be created or resolved.
    pub fn with_anonymous_root(mut self, root: &Path) -> io::Result<LocalStorage> {
        fs::create_dir_all(root)?;
        self.anonymous = Some(fs::canonicalize(root)?);
        Ok(self)
    }

    /// `homes_dir/user`, refusing names that would not stay one component below it.
    fn home_path(&self, user: &str) -> Result<PathBuf, StoreError> {
        if user == ANONYMOUS {
            return self.anonymous.clone().ok_or(StoreError::NotFound);
        }
        if matches!(user, "" | "." | "..") || user.contains(['/', '\0', '@']) {
            return Err(StoreError::NotFound);
        }
        Ok(self.homes.join(user))
    }

    /// The user's home by handle: every lookup starts here and never leaves it. The home
    /// itself may be a link the operator made (homes on another disk).
    fn home(&self, user: &str) -> Result<Dir, StoreError> {
        Dir::open_ambient_dir(self.home_path(user)?, ambient_authority())
            .map_err(|_| StoreError::NotFound)
    }

    /// Refuses a new entry at `path` (with a tree `below` it, in names and bytes) past the
    /// configured limits, or as long on disk as `PATH_MAX`.
    fn check_limits(
        &self,
        user: &str,
        path: &VPath,
        below: (usize, usize),
    ) -> Result<(), StoreError> {
        let depth = path.components().count() + below.0;
        let length = path.as_str().len() + below.1;
        let on_disk = self.home_path(user)?.as_os_str().len() + length;
        if depth > self.limits.max_depth || length > self.limits.max_length || on_disk >= PATH_MAX {
            return Err(StoreError::TooLong);
        }
        Ok(())
    }

    /// Checks that moving `source` (at `from`) to `to` builds nothing past the limits. Moving a
    /// tree no deeper and no longer than it was cannot, so only then is the tree walked.
    fn check_move(
        &self,
        user: &str,
        source: &Entry,
        from: &VPath,
        to: &VPath,
    ) -> Result<(), StoreError> {
        let (from_depth, to_depth) = (from.components().count(), to.components().count());
        let (from_len, to_len) = (from.as_str().len(), to.as_str().len());
        let below = if !source.is_link
            && source.meta.is_dir()
            && (to_depth > from_depth || to_len > from_len)
        {
            let on_disk = self.home_path(user)?.as_os_str().len() + to_len;
            let max_depth = self.limits.max_depth.saturating_sub(to_depth);
            let max_length = self
                .limits
                .max_length
                .min(PATH_MAX - 1)
                .saturating_sub(to_len)
                .min((PATH_MAX - 1).saturating_sub(on_disk));
            let dir = source.loc.dir.open_dir(&source.loc.name)?;
            subtree_extent(&dir, max_depth, max_length)?
        } else {
            (0, 0)
        };
        self.check_limits(user, to, below)
    }

    fn lock(&self, key: LockKey) -> Result<WriteLock, StoreError> {
        match self.state.write_lock(&key) {
            Ok(Some(lease)) => Ok(WriteLock { _lease: lease }),
            Ok(None) => Err(StoreError::Busy),
            Err(e) => Err(StoreError::Io(io::Error::other(e))),
        }
    }

    /// STOU: picks the first free name among `name`, `name.1`, ... `name.999` next to
    /// `path`, locked and with its file slot reserved; the file is created (`O_EXCL`, through
    /// the directory's handle) when the first byte arrives.
    fn create_unique(&self, user: &str, path: &VPath) -> Result<Upload, StoreError> {
        let home = self.home(user)?;
        let base = path.file_name().unwrap_or("file");
        let parent = path.parent().unwrap_or_else(VPath::root);
        let dir = open_dir(&home, &relative(&parent)?)?;
        for n in 0..1000 {
            let name = if n == 0 {
                base.to_owned()
            } else {
                format!("{base}.{n}")
            };
            let candidate = parent.resolve(&name).map_err(|_| StoreError::InvalidName)?;
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

    /// A new, empty temporary file in the staging dir.
    fn create_temp(&self) -> Result<(PathBuf, File), StoreError> {
        // A random name makes a clash unlikely; create_new makes one harmless, so retry.
        for _ in 0..8 {
            let name = format!("{:016x}.part", rand::random::<u64>());
            match self
                .staging
                .open_with(&name, OpenOptions::new().write(true).create_new(true))
            {
                Ok(file) => return Ok((self.tmp.join(name), file.into_std())),
                Err(err) if err.kind() == io::ErrorKind::AlreadyExists => continue,
                Err(err) => return Err(err.into()),
            }
        }
        Err(StoreError::Io(io::Error::other(
            "no free temporary file name",
        )))
    }

    /// Syncs the staged file `temp` to disk, so that a crash after the rename that publishes
    /// it never leaves a "complete" empty file. Returns its size.
    fn sync_staged(&self, temp: &Path) -> Result<u64, StoreError> {
        let name = temp.file_name().ok_or(StoreError::NotFound)?;
        let staged = self.staging.open(name)?;
        let size = staged.metadata()?.len();
        staged.sync_all()?;
        Ok(size)
    }

    /// Renames the staged file `temp` over `target`, from the staging dir's handle into the
    /// target directory's. Returns that directory, to be synced.
    fn publish(&self, temp: &Path, target: Target) -> Result<Dir, StoreError> {
        let name = temp.file_name().ok_or(StoreError::NotFound)?;
        self.staging.rename(name, &target.dir, &target.name)?;
        Ok(target.dir)
    }
}

/// `time` as seconds and nanoseconds since the epoch, also before it (MFMT accepts any year).
fn timespec(time: SystemTime) -> Timespec {
    let secs = |d: std::time::Duration| i64::try_from(d.as_secs()).unwrap_or(i64::MAX);
    match time.duration_since(SystemTime::UNIX_EPOCH) {
        Ok(since) => Timespec {
            tv_sec: secs(since),
            tv_nsec: since.subsec_nanos().into(),
        },
        Err(before) => {
            let before = before.duration();
            match before.subsec_nanos() {
                0 => Timespec {
                    tv_sec: -secs(before),
                    tv_nsec: 0,
                },
                nanos => Timespec {
                    tv_sec: -secs(before) - 1,
                    tv_nsec: (1_000_000_000 - nanos).into(),
                },
            }
        }
    }
}

fn file_info(name: String, meta: &Metadata) -> FileInfo {
    FileInfo {
        name,
        kind: if meta.is_dir() {
            FileKind::Dir
        } else {
            FileKind::File
        },
        size: meta.len(),
        // Some file systems lack mtime; the epoch is a harmless stand-in for a listing.
        modified: meta
            .modified()
            .map_or(SystemTime::UNIX_EPOCH, |t| t.into_std()),
        mode: meta.mode() & 0o7777,
        nlink: meta.nlink(),
        unique: format!("{:x}g{:x}", meta.dev(), meta.ino()),
    }
}

impl Storage for LocalStorage {
    fn create_home(&self, user: &str) -> Result<(), StoreError> {
        // Private to the server's account: other local users must not read homes.
        Ok(fs::DirBuilder::new()
            .recursive(true)
            .mode(0o700)
            .create(self.home_path(user)?)?)
    }

    fn stat(&self, user: &str, path: &VPath) -> Result<FileInfo, StoreError> {
        let meta = target_meta(&self.home(user)?, path)?;
        let name = path.file_name().unwrap_or("/").to_owned();
        Ok(file_info(name, &meta))
    }

    fn list(&self, user: &str, path: &VPath) -> Result<Listing, StoreError> {
        let home = self.home(user)?;
        let meta = target_meta(&home, path)?;
        if !meta.is_dir() {
            let name = path.file_name().unwrap_or("/").to_owned();
            return Ok(Listing {
                is_dir: false,
                matched: false,
                this: None,
                parent: None,
                entries: vec![file_info(name, &meta)],
            });
        }
        let rel = relative(path)?;
        let dir = open_dir(&home, &rel)?;
        let entries = self.entries(&home, &rel, &dir, |_| true, None)?;
        let parent = match path.parent() {
            Some(parent) => Some(file_info("..".to_owned(), &target_meta(&home, &parent)?)),
            None => None,
        };
        Ok(Listing {
            is_dir: true,
            matched: false,
            this: Some(file_info(".".to_owned(), &dir.dir_metadata()?)),
            parent,
            entries,
        })
    }

    fn glob(&self, user: &str, dir: &VPath, pattern: &NamePattern) -> Result<Listing, StoreError> {
        let deadline = Instant::now() + self.glob_time_limit;
        let home = self.home(user)?;
        let rel = relative(dir)?;
        // The same handle walk as a listing: the pattern only filters the names read from it.
        let handle = open_dir(&home, &rel)?;
        let keep = |name: &str| pattern.matches(name);
        let entries = self.entries(&home, &rel, &handle, keep, Some(deadline))?;
        Ok(Listing {
            is_dir: false,
            matched: true,
            this: None,
            parent: None,
            entries,
        })
    }

    fn open_read(&self, user: &str, path: &VPath, offset: u64) -> Result<ReadHandle, StoreError> {
        let home = self.home(user)?;
        // Checked before opening: opening a FIFO or a device could block a store thread.
        if target_meta(&home, path)?.is_dir() {
            return Err(StoreError::IsADirectory);
        }
        let mut options = OpenOptions::new();
        options
            .read(true)
            .custom_flags(OFlags::NONBLOCK.bits() as i32);
        let mut file = home.open_with(relative(path)?, &options)?.into_std();
        // Re-check what was opened: the path may have been replaced since it was checked.
        let meta = file.metadata()?;
        if meta.is_dir() {
            return Err(StoreError::IsADirectory);
        }
        if !meta.is_file() {
            return Err(StoreError::NotFound);
        }
        file.seek(SeekFrom::Start(offset))?;
        Ok(ReadHandle {
            file,
            size: meta.len(),
        })
    }

    fn open_write(&self, user: &str, path: &VPath, mode: WriteMode) -> Result<Upload, StoreError> {
        let home = self.home(user)?;
        let target = write_target(&home, path)?;
        if target.existing.is_none() {
            self.check_limits(user, path, (0, 0))?;
        }
        match mode {
            WriteMode::Replace => {
                let charge =
                    self.charge(user, target.existing.is_none(), target.existing.as_ref())?;
                let partial = match target.existing {
                    None if self.keep_partial => Some(Box::new(Partial {
                        staging: self.staging.try_clone()?,
                        home,
                        ledger: self.ledger(user).cloned(),
                    })),
                    _ => None,
                };
                let (temp, file) = self.create_temp()?;
                let staged = StagedUpload {
                    temp,
                    user: Arc::from(user),
                    target: path.clone(),
                    committed: false,
                    charge: None,
                    partial,
                    client: None,
                };
                Ok(Upload {
                    target: path.clone(),
                    finish: Finish::Staged { file, staged },
                    charge,
                })
            }
            WriteMode::Append => {
                let lock = self.lock(lock_key(&target.dir, &target.name)?)?;
                let charge = self.charge(user, target.existing.is_none(), None)?;
                Ok(Self::in_place(
                    path.clone(),
                    (target.dir, target.name),
                    lock,
                    charge,
                    Opening::Append,
                    None,
                ))
            }
            WriteMode::At(offset) => {
                let Some(meta) = &target.existing else {
                    return Err(StoreError::NotFound);
                };
                if offset > meta.len() {
                    return Err(StoreError::BadOffset);
                }
                let lock = self.lock(lock_key(&target.dir, &target.name)?)?;
                let charge = self.charge(user, false, None)?;
                Ok(Self::in_place(
                    path.clone(),
                    (target.dir, target.name),
                    lock,
                    charge,
                    Opening::Existing,
                    Some(offset),
                ))
            }
            WriteMode::Unique => self.create_unique(user, path),
        }
    }

    fn commit(&self, mut staged: StagedUpload) -> Result<(), StoreError> {
        // Synced before the user's lock is taken: a large file's fsync must not hold up the
        // user's other changes.
        let size = self
            .sync_staged(&staged.temp)
            .inspect_err(|_| staged.partial = None)?;
        if staged.client.as_ref().is_some_and(ClientProbe::gone) {
            return Err(StoreError::Interrupted);
        }
        // A complete upload that cannot be committed is dropped, not kept as interrupted.
        staged.partial = None;
        // Outlives the change below: dropping a charge takes the user's lock.
        let mut charge = staged.charge.take().unwrap_or_default();
        let user = Arc::clone(&staged.user);
        let dir = self.change(&user, |tx| {
            // Resolve and measure again under the user's lock: the tree may have changed
            // while the bytes arrived (the old file renamed away, or replaced).
            let target = write_target(&self.home(&user)?, &staged.target)?;
            let replaced = target.existing.as_ref().map(Metadata::len);
            let bytes = i128::from(size) - i128::from(replaced.unwrap_or(0));
            let files = i128::from(replaced.is_none());
            tx.settle(&mut charge);
            tx.fits(bytes, files)?;
            tx.mark()?;
            let dir = self.publish(&staged.temp, target)?;
            staged.committed = true;
            tx.record(bytes, files);
            Ok(dir)
        })?;
        if let Err(err) = sync_dir(&dir) {
            log::warn!("upload renamed into place, but its directory was not synced: {err}");
        }
        Ok(())
    }

    fn mkdir(&self, user: &str, path: &VPath) -> Result<(), StoreError> {
        if path.is_root() {
            return Err(StoreError::AlreadyExists);
        }
        self.change(user, |tx| {
            let home = self.home(user)?;
            let loc = locate(&home, path)?;
            if loc.link_meta.is_some() {
                // Taken: say so only if the client may see what is there.
                visible(&home, loc)?;
                return Err(StoreError::AlreadyExists);
            }
            self.check_limits(user, path, (0, 0))?;
            tx.fits(i128::from(DIR_BYTES), 1)?;
            tx.mark()?;
            loc.dir.create_dir(&loc.name)?;
            tx.record(i128::from(DIR_BYTES), 1);
            Ok(())
        })
    }

    fn rmdir(&self, user: &str, path: &VPath) -> Result<(), StoreError> {
        if path.is_root() {
            return Err(StoreError::PermissionDenied);
        }
        self.change(user, |tx| {
            let entry = existing(&self.home(user)?, path)?;
            // Act on the link itself, as rmdir(2) does: a link to a directory is not one.
            if entry.is_link || !entry.meta.is_dir() {
                return Err(StoreError::NotADirectory);
            }
            tx.mark()?;
            entry.loc.dir.remove_dir(&entry.loc.name)?;
            tx.record(-i128::from(DIR_BYTES), -1);
            Ok(())
        })
    }

    fn remove(&self, user: &str, path: &VPath) -> Result<(), StoreError> {
        if path.is_root() {
            return Err(StoreError::IsADirectory);
        }
        self.change(user, |tx| {
            let entry = existing(&self.home(user)?, path)?;
            if !entry.is_link && entry.meta.is_dir() {
                return Err(StoreError::IsADirectory);
            }
            tx.mark()?;
            entry.loc.dir.remove_file(&entry.loc.name)?;
            if !entry.is_link {
                tx.record(-i128::from(entry.meta.len()), -1);
            }
            Ok(())
        })
    }

    fn rename(&self, user: &str, from: &VPath, to: &VPath) -> Result<(), StoreError> {
        if from.is_root() || to.is_root() {
            return Err(StoreError::PermissionDenied);
        }
        self.change(user, |tx| {
            let home = self.home(user)?;
            let source = existing(&home, from)?;
            let dest = locate(&home, to)?;
            // What a rename over an existing entry takes away from the usage, and whether it
            // is the source itself (rename(2) then does nothing).
            let (dest, freed, same) = if dest.link_meta.is_some() {
                let found = visible(&home, dest)?;
                let same = found.link_meta.dev() == source.link_meta.dev()
                    && found.link_meta.ino() == source.link_meta.ino();
                let freed = match () {
                    () if found.is_link => (0, 0),
                    () if found.meta.is_dir() => (DIR_BYTES, 1),
                    () => (found.meta.len(), 1),
                };
                (found.loc, freed, same)
            } else {
                (dest, (0, 0), false)
            };
            self.check_move(user, &source, from, to)?;
            tx.mark()?;
            match source
                .loc
                .dir
                .rename(&source.loc.name, &dest.dir, &dest.name)
            {
                Ok(()) => {}
                // Moving a directory into its own subtree (rename(2) EINVAL).
                Err(err) if err.raw_os_error() == Some(Errno::INVAL.raw_os_error()) => {
                    return Err(StoreError::InvalidName);
                }
                Err(err) => return Err(err.into()),
            }
            if !same {
                tx.record(-i128::from(freed.0), -i128::from(freed.1));
            }
            Ok(())
        })
    }

    fn set_modified(&self, user: &str, path: &VPath, time: SystemTime) -> Result<(), StoreError> {
        let (file, _) = open_path(&self.home(user)?, path)?;
        let omit = Timespec {
            tv_sec: 0,
            tv_nsec: UTIME_OMIT,
        };
        let times = Timestamps {
            last_access: omit,
            last_modification: timespec(time),
        };
        Ok(utimensat(
            proc_self_fd()?,
            DecInt::from_fd(&file),
            &times,
            AtFlags::empty(),
        )?)
    }

    fn chmod(&self, user: &str, path: &VPath, mode: u32) -> Result<(), StoreError> {
        let home = self.home(user)?;
        let (file, meta) = open_path(&home, path)?;
        // Not the home itself, by any name: the server must keep its way in.
        let root = home.dir_metadata()?;
        if (meta.dev(), meta.ino()) == (root.dev(), root.ino()) {
            return Err(StoreError::PermissionDenied);
        }
        Ok(chmodat(
            proc_self_fd()?,
            DecInt::from_fd(&file),
            Mode::from_bits_truncate(mode & 0o777),
            AtFlags::empty(),
        )?)
    }

    fn hash(&self, user: &str, path: &VPath, algo: HashAlgo) -> Result<(String, u64), StoreError> {
        let handle = self.open_read(user, path, 0)?;
        let mut file = handle.file;
        Ok((algo.digest(&mut file)?, handle.size))
    }

    fn quota(&self, user: &str) -> Result<QuotaReport, StoreError> {
        match self.ledger(user) {
            Some(ledger) => Ok(ledger.report(user)?),
            None => Ok(QuotaReport::default()),
        }
    }
}

/// The file-store actor: runs [`Storage`] calls on `SyncArbiter` threads.
pub struct FileStore {
    storage: Arc<dyn Storage>,
}

impl Actor for FileStore {
    type Context = SyncContext<Self>;
}

impl FileStore {
    /// Start `threads` instances sharing `storage`, behind one address.
    pub fn start(storage: Arc<dyn Storage>, threads: usize) -> Addr<FileStore> {
        SyncArbiter::start(threads, move || FileStore {
            storage: Arc::clone(&storage),
        })
    }
}

/// Long file-store jobs (HASH, listings) on a pool of threads of their own, at most
/// `per_user` of one user's running at a time (the rest wait their turn): one user's long jobs
/// can neither hold every long thread nor delay the short calls (CWD, SIZE, opening files),
/// which keep the [`FileStore`]'s own threads.
pub struct LongJobs {
    pool: Addr<FileStore>,
    per_user: usize,
    /// Each user's share, while one of their jobs runs or waits.
    shares: Arc<Mutex<HashMap<Arc<str>, Arc<Semaphore>>>>,
}

impl Actor for LongJobs {
    type Context = Context<Self>;
}

impl LongJobs {
    /// Starts `threads` file-store instances for long jobs and the queue in front of them (on
    /// the current arbiter).
    pub fn start(storage: Arc<dyn Storage>, threads: usize, per_user: usize) -> Addr<LongJobs> {
        LongJobs {
            pool: FileStore::start(storage, threads),
            per_user: per_user.max(1),
            shares: Arc::default(),
        }
        .start()
    }

    /// Runs `msg` on the pool once `user` has a free share.
    fn run<M, T>(&self, user: Arc<str>, msg: M) -> ResponseFuture<Result<T, StoreError>>
    where
        M: Message<Result = Result<T, StoreError>> + Send + 'static,
        T: Send + 'static,
        FileStore: Handler<M>,
    {
        let shares = Arc::clone(&self.shares);
        let share = {
            let mut map = shares.lock().unwrap_or_else(|e| e.into_inner());
            let share = map
                .entry(Arc::clone(&user))
                .or_insert_with(|| Arc::new(Semaphore::new(self.per_user)));
            Arc::clone(share)
        };
        let pool = self.pool.clone();
        Box::pin(async move {
            let result = match Arc::clone(&share).acquire_owned().await {
                Ok(_running) => pool.send(msg).await.unwrap_or_else(|e| {
                    Err(StoreError::Io(io::Error::other(format!("file store: {e}"))))
                }),
                // Never closed; answered like a failed store all the same.
                Err(e) => Err(StoreError::Io(io::Error::other(e))),
            };
            let mut map = shares.lock().unwrap_or_else(|e| e.into_inner());
            // Only the map and this job still hold it: nobody runs or waits; forget the user.
            if Arc::strong_count(&share) == 2 {
                map.remove(&user);
            }
            result
        })
    }
}

impl Handler<List> for LongJobs {
    type Result = ResponseFuture<Result<Listing, StoreError>>;
    fn handle(&mut self, msg: List, _: &mut Self::Context) -> Self::Result {
        self.run(Arc::clone(&msg.user), msg)
    }
}

impl Handler<Hash> for LongJobs {
    type Result = ResponseFuture<Result<(String, u64), StoreError>>;
    fn handle(&mut self, msg: Hash, _: &mut Self::Context) -> Self::Result {
        self.run(Arc::clone(&msg.user), msg)
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

/// Open a file for download.
#[derive(Debug, Message)]
#[rtype(result = "Result<ReadHandle, StoreError>")]
pub struct OpenRead {
    /// Whose home.
    pub user: Arc<str>,
    /// The file to read.
    pub path: VPath,
    /// Where to start (REST).
    pub offset: u64,
}

/// Start an upload into a staged temporary file.
#[derive(Debug, Message)]
#[rtype(result = "Result<Upload, StoreError>")]
pub struct OpenWrite {
    /// Whose home.
    pub user: Arc<str>,
    /// The file the upload will replace or create.
    pub path: VPath,
    /// Replace, append, resume or unique.
    pub mode: WriteMode,
}

/// Move a finished upload into place.
#[derive(Debug, Message)]
#[rtype(result = "Result<(), StoreError>")]
pub struct CommitUpload {
    /// From the `staged` of [`Finish::Staged`], after every byte was written.
    pub staged: StagedUpload,
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

impl Handler<CreateHome> for FileStore {
    type Result = Result<(), StoreError>;
    fn handle(&mut self, msg: CreateHome, _: &mut Self::Context) -> Self::Result {
        self.storage.create_home(&msg.user)
    }
}

impl Handler<Stat> for FileStore {
    type Result = Result<FileInfo, StoreError>;
    fn handle(&mut self, msg: Stat, _: &mut Self::Context) -> Self::Result {
        self.storage.stat(&msg.user, &msg.path)
    }
}

impl Handler<List> for FileStore {
    type Result = Result<Listing, StoreError>;
    fn handle(&mut self, msg: List, _: &mut Self::Context) -> Self::Result {
        let listed = self.storage.list(&msg.user, &msg.path);
        if !msg.expand || !matches!(listed, Err(StoreError::NotFound)) {
            return listed;
        }
        // Only a name that exists nowhere is a pattern, so a file called `a[1]` stays listable.
        let (Some(dir), Some(pattern)) = (
            msg.path.parent(),
            msg.path.file_name().and_then(NamePattern::parse),
        ) else {
            return listed;
        };
        self.storage.glob(&msg.user, &dir, &pattern)
    }
}

impl Handler<OpenRead> for FileStore {
    type Result = Result<ReadHandle, StoreError>;
    fn handle(&mut self, msg: OpenRead, _: &mut Self::Context) -> Self::Result {
        self.storage.open_read(&msg.user, &msg.path, msg.offset)
    }
}

impl Handler<OpenWrite> for FileStore {
    type Result = Result<Upload, StoreError>;
    fn handle(&mut self, msg: OpenWrite, _: &mut Self::Context) -> Self::Result {
        self.storage.open_write(&msg.user, &msg.path, msg.mode)
    }
}

/// Usage and limits of a user (SITE QUOTA).
#[derive(Debug, Message)]
#[rtype(result = "Result<QuotaReport, StoreError>")]
pub struct QuotaStatus {
    /// Whose.
    pub user: Arc<str>,
}

impl Handler<QuotaStatus> for FileStore {
    type Result = Result<QuotaReport, StoreError>;
    fn handle(&mut self, msg: QuotaStatus, _: &mut Self::Context) -> Self::Result {
        self.storage.quota(&msg.user)
    }
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

impl Handler<SetModified> for FileStore {
    type Result = Result<(), StoreError>;
    fn handle(&mut self, msg: SetModified, _: &mut Self::Context) -> Self::Result {
        self.storage.set_modified(&msg.user, &msg.path, msg.time)
    }
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

impl Handler<Chmod> for FileStore {
    type Result = Result<(), StoreError>;
    fn handle(&mut self, msg: Chmod, _: &mut Self::Context) -> Self::Result {
        self.storage.chmod(&msg.user, &msg.path, msg.mode)
    }
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

impl Handler<Hash> for FileStore {
    type Result = Result<(String, u64), StoreError>;
    fn handle(&mut self, msg: Hash, _: &mut Self::Context) -> Self::Result {
        self.storage.hash(&msg.user, &msg.path, msg.algo)
    }
}

impl Handler<CommitUpload> for FileStore {
    type Result = Result<(), StoreError>;
    fn handle(&mut self, msg: CommitUpload, _: &mut Self::Context) -> Self::Result {
        self.storage.commit(msg.staged)
    }
}

impl Handler<Mkdir> for FileStore {
    type Result = Result<(), StoreError>;
    fn handle(&mut self, msg: Mkdir, _: &mut Self::Context) -> Self::Result {
        self.storage.mkdir(&msg.user, &msg.path)
    }
}

impl Handler<Rmdir> for FileStore {
    type Result = Result<(), StoreError>;
    fn handle(&mut self, msg: Rmdir, _: &mut Self::Context) -> Self::Result {
        self.storage.rmdir(&msg.user, &msg.path)
    }
}

impl Handler<Remove> for FileStore {
    type Result = Result<(), StoreError>;
    fn handle(&mut self, msg: Remove, _: &mut Self::Context) -> Self::Result {
        self.storage.remove(&msg.user, &msg.path)
    }
}

impl Handler<Rename> for FileStore {
    type Result = Result<(), StoreError>;
    fn handle(&mut self, msg: Rename, _: &mut Self::Context) -> Self::Result {
        self.storage.rename(&msg.user, &msg.from, &msg.to)
    }
}

#[cfg(test)]
mod tests {
    use std::io::Read;
    use std::os::unix::fs::{PermissionsExt, symlink};

    use tempfile::TempDir;

    use super::*;

    /// A data dir with homes for "alice" and "bob" and a staging dir.
    struct Fixture {
        dir: TempDir,
        store: LocalStorage,
    }

    impl Fixture {
        fn new() -> Fixture {
            let dir = TempDir::new().expect("temp dir");
            let store = LocalStorage::new(dir.path().join("home"), dir.path().join("tmp"))
                .expect("storage");
            store.create_home("alice").expect("alice home");
            store.create_home("bob").expect("bob home");
            Fixture { dir, store }
        }

        fn home(&self, user: &str) -> PathBuf {
            self.dir.path().join("home").join(user)
        }

        fn write(&self, rel: &str, bytes: &[u8]) {
            fs::write(self.dir.path().join("home").join(rel), bytes).expect("write fixture");
        }

        fn read(&self, rel: &str) -> Vec<u8> {
            fs::read(self.dir.path().join("home").join(rel)).expect("read fixture")
        }

        fn temps(&self) -> usize {
            fs::read_dir(self.dir.path().join("tmp"))
                .expect("tmp dir")
                .count()
        }
    }

    fn vp(path: &str) -> VPath {
        VPath::root().resolve(path).expect("valid test path")
    }

    #[test]
    fn a_listing_past_the_limit_is_refused_and_one_at_it_is_not() {
        let fx = Fixture::new();
        fs::create_dir(fx.home("alice").join("d")).expect("mkdir");
        for i in 0..3 {
            fx.write(&format!("alice/d/f{i}"), b"x");
        }
        let at = LocalStorage::new(fx.dir.path().join("home"), fx.dir.path().join("tmp"))
            .expect("storage")
            .with_listing_limit(3);
        assert_eq!(at.list("alice", &vp("/d")).expect("list").entries.len(), 3);
        let below = LocalStorage::new(fx.dir.path().join("home"), fx.dir.path().join("tmp"))
            .expect("storage")
            .with_listing_limit(2);
        assert!(matches!(
            below.list("alice", &vp("/d")),
            Err(StoreError::TooManyEntries(2))
        ));
        // A file is one entry, whatever the limit.
        assert_eq!(
            below
                .list("alice", &vp("/d/f0"))
                .expect("file")
                .entries
                .len(),
            1
        );
    }

    fn pattern(text: &str) -> NamePattern {
        NamePattern::parse(text).expect("a wildcard pattern")
    }

    #[test]
    fn glob_keeps_matching_names_of_one_directory_inside_the_home() {
        let fx = Fixture::new();
        let alice = fx.home("alice");
        fs::create_dir_all(alice.join("d/sub.dat")).expect("mkdir");
        for name in ["a.dat", "b.dat", "c.txt", ".hidden.dat"] {
            fx.write(&format!("alice/d/{name}"), b"x");
        }
        fx.write("bob/secret.dat", b"bob's");
        symlink(fx.home("bob").join("secret.dat"), alice.join("d/out.dat")).expect("link");
        symlink("a.dat", alice.join("d/in.dat")).expect("link");
        let found = fx
            .store
            .glob("alice", &vp("/d"), &pattern("*.dat"))
            .expect("glob");
        assert!(found.matched && !found.is_dir);
        // The link out of the home is left out as in a listing; the one inside is followed.
        assert_eq!(
            names(&found.entries),
            ["a.dat", "b.dat", "in.dat", "sub.dat"]
        );
        let dirs: Vec<_> = found.entries.iter().map(|e| e.kind).collect();
        assert_eq!(dirs[3], FileKind::Dir);
        // `..` in the directory part never climbs above the home.
        let top = fx
            .store
            .glob("alice", &vp("/../../.."), &pattern("*"))
            .expect("glob at the top");
        assert_eq!(names(&top.entries), ["d"]);
        assert!(matches!(
            fx.store.glob("alice", &vp("/d/a.dat"), &pattern("*")),
            Err(StoreError::NotADirectory)
        ));
        assert!(matches!(
            fx.store.glob("alice", &vp("/none"), &pattern("*")),
            Err(StoreError::NotFound)
        ));
    }

    #[test]
    fn glob_counts_every_name_read_and_stops_at_its_deadline() {
        let fx = Fixture::new();
        for i in 0..3 {
            fx.write(&format!("alice/f{i}"), b"x");
        }
        let limited = || {
            LocalStorage::new(fx.dir.path().join("home"), fx.dir.path().join("tmp"))
                .expect("storage")
        };
        // One match, but three names read: a directory too big to list is too big to glob.
        assert!(matches!(
            limited()
                .with_listing_limit(2)
                .glob("alice", &VPath::root(), &pattern("f0*")),
            Err(StoreError::TooManyEntries(2))
        ));
        assert_eq!(
            limited()
                .with_listing_limit(3)
                .glob("alice", &VPath::root(), &pattern("f0*"))
                .expect("at the limit")
                .entries
                .len(),
            1
        );
        assert!(matches!(
            limited().with_glob_time_limit(Duration::ZERO).glob(
                "alice",
                &VPath::root(),
                &pattern("f*")
            ),
            Err(StoreError::TimedOut)
        ));
    }

    fn staged(finish: Finish) -> StagedUpload {
        match finish {
            Finish::Staged { staged, .. } => staged,
            Finish::InPlace(_) => panic!("expected a staged upload"),
        }
    }

    fn names(infos: &[FileInfo]) -> Vec<&str> {
        infos.iter().map(|info| info.name.as_str()).collect()
    }

    fn read_all(handle: ReadHandle) -> Vec<u8> {
        let mut bytes = Vec::new();
        let mut file = handle.file;
        file.read_to_end(&mut bytes).expect("read");
        bytes
    }

    #[test]
    fn traversal_stays_in_home() {
        let fx = Fixture::new();
        fx.write("alice/x", b"mine");
        fx.write("x", b"beside the homes");
        let cwd = vp("/sub");
        for arg in ["../x", "../../x", "/../x", "//x", "/./x", "x/../../x"] {
            let path = cwd.resolve(arg).expect("resolves");
            let handle = fx.store.open_read("alice", &path, 0).expect(arg);
            assert_eq!(read_all(handle), b"mine", "{arg:?}");
        }
        for arg in ["..", "../..", "/.."] {
            let path = cwd.resolve(arg).expect("resolves");
            assert_eq!(
                fx.store.stat("alice", &path).expect(arg).name,
                "/",
                "{arg:?}"
            );
        }
        // A sibling's home is just a missing directory from inside this one.
        fx.write("bob/y", b"bob's");
        let bob = cwd.resolve("../../bob/y").expect("resolves");
        assert!(matches!(
            fx.store.stat("alice", &bob),
            Err(StoreError::NotFound)
        ));
    }

    #[test]
    fn stat_and_list() {
        let fx = Fixture::new();
        fx.write("alice/b.txt", b"hello");
        fs::create_dir(fx.home("alice").join("a")).expect("mkdir");
        let root = fx.store.stat("alice", &VPath::root()).expect("stat root");
        assert_eq!((root.name.as_str(), root.kind), ("/", FileKind::Dir));
        let file = fx.store.stat("alice", &vp("/b.txt")).expect("stat file");
        assert_eq!(
            (file.name.as_str(), file.kind, file.size),
            ("b.txt", FileKind::File, 5)
        );
        assert!(file.unique.contains('g'));
        let listing = fx
            .store
            .list("alice", &VPath::root())
            .expect("list")
            .entries;
        assert_eq!(names(&listing), ["a", "b.txt"]);
        assert_eq!(listing[0].kind, FileKind::Dir);
        let one = fx
            .store
            .list("alice", &vp("/b.txt"))
            .expect("list file")
            .entries;
        assert_eq!(one, vec![file]);
        assert!(matches!(
            fx.store.stat("alice", &vp("/nope")),
            Err(StoreError::NotFound)
        ));
        assert!(matches!(
            fx.store.stat("alice", &vp("/b.txt/x")),
            Err(StoreError::NotADirectory)
        ));
    }

    #[test]
    fn special_files_are_hidden() {
        let fx = Fixture::new();
        // A socket stands in for FIFOs and devices: opening one could block a store thread.
        let _socket = std::os::unix::net::UnixListener::bind(fx.home("alice").join("sock"))
            .expect("bind socket");
        fx.write("alice/f", b"x");
        let listing = fx
            .store
            .list("alice", &VPath::root())
            .expect("list")
            .entries;
        assert_eq!(names(&listing), ["f"]);
        assert!(matches!(
            fx.store.stat("alice", &vp("/sock")),
            Err(StoreError::NotFound)
        ));
        assert!(matches!(
            fx.store.open_read("alice", &vp("/sock"), 0),
            Err(StoreError::NotFound)
        ));
    }

    #[test]
    fn open_read_at_offset() {
        let fx = Fixture::new();
        fx.write("alice/f", b"0123456789");
        let handle = fx.store.open_read("alice", &vp("/f"), 4).expect("open");
        assert_eq!(handle.size, 10);
        assert_eq!(read_all(handle), b"456789");
        assert!(matches!(
            fx.store.open_read("alice", &VPath::root(), 0),
            Err(StoreError::IsADirectory)
        ));
    }

    #[test]
    fn symlinks_out_of_home_look_missing() {
        let fx = Fixture::new();
        fx.write("bob/secret.txt", b"bob's secret");
        let alice = fx.home("alice");
        symlink(fx.home("bob"), alice.join("bob")).expect("link");
        symlink("/etc", alice.join("etc")).expect("link");
        symlink(fx.home("bob").join("secret.txt"), alice.join("secret")).expect("link");
        symlink(alice.join("nowhere"), alice.join("dangling")).expect("link");
        fx.write("alice/mine", b"alice's");

        let store = &fx.store;
        let not_found = |result: Result<(), StoreError>, what: &str| {
            assert!(
                matches!(result, Err(StoreError::NotFound)),
                "{what}: {result:?}"
            );
        };
        for path in [
            "/bob",
            "/bob/secret.txt",
            "/etc",
            "/etc/passwd",
            "/secret",
            "/dangling",
        ] {
            not_found(store.stat("alice", &vp(path)).map(drop), path);
            not_found(store.list("alice", &vp(path)).map(drop), path);
            not_found(store.open_read("alice", &vp(path), 0).map(drop), path);
            not_found(store.remove("alice", &vp(path)), path);
            not_found(store.rename("alice", &vp(path), &vp("/stolen")), path);
        }
        for path in [
            "/bob/new",
            "/bob/secret.txt",
            "/secret",
            "/etc/passwd",
            "/etc/new",
        ] {
            not_found(
                store
                    .open_write("alice", &vp(path), WriteMode::Replace)
                    .map(drop),
                path,
            );
        }
        not_found(store.mkdir("alice", &vp("/bob/d")), "mkdir");
        not_found(store.rmdir("alice", &vp("/bob")), "rmdir");
        not_found(
            store.rename("alice", &vp("/mine"), &vp("/bob/mine")),
            "rename into",
        );
        not_found(
            store.rename("alice", &vp("/mine"), &vp("/secret")),
            "rename over",
        );

        let listing = store.list("alice", &VPath::root()).expect("list").entries;
        assert_eq!(names(&listing), ["mine"]);
        let mut bobs = fs::read_dir(fx.home("bob"))
            .expect("bob")
            .map(|e| e.expect("entry").file_name())
            .collect::<Vec<_>>();
        bobs.sort();
        assert_eq!(bobs, ["secret.txt"]);
        assert_eq!(fx.read("bob/secret.txt"), b"bob's secret");
        assert_eq!(fx.read("alice/mine"), b"alice's");
        assert_eq!(fx.temps(), 0);
    }

    #[test]
    fn sibling_prefix_is_not_inside() {
        let fx = Fixture::new();
        fx.store.create_home("al").expect("al home");
        fx.write("alice/file", b"alice's");
        // Textually "home/alice/file" starts with "home/al"; component-wise it does not.
        symlink("../alice/file", fx.home("al").join("x")).expect("link");
        symlink("../alice", fx.home("al").join("d")).expect("link");
        assert!(matches!(
            fx.store.stat("al", &vp("/x")),
            Err(StoreError::NotFound)
        ));
        assert!(matches!(
            fx.store.open_read("al", &vp("/d/file"), 0),
            Err(StoreError::NotFound)
        ));
        assert!(matches!(
            fx.store.open_write("al", &vp("/x"), WriteMode::Replace),
            Err(StoreError::NotFound)
        ));
        assert!(
            fx.store
                .list("al", &VPath::root())
                .expect("list")
                .entries
                .is_empty()
        );
    }

    #[test]
    fn symlinks_inside_home_work() {
        let fx = Fixture::new();
        let alice = fx.home("alice");
        fs::create_dir(alice.join("real")).expect("mkdir");
        fx.write("alice/real/f", b"data");
        symlink("real", alice.join("docs")).expect("link");
        symlink("real/f", alice.join("f-link")).expect("link");

        let docs = fx.store.stat("alice", &vp("/docs")).expect("stat");
        assert_eq!((docs.name.as_str(), docs.kind), ("docs", FileKind::Dir));
        assert_eq!(
            names(&fx.store.list("alice", &vp("/docs")).expect("list").entries),
            ["f"]
        );
        let handle = fx
            .store
            .open_read("alice", &vp("/docs/f"), 0)
            .expect("open");
        assert_eq!(read_all(handle), b"data");

        // Uploading through a link replaces the file it points to, and keeps the link.
        let mut upload = fx
            .store
            .open_write("alice", &vp("/f-link"), WriteMode::Replace)
            .expect("open_write");
        upload.write(b"new").expect("write");
        fx.store.commit(staged(upload.finish)).expect("commit");
        assert_eq!(fx.read("alice/real/f"), b"new");
        assert!(
            fs::symlink_metadata(alice.join("f-link"))
                .expect("lstat")
                .is_symlink()
        );

        // rmdir and remove act on the link, never on what it points to.
        assert!(matches!(
            fx.store.rmdir("alice", &vp("/docs")),
            Err(StoreError::NotADirectory)
        ));
        fx.store.remove("alice", &vp("/docs")).expect("remove link");
        assert!(alice.join("real/f").exists());
        fx.store
            .rename("alice", &vp("/f-link"), &vp("/g-link"))
            .expect("rename link");
        assert!(
            fs::symlink_metadata(alice.join("g-link"))
                .expect("lstat")
                .is_symlink()
        );
    }

    /// The directory an upload is renamed into is synced by the handle the commit holds
    /// (an `O_PATH` handle refused `fsync` with `EBADF`, so no rename was made durable).
    #[test]
    fn the_directory_of_a_commit_can_be_synced() {
        let fx = Fixture::new();
        fs::create_dir(fx.home("alice").join("sub")).expect("mkdir");
        let home = fx.store.home("alice").expect("home");
        let target = write_target(&home, &vp("/sub/f")).expect("target");
        sync_dir(&target.dir).expect("fsync of the target's directory");
    }

    #[test]
    fn upload_dropped_without_commit_leaves_nothing() {
        let fx = Fixture::new();
        fx.write("alice/f", b"old");
        let mut upload = fx
            .store
            .open_write("alice", &vp("/f"), WriteMode::Replace)
            .expect("open_write");
        upload.write(b"partial").expect("write");
        assert_eq!(fx.temps(), 1);
        drop(upload);
        assert_eq!(fx.temps(), 0);
        assert_eq!(fx.read("alice/f"), b"old");
    }

    /// An interrupted STOR (the upload dropped, as ABOR or a lost connection drops it) of a
    /// name that held no file leaves what arrived there, charged; over an existing file, or
    /// refused, or with the setting off, it leaves nothing, and a name taken meanwhile stays.
    #[test]
    fn interrupted_uploads_of_new_names_are_kept_and_nothing_else() {
        use crate::config::Quota;

        let fx = Fixture::new();
        let ledger = Arc::new(
            QuotaLedger::new(
                fx.dir.path().join("usage"),
                fx.dir.path().join("home"),
                Arc::new(|_: &str| Quota {
                    bytes: Some(100),
                    files: None,
                }),
            )
            .expect("ledger"),
        );
        let store = LocalStorage::new(fx.dir.path().join("home"), fx.dir.path().join("tmp"))
            .expect("storage")
            .with_quota(Arc::clone(&ledger))
            .with_partial_uploads(true);
        // As the session commits: the charge goes with the staged file.
        let commit = |upload: Upload| {
            let mut staged = staged(upload.finish);
            staged.attach(upload.charge);
            store.commit(staged)
        };
        let interrupt = |path: &str, bytes: &[u8]| {
            let mut upload = store
                .open_write("alice", &vp(path), WriteMode::Replace)
                .expect("open_write");
            upload.write(bytes).expect("write");
            upload
        };
        drop(interrupt("/new", b"first part"));
        assert_eq!(fx.read("alice/new"), b"first part");
        assert_eq!(fx.temps(), 0);
        let usage = ledger.usage("alice").expect("usage");
        assert_eq!((usage.bytes, usage.files), (10, 1));

        // Over an existing file (now /new): the old one stays, exactly.
        drop(interrupt("/new", b"other bytes"));
        assert_eq!(fx.read("alice/new"), b"first part");
        // Nothing arrived: no empty file.
        drop(interrupt("/empty", b""));
        assert!(!fx.home("alice").join("empty").exists());
        // A quota refusal or a local failure keeps nothing.
        let mut refused = interrupt("/refused", b"12345");
        refused.roll_back();
        drop(refused);
        let mut failed = interrupt("/failed", b"12345");
        failed.discard_partial();
        drop(failed);
        assert!(!fx.home("alice").join("refused").exists());
        assert!(!fx.home("alice").join("failed").exists());
        // Another upload created the name meanwhile: its file stays, the partial goes.
        let raced = interrupt("/raced", b"partial");
        let mut winner = store
            .open_write("alice", &vp("/raced"), WriteMode::Replace)
            .expect("open_write");
        winner.write(b"winner").expect("write");
        commit(winner).expect("commit");
        drop(raced);
        assert_eq!(fx.read("alice/raced"), b"winner");
        // A complete upload whose commit fails is not kept as interrupted either.
        fs::create_dir(fx.home("alice").join("d")).expect("mkdir");
        let vanished = interrupt("/d/f", b"x");
        fs::remove_dir(fx.home("alice").join("d")).expect("rmdir");
        fs::create_dir(fx.home("alice").join("d")).expect("mkdir again");
        fs::create_dir(fx.home("alice").join("d/f")).expect("a directory at the name");
        assert!(commit(vanished).is_err());
        assert!(fx.home("alice").join("d/f").is_dir());
        fs::remove_dir_all(fx.home("alice").join("d")).expect("rm d");
        assert_eq!(fx.temps(), 0);
        let usage = ledger.usage("alice").expect("usage");
        assert_eq!(usage.bytes, 16);

        // The client went away before the commit: interrupted, kept as such over a new name;
        // an existing file stays.
        for (path, want) in [("/gone", &b"cut"[..]), ("/new", &b"first part"[..])] {
            let mut upload = interrupt(path, b"cut");
            if let Finish::Staged { staged, .. } = &mut upload.finish {
                staged.watch_client(ClientProbe::new(|| true));
            }
            assert!(matches!(commit(upload), Err(StoreError::Interrupted)));
            assert_eq!(fx.read(&format!("alice{path}")), want);
        }
        assert_eq!(fx.temps(), 0);
        assert_eq!(ledger.usage("alice").expect("usage").bytes, 19);

        // Bytes past what the quota allows now are not kept.
        let over = interrupt("/over", &[b'o'; 80]);
        fx.write("alice/operator", &[b'p'; 50]);
        ledger.recount("alice").expect("recount");
        drop(over);
        assert!(!fx.home("alice").join("over").exists());
        assert_eq!(fx.temps(), 0);

        // The setting off: nothing is kept.
        drop(
            fx.store
                .open_write("alice", &vp("/off"), WriteMode::Replace)
                .map(|mut u| u.write(b"x").map(|()| u))
                .expect("open_write")
                .expect("write"),
        );
        assert!(!fx.home("alice").join("off").exists());
        assert_eq!(fx.temps(), 0);
    }

    #[test]
    fn upload_commit_replaces_target() {
        let fx = Fixture::new();
        fx.write("alice/f", b"old");
        let mut upload = fx
            .store
            .open_write("alice", &vp("/f"), WriteMode::Replace)
            .expect("open_write");
        upload.write(b"new contents").expect("write");
        assert_eq!(upload.target, vp("/f"));
        // Readers see the old file until the commit.
        assert_eq!(fx.read("alice/f"), b"old");
        fx.store.commit(staged(upload.finish)).expect("commit");
        assert_eq!(fx.read("alice/f"), b"new contents");
        assert_eq!(fx.temps(), 0);

        let mut upload = fx
            .store
            .open_write("alice", &vp("/g"), WriteMode::Replace)
            .expect("new file");
        upload.write(b"g").expect("write");
        fx.store.commit(staged(upload.finish)).expect("commit");
        assert_eq!(fx.read("alice/g"), b"g");
    }

    #[test]
    fn upload_commit_fails_cleanly_when_target_vanished() {
        let fx = Fixture::new();
        fs::create_dir(fx.home("alice").join("d")).expect("mkdir");
        let upload = fx
            .store
            .open_write("alice", &vp("/d/f"), WriteMode::Replace)
            .expect("open_write");
        fs::remove_dir(fx.home("alice").join("d")).expect("rmdir");
        assert!(matches!(
            fx.store.commit(staged(upload.finish)),
            Err(StoreError::NotFound)
        ));
        assert_eq!(fx.temps(), 0);
    }

    #[test]
    fn interleaved_uploads_never_mix() {
        let fx = Fixture::new();
        let mut first = fx
            .store
            .open_write("alice", &vp("/f"), WriteMode::Replace)
            .expect("first");
        let mut second = fx
            .store
            .open_write("alice", &vp("/f"), WriteMode::Replace)
            .expect("second");
        for _ in 0..100 {
            first.write(&[b'a'; 100]).expect("write");
            second.write(&[b'b'; 100]).expect("write");
        }
        fx.store.commit(staged(first.finish)).expect("commit first");
        fx.store
            .commit(staged(second.finish))
            .expect("commit second");
        let got = fx.read("alice/f");
        assert_eq!(got.len(), 10_000);
        assert!(got.iter().all(|&b| b == got[0]), "mixed bytes");
        assert_eq!(fx.temps(), 0);
    }

    #[test]
    fn in_place_uploads_change_nothing_before_their_first_byte() {
        let fx = Fixture::new();
        fx.write("alice/f", b"0123456789");
        // Opened and dropped (a refused transfer, or no data connection): nothing changed.
        drop(
            fx.store
                .open_write("alice", &vp("/f"), WriteMode::At(4))
                .expect("rest"),
        );
        drop(
            fx.store
                .open_write("alice", &vp("/f"), WriteMode::Append)
                .expect("appe"),
        );
        drop(
            fx.store
                .open_write("alice", &vp("/new"), WriteMode::Append)
                .expect("appe new"),
        );
        let unique = fx
            .store
            .open_write("alice", &vp("/u"), WriteMode::Unique)
            .expect("stou");
        assert_eq!(unique.target, vp("/u"));
        drop(unique);
        assert_eq!(fx.read("alice/f"), b"0123456789");
        assert!(!fx.home("alice").join("new").exists());
        assert!(!fx.home("alice").join("u").exists());
        // The first byte truncates at the marker, then writes.
        let mut rest = fx
            .store
            .open_write("alice", &vp("/f"), WriteMode::At(4))
            .expect("rest");
        rest.write(b"ab").expect("write");
        drop(rest);
        assert_eq!(fx.read("alice/f"), b"0123ab");
        // An empty transfer that completes still creates its file.
        let mut empty = fx
            .store
            .open_write("alice", &vp("/new"), WriteMode::Append)
            .expect("appe");
        empty.complete().expect("complete");
        drop(empty);
        assert_eq!(fx.read("alice/new"), b"");
    }

    #[test]
    fn open_write_checks_target() {
        let fx = Fixture::new();
        fs::create_dir(fx.home("alice").join("d")).expect("mkdir");
        fx.write("alice/file", b"x");
        let store = &fx.store;
        let err = |path: &str| {
            store
                .open_write("alice", &vp(path), WriteMode::Replace)
                .map(drop)
                .unwrap_err()
        };
        assert!(matches!(err("/d"), StoreError::IsADirectory));
        assert!(matches!(err("/"), StoreError::IsADirectory));
        assert!(matches!(err("/missing/f"), StoreError::NotFound));
        assert!(matches!(err("/file/f"), StoreError::NotADirectory));
        assert_eq!(fx.temps(), 0);
    }

    #[test]
    fn directories() {
        let fx = Fixture::new();
        let store = &fx.store;
        store.mkdir("alice", &vp("/d")).expect("mkdir");
        assert!(matches!(
            store.mkdir("alice", &vp("/d")),
            Err(StoreError::AlreadyExists)
        ));
        assert!(matches!(
            store.mkdir("alice", &VPath::root()),
            Err(StoreError::AlreadyExists)
        ));
        assert!(matches!(
            store.mkdir("alice", &vp("/x/y")),
            Err(StoreError::NotFound)
        ));
        store.mkdir("alice", &vp("/d/e")).expect("mkdir nested");
        assert!(matches!(
            store.rmdir("alice", &vp("/d")),
            Err(StoreError::NotEmpty)
        ));
        assert!(matches!(
            store.rmdir("alice", &VPath::root()),
            Err(StoreError::PermissionDenied)
        ));
        assert!(matches!(
            store.remove("alice", &vp("/d")),
            Err(StoreError::IsADirectory)
        ));
        fx.write("alice/d/e/f", b"x");
        assert!(matches!(
            store.rmdir("alice", &vp("/d/e/f")),
            Err(StoreError::NotADirectory)
        ));
        store.remove("alice", &vp("/d/e/f")).expect("remove");
        store.rmdir("alice", &vp("/d/e")).expect("rmdir");
        store.rmdir("alice", &vp("/d")).expect("rmdir");
        assert!(matches!(
            store.rmdir("alice", &vp("/d")),
            Err(StoreError::NotFound)
        ));
        assert!(matches!(
            store.remove("alice", &vp("/d")),
            Err(StoreError::NotFound)
        ));
    }

    #[test]
    fn renames() {
        let fx = Fixture::new();
        let store = &fx.store;
        store.mkdir("alice", &vp("/a")).expect("mkdir");
        store.mkdir("alice", &vp("/a/b")).expect("mkdir");
        for to in ["/a/b/a", "/a/a"] {
            assert!(
                matches!(
                    store.rename("alice", &vp("/a"), &vp(to)),
                    Err(StoreError::InvalidName)
                ),
                "{to}"
            );
        }
        assert!(matches!(
            store.rename("alice", &VPath::root(), &vp("/x")),
            Err(StoreError::PermissionDenied)
        ));
        assert!(matches!(
            store.rename("alice", &vp("/a"), &VPath::root()),
            Err(StoreError::PermissionDenied)
        ));
        store
            .rename("alice", &vp("/a"), &vp("/ab"))
            .expect("sibling with a prefix name");
        store
            .rename("alice", &vp("/ab/b"), &vp("/b"))
            .expect("move up");
        fx.write("alice/f", b"f");
        store
            .rename("alice", &vp("/f"), &vp("/b/g"))
            .expect("move file");
        assert_eq!(fx.read("alice/b/g"), b"f");
        assert!(matches!(
            store.rename("alice", &vp("/missing"), &vp("/x")),
            Err(StoreError::NotFound)
        ));
    }

    #[test]
    fn bad_user_names_are_not_found() {
        let fx = Fixture::new();
        for user in ["", ".", "..", "a/b", "../alice"] {
            assert!(
                matches!(fx.store.create_home(user), Err(StoreError::NotFound)),
                "{user:?}"
            );
            assert!(
                matches!(
                    fx.store.stat(user, &VPath::root()),
                    Err(StoreError::NotFound)
                ),
                "{user:?}"
            );
        }
        assert!(matches!(
            fx.store.stat("carol", &VPath::root()),
            Err(StoreError::NotFound)
        ));
        fx.store.create_home("alice").expect("idempotent");
    }

    #[actix::test]
    async fn actor_round_trip() {
        let fx = Fixture::new();
        let fx_home = fx.dir.path().join("home");
        let storage: Arc<dyn Storage> = Arc::new(fx.store);
        let addr = FileStore::start(storage, 2);
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
        let mut upload = addr
            .send(OpenWrite {
                user: user.clone(),
                path: file.clone(),
                mode: WriteMode::Replace,
            })
            .await
            .expect("mailbox")
            .expect("open_write");
        upload.write(b"via actor").expect("write");
        addr.send(CommitUpload {
            staged: staged(upload.finish),
        })
        .await
        .expect("mailbox")
        .expect("commit");
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
        fs::write(fx_home.join("carol/docs/[e-g]"), b"literal").expect("write");
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
        assert_eq!(read_all(handle), b"actor");
        let missing = addr
            .send(Stat {
                user,
                path: vp("/../nope"),
            })
            .await
            .expect("mailbox");
        assert!(matches!(missing, Err(StoreError::NotFound)));
    }

    /// Exchanges `/d` in alice's home with a link to a directory outside while the store works
    /// through `/d`: nothing outside is ever read, created, changed or removed.
    #[test]
    fn swapped_directory_never_leads_out() {
        use rustix::fs::{CWD, RenameFlags, renameat_with};
        use std::sync::atomic::{AtomicBool, Ordering};

        let fx = Fixture::new();
        let outside = TempDir::new().expect("outside");
        let alice = fx.home("alice");
        for dir in [outside.path(), alice.join("d").as_path()] {
            fs::create_dir_all(dir).expect("mkdir");
            for name in ["f", "g", "m"] {
                fs::write(dir.join(name), b"x").expect("file");
            }
            fs::set_permissions(dir.join("m"), fs::Permissions::from_mode(0o600)).expect("mode");
        }
        fs::write(outside.path().join("f"), b"OUTSIDE").expect("secret");
        fs::write(outside.path().join("only-outside"), b"").expect("marker");
        symlink(outside.path(), alice.join("l")).expect("link");
        let before = snapshot(outside.path());
        let stop = AtomicBool::new(false);
        std::thread::scope(|s| {
            s.spawn(|| {
                for _ in 0..2_000_000 {
                    if stop.load(Ordering::Relaxed) {
                        break;
                    }
                    renameat_with(
                        CWD,
                        alice.join("d"),
                        CWD,
                        alice.join("l"),
                        RenameFlags::EXCHANGE,
                    )
                    .expect("exchange");
                }
            });
            let store = &fx.store;
            for i in 0..3_000 {
                if let Ok(handle) = store.open_read("alice", &vp("/d/f"), 0) {
                    assert_ne!(read_all(handle), b"OUTSIDE");
                }
                if let Ok(listing) = store.list("alice", &vp("/d")) {
                    assert!(listing.entries.iter().all(|e| e.name != "only-outside"));
                }
                if let Ok(upload) =
                    store.open_write("alice", &vp(&format!("/d/n{i}")), WriteMode::Replace)
                {
                    let _ = store.commit(staged(upload.finish));
                }
                let _ = store.mkdir("alice", &vp(&format!("/d/m{i}")));
                let _ = store.remove("alice", &vp("/d/g"));
                let _ = store.rename("alice", &vp("/d/f"), &vp("/d/f2"));
                let _ = store.rename("alice", &vp("/d/f2"), &vp("/d/f"));
                let _ = store.chmod("alice", &vp("/d/m"), 0o777);
                let _ = store.set_modified("alice", &vp("/d/m"), SystemTime::UNIX_EPOCH);
            }
            stop.store(true, Ordering::Relaxed);
        });
        assert_eq!(before, snapshot(outside.path()));
    }

    /// Every entry of `dir`, sorted: name, contents, mode and mtime.
    fn snapshot(dir: &Path) -> Vec<(OsString, Vec<u8>, u32, i64, i64)> {
        let mut entries: Vec<_> = fs::read_dir(dir)
            .expect("read dir")
            .map(|e| {
                let e = e.expect("entry");
                let m = e.metadata().expect("meta");
                let bytes = fs::read(e.path()).expect("read");
                (e.file_name(), bytes, m.mode(), m.mtime(), m.mtime_nsec())
            })
            .collect();
        entries.sort();
        entries
    }

    /// In-place uploads (APPE, REST+STOR, STOU) open their file only at the first byte: `/d` is
    /// exchanged with a link to a directory outside between the command and that byte, and
    /// between a first chunk and a quota refusal's roll back. They still open, write and roll
    /// back the file in the directory they resolved, which stays in the home: nothing outside
    /// is created, written, truncated or removed, and the ledger agrees with a recount.
    #[test]
    fn in_place_uploads_through_a_swapped_directory_stay_inside() {
        use crate::config::Quota;
        use crate::quota::count_tree;
        use rustix::fs::{CWD, RenameFlags, renameat_with};

        let fx = Fixture::new();
        let limit = 1 << 20;
        let ledger = QuotaLedger::new(
            fx.dir.path().join("usage"),
            fx.dir.path().join("home"),
            Arc::new(move |_: &str| Quota {
                bytes: Some(limit),
                files: None,
            }),
        )
        .expect("ledger");
        let store = LocalStorage::new(fx.dir.path().join("home"), fx.dir.path().join("tmp"))
            .expect("storage")
            .with_quota(Arc::new(ledger));
        let outside = TempDir::new().expect("outside");
        let alice = fx.home("alice");
        fs::create_dir(alice.join("d")).expect("mkdir");
        for name in ["a", "r"] {
            fs::write(alice.join("d").join(name), b"inside").expect("file");
        }
        for name in ["a", "r", "b", "u"] {
            fs::write(outside.path().join(name), b"OUTSIDE").expect("secret");
        }
        symlink(outside.path(), alice.join("l")).expect("link");
        let before = snapshot(outside.path());
        let swap = || {
            renameat_with(
                CWD,
                alice.join("d"),
                CWD,
                alice.join("l"),
                RenameFlags::EXCHANGE,
            )
            .expect("exchange");
        };
        // Always past the byte limit: refused after the file is opened, then rolled back.
        let too_much = vec![b'z'; usize::try_from(limit).expect("small") + 1];
        let cases: [(&str, WriteMode, &[u8]); 9] = [
            ("/d/a", WriteMode::Append, b"+"),
            ("/d/p", WriteMode::Append, b"new"),
            ("/d/e", WriteMode::Append, b""),
            ("/d/r", WriteMode::At(2), b"rest"),
            ("/d/s", WriteMode::Unique, b"unique"),
            ("/d/q", WriteMode::Append, &too_much),
            ("/d/a", WriteMode::Append, &too_much),
            ("/d/r", WriteMode::At(2), &too_much),
            ("/d/t", WriteMode::Unique, &too_much),
        ];
        for (path, mode, data) in cases {
            let mut upload = store.open_write("alice", &vp(path), mode).expect(path);
            swap();
            let written = match data {
                b"" => upload.complete(),
                _ => upload.write(data),
            };
            match written {
                Ok(()) => assert!(data.len() < 10, "{path}: the limit let it through"),
                Err(UploadError::Quota(_)) if data.len() > 10 => upload.roll_back(),
                Err(e) => panic!("{path}: {e}"),
            }
            drop(upload);
            swap();
        }
        for (path, mode) in [("/d/b", WriteMode::Append), ("/d/u", WriteMode::Unique)] {
            let mut upload = store.open_write("alice", &vp(path), mode).expect(path);
            upload.write(b"first").expect("first chunk");
            swap();
            let refused = upload.write(&too_much);
            assert!(matches!(refused, Err(UploadError::Quota(_))), "{refused:?}");
            upload.roll_back();
            drop(upload);
            swap();
        }
        assert_eq!(before, snapshot(outside.path()));
        let d = alice.join("d");
        assert_eq!(fx.read("alice/d/a"), b"inside+");
        assert_eq!(fx.read("alice/d/p"), b"new");
        assert_eq!(fx.read("alice/d/e"), b"");
        // "inrest", then the refused REST 2 kept what lies before its marker.
        assert_eq!(fx.read("alice/d/r"), b"in");
        assert_eq!(fx.read("alice/d/s"), b"unique");
        for gone in ["q", "t", "b", "u"] {
            assert!(!d.join(gone).exists(), "{gone} was not rolled back");
        }
        assert_eq!(
            store.quota("alice").expect("usage").usage,
            count_tree(&alice).expect("recount")
        );
    }

    #[test]
    fn paths_past_the_limits_are_refused() {
        let fx = Fixture::new();
        let store = LocalStorage::new(fx.dir.path().join("home"), fx.dir.path().join("tmp"))
            .expect("storage")
            .with_path_limits(PathLimits {
                max_depth: 3,
                max_length: 12,
            });
        let too_long = |r: Result<(), StoreError>, what: &str| {
            assert!(matches!(r, Err(StoreError::TooLong)), "{what}: {r:?}");
        };
        store.mkdir("alice", &vp("/a")).expect("1 deep");
        store.mkdir("alice", &vp("/a/b")).expect("2 deep");
        store.mkdir("alice", &vp("/a/b/c")).expect("3 deep");
        too_long(store.mkdir("alice", &vp("/a/b/c/d")), "4 deep");
        too_long(
            store
                .open_write("alice", &vp("/a/b/c/f"), WriteMode::Replace)
                .map(drop),
            "file 4 deep",
        );
        too_long(
            store
                .open_write("alice", &vp("/a/b/c/f"), WriteMode::Unique)
                .map(drop),
            "unique 4 deep",
        );
        too_long(store.mkdir("alice", &vp("/abcdefghijkl")), "13 bytes");
        too_long(store.mkdir("alice", &vp(&"n".repeat(256))), "NAME_MAX");
        too_long(
            store.stat("alice", &vp(&"n".repeat(256))).map(drop),
            "NAME_MAX stat",
        );
        // A tree 1 deep moved to 3 deep would reach 4: refused, nothing moves.
        store.mkdir("alice", &vp("/x")).expect("x");
        store.mkdir("alice", &vp("/x/y")).expect("x/y");
        too_long(
            store.rename("alice", &vp("/x"), &vp("/a/b/x")),
            "moved deeper",
        );
        assert!(fx.home("alice").join("x/y").is_dir());
        // Moving a tree up is always fine; so is a same-depth rename within the length.
        store.rename("alice", &vp("/a/b"), &vp("/b")).expect("up");
        store
            .rename("alice", &vp("/x"), &vp("/z"))
            .expect("sibling");
        // A longer name for the top of a tree counts the longest path below it.
        too_long(
            store.rename("alice", &vp("/z"), &vp("/zzzzzzzzzzz")),
            "longer",
        );
        store
            .rename("alice", &vp("/z"), &vp("/zzzzzzzzz"))
            .expect("as long as allowed");
        assert!(fx.home("alice").join("zzzzzzzzz/y").is_dir());
    }

    #[test]
    fn chmod_never_changes_the_home() {
        let fx = Fixture::new();
        let alice = fx.home("alice");
        symlink(".", alice.join("self")).expect("link");
        fx.write("alice/f", b"x");
        let mode = |p: &Path| fs::metadata(p).expect("stat").mode() & 0o777;
        for path in ["/", "/self"] {
            assert!(
                matches!(
                    fx.store.chmod("alice", &vp(path), 0o000),
                    Err(StoreError::PermissionDenied)
                ),
                "{path}"
            );
        }
        assert_eq!(mode(&alice), 0o700);
        // A file whose bits forbid every access can still be given them back.
        fx.store
            .chmod("alice", &vp("/f"), 0o000)
            .expect("chmod 000");
        assert_eq!(mode(&alice.join("f")), 0o000);
        fx.store
            .chmod("alice", &vp("/f"), 0o640)
            .expect("chmod back");
        assert_eq!(mode(&alice.join("f")), 0o640);
        let when = SystemTime::UNIX_EPOCH + std::time::Duration::from_secs(1_000_000_000);
        fx.store
            .set_modified("alice", &vp("/f"), when)
            .expect("mfmt");
        assert_eq!(
            fs::metadata(alice.join("f"))
                .expect("stat")
                .modified()
                .expect("mtime"),
            when
        );
        let before_1970 = SystemTime::UNIX_EPOCH - std::time::Duration::new(86_400, 500);
        fx.store
            .set_modified("alice", &vp("/f"), before_1970)
            .expect("mfmt 1969");
        assert_eq!(
            fs::metadata(alice.join("f"))
                .expect("stat")
                .modified()
                .expect("mtime"),
            before_1970
        );
    }

    #[test]
    fn full_disk_and_long_names_have_their_own_errors() {
        let errno = |e: Errno| StoreError::from(io::Error::from(e));
        assert!(matches!(errno(Errno::NOSPC), StoreError::NoSpace));
        assert!(matches!(errno(Errno::DQUOT), StoreError::NoSpace));
        assert!(matches!(errno(Errno::NAMETOOLONG), StoreError::TooLong));
        assert!(matches!(errno(Errno::LOOP), StoreError::NotFound));
        assert!(matches!(errno(Errno::IO), StoreError::Io(_)));
    }

    #[test]
    fn stale_staged_uploads_are_removed_and_nothing_else() {
        let f = Fixture::new();
        let tmp = f.dir.path().join("tmp");
        fs::write(tmp.join("0123456789abcdef.part"), b"half an upload").expect("stale");
        fs::write(tmp.join("notes.txt"), b"not ours to remove").expect("other");
        // A live upload staged through the store itself is a .part file too.
        let (_, live) = f.store.create_temp().expect("temp");
        drop(live);
        assert_eq!(f.store.remove_stale_staged().expect("swept"), 2);
        let left: Vec<_> = fs::read_dir(&tmp)
            .expect("tmp")
            .filter_map(Result::ok)
            .map(|e| e.file_name())
            .collect();
        assert_eq!(left, ["notes.txt"]);
    }
}
