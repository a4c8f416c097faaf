//! The actor graph.
//!
//! ```text
//!                 ┌────────────┐ one per connection, spread over one Arbiter per core
//!  TCP accept ──► │  Acceptor  │ ─────────────────────────────┐
//!                 └────────────┘                              ▼
//!                                      ┌──────────────────────────────────────────┐
//!  control bytes ◄─► FtpCodec ◄──────► │ Session (state machine)                  │ ──► transfer tasks on
//!                                      └──────────────────────────────────────────┘     the TransferPool
//!                     Services (Recipients) │ Register/Authenticate  │ Stat/List/Open*  │ Record
//!                                           ▼                        ▼                  ▼
//!                            AccountRegistry (SyncArbiter)  FileStore (async)        AuditLog (own Arbiter)
//!                                           │                        │                  │
//!                                    AccountStore trait   Arc<dyn Storage>        audit.jsonl, xferlog
//!                                                          (blocking pools of its own)
//! ```
//!
//! A Session knows the services only through [`Services`], so tests hand it stub actors.
//! `Services::list`, `Services::list_pages` and `Services::hash` go to
//! [`file_store::LongJobs`] in the server: a per-user share in front of the backend, which runs
//! long jobs on a pool of their own.

use std::sync::Arc;

use actix::dev::ToEnvelope;
use actix::{Actor, Addr, Handler, Recipient};

use crate::audit::metrics::{Backlog, Service};

pub mod acceptor;
pub mod account_registry;
pub mod audit_log;
pub mod file_store;
pub mod session;

use account_registry::{Authenticate, ChangePassword, Register};
use audit_log::Record;
use file_store::{
    Chmod, CommitUpload, CreateHome, Hash, List, ListPages, Mkdir, OpenRead, OpenWrite,
    QuotaStatus, Remove, Rename, Rmdir, SetModified, Stat,
};

/// Everything a Session may ask of the rest of the server: one recipient per message.
#[derive(Clone)]
pub struct Services {
    /// Create an account (`SITE REGISTER`).
    pub register: Recipient<Register>,
    /// Check a password (`PASS`).
    pub authenticate: Recipient<Authenticate>,
    /// Change a password (`SITE PASSWD`).
    pub change_password: Recipient<ChangePassword>,
    /// Make sure a user's home exists.
    pub create_home: Recipient<CreateHome>,
    /// Metadata of one path.
    pub stat: Recipient<Stat>,
    /// Entries of a directory, whole (STAT).
    pub list: Recipient<List>,
    /// Entries of a directory, a page at a time (LIST, NLST, MLSD).
    pub list_pages: Recipient<ListPages>,
    /// Open a file for a download.
    pub open_read: Recipient<OpenRead>,
    /// Stage an upload.
    pub open_write: Recipient<OpenWrite>,
    /// Put a finished upload in place.
    pub commit_upload: Recipient<CommitUpload>,
    /// `MKD`.
    pub mkdir: Recipient<Mkdir>,
    /// `RMD`.
    pub rmdir: Recipient<Rmdir>,
    /// `DELE`.
    pub remove: Recipient<Remove>,
    /// `RNFR`/`RNTO`.
    pub rename: Recipient<Rename>,
    /// `MFMT`.
    pub set_modified: Recipient<SetModified>,
    /// `SITE CHMOD`.
    pub chmod: Recipient<Chmod>,
    /// `HASH`.
    pub hash: Recipient<Hash>,
    /// `SITE QUOTA`.
    pub quota: Recipient<QuotaStatus>,
    /// Audit events, fire-and-forget.
    pub audit: AuditSender,
    /// Where the requests above are counted until answered (`/metrics`).
    pub backlog: Arc<Backlog>,
}

/// Sends audit records to the AuditLog actor, counting them for its mailbox backlog.
#[derive(Clone)]
pub struct AuditSender {
    recipient: Recipient<Record>,
    backlog: Arc<Backlog>,
}

impl AuditSender {
    /// Sends `record`, fire-and-forget.
    pub fn do_send(&self, record: Record) {
        self.backlog.record_sent();
        self.recipient.do_send(record);
    }
}

/// Which service actor a request goes to, for the mailbox backlog.
pub trait Destination {
    /// The actor that answers it in the server.
    const SERVICE: Service;
}

macro_rules! destinations {
    ($($service:ident: $($message:ty),+;)+) => {
        $($(impl Destination for $message {
            const SERVICE: Service = Service::$service;
        })+)+
    };
}

destinations! {
    Accounts: Register, Authenticate, ChangePassword;
    Files: CreateHome, Stat, OpenRead, OpenWrite, CommitUpload, Mkdir, Rmdir, Remove, Rename,
        SetModified, Chmod, QuotaStatus;
    LongJobs: List, ListPages, Hash;
}

impl Services {
    /// Wires the services from any actors that handle the messages: the real ones in the
    /// server, stubs in tests.
    pub fn new<Accounts, Files, Audit>(
        accounts: &Addr<Accounts>,
        files: &Addr<Files>,
        audit: &Addr<Audit>,
    ) -> Services
    where
        Accounts: Actor + Handler<Register> + Handler<Authenticate> + Handler<ChangePassword>,
        Accounts::Context: ToEnvelope<Accounts, Register>
            + ToEnvelope<Accounts, Authenticate>
            + ToEnvelope<Accounts, ChangePassword>,
        Files: Actor
            + Handler<CreateHome>
            + Handler<Stat>
            + Handler<List>
            + Handler<ListPages>
            + Handler<OpenRead>
            + Handler<OpenWrite>
            + Handler<CommitUpload>
            + Handler<Mkdir>
            + Handler<Rmdir>
            + Handler<Remove>
            + Handler<Rename>
            + Handler<SetModified>
            + Handler<Chmod>
            + Handler<Hash>
            + Handler<QuotaStatus>,
        Files::Context: ToEnvelope<Files, CreateHome>
            + ToEnvelope<Files, Stat>
            + ToEnvelope<Files, List>
            + ToEnvelope<Files, ListPages>
            + ToEnvelope<Files, OpenRead>
            + ToEnvelope<Files, OpenWrite>
            + ToEnvelope<Files, CommitUpload>
            + ToEnvelope<Files, Mkdir>
            + ToEnvelope<Files, Rmdir>
            + ToEnvelope<Files, Remove>
            + ToEnvelope<Files, Rename>
            + ToEnvelope<Files, SetModified>
            + ToEnvelope<Files, Chmod>
            + ToEnvelope<Files, Hash>
            + ToEnvelope<Files, QuotaStatus>,
        Audit: Actor + Handler<Record>,
        Audit::Context: ToEnvelope<Audit, Record>,
    {
        Services {
            register: accounts.clone().recipient(),
            authenticate: accounts.clone().recipient(),
            change_password: accounts.clone().recipient(),
            create_home: files.clone().recipient(),
            stat: files.clone().recipient(),
            list: files.clone().recipient(),
            list_pages: files.clone().recipient(),
            open_read: files.clone().recipient(),
            open_write: files.clone().recipient(),
            commit_upload: files.clone().recipient(),
            mkdir: files.clone().recipient(),
            rmdir: files.clone().recipient(),
            remove: files.clone().recipient(),
            rename: files.clone().recipient(),
            set_modified: files.clone().recipient(),
            chmod: files.clone().recipient(),
            hash: files.clone().recipient(),
            quota: files.clone().recipient(),
            audit: AuditSender {
                recipient: audit.clone().recipient(),
                backlog: Arc::default(),
            },
            backlog: Arc::default(),
        }
    }

    /// The same services, counted in `backlog` (the server's metrics).
    pub fn counted_in(mut self, backlog: Arc<Backlog>) -> Services {
        self.audit.backlog = Arc::clone(&backlog);
        self.backlog = backlog;
        self
    }
}
