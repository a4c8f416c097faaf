//! The test ferryd on S3 storage: an s3s-fs server (`ferry::storage::s3::testing`) on a free
//! port over a temporary directory, a fresh bucket, and `ferryd --storage s3` pointed at it
//! with the keys in the environment. s3s-fs keeps each object as a file at its key under the
//! bucket's directory (a `dir/` marker as a directory), so a user's home can be read on disk
//! there as on the local backend.

use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use ferry::storage::s3::testing::{ACCESS_KEY, S3TestServer, SECRET_KEY};
use tempfile::TempDir;

use super::{TestServer, spawn};

/// The bucket every test server gets (each on its own s3s-fs).
pub const BUCKET: &str = "ferry-e2e";
/// The key prefix: homes are `ferry/<user>/` in the bucket.
pub const PREFIX: &str = "ferry";
/// The operator commands' configuration file in the data dir of a server on S3.
pub const CONFIG: &str = "ferryd.toml";
/// The object the S3 backend writes in a directory made by MKD.
pub const MARKER: &str = ".ferry-dir";

/// Which storage a test's ferryd serves from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Backend {
    /// The home directories under the data dir.
    Local,
    /// A bucket on a local s3s-fs.
    S3,
}

/// The S3 server behind a test's ferryd, killed when dropped.
pub struct S3Bucket {
    server: S3TestServer,
    root: TempDir,
}

impl S3Bucket {
    /// Starts s3s-fs on a fresh directory, with [`BUCKET`] created.
    pub fn start() -> S3Bucket {
        let root = tempfile::Builder::new()
            .prefix("ferry-s3-")
            .tempdir()
            .expect("temp dir for s3s-fs");
        let server = S3TestServer::start(root.path())
            .unwrap_or_else(|e| panic!("{e}: s3s-fs 0.14.1 is needed (scripts/test installs it)"));
        server.create_bucket(BUCKET).expect("create bucket");
        S3Bucket { server, root }
    }

    /// The URL of the S3 server.
    pub fn endpoint(&self) -> &str {
        self.server.endpoint()
    }

    /// The flags that put ferryd on this bucket (credentials go in [`S3Bucket::env`]).
    pub fn args(&self) -> Vec<String> {
        [
            "--storage",
            "s3",
            "--s3-bucket",
            BUCKET,
            "--s3-prefix",
            PREFIX,
            "--s3-endpoint",
            self.endpoint(),
            "--s3-allow-http",
        ]
        .map(str::to_owned)
        .to_vec()
    }

    /// The TOML keys of [`S3Bucket::args`], for the operator commands (which read only the
    /// file); the credentials stay in the environment.
    pub fn config_file(&self) -> String {
        format!(
            "storage = \"s3\"\ns3_bucket = \"{BUCKET}\"\ns3_prefix = \"{PREFIX}\"\n\
             s3_endpoint = \"{}\"\ns3_allow_http = true\n",
            self.endpoint()
        )
    }

    /// The credentials, as the standard AWS environment.
    pub fn env() -> Vec<(String, String)> {
        vec![
            ("AWS_ACCESS_KEY_ID".into(), ACCESS_KEY.into()),
            ("AWS_SECRET_ACCESS_KEY".into(), SECRET_KEY.into()),
        ]
    }

    /// Where `user`'s objects are on the S3 server's disk.
    pub fn home(&self, user: &str) -> PathBuf {
        self.server.bucket_dir(BUCKET).join(PREFIX).join(user)
    }

    /// The S3 server's own files of unfinished multipart uploads (parts, upload records).
    pub fn upload_leftovers(&self) -> Vec<PathBuf> {
        leftovers(self.root.path())
    }

    /// Waits (bounded) until no multipart upload is left open on the S3 server; panics with
    /// what remains.
    pub fn wait_no_uploads(&self) {
        let deadline = Instant::now() + Duration::from_secs(10);
        while !self.upload_leftovers().is_empty() {
            assert!(
                Instant::now() < deadline,
                "multipart uploads left on the S3 server: {:?}",
                self.upload_leftovers()
            );
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    /// The part counts of the objects completed from multipart uploads, read from the ETags
    /// s3s-fs keeps (`<md5 of the parts' md5s>-<parts>`).
    pub fn multipart_part_counts(&self) -> Vec<u32> {
        fn parts_of(etag: &str) -> Option<u32> {
            let (md5, parts) = etag.trim_matches('"').split_once('-')?;
            let hex = md5.len() == 32 && md5.chars().all(|c| c.is_ascii_hexdigit());
            hex.then(|| parts.parse().ok()).flatten()
        }
        fn strings(value: &serde_json::Value, out: &mut Vec<String>) {
            match value {
                serde_json::Value::String(s) => out.push(s.clone()),
                serde_json::Value::Array(items) => items.iter().for_each(|v| strings(v, out)),
                serde_json::Value::Object(map) => map.values().for_each(|v| strings(v, out)),
                _ => {}
            }
        }
        let mut found = Vec::new();
        for entry in std::fs::read_dir(self.root.path()).expect("read the s3s-fs root") {
            let path = entry.expect("dir entry").path();
            if !path.to_string_lossy().ends_with(".internal.json") {
                continue;
            }
            let text = std::fs::read_to_string(&path).expect("read an object's info");
            let value: serde_json::Value = serde_json::from_str(&text).expect("JSON info");
            let mut all = Vec::new();
            strings(&value, &mut all);
            found.extend(all.iter().filter_map(|s| parts_of(s)));
        }
        found
    }

    /// Stops the S3 server at once: the bucket goes away under a running ferryd.
    pub fn kill(&mut self) {
        self.server.kill();
    }
}

/// Files of unfinished multipart uploads in an s3s-fs root (`.upload-<id>.json`,
/// `.upload_id-<id>.part-<n>`, upload metadata).
fn leftovers(root: &Path) -> Vec<PathBuf> {
    std::fs::read_dir(root)
        .expect("read the s3s-fs root")
        .filter_map(Result::ok)
        .map(|e| e.path())
        .filter(|p| {
            p.file_name()
                .and_then(|n| n.to_str())
                .is_some_and(|n| n.starts_with(".upload") || n.contains(".upload-"))
        })
        .collect()
}

impl TestServer {
    /// Starts `ferryd` on a fresh S3 bucket (see [`S3Bucket`]) with the given extra flags.
    pub fn start_s3(extra_args: &[&str]) -> TestServer {
        TestServer::start_on(Backend::S3, extra_args)
    }

    /// Starts `ferryd` on `backend` with the given extra flags.
    pub fn start_on(backend: Backend, extra_args: &[&str]) -> TestServer {
        match backend {
            Backend::Local => TestServer::start(extra_args),
            Backend::S3 => TestServer::spawn_s3(extra_args, true),
        }
    }

    /// [`TestServer::start_on_defaults`] on `backend`: on S3 only the storage flags are added.
    pub fn start_on_defaults_on(backend: Backend) -> TestServer {
        match backend {
            Backend::Local => TestServer::start_on_defaults(),
            Backend::S3 => TestServer::spawn_s3(&[], false),
        }
    }

    /// `ferryd` on a fresh bucket of its own s3s-fs; `lift_caps` as for a local server.
    fn spawn_s3(extra_args: &[&str], lift_caps: bool) -> TestServer {
        let bucket = S3Bucket::start();
        let data_dir = tempfile::Builder::new()
            .prefix("ferry-e2e-")
            .tempdir()
            .expect("create temp data dir");
        let mut args = bucket.args();
        args.extend(extra_args.iter().map(|s| s.to_string()));
        let env = S3Bucket::env();
        std::fs::write(data_dir.path().join(CONFIG), bucket.config_file())
            .expect("write the operator commands' config file");
        let stderr = Arc::new(Mutex::new(Vec::new()));
        let (child, addr) = spawn(data_dir.path(), &args, &env, lift_caps, &stderr);
        TestServer {
            child: Some(child),
            addr,
            data_dir,
            extra_args: args,
            env,
            stderr,
            lift_caps,
            s3: Some(bucket),
        }
    }

    /// One node of a cluster: `ferryd` named `node` on `bucket` (the other nodes' too) and
    /// the database at `database_url`. The configuration file in its data dir, which the
    /// server and the operator commands read, has the bucket's keys and `extra_config`.
    pub fn start_node(
        bucket: &S3Bucket,
        database_url: &str,
        node: &str,
        extra_config: &str,
    ) -> TestServer {
        TestServer::start_node_with(bucket, database_url, node, extra_config, &[])
    }

    /// [`TestServer::start_node`] with `extra_args` on the server's command line.
    pub fn start_node_with(
        bucket: &S3Bucket,
        database_url: &str,
        node: &str,
        extra_config: &str,
        extra_args: &[String],
    ) -> TestServer {
        let data_dir = tempfile::Builder::new()
            .prefix("ferry-e2e-")
            .tempdir()
            .expect("create temp data dir");
        let config_file = data_dir.path().join(CONFIG);
        let config = format!("{}{extra_config}", bucket.config_file());
        std::fs::write(&config_file, config).expect("write the configuration file");
        let mut args = vec!["--config".to_owned(), config_file.display().to_string()];
        args.extend(bucket.args());
        args.extend(["--database-url", database_url, "--node-name", node].map(str::to_owned));
        args.extend(extra_args.iter().cloned());
        let env = S3Bucket::env();
        let stderr = Arc::new(Mutex::new(Vec::new()));
        let (child, addr) = spawn(data_dir.path(), &args, &env, true, &stderr);
        TestServer {
            child: Some(child),
            addr,
            data_dir,
            extra_args: args,
            env,
            stderr,
            lift_caps: true,
            s3: None,
        }
    }

    /// The S3 server and bucket of a server started on S3.
    pub fn s3(&self) -> &S3Bucket {
        self.s3.as_ref().expect("a server on S3 storage")
    }

    /// The S3 server of a server started on S3, to stop it.
    pub fn s3_mut(&mut self) -> &mut S3Bucket {
        self.s3.as_mut().expect("a server on S3 storage")
    }
}

/// A user's home as a client sees it, to compare trees and check what exists (see
/// [`TestServer::home_view`]).
pub struct HomeView {
    path: PathBuf,
    _copy: Option<TempDir>,
}

impl std::ops::Deref for HomeView {
    type Target = Path;

    fn deref(&self) -> &Path {
        &self.path
    }
}

/// Copies the objects under `from` into `to` as S3 has them: no markers, and a directory only
/// where it has a marker or an object below. Returns whether `from` holds either.
fn copy_as_s3_has_it(from: &Path, to: &Path) -> bool {
    let mut exists = false;
    for entry in std::fs::read_dir(from).expect("read the bucket's directory") {
        let entry = entry.expect("dir entry");
        let (path, name) = (entry.path(), entry.file_name());
        if name == MARKER {
            exists = true;
        } else if path.is_dir() {
            let sub = to.join(&name);
            std::fs::create_dir(&sub).expect("create a directory of the view");
            if copy_as_s3_has_it(&path, &sub) {
                exists = true;
            } else {
                std::fs::remove_dir_all(&sub).expect("drop an emptied directory");
            }
        } else {
            std::fs::copy(&path, to.join(&name)).expect("copy an object");
            exists = true;
        }
    }
    exists
}

impl TestServer {
    /// `user`'s home as a client sees it: on local storage the home itself; on S3 a copy of
    /// the user's objects without the directory markers, with the directories S3 has (a
    /// marker, or an object below). s3s-fs keeps emptied directories on its disk where S3
    /// has nothing. Take it again after a change.
    pub fn home_view(&self, user: &str) -> HomeView {
        let home = self.home(user);
        if self.s3.is_none() {
            return HomeView {
                path: home,
                _copy: None,
            };
        }
        let copy = tempfile::Builder::new()
            .prefix("ferry-home-view-")
            .tempdir()
            .expect("temp dir for the home's view");
        if home.is_dir() {
            copy_as_s3_has_it(&home, copy.path());
        }
        HomeView {
            path: copy.path().to_owned(),
            _copy: Some(copy),
        }
    }

    /// Makes what a test wrote straight into `user`'s home what a client would have made: on
    /// S3, each directory below the home gets the marker MKD writes, so an empty one exists.
    pub fn seeded(&self, user: &str) {
        fn mark(dir: &Path, top: bool) {
            if !top {
                std::fs::write(dir.join(MARKER), b"").expect("write a marker");
            }
            for entry in std::fs::read_dir(dir).expect("read a seeded directory") {
                let path = entry.expect("dir entry").path();
                if path.is_dir() {
                    mark(&path, false);
                }
            }
        }
        if self.s3.is_some() {
            mark(&self.home(user), true);
        }
    }
}

/// A flow `fn FLOW(backend: Backend)` as two tests: `LOCAL` on local storage (the test's name
/// from before there were two backends) and `S3` on an S3 bucket.
macro_rules! on_both_backends {
    ($flow:ident: $local:ident, $s3:ident) => {
        #[test]
        fn $local() {
            $flow($crate::common::s3::Backend::Local)
        }

        #[test]
        fn $s3() {
            $flow($crate::common::s3::Backend::S3)
        }
    };
}
pub(crate) use on_both_backends;
