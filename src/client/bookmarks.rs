//! Bookmarks: named `ftp://` URLs in `$XDG_CONFIG_HOME/ferry/bookmarks.toml` (by default
//! `~/.config/ferry/bookmarks.toml`), never with a password (those belong in `~/.netrc`).

use std::collections::BTreeMap;
use std::fs;
use std::io;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

/// The bookmarks file's contents.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Bookmarks {
    /// Name to URL.
    #[serde(default)]
    pub bookmarks: BTreeMap<String, String>,
}

/// Where the bookmarks are kept.
pub fn default_path() -> Option<PathBuf> {
    Some(crate::client::config::config_dir()?.join("bookmarks.toml"))
}

/// `url` without a password (`ftp://user:secret@host` gives `ftp://user@host`), and whether
/// it had one.
pub fn without_password(url: &str) -> (String, bool) {
    let Some(rest) = url.strip_prefix("ftp://") else {
        return (url.to_owned(), false);
    };
    let (authority, path) = rest.split_at(rest.find('/').unwrap_or(rest.len()));
    match authority.rsplit_once('@') {
        Some((userinfo, host)) if userinfo.contains(':') => {
            let user = userinfo.split(':').next().unwrap_or_default();
            (format!("ftp://{user}@{host}{path}"), true)
        }
        _ => (url.to_owned(), false),
    }
}

impl Bookmarks {
    /// Reads `path`; none yet when it does not exist.
    ///
    /// # Errors
    /// The file cannot be read or is not a bookmarks file.
    pub fn load(path: &Path) -> io::Result<Bookmarks> {
        match fs::read_to_string(path) {
            Ok(text) => toml::from_str(&text).map_err(|e| {
                io::Error::new(
                    io::ErrorKind::InvalidData,
                    format!("{}: {e}", path.display()),
                )
            }),
            Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(Bookmarks::default()),
            Err(e) => Err(e),
        }
    }

    /// Writes them to `path` whole (a temporary file beside it first), creating its directory.
    ///
    /// # Errors
    /// The directory or the file cannot be written.
    pub fn save(&self, path: &Path) -> io::Result<()> {
        if let Some(dir) = path.parent() {
            fs::create_dir_all(dir)?;
        }
        let text = toml::to_string(self).map_err(io::Error::other)?;
        let temporary = path.with_extension("toml.tmp");
        fs::write(&temporary, text)?;
        fs::rename(&temporary, path)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn passwords_never_stay_in_a_bookmark() {
        assert_eq!(
            without_password("ftp://alice:s3cret@example.org:2121/pub/x"),
            ("ftp://alice@example.org:2121/pub/x".to_owned(), true)
        );
        assert_eq!(
            without_password("ftp://alice@[::1]:21/"),
            ("ftp://alice@[::1]:21/".to_owned(), false)
        );
        assert_eq!(
            without_password("example.org:21"),
            ("example.org:21".to_owned(), false)
        );
    }

    #[test]
    fn they_round_trip_through_the_file() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("ferry").join("bookmarks.toml");
        assert_eq!(
            Bookmarks::load(&path).expect("none yet"),
            Bookmarks::default()
        );
        let mut marks = Bookmarks::default();
        marks
            .bookmarks
            .insert("work".into(), "ftp://alice@example.org/pub".into());
        marks.save(&path).expect("saved");
        assert_eq!(Bookmarks::load(&path).expect("read"), marks);
        fs::write(&path, "bookmarks = 3").expect("write");
        assert!(Bookmarks::load(&path).is_err());
    }
}
