//! Users' dashboard passwords: argon2id with a random salt per password (the PHC string
//! keeps the parameters, so they can be raised later without breaking old hashes).
//! Only the hash is stored, in the user's record.

use argon2::password_hash::rand_core::OsRng;
use argon2::password_hash::{PasswordHash, PasswordHasher, PasswordVerifier, SaltString};
use argon2::Argon2;

/// The shortest password accepted.
pub const MIN_LEN: usize = 12;
/// The longest: argon2 takes any length, but a megabyte "password" is an attack.
pub const MAX_LEN: usize = 1024;

#[derive(Debug, thiserror::Error)]
pub enum PasswordError {
    #[error("a password needs at least {MIN_LEN} characters (and at most {MAX_LEN})")]
    Length,
    #[error("cannot hash the password: {0}")]
    Hash(String),
}

/// The PHC string of `password` hashed with argon2id (the crate's defaults: 19 MiB,
/// 2 passes, OWASP's recommendation).
pub fn hash(password: &str) -> Result<String, PasswordError> {
    let chars = password.chars().count();
    if !(MIN_LEN..=MAX_LEN).contains(&chars) {
        return Err(PasswordError::Length);
    }
    let salt = SaltString::generate(&mut OsRng);
    Argon2::default()
        .hash_password(password.as_bytes(), &salt)
        .map(|h| h.to_string())
        .map_err(|e| PasswordError::Hash(e.to_string()))
}

/// Whether `password` matches `stored` (no stored hash: never).
pub fn verify(stored: Option<&str>, password: &str) -> bool {
    let Some(parsed) = stored.and_then(|s| PasswordHash::new(s).ok()) else {
        return false;
    };
    password.len() <= MAX_LEN * 4
        && Argon2::default()
            .verify_password(password.as_bytes(), &parsed)
            .is_ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_password_is_stored_as_argon2id_and_only_it_matches() {
        let stored = hash("correct horse battery").expect("hash");
        assert!(stored.starts_with("$argon2id$"), "{stored}");
        assert!(!stored.contains("correct horse"));
        assert!(verify(Some(&stored), "correct horse battery"));
        assert!(!verify(Some(&stored), "correct horse batterY"));
        assert!(!verify(None, "correct horse battery"));
        assert!(!verify(Some("not a hash"), "correct horse battery"));
        // The same password twice: two salts, two hashes.
        assert_ne!(stored, hash("correct horse battery").expect("hash"));
        assert!(matches!(hash("short"), Err(PasswordError::Length)));
    }
}
