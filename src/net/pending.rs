//! Connections in the preamble, bounded in all and per TCP peer (per client, once a PROXY
//! header names it).
//!
//! Admission waits for the preamble, since only the preamble can say who the client is; until
//! then a connection (a slow implicit TLS handshake) would count under no cap. These bounds
//! take the session caps' values, so one address cannot hold more handshakes open than it may
//! hold sessions. Apart from the acceptor's `SessionRegistry` on purpose: these counts are of
//! one node's sockets and stay in-process, while session counts are state a cluster shares.

use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};

#[derive(Default)]
struct Counts {
    total: usize,
    per_peer: HashMap<IpAddr, usize>,
}

/// The connections in the preamble now.
pub struct Pending {
    counts: Mutex<Counts>,
    max_total: usize,
    /// `max_sessions_per_ip`, which a reload may change.
    max_per_peer: AtomicUsize,
}

/// Which bound a connection met.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Full {
    /// `max_total` connections are in the preamble.
    Total,
    /// `max_per_peer` connections from this TCP peer are.
    Peer,
}

impl Pending {
    /// Bounds of `max_total` connections, `max_per_peer` of them from one TCP peer.
    pub fn new(max_total: usize, max_per_peer: usize) -> Arc<Pending> {
        Arc::new(Pending {
            counts: Mutex::new(Counts::default()),
            max_total,
            max_per_peer: AtomicUsize::new(max_per_peer),
        })
    }

    /// From now on, `max_per_peer` connections from one peer (a reload).
    pub fn set_max_per_peer(&self, max_per_peer: usize) {
        self.max_per_peer.store(max_per_peer, Ordering::Relaxed);
    }

    fn max_per_peer(&self) -> usize {
        self.max_per_peer.load(Ordering::Relaxed)
    }

    fn lock(&self) -> MutexGuard<'_, Counts> {
        // A panic elsewhere while holding this lock leaves plain counters: still usable.
        self.counts.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// A place for a connection from `peer` (canonical), held until the slot is dropped. A
    /// `balancer`'s connections are many clients' (each named by its PROXY header): only the
    /// total bounds them until [`PendingSlot::rekey`] moves each to its client.
    ///
    /// # Errors
    /// The bound that is reached.
    pub fn enter(self: &Arc<Self>, peer: IpAddr, balancer: bool) -> Result<PendingSlot, Full> {
        let mut counts = self.lock();
        if counts.total >= self.max_total {
            return Err(Full::Total);
        }
        let from_peer = counts.per_peer.entry(peer).or_insert(0);
        if *from_peer >= self.max_per_peer() && !balancer {
            return Err(Full::Peer);
        }
        *from_peer += 1;
        counts.total += 1;
        Ok(PendingSlot {
            pending: Arc::clone(self),
            peer,
        })
    }
}

/// One connection's place in the preamble; dropping it frees the place.
pub struct PendingSlot {
    pending: Arc<Pending>,
    peer: IpAddr,
}

impl PendingSlot {
    /// Counts this place against `client` (named by a PROXY header, canonical) instead of the
    /// balancer it came through; the total is unchanged. On `Err` the place stays the
    /// balancer's, and dropping the slot frees it.
    ///
    /// # Errors
    /// [`Full::Peer`] when `client` already holds its bound of places.
    pub fn rekey(&mut self, client: IpAddr) -> Result<(), Full> {
        if client == self.peer {
            return Ok(());
        }
        let mut counts = self.pending.lock();
        let held = counts.per_peer.get(&client).copied().unwrap_or(0);
        if held >= self.pending.max_per_peer() {
            return Err(Full::Peer);
        }
        release(&mut counts, self.peer);
        *counts.per_peer.entry(client).or_insert(0) += 1;
        self.peer = client;
        Ok(())
    }
}

/// Takes one place from `peer`'s count.
fn release(counts: &mut Counts, peer: IpAddr) {
    if let Some(n) = counts.per_peer.get_mut(&peer) {
        *n -= 1;
        if *n == 0 {
            counts.per_peer.remove(&peer);
        }
    }
}

impl Drop for PendingSlot {
    fn drop(&mut self) {
        let mut counts = self.pending.lock();
        counts.total = counts.total.saturating_sub(1);
        release(&mut counts, self.peer);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bounds_hold_per_peer_and_in_all_and_free_on_drop() {
        let (a, b, c) = (
            IpAddr::from([192, 0, 2, 1]),
            IpAddr::from([192, 0, 2, 2]),
            IpAddr::from([192, 0, 2, 3]),
        );
        let pending = Pending::new(3, 2);
        let a1 = pending.enter(a, false).expect("first from a");
        let a2 = pending.enter(a, false).expect("second from a");
        assert_eq!(pending.enter(a, false).err(), Some(Full::Peer));
        let b1 = pending.enter(b, false).expect("first from b");
        assert_eq!(pending.enter(c, false).err(), Some(Full::Total));
        drop(a1);
        let c1 = pending.enter(c, false).expect("a place was freed");
        assert_eq!(pending.enter(a, false).err(), Some(Full::Total));
        drop((a2, b1, c1));
        assert!(pending.lock().per_peer.is_empty());
        assert_eq!(pending.lock().total, 0);
        let _again = pending.enter(a, false).expect("all free again");
        let _and = pending.enter(a, false).expect("both places of a");
        assert_eq!(pending.enter(a, false).err(), Some(Full::Peer));
        pending.set_max_per_peer(3);
        let _third = pending.enter(a, false).expect("the raised bound");
    }

    #[test]
    fn a_balancer_is_bounded_only_by_the_total() {
        let balancer = IpAddr::from([127, 0, 0, 1]);
        let pending = Pending::new(3, 1);
        let slots: Vec<_> = (0..3)
            .map(|_| {
                pending
                    .enter(balancer, true)
                    .expect("a balancer's connection")
            })
            .collect();
        assert_eq!(pending.enter(balancer, true).err(), Some(Full::Total));
        drop(slots);
    }

    #[test]
    fn a_rekeyed_place_counts_against_the_client_and_the_total_stays() {
        let balancer = IpAddr::from([127, 0, 0, 1]);
        let (a, b) = (
            IpAddr::from([203, 0, 113, 66]),
            IpAddr::from([203, 0, 113, 7]),
        );
        let pending = Pending::new(4, 1);
        let mut first = pending
            .enter(balancer, true)
            .expect("a balancer's connection");
        first.rekey(a).expect("a's first place");
        let mut second = pending
            .enter(balancer, true)
            .expect("a balancer's connection");
        assert_eq!(second.rekey(a).err(), Some(Full::Peer), "a is at its bound");
        second.rekey(b).expect("b's first place");
        assert_eq!(pending.lock().total, 2);
        assert_eq!(pending.lock().per_peer.get(&a), Some(&1));
        assert_eq!(pending.lock().per_peer.get(&balancer), None);
        drop(first);
        assert_eq!(
            pending.lock().per_peer.get(&a),
            None,
            "freed from the client"
        );
        let mut third = pending
            .enter(balancer, true)
            .expect("a balancer's connection");
        third.rekey(a).expect("a's place was freed");
        drop((second, third));
        assert!(pending.lock().per_peer.is_empty());
        assert_eq!(pending.lock().total, 0);
    }
}
