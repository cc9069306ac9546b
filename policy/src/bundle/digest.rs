//! The bundle's digest: SHA-256 over a canonical encoding of everything it holds.
//!
//! The encoding is independent of file order and of where the bundle directory is:
//! workloads, services, egress rules and policies are sorted; every string and
//! list is length-prefixed, so no two bundles share an encoding. What it covers:
//! the mesh settings; every workload and service with all their fields; every
//! egress rule; every policy's id, owner, direction, mode, file (inside the
//! bundle), line and column, and exact text. So a changed comment or a moved policy
//! changes the digest (the locations a decision reports changed with it), while
//! reordering YAML entries or renaming the bundle directory does not. Test files
//! are not part of the bundle.

use std::fmt;

use palisade_authz::{Direction, Mode};
use ring::digest::{Context, SHA256};

use super::policy::Policy;
use crate::egress::{EgressRule, EgressRules, HostPattern};
use crate::mesh::MeshSettings;
use crate::registry::Registry;

/// A SHA-256 digest of a bundle, shown as `sha256:` and 64 lower-case hex digits.
#[derive(Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Digest([u8; 32]);

impl Digest {
    /// The 32 bytes.
    pub fn as_bytes(&self) -> &[u8; 32] {
        &self.0
    }
}

impl fmt::Display for Digest {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("sha256:")?;
        self.0.iter().try_for_each(|b| write!(f, "{b:02x}"))
    }
}

impl fmt::Debug for Digest {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Display::fmt(self, f)
    }
}

/// Length-prefixed writing into a byte buffer.
#[derive(Default)]
struct Encoder(Vec<u8>);

impl Encoder {
    fn u64(&mut self, n: u64) {
        self.0.extend_from_slice(&n.to_be_bytes());
    }

    fn len(&mut self, n: usize) {
        self.u64(u64::try_from(n).unwrap_or(u64::MAX));
    }

    fn str(&mut self, s: &str) {
        self.len(s.len());
        self.0.extend_from_slice(s.as_bytes());
    }

    fn strs<'a>(&mut self, items: impl ExactSizeIterator<Item = &'a str>) {
        self.len(items.len());
        items.for_each(|s| self.str(s));
    }

    fn map<'a>(&mut self, items: impl ExactSizeIterator<Item = (&'a String, &'a String)>) {
        self.len(items.len());
        for (key, value) in items {
            self.str(key);
            self.str(value);
        }
    }

    fn ports(&mut self, ports: &[u16]) {
        self.len(ports.len());
        ports.iter().for_each(|p| self.u64(u64::from(*p)));
    }

    /// Sorted encodings of `items`, each length-prefixed.
    fn sorted<T>(&mut self, items: &[T], encode: impl Fn(&mut Encoder, &T)) {
        let mut encoded: Vec<Vec<u8>> = (items.iter())
            .map(|item| {
                let mut e = Encoder::default();
                encode(&mut e, item);
                e.0
            })
            .collect();
        encoded.sort();
        self.len(encoded.len());
        for bytes in encoded {
            self.len(bytes.len());
            self.0.extend_from_slice(&bytes);
        }
    }
}

/// The digest of a bundle's parts.
pub(super) fn digest(mesh: &MeshSettings, registry: &Registry, egress: &EgressRules, policies: &[Policy]) -> Digest {
    let mut e = Encoder::default();
    e.str("palisade-bundle-v1");
    e.str(mesh.trust_domain().as_str());
    e.str(mesh.outbound_mode().as_str());
    e.u64(mesh.leaf_ttl().map_or(0, |ttl| ttl.as_secs()));
    e.sorted(registry.workloads(), |e, w| {
        e.str(w.spiffe_id().as_str());
        e.map(w.labels().iter());
    });
    e.sorted(registry.services(), |e, s| {
        e.str(s.namespace());
        e.str(s.name());
        e.strs(s.hosts().iter().map(String::as_str));
        e.ports(s.ports());
        e.map(s.labels().iter());
        e.strs(s.served_by().iter().map(|id| id.as_str()));
        e.len(s.endpoints().len());
        for endpoint in s.endpoints() {
            e.str(&endpoint.host);
            e.u64(u64::from(endpoint.port));
        }
    });
    e.sorted(egress.rules(), rule);
    e.sorted(policies, policy);
    let mut context = Context::new(&SHA256);
    context.update(&e.0);
    let mut bytes = [0; 32];
    bytes.copy_from_slice(context.finish().as_ref());
    Digest(bytes)
}

fn rule(e: &mut Encoder, rule: &EgressRule) {
    match rule.host() {
        HostPattern::Exact(host) => {
            e.str("exact");
            e.str(host);
        }
        HostPattern::Wildcard { suffix } => {
            e.str("wildcard");
            e.str(suffix);
        }
    }
    e.ports(rule.ports());
    e.str(rule.protocol().as_str());
    let selector = rule.workloads();
    e.strs(selector.namespaces().iter().map(String::as_str));
    e.map(selector.labels().iter());
    e.strs(selector.spiffe_ids().iter().map(|id| id.as_str()));
}

fn policy(e: &mut Encoder, policy: &Policy) {
    e.str(policy.id());
    e.str(policy.namespace());
    e.str(match policy.direction() {
        Direction::Egress => "egress",
        Direction::Ingress => "ingress",
    });
    e.str(match policy.mode() {
        Mode::Enforce => "enforce",
        Mode::DryRun => "dry-run",
    });
    e.str(policy.file());
    e.u64(u64::from(policy.location().line));
    e.u64(u64::from(policy.location().column));
    e.str(policy.text());
}
