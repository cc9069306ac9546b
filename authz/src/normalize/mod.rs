//! Request canonicalization: the one function both sidecars run on a request's path
//! and host before Cedar sees them (`SECURITY.md` §1, DESIGN.md "Authorization").
//!
//! Every published L7 bypass of a mesh proxy was a parser differential: the proxy
//! decided on one string and the application acted on another. So the rule is:
//! **canonicalize once, decide on the canonical form, forward exactly that form, and
//! refuse anything that has no single canonical form.** A refusal is a
//! [`NormalizeError`]; the proxy answers it with 414 ([`NormalizeError::TargetTooLong`])
//! or 400 (everything else) and forwards nothing.
//!
//! # The path rule ([`normalize_path`])
//!
//! The input is the request-target exactly as received.
//!
//! 1. **Size.** More than [`MAX_TARGET_LEN`] bytes (path and query together) is
//!    [`NormalizeError::TargetTooLong`].
//! 2. **Origin-form only.** The target must start with `/`. The asterisk-form `*`
//!    (`OPTIONS *`) is refused too: it names no resource a policy could be written
//!    about; a sidecar that wants to answer `OPTIONS *` answers it itself and forwards
//!    nothing. Absolute-form targets are split by the proxy (which checks their
//!    authority against `Host`) before it calls this function.
//! 3. **Query first.** The target is split at its first `?`. The query is checked
//!    for refused bytes and bad escapes, then kept byte for byte for forwarding and
//!    never used for matching.
//! 4. **Refused bytes**, anywhere in the target: NUL, control bytes, space, DEL,
//!    non-ASCII, a raw `#`, a raw `\`, a `%` not followed by two hex digits, and
//!    `%00`. In the path, every byte must also be an RFC 3986 `pchar`, so `"`, `<`,
//!    `>`, `[`, `]`, `^`, `` ` ``, `{`, `|` and `}` are refused raw (encoded they are
//!    fine); that leaves them exactly one spelling.
//! 5. **Encoded separators are refused, not kept opaque.** `%2F`, `%5C` and `%3B` (any
//!    case) in the path are [`NormalizeError::EncodedSeparator`] (`;` separates
//!    parameters, which rule 7 strips: `/admin%3Bx` is `/admin` to a backend that
//!    decodes first). Kept opaque, the policy
//!    would see one segment `a%2Fb` while a backend that decodes (many do) routes
//!    `a/b`: no canonical form makes both agree, so the request has none. If decoding
//!    them ever becomes a setting, it is an opt-in with `danger` in its name. In the
//!    query they are allowed (the query is never matched).
//! 6. **Decoding.** `%HH` of an unreserved character (ALPHA, DIGIT, `-`, `.`, `_`,
//!    `~`) is decoded exactly once: `%2e` → `.`, `%41` → `A`, `%2561` stays `%2561`.
//!    Every other escape stays encoded with upper-case hex digits (`%3b` → `%3B`), so
//!    the canonical form is unique.
//! 7. **Parameters.** In every segment, everything from the first raw `;` to the end
//!    of the segment is dropped, as the common backends do before routing
//!    (`/admin;x` → `/admin`). An encoded `%3B` is not a delimiter and stays.
//! 8. **Slashes.** Empty segments are merged: `//admin` → `/admin`.
//! 9. **Dot segments.** A segment that is exactly `.` or `..` *after* decoding and
//!    parameter removal is a dot segment, so `%2e`, `.%2E` and `..;p` count: the
//!    backend decodes them and would climb. Dot segments are removed as in RFC 3986
//!    §5.2.4 (applied after merging slashes); a `..` that would climb above the root
//!    is [`NormalizeError::AboveRoot`].
//! 10. **Everything else stays.** Case is preserved (`/ADMIN` is not `/admin`), and
//!     so is a trailing slash (`/a/` stays `/a/`; `/a/.` becomes `/a/`).
//!
//! The result, a [`NormalizedPath`], is both what policies match and what is sent
//! upstream (with the original query): a backend never sees a string the policy did
//! not. Normalizing it again changes nothing.
//!
//! One caution for policy authors: escapes of reserved characters stay encoded, so
//! `/a%21` and `/a!` are different canonical paths even though most backends decode
//! both to `/a!`. Policies that name a path should stick to unreserved characters.
//!
//! # The host rule ([`normalize_host`])
//!
//! 1. **ASCII only.** Internationalized names must arrive in punycode (`xn--…`).
//! 2. **No userinfo**: any `@` is refused.
//! 3. **Port.** The part after the `:` (after the `]` for IPv6) is the port: one or
//!    more ASCII digits, 1–65535. An empty port, `0`, a sign or anything else is
//!    refused. A port equal to the default port of the connection becomes `None`. The
//!    port is its own attribute and never part of the matched name.
//! 4. **Name.** Lower-cased; one trailing dot is stripped, a second is refused; labels
//!    are 1–63 bytes of `[a-z0-9-]`, the name at most 253 bytes. `_` is refused: it is
//!    not a hostname character (RFC 952/1123) and no mesh service name (a DNS-1123
//!    label) has one; refusing it keeps every host a name the registry could hold, and
//!    fails closed. It can become an allowed byte later without loosening anything
//!    else.
//! 5. **IPv4.** A name whose last label is a number (all digits, or `0x` hex) must be
//!    a dotted quad that `std` parses (four decimal parts, no leading zeros): `127.1`,
//!    `0177.0.0.1`, `0x7f.0.0.1` and `2130706433` are refused, because a resolver
//!    reads them as `127.0.0.1` while a policy would read them as names.
//! 6. **IPv6.** A literal in brackets, parsed by `std`'s `Ipv6Addr`, kept in its
//!    RFC 5952 form with the brackets (`[0:0::1]` → `[::1]`). Zone identifiers are
//!    refused.
//!
//! # Host patterns ([`host_matches`])
//!
//! A pattern is a name, normalized the same way (so matching is case-insensitive and
//! ignores one trailing dot), or `*.` followed by a DNS name: the `*` covers exactly
//! one label on a label boundary (`*.example.com` matches `a.example.com`, not
//! `example.com`, `a.b.example.com` or `aexample.com`). A bare `*`, a `*` anywhere else,
//! a pattern with a port and any invalid pattern match nothing.

mod host;
mod path;
#[cfg(test)]
mod property_tests;

use std::fmt;

pub use host::{host_matches, normalize_host, NormalizedHost, MAX_LABEL_LEN, MAX_NAME_LEN};
pub use path::{normalize_path, NormalizedPath, MAX_TARGET_LEN};

/// Why a request's path or host has no canonical form.
///
/// Offsets are byte offsets into the request-target as received. The proxy answers
/// [`NormalizeError::TargetTooLong`] with 414 and every other variant with 400.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum NormalizeError {
    /// The request-target is longer than [`MAX_TARGET_LEN`] bytes.
    TargetTooLong {
        /// The length received.
        len: usize,
    },
    /// The request-target does not start with `/` (this includes `*`).
    NotOriginForm,
    /// A byte that may not appear raw here: NUL, a control byte, space, DEL,
    /// non-ASCII, or (in the path) a character that is not an RFC 3986 `pchar`.
    ForbiddenByte {
        /// The byte.
        byte: u8,
        /// Where it is.
        offset: usize,
    },
    /// A raw `#`: a fragment, which a client never sends.
    Fragment {
        /// Where it is.
        offset: usize,
    },
    /// A raw `\`, which some servers read as a segment separator.
    Backslash {
        /// Where it is.
        offset: usize,
    },
    /// A `%` not followed by two hex digits.
    InvalidEscape {
        /// Where the `%` is.
        offset: usize,
    },
    /// `%00`.
    EncodedNul {
        /// Where the `%` is.
        offset: usize,
    },
    /// `%2F`, `%5C` or `%3B` (any case) in the path.
    EncodedSeparator {
        /// The decoded separator, `/`, `\` or `;`.
        separator: char,
        /// Where the `%` is.
        offset: usize,
    },
    /// A `..` segment that would climb above the root.
    AboveRoot,
    /// The host is empty.
    HostEmpty,
    /// The host has a non-ASCII byte.
    HostNonAscii,
    /// The host has userinfo (an `@`).
    HostUserinfo,
    /// The host name has a byte that is not a letter, digit, `-` or `.`.
    HostInvalidByte {
        /// The byte.
        byte: u8,
    },
    /// The host name has an empty label (`a..b`, `.a`, or two trailing dots).
    HostEmptyLabel,
    /// A label of the host name is longer than [`MAX_LABEL_LEN`] bytes.
    HostLabelTooLong {
        /// The label's length.
        len: usize,
    },
    /// The host name is longer than [`MAX_NAME_LEN`] bytes.
    HostTooLong {
        /// The name's length, without its trailing dot.
        len: usize,
    },
    /// The host name ends in a number but is not a canonical dotted-quad IPv4 address.
    HostNumeric,
    /// The port is not a number from 1 to 65535.
    InvalidPort,
    /// A bracketed host is not an IPv6 address, or is not followed by nothing or a port.
    InvalidIpv6,
}

impl fmt::Display for NormalizeError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::TargetTooLong { len } => write!(
                f,
                "request target is {len} bytes, over the limit of {MAX_TARGET_LEN}: \
                 send large data in the body instead"
            ),
            Self::NotOriginForm => f.write_str(
                "request target must start with `/`: only paths are authorized, \
                 not `*` or absolute URLs",
            ),
            Self::ForbiddenByte { byte, offset } => {
                let hint = match byte {
                    0 => "remove it",
                    _ => "percent-encode it",
                };
                write!(
                    f,
                    "request target has {} `{}` at byte {offset}: {hint}",
                    byte_kind(*byte),
                    byte.escape_ascii()
                )
            }
            Self::Fragment { offset } => write!(
                f,
                "request target has a raw `#` at byte {offset}: fragments are never sent; \
                 write `%23` if it is data"
            ),
            Self::Backslash { offset } => write!(
                f,
                "request target has a raw `\\` at byte {offset}: use `/` to separate segments"
            ),
            Self::InvalidEscape { offset } => write!(
                f,
                "request target has an invalid percent-escape at byte {offset}: \
                 `%` must be followed by two hex digits (a literal `%` is `%25`)"
            ),
            Self::EncodedNul { offset } => write!(
                f,
                "request target has `%00` at byte {offset}: NUL is refused even encoded"
            ),
            Self::EncodedSeparator { separator, offset } => write!(
                f,
                "request path has an encoded `{separator}` at byte {offset}: \
                 servers disagree on whether it {}; \
                 send such data in the query or the body",
                if *separator == ';' {
                    "starts parameters"
                } else {
                    "separates segments"
                }
            ),
            Self::AboveRoot => f.write_str("request path climbs above the root: remove the extra `..` segments"),
            Self::HostEmpty => f.write_str("host is empty: send the service's name in `Host`"),
            Self::HostNonAscii => {
                f.write_str("host has non-ASCII characters: send internationalized names in punycode (`xn--`)")
            }
            Self::HostUserinfo => f.write_str("host has userinfo (`@`): credentials are refused in the authority"),
            Self::HostInvalidByte { byte } => write!(
                f,
                "host has `{}`: names are letters, digits, `-` and dots",
                byte.escape_ascii()
            ),
            Self::HostEmptyLabel => {
                f.write_str("host has an empty label: remove the extra dot (one trailing dot is allowed)")
            }
            Self::HostLabelTooLong { len } => write!(
                f,
                "host has a label of {len} bytes, over the DNS limit of {MAX_LABEL_LEN}"
            ),
            Self::HostTooLong { len } => {
                write!(f, "host name is {len} bytes, over the DNS limit of {MAX_NAME_LEN}")
            }
            Self::HostNumeric => f.write_str(
                "host ends in a number but is not an IPv4 address: \
                 write four decimal parts without leading zeros, like `10.0.0.1`",
            ),
            Self::InvalidPort => f.write_str("port must be a number from 1 to 65535"),
            Self::InvalidIpv6 => f.write_str(
                "host is not a bracketed IPv6 address: write it like `[::1]` or `[::1]:8080` \
                 (zone identifiers are refused)",
            ),
        }
    }
}

impl std::error::Error for NormalizeError {}

/// What kind of byte `byte` is, for messages.
fn byte_kind(byte: u8) -> &'static str {
    match byte {
        0 => "a NUL byte",
        b' ' => "a space",
        b if b.is_ascii_control() => "a control byte",
        b if !b.is_ascii() => "a non-ASCII byte",
        _ => "the character",
    }
}
