//! The controller's pure core against the shop: what a cluster says becomes the
//! same bundle as the files, and what is invalid is left out without ever
//! widening access.
//!
//! The cluster is the exported shop (`export`, rendered to YAML and parsed back,
//! as `kubectl apply -f` would send it) with a "fake scheduler" giving each
//! Deployment one running pod and each Service one EndpointSlice
//! ([`support`]).

#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    clippy::indexing_slicing,
    reason = "tests assert by panicking"
)]

mod invalid;
mod mapping;
mod shop;
mod support;
mod tenancy;
