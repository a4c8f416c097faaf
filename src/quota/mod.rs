//! Per-user quotas: the limits ([`Quota`], stored in the account record), the usage ledger
//! ([`QuotaLedger`]: bytes and files per user in `usage/<user>.json`, written atomically) and
//! the accounting of running uploads ([`Charge`]).
//!
//! Usage is read from the ledger file on every check (a few dozen bytes), so a recount by the
//! operator (`ferryd user quota --recount`) takes effect at once in a running server. Every
//! change of a user's tree that the server makes runs under that user's lock, together with
//! the measurement of what it changes (`QuotaLedger::change`, `Charge::grow`), so two
//! sessions of one user cannot slip a change between a measurement and its use. Bytes in
//! flight are reserved in the [`SharedState`]; a file written in place is charged by what its open
//! descriptor's size actually grew (fstat before and after each write, counted while the file
//! is still linked), never by path, so renaming or replacing it meanwhile changes nothing.
//!
//! Crashes: the ledger file is marked dirty before a change to the tree and while in-place
//! writes run; a ledger found dirty at start ([`QuotaLedger::recover`]) is recounted. A ledger
//! that is missing is recounted before use; one that cannot be read or recounted refuses
//! writes (451) rather than letting them through unchecked.
//!
//! What counts: every regular file (its size) and every directory below the home (a fixed
//! [`DIR_BYTES`], so directory floods meet the byte limit) count as one file each; symbolic
//! links (which only the operator can create) count for nothing.

use std::collections::HashMap;
use std::ffi::CString;
use std::fs::{self, File};
use std::io;
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, MutexGuard};

use serde::{Deserialize, Serialize};

use crate::config::{Config, Quota};
use crate::json_file::TempFile;
use crate::state::{Lease, LocalState, Reserved, Room, SharedState};

/// What one directory costs against the byte limit: the block it takes on a common file
/// system (ext4, xfs), so that creating directories is not free.
pub const DIR_BYTES: u64 = 4096;

/// What an account's home holds.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Usage {
    /// Sum of the sizes of the regular files.
    pub bytes: u64,
    /// Regular files plus directories (not the home itself).
    pub files: u64,
}

/// Usage and limits together, for `SITE QUOTA` and `ferryd user quota`.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct QuotaReport {
    /// What is stored now.
    pub usage: Usage,
    /// The limits.
    pub limits: Quota,
}

impl QuotaReport {
    /// The report as text lines: "Bytes used: U of L", "Files used: U of L" ("none" when
    /// unlimited).
    pub fn lines(&self) -> [String; 2] {
        let limit = |l: Option<u64>| l.map_or_else(|| "none".to_owned(), |l| l.to_string());
        [
            format!(
                "Bytes used: {} of {}",
                self.usage.bytes,
                limit(self.limits.bytes)
            ),
            format!(
                "Files used: {} of {}",
                self.usage.files,
                limit(self.limits.files)
            ),
        ]
    }
}

/// Where an account's limits come from (the account store; a test gives fixed ones).
pub trait LimitSource: Send + Sync + 'static {
    /// The limits of `user`; unlimited for an unknown user.
    fn limits(&self, user: &str) -> Quota;
}

impl<F: Fn(&str) -> Quota + Send + Sync + 'static> LimitSource for F {
    fn limits(&self, user: &str) -> Quota {
        self(user)
    }
}

/// The file a staged upload will replace, as the ledger tells files apart and credits them.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct FileId {
    /// Its device.
    pub dev: u64,
    /// Its inode.
    pub ino: u64,
    /// Its size in bytes.
    pub len: u64,
}

impl From<&fs::Metadata> for FileId {
    fn from(meta: &fs::Metadata) -> FileId {
        FileId {
            dev: meta.dev(),
            ino: meta.ino(),
            len: meta.len(),
        }
    }
}

/// Why a write was refused by the quota.
#[derive(Debug, thiserror::Error)]
pub enum QuotaError {
    /// It would pass the account's byte or file limit: 552.
    #[error("quota exceeded")]
    Exceeded,
    /// The usage ledger can neither be read nor recounted, so no limit can be checked: 451.
    #[error("usage ledger unavailable: {0}")]
    Unavailable(#[source] io::Error),
}

/// The ledger file: usage, and whether a change may have been cut short.
#[derive(Debug, Clone, Copy, Default, Serialize, Deserialize)]
struct Stored {
    bytes: u64,
    files: u64,
    /// Set before the tree changes and while in-place writes run; a ledger still dirty at
    /// start was left by a crash and is recounted.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    dirty: bool,
}

impl Stored {
    fn usage(self) -> Usage {
        Usage {
            bytes: self.bytes,
            files: self.files,
        }
    }
}

/// What one user's running operations hold, in memory, under the user's lock (their
/// reservations are in the [`SharedState`], changed under the same lock).
#[derive(Debug, Default)]
struct UserState {
    /// What in-place writes changed that the ledger file does not show yet.
    pending_bytes: i128,
    pending_files: i128,
    /// In-place uploads that have changed their file (the ledger stays dirty while any runs).
    writers: u32,
}

impl UserState {
    /// The usage the tree has now: the ledger file plus what is not written to it yet.
    fn usage(&self, stored: Stored) -> Usage {
        let stored = stored.usage();
        Usage {
            bytes: shift(stored.bytes, self.pending_bytes),
            files: shift(stored.files, self.pending_files),
        }
    }

    /// Whether `bytes` and `files` more (each only checked when positive) fit under `limits`
    /// together with the usage and every reservation (`reserved`).
    fn fits(
        &self,
        stored: Stored,
        limits: Quota,
        reserved: Reserved,
        bytes: i128,
        files: i128,
    ) -> bool {
        let usage = self.usage(stored);
        let over = |limit: Option<u64>, used: u64, reserved: u64, more: i128| {
            more > 0
                && limit
                    .is_some_and(|l| i128::from(used) + i128::from(reserved) + more > i128::from(l))
        };
        !over(limits.bytes, usage.bytes, reserved.bytes, bytes)
            && !over(limits.files, usage.files, reserved.files, files)
    }

    /// What `limits` leave beyond the usage.
    fn room(&self, stored: Stored, limits: Quota) -> Room {
        let usage = self.usage(stored);
        Room {
            bytes: limits.bytes.map(|l| l.saturating_sub(usage.bytes)),
            files: limits.files.map(|l| l.saturating_sub(usage.files)),
        }
    }
}

/// The usage ledger of every account: `dir/<user>.json`, plus what running uploads hold.
/// One per server, shared by the file-store threads.
pub struct QuotaLedger {
    dir: PathBuf,
    homes: PathBuf,
    limits: Arc<dyn LimitSource>,
    /// One lock per user who has used the ledger since start (a few dozen bytes each).
    users: Mutex<HashMap<String, Arc<Mutex<UserState>>>>,
    /// Where running uploads reserve.
    state: Arc<dyn SharedState>,
}

impl std::fmt::Debug for QuotaLedger {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("QuotaLedger")
            .field("dir", &self.dir)
            .finish_non_exhaustive()
    }
}

fn lock<T>(mutex: &Mutex<T>) -> MutexGuard<'_, T> {
    mutex.lock().unwrap_or_else(|e| e.into_inner())
}

impl QuotaLedger {
    /// A ledger in `dir` (created) for the homes under `homes`, with limits from `limits`.
    ///
    /// # Errors
    /// The directory cannot be created.
    pub fn new(
        dir: PathBuf,
        homes: PathBuf,
        limits: Arc<dyn LimitSource>,
    ) -> io::Result<QuotaLedger> {
        fs::create_dir_all(&dir)?;
        Ok(QuotaLedger {
            dir,
            homes,
            limits,
            users: Mutex::default(),
            state: LocalState::shared(&Config::default()),
        })
    }

    /// Reserves in `state` (shared with the rest of the server; by default a state of this
    /// ledger's own).
    pub fn with_shared_state(mut self, state: Arc<dyn SharedState>) -> QuotaLedger {
        self.state = state;
        self
    }

    /// What `user`'s uploads hold reserved.
    fn reserved(&self, user: &str) -> Result<Reserved, QuotaError> {
        self.state
            .quota_reserved(user)
            .map_err(|e| QuotaError::Unavailable(io::Error::other(e)))
    }

    /// Reserves `more` for `user` if it fits with what is `stored` and reserved.
    fn reserve(
        &self,
        user: &str,
        state: &UserState,
        stored: Stored,
        more: Reserved,
    ) -> Result<(), QuotaError> {
        let room = state.room(stored, self.limits(user));
        match self.state.reserve_quota(user, more, room) {
            Ok(true) => Ok(()),
            Ok(false) => Err(QuotaError::Exceeded),
            Err(e) => Err(QuotaError::Unavailable(io::Error::other(e))),
        }
    }

    fn user(&self, user: &str) -> Arc<Mutex<UserState>> {
        Arc::clone(lock(&self.users).entry(user.to_owned()).or_default())
    }

    fn path(&self, user: &str) -> PathBuf {
        self.dir.join(format!("{user}.json"))
    }

    /// The limits of `user`.
    pub fn limits(&self, user: &str) -> Quota {
        self.limits.limits(user)
    }

    /// Usage of `user`; recounted from the home when there is no ledger file yet (an account
    /// from before quotas, or a lost file) or it does not parse.
    ///
    /// # Errors
    /// The ledger or the home cannot be read or written.
    pub fn usage(&self, user: &str) -> io::Result<Usage> {
        let state = self.user(user);
        let state = lock(&state);
        Ok(state.usage(self.load(user)?))
    }

    /// Usage and limits of `user`.
    ///
    /// # Errors
    /// As for [`QuotaLedger::usage`].
    pub fn report(&self, user: &str) -> io::Result<QuotaReport> {
        Ok(QuotaReport {
            usage: self.usage(user)?,
            limits: self.limits(user),
        })
    }

    /// Must be called with the user's lock held.
    fn load(&self, user: &str) -> io::Result<Stored> {
        match fs::read(self.path(user)) {
            Ok(bytes) => match serde_json::from_slice(&bytes) {
                Ok(stored) => return Ok(stored),
                Err(e) => log::warn!("usage of {user} unreadable ({e}); recounting"),
            },
            Err(e) if e.kind() == io::ErrorKind::NotFound => {
                log::info!("no usage ledger for {user}; counting the home");
            }
            Err(e) => return Err(e),
        }
        let usage = count_tree(&self.homes.join(user))?;
        let stored = Stored {
            bytes: usage.bytes,
            files: usage.files,
            dirty: false,
        };
        self.store(user, stored)?;
        Ok(stored)
    }

    /// Must be called with the user's lock held. Temp file beside it, then rename: atomic.
    fn store(&self, user: &str, stored: Stored) -> io::Result<()> {
        let json = serde_json::to_vec(&stored).map_err(io::Error::other)?;
        // A process crash keeps the page cache, and the dirty mark covers it; after a power
        // loss the operator recounts (no fsync on this hot path).
        let temp = TempFile {
            mode: 0o666,
            sync: false,
        };
        temp.replace(&self.dir, user, &json, &self.path(user))
    }

    /// Writes what in-place writes changed into the ledger file; dirty while writers run.
    /// Must be called with the user's lock held.
    fn flush(&self, user: &str, state: &mut UserState, delta: (i128, i128)) {
        let result = self.load(user).and_then(|stored| {
            let usage = state.usage(stored);
            self.store(
                user,
                Stored {
                    bytes: shift(usage.bytes, delta.0),
                    files: shift(usage.files, delta.1),
                    dirty: state.writers > 0,
                },
            )
        });
        match result {
            Ok(()) => {
                state.pending_bytes = 0;
                state.pending_files = 0;
            }
            Err(e) => {
                // Kept in memory: the limits still hold; the file is dirty or gets recounted.
                state.pending_bytes += delta.0;
                state.pending_files += delta.1;
                log::error!("cannot update the usage of {user}: {e}");
            }
        }
    }

    /// Recomputes `user`'s usage from the home directory and stores it.
    ///
    /// # Errors
    /// The home cannot be walked or the ledger written.
    pub fn recount(&self, user: &str) -> io::Result<Usage> {
        let state = self.user(user);
        let mut state = lock(&state);
        let usage = count_tree(&self.homes.join(user))?;
        state.pending_bytes = 0;
        state.pending_files = 0;
        self.store(
            user,
            Stored {
                bytes: usage.bytes,
                files: usage.files,
                dirty: state.writers > 0,
            },
        )?;
        Ok(usage)
    }

    /// At start: recounts every ledger a crashed run left dirty (or unreadable), and removes
    /// its half-written temp files. Returns the users recounted.
    ///
    /// # Errors
    /// The ledger directory cannot be read; a home that cannot be counted is logged and left
    /// dirty (its writes are still checked against the stored, possibly low, usage).
    pub fn recover(&self) -> io::Result<Vec<String>> {
        let mut recounted = Vec::new();
        for entry in fs::read_dir(&self.dir)? {
            let path = entry?.path();
            let Some(name) = path.file_name().and_then(|n| n.to_str()) else {
                continue;
            };
            if name.contains(".json.tmp-") {
                let _ = fs::remove_file(&path);
                continue;
            }
            let Some(user) = name.strip_suffix(".json") else {
                continue;
            };
            let clean = fs::read(&path)
                .ok()
                .and_then(|b| serde_json::from_slice::<Stored>(&b).ok())
                .is_some_and(|s| !s.dirty);
            if clean {
                continue;
            }
            match self.recount(user) {
                Ok(usage) => {
                    log::warn!(
                        "usage of {user} was being changed when the previous run stopped; \
                         recounted: {} bytes, {} files",
                        usage.bytes,
                        usage.files
                    );
                    recounted.push(user.to_owned());
                }
                Err(e) => log::error!("cannot recount the usage of {user}: {e}"),
            }
        }
        Ok(recounted)
    }

    /// Runs `op`, a change to `user`'s tree, under the user's lock: `op` checks with
    /// [`Tx::fits`], calls [`Tx::mark`] just before it touches the tree and [`Tx::record`]s
    /// what it changed; the ledger file is updated before the lock is released.
    ///
    /// # Errors
    /// What `op` returns; [`QuotaError::Unavailable`] when the ledger cannot be read.
    pub(crate) fn change<T, E: From<QuotaError>>(
        &self,
        user: &str,
        op: impl FnOnce(&mut Tx<'_>) -> Result<T, E>,
    ) -> Result<T, E> {
        let state = self.user(user);
        let mut state = lock(&state);
        let stored = self.load(user).map_err(QuotaError::Unavailable)?;
        let mut tx = Tx {
            inner: Some(TxInner {
                ledger: self,
                user,
                state: &mut state,
                stored,
                limits: self.limits(user),
                marked: false,
                delta: (0, 0),
            }),
        };
        let result = op(&mut tx);
        if let Some(inner) = tx.inner
            && (inner.marked || inner.delta != (0, 0))
        {
            self.flush(user, inner.state, inner.delta);
        }
        result
    }

    /// Starts the accounting of one upload. `new_file` reserves a file slot (the upload will
    /// create its target); `replaces` is the file a staged upload will replace: its bytes may
    /// be reused while the upload runs (one upload per file), and the commit checks again.
    ///
    /// # Errors
    /// [`QuotaError::Exceeded`] when a new file does not fit; [`QuotaError::Unavailable`].
    pub fn charge(
        self: &Arc<Self>,
        user: &str,
        new_file: bool,
        replaces: Option<FileId>,
    ) -> Result<Charge, QuotaError> {
        let limits = self.limits(user);
        let state = self.user(user);
        let guard = lock(&state);
        if new_file {
            let stored = self.load(user).map_err(QuotaError::Unavailable)?;
            let file = Reserved { bytes: 0, files: 1 };
            self.reserve(user, &guard, stored, file)?;
        }
        let claim = replaces.and_then(|f| {
            let key = [f.dev.to_le_bytes(), f.ino.to_le_bytes()].concat();
            // Without the claim the upload gets no credit: stricter, never looser.
            self.state.quota_claim(user, &key).unwrap_or_else(|e| {
                log::error!("no credit for the file {user} replaces: {e}");
                None
            })
        });
        let credit = match (&claim, replaces) {
            (Some(_), Some(file)) => file.len,
            _ => 0,
        };
        drop(guard);
        Ok(Charge {
            inner: Some(Box::new(ChargeInner {
                ledger: Arc::clone(self),
                user: user.to_owned(),
                state,
                limits,
                credit,
                claim,
                written: 0,
                reserved_bytes: 0,
                reserved_file: new_file,
                writer: false,
            })),
        })
    }
}

fn shift(value: u64, by: i128) -> u64 {
    u64::try_from((i128::from(value) + by).max(0)).unwrap_or(u64::MAX)
}

struct TxInner<'a> {
    ledger: &'a QuotaLedger,
    user: &'a str,
    state: &'a mut UserState,
    stored: Stored,
    limits: Quota,
    marked: bool,
    delta: (i128, i128),
}

/// One change to a user's tree, with the user's lock held (see [`QuotaLedger::change`]).
pub(crate) struct Tx<'a> {
    /// `None`: nothing is accounted (no ledger, or the anonymous area).
    inner: Option<TxInner<'a>>,
}

impl Tx<'_> {
    /// A change nobody accounts for.
    pub(crate) fn untracked() -> Tx<'static> {
        Tx { inner: None }
    }

    /// Checks that `bytes` and `files` more fit, with what is stored, what this change has
    /// recorded so far and every reservation (a change that frees space always fits).
    ///
    /// # Errors
    /// [`QuotaError::Exceeded`].
    pub(crate) fn fits(&self, bytes: i128, files: i128) -> Result<(), QuotaError> {
        let Some(tx) = &self.inner else {
            return Ok(());
        };
        let reserved = tx.ledger.reserved(tx.user)?;
        let fits = |bytes, files| tx.state.fits(tx.stored, tx.limits, reserved, bytes, files);
        let bytes_fit = bytes <= 0 || fits(tx.delta.0 + bytes, 0);
        let files_fit = files <= 0 || fits(0, tx.delta.1 + files);
        if bytes_fit && files_fit {
            Ok(())
        } else {
            Err(QuotaError::Exceeded)
        }
    }

    /// Marks the ledger dirty on disk, just before the tree changes: a crash before the
    /// change is recorded makes the next start recount.
    ///
    /// # Errors
    /// [`QuotaError::Unavailable`] when the ledger cannot be written: the change must not run.
    pub(crate) fn mark(&mut self) -> Result<(), QuotaError> {
        let Some(tx) = self.inner.as_mut() else {
            return Ok(());
        };
        if !tx.marked && !tx.stored.dirty {
            let dirty = Stored {
                dirty: true,
                ..tx.stored
            };
            tx.ledger
                .store(tx.user, dirty)
                .map_err(QuotaError::Unavailable)?;
        }
        tx.marked = true;
        Ok(())
    }

    /// Records what the change did to the usage.
    pub(crate) fn record(&mut self, bytes: i128, files: i128) {
        if let Some(tx) = self.inner.as_mut() {
            tx.delta.0 += bytes;
            tx.delta.1 += files;
        }
    }

    /// Gives `charge`'s reservations back inside this change (a staged upload's commit), so
    /// the check of what the commit adds does not count them twice.
    pub(crate) fn settle(&mut self, charge: &mut Charge) {
        if let (Some(_), Some(inner)) = (&self.inner, charge.inner.as_mut()) {
            inner.release();
        }
    }
}

/// Counts regular files (and their bytes) and directories ([`DIR_BYTES`] each) under `root`,
/// without following symbolic links. It walks by directory handles (openat, one descriptor
/// at a time, climbing back through `..` checked against the device and inode it left), so
/// no path is ever longer than one name: any depth the tree reached can be counted. A missing
/// root is empty.
///
/// # Errors
/// A directory cannot be read, or the tree was moved while it was walked.
pub fn count_tree(root: &Path) -> io::Result<Usage> {
    use nix::dir::Dir;
    use nix::fcntl::{AtFlags, OFlag};
    use nix::sys::stat::{Mode, SFlag, fstat, fstatat};

    let flags = OFlag::O_RDONLY | OFlag::O_DIRECTORY | OFlag::O_NOFOLLOW | OFlag::O_CLOEXEC;
    // The home itself may be a link the operator made (as the file store allows); nothing
    // below it is followed.
    let mut dir = match Dir::open(root, flags - OFlag::O_NOFOLLOW, Mode::empty()) {
        Ok(dir) => dir,
        Err(nix::errno::Errno::ENOENT) => return Ok(Usage::default()),
        Err(e) => return Err(e.into()),
    };
    let id = |dir: &Dir| fstat(dir).map(|st| (st.st_dev, st.st_ino));
    let mut usage = Usage::default();
    // Per level from the root down: the subdirectories still to visit, and the directory's id.
    let mut stack: Vec<(Vec<CString>, (u64, u64))> = Vec::new();
    loop {
        let here = id(&dir)?;
        let mut names: Vec<CString> = Vec::new();
        for entry in dir.iter() {
            let name = entry?.file_name().to_owned();
            if name.as_bytes() != b"." && name.as_bytes() != b".." {
                names.push(name);
            }
        }
        let mut subdirs = Vec::new();
        for name in names {
            let st = match fstatat(&dir, name.as_c_str(), AtFlags::AT_SYMLINK_NOFOLLOW) {
                Ok(st) => st,
                Err(nix::errno::Errno::ENOENT) => continue,
                Err(e) => return Err(e.into()),
            };
            let kind = SFlag::from_bits_truncate(st.st_mode) & SFlag::S_IFMT;
            if kind == SFlag::S_IFDIR {
                usage.files += 1;
                usage.bytes += DIR_BYTES;
                subdirs.push(name);
            } else if kind == SFlag::S_IFREG {
                usage.files += 1;
                usage.bytes += u64::try_from(st.st_size).unwrap_or(0);
            }
        }
        stack.push((subdirs, here));
        // Down into the next directory still to visit, climbing up from finished ones.
        loop {
            let Some((pending, _)) = stack.last_mut() else {
                return Ok(usage);
            };
            if let Some(name) = pending.pop() {
                match Dir::openat(&dir, name.as_c_str(), flags, Mode::empty()) {
                    Ok(child) => {
                        dir = child;
                        break;
                    }
                    // Removed or replaced since it was listed.
                    Err(
                        nix::errno::Errno::ENOENT
                        | nix::errno::Errno::ENOTDIR
                        | nix::errno::Errno::ELOOP,
                    ) => continue,
                    Err(e) => return Err(e.into()),
                }
            }
            stack.pop();
            let Some((_, parent)) = stack.last() else {
                return Ok(usage);
            };
            let up = Dir::openat(&dir, "..", flags, Mode::empty())?;
            if id(&up)? != *parent {
                return Err(io::Error::other(
                    "a directory was moved during the count; count again",
                ));
            }
            dir = up;
        }
    }
}

#[derive(Debug)]
struct ChargeInner {
    ledger: Arc<QuotaLedger>,
    user: String,
    state: Arc<Mutex<UserState>>,
    limits: Quota,
    /// Bytes of the replaced file this staged upload may reuse while it runs.
    credit: u64,
    /// The claim on that file, held for its drop.
    claim: Option<Lease>,
    written: u64,
    reserved_bytes: u64,
    reserved_file: bool,
    /// Has changed a file in place (counted in the user's writers).
    writer: bool,
}

impl ChargeInner {
    /// Gives back the reservations; call with the user's lock held.
    fn release(&mut self) {
        let less = Reserved {
            bytes: self.reserved_bytes,
            files: u64::from(self.reserved_file),
        };
        self.ledger.state.release_quota(&self.user, less);
        self.reserved_bytes = 0;
        self.reserved_file = false;
        self.claim = None;
        self.credit = 0;
    }

    /// The first change in place: the ledger is dirty on disk until the last writer ends.
    fn become_writer(&mut self, state: &mut UserState) -> Result<(), QuotaError> {
        if self.writer {
            return Ok(());
        }
        let stored = self
            .ledger
            .load(&self.user)
            .map_err(QuotaError::Unavailable)?;
        if !stored.dirty {
            let dirty = Stored {
                dirty: true,
                ..stored
            };
            self.ledger
                .store(&self.user, dirty)
                .map_err(QuotaError::Unavailable)?;
        }
        state.writers += 1;
        self.writer = true;
        Ok(())
    }

    fn fits(&self, state: &UserState, bytes: u64, files: u64) -> Result<(), QuotaError> {
        if bytes == 0 && files == 0 {
            return Ok(());
        }
        let stored = self
            .ledger
            .load(&self.user)
            .map_err(QuotaError::Unavailable)?;
        let reserved = self.ledger.reserved(&self.user)?;
        if state.fits(
            stored,
            self.limits,
            reserved,
            i128::from(bytes),
            i128::from(files),
        ) {
            Ok(())
        } else {
            Err(QuotaError::Exceeded)
        }
    }
}

/// The accounting of one upload. A staged upload reserves its bytes as they arrive
/// ([`Charge::add`]) and turns them into usage at the commit; an in-place upload is charged by
/// what each write adds to its open file (`Charge::grow`). Dropping it gives back whatever is
/// still reserved and writes the in-place changes into the ledger.
#[derive(Debug, Default)]
pub struct Charge {
    // Boxed: an upload carries it around, and most of its moves need only the pointer.
    inner: Option<Box<ChargeInner>>,
}

impl Charge {
    /// A charge that never refuses (no quota ledger: anonymous area, tests).
    pub fn unlimited() -> Charge {
        Charge::default()
    }

    /// Reserves `n` more bytes of a staged upload, before they are written.
    ///
    /// # Errors
    /// [`QuotaError::Exceeded`] when they would pass the byte limit together with what is
    /// stored and what other uploads of the user hold; nothing is reserved then.
    pub fn add(&mut self, n: u64) -> Result<(), QuotaError> {
        let Some(inner) = self.inner.as_mut() else {
            return Ok(());
        };
        let written = inner.written + n;
        let need = written.saturating_sub(inner.credit);
        let more = need.saturating_sub(inner.reserved_bytes);
        if more > 0 {
            let state = Arc::clone(&inner.state);
            let state = lock(&state);
            let stored = inner
                .ledger
                .load(&inner.user)
                .map_err(QuotaError::Unavailable)?;
            let bytes = Reserved {
                bytes: more,
                files: 0,
            };
            inner.ledger.reserve(&inner.user, &state, stored, bytes)?;
            inner.reserved_bytes += more;
        }
        inner.written = written;
        Ok(())
    }

    /// Runs `op`, which writes to (or truncates) `file` in place, under the user's lock, and
    /// charges what `file`'s size changed by, if it is still linked in the tree. `bound` gets
    /// the size before and says how much `op` can add at most: that much must fit first.
    ///
    /// # Errors
    /// The outer error: refused, `op` did not run. The inner one is `op`'s own.
    pub(crate) fn grow<T>(
        &mut self,
        file: &File,
        bound: impl FnOnce(u64) -> u64,
        op: impl FnOnce() -> io::Result<T>,
    ) -> Result<io::Result<T>, QuotaError> {
        let Some(inner) = self.inner.as_mut() else {
            return Ok(op());
        };
        let state = Arc::clone(&inner.state);
        let mut state = lock(&state);
        let before = match file.metadata() {
            Ok(meta) => meta.len(),
            Err(e) => return Ok(Err(e)),
        };
        inner.fits(&state, bound(before), 0)?;
        inner.become_writer(&mut state)?;
        let result = op();
        match file.metadata() {
            Ok(after) if after.nlink() > 0 => {
                state.pending_bytes += i128::from(after.len()) - i128::from(before);
            }
            // Unlinked meanwhile (deleted, or replaced by another upload): no longer in the
            // tree, so what it holds no longer counts.
            Ok(_) => {}
            Err(e) => log::error!("cannot measure an in-place upload of {}: {e}", inner.user),
        }
        Ok(result)
    }

    /// Opens the file of an in-place upload, under the user's lock. `open(may_create)` must
    /// create the file only when `may_create` (its file slot was reserved, or one fits now):
    /// it returns the file and whether it created it, or `None` when it would have had to
    /// create it and may not.
    ///
    /// # Errors
    /// The outer error: refused (also when the file would have to be created and no slot
    /// fits); the inner one is `open`'s own.
    pub(crate) fn open_in_place(
        &mut self,
        open: impl FnOnce(bool) -> io::Result<Option<(File, bool)>>,
    ) -> Result<io::Result<(File, bool)>, QuotaError> {
        let Some(inner) = self.inner.as_mut() else {
            return match open(true) {
                Ok(Some(opened)) => Ok(Ok(opened)),
                Ok(None) => Err(QuotaError::Exceeded),
                Err(e) => Ok(Err(e)),
            };
        };
        let state = Arc::clone(&inner.state);
        let mut state = lock(&state);
        let may_create = inner.reserved_file || inner.fits(&state, 0, 1).is_ok();
        inner.become_writer(&mut state)?;
        match open(may_create) {
            Ok(Some((file, created))) => {
                if inner.reserved_file {
                    let file = Reserved { bytes: 0, files: 1 };
                    inner.ledger.state.release_quota(&inner.user, file);
                    inner.reserved_file = false;
                }
                if created {
                    state.pending_files += 1;
                }
                Ok(Ok((file, created)))
            }
            Ok(None) => Err(QuotaError::Exceeded),
            Err(e) => Ok(Err(e)),
        }
    }

    /// Runs `op`, which unlinks the in-place upload's own `file` and says whether it did,
    /// under the user's lock, and takes the file out of the usage.
    ///
    /// # Errors
    /// `op`'s.
    pub(crate) fn unlink(
        &mut self,
        file: &File,
        op: impl FnOnce() -> io::Result<bool>,
    ) -> io::Result<()> {
        let Some(inner) = self.inner.as_mut() else {
            return op().map(drop);
        };
        let state = Arc::clone(&inner.state);
        let mut state = lock(&state);
        let before = file.metadata()?;
        if op()? && before.nlink() > 0 {
            state.pending_bytes -= i128::from(before.len());
            state.pending_files -= 1;
        }
        Ok(())
    }
}

impl Drop for Charge {
    fn drop(&mut self) {
        let Some(mut inner) = self.inner.take() else {
            return;
        };
        let state = Arc::clone(&inner.state);
        let mut state = lock(&state);
        inner.release();
        if inner.writer {
            state.writers = state.writers.saturating_sub(1);
            inner.ledger.flush(&inner.user, &mut state, (0, 0));
        }
    }
}

#[cfg(test)]
mod tests {
    use std::io::Write;

    use super::*;

    fn ledger(bytes: Option<u64>, files: Option<u64>) -> (tempfile::TempDir, Arc<QuotaLedger>) {
        let dir = tempfile::tempdir().expect("tempdir");
        fs::create_dir_all(dir.path().join("home/alice")).expect("home");
        let limits = move |_: &str| Quota { bytes, files };
        let ledger = QuotaLedger::new(
            dir.path().join("usage"),
            dir.path().join("home"),
            Arc::new(limits),
        )
        .expect("ledger");
        (dir, Arc::new(ledger))
    }

    /// A staged upload's commit as the file store does it: `size` bytes over a file of
    /// `replaced` bytes (`None`: a new file).
    fn commit(
        ledger: &QuotaLedger,
        mut charge: Charge,
        size: u64,
        replaced: Option<u64>,
    ) -> Result<(), QuotaError> {
        let bytes = i128::from(size) - i128::from(replaced.unwrap_or(0));
        let files = i128::from(replaced.is_none());
        ledger.change("alice", |tx| {
            tx.settle(&mut charge);
            tx.fits(bytes, files)?;
            tx.mark()?;
            tx.record(bytes, files);
            Ok::<_, QuotaError>(())
        })
    }

    fn stored(dir: &tempfile::TempDir) -> Stored {
        let bytes = fs::read(dir.path().join("usage/alice.json")).expect("ledger file");
        serde_json::from_slice(&bytes).expect("ledger json")
    }

    #[test]
    fn reservations_of_concurrent_uploads_share_the_limit() {
        let (_dir, ledger) = ledger(Some(100), None);
        let mut a = ledger.charge("alice", true, None).expect("a");
        let mut b = ledger.charge("alice", true, None).expect("b");
        a.add(60).expect("a 60");
        assert!(matches!(b.add(50), Err(QuotaError::Exceeded)));
        b.add(40).expect("b 40 fits exactly");
        assert!(matches!(a.add(1), Err(QuotaError::Exceeded)));
        drop(b);
        a.add(40).expect("b's bytes were given back");
        commit(&ledger, a, 100, None).expect("commit");
        let usage = ledger.usage("alice").expect("usage");
        assert_eq!(
            usage,
            Usage {
                bytes: 100,
                files: 1
            }
        );
        let reserved = ledger.state.quota_reserved("alice").expect("reserved");
        assert_eq!((reserved.bytes, reserved.files), (0, 0));
    }

    #[test]
    fn a_replaced_file_is_credited_once_and_checked_again_at_the_commit() {
        let (dir, ledger) = ledger(Some(100), Some(2));
        let old = dir.path().join("home/alice/old");
        fs::write(&old, [0; 90]).expect("old file");
        let meta = fs::metadata(&old).expect("meta");
        assert_eq!(ledger.usage("alice").expect("usage").bytes, 90);
        let mut first = ledger
            .charge("alice", false, Some(FileId::from(&meta)))
            .expect("replace");
        first.add(95).expect("90 of them are the old file's");
        assert!(matches!(first.add(10), Err(QuotaError::Exceeded)));
        // A second upload over the same file gets no credit while the first runs.
        let mut second = ledger
            .charge("alice", false, Some(FileId::from(&meta)))
            .expect("second");
        assert!(matches!(second.add(10), Err(QuotaError::Exceeded)));
        drop(second);
        // The old file was renamed away meanwhile: the commit adds all 95 bytes, too many.
        assert!(matches!(
            commit(&ledger, first, 95, None),
            Err(QuotaError::Exceeded)
        ));
        assert_eq!(ledger.usage("alice").expect("usage").bytes, 90);
        let again = ledger
            .charge("alice", false, Some(FileId::from(&meta)))
            .expect("again");
        commit(&ledger, again, 95, Some(90)).expect("a real replacement fits");
        assert_eq!(ledger.usage("alice").expect("usage").bytes, 95);
        assert!(!stored(&dir).dirty);
    }

    #[test]
    fn ledger_survives_and_recounts_directories_too() {
        let (dir, ledger) = ledger(None, None);
        fs::write(dir.path().join("home/alice/f"), b"12345").expect("write");
        fs::create_dir(dir.path().join("home/alice/d")).expect("mkdir");
        fs::write(dir.path().join("home/alice/d/g"), b"123").expect("write");
        // No ledger file yet: the first use counts the home.
        let counted = Usage {
            bytes: 8 + DIR_BYTES,
            files: 3,
        };
        assert_eq!(ledger.usage("alice").expect("usage"), counted);
        ledger
            .change("alice", |tx| {
                tx.record(2, 0);
                Ok::<_, QuotaError>(())
            })
            .expect("change");
        let again = QuotaLedger::new(
            dir.path().join("usage"),
            dir.path().join("home"),
            Arc::new(|_: &str| Quota::default()),
        )
        .expect("ledger");
        assert_eq!(
            again.usage("alice").expect("usage").bytes,
            counted.bytes + 2
        );
        assert_eq!(again.recount("alice").expect("recount"), counted);
    }

    #[test]
    fn in_place_writes_are_charged_by_what_the_open_file_grew() {
        let (dir, ledger) = ledger(Some(10), None);
        let path = dir.path().join("home/alice/f");
        fs::write(&path, b"abc").expect("write");
        assert_eq!(ledger.usage("alice").expect("usage").bytes, 3);
        let mut c = ledger.charge("alice", false, None).expect("charge");
        let mut file = fs::OpenOptions::new()
            .append(true)
            .open(&path)
            .expect("open");
        let mut write = |c: &mut Charge, data: &[u8]| {
            let n = data.len() as u64;
            c.grow(
                &file.try_clone().expect("clone"),
                |_| n,
                || file.write_all(data),
            )
        };
        write(&mut c, b"defg").expect("fits").expect("written");
        assert!(stored(&dir).dirty, "dirty while the write runs");
        // Renamed away: still in the tree, still counted.
        fs::rename(&path, dir.path().join("home/alice/moved")).expect("rename");
        write(&mut c, b"hij").expect("fits").expect("written");
        assert!(matches!(write(&mut c, b"k"), Err(QuotaError::Exceeded)));
        assert_eq!(ledger.usage("alice").expect("usage").bytes, 10);
        // Deleted: what it held and what it gains no longer count.
        ledger
            .change("alice", |tx| {
                fs::remove_file(dir.path().join("home/alice/moved"))
                    .map_err(QuotaError::Unavailable)?;
                tx.record(-10, -1);
                Ok::<_, QuotaError>(())
            })
            .expect("delete");
        write(&mut c, b"lmn").expect("fits").expect("written");
        drop(c);
        assert_eq!(ledger.usage("alice").expect("usage"), Usage::default());
        let left = stored(&dir);
        assert!(!left.dirty, "clean once the writer ended");
        assert_eq!(left.usage(), ledger.recount("alice").expect("recount"));
    }

    #[test]
    fn a_dirty_ledger_is_recounted_at_start() {
        let (dir, ledger) = ledger(None, None);
        fs::write(dir.path().join("home/alice/f"), [1; 7]).expect("write");
        fs::write(
            dir.path().join("usage/alice.json"),
            br#"{"bytes":1,"files":1,"dirty":true}"#,
        )
        .expect("dirty ledger");
        fs::write(dir.path().join("usage/alice.json.tmp-00"), b"{").expect("temp");
        assert_eq!(ledger.recover().expect("recover"), ["alice"]);
        assert_eq!(stored(&dir).usage(), Usage { bytes: 7, files: 1 });
        assert!(!dir.path().join("usage/alice.json.tmp-00").exists());
        assert!(ledger.recover().expect("recover").is_empty());
    }

    #[test]
    fn count_tree_walks_deeper_than_path_max() {
        let dir = tempfile::tempdir().expect("tempdir");
        let name = "d".repeat(200);
        // 30 levels of 201 bytes: over 6 000 bytes of path, beyond PATH_MAX (4096).
        let mut here = File::open(dir.path()).expect("root");
        for _ in 0..30 {
            nix::sys::stat::mkdirat(&here, name.as_str(), nix::sys::stat::Mode::S_IRWXU)
                .expect("mkdirat");
            let fd = nix::fcntl::openat(
                &here,
                name.as_str(),
                nix::fcntl::OFlag::O_RDONLY | nix::fcntl::OFlag::O_DIRECTORY,
                nix::sys::stat::Mode::empty(),
            )
            .expect("openat");
            here = File::from(fd);
        }
        let fd = nix::fcntl::openat(
            &here,
            "leaf",
            nix::fcntl::OFlag::O_WRONLY | nix::fcntl::OFlag::O_CREAT,
            nix::sys::stat::Mode::S_IRWXU,
        )
        .expect("leaf");
        File::from(fd).write_all(&[0; 11]).expect("write leaf");
        assert_eq!(
            count_tree(dir.path()).expect("count"),
            Usage {
                bytes: 30 * DIR_BYTES + 11,
                files: 31
            }
        );
    }

    #[test]
    fn count_tree_follows_the_home_link_and_no_link_below_it() {
        let dir = tempfile::tempdir().expect("tempdir");
        let (real, outside) = (dir.path().join("disk2/alice"), dir.path().join("outside"));
        fs::create_dir_all(&real).expect("home");
        fs::create_dir_all(outside.join("sub")).expect("outside");
        fs::write(outside.join("big"), [0; 5000]).expect("outside file");
        fs::write(real.join("f"), b"12345").expect("file");
        std::os::unix::fs::symlink(&outside, real.join("out")).expect("link out");
        std::os::unix::fs::symlink(outside.join("big"), real.join("big")).expect("file link");
        // The operator's link to a home on another disk.
        std::os::unix::fs::symlink(&real, dir.path().join("alice")).expect("home link");
        assert_eq!(
            count_tree(&dir.path().join("alice")).expect("count"),
            Usage { bytes: 5, files: 1 }
        );
    }

    #[test]
    fn report_lines_say_none_when_unlimited() {
        let report = QuotaReport {
            usage: Usage { bytes: 5, files: 1 },
            limits: Quota {
                bytes: Some(10),
                files: None,
            },
        };
        assert_eq!(
            report.lines(),
            [
                "Bytes used: 5 of 10".to_owned(),
                "Files used: 1 of none".to_owned()
            ]
        );
    }
}
