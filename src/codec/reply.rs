//! `Reply`: a reply code and its text lines, with constructors for every reply the server sends,
//! and the single- and multi-line wire encoding of RFC 959 §4.2. Pure: no I/O.

use bytes::{BufMut, BytesMut};

/// The reply codes ferryd sends (RFC 959 §4.2 and Appendix II unless noted).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[repr(u16)]
pub enum ReplyCode {
    /// 150 File status okay; about to open data connection.
    OpeningData = 150,
    /// 200 Command okay.
    Ok = 200,
    /// 202 Command not implemented, superfluous at this site.
    Superfluous = 202,
    /// 211 System status, or system help reply (also FEAT, RFC 2389).
    SystemStatus = 211,
    /// 213 File status (SIZE, MDTM, `STAT <path>`).
    FileStatus = 213,
    /// 214 Help message.
    Help = 214,
    /// 215 NAME system type.
    SystemType = 215,
    /// 220 Service ready for new user.
    ServiceReady = 220,
    /// 221 Service closing control connection.
    Closing = 221,
    /// 225 Data connection open; no transfer in progress.
    DataOpenNoTransfer = 225,
    /// 226 Closing data connection; requested file action successful.
    TransferComplete = 226,
    /// 227 Entering Passive Mode (h1,h2,h3,h4,p1,p2).
    PassiveMode = 227,
    /// 229 Entering Extended Passive Mode (|||port|) (RFC 2428).
    ExtendedPassiveMode = 229,
    /// 230 User logged in, proceed.
    LoggedIn = 230,
    /// 234 AUTH accepted; the TLS handshake follows (RFC 2228, RFC 4217 §4).
    AuthOk = 234,
    /// 250 Requested file action okay, completed.
    FileActionOk = 250,
    /// 257 "PATHNAME" created (also the PWD reply).
    PathCreated = 257,
    /// 331 User name okay, need password.
    NeedPassword = 331,
    /// 350 Requested file action pending further information.
    PendingFurtherInfo = 350,
    /// 421 Service not available, closing control connection.
    ServiceNotAvailable = 421,
    /// 425 Can't open data connection.
    CantOpenData = 425,
    /// 426 Connection closed; transfer aborted.
    TransferAborted = 426,
    /// 450 Requested file action not taken; file unavailable (busy).
    FileBusy = 450,
    /// 451 Requested action aborted: local error in processing.
    LocalError = 451,
    /// 452 Requested action not taken; insufficient storage space.
    InsufficientStorage = 452,
    /// 500 Syntax error, command unrecognized (also: line too long).
    SyntaxError = 500,
    /// 501 Syntax error in parameters or arguments.
    BadArguments = 501,
    /// 502 Command not implemented.
    NotImplemented = 502,
    /// 503 Bad sequence of commands.
    BadSequence = 503,
    /// 504 Command not implemented for that parameter.
    NotImplementedForParameter = 504,
    /// 521 Data connection cannot be opened with this PROT setting (RFC 4217 §9).
    DataProtectionRequired = 521,
    /// 522 Network protocol not supported (RFC 2428 §2, EPRT).
    ProtocolNotSupported = 522,
    /// 530 Not logged in.
    NotLoggedIn = 530,
    /// 534 Request denied for policy reasons (RFC 2228).
    PolicyDenied = 534,
    /// 536 Requested PROT level not supported by mechanism (RFC 2228).
    ProtNotSupported = 536,
    /// 550 Requested action not taken; file unavailable.
    FileUnavailable = 550,
    /// 552 Requested file action aborted; exceeded storage allocation.
    ExceededStorage = 552,
    /// 553 Requested action not taken; file name not allowed.
    NameNotAllowed = 553,
    /// 554 Requested action not taken: invalid REST parameter (RFC 3659 §5.4).
    InvalidRestart = 554,
}

impl ReplyCode {
    /// The numeric code.
    pub fn as_u16(self) -> u16 {
        self as u16
    }

    /// Maps a numeric code from an error's `code()` to a variant; unknown codes become 451.
    pub fn from_u16(code: u16) -> ReplyCode {
        use ReplyCode::*;
        const ALL: &[ReplyCode] = &[
            OpeningData,
            Ok,
            Superfluous,
            SystemStatus,
            FileStatus,
            Help,
            SystemType,
            ServiceReady,
            Closing,
            DataOpenNoTransfer,
            TransferComplete,
            PassiveMode,
            ExtendedPassiveMode,
            LoggedIn,
            AuthOk,
            FileActionOk,
            PathCreated,
            NeedPassword,
            PendingFurtherInfo,
            ServiceNotAvailable,
            CantOpenData,
            TransferAborted,
            FileBusy,
            LocalError,
            InsufficientStorage,
            SyntaxError,
            BadArguments,
            NotImplemented,
            BadSequence,
            NotImplementedForParameter,
            DataProtectionRequired,
            ProtocolNotSupported,
            NotLoggedIn,
            PolicyDenied,
            ProtNotSupported,
            FileUnavailable,
            ExceededStorage,
            NameNotAllowed,
            InvalidRestart,
        ];
        ALL.iter()
            .copied()
            .find(|c| c.as_u16() == code)
            .unwrap_or(LocalError)
    }

    /// 1yz: a preliminary reply; another reply follows for the same command.
    pub fn is_preliminary(self) -> bool {
        self.as_u16() < 200
    }
}

/// One reply: a code and one or more text lines.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Reply {
    code: ReplyCode,
    lines: Vec<String>,
}

impl Reply {
    /// A single-line reply.
    pub fn new(code: ReplyCode, text: impl Into<String>) -> Reply {
        Reply {
            code,
            lines: vec![text.into()],
        }
    }

    /// A multi-line reply; `lines` must not be empty (an empty vec sends the code alone).
    pub fn multi(code: ReplyCode, lines: Vec<String>) -> Reply {
        Reply { code, lines }
    }

    /// `257 "<path>" <text>`, with embedded quotes doubled (RFC 959 Appendix II).
    pub fn path(path: &str, text: &str) -> Reply {
        Reply::new(
            ReplyCode::PathCreated,
            format!("{} {text}", quote_path(path)),
        )
    }

    /// The reply code.
    pub fn code(&self) -> ReplyCode {
        self.code
    }

    /// The text lines.
    pub fn lines(&self) -> &[String] {
        &self.lines
    }

    /// Writes the reply in wire format. A multi-line reply is `123-first`, then the middle lines,
    /// then `123 last` (RFC 959 §4.2). A middle line that starts with three digits gets a leading
    /// space so a client cannot take it for the end. CR, LF and NUL inside the text become
    /// spaces: text derived from a file name can never break the reply framing.
    pub fn encode(&self, dst: &mut BytesMut) {
        encode_lines(self.code, self.lines.iter(), dst);
    }
}

/// Writes a reply whose lines come from an iterator, in the format of [`Reply::encode`], so a
/// long reply is never held as a list of strings besides its wire form.
pub fn encode_lines<S: AsRef<str>>(
    code: ReplyCode,
    lines: impl IntoIterator<Item = S>,
    dst: &mut BytesMut,
) {
    let mut lines = lines.into_iter().peekable();
    let Some(first) = lines.next() else {
        dst.put_slice(format!("{} \r\n", code.as_u16()).as_bytes());
        return;
    };
    if lines.peek().is_none() {
        encode_last(code, first.as_ref(), dst);
        return;
    }
    encode_first(code, first.as_ref(), dst);
    while let Some(line) = lines.next() {
        if lines.peek().is_none() {
            encode_last(code, line.as_ref(), dst);
        } else {
            encode_middle(line.as_ref(), dst);
        }
    }
}

/// The first line of a multi-line reply, `123-text` (RFC 959 §4.2). With [`encode_middle`]
/// and [`encode_last`], a long reply can be written in pieces as the client reads it.
pub fn encode_first(code: ReplyCode, text: &str, dst: &mut BytesMut) {
    dst.put_slice(format!("{}-", code.as_u16()).as_bytes());
    write_text(dst, text);
}

/// A middle line of a multi-line reply: one that starts with three digits gets a leading
/// space so a client cannot take it for the end.
pub fn encode_middle(text: &str, dst: &mut BytesMut) {
    if text.len() >= 3 && text.as_bytes()[..3].iter().all(u8::is_ascii_digit) {
        dst.put_u8(b' ');
    }
    write_text(dst, text);
}

/// The last (or only) line of a reply, `123 text`.
pub fn encode_last(code: ReplyCode, text: &str, dst: &mut BytesMut) {
    dst.put_slice(format!("{} ", code.as_u16()).as_bytes());
    write_text(dst, text);
}

/// One line's text and CRLF; CR, LF and NUL inside it become spaces.
fn write_text(dst: &mut BytesMut, text: &str) {
    for (i, chunk) in text.split(['\r', '\n', '\0']).enumerate() {
        if i > 0 {
            dst.put_u8(b' ');
        }
        dst.put_slice(chunk.as_bytes());
    }
    dst.put_slice(b"\r\n");
}

/// Quotes a path for a 257 reply: wrapped in `"`, embedded `"` doubled (RFC 959 Appendix II).
pub fn quote_path(path: &str) -> String {
    format!("\"{}\"", path.replace('"', "\"\""))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn wire(reply: &Reply) -> String {
        let mut buf = BytesMut::new();
        reply.encode(&mut buf);
        String::from_utf8(buf.to_vec()).expect("utf8")
    }

    #[test]
    fn single_line() {
        assert_eq!(
            wire(&Reply::new(ReplyCode::Ok, "NOOP ok.")),
            "200 NOOP ok.\r\n"
        );
    }

    #[test]
    fn multi_line_framing() {
        let r = Reply::multi(
            ReplyCode::SystemStatus,
            vec![
                "Features:".into(),
                "UTF8".into(),
                "211 x".into(),
                "End".into(),
            ],
        );
        assert_eq!(wire(&r), "211-Features:\r\nUTF8\r\n 211 x\r\n211 End\r\n");
    }

    #[test]
    fn path_quotes_are_doubled() {
        assert_eq!(
            wire(&Reply::path("/a \"b\"", "created")),
            "257 \"/a \"\"b\"\"\" created\r\n"
        );
        assert_eq!(quote_path("/"), "\"/\"");
    }

    #[test]
    fn cr_lf_in_text_cannot_break_framing() {
        let out = wire(&Reply::path("/evil\r\n230 fake\n", "created"));
        assert_eq!(out.matches("\r\n").count(), 1, "{out:?}");
        assert!(out.starts_with("257 "));
    }

    #[test]
    fn codes_round_trip() {
        assert_eq!(ReplyCode::from_u16(552), ReplyCode::ExceededStorage);
        assert_eq!(ReplyCode::from_u16(999), ReplyCode::LocalError);
        assert!(ReplyCode::OpeningData.is_preliminary());
    }
}
