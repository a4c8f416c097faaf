//! `~/.netrc`, as ftp, curl and lftp read it: `machine HOST login USER password SECRET`
//! entries, a `default` entry for any other host, `macdef` macros skipped. A file that others
//! may read gives logins but never its passwords (ftp refuses it the same way).

use std::fs;
use std::io;
use std::path::{Path, PathBuf};

/// One entry: the host it is for (`None` for `default`), its login and password.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Entry {
    /// `machine NAME`, or `None` for `default`.
    pub machine: Option<String>,
    /// `login NAME`.
    pub login: Option<String>,
    /// `password SECRET`.
    pub password: Option<String>,
}

/// A parsed netrc file.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Netrc {
    entries: Vec<Entry>,
}

/// Where the netrc is: `$NETRC` when set (as curl's `--netrc-file`), else `~/.netrc`.
pub fn default_path() -> Option<PathBuf> {
    std::env::var_os("NETRC")
        .map(PathBuf::from)
        .or_else(|| std::env::var_os("HOME").map(|home| Path::new(&home).join(".netrc")))
}

impl Netrc {
    /// Reads `path`; `Ok(None)` when there is no such file. When others may read it, its
    /// passwords are dropped and the warning says so.
    ///
    /// # Errors
    /// The file exists but cannot be read.
    pub fn load(path: &Path) -> io::Result<Option<(Netrc, Option<String>)>> {
        let text = match fs::read_to_string(path) {
            Ok(text) => text,
            Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(None),
            Err(e) => return Err(e),
        };
        let mut netrc = Netrc::parse(&text);
        let mut warning = None;
        if open_to_others(path)? && netrc.entries.iter().any(|e| e.password.is_some()) {
            for entry in &mut netrc.entries {
                entry.password = None;
            }
            warning = Some(format!(
                "{} may be read by other users, so its passwords are not used (chmod 600 {0})",
                path.display()
            ));
        }
        Ok(Some((netrc, warning)))
    }

    /// Parses netrc text; unknown words are skipped, as the classic parsers do.
    pub fn parse(text: &str) -> Netrc {
        let mut entries: Vec<Entry> = Vec::new();
        let mut lines = text.lines();
        while let Some(line) = lines.next() {
            let mut words = line.split_whitespace();
            while let Some(word) = words.next() {
                match word {
                    "machine" => entries.push(Entry {
                        machine: words.next().map(str::to_owned),
                        login: None,
                        password: None,
                    }),
                    "default" => entries.push(Entry {
                        machine: None,
                        login: None,
                        password: None,
                    }),
                    "login" | "password" | "account" => {
                        let value = words.next().map(str::to_owned);
                        if let Some(entry) = entries.last_mut() {
                            match word {
                                "login" => entry.login = value,
                                "password" => entry.password = value,
                                _ => {}
                            }
                        }
                    }
                    "macdef" => {
                        // A macro runs to the next empty line.
                        for body in lines.by_ref() {
                            if body.trim().is_empty() {
                                break;
                            }
                        }
                        break;
                    }
                    _ => {}
                }
            }
        }
        Netrc { entries }
    }

    /// The entry for `host`: its `machine` entry (the first), else `default`.
    pub fn find(&self, host: &str) -> Option<&Entry> {
        self.entries
            .iter()
            .find(|e| {
                e.machine
                    .as_deref()
                    .is_some_and(|m| m.eq_ignore_ascii_case(host))
            })
            .or_else(|| self.entries.iter().find(|e| e.machine.is_none()))
    }

    /// The password for `user` on `host`, when the entry for the host names that login (or
    /// none).
    pub fn password(&self, host: &str, user: &str) -> Option<&str> {
        self.find(host)
            .filter(|e| e.login.as_deref().is_none_or(|l| l == user))
            .and_then(|e| e.password.as_deref())
    }
}

/// Whether anyone but the owner may read or write `path`.
fn open_to_others(path: &Path) -> io::Result<bool> {
    use std::os::unix::fs::PermissionsExt;
    Ok(fs::metadata(path)?.permissions().mode() & 0o077 != 0)
}

#[cfg(test)]
mod tests {
    use super::*;

    const TEXT: &str = "\
machine ftp.example.org login alice password s3cret
# a comment line is just words that are skipped
machine other.example
  login bob
  password hunter2

macdef init
cd /pub
binary

default login anonymous password guest@
";

    #[test]
    fn machines_then_default() {
        let netrc = Netrc::parse(TEXT);
        let alice = netrc.find("FTP.example.org").expect("alice");
        assert_eq!(alice.login.as_deref(), Some("alice"));
        assert_eq!(netrc.password("ftp.example.org", "alice"), Some("s3cret"));
        assert_eq!(netrc.password("ftp.example.org", "mallory"), None);
        assert_eq!(netrc.password("other.example", "bob"), Some("hunter2"));
        let any = netrc.find("elsewhere").expect("default");
        assert_eq!(any.login.as_deref(), Some("anonymous"));
        assert_eq!(netrc.password("elsewhere", "anonymous"), Some("guest@"));
        assert!(Netrc::parse("machine a login x").find("b").is_none());
    }

    #[test]
    fn a_file_others_can_read_gives_no_passwords() {
        use std::os::unix::fs::PermissionsExt;
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("netrc");
        fs::write(&path, TEXT).expect("write");
        fs::set_permissions(&path, fs::Permissions::from_mode(0o644)).expect("chmod");
        let (netrc, warning) = Netrc::load(&path).expect("read").expect("there");
        assert!(warning.expect("a warning").contains("chmod 600"));
        assert_eq!(netrc.password("ftp.example.org", "alice"), None);
        assert_eq!(
            netrc
                .find("ftp.example.org")
                .and_then(|e| e.login.as_deref()),
            Some("alice"),
            "logins still count"
        );
        fs::set_permissions(&path, fs::Permissions::from_mode(0o600)).expect("chmod");
        let (netrc, warning) = Netrc::load(&path).expect("read").expect("there");
        assert!(warning.is_none());
        assert_eq!(netrc.password("ftp.example.org", "alice"), Some("s3cret"));
        assert!(Netrc::load(&dir.path().join("none")).expect("ok").is_none());
    }
}
