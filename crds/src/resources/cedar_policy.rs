//! `CedarPolicy`: the Cedar policies of one namespace and one direction.
//!
//! It is the Kubernetes form of one file `policies/NS/DIRECTION/NAME.cedar` of a
//! bundle (`NAME.dry-run.cedar` when `mode` is `dry-run`), with the same text: the
//! controller builds the bundle through the same loader and validator, so a policy
//! means the same thing whichever source it came from.

use kube::{CustomResource, KubeSchema};
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use super::status::ResourceStatus;

/// The largest policy text a resource may hold (256 KiB): Kubernetes keeps whole
/// objects under about 1.5 MiB.
pub const MAX_POLICY_BYTES: usize = 256 * 1024;

/// Cedar policies one namespace enforces on one side of its calls.
///
/// Every policy needs an `@id` unique in the mesh, and may only reach inside its
/// own namespace (`principal in Namespace::"NS"` for ingress, `resource in
/// Namespace::"NS"` or an external host for egress). See `policy/README.md`.
#[derive(CustomResource, Debug, Clone, PartialEq, Eq, Serialize, Deserialize, KubeSchema)]
#[kube(
    group = "palisade.dev",
    version = "v1alpha1",
    kind = "CedarPolicy",
    plural = "cedarpolicies",
    namespaced,
    status = "ResourceStatus",
    shortname = "cedar",
    category = "palisade",
    derive = "PartialEq",
    doc = "Cedar policies one namespace enforces on one side of its calls",
    validation = Rule::new("!self.metadata.name.endsWith('.dry-run')").message("a CedarPolicy name may not end in `.dry-run` (that suffix marks dry-run policy files); set `spec.mode: dry-run` instead"),
    printcolumn(name = "Direction", type_ = "string", json_path = ".spec.direction"),
    printcolumn(name = "Mode", type_ = "string", json_path = ".spec.mode"),
    printcolumn(
        name = "Accepted",
        type_ = "string",
        json_path = r#".status.conditions[?(@.type=="Accepted")].status"#
    ),
    printcolumn(
        name = "Reason",
        type_ = "string",
        json_path = r#".status.conditions[?(@.type=="Accepted")].reason"#
    ),
    printcolumn(name = "Age", type_ = "date", json_path = ".metadata.creationTimestamp")
)]
#[serde(rename_all = "camelCase")]
pub struct CedarPolicySpec {
    /// `ingress`: decides who may call the services of this namespace (the callee's
    /// sidecar). `egress`: decides what the workloads of this namespace may call (the
    /// caller's sidecar). A request needs both to allow it.
    pub direction: PolicyDirection,
    /// `enforce` (default): the policies decide, except a policy annotated
    /// `@mode("dry-run")`. `dry-run`: every policy here is evaluated and audited as
    /// "would deny" but never enforced, to try a policy before it blocks anyone.
    #[serde(default)]
    pub mode: PolicyMode,
    /// The Cedar text: one or more policies, each with an `@id("...")` unique in the
    /// mesh. Checked against the mesh schema and the namespace rule; an invalid text
    /// is refused at `kubectl apply` by the admission webhook, and if it gets in
    /// anyway the resource is marked `Invalid` and its namespace keeps its last valid
    /// policies.
    #[schemars(length(min = 1, max = 262144))]
    pub policy: String,
}

/// Which side of a call a policy decides.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "lowercase")]
pub enum PolicyDirection {
    /// The callee's side: who may call this namespace's services.
    Ingress,
    /// The caller's side: what this namespace's workloads may call.
    Egress,
}

/// Whether policies are enforced or only audited.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Hash, Serialize, Deserialize, JsonSchema)]
pub enum PolicyMode {
    /// Enforced (a policy may still opt out with `@mode("dry-run")`).
    #[default]
    #[serde(rename = "enforce")]
    Enforce,
    /// Evaluated and audited, never enforced.
    #[serde(rename = "dry-run")]
    DryRun,
}

impl PolicyDirection {
    /// `ingress` or `egress`, as in the bundle's directory names.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Ingress => "ingress",
            Self::Egress => "egress",
        }
    }
}

impl PolicyMode {
    /// `enforce` or `dry-run`.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Enforce => "enforce",
            Self::DryRun => "dry-run",
        }
    }
}
