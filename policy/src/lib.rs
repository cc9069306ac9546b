//! Palisade policy bundles: the directory that says who may call whom.
//!
//! A bundle holds the mesh settings, the service registry, the egress allowlist and
//! the Cedar policies of every namespace (layout in [`bundle`], file formats in
//! [`mesh`], [`registry`], [`egress`], and the policy reference in
//! `policy/README.md`). [`load`] reads one directory and returns a [`Bundle`] only
//! when all of it is valid: strict Cedar validation against the mesh schema, the
//! namespace rule (a namespace's policies never reach outside it), unique `@id`s and
//! a consistent registry. Otherwise it returns every problem it found as
//! [`Diagnostics`], each with file, line, column and a caret excerpt. A bundle is
//! never loaded in part.
//!
//! A [`Bundle`] gives the engine its input ([`Bundle::engine_input`]) and a stable
//! [`Digest`] that snapshots are versioned by. [`testcases`] reads the policy test
//! files that sit beside a bundle.
//!
//! Not here: evaluating requests (`palisade-authz`), running tests, explain and
//! analysis, distribution to proxies (later modules of this crate), and the CLI.

pub mod analyze;
pub mod bundle;
pub mod egress;
pub mod error;
pub mod format;
pub mod mesh;
pub mod registry;
pub mod testcases;

mod field;
mod source;
mod yaml;

pub use bundle::{load, Bundle, Digest, Policy};
pub use error::{Diagnostic, Diagnostics, Problem};
