//! The PostgreSQL backend: several audit replicas append to one database and keep
//! one chain.
//!
//! Each [`Store`](super::Store) holds two connections: a writer (appends, one at a
//! time) and a reader (pages, counts). An append takes `pg_advisory_xact_lock` on
//! [`LOCK_KEY`] and only then reads the head, so replicas append in turn and each
//! starts from the head the one before it committed (READ COMMITTED: every
//! statement sees what committed before it started). A batch is one `INSERT …
//! SELECT FROM UNNEST(…)` of one array per column. A connection that dropped is
//! made again on next use. Plain TCP (no TLS): run PostgreSQL on a trusted network
//! or a local socket.

use std::collections::{HashMap, HashSet};
use std::sync::Arc;

use tokio::sync::{Mutex, MutexGuard};
use tokio_postgres::types::ToSql;
use tokio_postgres::{Client, Config, NoTls, Row, Statement};

use super::columns::{self, RowRead, SqlType, Value};
use super::sql::{self, Dialect, Param};
use super::{Appended, Rows, StoreError};
use crate::chain::{Hasher, Head};
use crate::query::Filter;
use crate::record::{Hash, Record, GENESIS};

/// The advisory lock every Palisade audit writer takes: `palisade` in ASCII.
const LOCK_KEY: i64 = 0x7061_6c69_7361_6465;

#[derive(Clone)]
pub(crate) struct PostgresStore {
    inner: Arc<Inner>,
}

struct Inner {
    config: Config,
    location: String,
    writer: Mutex<Option<Writer>>,
    reader: Mutex<Option<Reader>>,
}

/// The writer connection and its prepared statements.
struct Writer {
    client: Client,
    lock: Statement,
    head: Statement,
    any: Statement,
    existing: Statement,
    insert: Statement,
    set_head: Statement,
}

/// The reader connection and its prepared statements, by SQL text.
struct Reader {
    client: Client,
    statements: HashMap<String, Statement>,
}

impl PostgresStore {
    /// Connects, and creates the tables and index if missing.
    pub(crate) async fn open(config: Config) -> Result<Self, StoreError> {
        let location = describe(&config);
        let inner = Inner {
            config,
            location,
            writer: Mutex::new(None),
            reader: Mutex::new(None),
        };
        let mut client = inner.connect().await?;
        let tx = client.transaction().await.map_err(|e| inner.error(&e))?;
        tx.execute("SELECT pg_advisory_xact_lock($1)", &[&LOCK_KEY])
            .await
            .map_err(|e| inner.error(&e))?;
        tx.batch_execute(&sql::schema(Dialect::Postgres))
            .await
            .map_err(|e| inner.error(&e))?;
        tx.commit().await.map_err(|e| inner.error(&e))?;
        *inner.writer.lock().await = Some(Writer::prepare(client).await.map_err(|e| inner.error(&e))?);
        *inner.reader.lock().await = Some(Reader {
            client: inner.connect().await?,
            statements: HashMap::new(),
        });
        Ok(Self { inner: Arc::new(inner) })
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
        let mut writer = self.inner.writer().await?;
        let writer = writer.as_mut().ok_or_else(|| self.inner.closed())?;
        match append(writer, &self.inner.location, sender, received_micros, records).await {
            Ok(appended) => Ok(appended),
            Err(AppendError::Postgres(e)) => Err(self.inner.error(&e)),
            Err(AppendError::Store(e)) => Err(e),
        }
    }

    pub(crate) async fn rows(&self, filter: &Filter, after_seq: u64, limit: usize) -> Result<Rows, StoreError> {
        let query = sql::page(filter, after_seq, limit, Dialect::Postgres);
        let params: Vec<&(dyn ToSql + Sync)> = query
            .params
            .iter()
            .map(|p| match p {
                Param::Int(v) => v as &(dyn ToSql + Sync),
                Param::Text(v) => v as &(dyn ToSql + Sync),
            })
            .collect();
        let rows = self.query(&query.sql, &params).await?;
        Ok(rows.iter().map(columns::decode).collect())
    }

    pub(crate) async fn count(&self) -> Result<u64, StoreError> {
        let rows = self.query(sql::COUNT, &[]).await?;
        let n: i64 = rows.first().and_then(|row| row.try_get(0).ok()).unwrap_or_default();
        Ok(u64::try_from(n).unwrap_or(0))
    }

    pub(crate) async fn head(&self) -> Result<Option<Head>, StoreError> {
        let rows = self.query(sql::HEAD, &[]).await?;
        rows.first().map(|row| head(row, &self.inner.location)).transpose()
    }

    /// Runs a read on the reader connection, preparing its statement once.
    async fn query(&self, sql: &str, params: &[&(dyn ToSql + Sync)]) -> Result<Vec<Row>, StoreError> {
        let mut reader = self.inner.reader().await?;
        let reader = reader.as_mut().ok_or_else(|| self.inner.closed())?;
        let statement = match reader.statements.get(sql) {
            Some(statement) => statement.clone(),
            None => {
                let statement = reader.client.prepare(sql).await.map_err(|e| self.inner.error(&e))?;
                reader.statements.insert(sql.to_owned(), statement.clone());
                statement
            }
        };
        reader
            .client
            .query(&statement, params)
            .await
            .map_err(|e| self.inner.error(&e))
    }
}

impl Inner {
    async fn connect(&self) -> Result<Client, StoreError> {
        let (client, connection) = self.config.connect(NoTls).await.map_err(|e| StoreError::Connect {
            location: self.location.clone(),
            detail: detail(&e),
        })?;
        let location = self.location.clone();
        tokio::spawn(async move {
            if let Err(e) = connection.await {
                tracing::warn!(database = %location, error = %detail(&e), "audit database connection ended");
            }
        });
        Ok(client)
    }

    /// The writer, connected again if its connection dropped.
    async fn writer(&self) -> Result<MutexGuard<'_, Option<Writer>>, StoreError> {
        let mut guard = self.writer.lock().await;
        if guard.as_ref().is_none_or(|w| w.client.is_closed()) {
            *guard = None;
            let client = self.connect().await?;
            *guard = Some(Writer::prepare(client).await.map_err(|e| self.error(&e))?);
        }
        Ok(guard)
    }

    /// The reader, connected again if its connection dropped.
    async fn reader(&self) -> Result<MutexGuard<'_, Option<Reader>>, StoreError> {
        let mut guard = self.reader.lock().await;
        if guard.as_ref().is_none_or(|r| r.client.is_closed()) {
            *guard = Some(Reader {
                client: self.connect().await?,
                statements: HashMap::new(),
            });
        }
        Ok(guard)
    }

    fn error(&self, e: &tokio_postgres::Error) -> StoreError {
        StoreError::Postgres {
            location: self.location.clone(),
            detail: detail(e),
        }
    }

    fn closed(&self) -> StoreError {
        StoreError::Postgres {
            location: self.location.clone(),
            detail: "the connection is closed".to_owned(),
        }
    }
}

impl Writer {
    async fn prepare(client: Client) -> Result<Self, tokio_postgres::Error> {
        Ok(Self {
            lock: client.prepare("SELECT pg_advisory_xact_lock($1)").await?,
            head: client.prepare(sql::HEAD).await?,
            any: client.prepare(sql::ANY_RECORD).await?,
            existing: client
                .prepare("SELECT record_id FROM audit_records WHERE sender = $1 AND record_id = ANY($2::text[])")
                .await?,
            insert: client.prepare(&columns::insert(Dialect::Postgres)).await?,
            set_head: client.prepare(&sql::set_head(Dialect::Postgres)).await?,
            client,
        })
    }
}

enum AppendError {
    Postgres(tokio_postgres::Error),
    Store(StoreError),
}

impl From<tokio_postgres::Error> for AppendError {
    fn from(e: tokio_postgres::Error) -> Self {
        Self::Postgres(e)
    }
}

impl From<StoreError> for AppendError {
    fn from(e: StoreError) -> Self {
        Self::Store(e)
    }
}

/// The append transaction: see the `store` module documentation.
async fn append(
    w: &mut Writer,
    location: &str,
    sender: &str,
    received_micros: i64,
    records: &[Record],
) -> Result<Appended, AppendError> {
    let tx = w.client.transaction().await?;
    tx.execute(&w.lock, &[&LOCK_KEY]).await?;
    let (mut seq, mut prev) = match tx.query_opt(&w.head, &[]).await? {
        Some(row) => {
            let head = head(&row, location)?;
            (head.seq, head.hash)
        }
        None if tx.query_one(&w.any, &[]).await?.try_get::<_, bool>(0)? => {
            return Err(StoreError::HeadMissing {
                location: location.to_owned(),
            }
            .into());
        }
        None => (0, GENESIS),
    };
    let ids: Vec<&str> = records.iter().map(|r| r.id.as_str()).collect();
    let existing: HashSet<String> = tx
        .query(&w.existing, &[&sender, &ids])
        .await?
        .iter()
        .filter_map(|row| row.try_get(0).ok())
        .collect();
    let mut seen = HashSet::with_capacity(records.len());
    let mut fresh: Vec<(&Record, u64, Hash, Hash)> = Vec::with_capacity(records.len());
    let mut hasher = Hasher::default();
    for record in records {
        if existing.contains(&record.id) || !seen.insert(record.id.as_str()) {
            continue;
        }
        seq += 1;
        let hash = hasher.hash(&prev, seq, sender, received_micros, record);
        fresh.push((record, seq, prev, hash));
        prev = hash;
    }
    if let Some((last, ..)) = fresh.last() {
        let rows: Vec<[Value<'_>; 33]> = fresh
            .iter()
            .map(|(record, seq, prev, hash)| columns::values(*seq, sender, received_micros, record, prev, hash))
            .collect();
        let arrays = Arrays::of(&rows);
        tx.execute(&w.insert, &arrays.params()).await?;
        let seq_value = i64::try_from(seq).unwrap_or(i64::MAX);
        tx.execute(&w.set_head, &[&seq_value, &prev.as_slice(), &sender, &last.id])
            .await?;
    }
    tx.commit().await?;
    let stored = u32::try_from(fresh.len()).unwrap_or(u32::MAX);
    Ok(Appended {
        stored,
        duplicates: u32::try_from(records.len() - fresh.len()).unwrap_or(u32::MAX),
        last_seq: seq,
    })
}

/// A batch as one array per column, for `UNNEST`.
enum Array<'a> {
    Int(Vec<Option<i64>>),
    Text(Vec<Option<&'a str>>),
    Blob(Vec<Option<&'a [u8]>>),
}

struct Arrays<'a>(Vec<Array<'a>>);

impl<'a> Arrays<'a> {
    fn of(rows: &'a [[Value<'a>; 33]]) -> Self {
        let column = |col: usize, ty: SqlType| match ty {
            SqlType::Int => Array::Int(rows.iter().map(|row| row.get(col).and_then(Value::int)).collect()),
            SqlType::Text => Array::Text(rows.iter().map(|row| row.get(col).and_then(Value::text)).collect()),
            SqlType::Blob => Array::Blob(rows.iter().map(|row| row.get(col).and_then(Value::blob)).collect()),
        };
        Self(
            columns::TYPES
                .iter()
                .enumerate()
                .map(|(col, ty)| column(col, *ty))
                .collect(),
        )
    }

    fn params(&self) -> Vec<&(dyn ToSql + Sync)> {
        self.0
            .iter()
            .map(|array| match array {
                Array::Int(v) => v as &(dyn ToSql + Sync),
                Array::Text(v) => v as &(dyn ToSql + Sync),
                Array::Blob(v) => v as &(dyn ToSql + Sync),
            })
            .collect()
    }
}

fn head(row: &Row, location: &str) -> Result<Head, StoreError> {
    let unreadable = |e: tokio_postgres::Error| StoreError::HeadUnreadable {
        location: location.to_owned(),
        problem: detail(&e),
    };
    let seq: i64 = row.try_get(0).map_err(unreadable)?;
    let hash: Vec<u8> = row.try_get(1).map_err(unreadable)?;
    super::checked_head(
        seq,
        &hash,
        row.try_get(2).map_err(unreadable)?,
        row.try_get(3).map_err(unreadable)?,
        location,
    )
}

impl RowRead for Row {
    fn int(&self, col: usize) -> Result<Option<i64>, String> {
        self.try_get(col).map_err(|e| columns::wrong_type(col, &detail(&e)))
    }

    fn text(&self, col: usize) -> Result<Option<String>, String> {
        self.try_get(col).map_err(|e| columns::wrong_type(col, &detail(&e)))
    }

    fn blob(&self, col: usize) -> Result<Option<Vec<u8>>, String> {
        self.try_get(col).map_err(|e| columns::wrong_type(col, &detail(&e)))
    }

    fn is_null(&self, col: usize) -> bool {
        match columns::TYPES.get(col) {
            Some(SqlType::Int) => matches!(self.try_get::<_, Option<i64>>(col), Ok(None)),
            Some(SqlType::Text) => matches!(self.try_get::<_, Option<&str>>(col), Ok(None)),
            Some(SqlType::Blob) => matches!(self.try_get::<_, Option<&[u8]>>(col), Ok(None)),
            None => true,
        }
    }
}

/// `host:port/database`, for messages (never the password).
fn describe(config: &Config) -> String {
    let host = match config.get_hosts().first() {
        Some(tokio_postgres::config::Host::Tcp(host)) => host.clone(),
        #[cfg(unix)]
        Some(tokio_postgres::config::Host::Unix(path)) => path.display().to_string(),
        None => "localhost".to_owned(),
    };
    let port = config.get_ports().first().copied().unwrap_or(5432);
    format!("{host}:{port}/{}", config.get_dbname().unwrap_or_default())
}

/// An error with its cause: tokio-postgres keeps the server's message in the source.
fn detail(e: &tokio_postgres::Error) -> String {
    match std::error::Error::source(e) {
        Some(source) => format!("{e}: {source}"),
        None => e.to_string(),
    }
}
