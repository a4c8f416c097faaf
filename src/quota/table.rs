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

/// Adds `bytes` and `files` (negative: takes away) to `user`'s row in one statement, so the
/// changes of two nodes add up; `dirty` as the caller's writers say.
pub(super) fn add(
    db: &Arc<Database>,
    user: &str,
    (bytes, files): (i128, i128),
    dirty: bool,
) -> io::Result<()> {
    let user = user.to_owned();
    let delta = |n: i128| i64::try_from(n).unwrap_or(if n < 0 { i64::MIN } else { i64::MAX });
    let (bytes, files) = (delta(bytes), delta(files));
    let changed = db
        .wait(move |client| async move {
            Ok(client
                .execute(
                    "UPDATE quota_usage SET bytes = greatest(bytes + $2, 0), \
                       files = greatest(files + $3, 0), dirty = $4 WHERE user_name = $1",
                    &[&user, &bytes, &files, &dirty],
                )
                .await?)
        })
        .map_err(io::Error::other)?;
    if changed == 0 {
        return Err(io::Error::other("no usage row to change"));
    }
    Ok(())
}

/// Marks `user`'s row dirty, keeping its usage (another node may have changed it).
pub(super) fn mark(db: &Arc<Database>, user: &str) -> io::Result<()> {
    let user = user.to_owned();
    db.wait(move |client| async move {
        client
            .execute(
                "UPDATE quota_usage SET dirty = true WHERE user_name = $1",
                &[&user],
            )
            .await?;
        Ok(())
    })
    .map_err(io::Error::other)
}

/// Creates `user`'s row from a count unless another node created it meanwhile; the row as
/// it is then.
pub(super) fn create(db: &Arc<Database>, user: &str, counted: Stored) -> io::Result<Stored> {
    let user = user.to_owned();
    db.wait(move |client| async move {
        let made = client
            .query_opt(
                "WITH made AS (INSERT INTO quota_usage (user_name, bytes, files) \
                   VALUES ($1, $2, $3) ON CONFLICT (user_name) DO NOTHING \
                   RETURNING bytes, files, dirty) \
                 SELECT bytes, files, dirty FROM made UNION ALL \
                 SELECT bytes, files, dirty FROM quota_usage WHERE user_name = $1 \
                   AND NOT EXISTS (SELECT 1 FROM made)",
                &[&user, &bigint(counted.bytes), &bigint(counted.files)],
            )
            .await?;
        // A row another node committed after this statement's snapshot began: read again.
        let row = match made {
            Some(row) => row,
            None => {
                client
                    .query_one(
                        "SELECT bytes, files, dirty FROM quota_usage WHERE user_name = $1",
                        &[&user],
                    )
                    .await?
            }
        };
        Ok(Stored {
            bytes: count(row.get(0)),
            files: count(row.get(1)),
            dirty: row.get(2),
        })
    })
    .map_err(io::Error::other)
}

/// Whether `user` has a row (a deleted account's row is what it left).
pub(crate) fn exists(db: &Arc<Database>, user: &str) -> io::Result<bool> {
    let user = user.to_owned();
    db.wait(move |client| async move {
        let row = client
            .query_opt("SELECT 1 FROM quota_usage WHERE user_name = $1", &[&user])
            .await?;
        Ok(row.is_some())
    })
    .map_err(io::Error::other)
}

/// Deletes `user`'s row; whether there was one.
pub(crate) fn remove(db: &Arc<Database>, user: &str) -> io::Result<bool> {
    let user = user.to_owned();
    db.wait(move |client| async move {
        let deleted = client
            .execute("DELETE FROM quota_usage WHERE user_name = $1", &[&user])
            .await?;
        Ok(deleted > 0)
    })
    .map_err(io::Error::other)
}
