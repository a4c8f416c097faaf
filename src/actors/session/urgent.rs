//! The control connection's read half, made safe for TCP urgent data.
//!
//! Clients send ABOR as urgent data (ftplib sends the whole `ABOR\r\n` with `MSG_OOB`; RFC 959
//! §4.1.3 asks for the Telnet Synch). The acceptor sets `SO_OOBINLINE`, so the urgent byte stays
//! in the stream, but a read then stops at the urgent mark: tokio sees a short read, clears the
//! socket's readiness and waits for an edge that never comes, because the byte after the mark
//! is already queued. After a short read this reader tries once more with a direct,
//! non-blocking `recv` on the same socket, which does not depend on tokio's readiness.

use std::io::{self, Read};
use std::pin::Pin;
use std::task::{Context, Poll};

use tokio::io::{AsyncRead, ReadBuf};
use tokio::net::tcp::OwnedReadHalf;

/// An [`OwnedReadHalf`] that does not stall at the urgent mark.
pub struct UrgentSafeRead {
    inner: OwnedReadHalf,
    /// The last read was short: more may be queued behind the urgent mark.
    short_read: bool,
}

impl UrgentSafeRead {
    /// Wraps a control connection's read half.
    pub fn new(inner: OwnedReadHalf) -> UrgentSafeRead {
        UrgentSafeRead {
            inner,
            short_read: false,
        }
    }
}

impl AsyncRead for UrgentSafeRead {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        if std::mem::take(&mut self.short_read) {
            let socket = socket2::SockRef::from(self.inner.as_ref());
            let unfilled = buf.initialize_unfilled();
            match (&*socket).read(unfilled) {
                Ok(n) => {
                    buf.advance(n);
                    self.short_read = n > 0;
                    return Poll::Ready(Ok(()));
                }
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => {}
                Err(e) => return Poll::Ready(Err(e)),
            }
        }
        let wanted = buf.remaining();
        let before = buf.filled().len();
        let polled = Pin::new(&mut self.inner).poll_read(cx, buf);
        if let Poll::Ready(Ok(())) = polled {
            let got = buf.filled().len() - before;
            self.short_read = got > 0 && got < wanted;
        }
        polled
    }
}
