//! pyftpdlib, an FTP server nobody on this project wrote, on loopback for the client tests
//! (installed by `scripts/test`).

use std::io::{BufRead, BufReader};
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::sync::mpsc;
use std::time::Duration;

use tempfile::TempDir;

/// The one account pyftpdlib serves.
pub const USER: &str = "peer";
/// Its password.
pub const PASS: &str = "peer-password-9";
const START_TIMEOUT: Duration = Duration::from_secs(20);

/// pyftpdlib serving `home` for one user (and USER2 with the same password); printed its port
/// on stdout. With a fourth argument `plain` it knows no MLSD, MLST or REIN, as older servers;
/// with `flaky`, the first download and the first upload lose their data connection after
/// 256 KiB (426 follows); with `drop`, the first download loses the control connection too.
const SERVER_PY: &str = r#"
import sys
from pyftpdlib.authorizers import DummyAuthorizer
from pyftpdlib.handlers import FTPHandler
from pyftpdlib.servers import FTPServer

user, password, home = sys.argv[1], sys.argv[2], sys.argv[3]
authorizer = DummyAuthorizer()
authorizer.add_user(user, password, home, perm="elradfmwMT")
authorizer.add_user(user + "2", password, home, perm="elradfmwMT")
handler = FTPHandler
if sys.argv[4:] == ["plain"]:
    class Plain(FTPHandler):
        proto_cmds = {k: v for k, v in FTPHandler.proto_cmds.items()
                      if k not in ("MLSD", "MLST", "REIN")}
    handler = Plain
if sys.argv[4:] in (["flaky"], ["drop"]):
    from pyftpdlib.handlers import DTPHandler
    from pyftpdlib.log import logger
    drop_control = sys.argv[4] == "drop"
    cuts = {"send": 1, "recv": 1}
    def cut(dtp, way):
        cuts[way] -= 1
        dtp._resp = ("426 Dropped by the test; transfer aborted.", logger.warning)
        control = dtp.cmd_channel
        dtp.close()
        if drop_control and way == "send":
            control.close()
    class Flaky(DTPHandler):
        def send(self, data):
            sent = DTPHandler.send(self, data)
            if self.tot_bytes_sent > 256 * 1024 and cuts["send"] > 0:
                cut(self, "send")
            return sent
        def handle_read(self):
            DTPHandler.handle_read(self)
            if self.tot_bytes_received > 256 * 1024 and cuts["recv"] > 0 and not self._closed:
                cut(self, "recv")
        handle_read_event = handle_read
    class FlakyFTP(FTPHandler):
        dtp_handler = Flaky
        use_sendfile = False
    handler = FlakyFTP
if sys.argv[4:] == ["hostile"]:
    # Listings also name `../escape.txt` (a file beside the home), as a hostile server may.
    from pyftpdlib.filesystems import AbstractedFS
    class Escaping(AbstractedFS):
        def listdir(self, path):
            return AbstractedFS.listdir(self, path) + ["../escape.txt"]
    handler.abstracted_fs = Escaping
handler.authorizer = authorizer
server = FTPServer(("127.0.0.1", 0), handler)
print(server.socket.getsockname()[1], flush=True)
server.serve_forever()
"#;

/// A running pyftpdlib, killed when dropped.
pub struct PyFtpd {
    child: Child,
    /// Its port on 127.0.0.1.
    pub port: u16,
    _dir: TempDir,
    /// The directory it serves as the user's home.
    pub home: PathBuf,
}

impl PyFtpd {
    /// Starts pyftpdlib on an OS-chosen port, serving a fresh temporary home.
    pub fn start() -> PyFtpd {
        PyFtpd::start_with(&[])
    }

    /// [`PyFtpd::start`] with extra arguments for the script (`plain`).
    pub fn start_with(extra: &[&str]) -> PyFtpd {
        super::require_python_module("pyftpdlib");
        let dir = tempfile::Builder::new()
            .prefix("ferry-pyftpd-")
            .tempdir()
            .expect("temp dir");
        let home = dir.path().join("home");
        std::fs::create_dir(&home).expect("home");
        let script = dir.path().join("server.py");
        std::fs::write(&script, SERVER_PY).expect("server script");
        let mut child = Command::new("python3")
            .arg(&script)
            .args([USER, PASS])
            .arg(&home)
            .args(extra)
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .expect("spawn pyftpdlib");
        let stdout = child.stdout.take().expect("stdout");
        let (tx, rx) = mpsc::channel();
        std::thread::spawn(move || {
            let mut line = String::new();
            let _ = BufReader::new(stdout).read_line(&mut line);
            let _ = tx.send(line);
        });
        let port = match rx.recv_timeout(START_TIMEOUT) {
            Ok(line) if line.trim().parse::<u16>().is_ok() => line.trim().parse().unwrap_or(0),
            other => {
                let _ = child.kill();
                let _ = child.wait();
                panic!("pyftpdlib did not print its port: {other:?}");
            }
        };
        PyFtpd {
            child,
            port,
            _dir: dir,
            home,
        }
    }
}

impl Drop for PyFtpd {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}
