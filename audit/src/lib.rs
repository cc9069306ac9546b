//! The Palisade audit log: what every sidecar decided, every external destination
//! tried, every certificate issued or revoked and every policy version published,
//! in one tamper-evident, hash-chained store.
//!
//! - [`record`] — the records: decisions, external events, identity (CA) events and
//!   policy changes, as senders make them and as the store keeps them.
//! - [`chain`] — the canonical encoding of a stored record, its SHA-256, and the
//!   verification of a whole chain.
//! - [`store`] — SQLite (default, one file, WAL) or PostgreSQL (several audit
//!   replicas, one chain); appends are deduplicated by (sender, id).
//! - [`query`] — filters over the store, and the rows `palisade audit query` prints.
//! - [`report`] — compliance reports (HTML with inline SVG charts, JSON, CSV, Markdown).
//! - [`ingest`] — the gRPC service senders append to over mTLS; the sender is the
//!   verified peer SVID, never a field of the payload.
//! - [`deliver`] — the sender's side: a bounded queue, batches, a bounded on-disk
//!   spool while the service is away, metrics, strict mode.
//! - [`wire`] — records to and from the wire, and the limits the service enforces.
//! - [`proto`] — the generated gRPC code.

pub mod chain;
pub mod deliver;
pub mod ingest;
pub mod proto;
pub mod query;
pub mod record;
pub mod report;
pub mod store;
pub mod wire;
