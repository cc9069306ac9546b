//! [`normalize_path`] on 100,000 random targets, checked three ways: normalizing
//! twice changes nothing, the output has none of the shapes the rule removes, and the
//! path agrees with a plain, separately written RFC 3986 §5.2.4 reference.
//!
//! No crates: a xorshift generator with a fixed seed, so a failure reproduces.

use super::{normalize_path, NormalizeError};

/// How many random targets each run checks.
const RUNS: usize = 100_000;

/// The pieces random targets are made of: single bytes, enough to spell dot segments,
/// escapes (valid, invalid, encoded dots and slashes, upper and lower case),
/// parameters and queries; plus a few whole dot segments so that climbing above the
/// root is common too.
const ALPHABET: &[&str] = &[
    "/", ".", "a", "b", "%", "2", "e", "E", "f", "F", ";", "?", "x", "/..", "/.", "/%2e%2E",
];

#[test]
fn random_targets_are_canonicalized_like_the_reference() {
    let mut random = XorShift(0x9e37_79b9_7f4a_7c15);
    let mut outcomes = Outcomes::default();
    for _ in 0..RUNS {
        let input = random.target();
        let actual = normalize_path(&input);
        match (&actual, reference(&input)) {
            (Ok(normalized), Reference::Canonical(expected)) => {
                assert_eq!(normalized.path(), expected, "{input:?}");
                assert_eq!(normalized.query(), input.split_once('?').map(|(_, q)| q));
                assert_invariants(normalized.path(), &input);
                let again = normalize_path(&normalized.to_request_target());
                assert_eq!(again.as_ref(), Ok(normalized), "not idempotent: {input:?}");
                outcomes.canonical += 1;
            }
            (Err(NormalizeError::AboveRoot), Reference::ClimbsAboveRoot) => outcomes.above_root += 1,
            (Err(_), Reference::Invalid) => outcomes.invalid += 1,
            (actual, expected) => panic!("{input:?}: got {actual:?}, reference {expected:?}"),
        }
    }
    // The alphabet must keep every outcome common, or the test proves little.
    assert!(outcomes.canonical > RUNS / 10, "{outcomes:?}");
    assert!(outcomes.above_root > RUNS / 100, "{outcomes:?}");
    assert!(outcomes.invalid > RUNS / 10, "{outcomes:?}");
}

/// What the property test saw, to show the generator reaches every outcome.
#[derive(Debug, Default)]
struct Outcomes {
    canonical: usize,
    above_root: usize,
    invalid: usize,
}

/// Marsaglia's xorshift64: small, deterministic, good enough to spread inputs.
struct XorShift(u64);

impl XorShift {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0
    }

    fn below(&mut self, bound: usize) -> usize {
        (self.next() % bound as u64) as usize
    }

    /// `/` and 0 to 20 pieces of [`ALPHABET`].
    fn target(&mut self) -> String {
        let len = self.below(21);
        let mut target = String::from("/");
        for _ in 0..len {
            target.push_str(ALPHABET[self.below(ALPHABET.len())]);
        }
        target
    }
}

/// Checks what the canonical `path` of `input` must never contain.
fn assert_invariants(path: &str, input: &str) {
    assert!(path.starts_with('/'), "{input:?} -> {path:?}");
    assert!(path.len() <= input.len(), "{input:?} -> {path:?}");
    for shape in ["//", "/./", "/../", ";", "?", "#"] {
        assert!(!path.contains(shape), "{input:?} -> {path:?} has {shape:?}");
    }
    for end in ["/.", "/.."] {
        assert!(!path.ends_with(end), "{input:?} -> {path:?} ends with {end:?}");
    }
    for (i, _) in path.match_indices('%') {
        let hex = &path[i + 1..i + 3];
        let value = u8::from_str_radix(hex, 16).unwrap();
        assert_eq!(hex, hex.to_ascii_uppercase(), "{input:?} -> {path:?}");
        assert!(!is_unreserved(value), "{input:?} -> {path:?} keeps %{hex}");
        assert!(![0, b'/', b'\\'].contains(&value), "{input:?} -> {path:?}");
    }
}

/// What the reference makes of a target.
#[derive(Debug)]
enum Reference {
    /// The canonical path.
    Canonical(String),
    /// Valid, but a `..` removes a segment from an empty output.
    ClimbsAboveRoot,
    /// A refused byte or escape.
    Invalid,
}

/// The rule written the plain way, one step after the other, each on a whole string:
/// split the query, check it, cut every segment at `;`, decode, merge slashes, then
/// RFC 3986 §5.2.4 `remove_dot_segments` exactly as the RFC words it.
fn reference(target: &str) -> Reference {
    let (path, query) = match target.split_once('?') {
        Some((path, query)) => (path, query),
        None => (target, ""),
    };
    if !query_is_valid(query) {
        return Reference::Invalid;
    }
    let Some(path) = path.strip_prefix('/') else {
        return Reference::Invalid;
    };
    let mut names = Vec::new();
    for segment in path.split('/') {
        let name = segment.split(';').next().unwrap();
        match (decode(segment), decode(name)) {
            (Some(_), Some(name)) => names.push(name),
            _ => return Reference::Invalid,
        }
    }
    let mut merged: Vec<&str> = names.iter().map(String::as_str).filter(|n| !n.is_empty()).collect();
    if names.last().is_some_and(String::is_empty) && !merged.is_empty() {
        merged.push("");
    }
    let merged = format!("/{}", merged.join("/"));
    match remove_dot_segments(&merged) {
        Some(path) => Reference::Canonical(path),
        None => Reference::ClimbsAboveRoot,
    }
}

/// Whether every `%` of the query starts a valid escape other than `%00` (the
/// alphabet has no other byte that the query refuses).
fn query_is_valid(query: &str) -> bool {
    query.match_indices('%').all(|(i, _)| {
        query
            .get(i + 1..i + 3)
            .is_some_and(|hex| hex.bytes().all(|b| b.is_ascii_hexdigit()) && hex != "00")
    })
}

/// Decodes unreserved escapes, upper-cases the others; `None` for a byte that is not
/// a `pchar`, an invalid escape, `%00`, `%2F` or `%5C`.
fn decode(raw: &str) -> Option<String> {
    let bytes = raw.as_bytes();
    let mut out = String::new();
    let mut i = 0;
    while i < bytes.len() {
        let byte = bytes[i];
        if byte != b'%' {
            let pchar = is_unreserved(byte) || b"!$&'()*+,;=:@/?".contains(&byte);
            if !pchar {
                return None;
            }
            out.push(char::from(byte));
            i += 1;
            continue;
        }
        let hex = raw.get(i + 1..i + 3)?;
        if !hex.bytes().all(|b| b.is_ascii_hexdigit()) {
            return None;
        }
        let value = u8::from_str_radix(hex, 16).ok()?;
        match value {
            0 | b'/' | b'\\' => return None,
            v if is_unreserved(v) => out.push(char::from(v)),
            v => out.push_str(&format!("%{v:02X}")),
        }
        i += 3;
    }
    Some(out)
}

/// RFC 3986 §5.2.4, step by step, on an absolute path. `None` when rule C has no
/// segment left to remove from the output, that is when the path climbs above root.
fn remove_dot_segments(path: &str) -> Option<String> {
    let mut input = path.to_owned();
    let mut output = String::new();
    while !input.is_empty() {
        if input.starts_with("../") {
            input.replace_range(..3, "");
        } else if input.starts_with("./") {
            input.replace_range(..2, "");
        } else if input.starts_with("/./") {
            input.replace_range(..3, "/");
        } else if input == "/." {
            input = "/".to_owned();
        } else if input.starts_with("/../") || input == "/.." {
            let prefix = if input == "/.." { 3 } else { 4 };
            input.replace_range(..prefix, "/");
            let last = output.rfind('/')?;
            output.truncate(last);
        } else if input == "." || input == ".." {
            input.clear();
        } else {
            let end = input[1..].find('/').map_or(input.len(), |i| i + 1);
            output.push_str(&input[..end]);
            input.replace_range(..end, "");
        }
    }
    Some(output)
}

fn is_unreserved(byte: u8) -> bool {
    byte.is_ascii_alphanumeric() || b"-._~".contains(&byte)
}

#[test]
fn the_reference_follows_the_rfc_examples() {
    // RFC 3986 §5.2.4's own examples, on absolute paths.
    assert_eq!(remove_dot_segments("/a/b/c/./../../g").as_deref(), Some("/a/g"));
    assert_eq!(remove_dot_segments("/mid/content=5/../6").as_deref(), Some("/mid/6"));
    assert_eq!(remove_dot_segments("/a/b/..").as_deref(), Some("/a/"));
    assert_eq!(remove_dot_segments("/a/.").as_deref(), Some("/a/"));
    assert_eq!(remove_dot_segments("/.."), None);
}
