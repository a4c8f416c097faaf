//! Admission: the live sessions of a server under its caps (in all, and per address through
//! the shared state), and the messages the registry sends them (shutdown, a ban of their
//! address, their account deleted or disabled). The Acceptor admits through it and each Session holds its permit, so neither
//! needs the other.

use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Instant;

use actix::prelude::*;
use serde::Serialize;

use crate::state::{self, Lease, SharedState};

/// Asks a session to end: 421 now when idle, or after its running transfer.
#[derive(Message)]
#[rtype(result = "()")]
pub struct Shutdown;

/// Tells a session that its address was banned: one that is not logged in ends (421).
#[derive(Message)]
#[rtype(result = "()")]
pub struct AddressBanned;

/// Tells the sessions that an account was deleted or disabled (here, on another node, or by
/// `ferryd user`): those logged in as it end after their current command (421).
#[derive(Message, Clone)]
#[rtype(result = "()")]
pub struct AccountGone(pub Arc<str>);

/// Ends a session at once (`DELETE /sessions/{id}`): a running transfer gets 426, then the
/// session 421; `by` says who, for the audit log.
#[derive(Message)]
#[rtype(result = "()")]
pub struct Kick {
    /// Who asked (the admin listener and the requester's address).
    pub by: String,
}

/// The longest command line a session keeps for `GET /sessions` (idle sessions are many:
/// each keeps little).
const SHOWN_COMMAND: usize = 200;

/// What a session shows of itself to the admin listener, updated as it goes; formatted only
/// when asked.
#[derive(Debug)]
pub struct Live {
    peer: std::net::SocketAddr,
    since: std::time::SystemTime,
    state: Mutex<LiveState>,
    /// The registry's count of bytes moved by ended transfers, which takes this session's
    /// transfer in as it ends.
    moved: Arc<Moved>,
}

/// File bytes moved by ended transfers (uploaded, downloaded). Taken before a session's own
/// lock both where a transfer ends and where the sessions are sampled, so a sample counts
/// every byte once: in a running transfer or among the ended ones.
#[derive(Debug, Default)]
pub struct Moved(Mutex<[u64; 2]>);

impl Moved {
    fn lock(&self) -> MutexGuard<'_, [u64; 2]> {
        self.0.lock().unwrap_or_else(|e| e.into_inner())
    }
}

#[derive(Debug, Default)]
struct LiveState {
    user: Option<String>,
    command: Option<Box<str>>,
    transfer: Option<LiveTransfer>,
}

#[derive(Debug)]
struct LiveTransfer {
    kind: &'static str,
    path: Option<String>,
    started: Instant,
    progress: Arc<AtomicU64>,
}

/// One live session, as `GET /sessions` lists it.
#[derive(Debug, Clone, Serialize)]
pub struct SessionView {
    /// The session's id (as in the audit log).
    pub id: u64,
    /// The logged-in user.
    pub user: Option<String>,
    /// The client's address.
    pub peer: String,
    /// When it connected (RFC 3339, UTC).
    pub since: String,
    /// The last command it sent, passwords hidden.
    pub command: Option<String>,
    /// The transfer it runs.
    pub transfer: Option<TransferView>,
}

/// A running transfer, as `GET /sessions` shows it.
#[derive(Debug, Clone, Serialize)]
pub struct TransferView {
    /// `upload`, `download` or `listing`.
    pub kind: &'static str,
    /// The file, for uploads and downloads.
    pub path: Option<String>,
    /// Bytes moved so far.
    pub bytes: u64,
    /// Seconds since it started.
    pub seconds: f64,
    /// Bytes per second on average since it started.
    pub rate: f64,
}

impl Live {
    /// A session from `peer` that connected just now; its ended transfers count in `moved`.
    pub fn new(peer: std::net::SocketAddr, moved: Arc<Moved>) -> Arc<Live> {
        Arc::new(Live {
            peer,
            since: std::time::SystemTime::now(),
            state: Mutex::default(),
            moved,
        })
    }

    fn state(&self) -> MutexGuard<'_, LiveState> {
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// The session logged in as `user` (`None`: it logged out, REIN).
    pub fn set_user(&self, user: Option<String>) {
        self.state().user = user;
    }

    /// The session received `command` (already with its password hidden); a long one is
    /// cut at a character boundary.
    pub fn set_command(&self, command: &str) {
        let mut end = command.len().min(SHOWN_COMMAND);
        while !command.is_char_boundary(end) {
            end -= 1;
        }
        self.state().command = Some(command[..end].into());
    }

    /// A transfer of `kind` (of `path`) started; `progress` counts its bytes.
    pub fn transfer_started(
        &self,
        kind: &'static str,
        path: Option<String>,
        progress: Arc<AtomicU64>,
    ) {
        self.state().transfer = Some(LiveTransfer {
            kind,
            path,
            started: Instant::now(),
            progress,
        });
    }

    /// The transfer ended: its bytes join the ended transfers' count.
    pub fn transfer_ended(&self) {
        let mut moved = self.moved.lock();
        if let Some(transfer) = self.state().transfer.take() {
            let bytes = transfer.progress.load(Ordering::Relaxed);
            match transfer.kind {
                "upload" => moved[0] += bytes,
                "download" => moved[1] += bytes,
                _ => {}
            }
        }
    }

    fn view(&self, id: u64) -> SessionView {
        let state = self.state();
        SessionView {
            id,
            user: state.user.clone(),
            peer: self.peer.to_string(),
            since: time::OffsetDateTime::from(self.since)
                .format(&time::format_description::well_known::Rfc3339)
                .unwrap_or_default(),
            command: state.command.as_deref().map(str::to_owned),
            transfer: state.transfer.as_ref().map(|t| {
                let bytes = t.progress.load(Ordering::Relaxed);
                let seconds = t.started.elapsed().as_secs_f64();
                #[allow(clippy::cast_precision_loss)]
                let rate = if seconds > 0.0 {
                    bytes as f64 / seconds
                } else {
                    0.0
                };
                TransferView {
                    kind: t.kind,
                    path: t.path.clone(),
                    bytes,
                    seconds,
                    rate,
                }
            }),
        }
    }
}

/// How the registry reaches one live session.
struct Attached {
    ip: IpAddr,
    shutdown: Recipient<Shutdown>,
    banned: Recipient<AddressBanned>,
    gone: Recipient<AccountGone>,
    kick: Recipient<Kick>,
    live: Arc<Live>,
}

/// The recipients a session registers with its permit.
pub struct Reach {
    /// Shutdown.
    pub shutdown: Recipient<Shutdown>,
    /// A ban of its address.
    pub banned: Recipient<AddressBanned>,
    /// Its account deleted or disabled.
    pub gone: Recipient<AccountGone>,
    /// An administrator ends it.
    pub kick: Recipient<Kick>,
    /// What it shows of itself.
    pub live: Arc<Live>,
}

#[derive(Default)]
struct Counts {
    total: usize,
    sessions: HashMap<u64, Attached>,
}

/// Live sessions of this server: its cap, and the recipients to tell at shutdown. The cap per
/// address is a lease of the [`SharedState`]. Shared by the Acceptor and every
/// [`SessionPermit`]; the lock is held only to update counters.
pub struct SessionRegistry {
    counts: Mutex<Counts>,
    max_total: usize,
    state: Arc<dyn SharedState>,
    moved: Arc<Moved>,
}

/// Why a connection was refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Refusal {
    /// `max_sessions` reached.
    ServerFull,
    /// `max_sessions_per_ip` reached for this address.
    AddressFull,
    /// The address is banned after too many failed logins.
    Banned,
}

impl Refusal {
    /// The reason for the audit log (the reply is in the session's reply table).
    pub fn reason(self) -> &'static str {
        match self {
            Refusal::ServerFull => "server full",
            Refusal::AddressFull => "too many connections from this address",
            Refusal::Banned => "address banned",
        }
    }
}

impl SessionRegistry {
    /// A registry for at most `max_total` sessions, with the per-address cap of `state`.
    pub fn new(max_total: usize, state: Arc<dyn SharedState>) -> Arc<SessionRegistry> {
        let registry = Arc::new(SessionRegistry {
            counts: Mutex::new(Counts::default()),
            max_total,
            state: Arc::clone(&state),
            moved: Arc::default(),
        });
        // Bans another node decides end this node's sessions from the address too.
        let weak = Arc::downgrade(&registry);
        state.watch_bans(Arc::new(move |ip| {
            if let Some(registry) = weak.upgrade() {
                registry.tell_banned(ip, None);
            }
        }));
        registry
    }

    /// Tells the sessions from `ip` (but `except`) that it was banned.
    fn tell_banned(&self, ip: IpAddr, except: Option<u64>) {
        let counts = self.lock();
        for (id, session) in &counts.sessions {
            if Some(*id) != except && session.ip == ip {
                session.banned.do_send(AddressBanned);
            }
        }
    }

    fn lock(&self) -> MutexGuard<'_, Counts> {
        // A panic elsewhere while holding this lock leaves plain counters: still usable.
        self.counts.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Admits a session from `ip` if both caps allow it.
    ///
    /// # Errors
    /// The [`Refusal`] when a cap is reached (the server is full when the shared state is
    /// unavailable).
    pub fn admit(self: &Arc<Self>, id: u64, ip: IpAddr) -> Result<SessionPermit, Refusal> {
        let mut counts = self.lock();
        if counts.total >= self.max_total {
            return Err(Refusal::ServerFull);
        }
        let address = match self.state.address_session(ip) {
            Ok(Some(lease)) => lease,
            Ok(None) => return Err(Refusal::AddressFull),
            Err(e) => {
                state::unavailable("session", &e);
                return Err(Refusal::ServerFull);
            }
        };
        counts.total += 1;
        Ok(SessionPermit {
            registry: Arc::clone(self),
            id,
            ip,
            _address: address,
        })
    }

    /// Sessions alive now.
    pub fn active(&self) -> usize {
        self.lock().total
    }

    /// Tells every session that the account `name` is gone; those logged in as it end.
    pub fn account_gone(&self, name: &str) {
        let gone = AccountGone(Arc::from(name));
        for session in self.lock().sessions.values() {
            session.gone.do_send(gone.clone());
        }
    }

    /// Every live session that has registered, by id.
    pub fn sessions(&self) -> Vec<SessionView> {
        self.sessions_and_moved().0
    }

    /// The live sessions, and the bytes (uploaded, downloaded) of the transfers that ended,
    /// read together: a transfer ending meanwhile is in one or the other, never both.
    pub fn sessions_and_moved(&self) -> (Vec<SessionView>, [u64; 2]) {
        let counts = self.lock();
        let moved = self.moved.lock();
        let mut views: Vec<SessionView> = counts
            .sessions
            .iter()
            .map(|(id, session)| session.live.view(*id))
            .collect();
        views.sort_by_key(|view| view.id);
        (views, *moved)
    }

    /// Ends session `id` at once (see [`Kick`]); false when there is no such session.
    pub fn kick(&self, id: u64, by: String) -> bool {
        match self.lock().sessions.get(&id) {
            Some(session) => {
                session.kick.do_send(Kick { by });
                true
            }
            None => false,
        }
    }

    /// Tells every session to end (421 now, or after its transfer).
    pub fn shutdown_all(&self) {
        for session in self.lock().sessions.values() {
            session.shutdown.do_send(Shutdown);
        }
    }
}

/// A session's place under the caps; dropping it (when the Session actor is dropped) frees it.
pub struct SessionPermit {
    registry: Arc<SessionRegistry>,
    id: u64,
    ip: IpAddr,
    /// The place under the per-address cap.
    _address: Lease,
}

impl SessionPermit {
    /// Where the session's ended transfers are counted (for its [`Live`]).
    pub fn moved(&self) -> Arc<Moved> {
        Arc::clone(&self.registry.moved)
    }

    /// Registers the session's recipients so shutdown, bans of its address, the end of
    /// accounts and an administrator can reach it, and what it shows of itself.
    pub fn attach(&self, reach: Reach) {
        let attached = Attached {
            ip: self.ip,
            shutdown: reach.shutdown,
            banned: reach.banned,
            gone: reach.gone,
            kick: reach.kick,
            live: reach.live,
        };
        self.registry.lock().sessions.insert(self.id, attached);
    }

    /// This session's address was just banned: tells every other session from it (those not
    /// logged in end at once, or as soon as their current command has answered).
    pub fn address_banned(&self) {
        self.registry.tell_banned(self.ip, Some(self.id));
    }
}

impl Drop for SessionPermit {
    fn drop(&mut self) {
        let mut counts = self.registry.lock();
        counts.sessions.remove(&self.id);
        counts.total = counts.total.saturating_sub(1);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_ended_transfer_moves_its_bytes_to_the_ended_count_once() {
        let moved = Arc::new(Moved::default());
        let live = Live::new(
            std::net::SocketAddr::from(([127, 0, 0, 1], 5000)),
            Arc::clone(&moved),
        );
        let progress = Arc::new(AtomicU64::new(0));
        live.transfer_started("download", Some("/f".into()), Arc::clone(&progress));
        progress.store(700, Ordering::Relaxed);
        assert_eq!(live.view(1).transfer.map(|t| t.bytes), Some(700));
        assert_eq!(*moved.lock(), [0, 0]);
        live.transfer_ended();
        assert!(live.view(1).transfer.is_none());
        assert_eq!(*moved.lock(), [0, 700]);
        live.transfer_started("upload", None, Arc::new(AtomicU64::new(5)));
        live.transfer_ended();
        live.transfer_started("listing", None, Arc::new(AtomicU64::new(9)));
        live.transfer_ended();
        live.transfer_ended();
        assert_eq!(*moved.lock(), [5, 700], "listings are not file bytes");
    }
}
