//! The protocol surface of `ferryd`, verb by verb, over raw sockets: every verb of `FEAT`,
//! `HELP` and `HELP SITE` with its exact reply codes and its real effect on files. Active mode
//! (PORT/EPRT, IPv4 and IPv6), REST/APPE/STOU, concurrent in-place writers, ABOR in its three
//! wire forms, QUIT during a transfer, TYPE A, MLST/MLSD facts, MFMT/MDTM, HASH, REIN,
//! SITE CHMOD, STAT, HELP, FEAT, anonymous access and read-only accounts.
//!
//! Login, jails, caps, timeouts, codec errors and shutdown are in `server.rs`.

use crate::common;

use std::collections::BTreeSet;
use std::io::{Read, Write};
use std::net::{Shutdown, SocketAddr, TcpListener, TcpStream};
use std::os::unix::fs::MetadataExt;
use std::path::Path;
use std::time::{Duration, Instant, SystemTime};

use common::{Control, IO_TIMEOUT, Reply, TestServer, has_event, pseudo_random};
use ferry::codec::command::{SITE_COMMANDS, VERBS};
use serde_json::json;

// ---- helpers ----

/// A listener for active-mode data connections, on the given loopback address.
fn active_listener(ip: &str) -> TcpListener {
    TcpListener::bind((ip, 0)).expect("bind active-mode listener")
}

/// `PORT h1,h2,h3,h4,p1,p2` for an IPv4 address.
fn port_cmd(addr: SocketAddr) -> String {
    let SocketAddr::V4(v4) = addr else {
        panic!("PORT needs IPv4, got {addr}")
    };
    let [a, b, c, d] = v4.ip().octets();
    let p = v4.port();
    format!("PORT {a},{b},{c},{d},{},{}", p >> 8, p & 0xff)
}

/// `EPRT |1|addr|port|` or `EPRT |2|addr|port|`.
fn eprt_cmd(addr: SocketAddr) -> String {
    let proto = if addr.is_ipv6() { 2 } else { 1 };
    format!("EPRT |{proto}|{}|{}|", addr.ip(), addr.port())
}

/// Accepts the server's data connection (bounded by [`IO_TIMEOUT`]).
fn accept(listener: &TcpListener) -> TcpStream {
    listener.set_nonblocking(true).expect("nonblocking");
    let deadline = Instant::now() + IO_TIMEOUT;
    loop {
        match listener.accept() {
            Ok((stream, _)) => {
                stream.set_nonblocking(false).expect("blocking");
                stream.set_read_timeout(Some(IO_TIMEOUT)).expect("timeout");
                stream.set_write_timeout(Some(IO_TIMEOUT)).expect("timeout");
                return stream;
            }
            Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => {
                assert!(
                    Instant::now() < deadline,
                    "the server never opened the active data connection"
                );
                std::thread::sleep(Duration::from_millis(10));
            }
            Err(e) => panic!("accept: {e}"),
        }
    }
}

/// After PORT/EPRT: a command that sends data to us; returns the bytes (226 asserted).
fn active_fetch(ctl: &mut Control, listener: &TcpListener, line: &str) -> Vec<u8> {
    ctl.expect(line, 150);
    let mut data = accept(listener);
    let mut bytes = Vec::new();
    data.read_to_end(&mut bytes).expect("read active data");
    assert_eq!(ctl.reply().code, 226, "{line}");
    bytes
}

/// After PORT/EPRT: an upload command; 226 asserted.
fn active_store(ctl: &mut Control, listener: &TcpListener, line: &str, bytes: &[u8]) {
    ctl.expect(line, 150);
    let mut data = accept(listener);
    data.write_all(bytes).expect("write active data");
    data.shutdown(Shutdown::Write).expect("shutdown");
    drop(data);
    assert_eq!(ctl.reply().code, 226, "{line}");
}

/// EPSV with an argument: the data address from the 229 reply.
fn epsv_with(ctl: &mut Control, line: &str) -> SocketAddr {
    let reply = ctl.expect(line, 229);
    let port = body(&reply)
        .split("|||")
        .nth(1)
        .and_then(|p| p.split('|').next())
        .and_then(|p| p.parse().ok())
        .unwrap_or_else(|| panic!("no (|||port|) in {reply:?}"));
    SocketAddr::new(ctl.stream().peer_addr().expect("peer").ip(), port)
}

/// Connects to a passive address with timeouts.
fn connect_data(addr: SocketAddr) -> TcpStream {
    let data = TcpStream::connect_timeout(&addr, IO_TIMEOUT).expect("connect data");
    data.set_read_timeout(Some(IO_TIMEOUT)).expect("timeout");
    data.set_write_timeout(Some(IO_TIMEOUT)).expect("timeout");
    data
}

/// The text after the code of a one-line reply.
fn body(reply: &Reply) -> &str {
    reply.lines[0].get(4..).unwrap_or("")
}

/// Starts an upload over a passive connection and leaves it open: the 150 is read.
fn open_upload(ctl: &mut Control, line: &str) -> TcpStream {
    let data = ctl.data_connection();
    ctl.expect(line, 150);
    data
}

/// A sparse file far larger than any socket buffer, so a RETR of it is still running when
/// the test acts.
fn sparse_file(path: &Path) {
    let file = std::fs::File::create(path).expect("create sparse file");
    file.set_len(1 << 32).expect("set_len");
}

/// The hex digest of `data` under `algo`, computed here independently of the server.
fn digest(algo: &str, data: &[u8]) -> String {
    use sha2::Digest;
    match algo {
        "SHA-256" => hex::encode(sha2::Sha256::digest(data)),
        "SHA-512" => hex::encode(sha2::Sha512::digest(data)),
        "SHA-1" => hex::encode(sha1::Sha1::digest(data)),
        "MD5" => hex::encode(md5::Md5::digest(data)),
        "CRC32" => format!("{:08x}", crc32fast::hash(data)),
        other => panic!("no digest {other}"),
    }
}

/// Every line of an MLSD listing, as (facts, name).
fn mlsd_lines(bytes: &[u8]) -> Vec<(String, String)> {
    let text = String::from_utf8(bytes.to_vec()).expect("MLSD is UTF-8");
    assert!(text.ends_with("\r\n"), "{text:?}");
    text.split("\r\n")
        .filter(|l| !l.is_empty())
        .map(|l| {
            let (facts, name) = l.split_once(' ').unwrap_or_else(|| panic!("{l:?}"));
            (facts.to_owned(), name.to_owned())
        })
        .collect()
}

/// A fact's value in one MLSx facts string (`type=file;size=3;`).
fn fact<'a>(facts: &'a str, name: &str) -> Option<&'a str> {
    facts
        .split(';')
        .filter_map(|f| f.split_once('='))
        .find(|(k, _)| k.eq_ignore_ascii_case(name))
        .map(|(_, v)| v)
}

/// Every file and directory under `dir`: path, content, mode and mtime, sorted.
fn snapshot(dir: &Path) -> Vec<(String, Vec<u8>, u32, SystemTime)> {
    let mut out = Vec::new();
    let mut stack = vec![dir.to_path_buf()];
    while let Some(d) = stack.pop() {
        for entry in std::fs::read_dir(&d).expect("read_dir") {
            let entry = entry.expect("entry");
            let meta = entry.metadata().expect("metadata");
            let path = entry.path();
            let content = if meta.is_dir() {
                stack.push(path.clone());
                Vec::new()
            } else {
                std::fs::read(&path).expect("read")
            };
            out.push((
                path.display().to_string(),
                content,
                meta.mode(),
                meta.modified().expect("mtime"),
            ));
        }
    }
    out.sort();
    out
}

// ---- active mode ----

#[test]
fn port_and_eprt_transfer_exact_bytes_and_refuse_other_targets() {
    let server = TestServer::start(&[]);
    let mut ctl = server.register_and_login("amy", "amy-password");
    let listener = active_listener("127.0.0.1");
    let addr = listener.local_addr().expect("addr");
    let payload = pseudo_random(300_000, 1);

    let reply = ctl.expect(&port_cmd(addr), 200);
    assert_eq!(body(&reply), "PORT command successful.");
    active_store(&mut ctl, &listener, "STOR up.bin", &payload);
    assert!(std::fs::read(server.home("amy").join("up.bin")).expect("stored") == payload);

    ctl.expect(&port_cmd(addr), 200);
    assert!(active_fetch(&mut ctl, &listener, "RETR up.bin") == payload);

    ctl.expect(&eprt_cmd(addr), 200);
    let list = active_fetch(&mut ctl, &listener, "LIST");
    let list = String::from_utf8(list).expect("utf8");
    assert!(
        list.contains(" 300000 ") && list.ends_with(" up.bin\r\n"),
        "{list:?}"
    );

    ctl.expect(&eprt_cmd(addr), 200);
    assert!(active_fetch(&mut ctl, &listener, "RETR up.bin") == payload);

    // Bounce protection (RFC 2577): only the client's own address, only ports from 1024.
    let third = SocketAddr::from(([127, 0, 0, 2], addr.port()));
    ctl.expect(&port_cmd(third), 500);
    ctl.expect(&eprt_cmd(third), 500);
    ctl.expect(&port_cmd(SocketAddr::from(([10, 0, 0, 1], 2000))), 500);
    ctl.expect(&port_cmd(SocketAddr::from(([127, 0, 0, 1], 1023))), 500);
    ctl.expect(&eprt_cmd(SocketAddr::from(([127, 0, 0, 1], 21))), 500);
    // A refused PORT leaves no data connection behind.
    ctl.expect("RETR up.bin", 425);
    ctl.expect(&format!("EPRT |3|127.0.0.1|{}|", addr.port()), 522);
    for bad in [
        "PORT 127,0,0,1,4",
        "PORT 127,0,0,1,4,300",
        "PORT a,b,c,d,e,f",
        "EPRT |1|127.0.0.1|",
        "EPRT |1|not-an-ip|2000|",
        "EPRT |1|127.0.0.1|70000|",
        "EPRT |2|127.0.0.1|2000|",
    ] {
        ctl.expect(bad, 501);
    }
    ctl.expect("PORT", 501);
    ctl.expect("EPRT", 501);
    // Nobody listening at the PORT address: 150, then 425 (the connect fails).
    let closed = active_listener("127.0.0.1").local_addr().expect("addr");
    ctl.expect(&port_cmd(closed), 200);
    ctl.expect("RETR up.bin", 150);
    assert_eq!(ctl.reply().code, 425);
    // Still usable afterwards.
    ctl.expect(&port_cmd(addr), 200);
    assert!(active_fetch(&mut ctl, &listener, "RETR up.bin") == payload);
}

#[test]
fn eprt_over_an_ipv6_listener() {
    let server = TestServer::start(&["--listen", "[::1]:0"]);
    server.wait_stderr("listening on [::1]:");
    let v6: SocketAddr = server
        .stderr()
        .lines()
        .find_map(|l| {
            l.split("listening on ")
                .nth(1)
                .filter(|a| a.starts_with('['))
        })
        .and_then(|a| a.trim().parse().ok())
        .expect("an IPv6 listening line");
    let mut ctl = Control::connect(v6);
    assert_eq!(ctl.reply().code, 220);
    ctl.expect("SITE REGISTER ben ben-password", 200);
    ctl.login("ben", "ben-password");
    let listener = active_listener("::1");
    let addr = listener.local_addr().expect("addr");
    let payload = pseudo_random(200_000, 2);

    let reply = ctl.expect(&format!("EPRT |2|::1|{}|", addr.port()), 200);
    assert_eq!(body(&reply), "EPRT command successful.");
    active_store(&mut ctl, &listener, "STOR six.bin", &payload);
    assert!(std::fs::read(server.home("ben").join("six.bin")).expect("stored") == payload);
    ctl.expect(&eprt_cmd(addr), 200);
    assert!(active_fetch(&mut ctl, &listener, "RETR six.bin") == payload);
    ctl.expect(&eprt_cmd(addr), 200);
    let names = active_fetch(&mut ctl, &listener, "NLST");
    assert_eq!(names, b"six.bin\r\n");
    // Over IPv6 an IPv4 target is not the client's address.
    ctl.expect(&format!("EPRT |1|127.0.0.1|{}|", addr.port()), 500);
    ctl.expect(&format!("EPRT |2|::2|{}|", addr.port()), 500);
    ctl.expect(&format!("EPRT |2|::1|{}|", 80), 500);
    // EPSV over IPv6: protocol 2 (or none), never 1.
    ctl.expect("EPSV 1", 522);
    let mut data = connect_data(epsv_with(&mut ctl, "EPSV 2"));
    ctl.expect("RETR six.bin", 150);
    let mut got = Vec::new();
    data.read_to_end(&mut got).expect("read");
    assert!(got == payload);
    assert_eq!(ctl.reply().code, 226);
}

#[test]
fn epsv_all_refuses_pasv_port_and_eprt_and_epsv_still_works() {
    let server = TestServer::start(&[]);
    let mut ctl = server.register_and_login("cal", "cal-password");
    assert_eq!(ctl.stor("f.txt", b"epsv only").code, 226);
    let listener = active_listener("127.0.0.1");
    let addr = listener.local_addr().expect("addr");
    ctl.expect("EPSV ALL", 200);
    ctl.expect("PASV", 503);
    ctl.expect(&port_cmd(addr), 503);
    ctl.expect(&eprt_cmd(addr), 503);
    let data_addr = ctl.epsv();
    let mut data = connect_data(data_addr);
    ctl.expect("RETR f.txt", 150);
    let mut got = Vec::new();
    data.read_to_end(&mut got).expect("read");
    assert_eq!(got, b"epsv only");
    assert_eq!(ctl.reply().code, 226);
    ctl.expect("EPSV x", 501);
    // RFC 2428 §3: over IPv4 only network protocol 1 can be offered.
    ctl.expect("EPSV 2", 522);
    let mut data = connect_data(epsv_with(&mut ctl, "EPSV 1"));
    ctl.expect("RETR f.txt", 150);
    let mut got = Vec::new();
    data.read_to_end(&mut got).expect("read");
    assert_eq!(got, b"epsv only");
    assert_eq!(ctl.reply().code, 226);
}

#[test]
fn unknown_network_protocols_get_522_naming_the_ones_the_server_listens_on() {
    // RFC 2428 §2, §3: 522 with the protocols the server supports, also after EPSV ALL.
    let server = TestServer::start(&[]);
    let mut ctl = server.register_and_login("cid", "cid-password");
    for line in ["EPSV 3", "EPSV 99999", "EPRT |3|127.0.0.1|2000|"] {
        let reply = ctl.expect(line, 522);
        assert_eq!(
            body(&reply),
            "Network protocol not supported, use (1).",
            "{line}"
        );
    }
    // Listening only on IPv4, the server does not support IPv6 data connections at all.
    let reply = ctl.expect("EPRT |2|::1|2000|", 522);
    assert_eq!(body(&reply), "Network protocol not supported, use (1).");
    ctl.expect("EPSV ALL", 200);
    ctl.expect("EPSV 3", 522);
    assert_eq!(
        ctl.epsv().ip(),
        ctl.stream().peer_addr().expect("peer").ip()
    );

    // Listening on both families, both are named.
    let both = TestServer::start(&["--listen", "[::1]:0"]);
    both.wait_stderr("listening on [::1]:");
    let mut ctl = both.register_and_login("dee", "dee-password");
    for line in ["EPSV 3", "EPRT |0|127.0.0.1|2000|"] {
        let reply = ctl.expect(line, 522);
        assert_eq!(
            body(&reply),
            "Network protocol not supported, use (1,2).",
            "{line}"
        );
    }
    // Over IPv4 a passive port can only be offered on IPv4 (the control address).
    let reply = ctl.expect("EPSV 2", 522);
    assert_eq!(body(&reply), "Network protocol not supported, use (1).");
    ctl.expect("EPSV 1", 229);
}

// ---- REST, APPE, STOU ----

#[test]
fn rest_stream_resumes_downloads_and_holds_until_the_transfer() {
    let server = TestServer::start(&[]);
    let mut ctl = server.register_and_login("dan", "dan-password");
    let payload = pseudo_random(100_000, 3);
    assert_eq!(ctl.stor("big.bin", &payload).code, 226);

    // REST, then PASV (inside fetch), then RETR.
    let reply = ctl.expect("REST 1000", 350);
    assert!(body(&reply).contains("1000"), "{reply:?}");
    let (reply, tail) = ctl.fetch("RETR big.bin");
    assert_eq!(reply.code, 226);
    assert!(tail == payload[1000..], "REST 1000 + RETR sent the tail");

    // REST is used up by that RETR: the next one is whole.
    assert!(ctl.retr("big.bin") == payload);

    // REST, then EPSV, TYPE I and SIZE in between, then RETR.
    ctl.expect("REST 99990", 350);
    let data_addr = ctl.epsv();
    ctl.expect("TYPE I", 200);
    ctl.expect("SIZE big.bin", 213);
    let mut data = connect_data(data_addr);
    ctl.expect("RETR big.bin", 150);
    let mut got = Vec::new();
    data.read_to_end(&mut got).expect("read");
    assert_eq!(got, payload[99_990..]);
    assert_eq!(ctl.reply().code, 226);

    // At the end exactly: nothing to send; beyond it: 554, and REST is forgotten.
    ctl.expect("REST 100000", 350);
    let (reply, rest) = ctl.fetch("RETR big.bin");
    assert_eq!((reply.code, rest.len()), (226, 0));
    ctl.expect("REST 100001", 350);
    let (reply, _) = ctl.fetch("RETR big.bin");
    assert_eq!(reply.code, 554, "{reply:?}");
    assert!(ctl.retr("big.bin") == payload);
    ctl.expect("REST x", 501);
    ctl.expect("REST -1", 501);
}

#[test]
fn rest_then_stor_rewrites_from_the_offset() {
    let server = TestServer::start(&[]);
    let mut ctl = server.register_and_login("eve", "eve-password");
    let file = server.home("eve").join("r.bin");
    let original = pseudo_random(1000, 4);
    assert_eq!(ctl.stor("r.bin", &original).code, 226);

    ctl.expect("REST 400", 350);
    assert_eq!(ctl.stor("r.bin", b"NEW-BYTES").code, 226);
    let mut want = original[..400].to_vec();
    want.extend_from_slice(b"NEW-BYTES");
    assert!(
        std::fs::read(&file).expect("file") == want,
        "truncated at 400, then the new bytes"
    );

    // REST at the end continues the file (a resumed upload).
    ctl.expect(&format!("REST {}", want.len()), 350);
    assert_eq!(ctl.stor("r.bin", b"+more").code, 226);
    want.extend_from_slice(b"+more");
    assert!(std::fs::read(&file).expect("file") == want);

    // Beyond the end: 554 and the file is untouched.
    ctl.expect("REST 5000", 350);
    assert_eq!(ctl.stor("r.bin", b"nope").code, 554);
    assert!(std::fs::read(&file).expect("file") == want);
    // REST was used up by the refused STOR: this one replaces.
    assert_eq!(ctl.stor("r.bin", b"whole").code, 226);
    assert_eq!(std::fs::read(&file).expect("file"), b"whole");
}

#[test]
fn appe_appends_and_creates_a_missing_file() {
    let server = TestServer::start(&[]);
    let mut ctl = server.register_and_login("fay", "fay-password");
    let file = server.home("fay").join("log.txt");
    let mut data = ctl.data_connection();
    let reply = ctl.expect("APPE log.txt", 150);
    assert!(body(&reply).contains("/log.txt"), "{reply:?}");
    data.write_all(b"first\n").expect("write");
    drop(data);
    assert_eq!(ctl.reply().code, 226);
    assert_eq!(std::fs::read(&file).expect("created"), b"first\n");

    let mut data = ctl.data_connection();
    ctl.expect("APPE log.txt", 150);
    data.write_all(b"second\n").expect("write");
    drop(data);
    assert_eq!(ctl.reply().code, 226);
    assert_eq!(std::fs::read(&file).expect("appended"), b"first\nsecond\n");
    ctl.expect("APPE", 501);
    ctl.expect("MKD d", 257);
    ctl.pasv();
    ctl.expect("APPE d", 550);
}

#[test]
fn stou_stores_under_a_fresh_name_each_time() {
    let server = TestServer::start(&[]);
    let mut ctl = server.register_and_login("gus", "gus-password");
    let home = server.home("gus");

    let mut names = Vec::new();
    for content in [&b"one"[..], b"two", b"three"] {
        let mut data = ctl.data_connection();
        let reply = ctl.expect("STOU report.txt", 150);
        let name = body(&reply)
            .strip_prefix("FILE: ")
            .unwrap_or_else(|| panic!("150 without FILE: {reply:?}"))
            .to_owned();
        data.write_all(content).expect("write");
        drop(data);
        assert_eq!(ctl.reply().code, 226);
        assert_eq!(std::fs::read(home.join(&name)).expect("stored"), content);
        names.push(name);
    }
    assert_eq!(names, ["report.txt", "report.txt.1", "report.txt.2"]);

    // Without a name the server picks one.
    let mut data = ctl.data_connection();
    let reply = ctl.expect("STOU", 150);
    let name = body(&reply)
        .strip_prefix("FILE: ")
        .expect("FILE:")
        .to_owned();
    assert!(!name.is_empty() && !names.contains(&name), "{reply:?}");
    data.write_all(b"anon").expect("write");
    drop(data);
    assert_eq!(ctl.reply().code, 226);
    assert_eq!(std::fs::read(home.join(&name)).expect("stored"), b"anon");
    assert_eq!(
        std::fs::read(home.join("report.txt")).expect("first"),
        b"one"
    );
}

#[test]
fn a_second_in_place_writer_gets_450_and_bytes_never_interleave() {
    let server = TestServer::start(&[]);
    let mut first = server.register_and_login("hal", "hal-password");
    let (mut second, _) = server.connect();
    second.login("hal", "hal-password");
    assert_eq!(first.stor("shared.log", b"seed\n").code, 226);
    let file = server.home("hal").join("shared.log");

    let part1 = pseudo_random(64 * 1024, 5);
    let part2 = pseudo_random(64 * 1024, 6);
    let mut data = open_upload(&mut first, "APPE shared.log");
    data.write_all(&part1).expect("write part 1");
    data.flush().expect("flush");

    // While the first APPE is still sending: APPE, REST+STOR and STOU's target are busy.
    second.pasv();
    let reply = second.expect("APPE shared.log", 450);
    assert!(body(&reply).contains("busy"), "{reply:?}");
    second.expect("REST 2", 350);
    second.expect("STOR shared.log", 450);

    data.write_all(&part2).expect("write part 2");
    drop(data);
    assert_eq!(first.reply().code, 226);
    let mut want = b"seed\n".to_vec();
    want.extend_from_slice(&part1);
    want.extend_from_slice(&part2);
    assert!(
        std::fs::read(&file).expect("file") == want,
        "bytes interleaved"
    );

    // Once the first is done, the second may append.
    second.expect("NOOP", 200);
    let mut data = open_upload(&mut second, "APPE shared.log");
    data.write_all(b"tail").expect("write");
    drop(data);
    assert_eq!(second.reply().code, 226);
    want.extend_from_slice(b"tail");
    assert!(std::fs::read(&file).expect("file") == want);
}

// ---- ABOR and QUIT during transfers ----

/// SITE REGISTER then USER/PASS on an already open connection.
fn register_here(ctl: &mut Control, user: &str) {
    let pass = format!("{user}-password");
    ctl.expect(&format!("SITE REGISTER {user} {pass}"), 200);
    ctl.login(user, &pass);
}

/// Starts a RETR of a 4 GiB sparse file and reads nothing, so it is surely still running.
fn stalled_retr(server: &TestServer, user: &str) -> (Control, TcpStream) {
    let mut ctl = server.register_and_login(user, &format!("{user}-password"));
    sparse_file(&server.home(user).join("huge.bin"));
    let data = ctl.data_connection();
    ctl.expect("RETR huge.bin", 150);
    (ctl, data)
}

/// After an abort request: 426 for RETR, 226 for ABOR, then the session works.
fn assert_aborted(ctl: &mut Control, data: TcpStream) {
    let first = ctl.reply();
    assert_eq!(first.code, 426, "{first:?}");
    let second = ctl.reply();
    assert_eq!(second.code, 226, "{second:?}");
    assert_aborted_tail(ctl, data);
}

/// After 426 + 226: the server has closed the data connection and the session works.
fn assert_aborted_tail(ctl: &mut Control, mut data: TcpStream) {
    let mut rest = Vec::new();
    match data.read_to_end(&mut rest) {
        Ok(_) => {}
        Err(e) if e.kind() == std::io::ErrorKind::ConnectionReset => {}
        Err(e) => panic!("the aborted data connection stayed open: {e}"),
    }
    drop(data);
    ctl.expect("NOOP", 200);
    assert_eq!(ctl.stor("after.txt", b"still works").code, 226);
    assert_eq!(ctl.retr("after.txt"), b"still works");
}

#[test]
fn abor_without_a_transfer_is_225() {
    let server = TestServer::start(&[]);
    let (mut ctl, _) = server.connect();
    ctl.expect("ABOR", 225);
    register_here(&mut ctl, "ian");
    ctl.expect("ABOR", 225);
    // ABOR also forgets a prepared data connection.
    ctl.pasv();
    ctl.expect("ABOR", 225);
    ctl.expect("LIST", 425);
}

#[test]
fn abor_during_retr_is_426_then_226() {
    let server = TestServer::start(&[]);
    let (mut ctl, data) = stalled_retr(&server, "jan");
    // A NOOP right behind ABOR is answered after ABOR's two replies, not between them.
    ctl.send("ABOR");
    ctl.send("NOOP");
    let codes: Vec<u16> = (0..3).map(|_| ctl.reply().code).collect();
    assert_eq!(codes, [426, 226, 200]);
    assert_aborted_tail(&mut ctl, data);
    server.wait_audit("the aborted download", |ev| {
        has_event(
            ev,
            &[
                ("event", json!("download")),
                ("path", json!("/huge.bin")),
                ("code", json!(426)),
            ],
        )
    });
}

#[test]
fn abor_after_telnet_interrupt_and_synch_is_426_then_226() {
    let server = TestServer::start(&[]);
    let (mut ctl, data) = stalled_retr(&server, "kai");
    // RFC 959 §4.1.3: IAC IP, IAC (DM: the Synch), then ABOR.
    ctl.send_raw(b"\xff\xf4\xff\xf2ABOR\r\n");
    assert_aborted(&mut ctl, data);
}

#[test]
fn abor_sent_as_urgent_data_like_ftplib_is_426_then_226() {
    let server = TestServer::start(&[]);
    let (mut ctl, data) = stalled_retr(&server, "lou");
    // Python's ftplib.abort(): sock.sendall(b"ABOR\r\n", MSG_OOB). socket2's
    // send_out_of_band is send(2) with MSG_OOB.
    let sock = socket2::SockRef::from(ctl.stream());
    let sent = sock.send_out_of_band(b"ABOR\r\n").expect("send MSG_OOB");
    assert_eq!(sent, 6);
    assert_aborted(&mut ctl, data);
}

#[test]
fn abor_as_urgent_telnet_interrupt_then_synch_like_telnet_clients() {
    let server = TestServer::start(&[]);
    let (mut ctl, data) = stalled_retr(&server, "mae");
    // IAC IP IAC as urgent data, then DM and the command in band (RFC 959 §4.1.3, the way
    // BSD ftp sends it).
    let sock = socket2::SockRef::from(ctl.stream());
    sock.send_out_of_band(b"\xff\xf4\xff")
        .expect("send MSG_OOB");
    ctl.send_raw(b"\xf2ABOR\r\n");
    assert_aborted(&mut ctl, data);
}

#[test]
fn abor_during_appe_keeps_what_arrived_and_releases_the_file() {
    let server = TestServer::start(&[]);
    let mut ctl = server.register_and_login("ike", "ike-password");
    let file = server.home("ike").join("part.bin");
    assert_eq!(ctl.stor("part.bin", b"head:").code, 226);
    let sent = pseudo_random(256 * 1024, 9);
    let mut data = open_upload(&mut ctl, "APPE part.bin");
    data.write_all(&sent).expect("write");
    data.flush().expect("flush");
    // Let the server take in what we sent before aborting.
    let deadline = Instant::now() + IO_TIMEOUT;
    while std::fs::metadata(&file).expect("meta").len() < 5 + sent.len() as u64 {
        assert!(
            Instant::now() < deadline,
            "the appended bytes never arrived"
        );
        std::thread::sleep(Duration::from_millis(20));
    }
    ctl.send("ABOR");
    assert_aborted(&mut ctl, data);
    // In-place writes keep what arrived (for a later resume) and release the lock.
    let mut want = b"head:".to_vec();
    want.extend_from_slice(&sent);
    assert!(std::fs::read(&file).expect("file") == want);
    let mut data = open_upload(&mut ctl, "APPE part.bin");
    data.write_all(b"!").expect("write");
    drop(data);
    assert_eq!(ctl.reply().code, 226);
    want.push(b'!');
    assert!(std::fs::read(&file).expect("file") == want);
}

#[test]
fn abor_mid_stream_of_an_ascii_append_leaves_the_file_settled_and_free() {
    let server = TestServer::start(&[]);
    let mut ctl = server.register_and_login("ivy", "ivy-password");
    let file = server.home("ivy").join("log.txt");
    assert_eq!(ctl.stor("log.txt", b"head\n").code, 226);
    // TYPE A and APPE: the buffered write path, not splice. ABOR while bytes still flow.
    ctl.expect("TYPE A", 200);
    let mut data = open_upload(&mut ctl, "APPE log.txt");
    let line = b"a line of text\r\n".repeat(64 * 1024);
    data.write_all(&line).expect("write");
    ctl.send("ABOR");
    assert_aborted(&mut ctl, data);
    // By the 226 the task is gone: no write of it may land later, and the file is free.
    let settled = std::fs::metadata(&file).expect("meta").len();
    std::thread::sleep(Duration::from_millis(200));
    assert_eq!(std::fs::metadata(&file).expect("meta").len(), settled);
    let mut data = open_upload(&mut ctl, "APPE log.txt");
    data.write_all(b"tail\r\n").expect("write");
    drop(data);
    assert_eq!(ctl.reply().code, 226);
    let text = std::fs::read(&file).expect("file");
    assert!(text.starts_with(b"head\n") && text.ends_with(b"tail\n"));
    assert_eq!(text.len() as u64, settled + 5);
}

#[test]
fn quit_during_a_download_lets_it_finish_then_221() {
    let server = TestServer::start(&[]);
    let mut ctl = server.register_and_login("ned", "ned-password");
    let payload = pseudo_random(4 << 20, 7);
    std::fs::write(server.home("ned").join("q.bin"), &payload).expect("seed");
    let mut data = ctl.data_connection();
    ctl.expect("RETR q.bin", 150);
    ctl.send("QUIT");
    // Give the server time to read QUIT while the transfer is blocked on us.
    std::thread::sleep(Duration::from_millis(100));
    let mut got = Vec::new();
    data.read_to_end(&mut got).expect("read");
    assert!(got == payload, "the download finished whole");
    assert_eq!(ctl.reply().code, 226);
    assert_eq!(ctl.reply().code, 221);
    ctl.assert_closed();
}

#[test]
fn quit_during_an_upload_ended_by_the_client_then_221() {
    let server = TestServer::start(&[]);
    let mut ctl = server.register_and_login("ola", "ola-password");
    let mut data = open_upload(&mut ctl, "STOR up.bin");
    data.write_all(b"partial").expect("write");
    ctl.send("QUIT");
    std::thread::sleep(Duration::from_millis(100));
    data.write_all(b" and the rest").expect("write");
    drop(data);
    assert_eq!(ctl.reply().code, 226);
    assert_eq!(ctl.reply().code, 221);
    ctl.assert_closed();
    assert_eq!(
        std::fs::read(server.home("ola").join("up.bin")).expect("stored"),
        b"partial and the rest"
    );
}

// ---- transfer parameters ----

#[test]
fn type_a_converts_line_ends_and_size_refuses_in_ascii() {
    let server = TestServer::start(&[]);
    let mut ctl = server.register_and_login("pam", "pam-password");
    let home = server.home("pam");
    std::fs::write(home.join("unix.txt"), b"a\nb\r\nc\rd\n\nend").expect("seed");

    ctl.expect("TYPE A", 200);
    // Bare LF goes out as CRLF; an existing CRLF and a lone CR stay.
    assert_eq!(ctl.retr("unix.txt"), b"a\r\nb\r\nc\rd\r\n\r\nend");
    ctl.expect("SIZE unix.txt", 550);
    assert_eq!(ctl.stor("dos.txt", b"x\r\ny\rz\r\n\r\nlast\r").code, 226);
    assert_eq!(
        std::fs::read(home.join("dos.txt")).expect("stored"),
        b"x\ny\rz\n\nlast\r"
    );
    ctl.expect("TYPE A N", 200);

    ctl.expect("TYPE I", 200);
    assert_eq!(body(&ctl.expect("SIZE unix.txt", 213)), "13");
    assert_eq!(ctl.retr("unix.txt"), b"a\nb\r\nc\rd\n\nend");
    ctl.expect("TYPE L 8", 200);
    assert_eq!(body(&ctl.expect("SIZE dos.txt", 213)), "12");
    assert_eq!(ctl.stor("bin.bin", b"r\r\nn\n").code, 226);
    assert_eq!(
        std::fs::read(home.join("bin.bin")).expect("stored"),
        b"r\r\nn\n"
    );

    ctl.expect("TYPE E", 504);
    ctl.expect("TYPE A T", 504);
    ctl.expect("TYPE X", 501);
    ctl.expect("TYPE", 501);
    ctl.expect("MODE S", 200);
    ctl.expect("MODE B", 504);
    ctl.expect("MODE C", 504);
    ctl.expect("STRU F", 200);
    ctl.expect("STRU R", 504);
    ctl.expect("STRU P", 504);
    ctl.expect("ALLO 1000", 202);
    ctl.expect("ACCT billing", 202);
    ctl.expect("SMNT /mnt", 502);
    // A failed TYPE keeps the previous one (still L 8: binary).
    assert_eq!(ctl.retr("unix.txt"), b"a\nb\r\nc\rd\n\nend");
}

// ---- listings ----

#[test]
fn mlsd_and_mlst_facts_and_opts_mlst() {
    let server = TestServer::start(&[]);
    let mut ctl = server.register_and_login("quin", "quin-password");
    let home = server.home("quin");
    ctl.expect("MKD sub", 257);
    assert_eq!(ctl.stor("f.txt", b"12345").code, 226);
    assert_eq!(ctl.stor("sub/g.txt", b"1234567").code, 226);

    let (reply, bytes) = ctl.fetch("MLSD");
    assert_eq!(reply.code, 226);
    let lines = mlsd_lines(&bytes);
    let types: Vec<&str> = lines
        .iter()
        .map(|(f, _)| fact(f, "type").expect("type"))
        .collect();
    assert_eq!(types[0], "cdir", "{lines:?}");
    assert!(
        !types.contains(&"pdir"),
        "the home has no parent: {lines:?}"
    );
    let file = lines.iter().find(|(_, n)| n == "f.txt").expect("f.txt");
    let meta = std::fs::metadata(home.join("f.txt")).expect("meta");
    assert_eq!(fact(&file.0, "type"), Some("file"));
    assert_eq!(fact(&file.0, "size"), Some("5"));
    let modify = fact(&file.0, "modify").expect("modify");
    assert!(
        modify.len() == 14 && modify.bytes().all(|b| b.is_ascii_digit()),
        "{modify}"
    );
    assert_eq!(fact(&file.0, "perm"), Some("adfrw"));
    assert_eq!(
        fact(&file.0, "unique"),
        Some(format!("{:x}g{:x}", meta.dev(), meta.ino()).as_str())
    );
    assert_eq!(
        fact(&file.0, "UNIX.mode"),
        Some(format!("0{:o}", meta.mode() & 0o7777).as_str())
    );
    let dir = lines.iter().find(|(_, n)| n == "sub").expect("sub");
    assert_eq!(fact(&dir.0, "type"), Some("dir"));
    assert_eq!(fact(&dir.0, "perm"), Some("cdeflmp"));

    let (reply, bytes) = ctl.fetch("MLSD sub");
    assert_eq!(reply.code, 226);
    let lines = mlsd_lines(&bytes);
    let types: Vec<&str> = lines
        .iter()
        .map(|(f, _)| fact(f, "type").expect("type"))
        .collect();
    assert_eq!(types, ["cdir", "pdir", "file"], "{lines:?}");
    assert_eq!(lines[2].1, "g.txt");
    assert_eq!(fact(&lines[2].0, "size"), Some("7"));

    let mlst = ctl.expect("MLST f.txt", 250);
    assert_eq!(mlst.lines.len(), 3, "{mlst:?}");
    let line = mlst.lines[1].strip_prefix(' ').expect("leading space");
    let (facts, name) = line.split_once(' ').expect("facts and name");
    assert_eq!(name, "/f.txt");
    for f in ["type", "size", "modify", "perm", "unique", "UNIX.mode"] {
        assert!(fact(facts, f).is_some(), "{f} missing from {facts}");
    }
    let mlst = ctl.expect("MLST", 250);
    assert!(
        mlst.lines[1].contains("type=dir;") && mlst.lines[1].ends_with(" /"),
        "{mlst:?}"
    );
    ctl.expect("MLST nothing", 550);

    // OPTS MLST selects the facts; unknown ones are ignored; FEAT marks the selected.
    let reply = ctl.expect("OPTS MLST type;size;bogus;", 200);
    assert_eq!(body(&reply), "MLST OPTS type;size;");
    let mlst = ctl.expect("MLST f.txt", 250);
    assert_eq!(mlst.lines[1], " type=file;size=5; /f.txt");
    let (_, bytes) = ctl.fetch("MLSD sub");
    let sub_size = std::fs::metadata(home.join("sub")).expect("meta").len();
    let home_size = std::fs::metadata(&home).expect("meta").len();
    assert_eq!(
        String::from_utf8(bytes).expect("utf8"),
        format!(
            "type=cdir;size={sub_size}; .\r\n\
             type=pdir;size={home_size}; ..\r\n\
             type=file;size=7; g.txt\r\n"
        )
    );
    let feat = ctl.expect("FEAT", 211);
    assert!(
        feat.lines
            .contains(&" MLST type*;size*;modify;perm;unique;UNIX.mode;".to_owned()),
        "{feat:?}"
    );
    ctl.expect("OPTS MLST", 200);
    let mlst = ctl.expect("MLST f.txt", 250);
    assert_eq!(mlst.lines[1], "  /f.txt");
}

#[test]
fn list_and_nlst_accept_ls_flags_and_stat_lists_paths() {
    let server = TestServer::start(&[]);
    let mut ctl = server.register_and_login("rae", "rae-password");
    ctl.expect("MKD docs", 257);
    assert_eq!(ctl.stor("docs/a.txt", b"aaa").code, 226);
    assert_eq!(ctl.stor("top.txt", b"top").code, 226);

    let (reply, plain) = ctl.fetch("LIST");
    assert_eq!(reply.code, 226);
    let (reply, la) = ctl.fetch("LIST -la");
    assert_eq!(reply.code, 226);
    assert_eq!(plain, la, "LIST -la is LIST");
    let text = String::from_utf8(la).expect("utf8");
    assert!(
        text.contains(" docs\r\n") && text.contains(" top.txt\r\n"),
        "{text:?}"
    );
    assert!(text.starts_with('d') || text.starts_with('-'), "{text:?}");

    let (reply, sub) = ctl.fetch("LIST -a docs");
    assert_eq!(reply.code, 226);
    let sub = String::from_utf8(sub).expect("utf8");
    assert!(sub.starts_with("-rw"), "{sub:?}");
    assert!(
        sub.ends_with(" a.txt\r\n") && sub.lines().count() == 1,
        "{sub:?}"
    );

    let (reply, names) = ctl.fetch("NLST -l");
    assert_eq!(reply.code, 226);
    let mut names: Vec<String> = String::from_utf8(names)
        .expect("utf8")
        .split("\r\n")
        .filter(|l| !l.is_empty())
        .map(str::to_owned)
        .collect();
    names.sort();
    assert_eq!(names, ["docs", "top.txt"]);
    let (reply, _) = ctl.fetch("LIST nowhere");
    assert_eq!(reply.code, 550);
    // The refused LIST left its passive connection prepared; ABOR forgets it.
    assert!(
        ctl.expect("STAT", 211)
            .text()
            .contains("Data connection prepared")
    );
    ctl.expect("ABOR", 225);

    let stat = ctl.expect("STAT top.txt", 213);
    assert_eq!(stat.lines.len(), 3, "{stat:?}");
    assert!(
        stat.lines[1].starts_with("-rw") && stat.lines[1].ends_with(" top.txt"),
        "{stat:?}"
    );
    let stat = ctl.expect("STAT docs", 213);
    assert!(stat.text().contains(" a.txt"), "{stat:?}");
    assert_eq!(stat.lines.len(), 3, "{stat:?}");
    ctl.expect("STAT nowhere", 550);

    let stat = ctl.expect("STAT", 211);
    let text = stat.text();
    assert!(
        text.contains("Logged in as rae") && text.contains("No data connection"),
        "{text}"
    );
}

#[test]
fn stat_during_a_transfer_shows_progress() {
    let server = TestServer::start(&[]);
    let (mut ctl, mut data) = stalled_retr(&server, "sam");
    let mut first = vec![0u8; 256 * 1024];
    data.read_exact(&mut first).expect("read some");
    assert!(first.iter().all(|b| *b == 0));
    // The transfer runs on another thread than the session, and one sendfile call may still
    // be moving bytes the client has already read: STAT catches up once that call returns.
    let mut bytes = 0;
    for _ in 0..100 {
        let stat = ctl.expect("STAT", 211);
        assert!(stat.lines.len() > 2, "{stat:?}");
        let progress = stat
            .lines
            .iter()
            .find_map(|l| l.split("Transfer in progress: ").nth(1))
            .unwrap_or_else(|| panic!("no progress in {stat:?}"));
        bytes = progress
            .split(' ')
            .next()
            .and_then(|n| n.parse().ok())
            .unwrap_or_else(|| panic!("{progress:?}"));
        if bytes >= 256 * 1024 {
            break;
        }
        std::thread::sleep(std::time::Duration::from_millis(20));
    }
    assert!(
        bytes >= 256 * 1024,
        "{bytes} bytes reported, we read 256 KiB"
    );
    ctl.expect("NOOP", 200);
    // Other commands wait for the transfer's end; ABOR does not.
    ctl.send("PWD");
    ctl.send("ABOR");
    assert_eq!(ctl.reply().code, 426);
    assert_eq!(ctl.reply().code, 226);
    assert_eq!(ctl.reply().code, 257, "the held-back PWD");
    assert_aborted_tail(&mut ctl, data);
}

// ---- MFMT, MDTM, HASH ----

#[test]
fn mfmt_sets_the_time_that_mdtm_and_the_disk_show() {
    let server = TestServer::start(&[]);
    let mut ctl = server.register_and_login("tia", "tia-password");
    assert_eq!(ctl.stor("f", b"x").code, 226);
    let reply = ctl.expect("MFMT 20200102030405 f", 213);
    assert_eq!(body(&reply), "Modify=20200102030405; /f");
    assert_eq!(body(&ctl.expect("MDTM f", 213)), "20200102030405");
    let mtime = std::fs::metadata(server.home("tia").join("f"))
        .expect("meta")
        .modified()
        .expect("mtime");
    assert_eq!(
        mtime,
        SystemTime::UNIX_EPOCH + Duration::from_secs(1_577_934_245)
    );
    let (_, bytes) = ctl.fetch("MLSD");
    let lines = mlsd_lines(&bytes);
    let f = lines.iter().find(|(_, n)| n == "f").expect("f");
    assert_eq!(fact(&f.0, "modify"), Some("20200102030405"));

    ctl.expect("MFMT 20201302030405 f", 501);
    ctl.expect("MFMT 2020010203 f", 501);
    ctl.expect("MFMT 20200102030405", 501);
    ctl.expect("MFMT yesterday f", 501);
    ctl.expect("MFMT 20200102030405 missing", 550);
    ctl.expect("MDTM missing", 550);
    ctl.expect("MKD d", 257);
    ctl.expect("MDTM d", 550);
    // Nothing changed by the refused ones.
    assert_eq!(body(&ctl.expect("MDTM f", 213)), "20200102030405");
}

#[test]
fn hash_with_every_algorithm_matches_a_local_digest() {
    let server = TestServer::start(&[]);
    let mut ctl = server.register_and_login("uma", "uma-password");
    let payload = pseudo_random(300_000, 8);
    assert_eq!(ctl.stor("data.bin", &payload).code, 226);
    ctl.expect("MKD dir", 257);

    let reply = ctl.expect("HASH data.bin", 213);
    assert_eq!(
        body(&reply),
        format!("SHA-256 0-300000 {} /data.bin", digest("SHA-256", &payload))
    );
    assert_eq!(body(&ctl.expect("OPTS HASH", 200)), "SHA-256");
    for algo in ["MD5", "SHA-512", "SHA-1", "CRC32", "SHA-256"] {
        assert_eq!(body(&ctl.expect(&format!("OPTS HASH {algo}"), 200)), algo);
        assert_eq!(body(&ctl.expect("OPTS HASH", 200)), algo);
        let reply = ctl.expect("HASH data.bin", 213);
        assert_eq!(
            body(&reply),
            format!("{algo} 0-300000 {} /data.bin", digest(algo, &payload)),
        );
        let feat = ctl.expect("FEAT", 211);
        let line = feat
            .lines
            .iter()
            .find(|l| l.starts_with(" HASH "))
            .unwrap_or_else(|| panic!("{feat:?}"));
        let starred: Vec<&str> = line[6..].split(';').filter(|a| a.ends_with('*')).collect();
        assert_eq!(starred, [format!("{algo}*")], "{line}");
    }
    // Case-insensitive names; unknown ones are refused and change nothing.
    assert_eq!(body(&ctl.expect("OPTS HASH md5", 200)), "MD5");
    ctl.expect("OPTS HASH SHA-3", 501);
    assert_eq!(body(&ctl.expect("OPTS HASH", 200)), "MD5");
    let empty = ctl.stor("empty", b"");
    assert_eq!(empty.code, 226);
    assert_eq!(
        body(&ctl.expect("HASH empty", 213)),
        format!("MD5 0-0 {} /empty", digest("MD5", b""))
    );
    ctl.expect("HASH dir", 550);
    ctl.expect("HASH missing", 550);
    ctl.expect("HASH", 501);
}

// ---- REIN, SITE ----

/// REIN logs out and puts every setting back to its default (RFC 959 §4.1.1), each checked
/// by what it does: the working directory (which a login also resets), TYPE, OPTS HASH,
/// OPTS MLST, EPSV ALL, RNFR, the prepared data connection and REST.
#[test]
fn rein_logs_out_and_resets_the_session() {
    let server = TestServer::start(&[]);
    let mut ctl = server.register_and_login("vic", "vic-password");
    assert_eq!(ctl.stor("f.txt", b"abc").code, 226);
    assert_eq!(ctl.stor("n.txt", b"a\nb\n").code, 226);
    ctl.expect("MKD d", 257);
    ctl.expect("CWD d", 250);
    ctl.expect("TYPE A", 200);
    ctl.expect("OPTS HASH MD5", 200);
    ctl.expect("OPTS MLST type;", 200);
    ctl.expect("REST 1", 350);
    ctl.pasv();
    ctl.expect("EPSV ALL", 200);
    // RNTO must follow RNFR directly, so RNFR comes last.
    ctl.expect("RNFR /f.txt", 350);

    ctl.expect("REIN", 220);
    ctl.expect("RETR /f.txt", 530);
    ctl.expect("PWD", 530);
    ctl.expect("LIST", 530);
    ctl.login("vic", "vic-password");
    // Back in the home, TYPE I, SHA-256, all MLST facts, no RNFR, no data connection.
    assert!(ctl.expect("PWD", 257).text().contains("\"/\""));
    ctl.expect("RNTO /g.txt", 503);
    ctl.expect("RETR f.txt", 425);
    assert_eq!(body(&ctl.expect("SIZE f.txt", 213)), "3");
    assert_eq!(body(&ctl.expect("OPTS HASH", 200)), "SHA-256");
    let mlst = ctl.expect("MLST f.txt", 250);
    assert!(
        mlst.lines[1].contains("type=file;size=3;modify="),
        "{mlst:?}"
    );
    // PASV is allowed again (no EPSV ALL), and TYPE I sends the bytes as stored.
    assert_eq!(ctl.retr("f.txt"), b"abc");
    assert_eq!(ctl.retr("n.txt"), b"a\nb\n");
    // The 425 above took the REST offset, so REST is checked on its own: the first transfer
    // after REIN starts at byte 0.
    ctl.expect("REST 2", 350);
    ctl.expect("REIN", 220);
    ctl.login("vic", "vic-password");
    assert_eq!(ctl.retr("n.txt"), b"a\nb\n");
    // REIN before login is harmless; then any account may log in.
    ctl.expect("REIN", 220);
    ctl.expect("REIN", 220);
    ctl.expect("SITE REGISTER wes wes-password", 200);
    ctl.login("wes", "wes-password");
    ctl.expect("RETR f.txt", 425);
    ctl.pasv();
    ctl.expect("RETR f.txt", 550);
    ctl.expect("REIN x", 501);
}

#[test]
fn site_chmod_sets_the_mode_and_site_help_lists_every_subcommand() {
    let server = TestServer::start(&[]);
    let mut ctl = server.register_and_login("xia", "xia-password");
    let home = server.home("xia");
    assert_eq!(ctl.stor("f", b"secret").code, 226);
    ctl.expect("MKD d", 257);
    let mode = |p: &str| std::fs::metadata(home.join(p)).expect("meta").mode() & 0o7777;

    ctl.expect("SITE CHMOD 600 f", 200);
    assert_eq!(mode("f"), 0o600);
    ctl.expect("SITE CHMOD 0644 f", 200);
    assert_eq!(mode("f"), 0o644);
    ctl.expect("SITE CHMOD 711 d", 200);
    assert_eq!(mode("d"), 0o711);
    ctl.expect("SITE CHMOD 999 f", 501);
    ctl.expect("SITE CHMOD 4755 f", 501);
    ctl.expect("SITE CHMOD rw f", 501);
    ctl.expect("SITE CHMOD 600", 501);
    ctl.expect("SITE CHMOD 600 missing", 550);
    assert_eq!(mode("f"), 0o644);
    ctl.expect("SITE FROB x", 502);

    let help = ctl.expect("HELP SITE", 214);
    assert_eq!(
        help.lines,
        ctl.expect("SITE HELP", 214).lines,
        "HELP SITE = SITE HELP"
    );
    let text = help.text();
    for sub in ["REGISTER", "PASSWD", "CHMOD", "HELP"] {
        assert!(
            text.contains(&format!("SITE {sub}")),
            "{sub} missing: {text}"
        );
    }
    for (sub, _) in SITE_COMMANDS {
        assert!(
            text.contains(&format!("SITE {sub}")),
            "{sub} missing: {text}"
        );
    }
    // SITE HELP works before login too.
    let (mut fresh, _) = server.connect();
    assert_eq!(fresh.expect("SITE HELP", 214).text(), text);
    fresh.expect("SITE CHMOD 600 f", 530);
}

// ---- HELP, FEAT ----

#[test]
fn help_lists_every_verb_and_explains_each() {
    let server = TestServer::start(&[]);
    let (mut ctl, _) = server.connect();
    let help = ctl.expect("HELP", 214);
    let listed: BTreeSet<&str> = help.lines[1..help.lines.len() - 1]
        .iter()
        .flat_map(|l| l.split_whitespace())
        .collect();
    let verbs: BTreeSet<&str> = VERBS.iter().map(|(v, _)| *v).collect();
    assert_eq!(listed, verbs, "HELP lists exactly VERBS");
    for verb in &verbs {
        let reply = ctl.expect(&format!("HELP {verb}"), 214);
        if *verb == "SITE" {
            // HELP SITE lists the SITE subcommands.
            assert!(reply.text().contains("SITE CHMOD"), "{reply:?}");
        } else {
            assert!(body(&reply).starts_with("Syntax: "), "{reply:?}");
        }
        let lower = ctl.expect(&format!("help {}", verb.to_lowercase()), 214);
        assert_eq!(reply.lines, lower.lines);
    }
    ctl.expect("HELP FOO", 501);
    ctl.expect("HELP SITE", 214);
    // Every verb HELP names is parsed: none of them is 502 before login (530 or answered;
    // SMNT is 502 by design, but only once logged in).
    for verb in &verbs {
        if matches!(*verb, "QUIT" | "REIN" | "ABOR" | "PASS" | "USER" | "SITE") {
            continue;
        }
        let reply = ctl.cmd(&format!("{verb} x"));
        assert_ne!(reply.code, 502, "{verb} x -> {reply:?}");
    }
}

/// Every verb HELP lists, every SITE subcommand and every FEAT feature appears as a command
/// in these end-to-end tests (this file, `server.rs`, `quota.rs`, `tls.rs` or the harness).
#[test]
fn every_verb_of_help_and_feat_is_exercised_here() {
    let sources = [
        include_str!("protocol.rs"),
        include_str!("server.rs"),
        include_str!("quota.rs"),
        include_str!("tls.rs"),
        include_str!("common/mod.rs"),
    ]
    .concat();
    let used = |cmd: &str| {
        [" ", "\"", "\\r"]
            .iter()
            .any(|end| sources.contains(&format!("\"{cmd}{end}")))
    };
    let mut missing: Vec<String> = VERBS
        .iter()
        .map(|(v, _)| v.to_string())
        .filter(|v| !used(v))
        .collect();
    missing.extend(
        SITE_COMMANDS
            .iter()
            .map(|(s, _)| format!("SITE {s}"))
            .filter(|s| !used(s)),
    );
    assert!(missing.is_empty(), "no end-to-end test sends {missing:?}");
}

#[test]
fn feat_lists_exactly_the_extensions_and_each_one_works() {
    let server = TestServer::start(&[]);
    let (mut ctl, _) = server.connect();
    // FEAT is answered before login (RFC 2389 §3).
    let before = ctl.expect("FEAT", 211);
    register_here(&mut ctl, "yan");
    let feat = ctl.expect("FEAT", 211);
    assert_eq!(before.lines, feat.lines);
    assert_eq!(
        feat.lines,
        [
            "211-Features:",
            " EPRT",
            " EPSV",
            " HASH SHA-256*;SHA-512;SHA-1;MD5;CRC32",
            " MDTM",
            " MFMT",
            " MLST type*;size*;modify*;perm*;unique*;UNIX.mode*;",
            " PASV",
            " REST STREAM",
            " SIZE",
            " UTF8",
            "211 End",
        ]
    );
    std::fs::write(server.home("yan").join("f"), b"feature").expect("seed");
    let listener = active_listener("127.0.0.1");
    let addr = listener.local_addr().expect("addr");
    for line in &feat.lines[1..feat.lines.len() - 1] {
        let name = line.trim().split(' ').next().expect("feature name");
        match name {
            "EPRT" => {
                ctl.expect(&eprt_cmd(addr), 200);
                assert_eq!(active_fetch(&mut ctl, &listener, "RETR f"), b"feature");
            }
            "EPSV" => {
                let mut data = connect_data(ctl.epsv());
                ctl.expect("RETR f", 150);
                let mut got = Vec::new();
                data.read_to_end(&mut got).expect("read");
                assert_eq!(got, b"feature");
                assert_eq!(ctl.reply().code, 226);
            }
            "HASH" => {
                let reply = ctl.expect("HASH f", 213);
                assert!(body(&reply).contains(&digest("SHA-256", b"feature")));
            }
            "MDTM" => {
                ctl.expect("MDTM f", 213);
            }
            "MFMT" => {
                ctl.expect("MFMT 20010203040506 f", 213);
                assert_eq!(body(&ctl.expect("MDTM f", 213)), "20010203040506");
            }
            "MLST" => {
                ctl.expect("MLST f", 250);
                let (reply, _) = ctl.fetch("MLSD");
                assert_eq!(reply.code, 226);
            }
            "PASV" => assert_eq!(ctl.retr("f"), b"feature"),
            "REST" => {
                assert_eq!(line.trim(), "REST STREAM");
                ctl.expect("REST 3", 350);
                assert_eq!(ctl.retr("f"), b"ture");
            }
            "SIZE" => assert_eq!(body(&ctl.expect("SIZE f", 213)), "7"),
            "UTF8" => {
                ctl.expect("OPTS UTF8 ON", 200);
                let name = "grüße ☃.txt";
                assert_eq!(ctl.stor(name, b"u").code, 226);
                assert!(server.home("yan").join(name).exists());
                let (_, names) = ctl.fetch("NLST");
                assert!(String::from_utf8(names).expect("utf8").contains(name));
            }
            other => panic!("FEAT names {other}, which this test does not know"),
        }
    }
    ctl.expect("OPTS FOO", 501);
    ctl.expect("OPTS", 501);
}

// ---- file management verbs and their aliases ----

#[test]
fn file_management_verbs_and_x_aliases() {
    let server = TestServer::start(&[]);
    let mut ctl = server.register_and_login("zed", "zed-password");
    let home = server.home("zed");
    ctl.expect("NOOP", 200);
    assert_eq!(body(&ctl.expect("SYST", 215)), "UNIX Type: L8");
    ctl.expect("XMKD one", 257);
    ctl.expect("MKD one/two", 257);
    assert!(home.join("one/two").is_dir());
    ctl.expect("XCWD one/two", 250);
    assert!(ctl.expect("XPWD", 257).text().contains("\"/one/two\""));
    ctl.expect("XCUP", 250);
    assert!(ctl.expect("PWD", 257).text().contains("\"/one\""));
    ctl.expect("CDUP", 250);
    ctl.expect("CDUP", 250);
    assert!(ctl.expect("PWD", 257).text().contains("\"/\""));
    ctl.expect("XRMD one", 550);
    ctl.expect("XRMD one/two", 250);
    ctl.expect("RMD one", 250);
    assert!(!home.join("one").exists());
    ctl.expect("RMD one", 550);

    assert_eq!(ctl.stor("old.txt", b"moved").code, 226);
    ctl.expect("RNFR old.txt", 350);
    ctl.expect("RNTO new.txt", 250);
    assert!(!home.join("old.txt").exists());
    assert_eq!(
        std::fs::read(home.join("new.txt")).expect("renamed"),
        b"moved"
    );
    ctl.expect("RNFR missing", 550);
    ctl.expect("RNTO x", 503);
    ctl.expect("DELE new.txt", 250);
    assert!(!home.join("new.txt").exists());
    ctl.expect("DELE new.txt", 550);
    ctl.expect("MKD dir", 257);
    ctl.expect("DELE dir", 550);
    assert!(home.join("dir").is_dir());
    ctl.expect("RNFR dir", 350);
    ctl.expect("RNTO /", 550);
    ctl.expect("RNFR /", 550);
    ctl.expect("QUIT", 221);
    ctl.assert_closed();
}

// ---- anonymous access and read-only accounts ----

#[test]
fn anonymous_access_is_off_by_default_and_the_names_are_reserved() {
    let server = TestServer::start(&[]);
    let (mut ctl, _) = server.connect();
    for name in ["anonymous", "ftp"] {
        ctl.expect(&format!("USER {name}"), 331);
        ctl.expect("PASS guest@example.com", 530);
        let (mut fresh, _) = server.connect();
        fresh.expect(&format!("SITE REGISTER {name} long-enough-password"), 501);
    }
    assert!(!server.data_dir().join("accounts/anonymous.json").exists());
}

/// The writes a read-only user is refused (550); the transfers get a data connection first.
const WRITES: &[&str] = &[
    "STOR new.txt",
    "STOR pub.txt",
    "APPE pub.txt",
    "STOU pub.txt",
    "STOU",
    "DELE pub.txt",
    "MKD newdir",
    "XMKD newdir",
    "RMD sub",
    "XRMD sub",
    "RNFR pub.txt",
    "RNTO other.txt",
    "MFMT 20200102030405 pub.txt",
    "SITE CHMOD 777 pub.txt",
];

/// Every write is 550 (with a data connection prepared for the transfer ones) and nothing
/// changes under `root`.
fn assert_every_write_refused(ctl: &mut Control, root: &Path) {
    let before = snapshot(root);
    for line in WRITES {
        let data =
            (line.starts_with("STOR") || line.starts_with("APPE") || line.starts_with("STOU"))
                .then(|| ctl.data_connection());
        let reply = ctl.cmd(line);
        assert_eq!(reply.code, 550, "{line} -> {reply:?}");
        drop(data);
    }
    ctl.expect("REST 2", 350);
    ctl.pasv();
    ctl.expect("STOR pub.txt", 550);
    assert_eq!(snapshot(root), before, "a refused write changed the files");
}

/// Reads work: LIST, NLST, MLSD (with read-only perm facts), MLST, RETR, SIZE, MDTM, HASH,
/// CWD, STAT.
fn assert_reads_work(ctl: &mut Control) {
    let (reply, list) = ctl.fetch("LIST");
    assert_eq!(reply.code, 226);
    assert!(
        String::from_utf8_lossy(&list).contains(" pub.txt\r\n"),
        "{list:?}"
    );
    let (reply, names) = ctl.fetch("NLST");
    assert_eq!(reply.code, 226);
    assert!(String::from_utf8_lossy(&names).contains("sub"));
    assert_eq!(ctl.retr("pub.txt"), b"public data\n");
    assert_eq!(ctl.retr("sub/inner.txt"), b"inner");
    ctl.expect("REST 7", 350);
    assert_eq!(ctl.retr("pub.txt"), b"data\n");
    assert_eq!(body(&ctl.expect("SIZE pub.txt", 213)), "12");
    ctl.expect("MDTM pub.txt", 213);
    let hash = ctl.expect("HASH pub.txt", 213);
    assert!(body(&hash).contains(&digest("SHA-256", b"public data\n")));
    let (reply, bytes) = ctl.fetch("MLSD");
    assert_eq!(reply.code, 226);
    for (facts, name) in mlsd_lines(&bytes) {
        let want = if fact(&facts, "type") == Some("file") {
            "r"
        } else {
            "el"
        };
        assert_eq!(fact(&facts, "perm"), Some(want), "{name}: {facts}");
    }
    let mlst = ctl.expect("MLST pub.txt", 250);
    assert!(mlst.lines[1].contains(";perm=r;"), "{mlst:?}");
    ctl.expect("CWD sub", 250);
    let (reply, bytes) = ctl.fetch("MLSD");
    assert_eq!(reply.code, 226);
    let lines = mlsd_lines(&bytes);
    assert!(
        lines
            .iter()
            .any(|(f, _)| f.contains("type=pdir;") && f.contains("perm=el;"))
    );
    ctl.expect("CDUP", 250);
    ctl.expect("STAT pub.txt", 213);
}

fn seed_tree(root: &Path) {
    std::fs::write(root.join("pub.txt"), b"public data\n").expect("seed");
    std::fs::create_dir_all(root.join("sub")).expect("seed dir");
    std::fs::write(root.join("sub/inner.txt"), b"inner").expect("seed");
}

#[test]
fn anonymous_root_is_served_read_only_to_anonymous_and_ftp() {
    let anon = tempfile::tempdir().expect("anonymous root");
    seed_tree(anon.path());
    let root = anon.path().to_str().expect("utf8 path");
    let server = TestServer::start(&["--anonymous-root", root]);

    for (user, pass) in [
        ("anonymous", "guest@example.com"),
        ("ftp", ""),
        ("ANONYMOUS", "x"),
    ] {
        let (mut ctl, _) = server.connect();
        ctl.expect(&format!("USER {user}"), 331);
        ctl.expect(&format!("PASS {pass}"), 230);
        assert!(ctl.expect("PWD", 257).text().contains("\"/\""));
        assert_reads_work(&mut ctl);
        ctl.expect("CWD ..", 250);
        assert!(ctl.expect("PWD", 257).text().contains("\"/\""), "jailed");
        ctl.expect("SITE PASSWD a bbbbbbbb", 550);
        ctl.expect("QUIT", 221);
    }

    let (mut ctl, _) = server.connect();
    ctl.expect("SITE REGISTER anonymous long-enough-password", 501);
    ctl.expect("SITE REGISTER ftp long-enough-password", 501);
    ctl.login("anonymous", "me@example.com");
    assert_every_write_refused(&mut ctl, anon.path());
    // The anonymous root is not some user's home, and no account was created.
    assert!(!server.data_dir().join("accounts/anonymous.json").exists());
    assert!(!server.data_dir().join("home/anonymous").exists());

    server.wait_audit("anonymous login_ok", |ev| {
        has_event(
            ev,
            &[("event", json!("login_ok")), ("user", json!("anonymous"))],
        )
    });
    // Registered users are unaffected: they keep their own writable home.
    let mut user = server.register_and_login("bea", "bea-password");
    assert_eq!(user.stor("mine.txt", b"mine").code, 226);
    assert!(!anon.path().join("mine.txt").exists());
}

#[test]
fn read_only_accounts_read_but_never_write() {
    let server = TestServer::start(&[]);
    let out = server.admin(
        &[
            "user",
            "add",
            "ro",
            "--password-stdin",
            "--read-only",
            "--iterations",
            "1000",
        ],
        Some("ro-password-1\n"),
    );
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let (mut ctl, _) = server.connect();
    ctl.login("ro", "ro-password-1");
    let home = server.home("ro");
    seed_tree(&home);
    assert_reads_work(&mut ctl);
    assert_every_write_refused(&mut ctl, &home);
    // SITE PASSWD is not a file write: a read-only user may change the password.
    ctl.expect("SITE PASSWD ro-password-1 ro-password-2", 200);
    ctl.expect("REIN", 220);
    ctl.login("ro", "ro-password-2");
    let (mut ctl2, _) = server.connect();
    ctl2.login("ro", "ro-password-2");
    ctl2.expect("DELE pub.txt", 550);
    assert!(home.join("pub.txt").exists());
}

#[test]
fn security_commands_without_a_certificate() {
    let server = TestServer::start(&[]);
    let (mut ctl, _) = server.connect();
    // RFC 2228: a server that cannot do TLS refuses AUTH; the rest needs AUTH first.
    ctl.expect("AUTH TLS", 534);
    ctl.expect("PBSZ 0", 503);
    ctl.expect("PROT P", 503);
    ctl.expect("CCC", 534);
    let feat = ctl.expect("FEAT", 211).text();
    assert!(
        !feat.contains("AUTH") && !feat.contains("PBSZ") && !feat.contains("PROT"),
        "{feat}"
    );
    ctl.expect("NOOP", 200);
}
