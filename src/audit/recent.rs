//! [`RecentEvents`]: the last audit events as they arrived, for the status page; bounded, so
//! a flood of events costs the same memory as a quiet day.

use std::collections::VecDeque;
use std::sync::Mutex;

use super::Event;

/// How many events the status page can show.
pub const RECENT_EVENTS: usize = 100;

/// The last [`RECENT_EVENTS`] events, newest last.
#[derive(Debug, Default)]
pub struct RecentEvents {
    ring: Mutex<VecDeque<Event>>,
}

impl RecentEvents {
    /// Keeps `event`, forgetting the oldest past [`RECENT_EVENTS`].
    pub fn push(&self, event: &Event) {
        let mut ring = self.ring.lock().unwrap_or_else(|e| e.into_inner());
        if ring.len() == RECENT_EVENTS {
            ring.pop_front();
        }
        ring.push_back(event.clone());
    }

    /// The events kept, oldest first.
    pub fn list(&self) -> Vec<Event> {
        let ring = self.ring.lock().unwrap_or_else(|e| e.into_inner());
        ring.iter().cloned().collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::audit::EventKind;
    use std::net::SocketAddr;

    #[test]
    fn keeps_the_newest_in_order_and_no_more() {
        let recent = RecentEvents::default();
        let peer = SocketAddr::from(([127, 0, 0, 1], 5000));
        for session in 0..(RECENT_EVENTS as u64 + 7) {
            recent.push(&Event::now(session, peer, EventKind::Command));
        }
        let kept: Vec<u64> = recent.list().iter().map(|e| e.session).collect();
        let expected: Vec<u64> = (7..RECENT_EVENTS as u64 + 7).collect();
        assert_eq!(kept, expected);
    }
}
