//! The mismatch graph: which calls both sides allow,
//! which the caller believes it may make but the callee refuses (egress-only
//! mismatches: the seeds' PCI example), and which the callee accepts from a caller
//! that never may call (ingress-only grants: unused privilege).
//!
//! Every workload × service × method of the registry is evaluated with the real
//! engine on both sides, at a set of representative paths: `/` and every path the
//! bundle's policies mention (with `*` of a `like` pattern filled in). Policies that
//! look at headers, the source address or the time are evaluated as for a request
//! without headers, from no known address, now; a row says which paths it found.

use std::collections::BTreeSet;

use palisade_authz::engine::{Action, Direction, Effect, Engine, EngineInput, Protocol, RequestFacts, Resource};

/// The HTTP methods analysed (what the schema's `http` group holds).
pub const METHODS: [(Action, &str); 7] = [
    (Action::Get, "GET"),
    (Action::Head, "HEAD"),
    (Action::Post, "POST"),
    (Action::Put, "PUT"),
    (Action::Patch, "PATCH"),
    (Action::Delete, "DELETE"),
    (Action::Options, "OPTIONS"),
];

/// How the two sides agree on one workload → service → method.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum EdgeKind {
    /// Both the caller's egress and the callee's ingress allow it (at some path).
    Allowed,
    /// The caller's egress allows it, the callee's ingress refuses it.
    EgressOnly,
    /// The callee's ingress allows it, the caller's egress never lets it out.
    IngressOnly,
}

impl EdgeKind {
    pub fn label(self) -> &'static str {
        match self {
            Self::Allowed => "allowed",
            Self::EgressOnly => "egress-only mismatch",
            Self::IngressOnly => "ingress-only grant",
        }
    }
}

/// One finding: a caller, a service, a method, and the paths where it holds.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
pub struct Edge {
    pub kind: EdgeKind,
    pub from: String,
    /// `NAMESPACE/NAME`.
    pub to: String,
    pub method: &'static str,
    pub paths: Vec<String>,
}

/// Analyses every workload × service × method of `input` with `engine`.
pub fn analyze(input: &EngineInput, engine: &Engine, now_unix: i64) -> Vec<Edge> {
    let paths = representative_paths(input);
    let mut edges = Vec::new();
    for w in &input.workloads {
        for s in &input.services {
            let host = s.hosts.first().map(String::as_str).unwrap_or_default();
            for (action, method) in METHODS {
                let mut found: [Vec<String>; 3] = Default::default();
                for path in &paths {
                    let facts = RequestFacts {
                        principal: &w.spiffe_id,
                        action,
                        resource: Resource::Service {
                            namespace: &s.namespace,
                            name: &s.name,
                        },
                        path,
                        host,
                        protocol: Protocol::Http1,
                        source_ip: None,
                        headers: &[],
                        time_unix: now_unix,
                    };
                    let egress = engine.evaluate(Direction::Egress, &facts).effect == Effect::Allow;
                    let ingress = engine.evaluate(Direction::Ingress, &facts).effect == Effect::Allow;
                    let slot = match (egress, ingress) {
                        (true, true) => 0,
                        (true, false) => 1,
                        (false, true) => 2,
                        (false, false) => continue,
                    };
                    if let Some(list) = found.get_mut(slot) {
                        list.push(path.clone());
                    }
                }
                let kinds = [EdgeKind::Allowed, EdgeKind::EgressOnly, EdgeKind::IngressOnly];
                for (kind, paths) in kinds.into_iter().zip(found) {
                    if !paths.is_empty() {
                        edges.push(Edge {
                            kind,
                            from: w.spiffe_id.clone(),
                            to: format!("{}/{}", s.namespace, s.name),
                            method,
                            paths,
                        });
                    }
                }
            }
        }
    }
    edges.sort();
    edges
}

/// `/` and every absolute path literal in the bundle's policies, `*` filled in.
pub fn representative_paths(input: &EngineInput) -> Vec<String> {
    let mut paths = BTreeSet::from(["/".to_string()]);
    for p in &input.policies {
        let text = p.policy.to_string();
        let mut rest = text.as_str();
        while let Some(start) = rest.find("\"/") {
            let after = rest.get(start + 1..).unwrap_or_default();
            let Some(end) = after.find('"') else { break };
            let literal = after.get(..end).unwrap_or_default();
            if !literal.contains('\\') {
                paths.insert(literal.replace('*', "x"));
            }
            rest = after.get(end + 1..).unwrap_or_default();
        }
    }
    paths.into_iter().collect()
}

/// The edges as Graphviz DOT: workloads and services as nodes, one arrow per
/// caller → service with its methods, coloured by kind.
pub fn to_dot(edges: &[Edge]) -> String {
    use std::collections::BTreeMap;
    use std::fmt::Write;
    let mut grouped: BTreeMap<(&str, &str, EdgeKind), Vec<&str>> = BTreeMap::new();
    for e in edges {
        grouped
            .entry((e.from.as_str(), e.to.as_str(), e.kind))
            .or_default()
            .push(e.method);
    }
    let mut out = String::from("digraph palisade {\n  rankdir=LR;\n  node [shape=box, fontname=\"Helvetica\"];\n");
    for ((from, to, kind), methods) in grouped {
        let (color, style) = match kind {
            EdgeKind::Allowed => ("darkgreen", "solid"),
            EdgeKind::EgressOnly => ("red", "bold"),
            EdgeKind::IngressOnly => ("orange", "dashed"),
        };
        let _ = writeln!(
            out,
            "  \"{}\" -> \"{}\" [label=\"{} ({})\", color={color}, fontcolor={color}, style={style}];",
            dot_escape(from),
            dot_escape(to),
            methods.join(","),
            kind.label()
        );
    }
    out.push_str("}\n");
    out
}

fn dot_escape(s: &str) -> String {
    s.replace('\\', "\\\\").replace('"', "\\\"")
}
