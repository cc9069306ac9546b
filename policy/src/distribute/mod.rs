//! Distribution of policy to proxies: the control plane streams each proxy the
//! snapshot made for it; the proxy applies it and answers (`PolicyDistribution`
//! in `proto/palisade/policy/v1/distribution.proto`).
//!
//! **Versions.** [`watch_bundle`] reads the bundle directory into
//! [`BundleFiles`](crate::BundleFiles) once per attempt, validates exactly those
//! files, and publishes them as version *n + 1* only when the whole bundle is valid
//! and its files changed. An invalid edit is logged and reported as a
//! [`PolicyEvent::Rejected`], and version *n* stays: proxies never see it. Every
//! attempt is reported once through a callback, for the audit trail.
//!
//! **Digests.** Each snapshot carries a [`SnapshotDigest`](crate::snapshot::SnapshotDigest)
//! over its files. The proxy recomputes it and runs the full loader before using a
//! snapshot ([`Snapshot::load`](crate::snapshot::Snapshot::load)), so a corrupt or
//! invalid snapshot is refused and changes nothing.
//!
//! **Identity.** A proxy is who its verified TLS client SVID says, never what a
//! request claims: client certificates are mandatory ([`serve`]), and a proxy
//! accepts only a server presenting [`control_plane_id`] (secure naming,
//! [`follow`]). A stream is not cut when its proxy's SVID is revoked later; the
//! revoked proxy's next connection is refused at the handshake.
//!
//! **Filtering.** A proxy receives what its sidecar decides with:
//! [`for_workload`](crate::snapshot::for_workload) sends the registry whole, its own
//! namespace's egress policies, the ingress policies of the namespaces it serves,
//! and the egress rules that select it; no other namespace's policies. The server
//! sends a new snapshot on every published version, even when a proxy's part did
//! not change, so the version a proxy acknowledged always says how current it is.
//!
//! **ACK/NACK.** After each snapshot the proxy calls `Ack`: accepted, or refused
//! with the reason. [`ProxyStatus`] keeps, per proxy, its open streams, the last
//! version sent, acknowledged and refused, for the admin page.
//!
//! **Two sources.** A control plane reads its bundle from a directory
//! ([`watch_bundle`]) or, in Kubernetes, takes it from the controller, which pushes
//! the files it rendered from the cluster (`BundleSource.Publish`, [`push`]; only
//! [`controller_id`] may call it). Both go through the same loader, canonical form
//! and [`Publisher`], so equal bundles give equal versions and digests.
//!
//! **Fail-static lives in the proxy.** [`follow`] reconnects forever with backoff
//! and never drops what was applied; a proxy keeps enforcing its last good
//! snapshot while the control plane is away, and one with no snapshot yet denies
//! everything.

mod client;
mod publisher;
mod push;
mod server;
mod status;
mod watch;

use palisade_ca::{SpiffeId, SpiffeIdError, TrustDomain};

pub use client::{follow, FollowError, FollowParams, FollowState, Follower};
pub use publisher::{Offered, Publisher};
pub use push::{push, push_source, OnlyController, PushError, PushParams, PushService, Pushed, Source};
pub use server::{serve, ServeError, ServeParams};
pub use status::{ProxyState, ProxyStatus, Refusal, StreamGuard, Version};
pub use watch::{version_name, watch_bundle, BundleWatch, PolicyEvent, Published, WatchParams, VERSION_PREFIX};

/// The SPIFFE ID the control plane serves under:
/// `spiffe://TD/ns/palisade-system/sa/palisade-control-plane`.
///
/// # Errors
///
/// Only if the trust domain is too long to make a SPIFFE ID of.
pub fn control_plane_id(td: &TrustDomain) -> Result<SpiffeId, SpiffeIdError> {
    SpiffeId::mesh(td, "palisade-system", "palisade-control-plane")
}

/// The SPIFFE ID of the Kubernetes controller, the only caller allowed to push
/// bundles to a control plane: `spiffe://TD/ns/palisade-system/sa/palisade-controller`.
///
/// # Errors
///
/// Only if the trust domain is too long to make a SPIFFE ID of.
pub fn controller_id(td: &TrustDomain) -> Result<SpiffeId, SpiffeIdError> {
    SpiffeId::mesh(td, "palisade-system", "palisade-controller")
}
