//! Two nodes of one cluster in one process: each its own `Database::open` and node name, one
//! PostgreSQL server.

use std::sync::atomic::AtomicUsize;

use super::*;
use crate::db::testing::PgTestServer;

/// The lease of these tests: a sweep every second.
const LEASE: Duration = Duration::from_secs(3);

fn config(server: &PgTestServer, name: &str) -> Config {
    let mut config = Config {
        node_name: Some(name.into()),
        cluster_lease_secs: LEASE.as_secs(),
        ban_after_failures: 10,
        ban_window_secs: 600,
        ban_secs: 900,
        max_sessions_per_ip: 2,
        max_sessions_per_user: 2,
        max_transfers_per_user: 1,
        ..Config::default()
    };
    server.configure(&mut config);
    config
}

pub(crate) async fn node(server: &PgTestServer, name: &str) -> (Arc<Database>, PgState) {
    let config = config(server, name);
    let db = Database::open(&config).await.expect("open");
    let state = PgState::new(&config, Arc::clone(&db));
    (db, state)
}

/// Polls `check` every 50 ms until it holds; false when `limit` passes first.
pub(crate) async fn eventually(limit: Duration, mut check: impl FnMut() -> bool) -> bool {
    let start = Instant::now();
    while start.elapsed() < limit {
        if check() {
            return true;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    check()
}

/// Runs `sql` with its rows' first column as text.
fn query(db: &Arc<Database>, sql: &'static str) -> Vec<String> {
    db.wait(move |client| async move {
        let rows = client.query(sql, &[]).await?;
        Ok(rows.iter().map(|r| r.get::<_, String>(0)).collect())
    })
    .expect("query")
}

fn ip(text: &str) -> IpAddr {
    text.parse().expect("ip")
}

const ALICE: &str = "alice";

fn bytes(bytes: u64) -> Reserved {
    Reserved { bytes, files: 0 }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_nodes_reserving_at_once_never_pass_the_room_together() {
    let server = PgTestServer::start().expect("postgres");
    let (_, a) = node(&server, "a").await;
    let (_, b) = node(&server, "b").await;
    let limit = 10 * GRANT + 12_345;
    let room = Room {
        bytes: Some(limit),
        files: None,
        basis: None,
    };
    let chunk = 64 * 1024;
    let granted = AtomicUsize::new(0);
    let refused = AtomicUsize::new(0);
    std::thread::scope(|scope| {
        for state in [&a, &b] {
            let (granted, refused) = (&granted, &refused);
            scope.spawn(move || {
                // Bounded: the room holds fewer chunks than this.
                for _ in 0..10_000 {
                    match state.reserve_quota(ALICE, bytes(chunk), room) {
                        Ok(true) => {
                            granted.fetch_add(1, Ordering::Relaxed);
                        }
                        Ok(false) => {
                            refused.fetch_add(1, Ordering::Relaxed);
                            return;
                        }
                        Err(e) => panic!("state: {e}"),
                    }
                }
            });
        }
    });
    let granted = granted.load(Ordering::Relaxed) as u64 * chunk;
    assert_eq!(
        refused.load(Ordering::Relaxed),
        2,
        "both nodes were refused"
    );
    assert!(granted <= limit, "{granted} granted past {limit}");
    // Only the unused ends of the two grants are left over, each less than a chunk past
    // what its node needed (the last grant is cut to the room).
    assert!(
        granted + 2 * GRANT >= limit,
        "only {granted} of {limit} granted"
    );
    let held = a.quota_reserved(ALICE).expect("read");
    assert!(held.bytes <= limit, "{held:?} reserved past {limit}");
    assert_eq!(held, b.quota_reserved(ALICE).expect("read"), "one view");
    a.release_quota(ALICE, bytes(u64::MAX));
    b.release_quota(ALICE, bytes(u64::MAX));
    let empty = eventually(Duration::from_secs(5), || {
        a.quota_reserved(ALICE).expect("read") == Reserved::default()
    })
    .await;
    assert!(empty, "settled uploads give every reservation back");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_grant_is_cut_to_the_room_and_its_rest_given_back() {
    let server = PgTestServer::start().expect("postgres");
    let (_, a) = node(&server, "a").await;
    let (_, b) = node(&server, "b").await;
    let room = Room {
        bytes: Some(100),
        files: Some(1),
        basis: None,
    };
    let reserve = |state: &PgState, more| state.reserve_quota(ALICE, more, room).expect("state");
    assert!(reserve(&a, bytes(60)));
    assert_eq!(
        b.quota_reserved(ALICE).expect("read").bytes,
        100,
        "a takes the room ahead, no more"
    );
    assert!(!reserve(&b, bytes(1)), "the room is taken");
    assert!(reserve(&a, bytes(40)), "from a's grant");
    assert!(!reserve(&a, bytes(1)));
    let file = Reserved { bytes: 0, files: 1 };
    assert!(reserve(&b, file), "files have their own room");
    assert!(!reserve(&a, file), "the one file slot is b's");
    a.release_quota(ALICE, bytes(70));
    let back = eventually(Duration::from_secs(5), || {
        b.quota_reserved(ALICE).expect("read")
            == Reserved {
                bytes: 30,
                files: 1,
            }
    })
    .await;
    assert!(back, "a gives back what it no longer uses, grant and all");
    assert!(reserve(&b, bytes(70)), "exactly what is free");
    assert!(!reserve(&b, bytes(1)));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn write_locks_are_exclusive_across_nodes_and_die_with_their_instance() {
    let server = PgTestServer::start().expect("postgres");
    let (_, a) = node(&server, "a").await;
    let (db_b, b) = node(&server, "b").await;
    let lock = |state: &PgState, key: &[u8]| state.write_lock(key).expect("state");
    let held = lock(&a, b"k").expect("free");
    assert!(lock(&b, b"k").is_none(), "busy on the other node");
    assert!(lock(&a, b"k").is_none(), "busy on its own node");
    assert!(lock(&b, b"other").is_some(), "another key is free");
    drop(held);
    let mut again = None;
    let freed = eventually(Duration::from_secs(5), || {
        again = lock(&b, b"k");
        again.is_some()
    })
    .await;
    assert!(freed, "a's release frees it for b");
    drop(again);

    // a takes a lock, a claim and a reservation, then its heartbeat stops (the row it beats
    // is renamed away, as if the process were killed).
    // Never given back: the killed process would not.
    std::mem::forget(lock(&a, b"k2").expect("free"));
    std::mem::forget(a.quota_claim(ALICE, b"file").expect("state").expect("free"));
    assert!(
        a.reserve_quota(ALICE, bytes(500), Room::default())
            .expect("state")
    );
    assert!(b.quota_claim(ALICE, b"file").expect("state").is_none());
    db_b.wait(|client| async move {
        client
            .execute("UPDATE nodes SET name = 'a (killed)' WHERE name = 'a'", &[])
            .await?;
        Ok(())
    })
    .expect("kill a");
    let killed = Instant::now();
    assert!(
        lock(&b, b"k2").is_none(),
        "a's lease runs until its heartbeat is old"
    );
    let swept = eventually(LEASE + LEASE / 3 + Duration::from_secs(2), || {
        b.quota_reserved(ALICE).expect("read") == Reserved::default()
    })
    .await;
    let after = killed.elapsed();
    assert!(swept, "a's reservations are swept within lease + lease/3");
    assert!(
        after >= LEASE - LEASE / 3,
        "not before the lease is over: {after:?}"
    );
    assert!(lock(&b, b"k2").is_some(), "a's lock is gone");
    assert!(b.quota_claim(ALICE, b"file").expect("state").is_some());
    let rows = query(&db_b, "SELECT instance FROM state_locks");
    assert!(!rows.iter().any(|i| i == a.inner.db.instance()), "{rows:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn failures_on_two_nodes_ban_on_both() {
    let server = PgTestServer::start().expect("postgres");
    let (_, a) = node(&server, "a").await;
    let (_, b) = node(&server, "b").await;
    let told = Arc::new(Mutex::new(Vec::new()));
    let seen = Arc::clone(&told);
    a.watch_bans(Arc::new(move |ip| lock(&seen).push(ip)));
    let bad = ip("192.0.2.7");
    for n in 1..=5 {
        let failure = a.login_failed(bad).expect("state");
        assert_eq!(failure.ban, None);
        assert!(failure.recent >= n);
    }
    for _ in 0..5 {
        b.login_failed(bad).expect("state");
    }
    let banned = eventually(Duration::from_secs(5), || {
        a.banned(bad).expect("view") && b.banned(bad).expect("view")
    })
    .await;
    assert!(
        banned,
        "ten failures over the cluster ban the address on both nodes"
    );
    assert!(!a.banned(ip("192.0.2.8")).expect("view"));
    assert_eq!(*lock(&told), [bad], "a ends its sessions from the address");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn counts_and_registrations_are_summed_over_the_nodes() {
    let server = PgTestServer::start().expect("postgres");
    let (_, a) = node(&server, "a").await;
    let (_, b) = node(&server, "b").await;
    let client = ip("198.51.100.1");
    let session = a.address_session(client).expect("state").expect("first");
    let user = a.user_session(ALICE).expect("state").expect("first");
    let upload = a
        .transfer(ALICE, Direction::Upload)
        .expect("state")
        .expect("first");
    let now = Instant::now();
    assert!(a.take_registration(client, now, 2).expect("state"));
    let seen = eventually(Duration::from_secs(5), || {
        let view = lock(&b.inner.view);
        view.others.get(&(Count::Address, client.to_string())) == Some(&1)
            && view.other_registrations.get(&client) == Some(&1)
            && view.others.get(&(Count::Transfer, ALICE.to_owned())) == Some(&1)
    })
    .await;
    assert!(seen, "b reads a's counts");
    let second = b.address_session(client).expect("state");
    assert!(second.is_some(), "two sessions per address");
    assert!(
        b.address_session(client).expect("state").is_none(),
        "not three"
    );
    let user_b = b.user_session(ALICE).expect("state");
    assert!(user_b.is_some(), "two sessions per user");
    assert!(b.user_session(ALICE).expect("state").is_none(), "not three");
    assert!(
        b.transfer(ALICE, Direction::Download)
            .expect("state")
            .is_none(),
        "one transfer per user, over the cluster"
    );
    assert!(
        b.transfer(ALICE, Direction::Listing)
            .expect("state")
            .is_some()
    );
    assert!(b.take_registration(client, now, 2).expect("state"));
    assert!(!b.take_registration(client, now, 2).expect("state"));
    drop((session, user, upload, second, user_b));
    let gone = eventually(Duration::from_secs(5), || {
        lock(&b.inner.view).others.is_empty()
    })
    .await;
    assert!(gone, "a's ended sessions leave b's view");
    assert!(
        b.transfer(ALICE, Direction::Upload)
            .expect("state")
            .is_some()
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn without_the_database_views_answer_and_the_rest_is_refused_until_it_is_back() {
    let mut server = PgTestServer::start().expect("postgres");
    let (db, a) = node(&server, "a").await;
    let bad = ip("203.0.113.9");
    server.stop();
    let start = Instant::now();
    assert!(!a.banned(bad).expect("from the view"));
    assert_eq!(a.login_failed(bad).expect("into the outbox").recent, 1);
    assert!(a.address_session(bad).expect("from the view").is_some());
    assert!(
        start.elapsed() < Duration::from_millis(500),
        "views never wait"
    );
    let refused = Instant::now();
    assert!(matches!(
        a.write_lock(b"k"),
        Err(StateError::Unavailable(_))
    ));
    assert!(matches!(
        a.reserve_quota(ALICE, bytes(1), Room::default()),
        Err(StateError::Unavailable(_))
    ));
    assert!(refused.elapsed() <= 2 * crate::db::QUERY_LIMIT + Duration::from_secs(10));
    assert!(
        eventually(Duration::from_secs(5), || a
            .inner
            .down
            .load(Ordering::Relaxed))
        .await,
        "the background task notices"
    );
    server.restart().expect("restart");
    let caught_up = eventually(Duration::from_secs(15), || {
        !a.inner.down.load(Ordering::Relaxed)
            && db
                .wait(move |client| async move {
                    let row = client
                        .query_one(
                            "SELECT count(*) FROM state_failures WHERE ip = $1",
                            &[&bad.to_string()],
                        )
                        .await?;
                    Ok(row.get::<_, i64>(0))
                })
                .is_ok_and(|n| n == 1)
    })
    .await;
    assert!(
        caught_up,
        "the failure of the outage is written when the database is back"
    );
    let mut locked = None;
    let back = eventually(Duration::from_secs(10), || {
        locked = a.write_lock(b"k").ok().flatten();
        locked.is_some()
    })
    .await;
    assert!(back, "locks work again");
}

/// The database away for twice the lease, then back: a live node keeps what it holds (its
/// rows are neither swept by itself nor by the node that came back with it), but a write lock
/// it held across the gap is no longer good for writing.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_outage_longer_than_the_lease_sweeps_nothing_of_a_live_node() {
    let mut server = PgTestServer::start().expect("postgres");
    let (db_a, a) = node(&server, "a").await;
    let (db_b, b) = node(&server, "b").await;
    let client = ip("198.51.100.20");
    let session = a.address_session(client).expect("state").expect("first");
    let writing = a.write_lock(b"k").expect("state").expect("free");
    let claim = a.quota_claim(ALICE, b"file").expect("state").expect("free");
    assert!(
        a.reserve_quota(ALICE, bytes(500), Room::default())
            .expect("state")
    );
    let seen = eventually(Duration::from_secs(5), || {
        lock(&b.inner.view)
            .others
            .get(&(Count::Address, client.to_string()))
            == Some(&1)
    })
    .await;
    assert!(seen, "b reads a's session before the outage");
    assert!(writing.held());
    let reserved = b.quota_reserved(ALICE).expect("read");
    assert!(reserved.bytes >= 500, "a's grant: {reserved:?}");

    server.stop();
    let stale = eventually(2 * LEASE, || !db_a.fresh()).await;
    assert!(stale, "a's heartbeat falls behind the lease");
    assert!(
        !writing.held(),
        "a lock from before the gap is not written under"
    );
    assert!(
        matches!(a.write_lock(b"other"), Err(StateError::Unavailable(_))),
        "no new lock without a heartbeat"
    );
    tokio::time::sleep(LEASE).await;
    server.restart().expect("restart");

    let back = eventually(Duration::from_secs(15), || {
        db_a.rejoined() > 0 && db_b.rejoined() > 0
    })
    .await;
    assert!(back, "both heartbeats come back after the gap");
    // As if a's beats were slow to land again: b, back too, must not judge a dead by its
    // old heartbeat before b itself has beaten for a lease.
    let slow = Instant::now();
    while slow.elapsed() < LEASE / 2 {
        db_a.wait(|client| async move {
            client
                .execute(
                    "UPDATE nodes SET heartbeat_at = now() - interval '1 hour' WHERE name = 'a'",
                    &[],
                )
                .await?;
            Ok(())
        })
        .expect("age a's heartbeat");
        // None, or no lock at all while b's own beat lags on a slow machine: never a's.
        assert!(
            !matches!(b.write_lock(b"k"), Ok(Some(_))),
            "b takes nothing over before it is settled"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    // Two refreshes past the moment both nodes are settled: any sweep has run by then.
    tokio::time::sleep(2 * LEASE).await;
    assert!(!writing.held(), "lost for good, not taken again silently");
    assert_eq!(
        b.quota_reserved(ALICE).expect("read"),
        reserved,
        "a's reservation is still counted"
    );
    assert!(
        b.write_lock(b"k").expect("state").is_none(),
        "a's lock row stays until a's upload lets go of it"
    );
    assert!(
        b.quota_claim(ALICE, b"file").expect("state").is_none(),
        "a's claim stays"
    );
    let counted = eventually(Duration::from_secs(5), || {
        lock(&b.inner.view)
            .others
            .get(&(Count::Address, client.to_string()))
            == Some(&1)
    })
    .await;
    assert!(counted, "a's session is counted again");
    let fresh_lock = a.write_lock(b"other").expect("state").expect("free");
    assert!(fresh_lock.held(), "a lock taken after the gap is good");

    drop((writing, claim, session, fresh_lock));
    a.release_quota(ALICE, bytes(500));
    let mut taken = None;
    let freed = eventually(Duration::from_secs(5), || {
        taken = b.write_lock(b"k").expect("state");
        taken.is_some()
    })
    .await;
    assert!(freed, "a's release frees the lock for b");
    let returned = eventually(Duration::from_secs(5), || {
        b.quota_reserved(ALICE).expect("read") == Reserved::default()
    })
    .await;
    assert!(returned, "and gives the reservation back");
}

/// A reservation is written whole with a growing version: a write that arrives late (a
/// give-back that waited in the outbox, a commit whose answer was lost) never replaces a
/// newer one.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_late_reservation_write_never_replaces_a_newer_one() {
    let server = PgTestServer::start().expect("postgres");
    let (db, a) = node(&server, "a").await;
    let write = |held: u64, version: i64| {
        let instance = db.instance().to_owned();
        db.wait(move |client| async move {
            write_reservation(&client, &instance, ALICE, bytes(held), version).await
        })
        .expect("write");
    };
    write(700, 5);
    write(100, 3);
    assert_eq!(
        a.quota_reserved(ALICE).expect("read").bytes,
        0,
        "own: memory"
    );
    let (_, b) = node(&server, "b").await;
    assert_eq!(b.quota_reserved(ALICE).expect("read").bytes, 700);
    write(200, 6);
    assert_eq!(b.quota_reserved(ALICE).expect("read").bytes, 200);
}

/// While the database is away the outbox stays bounded: failed logins from ever new addresses
/// are dropped first, and what gives a lock back is kept and written once it is back.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_outbox_is_bounded_and_keeps_what_gives_locks_back() {
    let mut server = PgTestServer::start().expect("postgres");
    let (_, a) = node(&server, "a").await;
    let (_, b) = node(&server, "b").await;
    let writing = a.write_lock(b"k").expect("state").expect("free");
    server.stop();
    drop(writing);
    for n in 0..(MAX_OUTBOX as u32 + 5_000) {
        let from = IpAddr::from(std::net::Ipv6Addr::from(
            0x2001_0db8_u128 << 96 | u128::from(n),
        ));
        a.login_failed(from).expect("into the outbox");
    }
    let queued = lock(&a.inner.outbox).len();
    assert!(queued <= MAX_OUTBOX, "{queued} changes queued");
    assert!(a.inner.dropped.load(Ordering::Relaxed) >= 5_000);
    server.restart().expect("restart");
    let mut taken = None;
    let freed = eventually(Duration::from_secs(20), || {
        taken = b.write_lock(b"k").ok().flatten();
        taken.is_some()
    })
    .await;
    assert!(freed, "the unlock queued during the outage is written");
}
