//! Actor tests: a real [`Session`] on a loopback TCP pair, with stub actors behind
//! [`Services`] (STYLE §5, second seam) and, for transfers, the real [`FileStore`] over each
//! storage backend (local in a temporary directory, and memory). Every wait is bounded by a
//! timeout.

mod backends;
mod capabilities;
mod listing;
mod login;
mod transfers;

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
use crate::actors::audit_log::{Event, EventKind, Record};
use crate::actors::file_store::{
    CommitUpload, CreateHome, FileStore, List, Mkdir, OpenRead, OpenWrite, Remove, Rename, Rmdir,
    Stat,
};
use crate::admission::{SessionRegistry, Shutdown};
use crate::config::{Config, Registration};
use crate::net::ClientAddr;
use crate::net::urgent::UrgentSafeTcp;
use crate::storage::local::LocalStorage;
use crate::storage::{Capabilities, StoreError};

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
    List => crate::storage::Listing,
    crate::actors::file_store::ListPages => crate::storage::ListingPages,
    OpenRead => Box<dyn crate::storage::ByteSource>,
    OpenWrite => Box<dyn crate::storage::ByteSink>,
    CommitUpload => (),
    Mkdir => (),
    Rmdir => (),
    Remove => (),
    Rename => (),
    crate::actors::file_store::SetModified => (),
    crate::actors::file_store::QuotaStatus => crate::quota::QuotaReport,
    crate::actors::file_store::Chmod => (),
    crate::actors::file_store::Hash => (String, u64),
}

/// The real file store over a temporary directory; homes live in `tmp/home`.
fn real_files(tmp: &tempfile::TempDir) -> Addr<FileStore> {
    let storage =
        LocalStorage::new(tmp.path().join("home"), tmp.path().join("tmp")).expect("temp storage");
    FileStore::start(Arc::new(storage))
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
    connect_to(config, Capabilities::ALL, wire).await
}

/// As [`connect`], to a storage that can do only what `capabilities` say.
async fn connect_to(
    config: Config,
    capabilities: Capabilities,
    wire: impl FnOnce(&Addr<RecordingAudit>) -> Services,
) -> Client {
    let events = Arc::new(Mutex::new(Vec::new()));
    let audit = RecordingAudit(events.clone()).start();
    let services = wire(&audit);
    let limits = crate::state::LocalState::shared(&config);
    let env = Arc::new(SessionEnv {
        services,
        config: crate::config::LiveConfig::new(config),
        tls: None,
        limits,
        upload_tls: None,
        transfers: Arc::new(crate::transfer::TransferPool::new(1).expect("pool")),
        capabilities,
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
