//! The client's address as the server believes it, and where the connection really came from.
//!
//! Every check that uses the client's address (bans, session caps, registration counts, the
//! passive-peer check, PORT/EPRT targets, audit events, logs) takes it from a [`ClientAddr`].
//! Straight from the client it is the TCP peer; behind a load balancer that speaks the PROXY
//! protocol the two differ, and only the PROXY header (read by the preamble) may say so.

use std::fmt;
use std::io;
use std::net::{IpAddr, SocketAddr};

use tokio::net::TcpStream;

/// One control connection's addresses.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ClientAddr {
    /// The client, canonical: an IPv4-mapped IPv6 address (`::ffff:a.b.c.d`, from a
    /// dual-stack listener) is `a.b.c.d`, so every check sees one address whichever listener
    /// it came by.
    client: SocketAddr,
    /// The TCP peer, as accepted.
    tcp_peer: SocketAddr,
    /// Whether the client came through a balancer (the TCP peer) that named it.
    proxied: bool,
    /// The server's end of the connection.
    local: SocketAddr,
}

impl ClientAddr {
    /// A connection straight from the client: the client is the TCP peer.
    pub fn direct(tcp_peer: SocketAddr, local: SocketAddr) -> ClientAddr {
        ClientAddr {
            client: SocketAddr::new(tcp_peer.ip().to_canonical(), tcp_peer.port()),
            tcp_peer,
            proxied: false,
            local,
        }
    }

    /// The same connection as a balancer's, which named `client` in its PROXY header.
    pub fn via_balancer(self, client: SocketAddr) -> ClientAddr {
        ClientAddr {
            client: SocketAddr::new(client.ip().to_canonical(), client.port()),
            proxied: true,
            ..self
        }
    }

    /// The balancer the connection came through, if it did.
    pub fn balancer(&self) -> Option<SocketAddr> {
        self.proxied.then_some(self.tcp_peer)
    }

    /// The addresses of an accepted stream, taken as a direct connection.
    ///
    /// # Errors
    /// When the peer is already gone.
    pub fn of_stream(stream: &TcpStream) -> io::Result<ClientAddr> {
        Ok(ClientAddr::direct(
            stream.peer_addr()?,
            stream.local_addr()?,
        ))
    }

    /// The client's IP address: the key for bans, caps and registration counts.
    pub fn ip(&self) -> IpAddr {
        self.client.ip()
    }

    /// The client's address and port.
    pub fn client(&self) -> SocketAddr {
        self.client
    }

    /// The TCP peer the connection came from (the balancer, behind one).
    pub fn tcp_peer(&self) -> SocketAddr {
        self.tcp_peer
    }

    /// The server's end of the control connection.
    pub fn local(&self) -> SocketAddr {
        self.local
    }

    /// Whether a data connection from `ip` is the client's (the passive-peer check: anyone
    /// else could be stealing the port).
    pub fn is_client(&self, ip: IpAddr) -> bool {
        ip.to_canonical() == self.ip()
    }

    /// Whether PORT or EPRT may connect to `target`: only back to the client's own address and
    /// to an unprivileged port, so the server cannot be used to attack a third host ("FTP
    /// bounce", RFC 2577).
    pub fn allows_active_target(&self, target: SocketAddr) -> bool {
        self.is_client(target.ip()) && target.port() >= 1024
    }
}

/// The client's address and port as logs show it, with the balancer it came through.
impl fmt::Display for ClientAddr {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.balancer() {
            None => self.client.fmt(f),
            Some(balancer) => write!(f, "{} via balancer {balancer}", self.client),
        }
    }
}

/// The client's address (not the TCP peer's), for the audit's `peer`.
impl From<ClientAddr> for SocketAddr {
    fn from(addr: ClientAddr) -> SocketAddr {
        addr.client
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sock(text: &str) -> SocketAddr {
        text.parse().expect("socket address")
    }

    #[test]
    fn a_mapped_ipv4_peer_is_the_plain_ipv4_client() {
        let addr = ClientAddr::direct(sock("[::ffff:192.0.2.7]:50123"), sock("[::]:21"));
        assert_eq!(addr.ip(), IpAddr::from([192, 0, 2, 7]));
        assert_eq!(addr.client(), sock("192.0.2.7:50123"));
        assert_eq!(addr.tcp_peer(), sock("[::ffff:192.0.2.7]:50123"));
        assert_eq!(addr.local(), sock("[::]:21"));
        assert_eq!(addr.to_string(), "192.0.2.7:50123");
        assert_eq!(SocketAddr::from(addr), sock("192.0.2.7:50123"));
    }

    #[test]
    fn plain_addresses_stay_as_they_are() {
        let v6 = ClientAddr::direct(sock("[2001:db8::1]:4000"), sock("[2001:db8::2]:21"));
        assert_eq!(v6.ip(), "2001:db8::1".parse::<IpAddr>().expect("ip"));
        assert_eq!(v6.to_string(), "[2001:db8::1]:4000");
        let v4 = ClientAddr::direct(sock("127.0.0.1:4000"), sock("127.0.0.1:21"));
        assert_eq!(v4.to_string(), "127.0.0.1:4000");
        assert_eq!(v4.tcp_peer(), v4.client());
    }

    #[test]
    fn a_balancer_named_client_is_the_client_and_the_balancer_is_kept_for_logs() {
        let tcp = ClientAddr::direct(sock("127.0.0.1:40000"), sock("127.0.0.11:21"));
        assert_eq!(tcp.balancer(), None);
        let addr = tcp.via_balancer(sock("[::ffff:203.0.113.7]:5000"));
        assert_eq!(addr.ip(), IpAddr::from([203, 0, 113, 7]));
        assert_eq!(addr.client(), sock("203.0.113.7:5000"));
        assert_eq!(addr.balancer(), Some(sock("127.0.0.1:40000")));
        assert_eq!(addr.tcp_peer(), sock("127.0.0.1:40000"));
        assert_eq!(addr.local(), sock("127.0.0.11:21"));
        assert_eq!(
            addr.to_string(),
            "203.0.113.7:5000 via balancer 127.0.0.1:40000"
        );
        assert_eq!(SocketAddr::from(addr), sock("203.0.113.7:5000"));
        assert!(addr.is_client(IpAddr::from([203, 0, 113, 7])));
        assert!(!addr.is_client(IpAddr::from([127, 0, 0, 1])));
        assert!(addr.allows_active_target(sock("203.0.113.7:2000")));
        assert!(!addr.allows_active_target(sock("127.0.0.1:2000")));
    }

    #[test]
    fn the_client_is_recognised_in_either_form() {
        let addr = ClientAddr::direct(sock("192.0.2.7:50123"), sock("192.0.2.1:21"));
        assert!(addr.is_client(IpAddr::from([192, 0, 2, 7])));
        assert!(addr.is_client("::ffff:192.0.2.7".parse().expect("ip")));
        assert!(!addr.is_client(IpAddr::from([192, 0, 2, 8])));
        assert!(!addr.is_client("2001:db8::1".parse().expect("ip")));
        let mapped = ClientAddr::direct(sock("[::ffff:192.0.2.7]:50123"), sock("[::]:21"));
        assert!(mapped.is_client(IpAddr::from([192, 0, 2, 7])));
    }

    #[test]
    fn active_targets_are_the_client_on_an_unprivileged_port() {
        let addr = ClientAddr::direct(sock("[::ffff:192.0.2.7]:50123"), sock("[::]:21"));
        assert!(addr.allows_active_target(sock("192.0.2.7:1024")));
        assert!(addr.allows_active_target(sock("[::ffff:192.0.2.7]:40000")));
        assert!(!addr.allows_active_target(sock("192.0.2.7:1023")));
        assert!(!addr.allows_active_target(sock("192.0.2.8:40000")));
    }

    #[tokio::test]
    async fn the_addresses_of_an_accepted_stream() {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind");
        let (client, accepted) = tokio::join!(
            TcpStream::connect(listener.local_addr().expect("addr")),
            listener.accept()
        );
        let client = client.expect("connect");
        let (server, _) = accepted.expect("accept");
        let addr = ClientAddr::of_stream(&server).expect("addresses");
        assert_eq!(addr.client(), client.local_addr().expect("client addr"));
        assert_eq!(addr.local(), listener.local_addr().expect("addr"));
    }
}
