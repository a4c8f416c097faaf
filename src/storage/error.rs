//! Why a storage operation failed, with the FTP reply each failure maps to (the mapping itself
//! is the session's reply table).

use std::io;

use rustix::io::Errno;

use crate::quota::QuotaError;

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
    /// 553: a name longer than `NAME_MAX`, or a path past the [`super::PathLimits`].
    #[error("file name too long")]
    TooLong,
    /// 452: the file system is full (`ENOSPC`, `EDQUOT`).
    #[error("insufficient storage space")]
    NoSpace,
    /// 552: the account's byte or file quota would be passed.
    #[error("quota exceeded")]
    QuotaExceeded,
    /// 550: the directory has more entries than a listing may hold (`max_listing_entries`).
    #[error("more than {0} entries")]
    TooManyEntries(usize),
    /// 550: APPE or REST+STOR would rewrite an object larger than the backend rewrites
    /// (object storage cannot append: it copies the kept bytes into a new object).
    #[error("file larger than {0} bytes cannot be rewritten")]
    TooBigToRewrite(u64),
    /// 550: a directory rename would copy more objects than the backend moves one by one.
    #[error("directory of more than {0} objects cannot be renamed")]
    TooManyToRename(usize),
    /// 550: a rename would copy an object larger than the backend copies in one request
    /// (object storage renames by copying; S3's CopyObject takes at most 5 GiB).
    #[error("object too large to rename on object storage (limit {0} bytes)")]
    TooBigToRename(u64),
    /// 451: a wildcard expansion ran past its deadline ([`super::GLOB_TIME_LIMIT`]).
    #[error("wildcard expansion took too long")]
    TimedOut,
    /// 451: local error in processing.
    #[error("local error: {0}")]
    Io(#[source] io::Error),
    /// 426: the client went away before its upload was committed (see [`super::ClientProbe`]); the
    /// upload is interrupted, not complete.
    #[error("the client went away during the upload")]
    Interrupted,
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

/// Whether `err` says the disk (or the server account's disk quota) is full: 452 for the client.
pub fn is_out_of_space(err: &io::Error) -> bool {
    err.raw_os_error()
        .is_some_and(|n| n == Errno::NOSPC.raw_os_error() || n == Errno::DQUOT.raw_os_error())
}

impl From<Errno> for StoreError {
    fn from(errno: Errno) -> Self {
        io::Error::from(errno).into()
    }
}

impl From<io::Error> for StoreError {
    fn from(err: io::Error) -> Self {
        if is_out_of_space(&err) {
            return StoreError::NoSpace;
        }
        match err.raw_os_error().map(Errno::from_raw_os_error) {
            Some(Errno::NAMETOOLONG) => return StoreError::TooLong,
            // A loop, a link where O_NOFOLLOW forbids one, a special file: nothing to show.
            Some(Errno::LOOP | Errno::NXIO) => return StoreError::NotFound,
            // cap-std's word for a path that would leave the home: it looks missing.
            None if err.kind() == io::ErrorKind::PermissionDenied => {
                return StoreError::NotFound;
            }
            _ => {}
        }
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
