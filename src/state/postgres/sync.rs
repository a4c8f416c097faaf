//! The background task of a [`PgState`](super::PgState), on the database runtime: it writes
//! the outbox and this node's counts, reads the other nodes' rows into the view, sweeps the
//! rows of dead instances, and listens for bans. One failing round is logged when the outage
//! starts and when it ends, not per call; what could not be written stays queued.

use std::net::IpAddr;
use std::sync::atomic::Ordering;
use std::sync::{Arc, Weak};
use std::time::Duration;

use tokio_postgres::AsyncMessage;

use super::{Count, Inner, Op, big, lock};
use crate::db::{DbError, QUERY_LIMIT, secs, spawn_on_db};
use crate::state::local::REGISTRATION_WINDOW;

/// The channel bans are announced on: the payload is "SECONDS ADDRESS".
const CHANNEL: &str = "ferry_bans";

/// Starts the task; it ends once `inner` is gone.
pub(super) fn start(inner: &Arc<Inner>) {
    let period = inner.db.lease() / 3;
    spawn_on_db(run(Arc::downgrade(inner), period));
}

async fn run(weak: Weak<Inner>, period: Duration) {
    let mut listener: Option<tokio_postgres::Client> = None;
    let mut due = tokio::time::Instant::now();
    loop {
        let Some(inner) = weak.upgrade() else {
            return;
        };
        let now = tokio::time::Instant::now();
        let refresh = now >= due;
        if refresh {
            due = now + period;
        }
        let round = tokio::time::timeout(QUERY_LIMIT, round(&weak, &inner, &mut listener, refresh))
            .await
            .unwrap_or_else(|_| Err(DbError::Unavailable("the database timed out".into())));
        let down = round.is_err();
        inner.outage(round);
        if down {
            // No retries faster than the refresh while the database is away.
            tokio::time::sleep_until(due).await;
        } else {
            tokio::select! {
                () = inner.wake.notified() => {}
                () = tokio::time::sleep_until(due) => {}
            }
        }
    }
}

/// One round: the listener, the writes, and (when due) the refresh and the sweep.
async fn round(
    weak: &Weak<Inner>,
    inner: &Arc<Inner>,
    listener: &mut Option<tokio_postgres::Client>,
    refresh: bool,
) -> Result<(), DbError> {
    if listener
        .as_ref()
        .is_none_or(tokio_postgres::Client::is_closed)
    {
        *listener = None;
        *listener = Some(listen(weak, inner).await?);
    }
    write_counts(inner).await?;
    loop {
        let next = lock(&inner.outbox).front().cloned();
        let Some(op) = next else {
            break;
        };
        apply(inner, op).await?;
        lock(&inner.outbox).pop_front();
    }
    if refresh {
        read_others(inner).await?;
        sweep(inner).await?;
    }
    Ok(())
}

/// A connection of its own that LISTENs for bans.
async fn listen(weak: &Weak<Inner>, inner: &Arc<Inner>) -> Result<tokio_postgres::Client, DbError> {
    let weak = weak.clone();
    let client = inner
        .db
        .dedicated(move |message| {
            let AsyncMessage::Notification(note) = message else {
                return;
            };
            let ban = note.payload().split_once(' ').and_then(|(secs, ip)| {
                Some((secs.parse::<f64>().ok()?, ip.parse::<IpAddr>().ok()?))
            });
            match (ban, weak.upgrade()) {
                (Some((secs, ip)), Some(inner)) if secs.is_finite() && secs > 0.0 => {
                    inner.remote_ban(ip, Duration::from_secs_f64(secs));
                }
                (None, _) => log::warn!("shared state: unreadable ban notice {:?}", note.payload()),
                _ => {}
            }
        })
        .await?;
    client.batch_execute(&format!("LISTEN {CHANNEL}")).await?;
    Ok(client)
}

/// Writes this node's changed counts.
async fn write_counts(inner: &Arc<Inner>) -> Result<(), DbError> {
    let changed: Vec<(Count, String, i32)> = {
        let mut view = lock(&inner.view);
        let dirty = std::mem::take(&mut view.dirty);
        dirty
            .into_iter()
            .map(|entry| {
                let n = view.own.get(&entry).copied().unwrap_or(0);
                (entry.0, entry.1, i32::try_from(n).unwrap_or(i32::MAX))
            })
            .collect()
    };
    if changed.is_empty() {
        return Ok(());
    }
    let instance = inner.db.instance().to_owned();
    let rows = changed.clone();
    let written = inner
        .db
        .with(move |client| async move {
            for (kind, key, n) in &rows {
                if *n == 0 {
                    client
                        .execute(
                            "DELETE FROM state_counts \
                             WHERE instance = $1 AND kind = $2 AND key = $3",
                            &[&instance, &kind.name(), key],
                        )
                        .await?;
                } else {
                    client
                        .execute(
                            "INSERT INTO state_counts (instance, kind, key, n) \
                             VALUES ($1, $2, $3, $4) ON CONFLICT (instance, kind, key) \
                             DO UPDATE SET n = EXCLUDED.n",
                            &[&instance, &kind.name(), key, n],
                        )
                        .await?;
                }
            }
            Ok(())
        })
        .await;
    if written.is_err() {
        let mut view = lock(&inner.view);
        view.dirty
            .extend(changed.into_iter().map(|(kind, key, _)| (kind, key)));
    }
    written
}

/// Writes one change of the outbox.
async fn apply(inner: &Arc<Inner>, op: Op) -> Result<(), DbError> {
    let instance = inner.db.instance().to_owned();
    let window = secs(inner.ban_window);
    let ban_after = i64::try_from(inner.ban_after).unwrap_or(i64::MAX);
    let ban_for = inner.ban_for;
    inner
        .db
        .with(move |client| async move {
            match op {
                Op::Failure { ip, at } => {
                    let ip = ip.to_string();
                    client
                        .execute(
                            "INSERT INTO state_failures (ip, instance, at) VALUES ($1, $2, $3)",
                            &[&ip, &instance, &at],
                        )
                        .await?;
                    if ban_after == 0 {
                        return Ok(());
                    }
                    let recent: i64 = client
                        .query_one(
                            "SELECT count(*) FROM state_failures \
                             WHERE ip = $1 AND at > now() - make_interval(secs => $2)",
                            &[&ip, &window],
                        )
                        .await?
                        .get(0);
                    if recent >= ban_after {
                        ban(&client, &ip, ban_for).await?;
                    }
                }
                Op::Ban { ip, length } => ban(&client, &ip.to_string(), length).await?,
                Op::Registration { ip, seq, at } => {
                    client
                        .execute(
                            "INSERT INTO state_registrations (ip, instance, seq, at) \
                             VALUES ($1, $2, $3, $4) ON CONFLICT DO NOTHING",
                            &[&ip.to_string(), &instance, &seq, &at],
                        )
                        .await?;
                }
                Op::GiveBack { seq } => {
                    client
                        .execute(
                            "DELETE FROM state_registrations WHERE instance = $1 AND seq = $2",
                            &[&instance, &seq],
                        )
                        .await?;
                }
                Op::Unreserve { user, less } => {
                    client
                        .execute(
                            "UPDATE quota_reservations \
                               SET bytes = greatest(bytes - $3, 0), \
                                   files = greatest(files - $4, 0) \
                             WHERE instance = $1 AND user_name = $2",
                            &[&instance, &user, &big(less.bytes), &big(less.files)],
                        )
                        .await?;
                    client
                        .execute(
                            "DELETE FROM quota_reservations WHERE instance = $1 \
                               AND user_name = $2 AND bytes = 0 AND files = 0",
                            &[&instance, &user],
                        )
                        .await?;
                }
                Op::Unlock { kind, key, token } => {
                    client
                        .execute(
                            "DELETE FROM state_locks WHERE kind = $1 AND key = $2 \
                               AND instance = $3 AND token = $4",
                            &[&kind.name(), &key, &instance, &token],
                        )
                        .await?;
                }
            }
            Ok(())
        })
        .await
}

/// Bans `ip` for `length` in the database (a longer ban already there stays), forgets its
/// failures, and tells every node.
async fn ban(client: &tokio_postgres::Client, ip: &str, length: Duration) -> Result<(), DbError> {
    let length = secs(length);
    client
        .execute(
            "INSERT INTO state_bans (ip, until) VALUES ($1, now() + make_interval(secs => $2)) \
             ON CONFLICT (ip) DO UPDATE SET until = greatest(state_bans.until, EXCLUDED.until)",
            &[&ip, &length],
        )
        .await?;
    client
        .execute("DELETE FROM state_failures WHERE ip = $1", &[&ip])
        .await?;
    client
        .execute(
            "SELECT pg_notify($1, $2)",
            &[&CHANNEL, &format!("{length} {ip}")],
        )
        .await?;
    Ok(())
}

/// Reads the other live instances' counts, failures, registrations, and the bans.
async fn read_others(inner: &Arc<Inner>) -> Result<(), DbError> {
    let instance = inner.db.instance().to_owned();
    let lease = secs(inner.db.lease());
    let window = secs(inner.ban_window);
    let hour = secs(REGISTRATION_WINDOW);
    let (counts, failures, registrations, bans) = inner
        .db
        .with(move |client| async move {
            let counts = client
                .query(
                    "SELECT c.kind, c.key, sum(c.n)::bigint FROM state_counts c \
                     JOIN nodes n ON n.instance = c.instance \
                       AND n.heartbeat_at >= now() - make_interval(secs => $2) \
                     WHERE c.instance <> $1 GROUP BY c.kind, c.key",
                    &[&instance, &lease],
                )
                .await?;
            let per_ip = |table: &str, window: f64| {
                let sql = format!(
                    "SELECT ip, count(*) FROM {table} WHERE instance <> $1 \
                     AND at > now() - make_interval(secs => $2) GROUP BY ip"
                );
                let client = &client;
                let instance = &instance;
                async move { client.query(&sql, &[instance, &window]).await }
            };
            let failures = per_ip("state_failures", window).await?;
            let registrations = per_ip("state_registrations", hour).await?;
            let bans = client
                .query(
                    "SELECT ip, extract(epoch FROM until - now())::float8 FROM state_bans \
                     WHERE until > now()",
                    &[],
                )
                .await?;
            Ok((counts, failures, registrations, bans))
        })
        .await?;
    let per_ip = |rows: Vec<tokio_postgres::Row>| {
        rows.iter()
            .filter_map(|row| {
                let ip = row.get::<_, &str>(0).parse::<IpAddr>().ok()?;
                Some((ip, usize::try_from(row.get::<_, i64>(1)).unwrap_or(0)))
            })
            .collect()
    };
    let bans: Vec<(IpAddr, Duration)> = bans
        .iter()
        .filter_map(|row| {
            let ip = row.get::<_, &str>(0).parse::<IpAddr>().ok()?;
            let left = row.get::<_, f64>(1);
            (left.is_finite() && left > 0.0).then(|| (ip, Duration::from_secs_f64(left)))
        })
        .collect();
    {
        let mut view = lock(&inner.view);
        view.others = counts
            .iter()
            .filter_map(|row| {
                let kind = Count::parse(row.get(0))?;
                let n = usize::try_from(row.get::<_, i64>(2)).unwrap_or(0);
                Some(((kind, row.get::<_, String>(1)), n))
            })
            .collect();
        view.other_failures = per_ip(failures);
        view.other_registrations = per_ip(registrations);
    }
    for (ip, left) in bans {
        inner.remote_ban(ip, left);
    }
    Ok(())
}

/// Deletes what dead instances held (their reservations go back with it) and rows past
/// their windows.
async fn sweep(inner: &Arc<Inner>) -> Result<(), DbError> {
    let lease = secs(inner.db.lease());
    let window = secs(inner.ban_window);
    let hour = secs(REGISTRATION_WINDOW);
    let swept = inner
        .db
        .with(move |client| async move {
            let mut swept = 0;
            for table in ["quota_reservations", "state_locks", "state_counts"] {
                let sql = format!(
                    "DELETE FROM {table} t WHERE NOT EXISTS (SELECT 1 FROM nodes n \
                     WHERE n.instance = t.instance \
                       AND n.heartbeat_at >= now() - make_interval(secs => $1))"
                );
                swept += client.execute(&sql, &[&lease]).await?;
            }
            client
                .execute(
                    "DELETE FROM state_failures WHERE at < now() - make_interval(secs => $1)",
                    &[&window],
                )
                .await?;
            client
                .execute(
                    "DELETE FROM state_registrations \
                     WHERE at < now() - make_interval(secs => $1)",
                    &[&hour],
                )
                .await?;
            client
                .execute("DELETE FROM state_bans WHERE until < now()", &[])
                .await?;
            Ok(swept)
        })
        .await?;
    if swept > 0 {
        log::info!("shared state: swept {swept} rows of dead nodes");
    }
    Ok(())
}

impl Inner {
    /// A ban from the database: into the view, and the watchers are told when it is new here.
    fn remote_ban(&self, ip: IpAddr, length: Duration) {
        let known = lock(&self.view)
            .bans
            .get(&ip)
            .is_some_and(|until| *until > std::time::Instant::now());
        self.ban(ip, length);
        if !known {
            let watchers = lock(&self.ban_watchers.0).clone();
            for watcher in watchers {
                watcher(ip);
            }
        }
    }

    /// Logs the start and the end of an outage, once each.
    fn outage(&self, round: Result<(), DbError>) {
        match round {
            Ok(()) => {
                if self.down.swap(false, Ordering::Relaxed) {
                    log::info!(
                        "shared state: the database is back; this node's changes are written"
                    );
                }
            }
            Err(e) => {
                if !self.down.swap(true, Ordering::Relaxed) {
                    log::error!(
                        "shared state: {e}; answering from this node's view until it is back \
                         (changes wait, write locks and quota reservations are refused)"
                    );
                }
            }
        }
    }
}
