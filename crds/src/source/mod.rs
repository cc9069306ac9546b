//! Cluster state → bundle files: the controller's pure core (no I/O, no client).
//!
//! The controller builds the same bundle a directory of files would give, through
//! the same loader, validator and namespace rule: one code path, two sources.
//! [`build`] renders the cluster's objects into bundle files, loads them with
//! [`palisade_policy::load_files`], and ends with
//! [`palisade_policy::load_canonical`], so equal inputs give byte-identical
//! snapshots (the same [`SnapshotDigest`](palisade_policy::snapshot::SnapshotDigest))
//! whichever source they came from. YAML files are rendered from the policy
//! crate's own file types, sorted, so the text does not depend on list or watch
//! order.
//!
//! # The mapping
//!
//! | Kubernetes | bundle |
//! | --- | --- |
//! | `MeshConfig` `default` | `mesh.yaml`: `trustDomain`, `outboundMode`, `leafTtl`. None: [`BuildError::NoMeshConfig`], nothing is published (fail closed) |
//! | Pods (not `Succeeded`/`Failed`, not being deleted) | `workloads.yaml`: one entry per identity `spiffe://TD/ns/NS/sa/SA` (`spec.serviceAccountName`, default `default`); labels = the labels of its **Namespace** (minus Kubernetes' own `*kubernetes.io/*`, `*k8s.io/*` and `palisade.dev/*`), plus the pods' labels whose keys the MeshConfig lists in `selfAssertedLabels` and the Namespace does not set (minus controller bookkeeping: `pod-template-hash`, `controller-revision-hash`, …); when the pods of one identity disagree on those, only the labels they all share with one value (the dropped keys are in [`Built::notes`]) |
//! | Services with a selector | `services.yaml`: `namespace`, `name`; `hosts` = annotation `palisade.dev/hosts` (comma-separated: its own cluster names and the names the MeshConfig's `hostDelegations` give its namespace), else `NAME.NS.svc` and `NAME.NS.svc.CLUSTER_DOMAIN`; `ports` = `spec.ports[].port`; `labels` = its labels minus `palisade.dev/*`; `servedBy` = the identities of the live pods its selector picks in its namespace (none: left out, noted); `endpoints` = `IP:PORT` (`[IPv6]:PORT`) of every address of its EndpointSlices (label `kubernetes.io/service-name`) whose `ready` is not `false`, PORT the target pod's `palisade.dev/inbound-port` (default 15006, the sidecar's inbound listener) |
//! | `EgressAllowlist` | one `egress.yaml` entry per host: `ports`, `protocol`, `workloads` = `namespaces: [its namespace]`, its `labels`, `spiffeIds` of its `serviceAccounts` that have a live pod (none: no entry, which matches nothing either) |
//! | `CedarPolicy` | `policies/NS/DIRECTION/NAME.cedar` (`NAME.dry-run.cedar` for `mode: dry-run`), text verbatim ([`policy_file`]) |
//!
//! # What one namespace's objects cannot do to another
//!
//! Whoever may write objects in one namespace must not widen access elsewhere
//! nor stop the bundle for everyone:
//!
//! - **Tags** come from the Namespace, which only cluster administrators label:
//!   a pod cannot give itself `pci: "true"` (only keys listed in
//!   `selfAssertedLabels` are taken from pods).
//! - **Hosts**: a Service may claim its own cluster names and the names
//!   delegated to its namespace; when two Services claim one host the better
//!   right wins (own, exact, wildcard), then the older; claims are settled after
//!   every other cut.
//! - **Size**: each namespace has a budget, and when the whole bundle would be
//!   over the loader's limits, the namespaces furthest over their fair share
//!   are cut first (see [`NAMESPACE_POLICIES`] and the `budget` module).
//! - **Policy ids**: an `@id` that starts with a namespace's name and `-` is
//!   that namespace's when it wants it, so no namespace can keep an id another
//!   is about to use.
//! - **Endpoints**: IP addresses of the Service's own slices only, so no
//!   tenant object costs the loader a diagnostic per entry.
//!
//! # What is invalid is left out, never half-applied
//!
//! When the files do not load, each diagnostic is blamed on what produced it (a
//! YAML diagnostic by the lines its entry was rendered at) and the build retries
//! without it:
//!
//! - a `CedarPolicy`: [`Outcome::Invalid`] with the validator's message as the CLI
//!   prints it, naming the resource and the line and column inside `spec.policy`;
//!   its whole namespace (both directions) keeps its [`LastValid`] set, never a
//!   partial one (dropping a forbid would widen access), and its other policies
//!   are [`Outcome::Held`]. No last valid set yet: no policy, every call to and
//!   from the namespace is denied. Other namespaces update as usual.
//! - an `EgressAllowlist`: invalid, and left out (that narrows access).
//! - a Service or workload entry: left out and noted (not a Palisade resource:
//!   no status).
//! - `mesh.yaml`: [`BuildError::InvalidMeshConfig`].
//!
//! Each round leaves out more, or the build fails with [`BuildError::Invalid`].

mod blame;
mod budget;
mod build;
mod egress;
mod error;
mod last_valid;
mod mesh;
mod policies;
mod render;
mod services;
mod state;
mod verdict;
mod workloads;

#[cfg(test)]
pub(crate) mod test_objects;

pub(crate) use blame::id_owner;
pub use budget::{NAMESPACE_ENTRY_BYTES, NAMESPACE_POLICIES, NAMESPACE_POLICY_BYTES};
pub use build::{build, Built};
pub use error::BuildError;
pub use last_valid::LastValid;
pub use policies::policy_file;
pub(crate) use services::canonical_host;
pub use state::{ClusterState, SourceOptions};
pub use verdict::{Kind, Outcome, Verdict};
pub(crate) use workloads::shared as shared_labels;
