//! Numbered schema migrations, applied at start in one transaction under an advisory lock:
//! nodes that start together wait for each other, and each migration runs once.

use super::{Database, DbError};

/// The migrations, in order: (number, name, SQL). A number is never reused or edited once
/// released; a change is a new file.
pub const MIGRATIONS: &[(i32, &str, &str)] = &[
    (1, "nodes", include_str!("../../migrations/0001_nodes.sql")),
    (
        2,
        "accounts",
        include_str!("../../migrations/0002_accounts.sql"),
    ),
];

/// The advisory lock key: "ferry" in ASCII, so it does not collide with another program's.
const LOCK_KEY: i64 = 0x0066_6572_7279;

/// Applies the migrations the database does not have yet.
///
/// # Errors
/// [`DbError::Unavailable`] when the database cannot be reached, [`DbError::Refused`] when a
/// migration fails (nothing of it stays) or the database is newer than this program.
pub async fn run(db: &Database) -> Result<(), DbError> {
    let mut client = db.pool.get().await?;
    let tx = client.transaction().await?;
    tx.execute("SELECT pg_advisory_xact_lock($1)", &[&LOCK_KEY])
        .await?;
    tx.batch_execute(
        "CREATE TABLE IF NOT EXISTS schema_migrations (
             version    integer PRIMARY KEY,
             name       text NOT NULL,
             applied_at timestamptz NOT NULL DEFAULT now()
         )",
    )
    .await?;
    let applied: Option<i32> = tx
        .query_one("SELECT max(version) FROM schema_migrations", &[])
        .await?
        .get(0);
    let applied = applied.unwrap_or(0);
    let known = MIGRATIONS.last().map_or(0, |m| m.0);
    if applied > known {
        return Err(DbError::Refused(format!(
            "the database schema is at version {applied}, newer than this ferryd ({known}): \
             run the newer ferryd"
        )));
    }
    for (version, name, sql) in MIGRATIONS.iter().filter(|m| m.0 > applied) {
        tx.batch_execute(sql).await.map_err(|e| {
            DbError::Refused(format!(
                "migration {version:04} ({name}) failed: {}",
                DbError::from(e)
            ))
        })?;
        tx.execute(
            "INSERT INTO schema_migrations (version, name) VALUES ($1, $2)",
            &[version, name],
        )
        .await?;
        log::info!("database: applied migration {version:04} ({name})");
    }
    tx.commit().await?;
    Ok(())
}
