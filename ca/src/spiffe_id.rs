//! SPIFFE IDs and trust domains, parsed once and never normalized.
//!
//! A [`SpiffeId`] or [`TrustDomain`] exists only as a value that passed the grammar of the
//! SPIFFE ID specification, as SECURITY.md §3 states it: the scheme `spiffe://` in lower case; a
//! trust domain of `[a-z0-9._-]`, at most 255 bytes; no user info, port, query or fragment; path
//! segments of `[A-Za-z0-9._-]`, none empty, `.` or `..`; no percent-encoding; at most 2048 bytes
//! in all.
//!
//! Anything else is refused, never repaired. A lenient parser that lowers `spiffe://TD/x`,
//! decodes `%78` or resolves `a/../x` makes two strings name one identity, and a policy written
//! for one of them no longer sees the other (SPIRE audit finding SPI-01-003). Because nothing is
//! rewritten, a parsed ID is byte for byte its input, and comparing IDs is comparing strings.
//!
//! This module only checks strings: taking the ID from a certificate's URI SAN belongs to SVID
//! verification.

use std::fmt;
use std::marker::PhantomData;
use std::str::FromStr;
use std::sync::Arc;

use serde::de::{self, Deserialize, Deserializer, Visitor};
use serde::{Serialize, Serializer};

/// The longest SPIFFE ID accepted, in bytes, scheme included.
pub const MAX_ID_LEN: usize = 2048;

/// The longest trust domain name accepted, in bytes.
pub const MAX_TRUST_DOMAIN_LEN: usize = 255;

const SCHEME: &str = "spiffe://";

/// How much of a rejected input an error message echoes, in bytes after escaping.
const SHOWN_MAX_LEN: usize = 128;

/// A trust domain name, e.g. `example.org`.
///
/// Holds the bare name, never the `spiffe://` form; [`TrustDomain::id`] gives that.
#[derive(Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct TrustDomain(Arc<str>);

impl TrustDomain {
    /// Checks `name`, the bare trust domain name (`example.org`, not `spiffe://example.org`).
    ///
    /// # Errors
    ///
    /// When `name` is empty, longer than 255 bytes, or has a character outside `[a-z0-9._-]`.
    pub fn new(name: &str) -> Result<Self, SpiffeIdError> {
        check_trust_domain(name).map_err(|problem| problem.error(Subject::TrustDomain, name))?;
        Ok(Self(name.into()))
    }

    /// The name, e.g. `example.org`.
    pub fn as_str(&self) -> &str {
        &self.0
    }

    /// The trust domain's own ID, `spiffe://<name>`, whose path is empty.
    pub fn id(&self) -> SpiffeId {
        SpiffeId {
            id: format!("{SCHEME}{}", self.0).into(),
            path_start: SCHEME.len() + self.0.len(),
        }
    }
}

/// A SPIFFE ID such as `spiffe://example.org/ns/default/sa/web`.
///
/// Stored as the whole ID plus the offset where its path starts, so every accessor is a slice
/// of one shared string and a clone is a reference count.
#[derive(Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct SpiffeId {
    id: Arc<str>,
    /// Byte offset of the path: `SCHEME.len() + trust domain length`, equal to `id.len()`
    /// when the path is empty.
    path_start: usize,
}

impl SpiffeId {
    /// Parses `s`, refusing every string outside the SPIFFE ID grammar.
    ///
    /// `spiffe://example.org`, the trust domain's own ID with an empty path, is accepted; whether
    /// a certificate may carry it is for the SVID checks to decide.
    ///
    /// # Errors
    ///
    /// When `s` breaks any rule of the grammar; the variant names the rule.
    pub fn parse(s: &str) -> Result<Self, SpiffeIdError> {
        if s.is_empty() {
            return Err(SpiffeIdError::Empty);
        }
        if s.len() > MAX_ID_LEN {
            return Err(SpiffeIdError::TooLong {
                input: shown(s),
                len: s.len(),
            });
        }
        let rest = strip_scheme(s)?;
        check_no_uri_extras(s, rest)?;
        let (trust_domain, path) = match rest.split_once('/') {
            Some((trust_domain, path)) => (trust_domain, Some(path)),
            None => (rest, None),
        };
        check_authority(s, trust_domain)?;
        if let Some(path) = path {
            check_path(s, path)?;
        }
        Ok(Self {
            id: s.into(),
            path_start: SCHEME.len() + trust_domain.len(),
        })
    }

    /// The mesh form `spiffe://<td>/ns/<namespace>/sa/<service_account>`.
    ///
    /// `namespace` and `service_account` must each be one path segment: no `/`, not empty,
    /// not `.` or `..`, only letters, digits, `.`, `-` or `_`.
    ///
    /// # Errors
    ///
    /// When either name is not one such segment, or the ID would exceed 2048 bytes.
    pub fn mesh(td: &TrustDomain, namespace: &str, service_account: &str) -> Result<Self, SpiffeIdError> {
        check_mesh_name(MeshField::Namespace, namespace)?;
        check_mesh_name(MeshField::ServiceAccount, service_account)?;
        let id = format!("{SCHEME}{td}/ns/{namespace}/sa/{service_account}");
        if id.len() > MAX_ID_LEN {
            return Err(SpiffeIdError::TooLong {
                input: shown(&id),
                len: id.len(),
            });
        }
        Ok(Self {
            id: id.into(),
            path_start: SCHEME.len() + td.as_str().len(),
        })
    }

    /// The trust domain, as its own value; allocates a copy of the name.
    pub fn trust_domain(&self) -> TrustDomain {
        TrustDomain(self.trust_domain_name().into())
    }

    /// The trust domain name, e.g. `example.org`.
    pub fn trust_domain_name(&self) -> &str {
        self.id.get(SCHEME.len()..self.path_start).unwrap_or_default()
    }

    /// The path: empty, or `/` followed by segments, e.g. `/ns/default/sa/web`.
    pub fn path(&self) -> &str {
        self.id.get(self.path_start..).unwrap_or_default()
    }

    /// The whole ID.
    pub fn as_str(&self) -> &str {
        &self.id
    }

    /// The namespace, only when the path is exactly `/ns/<namespace>/sa/<service account>`.
    pub fn namespace(&self) -> Option<&str> {
        self.mesh_parts().map(|(namespace, _)| namespace)
    }

    /// The service account, only when the path is exactly `/ns/<namespace>/sa/<service account>`.
    pub fn service_account(&self) -> Option<&str> {
        self.mesh_parts().map(|(_, service_account)| service_account)
    }

    /// Whether this ID belongs to `td`, comparing the whole trust domain name.
    pub fn is_member_of(&self, td: &TrustDomain) -> bool {
        self.trust_domain_name() == td.as_str()
    }

    fn mesh_parts(&self) -> Option<(&str, &str)> {
        let mut segments = self.path().strip_prefix('/')?.split('/');
        match (
            segments.next(),
            segments.next(),
            segments.next(),
            segments.next(),
            segments.next(),
        ) {
            (Some("ns"), Some(namespace), Some("sa"), Some(service_account), None) => {
                Some((namespace, service_account))
            }
            _ => None,
        }
    }
}

/// Why a SPIFFE ID, trust domain or mesh name was refused; one variant per rule.
///
/// Every `input` and `name` field holds the rejected text as it is shown in the message:
/// control and other invisible characters escaped, and cut to about 128 bytes.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum SpiffeIdError {
    #[error("invalid SPIFFE ID: the input is empty; write an ID such as `spiffe://example.org/ns/default/sa/web`")]
    Empty,

    #[error("invalid SPIFFE ID `{input}`: it is {len} bytes long, over the limit of 2048; use a shorter path")]
    TooLong { input: String, len: usize },

    #[error("invalid SPIFFE ID `{input}`: the scheme must be `spiffe://` in lower case; write it in lower case")]
    SchemeNotLowerCase { input: String },

    #[error(
        "invalid SPIFFE ID `{input}`: it does not start with `spiffe://`; write it as `spiffe://<trust domain>/<path>`"
    )]
    MissingScheme { input: String },

    #[error("invalid {subject} `{input}`: the trust domain is empty; name one, such as `example.org`")]
    EmptyTrustDomain { subject: Subject, input: String },

    #[error(
        "invalid {subject} `{input}`: the trust domain is {len} bytes long, over the limit of 255; use a shorter trust domain"
    )]
    TrustDomainTooLong {
        subject: Subject,
        input: String,
        len: usize,
    },

    #[error(
        "invalid {subject} `{input}`: the trust domain must be lower-case letters, digits, `.`, `-` or `_`; write it in lower case"
    )]
    TrustDomainNotLowerCase { subject: Subject, input: String },

    #[error(
        "invalid {subject} `{input}`: the trust domain contains `{}`; use only lower-case letters, digits, `.`, `-` or `_`",
        .ch.escape_debug()
    )]
    TrustDomainChar { subject: Subject, input: String, ch: char },

    #[error("invalid SPIFFE ID `{input}`: a SPIFFE ID has no user info; remove the part up to and including `@`")]
    Userinfo { input: String },

    #[error("invalid SPIFFE ID `{input}`: a SPIFFE ID has no port; remove the `:` and the port after it")]
    Port { input: String },

    #[error("invalid SPIFFE ID `{input}`: a SPIFFE ID has no query; remove the `?` and everything after it")]
    Query { input: String },

    #[error("invalid SPIFFE ID `{input}`: a SPIFFE ID has no fragment; remove the `#` and everything after it")]
    Fragment { input: String },

    #[error(
        "invalid SPIFFE ID `{input}`: percent-encoding is not allowed; write the characters themselves, only letters, digits, `.`, `-` or `_`"
    )]
    PercentEncoded { input: String },

    #[error("invalid SPIFFE ID `{input}`: the path ends with `/`; remove the trailing `/`")]
    TrailingSlash { input: String },

    #[error("invalid SPIFFE ID `{input}`: the path has an empty segment (`//`); remove the extra `/`")]
    EmptySegment { input: String },

    #[error(
        "invalid SPIFFE ID `{input}`: the path has a `{segment}` segment and SPIFFE IDs are never normalized; write the path without `.` or `..` segments"
    )]
    DotSegment { input: String, segment: String },

    #[error(
        "invalid SPIFFE ID `{input}`: the path contains `{}`; use only letters, digits, `.`, `-` or `_` in path segments",
        .ch.escape_debug()
    )]
    PathChar { input: String, ch: char },

    #[error("invalid {field}: it is empty; give a non-empty {field}")]
    EmptyMeshName { field: MeshField },

    #[error("invalid {field} `{name}`: `.` and `..` cannot be path segments; choose another {field}")]
    MeshNameDot { field: MeshField, name: String },

    #[error(
        "invalid {field} `{name}`: it contains `{}`; use only letters, digits, `.`, `-` or `_`, as one path segment",
        .ch.escape_debug()
    )]
    MeshNameChar { field: MeshField, name: String, ch: char },
}

/// What was being parsed when a trust domain rule failed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Subject {
    /// [`SpiffeId::parse`].
    SpiffeId,
    /// [`TrustDomain::new`].
    TrustDomain,
}

impl fmt::Display for Subject {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Self::SpiffeId => "SPIFFE ID",
            Self::TrustDomain => "trust domain",
        })
    }
}

/// Which argument of [`SpiffeId::mesh`] was refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum MeshField {
    Namespace,
    ServiceAccount,
}

impl fmt::Display for MeshField {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Self::Namespace => "namespace",
            Self::ServiceAccount => "service account",
        })
    }
}

fn strip_scheme(s: &str) -> Result<&str, SpiffeIdError> {
    if let Some(rest) = s.strip_prefix(SCHEME) {
        return Ok(rest);
    }
    let input = shown(s);
    match s.get(..SCHEME.len()) {
        Some(scheme) if scheme.eq_ignore_ascii_case(SCHEME) => Err(SpiffeIdError::SchemeNotLowerCase { input }),
        _ => Err(SpiffeIdError::MissingScheme { input }),
    }
}

/// Refuses the first `%`, `?` or `#` after the scheme, wherever it is.
fn check_no_uri_extras(s: &str, rest: &str) -> Result<(), SpiffeIdError> {
    let input = || shown(s);
    match rest.chars().find(|c| matches!(c, '%' | '?' | '#')) {
        Some('%') => Err(SpiffeIdError::PercentEncoded { input: input() }),
        Some('?') => Err(SpiffeIdError::Query { input: input() }),
        Some(_) => Err(SpiffeIdError::Fragment { input: input() }),
        None => Ok(()),
    }
}

/// The authority of a SPIFFE ID is the trust domain alone: no user info, no port.
fn check_authority(s: &str, trust_domain: &str) -> Result<(), SpiffeIdError> {
    if trust_domain.contains('@') {
        return Err(SpiffeIdError::Userinfo { input: shown(s) });
    }
    match check_trust_domain(trust_domain) {
        Ok(()) => Ok(()),
        Err(TrustDomainProblem::Char(':')) => Err(SpiffeIdError::Port { input: shown(s) }),
        Err(problem) => Err(problem.error(Subject::SpiffeId, s)),
    }
}

/// `path` is everything after the `/` that ends the trust domain.
fn check_path(s: &str, path: &str) -> Result<(), SpiffeIdError> {
    let input = || shown(s);
    let mut segments = path.split('/').peekable();
    while let Some(segment) = segments.next() {
        match check_segment(segment) {
            Ok(()) => {}
            Err(SegmentProblem::Empty) if segments.peek().is_none() => {
                return Err(SpiffeIdError::TrailingSlash { input: input() });
            }
            Err(SegmentProblem::Empty) => {
                return Err(SpiffeIdError::EmptySegment { input: input() });
            }
            Err(SegmentProblem::Dot) => {
                return Err(SpiffeIdError::DotSegment {
                    input: input(),
                    segment: segment.to_owned(),
                });
            }
            Err(SegmentProblem::Char(ch)) => {
                return Err(SpiffeIdError::PathChar { input: input(), ch });
            }
        }
    }
    Ok(())
}

fn check_mesh_name(field: MeshField, name: &str) -> Result<(), SpiffeIdError> {
    check_segment(name).map_err(|problem| match problem {
        SegmentProblem::Empty => SpiffeIdError::EmptyMeshName { field },
        SegmentProblem::Dot => SpiffeIdError::MeshNameDot {
            field,
            name: shown(name),
        },
        SegmentProblem::Char(ch) => SpiffeIdError::MeshNameChar {
            field,
            name: shown(name),
            ch,
        },
    })
}

enum TrustDomainProblem {
    Empty,
    TooLong(usize),
    NotLowerCase,
    Char(char),
}

impl TrustDomainProblem {
    /// The error for this problem, found while parsing `input` as a `subject`.
    fn error(self, subject: Subject, input: &str) -> SpiffeIdError {
        let shown_input = shown(input);
        match self {
            Self::Empty => SpiffeIdError::EmptyTrustDomain {
                subject,
                input: shown_input,
            },
            Self::TooLong(len) => SpiffeIdError::TrustDomainTooLong {
                subject,
                input: shown_input,
                len,
            },
            Self::NotLowerCase => SpiffeIdError::TrustDomainNotLowerCase {
                subject,
                input: shown_input,
            },
            Self::Char(ch) => SpiffeIdError::TrustDomainChar {
                subject,
                input: shown_input,
                ch,
            },
        }
    }
}

fn check_trust_domain(name: &str) -> Result<(), TrustDomainProblem> {
    if name.is_empty() {
        return Err(TrustDomainProblem::Empty);
    }
    if name.len() > MAX_TRUST_DOMAIN_LEN {
        return Err(TrustDomainProblem::TooLong(name.len()));
    }
    match name.chars().find(|&c| !is_trust_domain_char(c)) {
        None => Ok(()),
        Some(c) if c.is_ascii_uppercase() => Err(TrustDomainProblem::NotLowerCase),
        Some(c) => Err(TrustDomainProblem::Char(c)),
    }
}

fn is_trust_domain_char(c: char) -> bool {
    c.is_ascii_lowercase() || c.is_ascii_digit() || matches!(c, '.' | '-' | '_')
}

enum SegmentProblem {
    Empty,
    Dot,
    Char(char),
}

fn check_segment(segment: &str) -> Result<(), SegmentProblem> {
    if segment.is_empty() {
        return Err(SegmentProblem::Empty);
    }
    if segment == "." || segment == ".." {
        return Err(SegmentProblem::Dot);
    }
    match segment.chars().find(|&c| !is_segment_char(c)) {
        None => Ok(()),
        Some(c) => Err(SegmentProblem::Char(c)),
    }
}

fn is_segment_char(c: char) -> bool {
    c.is_ascii_alphanumeric() || matches!(c, '.' | '-' | '_')
}

/// `input` made safe for a message: escaped like `{:?}` so no control or invisible character
/// reaches a terminal or a log, and cut at about [`SHOWN_MAX_LEN`] bytes with a `…`.
fn shown(input: &str) -> String {
    let mut out = String::new();
    for c in input.chars() {
        let escaped = c.escape_debug();
        if out.len() + escaped.len() > SHOWN_MAX_LEN {
            out.push('…');
            break;
        }
        out.extend(escaped);
    }
    out
}

impl FromStr for TrustDomain {
    type Err = SpiffeIdError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Self::new(s)
    }
}

impl FromStr for SpiffeId {
    type Err = SpiffeIdError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Self::parse(s)
    }
}

impl fmt::Display for TrustDomain {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl fmt::Display for SpiffeId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl fmt::Debug for TrustDomain {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_tuple("TrustDomain").field(&self.as_str()).finish()
    }
}

impl fmt::Debug for SpiffeId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_tuple("SpiffeId").field(&self.as_str()).finish()
    }
}

impl Serialize for TrustDomain {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.serialize_str(self.as_str())
    }
}

impl Serialize for SpiffeId {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.serialize_str(self.as_str())
    }
}

impl<'de> Deserialize<'de> for TrustDomain {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        deserializer.deserialize_str(ParseVisitor::new("a trust domain name such as `example.org`"))
    }
}

impl<'de> Deserialize<'de> for SpiffeId {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        deserializer.deserialize_str(ParseVisitor::new(
            "a SPIFFE ID such as `spiffe://example.org/ns/default/sa/web`",
        ))
    }
}

/// Deserializes a string through `T::from_str`, so an invalid value fails deserialization.
#[derive(Debug)]
struct ParseVisitor<T> {
    expecting: &'static str,
    parsed: PhantomData<T>,
}

impl<T> ParseVisitor<T> {
    fn new(expecting: &'static str) -> Self {
        Self {
            expecting,
            parsed: PhantomData,
        }
    }
}

impl<T: FromStr<Err = SpiffeIdError>> Visitor<'_> for ParseVisitor<T> {
    type Value = T;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.expecting)
    }

    fn visit_str<E: de::Error>(self, value: &str) -> Result<T, E> {
        value.parse().map_err(E::custom)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The name of the error variant, e.g. `"Port"`, so tables read as rule names.
    fn rule(error: &SpiffeIdError) -> String {
        let debug = format!("{error:?}");
        debug.split([' ', '{', '(']).next().unwrap_or_default().to_owned()
    }

    fn id_of_len(len: usize) -> String {
        let prefix = "spiffe://example.org/";
        format!("{prefix}{}", "a".repeat(len - prefix.len()))
    }

    fn trust_domain_of_len(len: usize) -> String {
        "a".repeat(len)
    }

    /// Every string here is a SPIFFE ID, with its trust domain and path.
    fn valid() -> Vec<(String, String, String)> {
        let long_td = trust_domain_of_len(MAX_TRUST_DOMAIN_LEN);
        let longest = id_of_len(MAX_ID_LEN);
        let longest_path = longest.trim_start_matches("spiffe://example.org").to_owned();
        let cases: Vec<(&str, &str, &str)> = vec![
            ("spiffe://example.org", "example.org", ""),
            (
                "spiffe://example.org/ns/default/sa/web",
                "example.org",
                "/ns/default/sa/web",
            ),
            ("spiffe://a", "a", ""),
            ("spiffe://a-b_c.0.9", "a-b_c.0.9", ""),
            ("spiffe://td/x", "td", "/x"),
            ("spiffe://td/Az09._-", "td", "/Az09._-"),
            ("spiffe://td/.web", "td", "/.web"),
            ("spiffe://td/..x", "td", "/..x"),
            ("spiffe://td/a.", "td", "/a."),
            ("spiffe://td/...", "td", "/..."),
            ("spiffe://td/ns/a/sa/b/c", "td", "/ns/a/sa/b/c"),
            ("spiffe://td/ns/a", "td", "/ns/a"),
        ];
        let mut owned: Vec<(String, String, String)> = cases
            .into_iter()
            .map(|(id, td, path)| (id.to_owned(), td.to_owned(), path.to_owned()))
            .collect();
        owned.push((format!("spiffe://{long_td}/x"), long_td, "/x".to_owned()));
        owned.push((longest, "example.org".to_owned(), longest_path));
        owned
    }

    /// Every string here is refused, under the named rule.
    fn invalid() -> Vec<(String, &'static str)> {
        let cases: Vec<(&str, &'static str)> = vec![
            ("", "Empty"),
            // scheme
            ("SPIFFE://example.org/x", "SchemeNotLowerCase"),
            ("Spiffe://example.org/x", "SchemeNotLowerCase"),
            ("spiffe:/example.org/x", "MissingScheme"),
            ("spiffe:example.org/x", "MissingScheme"),
            ("spiffe//example.org/x", "MissingScheme"),
            ("https://example.org/x", "MissingScheme"),
            ("example.org/x", "MissingScheme"),
            ("/ns/a/sa/b", "MissingScheme"),
            (" spiffe://example.org/x", "MissingScheme"),
            // trust domain
            ("spiffe://", "EmptyTrustDomain"),
            ("spiffe:///x", "EmptyTrustDomain"),
            ("spiffe://Example.org/x", "TrustDomainNotLowerCase"),
            ("spiffe://EXAMPLE.ORG", "TrustDomainNotLowerCase"),
            ("spiffe://exa mple.org/x", "TrustDomainChar"),
            ("spiffe://*.example.org/x", "TrustDomainChar"),
            ("spiffe://exämple.org/x", "TrustDomainChar"),
            ("spiffe://exa\0mple.org/x", "TrustDomainChar"),
            ("spiffe://[::1]/x", "TrustDomainChar"),
            ("spiffe://td\\x/y", "TrustDomainChar"),
            // authority extras
            ("spiffe://u@td/x", "Userinfo"),
            ("spiffe://u:p@td/x", "Userinfo"),
            ("spiffe://@td", "Userinfo"),
            ("spiffe://td:443/x", "Port"),
            ("spiffe://td:/x", "Port"),
            ("spiffe://td:443", "Port"),
            ("spiffe://td/x?y=1", "Query"),
            ("spiffe://td?x", "Query"),
            ("spiffe://td/x?", "Query"),
            ("spiffe://td/x#y", "Fragment"),
            ("spiffe://td#x", "Fragment"),
            // percent-encoding, in the path and in the trust domain
            ("spiffe://td/a%2Fb", "PercentEncoded"),
            ("spiffe://td/a%2fb", "PercentEncoded"),
            ("spiffe://td/%41", "PercentEncoded"),
            ("spiffe://td/%2e%2e/x", "PercentEncoded"),
            ("spiffe://%41td/x", "PercentEncoded"),
            ("spiffe://td%2Eorg/x", "PercentEncoded"),
            ("spiffe://td/%", "PercentEncoded"),
            // segments
            ("spiffe://td/", "TrailingSlash"),
            ("spiffe://td/x/", "TrailingSlash"),
            ("spiffe://td//x", "EmptySegment"),
            ("spiffe://td/x//y", "EmptySegment"),
            ("spiffe://td/x//", "EmptySegment"),
            ("spiffe://td/.", "DotSegment"),
            ("spiffe://td/..", "DotSegment"),
            ("spiffe://td/./x", "DotSegment"),
            ("spiffe://td/x/../y", "DotSegment"),
            ("spiffe://td/a b", "PathChar"),
            ("spiffe://td/a*", "PathChar"),
            ("spiffe://td/é", "PathChar"),
            ("spiffe://td/a\0", "PathChar"),
            ("spiffe://td/a\u{1b}[31m", "PathChar"),
            ("spiffe://td/a\\b", "PathChar"),
            ("spiffe://td/a;b", "PathChar"),
            ("spiffe://td/a@b", "PathChar"),
            ("spiffe://td/a:b", "PathChar"),
        ];
        let mut owned: Vec<(String, &'static str)> =
            cases.into_iter().map(|(id, rule)| (id.to_owned(), rule)).collect();
        let too_long_td = trust_domain_of_len(MAX_TRUST_DOMAIN_LEN + 1);
        owned.push((format!("spiffe://{too_long_td}/x"), "TrustDomainTooLong"));
        owned.push((id_of_len(MAX_ID_LEN + 1), "TooLong"));
        owned.push(("x".repeat(10_000), "TooLong"));
        owned
    }

    #[test]
    fn valid_ids_parse_with_their_trust_domain_and_path() {
        for (input, td, path) in valid() {
            let id = SpiffeId::parse(&input).unwrap_or_else(|e| panic!("`{input}` should parse, got: {e}"));
            assert_eq!(id.as_str(), input);
            assert_eq!(id.trust_domain_name(), td, "{input}");
            assert_eq!(id.trust_domain().as_str(), td, "{input}");
            assert_eq!(id.path(), path, "{input}");
        }
    }

    #[test]
    fn display_of_every_valid_id_parses_back_to_an_equal_id() {
        for (input, _, _) in valid() {
            let id: SpiffeId = input.parse().unwrap();
            let again = SpiffeId::parse(&id.to_string()).unwrap();
            assert_eq!(again, id);
            assert_eq!(id.to_string(), input, "parse never rewrites its input");
        }
    }

    #[test]
    fn the_limits_are_inclusive() {
        assert_eq!(id_of_len(MAX_ID_LEN).len(), 2048);
        assert!(SpiffeId::parse(&id_of_len(2048)).is_ok());
        assert!(SpiffeId::parse(&id_of_len(2049)).is_err());
        assert!(TrustDomain::new(&trust_domain_of_len(255)).is_ok());
        assert!(TrustDomain::new(&trust_domain_of_len(256)).is_err());
    }

    #[test]
    fn invalid_ids_are_refused_under_the_right_rule() {
        for (input, expected) in invalid() {
            match SpiffeId::parse(&input) {
                Ok(id) => panic!("`{}` should be refused, parsed as {id:?}", input.escape_debug()),
                Err(e) => assert_eq!(rule(&e), expected, "`{}`: {e}", input.escape_debug()),
            }
        }
    }

    #[test]
    fn every_message_follows_the_house_style() {
        for (input, _) in invalid() {
            let message = SpiffeId::parse(&input).unwrap_err().to_string();
            assert!(message.starts_with("invalid SPIFFE ID"), "{message}");
            assert!(message.contains("; "), "a hint follows the problem: {message}");
            assert!(!message.ends_with('.'), "{message}");
            assert!(!message.chars().any(char::is_control), "{message}");
            assert!(message.len() < 400, "{message}");
        }
    }

    #[test]
    fn messages_name_the_problem_and_echo_the_input() {
        let cases = [
            (
                "spiffe://Example.org/x",
                "invalid SPIFFE ID `spiffe://Example.org/x`: the trust domain must be lower-case \
                 letters, digits, `.`, `-` or `_`; write it in lower case",
            ),
            (
                "spiffe://td/a b",
                "invalid SPIFFE ID `spiffe://td/a b`: the path contains ` `; use only letters, \
                 digits, `.`, `-` or `_` in path segments",
            ),
            (
                "spiffe://td:443/x",
                "invalid SPIFFE ID `spiffe://td:443/x`: a SPIFFE ID has no port; remove the `:` \
                 and the port after it",
            ),
            (
                "spiffe://td/x/../y",
                "invalid SPIFFE ID `spiffe://td/x/../y`: the path has a `..` segment and SPIFFE \
                 IDs are never normalized; write the path without `.` or `..` segments",
            ),
        ];
        for (input, expected) in cases {
            assert_eq!(SpiffeId::parse(input).unwrap_err().to_string(), expected);
        }
    }

    #[test]
    fn a_long_input_is_cut_in_the_message() {
        let input = format!("spiffe://td/{}", "a".repeat(10 * 1024));
        let error = SpiffeId::parse(&input).unwrap_err();
        let message = error.to_string();
        assert_eq!(rule(&error), "TooLong");
        assert!(message.len() < 300, "{} bytes: {message}", message.len());
        assert!(message.contains("spiffe://td/aaaa"), "{message}");
        assert!(message.contains("…`"), "{message}");
        assert!(message.contains("10252 bytes"), "{message}");
    }

    #[test]
    fn control_characters_are_escaped_in_the_message() {
        let error = SpiffeId::parse("spiffe://td/x\u{1b}[2J\r\n").unwrap_err();
        let message = error.to_string();
        assert!(!message.contains('\u{1b}'), "{message:?}");
        assert!(!message.contains('\n') && !message.contains('\r'), "{message:?}");
        assert!(message.contains(r"x\u{1b}[2J\r\n"), "{message}");
        assert!(message.contains(r"the path contains `\u{1b}`"), "{message}");

        let error = SpiffeId::parse("spiffe://t\u{202e}d/x").unwrap_err();
        assert!(!error.to_string().contains('\u{202e}'), "{error}");
    }

    #[test]
    fn trust_domain_new_takes_the_bare_name() {
        let td = TrustDomain::new("example.org").unwrap();
        assert_eq!(td.as_str(), "example.org");
        assert_eq!(td.to_string(), "example.org");
        assert_eq!("example.org".parse::<TrustDomain>().unwrap(), td);

        let cases = [
            ("", "EmptyTrustDomain"),
            ("Example.org", "TrustDomainNotLowerCase"),
            ("spiffe://example.org", "TrustDomainChar"),
            ("example.org/x", "TrustDomainChar"),
            ("example.org:443", "TrustDomainChar"),
            ("u@example.org", "TrustDomainChar"),
            ("ex%41mple.org", "TrustDomainChar"),
            ("exämple.org", "TrustDomainChar"),
        ];
        for (input, expected) in cases {
            let error = TrustDomain::new(input).unwrap_err();
            assert_eq!(rule(&error), expected, "`{input}`: {error}");
            assert!(error.to_string().starts_with("invalid trust domain"), "{error}");
        }
        let error = TrustDomain::new(&trust_domain_of_len(256)).unwrap_err();
        assert_eq!(
            error,
            SpiffeIdError::TrustDomainTooLong {
                subject: Subject::TrustDomain,
                input: shown(&trust_domain_of_len(256)),
                len: 256,
            }
        );
    }

    #[test]
    fn trust_domain_id_has_an_empty_path() {
        let td = TrustDomain::new("example.org").unwrap();
        let id = td.id();
        assert_eq!(id.as_str(), "spiffe://example.org");
        assert_eq!(id.path(), "");
        assert_eq!(id.trust_domain(), td);
        assert_eq!(id, SpiffeId::parse("spiffe://example.org").unwrap());
        assert_eq!(id.namespace(), None);
        assert_eq!(id.service_account(), None);
    }

    #[test]
    fn trust_domain_length_is_reported_from_a_whole_id() {
        let td = trust_domain_of_len(300);
        let error = SpiffeId::parse(&format!("spiffe://{td}/x")).unwrap_err();
        assert!(matches!(
            error,
            SpiffeIdError::TrustDomainTooLong {
                subject: Subject::SpiffeId,
                len: 300,
                ..
            }
        ));
    }

    #[test]
    fn mesh_builds_the_ns_sa_form() {
        let td = TrustDomain::new("example.org").unwrap();
        let id = SpiffeId::mesh(&td, "payments", "checkout").unwrap();
        assert_eq!(id.as_str(), "spiffe://example.org/ns/payments/sa/checkout");
        assert_eq!(id.trust_domain(), td);
        assert_eq!(id.path(), "/ns/payments/sa/checkout");
        assert_eq!(id.namespace(), Some("payments"));
        assert_eq!(id.service_account(), Some("checkout"));
        assert_eq!(id, SpiffeId::parse(id.as_str()).unwrap());
        assert!(SpiffeId::mesh(&td, ".web", "a.").is_ok());
    }

    #[test]
    fn mesh_takes_each_name_as_exactly_one_segment() {
        let td = TrustDomain::new("example.org").unwrap();
        let cases = [
            ("a/b", "web", "MeshNameChar"),
            ("a/sa/b", "web", "MeshNameChar"),
            ("", "web", "EmptyMeshName"),
            ("..", "web", "MeshNameDot"),
            (".", "web", "MeshNameDot"),
            ("a%2Fb", "web", "MeshNameChar"),
            ("a b", "web", "MeshNameChar"),
            ("default", "", "EmptyMeshName"),
            ("default", "..", "MeshNameDot"),
            ("default", "x/y", "MeshNameChar"),
            ("default", "x\0", "MeshNameChar"),
        ];
        for (namespace, service_account, expected) in cases {
            let error = SpiffeId::mesh(&td, namespace, service_account).unwrap_err();
            assert_eq!(rule(&error), expected, "{namespace:?} {service_account:?}: {error}");
        }
        let error = SpiffeId::mesh(&td, "a/b", "web").unwrap_err();
        assert_eq!(
            error.to_string(),
            "invalid namespace `a/b`: it contains `/`; use only letters, digits, `.`, `-` or \
             `_`, as one path segment"
        );
        let error = SpiffeId::mesh(&td, "default", "").unwrap_err();
        assert_eq!(
            error.to_string(),
            "invalid service account: it is empty; give a non-empty service account"
        );
    }

    #[test]
    fn mesh_refuses_an_id_over_the_length_limit() {
        let td = TrustDomain::new(&trust_domain_of_len(255)).unwrap();
        let namespace = "n".repeat(1000);
        assert!(SpiffeId::mesh(&td, &namespace, &"s".repeat(1000)).is_err());
        let longest = 2048 - "spiffe:///ns//sa/".len() - 255 - 1000;
        let id = SpiffeId::mesh(&td, &namespace, &"s".repeat(longest)).unwrap();
        assert_eq!(id.as_str().len(), 2048);
    }

    #[test]
    fn namespace_and_service_account_only_for_the_exact_mesh_form() {
        let cases = [
            ("spiffe://td/ns/a/sa/b", Some(("a", "b"))),
            ("spiffe://td/ns/sa/sa/ns", Some(("sa", "ns"))),
            ("spiffe://td/ns/a/sa/b/c", None),
            ("spiffe://td/ns/a", None),
            ("spiffe://td/ns/a/sa", None),
            ("spiffe://td/x/ns/a/sa/b", None),
            ("spiffe://td/NS/a/SA/b", None),
            ("spiffe://td/ns/a/b/sa/c", None),
            ("spiffe://td", None),
        ];
        for (input, expected) in cases {
            let id = SpiffeId::parse(input).unwrap();
            assert_eq!(id.namespace(), expected.map(|(ns, _)| ns), "{input}");
            assert_eq!(id.service_account(), expected.map(|(_, sa)| sa), "{input}");
        }
    }

    #[test]
    fn membership_compares_the_whole_trust_domain() {
        let td = TrustDomain::new("example.org").unwrap();
        let member = |id: &str| SpiffeId::parse(id).unwrap().is_member_of(&td);
        assert!(member("spiffe://example.org/ns/a/sa/b"));
        assert!(member("spiffe://example.org"));
        assert!(!member("spiffe://example.org.evil/ns/a/sa/b"));
        assert!(!member("spiffe://example.or/ns/a/sa/b"));
        assert!(!member("spiffe://evil.example.org/ns/a/sa/b"));
        assert!(!member("spiffe://other.org/example.org"));
    }

    #[test]
    fn equality_is_over_the_whole_id() {
        let a = SpiffeId::parse("spiffe://td/ns/a/sa/b").unwrap();
        assert_eq!(a, SpiffeId::parse("spiffe://td/ns/a/sa/b").unwrap());
        assert_ne!(a, SpiffeId::parse("spiffe://td/ns/a/sa/bb").unwrap());
        assert_ne!(a, SpiffeId::parse("spiffe://td/ns/a/sa/B").unwrap());
        assert_ne!(
            SpiffeId::parse("spiffe://td/x").unwrap(),
            SpiffeId::parse("spiffe://tdx").unwrap()
        );
    }

    #[test]
    fn debug_shows_the_type_and_the_string() {
        let id = SpiffeId::parse("spiffe://td/x").unwrap();
        assert_eq!(format!("{id:?}"), r#"SpiffeId("spiffe://td/x")"#);
        assert_eq!(format!("{:?}", id.trust_domain()), r#"TrustDomain("td")"#);
    }

    #[test]
    fn serde_uses_the_plain_string_both_ways() {
        let id = SpiffeId::parse("spiffe://example.org/ns/a/sa/b").unwrap();
        let json = serde_json::to_string(&id).unwrap();
        assert_eq!(json, r#""spiffe://example.org/ns/a/sa/b""#);
        assert_eq!(serde_json::from_str::<SpiffeId>(&json).unwrap(), id);

        let td = id.trust_domain();
        let json = serde_json::to_string(&td).unwrap();
        assert_eq!(json, r#""example.org""#);
        assert_eq!(serde_json::from_str::<TrustDomain>(&json).unwrap(), td);

        let from_owned: SpiffeId = serde_json::from_value(serde_json::json!("spiffe://example.org/x")).unwrap();
        assert_eq!(from_owned.path(), "/x");
    }

    #[test]
    fn serde_refuses_what_parse_refuses() {
        for (input, _) in invalid() {
            let json = serde_json::to_string(&input).unwrap();
            assert!(serde_json::from_str::<SpiffeId>(&json).is_err(), "{json}");
        }
        let error = serde_json::from_str::<SpiffeId>(r#""spiffe://td:443/x""#).unwrap_err();
        assert!(error.to_string().contains("has no port"), "{error}");
        assert!(serde_json::from_str::<SpiffeId>("42").is_err());
        assert!(serde_json::from_str::<TrustDomain>(r#""Example.org""#).is_err());
        assert!(serde_json::from_str::<TrustDomain>(r#""spiffe://example.org""#).is_err());
    }
}
