//! The registry as Cedar entities, built once per snapshot, and the names the hot
//! path needs ready-made.
//!
//! - `Namespace::"NS"` for every namespace a workload, a service or a policy names.
//! - `Workload::"<SPIFFE ID>"` in its namespace, with `spiffeId`, `namespace`,
//!   `serviceAccount`; its labels are tags.
//! - `Service::"NS/NAME"` in its namespace, with `name`, `namespace` and `host` (the
//!   first host name, or `""`); its labels are tags.
//! - `ExternalHost::"HOSTNAME:PORT"` with `hostname` and `port`.
//! - The action entities (`Action::"GET"` in `Action::"http"`, …) come from the schema.

use std::collections::{BTreeMap, BTreeSet};
use std::str::FromStr;

use cedar_policy::{Entities, Entity, EntityId, EntityTypeName, EntityUid, RestrictedExpression, Schema};

use super::error::EngineError;
use super::model::{Action, EngineInput, ExternalHostFacts, ServiceFacts, WorkloadFacts};

/// Entity type names and action ids, parsed once.
#[derive(Debug)]
pub(super) struct Names {
    workload: EntityTypeName,
    service: EntityTypeName,
    external_host: EntityTypeName,
    namespace: EntityTypeName,
    actions: Actions,
}

#[derive(Debug)]
struct Actions {
    get: EntityUid,
    head: EntityUid,
    post: EntityUid,
    put: EntityUid,
    patch: EntityUid,
    delete: EntityUid,
    options: EntityUid,
    connect: EntityUid,
}

impl Names {
    pub(super) fn new() -> Result<Self, EngineError> {
        let action = type_name("Action")?;
        let uid = |id: &str| EntityUid::from_type_name_and_id(action.clone(), EntityId::new(id));
        Ok(Self {
            workload: type_name("Workload")?,
            service: type_name("Service")?,
            external_host: type_name("ExternalHost")?,
            namespace: type_name("Namespace")?,
            actions: Actions {
                get: uid("GET"),
                head: uid("HEAD"),
                post: uid("POST"),
                put: uid("PUT"),
                patch: uid("PATCH"),
                delete: uid("DELETE"),
                options: uid("OPTIONS"),
                connect: uid("connect"),
            },
        })
    }

    pub(super) fn workload(&self, spiffe_id: &str) -> EntityUid {
        uid(&self.workload, spiffe_id)
    }

    pub(super) fn service(&self, namespace: &str, name: &str) -> EntityUid {
        uid(&self.service, &service_id(namespace, name))
    }

    pub(super) fn external_host(&self, hostname: &str, port: u16) -> EntityUid {
        uid(&self.external_host, &external_host_id(hostname, port))
    }

    fn namespace(&self, namespace: &str) -> EntityUid {
        uid(&self.namespace, namespace)
    }

    pub(super) fn is_workload(&self, uid: &EntityUid) -> bool {
        *uid.type_name() == self.workload
    }

    pub(super) fn is_service(&self, uid: &EntityUid) -> bool {
        *uid.type_name() == self.service
    }

    pub(super) fn action(&self, action: Action) -> &EntityUid {
        let actions = &self.actions;
        match action {
            Action::Get => &actions.get,
            Action::Head => &actions.head,
            Action::Post => &actions.post,
            Action::Put => &actions.put,
            Action::Patch => &actions.patch,
            Action::Delete => &actions.delete,
            Action::Options => &actions.options,
            Action::Connect => &actions.connect,
        }
    }
}

fn type_name(name: &'static str) -> Result<EntityTypeName, EngineError> {
    EntityTypeName::from_str(name).map_err(|source| EngineError::Name {
        name,
        source: Box::new(source),
    })
}

fn uid(type_name: &EntityTypeName, id: &str) -> EntityUid {
    EntityUid::from_type_name_and_id(type_name.clone(), EntityId::new(id))
}

/// The entity id of a service: `NAMESPACE/NAME`.
pub(super) fn service_id(namespace: &str, name: &str) -> String {
    format!("{namespace}/{name}")
}

/// The entity id of an external host: `HOSTNAME:PORT`.
pub(super) fn external_host_id(hostname: &str, port: u16) -> String {
    format!("{hostname}:{port}")
}

/// Builds every entity of the snapshot and checks them against the schema.
pub(super) fn build(names: &Names, input: &EngineInput, schema: &Schema) -> Result<Entities, EngineError> {
    let workloads = unique(&input.workloads, |w| w.spiffe_id.clone())?;
    let services = unique(&input.services, |s| service_id(&s.namespace, &s.name))?;
    let external_hosts = unique(&input.external_hosts, |h| external_host_id(&h.hostname, h.port))?;

    let mut entities = Vec::with_capacity(workloads.len() + services.len() + external_hosts.len());
    for namespace in namespaces(input) {
        entities.push(Entity::with_uid(names.namespace(namespace)));
    }
    for workload in workloads.values() {
        entities.push(workload_entity(names, workload)?);
    }
    for service in services.values() {
        entities.push(service_entity(names, service)?);
    }
    for host in external_hosts.values() {
        entities.push(external_host_entity(names, host)?);
    }
    Ok(Entities::from_entities(entities, Some(schema))?)
}

/// Keeps one entry per entity id; the same id with different facts is an error.
fn unique<T: PartialEq>(entries: &[T], id: impl Fn(&T) -> String) -> Result<BTreeMap<String, &T>, EngineError> {
    let mut seen = BTreeMap::new();
    for entry in entries {
        let key = id(entry);
        match seen.get(&key) {
            Some(&earlier) if earlier != entry => return Err(EngineError::DuplicateEntity(key)),
            Some(_) => {}
            None => {
                seen.insert(key, entry);
            }
        }
    }
    Ok(seen)
}

fn namespaces(input: &EngineInput) -> BTreeSet<&str> {
    let workloads = input.workloads.iter().map(|w| w.namespace.as_str());
    let services = input.services.iter().map(|s| s.namespace.as_str());
    let policies = input.policies.iter().map(|p| p.namespace.as_str());
    workloads.chain(services).chain(policies).collect()
}

fn workload_entity(names: &Names, workload: &WorkloadFacts) -> Result<Entity, EngineError> {
    let attrs = [
        string("spiffeId", &workload.spiffe_id),
        string("namespace", &workload.namespace),
        string("serviceAccount", &workload.service_account),
    ];
    let uid = names.workload(&workload.spiffe_id);
    let parents = [names.namespace(&workload.namespace)];
    entity(uid, attrs, parents, labels(&workload.labels))
}

fn service_entity(names: &Names, service: &ServiceFacts) -> Result<Entity, EngineError> {
    let host = service.hosts.first().map_or("", String::as_str);
    let attrs = [
        string("name", &service.name),
        string("namespace", &service.namespace),
        string("host", host),
    ];
    let uid = names.service(&service.namespace, &service.name);
    let parents = [names.namespace(&service.namespace)];
    entity(uid, attrs, parents, labels(&service.labels))
}

fn external_host_entity(names: &Names, host: &ExternalHostFacts) -> Result<Entity, EngineError> {
    let attrs = [
        string("hostname", &host.hostname),
        ("port".to_owned(), RestrictedExpression::new_long(i64::from(host.port))),
    ];
    entity(names.external_host(&host.hostname, host.port), attrs, [], [])
}

fn entity(
    uid: EntityUid,
    attrs: impl IntoIterator<Item = (String, RestrictedExpression)>,
    parents: impl IntoIterator<Item = EntityUid>,
    tags: impl IntoIterator<Item = (String, RestrictedExpression)>,
) -> Result<Entity, EngineError> {
    let id = uid.to_string();
    Entity::new_with_tags(uid, attrs, parents, tags).map_err(|source| EngineError::Entity {
        id,
        source: Box::new(source),
    })
}

fn labels(labels: &BTreeMap<String, String>) -> impl Iterator<Item = (String, RestrictedExpression)> + '_ {
    labels.iter().map(|(key, value)| string(key, value))
}

fn string(key: &str, value: &str) -> (String, RestrictedExpression) {
    (key.to_owned(), RestrictedExpression::new_string(value.to_owned()))
}
