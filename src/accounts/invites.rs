//! Invitation codes for `registration = "invite"`, behind the [`InviteStore`] trait: one file
//! per code, `invites/<code>.json`, with the uses left ([`JsonInviteStore`]), or a table of the
//! cluster's database ([`PgInviteStore`](crate::accounts::PgInviteStore)). `ferryd invite
//! create` makes them; `SITE REGISTER ... <code>` spends one use through
//! [`InviteStore::redeem`]. A code is 16 characters of `[a-z0-9]`, so it can name a file
//! safely; anything else is refused before it touches a path.

use std::fs;
use std::io;
use std::path::PathBuf;
use std::sync::Mutex;

use rand::Rng;
use serde::{Deserialize, Serialize};

use crate::json_file::TempFile;
use time::OffsetDateTime;
use time::format_description::well_known::Rfc3339;

/// Length of a generated code.
const CODE_LEN: usize = 16;
/// Characters of a code.
const ALPHABET: &[u8] = b"abcdefghijklmnopqrstuvwxyz0123456789";

/// One invitation code.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Invite {
    /// The code itself.
    pub code: String,
    /// Registrations it still allows.
    pub uses_left: u32,
    /// Creation time, RFC 3339 UTC.
    pub created: String,
}

/// Why a code was not accepted: unknown, malformed or used up look the same to the client.
#[derive(Debug, thiserror::Error)]
pub enum InviteError {
    /// 550: no such code, or no uses left.
    #[error("invalid or used-up invitation code")]
    Invalid,
    /// 451: the store failed.
    #[error("invitation store: {0}")]
    Io(#[from] io::Error),
}

/// Where invitation codes are kept. Redeeming is atomic: two registrations (on one server, or
/// on two nodes of a cluster) never spend the last use twice.
pub trait InviteStore: std::fmt::Debug + Send + Sync + 'static {
    /// Creates a new random code good for `uses` registrations.
    ///
    /// # Errors
    /// The code cannot be stored.
    fn create(&self, uses: u32) -> io::Result<Invite>;

    /// Every code, used up or not, sorted by creation time then code.
    ///
    /// # Errors
    /// The codes cannot be read.
    fn list(&self) -> io::Result<Vec<Invite>>;

    /// Spends one use of `code`.
    ///
    /// # Errors
    /// [`InviteError::Invalid`] for a malformed, unknown or used-up code; an I/O error.
    fn redeem(&self, code: &str) -> Result<(), InviteError>;

    /// Gives one use back (the registration it was spent on failed afterwards); a failure is
    /// logged.
    fn refund(&self, code: &str);
}

/// A new random code good for `uses` registrations, created now.
pub(crate) fn new_invite(uses: u32) -> Invite {
    let code: String = (0..CODE_LEN)
        .map(|_| char::from(ALPHABET[rand::thread_rng().gen_range(0..ALPHABET.len())]))
        .collect();
    let created = OffsetDateTime::now_utc()
        .replace_nanosecond(0)
        .ok()
        .and_then(|t| t.format(&Rfc3339).ok())
        .unwrap_or_default();
    Invite {
        code,
        uses_left: uses,
        created,
    }
}

/// The codes in one directory. Redeeming is serialised by a mutex, so two registrations can
/// never spend the last use twice within one server.
#[derive(Debug)]
pub struct JsonInviteStore {
    dir: PathBuf,
    lock: Mutex<()>,
}

/// Whether `code` can be a code at all (and so name a file).
pub(crate) fn valid(code: &str) -> bool {
    !code.is_empty() && code.len() <= 64 && code.bytes().all(|b| ALPHABET.contains(&b))
}

impl JsonInviteStore {
    /// A store over `dir`, created (mode 0700) if missing.
    ///
    /// # Errors
    /// The directory cannot be created.
    pub fn new(dir: PathBuf) -> io::Result<JsonInviteStore> {
        use std::os::unix::fs::DirBuilderExt;
        fs::DirBuilder::new()
            .recursive(true)
            .mode(0o700)
            .create(&dir)?;
        Ok(JsonInviteStore {
            dir,
            lock: Mutex::new(()),
        })
    }

    fn path(&self, code: &str) -> PathBuf {
        self.dir.join(format!("{code}.json"))
    }

    fn write(&self, invite: &Invite) -> io::Result<()> {
        let json = serde_json::to_vec_pretty(invite).map_err(io::Error::other)?;
        let temp = TempFile {
            mode: 0o600,
            sync: true,
        };
        temp.replace(&self.dir, &invite.code, &json, &self.path(&invite.code))
    }

    fn read(&self, code: &str) -> io::Result<Option<Invite>> {
        match fs::read(self.path(code)) {
            Ok(bytes) => serde_json::from_slice(&bytes)
                .map(Some)
                .map_err(|e| io::Error::new(io::ErrorKind::InvalidData, e)),
            Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(None),
            Err(e) => Err(e),
        }
    }
}

impl InviteStore for JsonInviteStore {
    fn create(&self, uses: u32) -> io::Result<Invite> {
        let invite = new_invite(uses);
        self.write(&invite)?;
        Ok(invite)
    }

    fn list(&self) -> io::Result<Vec<Invite>> {
        let mut invites = Vec::new();
        for entry in fs::read_dir(&self.dir)? {
            let name = entry?.file_name();
            let Some(code) = name.to_str().and_then(|n| n.strip_suffix(".json")) else {
                continue;
            };
            if valid(code)
                && let Some(invite) = self.read(code)?
            {
                invites.push(invite);
            }
        }
        invites.sort_by(|a, b| (&a.created, &a.code).cmp(&(&b.created, &b.code)));
        Ok(invites)
    }

    fn redeem(&self, code: &str) -> Result<(), InviteError> {
        if !valid(code) {
            return Err(InviteError::Invalid);
        }
        let _guard = self.lock.lock().unwrap_or_else(|e| e.into_inner());
        let mut invite = self.read(code)?.ok_or(InviteError::Invalid)?;
        if invite.uses_left == 0 {
            return Err(InviteError::Invalid);
        }
        invite.uses_left -= 1;
        self.write(&invite)?;
        Ok(())
    }

    fn refund(&self, code: &str) {
        let _guard = self.lock.lock().unwrap_or_else(|e| e.into_inner());
        let result = self.read(code).and_then(|invite| match invite {
            Some(mut invite) => {
                invite.uses_left += 1;
                self.write(&invite)
            }
            None => Ok(()),
        });
        if let Err(e) = result {
            log::error!("cannot give back a use of an invitation code: {e}");
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn codes_are_spent_and_used_up() {
        let dir = tempfile::tempdir().expect("tempdir");
        let store = JsonInviteStore::new(dir.path().join("invites")).expect("store");
        let two = store.create(2).expect("create");
        assert_eq!(two.code.len(), CODE_LEN);
        assert!(valid(&two.code));
        let one = store.create(1).expect("create");
        assert_ne!(one.code, two.code);

        store.redeem(&two.code).expect("first use");
        store.redeem(&two.code).expect("second use");
        assert!(matches!(store.redeem(&two.code), Err(InviteError::Invalid)));
        store.refund(&two.code);
        store.redeem(&two.code).expect("refunded use");

        for bad in ["", "nope", "../etc/passwd", "ABC", &"a".repeat(65)] {
            assert!(
                matches!(store.redeem(bad), Err(InviteError::Invalid)),
                "{bad:?}"
            );
        }
        let listed = store.list().expect("list");
        assert_eq!(listed.len(), 2);
        let left: u32 = listed.iter().map(|i| i.uses_left).sum();
        assert_eq!(left, 1);
    }

    #[test]
    fn concurrent_redeems_spend_each_use_once() {
        let dir = tempfile::tempdir().expect("tempdir");
        let store =
            std::sync::Arc::new(JsonInviteStore::new(dir.path().to_owned()).expect("store"));
        let code = store.create(3).expect("create").code;
        let threads: Vec<_> = (0..8)
            .map(|_| {
                let store = std::sync::Arc::clone(&store);
                let code = code.clone();
                std::thread::spawn(move || store.redeem(&code).is_ok())
            })
            .collect();
        let ok = threads
            .into_iter()
            .map(|t| t.join().expect("thread"))
            .filter(|ok| *ok)
            .count();
        assert_eq!(ok, 3);
    }
}
