//! The client's configuration file: defaults for the command-line flags, from `--config PATH`,
//! `$FERRY_CONFIG`, else `$XDG_CONFIG_HOME/ferry/config.toml` (`~/.config/ferry/config.toml`).
//! A flag given on the command line wins over the file, the file over the built-in default.
//! Pure apart from reading the file; the binary turns [`Settings`] into a `Launch`.

use std::io;
use std::path::{Path, PathBuf};
use std::time::Duration;

use serde::{Deserialize, Deserializer, de::Error as _};

/// Most connections `-P` / `parallel` may ask for.
pub const MAX_PARALLEL: u16 = 64;
/// Built-in defaults of the settings a file or a flag may change.
const DEFAULT_PARALLEL: u16 = 1;
const DEFAULT_RETRIES: u32 = 3;
const DEFAULT_TIMEOUT_SECS: u64 = 30;

/// Whether and how to use TLS (`tls` in the file; `--tls`, `--implicit-tls`, `--no-tls`).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum TlsMode {
    /// Plain FTP.
    #[default]
    Off,
    /// AUTH TLS after the greeting (RFC 4217).
    Explicit,
    /// TLS from the first byte.
    Implicit,
}

/// What the file, or the command line, chose; `None` where it said nothing.
#[derive(Debug, Clone, Default, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Choices {
    /// Active mode (PORT/EPRT).
    pub active: Option<bool>,
    /// TLS mode.
    pub tls: Option<TlsMode>,
    /// Trust only the CAs in this PEM file.
    pub ca_file: Option<PathBuf>,
    /// Do not check the server's certificate.
    pub insecure: Option<bool>,
    /// Connections mget, mput and mirror use at once.
    #[serde(default, deserialize_with = "parallel")]
    pub parallel: Option<u16>,
    /// Tries again of a transfer that failed for a passing reason.
    pub retries: Option<u32>,
    /// Seconds to wait for the server.
    #[serde(default, deserialize_with = "timeout_secs")]
    pub timeout_secs: Option<u64>,
    /// Print only what was asked for.
    pub quiet: Option<bool>,
}

/// The settings in force: the command line's choices, else the file's, else the defaults.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Settings {
    /// Active mode.
    pub active: bool,
    /// TLS mode.
    pub tls: TlsMode,
    /// The CA file to trust, if any.
    pub ca_file: Option<PathBuf>,
    /// No certificate check (never together with `ca_file`).
    pub insecure: bool,
    /// Connections at once for batches.
    pub parallel: usize,
    /// Tries again of a failed transfer.
    pub retries: u32,
    /// Control and data timeout.
    pub timeout: Duration,
    /// Quiet output.
    pub quiet: bool,
}

/// Why the configuration file cannot be used; one line naming the file (and the key).
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    /// The file named by `--config` or `$FERRY_CONFIG`, or one that exists, cannot be read.
    #[error("cannot read {}: {}", path.display(), crate::client::render::io_reason(source, "no such file"))]
    Read {
        /// The file.
        path: PathBuf,
        /// The cause.
        source: io::Error,
    },
    /// A key is unknown, a value wrong, or the TOML broken.
    #[error("{}, line {line}: {message}", path.display())]
    Bad {
        /// The file.
        path: PathBuf,
        /// Where (1-based).
        line: usize,
        /// What is wrong, naming the key.
        message: String,
    },
}

fn parallel<'de, D: Deserializer<'de>>(d: D) -> Result<Option<u16>, D::Error> {
    let n = i64::deserialize(d)?;
    match u16::try_from(n) {
        Ok(n) if (1..=MAX_PARALLEL).contains(&n) => Ok(Some(n)),
        _ => Err(D::Error::custom(format!(
            "must be 1 to {MAX_PARALLEL}, not {n}"
        ))),
    }
}

fn timeout_secs<'de, D: Deserializer<'de>>(d: D) -> Result<Option<u64>, D::Error> {
    let n = i64::deserialize(d)?;
    match u64::try_from(n) {
        Ok(n) if n >= 1 => Ok(Some(n)),
        _ => Err(D::Error::custom(format!("must be at least 1, not {n}"))),
    }
}

/// `$XDG_CONFIG_HOME/ferry`, else `~/.config/ferry`: where the configuration and the
/// bookmarks live.
pub fn config_dir() -> Option<PathBuf> {
    let config = std::env::var_os("XDG_CONFIG_HOME")
        .filter(|dir| !dir.is_empty())
        .map(PathBuf::from)
        .or_else(|| std::env::var_os("HOME").map(|home| Path::new(&home).join(".config")))?;
    Some(config.join("ferry"))
}

/// The file to read and whether it must exist: `explicit` (`--config`), else `$FERRY_CONFIG`
/// (both must), else `config.toml` in [`config_dir`] (may be missing).
pub fn locate(explicit: Option<&Path>) -> Option<(PathBuf, bool)> {
    if let Some(path) = explicit {
        return Some((path.to_owned(), true));
    }
    if let Some(path) = std::env::var_os("FERRY_CONFIG").filter(|p| !p.is_empty()) {
        return Some((PathBuf::from(path), true));
    }
    config_dir().map(|dir| (dir.join("config.toml"), false))
}

impl Choices {
    /// Reads the configuration file ([`locate`]); none (all `None`) when an optional file is
    /// missing.
    ///
    /// # Errors
    /// [`ConfigError`] for an unreadable file, unknown keys or bad values.
    pub fn load(explicit: Option<&Path>) -> Result<Choices, ConfigError> {
        let Some((path, required)) = locate(explicit) else {
            return Ok(Choices::default());
        };
        match std::fs::read_to_string(&path) {
            Ok(text) => Choices::parse(&text, &path),
            Err(e) if e.kind() == io::ErrorKind::NotFound && !required => Ok(Choices::default()),
            Err(source) => Err(ConfigError::Read { path, source }),
        }
    }

    /// Parses the text of the file at `path`; a relative `ca_file` is taken from the file's
    /// directory, not from wherever ferry happens to run.
    ///
    /// # Errors
    /// [`ConfigError::Bad`] naming the line and the key.
    pub fn parse(text: &str, path: &Path) -> Result<Choices, ConfigError> {
        let mut choices: Choices = toml::from_str(text).map_err(|e| {
            let at = e.span().map_or(0, |span| span.start);
            bad(path, text, at, e.message())
        })?;
        if choices.ca_file.is_some() && choices.insecure == Some(true) {
            let at = text.find("insecure").unwrap_or(0);
            return Err(bad(path, text, at, "true does not go with ca_file"));
        }
        if let (Some(ca), Some(dir)) = (&choices.ca_file, path.parent()) {
            choices.ca_file = Some(dir.join(ca));
        }
        Ok(choices)
    }

    /// These choices where made, `base`'s elsewhere. The certificate check is one choice:
    /// `--ca-file` replaces a file's `insecure`, `--insecure` a file's `ca_file`.
    pub fn or(self, base: Choices) -> Choices {
        let trust_here = self.ca_file.is_some() || self.insecure.is_some();
        let (ca_file, insecure) = if trust_here {
            (self.ca_file, self.insecure)
        } else {
            (base.ca_file, base.insecure)
        };
        Choices {
            active: self.active.or(base.active),
            tls: self.tls.or(base.tls),
            ca_file,
            insecure,
            parallel: self.parallel.or(base.parallel),
            retries: self.retries.or(base.retries),
            timeout_secs: self.timeout_secs.or(base.timeout_secs),
            quiet: self.quiet.or(base.quiet),
        }
    }

    /// The settings, with the built-in defaults where nothing was chosen.
    pub fn settings(self) -> Settings {
        Settings {
            active: self.active.unwrap_or(false),
            tls: self.tls.unwrap_or_default(),
            insecure: self.ca_file.is_none() && self.insecure.unwrap_or(false),
            ca_file: self.ca_file,
            parallel: usize::from(self.parallel.unwrap_or(DEFAULT_PARALLEL)),
            retries: self.retries.unwrap_or(DEFAULT_RETRIES),
            timeout: Duration::from_secs(self.timeout_secs.unwrap_or(DEFAULT_TIMEOUT_SECS)),
            quiet: self.quiet.unwrap_or(false),
        }
    }
}

/// A [`ConfigError::Bad`] at byte `at` of `text`, the key of that line named when the message
/// does not name it already (toml names unknown keys, not the key of a bad value).
fn bad(path: &Path, text: &str, at: usize, message: &str) -> ConfigError {
    let before = text.get(..at).unwrap_or(text);
    let line = before.matches('\n').count() + 1;
    let line_text = text.lines().nth(line - 1).unwrap_or_default();
    let key = line_text
        .split_once('=')
        .map(|(key, _)| key.trim().trim_matches('"'))
        .filter(|key| !key.is_empty() && !message.contains(&format!("`{key}`")));
    let message = match key {
        Some(key) => format!("{key}: {message}"),
        None => message.to_owned(),
    };
    ConfigError::Bad {
        path: path.to_owned(),
        line,
        message,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(text: &str) -> Result<Choices, String> {
        Choices::parse(text, Path::new("/etc/x/config.toml")).map_err(|e| e.to_string())
    }

    #[test]
    fn every_key_parses() {
        let text = "active = true\ntls = \"implicit\"\nca_file = \"ca.pem\"\nparallel = 8\n\
                    retries = 0\ntimeout_secs = 5\nquiet = true\n";
        assert_eq!(
            parse(text).expect("valid"),
            Choices {
                active: Some(true),
                tls: Some(TlsMode::Implicit),
                ca_file: Some(PathBuf::from("/etc/x/ca.pem")),
                insecure: None,
                parallel: Some(8),
                retries: Some(0),
                timeout_secs: Some(5),
                quiet: Some(true),
            }
        );
        assert_eq!(parse("").expect("empty"), Choices::default());
        let absolute = parse("ca_file = \"/srv/ca.pem\"").expect("absolute");
        assert_eq!(absolute.ca_file, Some(PathBuf::from("/srv/ca.pem")));
    }

    #[test]
    fn bad_keys_and_values_are_one_line_naming_file_line_and_key() {
        for (text, wanted) in [
            (
                "quiet = true\ncolour = 1\n",
                "/etc/x/config.toml, line 2: unknown field `colour`, expected one of",
            ),
            (
                "tls = \"maybe\"",
                "/etc/x/config.toml, line 1: tls: unknown variant `maybe`, expected one of `off`",
            ),
            (
                "\nparallel = 65",
                "/etc/x/config.toml, line 2: parallel: must be 1 to 64, not 65",
            ),
            ("parallel = 0", "line 1: parallel: must be 1 to 64, not 0"),
            (
                "timeout_secs = 0",
                "line 1: timeout_secs: must be at least 1",
            ),
            ("active = \"yes\"", "line 1: active: invalid type: string"),
            ("retries = -1", "line 1: retries: "),
            ("[bookmarks]\nx = 1", "line 1: unknown field `bookmarks`"),
            (
                "ca_file = \"a.pem\"\ninsecure = true",
                "line 2: insecure: true does not go with ca_file",
            ),
            ("active = ", "line 1: "),
        ] {
            let err = parse(text).expect_err(text);
            assert!(err.contains(wanted), "{text:?}: {err:?} lacks {wanted:?}");
            assert!(!err.contains('\n'), "{text:?}: not one line: {err:?}");
        }
    }

    #[test]
    fn the_command_line_wins_over_the_file_and_the_file_over_the_defaults() {
        let defaults = Choices::default().settings();
        assert_eq!(
            defaults,
            Settings {
                active: false,
                tls: TlsMode::Off,
                ca_file: None,
                insecure: false,
                parallel: 1,
                retries: 3,
                timeout: Duration::from_secs(30),
                quiet: false,
            }
        );
        let file =
            parse("active = true\nparallel = 4\nretries = 7\ntls = \"explicit\"\ninsecure = true")
                .expect("file");
        let from_file = Choices::default().or(file.clone()).settings();
        assert!(from_file.active && from_file.insecure);
        assert_eq!(
            (from_file.parallel, from_file.retries, from_file.tls),
            (4, 7, TlsMode::Explicit)
        );
        let flags = Choices {
            active: Some(false),
            parallel: Some(2),
            tls: Some(TlsMode::Off),
            ca_file: Some(PathBuf::from("mine.pem")),
            ..Choices::default()
        };
        let both = flags.or(file).settings();
        assert!(!both.active, "--passive beats active = true");
        assert_eq!((both.parallel, both.retries), (2, 7));
        assert_eq!(both.tls, TlsMode::Off);
        assert_eq!(both.ca_file, Some(PathBuf::from("mine.pem")));
        assert!(!both.insecure, "--ca-file replaces insecure = true");
    }

    #[test]
    fn an_optional_file_may_be_missing_a_named_one_not() {
        let dir = tempfile::tempdir().expect("tempdir");
        let missing = dir.path().join("none.toml");
        let err = Choices::load(Some(&missing)).expect_err("named file missing");
        assert!(err.to_string().starts_with("cannot read "), "{err}");
        std::fs::write(&missing, "quiet = true").expect("write");
        assert_eq!(
            Choices::load(Some(&missing)).expect("read").quiet,
            Some(true)
        );
    }
}
