//! The egress allowlist: `egress.yaml`, the external hosts workloads may reach.
//!
//! ```yaml
//! - host: api.stripe.com        # exact, or `*.suffix` for one more label
//!   ports: [443]
//!   protocol: tls               # `tls` (decided on SNI) or `http` (on Host)
//!   workloads:                  # who may: every criterion given must hold
//!     namespaces: [checkout]
//!     labels: { pci: "true" }
//!     spiffeIds: [spiffe://shop.example/ns/checkout/sa/checkout]
//! ```
//!
//! A destination that is neither a mesh service nor allowed here is BlackHole in
//! `REGISTRY_ONLY` mode and Passthrough in `ALLOW_ANY` mode (`mesh.yaml`). The
//! caller's egress policies are evaluated too: an allowlisted host is reachable
//! only when both say yes.

use std::collections::{BTreeMap, BTreeSet};
use std::fmt;

use serde::{Deserialize, Serialize};

use palisade_authz::{ExternalHostFacts, NormalizedHost};
use palisade_ca::SpiffeId;

use crate::error::Problem;
use crate::field::{child, host_name, Fields};
use crate::registry::{list, Registry, Workload};
use crate::yaml::{unique_map, Step};

/// One entry of `egress.yaml` (a list of them).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct EgressEntry {
    /// An exact host name (`api.stripe.com`) or `*.` and a domain of at least two
    /// labels (`*.stripe.com`: exactly one more label, so not `stripe.com` and not
    /// `a.b.stripe.com`). No port; no IP wildcard.
    pub host: String,
    /// The ports allowed, 1 to 65535.
    #[serde(deserialize_with = "crate::yaml::ports")]
    pub ports: Vec<i64>,
    /// How the host is recognized.
    pub protocol: Protocol,
    /// Which workloads may reach it.
    pub workloads: SelectorEntry,
}

/// The workloads an egress rule applies to: every criterion that is given must
/// hold, and at least one must be given.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct SelectorEntry {
    /// The workload's namespace is one of these.
    #[serde(default)]
    pub namespaces: Vec<String>,
    /// The workload has every one of these labels with this value.
    #[serde(default, deserialize_with = "unique_map")]
    pub labels: BTreeMap<String, String>,
    /// The workload's SPIFFE ID is one of these (each in `workloads.yaml`).
    #[serde(default)]
    pub spiffe_ids: Vec<String>,
}

/// How an external host is recognized on the wire.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Protocol {
    /// Plain HTTP, by its `Host` header.
    Http,
    /// TLS, by the SNI of its ClientHello.
    Tls,
}

impl Protocol {
    /// The spelling of the file format.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Http => "http",
            Self::Tls => "tls",
        }
    }
}

/// An exact host or a one-label wildcard, in canonical form.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum HostPattern {
    /// One host name (or IP address).
    Exact(String),
    /// `*.suffix`: a host of exactly one more label than `suffix`.
    Wildcard { suffix: String },
}

impl HostPattern {
    /// Whether `host` matches, by the rule of `palisade_authz::host_matches`
    /// (both sides are canonical, so plain comparisons; no allocation: sidecars
    /// ask this per external request).
    pub fn matches(&self, host: &NormalizedHost) -> bool {
        match self {
            Self::Exact(name) => host.name() == name,
            Self::Wildcard { suffix } => host.name().split_once('.').is_some_and(|(_, parent)| parent == suffix),
        }
    }
}

impl fmt::Display for HostPattern {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Exact(host) => f.write_str(host),
            Self::Wildcard { suffix } => write!(f, "*.{suffix}"),
        }
    }
}

/// Which workloads an [`EgressRule`] applies to.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct WorkloadSelector {
    namespaces: BTreeSet<String>,
    labels: BTreeMap<String, String>,
    spiffe_ids: BTreeSet<SpiffeId>,
}

impl WorkloadSelector {
    /// Whether the workload matches every criterion that is given.
    pub fn matches(&self, workload: &Workload) -> bool {
        (self.namespaces.is_empty() || self.namespaces.contains(workload.namespace()))
            && (self.spiffe_ids.is_empty() || self.spiffe_ids.contains(workload.spiffe_id()))
            && (self.labels.iter()).all(|(key, value)| workload.labels().get(key) == Some(value))
    }

    /// The namespaces criterion (empty: any namespace).
    pub fn namespaces(&self) -> &BTreeSet<String> {
        &self.namespaces
    }

    /// The labels criterion (empty: any labels).
    pub fn labels(&self) -> &BTreeMap<String, String> {
        &self.labels
    }

    /// The SPIFFE IDs criterion (empty: any ID).
    pub fn spiffe_ids(&self) -> &BTreeSet<SpiffeId> {
        &self.spiffe_ids
    }
}

/// One allowlisted external destination.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct EgressRule {
    host: HostPattern,
    ports: Vec<u16>,
    protocol: Protocol,
    workloads: WorkloadSelector,
}

impl EgressRule {
    /// The host or wildcard.
    pub fn host(&self) -> &HostPattern {
        &self.host
    }

    /// The ports, sorted; never empty.
    pub fn ports(&self) -> &[u16] {
        &self.ports
    }

    /// How the host is recognized.
    pub fn protocol(&self) -> Protocol {
        self.protocol
    }

    /// Who may reach it.
    pub fn workloads(&self) -> &WorkloadSelector {
        &self.workloads
    }

    /// Whether this rule lets `workload` reach `host` on `port` over `protocol`.
    pub fn allows(&self, workload: &Workload, host: &NormalizedHost, port: u16, protocol: Protocol) -> bool {
        self.protocol == protocol
            && self.ports.contains(&port)
            && self.host.matches(host)
            && self.workloads.matches(workload)
    }
}

/// Every rule of `egress.yaml`, in file order.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct EgressRules(Vec<EgressRule>);

impl EgressRules {
    /// The rules.
    pub fn rules(&self) -> &[EgressRule] {
        &self.0
    }

    /// The first rule that lets `workload` reach `host:port` over `protocol`.
    pub fn allowing(
        &self,
        workload: &Workload,
        host: &NormalizedHost,
        port: u16,
        protocol: Protocol,
    ) -> Option<&EgressRule> {
        self.0.iter().find(|rule| rule.allows(workload, host, port, protocol))
    }

    /// Every exact host and port, each once: the external hosts the engine builds
    /// entities for ahead of time. Wildcards name no single entity.
    pub fn external_hosts(&self) -> Vec<ExternalHostFacts> {
        let exact = self.0.iter().filter_map(|rule| match &rule.host {
            HostPattern::Exact(host) => Some((host, &rule.ports)),
            HostPattern::Wildcard { .. } => None,
        });
        let pairs: BTreeSet<(&String, u16)> = exact
            .flat_map(|(host, ports)| ports.iter().map(move |p| (host, *p)))
            .collect();
        (pairs.into_iter())
            .map(|(hostname, port)| ExternalHostFacts {
                hostname: hostname.clone(),
                port,
            })
            .collect()
    }
}

/// Checks `egress.yaml` against the registry; the valid rules.
pub(crate) fn parse(entries: &[EgressEntry], registry: &Registry, fields: &mut Fields<'_>) -> EgressRules {
    let rules = entries
        .iter()
        .enumerate()
        .filter_map(|(i, entry)| rule(i, entry, registry, fields));
    EgressRules(rules.collect())
}

fn rule(i: usize, entry: &EgressEntry, registry: &Registry, fields: &mut Fields<'_>) -> Option<EgressRule> {
    let errors_before = fields.diagnostics.len();
    let here = [Step::Index(i)];
    let host = host_pattern(&entry.host, fields, &child(&here, Step::Key("host")));
    if let Some(HostPattern::Exact(name)) = &host {
        if let Some(service) = registry.service_by_host(name) {
            let problem = Problem::DuplicateHost {
                host: name.clone(),
                service: service.id().to_owned(),
            };
            fields.report(problem, &child(&here, Step::Key("host")));
        }
    }
    let ports = fields.ports(&entry.ports, &here, "ports");
    let workloads = selector(&entry.workloads, fields, &child(&here, Step::Key("workloads")));
    if fields.diagnostics.len() > errors_before {
        return None;
    }
    Some(EgressRule {
        host: host?,
        ports,
        protocol: entry.protocol,
        workloads: workloads?,
    })
}

/// `host` or `*.suffix`, canonical, without port.
fn host_pattern(raw: &str, fields: &mut Fields<'_>, path: &[Step<'_>]) -> Option<HostPattern> {
    HostPattern::parse(raw).map_or_else(|problem| fail(fields, problem, path), Some)
}

impl HostPattern {
    /// `raw` as an egress host: an exact host name (or address) or `*.` and a
    /// DNS domain of two labels or more, canonical and without port; or why it is
    /// not one (the problem `egress.yaml`'s loader reports).
    ///
    /// # Errors
    ///
    /// The [`Problem`] that makes `raw` no host pattern.
    pub fn parse(raw: &str) -> Result<Self, Problem> {
        let Some(suffix) = raw.strip_prefix("*.") else {
            if raw.contains('*') {
                let hint = "`*` may only be the whole first label, as in `*.example.com`";
                return Err(Problem::InvalidWildcard { host: raw.into(), hint });
            }
            return host_name(raw).map(Self::Exact);
        };
        let suffix = host_name(suffix)?;
        if suffix.parse::<std::net::Ipv4Addr>().is_ok() || suffix.starts_with('[') {
            let hint = "a wildcard covers DNS names, not addresses; list the address itself";
            return Err(Problem::InvalidWildcard { host: raw.into(), hint });
        }
        if !suffix.contains('.') {
            let hint = "a wildcard over a top-level domain allows too much; name a domain, as `*.example.com`";
            return Err(Problem::InvalidWildcard { host: raw.into(), hint });
        }
        Ok(Self::Wildcard { suffix })
    }
}

fn selector(raw: &SelectorEntry, fields: &mut Fields<'_>, path: &[Step<'_>]) -> Option<WorkloadSelector> {
    if raw.namespaces.is_empty() && raw.labels.is_empty() && raw.spiffe_ids.is_empty() {
        return fail(fields, Problem::EmptySelector, path);
    }
    let namespaces = raw.namespaces.iter().enumerate().filter_map(|(j, name)| {
        let at = crate::field::child2(path, Step::Key("namespaces"), Step::Index(j));
        fields.name("namespace", name, &at)
    });
    let namespaces = namespaces.collect();
    let labels = fields.labels(&raw.labels, &child(path, Step::Key("labels")));
    let spiffe_ids = if raw.spiffe_ids.is_empty() {
        Vec::new()
    } else {
        list(&raw.spiffe_ids, path, "spiffeIds", fields, |fields, raw, at| {
            fields.registered_workload(raw, at)
        })
    };
    Some(WorkloadSelector {
        namespaces,
        labels,
        spiffe_ids: spiffe_ids.into_iter().collect(),
    })
}

fn fail<T>(fields: &mut Fields<'_>, problem: Problem, path: &[Step<'_>]) -> Option<T> {
    fields.report(problem, path);
    None
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::error::Diagnostics;
    use palisade_authz::normalize_host;

    fn host(raw: &str) -> NormalizedHost {
        normalize_host(raw, None).unwrap()
    }

    #[test]
    fn a_wildcard_covers_exactly_one_label() {
        let pattern = HostPattern::Wildcard {
            suffix: "stripe.com".into(),
        };
        assert!(pattern.matches(&host("api.stripe.com")));
        assert!(!pattern.matches(&host("stripe.com")));
        assert!(!pattern.matches(&host("a.api.stripe.com")));
        assert!(!pattern.matches(&host("evilstripe.com")));
    }

    use crate::source::SourceFile;

    fn check(raw: &str) -> Result<HostPattern, Diagnostics> {
        let file = SourceFile::in_memory("egress.yaml", "");
        let mut diagnostics = Diagnostics::default();
        let mut fields = Fields {
            file: &file,
            trust_domain: None,
            workloads: None,
            diagnostics: &mut diagnostics,
        };
        host_pattern(raw, &mut fields, &[]).ok_or(diagnostics)
    }

    #[test]
    fn patterns_match_as_the_authz_host_rule_does() {
        let patterns = ["api.stripe.com", "*.stripe.com", "10.0.0.1", "[::1]", "*.a.example"];
        let hosts = [
            "api.stripe.com",
            "API.Stripe.com.",
            "stripe.com",
            "a.b.stripe.com",
            "evilstripe.com",
            "x.stripe.com:443",
            "10.0.0.1",
            "[::1]",
            "[0:0::1]",
            "b.a.example",
            "a.example",
        ];
        for raw in patterns {
            let pattern = check(raw).unwrap();
            for host in hosts {
                let host = palisade_authz::normalize_host(host, None).unwrap();
                assert_eq!(
                    pattern.matches(&host),
                    palisade_authz::host_matches(&pattern.to_string(), &host),
                    "{raw} vs {}",
                    host.name()
                );
            }
        }
    }

    #[test]
    fn host_patterns_are_canonical() {
        assert_eq!(
            check("API.Stripe.com.").unwrap(),
            HostPattern::Exact("api.stripe.com".into())
        );
        assert_eq!(
            check("*.Stripe.com").unwrap(),
            HostPattern::Wildcard {
                suffix: "stripe.com".into()
            }
        );
        for bad in [
            "*.com",
            "a.*.com",
            "*stripe.com",
            "*.10.0.0.1",
            "api.stripe.com:443",
            "a_b.com",
            "*",
        ] {
            assert!(check(bad).is_err(), "{bad}");
        }
    }
}
