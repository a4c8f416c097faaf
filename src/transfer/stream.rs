//! Moving the bytes over an open data connection: listings, downloads and uploads, with
//! `sendfile(2)` and `splice(2)` where they apply, and the end of an upload (settle).

use super::ascii::{crlf_to_lf, lf_to_crlf};
use super::*;
use crate::storage::Abort;

/// Runs `job` over an open data connection, plain or TLS.
pub(super) async fn run_job<S: AsyncRead + AsyncWrite + Unpin>(
    stream: S,
    job: Job,
    pace: &Pace<'_>,
) -> Outcome {
    match job {
        Job::SendPieces(pieces) => Outcome {
            result: send_pieces(stream, pieces, pace).await,
            upload: None,
        },
        Job::SendFile { source, ascii } => Outcome {
            result: send_file(stream, source, ascii, pace).await,
            upload: None,
        },
        Job::Receive { sink, ascii } => receive(stream, sink, ascii, pace).await,
    }
}

pub(super) async fn with_stall<T>(
    stall: Duration,
    op: impl Future<Output = io::Result<T>>,
) -> io::Result<T> {
    tokio::time::timeout(stall, op).await.unwrap_or_else(|_| {
        Err(io::Error::new(
            io::ErrorKind::TimedOut,
            "data connection stalled",
        ))
    })
}

/// Writes `bytes` a chunk at a time, each within the stall timeout and the budgets.
async fn write_paced<S: AsyncWrite + Unpin>(
    stream: &mut S,
    bytes: &[u8],
    pace: &Pace<'_>,
) -> Result<(), DataError> {
    for chunk in bytes.chunks(pace.chunk()) {
        with_stall(pace.stall, stream.write_all(chunk))
            .await
            .map_err(DataError::Network)?;
        pace.moved(chunk.len()).await;
    }
    Ok(())
}

/// Writes each piece before it asks for the next, so no more than one is held.
pub(super) async fn send_pieces<S: AsyncWrite + Unpin>(
    mut stream: S,
    mut pieces: Pieces,
    pace: &Pace<'_>,
) -> Result<u64, DataError> {
    use futures::StreamExt as _;
    let mut sent = 0u64;
    while let Some(piece) = pieces.next().await {
        let piece = piece.map_err(store_error)?;
        write_paced(&mut stream, &piece, pace).await?;
        sent += piece.len() as u64;
    }
    with_stall(pace.stall, stream.shutdown())
        .await
        .map_err(DataError::Network)?;
    Ok(sent)
}

/// Waits (within the stall timeout) until `stream` is ready for `interest`, then runs the
/// non-blocking `op` once. `None`: the readiness was stale (EAGAIN), wait again.
pub(super) async fn when_ready(
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
pub(super) async fn receive_zero_copy(
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

pub(super) async fn splice_into(
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
pub(super) async fn send_file_zero_copy(
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

pub(super) async fn send_file<S: AsyncWrite + Unpin>(
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

pub(super) async fn receive<S: AsyncRead + AsyncWrite + Unpin>(
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
pub(super) fn store_error(e: StoreError) -> DataError {
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
pub(super) async fn settle(result: Result<u64, DataError>, sink: Box<dyn ByteSink>) -> Outcome {
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
