//! [`AuthError`]: why an account request failed, each variant with the FTP reply it becomes.

use std::io;

use super::NAME_RULE;

/// Why an account request failed. Each variant names the FTP reply code it becomes (the
/// session's reply table sends it).
#[derive(Debug, thiserror::Error)]
pub enum AuthError {
    /// 501: the name breaks the name rule.
    #[error("bad user name: use {NAME_RULE}")]
    BadName,
    /// 501: the password is shorter than the minimum or contains control characters.
    #[error("password too short or contains control characters")]
    WeakPassword,
    /// 550: an account of that name exists.
    #[error("user name already taken")]
    NameTaken,
    /// 550: self-registration is closed on this server.
    #[error("registration is closed")]
    RegistrationClosed,
    /// 501: registration needs an invitation code and none was given.
    #[error("an invitation code is required")]
    InviteRequired,
    /// 550: the invitation code is unknown or used up.
    #[error("invalid or used-up invitation code")]
    BadInvite,
    /// 550: this client address registered too many accounts within the last hour.
    #[error("too many registrations from this address; try again later")]
    TooManyRegistrations,
    /// 530: unknown user, wrong password or disabled account, deliberately indistinguishable
    /// so that nobody learns which names exist.
    #[error("login incorrect")]
    WrongCredentials,
    /// 451: an account file that does not parse.
    #[error("corrupt account data: {0}")]
    Corrupt(String),
    /// 451: the store failed.
    #[error("account store: {0}")]
    Io(#[from] io::Error),
}
