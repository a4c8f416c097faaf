//! Homes and paths as keys (`<prefix>/<user>/<path>`), the directory marker, and the names a
//! client may use. Pure: no requests.

use std::hash::{DefaultHasher, Hash as _, Hasher as _};

use object_store::path::Path as ObjectPath;

use super::S3Storage;
use crate::storage::vpath::VPath;
use crate::storage::{ANONYMOUS, StoreError};

/// The name of a directory's marker object: MKD writes `<dir>/.ferry-dir`, since a key
/// ending in `/` cannot be written through `object_store`. Clients never see or use it.
pub(super) const MARKER: &str = ".ferry-dir";

/// The longest name, as on the local file system (`NAME_MAX`).
const NAME_MAX: usize = 255;
/// The longest key S3 stores (AWS, MinIO), in bytes.
const KEY_MAX: usize = 1024;

impl S3Storage {
    /// The key of `user`'s home: `<prefix>/<user>`.
    ///
    /// # Errors
    /// [`StoreError::NotFound`] for a name that cannot be a home.
    pub(super) fn home_key(&self, user: &str) -> Result<String, StoreError> {
        let bad = matches!(user, "" | "." | "..")
            || user.contains(['/', '@'])
            || user.chars().any(|c| c.is_control());
        if bad && user != ANONYMOUS {
            return Err(StoreError::NotFound);
        }
        let prefix = &self.settings.prefix;
        Ok(if prefix.is_empty() {
            user.to_owned()
        } else {
            format!("{prefix}/{user}")
        })
    }

    /// The key of `path` in `user`'s home (the home's own key for "/").
    ///
    /// # Errors
    /// As for [`S3Storage::home_key`] and [`check_names`].
    pub(super) fn key(&self, user: &str, path: &VPath) -> Result<String, StoreError> {
        check_names(path)?;
        let home = self.home_key(user)?;
        if path.is_root() {
            Ok(home)
        } else {
            Ok(format!("{home}{}", path.as_str()))
        }
    }

    /// The `unique` fact of the object (or directory) at `key`.
    pub(super) fn unique(&self, key: &str) -> String {
        format!("{:x}g{:x}", self.dev, key_hash(key))
    }
}

/// A number for `key`, stable within one build: the inode of the object for the quota's
/// claims and the `unique` fact.
pub(super) fn key_hash(key: &str) -> u64 {
    let mut hasher = DefaultHasher::new();
    key.hash(&mut hasher);
    hasher.finish()
}

/// Refuses names the store cannot hold: longer than `NAME_MAX` ([`StoreError::TooLong`]),
/// the marker's name or a control character ([`StoreError::InvalidName`]).
pub(super) fn check_names(path: &VPath) -> Result<(), StoreError> {
    for name in path.components() {
        if name.len() > NAME_MAX {
            return Err(StoreError::TooLong);
        }
        if name == MARKER || name.chars().any(|c| c.is_control()) {
            return Err(StoreError::InvalidName);
        }
    }
    Ok(())
}

/// Refuses a key S3 cannot store, past [`KEY_MAX`] bytes: [`StoreError::TooLong`], as a
/// path past the path limits is (the prefix and the home count, unseen by the client).
pub(super) fn check_key(key: &str) -> Result<(), StoreError> {
    if key.len() > KEY_MAX {
        return Err(StoreError::TooLong);
    }
    Ok(())
}

/// The marker of the directory at `dir`.
pub(super) fn marker(dir: &str) -> String {
    format!("{dir}/{MARKER}")
}

/// `key` as an `object_store` path.
///
/// # Errors
/// [`StoreError::InvalidName`] for a key it refuses (never one [`check_names`] passed).
pub(super) fn object(key: &str) -> Result<ObjectPath, StoreError> {
    ObjectPath::parse(key).map_err(|_| StoreError::InvalidName)
}

/// The directory and name an upload of `path` lands at (never the home itself).
pub(super) fn split(path: &VPath) -> Result<(VPath, &str), StoreError> {
    match (path.parent(), path.file_name()) {
        (Some(parent), Some(name)) => Ok((parent, name)),
        _ => Err(StoreError::IsADirectory),
    }
}
