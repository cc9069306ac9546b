//! The webhook's specification: what it admits and refuses (`review`), and the
//! same over real TLS (`tls`).

mod manifest;
mod review;
mod tls;

use std::path::PathBuf;
use std::sync::Arc;

use serde_json::json;

use palisade_ca::TrustDomain;
use palisade_policy::BundleFiles;

use super::{AdmissionRequest, ReviewContext};

/// The shop's trust domain.
fn trust_domain() -> TrustDomain {
    TrustDomain::new("shop.example").unwrap()
}

/// A context with no bundle published yet.
fn no_bundle() -> ReviewContext {
    ReviewContext::new(trust_domain())
}

/// A context whose published bundle holds `policies` (path, text) and a `mesh.yaml`.
fn published(policies: &[(&str, &str)]) -> ReviewContext {
    let mut files = BundleFiles::new();
    files.insert("mesh.yaml", "trustDomain: shop.example\n");
    for (path, text) in policies {
        files.insert(*path, *text);
    }
    no_bundle().with_files(Arc::new(files))
}

/// A CedarPolicy as the API server sends it.
struct Policy<'a> {
    namespace: &'a str,
    name: &'a str,
    direction: &'a str,
    mode: Option<&'a str>,
    text: &'a str,
}

impl<'a> Policy<'a> {
    fn ingress(namespace: &'a str, name: &'a str, text: &'a str) -> Self {
        Self {
            namespace,
            name,
            direction: "ingress",
            mode: None,
            text,
        }
    }

    fn dry_run(self) -> Self {
        Self {
            mode: Some("dry-run"),
            ..self
        }
    }

    fn object(&self) -> serde_json::Value {
        let mut spec = json!({ "direction": self.direction, "policy": self.text });
        if let Some(mode) = self.mode {
            spec["mode"] = json!(mode);
        }
        json!({
            "apiVersion": "palisade.dev/v1alpha1",
            "kind": "CedarPolicy",
            "metadata": { "name": self.name, "namespace": self.namespace, "uid": "0f6c-object" },
            "spec": spec,
        })
    }

    /// The AdmissionReview v1 body of `operation` on this policy.
    fn review(&self, uid: &str, operation: &str) -> serde_json::Value {
        review_of(uid, operation, self.namespace, self.name, Some(self.object()))
    }

    fn request(&self, uid: &str, operation: &str) -> AdmissionRequest {
        let review: super::AdmissionReview = serde_json::from_value(self.review(uid, operation)).unwrap();
        review.request.unwrap()
    }
}

/// An AdmissionReview v1 body about a CedarPolicy, as an API server writes it.
fn review_of(
    uid: &str,
    operation: &str,
    namespace: &str,
    name: &str,
    object: Option<serde_json::Value>,
) -> serde_json::Value {
    json!({
        "apiVersion": "admission.k8s.io/v1",
        "kind": "AdmissionReview",
        "request": {
            "uid": uid,
            "kind": { "group": "palisade.dev", "version": "v1alpha1", "kind": "CedarPolicy" },
            "resource": { "group": "palisade.dev", "version": "v1alpha1", "resource": "cedarpolicies" },
            "requestKind": { "group": "palisade.dev", "version": "v1alpha1", "kind": "CedarPolicy" },
            "name": name,
            "namespace": namespace,
            "operation": operation,
            "userInfo": { "username": "alice", "groups": ["system:authenticated"] },
            "object": object,
            "oldObject": null,
            "dryRun": false,
            "options": { "apiVersion": "meta.k8s.io/v1", "kind": "CreateOptions" },
        }
    })
}

/// payments' PCI ingress policy: valid.
const PCI: &str = r#"@id("payments-charge-from-pci")
permit (
  principal,
  action == Action::"POST",
  resource == Service::"payments/payments"
)
when { principal.hasTag("pci") && principal.getTag("pci") == "true" };
"#;

/// Does not parse: `permit` without its scope's closing parenthesis.
const UNPARSABLE: &str = r#"@id("payments-broken")
permit (
  principal,
  action,
  resource in Namespace::"payments"
;
"#;

/// Parses, but the schema has no attribute `owner` on a service.
const OFF_SCHEMA: &str = r#"@id("payments-owner")
permit (
  principal,
  action,
  resource in Namespace::"payments"
)
when { resource.owner == "finance" };
"#;

/// payments' ingress policy reaching web's services.
const OUTSIDE: &str = r#"@id("payments-reaches-web")
permit (
  principal,
  action,
  resource in Namespace::"web"
);
"#;

/// A directory removed when the test ends.
struct TempDir(PathBuf);

impl TempDir {
    fn new(name: &str) -> Self {
        let dir = std::env::temp_dir().join(format!("palisade-webhook-{}-{name}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        Self(dir)
    }

    fn path(&self, relative: &str) -> PathBuf {
        self.0.join(relative)
    }

    /// Writes `relative` whole at once (a new file renamed over the old), as
    /// the kubelet updates a mounted Secret.
    fn write(&self, relative: &str, text: &str) {
        let staged = self.0.join(format!(".{relative}.new"));
        std::fs::write(&staged, text).unwrap();
        std::fs::rename(staged, self.path(relative)).unwrap();
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}
