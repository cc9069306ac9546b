//! Where the parts of one policy's text are, so a diagnostic can underline them:
//! the `permit`/`forbid` keyword, a scope element (`resource in …`), an annotation.
//!
//! Cedar's public API gives a policy's text but not the positions of its scope;
//! this is a small scanner over that text that skips string literals and `//`
//! comments. It only locates: the policy has already been parsed by Cedar.

use std::ops::Range;

/// One lexical item the scanner cares about.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Token<'a> {
    Ident(&'a str),
    Punct(u8),
    /// A string literal, quotes included.
    Str,
}

/// The tokens of `text` with their byte ranges; comments and whitespace skipped.
fn tokens(text: &str) -> impl Iterator<Item = (Token<'_>, Range<usize>)> + '_ {
    let bytes = text.as_bytes();
    let mut i = 0;
    std::iter::from_fn(move || loop {
        let b = *bytes.get(i)?;
        let start = i;
        if b == b'/' && bytes.get(i + 1) == Some(&b'/') {
            i = text.get(i..)?.find('\n').map_or(bytes.len(), |n| i + n);
        } else if b == b'"' {
            i += 1;
            while let Some(&c) = bytes.get(i) {
                i += if c == b'\\' { 2 } else { 1 };
                if c == b'"' {
                    break;
                }
            }
            return Some((Token::Str, start..i.min(bytes.len())));
        } else if b.is_ascii_alphabetic() || b == b'_' {
            while bytes.get(i).is_some_and(|c| c.is_ascii_alphanumeric() || *c == b'_') {
                i += 1;
            }
            return Some((Token::Ident(text.get(start..i)?), start..i));
        } else {
            i += 1;
            if !b.is_ascii_whitespace() {
                return Some((Token::Punct(b), start..i));
            }
        }
    })
}

/// The `permit` or `forbid` keyword.
pub(super) fn effect(text: &str) -> Option<Range<usize>> {
    let mut depth = 0usize;
    for (token, range) in tokens(text) {
        match token {
            Token::Punct(b'(' | b'[' | b'{') => depth += 1,
            Token::Punct(b')' | b']' | b'}') => depth = depth.saturating_sub(1),
            Token::Ident("permit" | "forbid") if depth == 0 => return Some(range),
            _ => {}
        }
    }
    None
}

/// The scope element of `variable` (`principal`, `action` or `resource`): from
/// the variable to the `,` or `)` that ends it, e.g. `resource in Namespace::"a"`.
pub(super) fn scope_element(text: &str, variable: &str) -> Option<Range<usize>> {
    let effect_end = effect(text)?.end;
    let mut depth = 0usize;
    let mut start = None;
    let mut end = effect_end;
    for (token, range) in tokens(text.get(effect_end..)?) {
        let range = range.start + effect_end..range.end + effect_end;
        match token {
            Token::Punct(b'(' | b'[' | b'{') => depth += 1,
            Token::Punct(b',') if depth == 1 && start.is_some() => break,
            Token::Punct(b')' | b']' | b'}') => {
                depth = depth.saturating_sub(1);
                if depth == 0 {
                    break;
                }
            }
            Token::Ident(name) if depth == 1 && start.is_none() && name == variable => start = Some(range.start),
            _ => {}
        }
        if start.is_some() {
            end = range.end;
        }
    }
    Some(start?..end)
}

/// The annotation `@key(...)`.
pub(super) fn annotation(text: &str, key: &str) -> Option<Range<usize>> {
    let mut at = None;
    for (token, range) in tokens(text) {
        match (at, token) {
            (None, Token::Punct(b'@')) => at = Some(range.start),
            (Some(start), Token::Ident(name)) if name == key => {
                let close = text
                    .get(range.end..)?
                    .find(')')
                    .map_or(range.end, |n| range.end + n + 1);
                return Some(start..close);
            }
            (Some(_), _) => at = None,
            _ => {}
        }
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;

    const POLICY: &str = r#"// permit ( principal
@id("a (b")
@mode("dry-run")
forbid (
  principal in Namespace::"web", // resource
  action in [Action::"GET", Action::"POST"],
  resource is Service in Namespace::"reviews"
) when { resource.name == "x" };"#;

    fn at(range: Option<Range<usize>>) -> &'static str {
        POLICY.get(range.unwrap()).unwrap()
    }

    #[test]
    fn finds_the_parts_of_a_policy() {
        assert_eq!(at(effect(POLICY)), "forbid");
        assert_eq!(
            at(scope_element(POLICY, "principal")),
            r#"principal in Namespace::"web""#
        );
        assert_eq!(
            at(scope_element(POLICY, "action")),
            r#"action in [Action::"GET", Action::"POST"]"#
        );
        assert_eq!(
            at(scope_element(POLICY, "resource")),
            r#"resource is Service in Namespace::"reviews""#
        );
        assert_eq!(at(annotation(POLICY, "mode")), r#"@mode("dry-run")"#);
    }

    #[test]
    fn a_bare_variable_is_its_own_element() {
        let text = "permit(principal, action, resource);";
        assert_eq!(text.get(scope_element(text, "resource").unwrap()), Some("resource"));
        assert_eq!(text.get(scope_element(text, "principal").unwrap()), Some("principal"));
    }
}
