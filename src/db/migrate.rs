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
    (3, "state", include_str!("../../migrations/0003_state.sql")),
    (4, "audit", include_str!("../../migrations/0004_audit.sql")),
    (
        5,
        "reservation versions",
        include_str!("../../migrations/0005_reservation_versions.sql"),
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
    // The NOTICE that the table exists (every start but the first) is not worth a log line.
    tx.batch_execute(
        "SET LOCAL client_min_messages = warning;
         CREATE TABLE IF NOT EXISTS schema_migrations (
             version    integer PRIMARY KEY,
             name       text NOT NULL,
             applied_at timestamptz NOT NULL DEFAULT now()
         )",
    )
    .await?;
    let applied: Vec<i32> = tx
        .query("SELECT version FROM schema_migrations", &[])
        .await?
        .iter()
        .map(|row| row.get(0))
        .collect();
    if let Some(unknown) = applied
        .iter()
        .find(|v| !MIGRATIONS.iter().any(|m| m.0 == **v))
    {
        return Err(DbError::Refused(format!(
            "the database has schema migration {unknown}, which this ferryd does not know: \
             run the newer ferryd"
        )));
    }
    // Every migration not applied yet, in order: not only those above the highest applied
    // (branches that merged out of order must not leave a gap).
    for (version, name, sql) in MIGRATIONS.iter().filter(|m| !applied.contains(&m.0)) {
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
