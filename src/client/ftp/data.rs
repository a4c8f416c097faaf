//! Data connections: passive (EPSV, falling back to PASV, whose replies are parsed here) or
//! active (PORT/EPRT), set up before the transfer command goes out.

use std::net::{IpAddr, SocketAddr, TcpListener, TcpStream};

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
