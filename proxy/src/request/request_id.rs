//! `x-request-id`: kept when the caller sent a sane one, generated otherwise, and
//! forwarded so both sidecars' decisions about one call share it.

use http::{HeaderMap, HeaderName, HeaderValue};
use ring::rand::{SecureRandom, SystemRandom};

/// The header.
pub static REQUEST_ID: HeaderName = HeaderName::from_static("x-request-id");

/// The longest request id accepted from a caller; a longer one is replaced.
pub const MAX_LEN: usize = 128;

/// The request's id: the caller's when it is one line of 1–128 visible ASCII
/// bytes from `[A-Za-z0-9._:-]`, otherwise a new random one, which is written
/// into `headers` (replacing every copy). Returns the id in force.
pub fn ensure(headers: &mut HeaderMap) -> HeaderValue {
    let mut values = headers.get_all(&REQUEST_ID).iter();
    if let (Some(value), None) = (values.next(), values.next()) {
        if is_acceptable(value.as_bytes()) {
            return value.clone();
        }
    }
    let id = generate();
    headers.insert(REQUEST_ID.clone(), id.clone());
    id
}

/// A new random id: 32 lower-case hex digits (128 bits).
pub fn generate() -> HeaderValue {
    let mut bytes = [0u8; 16];
    // SystemRandom fails only when the OS has no randomness; a zero id then is
    // still a valid header and decisions stay correct (only correlation suffers).
    let _ = SystemRandom::new().fill(&mut bytes);
    let mut hex = [0u8; 32];
    for (pair, byte) in hex.chunks_exact_mut(2).zip(bytes) {
        if let [high, low] = pair {
            *high = hex_digit(byte >> 4);
            *low = hex_digit(byte & 0x0f);
        }
    }
    HeaderValue::from_bytes(&hex).unwrap_or_else(|_| HeaderValue::from_static("0"))
}

fn hex_digit(nibble: u8) -> u8 {
    match nibble {
        0..=9 => b'0' + nibble,
        _ => b'a' + (nibble & 0x0f) - 10,
    }
}

fn is_acceptable(id: &[u8]) -> bool {
    (1..=MAX_LEN).contains(&id.len())
        && id
            .iter()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'_' | b':' | b'-'))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_sane_caller_id_is_kept() {
        let mut headers = HeaderMap::new();
        headers.insert(&REQUEST_ID, HeaderValue::from_static("abc-123"));
        assert_eq!(ensure(&mut headers), "abc-123");
    }

    #[test]
    fn missing_duplicated_or_odd_ids_are_replaced() {
        let cases: [&[&str]; 4] = [&[], &["a", "b"], &["has space"], &["x\"y"]];
        for case in cases {
            let mut headers = HeaderMap::new();
            for value in case {
                headers.append(&REQUEST_ID, HeaderValue::from_str(value).unwrap());
            }
            let id = ensure(&mut headers);
            assert_eq!(id.len(), 32, "{case:?}");
            assert_eq!(headers.get_all(&REQUEST_ID).iter().count(), 1);
            assert_eq!(headers.get(&REQUEST_ID), Some(&id));
        }
    }

    #[test]
    fn generated_ids_differ() {
        assert_ne!(generate(), generate());
    }
}
