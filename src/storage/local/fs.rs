//! The local file system as one user's view: [`LocalFs`], its settings, and every operation
//! as a plain blocking call (the async [`super::LocalStorage`] runs them on its pools).

use std::fs::{self};
use std::io::{self, Seek, SeekFrom};
use std::os::unix::fs::{DirBuilderExt, MetadataExt as _};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime};

use cap_std::ambient_authority;
use cap_std::fs::{Dir, Metadata, MetadataExt as _, OpenOptions, OpenOptionsExt as _};
use rustix::fs::{AtFlags, Mode, OFlags, Timespec, Timestamps, UTIME_OMIT, chmodat, utimensat};
use rustix::io::Errno;
use rustix::path::DecInt;
use rustix_linux_procfs::proc_self_fd;

use crate::codec::entry::FileInfo;
use crate::codec::glob::NamePattern;
use crate::config::Config;
use crate::quota::{Charge, DIR_BYTES, FileId, QuotaLedger, QuotaReport, Tx};
use crate::state::{LocalState, SharedState};
use crate::storage::vpath::VPath;
use crate::storage::{
    ANONYMOUS, GLOB_TIME_LIMIT, HashAlgo, Listing, PathLimits, StoreError, WriteMode,
};

use super::inplace::*;
use super::jail::*;
use super::staging::*;
use super::upload::*;

/// The local file system's blocking core: user U's home is `homes_dir/U`. Cloning shares
/// the staging directory's handle.
#[derive(Debug, Clone)]
pub struct LocalFs {
    pub(super) homes: PathBuf,
    pub(super) tmp: PathBuf,
    /// The staging dir, by handle: commits rename from it into a home by handle.
    pub(super) staging: Arc<Dir>,
    pub(super) anonymous: Option<PathBuf>,
    /// Where the in-place write locks are taken.
    pub(super) state: Arc<dyn SharedState>,
    pub(super) quota: Option<Arc<QuotaLedger>>,
    pub(super) limits: PathLimits,
    /// Entries a listing may have; a bigger directory is refused, so no listing holds more.
    pub(super) max_listing_entries: usize,
    /// How long one wildcard expansion may read and match ([`GLOB_TIME_LIMIT`]).
    pub(super) glob_time_limit: Duration,
    /// An interrupted STOR of a name that held no file keeps what arrived.
    pub(super) keep_partial: bool,
}

impl LocalFs {
    /// Use `homes_dir` for the homes and `tmp_dir` for staged uploads, creating both. They must
    /// be on one file system (both under the data dir) so committing an upload is a rename.
    ///
    /// # Errors
    ///
    /// If either directory cannot be created or resolved.
    pub fn new(homes_dir: PathBuf, tmp_dir: PathBuf) -> io::Result<LocalFs> {
        fs::create_dir_all(&homes_dir)?;
        fs::create_dir_all(&tmp_dir)?;
        let tmp = fs::canonicalize(tmp_dir)?;
        Ok(LocalFs {
            homes: fs::canonicalize(homes_dir)?,
            staging: Arc::new(Dir::open_ambient_dir(&tmp, ambient_authority())?),
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
    pub fn with_partial_uploads(mut self, keep: bool) -> LocalFs {
        self.keep_partial = keep;
        self
    }

    /// Takes the in-place write locks in `state` (shared with the sessions; by default a
    /// state of this storage's own).
    pub fn with_shared_state(mut self, state: Arc<dyn SharedState>) -> LocalFs {
        self.state = state;
        self
    }

    /// Refuses to create paths past `limits`.
    pub fn with_path_limits(mut self, limits: PathLimits) -> LocalFs {
        self.limits = limits;
        self
    }

    /// Refuses listings of directories with more than `max` entries
    /// ([`StoreError::TooManyEntries`]); reading stops at the first entry too many.
    pub fn with_listing_limit(mut self, max: usize) -> LocalFs {
        self.max_listing_entries = max;
        self
    }

    /// Gives each wildcard expansion `limit` instead of [`GLOB_TIME_LIMIT`].
    #[cfg(test)]
    pub(crate) fn with_glob_time_limit(mut self, limit: Duration) -> LocalFs {
        self.glob_time_limit = limit;
        self
    }

    /// The entries of `dir` (the directory `rel` below `home`) whose names pass `keep`, sorted
    /// by name. Names that are not UTF-8, links that dangle or lead out, and special files are
    /// left out. Every name read counts against `max_listing_entries`, kept or not, so a
    /// pattern cannot make a directory too big to list cheaper to read.
    pub(super) fn entries(
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

    /// Keeps every account's usage in `ledger` and enforces its limits.
    pub fn with_quota(mut self, ledger: Arc<QuotaLedger>) -> LocalFs {
        self.quota = Some(ledger);
        self
    }

    /// The ledger that accounts for `user`, if any (never for the anonymous area).
    pub(super) fn ledger(&self, user: &str) -> Option<&Arc<QuotaLedger>> {
        self.quota.as_ref().filter(|_| user != ANONYMOUS)
    }

    /// Runs `op`, a change to `user`'s tree, under the user's quota lock (see
    /// [`QuotaLedger::change`]): resolve, measure, check, change and record inside it.
    pub(super) fn change<T>(
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
    pub(super) fn charge(
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

    /// Serves `root` as the home of the [`ANONYMOUS`] user.
    ///
    /// # Errors
    ///
    /// If `root` cannot be created or resolved.
    pub fn with_anonymous_root(mut self, root: &Path) -> io::Result<LocalFs> {
        self.anonymous = Some(LocalFs::anonymous_root(root)?);
        Ok(self)
    }

    /// `root`, created if missing, resolved.
    pub(super) fn anonymous_root(root: &Path) -> io::Result<PathBuf> {
        fs::create_dir_all(root)?;
        fs::canonicalize(root)
    }

    /// `homes_dir/user`, refusing names that would not stay one component below it.
    pub(super) fn home_path(&self, user: &str) -> Result<PathBuf, StoreError> {
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
    pub(super) fn home(&self, user: &str) -> Result<Dir, StoreError> {
        Dir::open_ambient_dir(self.home_path(user)?, ambient_authority())
            .map_err(|_| StoreError::NotFound)
    }

    /// Refuses a new entry at `path` (with a tree `below` it, in names and bytes) past the
    /// configured limits, or as long on disk as `PATH_MAX`.
    pub(super) fn check_limits(
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
    pub(super) fn check_move(
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
}

impl LocalFs {
    /// [`crate::storage::Storage::create_home`] as a blocking call.
    ///
    /// # Errors
    /// As for [`crate::storage::Storage::create_home`].
    pub fn create_home(&self, user: &str) -> Result<(), StoreError> {
        // Private to the server's account: other local users must not read homes.
        Ok(fs::DirBuilder::new()
            .recursive(true)
            .mode(0o700)
            .create(self.home_path(user)?)?)
    }

    /// [`crate::storage::Storage::stat`] as a blocking call.
    ///
    /// # Errors
    /// As for [`crate::storage::Storage::stat`].
    pub fn stat(&self, user: &str, path: &VPath) -> Result<FileInfo, StoreError> {
        let meta = target_meta(&self.home(user)?, path)?;
        let name = path.file_name().unwrap_or("/").to_owned();
        Ok(file_info(name, &meta))
    }

    /// [`crate::storage::Storage::list`] as a blocking call.
    ///
    /// # Errors
    /// As for [`crate::storage::Storage::list`].
    pub fn list(&self, user: &str, path: &VPath) -> Result<Listing, StoreError> {
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

    /// [`crate::storage::Storage::glob`] as a blocking call.
    ///
    /// # Errors
    /// As for [`crate::storage::Storage::glob`].
    pub fn glob(
        &self,
        user: &str,
        dir: &VPath,
        pattern: &NamePattern,
    ) -> Result<Listing, StoreError> {
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

    /// [`crate::storage::Storage::open_read`] as a blocking call.
    ///
    /// # Errors
    /// As for [`crate::storage::Storage::open_read`].
    pub fn open_read(
        &self,
        user: &str,
        path: &VPath,
        offset: u64,
    ) -> Result<ReadHandle, StoreError> {
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
        if offset > meta.len() {
            return Err(StoreError::BadOffset);
        }
        file.seek(SeekFrom::Start(offset))?;
        Ok(ReadHandle {
            file,
            size: meta.len(),
        })
    }

    /// [`crate::storage::Storage::open_write`] as a blocking call.
    ///
    /// # Errors
    /// As for [`crate::storage::Storage::open_write`].
    pub fn open_write(
        &self,
        user: &str,
        path: &VPath,
        mode: WriteMode,
    ) -> Result<Upload, StoreError> {
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

    /// [`crate::storage::Storage::mkdir`] as a blocking call.
    ///
    /// # Errors
    /// As for [`crate::storage::Storage::mkdir`].
    pub fn mkdir(&self, user: &str, path: &VPath) -> Result<(), StoreError> {
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

    /// [`crate::storage::Storage::rmdir`] as a blocking call.
    ///
    /// # Errors
    /// As for [`crate::storage::Storage::rmdir`].
    pub fn rmdir(&self, user: &str, path: &VPath) -> Result<(), StoreError> {
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

    /// [`crate::storage::Storage::remove`] as a blocking call.
    ///
    /// # Errors
    /// As for [`crate::storage::Storage::remove`].
    pub fn remove(&self, user: &str, path: &VPath) -> Result<(), StoreError> {
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

    /// [`crate::storage::Storage::rename`] as a blocking call.
    ///
    /// # Errors
    /// As for [`crate::storage::Storage::rename`].
    pub fn rename(&self, user: &str, from: &VPath, to: &VPath) -> Result<(), StoreError> {
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

    /// [`crate::storage::Storage::set_modified`] as a blocking call.
    ///
    /// # Errors
    /// As for [`crate::storage::Storage::set_modified`].
    pub fn set_modified(
        &self,
        user: &str,
        path: &VPath,
        time: SystemTime,
    ) -> Result<(), StoreError> {
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

    /// [`crate::storage::Storage::chmod`] as a blocking call.
    ///
    /// # Errors
    /// As for [`crate::storage::Storage::chmod`].
    pub fn chmod(&self, user: &str, path: &VPath, mode: u32) -> Result<(), StoreError> {
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

    /// [`crate::storage::Storage::hash`] as a blocking call.
    ///
    /// # Errors
    /// As for [`crate::storage::Storage::hash`].
    pub fn hash(
        &self,
        user: &str,
        path: &VPath,
        algo: HashAlgo,
    ) -> Result<(String, u64), StoreError> {
        let handle = self.open_read(user, path, 0)?;
        let mut file = handle.file;
        Ok((algo.digest(&mut file)?, handle.size))
    }

    /// [`crate::storage::Storage::quota`] as a blocking call.
    ///
    /// # Errors
    /// As for [`crate::storage::Storage::quota`].
    pub fn quota(&self, user: &str) -> Result<QuotaReport, StoreError> {
        match self.ledger(user) {
            Some(ledger) => Ok(ledger.report(user)?),
            None => Ok(QuotaReport::default()),
        }
    }
}
