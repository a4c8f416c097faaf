//! The in-memory backend, for tests: every home a tree of directories and files in memory,
//! behind the same [`Storage`] trait as the local backend, and answering as it does (the
//! same errors in the same order, listings sorted by name with `.` and `..`, staged and
//! in-place uploads, write locks, the quota through the same [`QuotaLedger`]). The backend
//! conformance suite runs against both, which is what proves the seam.
//!
//! Where a local file is held by descriptor, a memory file is held by its inode (an `Arc`):
//! a download or an in-place upload keeps its file through a rename, a replacement or a
//! removal, and a replacement is a new inode. An in-place upload holds its directory by path
//! and number, where the local one holds a handle: it ends with [`StoreError::NotFound`] if
//! its directory was moved before its first byte. There are no links and no special files.
//! The anonymous area ([`ANONYMOUS`]) is one more home, made by `create_home` and never
//! charged; a wildcard expansion reads memory, so it cannot run into [`GLOB_TIME_LIMIT`].
//!
//! [`GLOB_TIME_LIMIT`]: crate::storage::GLOB_TIME_LIMIT
//!
//! The capabilities are whatever [`MemoryStorage::with_capabilities`] says, so tests can take
//! one away: a method that needs a missing one answers [`StoreError::PermissionDenied`].
//! Without `empty_dirs` nothing changes here but the report: directories made by MKD stay, as
//! an object store's markers would.
//!
//! Calls answer at once under a mutex and never await. With a quota ledger, each change
//! updates the ledger's small file on the calling thread, as the ledger has no other mode:
//! fine for tests, which is all this backend is for.
//!
//! - `tree`: the homes, directories and inodes, and path resolution in them.
//! - `stream`: the byte source and sink it hands out.

mod stream;
#[cfg(test)]
mod tests;
mod tree;

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::SystemTime;

use crate::codec::entry::FileInfo;
use crate::codec::glob::NamePattern;
use crate::config::Config;
use crate::quota::{Charge, DIR_BYTES, FileId, QuotaLedger, QuotaReport, Tx};
use crate::state::{LocalState, SharedState};
use crate::storage::vpath::VPath;
use crate::storage::{
    ANONYMOUS, ByteSink, ByteSource, Capabilities, HashAlgo, Listing, PathLimits, Storage,
    StoreError, WriteMode, unique_candidates,
};
use stream::{InPlace, MemorySink, MemorySource, Opening};
use tree::{DIR_MODE, DirNode, Found, HOME_MODE, Inode, Node, Tree, check_names, lock, split};

/// Linux `PATH_MAX` with its NUL, the local backend's bound on a path on disk.
const PATH_MAX: usize = 4096;

/// Numbers each store, as a device number: the `unique` facts and lock keys of two stores
/// never meet.
static NEXT_DEV: AtomicU64 = AtomicU64::new(1);

/// The in-memory [`Storage`]. Cheap to clone; clones share the tree.
#[derive(Debug, Clone)]
pub struct MemoryStorage {
    tree: Arc<Mutex<Tree>>,
    settings: Settings,
}

/// What a store was built with.
#[derive(Debug, Clone)]
struct Settings {
    dev: u64,
    capabilities: Capabilities,
    limits: PathLimits,
    max_listing_entries: usize,
    keep_partial: bool,
    quota: Option<Arc<QuotaLedger>>,
    /// Where the in-place write locks are taken.
    state: Arc<dyn SharedState>,
}

impl Default for MemoryStorage {
    fn default() -> MemoryStorage {
        MemoryStorage::new()
    }
}

impl MemoryStorage {
    /// An empty store with every capability, no quota, no listing limit and the default path
    /// limits.
    pub fn new() -> MemoryStorage {
        MemoryStorage {
            tree: Arc::default(),
            settings: Settings {
                dev: NEXT_DEV.fetch_add(1, Ordering::Relaxed),
                capabilities: Capabilities::ALL,
                limits: PathLimits::default(),
                max_listing_entries: usize::MAX,
                keep_partial: false,
                quota: None,
                state: LocalState::shared(&Config::default()),
            },
        }
    }

    /// Can do only what `capabilities` say.
    pub fn with_capabilities(mut self, capabilities: Capabilities) -> MemoryStorage {
        self.settings.capabilities = capabilities;
        self
    }

    /// Refuses to create paths past `limits` ([`StoreError::TooLong`]).
    pub fn with_path_limits(mut self, limits: PathLimits) -> MemoryStorage {
        self.settings.limits = limits;
        self
    }

    /// Refuses listings of directories with more than `max` entries
    /// ([`StoreError::TooManyEntries`]).
    pub fn with_listing_limit(mut self, max: usize) -> MemoryStorage {
        self.settings.max_listing_entries = max;
        self
    }

    /// Keeps what an interrupted STOR of a name that held no file received, under that name.
    pub fn with_partial_uploads(mut self, keep: bool) -> MemoryStorage {
        self.settings.keep_partial = keep;
        self
    }

    /// Keeps every account's usage in `ledger` and enforces its limits. The ledger counts a
    /// home it has no record of from its homes directory on disk, so give it one that holds
    /// nothing (this store starts empty, and tells the ledger every change after).
    pub fn with_quota(mut self, ledger: Arc<QuotaLedger>) -> MemoryStorage {
        self.settings.quota = Some(ledger);
        self
    }

    /// Takes the in-place write locks in `state` (by default a state of this store's own).
    pub fn with_shared_state(mut self, state: Arc<dyn SharedState>) -> MemoryStorage {
        self.settings.state = state;
        self
    }

    /// The ledger that accounts for `user`, if any (never for the anonymous area).
    fn ledger(&self, user: &str) -> Option<&Arc<QuotaLedger>> {
        self.settings.quota.as_ref().filter(|_| user != ANONYMOUS)
    }

    /// Runs `op` under `user`'s quota lock (see [`QuotaLedger::change`]).
    fn account<T>(
        &self,
        user: &str,
        op: impl FnOnce(&mut Tx<'_>) -> Result<T, StoreError>,
    ) -> Result<T, StoreError> {
        match self.ledger(user) {
            Some(ledger) => ledger.change(user, op),
            None => op(&mut Tx::untracked()),
        }
    }

    /// Runs `op`, a change to `user`'s tree, under the user's quota lock and then the tree's.
    fn change<T>(
        &self,
        user: &str,
        op: impl FnOnce(&mut Tx<'_>, &mut Tree) -> Result<T, StoreError>,
    ) -> Result<T, StoreError> {
        self.account(user, |tx| op(tx, &mut lock(&self.tree)))
    }

    /// Starts the accounting of an upload (see [`QuotaLedger::charge`]).
    fn charge(
        &self,
        user: &str,
        new_file: bool,
        replaces: Option<&Inode>,
    ) -> Result<Charge, StoreError> {
        let replaces = replaces.map(|inode| FileId {
            dev: self.settings.dev,
            ino: inode.id,
            len: inode.len(),
        });
        match self.ledger(user) {
            Some(ledger) => Ok(ledger.charge(user, new_file, replaces)?),
            None => Ok(Charge::unlimited()),
        }
    }

    /// Refuses a new entry at `path` (with a tree `below` it, in names and bytes) past the
    /// limits.
    fn check_limits(&self, path: &VPath, below: (usize, usize)) -> Result<(), StoreError> {
        let depth = path.components().count() + below.0;
        let length = path.as_str().len() + below.1;
        let limits = self.settings.limits;
        if depth > limits.max_depth || length > limits.max_length || length >= PATH_MAX {
            return Err(StoreError::TooLong);
        }
        Ok(())
    }

    /// Refuses a capability this store was built without.
    fn need(&self, capable: bool) -> Result<(), StoreError> {
        if capable {
            Ok(())
        } else {
            Err(StoreError::PermissionDenied)
        }
    }

    /// The exclusive right to write `name` in the directory numbered `dir` in place.
    fn write_lock(&self, dir: u64, name: &str) -> Result<crate::state::Lease, StoreError> {
        let key = format!("memory/{:x}/{dir:x}/{name}", self.settings.dev);
        match self.settings.state.write_lock(key.as_bytes()) {
            Ok(Some(lease)) => Ok(lease),
            Ok(None) => Err(StoreError::Busy),
            Err(e) => Err(StoreError::Io(std::io::Error::other(e))),
        }
    }

    /// The entries of `dir` whose names pass `keep`, as a listing shows them; every name
    /// counts against the listing limit, kept or not.
    fn entries(
        &self,
        dir: &DirNode,
        keep: impl Fn(&str) -> bool,
    ) -> Result<Vec<FileInfo>, StoreError> {
        let max = self.settings.max_listing_entries;
        if dir.entries.len() > max {
            return Err(StoreError::TooManyEntries(max));
        }
        Ok(dir
            .entries
            .iter()
            .filter(|(name, _)| keep(name))
            .map(|(name, node)| Found::from(node).info(self.settings.dev, name.clone()))
            .collect())
    }

    /// STOU: the first free name among `name`, `name.1`, ... `name.999` next to `path`,
    /// locked and with its file slot reserved; created when the first byte arrives.
    fn create_unique(&self, user: &str, path: &VPath) -> Result<Box<dyn ByteSink>, StoreError> {
        let parent = path.parent().unwrap_or_else(VPath::root);
        for found in unique_candidates(path) {
            let (name, candidate) = found?;
            check_names(&candidate)?;
            self.check_limits(&candidate, (0, 0))?;
            let dir = {
                let tree = lock(&self.tree);
                let dir = tree.dir(user, &parent)?;
                if dir.entries.contains_key(&name) {
                    continue;
                }
                dir.id
            };
            // Another STOU (or an APPE) has picked this name and not created it yet.
            let Ok(lease) = self.write_lock(dir, &name) else {
                continue;
            };
            let charge = self.charge(user, true, None)?;
            let place = InPlace::new((parent, dir, name), Opening::New, None, lease);
            return Ok(MemorySink::in_place(self, user, candidate, charge, place));
        }
        Err(StoreError::AlreadyExists)
    }
}

/// Where an upload of a path lands: its directory's number, and the file there now, if any.
struct Target {
    dir: u64,
    existing: Option<Arc<Inode>>,
}

/// Resolves an upload's target: its directory must exist and the name must not be one.
fn write_target(tree: &Tree, user: &str, path: &VPath) -> Result<Target, StoreError> {
    let (parent, name) = split(path)?;
    check_names(path)?;
    let dir = tree.dir(user, &parent)?;
    let existing = match dir.entries.get(name) {
        Some(Node::Dir(_)) => return Err(StoreError::IsADirectory),
        Some(Node::File(inode)) => Some(Arc::clone(inode)),
        None => None,
    };
    Ok(Target {
        dir: dir.id,
        existing,
    })
}

/// Whether `path` lies strictly below `dir`.
fn is_below(path: &VPath, dir: &VPath) -> bool {
    let mut path = path.components();
    dir.components().all(|name| path.next() == Some(name)) && path.next().is_some()
}

#[async_trait::async_trait]
impl Storage for MemoryStorage {
    fn capabilities(&self) -> Capabilities {
        self.settings.capabilities
    }

    async fn create_home(&self, user: &str) -> Result<(), StoreError> {
        if user != ANONYMOUS && (matches!(user, "" | "." | "..") || user.contains(['/', '\0', '@']))
        {
            return Err(StoreError::NotFound);
        }
        let mut tree = lock(&self.tree);
        if !tree.homes.contains_key(user) {
            let id = tree.next_id();
            tree.homes
                .insert(user.to_owned(), DirNode::new(id, HOME_MODE));
        }
        Ok(())
    }

    async fn stat(&self, user: &str, path: &VPath) -> Result<FileInfo, StoreError> {
        let tree = lock(&self.tree);
        let name = path.file_name().unwrap_or("/").to_owned();
        Ok(tree.node(user, path)?.info(self.settings.dev, name))
    }

    async fn list(&self, user: &str, path: &VPath) -> Result<Listing, StoreError> {
        let tree = lock(&self.tree);
        let dev = self.settings.dev;
        let dir = match tree.node(user, path)? {
            Found::Dir(dir) => dir,
            file @ Found::File(_) => {
                let name = path.file_name().unwrap_or("/").to_owned();
                return Ok(Listing {
                    is_dir: false,
                    matched: false,
                    this: None,
                    parent: None,
                    entries: vec![file.info(dev, name)],
                });
            }
        };
        let entries = self.entries(dir, |_| true)?;
        let parent = match path.parent() {
            Some(parent) => Some(Found::Dir(tree.dir(user, &parent)?).info(dev, "..".to_owned())),
            None => None,
        };
        Ok(Listing {
            is_dir: true,
            matched: false,
            this: Some(Found::Dir(dir).info(dev, ".".to_owned())),
            parent,
            entries,
        })
    }

    async fn glob(
        &self,
        user: &str,
        dir: &VPath,
        pattern: &NamePattern,
    ) -> Result<Listing, StoreError> {
        let tree = lock(&self.tree);
        let entries = self.entries(tree.dir(user, dir)?, |name| pattern.matches(name))?;
        Ok(Listing {
            is_dir: false,
            matched: true,
            this: None,
            parent: None,
            entries,
        })
    }

    async fn open_read(
        &self,
        user: &str,
        path: &VPath,
        offset: u64,
    ) -> Result<Box<dyn ByteSource>, StoreError> {
        let tree = lock(&self.tree);
        match tree.node(user, path)? {
            Found::Dir(_) => Err(StoreError::IsADirectory),
            Found::File(inode) => Ok(Box::new(MemorySource::new(Arc::clone(inode), offset)?)),
        }
    }

    async fn open_write(
        &self,
        user: &str,
        path: &VPath,
        mode: WriteMode,
    ) -> Result<Box<dyn ByteSink>, StoreError> {
        let caps = self.settings.capabilities;
        match mode {
            WriteMode::Append => self.need(caps.append)?,
            WriteMode::At(_) => self.need(caps.write_at)?,
            WriteMode::Replace | WriteMode::Unique => {}
        }
        // Resolved under the tree's lock, which is let go before the quota's is taken.
        let target = write_target(&lock(&self.tree), user, path)?;
        if target.existing.is_none() {
            self.check_limits(path, (0, 0))?;
        }
        let (parent, name) = split(path)?;
        let at = |name: &str| (parent.clone(), target.dir, name.to_owned());
        match mode {
            WriteMode::Replace => {
                let existing = target.existing.as_deref();
                let charge = self.charge(user, existing.is_none(), existing)?;
                let keep = existing.is_none() && self.settings.keep_partial;
                Ok(MemorySink::staged(self, user, path.clone(), charge, keep))
            }
            WriteMode::Append => {
                let lease = self.write_lock(target.dir, name)?;
                let charge = self.charge(user, target.existing.is_none(), None)?;
                let place = InPlace::new(at(name), Opening::Append, None, lease);
                Ok(MemorySink::in_place(
                    self,
                    user,
                    path.clone(),
                    charge,
                    place,
                ))
            }
            WriteMode::At(offset) => {
                let Some(inode) = &target.existing else {
                    return Err(StoreError::NotFound);
                };
                if offset > inode.len() {
                    return Err(StoreError::BadOffset);
                }
                let lease = self.write_lock(target.dir, name)?;
                let charge = self.charge(user, false, None)?;
                let place = InPlace::new(at(name), Opening::Existing, Some(offset), lease);
                Ok(MemorySink::in_place(
                    self,
                    user,
                    path.clone(),
                    charge,
                    place,
                ))
            }
            WriteMode::Unique => self.create_unique(user, path),
        }
    }

    async fn mkdir(&self, user: &str, path: &VPath) -> Result<(), StoreError> {
        let Ok((parent, name)) = split(path) else {
            return Err(StoreError::AlreadyExists);
        };
        check_names(path)?;
        self.change(user, |tx, tree| {
            let id = tree.next_id();
            let dir = tree.dir_mut(user, &parent)?;
            if dir.entries.contains_key(name) {
                return Err(StoreError::AlreadyExists);
            }
            self.check_limits(path, (0, 0))?;
            tx.fits(i128::from(DIR_BYTES), 1)?;
            tx.mark()?;
            dir.insert(name.to_owned(), Node::Dir(DirNode::new(id, DIR_MODE)));
            tx.record(i128::from(DIR_BYTES), 1);
            Ok(())
        })
    }

    async fn rmdir(&self, user: &str, path: &VPath) -> Result<(), StoreError> {
        let Ok((parent, name)) = split(path) else {
            return Err(StoreError::PermissionDenied);
        };
        check_names(path)?;
        self.change(user, |tx, tree| {
            let dir = tree.dir_mut(user, &parent)?;
            match dir.entries.get(name) {
                None => return Err(StoreError::NotFound),
                Some(Node::File(_)) => return Err(StoreError::NotADirectory),
                Some(Node::Dir(sub)) if !sub.entries.is_empty() => {
                    return Err(StoreError::NotEmpty);
                }
                Some(Node::Dir(_)) => {}
            }
            tx.mark()?;
            dir.remove(name);
            tx.record(-i128::from(DIR_BYTES), -1);
            Ok(())
        })
    }

    async fn remove(&self, user: &str, path: &VPath) -> Result<(), StoreError> {
        let (parent, name) = split(path)?;
        check_names(path)?;
        self.change(user, |tx, tree| {
            let dir = tree.dir_mut(user, &parent)?;
            match dir.entries.get(name) {
                None => return Err(StoreError::NotFound),
                Some(Node::Dir(_)) => return Err(StoreError::IsADirectory),
                Some(Node::File(_)) => {}
            }
            tx.mark()?;
            if let Some(Node::File(inode)) = dir.remove(name) {
                tx.record(-i128::from(inode.unlink()), -1);
            }
            Ok(())
        })
    }

    async fn rename(&self, user: &str, from: &VPath, to: &VPath) -> Result<(), StoreError> {
        let (Ok((from_dir, from_name)), Ok((to_dir, to_name))) = (split(from), split(to)) else {
            return Err(StoreError::PermissionDenied);
        };
        check_names(from)?;
        check_names(to)?;
        self.change(user, |tx, tree| {
            let (is_dir, extent) = match tree.node(user, from)? {
                Found::Dir(dir) => (true, dir.extent()),
                Found::File(_) => (false, (0, 0)),
            };
            if is_dir {
                self.need(self.settings.capabilities.rename_dirs)?;
            }
            // Checked in the order the local backend meets them: the limits before rename(2)
            // itself refuses.
            let (from_depth, to_depth) = (from.components().count(), to.components().count());
            let deeper = to_depth > from_depth || to.as_str().len() > from.as_str().len();
            let dest = tree
                .dir(user, &to_dir)?
                .entries
                .get(to_name)
                .map(Found::from);
            self.check_limits(to, if is_dir && deeper { extent } else { (0, 0) })?;
            if from == to {
                return Ok(());
            }
            if is_dir && is_below(to, from) {
                return Err(StoreError::InvalidName);
            }
            let freed = match dest {
                None => (0, 0),
                Some(Found::File(_)) if is_dir => return Err(StoreError::NotADirectory),
                Some(Found::Dir(_)) if !is_dir => return Err(StoreError::IsADirectory),
                Some(Found::Dir(dest)) if !dest.entries.is_empty() => {
                    return Err(StoreError::NotEmpty);
                }
                Some(Found::Dir(_)) => (DIR_BYTES, 1),
                Some(Found::File(inode)) => (inode.len(), 1),
            };
            tx.mark()?;
            let node = tree
                .dir_mut(user, &from_dir)?
                .remove(from_name)
                .ok_or(StoreError::NotFound)?;
            let replaced = tree
                .dir_mut(user, &to_dir)?
                .insert(to_name.to_owned(), node);
            if let Some(Node::File(inode)) = replaced {
                inode.unlink();
            }
            tx.record(-i128::from(freed.0), -i128::from(freed.1));
            Ok(())
        })
    }

    async fn set_modified(
        &self,
        user: &str,
        path: &VPath,
        time: SystemTime,
    ) -> Result<(), StoreError> {
        self.need(self.settings.capabilities.set_mtime)?;
        let mut tree = lock(&self.tree);
        match path.parent().zip(path.file_name()) {
            None => tree.dir_mut(user, path)?.modified = time,
            Some((parent, name)) => {
                check_names(path)?;
                match tree.dir_mut(user, &parent)?.entries.get_mut(name) {
                    Some(Node::Dir(dir)) => dir.modified = time,
                    Some(Node::File(inode)) => lock(&inode.body).modified = time,
                    None => return Err(StoreError::NotFound),
                }
            }
        }
        Ok(())
    }

    async fn chmod(&self, user: &str, path: &VPath, mode: u32) -> Result<(), StoreError> {
        self.need(self.settings.capabilities.chmod)?;
        let mut tree = lock(&self.tree);
        // Looked up first, as the local backend does: a missing home is missing, not denied.
        tree.node(user, path)?;
        let (Some(parent), Some(name)) = (path.parent(), path.file_name()) else {
            return Err(StoreError::PermissionDenied);
        };
        match tree.dir_mut(user, &parent)?.entries.get_mut(name) {
            Some(Node::Dir(dir)) => dir.mode = mode & 0o777,
            Some(Node::File(inode)) => lock(&inode.body).mode = mode & 0o777,
            None => return Err(StoreError::NotFound),
        }
        Ok(())
    }

    async fn hash(
        &self,
        user: &str,
        path: &VPath,
        algo: HashAlgo,
    ) -> Result<(String, u64), StoreError> {
        let inode = match lock(&self.tree).node(user, path)? {
            Found::Dir(_) => return Err(StoreError::IsADirectory),
            Found::File(inode) => Arc::clone(inode),
        };
        let body = lock(&inode.body);
        let mut digest = algo.start();
        for chunk in body.bytes.chunks(crate::storage::digest::CHUNK) {
            digest.update(chunk);
        }
        Ok((digest.finish(), body.bytes.len() as u64))
    }

    async fn quota(&self, user: &str) -> Result<QuotaReport, StoreError> {
        match self.ledger(user) {
            Some(ledger) => Ok(ledger.report(user)?),
            None => Ok(QuotaReport::default()),
        }
    }
}
