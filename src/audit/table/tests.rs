use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use super::*;
use crate::config::Config;
use crate::db::testing::PgTestServer;

fn peer() -> SocketAddr {
    "127.0.0.1:40001".parse().expect("addr")
}

async fn open(server: &PgTestServer, node: &str) -> Arc<Database> {
    let mut config = Config {
        node_name: Some(node.into()),
        ..Config::default()
    };
    server.configure(&mut config);
    Database::open(&config).await.expect("open")
}

/// An event of `node` whose session number says its place in that node's order.
fn numbered(node: &str, n: u64) -> Event {
    let mut event = Event::now(n, peer(), EventKind::Command)
        .with_user("alice")
        .with_command(format!("NOOP {n}"))
        .with_code(200);
    event.node = Some(node.into());
    event
}

/// Flushes until the backlog is empty: a restarted database takes a retry or two.
fn drain(sink: &mut TableSink) {
    let start = Instant::now();
    while sink.backlog() > 0 {
        assert!(
            start.elapsed() < Duration::from_secs(40),
            "backlog never drained: {}",
            sink.backlog()
        );
        sink.flush().expect("flush");
        std::thread::sleep(Duration::from_millis(100));
    }
}

async fn sessions(db: &Database, node: &str) -> Vec<u64> {
    let query = TableQuery {
        node: Some(node.into()),
        ..TableQuery::default()
    };
    let (events, skipped) = read(db, query).await.expect("read");
    assert_eq!(skipped, 0);
    events.iter().map(|e| e.session).collect()
}

#[tokio::test]
async fn a_batch_lands_with_every_field() {
    let server = PgTestServer::start().expect("postgres");
    let db = open(&server, "n1").await;
    let mut sink = TableSink::start(Arc::clone(&db));
    let mut upload = Event::now(7, peer(), EventKind::Upload)
        .with_user("alice")
        .with_path("/in\0side.txt")
        .with_bytes(u64::MAX)
        .with_duration(Duration::from_millis(1234))
        .with_code(226)
        .with_ascii(true);
    upload.complete = Some(false);
    upload.node = Some("n1".into());
    let mut rename = Event::now(7, peer(), EventKind::Rename)
        .with_path("/a")
        .with_target("/b");
    rename.node = Some("n1".into());
    let mut suppressed = Event::now(0, peer(), EventKind::Suppressed).with_command("command:5");
    suppressed.count = Some(5);
    suppressed.node = Some("n1".into());
    let events = vec![upload, rename, suppressed];
    sink.write(&events).expect("write");
    sink.flush().expect("flush");
    assert_eq!(sink.backlog(), 0, "flushed within the limit");

    let row = db
        .with(|c| async move {
            let row = c
                .query_one(
                    "SELECT to_char(time AT TIME ZONE 'UTC', 'YYYY-MM-DD\"T\"HH24:MI:SS.MS\"Z\"'), \
                            node, session, peer, user_name, kind, path, bytes, duration_ms, \
                            code, ascii, complete, event->>'path' \
                     FROM audit_log WHERE kind = 'upload'",
                    &[],
                )
                .await?;
            Ok((
                row.get::<_, String>(0),
                row.get::<_, String>(1),
                row.get::<_, i64>(2),
                row.get::<_, String>(3),
                row.get::<_, Option<String>>(4),
                row.get::<_, String>(5),
                row.get::<_, Option<String>>(6),
                row.get::<_, Option<i64>>(7),
                row.get::<_, Option<i64>>(8),
                row.get::<_, Option<i32>>(9),
                (
                    row.get::<_, Option<bool>>(10),
                    row.get::<_, Option<bool>>(11),
                    row.get::<_, Option<String>>(12),
                ),
            ))
        })
        .await
        .expect("row");
    assert_eq!(
        row.0, events[0].time,
        "the event's time, to the millisecond"
    );
    assert_eq!(row.1, "n1");
    assert_eq!(row.2, 7);
    assert_eq!(row.3, "127.0.0.1:40001");
    assert_eq!(row.4.as_deref(), Some("alice"));
    assert_eq!(row.5, "upload");
    assert_eq!(
        row.6.as_deref(),
        Some("/in\u{fffd}side.txt"),
        "NUL replaced"
    );
    assert_eq!(row.7, Some(i64::MAX), "saturated");
    assert_eq!(row.8, Some(1234));
    assert_eq!(row.9, Some(226));
    assert_eq!(row.10, (Some(true), Some(false), row.6.clone()));

    let (read_back, skipped) = read(&db, TableQuery::default()).await.expect("read");
    assert_eq!(skipped, 0);
    let expected: Vec<Event> = events.iter().map(scrubbed).collect();
    assert_eq!(read_back, expected, "the whole events, in order");
    let (renames, _) = read(
        &db,
        TableQuery {
            kind: Some(EventKind::Rename),
            ..TableQuery::default()
        },
    )
    .await
    .expect("read");
    assert_eq!(renames.len(), 1);
    assert_eq!(renames[0].target.as_deref(), Some("/b"));
}

#[tokio::test]
async fn the_backlog_is_bounded_while_the_database_is_away() {
    let mut server = PgTestServer::start().expect("postgres");
    let db = open(&server, "n1").await;
    let mut sink = TableSink::with_cap(Arc::clone(&db), 50);
    server.stop();
    let started = Instant::now();
    for chunk in 0..12 {
        let events: Vec<Event> = (chunk * 10..chunk * 10 + 10)
            .map(|n| numbered("n1", n))
            .collect();
        sink.write(&events).expect("write never fails");
        assert!(sink.backlog() <= 50, "bounded: {}", sink.backlog());
    }
    assert!(
        started.elapsed() < Duration::from_secs(1),
        "writes do not wait for the database: {:?}",
        started.elapsed()
    );
    assert_eq!(sink.backlog(), 50);
    let flushing = Instant::now();
    sink.flush().expect("flush");
    assert!(
        flushing.elapsed() < FLUSH_LIMIT + Duration::from_secs(1),
        "a flush with the database away gives up in time: {:?}",
        flushing.elapsed()
    );
    assert_eq!(sink.backlog(), 50, "kept for the retry");

    server.restart().expect("restart");
    drain(&mut sink);
    assert_eq!(
        sessions(&db, "n1").await,
        (70..120).collect::<Vec<u64>>(),
        "the newest 50, in order; the oldest dropped"
    );
}

#[tokio::test]
async fn events_after_a_database_restart_arrive_in_order_per_node() {
    let mut server = PgTestServer::start().expect("postgres");
    let one = open(&server, "n1").await;
    let two = open(&server, "n2").await;
    let mut sink_one = TableSink::start(Arc::clone(&one));
    let mut sink_two = TableSink::start(Arc::clone(&two));
    for n in 0..30 {
        sink_one.write(&[numbered("n1", n)]).expect("write");
        sink_two.write(&[numbered("n2", n)]).expect("write");
    }
    drain(&mut sink_one);
    drain(&mut sink_two);
    server.stop();
    for n in 30..600 {
        sink_one.write(&[numbered("n1", n)]).expect("write");
        if n % 2 == 0 {
            sink_two.write(&[numbered("n2", n)]).expect("write");
        }
    }
    server.restart().expect("restart");
    drain(&mut sink_one);
    drain(&mut sink_two);

    assert_eq!(sessions(&one, "n1").await, (0..600).collect::<Vec<u64>>());
    let expected_two: Vec<u64> = (0..30).chain((30..600).filter(|n| n % 2 == 0)).collect();
    assert_eq!(sessions(&one, "n2").await, expected_two);
    let (tail, _) = read(
        &two,
        TableQuery {
            node: Some("n1".into()),
            tail: Some(3),
            ..TableQuery::default()
        },
    )
    .await
    .expect("read");
    let tail: Vec<u64> = tail.iter().map(|e| e.session).collect();
    assert_eq!(tail, [597, 598, 599], "the last three, oldest first");
    let (nobody, _) = read(
        &two,
        TableQuery {
            user: Some("bob".into()),
            ..TableQuery::default()
        },
    )
    .await
    .expect("read");
    assert!(nobody.is_empty());
}
