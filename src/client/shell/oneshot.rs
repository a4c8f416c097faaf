//! One transfer on its own, for scripts: `ferry get URL [LOCAL | -]` and `ferry put LOCAL
//! URL` connect, log in as `login` does, transfer as `get` and `put` do, and QUIT. Only
//! `get URL -` has a path of its own: the file goes to standard output and nothing else does.

use std::io::{self, Write};
use std::path::{Path, PathBuf};

use crate::client::OneShot;
use crate::client::ftp::ClientError;
use crate::client::render::Progress;

use super::{Shell, ShellError, base_name};

const STDOUT: &str = "standard output";

impl Shell {
    /// Runs `job`, then closes the connection.
    ///
    /// # Errors
    /// [`ShellError::Connect`], [`ShellError::Login`], or the transfer's failure.
    pub fn one_shot(&mut self, job: &OneShot) -> Result<(), ShellError> {
        let (OneShot::Get { target, .. } | OneShot::Put { target, .. }) = job;
        self.open(&target.host, Some(target.port))?;
        let user = target.user.clone().or_else(|| self.netrc_login());
        if user.is_none() && !self.opts.interactive {
            return Err(ShellError::Message(format!(
                "no user name: write ftp://USER@{}/..., or give the host a login in ~/.netrc",
                target.host
            )));
        }
        self.login(user.as_deref())?;
        let path = target.dir.as_deref().unwrap_or_default();
        let result = match job {
            OneShot::Get { local, .. } => match local.as_deref() {
                Some("-") => self.download_to_stdout(path),
                // As `get` and `put`, with their retries.
                local => self.get(&[path, &local_path(path, local).to_string_lossy()]),
            },
            OneShot::Put { local, .. } => self.put(&[local, &remote_path(local, path)]),
        };
        self.close();
        result
    }

    fn download_to_stdout(&mut self, remote: &str) -> Result<(), ShellError> {
        let size = self.remote_size(remote)?;
        let abort = self.reset_abort();
        let mut progress = Progress::start(remote, size, self.opts.progress);
        let mut out = io::stdout().lock();
        let result = self
            .client()?
            .retrieve(
                remote,
                0,
                &mut out,
                STDOUT,
                &mut |n| progress.advance(n),
                &abort,
            )
            .and_then(|_| {
                out.flush().map_err(|source| ClientError::Local {
                    path: STDOUT.to_owned(),
                    source,
                })
            });
        // No summary: it would land among the data. The bar is on stderr.
        progress.abandon();
        result.map_err(|e| match e {
            ClientError::Refused(_) => ShellError::about(format!("cannot download {remote}"))(e),
            e => e.into(),
        })
    }
}

/// Where `get URL [LOCAL]` writes: LOCAL, into LOCAL when it is a directory, else the remote
/// name here.
fn local_path(remote: &str, local: Option<&str>) -> PathBuf {
    match local {
        Some(dir) if Path::new(dir).is_dir() => Path::new(dir).join(base_name(remote)),
        Some(file) => PathBuf::from(file),
        None => PathBuf::from(base_name(remote)),
    }
}

/// Where `put LOCAL URL` writes: the URL's path, or into it under the local name when it ends
/// in `/` or is empty (the login directory).
fn remote_path(local: &str, path: &str) -> String {
    if path.is_empty() || path.ends_with('/') {
        format!("{path}{}", base_name(local))
    } else {
        path.to_owned()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn one_shot_paths() {
        assert_eq!(remote_path("dir/a.txt", "/in/"), "/in/a.txt");
        assert_eq!(remote_path("a.txt", "/in/b.txt"), "/in/b.txt");
        assert_eq!(remote_path("dir/a.txt", ""), "a.txt");
        assert_eq!(local_path("/pub/f.bin", None), PathBuf::from("f.bin"));
        assert_eq!(local_path("/pub/f.bin", Some("g")), PathBuf::from("g"));
        let dir = tempfile::tempdir().expect("tempdir");
        let into = dir.path().to_str().expect("utf-8");
        assert_eq!(
            local_path("/pub/f.bin", Some(into)),
            dir.path().join("f.bin")
        );
    }
}
