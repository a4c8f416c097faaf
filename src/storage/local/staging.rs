//! Staged uploads (STOR): a temporary file in the staging directory, synced and renamed over
//! the target at the commit; an interrupted one of a new name is kept for a resume.

use std::fs::{self, File};
use std::io;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use cap_std::fs::{Dir, Metadata, OpenOptions};
use rustix::io::Errno;

use crate::quota::{Charge, QuotaLedger, Tx};
use crate::storage::vpath::VPath;
use crate::storage::{ClientProbe, StoreError};

use super::fs::*;
use super::jail::*;

/// Temp file path + target. Its `Drop` removes the temp file unless committed, so a failed or
/// aborted upload leaves no temporary behind and the previous file intact; except that an
/// interrupted upload of a name that held no file is kept under that name, to be resumed
/// (when interrupted uploads are kept: [`LocalFs::with_partial_uploads`]).
#[derive(Debug)]
pub struct StagedUpload {
    pub(super) temp: PathBuf,
    pub(super) user: Arc<str>,
    pub(super) target: VPath,
    pub(super) committed: bool,
    pub(super) charge: Option<Charge>,
    /// Set when the target held no file and interrupted uploads are kept.
    pub(super) partial: Option<Box<Partial>>,
    pub(super) client: Option<ClientProbe>,
}

/// What keeping an interrupted upload needs, taken when it starts.
#[derive(Debug)]
pub(super) struct Partial {
    /// The staging dir (a second handle on it).
    pub(super) staging: Dir,
    /// The user's home, where the target is resolved again.
    pub(super) home: Dir,
    pub(super) ledger: Option<Arc<QuotaLedger>>,
}

impl StagedUpload {
    /// Hands the upload's quota accounting back before the commit, which turns it into usage.
    pub fn attach(&mut self, charge: Charge) {
        self.charge = Some(charge);
    }

    /// Makes the commit refuse ([`StoreError::Interrupted`]) once `probe` says the client has
    /// gone: the upload is then kept or dropped as an interrupted one.
    pub fn watch_client(&mut self, probe: ClientProbe) {
        self.client = Some(probe);
    }

    /// Moves what an interrupted upload received to its target, as a commit would (synced,
    /// renamed into place, charged as usage), provided the name still holds nothing and the
    /// bytes fit the quota. Returns the bytes kept, `None` when nothing was kept. It runs where
    /// the upload is dropped, on the transfer thread for an ABOR or a failed connection, so
    /// the file is in place before the transfer's replies go out.
    pub(super) fn keep_partial(&mut self, partial: &Partial) -> Result<Option<u64>, StoreError> {
        let name = self.temp.file_name().ok_or(StoreError::NotFound)?;
        let file = partial.staging.open(name)?;
        let size = file.metadata()?.len();
        if size == 0 {
            // Nothing arrived (no data connection, say): no empty file to resume.
            return Ok(None);
        }
        file.sync_all()?;
        let mut keep = |tx: &mut Tx<'_>| -> Result<Option<Dir>, StoreError> {
            let target = write_target(&partial.home, &self.target)?;
            if target.existing.is_some() {
                log::warn!(
                    "{}: another upload created {} meanwhile; the interrupted upload is dropped",
                    self.user,
                    self.target
                );
                return Ok(None);
            }
            if tx.fits(i128::from(size), 1).is_err() {
                log::info!(
                    "{}: the interrupted upload of {} does not fit the quota; dropped",
                    self.user,
                    self.target
                );
                return Ok(None);
            }
            tx.mark()?;
            // NOREPLACE: a file that appeared since the check (an operator's, say) stays.
            match rustix::fs::renameat_with(
                &partial.staging,
                name,
                &target.dir,
                target.name.as_os_str(),
                rustix::fs::RenameFlags::NOREPLACE,
            ) {
                Ok(()) => {}
                Err(Errno::EXIST) => {
                    log::warn!(
                        "{}: {} appeared meanwhile; the interrupted upload is dropped",
                        self.user,
                        self.target
                    );
                    return Ok(None);
                }
                Err(e) => return Err(e.into()),
            }
            self.committed = true;
            tx.record(i128::from(size), 1);
            Ok(Some(target.dir))
        };
        let kept = match &partial.ledger {
            Some(ledger) => ledger.change(&self.user, keep)?,
            None => keep(&mut Tx::untracked())?,
        };
        let Some(dir) = kept else {
            return Ok(None);
        };
        if let Err(err) = sync_dir(&dir) {
            log::warn!(
                "partial upload renamed into place, but its directory was not synced: {err}"
            );
        }
        Ok(Some(size))
    }
}

impl Drop for StagedUpload {
    fn drop(&mut self) {
        if self.committed {
            return;
        }
        // Its reservations go before the kept bytes are charged as usage.
        drop(self.charge.take());
        if let Some(partial) = self.partial.take() {
            match self.keep_partial(&partial) {
                Ok(Some(bytes)) => {
                    log::info!(
                        "{}: kept {bytes} bytes of the interrupted upload of {} for a resume",
                        self.user,
                        self.target
                    );
                    return;
                }
                Ok(None) => {}
                Err(err) => log::warn!(
                    "{}: cannot keep the interrupted upload of {}: {err}",
                    self.user,
                    self.target
                ),
            }
        }
        if let Err(err) = fs::remove_file(&self.temp) {
            log::warn!("cannot remove temporary {}: {err}", self.temp.display());
        }
    }
}

impl LocalFs {
    /// Removes staged uploads (`*.part` in the staging dir) that a previous run left behind:
    /// a crash, or transfers still running when a shutdown's grace period ran out. Only the
    /// server calls this at start; admin commands share the directory with a running server.
    ///
    /// # Errors
    /// When the staging dir cannot be read; files that cannot be removed are skipped.
    pub fn remove_stale_staged(&self) -> io::Result<usize> {
        let mut removed = 0;
        for entry in fs::read_dir(&self.tmp)? {
            let path = entry?.path();
            if path.extension().is_some_and(|e| e == "part") && fs::remove_file(&path).is_ok() {
                removed += 1;
            }
        }
        Ok(removed)
    }

    /// A new, empty temporary file in the staging dir.
    pub(super) fn create_temp(&self) -> Result<(PathBuf, File), StoreError> {
        // A random name makes a clash unlikely; create_new makes one harmless, so retry.
        for _ in 0..8 {
            let name = format!("{:016x}.part", rand::random::<u64>());
            match self
                .staging
                .open_with(&name, OpenOptions::new().write(true).create_new(true))
            {
                Ok(file) => return Ok((self.tmp.join(name), file.into_std())),
                Err(err) if err.kind() == io::ErrorKind::AlreadyExists => continue,
                Err(err) => return Err(err.into()),
            }
        }
        Err(StoreError::Io(io::Error::other(
            "no free temporary file name",
        )))
    }

    /// Syncs the staged file `temp` to disk, so that a crash after the rename that publishes
    /// it never leaves a "complete" empty file. Returns its size.
    pub(super) fn sync_staged(&self, temp: &Path) -> Result<u64, StoreError> {
        let name = temp.file_name().ok_or(StoreError::NotFound)?;
        let staged = self.staging.open(name)?;
        let size = staged.metadata()?.len();
        staged.sync_all()?;
        Ok(size)
    }

    /// Renames the staged file `temp` over `target`, from the staging dir's handle into the
    /// target directory's. Returns that directory, to be synced.
    pub(super) fn publish(&self, temp: &Path, target: Target) -> Result<Dir, StoreError> {
        let name = temp.file_name().ok_or(StoreError::NotFound)?;
        self.staging.rename(name, &target.dir, &target.name)?;
        Ok(target.dir)
    }

    /// Puts a staged upload in place once every byte is written (see [`crate::storage::ByteSink::commit`]).
    ///
    /// # Errors
    /// As for [`crate::storage::ByteSink::commit`].
    pub fn commit(&self, mut staged: StagedUpload) -> Result<(), StoreError> {
        // Synced before the user's lock is taken: a large file's fsync must not hold up the
        // user's other changes.
        let size = self
            .sync_staged(&staged.temp)
            .inspect_err(|_| staged.partial = None)?;
        if staged.client.as_ref().is_some_and(ClientProbe::gone) {
            return Err(StoreError::Interrupted);
        }
        // A complete upload that cannot be committed is dropped, not kept as interrupted.
        staged.partial = None;
        // Outlives the change below: dropping a charge takes the user's lock.
        let mut charge = staged.charge.take().unwrap_or_default();
        let user = Arc::clone(&staged.user);
        let dir = self.change(&user, |tx| {
            // Resolve and measure again under the user's lock: the tree may have changed
            // while the bytes arrived (the old file renamed away, or replaced).
            let target = write_target(&self.home(&user)?, &staged.target)?;
            let replaced = target.existing.as_ref().map(Metadata::len);
            let bytes = i128::from(size) - i128::from(replaced.unwrap_or(0));
            let files = i128::from(replaced.is_none());
            tx.settle(&mut charge);
            tx.fits(bytes, files)?;
            tx.mark()?;
            let dir = self.publish(&staged.temp, target)?;
            staged.committed = true;
            tx.record(bytes, files);
            Ok(dir)
        })?;
        if let Err(err) = sync_dir(&dir) {
            log::warn!("upload renamed into place, but its directory was not synced: {err}");
        }
        Ok(())
    }
}
