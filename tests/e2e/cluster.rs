//! The cluster as it runs in production, on loopback with real parts only: HAProxy (control
//! spread over the nodes with `send-proxy-v2`, each node's passive range through a frontend of
//! its own) in front of two ferryd nodes on 127.0.0.11 and 127.0.0.12, over one PostgreSQL
//! (accounts, shared state, quota usage, audit table) and one s3s-fs bucket. Each test has a
//! cluster of its own: what one test bans or fills cannot reach another.

use crate::common;
use crate::quota::upload;

use std::io::Write;
use std::net::{IpAddr, Ipv4Addr};
use std::path::Path;
use std::time::{Duration, Instant};

use common::haproxy::{HaProxy, Node, free_range, listening_on};
use common::s3::S3Bucket;
use common::{Control, Reply, TestServer, assert_success, pseudo_random, run_client};
use ferry::db::testing::PgTestServer;

/// What a node holds outlives its heartbeat this long: short, so the sweep is quick to see.
const LEASE_SECS: u64 = 3;
/// Passive ports per node.
const RANGE: u16 = 8;
/// Bound on every wait for the cluster to change.
const SETTLE: Duration = Duration::from_secs(15);

struct Cluster {
    front: HaProxy,
    nodes: Vec<TestServer>,
    _bucket: S3Bucket,
    db: PgTestServer,
}

impl Cluster {
    /// Two nodes with `extra_config` (TOML) behind HAProxy.
    fn start(extra_config: &str) -> Cluster {
        let db = PgTestServer::start().expect("postgres");
        let bucket = S3Bucket::start();
        let config = format!(
            "cluster_lease_secs = {LEASE_SECS}\nlogin_failure_delay_ms = 0\n{extra_config}"
        );
        let mut nodes = Vec::new();
        let mut behind = Vec::new();
        for (i, last) in [11u8, 12].into_iter().enumerate() {
            let ip = IpAddr::V4(Ipv4Addr::new(127, 0, 0, last));
            let passive = free_range(RANGE, &[ip]);
            let node = TestServer::start_node_with(
                &bucket,
                &db.url(),
                &format!("node{i}"),
                &config,
                &Node::flags(ip, passive),
            );
            behind.push(Node {
                control: listening_on(&node, ip),
                passive,
            });
            nodes.push(node);
        }
        let front = HaProxy::start(&behind);
        Cluster {
            front,
            nodes,
            _bucket: bucket,
            db,
        }
    }

    /// A control connection through the balancer to node `i`, greeting read.
    fn to_node(&self, i: usize) -> (Control, Reply) {
        let mut ctl = Control::connect(self.front.node_addr(i));
        let greeting = ctl.reply();
        (ctl, greeting)
    }

    /// Logged in as `user` on node `i` (through the balancer), in binary mode.
    fn login(&self, i: usize, user: &str, pass: &str) -> Control {
        let (mut ctl, greeting) = self.to_node(i);
        assert_eq!(greeting.code, 220, "node{i}: {greeting:?}");
        ctl.login(user, pass);
        ctl.expect("TYPE I", 200);
        ctl
    }

    /// `SITE REGISTER` through node `i`.
    fn register(&self, i: usize, user: &str, pass: &str) {
        let (mut ctl, greeting) = self.to_node(i);
        assert_eq!(greeting.code, 220, "node{i}: {greeting:?}");
        ctl.expect(&format!("SITE REGISTER {user} {pass}"), 200);
        ctl.expect("QUIT", 221);
    }

    /// Rows of one query, the first column as text.
    fn column(&self, sql: &str) -> Vec<String> {
        let url = self.db.url();
        let sql = sql.to_owned();
        ferry::db::wait_here(async move {
            let (client, connection) = tokio_postgres::connect(&url, tokio_postgres::NoTls)
                .await
                .expect("connect to the test database");
            tokio::spawn(connection);
            client
                .query(&sql, &[])
                .await
                .expect("query")
                .iter()
                .map(|row| row.get::<_, String>(0))
                .collect()
        })
    }

    /// Waits (bounded by [`SETTLE`]) until `sql` returns exactly `want` (the audit table is
    /// written in batches, at least once a second).
    fn wait_column(&self, sql: &str, want: &[&str]) {
        let start = Instant::now();
        loop {
            let rows = self.column(sql);
            if rows == want {
                return;
            }
            assert!(
                start.elapsed() < SETTLE,
                "{sql}: {rows:?} after {SETTLE:?}, want {want:?}"
            );
            std::thread::sleep(Duration::from_millis(200));
        }
    }

    /// Waits (bounded by [`SETTLE`]) until `sql` returns `want` rows; the time it took.
    fn wait_rows(&self, sql: &str, want: usize) -> Duration {
        let start = Instant::now();
        loop {
            let rows = self.column(sql);
            if rows.len() == want {
                return start.elapsed();
            }
            assert!(
                start.elapsed() < SETTLE,
                "{sql}: {} rows after {SETTLE:?}, want {want}: {rows:?}",
                rows.len()
            );
            std::thread::sleep(Duration::from_millis(100));
        }
    }
}

#[test]
fn accounts_and_files_are_the_same_on_every_node() {
    let cluster = Cluster::start("");
    cluster.register(0, "bob", "first-pass-1");
    let mut on1 = cluster.login(1, "bob", "first-pass-1");
    let bytes = pseudo_random(3 << 20, 14);
    assert_eq!(upload(&mut on1, "STOR", "x.bin", &bytes).code, 226);

    let mut on0 = cluster.login(0, "bob", "first-pass-1");
    assert_eq!(
        on0.retr("x.bin"),
        bytes,
        "uploaded through node1, downloaded through node0"
    );
    on0.expect("MKD docs", 257);
    on1.expect("CWD docs", 250);

    on1.expect("SITE PASSWD first-pass-1 second-pass-2", 200);
    let (mut ctl, _) = cluster.to_node(0);
    ctl.expect("USER bob", 331);
    assert_eq!(
        ctl.cmd("PASS first-pass-1").code,
        530,
        "the old password on the other node"
    );
    drop(ctl);
    let mut again = cluster.login(0, "bob", "second-pass-2");
    again.expect("SIZE x.bin", 213);

    // Both nodes wrote their events into the one audit table.
    cluster.wait_column(
        "SELECT DISTINCT node FROM audit_log WHERE user_name = 'bob' \
         AND kind = 'login_ok' ORDER BY node",
        &["node0", "node1"],
    );
}

#[test]
fn quota_and_bans_hold_across_nodes() {
    let limit: usize = 6 << 20;
    let cluster = Cluster::start(&format!(
        "default_quota_bytes = {limit}\nban_after_failures = 4\nmax_login_failures = 2\n"
    ));
    cluster.register(0, "carol", "quota-pass-1");
    let mut ctls: Vec<Control> = (0..2)
        .map(|i| cluster.login(i, "carol", "quota-pass-1"))
        .collect();
    let bytes = pseudo_random(4 << 20, 15);
    let replies: Vec<u16> = std::thread::scope(|s| {
        let runs: Vec<_> = ctls
            .iter_mut()
            .enumerate()
            .map(|(i, ctl)| {
                let bytes = &bytes;
                s.spawn(move || upload(ctl, "STOR", &format!("f{i}.bin"), bytes).code)
            })
            .collect();
        runs.into_iter()
            .map(|r| r.join().expect("upload thread"))
            .collect()
    });
    let mut sorted = replies.clone();
    sorted.sort_unstable();
    assert_eq!(
        sorted,
        [226, 552],
        "two uploads on two nodes share one quota"
    );
    for ctl in &mut ctls {
        let text = ctl.expect("SITE QUOTA", 211).text();
        let used: usize = text
            .lines()
            .find_map(|l| l.trim().strip_prefix("Bytes used: "))
            .and_then(|rest| rest.split_whitespace().next())
            .and_then(|n| n.parse().ok())
            .unwrap_or_else(|| panic!("no usage in {text}"));
        assert!(used <= limit, "{used} used past the limit {limit}");
    }
    drop(ctls);

    // Two failures on each node: four from one address over the cluster bans it everywhere.
    for i in 0..2 {
        let (mut ctl, _) = cluster.to_node(i);
        for _ in 0..2 {
            ctl.expect("USER carol", 331);
            assert_eq!(ctl.cmd("PASS wrong").code, 530);
        }
    }
    for i in 0..2 {
        let start = Instant::now();
        loop {
            let (_, greeting) = cluster.to_node(i);
            if greeting.code == 421 {
                break;
            }
            assert!(
                start.elapsed() < SETTLE,
                "node{i} still greets the banned address: {greeting:?}"
            );
            std::thread::sleep(Duration::from_millis(100));
        }
    }
}

#[test]
fn a_node_killed_mid_upload_leaves_committed_files_and_the_other_serves_on() {
    let cluster = Cluster::start("");
    cluster.register(0, "dave", "crash-pass-1");
    let mut on0 = cluster.login(0, "dave", "crash-pass-1");
    let committed = pseudo_random(1 << 20, 16);
    assert_eq!(upload(&mut on0, "STOR", "kept.bin", &committed).code, 226);
    let start_of = pseudo_random(100_000, 17);
    assert_eq!(upload(&mut on0, "STOR", "grow.bin", &start_of).code, 226);

    // An APPE that holds grow.bin's write lock and a quota reservation, then node0 dies.
    let mut data = on0.data_connection();
    let first = on0.cmd("APPE grow.bin");
    assert!(matches!(first.code, 125 | 150), "{first:?}");
    data.write_all(&pseudo_random(2 << 20, 18))
        .expect("upload bytes");
    data.flush().expect("flush");
    let instance = cluster.column("SELECT instance FROM nodes WHERE name = 'node0'");
    assert_eq!(instance.len(), 1, "node0's row");
    let held = |table: &str| {
        format!(
            "SELECT instance FROM {table} WHERE instance = '{}'",
            instance[0]
        )
    };
    cluster.wait_rows(&format!("{} LIMIT 1", held("state_locks")), 1);
    cluster.wait_rows(&format!("{} LIMIT 1", held("quota_reservations")), 1);
    nix::sys::signal::kill(
        nix::unistd::Pid::from_raw(cluster.nodes[0].pid().cast_signed()),
        nix::sys::signal::Signal::SIGKILL,
    )
    .expect("kill -9 node0");
    let killed = Instant::now();
    drop(data);

    // The other node serves the committed files as they were.
    let mut on1 = cluster.login(1, "dave", "crash-pass-1");
    assert_eq!(on1.retr("kept.bin"), committed);
    assert_eq!(
        on1.retr("grow.bin"),
        start_of,
        "the interrupted APPE never landed"
    );

    // The dead node's lock and reservation are swept within the lease and a sweep period.
    cluster.wait_rows(&held("state_locks"), 0);
    cluster.wait_rows(&held("quota_reservations"), 0);
    let swept = killed.elapsed();
    let bound = Duration::from_secs(LEASE_SECS * 2 + 2);
    assert!(swept <= bound, "swept after {swept:?}, bound {bound:?}");
    let more = pseudo_random(50_000, 19);
    assert_eq!(
        upload(&mut on1, "APPE", "grow.bin", &more).code,
        226,
        "the lock is free"
    );
    let mut grown = start_of.clone();
    grown.extend_from_slice(&more);
    assert_eq!(on1.retr("grow.bin"), grown);

    // The balancer takes the dead node out: new sessions all land on node1.
    for _ in 0..4 {
        let mut ctl = Control::connect(cluster.front.addr());
        assert_eq!(ctl.reply().code, 220);
        ctl.login("dave", "crash-pass-1");
        ctl.expect("SIZE kept.bin", 213);
    }
}

/// `rclone obscure`d password for an on-the-fly remote.
fn obscure(pass: &str, w: &Path) -> String {
    let out = run_client("rclone", &["obscure", pass], w);
    assert_success(&out, "rclone obscure");
    String::from_utf8(out.stdout)
        .expect("utf-8")
        .trim()
        .to_owned()
}

#[test]
fn curl_lftp_rclone_and_ftplib_work_through_the_balancer() {
    for program in ["curl", "lftp", "rclone", "python3"] {
        common::require_program(program);
    }
    let cluster = Cluster::start("");
    let (user, pass) = ("erin", "client-pass-1");
    cluster.register(0, user, pass);
    let front = cluster.front.addr();
    let work = tempfile::tempdir().expect("temp dir");
    let w = work.path();
    let big = pseudo_random(5 << 20, 20);
    std::fs::write(w.join("big.bin"), &big).expect("write");
    let base = format!("ftp://{user}:{pass}@{front}");

    // curl: upload, list, download, over EPSV and PASV.
    let out = crate::interop::curl(
        w,
        &[
            "-T",
            "big.bin",
            &format!("{base}/curl/big.bin"),
            "--ftp-create-dirs",
        ],
    );
    assert_success(&out, "curl upload");
    let out = crate::interop::curl(
        w,
        &[
            "--disable-epsv",
            "-o",
            "back.bin",
            &format!("{base}/curl/big.bin"),
        ],
    );
    assert_success(&out, "curl download over PASV");
    assert_eq!(std::fs::read(w.join("back.bin")).expect("read"), big);
    let out = crate::interop::curl(w, &["-l", &format!("{base}/curl/")]);
    assert_success(&out, "curl list");
    assert_eq!(String::from_utf8_lossy(&out.stdout).trim(), "big.bin");

    // lftp: a tree up with mirror -R (parallel), and back with mirror.
    let tree = w.join("tree");
    for (rel, seed) in [("a.txt", 1), ("sub/b.bin", 2), ("sub/deep/c.bin", 3)] {
        let path = tree.join(rel);
        std::fs::create_dir_all(path.parent().expect("parent")).expect("mkdir");
        std::fs::write(&path, pseudo_random(300_000, seed)).expect("write");
    }
    let script = format!(
        "set net:max-retries 1; set net:timeout 15; open -u {user},{pass} -p {} {}; \
         mirror -R -P 3 tree /tree; mirror -P 3 /tree back; quit",
        front.port(),
        front.ip()
    );
    let out = run_client("lftp", &["-c", &script], w);
    assert_success(&out, "lftp mirror both ways");
    for rel in ["a.txt", "sub/b.bin", "sub/deep/c.bin"] {
        assert_eq!(
            std::fs::read(w.join("back").join(rel)).expect("mirrored back"),
            std::fs::read(tree.join(rel)).expect("original"),
            "{rel}"
        );
    }

    // rclone: copy a tree and check it against the server.
    let remote = format!(
        ":ftp,host={},port={},user={user},pass={}:rclone",
        front.ip(),
        front.port(),
        obscure(pass, w)
    );
    let out = run_client("rclone", &["copy", "tree", &remote, "--transfers", "4"], w);
    assert_success(&out, "rclone copy");
    let out = run_client("rclone", &["check", "tree", &remote, "--size-only"], w);
    assert_success(&out, "rclone check");

    // ftplib: upload, a resumed download, MLSD.
    let script = r#"
import ftplib, io, sys
host, port, user, password = sys.argv[1], int(sys.argv[2]), sys.argv[3], sys.argv[4]
data = open('big.bin', 'rb').read()
ftp = ftplib.FTP()
ftp.connect(host, port, timeout=15)
ftp.login(user, password)
ftp.storbinary('STOR ftplib.bin', io.BytesIO(data))
got = io.BytesIO()
ftp.retrbinary('RETR ftplib.bin', got.write, rest=1000000)
assert got.getvalue() == data[1000000:], 'resumed download differs'
names = [name for name, facts in ftp.mlsd()]
assert 'ftplib.bin' in names and 'curl' in names, names
ftp.quit()
print('ok')
"#;
    std::fs::write(w.join("flow.py"), script).expect("write script");
    let out = run_client(
        "python3",
        &[
            "flow.py",
            &front.ip().to_string(),
            &front.port().to_string(),
            user,
            pass,
        ],
        w,
    );
    assert_success(&out, "ftplib flow");

    // The balancer spread these sessions over both nodes.
    cluster.wait_column(
        &format!(
            "SELECT DISTINCT node FROM audit_log WHERE user_name = '{user}' \
             AND kind = 'login_ok' ORDER BY node"
        ),
        &["node0", "node1"],
    );
}
