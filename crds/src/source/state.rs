//! What [`build`](super::build) reads: the cluster's objects, and its options.

use std::collections::BTreeMap;

use k8s_openapi::api::core::v1::{Namespace, Pod, Service};
use k8s_openapi::api::discovery::v1::EndpointSlice;

use crate::resources::{CedarPolicy, EgressAllowlist, MeshConfig};

/// The objects of a cluster a bundle is made from, as the controller's watches
/// see them (in any order: the bundle does not depend on it).
#[derive(Debug, Clone, Default)]
pub struct ClusterState {
    /// The `MeshConfig` named `default`; `None` when there is none.
    pub mesh: Option<MeshConfig>,
    /// Every `CedarPolicy`.
    pub policies: Vec<CedarPolicy>,
    /// Every `EgressAllowlist`.
    pub allowlists: Vec<EgressAllowlist>,
    /// Every Service.
    pub services: Vec<Service>,
    /// Every EndpointSlice.
    pub slices: Vec<EndpointSlice>,
    /// Every Pod.
    pub pods: Vec<Pod>,
    /// Every Namespace: their labels are the tags of their workloads.
    pub namespaces: Vec<Namespace>,
}

/// Namespace name → its labels as policies see them.
pub(crate) type NamespaceLabels = BTreeMap<String, BTreeMap<String, String>>;

impl ClusterState {
    /// The names of every Namespace, and of every namespace that has a
    /// CedarPolicy.
    pub(crate) fn namespace_names(&self) -> std::collections::BTreeSet<&str> {
        let named = self.namespaces.iter().filter_map(|ns| ns.metadata.name.as_deref());
        let used = self.policies.iter().filter_map(|p| p.metadata.namespace.as_deref());
        named.chain(used).collect()
    }

    /// Each Namespace's labels as policies see them
    /// ([`crate::labels::namespace_policy_labels`]).
    pub(crate) fn namespace_labels(&self) -> NamespaceLabels {
        (self.namespaces.iter())
            .filter_map(|ns| {
                let labels = ns.metadata.labels.as_ref()?;
                Some((
                    ns.metadata.name.clone()?,
                    crate::labels::namespace_policy_labels(labels),
                ))
            })
            .collect()
    }
}

/// How cluster objects become bundle files.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SourceOptions {
    /// The cluster's DNS domain: a Service answers to `NAME.NS.svc` and
    /// `NAME.NS.svc.CLUSTER_DOMAIN` unless it lists its hosts. Default
    /// `cluster.local`.
    pub cluster_domain: String,
}

impl Default for SourceOptions {
    fn default() -> Self {
        Self {
            cluster_domain: "cluster.local".to_owned(),
        }
    }
}
