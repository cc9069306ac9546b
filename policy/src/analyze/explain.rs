//! One request, decided on both sides with the policies that decided it.

use palisade_authz::engine::{Action, Decision, Direction, Effect, Engine, Protocol, RequestFacts, Resource};
use palisade_authz::normalize::{normalize_host, normalize_path, NormalizeError};

use crate::egress::Protocol as EgressProtocol;
use crate::testcases::Target;
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

/// Reads `--to`: `NAMESPACE/NAME` for a mesh service, `HOST[:PORT]` otherwise.
pub fn parse_target(to: &str) -> Result<Target, String> {
    if let Some((namespace, name)) = to.split_once('/') {
        if namespace.is_empty() || name.is_empty() || name.contains('/') {
            return Err(format!("`{to}` is neither NAMESPACE/SERVICE nor HOST[:PORT]"));
        }
        return Ok(Target::Service {
            namespace: namespace.into(),
            name: name.into(),
        });
    }
    let host = normalize_host(to, None).map_err(|e| e.to_string())?;
    Ok(Target::External {
        host: host.name().into(),
        port: host.port(),
    })
}

/// Reads an HTTP method (upper-case, as on the wire) or `CONNECT` for raw TCP.
pub fn parse_method(method: &str) -> Option<Action> {
    Some(match method {
        "GET" => Action::Get,
        "HEAD" => Action::Head,
        "POST" => Action::Post,
        "PUT" => Action::Put,
        "PATCH" => Action::Patch,
        "DELETE" => Action::Delete,
        "OPTIONS" => Action::Options,
        "CONNECT" => Action::Connect,
        _ => return None,
    })
}

/// The port an external destination is reached on when none is given.
pub const DEFAULT_EXTERNAL_PORT: u16 = 443;

/// Decides `query` against `bundle` with `engine` (built from that bundle).
pub fn explain(bundle: &Bundle, engine: &Engine, query: &Query<'_>) -> Result<Explanation, ExplainError> {
    let normalized = normalize_path(query.target)?;
    let mut names: Vec<String> = Vec::with_capacity(query.headers.len());
    for (name, _) in query.headers {
        if name.is_empty() || !name.bytes().all(is_token_byte) {
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

/// RFC 9110 token characters.
fn is_token_byte(b: u8) -> bool {
    b.is_ascii_alphanumeric() || b"!#$%&'*+-.^_`|~".contains(&b)
}
