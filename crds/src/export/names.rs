//! The name rules of Kubernetes objects, labels and `EgressAllowlist` hosts,
//! checked before anything is exported (the API server would refuse it later,
//! with a message that does not name the bundle file).

/// A DNS-1123 label: 1 to 63 of `[a-z0-9-]`, starting and ending alphanumeric.
pub(super) fn is_dns_label(name: &str) -> bool {
    let edge = |c: Option<char>| c.is_some_and(|c| c.is_ascii_lowercase() || c.is_ascii_digit());
    (1..=63).contains(&name.len())
        && edge(name.chars().next())
        && edge(name.chars().last())
        && name
            .chars()
            .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-')
}

/// A DNS-1123 subdomain (what most object names are): at most 253 characters,
/// DNS labels separated by dots.
pub(super) fn is_dns_subdomain(name: &str) -> bool {
    name.len() <= 253 && name.split('.').all(is_dns_label)
}

/// A label key: an optional DNS subdomain prefix and `/`, then a name of 1 to 63
/// of `[A-Za-z0-9-_.]`, starting and ending alphanumeric.
pub(super) fn is_label_key(key: &str) -> bool {
    match key.split_once('/') {
        Some((prefix, name)) => is_dns_subdomain(prefix) && is_label_name(name),
        None => is_label_name(key),
    }
}

/// A label value: empty, or like the name part of a key.
pub(super) fn is_label_value(value: &str) -> bool {
    value.is_empty() || is_label_name(value)
}

fn is_label_name(name: &str) -> bool {
    let edge = |c: Option<char>| c.is_some_and(|c| c.is_ascii_alphanumeric());
    (1..=63).contains(&name.len())
        && edge(name.chars().next())
        && edge(name.chars().last())
        && name
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.'))
}

/// What `EgressAllowlist` accepts as a host (its schema's `HOST_PATTERN`): a
/// lower-case DNS name of at least two labels, or `*.` and one.
pub(super) fn is_allowlist_host(host: &str) -> bool {
    let name = host.strip_prefix("*.").unwrap_or(host);
    let label = |l: &str| {
        (1..=63).contains(&l.len())
            && l.starts_with(|c: char| c.is_ascii_lowercase() || c.is_ascii_digit())
            && l.ends_with(|c: char| c.is_ascii_lowercase() || c.is_ascii_digit())
            && l.chars()
                .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-')
    };
    name.contains('.') && name.split('.').all(label)
}

/// A valid object name close to `name`: lower case, `-` for anything else, no
/// empty label, no `.dry-run` suffix.
pub(super) fn suggest(name: &str) -> String {
    let lowered: String = (name.chars())
        .map(|c| match c.to_ascii_lowercase() {
            c @ ('a'..='z' | '0'..='9' | '.') => c,
            _ => '-',
        })
        .collect();
    let labels: Vec<&str> = (lowered.split('.'))
        .map(|label| label.trim_matches('-'))
        .filter(|label| !label.is_empty())
        .collect();
    let name = labels.join(".");
    match name.strip_suffix(".dry-run") {
        _ if name.is_empty() => "policy".to_owned(),
        Some(stem) => stem.to_owned(),
        None => name,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_follow_kubernetes() {
        assert!(is_dns_subdomain("checkout-egress"));
        assert!(is_dns_subdomain("api.stripe.com-2"));
        for bad in ["", "Checkout", "a_b", "-a", "a-", "a..b", &"a".repeat(254)] {
            assert!(!is_dns_subdomain(bad), "{bad}");
        }
        assert!(is_label_key("app") && is_label_key("example.com/Tier_1") && is_label_value(""));
        for bad in ["", "a b", "/x", "Example.com/x", "x/", &"a".repeat(64)] {
            assert!(!is_label_key(bad), "{bad}");
        }
        assert!(!is_label_value("a b") && !is_label_value("-x"));
    }

    #[test]
    fn allowlist_hosts_are_lower_case_names_or_wildcards() {
        for good in ["api.stripe.com", "*.stripe.com", "10.0.0.1"] {
            assert!(is_allowlist_host(good), "{good}");
        }
        for bad in ["API.stripe.com", "*.com", "localhost", "[::1]", "a.*.com", "a_b.com"] {
            assert!(!is_allowlist_host(bad), "{bad}");
        }
    }

    #[test]
    fn a_suggested_name_is_a_valid_one() {
        assert_eq!(suggest("Checkout_Egress"), "checkout-egress");
        assert_eq!(suggest("x.dry-run"), "x");
        assert_eq!(suggest("__"), "policy");
        for name in ["Checkout_Egress", "x.dry-run", "__", "A.B", "a..b_", "-x-"] {
            assert!(is_dns_subdomain(&suggest(name)), "{name}");
        }
    }
}
