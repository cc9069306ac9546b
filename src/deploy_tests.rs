//! The Kubernetes manifests under `deploy/kubernetes/` run real commands with real
//! flags, keep least privilege, and mount no secret into workloads.

use std::path::{Path, PathBuf};

use clap::Parser;
use serde_json::Value;

use crate::cli::Cli;

fn deploy_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("deploy/kubernetes")
}

/// Every document of every YAML file under `dir` (not recursive), with its file name.
fn documents(dir: &Path) -> Vec<(String, Value)> {
    let mut out = Vec::new();
    let mut paths: Vec<PathBuf> = std::fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|e| e == "yaml"))
        .collect();
    paths.sort();
    for path in paths {
        let text = std::fs::read_to_string(&path).unwrap();
        let name = path.file_name().unwrap().to_string_lossy().into_owned();
        for document in serde_yaml_ng::Deserializer::from_str(&text) {
            let value: Value =
                serde::Deserialize::deserialize(document).unwrap_or_else(|e| panic!("{name}: not valid YAML: {e}"));
            if !value.is_null() {
                out.push((name.clone(), value));
            }
        }
    }
    out
}

/// The pod template of a workload document, if it is one.
fn pod_spec(doc: &Value) -> Option<&Value> {
    match doc["kind"].as_str()? {
        "Deployment" | "StatefulSet" | "DaemonSet" => Some(&doc["spec"]["template"]["spec"]),
        "Pod" => Some(&doc["spec"]),
        _ => None,
    }
}

fn palisade_containers(spec: &Value) -> Vec<&Value> {
    let all = spec["containers"]
        .as_array()
        .into_iter()
        .chain(spec["initContainers"].as_array());
    all.flatten()
        .filter(|c| c["image"].as_str().is_some_and(|i| i.contains("palisade")))
        .collect()
}

/// Checks every pod of `docs`: palisade containers' args parse as our CLI,
/// and every container is locked down.
fn check_pods(docs: &[(String, Value)]) -> usize {
    let mut checked = 0;
    for (file, doc) in docs {
        let Some(spec) = pod_spec(doc) else { continue };
        let name = doc["metadata"]["name"].as_str().unwrap_or("?");
        assert_eq!(
            spec["securityContext"]["runAsNonRoot"], true,
            "{file} {name}: runAsNonRoot"
        );
        for container in palisade_containers(spec) {
            let security = &container["securityContext"];
            assert_eq!(
                security["readOnlyRootFilesystem"], true,
                "{file} {name}: read-only root"
            );
            assert_eq!(
                security["allowPrivilegeEscalation"], false,
                "{file} {name}: no escalation"
            );
            let Some(args) = container["args"].as_array() else {
                continue;
            };
            let argv =
                std::iter::once("palisade".to_owned()).chain(args.iter().map(|a| a.as_str().unwrap().to_owned()));
            if let Err(e) = Cli::try_parse_from(argv) {
                panic!("{file} {name}/{}: the args do not parse:\n{e}", container["name"]);
            }
            checked += 1;
        }
    }
    checked
}

#[test]
fn every_palisade_container_runs_a_real_command_locked_down() {
    let docs = documents(&deploy_dir());
    assert!(check_pods(&docs) >= 4, "the CA, audit, control plane and controller");
}

#[test]
fn the_kustomization_lists_every_manifest() {
    let dir = deploy_dir();
    let docs = documents(&dir);
    let kustomization = &docs.iter().find(|(f, _)| f == "kustomization.yaml").unwrap().1;
    let listed: Vec<&str> = kustomization["resources"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| r.as_str().unwrap())
        .collect();
    for (file, _) in &docs {
        if file != "kustomization.yaml" {
            assert!(listed.contains(&file.as_str()), "{file} is not in kustomization.yaml");
        }
    }
    assert!(listed.contains(&"../../crds/manifests"), "the CRDs are part of it");
}

#[test]
fn the_controller_may_read_what_it_watches_and_write_only_status_and_its_lease() {
    let docs = documents(&deploy_dir());
    let rules = |kind: &str, name: &str| -> Vec<Value> {
        docs.iter()
            .filter(|(_, d)| d["kind"] == kind && d["metadata"]["name"] == name)
            .flat_map(|(_, d)| d["rules"].as_array().unwrap().clone())
            .collect()
    };
    let mut rules_seen = rules("ClusterRole", "palisade-controller");
    rules_seen.extend(rules("Role", "palisade-controller-lease"));
    assert!(!rules_seen.is_empty());
    for rule in &rules_seen {
        let verbs: Vec<&str> = rule["verbs"]
            .as_array()
            .unwrap()
            .iter()
            .map(|v| v.as_str().unwrap())
            .collect();
        let resources: Vec<&str> = rule["resources"]
            .as_array()
            .unwrap()
            .iter()
            .map(|v| v.as_str().unwrap())
            .collect();
        let writes = verbs.iter().any(|v| !matches!(*v, "get" | "list" | "watch"));
        if writes {
            let allowed = resources.iter().all(|r| r.ends_with("/status") || *r == "leases");
            assert!(allowed, "the controller may write only status and its lease: {rule}");
            assert!(!verbs.contains(&"delete") && !verbs.contains(&"*"), "{rule}");
        }
        assert!(
            !resources.contains(&"secrets"),
            "the controller reads no secret through the API: {rule}"
        );
    }
}

#[test]
fn the_shop_example_mounts_no_secret_and_its_proxies_parse() {
    let docs = documents(&deploy_dir().join("examples"));
    assert!(check_pods(&docs) >= 8, "an app and a proxy per shop workload");
    for (_, doc) in &docs {
        let Some(spec) = pod_spec(doc) else { continue };
        for volume in spec["volumes"].as_array().into_iter().flatten() {
            assert!(volume.get("secret").is_none(), "a workload mounts no secret: {volume}");
        }
    }
}

/// The workloads (Deployments, StatefulSets) whose pod labels carry every label
/// of `selector`.
fn selected<'a>(docs: &'a [(String, Value)], selector: &Value) -> Vec<&'a Value> {
    let Some(wanted) = selector.as_object() else {
        return Vec::new();
    };
    (docs.iter().map(|(_, d)| d))
        .filter(|d| pod_spec(d).is_some())
        .filter(|d| {
            let labels = &d["spec"]["template"]["metadata"]["labels"];
            wanted.iter().all(|(k, v)| &labels[k] == v)
        })
        .collect()
}

#[test]
fn network_policies_open_only_ports_the_selected_pods_serve_and_budgets_keep_a_replica() {
    let docs = documents(&deploy_dir());
    let policies: Vec<&Value> = (docs.iter().map(|(_, d)| d))
        .filter(|d| d["kind"] == "NetworkPolicy")
        .collect();
    assert!(
        policies
            .iter()
            .any(|p| p["spec"]["podSelector"] == serde_json::json!({}) && p["spec"]["ingress"].is_null()),
        "a default deny for the namespace"
    );
    for policy in policies.iter().filter(|p| !p["spec"]["ingress"].is_null()) {
        let pods = selected(&docs, &policy["spec"]["podSelector"]["matchLabels"]);
        assert_eq!(pods.len(), 1, "{policy}");
        let served: Vec<&Value> = pods[0]["spec"]["template"]["spec"]["containers"]
            .as_array()
            .unwrap()
            .iter()
            .flat_map(|c| c["ports"].as_array().into_iter().flatten())
            .map(|p| &p["containerPort"])
            .collect();
        for rule in policy["spec"]["ingress"].as_array().unwrap() {
            for port in rule["ports"].as_array().unwrap() {
                assert!(
                    served.contains(&&port["port"]),
                    "{policy}: port {} is not served",
                    port["port"]
                );
            }
        }
    }
    let budgets = (docs.iter().map(|(_, d)| d)).filter(|d| d["kind"] == "PodDisruptionBudget");
    for budget in budgets {
        let pods = selected(&docs, &budget["spec"]["selector"]["matchLabels"]);
        assert_eq!(pods.len(), 1, "{budget}");
        let replicas = pods[0]["spec"]["replicas"].as_i64().unwrap_or(1);
        assert!(
            budget["spec"]["minAvailable"].as_i64().unwrap() < replicas,
            "a budget that allows no disruption blocks every drain: {budget}"
        );
    }
}
