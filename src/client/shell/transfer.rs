//! The transfer commands: get and put (with resume), mget and mput, and the progress report;
//! a download's local file is created only at its first byte.

use std::fs::{self, File, OpenOptions};
use std::io::{self, Seek, SeekFrom, Write};
use std::path::{Path, PathBuf};

use crate::client::entries::EntryKind;
use crate::client::ftp::{ClientError, Polled};
use crate::client::render::{self, Progress};

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
        self.download(remote, Path::new(&local), resume)?;
        if verify {
            self.verify(remote, Path::new(&local))?;
        }
        Ok(())
    }

    pub(super) fn download(
        &mut self,
        remote: &str,
        local: &Path,
        resume: bool,
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
        let mut sink = LazyFile {
            path: local.to_path_buf(),
            append: resume,
            file: None,
        };
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
        let created = sink.file.is_some();
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
        self.upload(Path::new(local), &remote, resume)?;
        if verify {
            self.verify(&remote, Path::new(local))?;
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
        let reply = self.client()?.command(&format!("SIZE {remote}"))?;
        Ok(if reply.code == 213 {
            reply.text().trim().parse().ok()
        } else {
            None
        })
    }

    pub(super) fn mget(&mut self, patterns: &[&str]) -> Result<(), ShellError> {
        let mut matched = 0;
        for pattern in patterns {
            let (dir, name_pattern) = match pattern.rsplit_once('/') {
                Some((dir, name)) => (Some(if dir.is_empty() { "/" } else { dir }), name),
                None => (None, *pattern),
            };
            let glob = glob::Pattern::new(name_pattern)
                .map_err(|e| ShellError::Message(format!("{pattern}: {e}")))?;
            let abort = self.reset_abort();
            let entries = self.client()?.list(dir, &abort)?;
            for entry in entries
                .iter()
                .filter(|e| e.kind == EntryKind::File && glob.matches(&e.name))
            {
                let remote = match dir {
                    Some("/") => format!("/{}", entry.name),
                    Some(d) => format!("{d}/{}", entry.name),
                    None => entry.name.clone(),
                };
                self.download(&remote, Path::new(&entry.name), false)?;
                matched += 1;
            }
        }
        if matched == 0 {
            return Err(ShellError::Message("no remote file matches".into()));
        }
        Ok(())
    }

    pub(super) fn mput(&mut self, patterns: &[&str]) -> Result<(), ShellError> {
        let mut matched = 0;
        for pattern in patterns {
            let paths =
                glob::glob(pattern).map_err(|e| ShellError::Message(format!("{pattern}: {e}")))?;
            for path in paths.filter_map(Result::ok).filter(|p| p.is_file()) {
                let remote = base_name(&path.to_string_lossy()).to_owned();
                self.upload(&path, &remote, false)?;
                matched += 1;
            }
        }
        if matched == 0 {
            return Err(ShellError::Message("no local file matches".into()));
        }
        Ok(())
    }
}

/// The local side of a download: created (or opened for appending) at the first byte, so a
/// refused RETR leaves no empty file behind; a partial file stays for `get -c`.
struct LazyFile {
    path: PathBuf,
    append: bool,
    file: Option<File>,
}

impl LazyFile {
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
    fn finish(mut self) -> io::Result<()> {
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
