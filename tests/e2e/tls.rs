//! FTPS (RFC 4217) end to end: `ferryd` with a certificate from `ferryd cert generate`, driven
//! by real clients (Python's ftplib `FTP_TLS`, curl, lftp), by the `ferry` client over explicit
//! and implicit TLS, and by a raw socket for the replies that come before any handshake.
//! Transfers are compared byte for byte and the audit log is checked for the TLS sessions.
//!
//! The client programs are installed by `scripts/test`. Every test makes its own certificate and
//! server, and runs the clients with a UTF-8 locale and `HOME` in a temporary directory.

use crate::common;

use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::time::Duration;

use common::{
    FERRYD, TestServer, assert_event, assert_same, assert_success, assert_transfer, ferry,
    pseudo_random, read, register, run_bounded, run_client,
};
use serde_json::{Value, json};
use tempfile::TempDir;

/// Bound on one client run.
const CLIENT_TIMEOUT: Duration = Duration::from_secs(40);

// ---------------------------------------------------------------------------------------------
// Helpers
// ---------------------------------------------------------------------------------------------

/// A certificate and key made by `ferryd cert generate --out DIR`.
struct Certs {
    dir: TempDir,
}

impl Certs {
    fn generate() -> Certs {
        let dir = tempfile::Builder::new()
            .prefix("ferry-tls-")
            .tempdir()
            .expect("temp dir");
        let child = Command::new(FERRYD)
            .args(["cert", "generate", "--out"])
            .arg(dir.path())
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("spawn ferryd cert generate");
        let out = run_bounded(child, CLIENT_TIMEOUT);
        assert_success(&out, "ferryd cert generate");
        Certs { dir }
    }

    fn cert(&self) -> PathBuf {
        self.dir.path().join("cert.pem")
    }

    fn key(&self) -> PathBuf {
        self.dir.path().join("key.pem")
    }

    fn cert_str(&self) -> String {
        utf8(&self.cert()).to_owned()
    }

    /// A server with this certificate, a plain listener, an implicit-TLS listener and `extra`.
    fn server(&self, extra: &[&str]) -> TestServer {
        let (cert, key) = (self.cert(), self.key());
        let mut args = vec![
            "--tls-cert",
            utf8(&cert),
            "--tls-key",
            utf8(&key),
            "--implicit-tls-listen",
            "127.0.0.1:0",
        ];
        args.extend_from_slice(extra);
        let server = TestServer::start(&args);
        server.wait_stderr("(implicit TLS)");
        server
    }
}

/// The port of the server's implicit-TLS listener, from its `listening on` line.
fn implicit_port(server: &TestServer) -> u16 {
    let stderr = server.stderr();
    let line = stderr
        .lines()
        .find(|l| l.ends_with("(implicit TLS)"))
        .unwrap_or_else(|| panic!("no implicit TLS listener in:\n{stderr}"));
    let addr = line
        .split("listening on ")
        .nth(1)
        .and_then(|rest| rest.split(' ').next())
        .unwrap_or_else(|| panic!("no address in {line:?}"));
    let addr: std::net::SocketAddr = addr.parse().expect("implicit TLS address");
    addr.port()
}

fn utf8(path: &Path) -> &str {
    path.to_str().expect("utf-8 path")
}

/// Asserts a `command` event with this command line and reply code (any user or none).
fn assert_command(events: &[Value], command: &str, code: u16) {
    assert_event(
        events,
        &[
            ("event", json!("command")),
            ("command", json!(command)),
            ("code", json!(code)),
        ],
    );
}

/// No command of `user` was answered 425 (a refused data connection).
fn assert_no_refused_data(events: &[Value], user: &str) {
    let refused: Vec<&Value> = events
        .iter()
        .filter(|e| e["event"] == "command" && e["user"] == user && e["code"] == 425)
        .collect();
    assert!(refused.is_empty(), "refused data connections: {refused:?}");
}

/// Runs a Python script (its text written to `cwd/name`) with `args`.
fn python(cwd: &Path, name: &str, script: &str, args: &[&str]) -> Output {
    std::fs::write(cwd.join(name), script).expect("write script");
    let mut all = vec![name];
    all.extend_from_slice(args);
    let out = run_client("python3", &all, cwd);
    assert_success(&out, name);
    assert!(
        String::from_utf8_lossy(&out.stdout).ends_with("OK\n"),
        "{name} did not finish:\n{}",
        String::from_utf8_lossy(&out.stdout)
    );
    out
}

/// Runs `curl -sS ARGS` in `cwd`.
fn curl(cwd: &Path, args: &[&str]) -> Output {
    let mut all = vec!["-sS", "--max-time", "30", "--connect-timeout", "10"];
    all.extend_from_slice(args);
    run_client("curl", &all, cwd)
}

/// Runs lftp with TLS forced on control and data connections and the server's certificate as
/// the only CA, then `commands`.
fn lftp_tls(
    server: &TestServer,
    certs: &Certs,
    cwd: &Path,
    user: &str,
    pass: &str,
    commands: &str,
) -> Output {
    let script = format!(
        "set net:max-retries 1; set net:timeout 10; set cmd:fail-exit yes; \
         set ftp:ssl-force true; set ftp:ssl-protect-data true; set ssl:ca-file {}; \
         set ssl:check-hostname yes; set ssl:verify-certificate yes; \
         open -u {user},{pass} -p {} 127.0.0.1; {commands}",
        certs.cert_str(),
        server.port()
    );
    run_client("lftp", &["-c", &script], cwd)
}

// ---------------------------------------------------------------------------------------------
// ferryd cert generate, and the replies before any handshake
// ---------------------------------------------------------------------------------------------

#[test]
fn cert_generate_writes_a_usable_pair() {
    let certs = Certs::generate();
    let cert = std::fs::read_to_string(certs.cert()).expect("cert.pem");
    let key = std::fs::read_to_string(certs.key()).expect("key.pem");
    assert!(cert.starts_with("-----BEGIN CERTIFICATE-----"), "{cert}");
    assert!(key.contains("PRIVATE KEY-----"), "key.pem is no PEM key");
    let mode = std::fs::metadata(certs.key())
        .expect("key.pem metadata")
        .permissions()
        .mode();
    assert_eq!(mode & 0o777, 0o600, "key.pem mode {:o}", mode & 0o777);

    // The server starts with them, on a plain and an implicit-TLS listener.
    let server = certs.server(&[]);
    assert!(
        server.stderr().contains(&format!(
            "listening on 127.0.0.1:{} (implicit TLS)",
            implicit_port(&server)
        )),
        "{}",
        server.stderr()
    );
    let (mut ctl, greeting) = server.connect();
    assert_eq!(greeting.code, 220, "{greeting:?}");
    ctl.expect("QUIT", 221);

    // A key that is not the certificate's is refused at start.
    let other = Certs::generate();
    let data = tempfile::tempdir().expect("temp dir");
    let child = Command::new(FERRYD)
        .args(["--listen", "127.0.0.1:0", "--data-dir"])
        .arg(data.path())
        .arg("--tls-cert")
        .arg(certs.cert())
        .arg("--tls-key")
        .arg(other.key())
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawn ferryd");
    let out = run_bounded(child, CLIENT_TIMEOUT);
    assert!(
        !out.status.success(),
        "ferryd started with a mismatched key:\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
}

#[test]
fn raw_replies_without_and_before_tls() {
    // No certificate: FEAT is silent about TLS, AUTH is not implemented, PBSZ/PROT out of
    // sequence, CCC refused.
    let plain = TestServer::start(&[]);
    let (mut ctl, _) = plain.connect();
    let feat = ctl.expect("FEAT", 211).text();
    for word in ["AUTH", "PBSZ", "PROT"] {
        assert!(
            !feat.lines().any(|l| l.trim_start().starts_with(word)),
            "FEAT without a certificate lists {word}:\n{feat}"
        );
    }
    ctl.expect("AUTH TLS", 534);
    ctl.expect("AUTH SSL", 534);
    ctl.expect("PBSZ 0", 503);
    ctl.expect("PROT P", 503);
    ctl.expect("CCC", 534);
    // The session goes on in the clear.
    ctl.expect("SITE REGISTER rawuser raw-pass-1", 200);
    ctl.login("rawuser", "raw-pass-1");
    ctl.expect("PBSZ 0", 503);
    ctl.expect("CCC", 534);
    ctl.expect("QUIT", 221);

    // With a certificate: FEAT lists AUTH TLS, PBSZ and PROT; before AUTH, PBSZ and PROT are
    // out of sequence and CCC is refused; AUTH and its aliases answer 234.
    let certs = Certs::generate();
    let server = certs.server(&[]);
    let (mut ctl, _) = server.connect();
    let feat = ctl.expect("FEAT", 211).text();
    for word in ["AUTH TLS", "PBSZ", "PROT"] {
        assert!(
            feat.lines().any(|l| l.trim() == word),
            "FEAT with a certificate lacks {word}:\n{feat}"
        );
    }
    ctl.expect("PBSZ 0", 503);
    ctl.expect("PROT P", 503);
    ctl.expect("PROT C", 503);
    ctl.expect("CCC", 534);
    ctl.expect("NOOP", 200);
    ctl.expect("AUTH TLS", 234);
    drop(ctl);
    for alias in ["AUTH SSL", "AUTH TLS-C", "AUTH TLS-P", "auth tls"] {
        let (mut ctl, _) = server.connect();
        ctl.expect(alias, 234);
    }
    let (mut ctl, _) = server.connect();
    ctl.expect("AUTH KERBEROS", 504);
    ctl.expect("QUIT", 221);
}

/// A raw connection to the implicit-TLS listener, reads bounded by `IO_TIMEOUT`.
fn connect_implicit(server: &TestServer) -> std::net::TcpStream {
    let addr = std::net::SocketAddr::from(([127, 0, 0, 1], implicit_port(server)));
    let tcp = std::net::TcpStream::connect_timeout(&addr, common::IO_TIMEOUT).expect("connect");
    tcp.set_read_timeout(Some(common::IO_TIMEOUT))
        .expect("read timeout");
    tcp.set_write_timeout(Some(common::IO_TIMEOUT))
        .expect("write timeout");
    tcp
}

#[test]
fn a_silent_client_on_the_implicit_tls_port_is_dropped_after_the_login_timeout() {
    let certs = Certs::generate();
    let server = certs.server(&["--login-timeout-secs", "1"]);
    let mut tcp = connect_implicit(&server);
    // The server closes the connection (end of stream or a reset), well before `IO_TIMEOUT`.
    let mut buf = [0u8; 64];
    match std::io::Read::read(&mut tcp, &mut buf) {
        Ok(0) => {}
        Ok(n) => panic!("{n} bytes before any handshake: {:?}", &buf[..n]),
        Err(e) => assert!(
            !matches!(
                e.kind(),
                std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut
            ),
            "the connection is still open after {:?}: {e}",
            common::IO_TIMEOUT
        ),
    }
    server.wait_stderr("timed out before FTP began");
}

#[test]
fn admission_on_the_implicit_tls_port_answers_421_over_tls() {
    let certs = Certs::generate();
    let server = certs.server(&["--max-sessions-per-ip", "1"]);
    let (mut first, greeting) = server.connect();
    assert_eq!(greeting.code, 220, "{greeting:?}");
    // The cap is checked after the handshake, so the refusal is readable TLS.
    let config = ferry::tls::client_config(&ferry::tls::Trust::CaFile(&certs.cert()))
        .expect("client config");
    let name = rustls::pki_types::ServerName::try_from("127.0.0.1").expect("name");
    let tls = rustls::ClientConnection::new(config, name).expect("client connection");
    let mut stream = rustls::StreamOwned::new(tls, connect_implicit(&server));
    let mut text = String::new();
    std::io::Read::read_to_string(&mut stream, &mut text).expect("the refusal over TLS");
    assert_eq!(text, "421 Too many connections from your address.\r\n");
    first.expect("NOOP", 200);
}

#[test]
fn handshakes_in_progress_count_under_the_address_cap() {
    let certs = Certs::generate();
    let server = certs.server(&["--max-sessions-per-ip", "1"]);
    // A client that never starts its handshake holds the one place of its address...
    let _silent = connect_implicit(&server);
    // ...so the next connection from it is refused at once, in plain text (no TLS is up yet).
    let mut next = connect_implicit(&server);
    let mut text = String::new();
    std::io::Read::read_to_string(&mut next, &mut text).expect("the refusal");
    assert_eq!(text, "421 Too many connections from your address.\r\n");
}

/// Behind a balancer the per-address bound on handshakes in progress applies to the client the
/// PROXY header names: one client stalling in the handshake cannot hold every place, and
/// another client behind the same balancer still gets its handshake.
#[test]
fn behind_a_balancer_handshakes_in_progress_count_under_the_header_client_cap() {
    use std::io::{ErrorKind, Read, Write};
    let certs = Certs::generate();
    let server = certs.server(&[
        "--proxy-protocol-from",
        "127.0.0.0/8",
        "--max-sessions",
        "4",
        "--max-sessions-per-ip",
        "1",
    ]);
    let port = implicit_port(&server);
    let addr: std::net::SocketAddr = ([127, 0, 0, 1], port).into();
    let header = |client: &str| {
        use ppp::v2::{Builder, Command, Protocol, Version};
        Builder::with_addresses(
            Version::Two | Command::Proxy,
            Protocol::Stream,
            (
                client.parse::<std::net::SocketAddr>().expect("client"),
                addr,
            ),
        )
        .build()
        .expect("v2 header")
    };
    // One hostile client (203.0.113.66): four connections, a header each, no ClientHello.
    let mut held: Vec<_> = (0..4)
        .map(|i| {
            let mut s = std::net::TcpStream::connect(addr).expect("connect");
            s.set_read_timeout(Some(Duration::from_secs(2)))
                .expect("timeout");
            s.write_all(&header(&format!("203.0.113.66:{}", 40000 + i)))
                .expect("header");
            s
        })
        .collect();
    // One holds the client's one place (its read times out); the others are refused at once,
    // in plain text.
    let mut refused = 0;
    for s in &mut held {
        let mut text = String::new();
        if s.read_to_string(&mut text).is_ok() {
            assert_eq!(text, "421 Too many connections from your address.\r\n");
            refused += 1;
        }
    }
    assert_eq!(refused, 3, "one connection waits for its handshake");
    // Another client: the server must wait for its ClientHello, not refuse it.
    let mut other = std::net::TcpStream::connect(addr).expect("connect");
    other
        .write_all(&header("203.0.113.7:40000"))
        .expect("header");
    other
        .set_read_timeout(Some(Duration::from_secs(1)))
        .expect("timeout");
    let mut buf = [0u8; 64];
    match other.read(&mut buf) {
        Err(e) if matches!(e.kind(), ErrorKind::WouldBlock | ErrorKind::TimedOut) => {}
        got => panic!(
            "the other client was answered before any handshake: {:?}",
            got.map(|n| String::from_utf8_lossy(&buf[..n]).into_owned())
        ),
    }
}

// ---------------------------------------------------------------------------------------------
// Python ftplib
// ---------------------------------------------------------------------------------------------

/// ftplib `FTP_TLS` with `PROT P`: the replies after AUTH, SITE REGISTER and login over TLS,
/// listings, and an upload and download compared byte for byte.
/// Arguments: port, user, password, cafile, local data file.
const FTPLIB_TLS_SCRIPT: &str = r#"
import ftplib, io, ssl, sys
port, user, pw, cafile, path = int(sys.argv[1]), sys.argv[2], sys.argv[3], sys.argv[4], sys.argv[5]
data = open(path, 'rb').read()
ctx = ssl.create_default_context(cafile=cafile)
ftp = ftplib.FTP_TLS(context=ctx, timeout=15)
ftp.connect('127.0.0.1', port)

def reply(cmd):
    try:
        return ftp.sendcmd(cmd)
    except ftplib.error_perm as e:
        return str(e)

def code(cmd, want):
    got = reply(cmd)
    assert got.startswith(str(want)), (cmd, got)
    return got

code('PBSZ 0', 503)
assert ftp.auth().startswith('234'), 'AUTH TLS'
assert isinstance(ftp.sock, ssl.SSLSocket)
code('AUTH TLS', 503)
code('PROT P', 503)
assert code('PBSZ 0', 200).startswith('200 PBSZ=0'), 'PBSZ reply'
code('PROT S', 536)
code('PROT E', 536)
code('CCC', 534)
code('SITE REGISTER %s %s' % (user, pw), 200)
assert ftp.login(user, pw).startswith('230')
ftp.prot_p()
assert ftp.storbinary('STOR up.bin', io.BytesIO(data)).startswith('226')
ftp.mkd('sub')
ftp.cwd('sub')
assert ftp.storbinary('STOR small.txt', io.BytesIO(b'small\r\n')).startswith('226')
ftp.cwd('/')
assert sorted(ftp.nlst()) == ['sub', 'up.bin'], ftp.nlst()
lines = []
ftp.retrlines('LIST', lines.append)
assert any(l.endswith(' up.bin') and (' %d ' % len(data)) in l for l in lines), lines
facts = dict(ftp.mlsd())
assert facts['up.bin']['type'] == 'file' and int(facts['up.bin']['size']) == len(data), facts
assert facts['sub']['type'] == 'dir', facts
out = io.BytesIO()
assert ftp.retrbinary('RETR up.bin', out.write).startswith('226')
assert out.getvalue() == data, 'download differs'
out = io.BytesIO()
ftp.retrbinary('RETR sub/small.txt', out.write)
assert out.getvalue() == b'small\r\n', out.getvalue()
assert ftp.size('up.bin') == len(data)
ftp.quit()
print('OK')
"#;

#[test]
fn python_ftplib_prot_p_register_list_upload_download() {
    let certs = Certs::generate();
    let server = certs.server(&[]);
    let (user, pass) = ("pytls", "ftplib-tls-1");
    let work = tempfile::tempdir().expect("temp dir");
    let w = work.path();
    let payload = pseudo_random(3 * 1024 * 1024 + 11, 51);
    std::fs::write(w.join("data.bin"), &payload).expect("write payload");
    let port = server.port().to_string();
    python(
        w,
        "tls.py",
        FTPLIB_TLS_SCRIPT,
        &[&port, user, pass, &certs.cert_str(), "data.bin"],
    );
    assert_same(&read(&server.home(user).join("up.bin")), &payload, "up.bin");
    assert_eq!(read(&server.home(user).join("sub/small.txt")), b"small\r\n");

    // The audit log: AUTH and the TLS negotiation, then login and transfers as usual.
    let events = server.wait_sessions_closed(user, 1);
    assert_command(&events, "AUTH TLS", 234);
    assert_command(&events, "AUTH TLS", 503);
    assert_command(&events, "PBSZ 0", 503);
    assert_command(&events, "PBSZ 0", 200);
    assert_command(&events, "PROT P", 200);
    assert_command(&events, "PROT S", 536);
    assert_command(&events, "CCC", 534);
    assert_event(
        &events,
        &[("event", json!("login_ok")), ("user", json!(user))],
    );
    assert_transfer(&events, user, "upload", "/up.bin", payload.len());
    assert_transfer(&events, user, "upload", "/sub/small.txt", 7);
    assert_transfer(&events, user, "download", "/up.bin", payload.len());
    assert_transfer(&events, user, "download", "/sub/small.txt", 7);
    assert_command(&events, "MLSD", 226);
    assert_command(&events, "LIST", 226);
    assert!(!server.audit_text().contains(pass), "password in clear");
}

// ---------------------------------------------------------------------------------------------
// curl
// ---------------------------------------------------------------------------------------------

#[test]
fn curl_explicit_and_implicit_tls() {
    let certs = Certs::generate();
    let server = certs.server(&[]);
    let (user, pass) = ("curly", "curl-tls-2");
    register(&server, user, pass);
    let work = tempfile::tempdir().expect("temp dir");
    let w = work.path();
    let payload = pseudo_random(2 * 1024 * 1024 + 5, 52);
    std::fs::write(w.join("up.bin"), &payload).expect("write payload");
    let cafile = certs.cert_str();
    let explicit = format!("ftp://{user}:{pass}@127.0.0.1:{}", server.port());
    let implicit = format!("ftps://{user}:{pass}@127.0.0.1:{}", implicit_port(&server));

    // Explicit: AUTH TLS, PROT P, upload and download.
    let out = curl(
        w,
        &[
            "--ssl-reqd",
            "--cacert",
            &cafile,
            "-T",
            "up.bin",
            &format!("{explicit}/x.bin"),
        ],
    );
    assert_success(&out, "curl --ssl-reqd -T");
    assert_same(&read(&server.home(user).join("x.bin")), &payload, "x.bin");
    // More uploads: curl never reads an upload's data connection, so anything the server sent
    // there (TLS 1.3 session tickets) made closing it a reset that cut the upload short (426),
    // about every other time.
    for n in 0..4 {
        let out = curl(
            w,
            &[
                "--ssl-reqd",
                "--cacert",
                &cafile,
                "-T",
                "up.bin",
                &format!("{explicit}/x{n}.bin"),
            ],
        );
        assert_success(&out, &format!("curl --ssl-reqd -T, upload {n}"));
        assert_same(
            &read(&server.home(user).join(format!("x{n}.bin"))),
            &payload,
            "x{n}.bin",
        );
    }
    let out = curl(
        w,
        &[
            "--ssl-reqd",
            "--cacert",
            &cafile,
            "-o",
            "x.back",
            &format!("{explicit}/x.bin"),
        ],
    );
    assert_success(&out, "curl --ssl-reqd download");
    assert_same(&read(&w.join("x.back")), &payload, "x.back");

    // Implicit: TLS from the first byte; listing, download, upload.
    let out = curl(w, &["--cacert", &cafile, &format!("{implicit}/")]);
    assert_success(&out, "curl ftps:// LIST");
    let listing = String::from_utf8_lossy(&out.stdout);
    assert!(
        listing
            .lines()
            .any(|l| l.ends_with(" x.bin") && l.contains(&payload.len().to_string())),
        "{listing}"
    );
    let out = curl(
        w,
        &[
            "--cacert",
            &cafile,
            "-o",
            "i.back",
            &format!("{implicit}/x.bin"),
        ],
    );
    assert_success(&out, "curl ftps:// download");
    assert_same(&read(&w.join("i.back")), &payload, "i.back");
    let out = curl(
        w,
        &[
            "--cacert",
            &cafile,
            "-T",
            "up.bin",
            &format!("{implicit}/i.bin"),
        ],
    );
    assert_success(&out, "curl ftps:// upload");
    assert_same(&read(&server.home(user).join("i.bin")), &payload, "i.bin");

    // The certificate is checked: without --cacert the handshake fails.
    let out = curl(w, &["--ssl-reqd", &format!("{explicit}/")]);
    assert!(!out.status.success(), "curl trusted the self-signed cert");
    let out = curl(w, &[&format!("{implicit}/")]);
    assert!(!out.status.success(), "curl trusted the self-signed cert");

    let events = server.wait_sessions_closed(user, 10);
    let len = payload.len();
    assert_command(&events, "AUTH SSL", 234);
    assert_transfer(&events, user, "upload", "/x.bin", len);
    assert_transfer(&events, user, "download", "/x.bin", len);
    assert_transfer(&events, user, "download", "/x.bin", len);
    assert_transfer(&events, user, "upload", "/i.bin", len);
    assert_command(&events, "PROT P", 200);
    assert_no_refused_data(&events, user);
}

// ---------------------------------------------------------------------------------------------
// lftp
// ---------------------------------------------------------------------------------------------

#[test]
fn lftp_forced_tls_put_list_get() {
    let certs = Certs::generate();
    let server = certs.server(&[]);
    let (user, pass) = ("lftls", "lftp-tls-3");
    register(&server, user, pass);
    let work = tempfile::tempdir().expect("temp dir");
    let w = work.path();
    let payload = pseudo_random(3 * 1024 * 1024 + 7, 53);
    std::fs::write(w.join("up.bin"), &payload).expect("write payload");

    let out = lftp_tls(
        &server,
        &certs,
        w,
        user,
        pass,
        "put up.bin -o l.bin; cls -l; get l.bin -o l.back",
    );
    assert_success(&out, "lftp put, cls -l, get");
    assert_same(&read(&server.home(user).join("l.bin")), &payload, "l.bin");
    assert_same(&read(&w.join("l.back")), &payload, "l.back");
    let listing = String::from_utf8_lossy(&out.stdout);
    assert!(
        listing
            .lines()
            .any(|l| l.ends_with(" l.bin") && l.contains(&payload.len().to_string())),
        "{listing}"
    );

    let events = server.wait_sessions_closed(user, 1);
    assert_command(&events, "AUTH TLS", 234);
    assert_command(&events, "PROT P", 200);
    assert_transfer(&events, user, "upload", "/l.bin", payload.len());
    assert_transfer(&events, user, "download", "/l.bin", payload.len());
    assert_command(&events, "MLSD", 226);
    assert_no_refused_data(&events, user);
}

// ---------------------------------------------------------------------------------------------
// --require-tls-login --require-tls-data
// ---------------------------------------------------------------------------------------------

/// In TLS-required mode: SITE REGISTER and login after AUTH TLS, an upload under PROT P,
/// then under PROT C every transfer is refused with 521; back under PROT P the download works.
/// Arguments: port, user, password, cafile.
const FTPLIB_REQUIRED_SCRIPT: &str = r#"
import ftplib, io, ssl, sys
port, user, pw, cafile = int(sys.argv[1]), sys.argv[2], sys.argv[3], sys.argv[4]
ctx = ssl.create_default_context(cafile=cafile)
ftp = ftplib.FTP_TLS(context=ctx, timeout=15)
ftp.connect('127.0.0.1', port)
ftp.auth()
assert ftp.sendcmd('SITE REGISTER %s %s' % (user, pw)).startswith('200')
ftp.login(user, pw)
ftp.prot_p()
assert ftp.storbinary('STOR secret.bin', io.BytesIO(b'secret')).startswith('226')
assert ftp.prot_c().startswith('200')
for what, run in [
    ('STOR', lambda: ftp.storbinary('STOR clear.bin', io.BytesIO(b'clear'))),
    ('RETR', lambda: ftp.retrbinary('RETR secret.bin', lambda b: None)),
    ('LIST', lambda: ftp.retrlines('LIST', lambda l: None)),
]:
    try:
        run()
        raise SystemExit('%s under PROT C was accepted' % what)
    except ftplib.error_perm as e:
        assert str(e).startswith('521'), (what, str(e))
assert ftp.sendcmd('NOOP').startswith('200')
assert ftp.prot_p().startswith('200')
out = io.BytesIO()
ftp.retrbinary('RETR secret.bin', out.write)
assert out.getvalue() == b'secret'
ftp.quit()
print('OK')
"#;

#[test]
fn tls_required_mode_refuses_clear_logins_and_transfers() {
    let certs = Certs::generate();
    let server = certs.server(&["--require-tls-login", "--require-tls-data"]);
    let (user, pass) = ("strict", "strict-pass-4");

    // A plain control connection can neither register nor log in.
    let (mut ctl, greeting) = server.connect();
    assert_eq!(greeting.code, 220, "{greeting:?}");
    ctl.expect(&format!("SITE REGISTER {user} {pass}"), 530);
    ctl.expect(&format!("USER {user}"), 530);
    ctl.expect(&format!("PASS {pass}"), 530);
    ctl.expect("NOOP", 200);
    ctl.expect("QUIT", 221);
    assert!(!server.home(user).exists(), "registered in the clear");

    let work = tempfile::tempdir().expect("temp dir");
    let w = work.path();
    let port = server.port().to_string();
    python(
        w,
        "required.py",
        FTPLIB_REQUIRED_SCRIPT,
        &[&port, user, pass, &certs.cert_str()],
    );
    assert_eq!(read(&server.home(user).join("secret.bin")), b"secret");
    assert!(!server.home(user).join("clear.bin").exists());

    // curl without --ssl-reqd logs in in the clear and is refused; with it, it works.
    let payload = pseudo_random(1024 * 1024 + 3, 54);
    std::fs::write(w.join("up.bin"), &payload).expect("write payload");
    let url = format!("ftp://{user}:{pass}@127.0.0.1:{}", server.port());
    let out = curl(w, &["-T", "up.bin", &format!("{url}/plain.bin")]);
    assert_eq!(
        out.status.code(),
        Some(67),
        "curl in the clear: want 67 (login denied)\nstderr:\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(!server.home(user).join("plain.bin").exists());
    let cafile = certs.cert_str();
    let out = curl(
        w,
        &[
            "--ssl-reqd",
            "--cacert",
            &cafile,
            "-T",
            "up.bin",
            &format!("{url}/tls.bin"),
        ],
    );
    assert_success(&out, "curl --ssl-reqd upload");
    let out = curl(
        w,
        &[
            "--ssl-reqd",
            "--cacert",
            &cafile,
            "-o",
            "tls.back",
            &format!("{url}/tls.bin"),
        ],
    );
    assert_success(&out, "curl --ssl-reqd download");
    assert_same(
        &read(&server.home(user).join("tls.bin")),
        &payload,
        "tls.bin",
    );
    assert_same(&read(&w.join("tls.back")), &payload, "tls.back");

    let events = server.wait_sessions_closed(user, 3);
    assert_command(&events, &format!("USER {user}"), 530);
    assert_command(&events, "PASS ***", 530);
    assert_command(&events, "SITE REGISTER strict ***", 530);
    assert_command(&events, "PROT C", 200);
    assert_command(&events, "STOR clear.bin", 521);
    assert_command(&events, "RETR secret.bin", 521);
    assert_command(&events, "LIST", 521);
    assert_transfer(&events, user, "upload", "/secret.bin", 6);
    assert_transfer(&events, user, "upload", "/tls.bin", payload.len());
    assert_transfer(&events, user, "download", "/tls.bin", payload.len());
    assert!(!server.audit_text().contains(pass), "password in clear");
}

// ---------------------------------------------------------------------------------------------
// --require-tls-resumption
// ---------------------------------------------------------------------------------------------

/// Against --require-tls-resumption: ftplib does not resume the control connection's session
/// on its data connections, so a PROT P upload is refused with 425; the session goes on, and
/// a PROT C transfer still works.
/// Arguments: port, user, password, cafile.
const FTPLIB_NO_RESUMPTION_SCRIPT: &str = r#"
import ftplib, io, ssl, sys
port, user, pw, cafile = int(sys.argv[1]), sys.argv[2], sys.argv[3], sys.argv[4]
ctx = ssl.create_default_context(cafile=cafile)
ftp = ftplib.FTP_TLS(context=ctx, timeout=15)
ftp.connect('127.0.0.1', port)
ftp.auth()
assert ftp.sendcmd('SITE REGISTER %s %s' % (user, pw)).startswith('200')
ftp.login(user, pw)
ftp.prot_p()
try:
    ftp.storbinary('STOR refused.bin', io.BytesIO(b'x' * 100000))
    raise SystemExit('upload without session resumption was accepted')
except ftplib.error_temp as e:
    outcome = str(e)
except OSError as e:
    # The data connection failed under ftplib; the server's reply is still to be read.
    try:
        ftp.getresp()
        outcome = 'no error reply after %r' % e
    except ftplib.error_temp as e2:
        outcome = str(e2)
assert outcome.startswith('425'), outcome
assert ftp.sendcmd('NOOP').startswith('200')
ftp.prot_c()
assert ftp.storbinary('STOR clear.bin', io.BytesIO(b'clear')).startswith('226')
ftp.quit()
print('OK')
"#;

#[test]
fn resumption_required_lftp_resumes_and_ftplib_is_refused() {
    let certs = Certs::generate();
    let server = certs.server(&["--require-tls-resumption"]);
    let (user, pass) = ("resume", "resume-pass-5");
    let work = tempfile::tempdir().expect("temp dir");
    let w = work.path();
    let port = server.port().to_string();
    python(
        w,
        "noresume.py",
        FTPLIB_NO_RESUMPTION_SCRIPT,
        &[&port, user, pass, &certs.cert_str()],
    );
    assert!(!server.home(user).join("refused.bin").exists());
    assert_eq!(read(&server.home(user).join("clear.bin")), b"clear");
    let events = server.wait_sessions_closed(user, 1);
    assert_command(&events, "STOR refused.bin", 425);
    assert_command(&events, "NOOP", 200);
    assert_command(&events, "STOR clear.bin", 226);
    server.wait_stderr("TLS session resumption is required on data connections");

    // lftp (GnuTLS) resumes the control connection's session on every data connection, so
    // several transfers and listings in one session all work.
    let payload = pseudo_random(2 * 1024 * 1024 + 9, 55);
    std::fs::write(w.join("up.bin"), &payload).expect("write payload");
    let out = lftp_tls(
        &server,
        &certs,
        w,
        user,
        pass,
        "put up.bin -o a.bin; cls -l; get a.bin -o a.back; put up.bin -o b.bin; cls; \
         get b.bin -o b.back",
    );
    assert_success(&out, "lftp under --require-tls-resumption");
    for name in ["a", "b"] {
        assert_same(
            &read(&server.home(user).join(format!("{name}.bin"))),
            &payload,
            name,
        );
        assert_same(&read(&w.join(format!("{name}.back"))), &payload, name);
    }
    let events = server.wait_sessions_closed(user, 2);
    let len = payload.len();
    for path in ["/a.bin", "/b.bin"] {
        assert_transfer(&events, user, "upload", path, len);
        assert_transfer(&events, user, "download", path, len);
    }
    let refused = events
        .iter()
        .filter(|e| e["event"] == "command" && e["code"] == 425)
        .count();
    assert_eq!(refused, 1, "only ftplib's upload is refused");
}

// ---------------------------------------------------------------------------------------------
// The ferry client
// ---------------------------------------------------------------------------------------------

#[test]
fn ferry_client_explicit_and_implicit_tls() {
    let certs = Certs::generate();
    let work = tempfile::tempdir().expect("temp dir");
    let w = work.path();
    let payload = pseudo_random(3 * 1024 * 1024 + 1, 56);
    std::fs::write(w.join("up.bin"), &payload).expect("write payload");
    let cafile = certs.cert_str();
    let (user, pass) = ("ferrous", "ferry-tls-6");

    for extra in [&[][..], &["--require-tls-resumption"][..]] {
        let server = certs.server(extra);
        let explicit = format!("127.0.0.1:{}", server.port());
        let implicit = format!("127.0.0.1:{}", implicit_port(&server));
        let home = server.home(user);

        // Explicit: register over TLS, then two uploads and downloads and a listing.
        ferry(
            w,
            pass,
            &[
                "--tls",
                "--ca-file",
                &cafile,
                &explicit,
                "-c",
                &format!(
                    "register {user}; put up.bin e1.bin; put up.bin e2.bin; put up.bin e3.bin; \
                     dir; get e1.bin e1.back; put up.bin e4.bin; get e2.bin e2.back"
                ),
            ],
        )
        .ok("ferry --tls")
        .has("220 ")
        .has(&format!("Logged in as {user}."))
        .has("| e1.bin ");
        // Implicit.
        ferry(
            w,
            pass,
            &[
                "--implicit-tls",
                "--ca-file",
                &cafile,
                &implicit,
                "-c",
                &format!(
                    "login {user}; put up.bin i1.bin; dir; get i1.bin i1.back; get e2.bin i2.back"
                ),
            ],
        )
        .ok("ferry --implicit-tls")
        .has("| i1.bin ");
        for name in ["e1.bin", "e2.bin", "e3.bin", "e4.bin", "i1.bin"] {
            assert_same(&read(&home.join(name)), &payload, name);
        }
        for name in ["e1.back", "e2.back", "i1.back", "i2.back"] {
            assert_same(&read(&w.join(name)), &payload, name);
        }

        // Without --ca-file the self-signed certificate is untrusted by the system's roots:
        // one clear line (or, on a system without any roots, one line saying so).
        let have_roots = Path::new("/etc/ssl/certs/ca-certificates.crt").exists();
        for (mode, target) in [("--tls", &explicit), ("--implicit-tls", &implicit)] {
            let run = ferry(
                w,
                pass,
                &[mode, target, "-c", &format!("login {user}; dir")],
            );
            assert_eq!(run.code, Some(3), "{mode} untrusted: {}", run.stderr);
            assert!(!run.stdout.contains("Logged in"), "{mode}: {}", run.stdout);
            if have_roots {
                assert_eq!(
                    run.stderr, "ferry: TLS: invalid peer certificate: UnknownIssuer\n",
                    "{mode} untrusted"
                );
            } else {
                assert_eq!(run.stderr.lines().count(), 1, "{mode}: {}", run.stderr);
                assert!(run.stderr.starts_with("ferry: "), "{mode}: {}", run.stderr);
            }
        }
        // --insecure encrypts without checking.
        ferry(
            w,
            pass,
            &[
                "--tls",
                "--insecure",
                &explicit,
                "-c",
                &format!("login {user}; get i1.bin in.back"),
            ],
        )
        .ok("ferry --tls --insecure");
        assert_same(&read(&w.join("in.back")), &payload, "in.back");

        let events = server.wait_sessions_closed(user, 3);
        assert_command(&events, "AUTH TLS", 234);
        assert_command(&events, "PROT P", 200);
        assert_transfer(&events, user, "upload", "/e1.bin", payload.len());
        assert_transfer(&events, user, "download", "/e2.bin", payload.len());
        assert_transfer(&events, user, "upload", "/i1.bin", payload.len());
        assert_transfer(&events, user, "download", "/i1.bin", payload.len());
        assert_no_refused_data(&events, user);
        assert!(
            !events
                .iter()
                .any(|e| e["event"] == "command" && e["command"] == "PROT C"),
            "the ferry client asked for clear data"
        );
    }
}

/// rustls resumes with each TLS 1.3 ticket once, and ferryd sends none on upload (or, in
/// passive mode, any) data connections: twelve uploads in a row outrun the eight tickets of
/// the control connection, so the client fetches new ones when it runs out. Under
/// --require-tls-resumption every upload and the download after them must resume.
#[test]
fn ferry_client_uploads_in_a_row_under_required_resumption() {
    let certs = Certs::generate();
    let server = certs.server(&["--require-tls-resumption"]);
    let (user, pass) = ("tickets", "ticket-pass-7");
    register(&server, user, pass);
    let work = tempfile::tempdir().expect("temp dir");
    let w = work.path();
    let files: Vec<Vec<u8>> = (0..12)
        .map(|i| pseudo_random(100_000 + i * 7919, 70 + i as u64))
        .collect();
    let mut script = format!("login {user}");
    for (i, bytes) in files.iter().enumerate() {
        std::fs::write(w.join(format!("f{i}.bin")), bytes).expect("write file");
        script.push_str(&format!("; put f{i}.bin"));
    }
    script.push_str("; get f11.bin back.bin");
    let explicit = format!("127.0.0.1:{}", server.port());
    ferry(
        w,
        pass,
        &[
            "--tls",
            "--ca-file",
            &certs.cert_str(),
            &explicit,
            "-c",
            &script,
        ],
    )
    .ok("twelve uploads and a download");
    for (i, bytes) in files.iter().enumerate() {
        let name = format!("f{i}.bin");
        assert_same(&read(&server.home(user).join(&name)), bytes, &name);
    }
    assert_same(&read(&w.join("back.bin")), &files[11], "back.bin");
    let events = server.wait_sessions_closed(user, 2);
    assert_no_refused_data(&events, user);
}

// ---------------------------------------------------------------------------------------------
// Operator mistakes, generated certificates, log noise
// ---------------------------------------------------------------------------------------------

#[test]
fn tls_file_mistakes_read_as_sentences() {
    let certs = Certs::generate();
    let other = Certs::generate();
    let missing = certs.dir.path().join("missing.pem");
    let shown = missing.display().to_string();
    let cases = [
        (
            missing.clone(),
            certs.key(),
            format!("cannot read tls_cert {shown}: no such file"),
        ),
        (
            certs.cert(),
            missing.clone(),
            format!("cannot read tls_key {shown}: no such file"),
        ),
        (
            certs.key(),
            certs.key(),
            "the certificate file holds no certificate".to_owned(),
        ),
        (
            certs.cert(),
            certs.cert(),
            "the key file holds no private key".to_owned(),
        ),
        (
            certs.cert(),
            other.key(),
            "the key does not match the certificate".to_owned(),
        ),
    ];
    let data = tempfile::tempdir().expect("temp dir");
    for (cert, key, needle) in cases {
        let child = Command::new(FERRYD)
            .args(["--listen", "127.0.0.1:0", "--data-dir"])
            .arg(data.path())
            .arg("--tls-cert")
            .arg(&cert)
            .arg("--tls-key")
            .arg(&key)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .expect("spawn ferryd");
        let out = run_bounded(child, CLIENT_TIMEOUT);
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(!out.status.success(), "started with {needle:?}:\n{stderr}");
        assert!(
            stderr.contains(&needle) && !stderr.contains("os error"),
            "wanted {needle:?}:\n{stderr}"
        );
    }
}

/// Prints subject, serial and validity (seconds since the epoch) of each certificate file
/// given, and the current time, as JSON.
const CERT_FACTS_SCRIPT: &str = r#"
import json, ssl, sys, time
facts = []
for path in sys.argv[1:]:
    cert = ssl._ssl._test_decode_cert(path)
    facts.append({
        'subject': repr(cert['subject']),
        'serial': cert['serialNumber'],
        'not_before': ssl.cert_time_to_seconds(cert['notBefore']),
        'not_after': ssl.cert_time_to_seconds(cert['notAfter']),
    })
print(json.dumps({'now': time.time(), 'certs': facts}))
print('OK')
"#;

#[test]
fn cert_generate_is_valid_from_now_for_825_days_with_its_own_subject() {
    let (a, b) = (Certs::generate(), Certs::generate());
    let work = tempfile::tempdir().expect("temp dir");
    let out = python(
        work.path(),
        "facts.py",
        CERT_FACTS_SCRIPT,
        &[&a.cert_str(), &b.cert_str()],
    );
    let text = String::from_utf8_lossy(&out.stdout);
    let facts: Value = serde_json::from_str(text.lines().next().unwrap_or_default())
        .unwrap_or_else(|e| panic!("{e}: {text}"));
    let now = facts["now"].as_f64().expect("now");
    let certs = facts["certs"].as_array().expect("certs");
    for cert in certs {
        let from = cert["not_before"].as_f64().expect("not_before");
        let until = cert["not_after"].as_f64().expect("not_after");
        assert!(
            from <= now + 60.0 && from >= now - 86_400.0,
            "not valid from now: {cert} (now {now})"
        );
        assert_eq!(until - from, 825.0 * 86_400.0, "{cert}");
    }
    assert_ne!(certs[0]["subject"], certs[1]["subject"], "{facts}");
    assert_ne!(certs[0]["serial"], certs[1]["serial"], "{facts}");
}

/// Logs in over TLS and lists under PROT P; an upload over `q.bin` whose data connection
/// closes without TLS close_notify (cut short, as far as the server can tell) gets 426; then
/// the control connection is dropped without close_notify (as wget and many others do).
/// Arguments: port, user, password, cafile.
const FTPLIB_ABRUPT_SCRIPT: &str = r#"
import ftplib, ssl, sys
port, user, pw, cafile = int(sys.argv[1]), sys.argv[2], sys.argv[3], sys.argv[4]
ftp = ftplib.FTP_TLS(context=ssl.create_default_context(cafile=cafile), timeout=15)
ftp.connect('127.0.0.1', port)
ftp.auth()
ftp.login(user, pw)
ftp.prot_p()
ftp.retrlines('LIST', lambda line: None)
conn = ftp.transfercmd('STOR q.bin')
conn.sendall(b'cut short' * 1000)
conn.close()  # no unwrap(): no close_notify
try:
    ftp.voidresp()
    raise SystemExit('an upload without close_notify was stored')
except ftplib.error_temp as e:
    assert str(e).startswith('426'), str(e)
ftp.sock.close()
print('OK')
"#;

#[test]
fn tls_clients_leave_no_rustls_or_close_notify_warnings_at_the_default_level() {
    let certs = Certs::generate();
    let server = certs.server(&[]);
    let (user, pass) = ("quiet", "quiet-pass-7");
    register(&server, user, pass);
    let work = tempfile::tempdir().expect("temp dir");
    let w = work.path();
    let payload = pseudo_random(200_000, 56);
    std::fs::write(w.join("up.bin"), &payload).expect("write payload");
    // lftp (GnuTLS) names the server by its IP address in SNI.
    let out = lftp_tls(
        &server,
        &certs,
        w,
        user,
        pass,
        "put up.bin -o q.bin; cls -l; get q.bin -o q.back",
    );
    assert_success(&out, "lftp put, cls, get");
    let explicit = format!("ftp://{user}:{pass}@127.0.0.1:{}/", server.port());
    let out = curl(w, &["--ssl-reqd", "--cacert", &certs.cert_str(), &explicit]);
    assert_success(&out, "curl --ssl-reqd LIST");
    let port = server.port().to_string();
    python(
        w,
        "abrupt.py",
        FTPLIB_ABRUPT_SCRIPT,
        &[&port, user, pass, &certs.cert_str()],
    );
    server.wait_sessions_closed(user, 3);
    assert_same(&read(&server.home(user).join("q.bin")), &payload, "q.bin");
    let stderr = server.stderr();
    // The cut-short upload has its line (it failed); the ends of sessions have none.
    let noise: Vec<&str> = stderr
        .lines()
        .filter(|l| l.contains(" rustls::") || l.contains("control read failed"))
        .collect();
    assert!(
        noise.is_empty(),
        "log noise at the default level:\n{stderr}"
    );
}

// ---------------------------------------------------------------------------------------------
// TLS before the transfer command (aioftp's order)
// ---------------------------------------------------------------------------------------------

/// Under PROT P, opens each passive data connection and completes its TLS handshake before
/// the transfer command is sent (as aioftp does): upload, listing, download; a connection
/// from another address (127.0.0.2) is refused; then the usual order (command first) in the
/// same session. With `resume` the data connections resume the control connection's TLS
/// session, and one that does not is answered 425.
/// Arguments: port, user, password, cafile, "resume" or "plain".
const FTPLIB_HANDSHAKE_FIRST_SCRIPT: &str = r#"
import ftplib, io, socket, ssl, sys
port, user, pw, cafile, mode = int(sys.argv[1]), sys.argv[2], sys.argv[3], sys.argv[4], sys.argv[5]
ctx = ssl.create_default_context(cafile=cafile)
ftp = ftplib.FTP_TLS(context=ctx, timeout=15)
ftp.connect('127.0.0.1', port)
ftp.auth()
assert ftp.sendcmd('SITE REGISTER %s %s' % (user, pw)).startswith('200')
ftp.login(user, pw)
ftp.prot_p()

def handshake_first(cmd, resume=(mode == 'resume')):
    host, data_port = ftp.makepasv()
    raw = socket.create_connection((host, data_port), timeout=15)
    session = ftp.sock.session if resume else None
    conn = ctx.wrap_socket(raw, server_hostname='127.0.0.1', session=session)
    if resume:
        assert conn.session_reused, 'data connection did not resume'
    resp = ftp.sendcmd(cmd)
    assert resp[:3] in ('150', '125'), (cmd, resp)
    return conn

def read_all(conn):
    chunks = []
    while True:
        chunk = conn.recv(65536)
        if not chunk:
            return b''.join(chunks)
        chunks.append(chunk)

payload = bytes(range(256)) * 4096 + b'tail'
conn = handshake_first('STOR early.bin')
conn.sendall(payload)
conn.unwrap().close()
assert ftp.voidresp().startswith('226')
conn = handshake_first('LIST')
listing = read_all(conn).decode()
conn.close()
assert ftp.voidresp().startswith('226')
assert any(l.endswith(' early.bin') and (' %d ' % len(payload)) in l for l in listing.splitlines()), listing
conn = handshake_first('RETR early.bin')
got = read_all(conn)
conn.close()
assert ftp.voidresp().startswith('226')
assert got == payload, 'download differs'

# A stranger on the passive port is dropped before any handshake; the client's own
# connection is still taken.
host, data_port = ftp.makepasv()
thief = socket.socket()
thief.settimeout(15)
thief.bind(('127.0.0.2', 0))
thief.connect((host, data_port))
try:
    ctx.wrap_socket(thief, server_hostname='127.0.0.1')
    raise SystemExit('the server did a TLS handshake with a stranger')
except (ssl.SSLError, OSError):
    pass
raw = socket.create_connection((host, data_port), timeout=15)
session = ftp.sock.session if mode == 'resume' else None
conn = ctx.wrap_socket(raw, server_hostname='127.0.0.1', session=session)
assert ftp.sendcmd('NLST')[:3] in ('150', '125')
assert read_all(conn).split() == [b'early.bin']
conn.close()
assert ftp.voidresp().startswith('226')

if mode == 'resume':
    conn = handshake_first('LIST', resume=False)
    try:
        ftp.voidresp()
        raise SystemExit('a data connection without resumption was accepted')
    except ftplib.error_temp as e:
        assert str(e).startswith('425'), str(e)
    conn.close()
else:
    # The usual order still works: command first, handshake after the 150.
    assert ftp.storbinary('STOR late.bin', io.BytesIO(payload)).startswith('226')
    out = io.BytesIO()
    assert ftp.retrbinary('RETR late.bin', out.write).startswith('226')
    assert out.getvalue() == payload
assert ftp.sendcmd('NOOP').startswith('200')
ftp.quit()
print('OK')
"#;

#[test]
fn tls_handshake_before_the_transfer_command_works_and_keeps_the_checks() {
    let certs = Certs::generate();
    let work = tempfile::tempdir().expect("temp dir");
    for (mode, extra) in [
        ("plain", &[][..]),
        ("resume", &["--require-tls-resumption"]),
    ] {
        let server = certs.server(extra);
        let user = format!("early{mode}");
        let pass = "early-pass-8";
        let port = server.port().to_string();
        python(
            work.path(),
            "early.py",
            FTPLIB_HANDSHAKE_FIRST_SCRIPT,
            &[&port, &user, pass, &certs.cert_str(), mode],
        );
        let len = 256 * 4096 + 4;
        assert_eq!(read(&server.home(&user).join("early.bin")).len(), len);
        let events = server.wait_sessions_closed(&user, 1);
        assert_transfer(&events, &user, "upload", "/early.bin", len);
        assert_transfer(&events, &user, "download", "/early.bin", len);
        assert_command(&events, "LIST", 226);
        assert_event(&events, &[("event", json!("data_refused"))]);
        if mode == "plain" {
            assert_transfer(&events, &user, "upload", "/late.bin", len);
        } else {
            assert_command(&events, "LIST", 425);
        }
    }
}

/// A renewed certificate is served after SIGHUP, to new connections; a broken one leaves the
/// one in use and the log says why.
#[test]
fn a_renewed_certificate_is_served_after_sighup_and_a_broken_one_is_not() {
    let (old, new) = (Certs::generate(), Certs::generate());
    let live = tempfile::tempdir().expect("temp dir");
    let (cert, key) = (live.path().join("cert.pem"), live.path().join("key.pem"));
    let install = |from: &Certs| {
        std::fs::copy(from.cert(), &cert).expect("cert");
        std::fs::copy(from.key(), &key).expect("key");
    };
    install(&old);
    let server = TestServer::start(&["--tls-cert", utf8(&cert), "--tls-key", utf8(&key)]);
    let (user, pass) = ("renew", "renew-pass-1");
    register(&server, user, pass);
    let work = tempfile::tempdir().expect("temp dir");
    let url = format!("ftp://{user}:{pass}@127.0.0.1:{}/", server.port());
    let list = |ca: &Certs| {
        curl(
            work.path(),
            &["--ssl-reqd", "--cacert", &ca.cert_str(), &url],
        )
    };
    assert_success(&list(&old), "curl with the first certificate");
    assert!(!list(&new).status.success(), "not yet the renewed one");

    install(&new);
    server.signal("HUP");
    server.wait_stderr("the TLS certificate reloaded");
    assert_success(&list(&new), "curl with the renewed certificate");
    assert!(
        !list(&old).status.success(),
        "the old one is no longer served"
    );

    std::fs::write(&cert, b"-----BEGIN CERTIFICATE-----\nnot base64\n").expect("break it");
    server.signal("HUP");
    server.wait_stderr("the old one stays");
    assert_success(&list(&new), "still the renewed certificate");
}
