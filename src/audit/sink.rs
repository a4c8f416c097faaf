//! The [`AuditSink`] trait, size-based [`Rotation`] of log files and the [`JsonLinesSink`]
//! that writes `audit.jsonl`.

use std::fs::{self, File, OpenOptions};
use std::io::{self, Write};
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};

use super::Event;

/// Where audit events go. Called only from the [`AuditLog`](crate::actors::audit_log::AuditLog) actor, in order.
pub trait AuditSink: Send + 'static {
    /// Writes a batch. On error the whole batch is offered again later, so a sink should write
    /// it in one piece where it can.
    ///
    /// # Errors
    /// Any I/O error; the events are kept.
    fn write(&mut self, events: &[Event]) -> io::Result<()>;

    /// Makes everything written so far durable.
    ///
    /// # Errors
    /// Any I/O error.
    fn flush(&mut self) -> io::Result<()>;

    /// Names the sink in error logs.
    fn name(&self) -> String {
        "audit sink".to_owned()
    }

    /// Opens its file again by name (SIGHUP, after logrotate moved it away); a sink without
    /// a file has nothing to do. On an error the old file stays in use.
    ///
    /// # Errors
    /// The file cannot be opened.
    fn reopen(&mut self) -> io::Result<()> {
        Ok(())
    }
}

/// Opens `path` for appending, creating it with mode 0600.
fn open_append(path: &Path) -> io::Result<File> {
    OpenOptions::new()
        .append(true)
        .create(true)
        .mode(0o600)
        .open(path)
}

/// When a log file is rotated: past `max_bytes` (0: never), `path` becomes `path.1`, `path.1`
/// becomes `path.2` .. and `path.<keep>` is removed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Rotation {
    /// Size at which the file is rotated before the next write; 0 never rotates.
    pub max_bytes: u64,
    /// Rotated files kept.
    pub keep: usize,
}

impl Rotation {
    /// Never rotate.
    pub const NEVER: Rotation = Rotation {
        max_bytes: 0,
        keep: 0,
    };
}

/// An append-only log file that rotates by size.
#[derive(Debug)]
pub(crate) struct RotatingFile {
    pub(crate) path: PathBuf,
    pub(crate) file: File,
    pub(crate) size: u64,
    rotation: Rotation,
    /// The last rotation failed: logged once, not per batch.
    rotation_failed: bool,
}

impl RotatingFile {
    pub(crate) fn open(path: &Path, rotation: Rotation) -> io::Result<RotatingFile> {
        let file = open_append(path)?;
        let size = file.metadata()?.len();
        Ok(RotatingFile {
            path: path.to_owned(),
            file,
            size,
            rotation,
            rotation_failed: false,
        })
    }

    /// Opens the path again (the file there now, or a new one); the old stays on an error.
    pub(crate) fn reopen(&mut self) -> io::Result<()> {
        let file = open_append(&self.path)?;
        self.size = file.metadata()?.len();
        self.file = file;
        Ok(())
    }

    fn numbered(&self, n: usize) -> PathBuf {
        let mut name = self.path.clone().into_os_string();
        name.push(format!(".{n}"));
        PathBuf::from(name)
    }

    /// Appends `buf` in one write, rotating first if it would carry the file past the cap (a
    /// batch larger than the cap goes alone into a fresh file).
    pub(crate) fn append(&mut self, buf: &[u8]) -> io::Result<()> {
        let len = buf.len() as u64;
        if self.rotation.max_bytes > 0
            && self.size > 0
            && self.size.saturating_add(len) > self.rotation.max_bytes
        {
            match self.rotate() {
                // Keep appending to the full file rather than lose events.
                Err(e) if !self.rotation_failed => {
                    log::error!("audit log {}: rotation failed: {e}", self.path.display());
                    self.rotation_failed = true;
                }
                Err(_) => {}
                Ok(()) => self.rotation_failed = false,
            }
        }
        self.file.write_all(buf)?;
        self.size = self.size.saturating_add(len);
        Ok(())
    }

    fn rotate(&mut self) -> io::Result<()> {
        self.file.sync_data()?;
        if self.rotation.keep == 0 {
            self.file.set_len(0)?;
            self.size = 0;
            return Ok(());
        }
        match fs::remove_file(self.numbered(self.rotation.keep)) {
            Err(e) if e.kind() != io::ErrorKind::NotFound => return Err(e),
            _ => {}
        }
        for n in (1..self.rotation.keep).rev() {
            match fs::rename(self.numbered(n), self.numbered(n + 1)) {
                Err(e) if e.kind() != io::ErrorKind::NotFound => return Err(e),
                _ => {}
            }
        }
        fs::rename(&self.path, self.numbered(1))?;
        self.file = open_append(&self.path)?;
        self.size = 0;
        log::info!("audit log {}: rotated", self.path.display());
        Ok(())
    }
}

/// Appends each event as one JSON line to `audit.jsonl`.
#[derive(Debug)]
pub struct JsonLinesSink {
    file: RotatingFile,
}

impl JsonLinesSink {
    /// Opens (or creates) `path` for appending, rotating it as `rotation` says.
    ///
    /// # Errors
    /// The file cannot be opened.
    pub fn open(path: &Path, rotation: Rotation) -> io::Result<JsonLinesSink> {
        Ok(JsonLinesSink {
            file: RotatingFile::open(path, rotation)?,
        })
    }
}

impl AuditSink for JsonLinesSink {
    fn write(&mut self, events: &[Event]) -> io::Result<()> {
        let mut buf = Vec::with_capacity(events.len() * 200);
        for event in events {
            serde_json::to_writer(&mut buf, event)?;
            buf.push(b'\n');
        }
        // One write_all per batch: with O_APPEND a failure leaves at most one torn batch.
        self.file.append(&buf)
    }

    fn flush(&mut self) -> io::Result<()> {
        self.file.file.sync_data()
    }

    fn name(&self) -> String {
        self.file.path.display().to_string()
    }

    fn reopen(&mut self) -> io::Result<()> {
        self.file.reopen()
    }
}
