//! Data connections: passive (EPSV, falling back to PASV, whose replies are parsed here) or
//! active (PORT/EPRT), set up before the transfer command goes out; and the TLS 1.3 tickets
//! protected ones resume with (`keep_tickets`).

use std::net::{IpAddr, SocketAddr, TcpListener, TcpStream};

use crate::client::stream::server_name;

use super::{ClientError, FtpClient, Result};

/// A data connection being set up.
pub(super) enum DataPrep {
    /// Passive: already connected to the server's port.
    Connected(TcpStream),
    /// Active: waiting for the server to connect.
    Listening(TcpListener),
}

impl FtpClient {
    /// Opens a data connection the configured way.
    pub(super) fn prepare_data(&mut self) -> Result<DataPrep> {
        self.keep_tickets();
        if self.active {
            return self.prepare_active();
        }
        if self.epsv {
            let reply = self.command("EPSV")?;
            match reply.code {
                229 => {
                    let port = parse_epsv(reply.text()).ok_or_else(|| {
                        ClientError::Protocol(format!("cannot read the port in {reply}"))
                    })?;
                    return self.connect_data(port);
                }
                // RFC 2428 §3: a server without EPSV answers 500/502; try PASV.
                500..=502 => self.epsv = false,
                _ => return Err(ClientError::Refused(reply)),
            }
        }
        let reply = self.ok("PASV")?;
        let port = parse_pasv(reply.text())
            .ok_or_else(|| ClientError::Protocol(format!("cannot read the port in {reply}")))?;
        // Connect to the control connection's address, not the one in the reply: a server
        // behind NAT often announces an address the client cannot reach, and this way a
        // hostile server cannot point the client elsewhere.
        self.connect_data(port)
    }

    /// Before a protected data connection over TLS 1.3: makes sure a session ticket is there
    /// to resume with. rustls uses each ticket once, and servers may send none on data
    /// connections (ferryd sends none where the client may only write, which under PROT P in
    /// passive mode it cannot rule out yet), so once the control connection's supply is spent
    /// (8 from ferryd, 2 from OpenSSL), a server that requires resumption (ferryd
    /// `--require-tls-resumption`, vsftpd's `require_ssl_reuse`) refuses the next data
    /// connection. With none left, a second control connection to the same address, only for
    /// its handshake (greeting, AUTH TLS, PBSZ, PROT, QUIT; no login), brings new ones. A try
    /// that brings none ends the tries; the transfer goes on either way.
    fn keep_tickets(&mut self) {
        let Some(tls) = self.protect_data.clone().filter(|_| self.refill_tickets) else {
            return;
        };
        let Ok(name) = server_name(&self.host) else {
            return;
        };
        if tls.tickets.held(&name) > 0 {
            return;
        }
        let fetched = TcpStream::connect_timeout(&self.peer, self.timeout)
            .map_err(ClientError::Data)
            .and_then(|tcp| FtpClient::start(tcp, &self.host, self.timeout, false, &self.security));
        match fetched {
            Ok((side, _)) => side.quit(),
            Err(e) => log::debug!("{}: no connection for TLS tickets: {e}", self.peer),
        }
        let held = tls.tickets.held(&name);
        log::debug!(
            "{}: {held} TLS tickets from a connection of their own",
            self.peer
        );
        if held == 0 {
            self.refill_tickets = false;
        }
    }

    fn connect_data(&mut self, port: u16) -> Result<DataPrep> {
        let addr = SocketAddr::new(self.peer.ip(), port);
        let stream = TcpStream::connect_timeout(&addr, self.timeout).map_err(ClientError::Data)?;
        Ok(DataPrep::Connected(stream))
    }

    fn prepare_active(&mut self) -> Result<DataPrep> {
        let listener =
            TcpListener::bind(SocketAddr::new(self.local.ip(), 0)).map_err(ClientError::Data)?;
        let port = listener.local_addr().map_err(ClientError::Data)?.port();
        let line = match self.local.ip() {
            IpAddr::V4(v4) => {
                let [a, b, c, d] = v4.octets();
                format!("PORT {a},{b},{c},{d},{},{}", port >> 8, port & 0xff)
            }
            IpAddr::V6(v6) => format!("EPRT |2|{v6}|{port}|"),
        };
        self.ok(&line)?;
        Ok(DataPrep::Listening(listener))
    }
}

/// The port in `229 Entering Extended Passive Mode (|||port|)` (RFC 2428 §3).
pub(super) fn parse_epsv(text: &str) -> Option<u16> {
    let inner = &text[text.find('(')? + 1..];
    let inner = &inner[..inner.find(')')?];
    let delim = inner.chars().next()?;
    let parts: Vec<&str> = inner.split(delim).collect();
    // (<d><d><d><port><d>) splits into ["", "", "", port, ""].
    match parts.as_slice() {
        ["", "", "", port, ""] => port.parse().ok(),
        _ => None,
    }
}

/// The port in `227 Entering Passive Mode (h1,h2,h3,h4,p1,p2)`; some servers omit the
/// parentheses, so the six numbers are looked for anywhere.
pub(super) fn parse_pasv(text: &str) -> Option<u16> {
    let start = text.find(|c: char| c.is_ascii_digit())?;
    let numbers: Vec<u16> = text[start..]
        .split(|c: char| !c.is_ascii_digit())
        .take_while(|s| !s.is_empty())
        .map(|s| s.parse().ok())
        .collect::<Option<Vec<u16>>>()?;
    match numbers.as_slice() {
        [_, _, _, _, p1, p2, ..] if *p1 < 256 && *p2 < 256 => Some(p1 * 256 + p2),
        _ => None,
    }
}
