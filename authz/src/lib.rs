//! The authorization crate of Palisade.
//!
//! Today it holds one thing: the canonicalization function for request paths and
//! hosts ([`normalize`]) that both sidecars of a call run before any policy sees the
//! request, so that the policy decides on exactly the string that is forwarded
//! (`SECURITY.md` §1). It is pure: no I/O, and one allocation per normalized value.
//!
//! The Cedar engine comes later and will live here too: the mesh's schema as types,
//! entities built once per policy snapshot, evaluation of one request for one direction
//! (egress or ingress) into a decision that carries its determining policies and
//! errors. Nothing of that exists yet.
//!
//! This crate knows nothing of the proxy, the CA or the audit log; mapping a
//! [`NormalizeError`] to an HTTP status (414 for [`NormalizeError::TargetTooLong`],
//! 400 for everything else) is the proxy's job.

pub mod normalize;

pub use normalize::{host_matches, normalize_host, normalize_path, NormalizeError, NormalizedHost, NormalizedPath};
