//! Accounts in PostgreSQL, seen by two nodes at once: each `ferryd` its own node name, both
//! on one database (and local storage declared shared: the homes are not what these tests
//! look at). Registration on one node, login on the other; a password change and `ferryd user
//! del` take effect on the other node at once; a database that goes away fails logins with a
//! clear reply and log line, and they work again once it is back.

use std::time::{Duration, Instant};

use ferry::db::testing::PgTestServer;
use serde_json::json;

use crate::common::{Control, TestServer, assert_success, has_event};

/// A node on `db` named `name`.
fn node(db: &PgTestServer, name: &str) -> TestServer {
    TestServer::start(&[
        "--database-url",
        &db.url(),
        "--node-name",
        name,
        "--shared-local-storage",
    ])
}

/// A fresh connection to `server`, greeted.
fn connect(server: &TestServer) -> Control {
    let (ctl, greeting) = server.connect();
    assert_eq!(greeting.code, 220, "{greeting:?}");
    ctl
}

/// USER then PASS on a fresh connection: the final reply to PASS.
fn try_login(server: &TestServer, user: &str, pass: &str) -> (Control, u16) {
    let mut ctl = connect(server);
    ctl.expect(&format!("USER {user}"), 331);
    let code = ctl.cmd(&format!("PASS {pass}")).code;
    (ctl, code)
}

#[test]
fn two_nodes_share_accounts_and_see_changes_at_once() {
    let db = PgTestServer::start().expect("postgres");
    let (a, b) = (node(&db, "a"), node(&db, "b"));

    let mut on_a = connect(&a);
    on_a.expect("SITE REGISTER bob password1", 200);
    on_a.login("bob", "password1");
    let mut on_b = connect(&b);
    on_b.login("bob", "password1");
    // The name is taken on the other node too.
    connect(&b).expect("SITE REGISTER bob password9", 550);

    on_a.expect("SITE PASSWD password1 password2", 200);
    assert_eq!(try_login(&b, "bob", "password1").1, 530, "old password");
    assert_eq!(try_login(&b, "bob", "password2").1, 230, "new password");
    // A password change ends no session.
    on_b.expect("NOOP", 200);

    // Disabled by the operator: cy's session on the other node ends, and no node lets cy in
    // until the account is enabled again.
    connect(&b).expect("SITE REGISTER cy password1", 200);
    let mut cy = connect(&a);
    cy.login("cy", "password1");
    let out = b.admin(
        &["user", "disable", "cy", "--database-url", &db.url()],
        None,
    );
    assert_success(&out, "ferryd user disable");
    assert_eq!(cy.reply().code, 421);
    cy.assert_closed();
    assert_eq!(try_login(&b, "cy", "password1").1, 530, "disabled");
    let out = a.admin(&["user", "enable", "cy", "--database-url", &db.url()], None);
    assert_success(&out, "ferryd user enable");
    assert_eq!(try_login(&b, "cy", "password1").1, 230, "enabled again");
    // bob's sessions carried on through all of it.
    on_a.expect("NOOP", 200);

    // The operator deletes bob from another process, against the database.
    let out = b.admin(&["user", "del", "bob", "--database-url", &db.url()], None);
    assert_success(&out, "ferryd user del");
    for (server, ctl) in [(&a, &mut on_a), (&b, &mut on_b)] {
        let reply = ctl.reply();
        assert_eq!(reply.code, 421, "{reply:?}");
        assert!(reply.text().contains("deleted or disabled"), "{reply:?}");
        ctl.assert_closed();
        server.wait_audit("bob's session closed for the deletion", |ev| {
            has_event(
                ev,
                &[
                    ("event", json!("session_close")),
                    ("user", json!("bob")),
                    ("command", json!("account deleted or disabled")),
                    ("code", json!(421)),
                ],
            )
        });
    }
    assert_eq!(try_login(&a, "bob", "password2").1, 530, "bob is gone");
    let listed = a.admin(&["user", "list", "--database-url", &db.url()], None);
    assert_success(&listed, "ferryd user list");
    assert!(!String::from_utf8_lossy(&listed.stdout).contains("bob"));
}

#[test]
fn logins_fail_cleanly_while_the_database_is_gone_and_work_when_it_is_back() {
    let mut db = PgTestServer::start().expect("postgres");
    let a = node(&db, "a");
    let out = a.admin(
        &[
            "user",
            "add",
            "amy",
            "--password-stdin",
            "--database-url",
            &db.url(),
        ],
        Some("password1\n"),
    );
    assert_success(&out, "ferryd user add");
    assert_eq!(try_login(&a, "amy", "password1").1, 230);

    db.stop();
    let started = Instant::now();
    let (_, code) = try_login(&a, "amy", "password1");
    assert!(
        code == 421 || code == 451,
        "login without a database: {code}"
    );
    assert!(started.elapsed() < Duration::from_secs(20), "bounded");
    let mut ctl = connect(&a);
    let reply = ctl.cmd("SITE REGISTER cy password1");
    assert!(matches!(reply.code, 421 | 451), "{reply:?}");
    a.wait_stderr("database unavailable");

    db.restart().expect("restart");
    // The pool drops its dead connections as it meets them: a few attempts at most.
    let back = (0..5).any(|_| try_login(&a, "amy", "password1").1 == 230);
    assert!(back, "login works again without a restart:\n{}", a.stderr());
    connect(&a).expect("SITE REGISTER cy password1", 200);
}

#[test]
fn invitation_codes_from_ferryd_invite_are_spent_on_the_database() {
    let db = PgTestServer::start().expect("postgres");
    let url = db.url();
    let a = TestServer::start(&[
        "--database-url",
        &url,
        "--node-name",
        "a",
        "--shared-local-storage",
        "--registration",
        "invite",
    ]);
    let out = a.admin(
        &["invite", "create", "--uses", "1", "--database-url", &url],
        None,
    );
    assert_success(&out, "ferryd invite create");
    let code = String::from_utf8_lossy(&out.stdout).trim().to_owned();
    assert_eq!(code.len(), 16, "{code:?}");
    // Not a file under the data dir: the code lives in the database.
    assert!(!a.data_dir().join(format!("invites/{code}.json")).exists());

    connect(&a).expect(&format!("SITE REGISTER amy password1 {code}"), 200);
    connect(&a).expect(&format!("SITE REGISTER bea password1 {code}"), 550);
    let listed = a.admin(&["invite", "list", "--database-url", &url], None);
    assert_success(&listed, "ferryd invite list");
    let table = String::from_utf8_lossy(&listed.stdout).into_owned();
    let row = table
        .lines()
        .find(|l| l.contains(&code))
        .unwrap_or_else(|| panic!("no row for the code:\n{table}"));
    assert!(
        row.split_whitespace().any(|cell| cell == "0"),
        "uses left: {row}"
    );
    assert_eq!(try_login(&a, "amy", "password1").1, 230);
}
