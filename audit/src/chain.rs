//! The hash chain: each stored record carries the SHA-256 of the previous record's
//! hash and its own canonical encoding, so an edit, a deletion, an insertion or a
//! reordering breaks the chain at the first record it touches.
//!
//! # The canonical encoding (format v1)
//!
//! `hash = SHA-256(prev_hash ‖ encoding)`, where `prev_hash` is the 32-byte hash of
//! the record at `seq - 1` ([`GENESIS`] for seq 1) and `encoding` is a sequence of
//! fields in a fixed order, each `tag (1 byte) ‖ length (u32, big-endian) ‖ value`:
//!
//! | tag  | field                                   | value                               |
//! |------|-----------------------------------------|-------------------------------------|
//! | 0x00 | format                                  | the bytes `palisade.audit.record.v1` |
//! | 0x01 | seq                                     | u64                                 |
//! | 0x02 | sender (verified SPIFFE ID)             | UTF-8                               |
//! | 0x03 | received (µs since the epoch)           | i64                                 |
//! | 0x04 | record id                               | UTF-8                               |
//! | 0x05 | time (µs since the epoch)               | i64                                 |
//! | 0x06 | kind (`decision`, `external`, …)        | UTF-8                               |
//! | 0x10–0x19 | decision: side, effect, principal, action, resource, path, policies, request id, status, latency µs | |
//! | 0x20–0x27 | external: kind, workload, host, sni, port, protocol, request id, reason | |
//! | 0x30–0x34 | identity: kind, SPIFFE ID, serial, reason, not-after (unix s) | |
//! | 0x40–0x43 | policy: outcome, version, digest, detail | |
//!
//! Integers are 8 bytes big-endian (two's complement for signed values, whatever
//! their Rust width); enum values are their one spelling (`as_str`); the policy
//! list is `u32 length ‖ bytes` per policy id. Only the fields of the record's kind
//! are present. Every field is tagged and length-prefixed, so no two different
//! records share an encoding. (A string over 4 GiB would saturate its length;
//! nothing that long reaches the store — gRPC messages are limited to megabytes.)
//!
//! # What the chain proves, and what it cannot
//!
//! Walking the records in seq order with a [`ChainVerifier`] finds the first record
//! whose contents do not match its hash (edited), whose `prev_hash` is not the hash
//! before it (a record deleted, inserted or moved), or whose seq does not follow
//! (deleted). A chain alone cannot see its tail cut off, so the store also keeps a
//! one-row *head* (last seq and hash) updated in the same transaction as each append;
//! [`ChainVerifier::expecting`] and [`ChainVerifier::finish_at`] compare the walk with
//! it. Someone able to rewrite the records *and* the head consistently defeats both:
//! the full defence is an external anchor — the head hash printed in each report and
//! compared by auditors across reports.

use ring::digest;
use serde::Serialize;

use crate::record::{Event, Hash, Record, StoredRecord, GENESIS};

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

/// The last record a store appended, as its one-row head table remembers it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Head {
    /// The seq of the last record appended.
    pub seq: u64,
    /// Its hash: the anchor a report prints, for auditors to compare across reports.
    #[serde(serialize_with = "hex")]
    pub hash: Hash,
    /// Its sender and record id, so a cut-off tail can be named.
    pub sender: String,
    pub record_id: String,
}

fn hex<S: serde::Serializer>(hash: &Hash, s: S) -> Result<S::Ok, S::Error> {
    s.serialize_str(&crate::record::to_hex(hash))
}

/// The value of the format field (tag 0x00): changes if the encoding ever does.
const FORMAT: &[u8] = b"palisade.audit.record.v1";

/// The SHA-256 of a record chained to `prev`: see the module documentation.
///
/// Allocates a buffer per call; [`Hasher`] reuses one across records.
pub fn hash_of(prev: &Hash, seq: u64, sender: &str, received_micros: i64, record: &Record) -> Hash {
    Hasher::default().hash(prev, seq, sender, received_micros, record)
}

/// Writes the canonical encoding of a stored record (everything but its hashes)
/// to `out`, which is cleared first.
pub fn encode(seq: u64, sender: &str, received_micros: i64, record: &Record, out: &mut Vec<u8>) {
    out.clear();
    let mut e = Encoder(out);
    e.bytes(0x00, FORMAT);
    e.u64(0x01, seq);
    e.str(0x02, sender);
    e.i64(0x03, received_micros);
    e.str(0x04, &record.id);
    e.i64(0x05, record.time_micros);
    e.str(0x06, record.event.kind().as_str());
    match &record.event {
        Event::Decision(d) => {
            e.str(0x10, d.side.as_str());
            e.str(0x11, d.effect.as_str());
            e.str(0x12, &d.principal);
            e.str(0x13, &d.action);
            e.str(0x14, &d.resource);
            e.str(0x15, &d.path);
            e.list(0x16, &d.policies);
            e.str(0x17, &d.request_id);
            e.u64(0x18, u64::from(d.status));
            e.u64(0x19, d.latency_micros);
        }
        Event::External(x) => {
            e.str(0x20, x.kind.as_str());
            e.str(0x21, &x.workload);
            e.str(0x22, &x.host);
            e.str(0x23, &x.sni);
            e.u64(0x24, u64::from(x.port));
            e.str(0x25, &x.protocol);
            e.str(0x26, &x.request_id);
            e.str(0x27, &x.reason);
        }
        Event::Identity(i) => {
            e.str(0x30, i.kind.as_str());
            e.str(0x31, &i.spiffe_id);
            e.str(0x32, &i.serial);
            e.str(0x33, &i.reason);
            e.i64(0x34, i.not_after_unix);
        }
        Event::Policy(p) => {
            e.str(0x40, p.outcome.as_str());
            e.u64(0x41, p.version);
            e.str(0x42, &p.digest);
            e.str(0x43, &p.detail);
        }
    }
}

/// Hashes records with one reusable encoding buffer (the append and verify loops).
#[derive(Debug, Default)]
pub struct Hasher {
    buf: Vec<u8>,
}

impl Hasher {
    /// The SHA-256 of a record chained to `prev`; the same value as [`hash_of`].
    pub fn hash(&mut self, prev: &Hash, seq: u64, sender: &str, received_micros: i64, record: &Record) -> Hash {
        encode(seq, sender, received_micros, record, &mut self.buf);
        let mut ctx = digest::Context::new(&digest::SHA256);
        ctx.update(prev);
        ctx.update(&self.buf);
        let mut hash = GENESIS;
        hash.copy_from_slice(ctx.finish().as_ref());
        hash
    }

    /// The hash a stored record should carry, from its own `prev_hash` and contents.
    pub fn rehash(&mut self, stored: &StoredRecord) -> Hash {
        self.hash(
            &stored.prev_hash,
            stored.seq,
            &stored.sender,
            stored.received_micros,
            &stored.record,
        )
    }
}

struct Encoder<'a>(&'a mut Vec<u8>);

impl Encoder<'_> {
    fn header(&mut self, tag: u8, len: usize) {
        self.0.push(tag);
        let len = u32::try_from(len).unwrap_or(u32::MAX);
        self.0.extend_from_slice(&len.to_be_bytes());
    }

    fn bytes(&mut self, tag: u8, value: &[u8]) {
        self.header(tag, value.len());
        self.0.extend_from_slice(value);
    }

    fn str(&mut self, tag: u8, value: &str) {
        self.bytes(tag, value.as_bytes());
    }

    fn u64(&mut self, tag: u8, value: u64) {
        self.bytes(tag, &value.to_be_bytes());
    }

    fn i64(&mut self, tag: u8, value: i64) {
        self.bytes(tag, &value.to_be_bytes());
    }

    fn list(&mut self, tag: u8, items: &[String]) {
        let len = items.iter().map(|item| 4 + item.len()).sum();
        self.header(tag, len);
        for item in items {
            let item_len = u32::try_from(item.len()).unwrap_or(u32::MAX);
            self.0.extend_from_slice(&item_len.to_be_bytes());
            self.0.extend_from_slice(item.as_bytes());
        }
    }
}

/// Checks a chain incrementally: feed every record in seq order with
/// [`push`](Self::push), then [`finish`](Self::finish). One pass, no look-back, so a
/// report can verify while it scans.
///
/// Only the first break is kept: after it nothing is proven, and later records are
/// counted but not checked.
#[derive(Debug, Default)]
pub struct ChainVerifier {
    records: u64,
    /// The seq and hash of the last record pushed (the hash is `None` after an
    /// unreadable row).
    last: Option<(u64, Option<Hash>)>,
    /// The head read before the walk: the walk must reach it and agree with it.
    head_before: Option<Option<Head>>,
    head_seen: bool,
    broken: Option<BrokenLink>,
    hasher: Hasher,
}

impl ChainVerifier {
    /// A verifier of the links alone (it cannot see a cut-off tail).
    pub fn new() -> Self {
        Self::default()
    }

    /// A verifier that also holds the walk to the store's head, read *before* the
    /// walk (`None`: the store had no records then): the record at the head's seq
    /// must be there and carry the head's hash. Records appended during the walk
    /// are fine.
    pub fn expecting(head: Option<Head>) -> Self {
        Self {
            head_before: Some(head),
            ..Self::default()
        }
    }

    /// Checks the next record. Returns the break if this record is the first one
    /// that does not verify; later records are only counted.
    pub fn push(&mut self, record: &StoredRecord) -> Result<(), BrokenLink> {
        self.records += 1;
        if self.broken.is_some() {
            return Ok(());
        }
        let result = self.check(record);
        self.last = Some((record.seq, Some(record.hash)));
        result.map_err(|problem| self.fail(record.seq, &record.record.id, &record.sender, problem))
    }

    /// Records a row that could not be read as a record (a column holds an
    /// impossible value): a break at that seq, unless one came before.
    pub fn push_unreadable(&mut self, link: BrokenLink) {
        self.records += 1;
        if self.broken.is_none() {
            self.last = Some((link.seq, None));
            self.broken = Some(link);
        }
    }

    /// The result, without the after-walk head check.
    pub fn finish(mut self) -> Verification {
        self.check_head_reached();
        Verification {
            records: self.records,
            broken: self.broken,
        }
    }

    /// The result, also checking the store's head read *after* the walk: no record
    /// may lie beyond it, since the head is written in the same transaction as
    /// every append (a row past it was added behind the audit service's back).
    pub fn finish_at(mut self, head_after: Option<&Head>) -> Verification {
        self.check_head_reached();
        if self.broken.is_none() {
            if let Some((last_seq, _)) = self.last {
                let head_seq = head_after.map_or(0, |head| head.seq);
                if last_seq > head_seq {
                    self.broken = Some(BrokenLink {
                        seq: head_seq + 1,
                        record_id: String::new(),
                        sender: String::new(),
                        problem: match head_after {
                            Some(_) => format!(
                                "the store's head is record {head_seq} but records up to {last_seq} exist: \
                                 records after {head_seq} were inserted outside the audit service"
                            ),
                            None => "the store's head row is missing although records exist: \
                                     the head table was edited"
                                .to_owned(),
                        },
                    });
                }
            }
        }
        Verification {
            records: self.records,
            broken: self.broken,
        }
    }

    /// Why `record` does not follow the records pushed so far, if it does not.
    fn check(&mut self, record: &StoredRecord) -> Result<(), String> {
        let (expected_prev, what) = match self.last {
            None if record.seq != 1 => {
                return Err(format!(
                    "the chain starts at record {} instead of 1: {} deleted",
                    record.seq,
                    records_between(1, record.seq)
                ));
            }
            None => (Some(GENESIS), "the genesis hash (it is record 1)".to_owned()),
            Some((last, _)) if record.seq <= last => {
                return Err(format!(
                    "sequence goes from {last} back to {}: records were reordered or duplicated",
                    record.seq
                ));
            }
            Some((last, _)) if record.seq > last + 1 => {
                return Err(format!(
                    "sequence jumps from {last} to {}: {} deleted",
                    record.seq,
                    records_between(last + 1, record.seq)
                ));
            }
            Some((last, hash)) => (hash, format!("the hash of record {last}")),
        };
        let contents_match = self.hasher.rehash(record) == record.hash;
        let linked = expected_prev == Some(record.prev_hash);
        match (contents_match, linked) {
            (true, true) => self.check_head(record),
            (false, true) => Err("its hash does not match its contents: the record was edited".to_owned()),
            (true, false) => Err(format!(
                "its prev_hash is not {what}: a record before it was deleted, inserted, moved or rewritten"
            )),
            (false, false) => Err(format!(
                "neither its hash nor its prev_hash fit (its prev_hash is not {what}): \
                 the record was moved here from elsewhere in the chain, or replaced"
            )),
        }
    }

    fn check_head(&mut self, record: &StoredRecord) -> Result<(), String> {
        let Some(Some(head)) = &self.head_before else {
            return Ok(());
        };
        if head.seq != record.seq {
            return Ok(());
        }
        self.head_seen = true;
        if head.hash == record.hash {
            Ok(())
        } else {
            Err(
                "its hash differs from the one the store's head recorded when it was appended: \
                 the record was rewritten"
                    .to_owned(),
            )
        }
    }

    /// The walk must reach the head read before it (a cut-off tail otherwise).
    fn check_head_reached(&mut self) {
        if self.broken.is_some() || self.head_seen {
            return;
        }
        let Some(Some(head)) = &self.head_before else {
            return;
        };
        let last_seq = self.last.map_or(0, |(seq, _)| seq);
        if last_seq >= head.seq {
            return;
        }
        let first_missing = last_seq + 1;
        let named = first_missing == head.seq;
        self.broken = Some(BrokenLink {
            seq: first_missing,
            record_id: if named { head.record_id.clone() } else { String::new() },
            sender: if named { head.sender.clone() } else { String::new() },
            problem: format!(
                "the chain ends at record {last_seq} but the store's head is record {}: {} deleted \
                 (the log was truncated)",
                head.seq,
                records_between(first_missing, head.seq + 1)
            ),
        });
    }

    fn fail(&mut self, seq: u64, record_id: &str, sender: &str, problem: String) -> BrokenLink {
        let link = BrokenLink {
            seq,
            record_id: record_id.to_owned(),
            sender: sender.to_owned(),
            problem,
        };
        self.broken = Some(link.clone());
        link
    }
}

/// "record 42 was" or "records 42 to 44 were", for `from..until`.
fn records_between(from: u64, until: u64) -> String {
    if until <= from + 1 {
        format!("record {from} was")
    } else {
        format!("records {from} to {} were", until - 1)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::record::{Decision, Effect, Identity, IdentityKind, Side};

    fn decision(id: &str) -> Record {
        Record {
            id: id.to_owned(),
            time_micros: 1_700_000_000_000_000,
            event: Event::Decision(Decision {
                side: Side::Ingress,
                effect: Effect::Deny,
                principal: "spiffe://td/ns/shop/sa/web".to_owned(),
                action: "GET".to_owned(),
                resource: "payments/payments".to_owned(),
                path: "/charge".to_owned(),
                policies: vec!["deny-web".to_owned()],
                request_id: "r1".to_owned(),
                status: 403,
                latency_micros: 120,
            }),
        }
    }

    fn chain(n: u64) -> Vec<StoredRecord> {
        let mut prev = GENESIS;
        (1..=n)
            .map(|seq| {
                let record = decision(&format!("id-{seq}"));
                let hash = hash_of(&prev, seq, "spiffe://td/sender", 7, &record);
                let stored = StoredRecord {
                    seq,
                    sender: "spiffe://td/sender".to_owned(),
                    received_micros: 7,
                    record,
                    prev_hash: prev,
                    hash,
                };
                prev = hash;
                stored
            })
            .collect()
    }

    fn verify(records: &[StoredRecord]) -> Verification {
        let mut v = ChainVerifier::new();
        for r in records {
            let _ = v.push(r);
        }
        v.finish()
    }

    #[test]
    fn the_hash_covers_every_field_and_the_kind() {
        let base = decision("a");
        let h = hash_of(&GENESIS, 1, "s", 0, &base);
        assert_ne!(h, hash_of(&GENESIS, 2, "s", 0, &base));
        assert_ne!(h, hash_of(&GENESIS, 1, "t", 0, &base));
        assert_ne!(h, hash_of(&GENESIS, 1, "s", 1, &base));
        assert_ne!(h, hash_of(&[1; 32], 1, "s", 0, &base));
        let mut edited = base.clone();
        if let Event::Decision(d) = &mut edited.event {
            d.effect = Effect::Allow;
        }
        assert_ne!(h, hash_of(&GENESIS, 1, "s", 0, &edited));
    }

    #[test]
    fn moving_bytes_between_fields_changes_the_encoding() {
        let mut a = decision("a");
        let mut b = decision("a");
        if let (Event::Decision(x), Event::Decision(y)) = (&mut a.event, &mut b.event) {
            x.policies = vec!["ab".to_owned(), "c".to_owned()];
            y.policies = vec!["a".to_owned(), "bc".to_owned()];
        }
        assert_ne!(hash_of(&GENESIS, 1, "s", 0, &a), hash_of(&GENESIS, 1, "s", 0, &b));
        let mut c = decision("a");
        let mut d = decision("a");
        if let (Event::Decision(x), Event::Decision(y)) = (&mut c.event, &mut d.event) {
            x.action = "GET/".to_owned();
            x.path = "x".to_owned();
            y.action = "GET".to_owned();
            y.path = "/x".to_owned();
        }
        assert_ne!(hash_of(&GENESIS, 1, "s", 0, &c), hash_of(&GENESIS, 1, "s", 0, &d));
    }

    #[test]
    fn the_encoding_is_tagged_and_length_prefixed() {
        let record = Record {
            id: "i".to_owned(),
            time_micros: -1,
            event: Event::Identity(Identity {
                kind: IdentityKind::Revoked,
                spiffe_id: "x".to_owned(),
                serial: String::new(),
                reason: String::new(),
                not_after_unix: 0,
            }),
        };
        let mut out = Vec::new();
        encode(258, "s", 0, &record, &mut out);
        assert_eq!(&out[..5], &[0x00, 0, 0, 0, 24]);
        assert_eq!(&out[29..42], &[0x01, 0, 0, 0, 8, 0, 0, 0, 0, 0, 0, 1, 2]);
        assert!(out
            .windows(13)
            .any(|w| w == [0x05, 0, 0, 0, 8, 255, 255, 255, 255, 255, 255, 255, 255]));
    }

    #[test]
    fn an_untouched_chain_verifies() {
        let v = verify(&chain(5));
        assert_eq!(
            v,
            Verification {
                records: 5,
                broken: None
            }
        );
    }

    #[test]
    fn an_edited_record_is_named_as_edited() {
        let mut records = chain(5);
        records[2].received_micros += 1;
        let broken = verify(&records).broken.unwrap();
        assert_eq!((broken.seq, broken.record_id.as_str()), (3, "id-3"));
        assert!(broken.problem.contains("edited"), "{}", broken.problem);
    }

    #[test]
    fn a_deleted_record_shows_as_a_jump() {
        let mut records = chain(5);
        records.remove(2);
        let broken = verify(&records).broken.unwrap();
        assert_eq!(broken.seq, 4);
        assert_eq!(broken.problem, "sequence jumps from 2 to 4: record 3 was deleted");
    }

    #[test]
    fn a_chain_must_start_at_one() {
        let mut records = chain(5);
        records.drain(..2);
        let broken = verify(&records).broken.unwrap();
        assert_eq!(broken.seq, 3);
        assert_eq!(
            broken.problem,
            "the chain starts at record 3 instead of 1: records 1 to 2 were deleted"
        );
    }

    #[test]
    fn a_record_with_the_wrong_prev_is_named() {
        let mut records = chain(5);
        let forged_prev = [9; 32];
        records[3].prev_hash = forged_prev;
        records[3].hash = hash_of(&forged_prev, 4, "spiffe://td/sender", 7, &records[3].record);
        let broken = verify(&records).broken.unwrap();
        assert_eq!(broken.seq, 4);
        assert!(
            broken.problem.starts_with("its prev_hash is not the hash of record 3"),
            "{}",
            broken.problem
        );
    }

    #[test]
    fn only_the_first_break_is_reported_and_every_record_is_counted() {
        let mut records = chain(6);
        records[1].received_micros = 0;
        records[4].received_micros = 0;
        let v = verify(&records);
        assert_eq!(v.records, 6);
        assert_eq!(v.broken.unwrap().seq, 2);
    }

    #[test]
    fn a_cut_off_tail_is_seen_against_the_head() {
        let records = chain(5);
        let head = Head {
            seq: 5,
            hash: records[4].hash,
            sender: "spiffe://td/sender".to_owned(),
            record_id: "id-5".to_owned(),
        };
        let mut v = ChainVerifier::expecting(Some(head.clone()));
        for r in &records[..4] {
            v.push(r).unwrap();
        }
        let broken = v.finish_at(Some(&head)).broken.unwrap();
        assert_eq!((broken.seq, broken.record_id.as_str()), (5, "id-5"));
        assert_eq!(
            broken.problem,
            "the chain ends at record 4 but the store's head is record 5: record 5 was deleted (the log was truncated)"
        );
    }

    #[test]
    fn a_record_past_the_head_was_not_appended_by_the_service() {
        let records = chain(3);
        let head = Head {
            seq: 2,
            hash: records[1].hash,
            sender: String::new(),
            record_id: String::new(),
        };
        let mut v = ChainVerifier::expecting(Some(head.clone()));
        for r in &records {
            v.push(r).unwrap();
        }
        let broken = v.finish_at(Some(&head)).broken.unwrap();
        assert_eq!(broken.seq, 3);
        assert!(
            broken.problem.contains("inserted outside the audit service"),
            "{}",
            broken.problem
        );
    }
}
