//! Changes to the tree: directories (marker objects), removal and renames (copy, then delete),
//! each under the user's quota lock as on the local backend, on a blocking thread that waits
//! for its requests. A directory rename copies before it takes the lock (8 objects at a
//! time), so a big one does not hold the user's other changes for the whole copy; a crash
//! between its copies and its deletes leaves objects in both places, uncounted until a
//! recount.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use bytes::Bytes;
use futures::{StreamExt as _, TryStreamExt as _};
use object_store::aws::AmazonS3;
use object_store::path::Path as ObjectPath;
use object_store::{ObjectStore as _, ObjectStoreExt as _, PutMode, PutOptions, PutPayload};

use super::errors::store_error;
use super::keys::{MARKER, check_key, check_names, marker, object, split};
use super::read::Kind;
use super::{S3Storage, blocking, on_io, wait};
use crate::quota::{DIR_BYTES, Tx};
use crate::storage::StoreError;
use crate::storage::vpath::VPath;

/// Linux `PATH_MAX` with its NUL, the local backend's bound on a path on disk.
const PATH_MAX: usize = 4096;
/// Copies (and deletes) a directory rename runs at once.
const COPIES: usize = 8;

impl S3Storage {
    /// Runs `op`, a change to `user`'s tree, under the user's quota lock (see
    /// [`crate::quota::QuotaLedger::change`]), on a blocking thread.
    pub(super) async fn change<T: Send + 'static>(
        &self,
        user: &str,
        op: impl FnOnce(&mut Tx<'_>) -> Result<T, StoreError> + Send + 'static,
    ) -> Result<T, StoreError> {
        let ledger = self.ledger(user).cloned();
        let user = user.to_owned();
        blocking(move || match ledger {
            Some(ledger) => ledger.change(&user, op),
            None => op(&mut Tx::untracked()),
        })
        .await
    }

    /// Refuses a new entry at `path` (with a tree `below` it, in names and bytes) past the
    /// limits.
    pub(super) fn check_limits(
        &self,
        path: &VPath,
        below: (usize, usize),
    ) -> Result<(), StoreError> {
        let depth = path.components().count() + below.0;
        let length = path.as_str().len() + below.1;
        let limits = self.limits;
        if depth > limits.max_depth || length > limits.max_length || length >= PATH_MAX {
            return Err(StoreError::TooLong);
        }
        Ok(())
    }

    /// Writes a marker object at `key`, create-only. Its content is a token of this call's
    /// own, so [`put_create`] tells a retry's own success from another writer's marker.
    pub(super) async fn put_new(&self, key: &str) -> Result<(), StoreError> {
        let store = Arc::clone(&self.store);
        let path = object(key)?;
        let token = Bytes::from(format!("ferry {:032x}\n", rand::random::<u128>()));
        on_io(async move { put_create(&store, &path, token).await })
            .await
            .map_err(|e| store_error("PUT", key, e))
    }

    /// Creates `user`'s home marker (the home exists without it too, while keys lie in it).
    pub(super) async fn make_home(&self, user: &str) -> Result<(), StoreError> {
        let home = self.home_key(user)?;
        match self.put_new(&marker(&home)).await {
            Ok(()) | Err(StoreError::AlreadyExists) => Ok(()),
            Err(e) => Err(e),
        }
    }

    pub(super) async fn make_dir(&self, user: &str, path: &VPath) -> Result<(), StoreError> {
        let Ok((parent, _)) = split(path) else {
            return Err(StoreError::AlreadyExists);
        };
        check_names(path)?;
        self.need_dir(user, &parent).await?;
        if !matches!(self.kind(user, path).await?, Kind::Missing) {
            return Err(StoreError::AlreadyExists);
        }
        self.check_limits(path, (0, 0))?;
        let key = marker(&self.key(user, path)?);
        check_key(&key)?;
        let s3 = self.clone();
        self.change(user, move |tx| {
            tx.fits(i128::from(DIR_BYTES), 1)?;
            tx.mark()?;
            wait(async move { s3.put_new(&key).await })?;
            tx.record(i128::from(DIR_BYTES), 1);
            Ok(())
        })
        .await
    }

    pub(super) async fn remove_dir(&self, user: &str, path: &VPath) -> Result<(), StoreError> {
        if split(path).is_err() {
            return Err(StoreError::PermissionDenied);
        }
        let key = self.key(user, path)?;
        match self.kind(user, path).await? {
            Kind::Missing => return Err(self.missing(user, path).await),
            Kind::File(_) => return Err(StoreError::NotADirectory),
            Kind::Dir(_) => {}
        }
        let page = self.page(&key, false, 2, None).await?;
        let marker_key = marker(&key);
        let others = page
            .result
            .objects
            .iter()
            .any(|meta| meta.location.as_ref() != marker_key);
        if others || !page.result.common_prefixes.is_empty() {
            return Err(StoreError::NotEmpty);
        }
        let s3 = self.clone();
        self.change(user, move |tx| {
            tx.mark()?;
            wait(async move { s3.delete(&marker_key).await })?;
            tx.record(-i128::from(DIR_BYTES), -1);
            Ok(())
        })
        .await
    }

    /// Deletes the object at `key`.
    async fn delete(&self, key: &str) -> Result<(), StoreError> {
        let store = Arc::clone(&self.store);
        let path = object(key)?;
        on_io(async move { store.delete(&path).await })
            .await
            .map_err(|e| store_error("DELETE", key, e))
    }

    /// Copies the object at `from` to `to`, replacing what is there.
    async fn copy(&self, from: &str, to: &str) -> Result<(), StoreError> {
        let store = Arc::clone(&self.store);
        let (source, dest) = (object(from)?, object(to)?);
        on_io(async move { store.copy(&source, &dest).await })
            .await
            .map_err(|e| store_error("COPY", from, e))
    }

    pub(super) async fn remove_file(&self, user: &str, path: &VPath) -> Result<(), StoreError> {
        split(path)?;
        let key = self.key(user, path)?;
        match self.kind(user, path).await? {
            Kind::Missing => return Err(self.missing(user, path).await),
            Kind::Dir(_) => return Err(StoreError::IsADirectory),
            Kind::File(_) => {}
        }
        let s3 = self.clone();
        self.change(user, move |tx| {
            // Dirty before the change, as every other change: a crash in between recounts.
            tx.mark()?;
            // Measured again under the lock: it may have been replaced meanwhile.
            let gone = wait(async move {
                let meta = s3.head(&key).await?.ok_or(StoreError::NotFound)?;
                s3.delete(&key).await.map(|()| meta.size)
            })?;
            tx.record(-i128::from(gone), -1);
            Ok(())
        })
        .await
    }

    /// Every key below the directory `dir`, refused past the rename limit or with an object
    /// too large to copy.
    async fn keys_below(&self, dir: &str) -> Result<Vec<String>, StoreError> {
        let max = self.settings.max_rename_objects;
        let max_copy = self.settings.max_copy_bytes;
        let store = Arc::clone(&self.store);
        let prefix = object(dir)?;
        let found = on_io(async move {
            store
                .list(Some(&prefix))
                .map_ok(|meta| (meta.location.to_string(), meta.size))
                .take(max + 1)
                .try_collect::<Vec<_>>()
                .await
        })
        .await
        .map_err(|e| store_error("LIST", dir, e))?;
        if found.len() > max {
            return Err(StoreError::TooManyToRename(max));
        }
        if found.iter().any(|(_, size)| *size > max_copy) {
            return Err(StoreError::TooBigToRename(max_copy));
        }
        Ok(found.into_iter().map(|(key, _)| key).collect())
    }

    pub(super) async fn move_path(
        &self,
        user: &str,
        from: &VPath,
        to: &VPath,
    ) -> Result<(), StoreError> {
        let (Ok((_, _)), Ok((to_dir, _))) = (split(from), split(to)) else {
            return Err(StoreError::PermissionDenied);
        };
        let (from_key, to_key) = (self.key(user, from)?, self.key(user, to)?);
        let is_dir = match self.kind(user, from).await? {
            Kind::Missing => return Err(self.missing(user, from).await),
            Kind::File(meta) if from != to && meta.size > self.settings.max_copy_bytes => {
                return Err(StoreError::TooBigToRename(self.settings.max_copy_bytes));
            }
            Kind::File(_) => false,
            Kind::Dir(_) => true,
        };
        // Before the listing: renaming a directory too big to move onto itself changes nothing.
        if from == to {
            return Ok(());
        }
        let moved = match is_dir {
            true => Some(self.keys_below(&from_key).await?),
            false => None,
        };
        match &moved {
            Some(keys) => {
                for rest in keys.iter().filter_map(|key| key.strip_prefix(&from_key)) {
                    check_key(&format!("{to_key}{rest}"))?;
                }
            }
            None => check_key(&to_key)?,
        }
        self.need_dir(user, &to_dir).await?;
        let extent = moved
            .as_deref()
            .map_or((0, 0), |keys| extent(&from_key, keys));
        let deeper = to.components().count() > from.components().count()
            || to.as_str().len() > from.as_str().len();
        self.check_limits(to, if deeper { extent } else { (0, 0) })?;
        if moved.is_some() && is_below(to, from) {
            return Err(StoreError::InvalidName);
        }
        let dest = self.kind(user, to).await?;
        let s3 = self.clone();
        match (moved, dest) {
            (Some(_), Kind::File(_)) => Err(StoreError::NotADirectory),
            (None, Kind::Dir(_)) => Err(StoreError::IsADirectory),
            (None, dest) => {
                let replaced = match dest {
                    Kind::File(meta) => Some(meta.size),
                    _ => None,
                };
                self.change(user, move |tx| {
                    tx.mark()?;
                    wait(async move {
                        s3.copy(&from_key, &to_key).await?;
                        s3.delete(&from_key).await
                    })?;
                    if let Some(size) = replaced {
                        tx.record(-i128::from(size), -1);
                    }
                    Ok(())
                })
                .await
            }
            (Some(keys), dest) => {
                let replaces_dir = matches!(dest, Kind::Dir(_));
                if replaces_dir {
                    let page = self.page(&to_key, false, 2, None).await?;
                    let only_marker = page.result.common_prefixes.is_empty()
                        && page
                            .result
                            .objects
                            .iter()
                            .all(|meta| meta.location.as_ref() == marker(&to_key));
                    if !only_marker {
                        return Err(StoreError::NotEmpty);
                    }
                }
                // Into an empty directory: its marker stays the marker and the source's is not
                // copied over it, so a failure midway (whose undo removes the copies made)
                // leaves that directory as it was.
                let from_marker = marker(&from_key);
                let (keys, skipped): (Vec<_>, Vec<_>) = keys
                    .into_iter()
                    .partition(|key| !replaces_dir || *key != from_marker);
                // Two markers became one (a source of other tools may have none).
                let merged = !skipped.is_empty();
                // The copies, the long part, run outside the user's lock (other changes of the
                // user go on meanwhile); the lock covers the deletes and the accounting.
                self.copy_keys(&from_key, &to_key, &keys).await?;
                self.change(user, move |tx| {
                    tx.mark()?;
                    wait(async move { s3.delete_keys(&from_key, keys, skipped).await })?;
                    if merged {
                        tx.record(-i128::from(DIR_BYTES), -1);
                    }
                    Ok(())
                })
                .await
            }
        }
    }

    /// Copies every key of `keys` (below `from`) to the same place below `to`, [`COPIES`] at
    /// a time; after a failure, no further copy starts and the copies made are removed.
    async fn copy_keys(&self, from: &str, to: &str, keys: &[String]) -> Result<(), StoreError> {
        let failed = AtomicBool::new(false);
        let pairs: Vec<(String, String)> = keys
            .iter()
            .filter_map(|key| {
                let rest = key.strip_prefix(from)?;
                Some((key.clone(), format!("{to}{rest}")))
            })
            .collect();
        let copies = futures::stream::iter(pairs)
            .map(|(key, dest)| {
                let failed = &failed;
                async move {
                    if failed.load(Ordering::Relaxed) {
                        return (dest, None);
                    }
                    let copied = self.copy(&key, &dest).await;
                    if copied.is_err() {
                        failed.store(true, Ordering::Relaxed);
                    }
                    (dest, Some(copied))
                }
            })
            .buffer_unordered(COPIES)
            .collect::<Vec<_>>()
            .await;
        let mut error = None;
        let mut made = Vec::new();
        for (dest, copied) in copies {
            match copied {
                Some(Ok(())) => made.push(dest),
                Some(Err(e)) => error = error.or(Some(e)),
                None => {}
            }
        }
        let Some(error) = error else {
            return Ok(());
        };
        for made in &made {
            if let Err(undo) = self.delete(made).await {
                log::warn!("rename of {from}: cannot remove the copy {made}: {undo}");
            }
        }
        Err(error)
    }

    /// Deletes the sources of a rename whose copies all landed (`keys`, and the keys of
    /// `drop`, which were not copied), [`COPIES`] at a time; a failure leaves that object in
    /// both places.
    async fn delete_keys(
        &self,
        from: &str,
        keys: Vec<String>,
        drop: Vec<String>,
    ) -> Result<(), StoreError> {
        let deletes = futures::stream::iter(keys.into_iter().chain(drop))
            .map(|key| async move {
                let deleted = self.delete(&key).await;
                (key, deleted)
            })
            .buffer_unordered(COPIES)
            .collect::<Vec<_>>()
            .await;
        let mut failed = None;
        for (key, deleted) in deletes {
            if let Err(e) = deleted {
                log::warn!("rename of {from}: {key} stays in both places: {e}");
                failed = Some(e);
            }
        }
        failed.map_or(Ok(()), Err)
    }
}

/// Writes `bytes` at `path`, create-only. When the client retries a PUT whose first attempt
/// landed but whose answer was lost (a 5xx, a cut connection), the retry meets that object
/// (412): an object there with exactly these bytes is that success, anything else
/// [`object_store::Error::AlreadyExists`].
pub(super) async fn put_create(
    store: &AmazonS3,
    path: &ObjectPath,
    bytes: Bytes,
) -> object_store::Result<()> {
    let options = PutOptions {
        mode: PutMode::Create,
        ..PutOptions::default()
    };
    match store
        .put_opts(path, PutPayload::from_bytes(bytes.clone()), options)
        .await
    {
        Ok(_) => Ok(()),
        Err(refused @ object_store::Error::AlreadyExists { .. }) => {
            let found = match store.get(path).await {
                Ok(found) => found.bytes().await.ok(),
                Err(_) => None,
            };
            match found {
                Some(found) if found == bytes => Ok(()),
                _ => Err(refused),
            }
        }
        Err(e) => Err(e),
    }
}

/// How deep and how long (in the client's bytes) the tree of `keys` below `dir` reaches.
fn extent(dir: &str, keys: &[String]) -> (usize, usize) {
    let mut most = (0, 0);
    for key in keys {
        let Some(rest) = key.strip_prefix(dir) else {
            continue;
        };
        let rest = rest
            .strip_suffix(MARKER)
            .unwrap_or(rest)
            .trim_end_matches('/');
        if rest.is_empty() {
            continue;
        }
        let depth = rest.matches('/').count();
        most = (most.0.max(depth), most.1.max(rest.len()));
    }
    most
}

/// Whether `path` lies strictly below `dir`.
fn is_below(path: &VPath, dir: &VPath) -> bool {
    let mut path = path.components();
    dir.components().all(|name| path.next() == Some(name)) && path.next().is_some()
}
