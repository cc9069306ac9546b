//! `MeshConfig`: the mesh-wide settings, one resource named `default`.
//!
//! The Kubernetes form of a bundle's `mesh.yaml`.

use kube::{CustomResource, KubeSchema};
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use super::egress_allowlist::HOST_PATTERN;
use super::status::ResourceStatus;

/// A namespace name (DNS-1123 label).
pub const NAMESPACE_PATTERN: &str = r"^[a-z0-9]([-a-z0-9]{0,61}[a-z0-9])?$";

/// A SPIFFE trust domain: lower-case letters, digits, `.`, `-` and `_`.
pub const TRUST_DOMAIN_PATTERN: &str = r"^[a-z0-9._-]{1,255}$";
/// A duration: a number and `s`, `m` or `h`.
pub const DURATION_PATTERN: &str = r"^[1-9][0-9]{0,5}(s|m|h)$";

/// Mesh-wide settings. There is one, named `default`.
#[derive(CustomResource, Debug, Clone, PartialEq, Eq, Serialize, Deserialize, KubeSchema)]
#[kube(
    group = "palisade.dev",
    version = "v1alpha1",
    kind = "MeshConfig",
    plural = "meshconfigs",
    status = "ResourceStatus",
    category = "palisade",
    derive = "PartialEq",
    doc = "Mesh-wide settings; there is one, named default",
    validation = Rule::new("self.metadata.name == 'default'").message("the MeshConfig must be named `default`"),
    printcolumn(name = "Trust Domain", type_ = "string", json_path = ".spec.trustDomain"),
    printcolumn(name = "Outbound", type_ = "string", json_path = ".spec.outboundMode"),
    printcolumn(name = "Leaf TTL", type_ = "string", json_path = ".spec.leafTtl"),
    printcolumn(
        name = "Accepted",
        type_ = "string",
        json_path = r#".status.conditions[?(@.type=="Accepted")].status"#
    ),
    printcolumn(name = "Age", type_ = "date", json_path = ".metadata.creationTimestamp")
)]
#[serde(rename_all = "camelCase")]
pub struct MeshConfigSpec {
    /// The SPIFFE trust domain: every workload's identity is
    /// `spiffe://<trustDomain>/ns/<namespace>/sa/<service account>`. It must be the
    /// CA's trust domain.
    #[schemars(regex(pattern = TRUST_DOMAIN_PATTERN))]
    pub trust_domain: String,
    /// How long the workload certificates sidecars ask for live (`30m`, `1h`, at
    /// most `24h`); sidecars renew at about half of it. Default: the CA's (1 h).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(regex(pattern = DURATION_PATTERN))]
    pub leaf_ttl: Option<String>,
    /// What a sidecar does with a destination that is neither a mesh service nor
    /// allowlisted: `REGISTRY_ONLY` (default) blocks it (BlackHole), `ALLOW_ANY`
    /// forwards it (Passthrough); both are audited.
    #[serde(default)]
    pub outbound_mode: OutboundMode,
    /// Host names the Services of a namespace may claim, beyond their own cluster
    /// names (`NAME.NS.svc`, `NAME.NS.svc.CLUSTER_DOMAIN`), with the
    /// `palisade.dev/hosts` annotation. A Service that lists any other host is
    /// left out of the mesh: only this resource, which only cluster
    /// administrators may write, can hand a name such as `www.shop.example` (or
    /// `*.shop.example`, exactly one more label) to a namespace.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(length(max = 1024))]
    pub host_delegations: Vec<HostDelegation>,
    /// Pod label keys that policies see as the pods say (`principal.getTag("app")`).
    /// Whoever creates a pod sets its labels, so never grant access on one of
    /// these. A workload's other tags come only from its Namespace's labels, which
    /// only cluster administrators may set: those are the tags a policy can trust
    /// (`pci`). Default: none.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(length(max = 64), inner(regex(pattern = LABEL_KEY_PATTERN)))]
    pub self_asserted_labels: Vec<String>,
}

/// A label key: an optional DNS prefix and `/`, then a name of 1 to 63
/// characters.
pub const LABEL_KEY_PATTERN: &str = r"^([a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*/)?[A-Za-z0-9]([-A-Za-z0-9_.]{0,61}[A-Za-z0-9])?$";

/// Host names one namespace's Services may claim.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct HostDelegation {
    /// The namespace.
    #[schemars(regex(pattern = NAMESPACE_PATTERN))]
    pub namespace: String,
    /// Exact host names (`www.shop.example`) or `*.` and a domain of at least
    /// two labels (`*.shop.example` covers exactly one more label). Lower case,
    /// no port.
    #[schemars(length(min = 1, max = 256), inner(regex(pattern = HOST_PATTERN)))]
    pub hosts: Vec<String>,
}

/// What happens to traffic for a destination the mesh does not know.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Hash, Serialize, Deserialize, JsonSchema)]
pub enum OutboundMode {
    /// Blocked (BlackHole) and audited. The default: fail closed.
    #[default]
    #[serde(rename = "REGISTRY_ONLY")]
    RegistryOnly,
    /// Allowed (Passthrough), flagged and audited.
    #[serde(rename = "ALLOW_ANY")]
    AllowAny,
}
