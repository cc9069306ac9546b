//! Words and numbers as every format prints them: times, counts, destinations,
//! effects, and the one rule for characters no report should carry.

use std::fmt;

use time::format_description::BorrowedFormatItem;
use time::macros::format_description;
use time::OffsetDateTime;

use crate::record::{Effect, ExternalKind};

const RFC3339_SECONDS: &[BorrowedFormatItem<'static>] =
    format_description!("[year]-[month]-[day]T[hour]:[minute]:[second]Z");

/// RFC 3339 UTC with whole seconds; a time the calendar cannot hold (beyond year
/// 9999) is printed as its microseconds instead of failing the report.
pub(crate) fn rfc3339(micros: i64) -> String {
    OffsetDateTime::from_unix_timestamp_nanos(i128::from(micros) * 1_000)
        .ok()
        .and_then(|t| t.format(RFC3339_SECONDS).ok())
        .unwrap_or_else(|| format!("{micros}µs since the epoch"))
}

/// `HH:MM` of a time, for chart axes; `MM-DD HH:MM` when `with_date`.
pub(crate) fn clock(micros: i64, with_date: bool) -> String {
    let full = rfc3339(micros);
    // `YYYY-MM-DDTHH:MM:SSZ`: the slices exist whenever the format succeeded.
    let (date, time) = (full.get(5..10), full.get(11..16));
    match (date, time, with_date) {
        (Some(date), Some(time), true) => format!("{date} {time}"),
        (_, Some(time), false) => time.to_owned(),
        _ => full,
    }
}

/// A count with thousands separators: `1,234,567`.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Count(pub u64);

impl fmt::Display for Count {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let digits = self.0.to_string();
        let lead = digits.len() % 3;
        for (i, c) in digits.chars().enumerate() {
            if i > 0 && i % 3 == lead % 3 {
                f.write_str(",")?;
            }
            write!(f, "{c}")?;
        }
        Ok(())
    }
}

/// A percentage with one decimal, or `n/a`.
pub(crate) fn percent(value: Option<f64>) -> String {
    value.map_or_else(|| "n/a".to_owned(), |p| format!("{p:.1}%"))
}

/// `host:port`, with an IPv6 address in brackets.
pub(crate) fn host_port(host: &str, port: u16) -> String {
    if host.contains(':') && !host.starts_with('[') {
        format!("[{host}]:{port}")
    } else {
        format!("{host}:{port}")
    }
}

/// An effect in words.
pub(crate) fn effect_label(effect: Effect) -> &'static str {
    match effect {
        Effect::Allow => "allow",
        Effect::Deny => "deny",
        Effect::DryRunDeny => "dry-run deny",
    }
}

/// An external kind in words.
pub(crate) fn external_label(kind: ExternalKind) -> &'static str {
    match kind {
        ExternalKind::Allowlisted => "allowlisted",
        ExternalKind::BlackHole => "BlackHole",
        ExternalKind::Passthrough => "Passthrough",
    }
}

/// The order external kinds are listed in: the refused, then the unvetted, then
/// the allowed.
pub(crate) fn external_rank(kind: ExternalKind) -> u8 {
    match kind {
        ExternalKind::BlackHole => 0,
        ExternalKind::Passthrough => 1,
        ExternalKind::Allowlisted => 2,
    }
}

/// Control characters other than tab and newline are replaced by U+FFFD in every
/// format: record fields come from senders and may carry terminal escapes or NULs.
pub(crate) fn printable(c: char) -> char {
    if c.is_control() && c != '\n' && c != '\t' {
        char::REPLACEMENT_CHARACTER
    } else {
        c
    }
}

/// The first line of a text that is not blank, trimmed.
pub(crate) fn first_line(text: &str) -> &str {
    text.lines().map(str::trim).find(|line| !line.is_empty()).unwrap_or("")
}

/// A string cut to `max` characters, with `…` when cut.
pub(crate) fn shorten(text: &str, max: usize) -> String {
    if text.chars().count() <= max {
        return text.to_owned();
    }
    let mut out: String = text.chars().take(max.saturating_sub(1)).collect();
    out.push('…');
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn times_are_rfc3339_utc_seconds() {
        assert_eq!(rfc3339(0), "1970-01-01T00:00:00Z");
        assert_eq!(rfc3339(1_700_000_000_123_456), "2023-11-14T22:13:20Z");
        assert_eq!(clock(1_700_000_000_123_456, false), "22:13");
        assert_eq!(clock(1_700_000_000_123_456, true), "11-14 22:13");
        assert_eq!(rfc3339(i64::MAX), format!("{}µs since the epoch", i64::MAX));
    }

    #[test]
    fn counts_have_thousands_separators() {
        assert_eq!(Count(0).to_string(), "0");
        assert_eq!(Count(999).to_string(), "999");
        assert_eq!(Count(1_000).to_string(), "1,000");
        assert_eq!(Count(123_456).to_string(), "123,456");
        assert_eq!(Count(1_234_567).to_string(), "1,234,567");
    }

    #[test]
    fn ipv6_destinations_are_bracketed() {
        assert_eq!(host_port("api.example.com", 443), "api.example.com:443");
        assert_eq!(host_port("2001:db8::1", 443), "[2001:db8::1]:443");
    }

    #[test]
    fn shortening_marks_the_cut() {
        assert_eq!(shorten("abcdef", 6), "abcdef");
        assert_eq!(shorten("abcdefg", 6), "abcde…");
    }
}
