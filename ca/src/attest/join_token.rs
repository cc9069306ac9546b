//! Join tokens and the admin credential: random secrets shown once and stored only
//! as their SHA-256.

use ring::rand::{SecureRandom, SystemRandom};

/// How long a join token lives when no TTL is given.
pub const DEFAULT_TOKEN_TTL: std::time::Duration = std::time::Duration::from_secs(600);
/// The longest a join token may live.
pub const MAX_TOKEN_TTL: std::time::Duration = std::time::Duration::from_secs(24 * 3600);

/// The system random source failed.
#[derive(Debug, Clone, Copy, thiserror::Error)]
#[error("the system random source failed; the secret was not created")]
pub struct RandomError;

/// A new secret: 32 random bytes as 64 lower-case hex characters.
pub fn new_secret() -> Result<String, RandomError> {
    let mut bytes = [0u8; 32];
    SystemRandom::new().fill(&mut bytes).map_err(|_| RandomError)?;
    Ok(crate::store::hex(&bytes))
}

/// The SHA-256 of a secret, as it is stored.
pub fn hash_secret(secret: &str) -> [u8; 32] {
    let digest = ring::digest::digest(&ring::digest::SHA256, secret.trim().as_bytes());
    let mut out = [0u8; 32];
    out.copy_from_slice(digest.as_ref());
    out
}

/// Compares a presented secret with a stored hash in constant time.
pub fn secret_matches(presented: &str, stored_hash_hex: &str) -> bool {
    let presented = crate::store::hex(&hash_secret(presented));
    presented.len() == stored_hash_hex.len()
        && presented
            .bytes()
            .zip(stored_hash_hex.bytes())
            .fold(0u8, |acc, (a, b)| acc | (a ^ b))
            == 0
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn secrets_are_fresh_and_match_only_their_hash() {
        let a = new_secret().unwrap();
        let b = new_secret().unwrap();
        assert_ne!(a, b);
        assert_eq!(a.len(), 64);
        let stored = crate::store::hex(&hash_secret(&a));
        assert!(secret_matches(&a, &stored));
        assert!(
            secret_matches(&format!("{a}\n"), &stored),
            "a trailing newline from a file is ignored"
        );
        assert!(!secret_matches(&b, &stored));
        assert!(!secret_matches("", &stored));
    }
}
