//! HAProxy (Debian's 2.6) in front of ferryd nodes, as in production: one
//! control frontend on 127.0.0.1 that spreads connections over the nodes' control addresses,
//! and per node a frontend over its passive port range that forwards each port to the same
//! port of that node; every connection to a node begins with a PROXY v2 header. Runs in the
//! foreground (`-db`) with a generated configuration in a temporary directory; killed on drop.

use std::io::{BufRead, BufReader};
use std::net::{IpAddr, SocketAddr, TcpListener, TcpStream};
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use tempfile::TempDir;

use super::{TestServer, require_program};

/// HAProxy's program (Debian's is in /usr/sbin, on root's PATH).
const HAPROXY: &str = "haproxy";
/// How long HAProxy may take to bind its frontends.
const START_TIMEOUT: Duration = Duration::from_secs(10);
/// Fresh control ports tried when another process takes the picked one first.
const BIND_ATTEMPTS: usize = 5;
/// Random passive ranges tried before giving up.
const RANGE_ATTEMPTS: usize = 50;
/// The address HAProxy's frontends listen on: the address clients see.
pub const FRONT_IP: IpAddr = IpAddr::V4(std::net::Ipv4Addr::LOCALHOST);

/// One ferryd node behind the balancer.
#[derive(Debug, Clone, Copy)]
pub struct Node {
    /// The node's control listener.
    pub control: SocketAddr,
    /// The node's passive port range (`--passive-ports LOW-HIGH`), bound on its control IP.
    pub passive: (u16, u16),
}

impl Node {
    /// The ferryd flags of a node on `ip` with `passive` as its range behind the balancer:
    /// listen on `ip` too (beside the harness's 127.0.0.1, which the balancer does not use),
    /// announce the balancer's address, take PROXY headers from it.
    pub fn flags(ip: IpAddr, passive: (u16, u16)) -> Vec<String> {
        vec![
            "--listen".into(),
            SocketAddr::new(ip, 0).to_string(),
            "--passive-ports".into(),
            format!("{}-{}", passive.0, passive.1),
            "--passive-address".into(),
            FRONT_IP.to_string(),
            "--proxy-protocol-from".into(),
            format!("{FRONT_IP}/32"),
        ]
    }
}

/// Where `server` listens on `ip` (its `listening on` line): a node's control address.
pub fn listening_on(server: &TestServer, ip: IpAddr) -> SocketAddr {
    let prefix = format!("listening on {ip}:");
    // Bounded; the harness reports the first listener before its line is kept.
    server.wait_stderr(&prefix);
    server
        .stderr()
        .lines()
        .find_map(|line| {
            let at = line.find(&prefix)?;
            line[at + "listening on ".len()..].trim().parse().ok()
        })
        .unwrap_or_else(|| panic!("ferryd does not listen on {ip}:\n{}", server.stderr()))
}

/// A running HAProxy.
pub struct HaProxy {
    child: Option<Child>,
    control: SocketAddr,
    pinned: Vec<SocketAddr>,
    _dir: TempDir,
    log: Arc<Mutex<Vec<String>>>,
}

/// A free TCP port on the front address, from the OS (another process may take it before
/// HAProxy binds it; [`HaProxy::start`] retries then).
fn free_port() -> u16 {
    TcpListener::bind(SocketAddr::new(FRONT_IP, 0))
        .and_then(|l| l.local_addr())
        .expect("a free port")
        .port()
}

/// `len` consecutive ports free on the front address and on every one of `node_ips`, for a
/// node's passive range (HAProxy binds them on the front, the node on its own address).
pub fn free_range(len: u16, node_ips: &[IpAddr]) -> (u16, u16) {
    for _ in 0..RANGE_ATTEMPTS {
        let low = 20_000 + rand::random::<u16>() % 30_000;
        let high = low + len - 1;
        let free = (low..=high).all(|port| {
            std::iter::once(&FRONT_IP)
                .chain(node_ips)
                .all(|ip| TcpListener::bind(SocketAddr::new(*ip, port)).is_ok())
        });
        if free {
            return (low, high);
        }
    }
    panic!("no {len} consecutive free ports in {RANGE_ATTEMPTS} tries");
}

/// The configuration: the control frontend on `port` over every node, per node a control
/// frontend on `pins[i]` that goes to that node only (so a test can choose the node), and one
/// passive frontend per node.
fn config(port: u16, pins: &[u16], nodes: &[Node]) -> String {
    let mut text = format!(
        "global\n    maxconn 500\n\
         defaults\n    mode tcp\n    timeout connect 5s\n    timeout client 120s\n    \
         timeout server 120s\n    option redispatch\n    retries 2\n\
         frontend control\n    bind {FRONT_IP}:{port}\n    default_backend nodes\n\
         backend nodes\n    balance roundrobin\n"
    );
    for (i, node) in nodes.iter().enumerate() {
        // Health checks (a PROXY v2 LOCAL header, then close) take a dead node out within a
        // second; until then a refused connection is redispatched to another node.
        text.push_str(&format!(
            "    server n{i} {} send-proxy-v2 check inter 500ms fall 1 rise 1\n",
            node.control
        ));
    }
    for (i, (node, pin)) in nodes.iter().zip(pins).enumerate() {
        text.push_str(&format!(
            "frontend pinned{i}\n    bind {FRONT_IP}:{pin}\n    default_backend pinned{i}\n\
             backend pinned{i}\n    server n{i} {} send-proxy-v2\n",
            node.control
        ));
    }
    for (i, node) in nodes.iter().enumerate() {
        // No port on the server: each connection goes to the port it came to.
        text.push_str(&format!(
            "frontend passive{i}\n    bind {FRONT_IP}:{}-{}\n    default_backend passive{i}\n\
             backend passive{i}\n    server s {} send-proxy-v2\n",
            node.passive.0,
            node.passive.1,
            node.control.ip()
        ));
    }
    text
}

impl HaProxy {
    /// Starts HAProxy in front of `nodes` (at least one) and waits (bounded) until its control
    /// frontend accepts connections.
    pub fn start(nodes: &[Node]) -> HaProxy {
        require_program(HAPROXY);
        assert!(!nodes.is_empty(), "HAProxy needs a node");
        let dir = tempfile::tempdir().expect("temp dir");
        let mut last = String::new();
        for _ in 0..BIND_ATTEMPTS {
            let port = free_port();
            let pins: Vec<u16> = nodes.iter().map(|_| free_port()).collect();
            let path = dir.path().join("haproxy.cfg");
            std::fs::write(&path, config(port, &pins, nodes)).expect("write haproxy.cfg");
            let mut child = Command::new(HAPROXY)
                .arg("-db")
                .arg("-f")
                .arg(&path)
                .stdin(Stdio::null())
                .stdout(Stdio::null())
                .stderr(Stdio::piped())
                .spawn()
                .expect("spawn haproxy");
            let log = Arc::new(Mutex::new(Vec::new()));
            let stderr = child.stderr.take().expect("piped stderr");
            let sink = Arc::clone(&log);
            std::thread::spawn(move || {
                for line in BufReader::new(stderr).lines() {
                    let Ok(line) = line else { break };
                    sink.lock().expect("log lock").push(line);
                }
            });
            let control = SocketAddr::new(FRONT_IP, port);
            let deadline = Instant::now() + START_TIMEOUT;
            loop {
                if let Some(status) = child.try_wait().expect("try_wait") {
                    last = format!("{status}: {}", log.lock().expect("log lock").join("\n"));
                    break;
                }
                if TcpStream::connect_timeout(&control, Duration::from_millis(200)).is_ok() {
                    return HaProxy {
                        child: Some(child),
                        control,
                        pinned: pins.iter().map(|p| SocketAddr::new(FRONT_IP, *p)).collect(),
                        _dir: dir,
                        log,
                    };
                }
                if Instant::now() >= deadline {
                    let _ = child.kill();
                    let _ = child.wait();
                    panic!(
                        "haproxy did not listen on {control}:\n{}",
                        log.lock().expect("log lock").join("\n")
                    );
                }
                std::thread::sleep(Duration::from_millis(20));
            }
        }
        panic!("haproxy did not start in {BIND_ATTEMPTS} attempts; last: {last}");
    }

    /// The control frontend: where clients connect.
    pub fn addr(&self) -> SocketAddr {
        self.control
    }

    /// The frontend that goes to node `i` only (through the balancer, with its header).
    pub fn node_addr(&self, i: usize) -> SocketAddr {
        self.pinned[i]
    }

    /// What HAProxy wrote to stderr so far.
    pub fn log(&self) -> String {
        self.log.lock().expect("log lock").join("\n")
    }
}

impl Drop for HaProxy {
    fn drop(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}
