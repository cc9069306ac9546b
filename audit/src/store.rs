//! Where records are kept: one SQLite file (the default: nothing to set up, WAL) or
//! one PostgreSQL database (several audit replicas sharing one chain).
//!
//! [`Store`] is the whole interface; the backends (`store/sqlite.rs`,
//! `store/postgres.rs`) are small and share everything else: the row layout
//! (`store/columns.rs`) and the SQL (`store/sql.rs`). One conformance suite
//! (`audit/tests/store.rs`) runs against both.
//!
//! # Appending
//!
//! [`Store::append`] takes a batch from one sender in one transaction. Inside it,
//! holding the store's write lock (SQLite `BEGIN IMMEDIATE`; PostgreSQL
//! `pg_advisory_xact_lock` on a fixed key, so replicas take turns), it reads the
//! head (last seq and hash), skips records whose `(sender, id)` is already stored
//! (a replay after a lost answer; also a repeat within the batch), gives each new
//! record the next seq and its hash, and moves the head. A duplicate takes no seq
//! and does not advance the chain. So the store has one total order, from 1,
//! without gaps, whatever the number of writers.
//!
//! # Reading
//!
//! [`Store::page`] pages by seq (keyset: `seq > after ORDER BY seq LIMIT n`, on the
//! primary key), with the filter in SQL. [`Store::verify`] walks every record in
//! pages of 10,000 through a [`ChainVerifier`], checked against the head before and
//! after the walk; [`Store::verify_with`] also hands each record to the caller, so
//! a report counts and verifies in one pass.

mod columns;
mod postgres;
mod sql;
mod sqlite;

use std::fmt;
use std::path::PathBuf;

use crate::chain::{BrokenLink, ChainVerifier, Head, Verification};
use crate::query::Filter;
use crate::record::{Hash, Record, StoredRecord};

use self::columns::Malformed;

/// How many records [`Store::verify`] reads per page.
const VERIFY_PAGE: usize = 10_000;

/// An open audit store.
///
/// Cheap to clone: clones share the connections. Every method is async and never
/// blocks the runtime (SQLite runs on the blocking pool).
#[derive(Clone)]
pub struct Store {
    backend: Backend,
}

#[derive(Clone)]
enum Backend {
    Sqlite(sqlite::SqliteStore),
    Postgres(postgres::PostgresStore),
}

impl fmt::Debug for Store {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Store").field("location", &self.location()).finish()
    }
}

/// What one [`Store::append`] did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Appended {
    /// Records newly stored.
    pub stored: u32,
    /// Records skipped because their `(sender, id)` was already stored.
    pub duplicates: u32,
    /// The store's last seq after the append (0 for an empty store).
    pub last_seq: u64,
}

/// What went wrong with the audit database, and what to do about it.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error(
        "`{url}` is not an audit database URL ({reason}); use `sqlite://FILE` (a file, created on first \
         use), `sqlite::memory:` (for tests) or `postgres://USER@HOST:PORT/DATABASE`"
    )]
    BadUrl { url: String, reason: String },
    #[error("cannot open the audit database `{location}`: {detail}; check that its directory exists and is writable")]
    Open { location: String, detail: String },
    #[error(
        "cannot connect to the audit database at `{location}`: {detail}; check that PostgreSQL runs there \
         and accepts the user and database in the URL"
    )]
    Connect { location: String, detail: String },
    #[error("the audit database `{location}` failed: {source}; check the disk (space, permissions) and retry")]
    Sqlite {
        location: String,
        #[source]
        source: rusqlite::Error,
    },
    #[error("the audit database at `{location}` failed: {detail}; check that PostgreSQL is running and retry")]
    Postgres { location: String, detail: String },
    #[error(
        "stored record {seq} (id `{record_id}` from `{sender}`) cannot be read: {problem}; run \
         `palisade audit verify` to find the first broken link"
    )]
    Malformed {
        seq: u64,
        record_id: String,
        sender: String,
        problem: String,
    },
    #[error(
        "the audit database `{location}` holds records but no head row: its head table was edited; run \
         `palisade audit verify` and restore the database from a backup before appending again"
    )]
    HeadMissing { location: String },
    #[error(
        "the head row of the audit database `{location}` cannot be read: {problem}; the head table was \
         edited: restore the database from a backup"
    )]
    HeadUnreadable { location: String, problem: String },
    #[error("the audit database worker stopped: {detail}; this is a bug in Palisade, please report it")]
    Worker { detail: String },
}

impl From<Malformed> for StoreError {
    fn from(m: Malformed) -> Self {
        Self::Malformed {
            seq: m.seq,
            record_id: m.record_id,
            sender: m.sender,
            problem: m.problem,
        }
    }
}

impl From<Malformed> for BrokenLink {
    fn from(m: Malformed) -> Self {
        Self {
            seq: m.seq,
            record_id: m.record_id,
            sender: m.sender,
            problem: m.problem,
        }
    }
}

/// Rows read for a page: a record, or a row that cannot be one.
type Rows = Vec<Result<StoredRecord, Malformed>>;

impl Store {
    /// Opens (creating if needed) the store at `url`:
    ///
    /// - `sqlite://FILE` or `sqlite:FILE` — relative (`sqlite://audit.db`) or
    ///   absolute (`sqlite:///var/lib/palisade/audit.db`); the file is created
    ///   (mode 0600) with its schema, in WAL mode with `synchronous=NORMAL`;
    /// - `sqlite::memory:` — a private in-memory store (tests);
    /// - `postgres://…` or `postgresql://…` — tables and indexes are created if
    ///   missing (plain TCP, no TLS).
    pub async fn open(url: &str) -> Result<Self, StoreError> {
        let backend = match parse_url(url)? {
            Location::Sqlite(path) => Backend::Sqlite(sqlite::SqliteStore::open(Some(path)).await?),
            Location::SqliteMemory => Backend::Sqlite(sqlite::SqliteStore::open(None).await?),
            Location::Postgres(config) => Backend::Postgres(postgres::PostgresStore::open(*config).await?),
        };
        Ok(Self { backend })
    }

    /// Where the store is, for messages: a file path, or `host:port/database`
    /// (never a password).
    pub fn location(&self) -> &str {
        match &self.backend {
            Backend::Sqlite(s) => s.location(),
            Backend::Postgres(p) => p.location(),
        }
    }

    /// Appends one sender's batch in one transaction: each record not stored
    /// before (by `(sender, id)`) gets the next seq, `prev_hash` and hash. Stamps
    /// every record with `sender` (the verified SPIFFE ID) and `received_micros`.
    pub async fn append(&self, sender: &str, received_micros: i64, records: &[Record]) -> Result<Appended, StoreError> {
        match &self.backend {
            Backend::Sqlite(s) => s.append(sender, received_micros, records).await,
            Backend::Postgres(p) => p.append(sender, received_micros, records).await,
        }
    }

    /// Up to `limit` records with seq greater than `after_seq` that match
    /// `filter`, in seq order. Page on with the last record's seq.
    pub async fn page(&self, filter: &Filter, after_seq: u64, limit: usize) -> Result<Vec<StoredRecord>, StoreError> {
        self.rows(filter, after_seq, limit)
            .await?
            .into_iter()
            .map(|row| row.map_err(StoreError::from))
            .collect()
    }

    /// Checks the whole chain: every link, and the head (see [`crate::chain`]).
    pub async fn verify(&self) -> Result<Verification, StoreError> {
        self.verify_with(|_| {}).await
    }

    /// [`verify`](Self::verify), handing every readable record to `visit` in seq
    /// order as it goes (a report counts while it verifies: one pass).
    pub async fn verify_with(&self, mut visit: impl FnMut(&StoredRecord) + Send) -> Result<Verification, StoreError> {
        let mut verifier = ChainVerifier::expecting(self.head().await?);
        // The next page is read (on the blocking pool, or by PostgreSQL) while
        // this one is hashed.
        let mut next = Some(self.prefetch(0));
        while let Some(pending) = next.take() {
            let rows = pending
                .await
                .map_err(|e| StoreError::Worker { detail: e.to_string() })??;
            if rows.len() == VERIFY_PAGE {
                if let Some(last) = rows.last() {
                    next = Some(self.prefetch(last.as_ref().map_or_else(|m| m.seq, |r| r.seq)));
                }
            }
            for row in rows {
                match row {
                    Ok(record) => {
                        let _ = verifier.push(&record);
                        visit(&record);
                    }
                    Err(malformed) => verifier.push_unreadable(malformed.into()),
                }
            }
        }
        Ok(verifier.finish_at(self.head().await?.as_ref()))
    }

    /// How many records the store holds.
    pub async fn count(&self) -> Result<u64, StoreError> {
        match &self.backend {
            Backend::Sqlite(s) => s.count().await,
            Backend::Postgres(p) => p.count().await,
        }
    }

    /// The last record appended (`None` for an empty store): the anchor a report
    /// prints for auditors to compare across reports.
    pub async fn head(&self) -> Result<Option<Head>, StoreError> {
        match &self.backend {
            Backend::Sqlite(s) => s.head().await,
            Backend::Postgres(p) => p.head().await,
        }
    }

    /// Starts reading the page of every record after `after_seq`, for [`verify_with`](Self::verify_with).
    fn prefetch(&self, after_seq: u64) -> tokio::task::JoinHandle<Result<Rows, StoreError>> {
        let store = self.clone();
        tokio::spawn(async move { store.rows(&Filter::default(), after_seq, VERIFY_PAGE).await })
    }

    async fn rows(&self, filter: &Filter, after_seq: u64, limit: usize) -> Result<Rows, StoreError> {
        match &self.backend {
            Backend::Sqlite(s) => s.rows(filter, after_seq, limit).await,
            Backend::Postgres(p) => p.rows(filter, after_seq, limit).await,
        }
    }
}

/// A head row, checked.
fn checked_head(seq: i64, hash: &[u8], sender: String, record_id: String, location: &str) -> Result<Head, StoreError> {
    let unreadable = |problem: String| StoreError::HeadUnreadable {
        location: location.to_owned(),
        problem,
    };
    Ok(Head {
        seq: u64::try_from(seq).map_err(|_| unreadable(format!("its seq is {seq}")))?,
        hash: Hash::try_from(hash).map_err(|_| unreadable(format!("its hash has {} bytes, not 32", hash.len())))?,
        sender,
        record_id,
    })
}

/// A parsed database URL.
enum Location {
    Sqlite(PathBuf),
    SqliteMemory,
    Postgres(Box<tokio_postgres::Config>),
}

fn parse_url(url: &str) -> Result<Location, StoreError> {
    let bad = |reason: &str| StoreError::BadUrl {
        url: redact(url),
        reason: reason.to_owned(),
    };
    if url == "sqlite::memory:" {
        return Ok(Location::SqliteMemory);
    }
    if let Some(path) = url.strip_prefix("sqlite://").or_else(|| url.strip_prefix("sqlite:")) {
        if path.is_empty() {
            return Err(bad("no file named"));
        }
        return Ok(Location::Sqlite(PathBuf::from(path)));
    }
    if url.starts_with("postgres://") || url.starts_with("postgresql://") {
        let config: tokio_postgres::Config = url.parse().map_err(|e: tokio_postgres::Error| {
            bad(&std::error::Error::source(&e).map_or_else(|| e.to_string(), |s| format!("{e}: {s}")))
        })?;
        if config.get_hosts().is_empty() {
            return Err(bad("no host named"));
        }
        return Ok(Location::Postgres(Box::new(config)));
    }
    Err(bad("unknown scheme"))
}

/// The URL without a password, for messages.
fn redact(url: &str) -> String {
    let Some((scheme, rest)) = url.split_once("://") else {
        return url.to_owned();
    };
    let authority_end = rest.find(['/', '?']).unwrap_or(rest.len());
    let (authority, tail) = rest.split_at(authority_end);
    match authority.rsplit_once('@') {
        Some((userinfo, host)) => {
            let user = userinfo.split(':').next().unwrap_or_default();
            format!("{scheme}://{user}:…@{host}{tail}")
        }
        None => url.to_owned(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sqlite_urls_name_a_file_relative_or_absolute() {
        assert!(
            matches!(parse_url("sqlite://audit.db"), Ok(Location::Sqlite(p)) if p.as_path() == std::path::Path::new("audit.db"))
        );
        assert!(
            matches!(parse_url("sqlite:///var/a.db"), Ok(Location::Sqlite(p)) if p.as_path() == std::path::Path::new("/var/a.db"))
        );
        assert!(
            matches!(parse_url("sqlite:a.db"), Ok(Location::Sqlite(p)) if p.as_path() == std::path::Path::new("a.db"))
        );
        assert!(matches!(parse_url("sqlite::memory:"), Ok(Location::SqliteMemory)));
    }

    #[test]
    fn postgres_urls_parse() {
        assert!(matches!(
            parse_url("postgres://postgres@127.0.0.1:5432/test"),
            Ok(Location::Postgres(_))
        ));
        assert!(matches!(
            parse_url("postgresql://u@db/audit"),
            Ok(Location::Postgres(_))
        ));
    }

    #[test]
    fn a_bad_url_names_the_accepted_forms_and_hides_the_password() {
        let err = parse_url("mysql://root:hunter2@db/audit").err().unwrap().to_string();
        assert_eq!(
            err,
            "`mysql://root:…@db/audit` is not an audit database URL (unknown scheme); use `sqlite://FILE` \
             (a file, created on first use), `sqlite::memory:` (for tests) or `postgres://USER@HOST:PORT/DATABASE`"
        );
        assert!(parse_url("sqlite://").is_err());
        assert!(parse_url("postgres://u:pw@[::1/x")
            .err()
            .unwrap()
            .to_string()
            .contains("u:…@"));
    }
}
