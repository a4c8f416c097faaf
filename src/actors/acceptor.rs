//! The Acceptor: takes connections from the listeners and starts one Session per connection on
//! one of the per-core arbiters, round robin. There each connection first goes through the
//! preamble ([`crate::net::preamble`]: the PROXY header from a balancer, implicit TLS), then
//! admission on the client address it
//! yields ([`crate::admission`]): bans and the session caps (in all and per address;
//! 421 and close when over). While in
//! the preamble a connection holds a place under bounds of the same sizes per TCP peer, or
//! per client once a PROXY header names it ([`crate::net::pending`]), so slow handshakes
//! cannot escape the caps.

use std::io;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context as TaskContext, Poll};
use std::time::{Duration, Instant};

use actix::prelude::*;
use tokio::io::AsyncWriteExt;
use tokio::net::{TcpListener, TcpStream};
use tokio_stream::Stream;

use crate::actors::audit_log::{Event, EventKind, Record};
use crate::actors::session::control::Conn;
use crate::actors::session::{Session, SessionEnv};
use crate::admission::{Refusal, SessionPermit, SessionRegistry};
use crate::net::ClientAddr;
use crate::net::pending::{Full, Pending};
use crate::net::preamble::{self, Stream as Preambled};
use crate::net::urgent::UrgentSafeTcp;
use crate::state;
use crate::tls::HANDSHAKE_TIMEOUT;

/// Pause after a failed accept (e.g. out of file descriptors), so the loop does not spin.
const ACCEPT_BACKOFF: Duration = Duration::from_millis(100);
/// How long a refused connection may take to read its 421 before it is dropped.
const REFUSE_WRITE: Duration = Duration::from_secs(2);
/// Refusals for want of descriptors and failed accepts are logged as counts at most this
/// often.
const SHED_LOG_EVERY: Duration = Duration::from_secs(10);
/// What a client refused for want of descriptors reads.
const OUT_OF_DESCRIPTORS: &[u8] = b"421 Server out of resources; try again later.\r\n";

/// Stop taking connections (shutdown); the listeners close.
#[derive(Message)]
#[rtype(result = "()")]
pub struct StopAccepting;

/// Accepts control connections and hands each to a new Session.
pub struct Acceptor {
    env: Arc<SessionEnv>,
    registry: Arc<SessionRegistry>,
    /// Connections in the preamble, not yet under the session caps.
    pending: Arc<Pending>,
    arbiters: Vec<ArbiterHandle>,
    next_arbiter: usize,
    next_id: u64,
    listeners: Vec<(TcpListener, bool)>,
    /// The listeners, shared with their accept streams, for [`Acceptor::shed`].
    open: Vec<Arc<TcpListener>>,
    /// A descriptor held back so that, when accept fails with EMFILE, one can be freed to
    /// take the waiting connection and refuse it with 421 (instead of leaving it hanging).
    spare: Option<std::fs::File>,
    /// Connections refused for want of descriptors.
    shed: Throttled,
    /// Failed accepts (retried after [`ACCEPT_BACKOFF`]).
    failed: Throttled,
}

/// A repeated warning, logged with its count at most once per [`SHED_LOG_EVERY`].
#[derive(Default)]
struct Throttled {
    count: u64,
    logged: Option<Instant>,
}

impl Throttled {
    /// Counts one occurrence; returns the count to log when a line is due.
    fn hit(&mut self) -> Option<u64> {
        self.count += 1;
        if self.logged.is_some_and(|at| at.elapsed() < SHED_LOG_EVERY) {
            return None;
        }
        self.logged = Some(Instant::now());
        Some(std::mem::take(&mut self.count))
    }
}

/// A listener's accepts as a stream; the listener stays shared with the Acceptor.
struct Accepts {
    listener: Arc<TcpListener>,
    implicit: bool,
}

impl Stream for Accepts {
    type Item = Accepted;

    fn poll_next(self: Pin<&mut Self>, cx: &mut TaskContext<'_>) -> Poll<Option<Accepted>> {
        self.listener
            .poll_accept(cx)
            .map(|r| Some((r.map(|(stream, _)| stream), self.implicit)))
    }
}

/// Whether an accept failed because the process or the system ran out of descriptors.
fn out_of_descriptors(e: &io::Error) -> bool {
    use nix::errno::Errno;
    matches!(
        e.raw_os_error().map(Errno::from_raw),
        Some(Errno::EMFILE | Errno::ENFILE)
    )
}

/// One accepted connection, and whether its listener is implicit TLS.
type Accepted = (io::Result<TcpStream>, bool);

impl Acceptor {
    /// Starts the acceptor on the current arbiter over already-bound listeners (each flagged
    /// true for implicit TLS); sessions go to `arbiters` (at least one) in turn.
    pub fn start(
        listeners: Vec<(TcpListener, bool)>,
        env: Arc<SessionEnv>,
        registry: Arc<SessionRegistry>,
        arbiters: Vec<ArbiterHandle>,
    ) -> Addr<Acceptor> {
        let pending = Pending::new(
            env.config.get().max_sessions,
            env.config.get().max_sessions_per_ip,
        );
        Acceptor {
            env,
            registry,
            pending,
            arbiters,
            next_arbiter: 0,
            next_id: 1,
            listeners,
            open: Vec::new(),
            spare: std::fs::File::open("/dev/null").ok(),
            shed: Throttled::default(),
            failed: Throttled::default(),
        }
        .start()
    }

    /// Out of descriptors: frees the spare, takes one waiting connection, answers it 421 and
    /// closes it, then takes the spare back. Returns whether a connection was refused so; if
    /// not, the caller backs off.
    fn shed(&mut self) -> bool {
        if self.spare.take().is_none() {
            return false;
        }
        let refused = self.open.iter().any(|listener| {
            // WouldBlock here is common: Linux allocates the descriptor before it looks for a
            // connection, so accept fails with EMFILE also when none is waiting.
            let Ok((socket, _)) = socket2::SockRef::from(&**listener).accept() else {
                return false;
            };
            // A fresh socket's send buffer is empty: this short blocking send returns at once.
            let _ = socket.send(OUT_OF_DESCRIPTORS);
            let _ = socket.shutdown(std::net::Shutdown::Write);
            true
        });
        self.spare = std::fs::File::open("/dev/null").ok();
        if refused && let Some(n) = self.shed.hit() {
            log::warn!("out of file descriptors: refused {n} connections with 421");
        }
        refused
    }
}

/// Refuses a connection that got through the preamble: 421 on its stream, then close.
async fn refuse(stream: Preambled, env: &SessionEnv, id: u64, addr: ClientAddr, why: Refusal) {
    let reply = crate::actors::session::replies::refusal(why);
    let mut text = bytes::BytesMut::new();
    reply.encode(&mut text);
    // The audit log writes the stderr line too, within its noise budget per address.
    let mut event = Event::now(id, addr, EventKind::Refused);
    event.command = Some(why.reason().to_owned());
    event.code = Some(reply.code().as_u16());
    env.services.audit.do_send(Record(event));
    let _ = tokio::time::timeout(REFUSE_WRITE, async {
        match stream {
            Preambled::Plain(mut s) => say_and_close(&mut s, &text).await,
            Preambled::Tls(mut s) => say_and_close(&mut *s, &text).await,
        }
    })
    .await;
}

async fn say_and_close(stream: &mut (impl AsyncWriteExt + Unpin), text: &[u8]) -> io::Result<()> {
    stream.write_all(text).await?;
    stream.shutdown().await
}

/// Admission, after the preamble: bans, then the session caps.
fn admit(
    env: &SessionEnv,
    registry: &Arc<SessionRegistry>,
    id: u64,
    addr: &ClientAddr,
) -> Result<SessionPermit, Refusal> {
    if env.limits.banned(addr.ip()).unwrap_or_else(|e| {
        state::unavailable("connection", &e);
        true
    }) {
        return Err(Refusal::Banned);
    }
    registry.admit(id, addr.ip())
}

impl Actor for Acceptor {
    type Context = Context<Self>;

    fn started(&mut self, ctx: &mut Self::Context) {
        for (listener, implicit) in self.listeners.drain(..) {
            let listener = Arc::new(listener);
            self.open.push(Arc::clone(&listener));
            ctx.add_stream(Accepts { listener, implicit });
        }
    }
}

impl StreamHandler<Accepted> for Acceptor {
    fn handle(&mut self, (item, implicit): Accepted, ctx: &mut Context<Self>) {
        let stream = match item {
            Ok(stream) => stream,
            Err(e) if out_of_descriptors(&e) && self.shed() => return,
            Err(e) => {
                if let Some(n) = self.failed.hit() {
                    log::warn!("accept failed ({n} times since the last such line): {e}");
                }
                ctx.wait(actix::clock::sleep(ACCEPT_BACKOFF).into_actor(self));
                return;
            }
        };
        let Ok(tcp_addr) = ClientAddr::of_stream(&stream) else {
            return; // the peer is already gone
        };
        let id = self.next_id;
        self.next_id += 1;
        let config = self.env.config.get();
        let proxied = config.proxied(tcp_addr.ip());
        // The bound in force, which a reload may have changed.
        self.pending.set_max_per_peer(config.max_sessions_per_ip);
        let mut slot = match self.pending.enter(tcp_addr.ip(), proxied) {
            Ok(slot) => slot,
            Err(full) => {
                let why = match full {
                    Full::Total => Refusal::ServerFull,
                    Full::Peer => Refusal::AddressFull,
                };
                // No TLS is up yet: the refusal goes out in plain text.
                let (stream, env) = (UrgentSafeTcp::new(stream), Arc::clone(&self.env));
                actix::spawn(async move {
                    refuse(Preambled::Plain(stream), &env, id, tcp_addr, why).await;
                });
                return;
            }
        };
        stream.set_nodelay(true).ok();
        // Clients send ABOR (and the Telnet Synch before it) as TCP urgent data (ftplib sends
        // the whole line with MSG_OOB); kept inline, its last byte is not lost to the OOB slot.
        if let Err(e) = socket2::SockRef::from(&stream).set_out_of_band_inline(true) {
            log::warn!("cannot keep urgent data inline for {tcp_addr}: {e}");
        }
        // Move the socket across as a std stream: it must register with the target arbiter's
        // reactor, so it is rebuilt there.
        let std_stream = match stream.into_std() {
            Ok(s) => s,
            Err(e) => {
                log::warn!("cannot hand over connection from {tcp_addr}: {e}");
                return;
            }
        };
        let implicit_tls = match (implicit, &self.env.tls) {
            (false, _) => None,
            (true, Some(tls)) => Some(tls.clone()),
            (true, None) => {
                log::error!("implicit TLS listener without a certificate");
                return;
            }
        };
        let env = Arc::clone(&self.env);
        let registry = Arc::clone(&self.registry);
        let Some(arbiter) = self
            .arbiters
            .get(self.next_arbiter % self.arbiters.len().max(1))
        else {
            log::error!("no session arbiter; dropping connection from {tcp_addr}");
            return;
        };
        self.next_arbiter = self.next_arbiter.wrapping_add(1);
        arbiter.spawn(async move {
            let tcp = match TcpStream::from_std(std_stream) {
                Ok(stream) => UrgentSafeTcp::new(stream),
                Err(e) => {
                    log::warn!("cannot register connection from {tcp_addr}: {e}");
                    return;
                }
            };
            // The preamble's share of the time to log in.
            let limit = env.config.get().login_timeout().min(HANDSHAKE_TIMEOUT);
            let mut addr = tcp_addr;
            let balancer = proxied.then_some(&mut slot);
            let ready = preamble::run(tcp, &mut addr, balancer, implicit_tls.as_ref(), limit).await;
            drop(slot);
            let ready = match ready {
                Ok(ready) => ready,
                Err(preamble::Failure::HealthCheck) => {
                    log::debug!("connection from {tcp_addr}: a health check");
                    return;
                }
                Err(e @ preamble::Failure::Proxy(_)) => {
                    // A refusal event: its stderr line is within the noise budget per address.
                    let mut event = Event::now(id, tcp_addr, EventKind::Refused);
                    event.command = Some(e.to_string());
                    env.services.audit.do_send(Record(event));
                    return;
                }
                Err(preamble::Failure::AddressFull(ready)) => {
                    let why = Refusal::AddressFull;
                    return refuse(ready.stream, &env, id, ready.addr, why).await;
                }
                Err(e) => {
                    // `addr` names the client once its header was read ("CLIENT via balancer").
                    log::info!("connection from {addr}: {e}");
                    return;
                }
            };
            let addr = ready.addr;
            let permit = match admit(&env, &registry, id, &addr) {
                Ok(permit) => permit,
                Err(why) => return refuse(ready.stream, &env, id, addr, why).await,
            };
            let conn = match ready.stream {
                Preambled::Plain(s) => Conn::Plain(s),
                Preambled::Tls(s) => Conn::Tls(s),
            };
            Session::start(conn, id, addr, env, permit);
        });
    }

    fn finished(&mut self, _: &mut Context<Self>) {
        log::warn!("a listener stopped");
    }
}

impl Handler<StopAccepting> for Acceptor {
    type Result = ();

    fn handle(&mut self, _: StopAccepting, ctx: &mut Context<Self>) {
        // Stopping drops the listener streams, which closes the listeners; sessions live on
        // their own arbiters and finish on their own.
        ctx.stop();
    }
}
