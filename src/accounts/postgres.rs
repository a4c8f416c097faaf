//! Accounts and invitation codes in the cluster's database (`database_url`): the
//! [`PgAccountStore`] and [`PgInviteStore`] over the tables of `migrations/0002_accounts.sql`,
//! and the [`AccountWatch`] that tells a node of every account change another node (or
//! `ferryd user`) made: LISTEN on `ferry_accounts`, with the change log read as a backstop.
//!
//! The stores' methods are sync (the registry's threads and the operator commands block by
//! design) and wait through [`Database::wait`], so a database that is gone fails each call
//! within [`crate::db::QUERY_LIMIT`] as an I/O error (451), never hangs it. Nothing is cached:
//! each login reads the record as it is now.

use std::io;
use std::sync::Arc;
use std::time::Duration;

use tokio_postgres::Row;

use super::invites::{Invite, InviteError, InviteStore, new_invite, valid};
use super::{AccountRecord, AccountStore, AuthError, Changed, UserName};
use crate::config::Quota;
use crate::db::{Database, DbError, QUERY_LIMIT, secs, spawn_on_db};

/// The channel account changes are announced on (payload: the name).
pub const CHANNEL: &str = "ferry_accounts";
/// The first wait before listening again after the connection was lost; doubled per failure.
const RETRY_FIRST: Duration = Duration::from_secs(1);
/// The longest wait between attempts to listen again.
const RETRY_MOST: Duration = Duration::from_secs(30);
/// How long the change log keeps a change: far longer than any backstop period.
const CHANGES_KEPT: Duration = Duration::from_secs(24 * 3600);

fn unavailable(e: DbError) -> AuthError {
    AuthError::Io(io::Error::other(e))
}

/// A limit as the table keeps it (`bigint`); a limit beyond its range is as good as none.
fn to_sql(limit: Option<u64>) -> Option<i64> {
    limit.map(|n| i64::try_from(n).unwrap_or(i64::MAX))
}

fn from_sql(limit: Option<i64>) -> Option<u64> {
    limit.and_then(|n| u64::try_from(n).ok())
}

fn record(row: &Row) -> Result<AccountRecord, AuthError> {
    let name: String = row.get("name");
    let name = UserName::parse(&name)
        .map_err(|_| AuthError::Corrupt(format!("account {name:?}: not a valid name")))?;
    Ok(AccountRecord {
        name,
        hash: row.get("hash"),
        created: row.get("created"),
        disabled: row.get("disabled"),
        read_only: row.get("read_only"),
        quota: Quota {
            bytes: from_sql(row.get("quota_bytes")),
            files: from_sql(row.get("quota_files")),
        },
        version: u64::try_from(row.get::<_, i64>("version")).unwrap_or(0),
    })
}

const COLUMNS: &str = "name, hash, created, disabled, read_only, quota_bytes, quota_files, version";

/// Accounts in the `accounts` table. Every change announces itself (a trigger: see the
/// migration), in the transaction that makes it.
#[derive(Debug, Clone)]
pub struct PgAccountStore {
    db: Arc<Database>,
}

impl PgAccountStore {
    /// A store over the cluster's database.
    pub fn new(db: Arc<Database>) -> PgAccountStore {
        PgAccountStore { db }
    }
}

impl PgAccountStore {
    /// Runs `sql` with the record's fields as `$1`..`$8`, in the order of [`COLUMNS`]; the
    /// rows it changed.
    fn write(&self, sql: &'static str, record: &AccountRecord) -> Result<u64, AuthError> {
        let r = record.clone();
        self.db
            .wait(move |c| async move {
                let (bytes, files) = (to_sql(r.quota.bytes), to_sql(r.quota.files));
                let version = i64::try_from(r.version).unwrap_or(i64::MAX);
                Ok(c.execute(
                    sql,
                    &[
                        &r.name.as_str(),
                        &r.hash,
                        &r.created,
                        &r.disabled,
                        &r.read_only,
                        &bytes,
                        &files,
                        &version,
                    ],
                )
                .await?)
            })
            .map_err(unavailable)
    }
}

impl AccountStore for PgAccountStore {
    fn load(&self, name: &UserName) -> Result<Option<AccountRecord>, AuthError> {
        let name = name.to_string();
        let row = self
            .db
            .wait(move |c| async move {
                let sql = format!("SELECT {COLUMNS} FROM accounts WHERE name = $1");
                Ok(c.query_opt(&sql, &[&name]).await?)
            })
            .map_err(unavailable)?;
        row.as_ref().map(record).transpose()
    }

    fn create(&self, record: &AccountRecord) -> Result<(), AuthError> {
        // One statement: of two nodes creating one name at the same instant, exactly one row
        // goes in and the other sees none inserted.
        let inserted = self.write(
            "INSERT INTO accounts \
               (name, hash, created, disabled, read_only, quota_bytes, quota_files, version) \
             VALUES ($1, $2, $3, $4, $5, $6, $7, $8) ON CONFLICT (name) DO NOTHING",
            record,
        )?;
        if inserted == 0 {
            return Err(AuthError::NameTaken);
        }
        Ok(())
    }

    fn update(&self, record: &AccountRecord) -> Result<(), AuthError> {
        let updated = self.write(
            "UPDATE accounts SET hash = $2, created = $3, disabled = $4, \
               read_only = $5, quota_bytes = $6, quota_files = $7, \
               version = version + 1, updated_at = now() \
             WHERE name = $1 AND version = $8",
            record,
        )?;
        if updated == 0 && self.load(&record.name)?.is_some() {
            return Err(Changed::of(&record.name));
        }
        if updated == 0 {
            return Err(io::Error::new(
                io::ErrorKind::NotFound,
                format!("no account {}", record.name),
            )
            .into());
        }
        Ok(())
    }

    fn delete(&self, name: &UserName) -> Result<bool, AuthError> {
        let name = name.to_string();
        let deleted = self
            .db
            .wait(move |c| async move {
                Ok(c.execute("DELETE FROM accounts WHERE name = $1", &[&name])
                    .await?)
            })
            .map_err(unavailable)?;
        Ok(deleted > 0)
    }

    fn list(&self) -> Result<Vec<AccountRecord>, AuthError> {
        let rows = self
            .db
            .wait(|c| async move {
                let sql = format!("SELECT {COLUMNS} FROM accounts ORDER BY name");
                Ok(c.query(&sql, &[]).await?)
            })
            .map_err(unavailable)?;
        rows.iter().map(record).collect()
    }
}

/// Invitation codes in the `invites` table: a redemption is one conditional `UPDATE`, so two
/// nodes spending the last use at once cannot both succeed.
#[derive(Debug, Clone)]
pub struct PgInviteStore {
    db: Arc<Database>,
}

impl PgInviteStore {
    /// A store over the cluster's database.
    pub fn new(db: Arc<Database>) -> PgInviteStore {
        PgInviteStore { db }
    }
}

impl InviteStore for PgInviteStore {
    fn create(&self, uses: u32) -> io::Result<Invite> {
        let invite = new_invite(uses);
        let row = invite.clone();
        let uses = i32::try_from(uses).unwrap_or(i32::MAX);
        self.db
            .wait(move |c| async move {
                c.execute(
                    "INSERT INTO invites (code, uses_left, created) VALUES ($1, $2, $3)",
                    &[&row.code, &uses, &row.created],
                )
                .await?;
                Ok(())
            })
            .map_err(io::Error::other)?;
        Ok(invite)
    }

    fn list(&self) -> io::Result<Vec<Invite>> {
        let rows = self
            .db
            .wait(|c| async move {
                Ok(c.query(
                    "SELECT code, uses_left, created FROM invites ORDER BY created, code",
                    &[],
                )
                .await?)
            })
            .map_err(io::Error::other)?;
        Ok(rows
            .iter()
            .map(|row| Invite {
                code: row.get(0),
                uses_left: u32::try_from(row.get::<_, i32>(1)).unwrap_or(0),
                created: row.get(2),
            })
            .collect())
    }

    fn redeem(&self, code: &str) -> Result<(), InviteError> {
        if !valid(code) {
            return Err(InviteError::Invalid);
        }
        let code = code.to_owned();
        let spent = self
            .db
            .wait(move |c| async move {
                Ok(c.execute(
                    "UPDATE invites SET uses_left = uses_left - 1 \
                     WHERE code = $1 AND uses_left > 0",
                    &[&code],
                )
                .await?)
            })
            .map_err(|e| InviteError::Io(io::Error::other(e)))?;
        if spent == 0 {
            return Err(InviteError::Invalid);
        }
        Ok(())
    }

    fn refund(&self, code: &str) {
        let code = code.to_owned();
        let refunded = self.db.wait(move |c| async move {
            Ok(c.execute(
                "UPDATE invites SET uses_left = uses_left + 1 WHERE code = $1",
                &[&code],
            )
            .await?)
        });
        if let Err(e) = refunded {
            log::error!("cannot give back a use of an invitation code: {e}");
        }
    }
}

/// How a node learnt of an account change.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Noticed {
    /// The announcement on `CHANNEL`.
    Notification,
    /// The periodic read of the change log (an announcement missed while not listening).
    Backstop,
}

/// One account changed (created, updated or deleted), as it is now.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AccountChange {
    /// The account's name.
    pub name: String,
    /// It is deleted or disabled: its live sessions must end.
    pub gone: bool,
    /// How the change was learnt.
    pub noticed: Noticed,
}

/// Watches the accounts for changes for as long as it lives: LISTEN on a connection of its
/// own, listening again (with a growing pause, logged) after that connection is lost, and
/// reading the change log every `period` for whatever was missed meanwhile. Dropping it ends
/// the watch.
pub struct AccountWatch {
    _stop: tokio::sync::oneshot::Sender<()>,
}

impl AccountWatch {
    /// Starts the watch on the database runtime; `on_change` gets every change (a change
    /// may come twice, by notification and by the backstop: acting on it must be idempotent).
    pub fn start(
        db: Arc<Database>,
        period: Duration,
        on_change: impl Fn(AccountChange) + Send + Sync + 'static,
    ) -> AccountWatch {
        let (stop, stopped) = tokio::sync::oneshot::channel();
        spawn_on_db(async move {
            let watch = Watcher {
                db,
                period,
                on_change: Box::new(on_change),
            };
            tokio::select! {
                _ = stopped => {}
                () = watch.run() => {}
            }
        });
        AccountWatch { _stop: stop }
    }
}

type Notifications = tokio::sync::mpsc::UnboundedReceiver<String>;

/// What woke the watcher: a notification (none when the connection is gone), the backstop's
/// tick, or the time to listen again.
enum Event {
    Notified(Option<String>),
    Tick,
    Retry,
}

struct Watcher {
    db: Arc<Database>,
    period: Duration,
    on_change: Box<dyn Fn(AccountChange) + Send + Sync>,
}

impl Watcher {
    async fn run(self) {
        let mut listening: Option<(tokio_postgres::Client, Notifications)> = None;
        let mut retry = RETRY_FIRST;
        let mut retry_at = tokio::time::Instant::now();
        let mut lost = false;
        // The database's clock at the last read of the change log (none read yet).
        let mut since: Option<f64> = None;
        let mut tick = tokio::time::interval(self.period);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            if listening.is_none() && tokio::time::Instant::now() >= retry_at {
                match self.listen().await {
                    Ok(listener) => {
                        if lost {
                            log::info!("accounts: listening for changes again");
                            // What changed while nobody listened.
                            self.backstop(&mut since).await;
                        }
                        listening = Some(listener);
                        retry = RETRY_FIRST;
                    }
                    Err(e) => {
                        log::warn!(
                            "accounts: cannot listen for changes ({e}); trying again in {} s",
                            retry.as_secs()
                        );
                        lost = true;
                        retry_at = tokio::time::Instant::now() + retry;
                        retry = (retry * 2).min(RETRY_MOST);
                    }
                }
            }
            let waiting = listening.is_none();
            let next = async {
                match &mut listening {
                    Some((_, notifications)) => notifications.recv().await,
                    None => std::future::pending().await,
                }
            };
            let event = tokio::select! {
                name = next => Event::Notified(name),
                _ = tick.tick() => Event::Tick,
                () = tokio::time::sleep_until(retry_at), if waiting => Event::Retry,
            };
            match event {
                Event::Notified(Some(name)) => {
                    self.report(vec![name], Noticed::Notification).await;
                }
                Event::Notified(None) => {
                    log::warn!(
                        "accounts: lost the connection that listens for changes; \
                         listening again in {} s",
                        retry.as_secs()
                    );
                    listening = None;
                    lost = true;
                    retry_at = tokio::time::Instant::now() + retry;
                    retry = (retry * 2).min(RETRY_MOST);
                }
                Event::Tick => self.backstop(&mut since).await,
                Event::Retry => {}
            }
        }
    }

    /// A connection of its own that listens on [`CHANNEL`]; the receiver ends with it.
    async fn listen(&self) -> Result<(tokio_postgres::Client, Notifications), DbError> {
        let (tx, rx) = tokio::sync::mpsc::unbounded_channel();
        let client = self
            .db
            .dedicated(move |message| {
                if let tokio_postgres::AsyncMessage::Notification(n) = message
                    && n.channel() == CHANNEL
                {
                    let _ = tx.send(n.payload().to_owned());
                }
            })
            .await?;
        tokio::time::timeout(
            QUERY_LIMIT,
            client.batch_execute(&format!("LISTEN {CHANNEL}")),
        )
        .await
        .map_err(|_| DbError::Unavailable("LISTEN timed out".into()))??;
        Ok((client, rx))
    }

    /// Reads the change log since the last read, and drops what is older than
    /// [`CHANGES_KEPT`]. A change is read again within [`QUERY_LIMIT`] of the last read: a
    /// transaction that began before it (its `now()` is its start) may commit after it.
    async fn backstop(&self, since: &mut Option<f64>) {
        let from = *since;
        let margin = secs(QUERY_LIMIT);
        let kept = secs(CHANGES_KEPT);
        let read = self
            .db
            .with(move |c| async move {
                let now: f64 = c
                    .query_one("SELECT extract(epoch FROM now())::float8", &[])
                    .await?
                    .get(0);
                let Some(from) = from else {
                    return Ok((now, Vec::new()));
                };
                let names: Vec<String> = c
                    .query(
                        "SELECT DISTINCT name FROM account_changes \
                         WHERE at > to_timestamp($1) - make_interval(secs => $2)",
                        &[&from, &margin],
                    )
                    .await?
                    .iter()
                    .map(|r| r.get(0))
                    .collect();
                c.execute(
                    "DELETE FROM account_changes WHERE at < now() - make_interval(secs => $1)",
                    &[&kept],
                )
                .await?;
                Ok((now, names))
            })
            .await;
        match read {
            Ok((now, names)) => {
                *since = Some(now);
                if !names.is_empty() {
                    self.report(names, Noticed::Backstop).await;
                }
            }
            // The next tick tries again from the same point.
            Err(e) => log::warn!("accounts: cannot read the change log: {e}"),
        }
    }

    /// Tells `on_change` of each name, with whether its account is gone now.
    async fn report(&self, names: Vec<String>, noticed: Noticed) {
        let asked = names.clone();
        let gone = self
            .db
            .with(move |c| async move {
                Ok(c.query(
                    "SELECT n.name, a.name IS NULL OR a.disabled \
                     FROM unnest($1::text[]) AS n(name) \
                     LEFT JOIN accounts a ON a.name = n.name",
                    &[&asked],
                )
                .await?
                .iter()
                .map(|r| (r.get::<_, String>(0), r.get::<_, bool>(1)))
                .collect::<Vec<_>>())
            })
            .await;
        match gone {
            Ok(states) => {
                for (name, gone) in states {
                    log::debug!("accounts: {name} changed (gone: {gone}, by {noticed:?})");
                    (self.on_change)(AccountChange {
                        name,
                        gone,
                        noticed,
                    });
                }
            }
            // The backstop reads these again (they are within its window).
            Err(e) => log::warn!(
                "accounts: cannot read the state of {} changed accounts: {e}",
                names.len()
            ),
        }
    }
}

#[cfg(test)]
mod tests;
