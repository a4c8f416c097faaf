//! The client side of replies: assembling single- and multi-line replies from any FTP server
//! out of text lines (RFC 959 §4.2), and reading the path out of a 257 reply. Pure: no I/O.

use std::fmt;

/// A reply as received: any three-digit code, and its text lines without the code prefixes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ServerReply {
    /// The reply code, 100-599 (other three digits are a [`MalformedReply`]).
    pub code: u16,
    /// The text of each line; for a multi-line reply the first and last lines lose their
    /// `123-` / `123 ` prefix, middle lines are kept as sent.
    pub lines: Vec<String>,
}

impl ServerReply {
    /// 1yz: a preliminary reply; the final one follows.
    pub fn is_preliminary(&self) -> bool {
        self.code < 200
    }

    /// 2yz: the command succeeded.
    pub fn is_success(&self) -> bool {
        (200..300).contains(&self.code)
    }

    /// The text of the last line (the one carrying the code in a multi-line reply).
    pub fn text(&self) -> &str {
        self.lines.last().map_or("", String::as_str)
    }
}

impl fmt::Display for ServerReply {
    /// `550 No such file.` — the code and the last line; multi-line replies show every line.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.lines.as_slice() {
            [] => write!(f, "{}", self.code),
            [only] => write!(f, "{} {only}", self.code),
            lines => {
                for (i, line) in lines.iter().enumerate() {
                    if i > 0 {
                        writeln!(f)?;
                    }
                    if i == 0 || i + 1 == lines.len() {
                        write!(f, "{} {line}", self.code)?;
                    } else {
                        write!(f, "{line}")?;
                    }
                }
                Ok(())
            }
        }
    }
}

/// A line that cannot start a reply.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("malformed reply line: {0:?}")]
pub struct MalformedReply(pub String);

/// Collects lines into [`ServerReply`]s.
#[derive(Debug, Default)]
pub struct ReplyAssembler {
    /// The code and lines of a multi-line reply in progress.
    open: Option<(u16, Vec<String>)>,
}

/// The code a line starts with, and the byte after it. RFC 959 §4.2 codes run 1yz to 5yz; any
/// other three digits (`000`, `600`) are not a code, so a hostile server cannot pass off `099`
/// as a preliminary reply and keep the client waiting for a final one.
fn leading_code(line: &str) -> Option<(u16, Option<u8>)> {
    let bytes = line.as_bytes();
    if bytes.len() < 3
        || !bytes[..3].iter().all(u8::is_ascii_digit)
        || !(b'1'..=b'5').contains(&bytes[0])
    {
        return None;
    }
    let code = line[..3].parse().ok()?;
    Some((code, bytes.get(3).copied()))
}

impl ReplyAssembler {
    /// A new assembler.
    pub fn new() -> ReplyAssembler {
        ReplyAssembler::default()
    }

    /// Feeds one line (without its line end). Returns the reply once its last line is in.
    ///
    /// # Errors
    /// [`MalformedReply`] for a first line that does not start with a three-digit code.
    pub fn push(&mut self, line: &str) -> Result<Option<ServerReply>, MalformedReply> {
        if let Some((code, lines)) = &mut self.open {
            match leading_code(line) {
                // RFC 959 §4.2: the last line starts with the same code followed by a space.
                Some((c, sep)) if c == *code && sep != Some(b'-') => {
                    let text = line.get(4..).unwrap_or("").to_owned();
                    lines.push(text);
                    let (code, lines) = self.open.take().unwrap_or_default();
                    return Ok(Some(ServerReply { code, lines }));
                }
                _ => lines.push(line.to_owned()),
            }
            return Ok(None);
        }
        match leading_code(line) {
            Some((code, Some(b'-'))) => {
                self.open = Some((code, vec![line[4..].to_owned()]));
                Ok(None)
            }
            Some((code, None)) => Ok(Some(ServerReply {
                code,
                lines: vec![String::new()],
            })),
            Some((code, Some(_))) => Ok(Some(ServerReply {
                code,
                lines: vec![line.get(4..).unwrap_or("").to_owned()],
            })),
            None => Err(MalformedReply(line.to_owned())),
        }
    }
}

/// The path in a 257 reply: the text between the first quote and its closing quote, with
/// doubled quotes undone (RFC 959 Appendix II).
pub fn unquote_path(text: &str) -> Option<String> {
    let rest = &text[text.find('"')? + 1..];
    let mut out = String::new();
    let mut chars = rest.chars().peekable();
    while let Some(c) = chars.next() {
        if c == '"' {
            if chars.peek() == Some(&'"') {
                chars.next();
                out.push('"');
            } else {
                return Some(out);
            }
        } else {
            out.push(c);
        }
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::codec::reply::quote_path;

    fn feed(lines: &[&str]) -> Vec<ServerReply> {
        let mut a = ReplyAssembler::new();
        lines
            .iter()
            .filter_map(|l| a.push(l).expect("well-formed"))
            .collect()
    }

    #[test]
    fn single_and_multi_line() {
        let replies = feed(&[
            "220 ready",
            "211-Features:",
            " UTF8",
            "211-not the end",
            "211 End",
            "200",
        ]);
        assert_eq!(replies.len(), 3);
        assert_eq!(replies[0].code, 220);
        assert_eq!(replies[0].text(), "ready");
        assert_eq!(
            replies[1].lines,
            vec!["Features:", " UTF8", "211-not the end", "End"]
        );
        assert_eq!(replies[2].code, 200);
        assert!(replies[1].is_success() && !replies[1].is_preliminary());
    }

    #[test]
    fn garbage_first_line_is_an_error() {
        assert!(ReplyAssembler::new().push("hello").is_err());
        assert!(ReplyAssembler::new().push("22 x").is_err());
    }

    /// Found by the `reply_assembler_takes_any_lines` property: "000" was a reply, and as
    /// code < 200 a preliminary one, so the client waited for a final reply that never came.
    #[test]
    fn codes_outside_1yz_to_5yz_are_malformed() {
        for line in ["000", "099 wait", "600 x", "999-x"] {
            assert!(ReplyAssembler::new().push(line).is_err(), "{line:?}");
        }
        assert_eq!(feed(&["100 a", "599 b"]).len(), 2);
        // Inside a multi-line reply such lines are ordinary text.
        let r = feed(&["211-a", "000 b", "211 c"]);
        assert_eq!(r[0].lines, vec!["a", "000 b", "c"]);
    }

    #[test]
    fn path_round_trip() {
        for path in ["/", "/a \"b\" c", "/\"\""] {
            let text = format!("{} is the current directory", quote_path(path));
            assert_eq!(unquote_path(&text).as_deref(), Some(path));
        }
        assert_eq!(unquote_path("no quotes"), None);
    }

    #[test]
    fn display_shows_code_and_text() {
        let r = ServerReply {
            code: 550,
            lines: vec!["No such file.".into()],
        };
        assert_eq!(r.to_string(), "550 No such file.");
    }
}
