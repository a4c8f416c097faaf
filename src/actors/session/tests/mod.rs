//! Actor tests: a real [`Session`] on a loopback TCP pair, with stub actors behind
//! [`Services`] (STYLE §5, second seam) and, for transfers, the real [`FileStore`] over a
//! temporary directory. Every wait is bounded by a timeout.

use std::io;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use actix::prelude::*;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::tcp::{OwnedReadHalf, OwnedWriteHalf};
use tokio::net::{TcpListener, TcpStream};

use super::control::Conn;
use super::{Session, SessionEnv};
use crate::actors::Services;
use crate::actors::account_registry::{
    Account, AuthError, Authenticate, ChangePassword, Register, UserName,
};
use crate::actors::admission::{SessionRegistry, Shutdown};
use crate::actors::audit_log::{Event, EventKind, Record};
use crate::actors::file_store::{
    CommitUpload, CreateHome, FileStore, List, LocalStorage, Mkdir, OpenRead, OpenWrite, Remove,
    Rename, Rmdir, Stat, StoreError,
};
use crate::config::{Config, Registration};
use crate::net::ClientAddr;
use crate::net::urgent::UrgentSafeTcp;

/// The longest any single wait in these tests may take.
const WAIT: Duration = Duration::from_secs(5);
/// The longest reply line the reader accepts before it fails the test.
const MAX_LINE: usize = 64 * 1024;

// ---- stub actors ----

/// Keeps every audit event, in arrival order.
struct RecordingAudit(Arc<Mutex<Vec<Event>>>);

impl Actor for RecordingAudit {
    type Context = Context<Self>;
}

impl Handler<Record> for RecordingAudit {
    type Result = ();

    fn handle(&mut self, Record(event): Record, _: &mut Self::Context) {
        self.0.lock().expect("test mutex").push(event);
    }
}

/// An account registry that knows one user, alice / password1, and answers after `delay`.
struct StubAccounts {
    delay: Duration,
}

impl StubAccounts {
    fn start() -> Addr<StubAccounts> {
        StubAccounts {
            delay: Duration::ZERO,
        }
        .start()
    }

    /// Answers every request after 300 ms, without blocking the session's thread.
    fn slow() -> Addr<StubAccounts> {
        StubAccounts {
            delay: Duration::from_millis(300),
        }
        .start()
    }

    /// An address whose actor is gone: its context was dropped without ever running, so the
    /// mailbox is closed and every `send` fails with `MailboxError::Closed`.
    fn gone() -> Addr<StubAccounts> {
        let ctx: Context<StubAccounts> = Context::new();
        let addr = ctx.address();
        drop(ctx);
        addr
    }

    fn answer<T: Send + 'static>(&self, result: T) -> ResponseFuture<T> {
        let delay = self.delay;
        Box::pin(async move {
            if !delay.is_zero() {
                tokio::time::sleep(delay).await;
            }
            result
        })
    }
}

impl Actor for StubAccounts {
    type Context = Context<Self>;
}

impl Handler<Authenticate> for StubAccounts {
    type Result = ResponseFuture<Result<Account, AuthError>>;

    fn handle(&mut self, msg: Authenticate, _: &mut Self::Context) -> Self::Result {
        let result = if msg.name == "alice" && msg.password.expose() == "password1" {
            Ok(Account {
                name: UserName::parse("alice").expect("valid name"),
                read_only: false,
            })
        } else {
            Err(AuthError::WrongCredentials)
        };
        self.answer(result)
    }
}

impl Handler<Register> for StubAccounts {
    type Result = ResponseFuture<Result<Account, AuthError>>;

    fn handle(&mut self, msg: Register, _: &mut Self::Context) -> Self::Result {
        let result = if msg.name == "taken" {
            Err(AuthError::NameTaken)
        } else {
            UserName::parse(&msg.name).and_then(|name| {
                if msg.password.expose().chars().count() < 8 {
                    Err(AuthError::WeakPassword)
                } else {
                    Ok(Account {
                        name,
                        read_only: false,
                    })
                }
            })
        };
        self.answer(result)
    }
}

impl Handler<ChangePassword> for StubAccounts {
    type Result = ResponseFuture<Result<(), AuthError>>;

    fn handle(&mut self, _: ChangePassword, _: &mut Self::Context) -> Self::Result {
        self.answer(Ok(()))
    }
}

/// A file store whose disk is on fire: every request fails with an I/O error, except
/// `CreateHome`, so that logging in still works.
struct BurningFiles;

impl Actor for BurningFiles {
    type Context = Context<Self>;
}

impl Handler<CreateHome> for BurningFiles {
    type Result = Result<(), StoreError>;

    fn handle(&mut self, _: CreateHome, _: &mut Self::Context) -> Self::Result {
        Ok(())
    }
}

macro_rules! burning {
    ($($msg:ty => $ok:ty),* $(,)?) => {$(
        impl Handler<$msg> for BurningFiles {
            type Result = Result<$ok, StoreError>;

            fn handle(&mut self, _: $msg, _: &mut Self::Context) -> Self::Result {
                Err(StoreError::Io(io::Error::other("disk on fire")))
            }
        }
    )*};
}

burning! {
    Stat => crate::codec::entry::FileInfo,
    List => crate::actors::file_store::Listing,
    OpenRead => crate::actors::file_store::ReadHandle,
    OpenWrite => crate::actors::file_store::Upload,
    CommitUpload => (),
    Mkdir => (),
    Rmdir => (),
    Remove => (),
    Rename => (),
    crate::actors::file_store::SetModified => (),
    crate::actors::file_store::QuotaStatus => crate::actors::quota::QuotaReport,
    crate::actors::file_store::Chmod => (),
    crate::actors::file_store::Hash => (String, u64),
}

/// The real file store over a temporary directory; homes live in `tmp/home`.
fn real_files(tmp: &tempfile::TempDir) -> Addr<FileStore> {
    let storage =
        LocalStorage::new(tmp.path().join("home"), tmp.path().join("tmp")).expect("temp storage");
    FileStore::start(Arc::new(storage), 1)
}

// ---- harness ----

/// Test defaults: timeouts long enough never to fire unless a test lowers them.
fn config() -> Config {
    Config {
        login_timeout_secs: 30,
        idle_timeout_secs: 30,
        data_timeout_secs: 5,
        max_login_failures: 3,
        ..Config::default()
    }
}

/// One reply: its code and its text lines (one for a single-line reply).
#[derive(Debug)]
struct Reply {
    code: u16,
    lines: Vec<String>,
}

impl Reply {
    fn text(&self) -> &str {
        self.lines.last().map_or("", String::as_str)
    }
}

/// The client end of the control connection, with the session and what it recorded.
struct Client {
    read: OwnedReadHalf,
    write: OwnedWriteHalf,
    buf: Vec<u8>,
    session: Addr<Session>,
    events: Arc<Mutex<Vec<Event>>>,
    local: SocketAddr,
}

/// Starts a session on a loopback pair, wired by `wire` to the recording audit stub.
async fn connect(config: Config, wire: impl FnOnce(&Addr<RecordingAudit>) -> Services) -> Client {
    let events = Arc::new(Mutex::new(Vec::new()));
    let audit = RecordingAudit(events.clone()).start();
    let services = wire(&audit);
    let limits = crate::state::LocalState::shared(&config);
    let env = Arc::new(SessionEnv {
        services,
        config: Arc::new(config),
        tls: None,
        limits,
        upload_tls: None,
        transfers: Arc::new(crate::actors::data_channel::TransferPool::new(1).expect("pool")),
    });
    let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let addr = listener.local_addr().expect("listener address");
    let (client, accepted) = tokio::join!(TcpStream::connect(addr), listener.accept());
    let client = client.expect("connect");
    let (server, _) = accepted.expect("accept");
    let peer = ClientAddr::of_stream(&server).expect("addresses");
    let local = peer.local();
    let permit = SessionRegistry::new(10, Arc::clone(&env.limits))
        .admit(1, peer.ip())
        .expect("admitted");
    let conn = Conn::Plain(UrgentSafeTcp::new(server));
    let session = Session::start(conn, 1, peer, env, permit);
    let (read, write) = client.into_split();
    Client {
        read,
        write,
        buf: Vec::new(),
        session,
        events,
        local,
    }
}

/// The usual wiring: stub accounts and a file store on fire.
async fn connect_stubs(config: Config) -> Client {
    connect(config, |audit| {
        Services::new(&StubAccounts::start(), &BurningFiles.start(), audit)
    })
    .await
}

/// Wiring with the real file store over `tmp`.
async fn connect_real(config: Config, tmp: &tempfile::TempDir) -> Client {
    let files = real_files(tmp);
    connect(config, |audit| {
        Services::new(&StubAccounts::start(), &files, audit)
    })
    .await
}

impl Client {
    /// Reads one line without its CRLF; `None` at end of stream.
    async fn line(&mut self) -> Option<String> {
        loop {
            if let Some(end) = self.buf.iter().position(|&b| b == b'\n') {
                let mut line: Vec<u8> = self.buf.drain(..=end).collect();
                line.pop();
                if line.last() == Some(&b'\r') {
                    line.pop();
                }
                return Some(String::from_utf8(line).expect("reply is UTF-8"));
            }
            assert!(self.buf.len() < MAX_LINE, "reply line too long");
            let mut chunk = [0u8; 4096];
            let n = tokio::time::timeout(WAIT, self.read.read(&mut chunk))
                .await
                .expect("timed out waiting for a reply")
                .expect("control read");
            if n == 0 {
                assert!(self.buf.is_empty(), "connection closed mid-line");
                return None;
            }
            self.buf.extend_from_slice(&chunk[..n]);
        }
    }

    /// Reads one whole reply, single- or multi-line (RFC 959 §4.2).
    async fn reply(&mut self) -> Reply {
        let first = self
            .line()
            .await
            .expect("connection closed, expected a reply");
        let code: u16 = first
            .get(..3)
            .and_then(|c| c.parse().ok())
            .unwrap_or_else(|| panic!("no reply code in {first:?}"));
        let mut lines = vec![first[4.min(first.len())..].to_owned()];
        if first.as_bytes().get(3) == Some(&b'-') {
            let last = format!("{code} ");
            loop {
                let line = self.line().await.expect("connection closed mid-reply");
                if let Some(text) = line.strip_prefix(&last) {
                    lines.push(text.to_owned());
                    break;
                }
                lines.push(line);
            }
        }
        Reply { code, lines }
    }

    async fn send_raw(&mut self, bytes: &[u8]) {
        tokio::time::timeout(WAIT, self.write.write_all(bytes))
            .await
            .expect("timed out writing")
            .expect("control write");
    }

    /// Sends one command line and reads its reply.
    async fn cmd(&mut self, line: &str) -> Reply {
        self.send_raw(format!("{line}\r\n").as_bytes()).await;
        self.reply().await
    }

    /// Sends a command and checks the reply code.
    async fn expect(&mut self, line: &str, code: u16) -> Reply {
        let reply = self.cmd(line).await;
        assert_eq!(reply.code, code, "{line}: {reply:?}");
        reply
    }

    /// Reads the 220 greeting.
    async fn greeted(mut self) -> Client {
        let reply = self.reply().await;
        assert_eq!(reply.code, 220, "{reply:?}");
        self
    }

    async fn login(&mut self) {
        self.expect("USER alice", 331).await;
        self.expect("PASS password1", 230).await;
    }

    /// Waits for the server to close the control connection.
    async fn expect_closed(&mut self) {
        assert!(
            self.line().await.is_none(),
            "expected the connection to close"
        );
    }

    /// Waits until the recorded events satisfy `done`, and returns them.
    async fn events_until(&self, done: impl Fn(&[Event]) -> bool) -> Vec<Event> {
        let poll = async {
            loop {
                let events = self.events.lock().expect("test mutex").clone();
                if done(&events) {
                    return events;
                }
                tokio::time::sleep(Duration::from_millis(10)).await;
            }
        };
        match tokio::time::timeout(WAIT, poll).await {
            Ok(events) => events,
            Err(_) => panic!(
                "timed out waiting for events; have {:#?}",
                self.events.lock().expect("test mutex")
            ),
        }
    }

    /// Waits for an event of `kind` and returns it.
    async fn event(&self, kind: EventKind) -> Event {
        let events = self
            .events_until(|events| events.iter().any(|e| e.event == kind))
            .await;
        events
            .into_iter()
            .find(|e| e.event == kind)
            .expect("just seen")
    }

    /// `(command, code)` of every `command` event so far, waiting for at least `n`.
    async fn commands(&self, n: usize) -> Vec<(String, u16)> {
        let events = self
            .events_until(|events| {
                events
                    .iter()
                    .filter(|e| e.event == EventKind::Command)
                    .count()
                    >= n
            })
            .await;
        events
            .iter()
            .filter(|e| e.event == EventKind::Command)
            .map(|e| {
                (
                    e.command.clone().expect("command text"),
                    e.code.expect("command code"),
                )
            })
            .collect()
    }

    /// PASV: the data address from the 227 reply.
    async fn pasv(&mut self) -> SocketAddr {
        let reply = self.expect("PASV", 227).await;
        let text = reply.text();
        let inner = text
            .split_once('(')
            .and_then(|(_, rest)| rest.split_once(')'))
            .map(|(inner, _)| inner)
            .unwrap_or_else(|| panic!("no address in {text:?}"));
        let n: Vec<u8> = inner
            .split(',')
            .map(|p| p.trim().parse().expect("227 number"))
            .collect();
        assert_eq!(n.len(), 6, "{text:?}");
        let ip = std::net::Ipv4Addr::new(n[0], n[1], n[2], n[3]);
        assert_eq!(std::net::IpAddr::V4(ip), self.local.ip());
        SocketAddr::from((ip, u16::from(n[4]) << 8 | u16::from(n[5])))
    }
}

async fn data_connect(addr: SocketAddr) -> TcpStream {
    tokio::time::timeout(WAIT, TcpStream::connect(addr))
        .await
        .expect("timed out connecting the data port")
        .expect("data connect")
}

async fn read_all(mut data: TcpStream) -> Vec<u8> {
    let mut bytes = Vec::new();
    tokio::time::timeout(WAIT, data.read_to_end(&mut bytes))
        .await
        .expect("timed out reading the data connection")
        .expect("data read");
    bytes
}

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

// ---- data transfers with the real file store ----

#[actix::test]
async fn pasv_then_list() {
    let tmp = tempfile::tempdir().expect("temp dir");
    let mut c = connect_real(config(), &tmp).await.greeted().await;
    c.login().await;
    std::fs::write(tmp.path().join("home/alice/hello.txt"), b"hi\n").expect("write file");
    let addr = c.pasv().await;
    c.expect("LIST", 150).await;
    let listing = read_all(data_connect(addr).await).await;
    assert_eq!(c.reply().await.code, 226);
    let listing = String::from_utf8(listing).expect("listing is UTF-8");
    assert!(listing.ends_with("\r\n"), "{listing:?}");
    assert_eq!(listing.lines().count(), 1, "{listing:?}");
    assert!(listing.contains("hello.txt"), "{listing:?}");
    c.expect("NOOP", 200).await;
}

/// The deadline itself is the file store's (tested there); here: its reply, and that the
/// session goes on.
#[actix::test]
async fn a_wildcard_expansion_past_its_deadline_is_451_and_the_session_goes_on() {
    let tmp = tempfile::tempdir().expect("temp dir");
    let storage = LocalStorage::new(tmp.path().join("home"), tmp.path().join("tmp"))
        .expect("temp storage")
        .with_glob_time_limit(Duration::ZERO);
    let files = FileStore::start(Arc::new(storage), 1);
    let mut c = connect(config(), |audit| {
        Services::new(&StubAccounts::start(), &files, audit)
    })
    .await
    .greeted()
    .await;
    c.login().await;
    std::fs::write(tmp.path().join("home/alice/a.dat"), b"a").expect("write file");
    let addr = c.pasv().await;
    let reply = c.expect("NLST *.dat", 451).await;
    assert!(reply.text().contains("took too long"), "{reply:?}");
    // A name without wildcards is no expansion: it is listed as before.
    c.expect("NLST a.dat", 150).await;
    assert_eq!(read_all(data_connect(addr).await).await, b"a.dat\r\n");
    assert_eq!(c.reply().await.code, 226);
    c.expect("NOOP", 200).await;
}

#[actix::test]
async fn stor_then_retr_round_trip() {
    let tmp = tempfile::tempdir().expect("temp dir");
    let mut c = connect_real(config(), &tmp).await.greeted().await;
    c.login().await;
    c.expect("TYPE I", 200).await;
    // Every byte value, CR and LF included, over several chunks.
    let content: Vec<u8> = (0..300_000u32).map(|i| (i * 7 % 251) as u8).collect();

    let addr = c.pasv().await;
    c.expect("STOR blob.bin", 150).await;
    let mut data = data_connect(addr).await;
    tokio::time::timeout(WAIT, async {
        data.write_all(&content).await?;
        data.shutdown().await
    })
    .await
    .expect("timed out uploading")
    .expect("upload");
    drop(data);
    assert_eq!(c.reply().await.code, 226);
    let stored = std::fs::read(tmp.path().join("home/alice/blob.bin")).expect("stored file");
    assert!(stored == content, "stored file differs");
    let size = c.expect("SIZE blob.bin", 213).await;
    assert_eq!(size.text(), content.len().to_string());

    let addr = c.pasv().await;
    c.expect("RETR blob.bin", 150).await;
    let fetched = read_all(data_connect(addr).await).await;
    assert_eq!(c.reply().await.code, 226);
    assert!(fetched == content, "downloaded bytes differ");

    let events = c
        .events_until(|events| events.iter().any(|e| e.event == EventKind::Download))
        .await;
    let upload = events
        .iter()
        .find(|e| e.event == EventKind::Upload)
        .expect("upload recorded");
    assert_eq!(upload.bytes, Some(content.len() as u64));
    assert_eq!(upload.code, Some(226));
    let download = events
        .iter()
        .find(|e| e.event == EventKind::Download)
        .expect("download recorded");
    assert_eq!(download.bytes, Some(content.len() as u64));
    assert_eq!(download.path.as_deref(), Some("/blob.bin"));
}

#[actix::test]
async fn abor_during_a_slow_retr() {
    let tmp = tempfile::tempdir().expect("temp dir");
    let mut c = connect_real(config(), &tmp).await.greeted().await;
    let data = stalled_retr(&mut c, &tmp).await;
    // STAT and NOOP are answered while the transfer runs.
    let status = c.expect("STAT", 211).await;
    assert!(
        status
            .lines
            .iter()
            .any(|l| l.starts_with("Transfer in progress")),
        "{status:?}"
    );
    c.expect("NOOP", 200).await;
    let aborted = c.expect("ABOR", 426).await;
    assert_eq!(aborted.text(), "Transfer aborted.");
    assert_eq!(c.reply().await.code, 226);
    c.expect("NOOP", 200).await;
    drop(data);

    let download = c.event(EventKind::Download).await;
    assert_eq!(download.code, Some(426));
    let commands = c.commands(0).await;
    assert!(
        commands.contains(&("RETR big".to_owned(), 426)),
        "{commands:?}"
    );
    assert!(commands.contains(&("ABOR".to_owned(), 226)), "{commands:?}");
}

#[actix::test]
async fn rnfr_is_forgotten_after_another_command() {
    let tmp = tempfile::tempdir().expect("temp dir");
    let mut c = connect_real(config(), &tmp).await.greeted().await;
    c.login().await;
    std::fs::write(tmp.path().join("home/alice/x"), b"x").expect("write file");
    c.expect("RNFR x", 350).await;
    c.expect("NOOP", 200).await;
    c.expect("RNTO y", 503).await;
    assert!(tmp.path().join("home/alice/x").exists());
    // Right after RNFR, RNTO works.
    c.expect("RNFR x", 350).await;
    c.expect("RNTO y", 250).await;
    assert!(tmp.path().join("home/alice/y").exists());
}

#[actix::test]
async fn idle_timeout_does_not_fire_during_a_transfer() {
    // libunftp#281: an idle timeout that fired mid-transfer.
    let tmp = tempfile::tempdir().expect("temp dir");
    let mut c = connect_real(
        Config {
            idle_timeout_secs: 1,
            ..config()
        },
        &tmp,
    )
    .await
    .greeted()
    .await;
    let data = stalled_retr(&mut c, &tmp).await;
    tokio::time::sleep(Duration::from_millis(1800)).await;
    c.expect("ABOR", 426).await;
    assert_eq!(c.reply().await.code, 226);
    c.expect("NOOP", 200).await;
    drop(data);
}

#[actix::test]
async fn commands_pipelined_during_a_transfer_are_answered_in_order() {
    let tmp = tempfile::tempdir().expect("temp dir");
    let mut c = connect_real(config(), &tmp).await.greeted().await;
    c.login().await;
    let addr = c.pasv().await;
    c.expect("LIST", 150).await;
    // The data connection is not open yet, so the transfer is still running.
    c.send_raw(b"PWD\r\nNOOP\r\nQUIT\r\n").await;
    tokio::time::sleep(Duration::from_millis(100)).await;
    read_all(data_connect(addr).await).await;
    let mut codes = Vec::new();
    while let Some(line) = c.line().await {
        codes.push(line[..3].to_owned());
    }
    // Before the fix: NOOP's 200 came first, and PWD was never answered.
    assert_eq!(codes, ["226", "257", "200", "221"]);
    c.expect_closed().await;
}

/// Logs in and starts a RETR of a large file whose data connection is open but never read,
/// so the transfer stalls until ABOR. Returns the data connection.
async fn stalled_retr(c: &mut Client, tmp: &tempfile::TempDir) -> TcpStream {
    c.login().await;
    let big = std::fs::File::create(tmp.path().join("home/alice/big")).expect("create");
    big.set_len(256 << 20).expect("set_len");
    drop(big);
    let addr = c.pasv().await;
    c.expect("RETR big", 150).await;
    let data = data_connect(addr).await;
    tokio::time::sleep(Duration::from_millis(100)).await;
    data
}

#[actix::test]
async fn shutdown_during_a_transfer_closes_after_abor() {
    let tmp = tempfile::tempdir().expect("temp dir");
    let mut c = connect_real(config(), &tmp).await.greeted().await;
    let _data = stalled_retr(&mut c, &tmp).await;
    c.session.do_send(Shutdown);
    // The transfer may go on; the session closes once it ends, here by ABOR.
    c.expect("ABOR", 426).await;
    assert_eq!(c.reply().await.code, 226);
    assert_eq!(c.reply().await.code, 421);
    c.expect_closed().await;
}

#[actix::test]
async fn quit_during_a_transfer_closes_after_abor() {
    let tmp = tempfile::tempdir().expect("temp dir");
    let mut c = connect_real(config(), &tmp).await.greeted().await;
    let _data = stalled_retr(&mut c, &tmp).await;
    c.send_raw(b"QUIT\r\n").await;
    c.expect("ABOR", 426).await;
    assert_eq!(c.reply().await.code, 226);
    assert_eq!(c.reply().await.code, 221);
    c.expect_closed().await;
}

#[actix::test]
async fn multi_line_replies() {
    let mut c = connect_stubs(config()).await.greeted().await;
    let feat = c.expect("FEAT", 211).await;
    assert_eq!(feat.lines.first().map(String::as_str), Some("Features:"));
    assert!(feat.lines.iter().any(|l| l == " EPSV"), "{feat:?}");
    assert_eq!(feat.text(), "End");
    let help = c.expect("HELP", 214).await;
    assert!(help.lines.len() > 2, "{help:?}");
    c.expect("NOOP", 200).await;
}

#[actix::test]
async fn no_data_connection_is_425() {
    let tmp = tempfile::tempdir().expect("temp dir");
    let mut c = connect_real(
        Config {
            data_timeout_secs: 1,
            ..config()
        },
        &tmp,
    )
    .await
    .greeted()
    .await;
    c.login().await;
    c.expect("LIST", 425).await;
    c.pasv().await;
    c.expect("LIST", 150).await;
    // Nobody connects to the data port.
    assert_eq!(c.reply().await.code, 425);
    c.expect("NOOP", 200).await;
}

#[actix::test]
async fn listing_with_a_burning_file_store_is_451() {
    let mut c = connect_stubs(config()).await.greeted().await;
    c.login().await;
    c.pasv().await;
    c.expect("LIST", 451).await;
    c.expect("NOOP", 200).await;
}
