//! Policies split, once per snapshot, into the small policy sets one request needs.
//!
//! A direction's policies belong to the namespace that owns them (`policies/NS/…`).
//! Inside a namespace they are split by scope:
//!
//! - egress: a policy whose scope is `principal == Workload::"X"` applies to `X` only;
//!   every other egress policy of the namespace is *general*;
//! - ingress: a policy whose scope is `resource == Service::"NS/N"` applies to that
//!   service only; every other one (`resource in Namespace::"NS"`, …) is general.
//!
//! For every namespace there is one set of its general policies, used by every
//! principal (egress) or resource (ingress) without policies of its own — including
//! those the registry does not know — and one set per exact principal or resource:
//! the general policies plus its own. Each comes twice, enforced policies and dry-run
//! policies apart. A request then evaluates exactly the policies whose scope could
//! match it, and nothing is built per request.

use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;

use cedar_policy::{Policy, PolicyId, PolicySet, PrincipalConstraint, ResourceConstraint};

use super::entities::Names;
use super::error::EngineError;
use super::model::{DeterminingPolicy, Direction, Mode, PolicySource};

/// The policy sets one request evaluates.
#[derive(Debug, Default)]
pub(super) struct PolicySets {
    pub(super) enforce: PolicySet,
    /// `None` when no dry-run policy applies, so nothing is evaluated for it.
    pub(super) dry_run: Option<PolicySet>,
}

/// One direction's policy sets, by owning namespace.
#[derive(Debug, Default)]
pub(super) struct Partitions {
    namespaces: HashMap<Box<str>, Partition>,
    /// For a namespace without policies in this direction: default deny.
    empty: Arc<PolicySets>,
}

#[derive(Debug, Default)]
struct Partition {
    general: Arc<PolicySets>,
    /// Principal SPIFFE ID (egress) or service id `NS/NAME` (ingress) → its sets.
    exact: HashMap<Box<str>, Arc<PolicySets>>,
}

impl Partitions {
    /// The sets for `key` (a SPIFFE ID or `NS/NAME`) in `namespace`.
    pub(super) fn sets(&self, namespace: &str, key: &str) -> &Arc<PolicySets> {
        match self.namespaces.get(namespace) {
            Some(partition) => partition.exact.get(key).unwrap_or(&partition.general),
            None => &self.empty,
        }
    }

    /// Every distinct policy set, for tests and statistics.
    #[cfg(test)]
    pub(super) fn count(&self) -> usize {
        self.namespaces.values().map(|p| 1 + p.exact.len()).sum()
    }
}

/// Both directions' partitions and what each policy id stands for.
#[derive(Debug)]
pub(super) struct Partitioned {
    pub(super) egress: Partitions,
    pub(super) ingress: Partitions,
    pub(super) policies: HashMap<Box<str>, DeterminingPolicy>,
}

/// A namespace's policies of one direction, before the sets are built.
#[derive(Default)]
struct Groups {
    general: Vec<(Mode, Policy)>,
    exact: BTreeMap<String, Vec<(Mode, Policy)>>,
}

pub(super) fn partition(names: &Names, sources: &[PolicySource]) -> Result<Partitioned, EngineError> {
    let mut policies = HashMap::with_capacity(sources.len());
    let mut groups: BTreeMap<(Direction, &str), Groups> = BTreeMap::new();
    for source in sources {
        let determining = DeterminingPolicy {
            id: source.id.clone(),
            location: source.location.clone(),
        };
        if policies.insert(source.id.as_str().into(), determining).is_some() {
            return Err(EngineError::DuplicatePolicyId(source.id.clone()));
        }
        let policy = source.policy.new_id(PolicyId::new(&source.id));
        let group = groups.entry((source.direction, source.namespace.as_str())).or_default();
        let scoped = match scope_key(names, source.direction, &policy) {
            Some(key) => group.exact.entry(key).or_default(),
            None => &mut group.general,
        };
        scoped.push((source.mode, policy));
    }

    let mut egress = Partitions::default();
    let mut ingress = Partitions::default();
    for ((direction, namespace), group) in groups {
        let partitions = match direction {
            Direction::Egress => &mut egress,
            Direction::Ingress => &mut ingress,
        };
        partitions.namespaces.insert(namespace.into(), group.build()?);
    }
    Ok(Partitioned {
        egress,
        ingress,
        policies,
    })
}

/// The exact principal (egress) or resource (ingress) a policy is scoped to, if any.
fn scope_key(names: &Names, direction: Direction, policy: &Policy) -> Option<String> {
    let uid = match direction {
        Direction::Egress => match policy.principal_constraint() {
            PrincipalConstraint::Eq(uid) if names.is_workload(&uid) => uid,
            _ => return None,
        },
        Direction::Ingress => match policy.resource_constraint() {
            ResourceConstraint::Eq(uid) if names.is_service(&uid) => uid,
            _ => return None,
        },
    };
    Some(uid.id().unescaped().to_owned())
}

impl Groups {
    /// The general sets, and for every exact key the general policies plus its own.
    fn build(self) -> Result<Partition, EngineError> {
        let general = Arc::new(build_sets(&self.general, &[])?);
        let mut exact = HashMap::with_capacity(self.exact.len());
        for (key, own) in self.exact {
            let sets = build_sets(&self.general, &own)?;
            exact.insert(key.into_boxed_str(), Arc::new(sets));
        }
        Ok(Partition { general, exact })
    }
}

fn build_sets(general: &[(Mode, Policy)], own: &[(Mode, Policy)]) -> Result<PolicySets, EngineError> {
    let mut enforce = PolicySet::new();
    let mut dry_run = PolicySet::new();
    for (mode, policy) in general.iter().chain(own) {
        let set = match mode {
            Mode::Enforce => &mut enforce,
            Mode::DryRun => &mut dry_run,
        };
        set.add(policy.clone()).map_err(|source| EngineError::PolicySet {
            id: policy.id().to_string(),
            source: Box::new(source),
        })?;
    }
    let dry_run = (!dry_run.is_empty()).then_some(dry_run);
    Ok(PolicySets { enforce, dry_run })
}
