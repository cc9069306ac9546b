//! The shop as a cluster: `kubectl apply -f` of the exported YAML, a fake
//! scheduler, and helpers to change and inspect what a build gives.

use std::path::PathBuf;

use k8s_openapi::api::apps::v1::Deployment;
use k8s_openapi::api::core::v1::{ObjectReference, Pod, PodStatus, Service};
use k8s_openapi::api::discovery::v1::{Endpoint, EndpointConditions, EndpointSlice};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;
use palisade_crds::export::{export, render_yaml, ExportOptions};
use palisade_crds::labels::SERVICE_NAME_LABEL;
use palisade_crds::resources::{CedarPolicy, MeshConfig};
use palisade_crds::source::{build, Built, ClusterState, Kind, LastValid, Outcome, SourceOptions};
use palisade_policy::load_with_files;
use serde::Deserialize;

pub fn shop_dir() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../examples/shop")
}

/// `kubectl apply -f` of a multi-document YAML, then the fake scheduler.
pub fn apply(yaml: &str) -> ClusterState {
    let mut state = ClusterState::default();
    let mut deployments = Vec::new();
    for document in serde_yaml_ng::Deserializer::from_str(yaml) {
        let value = serde_json::Value::deserialize(document).unwrap();
        let kind = value["kind"].as_str().unwrap().to_owned();
        match kind.as_str() {
            "ServiceAccount" => {}
            "Namespace" => state.namespaces.push(serde_json::from_value(value).unwrap()),
            "MeshConfig" => state.mesh = Some(created(serde_json::from_value::<MeshConfig>(value).unwrap())),
            "Service" => state.services.push(serde_json::from_value(value).unwrap()),
            "Deployment" => deployments.push(serde_json::from_value::<Deployment>(value).unwrap()),
            "CedarPolicy" => state.policies.push(created(serde_json::from_value(value).unwrap())),
            "EgressAllowlist" => state.allowlists.push(created(serde_json::from_value(value).unwrap())),
            other => panic!("unexpected kind {other}"),
        }
    }
    state.pods = deployments.iter().map(schedule).collect();
    state.slices = state.services.iter().map(|s| endpoints(s, &state.pods)).collect();
    state
}

/// What the API server adds to a custom resource: its generation.
fn created<T: kube::Resource>(mut object: T) -> T {
    object.meta_mut().generation = Some(1);
    object
}

/// One running pod of the Deployment's template, at 127.0.0.1.
fn schedule(deployment: &Deployment) -> Pod {
    let template = deployment.spec.as_ref().unwrap().template.clone();
    let meta = template.metadata.unwrap();
    Pod {
        metadata: ObjectMeta {
            name: Some(format!(
                "{}-5d8f7c9b4-x2x7q",
                deployment.metadata.name.as_deref().unwrap()
            )),
            namespace: deployment.metadata.namespace.clone(),
            labels: meta.labels.map(|mut labels| {
                labels.insert("pod-template-hash".into(), "5d8f7c9b4".into());
                labels
            }),
            annotations: meta.annotations,
            ..ObjectMeta::default()
        },
        spec: template.spec,
        status: Some(PodStatus {
            phase: Some("Running".into()),
            pod_ip: Some("127.0.0.1".into()),
            ..PodStatus::default()
        }),
    }
}

/// The EndpointSlice of a Service: one ready endpoint per pod it selects.
fn endpoints(service: &Service, pods: &[Pod]) -> EndpointSlice {
    let selector = service.spec.as_ref().unwrap().selector.clone().unwrap();
    let namespace = service.metadata.namespace.clone();
    let name = service.metadata.name.clone().unwrap();
    let selected = pods.iter().filter(|pod| {
        let labels = pod.metadata.labels.as_ref().unwrap();
        pod.metadata.namespace == namespace && selector.iter().all(|(k, v)| labels.get(k) == Some(v))
    });
    EndpointSlice {
        address_type: "IPv4".into(),
        endpoints: selected
            .map(|pod| Endpoint {
                addresses: vec![pod.status.as_ref().unwrap().pod_ip.clone().unwrap()],
                conditions: Some(EndpointConditions {
                    ready: Some(true),
                    ..EndpointConditions::default()
                }),
                target_ref: Some(ObjectReference {
                    kind: Some("Pod".into()),
                    name: pod.metadata.name.clone(),
                    namespace: namespace.clone(),
                    ..ObjectReference::default()
                }),
                ..Endpoint::default()
            })
            .collect(),
        metadata: ObjectMeta {
            name: Some(format!("{name}-abc12")),
            namespace: namespace.clone(),
            labels: Some([(SERVICE_NAME_LABEL.to_owned(), name)].into()),
            ..ObjectMeta::default()
        },
        ports: None,
    }
}

/// The shop exported, rendered, and applied.
pub fn shop_cluster() -> ClusterState {
    let (files, bundle) = load_with_files(shop_dir()).unwrap();
    let exported = export(&files, &bundle, &ExportOptions::default()).unwrap();
    apply(&render_yaml(&exported).unwrap())
}

pub fn build_ok(state: &ClusterState, last_valid: &LastValid) -> Built {
    build(state, last_valid, &SourceOptions::default()).unwrap()
}

pub fn policy_mut<'a>(state: &'a mut ClusterState, namespace: &str, name: &str) -> &'a mut CedarPolicy {
    let found = state
        .policies
        .iter_mut()
        .find(|p| p.metadata.namespace.as_deref() == Some(namespace) && p.metadata.name.as_deref() == Some(name));
    found.unwrap()
}

pub fn outcome<'a>(built: &'a Built, kind: Kind, namespace: &str, name: &str) -> &'a Outcome {
    let found = built
        .verdicts
        .iter()
        .find(|v| v.kind == kind && v.namespace.as_deref() == Some(namespace) && v.name == name);
    &found.unwrap().outcome
}

pub fn policy_ids(built: &Built, namespace: &str) -> Vec<String> {
    let policies = built.bundle.policies().iter().filter(|p| p.namespace() == namespace);
    policies.map(|p| p.id().to_owned()).collect()
}

/// A policy that does not validate: `Action::"FETCH"` is not in the schema.
pub const BROKEN: &str = "// line 1\n@id(\"payments-broken\")\npermit (\n  principal,\n  action == Action::\"FETCH\",\n  resource in Namespace::\"payments\"\n);\n";
