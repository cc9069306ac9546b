//! Canonical request paths: [`normalize_path`] and the [`NormalizedPath`] it returns.
//!
//! One left-to-right pass writes the canonical path into a single `String` sized for
//! the whole target, so a call allocates exactly once and never reallocates: the
//! canonical path is never longer than the raw one.

use super::NormalizeError;

/// The longest request-target accepted, in bytes (path and query together).
pub const MAX_TARGET_LEN: usize = 8192;

/// A request-target in canonical form: the path that policies match and that is
/// forwarded, plus the original query, kept byte for byte.
///
/// Exists only as the result of [`normalize_path`].
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct NormalizedPath {
    /// The canonical path, then `?` and the query when the request had one.
    target: String,
    /// Where the canonical path ends in `target`.
    path_len: usize,
}

impl NormalizedPath {
    /// The canonical path: what policies match and what is forwarded.
    pub fn path(&self) -> &str {
        self.target.get(..self.path_len).unwrap_or_default()
    }

    /// The original query, without its `?`; `Some("")` for a target ending in `?`.
    pub fn query(&self) -> Option<&str> {
        self.target.get(self.path_len..)?.strip_prefix('?')
    }

    /// The request-target to forward: the canonical path, then `?` and the query.
    pub fn request_target(&self) -> &str {
        &self.target
    }

    /// An owned copy of [`NormalizedPath::request_target`].
    pub fn to_request_target(&self) -> String {
        self.target.clone()
    }
}

/// Canonicalizes an origin-form request-target (`/a/./b?x=1`) by the path rule of the
/// [module documentation](super), or says why it has no canonical form.
pub fn normalize_path(request_target: &str) -> Result<NormalizedPath, NormalizeError> {
    let len = request_target.len();
    if len > MAX_TARGET_LEN {
        return Err(NormalizeError::TargetTooLong { len });
    }
    let (path, query) = match request_target.split_once('?') {
        Some((path, query)) => (path, Some(query)),
        None => (request_target, None),
    };
    let segments = path.strip_prefix('/').ok_or(NormalizeError::NotOriginForm)?;
    let mut target = String::with_capacity(len);
    push_canonical_path(&mut target, segments)?;
    let path_len = target.len();
    if let Some(query) = query {
        check_query(query, path.len() + 1)?;
        target.push('?');
        target.push_str(query);
    }
    Ok(NormalizedPath { target, path_len })
}

/// Writes the canonical path for `segments` (the raw path after its leading `/`).
fn push_canonical_path(out: &mut String, segments: &str) -> Result<(), NormalizeError> {
    let mut offset = 1;
    let mut ends_in_slash = false;
    for segment in segments.split('/') {
        ends_in_slash = push_segment(out, segment, offset)?;
        offset += segment.len() + 1;
    }
    if ends_in_slash || out.is_empty() {
        out.push('/');
    }
    Ok(())
}

/// Applies one raw segment (at `offset` in the target) to `out`, which holds the
/// canonical segments before it, each as `/name`. Returns whether the path now ends
/// in a slash: after an empty segment or a dot segment.
fn push_segment(out: &mut String, raw: &str, offset: usize) -> Result<bool, NormalizeError> {
    let (name, params) = raw.split_once(';').unwrap_or((raw, ""));
    let start = out.len();
    out.push('/');
    push_decoded(out, name, offset)?;
    let name_end = out.len();
    // Parameters are checked like the name, then dropped.
    push_decoded(out, params, offset + name.len() + 1)?;
    out.truncate(name_end);
    match out.get(start + 1..) {
        Some("" | ".") => {
            out.truncate(start);
            Ok(true)
        }
        Some("..") => {
            out.truncate(start);
            let parent = out.rfind('/').ok_or(NormalizeError::AboveRoot)?;
            out.truncate(parent);
            Ok(true)
        }
        _ => Ok(false),
    }
}

/// Appends the canonical form of `raw` (path bytes at `offset` in the target, no `/`)
/// to `out`: unreserved escapes decoded, other escapes with upper-case hex digits.
fn push_decoded(out: &mut String, raw: &str, offset: usize) -> Result<(), NormalizeError> {
    let mut bytes = raw.bytes().enumerate();
    while let Some((i, byte)) = bytes.next() {
        let at = offset + i;
        if byte != b'%' {
            check_path_byte(byte, at)?;
            out.push(char::from(byte));
            continue;
        }
        let (value, hex) = take_escape(&mut bytes, at)?;
        match value {
            b'/' | b'\\' | b';' => {
                return Err(NormalizeError::EncodedSeparator {
                    separator: char::from(value),
                    offset: at,
                })
            }
            v if is_unreserved(v) => out.push(char::from(v)),
            _ => {
                out.push('%');
                out.extend(hex.map(|digit| char::from(digit.to_ascii_uppercase())));
            }
        }
    }
    Ok(())
}

/// Checks the query (at `offset` in the target): any visible ASCII but `#` and `\`,
/// valid escapes only, no `%00`. Its escapes are not decoded: it is forwarded as is.
fn check_query(query: &str, offset: usize) -> Result<(), NormalizeError> {
    let mut bytes = query.bytes().enumerate();
    while let Some((i, byte)) = bytes.next() {
        let at = offset + i;
        match byte {
            b'%' => {
                take_escape(&mut bytes, at)?;
            }
            b'#' => return Err(NormalizeError::Fragment { offset: at }),
            b'\\' => return Err(NormalizeError::Backslash { offset: at }),
            b'!'..=b'~' => {}
            _ => return Err(NormalizeError::ForbiddenByte { byte, offset: at }),
        }
    }
    Ok(())
}

/// Reads the two hex digits after a `%` at `offset`: the escaped byte and the digits
/// as written. A missing or non-hex digit and `%00` are refused.
fn take_escape(bytes: &mut impl Iterator<Item = (usize, u8)>, offset: usize) -> Result<(u8, [u8; 2]), NormalizeError> {
    let invalid = NormalizeError::InvalidEscape { offset };
    let (_, high) = bytes.next().ok_or_else(|| invalid.clone())?;
    let (_, low) = bytes.next().ok_or_else(|| invalid.clone())?;
    let (Some(h), Some(l)) = (hex_value(high), hex_value(low)) else {
        return Err(invalid);
    };
    match h << 4 | l {
        0 => Err(NormalizeError::EncodedNul { offset }),
        value => Ok((value, [high, low])),
    }
}

/// The value of one hex digit, either case.
fn hex_value(digit: u8) -> Option<u8> {
    char::from(digit).to_digit(16).and_then(|v| u8::try_from(v).ok())
}

/// Checks one raw byte of a path segment (at `offset`): it must be an RFC 3986
/// `pchar` other than `%` (unreserved, sub-delims, `:` or `@`).
fn check_path_byte(byte: u8, offset: usize) -> Result<(), NormalizeError> {
    match byte {
        _ if is_unreserved(byte) => Ok(()),
        b'!' | b'$' | b'&' | b'\'' | b'(' | b')' | b'*' | b'+' | b',' | b';' | b'=' => Ok(()),
        b':' | b'@' => Ok(()),
        b'#' => Err(NormalizeError::Fragment { offset }),
        b'\\' => Err(NormalizeError::Backslash { offset }),
        _ => Err(NormalizeError::ForbiddenByte { byte, offset }),
    }
}

/// Whether `byte` is an RFC 3986 unreserved character: the only ones decoded.
fn is_unreserved(byte: u8) -> bool {
    byte.is_ascii_alphanumeric() || matches!(byte, b'-' | b'.' | b'_' | b'~')
}

#[cfg(test)]
mod tests {
    use super::*;
    use NormalizeError::*;

    /// A row: a raw request-target and the canonical request-target or the error.
    type Case = (&'static str, Result<&'static str, NormalizeError>);

    /// Runs a table, reporting every row that fails, not just the first.
    fn check(table: &[Case]) {
        let failures: Vec<String> = table
            .iter()
            .filter_map(|(input, expected)| {
                let actual = normalize_path(input);
                let actual = actual.as_ref().map(NormalizedPath::request_target);
                (actual != expected.as_deref()).then(|| format!("{input:?}: expected {expected:?}, got {actual:?}"))
            })
            .collect();
        assert!(failures.is_empty(), "\n{}", failures.join("\n"));
    }

    #[test]
    fn the_attack_table() {
        check(&[
            ("//admin", Ok("/admin")),
            ("/a/../admin", Ok("/admin")),
            ("/%2e%2e/admin", Err(AboveRoot)),
            ("/%2E%2E/admin", Err(AboveRoot)),
            ("/x/%2e%2e/admin", Ok("/admin")),
            (
                "/admin%2F",
                Err(EncodedSeparator {
                    separator: '/',
                    offset: 6,
                }),
            ),
            (
                "/admin%2f",
                Err(EncodedSeparator {
                    separator: '/',
                    offset: 6,
                }),
            ),
            ("/ADMIN", Ok("/ADMIN")),
            ("/admin;x", Ok("/admin")),
            ("/x/..;p/admin", Ok("/admin")),
            ("/admin?x", Ok("/admin?x")),
            ("/admin#x", Err(Fragment { offset: 6 })),
            ("/..", Err(AboveRoot)),
            ("/a/../../b", Err(AboveRoot)),
            ("/%00", Err(EncodedNul { offset: 1 })),
            ("/a%zz", Err(InvalidEscape { offset: 2 })),
            ("/a%4", Err(InvalidEscape { offset: 2 })),
            ("/a\\b", Err(Backslash { offset: 2 })),
            (
                "/%5c",
                Err(EncodedSeparator {
                    separator: '\\',
                    offset: 1,
                }),
            ),
            ("/a/%2e/b", Ok("/a/b")),
            ("/%252e%252e/admin", Ok("/%252e%252e/admin")),
        ]);
    }

    #[test]
    fn only_origin_form_within_the_size_limit_is_accepted() {
        let longest = format!("/{}", "a".repeat(MAX_TARGET_LEN - 1));
        let too_long = format!("/{}", "a".repeat(MAX_TARGET_LEN));
        let query_too_long = format!("/?{}", "a".repeat(MAX_TARGET_LEN - 1));
        assert_eq!(normalize_path(&longest).unwrap().path(), longest);
        assert_eq!(
            normalize_path(&too_long),
            Err(TargetTooLong {
                len: MAX_TARGET_LEN + 1
            })
        );
        assert_eq!(
            normalize_path(&query_too_long),
            Err(TargetTooLong {
                len: MAX_TARGET_LEN + 1
            })
        );
        check(&[
            ("/", Ok("/")),
            ("", Err(NotOriginForm)),
            ("*", Err(NotOriginForm)),
            ("a/b", Err(NotOriginForm)),
            ("http://evil.example/admin", Err(NotOriginForm)),
            ("?x", Err(NotOriginForm)),
            (" /a", Err(NotOriginForm)),
        ]);
    }

    #[test]
    fn bytes_without_one_spelling_are_refused() {
        check(&[
            ("/a\0", Err(ForbiddenByte { byte: 0, offset: 2 })),
            ("/a\tb", Err(ForbiddenByte { byte: b'\t', offset: 2 })),
            ("/a\r\nb", Err(ForbiddenByte { byte: b'\r', offset: 2 })),
            ("/a\x7f", Err(ForbiddenByte { byte: 0x7f, offset: 2 })),
            ("/a b", Err(ForbiddenByte { byte: b' ', offset: 2 })),
            ("/é", Err(ForbiddenByte { byte: 0xc3, offset: 1 })),
            ("/a{b}", Err(ForbiddenByte { byte: b'{', offset: 2 })),
            ("/a|b", Err(ForbiddenByte { byte: b'|', offset: 2 })),
            ("/a\"b", Err(ForbiddenByte { byte: b'"', offset: 2 })),
            ("/a<b>", Err(ForbiddenByte { byte: b'<', offset: 2 })),
            ("/a[0]", Err(ForbiddenByte { byte: b'[', offset: 2 })),
            ("/a^b", Err(ForbiddenByte { byte: b'^', offset: 2 })),
            ("/a`b", Err(ForbiddenByte { byte: b'`', offset: 2 })),
            ("/#", Err(Fragment { offset: 1 })),
            ("/a\\..\\admin", Err(Backslash { offset: 2 })),
            ("/a%7Bb%7D", Ok("/a%7Bb%7D")),
            ("/a:b@c!$&'()*+,=", Ok("/a:b@c!$&'()*+,=")),
        ]);
    }

    #[test]
    fn escapes_must_be_two_hex_digits_and_never_nul() {
        check(&[
            ("/a%", Err(InvalidEscape { offset: 2 })),
            ("/a%4", Err(InvalidEscape { offset: 2 })),
            ("/a%4g", Err(InvalidEscape { offset: 2 })),
            ("/a%g4", Err(InvalidEscape { offset: 2 })),
            ("/a%%41", Err(InvalidEscape { offset: 2 })),
            ("/a%+1", Err(InvalidEscape { offset: 2 })),
            ("/a%é", Err(InvalidEscape { offset: 2 })),
            ("/a/%00", Err(EncodedNul { offset: 3 })),
            ("/a%25", Ok("/a%25")),
        ]);
    }

    #[test]
    fn encoded_separators_are_refused_in_any_case_and_anywhere_in_the_path() {
        check(&[
            (
                "/a%2Fb",
                Err(EncodedSeparator {
                    separator: '/',
                    offset: 2,
                }),
            ),
            (
                "/a%2fb",
                Err(EncodedSeparator {
                    separator: '/',
                    offset: 2,
                }),
            ),
            (
                "/a%5Cb",
                Err(EncodedSeparator {
                    separator: '\\',
                    offset: 2,
                }),
            ),
            (
                "/a%5cb",
                Err(EncodedSeparator {
                    separator: '\\',
                    offset: 2,
                }),
            ),
            (
                "/%2e%2e%2fadmin",
                Err(EncodedSeparator {
                    separator: '/',
                    offset: 7,
                }),
            ),
            (
                "/a;p=%2F",
                Err(EncodedSeparator {
                    separator: '/',
                    offset: 5,
                }),
            ),
            ("/a%252F", Ok("/a%252F")),
            // An encoded `;` would be a parameter to a backend that decodes before it
            // strips parameters (`/admin%3Bx` → `/admin;x` → `/admin`), and part of the
            // name to one that does not: no single reading, so no canonical form.
            (
                "/admin%3Bx",
                Err(EncodedSeparator {
                    separator: ';',
                    offset: 6,
                }),
            ),
            (
                "/x/..%3bp/admin",
                Err(EncodedSeparator {
                    separator: ';',
                    offset: 5,
                }),
            ),
        ]);
    }

    #[test]
    fn unreserved_escapes_are_decoded_exactly_once() {
        check(&[
            ("/%61%7A%30%39%2D%2E%5F%7E", Ok("/az09-._~")),
            ("/%41dmin", Ok("/Admin")),
            ("/%2561", Ok("/%2561")),
            ("/%25%32%65", Ok("/%252e")),
            ("/%252e%252e/admin", Ok("/%252e%252e/admin")),
        ]);
    }

    #[test]
    fn other_escapes_stay_encoded_with_upper_case_hex() {
        check(&[
            ("/a%2bb", Ok("/a%2Bb")),
            (
                "/a%3bx",
                Err(EncodedSeparator {
                    separator: ';',
                    offset: 2,
                }),
            ),
            ("/a%3Fb", Ok("/a%3Fb")),
            ("/a%20b", Ok("/a%20b")),
            ("/%e2%82%ac", Ok("/%E2%82%AC")),
            ("/%Ab%aB", Ok("/%AB%AB")),
        ]);
    }

    #[test]
    fn parameters_are_dropped_from_every_segment() {
        check(&[
            ("/admin;x", Ok("/admin")),
            ("/admin;a=1;b=2/c", Ok("/admin/c")),
            ("/a;x/b;y/c;z", Ok("/a/b/c")),
            ("/;x/admin", Ok("/admin")),
            ("/admin/;x", Ok("/admin/")),
            ("/x/..;p/admin", Ok("/admin")),
            ("/x/.;p/admin", Ok("/x/admin")),
            (
                "/admin%3Bx",
                Err(EncodedSeparator {
                    separator: ';',
                    offset: 6,
                }),
            ),
            ("/a;%zz", Err(InvalidEscape { offset: 3 })),
            ("/a;\0", Err(ForbiddenByte { byte: 0, offset: 3 })),
        ]);
    }

    #[test]
    fn slashes_are_merged() {
        check(&[
            ("//", Ok("/")),
            ("//admin", Ok("/admin")),
            ("/a//b///c", Ok("/a/b/c")),
            ("/a//", Ok("/a/")),
            ("/a//../b", Ok("/b")),
        ]);
    }

    #[test]
    fn dot_segments_are_removed_after_decoding() {
        check(&[
            ("/.", Ok("/")),
            ("/a/.", Ok("/a/")),
            ("/a/./b", Ok("/a/b")),
            ("/a/..", Ok("/")),
            ("/a/b/..", Ok("/a/")),
            ("/a/b/../c", Ok("/a/c")),
            ("/a/../admin", Ok("/admin")),
            ("/a/%2e/b", Ok("/a/b")),
            ("/a/.%2E/b", Ok("/b")),
            ("/a/%2E./b", Ok("/b")),
            ("/a/.../b", Ok("/a/.../b")),
            ("/a/.b/..c", Ok("/a/.b/..c")),
            ("/..", Err(AboveRoot)),
            ("/./..", Err(AboveRoot)),
            ("/a/../..", Err(AboveRoot)),
            ("/a/../../b", Err(AboveRoot)),
            ("/%2e%2e", Err(AboveRoot)),
            ("/..;x/a", Err(AboveRoot)),
        ]);
    }

    #[test]
    fn case_and_trailing_slashes_are_preserved() {
        check(&[
            ("/ADMIN", Ok("/ADMIN")),
            ("/Admin/X", Ok("/Admin/X")),
            ("/a/", Ok("/a/")),
            ("/a", Ok("/a")),
        ]);
        assert_ne!(normalize_path("/ADMIN"), normalize_path("/admin"));
    }

    #[test]
    fn the_query_is_checked_then_kept_verbatim() {
        check(&[
            ("/a?b=%2F&c=/d;e/../f", Ok("/a?b=%2F&c=/d;e/../f")),
            ("/%2e/?%2e%2f", Ok("/?%2e%2f")),
            ("/a;p?q", Ok("/a?q")),
            ("/a?b?c", Ok("/a?b?c")),
            ("/a?", Ok("/a?")),
            ("/a?x{}|^[]", Ok("/a?x{}|^[]")),
            ("/a?x#y", Err(Fragment { offset: 4 })),
            ("/a?x\\y", Err(Backslash { offset: 4 })),
            ("/a?x y", Err(ForbiddenByte { byte: b' ', offset: 4 })),
            ("/a?x\0", Err(ForbiddenByte { byte: 0, offset: 4 })),
            ("/a?é", Err(ForbiddenByte { byte: 0xc3, offset: 3 })),
            ("/a?x=%zz", Err(InvalidEscape { offset: 5 })),
            ("/a?x=%0", Err(InvalidEscape { offset: 5 })),
            ("/a?x=%00", Err(EncodedNul { offset: 5 })),
        ]);
    }

    #[test]
    fn accessors_split_path_and_query() {
        let with_query = normalize_path("/a/./b?x=1&y=%2f").unwrap();
        assert_eq!(with_query.path(), "/a/b");
        assert_eq!(with_query.query(), Some("x=1&y=%2f"));
        assert_eq!(with_query.to_request_target(), "/a/b?x=1&y=%2f");

        let empty_query = normalize_path("/a?").unwrap();
        assert_eq!(empty_query.path(), "/a");
        assert_eq!(empty_query.query(), Some(""));

        let no_query = normalize_path("/a/").unwrap();
        assert_eq!(no_query.path(), "/a/");
        assert_eq!(no_query.query(), None);
        assert_eq!(no_query.to_request_target(), "/a/");
    }

    #[test]
    fn one_allocation_that_never_grows() {
        for input in ["/a/./b/../c//d;p?q=1", "/x/..;p/admin", "/a/.", "/%2e/", "/"] {
            let normalized = normalize_path(input).unwrap();
            assert_eq!(normalized.target.capacity(), input.len(), "{input:?}");
        }
    }

    #[test]
    fn errors_read_as_messages() {
        let cases = [
            (
                ForbiddenByte { byte: 0, offset: 2 },
                "request target has a NUL byte `\\x00` at byte 2: remove it",
            ),
            (
                EncodedSeparator {
                    separator: '/',
                    offset: 6,
                },
                "request path has an encoded `/` at byte 6: servers disagree on whether it \
                 separates segments; send such data in the query or the body",
            ),
            (
                TargetTooLong { len: 9000 },
                "request target is 9000 bytes, over the limit of 8192: \
                 send large data in the body instead",
            ),
        ];
        for (error, message) in cases {
            assert_eq!(error.to_string(), message);
        }
    }
}
