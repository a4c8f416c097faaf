//! `pget -n N REMOTE [LOCAL]`: one file downloaded in N segments over N connections at once,
//! each its own login (with REST at its segment's start), written in place into the local
//! file, as lftp's pget does. What each segment has is kept beside the file in
//! `LOCAL.ferry-pget` while it runs, so a pget that failed or was interrupted goes on where
//! every segment stopped when run again.

use std::fs::{self, File, OpenOptions};
use std::io::{self, Write};
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use serde::{Deserialize, Serialize};

use crate::client::ftp::ClientError;
use crate::client::render::Progress;

use super::{Shell, ShellError, base_name};

/// Connections when `-n` is not given (lftp's default is 5).
const DEFAULT_SEGMENTS: usize = 4;
/// The most connections one pget opens.
const MAX_SEGMENTS: usize = 32;
/// A segment smaller than this is not worth a connection of its own.
const MIN_SEGMENT: u64 = 1 << 20;
/// How often the progress and the state file are brought up to date.
const TICK: Duration = Duration::from_millis(200);
/// How often the state file is written.
const SAVE_EVERY: Duration = Duration::from_secs(1);

/// One segment: bytes `start..end` of the file, of which `done` are in.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
struct Segment {
    start: u64,
    end: u64,
    done: u64,
}

/// The state file: which file, how big, and what each segment has.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
struct Plan {
    remote: String,
    size: u64,
    segments: Vec<Segment>,
}

impl Plan {
    /// `size` bytes cut into at most `wanted` segments of at least [`MIN_SEGMENT`].
    fn new(remote: &str, size: u64, wanted: usize) -> Plan {
        let most = usize::try_from(size / MIN_SEGMENT)
            .unwrap_or(usize::MAX)
            .max(1);
        let count = wanted.clamp(1, most) as u64;
        let step = size.div_ceil(count).max(1);
        let segments = (0..count)
            .map(|i| Segment {
                start: (i * step).min(size),
                end: ((i + 1) * step).min(size),
                done: 0,
            })
            .filter(|s| s.start < s.end || size == 0)
            .collect();
        Plan {
            remote: remote.to_owned(),
            size,
            segments,
        }
    }

    fn done(&self) -> u64 {
        self.segments.iter().map(|s| s.done).sum()
    }
}

/// Where the plan of `local` is kept.
fn state_path(local: &Path) -> PathBuf {
    let mut name = local.as_os_str().to_owned();
    name.push(".ferry-pget");
    PathBuf::from(name)
}

/// Writes one segment's bytes at their place in the file.
struct SegmentWriter {
    file: File,
    at: u64,
    done: Arc<AtomicU64>,
}

impl Write for SegmentWriter {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        self.file.write_all_at(buf, self.at)?;
        self.at += buf.len() as u64;
        self.done.fetch_add(buf.len() as u64, Ordering::Relaxed);
        Ok(buf.len())
    }

    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}

impl Shell {
    pub(super) fn pget(&mut self, args: &[&str]) -> Result<(), ShellError> {
        let usage = || ShellError::Usage("pget [-n N] REMOTE [LOCAL]");
        let (wanted, rest) = match args {
            ["-n", n, rest @ ..] => {
                let n: usize = n.parse().map_err(|_| usage())?;
                if n == 0 || n > MAX_SEGMENTS {
                    return Err(ShellError::Message(format!(
                        "pget -n takes 1 to {MAX_SEGMENTS} connections"
                    )));
                }
                (n, rest)
            }
            rest => (DEFAULT_SEGMENTS, rest),
        };
        let (remote, local) = match rest {
            [remote] => (*remote, PathBuf::from(base_name(remote))),
            [remote, local] => (*remote, PathBuf::from(local)),
            _ => return Err(usage()),
        };
        let login = self.login_again()?;
        // Every connection starts at the home: the path must not depend on this one's cwd.
        let path = if remote.starts_with('/') {
            remote.to_owned()
        } else {
            let cwd = self.client()?.pwd()?;
            format!("{}/{remote}", cwd.trim_end_matches('/'))
        };
        let size = self.remote_size(&path)?.ok_or_else(|| {
            ShellError::Message(format!(
                "pget {remote}: the server does not tell its size (SIZE)"
            ))
        })?;
        let state = state_path(&local);
        let mut plan = fs::read_to_string(&state)
            .ok()
            .and_then(|text| serde_json::from_str::<Plan>(&text).ok())
            .filter(|plan| plan.remote == path && plan.size == size && local.exists())
            .unwrap_or_else(|| Plan::new(&path, size, wanted));
        let resumed = plan.done();
        let local_err = |source| {
            ShellError::Client(ClientError::Local {
                path: local.display().to_string(),
                source,
            })
        };
        let file = OpenOptions::new()
            .create(true)
            .write(true)
            .truncate(resumed == 0)
            .open(&local)
            .map_err(local_err)?;
        file.set_len(size).map_err(local_err)?;
        save(&state, &plan).map_err(local_err)?;

        let abort = self.reset_abort();
        let mut progress = Progress::start(remote, Some(size), self.opts.progress);
        progress.resume_at(resumed);
        let counters: Vec<Arc<AtomicU64>> = plan
            .segments
            .iter()
            .map(|s| Arc::new(AtomicU64::new(s.done)))
            .collect();
        let last = plan.segments.len().saturating_sub(1);
        let workers: Vec<_> = plan
            .segments
            .iter()
            .enumerate()
            .filter(|(_, s)| s.start + s.done < s.end)
            .map(|(i, segment)| {
                let login = login.clone();
                let path = path.clone();
                let abort = Arc::clone(&abort);
                let done = Arc::clone(&counters[i]);
                let segment = *segment;
                let writer = file.try_clone();
                let name = local.display().to_string();
                std::thread::spawn(move || -> Result<(), ClientError> {
                    let file = writer.map_err(|source| ClientError::Local {
                        path: name.clone(),
                        source,
                    })?;
                    let from = segment.start + segment.done;
                    let mut sink = SegmentWriter {
                        file,
                        at: from,
                        done,
                    };
                    let mut client = login.connect()?;
                    // The last segment reads to the end of the file; the others stop at theirs.
                    let length = (i != last).then(|| segment.end - from);
                    client.retrieve_range(
                        &path,
                        from,
                        length,
                        &mut sink,
                        &name,
                        &mut |_| {},
                        &abort,
                    )?;
                    client.quit();
                    Ok(())
                })
            })
            .collect();

        let mut shown = resumed;
        let mut saved = Instant::now();
        while workers.iter().any(|w| !w.is_finished()) {
            std::thread::sleep(TICK);
            let now: u64 = counters.iter().map(|c| c.load(Ordering::Relaxed)).sum();
            progress.advance(now.saturating_sub(shown));
            shown = now;
            if saved.elapsed() >= SAVE_EVERY {
                record(&mut plan, &counters);
                // What the state file says is in must be on disk first, so that a resume after
                // a crash trusts only bytes that are there (syncing as it goes also leaves
                // little for the end). A failed save costs only the resume point.
                if file.sync_data().is_ok() {
                    let _ = save(&state, &plan);
                }
                saved = Instant::now();
            }
        }
        let failures: Vec<String> = workers
            .into_iter()
            .filter_map(|w| match w.join() {
                Ok(Ok(())) => None,
                Ok(Err(e)) => Some(e.to_string()),
                Err(_) => Some("a segment's thread failed".to_owned()),
            })
            .collect();
        let now: u64 = counters.iter().map(|c| c.load(Ordering::Relaxed)).sum();
        progress.advance(now.saturating_sub(shown));
        record(&mut plan, &counters);
        let complete = plan.segments.iter().all(|s| s.start + s.done >= s.end);
        if failures.is_empty() && complete {
            file.sync_all().map_err(local_err)?;
            let _ = fs::remove_file(&state);
            let segments = plan.segments.len();
            self.say(format_args!(
                "{} ({segments} connections)",
                progress.finish()
            ));
            return Ok(());
        }
        progress.abandon();
        file.sync_data().map_err(local_err)?;
        save(&state, &plan).map_err(local_err)?;
        let why = failures
            .first()
            .cloned()
            .unwrap_or_else(|| "cut short".to_owned());
        Err(ShellError::Message(format!(
            "pget {remote}: {} of {} segments failed ({why}); {} of {size} bytes are in {}; \
             pget again to go on",
            failures.len().max(1),
            plan.segments.len(),
            plan.done(),
            local.display()
        )))
    }
}

/// Copies the counters into the plan.
fn record(plan: &mut Plan, counters: &[Arc<AtomicU64>]) {
    for (segment, done) in plan.segments.iter_mut().zip(counters) {
        segment.done = done
            .load(Ordering::Relaxed)
            .min(segment.end - segment.start);
    }
}

/// Writes the plan whole (a temporary file first).
fn save(path: &Path, plan: &Plan) -> io::Result<()> {
    let text = serde_json::to_string(plan).map_err(io::Error::other)?;
    let temporary = path.with_extension("ferry-pget.tmp");
    fs::write(&temporary, text)?;
    fs::rename(&temporary, path)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn segments_cover_the_file_once() {
        for (size, wanted) in [
            (0, 4),
            (10, 4),
            (5 << 20, 4),
            ((7 << 20) + 3, 3),
            (1 << 30, 32),
        ] {
            let plan = Plan::new("/f", size, wanted);
            assert!(!plan.segments.is_empty() || size == 0);
            assert!(plan.segments.len() <= wanted);
            let mut at = 0;
            for s in &plan.segments {
                assert_eq!(s.start, at, "{plan:?}");
                assert!(s.end > s.start || size == 0);
                at = s.end;
            }
            assert_eq!(at, size, "{plan:?}");
        }
        assert_eq!(
            Plan::new("/f", 10, 4).segments.len(),
            1,
            "small files: one connection"
        );
    }
}
