use std::sync::{Arc, Barrier, Mutex};
use std::time::{Duration, Instant};

use super::*;
use crate::accounts::hash_password;
use crate::codec::Password;
use crate::config::Config;
use crate::db::testing::PgTestServer;
use crate::db::wait_here;

/// A node's handle on `server`'s database, opened from a plain thread.
fn open(server: &PgTestServer, node: &str) -> Arc<Database> {
    let mut config = Config {
        node_name: Some(node.into()),
        ..Config::default()
    };
    server.configure(&mut config);
    wait_here(async move { Database::open(&config).await }).expect("open")
}

fn name(n: &str) -> UserName {
    UserName::parse(n).expect("name")
}

fn account(n: &str) -> AccountRecord {
    let hash = hash_password(&Password::new("password1"), 1).expect("hash");
    AccountRecord::new(name(n), hash)
}

#[test]
fn accounts_round_trip_through_the_table() {
    let server = PgTestServer::start().expect("postgres");
    let store = PgAccountStore::new(open(&server, "n1"));
    let mut bob = account("bob");
    bob.quota = Quota {
        bytes: Some(5000),
        files: None,
    };
    store.create(&bob).expect("create bob");
    store.create(&account("amy")).expect("create amy");
    assert!(matches!(
        store.create(&account("bob")),
        Err(AuthError::NameTaken)
    ));

    let loaded = store.load(&name("bob")).expect("load").expect("bob exists");
    assert_eq!(loaded.hash, bob.hash);
    assert_eq!(loaded.created, bob.created);
    assert_eq!(loaded.quota, bob.quota);
    assert!(!loaded.disabled && !loaded.read_only);

    let mut changed = loaded.clone();
    changed.disabled = true;
    changed.read_only = true;
    changed.quota = Quota {
        bytes: None,
        files: Some(u64::MAX),
    };
    store.update(&changed).expect("update");
    let again = store.load(&name("bob")).expect("load").expect("bob");
    assert!(again.disabled && again.read_only);
    assert_eq!(
        again.quota.files,
        Some(i64::MAX as u64),
        "clamped to the column"
    );
    assert_eq!(again.quota.bytes, None);

    let names: Vec<String> = store
        .list()
        .expect("list")
        .into_iter()
        .map(|r| r.name.to_string())
        .collect();
    assert_eq!(names, ["amy", "bob"]);

    assert!(store.delete(&name("bob")).expect("delete"));
    assert!(!store.delete(&name("bob")).expect("second delete"));
    assert!(store.load(&name("bob")).expect("load").is_none());
    match store.update(&changed) {
        Err(AuthError::Io(e)) => assert_eq!(e.kind(), io::ErrorKind::NotFound),
        other => panic!("update of a deleted account: {other:?}"),
    }
}

#[test]
fn two_nodes_registering_one_name_at_once_one_wins() {
    let server = PgTestServer::start().expect("postgres");
    let stores = [
        PgAccountStore::new(open(&server, "n1")),
        PgAccountStore::new(open(&server, "n2")),
    ];
    for round in 0..10 {
        let barrier = Arc::new(Barrier::new(2));
        let n = format!("user{round}");
        let results: Vec<_> = stores
            .iter()
            .cloned()
            .map(|store| {
                let barrier = Arc::clone(&barrier);
                let record = account(&n);
                std::thread::spawn(move || {
                    barrier.wait();
                    store.create(&record)
                })
            })
            .collect::<Vec<_>>()
            .into_iter()
            .map(|t| t.join().expect("thread"))
            .collect();
        let won = results.iter().filter(|r| r.is_ok()).count();
        let taken = results
            .iter()
            .filter(|r| matches!(r, Err(AuthError::NameTaken)))
            .count();
        assert_eq!((won, taken), (1, 1), "round {round}: {results:?}");
    }
    assert_eq!(stores[0].list().expect("list").len(), 10);
}

#[test]
fn invites_redeemed_from_two_nodes_spend_each_use_once() {
    let server = PgTestServer::start().expect("postgres");
    let stores = [
        PgInviteStore::new(open(&server, "n1")),
        PgInviteStore::new(open(&server, "n2")),
    ];
    let code = stores[0].create(3).expect("create").code;
    assert!(valid(&code));
    let barrier = Arc::new(Barrier::new(8));
    let spent = (0..8)
        .map(|i| {
            let store = stores[i % 2].clone();
            let (barrier, code) = (Arc::clone(&barrier), code.clone());
            std::thread::spawn(move || {
                barrier.wait();
                store.redeem(&code)
            })
        })
        .collect::<Vec<_>>()
        .into_iter()
        .map(|t| t.join().expect("thread"))
        .filter(|r| {
            assert!(matches!(r, Ok(()) | Err(InviteError::Invalid)), "{r:?}");
            r.is_ok()
        })
        .count();
    assert_eq!(spent, 3);
    assert_eq!(stores[1].list().expect("list")[0].uses_left, 0);
    stores[1].refund(&code);
    stores[0].redeem(&code).expect("the refunded use");
    for bad in ["", "nope", "../etc/passwd", "ABC"] {
        assert!(
            matches!(stores[0].redeem(bad), Err(InviteError::Invalid)),
            "{bad:?}"
        );
    }
}

/// What a watch reported so far.
type Seen = Arc<Mutex<Vec<AccountChange>>>;

/// Waits up to 20 s for a report matching `want`.
fn wait_for(seen: &Seen, what: &str, want: impl Fn(&AccountChange) -> bool) -> AccountChange {
    let deadline = Instant::now() + Duration::from_secs(20);
    while Instant::now() < deadline {
        if let Some(found) = seen.lock().expect("seen").iter().find(|c| want(c)) {
            return found.clone();
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    panic!("no report of {what}; saw {:?}", seen.lock().expect("seen"));
}

/// Backends that LISTEN on the channel now.
fn listeners(db: &Arc<Database>) -> i64 {
    db.wait(|c| async move {
        Ok(c.query_one(
            "SELECT count(*) FROM pg_stat_activity WHERE query = 'LISTEN ferry_accounts'",
            &[],
        )
        .await?
        .get(0))
    })
    .expect("pg_stat_activity")
}

#[test]
fn a_change_on_one_node_reaches_the_other_and_the_backstop_finds_what_was_missed() {
    let server = PgTestServer::start().expect("postgres");
    let (db1, db2) = (open(&server, "n1"), open(&server, "n2"));
    let store = PgAccountStore::new(Arc::clone(&db1));
    for n in ["amy", "bob", "cy"] {
        store.create(&account(n)).expect("create");
    }
    let seen: Seen = Arc::default();
    let log = Arc::clone(&seen);
    // The period is long: the backstop below is the one that runs on listening again.
    let _watch = AccountWatch::start(Arc::clone(&db2), Duration::from_secs(3600), move |c| {
        log.lock().expect("seen").push(c);
    });
    let deadline = Instant::now() + Duration::from_secs(10);
    while listeners(&db1) == 0 {
        assert!(Instant::now() < deadline, "the watch never listened");
        std::thread::sleep(Duration::from_millis(20));
    }

    assert!(store.delete(&name("amy")).expect("delete"));
    let amy = wait_for(&seen, "amy's deletion", |c| c.name == "amy");
    assert!(amy.gone);
    assert_eq!(amy.noticed, Noticed::Notification);

    let mut bob = store.load(&name("bob")).expect("load").expect("bob");
    bob.hash = hash_password(&Password::new("password2"), 1).expect("hash");
    store.update(&bob).expect("passwd");
    let changed = wait_for(&seen, "bob's new password", |c| c.name == "bob");
    assert!(!changed.gone, "a password change ends nothing");

    // The listener's connection is killed; a change made before it listens again is found
    // by the change log.
    let killed: i64 = db1
        .wait(|c| async move {
            Ok(c.query_one(
                "SELECT count(pg_terminate_backend(pid)) FROM pg_stat_activity \
                 WHERE query = 'LISTEN ferry_accounts'",
                &[],
            )
            .await?
            .get(0))
        })
        .expect("terminate");
    assert_eq!(killed, 1);
    let mut cy = store.load(&name("cy")).expect("load").expect("cy");
    cy.disabled = true;
    store.update(&cy).expect("disable");
    let cy = wait_for(&seen, "cy's disabling", |c| c.name == "cy");
    assert!(cy.gone);
    assert_eq!(cy.noticed, Noticed::Backstop);

    // And it listens again.
    assert!(listeners(&db1) == 1, "listening again");
    assert!(store.delete(&name("bob")).expect("delete"));
    let bob = wait_for(&seen, "bob's deletion", |c| c.name == "bob" && c.gone);
    assert_eq!(bob.noticed, Noticed::Notification);
}

#[test]
fn a_database_that_goes_away_fails_calls_in_time_and_is_used_again() {
    let mut server = PgTestServer::start().expect("postgres");
    let store = PgAccountStore::new(open(&server, "n1"));
    store.create(&account("amy")).expect("create");
    server.stop();
    let started = Instant::now();
    assert!(matches!(store.load(&name("amy")), Err(AuthError::Io(_))));
    assert!(started.elapsed() < QUERY_LIMIT + Duration::from_secs(5));
    server.restart().expect("restart");
    let mut back = None;
    for _ in 0..5 {
        match store.load(&name("amy")) {
            Ok(found) => {
                back = found;
                break;
            }
            Err(e) => eprintln!("not yet: {e}"),
        }
    }
    assert!(
        back.is_some(),
        "amy is read again once the database is back"
    );
}

#[test]
fn a_password_change_read_before_a_disable_does_not_enable_the_account_again() {
    let server = PgTestServer::start().expect("postgres");
    let node = PgAccountStore::new(open(&server, "n1"));
    let tool = PgAccountStore::new(open(&server, "n2"));
    node.create(&account("cy")).expect("create");
    // Node n1's SITE PASSWD (or the re-hash at login) has read the record and is hashing...
    let mut read = node.load(&name("cy")).expect("load").expect("there");
    // ... while `ferryd user disable cy` runs.
    let mut disabled = tool.load(&name("cy")).expect("load").expect("there");
    disabled.disabled = true;
    tool.update(&disabled).expect("disable");
    read.hash = hash_password(&Password::new("password2"), 1).expect("hash");
    let _ = node.update(&read);
    let now = tool.load(&name("cy")).expect("load").expect("there");
    assert!(
        now.disabled,
        "the disable was overwritten by the password change"
    );
}
