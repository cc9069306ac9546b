//! The authorization crate of Palisade: how one sidecar decides one request.
//!
//! It holds two things, both pure (no I/O):
//!
//! - [`normalize`]: the canonicalization of request paths and hosts that both
//!   sidecars of a call run before any policy sees the request, so that the policy
//!   decides on exactly the string that is forwarded (`SECURITY.md` §1);
//! - [`engine`]: the Cedar engine. The mesh's schema ([`SCHEMA_SRC`]), entities built
//!   once per policy snapshot, and the evaluation of one request for one direction
//!   (egress or ingress) into a [`Decision`] that carries its determining policies
//!   and errors. Default deny, forbid wins, an evaluation error is a deny.
//!
//! Loading and validating bundles is `palisade-policy`'s job; this crate takes an
//! already validated [`EngineInput`].
//!
//! This crate knows nothing of the proxy, the CA or the audit log; mapping a
//! [`NormalizeError`] to an HTTP status (414 for [`NormalizeError::TargetTooLong`],
//! 400 for everything else) is the proxy's job.

pub mod engine;
pub mod normalize;

pub use engine::{
    schema, Action, Decision, DeterminingPolicy, Direction, Effect, Engine, EngineError, EngineInput,
    ExternalHostFacts, Mode, PolicySource, Protocol, RequestError, RequestFacts, Resource, ServiceFacts,
    SourceLocation, WorkloadFacts, SCHEMA_SRC,
};
pub use normalize::{host_matches, normalize_host, normalize_path, NormalizeError, NormalizedHost, NormalizedPath};
