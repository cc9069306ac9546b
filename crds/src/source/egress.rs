//! EgressAllowlists → `egress.yaml`: one entry per host.
//!
//! Each entry's workloads are those of the allowlist's namespace that carry its
//! labels and, when it names service accounts, run as one of them. A service
//! account with no live pod is not a workload yet and matches nothing: its
//! SPIFFE ID is left out (the loader accepts only IDs of `workloads.yaml`), and an
//! allowlist none of whose service accounts has a pod gives no entry at all, which
//! matches nothing either.

use std::collections::{BTreeMap, BTreeSet};

use palisade_policy::egress::HostPattern;

use palisade_policy::egress::{EgressEntry, Protocol, SelectorEntry};

use super::workloads::identity;
use crate::resources::{EgressAllowlist, EgressProtocol};

/// An entry of `egress.yaml` and the allowlist it came from.
#[derive(Debug, Clone)]
pub(super) struct EgressItem {
    /// The allowlist's index in the cluster state.
    pub(super) allowlist: usize,
    pub(super) entry: EgressEntry,
}

/// The entries of every allowlist not in `skip`, in allowlist order; and a note
/// for each allowlist that selects no live workload.
pub(super) fn entries(
    allowlists: &[EgressAllowlist],
    trust_domain: &str,
    workloads: &BTreeSet<&str>,
    skip: &dyn Fn(usize) -> bool,
) -> (Vec<EgressItem>, Vec<String>) {
    let mut notes = Vec::new();
    let mut items = Vec::new();
    for (index, allowlist) in allowlists.iter().enumerate().filter(|(i, _)| !skip(*i)) {
        let Some(namespace) = allowlist.metadata.namespace.as_deref() else {
            continue;
        };
        let spec = &allowlist.spec;
        let accounts = &spec.workloads.service_accounts;
        let spiffe_ids: Vec<String> = (accounts.iter())
            .map(|sa| identity(trust_domain, namespace, sa))
            .filter(|id| workloads.contains(id.as_str()))
            .collect();
        if !accounts.is_empty() && spiffe_ids.is_empty() {
            let name = allowlist.metadata.name.as_deref().unwrap_or_default();
            notes.push(format!(
                "egress allowlist `{namespace}/{name}` selects no workload yet: none of its service accounts runs a pod"
            ));
            continue;
        }
        let selector = SelectorEntry {
            namespaces: vec![namespace.to_owned()],
            labels: spec.workloads.labels.clone(),
            spiffe_ids,
        };
        items.extend(spec.hosts.iter().map(|host| EgressItem {
            allowlist: index,
            entry: EgressEntry {
                host: host.clone(),
                ports: spec.ports.iter().map(|p| i64::from(*p)).collect(),
                protocol: match spec.protocol {
                    EgressProtocol::Http => Protocol::Http,
                    EgressProtocol::Tls => Protocol::Tls,
                },
                workloads: selector.clone(),
            },
        }));
    }
    (items, notes)
}

/// Why the loader would refuse `allowlist`, said once for the whole of it: an
/// empty label key, a host that is not a host name, or a host of a mesh service
/// (`service_hosts`: canonical host → `NS/NAME`). `None` when it is fine.
pub(super) fn refusal(allowlist: &EgressAllowlist, service_hosts: &BTreeMap<String, String>) -> Option<String> {
    let spec = &allowlist.spec;
    if spec.workloads.labels.contains_key("") {
        return Some("a label key of `spec.workloads.labels` is empty; give every label a key".to_owned());
    }
    for host in &spec.hosts {
        // The loader's own rule, so the two never disagree.
        match HostPattern::parse(host) {
            Err(problem) => return Some(format!("`{host}` in `spec.hosts`: {problem}")),
            Ok(HostPattern::Exact(name)) => {
                if let Some(service) = service_hosts.get(&name) {
                    return Some(format!(
                        "`{host}` in `spec.hosts` is a name of the mesh service `{service}`, not an external host; \
                         call the service through the mesh"
                    ));
                }
            }
            Ok(HostPattern::Wildcard { .. }) => {}
        }
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::source::test_objects::allowlist;

    #[test]
    fn each_host_is_an_entry_limited_to_the_allowlists_namespace() {
        let lists = [allowlist(
            "checkout",
            "stripe",
            &["api.stripe.com", "*.stripe.network"],
            &[("pci", "true")],
            &[],
        )];
        let (items, notes) = entries(&lists, "td", &BTreeSet::new(), &|_| false);
        assert!(notes.is_empty());
        let hosts: Vec<&str> = items.iter().map(|i| i.entry.host.as_str()).collect();
        assert_eq!(hosts, ["api.stripe.com", "*.stripe.network"]);
        for item in &items {
            assert_eq!(item.entry.workloads.namespaces, ["checkout"]);
            assert_eq!(item.entry.workloads.labels["pci"], "true");
            assert_eq!(item.entry.ports, [443]);
            assert_eq!(item.entry.protocol, Protocol::Tls);
        }
    }

    #[test]
    fn service_accounts_without_pods_match_nothing() {
        let lists = [
            allowlist("checkout", "some", &["a.example.com"], &[], &["checkout", "ghost"]),
            allowlist("checkout", "none", &["b.example.com"], &[], &["ghost"]),
        ];
        let live = BTreeSet::from(["spiffe://td/ns/checkout/sa/checkout"]);
        let (items, notes) = entries(&lists, "td", &live, &|_| false);
        assert_eq!(
            items.len(),
            1,
            "the allowlist whose only account has no pod gives no entry"
        );
        assert_eq!(
            items[0].entry.workloads.spiffe_ids,
            ["spiffe://td/ns/checkout/sa/checkout"]
        );
        assert_eq!(
            notes,
            ["egress allowlist `checkout/none` selects no workload yet: none of its service accounts runs a pod"]
        );
    }
}
