//! Canonical hosts: [`normalize_host`], the [`NormalizedHost`] it returns, and
//! [`host_matches`] for exact and one-label wildcard patterns.

use std::net::{Ipv4Addr, Ipv6Addr};

use super::NormalizeError;

/// The longest DNS label, in bytes.
pub const MAX_LABEL_LEN: usize = 63;

/// The longest host name, in bytes, without its trailing dot.
pub const MAX_NAME_LEN: usize = 253;

/// A host in canonical form: a lower-case name without trailing dot (or a canonical
/// IP literal, IPv6 in brackets) and the port, when it is not the default one.
///
/// Exists only as the result of [`normalize_host`].
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct NormalizedHost {
    name: String,
    port: Option<u16>,
}

impl NormalizedHost {
    /// The canonical name: `payments.shop`, `10.0.0.1` or `[::1]`. Never holds a port.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// The port, or `None` when the request named none or named the default one.
    pub fn port(&self) -> Option<u16> {
        self.port
    }
}

/// Canonicalizes a `Host` header (or `:authority`) by the host rule of the
/// [module documentation](super). A port equal to `default_port` becomes `None`.
pub fn normalize_host(host_header: &str, default_port: Option<u16>) -> Result<NormalizedHost, NormalizeError> {
    if host_header.is_empty() {
        return Err(NormalizeError::HostEmpty);
    }
    if !host_header.is_ascii() {
        return Err(NormalizeError::HostNonAscii);
    }
    if host_header.contains('@') {
        return Err(NormalizeError::HostUserinfo);
    }
    let (name, port) = match host_header.strip_prefix('[') {
        Some(bracketed) => split_ipv6(bracketed)?,
        None => {
            let (raw, port) = split_port(host_header);
            let (name, _) = check_name(raw)?;
            (name.to_ascii_lowercase(), port)
        }
    };
    let port = port.map(parse_port).transpose()?;
    Ok(NormalizedHost {
        name,
        port: port.filter(|port| Some(*port) != default_port),
    })
}

/// Whether `host` matches `pattern`: an exact name, or `*.` and a DNS name covering
/// exactly one more label. Patterns are normalized like hosts (case-insensitive, one
/// trailing dot ignored); a pattern that is not valid, or has a port, matches nothing.
/// Allocates nothing unless the pattern is an IPv6 literal.
pub fn host_matches(pattern: &str, host: &NormalizedHost) -> bool {
    if let Some(suffix) = pattern.strip_prefix("*.") {
        let Ok((suffix, NameKind::Dns)) = check_name(suffix) else {
            return false;
        };
        return host
            .name
            .split_once('.')
            .is_some_and(|(_, parent)| parent.eq_ignore_ascii_case(suffix));
    }
    if pattern.starts_with('[') {
        return normalize_host(pattern, None).is_ok_and(|exact| exact.port.is_none() && exact.name == host.name);
    }
    check_name(pattern).is_ok_and(|(name, _)| name.eq_ignore_ascii_case(&host.name))
}

/// What a valid name is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum NameKind {
    /// A DNS name.
    Dns,
    /// A dotted-quad IPv4 address.
    Ipv4,
}

/// Checks a name of any case with at most one trailing dot, and returns it without
/// that dot. Does not allocate.
fn check_name(raw: &str) -> Result<(&str, NameKind), NormalizeError> {
    let name = raw.strip_suffix('.').unwrap_or(raw);
    if name.is_empty() {
        return Err(NormalizeError::HostEmpty);
    }
    if name.len() > MAX_NAME_LEN {
        return Err(NormalizeError::HostTooLong { len: name.len() });
    }
    let mut last = "";
    for label in name.split('.') {
        check_label(label)?;
        last = label;
    }
    if !is_numeric(last) {
        Ok((name, NameKind::Dns))
    } else if name.parse::<Ipv4Addr>().is_ok() {
        Ok((name, NameKind::Ipv4))
    } else {
        Err(NormalizeError::HostNumeric)
    }
}

/// Checks one label: 1 to 63 letters, digits and `-`.
fn check_label(label: &str) -> Result<(), NormalizeError> {
    if label.is_empty() {
        return Err(NormalizeError::HostEmptyLabel);
    }
    if let Some(byte) = label
        .bytes()
        .find(|byte| !byte.is_ascii_alphanumeric() && *byte != b'-')
    {
        return Err(NormalizeError::HostInvalidByte { byte });
    }
    if label.len() > MAX_LABEL_LEN {
        return Err(NormalizeError::HostLabelTooLong { len: label.len() });
    }
    Ok(())
}

/// Whether a label reads as a number to a resolver or a URL parser (WHATWG's "ends in
/// a number"): all decimal digits, or `0x` and hex digits.
fn is_numeric(label: &str) -> bool {
    let hex = label.strip_prefix("0x").or_else(|| label.strip_prefix("0X"));
    match hex {
        Some(digits) => digits.bytes().all(|byte| byte.is_ascii_hexdigit()),
        None => label.bytes().all(|byte| byte.is_ascii_digit()),
    }
}

/// Splits `name:port` at the first `:`.
fn split_port(host: &str) -> (&str, Option<&str>) {
    match host.split_once(':') {
        Some((name, port)) => (name, Some(port)),
        None => (host, None),
    }
}

/// Parses what follows the `[` of an IPv6 literal: the address, `]`, and an optional
/// `:port`. Returns the address in brackets, in RFC 5952 form.
fn split_ipv6(bracketed: &str) -> Result<(String, Option<&str>), NormalizeError> {
    let (address, rest) = bracketed.split_once(']').ok_or(NormalizeError::InvalidIpv6)?;
    let address: Ipv6Addr = address.parse().map_err(|_| NormalizeError::InvalidIpv6)?;
    let port = match rest {
        "" => None,
        _ => Some(rest.strip_prefix(':').ok_or(NormalizeError::InvalidIpv6)?),
    };
    Ok((format!("[{address}]"), port))
}

/// Parses a port: ASCII digits only (no sign, not empty), 1 to 65535.
fn parse_port(port: &str) -> Result<u16, NormalizeError> {
    if port.is_empty() || !port.bytes().all(|byte| byte.is_ascii_digit()) {
        return Err(NormalizeError::InvalidPort);
    }
    match port.parse::<u16>() {
        Ok(0) | Err(_) => Err(NormalizeError::InvalidPort),
        Ok(port) => Ok(port),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use NormalizeError::*;

    /// A row: a `Host` header, the default port, and the canonical name and port or
    /// the error.
    type Case = (
        &'static str,
        Option<u16>,
        Result<(&'static str, Option<u16>), NormalizeError>,
    );

    /// Runs a table, reporting every row that fails, not just the first.
    fn check(table: &[Case]) {
        let failures: Vec<String> = table
            .iter()
            .filter_map(|(input, default_port, expected)| {
                let actual = normalize_host(input, *default_port);
                let actual = actual.as_ref().map(|host| (host.name(), host.port()));
                (actual != expected.as_ref().copied())
                    .then(|| format!("{input:?} (default {default_port:?}): expected {expected:?}, got {actual:?}"))
            })
            .collect();
        assert!(failures.is_empty(), "\n{}", failures.join("\n"));
    }

    #[test]
    fn the_attack_table() {
        check(&[
            ("Payments.Shop.", None, Ok(("payments.shop", None))),
            ("payments.shop..", None, Err(HostEmptyLabel)),
            ("payments.shop:443", Some(443), Ok(("payments.shop", None))),
            ("payments.shop:8443", Some(443), Ok(("payments.shop", Some(8443)))),
            ("payments.shop:0", Some(443), Err(InvalidPort)),
            ("payments.shop:99999", Some(443), Err(InvalidPort)),
            ("payments.shop:", Some(443), Err(InvalidPort)),
            ("u@payments.shop", None, Err(HostUserinfo)),
            ("[::1]:80", Some(80), Ok(("[::1]", None))),
            ("ex ample.com", None, Err(HostInvalidByte { byte: b' ' })),
            ("bücher.example", None, Err(HostNonAscii)),
        ]);
    }

    #[test]
    fn names_are_lower_case_ascii_with_one_optional_trailing_dot() {
        check(&[
            ("payments.shop", None, Ok(("payments.shop", None))),
            ("PAYMENTS.shop", None, Ok(("payments.shop", None))),
            ("localhost", None, Ok(("localhost", None))),
            ("xn--bcher-kva.example", None, Ok(("xn--bcher-kva.example", None))),
            ("a-b.c-d.example", None, Ok(("a-b.c-d.example", None))),
            ("", None, Err(HostEmpty)),
            (".", None, Err(HostEmpty)),
            (":80", None, Err(HostEmpty)),
            ("..", None, Err(HostEmptyLabel)),
            ("a..b", None, Err(HostEmptyLabel)),
            (".a", None, Err(HostEmptyLabel)),
            ("é", None, Err(HostNonAscii)),
            ("my_svc.local", None, Err(HostInvalidByte { byte: b'_' })),
            ("*.example.com", None, Err(HostInvalidByte { byte: b'*' })),
            ("a.com/admin", None, Err(HostInvalidByte { byte: b'/' })),
            (" a.com", None, Err(HostInvalidByte { byte: b' ' })),
            ("a.com\t", None, Err(HostInvalidByte { byte: b'\t' })),
            ("u:p@a.com:80", None, Err(HostUserinfo)),
        ]);
    }

    #[test]
    fn labels_and_names_respect_dns_lengths() {
        let label_63 = "a".repeat(MAX_LABEL_LEN);
        let label_64 = "a".repeat(MAX_LABEL_LEN + 1);
        // 4 labels of 63 plus 3 dots is 255; trim to exactly 253 and 254.
        let name_255 = [label_63.as_str(); 4].join(".");
        let name_253 = name_255.get(2..).unwrap();
        let name_254 = name_255.get(1..).unwrap();
        let name_253_dot = format!("{name_253}.");
        assert_eq!(normalize_host(&label_63, None).unwrap().name(), label_63);
        assert_eq!(normalize_host(&label_64, None), Err(HostLabelTooLong { len: 64 }));
        assert_eq!(normalize_host(name_253, None).unwrap().name(), name_253);
        assert_eq!(normalize_host(&name_253_dot, None).unwrap().name(), name_253);
        assert_eq!(normalize_host(name_254, None), Err(HostTooLong { len: 254 }));
    }

    #[test]
    fn the_port_is_its_own_attribute() {
        check(&[
            ("a.com:443", None, Ok(("a.com", Some(443)))),
            ("a.com:443", Some(80), Ok(("a.com", Some(443)))),
            ("a.com:80", Some(80), Ok(("a.com", None))),
            ("a.com", Some(80), Ok(("a.com", None))),
            ("a.com:1", None, Ok(("a.com", Some(1)))),
            ("a.com:65535", None, Ok(("a.com", Some(65535)))),
            ("a.com:08080", None, Ok(("a.com", Some(8080)))),
            ("a.com:65536", None, Err(InvalidPort)),
            ("a.com:+80", None, Err(InvalidPort)),
            ("a.com:-1", None, Err(InvalidPort)),
            ("a.com:8a", None, Err(InvalidPort)),
            ("a.com: 80", None, Err(InvalidPort)),
            ("a.com:80 ", None, Err(InvalidPort)),
            ("a.com:80:80", None, Err(InvalidPort)),
        ]);
    }

    #[test]
    fn numeric_names_must_be_canonical_ipv4() {
        check(&[
            ("10.0.0.1:8080", None, Ok(("10.0.0.1", Some(8080)))),
            ("169.254.169.254", None, Ok(("169.254.169.254", None))),
            ("10.0.0.1.", None, Ok(("10.0.0.1", None))),
            ("1a.example", None, Ok(("1a.example", None))),
            ("127.1", None, Err(HostNumeric)),
            ("0177.0.0.1", None, Err(HostNumeric)),
            ("0x7f.0.0.1", None, Err(HostNumeric)),
            ("0x7F000001", None, Err(HostNumeric)),
            ("2130706433", None, Err(HostNumeric)),
            ("256.0.0.1", None, Err(HostNumeric)),
            ("1.2.3.4.5", None, Err(HostNumeric)),
            ("example.123", None, Err(HostNumeric)),
            ("example.0x", None, Err(HostNumeric)),
        ]);
    }

    #[test]
    fn ipv6_literals_are_bracketed_and_canonical() {
        check(&[
            ("[::1]", None, Ok(("[::1]", None))),
            ("[::1]:8080", Some(80), Ok(("[::1]", Some(8080)))),
            ("[0:0:0:0:0:0:0:1]", None, Ok(("[::1]", None))),
            ("[::FFFF:10.0.0.1]", None, Ok(("[::ffff:10.0.0.1]", None))),
            ("[2001:DB8::1]:443", Some(443), Ok(("[2001:db8::1]", None))),
            ("[::1", None, Err(InvalidIpv6)),
            ("[::1]x", None, Err(InvalidIpv6)),
            ("[::1]:", None, Err(InvalidPort)),
            ("[fe80::1%25eth0]", None, Err(InvalidIpv6)),
            ("[10.0.0.1]", None, Err(InvalidIpv6)),
            ("[]", None, Err(InvalidIpv6)),
            ("[v1.x]", None, Err(InvalidIpv6)),
            ("::1", None, Err(HostEmpty)),
        ]);
    }

    #[test]
    fn normalizing_twice_changes_nothing() {
        for input in ["Payments.Shop.:8443", "[0::1]:80", "10.0.0.1", "A.b.C"] {
            let once = normalize_host(input, None).unwrap();
            let rejoined = match once.port() {
                Some(port) => format!("{}:{port}", once.name()),
                None => once.name().to_owned(),
            };
            assert_eq!(normalize_host(&rejoined, None), Ok(once), "{input:?}");
        }
    }

    #[test]
    fn patterns_match_exact_names_or_exactly_one_label() {
        let table = [
            ("*.example.com", "a.example.com", true),
            ("*.example.com", "example.com", false),
            ("*.example.com", "a.b.example.com", false),
            ("*.example.com", "aexample.com", false),
            ("*.example.com", "a.example.com.evil", false),
            ("*.Example.COM.", "A.example.com", true),
            ("*.com", "example.com", true),
            ("*.example.com", "a.example.com:8443", true),
            ("example.com", "example.com", true),
            ("EXAMPLE.com.", "example.com", true),
            ("example.com", "example.com:8443", true),
            ("example.com", "a.example.com", false),
            ("example.com", "example.co", false),
            ("10.0.0.1", "10.0.0.1", true),
            ("[0::1]", "[::1]", true),
            ("[::1]", "[::2]", false),
            ("*", "a.com", false),
            ("*.", "a.com", false),
            ("*example.com", "aexample.com", false),
            ("**.example.com", "a.example.com", false),
            ("a.*.com", "a.b.com", false),
            ("*.*.com", "a.b.com", false),
            ("*.example.com..", "a.example.com", false),
            ("example.com:8443", "example.com:8443", false),
            ("[::1]:80", "[::1]", false),
            ("*.0.0.1", "10.0.0.1", false),
            ("", "a.com", false),
        ];
        let failures: Vec<String> = table
            .iter()
            .filter_map(|(pattern, host, expected)| {
                let host = normalize_host(host, None).unwrap();
                (host_matches(pattern, &host) != *expected)
                    .then(|| format!("{pattern:?} vs {host:?}: expected {expected}"))
            })
            .collect();
        assert!(failures.is_empty(), "\n{}", failures.join("\n"));
    }

    #[test]
    fn errors_read_as_messages() {
        assert_eq!(
            HostInvalidByte { byte: b'_' }.to_string(),
            "host has `_`: names are letters, digits, `-` and dots"
        );
        assert_eq!(
            HostEmptyLabel.to_string(),
            "host has an empty label: remove the extra dot (one trailing dot is allowed)"
        );
    }
}
