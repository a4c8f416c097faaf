//! FileStore: the home-directory jail and every file operation a session asks for.
//!
//! Owns the [`Storage`] trait (object-safe, so another backend can replace the local one),
//! [`LocalStorage`] (files under `homes_dir/<user>`), [`StoreError`], and the [`FileStore`]
//! actor with its messages. The actor runs on a `SyncArbiter` because `std::fs` blocks; it
//! resolves, authorises and opens, and hands back file handles: bulk bytes never pass
//! through its mailbox.
//!
//! The jail: a [`VPath`] cannot contain `..`, so the lexical mapping `home.join(components)`
//! stays inside the home; symlinks (which operators may create) are then checked by
//! canonicalising and requiring the result to lie inside the canonical home. Anything outside,
//! dangling, or not a regular file or directory looks exactly like a missing entry.

use std::collections::HashSet;
use std::fs::{self, File, Metadata, OpenOptions};
use std::io::{self, Seek, SeekFrom, Write};
use std::os::unix::fs::{DirBuilderExt, MetadataExt};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::SystemTime;

use actix::{Actor, Addr, Handler, Message, SyncArbiter, SyncContext};

use crate::actors::quota::{Charge, DIR_BYTES, QuotaError, QuotaLedger, QuotaReport, Tx};
use crate::actors::vpath::VPath;

/// What a directory entry is. Other kinds (devices, FIFOs, sockets) are never shown.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FileKind {
    /// A regular file.
    File,
    /// A directory.
    Dir,
}

/// What a listing needs to know about one entry.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FileInfo {
    /// The final component; "/" for the home itself.
    pub name: String,
    /// File or directory (after following a symlink that stays inside the home).
    pub kind: FileKind,
    /// Size in bytes.
    pub size: u64,
    /// Last modification time.
    pub modified: SystemTime,
    /// Permission bits (`st_mode & 0o7777`).
    pub mode: u32,
    /// Number of hard links.
    pub nlink: u64,
    /// A stable id, "<dev hex>g<ino hex>", for the MLSD `unique` fact.
    pub unique: String,
}

/// What a listing request found: a directory's entries, or one file.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Listing {
    /// Whether the listed path is a directory (else `entries` is that one file).
    pub is_dir: bool,
    /// The listed directory itself (MLSD's `cdir`), named `.`.
    pub this: Option<FileInfo>,
    /// Its parent, unless it is the home (MLSD's `pdir`), named `..`.
    pub parent: Option<FileInfo>,
    /// The entries, sorted by name.
    pub entries: Vec<FileInfo>,
}

/// Why a file operation failed. Each variant's doc names the FTP reply the session sends.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    /// 550: no such file or directory. Also used for anything outside the jail (escaping or
    /// dangling symlinks, special files), so nothing outside is ever revealed.
    #[error("no such file or directory")]
    NotFound,
    /// 550: a directory was needed.
    #[error("not a directory")]
    NotADirectory,
    /// 550: a file was needed.
    #[error("is a directory")]
    IsADirectory,
    /// 550: the target already exists.
    #[error("already exists")]
    AlreadyExists,
    /// 550: the directory is not empty.
    #[error("directory not empty")]
    NotEmpty,
    /// 550: not allowed (also: removing or renaming the home itself).
    #[error("permission denied")]
    PermissionDenied,
    /// 450: another upload is writing this file in place.
    #[error("file busy")]
    Busy,
    /// 554: REST points beyond the end of the file.
    #[error("restart offset beyond the end of the file")]
    BadOffset,
    /// 553: file name not allowed (bad user name, renaming a directory into itself).
    #[error("file name not allowed")]
    InvalidName,
    /// 552: the account's byte or file quota would be passed.
    #[error("quota exceeded")]
    QuotaExceeded,
    /// 451: local error in processing.
    #[error("local error: {0}")]
    Io(#[source] io::Error),
}

impl From<QuotaError> for StoreError {
    fn from(err: QuotaError) -> Self {
        match err {
            QuotaError::Exceeded => StoreError::QuotaExceeded,
            // No limit can be checked: refuse the write (451) rather than let it through.
            QuotaError::Unavailable(e) => StoreError::Io(e),
        }
    }
}

impl From<io::Error> for StoreError {
    fn from(err: io::Error) -> Self {
        match err.kind() {
            io::ErrorKind::NotFound => StoreError::NotFound,
            io::ErrorKind::AlreadyExists => StoreError::AlreadyExists,
            io::ErrorKind::PermissionDenied => StoreError::PermissionDenied,
            io::ErrorKind::DirectoryNotEmpty => StoreError::NotEmpty,
            io::ErrorKind::NotADirectory => StoreError::NotADirectory,
            io::ErrorKind::IsADirectory => StoreError::IsADirectory,
            _ => StoreError::Io(err),
        }
    }
}

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
    /// [`StoreError::BadOffset`] (`At` beyond the end), [`StoreError::QuotaExceeded`] (a new
    /// file past the file limit).
    fn open_write(&self, user: &str, path: &VPath, mode: WriteMode) -> Result<Upload, StoreError>;

    /// Atomically rename the staged temporary file over its target, re-checking the jail.
    /// On error the temporary file is removed and the old target is left intact.
    ///
    /// # Errors
    ///
    /// As for [`Storage::open_write`], if the target changed since;
    /// [`StoreError::QuotaExceeded`] when what the upload adds, measured against the file it
    /// replaces now (not when it started), does not fit.
    fn commit(&self, staged: StagedUpload) -> Result<(), StoreError>;

    /// Create a directory.
    ///
    /// # Errors
    ///
    /// [`StoreError::AlreadyExists`]; [`StoreError::NotFound`] if the parent is missing.
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
    /// moving a directory into its own subtree.
    fn rename(&self, user: &str, from: &VPath, to: &VPath) -> Result<(), StoreError>;

    /// Set the modification time of a file or directory (MFMT).
    ///
    /// # Errors
    ///
    /// [`StoreError::NotFound`] as for `stat`.
    fn set_modified(&self, user: &str, path: &VPath, time: SystemTime) -> Result<(), StoreError>;

    /// Set the permission bits (at most 0o777) of a file or directory (SITE CHMOD).
    ///
    /// # Errors
    ///
    /// [`StoreError::NotFound`] as for `stat`.
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

/// How an upload writes its target.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum WriteMode {
    /// STOR: a temporary file renamed over the target at the end; readers never see half a
    /// file, and a failed upload leaves the old one.
    Replace,
    /// APPE: append to the file in place (created when missing).
    Append,
    /// REST + STOR: keep the first `n` bytes, write from there in place (resume).
    At(u64),
    /// STOU: a new file under a name not yet taken, derived from the target's name.
    Unique,
}

/// Digest algorithms for HASH (draft-bryan-ftpext-hash §3.1 names).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum HashAlgo {
    /// SHA-256, the default.
    Sha256,
    /// SHA-512.
    Sha512,
    /// SHA-1.
    Sha1,
    /// MD5.
    Md5,
    /// CRC-32 (IEEE).
    Crc32,
}

impl HashAlgo {
    /// Every algorithm, in the order FEAT lists them.
    pub const ALL: [HashAlgo; 5] = [
        HashAlgo::Sha256,
        HashAlgo::Sha512,
        HashAlgo::Sha1,
        HashAlgo::Md5,
        HashAlgo::Crc32,
    ];

    /// The name on the wire.
    pub fn name(self) -> &'static str {
        match self {
            HashAlgo::Sha256 => "SHA-256",
            HashAlgo::Sha512 => "SHA-512",
            HashAlgo::Sha1 => "SHA-1",
            HashAlgo::Md5 => "MD5",
            HashAlgo::Crc32 => "CRC32",
        }
    }

    /// Looks an algorithm up by its wire name, case-insensitively.
    pub fn from_name(name: &str) -> Option<HashAlgo> {
        HashAlgo::ALL
            .into_iter()
            .find(|a| a.name().eq_ignore_ascii_case(name))
    }

    /// Digests everything `reader` yields.
    ///
    /// # Errors
    /// A read error.
    pub fn digest(self, reader: &mut dyn io::Read) -> io::Result<String> {
        use sha2::Digest;
        fn run<D: sha2::Digest>(mut d: D, reader: &mut dyn io::Read) -> io::Result<String> {
            let mut buf = vec![0u8; 256 * 1024];
            loop {
                let n = reader.read(&mut buf)?;
                if n == 0 {
                    return Ok(hex::encode(d.finalize()));
                }
                d.update(&buf[..n]);
            }
        }
        match self {
            HashAlgo::Sha256 => run(sha2::Sha256::new(), reader),
            HashAlgo::Sha512 => run(sha2::Sha512::new(), reader),
            HashAlgo::Sha1 => run(sha1::Sha1::new(), reader),
            HashAlgo::Md5 => run(md5::Md5::new(), reader),
            HashAlgo::Crc32 => {
                let mut crc = crc32fast::Hasher::new();
                let mut buf = vec![0u8; 256 * 1024];
                loop {
                    let n = reader.read(&mut buf)?;
                    if n == 0 {
                        return Ok(format!("{:08x}", crc.finalize()));
                    }
                    crc.update(&buf[..n]);
                }
            }
        }
    }
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
    /// Where the bytes go and what completes it.
    pub finish: Finish,
    /// The quota accounting.
    pub charge: Charge,
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

    /// After a quota refusal of an in-place upload: the file goes back to its length when the
    /// upload opened it (removed, if the upload created it). A staged upload needs nothing:
    /// dropping it removes its temporary file.
    pub fn roll_back(&mut self) {
        if let Finish::InPlace(place) = &mut self.finish {
            place.roll_back(&mut self.charge);
        }
    }
}

/// How an in-place upload opens its target: `open(may_create)` returns the file and whether
/// it created it, `None` if it had to create it and may not (see [`Charge::open_in_place`]).
type Opener = Box<dyn FnOnce(bool) -> io::Result<Option<(File, bool)>> + Send>;

/// The target of an in-place upload. Nothing on disk changes until the first byte arrives
/// (or an empty transfer completes): only then is the file opened, created or truncated, so a
/// transfer that is refused or never connects leaves the file as it was. Holds the file's
/// write lock throughout.
pub struct InPlace {
    open: Option<Opener>,
    file: Option<File>,
    /// REST: truncate to this when opening, then write from here; `None`: append.
    pos: Option<u64>,
    /// The length after opening (and truncating): where a roll back returns to.
    start: u64,
    created: bool,
    path: PathBuf,
    _lock: WriteLock,
}

impl std::fmt::Debug for InPlace {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("InPlace")
            .field("path", &self.path)
            .field("opened", &self.file.is_some())
            .field("pos", &self.pos)
            .finish_non_exhaustive()
    }
}

impl InPlace {
    /// The open file, opening (creating, truncating) it first if this is the first use.
    fn opened(&mut self, charge: &mut Charge) -> Result<&File, UploadError> {
        if self.file.is_none() {
            let open = self
                .open
                .take()
                .ok_or_else(|| io::Error::other("the upload's file could not be opened"))?;
            let (mut file, created) = charge.open_in_place(open)??;
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
            let path = &self.path;
            // Remove it only if the name still leads to this upload's own file.
            charge
                .unlink(file, || {
                    let ours = file.metadata()?;
                    match fs::symlink_metadata(path) {
                        Ok(m) if (m.dev(), m.ino()) == (ours.dev(), ours.ino()) => {
                            fs::remove_file(path).map(|()| true)
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
            log::error!("cannot roll back {}: {e}", self.path.display());
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
    locks: Arc<Mutex<HashSet<PathBuf>>>,
    path: PathBuf,
}

impl Drop for WriteLock {
    fn drop(&mut self) {
        self.locks
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .remove(&self.path);
    }
}

/// Temp file path + target. Its `Drop` removes the temp file unless committed, so a failed or
/// aborted upload leaves no temporary behind and the previous file intact.
#[derive(Debug)]
pub struct StagedUpload {
    temp: PathBuf,
    user: Arc<str>,
    target: VPath,
    committed: bool,
    charge: Option<Charge>,
}

impl StagedUpload {
    /// Hands the upload's quota accounting back before the commit, which turns it into usage.
    pub fn attach(&mut self, charge: Charge) {
        self.charge = Some(charge);
    }
}

impl Drop for StagedUpload {
    fn drop(&mut self) {
        if !self.committed
            && let Err(err) = fs::remove_file(&self.temp)
        {
            log::warn!("cannot remove temporary {}: {err}", self.temp.display());
        }
    }
}

/// A [`Storage`] on the local file system: user U's home is `homes_dir/U`.
#[derive(Debug)]
pub struct LocalStorage {
    homes: PathBuf,
    tmp: PathBuf,
    anonymous: Option<PathBuf>,
    locks: Arc<Mutex<HashSet<PathBuf>>>,
    quota: Option<Arc<QuotaLedger>>,
}

/// The user key under which the anonymous area is reached: it can never be an account name
/// (those cannot contain `@`), so no account can reach it.
pub const ANONYMOUS: &str = "@anonymous";

/// The outcome of resolving a path whose parent passed the jail checks.
enum Lookup {
    /// It exists and is visible.
    Found(Box<Entry>),
    /// It does not exist; this is where it would be created.
    Missing(PathBuf),
}

/// Where an existing path leads once the jail checks pass.
struct Entry {
    /// The path without following a final symlink (what remove and rename act on).
    link: PathBuf,
    /// The canonical path, inside the home.
    real: PathBuf,
    /// Metadata of `real`.
    meta: Metadata,
    /// Whether `link` is a symlink.
    is_link: bool,
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
        Ok(LocalStorage {
            homes: fs::canonicalize(homes_dir)?,
            tmp: fs::canonicalize(tmp_dir)?,
            anonymous: None,
            locks: Arc::default(),
            quota: None,
        })
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
        match self.ledger(user) {
            Some(ledger) => Ok(ledger.charge(user, new_file, replaces)?),
            None => Ok(Charge::unlimited()),
        }
    }

    /// An in-place upload of `target` (at `real`), opened by `open` when its first byte
    /// arrives; `pos` is the REST offset.
    fn in_place(
        target: VPath,
        real: PathBuf,
        lock: WriteLock,
        charge: Charge,
        open: Opener,
        pos: Option<u64>,
    ) -> Upload {
        Upload {
            target,
            finish: Finish::InPlace(InPlace {
                open: Some(open),
                file: None,
                pos,
                start: 0,
                created: false,
                path: real,
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

    fn lock(&self, path: PathBuf) -> Result<WriteLock, StoreError> {
        let mut locks = self.locks.lock().unwrap_or_else(|e| e.into_inner());
        if !locks.insert(path.clone()) {
            return Err(StoreError::Busy);
        }
        Ok(WriteLock {
            locks: Arc::clone(&self.locks),
            path,
        })
    }

    /// STOU: picks the first free name among `name`, `name.1`, ... `name.999` next to
    /// `path`, locked and with its file slot reserved; the file is created (`create_new`)
    /// when the first byte arrives.
    fn create_unique(&self, user: &str, path: &VPath) -> Result<Upload, StoreError> {
        let home = self.home(user)?;
        let base = path.file_name().unwrap_or("file");
        let parent = path.parent().unwrap_or_else(VPath::root);
        for n in 0..1000 {
            let name = if n == 0 {
                base.to_owned()
            } else {
                format!("{base}.{n}")
            };
            let candidate = parent.resolve(&name).map_err(|_| StoreError::InvalidName)?;
            let Lookup::Missing(real) = self.lookup(&home, &candidate)? else {
                continue;
            };
            // Another STOU has picked this name and not created it yet.
            let Ok(lock) = self.lock(real.clone()) else {
                continue;
            };
            let charge = self.charge(user, true, None)?;
            let at = real.clone();
            let open: Opener = Box::new(move |_| {
                OpenOptions::new()
                    .write(true)
                    .create_new(true)
                    .open(&at)
                    .map(|file| Some((file, true)))
            });
            return Ok(Self::in_place(candidate, real, lock, charge, open, None));
        }
        Err(StoreError::AlreadyExists)
    }

    /// The canonical home: the root every resolved path must stay under.
    fn home(&self, user: &str) -> Result<PathBuf, StoreError> {
        fs::canonicalize(self.home_path(user)?).map_err(|_| StoreError::NotFound)
    }

    /// The canonical directory that contains `path`'s final component.
    fn parent_dir(&self, home: &Path, path: &VPath) -> Result<PathBuf, StoreError> {
        let lexical: PathBuf = match path.parent() {
            Some(parent) => parent
                .components()
                .fold(home.to_path_buf(), |p, c| p.join(c)),
            None => home.to_path_buf(),
        };
        // Every failure here may describe something outside the jail (e.g. ENOTDIR from a
        // file behind an escaping link), so all of them look like NotFound.
        let dir = fs::canonicalize(lexical).map_err(|_| StoreError::NotFound)?;
        if !dir.starts_with(home) {
            return Err(StoreError::NotFound);
        }
        if !fs::metadata(&dir)?.is_dir() {
            return Err(StoreError::NotADirectory);
        }
        Ok(dir)
    }

    /// Resolve `path` under the canonical `home`: an existing entry that passes the jail
    /// checks, or the path at which a missing one may be created.
    fn lookup(&self, home: &Path, path: &VPath) -> Result<Lookup, StoreError> {
        let Some(name) = path.file_name() else {
            let meta = fs::metadata(home)?;
            return Ok(Lookup::Found(Box::new(Entry {
                link: home.to_path_buf(),
                real: home.to_path_buf(),
                meta,
                is_link: false,
            })));
        };
        let link = self.parent_dir(home, path)?.join(name);
        match fs::symlink_metadata(&link) {
            Ok(lmeta) => Ok(Lookup::Found(Box::new(visible(home, link, lmeta)?))),
            Err(err) if err.kind() == io::ErrorKind::NotFound => Ok(Lookup::Missing(link)),
            Err(err) => Err(err.into()),
        }
    }

    /// Resolve `path` to an existing file or directory inside the user's home.
    fn existing(&self, user: &str, path: &VPath) -> Result<Entry, StoreError> {
        match self.lookup(&self.home(user)?, path)? {
            Lookup::Found(entry) => Ok(*entry),
            Lookup::Missing(_) => Err(StoreError::NotFound),
        }
    }

    /// Where an upload of `path` lands: a new file, or the real file an existing name (or a
    /// symlink inside the home) leads to.
    fn write_target(&self, user: &str, path: &VPath) -> Result<PathBuf, StoreError> {
        match self.lookup(&self.home(user)?, path)? {
            Lookup::Missing(new_file) => Ok(new_file),
            Lookup::Found(entry) if entry.meta.is_dir() => Err(StoreError::IsADirectory),
            Lookup::Found(entry) => Ok(entry.real),
        }
    }

    /// A new, empty temporary file in the staging dir.
    fn create_temp(&self) -> Result<(PathBuf, File), StoreError> {
        // A random name makes a clash unlikely; create_new makes one harmless, so retry.
        for _ in 0..8 {
            let temp = self
                .tmp
                .join(format!("{:016x}.part", rand::random::<u64>()));
            match OpenOptions::new().write(true).create_new(true).open(&temp) {
                Ok(file) => return Ok((temp, file)),
                Err(err) if err.kind() == io::ErrorKind::AlreadyExists => continue,
                Err(err) => return Err(StoreError::Io(err)),
            }
        }
        Err(StoreError::Io(io::Error::other(
            "no free temporary file name",
        )))
    }
}

/// Check an existing entry against the jail: a symlink must resolve inside `home`, and only
/// regular files and directories are shown.
fn visible(home: &Path, link: PathBuf, lmeta: Metadata) -> Result<Entry, StoreError> {
    let is_link = lmeta.file_type().is_symlink();
    let (real, meta) = if is_link {
        let real = fs::canonicalize(&link).map_err(|_| StoreError::NotFound)?;
        if !real.starts_with(home) {
            return Err(StoreError::NotFound);
        }
        let meta = fs::metadata(&real).map_err(|_| StoreError::NotFound)?;
        (real, meta)
    } else {
        (link.clone(), lmeta)
    };
    if !meta.is_file() && !meta.is_dir() {
        return Err(StoreError::NotFound);
    }
    Ok(Entry {
        link,
        real,
        meta,
        is_link,
    })
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
        modified: meta.modified().unwrap_or(SystemTime::UNIX_EPOCH),
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
        let entry = self.existing(user, path)?;
        let name = path.file_name().unwrap_or("/").to_owned();
        Ok(file_info(name, &entry.meta))
    }

    fn list(&self, user: &str, path: &VPath) -> Result<Listing, StoreError> {
        let home = self.home(user)?;
        let Lookup::Found(entry) = self.lookup(&home, path)? else {
            return Err(StoreError::NotFound);
        };
        if !entry.meta.is_dir() {
            let name = path.file_name().unwrap_or("/").to_owned();
            return Ok(Listing {
                is_dir: false,
                this: None,
                parent: None,
                entries: vec![file_info(name, &entry.meta)],
            });
        }
        let mut infos = Vec::new();
        for dirent in fs::read_dir(&entry.real)? {
            let dirent = dirent?;
            // A name that is not UTF-8 could not be named back by a client; leave it out.
            let Ok(name) = dirent.file_name().into_string() else {
                continue;
            };
            let lmeta = match dirent.metadata() {
                Ok(lmeta) => lmeta,
                // Removed between read_dir and here.
                Err(err) if err.kind() == io::ErrorKind::NotFound => continue,
                Err(err) => return Err(err.into()),
            };
            match visible(&home, dirent.path(), lmeta) {
                Ok(child) => infos.push(file_info(name, &child.meta)),
                Err(StoreError::NotFound) => {}
                Err(err) => return Err(err),
            }
        }
        infos.sort_by(|a, b| a.name.cmp(&b.name));
        let parent = match path.parent() {
            Some(parent) => Some(file_info(
                "..".to_owned(),
                &self.existing(user, &parent)?.meta,
            )),
            None => None,
        };
        Ok(Listing {
            is_dir: true,
            this: Some(file_info(".".to_owned(), &entry.meta)),
            parent,
            entries: infos,
        })
    }

    fn open_read(&self, user: &str, path: &VPath, offset: u64) -> Result<ReadHandle, StoreError> {
        let entry = self.existing(user, path)?;
        if entry.meta.is_dir() {
            return Err(StoreError::IsADirectory);
        }
        let mut file = File::open(&entry.real)?;
        // Re-check what was opened: the path may have been replaced since it was checked.
        let meta = file.metadata()?;
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
        let real = self.write_target(user, path)?;
        // The file there now, if there is one.
        let existing = match fs::metadata(&real) {
            Ok(meta) if meta.is_file() => Some(meta),
            Ok(_) => None,
            Err(err) if err.kind() == io::ErrorKind::NotFound => None,
            Err(err) => return Err(err.into()),
        };
        match mode {
            WriteMode::Replace => {
                let charge = self.charge(user, existing.is_none(), existing.as_ref())?;
                let (temp, file) = self.create_temp()?;
                let staged = StagedUpload {
                    temp,
                    user: Arc::from(user),
                    target: path.clone(),
                    committed: false,
                    charge: None,
                };
                Ok(Upload {
                    target: path.clone(),
                    finish: Finish::Staged { file, staged },
                    charge,
                })
            }
            WriteMode::Append => {
                let lock = self.lock(real.clone())?;
                let charge = self.charge(user, existing.is_none(), None)?;
                let at = real.clone();
                let open: Opener = Box::new(move |may_create| {
                    let append = || OpenOptions::new().append(true).clone();
                    match append().open(&at) {
                        Err(e) if e.kind() == io::ErrorKind::NotFound => match may_create {
                            true => append().create_new(true).open(&at).map(|f| Some((f, true))),
                            false => Ok(None),
                        },
                        opened => opened.map(|file| Some((file, false))),
                    }
                });
                Ok(Self::in_place(path.clone(), real, lock, charge, open, None))
            }
            WriteMode::At(offset) => {
                let Some(meta) = existing else {
                    return Err(StoreError::NotFound);
                };
                if offset > meta.len() {
                    return Err(StoreError::BadOffset);
                }
                let lock = self.lock(real.clone())?;
                let charge = self.charge(user, false, None)?;
                let at = real.clone();
                let open: Opener = Box::new(move |_| {
                    OpenOptions::new()
                        .write(true)
                        .open(&at)
                        .map(|file| Some((file, false)))
                });
                let target = path.clone();
                Ok(Self::in_place(
                    target,
                    real,
                    lock,
                    charge,
                    open,
                    Some(offset),
                ))
            }
            WriteMode::Unique => self.create_unique(user, path),
        }
    }

    fn commit(&self, mut staged: StagedUpload) -> Result<(), StoreError> {
        let size = fs::metadata(&staged.temp)?.len();
        // Outlives the change below: dropping a charge takes the user's lock.
        let mut charge = staged.charge.take().unwrap_or_default();
        let user = Arc::clone(&staged.user);
        self.change(&user, |tx| {
            // Resolve and measure again under the user's lock: the tree may have changed
            // while the bytes arrived (the old file renamed away, or replaced).
            let target = self.write_target(&user, &staged.target)?;
            let replaced = fs::metadata(&target)
                .ok()
                .filter(Metadata::is_file)
                .map(|m| m.len());
            let bytes = i128::from(size) - i128::from(replaced.unwrap_or(0));
            let files = i128::from(replaced.is_none());
            tx.settle(&mut charge);
            tx.fits(bytes, files)?;
            tx.mark()?;
            fs::rename(&staged.temp, target)?;
            staged.committed = true;
            tx.record(bytes, files);
            Ok(())
        })
    }

    fn mkdir(&self, user: &str, path: &VPath) -> Result<(), StoreError> {
        self.change(user, |tx| match self.lookup(&self.home(user)?, path)? {
            Lookup::Found(_) => Err(StoreError::AlreadyExists),
            Lookup::Missing(new_dir) => {
                tx.fits(i128::from(DIR_BYTES), 1)?;
                tx.mark()?;
                fs::create_dir(new_dir)?;
                tx.record(i128::from(DIR_BYTES), 1);
                Ok(())
            }
        })
    }

    fn rmdir(&self, user: &str, path: &VPath) -> Result<(), StoreError> {
        if path.is_root() {
            return Err(StoreError::PermissionDenied);
        }
        self.change(user, |tx| {
            let entry = self.existing(user, path)?;
            // Act on the link itself, as rmdir(2) does: a link to a directory is not one.
            if entry.is_link || !entry.meta.is_dir() {
                return Err(StoreError::NotADirectory);
            }
            tx.mark()?;
            fs::remove_dir(entry.link)?;
            tx.record(-i128::from(DIR_BYTES), -1);
            Ok(())
        })
    }

    fn remove(&self, user: &str, path: &VPath) -> Result<(), StoreError> {
        self.change(user, |tx| {
            let entry = self.existing(user, path)?;
            if !entry.is_link && entry.meta.is_dir() {
                return Err(StoreError::IsADirectory);
            }
            tx.mark()?;
            fs::remove_file(&entry.link)?;
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
            let source = self.existing(user, from)?;
            // What a rename over an existing entry takes away from the usage.
            let (dest, freed) = match self.lookup(&self.home(user)?, to)? {
                Lookup::Found(existing) if existing.is_link => (existing.link, (0, 0)),
                Lookup::Found(existing) if existing.meta.is_dir() => {
                    (existing.link, (DIR_BYTES, 1))
                }
                Lookup::Found(existing) => (existing.link, (existing.meta.len(), 1)),
                Lookup::Missing(new_name) => (new_name, (0, 0)),
            };
            // Both link paths have canonical parents, so a component-wise prefix is exact.
            if !source.is_link
                && source.meta.is_dir()
                && dest != source.link
                && dest.starts_with(&source.link)
            {
                return Err(StoreError::InvalidName);
            }
            let same = dest == source.link;
            tx.mark()?;
            fs::rename(source.link, dest)?;
            if !same {
                tx.record(-i128::from(freed.0), -i128::from(freed.1));
            }
            Ok(())
        })
    }

    fn set_modified(&self, user: &str, path: &VPath, time: SystemTime) -> Result<(), StoreError> {
        let entry = self.existing(user, path)?;
        Ok(File::open(&entry.real)?.set_modified(time)?)
    }

    fn chmod(&self, user: &str, path: &VPath, mode: u32) -> Result<(), StoreError> {
        use std::os::unix::fs::PermissionsExt;
        let entry = self.existing(user, path)?;
        Ok(fs::set_permissions(
            &entry.real,
            fs::Permissions::from_mode(mode & 0o777),
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
    /// From [`Upload::staged`], after every byte was written.
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
        self.storage.list(&msg.user, &msg.path)
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
    use std::os::unix::fs::symlink;

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
            })
            .await
            .expect("mailbox")
            .expect("list")
            .entries;
        assert_eq!(names(&listing), ["f"]);
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
