//! The usage ledger: [`QuotaLedger`] keeps bytes and files per user in `usage/<user>.json`
//! (written atomically), the per-user state behind each user's lock, and the start of an
//! upload's [`Charge`].

use std::collections::HashMap;
use std::fs;
use std::io;
use std::path::PathBuf;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant};

use serde::{Deserialize, Serialize};

use crate::config::{Config, Quota};
use crate::db::Database;
use crate::json_file::TempFile;
use crate::state::{LocalState, Reserved, Room, SharedState};

use super::charge::ChargeInner;
use super::{
    Charge, FileId, LimitSource, QuotaError, QuotaReport, TreeCounter, Usage, UsageCounter,
};

/// How long a cluster's running upload reuses the usage it read (see
/// [`QuotaLedger::load_for_reserve`]).
const CACHED_USAGE: Duration = Duration::from_secs(1);

/// The ledger file: usage, and whether a change may have been cut short.
#[derive(Debug, Clone, Copy, Default, Serialize, Deserialize)]
pub(super) struct Stored {
    pub(super) bytes: u64,
    pub(super) files: u64,
    /// Set before the tree changes and while in-place writes run; a ledger still dirty at
    /// start was left by a crash and is recounted.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub(super) dirty: bool,
}

impl Stored {
    pub(super) fn usage(self) -> Usage {
        Usage {
            bytes: self.bytes,
            files: self.files,
        }
    }
}

/// What one user's running operations hold, in memory, under the user's lock (their
/// reservations are in the [`SharedState`], changed under the same lock).
#[derive(Debug, Default)]
pub(super) struct UserState {
    /// What in-place writes changed that the ledger file does not show yet.
    pub(super) pending_bytes: i128,
    pub(super) pending_files: i128,
    /// In-place uploads that have changed their file (the ledger stays dirty while any runs).
    pub(super) writers: u32,
    /// In a cluster: the row as last read, and when (see [`QuotaLedger::load_for_reserve`]).
    pub(super) cached: Option<(Stored, Instant)>,
    /// Reservations of committed uploads whose usage could not be written: still held, so
    /// the other nodes go on counting the bytes, until a write of the usage succeeds.
    pub(super) unsettled: Reserved,
}

impl UserState {
    /// The usage the tree has now: the ledger file plus what is not written to it yet.
    pub(super) fn usage(&self, stored: Stored) -> Usage {
        let stored = stored.usage();
        Usage {
            bytes: shift(stored.bytes, self.pending_bytes),
            files: shift(stored.files, self.pending_files),
        }
    }

    /// Whether `bytes` and `files` more (each only checked when positive) fit under `limits`
    /// together with the usage and every reservation (`reserved`).
    pub(super) fn fits(
        &self,
        stored: Stored,
        limits: Quota,
        reserved: Reserved,
        bytes: i128,
        files: i128,
    ) -> bool {
        let usage = self.usage(stored);
        let over = |limit: Option<u64>, used: u64, reserved: u64, more: i128| {
            more > 0
                && limit
                    .is_some_and(|l| i128::from(used) + i128::from(reserved) + more > i128::from(l))
        };
        !over(limits.bytes, usage.bytes, reserved.bytes, bytes)
            && !over(limits.files, usage.files, reserved.files, files)
    }

    /// What `limits` leave beyond the usage.
    pub(super) fn room(&self, stored: Stored, limits: Quota) -> Room {
        let usage = self.usage(stored);
        Room {
            bytes: limits.bytes.map(|l| l.saturating_sub(usage.bytes)),
            files: limits.files.map(|l| l.saturating_sub(usage.files)),
            basis: Some(Reserved {
                bytes: stored.bytes,
                files: stored.files,
            }),
        }
    }
}

/// The usage ledger of every account: `dir/<user>.json`, plus what running uploads hold.
/// One per server, shared by the file-store threads.
pub struct QuotaLedger {
    pub(super) dir: PathBuf,
    /// What recounts a home.
    pub(super) counter: Arc<dyn UsageCounter>,
    pub(super) limits: Arc<dyn LimitSource>,
    /// One lock per user who has used the ledger since start (a few dozen bytes each).
    pub(super) users: Mutex<HashMap<String, Arc<Mutex<UserState>>>>,
    /// Where running uploads reserve.
    pub(super) state: Arc<dyn SharedState>,
    /// Where the usage is kept in a cluster, instead of the files in `dir`.
    pub(super) database: Option<Arc<Database>>,
}

impl std::fmt::Debug for QuotaLedger {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("QuotaLedger")
            .field("dir", &self.dir)
            .finish_non_exhaustive()
    }
}

pub(super) fn lock<T>(mutex: &Mutex<T>) -> MutexGuard<'_, T> {
    mutex.lock().unwrap_or_else(|e| e.into_inner())
}

impl QuotaLedger {
    /// A ledger in `dir` (created) for the homes under `homes` (counted there by a
    /// [`TreeCounter`] unless [`QuotaLedger::with_counter`] says otherwise), with limits from
    /// `limits`.
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
            counter: Arc::new(TreeCounter::new(homes)),
            limits,
            users: Mutex::default(),
            state: LocalState::shared(&Config::default()),
            database: None,
        })
    }

    /// Recounts homes with `counter` (an object store's listing, say) instead of walking the
    /// homes directory.
    pub fn with_counter(mut self, counter: Arc<dyn UsageCounter>) -> QuotaLedger {
        self.counter = counter;
        self
    }

    /// Reserves in `state` (shared with the rest of the server; by default a state of this
    /// ledger's own).
    pub fn with_shared_state(mut self, state: Arc<dyn SharedState>) -> QuotaLedger {
        self.state = state;
        self
    }

    /// Keeps the usage in `db`'s `quota_usage` table instead of the files (a cluster: every
    /// node checks against the same usage). Recovery at start is then left to the operator's
    /// recount: a dirty row may be another live node's change.
    pub fn with_database(mut self, db: Arc<Database>) -> QuotaLedger {
        self.database = Some(db);
        self
    }

    /// What `user`'s uploads hold reserved.
    pub(super) fn reserved(&self, user: &str) -> Result<Reserved, QuotaError> {
        self.state
            .quota_reserved(user)
            .map_err(|e| QuotaError::Unavailable(io::Error::other(e)))
    }

    /// Reserves `more` for `user` if it fits with what is `stored` and reserved.
    pub(super) fn reserve(
        &self,
        user: &str,
        state: &UserState,
        stored: Stored,
        more: Reserved,
    ) -> Result<(), QuotaError> {
        let room = state.room(stored, self.limits(user));
        match self.state.reserve_quota(user, more, room) {
            Ok(true) => Ok(()),
            Ok(false) => Err(QuotaError::Exceeded),
            Err(e) => Err(QuotaError::Unavailable(io::Error::other(e))),
        }
    }

    pub(super) fn user(&self, user: &str) -> Arc<Mutex<UserState>> {
        Arc::clone(lock(&self.users).entry(user.to_owned()).or_default())
    }

    pub(super) fn path(&self, user: &str) -> PathBuf {
        self.dir.join(format!("{user}.json"))
    }

    /// The limits of `user`.
    pub fn limits(&self, user: &str) -> Quota {
        self.limits.limits(user)
    }

    /// Usage of `user`; recounted from the home when there is no ledger file yet (an account
    /// from before quotas, or a lost file) or it does not parse.
    ///
    /// # Errors
    /// The ledger or the home cannot be read or written.
    pub fn usage(&self, user: &str) -> io::Result<Usage> {
        let state = self.user(user);
        let state = lock(&state);
        Ok(state.usage(self.load(user)?))
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

    /// Must be called with the user's lock held.
    pub(super) fn load(&self, user: &str) -> io::Result<Stored> {
        if let Some(db) = &self.database {
            if let Some(stored) = super::table::load(db, user)? {
                return Ok(stored);
            }
            log::info!("no usage row for {user}; counting the home");
            let usage = self.counter.count(user)?;
            let counted = Stored {
                bytes: usage.bytes,
                files: usage.files,
                dirty: false,
            };
            return super::table::create(db, user, counted);
        }
        match fs::read(self.path(user)) {
            Ok(bytes) => match serde_json::from_slice(&bytes) {
                Ok(stored) => return Ok(stored),
                Err(e) => log::warn!("usage of {user} unreadable ({e}); recounting"),
            },
            Err(e) if e.kind() == io::ErrorKind::NotFound => {
                log::info!("no usage ledger for {user}; counting the home");
            }
            Err(e) => return Err(e),
        }
        self.count(user)
    }

    /// Counts `user`'s home and stores the result; with the user's lock held.
    fn count(&self, user: &str) -> io::Result<Stored> {
        let usage = self.counter.count(user)?;
        let stored = Stored {
            bytes: usage.bytes,
            files: usage.files,
            dirty: false,
        };
        self.store(user, stored)?;
        Ok(stored)
    }

    /// Must be called with the user's lock held. Temp file beside it, then rename: atomic.
    pub(super) fn store(&self, user: &str, stored: Stored) -> io::Result<()> {
        if let Some(db) = &self.database {
            return super::table::store(db, user, stored);
        }
        let json = serde_json::to_vec(&stored).map_err(io::Error::other)?;
        // A process crash keeps the page cache, and the dirty mark covers it; after a power
        // loss the operator recounts (no fsync on this hot path).
        let temp = TempFile {
            mode: 0o666,
            sync: false,
        };
        temp.replace(&self.dir, user, &json, &self.path(user))
    }

    /// Marks the usage dirty before a change (`stored` is what was loaded); with the user's
    /// lock held. In a cluster only the flag is written: the usage may have moved meanwhile.
    pub(super) fn mark_dirty(&self, user: &str, stored: Stored) -> io::Result<()> {
        match &self.database {
            Some(db) => super::table::mark(db, user),
            None => self.store(
                user,
                Stored {
                    dirty: true,
                    ..stored
                },
            ),
        }
    }

    /// The stored usage for a reservation: in a cluster, one read a moment ago will do, as
    /// the reservation checks against the usage of its own moment (`Room::basis`), so a
    /// running upload does not read the row for every chunk.
    pub(super) fn load_for_reserve(&self, user: &str, state: &mut UserState) -> io::Result<Stored> {
        if self.database.is_none() {
            return self.load(user);
        }
        if let Some((stored, at)) = state.cached
            && at.elapsed() < CACHED_USAGE
        {
            return Ok(stored);
        }
        let stored = self.load(user)?;
        state.cached = Some((stored, Instant::now()));
        Ok(stored)
    }

    /// Writes what in-place writes changed into the ledger file; dirty while writers run.
    /// Must be called with the user's lock held. In a cluster the change is added to the
    /// row in one statement, so two nodes' changes add up. Once it is written, reservations
    /// left unsettled by an earlier failure are given back. Returns whether it was written.
    pub(super) fn flush(&self, user: &str, state: &mut UserState, delta: (i128, i128)) -> bool {
        state.cached = None;
        let result = match &self.database {
            Some(db) => super::table::add(
                db,
                user,
                (state.pending_bytes + delta.0, state.pending_files + delta.1),
                state.writers > 0,
            ),
            None => self.write_back(user, state, delta),
        };
        match result {
            Ok(()) => {
                state.pending_bytes = 0;
                state.pending_files = 0;
                let unsettled = std::mem::take(&mut state.unsettled);
                if unsettled != Reserved::default() {
                    self.state.release_quota(user, unsettled);
                }
                true
            }
            Err(e) => {
                // Kept in memory: the limits still hold; the file is dirty or gets recounted.
                state.pending_bytes += delta.0;
                state.pending_files += delta.1;
                log::error!("cannot update the usage of {user}: {e}");
                false
            }
        }
    }

    /// [`QuotaLedger::flush`] for the file: what it holds plus the changes, written whole.
    fn write_back(&self, user: &str, state: &UserState, delta: (i128, i128)) -> io::Result<()> {
        let usage = state.usage(self.load(user)?);
        self.store(
            user,
            Stored {
                bytes: shift(usage.bytes, delta.0),
                files: shift(usage.files, delta.1),
                dirty: state.writers > 0,
            },
        )
    }

    /// Starts the accounting of one upload. `new_file` reserves a file slot (the upload will
    /// create its target); `replaces` is the file a staged upload will replace: its bytes may
    /// be reused while the upload runs (one upload per file), and the commit checks again.
    ///
    /// # Errors
    /// [`QuotaError::Exceeded`] when a new file does not fit; [`QuotaError::Unavailable`].
    pub fn charge(
        self: &Arc<Self>,
        user: &str,
        new_file: bool,
        replaces: Option<FileId>,
    ) -> Result<Charge, QuotaError> {
        let limits = self.limits(user);
        let state = self.user(user);
        let guard = lock(&state);
        if new_file {
            let stored = self.load(user).map_err(QuotaError::Unavailable)?;
            let file = Reserved { bytes: 0, files: 1 };
            self.reserve(user, &guard, stored, file)?;
        }
        let claim = replaces.and_then(|f| {
            let key = [f.dev.to_le_bytes(), f.ino.to_le_bytes()].concat();
            // Without the claim the upload gets no credit: stricter, never looser.
            self.state.quota_claim(user, &key).unwrap_or_else(|e| {
                log::error!("no credit for the file {user} replaces: {e}");
                None
            })
        });
        let credit = match (&claim, replaces) {
            (Some(_), Some(file)) => file.len,
            _ => 0,
        };
        drop(guard);
        Ok(Charge {
            inner: Some(Box::new(ChargeInner {
                ledger: Arc::clone(self),
                user: user.to_owned(),
                state,
                limits,
                credit,
                claim,
                written: 0,
                reserved_bytes: 0,
                reserved_file: new_file,
                writer: false,
            })),
        })
    }
}

pub(super) fn shift(value: u64, by: i128) -> u64 {
    u64::try_from((i128::from(value) + by).max(0)).unwrap_or(u64::MAX)
}
