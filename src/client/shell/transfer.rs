//! The transfer commands: get and put (with resume), mget and mput, and the progress report;
//! a download's local file is created only at its first byte.

use std::fs::{self, File, OpenOptions};
use std::io::{self, Seek, SeekFrom, Write};
use std::path::{Path, PathBuf};

use crate::client::entries::{self, EntryKind};
use crate::client::ftp::{ClientError, Polled};
use crate::client::render::{self, Progress};

use super::batch::{self, Direction, Job, Settings, with_retries};
use super::{Shell, ShellError, base_name, take_flag};

impl Shell {
    pub(super) fn get(&mut self, args: &[&str]) -> Result<(), ShellError> {
        let (verify, args) = take_flag(args, "--verify");
        let (resume, rest) = take_flag(&args, "-c");
        let (remote, local) = match rest.as_slice() {
            [remote] => (*remote, base_name(remote).to_owned()),
            [remote, local] => (*remote, (*local).to_owned()),
            _ => return Err(ShellError::Usage("get [-c] [--verify] REMOTE [LOCAL]")),
        };
        let local = Path::new(&local);
        let mut resume = resume;
        let abort = std::sync::Arc::clone(&self.abort);
        with_retries(self.opts.retries, &abort, remote, &warn, |attempt| {
            if attempt > 0 {
                self.reconnect_if_lost()?;
            }
            let mut wrote = false;
            let result = self.download(remote, local, resume, &mut wrote);
            // Once this download has written to the file, a retry goes on from there.
            resume |= wrote;
            self.forget_if_lost(&result);
            result
        })?;
        if verify {
            self.verify(remote, local)?;
        }
        Ok(())
    }

    /// One download attempt; `wrote` tells whether it wrote to the local file.
    pub(super) fn download(
        &mut self,
        remote: &str,
        local: &Path,
        resume: bool,
        wrote: &mut bool,
    ) -> Result<(), ShellError> {
        let local_name = local.display().to_string();
        let local_err = |source| {
            ShellError::Client(ClientError::Local {
                path: local_name.clone(),
                source,
            })
        };
        let size = self.remote_size(remote)?;
        let offset = if resume {
            match fs::metadata(local) {
                Ok(meta) => meta.len(),
                Err(e) if e.kind() == io::ErrorKind::NotFound => 0,
                Err(e) => return Err(local_err(e)),
            }
        } else {
            0
        };
        if resume && size == Some(offset) {
            self.say(format_args!(
                "{local_name} is already complete ({offset} bytes)."
            ));
            return Ok(());
        }
        let mut sink = LazyFile::new(local.to_path_buf(), resume);
        let abort = self.reset_abort();
        let mut progress = Progress::start(remote, size, self.opts.progress);
        progress.resume_at(offset);
        let client = self.client()?;
        let result = client.retrieve(
            remote,
            offset,
            &mut sink,
            &local_name,
            &mut |n| progress.advance(n),
            &abort,
        );
        let created = sink.created();
        *wrote = created;
        let result = result.and_then(|n| {
            sink.finish()
                .map(|()| n)
                .map_err(|source| ClientError::Local {
                    path: local_name.clone(),
                    source,
                })
        });
        match result {
            // The local file could not even be made: say so as a sentence.
            Err(ClientError::Local { path, source }) if !created => {
                progress.abandon();
                Err(ShellError::Message(format!(
                    "cannot create {path}: {}",
                    render::io_reason(&source, "no such directory")
                )))
            }
            result => self.report(progress, result, format!("cannot download {remote}")),
        }
    }

    pub(super) fn put(&mut self, args: &[&str]) -> Result<(), ShellError> {
        let (verify, args) = take_flag(args, "--verify");
        let (resume, rest) = take_flag(&args, "-c");
        let (local, remote) = match rest.as_slice() {
            [local] => (*local, base_name(local).to_owned()),
            [local, remote] => (*local, (*remote).to_owned()),
            _ => return Err(ShellError::Usage("put [-c] [--verify] LOCAL [REMOTE]")),
        };
        let local = Path::new(local);
        // A failed upload of a new name goes on from what arrived; over a file that was
        // there, it starts again (ferryd keeps the old file until the new one is whole).
        let new_name = resume || self.remote_size(&remote)?.is_none();
        let mut resume = resume;
        let abort = std::sync::Arc::clone(&self.abort);
        with_retries(self.opts.retries, &abort, &remote, &warn, |attempt| {
            if attempt > 0 {
                self.reconnect_if_lost()?;
                resume |= new_name;
            }
            let result = self.upload(local, &remote, resume);
            self.forget_if_lost(&result);
            result
        })?;
        if verify {
            self.verify(&remote, local)?;
        }
        Ok(())
    }

    pub(super) fn upload(
        &mut self,
        local: &Path,
        remote: &str,
        resume: bool,
    ) -> Result<(), ShellError> {
        let local_name = local.display().to_string();
        let local_err = |source| {
            ShellError::Client(ClientError::Local {
                path: local_name.clone(),
                source,
            })
        };
        let mut file = File::open(local).map_err(|e| {
            ShellError::Message(format!(
                "cannot open {local_name}: {}",
                render::io_reason(&e, "no such file")
            ))
        })?;
        let meta = file.metadata().map_err(local_err)?;
        // A pipe or FIFO has no length to show progress against.
        let size = meta.is_file().then_some(meta.len());
        let offset = if resume {
            self.remote_size(remote)?.unwrap_or(0)
        } else {
            0
        };
        if resume && size.is_some_and(|size| offset >= size) {
            self.say(format_args!(
                "{remote} is already complete ({offset} bytes)."
            ));
            return Ok(());
        }
        // Only a resume seeks, so that a pipe can be uploaded too.
        if offset > 0 {
            file.seek(SeekFrom::Start(offset)).map_err(local_err)?;
        }
        let abort = self.reset_abort();
        let mut progress = Progress::start(&local_name, size, self.opts.progress);
        progress.resume_at(offset);
        let client = self.client()?;
        // Resuming appends the rest (APPE), as lftp and curl do.
        let result = client.store(
            remote,
            resume && offset > 0,
            &mut Polled(file),
            &local_name,
            &mut |n| progress.advance(n),
            &abort,
        );
        self.report(progress, result, format!("cannot upload to {remote}"))
    }

    /// The summary line of a transfer, or its error; the server's refusal is named by `what`.
    fn report(
        &self,
        progress: Progress,
        result: Result<u64, ClientError>,
        what: String,
    ) -> Result<(), ShellError> {
        match result {
            Ok(_) => {
                self.say(progress.finish());
                Ok(())
            }
            Err(e) => {
                progress.abandon();
                Err(match e {
                    ClientError::Refused(_) => ShellError::about(what)(e),
                    e => e.into(),
                })
            }
        }
    }

    /// SIZE of a remote file in binary mode; `None` when the server will not say.
    pub(super) fn remote_size(&mut self, remote: &str) -> Result<Option<u64>, ShellError> {
        Ok(batch::remote_size(self.client()?, remote)?)
    }

    pub(super) fn mget(&mut self, args: &[&str]) -> Result<(), ShellError> {
        let (settings, patterns) = self.batch_options(args, "mget [-P N] [--verify] PATTERN...")?;
        let cwd = self.client()?.pwd()?;
        let mut jobs = Vec::new();
        for pattern in patterns {
            let (dir, name_pattern) = match pattern.rsplit_once('/') {
                Some((dir, name)) => (Some(if dir.is_empty() { "/" } else { dir }), name),
                None => (None, pattern),
            };
            let glob = glob::Pattern::new(name_pattern)
                .map_err(|e| ShellError::Message(format!("{pattern}: {e}")))?;
            let abort = self.reset_abort();
            let entries = self.client()?.list(dir, &abort)?;
            for entry in entries.iter().filter(|e| {
                e.kind == EntryKind::File
                    && entries::is_plain_name(&e.name)
                    && glob.matches(&e.name)
            }) {
                let shown = match dir {
                    Some("/") => format!("/{}", entry.name),
                    Some(d) => format!("{d}/{}", entry.name),
                    None => entry.name.clone(),
                };
                jobs.push(Job {
                    direction: Direction::Get,
                    remote: absolute(&cwd, &shown),
                    local: PathBuf::from(&entry.name),
                    size: entry.size,
                    modified: None,
                    ask_time: false,
                    resume: false,
                    label: shown,
                });
            }
        }
        if jobs.is_empty() {
            return Err(ShellError::Message("no remote file matches".into()));
        }
        self.run_batch(jobs, settings)
    }

    pub(super) fn mput(&mut self, args: &[&str]) -> Result<(), ShellError> {
        let (settings, patterns) = self.batch_options(args, "mput [-P N] [--verify] PATTERN...")?;
        let cwd = self.client()?.pwd()?;
        let mut jobs = Vec::new();
        for pattern in patterns {
            let paths =
                glob::glob(pattern).map_err(|e| ShellError::Message(format!("{pattern}: {e}")))?;
            for path in paths.filter_map(Result::ok).filter(|p| p.is_file()) {
                let name = base_name(&path.to_string_lossy()).to_owned();
                jobs.push(Job {
                    direction: Direction::Put,
                    remote: absolute(&cwd, &name),
                    size: fs::metadata(&path).ok().map(|m| m.len()),
                    label: path.display().to_string(),
                    local: path,
                    modified: None,
                    ask_time: false,
                    resume: false,
                });
            }
        }
        if jobs.is_empty() {
            return Err(ShellError::Message("no local file matches".into()));
        }
        self.run_batch(jobs, settings)
    }

    /// `-P N` and `--verify` of a batch command; the rest are its operands (at least one).
    pub(super) fn batch_options<'a>(
        &self,
        args: &[&'a str],
        usage: &'static str,
    ) -> Result<(Settings, Vec<&'a str>), ShellError> {
        let mut settings = Settings {
            parallel: self.opts.parallel,
            retries: self.opts.retries,
            verify: false,
            visible: self.opts.progress,
            quiet: self.opts.quiet,
        };
        let mut rest = Vec::new();
        let mut words = args.iter();
        while let Some(word) = words.next() {
            match *word {
                "-P" | "--parallel" => {
                    settings.parallel = words
                        .next()
                        .and_then(|n| n.parse().ok())
                        .filter(|n| (1..=MAX_PARALLEL).contains(n))
                        .ok_or_else(|| {
                            ShellError::Message(format!("-P takes 1 to {MAX_PARALLEL} connections"))
                        })?;
                }
                "--verify" => settings.verify = true,
                operand => rest.push(operand),
            }
        }
        if rest.is_empty() {
            return Err(ShellError::Usage(usage));
        }
        Ok((settings, rest))
    }

    /// Runs `jobs` on their own connections; prints the total and says what failed.
    pub(super) fn run_batch(
        &mut self,
        jobs: Vec<Job>,
        settings: Settings,
    ) -> Result<(), ShellError> {
        let login = self.login_again()?;
        let total = jobs.len();
        let abort = self.reset_abort();
        let started = std::time::Instant::now();
        let report = batch::run(&login, jobs, settings, &abort);
        if total > 1 {
            self.say(format_args!(
                "{} of {total} files, {}",
                report.done,
                render::summary(report.bytes, started.elapsed())
            ));
        }
        if abort.load(std::sync::atomic::Ordering::Relaxed) {
            return Err(ClientError::Aborted.into());
        }
        partial(&report, total)
    }
}

/// Connections one batch command opens at most.
const MAX_PARALLEL: usize = 64;

/// The error of a batch some of whose transfers failed (each was named as it failed).
pub(super) fn partial(report: &batch::Report, total: usize) -> Result<(), ShellError> {
    match report.failed.as_slice() {
        [] => Ok(()),
        failed => Err(ShellError::Partial {
            failed: failed.len(),
            total,
        }),
    }
}

/// `cwd/path`, unless `path` is absolute.
pub(super) fn absolute(cwd: &str, path: &str) -> String {
    if path.starts_with('/') {
        path.to_owned()
    } else {
        format!("{}/{path}", cwd.trim_end_matches('/'))
    }
}

fn warn(line: String) {
    eprintln!("ferry: {line}");
}

/// The local side of a download: created (or opened for appending) at the first byte, so a
/// refused RETR leaves no empty file behind; a partial file stays for `get -c`.
pub(super) struct LazyFile {
    path: PathBuf,
    append: bool,
    file: Option<File>,
}

impl LazyFile {
    /// A sink for `path`, appended to when `append` (a resume).
    pub(super) fn new(path: PathBuf, append: bool) -> LazyFile {
        LazyFile {
            path,
            append,
            file: None,
        }
    }

    /// Whether the file has been created (or opened for appending).
    pub(super) fn created(&self) -> bool {
        self.file.is_some()
    }

    fn open(&mut self) -> io::Result<&mut File> {
        if self.file.is_none() {
            let file = if self.append {
                OpenOptions::new()
                    .create(true)
                    .append(true)
                    .open(&self.path)?
            } else {
                File::create(&self.path)?
            };
            self.file = Some(file);
        }
        self.file
            .as_mut()
            .ok_or_else(|| io::Error::other("local file not open"))
    }

    /// Makes sure the file exists (an empty download writes no byte) and is flushed.
    pub(super) fn finish(mut self) -> io::Result<()> {
        self.open()?.flush()
    }
}

impl Write for LazyFile {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        self.open()?.write(buf)
    }

    fn flush(&mut self) -> io::Result<()> {
        match &mut self.file {
            Some(file) => file.flush(),
            None => Ok(()),
        }
    }
}
