//! A policy bundle: one directory, parsed and validated as a whole.
//!
//! ```text
//! mesh.yaml                      trust domain, outbound mode
//! workloads.yaml                 who may call: SPIFFE IDs and labels
//! services.yaml                  what may be called: names, hosts, ports, who serves them
//! egress.yaml                    external hosts allowed, to which workloads
//! policies/NS/egress/*.cedar     what NS's workloads may call
//! policies/NS/ingress/*.cedar    who may call NS's services
//! tests/*.yaml                   policy test cases (not part of the bundle, see `testcases`)
//! ```
//!
//! Only `mesh.yaml` is required; a missing YAML file is an empty list, a missing
//! `policies/` no policy (so every call is denied). [`load`] returns a [`Bundle`]
//! only when every file and every check passes; otherwise every problem it found.
//! A [`Bundle`] exists only as that parsed value: nothing constructs one otherwise.
//!
//! The loader runs over [`BundleFiles`], the bundle's files as text: [`load`] reads
//! the directory once into them, [`load_files`] takes them from memory (a snapshot
//! a proxy received). Both apply the same checks, the layout included.

mod canonical;
mod digest;
pub(crate) mod files;
mod load;
mod policy;
mod scope;
mod span;
mod validate;

use std::path::Path;

use palisade_authz::EngineInput;

use crate::egress::EgressRules;
use crate::error::Diagnostics;
use crate::mesh::MeshSettings;
use crate::registry::Registry;

pub use canonical::canonical;
pub use digest::Digest;
pub use files::{BundleFiles, MAX_FILES, MAX_FILE_BYTES, MAX_TOTAL_BYTES};
pub use policy::{Policy, DRY_RUN_SUFFIX};

/// A valid bundle: mesh settings, registry, egress allowlist and policies.
#[derive(Debug, Clone)]
pub struct Bundle {
    mesh: MeshSettings,
    registry: Registry,
    egress: EgressRules,
    policies: Vec<Policy>,
    digest: Digest,
}

/// Loads and validates the bundle in `dir`.
///
/// # Errors
///
/// Every problem of the bundle (never just the first), each with its file and,
/// where it has one, its line, column and excerpt. Nothing is loaded then.
pub fn load(dir: impl AsRef<Path>) -> Result<Bundle, Diagnostics> {
    load::load(dir.as_ref()).map(|(_, bundle)| bundle)
}

/// Loads the bundle in `dir` like [`load`], and returns the exact files it was
/// loaded from with it: what the control plane validates is what it distributes,
/// with no second read in between.
///
/// # Errors
///
/// As [`load`].
pub fn load_with_files(dir: impl AsRef<Path>) -> Result<(BundleFiles, Bundle), Diagnostics> {
    load::load(dir.as_ref())
}

/// Loads and validates a bundle held in memory, with the same checks as [`load`]
/// (the layout included: a path with no place in a bundle is an error).
/// Diagnostics show the paths as they are, relative to the bundle.
///
/// # Errors
///
/// As [`load`].
pub fn load_files(files: &BundleFiles) -> Result<Bundle, Diagnostics> {
    load::load_files(files)
}

/// Loads `files` (which passed [`load_files`] or [`load_with_files`]) again in
/// their [`canonical`] form: what the control plane publishes, so that equal
/// bundles give byte-identical snapshots whether they came from a directory or
/// from a Kubernetes cluster.
///
/// # Errors
///
/// As [`load_files`]; only when the canonical form lost something, which would be
/// a bug.
pub fn load_canonical(files: &BundleFiles) -> Result<(BundleFiles, Bundle), Diagnostics> {
    let files = canonical(files);
    let bundle = load::load_files(&files)?;
    Ok((files, bundle))
}

impl Bundle {
    fn new(mesh: MeshSettings, registry: Registry, egress: EgressRules, policies: Vec<Policy>) -> Self {
        let digest = digest::digest(&mesh, &registry, &egress, &policies);
        Self {
            mesh,
            registry,
            egress,
            policies,
            digest,
        }
    }

    /// `mesh.yaml`.
    pub fn mesh(&self) -> &MeshSettings {
        &self.mesh
    }

    /// `workloads.yaml` and `services.yaml`.
    pub fn registry(&self) -> &Registry {
        &self.registry
    }

    /// `egress.yaml`.
    pub fn egress(&self) -> &EgressRules {
        &self.egress
    }

    /// Every policy, by namespace, direction (egress first), file and position.
    pub fn policies(&self) -> &[Policy] {
        &self.policies
    }

    /// The policy with this `@id`.
    pub fn policy(&self, id: &str) -> Option<&Policy> {
        self.policies.iter().find(|p| p.id() == id)
    }

    /// What the engine is built from.
    pub fn engine_input(&self) -> EngineInput {
        EngineInput {
            policies: self.policies.iter().map(Policy::source).collect(),
            workloads: self.registry.workload_facts(),
            services: self.registry.service_facts(),
            external_hosts: self.egress.external_hosts(),
        }
    }

    /// SHA-256 over a canonical encoding of the whole bundle (see `digest.rs`):
    /// the same for the same content wherever the directory is, different when
    /// anything in it changes.
    pub fn digest(&self) -> Digest {
        self.digest
    }
}
