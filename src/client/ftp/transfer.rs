//! Transfers over a prepared data connection: the transfer command and its replies, downloads,
//! uploads and listings, with progress and the abort flag polled between chunks.

use std::io::{self, Read, Write};
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use crate::client::entries::{RemoteEntry, parse_list_line, parse_mlsx_line};
use crate::client::stream::Stream;
use crate::codec::reply_parser::ServerReply;

use super::abort::reset;
use super::data::DataPrep;

use super::{ABORT_POLL, CHUNK, ClientError, FtpClient, MAX_PRELIMINARY, Result, is_timeout};

impl FtpClient {
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
            Some(tls) => Stream::tls(stream, &tls.config, &self.host, self.timeout)
                .map_err(ClientError::Tls)?,
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
        self.retrieve_range(remote, offset, None, sink, local_name, progress, abort)
    }

    /// [`FtpClient::retrieve`] of at most `length` bytes from `offset` (a segment of
    /// `pget`): once they are in, the rest of the transfer is aborted (ABOR, its replies
    /// read), and the session is ready for the next command.
    ///
    /// # Errors
    /// As [`FtpClient::retrieve`].
    #[allow(clippy::too_many_arguments)]
    pub fn retrieve_range(
        &mut self,
        remote: &str,
        offset: u64,
        length: Option<u64>,
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
            if length.is_some_and(|length| total >= length) {
                // The segment is in; the server may have more to send.
                self.abort_transfer(Some(data))?;
                return Ok(total);
            }
            let room = length.map_or(buf.len(), |length| {
                usize::try_from(length - total).map_or(buf.len(), |left| left.min(buf.len()))
            });
            match data.read(&mut buf[..room]) {
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
}
