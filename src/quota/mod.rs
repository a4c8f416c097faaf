//! Per-user quotas: the limits ([`Quota`], stored in the account record), the usage ledger
//! ([`QuotaLedger`]: bytes and files per user in `usage/<user>.json`, written atomically) and
//! the accounting of running uploads ([`Charge`]).
//!
//! Usage is read from the ledger file on every check (a few dozen bytes), so a recount by the
//! operator (`ferryd user quota --recount`) takes effect at once in a running server. Every
//! change of a user's tree that the server makes runs under that user's lock, together with
//! the measurement of what it changes (`QuotaLedger::change`, `Charge::grow`), so two
//! sessions of one user cannot slip a change between a measurement and its use. Bytes in
//! flight are reserved in the [`SharedState`](crate::state::SharedState); a file written in place is charged by what its open
//! descriptor's size actually grew (fstat before and after each write, counted while the file
//! is still linked), never by path, so renaming or replacing it meanwhile changes nothing.
//!
//! Crashes: the ledger file is marked dirty before a change to the tree and while in-place
//! writes run; a ledger found dirty at start ([`QuotaLedger::recover`]) is recounted. A ledger
//! that is missing is recounted before use; one that cannot be read or recounted refuses
//! writes (451) rather than letting them through unchecked.
//!
//! What counts: every regular file (its size) and every directory below the home (a fixed
//! [`DIR_BYTES`], so directory floods meet the byte limit) count as one file each; symbolic
//! links (which only the operator can create) count for nothing.
//!
//! In a cluster (a node with a database) the usage is a row of the `quota_usage` table
//! instead of the file (`table.rs`), so every node checks against the same usage.
//!
//! Files: `ledger.rs` (the ledger and per-user state), `tx.rs` (one change under the lock),
//! `charge.rs` (a running upload), `recount.rs` (counting a home: [`UsageCounter`], by default
//! a walk of its directory; recovery at start); the shared
//! values are here.

use std::fs;
use std::io;
use std::os::unix::fs::MetadataExt;

use serde::{Deserialize, Serialize};

use crate::config::Quota;

mod charge;
mod ledger;
mod recount;
pub(crate) mod table;
mod tx;

pub use charge::Charge;
pub use ledger::QuotaLedger;
pub use recount::{TreeCounter, UsageCounter, count_tree};
pub(crate) use tx::Tx;

/// What one directory costs against the byte limit: the block it takes on a common file
/// system (ext4, xfs), so that creating directories is not free.
pub const DIR_BYTES: u64 = 4096;

/// What an account's home holds.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Usage {
    /// Sum of the sizes of the regular files.
    pub bytes: u64,
    /// Regular files plus directories (not the home itself).
    pub files: u64,
}

/// Usage and limits together, for `SITE QUOTA` and `ferryd user quota`.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct QuotaReport {
    /// What is stored now.
    pub usage: Usage,
    /// The limits.
    pub limits: Quota,
}

impl QuotaReport {
    /// The report as text lines: "Bytes used: U of L", "Files used: U of L" ("none" when
    /// unlimited).
    pub fn lines(&self) -> [String; 2] {
        let limit = |l: Option<u64>| l.map_or_else(|| "none".to_owned(), |l| l.to_string());
        [
            format!(
                "Bytes used: {} of {}",
                self.usage.bytes,
                limit(self.limits.bytes)
            ),
            format!(
                "Files used: {} of {}",
                self.usage.files,
                limit(self.limits.files)
            ),
        ]
    }
}

/// Where an account's limits come from (the account store; a test gives fixed ones).
pub trait LimitSource: Send + Sync + 'static {
    /// The limits of `user`; unlimited for an unknown user.
    fn limits(&self, user: &str) -> Quota;
}

impl<F: Fn(&str) -> Quota + Send + Sync + 'static> LimitSource for F {
    fn limits(&self, user: &str) -> Quota {
        self(user)
    }
}

/// The file a staged upload will replace, as the ledger tells files apart and credits them.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct FileId {
    /// Its device.
    pub dev: u64,
    /// Its inode.
    pub ino: u64,
    /// Its size in bytes.
    pub len: u64,
}

impl From<&fs::Metadata> for FileId {
    fn from(meta: &fs::Metadata) -> FileId {
        FileId {
            dev: meta.dev(),
            ino: meta.ino(),
            len: meta.len(),
        }
    }
}

/// Why a write was refused by the quota.
#[derive(Debug, thiserror::Error)]
pub enum QuotaError {
    /// It would pass the account's byte or file limit: 552.
    #[error("quota exceeded")]
    Exceeded,
    /// The usage ledger can neither be read nor recounted, so no limit can be checked: 451.
    #[error("usage ledger unavailable: {0}")]
    Unavailable(#[source] io::Error),
}

#[cfg(test)]
mod cluster_tests;
#[cfg(test)]
mod tests;
