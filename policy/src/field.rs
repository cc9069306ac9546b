//! The checks a value of a YAML field goes through after parsing: names, mesh
//! SPIFFE IDs, ports, hosts. Each failure is reported at the value's position and
//! the value is dropped, so checking goes on and every problem is found.

use std::collections::{BTreeMap, BTreeSet};

use palisade_authz::{normalize_host, NormalizedHost};
use palisade_ca::{SpiffeId, TrustDomain};

use crate::error::{Diagnostics, Problem};
use crate::source::SourceFile;
use crate::yaml::{Path, Step};

/// Checks the fields of one YAML file and collects what is wrong.
pub(crate) struct Fields<'a> {
    pub(crate) file: &'a SourceFile,
    /// `None` when `mesh.yaml` is broken: trust-domain checks are skipped then.
    pub(crate) trust_domain: Option<&'a TrustDomain>,
    /// The SPIFFE IDs of `workloads.yaml`; `None` when that file is broken (or
    /// being checked): membership checks are skipped then.
    pub(crate) workloads: Option<&'a BTreeSet<String>>,
    pub(crate) diagnostics: &'a mut Diagnostics,
}

impl Fields<'_> {
    /// Reports a problem at the node at `path`.
    pub(crate) fn report(&mut self, problem: Problem, path: &Path<'_>) {
        self.diagnostics.push(self.file.yaml_diagnostic(problem, path));
    }

    /// A mesh workload ID: a SPIFFE ID `spiffe://TD/ns/NS/sa/SA` of the bundle's
    /// trust domain whose namespace is a valid namespace name.
    pub(crate) fn workload_id(&mut self, raw: &str, path: &Path<'_>) -> Option<SpiffeId> {
        let id = match SpiffeId::parse(raw) {
            Ok(id) => id,
            Err(error) => return self.fail(Problem::InvalidSpiffeId(error), path),
        };
        let Some(namespace) = id.namespace() else {
            return self.fail(Problem::NotMeshId { id: raw.to_owned() }, path);
        };
        if let Some(trust_domain) = self.trust_domain.filter(|td| !id.is_member_of(td)) {
            let problem = Problem::OutsideTrustDomain {
                id: raw.to_owned(),
                trust_domain: trust_domain.to_string(),
            };
            return self.fail(problem, path);
        }
        if !is_dns_label(namespace) {
            let problem = Problem::InvalidName {
                what: "namespace",
                name: namespace.to_owned(),
            };
            return self.fail(problem, path);
        }
        Some(id)
    }

    /// A [`workload_id`](Self::workload_id) that `workloads.yaml` lists.
    pub(crate) fn registered_workload(&mut self, raw: &str, path: &Path<'_>) -> Option<SpiffeId> {
        let id = self.workload_id(raw, path)?;
        match self.workloads {
            Some(known) if !known.contains(id.as_str()) => {
                self.fail(Problem::UnknownWorkload { id: id.to_string() }, path)
            }
            _ => Some(id),
        }
    }

    /// A namespace or service name (a DNS-1123 label).
    pub(crate) fn name(&mut self, what: &'static str, raw: &str, path: &Path<'_>) -> Option<String> {
        if is_dns_label(raw) {
            return Some(raw.to_owned());
        }
        self.fail(
            Problem::InvalidName {
                what,
                name: raw.to_owned(),
            },
            path,
        )
    }

    /// A TCP port, 1 to 65535.
    pub(crate) fn port(&mut self, raw: i64, path: &Path<'_>) -> Option<u16> {
        match u16::try_from(raw) {
            Ok(port) if port > 0 => Some(port),
            _ => self.fail(Problem::InvalidPort { port: raw }, path),
        }
    }

    /// A non-empty list of ports under `key` of the node at `parent`.
    pub(crate) fn ports(&mut self, raw: &[i64], parent: &Path<'_>, key: &'static str) -> Vec<u16> {
        if raw.is_empty() {
            self.report(Problem::EmptyList { field: key }, &child(parent, Step::Key(key)));
        }
        let mut ports: Vec<u16> = (raw.iter().enumerate())
            .filter_map(|(i, port)| self.port(*port, &child2(parent, Step::Key(key), Step::Index(i))))
            .collect();
        ports.sort_unstable();
        ports.dedup();
        ports
    }

    /// A host name without port, in canonical form (lower case, no trailing dot).
    pub(crate) fn host(&mut self, raw: &str, path: &Path<'_>) -> Option<String> {
        host_name(raw).map_or_else(|problem| self.fail(problem, path), Some)
    }

    /// `host:port`, with both parts required.
    pub(crate) fn host_and_port(&mut self, raw: &str, path: &Path<'_>) -> Option<NormalizedHost> {
        let invalid = |hint: String| Problem::InvalidEndpoint {
            endpoint: raw.to_owned(),
            hint,
        };
        match normalize_host(raw, None) {
            Ok(host) if host.port().is_some() => Some(host),
            Ok(_) => self.fail(invalid("give it a port, as `host:port`".into()), path),
            Err(reason) => self.fail(invalid(reason.to_string()), path),
        }
    }

    /// Labels with non-empty keys.
    pub(crate) fn labels(&mut self, raw: &BTreeMap<String, String>, path: &Path<'_>) -> BTreeMap<String, String> {
        if raw.contains_key("") {
            self.report(Problem::EmptyLabelKey, &child(path, Step::Key("")));
        }
        raw.iter()
            .filter(|(key, _)| !key.is_empty())
            .map(|(key, value)| (key.clone(), value.clone()))
            .collect()
    }

    fn fail<T>(&mut self, problem: Problem, path: &Path<'_>) -> Option<T> {
        self.report(problem, path);
        None
    }
}

/// `raw` as a host name without port, in canonical form (lower case, no trailing
/// dot); or why it is not one.
pub(crate) fn host_name(raw: &str) -> Result<String, Problem> {
    match normalize_host(raw, None) {
        Ok(host) if host.port().is_some() => Err(Problem::HostWithPort { host: raw.to_owned() }),
        Ok(host) => Ok(host.name().to_owned()),
        Err(reason) => Err(Problem::InvalidHost {
            host: raw.to_owned(),
            reason,
        }),
    }
}

/// `parent` followed by `step`.
pub(crate) fn child<'a>(parent: &Path<'a>, step: Step<'a>) -> Vec<Step<'a>> {
    let mut path = parent.to_vec();
    path.push(step);
    path
}

/// `parent` followed by two steps.
pub(crate) fn child2<'a>(parent: &Path<'a>, first: Step<'a>, second: Step<'a>) -> Vec<Step<'a>> {
    let mut path = child(parent, first);
    path.push(second);
    path
}

/// A DNS-1123 label, as Kubernetes requires of namespace and service names: 1 to
/// 63 lower-case letters, digits and `-`, starting and ending with a letter or digit.
pub(crate) fn is_dns_label(name: &str) -> bool {
    let bytes = name.as_bytes();
    let edge = |b: Option<&u8>| b.is_some_and(|b| b.is_ascii_lowercase() || b.is_ascii_digit());
    (1..=63).contains(&bytes.len())
        && edge(bytes.first())
        && edge(bytes.last())
        && bytes
            .iter()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || *b == b'-')
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn dns_labels() {
        for good in ["a", "web", "pay-ments", "a1", "0"] {
            assert!(is_dns_label(good), "{good}");
        }
        let long = "a".repeat(64);
        for bad in ["", "-a", "a-", "Web", "a_b", "a.b", "a/b", long.as_str()] {
            assert!(!is_dns_label(bad), "{bad}");
        }
    }
}
