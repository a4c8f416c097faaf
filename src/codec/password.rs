//! A password that never shows in logs: `Debug` and `Display` print `***`.

use std::fmt;

/// A secret from the network or a prompt. Read it with [`Password::expose`] only where it is
/// hashed or verified.
#[derive(Clone, PartialEq, Eq)]
pub struct Password(String);

impl Password {
    /// Wraps a secret.
    pub fn new(secret: impl Into<String>) -> Password {
        Password(secret.into())
    }

    /// The secret itself; call only to hash or verify it.
    pub fn expose(&self) -> &str {
        &self.0
    }
}

impl fmt::Debug for Password {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("***")
    }
}

impl fmt::Display for Password {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("***")
    }
}

#[cfg(test)]
mod tests {
    use super::Password;

    #[test]
    fn never_printed() {
        let p = Password::new("hunter22");
        assert_eq!(format!("{p} {p:?}"), "*** ***");
        assert_eq!(p.expose(), "hunter22");
    }
}
