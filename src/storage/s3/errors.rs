//! Object-store errors as [`StoreError`]s: a missing key is [`StoreError::NotFound`], a
//! refused create-only write [`StoreError::AlreadyExists`]; everything else (5xx after the
//! client's retries, throttling, refused credentials, no connection, an object replaced
//! since it was looked at: a failed If-Match) is [`StoreError::Io`] (451) with one log line.

use std::io;

use super::explain;
use crate::storage::StoreError;

/// `err`, met while doing `what` to `key`, as a [`StoreError`].
pub(super) fn store_error(what: &str, key: &str, err: object_store::Error) -> StoreError {
    match err {
        object_store::Error::NotFound { .. } => StoreError::NotFound,
        object_store::Error::AlreadyExists { .. } => StoreError::AlreadyExists,
        other => {
            log::warn!("S3 {what} of {key} failed: {}", explain(&other));
            StoreError::Io(io::Error::other(other))
        }
    }
}
