//! The jail: resolving a [`VPath`] beneath a home's directory handle without ever leaving it
//! (cap-std), and describing what is found.

use std::ffi::{OsStr, OsString};
use std::fs::{self, File};
use std::io::{self};
use std::os::unix::ffi::OsStrExt as _;
use std::path::{Path, PathBuf};
use std::time::SystemTime;

use cap_std::fs::{Dir, Metadata, MetadataExt as _, OpenOptions, OpenOptionsExt as _};
use rustix::fs::{Mode, OFlags, Timespec};

use crate::codec::entry::{FileInfo, FileKind};
use crate::storage::StoreError;
use crate::storage::vpath::VPath;

/// Linux `NAME_MAX`: the longest name of one directory entry, in bytes.
pub(super) const NAME_MAX: usize = 255;
/// Makes a rename into `dir` durable. cap-std's directory handles are `O_PATH`, on which
/// `fsync` fails with `EBADF`, so the directory is opened again for reading, by handle.
pub(super) fn sync_dir(dir: &Dir) -> io::Result<()> {
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
pub(super) const PATH_MAX: usize = 4096;
/// Symbolic links followed to find an upload's target, as the kernel allows (`ELOOP`).
pub(super) const MAX_LINKS: usize = 40;

/// What an in-place write lock is taken on: the directory (device, inode) and the name in it,
/// so every path to one file, through links or not, meets the same lock.
pub(super) type LockKey = Vec<u8>;

/// A name in a directory, both reached from the home without leaving it.
pub(super) struct Located {
    /// The directory holding `name`, opened beneath the home.
    pub(super) dir: Dir,
    /// `dir`'s path below the home as it was named ("." for the home; may pass through links
    /// that stay inside).
    pub(super) dir_rel: PathBuf,
    /// The final component, not followed.
    pub(super) name: OsString,
    /// `lstat` of `name`, if it exists.
    pub(super) link_meta: Option<Metadata>,
}

/// An existing, visible entry.
pub(super) struct Entry {
    /// Where it is; acting on `loc.name` acts on a link itself (remove, rename).
    pub(super) loc: Located,
    /// `lstat` of the name.
    pub(super) link_meta: Metadata,
    /// What it leads to: the entry itself, or a link's target inside the home.
    pub(super) meta: Metadata,
    /// Whether the name is a symbolic link.
    pub(super) is_link: bool,
}

/// Where an upload's bytes land: an existing regular file or a new name, with links inside the
/// home followed to the file they lead to.
pub(super) struct Target {
    /// The directory holding `name`, opened beneath the home.
    pub(super) dir: Dir,
    /// The final component: a regular file or nothing yet, never a link.
    pub(super) name: OsString,
    /// The regular file there now, if any.
    pub(super) existing: Option<Metadata>,
}

/// The path below the home for `path` ("." for the home itself).
///
/// # Errors
/// [`StoreError::TooLong`] for a name longer than `NAME_MAX`.
pub(super) fn relative(path: &VPath) -> Result<PathBuf, StoreError> {
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
pub(super) fn open_dir(home: &Dir, rel: &Path) -> Result<Dir, StoreError> {
    let rel = if rel.as_os_str().is_empty() {
        Path::new(".")
    } else {
        rel
    };
    Ok(home.open_dir(rel)?)
}

/// What `path` leads to below `home` (links followed while they stay inside): a regular file or
/// a directory.
pub(super) fn target_meta(home: &Dir, path: &VPath) -> Result<Metadata, StoreError> {
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
pub(super) fn locate(home: &Dir, path: &VPath) -> Result<Located, StoreError> {
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
pub(super) fn lstat(dir: &Dir, name: &OsStr) -> Result<Option<Metadata>, StoreError> {
    match dir.symlink_metadata(name) {
        Ok(meta) => Ok(Some(meta)),
        Err(err) if err.kind() == io::ErrorKind::NotFound => Ok(None),
        Err(err) => Err(err.into()),
    }
}

/// The jail check of an existing name: a link must lead to a file or directory inside `home`,
/// and only regular files and directories are shown. Anything else looks missing.
pub(super) fn visible(home: &Dir, loc: Located) -> Result<Entry, StoreError> {
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
pub(super) fn existing(home: &Dir, path: &VPath) -> Result<Entry, StoreError> {
    visible(home, locate(home, path)?)
}

/// Where an upload of `path` lands: a new name, or the regular file that the name (or a chain
/// of links inside the home) leads to.
pub(super) fn write_target(home: &Dir, path: &VPath) -> Result<Target, StoreError> {
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
pub(super) fn lock_key(dir: &Dir, name: &OsStr) -> Result<LockKey, StoreError> {
    let meta = dir.dir_metadata()?;
    let mut key = Vec::with_capacity(16 + name.len());
    key.extend_from_slice(&meta.dev().to_le_bytes());
    key.extend_from_slice(&meta.ino().to_le_bytes());
    key.extend_from_slice(name.as_bytes());
    Ok(key)
}

/// Open options that never block on a FIFO swapped in at the last moment, and never follow a
/// link at the final name (`ELOOP`, seen as [`StoreError::NotFound`]).
pub(super) fn in_place_options() -> OpenOptions {
    let mut options = OpenOptions::new();
    options.custom_flags((OFlags::NOFOLLOW | OFlags::NONBLOCK).bits() as i32);
    options
}

/// An `O_PATH` handle on what `path` leads to below `home`: enough to `fstat` it and to change
/// its mode or times through `/proc/self/fd`, whatever its permission bits, without a second
/// lookup by name that a swap could redirect.
pub(super) fn open_path(home: &Dir, path: &VPath) -> Result<(File, fs::Metadata), StoreError> {
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
pub(super) fn subtree_extent(
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

/// `time` as seconds and nanoseconds since the epoch, also before it (MFMT accepts any year).
pub(super) fn timespec(time: SystemTime) -> Timespec {
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

pub(super) fn file_info(name: String, meta: &Metadata) -> FileInfo {
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
