//! Directory listings as clients parse them: `LIST` lines in `ls -l` style, `NLST` names, and
//! RFC 3659 fact lines for `MLSD`/`MLST`. Pure: the caller passes the current time.
//!
//! File names come from disk and may hold any byte but `/` and NUL: control characters are shown
//! as `?` (as `ls` does on a terminal), so a name can never break a line or a reply.

use std::borrow::Cow;
use std::time::SystemTime;

use time::OffsetDateTime;
use time::macros::format_description;

use crate::codec::entry::{FileInfo, FileKind};

/// Facts that `MLSD`/`MLST` can show (RFC 3659 §7.5), as a bit set selected by `OPTS MLST`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Facts(u8);

impl Facts {
    const TYPE: u8 = 1;
    const SIZE: u8 = 2;
    const MODIFY: u8 = 4;
    const PERM: u8 = 8;
    const UNIQUE: u8 = 16;
    const UNIX_MODE: u8 = 32;
    const NAMES: [(&'static str, u8); 6] = [
        ("type", Self::TYPE),
        ("size", Self::SIZE),
        ("modify", Self::MODIFY),
        ("perm", Self::PERM),
        ("unique", Self::UNIQUE),
        ("UNIX.mode", Self::UNIX_MODE),
    ];

    /// Every supported fact: the default set.
    pub fn all() -> Facts {
        Facts(Self::TYPE | Self::SIZE | Self::MODIFY | Self::PERM | Self::UNIQUE | Self::UNIX_MODE)
    }

    /// The supported facts among `names` (case-insensitive); unknown names are ignored, as
    /// RFC 3659 §7.9 asks.
    pub fn select<S: AsRef<str>>(names: &[S]) -> Facts {
        let mut bits = 0;
        for name in names {
            if let Some((_, bit)) = Self::NAMES
                .iter()
                .find(|(n, _)| n.eq_ignore_ascii_case(name.as_ref()))
            {
                bits |= bit;
            }
        }
        Facts(bits)
    }

    /// `type;size;` — the selected facts, for the `OPTS MLST` reply.
    pub fn names(self) -> String {
        Self::NAMES
            .iter()
            .filter(|(_, bit)| self.0 & bit != 0)
            .map(|(name, _)| format!("{name};"))
            .collect()
    }

    /// The `MLST` line of `FEAT`: every supported fact, the selected ones marked with `*`.
    pub fn feat_line(self) -> String {
        Self::NAMES
            .iter()
            .map(|(name, bit)| {
                let star = if self.0 & bit != 0 { "*" } else { "" };
                format!("{name}{star};")
            })
            .collect()
    }

    fn has(self, bit: u8) -> bool {
        self.0 & bit != 0
    }
}

/// How an entry relates to the listed directory, for the MLSx `type` fact.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Role {
    /// An entry inside the listed directory.
    Entry,
    /// The listed directory itself (`type=cdir`).
    Current,
    /// The listed directory's parent (`type=pdir`).
    Parent,
}

/// A file name made safe for one listing line: control characters become `?`.
pub fn display_name(name: &str) -> Cow<'_, str> {
    if name.chars().any(char::is_control) {
        Cow::Owned(
            name.chars()
                .map(|c| if c.is_control() { '?' } else { c })
                .collect(),
        )
    } else {
        Cow::Borrowed(name)
    }
}

/// One `LIST` line, like `ls -l`: `-rw-r--r--   1 ftp ftp   1234 Nov 25 20:17 name`.
/// Entries older than six months (or in the future) show the year instead of the time, as `ls`
/// does; clients parse both forms.
pub fn list_line(info: &FileInfo, now: SystemTime) -> String {
    let kind = match info.kind {
        FileKind::Dir => 'd',
        FileKind::File => '-',
    };
    let modified = OffsetDateTime::from(info.modified);
    let now = OffsetDateTime::from(now);
    let half_year = time::Duration::days(182);
    let date = if modified > now || now - modified > half_year {
        modified.format(format_description!(
            "[month repr:short] [day padding:space]  [year]"
        ))
    } else {
        modified.format(format_description!(
            "[month repr:short] [day padding:space] [hour]:[minute]"
        ))
    }
    .unwrap_or_else(|_| "Jan  1  1970".to_owned());
    format!(
        "{kind}{} {:>3} ftp      ftp      {:>12} {date} {}",
        mode_string(info.mode),
        info.nlink,
        info.size,
        display_name(&info.name)
    )
}

/// Renders permission bits as `rwxr-xr-x`, with setuid/setgid/sticky letters.
fn mode_string(mode: u32) -> String {
    let mut out = String::with_capacity(9);
    for (shift, special, letter) in [(6, 0o4000, 's'), (3, 0o2000, 's'), (0, 0o1000, 't')] {
        let bits = (mode >> shift) & 7;
        out.push(if bits & 4 != 0 { 'r' } else { '-' });
        out.push(if bits & 2 != 0 { 'w' } else { '-' });
        let exec = bits & 1 != 0;
        out.push(match (mode & special != 0, exec) {
            (true, true) => letter,
            (true, false) => letter.to_ascii_uppercase(),
            (false, true) => 'x',
            (false, false) => '-',
        });
    }
    out
}

/// `YYYYMMDDHHMMSS` in UTC, as MDTM and the `modify` fact use (RFC 3659 §2.3).
pub fn timeval(t: SystemTime) -> String {
    OffsetDateTime::from(t)
        .format(format_description!(
            "[year][month][day][hour][minute][second]"
        ))
        .unwrap_or_else(|_| "19700101000000".to_owned())
}

/// One MLSx fact line: `type=file;size=3;modify=...;perm=...;unique=...; name`
/// (RFC 3659 §7.2; one space before the name, which is the rest of the line). `writable` is
/// false for read-only users, whose `perm` then offers only reading.
pub fn mlsx_line(info: &FileInfo, facts: Facts, role: Role, writable: bool) -> String {
    let mut out = String::with_capacity(96);
    if facts.has(Facts::TYPE) {
        out.push_str(match (info.kind, role) {
            (_, Role::Current) => "type=cdir;",
            (_, Role::Parent) => "type=pdir;",
            (FileKind::Dir, Role::Entry) => "type=dir;",
            (FileKind::File, Role::Entry) => "type=file;",
        });
    }
    if facts.has(Facts::SIZE) {
        out.push_str(&format!("size={};", info.size));
    }
    if facts.has(Facts::MODIFY) {
        out.push_str(&format!("modify={};", timeval(info.modified)));
    }
    if facts.has(Facts::PERM) {
        // What this user may do here (RFC 3659 §7.5.5): files may be appended to, deleted,
        // renamed, read and overwritten; directories may get files and subdirectories, be entered, listed,
        // renamed, deleted when empty and purged.
        out.push_str(match (info.kind, writable) {
            (FileKind::File, true) => "perm=adfrw;",
            (FileKind::Dir, true) => "perm=cdeflmp;",
            (FileKind::File, false) => "perm=r;",
            (FileKind::Dir, false) => "perm=el;",
        });
    }
    if facts.has(Facts::UNIQUE) {
        out.push_str(&format!("unique={};", info.unique));
    }
    if facts.has(Facts::UNIX_MODE) {
        out.push_str(&format!("UNIX.mode=0{:o};", info.mode & 0o7777));
    }
    out.push(' ');
    out.push_str(&display_name(&info.name));
    out
}

/// Joins listing lines with CRLF, as the data connection carries them (RFC 959 §3.1.1.1 for
/// ASCII type, which listings always use).
pub fn to_wire<I: IntoIterator<Item = String>>(lines: I) -> Vec<u8> {
    let mut out = Vec::new();
    for line in lines {
        out.extend_from_slice(line.as_bytes());
        out.extend_from_slice(b"\r\n");
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    fn info(name: &str, kind: FileKind, mode: u32, age_days: u64) -> (FileInfo, SystemTime) {
        let now = SystemTime::UNIX_EPOCH + Duration::from_secs(1_795_000_000);
        let modified = now - Duration::from_secs(age_days * 86_400);
        (
            FileInfo {
                name: name.to_owned(),
                kind,
                size: 1234,
                modified,
                mode,
                nlink: 1,
                unique: "801g2a".to_owned(),
            },
            now,
        )
    }

    #[test]
    fn list_line_recent_and_old() {
        let (f, now) = info("a b.txt", FileKind::File, 0o644, 1);
        let line = list_line(&f, now);
        assert!(line.starts_with("-rw-r--r--   1 ftp      ftp"), "{line}");
        assert!(line.ends_with(" a b.txt"), "{line}");
        assert!(line.contains(':'), "recent entries show the time: {line}");
        let (d, now) = info("old", FileKind::Dir, 0o755, 400);
        let line = list_line(&d, now);
        assert!(line.starts_with("drwxr-xr-x"), "{line}");
        assert!(line.contains(" 2026 ") || line.contains(" 2025 "), "{line}");
    }

    #[test]
    fn control_characters_cannot_break_lines() {
        let (f, now) = info("evil\r\n226 done", FileKind::File, 0o600, 1);
        let wire = to_wire([
            list_line(&f, now),
            mlsx_line(&f, Facts::all(), Role::Entry, true),
        ]);
        let text = String::from_utf8(wire).expect("utf8");
        assert_eq!(text.matches("\r\n").count(), 2, "{text:?}");
        assert!(text.contains("evil??226 done"));
    }

    #[test]
    fn mlsx_facts_and_selection() {
        let (f, _) = info("x", FileKind::File, 0o644, 1);
        let line = mlsx_line(&f, Facts::all(), Role::Entry, true);
        assert!(line.starts_with("type=file;size=1234;modify="), "{line}");
        assert!(
            line.ends_with(";perm=adfrw;unique=801g2a;UNIX.mode=0644; x"),
            "{line}"
        );
        assert!(
            mlsx_line(&f, Facts::select(&["type"]), Role::Parent, true).starts_with("type=pdir;")
        );
        let (d, _) = info("d", FileKind::Dir, 0o755, 1);
        let some = Facts::select(&["TYPE", "bogus", "size"]);
        assert_eq!(some.names(), "type;size;");
        assert_eq!(
            mlsx_line(&d, some, Role::Current, true),
            "type=cdir;size=1234; d"
        );
        assert_eq!(
            some.feat_line(),
            "type*;size*;modify;perm;unique;UNIX.mode;"
        );
        let line = mlsx_line(&f, Facts::all(), Role::Entry, true);
        assert!(line.ends_with(";UNIX.mode=0644; x"), "{line}");
        assert!(mlsx_line(&d, some, Role::Parent, true).starts_with("type=pdir;"));
        assert!(mlsx_line(&d, Facts::all(), Role::Entry, false).contains(";perm=el;"));
        assert!(mlsx_line(&f, Facts::all(), Role::Entry, false).contains(";perm=r;"));
    }

    #[test]
    fn mode_letters() {
        assert_eq!(mode_string(0o4755), "rwsr-xr-x");
        assert_eq!(mode_string(0o1777), "rwxrwxrwt");
        assert_eq!(mode_string(0o2640), "rw-r-S---");
    }

    #[test]
    fn timeval_format() {
        assert_eq!(timeval(SystemTime::UNIX_EPOCH), "19700101000000");
    }
}
