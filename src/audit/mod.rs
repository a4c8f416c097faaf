//! The audit trail's values and files: [`Event`] (one line of `audit.jsonl`), the sinks
//! ([`JsonLinesSink`] for `audit.jsonl`, [`XferlogSink`] for the wu-ftpd `xferlog`, in
//! database mode [`TableSink`] for the `audit_log` table) with their rotation, and the noise policy ([`AuditPolicy`]: budgets per address and per [`WINDOW`],
//! the free-space floor). The actor that batches events into the sinks is
//! [`crate::actors::audit_log`].
//!
//! - `event.rs`: the record and its JSON and stderr forms.
//! - `sink.rs`: the sink trait, rotating files, `audit.jsonl`.
//! - `xferlog.rs`: the xferlog line and sink.
//! - `policy.rs`: noise budgets and the free-space floor.
//! - `table.rs`: the `audit_log` table in database mode ([`TableSink`], [`table::read`]).
//! - `metrics.rs`: the counters of `/metrics`, counted from the events.
//! - `recent.rs`: the last events, for the status page.

mod event;
pub mod metrics;
mod policy;
pub mod recent;
mod sink;
pub mod table;
mod xferlog;

pub use event::{Event, EventKind};
pub use policy::{AuditPolicy, WINDOW};
pub(crate) use policy::{Floor, SUMMARY_LINES, Throttle};
pub use sink::{AuditSink, JsonLinesSink, Rotation};
pub use table::TableSink;
pub use xferlog::{XferlogSink, xferlog_line};
#[cfg(test)]
pub(crate) use {policy::MAX_TRACKED, sink::RotatingFile};
