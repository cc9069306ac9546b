//! The labels and annotations Palisade reads on Kubernetes objects, and which
//! pod labels policies never see.
//!
//! Policies read a workload's labels as tags, so only labels people chose reach
//! them: the bookkeeping labels controllers stamp on pods (`pod-template-hash`,
//! `batch.kubernetes.io/job-name`, …) differ from pod to pod of one workload and
//! mean nothing to a policy, and `palisade.dev/*` labels are Palisade's own.

use std::collections::BTreeMap;

/// Every label and annotation key of Palisade starts with this.
pub const PALISADE_PREFIX: &str = "palisade.dev/";

/// Pod label: which workload a pod belongs to (what `palisade policy export`
/// puts on pods and selects Services by). Never seen by policies.
pub const WORKLOAD_LABEL: &str = "palisade.dev/workload";

/// Service annotation: the host names the service answers to, comma-separated
/// (default `NAME.NS.svc` and `NAME.NS.svc.CLUSTER_DOMAIN`).
pub const HOSTS_ANNOTATION: &str = "palisade.dev/hosts";

/// Pod annotation: the port of the sidecar's inbound mTLS listener (default
/// [`DEFAULT_INBOUND_PORT`]).
pub const INBOUND_PORT_ANNOTATION: &str = "palisade.dev/inbound-port";

/// The sidecar's inbound listener port when a pod does not say
/// (`palisade proxy run --inbound`'s default).
pub const DEFAULT_INBOUND_PORT: u16 = 15006;

/// EndpointSlice label: the Service a slice belongs to.
pub const SERVICE_NAME_LABEL: &str = "kubernetes.io/service-name";

/// Pod labels Kubernetes controllers set for their own bookkeeping.
const BOOKKEEPING: [&str; 6] = [
    "pod-template-hash",
    "controller-revision-hash",
    "statefulset.kubernetes.io/pod-name",
    "apps.kubernetes.io/pod-index",
    "job-name",
    "controller-uid",
];

/// Prefixes of bookkeeping labels (every label of the Job controller).
const BOOKKEEPING_PREFIXES: [&str; 1] = ["batch.kubernetes.io/"];

/// Whether policies never see a pod label with this key: controller
/// bookkeeping or `palisade.dev/*`.
pub fn is_hidden_pod_label(key: &str) -> bool {
    is_palisade(key) || BOOKKEEPING.contains(&key) || BOOKKEEPING_PREFIXES.iter().any(|p| key.starts_with(p))
}

/// Whether the key is Palisade's own (`palisade.dev/*`).
pub fn is_palisade(key: &str) -> bool {
    key.starts_with(PALISADE_PREFIX)
}

/// Whether policies never see a Namespace label with this key: Kubernetes' own
/// (`kubernetes.io/metadata.name`, `pod-security.kubernetes.io/enforce`, any
/// `k8s.io` prefix) or `palisade.dev/*`.
pub fn is_hidden_namespace_label(key: &str) -> bool {
    let Some((prefix, _)) = key.split_once('/') else {
        return false;
    };
    is_palisade(key)
        || [".kubernetes.io", ".k8s.io"].iter().any(|s| prefix.ends_with(s))
        || prefix == "kubernetes.io"
        || prefix == "k8s.io"
}

/// A Namespace's labels as policies see them: the tags of its workloads.
pub fn namespace_policy_labels(labels: &BTreeMap<String, String>) -> BTreeMap<String, String> {
    keep(labels, |key| !is_hidden_namespace_label(key))
}

/// A pod's labels as policies see them (when the MeshConfig lets pods assert
/// them).
pub fn pod_policy_labels(labels: &BTreeMap<String, String>) -> BTreeMap<String, String> {
    keep(labels, |key| !is_hidden_pod_label(key))
}

/// A Service's labels as policies see them: all but `palisade.dev/*`.
pub fn service_policy_labels(labels: &BTreeMap<String, String>) -> BTreeMap<String, String> {
    keep(labels, |key| !is_palisade(key))
}

fn keep(labels: &BTreeMap<String, String>, keep: impl Fn(&str) -> bool) -> BTreeMap<String, String> {
    (labels.iter())
        .filter(|(key, _)| keep(key))
        .map(|(key, value)| (key.clone(), value.clone()))
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn controller_bookkeeping_and_palisade_labels_are_hidden_from_policies() {
        let labels: BTreeMap<String, String> = [
            ("app", "web"),
            ("pci", "true"),
            ("pod-template-hash", "7d9f"),
            ("controller-revision-hash", "web-5c"),
            ("statefulset.kubernetes.io/pod-name", "web-0"),
            ("apps.kubernetes.io/pod-index", "0"),
            ("batch.kubernetes.io/job-name", "j"),
            ("batch.kubernetes.io/controller-uid", "u"),
            ("job-name", "j"),
            ("controller-uid", "u"),
            ("palisade.dev/workload", "web"),
        ]
        .into_iter()
        .map(|(k, v)| (k.to_owned(), v.to_owned()))
        .collect();
        let seen: Vec<String> = pod_policy_labels(&labels).into_keys().collect();
        assert_eq!(seen, ["app", "pci"]);
        let service: Vec<String> = service_policy_labels(&labels).into_keys().collect();
        let namespace: BTreeMap<String, String> = [
            ("pci", "true"),
            ("team.example.com/owner", "payments"),
            ("kubernetes.io/metadata.name", "payments"),
            ("pod-security.kubernetes.io/enforce", "restricted"),
            ("x.k8s.io/y", "z"),
            ("palisade.dev/x", "y"),
        ]
        .into_iter()
        .map(|(k, v)| (k.to_owned(), v.to_owned()))
        .collect();
        let seen: Vec<String> = namespace_policy_labels(&namespace).into_keys().collect();
        assert_eq!(seen, ["pci", "team.example.com/owner"]);
        assert!(service.contains(&"pod-template-hash".to_owned()));
        assert!(!service.contains(&"palisade.dev/workload".to_owned()));
    }
}
