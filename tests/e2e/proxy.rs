//! The PROXY protocol (v1, v2) from a load balancer's network: the header names the client,
//! and every check that uses the client's address (audit, bans, the passive-peer check) uses
//! it; connections from a balancer without a header are closed; a header from anywhere else
//! is only an unknown FTP command (502). Raw headers over real sockets here; HAProxy itself below.

use std::io::{Read, Write};
use std::net::{IpAddr, Shutdown, SocketAddr, TcpStream};

use serde_json::json;

use crate::common::haproxy::{HaProxy, Node, free_range, listening_on};
use crate::common::{
    Control, IO_TIMEOUT, Reply, TestServer, assert_success, pseudo_random, run_client,
};
use crate::interop::curl;

/// A v2 header (PROXY, TCP) naming `client`, for a server at `server` (same family).
fn v2(client: &str, server: &str) -> Vec<u8> {
    use ppp::v2::{Builder, Command, Protocol, Version};
    let (client, server): (SocketAddr, SocketAddr) = (
        client.parse().expect("client address"),
        server.parse().expect("server address"),
    );
    Builder::with_addresses(
        Version::Two | Command::Proxy,
        Protocol::Stream,
        (client, server),
    )
    .build()
    .expect("v2 header")
}

/// A server that takes PROXY headers from 127.0.0.0/8 (every test connection).
fn proxied_server(extra: &[&str]) -> TestServer {
    let mut args = vec!["--proxy-protocol-from", "127.0.0.0/8"];
    args.extend_from_slice(extra);
    TestServer::start(&args)
}

/// A control connection that begins with `header`; its greeting.
fn connect_with(server: &TestServer, header: &[u8]) -> (Control, Reply) {
    let mut ctl = Control::connect(server.addr());
    ctl.send_raw(header);
    let greeting = ctl.reply();
    (ctl, greeting)
}

/// A passive data connection to `addr` that begins with `header`.
fn data_with(addr: SocketAddr, header: &[u8]) -> TcpStream {
    let mut data = TcpStream::connect_timeout(&addr, IO_TIMEOUT).expect("connect data");
    data.set_read_timeout(Some(IO_TIMEOUT)).expect("timeout");
    data.write_all(header).expect("data header");
    data
}

#[test]
fn a_v2_header_names_the_client_in_the_audit_log_and_the_session_lines() {
    let server = proxied_server(&[]);
    let header = v2("203.0.113.7:40000", &server.addr().to_string());
    let (mut ctl, greeting) = connect_with(&server, &header);
    assert_eq!(greeting.code, 220, "{greeting:?}");
    ctl.expect("SITE REGISTER alice alice-password", 200);
    ctl.login("alice", "alice-password");
    let payload = pseudo_random(70_001, 3);
    let pasv = ctl.pasv();
    let mut data = data_with(pasv, &v2("203.0.113.7:40001", &pasv.to_string()));
    assert_eq!(ctl.cmd("STOR up.bin").code, 150);
    data.write_all(&payload).expect("upload");
    data.shutdown(Shutdown::Write).expect("shutdown");
    drop(data);
    assert_eq!(ctl.reply().code, 226);
    ctl.expect("QUIT", 221);
    let events = server.wait_audit("login and upload", |ev| {
        ev.iter().any(|e| e["event"] == "upload") && ev.iter().any(|e| e["event"] == "login_ok")
    });
    for kind in ["session_open", "register", "login_ok", "upload"] {
        let event = events
            .iter()
            .find(|e| e["event"] == kind)
            .unwrap_or_else(|| panic!("no {kind} in {events:?}"));
        assert_eq!(event["peer"], json!("203.0.113.7:40000"), "{event}");
    }
    let balancer = ctl.stream().local_addr().expect("local");
    server.wait_stderr(&format!("203.0.113.7:40000 via balancer {balancer}"));
    assert_eq!(
        std::fs::read(server.home("alice").join("up.bin")).expect("uploaded"),
        payload
    );
}

#[test]
fn bans_fall_on_the_address_the_header_names() {
    let server = proxied_server(&["--ban-after-failures", "2", "--login-failure-delay-ms", "0"]);
    let addr = server.addr().to_string();
    for _ in 0..2 {
        let (mut ctl, greeting) = connect_with(&server, &v2("203.0.113.7:40000", &addr));
        assert_eq!(greeting.code, 220);
        ctl.expect("USER nobody", 331);
        assert_eq!(ctl.cmd("PASS wrong-password").code, 530);
    }
    server.wait_audit("the ban of 203.0.113.7", |ev| {
        ev.iter()
            .any(|e| e["event"] == "banned" && e["peer"] == "203.0.113.7:40000")
    });
    let (mut banned, refusal) = connect_with(&server, &v2("203.0.113.7:40002", &addr));
    assert_eq!(refusal.code, 421, "{refusal:?}");
    banned.assert_closed();
    // Another client behind the same balancer is served.
    let (mut other, greeting) = connect_with(&server, &v2("203.0.113.8:40000", &addr));
    assert_eq!(greeting.code, 220, "{greeting:?}");
    other.expect("NOOP", 200);
}

#[test]
fn from_a_balancer_network_a_connection_without_a_header_is_closed() {
    let server = proxied_server(&[]);
    let mut ctl = Control::connect(server.addr());
    ctl.send_raw(b"USER alice\r\nPASS alice-password\r\n");
    ctl.assert_closed();
    let port = ctl.stream().local_addr().expect("local").port();
    server.wait_stderr(&format!(
        "refused connection from 127.0.0.1:{port}: no valid PROXY header"
    ));
    // A health check (v2 LOCAL) is closed too, without a session.
    let local = {
        use ppp::v2::{Addresses, Builder, Command, Protocol, Version};
        Builder::with_addresses(
            Version::Two | Command::Local,
            Protocol::Unspecified,
            Addresses::Unspecified,
        )
        .build()
        .expect("LOCAL header")
    };
    let mut check = Control::connect(server.addr());
    check.send_raw(&local);
    check.assert_closed();
    let (mut ctl, greeting) =
        connect_with(&server, b"PROXY TCP4 203.0.113.9 127.0.0.1 5000 21\r\n");
    assert_eq!(greeting.code, 220, "a v1 header works as well");
    ctl.expect("QUIT", 221);
    let events = server.wait_audit("the v1 session's end", |ev| {
        ev.iter().any(|e| e["event"] == "session_close")
    });
    let sessions: Vec<_> = events
        .iter()
        .filter(|e| e["event"] == "session_open")
        .collect();
    assert_eq!(
        sessions.len(),
        1,
        "only the v1 client was a session: {events:?}"
    );
    assert_eq!(sessions[0]["peer"], json!("203.0.113.9:5000"));
}

#[test]
fn from_elsewhere_a_header_is_an_unknown_command() {
    let server = TestServer::start(&["--proxy-protocol-from", "10.0.0.0/8"]);
    let (mut ctl, greeting) = server.connect();
    assert_eq!(greeting.code, 220);
    // ferryd answers every unknown verb 502 (RFC 959's "not implemented").
    let reply = ctl.cmd("PROXY TCP4 203.0.113.7 127.0.0.1 40000 21");
    assert_eq!(reply.code, 502, "{reply:?}");
    let port = ctl.stream().local_addr().expect("local").port();
    server.wait_stderr(&format!("127.0.0.1:{port}: not implemented: PROXY"));
    ctl.expect("NOOP", 200);
    // A v2 signature ends with "QUIT\n": a server that does not expect one takes it as QUIT
    // (that is its purpose); nothing else happens, and the server serves on.
    let mut binary = Control::connect(server.addr());
    assert_eq!(binary.reply().code, 220);
    binary.send_raw(&v2("203.0.113.7:40000", &server.addr().to_string()));
    let mut rest = Vec::new();
    binary
        .stream()
        .set_read_timeout(Some(IO_TIMEOUT))
        .expect("timeout");
    let _ = binary.stream().read_to_end(&mut rest);
    ctl.expect("NOOP", 200);
    let (mut again, greeting) = server.connect();
    assert_eq!(greeting.code, 220);
    again.expect("QUIT", 221);
    let events = server.wait_audit("the sessions' ends", |ev| {
        ev.iter().filter(|e| e["event"] == "session_close").count() >= 2
    });
    assert!(
        events
            .iter()
            .all(|e| !e["peer"].as_str().unwrap_or("").starts_with("203.0.113.")),
        "a header from outside the balancer networks named the client: {events:?}"
    );
}

#[test]
fn an_ipv6_client_logs_in_and_its_passive_connections_are_checked_on_the_header() {
    let server = proxied_server(&[]);
    let (mut ctl, greeting) = connect_with(&server, &v2("[2001:db8::7]:40000", "[2001:db8::1]:21"));
    assert_eq!(greeting.code, 220);
    ctl.expect("SITE REGISTER bob bob-password", 200);
    ctl.login("bob", "bob-password");
    let payload = pseudo_random(50_000, 9);
    let epsv = ctl.epsv();
    let mut data = data_with(epsv, &v2("[2001:db8::7]:40001", "[2001:db8::1]:21"));
    assert_eq!(ctl.cmd("STOR six.bin").code, 150);
    data.write_all(&payload).expect("upload");
    data.shutdown(Shutdown::Write).expect("shutdown");
    drop(data);
    assert_eq!(ctl.reply().code, 226);
    // Another client's header on the passive port is refused; the client's own then works.
    let pasv = ctl.pasv();
    let mut thief = data_with(pasv, &v2("[2001:db8::8]:40000", "[2001:db8::1]:21"));
    let mut own = data_with(pasv, &v2("[2001:db8::7]:40002", "[2001:db8::1]:21"));
    assert_eq!(ctl.cmd("RETR six.bin").code, 150);
    let mut got = Vec::new();
    own.read_to_end(&mut got).expect("download");
    assert_eq!(ctl.reply().code, 226);
    assert_eq!(got, payload);
    let mut stolen = Vec::new();
    let _ = thief.read_to_end(&mut stolen);
    assert!(stolen.is_empty(), "the thief got {} bytes", stolen.len());
    let events = server.wait_audit("the refused data connection", |ev| {
        ev.iter().any(|e| e["event"] == "data_refused")
    });
    let refused = events
        .iter()
        .find(|e| e["event"] == "data_refused")
        .expect("data_refused");
    assert_eq!(refused["peer"], json!("[2001:db8::8]:40000"), "{refused}");
    let login = events
        .iter()
        .find(|e| e["event"] == "login_ok")
        .expect("login_ok");
    assert_eq!(login["peer"], json!("[2001:db8::7]:40000"), "{login}");
}

// ---------------------------------------------------------------------------------------------
// HAProxy
// ---------------------------------------------------------------------------------------------

/// A node on 127.0.0.11 with a passive range of its own, behind HAProxy on 127.0.0.1.
fn node_behind_haproxy() -> (TestServer, HaProxy) {
    let ip: IpAddr = "127.0.0.11".parse().expect("node ip");
    let passive = free_range(8, &[ip]);
    let flags = Node::flags(ip, passive);
    let flags: Vec<&str> = flags.iter().map(String::as_str).collect();
    let server = TestServer::start(&flags);
    let proxy = HaProxy::start(&[Node {
        control: listening_on(&server, ip),
        passive,
    }]);
    (server, proxy)
}

#[test]
fn curl_and_lftp_through_haproxy_over_epsv_and_pasv() {
    let (server, proxy) = node_behind_haproxy();
    let (user, pass) = ("hana", "haproxy-pass-1");
    // Registered through the balancer: the audit names this client's own port, which the
    // balancer's connection to the node does not have.
    let mut ctl = Control::connect(proxy.addr());
    assert_eq!(ctl.reply().code, 220, "greeting through haproxy");
    ctl.expect(&format!("SITE REGISTER {user} {pass}"), 200);
    ctl.login(user, pass);
    let pasv = ctl.pasv();
    assert_eq!(
        pasv.ip(),
        IpAddr::from([127, 0, 0, 1]),
        "PASV names the balancer"
    );
    ctl.expect("QUIT", 221);
    let me = ctl.stream().local_addr().expect("local");
    let events = server.wait_audit("the login through haproxy", |ev| {
        ev.iter().any(|e| e["event"] == "login_ok")
    });
    let login = events
        .iter()
        .find(|e| e["event"] == "login_ok")
        .expect("login_ok");
    assert_eq!(login["peer"], json!(me.to_string()), "{login}");

    let work = tempfile::tempdir().expect("temp dir");
    let w = work.path();
    let payload = pseudo_random(1024 * 1024 + 5, 41);
    std::fs::write(w.join("big.bin"), &payload).expect("write payload");
    let base = format!("ftp://{user}:{pass}@{}", proxy.addr());
    // The clients connect from 127.0.0.2, an address HAProxy's own connections to the node
    // never have: the audit can name them only from the headers.
    let client = "127.0.0.2";
    let curl_from = |args: &[&str]| curl(w, &[&["--interface", client], args].concat());
    // curl: upload over EPSV, download over PASV, a listing over EPSV.
    let out = curl_from(&["-T", "big.bin", &format!("{base}/up.bin")]);
    assert_success(&out, "curl -T through haproxy (EPSV)");
    assert!(std::fs::read(server.home(user).join("up.bin")).expect("up.bin") == payload);
    let out = curl_from(&[
        "--disable-epsv",
        "-o",
        "down.bin",
        &format!("{base}/up.bin"),
    ]);
    assert_success(&out, "curl download through haproxy (PASV)");
    assert!(std::fs::read(w.join("down.bin")).expect("down.bin") == payload);
    let out = curl_from(&["--list-only", &format!("{base}/")]);
    assert_success(&out, "curl --list-only through haproxy");
    assert!(
        String::from_utf8_lossy(&out.stdout)
            .lines()
            .any(|l| l == "up.bin"),
        "{out:?}"
    );
    // lftp: a put over PASV, a get and a listing over EPSV.
    for (epsv, commands) in [
        ("no", "put big.bin -o lftp.bin"),
        ("yes", "get lftp.bin -o back.bin; cls -1"),
    ] {
        let script = format!(
            "set net:max-retries 1; set net:timeout 10; set ftp:ssl-allow no; \
             set cmd:fail-exit yes; set ftp:prefer-epsv {epsv}; \
             set net:socket-bind-ipv4 {client}; \
             open -u {user},{pass} -p {} 127.0.0.1; {commands}",
            proxy.addr().port()
        );
        let out = run_client("lftp", &["-c", &script], w);
        assert_success(&out, &format!("lftp through haproxy (EPSV {epsv})"));
        if epsv == "yes" {
            let listing = String::from_utf8_lossy(&out.stdout);
            assert!(listing.lines().any(|l| l == "lftp.bin"), "{listing}");
        }
    }
    assert!(std::fs::read(server.home(user).join("lftp.bin")).expect("lftp.bin") == payload);
    assert!(std::fs::read(w.join("back.bin")).expect("back.bin") == payload);
    let events = server.wait_audit("the transfers", |ev| {
        ev.iter().filter(|e| e["event"] == "upload").count() == 2
            && ev.iter().filter(|e| e["event"] == "download").count() == 2
    });
    let peers: Vec<_> = events
        .iter()
        .filter(|e| e["event"] == "upload" || e["event"] == "download")
        .map(|e| e["peer"].as_str().unwrap_or("").to_owned())
        .collect();
    assert!(
        peers.len() == 4 && peers.iter().all(|p| p.starts_with("127.0.0.2:")),
        "the clients' addresses, not the node's own: {peers:?}\n{}",
        proxy.log()
    );
}

#[test]
fn port_and_eprt_targets_are_checked_against_the_header_client() {
    let server = proxied_server(&[]);
    let addr = server.addr().to_string();
    // The header names 203.0.113.7: the TCP peer's own address is no target.
    let (mut ctl, _) = connect_with(&server, &v2("203.0.113.7:40000", &addr));
    ctl.expect("SITE REGISTER erin erin-password", 200);
    ctl.login("erin", "erin-password");
    let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
    let port = listener.local_addr().expect("addr").port();
    let reply = ctl.cmd(&format!("EPRT |1|127.0.0.1|{port}|"));
    assert_eq!(reply.code, 500, "{reply:?}");
    assert!(reply.text().contains("only your own address"), "{reply:?}");
    ctl.expect("QUIT", 221);
    // Named as 127.0.0.1, the client gets its active connection from the node itself.
    let (mut ctl, _) = connect_with(&server, &v2("127.0.0.1:40000", &addr));
    ctl.login("erin", "erin-password");
    ctl.expect(&format!("EPRT |1|127.0.0.1|{port}|"), 200);
    assert_eq!(ctl.cmd("LIST").code, 150);
    let (mut data, _) = listener.accept().expect("the node's active connection");
    let mut listing = Vec::new();
    data.read_to_end(&mut listing).expect("listing");
    assert_eq!(ctl.reply().code, 226);
}
