//! The Session actor: one per control connection. It owns every piece of per-connection state
//! (login, cwd, TYPE, pending RNFR, the prepared data channel, the running transfer), so a slow
//! or hostile client can only hurt its own session.
//!
//! Ordering: a command that asks another actor runs with `ctx.wait`, so the next command is read
//! only after its reply is out (pipelined USER+PASS stay in order). A transfer runs with
//! `ctx.spawn`, so ABOR, STAT, NOOP and QUIT are still read while it goes on; other commands
//! wait until it ends. Every command ends in exactly one final reply, also when a service
//! actor fails: a mailbox error becomes 451.

/// Logs one line of a session, stamped with its id and client address:
/// `session_log!(info, session, "format", args...)`.
macro_rules! session_log {
    ($level:ident, $session:expr, $($arg:tt)+) => {
        log::$level!(
            "session {} {}: {}",
            $session.id,
            $session.peer,
            format_args!($($arg)+)
        )
    };
}

mod commands;
pub mod control;
pub(crate) mod replies;
pub mod state;
#[cfg(test)]
mod tests;

use std::collections::VecDeque;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use actix::prelude::*;
use tokio_util::codec::FramedRead;

use crate::actors::audit_log::{Event, EventKind, Record};
use crate::actors::file_store::CommitUpload;
use crate::actors::{AuditSender, Destination, Services};
use crate::admission::{SessionPermit, Shutdown};
use crate::codec::{Command, CommandError, FtpCodec, Inbound, Reply, ReplyCode};
use crate::config::LiveConfig;
use crate::net::ClientAddr;
use crate::storage::vpath::VPath;
use crate::storage::{Capabilities, ClientProbe};
use control::{Conn, Control};

use state::{LoginState, Settings};

/// Initial read buffer of a session: small, because an idle session should cost little memory
/// and command lines are short; it grows on demand.
const READ_BUFFER: usize = 256;
/// How long a closing session may take to flush its last reply before it is dropped.
const CLOSE_FLUSH: Duration = Duration::from_secs(5);
/// Commands held back while a transfer runs; a client pipelining more than this gets 503.
const MAX_DEFERRED: usize = 32;

/// What every session shares: the services and the configuration.
pub struct SessionEnv {
    /// Recipients of the service actors.
    pub services: Services,
    /// The server configuration in force (SIGHUP replaces what may change at once).
    pub config: LiveConfig,
    /// TLS for AUTH TLS and protected data connections; `None` when no certificate is set.
    pub tls: Option<tokio_rustls::TlsAcceptor>,
    /// Bans, per-user limits and bandwidth budgets shared by all sessions (and the nodes of
    /// a cluster).
    pub limits: Arc<dyn crate::state::SharedState>,
    /// TLS for protected data connections of uploads: no session tickets sent (see
    /// [`crate::tls::upload_config`]); set exactly when `tls` is.
    pub upload_tls: Option<tokio_rustls::TlsAcceptor>,
    /// The threads data transfers run on.
    pub transfers: Arc<crate::transfer::TransferPool>,
    /// What the storage backend can do: FEAT, HELP SITE and the refusals follow it.
    pub capabilities: Capabilities,
}

/// The writer task ended: after a requested close (`Ok`) or a failed connection.
#[derive(Message)]
#[rtype(result = "()")]
struct WriterEnded(std::io::Result<()>);

impl Handler<WriterEnded> for Session {
    type Result = ();

    fn handle(&mut self, WriterEnded(result): WriterEnded, ctx: &mut Context<Self>) {
        if let Err(e) = result {
            session_log!(info, self, "control write failed: {e}");
        }
        ctx.stop();
    }
}

/// Run the next command held back while a transfer ran. One message runs one command, so
/// they run in order (the items actix spawns, `ctx.notify` among them, are polled in no fixed
/// order).
#[derive(Message)]
#[rtype(result = "()")]
struct Deferred;

/// What a running transfer moves, for the audit log and the final reply.
#[derive(Debug, Clone)]
enum TransferKind {
    Listing,
    Download(VPath),
    Upload(VPath),
}

/// How a session ends once its running transfer is over.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum AfterTransfer {
    /// QUIT came during the transfer: 221 after it.
    Quit,
    /// The server is stopping: 421 after it.
    Shutdown,
    /// The account was deleted or disabled: 421 after it.
    AccountGone,
}

/// A transfer in progress. Its task runs on the transfer pool; dropping this (the session
/// ended) aborts it.
struct Running {
    task: tokio::task::AbortHandle,
    /// ABOR's command line once it came: the task is being dropped; its end sends 426, 226.
    aborting: Option<String>,
    cmd: String,
    kind: TransferKind,
    ascii: bool,
    started: Instant,
    progress: Arc<AtomicU64>,
    /// The task's outcome; closed without one once an aborted task is gone, and with it what
    /// the task held (an interrupted upload is kept or removed by then).
    outcome: Option<tokio::sync::oneshot::Receiver<crate::transfer::Outcome>>,
}

impl Drop for Running {
    fn drop(&mut self) {
        self.task.abort();
    }
}

/// The last events of a session that ended during a transfer, recorded once its task is gone,
/// so that the transfer's bytes count everything it wrote (the task may read a last chunk
/// before the abort reaches it). Sent when dropped, so they are recorded even if the wait
/// itself is dropped.
struct LastEvents {
    transfer: Option<Event>,
    close: Option<Event>,
    progress: Arc<AtomicU64>,
    audit: AuditSender,
}

impl Drop for LastEvents {
    fn drop(&mut self) {
        let transfer = self.transfer.take().map(|mut event| {
            event.bytes = Some(self.progress.load(Ordering::Relaxed));
            event
        });
        for event in transfer.into_iter().chain(self.close.take()) {
            self.audit.do_send(Record(event));
        }
    }
}

/// One control connection.
pub struct Session {
    id: u64,
    peer: ClientAddr,
    env: Arc<SessionEnv>,
    control: Control,
    /// The task that writes replies; aborted when the session stops.
    writer: tokio::task::JoinHandle<()>,
    state: LoginState,
    /// The logged-in user's place under `max_sessions_per_user`.
    user_slot: Option<crate::state::Lease>,
    /// What the client set; REIN puts it back to the default.
    settings: Settings,
    /// PBSZ was given after AUTH TLS (RFC 4217 §8), so PROT may follow. Kept by REIN, which
    /// keeps the protected control connection.
    pbsz: bool,
    /// PROT P: data connections are TLS (the default on an implicit-TLS connection). Kept by
    /// REIN, as `pbsz`.
    prot_private: bool,
    transfer: Option<Box<Running>>,
    deferred: VecDeque<Command>,
    connected: Instant,
    last_activity: Instant,
    closing: bool,
    after_transfer: Option<AfterTransfer>,
    permit: SessionPermit,
    /// Lines that are no command (empty, too long, not UTF-8) or name an unknown verb, in a
    /// row; see `max_bad_commands`.
    bad_commands: u32,
    /// The reason of a close the server chose, for the `session_close` event.
    closed_for: Option<String>,
    /// What the admin listener shows of this session.
    live: Arc<crate::admission::Live>,
}

impl Actor for Session {
    type Context = Context<Self>;

    fn started(&mut self, ctx: &mut Self::Context) {
        session_log!(debug, self, "connected");
        let me = ctx.address();
        self.permit.attach(crate::admission::Reach {
            shutdown: me.clone().recipient(),
            banned: me.clone().recipient(),
            gone: me.clone().recipient(),
            kick: me.recipient(),
            live: Arc::clone(&self.live),
        });
        self.record(Event::now(self.id, self.peer, EventKind::SessionOpen));
        self.send(Reply::new(
            ReplyCode::ServiceReady,
            "ferry FTP server ready.",
        ));
        self.arm_timer(ctx);
    }

    fn stopped(&mut self, _: &mut Self::Context) {
        self.writer.abort();
        let mut event = Event::now(self.id, self.peer, EventKind::SessionClose);
        event.user = self.user_name();
        if let Some(why) = self.closed_for.take() {
            event.command = Some(why);
            event.code = Some(ReplyCode::ServiceNotAvailable.as_u16());
        }
        match self.transfer.take() {
            Some(mut running) => {
                // The client left mid-transfer: no final reply goes out, but the command is
                // audited as aborted, like the transfer itself.
                self.record_command(&running.cmd, ReplyCode::TransferAborted);
                let outcome = running.outcome.take();
                let last = LastEvents {
                    transfer: self.transfer_event(&running, 0, ReplyCode::TransferAborted),
                    close: Some(event),
                    progress: Arc::clone(&running.progress),
                    audit: self.env.services.audit.clone(),
                };
                // Aborts the task; the arbiter outlives this actor and runs the wait.
                drop(running);
                actix::spawn(async move {
                    // A task that completed first hands over its upload: dropping it keeps
                    // or removes the file, which is blocking work.
                    if let Some(outcome) = outcome
                        && let Ok(outcome) = outcome.await
                    {
                        let _ = tokio::task::spawn_blocking(move || drop(outcome)).await;
                    }
                    drop(last);
                });
            }
            None => self.record(event),
        }
        session_log!(debug, self, "closed");
    }
}

impl Session {
    /// Starts a session for an accepted connection on the current arbiter.
    pub fn start(
        conn: Conn,
        id: u64,
        peer: ClientAddr,
        env: Arc<SessionEnv>,
        permit: SessionPermit,
    ) -> Addr<Session> {
        Session::create(move |ctx| {
            let live = crate::admission::Live::new(peer.into(), permit.moved());
            let implicit_tls = matches!(conn, Conn::Tls(_));
            let control = Control::new(conn);
            let control_writer = control.clone();
            ctx.add_stream(FramedRead::with_capacity(
                control.reader(),
                FtpCodec::new(env.config.get().max_line_length),
                READ_BUFFER,
            ));
            // The session lives as long as its writer: it ends after a requested close (221,
            // 421) or when the connection fails. The writer is a task of its own, not part of
            // the context, so it keeps draining while the session waits (`ctx.wait`) for it.
            let session = ctx.address().downgrade();
            let writer = actix::spawn(async move {
                let result = control_writer.write_all_replies().await;
                if let Some(session) = session.upgrade() {
                    session.do_send(WriterEnded(result));
                }
            });
            let now = Instant::now();
            Session {
                id,
                peer,
                env,
                control,
                writer,
                state: LoginState::new(),
                user_slot: None,
                settings: Settings::default(),
                pbsz: implicit_tls,
                prot_private: implicit_tls,
                transfer: None,
                deferred: VecDeque::new(),
                connected: now,
                last_activity: now,
                closing: false,
                after_transfer: None,
                permit,
                bad_commands: 0,
                closed_for: None,
                live,
            }
        })
    }

    fn user_name(&self) -> Option<String> {
        self.state.logged_in().map(|l| l.name.clone())
    }

    fn record(&self, event: Event) {
        // do_send queues even into a full mailbox: audit events are never dropped here.
        self.env.services.audit.do_send(Record(event));
    }

    fn send(&mut self, reply: Reply) {
        self.control.send(&reply);
    }

    /// Sends the final reply of `cmd` and records the command in the audit log.
    fn finish(&mut self, cmd: &str, reply: Reply) {
        let code = reply.code();
        // Garbage is what no client sends on the way to real work: lines that are not commands
        // (counted where they are read) and verbs we do not know. NOOP is no progress.
        if code == ReplyCode::NotImplemented {
            self.bad_commands = self.bad_commands.saturating_add(1);
        } else if code.as_u16() < 400 && cmd != "NOOP" {
            self.bad_commands = 0;
        }
        self.record_command(cmd, code);
        self.send(reply);
    }

    /// Records `cmd` and the code of its final reply in the audit log.
    fn record_command(&self, cmd: &str, code: ReplyCode) {
        let mut event = Event::now(self.id, self.peer, EventKind::Command);
        event.user = self.user_name();
        event.command = Some(cmd.to_owned());
        event.code = Some(code.as_u16());
        self.record(event);
    }

    /// Closes the session once it has sent `max_bad_commands` bad commands in a row.
    fn check_bad_commands(&mut self, ctx: &mut Context<Self>) {
        let max = self.env.config.get().max_bad_commands;
        if max == 0 || self.bad_commands < max || self.closing {
            return;
        }
        // No stderr line: a reconnect loop would write one per connection. The session_close
        // event carries the reason.
        self.closed_for = Some("too many bad commands".into());
        let reply = Reply::new(
            ReplyCode::ServiceNotAvailable,
            "Too many bad commands; closing control connection.",
        );
        self.close(None, reply, ctx);
    }

    /// Sends a last reply (221 or 421), then closes once it is flushed.
    fn close(&mut self, cmd: Option<&str>, reply: Reply, ctx: &mut Context<Self>) {
        match cmd {
            Some(cmd) => self.finish(cmd, reply),
            None => self.send(reply),
        }
        self.closing = true;
        self.settings.data = None;
        self.control.close();
        ctx.run_later(CLOSE_FLUSH, |_, ctx| ctx.stop());
    }

    /// Sends `msg` to a service and runs `then` with its answer, pausing the reading of further
    /// commands until then. A failed or closed service is answered 451 here, so `then` only sees
    /// real answers; `then` must reply (or ask again, passing `cmd` on).
    fn ask<M, F>(
        &mut self,
        ctx: &mut Context<Self>,
        cmd: String,
        request: actix::dev::RecipientRequest<M>,
        then: F,
    ) where
        M: Message + Destination + Send + 'static,
        M::Result: Send,
        F: FnOnce(&mut Session, M::Result, &mut Context<Session>, String) + 'static,
    {
        let in_flight = self.env.services.backlog.enter(M::SERVICE);
        let fut = request.into_actor(self).map(move |res, act, ctx| {
            // Answered: no longer in the actor's backlog.
            drop(in_flight);
            match res {
                Ok(answer) => then(act, answer, ctx, cmd),
                Err(e) => {
                    session_log!(error, act, "service failed: {e}");
                    act.finish(&cmd, replies::service_failed());
                }
            }
        });
        ctx.wait(fut);
    }

    fn arm_timer(&mut self, ctx: &mut Context<Self>) {
        let wait = self.deadline().saturating_duration_since(Instant::now());
        ctx.run_later(wait, |act, ctx| act.on_timer(ctx));
    }

    /// When the session times out if nothing happens: the idle timeout, and before login also
    /// the login timeout counted from the connection.
    fn deadline(&self) -> Instant {
        let config = &self.env.config.get();
        let idle = self.last_activity + config.idle_timeout();
        if self.state.logged_in().is_some() {
            idle
        } else {
            idle.min(self.connected + config.login_timeout())
        }
    }

    fn on_timer(&mut self, ctx: &mut Context<Self>) {
        if self.closing {
            return;
        }
        let now = Instant::now();
        if self.transfer.is_some() {
            // The idle clock stands still during a transfer; the data timeout guards it.
            self.last_activity = now;
        }
        if now < self.deadline() {
            self.arm_timer(ctx);
            return;
        }
        let why = if self.state.logged_in().is_none()
            && now >= self.connected + self.env.config.get().login_timeout()
        {
            "Login timeout; closing control connection."
        } else {
            "Idle timeout; closing control connection."
        };
        session_log!(info, self, "{why}");
        self.close(None, Reply::new(ReplyCode::ServiceNotAvailable, why), ctx);
    }

    /// Handles one command read from the client. While a transfer runs, or while commands held
    /// back during one are still waiting their turn, a command joins the queue, so replies keep
    /// the order of the commands; only ABOR (and NOOP, STAT, QUIT with nothing queued) is
    /// answered during a transfer.
    fn dispatch(&mut self, cmd: Command, ctx: &mut Context<Self>) {
        if self.transfer.is_none() && self.deferred.is_empty() {
            self.run_gated(cmd, ctx);
            return;
        }
        // While an ABOR waits for its transfer to end, everything waits behind its replies.
        let running = self.transfer.as_ref().is_some_and(|r| r.aborting.is_none());
        let now = match cmd {
            Command::Abor => running,
            Command::Stat(None) | Command::Noop | Command::Quit => {
                running && self.deferred.is_empty()
            }
            _ => false,
        };
        if now {
            self.run_gated(cmd, ctx);
        } else if self.deferred.len() < MAX_DEFERRED {
            self.deferred.push_back(cmd);
        } else {
            let text = cmd.to_string();
            self.finish(
                &text,
                Reply::new(ReplyCode::BadSequence, "Transfer in progress."),
            );
        }
    }

    /// Runs held-back commands after a transfer, one at a time: each next one is taken only
    /// once the previous one has replied (a `ctx.wait` holds the `Deferred` back).
    fn resume_deferred(&mut self, ctx: &mut Context<Self>) {
        if !self.deferred.is_empty() {
            ctx.notify(Deferred);
        }
    }

    /// Checks the login gate, then runs the command.
    fn run_gated(&mut self, cmd: Command, ctx: &mut Context<Self>) {
        let text = cmd.to_string();
        self.live.set_command(&text);
        if self.env.config.get().require_tls_login
            && !self.control.is_tls()
            && cmd.carries_password()
        {
            self.finish(
                &text,
                Reply::new(
                    ReplyCode::NotLoggedIn,
                    "TLS required: use AUTH TLS before logging in.",
                ),
            );
            return;
        }
        if self.state.logged_in().is_none() && !cmd.allowed_before_login() {
            self.finish(
                &text,
                Reply::new(ReplyCode::NotLoggedIn, "Please log in with USER and PASS."),
            );
            return;
        }
        if self.state.logged_in().is_some_and(|l| l.read_only) && cmd.is_write() {
            self.finish(
                &text,
                Reply::new(
                    ReplyCode::FileUnavailable,
                    "Permission denied: read-only access.",
                ),
            );
            return;
        }
        // RNTO must come right after RNFR (RFC 959 §4.1.3): any other command forgets it.
        let rename_from = self.settings.rename_from.take();
        self.run(cmd, text, rename_from, ctx);
    }

    fn transfer_done(
        &mut self,
        joined: Result<crate::transfer::Outcome, String>,
        ctx: &mut Context<Self>,
    ) {
        let Some(mut running) = self.transfer.take() else {
            return;
        };
        self.live.transfer_ended();
        let joined = match (running.aborting.take(), joined) {
            (Some(_), Ok(outcome)) if outcome.result.is_ok() => {
                // ABOR came too late: the transfer had already completed. It ends as usual
                // (226), then ABOR runs and finds no transfer (RFC 959 §4.1.3).
                self.deferred.push_front(Command::Abor);
                Ok(outcome)
            }
            (Some(abor), joined) => {
                // Cut short: the task has dropped its data socket and any staged file.
                drop(joined);
                let bytes = running.progress.load(Ordering::Relaxed);
                self.record_transfer(&running, bytes, ReplyCode::TransferAborted);
                // RFC 959 §4.1.3 ABOR: 426 for the aborted command, then 226 for ABOR itself.
                self.finish(
                    &running.cmd,
                    Reply::new(ReplyCode::TransferAborted, "Transfer aborted."),
                );
                self.finish(
                    &abor,
                    Reply::new(ReplyCode::TransferComplete, "ABOR successful."),
                );
                self.after_transfer(ctx);
                return;
            }
            (None, joined) => joined,
        };
        let outcome = joined.unwrap_or_else(|e| {
            session_log!(error, self, "transfer task failed: {e}");
            crate::transfer::Outcome {
                result: Err(crate::transfer::DataError::Local(std::io::Error::other(
                    "transfer task failed",
                ))),
                upload: None,
            }
        });
        match (outcome.result, outcome.upload) {
            (Ok(bytes), Some(upload)) => {
                // In stream mode a client killed mid-upload ends the data as one that finished
                // does, but it has closed this connection too (a client with commands queued
                // or a QUIT has not gone, even if it closed its side after them).
                let gone = if self.deferred.is_empty() && self.after_transfer.is_none() {
                    self.control.gone_probe().unwrap_or_else(|e| {
                        session_log!(warn, self, "cannot duplicate the control socket: {e}");
                        None
                    })
                } else {
                    None
                };
                let client = ClientProbe::new(move || gone.as_ref().is_some_and(|gone| gone()));
                let request = self.env.services.commit_upload.send(CommitUpload {
                    sink: upload,
                    client,
                });
                let in_flight = self.env.services.backlog.enter(CommitUpload::SERVICE);
                let fut = request.into_actor(self).map(move |res, act, ctx| {
                    drop(in_flight);
                    let reply = match res {
                        Ok(Ok(())) => Reply::new(ReplyCode::TransferComplete, "Transfer complete."),
                        Ok(Err(e)) => act.store_error(&e),
                        Err(e) => {
                            session_log!(error, act, "file store failed: {e}");
                            replies::commit_failed()
                        }
                    };
                    act.transfer_finished(running, bytes, reply, ctx);
                });
                ctx.wait(fut);
            }
            (Ok(bytes), None) => {
                let reply = Reply::new(ReplyCode::TransferComplete, "Transfer complete.");
                self.transfer_finished(running, bytes, reply, ctx);
            }
            (Err(e), _) => {
                session_log!(info, self, "transfer failed: {e:?}");
                let bytes = running.progress.load(Ordering::Relaxed);
                let reply = replies::data(&e);
                self.transfer_finished(running, bytes, reply, ctx);
            }
        }
    }

    fn transfer_finished(
        &mut self,
        running: Box<Running>,
        bytes: u64,
        reply: Reply,
        ctx: &mut Context<Self>,
    ) {
        self.record_transfer(&running, bytes, reply.code());
        self.finish(&running.cmd, reply);
        self.last_activity = Instant::now();
        self.after_transfer(ctx);
    }

    /// Once a transfer has ended (226/426/451 sent, or ABOR): close if QUIT or a shutdown came
    /// during it, else run the commands held back.
    pub(super) fn after_transfer(&mut self, ctx: &mut Context<Self>) {
        match self.after_transfer.take() {
            Some(AfterTransfer::Quit) => {
                self.close(
                    Some("QUIT"),
                    Reply::new(ReplyCode::Closing, "Goodbye."),
                    ctx,
                );
            }
            Some(AfterTransfer::Shutdown) => {
                let reply = Reply::new(ReplyCode::ServiceNotAvailable, "Server shutting down.");
                self.close(None, reply, ctx);
            }
            Some(AfterTransfer::AccountGone) => self.close_gone(ctx),
            None if self.closing => {}
            None => self.resume_deferred(ctx),
        }
    }

    fn record_transfer(&self, running: &Running, bytes: u64, code: ReplyCode) {
        if let Some(event) = self.transfer_event(running, bytes, code) {
            self.record(event);
        }
    }

    /// The audit event of a transfer that ended with `code`; none for a listing.
    fn transfer_event(&self, running: &Running, bytes: u64, code: ReplyCode) -> Option<Event> {
        let (kind, path) = match &running.kind {
            TransferKind::Listing => return None,
            TransferKind::Download(p) => (EventKind::Download, p),
            TransferKind::Upload(p) => (EventKind::Upload, p),
        };
        let mut event = Event::now(self.id, self.peer, kind);
        event.user = self.user_name();
        event.path = Some(path.to_string());
        event.bytes = Some(bytes);
        event.duration_ms =
            Some(u64::try_from(running.started.elapsed().as_millis()).unwrap_or(u64::MAX));
        event.code = Some(code.as_u16());
        event.ascii = Some(running.ascii);
        event.complete = Some(code == ReplyCode::TransferComplete);
        Some(event)
    }
}

impl StreamHandler<Result<Inbound, std::io::Error>> for Session {
    fn handle(&mut self, item: Result<Inbound, std::io::Error>, ctx: &mut Context<Self>) {
        if self.control.backlogged() {
            // The client is not reading its replies: take this line once they drain (ctx.wait
            // holds back the lines after it too).
            self.after_drain(ctx, move |act, ctx| act.handle_line(item, ctx));
            return;
        }
        self.handle_line(item, ctx);
    }
}

impl Session {
    /// Runs `then` once the pending replies have drained, holding back everything else
    /// meanwhile; stops the session instead if the connection fails first. The timers do not
    /// run during the wait, so it is bounded by the idle timeout: a client that reads nothing
    /// for that long is dropped.
    fn after_drain(
        &mut self,
        ctx: &mut Context<Self>,
        then: impl FnOnce(&mut Session, &mut Context<Session>) + 'static,
    ) {
        let drained =
            tokio::time::timeout(self.env.config.get().idle_timeout(), self.control.drained());
        ctx.wait(
            actix::fut::wrap_future(drained).map(|drained, act: &mut Session, ctx| {
                match drained {
                    Ok(true) => then(act, ctx),
                    // The writer ended: nobody will read what the command would answer.
                    Ok(false) => ctx.stop(),
                    Err(_) => {
                        session_log!(
                            info,
                            act,
                            "replies not read within the idle timeout; closing"
                        );
                        ctx.stop();
                    }
                }
            }),
        );
    }

    fn handle_line(&mut self, item: Result<Inbound, std::io::Error>, ctx: &mut Context<Self>) {
        if self.closing {
            return;
        }
        self.last_activity = Instant::now();
        match item {
            Ok(Inbound::Command(cmd)) => {
                self.dispatch(cmd, ctx);
                self.check_bad_commands(ctx);
            }
            Ok(Inbound::Malformed(err)) => {
                let reply = replies::command(&err, self.protocols());
                // A known verb with a bad argument is a mistake; a line that is no command at
                // all is garbage. The audit log writes the stderr line, within its budget.
                if matches!(
                    err,
                    CommandError::Empty | CommandError::TooLong | CommandError::NotUtf8
                ) {
                    self.bad_commands = self.bad_commands.saturating_add(1);
                }
                self.finish(&format!("<{err}>"), reply);
                self.check_bad_commands(ctx);
            }
            // Most clients (curl, lftp, wget, FileZilla) close a TLS control connection
            // without close_notify: for a control connection that is just its end.
            Err(e) if e.kind() == std::io::ErrorKind::UnexpectedEof => {
                session_log!(debug, self, "closed without TLS close_notify");
                ctx.stop();
            }
            Err(e) => {
                session_log!(info, self, "control read failed: {e}");
                ctx.stop();
            }
        }
    }
}

impl Handler<Deferred> for Session {
    type Result = ();

    fn handle(&mut self, _: Deferred, ctx: &mut Context<Self>) {
        if self.control.backlogged() {
            // As for lines read: the next held-back command waits until the replies drain.
            self.after_drain(ctx, |act, ctx| {
                Handler::<Deferred>::handle(act, Deferred, ctx)
            });
            return;
        }
        if self.closing || self.transfer.is_some() {
            // Closing drops the queue; a new transfer resumes it when it ends.
            return;
        }
        if let Some(cmd) = self.deferred.pop_front() {
            self.run_gated(cmd, ctx);
            self.resume_deferred(ctx);
        }
    }
}

impl Handler<crate::admission::Kick> for Session {
    type Result = ();

    /// An administrator ends this session: a running transfer is aborted (426), then 421, and
    /// the audit log's `session_close` says who.
    fn handle(&mut self, kick: crate::admission::Kick, ctx: &mut Context<Self>) {
        if self.closing {
            return;
        }
        session_log!(info, self, "ended by {}", kick.by);
        if self.transfer.is_some() {
            self.send(Reply::new(
                ReplyCode::TransferAborted,
                "Transfer aborted: the session was ended by the administrator.",
            ));
        }
        self.closed_for = Some(format!("ended by {}", kick.by));
        self.close(
            None,
            Reply::new(
                ReplyCode::ServiceNotAvailable,
                "Session ended by the administrator.",
            ),
            ctx,
        );
    }
}

impl Handler<Shutdown> for Session {
    type Result = ();

    fn handle(&mut self, _: Shutdown, ctx: &mut Context<Self>) {
        if self.closing {
            return;
        }
        if self.transfer.is_some() {
            // Let the transfer finish within the grace period; close right after it.
            self.after_transfer = Some(AfterTransfer::Shutdown);
            return;
        }
        self.close(
            None,
            Reply::new(ReplyCode::ServiceNotAvailable, "Server shutting down."),
            ctx,
        );
    }
}
