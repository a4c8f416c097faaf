//! The usage ledger of a cluster: the `quota_usage` table (migrations/0003_state.sql), one
//! row per account, in place of `usage/<user>.json` when the node has a database.

use std::io;
use std::sync::Arc;

use crate::db::Database;

use super::ledger::Stored;

fn bigint(n: u64) -> i64 {
    i64::try_from(n).unwrap_or(i64::MAX)
}

fn count(n: i64) -> u64 {
    u64::try_from(n).unwrap_or(0)
}

/// `user`'s row; `None` when there is none yet (the ledger counts the home then).
pub(super) fn load(db: &Arc<Database>, user: &str) -> io::Result<Option<Stored>> {
    let user = user.to_owned();
    db.wait(move |client| async move {
        let row = client
            .query_opt(
                "SELECT bytes, files, dirty FROM quota_usage WHERE user_name = $1",
                &[&user],
            )
            .await?;
        Ok(row.map(|row| Stored {
            bytes: count(row.get(0)),
            files: count(row.get(1)),
            dirty: row.get(2),
        }))
    })
    .map_err(io::Error::other)
}

/// Writes `user`'s row.
pub(super) fn store(db: &Arc<Database>, user: &str, stored: Stored) -> io::Result<()> {
    let user = user.to_owned();
    db.wait(move |client| async move {
        client
            .execute(
                "INSERT INTO quota_usage (user_name, bytes, files, dirty) VALUES ($1, $2, $3, $4) \
                 ON CONFLICT (user_name) DO UPDATE \
                   SET bytes = EXCLUDED.bytes, files = EXCLUDED.files, dirty = EXCLUDED.dirty",
                &[
                    &user,
                    &bigint(stored.bytes),
                    &bigint(stored.files),
                    &stored.dirty,
                ],
            )
            .await?;
        Ok(())
    })
    .map_err(io::Error::other)
}
