//! The canonical form of a valid bundle's files: what the control plane publishes.
//!
//! A bundle can come from a directory someone edits or from a Kubernetes cluster
//! (the controller renders its resources into the same files). To give equal
//! bundles byte-identical snapshots whichever source they came from, the YAML files
//! are rendered again from what they say: entries sorted, lists whose order carries
//! no meaning sorted, comments and formatting dropped, and a file with no entries
//! left out (an absent `workloads.yaml`, `services.yaml` or `egress.yaml` means
//! the same as an empty one). Policy files are kept verbatim: their text, file
//! names, lines and columns are what decisions and diagnostics point at.
//!
//! Only a bundle that loaded is canonicalized, so every YAML file parses; should one
//! not, it is kept as it is rather than dropped.

use serde::de::DeserializeOwned;
use serde::Serialize;

use super::files::BundleFiles;
use crate::egress::EgressEntry;
use crate::mesh::MeshFile;
use crate::registry::{ServiceEntry, WorkloadEntry};

/// `files` (which loaded without error) in canonical form.
pub fn canonical(files: &BundleFiles) -> BundleFiles {
    let mut out = BundleFiles::new();
    for (path, text) in files.iter() {
        let rendered = match path {
            "mesh.yaml" => render::<MeshFile>(text, |_| ()),
            "workloads.yaml" => render_list::<WorkloadEntry>(text, |list| {
                list.sort_by(|a, b| a.spiffe_id.cmp(&b.spiffe_id));
            }),
            "services.yaml" => render_list::<ServiceEntry>(text, |list| {
                for service in list.iter_mut() {
                    service.ports.sort_unstable();
                    service.ports.dedup();
                    service.served_by.sort();
                    service.served_by.dedup();
                    service.endpoints.sort();
                    service.endpoints.dedup();
                }
                list.sort_by(|a, b| (&a.namespace, &a.name).cmp(&(&b.namespace, &b.name)));
            }),
            "egress.yaml" => render_list::<EgressEntry>(text, |list| {
                for entry in list.iter_mut() {
                    entry.ports.sort_unstable();
                    entry.ports.dedup();
                    entry.workloads.namespaces.sort();
                    entry.workloads.namespaces.dedup();
                    entry.workloads.spiffe_ids.sort();
                    entry.workloads.spiffe_ids.dedup();
                }
                list.sort_by_cached_key(|entry| serde_yaml_ng::to_string(entry).unwrap_or_default());
                list.dedup();
            }),
            _ => Some(Rendered::Text(text.to_owned())),
        };
        match rendered {
            Some(Rendered::Text(text)) => {
                out.insert(path, text);
            }
            Some(Rendered::Empty) => {}
            None => {
                out.insert(path, text);
            }
        }
    }
    out
}

/// A YAML file rendered again.
enum Rendered {
    Text(String),
    /// A list with no entries: the file is left out.
    Empty,
}

fn render<T: Serialize + DeserializeOwned>(text: &str, sort: impl FnOnce(&mut T)) -> Option<Rendered> {
    let mut value: T = serde_yaml_ng::from_str(text).ok()?;
    sort(&mut value);
    serde_yaml_ng::to_string(&value).ok().map(Rendered::Text)
}

fn render_list<T: Serialize + DeserializeOwned>(text: &str, sort: impl FnOnce(&mut Vec<T>)) -> Option<Rendered> {
    let Some(mut list) = serde_yaml_ng::from_str::<Option<Vec<T>>>(text).ok()? else {
        return Some(Rendered::Empty);
    };
    if list.is_empty() {
        return Some(Rendered::Empty);
    }
    sort(&mut list);
    serde_yaml_ng::to_string(&list).ok().map(Rendered::Text)
}
