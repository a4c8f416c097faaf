//! What happens to a connection before FTP: from a load balancer (`proxy_protocol_from`) the
//! PROXY header, then the implicit TLS handshake, under one time limit for the whole stage. It
//! yields the stream the session speaks FTP on and the client's address; admission (bans,
//! session caps) runs after it, on that address. Passive data connections from a balancer
//! read their header with [`read_header`] too.

use std::fmt;
use std::io;
use std::net::SocketAddr;
use std::time::Duration;

use tokio::io::{AsyncRead, AsyncReadExt};
use tokio_rustls::TlsAcceptor;
use tokio_rustls::server::TlsStream;

use crate::net::addr::ClientAddr;
use crate::net::pending::PendingSlot;
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

impl fmt::Debug for Ready {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Ready")
            .field("addr", &self.addr)
            .finish_non_exhaustive()
    }
}

/// Why a connection did not get through the preamble; it is dropped.
#[derive(Debug)]
pub enum Failure {
    /// The stage took longer than its limit.
    TimedOut,
    /// The implicit TLS handshake failed.
    Tls(io::Error),
    /// A connection from a balancer did not begin with a valid PROXY header.
    Proxy(HeaderError),
    /// The balancer's own connection (a v2 LOCAL header or v1 UNKNOWN): a health check, not a
    /// client; it gets no session.
    HealthCheck,
    /// The client the PROXY header names already holds its bound of places in the preamble;
    /// the connection (still plain TCP) is to be refused as over the per-address cap.
    AddressFull(Box<Ready>),
}

impl fmt::Display for Failure {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Failure::TimedOut => f.write_str("timed out before FTP began"),
            Failure::Tls(e) => write!(f, "implicit TLS handshake failed: {e}"),
            Failure::Proxy(e) => write!(f, "no valid PROXY header: {e}"),
            Failure::HealthCheck => f.write_str("the balancer's health check"),
            Failure::AddressFull(ready) => {
                write!(f, "{} holds its share of the preamble", ready.addr)
            }
        }
    }
}

/// How long a passive data connection from a balancer may take to send its PROXY header
/// (control connections have the preamble's limit).
pub const PROXY_HEADER_LIMIT: Duration = Duration::from_secs(10);
/// The longest PROXY v1 line, CRLF included (the protocol's own bound).
const V1_MAX: usize = 107;
/// The most a v2 header may declare after its 16 fixed bytes: addresses and TLVs. HAProxy's
/// headers are far shorter; the protocol's own bound (64 KiB) is no bound for a hostile peer.
const V2_MAX_DECLARED: usize = 1024;
/// The v2 signature.
const V2_SIGNATURE: &[u8] = b"\r\n\r\n\0\r\nQUIT\n";
/// The v2 fixed part: signature, version and command, family and protocol, length.
const V2_FIXED: usize = 16;
/// The shortest header of either version (`PROXY UNKNOWN\r\n`): read at once, it never
/// takes a byte past the header.
const SHORTEST: usize = 15;

/// What a PROXY header says.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Proxied {
    /// The client's address and port.
    Client(SocketAddr),
    /// The balancer speaks for itself (v2 LOCAL, v1 UNKNOWN): a health check.
    Local,
}

/// Why a PROXY header was not read.
#[derive(Debug)]
pub enum HeaderError {
    /// The connection failed or closed before the header ended.
    Io(io::Error),
    /// Neither signature: the peer did not send a header.
    Missing,
    /// A v1 line or v2 header longer than its bound.
    TooLong,
    /// The header is malformed, or names no IP client (UNIX sockets, UDP).
    Invalid(String),
}

impl fmt::Display for HeaderError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            HeaderError::Io(e) if e.kind() == io::ErrorKind::UnexpectedEof => {
                f.write_str("closed before the header ended")
            }
            HeaderError::Io(e) => write!(f, "read failed: {e}"),
            HeaderError::Missing => f.write_str("the connection did not begin with one"),
            HeaderError::TooLong => f.write_str("header too long"),
            HeaderError::Invalid(why) => write!(f, "malformed header: {why}"),
        }
    }
}

impl From<io::Error> for HeaderError {
    fn from(e: io::Error) -> HeaderError {
        HeaderError::Io(e)
    }
}

/// Reads a PROXY header (v1 or v2) from the start of `stream`, and not one byte past it: what
/// follows (FTP, a TLS handshake, data) stays in the stream. The caller bounds the time.
///
/// # Errors
/// [`HeaderError`] when the stream does not begin with a valid header.
pub async fn read_header(stream: &mut (impl AsyncRead + Unpin)) -> Result<Proxied, HeaderError> {
    let mut head = vec![0u8; SHORTEST];
    stream.read_exact(&mut head).await?;
    if head.starts_with(V2_SIGNATURE) {
        head.resize(V2_FIXED, 0);
        stream.read_exact(&mut head[SHORTEST..]).await?;
        let declared = usize::from(u16::from_be_bytes([head[14], head[15]]));
        if declared > V2_MAX_DECLARED {
            return Err(HeaderError::TooLong);
        }
        head.resize(V2_FIXED + declared, 0);
        stream.read_exact(&mut head[V2_FIXED..]).await?;
        v2_client(&head)
    } else if head.starts_with(b"PROXY ") {
        // Byte by byte: the line's end is not known before it is seen.
        while !head.ends_with(b"\r\n") {
            if head.len() >= V1_MAX {
                return Err(HeaderError::TooLong);
            }
            head.push(stream.read_u8().await?);
        }
        v1_client(&head)
    } else {
        Err(HeaderError::Missing)
    }
}

fn v2_client(head: &[u8]) -> Result<Proxied, HeaderError> {
    use ppp::v2::{Addresses, Command, Header, Protocol};
    let header = Header::try_from(head).map_err(|e| HeaderError::Invalid(e.to_string()))?;
    if header.command == Command::Local {
        return Ok(Proxied::Local);
    }
    match (header.protocol, header.addresses) {
        (Protocol::Stream, Addresses::IPv4(a)) => Ok(Proxied::Client(SocketAddr::new(
            a.source_address.into(),
            a.source_port,
        ))),
        (Protocol::Stream, Addresses::IPv6(a)) => Ok(Proxied::Client(SocketAddr::new(
            a.source_address.into(),
            a.source_port,
        ))),
        (protocol, addresses) => Err(HeaderError::Invalid(format!(
            "no TCP client ({protocol:?}, {addresses:?})"
        ))),
    }
}

fn v1_client(line: &[u8]) -> Result<Proxied, HeaderError> {
    use ppp::v1::{Addresses, Header};
    let header = Header::try_from(line).map_err(|e| HeaderError::Invalid(e.to_string()))?;
    Ok(match header.addresses {
        Addresses::Unknown => Proxied::Local,
        Addresses::Tcp4(a) => {
            Proxied::Client(SocketAddr::new(a.source_address.into(), a.source_port))
        }
        Addresses::Tcp6(a) => {
            Proxied::Client(SocketAddr::new(a.source_address.into(), a.source_port))
        }
    })
}

/// Runs the preamble on `tcp`, accepted from `addr`: from a balancer (`proxied`, with the
/// connection's place in the preamble), the PROXY header, which names the client, and the
/// place moves to that client, under its per-address bound, before any TLS; then with
/// `implicit_tls`, the TLS handshake. The whole stage gets `limit`, however its steps share
/// it. `addr` names the client once the header has: a failure after it is the client's.
///
/// # Errors
/// [`Failure`] when the stage times out or a step fails, for a health check, and for a client
/// over its bound.
pub async fn run(
    tcp: UrgentSafeTcp,
    addr: &mut ClientAddr,
    proxied: Option<&mut PendingSlot>,
    implicit_tls: Option<&TlsAcceptor>,
    limit: Duration,
) -> Result<Ready, Failure> {
    tokio::time::timeout(limit, steps(tcp, addr, proxied, implicit_tls))
        .await
        .unwrap_or(Err(Failure::TimedOut))
}

async fn steps(
    mut tcp: UrgentSafeTcp,
    addr: &mut ClientAddr,
    proxied: Option<&mut PendingSlot>,
    implicit_tls: Option<&TlsAcceptor>,
) -> Result<Ready, Failure> {
    // The header comes first and in the clear, before any TLS.
    if let Some(slot) = proxied {
        match read_header(&mut tcp).await.map_err(Failure::Proxy)? {
            Proxied::Client(client) => *addr = addr.via_balancer(client),
            Proxied::Local => return Err(Failure::HealthCheck),
        }
        // Else one client behind the balancer could hold every place with silent handshakes.
        if slot.rekey(addr.ip()).is_err() {
            let stream = Stream::Plain(tcp);
            let addr = *addr;
            return Err(Failure::AddressFull(Box::new(Ready { stream, addr })));
        }
    }
    let stream = match implicit_tls {
        None => Stream::Plain(tcp),
        Some(tls) => {
            // Counted as failed also when the preamble's time runs out in the middle.
            let count = crate::tls::HandshakeCount::start();
            let accepted = tls.accept(tcp).await;
            count.end(accepted.is_ok());
            Stream::Tls(Box::new(accepted.map_err(Failure::Tls)?))
        }
    };
    Ok(Ready {
        stream,
        addr: *addr,
    })
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
        let certificate = crate::tls::Certificate::load(&cert, &key).expect("certificate");
        let server = crate::tls::server_config(certificate).expect("server config");
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

    /// A balancer's place in the preamble, under bounds the tests do not reach.
    fn balancer_slot() -> PendingSlot {
        crate::net::pending::Pending::new(8, 1)
            .enter(std::net::IpAddr::from([127, 0, 0, 1]), true)
            .expect("a place")
    }

    async fn bounded<T>(what: &str, f: impl Future<Output = T>) -> T {
        tokio::time::timeout(BOUND, f)
            .await
            .unwrap_or_else(|_| panic!("{what} did not finish"))
    }

    #[tokio::test]
    async fn a_silent_client_on_implicit_tls_is_dropped_after_the_limit() {
        let (tls, _) = tls_pair();
        let (mut client, tcp, mut addr) = connected().await;
        let failed = crate::tls::failed_handshakes();
        let outcome = bounded(
            "the preamble",
            run(tcp, &mut addr, None, Some(&tls), Duration::from_millis(200)),
        )
        .await;
        assert!(
            matches!(outcome, Err(Failure::TimedOut)),
            "{:?}",
            outcome.err()
        );
        assert!(
            crate::tls::failed_handshakes() > failed,
            "a handshake cut off by the limit counts as failed"
        );
        // The server's end went with the failed preamble: the client reads the close.
        let mut buf = [0u8; 16];
        let read = bounded("the close", client.read(&mut buf)).await;
        assert_eq!(read.expect("read"), 0);
    }

    #[tokio::test]
    async fn an_implicit_tls_handshake_yields_a_tls_stream_and_the_address() {
        let (tls, connector) = tls_pair();
        let (client, tcp, mut addr) = connected().await;
        let name = rustls::pki_types::ServerName::try_from("localhost").expect("name");
        let (ready, client) = bounded("the handshake", async {
            tokio::join!(
                run(tcp, &mut addr, None, Some(&tls), BOUND),
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
        let (mut client, tcp, mut addr) = connected().await;
        client.write_all(b"USER alice\r\n").await.expect("write");
        let outcome = bounded("the preamble", run(tcp, &mut addr, None, Some(&tls), BOUND)).await;
        assert!(
            matches!(outcome, Err(Failure::Tls(_))),
            "{:?}",
            outcome.err()
        );
    }

    #[tokio::test]
    async fn a_plain_listener_passes_the_connection_through_untouched() {
        let (mut client, tcp, mut addr) = connected().await;
        let ready = bounded("the preamble", run(tcp, &mut addr, None, None, BOUND))
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

    fn sock(text: &str) -> SocketAddr {
        text.parse().expect("socket address")
    }

    /// A v2 header (PROXY over TCP) naming `client`, for a server at `server`.
    fn v2(client: &str, server: &str) -> Vec<u8> {
        use ppp::v2::{Builder, Command, Protocol, Version};
        Builder::with_addresses(
            Version::Two | Command::Proxy,
            Protocol::Stream,
            (sock(client), sock(server)),
        )
        .build()
        .expect("v2 header")
    }

    /// A v2 LOCAL header (the balancer's health check).
    fn v2_local() -> Vec<u8> {
        use ppp::v2::{Addresses, Builder, Command, Protocol, Version};
        Builder::with_addresses(
            Version::Two | Command::Local,
            Protocol::Unspecified,
            Addresses::Unspecified,
        )
        .build()
        .expect("v2 header")
    }

    /// Reads a header from `input`, and returns what it says with the bytes left after it.
    async fn header_of(input: &[u8]) -> (Result<Proxied, HeaderError>, Vec<u8>) {
        let mut rest = input;
        let outcome = bounded("the header", read_header(&mut rest)).await;
        (outcome, rest.to_vec())
    }

    #[tokio::test]
    async fn v1_headers_name_ipv4_and_ipv6_clients_and_keep_what_follows() {
        let (got, rest) =
            header_of(b"PROXY TCP4 203.0.113.7 192.0.2.1 50123 21\r\nUSER alice\r\n").await;
        assert_eq!(got.expect("v1"), Proxied::Client(sock("203.0.113.7:50123")));
        assert_eq!(rest, b"USER alice\r\n");
        let (got, rest) =
            header_of(b"PROXY TCP6 2001:db8::7 2001:db8::1 4000 21\r\n\x16\x03\x01").await;
        assert_eq!(
            got.expect("v1"),
            Proxied::Client(sock("[2001:db8::7]:4000"))
        );
        assert_eq!(
            rest, b"\x16\x03\x01",
            "the TLS ClientHello after the header is kept"
        );
    }

    #[tokio::test]
    async fn v2_headers_name_ipv4_and_ipv6_clients_and_keep_what_follows() {
        let mut input = v2("203.0.113.7:50123", "192.0.2.1:21");
        input.extend_from_slice(b"USER alice\r\n");
        let (got, rest) = header_of(&input).await;
        assert_eq!(got.expect("v2"), Proxied::Client(sock("203.0.113.7:50123")));
        assert_eq!(rest, b"USER alice\r\n");
        let mut input = v2("[2001:db8::7]:4000", "[2001:db8::1]:21");
        input.extend_from_slice(b"PASS x\r\n");
        let (got, rest) = header_of(&input).await;
        assert_eq!(
            got.expect("v2"),
            Proxied::Client(sock("[2001:db8::7]:4000"))
        );
        assert_eq!(rest, b"PASS x\r\n");
    }

    #[tokio::test]
    async fn v2_local_and_v1_unknown_are_health_checks() {
        let mut input = v2_local();
        input.extend_from_slice(b"rest");
        let (got, rest) = header_of(&input).await;
        assert_eq!(got.expect("LOCAL"), Proxied::Local);
        assert_eq!(rest, b"rest");
        let (got, rest) = header_of(b"PROXY UNKNOWN\r\nrest").await;
        assert_eq!(got.expect("UNKNOWN"), Proxied::Local);
        assert_eq!(rest, b"rest");
    }

    #[tokio::test]
    async fn truncated_garbage_and_overlong_headers_are_refused() {
        let full = v2("203.0.113.7:50123", "192.0.2.1:21");
        for cut in [5, 15, 16, full.len() - 1] {
            let (got, _) = header_of(&full[..cut]).await;
            assert!(
                matches!(&got, Err(HeaderError::Io(e)) if e.kind() == io::ErrorKind::UnexpectedEof),
                "cut at {cut}: {got:?}"
            );
        }
        let (got, _) = header_of(b"PROXY TCP4 203.0.113.7").await;
        assert!(matches!(got, Err(HeaderError::Io(_))), "{got:?}");
        let (got, rest) = header_of(b"USER alice\r\nPASS secret\r\n").await;
        assert!(matches!(got, Err(HeaderError::Missing)), "{got:?}");
        assert_eq!(
            rest, b"S secret\r\n",
            "just the shortest header's length was read"
        );
        let (got, _) = header_of(b"PROXY TCP4 not-an-address 192.0.2.1 1 21\r\n").await;
        assert!(matches!(got, Err(HeaderError::Invalid(_))), "{got:?}");
        let (got, _) = header_of(b"PROXY TCP4 203.0.113.7 192.0.2.1 99999 21\r\n").await;
        assert!(matches!(got, Err(HeaderError::Invalid(_))), "{got:?}");
        let mut long = b"PROXY TCP4 ".to_vec();
        long.resize(4096, b'1');
        let (got, rest) = header_of(&long).await;
        assert!(matches!(got, Err(HeaderError::TooLong)), "{got:?}");
        assert_eq!(
            rest.len(),
            4096 - V1_MAX,
            "the line was read no further than its bound"
        );
        // A v2 header declaring more than the bound is refused before its body is read.
        let mut huge = full.clone();
        huge[14..16].copy_from_slice(&u16::MAX.to_be_bytes());
        huge.resize(V2_FIXED + 2000, 0);
        let (got, rest) = header_of(&huge).await;
        assert!(matches!(got, Err(HeaderError::TooLong)), "{got:?}");
        assert_eq!(rest.len(), 2000);
        // A bad version byte after the v2 signature.
        let mut bad = full;
        bad[12] = 0x31;
        let (got, _) = header_of(&bad).await;
        assert!(matches!(got, Err(HeaderError::Invalid(_))), "{got:?}");
        // UDP over IPv4 names no TCP client.
        let udp = ppp::v2::Builder::with_addresses(
            ppp::v2::Version::Two | ppp::v2::Command::Proxy,
            ppp::v2::Protocol::Datagram,
            (sock("203.0.113.7:1"), sock("192.0.2.1:21")),
        )
        .build()
        .expect("udp header");
        let (got, _) = header_of(&udp).await;
        assert!(matches!(got, Err(HeaderError::Invalid(_))), "{got:?}");
    }

    /// Writes `bytes` one at a time, each in a segment of its own.
    async fn trickle(client: &mut TcpStream, bytes: &[u8]) {
        client.set_nodelay(true).expect("nodelay");
        for byte in bytes {
            client.write_all(&[*byte]).await.expect("write");
            tokio::time::sleep(Duration::from_millis(2)).await;
        }
    }

    #[tokio::test]
    async fn a_header_in_many_small_writes_is_read_whole_and_ftp_follows_intact() {
        for (header, named) in [
            (
                v2("[2001:db8::7]:4000", "[2001:db8::1]:21"),
                "[2001:db8::7]:4000",
            ),
            (
                b"PROXY TCP4 203.0.113.7 192.0.2.1 50123 21\r\n".to_vec(),
                "203.0.113.7:50123",
            ),
        ] {
            let (mut client, tcp, mut addr) = connected().await;
            let mut sent = header.clone();
            sent.extend_from_slice(b"USER alice\r\n");
            let mut slot = balancer_slot();
            let (ready, ()) = bounded("the preamble", async {
                tokio::join!(
                    run(tcp, &mut addr, Some(&mut slot), None, BOUND),
                    trickle(&mut client, &sent)
                )
            })
            .await;
            let ready = ready.expect("preamble");
            assert_eq!(ready.addr.balancer(), Some(addr.tcp_peer()));
            assert_eq!(ready.addr.client(), sock(named), "{}", ready.addr);
            let Stream::Plain(mut server) = ready.stream else {
                panic!("TLS on a plain listener");
            };
            let mut buf = [0u8; 12];
            bounded("the read", server.read_exact(&mut buf))
                .await
                .expect("read");
            assert_eq!(&buf, b"USER alice\r\n");
        }
    }

    #[tokio::test]
    async fn a_slow_header_hits_the_stage_limit() {
        let (mut client, tcp, mut addr) = connected().await;
        let header = v2("203.0.113.7:50123", "192.0.2.1:21");
        client.write_all(&header[..10]).await.expect("write");
        let started = std::time::Instant::now();
        let outcome = bounded(
            "the preamble",
            run(
                tcp,
                &mut addr,
                Some(&mut balancer_slot()),
                None,
                Duration::from_millis(300),
            ),
        )
        .await;
        assert!(
            matches!(outcome, Err(Failure::TimedOut)),
            "{:?}",
            outcome.err()
        );
        assert!(started.elapsed() >= Duration::from_millis(300));
    }

    #[tokio::test]
    async fn from_a_balancer_a_missing_header_fails_and_a_local_one_is_a_health_check() {
        let (mut client, tcp, mut addr) = connected().await;
        client
            .write_all(b"USER alice\r\n\r\n\r\n")
            .await
            .expect("write");
        let outcome = bounded(
            "the preamble",
            run(tcp, &mut addr, Some(&mut balancer_slot()), None, BOUND),
        )
        .await;
        assert!(
            matches!(outcome, Err(Failure::Proxy(HeaderError::Missing))),
            "{:?}",
            outcome.err()
        );
        let (mut client, tcp, mut addr) = connected().await;
        client.write_all(&v2_local()).await.expect("write");
        let outcome = bounded(
            "the preamble",
            run(tcp, &mut addr, Some(&mut balancer_slot()), None, BOUND),
        )
        .await;
        assert!(
            matches!(outcome, Err(Failure::HealthCheck)),
            "{:?}",
            outcome.err()
        );
    }

    #[tokio::test]
    async fn a_header_comes_before_implicit_tls() {
        let (tls, connector) = tls_pair();
        let (mut client, tcp, mut addr) = connected().await;
        client
            .write_all(&v2("[2001:db8::7]:4000", "[2001:db8::1]:990"))
            .await
            .expect("header");
        let name = rustls::pki_types::ServerName::try_from("localhost").expect("name");
        let mut slot = balancer_slot();
        let (ready, client) = bounded("the handshake", async {
            tokio::join!(
                run(tcp, &mut addr, Some(&mut slot), Some(&tls), BOUND),
                connector.connect(name, client)
            )
        })
        .await;
        let ready = ready.expect("preamble");
        client.expect("client handshake");
        assert_eq!(ready.addr.client(), sock("[2001:db8::7]:4000"));
        assert!(matches!(ready.stream, Stream::Tls(_)));
    }

    /// Hostile v2 headers: declared lengths shorter than the family's addresses, every
    /// family/protocol byte. None may panic.
    #[tokio::test]
    async fn hostile_v2_headers_of_every_family_and_short_lengths_never_panic() {
        for ver_cmd in [0x20u8, 0x21, 0x22, 0x2f] {
            for fam in 0u8..=0xff {
                for declared in [0u16, 1, 4, 11, 12, 13, 35, 36, 37, 215, 216, 217] {
                    let mut h = V2_SIGNATURE.to_vec();
                    h.push(ver_cmd);
                    h.push(fam);
                    h.extend_from_slice(&declared.to_be_bytes());
                    h.resize(V2_FIXED + usize::from(declared), 0x03);
                    let mut rest = &h[..];
                    let _ = read_header(&mut rest).await;
                }
            }
        }
    }

    #[tokio::test]
    async fn a_header_moves_the_place_to_its_client_under_the_client_bound() {
        let pending = crate::net::pending::Pending::new(8, 1);
        let balancer = std::net::IpAddr::from([127, 0, 0, 1]);
        let mut places = Vec::new();
        for (client, full) in [
            ("203.0.113.66:40000", false),
            ("203.0.113.66:40001", true),
            ("203.0.113.7:40000", false),
        ] {
            let (mut peer, tcp, mut addr) = connected().await;
            peer.write_all(&v2(client, "192.0.2.1:21"))
                .await
                .expect("write");
            let mut slot = pending.enter(balancer, true).expect("a place");
            let outcome = bounded(
                "the preamble",
                run(tcp, &mut addr, Some(&mut slot), None, BOUND),
            )
            .await;
            assert_eq!(addr.client(), sock(client));
            match outcome {
                Err(Failure::AddressFull(ready)) if full => {
                    assert_eq!(ready.addr.client(), sock(client));
                    assert!(matches!(ready.stream, Stream::Plain(_)));
                }
                Ok(ready) if !full => assert_eq!(ready.addr.client(), sock(client)),
                other => panic!("{client}: {other:?}"),
            }
            places.push((slot, peer));
        }
    }
}
