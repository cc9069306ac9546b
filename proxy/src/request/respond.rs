//! Every refusal a caller can see, and its HTTP status, in one place.
//!
//! A decision's refusal says only which side denied and the request id: never the
//! policy that decided or its text (those go to logs and audit records). A refusal
//! of the egress layer that no policy made (BlackHole, a tunnel to a mesh host)
//! also says why, in words that name only the destination.

use bytes::Bytes;
use http::header::CONTENT_TYPE;
use http::{HeaderValue, Response, StatusCode};
use http_body_util::{Either, Full};
use palisade_authz::Direction;

use super::body::Streamed;
use super::request_id::REQUEST_ID;

/// A response body: the upstream's, streamed with its trailers sanitized, or one
/// the sidecar wrote itself.
pub type ProxyBody = Either<Streamed, Full<Bytes>>;

/// Why the sidecar answered a request itself instead of forwarding it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Refusal {
    /// A policy decision (or the absence of any policy) denied the request: 403.
    Denied { side: Direction },
    /// An external destination refused by the egress layer (not allowlisted in
    /// `REGISTRY_ONLY` mode, an address Passthrough never reaches, …): 403, with
    /// the reason.
    BlackHole(String),
    /// A `CONNECT` to a mesh service, which is reached over plain HTTP: 403.
    TunnelToMesh(String),
    /// The request has no single meaning: 400.
    BadRequest(String),
    /// The method is not one policies can name: 405.
    MethodNotAllowed(String),
    /// The request-target is too long: 414.
    TargetTooLong,
    /// Too many or too large headers: 431.
    HeadersTooLarge,
    /// The request names a host this workload does not serve: 421.
    Misdirected,
    /// A protocol upgrade (WebSocket, h2c): 501, not supported yet.
    UpgradeUnsupported,
    /// The destination could not be reached: 502.
    BadGateway(String),
    /// No endpoint or no identity to call with yet: 503.
    Unavailable(String),
    /// Strict audit mode, and the audit sink is not accepting records: 503.
    AuditUnavailable,
}

impl Refusal {
    /// The status the caller gets.
    pub fn status(&self) -> StatusCode {
        match self {
            Self::Denied { .. } | Self::BlackHole(_) | Self::TunnelToMesh(_) => StatusCode::FORBIDDEN,
            Self::BadRequest(_) => StatusCode::BAD_REQUEST,
            Self::MethodNotAllowed(_) => StatusCode::METHOD_NOT_ALLOWED,
            Self::TargetTooLong => StatusCode::URI_TOO_LONG,
            Self::HeadersTooLarge => StatusCode::REQUEST_HEADER_FIELDS_TOO_LARGE,
            Self::Misdirected => StatusCode::MISDIRECTED_REQUEST,
            Self::UpgradeUnsupported => StatusCode::NOT_IMPLEMENTED,
            Self::BadGateway(_) => StatusCode::BAD_GATEWAY,
            Self::Unavailable(_) | Self::AuditUnavailable => StatusCode::SERVICE_UNAVAILABLE,
        }
    }

    /// The short label metrics and logs use.
    pub fn label(&self) -> &'static str {
        match self {
            Self::Denied { .. } => "deny",
            Self::BlackHole(_) => "blackhole",
            Self::TunnelToMesh(_) => "tunnel_to_mesh",
            Self::BadRequest(_) => "bad_request",
            Self::MethodNotAllowed(_) => "method_not_allowed",
            Self::TargetTooLong => "target_too_long",
            Self::HeadersTooLarge => "headers_too_large",
            Self::Misdirected => "misdirected",
            Self::UpgradeUnsupported => "upgrade_unsupported",
            Self::BadGateway(_) => "bad_gateway",
            Self::Unavailable(_) => "unavailable",
            Self::AuditUnavailable => "audit_unavailable",
        }
    }

    /// The JSON body: `{"decision":"deny","side":…,"requestId":…}` for a denial,
    /// with `"reason"` before the id for an egress-layer refusal, and
    /// `{"error":…,"reason":…,"requestId":…}` otherwise.
    pub fn body(&self, request_id: &HeaderValue) -> String {
        let request_id = request_id.to_str().unwrap_or_default();
        // Fields in this order whatever serde_json's map does; every value escaped.
        let quoted = |s: &str| serde_json::Value::from(s).to_string();
        match self {
            Self::Denied { side } => format!(
                r#"{{"decision":"deny","side":{},"requestId":{}}}"#,
                quoted(side_name(*side)),
                quoted(request_id)
            ),
            Self::BlackHole(reason) | Self::TunnelToMesh(reason) => format!(
                r#"{{"decision":"deny","side":"egress","reason":{},"requestId":{}}}"#,
                quoted(reason),
                quoted(request_id)
            ),
            other => format!(
                r#"{{"error":{},"reason":{},"requestId":{}}}"#,
                quoted(other.label()),
                quoted(&other.reason()),
                quoted(request_id)
            ),
        }
    }

    /// The response.
    pub fn into_response(self, request_id: &HeaderValue) -> Response<ProxyBody> {
        let body = self.body(request_id);
        let mut response = Response::new(Either::Right(Full::new(Bytes::from(body))));
        *response.status_mut() = self.status();
        let headers = response.headers_mut();
        headers.insert(CONTENT_TYPE, HeaderValue::from_static("application/json"));
        headers.insert(REQUEST_ID.clone(), request_id.clone());
        response
    }

    fn reason(&self) -> String {
        match self {
            Self::Denied { .. } => "denied".to_owned(),
            Self::BadRequest(reason)
            | Self::BlackHole(reason)
            | Self::TunnelToMesh(reason)
            | Self::MethodNotAllowed(reason)
            | Self::BadGateway(reason)
            | Self::Unavailable(reason) => reason.clone(),
            Self::TargetTooLong => "the request-target is too long".to_owned(),
            Self::HeadersTooLarge => "the request headers are too many or too large".to_owned(),
            Self::Misdirected => {
                "this workload does not serve the requested host; check the host the request names".to_owned()
            }
            Self::UpgradeUnsupported => "protocol upgrades are not supported through the mesh".to_owned(),
            Self::AuditUnavailable => "auditing is unavailable and this sidecar runs in strict audit mode".to_owned(),
        }
    }
}

/// `ingress` or `egress`.
pub fn side_name(side: Direction) -> &'static str {
    match side {
        Direction::Egress => "egress",
        Direction::Ingress => "ingress",
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_denial_names_the_side_and_request_and_nothing_else() {
        let id = HeaderValue::from_static("r-1");
        let body = Refusal::Denied {
            side: Direction::Ingress,
        }
        .body(&id);
        assert_eq!(body, r#"{"decision":"deny","side":"ingress","requestId":"r-1"}"#);
    }

    #[test]
    fn an_egress_layer_refusal_says_why_and_a_strict_audit_refusal_is_503() {
        let id = HeaderValue::from_static("r-2");
        let body = Refusal::BlackHole("`evil.example:80` is not in the egress allowlist".to_owned()).body(&id);
        assert_eq!(
            body,
            r#"{"decision":"deny","side":"egress","reason":"`evil.example:80` is not in the egress allowlist","requestId":"r-2"}"#
        );
        assert_eq!(Refusal::AuditUnavailable.status(), 503);
        assert_eq!(
            Refusal::AuditUnavailable.body(&id),
            r#"{"error":"audit_unavailable","reason":"auditing is unavailable and this sidecar runs in strict audit mode","requestId":"r-2"}"#
        );
    }

    #[test]
    fn statuses() {
        assert_eq!(Refusal::HeadersTooLarge.status(), 431);
        assert_eq!(Refusal::TargetTooLong.status(), 414);
        assert_eq!(Refusal::Misdirected.status(), 421);
        assert_eq!(Refusal::BadRequest(String::new()).status(), 400);
        assert_eq!(
            Refusal::Denied {
                side: Direction::Egress
            }
            .status(),
            403
        );
    }
}
