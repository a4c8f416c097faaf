//! What happens to a connection before FTP: today the implicit TLS handshake, under one time
//! limit for the whole stage. It yields the stream the session speaks FTP on and the client's
//! address; admission (bans, session caps) runs after it, on that address.

use std::fmt;
use std::io;
use std::time::Duration;

use tokio_rustls::TlsAcceptor;
use tokio_rustls::server::TlsStream;

use crate::net::addr::ClientAddr;
use crate::net::urgent::UrgentSafeTcp;

/// The stream after the preamble.
pub enum Stream {
    /// Plain TCP.
    Plain(UrgentSafeTcp),
    /// Implicit TLS, handshake done.
    Tls(Box<TlsStream<UrgentSafeTcp>>),
}

/// A connection ready for FTP.
pub struct Ready {
    /// The stream to speak FTP on.
    pub stream: Stream,
    /// The client's address, as the preamble found it.
    pub addr: ClientAddr,
}

/// Why a connection did not get through the preamble; it is dropped.
#[derive(Debug)]
pub enum Failure {
    /// The stage took longer than its limit.
    TimedOut,
    /// The implicit TLS handshake failed.
    Tls(io::Error),
}

impl fmt::Display for Failure {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Failure::TimedOut => f.write_str("timed out before FTP began"),
            Failure::Tls(e) => write!(f, "implicit TLS handshake failed: {e}"),
        }
    }
}

/// Runs the preamble on `tcp`, accepted from `addr`: with `implicit_tls`, the TLS handshake.
/// The whole stage gets `limit`, however its steps share it.
///
/// # Errors
/// [`Failure`] when the stage times out or a step fails.
pub async fn run(
    tcp: UrgentSafeTcp,
    addr: ClientAddr,
    implicit_tls: Option<&TlsAcceptor>,
    limit: Duration,
) -> Result<Ready, Failure> {
    tokio::time::timeout(limit, steps(tcp, addr, implicit_tls))
        .await
        .unwrap_or(Err(Failure::TimedOut))
}

async fn steps(
    tcp: UrgentSafeTcp,
    addr: ClientAddr,
    implicit_tls: Option<&TlsAcceptor>,
) -> Result<Ready, Failure> {
    // A PROXY header, on a listener that expects one, comes first and in the clear: it is read
    // here and names the client in place of `addr`.
    let stream = match implicit_tls {
        None => Stream::Plain(tcp),
        Some(tls) => Stream::Tls(Box::new(tls.accept(tcp).await.map_err(Failure::Tls)?)),
    };
    Ok(Ready { stream, addr })
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    use tokio::net::{TcpListener, TcpStream};

    /// Bounds every wait of a test, so a broken preamble fails instead of hanging.
    const BOUND: Duration = Duration::from_secs(10);

    /// A server's TLS acceptor and a client's connector that trusts it.
    fn tls_pair() -> (TlsAcceptor, tokio_rustls::TlsConnector) {
        let dir = tempfile::tempdir().expect("tempdir");
        crate::tls::generate_self_signed(dir.path()).expect("certificate");
        let (cert, key) = (dir.path().join("cert.pem"), dir.path().join("key.pem"));
        let server = crate::tls::server_config(&cert, &key).expect("server config");
        let client = crate::tls::client_config(&crate::tls::Trust::CaFile(&cert)).expect("client");
        (
            TlsAcceptor::from(server),
            tokio_rustls::TlsConnector::from(client),
        )
    }

    /// A connected pair: the client's stream, and the server's with its addresses.
    async fn connected() -> (TcpStream, UrgentSafeTcp, ClientAddr) {
        let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
        let (client, accepted) = tokio::join!(
            TcpStream::connect(listener.local_addr().expect("addr")),
            listener.accept()
        );
        let (server, _) = accepted.expect("accept");
        let addr = ClientAddr::of_stream(&server).expect("addresses");
        (client.expect("connect"), UrgentSafeTcp::new(server), addr)
    }

    async fn bounded<T>(what: &str, f: impl Future<Output = T>) -> T {
        tokio::time::timeout(BOUND, f)
            .await
            .unwrap_or_else(|_| panic!("{what} did not finish"))
    }

    #[tokio::test]
    async fn a_silent_client_on_implicit_tls_is_dropped_after_the_limit() {
        let (tls, _) = tls_pair();
        let (mut client, tcp, addr) = connected().await;
        let outcome = bounded(
            "the preamble",
            run(tcp, addr, Some(&tls), Duration::from_millis(200)),
        )
        .await;
        assert!(
            matches!(outcome, Err(Failure::TimedOut)),
            "{:?}",
            outcome.err()
        );
        // The server's end went with the failed preamble: the client reads the close.
        let mut buf = [0u8; 16];
        let read = bounded("the close", client.read(&mut buf)).await;
        assert_eq!(read.expect("read"), 0);
    }

    #[tokio::test]
    async fn an_implicit_tls_handshake_yields_a_tls_stream_and_the_address() {
        let (tls, connector) = tls_pair();
        let (client, tcp, addr) = connected().await;
        let name = rustls::pki_types::ServerName::try_from("localhost").expect("name");
        let (ready, client) = bounded("the handshake", async {
            tokio::join!(
                run(tcp, addr, Some(&tls), BOUND),
                connector.connect(name, client)
            )
        })
        .await;
        let ready = ready.expect("preamble");
        let mut client = client.expect("client handshake");
        assert_eq!(ready.addr, addr);
        let Stream::Tls(mut server) = ready.stream else {
            panic!("no TLS after an implicit TLS preamble");
        };
        bounded("the write", client.write_all(b"NOOP\r\n"))
            .await
            .expect("write");
        let mut buf = [0u8; 6];
        bounded("the read", server.read_exact(&mut buf))
            .await
            .expect("read");
        assert_eq!(&buf, b"NOOP\r\n");
    }

    #[tokio::test]
    async fn a_client_that_does_not_speak_tls_fails_the_handshake() {
        let (tls, _) = tls_pair();
        let (mut client, tcp, addr) = connected().await;
        client.write_all(b"USER alice\r\n").await.expect("write");
        let outcome = bounded("the preamble", run(tcp, addr, Some(&tls), BOUND)).await;
        assert!(
            matches!(outcome, Err(Failure::Tls(_))),
            "{:?}",
            outcome.err()
        );
    }

    #[tokio::test]
    async fn a_plain_listener_passes_the_connection_through_untouched() {
        let (mut client, tcp, addr) = connected().await;
        let ready = bounded("the preamble", run(tcp, addr, None, BOUND))
            .await
            .expect("preamble");
        assert_eq!(ready.addr, addr);
        let Stream::Plain(mut server) = ready.stream else {
            panic!("TLS on a plain listener");
        };
        // Nothing was read: the client's first bytes are still there for FTP.
        client.write_all(b"USER alice\r\n").await.expect("write");
        let mut buf = [0u8; 12];
        bounded("the read", server.read_exact(&mut buf))
            .await
            .expect("read");
        assert_eq!(&buf, b"USER alice\r\n");
    }
}
