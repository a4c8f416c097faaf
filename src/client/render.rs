//! What the client prints: listings as tables (cli-table), transfer progress bars (indicatif,
//! only on a terminal) and the one-line summary after each transfer.

use std::io;
use std::time::{Duration, Instant};

use cli_table::Cell;
use indicatif::{HumanBytes, MultiProgress, ProgressBar, ProgressDrawTarget, ProgressStyle};

use crate::client::entries::{Modified, RemoteEntry};

/// Why a local file operation failed, as the end of a sentence: `permission denied`, not
/// `Permission denied (os error 13)`. `missing` says what NotFound means where it happened
/// (`no such directory` when creating a file).
pub fn io_reason(e: &io::Error, missing: &str) -> String {
    let reason = match e.kind() {
        io::ErrorKind::NotFound => return missing.to_owned(),
        io::ErrorKind::PermissionDenied => "permission denied",
        io::ErrorKind::AlreadyExists => "it already exists",
        io::ErrorKind::IsADirectory => "it is a directory",
        io::ErrorKind::NotADirectory => "a part of the path is not a directory",
        io::ErrorKind::StorageFull => "the disk is full",
        io::ErrorKind::QuotaExceeded => "the disk quota is exceeded",
        io::ErrorKind::ReadOnlyFilesystem => "the file system is read-only",
        _ => {
            let text = e.to_string();
            let text = match text.find(" (os error ") {
                Some(at) => text[..at].to_owned(),
                None => text,
            };
            let mut chars = text.chars();
            return match chars.next() {
                Some(first) => first.to_lowercase().chain(chars).collect(),
                None => text,
            };
        }
    };
    reason.to_owned()
}

/// Renders entries as a table: name, type, size, modified.
pub fn entries_table(entries: &[RemoteEntry]) -> String {
    let rows: Vec<_> = entries
        .iter()
        .map(|e| {
            vec![
                e.name.clone().cell(),
                e.kind.as_str().cell(),
                e.size.map_or_else(String::new, |s| s.to_string()).cell(),
                e.modified.map(Modified::local).unwrap_or_default().cell(),
            ]
        })
        .collect();
    match crate::table::render(&["name", "type", "size", "modified"], rows) {
        Ok(shown) => shown,
        // cli-table fails only on broken terminal settings; fall back to plain lines.
        Err(_) => entries.iter().map(|e| format!("{}\n", e.name)).collect(),
    }
}

/// Renders entries as one JSON array for scripts (`dir --json`): `name`, `type` (`file`,
/// `dir`, `link`, `other`), `size` (bytes, or null), `modified` (RFC 3339 UTC, `YYYY-MM-DD`
/// when the listing gives only a day, or null).
pub fn entries_json(entries: &[RemoteEntry]) -> String {
    let items: Vec<serde_json::Value> = entries
        .iter()
        .map(|e| {
            let modified = e.modified.map(|m| match m {
                Modified::At(t) | Modified::Minute(t) => t.to_string(),
                Modified::Day(d) => d.to_string(),
            });
            serde_json::json!({
                "name": e.name,
                "type": e.kind.as_str(),
                "size": e.size,
                "modified": modified,
            })
        })
        .collect();
    serde_json::Value::Array(items).to_string()
}

/// Progress of one transfer: a bar on a terminal, nothing otherwise.
pub struct Progress {
    label: String,
    bar: Option<ProgressBar>,
    started: Instant,
    bytes: u64,
}

impl Progress {
    /// Starts a progress display for `label`; `total` is the expected size when known.
    pub fn start(label: &str, total: Option<u64>, visible: bool) -> Progress {
        let bar = visible.then(|| {
            let bar = match total {
                Some(total) => ProgressBar::new(total),
                None => ProgressBar::new_spinner(),
            };
            bar.set_draw_target(ProgressDrawTarget::stderr());
            let template = if total.is_some() {
                "{msg} [{bar:30}] {bytes}/{total_bytes} {bytes_per_sec} ETA {eta}"
            } else {
                "{msg} {spinner} {bytes} {bytes_per_sec}"
            };
            if let Ok(style) = ProgressStyle::with_template(template) {
                bar.set_style(style.progress_chars("=> "));
            }
            bar.set_message(label.to_owned());
            bar.enable_steady_tick(Duration::from_millis(200));
            bar
        });
        Progress {
            label: label.to_owned(),
            bar,
            started: Instant::now(),
            bytes: 0,
        }
    }

    /// Counts `n` more bytes.
    pub fn advance(&mut self, n: u64) {
        self.bytes += n;
        if let Some(bar) = &self.bar {
            bar.inc(n);
        }
    }

    /// Sets the starting position of a resumed transfer.
    pub fn resume_at(&mut self, offset: u64) {
        if let Some(bar) = &self.bar {
            bar.set_position(offset);
        }
    }

    /// Ends the display; returns the summary line: name, bytes, time, rate. The bar is
    /// cleared, so the summary takes its line (indicatif leaves the cursor behind a finished
    /// bar, and the next output would run on from it).
    pub fn finish(self) -> String {
        let elapsed = self.started.elapsed();
        if let Some(bar) = &self.bar {
            bar.finish_and_clear();
        }
        format!("{}: {}", self.label, summary(self.bytes, elapsed))
    }

    /// Ends the display after a failure; the bar is cleared for the error message.
    pub fn abandon(self) {
        if let Some(bar) = &self.bar {
            bar.finish_and_clear();
        }
    }
}

/// Progress of many transfers at once (`mget`, `mput`, `mirror`): on a terminal, a line per
/// running transfer and a total line below them; nothing otherwise. Shared by the workers.
pub struct Bars {
    multi: Option<MultiProgress>,
    total: Option<ProgressBar>,
    quiet: bool,
}

impl Bars {
    /// Starts the display for `files` transfers of `bytes` in all.
    pub fn start(files: usize, bytes: u64, visible: bool, quiet: bool) -> Bars {
        let multi = visible.then(|| MultiProgress::with_draw_target(ProgressDrawTarget::stderr()));
        let total = multi.as_ref().map(|multi| {
            let bar = multi.add(ProgressBar::new(bytes));
            if let Ok(style) = ProgressStyle::with_template(
                "total {msg} [{bar:30}] {bytes}/{total_bytes} {bytes_per_sec} ETA {eta}",
            ) {
                bar.set_style(style.progress_chars("=> "));
            }
            bar.set_message(format!("0/{files} files"));
            bar.enable_steady_tick(Duration::from_millis(200));
            bar
        });
        Bars {
            multi,
            total,
            quiet,
        }
    }

    /// A line for one transfer, above the total.
    pub fn file(&self, label: &str, size: Option<u64>) -> FileBar {
        let bar = self.multi.as_ref().map(|multi| {
            let bar = match &self.total {
                Some(total) => multi.insert_before(total, ProgressBar::new(size.unwrap_or(0))),
                None => multi.add(ProgressBar::new(size.unwrap_or(0))),
            };
            if let Ok(style) = ProgressStyle::with_template(
                "{msg} [{bar:30}] {bytes}/{total_bytes} {bytes_per_sec}",
            ) {
                bar.set_style(style.progress_chars("=> "));
            }
            bar.set_message(label.to_owned());
            bar
        });
        FileBar {
            label: label.to_owned(),
            bar,
            total: self.total.clone(),
            started: Instant::now(),
            bytes: 0,
        }
    }

    /// Counts a finished transfer (`done` of them so far, of `files`).
    pub fn count(&self, done: usize, files: usize) {
        if let Some(total) = &self.total {
            total.set_message(format!("{done}/{files} files"));
        }
    }

    /// Prints a confirmation line above the bars (nothing when quiet).
    pub fn say(&self, line: impl std::fmt::Display) {
        if self.quiet {
            return;
        }
        match &self.multi {
            Some(multi) => multi.suspend(|| println!("{line}")),
            None => println!("{line}"),
        }
    }

    /// Prints a warning or an error line on stderr, above the bars.
    pub fn warn(&self, line: impl std::fmt::Display) {
        match &self.multi {
            Some(multi) => multi.suspend(|| eprintln!("ferry: {line}")),
            None => eprintln!("ferry: {line}"),
        }
    }

    /// Clears the display.
    pub fn finish(self) {
        if let Some(total) = &self.total {
            total.finish_and_clear();
        }
    }
}

/// One transfer's line of [`Bars`]; it adds to the total as it goes.
pub struct FileBar {
    label: String,
    bar: Option<ProgressBar>,
    total: Option<ProgressBar>,
    started: Instant,
    bytes: u64,
}

impl FileBar {
    /// Counts `n` more bytes.
    pub fn advance(&mut self, n: u64) {
        self.bytes += n;
        for bar in self.bar.iter().chain(&self.total) {
            bar.inc(n);
        }
    }

    /// The transfer starts again at `offset` (a resume): what was there counts as done.
    pub fn resume_at(&mut self, offset: u64) {
        if let Some(bar) = &self.bar {
            bar.set_position(offset);
        }
    }

    /// The bytes this transfer moved (not what a resume found there).
    pub fn bytes(&self) -> u64 {
        self.bytes
    }

    /// Removes the line; returns the summary: name, bytes, time, rate.
    pub fn finish(self) -> String {
        if let Some(bar) = &self.bar {
            bar.finish_and_clear();
        }
        format!(
            "{}: {}",
            self.label,
            summary(self.bytes, self.started.elapsed())
        )
    }
}

impl Drop for FileBar {
    fn drop(&mut self) {
        if let Some(bar) = &self.bar {
            bar.finish_and_clear();
        }
    }
}

/// `1048576 bytes in 0.25 s (4.00 MiB/s)`.
pub fn summary(bytes: u64, elapsed: Duration) -> String {
    let secs = elapsed.as_secs_f64().max(0.001);
    // Precision loss only past 2^53 bytes per second, far beyond any link.
    #[allow(clippy::cast_precision_loss, clippy::cast_possible_truncation)]
    let rate = (bytes as f64 / secs) as u64;
    format!(
        "{bytes} bytes in {:.2} s ({}/s)",
        elapsed.as_secs_f64(),
        HumanBytes(rate)
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::client::entries::EntryKind;

    #[test]
    fn table_has_every_entry() {
        let entries = vec![
            RemoteEntry {
                name: "a.txt".into(),
                kind: EntryKind::File,
                size: Some(5),
                modified: Some(Modified::Day(jiff::civil::date(2026, 1, 1))),
            },
            RemoteEntry {
                name: "sub".into(),
                kind: EntryKind::Dir,
                size: None,
                modified: None,
            },
        ];
        let table = entries_table(&entries);
        for needle in ["name", "a.txt", "file", "5", "sub", "dir", "2026-01-01"] {
            assert!(table.contains(needle), "{needle} missing in\n{table}");
        }
    }

    #[test]
    fn io_errors_read_as_sentences() {
        let os = |n| io::Error::from_raw_os_error(n);
        assert_eq!(io_reason(&os(2), "no such directory"), "no such directory");
        assert_eq!(io_reason(&os(13), "-"), "permission denied");
        assert_eq!(io_reason(&os(28), "-"), "the disk is full");
        // EMLINK has no kind of its own: the OS text without its number.
        assert_eq!(io_reason(&os(31), "-"), "too many links");
    }

    #[test]
    fn summary_line() {
        assert_eq!(
            summary(4 * 1024 * 1024, Duration::from_secs(1)),
            "4194304 bytes in 1.00 s (4.00 MiB/s)"
        );
    }
}
