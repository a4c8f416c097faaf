use std::sync::Arc;

use super::testing::PgTestServer;
use super::*;
use crate::config::Secret;

fn node(server: &PgTestServer, name: &str) -> Config {
    let mut config = Config {
        node_name: Some(name.into()),
        ..Config::default()
    };
    server.configure(&mut config);
    config
}

#[tokio::test]
async fn nodes_starting_together_migrate_once_and_names_are_their_own() {
    let server = PgTestServer::start().expect("postgres");
    let starts: Vec<_> = (0..4)
        .map(|i| {
            let config = node(&server, &format!("n{i}"));
            tokio::spawn(async move { Database::open(&config).await })
        })
        .collect();
    let mut nodes = Vec::new();
    for start in starts {
        nodes.push(start.await.expect("task").expect("open"));
    }
    let db = Arc::clone(&nodes[0]);
    let (versions, names) = db
        .with(|c| async move {
            let versions: Vec<i32> = c
                .query(
                    "SELECT version FROM schema_migrations ORDER BY version",
                    &[],
                )
                .await?
                .iter()
                .map(|r| r.get(0))
                .collect();
            let names: Vec<String> = c
                .query("SELECT name FROM nodes ORDER BY name", &[])
                .await?
                .iter()
                .map(|r| r.get(0))
                .collect();
            Ok((versions, names))
        })
        .await
        .expect("read");
    let all: Vec<i32> = migrate::MIGRATIONS.iter().map(|m| m.0).collect();
    assert_eq!(versions, all, "each migration applied once");
    assert_eq!(names, ["n0", "n1", "n2", "n3"]);

    match Database::open(&node(&server, "n1")).await {
        Err(DbError::Refused(why)) => assert!(why.contains("another node named n1"), "{why}"),
        other => panic!("a second live n1 was let in: {other:?}"),
    }
}

#[tokio::test]
async fn the_password_comes_from_the_file_and_a_wrong_one_is_refused() {
    let server = PgTestServer::start().expect("postgres");
    let dir = tempfile::tempdir().expect("dir");
    let file = dir.path().join("pw");
    std::fs::write(&file, format!("{}\n", testing::PASSWORD)).expect("write");
    let mut config = node(&server, "pw");
    config.database_url = Some(Secret(server.url_without_password()));
    config.database_password_file = Some(file.clone());
    Database::open(&config).await.expect("the file's password");

    std::fs::write(&file, "wrong\n").expect("write");
    config.node_name = Some("pw2".into());
    match Database::open(&config).await {
        Err(DbError::Unavailable(why)) => assert!(why.contains("password"), "{why}"),
        other => panic!("a wrong password was let in: {other:?}"),
    }
}

#[tokio::test]
async fn a_database_that_goes_away_fails_calls_and_is_used_again_when_back() {
    let mut server = PgTestServer::start().expect("postgres");
    let db = Database::open(&node(&server, "n")).await.expect("open");
    let ping = |db: Arc<Database>| async move {
        db.with(|c| async move { Ok(c.query_one("SELECT 1", &[]).await?.get::<_, i32>(0)) })
            .await
    };
    assert_eq!(ping(Arc::clone(&db)).await.expect("up"), 1);
    server.stop();
    assert!(matches!(
        ping(Arc::clone(&db)).await,
        Err(DbError::Unavailable(_))
    ));
    server.restart().expect("restart");
    // The pool drops the dead connections as it meets them: a few calls at most.
    let mut back = None;
    for _ in 0..5 {
        if let Ok(v) = ping(Arc::clone(&db)).await {
            back = Some(v);
            break;
        }
    }
    assert_eq!(
        back,
        Some(1),
        "the node reconnects once the database is back"
    );
}
