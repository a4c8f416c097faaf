//! vsftpd, an FTP server nobody on this project wrote, on loopback for the client tests: plain
//! FTP, or FTPS with a self-signed certificate (installed by `scripts/test`; it must run as root,
//! as CI does, since it chroots and switches users).
//!
//! The login is anonymous with writes enabled rather than a system user: a local login needs an
//! account made with `useradd`, a password set with `chpasswd` and a PAM service in `/etc/pam.d`,
//! state outside the test that outlives it and that test binaries running at once race on.
//! Anonymous sessions run as the `ftp` account the Debian package creates; everything else
//! (configuration, tree, certificate, log) lives in one temporary directory. vsftpd refuses to
//! chroot into a root the session could write to, so the anonymous root belongs to root and the
//! tests work in its subdirectory [`WRITABLE`], which belongs to `ftp`.

use std::fs::File;
use std::io::{BufRead, BufReader};
use std::net::{Ipv4Addr, TcpListener, TcpStream};
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use tempfile::TempDir;

/// The user to log in as; any password goes.
pub const USER: &str = "anonymous";
/// The password the tests give (vsftpd asks for one but checks nothing).
pub const PASS: &str = "ferry-e2e@example.invalid";
/// The directory under the anonymous root where the session may write.
pub const WRITABLE: &str = "pub";
const VSFTPD: &str = "/usr/sbin/vsftpd";
/// The account anonymous sessions run as (vsftpd's `ftp_username` default).
const ANON_ACCOUNT: &str = "ftp";
/// Passive data ports; vsftpd picks one at random and tries another when it is taken.
const PASV_PORTS: (u16, u16) = (20000, 29999);
const START_TIMEOUT: Duration = Duration::from_secs(20);
/// Tries at a free port: another process may take the one found before vsftpd binds it.
const START_ATTEMPTS: usize = 5;

/// A running vsftpd, killed when dropped.
pub struct Vsftpd {
    child: Child,
    /// Its port on 127.0.0.1.
    pub port: u16,
    /// Where [`WRITABLE`] is on this machine.
    pub files: PathBuf,
    /// The certificate to trust (`ferry --ca-file`), for FTPS.
    pub cert: Option<PathBuf>,
    dir: TempDir,
}

impl Vsftpd {
    /// Starts vsftpd for plain FTP.
    pub fn start() -> Vsftpd {
        Vsftpd::spawn(false)
    }

    /// Starts vsftpd that requires TLS for the login and every data connection
    /// (`force_anon_logins_ssl`, `force_anon_data_ssl`) and, as its default, on data connections
    /// the TLS session of the control connection (`require_ssl_reuse`).
    pub fn start_tls() -> Vsftpd {
        Vsftpd::spawn(true)
    }

    /// `127.0.0.1:PORT`, the target to give `ferry`.
    pub fn target(&self) -> String {
        format!("127.0.0.1:{}", self.port)
    }

    /// vsftpd's log so far: every command and reply (`log_ftp_protocol`) and every transfer.
    pub fn log(&self) -> String {
        std::fs::read_to_string(self.dir.path().join("vsftpd.log")).unwrap_or_default()
    }

    fn spawn(tls: bool) -> Vsftpd {
        let ftp = require();
        let dir = tempfile::Builder::new()
            .prefix("ferry-vsftpd-")
            .tempdir()
            .expect("temp dir");
        // vsftpd enters the anonymous root as the `ftp` account: the path must be searchable.
        set_mode(dir.path(), 0o755);
        let root = dir.path().join("root");
        let files = root.join(WRITABLE);
        let empty = dir.path().join("empty");
        for d in [&root, &files, &empty] {
            std::fs::create_dir(d).expect("vsftpd dir");
            set_mode(d, 0o755);
        }
        std::os::unix::fs::chown(&files, Some(ftp.uid.as_raw()), Some(ftp.gid.as_raw()))
            .expect("chown the writable dir to ftp");
        let cert = tls.then(|| {
            let certs = dir.path().join("tls");
            ferry::tls::generate_self_signed(&certs).expect("self-signed certificate");
            certs
        });
        // A banner of its own, so that a greeting from whoever took the port is not mistaken
        // for this server's.
        let banner = format!("ferry e2e vsftpd {}", dir.path().display());
        let mut attempt = 0;
        loop {
            attempt += 1;
            let port = free_port();
            let conf = dir.path().join("vsftpd.conf");
            let config = config(dir.path(), &root, &empty, port, &banner, cert.as_deref());
            std::fs::write(&conf, config).expect("vsftpd.conf");
            // vsftpd reports a failed start ("500 OOPS: ...") on file descriptor 0, where a
            // session's control connection would be: a file there keeps it.
            let oops = dir.path().join("oops.txt");
            let mut child = Command::new(VSFTPD)
                .arg(&conf)
                .stdin(File::create(&oops).expect("oops file"))
                .stdout(Stdio::null())
                .stderr(Stdio::null())
                .spawn()
                .unwrap_or_else(|e| panic!("spawn {VSFTPD}: {e}"));
            match wait_ready(&mut child, port, &banner) {
                Ok(()) => {
                    return Vsftpd {
                        child,
                        port,
                        files,
                        cert: cert.map(|d| d.join("cert.pem")),
                        dir,
                    };
                }
                Err(why) => {
                    let _ = child.kill();
                    let _ = child.wait();
                    let oops = std::fs::read_to_string(&oops).unwrap_or_default();
                    let raced = why == Failure::Foreign || oops.contains("could not bind");
                    assert!(
                        raced && attempt < START_ATTEMPTS,
                        "vsftpd did not start on port {port} (attempt {attempt}): {why:?}\n{oops}"
                    );
                }
            }
        }
    }
}

impl Drop for Vsftpd {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Fails the test with one line naming what vsftpd lacks here; returns the anonymous account.
fn require() -> nix::unistd::User {
    assert!(
        Path::new(VSFTPD).is_file(),
        "{VSFTPD} is not installed: run scripts/test, which installs it"
    );
    assert!(
        nix::unistd::geteuid().is_root(),
        "vsftpd must be started as root (it chroots and switches users): run the tests as root, as CI does"
    );
    nix::unistd::User::from_name(ANON_ACCOUNT)
        .ok()
        .flatten()
        .unwrap_or_else(|| {
            panic!(
                "there is no {ANON_ACCOUNT} account for vsftpd's anonymous sessions: reinstall vsftpd, whose package creates it"
            )
        })
}

fn set_mode(path: &Path, mode: u32) {
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(mode)).expect("chmod");
}

/// A port that was free a moment ago.
fn free_port() -> u16 {
    TcpListener::bind((Ipv4Addr::LOCALHOST, 0))
        .and_then(|l| l.local_addr())
        .expect("bind a free port")
        .port()
}

fn config(
    dir: &Path,
    root: &Path,
    empty: &Path,
    port: u16,
    banner: &str,
    tls: Option<&Path>,
) -> String {
    let (pasv_min, pasv_max) = PASV_PORTS;
    let mut conf = format!(
        "listen=YES
listen_ipv6=NO
listen_address=127.0.0.1
listen_port={port}
background=NO
ftpd_banner={banner}
local_enable=NO
anonymous_enable=YES
anon_root={root}
write_enable=YES
anon_upload_enable=YES
anon_mkdir_write_enable=YES
anon_other_write_enable=YES
anon_world_readable_only=NO
anon_umask=022
secure_chroot_dir={empty}
pasv_enable=YES
pasv_min_port={pasv_min}
pasv_max_port={pasv_max}
port_enable=YES
max_clients=0
max_per_ip=0
xferlog_enable=YES
log_ftp_protocol=YES
vsftpd_log_file={log}
seccomp_sandbox=NO
",
        root = root.display(),
        empty = empty.display(),
        log = dir.join("vsftpd.log").display(),
    );
    if let Some(certs) = tls {
        conf.push_str(&format!(
            "ssl_enable=YES
allow_anon_ssl=YES
force_anon_logins_ssl=YES
force_anon_data_ssl=YES
require_ssl_reuse=YES
ssl_request_cert=NO
ssl_ciphers=HIGH
rsa_cert_file={cert}
rsa_private_key_file={key}
",
            cert = certs.join("cert.pem").display(),
            key = certs.join("key.pem").display(),
        ));
    }
    conf
}

/// Why a start did not come up.
#[derive(Debug, PartialEq, Eq)]
enum Failure {
    /// vsftpd exited (its reason is in the oops file).
    Exited,
    /// Something else answered on the port.
    Foreign,
    /// Neither a greeting nor an exit within [`START_TIMEOUT`].
    Timeout,
}

/// Waits until vsftpd greets with `banner` on `port`.
fn wait_ready(child: &mut Child, port: u16, banner: &str) -> Result<(), Failure> {
    let deadline = Instant::now() + START_TIMEOUT;
    while Instant::now() < deadline {
        if child.try_wait().expect("try_wait").is_some() {
            return Err(Failure::Exited);
        }
        if let Ok(stream) = TcpStream::connect((Ipv4Addr::LOCALHOST, port)) {
            stream
                .set_read_timeout(Some(START_TIMEOUT))
                .expect("read timeout");
            let mut greeting = String::new();
            let _ = BufReader::new(stream).read_line(&mut greeting);
            return if greeting.trim_end() == format!("220 {banner}") {
                Ok(())
            } else if child.try_wait().expect("try_wait").is_some() {
                Err(Failure::Exited)
            } else {
                Err(Failure::Foreign)
            };
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    Err(Failure::Timeout)
}
