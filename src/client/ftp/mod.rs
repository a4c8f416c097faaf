//! A blocking FTP protocol client: control connection, login, passive (EPSV, falling back to
//! PASV) and active (PORT/EPRT) data connections, transfers with progress and abort. It speaks
//! to any RFC 959 server; replies are parsed by the shared codec's [`ReplyAssembler`].
//!
//! The client never loses step with the server: every final reply a command still owes (the
//! end of a transfer after its 1xx, the answer to ABOR) is counted, and what an error path left
//! unread is read and dropped before the next command goes out, so each command gets its own
//! reply.
//!
//! Files: `data.rs` (setting up data connections), `transfer.rs` (downloads, uploads,
//! listings), `abort.rs` (ABOR and owed replies); the control connection, login and the error
//! type are here.

mod abort;
mod data;
mod transfer;

use std::io::{self, BufRead, BufReader, Read, Write};
use std::net::{SocketAddr, TcpStream, ToSocketAddrs};
use std::sync::Arc;
use std::time::{Duration, Instant};

use crate::client::stream::{ClientTls, Security, Stream};
use crate::codec::reply_parser::{ReplyAssembler, ServerReply, unquote_path};

/// Longest reply line accepted: a server sending more is broken or hostile.
const MAX_REPLY_LINE: u64 = 64 * 1024;
/// How often a blocked data read or accept wakes up to look at the abort flag.
const ABORT_POLL: Duration = Duration::from_millis(100);
/// Transfer buffer size.
const CHUNK: usize = 256 * 1024;
/// How long an abort waits for the server to answer ABOR before it resets the data
/// connection anyway (a server that reads commands only between transfers).
const ABORT_WAIT: Duration = Duration::from_secs(5);
/// How many more 1xx replies a transfer may send before its final one.
const MAX_PRELIMINARY: usize = 4;
/// Telnet IAC IP (Interrupt Process), then the Synch: IAC DM (RFC 854, RFC 959 §4.1.3).
const TELNET_IP_SYNCH: &[u8] = b"\xff\xf4\xff\xf2";

/// A local source for an upload whose reads never block past `ABORT_POLL`: a pipe or FIFO
/// that stalls answers `Interrupted`, so the upload loop sees Ctrl-C while it waits.
pub struct Polled<R>(pub R);

impl<R: Read + std::os::fd::AsFd> Read for Polled<R> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        use rustix::event::{PollFd, PollFlags, Timespec, poll};
        let wait = Timespec {
            tv_sec: 0,
            tv_nsec: i64::from(ABORT_POLL.subsec_nanos()),
        };
        let mut fds = [PollFd::new(&self.0, PollFlags::IN)];
        match poll(&mut fds, Some(&wait)) {
            // A regular file is always ready; only a source with nothing to read times out.
            Ok(0) => Err(io::ErrorKind::Interrupted.into()),
            Ok(_) => self.0.read(buf),
            Err(e) => Err(e.into()),
        }
    }
}

/// Why a client operation failed; each displays as one line for the user.
#[derive(Debug, thiserror::Error)]
pub enum ClientError {
    /// The host name did not resolve.
    #[error("cannot resolve {0}")]
    Resolve(String),
    /// TCP connect failed (refused, unreachable, timed out).
    #[error("cannot connect to {addr}: {source}")]
    Connect {
        /// host:port as given.
        addr: String,
        /// The cause.
        source: io::Error,
    },
    /// The server did not answer in time.
    #[error("timed out waiting for the server")]
    Timeout,
    /// The server closed the control connection.
    #[error("the server closed the connection")]
    Closed,
    /// The server refused: its reply, e.g. `550 No such file or directory.`
    #[error("{0}")]
    Refused(ServerReply),
    /// No connection is open.
    #[error("not connected; use: open HOST [PORT]")]
    NotConnected,
    /// A local file could not be read or written.
    #[error(
        "{path}: {}",
        crate::client::render::io_reason(source, "no such file or directory")
    )]
    Local {
        /// The local path.
        path: String,
        /// The cause.
        source: io::Error,
    },
    /// The data connection failed.
    #[error("data connection failed: {0}")]
    Data(io::Error),
    /// The server broke the protocol.
    #[error("protocol error: {0}")]
    Protocol(String),
    /// The user interrupted the transfer (Ctrl-C); ABOR was sent.
    #[error("transfer aborted")]
    Aborted,
    /// TLS could not be set up (handshake, untrusted certificate).
    #[error("TLS: {0}")]
    Tls(io::Error),
}

impl ClientError {
    /// Maps a control-connection I/O error to the user's terms.
    fn control(e: io::Error) -> ClientError {
        match e.kind() {
            io::ErrorKind::WouldBlock | io::ErrorKind::TimedOut => ClientError::Timeout,
            _ => ClientError::Closed,
        }
    }

    /// True when the connection is unusable afterwards: a timeout, a closed connection, or
    /// 421 (RFC 959 §4.2: the service is closing the control connection).
    pub fn is_fatal(&self) -> bool {
        match self {
            ClientError::Timeout | ClientError::Closed => true,
            ClientError::Refused(reply) => reply.code == 421,
            _ => false,
        }
    }
}

/// Result of client operations.
pub type Result<T> = std::result::Result<T, ClientError>;

/// One control connection to an FTP server.
pub struct FtpClient {
    control: BufReader<Stream>,
    /// The host name as given: TLS checks the certificate against it.
    host: String,
    /// TLS for data connections after PROT P (the control connection's configuration, so its
    /// session is resumed).
    protect_data: Option<ClientTls>,
    /// As connected, for a connection of the same kind that only fetches TLS tickets.
    security: Security,
    /// Whether to fetch new TLS 1.3 tickets when none are left (see `keep_tickets`): TLS 1.3
    /// only, and cleared when a try brought none.
    refill_tickets: bool,
    assembler: ReplyAssembler,
    peer: SocketAddr,
    local: SocketAddr,
    active: bool,
    /// Whether to try EPSV first; cleared when the server does not know it.
    epsv: bool,
    /// Whether MLSD works; `None` until tried.
    mlsd: Option<bool>,
    timeout: Duration,
    /// Final replies the server still owes for commands already sent: a transfer's end once
    /// its 1xx is read, and ABOR's answer. Read by [`FtpClient::drain`] before the next
    /// command.
    owed: usize,
}

impl FtpClient {
    /// Connects and reads the greeting; with TLS (`security`), negotiates it and protects the
    /// data connections (PBSZ 0, PROT P). `active` selects PORT/EPRT data connections.
    ///
    /// # Errors
    /// [`ClientError::Resolve`], [`ClientError::Connect`], a failed TLS negotiation, or the
    /// server's refusal.
    pub fn connect(
        host: &str,
        port: u16,
        timeout: Duration,
        active: bool,
        security: &Security,
    ) -> Result<(FtpClient, ServerReply)> {
        let addr = format!("{host}:{port}");
        let addrs: Vec<SocketAddr> = (host, port)
            .to_socket_addrs()
            .map_err(|_| ClientError::Resolve(host.to_owned()))?
            .collect();
        let mut last = io::Error::new(io::ErrorKind::NotFound, "no address");
        let tcp = addrs
            .iter()
            .find_map(|a| match TcpStream::connect_timeout(a, timeout) {
                Ok(s) => Some(s),
                Err(e) => {
                    last = e;
                    None
                }
            })
            .ok_or(ClientError::Connect { addr, source: last })?;
        FtpClient::start(tcp, host, timeout, active, security)
    }

    /// [`FtpClient::connect`] over a connected socket: the greeting, then TLS as `security`
    /// says.
    fn start(
        tcp: TcpStream,
        host: &str,
        timeout: Duration,
        active: bool,
        security: &Security,
    ) -> Result<(FtpClient, ServerReply)> {
        let io = |e| ClientError::Data(e);
        tcp.set_read_timeout(Some(timeout)).map_err(io)?;
        tcp.set_write_timeout(Some(timeout)).map_err(io)?;
        tcp.set_nodelay(true).ok();
        let peer = tcp.peer_addr().map_err(io)?;
        let local = tcp.local_addr().map_err(io)?;
        let stream = match security {
            Security::Implicit(tls) => {
                Stream::tls(tcp, &tls.config, host, timeout).map_err(ClientError::Tls)?
            }
            Security::Plain | Security::Explicit(_) => Stream::Tcp(tcp),
        };
        let mut client = FtpClient {
            control: BufReader::new(stream),
            host: host.to_owned(),
            protect_data: None,
            security: security.clone(),
            refill_tickets: false,
            assembler: ReplyAssembler::new(),
            peer,
            local,
            active,
            epsv: true,
            mlsd: None,
            timeout,
            owed: 0,
        };
        let mut greeting = client.reply()?;
        // RFC 959 §5.4: 120 "ready in nnn minutes" precedes the 220.
        while greeting.code == 120 {
            greeting = client.reply()?;
        }
        if greeting.code != 220 {
            return Err(ClientError::Refused(greeting));
        }
        match security {
            Security::Plain => {}
            Security::Explicit(tls) => {
                client.start_tls(&tls.config)?;
                client.protect(tls)?;
            }
            Security::Implicit(tls) => client.protect(tls)?,
        }
        Ok((client, greeting))
    }

    /// AUTH TLS (RFC 4217 §4), then the handshake on the same connection.
    fn start_tls(&mut self, config: &Arc<rustls::ClientConfig>) -> Result<()> {
        let reply = self.command("AUTH TLS")?;
        if reply.code != 234 {
            return Err(ClientError::Refused(reply));
        }
        // A stand-in on the same socket while the connection is taken out and wrapped.
        let stand_in = self.control.get_ref().tcp().try_clone();
        let stand_in = BufReader::new(Stream::Tcp(stand_in.map_err(ClientError::Data)?));
        let old = std::mem::replace(&mut self.control, stand_in);
        let tcp = old
            .into_inner()
            .into_tcp()
            .ok_or_else(|| ClientError::Protocol("TLS is already on".into()))?;
        let tls = Stream::tls(tcp, config, &self.host, self.timeout).map_err(ClientError::Tls)?;
        self.control = BufReader::new(tls);
        Ok(())
    }

    /// PBSZ 0 and PROT P (RFC 4217 §8-9): data connections use TLS too.
    fn protect(&mut self, tls: &ClientTls) -> Result<()> {
        self.ok("PBSZ 0")?;
        self.ok("PROT P")?;
        self.protect_data = Some(tls.clone());
        self.refill_tickets = self.control.get_ref().is_tls13();
        Ok(())
    }

    /// Sends one command line, once the replies owed to earlier commands are read.
    ///
    /// # Errors
    /// A line holding CR or LF (it would smuggle a second command), a dead connection, or a
    /// server that does not send what it owes within the timeout.
    pub fn send(&mut self, line: &str) -> Result<()> {
        if line.contains(['\r', '\n']) {
            return Err(ClientError::Protocol(
                "a command cannot contain line breaks".into(),
            ));
        }
        self.drain()?;
        self.send_raw(format!("{line}\r\n").as_bytes())
    }

    /// Reads and drops the replies still owed (a transfer an error path left, an ABOR's
    /// answer), so that the next command reads its own reply. Bounded by the timeout: a server
    /// that keeps them back is out of step, and that ends the connection.
    fn drain(&mut self) -> Result<()> {
        let deadline = Instant::now() + self.timeout;
        while self.owed > 0 {
            if Instant::now() >= deadline {
                return Err(ClientError::Timeout);
            }
            let reply = self.reply()?;
            log::debug!("{}: owed reply read and dropped: {reply}", self.peer);
            // 225 answers an ABOR that found no transfer under way: nothing else will come
            // (pyftpdlib answers so, without a reply for the transfer, before its first byte).
            if reply.code == 225 {
                self.owed = 0;
            }
        }
        Ok(())
    }

    fn send_raw(&mut self, bytes: &[u8]) -> Result<()> {
        let stream = self.control.get_mut();
        stream
            .write_all(bytes)
            .and_then(|()| stream.flush())
            .map_err(ClientError::control)
    }

    /// Reads one complete reply.
    ///
    /// # Errors
    /// Timeout, a closed connection, or a malformed reply.
    pub fn reply(&mut self) -> Result<ServerReply> {
        let mut raw = Vec::new();
        loop {
            raw.clear();
            let n = (&mut self.control)
                .take(MAX_REPLY_LINE)
                .read_until(b'\n', &mut raw)
                .map_err(ClientError::control)?;
            if n == 0 {
                return Err(ClientError::Closed);
            }
            if raw.last() != Some(&b'\n') {
                return Err(ClientError::Protocol("reply line too long".into()));
            }
            let line = String::from_utf8_lossy(&raw);
            let line = line.trim_end_matches(['\r', '\n']);
            if let Some(reply) = self
                .assembler
                .push(line)
                .map_err(|e| ClientError::Protocol(e.to_string()))?
            {
                // RFC 959 §4.2: a 1xx is followed by the command's final reply. Replies come
                // in the order of the commands, so with replies owed already, a 1xx belongs
                // to the command those are owed for (a second 1xx adds nothing).
                if reply.is_preliminary() {
                    self.owed = self.owed.max(1);
                } else {
                    self.owed = self.owed.saturating_sub(1);
                }
                return Ok(reply);
            }
        }
    }

    /// Sends a command and returns its reply, whatever the code.
    ///
    /// # Errors
    /// Only transport errors; a refusal is a normal reply here.
    pub fn command(&mut self, line: &str) -> Result<ServerReply> {
        self.send(line)?;
        self.reply()
    }

    /// Sends a command and requires a 2xx reply.
    ///
    /// # Errors
    /// [`ClientError::Refused`] with the server's reply otherwise.
    pub fn ok(&mut self, line: &str) -> Result<ServerReply> {
        let reply = self.command(line)?;
        if reply.is_success() {
            Ok(reply)
        } else {
            Err(ClientError::Refused(reply))
        }
    }

    /// USER, then PASS when asked (RFC 959 §4.1.1), then TYPE I for every later transfer.
    ///
    /// # Errors
    /// The server's refusal (530 for a wrong name or password).
    pub fn login(&mut self, user: &str, password: &str) -> Result<()> {
        let reply = self.command(&format!("USER {user}"))?;
        let reply = match reply.code {
            230 => reply,
            331 => self.command(&format!("PASS {password}"))?,
            _ => return Err(ClientError::Refused(reply)),
        };
        if !matches!(reply.code, 230 | 202) {
            return Err(ClientError::Refused(reply));
        }
        self.ok("TYPE I")?;
        Ok(())
    }

    /// `SITE REGISTER` (ferryd's self-registration).
    ///
    /// # Errors
    /// The server's refusal: 550 taken or closed, 501 bad name or weak password.
    pub fn register(&mut self, user: &str, password: &str) -> Result<ServerReply> {
        self.ok(&format!("SITE REGISTER {user} {password}"))
    }

    /// The current remote directory (PWD).
    ///
    /// # Errors
    /// A refusal, or a 257 reply without a quoted path.
    pub fn pwd(&mut self) -> Result<String> {
        let reply = self.ok("PWD")?;
        unquote_path(reply.text())
            .ok_or_else(|| ClientError::Protocol(format!("cannot read the path in {reply}")))
    }

    /// QUIT; the connection is closed either way.
    pub fn quit(mut self) {
        if self.command("QUIT").is_ok() {
            // Ends TLS with close_notify, as the server does after its 221.
            let timeout = self.timeout;
            self.control.get_mut().finish(timeout);
        }
    }
}

fn is_timeout(e: &io::Error) -> bool {
    matches!(
        e.kind(),
        io::ErrorKind::WouldBlock | io::ErrorKind::TimedOut
    )
}

#[cfg(test)]
mod tests;
