//! `egress.yaml` entries → EgressAllowlists, one per entry, in the entry's one
//! namespace, named after its host (`*.x.y` → `wildcard.x.y`; `-2`, `-3`, … when
//! a namespace has that name already).

use std::collections::BTreeSet;

use palisade_ca::SpiffeId;
use palisade_policy::egress::{EgressEntry, Protocol};

use super::names::is_allowlist_host;
use super::ExportError;
use crate::resources::{EgressAllowlist, EgressAllowlistSpec, EgressProtocol, WorkloadSelector};

/// An allowlist per entry, in entry order.
pub(super) fn allowlists(entries: &[EgressEntry]) -> Result<Vec<EgressAllowlist>, ExportError> {
    let mut taken = BTreeSet::new();
    let mut out = Vec::with_capacity(entries.len());
    for entry in entries {
        let namespace = namespace(entry)?;
        let service_accounts = service_accounts(entry, &namespace)?;
        if !is_allowlist_host(&entry.host) {
            return Err(ExportError::EgressHost {
                host: entry.host.clone(),
            });
        }
        let spec = EgressAllowlistSpec {
            workloads: WorkloadSelector {
                labels: entry.workloads.labels.clone(),
                service_accounts,
            },
            hosts: vec![entry.host.clone()],
            ports: (entry.ports.iter()).filter_map(|p| u16::try_from(*p).ok()).collect(),
            protocol: match entry.protocol {
                Protocol::Http => EgressProtocol::Http,
                Protocol::Tls => EgressProtocol::Tls,
            },
        };
        let name = unique_name(&namespace, &entry.host, &mut taken);
        let mut allowlist = EgressAllowlist::new(&name, spec);
        allowlist.metadata.namespace = Some(namespace);
        out.push(allowlist);
    }
    Ok(out)
}

/// The entry's one namespace.
fn namespace(entry: &EgressEntry) -> Result<String, ExportError> {
    let namespaces: BTreeSet<&String> = entry.workloads.namespaces.iter().collect();
    let mut iter = namespaces.iter();
    match (iter.next(), iter.next()) {
        (Some(namespace), None) => Ok((*namespace).clone()),
        _ => {
            let found = match namespaces.is_empty() {
                true => "any namespace".to_owned(),
                false => {
                    let list: Vec<String> = namespaces.iter().map(|n| format!("`{n}`")).collect();
                    format!("namespaces {}", list.join(", "))
                }
            };
            Err(ExportError::EgressNamespaces {
                host: entry.host.clone(),
                found,
            })
        }
    }
}

/// The service accounts of the entry's SPIFFE IDs, each of `namespace`.
fn service_accounts(entry: &EgressEntry, namespace: &str) -> Result<Vec<String>, ExportError> {
    let foreign = |id: &str| ExportError::EgressForeignId {
        host: entry.host.clone(),
        id: id.to_owned(),
        namespace: namespace.to_owned(),
    };
    (entry.workloads.spiffe_ids.iter())
        .map(|raw| {
            let id = SpiffeId::parse(raw).map_err(|_| foreign(raw))?;
            match (id.namespace(), id.service_account()) {
                (Some(ns), Some(sa)) if ns == namespace => Ok(sa.to_owned()),
                _ => Err(foreign(raw)),
            }
        })
        .collect()
}

/// The host as a name, with a number when the namespace has it already.
fn unique_name(namespace: &str, host: &str, taken: &mut BTreeSet<(String, String)>) -> String {
    let base = match host.strip_prefix("*.") {
        Some(suffix) => format!("wildcard.{suffix}"),
        None => host.to_owned(),
    };
    let mut name = base.clone();
    let mut n = 1u32;
    while !taken.insert((namespace.to_owned(), name.clone())) {
        n += 1;
        name = format!("{base}-{n}");
    }
    name
}

#[cfg(test)]
mod tests {
    use super::*;
    use palisade_policy::egress::SelectorEntry;

    fn entry(host: &str, namespaces: &[&str], ids: &[&str]) -> EgressEntry {
        EgressEntry {
            host: host.to_owned(),
            ports: vec![443],
            protocol: Protocol::Tls,
            workloads: SelectorEntry {
                namespaces: namespaces.iter().map(|n| (*n).to_owned()).collect(),
                labels: [("pci".to_owned(), "true".to_owned())].into(),
                spiffe_ids: ids.iter().map(|n| (*n).to_owned()).collect(),
            },
        }
    }

    #[test]
    fn each_entry_is_an_allowlist_named_after_its_host() {
        let entries = [
            entry(
                "api.stripe.com",
                &["checkout"],
                &["spiffe://td/ns/checkout/sa/checkout"],
            ),
            entry("*.stripe.com", &["checkout"], &[]),
            entry("api.stripe.com", &["checkout"], &[]),
            entry("api.stripe.com", &["web"], &[]),
        ];
        let lists = allowlists(&entries).unwrap();
        let names: Vec<_> = (lists.iter())
            .map(|l| {
                format!(
                    "{}/{}",
                    l.metadata.namespace.as_deref().unwrap(),
                    l.metadata.name.as_deref().unwrap()
                )
            })
            .collect();
        assert_eq!(
            names,
            [
                "checkout/api.stripe.com",
                "checkout/wildcard.stripe.com",
                "checkout/api.stripe.com-2",
                "web/api.stripe.com"
            ]
        );
        assert_eq!(lists[0].spec.workloads.service_accounts, ["checkout"]);
        assert_eq!(lists[0].spec.workloads.labels["pci"], "true");
        assert_eq!(lists[1].spec.hosts, ["*.stripe.com"]);
    }

    #[test]
    fn an_entry_across_namespaces_must_be_split() {
        for bad in [
            entry("a.example.com", &[], &[]),
            entry("a.example.com", &["web", "checkout"], &[]),
            entry("a.example.com", &["web"], &["spiffe://td/ns/checkout/sa/checkout"]),
        ] {
            let error = allowlists(&[bad]).unwrap_err().to_string();
            assert!(error.contains("split it into one entry per namespace"), "{error}");
        }
    }
}
