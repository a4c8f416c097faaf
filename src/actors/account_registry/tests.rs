//! Tests of passwords, the JSON store and the registry actor over temp dirs.

use std::fs;
use std::path::Path;
use std::sync::Barrier;

use super::*;
use crate::accounts::invites::JsonInviteStore;
use crate::config::Config;
use crate::state::LocalState;

const ITER: u32 = 1000;

fn pw(s: &str) -> Password {
    Password::new(s)
}

#[test]
fn password_rule() {
    assert!(check_password(&pw("12345678"), 8).is_ok());
    assert!(check_password(&pw("äöüäöüäö"), 8).is_ok());
    assert!(check_password(&pw("1234567"), 8).is_err());
    assert!(check_password(&pw("1234\n5678"), 8).is_err());
    assert!(check_password(&pw("1234\u{7f}5678"), 8).is_err());
}

#[test]
fn hash_round_trip() {
    let phc = hash_password(&pw("correct horse"), ITER).expect("hash");
    assert!(phc.starts_with("$pbkdf2-sha256$i=1000,l=32$"), "{phc}");
    assert!(verify_password(&phc, &pw("correct horse")));
    assert!(!verify_password(&phc, &pw("correct horsE")));
    assert!(!verify_password("not a phc", &pw("correct horse")));
    // Salts are per hash.
    assert_ne!(
        phc,
        hash_password(&pw("correct horse"), ITER).expect("hash")
    );
}

#[test]
fn other_iteration_counts_still_verify() {
    let phc = hash_password(&pw("s3cret-pass"), 2345).expect("hash");
    assert!(phc.contains("i=2345"));
    assert!(verify_password(&phc, &pw("s3cret-pass")));
}

fn record(name: &str) -> AccountRecord {
    AccountRecord::new(
        UserName::parse(name).expect("valid"),
        hash_password(&pw("password1"), ITER).expect("hash"),
    )
}

fn file_names(dir: &Path) -> Vec<String> {
    let mut names: Vec<String> = fs::read_dir(dir)
        .expect("read_dir")
        .map(|e| e.expect("entry").file_name().to_string_lossy().into_owned())
        .collect();
    names.sort();
    names
}

#[test]
fn json_store_crud() {
    use std::os::unix::fs::PermissionsExt;
    let dir = tempfile::tempdir().expect("tempdir");
    let store = JsonAccountStore::new(dir.path().join("accounts")).expect("store");
    let bob = record("bob");
    let alice = record("alice");
    store.create(&bob).expect("create bob");
    store.create(&alice).expect("create alice");
    assert!(matches!(store.create(&bob), Err(AuthError::NameTaken)));

    let loaded = store.load(&alice.name).expect("load").expect("present");
    assert_eq!(loaded.hash, alice.hash);
    assert!(!loaded.disabled);
    let mode = fs::metadata(dir.path().join("accounts/alice.json"))
        .expect("meta")
        .permissions()
        .mode();
    assert_eq!(mode & 0o777, 0o600);

    let mut changed = loaded.clone();
    changed.disabled = true;
    store.update(&changed).expect("update");
    assert!(
        store
            .load(&alice.name)
            .expect("load")
            .expect("present")
            .disabled
    );

    let names: Vec<String> = store
        .list()
        .expect("list")
        .into_iter()
        .map(|r| r.name.to_string())
        .collect();
    assert_eq!(names, ["alice", "bob"]);

    assert!(store.delete(&bob.name).expect("delete"));
    assert!(!store.delete(&bob.name).expect("delete again"));
    assert!(store.load(&bob.name).expect("load").is_none());
    assert!(store.update(&bob).is_err());
    assert_eq!(file_names(&dir.path().join("accounts")), ["alice.json"]);
}

#[test]
fn corrupt_record_is_reported() {
    let dir = tempfile::tempdir().expect("tempdir");
    let store = JsonAccountStore::new(dir.path().to_owned()).expect("store");
    fs::write(dir.path().join("eve.json"), "{not json").expect("write");
    let eve = UserName::parse("eve").expect("valid");
    let err = store.load(&eve).expect_err("corrupt");
    assert!(matches!(err, AuthError::Corrupt(_)));
}

#[test]
fn concurrent_create_has_one_winner() {
    let dir = tempfile::tempdir().expect("tempdir");
    let store = Arc::new(JsonAccountStore::new(dir.path().to_owned()).expect("store"));
    let barrier = Arc::new(Barrier::new(8));
    let threads: Vec<_> = (0..8)
        .map(|_| {
            let store = Arc::clone(&store);
            let barrier = Arc::clone(&barrier);
            let rec = record("race");
            std::thread::spawn(move || {
                barrier.wait();
                store.create(&rec)
            })
        })
        .collect();
    let results: Vec<_> = threads
        .into_iter()
        .map(|t| t.join().expect("thread"))
        .collect();
    assert_eq!(results.iter().filter(|r| r.is_ok()).count(), 1);
    assert!(
        results
            .iter()
            .all(|r| matches!(r, Ok(()) | Err(AuthError::NameTaken)))
    );
    assert_eq!(file_names(dir.path()), ["race.json"]);
}

async fn registry(dir: &Path, registration_open: bool) -> Addr<AccountRegistry> {
    let store = Arc::new(JsonAccountStore::new(dir.to_owned()).expect("store"));
    let settings = RegistrySettings {
        iterations: ITER,
        min_password_length: 8,
        registration: if registration_open {
            Registration::Open
        } else {
            Registration::Closed
        },
        default_quota: Quota::default(),
        max_registrations_per_ip_per_hour: 100,
        invites: None,
        remains: Remains::new(dir.join("home"), dir.join("usage")),
        state: LocalState::shared(&Config::default()),
    };
    AccountRegistry::start(store, settings, 2).await
}

fn register(name: &str, password: &str) -> Register {
    Register {
        name: name.into(),
        password: pw(password),
        code: None,
        peer: IpAddr::from([127, 0, 0, 1]),
    }
}

fn authenticate(name: &str, password: &str) -> Authenticate {
    Authenticate {
        name: name.into(),
        password: pw(password),
    }
}

#[actix::test]
async fn register_then_authenticate() {
    let dir = tempfile::tempdir().expect("tempdir");
    let reg = registry(dir.path(), true).await;
    let account = reg
        .send(register("alice", "password1"))
        .await
        .expect("mailbox")
        .expect("registered");
    assert_eq!(account.name.as_str(), "alice");

    let again = reg
        .send(register("alice", "password2"))
        .await
        .expect("mailbox");
    assert!(matches!(again, Err(AuthError::NameTaken)));
    let weak = reg.send(register("bob", "short")).await.expect("mailbox");
    assert!(matches!(weak, Err(AuthError::WeakPassword)));
    let bad = reg
        .send(register("Bob", "password1"))
        .await
        .expect("mailbox");
    assert!(matches!(bad, Err(AuthError::BadName)));

    let ok = reg
        .send(authenticate("alice", "password1"))
        .await
        .expect("mailbox");
    assert_eq!(ok.expect("login").name, account.name);
    for (name, password) in [
        ("alice", "password2"),
        ("nobody", "password1"),
        ("../etc/passwd", "password1"),
    ] {
        let err = reg
            .send(authenticate(name, password))
            .await
            .expect("mailbox")
            .expect_err("must fail");
        assert!(matches!(err, AuthError::WrongCredentials), "{name}: {err}");
    }
}

#[actix::test]
async fn closed_registration_and_disabled_accounts() {
    let dir = tempfile::tempdir().expect("tempdir");
    let store = JsonAccountStore::new(dir.path().to_owned()).expect("store");
    let mut carol = record("carol");
    carol.disabled = true;
    store.create(&carol).expect("create");

    let reg = registry(dir.path(), false).await;
    let closed = reg
        .send(register("dave", "password1"))
        .await
        .expect("mailbox")
        .expect_err("closed");
    assert!(matches!(closed, AuthError::RegistrationClosed));

    let disabled = reg
        .send(authenticate("carol", "password1"))
        .await
        .expect("mailbox");
    assert!(matches!(disabled, Err(AuthError::WrongCredentials)));
}

#[actix::test]
async fn change_password() {
    let dir = tempfile::tempdir().expect("tempdir");
    let reg = registry(dir.path(), true).await;
    let alice = reg
        .send(register("alice", "password1"))
        .await
        .expect("mailbox")
        .expect("registered");
    let change = |old: &str, new: &str| ChangePassword {
        name: alice.name.clone(),
        old: pw(old),
        new: pw(new),
    };

    let wrong_old = reg
        .send(change("password9", "password2"))
        .await
        .expect("mailbox");
    assert!(matches!(wrong_old, Err(AuthError::WrongCredentials)));
    let weak = reg
        .send(change("password1", "short"))
        .await
        .expect("mailbox");
    assert!(matches!(weak, Err(AuthError::WeakPassword)));

    reg.send(change("password1", "password2"))
        .await
        .expect("mailbox")
        .expect("changed");
    let old = reg
        .send(authenticate("alice", "password1"))
        .await
        .expect("mailbox");
    assert!(matches!(old, Err(AuthError::WrongCredentials)));
    let new = reg
        .send(authenticate("alice", "password2"))
        .await
        .expect("mailbox");
    assert!(new.is_ok());

    let ghost = ChangePassword {
        name: UserName::parse("ghost").expect("valid"),
        old: pw("password1"),
        new: pw("password2"),
    };
    let ghost = reg.send(ghost).await.expect("mailbox");
    assert!(matches!(ghost, Err(AuthError::WrongCredentials)));
}

#[actix::test]
async fn remains_of_a_deleted_account_keep_its_name() {
    let dir = tempfile::tempdir().expect("tempdir");
    let reg = registry(dir.path(), true).await;
    fs::create_dir_all(dir.path().join("home/carol")).expect("home");
    fs::create_dir_all(dir.path().join("usage")).expect("usage");
    fs::write(dir.path().join("usage/dave.json"), "{}").expect("ledger");
    for name in ["carol", "dave"] {
        let taken = reg
            .send(register(name, "password1"))
            .await
            .expect("mailbox");
        assert!(matches!(taken, Err(AuthError::NameTaken)), "{name}");
    }
    reg.send(register("erin", "password1"))
        .await
        .expect("mailbox")
        .expect("a free name");
}

#[actix::test]
async fn a_login_rehashes_with_the_setting_and_failures_cost_the_most_rounds() {
    let dir = tempfile::tempdir().expect("tempdir");
    let store = JsonAccountStore::new(dir.path().to_owned()).expect("store");
    let mut old = record("olga");
    old.hash = hash_password(&pw("password1"), 2 * ITER).expect("hash");
    store.create(&old).expect("create");
    let reg = registry(dir.path(), true).await;
    let wrong = reg
        .send(authenticate("nobody", "password1"))
        .await
        .expect("mailbox");
    assert!(matches!(wrong, Err(AuthError::WrongCredentials)));
    reg.send(authenticate("olga", "password1"))
        .await
        .expect("mailbox")
        .expect("login");
    let stored = store
        .load(&UserName::parse("olga").expect("valid"))
        .expect("load")
        .expect("present");
    assert_eq!(hash_rounds(&stored.hash), Some(ITER));
    assert!(verify_password(&stored.hash, &pw("password1")));
}

#[actix::test]
async fn invite_registration_spends_codes() {
    let dir = tempfile::tempdir().expect("tempdir");
    let store = Arc::new(JsonAccountStore::new(dir.path().join("accounts")).expect("store"));
    let invites: Arc<dyn InviteStore> =
        Arc::new(JsonInviteStore::new(dir.path().join("invites")).expect("invites"));
    let code = invites.create(1).expect("code").code;
    let settings = RegistrySettings {
        iterations: ITER,
        min_password_length: 8,
        registration: Registration::Invite,
        default_quota: Quota {
            bytes: Some(1000),
            files: None,
        },
        max_registrations_per_ip_per_hour: 100,
        invites: Some(invites),
        remains: Remains::new(dir.path().join("home"), dir.path().join("usage")),
        state: LocalState::shared(&Config::default()),
    };
    let reg = AccountRegistry::start(store.clone(), settings, 1).await;
    let with = |name: &str, code: Option<&str>| Register {
        code: code.map(str::to_owned),
        ..register(name, "password1")
    };
    let none = reg.send(with("amy", None)).await.expect("mailbox");
    assert!(matches!(none, Err(AuthError::InviteRequired)));
    let bad = reg.send(with("amy", Some("nope"))).await.expect("mailbox");
    assert!(matches!(bad, Err(AuthError::BadInvite)));
    store.create(&record("taken")).expect("create");
    let bad = reg
        .send(with("taken", Some("nope")))
        .await
        .expect("mailbox");
    assert!(
        matches!(bad, Err(AuthError::BadInvite)),
        "a bad code tells nothing about the name"
    );
    let taken = reg.send(with("taken", Some(&code))).await.expect("mailbox");
    assert!(matches!(taken, Err(AuthError::NameTaken)));
    reg.send(with("amy", Some(&code)))
        .await
        .expect("mailbox")
        .expect("registered");
    let used = reg.send(with("ben", Some(&code))).await.expect("mailbox");
    assert!(matches!(used, Err(AuthError::BadInvite)));
    let amy = store
        .load(&UserName::parse("amy").expect("valid"))
        .expect("load")
        .expect("present");
    assert_eq!(amy.quota.bytes, Some(1000));
}

#[actix::test]
async fn in_database_mode_remains_still_keep_a_name_and_a_registration_lands_in_the_table() {
    use crate::accounts::PgAccountStore;
    use crate::db::{Database, testing::PgTestServer};
    let server = PgTestServer::start().expect("postgres");
    let mut config = Config {
        node_name: Some("n1".into()),
        ..Config::default()
    };
    server.configure(&mut config);
    let db = Database::open(&config).await.expect("open");
    let dir = tempfile::tempdir().expect("tempdir");
    fs::create_dir_all(dir.path().join("home/carol")).expect("carol's home remains");
    let settings = RegistrySettings {
        iterations: ITER,
        min_password_length: 8,
        registration: Registration::Open,
        default_quota: Quota::default(),
        max_registrations_per_ip_per_hour: 100,
        invites: None,
        remains: Remains::new(dir.path().join("home"), dir.path().join("usage")),
        state: LocalState::shared(&Config::default()),
    };
    let store: Arc<dyn AccountStore> = Arc::new(PgAccountStore::new(Arc::clone(&db)));
    let reg = AccountRegistry::start(Arc::clone(&store), settings, 2).await;
    let carol = reg
        .send(register("carol", "password1"))
        .await
        .expect("mailbox");
    assert!(matches!(carol, Err(AuthError::NameTaken)), "{carol:?}");
    reg.send(register("erin", "password1"))
        .await
        .expect("mailbox")
        .expect("a free name");
    let names: Vec<String> = tokio::task::spawn_blocking(move || store.list())
        .await
        .expect("thread")
        .expect("list")
        .into_iter()
        .map(|r| r.name.to_string())
        .collect();
    assert_eq!(names, ["erin"]);
    reg.send(authenticate("erin", "password1"))
        .await
        .expect("mailbox")
        .expect("erin logs in from the table");
}
