//! The outbound steps for hosts outside the mesh (the rules are in
//! [`crate::egress`]):
//!
//! ```text
//! plain HTTP: decide (allowlist + egress policy, mode) ─▶ resolve ─▶ check addresses ─▶ connect ─▶ HTTP/1.1
//! CONNECT:    target ─▶ not a mesh host ─▶ decide ─▶ resolve ─▶ check addresses ─▶ 200 ─▶ tunnel (SNI) ─▶ splice
//! ```
//!
//! Each refusal is a 403 and nothing is connected. Every request and tunnel is
//! reported once (metrics, log, audit record) with its final kind: a refusal of the
//! egress layer as `blackhole`, and a tunnel's allowed outcome only once its SNI
//! has been checked.

use std::net::SocketAddr;
use std::sync::Arc;

use bytes::Bytes;
use http::header::{CONTENT_LENGTH, HOST, TRANSFER_ENCODING};
use http::request::Parts;
use http::uri::Scheme;
use http::{HeaderName, HeaderValue, Response, Version};
use http_body_util::{Either, Full};
use hyper::body::Incoming;
use hyper::upgrade::OnUpgrade;
use palisade_audit::record::{Effect, ExternalKind, Side};
use palisade_authz::{normalize_host, Action, NormalizedHost};
use palisade_policy::egress::Protocol;

use super::{forward, now_unix, sanitize, Call, Outbound, Trail, EXTERNAL, HTTP_PORT};
use crate::audit::{self, ExternalFacts, PendingDecision};
use crate::egress::address::{self, AddressError};
use crate::egress::tunnel::{self, Tunnel};
use crate::egress::{self, ExternalAsk, Outcome, Verdict};
use crate::request::canonical::{self, check_header_names};
use crate::request::request_id::REQUEST_ID;
use crate::request::respond::ProxyBody;
use crate::request::{headers, Canonical, Refusal};
use crate::state::PolicyState;

/// The response header that flags a request let through by Passthrough.
pub static EGRESS_FLAG: HeaderName = HeaderName::from_static("x-palisade-egress");

impl Outbound {
    /// A plain HTTP request for a host the registry does not know.
    pub(super) async fn external(
        &self,
        call: &Call<'_>,
        state: &PolicyState,
        parts: Parts,
        body: Incoming,
        canonical: &Canonical,
        trail: &mut Trail<'_>,
    ) -> Result<Response<ProxyBody>, Refusal> {
        trail.destination = Some(EXTERNAL.to_owned());
        if parts.uri.scheme().is_some_and(|scheme| *scheme != Scheme::HTTP) {
            return Err(Refusal::BadRequest(
                "the sidecar sends plain HTTP to external hosts; open a CONNECT tunnel for https".to_owned(),
            ));
        }
        let host = canonical.host.name();
        let port = canonical.host.port().unwrap_or(HTTP_PORT);
        let verdict = {
            let headers = headers::policy_view(&parts.headers)?;
            egress::decide(
                state,
                &ExternalAsk {
                    principal: &self.ctx.id,
                    host: &canonical.host,
                    port,
                    protocol: Protocol::Http,
                    action: canonical.action,
                    path: canonical.path.path(),
                    wire: canonical.protocol,
                    headers: &headers,
                    source_ip: call.app.ip(),
                    time_unix: now_unix(),
                },
            )
        };
        trail
            .decision
            .set(self.external_decision(call, &verdict, canonical.action, canonical.path.path()));
        let report = Report::new(self, call, host, port, "http");
        let explicit = self.admitted(&verdict, &report, trail)?;
        let upstream = egress::http::upstream_request(parts, body, canonical)?;
        let addrs = self.addresses(&verdict, host, port, explicit, &report, trail).await?;
        let timeout = self.ctx.limits.connect_timeout;
        let stream = match address::connect(&verdict.resource, &addrs, timeout).await {
            Ok(stream) => stream,
            Err(e) => {
                report.send(verdict.kind(), &format!("{}; but {e}", verdict.reason));
                return Err(e.refusal());
            }
        };
        report.send(verdict.kind(), &verdict.reason);
        let response = egress::http::send(stream, &verdict.resource, upstream).await?;
        let mut response = forward::downstream_response(response, call.request_id, call.version);
        if trail.passthrough {
            response
                .headers_mut()
                .insert(EGRESS_FLAG.clone(), HeaderValue::from_static("passthrough"));
        }
        Ok(response)
    }

    /// A `CONNECT`: decided on its target's name, then answered `200` and handed
    /// to a tunnel task that checks the SNI before anything goes upstream.
    pub(super) async fn tunnel(
        &self,
        call: &Call<'_>,
        mut parts: Parts,
        trail: &mut Trail<'_>,
    ) -> Result<Response<ProxyBody>, Refusal> {
        if parts.version == Version::HTTP_2 {
            return Err(Refusal::MethodNotAllowed(
                "CONNECT is served over HTTP/1.1 only; open the tunnel on an HTTP/1.1 connection to the sidecar"
                    .to_owned(),
            ));
        }
        let target = connect_target(&parts)?;
        check_header_names(&parts)?;
        sanitize(&mut parts.headers, call.request_id);
        let state = self.snapshot(call, Action::Connect, trail)?;
        let host = target.name();
        if let Some(service) = state.service_by_host(host) {
            trail.destination = Some(service.id().to_owned());
            return Err(Refusal::TunnelToMesh(format!(
                "`{host}` is a mesh service: send it plain HTTP through this sidecar, which calls it over mTLS; \
                 CONNECT is for TLS to external hosts"
            )));
        }
        trail.destination = Some(EXTERNAL.to_owned());
        let port = target.port().unwrap_or_default();
        let verdict = {
            let headers = headers::policy_view(&parts.headers)?;
            egress::decide(
                &state,
                &ExternalAsk {
                    principal: &self.ctx.id,
                    host: &target,
                    port,
                    protocol: Protocol::Tls,
                    action: Action::Connect,
                    path: "",
                    wire: palisade_authz::Protocol::Tcp,
                    headers: &headers,
                    source_ip: call.app.ip(),
                    time_unix: now_unix(),
                },
            )
        };
        trail
            .decision
            .set(self.external_decision(call, &verdict, Action::Connect, ""));
        let report = Report::new(self, call, host, port, "tls");
        let explicit = self.admitted(&verdict, &report, trail)?;
        let addrs = self.addresses(&verdict, host, port, explicit, &report, trail).await?;
        let upgrade = parts.extensions.remove::<OnUpgrade>().ok_or_else(|| {
            Refusal::Unavailable("this connection cannot carry a tunnel; retry on a new HTTP/1.1 connection".to_owned())
        })?;
        let kind = verdict.kind();
        let tunnel = Tunnel {
            ctx: Arc::clone(&self.ctx),
            host: host.to_owned(),
            port,
            resource: verdict.resource,
            addrs,
            kind,
            reason: verdict.reason,
            request_id: report.request_id.to_owned(),
        };
        tokio::spawn(tunnel::run(tunnel, upgrade));
        let mut response = Response::new(Either::Right(Full::new(Bytes::new())));
        response
            .headers_mut()
            .insert(REQUEST_ID.clone(), call.request_id.clone());
        if trail.passthrough {
            response
                .headers_mut()
                .insert(EGRESS_FLAG.clone(), HeaderValue::from_static("passthrough"));
        }
        Ok(response)
    }

    /// Whether the verdict lets the request on (and whether its rule names the
    /// host exactly); a refusal is reported. Strict audit mode is checked here,
    /// the last step before anything is resolved or connected.
    fn admitted(&self, verdict: &Verdict, report: &Report<'_>, trail: &mut Trail) -> Result<bool, Refusal> {
        let explicit = match &verdict.outcome {
            Outcome::Refused(refusal) => {
                report.send(ExternalKind::BlackHole, &verdict.reason);
                return Err(refusal.clone());
            }
            Outcome::Allowlisted { explicit } => *explicit,
            Outcome::Passthrough => {
                trail.passthrough = true;
                false
            }
        };
        if let Err(refusal) = self.check_audit(trail) {
            report.send(
                verdict.kind(),
                &format!("{}; but auditing is unavailable", verdict.reason),
            );
            return Err(refusal);
        }
        Ok(explicit)
    }

    /// The addresses the destination's name resolves to, checked; a refused
    /// address makes the request BlackHole (and its decision a deny).
    async fn addresses(
        &self,
        verdict: &Verdict,
        host: &str,
        port: u16,
        explicit: bool,
        report: &Report<'_>,
        trail: &mut Trail<'_>,
    ) -> Result<Vec<SocketAddr>, Refusal> {
        let resolved = address::resolve(&self.ctx.egress, host, port, self.ctx.limits.connect_timeout)
            .await
            .and_then(|addrs| {
                address::check(&verdict.resource, &addrs, explicit, &self.ctx.egress.listeners).map(|()| addrs)
            });
        resolved.map_err(|e: AddressError| {
            if e.is_refusal() {
                if let Some(decision) = trail.decision.pending_mut() {
                    decision.effect = Effect::Deny;
                }
                report.send(ExternalKind::BlackHole, &e.to_string());
            } else {
                report.send(verdict.kind(), &format!("{}; but {e}", verdict.reason));
            }
            e.refusal()
        })
    }

    /// The record of an external decision, when the audit sink is enabled.
    fn external_decision(
        &self,
        call: &Call<'_>,
        verdict: &Verdict,
        action: Action,
        path: &str,
    ) -> Option<PendingDecision> {
        self.ctx.audit.enabled().then(|| PendingDecision {
            side: Side::Egress,
            effect: verdict.effect(),
            principal: self.ctx.id.to_string(),
            action: audit::action_name(action),
            resource: verdict.resource.clone(),
            path: path.to_owned(),
            policies: verdict.policies(),
            request_id: call.request_id.to_str().unwrap_or_default().to_owned(),
        })
    }
}

/// Reports one external request: everything but its kind and reason.
struct Report<'a> {
    outbound: &'a Outbound,
    host: &'a str,
    port: u16,
    protocol: &'static str,
    request_id: &'a str,
}

impl<'a> Report<'a> {
    fn new(outbound: &'a Outbound, call: &Call<'a>, host: &'a str, port: u16, protocol: &'static str) -> Self {
        Self {
            outbound,
            host,
            port,
            protocol,
            request_id: call.request_id.to_str().unwrap_or_default(),
        }
    }

    fn send(&self, kind: ExternalKind, reason: &str) {
        let ctx = &self.outbound.ctx;
        egress::report(
            ctx,
            &ExternalFacts {
                kind,
                workload: ctx.id.as_str(),
                host: self.host,
                port: self.port,
                sni: "",
                protocol: self.protocol,
                request_id: self.request_id,
                reason,
            },
        );
    }
}

/// The target of a `CONNECT`: authority-form `host:port`, agreeing with `Host`
/// when there is one, and no body.
fn connect_target(parts: &Parts) -> Result<NormalizedHost, Refusal> {
    let bad = |reason: &str| Refusal::BadRequest(reason.to_owned());
    let uri = &parts.uri;
    let authority = match (uri.scheme(), uri.authority(), uri.path_and_query()) {
        (None, Some(authority), None) => authority.as_str(),
        _ => return Err(bad("the CONNECT target must be `host:port` (authority-form)")),
    };
    let target = normalize_host(authority, None).map_err(canonical::refusal)?;
    if target.port().is_none() {
        return Err(bad("the CONNECT target must name a port: `host:port`"));
    }
    let mut hosts = parts.headers.get_all(HOST).iter();
    match (hosts.next(), hosts.next()) {
        (_, Some(_)) => return Err(bad("the request has several Host headers")),
        (Some(value), None) => {
            let host = value.to_str().ok().and_then(|v| normalize_host(v, None).ok());
            let agrees =
                host.is_some_and(|h| h.name() == target.name() && h.port().is_none_or(|p| Some(p) == target.port()));
            if !agrees {
                return Err(bad("the Host header and the CONNECT target differ"));
            }
        }
        (None, None) => {}
    }
    let body = parts.headers.contains_key(TRANSFER_ENCODING)
        || parts
            .headers
            .get_all(CONTENT_LENGTH)
            .iter()
            .any(|length| length.as_bytes() != b"0");
    if body {
        return Err(bad("a CONNECT request carries no body"));
    }
    Ok(target)
}

#[cfg(test)]
mod tests {
    use http::Request;

    use super::*;

    fn target(uri: &str, headers: &[(&str, &str)]) -> Result<(String, Option<u16>), u16> {
        let mut request = Request::builder().method("CONNECT").uri(uri);
        for (name, value) in headers {
            request = request.header(*name, *value);
        }
        let parts = request.body(()).unwrap().into_parts().0;
        connect_target(&parts)
            .map(|host| (host.name().to_owned(), host.port()))
            .map_err(|refusal| refusal.status().as_u16())
    }

    #[test]
    fn a_connect_target_is_host_and_port_and_nothing_else() {
        assert_eq!(
            target("API.Stripe.com:443", &[]),
            Ok(("api.stripe.com".to_owned(), Some(443)))
        );
        assert_eq!(
            target("api.stripe.com:443", &[("host", "api.stripe.com:443")]),
            Ok(("api.stripe.com".to_owned(), Some(443)))
        );
        assert_eq!(target("[::1]:8443", &[]), Ok(("[::1]".to_owned(), Some(8443))));
        let refused = [
            ("api.stripe.com", vec![]),
            ("https://api.stripe.com:443/", vec![]),
            ("/path", vec![]),
            ("api.stripe.com:443", vec![("host", "evil.example:443")]),
            ("api.stripe.com:443", vec![("content-length", "5")]),
            ("api.stripe.com:443", vec![("transfer-encoding", "chunked")]),
            ("user@api.stripe.com:443", vec![]),
        ];
        for (uri, headers) in refused {
            assert_eq!(target(uri, &headers), Err(400), "{uri} {headers:?}");
        }
    }
}
