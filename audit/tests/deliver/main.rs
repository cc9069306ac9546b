//! Audit delivery, as specifications: the ingest service over real mutual TLS on
//! loopback (who may write, and as whom), and senders delivering to it through
//! the queue and the spool while the service is up, down, restarted, or losing
//! answers.

#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    clippy::indexing_slicing,
    reason = "tests assert by panicking"
)]

mod delivery;
mod ingest;
mod spool;
mod support;
