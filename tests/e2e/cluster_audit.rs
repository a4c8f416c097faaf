//! Database mode's audit trail: a node named with `--node-name` stamps its name on every
//! audit.jsonl line and its stderr lines, batches the same events into the `audit_log`
//! table, and `ferryd log --database-url` shows them with a node column: those of every
//! node of the cluster, or of the one `--node` names.

use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use ferry::db::testing::PgTestServer;
use serde_json::json;

use crate::common::s3::S3Bucket;
use crate::common::{
    FERRYD, Run, TestServer, admin, assert_success, has_event, pseudo_random, run_bounded,
};

const PASSWORD: &str = "correct-horse-battery";

/// `ferryd log --database-url URL ARGS` until its table holds `needle` (the node batches
/// into the table in the background), bounded in time; the last table.
fn log_until(server: &TestServer, url: &str, args: &[&str], needle: &str) -> String {
    let start = Instant::now();
    loop {
        let mut all = vec!["log", "--database-url", url];
        all.extend_from_slice(args);
        let out = admin(server.data_dir(), &all, None, &[]);
        assert_success(&out, "ferryd log --database-url");
        let table = String::from_utf8_lossy(&out.stdout).into_owned();
        if table.contains(needle) {
            return table;
        }
        assert!(
            start.elapsed() < Duration::from_secs(15),
            "the table never showed {needle:?}:\n{table}"
        );
        std::thread::sleep(Duration::from_millis(200));
    }
}

/// A node `n1` on a database of its own (local files, declared shared), with alice in it.
fn node_with_alice() -> (PgTestServer, String, TestServer) {
    let pg = PgTestServer::start().expect("postgres");
    let url = pg.url();
    let server = TestServer::start(&[
        "--database-url",
        &url,
        "--shared-local-storage",
        "--node-name",
        "n1",
    ]);
    let out = server.admin(
        &[
            "user",
            "add",
            "alice",
            "--password-stdin",
            "--database-url",
            &url,
        ],
        Some(&format!("{PASSWORD}\n")),
    );
    assert_success(&out, "user add");
    (pg, url, server)
}

#[test]
fn a_nodes_events_reach_the_audit_table_and_ferryd_log_shows_them() {
    let (_pg, url, server) = node_with_alice();

    let (mut ctl, greeting) = server.connect();
    assert_eq!(greeting.code, 220);
    ctl.login("alice", PASSWORD);
    let data = pseudo_random(70_000, 14);
    assert_eq!(ctl.stor("cluster.bin", &data).code, 226);
    assert_eq!(ctl.retr("cluster.bin"), data);
    ctl.expect("QUIT", 221);

    let events = server.wait_audit("the download with its node", |events| {
        has_event(
            events,
            &[("event", json!("download")), ("node", json!("n1"))],
        )
    });
    for event in &events {
        assert_eq!(
            event["node"],
            json!("n1"),
            "every line names the node: {event}"
        );
    }
    server.wait_stderr("node=n1");

    let table = log_until(&server, &url, &["--user", "alice"], "download");
    let header = table.lines().find(|l| l.contains("time")).unwrap_or("");
    assert!(header.contains("node"), "a node column:\n{table}");
    for kind in ["login_ok", "upload", "download"] {
        let row = table
            .lines()
            .find(|l| l.contains(kind))
            .unwrap_or_else(|| panic!("no {kind} row:\n{table}"));
        assert!(row.contains("n1") && row.contains("alice"), "{row}");
    }
    assert!(table.contains("cluster.bin"), "{table}");

    let uploads = log_until(
        &server,
        &url,
        &["--event", "upload", "--node", "n1"],
        "upload",
    );
    assert!(!uploads.contains("download"), "only uploads:\n{uploads}");
    let out = admin(
        server.data_dir(),
        &["log", "--database-url", &url, "--node", "n2"],
        None,
        &[],
    );
    assert_success(&out, "ferryd log --node n2");
    let other = String::from_utf8_lossy(&out.stdout);
    assert!(
        !other.contains("alice") && !other.contains("n1"),
        "no events of another node:\n{other}"
    );
}

/// One failed login with a long, incompressible USER name must not stop this node's
/// events from reaching the audit table (btree row limit on audit_log_user_time, SQLSTATE
/// 54000, taken for "the database is away" and retried forever).
#[test]
fn a_long_user_name_does_not_stop_later_events_reaching_the_table() {
    let (_pg, url, server) = node_with_alice();
    let noise = pseudo_random(3000, 5);
    let name: String = noise.iter().map(|b| char::from(b'!' + b % 90)).collect();
    let (mut ctl, _) = server.connect();
    ctl.expect(&format!("USER {name}"), 331);
    assert_eq!(ctl.cmd("PASS wrong").code, 530);
    ctl.expect("QUIT", 221);
    let (mut ctl, _) = server.connect();
    ctl.login("alice", PASSWORD);
    ctl.expect("QUIT", 221);
    log_until(&server, &url, &["--user", "alice"], "login_ok");
}

/// The row of `table` that holds `needle`.
fn row<'a>(table: &'a str, needle: &str) -> &'a str {
    table
        .lines()
        .find(|l| l.contains(needle))
        .unwrap_or_else(|| panic!("no row with {needle}:\n{table}"))
}

#[test]
fn the_table_holds_every_nodes_events_and_node_picks_one() {
    let pg = PgTestServer::start().expect("postgres");
    let url = pg.url();
    let bucket = S3Bucket::start();
    let one = TestServer::start_node(&bucket, &url, "n1", "");
    let two = TestServer::start_node(&bucket, &url, "n2", "");
    let out = one.admin(
        &[
            "user",
            "add",
            "alice",
            "--password-stdin",
            "--database-url",
            &url,
        ],
        Some(&format!("{PASSWORD}\n")),
    );
    assert_success(&out, "user add");
    for (server, file) in [(&one, "via-n1.bin"), (&two, "via-n2.bin")] {
        let (mut ctl, greeting) = server.connect();
        assert_eq!(greeting.code, 220);
        ctl.login("alice", PASSWORD);
        assert_eq!(ctl.stor(file, &pseudo_random(10_000, 3)).code, 226);
        ctl.expect("QUIT", 221);
    }

    // Each node's batches arrive on their own: wait for both.
    log_until(&one, &url, &["--event", "upload"], "via-n1.bin");
    let both = log_until(&one, &url, &["--event", "upload"], "via-n2.bin");
    assert!(row(&both, "via-n1.bin").contains(" n1 "), "{both}");
    assert!(row(&both, "via-n2.bin").contains(" n2 "), "{both}");

    let only_two = log_until(&one, &url, &["--node", "n2"], "via-n2.bin");
    assert!(!only_two.contains("via-n1.bin"), "{only_two}");
    assert!(row(&only_two, "login_ok").contains(" n2 "), "{only_two}");
    assert!(
        !only_two.lines().any(|l| l.contains(" n1 ")),
        "no row of n1:\n{only_two}"
    );

    // Run where the default ./var holds no accounts: in database mode that is no concern.
    let cwd = tempfile::tempdir().expect("temp dir");
    let run = log_in(cwd.path(), &url);
    assert_eq!(run.code, Some(0), "{}", run.stderr);
    assert!(run.stdout.contains("via-n1.bin"), "{}", run.stdout);
    assert!(!run.stderr.contains("data directory"), "{}", run.stderr);
}

/// `ferryd log --database-url URL` in `cwd`, without `--data-dir`.
fn log_in(cwd: &std::path::Path, url: &str) -> Run {
    let child = Command::new(FERRYD)
        .args(["log", "--database-url", url])
        .current_dir(cwd)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawn ferryd log");
    Run::from(run_bounded(child, Duration::from_secs(30)))
}

#[test]
fn ferryd_log_on_a_database_no_node_has_started_on_says_so() {
    let pg = PgTestServer::start().expect("postgres");
    let cwd = tempfile::tempdir().expect("temp dir");
    let run = log_in(cwd.path(), &pg.url());
    assert_eq!(run.code, Some(1), "{}", run.stdout);
    assert_eq!(
        run.stderr.trim(),
        "ferryd: the database has no audit_log table; start a ferryd node on it first"
    );
}
