//! A blocking FTP protocol client: control connection, login, passive (EPSV, falling back to
//! PASV) and active (PORT/EPRT) data connections, transfers with progress and abort. It speaks
//! to any RFC 959 server; replies are parsed by the shared codec's [`ReplyAssembler`].
//!
//! The client never loses step with the server: every final reply a command still owes (the
//! end of a transfer after its 1xx, the answer to ABOR) is counted, and what an error path left
//! unread is read and dropped before the next command goes out, so each command gets its own
//! reply.

use std::io::{self, BufRead, BufReader, Read, Write};
use std::net::{IpAddr, SocketAddr, TcpListener, TcpStream, ToSocketAddrs};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use socket2::SockRef;

use crate::client::entries::{RemoteEntry, parse_list_line, parse_mlsx_line};
use crate::client::stream::{Security, Stream};
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

/// A data connection being set up.
enum DataPrep {
    /// Passive: already connected to the server's port.
    Connected(TcpStream),
    /// Active: waiting for the server to connect.
    Listening(TcpListener),
}

/// One control connection to an FTP server.
pub struct FtpClient {
    control: BufReader<Stream>,
    /// The host name as given: TLS checks the certificate against it.
    host: String,
    /// TLS for data connections after PROT P (the control connection's configuration, so its
    /// session is resumed).
    protect_data: Option<Arc<rustls::ClientConfig>>,
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
        let io = |e| ClientError::Data(e);
        tcp.set_read_timeout(Some(timeout)).map_err(io)?;
        tcp.set_write_timeout(Some(timeout)).map_err(io)?;
        tcp.set_nodelay(true).ok();
        let peer = tcp.peer_addr().map_err(io)?;
        let local = tcp.local_addr().map_err(io)?;
        let stream = match security {
            Security::Implicit(config) => {
                Stream::tls(tcp, config, host, timeout).map_err(ClientError::Tls)?
            }
            Security::Plain | Security::Explicit(_) => Stream::Tcp(tcp),
        };
        let mut client = FtpClient {
            control: BufReader::new(stream),
            host: host.to_owned(),
            protect_data: None,
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
            Security::Explicit(config) => {
                client.start_tls(config)?;
                client.protect(config)?;
            }
            Security::Implicit(config) => client.protect(config)?,
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
    fn protect(&mut self, config: &Arc<rustls::ClientConfig>) -> Result<()> {
        self.ok("PBSZ 0")?;
        self.ok("PROT P")?;
        self.protect_data = Some(Arc::clone(config));
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

    /// Opens a data connection the configured way.
    fn prepare_data(&mut self) -> Result<DataPrep> {
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

    /// Sends a transfer command over a prepared data connection; returns the data stream once
    /// the server has said 1xx.
    fn start_transfer(&mut self, line: &str, prep: DataPrep, abort: &AtomicBool) -> Result<Stream> {
        let reply = self.command(line)?;
        if !reply.is_preliminary() {
            return Err(ClientError::Refused(reply));
        }
        let stream = match prep {
            DataPrep::Connected(stream) => stream,
            DataPrep::Listening(listener) => {
                listener.set_nonblocking(true).map_err(ClientError::Data)?;
                let deadline = Instant::now() + self.timeout;
                loop {
                    match listener.accept() {
                        Ok((stream, from)) if from.ip() == self.peer.ip() => break stream,
                        // Someone else connected to our port: ignore them.
                        Ok(_) => {}
                        Err(e) if e.kind() == io::ErrorKind::WouldBlock => {
                            if abort.load(Ordering::Relaxed) {
                                self.abort_transfer(None)?;
                                return Err(ClientError::Aborted);
                            }
                            if Instant::now() >= deadline {
                                return Err(ClientError::Timeout);
                            }
                            std::thread::sleep(Duration::from_millis(10));
                        }
                        Err(e) => return Err(ClientError::Data(e)),
                    }
                }
            }
        };
        stream.set_nonblocking(false).map_err(ClientError::Data)?;
        stream
            .set_write_timeout(Some(self.timeout))
            .map_err(ClientError::Data)?;
        // RFC 4217 §7: the TLS handshake on the data connection follows the 150.
        let stream = match &self.protect_data {
            Some(config) => {
                Stream::tls(stream, config, &self.host, self.timeout).map_err(ClientError::Tls)?
            }
            None => Stream::Tcp(stream),
        };
        stream
            .tcp()
            .set_read_timeout(Some(ABORT_POLL))
            .map_err(ClientError::Data)?;
        Ok(stream)
    }

    /// Reads the final reply of a transfer, past a further 1xx or two (125 then 150).
    fn finish_transfer(&mut self) -> Result<ServerReply> {
        let mut reply = self.reply()?;
        for _ in 0..MAX_PRELIMINARY {
            if !reply.is_preliminary() {
                break;
            }
            reply = self.reply()?;
        }
        if reply.is_success() {
            Ok(reply)
        } else {
            Err(ClientError::Refused(reply))
        }
    }

    /// Aborts the running transfer, whose data connection is `data`, and reads every reply
    /// owed: 426 for the transfer and 226 for the ABOR, or 226 and 225 when the transfer had
    /// ended first, whatever the server sends.
    ///
    /// ABOR goes out while the data connection is still open: in stream mode its close is the
    /// end of the file (RFC 959 §3.4), and an upload cut that way would be stored, truncated.
    /// The data connection is reset, not closed, once the server has answered (or after
    /// [`ABORT_WAIT`]), so that even a server that did not look at ABOR sees a broken
    /// transfer, not a complete one.
    fn abort_transfer(&mut self, data: Option<Stream>) -> Result<()> {
        self.send_abor()?;
        if let Some(mut data) = data {
            self.await_answer(&mut data);
            reset(data);
        }
        self.drain()
    }

    /// ABOR as RFC 959 §4.1.3 asks: Telnet IP, the Synch, then ABOR. On plain TCP the Synch
    /// is sent as urgent data with the DM as its last byte (RFC 854), which tells a server
    /// busy with the transfer to look at the control connection; TLS has no urgent data, so
    /// there it goes inline.
    fn send_abor(&mut self) -> Result<()> {
        let urgent = match self.control.get_ref() {
            Stream::Tcp(tcp) => SockRef::from(tcp)
                .send_out_of_band(TELNET_IP_SYNCH)
                .map_err(ClientError::control)?,
            Stream::Tls(_) => 0,
        };
        let mut rest = TELNET_IP_SYNCH[urgent..].to_vec();
        rest.extend_from_slice(b"ABOR\r\n");
        self.send_raw(&rest)?;
        self.owed += 1;
        Ok(())
    }

    /// Waits (at most [`ABORT_WAIT`]) until the server answers on the control connection,
    /// reading and dropping what still arrives on `data` so that a server blocked writing a
    /// download gets to read the ABOR.
    fn await_answer(&mut self, data: &mut Stream) {
        let deadline = Instant::now() + self.timeout.min(ABORT_WAIT);
        let mut buf = vec![0u8; CHUNK];
        let mut data_open = true;
        while Instant::now() < deadline && !self.reply_waiting() {
            if !data_open {
                std::thread::sleep(ABORT_POLL);
                continue;
            }
            match data.read(&mut buf) {
                Ok(0) => data_open = false,
                Ok(_) => {}
                Err(e) if is_timeout(&e) || e.kind() == io::ErrorKind::Interrupted => {}
                Err(_) => data_open = false,
            }
        }
    }

    /// Whether a reply has begun to arrive (or the connection has closed) on the control
    /// connection, without waiting.
    fn reply_waiting(&self) -> bool {
        if !self.control.buffer().is_empty() {
            return true;
        }
        let tcp = self.control.get_ref().tcp();
        if tcp.set_nonblocking(true).is_err() {
            return true;
        }
        let peeked = tcp.peek(&mut [0u8; 1]);
        let blocked = tcp.set_nonblocking(false).is_err();
        blocked || !matches!(peeked, Err(e) if e.kind() == io::ErrorKind::WouldBlock)
    }

    /// The data connection broke (or timed out): reset it, so that a stalled upload is not
    /// taken for a complete one, and read the server's verdict (426/451) for the transfer,
    /// which explains the failure better than the socket error.
    fn data_failed(&mut self, data: Stream, e: io::Error) -> ClientError {
        reset(data);
        match self.reply() {
            Ok(reply) if !reply.is_success() => ClientError::Refused(reply),
            Ok(_) => ClientError::Data(e),
            Err(control) => control,
        }
    }

    /// Downloads `remote` into `sink`, starting at `offset` (REST STREAM when non-zero).
    /// `progress` gets the byte count of each chunk; setting `abort` stops the transfer.
    ///
    /// # Errors
    /// A refusal, a data-connection failure, a local write error, or [`ClientError::Aborted`].
    pub fn retrieve(
        &mut self,
        remote: &str,
        offset: u64,
        sink: &mut dyn Write,
        local_name: &str,
        progress: &mut dyn FnMut(u64),
        abort: &AtomicBool,
    ) -> Result<u64> {
        if offset > 0 {
            let reply = self.command(&format!("REST {offset}"))?;
            if reply.code != 350 {
                return Err(ClientError::Refused(reply));
            }
        }
        let prep = self.prepare_data()?;
        let mut data = self.start_transfer(&format!("RETR {remote}"), prep, abort)?;
        let mut buf = vec![0u8; CHUNK];
        let mut total = 0u64;
        let mut last_progress = Instant::now();
        loop {
            if abort.load(Ordering::Relaxed) {
                self.abort_transfer(Some(data))?;
                return Err(ClientError::Aborted);
            }
            match data.read(&mut buf) {
                Ok(0) => break,
                Ok(n) => {
                    if let Err(source) = sink.write_all(&buf[..n]) {
                        // The server's verdict on the broken transfer is read before the next
                        // command (see `owed`).
                        reset(data);
                        return Err(ClientError::Local {
                            path: local_name.to_owned(),
                            source,
                        });
                    }
                    total += n as u64;
                    progress(n as u64);
                    last_progress = Instant::now();
                }
                Err(e) if is_timeout(&e) => {
                    if last_progress.elapsed() > self.timeout {
                        self.abort_transfer(Some(data))?;
                        return Err(ClientError::Timeout);
                    }
                }
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) => return Err(self.data_failed(data, e)),
            }
        }
        drop(data);
        self.finish_transfer()?;
        Ok(total)
    }

    /// Uploads `source` as `remote` with STOR, or APPE when `append` (resume).
    ///
    /// # Errors
    /// A refusal, a data-connection failure, a local read error, or [`ClientError::Aborted`].
    pub fn store(
        &mut self,
        remote: &str,
        append: bool,
        source: &mut dyn Read,
        local_name: &str,
        progress: &mut dyn FnMut(u64),
        abort: &AtomicBool,
    ) -> Result<u64> {
        let prep = self.prepare_data()?;
        let verb = if append { "APPE" } else { "STOR" };
        let mut data = self.start_transfer(&format!("{verb} {remote}"), prep, abort)?;
        let mut buf = vec![0u8; CHUNK];
        let mut total = 0u64;
        loop {
            if abort.load(Ordering::Relaxed) {
                self.abort_transfer(Some(data))?;
                return Err(ClientError::Aborted);
            }
            let n = match source.read(&mut buf) {
                // Ctrl-C as the source ended: still an abort, never a commit.
                Ok(0) if abort.load(Ordering::Relaxed) => continue,
                Ok(0) => break,
                Ok(n) => n,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                Err(source) => {
                    self.abort_transfer(Some(data))?;
                    return Err(ClientError::Local {
                        path: local_name.to_owned(),
                        source,
                    });
                }
            };
            if let Err(e) = data.write_all(&buf[..n]) {
                return Err(self.data_failed(data, e));
            }
            total += n as u64;
            progress(n as u64);
        }
        // Closing the data connection is the end-of-file mark (RFC 959 §3.4, stream mode).
        data.finish(self.timeout);
        drop(data);
        self.finish_transfer()?;
        Ok(total)
    }

    /// Lists a directory: MLSD when the server has it, else LIST parsed as `ls -l` output.
    ///
    /// # Errors
    /// A refusal or a data-connection failure.
    pub fn list(&mut self, path: Option<&str>, abort: &AtomicBool) -> Result<Vec<RemoteEntry>> {
        let arg = path.map(|p| format!(" {p}")).unwrap_or_default();
        if self.mlsd != Some(false) {
            let prep = self.prepare_data()?;
            match self.start_transfer(&format!("MLSD{arg}"), prep, abort) {
                Ok(data) => {
                    self.mlsd = Some(true);
                    let text = self.read_listing(data, abort)?;
                    return Ok(text.lines().filter_map(parse_mlsx_line).collect());
                }
                Err(ClientError::Refused(reply)) if matches!(reply.code, 500 | 502) => {
                    self.mlsd = Some(false);
                }
                Err(e) => return Err(e),
            }
        }
        let prep = self.prepare_data()?;
        let data = self.start_transfer(&format!("LIST{arg}"), prep, abort)?;
        let text = self.read_listing(data, abort)?;
        let now = jiff::Timestamp::now();
        Ok(text
            .lines()
            .filter_map(|l| parse_list_line(l, now))
            .collect())
    }

    /// Names in a directory (NLST).
    ///
    /// # Errors
    /// A refusal or a data-connection failure.
    pub fn names(&mut self, path: Option<&str>, abort: &AtomicBool) -> Result<Vec<String>> {
        let arg = path.map(|p| format!(" {p}")).unwrap_or_default();
        let prep = self.prepare_data()?;
        let data = self.start_transfer(&format!("NLST{arg}"), prep, abort)?;
        let text = self.read_listing(data, abort)?;
        Ok(text
            .lines()
            .map(|l| l.trim_end_matches('\r'))
            .filter(|l| !l.is_empty())
            .map(|l| l.rsplit('/').next().unwrap_or(l).to_owned())
            .collect())
    }

    fn read_listing(&mut self, data: Stream, abort: &AtomicBool) -> Result<String> {
        let mut bytes = Vec::new();
        let mut sink = io::Cursor::new(&mut bytes);
        let mut data = Some(data);
        let deadline_step = self.timeout;
        let mut last = Instant::now();
        let mut buf = vec![0u8; 64 * 1024];
        while let Some(stream) = data.as_mut() {
            if abort.load(Ordering::Relaxed) {
                self.abort_transfer(data.take())?;
                return Err(ClientError::Aborted);
            }
            match stream.read(&mut buf) {
                Ok(0) => data = None,
                Ok(n) => {
                    sink.write_all(&buf[..n]).map_err(ClientError::Data)?;
                    last = Instant::now();
                }
                Err(e) if is_timeout(&e) && last.elapsed() <= deadline_step => {}
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) => return Err(ClientError::Data(e)),
            }
        }
        self.finish_transfer()?;
        Ok(String::from_utf8_lossy(&bytes).into_owned())
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

/// Closes a data connection with a TCP reset: never mistaken for the end of an upload.
fn reset(data: Stream) {
    let _ = SockRef::from(data.tcp()).set_linger(Some(Duration::ZERO));
    drop(data);
}

fn is_timeout(e: &io::Error) -> bool {
    matches!(
        e.kind(),
        io::ErrorKind::WouldBlock | io::ErrorKind::TimedOut
    )
}

/// The port in `229 Entering Extended Passive Mode (|||port|)` (RFC 2428 §3).
fn parse_epsv(text: &str) -> Option<u16> {
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
fn parse_pasv(text: &str) -> Option<u16> {
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

#[cfg(test)]
mod tests {
    use super::*;
    use std::thread::JoinHandle;

    const TIMEOUT: Duration = Duration::from_secs(10);

    /// The server side of a scripted conversation on loopback.
    struct Fake {
        reader: BufReader<TcpStream>,
        writer: TcpStream,
    }

    impl Fake {
        fn line(&mut self) -> Vec<u8> {
            let mut line = Vec::new();
            self.reader.read_until(b'\n', &mut line).expect("a line");
            line
        }

        fn expect(&mut self, line: &str) {
            assert_eq!(String::from_utf8_lossy(&self.line()), format!("{line}\r\n"));
        }

        fn say(&mut self, reply: &str) {
            self.writer
                .write_all(format!("{reply}\r\n").as_bytes())
                .expect("reply");
        }

        /// Answers EPSV and returns the data connection the client makes.
        fn passive(&mut self) -> TcpStream {
            self.expect("EPSV");
            let listener = TcpListener::bind("127.0.0.1:0").expect("data port");
            let port = listener.local_addr().expect("port").port();
            self.say(&format!("229 Entering Extended Passive Mode (|||{port}|)"));
            let (data, _) = listener.accept().expect("data connection");
            data.set_read_timeout(Some(TIMEOUT)).expect("timeout");
            data
        }
    }

    /// A client connected to a server thread that greets, then follows `script`.
    fn against(script: impl FnOnce(Fake) + Send + 'static) -> (FtpClient, JoinHandle<()>) {
        let listener = TcpListener::bind("127.0.0.1:0").expect("listen");
        let port = listener.local_addr().expect("port").port();
        let server = std::thread::spawn(move || {
            let (control, _) = listener.accept().expect("accept");
            control.set_read_timeout(Some(TIMEOUT)).expect("timeout");
            let writer = control.try_clone().expect("clone");
            let mut fake = Fake {
                reader: BufReader::new(control),
                writer,
            };
            fake.say("220 fake");
            script(fake);
        });
        let (client, _) = FtpClient::connect("127.0.0.1", port, TIMEOUT, false, &Security::Plain)
            .expect("connect");
        (client, server)
    }

    fn answers_pwd(mut fake: Fake) {
        fake.expect("PWD");
        fake.say("257 \"/\" is the current directory.");
    }

    /// After the scripted exchange, the next command gets its own reply.
    fn assert_in_step(mut client: FtpClient, server: JoinHandle<()>) {
        assert_eq!(client.pwd().expect("pwd in step"), "/");
        server.join().expect("fake server");
    }

    /// An upload with Ctrl-C already pressed, against `script`: aborted, and in step.
    fn abort_upload(script: impl FnOnce(Fake) + Send + 'static) {
        let (mut client, server) = against(script);
        let abort = AtomicBool::new(true);
        let result = client.store("f", false, &mut &b"data"[..], "f", &mut |_| {}, &abort);
        assert!(matches!(result, Err(ClientError::Aborted)), "{result:?}");
        assert_in_step(client, server);
    }

    #[test]
    fn an_aborted_upload_sends_the_synch_as_urgent_data_then_resets_the_data_connection() {
        abort_upload(|mut fake| {
            let mut data = fake.passive();
            fake.expect("STOR f");
            fake.say("150 Go on.");
            // This socket does not keep urgent data inline, so the urgent byte leaves the
            // stream: it must be the DM of the Synch (RFC 854).
            assert_eq!(fake.line(), b"\xff\xf4\xffABOR\r\n");
            fake.say("426 Transfer aborted.");
            fake.say("226 ABOR successful.");
            // A reset, not the end of the file: no server stores this upload.
            let read = data.read(&mut [0u8; 16]);
            assert!(
                matches!(&read, Err(e) if e.kind() == io::ErrorKind::ConnectionReset),
                "{read:?}"
            );
            answers_pwd(fake);
        });
    }

    #[test]
    fn a_225_settles_an_abort_whose_transfer_never_answers() {
        // pyftpdlib, when ABOR comes before the first byte: 225 and nothing for the STOR.
        abort_upload(|mut fake| {
            let _data = fake.passive();
            fake.expect("STOR f");
            fake.say("150 Go on.");
            assert!(fake.line().ends_with(b"ABOR\r\n"));
            fake.say("225 ABOR command successful; data channel closed.");
            answers_pwd(fake);
        });
    }

    #[test]
    fn a_second_preliminary_reply_owes_nothing_more() {
        let (mut client, server) = against(|mut fake| {
            let mut data = fake.passive();
            fake.expect("RETR f");
            fake.say("125 Data connection already open.");
            fake.say("150 Transfer starting.");
            data.write_all(b"abc").expect("data");
            drop(data);
            fake.say("226 Transfer complete.");
            answers_pwd(fake);
        });
        let abort = AtomicBool::new(false);
        let mut got = Vec::new();
        let result = client.retrieve("f", 0, &mut got, "f", &mut |_| {}, &abort);
        assert_eq!(result.expect("download"), 3);
        assert_eq!(got, b"abc");
        assert_in_step(client, server);
    }

    /// A local file that cannot be written.
    struct Full;

    impl Write for Full {
        fn write(&mut self, _: &[u8]) -> io::Result<usize> {
            Err(io::Error::from(io::ErrorKind::StorageFull))
        }

        fn flush(&mut self) -> io::Result<()> {
            Ok(())
        }
    }

    #[test]
    fn the_reply_a_failed_download_leaves_is_read_before_the_next_command() {
        let (mut client, server) = against(|mut fake| {
            let mut data = fake.passive();
            fake.expect("RETR f");
            fake.say("150 Here it comes.");
            data.write_all(&[7u8; 1000]).expect("data");
            // The client gives up on the data connection; only then the verdict.
            let read = data.read(&mut [0u8; 16]);
            assert!(!matches!(read, Ok(n) if n > 0), "{read:?}");
            fake.say("426 Connection closed; transfer aborted.");
            answers_pwd(fake);
        });
        let abort = AtomicBool::new(false);
        let result = client.retrieve("f", 0, &mut Full, "f", &mut |_| {}, &abort);
        assert!(
            matches!(result, Err(ClientError::Local { .. })),
            "{result:?}"
        );
        assert_in_step(client, server);
    }

    #[test]
    fn a_421_ends_the_session() {
        let reply = |code| {
            ClientError::Refused(ServerReply {
                code,
                lines: vec!["bye".into()],
            })
        };
        assert!(reply(421).is_fatal());
        assert!(!reply(550).is_fatal());
        assert!(ClientError::Closed.is_fatal());
        assert!(!ClientError::Aborted.is_fatal());
    }

    #[test]
    fn passive_replies() {
        assert_eq!(
            parse_epsv("Entering Extended Passive Mode (|||6446|)."),
            Some(6446)
        );
        assert_eq!(parse_epsv("Entering (!!!21!)"), Some(21));
        assert_eq!(parse_epsv("Entering (|1|2|3|)"), None);
        assert_eq!(
            parse_pasv("Entering Passive Mode (127,0,0,1,200,10)."),
            Some(200 * 256 + 10)
        );
        assert_eq!(parse_pasv("Entering Passive Mode 10,0,0,1,4,1"), Some(1025));
        assert_eq!(parse_pasv("Entering Passive Mode (1,2,3)"), None);
        assert_eq!(parse_pasv("(1,2,3,4,999,1)"), None);
    }
}
