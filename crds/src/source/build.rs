//! [`build`]: cluster state → bundle files → the loader, retried without what
//! is invalid until the rest loads.

use std::collections::{BTreeMap, BTreeSet};

use palisade_policy::registry::{ServiceEntry, WorkloadEntry};
use palisade_policy::snapshot::SnapshotDigest;
use palisade_policy::{load_canonical, load_files, Bundle, BundleFiles};

use super::blame::{Blame, Standing};
use super::budget::{self, Cuts, Part, PolicyCut, Size, Usage};
use super::egress;
use super::policies::{self, PolicyItem};
use super::render::{yaml, Rendered};
use super::services::{self, canonical_host, HostRules, ServiceItem};
use super::workloads::{self, LabelTrust, LivePods};
use super::{mesh, BuildError, ClusterState, Kind, LastValid, Outcome, SourceOptions, Verdict};
use crate::resources::MeshConfig;

/// A bundle built from a cluster, and what became of each resource.
#[derive(Debug, Clone)]
pub struct Built {
    /// The bundle's files in canonical form: what the control plane publishes.
    pub files: BundleFiles,
    /// The loaded bundle.
    pub bundle: Bundle,
    /// The digest of `files`: equal for equal bundles, whatever their source.
    pub digest: SnapshotDigest,
    /// One per `MeshConfig`, `CedarPolicy` and `EgressAllowlist`, by kind,
    /// namespace and name.
    pub verdicts: Vec<Verdict>,
    /// `last_valid`, updated with the namespaces that loaded their current
    /// policies: keep it for the next build.
    pub last_valid: LastValid,
    /// What the controller should log: labels dropped, Services and allowlist
    /// entries left out, and why.
    pub notes: Vec<String>,
}

/// Builds the bundle the cluster state says, through the same loader as a
/// bundle directory ([`palisade_policy::load_files`]), ending with
/// [`palisade_policy::load_canonical`].
///
/// What is invalid is left out and the rest loads: an invalid `CedarPolicy`
/// holds its whole namespace on its `last_valid` set (none yet: no policy, so
/// every call to and from it is denied); an invalid `EgressAllowlist` and a
/// Service the loader refuses are left out (that narrows access). Each round
/// leaves something out or the build fails, so it ends.
///
/// # Errors
///
/// No or an invalid `MeshConfig`, and diagnostics no resource could be blamed for.
pub fn build(state: &ClusterState, last_valid: &LastValid, options: &SourceOptions) -> Result<Built, BuildError> {
    let mesh = state.mesh.as_ref().ok_or(BuildError::NoMeshConfig)?;
    let inputs = Inputs::new(state, mesh, last_valid, options);
    let mut blame = inputs.blame();
    let round = loop {
        let round = inputs.render(&blame)?;
        match load_files(&round.files) {
            Ok(_) => break round,
            Err(diagnostics) => {
                if !blame.blame(&round, &diagnostics, state)? {
                    return Err(BuildError::Invalid(diagnostics));
                }
            }
        }
    };
    let (files, bundle) = load_canonical(&round.files).map_err(BuildError::Invalid)?;
    let mut notes = inputs.notes.clone();
    notes.extend(blame.notes.iter().cloned());
    notes.extend(round.notes);
    Ok(Built {
        digest: SnapshotDigest::of(&files),
        files,
        bundle,
        verdicts: inputs.verdicts(&blame),
        last_valid: inputs.updated(&blame),
        notes,
    })
}

/// What does not change from round to round.
struct Inputs<'a> {
    state: &'a ClusterState,
    mesh: &'a MeshConfig,
    last_valid: &'a LastValid,
    workloads: BTreeMap<String, WorkloadEntry>,
    services: Vec<ServiceItem>,
    /// Policy files by namespace (every namespace with a policy or a last valid set).
    policies: BTreeMap<&'a str, Vec<PolicyItem<'a>>>,
    /// Policies that cannot be files at all, with why.
    policy_invalid: BTreeMap<usize, String>,
    /// What namespaces over their budget lose.
    cuts: Cuts,
    notes: Vec<String>,
}

/// One round's files, and who produced each part of them.
#[derive(Debug)]
pub(super) struct Round {
    pub(super) files: BundleFiles,
    pub(super) workloads: Rendered<String>,
    pub(super) services: Rendered<(String, String)>,
    pub(super) egress: Rendered<(usize, String)>,
    /// Policy path → who it came from.
    pub(super) policies: BTreeMap<String, PolicyOwner>,
    notes: Vec<String>,
}

/// Where a policy file of a round came from.
#[derive(Debug, Clone)]
pub(super) enum PolicyOwner {
    /// The CedarPolicy of this index.
    Current(usize),
    /// The last valid set of this namespace.
    Held(String),
}

impl<'a> Inputs<'a> {
    fn new(state: &'a ClusterState, mesh: &'a MeshConfig, last_valid: &'a LastValid, options: &SourceOptions) -> Self {
        let pods = LivePods::new(&state.pods, &mesh.spec.trust_domain);
        let namespaces = state.namespace_labels();
        let trust = LabelTrust {
            namespaces: &namespaces,
            self_asserted: &mesh.spec.self_asserted_labels,
        };
        let (workloads, mut notes) = workloads::workloads(&pods, trust);
        let rules = HostRules {
            options,
            delegations: &mesh.spec.host_delegations,
        };
        let (services, service_notes) = services::services(&state.services, &state.slices, &pods, &rules);
        notes.extend(service_notes);
        let (mut policies, policy_invalid) = policies::items(&state.policies);
        for namespace in last_valid.namespaces() {
            policies.entry(namespace).or_default();
        }
        let mut inputs = Self {
            state,
            mesh,
            last_valid,
            workloads,
            services,
            policies,
            policy_invalid,
            cuts: Cuts::default(),
            notes,
        };
        inputs.cuts = budget::plan(&inputs.usage());
        inputs.leave_out_what_is_over_budget();
        inputs
    }

    /// What each namespace contributes to the bundle.
    fn usage(&self) -> BTreeMap<String, Usage> {
        let mut usage: BTreeMap<String, Usage> = BTreeMap::new();
        for (id, entry) in &self.workloads {
            usage.entry(namespace_of(id)).or_default().workloads += size("workloads.yaml", entry);
        }
        for item in &self.services {
            usage.entry(item.key.0.clone()).or_default().services += size("services.yaml", &item.entry);
        }
        let live: BTreeSet<&str> = self.workloads.keys().map(String::as_str).collect();
        let (entries, _) = egress::entries(&self.state.allowlists, &self.mesh.spec.trust_domain, &live, &|_| false);
        for item in &entries {
            let namespace = (self.state.allowlists.get(item.allowlist)).and_then(|a| a.metadata.namespace.clone());
            usage.entry(namespace.unwrap_or_default()).or_default().egress += size("egress.yaml", &item.entry);
        }
        for (namespace, items) in &self.policies {
            let used = usage.entry((*namespace).to_owned()).or_default();
            used.policies = Size {
                files: items.len(),
                bytes: items.iter().map(|i| i.text.len()).sum(),
            };
            used.held = (self.held_files(namespace)).fold(Size::default(), |size, (_, text)| Size {
                files: size.files + 1,
                bytes: size.bytes + text.len(),
            });
        }
        usage
    }

    /// Leaves out the workloads and Services of namespaces over their budget
    /// (their policies and allowlists are the blame's, see [`Self::blame`]).
    fn leave_out_what_is_over_budget(&mut self) {
        let cuts = &self.cuts;
        let notes = &mut self.notes;
        self.workloads.retain(|id, _| {
            let namespace = namespace_of(id);
            let Some(why) = cuts.reason(&namespace, Part::Workloads) else {
                return true;
            };
            notes.push(format!("workload `{id}` is left out: {why}"));
            false
        });
        self.services.retain(|item| {
            let (namespace, name) = &item.key;
            let Some(why) = cuts.reason(namespace, Part::Services) else {
                return true;
            };
            notes.push(format!("service `{namespace}/{name}` is left out: {why}"));
            false
        });
    }

    /// The blame to start from: the policies that cannot be files, the
    /// namespaces whose policies are over budget, and the allowlists of those
    /// whose allowlist entries are.
    fn blame(&self) -> Blame {
        let mut blame = Blame::new(&self.policy_invalid, &self.state.policies);
        let service_hosts: BTreeMap<String, String> = (self.services.iter())
            .flat_map(|item| {
                let id = format!("{}/{}", item.key.0, item.key.1);
                (item.entry.hosts.iter()).map(move |host| (canonical_host(host), id.clone()))
            })
            .collect();
        for (namespace, (cut, _)) in &self.cuts.policies {
            let standing = match cut {
                PolicyCut::Held => Standing::Held,
                PolicyCut::Empty => Standing::Empty,
            };
            blame.hold(namespace, standing);
        }
        for (index, allowlist) in self.state.allowlists.iter().enumerate() {
            let namespace = allowlist.metadata.namespace.as_deref().unwrap_or_default();
            if let Some(why) = self.cuts.reason(namespace, Part::Egress) {
                blame.invalid_allowlists.insert(index, vec![format!("error: {why}")]);
            } else if let Some(why) = egress::refusal(allowlist, &service_hosts) {
                // Refused here, once, rather than by the loader once per host
                // (each of its diagnostics reads the whole file again).
                blame.invalid_allowlists.insert(index, vec![format!("error: {why}")]);
            }
        }
        blame
    }

    /// The files, leaving out what `blame` decided.
    fn render(&self, blame: &Blame) -> Result<Round, BuildError> {
        let mut files = BundleFiles::new();
        files.insert("mesh.yaml", yaml("mesh.yaml", &mesh::file(&self.mesh.spec))?);
        let workloads = (self.workloads.iter()).filter(|(id, _)| !blame.dropped_workloads.contains(*id));
        let workloads = Rendered::list("workloads.yaml", workloads.map(|(id, entry)| (id.clone(), entry)))?;
        let live: BTreeSet<&str> = (self.workloads.keys())
            .filter(|id| !blame.dropped_workloads.contains(*id))
            .map(String::as_str)
            .collect();
        // A Service is served only by workloads this round has (the loader would
        // refuse any other); one that none serves is left out before the hosts
        // are settled, so it takes no host from another.
        let mut claim_notes = Vec::new();
        let mut served: Vec<ServiceItem> = Vec::new();
        for item in (self.services.iter()).filter(|s| !blame.dropped_services.contains(&s.key)) {
            let mut item = item.clone();
            item.entry.served_by.retain(|id| live.contains(id.as_str()));
            if item.entry.served_by.is_empty() {
                let (namespace, name) = &item.key;
                claim_notes.push(format!(
                    "service `{namespace}/{name}` is left out: none of the workloads that serve it is in the bundle"
                ));
                continue;
            }
            served.push(item);
        }
        let (kept, settled) = services::claim_hosts(served.iter());
        claim_notes.extend(settled);
        let services: Vec<((String, String), ServiceEntry)> = (served.into_iter())
            .filter(|s| kept.contains(&s.key))
            .map(|s| (s.key, s.entry))
            .collect();
        let services = Rendered::list(
            "services.yaml",
            services.iter().map(|(key, entry)| (key.clone(), entry)),
        )?;
        let skip = |i: usize| blame.invalid_allowlists.contains_key(&i);
        let trust_domain = &self.mesh.spec.trust_domain;
        let (entries, mut notes) = egress::entries(&self.state.allowlists, trust_domain, &live, &skip);
        notes.extend(claim_notes);
        let owned = entries
            .iter()
            .map(|item| ((item.allowlist, item.entry.host.clone()), &item.entry));
        let egress = Rendered::list("egress.yaml", owned)?;
        for (name, rendered) in [("workloads.yaml", &workloads.text), ("services.yaml", &services.text)] {
            if !rendered.is_empty() {
                files.insert(name, rendered.clone());
            }
        }
        if !egress.is_empty() {
            files.insert("egress.yaml", egress.text.clone());
        }
        let policies = self.policy_files(blame, &mut files);
        Ok(Round {
            files,
            workloads,
            services,
            egress,
            policies,
            notes,
        })
    }

    /// Each namespace's policy files as its standing says: its current ones, its
    /// last valid ones, or none.
    fn policy_files(&self, blame: &Blame, files: &mut BundleFiles) -> BTreeMap<String, PolicyOwner> {
        let mut owners = BTreeMap::new();
        for (namespace, items) in &self.policies {
            match blame.standing(namespace) {
                Standing::Current => {
                    for item in items {
                        files.insert(item.path.clone(), item.text);
                        owners.insert(item.path.clone(), PolicyOwner::Current(item.index));
                    }
                }
                Standing::Held => {
                    for (path, text) in self.held_files(namespace) {
                        files.insert(path.clone(), text.clone());
                        owners.insert(path.clone(), PolicyOwner::Held((*namespace).to_owned()));
                    }
                }
                Standing::Empty => {}
            }
        }
        owners
    }

    /// The last valid files of `namespace` (only those inside it).
    fn held_files(&self, namespace: &str) -> impl Iterator<Item = (&String, &String)> {
        let prefix = format!("policies/{namespace}/");
        (self.last_valid.files(namespace).into_iter().flatten()).filter(move |(path, _)| path.starts_with(&prefix))
    }

    /// A verdict per Palisade resource.
    fn verdicts(&self, blame: &Blame) -> Vec<Verdict> {
        let mut verdicts = vec![verdict(Kind::MeshConfig, &self.mesh.metadata, Outcome::Accepted)];
        for (index, policy) in self.state.policies.iter().enumerate() {
            let namespace = policy.metadata.namespace.as_deref().unwrap_or_default();
            let outcome = self.policy_outcome(blame, index, namespace);
            verdicts.push(verdict(Kind::CedarPolicy, &policy.metadata, outcome));
        }
        for (index, allowlist) in self.state.allowlists.iter().enumerate() {
            let outcome = match blame.invalid_allowlists.get(&index) {
                Some(messages) => Outcome::Invalid {
                    message: messages.join("\n\n"),
                },
                None => Outcome::Accepted,
            };
            verdicts.push(verdict(Kind::EgressAllowlist, &allowlist.metadata, outcome));
        }
        verdicts.sort_by(|a, b| (a.kind, &a.namespace, &a.name).cmp(&(b.kind, &b.namespace, &b.name)));
        verdicts
    }

    /// Invalid, or held with why, or accepted.
    fn policy_outcome(&self, blame: &Blame, index: usize, namespace: &str) -> Outcome {
        if let Some(messages) = blame.invalid_policies.get(&index) {
            return Outcome::Invalid {
                message: messages.join("\n\n"),
            };
        }
        if let Some(why) = self.cuts.reason(namespace, Part::Policies) {
            let held = match blame.standing(namespace) {
                Standing::Held if self.held_files(namespace).next().is_some() => {
                    "it keeps its last valid policy set".to_owned()
                }
                _ => "none of its policies apply and every call to and from it is denied".to_owned(),
            };
            return Outcome::Held {
                message: format!("not in effect: {why}; until then {held}"),
            };
        }
        let invalid: Vec<String> = (blame.invalid_policies.keys())
            .filter_map(|i| self.state.policies.get(*i))
            .filter(|p| p.metadata.namespace.as_deref() == Some(namespace))
            .map(|p| format!("`{namespace}/{}`", p.metadata.name.as_deref().unwrap_or_default()))
            .collect();
        let invalid = format!("CedarPolicy {} is invalid", invalid.join(", "));
        let message = match blame.standing(namespace) {
            Standing::Current => return Outcome::Accepted,
            Standing::Held if self.held_files(namespace).next().is_some() => format!(
                "not in effect yet: namespace `{namespace}` keeps its last valid policy set because {invalid}; \
                 fix it and this policy applies"
            ),
            Standing::Held => format!(
                "not in effect: namespace `{namespace}` has no valid policy set yet and {invalid}, so none of its \
                 policies apply and every call to and from it is denied; fix it and this policy applies"
            ),
            Standing::Empty => format!(
                "not in effect: {invalid}, and the last valid policy set of namespace `{namespace}` no longer loads \
                 ({}), so none of its policies apply and every call to and from it is denied; fix it and this \
                 policy applies",
                blame.fallback_problems(namespace)
            ),
        };
        Outcome::Held { message }
    }

    /// `last_valid`, with the namespaces that loaded their current policies.
    fn updated(&self, blame: &Blame) -> LastValid {
        let mut last_valid = self.last_valid.clone();
        for (namespace, items) in &self.policies {
            if matches!(blame.standing(namespace), Standing::Current) {
                let files = items.iter().map(|i| (i.path.clone(), i.text.to_owned())).collect();
                last_valid.record(namespace, files);
            }
        }
        last_valid
    }
}

/// The bytes `entry` takes in the YAML list `file`.
fn size<T: serde::Serialize>(file: &'static str, entry: &T) -> usize {
    yaml(file, std::slice::from_ref(entry)).map_or(0, |text| text.len())
}

/// The namespace of a workload's SPIFFE ID (`spiffe://TD/ns/NS/sa/SA`).
fn namespace_of(id: &str) -> String {
    let id = palisade_ca::SpiffeId::parse(id).ok();
    id.as_ref().and_then(|id| id.namespace()).unwrap_or_default().to_owned()
}

fn verdict(kind: Kind, meta: &k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta, outcome: Outcome) -> Verdict {
    Verdict {
        kind,
        namespace: meta.namespace.clone(),
        name: meta.name.clone().unwrap_or_default(),
        generation: meta.generation,
        outcome,
    }
}
