//! Many transfers at once (`mget`, `mput`, `mirror`): a list of [`Job`]s shared by N workers,
//! each with its own login, under one progress display. A failed transfer does not stop the
//! others; each is tried again on a passing failure, resuming where it stopped
//! ([`with_retries`], which the shell's own `get` and `put` use too).

use std::collections::VecDeque;
use std::fs::{self, File, OpenOptions};
use std::io::{self, Seek, SeekFrom};
use std::path::PathBuf;
use std::sync::Mutex;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use jiff::Timestamp;

use crate::client::ftp::{ClientError, FtpClient, Polled};
use crate::client::render::{Bars, FileBar};
use crate::client::stream::Security;

use super::ShellError;
use super::transfer::LazyFile;
use super::verify;

/// The first wait before a retry; it doubles each time, up to [`MAX_BACKOFF`].
const FIRST_BACKOFF: Duration = Duration::from_secs(1);
/// The longest wait before a retry.
const MAX_BACKOFF: Duration = Duration::from_secs(16);

/// What a connection like the shell's needs to log in.
#[derive(Clone)]
pub(super) struct Login {
    pub host: String,
    pub port: u16,
    pub user: String,
    pub password: String,
    pub timeout: Duration,
    pub active: bool,
    pub security: Security,
}

impl Login {
    /// A new connection, logged in.
    pub fn connect(&self) -> Result<FtpClient, ClientError> {
        let (mut client, _) = FtpClient::connect(
            &self.host,
            self.port,
            self.timeout,
            self.active,
            &self.security,
        )?;
        client.login(&self.user, &self.password)?;
        Ok(client)
    }
}

/// Which way a job goes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Direction {
    /// Download.
    Get,
    /// Upload.
    Put,
}

/// One file to transfer.
#[derive(Debug, Clone)]
pub(super) struct Job {
    pub direction: Direction,
    /// The remote path, absolute: every worker's connection starts at the login directory.
    pub remote: String,
    pub local: PathBuf,
    /// The source's size, when known.
    pub size: Option<u64>,
    /// The source's modification time, given to the copy.
    pub modified: Option<Timestamp>,
    /// Ask the server for the exact time (MDTM) after a download: `modified` is only a
    /// listing's minute or day.
    pub ask_time: bool,
    /// Go on from what the target already has.
    pub resume: bool,
    /// What progress and messages call it.
    pub label: String,
}

/// How the workers go about it.
#[derive(Debug, Clone, Copy)]
pub(super) struct Settings {
    pub parallel: usize,
    pub retries: u32,
    pub verify: bool,
    pub visible: bool,
    pub quiet: bool,
}

/// What a batch did.
#[derive(Debug, Default)]
pub(super) struct Report {
    pub done: usize,
    pub bytes: u64,
    /// `(label, why)` of each transfer that failed.
    pub failed: Vec<(String, String)>,
}

/// Runs `jobs` on up to `settings.parallel` connections of `login`. Ctrl-C (`abort`) stops
/// them all; what is not done is reported as failed.
pub(super) fn run(login: &Login, jobs: Vec<Job>, settings: Settings, abort: &AtomicBool) -> Report {
    let files = jobs.len();
    let bytes = jobs.iter().filter_map(|j| j.size).sum();
    let bars = Bars::start(files, bytes, settings.visible, settings.quiet);
    let queue = Mutex::new(VecDeque::from(jobs));
    let report = Mutex::new(Report::default());
    let workers = settings.parallel.clamp(1, files.max(1));
    let alive = AtomicUsize::new(workers);
    std::thread::scope(|scope| {
        for _ in 0..workers {
            scope.spawn(|| {
                let mut worker = Worker {
                    login,
                    client: None,
                    features: None,
                };
                worker.work(&queue, &report, &alive, &bars, settings, abort, files);
            });
        }
    });
    bars.finish();
    let mut report = report.into_inner().unwrap_or_else(|e| e.into_inner());
    // Jobs no worker could take (every connection refused, or Ctrl-C).
    let left = queue.into_inner().unwrap_or_else(|e| e.into_inner());
    let why = if abort.load(Ordering::Relaxed) {
        "aborted"
    } else {
        "no connection could be opened"
    };
    report
        .failed
        .extend(left.into_iter().map(|job| (job.label, why.to_owned())));
    report
}

/// One connection working through the queue.
struct Worker<'a> {
    login: &'a Login,
    client: Option<FtpClient>,
    /// The server's FEAT lines, asked once per connection.
    features: Option<Vec<String>>,
}

impl Worker<'_> {
    #[allow(clippy::too_many_arguments)]
    fn work(
        &mut self,
        queue: &Mutex<VecDeque<Job>>,
        report: &Mutex<Report>,
        alive: &AtomicUsize,
        bars: &Bars,
        settings: Settings,
        abort: &AtomicBool,
        files: usize,
    ) {
        loop {
            if abort.load(Ordering::Relaxed) {
                break;
            }
            let Some(job) = queue.lock().unwrap_or_else(|e| e.into_inner()).pop_front() else {
                break;
            };
            // A connection the server refuses (too many sessions) leaves the job to the
            // others, as long as there are others.
            if self.client.is_none() && alive.load(Ordering::Relaxed) > 1 {
                match self.login.connect() {
                    Ok(client) => self.client = Some(client),
                    Err(e) => {
                        bars.warn(format_args!("one connection fewer: {e}"));
                        queue
                            .lock()
                            .unwrap_or_else(|e| e.into_inner())
                            .push_front(job);
                        alive.fetch_sub(1, Ordering::Relaxed);
                        return;
                    }
                }
            }
            let result = self.transfer(&job, bars, settings, abort);
            let mut report = report.lock().unwrap_or_else(|e| e.into_inner());
            match result {
                Ok(summary) => {
                    report.done += 1;
                    report.bytes += summary.1;
                    bars.say(summary.0);
                }
                Err(e) => {
                    bars.warn(format_args!("{}: {e}", job.label));
                    report.failed.push((job.label.clone(), e.to_string()));
                }
            }
            bars.count(report.done + report.failed.len(), files);
        }
        alive.fetch_sub(1, Ordering::Relaxed);
        if let Some(client) = self.client.take() {
            client.quit();
        }
    }

    fn client(&mut self) -> Result<&mut FtpClient, ClientError> {
        if self.client.is_none() {
            self.client = Some(self.login.connect()?);
            self.features = None;
        }
        self.client.as_mut().ok_or(ClientError::NotConnected)
    }

    /// One job with its retries; returns its summary line and the bytes moved.
    fn transfer(
        &mut self,
        job: &Job,
        bars: &Bars,
        settings: Settings,
        abort: &AtomicBool,
    ) -> Result<(String, u64), ShellError> {
        let mut bar = bars.file(&job.label, job.size);
        let mut resume = job.resume;
        // An upload over a file that was there restarts from the beginning after a failure
        // (ferryd keeps the old file until the new one is whole); over a new name it goes on
        // from what arrived.
        let mut existed = None;
        with_retries(
            settings.retries,
            abort,
            &job.label,
            &|line| bars.warn(line),
            |_| {
                let attempt = match job.direction {
                    Direction::Get => self.get_once(job, resume, &mut bar, abort),
                    Direction::Put => self.put_once(job, resume, &mut existed, &mut bar, abort),
                };
                match attempt {
                    Ok(()) => Ok(()),
                    Err((e, wrote)) => {
                        resume |= match job.direction {
                            Direction::Get => wrote,
                            Direction::Put => existed == Some(false),
                        };
                        if e.client_error().is_some_and(ClientError::is_fatal) {
                            self.client = None;
                        }
                        Err(e)
                    }
                }
            },
        )?;
        let mut checked = String::new();
        if settings.verify {
            let (client, features) = self.with_features()?;
            match verify::compare(client, features, &job.remote, &job.local)? {
                verify::Checked::Digest { algo, .. } => checked = format!(", {algo} verified"),
                weak => {
                    if let Some(note) = weak.weak_note(&job.remote) {
                        bars.warn(note);
                    }
                }
            }
        }
        let bytes = bar.bytes();
        Ok((format!("{}{checked}", bar.finish()), bytes))
    }

    /// One download attempt; on failure, also whether the local file now holds a prefix of
    /// this download.
    fn get_once(
        &mut self,
        job: &Job,
        resume: bool,
        bar: &mut FileBar,
        abort: &AtomicBool,
    ) -> Result<(), (ShellError, bool)> {
        let local_err = |source| ClientError::Local {
            path: job.local.display().to_string(),
            source,
        };
        let offset = if resume {
            match fs::metadata(&job.local) {
                Ok(meta) => meta.len(),
                Err(e) if e.kind() == io::ErrorKind::NotFound => 0,
                Err(e) => return Err((local_err(e).into(), false)),
            }
        } else {
            0
        };
        if let Some(parent) = job.local.parent().filter(|p| !p.as_os_str().is_empty()) {
            fs::create_dir_all(parent).map_err(|e| (local_err(e).into(), false))?;
        }
        let mut sink = LazyFile::new(job.local.clone(), resume);
        if !(resume && job.size == Some(offset)) {
            bar.resume_at(offset);
            let client = self.client().map_err(|e| (e.into(), false))?;
            let result = client.retrieve(
                &job.remote,
                offset,
                &mut sink,
                &job.label,
                &mut |n| bar.advance(n),
                abort,
            );
            let wrote = sink.created();
            result.map_err(|e| (e.into(), wrote))?;
        }
        sink.finish().map_err(|e| (local_err(e).into(), true))?;
        let exact = if job.ask_time {
            let client = self.client().map_err(|e| (e.into(), true))?;
            match super::mirror::mdtm(client, &job.remote).map_err(|e| (e.into(), true))? {
                Some(Some(at)) => Some(at.representative()),
                _ => None,
            }
        } else {
            None
        };
        if let Some(modified) = exact.or(job.modified) {
            set_local_mtime(&job.local, modified).map_err(|e| (local_err(e).into(), true))?;
        }
        Ok(())
    }

    /// One upload attempt. `existed` is learnt on the first: whether the remote name was
    /// there before.
    fn put_once(
        &mut self,
        job: &Job,
        resume: bool,
        existed: &mut Option<bool>,
        bar: &mut FileBar,
        abort: &AtomicBool,
    ) -> Result<(), (ShellError, bool)> {
        let fail = |e: ShellError| (e, false);
        let local_err = |source| ClientError::Local {
            path: job.local.display().to_string(),
            source,
        };
        let mut file = File::open(&job.local).map_err(|e| fail(local_err(e).into()))?;
        let client = self.client().map_err(|e| fail(e.into()))?;
        let there = remote_size(client, &job.remote).map_err(|e| fail(e.into()))?;
        existed.get_or_insert(there.is_some());
        let offset = if resume { there.unwrap_or(0) } else { 0 };
        if !(resume && job.size.is_some_and(|size| offset >= size)) {
            if offset > 0 {
                file.seek(SeekFrom::Start(offset))
                    .map_err(|e| fail(local_err(e).into()))?;
            }
            bar.resume_at(offset);
            client
                .store(
                    &job.remote,
                    offset > 0,
                    &mut Polled(file),
                    &job.label,
                    &mut |n| bar.advance(n),
                    abort,
                )
                .map_err(|e| fail(e.into()))?;
        }
        if let Some(modified) = job.modified {
            self.set_remote_mtime(&job.remote, modified)
                .map_err(|e| fail(e.into()))?;
        }
        Ok(())
    }

    /// MFMT (draft-somers-ftp-mfxx) where the server has it; elsewhere the upload keeps the
    /// time it arrived.
    fn set_remote_mtime(&mut self, remote: &str, modified: Timestamp) -> Result<(), ClientError> {
        let (client, features) = self.with_features()?;
        if features.iter().any(|l| l.eq_ignore_ascii_case("MFMT")) {
            let when = modified.strftime("%Y%m%d%H%M%S");
            client.ok(&format!("MFMT {when} {remote}"))?;
        }
        Ok(())
    }

    /// The connection and its FEAT lines, asked once per connection.
    fn with_features(&mut self) -> Result<(&mut FtpClient, &[String]), ClientError> {
        if self.features.is_none() {
            let features = verify::features(self.client()?)?;
            self.features = Some(features);
        }
        match (self.client.as_mut(), self.features.as_deref()) {
            (Some(client), Some(features)) => Ok((client, features)),
            _ => Err(ClientError::NotConnected),
        }
    }
}

/// SIZE of a remote file; `None` when the server will not say (no such file).
pub(super) fn remote_size(
    client: &mut FtpClient,
    remote: &str,
) -> Result<Option<u64>, ClientError> {
    let reply = client.command(&format!("SIZE {remote}"))?;
    if reply.code == 421 {
        return Err(ClientError::Refused(reply));
    }
    Ok(if reply.code == 213 {
        reply.text().trim().parse().ok()
    } else {
        None
    })
}

/// Gives a downloaded file the source's modification time.
pub(super) fn set_local_mtime(path: &std::path::Path, modified: Timestamp) -> io::Result<()> {
    let file = OpenOptions::new().write(true).open(path)?;
    let when = std::time::SystemTime::try_from(modified).map_err(io::Error::other)?;
    file.set_modified(when)
}

/// Whether a failure may pass: the connection was reset or timed out, or the server said so
/// (421 closing, 425 no data connection, 426 transfer aborted, 450 and 451 try later).
pub(super) fn transient(e: &ShellError) -> bool {
    match e.client_error() {
        Some(ClientError::Timeout | ClientError::Closed | ClientError::Data(_)) => true,
        Some(ClientError::Connect { .. }) => true,
        Some(ClientError::Refused(reply)) => matches!(reply.code, 421 | 425 | 426 | 450 | 451),
        _ => false,
    }
}

/// Runs `attempt` (given its number, from 0) until it succeeds, fails for good, or has been
/// retried `retries` times, waiting 1 s, 2 s, 4 s ... in between; each retry is announced
/// through `note`. Ctrl-C (`abort`) ends the waiting.
pub(super) fn with_retries<T>(
    retries: u32,
    abort: &AtomicBool,
    what: &str,
    note: &dyn Fn(String),
    mut attempt: impl FnMut(u32) -> Result<T, ShellError>,
) -> Result<T, ShellError> {
    let mut tried = 0;
    loop {
        match attempt(tried) {
            Err(e) if tried < retries && transient(&e) && !abort.load(Ordering::Relaxed) => {
                let wait = backoff(tried);
                tried += 1;
                note(format!(
                    "{what}: {e} (trying again in {} s: {tried} of {retries})",
                    wait.as_secs()
                ));
                let until = Instant::now() + wait;
                while Instant::now() < until && !abort.load(Ordering::Relaxed) {
                    std::thread::sleep(Duration::from_millis(50));
                }
                if abort.load(Ordering::Relaxed) {
                    return Err(ClientError::Aborted.into());
                }
            }
            result => return result,
        }
    }
}

fn backoff(tried: u32) -> Duration {
    FIRST_BACKOFF
        .saturating_mul(1 << tried.min(8))
        .min(MAX_BACKOFF)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::codec::reply_parser::ServerReply;

    fn refused(code: u16) -> ShellError {
        ShellError::Client(ClientError::Refused(ServerReply {
            code,
            lines: vec![format!("{code} no")],
        }))
    }

    #[test]
    fn passing_failures_are_retried_and_the_rest_are_not() {
        for code in [421, 425, 426, 450, 451] {
            assert!(transient(&refused(code)), "{code}");
        }
        for code in [530, 550, 552, 553] {
            assert!(!transient(&refused(code)), "{code}");
        }
        assert!(transient(&ClientError::Timeout.into()));
        assert!(!transient(&ClientError::Aborted.into()));
        assert!(!transient(&ShellError::Message("local".into())));
    }

    #[test]
    fn backoff_doubles_up_to_a_limit() {
        assert_eq!(backoff(0), Duration::from_secs(1));
        assert_eq!(backoff(2), Duration::from_secs(4));
        assert_eq!(backoff(30), MAX_BACKOFF);
    }

    #[test]
    fn retries_stop_at_success_or_at_the_limit() {
        let abort = AtomicBool::new(false);
        let mut calls = 0;
        let result: Result<u32, ShellError> = with_retries(0, &abort, "x", &|_| {}, |n| {
            calls += 1;
            if n == 0 { Err(refused(426)) } else { Ok(n) }
        });
        assert!(result.is_err(), "no retries allowed");
        assert_eq!(calls, 1);
        let mut calls = 0;
        let result = with_retries(3, &abort, "x", &|_| {}, |_| {
            calls += 1;
            Err::<(), _>(refused(550))
        });
        assert!(result.is_err());
        assert_eq!(calls, 1, "a final refusal is not retried");
    }
}
