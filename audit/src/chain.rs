//! The hash chain: each stored record carries the SHA-256 of the previous record's
//! hash and its own canonical encoding, so an edit, a deletion, an insertion or a
//! reordering breaks the chain at the first record it touches.
//!
//! (Filled in by the storage work: the canonical encoding, `hash_of`, and the
//! verifier that walks a store in sequence order.)

use serde::Serialize;

/// The outcome of checking a whole chain.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Verification {
    /// How many records were checked.
    pub records: u64,
    /// The first broken link, if any; everything after it is unproven.
    pub broken: Option<BrokenLink>,
}

impl Verification {
    /// Whether every link held.
    pub fn is_intact(&self) -> bool {
        self.broken.is_none()
    }
}

/// Where and how the chain first broke.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct BrokenLink {
    /// The sequence number of the first record that does not verify.
    pub seq: u64,
    /// Its record id and sender, when the row could be read.
    pub record_id: String,
    pub sender: String,
    /// What is wrong, in words: "its hash does not match its contents (edited)",
    /// "its prev_hash is not the hash of record 41 (a record was deleted, inserted
    /// or moved)", "sequence jumps from 41 to 43 (record 42 was deleted)".
    pub problem: String,
}
