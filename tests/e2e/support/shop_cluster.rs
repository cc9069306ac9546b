//! The shop in the fake API server: `kubectl apply -f
//! deploy/kubernetes/examples/shop.yaml` (the export of `examples/shop`), with a
//! fake scheduler standing in for the Deployment controller, the kubelet and the
//! EndpointSlice controller: each Deployment runs as one Pod at 127.0.0.1, and
//! each Service gets an EndpointSlice of the Pods it selects (the scheduling of
//! `crds/tests/source/support.rs`, on JSON here). Built by the controller, this
//! cluster is `examples/shop` byte for byte.

use std::path::PathBuf;

use palisade_crds::fake::FakeApiServer;
use palisade_crds::labels::SERVICE_NAME_LABEL;
use palisade_policy::snapshot::SnapshotDigest;
use palisade_policy::BundleFiles;
use serde::Deserialize;
use serde_json::{json, Value};

/// The group and version of Palisade's resources.
pub const PALISADE: &str = "palisade.dev/v1alpha1";

fn root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

/// Applies shop.yaml and schedules its Deployments; the CedarPolicies applied, as
/// `(namespace, name)`.
pub fn apply_shop(api: &FakeApiServer) -> Vec<(String, String)> {
    let yaml = std::fs::read_to_string(root().join("deploy/kubernetes/examples/shop.yaml")).unwrap();
    let mut deployments = Vec::new();
    let mut services = Vec::new();
    let mut policies = Vec::new();
    for document in serde_yaml_ng::Deserializer::from_str(&yaml) {
        let object = Value::deserialize(document).unwrap();
        match object["kind"].as_str().unwrap() {
            // The fake serves only what the controller reads.
            "ServiceAccount" => continue,
            "Deployment" => {
                deployments.push(object);
                continue;
            }
            "Service" => services.push(object.clone()),
            "CedarPolicy" => policies.push((text(&object, "namespace"), text(&object, "name"))),
            _ => {}
        }
        api.apply(object).unwrap();
    }
    let pods: Vec<Value> = deployments.iter().map(schedule).collect();
    for pod in &pods {
        api.apply(pod.clone()).unwrap();
    }
    for service in &services {
        api.apply(endpoint_slice(service, &pods)).unwrap();
    }
    policies
}

/// `examples/shop`'s files, as `palisade policy validate` reads them.
pub fn shop_files() -> BundleFiles {
    palisade_policy::load_with_files(root().join("examples/shop"))
        .unwrap()
        .0
}

/// The digest a control plane serves `files` under: that of their canonical form.
pub fn served_digest(files: &BundleFiles) -> String {
    let (canonical, _) = palisade_policy::load_canonical(files).unwrap();
    SnapshotDigest::of(&canonical).to_string()
}

/// A CedarPolicy of the fake, with another `spec.policy`.
pub fn with_policy(api: &FakeApiServer, namespace: &str, name: &str, text: &str) -> Value {
    let mut policy = api.get(PALISADE, "CedarPolicy", Some(namespace), name).unwrap();
    policy["spec"]["policy"] = json!(text);
    policy
}

/// A condition of a CedarPolicy's status.
pub fn condition(api: &FakeApiServer, namespace: &str, name: &str, type_: &str) -> Option<Value> {
    let policy = api.get(PALISADE, "CedarPolicy", Some(namespace), name)?;
    let conditions = policy.pointer("/status/conditions")?.as_array()?;
    conditions.iter().find(|c| c["type"] == type_).cloned()
}

fn text(object: &Value, field: &str) -> String {
    object["metadata"][field].as_str().unwrap().to_owned()
}

/// One running Pod of the Deployment's template, at 127.0.0.1.
fn schedule(deployment: &Value) -> Value {
    let template = &deployment["spec"]["template"];
    let mut labels = template["metadata"]["labels"].clone();
    labels["pod-template-hash"] = json!("5d8f7c9b4");
    let mut metadata = json!({
        "name": format!("{}-5d8f7c9b4-x2x7q", text(deployment, "name")),
        "namespace": text(deployment, "namespace"),
        "labels": labels,
    });
    if let Some(annotations) = template["metadata"].get("annotations") {
        metadata["annotations"] = annotations.clone();
    }
    json!({
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": metadata,
        "spec": template["spec"],
        "status": {"phase": "Running", "podIP": "127.0.0.1"},
    })
}

/// The EndpointSlice of a Service: one ready endpoint per Pod it selects.
fn endpoint_slice(service: &Value, pods: &[Value]) -> Value {
    let (namespace, name) = (text(service, "namespace"), text(service, "name"));
    let selector = service["spec"]["selector"].as_object().unwrap();
    let selected = pods.iter().filter(|pod| {
        let labels = &pod["metadata"]["labels"];
        text(pod, "namespace") == namespace && selector.iter().all(|(k, v)| &labels[k] == v)
    });
    let endpoints: Vec<Value> = selected
        .map(|pod| {
            json!({
                "addresses": [pod["status"]["podIP"]],
                "conditions": {"ready": true},
                "targetRef": {"kind": "Pod", "name": text(pod, "name"), "namespace": namespace},
            })
        })
        .collect();
    json!({
        "apiVersion": "discovery.k8s.io/v1",
        "kind": "EndpointSlice",
        "metadata": {
            "name": format!("{name}-abc12"),
            "namespace": namespace,
            "labels": {SERVICE_NAME_LABEL: name},
        },
        "addressType": "IPv4",
        "endpoints": endpoints,
    })
}
