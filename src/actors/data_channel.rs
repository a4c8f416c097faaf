//! Data connections and the transfers over them. A Session prepares a passive listener, then a
//! transfer task (spawned by the Session, cancelled by ABOR) accepts the client's connection and
//! streams between it and a file the FileStore opened. File bytes never pass through a mailbox.
//!
//! Transfer tasks run on a [`TransferPool`] of their own threads, not on the session arbiters:
//! a download at full speed keeps a thread busy, and control replies must not queue behind it.
//!
//! This module owns no session state: it gets everything as arguments and returns a result.

use std::io;
use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::time::Duration;

use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt, Interest};
use tokio::net::{TcpListener, TcpStream};

use actix::Recipient;

use crate::actors::audit_log::{Event, EventKind, Record};
use crate::config::PortRange;
use crate::net::ClientAddr;
use crate::quota::Charge;
use crate::state::TransferPermit;
use crate::storage::{Abort, ByteSink, ByteSource, StoreError};

/// Read and write size of file transfers: large enough that system-call overhead stays small
/// at loopback speeds, small enough for many concurrent transfers.
const CHUNK: usize = 256 * 1024;

/// Why a data transfer did not complete. Its reply is in the session's reply table.
#[derive(Debug, thiserror::Error)]
pub enum DataError {
    /// No data connection arrived in time: 425.
    #[error("Failed to establish data connection.")]
    NoConnection,
    /// The data connection failed or stalled: 426.
    #[error("Data connection closed; transfer aborted.")]
    Network(#[source] io::Error),
    /// Reading or writing the local file failed: 451; 452 when the disk is full.
    #[error("Local error in processing: {0}.")]
    Local(#[source] io::Error),
    /// The TLS handshake on the data connection failed or did not resume: 425.
    #[error("Cannot open a protected data connection: {0}.")]
    Tls(String),
    /// The upload would pass the account's quota; nothing of it is kept: 552.
    #[error("Quota exceeded: upload aborted, nothing stored.")]
    QuotaExceeded,
}

/// The threads data transfers run on. Each runs a single-threaded tokio runtime, like an
/// actix arbiter (a transfer's socket wake-ups stay on one thread); a new transfer goes to
/// the thread with the fewest running. Data sockets are opened inside the transfer task, so
/// they register with that thread's I/O driver, not with a session arbiter's.
pub struct TransferPool {
    first: TransferThread,
    others: Vec<TransferThread>,
}

struct TransferThread {
    runtime: tokio::runtime::Handle,
    running: Arc<AtomicUsize>,
    /// Dropped with the pool: the thread then leaves its runtime, dropping what still runs.
    _stop: tokio::sync::oneshot::Sender<()>,
}

/// Counts a transfer on its thread while it lives (also when it is aborted).
struct Counted(Arc<AtomicUsize>);

impl Drop for Counted {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::Relaxed);
    }
}

impl TransferPool {
    /// Starts `threads` transfer threads (at least one).
    ///
    /// # Errors
    /// When a thread or its runtime cannot be created.
    pub fn new(threads: usize) -> io::Result<TransferPool> {
        let start = |i: usize| -> io::Result<TransferThread> {
            let runtime = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()?;
            let handle = runtime.handle().clone();
            let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
            std::thread::Builder::new()
                .name(format!("ferry-data-{i}"))
                .spawn(move || {
                    // Ends when the pool's sender is dropped.
                    let _ = runtime.block_on(stopped);
                })?;
            Ok(TransferThread {
                runtime: handle,
                running: Arc::new(AtomicUsize::new(0)),
                _stop: stop,
            })
        };
        Ok(TransferPool {
            first: start(0)?,
            others: (1..threads).map(start).collect::<io::Result<_>>()?,
        })
    }

    /// Runs `task` on the least busy transfer thread. Aborting the handle drops the task at
    /// its next await; after the pool is gone the handle reports it cancelled.
    pub fn spawn<T: Send + 'static>(
        &self,
        task: impl Future<Output = T> + Send + 'static,
    ) -> tokio::task::JoinHandle<T> {
        let load = |t: &TransferThread| t.running.load(Ordering::Relaxed);
        let thread =
            self.others.iter().fold(
                &self.first,
                |best, t| {
                    if load(t) < load(best) { t } else { best }
                },
            );
        thread.running.fetch_add(1, Ordering::Relaxed);
        let counted = Counted(Arc::clone(&thread.running));
        thread.runtime.spawn(async move {
            let _counted = counted;
            task.await
        })
    }
}

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
async fn accept_passive(
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

/// How the data connection will be made.
#[derive(Debug)]
pub enum DataPlan {
    /// PASV/EPSV: the client connects to this listener (non-blocking).
    Passive(std::net::TcpListener),
    /// PORT/EPRT: the server connects to the client's `target` from `local`, its own address
    /// on the control connection.
    Active {
        /// The client's data port.
        target: SocketAddr,
        /// The server's control-connection address.
        local: IpAddr,
    },
    /// PASV/EPSV under PROT P: the connection's task already runs (see [`prepare`]).
    Prepared(Prepared),
}

/// Connects to an active-mode client from `local` (port from the OS), within `wait`.
async fn connect_from(
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
async fn protect(
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

/// What a transfer task does once its data connection is open.
pub enum Job {
    /// Send these bytes (a listing) and close.
    SendBytes(Vec<u8>),
    /// Send a file from its current position; `ascii` turns bare LF into CRLF.
    SendFile {
        /// The open file.
        source: Box<dyn ByteSource>,
        /// TYPE A conversion.
        ascii: bool,
    },
    /// Receive into an upload; `ascii` turns CRLF into LF.
    Receive {
        /// The upload; handed back in [`Outcome`] to be committed.
        sink: Box<dyn ByteSink>,
        /// TYPE A conversion.
        ascii: bool,
    },
}

/// The end of a transfer task.
pub struct Outcome {
    /// Bytes moved over the data connection, or why it failed.
    pub result: Result<u64, DataError>,
    /// For a successful receive: the upload, ready to commit.
    pub upload: Option<Box<dyn ByteSink>>,
}

/// Where a data connection belongs, beside its [`DataPlan`].
pub struct Channel {
    /// The control connection's client: the only address a passive connection is taken from.
    pub peer: ClientAddr,
    /// The data timeout: for the connection to arrive, and for each read or write.
    pub stall: Duration,
    /// The session, for log lines.
    pub session: u64,
    /// Where a refused passive connection (port theft) is recorded; the audit log writes its
    /// stderr line within its noise budget.
    pub audit: Recipient<Record>,
}

/// What the transfer command hands to a transfer task.
pub struct Start {
    /// The transfer.
    pub job: Job,
    /// TLS (PROT P) for this job, if any.
    pub protection: Option<Protection>,
    /// Bytes moved, for STAT.
    pub progress: Arc<AtomicU64>,
    /// The user's transfer slot and bandwidth budgets.
    pub permit: TransferPermit,
}

/// The task of a passive data connection under PROT P, started at PASV/EPSV (see
/// [`prepare`]); the transfer command hands it its job with [`Prepared::start`]. Dropping it
/// (a new PASV, REIN, the session's end) ends the task.
pub struct Prepared {
    start: tokio::sync::oneshot::Sender<Start>,
    task: tokio::task::JoinHandle<Outcome>,
}

impl std::fmt::Debug for Prepared {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Prepared")
            .field("finished", &self.task.is_finished())
            .finish()
    }
}

impl Prepared {
    /// Hands the transfer to the task and returns the task. A task that has already ended
    /// (its connection or handshake failed) does not take it, and its outcome says why.
    pub fn start(self, start: Start) -> tokio::task::JoinHandle<Outcome> {
        // A refused job is dropped here, and with it any upload it carried.
        let _ = self.start.send(start);
        self.task
    }
}

/// Starts the transfer task (on `pool`) for what `plan` describes: at once for a passive or
/// active plan; for a prepared one, by handing it the job.
pub fn begin(
    pool: &TransferPool,
    plan: DataPlan,
    channel: Channel,
    start: Start,
) -> tokio::task::JoinHandle<Outcome> {
    let Channel {
        peer,
        stall,
        session,
        ..
    } = channel;
    match plan {
        DataPlan::Prepared(prepared) => prepared.start(start),
        DataPlan::Passive(listener) => {
            let refused = channel.refusal();
            pool.spawn(run(
                accept_passive(listener, peer, stall, session, refused),
                stall,
                start,
            ))
        }
        DataPlan::Active { target, local } => {
            pool.spawn(run(connect_from(local, target, stall), stall, start))
        }
    }
}

impl Channel {
    /// Records a refused passive connection (port theft) in the audit log, which writes its
    /// stderr line within its noise budget.
    fn refusal(&self) -> impl Fn(SocketAddr) + use<> {
        let (session, peer, audit) = (self.session, self.peer, self.audit.clone());
        move |from| {
            let event = Event::now(session, from, EventKind::DataRefused)
                .with_command(format!("expected {}", peer.ip()));
            audit.do_send(Record(event));
        }
    }
}

/// Starts, on `pool`, the task of a passive data connection under PROT P. It takes the
/// client's connection as soon as it arrives (from the control connection's address only),
/// so that a client that starts TLS before it sends the transfer command (aioftp does; RFC
/// 4217 leaves the order open) gets its handshake at once, with `early`: the upload
/// configuration, which sends no session tickets, since the task cannot know yet whether an
/// upload follows (see [`crate::tls::upload_config`]). A client that sends the command first
/// gets its handshake after it, with the job's configuration, as on any other connection.
/// Resumption is required of both alike when configured.
pub fn prepare(
    pool: &TransferPool,
    listener: std::net::TcpListener,
    channel: Channel,
    early: Protection,
) -> Prepared {
    let (start, started) = tokio::sync::oneshot::channel();
    let task = pool.spawn(prepared(listener, channel, early, started));
    Prepared { start, task }
}

/// The task behind [`prepare`].
async fn prepared(
    listener: std::net::TcpListener,
    channel: Channel,
    early: Protection,
    mut started: tokio::sync::oneshot::Receiver<Start>,
) -> Outcome {
    let Channel {
        peer,
        stall,
        session,
        ..
    } = channel;
    let refused = channel.refusal();
    let listener = match TcpListener::from_std(listener) {
        Ok(listener) => listener,
        Err(e) => {
            log::warn!("session {session}: passive listener unusable: {e}");
            return failed(DataError::NoConnection);
        }
    };
    // Before the command the wait has no bound of its own: the session ends this task when
    // it drops the plan (it does on its idle timeout too). `biased`: once the command has
    // come, whatever else is ready is handled in the command's order.
    let stream = tokio::select! {
        biased;
        start = &mut started => {
            let Ok(start) = start else { return failed(DataError::NoConnection) };
            let connected = tokio::time::timeout(stall, accept_from(&listener, peer, session, &refused))
                .await
                .unwrap_or(Err(DataError::NoConnection));
            return run(std::future::ready(connected), stall, start).await;
        }
        accepted = accept_from(&listener, peer, session, &refused) => match accepted {
            Ok(stream) => stream,
            Err(e) => return failed(e),
        },
    };
    drop(listener);
    tokio::select! {
        biased;
        start = &mut started => {
            let Ok(start) = start else { return failed(DataError::NoConnection) };
            return run(std::future::ready(Ok(stream)), stall, start).await;
        }
        readable = stream.readable() => {
            if let Err(e) = readable {
                return failed(DataError::Network(e));
            }
        }
    }
    // The client spoke first: its ClientHello, before the command.
    let tls = match protect(stream, &early).await {
        Ok(tls) => tls,
        Err(e) => return failed(e),
    };
    let Ok(start) = started.await else {
        return failed(DataError::NoConnection);
    };
    if start.protection.is_none() {
        return failed(DataError::Tls(
            "TLS was started on the data connection, but PROT C came after PASV".into(),
        ));
    }
    let pace = Pace {
        stall,
        progress: &start.progress,
        permit: &start.permit,
    };
    run_job(tls, start.job, &pace).await
}

fn failed(e: DataError) -> Outcome {
    Outcome {
        result: Err(e),
        upload: None,
    }
}

/// Waits for the data connection (`connect`), then runs the job: TLS first under PROT P,
/// counting bytes into `progress` (for STAT) and drawing on `permit`'s bandwidth budgets.
/// Every read and write must make progress within the data timeout (`stall`).
async fn run(
    connect: impl Future<Output = Result<TcpStream, DataError>>,
    stall: Duration,
    start: Start,
) -> Outcome {
    let Start {
        job,
        protection,
        progress,
        permit,
    } = start;
    let stream = match connect.await {
        Ok(stream) => stream,
        Err(e) => return failed(e),
    };
    let pace = Pace {
        stall,
        progress: &progress,
        permit: &permit,
    };
    match protection {
        None => match job {
            // The common case, a binary download without TLS or a bandwidth budget, goes
            // from the page cache to the socket without a copy through user space.
            Job::SendFile {
                source,
                ascii: false,
            } if permit.unthrottled() && source.local_file().is_some() => Outcome {
                result: send_file_zero_copy(stream, source, &pace).await,
                upload: None,
            },
            // A binary upload to a local file (a staged one) moves from the socket to the
            // file through a pipe (splice(2)), without a copy through user space.
            Job::Receive {
                mut sink,
                ascii: false,
            } if permit.unthrottled() => {
                if sink.local_target().is_some() {
                    receive_zero_copy(stream, sink, &pace).await
                } else {
                    let job = Job::Receive { sink, ascii: false };
                    run_job(stream, job, &pace).await
                }
            }
            job => run_job(stream, job, &pace).await,
        },
        Some(protection) => match protect(stream, &protection).await {
            Ok(tls) => run_job(tls, job, &pace).await,
            Err(e) => failed(e),
        },
    }
}

/// How a running transfer is kept in bounds: the stall timeout, the progress counter (for
/// STAT) and the bandwidth budgets it draws from.
struct Pace<'a> {
    stall: Duration,
    progress: &'a AtomicU64,
    permit: &'a TransferPermit,
}

impl Pace<'_> {
    /// Counts `n` bytes moved and waits as long as the budgets require.
    async fn moved(&self, n: usize) {
        self.progress.fetch_add(n as u64, Ordering::Relaxed);
        self.permit.pace(n as u64).await;
    }

    fn chunk(&self) -> usize {
        self.permit.chunk(CHUNK)
    }
}

/// Runs `job` over an open data connection, plain or TLS.
async fn run_job<S: AsyncRead + AsyncWrite + Unpin>(
    stream: S,
    job: Job,
    pace: &Pace<'_>,
) -> Outcome {
    match job {
        Job::SendBytes(bytes) => Outcome {
            result: send_bytes(stream, &bytes, pace).await,
            upload: None,
        },
        Job::SendFile { source, ascii } => Outcome {
            result: send_file(stream, source, ascii, pace).await,
            upload: None,
        },
        Job::Receive { sink, ascii } => receive(stream, sink, ascii, pace).await,
    }
}

async fn with_stall<T>(stall: Duration, op: impl Future<Output = io::Result<T>>) -> io::Result<T> {
    tokio::time::timeout(stall, op).await.unwrap_or_else(|_| {
        Err(io::Error::new(
            io::ErrorKind::TimedOut,
            "data connection stalled",
        ))
    })
}

async fn send_bytes<S: AsyncWrite + Unpin>(
    mut stream: S,
    bytes: &[u8],
    pace: &Pace<'_>,
) -> Result<u64, DataError> {
    let stall = pace.stall;
    for chunk in bytes.chunks(pace.chunk()) {
        with_stall(stall, stream.write_all(chunk))
            .await
            .map_err(DataError::Network)?;
        pace.moved(chunk.len()).await;
    }
    with_stall(stall, stream.shutdown())
        .await
        .map_err(DataError::Network)?;
    Ok(bytes.len() as u64)
}

/// Waits (within the stall timeout) until `stream` is ready for `interest`, then runs the
/// non-blocking `op` once. `None`: the readiness was stale (EAGAIN), wait again.
async fn when_ready(
    stream: &TcpStream,
    interest: Interest,
    stall: Duration,
    op: impl FnOnce() -> io::Result<usize>,
) -> Result<Option<usize>, DataError> {
    with_stall(stall, stream.ready(interest))
        .await
        .map_err(DataError::Network)?;
    match stream.try_io(interest, op) {
        Ok(n) => Ok(Some(n)),
        Err(e) if e.kind() == io::ErrorKind::WouldBlock => Ok(None),
        Err(e) => Err(DataError::Network(e)),
    }
}

/// Pipe capacity asked for splice uploads: bigger moves per system call than the 64 KiB default.
const PIPE_SIZE: usize = 1024 * 1024;
/// Largest single splice from the pipe into the file. The kernel sizes page-cache folios by
/// the write's length; 64 KiB folios come from the allocator's plentiful small free blocks,
/// while 1 MiB ones split the large blocks a VM with free page reporting has handed back to
/// its host, and the first touch of those made uploads 2-4x slower in the benchmark.
const FILE_SPLICE: usize = 64 * 1024;

/// STOR of a binary file with `splice(2)`: socket to pipe, pipe to the sink's local file.
/// The quota is charged before each chunk reaches the file.
async fn receive_zero_copy(
    stream: TcpStream,
    mut sink: Box<dyn ByteSink>,
    pace: &Pace<'_>,
) -> Outcome {
    let result = match sink.local_target() {
        Some(target) => splice_into(&stream, target.file, target.charge, pace).await,
        None => Err(DataError::Local(io::Error::other(
            "splice writes only to a local file",
        ))),
    };
    if result.is_ok() {
        let mut stream = stream;
        if let Err(e) = with_stall(pace.stall, stream.shutdown()).await {
            log::debug!("data connection closed before our FIN: {e}");
        }
    }
    settle(result, sink).await
}

async fn splice_into(
    stream: &TcpStream,
    file: &std::fs::File,
    charge: &mut Charge,
    pace: &Pace<'_>,
) -> Result<u64, DataError> {
    use nix::fcntl::{FcntlArg, SpliceFFlags, fcntl, splice};
    let local = |e: nix::Error| DataError::Local(io::Error::from(e));
    let (pipe_out, pipe_in) = nix::unistd::pipe().map_err(local)?;
    // A smaller pipe only means more system calls.
    let capacity = i32::try_from(PIPE_SIZE).unwrap_or(i32::MAX);
    let _ = fcntl(&pipe_in, FcntlArg::F_SETPIPE_SZ(capacity));
    let mut received = 0u64;
    loop {
        // The pipe is empty here, so EAGAIN can only mean the socket has nothing yet.
        let moved = when_ready(stream, Interest::READABLE, pace.stall, || {
            let flags = SpliceFFlags::SPLICE_F_MOVE | SpliceFFlags::SPLICE_F_NONBLOCK;
            splice(stream, None, &pipe_in, None, PIPE_SIZE, flags).map_err(io::Error::from)
        });
        let n = match moved.await? {
            Some(0) => return Ok(received),
            Some(n) => n,
            None => continue,
        };
        charge.add(n as u64).map_err(|e| store_error(e.into()))?;
        let mut left = n;
        while left > 0 {
            let written = splice(
                &pipe_out,
                None,
                file,
                None,
                left.min(FILE_SPLICE),
                SpliceFFlags::SPLICE_F_MOVE,
            )
            .map_err(local)?;
            if written == 0 {
                return Err(DataError::Local(io::ErrorKind::WriteZero.into()));
            }
            left -= written;
        }
        received += n as u64;
        pace.moved(n).await;
    }
}

/// How much one `sendfile` call may move: small enough that other transfers on the same
/// transfer thread take turns often.
const SENDFILE_CHUNK: usize = 512 * 1024;

/// RETR with `sendfile(2)`: the kernel copies from the file's pages to the socket. The file is
/// already positioned (REST). A client that stops reading is ended by the stall timeout.
async fn send_file_zero_copy(
    stream: TcpStream,
    source: Box<dyn ByteSource>,
    pace: &Pace<'_>,
) -> Result<u64, DataError> {
    let Some(file) = source.local_file() else {
        return Err(DataError::Local(io::Error::other(
            "sendfile needs a local file",
        )));
    };
    let mut sent = 0u64;
    loop {
        let moved = when_ready(&stream, Interest::WRITABLE, pace.stall, || {
            nix::sys::sendfile::sendfile(&stream, file, None, SENDFILE_CHUNK)
                .map_err(io::Error::from)
        });
        match moved.await? {
            Some(0) => break,
            Some(n) => {
                sent += n as u64;
                pace.moved(n).await;
            }
            None => {}
        }
    }
    let mut stream = stream;
    with_stall(pace.stall, stream.shutdown())
        .await
        .map_err(DataError::Network)?;
    Ok(sent)
}

async fn send_file<S: AsyncWrite + Unpin>(
    mut stream: S,
    mut file: Box<dyn ByteSource>,
    ascii: bool,
    pace: &Pace<'_>,
) -> Result<u64, DataError> {
    let stall = pace.stall;
    let mut buf = vec![0u8; pace.chunk()];
    let mut converted = Vec::new();
    let mut last_was_cr = false;
    let mut sent = 0u64;
    loop {
        let n = file.read(&mut buf).await.map_err(DataError::Local)?;
        if n == 0 {
            break;
        }
        let out = if ascii {
            converted.clear();
            last_was_cr = lf_to_crlf(&buf[..n], last_was_cr, &mut converted);
            &converted[..]
        } else {
            &buf[..n]
        };
        with_stall(stall, stream.write_all(out))
            .await
            .map_err(DataError::Network)?;
        sent += out.len() as u64;
        pace.moved(out.len()).await;
    }
    with_stall(stall, stream.shutdown())
        .await
        .map_err(DataError::Network)?;
    Ok(sent)
}

async fn receive<S: AsyncRead + AsyncWrite + Unpin>(
    mut stream: S,
    mut sink: Box<dyn ByteSink>,
    ascii: bool,
    pace: &Pace<'_>,
) -> Outcome {
    let stall = pace.stall;
    // A local sink writes on this thread (see its doc): no write is left running in the
    // background when ABOR drops this task, so the file is complete as judged once the task
    // is gone (rolled back, measured, unlocked).
    let mut buf = vec![0u8; pace.chunk()];
    let mut converted = Vec::new();
    let mut pending_cr = false;
    let mut received = 0u64;
    let result: Result<u64, DataError> = async {
        loop {
            let n = with_stall(stall, stream.read(&mut buf))
                .await
                .map_err(DataError::Network)?;
            if n == 0 {
                break;
            }
            received += n as u64;
            let data = if ascii {
                converted.clear();
                pending_cr = crlf_to_lf(&buf[..n], pending_cr, &mut converted);
                &converted[..]
            } else {
                &buf[..n]
            };
            // Charged before it is written: the file never holds a byte beyond the quota.
            sink.write(data).await.map_err(store_error)?;
            pace.moved(n).await;
        }
        if pending_cr {
            sink.write(b"\r").await.map_err(store_error)?;
        }
        // Over TLS this answers the client's close_notify with ours (clients such as Python's
        // ftplib wait for it, RFC 4217 §10); over TCP it is a plain FIN. Every byte has
        // arrived by now, so a client that has already gone (lftp closes at once) is no error.
        if let Err(e) = with_stall(stall, stream.shutdown()).await {
            log::debug!("data connection closed before our close_notify: {e}");
        }
        Ok(received)
    }
    .await;
    settle(result, sink).await
}

/// A sink's failure as a transfer's: over the quota (552), else local (451, 452 when full).
fn store_error(e: StoreError) -> DataError {
    match e {
        StoreError::QuotaExceeded => DataError::QuotaExceeded,
        StoreError::Io(e) => DataError::Local(e),
        StoreError::NoSpace => DataError::Local(rustix::io::Errno::NOSPC.into()),
        e => DataError::Local(io::Error::other(e)),
    }
}

/// The end of a receive, whichever way the bytes came: a successful upload goes back to the
/// Session to be committed; one over the quota is rolled back; any other failure drops the
/// upload. Dropped, an upload that was interrupted (426: the connection failed or stalled; or
/// ABOR, or the session ended, which drop the task) keeps what arrived for a later resume: an
/// in-place writer's file as written, a staged file of a new name moved to that name; a
/// staged file over an existing one is removed, which leaves the previous file as it was. A
/// failure on our side (451, 452) keeps no staged file.
async fn settle(result: Result<u64, DataError>, sink: Box<dyn ByteSink>) -> Outcome {
    match result {
        Ok(n) => {
            return Outcome {
                result: Ok(n),
                upload: Some(sink),
            };
        }
        Err(DataError::QuotaExceeded) => sink.abort(Abort::Refused).await,
        Err(DataError::Local(_)) => sink.abort(Abort::Failed).await,
        // Interrupted: dropped.
        Err(_) => drop(sink),
    }
    Outcome {
        result,
        upload: None,
    }
}

/// TYPE A sending: a bare LF becomes CRLF; an existing CRLF is kept. `last_was_cr` carries the
/// state across chunks; the new state is returned.
pub fn lf_to_crlf(input: &[u8], mut last_was_cr: bool, out: &mut Vec<u8>) -> bool {
    out.reserve(input.len() + input.len() / 16);
    for &b in input {
        if b == b'\n' && !last_was_cr {
            out.push(b'\r');
        }
        out.push(b);
        last_was_cr = b == b'\r';
    }
    last_was_cr
}

/// TYPE A receiving: CRLF becomes LF; a lone CR is kept. A CR at the end of a chunk is held
/// back (`pending_cr`) until the next byte shows whether an LF follows.
pub fn crlf_to_lf(input: &[u8], mut pending_cr: bool, out: &mut Vec<u8>) -> bool {
    out.reserve(input.len());
    for &b in input {
        if pending_cr && b != b'\n' {
            out.push(b'\r');
        }
        pending_cr = b == b'\r';
        if !pending_cr {
            out.push(b);
        }
    }
    pending_cr
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ascii_send_conversion_across_chunks() {
        let mut out = Vec::new();
        let state = lf_to_crlf(b"a\nb\r", false, &mut out);
        let state = lf_to_crlf(b"\nc\n", state, &mut out);
        assert!(!state);
        assert_eq!(out, b"a\r\nb\r\nc\r\n");
    }

    #[test]
    fn ascii_receive_conversion_across_chunks() {
        let mut out = Vec::new();
        let pending = crlf_to_lf(b"a\r\nb\r", false, &mut out);
        assert!(pending);
        let pending = crlf_to_lf(b"\nc\rd\r", pending, &mut out);
        assert!(pending);
        assert_eq!(out, b"a\nb\nc\rd");
    }

    #[tokio::test]
    async fn transfer_pool_spreads_running_tasks_and_cancels_them_when_dropped() {
        let pool = TransferPool::new(2).expect("pool");
        let (hold, held) = tokio::sync::watch::channel(());
        let on_thread = |mut held: tokio::sync::watch::Receiver<()>| async move {
            let name = std::thread::current().name().map(str::to_owned);
            // Runs until the sender goes: the pool must count it as busy meanwhile.
            let _ = held.changed().await;
            name
        };
        let a = pool.spawn(on_thread(held.clone()));
        let b = pool.spawn(on_thread(held.clone()));
        drop(hold);
        let (a, b) = (a.await.expect("a"), b.await.expect("b"));
        assert!(a.is_some() && b.is_some());
        assert_ne!(a, b, "two running transfers shared a thread");

        let (_keep, never) = tokio::sync::watch::channel(());
        let stuck = pool.spawn(on_thread(never));
        drop(pool);
        let ended = tokio::time::timeout(Duration::from_secs(10), stuck).await;
        assert!(
            matches!(ended, Ok(Err(ref e)) if e.is_cancelled()),
            "a running transfer outlived its pool"
        );
    }

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
