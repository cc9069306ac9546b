//! Blaming the loader's diagnostics on the objects that produced them, and what
//! is left out of the next round for it.
//!
//! A diagnostic names a file and, for YAML, a line: `mesh.yaml` is the
//! `MeshConfig` (the build fails: there is no bundle without it); a line of
//! `workloads.yaml`, `services.yaml` or `egress.yaml` is the entry rendered there,
//! so its workload, Service or `EgressAllowlist` is left out; a policy file is its
//! `CedarPolicy`, whose namespace falls back to its last valid set, or, when that
//! set is what fails, to no policy at all. Each step only ever removes, so the
//! rounds end.

use std::collections::{BTreeMap, BTreeSet};

use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;
use palisade_policy::bundle::DRY_RUN_SUFFIX;
use palisade_policy::{Diagnostic, Diagnostics, Problem};

use super::build::{PolicyOwner, Round};
use super::policies::resource_ref;
use super::{BuildError, ClusterState};
use crate::resources::CedarPolicy;

/// Which policies a namespace's files are this round.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Standing {
    /// Its current CedarPolicies.
    Current,
    /// Its last valid set: one of its current policies is invalid.
    Held,
    /// None: its last valid set failed too.
    Empty,
}

/// What is left out so far, and why.
#[derive(Debug, Default)]
pub(super) struct Blame {
    pub(super) dropped_workloads: BTreeSet<String>,
    pub(super) dropped_services: BTreeSet<(String, String)>,
    /// Allowlist index → its messages.
    pub(super) invalid_allowlists: BTreeMap<usize, Vec<String>>,
    /// Policy index → its messages.
    pub(super) invalid_policies: BTreeMap<usize, Vec<String>>,
    standings: BTreeMap<String, Standing>,
    /// Namespace → the problems of its last valid set.
    fallback: BTreeMap<String, Vec<String>>,
    pub(super) notes: Vec<String>,
}

impl Blame {
    /// Nothing left out but the policies that cannot be files at all, whose
    /// namespaces are held from the start.
    pub(super) fn new(invalid: &BTreeMap<usize, String>, policies: &[CedarPolicy]) -> Self {
        let mut blame = Self::default();
        for (index, message) in invalid {
            blame.invalid_policies.insert(*index, vec![message.clone()]);
            let namespace = policies.get(*index).and_then(|p| p.metadata.namespace.clone());
            blame.standings.insert(namespace.unwrap_or_default(), Standing::Held);
        }
        blame
    }

    /// Starts `namespace` on `standing` (its policies over budget).
    pub(super) fn hold(&mut self, namespace: &str, standing: Standing) {
        self.standings.insert(namespace.to_owned(), standing);
    }

    /// Which policies `namespace` has this round.
    pub(super) fn standing(&self, namespace: &str) -> Standing {
        self.standings.get(namespace).copied().unwrap_or(Standing::Current)
    }

    /// Why the last valid set of `namespace` failed.
    pub(super) fn fallback_problems(&self, namespace: &str) -> String {
        self.fallback.get(namespace).map(|p| p.join("; ")).unwrap_or_default()
    }

    /// Blames each diagnostic of `round` on its object; whether anything more is
    /// left out now (if not, another round would fail the same way).
    ///
    /// # Errors
    ///
    /// [`BuildError::InvalidMeshConfig`] for a diagnostic in `mesh.yaml`.
    pub(super) fn blame(
        &mut self,
        round: &Round,
        diagnostics: &Diagnostics,
        state: &ClusterState,
    ) -> Result<bool, BuildError> {
        let before = self.progress();
        let refs = policy_refs(round, state);
        let mut demote = BTreeSet::new();
        for diagnostic in diagnostics {
            let line = diagnostic.location().map(|l| l.line);
            let newcomer = newcomer(diagnostic, round, state, &refs);
            let file = newcomer.as_ref().map(|(path, _)| path.as_str()).or(diagnostic.file());
            match file {
                Some("mesh.yaml") => {
                    let message = mesh_message(diagnostic);
                    return Err(BuildError::InvalidMeshConfig { message });
                }
                Some("workloads.yaml") => {
                    if let Some(id) = line.and_then(|l| round.workloads.owner(l)) {
                        self.drop_workload(id, diagnostic);
                    }
                }
                Some("services.yaml") => {
                    if let Some(key) = line.and_then(|l| round.services.owner(l)) {
                        self.drop_service(key, diagnostic);
                    }
                }
                Some("egress.yaml") => {
                    if let Some((index, host)) = line.and_then(|l| round.egress.owner(l)) {
                        let message = allowlist_message(state, *index, host, diagnostic);
                        self.invalid_allowlists.entry(*index).or_default().push(message);
                    }
                }
                Some(path) => match round.policies.get(path) {
                    Some(PolicyOwner::Current(index)) => {
                        let message = match &newcomer {
                            Some((_, message)) => message.clone(),
                            None => rewrite(diagnostic, &refs),
                        };
                        self.invalid_policies.entry(*index).or_default().push(message);
                        let policy = state.policies.get(*index);
                        demote.insert(policy.and_then(|p| p.metadata.namespace.clone()).unwrap_or_default());
                    }
                    Some(PolicyOwner::Held(namespace)) => {
                        let problems = self.fallback.entry(namespace.clone()).or_default();
                        problems.push(diagnostic.problem().to_string());
                        demote.insert(namespace.clone());
                    }
                    None => {}
                },
                None => {}
            }
        }
        for namespace in demote {
            let next = match self.standing(&namespace) {
                Standing::Current => Standing::Held,
                Standing::Held | Standing::Empty => Standing::Empty,
            };
            self.standings.insert(namespace, next);
        }
        Ok(self.progress() > before)
    }

    fn drop_workload(&mut self, id: &str, diagnostic: &Diagnostic) {
        if self.dropped_workloads.insert(id.to_owned()) {
            let problem = diagnostic.problem();
            self.notes.push(format!("workload `{id}` is left out: {problem}"));
        }
    }

    fn drop_service(&mut self, key: &(String, String), diagnostic: &Diagnostic) {
        if self.dropped_services.insert(key.clone()) {
            let ((namespace, name), problem) = (key, diagnostic.problem());
            self.notes
                .push(format!("service `{namespace}/{name}` is left out: {problem}"));
        }
    }

    /// Grows with everything left out.
    fn progress(&self) -> usize {
        let standings = self.standings.values().map(|s| match s {
            Standing::Current => 0,
            Standing::Held => 1,
            Standing::Empty => 2,
        });
        self.dropped_workloads.len()
            + self.dropped_services.len()
            + self.invalid_allowlists.len()
            + standings.sum::<usize>()
    }
}

/// The namespace an `@id` belongs to when two policies want it: the longest of
/// `namespaces` that the id starts with, followed by `-` (`payments-charge` is
/// `payments`'s, also when a namespace `pay` exists). Ids are unique mesh-wide,
/// so without this a tenant could take an id another namespace is about to use
/// and keep that namespace's new policy out. An id nobody else wants is
/// anyone's; when the owner wants it, the other policy is blamed, also when it
/// is in a last valid set (that namespace then has no policy at all).
pub(crate) fn id_owner<'a>(id: &str, namespaces: &BTreeSet<&'a str>) -> Option<&'a str> {
    (namespaces.iter())
        .filter(|ns| id.strip_prefix(**ns).is_some_and(|rest| rest.starts_with('-')))
        .max_by_key(|ns| ns.len())
        .copied()
}

/// For an `@id` used twice, the loader blames the file it read second, in path
/// order. That would let a namespace that sorts first take an `@id` away from
/// another and hold it on its last valid set. The newcomer is blamed instead: a
/// current policy rather than a last valid set, the younger of two current
/// CedarPolicies (by creation time, then namespace and name). `Some` (its path and
/// message) only when that is the file read first.
fn newcomer(
    diagnostic: &Diagnostic,
    round: &Round,
    state: &ClusterState,
    refs: &[(String, String)],
) -> Option<(String, String)> {
    let Problem::DuplicateId { id, first } = diagnostic.problem() else {
        return None;
    };
    let (first_path, second_path) = (first.0.file.as_ref(), diagnostic.file()?);
    let (first_owner, second_owner) = (round.policies.get(first_path)?, round.policies.get(second_path)?);
    // An id that starts with a namespace's name and `-` is that namespace's,
    // whoever used it first.
    let namespaces = state.namespace_names();
    let owner = id_owner(id, &namespaces);
    let namespace_of = |owner: &PolicyOwner| match owner {
        PolicyOwner::Current(index) => state.policies.get(*index).and_then(|p| p.metadata.namespace.clone()),
        PolicyOwner::Held(namespace) => Some(namespace.clone()),
    };
    let owns = |policy: &PolicyOwner| owner.is_some() && namespace_of(policy).as_deref() == owner;
    // Also against a last valid set: else a namespace could keep another's id
    // by holding it in its last valid set.
    let both_held = matches!(
        (first_owner, second_owner),
        (PolicyOwner::Held(_), PolicyOwner::Held(_))
    );
    let by_ownership = !both_held && owns(first_owner) != owns(second_owner);
    let first_is_newcomer = match (first_owner, second_owner) {
        _ if by_ownership => owns(second_owner),
        (PolicyOwner::Current(a), PolicyOwner::Current(b)) => age(state, *a) > age(state, *b),
        (PolicyOwner::Current(_), PolicyOwner::Held(_)) => true,
        (PolicyOwner::Held(_), _) => false,
    };
    if !first_is_newcomer {
        return None;
    }
    let named = |path: &str| {
        let found = refs.iter().find(|(p, _)| p == path);
        found.map_or_else(|| path.to_owned(), |(_, reference)| reference.clone())
    };
    let (location, older) = (&first.0, named(second_path));
    let why = match (by_ownership, owner) {
        (true, Some(owner)) => format!(
            "policy id `{id}` is namespace `{owner}`'s (it starts with `{owner}-`) and {older} uses it; start the ids \
             of this namespace with its own name and `-`"
        ),
        _ => format!("policy id `{id}` is already used by {older}, which is older; give every policy its own `@id`"),
    };
    let message = format!(
        "error: {why}\n --> {}:{}:{}",
        named(first_path),
        location.line,
        location.column
    );
    Some((first_path.to_owned(), message))
}

/// When a CedarPolicy came: its creation time, then namespace and name (a later
/// tuple is younger).
fn age(state: &ClusterState, index: usize) -> (Option<&Time>, &str, &str) {
    let meta = state.policies.get(index).map(|p| &p.metadata);
    let created = meta.and_then(|m| m.creation_timestamp.as_ref());
    let namespace = meta.and_then(|m| m.namespace.as_deref()).unwrap_or_default();
    let name = meta.and_then(|m| m.name.as_deref()).unwrap_or_default();
    (created, namespace, name)
}

/// The problem, and the `spec` field its line renders (`leafTtl: 25h` →
/// `spec.leafTtl`: `mesh.yaml` has the field names of `MeshConfig`'s spec).
fn mesh_message(diagnostic: &Diagnostic) -> String {
    let key = (diagnostic.excerpt())
        .and_then(|e| e.text.split_once(':'))
        .map(|(key, _)| key.trim())
        .filter(|key| !key.is_empty() && key.chars().all(|c| c.is_ascii_alphanumeric()));
    match key {
        Some(key) => format!("{} (`spec.{key}`)", diagnostic.problem()),
        None => diagnostic.problem().to_string(),
    }
}

/// The problem, naming the allowlist and host (the rendered line means nothing
/// to its author).
fn allowlist_message(state: &ClusterState, index: usize, host: &str, diagnostic: &Diagnostic) -> String {
    let meta = state.allowlists.get(index).map(|a| &a.metadata);
    let namespace = meta.and_then(|m| m.namespace.as_deref()).unwrap_or_default();
    let name = meta.and_then(|m| m.name.as_deref()).unwrap_or_default();
    format!(
        "error: {}\n --> EgressAllowlist {namespace}/{name} host `{host}`",
        diagnostic.problem()
    )
}

/// Every policy file of the round and how to name it: its resource and field,
/// longest path first (so no path is replaced inside a longer one).
fn policy_refs(round: &Round, state: &ClusterState) -> Vec<(String, String)> {
    let mut refs: Vec<(String, String)> = (round.policies.iter())
        .map(|(path, owner)| {
            let reference = match owner {
                PolicyOwner::Current(index) => state.policies.get(*index).map(resource_ref).unwrap_or_default(),
                PolicyOwner::Held(namespace) => held_ref(namespace, path),
            };
            (path.clone(), reference)
        })
        .collect();
    refs.sort_by(|a, b| b.0.len().cmp(&a.0.len()).then_with(|| a.0.cmp(&b.0)));
    refs
}

/// A file of a last valid set: the resource it was, in its last valid version.
fn held_ref(namespace: &str, path: &str) -> String {
    let file = path.rsplit('/').next().unwrap_or(path);
    let name = (file.strip_suffix(DRY_RUN_SUFFIX))
        .or_else(|| file.strip_suffix(".cedar"))
        .unwrap_or(file);
    format!("CedarPolicy {namespace}/{name} (last valid version) spec.policy")
}

/// The diagnostic as the CLI prints it, with each policy file named by its
/// resource: ` --> CedarPolicy NS/NAME spec.policy:LINE:COL`.
fn rewrite(diagnostic: &Diagnostic, refs: &[(String, String)]) -> String {
    let text = diagnostic.to_string();
    let lines = text.lines().map(|line| {
        let is_header = line.starts_with("error: ") || line.trim_start().starts_with("--> ");
        if !is_header {
            return line.to_owned();
        }
        refs.iter().fold(line.to_owned(), |line, (path, reference)| {
            line.replace(&format!("--> {path}"), &format!("--> {reference}"))
                .replace(&format!("{path}:"), &format!("{reference}:"))
        })
    });
    lines.collect::<Vec<_>>().join("\n")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_id_belongs_to_the_longest_namespace_it_starts_with() {
        let namespaces = BTreeSet::from(["pay", "pay-ments", "web"]);
        assert_eq!(id_owner("pay-ments-charge", &namespaces), Some("pay-ments"));
        assert_eq!(id_owner("pay-refund", &namespaces), Some("pay"));
        assert_eq!(
            id_owner("payments-x", &namespaces),
            None,
            "a prefix that is not followed by `-`"
        );
        assert_eq!(id_owner("web", &namespaces), None, "the namespace's name alone");
        assert_eq!(id_owner("shared-id", &namespaces), None);
    }
}
