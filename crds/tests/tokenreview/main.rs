//! Kubernetes ServiceAccount-token attestation, end to end on loopback: a real CA
//! reviewing tokens with the real TokenReview client against a fake API server,
//! and the real CA client bootstrapping with a pod's token.

#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    clippy::indexing_slicing,
    reason = "tests assert by panicking"
)]

mod attestation;
mod limits;
mod reviewer;
mod support;
