//! What the engine is built from and what it answers: plain data, no I/O.
//!
//! The policy crate turns a validated bundle into an [`EngineInput`]; the proxy
//! and the CLI turn a request into [`RequestFacts`]; [`Decision`] is the answer.

use std::collections::BTreeMap;
use std::net::IpAddr;
use std::sync::Arc;

/// Which side of a call a policy guards.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Direction {
    /// The caller's side: policies owned by the caller's namespace.
    Egress,
    /// The callee's side: policies owned by the callee's namespace.
    Ingress,
}

/// Whether a policy's verdict is enforced or only reported.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Mode {
    Enforce,
    /// `@mode("dry-run")`: evaluated and reported as "would deny", never enforced.
    DryRun,
}

/// Where a policy was written.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct SourceLocation {
    pub file: Arc<str>,
    pub line: u32,
    pub column: u32,
}

/// One validated policy with what the bundle says about it.
#[derive(Debug, Clone)]
pub struct PolicySource {
    /// The `@id` annotation, unique in the bundle.
    pub id: String,
    pub direction: Direction,
    /// The namespace that owns it (`policies/NS/...`).
    pub namespace: String,
    pub mode: Mode,
    pub location: SourceLocation,
    pub policy: cedar_policy::Policy,
}

/// A workload of the registry.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct WorkloadFacts {
    pub spiffe_id: String,
    pub namespace: String,
    pub service_account: String,
    pub labels: BTreeMap<String, String>,
}

/// A service of the registry.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ServiceFacts {
    pub namespace: String,
    pub name: String,
    /// Host names it answers to; the first is its canonical `host`.
    pub hosts: Vec<String>,
    pub labels: BTreeMap<String, String>,
}

/// An external destination the bundle names (egress allowlist).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ExternalHostFacts {
    pub hostname: String,
    pub port: u16,
}

/// Everything an [`Engine`](super::Engine) is built from: one bundle snapshot.
#[derive(Debug, Clone, Default)]
pub struct EngineInput {
    pub policies: Vec<PolicySource>,
    pub workloads: Vec<WorkloadFacts>,
    pub services: Vec<ServiceFacts>,
    pub external_hosts: Vec<ExternalHostFacts>,
}

/// An HTTP method the schema knows, or a raw TCP connection.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Action {
    Get,
    Head,
    Post,
    Put,
    Patch,
    Delete,
    Options,
    Connect,
}

impl Action {
    /// Every action, in declaration order.
    pub const ALL: [Self; 8] = [
        Self::Get,
        Self::Head,
        Self::Post,
        Self::Put,
        Self::Patch,
        Self::Delete,
        Self::Options,
        Self::Connect,
    ];
}

/// The protocol a request arrived over.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Protocol {
    Http1,
    H2,
    Grpc,
    Tcp,
}

/// Where a request goes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Resource<'a> {
    Service { namespace: &'a str, name: &'a str },
    External { hostname: &'a str, port: u16 },
}

/// One request, already canonicalized (see [`crate::normalize`]).
#[derive(Debug, Clone, Copy)]
pub struct RequestFacts<'a> {
    /// The caller's SPIFFE ID.
    pub principal: &'a str,
    pub action: Action,
    pub resource: Resource<'a>,
    /// Canonical path, without the query.
    pub path: &'a str,
    /// Canonical host name, without the port.
    pub host: &'a str,
    pub protocol: Protocol,
    pub source_ip: Option<IpAddr>,
    /// Header lines as received: lower-case names, raw values. The engine splits
    /// comma-separated values itself.
    pub headers: &'a [(&'a str, &'a str)],
    /// Seconds since the Unix epoch.
    pub time_unix: i64,
}

/// Allow or deny.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Effect {
    Allow,
    Deny,
}

/// A policy that decided, for people and audit records (never sent to a caller).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DeterminingPolicy {
    pub id: String,
    pub location: SourceLocation,
}

/// The answer for one direction. Default deny; a forbid wins; an evaluation error
/// is a deny.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Decision {
    pub effect: Effect,
    /// A dry-run policy would have denied this request.
    pub dry_run_deny: bool,
    /// The enforced policies that determined `effect` (the permits for an allow,
    /// the forbids for an explicit deny; empty for a default deny).
    pub determining: Vec<DeterminingPolicy>,
    /// The dry-run policies that would have denied.
    pub dry_run_determining: Vec<DeterminingPolicy>,
    /// Evaluation errors, each naming its policy; any error makes the effect Deny.
    pub errors: Vec<String>,
}
