//! How much a client can make the audit log write: [`AuditPolicy`], the noise budgets per
//! address and [`WINDOW`] (the throttle), and the free-space floor below which only forensic
//! events are written.

use std::collections::{BTreeMap, HashMap};
use std::net::{IpAddr, SocketAddr};
use std::path::PathBuf;
use std::time::{Duration, Instant};

use super::sink::Rotation;
use super::{Event, EventKind};

/// The period of the noise budgets; what was held back in one is summarised at its end.
pub const WINDOW: Duration = Duration::from_secs(10);
/// Addresses tracked one by one per window; noise from further addresses shares one tally
/// (peer `*`), so a flood from many addresses cannot grow the table without bound.
pub(crate) const MAX_TRACKED: usize = 1024;
/// Summaries per window that also get a stderr line; the rest get one line together.
pub(crate) const SUMMARY_LINES: usize = 20;

/// How much the audit log writes: rotation, the free-space floor and the noise budgets. Built
/// from the `audit_*` and `log_burst_*` keys of [`crate::config::Config`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct AuditPolicy {
    /// Rotation of `audit.jsonl` and `xferlog`.
    pub rotation: Rotation,
    /// Below this many free bytes on the log's file system only forensic events are written
    /// (0: no floor).
    pub min_free_bytes: u64,
    /// Noise events of one kind from one address written one by one per [`WINDOW`].
    pub burst_per_address: u32,
    /// Noise events written one by one per [`WINDOW`], all addresses together.
    pub burst_total: u32,
}

impl AuditPolicy {
    /// The policy a configuration asks for.
    pub fn from_config(config: &crate::config::Config) -> AuditPolicy {
        AuditPolicy {
            rotation: Rotation {
                max_bytes: config.audit_max_bytes,
                keep: config.audit_keep,
            },
            min_free_bytes: config.audit_min_free_bytes,
            burst_per_address: config.log_burst_per_address,
            burst_total: config.log_burst_total,
        }
    }

    /// No rotation, no floor, no budget: everything is written (tests of the sinks).
    pub const UNLIMITED: AuditPolicy = AuditPolicy {
        rotation: Rotation::NEVER,
        min_free_bytes: 0,
        burst_per_address: u32::MAX,
        burst_total: u32::MAX,
    };
}

/// Noise of one kind from one address in the current window.
#[derive(Debug, Default)]
pub(crate) struct Tally {
    written: u32,
    held: u64,
    /// Held events per reply code (0: none).
    codes: BTreeMap<u16, u64>,
}

/// The noise budgets of the current window.
#[derive(Debug)]
pub(crate) struct Throttle {
    per_address: u32,
    total: u32,
    pub(crate) started: Instant,
    written: u32,
    pub(crate) tallies: HashMap<(Option<IpAddr>, EventKind), Tally>,
}

impl Throttle {
    pub(crate) fn new(per_address: u32, total: u32) -> Throttle {
        Throttle {
            per_address,
            total,
            started: Instant::now(),
            written: 0,
            tallies: HashMap::new(),
        }
    }

    /// The tally of `event`'s address and kind (or the shared one past [`MAX_TRACKED`]).
    fn tally(&mut self, event: &Event) -> &mut Tally {
        let mut key = (event.ip(), event.event);
        if self.tallies.len() >= MAX_TRACKED && !self.tallies.contains_key(&key) {
            key.0 = None;
        }
        self.tallies.entry(key).or_default()
    }

    /// Whether a noise event is written one by one; if not, it is counted.
    pub(crate) fn admit(&mut self, event: &Event) -> bool {
        let (per_address, room) = (self.per_address, self.written < self.total);
        let tally = self.tally(event);
        if tally.written < per_address && room {
            tally.written += 1;
            self.written += 1;
            return true;
        }
        self.hold(event);
        false
    }

    /// Counts an event for the summary without writing it.
    pub(crate) fn hold(&mut self, event: &Event) {
        let tally = self.tally(event);
        tally.held += 1;
        *tally.codes.entry(event.code.unwrap_or(0)).or_default() += 1;
    }

    /// Ends the window: one `suppressed` event per tally that held something back.
    pub(crate) fn close_window(&mut self) -> Vec<Event> {
        let elapsed = self.started.elapsed();
        let summaries = self
            .tallies
            .drain()
            .filter(|(_, tally)| tally.held > 0)
            .map(|((ip, kind), tally)| {
                let codes: Vec<String> = tally
                    .codes
                    .iter()
                    .map(|(code, n)| match code {
                        0 => n.to_string(),
                        code => format!("{code} x {n}"),
                    })
                    .collect();
                let text = format!("{kind}: {} in {} s", codes.join(", "), elapsed.as_secs());
                let mut event = Event::now(
                    0,
                    SocketAddr::from(([0, 0, 0, 0], 0)),
                    EventKind::Suppressed,
                );
                event.peer = ip.map_or_else(|| "*".to_owned(), |ip| ip.to_string());
                event.command = Some(text);
                event.count = Some(tally.held);
                event.with_duration(elapsed)
            })
            .collect();
        self.started = Instant::now();
        self.written = 0;
        summaries
    }
}

/// The free-space floor, checked once a tick.
#[derive(Debug)]
pub(crate) struct Floor {
    pub(crate) dir: PathBuf,
    pub(crate) min_free: u64,
    pub(crate) low: bool,
    /// Non-forensic events not written while low, since the last summary.
    pub(crate) held: u64,
}

impl Floor {
    /// Re-reads the free space; logs each crossing of the floor once.
    pub(crate) fn check(&mut self) {
        let free = match nix::sys::statvfs::statvfs(&self.dir) {
            Ok(st) => st.blocks_available().saturating_mul(st.fragment_size()),
            Err(e) => {
                log::error!(
                    "audit log: cannot read free space of {}: {e}",
                    self.dir.display()
                );
                return;
            }
        };
        let low = free < self.min_free;
        if low && !self.low {
            log::error!(
                "audit log: {free} bytes free on {}, below audit_min_free_bytes ({}): writing only forensic events",
                self.dir.display(),
                self.min_free
            );
        } else if !low && self.low {
            log::warn!(
                "audit log: {free} bytes free on {} again: writing every event",
                self.dir.display()
            );
        }
        self.low = low;
    }

    /// The summary of what the floor held back, if anything.
    pub(crate) fn summary(&mut self) -> Option<Event> {
        if self.held == 0 {
            return None;
        }
        let mut event = Event::now(
            0,
            SocketAddr::from(([0, 0, 0, 0], 0)),
            EventKind::Suppressed,
        );
        event.peer = "*".to_owned();
        event.command = Some("not forensic, not written below audit_min_free_bytes".to_owned());
        event.count = Some(std::mem::take(&mut self.held));
        Some(event)
    }
}
