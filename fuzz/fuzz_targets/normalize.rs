//! Fuzzes the request canonicalizer (`palisade_authz::normalize`): arbitrary bytes as a
//! request-target and as a `Host` header. It must never panic; whatever it accepts must
//! be a fixed point (normalizing again changes nothing) and hold none of the shapes the
//! rule removes.

#![no_main]

use libfuzzer_sys::fuzz_target;
use palisade_authz::normalize::MAX_NAME_LEN;
use palisade_authz::{host_matches, normalize_host, normalize_path, NormalizeError, NormalizedHost};

fuzz_target!(|data: &[u8]| {
    // Non-UTF-8 input becomes U+FFFD, which still exercises the non-ASCII refusals.
    let input = String::from_utf8_lossy(data);
    check_path(&input);
    check_host(&input);
    // The first line as a host pattern, the rest as a host.
    if let Some((pattern, host)) = input.split_once('\n') {
        if let Ok(host) = normalize_host(host, None) {
            let _ = host_matches(pattern, &host);
        }
    }
});

fn check_path(input: &str) {
    let Ok(normalized) = normalize_path(input) else {
        return;
    };
    let path = normalized.path();
    assert!(path.starts_with('/'), "{input:?} -> {path:?}");
    assert!(path.len() <= input.len(), "{input:?} -> {path:?}");
    for shape in ["//", "/./", "/../", ";", "?", "#", "\\"] {
        assert!(!path.contains(shape), "{input:?} -> {path:?} has {shape:?}");
    }
    for end in ["/.", "/.."] {
        assert!(!path.ends_with(end), "{input:?} -> {path:?} ends with {end:?}");
    }
    let bytes = path.as_bytes();
    for (i, _) in path.match_indices('%') {
        let hex = bytes.get(i + 1..i + 3).expect("an escape has two digits");
        assert!(
            hex.iter().all(|b| b.is_ascii_digit() || (b'A'..=b'F').contains(b)),
            "{input:?} -> {path:?}: lower-case or invalid escape"
        );
        let value = u8::from_str_radix(std::str::from_utf8(hex).unwrap(), 16).unwrap();
        let unreserved = value.is_ascii_alphanumeric() || b"-._~".contains(&value);
        assert!(!unreserved, "{input:?} -> {path:?}: unreserved left encoded");
        assert!(![0, b'/', b'\\'].contains(&value), "{input:?} -> {path:?}");
    }
    assert_eq!(
        normalized.query(),
        input.split_once('?').map(|(_, query)| query),
        "the query is forwarded verbatim"
    );
    let again = normalize_path(&normalized.to_request_target());
    assert_eq!(again.as_ref(), Ok(&normalized), "not idempotent: {input:?}");
}

fn check_host(input: &str) {
    let Ok(host) = normalize_host(input, Some(443)) else {
        return;
    };
    let name = host.name();
    assert!(!name.is_empty() && name.len() <= MAX_NAME_LEN, "{input:?} -> {name:?}");
    assert!(!name.ends_with('.'), "{input:?} -> {name:?}");
    assert_eq!(name, name.to_ascii_lowercase(), "{input:?} -> {name:?}");
    assert!(!name.contains(['@', '*', '_', ' ']), "{input:?} -> {name:?}");
    assert_ne!(host.port(), Some(443), "the default port is dropped");
    assert_ne!(host.port(), Some(0));
    assert!(host_matches(name, &host), "a host matches its own name");
    assert_eq!(again(&host), Ok(host.clone()), "not idempotent: {input:?}");
}

/// Normalizes the host again, written back as `name[:port]`.
fn again(host: &NormalizedHost) -> Result<NormalizedHost, NormalizeError> {
    match host.port() {
        Some(port) => normalize_host(&format!("{}:{port}", host.name()), Some(443)),
        None => normalize_host(host.name(), Some(443)),
    }
}
