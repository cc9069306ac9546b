//! Loading a bundle from its files: every check, every problem collected, and a
//! [`Bundle`] only when there are none. The files come from a directory
//! ([`load`], read once by `files.rs`) or from memory ([`load_files`]); the checks
//! are the same.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::path::Path;

use cedar_policy::Validator;

use palisade_authz::Direction;
use palisade_ca::TrustDomain;

use super::files::{self, BundleFiles, Shown};
use super::policy::{self, Checks, Policy};
use super::scope::Owner;
use super::Bundle;
use crate::egress::{self, EgressRules};
use crate::error::{Diagnostic, Diagnostics, Problem};
use crate::field::Fields;
use crate::mesh;
use crate::registry::{self, Registry};
use crate::source::SourceFile;

/// Loads and validates the bundle in `dir`: all of it, or every problem found.
/// Paths in diagnostics are shown under `dir`.
///
/// # Errors
///
/// Every problem of the bundle, each with its file and, where it has one, its
/// line, column and excerpt.
pub(super) fn load(dir: &Path) -> Result<(BundleFiles, Bundle), Diagnostics> {
    let read = files::read(dir);
    let source = Source {
        files: &read.files,
        shown: Shown::under(dir),
        unreadable: &read.unreadable,
    };
    let bundle = source.load(read.diagnostics)?;
    Ok((read.files, bundle))
}

/// Loads and validates a bundle held in memory; paths are shown as they are.
pub(super) fn load_files(files: &BundleFiles) -> Result<Bundle, Diagnostics> {
    let source = Source {
        files,
        shown: Shown::default(),
        unreadable: &BTreeSet::new(),
    };
    source.load(Diagnostics::default())
}

/// The files being loaded and how to name them.
struct Source<'a> {
    files: &'a BundleFiles,
    shown: Shown,
    /// Files that exist but could not be read (already reported).
    unreadable: &'a BTreeSet<String>,
}

impl Source<'_> {
    /// Every check; `diagnostics` holds what reading the files found already.
    fn load(&self, mut diagnostics: Diagnostics) -> Result<Bundle, Diagnostics> {
        let layout = files::check(self.files, &self.shown, &mut diagnostics);
        let mesh = match self.file("mesh.yaml") {
            Some(file) => mesh::parse(&file, &mut diagnostics),
            None => {
                if !self.unreadable.contains("mesh.yaml") {
                    let problem = Problem::MissingFile { name: "mesh.yaml" };
                    diagnostics.push(Diagnostic::in_file(problem, self.shown.path("mesh.yaml")));
                }
                None
            }
        };
        let trust_domain = mesh.as_ref().map(mesh::MeshSettings::trust_domain);
        let (registry, known) = self.registry(trust_domain, &mut diagnostics);
        let egress = self.egress(&registry, trust_domain, known.as_ref(), &mut diagnostics);
        let policies = self.policies(&layout, trust_domain, &mut diagnostics);
        match mesh {
            Some(mesh) if diagnostics.is_empty() => Ok(Bundle::new(mesh, registry, egress, policies)),
            None if diagnostics.is_empty() => Err(vec![Diagnostic::new(Problem::Internal("no mesh settings"))].into()),
            _ => Err(diagnostics),
        }
    }

    /// The file `relative`, when the bundle has it.
    fn file(&self, relative: &str) -> Option<SourceFile> {
        let text = self.files.get(relative)?;
        Some(SourceFile::new(self.shown.path(relative), relative, text))
    }

    /// `workloads.yaml` and `services.yaml`; also the workloads' IDs, `None` when
    /// `workloads.yaml` cannot be parsed (so that nothing is reported missing from it).
    fn registry(
        &self,
        trust_domain: Option<&TrustDomain>,
        diagnostics: &mut Diagnostics,
    ) -> (Registry, Option<BTreeSet<String>>) {
        let mut workloads = BTreeMap::new();
        let mut known = Some(BTreeSet::new());
        if let Some(file) = self.file("workloads.yaml") {
            let entries: Option<Vec<registry::WorkloadEntry>> = parse(&file, diagnostics);
            let mut fields = Fields {
                file: &file,
                trust_domain,
                workloads: None,
                diagnostics,
            };
            workloads = registry::workloads(entries.as_deref().unwrap_or_default(), &mut fields);
            known = entries.map(|_| workloads.keys().cloned().collect());
        }
        let mut services = Vec::new();
        if let Some(file) = self.file("services.yaml") {
            let entries: Option<Vec<registry::ServiceEntry>> = parse(&file, diagnostics);
            let mut fields = Fields {
                file: &file,
                trust_domain,
                workloads: known.as_ref(),
                diagnostics,
            };
            services = registry::services(entries.as_deref().unwrap_or_default(), &mut fields);
        }
        (Registry::new(workloads, services), known)
    }

    /// `egress.yaml`.
    fn egress(
        &self,
        registry: &Registry,
        trust_domain: Option<&TrustDomain>,
        known: Option<&BTreeSet<String>>,
        diagnostics: &mut Diagnostics,
    ) -> EgressRules {
        let Some(file) = self.file("egress.yaml") else {
            return EgressRules::default();
        };
        let entries: Option<Vec<egress::EgressEntry>> = parse(&file, diagnostics);
        let mut fields = Fields {
            file: &file,
            trust_domain,
            workloads: known,
            diagnostics,
        };
        egress::parse(entries.as_deref().unwrap_or_default(), registry, &mut fields)
    }

    /// Every `policies/NS/{egress,ingress}/*.cedar`, namespaces and files in name order.
    fn policies(
        &self,
        layout: &files::Layout<'_>,
        trust_domain: Option<&TrustDomain>,
        diagnostics: &mut Diagnostics,
    ) -> Vec<Policy> {
        if layout.policies.is_empty() {
            return Vec::new();
        }
        let validator = match palisade_authz::schema() {
            Ok(schema) => Validator::new(schema),
            Err(_) => {
                diagnostics.push(Diagnostic::new(Problem::Internal("the mesh schema does not parse")));
                return Vec::new();
            }
        };
        let mut checks = Checks {
            validator: &validator,
            trust_domain,
            ids: HashMap::new(),
        };
        let mut policies = Vec::new();
        for (namespace, [egress, ingress]) in &layout.policies {
            for (direction, paths) in [(Direction::Egress, egress), (Direction::Ingress, ingress)] {
                let owner = Owner {
                    namespace: (*namespace).to_owned(),
                    direction,
                };
                for path in paths {
                    if let Some(source) = self.file(path) {
                        policies.extend(policy::load(&source, &owner, &mut checks, diagnostics));
                    }
                }
            }
        }
        policies
    }
}

/// A YAML list; `None` after reporting an error.
fn parse<T: serde::de::DeserializeOwned>(file: &SourceFile, diagnostics: &mut Diagnostics) -> Option<Vec<T>> {
    file.parse_yaml()
        .map_err(|diagnostic| diagnostics.push(diagnostic))
        .ok()
}
