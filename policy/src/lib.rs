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
//! The loader runs over [`BundleFiles`], the bundle's files as text, so the same
//! checks apply to a directory ([`load`], [`load_with_files`]) and to files held in
//! memory ([`load_files`]): a snapshot a proxy received.
//!
//! A [`Bundle`] gives the engine its input ([`Bundle::engine_input`]) and a stable
//! [`Digest`] of what it means. [`analyze`] finds mismatches, explains and runs
//! tests; [`testcases`] reads the policy test files that sit beside a bundle.
//!
//! Distribution: [`snapshot`] makes what one proxy receives of a bundle (its
//! files, versioned, with a digest checked before use), and [`distribute`] streams
//! snapshots from the control plane to proxies over mutual TLS, with ACK/NACK
//! ([`proto`] is its wire contract).
//!
//! Not here: evaluating requests (`palisade-authz`), enforcing them and keeping
//! the last good snapshot (`palisade-proxy`), and the CLI.

pub mod analyze;
pub mod bundle;
pub mod distribute;
pub mod egress;
pub mod error;
pub mod format;
pub mod mesh;
pub mod proto;
pub mod registry;
pub mod snapshot;
pub mod testcases;

mod field;
mod source;
mod yaml;

pub use bundle::{canonical, load, load_canonical, load_files, load_with_files, Bundle, BundleFiles, Digest, Policy};
pub use error::{Diagnostic, Diagnostics, Problem};
