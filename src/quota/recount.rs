//! Recounting usage: a [`UsageCounter`] counts a home ([`TreeCounter`]: [`count_tree`] walks
//! it by directory handles), [`QuotaLedger::recount`] stores the result and
//! [`QuotaLedger::recover`] recounts the ledgers a crashed run left dirty.

use std::ffi::CString;
use std::fs;
use std::io;
use std::path::{Path, PathBuf};

use super::ledger::{Stored, lock};
use super::{DIR_BYTES, QuotaLedger, Usage};

impl QuotaLedger {
    /// Recomputes `user`'s usage from the home (with the ledger's [`UsageCounter`]) and
    /// stores it.
    ///
    /// # Errors
    /// The home cannot be walked or the ledger written.
    pub fn recount(&self, user: &str) -> io::Result<Usage> {
        let state = self.user(user);
        let mut state = lock(&state);
        let usage = self.counter.count(user)?;
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
        if self.database.is_some() {
            return Ok(Vec::new());
        }
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
}

/// Counts a home for a recount: the directory walk of the local backend, or an object
/// store's listing. Called on a thread that may block (never a runtime's worker).
pub trait UsageCounter: Send + Sync + 'static {
    /// What `user`'s home holds now.
    ///
    /// # Errors
    /// The home cannot be read.
    fn count(&self, user: &str) -> io::Result<Usage>;
}

/// Counts homes that are directories under one directory, with [`count_tree`].
#[derive(Debug, Clone)]
pub struct TreeCounter {
    homes: PathBuf,
}

impl TreeCounter {
    /// Counts `homes/<user>`.
    pub fn new(homes: PathBuf) -> TreeCounter {
        TreeCounter { homes }
    }
}

impl UsageCounter for TreeCounter {
    fn count(&self, user: &str) -> io::Result<Usage> {
        count_tree(&self.homes.join(user))
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
