//! Pods → `workloads.yaml`: one entry per identity.
//!
//! A pod's identity is `spiffe://TD/ns/NS/sa/SA`, SA its service account
//! (`default` when it names none). Pods that finished (`Succeeded`, `Failed`) or
//! are being deleted are gone already.
//!
//! The labels of an identity are the tags policies read
//! (`principal.getTag("pci")`), so they must come from someone the policy can
//! trust. Whoever may create a pod in a namespace sets its labels, so:
//!
//! - the labels of the identity's **Namespace** (which only cluster
//!   administrators may set; [`crate::labels::namespace_policy_labels`]) are its
//!   tags;
//! - a pod label counts only when the `MeshConfig` lists its key in
//!   `selfAssertedLabels`, and only when the Namespace does not set that key
//!   (the Namespace wins). When the pods of one identity disagree on such a label,
//!   only the labels they all share with one value are kept, so a policy never
//!   grants a pod a label it does not carry. Which keys were dropped is reported.
//!
//! Service selectors still see every pod label: they pick pods within the
//! Service's own namespace.

use std::collections::{BTreeMap, BTreeSet};

use k8s_openapi::api::core::v1::Pod;
use palisade_policy::registry::WorkloadEntry;

use crate::labels::pod_policy_labels;
use crate::source::state::NamespaceLabels;

/// Labels or annotations: key → value.
pub(crate) type Labels = BTreeMap<String, String>;

/// An empty label or annotation map, for objects that have none.
static NONE: BTreeMap<String, String> = BTreeMap::new();

/// A pod that is running or about to.
#[derive(Debug)]
pub(super) struct LivePod<'a> {
    pub(super) namespace: &'a str,
    pub(super) name: &'a str,
    /// Its SPIFFE ID.
    pub(super) identity: String,
    /// All its labels (Service selectors see them all).
    pub(super) labels: &'a BTreeMap<String, String>,
    pub(super) annotations: &'a BTreeMap<String, String>,
}

/// The live pods, by namespace and name.
#[derive(Debug, Default)]
pub(super) struct LivePods<'a>(BTreeMap<&'a str, BTreeMap<&'a str, LivePod<'a>>>);

impl<'a> LivePods<'a> {
    /// The pods that are not finished and not being deleted.
    pub(super) fn new(pods: &'a [Pod], trust_domain: &str) -> Self {
        let mut by_namespace: BTreeMap<&str, BTreeMap<&str, LivePod<'_>>> = BTreeMap::new();
        for pod in pods.iter().filter_map(|pod| live(pod, trust_domain)) {
            by_namespace.entry(pod.namespace).or_default().insert(pod.name, pod);
        }
        Self(by_namespace)
    }

    /// The pod `namespace/name`, when live.
    pub(super) fn get(&self, namespace: &str, name: &str) -> Option<&LivePod<'a>> {
        self.0.get(namespace)?.get(name)
    }

    /// Every live pod, in namespace and name order.
    pub(super) fn iter(&self) -> impl Iterator<Item = &LivePod<'a>> {
        self.0.values().flat_map(BTreeMap::values)
    }

    /// The pods of `namespace` that carry every label of `selector`.
    pub(super) fn selected<'s>(
        &'s self,
        namespace: &'s str,
        selector: &'s BTreeMap<String, String>,
    ) -> impl Iterator<Item = &'s LivePod<'a>> + 's {
        let matches = |pod: &&LivePod<'_>| selector.iter().all(|(k, v)| pod.labels.get(k) == Some(v));
        self.0
            .get(namespace)
            .into_iter()
            .flat_map(BTreeMap::values)
            .filter(matches)
    }
}

fn live<'a>(pod: &'a Pod, trust_domain: &str) -> Option<LivePod<'a>> {
    let meta = &pod.metadata;
    let phase = pod.status.as_ref().and_then(|s| s.phase.as_deref());
    if meta.deletion_timestamp.is_some() || matches!(phase, Some("Succeeded" | "Failed")) {
        return None;
    }
    let namespace = meta.namespace.as_deref()?;
    let service_account = (pod.spec.as_ref())
        .and_then(|spec| spec.service_account_name.as_deref())
        .filter(|sa| !sa.is_empty())
        .unwrap_or("default");
    Some(LivePod {
        namespace,
        name: meta.name.as_deref()?,
        identity: identity(trust_domain, namespace, service_account),
        labels: meta.labels.as_ref().unwrap_or(&NONE),
        annotations: meta.annotations.as_ref().unwrap_or(&NONE),
    })
}

/// The SPIFFE ID of service account `service_account` of `namespace`.
pub(super) fn identity(trust_domain: &str, namespace: &str, service_account: &str) -> String {
    format!("spiffe://{trust_domain}/ns/{namespace}/sa/{service_account}")
}

/// Where an identity's tags come from: its Namespace's labels, and the pod
/// label keys the `MeshConfig` lets pods assert.
#[derive(Debug, Clone, Copy)]
pub(super) struct LabelTrust<'a> {
    pub(super) namespaces: &'a NamespaceLabels,
    pub(super) self_asserted: &'a [String],
}

/// One entry per identity, by SPIFFE ID; and a note per identity whose pods
/// disagree on a self-asserted label.
pub(super) fn workloads(pods: &LivePods<'_>, trust: LabelTrust<'_>) -> (BTreeMap<String, WorkloadEntry>, Vec<String>) {
    // Identity → its namespace and the labels of each of its pods.
    let mut by_id: BTreeMap<&str, (&str, Vec<Labels>)> = BTreeMap::new();
    for pod in pods.iter() {
        let mut labels = pod_policy_labels(pod.labels);
        labels.retain(|key, _| trust.self_asserted.iter().any(|k| k == key));
        let entry = by_id
            .entry(&pod.identity)
            .or_insert_with(|| (pod.namespace, Vec::new()));
        entry.1.push(labels);
    }
    let mut notes = Vec::new();
    let entries = by_id
        .into_iter()
        .map(|(id, (namespace, sets))| {
            let (mut labels, dropped) = shared(&sets.iter().collect::<Vec<_>>());
            if !dropped.is_empty() {
                let keys: Vec<String> = dropped.iter().map(|k| format!("`{k}`")).collect();
                notes.push(format!(
                    "the pods of workload `{id}` disagree on labels {}; policies see only the labels they all share",
                    keys.join(", ")
                ));
            }
            if let Some(trusted) = trust.namespaces.get(namespace) {
                labels.extend(trusted.iter().map(|(k, v)| (k.clone(), v.clone())));
            }
            let entry = WorkloadEntry {
                spiffe_id: id.to_owned(),
                labels,
            };
            (id.to_owned(), entry)
        })
        .collect();
    (entries, notes)
}

/// The labels every set has with one value, and every other key.
pub(crate) fn shared<'a>(sets: &[&'a Labels]) -> (Labels, BTreeSet<&'a String>) {
    let mut shared = sets.first().map(|s| (*s).clone()).unwrap_or_default();
    for set in sets {
        shared.retain(|key, value| set.get(key) == Some(value));
    }
    let dropped = (sets.iter().flat_map(|s| s.keys()))
        .filter(|key| !shared.contains_key(*key))
        .collect();
    (shared, dropped)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::source::test_objects::pod;

    fn trust<'a>(namespaces: &'a NamespaceLabels, self_asserted: &'a [String]) -> LabelTrust<'a> {
        LabelTrust {
            namespaces,
            self_asserted,
        }
    }

    fn labels(pairs: &[(&str, &str)]) -> BTreeMap<String, String> {
        pairs.iter().map(|(k, v)| ((*k).to_owned(), (*v).to_owned())).collect()
    }

    #[test]
    fn pods_of_one_identity_that_disagree_keep_only_the_labels_they_share() {
        let pods = [
            pod(
                "shop",
                "web-1",
                "web",
                &[("app", "web"), ("tier", "a"), ("canary", "yes")],
            ),
            pod("shop", "web-2", "web", &[("app", "web"), ("tier", "b")]),
            pod("shop", "db-1", "db", &[("app", "db"), ("pod-template-hash", "x1")]),
            pod("shop", "db-2", "db", &[("app", "db"), ("pod-template-hash", "x2")]),
        ];
        let live = LivePods::new(&pods, "td");
        let asserted = ["app", "tier", "canary", "pod-template-hash"].map(String::from);
        let (entries, notes) = workloads(&live, trust(&NamespaceLabels::new(), &asserted));
        let web = &entries["spiffe://td/ns/shop/sa/web"];
        assert_eq!(web.labels, labels(&[("app", "web")]));
        assert_eq!(
            notes,
            [
                "the pods of workload `spiffe://td/ns/shop/sa/web` disagree on labels `canary`, `tier`; \
              policies see only the labels they all share"
            ]
        );
        let db = &entries["spiffe://td/ns/shop/sa/db"];
        assert_eq!(db.labels, labels(&[("app", "db")]), "bookkeeping labels never count");
    }

    #[test]
    fn a_pod_cannot_give_itself_a_tag_only_its_namespace_may_give() {
        let pods = [
            pod("web", "frontend-1", "frontend", &[("app", "frontend"), ("pci", "true")]),
            pod(
                "checkout",
                "checkout-1",
                "checkout",
                &[("app", "checkout"), ("pci", "false")],
            ),
        ];
        let live = LivePods::new(&pods, "td");
        let namespaces = NamespaceLabels::from([("checkout".to_owned(), labels(&[("pci", "true")]))]);
        let asserted = ["app".to_owned()];
        let (entries, notes) = workloads(&live, trust(&namespaces, &asserted));
        assert!(notes.is_empty(), "{notes:?}");
        assert_eq!(
            entries["spiffe://td/ns/web/sa/frontend"].labels,
            labels(&[("app", "frontend")]),
            "`pci` is not self-asserted: the pod's own `pci` is not a tag"
        );
        assert_eq!(
            entries["spiffe://td/ns/checkout/sa/checkout"].labels,
            labels(&[("app", "checkout"), ("pci", "true")]),
            "the Namespace's labels are tags"
        );
        let every = ["app".to_owned(), "pci".to_owned()];
        let (entries, _) = workloads(&live, trust(&namespaces, &every));
        assert_eq!(
            entries["spiffe://td/ns/checkout/sa/checkout"].labels["pci"], "true",
            "the Namespace wins over a self-asserted label"
        );
        assert_eq!(entries["spiffe://td/ns/web/sa/frontend"].labels["pci"], "true");
    }

    #[test]
    fn finished_and_terminating_pods_are_not_workloads_and_a_pod_without_account_is_default() {
        let mut done = pod("shop", "job-1", "batch", &[]);
        done.status = Some(k8s_openapi::api::core::v1::PodStatus {
            phase: Some("Succeeded".into()),
            ..Default::default()
        });
        let mut leaving = pod("shop", "old-1", "old", &[]);
        leaving.metadata.deletion_timestamp = Some(k8s_openapi::apimachinery::pkg::apis::meta::v1::Time(
            k8s_openapi::jiff::Timestamp::UNIX_EPOCH,
        ));
        let mut plain = pod("shop", "plain", "", &[]);
        plain.spec = None;
        let pods = [done, leaving, plain];
        let (entries, _) = workloads(&LivePods::new(&pods, "td"), trust(&NamespaceLabels::new(), &[]));
        assert_eq!(entries.keys().collect::<Vec<_>>(), ["spiffe://td/ns/shop/sa/default"]);
    }
}
