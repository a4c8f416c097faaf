//! The control connection's bytes, for one Session: plain TCP, or TLS after `AUTH TLS`
//! (RFC 4217) or from an implicit-TLS listener.
//!
//! The Session encodes replies into a shared output buffer; a writer task (spawned in the
//! Session's context) drains it to the socket. Owning the writer lets the Session switch the
//! connection to TLS exactly after the `234` reply is on the wire, and lets reading pause while
//! the client does not read its replies (back-pressure), so a client that pipelines commands
//! without reading cannot grow the server's memory. The read half is what the Session's
//! `FramedRead` polls. Single-threaded: all of it lives on the Session's arbiter.

use std::cell::RefCell;
use std::io;
use std::pin::Pin;
use std::rc::Rc;
use std::task::{Context, Poll, Waker};

use bytes::{Buf, BytesMut};
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio_rustls::TlsAcceptor;
use tokio_rustls::server::TlsStream;

use crate::codec::Reply;
use crate::net::urgent::UrgentSafeTcp;
use crate::tls::HANDSHAKE_TIMEOUT;

/// Reading pauses while more than this many reply bytes wait for the client.
const HIGH_WATER: usize = 64 * 1024;
/// Reading resumes once the waiting replies shrink below this.
const LOW_WATER: usize = 16 * 1024;
/// An emptied output buffer bigger than this is freed once sent, so one large reply (FEAT,
/// HELP, STAT) does not pin memory for the rest of an idle session.
const KEEP_OUT_CAPACITY: usize = 1024;

/// The connection in its current form.
pub enum Conn {
    /// Plain TCP.
    Plain(UrgentSafeTcp),
    /// TLS over TCP.
    Tls(Box<TlsStream<UrgentSafeTcp>>),
    /// During the TLS handshake after `AUTH TLS`: nobody else may touch the socket.
    Switching,
}

impl Conn {
    fn io(&mut self) -> Option<Pin<&mut (dyn AsyncRW + '_)>> {
        match self {
            Conn::Plain(s) => Some(Pin::new(s)),
            Conn::Tls(s) => Some(Pin::new(&mut **s)),
            Conn::Switching => None,
        }
    }
}

/// Both directions of a stream, as one object-safe trait.
trait AsyncRW: AsyncRead + AsyncWrite + Unpin {}
impl<T: AsyncRead + AsyncWrite + Unpin> AsyncRW for T {}

struct Channel {
    conn: Conn,
    out: BytesMut,
    upgrade: Option<TlsAcceptor>,
    closing: bool,
    reader: Option<Waker>,
    writer: Option<Waker>,
    /// The Session, waiting in [`Control::drained`] to run its next command.
    backlog: Option<Waker>,
    /// The writer task has ended: nothing will drain any more.
    ended: bool,
}

impl Channel {
    fn wake_reader(&mut self) {
        if let Some(w) = self.reader.take() {
            w.wake();
        }
    }

    fn wake_backlog(&mut self) {
        if let Some(w) = self.backlog.take() {
            w.wake();
        }
    }

    fn wake_writer(&mut self) {
        if let Some(w) = self.writer.take() {
            w.wake();
        }
    }
}

/// The Session's handle on its control connection.
#[derive(Clone)]
pub struct Control(Rc<RefCell<Channel>>);

impl Control {
    /// Takes over a connection (already TLS for an implicit-TLS listener).
    pub fn new(conn: Conn) -> Control {
        Control(Rc::new(RefCell::new(Channel {
            conn,
            out: BytesMut::new(),
            upgrade: None,
            closing: false,
            reader: None,
            writer: None,
            backlog: None,
            ended: false,
        })))
    }

    /// Whether more replies wait for the client than the bound allows: the Session then runs
    /// no further command until [`Control::drained`], so a client that does not read cannot
    /// make it queue more (reading alone pausing is not enough: commands already read and
    /// buffered would all still run).
    pub fn backlogged(&self) -> bool {
        self.0.borrow().out.len() > HIGH_WATER
    }

    /// Resolves with `true` once the waiting replies have shrunk below the low-water mark, or
    /// with `false` once the writer has ended (the connection failed or was closed).
    pub fn drained(&self) -> impl Future<Output = bool> + 'static {
        let channel = Rc::clone(&self.0);
        std::future::poll_fn(move |cx| {
            let mut ch = channel.borrow_mut();
            if ch.ended {
                Poll::Ready(false)
            } else if ch.out.len() < LOW_WATER {
                Poll::Ready(true)
            } else {
                ch.backlog = Some(cx.waker().clone());
                Poll::Pending
            }
        })
    }

    /// Queues a reply for the writer.
    pub fn send(&self, reply: &Reply) {
        let mut ch = self.0.borrow_mut();
        reply.encode(&mut ch.out);
        ch.wake_writer();
    }

    /// Queues a piece of a reply that `write` encodes (see [`crate::codec::reply::encode_first`]).
    pub fn send_piece(&self, write: impl FnOnce(&mut BytesMut)) {
        let mut ch = self.0.borrow_mut();
        write(&mut ch.out);
        ch.wake_writer();
    }

    /// After the queued replies (the `234`) are sent, switch to TLS. Reading stops now, so
    /// the client's handshake bytes are never taken for a command.
    pub fn start_tls(&self, acceptor: TlsAcceptor) {
        let mut ch = self.0.borrow_mut();
        ch.upgrade = Some(acceptor);
        ch.wake_writer();
    }

    /// A test, usable on any thread, of whether the client has closed the connection: end of
    /// stream with nothing unread before it, or a reset. Unread bytes (commands, a TLS alert)
    /// count as open. It holds a second handle on the socket (none during a switch to TLS),
    /// which shares tokio's non-blocking mode, so the test never waits.
    ///
    /// # Errors
    /// The socket handle could not be duplicated (the caller logs it, with its session).
    pub fn gone_probe(&self) -> io::Result<Option<impl Fn() -> bool + Send + 'static>> {
        use std::os::fd::AsFd;
        let ch = self.0.borrow();
        let tcp = match &ch.conn {
            Conn::Plain(s) => s.tcp(),
            Conn::Tls(s) => s.get_ref().0.tcp(),
            Conn::Switching => return Ok(None),
        };
        let socket = std::net::TcpStream::from(tcp.as_fd().try_clone_to_owned()?);
        Ok(Some(move || match socket.peek(&mut [0u8; 1]) {
            Ok(n) => n == 0,
            Err(e) => !matches!(
                e.kind(),
                io::ErrorKind::WouldBlock | io::ErrorKind::Interrupted
            ),
        }))
    }

    /// Whether the connection is TLS now.
    pub fn is_tls(&self) -> bool {
        matches!(self.0.borrow().conn, Conn::Tls(_))
    }

    /// Sends what is queued, then closes the connection; the writer task then ends.
    pub fn close(&self) {
        let mut ch = self.0.borrow_mut();
        ch.closing = true;
        ch.wake_writer();
    }

    /// The read half for the Session's `FramedRead`.
    pub fn reader(&self) -> ControlRead {
        ControlRead(Rc::clone(&self.0))
    }

    /// The writer task: drains replies, performs a requested TLS switch, closes on request.
    /// Ends with `Ok` after a requested close, with `Err` when the connection fails.
    pub async fn write_all_replies(self) -> io::Result<()> {
        let result = self.write_until_closed().await;
        let mut ch = self.0.borrow_mut();
        ch.ended = true;
        ch.wake_backlog();
        result
    }

    async fn write_until_closed(&self) -> io::Result<()> {
        loop {
            match std::future::poll_fn(|cx| self.drain(cx)).await? {
                Drained::Close => return Ok(()),
                // Boxed: the handshake's state is large, and an unboxed one would be part of
                // every idle session's writer task (1.4 KiB instead of a pointer).
                Drained::Upgrade(acceptor) => Box::pin(self.upgrade(acceptor)).await?,
            }
        }
    }

    fn drain(&self, cx: &mut Context<'_>) -> Poll<io::Result<Drained>> {
        let mut guard = self.0.borrow_mut();
        let ch = &mut *guard;
        while !ch.out.is_empty() {
            let Some(io) = ch.conn.io() else {
                return Poll::Pending;
            };
            match io.poll_write(cx, &ch.out) {
                Poll::Ready(Ok(0)) => return Poll::Ready(Err(io::ErrorKind::WriteZero.into())),
                Poll::Ready(Ok(n)) => {
                    ch.out.advance(n);
                    if ch.out.len() < LOW_WATER {
                        ch.wake_reader();
                        ch.wake_backlog();
                    }
                }
                Poll::Ready(Err(e)) => return Poll::Ready(Err(e)),
                Poll::Pending => return Poll::Pending,
            }
        }
        // Freed as soon as it is sent, not at the next reply: a session that sits idle after
        // one big reply must not keep its buffer.
        if ch.out.capacity() > KEEP_OUT_CAPACITY {
            ch.out = BytesMut::new();
        }
        let Some(io) = ch.conn.io() else {
            return Poll::Pending;
        };
        match io.poll_flush(cx) {
            Poll::Ready(Ok(())) => {}
            other => return other.map(|r| r.map(|()| Drained::Close)),
        }
        if let Some(acceptor) = ch.upgrade.take() {
            return Poll::Ready(Ok(Drained::Upgrade(acceptor)));
        }
        if ch.closing {
            let Some(io) = ch.conn.io() else {
                return Poll::Pending;
            };
            return io.poll_shutdown(cx).map(|r| r.map(|()| Drained::Close));
        }
        ch.writer = Some(cx.waker().clone());
        Poll::Pending
    }

    async fn upgrade(&self, acceptor: TlsAcceptor) -> io::Result<()> {
        let tcp = match std::mem::replace(&mut self.0.borrow_mut().conn, Conn::Switching) {
            Conn::Plain(tcp) => tcp,
            other => {
                // Already TLS (a second AUTH is refused before it gets here): keep it.
                self.0.borrow_mut().conn = other;
                return Ok(());
            }
        };
        let tls = tokio::time::timeout(HANDSHAKE_TIMEOUT, acceptor.accept(tcp))
            .await
            .map_err(|_| io::Error::new(io::ErrorKind::TimedOut, "TLS handshake timed out"))
            .and_then(|accepted| accepted);
        crate::tls::count_handshake(tls.is_ok());
        let tls = tls?;
        let mut ch = self.0.borrow_mut();
        ch.conn = Conn::Tls(Box::new(tls));
        ch.wake_reader();
        Ok(())
    }
}

enum Drained {
    Close,
    Upgrade(TlsAcceptor),
}

/// The read half: pauses during a TLS switch and while too many replies wait for the client.
pub struct ControlRead(Rc<RefCell<Channel>>);

impl AsyncRead for ControlRead {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let mut guard = self.0.borrow_mut();
        let ch = &mut *guard;
        if ch.upgrade.is_some() || ch.out.len() > HIGH_WATER {
            ch.reader = Some(cx.waker().clone());
            return Poll::Pending;
        }
        match ch.conn.io() {
            Some(io) => io.poll_read(cx, buf),
            None => {
                ch.reader = Some(cx.waker().clone());
                Poll::Pending
            }
        }
    }
}
