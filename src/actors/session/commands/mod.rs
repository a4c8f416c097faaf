//! One handler per command group: login and accounts, navigation, file actions, listings,
//! transfers, information. Each ends in exactly one final reply through `finish`, `close`, or
//! a transfer whose end replies.

use std::sync::Arc;
use std::sync::atomic::AtomicU64;
use std::time::{Duration, Instant, SystemTime};

use actix::dev::RecipientRequest;
use actix::prelude::*;

use super::replies::{self, Limit};
use super::state::{LoginState, Settings};
use super::{AfterTransfer, Running, Session, TransferKind};
use crate::actors::Services;
use crate::actors::acceptor::{AddressBanned, Refusal};
use crate::actors::account_registry::{
    AuthError, Authenticate, ChangePassword, RESERVED_NAMES, Register,
};
use crate::actors::audit_log::{Event, EventKind};
use crate::actors::data_channel::{self, DataPlan, Job};
use crate::actors::file_store::{
    ANONYMOUS, Chmod, CreateHome, FileInfo, FileKind, Hash, HashAlgo, List, Listing, Mkdir,
    OpenRead, OpenWrite, QuotaStatus, ReadHandle, Remove, Rename, Rmdir, SetModified, Stat,
    StoreError, Upload, WriteMode,
};
use crate::actors::vpath::VPath;
use crate::codec::command::{Opts, SITE_COMMANDS, SiteCommand, TransferType, VERBS};
use crate::codec::listing::{self, Facts, Role};
use crate::codec::{Command, CommandError, Password, Reply, ReplyCode, reply};
use crate::config::Registration;
use crate::state::{self, Direction, Failure};

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

/// Lines of a `STAT <dir>` reply queued at a time (about 25 KiB).
const STATUS_PIECE: usize = 256;

/// NLST's names, each as the client can name it back: joined to the argument as given, so
/// `NLST dir` yields `dir/a` and `NLST dir/*.dat` yields `dir/a.dat` (what vsftpd sends, and
/// what `mget` and `for n in nlst("dir"): RETR n` rely on); bare names with no argument; the
/// argument itself for a file.
fn names_as_given(given: &str, found: &Listing) -> Vec<String> {
    let prefix = if given.is_empty() {
        String::new()
    } else if found.is_dir {
        format!("{}/", given.trim_end_matches('/'))
    } else if found.matched {
        given
            .rsplit_once('/')
            .map_or_else(String::new, |(dir, _)| format!("{dir}/"))
    } else {
        return vec![given.to_owned()];
    };
    found
        .entries
        .iter()
        .map(|entry| format!("{prefix}{}", entry.name))
        .collect()
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
        replies::auth(e, self.env.config.min_password_length)
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

    // ---- login and accounts (RFC 959 §4.1.1; SITE extensions, DESIGN §4) ----

    fn user(&mut self, text: &str, name: String) {
        if self.state.user(name) {
            self.finish(
                text,
                Reply::new(ReplyCode::NeedPassword, "Please specify the password."),
            );
        } else {
            self.finish(
                text,
                Reply::new(ReplyCode::NotLoggedIn, "Cannot change to another user."),
            );
        }
    }

    fn pass(&mut self, text: String, password: Password, ctx: &mut Context<Self>) {
        use super::state::PassAction;
        match self.state.pass() {
            PassAction::NeedUser => self.finish(
                &text,
                Reply::new(ReplyCode::BadSequence, "Login with USER first."),
            ),
            PassAction::AlreadyLoggedIn => {
                self.finish(&text, Reply::new(ReplyCode::LoggedIn, "Already logged in."))
            }
            // No login of any kind from a banned address, whenever its connection was made.
            PassAction::Authenticate { .. } if self.refuse_banned(&text, ctx) => {}
            PassAction::Authenticate { user, .. }
                if self.env.config.anonymous_root.is_some()
                    && RESERVED_NAMES.contains(&user.to_ascii_lowercase().as_str()) =>
            {
                // RFC 1635: any password (customarily an e-mail address) is accepted.
                self.enter(ctx, &text, "anonymous", |state| state.anonymous(ANONYMOUS));
            }
            PassAction::Authenticate { user, failures } => {
                let request = Authenticate {
                    name: user.clone(),
                    password,
                };
                let send = move |s: &Services| s.authenticate.send(request);
                self.ask_hashed(ctx, text, send, move |act, res, ctx, text| match res {
                    // The ban may have begun while the password was checked.
                    Ok(_) if act.refuse_banned(&text, ctx) => {}
                    Ok(account) => {
                        let home: Arc<str> = Arc::from(account.name.as_str());
                        let request = act.env.services.create_home.send(CreateHome { user: home });
                        act.ask(ctx, text, request, move |act, res, ctx, text| match res {
                            Ok(()) => {
                                let name = account.name.to_string();
                                act.enter(ctx, &text, &name, |state| state.succeeded(account));
                            }
                            Err(e) => {
                                session_log!(error, act, "home of {user} unavailable: {e}");
                                act.finish(&text, replies::home_unavailable(&e));
                            }
                        });
                    }
                    Err(AuthError::WrongCredentials) => {
                        let failures = act.state.failed(failures);
                        act.login_failed(ctx, text, &user, failures);
                    }
                    Err(e) => {
                        let reply = act.auth_error(&e);
                        act.finish(&text, reply);
                    }
                });
            }
        }
    }

    /// Like `ask`, for a request that hashes a password (login, registration, password
    /// change): first waits for the address's turn at the hashing threads, so one address
    /// cannot queue more than its share in front of everybody else, checks the ban again after
    /// the wait, and holds the turn until the answer is in.
    fn ask_hashed<M, F>(
        &mut self,
        ctx: &mut Context<Self>,
        text: String,
        send: impl FnOnce(&Services) -> RecipientRequest<M> + 'static,
        then: F,
    ) where
        M: Message + Send + 'static,
        M::Result: Send,
        F: FnOnce(&mut Session, M::Result, &mut Context<Session>, String) + 'static,
    {
        let turn = self.env.limits.hash_turn(self.peer.ip());
        let fut = actix::fut::wrap_future::<_, Self>(turn).map(move |turn, act, ctx| {
            if act.refuse_banned(&text, ctx) {
                return;
            }
            let request = send(&act.env.services);
            act.ask(ctx, text, request, move |act, answer, ctx, text| {
                drop(turn);
                then(act, answer, ctx, text);
            });
        });
        ctx.wait(fut);
    }

    /// Is the address banned now? Yes when the bans cannot be read.
    fn banned(&self) -> bool {
        self.env.limits.banned(self.peer.ip()).unwrap_or_else(|e| {
            state::unavailable("login", &e);
            true
        })
    }

    /// If the address is banned now: audited, answered 421 and closed; returns true.
    fn refuse_banned(&mut self, text: &str, ctx: &mut Context<Self>) -> bool {
        if !self.banned() {
            return false;
        }
        session_log!(info, self, "refused: address banned");
        let mut event = Event::now(self.id, self.peer, EventKind::Refused);
        event.user = self.user_name();
        let reply = replies::refusal(Refusal::Banned);
        event.command = Some("address banned".to_owned());
        event.code = Some(reply.code().as_u16());
        self.record(event);
        self.close(Some(text), reply, ctx);
        true
    }

    /// Logs the user in (`log_in` sets the state), unless they already have as many sessions
    /// as `max_sessions_per_user` allows: then 421 and close, as for the other session caps
    /// (clients such as rclone retry a 421, not a 530, which reads as a wrong password).
    fn enter(
        &mut self,
        ctx: &mut Context<Self>,
        text: &str,
        name: &str,
        log_in: impl FnOnce(&mut LoginState),
    ) {
        let slot = self.env.limits.user_session(name).unwrap_or_else(|e| {
            state::unavailable("login", &e);
            None
        });
        let Some(slot) = slot else {
            session_log!(info, self, "refused: {name} has too many sessions");
            let mut event = Event::now(self.id, self.peer, EventKind::Refused);
            event.user = Some(name.to_owned());
            let reply = replies::limit(Limit::UserSessions);
            event.command = Some("too many sessions for this user".to_owned());
            event.code = Some(reply.code().as_u16());
            self.record(event);
            self.close(Some(text), reply, ctx);
            return;
        };
        log_in(&mut self.state);
        self.user_slot = Some(slot);
        self.settings.cwd = VPath::root();
        let mut event = Event::now(self.id, self.peer, EventKind::LoginOk);
        event.user = self.user_name();
        self.record(event);
        session_log!(info, self, "{name} logged in");
        let text_ok = if self.writable() {
            "Login successful."
        } else {
            "Login successful; read-only access."
        };
        self.finish(text, Reply::new(ReplyCode::LoggedIn, text_ok));
    }

    /// A wrong password (PASS, or the old password of SITE PASSWD): audited, counted for the
    /// address over all its connections, answered 530 after a delay that doubles with each
    /// recent failure of the address (so guessing is slow however many connections it uses),
    /// the connection closed after `max_login_failures` on it or once the address is banned,
    /// and the address banned after too many failures from it; a ban also ends its other
    /// sessions that are not logged in.
    fn login_failed(&mut self, ctx: &mut Context<Self>, text: String, user: &str, failures: u8) {
        let mut event = Event::now(self.id, self.peer, EventKind::LoginFailed);
        event.user = Some(user.to_owned());
        self.record(event);
        session_log!(info, self, "login failed for {user:?}");
        let failure = self
            .env
            .limits
            .login_failed(self.peer.ip())
            .unwrap_or_else(|e| {
                state::unavailable("login", &e);
                // The longest delay, and the connection closes (the ban cannot be read).
                Failure {
                    recent: usize::MAX,
                    ban: None,
                }
            });
        if let Some(length) = failure.ban {
            session_log!(
                warn,
                self,
                "address banned for {}s after too many failed logins",
                length.as_secs()
            );
            let mut event = Event::now(self.id, self.peer, EventKind::Banned);
            event.duration_ms = Some(u64::try_from(length.as_millis()).unwrap_or(u64::MAX));
            self.record(event);
            self.permit.address_banned();
        }
        let banned = failure.ban.is_some() || self.banned();
        let config = &self.env.config;
        let last = banned || failures >= config.max_login_failures;
        let doublings = u32::try_from(failure.recent.saturating_sub(1))
            .unwrap_or(u32::MAX)
            .min(3);
        let delay =
            Duration::from_millis(config.login_failure_delay_ms.saturating_mul(1 << doublings));
        let respond = actix::clock::sleep(delay)
            .into_actor(self)
            .map(move |(), act, ctx| {
                act.finish(
                    &text,
                    Reply::new(ReplyCode::NotLoggedIn, "Login incorrect."),
                );
                if last {
                    act.close(
                        None,
                        Reply::new(
                            ReplyCode::ServiceNotAvailable,
                            "Too many failed logins; closing.",
                        ),
                        ctx,
                    );
                }
            });
        ctx.wait(respond);
    }

    fn site(&mut self, text: String, site: SiteCommand, ctx: &mut Context<Self>) {
        match site {
            SiteCommand::Register { user, password } => {
                if self.state.logged_in().is_some() {
                    self.finish(
                        &text,
                        Reply::new(ReplyCode::BadSequence, "Already logged in."),
                    );
                    return;
                }
                let (password, code) = match self.env.config.registration {
                    Registration::Closed => {
                        self.finish(
                            &text,
                            Reply::new(ReplyCode::FileUnavailable, "Registration is closed."),
                        );
                        return;
                    }
                    Registration::Open => (password, None),
                    // The password may hold spaces; the invitation code is the last word.
                    Registration::Invite => match password.expose().rsplit_once(' ') {
                        Some((secret, code)) if !secret.is_empty() && !code.is_empty() => {
                            (Password::new(secret), Some(code.to_owned()))
                        }
                        _ => {
                            self.finish(
                                &text,
                                Reply::new(
                                    ReplyCode::BadArguments,
                                    "Registration needs an invitation: SITE REGISTER <user> <password> <code>.",
                                ),
                            );
                            return;
                        }
                    },
                };
                let request = Register {
                    name: user.clone(),
                    password,
                    code,
                    peer: self.peer.ip(),
                };
                let send = move |s: &Services| s.register.send(request);
                self.ask_hashed(ctx, text, send, move |act, res, ctx, text| match res {
                    Ok(account) => {
                        let name: Arc<str> = Arc::from(account.name.as_str());
                        let mut event = Event::now(act.id, act.peer, EventKind::Register);
                        event.user = Some(name.to_string());
                        act.record(event);
                        session_log!(info, act, "registered {name}");
                        let request = act.env.services.create_home.send(CreateHome { user: name });
                        act.ask(ctx, text, request, |act, res, _, text| {
                            let reply = match res {
                                Ok(()) => Reply::new(
                                    ReplyCode::Ok,
                                    "Account created; log in with USER and PASS.",
                                ),
                                Err(e) => act.store_error(&e),
                            };
                            act.finish(&text, reply);
                        });
                    }
                    Err(e) => {
                        let reply = act.auth_error(&e);
                        if matches!(
                            e,
                            AuthError::TooManyRegistrations
                                | AuthError::BadInvite
                                | AuthError::InviteRequired
                        ) {
                            let mut event =
                                Event::now(act.id, act.peer, EventKind::RegisterRefused);
                            event.user = Some(user);
                            event.code = Some(reply.code().as_u16());
                            // The audit log writes the stderr line, within its noise budget.
                            act.record(event);
                        }
                        act.finish(&text, reply);
                    }
                });
            }
            SiteCommand::Quota => {
                let Some(user) = self.user_or_reply(&text) else {
                    return;
                };
                let request = self.env.services.quota.send(QuotaStatus { user });
                self.ask(ctx, text, request, |act, res, _, text| {
                    let reply = match res {
                        Ok(report) => {
                            let mut lines = vec!["Quota:".to_owned()];
                            lines.extend(report.lines().into_iter().map(|l| format!(" {l}")));
                            lines.push("End of quota.".to_owned());
                            Reply::multi(ReplyCode::SystemStatus, lines)
                        }
                        Err(e) => act.store_error(&e),
                    };
                    act.finish(&text, reply);
                });
            }
            SiteCommand::Passwd { old, new } => {
                let Some(name) = self.state.logged_in().and_then(|l| l.account.clone()) else {
                    self.finish(
                        &text,
                        Reply::new(ReplyCode::FileUnavailable, "No password to change here."),
                    );
                    return;
                };
                let request = ChangePassword {
                    name: name.clone(),
                    old,
                    new,
                };
                let send = move |s: &Services| s.change_password.send(request);
                self.ask_hashed(ctx, text, send, move |act, res, ctx, text| match res {
                    Ok(()) => act.finish(&text, Reply::new(ReplyCode::Ok, "Password changed.")),
                    // A wrong old password is a password guess like a wrong PASS.
                    Err(AuthError::WrongCredentials) => {
                        let failures = act.state.password_failed();
                        act.login_failed(ctx, text, name.as_str(), failures);
                    }
                    Err(e) => {
                        let reply = act.auth_error(&e);
                        act.finish(&text, reply);
                    }
                });
            }
            SiteCommand::Chmod { mode, path } => {
                let chmod =
                    move |s: &Services, user, path| s.chmod.send(Chmod { user, path, mode });
                self.on_path(ctx, text, &path, chmod, |_, (), _| {
                    Next::Reply(Reply::new(ReplyCode::Ok, "SITE CHMOD command ok."))
                });
            }
            SiteCommand::Help => {
                let reply = site_help();
                self.finish(&text, reply);
            }
            SiteCommand::Unknown(sub) => self.finish(
                &text,
                Reply::new(
                    ReplyCode::NotImplemented,
                    format!("SITE {sub} not implemented; see SITE HELP."),
                ),
            ),
        }
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
        M: Message<Result = Result<T, StoreError>> + Send + 'static,
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

    // ---- navigation and file actions (RFC 959 §4.1.1, §4.1.3) ----

    fn cwd(&mut self, text: String, arg: &str, ctx: &mut Context<Self>) {
        let stat = |s: &Services, user, path| s.stat.send(Stat { user, path });
        self.on_path(ctx, text, arg, stat, |act, info: FileInfo, path| {
            Next::Reply(if info.kind == FileKind::Dir {
                act.settings.cwd = path;
                Reply::new(ReplyCode::FileActionOk, "Directory successfully changed.")
            } else {
                Reply::new(ReplyCode::FileUnavailable, "Not a directory.")
            })
        });
    }

    fn mkd(&mut self, text: String, arg: &str, ctx: &mut Context<Self>) {
        let mkdir = |s: &Services, user, path| s.mkdir.send(Mkdir { user, path });
        self.on_path(ctx, text, arg, mkdir, |act, (), path| {
            act.audit_file_event(EventKind::Mkdir, &path, None);
            Next::Reply(Reply::path(path.as_str(), "created."))
        });
    }

    fn rmd(&mut self, text: String, arg: &str, ctx: &mut Context<Self>) {
        let rmdir = |s: &Services, user, path| s.rmdir.send(Rmdir { user, path });
        self.on_path(ctx, text, arg, rmdir, |act, (), path| {
            act.audit_file_event(EventKind::Rmdir, &path, None);
            Next::Reply(Reply::new(ReplyCode::FileActionOk, "Directory removed."))
        });
    }

    fn dele(&mut self, text: String, arg: &str, ctx: &mut Context<Self>) {
        let remove = |s: &Services, user, path| s.remove.send(Remove { user, path });
        self.on_path(ctx, text, arg, remove, |act, (), path| {
            act.audit_file_event(EventKind::Delete, &path, None);
            Next::Reply(Reply::new(ReplyCode::FileActionOk, "File deleted."))
        });
    }

    fn rnfr(&mut self, text: String, arg: &str, ctx: &mut Context<Self>) {
        let stat = |s: &Services, user, path| s.stat.send(Stat { user, path });
        self.on_path(ctx, text, arg, stat, |act, _: FileInfo, path| {
            Next::Reply(if path.is_root() {
                Reply::new(
                    ReplyCode::FileUnavailable,
                    "Cannot rename the home directory.",
                )
            } else {
                act.settings.rename_from = Some(path);
                Reply::new(ReplyCode::PendingFurtherInfo, "Ready for RNTO.")
            })
        });
    }

    fn rnto(&mut self, text: String, arg: &str, from: Option<VPath>, ctx: &mut Context<Self>) {
        let Some(from) = from else {
            self.finish(
                &text,
                Reply::new(ReplyCode::BadSequence, "RNFR required first."),
            );
            return;
        };
        let source = from.clone();
        let rename = move |s: &Services, user, to| s.rename.send(Rename { user, from, to });
        self.on_path(ctx, text, arg, rename, move |act, (), to| {
            act.audit_file_event(EventKind::Rename, &source, Some(&to));
            Next::Reply(Reply::new(ReplyCode::FileActionOk, "Rename successful."))
        });
    }

    // ---- information (RFC 3659 §3, §4, §7; RFC 959 STAT) ----

    fn size(&mut self, text: String, arg: &str, ctx: &mut Context<Self>) {
        if self.settings.ascii {
            // RFC 3659 §4: in ASCII type the size must be that of the converted stream; a wrong
            // number is worse than none, so refuse (as ProFTPD does).
            self.finish(
                &text,
                Reply::new(
                    ReplyCode::FileUnavailable,
                    "SIZE not allowed in ASCII mode.",
                ),
            );
            return;
        }
        self.stat_file(text, arg, ctx, |info| info.size.to_string());
    }

    fn mdtm(&mut self, text: String, arg: &str, ctx: &mut Context<Self>) {
        self.stat_file(text, arg, ctx, |info| listing::timeval(info.modified));
    }

    /// SIZE and MDTM: 213 with one fact of a regular file.
    fn stat_file(
        &mut self,
        text: String,
        arg: &str,
        ctx: &mut Context<Self>,
        fact: fn(&FileInfo) -> String,
    ) {
        let stat = |s: &Services, user, path| s.stat.send(Stat { user, path });
        self.on_path(ctx, text, arg, stat, move |_, info: FileInfo, _| {
            Next::Reply(if info.kind == FileKind::File {
                Reply::new(ReplyCode::FileStatus, fact(&info))
            } else {
                Reply::new(ReplyCode::FileUnavailable, "Not a plain file.")
            })
        });
    }

    fn mlst(&mut self, text: String, arg: Option<String>, ctx: &mut Context<Self>) {
        let stat = |s: &Services, user, path| s.stat.send(Stat { user, path });
        let arg = arg.unwrap_or_default();
        self.on_path(ctx, text, &arg, stat, |act, mut info: FileInfo, path| {
            // RFC 3659 §7.2: the fact line names the object by its full pathname.
            info.name = path.to_string();
            let line = listing::mlsx_line(&info, act.settings.facts, Role::Entry, act.writable());
            Next::Reply(Reply::multi(
                ReplyCode::FileActionOk,
                vec![
                    format!("Listing {path}"),
                    format!(" {line}"),
                    "End".to_owned(),
                ],
            ))
        });
    }

    fn stat_path(&mut self, text: String, arg: &str, ctx: &mut Context<Self>) {
        let list = |s: &Services, user, path| {
            s.list.send(List {
                user,
                path,
                expand: false,
            })
        };
        self.on_path(ctx, text, arg, list, |act, found: Listing, path| {
            let first = format!("Status of {path}:");
            act.control
                .send_piece(|out| reply::encode_first(ReplyCode::FileStatus, &first, out));
            Next::Status(found.entries)
        });
    }

    /// Queues the STAT lines of `entries[from..]` a piece at a time, each piece once the
    /// client has read the previous ones, so the pending replies stay under the writer's bound
    /// however big the directory. Nothing else is sent meanwhile (`after_drain` holds the
    /// context), so the multi-line reply stays whole.
    fn stream_status(
        &mut self,
        ctx: &mut Context<Self>,
        text: String,
        entries: Vec<FileInfo>,
        from: usize,
        now: SystemTime,
    ) {
        let end = entries.len().min(from.saturating_add(STATUS_PIECE));
        let piece = entries.get(from..end).unwrap_or_default();
        self.control.send_piece(|out| {
            for entry in piece {
                reply::encode_middle(&listing::list_line(entry, now), out);
            }
        });
        if end < entries.len() {
            self.after_drain(ctx, move |act, ctx| {
                act.stream_status(ctx, text, entries, end, now);
            });
            return;
        }
        self.control
            .send_piece(|out| reply::encode_last(ReplyCode::FileStatus, "End of status.", out));
        self.record_command(&text, ReplyCode::FileStatus);
    }

    fn server_status(&mut self, text: &str) {
        let mut lines = vec![
            "ferry FTP server status:".to_owned(),
            format!("Connected from {}", self.peer),
        ];
        match self.state.logged_in() {
            Some(l) => lines.push(format!("Logged in as {}", l.user)),
            None => lines.push("Not logged in".to_owned()),
        }
        lines.push(format!(
            "TYPE: {}, STRUcture: File, MODE: Stream",
            if self.settings.ascii {
                "ASCII"
            } else {
                "BINARY"
            }
        ));
        match &self.transfer {
            Some(running) => lines.push(format!(
                "Transfer in progress: {} bytes so far",
                running.progress.load(std::sync::atomic::Ordering::Relaxed)
            )),
            None if self.settings.data.is_some() => {
                lines.push("Data connection prepared".to_owned());
            }
            None => lines.push("No data connection".to_owned()),
        }
        lines.push("End of status".to_owned());
        self.finish(text, Reply::multi(ReplyCode::SystemStatus, lines));
    }

    fn feat(&mut self, text: &str) {
        // RFC 2389 §3.2: each feature line starts with a space. Exactly what is implemented.
        let hashes: Vec<String> = HashAlgo::ALL
            .iter()
            .map(|a| {
                let star = if *a == self.settings.hash_algo {
                    "*"
                } else {
                    ""
                };
                format!("{}{star}", a.name())
            })
            .collect();
        let mut lines = vec!["Features:".to_owned()];
        if self.env.tls.is_some() {
            lines.push(" AUTH TLS".to_owned());
        }
        lines.extend([
            " EPRT".to_owned(),
            " EPSV".to_owned(),
            format!(" HASH {}", hashes.join(";")),
            " MDTM".to_owned(),
            " MFMT".to_owned(),
            format!(" MLST {}", self.settings.facts.feat_line()),
            " PASV".to_owned(),
        ]);
        if self.env.tls.is_some() {
            lines.extend([" PBSZ".to_owned(), " PROT".to_owned()]);
        }
        lines.extend([
            " REST STREAM".to_owned(),
            " SIZE".to_owned(),
            " UTF8".to_owned(),
            "End".to_owned(),
        ]);
        self.finish(text, Reply::multi(ReplyCode::SystemStatus, lines));
    }

    fn opts(&mut self, text: &str, opts: Opts) {
        let reply = match opts {
            // RFC 2640: names are always UTF-8 here, so both settings are accepted.
            Opts::Utf8(_) => Reply::new(ReplyCode::Ok, "Always in UTF8 mode."),
            Opts::Mlst(names) => {
                self.settings.facts = Facts::select(&names);
                Reply::new(
                    ReplyCode::Ok,
                    format!("MLST OPTS {}", self.settings.facts.names()),
                )
            }
            // draft-bryan-ftpext-hash §3.2: without an argument, name the selected algorithm.
            Opts::Hash(None) => Reply::new(ReplyCode::Ok, self.settings.hash_algo.name()),
            Opts::Hash(Some(name)) => match HashAlgo::from_name(&name) {
                Some(algo) => {
                    self.settings.hash_algo = algo;
                    Reply::new(ReplyCode::Ok, algo.name())
                }
                None => Reply::new(ReplyCode::BadArguments, "Unknown algorithm."),
            },
            Opts::Other(o) => Reply::new(
                ReplyCode::BadArguments,
                format!("Option not understood: {o}"),
            ),
        };
        self.finish(text, reply);
    }

    fn help(&mut self, text: &str, topic: Option<String>) {
        let reply = match topic.as_deref() {
            None => {
                let mut lines = vec!["The following commands are recognized:".to_owned()];
                for chunk in VERBS.chunks(8) {
                    let names: Vec<&str> = chunk.iter().map(|(v, _)| *v).collect();
                    lines.push(format!(" {}", names.join(" ")));
                }
                lines.push("Use HELP <verb> for its syntax, HELP SITE for SITE commands.".into());
                Reply::multi(ReplyCode::Help, lines)
            }
            Some("SITE") => site_help(),
            Some(verb) => match VERBS.iter().find(|(v, _)| *v == verb) {
                Some((_, syntax)) => Reply::new(ReplyCode::Help, format!("Syntax: {syntax}")),
                None => Reply::new(ReplyCode::BadArguments, format!("Unknown command {verb}.")),
            },
        };
        self.finish(text, reply);
    }

    // ---- data connections and transfers (RFC 959 §3.2-3.3, RFC 2428) ----

    fn pasv(&mut self, text: &str, extended: bool) {
        if self.settings.epsv_all && !extended {
            self.finish(
                text,
                Reply::new(
                    ReplyCode::BadSequence,
                    "Only EPSV is allowed after EPSV ALL.",
                ),
            );
            return;
        }
        let local_ip = self.peer.local().ip();
        let announced = match (extended, self.env.config.passive_address, local_ip) {
            (true, _, _) => None,
            (false, Some(std::net::IpAddr::V4(v4)), _) => Some(v4),
            (false, _, std::net::IpAddr::V4(v4)) => Some(v4),
            (false, _, std::net::IpAddr::V6(v6)) => match v6.to_ipv4_mapped() {
                Some(v4) => Some(v4),
                None => {
                    self.finish(
                        text,
                        Reply::new(
                            ReplyCode::CantOpenData,
                            "PASV is IPv4 only; use EPSV over IPv6.",
                        ),
                    );
                    return;
                }
            },
        };
        let listener = match data_channel::bind_passive(local_ip, self.env.config.passive_ports) {
            Ok(l) => l,
            Err(e) => {
                session_log!(warn, self, "no passive port: {e}");
                self.finish(
                    text,
                    Reply::new(ReplyCode::CantOpenData, "No passive port available."),
                );
                return;
            }
        };
        let port = match listener.local_addr() {
            Ok(addr) => addr.port(),
            Err(e) => {
                session_log!(warn, self, "passive listener: {e}");
                self.finish(
                    text,
                    Reply::new(ReplyCode::CantOpenData, "Cannot open data connection."),
                );
                return;
            }
        };
        // Under PROT P the connection is taken, and a TLS handshake the client starts before
        // its transfer command is answered, as soon as the connection arrives.
        self.settings.data = Some(
            match self.env.upload_tls.as_ref().filter(|_| self.prot_private) {
                Some(tls) => DataPlan::Prepared(data_channel::prepare(
                    &self.env.transfers,
                    listener,
                    self.channel(),
                    self.protection(tls),
                )),
                None => DataPlan::Passive(listener),
            },
        );
        let reply = match announced {
            None => Reply::new(
                ReplyCode::ExtendedPassiveMode,
                format!("Entering Extended Passive Mode (|||{port}|)."),
            ),
            Some(ip) => {
                let [a, b, c, d] = ip.octets();
                Reply::new(
                    ReplyCode::PassiveMode,
                    format!(
                        "Entering Passive Mode ({a},{b},{c},{d},{},{}).",
                        port >> 8,
                        port & 0xff
                    ),
                )
            }
        };
        self.finish(text, reply);
    }

    /// The RFC 2428 network protocol of the control connection: 1 (IPv4, also when mapped
    /// into IPv6) or 2 (IPv6).
    fn network_protocol(&self) -> u8 {
        if data_channel::canonical(self.peer.local().ip()).is_ipv4() {
            1
        } else {
            2
        }
    }

    /// Whether the server listens on `ip`'s network protocol: an IPv4 address, or an
    /// unspecified IPv6 one (dual-stack), takes IPv4; any IPv6 address takes IPv6.
    fn listens_on(&self, ip: std::net::IpAddr) -> bool {
        let config = &self.env.config;
        let mut listeners = config.listen.iter().chain(&config.implicit_tls_listen);
        if ip.is_ipv4() {
            listeners.any(|a| a.is_ipv4() || a.ip().is_unspecified())
        } else {
            listeners.any(std::net::SocketAddr::is_ipv6)
        }
    }

    /// The network protocols the server listens on, as a `522` names them (RFC 2428 §2, §3).
    pub(super) fn protocols(&self) -> &'static str {
        let v4 = std::net::Ipv4Addr::UNSPECIFIED.into();
        let v6 = std::net::Ipv6Addr::UNSPECIFIED.into();
        match (self.listens_on(v4), self.listens_on(v6)) {
            (true, false) => "1",
            (false, true) => "2",
            _ => "1,2",
        }
    }

    /// Checks that a data connection was prepared; 425 otherwise (RFC 959 §5.4).
    fn need_data(&mut self, text: &str) -> bool {
        if self.settings.data.is_none() {
            self.finish(
                text,
                Reply::new(
                    ReplyCode::CantOpenData,
                    "Use PASV, EPSV, PORT or EPRT first.",
                ),
            );
            return false;
        }
        true
    }

    fn listing(
        &mut self,
        text: String,
        arg: Option<String>,
        style: ListingStyle,
        ctx: &mut Context<Self>,
    ) {
        if !self.need_data(&text) {
            return;
        }
        // MLSD names a directory (RFC 3659 §7.1); wildcard patterns are for LIST and NLST.
        let expand = !matches!(style, ListingStyle::Facts);
        let list = move |s: &Services, user, path| s.list.send(List { user, path, expand });
        let arg = arg.unwrap_or_default();
        let given = arg.clone();
        self.on_path(ctx, text, &arg, list, move |act, found: Listing, path| {
            if matches!(style, ListingStyle::Facts) && !found.is_dir {
                // RFC 3659 §7.2.2: MLSD of something that is not a directory is an error.
                return Next::Reply(Reply::new(
                    ReplyCode::BadArguments,
                    format!("{path} is not a directory."),
                ));
            }
            let now = SystemTime::now();
            let facts = act.settings.facts;
            let writable = act.writable();
            let bytes = match style {
                ListingStyle::Long => {
                    listing::to_wire(found.entries.iter().map(|e| listing::list_line(e, now)))
                }
                ListingStyle::Names => listing::to_wire(
                    names_as_given(&given, &found)
                        .iter()
                        .map(|name| listing::display_name(name).into_owned()),
                ),
                // RFC 3659 §7.5.1: the listed directory (cdir) and its parent (pdir) first.
                ListingStyle::Facts => listing::to_wire(
                    found
                        .this
                        .iter()
                        .map(|d| listing::mlsx_line(d, facts, Role::Current, writable))
                        .chain(
                            found
                                .parent
                                .iter()
                                .map(|p| listing::mlsx_line(p, facts, Role::Parent, writable)),
                        )
                        .chain(
                            found
                                .entries
                                .iter()
                                .map(|e| listing::mlsx_line(e, facts, Role::Entry, writable)),
                        ),
                ),
            };
            Next::Transfer {
                job: Job::SendBytes(bytes),
                kind: TransferKind::Listing,
                opening: "Here comes the directory listing.".to_owned(),
            }
        });
    }

    fn retr(&mut self, text: String, arg: &str, offset: u64, ctx: &mut Context<Self>) {
        if !self.need_data(&text) {
            return;
        }
        let open =
            move |s: &Services, user, path| s.open_read.send(OpenRead { user, path, offset });
        self.on_path(
            ctx,
            text,
            arg,
            open,
            move |act, handle: ReadHandle, path| {
                if offset > handle.size {
                    // RFC 3659 §5.4: a marker past the end is an invalid REST parameter.
                    return Next::Reply(act.store_error(&StoreError::BadOffset));
                }
                let mode = if act.settings.ascii {
                    "ASCII"
                } else {
                    "BINARY"
                };
                Next::Transfer {
                    opening: format!(
                        "Opening {mode} mode data connection for {path} ({} bytes).",
                        handle.size
                    ),
                    job: Job::SendFile {
                        file: handle.file,
                        ascii: act.settings.ascii,
                    },
                    kind: TransferKind::Download(path),
                }
            },
        );
    }

    /// STOR, APPE, STOU and REST+STOR: `mode` says how the file is written.
    fn stor(&mut self, text: String, arg: &str, mode: WriteMode, ctx: &mut Context<Self>) {
        if !self.need_data(&text) {
            return;
        }
        if arg.ends_with('/') {
            // A trailing slash names a directory; no file may be created under that name.
            self.finish(
                &text,
                Reply::new(ReplyCode::NameNotAllowed, "Not a file name."),
            );
            return;
        }
        let open =
            move |s: &Services, user, path| s.open_write.send(OpenWrite { user, path, mode });
        self.on_path(ctx, text, arg, open, move |act, upload: Upload, _| {
            let target = upload.target.clone();
            // RFC 1123 §4.1.2.9: STOU's 150 reply names the file as "FILE: name".
            let opening = if mode == WriteMode::Unique {
                format!("FILE: {}", target.file_name().unwrap_or_default())
            } else {
                format!("Ok to send data for {target}.")
            };
            Next::Transfer {
                opening,
                job: Job::Receive {
                    upload,
                    ascii: act.settings.ascii,
                },
                kind: TransferKind::Upload(target),
            }
        });
    }

    /// PORT and EPRT (RFC 959 §4.1.2, RFC 2428 §2): active mode, only back to the client's own
    /// address and to an unprivileged port, so the server cannot be used to attack a third host
    /// ("FTP bounce", RFC 2577).
    fn port(&mut self, text: &str, target: std::net::SocketAddr) {
        if self.settings.epsv_all {
            self.finish(
                text,
                Reply::new(
                    ReplyCode::BadSequence,
                    "Only EPSV is allowed after EPSV ALL.",
                ),
            );
            return;
        }
        if !self.peer.allows_active_target(target) {
            session_log!(warn, self, "refused active-mode target {target}");
            self.finish(
                text,
                Reply::new(
                    ReplyCode::SyntaxError,
                    "Illegal PORT: only your own address and ports from 1024.",
                ),
            );
            return;
        }
        self.settings.data = Some(DataPlan::Active {
            target,
            local: self.peer.local().ip(),
        });
        let verb = if target.is_ipv6() { "EPRT" } else { "PORT" };
        self.finish(
            text,
            Reply::new(ReplyCode::Ok, format!("{verb} command successful.")),
        );
    }

    /// MFMT (draft-somers-ftp-mfxx): set a file's modification time; 213 echoes it.
    fn mfmt(&mut self, text: String, arg: &str, time: SystemTime, ctx: &mut Context<Self>) {
        let set =
            move |s: &Services, user, path| s.set_modified.send(SetModified { user, path, time });
        self.on_path(ctx, text, arg, set, move |_, (), path| {
            Next::Reply(Reply::new(
                ReplyCode::FileStatus,
                format!("Modify={}; {path}", listing::timeval(time)),
            ))
        });
    }

    /// HASH (draft-bryan-ftpext-hash §3.3): `213 <algo> <start>-<end> <hash> <path>`.
    fn hash(&mut self, text: String, arg: &str, ctx: &mut Context<Self>) {
        let algo = self.settings.hash_algo;
        let hash = move |s: &Services, user, path| s.hash.send(Hash { user, path, algo });
        self.on_path(
            ctx,
            text,
            arg,
            hash,
            move |_, (digest, size): (String, u64), path| {
                Next::Reply(Reply::new(
                    ReplyCode::FileStatus,
                    format!("{} 0-{size} {digest} {path}", algo.name()),
                ))
            },
        );
    }

    /// AUTH TLS (RFC 4217 §4): 234, then the TLS handshake once the reply is on the wire.
    fn auth(&mut self, text: &str, mechanism: &str) {
        let reply = match (&self.env.tls, mechanism) {
            (None, _) => Reply::new(
                ReplyCode::PolicyDenied,
                "TLS is not configured on this server.",
            ),
            (Some(_), _) if self.control.is_tls() => {
                Reply::new(ReplyCode::BadSequence, "TLS is already on.")
            }
            (Some(tls), "TLS" | "TLS-C" | "SSL" | "TLS-P") => {
                let tls = tls.clone();
                self.finish(text, Reply::new(ReplyCode::AuthOk, "AUTH TLS successful."));
                self.control.start_tls(tls);
                return;
            }
            (Some(_), _) => Reply::new(
                ReplyCode::NotImplementedForParameter,
                "Only AUTH TLS is supported.",
            ),
        };
        self.finish(text, reply);
    }

    /// PROT (RFC 4217 §9): C or P after PBSZ.
    fn prot(&mut self, text: &str, level: char) {
        let reply = match level {
            _ if !self.pbsz => Reply::new(ReplyCode::BadSequence, "PROT needs PBSZ first."),
            'C' | 'P' => {
                self.prot_private = level == 'P';
                Reply::new(ReplyCode::Ok, format!("Protection level set to {level}."))
            }
            _ => Reply::new(
                ReplyCode::ProtNotSupported,
                "Only PROT C and PROT P are supported.",
            ),
        };
        self.finish(text, reply);
    }

    /// REIN (RFC 959 §4.1.1): forget the user and every setting, as right after the greeting.
    fn rein(&mut self, text: &str) {
        self.state.rein();
        self.user_slot = None;
        self.settings = Settings::default();
        // The control connection stays as it is (RFC 4217 §11: REIN keeps TLS up), and with
        // it PBSZ and PROT.
        self.finish(
            text,
            Reply::new(ReplyCode::ServiceReady, "Ready for a new user."),
        );
    }

    /// Where this session's data connections belong.
    fn channel(&self) -> data_channel::Channel {
        data_channel::Channel {
            peer: self.peer,
            stall: self.env.config.data_timeout(),
            session: self.id,
            audit: self.env.services.audit.clone(),
        }
    }

    /// TLS on a data connection with `tls`, resumption required as configured.
    fn protection(&self, tls: &tokio_rustls::TlsAcceptor) -> data_channel::Protection {
        data_channel::Protection {
            tls: tls.clone(),
            require_resumption: self.env.config.require_tls_resumption,
        }
    }

    /// Replies 150 and spawns the transfer task; its end is handled by `transfer_done`.
    fn start_transfer(
        &mut self,
        ctx: &mut Context<Self>,
        text: String,
        job: Job,
        kind: TransferKind,
        opening: &str,
    ) {
        if self.env.config.require_tls_data && !self.prot_private {
            self.settings.data = None;
            self.finish(
                &text,
                Reply::new(
                    ReplyCode::DataProtectionRequired,
                    "Data connections must be encrypted: use PROT P.",
                ),
            );
            return;
        }
        let direction = match kind {
            TransferKind::Upload(_) => Direction::Upload,
            TransferKind::Download(_) => Direction::Download,
            TransferKind::Listing => Direction::Listing,
        };
        let permit = self.state.logged_in().and_then(|l| {
            self.env
                .limits
                .transfer(&l.name, direction)
                .unwrap_or_else(|e| {
                    state::unavailable("transfer", &e);
                    None
                })
        });
        let Some(permit) = permit else {
            self.settings.data = None;
            self.finish(&text, replies::limit(Limit::Transfers));
            return;
        };
        let Some(plan) = self.settings.data.take() else {
            self.finish(
                &text,
                Reply::new(
                    ReplyCode::CantOpenData,
                    "Use PASV, EPSV, PORT or EPRT first.",
                ),
            );
            return;
        };
        self.send(Reply::new(ReplyCode::OpeningData, opening));
        let progress = Arc::new(AtomicU64::new(0));
        let acceptor = match job {
            Job::Receive { .. } => &self.env.upload_tls,
            _ => &self.env.tls,
        };
        let protection = acceptor
            .as_ref()
            .filter(|_| self.prot_private)
            .map(|tls| self.protection(tls));
        let start = data_channel::Start {
            job,
            protection,
            progress: progress.clone(),
            permit,
        };
        let (outcome_tx, outcome) = tokio::sync::oneshot::channel();
        let run = data_channel::begin(&self.env.transfers, plan, self.channel(), start);
        let abort = run.abort_handle();
        let task = self.env.transfers.spawn(async move {
            // Moved in before the transfer's handle, so dropped after it: the channel closes
            // only once an aborted transfer task is gone.
            let outcome_tx = outcome_tx;
            // If the session has ended, the outcome comes back and is dropped here, so that
            // keeping or removing its upload never blocks a session arbiter.
            if let Ok(outcome) = run.await {
                let _ = outcome_tx.send(outcome);
            }
        });
        ctx.spawn(task.into_actor(self).map(|joined, act: &mut Session, ctx| {
            // The task has ended: its outcome, if it sent one, is in the channel.
            let outcome = joined.map_err(|e| e.to_string()).and_then(|()| {
                act.transfer
                    .as_mut()
                    .and_then(|running| running.outcome.as_mut())
                    .and_then(|outcome| outcome.try_recv().ok())
                    .ok_or_else(|| "the transfer task sent no outcome".to_owned())
            });
            act.transfer_done(outcome, ctx);
        }));
        self.transfer = Some(Box::new(Running {
            task: abort,
            aborting: None,
            cmd: text,
            kind,
            ascii: self.settings.ascii,
            started: Instant::now(),
            progress,
            outcome: Some(outcome),
        }));
    }

    fn abor(&mut self, text: &str) {
        let Some(running) = self.transfer.as_mut() else {
            self.settings.data = None;
            self.finish(
                text,
                Reply::new(ReplyCode::DataOpenNoTransfer, "No transfer to abort."),
            );
            return;
        };
        // The task is dropped at its next await on the transfer pool, which closes its data
        // socket and removes a staged upload; the replies follow once it has ended, so a
        // client may reuse the file at once.
        running.aborting = Some(text.to_owned());
        running.task.abort();
    }
}

impl Handler<AddressBanned> for Session {
    type Result = ();

    /// Another session of this address started a ban: a session not logged in ends now (the
    /// ban would refuse its login anyway); logged-in users carry on.
    fn handle(&mut self, _: AddressBanned, ctx: &mut Context<Self>) {
        if self.closing || self.state.logged_in().is_some() {
            return;
        }
        session_log!(info, self, "address banned; closing");
        self.close(
            None,
            Reply::new(
                ReplyCode::ServiceNotAvailable,
                "Too many failed logins from your address; closing.",
            ),
            ctx,
        );
    }
}

fn site_help() -> Reply {
    let mut lines = vec!["SITE commands:".to_owned()];
    lines.extend(SITE_COMMANDS.iter().map(|(_, syntax)| format!(" {syntax}")));
    lines.push("End of SITE help.".to_owned());
    Reply::multi(ReplyCode::Help, lines)
}
