//! Small JSON records on disk (accounts, invitations, the usage ledger), written so that a
//! reader never sees half a file: the bytes go to a temp file beside the target first.

use std::fs::{self, OpenOptions};
use std::io::{self, Write};
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};

/// How a temp file is made.
#[derive(Clone, Copy)]
pub struct TempFile {
    /// Permission bits of the new file (before the umask).
    pub mode: u32,
    /// fsync it before it is linked or renamed into place (records that must survive a crash).
    pub sync: bool,
}

impl TempFile {
    /// Writes `bytes` to a new `<stem>.json.tmp-<random hex>` in `dir`, removed again if the
    /// write fails. Readers skip such names: only finished records end in `.json`.
    ///
    /// # Errors
    /// Creating, writing or syncing the file.
    pub fn write(self, dir: &Path, stem: &str, bytes: &[u8]) -> io::Result<PathBuf> {
        let tmp = dir.join(format!("{stem}.json.tmp-{:016x}", rand::random::<u64>()));
        let written = OpenOptions::new()
            .write(true)
            .create_new(true)
            .mode(self.mode)
            .open(&tmp)
            .and_then(|mut file| {
                file.write_all(bytes)?;
                if self.sync { file.sync_all() } else { Ok(()) }
            });
        match written {
            Ok(()) => Ok(tmp),
            Err(e) => {
                // Best effort: the write already failed, the temp file is garbage either way.
                let _ = fs::remove_file(&tmp);
                Err(e)
            }
        }
    }

    /// [`TempFile::write`], then renamed over `target` (atomic replace).
    ///
    /// # Errors
    /// Writing the temp file or renaming it; the temp file is removed then.
    pub fn replace(self, dir: &Path, stem: &str, bytes: &[u8], target: &Path) -> io::Result<()> {
        let tmp = self.write(dir, stem, bytes)?;
        fs::rename(&tmp, target).inspect_err(|_| {
            let _ = fs::remove_file(&tmp);
        })
    }
}
