//! Filters over the store, and the rows `palisade audit query` prints.
//!
//! A [`Filter`] is plain data: the store turns it into SQL (so a query over a
//! million records filters in the database, not here) and [`Filter::matches`]
//! states the same rule in Rust, for callers that already walk every record (a
//! report verifying the chain while it counts) and for tests that check the SQL.
//! Times parse from a duration before now or an RFC 3339 time ([`parse_since`]);
//! [`render`] prints records as an aligned table, JSON or CSV.

use std::fmt;
use std::str::FromStr;

use time::format_description::well_known::Rfc3339;
use time::macros::format_description;
use time::OffsetDateTime;

use crate::record::{Effect, Event, EventKind, ExternalKind, Side, StoredRecord, UnknownValue};

/// Which records a query or report covers. Every field narrows; the default
/// matches everything.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Filter {
    /// Records whose time (the sender's clock) is at or after this, in µs since the epoch.
    pub since_micros: Option<i64>,
    /// Records whose time is before this (exclusive), in µs since the epoch.
    pub until_micros: Option<i64>,
    /// Decisions with this effect (other kinds never match).
    pub effect: Option<Effect>,
    /// Decisions made on this side (other kinds never match).
    pub side: Option<Side>,
    /// A SPIFFE ID: the decision's principal, the external event's workload, the
    /// identity event's SPIFFE ID, or the sender of any record.
    pub source: Option<String>,
    /// A service id (`ns/name`) or a host: the decision's resource (also
    /// `HOST:PORT` resources, by host), or the external event's host (or `HOST:PORT`).
    pub dest: Option<String>,
    pub kind: Option<KindFilter>,
}

impl Filter {
    /// Whether a record passes the filter; the same rule as the store's SQL.
    pub fn matches(&self, stored: &StoredRecord) -> bool {
        let record = &stored.record;
        let decision = match &record.event {
            Event::Decision(d) => Some(d),
            _ => None,
        };
        self.since_micros.is_none_or(|since| record.time_micros >= since)
            && self.until_micros.is_none_or(|until| record.time_micros < until)
            && self
                .effect
                .is_none_or(|effect| decision.is_some_and(|d| d.effect == effect))
            && self.side.is_none_or(|side| decision.is_some_and(|d| d.side == side))
            && self
                .source
                .as_deref()
                .is_none_or(|source| source_matches(stored, source))
            && self
                .dest
                .as_deref()
                .is_none_or(|dest| dest_matches(&record.event, dest))
            && self.kind.is_none_or(|kind| kind.matches(&record.event))
    }
}

fn source_matches(stored: &StoredRecord, source: &str) -> bool {
    stored.sender == source
        || match &stored.record.event {
            Event::Decision(d) => d.principal == source,
            Event::External(x) => x.workload == source,
            Event::Identity(i) => i.spiffe_id == source,
            Event::Policy(_) => false,
        }
}

fn dest_matches(event: &Event, dest: &str) -> bool {
    match event {
        Event::Decision(d) => {
            d.resource == dest || d.resource.strip_prefix(dest).is_some_and(|rest| rest.starts_with(':'))
        }
        Event::External(x) => x.host == dest || format!("{}:{}", x.host, x.port) == dest,
        Event::Identity(_) | Event::Policy(_) => false,
    }
}

/// `--kind`: an event kind, or one kind of external event.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum KindFilter {
    Decision,
    /// Any external event.
    External,
    Allowlisted,
    BlackHole,
    Passthrough,
    Identity,
    Policy,
}

impl KindFilter {
    /// Every value, in the order help texts list them.
    pub const ALL: &'static [Self] = &[
        Self::Decision,
        Self::External,
        Self::Allowlisted,
        Self::BlackHole,
        Self::Passthrough,
        Self::Identity,
        Self::Policy,
    ];

    const SPELLINGS: &'static [&'static str] = &[
        "decision",
        "external",
        "allowlisted",
        "blackhole",
        "passthrough",
        "identity",
        "policy",
    ];

    /// The one spelling.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Decision => "decision",
            Self::External => "external",
            Self::Allowlisted => "allowlisted",
            Self::BlackHole => "blackhole",
            Self::Passthrough => "passthrough",
            Self::Identity => "identity",
            Self::Policy => "policy",
        }
    }

    /// What the store compares: the record kind, and the external kind if any.
    pub fn parts(self) -> (EventKind, Option<ExternalKind>) {
        match self {
            Self::Decision => (EventKind::Decision, None),
            Self::External => (EventKind::External, None),
            Self::Allowlisted => (EventKind::External, Some(ExternalKind::Allowlisted)),
            Self::BlackHole => (EventKind::External, Some(ExternalKind::BlackHole)),
            Self::Passthrough => (EventKind::External, Some(ExternalKind::Passthrough)),
            Self::Identity => (EventKind::Identity, None),
            Self::Policy => (EventKind::Policy, None),
        }
    }

    /// Whether an event is of this kind.
    pub fn matches(self, event: &Event) -> bool {
        let (kind, external) = self.parts();
        event.kind() == kind
            && match (external, event) {
                (Some(wanted), Event::External(x)) => x.kind == wanted,
                (Some(_), _) => false,
                (None, _) => true,
            }
    }
}

impl fmt::Display for KindFilter {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl FromStr for KindFilter {
    type Err = UnknownValue;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Self::ALL
            .iter()
            .copied()
            .find(|kind| kind.as_str() == s)
            .ok_or_else(|| UnknownValue {
                what: "record kind",
                value: s.to_owned(),
                expected: Self::SPELLINGS,
            })
    }
}

/// A time argument that could not be read.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum QueryError {
    #[error(
        "`{text}` is not a time; use a duration before now (`90s`, `30m`, `1h`, `2d`, `1w`), \
         a date (`2026-01-31`) or an RFC 3339 time (`2026-01-31T12:00:00Z`)"
    )]
    BadTime { text: String },
    #[error("`{text}` lies outside the times the audit log can hold; use a shorter duration or a later date")]
    OutOfRange { text: String },
}

/// `--since`: a duration before `now_micros` (`90s`, `30m`, `1h`, `2d`, `1w`), a
/// date (midnight UTC) or an RFC 3339 time, as µs since the epoch.
pub fn parse_since(text: &str, now_micros: i64) -> Result<i64, QueryError> {
    parse_time(text, now_micros)
}

/// `--until`: read like [`parse_since`] (`--until 1h` is one hour ago); the bound is exclusive.
pub fn parse_until(text: &str, now_micros: i64) -> Result<i64, QueryError> {
    parse_time(text, now_micros)
}

fn parse_time(text: &str, now_micros: i64) -> Result<i64, QueryError> {
    let text = text.trim();
    let out_of_range = || QueryError::OutOfRange { text: text.to_owned() };
    if let Some(micros) = parse_duration(text) {
        let micros = micros.ok_or_else(out_of_range)?;
        return now_micros.checked_sub(micros).ok_or_else(out_of_range);
    }
    let time = OffsetDateTime::parse(text, &Rfc3339)
        .or_else(|_| {
            time::Date::parse(text, format_description!("[year]-[month]-[day]")).map(|d| d.midnight().assume_utc())
        })
        .map_err(|_| QueryError::BadTime { text: text.to_owned() })?;
    i64::try_from(time.unix_timestamp_nanos() / 1000).map_err(|_| out_of_range())
}

/// `Some(Some(µs))` for a duration, `Some(None)` for one too long, `None` if `text` is not one.
fn parse_duration(text: &str) -> Option<Option<i64>> {
    let unit_at = text.find(|c: char| !c.is_ascii_digit())?;
    let (number, unit) = text.split_at(unit_at);
    let unit_micros: i64 = match unit {
        "s" => 1_000_000,
        "m" => 60_000_000,
        "h" => 3_600_000_000,
        "d" => 86_400_000_000,
        "w" => 604_800_000_000,
        _ => return None,
    };
    if number.is_empty() {
        return None;
    }
    Some(number.parse::<i64>().ok().and_then(|n| n.checked_mul(unit_micros)))
}

/// How `palisade audit query` prints records.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum QueryFormat {
    /// Aligned columns for a terminal; long details cut, control characters escaped.
    #[default]
    Table,
    /// An array of stored records, every field.
    Json,
    /// A header and one line per record (RFC 4180 quoting).
    Csv,
}

impl FromStr for QueryFormat {
    type Err = UnknownValue;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s {
            "table" => Ok(Self::Table),
            "json" => Ok(Self::Json),
            "csv" => Ok(Self::Csv),
            _ => Err(UnknownValue {
                what: "output format",
                value: s.to_owned(),
                expected: &["table", "json", "csv"],
            }),
        }
    }
}

/// Prints records in a format; the output ends with a newline.
pub fn render(records: &[StoredRecord], format: QueryFormat) -> String {
    match format {
        QueryFormat::Table => render_table(records),
        QueryFormat::Json => {
            let mut json = serde_json::to_string_pretty(records).unwrap_or_else(|_| "[]".to_owned());
            json.push('\n');
            json
        }
        QueryFormat::Csv => render_csv(records),
    }
}

const TABLE_HEADER: [&str; 9] = [
    "TIME",
    "SEQ",
    "KIND",
    "SOURCE",
    "DEST",
    "ACTION/DETAIL",
    "EFFECT/OUTCOME",
    "STATUS",
    "REQUEST ID",
];

/// The longest ACTION/DETAIL a table shows, in characters.
const DETAIL_WIDTH: usize = 60;

/// One record's table cells, before escaping.
struct Cells {
    kind: String,
    source: String,
    dest: String,
    detail: String,
    outcome: &'static str,
    status: String,
    request_id: String,
}

fn cells(stored: &StoredRecord) -> Cells {
    let sender = stored.sender.clone();
    match &stored.record.event {
        Event::Decision(d) => Cells {
            kind: format!("decision/{}", d.side),
            source: d.principal.clone(),
            dest: d.resource.clone(),
            detail: format!("{} {}", d.action, d.path),
            outcome: d.effect.as_str(),
            status: if d.status == 0 {
                String::new()
            } else {
                d.status.to_string()
            },
            request_id: d.request_id.clone(),
        },
        Event::External(x) => Cells {
            kind: "external".to_owned(),
            source: x.workload.clone(),
            dest: format!("{}:{}", x.host, x.port),
            detail: if x.reason.is_empty() {
                x.protocol.clone()
            } else {
                format!("{}: {}", x.protocol, x.reason)
            },
            outcome: x.kind.as_str(),
            status: String::new(),
            request_id: x.request_id.clone(),
        },
        Event::Identity(i) => Cells {
            kind: "identity".to_owned(),
            source: sender,
            dest: i.spiffe_id.clone(),
            detail: match (i.serial.is_empty(), i.reason.is_empty()) {
                (true, _) => i.reason.clone(),
                (false, true) => format!("serial {}", i.serial),
                (false, false) => format!("serial {}: {}", i.serial, i.reason),
            },
            outcome: i.kind.as_str(),
            status: String::new(),
            request_id: String::new(),
        },
        Event::Policy(p) => Cells {
            kind: "policy".to_owned(),
            source: sender,
            dest: String::new(),
            detail: if p.version == 0 {
                p.detail.clone()
            } else {
                format!("version {} {}", p.version, p.digest)
            },
            outcome: p.outcome.as_str(),
            status: String::new(),
            request_id: String::new(),
        },
    }
}

fn render_table(records: &[StoredRecord]) -> String {
    let or_dash = |s: String| {
        if s.is_empty() {
            "-".to_owned()
        } else {
            terminal_safe(&s)
        }
    };
    let rows: Vec<[String; 9]> = records
        .iter()
        .map(|stored| {
            let c = cells(stored);
            [
                format_time(stored.record.time_micros),
                stored.seq.to_string(),
                c.kind,
                or_dash(c.source),
                or_dash(c.dest),
                or_dash(cut(&c.detail, DETAIL_WIDTH)),
                c.outcome.to_owned(),
                or_dash(c.status),
                or_dash(c.request_id),
            ]
        })
        .collect();
    let mut widths = TABLE_HEADER.map(|h| h.chars().count());
    for row in &rows {
        for (width, cell) in widths.iter_mut().zip(row) {
            *width = (*width).max(cell.chars().count());
        }
    }
    let mut out = String::new();
    let header = TABLE_HEADER.map(str::to_owned);
    for row in std::iter::once(&header).chain(&rows) {
        let mut line = String::new();
        for (cell, width) in row.iter().zip(widths) {
            line.push_str(cell);
            line.extend(std::iter::repeat_n(' ', width.saturating_sub(cell.chars().count()) + 2));
        }
        out.push_str(line.trim_end());
        out.push('\n');
    }
    out
}

/// Replaces control characters (a newline in a reason, an escape sequence in a
/// path) so a record cannot redraw the operator's terminal.
fn terminal_safe(text: &str) -> String {
    text.chars()
        .map(|c| {
            if c.is_control() {
                c.escape_default().to_string()
            } else {
                c.to_string()
            }
        })
        .collect()
}

fn cut(text: &str, max: usize) -> String {
    if text.chars().count() <= max {
        text.to_owned()
    } else {
        let mut cut: String = text.chars().take(max.saturating_sub(1)).collect();
        cut.push('…');
        cut
    }
}

/// RFC 3339 in UTC with milliseconds; the raw µs if out of range.
pub fn format_time(micros: i64) -> String {
    OffsetDateTime::from_unix_timestamp_nanos(i128::from(micros) * 1000)
        .ok()
        .and_then(|t| {
            t.format(format_description!(
                "[year]-[month]-[day]T[hour]:[minute]:[second].[subsecond digits:3]Z"
            ))
            .ok()
        })
        .unwrap_or_else(|| micros.to_string())
}

const CSV_HEADER: &str =
    "time,seq,kind,source,dest,action_detail,effect_outcome,status,request_id,sender,record_id,policies,hash";

fn render_csv(records: &[StoredRecord]) -> String {
    let mut out = String::with_capacity(64 + records.len() * 256);
    out.push_str(CSV_HEADER);
    out.push_str("\r\n");
    for stored in records {
        let c = cells(stored);
        let policies = match &stored.record.event {
            Event::Decision(d) => d.policies.join(" "),
            _ => String::new(),
        };
        let fields = [
            format_time(stored.record.time_micros),
            stored.seq.to_string(),
            c.kind,
            c.source,
            c.dest,
            c.detail,
            c.outcome.to_owned(),
            c.status,
            c.request_id,
            stored.sender.clone(),
            stored.record.id.clone(),
            policies,
            crate::record::to_hex(&stored.hash),
        ];
        for (i, field) in fields.iter().enumerate() {
            if i > 0 {
                out.push(',');
            }
            push_csv_field(&mut out, field);
        }
        out.push_str("\r\n");
    }
    out
}

/// RFC 4180 quoting; a value a spreadsheet would run as a formula (`=`, `+`, `-`,
/// `@`, tab or CR first) gets a leading `'` (values come from senders: a request
/// path is attacker-chosen).
fn push_csv_field(out: &mut String, field: &str) {
    let formula = field.starts_with(['=', '+', '-', '@', '\t', '\r']);
    let quote = formula || field.contains([',', '"', '\n', '\r']);
    if quote {
        out.push('"');
    }
    if formula {
        out.push('\'');
    }
    for c in field.chars() {
        if c == '"' {
            out.push('"');
        }
        out.push(c);
    }
    if quote {
        out.push('"');
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::record::{Decision, External, PolicyChange, PolicyOutcome, Record, GENESIS};

    const NOW: i64 = 1_800_000_000_000_000;

    fn stored(seq: u64, event: Event) -> StoredRecord {
        StoredRecord {
            seq,
            sender: "spiffe://td/ns/shop/sa/web".to_owned(),
            received_micros: NOW,
            record: Record {
                id: format!("r{seq}"),
                time_micros: NOW - 1_000_000 * i64::try_from(seq).unwrap(),
                event,
            },
            prev_hash: GENESIS,
            hash: GENESIS,
        }
    }

    fn decision(effect: Effect, resource: &str, path: &str) -> Event {
        Event::Decision(Decision {
            side: Side::Egress,
            effect,
            principal: "spiffe://td/ns/shop/sa/web".to_owned(),
            action: "GET".to_owned(),
            resource: resource.to_owned(),
            path: path.to_owned(),
            policies: vec!["p1".to_owned(), "p2".to_owned()],
            request_id: "req-1".to_owned(),
            status: 403,
            latency_micros: 10,
        })
    }

    fn external(kind: ExternalKind, host: &str) -> Event {
        Event::External(External {
            kind,
            workload: "spiffe://td/ns/shop/sa/batch".to_owned(),
            host: host.to_owned(),
            sni: host.to_owned(),
            port: 443,
            protocol: "tls".to_owned(),
            request_id: String::new(),
            reason: "not allowlisted".to_owned(),
        })
    }

    #[test]
    fn durations_count_back_from_now() {
        assert_eq!(parse_since("90s", NOW), Ok(NOW - 90_000_000));
        assert_eq!(parse_since("30m", NOW), Ok(NOW - 1_800_000_000));
        assert_eq!(parse_since("1h", NOW), Ok(NOW - 3_600_000_000));
        assert_eq!(parse_until("2d", NOW), Ok(NOW - 172_800_000_000));
    }

    #[test]
    fn rfc3339_times_and_dates_are_absolute() {
        assert_eq!(parse_since("1970-01-01T00:00:01.5Z", NOW), Ok(1_500_000));
        assert_eq!(parse_since("1970-01-02T00:00:00+01:00", NOW), Ok(82_800_000_000));
        assert_eq!(parse_since("1970-01-02", NOW), Ok(86_400_000_000));
    }

    #[test]
    fn bad_times_say_what_is_accepted() {
        let err = parse_since("yesterday", NOW).unwrap_err();
        assert!(
            err.to_string().starts_with("`yesterday` is not a time; use a duration"),
            "{err}"
        );
        assert!(parse_since("5y", NOW).is_err());
        assert!(parse_since("h", NOW).is_err());
        assert_eq!(
            parse_since("99999999999999999w", NOW),
            Err(QueryError::OutOfRange {
                text: "99999999999999999w".to_owned()
            })
        );
    }

    #[test]
    fn kinds_parse_and_list_their_spellings() {
        for kind in KindFilter::ALL {
            assert_eq!(kind.as_str().parse::<KindFilter>(), Ok(*kind));
        }
        let err = "dns".parse::<KindFilter>().unwrap_err().to_string();
        assert_eq!(
            err,
            "`dns` is not a valid record kind; expected one of: decision, external, allowlisted, blackhole, \
             passthrough, identity, policy"
        );
    }

    #[test]
    fn every_filter_field_narrows() {
        let deny = stored(1, decision(Effect::Deny, "payments/payments", "/charge"));
        let host_port = stored(2, decision(Effect::Allow, "api.stripe.com:443", "/v1"));
        let blackhole = stored(3, external(ExternalKind::BlackHole, "evil.example"));
        let all = Filter::default();
        assert!(all.matches(&deny) && all.matches(&blackhole));
        let effect = Filter {
            effect: Some(Effect::Deny),
            ..Filter::default()
        };
        assert!(effect.matches(&deny) && !effect.matches(&host_port) && !effect.matches(&blackhole));
        let dest = Filter {
            dest: Some("api.stripe.com".to_owned()),
            ..Filter::default()
        };
        assert!(dest.matches(&host_port) && !dest.matches(&deny));
        let dest = Filter {
            dest: Some("evil.example:443".to_owned()),
            ..Filter::default()
        };
        assert!(dest.matches(&blackhole) && !dest.matches(&host_port));
        let source = Filter {
            source: Some("spiffe://td/ns/shop/sa/batch".to_owned()),
            ..Filter::default()
        };
        assert!(source.matches(&blackhole) && !source.matches(&deny));
        let kind = Filter {
            kind: Some(KindFilter::BlackHole),
            ..Filter::default()
        };
        assert!(kind.matches(&blackhole) && !kind.matches(&deny));
        let kind = Filter {
            kind: Some(KindFilter::Passthrough),
            ..Filter::default()
        };
        assert!(!kind.matches(&blackhole));
        let window = Filter {
            since_micros: Some(NOW - 2_000_000),
            until_micros: Some(NOW - 1_000_000),
            ..Filter::default()
        };
        assert!(window.matches(&host_port) && !window.matches(&deny) && !window.matches(&blackhole));
    }

    #[test]
    fn a_table_aligns_columns_and_escapes_control_characters() {
        let records = [
            stored(1, decision(Effect::Deny, "payments/payments", "/charge\u{1b}[2J")),
            stored(12, external(ExternalKind::BlackHole, "evil.example")),
        ];
        let table = render(&records, QueryFormat::Table);
        let lines: Vec<&str> = table.lines().collect();
        assert_eq!(lines.len(), 3);
        assert!(lines[0].starts_with("TIME                      SEQ  KIND"), "{table}");
        assert!(lines[1].contains("GET /charge\\u{1b}[2J"), "{table}");
        assert!(!table.contains('\u{1b}'));
        assert!(lines[2].contains("12   external"), "{table}");
        assert_eq!(lines[1].find("payments/payments"), lines[2].find("evil.example:443"));
        assert!(lines[1].starts_with(&format_time(NOW - 1_000_000)), "{table}");
    }

    #[test]
    fn csv_quotes_and_defuses_formulas() {
        let records = [
            stored(1, decision(Effect::Deny, "=cmd|' /C calc'!A0", "/a,b")),
            stored(
                2,
                Event::Policy(PolicyChange {
                    outcome: PolicyOutcome::Rejected,
                    version: 0,
                    digest: String::new(),
                    detail: "line 1: \"x\"\nline 2".to_owned(),
                }),
            ),
        ];
        let csv = render(&records, QueryFormat::Csv);
        let mut lines = csv.split("\r\n");
        assert_eq!(lines.next(), Some(CSV_HEADER));
        let first = lines.next().unwrap();
        assert!(first.contains(",\"GET /a,b\","), "{first}");
        assert!(first.contains("\"'=cmd|' /C calc'!A0\""), "{first}");
        assert!(csv.contains("\"line 1: \"\"x\"\"\nline 2\""), "{csv}");
    }

    #[test]
    fn json_is_an_array_of_stored_records() {
        let records = [stored(1, decision(Effect::Allow, "a/b", "/"))];
        let json: serde_json::Value = serde_json::from_str(&render(&records, QueryFormat::Json)).unwrap();
        assert_eq!(json[0]["seq"], 1);
        assert_eq!(json[0]["record"]["event"]["type"], "decision");
        assert_eq!(json[0]["hash"].as_str().unwrap().len(), 64);
    }

    #[test]
    fn times_print_as_rfc3339_utc() {
        assert_eq!(format_time(1_500_000), "1970-01-01T00:00:01.500Z");
    }
}
