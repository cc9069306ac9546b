//! A request's facts as the schema's `RequestContext`.
//!
//! | key | value |
//! | --- | --- |
//! | `path` | the canonical path, without the query |
//! | `host` | the canonical host, without the port |
//! | `protocol` | `"http1"`, `"h2"`, `"grpc"` or `"tcp"` |
//! | `sourceIp` | the peer's address, only when known; an IPv4-mapped IPv6 address is given as the IPv4 address it maps, so one range check covers both |
//! | `headers` | `"name:value"` for every header line and every comma-separated value in it (`SECURITY.md` §1 rule 6) |
//! | `headerNames` | the names of the headers present |
//! | `time` | the request time as a `datetime`, to the second |
//!
//! Header names are lower-cased. Each line's value is split on every `,`; each element
//! is trimmed of spaces and tabs (HTTP's optional whitespace) and empty elements are
//! dropped, as RFC 9110 §5.6.1 tells recipients to. Values keep their case. So
//! `X-Role: user, admin` and two lines `x-role: user` / `x-role: admin` both give
//! `"x-role:user"` and `"x-role:admin"`: a forbid on `x-role:admin` cannot be dodged
//! by folding values or repeating lines. A comma inside a quoted string splits too;
//! that can only add elements, never hide one.

use std::net::{IpAddr, Ipv6Addr};

use cedar_policy::{Context, RestrictedExpression};

use super::context_reads::{Keys, Reads};
use super::error::RequestError;
use super::extension_values;
use super::model::{Protocol, RequestFacts};

/// The earliest time a Cedar `datetime` can hold from a string: 0000-01-01T00:00:00Z.
const MIN_TIME: i64 = -62_167_219_200;
/// The latest: 9999-12-31T23:59:59Z.
const MAX_TIME: i64 = 253_402_300_799;

/// Builds the context of one request with what a policy set reads of it (see
/// `context_reads.rs`); [`Reads::all`] for the whole `RequestContext`. The time is
/// checked even when no policy reads it, so whether a request is refused never
/// depends on the policies.
pub(super) fn build(facts: &RequestFacts<'_>, reads: &Reads) -> Result<Context, RequestError> {
    if !(MIN_TIME..=MAX_TIME).contains(&facts.time_unix) {
        return Err(RequestError::TimeOutOfRange(facts.time_unix));
    }
    let keys = reads.keys;
    let mut pairs = Vec::with_capacity(7);
    if keys.contains(Keys::PATH) {
        pairs.push(string("path", facts.path));
    }
    if keys.contains(Keys::HOST) {
        pairs.push(string("host", facts.host));
    }
    if keys.contains(Keys::PROTOCOL) {
        pairs.push(string("protocol", protocol(facts.protocol)));
    }
    if let (true, Some(ip)) = (keys.contains(Keys::SOURCE_IP), facts.source_ip) {
        pairs.push(("sourceIp".to_owned(), extension_values::ip(ip)));
    }
    if keys.contains(Keys::HEADERS) || keys.contains(Keys::HEADER_NAMES) {
        let (elements, names) = headers(facts.headers, reads);
        if keys.contains(Keys::HEADERS) {
            pairs.push(("headers".to_owned(), set(elements)));
        }
        if keys.contains(Keys::HEADER_NAMES) {
            pairs.push(("headerNames".to_owned(), set(names)));
        }
    }
    if keys.contains(Keys::TIME) {
        let time = extension_values::time(facts.time_unix).ok_or(RequestError::TimeOutOfRange(facts.time_unix))?;
        pairs.push(("time".to_owned(), time));
    }
    Ok(Context::from_pairs(pairs)?)
}

fn string(key: &str, value: &str) -> (String, RestrictedExpression) {
    (key.to_owned(), RestrictedExpression::new_string(value.to_owned()))
}

fn set(values: Vec<String>) -> RestrictedExpression {
    RestrictedExpression::new_set(values.into_iter().map(RestrictedExpression::new_string))
}

fn protocol(protocol: Protocol) -> &'static str {
    match protocol {
        Protocol::Http1 => "http1",
        Protocol::H2 => "h2",
        Protocol::Grpc => "grpc",
        Protocol::Tcp => "tcp",
    }
}

/// `("name:value" elements, names)`, as the module documentation says, keeping only
/// the elements the policies can tell apart (`reads`).
pub(super) fn headers(lines: &[(&str, &str)], reads: &Reads) -> (Vec<String>, Vec<String>) {
    let mut elements = Vec::new();
    let mut names = Vec::new();
    let mut element = String::new();
    for &(name, value) in lines {
        let name = name.to_ascii_lowercase();
        for part in value.split(',').map(|e| e.trim_matches([' ', '\t'])) {
            if part.is_empty() {
                continue;
            }
            element.clear();
            element.push_str(&name);
            element.push(':');
            element.push_str(part);
            if reads.headers.admits(&element) {
                elements.push(element.clone());
            }
        }
        if reads.header_names.admits(&name) {
            names.push(name);
        }
    }
    (elements, names)
}

/// An address as Cedar's `ip()` accepts it. Cedar refuses the dotted IPv6 forms
/// (`::ffff:1.2.3.4`) that `Display` writes, so IPv6 is written as eight hex groups,
/// and an IPv4-mapped address becomes the IPv4 address it maps.
pub(super) fn ip_literal(ip: IpAddr) -> String {
    match ip {
        IpAddr::V4(v4) => v4.to_string(),
        IpAddr::V6(v6) => match v6.to_ipv4_mapped() {
            Some(v4) => v4.to_string(),
            None => hex_groups(&v6),
        },
    }
}

fn hex_groups(v6: &Ipv6Addr) -> String {
    let [a, b, c, d, e, f, g, h] = v6.segments();
    format!("{a:x}:{b:x}:{c:x}:{d:x}:{e:x}:{f:x}:{g:x}:{h:x}")
}

/// Seconds since the Unix epoch as `YYYY-MM-DDThh:mm:ssZ`, or `None` outside the
/// years 0000 to 9999 that a Cedar `datetime` string can name.
pub(super) fn datetime(unix: i64) -> Option<String> {
    if !(MIN_TIME..=MAX_TIME).contains(&unix) {
        return None;
    }
    let (year, month, day) = civil_from_days(unix.div_euclid(86_400));
    let second = unix.rem_euclid(86_400);
    let (hh, mm, ss) = (second / 3600, second / 60 % 60, second % 60);
    Some(format!("{year:04}-{month:02}-{day:02}T{hh:02}:{mm:02}:{ss:02}Z"))
}

/// The proleptic Gregorian date of a day count since 1970-01-01 (Howard Hinnant's
/// `civil_from_days`). Inputs are bounded by [`datetime`], so nothing overflows.
fn civil_from_days(days: i64) -> (i64, i64, i64) {
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let day_of_era = z.rem_euclid(146_097);
    let year_of_era = (day_of_era - day_of_era / 1460 + day_of_era / 36_524 - day_of_era / 146_096) / 365;
    let day_of_year = day_of_era - (365 * year_of_era + year_of_era / 4 - year_of_era / 100);
    let shifted_month = (5 * day_of_year + 2) / 153;
    let day = day_of_year - (153 * shifted_month + 2) / 5 + 1;
    let month = if shifted_month < 10 {
        shifted_month + 3
    } else {
        shifted_month - 9
    };
    let year = year_of_era + era * 400 + i64::from(month <= 2);
    (year, month, day)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn header_lines_and_values_become_one_element_each() {
        // (header lines, elements of `headers`, elements of `headerNames`)
        type Case<'a> = (&'a [(&'a str, &'a str)], &'a [&'a str], &'a [&'a str]);
        let cases: &[Case<'_>] = &[
            (&[("x-role", "admin")], &["x-role:admin"], &["x-role"]),
            (
                &[("x-role", "user,admin")],
                &["x-role:user", "x-role:admin"],
                &["x-role"],
            ),
            (
                &[("x-role", " user ,\tadmin ")],
                &["x-role:user", "x-role:admin"],
                &["x-role"],
            ),
            (
                &[("x-role", "user"), ("x-role", "admin")],
                &["x-role:user", "x-role:admin"],
                &["x-role", "x-role"],
            ),
            (&[("X-Role", "Admin")], &["x-role:Admin"], &["x-role"]),
            (&[("x-role", ",, ,")], &[], &["x-role"]),
            (&[("x-empty", "")], &[], &["x-empty"]),
            (&[("x-a", "b:c")], &["x-a:b:c"], &["x-a"]),
        ];
        for &(lines, elements, names) in cases {
            let (got_elements, got_names) = headers(lines, &Reads::all());
            assert_eq!(got_elements, elements, "{lines:?}");
            assert_eq!(got_names, names, "{lines:?}");
        }
    }

    #[test]
    fn only_the_elements_policies_look_up_are_kept() {
        let reads = Reads::of(
            &cedar_policy::Policy::parse(
                None,
                r#"forbid(principal, action, resource) when {
                    context.headers.contains("x-role:admin") || context.headerNames.contains("x-debug") };"#,
            )
            .unwrap(),
        );
        let lines = [("X-Role", "user, admin"), ("accept", "a, b"), ("x-debug", "1")];
        let (elements, names) = headers(&lines, &reads);
        assert_eq!(elements, ["x-role:admin"]);
        assert_eq!(names, ["x-debug"]);
    }

    #[test]
    fn addresses_are_written_as_cedar_parses_them() {
        let cases = [
            ("10.1.2.3", "10.1.2.3"),
            ("::ffff:10.1.2.3", "10.1.2.3"),
            ("::1", "0:0:0:0:0:0:0:1"),
            ("::1.2.3.4", "0:0:0:0:0:0:102:304"),
            ("2001:db8::ff00:42:8329", "2001:db8:0:0:0:ff00:42:8329"),
        ];
        for (input, expected) in cases {
            assert_eq!(ip_literal(input.parse().unwrap()), expected, "{input}");
        }
    }

    #[test]
    fn times_are_utc_datetimes_within_cedars_range() {
        let cases = [
            (0, Some("1970-01-01T00:00:00Z")),
            (1_795_305_600, Some("2026-11-22T00:00:00Z")),
            (1_795_348_799, Some("2026-11-22T11:59:59Z")),
            (951_782_400, Some("2000-02-29T00:00:00Z")),
            (-1, Some("1969-12-31T23:59:59Z")),
            (MIN_TIME, Some("0000-01-01T00:00:00Z")),
            (MAX_TIME, Some("9999-12-31T23:59:59Z")),
            (MIN_TIME - 1, None),
            (MAX_TIME + 1, None),
            (i64::MIN, None),
            (i64::MAX, None),
        ];
        for (unix, expected) in cases {
            assert_eq!(datetime(unix).as_deref(), expected, "{unix}");
        }
    }
}
