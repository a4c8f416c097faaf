//! Plain session state: login state carried in the type, and its transitions, and the settings
//! a client makes during a session. No actix types, so the transitions are tested without a
//! runtime.

use std::sync::Arc;

use crate::actors::account_registry::{Account, UserName};
use crate::codec::listing::Facts;
use crate::storage::HashAlgo;
use crate::storage::vpath::VPath;
use crate::transfer::DataPlan;

/// What a client sets during a session, all of it back to the default after REIN
/// (RFC 959 §4.1.1: "all I/O transfer parameters are reset to the default settings").
#[derive(Debug)]
pub struct Settings {
    /// The working directory (CWD, CDUP).
    pub cwd: VPath,
    /// TYPE A; TYPE I (the default) when false.
    pub ascii: bool,
    /// EPSV ALL was given: PASV, PORT and EPRT are refused from then on (RFC 2428 §4).
    pub epsv_all: bool,
    /// The facts MLSD and MLST show (OPTS MLST).
    pub facts: Facts,
    /// RNFR's path, for the RNTO that must come next.
    pub rename_from: Option<VPath>,
    /// REST's offset, for the next RETR or STOR.
    pub restart: u64,
    /// The HASH algorithm (OPTS HASH).
    pub hash_algo: HashAlgo,
    /// The data connection PASV, EPSV, PORT or EPRT prepared.
    pub data: Option<DataPlan>,
}

impl Default for Settings {
    fn default() -> Self {
        Settings {
            cwd: VPath::root(),
            ascii: false,
            epsv_all: false,
            facts: Facts::all(),
            rename_from: None,
            restart: 0,
            hash_algo: HashAlgo::Sha256,
            data: None,
        }
    }
}

/// Where a connection is in the login dialogue (RFC 959 §4.1.1, USER then PASS).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum LoginState {
    /// Connected, no user named yet. `failures` counts failed passwords so far.
    Greeted {
        /// Failed PASS attempts on this connection.
        failures: u8,
    },
    /// `USER` was accepted; waiting for `PASS`.
    NeedPassword {
        /// The name given with USER (not validated: any name gets 331, so names are not
        /// revealed).
        user: String,
        /// Failed PASS attempts on this connection.
        failures: u8,
    },
    /// Logged in: the account is inside the variant, so a logged-in branch always has a user.
    LoggedIn(LoggedIn),
}

/// A logged-in user.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LoggedIn {
    /// The name to show and audit: the account name, or `anonymous`.
    pub name: String,
    /// The key of the home in every file-store request (shared cheaply).
    pub user: Arc<str>,
    /// Every write is refused (550).
    pub read_only: bool,
    /// The account, for SITE PASSWD; `None` for anonymous access.
    pub account: Option<UserName>,
    /// Wrong old passwords given to SITE PASSWD on this connection: they count as failed
    /// logins.
    pub password_failures: u8,
}

/// What `PASS` should do, decided from the state alone.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum PassAction {
    /// Ask the registry to check this user's password.
    Authenticate {
        /// The name from USER.
        user: String,
        /// Failures so far, carried into the next state.
        failures: u8,
    },
    /// PASS without USER: 503.
    NeedUser,
    /// Already logged in: 230 again, as vsftpd and RFC 959 (PASS 230 "already logged in") do.
    AlreadyLoggedIn,
}

impl LoginState {
    /// The state of a fresh connection.
    pub fn new() -> LoginState {
        LoginState::Greeted { failures: 0 }
    }

    /// The logged-in user, if any.
    pub fn logged_in(&self) -> Option<&LoggedIn> {
        match self {
            LoginState::LoggedIn(l) => Some(l),
            _ => None,
        }
    }

    /// Failed password attempts so far (0 once logged in).
    pub fn failures(&self) -> u8 {
        match self {
            LoginState::Greeted { failures } | LoginState::NeedPassword { failures, .. } => {
                *failures
            }
            LoginState::LoggedIn(_) => 0,
        }
    }

    /// `USER name`: returns false when already logged in (the name cannot change).
    pub fn user(&mut self, name: String) -> bool {
        match self {
            LoginState::LoggedIn(_) => false,
            _ => {
                *self = LoginState::NeedPassword {
                    user: name,
                    failures: self.failures(),
                };
                true
            }
        }
    }

    /// `PASS`: what to do. Leaves the state waiting for the outcome as `Greeted`, so a lost
    /// reply can never leave the session half logged in.
    pub fn pass(&mut self) -> PassAction {
        match std::mem::take(self) {
            LoginState::Greeted { failures } => {
                *self = LoginState::Greeted { failures };
                PassAction::NeedUser
            }
            LoginState::NeedPassword { user, failures } => {
                *self = LoginState::Greeted { failures };
                PassAction::Authenticate { user, failures }
            }
            logged @ LoginState::LoggedIn(_) => {
                *self = logged;
                PassAction::AlreadyLoggedIn
            }
        }
    }

    /// The password was wrong: returns the failure count including this one.
    pub fn failed(&mut self, failures_before: u8) -> u8 {
        let failures = failures_before.saturating_add(1);
        *self = LoginState::Greeted { failures };
        failures
    }

    /// The password was right.
    pub fn succeeded(&mut self, account: Account) {
        *self = LoginState::LoggedIn(LoggedIn {
            name: account.name.to_string(),
            user: Arc::from(account.name.as_str()),
            read_only: account.read_only,
            account: Some(account.name),
            password_failures: 0,
        });
    }

    /// Anonymous access (RFC 1635): read-only, in the area the file store keeps under `key`.
    pub fn anonymous(&mut self, key: &str) {
        *self = LoginState::LoggedIn(LoggedIn {
            name: "anonymous".to_owned(),
            user: Arc::from(key),
            read_only: true,
            account: None,
            password_failures: 0,
        });
    }

    /// `REIN` (RFC 959 §4.1.1): back to the greeting, but failed passwords still count, so
    /// REIN cannot buy a guesser fresh attempts or a shorter delay.
    pub fn rein(&mut self) {
        *self = LoginState::Greeted {
            failures: self.failures(),
        };
    }

    /// SITE PASSWD was given a wrong old password: returns the count on this connection,
    /// this one included (0 when not logged in).
    pub fn password_failed(&mut self) -> u8 {
        match self {
            LoginState::LoggedIn(l) => {
                l.password_failures = l.password_failures.saturating_add(1);
                l.password_failures
            }
            _ => 0,
        }
    }
}

impl Default for LoginState {
    fn default() -> Self {
        LoginState::new()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn account(name: &str) -> Account {
        Account {
            name: UserName::parse(name).expect("valid name"),
            read_only: false,
        }
    }

    #[test]
    fn user_then_pass_then_success() {
        let mut s = LoginState::new();
        assert!(s.user("alice".into()));
        assert_eq!(
            s.pass(),
            PassAction::Authenticate {
                user: "alice".into(),
                failures: 0
            }
        );
        s.succeeded(account("alice"));
        assert_eq!(s.logged_in().map(|l| &*l.user), Some("alice"));
        assert!(!s.user("bob".into()), "the user cannot change after login");
        assert_eq!(s.pass(), PassAction::AlreadyLoggedIn);
    }

    #[test]
    fn pass_without_user_and_failures_accumulate() {
        let mut s = LoginState::new();
        assert_eq!(s.pass(), PassAction::NeedUser);
        for expected in 1..=3u8 {
            assert!(s.user("x".into()));
            let PassAction::Authenticate { failures, .. } = s.pass() else {
                panic!("expected authenticate");
            };
            assert_eq!(s.failed(failures), expected);
            assert_eq!(s.failures(), expected);
            assert_eq!(
                s.pass(),
                PassAction::NeedUser,
                "a failed PASS needs a new USER"
            );
        }
    }

    #[test]
    fn rein_keeps_the_failures() {
        let mut s = LoginState::new();
        assert!(s.user("x".into()));
        let PassAction::Authenticate { failures, .. } = s.pass() else {
            panic!("expected authenticate");
        };
        s.failed(failures);
        assert!(s.user("x".into()));
        s.rein();
        assert_eq!(s, LoginState::Greeted { failures: 1 });
        s.succeeded(account("alice"));
        assert_eq!(s.password_failed(), 1);
        assert_eq!(s.password_failed(), 2);
        s.rein();
        assert_eq!(s, LoginState::Greeted { failures: 0 });
    }
}
