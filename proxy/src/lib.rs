//! The Palisade sidecar: one process beside each workload that authenticates every
//! connection with mTLS and authorizes every request on both ends of a call.
//!
//! A call from workload A to service B crosses two sidecars:
//!
//! ```text
//! app A ──plain HTTP──▶ [outbound: egress check] ══mTLS (h2, pooled)══▶ [inbound: ingress check] ──▶ app B
//!                        A's sidecar                                     B's sidecar
//! ```
//!
//! - [`outbound`] — the app's plain HTTP in; the destination looked up in the
//!   registry; the caller's **egress** decision; then mTLS to an endpoint of the
//!   service whose server must present an identity the registry lists for it
//!   (secure naming). Connections between sidecars are pooled HTTP/2.
//! - [`inbound`] — mTLS with a required, verified client SVID; the callee's
//!   **ingress** decision; the request forwarded to the app on loopback with the
//!   verified peer in `x-forwarded-client-cert`.
//! - [`egress`] — destinations outside the mesh: the egress allowlist, BlackHole
//!   and Passthrough, name resolution and the addresses never reached, `CONNECT`
//!   tunnels checked on their TLS ClientHello's SNI.
//! - [`audit`] — the records both sides emit (decisions, external destinations)
//!   and the sink they go to; strict audit mode.
//! - [`request`] — what both sides share: canonicalization (the one rule of
//!   `palisade-authz`), identity and hop-by-hop header handling, request ids, and the
//!   refusals a caller sees.
//! - [`state`] — the policy snapshot in force, swapped atomically; none yet means
//!   every request is denied (fail-closed), and a control plane that goes away leaves
//!   the last one enforcing (fail-static).
//! - [`connections`] — the live peer connections, so a revoked peer's are cut.
//! - [`metrics`] and [`admin`] — Prometheus counters and the admin pages.
//! - [`config`] and [`run`] — the proxy's settings and the task that assembles it
//!   all: identity rotation, the revocation follower and the snapshot follower.
//!
//! Not here: the policy language and its evaluation (`palisade-authz`), bundles and
//! their distribution (`palisade-policy`), certificates (`palisade-ca`).

pub mod admin;
pub mod audit;
pub mod config;
pub mod connections;
pub mod context;
pub mod egress;
pub mod inbound;
pub mod metrics;
pub mod outbound;
pub mod request;
pub mod run;
pub mod state;
#[cfg(test)]
#[allow(dead_code, reason = "fixtures for the inbound and outbound tests")]
mod testing;

pub use context::Context;
pub use state::{PolicyHandle, PolicyState};
