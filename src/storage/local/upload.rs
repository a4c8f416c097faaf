//! An upload in progress as the blocking core sees it, and a file opened for reading.

use std::fs::File;
use std::io::{self, Write};

use crate::quota::{Charge, QuotaError};
use crate::storage::vpath::VPath;

use super::inplace::*;
use super::staging::*;

/// A regular file opened for reading.
#[derive(Debug)]
pub struct ReadHandle {
    /// The open file, positioned at the requested offset.
    pub file: File,
    /// The file's full size in bytes (not reduced by the offset).
    pub size: u64,
}

/// An upload in progress: where its bytes go, and how it ends. Write it with
/// [`Upload::write`], which charges the quota first.
#[derive(Debug)]
pub struct Upload {
    /// The path the client sees (for STOU, the name chosen).
    pub target: VPath,
    /// The quota accounting. Declared before `finish`, so that it is dropped first: its
    /// reservations are given back before an interrupted upload is kept (which charges the
    /// bytes as usage), and an in-place upload's growth is in the ledger before its lock goes.
    pub charge: Charge,
    /// Where the bytes go and what completes it.
    pub finish: Finish,
}

/// Where an upload's bytes go, and how it is completed.
#[derive(Debug)]
pub enum Finish {
    /// STOR: a temporary file; pass `staged` to [`super::LocalFs::commit`] (a sink does, at its commit) once
    /// every byte is written. Reserve with [`Charge::add`] before writing to `file` directly.
    Staged {
        /// The temporary file.
        file: File,
        /// What the commit needs.
        staged: StagedUpload,
    },
    /// APPE, REST+STOR, STOU: the target itself, opened only when the first byte arrives.
    InPlace(InPlace),
}

/// Why a chunk of an upload could not be written.
#[derive(Debug, thiserror::Error)]
pub enum UploadError {
    /// Refused by the quota (552), or the ledger is unavailable (451).
    #[error(transparent)]
    Quota(#[from] QuotaError),
    /// Writing the file failed (451).
    #[error(transparent)]
    Io(#[from] io::Error),
}

impl Upload {
    /// Writes the next chunk, charged to the quota before it reaches the file, so the file
    /// never holds a byte beyond the limit.
    ///
    /// # Errors
    /// [`UploadError::Quota`] (nothing of the chunk is written), [`UploadError::Io`].
    pub fn write(&mut self, data: &[u8]) -> Result<(), UploadError> {
        match &mut self.finish {
            Finish::Staged { file, .. } => {
                self.charge.add(data.len() as u64)?;
                Ok(file.write_all(data)?)
            }
            Finish::InPlace(place) => place.write(&mut self.charge, data),
        }
    }

    /// After the last byte of a successful transfer: an in-place upload that received none
    /// still creates (APPE, STOU) or truncates (REST+STOR) its file, as an empty upload must.
    ///
    /// # Errors
    /// As for [`Upload::write`].
    pub fn complete(&mut self) -> Result<(), UploadError> {
        match &mut self.finish {
            Finish::Staged { .. } => Ok(()),
            Finish::InPlace(place) => place.opened(&mut self.charge).map(drop),
        }
    }

    /// After a quota refusal: an in-place upload's file goes back to its length when the
    /// upload opened it (removed, if the upload created it); a staged upload keeps nothing,
    /// not even as an interrupted upload (see [`Upload::discard_partial`]).
    pub fn roll_back(&mut self) {
        match &mut self.finish {
            Finish::InPlace(place) => place.roll_back(&mut self.charge),
            Finish::Staged { staged, .. } => staged.partial = None,
        }
    }

    /// After a failure on the server's side (disk full, an I/O error): a staged upload keeps
    /// nothing when dropped, since what it holds may not be what the client sent. An in-place
    /// upload keeps what it wrote, as after any other interruption.
    pub fn discard_partial(&mut self) {
        if let Finish::Staged { staged, .. } = &mut self.finish {
            staged.partial = None;
        }
    }
}
