//! End-to-end tests with FTP clients we did not write: suppaftp (Rust), the system `curl`
//! binary and Python's ftplib. Each test starts its own `ferryd` on an OS-chosen port.

use crate::common;
use crate::common::s3::{Backend, on_both_backends};

use std::io::Cursor;
use std::net::TcpStream;
use std::process::{Command, Stdio};
use std::time::Duration;

use common::{IO_TIMEOUT, TestServer, has_event, pseudo_random, require_program, run_bounded};
use serde_json::{Value, json};
use suppaftp::{FtpStream, Status};

/// A suppaftp client connected to `server`, with bounded control and data sockets.
fn suppaftp_client(server: &TestServer) -> FtpStream {
    let ftp = FtpStream::connect_timeout(server.addr(), IO_TIMEOUT)
        .expect("suppaftp connect")
        .passive_stream_builder(|addr| {
            let data = TcpStream::connect_timeout(&addr, IO_TIMEOUT)
                .map_err(suppaftp::FtpError::ConnectionError)?;
            data.set_read_timeout(Some(IO_TIMEOUT))
                .map_err(suppaftp::FtpError::ConnectionError)?;
            data.set_write_timeout(Some(IO_TIMEOUT))
                .map_err(suppaftp::FtpError::ConnectionError)?;
            Ok(data)
        });
    ftp.get_ref()
        .set_read_timeout(Some(IO_TIMEOUT))
        .expect("read timeout");
    ftp
}

/// The `command` field of every `command` event, in order.
fn commands(events: &[Value]) -> Vec<String> {
    events
        .iter()
        .filter(|e| e["event"] == "command")
        .filter_map(|e| e["command"].as_str().map(str::to_owned))
        .collect()
}

fn suppaftp_full_session_is_byte_exact_and_audited_on(backend: Backend) {
    let server = TestServer::start_on(backend, &[]);
    let password = "Sup3r-secret-pw";
    let mut ftp = suppaftp_client(&server);

    ftp.custom_command(
        format!("SITE REGISTER alice {password}"),
        &[Status::CommandOk],
    )
    .expect("SITE REGISTER");
    ftp.login("alice", password).expect("login");
    ftp.mkdir("docs").expect("MKD");

    let empty: Vec<u8> = Vec::new();
    let small = b"hello, ferry\r\nsecond line\n".to_vec();
    let big = pseudo_random(50 * 1024 * 1024, 1);
    let files: [(&str, &Vec<u8>); 3] = [
        ("docs/empty.bin", &empty),
        ("docs/small.txt", &small),
        ("docs/big.bin", &big),
    ];
    for (name, bytes) in files {
        let sent = ftp
            .put_file(name, &mut Cursor::new(bytes.as_slice()))
            .unwrap_or_else(|e| panic!("STOR {name}: {e}"));
        assert_eq!(sent, bytes.len() as u64, "{name}");
    }

    let list = ftp.list(Some("docs")).expect("LIST");
    for name in ["empty.bin", "small.txt", "big.bin"] {
        assert!(
            list.iter().any(|l| l.ends_with(name)),
            "{name} not in {list:?}"
        );
    }
    let mlsd = ftp.mlsd(Some("docs")).expect("MLSD");
    assert!(
        mlsd.iter().any(|l| l.contains("type=file")
            && l.contains(&format!("size={};", big.len()))
            && l.ends_with(" big.bin")),
        "{mlsd:?}"
    );
    assert!(
        mlsd.iter()
            .any(|l| l.contains("size=0;") && l.ends_with(" empty.bin")),
        "{mlsd:?}"
    );

    for (name, bytes) in files {
        let got = ftp
            .retr_as_buffer(name)
            .unwrap_or_else(|e| panic!("RETR {name}: {e}"))
            .into_inner();
        assert_eq!(got.len(), bytes.len(), "{name}: length");
        assert!(got == *bytes, "{name}: content differs");
    }
    assert_eq!(
        server
            .home("alice")
            .join("docs/big.bin")
            .metadata()
            .expect("stat")
            .len(),
        big.len() as u64
    );

    ftp.rename("docs/small.txt", "docs/renamed.txt")
        .expect("RNFR/RNTO");
    assert!(server.home("alice").join("docs/renamed.txt").is_file());
    assert!(!server.home("alice").join("docs/small.txt").exists());
    for name in ["docs/renamed.txt", "docs/empty.bin", "docs/big.bin"] {
        ftp.rm(name).unwrap_or_else(|e| panic!("DELE {name}: {e}"));
    }
    ftp.rmdir("docs").expect("RMD");
    assert!(!server.home_view("alice").join("docs").exists());
    ftp.quit().expect("QUIT");

    let events = server.wait_audit("alice's session_close", |ev| {
        has_event(
            ev,
            &[("event", json!("session_close")), ("user", json!("alice"))],
        )
    });
    let alice = json!("alice");
    for (kind, path) in [
        ("register", None),
        ("login_ok", None),
        ("mkdir", Some("/docs")),
        ("upload", Some("/docs/big.bin")),
        ("download", Some("/docs/big.bin")),
        ("rename", Some("/docs/small.txt")),
        ("delete", Some("/docs/big.bin")),
        ("rmdir", Some("/docs")),
    ] {
        let mut fields = vec![("event", json!(kind)), ("user", alice.clone())];
        if let Some(path) = path {
            fields.push(("path", json!(path)));
        }
        assert!(
            has_event(&events, &fields),
            "no {kind} {path:?} event in {events:#?}"
        );
    }
    assert!(
        has_event(
            &events,
            &[
                ("event", json!("rename")),
                ("target", json!("/docs/renamed.txt"))
            ]
        ),
        "rename target missing"
    );
    for (kind, name, size) in [
        ("upload", "/docs/big.bin", big.len()),
        ("upload", "/docs/small.txt", small.len()),
        ("upload", "/docs/empty.bin", 0),
        ("download", "/docs/big.bin", big.len()),
    ] {
        assert!(
            has_event(
                &events,
                &[
                    ("event", json!(kind)),
                    ("path", json!(name)),
                    ("bytes", json!(size))
                ]
            ),
            "{kind} {name} with bytes={size} missing in {events:#?}"
        );
    }

    let cmds = commands(&events);
    for expected in [
        "SITE REGISTER alice ***",
        "USER alice",
        "PASS ***",
        "MKD docs",
        "STOR docs/empty.bin",
        "STOR docs/big.bin",
        "LIST docs",
        "MLSD docs",
        "RETR docs/big.bin",
        "RNFR docs/small.txt",
        "RNTO docs/renamed.txt",
        "DELE docs/big.bin",
        "RMD docs",
        "QUIT",
    ] {
        assert!(
            cmds.iter().any(|c| c == expected),
            "no command event {expected:?} in {cmds:#?}"
        );
    }
    assert!(
        events
            .iter()
            .filter(|e| e["event"] == "command")
            .all(|e| e["code"].is_u64()),
        "every command event carries its reply code"
    );
    let audit = server.audit_text();
    assert!(
        !audit.contains(password),
        "password in clear in audit.jsonl"
    );
    assert!(
        !server.stderr().contains(password),
        "password in clear in the server's log"
    );

    let xferlog = std::fs::read_to_string(server.data_dir().join("log/xferlog")).expect("xferlog");
    let lines: Vec<&str> = xferlog.lines().collect();
    assert_eq!(lines.len(), 6, "3 uploads + 3 downloads:\n{xferlog}");
    for line in &lines {
        assert_eq!(line.split_whitespace().count(), 18, "xferlog line {line:?}");
    }
    assert!(
        lines.iter().any(|l| {
            let f: Vec<&str> = l.split_whitespace().collect();
            f[7] == big.len().to_string()
                && f[8] == "/docs/big.bin"
                && f[11] == "i"
                && f[13] == "alice"
        }),
        "{xferlog}"
    );
}

on_both_backends!(suppaftp_full_session_is_byte_exact_and_audited_on: suppaftp_full_session_is_byte_exact_and_audited, suppaftp_full_session_is_byte_exact_and_audited_on_s3);

/// Runs `curl ARGS` (bounded) and returns its output, asserting success unless told otherwise.
fn curl(args: &[&str]) -> std::process::Output {
    require_program("curl");
    let child = Command::new("curl")
        .args(["-sS", "--max-time", "30", "--connect-timeout", "10"])
        .args(args)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("run curl (installed by scripts/test)");
    run_bounded(child, Duration::from_secs(40))
}

fn assert_ok(out: &std::process::Output, what: &str) {
    assert!(
        out.status.success(),
        "{what}: curl {}: {}",
        out.status,
        String::from_utf8_lossy(&out.stderr)
    );
}

fn curl_upload_download_list_and_quote_on(backend: Backend) {
    let server = TestServer::start_on(backend, &[]);
    let (mut ctl, _) = server.connect();
    ctl.expect("SITE REGISTER carol carol-pass-1", 200);
    ctl.expect("QUIT", 221);

    let work = tempfile::tempdir().expect("temp dir");
    let local = work.path().join("upload.bin");
    let payload = pseudo_random(300 * 1024 + 7, 2);
    std::fs::write(&local, &payload).expect("write local file");
    let base = format!("ftp://carol:carol-pass-1@127.0.0.1:{}", server.port());

    // -Q runs before the transfer; MKD then upload into the new directory.
    let out = curl(&[
        "-Q",
        "MKD inbox",
        "-T",
        local.to_str().expect("utf-8 path"),
        &format!("{base}/inbox/"),
    ]);
    assert_ok(&out, "upload");
    assert_eq!(
        std::fs::read(server.home("carol").join("inbox/upload.bin")).expect("uploaded file"),
        payload
    );

    let fetched = work.path().join("fetched.bin");
    let out = curl(&[
        "-o",
        fetched.to_str().expect("utf-8 path"),
        &format!("{base}/inbox/upload.bin"),
    ]);
    assert_ok(&out, "download");
    assert!(
        std::fs::read(&fetched).expect("downloaded file") == payload,
        "download differs"
    );

    let out = curl(&["--list-only", &format!("{base}/inbox/")]);
    assert_ok(&out, "list");
    let names: Vec<String> = String::from_utf8_lossy(&out.stdout)
        .lines()
        .map(str::to_owned)
        .collect();
    assert_eq!(names, ["upload.bin"]);

    let out = curl(&[&format!("{base}/inbox/")]);
    assert_ok(&out, "LIST");
    let listing = String::from_utf8_lossy(&out.stdout).into_owned();
    assert!(
        listing.contains(&payload.len().to_string()) && listing.contains("upload.bin"),
        "{listing}"
    );

    // A missing file: curl reports RETR failure (exit 78), nothing written locally.
    let missing = work.path().join("missing.bin");
    let out = curl(&[
        "-o",
        missing.to_str().expect("utf-8 path"),
        &format!("{base}/inbox/nope.bin"),
    ]);
    assert_eq!(
        out.status.code(),
        Some(78),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );

    // Quote commands after the transfer ('-' prefix): SITE HELP, rename and delete.
    let out = curl(&[
        "-Q",
        "SITE HELP",
        "-Q",
        "-RNFR upload.bin",
        "-Q",
        "-RNTO moved.bin",
        "-Q",
        "-DELE moved.bin",
        "--list-only",
        &format!("{base}/inbox/"),
    ]);
    assert_ok(&out, "quote commands");
    assert!(!server.home("carol").join("inbox/upload.bin").exists());
    assert!(!server.home("carol").join("inbox/moved.bin").exists());

    let events = server.wait_audit("carol's delete", |ev| {
        has_event(
            ev,
            &[
                ("event", json!("delete")),
                ("user", json!("carol")),
                ("path", json!("/inbox/moved.bin")),
            ],
        )
    });
    assert!(has_event(
        &events,
        &[("event", json!("upload")), ("bytes", json!(payload.len()))]
    ));
    assert!(has_event(
        &events,
        &[
            ("event", json!("download")),
            ("bytes", json!(payload.len()))
        ]
    ));
    assert!(
        !server.audit_text().contains("carol-pass-1"),
        "password in clear in audit.jsonl"
    );
}

on_both_backends!(curl_upload_download_list_and_quote_on: curl_upload_download_list_and_quote, curl_upload_download_list_and_quote_on_s3);

const FTPLIB_SCRIPT: &str = r#"
import ftplib, io, sys
port, user, password, src = int(sys.argv[1]), sys.argv[2], sys.argv[3], sys.argv[4]
data = open(src, 'rb').read()
ftp = ftplib.FTP()
ftp.connect('127.0.0.1', port, timeout=15)
assert ftp.sendcmd('SITE REGISTER %s %s' % (user, password)).startswith('200')
try:
    ftp.sendcmd('SITE REGISTER %s %s' % (user, password))
    raise SystemExit('second SITE REGISTER of the same name succeeded')
except ftplib.error_perm as e:
    assert str(e).startswith('550'), e
ftp.login(user, password)
assert ftp.pwd() == '/', ftp.pwd()
ftp.mkd('py')
ftp.cwd('py')
assert ftp.pwd() == '/py', ftp.pwd()
ftp.storbinary('STOR data.bin', io.BytesIO(data))
ftp.storbinary('STOR empty.bin', io.BytesIO(b''))
out = io.BytesIO()
ftp.retrbinary('RETR data.bin', out.write)
assert out.getvalue() == data, 'RETR differs: %d vs %d bytes' % (len(out.getvalue()), len(data))
assert ftp.size('data.bin') == len(data)
facts = dict(ftp.mlsd())
assert facts['data.bin']['type'] == 'file' and int(facts['data.bin']['size']) == len(data), facts
assert int(facts['empty.bin']['size']) == 0, facts
assert sorted(ftp.nlst()) == ['data.bin', 'empty.bin'], ftp.nlst()
lines = []
ftp.dir(lines.append)
assert len(lines) == 2 and any(l.endswith(' data.bin') and (' %d ' % len(data)) in l for l in lines), lines
ftp.cwd('..')
assert [n for n, f in ftp.mlsd() if f['type'] == 'dir'] == ['py']
try:
    ftp.retrbinary('RETR py/none', out.write)
    raise SystemExit('RETR of a missing file succeeded')
except ftplib.error_perm as e:
    assert str(e).startswith('550'), e
ftp.quit()
print('OK')
"#;

fn python_ftplib_register_transfer_and_list_on(backend: Backend) {
    let server = TestServer::start_on(backend, &[]);
    let work = tempfile::tempdir().expect("temp dir");
    let script = work.path().join("client.py");
    std::fs::write(&script, FTPLIB_SCRIPT).expect("write script");
    let src = work.path().join("data.bin");
    let payload = pseudo_random(2 * 1024 * 1024 + 3, 3);
    std::fs::write(&src, &payload).expect("write payload");

    require_program("python3");
    let child = Command::new("python3")
        .arg(&script)
        .arg(server.port().to_string())
        .args(["pyuser", "py-password-9"])
        .arg(&src)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("run python3");
    let out = run_bounded(child, Duration::from_secs(60));
    assert!(
        out.status.success() && out.stdout.starts_with(b"OK"),
        "ftplib script failed ({}):\n{}\n{}",
        out.status,
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(
        std::fs::read(server.home("pyuser").join("py/data.bin")).expect("stored file"),
        payload
    );
    server.wait_audit("pyuser's upload and download", |ev| {
        has_event(
            ev,
            &[
                ("event", json!("upload")),
                ("user", json!("pyuser")),
                ("bytes", json!(payload.len())),
            ],
        ) && has_event(
            ev,
            &[
                ("event", json!("download")),
                ("user", json!("pyuser")),
                ("bytes", json!(payload.len())),
            ],
        )
    });
}

on_both_backends!(python_ftplib_register_transfer_and_list_on: python_ftplib_register_transfer_and_list, python_ftplib_register_transfer_and_list_on_s3);
