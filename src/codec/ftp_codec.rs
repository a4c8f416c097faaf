//! The server's control-channel decoder: bytes in, [`Inbound`] values out (replies are encoded
//! by [`crate::codec::Reply::encode`]). Pure framing and parsing; no sockets.
//!
//! Only I/O errors are decoder errors. A bad line is an [`Inbound::Malformed`] value, because
//! after a decoder `Err` tokio-util's `Framed` ends the stream (tokio-rs/tokio#3976), and one
//! hostile line would end the session.

use bytes::BytesMut;
use tokio_util::codec::Decoder;

use super::command::{Command, CommandError};

/// Telnet "interpret as command" (RFC 854); FTP control connections follow the Telnet protocol.
const IAC: u8 = 0xFF;
/// Telnet option negotiation verbs (WILL, WONT, DO, DONT) take one option byte after them.
const NEGOTIATION: std::ops::RangeInclusive<u8> = 251..=254;
/// A read buffer emptied after a line is swapped for an unallocated one once it grew past this,
/// so one long line does not pin memory for the rest of an idle session.
const KEEP_READ_CAPACITY: usize = 256;

/// One item read from the control channel.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Inbound {
    /// A well-formed command.
    Command(Command),
    /// A line that is not a valid command; the session answers it and goes on.
    Malformed(CommandError),
}

/// Frames CRLF-terminated lines (a bare LF is accepted), strips Telnet IAC sequences, enforces
/// the line length limit and parses each line into a [`Command`].
#[derive(Debug)]
pub struct FtpCodec {
    max_line: usize,
    /// Where to resume the newline search, so a line arriving in pieces is scanned once.
    next_index: usize,
    /// True while throwing away the rest of an over-long line.
    discarding: bool,
}

impl FtpCodec {
    /// A codec refusing lines longer than `max_line` bytes (line end not counted).
    pub fn new(max_line: usize) -> FtpCodec {
        FtpCodec {
            max_line,
            next_index: 0,
            discarding: false,
        }
    }
}

impl Decoder for FtpCodec {
    type Item = Inbound;
    type Error = std::io::Error;

    fn decode(&mut self, buf: &mut BytesMut) -> Result<Option<Inbound>, std::io::Error> {
        let newline = buf[self.next_index..]
            .iter()
            .position(|b| *b == b'\n')
            .map(|offset| self.next_index + offset);
        let Some(end) = newline else {
            // Allow for the CR of a CRLF that has not been followed by its LF yet.
            if buf.len() > self.max_line + 1 {
                self.discarding = true;
                buf.clear();
                shrink(buf, KEEP_READ_CAPACITY);
                self.next_index = 0;
            } else {
                self.next_index = buf.len();
            }
            return Ok(None);
        };
        let line = buf.split_to(end + 1);
        self.next_index = 0;
        shrink(buf, KEEP_READ_CAPACITY);
        if std::mem::take(&mut self.discarding) {
            return Ok(Some(Inbound::Malformed(CommandError::TooLong)));
        }
        let mut line = &line[..end];
        if let Some(stripped) = line.strip_suffix(b"\r") {
            line = stripped;
        }
        if line.len() > self.max_line {
            return Ok(Some(Inbound::Malformed(CommandError::TooLong)));
        }
        let line = strip_telnet(line);
        let item = match std::str::from_utf8(&line) {
            Err(_) => Inbound::Malformed(CommandError::NotUtf8),
            Ok(text) => match Command::parse(text) {
                Ok(cmd) => Inbound::Command(cmd),
                Err(err) => Inbound::Malformed(err),
            },
        };
        Ok(Some(item))
    }
}

/// Frees an empty buffer's allocation once it has grown past `keep` bytes.
fn shrink(buf: &mut BytesMut, keep: usize) {
    if buf.is_empty() && buf.capacity() > keep {
        *buf = BytesMut::new();
    }
}

/// Removes Telnet commands: `IAC IAC` is a literal 0xFF, `IAC WILL/WONT/DO/DONT x` and any other
/// `IAC x` (IP, DM, ... as sent before ABOR, RFC 959 §4.1.3) are dropped.
fn strip_telnet(line: &[u8]) -> std::borrow::Cow<'_, [u8]> {
    if !line.contains(&IAC) {
        return std::borrow::Cow::Borrowed(line);
    }
    let mut out = Vec::with_capacity(line.len());
    let mut i = 0;
    while i < line.len() {
        match (line[i], line.get(i + 1)) {
            (IAC, Some(&IAC)) => {
                out.push(IAC);
                i += 2;
            }
            (IAC, Some(verb)) if NEGOTIATION.contains(verb) => i += 3,
            (IAC, _) => i += 2,
            (byte, _) => {
                out.push(byte);
                i += 1;
            }
        }
    }
    std::borrow::Cow::Owned(out)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::codec::Password;

    fn decode_all(codec: &mut FtpCodec, buf: &mut BytesMut) -> Vec<Inbound> {
        let mut out = Vec::new();
        while let Some(item) = codec.decode(buf).expect("decoder never errs") {
            out.push(item);
        }
        out
    }

    #[test]
    fn crlf_and_bare_lf_lines() {
        let mut codec = FtpCodec::new(100);
        let mut buf = BytesMut::from(&b"NOOP\r\nUSER bob\nPASS x y\r\n"[..]);
        assert_eq!(
            decode_all(&mut codec, &mut buf),
            vec![
                Inbound::Command(Command::Noop),
                Inbound::Command(Command::User("bob".into())),
                Inbound::Command(Command::Pass(Password::new("x y"))),
            ]
        );
        assert!(buf.is_empty());
    }

    #[test]
    fn crlf_split_across_reads() {
        let mut codec = FtpCodec::new(100);
        let mut buf = BytesMut::from(&b"NO"[..]);
        assert_eq!(codec.decode(&mut buf).expect("ok"), None);
        buf.extend_from_slice(b"OP\r");
        assert_eq!(codec.decode(&mut buf).expect("ok"), None);
        buf.extend_from_slice(b"\n");
        assert_eq!(
            codec.decode(&mut buf).expect("ok"),
            Some(Inbound::Command(Command::Noop))
        );
    }

    #[test]
    fn over_long_line_is_discarded_then_the_next_line_works() {
        let mut codec = FtpCodec::new(64);
        let mut buf = BytesMut::from(&[b'A'; 100][..]);
        assert_eq!(codec.decode(&mut buf).expect("ok"), None);
        assert!(buf.is_empty(), "discarded bytes are not kept");
        buf.extend_from_slice(&[b'B'; 5000]);
        assert_eq!(codec.decode(&mut buf).expect("ok"), None);
        buf.extend_from_slice(b"BBB\r\nNOOP\r\n");
        assert_eq!(
            decode_all(&mut codec, &mut buf),
            vec![
                Inbound::Malformed(CommandError::TooLong),
                Inbound::Command(Command::Noop)
            ]
        );
    }

    #[test]
    fn long_line_arriving_whole_is_refused() {
        let mut codec = FtpCodec::new(64);
        let mut line = vec![b'x'; 65];
        line.extend_from_slice(b"\r\nNOOP\r\n");
        let mut buf = BytesMut::from(&line[..]);
        assert_eq!(
            decode_all(&mut codec, &mut buf),
            vec![
                Inbound::Malformed(CommandError::TooLong),
                Inbound::Command(Command::Noop)
            ]
        );
        let mut exact = vec![b'N'; 64];
        exact.extend_from_slice(b"\r\n");
        let mut buf = BytesMut::from(&exact[..]);
        assert!(matches!(
            codec.decode(&mut buf).expect("ok"),
            Some(Inbound::Command(Command::Unknown(_)))
        ));
    }

    #[test]
    fn telnet_sequences_are_removed() {
        let mut codec = FtpCodec::new(100);
        let mut buf = BytesMut::from(&b"\xff\xf4\xff\xf2ABOR\r\n\xff\xfb\x01NO\xff\xf1OP\r\n"[..]);
        assert_eq!(
            decode_all(&mut codec, &mut buf),
            vec![
                Inbound::Command(Command::Abor),
                Inbound::Command(Command::Noop)
            ]
        );
        assert_eq!(&*strip_telnet(b"a\xff\xffb"), b"a\xffb");
        assert_eq!(&*strip_telnet(b"a\xff"), b"a");
    }

    #[test]
    fn non_utf8_is_a_value_and_the_stream_goes_on() {
        let mut codec = FtpCodec::new(100);
        let mut buf = BytesMut::from(&b"RETR \xc3\x28\r\n\x00\x01\x02\r\nNOOP\r\n"[..]);
        let items = decode_all(&mut codec, &mut buf);
        assert_eq!(items[0], Inbound::Malformed(CommandError::NotUtf8));
        assert!(matches!(items[1], Inbound::Command(Command::Unknown(_))));
        assert_eq!(items[2], Inbound::Command(Command::Noop));
    }

    #[test]
    fn empty_line_is_malformed() {
        let mut codec = FtpCodec::new(100);
        let mut buf = BytesMut::from(&b"\r\n"[..]);
        assert_eq!(
            codec.decode(&mut buf).expect("ok"),
            Some(Inbound::Malformed(CommandError::Empty))
        );
    }

    #[test]
    fn read_buffer_shrinks_after_large_use() {
        let mut codec = FtpCodec::new(8192);
        let mut buf = BytesMut::with_capacity(8192);
        buf.extend_from_slice(b"NOOP\r\n");
        codec.decode(&mut buf).expect("ok");
        assert_eq!(buf.capacity(), 0);
    }
}
