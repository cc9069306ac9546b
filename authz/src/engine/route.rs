//! Which entities a request names and which policy sets it evaluates.
//!
//! Egress evaluates the partition of the caller's namespace: the registry's namespace
//! for a registered workload, otherwise the `ns` segment of its SPIFFE ID. Ingress
//! evaluates the partition of the callee service's namespace. External hosts are
//! egress-only. Registered workloads and services have their entity uid and policy
//! sets resolved when the engine is built; everything else is looked up per request
//! with the same rules, so an unregistered principal gets its namespace's general
//! policies — against an entity store that does not know it, which fails closed.

use std::collections::HashMap;
use std::sync::Arc;

use cedar_policy::EntityUid;

use super::entities::{service_id, Names};
use super::error::RequestError;
use super::model::{Direction, ExternalHostFacts, RequestFacts, Resource, ServiceFacts, WorkloadFacts};
use super::partition::{ByAction, Partitioned, Partitions, PolicySets};

/// A registered principal or resource: its uid and the sets it evaluates.
#[derive(Debug)]
struct Known {
    uid: EntityUid,
    sets: Arc<ByAction>,
}

/// The registry as the hot path reads it, keyed so that a lookup allocates nothing.
#[derive(Debug)]
pub(super) struct Registry {
    names: Names,
    /// SPIFFE ID → uid and egress sets.
    workloads: HashMap<Box<str>, Known>,
    /// Namespace → name → uid and ingress sets.
    services: HashMap<Box<str>, HashMap<Box<str>, Known>>,
    /// Hostname → port → uid.
    external_hosts: HashMap<Box<str>, HashMap<u16, EntityUid>>,
    egress: Partitions,
    ingress: Partitions,
}

/// What one request evaluates.
#[derive(Debug)]
pub(super) struct Route<'e> {
    pub(super) principal: EntityUid,
    pub(super) resource: EntityUid,
    pub(super) sets: &'e PolicySets,
}

/// What [`Registry::new`] needs.
#[derive(Debug)]
pub(super) struct RegistryParams<'a> {
    pub(super) names: Names,
    pub(super) workloads: &'a [WorkloadFacts],
    pub(super) services: &'a [ServiceFacts],
    pub(super) external_hosts: &'a [ExternalHostFacts],
    pub(super) partitioned: Partitioned,
}

impl Registry {
    pub(super) fn new(params: RegistryParams<'_>) -> Self {
        let RegistryParams {
            names,
            workloads,
            services,
            external_hosts,
            partitioned,
        } = params;
        let Partitioned {
            egress,
            ingress,
            workloads: egress_sets,
            services: ingress_sets,
            ..
        } = partitioned;
        let workloads = workloads
            .iter()
            .map(|w| {
                let uid = names.workload(&w.spiffe_id);
                let sets = egress_sets.get(&w.spiffe_id).cloned().unwrap_or_default();
                (w.spiffe_id.as_str().into(), Known { uid, sets })
            })
            .collect();
        let mut by_namespace: HashMap<Box<str>, HashMap<Box<str>, Known>> = HashMap::new();
        for s in services {
            let uid = names.service(&s.namespace, &s.name);
            let sets = ingress_sets
                .get(&service_id(&s.namespace, &s.name))
                .cloned()
                .unwrap_or_default();
            let namespace = by_namespace.entry(s.namespace.as_str().into()).or_default();
            namespace.insert(s.name.as_str().into(), Known { uid, sets });
        }
        let mut hosts: HashMap<Box<str>, HashMap<u16, EntityUid>> = HashMap::new();
        for h in external_hosts {
            let uid = names.external_host(&h.hostname, h.port);
            hosts.entry(h.hostname.as_str().into()).or_default().insert(h.port, uid);
        }
        Self {
            names,
            workloads,
            services: by_namespace,
            external_hosts: hosts,
            egress,
            ingress,
        }
    }

    pub(super) fn names(&self) -> &Names {
        &self.names
    }

    /// The principal, the resource and the policy sets of one request.
    pub(super) fn route(&self, direction: Direction, facts: &RequestFacts<'_>) -> Result<Route<'_>, RequestError> {
        let (principal, resource) = (facts.principal, facts.resource);
        match direction {
            Direction::Egress => {
                let (principal, sets) = self.caller(principal)?;
                let sets = sets.of(facts.action);
                Ok(Route {
                    principal,
                    resource: self.resource(resource),
                    sets,
                })
            }
            Direction::Ingress => match resource {
                Resource::Service { namespace, name } => {
                    let (resource, sets) = self.callee(namespace, name);
                    let sets = sets.of(facts.action);
                    Ok(Route {
                        principal: self.principal(principal),
                        resource,
                        sets,
                    })
                }
                Resource::External { hostname, port } => {
                    let hostname = hostname.to_owned();
                    Err(RequestError::IngressToExternal { hostname, port })
                }
            },
        }
    }

    /// The uid of a principal, registered or not.
    pub(super) fn principal(&self, spiffe_id: &str) -> EntityUid {
        match self.workloads.get(spiffe_id) {
            Some(known) => known.uid.clone(),
            None => self.names.workload(spiffe_id),
        }
    }

    /// The uid of a resource, registered or not.
    pub(super) fn resource(&self, resource: Resource<'_>) -> EntityUid {
        match resource {
            Resource::Service { namespace, name } => match self.service(namespace, name) {
                Some(known) => known.uid.clone(),
                None => self.names.service(namespace, name),
            },
            Resource::External { hostname, port } => {
                match self.external_hosts.get(hostname).and_then(|ports| ports.get(&port)) {
                    Some(uid) => uid.clone(),
                    None => self.names.external_host(hostname, port),
                }
            }
        }
    }

    fn caller(&self, spiffe_id: &str) -> Result<(EntityUid, &ByAction), RequestError> {
        if let Some(known) = self.workloads.get(spiffe_id) {
            return Ok((known.uid.clone(), &known.sets));
        }
        let namespace =
            namespace_of(spiffe_id).ok_or_else(|| RequestError::PrincipalWithoutNamespace(spiffe_id.to_owned()))?;
        let sets = self.egress.sets(namespace, spiffe_id);
        Ok((self.names.workload(spiffe_id), sets))
    }

    fn callee(&self, namespace: &str, name: &str) -> (EntityUid, &ByAction) {
        if let Some(known) = self.service(namespace, name) {
            return (known.uid.clone(), &known.sets);
        }
        let sets = self.ingress.sets(namespace, &service_id(namespace, name));
        (self.names.service(namespace, name), sets)
    }

    fn service(&self, namespace: &str, name: &str) -> Option<&Known> {
        self.services.get(namespace)?.get(name)
    }
}

/// The `NAMESPACE` of `spiffe://TRUST-DOMAIN/ns/NAMESPACE/sa/ACCOUNT`, for principals
/// the registry does not list. Anything of another shape has no namespace.
pub(super) fn namespace_of(spiffe_id: &str) -> Option<&str> {
    let path = spiffe_id.strip_prefix("spiffe://")?;
    let mut segments = path.split('/');
    let (_trust_domain, ns, namespace, sa, account) = (
        segments.next()?,
        segments.next()?,
        segments.next()?,
        segments.next()?,
        segments.next()?,
    );
    let shaped = ns == "ns" && sa == "sa" && !namespace.is_empty() && !account.is_empty();
    (shaped && segments.next().is_none()).then_some(namespace)
}
