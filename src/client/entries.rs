//! Remote directory entries as the client shows them, parsed from MLSD fact lines (RFC 3659
//! §7) or, for servers without MLSD, from `LIST` output in the usual Unix `ls -l` style.

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
    /// Modification time as text: `YYYY-MM-DD HH:MM:SS` (UTC) from MLSD, as listed by LIST.
    pub modified: Option<String>,
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
            "modify" => entry.modified = format_timeval(value),
            _ => {}
        }
    }
    Some(entry)
}

/// `YYYYMMDDHHMMSS[.sss]` as `YYYY-MM-DD HH:MM:SS`.
fn format_timeval(v: &str) -> Option<String> {
    let d = v.get(..14)?;
    if !d.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    Some(format!(
        "{}-{}-{} {}:{}:{}",
        &d[..4],
        &d[4..6],
        &d[6..8],
        &d[8..10],
        &d[10..12],
        &d[12..14]
    ))
}

/// Parses one Unix `ls -l` style LIST line:
/// `drwxr-xr-x 2 owner group 4096 Nov 25 20:17 name` (a link's ` -> target` is dropped).
/// `total N` lines and lines that do not look like that are skipped.
pub fn parse_list_line(line: &str) -> Option<RemoteEntry> {
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
        modified: Some(format!("{} {} {}", fields[5], fields[6], fields[7])),
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
        assert_eq!(e.modified.as_deref(), Some("2026-11-25 20:31:04"));
        assert_eq!(parse_mlsx_line("type=cdir;modify=20261125203104; ."), None);
        assert_eq!(
            parse_mlsx_line("Type=DIR; sub").map(|e| e.kind),
            Some(EntryKind::Dir)
        );
        assert_eq!(parse_mlsx_line("garbage"), None);
    }

    #[test]
    fn list_lines() {
        let e = parse_list_line("-rw-r--r--   1 ftp      ftp    1234 Nov 25 20:31 my file.txt")
            .expect("entry");
        assert_eq!(e.name, "my file.txt");
        assert_eq!(e.size, Some(1234));
        assert_eq!(e.modified.as_deref(), Some("Nov 25 20:31"));
        let d = parse_list_line("drwxr-xr-x 2 u g 4096 Jan  1  2025 dir").expect("entry");
        assert_eq!((d.kind, d.name.as_str()), (EntryKind::Dir, "dir"));
        let l = parse_list_line("lrwxrwxrwx 1 u g 4 Jan 1 2025 ln -> target").expect("entry");
        assert_eq!((l.kind, l.name.as_str()), (EntryKind::Link, "ln"));
        assert_eq!(parse_list_line("total 12"), None);
        assert_eq!(parse_list_line("drwxr-xr-x 2 u g 4096 Jan 1 2025 ."), None);
    }
}
