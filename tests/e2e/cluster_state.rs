//! Two `ferryd` nodes of one cluster on 127.0.0.1: one PostgreSQL (the shared state and the
//! usage), one s3s-fs bucket. A user's uploads through both at once share one quota, a file
//! one node appends to is busy on the other, and uploads are refused cleanly (451) while the
//! database is away and work again once it is back.

use crate::common;
use crate::quota::upload;

use std::io::Write;
use std::net::Shutdown;
use std::time::{Duration, Instant};

use common::s3::S3Bucket;
use common::{Control, TestServer, pseudo_random};
use ferry::db::testing::PgTestServer;

const PASS: &str = "cluster-pass-1";
/// alice's byte limit: room for one of the two uploads, not both.
const LIMIT: usize = 6 << 20;
const UPLOAD: usize = 4 << 20;

/// Two nodes on `bucket` and `db`, and alice (with [`LIMIT`]) in the database, so on both.
fn cluster(bucket: &S3Bucket, db: &PgTestServer) -> (TestServer, TestServer) {
    let quota = format!("default_quota_bytes = {LIMIT}\n");
    let a = TestServer::start_node(bucket, &db.url(), "node-a", &quota);
    let b = TestServer::start_node(bucket, &db.url(), "node-b", &quota);
    let out = a.admin(
        &[
            "user",
            "add",
            "alice",
            "--password-stdin",
            "--database-url",
            &db.url(),
        ],
        Some("cluster-pass-1\n"),
    );
    common::assert_success(&out, "user add");
    (a, b)
}

fn login(server: &TestServer) -> Control {
    let (mut ctl, greeting) = server.connect();
    assert_eq!(greeting.code, 220, "{greeting:?}");
    ctl.login("alice", PASS);
    ctl.expect("TYPE I", 200);
    ctl
}

/// Bytes used, as `SITE QUOTA` says.
fn used(ctl: &mut Control) -> u64 {
    let reply = ctl.expect("SITE QUOTA", 211);
    let text = reply.text();
    text.lines()
        .find_map(|l| l.trim().strip_prefix("Bytes used: "))
        .and_then(|rest| rest.split_whitespace().next())
        .and_then(|n| n.parse().ok())
        .unwrap_or_else(|| panic!("no usage in {text}"))
}

#[test]
fn uploads_through_two_nodes_at_once_share_one_quota() {
    let db = PgTestServer::start().expect("postgres");
    let bucket = S3Bucket::start();
    let (a, b) = cluster(&bucket, &db);
    let body = pseudo_random(UPLOAD, 14);
    let replies: Vec<u16> = std::thread::scope(|scope| {
        let uploads: Vec<_> = [(&a, "via-a.bin"), (&b, "via-b.bin")]
            .into_iter()
            .map(|(server, name)| {
                let body = &body;
                scope.spawn(move || {
                    let mut ctl = login(server);
                    upload(&mut ctl, "STOR", name, body).code
                })
            })
            .collect();
        uploads
            .into_iter()
            .map(|u| u.join().expect("upload"))
            .collect()
    });
    let mut sorted = replies.clone();
    sorted.sort_unstable();
    assert_eq!(
        sorted,
        [226, 552],
        "one fits, the other passes the limit: {replies:?}"
    );
    let (mut on_a, mut on_b) = (login(&a), login(&b));
    assert_eq!(used(&mut on_a), UPLOAD as u64, "the committed upload only");
    assert_eq!(used(&mut on_b), UPLOAD as u64, "one usage for both nodes");
    let refused = upload(&mut on_a, "STOR", "more.bin", &body[..LIMIT - UPLOAD + 1]);
    assert_eq!(refused.code, 552, "{refused:?}");
    let fits = upload(&mut on_b, "STOR", "more.bin", &body[..LIMIT - UPLOAD]);
    assert_eq!(fits.code, 226, "exactly the rest fits: {fits:?}");
}

#[test]
fn a_file_appended_on_one_node_is_busy_on_the_other() {
    let db = PgTestServer::start().expect("postgres");
    let bucket = S3Bucket::start();
    let (a, b) = cluster(&bucket, &db);
    let (mut on_a, mut on_b) = (login(&a), login(&b));
    assert_eq!(on_a.stor("log.txt", b"first\n").code, 226);

    let mut data = on_a.data_connection();
    on_a.expect("APPE log.txt", 150);
    data.write_all(b"second\n").expect("append");
    let other = on_b.data_connection();
    let busy = on_b.cmd("APPE log.txt");
    assert!(
        matches!(busy.code, 450 | 550),
        "busy on the other node: {busy:?}"
    );
    drop(other);
    data.shutdown(Shutdown::Write).expect("end the append");
    drop(data);
    assert_eq!(on_a.reply().code, 226);

    // The lock is given back behind the reply: bounded retries.
    let start = Instant::now();
    let appended = loop {
        let reply = upload(&mut on_b, "APPE", "log.txt", b"third\n");
        if reply.code == 226 || start.elapsed() > Duration::from_secs(10) {
            break reply;
        }
        std::thread::sleep(Duration::from_millis(200));
    };
    assert_eq!(appended.code, 226, "free once a is done: {appended:?}");
    assert_eq!(on_a.retr("log.txt"), b"first\nsecond\nthird\n");
}

#[test]
fn uploads_fail_cleanly_while_the_database_is_gone_and_work_when_it_is_back() {
    let mut db = PgTestServer::start().expect("postgres");
    let bucket = S3Bucket::start();
    let (a, b) = cluster(&bucket, &db);
    let body = pseudo_random(1 << 20, 15);
    let mut on_a = login(&a);
    assert_eq!(upload(&mut on_a, "STOR", "kept.bin", &body).code, 226);

    db.stop();
    let refused = upload(&mut on_a, "STOR", "during.bin", &body);
    assert_eq!(
        refused.code, 451,
        "no reservation without the database: {refused:?}"
    );
    a.wait_stderr("database unavailable");
    on_a.expect("NOOP", 200);
    assert_eq!(on_a.retr("kept.bin"), body, "downloads go on meanwhile");

    db.restart().expect("restart");
    // The pool drops its dead connections as it meets them: bounded retries.
    let start = Instant::now();
    let stored = loop {
        let reply = upload(&mut on_a, "STOR", "after.bin", &body);
        if reply.code == 226 || start.elapsed() > Duration::from_secs(20) {
            break reply;
        }
        std::thread::sleep(Duration::from_millis(200));
    };
    assert_eq!(stored.code, 226, "uploads work again: {stored:?}");
    let mut on_b = login(&b);
    assert_eq!(on_b.retr("kept.bin"), body, "nothing committed was lost");
    assert_eq!(on_b.retr("after.bin"), body);
    on_b.expect("SIZE during.bin", 550);
    assert_eq!(
        used(&mut on_b),
        2 << 20,
        "the usage holds both files, not the refused one"
    );
}
