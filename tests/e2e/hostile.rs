//! Hostile clients over real sockets. Each test opens a control session BEFORE the attack and
//! checks that it keeps answering NOOP within 2 s during and after it; the server answers the
//! attack correctly; and once the attacking connections are closed, the server's resident
//! memory and open file descriptors come back close to where they were. Every wait is bounded.

use crate::common;

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use common::{Control, IO_TIMEOUT, Reply, TestServer, pseudo_random};

/// The longest a NOOP of the watching session may take.
const NOOP_BOUND: Duration = Duration::from_secs(2);
/// Extra file descriptors tolerated after an attack.
const FD_MARGIN: usize = 5;
/// Extra resident memory tolerated after an attack, in KiB.
const RSS_MARGIN_KB: u64 = 20 * 1024;

/// The server's open file descriptors and resident memory (KiB).
#[derive(Debug, Clone, Copy)]
struct Footprint {
    fds: usize,
    rss_kb: u64,
}

fn footprint(pid: u32) -> Footprint {
    let fds = std::fs::read_dir(format!("/proc/{pid}/fd"))
        .expect("read /proc/PID/fd")
        .count();
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).expect("status");
    let rss_kb = status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.split_whitespace().next())
        .and_then(|v| v.parse().ok())
        .expect("VmRSS in /proc/PID/status");
    Footprint { fds, rss_kb }
}

/// Waits (bounded) until the footprint is back within the margins of `before`.
fn assert_footprint_back(server: &TestServer, before: Footprint, what: &str) {
    let deadline = Instant::now() + Duration::from_secs(8);
    loop {
        let now = footprint(server.pid());
        if now.fds <= before.fds + FD_MARGIN && now.rss_kb <= before.rss_kb + RSS_MARGIN_KB {
            eprintln!("{what}: before {before:?}, after {now:?}");
            return;
        }
        assert!(
            Instant::now() < deadline,
            "{what}: footprint did not come back: before {before:?}, now {now:?}"
        );
        std::thread::sleep(Duration::from_millis(100));
    }
}

/// A logged-in session opened before an attack, sending NOOP every 100 ms on its own thread.
struct Watchdog {
    stop: Arc<AtomicBool>,
    handle: JoinHandle<(Control, Duration, usize)>,
}

impl Watchdog {
    fn start(mut ctl: Control) -> Watchdog {
        let stop = Arc::new(AtomicBool::new(false));
        let flag = Arc::clone(&stop);
        let handle = std::thread::spawn(move || {
            let mut worst = Duration::ZERO;
            let mut count = 0;
            while !flag.load(Ordering::SeqCst) {
                let start = Instant::now();
                ctl.expect("NOOP", 200);
                worst = worst.max(start.elapsed());
                count += 1;
                std::thread::sleep(Duration::from_millis(100));
            }
            (ctl, worst, count)
        });
        Watchdog { stop, handle }
    }

    /// Stops the pings, checks the worst NOOP time, and a last NOOP after the attack.
    fn finish(self, what: &str) {
        self.stop.store(true, Ordering::SeqCst);
        let (mut ctl, worst, count) = self.handle.join().expect("watchdog thread");
        let start = Instant::now();
        ctl.expect("NOOP", 200);
        let last = start.elapsed();
        eprintln!("{what}: {count} NOOPs during the attack, worst {worst:?}, after {last:?}");
        assert!(count > 0, "{what}: no NOOP ran during the attack");
        assert!(worst < NOOP_BOUND, "{what}: a NOOP took {worst:?}");
        assert!(last < NOOP_BOUND, "{what}: the NOOP after took {last:?}");
        ctl.expect("QUIT", 221);
    }
}

/// A server with a watching session and the footprint measured after a warm-up session
/// (login, a listing), so lazily started threads and buffers are in the baseline.
fn setup(flags: &[&str]) -> (TestServer, Watchdog, Footprint) {
    let server = TestServer::start(flags);
    let mut warm = server.register_and_login("warm", "warm-password");
    assert_eq!(warm.stor("w.txt", b"warm").code, 226);
    assert_eq!(warm.retr("w.txt"), b"warm");
    warm.expect("QUIT", 221);
    warm.assert_closed();
    let watcher = server.register_and_login("watch", "watch-password");
    std::thread::sleep(Duration::from_millis(300));
    let before = footprint(server.pid());
    (server, Watchdog::start(watcher), before)
}

/// Reads replies until one with `code`; every reply before it must satisfy `ok`. Bounded by
/// `max` replies.
fn replies_until(ctl: &mut Control, code: u16, max: usize, ok: impl Fn(&Reply) -> bool) {
    for _ in 0..max {
        let reply = ctl.reply();
        if reply.code == code {
            return;
        }
        assert!(ok(&reply), "unexpected reply {reply:?}");
    }
    panic!("no {code} within {max} replies");
}

#[test]
fn a_megabyte_line_then_garbage_then_noop() {
    let (server, watchdog, before) = setup(&[]);
    let (mut ctl, _) = server.connect();
    let writer = {
        let mut w = ctl.stream().try_clone().expect("clone");
        std::thread::spawn(move || {
            w.write_all(&vec![b'A'; 1 << 20]).expect("1 MB line");
            w.write_all(b"more garbage without end ").expect("garbage");
            w.write_all(&vec![b'B'; 100_000]).expect("more");
            w.write_all(b"\r\nNOOP\r\n").expect("line end");
        })
    };
    let reply = ctl.reply();
    assert_eq!(reply.code, 500, "{reply:?}");
    assert!(reply.text().len() < 200, "the reply echoes the line");
    ctl.expect("NOOP", 200);
    writer.join().expect("writer");
    ctl.expect("NOOP", 200);
    drop(ctl);
    watchdog.finish("1 MB line");
    assert_footprint_back(&server, before, "1 MB line");
}

#[test]
fn binary_garbage_gets_errors_and_the_session_goes_on() {
    // The decoder must stay in sync over every line; closing after max_bad_commands (see
    // tests/attack_logs.rs) would end this test after ten lines.
    let (server, watchdog, before) = setup(&["--max-bad-commands", "0"]);
    let (mut ctl, _) = server.connect();
    let mut garbage = pseudo_random(200_000, 42);
    // Make sure NUL, 0xFF (Telnet IAC), CR and LF are all in there.
    garbage.extend_from_slice(b"\0\0\xff\xff\xff\xf4\xff\xf2\r\0\n\xff\n");
    let lines = garbage.iter().filter(|b| **b == b'\n').count();
    let writer = {
        let mut w = ctl.stream().try_clone().expect("clone");
        std::thread::spawn(move || {
            w.write_all(&garbage).expect("garbage");
            w.write_all(b"\r\nNOOP\r\n").expect("NOOP");
        })
    };
    // One error per garbage line (or none for an empty line), then 200 for NOOP.
    replies_until(&mut ctl, 200, lines + 2, |r| (500..=504).contains(&r.code));
    writer.join().expect("writer");
    ctl.login_after_register("xeno");
    ctl.expect("PWD", 257);
    drop(ctl);
    watchdog.finish("binary garbage");
    assert_footprint_back(&server, before, "binary garbage");
}

/// Registration and login on an open connection.
trait RegisterHere {
    fn login_after_register(&mut self, user: &str);
}

impl RegisterHere for Control {
    fn login_after_register(&mut self, user: &str) {
        let pass = format!("{user}-password");
        self.expect(&format!("SITE REGISTER {user} {pass}"), 200);
        self.login(user, &pass);
    }
}

#[test]
fn nul_and_line_ends_inside_paths_are_refused() {
    let (server, watchdog, before) = setup(&[]);
    let (mut ctl, _) = server.connect();
    ctl.login_after_register("yan");
    let home = server.home("yan");
    std::fs::write(home.join("a"), b"a").expect("a");
    let refused = |code: u16| matches!(code, 501 | 550 | 553);
    for cmd in [
        &b"RETR a\0b\r\n"[..],
        b"MKD x\ry\r\n",
        b"MKD x\0y\r\n",
        b"STOR s\0t\r\n",
        b"DELE a\0\r\n",
        b"RNFR a\r\n",
        b"RNTO b\rc\r\n",
        b"CWD /\0\r\n",
        b"SIZE a\0b\r\n",
        b"MLST a\rb\r\n",
    ] {
        let shown = String::from_utf8_lossy(cmd).into_owned();
        // With a data connection prepared, a transfer command cannot fail on that (425)
        // instead of on its path.
        let data =
            (shown.starts_with("RETR") || shown.starts_with("STOR")).then(|| ctl.data_connection());
        ctl.send_raw(cmd);
        let reply = ctl.reply();
        drop(data);
        if shown.starts_with("RNFR") {
            assert_eq!(reply.code, 350, "{shown:?} -> {reply:?}");
            continue;
        }
        assert!(refused(reply.code), "{shown:?} -> {reply:?}");
        assert_eq!(reply.lines.len(), 1, "{shown:?} -> {reply:?}");
    }
    // Nothing the client sends comes back with a CR or NUL inside a reply line (a CR could
    // end the line early for some clients and forge a reply).
    for cmd in [
        &b"HELP A\rB\r\n"[..],
        b"HELP A\0B\r\n",
        b"FOO\r200 forged\r\n",
        b"SITE X\r200 forged\r\n",
        b"OPTS X\rY\r\n",
        b"TYPE \r\r\n",
        b"\r\r\r\n",
        b"USER a\rb\r\n",
    ] {
        ctl.send_raw(cmd);
        let reply = ctl.reply();
        let shown = String::from_utf8_lossy(cmd).into_owned();
        assert!(
            reply.lines.iter().all(|l| !l.contains(['\r', '\0'])),
            "{shown:?} -> {reply:?}"
        );
        assert!(reply.code >= 500, "{shown:?} -> {reply:?}");
    }
    ctl.expect("NOOP", 200);
    let mut names: Vec<String> = std::fs::read_dir(&home)
        .expect("home")
        .map(|e| e.expect("entry").file_name().to_string_lossy().into_owned())
        .collect();
    names.sort();
    assert_eq!(names, vec!["a".to_owned()], "unexpected files in the home");
    assert_eq!(std::fs::read(home.join("a")).expect("a"), b"a");
    drop(ctl);
    watchdog.finish("NUL and CR in paths");
    assert_footprint_back(&server, before, "NUL and CR in paths");
}

#[test]
fn thousands_of_pipelined_noops_are_all_answered_in_order() {
    const N: usize = 5000;
    let (server, watchdog, before) = setup(&[]);
    let (mut ctl, _) = server.connect();
    let mut batch = Vec::new();
    for i in 0..N {
        batch.extend_from_slice(format!("NOOP {i}\r\n").as_bytes());
    }
    // Written in one go, before reading anything.
    ctl.send_raw(&batch);
    std::thread::sleep(Duration::from_millis(300));
    for i in 0..N {
        let reply = ctl.reply();
        assert_eq!(reply.code, 200, "reply {i} of {N}: {reply:?}");
    }
    // Nothing more was queued: the next reply answers the next command.
    ctl.expect("SYST", 215);
    drop(ctl);
    watchdog.finish("5000 pipelined NOOPs");
    assert_footprint_back(&server, before, "5000 pipelined NOOPs");
}

#[test]
fn a_client_that_does_not_read_its_replies_is_paused_not_buffered() {
    // 20 000 NOOP + HELP pairs (260 KB of commands) whose replies (about 10 MB) exceed the
    // kernel's socket buffers (4 MB at most here) and the 64 KiB high-water mark: the server
    // must stop reading commands, not buffer the replies, and lose or reorder nothing.
    const PAIRS: usize = 20_000;
    let (server, watchdog, before) = setup(&[]);
    let (mut ctl, _) = server.connect();
    // A fixed receive buffer (no autotuning up to 32 MB), yet big enough for a quick drain.
    socket2::SockRef::from(ctl.stream())
        .set_recv_buffer_size(64 * 1024)
        .expect("SO_RCVBUF");
    ctl.login_after_register("rudy");
    let writer = {
        let mut w = ctl.stream().try_clone().expect("clone");
        w.set_write_timeout(Some(Duration::from_secs(30)))
            .expect("write timeout");
        std::thread::spawn(move || {
            let batch = b"NOOP\r\nHELP\r\n".repeat(PAIRS);
            w.write_all(&batch).expect("pipelined commands");
        })
    };
    // Read nothing for a while.
    std::thread::sleep(Duration::from_millis(1500));
    let client_port = ctl.stream().local_addr().expect("local").port();
    let unread = server_unread_bytes(server.port(), client_port);
    let during = footprint(server.pid());
    eprintln!("not reading: {unread} command bytes wait unread in the server's socket; {during:?}");
    assert!(
        unread > 0,
        "the server read every command although nobody read its replies (no back-pressure)"
    );
    assert!(
        during.rss_kb <= before.rss_kb + RSS_MARGIN_KB,
        "the server buffered replies: {before:?} -> {during:?}"
    );
    for i in 0..PAIRS {
        let noop = ctl.reply();
        assert_eq!(noop.code, 200, "pair {i}: {noop:?}");
        let help = ctl.reply();
        assert_eq!(help.code, 214, "pair {i}: {help:?}");
    }
    writer.join().expect("writer");
    ctl.expect("SYST", 215);
    drop(ctl);
    watchdog.finish("unread replies");
    assert_footprint_back(&server, before, "unread replies");
}

/// Bytes received but not yet read by the server on its end of the connection between
/// `server_port` and the client's `client_port` (the rx_queue of /proc/net/tcp).
fn server_unread_bytes(server_port: u16, client_port: u16) -> u64 {
    let table = std::fs::read_to_string("/proc/net/tcp").expect("/proc/net/tcp");
    let port_of = |addr: &str| {
        addr.split(':')
            .nth(1)
            .and_then(|p| u16::from_str_radix(p, 16).ok())
    };
    table
        .lines()
        .skip(1)
        .find_map(|line| {
            let fields: Vec<&str> = line.split_whitespace().collect();
            let (local, remote, queues) = (fields.get(1)?, fields.get(2)?, fields.get(4)?);
            if port_of(local)? != server_port || port_of(remote)? != client_port {
                return None;
            }
            u64::from_str_radix(queues.split(':').nth(1)?, 16).ok()
        })
        .expect("the server's end of the connection in /proc/net/tcp")
}

/// Connects to `addr` from the local address `from`.
fn connect_from(from: &str, addr: SocketAddr) -> std::io::Result<TcpStream> {
    let socket = socket2::Socket::new(socket2::Domain::IPV4, socket2::Type::STREAM, None)?;
    let local: SocketAddr = format!("{from}:0").parse().expect("address");
    socket.bind(&local.into())?;
    socket.connect_timeout(&addr.into(), IO_TIMEOUT)?;
    let stream: TcpStream = socket.into();
    stream.set_read_timeout(Some(IO_TIMEOUT))?;
    Ok(stream)
}

#[test]
fn data_connections_to_or_from_a_third_address_are_refused() {
    let (server, watchdog, before) = setup(&["--data-timeout-secs", "1"]);
    let (mut ctl, _) = server.connect();
    ctl.login_after_register("zed");
    std::fs::write(server.home("zed").join("secret.txt"), b"TOP SECRET").expect("file");

    // PORT to another host (127.0.0.2 is a different address, local on Linux).
    let victim = std::net::TcpListener::bind("127.0.0.2:0").expect("bind 127.0.0.2");
    let port = victim.local_addr().expect("addr").port();
    // (ferry answers 500, as tests/protocol.rs pins; 501 and RFC 2577's 504 would do too.)
    let refused = |r: &Reply| matches!(r.code, 500 | 501 | 504);
    let reply = ctl.cmd(&format!("PORT 127,0,0,2,{},{}", port >> 8, port & 0xff));
    assert!(refused(&reply), "{reply:?}");
    let reply = ctl.cmd(&format!("EPRT |1|127.0.0.2|{port}|"));
    assert!(refused(&reply), "{reply:?}");
    // A privileged port on the client's own address is refused too.
    let reply = ctl.cmd("PORT 127,0,0,1,0,25");
    assert!(refused(&reply), "{reply:?}");
    let reply = ctl.cmd("RETR secret.txt");
    assert_eq!(
        reply.code, 425,
        "no data connection was prepared: {reply:?}"
    );
    victim.set_nonblocking(true).expect("nonblocking");
    assert!(
        victim.accept().is_err(),
        "the server connected to the victim"
    );

    // A data connection from 127.0.0.2 to our passive port is not taken.
    let pasv = ctl.pasv();
    let mut thief = connect_from("127.0.0.2", pasv).expect("connect from 127.0.0.2");
    let start = Instant::now();
    ctl.expect("RETR secret.txt", 150);
    let mut stolen = Vec::new();
    match thief.read_to_end(&mut stolen) {
        Ok(_) => {}
        Err(e) if e.kind() == std::io::ErrorKind::ConnectionReset => {}
        Err(e) => panic!("the thief's connection was neither served nor closed: {e}"),
    }
    assert!(stolen.is_empty(), "data leaked: {stolen:?}");
    let reply = ctl.reply();
    assert_eq!(reply.code, 425, "{reply:?}");
    assert!(
        start.elapsed() < Duration::from_secs(5),
        "425 after {:?}",
        start.elapsed()
    );
    drop(thief);
    // The rightful client still gets the file.
    assert_eq!(ctl.retr("secret.txt"), b"TOP SECRET");
    drop(ctl);
    watchdog.finish("third-party data connections");
    assert_footprint_back(&server, before, "third-party data connections");
}

#[test]
fn a_passive_port_nobody_connects_to_times_out_and_closes() {
    let (server, watchdog, before) = setup(&["--data-timeout-secs", "1"]);
    let (mut ctl, _) = server.connect();
    ctl.login_after_register("abe");
    std::fs::write(server.home("abe").join("f.txt"), b"file").expect("file");
    let pasv = ctl.pasv();
    ctl.expect("RETR f.txt", 150);
    let reply = ctl.reply();
    assert_eq!(reply.code, 425, "{reply:?}");
    // The listener is gone.
    match TcpStream::connect_timeout(&pasv, IO_TIMEOUT) {
        Err(e) => assert_eq!(e.kind(), std::io::ErrorKind::ConnectionRefused, "{e}"),
        Ok(_) => panic!("the passive port {pasv} is still open"),
    }
    // The same again, many times, with PASV that is never used at all.
    for _ in 0..50 {
        ctl.pasv();
    }
    ctl.expect("NOOP", 200);
    assert_eq!(ctl.retr("f.txt"), b"file");
    drop(ctl);
    watchdog.finish("unused passive ports");
    assert_footprint_back(&server, before, "unused passive ports");
}

#[test]
fn traversal_and_symlinks_out_of_the_home_are_invisible() {
    let (server, watchdog, before) = setup(&[]);
    let (mut ctl, _) = server.connect();
    ctl.login_after_register("bea");
    let home = server.home("bea");
    std::os::unix::fs::symlink("/etc", home.join("etc")).expect("symlink to /etc");
    std::os::unix::fs::symlink("/etc/passwd", home.join("pw")).expect("symlink to passwd");
    std::fs::write(home.join("mine.txt"), b"mine").expect("file");

    for path in [
        "../../etc/passwd",
        "/../../../../etc/passwd",
        "..%2f..%2fetc%2fpasswd",
        "etc/passwd",
        "pw",
        "/etc/hostname",
    ] {
        let (reply, bytes) = ctl.fetch(&format!("RETR {path}"));
        assert_eq!(reply.code, 550, "RETR {path} -> {reply:?}");
        assert!(bytes.is_empty(), "RETR {path} leaked {} bytes", bytes.len());
    }
    for path in ["/..", "..", "../..", "/../.."] {
        let reply = ctl.cmd(&format!("CWD {path}"));
        assert!(matches!(reply.code, 250 | 550), "CWD {path} -> {reply:?}");
        let pwd = ctl.expect("PWD", 257);
        assert!(
            pwd.text().contains("\"/\""),
            "CWD {path} left the root: {pwd:?}"
        );
    }
    assert_eq!(ctl.cmd("CWD etc").code, 550);
    assert_eq!(ctl.cmd("SIZE pw").code, 550);
    assert_eq!(ctl.cmd("MLST etc").code, 550);
    let (reply, listing) = ctl.fetch("LIST etc");
    assert!(matches!(reply.code, 450 | 550), "LIST etc -> {reply:?}");
    assert!(listing.is_empty());
    let (reply, listing) = ctl.fetch("NLST");
    assert_eq!(reply.code, 226, "{reply:?}");
    let names = String::from_utf8_lossy(&listing).into_owned();
    assert!(names.contains("mine.txt"), "{names:?}");
    assert!(
        !names.contains("passwd") && !names.contains("hostname"),
        "{names:?}"
    );
    // Uploading through the link must not write outside the home.
    let _data = ctl.data_connection();
    let reply = ctl.cmd("STOR etc/ferry-escape");
    assert!(matches!(reply.code, 550 | 553), "{reply:?}");
    assert!(!std::path::Path::new("/etc/ferry-escape").exists());
    drop(ctl);
    watchdog.finish("traversal and symlinks");
    assert_footprint_back(&server, before, "traversal and symlinks");
}

#[test]
fn a_thousand_failed_logins_are_all_answered_and_cost_nothing_after() {
    const THREADS: usize = 4;
    const FAILURES: usize = 1000;
    let (server, watchdog, before) =
        setup(&["--login-failure-delay-ms", "0", "--ban-after-failures", "0"]);
    let addr = server.addr();
    let start = Instant::now();
    let answered: usize = std::thread::scope(|s| {
        let handles: Vec<_> = (0..THREADS)
            .map(|t| {
                s.spawn(move || {
                    let mut done = 0;
                    let mine = FAILURES / THREADS;
                    while done < mine {
                        let mut ctl = Control::connect(addr);
                        assert_eq!(ctl.reply().code, 220);
                        // Up to three failures per connection (then 421 and close).
                        let here = (mine - done).min(3);
                        for i in 0..here {
                            let user = if (t + done + i) % 2 == 0 {
                                "watch"
                            } else {
                                "no-such-user"
                            };
                            ctl.expect(&format!("USER {user}"), 331);
                            let reply = ctl.cmd("PASS guess-guess");
                            assert_eq!(reply.code, 530, "{reply:?}");
                            done += 1;
                        }
                        if here == 3 {
                            let closing = ctl.reply();
                            assert_eq!(closing.code, 421, "{closing:?}");
                            ctl.assert_closed();
                        } else {
                            ctl.expect("QUIT", 221);
                        }
                    }
                    done
                })
            })
            .collect();
        handles
            .into_iter()
            .map(|h| h.join().expect("attacker"))
            .sum()
    });
    eprintln!("{answered} failed logins in {:?}", start.elapsed());
    assert_eq!(answered, FAILURES);
    // The right password still works for the user attacked (no ban configured).
    let (mut ctl, _) = server.connect();
    ctl.login("watch", "watch-password");
    ctl.expect("QUIT", 221);
    drop(ctl);
    watchdog.finish("1000 failed logins");
    server.wait_audit("1000 login_failed", |ev| {
        ev.iter().filter(|e| e["event"] == "login_failed").count() == FAILURES
    });
    assert_footprint_back(&server, before, "1000 failed logins");
}
