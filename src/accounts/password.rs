//! Passwords: the strength rule and PBKDF2-HMAC-SHA256 hashing as PHC strings (hash, verify
//! in constant time, read the round count).

use password_hash::rand_core::OsRng;
use password_hash::{PasswordHash, PasswordHasher, PasswordVerifier, SaltString};
use pbkdf2::{Algorithm, Params, Pbkdf2};

use crate::accounts::AuthError;
use crate::codec::Password;

/// Checks a new password: at least `min_length` characters and no control characters (they
/// cannot be typed reliably and could corrupt a command line).
///
/// # Errors
/// [`AuthError::WeakPassword`].
pub fn check_password(password: &Password, min_length: usize) -> Result<(), AuthError> {
    let secret = password.expose();
    if secret.chars().count() < min_length || secret.chars().any(char::is_control) {
        return Err(AuthError::WeakPassword);
    }
    Ok(())
}

/// Hashes a password as a PBKDF2-HMAC-SHA256 PHC string with a fresh random salt.
///
/// # Errors
/// [`AuthError::Corrupt`] if the hasher refuses the parameters (e.g. zero iterations).
pub fn hash_password(password: &Password, iterations: u32) -> Result<String, AuthError> {
    let salt = SaltString::generate(&mut OsRng);
    let params = Params {
        rounds: iterations,
        output_length: 32,
    };
    Pbkdf2
        .hash_password_customized(
            password.expose().as_bytes(),
            Some(Algorithm::Pbkdf2Sha256.ident()),
            None,
            params,
            &salt,
        )
        .map(|hash| hash.to_string())
        .map_err(|e| AuthError::Corrupt(format!("cannot hash password: {e}")))
}

/// Checks a password against a PHC string in constant time. The iteration count and salt come
/// from the PHC string, so hashes made with other counts keep working. A PHC string that does
/// not parse never matches.
pub fn verify_password(phc: &str, password: &Password) -> bool {
    PasswordHash::new(phc).is_ok_and(|hash| {
        Pbkdf2
            .verify_password(password.expose().as_bytes(), &hash)
            .is_ok()
    })
}

/// The PBKDF2 round count of a PHC string; `None` if it does not parse.
pub fn hash_rounds(phc: &str) -> Option<u32> {
    let hash = PasswordHash::new(phc).ok()?;
    hash.params.get_decimal("i")
}
