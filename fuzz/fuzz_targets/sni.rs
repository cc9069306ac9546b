//! Fuzzes the ClientHello reader of `CONNECT` tunnels (`palisade_proxy::egress::sni`):
//! arbitrary bytes as what an app sends into a tunnel. It must never panic; a name it
//! returns is 1 to 254 bytes of letters, digits, `-` and `.`; and reading more never
//! changes a verdict: a prefix of the bytes parses as `Incomplete`, or exactly as the
//! whole does (the reader may stop at the first verdict).
//!
//! The first byte picks the cut of the prefix (`len * byte / 255`); the rest is the wire.

#![no_main]

use libfuzzer_sys::fuzz_target;
use palisade_proxy::egress::sni::{parse, Progress};

fuzz_target!(|data: &[u8]| {
    let Some((cut, wire)) = data.split_first() else {
        return;
    };
    let whole = parse(wire);
    if let Ok(Progress::Complete(hello)) = &whole {
        if let Some(name) = hello.sni.as_deref() {
            assert!(!name.is_empty() && name.len() <= 254, "{name:?}");
            assert!(
                name.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'.'),
                "{name:?}"
            );
        }
    }
    let at = wire.len() * usize::from(*cut) / 255;
    match parse(&wire[..at]) {
        Ok(Progress::Incomplete) => {}
        prefix => assert_eq!(prefix, whole, "a prefix of {at} bytes decided otherwise"),
    }
});
