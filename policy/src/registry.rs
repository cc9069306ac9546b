//! The service registry: `workloads.yaml` (who may call) and `services.yaml`
//! (what may be called, and which identities may serve it).
//!
//! ```yaml
//! # workloads.yaml
//! - spiffeId: spiffe://shop.example/ns/checkout/sa/checkout
//!   labels: { app: checkout, pci: "true" }
//!
//! # services.yaml
//! - namespace: payments
//!   name: payments
//!   hosts: [payments.shop, payments.payments.svc]
//!   ports: [8080]
//!   labels: { pci: "true" }
//!   servedBy: [spiffe://shop.example/ns/payments/sa/payments]
//!   endpoints: ["127.0.0.1:15004"]
//! ```

use std::collections::{BTreeMap, HashMap};

use serde::{Deserialize, Serialize};

use palisade_authz::{ServiceFacts, WorkloadFacts};
use palisade_ca::SpiffeId;

use crate::error::{Located, Problem};
use crate::field::{child, child2, Fields};
use crate::yaml::{unique_map, Step};

/// One entry of `workloads.yaml` (a list of them).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct WorkloadEntry {
    /// The workload's SPIFFE ID, in mesh form
    /// `spiffe://<trust domain>/ns/<namespace>/sa/<service account>`; its
    /// namespace and service account are read from it.
    pub spiffe_id: String,
    /// Labels, reachable by policies as tags of the `Workload` entity.
    #[serde(default, deserialize_with = "unique_map")]
    pub labels: BTreeMap<String, String>,
}

/// One entry of `services.yaml` (a list of them).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct ServiceEntry {
    /// The namespace that owns the service (and its ingress policies).
    pub namespace: String,
    /// The service name; `namespace/name` is its Cedar id, `Service::"NS/NAME"`.
    pub name: String,
    /// Host names the service answers to (no port); the first is its canonical
    /// `host` attribute. A host belongs to one service only.
    pub hosts: Vec<String>,
    /// The ports it listens on, 1 to 65535.
    #[serde(deserialize_with = "crate::yaml::ports")]
    pub ports: Vec<i64>,
    /// Labels, reachable by policies as tags of the `Service` entity.
    #[serde(default, deserialize_with = "unique_map")]
    pub labels: BTreeMap<String, String>,
    /// The SPIFFE IDs allowed to serve it: a caller's sidecar refuses a server
    /// presenting any other identity (secure naming). Each must be a workload of
    /// `workloads.yaml`.
    pub served_by: Vec<String>,
    /// Addresses of its sidecars' inbound listeners, `host:port`.
    #[serde(default)]
    pub endpoints: Vec<String>,
}

/// A workload of the registry.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Workload {
    id: SpiffeId,
    namespace: String,
    service_account: String,
    labels: BTreeMap<String, String>,
}

impl Workload {
    /// Its SPIFFE ID.
    pub fn spiffe_id(&self) -> &SpiffeId {
        &self.id
    }

    /// The namespace of its ID.
    pub fn namespace(&self) -> &str {
        &self.namespace
    }

    /// The service account of its ID.
    pub fn service_account(&self) -> &str {
        &self.service_account
    }

    /// Its labels.
    pub fn labels(&self) -> &BTreeMap<String, String> {
        &self.labels
    }

    fn facts(&self) -> WorkloadFacts {
        WorkloadFacts {
            spiffe_id: self.id.to_string(),
            namespace: self.namespace.clone(),
            service_account: self.service_account.clone(),
            labels: self.labels.clone(),
        }
    }
}

/// Where a service's sidecar listens.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Endpoint {
    /// A canonical host name or IP address (IPv6 in brackets).
    pub host: String,
    pub port: u16,
}

/// A service of the registry.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Service {
    namespace: String,
    name: String,
    /// `namespace/name`, made once: proxies use it on every request.
    id: String,
    hosts: Vec<String>,
    ports: Vec<u16>,
    labels: BTreeMap<String, String>,
    served_by: Vec<SpiffeId>,
    endpoints: Vec<Endpoint>,
}

impl Service {
    /// The owning namespace.
    pub fn namespace(&self) -> &str {
        &self.namespace
    }

    /// The name inside the namespace.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// `NAMESPACE/NAME`, its Cedar entity id.
    pub fn id(&self) -> &str {
        &self.id
    }

    /// Its canonical host names, the canonical `host` first; never empty.
    pub fn hosts(&self) -> &[String] {
        &self.hosts
    }

    /// Its ports, sorted; never empty.
    pub fn ports(&self) -> &[u16] {
        &self.ports
    }

    /// Its labels.
    pub fn labels(&self) -> &BTreeMap<String, String> {
        &self.labels
    }

    /// The identities allowed to serve it, sorted; never empty.
    pub fn served_by(&self) -> &[SpiffeId] {
        &self.served_by
    }

    /// Its sidecars' addresses, sorted.
    pub fn endpoints(&self) -> &[Endpoint] {
        &self.endpoints
    }

    fn facts(&self) -> ServiceFacts {
        ServiceFacts {
            namespace: self.namespace.clone(),
            name: self.name.clone(),
            hosts: self.hosts.clone(),
            labels: self.labels.clone(),
        }
    }
}

/// Every workload and service of a bundle; ids, names and hosts unique.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Registry {
    workloads: Vec<Workload>,
    services: Vec<Service>,
}

impl Registry {
    pub(crate) fn new(workloads: BTreeMap<String, Workload>, services: Vec<Service>) -> Self {
        Self {
            workloads: workloads.into_values().collect(),
            services,
        }
    }

    /// The workloads, sorted by SPIFFE ID.
    pub fn workloads(&self) -> &[Workload] {
        &self.workloads
    }

    /// The services, sorted by namespace and name.
    pub fn services(&self) -> &[Service] {
        &self.services
    }

    /// The workload with this SPIFFE ID.
    pub fn workload(&self, spiffe_id: &str) -> Option<&Workload> {
        let found = self.workloads.binary_search_by(|w| w.id.as_str().cmp(spiffe_id));
        found.ok().and_then(|i| self.workloads.get(i))
    }

    /// The service `namespace/name`.
    pub fn service(&self, namespace: &str, name: &str) -> Option<&Service> {
        let key = (namespace, name);
        let found = (self.services).binary_search_by(|s| (s.namespace.as_str(), s.name.as_str()).cmp(&key));
        found.ok().and_then(|i| self.services.get(i))
    }

    /// The service answering to a canonical host name.
    pub fn service_by_host(&self, host: &str) -> Option<&Service> {
        self.services.iter().find(|s| s.hosts.iter().any(|h| h == host))
    }

    pub(crate) fn workload_facts(&self) -> Vec<WorkloadFacts> {
        self.workloads.iter().map(Workload::facts).collect()
    }

    pub(crate) fn service_facts(&self) -> Vec<ServiceFacts> {
        self.services.iter().map(Service::facts).collect()
    }
}

/// Checks the entries of `workloads.yaml`; the valid, unique ones by SPIFFE ID.
pub(crate) fn workloads(entries: &[WorkloadEntry], fields: &mut Fields<'_>) -> BTreeMap<String, Workload> {
    let mut workloads = BTreeMap::new();
    let mut first_index = HashMap::new();
    for (i, entry) in entries.iter().enumerate() {
        let here = [Step::Index(i)];
        let at_id = child(&here, Step::Key("spiffeId"));
        let labels = fields.labels(&entry.labels, &child(&here, Step::Key("labels")));
        let Some(id) = fields.workload_id(&entry.spiffe_id, &at_id) else {
            continue;
        };
        if let Some(first) = first_index.insert(id.to_string(), i) {
            let first = Located(fields.file.yaml_location(&[Step::Index(first)]));
            fields.report(
                Problem::DuplicateWorkload {
                    id: id.to_string(),
                    first,
                },
                &at_id,
            );
            continue;
        }
        let workload = Workload {
            namespace: id.namespace().unwrap_or_default().to_owned(),
            service_account: id.service_account().unwrap_or_default().to_owned(),
            id,
            labels,
        };
        workloads.insert(workload.id.to_string(), workload);
    }
    workloads
}

/// Checks the entries of `services.yaml` (against the workloads of `fields`);
/// the valid, unique ones, sorted.
pub(crate) fn services(entries: &[ServiceEntry], fields: &mut Fields<'_>) -> Vec<Service> {
    let mut services: BTreeMap<(String, String), (usize, Service)> = BTreeMap::new();
    let mut hosts: HashMap<String, String> = HashMap::new();
    for (i, entry) in entries.iter().enumerate() {
        let Some(service) = service(i, entry, fields) else {
            continue;
        };
        let key = (service.namespace.clone(), service.name.clone());
        if let Some((first, _)) = services.get(&key) {
            let first = Located(fields.file.yaml_location(&[Step::Index(*first)]));
            let problem = Problem::DuplicateService {
                id: service.id().to_owned(),
                first,
            };
            fields.report(problem, &[Step::Index(i), Step::Key("name")]);
            continue;
        }
        if claim_hosts(i, &service, &mut hosts, fields) {
            services.insert(key, (i, service));
        }
    }
    services.into_values().map(|(_, service)| service).collect()
}

/// One entry, checked on its own; `None` when anything in it is wrong.
fn service(i: usize, entry: &ServiceEntry, fields: &mut Fields<'_>) -> Option<Service> {
    let errors_before = fields.diagnostics.len();
    let here = [Step::Index(i)];
    let at = |key| child(&here, Step::Key(key));
    let namespace = fields.name("namespace", &entry.namespace, &at("namespace"));
    let name = fields.name("service name", &entry.name, &at("name"));
    let hosts = list(&entry.hosts, &here, "hosts", fields, |fields, raw, path| {
        fields.host(raw, path)
    });
    let ports = fields.ports(&entry.ports, &here, "ports");
    let labels = fields.labels(&entry.labels, &at("labels"));
    let mut served_by = list(&entry.served_by, &here, "servedBy", fields, |fields, raw, at| {
        fields.registered_workload(raw, at)
    });
    let mut endpoints: Vec<Endpoint> = (entry.endpoints.iter().enumerate())
        .filter_map(|(j, raw)| {
            let host = fields.host_and_port(raw, &[Step::Index(i), Step::Key("endpoints"), Step::Index(j)])?;
            Some(Endpoint {
                host: host.name().to_owned(),
                port: host.port()?,
            })
        })
        .collect();
    served_by.sort();
    served_by.dedup();
    endpoints.sort();
    endpoints.dedup();
    if fields.diagnostics.len() > errors_before {
        return None;
    }
    let (namespace, name) = (namespace?, name?);
    Some(Service {
        id: format!("{namespace}/{name}"),
        namespace,
        name,
        hosts,
        ports,
        labels,
        served_by,
        endpoints,
    })
}

/// Whether every host of a new service is free; reports each taken one.
fn claim_hosts(i: usize, service: &Service, taken: &mut HashMap<String, String>, fields: &mut Fields<'_>) -> bool {
    let mut free = true;
    for (j, host) in service.hosts.iter().enumerate() {
        if let Some(owner) = taken.get(host) {
            let problem = Problem::DuplicateHost {
                host: host.clone(),
                service: owner.clone(),
            };
            fields.report(problem, &[Step::Index(i), Step::Key("hosts"), Step::Index(j)]);
            free = false;
        }
    }
    if free {
        for host in &service.hosts {
            taken.insert(host.clone(), service.id().to_owned());
        }
    }
    free
}

/// A non-empty list under `key`, each element checked by `check`.
pub(crate) fn list<T>(
    raw: &[String],
    parent: &[Step<'_>],
    key: &'static str,
    fields: &mut Fields<'_>,
    mut check: impl FnMut(&mut Fields<'_>, &str, &[Step<'_>]) -> Option<T>,
) -> Vec<T> {
    if raw.is_empty() {
        fields.report(Problem::EmptyList { field: key }, &child(parent, Step::Key(key)));
    }
    let mut out = Vec::with_capacity(raw.len());
    for (j, value) in raw.iter().enumerate() {
        out.extend(check(fields, value, &child2(parent, Step::Key(key), Step::Index(j))));
    }
    out
}
