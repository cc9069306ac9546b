//! Fuzzes the HTTP/1 framing watch (`palisade_proxy::request::framing`): arbitrary bytes
//! as what a client sends, fed whole and again in arbitrary reads. It must never panic;
//! the verdicts must not depend on how the bytes were split into reads; it never judges
//! more request heads than the bytes hold (every head ends with an empty line, `\n\n` or
//! `\n\r\n`, at a place of its own); and it never lets more requests through than it
//! judged sound.
//!
//! The first byte picks the limits (0: the defaults, 64 KiB and 100 lines; else small
//! ones, so the 431 paths are reached), the second seeds the read sizes; the rest is the
//! wire.

#![no_main]

use libfuzzer_sys::fuzz_target;
use palisade_proxy::request::framing::{Verdicts, Watch};

fuzz_target!(|data: &[u8]| {
    let Some(([limits, seed], wire)) = data.split_first_chunk::<2>() else {
        return;
    };
    let (max_header_bytes, max_headers) = match limits {
        0 => (64 * 1024, 100),
        n => (usize::from(*n) * 4, usize::from(n % 16)),
    };

    let (mut whole, at_once) = Watch::new(max_header_bytes, max_headers);
    whole.feed(wire);
    let (mut pieces, in_reads) = Watch::new(max_header_bytes, max_headers);
    for piece in Reads::new(wire, *seed) {
        pieces.feed(piece);
    }

    let judged = at_once.judged();
    assert_eq!(judged, in_reads.judged(), "the read sizes changed what was judged");
    assert!(
        judged <= heads_at_most(wire),
        "{judged} heads judged in {} possible",
        heads_at_most(wire)
    );
    let asked = judged.saturating_add(2);
    let passed = taken(&at_once, asked);
    assert_eq!(passed, taken(&in_reads, asked), "the read sizes changed a verdict");
    let sound = passed.iter().filter(|verdict| verdict.is_ok()).count();
    assert!(sound as u64 <= judged, "{sound} requests passed, {judged} heads judged");
    // Once one is refused, every later one is.
    if let Some(first) = passed.iter().position(Result::is_err) {
        assert!(passed.iter().skip(first).all(Result::is_err), "{passed:?}");
    }
});

/// The verdicts on the next `n` requests.
fn taken(verdicts: &Verdicts, n: u64) -> Vec<Result<(), palisade_proxy::request::Refusal>> {
    (0..n).map(|_| verdicts.next()).collect()
}

/// How many request heads `wire` could hold at most: the places an empty line ends one.
fn heads_at_most(wire: &[u8]) -> u64 {
    let ends = wire
        .windows(2)
        .enumerate()
        .filter(|(at, pair)| match pair {
            [b'\n', b'\n'] => true,
            [b'\n', b'\r'] => wire.get(at + 2) == Some(&b'\n'),
            _ => false,
        })
        .count();
    ends as u64
}

/// `wire` cut into reads of 1 to 64 bytes, sizes from a small xorshift generator.
struct Reads<'a> {
    rest: &'a [u8],
    state: u32,
}

impl<'a> Reads<'a> {
    fn new(wire: &'a [u8], seed: u8) -> Self {
        Self {
            rest: wire,
            state: u32::from(seed) | 0x9e37_7900,
        }
    }
}

impl<'a> Iterator for Reads<'a> {
    type Item = &'a [u8];

    fn next(&mut self) -> Option<&'a [u8]> {
        if self.rest.is_empty() {
            return None;
        }
        self.state ^= self.state << 13;
        self.state ^= self.state >> 17;
        self.state ^= self.state << 5;
        let size = (self.state % 64 + 1) as usize;
        let (piece, rest) = self.rest.split_at(size.min(self.rest.len()));
        self.rest = rest;
        Some(piece)
    }
}
