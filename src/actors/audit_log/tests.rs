//! Tests of the audit log: the event format, both sinks, the pending bound, the noise budgets,
//! the free-space floor and rotation.

use super::*;
use crate::audit::MAX_TRACKED;
use crate::audit::RotatingFile;
use std::fs;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Instant;

fn peer() -> SocketAddr {
    SocketAddr::from(([192, 0, 2, 7], 50123))
}

fn upload(path: &str) -> Event {
    Event::now(7, peer(), EventKind::Upload)
        .with_user("alice")
        .with_path(path)
        .with_bytes(1234)
        .with_duration(Duration::from_millis(2600))
        .with_code(226)
        .with_ascii(false)
}

/// Records what it is given; fails while `fail` is set.
#[derive(Clone, Default)]
struct TestSink {
    written: Arc<Mutex<Vec<Event>>>,
    fail: Arc<AtomicBool>,
}

impl AuditSink for TestSink {
    fn write(&mut self, events: &[Event]) -> io::Result<()> {
        if self.fail.load(Ordering::SeqCst) {
            return Err(io::Error::other("disk on fire"));
        }
        self.written
            .lock()
            .expect("test mutex")
            .extend_from_slice(events);
        Ok(())
    }

    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}

impl TestSink {
    fn count(&self) -> usize {
        self.written.lock().expect("test mutex").len()
    }
}

#[test]
fn event_time_has_milliseconds_and_optional_fields_are_omitted() {
    let event = Event::now(1, peer(), EventKind::SessionOpen);
    assert_eq!(
        event.time.len(),
        "2026-11-25T20:17:00.123Z".len(),
        "{}",
        event.time
    );
    assert!(event.time.ends_with('Z'));
    let json = serde_json::to_string(&event).expect("serialise");
    assert_eq!(
        json,
        format!(
            r#"{{"time":"{}","session":1,"peer":"192.0.2.7:50123","event":"session_open"}}"#,
            event.time
        )
    );
}

#[test]
fn event_kind_names_round_trip() {
    for kind in EventKind::ALL {
        assert_eq!(kind.as_str().parse::<EventKind>(), Ok(kind));
        let json = serde_json::to_string(&kind).expect("serialise");
        assert_eq!(json, format!("\"{kind}\""));
    }
    assert!("LoginOk".parse::<EventKind>().is_err());
}

#[test]
fn an_incomplete_upload_says_so_in_both_logs() {
    let mut event = upload("/part.bin").with_code(426);
    event.complete = Some(false);
    let json = serde_json::to_value(&event).expect("serialise");
    assert_eq!(json["complete"], serde_json::json!(false));
    let line = xferlog_line(&event).expect("upload line");
    assert_eq!(line.split_whitespace().last(), Some("i"));
    event.complete = Some(true);
    let line = xferlog_line(&event).expect("upload line");
    assert_eq!(line.split_whitespace().last(), Some("c"));
}

#[test]
fn xferlog_line_has_18_fields() {
    let mut event = upload("/my dir/evil\nname\t.txt");
    event.time = "2026-11-05T20:17:00.123Z".into();
    let line = xferlog_line(&event).expect("upload line");
    assert!(line.ends_with('\n'));
    assert_eq!(line.matches('\n').count(), 1);
    let fields: Vec<&str> = line.split_whitespace().collect();
    assert_eq!(fields.len(), 18, "{line:?}");
    assert_eq!(
        fields,
        [
            "Thu",
            "Nov",
            "5",
            "20:17:00",
            "2026",
            "3",
            "192.0.2.7",
            "1234",
            "/my_dir/evil_name_.txt",
            "b",
            "_",
            "i",
            "r",
            "alice",
            "ftp",
            "0",
            "*",
            "c"
        ]
    );

    let download = Event::now(7, peer(), EventKind::Download)
        .with_path("")
        .with_ascii(true)
        .with_code(426);
    let line = xferlog_line(&download).expect("download line");
    let fields: Vec<&str> = line.split_whitespace().collect();
    assert_eq!(fields.len(), 18, "{line:?}");
    assert_eq!(fields[5], "1", "transfer time is at least a second");
    assert_eq!(&fields[8..12], ["_", "a", "_", "o"]);
    assert_eq!(fields[13], "*");
    assert_eq!(fields[17], "i");

    assert!(xferlog_line(&Event::now(7, peer(), EventKind::Delete)).is_none());
}

#[actix::test]
async fn flush_writes_json_lines_and_xferlog() {
    let dir = tempfile::tempdir().expect("tempdir");
    let log = AuditLog::start(dir.path(), AuditPolicy::UNLIMITED, "n7", None, None).expect("start");
    let events = vec![
        Event::now(1, peer(), EventKind::SessionOpen),
        Event::now(1, peer(), EventKind::Command)
            .with_user("alice")
            .with_command("PASS ***")
            .with_code(230),
        upload("/a b.txt"),
        Event::now(1, peer(), EventKind::Rename)
            .with_path("/x")
            .with_target("/y"),
    ];
    for event in &events {
        log.do_send(Record(event.clone()));
    }
    log.send(Flush).await.expect("mailbox");

    let text = fs::read_to_string(dir.path().join("audit.jsonl")).expect("read");
    assert_eq!(
        text.matches(r#""node":"n7""#).count(),
        events.len(),
        "{text}"
    );
    let read: Vec<Event> = text
        .lines()
        .map(|line| serde_json::from_str(line).expect("valid JSON line"))
        .collect();
    let stamped: Vec<Event> = events
        .into_iter()
        .map(|event| Event {
            node: Some("n7".into()),
            ..event
        })
        .collect();
    assert_eq!(read, stamped);

    let xferlog = fs::read_to_string(dir.path().join("xferlog")).expect("read");
    assert_eq!(xferlog.lines().count(), 1, "{xferlog}");
    assert!(xferlog.contains(" /a_b.txt b _ i r alice ftp 0 * c"));
}

#[actix::test]
async fn failing_sink_keeps_events_until_a_write_succeeds() {
    let bad = TestSink::default();
    bad.fail.store(true, Ordering::SeqCst);
    let good = TestSink::default();
    let log = AuditLog::with_sinks(
        vec![Box::new(bad.clone()), Box::new(good.clone())],
        AuditPolicy::UNLIMITED,
    );
    for n in 0..3 {
        log.do_send(Record(Event::now(n, peer(), EventKind::Command)));
    }
    log.send(Flush).await.expect("mailbox");
    assert_eq!(bad.count(), 0);
    assert_eq!(good.count(), 3);

    bad.fail.store(false, Ordering::SeqCst);
    log.do_send(Record(Event::now(3, peer(), EventKind::Command)));
    log.send(Flush).await.expect("mailbox");
    let sessions: Vec<u64> = bad
        .written
        .lock()
        .expect("test mutex")
        .iter()
        .map(|e| e.session)
        .collect();
    assert_eq!(sessions, [0, 1, 2, 3]);
    // The sink that never failed gets nothing twice.
    assert_eq!(good.count(), 4);
}

#[test]
fn pending_is_bounded_and_drops_the_oldest() {
    let sink = TestSink::default();
    sink.fail.store(true, Ordering::SeqCst);
    let mut log = AuditLog::new(vec![Box::new(sink.clone())], 10, AuditPolicy::UNLIMITED);
    for n in 0..15 {
        log.push(Event::now(n, peer(), EventKind::Command));
    }
    assert_eq!(log.pending.len(), 10);
    sink.fail.store(false, Ordering::SeqCst);
    log.flush();
    let first = sink.written.lock().expect("test mutex")[0].session;
    assert_eq!((first, sink.count()), (5, 10));
    assert!(log.pending.is_empty());
}

#[actix::test]
async fn writes_at_least_every_second_without_flush() {
    let sink = TestSink::default();
    let log = AuditLog::with_sinks(vec![Box::new(sink.clone())], AuditPolicy::UNLIMITED);
    let start = Instant::now();
    log.do_send(Record(Event::now(1, peer(), EventKind::SessionOpen)));
    while sink.count() == 0 && start.elapsed() < Duration::from_secs(5) {
        actix::clock::sleep(Duration::from_millis(20)).await;
    }
    assert_eq!(sink.count(), 1);
    assert!(
        start.elapsed() < Duration::from_millis(1500),
        "{:?}",
        start.elapsed()
    );
}

fn from(ip: [u8; 4], kind: EventKind) -> Event {
    Event::now(9, SocketAddr::from((ip, 40000)), kind)
}

fn budget(per_address: u32, total: u32) -> AuditPolicy {
    AuditPolicy {
        burst_per_address: per_address,
        burst_total: total,
        ..AuditPolicy::UNLIMITED
    }
}

fn written(sink: &TestSink, pred: impl Fn(&Event) -> bool) -> Vec<Event> {
    let all = sink.written.lock().expect("test mutex");
    all.iter().filter(|e| pred(e)).cloned().collect()
}

#[test]
fn noise_is_written_up_to_the_budgets_then_counted_and_forensic_events_always() {
    let sink = TestSink::default();
    let mut log = AuditLog::new(vec![Box::new(sink.clone())], MAX_PENDING, budget(3, 5));
    for ip in [[192, 0, 2, 1], [192, 0, 2, 2], [192, 0, 2, 3]] {
        for _ in 0..10 {
            log.record(from(ip, EventKind::Command).with_code(500));
            log.record(from(ip, EventKind::LoginFailed));
        }
    }
    // Logged in, a known command is no noise.
    for _ in 0..10 {
        log.record(
            from([192, 0, 2, 1], EventKind::Command)
                .with_user("al")
                .with_command("PWD")
                .with_code(257),
        );
    }
    log.summarise();
    log.flush();
    let commands = written(&sink, |e| e.event == EventKind::Command && e.user.is_none());
    let per_ip = |ip: &str| {
        commands
            .iter()
            .filter(|e| e.peer.starts_with(&format!("{ip}:")))
            .count()
    };
    // 3 from the first address, 2 from the second (5 in all), none from the third.
    assert_eq!(
        (
            per_ip("192.0.2.1"),
            per_ip("192.0.2.2"),
            per_ip("192.0.2.3")
        ),
        (3, 2, 0)
    );
    assert_eq!(
        written(&sink, |e| e.event == EventKind::LoginFailed).len(),
        30
    );
    assert_eq!(written(&sink, |e| e.user.is_some()).len(), 10);
    let mut summaries: Vec<(String, u64, String)> =
        written(&sink, |e| e.event == EventKind::Suppressed)
            .into_iter()
            .map(|e| (e.peer, e.count.unwrap_or(0), e.command.unwrap_or_default()))
            .collect();
    summaries.sort();
    assert_eq!(summaries.len(), 3, "{summaries:?}");
    assert_eq!(
        summaries.iter().map(|s| s.1).collect::<Vec<_>>(),
        [7, 8, 10]
    );
    assert_eq!(summaries[2].0, "192.0.2.3");
    assert!(
        summaries[2].2.starts_with("command: 500 x 10 in "),
        "{summaries:?}"
    );
    // A new window starts with a fresh budget.
    log.record(from([192, 0, 2, 3], EventKind::Refused).with_code(421));
    log.flush();
    assert_eq!(written(&sink, |e| e.event == EventKind::Refused).len(), 1);
}

#[test]
fn addresses_past_the_tracked_limit_share_one_tally() {
    let sink = TestSink::default();
    let mut log = AuditLog::new(
        vec![Box::new(sink.clone())],
        MAX_PENDING,
        budget(1, u32::MAX),
    );
    let extra = 100;
    for n in 0..(MAX_TRACKED + extra) as u32 {
        let [_, b, c, d] = n.to_be_bytes();
        log.record(from([10, b, c, d], EventKind::Refused));
    }
    assert_eq!(log.throttle.tallies.len(), MAX_TRACKED + 1);
    log.summarise();
    log.flush();
    assert_eq!(
        written(&sink, |e| e.event == EventKind::Refused).len(),
        MAX_TRACKED + 1
    );
    let summaries = written(&sink, |e| e.event == EventKind::Suppressed);
    assert_eq!(summaries.len(), 1, "{summaries:?}");
    assert_eq!(summaries[0].peer, "*");
    assert_eq!(summaries[0].count, Some(extra as u64 - 1));
}

#[test]
fn below_the_floor_only_forensic_events_are_written_and_the_rest_counted() {
    let sink = TestSink::default();
    let mut log = AuditLog::new(
        vec![Box::new(sink.clone())],
        MAX_PENDING,
        AuditPolicy::UNLIMITED,
    );
    log.floor = Some(Floor {
        dir: PathBuf::from("/"),
        min_free: u64::MAX,
        low: true,
        held: 0,
    });
    let user = |cmd: &str| {
        from([192, 0, 2, 1], EventKind::Command)
            .with_user("al")
            .with_command(cmd)
            .with_code(200)
    };
    log.record(user("PWD"));
    log.record(user("SITE CHMOD 600 a.txt"));
    log.record(user("MFMT 20260101000000 a.txt"));
    log.record(from([192, 0, 2, 1], EventKind::Command).with_code(500));
    for kind in [
        EventKind::SessionOpen,
        EventKind::LoginOk,
        EventKind::Upload,
        EventKind::Delete,
        EventKind::Banned,
    ] {
        log.record(from([192, 0, 2, 1], kind).with_user("al"));
    }
    // The ends of a session without a login are counted per address, not written.
    log.record(from([192, 0, 2, 9], EventKind::SessionOpen));
    log.record(from([192, 0, 2, 9], EventKind::SessionClose));
    log.summarise();
    log.flush();
    let kinds: Vec<EventKind> = written(&sink, |_| true).iter().map(|e| e.event).collect();
    assert_eq!(
        kinds[..7],
        [
            EventKind::Command,
            EventKind::Command,
            EventKind::SessionOpen,
            EventKind::LoginOk,
            EventKind::Upload,
            EventKind::Delete,
            EventKind::Banned,
        ]
    );
    let mut summaries: Vec<(String, u64)> = written(&sink, |e| e.event == EventKind::Suppressed)
        .into_iter()
        .map(|e| (e.command.unwrap_or_default(), e.count.unwrap_or(0)))
        .collect();
    summaries.sort();
    assert_eq!(summaries.len(), 3, "{summaries:?}");
    assert!(summaries[0].0.starts_with("not forensic"), "{summaries:?}");
    assert_eq!(summaries[0].1, 2);
    assert!(summaries[1].0.starts_with("session_close: 1 in "));
    assert!(summaries[2].0.starts_with("session_open: 1 in "));
}

#[test]
fn a_rotating_file_keeps_n_files_under_the_cap() {
    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().join("audit.jsonl");
    let rotation = Rotation {
        max_bytes: 100,
        keep: 2,
    };
    let mut file = RotatingFile::open(&path, rotation).expect("open");
    for n in 0..20u8 {
        file.append(&[b'a' + n; 30]).expect("append");
    }
    // A batch bigger than the cap goes alone into a fresh file.
    file.append(&[b'Z'; 150]).expect("big append");
    let mut names: Vec<String> = fs::read_dir(dir.path())
        .expect("list")
        .map(|e| e.expect("entry").file_name().to_string_lossy().into_owned())
        .collect();
    names.sort();
    assert_eq!(names, ["audit.jsonl", "audit.jsonl.1", "audit.jsonl.2"]);
    assert_eq!(fs::read(&path).expect("read"), [b'Z'; 150]);
    let newest = fs::read(dir.path().join("audit.jsonl.1")).expect("read");
    assert_eq!(newest.len(), 60);
    assert!(newest.ends_with(&[b'a' + 19; 30]));
    let older = fs::read(dir.path().join("audit.jsonl.2")).expect("read");
    assert_eq!(older.len(), 90);
    // Reopening continues from the file's size.
    let mut again = RotatingFile::open(&path, rotation).expect("reopen");
    assert_eq!(again.size, 150);
    again.append(b"x").expect("append");
    assert_eq!(fs::read(&path).expect("read"), b"x");
}

#[actix::test]
async fn a_full_batch_is_written_before_the_tick() {
    let sink = TestSink::default();
    let log = AuditLog::with_sinks(vec![Box::new(sink.clone())], AuditPolicy::UNLIMITED);
    for n in 0..BATCH as u64 {
        log.do_send(Record(Event::now(n, peer(), EventKind::Command)));
    }
    let start = Instant::now();
    while sink.count() < BATCH && start.elapsed() < Duration::from_millis(500) {
        actix::clock::sleep(Duration::from_millis(5)).await;
    }
    assert_eq!(sink.count(), BATCH);
}
