//! Abort (RFC 959 §4.1.3): ABOR after the Telnet Synch as urgent data, the wait for its
//! answer, and the reset of a data connection, keeping count of the replies still owed.

use std::io::{self, Read};
use std::time::{Duration, Instant};

use socket2::SockRef;

use crate::client::stream::Stream;

use super::{
    ABORT_POLL, ABORT_WAIT, CHUNK, ClientError, FtpClient, Result, TELNET_IP_SYNCH, is_timeout,
};

impl FtpClient {
    /// Aborts the running transfer, whose data connection is `data`, and reads every reply
    /// owed: 426 for the transfer and 226 for the ABOR, or 226 and 225 when the transfer had
    /// ended first, whatever the server sends.
    ///
    /// ABOR goes out while the data connection is still open: in stream mode its close is the
    /// end of the file (RFC 959 §3.4), and an upload cut that way would be stored, truncated.
    /// The data connection is reset, not closed, once the server has answered (or after
    /// [`ABORT_WAIT`]), so that even a server that did not look at ABOR sees a broken
    /// transfer, not a complete one.
    pub(super) fn abort_transfer(&mut self, data: Option<Stream>) -> Result<()> {
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
    pub(super) fn data_failed(&mut self, data: Stream, e: io::Error) -> ClientError {
        reset(data);
        match self.reply() {
            Ok(reply) if !reply.is_success() => ClientError::Refused(reply),
            Ok(_) => ClientError::Data(e),
            Err(control) => control,
        }
    }
}

/// Closes a data connection with a TCP reset: never mistaken for the end of an upload.
pub(super) fn reset(data: Stream) {
    let _ = SockRef::from(data.tcp()).set_linger(Some(Duration::ZERO));
    drop(data);
}
