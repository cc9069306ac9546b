//! The CustomResources of group `palisade.dev`, version `v1alpha1`.
//!
//! | kind | scope | a bundle's |
//! | --- | --- | --- |
//! | [`CedarPolicy`] | namespaced | `policies/NS/DIRECTION/NAME.cedar` |
//! | [`EgressAllowlist`] | namespaced | entries of `egress.yaml` |
//! | [`MeshConfig`] | cluster (`default`) | `mesh.yaml` |
//! | [`CertificateRevocation`] | cluster | `palisade ca revoke` |
//!
//! Field docs become the CRDs' OpenAPI descriptions; schema constraints (enums,
//! patterns, lengths, CEL rules) let the API server refuse what it can by itself.
//! Every resource has a [`ResourceStatus`].

#![allow(
    clippy::duplicated_attributes,
    reason = "kube's `printcolumn(...)` repeats `type_ = \"string\"`, which clippy takes for a duplicated attribute"
)]

pub mod cedar_policy;
pub mod certificate_revocation;
pub mod egress_allowlist;
pub mod mesh_config;
pub mod status;

pub use cedar_policy::{CedarPolicy, CedarPolicySpec, PolicyDirection, PolicyMode};
pub use certificate_revocation::{CertificateRevocation, CertificateRevocationSpec};
pub use egress_allowlist::{EgressAllowlist, EgressAllowlistSpec, EgressProtocol, WorkloadSelector};
pub use mesh_config::{HostDelegation, MeshConfig, MeshConfigSpec, OutboundMode};
pub use status::{Condition, ResourceStatus};

/// The API group.
pub const GROUP: &str = "palisade.dev";
/// The API version.
pub const VERSION: &str = "v1alpha1";
