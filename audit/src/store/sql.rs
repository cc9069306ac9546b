//! The SQL both backends run, written once: the schema, the insert, the head, and
//! a [`Filter`] as the WHERE clause of a keyset page.
//!
//! A page's SQL text depends only on which filter fields are set, never on their
//! values, so each backend prepares a handful of statements once and reuses them.
//! The rule is the one [`Filter::matches`] states in Rust; the conformance tests
//! hold the two together.

use super::columns::{self, SqlType};
use crate::query::Filter;

/// The two SQL dialects: how they number parameters and name types.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Dialect {
    /// `?1`, `?2`, …; `INTEGER`, `BLOB`; STRICT tables.
    Sqlite,
    /// `$1`, `$2`, …; `BIGINT`, `BYTEA`.
    Postgres,
}

impl Dialect {
    fn placeholder(self, n: usize) -> String {
        match self {
            Self::Sqlite => format!("?{n}"),
            Self::Postgres => format!("${n}"),
        }
    }

    fn type_name(self, ty: SqlType) -> &'static str {
        match (self, ty) {
            (Self::Sqlite, SqlType::Int) => "INTEGER",
            (Self::Postgres, SqlType::Int) => "BIGINT",
            (_, SqlType::Text) => "TEXT",
            (Self::Sqlite, SqlType::Blob) => "BLOB",
            (Self::Postgres, SqlType::Blob) => "BYTEA",
        }
    }
}

/// The tables and index, created if missing: `audit_records` (one row per record,
/// `seq` its primary key, unique `(sender, record_id)`, an index on time) and the
/// one-row `audit_head` (the last record appended; see [`crate::chain`]).
pub(crate) fn schema(dialect: Dialect) -> String {
    let columns: Vec<String> = columns::NAMES
        .iter()
        .zip(columns::TYPES)
        .enumerate()
        .map(|(i, (name, ty))| {
            let constraint = if i == columns::c::SEQ {
                " PRIMARY KEY"
            } else if columns::is_common(i) {
                " NOT NULL"
            } else {
                ""
            };
            format!("{name} {}{constraint}", dialect.type_name(ty))
        })
        .collect();
    let (strict, int, blob) = (
        if dialect == Dialect::Sqlite { " STRICT" } else { "" },
        dialect.type_name(SqlType::Int),
        dialect.type_name(SqlType::Blob),
    );
    format!(
        "CREATE TABLE IF NOT EXISTS audit_records (\n  {},\n  UNIQUE (sender, record_id)\n){strict};\n\
         CREATE INDEX IF NOT EXISTS audit_records_time ON audit_records (time_us);\n\
         CREATE TABLE IF NOT EXISTS audit_head (\n  id {int} PRIMARY KEY CHECK (id = 1),\n  seq {int} NOT NULL,\n  \
         hash {blob} NOT NULL,\n  sender TEXT NOT NULL,\n  record_id TEXT NOT NULL\n){strict};\n",
        columns.join(",\n  ")
    )
}

/// The head: seq, hash, sender, record id.
pub(crate) const HEAD: &str = "SELECT seq, hash, sender, record_id FROM audit_head WHERE id = 1";

/// Whether any record exists (a store with records and no head was tampered with).
pub(crate) const ANY_RECORD: &str = "SELECT EXISTS (SELECT 1 FROM audit_records)";

/// How many records there are.
pub(crate) const COUNT: &str = "SELECT COUNT(*) FROM audit_records";

/// Moves the head to the last record appended (parameters: seq, hash, sender, record id).
pub(crate) fn set_head(dialect: Dialect) -> String {
    let p = |n| dialect.placeholder(n);
    format!(
        "INSERT INTO audit_head (id, seq, hash, sender, record_id) VALUES (1, {}, {}, {}, {}) \
         ON CONFLICT (id) DO UPDATE SET seq = excluded.seq, hash = excluded.hash, \
         sender = excluded.sender, record_id = excluded.record_id",
        p(1),
        p(2),
        p(3),
        p(4)
    )
}

/// A parameter value.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Param {
    Int(i64),
    Text(String),
}

/// A page query: records after a seq, matching a filter, in seq order.
#[derive(Debug)]
pub(crate) struct PageQuery {
    pub sql: String,
    pub params: Vec<Param>,
}

/// The page of at most `limit` records with seq greater than `after_seq` that pass `filter`.
pub(crate) fn page(filter: &Filter, after_seq: u64, limit: usize, dialect: Dialect) -> PageQuery {
    let mut b = Builder {
        dialect,
        params: Vec::new(),
        clauses: Vec::new(),
    };
    let after = b.param(Param::Int(i64::try_from(after_seq).unwrap_or(i64::MAX)));
    b.clauses.push(format!("seq > {after}"));
    if let Some(since) = filter.since_micros {
        let p = b.param(Param::Int(since));
        b.clauses.push(format!("time_us >= {p}"));
    }
    if let Some(until) = filter.until_micros {
        let p = b.param(Param::Int(until));
        b.clauses.push(format!("time_us < {p}"));
    }
    if let Some(effect) = filter.effect {
        let p = b.param(Param::Text(effect.as_str().to_owned()));
        b.clauses.push(format!("effect = {p}"));
    }
    if let Some(side) = filter.side {
        let p = b.param(Param::Text(side.as_str().to_owned()));
        b.clauses.push(format!("side = {p}"));
    }
    if let Some(source) = &filter.source {
        let p = b.param(Param::Text(source.clone()));
        b.clauses.push(format!(
            "(sender = {p} OR principal = {p} OR workload = {p} OR spiffe_id = {p})"
        ));
    }
    if let Some(dest) = &filter.dest {
        let p = b.param(Param::Text(dest.clone()));
        b.clauses.push(format!(
            "(resource = {p} \
             OR substr(resource, 1, length(CAST({p} AS TEXT)) + 1) = CAST({p} AS TEXT) || ':' \
             OR host = {p} \
             OR host || ':' || CAST(port AS TEXT) = {p})"
        ));
    }
    if let Some(kind) = filter.kind {
        let (event_kind, external_kind) = kind.parts();
        let p = b.param(Param::Text(event_kind.as_str().to_owned()));
        b.clauses.push(format!("kind = {p}"));
        if let Some(external_kind) = external_kind {
            let p = b.param(Param::Text(external_kind.as_str().to_owned()));
            b.clauses.push(format!("ext_kind = {p}"));
        }
    }
    let limit = b.param(Param::Int(i64::try_from(limit).unwrap_or(i64::MAX)));
    PageQuery {
        sql: format!(
            "SELECT {} FROM audit_records WHERE {} ORDER BY seq LIMIT {limit}",
            columns::list(),
            b.clauses.join(" AND ")
        ),
        params: b.params,
    }
}

struct Builder {
    dialect: Dialect,
    params: Vec<Param>,
    clauses: Vec<String>,
}

impl Builder {
    /// Adds a parameter and returns its placeholder.
    fn param(&mut self, value: Param) -> String {
        self.params.push(value);
        self.dialect.placeholder(self.params.len())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::query::KindFilter;
    use crate::record::Effect;

    #[test]
    fn the_sql_depends_on_which_fields_are_set_not_their_values() {
        let a = Filter {
            effect: Some(Effect::Deny),
            ..Filter::default()
        };
        let b = Filter {
            effect: Some(Effect::Allow),
            ..Filter::default()
        };
        let qa = page(&a, 0, 10, Dialect::Postgres);
        let qb = page(&b, 99, 5, Dialect::Postgres);
        assert_eq!(qa.sql, qb.sql);
        assert!(
            qa.sql
                .ends_with("FROM audit_records WHERE seq > $1 AND effect = $2 ORDER BY seq LIMIT $3"),
            "{}",
            qa.sql
        );
        assert_eq!(
            qa.params,
            vec![Param::Int(0), Param::Text("deny".to_owned()), Param::Int(10)]
        );
    }

    #[test]
    fn the_schema_keeps_seq_as_the_key_and_ids_unique_per_sender() {
        let sqlite = schema(Dialect::Sqlite);
        assert!(sqlite.contains("seq INTEGER PRIMARY KEY,"), "{sqlite}");
        assert!(sqlite.contains("hash BLOB NOT NULL,"), "{sqlite}");
        assert!(sqlite.contains("UNIQUE (sender, record_id)"), "{sqlite}");
        let postgres = schema(Dialect::Postgres);
        assert!(postgres.contains("seq BIGINT PRIMARY KEY,"), "{postgres}");
        assert!(!postgres.contains("STRICT"), "{postgres}");
    }

    #[test]
    fn an_external_kind_also_compares_the_external_kind() {
        let f = Filter {
            kind: Some(KindFilter::BlackHole),
            ..Filter::default()
        };
        let q = page(&f, 0, 10, Dialect::Sqlite);
        assert!(q.sql.contains("kind = ?2 AND ext_kind = ?3"), "{}", q.sql);
    }
}
