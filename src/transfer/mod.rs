//! Data connections and the transfers over them. A Session prepares a passive listener, then a
//! transfer task (spawned by the Session, cancelled by ABOR) accepts the client's connection and
//! streams between it and a byte source or sink the FileStore opened. File bytes never pass
//! through a mailbox.
//!
//! Transfer tasks run on a [`TransferPool`] of their own threads, not on the session arbiters:
//! a download at full speed keeps a thread busy, and control replies must not queue behind it.
//!
//! This module owns no session state: it gets everything as arguments and returns a result.
//!
//! - `connect`: the passive listener, the active connect, TLS (PROT P).
//! - `stream`: the bytes: sendfile and splice where they apply, the end of an upload.
//! - `ascii`: TYPE A line-end conversion.

use std::io;
use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::time::Duration;

use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt, Interest};
use tokio::net::{TcpListener, TcpStream};

use crate::audit::{Event, EventKind};
use crate::config::{Config, PortRange};
use crate::net::ClientAddr;
use crate::net::preamble::{HeaderError, PROXY_HEADER_LIMIT, Proxied, read_header};
use crate::quota::Charge;
use crate::state::TransferPermit;
use crate::storage::{ByteSink, ByteSource, StoreError};

mod ascii;
mod connect;
mod stream;

pub use connect::{DataListener, Protection, bind_passive, canonical};
use connect::{accept_passive, connect_from, protect};
use stream::{receive_zero_copy, run_job, send_file_zero_copy};

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
    /// Transfers running now on every thread (aborted ones until they are gone).
    pub fn running(&self) -> usize {
        std::iter::once(&self.first)
            .chain(&self.others)
            .map(|thread| thread.running.load(Ordering::Relaxed))
            .sum()
    }

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

    /// Runs `task`, which only waits on another (the session's wrapper around a transfer), on
    /// the pool without counting it as load: counted, it would steer the next transfer away
    /// from an idle thread, and every transfer would land on the same threads.
    pub fn spawn_waiter<T: Send + 'static>(
        &self,
        task: impl Future<Output = T> + Send + 'static,
    ) -> tokio::task::JoinHandle<T> {
        self.first.runtime.spawn(task)
    }
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

/// What a transfer task does once its data connection is open.
pub enum Job {
    /// Send each piece as it comes (a listing read a page at a time), then close; a piece
    /// is asked for only once the previous one is written. A failed piece ends the transfer
    /// as a local error (451).
    SendPieces(Pieces),
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

/// The pieces of a [`Job::SendPieces`].
pub type Pieces = futures::stream::BoxStream<'static, Result<Vec<u8>, StoreError>>;

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
    /// The server's configuration, for `proxied`: which peers must send a PROXY header.
    pub config: Arc<Config>,
    /// The data timeout: for the connection to arrive, and for each read or write.
    pub stall: Duration,
    /// The session, for log lines.
    pub session: u64,
    /// Where a refused passive connection (port theft) is recorded; the audit log writes its
    /// stderr line within its noise budget.
    pub audit: Arc<dyn Fn(Event) + Send + Sync>,
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
    let refused = channel.refusal();
    let Channel {
        peer,
        config,
        stall,
        session,
        ..
    } = channel;
    match plan {
        DataPlan::Prepared(prepared) => prepared.start(start),
        DataPlan::Passive(listener) => pool.spawn(run(
            accept_passive(listener, peer, config, stall, session, refused),
            stall,
            start,
        )),
        DataPlan::Active { target, local } => {
            pool.spawn(run(connect_from(local, target, stall), stall, start))
        }
    }
}

impl Channel {
    /// Records a refused passive connection (port theft) in the audit log, which writes its
    /// stderr line within its noise budget.
    fn refusal(&self) -> impl Fn(SocketAddr) + use<> {
        let (session, peer, audit) = (self.session, self.peer, Arc::clone(&self.audit));
        move |from| {
            let event = Event::now(session, from, EventKind::DataRefused)
                .with_command(format!("expected {}", peer.ip()));
            audit(event);
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
    let refused = channel.refusal();
    let Channel {
        peer,
        config,
        stall,
        session,
        ..
    } = channel;
    let mut listener = match TcpListener::from_std(listener) {
        Ok(listener) => DataListener::new(listener),
        Err(e) => {
            log::warn!("session {session}: passive listener unusable: {e}");
            return failed(DataError::NoConnection);
        }
    };
    // Before the command the wait has no bound of its own: the session ends this task when
    // it drops the plan (it does on its idle timeout too). `biased`: once the command has
    // come, whatever else is ready is handled in the command's order. One accept, polled by
    // both arms: the command arriving mid-accept must not drop a connection being accepted.
    let stream = {
        let accept = listener.accept_from(peer, &config, session, &refused);
        tokio::pin!(accept);
        tokio::select! {
            biased;
            start = &mut started => {
                let Ok(start) = start else { return failed(DataError::NoConnection) };
                let connected = tokio::time::timeout(stall, &mut accept)
                    .await
                    .unwrap_or(Err(DataError::NoConnection));
                return run(std::future::ready(connected), stall, start).await;
            }
            accepted = &mut accept => match accepted {
                Ok(stream) => stream,
                Err(e) => return failed(e),
            },
        }
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

#[cfg(test)]
mod tests {
    use super::*;

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
    async fn transfers_spread_over_the_threads_beside_their_waiters() {
        let pool = TransferPool::new(2).expect("pool");
        let (hold, held) = tokio::sync::watch::channel(());
        let on_thread = |mut held: tokio::sync::watch::Receiver<()>| async move {
            let name = std::thread::current().name().map(str::to_owned);
            let _ = held.changed().await;
            name
        };
        // As the session starts each transfer: the transfer, then a task awaiting it.
        let run1 = pool.spawn(on_thread(held.clone()));
        let wait1 = pool.spawn_waiter(on_thread(held.clone()));
        let run2 = pool.spawn(on_thread(held.clone()));
        let wait2 = pool.spawn_waiter(on_thread(held.clone()));
        drop(hold);
        let (r1, r2) = (run1.await.expect("run1"), run2.await.expect("run2"));
        let _ = (wait1.await, wait2.await);
        assert!(r1.is_some() && r2.is_some(), "pool threads are named");
        assert_ne!(r1, r2, "both transfers ran on {r1:?}");
    }
}
