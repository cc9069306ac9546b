//! `EgressAllowlist`: external hosts some workloads of a namespace may reach.
//!
//! Each host of a resource is one entry of a bundle's `egress.yaml`, its workload
//! selector limited to the resource's namespace. The caller's Cedar egress policy
//! must allow the call too.

use std::collections::BTreeMap;

use kube::{CustomResource, KubeSchema};
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use super::status::ResourceStatus;

/// A DNS name, or `*.` and a domain of at least two labels, lower case.
pub const HOST_PATTERN: &str = r"^(\*\.)?[a-z0-9]([-a-z0-9]{0,61}[a-z0-9])?(\.[a-z0-9]([-a-z0-9]{0,61}[a-z0-9])?)+$";
/// A Kubernetes object name (DNS-1123 subdomain).
pub const NAME_PATTERN: &str = r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*$";

/// External hosts that selected workloads of this namespace may reach.
///
/// Traffic to any other external host is BlackHole (blocked) under
/// `outboundMode: REGISTRY_ONLY`, or Passthrough (allowed and flagged) under
/// `ALLOW_ANY`; both are audited.
#[derive(CustomResource, Debug, Clone, PartialEq, Eq, Serialize, Deserialize, KubeSchema)]
#[kube(
    group = "palisade.dev",
    version = "v1alpha1",
    kind = "EgressAllowlist",
    plural = "egressallowlists",
    namespaced,
    status = "ResourceStatus",
    shortname = "egress",
    category = "palisade",
    derive = "PartialEq",
    doc = "External hosts that selected workloads of a namespace may reach",
    printcolumn(name = "Hosts", type_ = "string", json_path = ".spec.hosts"),
    printcolumn(name = "Ports", type_ = "string", json_path = ".spec.ports"),
    printcolumn(name = "Protocol", type_ = "string", json_path = ".spec.protocol"),
    printcolumn(
        name = "Accepted",
        type_ = "string",
        json_path = r#".status.conditions[?(@.type=="Accepted")].status"#
    ),
    printcolumn(name = "Age", type_ = "date", json_path = ".metadata.creationTimestamp")
)]
#[serde(rename_all = "camelCase")]
pub struct EgressAllowlistSpec {
    /// Which workloads of this namespace the hosts are for. Every criterion given
    /// must hold; with none given, every workload of the namespace.
    #[serde(default)]
    pub workloads: WorkloadSelector,
    /// Exact host names (`api.stripe.com`) or `*.` and a domain of at least two
    /// labels (`*.stripe.com` matches exactly one more label). Lower case, no port,
    /// no IP address.
    #[schemars(length(min = 1, max = 64), inner(regex(pattern = HOST_PATTERN)))]
    pub hosts: Vec<String>,
    /// The ports allowed.
    #[schemars(length(min = 1, max = 64), inner(range(min = 1, max = 65535)))]
    pub ports: Vec<u16>,
    /// How the host is recognized: `tls` by the SNI of the ClientHello (the app
    /// sends `CONNECT host:port`), `http` by the `Host` header of plain HTTP.
    pub protocol: EgressProtocol,
}

/// Workloads of the resource's namespace.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct WorkloadSelector {
    /// The workload has every one of these labels with this value, as policies
    /// see its labels: its Namespace's labels, and the pod labels the MeshConfig's
    /// `selfAssertedLabels` lets pods give.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub labels: BTreeMap<String, String>,
    /// The workload runs as one of these service accounts.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(inner(regex(pattern = NAME_PATTERN)))]
    pub service_accounts: Vec<String>,
}

/// How an external host is recognized on the wire.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "lowercase")]
pub enum EgressProtocol {
    /// Plain HTTP, by its `Host` header.
    Http,
    /// TLS, by the SNI of its ClientHello.
    Tls,
}
