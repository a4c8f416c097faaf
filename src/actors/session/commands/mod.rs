//! The dispatch of a command to its group's handler, and the helpers the groups share; one file
//! per command group: login and accounts, files, listings, transfers, TLS, information. Each
//! command ends in exactly one final reply through `finish`, `close`, or a transfer whose end
//! replies.

mod files;
mod listing;
mod login;
mod misc;
mod tls;
mod transfer;

use std::sync::Arc;
use std::time::SystemTime;

use actix::dev::RecipientRequest;
use actix::prelude::*;

use super::replies;
use super::{AfterTransfer, Session, TransferKind};
use crate::actors::Services;
use crate::actors::account_registry::AuthError;
use crate::actors::audit_log::{Event, EventKind};
use crate::codec::command::TransferType;
use crate::codec::entry::FileInfo;
use crate::codec::{Command, CommandError, Reply, ReplyCode};
use crate::storage::vpath::VPath;
use crate::storage::{StoreError, WriteMode};
use crate::transfer::Job;

/// What a command does once the file store has answered.
enum Next {
    /// Send this final reply.
    Reply(Reply),
    /// `213-` is queued: stream these entries as the rest of the STAT reply.
    Status(Vec<FileInfo>),
    /// Reply 150 and run this transfer; its end sends the final reply.
    Transfer {
        job: Job,
        kind: TransferKind,
        opening: String,
    },
}

/// Which listing a data transfer carries.
#[derive(Clone, Copy)]
enum ListingStyle {
    Long,
    Names,
    Facts,
}

impl Session {
    /// Runs one command that passed the gates. `rename_from` is the pending RNFR, if the
    /// previous command was one.
    pub(super) fn run(
        &mut self,
        cmd: Command,
        text: String,
        rename_from: Option<VPath>,
        ctx: &mut Context<Self>,
    ) {
        // REST holds until the next transfer command takes it: clients send PASV/EPSV (and
        // TYPE, SIZE) between REST and RETR.
        let restart = if cmd.is_transfer() {
            std::mem::take(&mut self.settings.restart)
        } else {
            0
        };
        let ok = |msg: &str| Reply::new(ReplyCode::Ok, msg);
        match cmd {
            // RFC 959 §4.1.1: access control.
            Command::User(name) => self.user(&text, name),
            Command::Pass(password) => self.pass(text, password, ctx),
            Command::Quit => {
                if self.transfer.is_some() {
                    // RFC 959 §4.1.1 QUIT: close once the transfer in progress has ended.
                    self.after_transfer = Some(AfterTransfer::Quit);
                } else {
                    self.close(Some(&text), Reply::new(ReplyCode::Closing, "Goodbye."), ctx);
                }
            }
            Command::Site(site) => self.site(text, site, ctx),

            // RFC 959 §4.1.2: transfer parameters.
            Command::Type(t) => {
                self.settings.ascii = t == TransferType::Ascii;
                let name = if self.settings.ascii {
                    "ASCII"
                } else {
                    "BINARY"
                };
                self.finish(&text, ok(&format!("Switching to {name} mode.")));
            }
            Command::Mode(_) => self.finish(&text, ok("Mode set to S.")),
            Command::Stru(_) => self.finish(&text, ok("Structure set to F.")),
            Command::Pasv => self.pasv(&text, false),
            Command::Eprt(target) if !self.listens_on(target.ip()) => {
                let reply = replies::command(&CommandError::ProtocolNotSupported, self.protocols());
                self.finish(&text, reply);
            }
            Command::Port(target) | Command::Eprt(target) => self.port(&text, target),
            Command::Rest(offset) => {
                self.settings.restart = offset;
                self.finish(
                    &text,
                    Reply::new(
                        ReplyCode::PendingFurtherInfo,
                        format!("Restarting at {offset}. Send STOR or RETR."),
                    ),
                );
            }
            Command::Epsv(Some(proto)) if proto != self.network_protocol() => {
                // RFC 2428 §3: the passive port listens on the control connection's address,
                // so only its network protocol can be offered.
                let wanted = self.network_protocol();
                self.finish(
                    &text,
                    Reply::new(
                        ReplyCode::ProtocolNotSupported,
                        format!("Network protocol not supported, use ({wanted})."),
                    ),
                );
            }
            Command::Epsv(_) => self.pasv(&text, true),
            Command::EpsvAll => {
                // RFC 2428 §4: after EPSV ALL only EPSV may set up data connections.
                self.settings.epsv_all = true;
                self.finish(&text, ok("EPSV ALL ok."));
            }

            // RFC 959 §4.1.3: service commands.
            Command::Pwd => {
                let reply = Reply::path(self.settings.cwd.as_str(), "is the current directory.");
                self.finish(&text, reply);
            }
            Command::Cwd(arg) => self.cwd(text, &arg, ctx),
            Command::Cdup => self.cwd(text, "..", ctx),
            Command::Mkd(arg) => self.mkd(text, &arg, ctx),
            Command::Rmd(arg) => self.rmd(text, &arg, ctx),
            Command::Dele(arg) => self.dele(text, &arg, ctx),
            Command::Rnfr(arg) => self.rnfr(text, &arg, ctx),
            Command::Rnto(arg) => self.rnto(text, &arg, rename_from, ctx),
            Command::List(arg) => self.listing(text, arg, ListingStyle::Long, ctx),
            Command::Nlst(arg) => self.listing(text, arg, ListingStyle::Names, ctx),
            Command::Mlsd(arg) => self.listing(text, arg, ListingStyle::Facts, ctx),
            Command::Mlst(arg) => self.mlst(text, arg, ctx),
            Command::Retr(arg) => self.retr(text, &arg, restart, ctx),
            Command::Stor(arg) => {
                let mode = if restart > 0 {
                    WriteMode::At(restart)
                } else {
                    WriteMode::Replace
                };
                self.stor(text, &arg, mode, ctx);
            }
            Command::Appe(arg) => self.stor(text, &arg, WriteMode::Append, ctx),
            Command::Stou(arg) => {
                let name = arg.unwrap_or_else(|| "ferry.upload".to_owned());
                self.stor(text, &name, WriteMode::Unique, ctx);
            }
            Command::Mfmt { time, path } => self.mfmt(text, &path, time, ctx),
            Command::Hash(arg) => self.hash(text, &arg, ctx),
            Command::Acct => self.finish(
                &text,
                Reply::new(ReplyCode::Superfluous, "No account needed here."),
            ),
            Command::Smnt => self.finish(
                &text,
                Reply::new(ReplyCode::NotImplemented, "SMNT not supported."),
            ),
            Command::Rein => self.rein(&text),
            Command::Auth(mechanism) => self.auth(&text, &mechanism),
            Command::Pbsz(_) => {
                let reply = if self.control.is_tls() {
                    self.pbsz = true;
                    Reply::new(ReplyCode::Ok, "PBSZ=0")
                } else {
                    Reply::new(ReplyCode::BadSequence, "PBSZ needs AUTH TLS first.")
                };
                self.finish(&text, reply);
            }
            Command::Prot(level) => self.prot(&text, level),
            // RFC 4217 §6: a server may refuse to drop TLS on the control connection.
            Command::Ccc => self.finish(
                &text,
                Reply::new(
                    ReplyCode::PolicyDenied,
                    "CCC refused: the control connection stays encrypted.",
                ),
            ),
            Command::Size(arg) => self.size(text, &arg, ctx),
            Command::Mdtm(arg) => self.mdtm(text, &arg, ctx),
            Command::Stat(None) => self.server_status(&text),
            Command::Stat(Some(arg)) => self.stat_path(text, &arg, ctx),
            Command::Abor => self.abor(&text),
            Command::Allo => self.finish(
                &text,
                Reply::new(ReplyCode::Superfluous, "ALLO is superfluous here."),
            ),
            Command::Noop => self.finish(&text, ok("NOOP ok.")),
            Command::Syst => self.finish(&text, Reply::new(ReplyCode::SystemType, "UNIX Type: L8")),
            Command::Feat => self.feat(&text),
            Command::Opts(opts) => self.opts(&text, opts),
            Command::Help(topic) => self.help(&text, topic),
            Command::Unknown(_) => {
                // The audit log writes the stderr line, within its noise budget.
                self.finish(
                    &text,
                    Reply::new(ReplyCode::NotImplemented, "Command not implemented."),
                );
            }
        }
    }

    /// The logged-in user's name; the login gate guarantees one for every command that calls
    /// this. A session without one answers 530 instead of panicking.
    fn user_or_reply(&mut self, text: &str) -> Option<Arc<str>> {
        let user = self.state.logged_in().map(|l| l.user.clone());
        if user.is_none() {
            self.finish(
                text,
                Reply::new(ReplyCode::NotLoggedIn, "Please log in with USER and PASS."),
            );
        }
        user
    }

    /// May this user change files?
    fn writable(&self) -> bool {
        !self.state.logged_in().is_some_and(|l| l.read_only)
    }

    /// Resolves a client path against the cwd; a refused name is answered here.
    fn resolve(&mut self, text: &str, arg: &str) -> Option<VPath> {
        match self.settings.cwd.resolve(arg) {
            Ok(path) => Some(path),
            Err(e) => {
                self.finish(text, replies::path(&e));
                None
            }
        }
    }

    /// The reply for a file-store error; local errors are logged with the session.
    pub(super) fn store_error(&self, e: &StoreError) -> Reply {
        match e {
            StoreError::TimedOut => {
                session_log!(warn, self, "wildcard expansion stopped at its deadline");
            }
            StoreError::Io(io) => session_log!(error, self, "file store: {io}"),
            _ => {}
        }
        replies::store(e)
    }

    /// The reply for an account error; local errors are logged with the session.
    fn auth_error(&self, e: &AuthError) -> Reply {
        if matches!(e, AuthError::Corrupt(_) | AuthError::Io(_)) {
            session_log!(error, self, "account registry: {e}");
        }
        replies::auth(e, self.env.config.get().min_password_length)
    }

    fn audit_file_event(&self, kind: EventKind, path: &VPath, target: Option<&VPath>) {
        let mut event = Event::now(self.id, self.peer, kind);
        event.user = self.user_name();
        event.path = Some(path.to_string());
        event.target = target.map(ToString::to_string);
        let code = match kind {
            EventKind::Mkdir => ReplyCode::PathCreated,
            _ => ReplyCode::FileActionOk,
        };
        event.code = Some(code.as_u16());
        self.record(event);
    }

    /// The shape of every command on one path: check the login and the name, ask the file
    /// store, then turn its answer into the final reply (`on_ok`) or an error reply.
    fn on_path<M, T>(
        &mut self,
        ctx: &mut Context<Self>,
        text: String,
        arg: &str,
        request: impl FnOnce(&Services, Arc<str>, VPath) -> RecipientRequest<M>,
        on_ok: impl FnOnce(&mut Session, T, VPath) -> Next + 'static,
    ) where
        M: Message<Result = Result<T, StoreError>> + crate::actors::Destination + Send + 'static,
        T: Send + 'static,
    {
        let Some(user) = self.user_or_reply(&text) else {
            return;
        };
        let Some(path) = self.resolve(&text, arg) else {
            return;
        };
        let request = request(&self.env.services, user, path.clone());
        self.ask(ctx, text, request, move |act, res, ctx, text| {
            match res.map(|found| on_ok(act, found, path)) {
                Ok(Next::Reply(reply)) => act.finish(&text, reply),
                Ok(Next::Status(entries)) => {
                    act.stream_status(ctx, text, entries, 0, SystemTime::now());
                }
                Ok(Next::Transfer { job, kind, opening }) => {
                    act.start_transfer(ctx, text, job, kind, &opening);
                }
                Err(e) => {
                    let reply = act.store_error(&e);
                    act.finish(&text, reply);
                }
            }
        });
    }
}
