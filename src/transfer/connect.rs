//! Making the data connection: a passive listener and its accept (only from the client), an
//! active connect, and TLS on it (PROT P).

use super::*;

/// Binds a passive-mode listener on `ip` (the control connection's local address), on a port
/// from `range` when one is configured, starting at a random port of it so concurrent sessions
/// rarely collide; otherwise on a port from the OS.
///
/// The listener is a std one: the transfer task registers it on the transfer pool.
///
/// # Errors
/// The last bind error when every port of the range is taken.
pub fn bind_passive(ip: IpAddr, range: Option<PortRange>) -> io::Result<std::net::TcpListener> {
    let bind = |port: u16| -> io::Result<std::net::TcpListener> {
        let listener = std::net::TcpListener::bind(SocketAddr::new(ip, port))?;
        listener.set_nonblocking(true)?;
        Ok(listener)
    };
    let Some(range) = range else {
        return bind(0);
    };
    let span = u32::from(range.high - range.low) + 1;
    let start = rand::random::<u32>() % span;
    let mut last = io::Error::new(io::ErrorKind::AddrInUse, "passive port range exhausted");
    for step in 0..span {
        let offset = (start + step) % span;
        let port = u16::try_from(u32::from(range.low) + offset).unwrap_or(range.high);
        match bind(port) {
            Ok(listener) => return Ok(listener),
            Err(e) => last = e,
        }
    }
    Err(last)
}

/// The same host whatever the family: an IPv4-mapped IPv6 address becomes its IPv4 form.
pub fn canonical(ip: IpAddr) -> IpAddr {
    match ip {
        IpAddr::V6(v6) => v6.to_ipv4_mapped().map_or(ip, IpAddr::V4),
        IpAddr::V4(_) => ip,
    }
}

/// Most PROXY headers read at once on one passive listener; further connections wait in the
/// backlog until one is read or times out.
const HEADERS_AT_ONCE: usize = 8;

/// A connection from a balancer, its header read (or not, within [`PROXY_HEADER_LIMIT`]).
type Headed = (
    TcpStream,
    SocketAddr,
    Result<Result<Proxied, HeaderError>, tokio::time::error::Elapsed>,
);

/// A passive listener, with the connections from a balancer whose PROXY headers are being
/// read: they belong to the listener, not to one wait, so a wait that is dropped (the
/// transfer command came first) loses none of them.
pub struct DataListener {
    listener: TcpListener,
    headers: tokio::task::JoinSet<Headed>,
}

impl DataListener {
    /// Takes over a listener registered on the current (transfer) runtime.
    pub fn new(listener: TcpListener) -> DataListener {
        DataListener {
            listener,
            headers: tokio::task::JoinSet::new(),
        }
    }

    /// Accepts the data connection, only from `peer` (the control connection's client): a
    /// connection from anywhere else is dropped and reported to `refused` with its address,
    /// and the wait goes on (no port theft). From a balancer (`config.proxied`) the
    /// connection must begin with a PROXY header, read within [`PROXY_HEADER_LIMIT`] and up
    /// to `HEADERS_AT_ONCE` at a time, so one silent peer holds up no other; the client it
    /// names is the one checked. Cancel-safe; the caller bounds the wait.
    ///
    /// # Errors
    /// [`DataError::NoConnection`] when accepting fails.
    pub async fn accept_from(
        &mut self,
        peer: ClientAddr,
        config: &Config,
        session: u64,
        refused: &impl Fn(SocketAddr),
    ) -> Result<TcpStream, DataError> {
        loop {
            // At least one branch is always enabled: no room means headers are being read.
            let room = self.headers.len() < HEADERS_AT_ONCE;
            let (stream, client) = tokio::select! {
                accepted = self.listener.accept(), if room => match accepted {
                    Ok((mut stream, from)) if config.proxied(from.ip()) => {
                        self.headers.spawn(async move {
                            let header =
                                tokio::time::timeout(PROXY_HEADER_LIMIT, read_header(&mut stream))
                                    .await;
                            (stream, from, header)
                        });
                        continue;
                    }
                    Ok((stream, from)) => (stream, from),
                    Err(e) => {
                        log::warn!("session {session}: passive accept failed: {e}");
                        return Err(DataError::NoConnection);
                    }
                },
                Some(read) = self.headers.join_next() => match read {
                    Ok((stream, _, Ok(Ok(Proxied::Client(client))))) => (stream, client),
                    Ok((_, _, Ok(Ok(Proxied::Local)))) => {
                        log::debug!("session {session}: a health check on the passive port");
                        continue;
                    }
                    Ok((_, from, Ok(Err(e)))) => {
                        log::debug!("session {session}: data connection from {from}: {e}");
                        refused(from);
                        continue;
                    }
                    Ok((_, from, Err(_))) => {
                        log::debug!("session {session}: no PROXY header in time from {from}");
                        refused(from);
                        continue;
                    }
                    Err(e) => {
                        log::warn!("session {session}: reading a PROXY header failed: {e}");
                        continue;
                    }
                },
            };
            if peer.is_client(client.ip()) {
                stream.set_nodelay(true).ok();
                return Ok(stream);
            }
            refused(client);
        }
    }
}

/// Registers `listener` on the current (transfer) thread and accepts the data connection
/// from `peer` within `wait`.
pub(super) async fn accept_passive(
    listener: std::net::TcpListener,
    peer: ClientAddr,
    config: Arc<Config>,
    wait: Duration,
    session: u64,
    refused: impl Fn(SocketAddr),
) -> Result<TcpStream, DataError> {
    let listener = TcpListener::from_std(listener).map_err(|e| {
        log::warn!("session {session}: passive listener unusable: {e}");
        DataError::NoConnection
    })?;
    let mut listener = DataListener::new(listener);
    tokio::time::timeout(wait, listener.accept_from(peer, &config, session, &refused))
        .await
        .unwrap_or(Err(DataError::NoConnection))
}

/// Connects to an active-mode client from `local` (port from the OS), within `wait`.
pub(super) async fn connect_from(
    local: IpAddr,
    target: SocketAddr,
    wait: Duration,
) -> Result<TcpStream, DataError> {
    let local = match (canonical(local), target) {
        (IpAddr::V4(v4), SocketAddr::V4(_)) => IpAddr::V4(v4),
        (IpAddr::V6(v6), SocketAddr::V6(_)) => IpAddr::V6(v6),
        // The control connection came over the other family: let the OS pick the source.
        (_, SocketAddr::V4(_)) => IpAddr::V4(std::net::Ipv4Addr::UNSPECIFIED),
        (_, SocketAddr::V6(_)) => IpAddr::V6(std::net::Ipv6Addr::UNSPECIFIED),
    };
    let socket = match target {
        SocketAddr::V4(_) => tokio::net::TcpSocket::new_v4(),
        SocketAddr::V6(_) => tokio::net::TcpSocket::new_v6(),
    }
    .map_err(|_| DataError::NoConnection)?;
    socket
        .bind(SocketAddr::new(local, 0))
        .map_err(|_| DataError::NoConnection)?;
    match tokio::time::timeout(wait, socket.connect(target)).await {
        Ok(Ok(stream)) => {
            stream.set_nodelay(true).ok();
            Ok(stream)
        }
        _ => Err(DataError::NoConnection),
    }
}

/// TLS on a data connection (PROT P).
#[derive(Clone)]
pub struct Protection {
    /// The server's TLS configuration.
    pub tls: tokio_rustls::TlsAcceptor,
    /// Refuse a data connection that does not resume a TLS session (RFC 4217 §10 advice
    /// against data-connection theft).
    pub require_resumption: bool,
}

/// Wraps an open data connection in TLS.
pub(super) async fn protect(
    stream: TcpStream,
    protection: &Protection,
) -> Result<tokio_rustls::server::TlsStream<TcpStream>, DataError> {
    let tls = tokio::time::timeout(crate::tls::HANDSHAKE_TIMEOUT, protection.tls.accept(stream))
        .await
        .map_err(|_| DataError::Tls("TLS handshake timed out".into()))
        .and_then(|accepted| accepted.map_err(|e| DataError::Tls(e.to_string())));
    crate::tls::count_handshake(tls.is_ok());
    let tls = tls?;
    let resumed = tls.get_ref().1.handshake_kind() == Some(rustls::HandshakeKind::Resumed);
    if protection.require_resumption && !resumed {
        return Err(DataError::Tls(
            "TLS session resumption is required on data connections".into(),
        ));
    }
    Ok(tls)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn passive_range_binds_inside_range_and_refuses_strangers() {
        let probe = std::net::TcpListener::bind("127.0.0.1:0").expect("probe");
        let port = probe.local_addr().expect("addr").port();
        drop(probe);
        let range = PortRange {
            low: port,
            high: port,
        };
        let listener = bind_passive("127.0.0.1".parse().expect("ip"), Some(range)).expect("bind");
        assert_eq!(listener.local_addr().expect("addr").port(), port);
        let listener = TcpListener::from_std(listener).expect("register");
        // Only 127.0.0.2 may connect: our connection from 127.0.0.1 must be refused.
        let addr = listener.local_addr().expect("addr");
        let client = tokio::spawn(async move { TcpStream::connect(addr).await });
        let refused = AtomicUsize::new(0);
        let count = |from: SocketAddr| {
            assert_eq!(from.ip(), IpAddr::from([127, 0, 0, 1]));
            refused.fetch_add(1, Ordering::SeqCst);
        };
        let only = ClientAddr::direct("127.0.0.2:40000".parse().expect("client"), addr);
        let config = Config::default();
        let mut listener = DataListener::new(listener);
        let accepted = listener.accept_from(only, &config, 0, &count);
        let res = tokio::time::timeout(Duration::from_millis(300), accepted).await;
        assert!(res.is_err(), "a stranger's connection was accepted");
        assert_eq!(refused.load(Ordering::SeqCst), 1);
        client.await.expect("join").expect("connected");
    }

    /// A balancer's PROXY v2 header for a connection from `client` to `server`.
    fn proxy_v2(client: SocketAddr, server: SocketAddr) -> Vec<u8> {
        use ppp::v2::{Builder, Command, Protocol, Version};
        Builder::with_addresses(
            Version::Two | Command::Proxy,
            Protocol::Stream,
            (client, server),
        )
        .build()
        .expect("header")
    }

    #[tokio::test]
    async fn from_a_balancer_the_header_names_the_client_that_is_checked() {
        let config = Config {
            proxy_protocol_from: vec!["127.0.0.1/32".parse().expect("net")],
            ..Config::default()
        };
        let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
        let addr = listener.local_addr().expect("addr");
        let mut listener = DataListener::new(listener);
        let header = |client: &str| {
            proxy_v2(
                client.parse().expect("client"),
                "[2001:db8::1]:21".parse().expect("server"),
            )
        };
        let control = ClientAddr::direct("127.0.0.1:40000".parse().expect("balancer"), addr)
            .via_balancer("[2001:db8::7]:5000".parse().expect("client"));
        let refused = std::sync::Mutex::new(Vec::new());
        let record = |from: SocketAddr| refused.lock().expect("lock").push(from);
        let clients = async {
            // No header, another client's header, then the client's own with data after it.
            let mut bare = TcpStream::connect(addr).await.expect("connect");
            bare.write_all(b"hello there, no header\r\n")
                .await
                .expect("write");
            let mut other = TcpStream::connect(addr).await.expect("connect");
            other
                .write_all(&header("[2001:db8::8]:5000"))
                .await
                .expect("write");
            // Headers are read concurrently: the client connects once both others are refused.
            while refused.lock().expect("lock").len() < 2 {
                tokio::time::sleep(Duration::from_millis(10)).await;
            }
            let mut own = TcpStream::connect(addr).await.expect("connect");
            let mut sent = header("[2001:db8::7]:5001");
            sent.extend_from_slice(b"file bytes");
            own.write_all(&sent).await.expect("write");
            (bare, other, own)
        };
        let (accepted, _clients) = tokio::time::timeout(Duration::from_secs(10), async {
            tokio::join!(listener.accept_from(control, &config, 0, &record), clients)
        })
        .await
        .expect("accepted in time");
        let mut stream = accepted.expect("the client's connection");
        let mut buf = [0u8; 10];
        stream.read_exact(&mut buf).await.expect("read");
        assert_eq!(&buf, b"file bytes");
        let mut refused = refused.lock().expect("lock").clone();
        refused.sort();
        assert_eq!(refused.len(), 2, "{refused:?}");
        assert_eq!(refused[0].ip(), IpAddr::from([127, 0, 0, 1]), "{refused:?}");
        assert_eq!(refused[1], "[2001:db8::8]:5000".parse().expect("addr"));
    }

    /// `prepared` (transfer/mod.rs) races the accept against the transfer command: a wait
    /// dropped while a balancer's header is half read must not lose the connection.
    #[tokio::test]
    async fn a_connection_whose_header_is_half_read_outlives_a_dropped_wait() {
        let config = Config {
            proxy_protocol_from: vec!["127.0.0.1/32".parse().expect("net")],
            ..Config::default()
        };
        let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
        let addr = listener.local_addr().expect("addr");
        let mut listener = DataListener::new(listener);
        let header = proxy_v2("203.0.113.7:5000".parse().expect("client"), addr);
        let control = ClientAddr::direct("127.0.0.1:40000".parse().expect("balancer"), addr)
            .via_balancer("203.0.113.7:4000".parse().expect("client"));
        let refused = |from: SocketAddr| panic!("{from} refused");
        let mut balancer = TcpStream::connect(addr).await.expect("connect");
        balancer.write_all(&header[..10]).await.expect("half");
        // The transfer command wins the select! while the header is half read.
        let first = tokio::time::timeout(
            Duration::from_millis(200),
            listener.accept_from(control, &config, 0, &refused),
        )
        .await;
        assert!(first.is_err(), "the header was incomplete");
        // The select!'s other arm accepts again; the balancer sends the rest and data.
        let mut rest = header[10..].to_vec();
        rest.extend_from_slice(b"file bytes");
        let _ = balancer.write_all(&rest).await;
        let second = tokio::time::timeout(
            Duration::from_secs(2),
            listener.accept_from(control, &config, 0, &refused),
        )
        .await;
        let mut stream = second
            .expect("the client's connection was lost with the dropped future")
            .expect("accepted");
        let mut buf = [0u8; 10];
        stream.read_exact(&mut buf).await.expect("read");
        assert_eq!(&buf, b"file bytes");
    }

    #[tokio::test]
    async fn a_silent_peer_of_the_balancer_holds_up_no_other_header() {
        let config = Config {
            proxy_protocol_from: vec!["127.0.0.1/32".parse().expect("net")],
            ..Config::default()
        };
        let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
        let addr = listener.local_addr().expect("addr");
        let mut listener = DataListener::new(listener);
        let header = ppp::v2::Builder::with_addresses(
            ppp::v2::Version::Two | ppp::v2::Command::Proxy,
            ppp::v2::Protocol::Stream,
            (
                "203.0.113.7:5000".parse::<SocketAddr>().expect("client"),
                addr,
            ),
        )
        .build()
        .expect("header");
        let control = ClientAddr::direct("127.0.0.1:40000".parse().expect("balancer"), addr)
            .via_balancer("203.0.113.7:4000".parse().expect("client"));
        let refused = |from: SocketAddr| panic!("{from} refused");
        let _silent: Vec<_> =
            futures::future::join_all((0..HEADERS_AT_ONCE - 1).map(|_| TcpStream::connect(addr)))
                .await;
        let mut own = TcpStream::connect(addr).await.expect("connect");
        own.write_all(&header).await.expect("header");
        // Far less than PROXY_HEADER_LIMIT, which a serial read would wait per silent peer.
        let accepted = tokio::time::timeout(
            Duration::from_secs(2),
            listener.accept_from(control, &config, 0, &refused),
        )
        .await
        .expect("accepted while the others are silent");
        assert!(accepted.is_ok(), "{accepted:?}");
    }
}
