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

/// Accepts the data connection, only from `peer` (the control connection's client): a
/// connection from anywhere else is dropped and reported to `refused` with its address, and
/// the wait goes on (no port theft). From a balancer (`config.proxied`) the connection must
/// begin with a PROXY header, read within [`PROXY_HEADER_LIMIT`], and the client it names is
/// the one checked. The caller bounds the wait.
///
/// # Errors
/// [`DataError::NoConnection`] when accepting fails.
pub async fn accept_from(
    listener: &TcpListener,
    peer: ClientAddr,
    config: &Config,
    session: u64,
    refused: &impl Fn(SocketAddr),
) -> Result<TcpStream, DataError> {
    loop {
        let (mut stream, from) = match listener.accept().await {
            Ok(accepted) => accepted,
            Err(e) => {
                log::warn!("session {session}: passive accept failed: {e}");
                return Err(DataError::NoConnection);
            }
        };
        let client = if config.proxied(from.ip()) {
            match tokio::time::timeout(PROXY_HEADER_LIMIT, read_header(&mut stream)).await {
                Ok(Ok(Proxied::Client(client))) => client,
                Ok(Ok(Proxied::Local)) => {
                    log::debug!("session {session}: a health check on the passive port");
                    continue;
                }
                Ok(Err(e)) => {
                    log::debug!("session {session}: data connection from {from}: {e}");
                    refused(from);
                    continue;
                }
                Err(_) => {
                    log::debug!("session {session}: no PROXY header in time from {from}");
                    refused(from);
                    continue;
                }
            }
        } else {
            from
        };
        if peer.is_client(client.ip()) {
            stream.set_nodelay(true).ok();
            return Ok(stream);
        }
        refused(client);
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
    tokio::time::timeout(
        wait,
        accept_from(&listener, peer, &config, session, &refused),
    )
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
        .map_err(|_| DataError::Tls("TLS handshake timed out".into()))?
        .map_err(|e| DataError::Tls(e.to_string()))?;
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
        let accepted = accept_from(&listener, only, &config, 0, &count);
        let res = tokio::time::timeout(Duration::from_millis(300), accepted).await;
        assert!(res.is_err(), "a stranger's connection was accepted");
        assert_eq!(refused.load(Ordering::SeqCst), 1);
        client.await.expect("join").expect("connected");
    }

    #[tokio::test]
    async fn from_a_balancer_the_header_names_the_client_that_is_checked() {
        let config = Config {
            proxy_protocol_from: vec!["127.0.0.1/32".parse().expect("net")],
            ..Config::default()
        };
        let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
        let addr = listener.local_addr().expect("addr");
        let header = |client: &str| {
            use ppp::v2::{Builder, Command, Protocol, Version};
            Builder::with_addresses(
                Version::Two | Command::Proxy,
                Protocol::Stream,
                (
                    client.parse::<SocketAddr>().expect("client"),
                    "[2001:db8::1]:21".parse::<SocketAddr>().expect("server"),
                ),
            )
            .build()
            .expect("header")
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
            let mut own = TcpStream::connect(addr).await.expect("connect");
            let mut sent = header("[2001:db8::7]:5001");
            sent.extend_from_slice(b"file bytes");
            own.write_all(&sent).await.expect("write");
            (bare, other, own)
        };
        let (accepted, _clients) = tokio::time::timeout(Duration::from_secs(10), async {
            tokio::join!(
                accept_from(&listener, control, &config, 0, &record),
                clients
            )
        })
        .await
        .expect("accepted in time");
        let mut stream = accepted.expect("the client's connection");
        let mut buf = [0u8; 10];
        stream.read_exact(&mut buf).await.expect("read");
        assert_eq!(&buf, b"file bytes");
        let refused = refused.lock().expect("lock").clone();
        assert_eq!(refused.len(), 2, "{refused:?}");
        assert_eq!(refused[0].ip(), IpAddr::from([127, 0, 0, 1]));
        assert_eq!(refused[1], "[2001:db8::8]:5000".parse().expect("addr"));
    }
}
