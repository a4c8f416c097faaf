//! Database mode's audit trail: a node named with `--node-name` stamps its name on every
//! audit.jsonl line and its stderr lines, batches the same events into the `audit_log`
//! table, and `ferryd log --database-url` shows them with a node column.

use std::time::{Duration, Instant};

use ferry::db::testing::PgTestServer;
use serde_json::json;

use crate::common::{TestServer, admin, assert_success, has_event, pseudo_random};

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

#[test]
fn a_nodes_events_reach_the_audit_table_and_ferryd_log_shows_them() {
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
