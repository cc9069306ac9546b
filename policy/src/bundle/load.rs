//! Reading a bundle directory: every file, every check, every problem collected,
//! and a [`Bundle`] only when there are none.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::path::Path;

use cedar_policy::Validator;

use palisade_authz::Direction;
use palisade_ca::TrustDomain;

use super::policy::{self, Checks, Policy};
use super::scope::Owner;
use super::Bundle;
use crate::egress::{self, EgressRules};
use crate::error::{Diagnostic, Diagnostics, Problem};
use crate::field::{is_dns_label, Fields};
use crate::mesh;
use crate::registry::{self, Registry};
use crate::source::SourceFile;

/// Loads and validates the bundle in `dir`: all of it, or every problem found.
///
/// # Errors
///
/// Every problem of the bundle, each with its file and, where it has one, its
/// line, column and excerpt.
pub fn load(dir: &Path) -> Result<Bundle, Diagnostics> {
    let mut diagnostics = Diagnostics::default();
    let mesh = match SourceFile::read(dir, "mesh.yaml") {
        Ok(file) => mesh::parse(&file, &mut diagnostics),
        Err(_) if !dir.join("mesh.yaml").exists() => {
            let shown = dir.join("mesh.yaml").display().to_string();
            diagnostics.push(Diagnostic::in_file(
                Problem::MissingFile { name: "mesh.yaml" },
                shown.into(),
            ));
            None
        }
        Err(diagnostic) => {
            diagnostics.push(diagnostic);
            None
        }
    };
    let trust_domain = mesh.as_ref().map(mesh::MeshSettings::trust_domain);
    let (registry, known) = read_registry(dir, trust_domain, &mut diagnostics);
    let egress = read_egress(dir, &registry, trust_domain, known.as_ref(), &mut diagnostics);
    let policies = read_policies(dir, trust_domain, &mut diagnostics);
    match mesh {
        Some(mesh) if diagnostics.is_empty() => Ok(Bundle::new(mesh, registry, egress, policies)),
        None if diagnostics.is_empty() => Err(vec![Diagnostic::new(Problem::Internal("no mesh settings"))].into()),
        _ => Err(diagnostics),
    }
}

/// `workloads.yaml` and `services.yaml`; also the workloads' IDs, `None` when
/// `workloads.yaml` cannot be parsed (so that nothing is reported missing from it).
fn read_registry(
    dir: &Path,
    trust_domain: Option<&TrustDomain>,
    diagnostics: &mut Diagnostics,
) -> (Registry, Option<BTreeSet<String>>) {
    let mut workloads = BTreeMap::new();
    let mut known = Some(BTreeSet::new());
    if let Some(file) = optional(dir, "workloads.yaml", diagnostics) {
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
    if let Some(file) = optional(dir, "services.yaml", diagnostics) {
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
fn read_egress(
    dir: &Path,
    registry: &Registry,
    trust_domain: Option<&TrustDomain>,
    known: Option<&BTreeSet<String>>,
    diagnostics: &mut Diagnostics,
) -> EgressRules {
    let Some(file) = optional(dir, "egress.yaml", diagnostics) else {
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

/// The file `name` of the bundle, `None` when it does not exist or cannot be read.
fn optional(dir: &Path, name: &str, diagnostics: &mut Diagnostics) -> Option<SourceFile> {
    if !dir.join(name).exists() {
        return None;
    }
    SourceFile::read(dir, name).map_err(|d| diagnostics.push(d)).ok()
}

/// A YAML list; `None` after reporting an error.
fn parse<T: serde::de::DeserializeOwned>(file: &SourceFile, diagnostics: &mut Diagnostics) -> Option<Vec<T>> {
    file.parse_yaml()
        .map_err(|diagnostic| diagnostics.push(diagnostic))
        .ok()
}

/// Every `policies/NS/{ingress,egress}/*.cedar`, namespaces and files in name order.
fn read_policies(dir: &Path, trust_domain: Option<&TrustDomain>, diagnostics: &mut Diagnostics) -> Vec<Policy> {
    if !dir.join("policies").exists() {
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
    for namespace in entries(dir, "policies", diagnostics) {
        let relative = format!("policies/{}", namespace.name);
        if !namespace.is_dir {
            let hint = "`policies/` holds one directory per namespace";
            diagnostics.push(unexpected(dir, &relative, "file", hint));
        } else if !is_dns_label(&namespace.name) {
            let problem = Problem::InvalidName {
                what: "namespace",
                name: namespace.name.clone(),
            };
            diagnostics.push(Diagnostic::in_file(problem, shown(dir, &relative)));
        } else {
            read_namespace(dir, &namespace.name, &mut checks, &mut policies, diagnostics);
        }
    }
    policies
}

/// `policies/NS/`: its `egress/` and `ingress/` directories.
fn read_namespace(
    dir: &Path,
    namespace: &str,
    checks: &mut Checks<'_>,
    out: &mut Vec<Policy>,
    diagnostics: &mut Diagnostics,
) {
    for entry in entries(dir, &format!("policies/{namespace}"), diagnostics) {
        let relative = format!("policies/{namespace}/{}", entry.name);
        let direction = match entry.name.as_str() {
            "egress" if entry.is_dir => Direction::Egress,
            "ingress" if entry.is_dir => Direction::Ingress,
            _ => {
                let hint = "a namespace directory holds only `egress/` and `ingress/`";
                diagnostics.push(unexpected(
                    dir,
                    &relative,
                    if entry.is_dir { "directory" } else { "file" },
                    hint,
                ));
                continue;
            }
        };
        let owner = Owner {
            namespace: namespace.to_owned(),
            direction,
        };
        for file in entries(dir, &relative, diagnostics) {
            let path = format!("{relative}/{}", file.name);
            if file.is_dir || !file.name.ends_with(".cedar") {
                let what = if file.is_dir { "directory" } else { "file" };
                diagnostics.push(unexpected(
                    dir,
                    &path,
                    what,
                    "policy files end in `.cedar`; move or rename it",
                ));
                continue;
            }
            match SourceFile::read(dir, &path) {
                Ok(source) => out.extend(policy::load(&source, &owner, checks, diagnostics)),
                Err(diagnostic) => diagnostics.push(diagnostic),
            }
        }
    }
}

/// One entry of a directory.
struct Entry {
    name: String,
    is_dir: bool,
}

/// The entries of `dir/relative` in name order, hidden ones (`.name`) left out.
fn entries(dir: &Path, relative: &str, diagnostics: &mut Diagnostics) -> Vec<Entry> {
    let read = match std::fs::read_dir(dir.join(relative)) {
        Ok(read) => read,
        Err(error) => {
            let problem = Problem::Read {
                reason: error.to_string(),
            };
            diagnostics.push(Diagnostic::in_file(problem, shown(dir, relative)));
            return Vec::new();
        }
    };
    let mut entries = Vec::new();
    for entry in read {
        let entry = match entry {
            Ok(entry) => entry,
            Err(error) => {
                let problem = Problem::Read {
                    reason: error.to_string(),
                };
                diagnostics.push(Diagnostic::in_file(problem, shown(dir, relative)));
                continue;
            }
        };
        let Ok(name) = entry.file_name().into_string() else {
            let hint = "name files and directories in UTF-8";
            diagnostics.push(unexpected(dir, relative, "entry with a non-UTF-8 name in", hint));
            continue;
        };
        if !name.starts_with('.') {
            let is_dir = entry.path().is_dir();
            entries.push(Entry { name, is_dir });
        }
    }
    entries.sort_by(|a, b| a.name.cmp(&b.name));
    entries
}

fn unexpected(dir: &Path, relative: &str, what: &str, hint: &'static str) -> Diagnostic {
    let what = format!("{what} `{relative}`");
    Diagnostic::in_file(Problem::UnexpectedEntry { what, hint }, shown(dir, relative))
}

fn shown(dir: &Path, relative: &str) -> std::sync::Arc<str> {
    dir.join(relative).display().to_string().into()
}
