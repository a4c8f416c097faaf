//! The tree a [`super::MemoryStorage`] holds: one home per user, directories with their
//! entries sorted by name, and files as shared inodes, so that a reader or an in-place writer
//! that opened a file keeps it as a local descriptor would (through a rename, a replacement
//! or a removal), and a replacement is a new inode.

use std::collections::{BTreeMap, HashMap};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::SystemTime;

use crate::codec::entry::{FileInfo, FileKind};
use crate::quota::DIR_BYTES;
use crate::storage::StoreError;
use crate::storage::vpath::VPath;

/// Linux `NAME_MAX`, as the local backend refuses longer names ([`StoreError::TooLong`]).
pub(super) const NAME_MAX: usize = 255;

/// A new file's permission bits: what `0o666` gives under the usual umask `022`.
pub(super) const FILE_MODE: u32 = 0o644;
/// A new directory's, likewise from `0o777`.
pub(super) const DIR_MODE: u32 = 0o755;
/// A home's: private to the server, as the local backend makes it.
pub(super) const HOME_MODE: u32 = 0o700;

pub(super) fn lock<T>(mutex: &Mutex<T>) -> MutexGuard<'_, T> {
    mutex.lock().unwrap_or_else(|e| e.into_inner())
}

/// A regular file: its bytes and attributes behind a lock of their own, so reading it never
/// waits for the tree.
#[derive(Debug)]
pub(super) struct Inode {
    pub(super) id: u64,
    pub(super) body: Mutex<Body>,
}

/// What a file holds.
#[derive(Debug)]
pub(super) struct Body {
    pub(super) bytes: Vec<u8>,
    pub(super) modified: SystemTime,
    pub(super) mode: u32,
    /// Whether a name in the tree leads to it; an unlinked file no longer counts for the quota.
    pub(super) linked: bool,
}

impl Inode {
    pub(super) fn new(id: u64, bytes: Vec<u8>, modified: SystemTime) -> Arc<Inode> {
        Arc::new(Inode {
            id,
            body: Mutex::new(Body {
                bytes,
                modified,
                mode: FILE_MODE,
                linked: true,
            }),
        })
    }

    /// Its length in bytes.
    pub(super) fn len(&self) -> u64 {
        lock(&self.body).bytes.len() as u64
    }

    /// Takes it out of the tree; returns its length, what leaves the usage.
    pub(super) fn unlink(&self) -> u64 {
        let mut body = lock(&self.body);
        body.linked = false;
        body.bytes.len() as u64
    }
}

/// A directory and its entries, sorted by name.
#[derive(Debug)]
pub(super) struct DirNode {
    pub(super) id: u64,
    pub(super) modified: SystemTime,
    pub(super) mode: u32,
    pub(super) entries: BTreeMap<String, Node>,
}

impl DirNode {
    pub(super) fn new(id: u64, mode: u32) -> DirNode {
        DirNode {
            id,
            modified: SystemTime::now(),
            mode,
            entries: BTreeMap::new(),
        }
    }

    /// Adds or replaces an entry, and says so in the directory's mtime as POSIX does.
    pub(super) fn insert(&mut self, name: String, node: Node) -> Option<Node> {
        self.modified = SystemTime::now();
        self.entries.insert(name, node)
    }

    /// Takes an entry out, and says so in the directory's mtime.
    pub(super) fn remove(&mut self, name: &str) -> Option<Node> {
        let node = self.entries.remove(name);
        if node.is_some() {
            self.modified = SystemTime::now();
        }
        node
    }

    /// How deep and long (names, and bytes of "/" plus each name) the tree below it reaches.
    pub(super) fn extent(&self) -> (usize, usize) {
        let mut extent = (0, 0);
        for (name, node) in &self.entries {
            let (depth, length) = match node {
                Node::Dir(dir) => dir.extent(),
                Node::File(_) => (0, 0),
            };
            extent.0 = extent.0.max(depth + 1);
            extent.1 = extent.1.max(length + 1 + name.len());
        }
        extent
    }
}

/// One entry of a directory.
#[derive(Debug)]
pub(super) enum Node {
    File(Arc<Inode>),
    Dir(DirNode),
}

/// Every home, and the source of inode numbers.
#[derive(Debug, Default)]
pub(super) struct Tree {
    pub(super) homes: HashMap<String, DirNode>,
    next_id: u64,
}

/// Refuses a path with a name longer than `NAME_MAX` before it is looked up, as the local
/// backend does.
pub(super) fn check_names(path: &VPath) -> Result<(), StoreError> {
    if path.components().any(|name| name.len() > NAME_MAX) {
        return Err(StoreError::TooLong);
    }
    Ok(())
}

/// The directory and name an upload of `path` lands at (never the home itself).
pub(super) fn split(path: &VPath) -> Result<(VPath, &str), StoreError> {
    match (path.parent(), path.file_name()) {
        (Some(parent), Some(name)) => Ok((parent, name)),
        _ => Err(StoreError::IsADirectory),
    }
}

impl Tree {
    /// A fresh inode (or directory) number.
    pub(super) fn next_id(&mut self) -> u64 {
        self.next_id += 1;
        self.next_id
    }

    fn home(&self, user: &str) -> Result<&DirNode, StoreError> {
        self.homes.get(user).ok_or(StoreError::NotFound)
    }

    /// The directory `path` names: a missing name is [`StoreError::NotFound`], a file on the
    /// way (or at the end) [`StoreError::NotADirectory`].
    pub(super) fn dir(&self, user: &str, path: &VPath) -> Result<&DirNode, StoreError> {
        check_names(path)?;
        let mut dir = self.home(user)?;
        for name in path.components() {
            dir = match dir.entries.get(name) {
                Some(Node::Dir(next)) => next,
                Some(Node::File(_)) => return Err(StoreError::NotADirectory),
                None => return Err(StoreError::NotFound),
            };
        }
        Ok(dir)
    }

    /// As [`Tree::dir`], for a change.
    pub(super) fn dir_mut(&mut self, user: &str, path: &VPath) -> Result<&mut DirNode, StoreError> {
        check_names(path)?;
        let mut dir = self.homes.get_mut(user).ok_or(StoreError::NotFound)?;
        for name in path.components() {
            dir = match dir.entries.get_mut(name) {
                Some(Node::Dir(next)) => next,
                Some(Node::File(_)) => return Err(StoreError::NotADirectory),
                None => return Err(StoreError::NotFound),
            };
        }
        Ok(dir)
    }

    /// The directory at `path`, provided it is still the one numbered `id` (an in-place
    /// upload's, which a local upload holds by handle): else [`StoreError::NotFound`].
    pub(super) fn dir_by_id(
        &mut self,
        user: &str,
        path: &VPath,
        id: u64,
    ) -> Result<&mut DirNode, StoreError> {
        match self.dir_mut(user, path) {
            Ok(dir) if dir.id == id => Ok(dir),
            Ok(_) => Err(StoreError::NotFound),
            Err(e) => Err(e),
        }
    }

    /// What `path` names: the home for "/".
    pub(super) fn node(&self, user: &str, path: &VPath) -> Result<Found<'_>, StoreError> {
        let Some((parent, name)) = path.parent().zip(path.file_name()) else {
            return Ok(Found::Dir(self.dir(user, path)?));
        };
        check_names(path)?;
        match self.dir(user, &parent)?.entries.get(name) {
            Some(Node::Dir(dir)) => Ok(Found::Dir(dir)),
            Some(Node::File(inode)) => Ok(Found::File(inode)),
            None => Err(StoreError::NotFound),
        }
    }
}

/// An existing entry, borrowed from the tree.
#[derive(Debug, Clone, Copy)]
pub(super) enum Found<'a> {
    File(&'a Arc<Inode>),
    Dir(&'a DirNode),
}

impl Found<'_> {
    /// How a listing shows it, under `name`; `dev` makes the `unique` fact unique per store.
    pub(super) fn info(self, dev: u64, name: String) -> FileInfo {
        match self {
            Found::File(inode) => {
                let body = lock(&inode.body);
                FileInfo {
                    name,
                    kind: FileKind::File,
                    size: body.bytes.len() as u64,
                    modified: body.modified,
                    mode: body.mode,
                    nlink: 1,
                    unique: format!("{dev:x}g{:x}", inode.id),
                }
            }
            Found::Dir(dir) => {
                let subdirs = dir
                    .entries
                    .values()
                    .filter(|n| matches!(n, Node::Dir(_)))
                    .count() as u64;
                FileInfo {
                    name,
                    kind: FileKind::Dir,
                    size: DIR_BYTES,
                    modified: dir.modified,
                    mode: dir.mode,
                    nlink: 2 + subdirs,
                    unique: format!("{dev:x}g{:x}", dir.id),
                }
            }
        }
    }
}

impl<'a> From<&'a Node> for Found<'a> {
    fn from(node: &'a Node) -> Found<'a> {
        match node {
            Node::File(inode) => Found::File(inode),
            Node::Dir(dir) => Found::Dir(dir),
        }
    }
}
