use super::*;
use crate::actors::account_registry::JsonAccountStore;
use std::io::Write;
use std::net::SocketAddr;

const ITER: u32 = 1000;

/// What [`log_table`] writes.
fn shown(config: &Config, filter: &LogFilter) -> Result<String, AdminError> {
    let mut out = Vec::new();
    log_table(config, filter, &mut out)?;
    Ok(String::from_utf8(out).expect("a table is UTF-8"))
}

fn config(dir: &std::path::Path) -> Config {
    Config {
        data_dir: dir.to_owned(),
        ..Config::default()
    }
}

#[test]
fn user_add_list_passwd_del() {
    let dir = tempfile::tempdir().expect("tempdir");
    let cfg = config(dir.path());
    let pw = Password::new("password1");
    user_add(&cfg, "alice", &pw, ITER, false, false).expect("add");
    assert!(cfg.homes_dir().join("alice").is_dir());
    assert!(matches!(
        user_add(&cfg, "alice", &pw, ITER, false, false),
        Err(AdminError::Auth(AuthError::NameTaken))
    ));
    assert!(matches!(
        user_add(&cfg, "Bob", &pw, ITER, false, false),
        Err(AdminError::Auth(AuthError::BadName))
    ));
    assert!(matches!(
        user_add(&cfg, "bob", &Password::new("short"), ITER, false, false),
        Err(AdminError::Auth(AuthError::WeakPassword))
    ));

    let list = user_list(&cfg).expect("list");
    assert!(list.contains("alice"), "{list}");
    assert!(list.contains("created"), "{list}");

    user_passwd(&cfg, "alice", &Password::new("password2"), ITER).expect("passwd");
    let record = JsonAccountStore::new(cfg.accounts_dir())
        .expect("store")
        .load(&UserName::parse("alice").expect("valid"))
        .expect("load")
        .expect("present");
    assert!(crate::actors::account_registry::verify_password(
        &record.hash,
        &Password::new("password2")
    ));
    assert!(matches!(
        user_passwd(&cfg, "nobody", &pw, ITER),
        Err(AdminError::NoSuchUser(_))
    ));

    let deleted = user_del(&cfg, "alice", false).expect("del");
    assert!(deleted.account && deleted.removed.is_empty());
    assert_eq!(deleted.kept, [cfg.homes_dir().join("alice")]);
    assert!(matches!(
        user_del(&cfg, "alice", false),
        Err(AdminError::NoSuchUser(_))
    ));
    assert!(cfg.homes_dir().join("alice").is_dir(), "home is kept");
    assert!(!user_list(&cfg).expect("list").contains("alice"));
}

#[test]
fn a_deleted_accounts_home_is_adopted_only_explicitly() {
    let dir = tempfile::tempdir().expect("tempdir");
    let cfg = config(dir.path());
    let pw = Password::new("password1");
    user_add(&cfg, "carol", &pw, ITER, false, false).expect("add");
    std::fs::write(cfg.homes_dir().join("carol/secret"), b"carol's").expect("write");
    let accounts = wiring::accounts(&cfg, None).expect("accounts");
    ledger(&cfg, accounts, None)
        .expect("ledger")
        .recount("carol")
        .expect("recount");
    user_del(&cfg, "carol", false).expect("del");

    let err = user_add(&cfg, "carol", &pw, ITER, false, false).expect_err("refused");
    let text = err.to_string();
    assert!(matches!(err, AdminError::Remains { .. }), "{text}");
    assert!(
        text.contains("--adopt-home") && text.contains("--purge"),
        "{text}"
    );
    assert!(!user_list(&cfg).expect("list").contains("carol"));

    user_add(&cfg, "carol", &pw, ITER, false, true).expect("adopt");
    assert!(cfg.homes_dir().join("carol/secret").is_file(), "adopted");
    let shown = user_quota(&cfg, "carol", QuotaChange::default(), false).expect("show");
    assert!(shown.contains("Bytes used: 7 of"), "{shown}");

    let purged = user_del(&cfg, "carol", true).expect("purge");
    assert!(purged.account);
    assert_eq!(
        purged.removed,
        [
            cfg.homes_dir().join("carol"),
            cfg.usage_dir().join("carol.json")
        ]
    );
    assert!(!cfg.homes_dir().join("carol").exists());
    assert!(matches!(
        user_del(&cfg, "carol", true),
        Err(AdminError::NoSuchUser(_))
    ));
    user_add(&cfg, "carol", &pw, ITER, false, false).expect("a fresh carol");
    let fresh = std::fs::read_dir(cfg.homes_dir().join("carol"))
        .expect("home")
        .count();
    assert_eq!(fresh, 0, "an empty home");
}

#[test]
fn a_deletion_says_what_went_and_what_stays() {
    let dir = tempfile::tempdir().expect("tempdir");
    let cfg = config(dir.path());
    let pw = Password::new("password1");
    user_add(&cfg, "erin", &pw, ITER, false, false).expect("add");
    let home = cfg.homes_dir().join("erin");
    let kept = user_del(&cfg, "erin", false).expect("del").summary("erin");
    assert_eq!(
        kept,
        format!(
            "deleted erin; kept {} (the name stays reserved: `ferryd user del erin --purge` removes them, `ferryd user add erin --adopt-home` reuses them)",
            home.display()
        )
    );
    let purged = user_del(&cfg, "erin", true).expect("purge").summary("erin");
    assert_eq!(
        purged,
        format!("no account erin; removed {}", home.display())
    );
    user_add(&cfg, "erin", &pw, ITER, false, false).expect("add again");
    std::fs::remove_dir(&home).expect("empty home");
    let bare = user_del(&cfg, "erin", false).expect("del").summary("erin");
    assert_eq!(bare, "deleted erin");
}

#[test]
fn purge_after_a_plain_delete_removes_the_remains() {
    let dir = tempfile::tempdir().expect("tempdir");
    let cfg = config(dir.path());
    user_add(
        &cfg,
        "dave",
        &Password::new("password1"),
        ITER,
        false,
        false,
    )
    .expect("add");
    user_del(&cfg, "dave", false).expect("del");
    let purged = user_del(&cfg, "dave", true).expect("purge the remains");
    assert!(!purged.account);
    assert_eq!(purged.removed, [cfg.homes_dir().join("dave")]);
}

#[test]
fn log_table_filters_by_user_event_and_tail() {
    let dir = tempfile::tempdir().expect("tempdir");
    let cfg = config(dir.path());
    std::fs::create_dir_all(cfg.log_dir()).expect("mkdir");
    let peer = SocketAddr::from(([127, 0, 0, 1], 40000));
    let mut file = File::create(cfg.log_dir().join("audit.jsonl")).expect("create");
    for n in 0..5u64 {
        let event = Event::now(n, peer, EventKind::Command)
            .with_user(if n % 2 == 0 { "alice" } else { "bob" })
            .with_command(format!("CMD{n}"));
        writeln!(file, "{}", serde_json::to_string(&event).expect("json")).expect("write");
    }
    writeln!(file, "not json").expect("write");
    let login = Event::now(9, peer, EventKind::LoginFailed).with_user("alice");
    writeln!(file, "{}", serde_json::to_string(&login).expect("json")).expect("write");
    drop(file);

    let all = shown(&cfg, &LogFilter::default()).expect("table");
    for n in 0..5 {
        assert!(all.contains(&format!("CMD{n}")), "{all}");
    }
    assert!(all.contains("1 line(s)"), "{all}");

    let alice = LogFilter {
        user: Some("alice".into()),
        ..LogFilter::default()
    };
    let table = shown(&cfg, &alice).expect("table");
    assert!(table.contains("CMD0") && table.contains("CMD4") && table.contains("login_failed"));
    assert!(
        !table.contains("CMD1") && !table.contains("CMD3"),
        "{table}"
    );

    let tail = LogFilter {
        user: Some("alice".into()),
        event: Some(EventKind::Command),
        tail: Some(2),
        ..LogFilter::default()
    };
    let table = shown(&cfg, &tail).expect("table");
    assert!(table.contains("CMD2") && table.contains("CMD4"), "{table}");
    let elsewhere = LogFilter {
        node: Some("n9".into()),
        ..LogFilter::default()
    };
    let table = shown(&cfg, &elsewhere).expect("table");
    assert!(!table.contains("CMD"), "no events of node n9: {table}");
    assert!(
        !table.contains("CMD0") && !table.contains("login_failed"),
        "{table}"
    );
}

#[test]
fn log_table_reads_the_rotated_files_oldest_first() {
    let dir = tempfile::tempdir().expect("tempdir");
    let cfg = config(dir.path());
    std::fs::create_dir_all(cfg.log_dir()).expect("mkdir");
    let peer = SocketAddr::from(([127, 0, 0, 1], 40000));
    for (name, cmd) in [
        ("audit.jsonl.2", "OLDEST"),
        ("audit.jsonl.1", "MIDDLE"),
        ("audit.jsonl", "NEWEST"),
    ] {
        let event = Event::now(1, peer, EventKind::Command).with_command(cmd);
        let line = serde_json::to_string(&event).expect("json") + "\n";
        std::fs::write(cfg.log_dir().join(name), line).expect("write");
    }
    let all = shown(&cfg, &LogFilter::default()).expect("table");
    let at = |what: &str| all.find(what).unwrap_or_else(|| panic!("{what}: {all}"));
    assert!(
        at("OLDEST") < at("MIDDLE") && at("MIDDLE") < at("NEWEST"),
        "{all}"
    );
    let tail = LogFilter {
        tail: Some(2),
        ..LogFilter::default()
    };
    let table = shown(&cfg, &tail).expect("table");
    assert!(
        !table.contains("OLDEST") && table.contains("MIDDLE"),
        "{table}"
    );
}

#[test]
fn missing_log_is_an_empty_table() {
    let dir = tempfile::tempdir().expect("tempdir");
    let table = shown(&config(dir.path()), &LogFilter::default()).expect("table");
    assert!(table.contains("session"));
}

#[test]
fn user_quota_sets_shows_and_recounts() {
    let dir = tempfile::tempdir().expect("tempdir");
    let mut cfg = config(dir.path());
    cfg.default_quota_files = Some(10);
    user_add(
        &cfg,
        "alice",
        &Password::new("password1"),
        ITER,
        false,
        false,
    )
    .expect("add");
    let shown = user_quota(&cfg, "alice", QuotaChange::default(), false).expect("show");
    assert!(shown.contains("Bytes used: 0 of none"), "{shown}");
    assert!(shown.contains("Files used: 0 of 10"), "{shown}");
    let change = QuotaChange {
        bytes: Some(Some(500)),
        files: Some(None),
    };
    let set = user_quota(&cfg, "alice", change, false).expect("set");
    assert!(set.contains("Bytes used: 0 of 500"), "{set}");
    assert!(set.contains("Files used: 0 of none"), "{set}");
    std::fs::write(cfg.homes_dir().join("alice/f"), b"1234").expect("write");
    let stale = user_quota(&cfg, "alice", QuotaChange::default(), false).expect("show");
    assert!(stale.contains("Bytes used: 0 of 500"), "{stale}");
    let counted = user_quota(&cfg, "alice", QuotaChange::default(), true).expect("recount");
    assert!(counted.contains("Bytes used: 4 of 500"), "{counted}");
    assert!(counted.contains("Files used: 1 of none"), "{counted}");
    assert!(matches!(
        user_quota(&cfg, "nobody", QuotaChange::default(), false),
        Err(AdminError::NoSuchUser(_))
    ));

    let invite = invite_create(&cfg, 3).expect("invite");
    let table = invite_list(&cfg).expect("list");
    assert!(table.contains(&invite.code), "{table}");
}

/// `ferryd log --database-url` where it may only read: no migrations, and a table of
/// several pages comes out whole and in order.
#[tokio::test]
async fn log_table_reads_a_read_only_database_page_by_page() {
    use crate::audit::AuditSink;
    use crate::audit::table::{PAGE, TableSink};
    use crate::db::testing::PgTestServer;

    let server = PgTestServer::start().expect("postgres");
    let mut node = Config {
        node_name: Some("n1".into()),
        ..Config::default()
    };
    server.configure(&mut node);
    let db = Database::open(&node).await.expect("open");
    let mut sink = TableSink::start(Arc::clone(&db));
    let peer = SocketAddr::from(([127, 0, 0, 1], 40000));
    let total = 2 * PAGE as u64 + 7;
    let events: Vec<Event> = (0..total)
        .map(|n| {
            let mut event = Event::now(n, peer, EventKind::Command)
                .with_user("alice")
                .with_command(format!("CMD{n}."));
            event.node = Some("n1".into());
            event
        })
        .collect();
    sink.write(&events).expect("write");
    sink.flush().expect("flush");
    assert_eq!(sink.backlog(), 0);
    // New connections (the command's) may only read: no DDL, so no migrations.
    db.with(|c| async move {
        c.batch_execute("ALTER DATABASE ferry SET default_transaction_read_only = on")
            .await?;
        Ok(())
    })
    .await
    .expect("read-only");

    let dir = tempfile::tempdir().expect("tempdir");
    let mut cfg = config(dir.path());
    server.configure(&mut cfg);
    let all = tokio::task::spawn_blocking(move || shown(&cfg, &LogFilter::default()))
        .await
        .expect("join")
        .expect("read where it may only read");
    let mut at = 0;
    for n in 0..total {
        let found = all[at..]
            .find(&format!(" CMD{n}. "))
            .unwrap_or_else(|| panic!("CMD{n} missing or out of order"));
        at += found;
    }
    assert!(!all.contains("skipped"), "{all}");
}

#[test]
fn log_table_says_plainly_when_the_database_has_no_audit_table() {
    let server = crate::db::testing::PgTestServer::start().expect("postgres");
    let dir = tempfile::tempdir().expect("tempdir");
    let mut cfg = config(dir.path());
    server.configure(&mut cfg);
    for tail in [None, Some(5)] {
        let filter = LogFilter {
            tail,
            ..LogFilter::default()
        };
        let err = shown(&cfg, &filter).expect_err("no table");
        assert_eq!(
            err.to_string(),
            "the database has no audit_log table; start a ferryd node on it first"
        );
    }
}

/// With a cluster's database the usage is a row: `user quota --recount` writes it,
/// `--adopt-home` recounts into it, a deleted account's row keeps the name reserved, and
/// `user del --purge` removes it (a new account of the name never inherits the old usage).
#[test]
fn quota_commands_use_the_usage_rows_of_the_database() {
    let server = crate::db::testing::PgTestServer::start().expect("postgres");
    let dir = tempfile::tempdir().expect("tempdir");
    let mut cfg = config(dir.path());
    server.configure(&mut cfg);
    let row = |cfg: &Config| -> Option<(i64, i64)> {
        let db = wiring::tool_database(cfg).expect("db").expect("configured");
        db.wait(|client| async move {
            let row = client
                .query_opt(
                    "SELECT bytes, files FROM quota_usage WHERE user_name = 'carol'",
                    &[],
                )
                .await?;
            Ok(row.map(|row| (row.get(0), row.get(1))))
        })
        .expect("query")
    };
    let pw = Password::new("password1");
    user_add(&cfg, "carol", &pw, ITER, false, false).expect("add");
    std::fs::write(cfg.homes_dir().join("carol/secret"), b"carol's").expect("write");
    let shown = user_quota(&cfg, "carol", QuotaChange::default(), true).expect("recount");
    assert!(shown.contains("Bytes used: 7"), "{shown}");
    assert_eq!(row(&cfg), Some((7, 1)), "the recount is in the database");
    assert!(
        !cfg.usage_dir().join("carol.json").exists(),
        "no ledger file beside it"
    );

    let kept = user_del(&cfg, "carol", false).expect("del");
    let usage_row = std::path::PathBuf::from("postgres:quota_usage/carol");
    assert!(kept.kept.contains(&usage_row), "{kept:?}");
    std::fs::remove_dir_all(cfg.homes_dir().join("carol")).expect("rm home");
    let err = user_add(&cfg, "carol", &pw, ITER, false, false).expect_err("refused");
    assert!(
        matches!(&err, AdminError::Remains { paths, .. } if paths == std::slice::from_ref(&usage_row)),
        "the row alone keeps the name: {err}"
    );

    user_add(&cfg, "carol", &pw, ITER, false, true).expect("adopt");
    assert_eq!(row(&cfg), Some((0, 0)), "adopted: recounted from the home");
    user_del(&cfg, "carol", false).expect("del");
    let purged = user_del(&cfg, "carol", true).expect("purge");
    assert!(purged.removed.contains(&usage_row), "{purged:?}");
    assert_eq!(row(&cfg), None, "the row is gone");
    user_add(&cfg, "carol", &pw, ITER, false, false).expect("a fresh carol");
}
