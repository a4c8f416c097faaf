//! A PostgreSQL server for tests and benchmarks: Debian's PostgreSQL 15 (`initdb` and
//! `postgres` on the PATH or under /usr/lib/postgresql/15/bin), started on 127.0.0.1 and a
//! free port over a data directory of its own, with fsync off. The cluster is made once per
//! machine (a template under the temporary directory) and copied for every server, so a test
//! pays for a copy and a start, not for `initdb`. Run as root, the server runs as the
//! `postgres` user (PostgreSQL refuses root).

use std::io::{self, BufRead as _, BufReader};
use std::os::unix::process::CommandExt as _;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::{Mutex, OnceLock, mpsc};
use std::time::Duration;

use crate::config::{Config, Secret};

/// The role the tests connect as.
pub const USER: &str = "ferry";
/// Its password (host connections need one: scram-sha-256).
pub const PASSWORD: &str = "ferry-test-password";
/// The database it owns.
pub const DATABASE: &str = "ferry";
/// How long a server may take to accept connections.
const START_TIME: Duration = Duration::from_secs(30);
/// Bumped when the template's making changes, so an old one is not reused.
const TEMPLATE_VERSION: u32 = 1;

/// A running PostgreSQL, stopped (immediate shutdown) when dropped, its directory removed.
#[derive(Debug)]
pub struct PgTestServer {
    child: Option<Child>,
    dir: PathBuf,
    port: u16,
}

impl PgTestServer {
    /// Copies the template cluster and starts a server over the copy.
    ///
    /// # Errors
    /// PostgreSQL is not installed, or the server did not start within 30 s.
    pub fn start() -> io::Result<PgTestServer> {
        let template = template()?;
        let dir = std::env::temp_dir().join(format!("ferry-pg-{}", crate::db::instance_token()));
        copy_tree(&template, &dir)?;
        let mut server = PgTestServer {
            child: None,
            dir,
            port: 0,
        };
        server.restart_on(free_port()?)?;
        Ok(server)
    }

    /// The URL a node connects with, password included.
    pub fn url(&self) -> String {
        format!(
            "postgres://{USER}:{PASSWORD}@127.0.0.1:{}/{DATABASE}",
            self.port
        )
    }

    /// The URL without the password (for `PGPASSWORD` and `database_password_file`).
    pub fn url_without_password(&self) -> String {
        format!("postgres://{USER}@127.0.0.1:{}/{DATABASE}", self.port)
    }

    /// Its port on 127.0.0.1.
    pub fn port(&self) -> u16 {
        self.port
    }

    /// Points `config` at this server.
    pub fn configure(&self, config: &mut Config) {
        config.database_url = Some(Secret(self.url()));
    }

    /// Stops the server at once (the database "goes away"); [`PgTestServer::restart`] brings
    /// it back with its data.
    pub fn stop(&mut self) {
        if let Some(mut child) = self.child.take() {
            // SIGQUIT is PostgreSQL's immediate shutdown: what a crash looks like to clients.
            let _ = nix::sys::signal::kill(
                nix::unistd::Pid::from_raw(child.id().cast_signed()),
                nix::sys::signal::Signal::SIGQUIT,
            );
            let _ = child.wait();
        }
    }

    /// Starts the stopped server again, on the same port, with its data.
    ///
    /// # Errors
    /// As for [`PgTestServer::start`].
    pub fn restart(&mut self) -> io::Result<()> {
        self.stop();
        self.restart_on(self.port)
    }

    fn restart_on(&mut self, port: u16) -> io::Result<()> {
        let mut command = Command::new(program("postgres"));
        command
            .arg("-D")
            .arg(&self.dir)
            .args(["-p", &port.to_string(), "-c", "listen_addresses=127.0.0.1"])
            .arg("-c")
            .arg(format!("unix_socket_directories={}", self.dir.display()))
            // fsync off, but commits still written to the WAL before they return: `stop()`
            // kills the server, and what was committed must survive that as it would a crash.
            .args(["-c", "fsync=off"])
            .args(["-c", "full_page_writes=off", "-c", "max_connections=200"])
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::piped());
        as_postgres(&mut command)?;
        let mut child = command
            .spawn()
            .map_err(|e| io::Error::new(e.kind(), format!("cannot start postgres: {e}")))?;
        let Some(stderr) = child.stderr.take() else {
            return Err(io::Error::other("postgres has no stderr"));
        };
        let (tx, rx) = mpsc::channel();
        // The log goes on after the line we need: a thread reads it to the end, so the server
        // never blocks on a full pipe.
        std::thread::spawn(move || {
            for line in BufReader::new(stderr).lines().map_while(Result::ok) {
                if line.contains("ready to accept connections") {
                    let _ = tx.send(());
                }
            }
        });
        if rx.recv_timeout(START_TIME).is_err() {
            let _ = child.kill();
            let _ = child.wait();
            return Err(io::Error::other(format!(
                "postgres did not start on port {port} within {START_TIME:?}"
            )));
        }
        self.child = Some(child);
        self.port = port;
        Ok(())
    }
}

impl Drop for PgTestServer {
    fn drop(&mut self) {
        self.stop();
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

/// The template cluster, made once per machine: `initdb`, then the test role and database.
fn template() -> io::Result<PathBuf> {
    static TEMPLATE: OnceLock<Mutex<Option<PathBuf>>> = OnceLock::new();
    let mut made = TEMPLATE
        .get_or_init(Mutex::default)
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner);
    if let Some(dir) = made.as_ref() {
        return Ok(dir.clone());
    }
    let dir = std::env::temp_dir().join(format!("ferry-pg-template-v{TEMPLATE_VERSION}"));
    if !dir.join("ready").exists() {
        // Made beside and renamed into place, so test processes that race both finish with
        // one whole template.
        let fresh =
            std::env::temp_dir().join(format!("ferry-pg-template-{}", crate::db::instance_token()));
        make_template(&fresh)?;
        if std::fs::rename(&fresh, &dir).is_err() {
            let _ = std::fs::remove_dir_all(&fresh);
        }
    }
    *made = Some(dir.clone());
    Ok(dir)
}

fn make_template(dir: &Path) -> io::Result<()> {
    let data = dir.join("data");
    std::fs::create_dir_all(&data)?;
    give_to_postgres(dir)?;
    let mut initdb = Command::new(program("initdb"));
    initdb
        .arg("-D")
        .arg(&data)
        .args(["-U", "postgres", "-E", "UTF8", "--locale=C", "--no-sync"])
        .args(["--auth-local=trust", "--auth-host=scram-sha-256"])
        .stdout(Stdio::null())
        .stderr(Stdio::piped());
    as_postgres(&mut initdb)?;
    let out = initdb
        .output()
        .map_err(|e| io::Error::new(e.kind(), format!("cannot run initdb: {e}")))?;
    if !out.status.success() {
        return Err(io::Error::other(format!(
            "initdb failed: {}",
            String::from_utf8_lossy(&out.stderr)
        )));
    }
    let mut server = PgTestServer {
        child: None,
        dir: data.clone(),
        port: 0,
    };
    server.restart_on(free_port()?)?;
    let socket = data.clone();
    let port = server.port;
    let made = crate::db::wait_here(async move {
        let (client, connection) = tokio_postgres::Config::new()
            .host_path(&socket)
            .port(port)
            .user("postgres")
            .dbname("postgres")
            .connect(tokio_postgres::NoTls)
            .await
            .map_err(crate::db::DbError::from)?;
        tokio::spawn(connection);
        // Two statements: CREATE DATABASE cannot run in the implicit transaction of a batch.
        client
            .batch_execute(&format!("CREATE ROLE {USER} LOGIN PASSWORD '{PASSWORD}'"))
            .await
            .map_err(crate::db::DbError::from)?;
        client
            .batch_execute(&format!("CREATE DATABASE {DATABASE} OWNER {USER}"))
            .await
            .map_err(crate::db::DbError::from)
    });
    server.stop();
    // The directory is the template now, not a server's: nothing to remove on drop.
    server.dir = PathBuf::new();
    made.map_err(|e| io::Error::other(format!("cannot make the test role: {e}")))?;
    std::fs::write(dir.join("ready"), b"")
}

/// Copies the template's cluster to `dir`, owned by the server's user.
fn copy_tree(template: &Path, dir: &Path) -> io::Result<()> {
    let status = Command::new("cp")
        .arg("-a")
        .arg(template.join("data"))
        .arg(dir)
        .status()?;
    if !status.success() {
        return Err(io::Error::other("cannot copy the template cluster"));
    }
    Ok(())
}

/// A port on 127.0.0.1 that was free a moment ago.
fn free_port() -> io::Result<u16> {
    Ok(std::net::TcpListener::bind("127.0.0.1:0")?
        .local_addr()?
        .port())
}

/// `name` from the PATH, else from Debian's PostgreSQL 15 directory.
fn program(name: &str) -> PathBuf {
    let debian = Path::new("/usr/lib/postgresql/15/bin").join(name);
    if debian.exists() {
        debian
    } else {
        PathBuf::from(name)
    }
}

/// Run as root, the command runs as `postgres` (PostgreSQL refuses to run as root).
fn as_postgres(command: &mut Command) -> io::Result<()> {
    if !nix::unistd::geteuid().is_root() {
        return Ok(());
    }
    let user = postgres_user()?;
    command.uid(user.uid.as_raw()).gid(user.gid.as_raw());
    Ok(())
}

fn give_to_postgres(dir: &Path) -> io::Result<()> {
    if !nix::unistd::geteuid().is_root() {
        return Ok(());
    }
    let user = postgres_user()?;
    for path in [dir.to_owned(), dir.join("data")] {
        nix::unistd::chown(&path, Some(user.uid), Some(user.gid)).map_err(io::Error::from)?;
    }
    Ok(())
}

fn postgres_user() -> io::Result<nix::unistd::User> {
    nix::unistd::User::from_name("postgres")
        .map_err(io::Error::from)?
        .ok_or_else(|| io::Error::other("no postgres user (install postgresql)"))
}
