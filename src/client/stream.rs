//! The client's connections, plain or TLS (RFC 4217): one type for the control connection and
//! for data connections, so the protocol code does not care which.

use std::io::{self, Read, Write};
use std::net::{Shutdown, TcpStream};
use std::sync::Arc;
use std::time::Duration;

use rustls::pki_types::ServerName;
use rustls::{ClientConfig, ClientConnection, ProtocolVersion, StreamOwned};

use crate::client::tickets::TicketStore;
use crate::tls::{TlsError, Trust};

/// How the client protects its connections.
#[derive(Debug, Clone)]
pub enum Security {
    /// Plain FTP.
    Plain,
    /// `AUTH TLS` after the greeting, then PBSZ 0 / PROT P (RFC 4217).
    Explicit(ClientTls),
    /// TLS from the first byte (implicit FTPS, port 990).
    Implicit(ClientTls),
}

/// The client's TLS configuration and its session store, which says how many TLS 1.3
/// tickets are left for resuming.
#[derive(Debug, Clone)]
pub struct ClientTls {
    /// For the control and the data connections alike, so that data connections resume.
    pub config: Arc<ClientConfig>,
    /// The store in `config`.
    pub tickets: Arc<TicketStore>,
}

impl ClientTls {
    /// [`crate::tls::client_config`] with a [`TicketStore`].
    ///
    /// # Errors
    /// As [`crate::tls::client_config`].
    pub fn new(trust: &Trust<'_>) -> Result<ClientTls, TlsError> {
        let mut config = Arc::unwrap_or_clone(crate::tls::client_config(trust)?);
        let tickets = Arc::new(TicketStore::default());
        config.resumption = rustls::client::Resumption::store(Arc::clone(&tickets) as _);
        Ok(ClientTls {
            config: Arc::new(config),
            tickets,
        })
    }
}

/// `host` as TLS names it (a DNS name or an IP address).
///
/// # Errors
/// A name TLS cannot check a certificate against.
pub fn server_name(host: &str) -> io::Result<ServerName<'static>> {
    ServerName::try_from(host.to_owned())
        .map_err(|e| io::Error::new(io::ErrorKind::InvalidInput, e))
}

/// A TCP connection, possibly wrapped in TLS.
pub enum Stream {
    /// Plain TCP.
    Tcp(TcpStream),
    /// TLS over TCP.
    Tls(Box<StreamOwned<ClientConnection, TcpStream>>),
}

impl Stream {
    /// Wraps `tcp` in TLS for `host` and completes the handshake within `timeout`. Data
    /// connections use the same `config` as the control connection, so the TLS session is
    /// resumed, as servers that protect against data-connection theft require.
    ///
    /// # Errors
    /// A bad server name, a failed or timed-out handshake, or a certificate the client does not
    /// trust.
    pub fn tls(
        tcp: TcpStream,
        config: &Arc<ClientConfig>,
        host: &str,
        timeout: Duration,
    ) -> io::Result<Stream> {
        let conn = ClientConnection::new(Arc::clone(config), server_name(host)?)
            .map_err(io::Error::other)?;
        let previous = tcp.read_timeout()?;
        tcp.set_read_timeout(Some(timeout))?;
        let mut tls = StreamOwned::new(conn, tcp);
        while tls.conn.is_handshaking() {
            tls.conn.complete_io(&mut tls.sock)?;
        }
        tls.sock.set_read_timeout(previous)?;
        Ok(Stream::Tls(Box::new(tls)))
    }

    /// The TCP socket underneath (for timeouts and addresses).
    pub fn tcp(&self) -> &TcpStream {
        match self {
            Stream::Tcp(s) => s,
            Stream::Tls(s) => &s.sock,
        }
    }

    /// Whether this is TLS 1.3, whose session tickets are good for one resumption each.
    pub fn is_tls13(&self) -> bool {
        match self {
            Stream::Tcp(_) => false,
            Stream::Tls(s) => s.conn.protocol_version() == Some(ProtocolVersion::TLSv1_3),
        }
    }

    /// Unwraps a plain connection, for the switch to TLS.
    pub fn into_tcp(self) -> Option<TcpStream> {
        match self {
            Stream::Tcp(s) => Some(s),
            Stream::Tls(_) => None,
        }
    }

    /// The end of an upload: TLS close_notify (RFC 4217 §10), then TCP FIN, then whatever the
    /// server still sends (its close_notify, TLS 1.3 session tickets) is read until it closes,
    /// within `timeout`: closing a socket with unread data would reset the connection and the
    /// server would see the upload as broken. Best effort: the server's reply says whether the
    /// transfer succeeded.
    pub fn finish(&mut self, timeout: Duration) {
        if let Stream::Tls(tls) = self {
            tls.conn.send_close_notify();
            let _ = tls.conn.complete_io(&mut tls.sock);
        }
        let _ = self.tcp().shutdown(Shutdown::Write);
        let deadline = std::time::Instant::now() + timeout;
        let mut sink = [0u8; 4096];
        while std::time::Instant::now() < deadline {
            match self.read(&mut sink) {
                Ok(0) => break,
                Ok(_) => {}
                Err(e)
                    if matches!(
                        e.kind(),
                        io::ErrorKind::WouldBlock | io::ErrorKind::TimedOut
                    ) => {}
                Err(_) => break,
            }
        }
    }
}

impl Read for Stream {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        match self {
            Stream::Tcp(s) => s.read(buf),
            Stream::Tls(s) => s.read(buf),
        }
    }
}

impl Write for Stream {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        match self {
            Stream::Tcp(s) => s.write(buf),
            Stream::Tls(s) => s.write(buf),
        }
    }

    fn flush(&mut self) -> io::Result<()> {
        match self {
            Stream::Tcp(s) => s.flush(),
            Stream::Tls(s) => s.flush(),
        }
    }
}
