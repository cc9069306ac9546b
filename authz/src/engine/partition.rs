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
//! Every registered workload (egress) and service (ingress) gets its own sets: the
//! general policies of its namespace plus its exact ones, less those whose owning
//! side of the scope is false for it, with that side and the action scope settled
//! (see `scope.rs`). Identical sets are built once and shared. A principal or resource
//! the registry does not know gets its namespace's general policies (plus its exact
//! ones, if some policy names it) as written, evaluated against an entity store that
//! does not hold it.
//!
//! Every set is split once more by action: a policy goes to the actions its action
//! scope admits (`action == Action::"GET"`, `action in Action::"http"` through the
//! schema's action hierarchy, or all). Each resulting set comes twice, enforced and
//! dry-run policies apart, and knows what its policies read of the context. A request
//! evaluates exactly the policies whose scope could match it, and nothing is built
//! per request.

use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;

use cedar_policy::{Entities, EntityUid, Policy, PolicyId, PolicySet};

use super::context_reads::Reads;
use super::entities::{service_id, Names};
use super::error::EngineError;
use super::model::{Action, DeterminingPolicy, Direction, Mode, PolicySource, ServiceFacts, WorkloadFacts};
use super::scope::{self, Side};

/// The policy sets one request evaluates.
#[derive(Debug, Default)]
pub(super) struct PolicySets {
    pub(super) enforce: PolicySet,
    /// `None` when no dry-run policy applies, so nothing is evaluated for it.
    pub(super) dry_run: Option<PolicySet>,
    /// What these policies read of the context: all a request needs to build.
    pub(super) reads: Reads,
}

/// One principal's (egress) or resource's (ingress) policy sets, by action.
#[derive(Debug, Default)]
pub(super) struct ByAction {
    get: PolicySets,
    head: PolicySets,
    post: PolicySets,
    put: PolicySets,
    patch: PolicySets,
    delete: PolicySets,
    options: PolicySets,
    connect: PolicySets,
}

impl ByAction {
    pub(super) fn of(&self, action: Action) -> &PolicySets {
        match action {
            Action::Get => &self.get,
            Action::Head => &self.head,
            Action::Post => &self.post,
            Action::Put => &self.put,
            Action::Patch => &self.patch,
            Action::Delete => &self.delete,
            Action::Options => &self.options,
            Action::Connect => &self.connect,
        }
    }

    fn of_mut(&mut self, action: Action) -> &mut PolicySets {
        match action {
            Action::Get => &mut self.get,
            Action::Head => &mut self.head,
            Action::Post => &mut self.post,
            Action::Put => &mut self.put,
            Action::Patch => &mut self.patch,
            Action::Delete => &mut self.delete,
            Action::Options => &mut self.options,
            Action::Connect => &mut self.connect,
        }
    }
}

/// One direction's policy sets for what the registry does not know, by namespace.
#[derive(Debug, Default)]
pub(super) struct Partitions {
    namespaces: HashMap<Box<str>, Partition>,
    /// For a namespace without policies in this direction: default deny.
    empty: Arc<ByAction>,
}

#[derive(Debug, Default)]
struct Partition {
    general: Arc<ByAction>,
    /// Principal SPIFFE ID (egress) or service id `NS/NAME` (ingress) → its sets.
    exact: HashMap<Box<str>, Arc<ByAction>>,
}

impl Partitions {
    /// The sets for `key` (a SPIFFE ID or `NS/NAME`) in `namespace`.
    pub(super) fn sets(&self, namespace: &str, key: &str) -> &Arc<ByAction> {
        match self.namespaces.get(namespace) {
            Some(partition) => partition.exact.get(key).unwrap_or(&partition.general),
            None => &self.empty,
        }
    }
}

/// Everything [`partition`] builds.
#[derive(Debug)]
pub(super) struct Partitioned {
    /// For principals the registry does not know.
    pub(super) egress: Partitions,
    /// For services the registry does not know.
    pub(super) ingress: Partitions,
    /// Registered workload SPIFFE ID → its egress sets.
    pub(super) workloads: HashMap<String, Arc<ByAction>>,
    /// Registered service id `NS/NAME` → its ingress sets.
    pub(super) services: HashMap<String, Arc<ByAction>>,
    /// What each policy id stands for.
    pub(super) policies: HashMap<Box<str>, DeterminingPolicy>,
}

/// What the split needs to know about the snapshot.
#[derive(Debug)]
pub(super) struct Snapshot<'a> {
    pub(super) names: &'a Names,
    /// For the action hierarchy and for settling scopes.
    pub(super) entities: &'a Entities,
    pub(super) workloads: &'a [WorkloadFacts],
    pub(super) services: &'a [ServiceFacts],
}

/// A policy ready to be placed.
struct Placed {
    mode: Mode,
    /// Re-identified by its `@id`, as written: for owners the registry does not know.
    open: Policy,
    /// Its action scope and owning side settled: for registered owners for which
    /// the owning side holds.
    settled: Policy,
    side: Side,
    reads: Reads,
    actions: Vec<Action>,
}

/// A namespace's policies of one direction, before the sets are built.
#[derive(Default)]
struct Group {
    placed: Vec<Placed>,
    general: Vec<usize>,
    exact: BTreeMap<String, Vec<usize>>,
    /// Sets already built for registered owners, by the policies they hold.
    shared: HashMap<Vec<usize>, Arc<ByAction>>,
}

pub(super) fn partition(snapshot: &Snapshot<'_>, sources: &[PolicySource]) -> Result<Partitioned, EngineError> {
    let (mut groups, policies) = group(snapshot, sources)?;
    let mut workloads = HashMap::with_capacity(snapshot.workloads.len());
    for w in snapshot.workloads {
        let uid = snapshot.names.workload(&w.spiffe_id);
        let owner = Owner {
            namespace: &w.namespace,
            key: &w.spiffe_id,
            uid: &uid,
        };
        let sets = for_registered(&mut groups, Direction::Egress, &owner, snapshot.entities)?;
        workloads.insert(w.spiffe_id.clone(), sets);
    }
    let mut services = HashMap::with_capacity(snapshot.services.len());
    for s in snapshot.services {
        let (key, uid) = (
            service_id(&s.namespace, &s.name),
            snapshot.names.service(&s.namespace, &s.name),
        );
        let owner = Owner {
            namespace: &s.namespace,
            key: &key,
            uid: &uid,
        };
        let sets = for_registered(&mut groups, Direction::Ingress, &owner, snapshot.entities)?;
        services.insert(key, sets);
    }
    let mut egress = Partitions::default();
    let mut ingress = Partitions::default();
    for ((direction, namespace), group) in groups {
        let partitions = match direction {
            Direction::Egress => &mut egress,
            Direction::Ingress => &mut ingress,
        };
        partitions
            .namespaces
            .insert(namespace.into(), group.for_unregistered()?);
    }
    Ok(Partitioned {
        egress,
        ingress,
        workloads,
        services,
        policies,
    })
}

/// By direction and owning namespace.
type Groups = BTreeMap<(Direction, String), Group>;

/// Sorts the policies into groups by direction and owning namespace.
fn group(
    snapshot: &Snapshot<'_>,
    sources: &[PolicySource],
) -> Result<(Groups, HashMap<Box<str>, DeterminingPolicy>), EngineError> {
    let mut policies = HashMap::with_capacity(sources.len());
    let mut groups = Groups::new();
    for source in sources {
        let determining = DeterminingPolicy {
            id: source.id.clone(),
            location: source.location.clone(),
        };
        if policies.insert(source.id.as_str().into(), determining).is_some() {
            return Err(EngineError::DuplicatePolicyId(source.id.clone()));
        }
        let policy = source.policy.new_id(PolicyId::new(&source.id));
        let side = Side::of(&policy, source.direction);
        let exact = side.exact_key(snapshot.names, source.direction);
        let pst = policy.to_pst().ok();
        let placed = Placed {
            mode: source.mode,
            reads: pst.as_ref().map_or_else(Reads::all, Reads::of_pst),
            settled: scope::settle(&policy, pst, source.direction),
            side,
            actions: scope::actions(&policy, snapshot.names, snapshot.entities),
            open: policy,
        };
        let group = groups.entry((source.direction, source.namespace.clone())).or_default();
        let index = group.placed.len();
        group.placed.push(placed);
        match exact {
            Some(key) => group.exact.entry(key).or_default().push(index),
            None => group.general.push(index),
        }
    }
    Ok((groups, policies))
}

/// A registered workload (egress) or service (ingress).
struct Owner<'a> {
    namespace: &'a str,
    /// SPIFFE ID or `NS/NAME`.
    key: &'a str,
    uid: &'a EntityUid,
}

/// The sets of a registered owner: its namespace's general and exact policies whose
/// owning side holds for it, settled.
fn for_registered(
    groups: &mut Groups,
    direction: Direction,
    owner: &Owner<'_>,
    entities: &Entities,
) -> Result<Arc<ByAction>, EngineError> {
    let Some(group) = groups.get_mut(&(direction, owner.namespace.to_owned())) else {
        return Ok(Arc::default());
    };
    let own = group.exact.get(owner.key).map_or(&[][..], Vec::as_slice);
    let mut held: Vec<usize> = group.general.iter().chain(own).copied().collect();
    held.retain(|&i| group.placed.get(i).is_some_and(|p| p.side.holds(owner.uid, entities)));
    held.sort_unstable();
    if let Some(sets) = group.shared.get(&held) {
        return Ok(Arc::clone(sets));
    }
    let placed = held.iter().filter_map(|&i| group.placed.get(i));
    let sets = Arc::new(build_sets(placed, |p| &p.settled)?);
    group.shared.insert(held, Arc::clone(&sets));
    Ok(sets)
}

impl Group {
    /// The general sets, and for every exact key the general policies plus its own,
    /// as written.
    fn for_unregistered(self) -> Result<Partition, EngineError> {
        let pick = |indices: &[usize]| indices.iter().filter_map(|&i| self.placed.get(i)).collect::<Vec<_>>();
        let general_placed = pick(&self.general);
        let general = Arc::new(build_sets(general_placed.iter().copied(), |p| &p.open)?);
        let mut exact = HashMap::with_capacity(self.exact.len());
        for (key, own) in &self.exact {
            let placed = general_placed.iter().copied().chain(pick(own));
            exact.insert(key.as_str().into(), Arc::new(build_sets(placed, |p| &p.open)?));
        }
        Ok(Partition { general, exact })
    }
}

fn build_sets<'p>(
    placed: impl Iterator<Item = &'p Placed>,
    form: impl Fn(&'p Placed) -> &'p Policy,
) -> Result<ByAction, EngineError> {
    let mut by_action = ByAction::default();
    // Dry-run policies are gathered in the `enforce` sets of a second `ByAction`,
    // then moved into place as `dry_run`.
    let mut dry_run = ByAction::default();
    for placed in placed {
        let policy = form(placed);
        for &action in &placed.actions {
            let into = match placed.mode {
                Mode::Enforce => by_action.of_mut(action),
                Mode::DryRun => dry_run.of_mut(action),
            };
            into.enforce
                .add(policy.clone())
                .map_err(|source| EngineError::PolicySet {
                    id: policy.id().to_string(),
                    source: Box::new(source),
                })?;
            by_action.of_mut(action).reads.union(&placed.reads);
        }
    }
    for action in Action::ALL {
        let dry = std::mem::take(&mut dry_run.of_mut(action).enforce);
        by_action.of_mut(action).dry_run = (!dry.is_empty()).then_some(dry);
    }
    Ok(by_action)
}
