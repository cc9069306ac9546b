//! A bundle → the equivalent Kubernetes objects: `palisade policy export DIR
//! --format crds`, the inverse of [`crate::source`].
//!
//! Applying what [`export`] gives to a cluster (with the Palisade controller
//! running) yields the bundle it came from: the same snapshot digest. What has no
//! faithful Kubernetes form is an [`ExportError`] naming the file and what to
//! change, never an approximation.
//!
//! | bundle | Kubernetes |
//! | --- | --- |
//! | every namespace used | a `Namespace`, labelled with the labels every workload of the namespace shares (the tags a policy can trust) |
//! | `mesh.yaml` | the `MeshConfig` `default`; `hostDelegations`: each namespace's Service hosts other than cluster names; `selfAssertedLabels`: the workload label keys its Namespace does not give |
//! | a `workloads.yaml` entry `spiffe://TD/ns/NS/sa/SA` | a `ServiceAccount` SA and a `Deployment` SA (one replica) in NS: pod labels = its labels + `palisade.dev/workload: SA`, annotation `palisade.dev/inbound-port` = the port of the endpoints of the services it serves, containers `app` (`palisade demo app`) and `palisade-proxy` (`palisade proxy run`) |
//! | a `services.yaml` entry | a `Service` selecting `palisade.dev/workload: SA` of its one server (of its namespace), annotation `palisade.dev/hosts` = its hosts joined by `,`, its labels and ports |
//! | `policies/NS/DIRECTION/NAME.cedar` | the `CedarPolicy` NAME of NS, text verbatim (`NAME.dry-run.cedar`: `mode: dry-run`); names are unique per namespace |
//! | an `egress.yaml` entry | an `EgressAllowlist` in its one namespace, named after its host (`*.x.y` → `wildcard.x.y`, then `-2`, `-3`, …), `serviceAccounts` from its `spiffeIds` |
//!
//! Endpoint addresses do not carry over: in a cluster, they are the pods'.

mod egress;
mod error;
mod names;
mod policies;
mod services;
mod workloads;
mod yaml;

use std::collections::{BTreeMap, BTreeSet};

use k8s_openapi::api::apps::v1::Deployment;
use k8s_openapi::api::core::v1::{Namespace, Service, ServiceAccount};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;
use palisade_policy::egress::EgressEntry;
use palisade_policy::mesh::{self, MeshFile};
use palisade_policy::{Bundle, BundleFiles, Digest};
use serde::de::DeserializeOwned;

pub use error::ExportError;
pub use yaml::render_yaml;

use crate::resources::{self, CedarPolicy, EgressAllowlist, HostDelegation, MeshConfig, MeshConfigSpec};

/// How the exported workloads run.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ExportOptions {
    /// The Palisade image both containers run. Default
    /// `ghcr.io/palisade-mesh/palisade:0.1.0`.
    pub image: String,
    /// The CA's address, `host:port`. Default
    /// `palisade-ca.palisade-system.svc:8443` (`palisade ca serve`'s port).
    pub ca: String,
    /// The control plane's address, `host:port`. Default
    /// `palisade-control-plane.palisade-system.svc:15010` (`palisade
    /// control-plane serve`'s port).
    pub control_plane: String,
}

impl Default for ExportOptions {
    fn default() -> Self {
        Self {
            image: "ghcr.io/palisade-mesh/palisade:0.1.0".into(),
            ca: "palisade-ca.palisade-system.svc:8443".into(),
            control_plane: "palisade-control-plane.palisade-system.svc:15010".into(),
        }
    }
}

/// The objects of a bundle, each kind in namespace and name order.
#[derive(Debug, Clone)]
pub struct Exported {
    /// The digest of the bundle they came from.
    pub bundle_digest: Digest,
    pub namespaces: Vec<Namespace>,
    pub mesh: MeshConfig,
    pub service_accounts: Vec<ServiceAccount>,
    pub services: Vec<Service>,
    pub deployments: Vec<Deployment>,
    pub policies: Vec<CedarPolicy>,
    pub allowlists: Vec<EgressAllowlist>,
}

/// The Kubernetes objects equivalent to a bundle: `files` as loaded into
/// `bundle` (by [`palisade_policy::load_with_files`]).
///
/// # Errors
///
/// Anything in the bundle with no faithful Kubernetes form; see [`ExportError`].
pub fn export(files: &BundleFiles, bundle: &Bundle, options: &ExportOptions) -> Result<Exported, ExportError> {
    let mesh_file: MeshFile = parse(files, "mesh.yaml")?.unwrap_or_default();
    let mut served = services::services(&parse::<Vec<_>>(files, "services.yaml")?.unwrap_or_default())?;
    let workloads: Vec<_> = parse(files, "workloads.yaml")?.unwrap_or_default();
    let egress_entries: Vec<EgressEntry> = parse(files, "egress.yaml")?.unwrap_or_default();
    // Whether a policy or an egress entry may read label `key`. A policy with an
    // escape (`\u{63}`) may spell it some other way: it counts as reading all.
    let read = |key: &str| {
        let quoted = format!("\"{key}\"");
        let policies = (files.iter()).filter(|(path, _)| path.starts_with("policies/"));
        let in_policies = policies
            .map(|(_, text)| text)
            .any(|text| text.contains(&quoted) || text.contains('\\'));
        in_policies || egress_entries.iter().any(|e| e.workloads.labels.contains_key(key))
    };
    let trust = workloads::label_trust(&workloads, read)?;
    let (mut service_accounts, mut deployments) = workloads::workloads(&workloads, &served.inbound_ports, options)?;
    let mut services = std::mem::take(&mut served.services);
    let mut policies = policies::policies(files)?;
    let mut allowlists = egress::allowlists(&egress_entries)?;
    sort(&mut service_accounts, |o| &o.metadata);
    sort(&mut services, |o| &o.metadata);
    sort(&mut deployments, |o| &o.metadata);
    sort(&mut policies, |o| &o.metadata);
    sort(&mut allowlists, |o| &o.metadata);
    let used: BTreeSet<String> = (service_accounts.iter().map(|o| &o.metadata))
        .chain(services.iter().map(|o| &o.metadata))
        .chain(policies.iter().map(|o| &o.metadata))
        .chain(allowlists.iter().map(|o| &o.metadata))
        .filter_map(|meta| meta.namespace.clone())
        .collect();
    Ok(Exported {
        bundle_digest: bundle.digest(),
        namespaces: used
            .into_iter()
            .map(|name| namespace(name, &trust.namespaces))
            .collect(),
        mesh: mesh_config(&mesh_file, &served.delegations, &trust.self_asserted)?,
        service_accounts,
        services,
        deployments,
        policies,
        allowlists,
    })
}

/// A YAML file of the bundle; `None` when absent or empty.
fn parse<T: DeserializeOwned>(files: &BundleFiles, file: &'static str) -> Result<Option<T>, ExportError> {
    let Some(text) = files.get(file) else {
        return Ok(None);
    };
    serde_yaml_ng::from_str(text).map_err(|e| ExportError::Yaml {
        file,
        reason: e.to_string(),
    })
}

fn sort<T>(objects: &mut [T], meta: impl Fn(&T) -> &ObjectMeta) {
    objects.sort_by(|a, b| {
        let (a, b) = (meta(a), meta(b));
        (&a.namespace, &a.name).cmp(&(&b.namespace, &b.name))
    });
}

fn namespace(name: String, labels: &BTreeMap<String, BTreeMap<String, String>>) -> Namespace {
    Namespace {
        metadata: ObjectMeta {
            labels: labels.get(&name).filter(|l| !l.is_empty()).cloned(),
            name: Some(name),
            ..ObjectMeta::default()
        },
        ..Namespace::default()
    }
}

/// The MeshConfig `default` of `mesh.yaml`, delegating the Services' hosts and
/// letting pods assert the labels their Namespaces do not give.
fn mesh_config(
    file: &MeshFile,
    delegations: &BTreeMap<String, BTreeSet<String>>,
    self_asserted: &BTreeSet<String>,
) -> Result<MeshConfig, ExportError> {
    if let Some(ttl) = file.leaf_ttl.as_deref().filter(|ttl| ttl.starts_with('0')) {
        return Err(ExportError::Invalid {
            what: "the `leafTtl` of `mesh.yaml`".into(),
            value: ttl.to_owned(),
            hint: "write it without leading zeros, as `30m` or `1h`",
        });
    }
    let spec = MeshConfigSpec {
        trust_domain: file.trust_domain.clone(),
        leaf_ttl: file.leaf_ttl.clone(),
        outbound_mode: match file.outbound_mode {
            mesh::OutboundMode::RegistryOnly => resources::OutboundMode::RegistryOnly,
            mesh::OutboundMode::AllowAny => resources::OutboundMode::AllowAny,
        },
        host_delegations: (delegations.iter())
            .filter(|(_, hosts)| !hosts.is_empty())
            .map(|(namespace, hosts)| HostDelegation {
                namespace: namespace.clone(),
                hosts: hosts.iter().cloned().collect(),
            })
            .collect(),
        self_asserted_labels: self_asserted.iter().cloned().collect(),
    };
    Ok(MeshConfig::new("default", spec))
}
