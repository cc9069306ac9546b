//! `MeshConfig` → `mesh.yaml`: the same three fields.

use palisade_policy::mesh::{MeshFile, OutboundMode};

use crate::resources::{self, MeshConfigSpec};

/// The `mesh.yaml` of a MeshConfig's spec.
pub(super) fn file(spec: &MeshConfigSpec) -> MeshFile {
    MeshFile {
        trust_domain: spec.trust_domain.clone(),
        outbound_mode: match spec.outbound_mode {
            resources::OutboundMode::RegistryOnly => OutboundMode::RegistryOnly,
            resources::OutboundMode::AllowAny => OutboundMode::AllowAny,
        },
        leaf_ttl: spec.leaf_ttl.clone(),
    }
}
