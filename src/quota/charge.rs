//! The accounting of one running upload ([`Charge`]): bytes reserved as they arrive for a
//! staged upload, growth of the open file for one written in place.

use std::fs::File;
use std::io;
use std::os::unix::fs::MetadataExt;
use std::sync::{Arc, Mutex};

use crate::config::Quota;
use crate::state::{Lease, Reserved};

use super::ledger::{UserState, lock};
use super::{QuotaError, QuotaLedger};

#[derive(Debug)]
pub(super) struct ChargeInner {
    pub(super) ledger: Arc<QuotaLedger>,
    pub(super) user: String,
    pub(super) state: Arc<Mutex<UserState>>,
    pub(super) limits: Quota,
    /// Bytes of the replaced file this staged upload may reuse while it runs.
    pub(super) credit: u64,
    /// The claim on that file, held for its drop.
    pub(super) claim: Option<Lease>,
    pub(super) written: u64,
    pub(super) reserved_bytes: u64,
    pub(super) reserved_file: bool,
    /// Has changed a file in place (counted in the user's writers).
    pub(super) writer: bool,
}

impl ChargeInner {
    /// Gives back the reservations; call with the user's lock held.
    pub(super) fn release(&mut self) {
        let less = self.take();
        self.ledger.state.release_quota(&self.user, less);
    }

    /// Ends the reservations here and returns them, for the caller to give back.
    pub(super) fn take(&mut self) -> Reserved {
        let held = Reserved {
            bytes: self.reserved_bytes,
            files: u64::from(self.reserved_file),
        };
        self.reserved_bytes = 0;
        self.reserved_file = false;
        self.claim = None;
        self.credit = 0;
        held
    }

    /// The first change in place: the ledger is dirty on disk until the last writer ends.
    pub(super) fn become_writer(&mut self, state: &mut UserState) -> Result<(), QuotaError> {
        if self.writer {
            return Ok(());
        }
        let stored = self
            .ledger
            .load(&self.user)
            .map_err(QuotaError::Unavailable)?;
        if !stored.dirty {
            self.ledger
                .mark_dirty(&self.user, stored)
                .map_err(QuotaError::Unavailable)?;
        }
        state.writers += 1;
        self.writer = true;
        Ok(())
    }

    pub(super) fn fits(&self, state: &UserState, bytes: u64, files: u64) -> Result<(), QuotaError> {
        if bytes == 0 && files == 0 {
            return Ok(());
        }
        let stored = self
            .ledger
            .load(&self.user)
            .map_err(QuotaError::Unavailable)?;
        let reserved = self.ledger.reserved(&self.user)?;
        if state.fits(
            stored,
            self.limits,
            reserved,
            i128::from(bytes),
            i128::from(files),
        ) {
            Ok(())
        } else {
            Err(QuotaError::Exceeded)
        }
    }
}

/// The accounting of one upload. A staged upload reserves its bytes as they arrive
/// ([`Charge::add`]) and turns them into usage at the commit; an in-place upload is charged by
/// what each write adds to its open file (`Charge::grow`). Dropping it gives back whatever is
/// still reserved and writes the in-place changes into the ledger.
#[derive(Debug, Default)]
pub struct Charge {
    // Boxed: an upload carries it around, and most of its moves need only the pointer.
    pub(super) inner: Option<Box<ChargeInner>>,
}

impl Charge {
    /// A charge that never refuses (no quota ledger: anonymous area, tests).
    pub fn unlimited() -> Charge {
        Charge::default()
    }

    /// Reserves `n` more bytes of a staged upload, before they are written.
    ///
    /// # Errors
    /// [`QuotaError::Exceeded`] when they would pass the byte limit together with what is
    /// stored and what other uploads of the user hold; nothing is reserved then.
    pub fn add(&mut self, n: u64) -> Result<(), QuotaError> {
        let Some(inner) = self.inner.as_mut() else {
            return Ok(());
        };
        let written = inner.written + n;
        let need = written.saturating_sub(inner.credit);
        let more = need.saturating_sub(inner.reserved_bytes);
        if more > 0 {
            let state = Arc::clone(&inner.state);
            let mut state = lock(&state);
            let stored = inner
                .ledger
                .load_for_reserve(&inner.user, &mut state)
                .map_err(QuotaError::Unavailable)?;
            let bytes = Reserved {
                bytes: more,
                files: 0,
            };
            inner.ledger.reserve(&inner.user, &state, stored, bytes)?;
            inner.reserved_bytes += more;
        }
        inner.written = written;
        Ok(())
    }

    /// Runs `op`, which writes to (or truncates) `file` in place, under the user's lock, and
    /// charges what `file`'s size changed by, if it is still linked in the tree. `bound` gets
    /// the size before and says how much `op` can add at most: that much must fit first.
    ///
    /// # Errors
    /// The outer error: refused, `op` did not run. The inner one is `op`'s own.
    pub(crate) fn grow<T>(
        &mut self,
        file: &File,
        bound: impl FnOnce(u64) -> u64,
        op: impl FnOnce() -> io::Result<T>,
    ) -> Result<io::Result<T>, QuotaError> {
        let Some(inner) = self.inner.as_mut() else {
            return Ok(op());
        };
        let state = Arc::clone(&inner.state);
        let mut state = lock(&state);
        let before = match file.metadata() {
            Ok(meta) => meta.len(),
            Err(e) => return Ok(Err(e)),
        };
        inner.fits(&state, bound(before), 0)?;
        inner.become_writer(&mut state)?;
        let result = op();
        match file.metadata() {
            Ok(after) if after.nlink() > 0 => {
                state.pending_bytes += i128::from(after.len()) - i128::from(before);
            }
            // Unlinked meanwhile (deleted, or replaced by another upload): no longer in the
            // tree, so what it holds no longer counts.
            Ok(_) => {}
            Err(e) => log::error!("cannot measure an in-place upload of {}: {e}", inner.user),
        }
        Ok(result)
    }

    /// Opens the file of an in-place upload, under the user's lock. `open(may_create)` must
    /// create the file only when `may_create` (its file slot was reserved, or one fits now):
    /// it returns the file and whether it created it, or `None` when it would have had to
    /// create it and may not.
    ///
    /// # Errors
    /// The outer error: refused (also when the file would have to be created and no slot
    /// fits); the inner one is `open`'s own.
    pub(crate) fn open_in_place(
        &mut self,
        open: impl FnOnce(bool) -> io::Result<Option<(File, bool)>>,
    ) -> Result<io::Result<(File, bool)>, QuotaError> {
        let Some(inner) = self.inner.as_mut() else {
            return match open(true) {
                Ok(Some(opened)) => Ok(Ok(opened)),
                Ok(None) => Err(QuotaError::Exceeded),
                Err(e) => Ok(Err(e)),
            };
        };
        let state = Arc::clone(&inner.state);
        let mut state = lock(&state);
        let may_create = inner.reserved_file || inner.fits(&state, 0, 1).is_ok();
        inner.become_writer(&mut state)?;
        match open(may_create) {
            Ok(Some((file, created))) => {
                if inner.reserved_file {
                    let file = Reserved { bytes: 0, files: 1 };
                    inner.ledger.state.release_quota(&inner.user, file);
                    inner.reserved_file = false;
                }
                if created {
                    state.pending_files += 1;
                }
                Ok(Ok((file, created)))
            }
            Ok(None) => Err(QuotaError::Exceeded),
            Err(e) => Ok(Err(e)),
        }
    }

    /// Runs `op`, which unlinks the in-place upload's own `file` and says whether it did,
    /// under the user's lock, and takes the file out of the usage.
    ///
    /// # Errors
    /// `op`'s.
    pub(crate) fn unlink(
        &mut self,
        file: &File,
        op: impl FnOnce() -> io::Result<bool>,
    ) -> io::Result<()> {
        let Some(inner) = self.inner.as_mut() else {
            return op().map(drop);
        };
        let state = Arc::clone(&inner.state);
        let mut state = lock(&state);
        let before = file.metadata()?;
        if op()? && before.nlink() > 0 {
            state.pending_bytes -= i128::from(before.len());
            state.pending_files -= 1;
        }
        Ok(())
    }
}

impl Drop for Charge {
    fn drop(&mut self) {
        let Some(mut inner) = self.inner.take() else {
            return;
        };
        let state = Arc::clone(&inner.state);
        let mut state = lock(&state);
        inner.release();
        if inner.writer {
            state.writers = state.writers.saturating_sub(1);
            inner.ledger.flush(&inner.user, &mut state, (0, 0));
        }
    }
}
