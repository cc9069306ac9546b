//! The policy bundle contract, as specifications: the shop example loads, every
//! rule of the validator rejects what it must with the right location, the digest
//! is stable, and the policy test files parse.

#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    clippy::indexing_slicing,
    reason = "tests assert by panicking"
)]

mod canonical;
mod digest;
mod invalid;
mod readme;
mod shop;
mod support;
mod testcases;
