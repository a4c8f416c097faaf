//! Per-user quotas: the limits ([`Quota`], stored in the account record), the usage ledger
//! ([`QuotaLedger`]: bytes and files per user in `usage/<user>.json`, written atomically) and
//! the reservations running uploads hold ([`Charge`]).
//!
//! Usage is read from the ledger file on every check (a few dozen bytes), so a recount by the
//! operator (`ferryd user quota --recount`) takes effect at once in a running server. Bytes in
//! flight are reserved in memory, under one mutex, so concurrent uploads of one user can never
//! together pass the limit. File contents never pass through here: the transfer task asks
//! [`Charge::add`] before it writes each chunk.
//!
//! What counts: every regular file (its size) and every directory below the home count as one
//! file each; symbolic links (which only the operator can create) count for nothing.

use std::collections::HashMap;
use std::fs::{self, OpenOptions};
use std::io;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

use serde::{Deserialize, Serialize};

use crate::actors::json_file::TempFile;

/// Limits of one account; `None` means unlimited.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Quota {
    /// Most bytes the account's files may hold together.
    #[serde(default)]
    pub bytes: Option<u64>,
    /// Most files and directories the account may have.
    #[serde(default)]
    pub files: Option<u64>,
}

impl Quota {
    /// True when neither limit is set.
    pub fn is_unlimited(&self) -> bool {
        self.bytes.is_none() && self.files.is_none()
    }
}

/// What an account's home holds.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Usage {
    /// Sum of the sizes of the regular files.
    pub bytes: u64,
    /// Regular files plus directories (not the home itself).
    pub files: u64,
}

/// Usage and limits together, for `SITE QUOTA` and `ferryd user quota`.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct QuotaReport {
    /// What is stored now.
    pub usage: Usage,
    /// The limits.
    pub limits: Quota,
}

impl QuotaReport {
    /// The report as text lines: "Bytes used: U of L", "Files used: U of L" ("none" when
    /// unlimited).
    pub fn lines(&self) -> [String; 2] {
        let limit = |l: Option<u64>| l.map_or_else(|| "none".to_owned(), |l| l.to_string());
        [
            format!(
                "Bytes used: {} of {}",
                self.usage.bytes,
                limit(self.limits.bytes)
            ),
            format!(
                "Files used: {} of {}",
                self.usage.files,
                limit(self.limits.files)
            ),
        ]
    }
}

/// An upload or a new file would pass the account's limit (552).
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[error("quota exceeded")]
pub struct QuotaExceeded;

/// Where an account's limits come from (the account store; a test gives fixed ones).
pub trait LimitSource: Send + Sync + 'static {
    /// The limits of `user`; unlimited for an unknown user.
    fn limits(&self, user: &str) -> Quota;
}

impl<F: Fn(&str) -> Quota + Send + Sync + 'static> LimitSource for F {
    fn limits(&self, user: &str) -> Quota {
        self(user)
    }
}

/// In-memory reservations of one user.
#[derive(Debug, Default)]
struct Reserved {
    bytes: u64,
    files: u64,
}

/// The usage ledger of every account: `dir/<user>.json`, plus the reservations of uploads in
/// progress. One per server, shared by the file-store threads.
pub struct QuotaLedger {
    dir: PathBuf,
    homes: PathBuf,
    limits: Arc<dyn LimitSource>,
    reserved: Mutex<HashMap<String, Reserved>>,
}

impl std::fmt::Debug for QuotaLedger {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("QuotaLedger")
            .field("dir", &self.dir)
            .finish_non_exhaustive()
    }
}

impl QuotaLedger {
    /// A ledger in `dir` (created) for the homes under `homes`, with limits from `limits`.
    ///
    /// # Errors
    /// The directory cannot be created.
    pub fn new(
        dir: PathBuf,
        homes: PathBuf,
        limits: Arc<dyn LimitSource>,
    ) -> io::Result<QuotaLedger> {
        fs::create_dir_all(&dir)?;
        Ok(QuotaLedger {
            dir,
            homes,
            limits,
            reserved: Mutex::default(),
        })
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<String, Reserved>> {
        self.reserved.lock().unwrap_or_else(|e| e.into_inner())
    }

    fn path(&self, user: &str) -> PathBuf {
        self.dir.join(format!("{user}.json"))
    }

    /// The limits of `user`.
    pub fn limits(&self, user: &str) -> Quota {
        self.limits.limits(user)
    }

    /// Stored usage of `user`; recounted from the home when there is no ledger file yet (an
    /// account from before quotas) or it does not parse.
    ///
    /// # Errors
    /// The ledger or the home cannot be read or written.
    pub fn usage(&self, user: &str) -> io::Result<Usage> {
        let _guard = self.lock();
        self.load(user)
    }

    /// Usage and limits of `user`.
    ///
    /// # Errors
    /// As for [`QuotaLedger::usage`].
    pub fn report(&self, user: &str) -> io::Result<QuotaReport> {
        Ok(QuotaReport {
            usage: self.usage(user)?,
            limits: self.limits(user),
        })
    }

    /// Must be called with the lock held.
    fn load(&self, user: &str) -> io::Result<Usage> {
        match fs::read(self.path(user)) {
            Ok(bytes) => match serde_json::from_slice(&bytes) {
                Ok(usage) => return Ok(usage),
                Err(e) => log::warn!("usage of {user} unreadable ({e}); recounting"),
            },
            Err(e) if e.kind() == io::ErrorKind::NotFound => {}
            Err(e) => return Err(e),
        }
        let usage = count_tree(&self.homes.join(user))?;
        self.store(user, usage)?;
        Ok(usage)
    }

    /// Must be called with the lock held. Temp file beside it, then rename: atomic.
    fn store(&self, user: &str, usage: Usage) -> io::Result<()> {
        let json = serde_json::to_vec(&usage).map_err(io::Error::other)?;
        // A lost ledger is recounted from the home: no fsync needed.
        let temp = TempFile {
            mode: 0o666,
            sync: false,
        };
        temp.replace(&self.dir, user, &json, &self.path(user))
    }

    /// Recomputes `user`'s usage from the home directory and stores it.
    ///
    /// # Errors
    /// The home cannot be walked or the ledger written.
    pub fn recount(&self, user: &str) -> io::Result<Usage> {
        let _guard = self.lock();
        let usage = count_tree(&self.homes.join(user))?;
        self.store(user, usage)?;
        Ok(usage)
    }

    /// Applies a change that already happened on disk (delete, rename over, truncation, a
    /// commit): usage moves by `bytes` and `files`, never below zero.
    pub fn apply(&self, user: &str, bytes: i128, files: i128) {
        if bytes == 0 && files == 0 {
            return;
        }
        let _guard = self.lock();
        self.apply_locked(user, bytes, files);
    }

    /// [`QuotaLedger::apply`] with the lock held.
    fn apply_locked(&self, user: &str, bytes: i128, files: i128) {
        let result = self.load(user).and_then(|mut usage| {
            usage.bytes = shift(usage.bytes, bytes);
            usage.files = shift(usage.files, files);
            self.store(user, usage)
        });
        if let Err(e) = result {
            // The change is on disk; only the count lags. A recount repairs it.
            log::error!("cannot update the usage of {user}: {e}");
        }
    }

    /// Checks that one more file fits and, if so, counts it at once (MKD, and files an
    /// upload creates in place).
    ///
    /// # Errors
    /// [`QuotaExceeded`] when the file limit is reached.
    pub fn add_file(&self, user: &str) -> Result<(), QuotaExceeded> {
        let limit = self.limits(user).files;
        let guard = self.lock();
        let usage = self.load(user).unwrap_or_default();
        let reserved = guard.get(user).map_or(0, |r| r.files);
        if limit.is_some_and(|l| usage.files + reserved >= l) {
            return Err(QuotaExceeded);
        }
        self.apply_locked(user, 0, 1);
        drop(guard);
        Ok(())
    }

    /// Starts the accounting of one upload. `new_file` reserves a file slot (a staged upload
    /// that will create its target); `credit` is the size of the file a staged upload will
    /// replace, which its bytes may reuse.
    ///
    /// # Errors
    /// [`QuotaExceeded`] when a new file does not fit.
    pub fn charge(
        self: &Arc<Self>,
        user: &str,
        new_file: bool,
        credit: u64,
    ) -> Result<Charge, QuotaExceeded> {
        let limits = self.limits(user);
        if new_file {
            let mut guard = self.lock();
            let usage = self.load(user).unwrap_or_default();
            let entry = guard.entry(user.to_owned()).or_default();
            if limits.files.is_some_and(|l| usage.files + entry.files >= l) {
                return Err(QuotaExceeded);
            }
            entry.files += 1;
        }
        Ok(Charge {
            inner: Some(Box::new(ChargeInner {
                ledger: Arc::clone(self),
                user: user.to_owned(),
                limit: limits.bytes,
                credit,
                written: 0,
                reserved_bytes: 0,
                reserved_file: new_file,
                in_place: None,
            })),
        })
    }

    /// Must be called with the lock held: gives back reservations.
    fn release(map: &mut HashMap<String, Reserved>, user: &str, bytes: u64, file: bool) {
        if let Some(entry) = map.get_mut(user) {
            entry.bytes = entry.bytes.saturating_sub(bytes);
            entry.files = entry.files.saturating_sub(u64::from(file));
            if entry.bytes == 0 && entry.files == 0 {
                map.remove(user);
            }
        }
    }
}

fn shift(value: u64, by: i128) -> u64 {
    u64::try_from((i128::from(value) + by).max(0)).unwrap_or(u64::MAX)
}

/// Counts regular files (and their bytes) and directories under `root`, without following
/// symbolic links. A missing root is empty.
///
/// # Errors
/// A directory cannot be read.
pub fn count_tree(root: &Path) -> io::Result<Usage> {
    let mut usage = Usage::default();
    let mut stack = vec![root.to_path_buf()];
    while let Some(dir) = stack.pop() {
        let entries = match fs::read_dir(&dir) {
            Ok(entries) => entries,
            Err(e) if e.kind() == io::ErrorKind::NotFound => continue,
            Err(e) => return Err(e),
        };
        for entry in entries {
            let entry = entry?;
            let meta = match entry.metadata() {
                Ok(meta) => meta,
                Err(e) if e.kind() == io::ErrorKind::NotFound => continue,
                Err(e) => return Err(e),
            };
            if meta.is_dir() {
                usage.files += 1;
                stack.push(entry.path());
            } else if meta.is_file() {
                usage.files += 1;
                usage.bytes += meta.len();
            }
        }
    }
    Ok(usage)
}

/// A file written in place: where it is and how long it was before the upload.
#[derive(Debug)]
struct InPlace {
    path: PathBuf,
    start_len: u64,
    /// The upload created it (APPE of a missing file, STOU): on a quota failure it goes.
    created: bool,
}

#[derive(Debug)]
struct ChargeInner {
    ledger: Arc<QuotaLedger>,
    user: String,
    limit: Option<u64>,
    credit: u64,
    written: u64,
    reserved_bytes: u64,
    reserved_file: bool,
    in_place: Option<InPlace>,
}

/// The accounting of one upload: bytes are reserved as they arrive ([`Charge::add`]) and
/// turned into usage when the upload ends. Dropping it gives back whatever is still reserved;
/// for a file written in place it also counts what the file grew by.
#[derive(Debug, Default)]
pub struct Charge {
    // Boxed: an upload carries it around, and most of its moves need only the pointer.
    inner: Option<Box<ChargeInner>>,
}

impl Charge {
    /// A charge that never refuses (no quota ledger: anonymous area, tests).
    pub fn unlimited() -> Charge {
        Charge::default()
    }

    /// Marks the upload as written in place into `path`, `start_len` bytes long before it.
    pub(crate) fn in_place(mut self, path: PathBuf, start_len: u64, created: bool) -> Charge {
        if let Some(inner) = self.inner.as_mut() {
            inner.in_place = Some(InPlace {
                path,
                start_len,
                created,
            });
        }
        self
    }

    /// Reserves `n` more bytes, before they are written.
    ///
    /// # Errors
    /// [`QuotaExceeded`] when they would pass the byte limit together with what is stored and
    /// what other uploads of the user have reserved; nothing is reserved then.
    pub fn add(&mut self, n: u64) -> Result<(), QuotaExceeded> {
        let Some(inner) = self.inner.as_mut() else {
            return Ok(());
        };
        let written = inner.written + n;
        let need = written.saturating_sub(inner.credit);
        let more = need.saturating_sub(inner.reserved_bytes);
        if more > 0 {
            let ledger = Arc::clone(&inner.ledger);
            let mut guard = ledger.lock();
            if let Some(limit) = inner.limit {
                let usage = ledger.load(&inner.user).unwrap_or_default();
                let others = guard.get(&inner.user).map_or(0, |r| r.bytes);
                if usage.bytes + others + more > limit {
                    return Err(QuotaExceeded);
                }
            }
            guard.entry(inner.user.clone()).or_default().bytes += more;
            inner.reserved_bytes += more;
        }
        inner.written = written;
        Ok(())
    }

    /// After a quota failure of an in-place upload: puts the file back as it was (truncated to
    /// its old length, or removed if the upload created it).
    pub fn roll_back(&mut self) {
        let Some(inner) = self.inner.as_mut() else {
            return;
        };
        let Some(place) = inner.in_place.take() else {
            return;
        };
        let result = if place.created {
            fs::remove_file(&place.path).map(|()| inner.ledger.apply(&inner.user, 0, -1))
        } else {
            OpenOptions::new()
                .write(true)
                .open(&place.path)
                .and_then(|f| f.set_len(place.start_len))
        };
        if let Err(e) = result {
            log::error!("cannot roll back {}: {e}", place.path.display());
        }
    }

    /// A staged upload was renamed over its target: count its size, minus the `replaced`
    /// file's (`None` when the target was new), and give back the reservation.
    pub(crate) fn committed(mut self, size: u64, replaced: Option<u64>) {
        let Some(inner) = self.inner.take() else {
            return;
        };
        let files = if replaced.is_none() { 1 } else { 0 };
        let bytes = i128::from(size) - i128::from(replaced.unwrap_or(0));
        inner.ledger.apply(&inner.user, bytes, files);
        let mut guard = inner.ledger.lock();
        QuotaLedger::release(
            &mut guard,
            &inner.user,
            inner.reserved_bytes,
            inner.reserved_file,
        );
    }
}

impl Drop for Charge {
    fn drop(&mut self) {
        let Some(inner) = self.inner.take() else {
            return;
        };
        if let Some(place) = &inner.in_place {
            // Whatever arrived stays (for a later resume); count what the file grew by.
            let len = fs::metadata(&place.path).map_or(place.start_len, |m| m.len());
            let grown = i128::from(len) - i128::from(place.start_len);
            inner.ledger.apply(&inner.user, grown, 0);
        }
        let mut guard = inner.ledger.lock();
        QuotaLedger::release(
            &mut guard,
            &inner.user,
            inner.reserved_bytes,
            inner.reserved_file,
        );
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ledger(bytes: Option<u64>, files: Option<u64>) -> (tempfile::TempDir, Arc<QuotaLedger>) {
        let dir = tempfile::tempdir().expect("tempdir");
        fs::create_dir_all(dir.path().join("home/alice")).expect("home");
        let limits = move |_: &str| Quota { bytes, files };
        let ledger = QuotaLedger::new(
            dir.path().join("usage"),
            dir.path().join("home"),
            Arc::new(limits),
        )
        .expect("ledger");
        (dir, Arc::new(ledger))
    }

    #[test]
    fn reservations_of_concurrent_uploads_share_the_limit() {
        let (_dir, ledger) = ledger(Some(100), None);
        let mut a = ledger.charge("alice", true, 0).expect("a");
        let mut b = ledger.charge("alice", true, 0).expect("b");
        a.add(60).expect("a 60");
        assert_eq!(b.add(50), Err(QuotaExceeded));
        b.add(40).expect("b 40 fits exactly");
        assert_eq!(a.add(1), Err(QuotaExceeded));
        drop(b);
        a.add(40).expect("b's bytes were given back");
        a.committed(100, None);
        let usage = ledger.usage("alice").expect("usage");
        assert_eq!(
            usage,
            Usage {
                bytes: 100,
                files: 1
            }
        );
        assert!(ledger.lock().is_empty(), "nothing stays reserved");
    }

    #[test]
    fn replacing_reuses_the_old_size_and_files_are_limited() {
        let (_dir, ledger) = ledger(Some(100), Some(2));
        ledger.apply("alice", 90, 1);
        let mut c = ledger.charge("alice", false, 90).expect("replace");
        c.add(95).expect("90 of them are the old file's");
        assert_eq!(c.add(10), Err(QuotaExceeded));
        c.committed(95, Some(90));
        assert_eq!(ledger.usage("alice").expect("usage").bytes, 95);

        ledger.add_file("alice").expect("second file");
        assert_eq!(ledger.add_file("alice"), Err(QuotaExceeded));
        assert!(matches!(
            ledger.charge("alice", true, 0),
            Err(QuotaExceeded)
        ));
        ledger.apply("alice", 0, -5);
        assert_eq!(ledger.usage("alice").expect("usage").files, 0);
    }

    #[test]
    fn ledger_survives_and_recounts() {
        let (dir, ledger) = ledger(None, None);
        fs::write(dir.path().join("home/alice/f"), b"12345").expect("write");
        fs::create_dir(dir.path().join("home/alice/d")).expect("mkdir");
        fs::write(dir.path().join("home/alice/d/g"), b"123").expect("write");
        // No ledger file yet: the first use counts the home.
        assert_eq!(
            ledger.usage("alice").expect("usage"),
            Usage { bytes: 8, files: 3 }
        );
        ledger.apply("alice", 2, 0);
        let again = QuotaLedger::new(
            dir.path().join("usage"),
            dir.path().join("home"),
            Arc::new(|_: &str| Quota::default()),
        )
        .expect("ledger");
        assert_eq!(again.usage("alice").expect("usage").bytes, 10);
        assert_eq!(again.recount("alice").expect("recount").bytes, 8);
    }

    #[test]
    fn in_place_growth_is_counted_and_rolled_back() {
        let (dir, ledger) = ledger(Some(10), None);
        let path = dir.path().join("home/alice/f");
        fs::write(&path, b"abc").expect("write");
        assert_eq!(ledger.usage("alice").expect("usage").bytes, 3);
        let mut c =
            ledger
                .charge("alice", false, 0)
                .expect("charge")
                .in_place(path.clone(), 3, false);
        c.add(4).expect("fits");
        fs::write(&path, b"abcdefg").expect("grow");
        drop(c);
        assert_eq!(ledger.usage("alice").expect("usage").bytes, 7);

        let mut c =
            ledger
                .charge("alice", false, 0)
                .expect("charge")
                .in_place(path.clone(), 7, false);
        c.add(3).expect("fits");
        fs::write(&path, b"abcdefghij").expect("grow");
        assert_eq!(c.add(1), Err(QuotaExceeded));
        c.roll_back();
        drop(c);
        assert_eq!(fs::read(&path).expect("read"), b"abcdefg");
        assert_eq!(ledger.usage("alice").expect("usage").bytes, 7);
    }

    #[test]
    fn report_lines_say_none_when_unlimited() {
        let report = QuotaReport {
            usage: Usage { bytes: 5, files: 1 },
            limits: Quota {
                bytes: Some(10),
                files: None,
            },
        };
        assert_eq!(
            report.lines(),
            [
                "Bytes used: 5 of 10".to_owned(),
                "Files used: 1 of none".to_owned()
            ]
        );
    }
}
