//! The background task of a [`PgState`](super::PgState), on the database runtime: it writes
//! the outbox and this node's counts, reads the other nodes' rows into the view, sweeps the
//! rows of dead instances, and listens for bans. One failing round is logged when the outage
//! starts and when it ends, not per call; what could not be written stays queued. After this
//! node's own heartbeat had a gap longer than the lease, it writes what it holds again.

use std::net::IpAddr;
use std::sync::atomic::Ordering;
use std::sync::{Arc, Weak};
use std::time::Duration;

use tokio_postgres::AsyncMessage;

use super::{Count, Inner, LockKind, Op, lock, write_reservation};
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
    let mut rejoined = 0;
    loop {
        let Some(inner) = weak.upgrade() else {
            return;
        };
        let now = tokio::time::Instant::now();
        let refresh = now >= due;
        if refresh {
            due = now + period;
            inner.forget_expired();
        }
        let back = inner.db.rejoined();
        if back != rejoined {
            rejoined = back;
            inner.reassert();
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
        if inner.db.settled() {
            sweep(inner).await?;
        }
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
    let limits = inner.limits.get();
    let window = secs(limits.ban_window);
    let ban_after = i64::try_from(limits.ban_after).unwrap_or(i64::MAX);
    let ban_for = limits.ban_for;
    // What is held now is kept by a prune (a later taking has a larger token than it covers).
    let held: Vec<i64> = match op {
        Op::Prune { .. } => lock(&inner.held).values().map(|held| held.token).collect(),
        _ => Vec::new(),
    };
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
                Op::Reserve {
                    user,
                    held,
                    version,
                } => write_reservation(&client, &instance, &user, held, version).await?,
                Op::Unlock { kind, key, token } => {
                    client
                        .execute(
                            "DELETE FROM state_locks WHERE kind = $1 AND key = $2 \
                               AND instance = $3 AND token = $4",
                            &[&kind.name(), &key, &instance, &token],
                        )
                        .await?;
                }
                Op::Reclaim { claims } => {
                    for (key, token) in claims {
                        let kept = client
                            .execute(
                                "INSERT INTO state_locks (kind, key, instance, token) \
                                 VALUES ($1, $2, $3, $4) ON CONFLICT (kind, key) DO UPDATE \
                                   SET token = EXCLUDED.token \
                                   WHERE state_locks.instance = EXCLUDED.instance",
                                &[&LockKind::Claim.name(), &key, &instance, &token],
                            )
                            .await?;
                        if kept == 0 {
                            // Its upload's commit checks the quota again without the credit.
                            log::warn!(
                                "shared state: a quota claim of this node was taken by another \
                                 node while this one was away"
                            );
                        }
                    }
                }
                Op::Prune { upto } => {
                    client
                        .execute(
                            "DELETE FROM state_locks WHERE instance = $1 AND token <= $2 \
                               AND NOT (token = ANY($3))",
                            &[&instance, &upto, &held],
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
    let window = secs(inner.limits.get().ban_window);
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
/// their windows; never this node's own, whatever its heartbeat says.
async fn sweep(inner: &Arc<Inner>) -> Result<(), DbError> {
    let instance = inner.db.instance().to_owned();
    let lease = secs(inner.db.lease());
    let window = secs(inner.limits.get().ban_window);
    let hour = secs(REGISTRATION_WINDOW);
    let swept = inner
        .db
        .with(move |client| async move {
            let mut swept = 0;
            for table in ["quota_reservations", "state_locks", "state_counts"] {
                let sql = format!(
                    "DELETE FROM {table} t WHERE t.instance <> $2 AND NOT EXISTS ( \
                     SELECT 1 FROM nodes n WHERE n.instance = t.instance \
                       AND n.heartbeat_at >= now() - make_interval(secs => $1))"
                );
                swept += client.execute(&sql, &[&lease, &instance]).await?;
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
    /// After a gap in this node's heartbeat longer than the lease, the other nodes may have
    /// swept its rows: its counts, reservations and quota claims are written again (its
    /// write locks are lost, see [`Lease::held`](crate::state::Lease::held)).
    fn reassert(&self) {
        log::warn!(
            "shared state: this node's heartbeat was away for longer than the lease; writing \
             its counts, reservations and quota claims again (write locks taken before are lost)"
        );
        {
            let mut view = lock(&self.view);
            let own: Vec<_> = view.own.keys().cloned().collect();
            view.dirty.extend(own);
        }
        let grants: Vec<_> = lock(&self.grants)
            .iter()
            .map(|(user, grant)| (user.clone(), Arc::clone(grant)))
            .collect();
        for (user, grant) in grants {
            let grant = lock(&grant);
            self.queue_reservation(&user, &grant);
        }
        let claims: Vec<_> = lock(&self.held)
            .iter()
            .filter(|((kind, _), _)| *kind == LockKind::Claim)
            .map(|((_, key), held)| (key.clone(), held.token))
            .collect();
        if !claims.is_empty() {
            self.queue(Op::Reclaim { claims });
        }
    }

    /// Forgets bans, failures and registrations past their windows (an address seen once
    /// must not stay in memory for good).
    fn forget_expired(&self) {
        let now = std::time::Instant::now();
        let mut view = lock(&self.view);
        view.bans.retain(|_, until| *until > now);
        let window = self.limits.get().ban_window;
        view.failures.retain(|_, times| {
            times
                .back()
                .is_some_and(|at| now.duration_since(*at) < window)
        });
        view.registrations.retain(|_, times| {
            times
                .back()
                .is_some_and(|(at, _)| now.duration_since(*at) < REGISTRATION_WINDOW)
        });
    }

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
                    let dropped = self.dropped.swap(0, Ordering::Relaxed);
                    log::info!(
                        "shared state: the database is back; this node's changes are written \
                         ({dropped} failed logins, bans and registrations were dropped as the \
                         outbox was full)"
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
