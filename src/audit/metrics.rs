//! [`Metrics`]: what `/metrics` shows, in the Prometheus text format (OpenMetrics), and the
//! last events for the status page. Counted
//! from the audit events as the AuditLog actor receives them (before any audit throttling, so
//! the counts are exact), plus gauges read at each scrape and the TLS handshakes
//! [`crate::tls`] counts where they happen. No label carries a user, a path or an address: every label takes a value
//! from a fixed set, so the number of series stays bounded whatever clients send.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::{Histogram, exponential_buckets};
use prometheus_client::metrics::info::Info;
use prometheus_client::registry::{Registry, Unit};

use super::recent::RecentEvents;
use super::{Event, EventKind};

/// The verbs counted by name; any other is counted as `OTHER`.
const VERBS: &[&str] = &[
    "ABOR", "ACCT", "ALLO", "APPE", "AUTH", "CDUP", "CWD", "DELE", "EPRT", "EPSV", "FEAT", "HASH",
    "HELP", "LIST", "MDTM", "MFMT", "MKD", "MLSD", "MLST", "MODE", "NLST", "NOOP", "OPTS", "PASS",
    "PASV", "PBSZ", "PORT", "PROT", "PWD", "QUIT", "REIN", "REST", "RETR", "RMD", "RNFR", "RNTO",
    "SITE", "SIZE", "STAT", "STOR", "STOU", "STRU", "SYST", "TYPE", "USER", "XCUP", "XCWD", "XMKD",
    "XPWD", "XRMD",
];

/// The verbs whose `451`/`452` replies are the storage failing (not the client's doing).
const STORAGE_VERBS: &[&str] = &[
    "APPE", "DELE", "LIST", "MDTM", "MFMT", "MKD", "MLSD", "MLST", "NLST", "RETR", "RMD", "RNFR",
    "RNTO", "SIZE", "STOR", "STOU", "XMKD", "XRMD",
];

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct Outcome {
    result: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct CommandLabels {
    verb: &'static str,
    class: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct Direction {
    direction: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct TransferLabels {
    direction: &'static str,
    result: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct ActorLabel {
    actor: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct NodeLabel {
    node: String,
}

type Histograms = Family<Direction, Histogram, fn() -> Histogram>;

fn duration_histogram() -> Histogram {
    // 10 ms to about 45 min.
    Histogram::new(exponential_buckets(0.01, 4.0, 12))
}

fn size_histogram() -> Histogram {
    // 1 KiB to 16 GiB.
    Histogram::new(exponential_buckets(1024.0, 4.0, 13))
}

/// A service actor the sessions ask, for [`Backlog`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Service {
    /// The AccountRegistry (logins, registrations, password changes).
    Accounts,
    /// The FileStore (short file-system calls, opening files).
    Files,
    /// The long-jobs front of the file store (listings, HASH).
    LongJobs,
}

impl Service {
    const ALL: [Service; 3] = [Service::Accounts, Service::Files, Service::LongJobs];

    fn label(self) -> &'static str {
        match self {
            Service::Accounts => "account_registry",
            Service::Files => "file_store",
            Service::LongJobs => "long_jobs",
        }
    }
}

/// The mailbox backlog of the service actors: requests sent and not yet answered, per
/// actor, and audit records sent and not yet taken by the AuditLog actor. Counted by the
/// senders ([`InFlight`] lives from the request until its answer) and by the audit actor.
#[derive(Debug, Default)]
pub struct Backlog {
    waiting: [AtomicUsize; 3],
    records_sent: AtomicU64,
    records_taken: AtomicU64,
}

impl Backlog {
    /// A request to `service` is on its way; it is counted until the guard is dropped.
    pub fn enter(self: &Arc<Backlog>, service: Service) -> InFlight {
        self.waiting[service as usize].fetch_add(1, Ordering::Relaxed);
        InFlight {
            backlog: Arc::clone(self),
            service,
        }
    }

    /// An audit record was sent.
    pub fn record_sent(&self) {
        self.records_sent.fetch_add(1, Ordering::Relaxed);
    }

    /// The audit actor took a record from its mailbox.
    pub fn record_taken(&self) {
        self.records_taken.fetch_add(1, Ordering::Relaxed);
    }

    /// Requests to `service` not yet answered.
    pub fn waiting(&self, service: Service) -> usize {
        self.waiting[service as usize].load(Ordering::Relaxed)
    }

    /// Audit records sent and not yet taken.
    pub fn records_waiting(&self) -> u64 {
        let taken = self.records_taken.load(Ordering::Relaxed);
        self.records_sent
            .load(Ordering::Relaxed)
            .saturating_sub(taken)
    }
}

/// One request counted in the [`Backlog`] until dropped.
#[derive(Debug)]
pub struct InFlight {
    backlog: Arc<Backlog>,
    service: Service,
}

impl Drop for InFlight {
    fn drop(&mut self) {
        self.backlog.waiting[self.service as usize].fetch_sub(1, Ordering::Relaxed);
    }
}

/// What the server reads at each scrape.
#[derive(Debug, Clone, Copy, Default)]
pub struct Gauges {
    /// Sessions open now.
    pub sessions: usize,
    /// Data transfers running now (downloads, uploads, listings).
    pub transfers: usize,
}

/// The metrics of one server.
#[derive(Debug)]
pub struct Metrics {
    registry: Registry,
    sessions_opened: Counter,
    refused: Counter,
    logins: Family<Outcome, Counter>,
    registrations: Family<Outcome, Counter>,
    commands: Family<CommandLabels, Counter>,
    bytes: Family<Direction, Counter>,
    transfers: Family<TransferLabels, Counter>,
    durations: Histograms,
    sizes: Histograms,
    bans: Counter,
    quota_refusals: Counter,
    storage_errors: Counter,
    sessions_open: Gauge,
    transfers_running: Gauge,
    audit_backlog: Gauge,
    mailboxes: Family<ActorLabel, Gauge>,
    backlog: Arc<Backlog>,
    /// Events the AuditLog actor holds that not every sink has written yet.
    audit_pending: AtomicUsize,
    /// The last events, for the status page.
    recent: RecentEvents,
}

impl Metrics {
    /// The metrics of node `node` (its name is the `node` label of `ferryd_node_info`).
    pub fn new(node: &str) -> Metrics {
        let mut metrics = Metrics {
            sessions_opened: Counter::default(),
            refused: Counter::default(),
            logins: Family::default(),
            registrations: Family::default(),
            commands: Family::default(),
            bytes: Family::default(),
            transfers: Family::default(),
            durations: Family::new_with_constructor(duration_histogram),
            sizes: Family::new_with_constructor(size_histogram),
            bans: Counter::default(),
            quota_refusals: Counter::default(),
            storage_errors: Counter::default(),
            sessions_open: Gauge::default(),
            transfers_running: Gauge::default(),
            audit_backlog: Gauge::default(),
            mailboxes: Family::default(),
            backlog: Arc::default(),
            audit_pending: AtomicUsize::new(0),
            recent: RecentEvents::default(),
            registry: Registry::with_prefix("ferryd"),
        };
        let r = &mut metrics.registry;
        r.register(
            "node",
            "This node's name",
            Info::new(NodeLabel {
                node: node.to_owned(),
            }),
        );
        r.register(
            "sessions_opened",
            "Control connections accepted",
            metrics.sessions_opened.clone(),
        );
        r.register(
            "sessions_open",
            "Sessions open now",
            metrics.sessions_open.clone(),
        );
        r.register(
            "connections_refused",
            "Connections refused (banned address, a session limit)",
            metrics.refused.clone(),
        );
        r.register(
            "logins",
            "Logins by result (ok, failed)",
            metrics.logins.clone(),
        );
        r.register(
            "registrations",
            "SITE REGISTER by result (ok, refused)",
            metrics.registrations.clone(),
        );
        r.register(
            "commands",
            "Commands by verb and reply class",
            metrics.commands.clone(),
        );
        r.register_with_unit(
            "transferred",
            "File bytes moved, by direction (in: uploads, out: downloads)",
            Unit::Bytes,
            metrics.bytes.clone(),
        );
        r.register(
            "transfers",
            "File transfers ended, by direction and result (complete, incomplete)",
            metrics.transfers.clone(),
        );
        r.register(
            "transfers_running",
            "Data transfers running now (listings included)",
            metrics.transfers_running.clone(),
        );
        r.register_with_unit(
            "transfer_duration",
            "How long file transfers took",
            Unit::Seconds,
            metrics.durations.clone(),
        );
        r.register_with_unit(
            "transfer_size",
            "How many bytes file transfers moved",
            Unit::Bytes,
            metrics.sizes.clone(),
        );
        r.register(
            "bans",
            "Addresses banned after failed logins",
            metrics.bans.clone(),
        );
        r.register(
            "quota_refusals",
            "Commands refused for the quota (552)",
            metrics.quota_refusals.clone(),
        );
        r.register(
            "storage_errors",
            "File commands the storage failed (451, 452)",
            metrics.storage_errors.clone(),
        );
        r.register(
            "audit_backlog",
            "Audit events waiting to be written",
            metrics.audit_backlog.clone(),
        );
        r.register(
            "actor_mailbox_backlog",
            "Messages sent to a service actor and not yet answered (account_registry, \
             file_store, long_jobs) or not yet taken (audit_log)",
            metrics.mailboxes.clone(),
        );
        r.register(
            "tls_handshakes",
            "TLS handshakes by result (ok, failed), control and data connections",
            crate::tls::HANDSHAKES.clone(),
        );
        metrics
    }

    /// Where the senders count what the service actors have not answered yet.
    pub fn backlog(&self) -> Arc<Backlog> {
        Arc::clone(&self.backlog)
    }

    /// The AuditLog actor took a record from its mailbox.
    pub fn record_taken(&self) {
        self.backlog.record_taken();
    }

    /// What the AuditLog actor holds unwritten, as it last said.
    pub fn audit_pending(&self, events: usize) {
        self.audit_pending.store(events, Ordering::Relaxed);
    }

    /// Counts what `event` says happened, and keeps it among the recent events.
    pub fn observe(&self, event: &Event) {
        self.recent.push(event);
        match event.event {
            EventKind::SessionOpen => {
                self.sessions_opened.inc();
            }
            EventKind::Refused => {
                self.refused.inc();
            }
            EventKind::LoginOk => self.count(&self.logins, "ok"),
            EventKind::LoginFailed => self.count(&self.logins, "failed"),
            EventKind::Register => self.count(&self.registrations, "ok"),
            EventKind::RegisterRefused => self.count(&self.registrations, "refused"),
            EventKind::Banned => {
                self.bans.inc();
            }
            EventKind::Command => self.command(event),
            EventKind::Upload => self.transfer(event, "in"),
            EventKind::Download => self.transfer(event, "out"),
            _ => {}
        }
    }

    fn count(&self, family: &Family<Outcome, Counter>, result: &'static str) {
        family.get_or_create(&Outcome { result }).inc();
    }

    fn command(&self, event: &Event) {
        let word = event
            .command
            .as_deref()
            .and_then(|line| line.split_whitespace().next())
            .unwrap_or_default();
        let verb = VERBS
            .iter()
            .find(|v| v.eq_ignore_ascii_case(word))
            .copied()
            .unwrap_or("OTHER");
        let code = event.code.unwrap_or(0);
        let class = match code / 100 {
            1 => "1xx",
            2 => "2xx",
            3 => "3xx",
            4 => "4xx",
            5 => "5xx",
            _ => "other",
        };
        self.commands
            .get_or_create(&CommandLabels { verb, class })
            .inc();
        if code == 552 {
            self.quota_refusals.inc();
        }
        if matches!(code, 451 | 452) && STORAGE_VERBS.contains(&verb) {
            self.storage_errors.inc();
        }
    }

    fn transfer(&self, event: &Event, direction: &'static str) {
        let bytes = event.bytes.unwrap_or(0);
        let result = if event.complete == Some(false) {
            "incomplete"
        } else {
            "complete"
        };
        let labels = Direction { direction };
        self.bytes.get_or_create(&labels).inc_by(bytes);
        self.transfers
            .get_or_create(&TransferLabels { direction, result })
            .inc();
        if let Some(ms) = event.duration_ms {
            #[allow(clippy::cast_precision_loss)]
            self.durations
                .get_or_create(&labels)
                .observe(ms as f64 / 1000.0);
        }
        #[allow(clippy::cast_precision_loss)]
        self.sizes.get_or_create(&labels).observe(bytes as f64);
    }

    /// The last events observed, oldest first.
    pub fn recent(&self) -> Vec<Event> {
        self.recent.list()
    }

    /// The text `/metrics` answers with, the gauges set to `gauges`.
    pub fn render(&self, gauges: Gauges) -> String {
        let gauge = |n: usize| i64::try_from(n).unwrap_or(i64::MAX);
        self.sessions_open.set(gauge(gauges.sessions));
        self.transfers_running.set(gauge(gauges.transfers));
        self.audit_backlog
            .set(gauge(self.audit_pending.load(Ordering::Relaxed)));
        for service in Service::ALL {
            self.mailboxes
                .get_or_create(&ActorLabel {
                    actor: service.label(),
                })
                .set(gauge(self.backlog.waiting(service)));
        }
        self.mailboxes
            .get_or_create(&ActorLabel { actor: "audit_log" })
            .set(i64::try_from(self.backlog.records_waiting()).unwrap_or(i64::MAX));
        let mut text = String::new();
        // Writing into a String cannot fail.
        let _ = prometheus_client::encoding::text::encode(&mut text, &self.registry);
        text
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::net::SocketAddr;

    fn event(kind: EventKind) -> Event {
        Event::now(1, SocketAddr::from(([127, 0, 0, 1], 5000)), kind)
    }

    /// The value of the series `name` in `text` (its whole line up to the value).
    fn value(text: &str, series: &str) -> Option<f64> {
        text.lines()
            .find_map(|line| line.strip_prefix(series)?.strip_prefix(' '))
            .and_then(|v| v.parse().ok())
    }

    #[test]
    fn the_backlog_counts_what_is_not_answered_or_taken_yet() {
        let metrics = Metrics::new("n1");
        let backlog = metrics.backlog();
        let first = backlog.enter(Service::Files);
        let second = backlog.enter(Service::Files);
        let login = backlog.enter(Service::Accounts);
        for _ in 0..3 {
            backlog.record_sent();
        }
        metrics.record_taken();
        drop(second);
        let text = metrics.render(Gauges::default());
        let at = |actor: &str| {
            value(
                &text,
                &format!("ferryd_actor_mailbox_backlog{{actor=\"{actor}\"}}"),
            )
        };
        assert_eq!(at("file_store"), Some(1.0), "{text}");
        assert_eq!(at("account_registry"), Some(1.0));
        assert_eq!(at("long_jobs"), Some(0.0));
        assert_eq!(at("audit_log"), Some(2.0));
        drop((first, login));
        let text = metrics.render(Gauges::default());
        assert_eq!(
            value(&text, "ferryd_actor_mailbox_backlog{actor=\"file_store\"}"),
            Some(0.0)
        );
    }

    #[test]
    fn events_move_the_counters_with_bounded_labels() {
        let metrics = Metrics::new("n1");
        metrics.observe(&event(EventKind::SessionOpen));
        metrics.observe(&event(EventKind::LoginOk));
        metrics.observe(&event(EventKind::LoginFailed));
        metrics.observe(&event(EventKind::LoginFailed));
        let mut cmd = event(EventKind::Command).with_command("stor a.bin");
        cmd.code = Some(552);
        metrics.observe(&cmd);
        let mut odd = event(EventKind::Command).with_command("XYZZY /etc/passwd");
        odd.code = Some(500);
        metrics.observe(&odd);
        let mut upload = event(EventKind::Upload)
            .with_bytes(3 << 20)
            .with_duration(std::time::Duration::from_millis(1500));
        upload.complete = Some(true);
        metrics.observe(&upload);
        let text = metrics.render(Gauges {
            sessions: 3,
            transfers: 1,
        });
        let at = |series| value(&text, series).unwrap_or_else(|| panic!("{series} in\n{text}"));
        assert_eq!(at("ferryd_sessions_opened_total"), 1.0);
        assert_eq!(at("ferryd_sessions_open"), 3.0);
        assert_eq!(at("ferryd_logins_total{result=\"failed\"}"), 2.0);
        assert_eq!(at("ferryd_logins_total{result=\"ok\"}"), 1.0);
        assert_eq!(
            at("ferryd_commands_total{verb=\"STOR\",class=\"5xx\"}"),
            1.0
        );
        assert_eq!(
            at("ferryd_commands_total{verb=\"OTHER\",class=\"5xx\"}"),
            1.0,
            "an unknown verb adds no series of its own"
        );
        assert!(
            !text.contains("XYZZY") && !text.contains("passwd"),
            "{text}"
        );
        assert_eq!(at("ferryd_quota_refusals_total"), 1.0);
        assert_eq!(
            at("ferryd_transferred_bytes_total{direction=\"in\"}"),
            f64::from(3u32 << 20)
        );
        assert_eq!(
            at("ferryd_transfer_duration_seconds_count{direction=\"in\"}"),
            1.0
        );
        assert_eq!(
            at("ferryd_transfer_duration_seconds_sum{direction=\"in\"}"),
            1.5
        );
        assert_eq!(at("ferryd_node_info{node=\"n1\"}"), 1.0);
        assert!(text.ends_with("# EOF\n"), "{text}");
    }
}
