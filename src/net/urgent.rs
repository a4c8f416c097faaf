//! Reads of a control connection that survive TCP urgent data (the Telnet Synch before ABOR).

use std::io::{self, Read};
use std::pin::Pin;
use std::task::{Context, Poll};

use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::TcpStream;

/// A TCP stream that does not stall at the TCP urgent mark.
///
/// Clients send ABOR as urgent data (ftplib sends the whole `ABOR\r\n` with `MSG_OOB`; RFC 959
/// §4.1.3 asks for the Telnet Synch). The acceptor sets `SO_OOBINLINE`, so the urgent byte stays
/// in the stream, but a read then stops at the mark: tokio sees a short read, clears the
/// socket's readiness and waits for an edge that never comes, because the byte after the mark
/// is already queued. After a short read this stream tries once more with a direct,
/// non-blocking `recv`, which does not depend on tokio's readiness.
pub struct UrgentSafeTcp {
    inner: TcpStream,
    short_read: bool,
}

impl UrgentSafeTcp {
    /// Wraps an accepted control connection.
    pub fn new(inner: TcpStream) -> UrgentSafeTcp {
        UrgentSafeTcp {
            inner,
            short_read: false,
        }
    }

    /// The TCP stream underneath.
    pub fn tcp(&self) -> &TcpStream {
        &self.inner
    }
}

impl AsyncRead for UrgentSafeTcp {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        if std::mem::take(&mut self.short_read) {
            let socket = socket2::SockRef::from(&self.inner);
            match (&*socket).read(buf.initialize_unfilled()) {
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

impl AsyncWrite for UrgentSafeTcp {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.inner).poll_write(cx, buf)
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_shutdown(cx)
    }
}
