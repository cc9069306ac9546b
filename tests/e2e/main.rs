//! End-to-end tests: real `palisade` processes, real sockets, real TLS.
//! One test binary, one module per story.

#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    clippy::indexing_slicing,
    reason = "tests assert by panicking"
)]

mod audit;
mod ca;
mod demo;
mod egress;
mod kubernetes;
mod kubernetes_push;
mod mesh;
mod policy;
mod support;
