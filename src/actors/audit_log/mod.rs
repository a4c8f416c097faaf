//! The audit trail: [`Event`], the [`AuditLog`] actor that batches them, and its sinks
//! ([`JsonLinesSink`] for `audit.jsonl`, [`XferlogSink`] for the wu-ftpd `xferlog`).
//!
//! Sessions only `do_send` a [`Record`]; the actor lives on its own `Arbiter`, so a slow disk
//! never stalls a session thread. Nothing is dropped silently: failed writes are retried on the
//! next tick and every loss (past the pending cap) is logged with a count.
//!
//! What a client can make the server write is bounded here, in one place ([`AuditPolicy`]):
//! noise (commands before login, malformed and unknown commands, refused connections, data
//! connections from a wrong address, refused registrations) is written one by one only up to a
//! budget per address and in all per [`WINDOW`]; the rest is counted into one `suppressed`
//! line per address and kind. The stderr line of a noise event is written exactly when its
//! audit line is. Both files rotate at a size (`audit.jsonl.1` ..), and below a free-space
//! floor only forensic events are written. Forensic events (sessions, logins, registrations,
//! transfers, file operations, bans) are never throttled.
//!
//! The events, sinks and policy are in [`crate::audit`]; the actor is here.

pub use crate::audit::{
    AuditPolicy, AuditSink, Event, EventKind, JsonLinesSink, Rotation, TableSink, WINDOW,
    XferlogSink, xferlog_line,
};

use std::collections::VecDeque;
use std::fs;
use std::io;
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use actix::{Actor, Addr, Arbiter, AsyncContext, Context, Handler, Message};

use crate::audit::metrics::Metrics;
use crate::audit::{Floor, SUMMARY_LINES, Throttle};
use crate::db::Database;

/// Events buffered before a write is forced ahead of the next tick.
const BATCH: usize = 256;
/// How often buffered events are written.
const TICK: Duration = Duration::from_secs(1);
/// Pending events kept while sinks fail; past this the oldest are dropped (and logged).
const MAX_PENDING: usize = 100_000;

/// Records one event; fire-and-forget (`do_send`).
#[derive(Debug, Message)]
#[rtype(result = "()")]
pub struct Record(pub Event);

/// Writes and fsyncs everything buffered; used at shutdown. Errors are logged, not returned.
#[derive(Debug, Message)]
#[rtype(result = "()")]
pub struct Flush;

/// A sink and how many of the pending events it has already written.
struct SinkState {
    sink: Box<dyn AuditSink>,
    written: usize,
}

/// Buffers [`Record`]s and writes them to every sink in batches: when `BATCH` are buffered,
/// every second, on [`Flush`] and when stopped. Runs on its own `Arbiter`.
pub struct AuditLog {
    sinks: Vec<SinkState>,
    /// Events not yet written by every sink, oldest first.
    pending: VecDeque<Event>,
    /// The last write failed: wait for the tick instead of retrying on every record.
    failing: bool,
    max_pending: usize,
    throttle: Throttle,
    floor: Option<Floor>,
    /// Stamped on every event that has no node yet.
    node: Option<String>,
    /// Counts every event as it arrives, and sees the backlog.
    metrics: Option<Arc<Metrics>>,
}

impl AuditLog {
    /// Creates `log_dir` with `audit.jsonl` and `xferlog` and starts the actor on a new
    /// `Arbiter`; every event is stamped with `node`, and with a `database` also goes to its
    /// `audit_log` table. Must be called inside a running actix `System`.
    ///
    /// # Errors
    /// The directory or a file cannot be created.
    ///
    /// # Panics
    /// Outside a running `System` (as `Arbiter::new` does).
    pub fn start(
        log_dir: &Path,
        policy: AuditPolicy,
        node: &str,
        database: Option<Arc<Database>>,
        metrics: Option<Arc<Metrics>>,
    ) -> io::Result<Addr<AuditLog>> {
        fs::create_dir_all(log_dir)?;
        let mut sinks: Vec<Box<dyn AuditSink>> = vec![
            Box::new(JsonLinesSink::open(
                &log_dir.join("audit.jsonl"),
                policy.rotation,
            )?),
            Box::new(XferlogSink::open(
                &log_dir.join("xferlog"),
                policy.rotation,
            )?),
        ];
        if let Some(db) = database {
            sinks.push(Box::new(TableSink::start(db)));
        }
        let floor = (policy.min_free_bytes > 0).then(|| Floor {
            dir: log_dir.to_owned(),
            min_free: policy.min_free_bytes,
            low: false,
            held: 0,
        });
        Ok(AuditLog::spawn(
            sinks,
            policy,
            floor,
            Some(node.to_owned()),
            metrics,
        ))
    }

    /// Starts the actor over the given sinks on a new `Arbiter` (tests, other back ends).
    ///
    /// # Panics
    /// Outside a running `System` (as `Arbiter::new` does).
    pub fn with_sinks(sinks: Vec<Box<dyn AuditSink>>, policy: AuditPolicy) -> Addr<AuditLog> {
        AuditLog::spawn(sinks, policy, None, None, None)
    }

    fn spawn(
        sinks: Vec<Box<dyn AuditSink>>,
        policy: AuditPolicy,
        floor: Option<Floor>,
        node: Option<String>,
        metrics: Option<Arc<Metrics>>,
    ) -> Addr<AuditLog> {
        let arbiter = Arbiter::new();
        AuditLog::start_in_arbiter(&arbiter.handle(), move |_| {
            let mut log = AuditLog::new(sinks, MAX_PENDING, policy);
            log.floor = floor;
            log.node = node;
            log.metrics = metrics;
            log
        })
    }

    fn new(sinks: Vec<Box<dyn AuditSink>>, max_pending: usize, policy: AuditPolicy) -> AuditLog {
        AuditLog {
            sinks: sinks
                .into_iter()
                .map(|sink| SinkState { sink, written: 0 })
                .collect(),
            pending: VecDeque::new(),
            failing: false,
            max_pending,
            throttle: Throttle::new(policy.burst_per_address, policy.burst_total),
            floor: None,
            node: None,
            metrics: None,
        }
    }

    /// Takes one recorded event through the noise budget and the free-space floor.
    fn record(&mut self, event: Event) {
        if let Some(metrics) = &self.metrics {
            metrics.observe(&event);
        }
        let low = self.floor.as_ref().is_some_and(|floor| floor.low);
        if low && event.is_anonymous_session() {
            self.throttle.hold(&event);
            return;
        }
        if event.is_noise() {
            if !self.throttle.admit(&event) {
                return;
            }
            event.log_line();
        }
        if let Some(floor) = &mut self.floor
            && floor.low
            && !event.is_forensic()
        {
            floor.held += 1;
            return;
        }
        self.push(event);
    }

    /// Writes the summaries of what the budgets and the floor held back.
    fn summarise(&mut self) {
        let mut summaries = self.throttle.close_window();
        summaries.extend(self.floor.as_mut().and_then(Floor::summary));
        let quiet = summaries.len().saturating_sub(SUMMARY_LINES);
        if quiet > 0 {
            log::warn!("audit log: {quiet} more address(es) held back noise; see audit.jsonl");
        }
        for (n, event) in summaries.into_iter().enumerate() {
            if n >= SUMMARY_LINES {
                self.push(event);
                continue;
            }
            log::warn!(
                "audit log: {} {} event(s) from {} not logged one by one ({})",
                event.count.unwrap_or(0),
                event
                    .command
                    .as_deref()
                    .and_then(|c| c.split(':').next())
                    .unwrap_or(""),
                event.peer,
                event.command.as_deref().unwrap_or("")
            );
            self.push(event);
        }
    }

    fn tick(&mut self) {
        if let Some(floor) = &mut self.floor {
            floor.check();
        }
        if self.throttle.started.elapsed() >= WINDOW {
            self.summarise();
        }
        self.write_pending();
    }

    fn push(&mut self, mut event: Event) {
        if event.node.is_none() {
            event.node.clone_from(&self.node);
        }
        self.pending.push_back(event);
        if self.pending.len() > self.max_pending {
            let dropped = self.pending.len() - self.max_pending;
            self.pending.drain(..dropped);
            for state in &mut self.sinks {
                state.written = state.written.saturating_sub(dropped);
            }
            log::error!(
                "audit log: dropped {dropped} oldest event(s): sinks failing and {} pending",
                self.max_pending
            );
        }
        if self.pending.len() >= BATCH && !self.failing {
            self.write_pending();
        }
    }

    /// Offers each sink the events it has not written; keeps what any sink still lacks.
    fn write_pending(&mut self) {
        let events = self.pending.make_contiguous();
        let mut failed = false;
        for state in &mut self.sinks {
            let rest = &events[state.written..];
            if rest.is_empty() {
                continue;
            }
            match state.sink.write(rest) {
                Ok(()) => state.written = events.len(),
                Err(e) => {
                    failed = true;
                    log::error!(
                        "audit log {}: {} event(s) not written, will retry: {e}",
                        state.sink.name(),
                        rest.len()
                    );
                }
            }
        }
        let done = self
            .sinks
            .iter()
            .map(|state| state.written)
            .min()
            .unwrap_or(events.len());
        self.pending.drain(..done);
        for state in &mut self.sinks {
            state.written -= done;
        }
        self.failing = failed;
        if let Some(metrics) = &self.metrics {
            metrics.audit_pending(self.pending.len());
        }
    }

    fn flush(&mut self) {
        self.write_pending();
        for state in &mut self.sinks {
            if let Err(e) = state.sink.flush() {
                log::error!("audit log {}: fsync failed: {e}", state.sink.name());
            }
        }
    }
}

impl Actor for AuditLog {
    type Context = Context<Self>;

    fn started(&mut self, ctx: &mut Self::Context) {
        if let Some(floor) = &mut self.floor {
            floor.check();
        }
        ctx.run_interval(TICK, |act, _| act.tick());
    }

    fn stopped(&mut self, _: &mut Self::Context) {
        self.summarise();
        self.flush();
        if !self.pending.is_empty() {
            log::error!(
                "audit log: {} event(s) lost at shutdown",
                self.pending.len()
            );
        }
        // The arbiter was made for this actor alone; let its thread end too.
        Arbiter::current().stop();
    }
}

impl Handler<Record> for AuditLog {
    type Result = ();

    fn handle(&mut self, Record(event): Record, _: &mut Self::Context) {
        if let Some(metrics) = &self.metrics {
            metrics.record_taken();
        }
        self.record(event);
    }
}

/// SIGHUP: the events so far go to the files as they are, then every sink opens its file
/// again by name (logrotate has moved the old one away); no event is lost or split.
#[derive(Message)]
#[rtype(result = "()")]
pub struct Reopen;

impl Handler<Reopen> for AuditLog {
    type Result = ();

    fn handle(&mut self, _: Reopen, _: &mut Self::Context) {
        self.flush();
        for state in &mut self.sinks {
            if let Err(e) = state.sink.reopen() {
                log::error!(
                    "audit log {}: cannot reopen ({e}); still writing to the old file",
                    state.sink.name()
                );
            }
        }
    }
}

impl Handler<Flush> for AuditLog {
    type Result = ();

    fn handle(&mut self, _: Flush, _: &mut Self::Context) {
        self.summarise();
        self.flush();
    }
}

#[cfg(test)]
mod tests;
