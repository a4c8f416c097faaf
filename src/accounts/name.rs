//! The account-name rule: [`UserName`] is a name that passed it, so no other name reaches a
//! path; [`NAME_RULE`] says it in words and [`RESERVED_NAMES`] are never account names. Pure;
//! used by the server and the client alike.

use std::fmt;

use serde::{Deserialize, Serialize};

use super::AuthError;

/// Longest account name, in bytes (all allowed characters are ASCII).
const MAX_NAME_LEN: usize = 32;

/// Names clients use for anonymous access (RFC 1635); never account names, so turning
/// anonymous access on can never capture an account.
pub const RESERVED_NAMES: [&str; 2] = ["anonymous", "ftp"];

/// The name rule in words, for people choosing a name.
pub const NAME_RULE: &str = "1-32 of a-z 0-9 . _ -, starting with a letter or digit";

/// A validated account name: `[a-z0-9][a-z0-9._-]{0,31}`. Anything else is refused before it
/// touches a path.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(try_from = "String")]
pub struct UserName(String);

impl UserName {
    /// Checks `s` against the name rule.
    ///
    /// # Errors
    /// [`AuthError::BadName`] if `s` is empty, longer than 32 bytes, or has a character outside
    /// `[a-z0-9._-]` (or starts with `.`, `_` or `-`), or is one of the names reserved for
    /// anonymous access (`anonymous`, `ftp`).
    pub fn parse(s: &str) -> Result<UserName, AuthError> {
        if RESERVED_NAMES.contains(&s) {
            return Err(AuthError::BadName);
        }
        let mut bytes = s.bytes();
        let first_ok = bytes
            .next()
            .is_some_and(|b| b.is_ascii_lowercase() || b.is_ascii_digit());
        let rest_ok = bytes.all(|b| {
            b.is_ascii_lowercase() || b.is_ascii_digit() || matches!(b, b'.' | b'_' | b'-')
        });
        if first_ok && rest_ok && s.len() <= MAX_NAME_LEN {
            Ok(UserName(s.to_owned()))
        } else {
            Err(AuthError::BadName)
        }
    }

    /// The name as text.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl TryFrom<String> for UserName {
    type Error = AuthError;

    fn try_from(s: String) -> Result<Self, Self::Error> {
        UserName::parse(&s)
    }
}

impl fmt::Display for UserName {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn name_rule() {
        let long_ok = "a".repeat(32);
        for ok in ["a", "alice", "a.b-c_d", "0", long_ok.as_str()] {
            assert!(UserName::parse(ok).is_ok(), "{ok:?} should be valid");
        }
        let long_bad = "a".repeat(33);
        for bad in [
            "",
            "Alice",
            "-a",
            ".a",
            "_a",
            "a/b",
            "..",
            long_bad.as_str(),
            "a b",
            "ä",
            "a\0",
        ] {
            assert!(
                matches!(UserName::parse(bad), Err(AuthError::BadName)),
                "{bad:?} should be refused"
            );
        }
    }

    #[test]
    fn user_name_deserialisation_applies_the_rule() {
        assert!(serde_json::from_str::<UserName>("\"alice\"").is_ok());
        assert!(serde_json::from_str::<UserName>("\"../etc\"").is_err());
    }
}
