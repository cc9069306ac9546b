//! One request, decided on both sides with the policies that decided it.

use palisade_authz::engine::{Action, Decision, Direction, Effect, Engine, Protocol, RequestFacts, Resource};
use palisade_authz::normalize::{normalize_host, normalize_path, NormalizeError};

use crate::egress::Protocol as EgressProtocol;
use crate::testcases::{is_header_name, Target};
pub use crate::testcases::{parse_method, parse_target};
use crate::Bundle;

/// A request to explain, as a person or a test case states it.
#[derive(Debug, Clone)]
pub struct Query<'a> {
    /// The caller's SPIFFE ID.
    pub from: &'a str,
    pub to: &'a Target,
    pub action: Action,
    /// The request target as the app sends it: path and optional query.
    pub target: &'a str,
    /// `(name, value)`; names are matched case-insensitively.
    pub headers: &'a [(String, String)],
    pub now_unix: i64,
}

/// How a request is decided.
#[derive(Debug, Clone)]
pub struct Explanation {
    /// The canonical path the policies saw.
    pub path: String,
    /// The host the policies saw.
    pub host: String,
    pub egress: Decision,
    /// `None` for an external destination (it has no sidecar of ours).
    pub ingress: Option<Decision>,
    /// For an external destination: whether `egress.yaml` lists it for the caller.
    pub allowlisted: Option<bool>,
    pub overall: Effect,
}

/// The request cannot be explained as given.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum ExplainError {
    #[error("the sidecar would refuse this request before any policy: {0}")]
    BadRequest(#[from] NormalizeError),
    #[error("service `{0}` is not in the bundle's services.yaml; name it as NAMESPACE/NAME")]
    UnknownService(String),
    #[error("header name `{0}` is not a valid HTTP token (the sidecar would answer 400)")]
    BadHeaderName(String),
}

/// The port an external destination is reached on when none is given.
pub const DEFAULT_EXTERNAL_PORT: u16 = 443;

/// Decides `query` against `bundle` with `engine` (built from that bundle).
pub fn explain(bundle: &Bundle, engine: &Engine, query: &Query<'_>) -> Result<Explanation, ExplainError> {
    let normalized = normalize_path(query.target)?;
    let mut names: Vec<String> = Vec::with_capacity(query.headers.len());
    for (name, _) in query.headers {
        if !is_header_name(name) {
            return Err(ExplainError::BadHeaderName(name.escape_debug().to_string()));
        }
        names.push(name.to_ascii_lowercase());
    }
    let headers: Vec<(&str, &str)> = names
        .iter()
        .map(String::as_str)
        .zip(query.headers.iter().map(|(_, v)| v.as_str()))
        .collect();
    let (resource, host, port) = match query.to {
        Target::Service { namespace, name } => {
            let service = bundle
                .registry()
                .service(namespace, name)
                .ok_or_else(|| ExplainError::UnknownService(format!("{namespace}/{name}")))?;
            let host = service.hosts().first().cloned().unwrap_or_default();
            (Resource::Service { namespace, name }, host, None)
        }
        Target::External { host, port } => {
            let port = port.unwrap_or(DEFAULT_EXTERNAL_PORT);
            (Resource::External { hostname: host, port }, host.clone(), Some(port))
        }
    };
    let facts = RequestFacts {
        principal: query.from,
        action: query.action,
        resource,
        path: normalized.path(),
        host: &host,
        protocol: if query.action == Action::Connect {
            Protocol::Tcp
        } else {
            Protocol::Http1
        },
        source_ip: None,
        headers: &headers,
        time_unix: query.now_unix,
    };
    let egress = engine.evaluate(Direction::Egress, &facts);
    let (ingress, allowlisted) = match port {
        None => (Some(engine.evaluate(Direction::Ingress, &facts)), None),
        Some(port) => (None, Some(allowlisted(bundle, query.from, &host, port))),
    };
    let allowed = egress.effect == Effect::Allow
        && ingress.as_ref().is_none_or(|d| d.effect == Effect::Allow)
        && allowlisted.unwrap_or(true);
    Ok(Explanation {
        path: normalized.path().to_string(),
        host,
        egress,
        ingress,
        allowlisted,
        overall: if allowed { Effect::Allow } else { Effect::Deny },
    })
}

/// Whether `egress.yaml` lets `from` reach `host:port` (over HTTP or TLS).
fn allowlisted(bundle: &Bundle, from: &str, host: &str, port: u16) -> bool {
    let (Some(workload), Ok(host)) = (bundle.registry().workload(from), normalize_host(host, None)) else {
        return false;
    };
    [EgressProtocol::Http, EgressProtocol::Tls]
        .into_iter()
        .any(|p| bundle.egress().allowing(workload, &host, port, p).is_some())
}
