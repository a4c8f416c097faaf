//! The wu-ftpd `xferlog`: [`xferlog_line`] renders an upload or download, [`XferlogSink`]
//! appends them.

use std::io;
use std::path::Path;

use std::net::SocketAddr;

use time::OffsetDateTime;
use time::format_description::FormatItem;
use time::format_description::well_known::Rfc3339;
use time::macros::format_description;

use super::sink::{AuditSink, RotatingFile, Rotation};
use super::{Event, EventKind};

/// ctime(3) without the newline: `Wed Nov  5 20:17:00 2026`.
const CTIME: &[FormatItem<'static>] = format_description!(
    "[weekday repr:short] [month repr:short] [day padding:space] [hour]:[minute]:[second] [year]"
);

/// Appends upload and download events to `xferlog` in the wu-ftpd format that vsftpd and
/// ProFTPD write and log analysers read; other events are ignored. See [`xferlog_line`].
#[derive(Debug)]
pub struct XferlogSink {
    file: RotatingFile,
}

impl XferlogSink {
    /// Opens (or creates) `path` for appending, rotating it as `rotation` says.
    ///
    /// # Errors
    /// The file cannot be opened.
    pub fn open(path: &Path, rotation: Rotation) -> io::Result<XferlogSink> {
        Ok(XferlogSink {
            file: RotatingFile::open(path, rotation)?,
        })
    }
}

impl AuditSink for XferlogSink {
    fn write(&mut self, events: &[Event]) -> io::Result<()> {
        let lines: String = events.iter().filter_map(xferlog_line).collect();
        if lines.is_empty() {
            return Ok(());
        }
        self.file.append(lines.as_bytes())
    }

    fn flush(&mut self) -> io::Result<()> {
        self.file.file.sync_data()
    }

    fn name(&self) -> String {
        self.file.path.display().to_string()
    }

    fn reopen(&mut self) -> io::Result<()> {
        self.file.reopen()
    }
}

/// Replaces whitespace and control characters with `_` (and an empty field with `_`), so an
/// xferlog line always splits into exactly 18 fields.
fn xferlog_field(s: &str) -> String {
    if s.is_empty() {
        return "_".to_owned();
    }
    s.chars()
        .map(|c| {
            if c.is_whitespace() || c.is_control() {
                '_'
            } else {
                c
            }
        })
        .collect()
}

/// One xferlog line (with its newline) for an upload or download, `None` for other events.
///
/// Fields: `current-time` (ctime, 5 words, UTC rather than local time, as everything ferryd
/// logs), `transfer-time` (seconds, rounded, at least 1), `remote-host` (IP), `file-size`,
/// `filename`, `transfer-type` (`a`/`b`), `special-action-flag` (`_`), `direction` (`o`/`i`),
/// `access-mode` (`r`), `username` (`*` if none), `service-name` (`ftp`),
/// `authentication-method` (`0`), `authenticated-user-id` (`*`), `completion-status` (`c` for a
/// complete transfer, one that ended in 226, else `i`). Whitespace and control characters in
/// the file name and user name become `_`, so the line always splits into 18 fields.
pub fn xferlog_line(event: &Event) -> Option<String> {
    let direction = match event.event {
        EventKind::Upload => 'i',
        EventKind::Download => 'o',
        _ => return None,
    };
    let when =
        OffsetDateTime::parse(&event.time, &Rfc3339).unwrap_or_else(|_| OffsetDateTime::now_utc());
    let when = when
        .format(CTIME)
        .unwrap_or_else(|_| "Thu Jan  1 00:00:00 1970".to_owned());
    let seconds = event
        .duration_ms
        .map_or(1, |ms| ms.saturating_add(500) / 1000)
        .max(1);
    let host = event
        .peer
        .parse::<SocketAddr>()
        .map_or_else(|_| xferlog_field(&event.peer), |peer| peer.ip().to_string());
    let bytes = event.bytes.unwrap_or(0);
    let file = xferlog_field(event.path.as_deref().unwrap_or(""));
    let kind = if event.ascii == Some(true) { 'a' } else { 'b' };
    let user = event
        .user
        .as_deref()
        .map_or_else(|| "*".to_owned(), xferlog_field);
    let status = if event.complete.unwrap_or(event.code == Some(226)) {
        'c'
    } else {
        'i'
    };
    Some(format!(
        "{when} {seconds} {host} {bytes} {file} {kind} _ {direction} r {user} ftp 0 * {status}\n"
    ))
}
