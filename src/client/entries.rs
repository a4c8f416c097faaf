//! Remote directory entries as the client shows them, parsed from MLSD fact lines (RFC 3659
//! §7) or, for servers without MLSD, from `LIST` output in the usual Unix `ls -l` style.

use jiff::civil::{Date, DateTime};
use jiff::tz::TimeZone;
use jiff::{SignedDuration, Timestamp};

/// What kind of object an entry is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum EntryKind {
    /// A regular file.
    File,
    /// A directory.
    Dir,
    /// A symbolic link (LIST output only).
    Link,
    /// Anything else the server reports.
    Other,
}

impl EntryKind {
    /// A short name for tables.
    pub fn as_str(self) -> &'static str {
        match self {
            EntryKind::File => "file",
            EntryKind::Dir => "dir",
            EntryKind::Link => "link",
            EntryKind::Other => "other",
        }
    }
}

/// One remote directory entry.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RemoteEntry {
    /// The name within its directory.
    pub name: String,
    /// File, directory, ...
    pub kind: EntryKind,
    /// Size in bytes, when the server says.
    pub size: Option<u64>,
    /// When it was last modified, when the listing says.
    pub modified: Option<Modified>,
}

/// A modification time as a listing gives it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Modified {
    /// An instant to the second (or better): MLSD's or MDTM's UTC time, a local file's time.
    At(Timestamp),
    /// A LIST line's time of day: the minute it began.
    Minute(Timestamp),
    /// A day only: LIST gives the year instead of the time of day for old entries.
    Day(Date),
}

impl Modified {
    /// `YYYY-MM-DD HH:MM` in the local time zone (`TZ`), or `YYYY-MM-DD` for a day only.
    pub fn local(self) -> String {
        self.local_in(&TimeZone::system())
    }

    /// As [`Modified::local`], in `zone`.
    pub fn local_in(self, zone: &TimeZone) -> String {
        match self {
            Modified::At(t) | Modified::Minute(t) => t
                .to_zoned_datetime(zone.clone())
                .strftime("%Y-%m-%d %H:%M")
                .to_string(),
            Modified::Day(d) => d.strftime("%Y-%m-%d").to_string(),
        }
    }

    /// The span the real time lies in: `[from, until)`. A day is taken in any time zone
    /// (UTC-12 to UTC+14), as a LIST line's date is in the server's.
    pub fn window(self) -> (Timestamp, Timestamp) {
        let after =
            |t: Timestamp, secs| t.checked_add(SignedDuration::from_secs(secs)).unwrap_or(t);
        match self {
            Modified::At(t) => (t, after(t, 1)),
            Modified::Minute(t) => (t, after(t, 60)),
            Modified::Day(d) => {
                let midnight = d
                    .to_zoned_datetime(TimeZone::UTC)
                    .map_or(Timestamp::UNIX_EPOCH, |z| z.timestamp());
                (after(midnight, -14 * 3600), after(midnight, 36 * 3600))
            }
        }
    }

    /// One instant within [`Modified::window`], to set on a copy so that it compares as the
    /// same time later.
    pub fn representative(self) -> Timestamp {
        match self {
            Modified::At(t) | Modified::Minute(t) => t,
            Modified::Day(d) => d
                .to_zoned_datetime(TimeZone::UTC)
                .map_or(Timestamp::UNIX_EPOCH, |z| z.timestamp())
                .checked_add(SignedDuration::from_hours(12))
                .unwrap_or(Timestamp::UNIX_EPOCH),
        }
    }

    /// Where `t` lies against this time: before it, within it, or after it.
    pub fn compare(self, t: Timestamp) -> std::cmp::Ordering {
        let (from, until) = self.window();
        // A second of slack each way: file systems keep times to the second or coarser.
        let slack = SignedDuration::from_secs(1);
        if t < from.checked_sub(slack).unwrap_or(from) {
            std::cmp::Ordering::Less
        } else if t >= until.checked_add(slack).unwrap_or(until) {
            std::cmp::Ordering::Greater
        } else {
            std::cmp::Ordering::Equal
        }
    }
}

/// Whether a listed name is one name within its directory: not empty, no `/`, not `.` or
/// `..`. A hostile server could list `../../.profile`; a download under such a name would be
/// written outside the local directory.
pub fn is_plain_name(name: &str) -> bool {
    !(name.is_empty() || name.contains('/') || name == "." || name == "..")
}

/// Parses one MLSD line: `fact=value;fact=value; name`. The listed directory itself and its
/// parent (`type=cdir`, `type=pdir`) are skipped.
pub fn parse_mlsx_line(line: &str) -> Option<RemoteEntry> {
    let line = line.trim_end_matches('\r');
    let (facts, name) = line.split_once(' ')?;
    if name.is_empty() {
        return None;
    }
    let mut entry = RemoteEntry {
        name: name.to_owned(),
        kind: EntryKind::Other,
        size: None,
        modified: None,
    };
    for fact in facts.split(';').filter(|f| !f.is_empty()) {
        let (key, value) = fact.split_once('=')?;
        match key.to_ascii_lowercase().as_str() {
            "type" => {
                entry.kind = match value.to_ascii_lowercase().as_str() {
                    "file" => EntryKind::File,
                    "dir" => EntryKind::Dir,
                    "cdir" | "pdir" => return None,
                    v if v.starts_with("os.unix=slink") || v.starts_with("os.unix=symlink") => {
                        EntryKind::Link
                    }
                    _ => EntryKind::Other,
                }
            }
            "size" | "sizd" => entry.size = value.parse().ok(),
            "modify" => entry.modified = parse_timeval(value),
            _ => {}
        }
    }
    Some(entry)
}

/// `YYYYMMDDHHMMSS[.sss]`, always UTC (RFC 3659 §2.3).
pub fn parse_timeval(v: &str) -> Option<Modified> {
    let d = v.get(..14)?;
    let t = DateTime::strptime("%Y%m%d%H%M%S", d).ok()?;
    Some(Modified::At(
        t.to_zoned_datetime(TimeZone::UTC).ok()?.timestamp(),
    ))
}

/// The date columns of an `ls -l` line: `Nov 25 20:31` (within six months, no year) or
/// `Jan 1 2025`. The time of day is taken as UTC, as ferryd and vsftpd (by default) send it;
/// a date without a year is in the last twelve months (`now` is the reference).
fn parse_list_time(month: &str, day: &str, time_or_year: &str, now: Timestamp) -> Option<Modified> {
    const MONTHS: [&str; 12] = [
        "jan", "feb", "mar", "apr", "may", "jun", "jul", "aug", "sep", "oct", "nov", "dec",
    ];
    let month = MONTHS.iter().position(|m| m.eq_ignore_ascii_case(month))?;
    let month = i8::try_from(month + 1).ok()?;
    let day: i8 = day.parse().ok()?;
    if let Some((hour, minute)) = time_or_year.split_once(':') {
        let (hour, minute): (i8, i8) = (hour.parse().ok()?, minute.parse().ok()?);
        let today = now.to_zoned_datetime(TimeZone::UTC).date();
        let at = |year| -> Option<Timestamp> {
            // `Date::at` would panic on a bad hour; `DateTime::new` checks.
            let t = DateTime::new(year, month, day, hour, minute, 0, 0).ok()?;
            Some(t.to_zoned_datetime(TimeZone::UTC).ok()?.timestamp())
        };
        // A listed time "in the future" by more than a day is last year's.
        let this_year = at(today.year())?;
        let t = if this_year > now.checked_add(SignedDuration::from_hours(24)).ok()? {
            at(today.year() - 1)?
        } else {
            this_year
        };
        return Some(Modified::Minute(t));
    }
    let year: i16 = time_or_year.parse().ok()?;
    Date::new(year, month, day).ok().map(Modified::Day)
}

/// Parses one Unix `ls -l` style LIST line:
/// `drwxr-xr-x 2 owner group 4096 Nov 25 20:17 name` (a link's ` -> target` is dropped).
/// `total N` lines and lines that do not look like that are skipped.
pub fn parse_list_line(line: &str, now: Timestamp) -> Option<RemoteEntry> {
    let line = line.trim_end_matches('\r');
    let kind = match line.chars().next()? {
        '-' => EntryKind::File,
        'd' => EntryKind::Dir,
        'l' => EntryKind::Link,
        'b' | 'c' | 'p' | 's' => EntryKind::Other,
        _ => return None,
    };
    // Eight whitespace-separated fields precede the name, which may itself hold spaces.
    let mut rest = line;
    let mut fields = Vec::with_capacity(8);
    for _ in 0..8 {
        rest = rest.trim_start();
        let end = rest.find(char::is_whitespace)?;
        fields.push(&rest[..end]);
        rest = &rest[end..];
    }
    let name = rest
        .strip_prefix(' ')
        .unwrap_or(rest)
        .trim_start_matches(' ');
    let name = match kind {
        EntryKind::Link => name.split(" -> ").next().unwrap_or(name),
        _ => name,
    };
    if name.is_empty() || name == "." || name == ".." {
        return None;
    }
    Some(RemoteEntry {
        name: name.to_owned(),
        kind,
        size: fields[4].parse().ok(),
        modified: parse_list_time(fields[5], fields[6], fields[7], now),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn mlsd_lines() {
        let e = parse_mlsx_line("type=file;size=12;modify=20261125203104;perm=r; a b.txt")
            .expect("entry");
        assert_eq!(e.name, "a b.txt");
        assert_eq!(e.kind, EntryKind::File);
        assert_eq!(e.size, Some(12));
        assert_eq!(e.modified, Some(Modified::At(utc("2026-11-25 20:31:04"))));
        assert_eq!(parse_mlsx_line("type=cdir;modify=20261125203104; ."), None);
        assert_eq!(
            parse_mlsx_line("Type=DIR; sub").map(|e| e.kind),
            Some(EntryKind::Dir)
        );
        assert_eq!(parse_mlsx_line("garbage"), None);
    }

    #[test]
    fn list_lines() {
        let now = utc("2026-12-02 10:00:00");
        let list = |line| parse_list_line(line, now);
        let e =
            list("-rw-r--r--   1 ftp      ftp    1234 Nov 25 20:31 my file.txt").expect("entry");
        assert_eq!(e.name, "my file.txt");
        assert_eq!(e.size, Some(1234));
        assert_eq!(
            e.modified,
            Some(Modified::Minute(utc("2026-11-25 20:31:00")))
        );
        // Later in the year than now: last year's.
        let e = list("-rw-r--r-- 1 u g 1 Dec 24 08:00 f").expect("entry");
        assert_eq!(
            e.modified,
            Some(Modified::Minute(utc("2025-12-24 08:00:00")))
        );
        let d = list("drwxr-xr-x 2 u g 4096 Jan  1  2025 dir").expect("entry");
        assert_eq!((d.kind, d.name.as_str()), (EntryKind::Dir, "dir"));
        assert_eq!(
            d.modified,
            Some(Modified::Day(jiff::civil::date(2025, 1, 1)))
        );
        let l = list("lrwxrwxrwx 1 u g 4 Jan 1 2025 ln -> target").expect("entry");
        assert_eq!((l.kind, l.name.as_str()), (EntryKind::Link, "ln"));
        assert_eq!(
            list("-rw-r--r-- 1 u g 1 Foo 1 2025 f").map(|e| e.modified),
            Some(None)
        );
        assert_eq!(list("total 12"), None);
        assert_eq!(list("drwxr-xr-x 2 u g 4096 Jan 1 2025 ."), None);
    }

    fn utc(text: &str) -> Timestamp {
        let t: DateTime = text.parse().expect("date time");
        t.to_zoned_datetime(TimeZone::UTC).expect("utc").timestamp()
    }

    #[test]
    fn only_plain_names_are_taken() {
        assert!(is_plain_name("report.pdf") && is_plain_name("..hidden"));
        for name in ["", ".", "..", "../x", "a/b", "/etc/passwd"] {
            assert!(!is_plain_name(name), "{name:?}");
        }
    }

    #[test]
    fn times_compare_within_their_precision() {
        use std::cmp::Ordering::{Equal, Greater, Less};
        let t = utc("2026-11-25 20:31:00");
        let plus = |secs| {
            t.checked_add(SignedDuration::from_secs(secs))
                .expect("time")
        };
        assert_eq!(Modified::At(t).compare(plus(0)), Equal);
        assert_eq!(Modified::At(t).compare(plus(3)), Greater);
        assert_eq!(Modified::At(t).compare(plus(-3)), Less);
        assert_eq!(Modified::Minute(t).compare(plus(59)), Equal);
        assert_eq!(Modified::Minute(t).compare(plus(90)), Greater);
        let day = Modified::Day(jiff::civil::date(2026, 11, 25));
        assert_eq!(day.compare(plus(3 * 3600)), Equal);
        assert_eq!(day.compare(plus(3 * 86_400)), Greater);
        assert_eq!(day.compare(day.representative()), Equal);
    }

    #[test]
    fn shown_in_the_given_zone() {
        let t = Modified::At(utc("2026-11-25 20:31:04"));
        assert_eq!(t.local_in(&TimeZone::UTC), "2026-11-25 20:31");
        let tokyo = TimeZone::get("Asia/Tokyo").expect("tzdb");
        assert_eq!(t.local_in(&tokyo), "2026-11-26 05:31");
        let day = Modified::Day(jiff::civil::date(2025, 1, 1));
        assert_eq!(day.local_in(&tokyo), "2025-01-01");
    }
}
