//! The database as a report names it: where the records came from, never a
//! password. A report is handed to auditors; the connection string is not.
//!
//! - A URL (`postgres://user:secret@host/db?password=…`) loses the password of its
//!   user information and every query parameter whose name contains `password`.
//! - A libpq key/value string (`host=… user=… password='…'`) loses every pair whose
//!   key contains `password`; one that cannot be parsed but mentions a password is
//!   replaced whole.
//! - Anything else (a SQLite file path) is shown as given.

/// What a report prints for `database`.
pub fn display_database(database: &str) -> String {
    let shown = if let Some((scheme, rest)) = database.split_once("://") {
        format!("{scheme}://{}", redact_url_rest(rest))
    } else if mentions_password(database) {
        redact_key_values(database).unwrap_or_else(|| "(connection string hidden: it contains a password)".to_owned())
    } else {
        database.to_owned()
    };
    shown.chars().map(super::text::printable).collect()
}

fn mentions_password(text: &str) -> bool {
    text.to_ascii_lowercase().contains("password")
}

/// Everything after `scheme://`.
fn redact_url_rest(rest: &str) -> String {
    let query_at = rest.find(['?', '#']).unwrap_or(rest.len());
    let (before_query, query) = rest.split_at(query_at);
    // The last `@` before the query ends the user information, even when an
    // unencoded `/` or `@` sits in the password.
    let before_query = match before_query.rfind('@') {
        Some(at) => {
            let (userinfo, host_and_path) = before_query.split_at(at);
            let user = userinfo.split_once(':').map_or(userinfo, |(user, _)| user);
            format!("{user}{host_and_path}")
        }
        None => before_query.to_owned(),
    };
    format!("{before_query}{}", redact_query(query))
}

/// `?a=1&password=x#frag` without the password parameters.
fn redact_query(query: &str) -> String {
    let Some(params) = query.strip_prefix('?') else {
        return query.to_owned();
    };
    let (params, fragment) = params.split_at(params.find('#').unwrap_or(params.len()));
    let kept: Vec<&str> = params
        .split('&')
        .filter(|param| !mentions_password(param.split('=').next().unwrap_or("")))
        .collect();
    if kept.is_empty() {
        fragment.to_owned()
    } else {
        format!("?{}{fragment}", kept.join("&"))
    }
}

/// `key=value` pairs (values optionally single-quoted, with `\` escapes) without
/// the password ones; `None` when the text is not such a list.
fn redact_key_values(text: &str) -> Option<String> {
    let mut kept = Vec::new();
    let mut chars = text.chars().peekable();
    loop {
        while chars.next_if(|c| c.is_whitespace()).is_some() {}
        if chars.peek().is_none() {
            break;
        }
        let key: String = std::iter::from_fn(|| chars.next_if(|c| *c != '=' && !c.is_whitespace())).collect();
        while chars.next_if(|c| c.is_whitespace()).is_some() {}
        chars.next_if_eq(&'=')?;
        while chars.next_if(|c| c.is_whitespace()).is_some() {}
        let value = read_value(&mut chars)?;
        if key.is_empty() {
            return None;
        }
        if !mentions_password(&key) {
            kept.push(format!("{key}={value}"));
        }
    }
    Some(kept.join(" "))
}

/// One value, as written (quotes and escapes kept).
fn read_value(chars: &mut std::iter::Peekable<std::str::Chars<'_>>) -> Option<String> {
    let quoted = chars.next_if_eq(&'\'').is_some();
    let mut value = String::from(if quoted { "'" } else { "" });
    loop {
        match chars.peek().copied() {
            None if quoted => return None,
            None => return Some(value),
            Some(c) if !quoted && c.is_whitespace() => return Some(value),
            Some(_) => {}
        }
        let c = chars.next()?;
        value.push(c);
        if c == '\\' {
            value.push(chars.next()?);
        } else if quoted && c == '\'' {
            return Some(value);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::display_database;

    #[test]
    fn a_url_loses_its_password_and_keeps_the_rest() {
        assert_eq!(
            display_database("postgres://audit:s3cr3t@db.internal:5432/audit?sslmode=require"),
            "postgres://audit@db.internal:5432/audit?sslmode=require"
        );
        assert_eq!(display_database("postgresql://a:p/w@d@h/db"), "postgresql://a@h/db");
        assert_eq!(
            display_database("postgres://postgres@127.0.0.1:5432/test"),
            "postgres://postgres@127.0.0.1:5432/test"
        );
    }

    #[test]
    fn a_url_loses_password_parameters() {
        assert_eq!(
            display_database("postgres://h/db?password=x&sslmode=disable"),
            "postgres://h/db?sslmode=disable"
        );
        assert_eq!(display_database("postgres://h/db?PassWord=x"), "postgres://h/db");
        assert_eq!(display_database("postgres://h/db?sslpassword=x#f"), "postgres://h/db#f");
    }

    #[test]
    fn key_value_strings_lose_password_pairs() {
        assert_eq!(
            display_database("host=127.0.0.1 user=postgres password='a b\\' c' dbname=test"),
            "host=127.0.0.1 user=postgres dbname=test"
        );
        assert_eq!(display_database("host = h password = x"), "host=h");
        assert_eq!(
            display_database("password='unterminated"),
            "(connection string hidden: it contains a password)"
        );
    }

    #[test]
    fn a_file_path_is_shown_as_given() {
        assert_eq!(
            display_database("/var/lib/palisade/audit.db"),
            "/var/lib/palisade/audit.db"
        );
    }
}
