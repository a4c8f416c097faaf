//! Where accounts are kept: the [`AccountRecord`], the [`AccountStore`] backend trait with its
//! JSON-file implementation ([`JsonAccountStore`], one file per account), the quota limits
//! read from it and the [`Remains`] of deleted accounts.

use std::fs::{self, File};
use std::io;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use serde::{Deserialize, Serialize};
use time::OffsetDateTime;
use time::format_description::well_known::Rfc3339;

use crate::accounts::{AuthError, UserName};
use crate::config::Quota;
use crate::json_file::TempFile;

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
    /// How many times the stored record changed: an update of a record read at another
    /// version is refused ([`is_changed`]), so a slow writer cannot undo a change made after
    /// its read. 0 in records written before versions were kept.
    #[serde(default)]
    pub version: u64,
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
            version: 0,
        }
    }
}

/// Where a deleted account's files may remain: its home (`homes/<name>`, or a bucket's prefix:
/// [`HomeElsewhere`]) and its usage ledger (`usage/<name>.json`). While either exists the name
/// is not free: `ferryd user del --purge` removes them, `ferryd user add --adopt-home` gives
/// them to a new account explicitly.
#[derive(Debug, Clone)]
pub struct Remains {
    homes: PathBuf,
    usage: PathBuf,
    elsewhere: Vec<Arc<dyn HomeElsewhere>>,
}

/// What an account keeps outside the data directory (its home in an S3 bucket, its usage row
/// in a cluster's database): where it is, and whether a deleted account left anything there.
pub trait HomeElsewhere: std::fmt::Debug + Send + Sync {
    /// The place of `name`'s home, for messages (`s3://bucket/prefix/name/`), when it holds
    /// something; `None` when it is empty or missing.
    ///
    /// # Errors
    /// The place cannot be checked.
    fn remains_of(&self, name: &UserName) -> io::Result<Option<PathBuf>>;
}

impl Remains {
    /// Remains under the given home and usage-ledger directories.
    pub fn new(homes: PathBuf, usage: PathBuf) -> Remains {
        Remains {
            homes,
            usage,
            elsewhere: Vec::new(),
        }
    }

    /// Also looks in `elsewhere` (homes kept in a bucket, usage rows in a database).
    pub fn with_homes_elsewhere(mut self, elsewhere: Arc<dyn HomeElsewhere>) -> Remains {
        self.elsewhere.push(elsewhere);
        self
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
        for elsewhere in &self.elsewhere {
            found.extend(elsewhere.remains_of(name)?);
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

    /// Replaces an existing account atomically, if it is still at `record.version` (then
    /// bumps the stored version); use [`modify`] to read, change and store.
    ///
    /// # Errors
    /// [`AuthError::Io`] (kind `NotFound` if the account does not exist; [`is_changed`] when
    /// another writer changed it since `record` was read).
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

/// Why [`AccountStore::update`] refused a record: it was read before another change.
#[derive(Debug, thiserror::Error)]
#[error("account {0} changed meanwhile; try again")]
pub struct Changed(pub UserName);

impl Changed {
    /// The error [`AccountStore::update`] returns for a stale record.
    pub fn of(name: &UserName) -> AuthError {
        AuthError::Io(io::Error::other(Changed(name.clone())))
    }
}

/// Whether `e` is a refused stale update.
pub fn is_changed(e: &AuthError) -> bool {
    matches!(e, AuthError::Io(e) if e.get_ref().is_some_and(|inner| inner.is::<Changed>()))
}

/// How often [`modify`] reads a record again after another writer changed it under it.
const MODIFY_TRIES: usize = 5;

/// Applies `change` to `name`'s record as stored now and stores it; when another writer
/// changed the record in between, reads it again and applies `change` to that (a bounded
/// number of times). `change` may refuse the record as it finds it. The stored record, or
/// `None` when there is no such account.
///
/// # Errors
/// What `change` or the store returned; [`is_changed`] when every try lost a race.
pub fn modify(
    store: &dyn AccountStore,
    name: &UserName,
    mut change: impl FnMut(&mut AccountRecord) -> Result<(), AuthError>,
) -> Result<Option<AccountRecord>, AuthError> {
    let mut last = Changed::of(name);
    for _ in 0..MODIFY_TRIES {
        let Some(mut record) = store.load(name)? else {
            return Ok(None);
        };
        change(&mut record)?;
        match store.update(&record) {
            Ok(()) => {
                record.version += 1;
                return Ok(Some(record));
            }
            Err(e) if is_changed(&e) => last = e,
            Err(e) => return Err(e),
        }
    }
    Err(last)
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
        // Sessions of this node and `ferryd user` may write one record at once: the version
        // check and the rename happen under an exclusive lock on the directory itself.
        let lock = File::open(&self.dir)?;
        lock.lock()?;
        let current = self.read(&self.path(&record.name), Some(&record.name))?;
        let Some(current) = current else {
            return Err(io::Error::new(
                io::ErrorKind::NotFound,
                format!("no account {}", record.name),
            )
            .into());
        };
        if current.version != record.version {
            return Err(Changed::of(&record.name));
        }
        let next = AccountRecord {
            version: record.version + 1,
            ..record.clone()
        };
        let tmp = self.write_temp(&next)?;
        if let Err(e) = fs::rename(&tmp, self.path(&record.name)) {
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

#[cfg(test)]
mod tests {
    use super::*;

    /// Homes elsewhere where only `bob` left something.
    #[derive(Debug)]
    struct OnlyBob;

    impl HomeElsewhere for OnlyBob {
        fn remains_of(&self, name: &UserName) -> io::Result<Option<PathBuf>> {
            Ok((name.as_str() == "bob").then(|| PathBuf::from("s3://b/p/bob/")))
        }
    }

    #[test]
    fn remains_elsewhere_join_the_local_ones() {
        let dir = tempfile::tempdir().expect("tempdir");
        let (homes, usage) = (dir.path().join("home"), dir.path().join("usage"));
        fs::create_dir_all(homes.join("alice")).expect("alice's home");
        fs::create_dir_all(&usage).expect("usage dir");
        fs::write(usage.join("bob.json"), b"{}").expect("bob's ledger");
        let name = |n: &str| UserName::parse(n).expect("name");
        let local = Remains::new(homes.clone(), usage.clone());
        assert_eq!(
            local.of(&name("bob")).expect("bob"),
            [usage.join("bob.json")]
        );
        let remains = local.with_homes_elsewhere(Arc::new(OnlyBob));
        assert_eq!(
            remains.of(&name("bob")).expect("bob"),
            [usage.join("bob.json"), PathBuf::from("s3://b/p/bob/")]
        );
        assert_eq!(
            remains.of(&name("alice")).expect("alice"),
            [homes.join("alice")]
        );
        assert!(remains.of(&name("carol")).expect("carol").is_empty());
    }
}
