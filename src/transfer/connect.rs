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
/// the wait goes on (no port theft). The caller bounds the wait.
///
/// # Errors
/// [`DataError::NoConnection`] when accepting fails.
pub async fn accept_from(
    listener: &TcpListener,
    peer: ClientAddr,
    session: u64,
    refused: &impl Fn(SocketAddr),
) -> Result<TcpStream, DataError> {
    loop {
        match listener.accept().await {
            Err(e) => {
                log::warn!("session {session}: passive accept failed: {e}");
                return Err(DataError::NoConnection);
            }
            Ok((stream, from)) if peer.is_client(from.ip()) => {
                stream.set_nodelay(true).ok();
                return Ok(stream);
            }
            Ok((_, from)) => refused(from),
        }
    }
}

/// Registers `listener` on the current (transfer) thread and accepts the data connection
/// from `peer` within `wait`.
pub(super) async fn accept_passive(
    listener: std::net::TcpListener,
    peer: ClientAddr,
    wait: Duration,
    session: u64,
    refused: impl Fn(SocketAddr),
) -> Result<TcpStream, DataError> {
    let listener = TcpListener::from_std(listener).map_err(|e| {
        log::warn!("session {session}: passive listener unusable: {e}");
        DataError::NoConnection
    })?;
    tokio::time::timeout(wait, accept_from(&listener, peer, session, &refused))
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
        let accepted = accept_from(&listener, only, 0, &count);
        let res = tokio::time::timeout(Duration::from_millis(300), accepted).await;
        assert!(res.is_err(), "a stranger's connection was accepted");
        assert_eq!(refused.load(Ordering::SeqCst), 1);
        client.await.expect("join").expect("connected");
    }
}
