//! Connection, login, registration, the audit trail, timeouts and shutdown.

use super::*;

// ---- connection and login ----

#[actix::test]
async fn greeting_then_quit_closes() {
    let mut c = connect_stubs(config()).await.greeted().await;
    c.event(EventKind::SessionOpen).await;
    c.expect("QUIT", 221).await;
    c.expect_closed().await;
    let close = c.event(EventKind::SessionClose).await;
    assert_eq!(close.user, None);
    assert_eq!(c.commands(1).await, vec![("QUIT".to_owned(), 221)]);
}

#[actix::test]
async fn login_then_pwd() {
    let mut c = connect_stubs(config()).await.greeted().await;
    c.login().await;
    let ok = c.event(EventKind::LoginOk).await;
    assert_eq!(ok.user.as_deref(), Some("alice"));
    let pwd = c.expect("PWD", 257).await;
    assert_eq!(pwd.text(), "\"/\" is the current directory.");
}

#[actix::test]
async fn wrong_password_is_530_and_recorded() {
    let mut c = connect_stubs(config()).await.greeted().await;
    c.expect("USER alice", 331).await;
    c.expect("PASS wrong-one", 530).await;
    let failed = c.event(EventKind::LoginFailed).await;
    assert_eq!(failed.user.as_deref(), Some("alice"));
    // The session goes on: a second try works.
    c.login().await;
}

#[actix::test]
async fn too_many_login_failures_close_with_421() {
    let mut c = connect_stubs(Config {
        max_login_failures: 2,
        ..config()
    })
    .await
    .greeted()
    .await;
    c.expect("USER alice", 331).await;
    c.expect("PASS wrong-one", 530).await;
    c.expect("USER alice", 331).await;
    c.expect("PASS wrong-two", 530).await;
    assert_eq!(c.reply().await.code, 421);
    c.expect_closed().await;
    let events = c
        .events_until(|events| {
            events
                .iter()
                .filter(|e| e.event == EventKind::LoginFailed)
                .count()
                == 2
                && events.iter().any(|e| e.event == EventKind::SessionClose)
        })
        .await;
    assert!(!events.iter().any(|e| e.event == EventKind::LoginOk));
}

#[actix::test]
async fn pipelined_login_replies_in_order() {
    let mut c = connect_stubs(config()).await.greeted().await;
    c.send_raw(b"USER alice\r\nPASS password1\r\nPWD\r\n").await;
    let codes = [
        c.reply().await.code,
        c.reply().await.code,
        c.reply().await.code,
    ];
    assert_eq!(codes, [331, 230, 257]);
}

#[actix::test]
async fn pipelined_login_with_a_slow_registry_replies_in_order() {
    let mut c = connect(config(), |audit| {
        Services::new(&StubAccounts::slow(), &BurningFiles.start(), audit)
    })
    .await
    .greeted()
    .await;
    c.send_raw(b"USER alice\r\nPASS password1\r\nPWD\r\nNOOP\r\n")
        .await;
    let mut codes = Vec::new();
    for _ in 0..4 {
        codes.push(c.reply().await.code);
    }
    assert_eq!(codes, [331, 230, 257, 200]);
}

#[actix::test]
async fn gone_registry_is_451_and_the_session_goes_on() {
    let mut c = connect(config(), |audit| {
        Services::new(&StubAccounts::gone(), &BurningFiles.start(), audit)
    })
    .await
    .greeted()
    .await;
    c.expect("USER alice", 331).await;
    c.expect("PASS password1", 451).await;
    c.expect("NOOP", 200).await;
    c.expect("SITE REGISTER bob password123", 451).await;
    c.expect("NOOP", 200).await;
    // Not logged in after the failure.
    c.expect("PWD", 530).await;
}

#[actix::test]
async fn file_store_errors_are_451_and_the_session_goes_on() {
    let mut c = connect_stubs(config()).await.greeted().await;
    c.login().await;
    for line in [
        "CWD x", "MKD x", "SIZE x", "MDTM x", "DELE x", "RMD x", "RNFR x",
    ] {
        let reply = c.expect(line, 451).await;
        assert_eq!(reply.text(), "Local error in processing.");
    }
    c.expect("PWD", 257).await;
    c.expect("NOOP", 200).await;
}

// ---- before login, registration ----

#[actix::test]
async fn before_login() {
    let mut c = connect_stubs(config()).await.greeted().await;
    c.expect("RETR x", 530).await;
    c.expect("PWD", 530).await;
    c.expect("SITE REGISTER taken password123", 550).await;
    c.expect("SITE REGISTER Bad! password123", 501).await;
    c.expect("SITE REGISTER bob short", 501).await;
    assert!(
        !c.events
            .lock()
            .expect("test mutex")
            .iter()
            .any(|e| e.event == EventKind::Register),
        "a refused registration is not recorded"
    );
    c.expect("SITE REGISTER bob password123", 200).await;
    let register = c.event(EventKind::Register).await;
    assert_eq!(register.user.as_deref(), Some("bob"));
    // Registering does not log in.
    c.expect("PWD", 530).await;
}

#[actix::test]
async fn registration_closed_is_550() {
    let mut c = connect_stubs(Config {
        registration: Registration::Closed,
        ..config()
    })
    .await
    .greeted()
    .await;
    c.expect("SITE REGISTER bob password123", 550).await;
    c.expect("NOOP", 200).await;
    assert!(
        !c.events
            .lock()
            .expect("test mutex")
            .iter()
            .any(|e| e.event == EventKind::Register)
    );
}

#[actix::test]
async fn malformed_and_unknown_lines() {
    let mut c = connect_stubs(config()).await.greeted().await;
    // Not 0xFF: that is a Telnet IAC, which the codec strips.
    c.send_raw(b"CWD \xc3\x28\x80\r\n").await;
    assert_eq!(c.reply().await.code, 501);
    c.expect("NOOP", 200).await;
    c.expect("XYZZY", 502).await;
    c.expect("NOOP", 200).await;
}

// ---- the audit trail ----

#[actix::test]
async fn every_command_is_recorded_with_its_code_and_no_password() {
    let mut c = connect_stubs(config()).await.greeted().await;
    c.expect("USER alice", 331).await;
    c.expect("PASS password1", 230).await;
    c.expect("SITE PASSWD password1 password2", 200).await;
    c.expect("MKD x", 451).await;
    c.expect("XYZZY", 502).await;
    c.expect("QUIT", 221).await;
    c.expect_closed().await;
    let commands = c.commands(6).await;
    assert_eq!(
        commands,
        [
            ("USER alice".to_owned(), 331),
            ("PASS ***".to_owned(), 230),
            ("SITE PASSWD *** ***".to_owned(), 200),
            ("MKD x".to_owned(), 451),
            ("XYZZY".to_owned(), 502),
            ("QUIT".to_owned(), 221),
        ]
    );
    let events = c
        .events_until(|events| events.iter().any(|e| e.event == EventKind::SessionClose))
        .await;
    for event in &events {
        let debug = format!("{event:?}");
        assert!(!debug.contains("password1"), "{debug}");
        assert!(!debug.contains("password2"), "{debug}");
    }
}

// ---- timeouts and shutdown ----

#[actix::test]
async fn idle_timeout_closes_with_421() {
    let mut c = connect_stubs(Config {
        idle_timeout_secs: 1,
        ..config()
    })
    .await
    .greeted()
    .await;
    c.login().await;
    let started = std::time::Instant::now();
    let reply = c.reply().await;
    assert_eq!(reply.code, 421, "{reply:?}");
    assert!(reply.text().contains("Idle timeout"), "{reply:?}");
    c.expect_closed().await;
    assert!(
        started.elapsed() <= Duration::from_secs(3),
        "{:?}",
        started.elapsed()
    );
    c.event(EventKind::SessionClose).await;
}

#[actix::test]
async fn login_timeout_closes_with_421() {
    let mut c = connect_stubs(Config {
        login_timeout_secs: 1,
        ..config()
    })
    .await
    .greeted()
    .await;
    // Activity does not extend the login timeout.
    c.expect("NOOP", 200).await;
    let reply = c.reply().await;
    assert_eq!(reply.code, 421, "{reply:?}");
    assert!(reply.text().contains("Login timeout"), "{reply:?}");
    c.expect_closed().await;
}

#[actix::test]
async fn shutdown_closes_with_421() {
    let mut c = connect_stubs(config()).await.greeted().await;
    c.login().await;
    c.session.do_send(Shutdown);
    assert_eq!(c.reply().await.code, 421);
    c.expect_closed().await;
    let close = c.event(EventKind::SessionClose).await;
    assert_eq!(close.user.as_deref(), Some("alice"));
}
