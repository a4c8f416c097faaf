//! One change to a user's tree under the user's lock ([`QuotaLedger::change`], [`Tx`]): check,
//! mark the ledger dirty, record what changed.

use crate::config::Quota;
use crate::state::Reserved;

use super::ledger::{Stored, UserState, lock};
use super::{Charge, QuotaError, QuotaLedger};

impl QuotaLedger {
    /// Runs `op`, a change to `user`'s tree, under the user's lock: `op` checks with
    /// [`Tx::fits`], calls [`Tx::mark`] just before it touches the tree and [`Tx::record`]s
    /// what it changed; the ledger file is updated before the lock is released.
    ///
    /// # Errors
    /// What `op` returns; [`QuotaError::Unavailable`] when the ledger cannot be read.
    pub(crate) fn change<T, E: From<QuotaError>>(
        &self,
        user: &str,
        op: impl FnOnce(&mut Tx<'_>) -> Result<T, E>,
    ) -> Result<T, E> {
        let state = self.user(user);
        let mut state = lock(&state);
        let stored = self.load(user).map_err(QuotaError::Unavailable)?;
        let mut tx = Tx {
            inner: Some(TxInner {
                ledger: self,
                user,
                state: &mut state,
                stored,
                limits: self.limits(user),
                marked: false,
                delta: (0, 0),
                settled: Reserved::default(),
            }),
        };
        let result = op(&mut tx);
        if let Some(inner) = tx.inner {
            let written = !(inner.marked || inner.delta != (0, 0))
                || self.flush(user, inner.state, inner.delta);
            // Only once the usage holds what they became: meanwhile they count twice (the
            // safe way), never not at all, for a node that checks in between.
            if inner.settled != Reserved::default() {
                if written {
                    self.state.release_quota(user, inner.settled);
                } else {
                    inner.state.unsettled.bytes += inner.settled.bytes;
                    inner.state.unsettled.files += inner.settled.files;
                }
            }
        }
        result
    }
}

pub(super) struct TxInner<'a> {
    pub(super) ledger: &'a QuotaLedger,
    pub(super) user: &'a str,
    pub(super) state: &'a mut UserState,
    pub(super) stored: Stored,
    pub(super) limits: Quota,
    pub(super) marked: bool,
    pub(super) delta: (i128, i128),
    /// Reservations of settled uploads, given back after the usage is written.
    pub(super) settled: Reserved,
}

/// One change to a user's tree, with the user's lock held (see [`QuotaLedger::change`]).
pub(crate) struct Tx<'a> {
    /// `None`: nothing is accounted (no ledger, or the anonymous area).
    pub(super) inner: Option<TxInner<'a>>,
}

impl Tx<'_> {
    /// A change nobody accounts for.
    pub(crate) fn untracked() -> Tx<'static> {
        Tx { inner: None }
    }

    /// Checks that `bytes` and `files` more fit, with what is stored, what this change has
    /// recorded so far and every reservation (a change that frees space always fits).
    ///
    /// # Errors
    /// [`QuotaError::Exceeded`].
    pub(crate) fn fits(&self, bytes: i128, files: i128) -> Result<(), QuotaError> {
        let Some(tx) = &self.inner else {
            return Ok(());
        };
        let held = tx.ledger.reserved(tx.user)?;
        let reserved = Reserved {
            bytes: held.bytes.saturating_sub(tx.settled.bytes),
            files: held.files.saturating_sub(tx.settled.files),
        };
        let fits = |bytes, files| tx.state.fits(tx.stored, tx.limits, reserved, bytes, files);
        let bytes_fit = bytes <= 0 || fits(tx.delta.0 + bytes, 0);
        let files_fit = files <= 0 || fits(0, tx.delta.1 + files);
        if bytes_fit && files_fit {
            Ok(())
        } else {
            Err(QuotaError::Exceeded)
        }
    }

    /// Marks the ledger dirty on disk, just before the tree changes: a crash before the
    /// change is recorded makes the next start recount.
    ///
    /// # Errors
    /// [`QuotaError::Unavailable`] when the ledger cannot be written: the change must not run.
    pub(crate) fn mark(&mut self) -> Result<(), QuotaError> {
        let Some(tx) = self.inner.as_mut() else {
            return Ok(());
        };
        if !tx.marked && !tx.stored.dirty {
            tx.ledger
                .mark_dirty(tx.user, tx.stored)
                .map_err(QuotaError::Unavailable)?;
        }
        tx.marked = true;
        Ok(())
    }

    /// Records what the change did to the usage.
    pub(crate) fn record(&mut self, bytes: i128, files: i128) {
        if let Some(tx) = self.inner.as_mut() {
            tx.delta.0 += bytes;
            tx.delta.1 += files;
        }
    }

    /// Ends `charge`'s reservations in this change (a staged upload's commit), so the check
    /// of what the commit adds does not count them twice; they are given back once the usage
    /// is written.
    pub(crate) fn settle(&mut self, charge: &mut Charge) {
        if let (Some(tx), Some(inner)) = (self.inner.as_mut(), charge.inner.as_mut()) {
            let taken = inner.take();
            tx.settled.bytes += taken.bytes;
            tx.settled.files += taken.files;
        }
    }
}
