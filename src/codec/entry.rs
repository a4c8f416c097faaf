//! The entries a listing shows, as the file store describes them: the codec formats them, the
//! file store fills them in, and neither needs the other.

use std::time::SystemTime;

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
    /// A stable id, `"<dev hex>g<ino hex>"`, for the MLSD `unique` fact.
    pub unique: String,
}
