//! The audit trail: [`Event`], the [`AuditLog`] actor that batches them, and its sinks
//! ([`JsonLinesSink`] for `audit.jsonl`, [`XferlogSink`] for the wu-ftpd `xferlog`).
//!
//! Sessions only `do_send` a [`Record`]; the actor lives on its own `Arbiter`, so a slow disk
//! never stalls a session thread. Nothing is dropped silently: failed writes are retried on the
//! next tick and every loss (past the pending cap) is logged with a count.
//!
//! What a client can make the server write is bounded here, in one place ([`AuditPolicy`]):
//! noise (commands before login, malformed and unknown commands, refused connections, data
//! connections from a wrong address, refused registrations) is written one by one only up to a
//! budget per address and in all per [`WINDOW`]; the rest is counted into one `suppressed`
//! line per address and kind. The stderr line of a noise event is written exactly when its
//! audit line is. Both files rotate at a size (`audit.jsonl.1` ..), and below a free-space
//! floor only forensic events are written. Forensic events (sessions, logins, registrations,
//! transfers, file operations, bans) are never throttled.

use std::collections::{BTreeMap, HashMap, VecDeque};
use std::fmt;
use std::fs::{self, File, OpenOptions};
use std::io::{self, Write};
use std::net::{IpAddr, SocketAddr};
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};
use std::str::FromStr;
use std::time::{Duration, Instant};

use actix::{Actor, Addr, Arbiter, AsyncContext, Context, Handler, Message};
use serde::{Deserialize, Serialize};
use time::OffsetDateTime;
use time::format_description::FormatItem;
use time::format_description::well_known::Rfc3339;
use time::macros::format_description;

/// Events buffered before a write is forced ahead of the next tick.
const BATCH: usize = 256;
/// How often buffered events are written.
const TICK: Duration = Duration::from_secs(1);
/// Pending events kept while sinks fail; past this the oldest are dropped (and logged).
const MAX_PENDING: usize = 100_000;
/// The period of the noise budgets; what was held back in one is summarised at its end.
pub const WINDOW: Duration = Duration::from_secs(10);
/// Addresses tracked one by one per window; noise from further addresses shares one tally
/// (peer `*`), so a flood from many addresses cannot grow the table without bound.
const MAX_TRACKED: usize = 1024;
/// Summaries per window that also get a stderr line; the rest get one line together.
const SUMMARY_LINES: usize = 20;

/// `2026-11-25T20:17:00.123Z`.
const EVENT_TIME: &[FormatItem<'static>] =
    format_description!("[year]-[month]-[day]T[hour]:[minute]:[second].[subsecond digits:3]Z");
/// ctime(3) without the newline: `Wed Nov  5 20:17:00 2026`.
const CTIME: &[FormatItem<'static>] = format_description!(
    "[weekday repr:short] [month repr:short] [day padding:space] [hour]:[minute]:[second] [year]"
);

/// What happened.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum EventKind {
    /// A control connection was accepted.
    SessionOpen,
    /// A control connection ended.
    SessionClose,
    /// An account was registered (`SITE REGISTER`).
    Register,
    /// A login succeeded.
    LoginOk,
    /// A login failed.
    LoginFailed,
    /// Any command, with its reply code.
    Command,
    /// A file was stored (`STOR`, `APPE`, `STOU`).
    Upload,
    /// A file was sent (`RETR`).
    Download,
    /// A file was deleted.
    Delete,
    /// A file or directory was renamed.
    Rename,
    /// A directory was created.
    Mkdir,
    /// A directory was removed.
    Rmdir,
    /// An address was banned after too many failed logins.
    Banned,
    /// A connection was refused (address banned, or a session limit reached).
    Refused,
    /// A registration was refused by policy (hourly cap per address, bad invitation code).
    RegisterRefused,
    /// A connection to a passive data port came from another address than the session's
    /// (port theft); `peer` is the intruder.
    DataRefused,
    /// Noise events of one kind from one address (`peer`, or `*` for the rest) that were counted
    /// rather than written one by one in a window: `count`, and per reply code in `command`.
    Suppressed,
}

impl EventKind {
    /// Every kind, in declaration order.
    pub const ALL: [EventKind; 17] = [
        EventKind::SessionOpen,
        EventKind::SessionClose,
        EventKind::Register,
        EventKind::LoginOk,
        EventKind::LoginFailed,
        EventKind::Command,
        EventKind::Upload,
        EventKind::Download,
        EventKind::Delete,
        EventKind::Rename,
        EventKind::Mkdir,
        EventKind::Rmdir,
        EventKind::Banned,
        EventKind::Refused,
        EventKind::RegisterRefused,
        EventKind::DataRefused,
        EventKind::Suppressed,
    ];

    /// The name used in `audit.jsonl` and on the command line (`login_failed`).
    pub fn as_str(self) -> &'static str {
        match self {
            EventKind::SessionOpen => "session_open",
            EventKind::SessionClose => "session_close",
            EventKind::Register => "register",
            EventKind::LoginOk => "login_ok",
            EventKind::LoginFailed => "login_failed",
            EventKind::Command => "command",
            EventKind::Upload => "upload",
            EventKind::Download => "download",
            EventKind::Delete => "delete",
            EventKind::Rename => "rename",
            EventKind::Mkdir => "mkdir",
            EventKind::Rmdir => "rmdir",
            EventKind::Banned => "banned",
            EventKind::Refused => "refused",
            EventKind::RegisterRefused => "register_refused",
            EventKind::DataRefused => "data_refused",
            EventKind::Suppressed => "suppressed",
        }
    }
}

impl fmt::Display for EventKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl FromStr for EventKind {
    type Err = String;

    /// Parses the snake_case name; the error lists the valid names.
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        EventKind::ALL
            .into_iter()
            .find(|kind| kind.as_str() == s)
            .ok_or_else(|| {
                let names: Vec<&str> = EventKind::ALL.iter().map(|k| k.as_str()).collect();
                format!("unknown event {s:?}; expected one of {}", names.join(", "))
            })
    }
}

/// One audit record; serialised as one JSON object per line in `audit.jsonl`. Optional fields
/// are omitted when `None`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Event {
    /// RFC 3339 UTC with milliseconds, e.g. `2026-11-25T20:17:00.123Z`.
    pub time: String,
    /// Session id, unique per server run.
    pub session: u64,
    /// Client address, `ip:port`.
    pub peer: String,
    /// Logged-in (or attempted) user.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub user: Option<String>,
    /// What happened.
    pub event: EventKind,
    /// Verb and argument, passwords already replaced by `***`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub command: Option<String>,
    /// The path acted on, as the client sees it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub path: Option<String>,
    /// Rename destination.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub target: Option<String>,
    /// Bytes transferred.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub bytes: Option<u64>,
    /// How long the command or transfer took.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub duration_ms: Option<u64>,
    /// Final reply code.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub code: Option<u16>,
    /// Transfers: whether `TYPE A` was in force.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ascii: Option<bool>,
    /// Transfers: whether it ended complete (226). An incomplete upload of a new name keeps
    /// its `bytes` there to be resumed, when `keep_partial_uploads` is on.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub complete: Option<bool>,
    /// `suppressed`: how many events it stands for.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub count: Option<u64>,
}

impl Event {
    /// An event stamped now from `peer` (a [`crate::net::ClientAddr`] gives its client, not
    /// the TCP peer); every optional field `None`.
    pub fn now(session: u64, peer: impl Into<SocketAddr>, event: EventKind) -> Event {
        Event {
            time: format_event_time(OffsetDateTime::now_utc()),
            session,
            peer: peer.into().to_string(),
            user: None,
            event,
            command: None,
            path: None,
            target: None,
            bytes: None,
            duration_ms: None,
            code: None,
            ascii: None,
            complete: None,
            count: None,
        }
    }

    /// Sets the user.
    pub fn with_user(mut self, user: impl Into<String>) -> Event {
        self.user = Some(user.into());
        self
    }

    /// Sets the command line (already redacted).
    pub fn with_command(mut self, command: impl Into<String>) -> Event {
        self.command = Some(command.into());
        self
    }

    /// Sets the path.
    pub fn with_path(mut self, path: impl Into<String>) -> Event {
        self.path = Some(path.into());
        self
    }

    /// Sets the rename destination.
    pub fn with_target(mut self, target: impl Into<String>) -> Event {
        self.target = Some(target.into());
        self
    }

    /// Sets the byte count.
    pub fn with_bytes(mut self, bytes: u64) -> Event {
        self.bytes = Some(bytes);
        self
    }

    /// Sets the duration, in whole milliseconds.
    pub fn with_duration(mut self, duration: Duration) -> Event {
        self.duration_ms = Some(u64::try_from(duration.as_millis()).unwrap_or(u64::MAX));
        self
    }

    /// Sets the final reply code.
    pub fn with_code(mut self, code: u16) -> Event {
        self.code = Some(code);
        self
    }

    /// Sets whether the transfer used `TYPE A`.
    pub fn with_ascii(mut self, ascii: bool) -> Event {
        self.ascii = Some(ascii);
        self
    }

    /// Whether a client can cause this event at will, at no cost to itself: it is written one by
    /// one only within the noise budgets. Commands are noise before login, and always when
    /// the line did not parse (recorded as `<error>`) or the verb is unknown (502).
    pub fn is_noise(&self) -> bool {
        match self.event {
            EventKind::Command => {
                self.user.is_none() || self.code == Some(502) || self.is_malformed()
            }
            EventKind::Refused | EventKind::DataRefused | EventKind::RegisterRefused => true,
            _ => false,
        }
    }

    /// What an operator needs to reconstruct who did what: written even below the free-space
    /// floor (but for the ends of sessions without a login, see [`AuditLog`]). Commands are,
    /// when they change something that has no event of its own.
    pub fn is_forensic(&self) -> bool {
        match self.event {
            EventKind::Command => {
                !self.is_noise()
                    && self.command.as_deref().is_some_and(|c| {
                        let c = c.to_ascii_uppercase();
                        ["SITE CHMOD", "MFMT", "SITE PASSWD"]
                            .iter()
                            .any(|verb| c.starts_with(verb))
                    })
            }
            EventKind::Refused | EventKind::DataRefused | EventKind::RegisterRefused => false,
            _ => true,
        }
    }

    /// The opening or end of a session without a logged-in user: a reconnect loop makes these
    /// at will, so below the free-space floor they are only counted.
    fn is_anonymous_session(&self) -> bool {
        matches!(self.event, EventKind::SessionOpen | EventKind::SessionClose)
            && self.user.is_none()
    }

    /// A command line that did not parse: the session records its error as `<error>`.
    fn is_malformed(&self) -> bool {
        self.command.as_deref().is_some_and(|c| c.starts_with('<'))
    }

    /// The client's address, IPv4-mapped IPv6 as IPv4; `None` if `peer` is not `ip:port`.
    fn ip(&self) -> Option<IpAddr> {
        let ip = self.peer.parse::<SocketAddr>().ok()?.ip();
        Some(match ip {
            IpAddr::V6(v6) => v6.to_ipv4_mapped().map_or(ip, IpAddr::V4),
            IpAddr::V4(_) => ip,
        })
    }

    /// The stderr line that goes with a noise event, if it has one.
    fn log_line(&self) {
        match self.event {
            EventKind::Refused => log::warn!(
                "refused connection from {}: {}",
                self.peer,
                self.command.as_deref().unwrap_or("")
            ),
            EventKind::DataRefused => log::warn!(
                "session {}: refused data connection from {}, {}",
                self.session,
                self.peer,
                self.command.as_deref().unwrap_or("")
            ),
            EventKind::Command if self.is_malformed() => log::info!(
                "session {} {}: bad command line: {}",
                self.session,
                self.peer,
                self.command.as_deref().unwrap_or("")
            ),
            EventKind::Command if self.code == Some(502) => log::info!(
                "session {} {}: not implemented: {}",
                self.session,
                self.peer,
                self.command.as_deref().unwrap_or("")
            ),
            EventKind::RegisterRefused => log::info!(
                "session {} {}: registration of {} refused ({})",
                self.session,
                self.peer,
                self.user.as_deref().unwrap_or("?"),
                self.code.unwrap_or(0)
            ),
            _ => {}
        }
    }
}

fn format_event_time(t: OffsetDateTime) -> String {
    // Only years past 9999 fail to format; fall back rather than lose the event.
    t.format(EVENT_TIME).unwrap_or_else(|_| t.to_string())
}

/// Records one event; fire-and-forget (`do_send`).
#[derive(Debug, Message)]
#[rtype(result = "()")]
pub struct Record(pub Event);

/// Writes and fsyncs everything buffered; used at shutdown. Errors are logged, not returned.
#[derive(Debug, Message)]
#[rtype(result = "()")]
pub struct Flush;

/// Where audit events go. Called only from the [`AuditLog`] actor, in order.
pub trait AuditSink: Send + 'static {
    /// Writes a batch. On error the whole batch is offered again later, so a sink should write
    /// it in one piece where it can.
    ///
    /// # Errors
    /// Any I/O error; the events are kept.
    fn write(&mut self, events: &[Event]) -> io::Result<()>;

    /// Makes everything written so far durable.
    ///
    /// # Errors
    /// Any I/O error.
    fn flush(&mut self) -> io::Result<()>;

    /// Names the sink in error logs.
    fn name(&self) -> String {
        "audit sink".to_owned()
    }
}

/// Opens `path` for appending, creating it with mode 0600.
fn open_append(path: &Path) -> io::Result<File> {
    OpenOptions::new()
        .append(true)
        .create(true)
        .mode(0o600)
        .open(path)
}

/// When a log file is rotated: past `max_bytes` (0: never), `path` becomes `path.1`, `path.1`
/// becomes `path.2` .. and `path.<keep>` is removed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Rotation {
    /// Size at which the file is rotated before the next write; 0 never rotates.
    pub max_bytes: u64,
    /// Rotated files kept.
    pub keep: usize,
}

impl Rotation {
    /// Never rotate.
    pub const NEVER: Rotation = Rotation {
        max_bytes: 0,
        keep: 0,
    };
}

/// An append-only log file that rotates by size.
#[derive(Debug)]
struct RotatingFile {
    path: PathBuf,
    file: File,
    size: u64,
    rotation: Rotation,
    /// The last rotation failed: logged once, not per batch.
    rotation_failed: bool,
}

impl RotatingFile {
    fn open(path: &Path, rotation: Rotation) -> io::Result<RotatingFile> {
        let file = open_append(path)?;
        let size = file.metadata()?.len();
        Ok(RotatingFile {
            path: path.to_owned(),
            file,
            size,
            rotation,
            rotation_failed: false,
        })
    }

    fn numbered(&self, n: usize) -> PathBuf {
        let mut name = self.path.clone().into_os_string();
        name.push(format!(".{n}"));
        PathBuf::from(name)
    }

    /// Appends `buf` in one write, rotating first if it would carry the file past the cap (a
    /// batch larger than the cap goes alone into a fresh file).
    fn append(&mut self, buf: &[u8]) -> io::Result<()> {
        let len = buf.len() as u64;
        if self.rotation.max_bytes > 0
            && self.size > 0
            && self.size.saturating_add(len) > self.rotation.max_bytes
        {
            match self.rotate() {
                // Keep appending to the full file rather than lose events.
                Err(e) if !self.rotation_failed => {
                    log::error!("audit log {}: rotation failed: {e}", self.path.display());
                    self.rotation_failed = true;
                }
                Err(_) => {}
                Ok(()) => self.rotation_failed = false,
            }
        }
        self.file.write_all(buf)?;
        self.size = self.size.saturating_add(len);
        Ok(())
    }

    fn rotate(&mut self) -> io::Result<()> {
        self.file.sync_data()?;
        if self.rotation.keep == 0 {
            self.file.set_len(0)?;
            self.size = 0;
            return Ok(());
        }
        match fs::remove_file(self.numbered(self.rotation.keep)) {
            Err(e) if e.kind() != io::ErrorKind::NotFound => return Err(e),
            _ => {}
        }
        for n in (1..self.rotation.keep).rev() {
            match fs::rename(self.numbered(n), self.numbered(n + 1)) {
                Err(e) if e.kind() != io::ErrorKind::NotFound => return Err(e),
                _ => {}
            }
        }
        fs::rename(&self.path, self.numbered(1))?;
        self.file = open_append(&self.path)?;
        self.size = 0;
        log::info!("audit log {}: rotated", self.path.display());
        Ok(())
    }
}

/// Appends each event as one JSON line to `audit.jsonl`.
#[derive(Debug)]
pub struct JsonLinesSink {
    file: RotatingFile,
}

impl JsonLinesSink {
    /// Opens (or creates) `path` for appending, rotating it as `rotation` says.
    ///
    /// # Errors
    /// The file cannot be opened.
    pub fn open(path: &Path, rotation: Rotation) -> io::Result<JsonLinesSink> {
        Ok(JsonLinesSink {
            file: RotatingFile::open(path, rotation)?,
        })
    }
}

impl AuditSink for JsonLinesSink {
    fn write(&mut self, events: &[Event]) -> io::Result<()> {
        let mut buf = Vec::with_capacity(events.len() * 200);
        for event in events {
            serde_json::to_writer(&mut buf, event)?;
            buf.push(b'\n');
        }
        // One write_all per batch: with O_APPEND a failure leaves at most one torn batch.
        self.file.append(&buf)
    }

    fn flush(&mut self) -> io::Result<()> {
        self.file.file.sync_data()
    }

    fn name(&self) -> String {
        self.file.path.display().to_string()
    }
}

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

/// A sink and how many of the pending events it has already written.
struct SinkState {
    sink: Box<dyn AuditSink>,
    written: usize,
}

/// How much the audit log writes: rotation, the free-space floor and the noise budgets. Built
/// from the `audit_*` and `log_burst_*` keys of [`crate::config::Config`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct AuditPolicy {
    /// Rotation of `audit.jsonl` and `xferlog`.
    pub rotation: Rotation,
    /// Below this many free bytes on the log's file system only forensic events are written
    /// (0: no floor).
    pub min_free_bytes: u64,
    /// Noise events of one kind from one address written one by one per [`WINDOW`].
    pub burst_per_address: u32,
    /// Noise events written one by one per [`WINDOW`], all addresses together.
    pub burst_total: u32,
}

impl AuditPolicy {
    /// The policy a configuration asks for.
    pub fn from_config(config: &crate::config::Config) -> AuditPolicy {
        AuditPolicy {
            rotation: Rotation {
                max_bytes: config.audit_max_bytes,
                keep: config.audit_keep,
            },
            min_free_bytes: config.audit_min_free_bytes,
            burst_per_address: config.log_burst_per_address,
            burst_total: config.log_burst_total,
        }
    }

    /// No rotation, no floor, no budget: everything is written (tests of the sinks).
    pub const UNLIMITED: AuditPolicy = AuditPolicy {
        rotation: Rotation::NEVER,
        min_free_bytes: 0,
        burst_per_address: u32::MAX,
        burst_total: u32::MAX,
    };
}

/// Noise of one kind from one address in the current window.
#[derive(Debug, Default)]
struct Tally {
    written: u32,
    held: u64,
    /// Held events per reply code (0: none).
    codes: BTreeMap<u16, u64>,
}

/// The noise budgets of the current window.
#[derive(Debug)]
struct Throttle {
    per_address: u32,
    total: u32,
    started: Instant,
    written: u32,
    tallies: HashMap<(Option<IpAddr>, EventKind), Tally>,
}

impl Throttle {
    fn new(per_address: u32, total: u32) -> Throttle {
        Throttle {
            per_address,
            total,
            started: Instant::now(),
            written: 0,
            tallies: HashMap::new(),
        }
    }

    /// The tally of `event`'s address and kind (or the shared one past [`MAX_TRACKED`]).
    fn tally(&mut self, event: &Event) -> &mut Tally {
        let mut key = (event.ip(), event.event);
        if self.tallies.len() >= MAX_TRACKED && !self.tallies.contains_key(&key) {
            key.0 = None;
        }
        self.tallies.entry(key).or_default()
    }

    /// Whether a noise event is written one by one; if not, it is counted.
    fn admit(&mut self, event: &Event) -> bool {
        let (per_address, room) = (self.per_address, self.written < self.total);
        let tally = self.tally(event);
        if tally.written < per_address && room {
            tally.written += 1;
            self.written += 1;
            return true;
        }
        self.hold(event);
        false
    }

    /// Counts an event for the summary without writing it.
    fn hold(&mut self, event: &Event) {
        let tally = self.tally(event);
        tally.held += 1;
        *tally.codes.entry(event.code.unwrap_or(0)).or_default() += 1;
    }

    /// Ends the window: one `suppressed` event per tally that held something back.
    fn close_window(&mut self) -> Vec<Event> {
        let elapsed = self.started.elapsed();
        let summaries = self
            .tallies
            .drain()
            .filter(|(_, tally)| tally.held > 0)
            .map(|((ip, kind), tally)| {
                let codes: Vec<String> = tally
                    .codes
                    .iter()
                    .map(|(code, n)| match code {
                        0 => n.to_string(),
                        code => format!("{code} x {n}"),
                    })
                    .collect();
                let text = format!("{kind}: {} in {} s", codes.join(", "), elapsed.as_secs());
                let mut event = Event::now(
                    0,
                    SocketAddr::from(([0, 0, 0, 0], 0)),
                    EventKind::Suppressed,
                );
                event.peer = ip.map_or_else(|| "*".to_owned(), |ip| ip.to_string());
                event.command = Some(text);
                event.count = Some(tally.held);
                event.with_duration(elapsed)
            })
            .collect();
        self.started = Instant::now();
        self.written = 0;
        summaries
    }
}

/// The free-space floor, checked once a tick.
#[derive(Debug)]
struct Floor {
    dir: PathBuf,
    min_free: u64,
    low: bool,
    /// Non-forensic events not written while low, since the last summary.
    held: u64,
}

impl Floor {
    /// Re-reads the free space; logs each crossing of the floor once.
    fn check(&mut self) {
        let free = match nix::sys::statvfs::statvfs(&self.dir) {
            Ok(st) => st.blocks_available().saturating_mul(st.fragment_size()),
            Err(e) => {
                log::error!(
                    "audit log: cannot read free space of {}: {e}",
                    self.dir.display()
                );
                return;
            }
        };
        let low = free < self.min_free;
        if low && !self.low {
            log::error!(
                "audit log: {free} bytes free on {}, below audit_min_free_bytes ({}): writing only forensic events",
                self.dir.display(),
                self.min_free
            );
        } else if !low && self.low {
            log::warn!(
                "audit log: {free} bytes free on {} again: writing every event",
                self.dir.display()
            );
        }
        self.low = low;
    }

    /// The summary of what the floor held back, if anything.
    fn summary(&mut self) -> Option<Event> {
        if self.held == 0 {
            return None;
        }
        let mut event = Event::now(
            0,
            SocketAddr::from(([0, 0, 0, 0], 0)),
            EventKind::Suppressed,
        );
        event.peer = "*".to_owned();
        event.command = Some("not forensic, not written below audit_min_free_bytes".to_owned());
        event.count = Some(std::mem::take(&mut self.held));
        Some(event)
    }
}

/// Buffers [`Record`]s and writes them to every sink in batches: when `BATCH` are buffered,
/// every second, on [`Flush`] and when stopped. Runs on its own `Arbiter`.
pub struct AuditLog {
    sinks: Vec<SinkState>,
    /// Events not yet written by every sink, oldest first.
    pending: VecDeque<Event>,
    /// The last write failed: wait for the tick instead of retrying on every record.
    failing: bool,
    max_pending: usize,
    throttle: Throttle,
    floor: Option<Floor>,
}

impl AuditLog {
    /// Creates `log_dir` with `audit.jsonl` and `xferlog` and starts the actor on a new
    /// `Arbiter`. Must be called inside a running actix `System`.
    ///
    /// # Errors
    /// The directory or a file cannot be created.
    ///
    /// # Panics
    /// Outside a running `System` (as `Arbiter::new` does).
    pub fn start(log_dir: &Path, policy: AuditPolicy) -> io::Result<Addr<AuditLog>> {
        fs::create_dir_all(log_dir)?;
        let sinks: Vec<Box<dyn AuditSink>> = vec![
            Box::new(JsonLinesSink::open(
                &log_dir.join("audit.jsonl"),
                policy.rotation,
            )?),
            Box::new(XferlogSink::open(
                &log_dir.join("xferlog"),
                policy.rotation,
            )?),
        ];
        let floor = (policy.min_free_bytes > 0).then(|| Floor {
            dir: log_dir.to_owned(),
            min_free: policy.min_free_bytes,
            low: false,
            held: 0,
        });
        Ok(AuditLog::spawn(sinks, policy, floor))
    }

    /// Starts the actor over the given sinks on a new `Arbiter` (tests, other back ends).
    ///
    /// # Panics
    /// Outside a running `System` (as `Arbiter::new` does).
    pub fn with_sinks(sinks: Vec<Box<dyn AuditSink>>, policy: AuditPolicy) -> Addr<AuditLog> {
        AuditLog::spawn(sinks, policy, None)
    }

    fn spawn(
        sinks: Vec<Box<dyn AuditSink>>,
        policy: AuditPolicy,
        floor: Option<Floor>,
    ) -> Addr<AuditLog> {
        let arbiter = Arbiter::new();
        AuditLog::start_in_arbiter(&arbiter.handle(), move |_| {
            let mut log = AuditLog::new(sinks, MAX_PENDING, policy);
            log.floor = floor;
            log
        })
    }

    fn new(sinks: Vec<Box<dyn AuditSink>>, max_pending: usize, policy: AuditPolicy) -> AuditLog {
        AuditLog {
            sinks: sinks
                .into_iter()
                .map(|sink| SinkState { sink, written: 0 })
                .collect(),
            pending: VecDeque::new(),
            failing: false,
            max_pending,
            throttle: Throttle::new(policy.burst_per_address, policy.burst_total),
            floor: None,
        }
    }

    /// Takes one recorded event through the noise budget and the free-space floor.
    fn record(&mut self, event: Event) {
        let low = self.floor.as_ref().is_some_and(|floor| floor.low);
        if low && event.is_anonymous_session() {
            self.throttle.hold(&event);
            return;
        }
        if event.is_noise() {
            if !self.throttle.admit(&event) {
                return;
            }
            event.log_line();
        }
        if let Some(floor) = &mut self.floor
            && floor.low
            && !event.is_forensic()
        {
            floor.held += 1;
            return;
        }
        self.push(event);
    }

    /// Writes the summaries of what the budgets and the floor held back.
    fn summarise(&mut self) {
        let mut summaries = self.throttle.close_window();
        summaries.extend(self.floor.as_mut().and_then(Floor::summary));
        let quiet = summaries.len().saturating_sub(SUMMARY_LINES);
        if quiet > 0 {
            log::warn!("audit log: {quiet} more address(es) held back noise; see audit.jsonl");
        }
        for (n, event) in summaries.into_iter().enumerate() {
            if n >= SUMMARY_LINES {
                self.push(event);
                continue;
            }
            log::warn!(
                "audit log: {} {} event(s) from {} not logged one by one ({})",
                event.count.unwrap_or(0),
                event
                    .command
                    .as_deref()
                    .and_then(|c| c.split(':').next())
                    .unwrap_or(""),
                event.peer,
                event.command.as_deref().unwrap_or("")
            );
            self.push(event);
        }
    }

    fn tick(&mut self) {
        if let Some(floor) = &mut self.floor {
            floor.check();
        }
        if self.throttle.started.elapsed() >= WINDOW {
            self.summarise();
        }
        self.write_pending();
    }

    fn push(&mut self, event: Event) {
        self.pending.push_back(event);
        if self.pending.len() > self.max_pending {
            let dropped = self.pending.len() - self.max_pending;
            self.pending.drain(..dropped);
            for state in &mut self.sinks {
                state.written = state.written.saturating_sub(dropped);
            }
            log::error!(
                "audit log: dropped {dropped} oldest event(s): sinks failing and {} pending",
                self.max_pending
            );
        }
        if self.pending.len() >= BATCH && !self.failing {
            self.write_pending();
        }
    }

    /// Offers each sink the events it has not written; keeps what any sink still lacks.
    fn write_pending(&mut self) {
        let events = self.pending.make_contiguous();
        let mut failed = false;
        for state in &mut self.sinks {
            let rest = &events[state.written..];
            if rest.is_empty() {
                continue;
            }
            match state.sink.write(rest) {
                Ok(()) => state.written = events.len(),
                Err(e) => {
                    failed = true;
                    log::error!(
                        "audit log {}: {} event(s) not written, will retry: {e}",
                        state.sink.name(),
                        rest.len()
                    );
                }
            }
        }
        let done = self
            .sinks
            .iter()
            .map(|state| state.written)
            .min()
            .unwrap_or(events.len());
        self.pending.drain(..done);
        for state in &mut self.sinks {
            state.written -= done;
        }
        self.failing = failed;
    }

    fn flush(&mut self) {
        self.write_pending();
        for state in &mut self.sinks {
            if let Err(e) = state.sink.flush() {
                log::error!("audit log {}: fsync failed: {e}", state.sink.name());
            }
        }
    }
}

impl Actor for AuditLog {
    type Context = Context<Self>;

    fn started(&mut self, ctx: &mut Self::Context) {
        if let Some(floor) = &mut self.floor {
            floor.check();
        }
        ctx.run_interval(TICK, |act, _| act.tick());
    }

    fn stopped(&mut self, _: &mut Self::Context) {
        self.summarise();
        self.flush();
        if !self.pending.is_empty() {
            log::error!(
                "audit log: {} event(s) lost at shutdown",
                self.pending.len()
            );
        }
        // The arbiter was made for this actor alone; let its thread end too.
        Arbiter::current().stop();
    }
}

impl Handler<Record> for AuditLog {
    type Result = ();

    fn handle(&mut self, Record(event): Record, _: &mut Self::Context) {
        self.record(event);
    }
}

impl Handler<Flush> for AuditLog {
    type Result = ();

    fn handle(&mut self, _: Flush, _: &mut Self::Context) {
        self.summarise();
        self.flush();
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::{AtomicBool, Ordering};
    use std::sync::{Arc, Mutex};
    use std::time::Instant;

    fn peer() -> SocketAddr {
        SocketAddr::from(([192, 0, 2, 7], 50123))
    }

    fn upload(path: &str) -> Event {
        Event::now(7, peer(), EventKind::Upload)
            .with_user("alice")
            .with_path(path)
            .with_bytes(1234)
            .with_duration(Duration::from_millis(2600))
            .with_code(226)
            .with_ascii(false)
    }

    /// Records what it is given; fails while `fail` is set.
    #[derive(Clone, Default)]
    struct TestSink {
        written: Arc<Mutex<Vec<Event>>>,
        fail: Arc<AtomicBool>,
    }

    impl AuditSink for TestSink {
        fn write(&mut self, events: &[Event]) -> io::Result<()> {
            if self.fail.load(Ordering::SeqCst) {
                return Err(io::Error::other("disk on fire"));
            }
            self.written
                .lock()
                .expect("test mutex")
                .extend_from_slice(events);
            Ok(())
        }

        fn flush(&mut self) -> io::Result<()> {
            Ok(())
        }
    }

    impl TestSink {
        fn count(&self) -> usize {
            self.written.lock().expect("test mutex").len()
        }
    }

    #[test]
    fn event_time_has_milliseconds_and_optional_fields_are_omitted() {
        let event = Event::now(1, peer(), EventKind::SessionOpen);
        assert_eq!(
            event.time.len(),
            "2026-11-25T20:17:00.123Z".len(),
            "{}",
            event.time
        );
        assert!(event.time.ends_with('Z'));
        let json = serde_json::to_string(&event).expect("serialise");
        assert_eq!(
            json,
            format!(
                r#"{{"time":"{}","session":1,"peer":"192.0.2.7:50123","event":"session_open"}}"#,
                event.time
            )
        );
    }

    #[test]
    fn event_kind_names_round_trip() {
        for kind in EventKind::ALL {
            assert_eq!(kind.as_str().parse::<EventKind>(), Ok(kind));
            let json = serde_json::to_string(&kind).expect("serialise");
            assert_eq!(json, format!("\"{kind}\""));
        }
        assert!("LoginOk".parse::<EventKind>().is_err());
    }

    #[test]
    fn an_incomplete_upload_says_so_in_both_logs() {
        let mut event = upload("/part.bin").with_code(426);
        event.complete = Some(false);
        let json = serde_json::to_value(&event).expect("serialise");
        assert_eq!(json["complete"], serde_json::json!(false));
        let line = xferlog_line(&event).expect("upload line");
        assert_eq!(line.split_whitespace().last(), Some("i"));
        event.complete = Some(true);
        let line = xferlog_line(&event).expect("upload line");
        assert_eq!(line.split_whitespace().last(), Some("c"));
    }

    #[test]
    fn xferlog_line_has_18_fields() {
        let mut event = upload("/my dir/evil\nname\t.txt");
        event.time = "2026-11-05T20:17:00.123Z".into();
        let line = xferlog_line(&event).expect("upload line");
        assert!(line.ends_with('\n'));
        assert_eq!(line.matches('\n').count(), 1);
        let fields: Vec<&str> = line.split_whitespace().collect();
        assert_eq!(fields.len(), 18, "{line:?}");
        assert_eq!(
            fields,
            [
                "Thu",
                "Nov",
                "5",
                "20:17:00",
                "2026",
                "3",
                "192.0.2.7",
                "1234",
                "/my_dir/evil_name_.txt",
                "b",
                "_",
                "i",
                "r",
                "alice",
                "ftp",
                "0",
                "*",
                "c"
            ]
        );

        let download = Event::now(7, peer(), EventKind::Download)
            .with_path("")
            .with_ascii(true)
            .with_code(426);
        let line = xferlog_line(&download).expect("download line");
        let fields: Vec<&str> = line.split_whitespace().collect();
        assert_eq!(fields.len(), 18, "{line:?}");
        assert_eq!(fields[5], "1", "transfer time is at least a second");
        assert_eq!(&fields[8..12], ["_", "a", "_", "o"]);
        assert_eq!(fields[13], "*");
        assert_eq!(fields[17], "i");

        assert!(xferlog_line(&Event::now(7, peer(), EventKind::Delete)).is_none());
    }

    #[actix::test]
    async fn flush_writes_json_lines_and_xferlog() {
        let dir = tempfile::tempdir().expect("tempdir");
        let log = AuditLog::start(dir.path(), AuditPolicy::UNLIMITED).expect("start");
        let events = vec![
            Event::now(1, peer(), EventKind::SessionOpen),
            Event::now(1, peer(), EventKind::Command)
                .with_user("alice")
                .with_command("PASS ***")
                .with_code(230),
            upload("/a b.txt"),
            Event::now(1, peer(), EventKind::Rename)
                .with_path("/x")
                .with_target("/y"),
        ];
        for event in &events {
            log.do_send(Record(event.clone()));
        }
        log.send(Flush).await.expect("mailbox");

        let text = fs::read_to_string(dir.path().join("audit.jsonl")).expect("read");
        let read: Vec<Event> = text
            .lines()
            .map(|line| serde_json::from_str(line).expect("valid JSON line"))
            .collect();
        assert_eq!(read, events);

        let xferlog = fs::read_to_string(dir.path().join("xferlog")).expect("read");
        assert_eq!(xferlog.lines().count(), 1, "{xferlog}");
        assert!(xferlog.contains(" /a_b.txt b _ i r alice ftp 0 * c"));
    }

    #[actix::test]
    async fn failing_sink_keeps_events_until_a_write_succeeds() {
        let bad = TestSink::default();
        bad.fail.store(true, Ordering::SeqCst);
        let good = TestSink::default();
        let log = AuditLog::with_sinks(
            vec![Box::new(bad.clone()), Box::new(good.clone())],
            AuditPolicy::UNLIMITED,
        );
        for n in 0..3 {
            log.do_send(Record(Event::now(n, peer(), EventKind::Command)));
        }
        log.send(Flush).await.expect("mailbox");
        assert_eq!(bad.count(), 0);
        assert_eq!(good.count(), 3);

        bad.fail.store(false, Ordering::SeqCst);
        log.do_send(Record(Event::now(3, peer(), EventKind::Command)));
        log.send(Flush).await.expect("mailbox");
        let sessions: Vec<u64> = bad
            .written
            .lock()
            .expect("test mutex")
            .iter()
            .map(|e| e.session)
            .collect();
        assert_eq!(sessions, [0, 1, 2, 3]);
        // The sink that never failed gets nothing twice.
        assert_eq!(good.count(), 4);
    }

    #[test]
    fn pending_is_bounded_and_drops_the_oldest() {
        let sink = TestSink::default();
        sink.fail.store(true, Ordering::SeqCst);
        let mut log = AuditLog::new(vec![Box::new(sink.clone())], 10, AuditPolicy::UNLIMITED);
        for n in 0..15 {
            log.push(Event::now(n, peer(), EventKind::Command));
        }
        assert_eq!(log.pending.len(), 10);
        sink.fail.store(false, Ordering::SeqCst);
        log.flush();
        let first = sink.written.lock().expect("test mutex")[0].session;
        assert_eq!((first, sink.count()), (5, 10));
        assert!(log.pending.is_empty());
    }

    #[actix::test]
    async fn writes_at_least_every_second_without_flush() {
        let sink = TestSink::default();
        let log = AuditLog::with_sinks(vec![Box::new(sink.clone())], AuditPolicy::UNLIMITED);
        let start = Instant::now();
        log.do_send(Record(Event::now(1, peer(), EventKind::SessionOpen)));
        while sink.count() == 0 && start.elapsed() < Duration::from_secs(5) {
            actix::clock::sleep(Duration::from_millis(20)).await;
        }
        assert_eq!(sink.count(), 1);
        assert!(
            start.elapsed() < Duration::from_millis(1500),
            "{:?}",
            start.elapsed()
        );
    }

    fn from(ip: [u8; 4], kind: EventKind) -> Event {
        Event::now(9, SocketAddr::from((ip, 40000)), kind)
    }

    fn budget(per_address: u32, total: u32) -> AuditPolicy {
        AuditPolicy {
            burst_per_address: per_address,
            burst_total: total,
            ..AuditPolicy::UNLIMITED
        }
    }

    fn written(sink: &TestSink, pred: impl Fn(&Event) -> bool) -> Vec<Event> {
        let all = sink.written.lock().expect("test mutex");
        all.iter().filter(|e| pred(e)).cloned().collect()
    }

    #[test]
    fn noise_is_written_up_to_the_budgets_then_counted_and_forensic_events_always() {
        let sink = TestSink::default();
        let mut log = AuditLog::new(vec![Box::new(sink.clone())], MAX_PENDING, budget(3, 5));
        for ip in [[192, 0, 2, 1], [192, 0, 2, 2], [192, 0, 2, 3]] {
            for _ in 0..10 {
                log.record(from(ip, EventKind::Command).with_code(500));
                log.record(from(ip, EventKind::LoginFailed));
            }
        }
        // Logged in, a known command is no noise.
        for _ in 0..10 {
            log.record(
                from([192, 0, 2, 1], EventKind::Command)
                    .with_user("al")
                    .with_command("PWD")
                    .with_code(257),
            );
        }
        log.summarise();
        log.flush();
        let commands = written(&sink, |e| e.event == EventKind::Command && e.user.is_none());
        let per_ip = |ip: &str| {
            commands
                .iter()
                .filter(|e| e.peer.starts_with(&format!("{ip}:")))
                .count()
        };
        // 3 from the first address, 2 from the second (5 in all), none from the third.
        assert_eq!(
            (
                per_ip("192.0.2.1"),
                per_ip("192.0.2.2"),
                per_ip("192.0.2.3")
            ),
            (3, 2, 0)
        );
        assert_eq!(
            written(&sink, |e| e.event == EventKind::LoginFailed).len(),
            30
        );
        assert_eq!(written(&sink, |e| e.user.is_some()).len(), 10);
        let mut summaries: Vec<(String, u64, String)> =
            written(&sink, |e| e.event == EventKind::Suppressed)
                .into_iter()
                .map(|e| (e.peer, e.count.unwrap_or(0), e.command.unwrap_or_default()))
                .collect();
        summaries.sort();
        assert_eq!(summaries.len(), 3, "{summaries:?}");
        assert_eq!(
            summaries.iter().map(|s| s.1).collect::<Vec<_>>(),
            [7, 8, 10]
        );
        assert_eq!(summaries[2].0, "192.0.2.3");
        assert!(
            summaries[2].2.starts_with("command: 500 x 10 in "),
            "{summaries:?}"
        );
        // A new window starts with a fresh budget.
        log.record(from([192, 0, 2, 3], EventKind::Refused).with_code(421));
        log.flush();
        assert_eq!(written(&sink, |e| e.event == EventKind::Refused).len(), 1);
    }

    #[test]
    fn addresses_past_the_tracked_limit_share_one_tally() {
        let sink = TestSink::default();
        let mut log = AuditLog::new(
            vec![Box::new(sink.clone())],
            MAX_PENDING,
            budget(1, u32::MAX),
        );
        let extra = 100;
        for n in 0..(MAX_TRACKED + extra) as u32 {
            let [_, b, c, d] = n.to_be_bytes();
            log.record(from([10, b, c, d], EventKind::Refused));
        }
        assert_eq!(log.throttle.tallies.len(), MAX_TRACKED + 1);
        log.summarise();
        log.flush();
        assert_eq!(
            written(&sink, |e| e.event == EventKind::Refused).len(),
            MAX_TRACKED + 1
        );
        let summaries = written(&sink, |e| e.event == EventKind::Suppressed);
        assert_eq!(summaries.len(), 1, "{summaries:?}");
        assert_eq!(summaries[0].peer, "*");
        assert_eq!(summaries[0].count, Some(extra as u64 - 1));
    }

    #[test]
    fn below_the_floor_only_forensic_events_are_written_and_the_rest_counted() {
        let sink = TestSink::default();
        let mut log = AuditLog::new(
            vec![Box::new(sink.clone())],
            MAX_PENDING,
            AuditPolicy::UNLIMITED,
        );
        log.floor = Some(Floor {
            dir: PathBuf::from("/"),
            min_free: u64::MAX,
            low: true,
            held: 0,
        });
        let user = |cmd: &str| {
            from([192, 0, 2, 1], EventKind::Command)
                .with_user("al")
                .with_command(cmd)
                .with_code(200)
        };
        log.record(user("PWD"));
        log.record(user("SITE CHMOD 600 a.txt"));
        log.record(user("MFMT 20260101000000 a.txt"));
        log.record(from([192, 0, 2, 1], EventKind::Command).with_code(500));
        for kind in [
            EventKind::SessionOpen,
            EventKind::LoginOk,
            EventKind::Upload,
            EventKind::Delete,
            EventKind::Banned,
        ] {
            log.record(from([192, 0, 2, 1], kind).with_user("al"));
        }
        // The ends of a session without a login are counted per address, not written.
        log.record(from([192, 0, 2, 9], EventKind::SessionOpen));
        log.record(from([192, 0, 2, 9], EventKind::SessionClose));
        log.summarise();
        log.flush();
        let kinds: Vec<EventKind> = written(&sink, |_| true).iter().map(|e| e.event).collect();
        assert_eq!(
            kinds[..7],
            [
                EventKind::Command,
                EventKind::Command,
                EventKind::SessionOpen,
                EventKind::LoginOk,
                EventKind::Upload,
                EventKind::Delete,
                EventKind::Banned,
            ]
        );
        let mut summaries: Vec<(String, u64)> =
            written(&sink, |e| e.event == EventKind::Suppressed)
                .into_iter()
                .map(|e| (e.command.unwrap_or_default(), e.count.unwrap_or(0)))
                .collect();
        summaries.sort();
        assert_eq!(summaries.len(), 3, "{summaries:?}");
        assert!(summaries[0].0.starts_with("not forensic"), "{summaries:?}");
        assert_eq!(summaries[0].1, 2);
        assert!(summaries[1].0.starts_with("session_close: 1 in "));
        assert!(summaries[2].0.starts_with("session_open: 1 in "));
    }

    #[test]
    fn a_rotating_file_keeps_n_files_under_the_cap() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("audit.jsonl");
        let rotation = Rotation {
            max_bytes: 100,
            keep: 2,
        };
        let mut file = RotatingFile::open(&path, rotation).expect("open");
        for n in 0..20u8 {
            file.append(&[b'a' + n; 30]).expect("append");
        }
        // A batch bigger than the cap goes alone into a fresh file.
        file.append(&[b'Z'; 150]).expect("big append");
        let mut names: Vec<String> = fs::read_dir(dir.path())
            .expect("list")
            .map(|e| e.expect("entry").file_name().to_string_lossy().into_owned())
            .collect();
        names.sort();
        assert_eq!(names, ["audit.jsonl", "audit.jsonl.1", "audit.jsonl.2"]);
        assert_eq!(fs::read(&path).expect("read"), [b'Z'; 150]);
        let newest = fs::read(dir.path().join("audit.jsonl.1")).expect("read");
        assert_eq!(newest.len(), 60);
        assert!(newest.ends_with(&[b'a' + 19; 30]));
        let older = fs::read(dir.path().join("audit.jsonl.2")).expect("read");
        assert_eq!(older.len(), 90);
        // Reopening continues from the file's size.
        let mut again = RotatingFile::open(&path, rotation).expect("reopen");
        assert_eq!(again.size, 150);
        again.append(b"x").expect("append");
        assert_eq!(fs::read(&path).expect("read"), b"x");
    }

    #[actix::test]
    async fn a_full_batch_is_written_before_the_tick() {
        let sink = TestSink::default();
        let log = AuditLog::with_sinks(vec![Box::new(sink.clone())], AuditPolicy::UNLIMITED);
        for n in 0..BATCH as u64 {
            log.do_send(Record(Event::now(n, peer(), EventKind::Command)));
        }
        let start = Instant::now();
        while sink.count() < BATCH && start.elapsed() < Duration::from_millis(500) {
            actix::clock::sleep(Duration::from_millis(5)).await;
        }
        assert_eq!(sink.count(), BATCH);
    }
}
