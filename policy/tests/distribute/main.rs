//! Policy distribution, as specifications: what one proxy receives of a bundle,
//! that a snapshot is checked before it is used, and the control plane streaming
//! snapshots to proxies over real mutual TLS on loopback, with ACK, NACK and live
//! edits of the bundle directory.

#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    clippy::indexing_slicing,
    reason = "tests assert by panicking"
)]

mod identity;
mod push;
mod snapshot;
mod stream;
mod support;
