//! [`Event`] and [`EventKind`]: what the audit trail records, its JSON form (one object per
//! line in `audit.jsonl`) and its stderr line; which events are noise and which forensic.

use std::fmt;
use std::net::{IpAddr, SocketAddr};
use std::str::FromStr;
use std::time::Duration;

use serde::{Deserialize, Serialize};
use time::OffsetDateTime;
use time::format_description::FormatItem;
use time::macros::format_description;

/// `2026-11-25T20:17:00.123Z`.
const EVENT_TIME: &[FormatItem<'static>] =
    format_description!("[year]-[month]-[day]T[hour]:[minute]:[second].[subsecond digits:3]Z");

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
    /// The node that served the session (`node_name`); stamped by the
    /// [`AuditLog`](crate::actors::audit_log::AuditLog) actor.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub node: Option<String>,
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
            node: None,
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
    /// floor (but for the ends of sessions without a login, see [`AuditLog`](crate::actors::audit_log::AuditLog)). Commands are,
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
    pub(crate) fn is_anonymous_session(&self) -> bool {
        matches!(self.event, EventKind::SessionOpen | EventKind::SessionClose)
            && self.user.is_none()
    }

    /// A command line that did not parse: the session records its error as `<error>`.
    pub(crate) fn is_malformed(&self) -> bool {
        self.command.as_deref().is_some_and(|c| c.starts_with('<'))
    }

    /// The client's address, IPv4-mapped IPv6 as IPv4; `None` if `peer` is not `ip:port`.
    pub(crate) fn ip(&self) -> Option<IpAddr> {
        let ip = self.peer.parse::<SocketAddr>().ok()?.ip();
        Some(match ip {
            IpAddr::V6(v6) => v6.to_ipv4_mapped().map_or(ip, IpAddr::V4),
            IpAddr::V4(_) => ip,
        })
    }

    /// The stderr line that goes with a noise event, if it has one.
    pub(crate) fn log_line(&self) {
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
