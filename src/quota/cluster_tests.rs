//! The usage ledgers of two nodes of one cluster (each its own `Database::open`, node name
//! and shared state) over one PostgreSQL server and one directory of homes.

use std::sync::Arc;
use std::time::Duration;

use super::{Charge, QuotaError, QuotaLedger};
use crate::config::Quota;
use crate::db::Database;
use crate::db::testing::PgTestServer;
use crate::state::postgres::tests::{eventually, node};
use crate::state::{GRANT, PgState, Reserved, SharedState};

const ALICE: &str = "alice";

/// A node's usage ledger over the shared homes in `dir`, its usage in the database.
fn ledger_of(
    dir: &tempfile::TempDir,
    db: &Arc<Database>,
    state: &PgState,
    limit: u64,
) -> Arc<QuotaLedger> {
    let limits = move |_: &str| Quota {
        bytes: Some(limit),
        files: None,
    };
    let ledger = QuotaLedger::new(
        dir.path().join(format!("usage-{}", db.node())),
        dir.path().join("home"),
        Arc::new(limits),
    )
    .expect("ledger")
    .with_shared_state(Arc::new(state.clone()))
    .with_database(Arc::clone(db));
    Arc::new(ledger)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn uploads_of_one_user_on_two_nodes_share_one_usage_and_limit() {
    let server = PgTestServer::start().expect("postgres");
    let (db_a, a) = node(&server, "a").await;
    let (db_b, b) = node(&server, "b").await;
    let dir = tempfile::tempdir().expect("tempdir");
    std::fs::create_dir_all(dir.path().join("home/alice")).expect("home");
    let limit = 3 * GRANT + 777;
    let ledgers = [
        ledger_of(&dir, &db_a, &a, limit),
        ledger_of(&dir, &db_b, &b, limit),
    ];
    let chunk = 64 * 1024;
    let charges: Vec<(Charge, u64)> = std::thread::scope(|scope| {
        let uploads: Vec<_> = ledgers
            .iter()
            .map(|ledger| {
                scope.spawn(move || {
                    let mut charge = ledger.charge(ALICE, true, None).expect("charge");
                    // Bounded: the limit holds fewer chunks than this.
                    for n in 0..10_000 {
                        match charge.add(chunk) {
                            Ok(()) => {}
                            Err(QuotaError::Exceeded) => return (charge, n * chunk),
                            Err(e) => panic!("ledger: {e}"),
                        }
                    }
                    panic!("never refused");
                })
            })
            .collect();
        uploads
            .into_iter()
            .map(|u| u.join().expect("upload"))
            .collect()
    });
    let written: u64 = charges.iter().map(|c| c.1).sum();
    assert!(written <= limit, "{written} written past {limit}");
    assert!(written + 2 * GRANT >= limit, "only {written} of {limit}");

    // a commits its upload (as a file store does); b's is dropped.
    let mut charges = charges.into_iter();
    let (mut mine, size) = charges.next().expect("a's");
    drop(charges);
    ledgers[0]
        .change(ALICE, |tx| {
            tx.settle(&mut mine);
            tx.fits(i128::from(size), 1)?;
            tx.mark()?;
            tx.record(i128::from(size), 1);
            Ok::<_, QuotaError>(())
        })
        .expect("commit");
    drop(mine);
    let usage = ledgers[1].usage(ALICE).expect("usage");
    assert_eq!(usage.bytes, size, "b sees what a committed");
    let settled = eventually(Duration::from_secs(5), || {
        b.quota_reserved(ALICE).expect("read") == Reserved::default()
    })
    .await;
    assert!(settled, "nothing stays reserved");
    let mut next = ledgers[1].charge(ALICE, false, None).expect("charge");
    assert!(
        matches!(next.add(limit - size + 1), Err(QuotaError::Exceeded)),
        "b's room is what a's commit left"
    );
    next.add(limit - size).expect("exactly the rest");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn changes_on_two_nodes_at_once_add_up() {
    let server = PgTestServer::start().expect("postgres");
    let (db_a, a) = node(&server, "a").await;
    let (db_b, b) = node(&server, "b").await;
    let dir = tempfile::tempdir().expect("tempdir");
    std::fs::create_dir_all(dir.path().join("home/alice")).expect("home");
    let ledgers = [
        ledger_of(&dir, &db_a, &a, u64::MAX),
        ledger_of(&dir, &db_b, &b, u64::MAX),
    ];
    std::thread::scope(|scope| {
        for ledger in &ledgers {
            scope.spawn(move || {
                for _ in 0..20 {
                    ledger
                        .change(ALICE, |tx| {
                            tx.mark()?;
                            tx.record(100, 1);
                            Ok::<_, QuotaError>(())
                        })
                        .expect("change");
                }
            });
        }
    });
    for ledger in &ledgers {
        let usage = ledger.usage(ALICE).expect("usage");
        assert_eq!((usage.bytes, usage.files), (4000, 40), "no change is lost");
    }
}

/// A commit whose usage cannot be written keeps its reservation, so the other nodes go on
/// counting its bytes; the next change that writes the usage gives it back.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_commit_whose_usage_is_not_written_stays_reserved() {
    let mut server = PgTestServer::start().expect("postgres");
    let (db_a, a) = node(&server, "a").await;
    let (db_b, b) = node(&server, "b").await;
    let dir = tempfile::tempdir().expect("tempdir");
    std::fs::create_dir_all(dir.path().join("home/alice")).expect("home");
    let limit = 100 << 20;
    let ledgers = [
        ledger_of(&dir, &db_a, &a, limit),
        ledger_of(&dir, &db_b, &b, limit),
    ];
    let size = 1 << 20;
    let mut charge = ledgers[0].charge(ALICE, true, None).expect("charge");
    charge.add(size).expect("fits");
    ledgers[0]
        .change(ALICE, |tx| {
            tx.settle(&mut charge);
            tx.fits(i128::from(size), 1)?;
            tx.mark()?;
            // The database goes away after the file is in place, before its usage is written.
            server.stop();
            tx.record(i128::from(size), 1);
            Ok::<_, QuotaError>(())
        })
        .expect("the file itself is committed");
    drop(charge);
    server.restart().expect("restart");
    let usage = eventually(Duration::from_secs(15), || ledgers[1].usage(ALICE).is_ok()).await;
    assert!(usage, "the database is back");
    // Longer than the background task takes to write what it queued.
    tokio::time::sleep(Duration::from_secs(2)).await;
    assert_eq!(ledgers[1].usage(ALICE).expect("usage").bytes, 0);
    let held = b.quota_reserved(ALICE).expect("read");
    assert!(held.bytes >= size, "still reserved for b: {held:?}");

    ledgers[0]
        .change(ALICE, |tx| {
            tx.mark()?;
            Ok::<_, QuotaError>(())
        })
        .expect("a change that writes the usage");
    assert_eq!(ledgers[1].usage(ALICE).expect("usage").bytes, size);
    let settled = eventually(Duration::from_secs(5), || {
        b.quota_reserved(ALICE).expect("read") == Reserved::default()
    })
    .await;
    assert!(settled, "given back once the usage holds it");
}
