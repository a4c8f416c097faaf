//! The local backend's tests: the jail under attack (links, swaps, special files), listings,
//! and uploads from open to commit or interruption, on real files in a temporary directory.

mod jail;
mod uploads;

use std::ffi::OsString;
use std::fs;
use std::io::{self, Read};
use std::os::unix::fs::{MetadataExt as _, PermissionsExt, symlink};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use tempfile::TempDir;

use super::fs::LocalFs;
use super::jail::sync_dir;
use super::staging::StagedUpload;
use super::upload::{Finish, ReadHandle};
use crate::codec::entry::{FileInfo, FileKind};
use crate::codec::glob::NamePattern;
use crate::quota::QuotaLedger;
use crate::storage::vpath::VPath;
use crate::storage::{PathLimits, StoreError, WriteMode};

/// A data dir with homes for "alice" and "bob" and a staging dir.
pub(super) struct Fixture {
    dir: TempDir,
    store: LocalFs,
}

impl Fixture {
    fn new() -> Fixture {
        let dir = TempDir::new().expect("temp dir");
        let store = LocalFs::new(dir.path().join("home"), dir.path().join("tmp")).expect("storage");
        store.create_home("alice").expect("alice home");
        store.create_home("bob").expect("bob home");
        Fixture { dir, store }
    }

    fn home(&self, user: &str) -> PathBuf {
        self.dir.path().join("home").join(user)
    }

    fn write(&self, rel: &str, bytes: &[u8]) {
        fs::write(self.dir.path().join("home").join(rel), bytes).expect("write fixture");
    }

    fn read(&self, rel: &str) -> Vec<u8> {
        fs::read(self.dir.path().join("home").join(rel)).expect("read fixture")
    }

    fn temps(&self) -> usize {
        fs::read_dir(self.dir.path().join("tmp"))
            .expect("tmp dir")
            .count()
    }
}

pub(super) fn vp(path: &str) -> VPath {
    VPath::root().resolve(path).expect("valid test path")
}

pub(super) fn pattern(text: &str) -> NamePattern {
    NamePattern::parse(text).expect("a wildcard pattern")
}

pub(super) fn staged(finish: Finish) -> StagedUpload {
    match finish {
        Finish::Staged { staged, .. } => staged,
        Finish::InPlace(_) => panic!("expected a staged upload"),
    }
}

pub(super) fn names(infos: &[FileInfo]) -> Vec<&str> {
    infos.iter().map(|info| info.name.as_str()).collect()
}

pub(super) fn read_all(handle: ReadHandle) -> Vec<u8> {
    let mut bytes = Vec::new();
    let mut file = handle.file;
    file.read_to_end(&mut bytes).expect("read");
    bytes
}
