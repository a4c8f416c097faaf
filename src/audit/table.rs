//! The third sink, in database mode: the same events batched into the `audit_log` table
//! (migrations/0004_audit.sql), and the query `ferryd log --database-url` runs over it.
//!
//! [`TableSink::write`] only appends to a bounded backlog and wakes a writer task on the
//! database runtime, so the [`AuditLog`](crate::actors::audit_log::AuditLog) actor never
//! waits for the database. The task inserts the backlog in order, one multi-row INSERT per
//! batch, and retries with backoff while the database is away; a full backlog drops its
//! oldest events (the local files have them) with a log line counting them.

use std::collections::VecDeque;
use std::sync::{Arc, Condvar, Mutex, MutexGuard, PoisonError};
use std::time::{Duration, Instant};

use time::OffsetDateTime;
use time::format_description::well_known::Rfc3339;
use tokio::sync::Notify;

use super::{AuditSink, Event, EventKind};
use crate::db::{Database, DbError, spawn_on_db};

/// Events kept for the table while the database is away.
pub const MAX_BACKLOG: usize = 100_000;
/// Events per INSERT.
const BATCH: usize = 500;
/// The first retry's wait; it doubles up to [`MAX_BACKOFF`].
const MIN_BACKOFF: Duration = Duration::from_millis(250);
/// The longest wait between retries.
const MAX_BACKOFF: Duration = Duration::from_secs(30);
/// How long [`AuditSink::flush`] (at shutdown) waits for the backlog to reach the table.
const FLUSH_LIMIT: Duration = Duration::from_secs(4);

/// The events the table still lacks, oldest first, each with its sequence number.
#[derive(Default)]
struct Backlog {
    events: VecDeque<(u64, Event)>,
    next_seq: u64,
    /// Dropped since the last count was logged.
    dropped: u64,
    /// The last insert failed for want of a database.
    failing: bool,
    /// The sink is gone: the task ends once it has nothing left or cannot write.
    closed: bool,
}

struct Shared {
    backlog: Mutex<Backlog>,
    cap: usize,
    /// Events arrived, or the sink closed.
    wake: Notify,
    /// A flush wants a retry now, or the sink closed: cuts a backoff short.
    hurry: Notify,
    /// The backlog shrank (or an insert failed): for a waiting flush.
    progress: Condvar,
}

impl Shared {
    fn lock(&self) -> MutexGuard<'_, Backlog> {
        // A panic elsewhere while holding the lock leaves a consistent queue behind.
        self.backlog.lock().unwrap_or_else(PoisonError::into_inner)
    }
}

/// Batches events into `audit_log`; see the module documentation.
pub struct TableSink {
    shared: Arc<Shared>,
    /// A flush timed out with the database away: later flushes do not wait again until
    /// an insert succeeds.
    gave_up: bool,
}

impl TableSink {
    /// A sink over `db` with the default backlog bound, its writer task started on the
    /// database runtime.
    pub fn start(db: Arc<Database>) -> TableSink {
        TableSink::with_cap(db, MAX_BACKLOG)
    }

    /// As [`TableSink::start`], keeping at most `cap` events while the database is away.
    pub fn with_cap(db: Arc<Database>, cap: usize) -> TableSink {
        let shared = Arc::new(Shared {
            backlog: Mutex::new(Backlog::default()),
            cap: cap.max(1),
            wake: Notify::new(),
            hurry: Notify::new(),
            progress: Condvar::new(),
        });
        spawn_on_db(writer(db, Arc::clone(&shared)));
        TableSink {
            shared,
            gave_up: false,
        }
    }

    /// Events not yet in the table.
    pub fn backlog(&self) -> usize {
        self.shared.lock().events.len()
    }
}

impl std::fmt::Debug for TableSink {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TableSink")
            .field("backlog", &self.backlog())
            .finish()
    }
}

impl AuditSink for TableSink {
    /// Appends to the backlog; never fails (the writer task retries).
    fn write(&mut self, events: &[Event]) -> std::io::Result<()> {
        let mut backlog = self.shared.lock();
        for event in events {
            let seq = backlog.next_seq;
            backlog.next_seq += 1;
            backlog.events.push_back((seq, event.clone()));
        }
        let over = backlog.events.len().saturating_sub(self.shared.cap);
        if over > 0 {
            if backlog.dropped == 0 {
                log::error!(
                    "audit table: backlog full ({} events, the database is away): dropping \
                     the oldest; audit.jsonl and xferlog keep them",
                    self.shared.cap
                );
            }
            backlog.events.drain(..over);
            backlog.dropped += over as u64;
        }
        drop(backlog);
        self.shared.wake.notify_one();
        Ok(())
    }

    /// Waits up to a few seconds for the backlog to reach the table (shutdown); what is left
    /// is logged, and kept for the writer task.
    fn flush(&mut self) -> std::io::Result<()> {
        let deadline = Instant::now() + FLUSH_LIMIT;
        let mut backlog = self.shared.lock();
        if backlog.events.is_empty() || (self.gave_up && backlog.failing) {
            return Ok(());
        }
        self.shared.wake.notify_one();
        self.shared.hurry.notify_one();
        while !backlog.events.is_empty() {
            let now = Instant::now();
            if now >= deadline {
                break;
            }
            backlog = self
                .shared
                .progress
                .wait_timeout(backlog, deadline - now)
                .unwrap_or_else(PoisonError::into_inner)
                .0;
        }
        self.gave_up = !backlog.events.is_empty();
        if self.gave_up {
            log::warn!(
                "audit table: {} event(s) not in the database yet (audit.jsonl and xferlog \
                 have them)",
                backlog.events.len()
            );
        }
        Ok(())
    }

    fn name(&self) -> String {
        "audit table".to_owned()
    }
}

impl Drop for TableSink {
    fn drop(&mut self) {
        self.shared.lock().closed = true;
        self.shared.wake.notify_one();
        self.shared.hurry.notify_one();
    }
}

/// Inserts the backlog in order for as long as the sink lives (and, once it is closed, until
/// the backlog is empty or the database fails).
async fn writer(db: Arc<Database>, shared: Arc<Shared>) {
    let mut backoff = MIN_BACKOFF;
    loop {
        let batch: Vec<(u64, Event)> = {
            let backlog = shared.lock();
            if backlog.events.is_empty() && backlog.closed {
                return;
            }
            backlog.events.iter().take(BATCH).cloned().collect()
        };
        let Some(&(last, _)) = batch.last() else {
            shared.wake.notified().await;
            continue;
        };
        let events: Vec<Event> = batch.into_iter().map(|(_, event)| event).collect();
        let outcome = insert(&db, events).await;
        if !settle(&shared, outcome, last) {
            return;
        }
        if shared.lock().failing {
            // A flush (or the sink closing) cuts the wait short.
            tokio::select! {
                () = tokio::time::sleep(backoff) => {}
                () = shared.hurry.notified() => {}
            }
            backoff = (backoff * 2).min(MAX_BACKOFF);
        } else {
            backoff = MIN_BACKOFF;
        }
    }
}

/// Takes an insert's outcome into the backlog: the batch up to `last` leaves it unless the
/// database was away. False when the writer should end (closed, and the database away).
fn settle(shared: &Shared, outcome: Result<Result<(), String>, DbError>, last: u64) -> bool {
    let mut backlog = shared.lock();
    shared.progress.notify_all();
    match outcome {
        Ok(rejected) => {
            if let Err(why) = rejected {
                log::error!(
                    "audit table: the database refused a batch of events ({why}); skipped \
                     (audit.jsonl and xferlog have them)"
                );
            }
            // Drops may have taken the front meanwhile: remove by number, not count.
            while backlog.events.front().is_some_and(|(seq, _)| *seq <= last) {
                backlog.events.pop_front();
            }
            if backlog.failing {
                log::info!("audit table: the database is back");
                backlog.failing = false;
            }
            if backlog.dropped > 0 {
                log::warn!(
                    "audit table: {} oldest event(s) dropped while the database was away; \
                     audit.jsonl and xferlog have them",
                    backlog.dropped
                );
                backlog.dropped = 0;
            }
            true
        }
        Err(e) => {
            if !backlog.failing {
                log::warn!(
                    "audit table: {e}; {} event(s) kept, retrying",
                    backlog.events.len()
                );
                backlog.failing = true;
            }
            if backlog.closed {
                log::warn!(
                    "audit table: {} event(s) not written to the database at shutdown \
                     (audit.jsonl and xferlog have them)",
                    backlog.events.len()
                );
                return false;
            }
            true
        }
    }
}

/// The INSERT of one batch: the columns as arrays, unnested in order.
const INSERT: &str = "INSERT INTO audit_log (time, node, session, peer, user_name, kind, \
     command, path, target, bytes, duration_ms, code, ascii, complete, count, event) \
     SELECT to_timestamp(t), n, s, p, u, k, c, pa, ta, b, d, co, a, cm, cn, e::jsonb \
     FROM unnest($1::float8[], $2::text[], $3::int8[], $4::text[], $5::text[], $6::text[], \
                 $7::text[], $8::text[], $9::text[], $10::int8[], $11::int8[], $12::int4[], \
                 $13::bool[], $14::bool[], $15::int8[], $16::text[]) \
          WITH ORDINALITY AS x(t, n, s, p, u, k, c, pa, ta, b, d, co, a, cm, cn, e, ord) \
     ORDER BY ord";

/// Inserts `events`: `Ok(Err(why))` when the database refused them as data (a batch that
/// would fail every time), `Err` when it is away.
async fn insert(db: &Database, events: Vec<Event>) -> Result<Result<(), String>, DbError> {
    db.with(move |client| async move {
        let rows: Vec<Event> = events.iter().map(scrubbed).collect();
        let json = rows
            .iter()
            .map(serde_json::to_string)
            .collect::<Result<Vec<String>, _>>()
            .map_err(|e| DbError::Unavailable(e.to_string()))?;
        let time: Vec<f64> = rows.iter().map(|e| epoch(&e.time)).collect();
        let node: Vec<String> = rows
            .iter()
            .map(|e| e.node.clone().unwrap_or_default())
            .collect();
        let session: Vec<i64> = rows.iter().map(|e| signed(e.session)).collect();
        let peer: Vec<&str> = rows.iter().map(|e| e.peer.as_str()).collect();
        let user: Vec<Option<&str>> = rows.iter().map(|e| e.user.as_deref()).collect();
        let kind: Vec<&str> = rows.iter().map(|e| e.event.as_str()).collect();
        let command: Vec<Option<&str>> = rows.iter().map(|e| e.command.as_deref()).collect();
        let path: Vec<Option<&str>> = rows.iter().map(|e| e.path.as_deref()).collect();
        let target: Vec<Option<&str>> = rows.iter().map(|e| e.target.as_deref()).collect();
        let bytes: Vec<Option<i64>> = rows.iter().map(|e| e.bytes.map(signed)).collect();
        let duration: Vec<Option<i64>> = rows.iter().map(|e| e.duration_ms.map(signed)).collect();
        let code: Vec<Option<i32>> = rows.iter().map(|e| e.code.map(i32::from)).collect();
        let ascii: Vec<Option<bool>> = rows.iter().map(|e| e.ascii).collect();
        let complete: Vec<Option<bool>> = rows.iter().map(|e| e.complete).collect();
        let count: Vec<Option<i64>> = rows.iter().map(|e| e.count.map(signed)).collect();
        let done = client
            .execute(
                INSERT,
                &[
                    &time, &node, &session, &peer, &user, &kind, &command, &path, &target, &bytes,
                    &duration, &code, &ascii, &complete, &count, &json,
                ],
            )
            .await;
        match done {
            Ok(_) => Ok(Ok(())),
            Err(e) if is_data_error(&e) => Ok(Err(DbError::from(e).to_string())),
            Err(e) => Err(DbError::from(e)),
        }
    })
    .await
}

/// Whether the database refused the statement for its values (SQLSTATE classes 22, data
/// exceptions, and 23, constraints): retrying the same batch would fail the same way.
fn is_data_error(e: &tokio_postgres::Error) -> bool {
    e.as_db_error()
        .is_some_and(|db| matches!(&db.code().code()[..2], "22" | "23"))
}

/// `event` with NUL characters replaced (PostgreSQL's text and jsonb refuse them; a client
/// can put them in a path).
fn scrubbed(event: &Event) -> Event {
    let clean = |s: &str| s.replace('\0', "\u{fffd}");
    let opt = |s: &Option<String>| s.as_deref().map(clean);
    Event {
        time: clean(&event.time),
        node: opt(&event.node),
        peer: clean(&event.peer),
        user: opt(&event.user),
        command: opt(&event.command),
        path: opt(&event.path),
        target: opt(&event.target),
        ..event.clone()
    }
}

/// The event's time in seconds since the epoch; now if it does not parse.
fn epoch(time: &str) -> f64 {
    let t = OffsetDateTime::parse(time, &Rfc3339).unwrap_or_else(|_| OffsetDateTime::now_utc());
    t.unix_timestamp_nanos() as f64 / 1e9
}

fn signed(n: u64) -> i64 {
    i64::try_from(n).unwrap_or(i64::MAX)
}

/// Which events [`read`] returns.
#[derive(Debug, Clone, Default)]
pub struct TableQuery {
    /// Only this user's.
    pub user: Option<String>,
    /// Only this kind.
    pub kind: Option<EventKind>,
    /// Only this node's.
    pub node: Option<String>,
    /// Only the last N.
    pub tail: Option<usize>,
}

/// The events of every node that match `query`, oldest first (by time, then in each node's
/// order), and how many stored records did not parse as events.
///
/// # Errors
/// [`DbError::Unavailable`] when the database cannot be read.
pub async fn read(db: &Database, query: TableQuery) -> Result<(Vec<Event>, usize), DbError> {
    db.with(move |client| async move {
        let limit = query.tail.map(|n| i64::try_from(n).unwrap_or(i64::MAX));
        let kind = query.kind.map(EventKind::as_str);
        let rows = client
            .query(
                "SELECT event::text FROM audit_log \
                 WHERE ($1::text IS NULL OR user_name = $1) \
                   AND ($2::text IS NULL OR kind = $2) \
                   AND ($3::text IS NULL OR node = $3) \
                 ORDER BY time DESC, id DESC LIMIT $4",
                &[&query.user, &kind, &query.node, &limit],
            )
            .await?;
        let mut skipped = 0;
        let mut events: Vec<Event> = rows
            .iter()
            .filter_map(|row| {
                let parsed = serde_json::from_str::<Event>(row.get(0)).ok();
                skipped += usize::from(parsed.is_none());
                parsed
            })
            .collect();
        events.reverse();
        Ok((events, skipped))
    })
    .await
}

#[cfg(test)]
mod tests;
