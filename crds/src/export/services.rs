//! `services.yaml` entries → Services selecting the pods of the one workload
//! that serves each, with its hosts in the `palisade.dev/hosts` annotation; and
//! each workload's sidecar port, from its services' endpoints.

use std::collections::{BTreeMap, BTreeSet};

use k8s_openapi::api::core::v1::{Service, ServicePort, ServiceSpec};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;
use palisade_ca::SpiffeId;
use palisade_policy::registry::ServiceEntry;

use super::workloads::check_labels;
use super::ExportError;
use crate::labels::{is_palisade, HOSTS_ANNOTATION, WORKLOAD_LABEL};
use crate::source::canonical_host;

/// The Services, the inbound port of each workload (SPIFFE ID) whose services
/// list endpoints, and the hosts each namespace's Services claim beyond their
/// cluster names (which the `MeshConfig` must delegate to it).
#[derive(Debug, Default)]
pub(super) struct Served {
    pub(super) services: Vec<Service>,
    pub(super) inbound_ports: BTreeMap<String, u16>,
    pub(super) delegations: BTreeMap<String, BTreeSet<String>>,
}

/// A Service per entry, in entry order.
pub(super) fn services(entries: &[ServiceEntry]) -> Result<Served, ExportError> {
    let mut served = Served::default();
    let mut ports: BTreeMap<String, BTreeSet<u16>> = BTreeMap::new();
    for entry in entries {
        let (id, service_account) = server(entry)?;
        let what = format!("service `{}/{}`", entry.namespace, entry.name);
        check_labels(&what, &entry.labels, is_palisade)?;
        served.services.push(service(entry, &service_account));
        let delegated = served.delegations.entry(entry.namespace.clone()).or_default();
        for host in &entry.hosts {
            let host = canonical_host(host);
            match cluster_name(&host, &entry.namespace, &entry.name) {
                ClusterName::Own => {}
                ClusterName::Other => {
                    return Err(ExportError::Invalid {
                        what: format!("a host of service `{}/{}`", entry.namespace, entry.name),
                        value: host,
                        hint: "in a cluster a Service answers only to its own cluster names \
                               (`NAME.NS.svc`, `NAME.NS.svc.cluster.local`); remove it or use a name outside `.svc`",
                    });
                }
                ClusterName::No => {
                    delegated.insert(host);
                }
            }
        }
        if delegated.len() > MAX_DELEGATED_HOSTS {
            return Err(ExportError::Invalid {
                what: format!("the number of hosts of the services of namespace `{}`", entry.namespace),
                value: delegated.len().to_string(),
                hint: "a MeshConfig delegates at most 256 hosts to one namespace; use a wildcard domain instead",
            });
        }
        let endpoint_ports = entry
            .endpoints
            .iter()
            .filter_map(|e| e.rsplit_once(':')?.1.parse::<u16>().ok());
        ports.entry(id).or_default().extend(endpoint_ports);
    }
    for (id, ports) in ports {
        let mut iter = ports.iter();
        match (iter.next(), iter.next()) {
            (Some(port), None) => {
                served.inbound_ports.insert(id, *port);
            }
            (Some(_), Some(_)) => {
                let list: Vec<String> = ports.iter().map(|p| format!("`{p}`")).collect();
                return Err(ExportError::InboundPorts {
                    workload: id,
                    ports: list.join(", "),
                });
            }
            _ => {}
        }
    }
    Ok(served)
}

/// The most hosts the MeshConfig's schema lets one delegation hold.
const MAX_DELEGATED_HOSTS: usize = 256;

/// What a (canonical) host is to Service `name` of `namespace`.
enum ClusterName {
    /// One of its own cluster names, which it needs no delegation for.
    Own,
    /// Another Service's cluster name, which it cannot have in a cluster.
    Other,
    /// Not a cluster name: the MeshConfig must delegate it.
    No,
}

fn cluster_name(host: &str, namespace: &str, name: &str) -> ClusterName {
    let own = format!("{name}.{namespace}.svc");
    if host == own || host == format!("{own}.cluster.local") {
        return ClusterName::Own;
    }
    match host.ends_with(".svc") || host.ends_with(".svc.cluster.local") {
        true => ClusterName::Other,
        false => ClusterName::No,
    }
}

/// The one identity serving the entry, of its namespace: (SPIFFE ID, service account).
fn server(entry: &ServiceEntry) -> Result<(String, String), ExportError> {
    let ids: BTreeSet<&String> = entry.served_by.iter().collect();
    let error = |found: String| ExportError::ServedBy {
        service: format!("{}/{}", entry.namespace, entry.name),
        found,
        namespace: entry.namespace.clone(),
    };
    let mut iter = ids.iter();
    let (Some(raw), None) = (iter.next(), iter.next()) else {
        let list: Vec<String> = ids.iter().map(|id| format!("`{id}`")).collect();
        return Err(error(format!("{} workloads ({})", ids.len(), list.join(", "))));
    };
    let id = SpiffeId::parse(raw).map_err(|_| error(format!("`{raw}`")))?;
    match (id.namespace(), id.service_account()) {
        (Some(namespace), Some(account)) if namespace == entry.namespace => Ok(((*raw).clone(), account.to_owned())),
        _ => Err(error(format!("`{raw}` of another namespace"))),
    }
}

fn service(entry: &ServiceEntry, service_account: &str) -> Service {
    let ports = (entry.ports.iter())
        .filter_map(|port| i32::try_from(*port).ok())
        .map(|port| ServicePort {
            name: (entry.ports.len() > 1).then(|| format!("port-{port}")),
            port,
            ..ServicePort::default()
        })
        .collect();
    Service {
        metadata: ObjectMeta {
            name: Some(entry.name.clone()),
            namespace: Some(entry.namespace.clone()),
            labels: (!entry.labels.is_empty()).then(|| entry.labels.clone()),
            annotations: Some([(HOSTS_ANNOTATION.to_owned(), entry.hosts.join(","))].into()),
            ..ObjectMeta::default()
        },
        spec: Some(ServiceSpec {
            selector: Some([(WORKLOAD_LABEL.to_owned(), service_account.to_owned())].into()),
            ports: Some(ports),
            ..ServiceSpec::default()
        }),
        status: None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn entry(served_by: &[&str], endpoints: &[&str]) -> ServiceEntry {
        ServiceEntry {
            namespace: "payments".into(),
            name: "payments".into(),
            hosts: vec!["payments.shop".into(), "payments.payments.svc".into()],
            ports: vec![8080],
            labels: [("pci".to_owned(), "true".to_owned())].into(),
            served_by: served_by.iter().map(|s| (*s).to_owned()).collect(),
            endpoints: endpoints.iter().map(|s| (*s).to_owned()).collect(),
        }
    }

    const PAYMENTS: &str = "spiffe://td/ns/payments/sa/payments";

    #[test]
    fn a_service_selects_its_workload_and_carries_its_hosts() {
        let served = services(&[entry(&[PAYMENTS], &["127.0.0.1:15004", "[::1]:15004"])]).unwrap();
        let service = &served.services[0];
        let annotations = service.metadata.annotations.as_ref().unwrap();
        assert_eq!(annotations[HOSTS_ANNOTATION], "payments.shop,payments.payments.svc");
        let spec = service.spec.as_ref().unwrap();
        assert_eq!(spec.selector.as_ref().unwrap()[WORKLOAD_LABEL], "payments");
        assert_eq!(spec.ports.as_ref().unwrap()[0].port, 8080);
        assert_eq!(served.inbound_ports[PAYMENTS], 15004);
        let delegated: Vec<&String> = served.delegations["payments"].iter().collect();
        assert_eq!(delegated, ["payments.shop"], "its cluster name needs no delegation");
    }

    #[test]
    fn a_service_must_have_one_server_of_its_namespace() {
        for served_by in [
            &[PAYMENTS, "spiffe://td/ns/payments/sa/other"][..],
            &["spiffe://td/ns/web/sa/payments"][..],
        ] {
            let error = services(&[entry(served_by, &[])]).unwrap_err().to_string();
            assert!(
                error.contains("give it exactly one `servedBy` of namespace `payments`"),
                "{error}"
            );
        }
    }

    #[test]
    fn another_services_cluster_name_has_no_cluster_form_and_hosts_are_delegated_canonical() {
        let mut other = entry(&[PAYMENTS], &[]);
        other.hosts = vec!["Payments.Shop.".into(), "checkout.checkout.svc".into()];
        let error = services(&[other]).unwrap_err().to_string();
        assert!(error.contains("`checkout.checkout.svc` is not valid"), "{error}");
        let mut upper = entry(&[PAYMENTS], &[]);
        upper.hosts = vec!["Payments.Shop.".into()];
        let served = services(&[upper]).unwrap();
        let delegated: Vec<&String> = served.delegations["payments"].iter().collect();
        assert_eq!(delegated, ["payments.shop"]);
    }

    #[test]
    fn one_sidecar_has_one_inbound_port() {
        let error = services(&[entry(&[PAYMENTS], &["127.0.0.1:1", "127.0.0.1:2"])]).unwrap_err();
        assert!(error.to_string().contains("ports `1`, `2`"), "{error}");
    }
}
