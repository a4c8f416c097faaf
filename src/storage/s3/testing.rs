//! A local S3 server for tests and benchmarks: s3s-fs (`cargo install s3s-fs --version 0.14.1
//! --features binary --locked`, which `scripts/test` does) on a port the OS assigns, over a
//! temporary directory, checking SigV4 signatures with a fixed key pair.

use std::io::{self, BufRead as _, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::mpsc;
use std::time::Duration;

use crate::config::{Config, Secret, StorageKind};

/// The access key the test server accepts.
pub const ACCESS_KEY: &str = "ferry-test-key";
/// Its secret.
pub const SECRET_KEY: &str = "ferry-test-secret";
/// How long the server may take to say where it listens.
const START_TIME: Duration = Duration::from_secs(20);

/// A running s3s-fs, killed when dropped. Its buckets are the directories under its root.
#[derive(Debug)]
pub struct S3TestServer {
    child: Child,
    root: PathBuf,
    endpoint: String,
}

impl S3TestServer {
    /// Starts s3s-fs over `root` (created), on 127.0.0.1 and a port the OS assigns.
    ///
    /// # Errors
    /// s3s-fs is not installed, or did not say where it listens within 20 s.
    pub fn start(root: &Path) -> io::Result<S3TestServer> {
        std::fs::create_dir_all(root)?;
        let mut child = Command::new(program())
            .args(["--host", "127.0.0.1", "--port", "0"])
            .args(["--access-key", ACCESS_KEY, "--secret-key", SECRET_KEY])
            .arg(root)
            .env("RUST_LOG", "info")
            .env("NO_COLOR", "1")
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .map_err(|e| io::Error::new(e.kind(), format!("cannot start s3s-fs: {e}")))?;
        let Some(stdout) = child.stdout.take() else {
            return Err(io::Error::other("s3s-fs has no stdout"));
        };
        // The log goes on after the line we need: a thread reads it to the end, so the server
        // never blocks on a full pipe.
        let (tx, rx) = mpsc::channel();
        std::thread::spawn(move || {
            for line in BufReader::new(stdout).lines().map_while(Result::ok) {
                if let Some(at) = line.find("server is running at ") {
                    let url = line[at + "server is running at ".len()..].trim().to_owned();
                    let _ = tx.send(url);
                }
            }
        });
        match rx.recv_timeout(START_TIME) {
            Ok(endpoint) => Ok(S3TestServer {
                child,
                root: root.to_owned(),
                endpoint,
            }),
            Err(_) => {
                let _ = child.kill();
                let _ = child.wait();
                Err(io::Error::other("s3s-fs did not report its address"))
            }
        }
    }

    /// Its URL, `http://127.0.0.1:PORT`.
    pub fn endpoint(&self) -> &str {
        &self.endpoint
    }

    /// Creates a bucket (a directory under the root).
    ///
    /// # Errors
    /// The directory cannot be created.
    pub fn create_bucket(&self, name: &str) -> io::Result<()> {
        std::fs::create_dir_all(self.root.join(name))
    }

    /// Where a bucket's objects are on disk.
    pub fn bucket_dir(&self, name: &str) -> PathBuf {
        self.root.join(name)
    }

    /// `config` set to serve from `bucket` on this server (with its keys in the file's keys).
    pub fn configure(&self, config: &mut Config, bucket: &str) {
        config.storage = StorageKind::S3;
        config.s3_bucket = Some(bucket.to_owned());
        config.s3_endpoint = Some(self.endpoint.clone());
        config.s3_allow_http = true;
        config.s3_access_key_id = Some(ACCESS_KEY.to_owned());
        config.s3_secret_access_key = Some(Secret(SECRET_KEY.to_owned()));
    }

    /// Stops the server at once (a bucket that goes away mid-session).
    pub fn kill(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Drop for S3TestServer {
    fn drop(&mut self) {
        self.kill();
    }
}

/// s3s-fs on PATH, else where `cargo install` puts it.
fn program() -> PathBuf {
    let on_path = std::env::var_os("PATH")
        .is_some_and(|path| std::env::split_paths(&path).any(|dir| dir.join("s3s-fs").is_file()));
    if on_path {
        return PathBuf::from("s3s-fs");
    }
    let cargo_home = std::env::var_os("CARGO_HOME")
        .map(PathBuf::from)
        .or_else(|| std::env::var_os("HOME").map(|home| PathBuf::from(home).join(".cargo")));
    cargo_home.map_or_else(|| PathBuf::from("s3s-fs"), |home| home.join("bin/s3s-fs"))
}
