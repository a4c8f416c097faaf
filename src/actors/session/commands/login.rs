//! Login and accounts: USER, PASS, REIN, the SITE commands (RFC 959 §4.1.1; DESIGN §4),
//! and the end of a session whose address another session got banned.

use std::sync::Arc;
use std::time::Duration;

use actix::dev::RecipientRequest;
use actix::prelude::*;

use super::Next;
use crate::actors::Services;
use crate::actors::account_registry::{
    AuthError, Authenticate, ChangePassword, RESERVED_NAMES, Register,
};
use crate::actors::audit_log::{Event, EventKind};
use crate::actors::file_store::{Chmod, CreateHome, QuotaStatus};
use crate::actors::session::replies::{self, Limit, Unsupported};
use crate::actors::session::state::{LoginState, Settings};
use crate::actors::session::{AfterTransfer, Session};
use crate::admission::{AccountGone, AddressBanned, Refusal};
use crate::codec::command::{SITE_COMMANDS, SiteCommand};
use crate::codec::{Password, Reply, ReplyCode};
use crate::config::Registration;
use crate::state::{self, Failure};
use crate::storage::vpath::VPath;
use crate::storage::{ANONYMOUS, Capabilities};

impl Session {
    pub(super) fn user(&mut self, text: &str, name: String) {
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

    pub(super) fn pass(&mut self, text: String, password: Password, ctx: &mut Context<Self>) {
        use crate::actors::session::state::PassAction;
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
                if self.env.config.get().anonymous_root.is_some()
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
    pub(super) fn ask_hashed<M, F>(
        &mut self,
        ctx: &mut Context<Self>,
        text: String,
        send: impl FnOnce(&Services) -> RecipientRequest<M> + 'static,
        then: F,
    ) where
        M: Message + crate::actors::Destination + Send + 'static,
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
    pub(super) fn banned(&self) -> bool {
        self.env.limits.banned(self.peer.ip()).unwrap_or_else(|e| {
            state::unavailable("login", &e);
            true
        })
    }

    /// If the address is banned now: audited, answered 421 and closed; returns true.
    pub(super) fn refuse_banned(&mut self, text: &str, ctx: &mut Context<Self>) -> bool {
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
    pub(super) fn enter(
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
        self.live.set_user(event.user.clone());
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
    pub(super) fn login_failed(
        &mut self,
        ctx: &mut Context<Self>,
        text: String,
        user: &str,
        failures: u8,
    ) {
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
        let config = &self.env.config.get();
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

    pub(super) fn site(&mut self, text: String, site: SiteCommand, ctx: &mut Context<Self>) {
        match site {
            SiteCommand::Register { user, password } => {
                if self.state.logged_in().is_some() {
                    self.finish(
                        &text,
                        Reply::new(ReplyCode::BadSequence, "Already logged in."),
                    );
                    return;
                }
                let (password, code) = match self.env.config.get().registration {
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
            SiteCommand::Chmod { .. } if !self.env.capabilities.chmod => {
                self.finish(&text, replies::unsupported(Unsupported::Chmod));
            }
            SiteCommand::Chmod { mode, path } => {
                let chmod =
                    move |s: &Services, user, path| s.chmod.send(Chmod { user, path, mode });
                self.on_path(ctx, text, &path, chmod, |_, (), _| {
                    Next::Reply(Reply::new(ReplyCode::Ok, "SITE CHMOD command ok."))
                });
            }
            SiteCommand::Help => {
                let reply = site_help(self.env.capabilities);
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

    /// REIN (RFC 959 §4.1.1): forget the user and every setting, as right after the greeting.
    pub(super) fn rein(&mut self, text: &str) {
        self.state.rein();
        self.live.set_user(None);
        self.user_slot = None;
        self.settings = Settings::default();
        // The control connection stays as it is (RFC 4217 §11: REIN keeps TLS up), and with
        // it PBSZ and PROT.
        self.finish(
            text,
            Reply::new(ReplyCode::ServiceReady, "Ready for a new user."),
        );
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

impl Handler<AccountGone> for Session {
    type Result = ();

    /// The account this session is logged in as was deleted or disabled: the session ends
    /// after its current command (a command that asks another actor holds this message back
    /// until it has answered) or its running transfer. Other sessions ignore it.
    fn handle(&mut self, AccountGone(name): AccountGone, ctx: &mut Context<Self>) {
        let ours = self
            .state
            .logged_in()
            .and_then(|l| l.account.as_ref())
            .is_some_and(|account| account.as_str() == &*name);
        if self.closing || !ours {
            return;
        }
        if self.transfer.is_some() {
            self.after_transfer = Some(AfterTransfer::AccountGone);
            return;
        }
        self.close_gone(ctx);
    }
}

impl Session {
    /// Ends the session of an account that is gone: 421, and the reason in the audit log.
    pub(in crate::actors::session) fn close_gone(&mut self, ctx: &mut Context<Self>) {
        session_log!(info, self, "account deleted or disabled; closing");
        self.closed_for = Some("account deleted or disabled".into());
        self.close(
            None,
            Reply::new(
                ReplyCode::ServiceNotAvailable,
                "Your account was deleted or disabled; closing.",
            ),
            ctx,
        );
    }
}

/// SITE HELP: the SITE commands, without those the storage cannot carry out.
pub(super) fn site_help(capabilities: Capabilities) -> Reply {
    let mut lines = vec!["SITE commands:".to_owned()];
    lines.extend(
        SITE_COMMANDS
            .iter()
            .filter(|(name, _)| capabilities.chmod || *name != "CHMOD")
            .map(|(_, syntax)| format!(" {syntax}")),
    );
    lines.push("End of SITE help.".to_owned());
    Reply::multi(ReplyCode::Help, lines)
}
