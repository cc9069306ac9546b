//! The Palisade audit log.
//!
//! This crate will own: audit records, the ingest service, storage (SQLite by
//! default, PostgreSQL for scale), the hash chain and its verification, queries and
//! compliance reports.
//!
//! Nothing is built here yet: see the egress and audit issue.
