//! The SQLite backend: one file in WAL mode, a writer connection and a reader
//! connection (readers never wait for the writer), each behind a mutex and used
//! only on tokio's blocking pool.
//!
//! Appends run in `BEGIN IMMEDIATE` transactions, so two [`Store`](super::Store)s
//! on one file (or two processes) take turns, waiting up to [`BUSY_TIMEOUT`]. With
//! `synchronous=NORMAL` a commit is durable against a process crash; a power loss
//! may lose the last transactions, never corrupt the file.

use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use rusqlite::types::{ToSqlOutput, ValueRef};
use rusqlite::{Connection, OpenFlags, OptionalExtension, TransactionBehavior};

use super::columns::{self, RowRead};
use super::sql::{self, Dialect, Param};
use super::{checked_head, Appended, Rows, StoreError};
use crate::chain::{Hasher, Head};
use crate::query::Filter;
use crate::record::{Record, GENESIS};

/// How long a writer waits for another to finish before failing.
const BUSY_TIMEOUT: Duration = Duration::from_secs(30);

/// SQLite's page cache per connection, in KiB (the default is 2 MiB).
const CACHE_KIB: i64 = 32 * 1024;

#[derive(Clone)]
pub(crate) struct SqliteStore {
    inner: Arc<Inner>,
}

struct Inner {
    location: String,
    writer: Mutex<Connection>,
    /// `None` for an in-memory store: it has one connection.
    reader: Option<Mutex<Connection>>,
    insert: String,
    set_head: String,
}

impl SqliteStore {
    /// Opens the file at `path` (`None`: a private in-memory database).
    pub(crate) async fn open(path: Option<PathBuf>) -> Result<Self, StoreError> {
        let location = path
            .as_ref()
            .map_or_else(|| ":memory:".to_owned(), |p| p.display().to_string());
        let worker_location = location.clone();
        let (writer, reader) = blocking(move || {
            open_connections(path.as_deref()).map_err(|detail| StoreError::Open {
                location: worker_location,
                detail,
            })
        })
        .await?;
        Ok(Self {
            inner: Arc::new(Inner {
                location,
                writer: Mutex::new(writer),
                reader: reader.map(Mutex::new),
                insert: columns::insert(Dialect::Sqlite),
                set_head: sql::set_head(Dialect::Sqlite),
            }),
        })
    }

    pub(crate) fn location(&self) -> &str {
        &self.inner.location
    }

    pub(crate) async fn append(
        &self,
        sender: &str,
        received_micros: i64,
        records: &[Record],
    ) -> Result<Appended, StoreError> {
        let inner = Arc::clone(&self.inner);
        let sender = sender.to_owned();
        let records = records.to_vec();
        blocking(move || {
            let mut conn = lock(&inner.writer);
            append(&mut conn, &inner, &sender, received_micros, &records).map_err(|e| inner.append_error(e))
        })
        .await
    }

    pub(crate) async fn rows(&self, filter: &Filter, after_seq: u64, limit: usize) -> Result<Rows, StoreError> {
        let query = sql::page(filter, after_seq, limit, Dialect::Sqlite);
        self.read(move |conn| {
            let mut stmt = conn.prepare_cached(&query.sql)?;
            let mut rows = stmt.query(rusqlite::params_from_iter(&query.params))?;
            let mut out = Vec::with_capacity(limit.min(10_000));
            while let Some(row) = rows.next()? {
                out.push(columns::decode(row));
            }
            Ok(out)
        })
        .await
    }

    pub(crate) async fn count(&self) -> Result<u64, StoreError> {
        self.read(|conn| {
            let n: i64 = conn.prepare_cached(sql::COUNT)?.query_row([], |row| row.get(0))?;
            Ok(u64::try_from(n).unwrap_or(0))
        })
        .await
    }

    pub(crate) async fn head(&self) -> Result<Option<Head>, StoreError> {
        let inner = Arc::clone(&self.inner);
        blocking(move || {
            let conn = inner.reader();
            read_head(&conn, &inner.location)
        })
        .await
    }

    /// Runs `f` with the reader connection on the blocking pool.
    async fn read<T: Send + 'static>(
        &self,
        f: impl FnOnce(&Connection) -> rusqlite::Result<T> + Send + 'static,
    ) -> Result<T, StoreError> {
        let inner = Arc::clone(&self.inner);
        blocking(move || f(&inner.reader()).map_err(|e| inner.error(e))).await
    }
}

impl Inner {
    fn reader(&self) -> MutexGuard<'_, Connection> {
        lock(self.reader.as_ref().unwrap_or(&self.writer))
    }

    fn error(&self, source: rusqlite::Error) -> StoreError {
        StoreError::Sqlite {
            location: self.location.clone(),
            source,
        }
    }

    fn append_error(&self, e: AppendError) -> StoreError {
        match e {
            AppendError::Sqlite(e) => self.error(e),
            AppendError::Store(e) => e,
        }
    }
}

/// The append transaction: see the `store` module documentation.
fn append(
    conn: &mut Connection,
    inner: &Inner,
    sender: &str,
    received_micros: i64,
    records: &[Record],
) -> Result<Appended, AppendError> {
    let tx = conn.transaction_with_behavior(TransactionBehavior::Immediate)?;
    let (mut seq, mut prev) = match read_head(&tx, &inner.location)? {
        Some(head) => (head.seq, head.hash),
        None if tx.query_row(sql::ANY_RECORD, [], |row| row.get::<_, bool>(0))? => {
            return Err(AppendError::Store(StoreError::HeadMissing {
                location: inner.location.clone(),
            }));
        }
        None => (0, GENESIS),
    };
    let (mut stored, mut duplicates, mut last_id) = (0u32, 0u32, None);
    {
        let mut insert = tx.prepare_cached(&inner.insert)?;
        let mut hasher = Hasher::default();
        for record in records {
            let next = seq + 1;
            let hash = hasher.hash(&prev, next, sender, received_micros, record);
            let values = columns::values(next, sender, received_micros, record, &prev, &hash);
            if insert.execute(rusqlite::params_from_iter(&values))? == 1 {
                (seq, prev, last_id) = (next, hash, Some(record.id.as_str()));
                stored = stored.saturating_add(1);
            } else {
                duplicates = duplicates.saturating_add(1);
            }
        }
    }
    if let Some(last_id) = last_id {
        let seq_value = i64::try_from(seq).unwrap_or(i64::MAX);
        tx.prepare_cached(&inner.set_head)?
            .execute(rusqlite::params![seq_value, prev.as_slice(), sender, last_id])?;
    }
    tx.commit()?;
    Ok(Appended {
        stored,
        duplicates,
        last_seq: seq,
    })
}

/// An append fails in SQLite, or finds the store tampered with.
enum AppendError {
    Sqlite(rusqlite::Error),
    Store(StoreError),
}

impl From<rusqlite::Error> for AppendError {
    fn from(e: rusqlite::Error) -> Self {
        Self::Sqlite(e)
    }
}

impl From<StoreError> for AppendError {
    fn from(e: StoreError) -> Self {
        Self::Store(e)
    }
}

fn read_head(conn: &Connection, location: &str) -> Result<Option<Head>, StoreError> {
    let sqlite_err = |source| StoreError::Sqlite {
        location: location.to_owned(),
        source,
    };
    let row = conn
        .prepare_cached(sql::HEAD)
        .and_then(|mut stmt| {
            stmt.query_row([], |row| {
                Ok((
                    row.get::<_, i64>(0)?,
                    row.get::<_, Vec<u8>>(1)?,
                    row.get(2)?,
                    row.get(3)?,
                ))
            })
            .optional()
        })
        .map_err(sqlite_err)?;
    row.map(|(seq, hash, sender, record_id)| checked_head(seq, &hash, sender, record_id, location))
        .transpose()
}

/// The writer (which creates the schema) and, for a file, the reader.
fn open_connections(path: Option<&Path>) -> Result<(Connection, Option<Connection>), String> {
    let text = |e: rusqlite::Error| e.to_string();
    let Some(path) = path else {
        let writer = Connection::open_in_memory().map_err(text)?;
        create_schema(&writer).map_err(text)?;
        return Ok((writer, None));
    };
    create_private(path).map_err(|e| e.to_string())?;
    let writer = connect(path).map_err(text)?;
    create_schema(&writer).map_err(text)?;
    let reader = connect(path).map_err(text)?;
    reader.pragma_update(None, "query_only", true).map_err(text)?;
    Ok((writer, Some(reader)))
}

/// Creates the database file readable by its owner only, if it does not exist
/// (audit records name workloads and paths).
fn create_private(path: &Path) -> std::io::Result<()> {
    let mut options = std::fs::OpenOptions::new();
    options.write(true).create_new(true);
    #[cfg(unix)]
    std::os::unix::fs::OpenOptionsExt::mode(&mut options, 0o600);
    match options.open(path) {
        Ok(_) => Ok(()),
        Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => Ok(()),
        Err(e) => Err(e),
    }
}

fn connect(path: &Path) -> rusqlite::Result<Connection> {
    let conn = Connection::open_with_flags(
        path,
        OpenFlags::SQLITE_OPEN_READ_WRITE | OpenFlags::SQLITE_OPEN_CREATE | OpenFlags::SQLITE_OPEN_NO_MUTEX,
    )?;
    conn.busy_timeout(BUSY_TIMEOUT)?;
    conn.pragma_update(None, "journal_mode", "WAL")?;
    conn.pragma_update(None, "synchronous", "NORMAL")?;
    conn.pragma_update(None, "cache_size", -CACHE_KIB)?;
    conn.set_prepared_statement_cache_capacity(64);
    Ok(conn)
}

fn create_schema(conn: &Connection) -> rusqlite::Result<()> {
    conn.execute_batch(&format!("BEGIN IMMEDIATE;\n{}COMMIT;", sql::schema(Dialect::Sqlite)))
}

fn lock(mutex: &Mutex<Connection>) -> MutexGuard<'_, Connection> {
    // A panic while holding the connection rolled its transaction back (the
    // transaction guard drops first): the connection is still good.
    mutex.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
}

/// Runs blocking SQLite work on tokio's blocking pool.
async fn blocking<T: Send + 'static>(
    f: impl FnOnce() -> Result<T, StoreError> + Send + 'static,
) -> Result<T, StoreError> {
    tokio::task::spawn_blocking(f)
        .await
        .map_err(|e| StoreError::Worker { detail: e.to_string() })?
}

impl rusqlite::ToSql for columns::Value<'_> {
    fn to_sql(&self) -> rusqlite::Result<ToSqlOutput<'_>> {
        Ok(ToSqlOutput::Borrowed(match self {
            Self::Null => ValueRef::Null,
            Self::Int(v) => ValueRef::Integer(*v),
            Self::Text(v) => ValueRef::Text(v.as_bytes()),
            Self::Owned(v) => ValueRef::Text(v.as_bytes()),
            Self::Blob(v) => ValueRef::Blob(v),
        }))
    }
}

impl rusqlite::ToSql for Param {
    fn to_sql(&self) -> rusqlite::Result<ToSqlOutput<'_>> {
        Ok(ToSqlOutput::Borrowed(match self {
            Self::Int(v) => ValueRef::Integer(*v),
            Self::Text(v) => ValueRef::Text(v.as_bytes()),
        }))
    }
}

impl RowRead for rusqlite::Row<'_> {
    fn int(&self, col: usize) -> Result<Option<i64>, String> {
        match self.get_ref(col) {
            Ok(ValueRef::Null) => Ok(None),
            Ok(ValueRef::Integer(v)) => Ok(Some(v)),
            Ok(other) => Err(columns::wrong_type(col, type_name(other))),
            Err(e) => Err(e.to_string()),
        }
    }

    fn text(&self, col: usize) -> Result<Option<String>, String> {
        match self.get_ref(col) {
            Ok(ValueRef::Null) => Ok(None),
            Ok(ValueRef::Text(bytes)) => String::from_utf8(bytes.to_vec())
                .map(Some)
                .map_err(|_| columns::wrong_type(col, "bytes that are not UTF-8")),
            Ok(other) => Err(columns::wrong_type(col, type_name(other))),
            Err(e) => Err(e.to_string()),
        }
    }

    fn blob(&self, col: usize) -> Result<Option<Vec<u8>>, String> {
        match self.get_ref(col) {
            Ok(ValueRef::Null) => Ok(None),
            Ok(ValueRef::Blob(bytes)) => Ok(Some(bytes.to_vec())),
            Ok(other) => Err(columns::wrong_type(col, type_name(other))),
            Err(e) => Err(e.to_string()),
        }
    }

    fn is_null(&self, col: usize) -> bool {
        matches!(self.get_ref(col), Ok(ValueRef::Null))
    }
}

fn type_name(value: ValueRef<'_>) -> &'static str {
    match value {
        ValueRef::Null => "NULL",
        ValueRef::Integer(_) => "an integer",
        ValueRef::Real(_) => "a real number",
        ValueRef::Text(_) => "text",
        ValueRef::Blob(_) => "a blob",
    }
}
