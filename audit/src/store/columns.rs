//! The one row layout both backends share: a record as 33 explicit columns, and
//! the strict reading back that turns any impossible row into a named problem.
//!
//! Every event field is its own column (so queries filter in SQL), the columns of
//! other kinds stay NULL. Reading is strict because a column the hash does not
//! cover must not carry meaning: a `host` set on a decision row, an `effect` of
//! `maybe`, a number out of range, a hash of the wrong length all make the row
//! unreadable, which verification reports as a broken link.

use std::str::FromStr;

use crate::record::{
    Decision, Event, EventKind, External, Hash, Identity, PolicyChange, Record, StoredRecord, UnknownValue,
};

/// The type of a column, as each backend spells it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum SqlType {
    Int,
    Text,
    Blob,
}

/// Column names, in the order of [`values`] and of every SELECT.
pub(crate) const NAMES: [&str; 33] = [
    "seq",
    "sender",
    "record_id",
    "received_us",
    "time_us",
    "kind",
    // decision
    "side",
    "effect",
    "principal",
    "action",
    "resource",
    "path",
    "policies",
    "request_id",
    "status",
    "latency_us",
    // external (request_id shared with decisions)
    "ext_kind",
    "workload",
    "host",
    "sni",
    "port",
    "protocol",
    "reason",
    // identity (reason shared with external events)
    "id_kind",
    "spiffe_id",
    "serial",
    "not_after",
    // policy
    "outcome",
    "version",
    "digest",
    "detail",
    "prev_hash",
    "hash",
];

/// The type of each column of [`NAMES`].
pub(crate) const TYPES: [SqlType; 33] = {
    use SqlType::{Blob, Int, Text};
    [
        Int, Text, Text, Int, Int, Text, // common
        Text, Text, Text, Text, Text, Text, Text, Text, Int, Int, // decision
        Text, Text, Text, Text, Int, Text, Text, // external
        Text, Text, Text, Int, // identity
        Text, Int, Text, Text, // policy
        Blob, Blob,
    ]
};

/// Columns every row has, whatever its kind.
const COMMON: &[usize] = &[
    c::SEQ,
    c::SENDER,
    c::RECORD_ID,
    c::RECEIVED,
    c::TIME,
    c::KIND,
    c::PREV,
    c::HASH,
];

/// Column indexes, named like the columns.
pub(crate) mod c {
    pub const SEQ: usize = 0;
    pub const SENDER: usize = 1;
    pub const RECORD_ID: usize = 2;
    pub const RECEIVED: usize = 3;
    pub const TIME: usize = 4;
    pub const KIND: usize = 5;
    pub const SIDE: usize = 6;
    pub const EFFECT: usize = 7;
    pub const PRINCIPAL: usize = 8;
    pub const ACTION: usize = 9;
    pub const RESOURCE: usize = 10;
    pub const PATH: usize = 11;
    pub const POLICIES: usize = 12;
    pub const REQUEST_ID: usize = 13;
    pub const STATUS: usize = 14;
    pub const LATENCY: usize = 15;
    pub const EXT_KIND: usize = 16;
    pub const WORKLOAD: usize = 17;
    pub const HOST: usize = 18;
    pub const SNI: usize = 19;
    pub const PORT: usize = 20;
    pub const PROTOCOL: usize = 21;
    pub const REASON: usize = 22;
    pub const ID_KIND: usize = 23;
    pub const SPIFFE_ID: usize = 24;
    pub const SERIAL: usize = 25;
    pub const NOT_AFTER: usize = 26;
    pub const OUTCOME: usize = 27;
    pub const VERSION: usize = 28;
    pub const DIGEST: usize = 29;
    pub const DETAIL: usize = 30;
    pub const PREV: usize = 31;
    pub const HASH: usize = 32;
}

/// Whether every row has this column, whatever its kind.
pub(crate) fn is_common(col: usize) -> bool {
    COMMON.contains(&col)
}

/// The `INSERT` of one row, in [`NAMES`] order: `(?1, ?2, …)` placeholders for
/// SQLite; `UNNEST` of one array per column (a whole batch in one statement) for
/// PostgreSQL.
pub(crate) fn insert(dialect: super::sql::Dialect) -> String {
    use super::sql::Dialect;
    match dialect {
        Dialect::Sqlite => {
            let placeholders: Vec<String> = (1..=NAMES.len()).map(|n| format!("?{n}")).collect();
            format!(
                "INSERT INTO audit_records ({}) VALUES ({}) ON CONFLICT (sender, record_id) DO NOTHING",
                list(),
                placeholders.join(", ")
            )
        }
        Dialect::Postgres => {
            let arrays: Vec<String> = TYPES
                .iter()
                .enumerate()
                .map(|(i, ty)| {
                    let ty = match ty {
                        SqlType::Int => "bigint",
                        SqlType::Text => "text",
                        SqlType::Blob => "bytea",
                    };
                    format!("${}::{ty}[]", i + 1)
                })
                .collect();
            format!(
                "INSERT INTO audit_records ({}) SELECT * FROM UNNEST({})",
                list(),
                arrays.join(", ")
            )
        }
    }
}

/// The comma-separated column list.
pub(crate) fn list() -> String {
    NAMES.join(", ")
}

/// One value to bind.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Value<'a> {
    Null,
    Int(i64),
    Text(&'a str),
    Owned(String),
    Blob(&'a [u8]),
}

impl<'a> Value<'a> {
    pub(crate) fn int(&self) -> Option<i64> {
        match self {
            Self::Int(v) => Some(*v),
            _ => None,
        }
    }

    pub(crate) fn text(&self) -> Option<&str> {
        match self {
            Self::Text(v) => Some(v),
            Self::Owned(v) => Some(v),
            _ => None,
        }
    }

    pub(crate) fn blob(&self) -> Option<&'a [u8]> {
        match self {
            Self::Blob(v) => Some(v),
            _ => None,
        }
    }
}

/// A u64 kept in a signed 64-bit column: the same bits, so it reads back exactly.
#[expect(
    clippy::cast_possible_wrap,
    reason = "a lossless round trip through the same 64 bits"
)]
fn u64_bits(v: u64) -> i64 {
    v as i64
}

#[expect(clippy::cast_sign_loss, reason = "a lossless round trip through the same 64 bits")]
fn bits_u64(v: i64) -> u64 {
    v as u64
}

/// The row of one stored record, in [`NAMES`] order.
pub(crate) fn values<'a>(
    seq: u64,
    sender: &'a str,
    received_micros: i64,
    record: &'a Record,
    prev_hash: &'a Hash,
    hash: &'a Hash,
) -> [Value<'a>; 33] {
    use Value::{Int, Null, Owned, Text};
    let mut row = [const { Null }; 33];
    let mut set = |i: usize, v: Value<'a>| {
        if let Some(slot) = row.get_mut(i) {
            *slot = v;
        }
    };
    set(c::SEQ, Int(u64_bits(seq)));
    set(c::SENDER, Text(sender));
    set(c::RECORD_ID, Text(&record.id));
    set(c::RECEIVED, Int(received_micros));
    set(c::TIME, Int(record.time_micros));
    set(c::KIND, Text(record.event.kind().as_str()));
    match &record.event {
        Event::Decision(d) => {
            set(c::SIDE, Text(d.side.as_str()));
            set(c::EFFECT, Text(d.effect.as_str()));
            set(c::PRINCIPAL, Text(&d.principal));
            set(c::ACTION, Text(&d.action));
            set(c::RESOURCE, Text(&d.resource));
            set(c::PATH, Text(&d.path));
            set(c::POLICIES, Owned(policies_json(&d.policies)));
            set(c::REQUEST_ID, Text(&d.request_id));
            set(c::STATUS, Int(i64::from(d.status)));
            set(c::LATENCY, Int(u64_bits(d.latency_micros)));
        }
        Event::External(x) => {
            set(c::EXT_KIND, Text(x.kind.as_str()));
            set(c::WORKLOAD, Text(&x.workload));
            set(c::HOST, Text(&x.host));
            set(c::SNI, Text(&x.sni));
            set(c::PORT, Int(i64::from(x.port)));
            set(c::PROTOCOL, Text(&x.protocol));
            set(c::REQUEST_ID, Text(&x.request_id));
            set(c::REASON, Text(&x.reason));
        }
        Event::Identity(i) => {
            set(c::ID_KIND, Text(i.kind.as_str()));
            set(c::SPIFFE_ID, Text(&i.spiffe_id));
            set(c::SERIAL, Text(&i.serial));
            set(c::REASON, Text(&i.reason));
            set(c::NOT_AFTER, Int(i.not_after_unix));
        }
        Event::Policy(p) => {
            set(c::OUTCOME, Text(p.outcome.as_str()));
            set(c::VERSION, Int(u64_bits(p.version)));
            set(c::DIGEST, Text(&p.digest));
            set(c::DETAIL, Text(&p.detail));
        }
    }
    set(c::PREV, Value::Blob(prev_hash));
    set(c::HASH, Value::Blob(hash));
    row
}

/// Policy ids as a JSON array: unambiguous whatever characters an id holds.
fn policies_json(policies: &[String]) -> String {
    serde_json::to_string(policies).unwrap_or_else(|_| "[]".to_owned())
}

/// A row that cannot be a record; verification names it as the broken link.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Malformed {
    pub seq: u64,
    pub sender: String,
    pub record_id: String,
    pub problem: String,
}

/// A row as a backend returns it; `Err` is a value of the wrong type, in words.
pub(crate) trait RowRead {
    fn int(&self, col: usize) -> Result<Option<i64>, String>;
    fn text(&self, col: usize) -> Result<Option<String>, String>;
    fn blob(&self, col: usize) -> Result<Option<Vec<u8>>, String>;
    fn is_null(&self, col: usize) -> bool;
}

/// Reads a row strictly: see the module documentation.
pub(crate) fn decode(row: &impl RowRead) -> Result<StoredRecord, Malformed> {
    let raw_seq = row.int(c::SEQ).ok().flatten().unwrap_or(0);
    let seq = u64::try_from(raw_seq).unwrap_or(0);
    let mut reader = Reader { row, used: 0 };
    let read = reader
        .stored(seq, raw_seq)
        .and_then(|stored| reader.rest_null().map(|()| stored));
    read.map_err(|problem| Malformed {
        seq,
        sender: row.text(c::SENDER).ok().flatten().unwrap_or_default(),
        record_id: row.text(c::RECORD_ID).ok().flatten().unwrap_or_default(),
        problem: format!("{problem}: the row was edited outside the audit service"),
    })
}

struct Reader<'r, R> {
    row: &'r R,
    /// The columns read so far, one bit each.
    used: u64,
}

impl<R: RowRead> Reader<'_, R> {
    fn stored(&mut self, seq: u64, raw_seq: i64) -> Result<StoredRecord, String> {
        if seq == 0 {
            return Err(format!("column `seq` holds {raw_seq}, not a positive number"));
        }
        for col in COMMON {
            self.used |= 1 << col;
        }
        let kind: EventKind = self.parse(c::KIND)?;
        let event = match kind {
            EventKind::Decision => self.decision()?,
            EventKind::External => self.external()?,
            EventKind::Identity => self.identity()?,
            EventKind::Policy => self.policy()?,
        };
        Ok(StoredRecord {
            seq,
            sender: self.text(c::SENDER)?,
            received_micros: self.int(c::RECEIVED)?,
            record: Record {
                id: self.text(c::RECORD_ID)?,
                time_micros: self.int(c::TIME)?,
                event,
            },
            prev_hash: self.hash(c::PREV)?,
            hash: self.hash(c::HASH)?,
        })
    }

    fn decision(&mut self) -> Result<Event, String> {
        Ok(Event::Decision(Decision {
            side: self.parse(c::SIDE)?,
            effect: self.parse(c::EFFECT)?,
            principal: self.text(c::PRINCIPAL)?,
            action: self.text(c::ACTION)?,
            resource: self.text(c::RESOURCE)?,
            path: self.text(c::PATH)?,
            policies: self.policies()?,
            request_id: self.text(c::REQUEST_ID)?,
            status: self.narrow(c::STATUS)?,
            latency_micros: bits_u64(self.int(c::LATENCY)?),
        }))
    }

    fn external(&mut self) -> Result<Event, String> {
        Ok(Event::External(External {
            kind: self.parse(c::EXT_KIND)?,
            workload: self.text(c::WORKLOAD)?,
            host: self.text(c::HOST)?,
            sni: self.text(c::SNI)?,
            port: self.narrow(c::PORT)?,
            protocol: self.text(c::PROTOCOL)?,
            request_id: self.text(c::REQUEST_ID)?,
            reason: self.text(c::REASON)?,
        }))
    }

    fn identity(&mut self) -> Result<Event, String> {
        Ok(Event::Identity(Identity {
            kind: self.parse(c::ID_KIND)?,
            spiffe_id: self.text(c::SPIFFE_ID)?,
            serial: self.text(c::SERIAL)?,
            reason: self.text(c::REASON)?,
            not_after_unix: self.int(c::NOT_AFTER)?,
        }))
    }

    fn policy(&mut self) -> Result<Event, String> {
        Ok(Event::Policy(PolicyChange {
            outcome: self.parse(c::OUTCOME)?,
            version: bits_u64(self.int(c::VERSION)?),
            digest: self.text(c::DIGEST)?,
            detail: self.text(c::DETAIL)?,
        }))
    }

    fn text(&mut self, col: usize) -> Result<String, String> {
        self.used |= 1 << col;
        self.row.text(col)?.ok_or_else(|| empty(col))
    }

    fn int(&mut self, col: usize) -> Result<i64, String> {
        self.used |= 1 << col;
        self.row.int(col)?.ok_or_else(|| empty(col))
    }

    fn narrow<T: TryFrom<i64>>(&mut self, col: usize) -> Result<T, String> {
        let v = self.int(col)?;
        T::try_from(v).map_err(|_| format!("column `{}` holds {v}, out of range", name(col)))
    }

    fn parse<T: FromStr<Err = UnknownValue>>(&mut self, col: usize) -> Result<T, String> {
        let text = self.text(col)?;
        text.parse().map_err(|e: UnknownValue| {
            format!(
                "column `{}` holds `{text}`, not one of {}",
                name(col),
                e.expected.join(", ")
            )
        })
    }

    fn policies(&mut self) -> Result<Vec<String>, String> {
        let text = self.text(c::POLICIES)?;
        serde_json::from_str(&text)
            .map_err(|_| format!("column `policies` holds `{text}`, not a JSON array of policy ids"))
    }

    fn hash(&mut self, col: usize) -> Result<Hash, String> {
        self.used |= 1 << col;
        let bytes = self.row.blob(col)?.ok_or_else(|| empty(col))?;
        Hash::try_from(bytes.as_slice())
            .map_err(|_| format!("column `{}` holds {} bytes, not a 32-byte hash", name(col), bytes.len()))
    }

    /// Every column the record's kind does not use must be NULL.
    fn rest_null(&self) -> Result<(), String> {
        match (0..NAMES.len()).find(|col| self.used & (1 << col) == 0 && !self.row.is_null(*col)) {
            Some(col) => Err(format!(
                "column `{}` is set, but a record of this kind has no such field",
                name(col)
            )),
            None => Ok(()),
        }
    }
}

fn name(col: usize) -> &'static str {
    NAMES.get(col).copied().unwrap_or("?")
}

fn empty(col: usize) -> String {
    format!("column `{}` is NULL", name(col))
}

/// The message for a value of the wrong type in a column.
pub(crate) fn wrong_type(col: usize, found: &str) -> String {
    format!("column `{}` holds {found}, not a value of its type", name(col))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::record::{Effect, Side, GENESIS};

    /// A row held in memory, as a backend would return it.
    struct Mem(Vec<Option<MemValue>>);

    #[derive(Clone)]
    enum MemValue {
        Int(i64),
        Text(String),
        Blob(Vec<u8>),
    }

    impl Mem {
        fn of(values: &[Value<'_>]) -> Self {
            Self(
                values
                    .iter()
                    .map(|v| match v {
                        Value::Null => None,
                        Value::Int(i) => Some(MemValue::Int(*i)),
                        Value::Text(t) => Some(MemValue::Text((*t).to_owned())),
                        Value::Owned(t) => Some(MemValue::Text(t.clone())),
                        Value::Blob(b) => Some(MemValue::Blob(b.to_vec())),
                    })
                    .collect(),
            )
        }
    }

    impl RowRead for Mem {
        fn int(&self, col: usize) -> Result<Option<i64>, String> {
            match &self.0[col] {
                None => Ok(None),
                Some(MemValue::Int(i)) => Ok(Some(*i)),
                Some(_) => Err(wrong_type(col, "something else")),
            }
        }
        fn text(&self, col: usize) -> Result<Option<String>, String> {
            match &self.0[col] {
                None => Ok(None),
                Some(MemValue::Text(t)) => Ok(Some(t.clone())),
                Some(_) => Err(wrong_type(col, "something else")),
            }
        }
        fn blob(&self, col: usize) -> Result<Option<Vec<u8>>, String> {
            match &self.0[col] {
                None => Ok(None),
                Some(MemValue::Blob(b)) => Ok(Some(b.clone())),
                Some(_) => Err(wrong_type(col, "something else")),
            }
        }
        fn is_null(&self, col: usize) -> bool {
            self.0[col].is_none()
        }
    }

    fn record() -> Record {
        Record {
            id: "id-1".to_owned(),
            time_micros: 5,
            event: Event::Decision(Decision {
                side: Side::Egress,
                effect: Effect::Deny,
                principal: "spiffe://td/a".to_owned(),
                action: "GET".to_owned(),
                resource: "ns/b".to_owned(),
                path: "/".to_owned(),
                policies: vec!["has\nnewline".to_owned(), "p,2".to_owned()],
                request_id: "r".to_owned(),
                status: 200,
                latency_micros: u64::MAX,
            }),
        }
    }

    #[test]
    fn a_row_reads_back_as_the_record_it_was_made_from() {
        let record = record();
        let mem = Mem::of(&values(3, "spiffe://td/s", 9, &record, &GENESIS, &[7; 32]));
        let stored = decode(&mem).unwrap();
        assert_eq!(stored.record, record);
        assert_eq!((stored.seq, stored.received_micros, stored.hash), (3, 9, [7; 32]));
    }

    #[test]
    fn a_field_of_another_kind_makes_the_row_unreadable() {
        let record = record();
        let mut mem = Mem::of(&values(3, "spiffe://td/s", 9, &record, &GENESIS, &[7; 32]));
        mem.0[c::HOST] = Some(MemValue::Text("evil.example".to_owned()));
        let err = decode(&mem).unwrap_err();
        assert_eq!((err.seq, err.record_id.as_str()), (3, "id-1"));
        assert_eq!(
            err.problem,
            "column `host` is set, but a record of this kind has no such field: \
             the row was edited outside the audit service"
        );
    }

    #[test]
    fn an_impossible_value_is_named() {
        let record = record();
        let mut mem = Mem::of(&values(3, "spiffe://td/s", 9, &record, &GENESIS, &[7; 32]));
        mem.0[c::EFFECT] = Some(MemValue::Text("maybe".to_owned()));
        assert!(decode(&mem)
            .unwrap_err()
            .problem
            .starts_with("column `effect` holds `maybe`, not one of allow, deny, dry_run_deny"));
        mem.0[c::EFFECT] = Some(MemValue::Text("deny".to_owned()));
        mem.0[c::STATUS] = Some(MemValue::Int(70_000));
        assert!(decode(&mem)
            .unwrap_err()
            .problem
            .starts_with("column `status` holds 70000, out of range"));
        mem.0[c::STATUS] = Some(MemValue::Int(200));
        mem.0[c::HASH] = Some(MemValue::Blob(vec![1, 2]));
        assert!(decode(&mem)
            .unwrap_err()
            .problem
            .starts_with("column `hash` holds 2 bytes"));
    }

    #[test]
    fn names_and_types_line_up() {
        assert_eq!(NAMES[c::HASH], "hash");
        assert_eq!(NAMES[c::NOT_AFTER], "not_after");
        assert_eq!(TYPES[c::PORT], SqlType::Int);
        assert_eq!(TYPES[c::DETAIL], SqlType::Text);
        assert_eq!(TYPES[c::PREV], SqlType::Blob);
    }
}
