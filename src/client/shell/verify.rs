//! `get --verify` and `put --verify`: after the transfer, the local file's digest is compared
//! with the server's: HASH (draft-bryan-ftpext-hash, SHA-256 preferred), else XSHA256 or XMD5
//! where only those exist, else the sizes, saying that only the size was compared.

use std::fs::File;
use std::path::Path;

use crate::client::ftp::{ClientError, FtpClient};
use crate::storage::digest::HashAlgo;

use super::{Shell, ShellError};

/// The digests preferred, best first.
const PREFERRED: [HashAlgo; 5] = [
    HashAlgo::Sha256,
    HashAlgo::Sha512,
    HashAlgo::Sha1,
    HashAlgo::Md5,
    HashAlgo::Crc32,
];

/// How the server can tell a file's digest.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Method {
    /// `HASH` with this algorithm; `selected` when it is already the session's.
    Hash { algo: HashAlgo, selected: bool },
    /// `XSHA256 PATH`.
    XSha256,
    /// `XMD5 PATH`.
    XMd5,
    /// Only `SIZE`.
    Size,
}

/// The best method the FEAT lines offer.
fn method(features: &[String]) -> Method {
    for line in features {
        let line = line.trim();
        if let Some(list) = line
            .strip_prefix("HASH ")
            .or_else(|| line.strip_prefix("hash "))
        {
            let offered: Vec<(HashAlgo, bool)> = list
                .split(';')
                .filter_map(|name| {
                    let selected = name.ends_with('*');
                    HashAlgo::from_name(name.trim_end_matches('*')).map(|a| (a, selected))
                })
                .collect();
            if let Some((algo, selected)) = PREFERRED
                .iter()
                .find_map(|want| offered.iter().find(|(a, _)| a == want).copied())
            {
                return Method::Hash { algo, selected };
            }
        }
    }
    let has = |word: &str| features.iter().any(|l| l.trim().eq_ignore_ascii_case(word));
    if has("XSHA256") {
        Method::XSha256
    } else if has("XMD5") {
        Method::XMd5
    } else {
        Method::Size
    }
}

/// The first word of `text` that is `len` hex digits.
fn hex_word(text: &str, len: usize) -> Option<String> {
    text.split_whitespace()
        .find(|w| w.len() == len && w.bytes().all(|b| b.is_ascii_hexdigit()))
        .map(str::to_ascii_lowercase)
}

/// What a comparison found equal.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) enum Checked {
    /// The digests, with this algorithm.
    Digest {
        /// Its name, as HASH gives it (`SHA-256`).
        algo: &'static str,
        /// The digest, in hex.
        digest: String,
    },
    /// Only the sizes: the server offers no digest.
    Size(u64),
}

impl Checked {
    /// What to say when only the sizes could be compared: the check was weaker than asked
    /// for, so it is said even when quiet.
    pub(super) fn weak_note(&self, remote: &str) -> Option<String> {
        match self {
            Checked::Size(n) => Some(format!(
                "{remote}: the server offers no digest (HASH, XSHA256, XMD5); only the size was compared ({n} bytes)"
            )),
            Checked::Digest { .. } => None,
        }
    }
}

/// The server's FEAT lines, trimmed (none when it has no FEAT).
///
/// # Errors
/// Only transport errors.
pub(super) fn features(client: &mut FtpClient) -> Result<Vec<String>, ClientError> {
    let reply = client.command("FEAT")?;
    Ok(if reply.is_success() {
        reply
            .lines
            .iter()
            .skip(1)
            .map(|l| l.trim().to_owned())
            .collect()
    } else {
        Vec::new()
    })
}

/// Compares `local` with `remote` on the server, with the best digest its `features` offer.
///
/// # Errors
/// They differ, or the server or the local file cannot be read.
pub(super) fn compare(
    client: &mut FtpClient,
    features: &[String],
    remote: &str,
    local: &Path,
) -> Result<Checked, ShellError> {
    let refused =
        |reply| ShellError::about(format!("cannot verify {remote}"))(ClientError::Refused(reply));
    let (algo, theirs) = match method(features) {
        Method::Hash { algo, selected } => {
            if !selected {
                let reply = client.command(&format!("OPTS HASH {}", algo.name()))?;
                if reply.code != 200 {
                    return Err(refused(reply));
                }
            }
            let reply = client.command(&format!("HASH {remote}"))?;
            if reply.code != 213 {
                return Err(refused(reply));
            }
            // `213 <algo> <start>-<end> <hash> <path>`
            let hash = reply
                .text()
                .split_whitespace()
                .nth(2)
                .map(str::to_ascii_lowercase);
            (algo, hash)
        }
        found @ (Method::XSha256 | Method::XMd5) => {
            let (verb, algo, len) = if found == Method::XSha256 {
                ("XSHA256", HashAlgo::Sha256, 64)
            } else {
                ("XMD5", HashAlgo::Md5, 32)
            };
            let reply = client.command(&format!("{verb} {remote}"))?;
            if !reply.is_success() {
                return Err(refused(reply));
            }
            (algo, hex_word(reply.text(), len))
        }
        Method::Size => return compare_size(client, remote, local),
    };
    let theirs = theirs.ok_or_else(|| {
        ShellError::Message(format!(
            "cannot verify {remote}: the server's digest is unreadable"
        ))
    })?;
    let ours = File::open(local)
        .and_then(|mut file| algo.digest(&mut file))
        .map_err(|source| ClientError::Local {
            path: local.display().to_string(),
            source,
        })?;
    if ours != theirs {
        return Err(ShellError::Message(format!(
            "{remote}: verification failed: the {} digests differ (here {ours}, on the server {theirs})",
            algo.name()
        )));
    }
    Ok(Checked::Digest {
        algo: algo.name(),
        digest: ours,
    })
}

/// The fallback: the sizes must match.
fn compare_size(client: &mut FtpClient, remote: &str, local: &Path) -> Result<Checked, ShellError> {
    let ours = std::fs::metadata(local)
        .map_err(|source| ClientError::Local {
            path: local.display().to_string(),
            source,
        })?
        .len();
    let theirs = super::batch::remote_size(client, remote)?.ok_or_else(|| {
        ShellError::Message(format!(
            "cannot verify {remote}: the server offers no digest and no SIZE"
        ))
    })?;
    if ours != theirs {
        return Err(ShellError::Message(format!(
            "{remote}: verification failed: {ours} bytes here, {theirs} on the server"
        )));
    }
    Ok(Checked::Size(ours))
}

impl Shell {
    /// Compares `local` with `remote` on the server; says how it was compared.
    ///
    /// # Errors
    /// They differ, or the server or the local file cannot be read.
    pub(super) fn verify(&mut self, remote: &str, local: &Path) -> Result<(), ShellError> {
        let client = self.client()?;
        let features = features(client)?;
        let checked = compare(client, &features, remote, local)?;
        match &checked {
            Checked::Digest { algo, digest } => {
                self.say(format_args!("{remote}: {algo} verified ({digest})."));
            }
            Checked::Size(_) => {
                if let Some(note) = checked.weak_note(remote) {
                    eprintln!("ferry: {note}");
                }
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn feat(lines: &[&str]) -> Vec<String> {
        lines.iter().map(|l| format!(" {l}")).collect()
    }

    #[test]
    fn the_best_digest_the_server_offers() {
        assert_eq!(
            method(&feat(&["MDTM", "HASH SHA-1;SHA-256*;MD5", "SIZE"])),
            Method::Hash {
                algo: HashAlgo::Sha256,
                selected: true
            }
        );
        assert_eq!(
            method(&feat(&["HASH SHA-1*;MD5"])),
            Method::Hash {
                algo: HashAlgo::Sha1,
                selected: true
            }
        );
        assert_eq!(
            method(&feat(&["HASH CRC32*;SHA-512"])),
            Method::Hash {
                algo: HashAlgo::Sha512,
                selected: false
            }
        );
        assert_eq!(method(&feat(&["XMD5", "XSHA256"])), Method::XSha256);
        assert_eq!(method(&feat(&["XMD5"])), Method::XMd5);
        assert_eq!(method(&feat(&["HASH FOO*", "SIZE"])), Method::Size);
        assert_eq!(method(&[]), Method::Size);
    }

    #[test]
    fn digests_are_read_from_any_reply_shape() {
        let sha = "a".repeat(64);
        assert_eq!(hex_word(&format!("{sha} /f.txt"), 64), Some(sha.clone()));
        assert_eq!(
            hex_word(&format!("/f.txt {}", sha.to_uppercase()), 64),
            Some(sha)
        );
        assert_eq!(hex_word("no digest here", 32), None);
    }
}
