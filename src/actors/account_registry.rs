//! Accounts: the [`AccountRegistry`] actor (register, authenticate, change password), its
//! messages, the [`AccountStore`] backend trait with its JSON-file implementation, and
//! [`AuthError`].
//!
//! PBKDF2 is CPU-heavy, so the registry runs on a `SyncArbiter`, never on a session thread.
//! Account names are validated by [`UserName`] before they can touch a path.
//!
//! Every failed check costs the same work, whatever the name: unknown names are hashed with,
//! and wrong passwords of accounts with fewer rounds are padded up to, the highest round
//! count among the setting and the stored accounts; a successful login re-hashes a password
//! stored with another count. A name stays taken while a deleted account's files remain
//! ([`Remains`]), so registration never hands a home or a usage ledger to a stranger.

use std::fmt;
use std::fs::{self, File};
use std::io;
use std::net::IpAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::Instant;

use actix::{Actor, Addr, Handler, Message, SyncArbiter, SyncContext};
use password_hash::rand_core::OsRng;
use password_hash::{PasswordHash, PasswordHasher, PasswordVerifier, SaltString};
use pbkdf2::{Algorithm, Params, Pbkdf2};
use serde::{Deserialize, Serialize};
use time::OffsetDateTime;
use time::format_description::well_known::Rfc3339;

use crate::actors::invites::{InviteError, InviteStore};
use crate::codec::Password;
use crate::config::{Quota, Registration};
use crate::json_file::TempFile;
use crate::state::SharedState;

/// Longest account name, in bytes (all allowed characters are ASCII).
const MAX_NAME_LEN: usize = 32;

/// Names clients use for anonymous access (RFC 1635); never account names, so turning
/// anonymous access on can never capture an account.
pub const RESERVED_NAMES: [&str; 2] = ["anonymous", "ftp"];

/// The name rule in words, for people choosing a name.
pub const NAME_RULE: &str = "1-32 of a-z 0-9 . _ -, starting with a letter or digit";

/// A validated account name: `[a-z0-9][a-z0-9._-]{0,31}`. Anything else is refused before it
/// touches a path.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(try_from = "String")]
pub struct UserName(String);

impl UserName {
    /// Checks `s` against the name rule.
    ///
    /// # Errors
    /// [`AuthError::BadName`] if `s` is empty, longer than 32 bytes, or has a character outside
    /// `[a-z0-9._-]` (or starts with `.`, `_` or `-`), or is one of the names reserved for
    /// anonymous access (`anonymous`, `ftp`).
    pub fn parse(s: &str) -> Result<UserName, AuthError> {
        if RESERVED_NAMES.contains(&s) {
            return Err(AuthError::BadName);
        }
        let mut bytes = s.bytes();
        let first_ok = bytes
            .next()
            .is_some_and(|b| b.is_ascii_lowercase() || b.is_ascii_digit());
        let rest_ok = bytes.all(|b| {
            b.is_ascii_lowercase() || b.is_ascii_digit() || matches!(b, b'.' | b'_' | b'-')
        });
        if first_ok && rest_ok && s.len() <= MAX_NAME_LEN {
            Ok(UserName(s.to_owned()))
        } else {
            Err(AuthError::BadName)
        }
    }

    /// The name as text.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl TryFrom<String> for UserName {
    type Error = AuthError;

    fn try_from(s: String) -> Result<Self, Self::Error> {
        UserName::parse(&s)
    }
}

impl fmt::Display for UserName {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// Stored per account, as `accounts/<name>.json`.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct AccountRecord {
    /// The account name; must match the file name.
    pub name: UserName,
    /// PHC string: `$pbkdf2-sha256$i=<rounds>,l=32$<salt>$<hash>`.
    pub hash: String,
    /// Creation time, RFC 3339 UTC.
    pub created: String,
    /// A disabled account cannot log in; it fails exactly like a wrong password.
    pub disabled: bool,
    /// A read-only account may list and download but every write is refused (550).
    #[serde(default)]
    pub read_only: bool,
    /// Byte and file limits; none (unlimited) when absent.
    #[serde(default, skip_serializing_if = "Quota::is_unlimited")]
    pub quota: Quota,
}

impl AccountRecord {
    /// A new, enabled account created now.
    pub fn new(name: UserName, hash: String) -> AccountRecord {
        let created = OffsetDateTime::now_utc()
            .replace_nanosecond(0)
            .ok()
            .and_then(|t| t.format(&Rfc3339).ok())
            // Formatting a UTC time as RFC 3339 cannot fail for years 0..=9999.
            .unwrap_or_default();
        AccountRecord {
            name,
            hash,
            created,
            disabled: false,
            read_only: false,
            quota: Quota::default(),
        }
    }
}

/// What a session gets after a successful login or registration.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Account {
    /// The logged-in account.
    pub name: UserName,
    /// Writes are refused.
    pub read_only: bool,
}

/// Why an account request failed. Each variant names the FTP reply code it becomes (the
/// session's reply table sends it).
#[derive(Debug, thiserror::Error)]
pub enum AuthError {
    /// 501: the name breaks the name rule.
    #[error("bad user name: use {NAME_RULE}")]
    BadName,
    /// 501: the password is shorter than the minimum or contains control characters.
    #[error("password too short or contains control characters")]
    WeakPassword,
    /// 550: an account of that name exists.
    #[error("user name already taken")]
    NameTaken,
    /// 550: self-registration is closed on this server.
    #[error("registration is closed")]
    RegistrationClosed,
    /// 501: registration needs an invitation code and none was given.
    #[error("an invitation code is required")]
    InviteRequired,
    /// 550: the invitation code is unknown or used up.
    #[error("invalid or used-up invitation code")]
    BadInvite,
    /// 550: this client address registered too many accounts within the last hour.
    #[error("too many registrations from this address; try again later")]
    TooManyRegistrations,
    /// 530: unknown user, wrong password or disabled account, deliberately indistinguishable
    /// so that nobody learns which names exist.
    #[error("login incorrect")]
    WrongCredentials,
    /// 451: an account file that does not parse.
    #[error("corrupt account data: {0}")]
    Corrupt(String),
    /// 451: the store failed.
    #[error("account store: {0}")]
    Io(#[from] io::Error),
}

/// Checks a new password: at least `min_length` characters and no control characters (they
/// cannot be typed reliably and could corrupt a command line).
///
/// # Errors
/// [`AuthError::WeakPassword`].
pub fn check_password(password: &Password, min_length: usize) -> Result<(), AuthError> {
    let secret = password.expose();
    if secret.chars().count() < min_length || secret.chars().any(char::is_control) {
        return Err(AuthError::WeakPassword);
    }
    Ok(())
}

/// Hashes a password as a PBKDF2-HMAC-SHA256 PHC string with a fresh random salt.
///
/// # Errors
/// [`AuthError::Corrupt`] if the hasher refuses the parameters (e.g. zero iterations).
pub fn hash_password(password: &Password, iterations: u32) -> Result<String, AuthError> {
    let salt = SaltString::generate(&mut OsRng);
    let params = Params {
        rounds: iterations,
        output_length: 32,
    };
    Pbkdf2
        .hash_password_customized(
            password.expose().as_bytes(),
            Some(Algorithm::Pbkdf2Sha256.ident()),
            None,
            params,
            &salt,
        )
        .map(|hash| hash.to_string())
        .map_err(|e| AuthError::Corrupt(format!("cannot hash password: {e}")))
}

/// Checks a password against a PHC string in constant time. The iteration count and salt come
/// from the PHC string, so hashes made with other counts keep working. A PHC string that does
/// not parse never matches.
pub fn verify_password(phc: &str, password: &Password) -> bool {
    PasswordHash::new(phc).is_ok_and(|hash| {
        Pbkdf2
            .verify_password(password.expose().as_bytes(), &hash)
            .is_ok()
    })
}

/// The PBKDF2 round count of a PHC string; `None` if it does not parse.
pub fn hash_rounds(phc: &str) -> Option<u32> {
    let hash = PasswordHash::new(phc).ok()?;
    hash.params.get_decimal("i")
}

/// Where a deleted account's files may remain: its home (`homes/<name>`) and its usage ledger
/// (`usage/<name>.json`). While either exists the name is not free: `ferryd user del --purge`
/// removes them, `ferryd user add --adopt-home` gives them to a new account explicitly.
#[derive(Debug, Clone)]
pub struct Remains {
    homes: PathBuf,
    usage: PathBuf,
}

impl Remains {
    /// Remains under the given home and usage-ledger directories.
    pub fn new(homes: PathBuf, usage: PathBuf) -> Remains {
        Remains { homes, usage }
    }

    /// The remaining paths of `name` (empty when there are none). A symbolic link counts as
    /// remaining too.
    ///
    /// # Errors
    /// A path cannot be checked.
    pub fn of(&self, name: &UserName) -> io::Result<Vec<PathBuf>> {
        let candidates = [
            self.homes.join(name.as_str()),
            self.usage.join(format!("{name}.json")),
        ];
        let mut found = Vec::new();
        for path in candidates {
            match fs::symlink_metadata(&path) {
                Ok(_) => found.push(path),
                Err(e) if e.kind() == io::ErrorKind::NotFound => {}
                Err(e) => return Err(e),
            }
        }
        Ok(found)
    }
}

/// Object-safe account backend (used as `Arc<dyn AccountStore>`), so a SQL store can come
/// later. Implementations are called from several registry threads at once.
pub trait AccountStore: Send + Sync + 'static {
    /// The account of that name, or `None`.
    ///
    /// # Errors
    /// [`AuthError::Corrupt`] for a record that does not parse, [`AuthError::Io`].
    fn load(&self, name: &UserName) -> Result<Option<AccountRecord>, AuthError>;

    /// Stores a new account; atomic even when two threads create one name at once.
    ///
    /// # Errors
    /// [`AuthError::NameTaken`] if the name exists, [`AuthError::Io`].
    fn create(&self, record: &AccountRecord) -> Result<(), AuthError>;

    /// Replaces an existing account atomically.
    ///
    /// # Errors
    /// [`AuthError::Io`] (kind `NotFound` if the account does not exist).
    fn update(&self, record: &AccountRecord) -> Result<(), AuthError>;

    /// Removes an account; `false` if there was none.
    ///
    /// # Errors
    /// [`AuthError::Io`].
    fn delete(&self, name: &UserName) -> Result<bool, AuthError>;

    /// Every account, sorted by name.
    ///
    /// # Errors
    /// [`AuthError::Corrupt`] for a record that does not parse, [`AuthError::Io`].
    fn list(&self) -> Result<Vec<AccountRecord>, AuthError>;
}

/// The quota ledger's view of the accounts: each account's limits, read fresh from the store
/// (so `ferryd user quota NAME --bytes N` applies at once); unlimited for unknown names and
/// unreadable records.
pub struct AccountLimits(pub Arc<dyn AccountStore>);

impl crate::quota::LimitSource for AccountLimits {
    fn limits(&self, user: &str) -> Quota {
        UserName::parse(user)
            .ok()
            .and_then(|name| self.0.load(&name).ok().flatten())
            .map(|record| record.quota)
            .unwrap_or_default()
    }
}

/// Accounts as `<dir>/<name>.json`, mode 0600, written atomically (temp file, fsync, link or
/// rename, directory fsync).
#[derive(Debug)]
pub struct JsonAccountStore {
    dir: PathBuf,
}

impl JsonAccountStore {
    /// A store over `dir`, creating it (mode 0700) if missing.
    ///
    /// # Errors
    /// The directory cannot be created.
    pub fn new(dir: PathBuf) -> io::Result<Self> {
        use std::os::unix::fs::DirBuilderExt;
        fs::DirBuilder::new()
            .recursive(true)
            .mode(0o700)
            .create(&dir)?;
        Ok(JsonAccountStore { dir })
    }

    fn path(&self, name: &UserName) -> PathBuf {
        self.dir.join(format!("{name}.json"))
    }

    /// Writes `record` to a fresh temp file beside its final path and fsyncs it.
    fn write_temp(&self, record: &AccountRecord) -> Result<PathBuf, AuthError> {
        let mut json = serde_json::to_vec_pretty(record)
            .map_err(|e| AuthError::Corrupt(format!("cannot serialise {}: {e}", record.name)))?;
        json.push(b'\n');
        let temp = TempFile {
            mode: 0o600,
            sync: true,
        };
        Ok(temp.write(&self.dir, record.name.as_str(), &json)?)
    }

    /// Makes a link, rename or removal in the directory durable.
    fn sync_dir(&self) -> io::Result<()> {
        File::open(&self.dir)?.sync_all()
    }

    fn read(
        &self,
        path: &Path,
        name: Option<&UserName>,
    ) -> Result<Option<AccountRecord>, AuthError> {
        let bytes = match fs::read(path) {
            Ok(bytes) => bytes,
            Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(None),
            Err(e) => return Err(e.into()),
        };
        let record: AccountRecord = serde_json::from_slice(&bytes)
            .map_err(|e| AuthError::Corrupt(format!("{}: {e}", path.display())))?;
        if name.is_some_and(|name| *name != record.name) {
            return Err(AuthError::Corrupt(format!(
                "{}: holds account {:?}",
                path.display(),
                record.name.as_str()
            )));
        }
        Ok(Some(record))
    }
}

impl AccountStore for JsonAccountStore {
    fn load(&self, name: &UserName) -> Result<Option<AccountRecord>, AuthError> {
        self.read(&self.path(name), Some(name))
    }

    fn create(&self, record: &AccountRecord) -> Result<(), AuthError> {
        let tmp = self.write_temp(record)?;
        // hard_link fails with AlreadyExists if the name exists: an atomic create-if-absent,
        // which rename (it replaces) is not.
        let linked = fs::hard_link(&tmp, self.path(&record.name));
        if let Err(e) = fs::remove_file(&tmp) {
            // The account itself is fine (or was never made); a stray temp file is harmless.
            log::warn!("cannot remove {}: {e}", tmp.display());
        }
        match linked {
            Err(e) if e.kind() == io::ErrorKind::AlreadyExists => Err(AuthError::NameTaken),
            Err(e) => Err(e.into()),
            Ok(()) => Ok(self.sync_dir()?),
        }
    }

    fn update(&self, record: &AccountRecord) -> Result<(), AuthError> {
        let path = self.path(&record.name);
        if !path.try_exists()? {
            return Err(io::Error::new(
                io::ErrorKind::NotFound,
                format!("no account {}", record.name),
            )
            .into());
        }
        let tmp = self.write_temp(record)?;
        if let Err(e) = fs::rename(&tmp, &path) {
            let _ = fs::remove_file(&tmp);
            return Err(e.into());
        }
        Ok(self.sync_dir()?)
    }

    fn delete(&self, name: &UserName) -> Result<bool, AuthError> {
        match fs::remove_file(self.path(name)) {
            Ok(()) => {
                self.sync_dir()?;
                Ok(true)
            }
            Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(false),
            Err(e) => Err(e.into()),
        }
    }

    fn list(&self) -> Result<Vec<AccountRecord>, AuthError> {
        let mut records = Vec::new();
        for entry in fs::read_dir(&self.dir)? {
            let path = entry?.path();
            // Temp files end in `.tmp-<hex>`, so only finished records match.
            let Some(stem) = path
                .file_name()
                .and_then(|f| f.to_str())
                .and_then(|f| f.strip_suffix(".json"))
            else {
                continue;
            };
            let Ok(name) = UserName::parse(stem) else {
                log::warn!("ignoring {}: not a valid account name", path.display());
                continue;
            };
            if let Some(record) = self.read(&path, Some(&name))? {
                records.push(record);
            }
        }
        records.sort_by(|a, b| a.name.cmp(&b.name));
        Ok(records)
    }
}

/// Account policy for the registry.
#[derive(Debug, Clone)]
pub struct RegistrySettings {
    /// PBKDF2 rounds for new hashes (and at least what a failed check of any name costs).
    pub iterations: u32,
    /// Shortest password accepted, in characters.
    pub min_password_length: usize,
    /// Whether [`Register`] is accepted, and whether it needs an invitation code.
    pub registration: Registration,
    /// Limits given to new accounts.
    pub default_quota: Quota,
    /// Registrations one client address may make within an hour.
    pub max_registrations_per_ip_per_hour: u32,
    /// Where invitation codes live (needed for [`Registration::Invite`]).
    pub invites: Option<Arc<InviteStore>>,
    /// Files of deleted accounts, which keep their names taken.
    pub remains: Remains,
    /// Where registrations per address are counted (shared by the nodes of a cluster).
    pub state: Arc<dyn SharedState>,
}

/// State shared read-only by every registry thread.
struct Shared {
    store: Arc<dyn AccountStore>,
    settings: RegistrySettings,
    /// Rounds every failed check costs: the highest of the setting and of every account seen
    /// (at start and on each load since), so no failure reveals whether the name exists.
    rounds: AtomicU32,
}

/// Registers and authenticates accounts. Runs on a `SyncArbiter` with several threads, so one
/// login never waits for another's hashing and no session thread ever hashes.
pub struct AccountRegistry {
    shared: Arc<Shared>,
}

impl Actor for AccountRegistry {
    type Context = SyncContext<Self>;
}

impl AccountRegistry {
    /// Starts `threads` registry threads over `store`. Must be called inside a running actix
    /// `System`. Reads every account once, for the highest round count stored.
    pub fn start(
        store: Arc<dyn AccountStore>,
        settings: RegistrySettings,
        threads: usize,
    ) -> Addr<AccountRegistry> {
        let stored = match store.list() {
            Ok(records) => records
                .iter()
                .filter_map(|r| hash_rounds(&r.hash))
                .max()
                .unwrap_or(0),
            Err(e) => {
                log::warn!("cannot read the accounts' round counts: {e}");
                0
            }
        };
        let rounds = AtomicU32::new(stored.max(settings.iterations).max(1));
        let shared = Arc::new(Shared {
            store,
            settings,
            rounds,
        });
        SyncArbiter::start(threads.max(1), move || AccountRegistry {
            shared: Arc::clone(&shared),
        })
    }

    /// Verifies `password` for `name`; every failure costs the same rounds (`Shared::rounds`).
    fn check(&self, name: &str, password: &Password) -> Result<AccountRecord, AuthError> {
        let record = match UserName::parse(name) {
            Ok(name) => self.shared.store.load(&name)?,
            Err(_) => None,
        };
        let rounds = record.as_ref().and_then(|r| hash_rounds(&r.hash));
        let most = self
            .shared
            .rounds
            .fetch_max(rounds.unwrap_or(0), Ordering::Relaxed)
            .max(rounds.unwrap_or(0));
        match record {
            Some(record) if verify_password(&record.hash, password) && !record.disabled => {
                Ok(self.rehashed(record, password, rounds))
            }
            _ => {
                // The rest of the work a check by the highest count would have cost; the
                // whole of it for an unknown name. The result is thrown away.
                let rest = most.saturating_sub(rounds.unwrap_or(0));
                if rest > 0 {
                    let _ = hash_password(password, rest);
                }
                Err(AuthError::WrongCredentials)
            }
        }
    }

    /// A record whose hash has another round count than the setting, hashed again with the
    /// setting now that the password is known; the old hash stays if storing fails.
    fn rehashed(
        &self,
        mut record: AccountRecord,
        password: &Password,
        rounds: Option<u32>,
    ) -> AccountRecord {
        let wanted = self.shared.settings.iterations;
        if rounds == Some(wanted) {
            return record;
        }
        let old = std::mem::take(&mut record.hash);
        let stored = hash_password(password, wanted).and_then(|hash| {
            record.hash = hash;
            self.shared.store.update(&record)
        });
        if let Err(e) = stored {
            log::warn!("cannot re-hash the password of {}: {e}", record.name);
            record.hash = old;
        }
        record
    }
}

/// Creates an account (`SITE REGISTER`); the session is logged in as it on success.
#[derive(Debug, Message)]
#[rtype(result = "Result<Account, AuthError>")]
pub struct Register {
    /// Requested name, not yet validated.
    pub name: String,
    /// Requested password.
    pub password: Password,
    /// The invitation code (needed when registration is by invitation).
    pub code: Option<String>,
    /// The client's address, for the hourly cap per address.
    pub peer: IpAddr,
}

impl Handler<Register> for AccountRegistry {
    type Result = Result<Account, AuthError>;

    fn handle(&mut self, msg: Register, _: &mut Self::Context) -> Self::Result {
        let settings = &self.shared.settings;
        let invites = match (settings.registration, &settings.invites) {
            (Registration::Closed, _) | (Registration::Invite, None) => {
                return Err(AuthError::RegistrationClosed);
            }
            (Registration::Open, _) => None,
            (Registration::Invite, Some(invites)) => {
                let code = msg.code.as_deref().ok_or(AuthError::InviteRequired)?;
                Some((invites, code))
            }
        };
        let name = UserName::parse(&msg.name)?;
        check_password(&msg.password, settings.min_password_length)?;
        let now = Instant::now();
        let max = settings.max_registrations_per_ip_per_hour;
        let taken = settings
            .state
            .take_registration(msg.peer, now, max)
            .map_err(|e| AuthError::Io(io::Error::other(e)))?;
        if !taken {
            return Err(AuthError::TooManyRegistrations);
        }
        let created = self.create(name, &msg.password, invites);
        if created.is_err() {
            settings.state.give_back_registration(msg.peer, now);
        }
        created
    }
}

impl AccountRegistry {
    /// The part of [`Register`] after the cheap checks: spend the code, hash, store.
    fn create(
        &self,
        name: UserName,
        password: &Password,
        invite: Option<(&Arc<InviteStore>, &str)>,
    ) -> Result<Account, AuthError> {
        let settings = &self.shared.settings;
        // In invite mode the code is checked first: without a valid one, nobody learns
        // whether a name is taken (same reply, same cost).
        if let Some((invites, code)) = invite {
            invites.redeem(code).map_err(|e| match e {
                InviteError::Invalid => AuthError::BadInvite,
                InviteError::Io(e) => AuthError::Io(e),
            })?;
        }
        let refund = || {
            if let Some((invites, code)) = invite {
                invites.refund(code);
            }
        };
        // Cheap early refusal; create() still decides races between registrations atomically.
        let free = match self.shared.store.load(&name) {
            Ok(None) => self.shared.settings.remains.of(&name).map(|left| {
                if !left.is_empty() {
                    log::info!("{name} not registered: a deleted account's files remain");
                }
                left.is_empty()
            }),
            Ok(Some(_)) => Ok(false),
            Err(AuthError::Io(e)) => Err(e),
            // A corrupt record still holds its name.
            Err(_) => Ok(false),
        };
        match free {
            Ok(true) => {}
            Ok(false) => {
                refund();
                return Err(AuthError::NameTaken);
            }
            Err(e) => {
                refund();
                return Err(e.into());
            }
        }
        let mut record = match hash_password(password, settings.iterations) {
            Ok(hash) => AccountRecord::new(name.clone(), hash),
            Err(e) => {
                refund();
                return Err(e);
            }
        };
        record.quota = settings.default_quota;
        if let Err(e) = self.shared.store.create(&record) {
            refund();
            return Err(e);
        }
        Ok(Account {
            name,
            read_only: false,
        })
    }
}

/// Checks a login (`USER` + `PASS`).
#[derive(Debug, Message)]
#[rtype(result = "Result<Account, AuthError>")]
pub struct Authenticate {
    /// Name as the client sent it, not yet validated.
    pub name: String,
    /// Password as the client sent it.
    pub password: Password,
}

impl Handler<Authenticate> for AccountRegistry {
    type Result = Result<Account, AuthError>;

    fn handle(&mut self, msg: Authenticate, _: &mut Self::Context) -> Self::Result {
        self.check(&msg.name, &msg.password).map(|record| Account {
            name: record.name,
            read_only: record.read_only,
        })
    }
}

/// Changes a logged-in user's password (`SITE PASSWD`); the old one must be given again.
#[derive(Debug, Message)]
#[rtype(result = "Result<(), AuthError>")]
pub struct ChangePassword {
    /// The account.
    pub name: UserName,
    /// Current password.
    pub old: Password,
    /// New password; must pass the password rule.
    pub new: Password,
}

impl Handler<ChangePassword> for AccountRegistry {
    type Result = Result<(), AuthError>;

    fn handle(&mut self, msg: ChangePassword, _: &mut Self::Context) -> Self::Result {
        let mut record = self.check(msg.name.as_str(), &msg.old)?;
        let settings = &self.shared.settings;
        check_password(&msg.new, settings.min_password_length)?;
        record.hash = hash_password(&msg.new, settings.iterations)?;
        self.shared.store.update(&record)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::Config;
    use crate::state::LocalState;
    use std::sync::Barrier;

    const ITER: u32 = 1000;

    fn pw(s: &str) -> Password {
        Password::new(s)
    }

    #[test]
    fn name_rule() {
        let long_ok = "a".repeat(32);
        for ok in ["a", "alice", "a.b-c_d", "0", long_ok.as_str()] {
            assert!(UserName::parse(ok).is_ok(), "{ok:?} should be valid");
        }
        let long_bad = "a".repeat(33);
        for bad in [
            "",
            "Alice",
            "-a",
            ".a",
            "_a",
            "a/b",
            "..",
            long_bad.as_str(),
            "a b",
            "ä",
            "a\0",
        ] {
            assert!(
                matches!(UserName::parse(bad), Err(AuthError::BadName)),
                "{bad:?} should be refused"
            );
        }
    }

    #[test]
    fn user_name_deserialisation_applies_the_rule() {
        assert!(serde_json::from_str::<UserName>("\"alice\"").is_ok());
        assert!(serde_json::from_str::<UserName>("\"../etc\"").is_err());
    }

    #[test]
    fn password_rule() {
        assert!(check_password(&pw("12345678"), 8).is_ok());
        assert!(check_password(&pw("äöüäöüäö"), 8).is_ok());
        assert!(check_password(&pw("1234567"), 8).is_err());
        assert!(check_password(&pw("1234\n5678"), 8).is_err());
        assert!(check_password(&pw("1234\u{7f}5678"), 8).is_err());
    }

    #[test]
    fn hash_round_trip() {
        let phc = hash_password(&pw("correct horse"), ITER).expect("hash");
        assert!(phc.starts_with("$pbkdf2-sha256$i=1000,l=32$"), "{phc}");
        assert!(verify_password(&phc, &pw("correct horse")));
        assert!(!verify_password(&phc, &pw("correct horsE")));
        assert!(!verify_password("not a phc", &pw("correct horse")));
        // Salts are per hash.
        assert_ne!(
            phc,
            hash_password(&pw("correct horse"), ITER).expect("hash")
        );
    }

    #[test]
    fn other_iteration_counts_still_verify() {
        let phc = hash_password(&pw("s3cret-pass"), 2345).expect("hash");
        assert!(phc.contains("i=2345"));
        assert!(verify_password(&phc, &pw("s3cret-pass")));
    }

    fn record(name: &str) -> AccountRecord {
        AccountRecord::new(
            UserName::parse(name).expect("valid"),
            hash_password(&pw("password1"), ITER).expect("hash"),
        )
    }

    fn file_names(dir: &Path) -> Vec<String> {
        let mut names: Vec<String> = fs::read_dir(dir)
            .expect("read_dir")
            .map(|e| e.expect("entry").file_name().to_string_lossy().into_owned())
            .collect();
        names.sort();
        names
    }

    #[test]
    fn json_store_crud() {
        use std::os::unix::fs::PermissionsExt;
        let dir = tempfile::tempdir().expect("tempdir");
        let store = JsonAccountStore::new(dir.path().join("accounts")).expect("store");
        let bob = record("bob");
        let alice = record("alice");
        store.create(&bob).expect("create bob");
        store.create(&alice).expect("create alice");
        assert!(matches!(store.create(&bob), Err(AuthError::NameTaken)));

        let loaded = store.load(&alice.name).expect("load").expect("present");
        assert_eq!(loaded.hash, alice.hash);
        assert!(!loaded.disabled);
        let mode = fs::metadata(dir.path().join("accounts/alice.json"))
            .expect("meta")
            .permissions()
            .mode();
        assert_eq!(mode & 0o777, 0o600);

        let mut changed = loaded.clone();
        changed.disabled = true;
        store.update(&changed).expect("update");
        assert!(
            store
                .load(&alice.name)
                .expect("load")
                .expect("present")
                .disabled
        );

        let names: Vec<String> = store
            .list()
            .expect("list")
            .into_iter()
            .map(|r| r.name.to_string())
            .collect();
        assert_eq!(names, ["alice", "bob"]);

        assert!(store.delete(&bob.name).expect("delete"));
        assert!(!store.delete(&bob.name).expect("delete again"));
        assert!(store.load(&bob.name).expect("load").is_none());
        assert!(store.update(&bob).is_err());
        assert_eq!(file_names(&dir.path().join("accounts")), ["alice.json"]);
    }

    #[test]
    fn corrupt_record_is_reported() {
        let dir = tempfile::tempdir().expect("tempdir");
        let store = JsonAccountStore::new(dir.path().to_owned()).expect("store");
        fs::write(dir.path().join("eve.json"), "{not json").expect("write");
        let eve = UserName::parse("eve").expect("valid");
        let err = store.load(&eve).expect_err("corrupt");
        assert!(matches!(err, AuthError::Corrupt(_)));
    }

    #[test]
    fn concurrent_create_has_one_winner() {
        let dir = tempfile::tempdir().expect("tempdir");
        let store = Arc::new(JsonAccountStore::new(dir.path().to_owned()).expect("store"));
        let barrier = Arc::new(Barrier::new(8));
        let threads: Vec<_> = (0..8)
            .map(|_| {
                let store = Arc::clone(&store);
                let barrier = Arc::clone(&barrier);
                let rec = record("race");
                std::thread::spawn(move || {
                    barrier.wait();
                    store.create(&rec)
                })
            })
            .collect();
        let results: Vec<_> = threads
            .into_iter()
            .map(|t| t.join().expect("thread"))
            .collect();
        assert_eq!(results.iter().filter(|r| r.is_ok()).count(), 1);
        assert!(
            results
                .iter()
                .all(|r| matches!(r, Ok(()) | Err(AuthError::NameTaken)))
        );
        assert_eq!(file_names(dir.path()), ["race.json"]);
    }

    fn registry(dir: &Path, registration_open: bool) -> Addr<AccountRegistry> {
        let store = Arc::new(JsonAccountStore::new(dir.to_owned()).expect("store"));
        let settings = RegistrySettings {
            iterations: ITER,
            min_password_length: 8,
            registration: if registration_open {
                Registration::Open
            } else {
                Registration::Closed
            },
            default_quota: Quota::default(),
            max_registrations_per_ip_per_hour: 100,
            invites: None,
            remains: Remains::new(dir.join("home"), dir.join("usage")),
            state: LocalState::shared(&Config::default()),
        };
        AccountRegistry::start(store, settings, 2)
    }

    fn register(name: &str, password: &str) -> Register {
        Register {
            name: name.into(),
            password: pw(password),
            code: None,
            peer: IpAddr::from([127, 0, 0, 1]),
        }
    }

    fn authenticate(name: &str, password: &str) -> Authenticate {
        Authenticate {
            name: name.into(),
            password: pw(password),
        }
    }

    #[actix::test]
    async fn register_then_authenticate() {
        let dir = tempfile::tempdir().expect("tempdir");
        let reg = registry(dir.path(), true);
        let account = reg
            .send(register("alice", "password1"))
            .await
            .expect("mailbox")
            .expect("registered");
        assert_eq!(account.name.as_str(), "alice");

        let again = reg
            .send(register("alice", "password2"))
            .await
            .expect("mailbox");
        assert!(matches!(again, Err(AuthError::NameTaken)));
        let weak = reg.send(register("bob", "short")).await.expect("mailbox");
        assert!(matches!(weak, Err(AuthError::WeakPassword)));
        let bad = reg
            .send(register("Bob", "password1"))
            .await
            .expect("mailbox");
        assert!(matches!(bad, Err(AuthError::BadName)));

        let ok = reg
            .send(authenticate("alice", "password1"))
            .await
            .expect("mailbox");
        assert_eq!(ok.expect("login").name, account.name);
        for (name, password) in [
            ("alice", "password2"),
            ("nobody", "password1"),
            ("../etc/passwd", "password1"),
        ] {
            let err = reg
                .send(authenticate(name, password))
                .await
                .expect("mailbox")
                .expect_err("must fail");
            assert!(matches!(err, AuthError::WrongCredentials), "{name}: {err}");
        }
    }

    #[actix::test]
    async fn closed_registration_and_disabled_accounts() {
        let dir = tempfile::tempdir().expect("tempdir");
        let store = JsonAccountStore::new(dir.path().to_owned()).expect("store");
        let mut carol = record("carol");
        carol.disabled = true;
        store.create(&carol).expect("create");

        let reg = registry(dir.path(), false);
        let closed = reg
            .send(register("dave", "password1"))
            .await
            .expect("mailbox")
            .expect_err("closed");
        assert!(matches!(closed, AuthError::RegistrationClosed));

        let disabled = reg
            .send(authenticate("carol", "password1"))
            .await
            .expect("mailbox");
        assert!(matches!(disabled, Err(AuthError::WrongCredentials)));
    }

    #[actix::test]
    async fn change_password() {
        let dir = tempfile::tempdir().expect("tempdir");
        let reg = registry(dir.path(), true);
        let alice = reg
            .send(register("alice", "password1"))
            .await
            .expect("mailbox")
            .expect("registered");
        let change = |old: &str, new: &str| ChangePassword {
            name: alice.name.clone(),
            old: pw(old),
            new: pw(new),
        };

        let wrong_old = reg
            .send(change("password9", "password2"))
            .await
            .expect("mailbox");
        assert!(matches!(wrong_old, Err(AuthError::WrongCredentials)));
        let weak = reg
            .send(change("password1", "short"))
            .await
            .expect("mailbox");
        assert!(matches!(weak, Err(AuthError::WeakPassword)));

        reg.send(change("password1", "password2"))
            .await
            .expect("mailbox")
            .expect("changed");
        let old = reg
            .send(authenticate("alice", "password1"))
            .await
            .expect("mailbox");
        assert!(matches!(old, Err(AuthError::WrongCredentials)));
        let new = reg
            .send(authenticate("alice", "password2"))
            .await
            .expect("mailbox");
        assert!(new.is_ok());

        let ghost = ChangePassword {
            name: UserName::parse("ghost").expect("valid"),
            old: pw("password1"),
            new: pw("password2"),
        };
        let ghost = reg.send(ghost).await.expect("mailbox");
        assert!(matches!(ghost, Err(AuthError::WrongCredentials)));
    }

    #[actix::test]
    async fn remains_of_a_deleted_account_keep_its_name() {
        let dir = tempfile::tempdir().expect("tempdir");
        let reg = registry(dir.path(), true);
        fs::create_dir_all(dir.path().join("home/carol")).expect("home");
        fs::create_dir_all(dir.path().join("usage")).expect("usage");
        fs::write(dir.path().join("usage/dave.json"), "{}").expect("ledger");
        for name in ["carol", "dave"] {
            let taken = reg
                .send(register(name, "password1"))
                .await
                .expect("mailbox");
            assert!(matches!(taken, Err(AuthError::NameTaken)), "{name}");
        }
        reg.send(register("erin", "password1"))
            .await
            .expect("mailbox")
            .expect("a free name");
    }

    #[actix::test]
    async fn a_login_rehashes_with_the_setting_and_failures_cost_the_most_rounds() {
        let dir = tempfile::tempdir().expect("tempdir");
        let store = JsonAccountStore::new(dir.path().to_owned()).expect("store");
        let mut old = record("olga");
        old.hash = hash_password(&pw("password1"), 2 * ITER).expect("hash");
        store.create(&old).expect("create");
        let reg = registry(dir.path(), true);
        let wrong = reg
            .send(authenticate("nobody", "password1"))
            .await
            .expect("mailbox");
        assert!(matches!(wrong, Err(AuthError::WrongCredentials)));
        reg.send(authenticate("olga", "password1"))
            .await
            .expect("mailbox")
            .expect("login");
        let stored = store
            .load(&UserName::parse("olga").expect("valid"))
            .expect("load")
            .expect("present");
        assert_eq!(hash_rounds(&stored.hash), Some(ITER));
        assert!(verify_password(&stored.hash, &pw("password1")));
    }

    #[actix::test]
    async fn invite_registration_spends_codes() {
        let dir = tempfile::tempdir().expect("tempdir");
        let store = Arc::new(JsonAccountStore::new(dir.path().join("accounts")).expect("store"));
        let invites = Arc::new(InviteStore::new(dir.path().join("invites")).expect("invites"));
        let code = invites.create(1).expect("code").code;
        let settings = RegistrySettings {
            iterations: ITER,
            min_password_length: 8,
            registration: Registration::Invite,
            default_quota: Quota {
                bytes: Some(1000),
                files: None,
            },
            max_registrations_per_ip_per_hour: 100,
            invites: Some(invites),
            remains: Remains::new(dir.path().join("home"), dir.path().join("usage")),
            state: LocalState::shared(&Config::default()),
        };
        let reg = AccountRegistry::start(store.clone(), settings, 1);
        let with = |name: &str, code: Option<&str>| Register {
            code: code.map(str::to_owned),
            ..register(name, "password1")
        };
        let none = reg.send(with("amy", None)).await.expect("mailbox");
        assert!(matches!(none, Err(AuthError::InviteRequired)));
        let bad = reg.send(with("amy", Some("nope"))).await.expect("mailbox");
        assert!(matches!(bad, Err(AuthError::BadInvite)));
        store.create(&record("taken")).expect("create");
        let bad = reg
            .send(with("taken", Some("nope")))
            .await
            .expect("mailbox");
        assert!(
            matches!(bad, Err(AuthError::BadInvite)),
            "a bad code tells nothing about the name"
        );
        let taken = reg.send(with("taken", Some(&code))).await.expect("mailbox");
        assert!(matches!(taken, Err(AuthError::NameTaken)));
        reg.send(with("amy", Some(&code)))
            .await
            .expect("mailbox")
            .expect("registered");
        let used = reg.send(with("ben", Some(&code))).await.expect("mailbox");
        assert!(matches!(used, Err(AuthError::BadInvite)));
        let amy = store
            .load(&UserName::parse("amy").expect("valid"))
            .expect("load")
            .expect("present");
        assert_eq!(amy.quota.bytes, Some(1000));
    }
}
