//! What the status page at `/` shows: the live sessions, the last audit events and the
//! recent history (sessions open, transfers running, bytes moved) sampled every
//! [`SAMPLE_EVERY`] for the charts. The page itself (`status.html`, `status.js`) is plain HTML
//! and a little script compiled into the binary: no build step, no external assets.

use std::collections::VecDeque;
use std::sync::Mutex;
use std::time::{Duration, SystemTime};

use serde::Serialize;

use crate::admission::SessionView;
use crate::audit::Event;

/// How often the history takes a sample.
pub const SAMPLE_EVERY: Duration = Duration::from_secs(2);
/// How many samples it keeps: ten minutes.
pub const SAMPLES: usize = 300;
/// A sample this young ends the history as it is, without one taken for the answer.
pub const FRESH_MS: u64 = 1000;
/// How many of the recent audit events the page gets.
const EVENTS_SHOWN: usize = 50;

/// The page, served at `/`.
pub const PAGE: &str = include_str!("status.html");
/// Its script, served at `/status.js` (a file of its own, so the page's
/// Content-Security-Policy can forbid inline script).
pub const SCRIPT: &str = include_str!("status.js");

/// One point of the history.
#[derive(Debug, Clone, Copy, Serialize)]
pub struct Sample {
    /// When, in milliseconds since the Unix epoch.
    pub at_ms: u64,
    /// Sessions open.
    pub sessions: usize,
    /// Transfers running.
    pub transfers: usize,
    /// File bytes uploaded since the server started, finished and running transfers.
    pub bytes_in: u64,
    /// File bytes downloaded since the server started, finished and running transfers.
    pub bytes_out: u64,
}

impl Sample {
    /// A sample taken now from the ended transfers' bytes (`moved`: uploaded, downloaded)
    /// and the live `sessions`, read together ([`SessionRegistry::sessions_and_moved`]).
    ///
    /// [`SessionRegistry::sessions_and_moved`]: crate::admission::SessionRegistry::sessions_and_moved
    pub fn now(sessions: &[SessionView], transfers: usize, moved: [u64; 2]) -> Sample {
        let [mut bytes_in, mut bytes_out] = moved;
        for transfer in sessions.iter().filter_map(|s| s.transfer.as_ref()) {
            match transfer.kind {
                "upload" => bytes_in += transfer.bytes,
                "download" => bytes_out += transfer.bytes,
                _ => {}
            }
        }
        let at_ms = SystemTime::now()
            .duration_since(SystemTime::UNIX_EPOCH)
            .map_or(0, |d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX));
        Sample {
            at_ms,
            sessions: sessions.len(),
            transfers,
            bytes_in,
            bytes_out,
        }
    }
}

/// The last [`SAMPLES`] samples.
#[derive(Debug, Default)]
pub struct History {
    samples: Mutex<VecDeque<Sample>>,
}

impl History {
    /// Keeps `sample`, forgetting the oldest past [`SAMPLES`].
    pub fn push(&self, sample: Sample) {
        let mut samples = self.samples.lock().unwrap_or_else(|e| e.into_inner());
        if samples.len() == SAMPLES {
            samples.pop_front();
        }
        samples.push_back(sample);
    }

    /// The samples, oldest first.
    pub fn list(&self) -> Vec<Sample> {
        let samples = self.samples.lock().unwrap_or_else(|e| e.into_inner());
        samples.iter().copied().collect()
    }
}

/// A live session with the node that serves it.
#[derive(Debug, Serialize)]
pub struct NodeSession<'a> {
    /// The node (`node_name`).
    pub node: &'a str,
    /// The session.
    #[serde(flatten)]
    pub session: SessionView,
}

/// Everything the page shows, in one answer (`GET /status`).
#[derive(Debug, Serialize)]
pub struct Status<'a> {
    /// This node's name.
    pub node: &'a str,
    /// ferryd's version.
    pub version: &'static str,
    /// The live sessions.
    pub sessions: Vec<NodeSession<'a>>,
    /// The last audit events, newest last.
    pub events: Vec<Event>,
    /// Seconds between samples.
    pub sample_seconds: u64,
    /// The history, oldest first, ending with a sample taken for this answer (unless the
    /// last one is younger than [`FRESH_MS`]: a rate over a few milliseconds says nothing).
    pub history: Vec<Sample>,
}

impl<'a> Status<'a> {
    /// The answer for node `node`: `sessions` now, the last of `events`, the `history`.
    pub fn new(
        node: &'a str,
        sessions: Vec<SessionView>,
        mut events: Vec<Event>,
        mut history: Vec<Sample>,
        now: Sample,
    ) -> Status<'a> {
        events.drain(..events.len().saturating_sub(EVENTS_SHOWN));
        if history
            .last()
            .is_none_or(|last| now.at_ms.saturating_sub(last.at_ms) >= FRESH_MS)
        {
            history.push(now);
        }
        Status {
            node,
            version: env!("CARGO_PKG_VERSION"),
            sessions: sessions
                .into_iter()
                .map(|session| NodeSession { node, session })
                .collect(),
            events,
            sample_seconds: SAMPLE_EVERY.as_secs(),
            history,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sample(sessions: usize) -> Sample {
        sample_at(sessions, 0)
    }

    fn sample_at(sessions: usize, at_ms: u64) -> Sample {
        Sample {
            at_ms,
            sessions,
            transfers: 0,
            bytes_in: 0,
            bytes_out: 0,
        }
    }

    #[test]
    fn history_keeps_the_last_samples_in_order() {
        let history = History::default();
        for n in 0..SAMPLES + 3 {
            history.push(sample(n));
        }
        let kept: Vec<usize> = history.list().iter().map(|s| s.sessions).collect();
        assert_eq!(kept, (3..SAMPLES + 3).collect::<Vec<_>>());
    }

    #[test]
    fn a_status_shows_the_last_events_and_ends_with_now() {
        let peer = std::net::SocketAddr::from(([127, 0, 0, 1], 5000));
        let events: Vec<Event> = (0..EVENTS_SHOWN as u64 + 5)
            .map(|session| Event::now(session, peer, crate::audit::EventKind::Command))
            .collect();
        let status = Status::new(
            "n1",
            Vec::new(),
            events,
            vec![sample_at(1, 0)],
            sample_at(2, FRESH_MS),
        );
        assert_eq!(status.events.len(), EVENTS_SHOWN);
        assert_eq!(status.events[0].session, 5);
        let counts: Vec<usize> = status.history.iter().map(|s| s.sessions).collect();
        assert_eq!(counts, [1, 2]);
        let just_sampled = Status::new(
            "n1",
            Vec::new(),
            Vec::new(),
            vec![sample_at(1, 5000)],
            sample_at(2, 5000 + FRESH_MS - 1),
        );
        let counts: Vec<usize> = just_sampled.history.iter().map(|s| s.sessions).collect();
        assert_eq!(counts, [1], "no rate over a moment");
    }
}
