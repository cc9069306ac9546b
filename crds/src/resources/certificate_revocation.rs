//! `CertificateRevocation`: a workload certificate or identity the CA must no
//! longer trust.
//!
//! The controller applies it through the CA's admin API (as `palisade ca revoke`
//! does) and says when in the `Applied` condition; deleting the resource unrevokes.

use kube::{CustomResource, KubeSchema};
use serde::{Deserialize, Serialize};

use super::status::ResourceStatus;

/// A certificate serial: lower-case hex, no separators.
pub const SERIAL_PATTERN: &str = r"^[0-9a-f]{1,40}$";
/// A SPIFFE ID of a mesh workload.
pub const SPIFFE_ID_PATTERN: &str =
    r"^spiffe://[a-z0-9._-]{1,255}/ns/[a-z0-9]([-a-z0-9]*[a-z0-9])?/sa/[a-z0-9]([-.a-z0-9]*[a-z0-9])?$";

/// Revokes one certificate (by serial) or every certificate of one identity (by
/// SPIFFE ID). Sidecars cut the revoked peer's connections within seconds and the
/// CA refuses to renew it. Delete the resource to unrevoke.
#[derive(CustomResource, Debug, Clone, PartialEq, Eq, Serialize, Deserialize, KubeSchema)]
#[kube(
    group = "palisade.dev",
    version = "v1alpha1",
    kind = "CertificateRevocation",
    plural = "certificaterevocations",
    status = "ResourceStatus",
    shortname = "certrevoke",
    category = "palisade",
    derive = "PartialEq",
    doc = "Revokes a workload certificate (serial) or identity (SPIFFE ID); delete it to unrevoke",
    printcolumn(name = "Serial", type_ = "string", json_path = ".spec.serial"),
    printcolumn(name = "SPIFFE ID", type_ = "string", json_path = ".spec.spiffeId"),
    printcolumn(
        name = "Applied",
        type_ = "string",
        json_path = r#".status.conditions[?(@.type=="Applied")].status"#
    ),
    printcolumn(name = "Revoked At", type_ = "string", json_path = ".status.revokedAt"),
    printcolumn(name = "Age", type_ = "date", json_path = ".metadata.creationTimestamp")
)]
#[x_kube(validation = Rule::new("has(self.serial) != has(self.spiffeId)").message("give exactly one of `serial` and `spiffeId`"))]
#[x_kube(validation = Rule::new("self == oldSelf").message("a CertificateRevocation cannot be changed; delete it and create a new one"))]
#[serde(rename_all = "camelCase")]
pub struct CertificateRevocationSpec {
    /// The serial of one certificate, lower-case hex without separators (as
    /// `palisade ca revoke --serial` takes it).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(regex(pattern = SERIAL_PATTERN))]
    pub serial: Option<String>,
    /// A workload identity: every certificate of it, now and until unrevoked.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(regex(pattern = SPIFFE_ID_PATTERN))]
    pub spiffe_id: Option<String>,
    /// Why, for the audit log.
    #[serde(default)]
    #[schemars(length(max = 1024))]
    pub reason: String,
}
