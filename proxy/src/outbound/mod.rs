//! Outbound: the app's plain HTTP in, the caller's egress decision, and the request
//! out: over mTLS to the destination's sidecar, or to an external host.
//!
//! ```text
//! accept ─▶ HTTP/1.1 or h2c ─▶ framing ─▶ request id ─▶ CONNECT? ──────────────▶ tunnel (egress)
//!        ─▶ canonicalize ─▶ sanitize ─▶ classify ─┬─ mesh: authorize (egress) ─▶ endpoint ─▶ pooled mTLS h2
//!                                                 └─ external: allowlist + authorize ─▶ resolve ─▶ HTTP/1.1
//! ```
//!
//! The app connects on loopback in plain text: HTTP/1.1 as an explicit proxy
//! (absolute-form) or with a `Host` header (origin-form), or HTTP/2 with prior
//! knowledge (gRPC clients). A denied request never leaves: no connection to the
//! destination is even opened. An allowed one goes to an endpoint of the service
//! over a pooled HTTP/2 connection whose server proved, in the TLS handshake, an
//! identity the registry lists for that service.
//!
//! A host the registry does not know is external: the egress allowlist, BlackHole
//! and Passthrough decide it, and `CONNECT` opens TLS tunnels to such hosts (see
//! [`crate::egress`] for the rules).
//!
//! - [`mod@classify`] — the destination: a mesh service or not (pure).
//! - [`authorize`] — the egress decision and what it was made on (pure).
//! - [`crate::request::framing`] — one framing per HTTP/1 request, checked on the
//!   bytes; a refusal closes the connection, and fails every later request on it.
//! - `connect`, `pool` — new mTLS HTTP/2 connections, and keeping them.
//! - `forward` — the request as sent upstream, the response as the app gets it.
//! - `external` — the steps for external hosts and tunnels.
//!
//! Every request is counted in the metrics once its response is known; each
//! decision made (mesh or external) and each external request or tunnel is
//! recorded through the audit sink ([`crate::audit`]). In strict audit mode nothing
//! is forwarded while the sink is not accepting (503).

pub mod authorize;
pub mod classify;
mod connect;
mod external;
mod forward;
mod pool;

use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use http::request::Parts;
use http::{HeaderMap, HeaderValue, Method, Request, Response, Version};
use hyper::body::Incoming;
use hyper::service::service_fn;
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use hyper_util::server::conn::auto;
use palisade_audit::record::{Effect, Side};
use palisade_authz::Direction;
use palisade_policy::registry::{Endpoint, Service};
use tokio::net::{TcpListener, TcpStream};

use self::authorize::EgressRequest;
use self::classify::{classify, Destination};
pub use self::connect::ConnectError;
use self::pool::Pool;
use crate::audit::{self, PendingDecision};
use crate::context::{Context, Limits};
use crate::metrics::RequestLabels;
use crate::request::framing::{close_after, Watched};
use crate::request::request_id::{self, REQUEST_ID};
use crate::request::respond::ProxyBody;
use crate::request::{canonicalize, headers, Canonical, Refusal};
use crate::state::PolicyState;

/// The port a `Host` without one means.
const HTTP_PORT: u16 = 80;

/// hyper's smallest read buffer for HTTP/1.
const MIN_HTTP1_BUFFER: usize = 8192;

/// The metrics destination of a request that reached no registered destination.
const UNKNOWN: &str = "unknown";

/// The metrics destination of every request for a host outside the mesh (its host
/// is counted in `palisade_proxy_external_total` only).
const EXTERNAL: &str = "external";

/// A denial on this side.
const EGRESS_DENIED: Refusal = Refusal::Denied {
    side: Direction::Egress,
};

/// The outbound side of a sidecar.
#[derive(Debug)]
pub struct Outbound {
    pub ctx: Arc<Context>,
    pool: Pool,
    /// Round-robin over a service's endpoints.
    next_endpoint: AtomicUsize,
}

impl Outbound {
    /// The outbound side of the sidecar `ctx` describes, with an empty pool.
    pub fn new(ctx: Arc<Context>) -> Arc<Self> {
        Arc::new(Self {
            pool: Pool::new(Arc::clone(&ctx)),
            ctx,
            next_endpoint: AtomicUsize::new(0),
        })
    }
}

/// Serves the app's connections on `listener` until the task is aborted.
pub async fn serve(listener: TcpListener, outbound: Arc<Outbound>) {
    loop {
        match listener.accept().await {
            Ok((stream, app)) => {
                tokio::spawn(serve_connection(Arc::clone(&outbound), stream, app));
            }
            Err(e) => {
                // Out of file descriptors and the like: back off rather than spin.
                tracing::warn!(error = %e, "cannot accept an app connection");
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
        }
    }
}

/// One app connection: HTTP/1.1 or HTTP/2 with prior knowledge, detected from the
/// first bytes.
async fn serve_connection(outbound: Arc<Outbound>, stream: TcpStream, app: SocketAddr) {
    // Latency over throughput for small requests; failing to set it changes nothing else.
    let _ = stream.set_nodelay(true);
    let limits = outbound.ctx.limits.clone();
    let (io, verdicts) = Watched::new(stream, &limits);
    let service = service_fn(move |request: Request<Incoming>| {
        // Taken here, as hyper hands the requests over: in arrival order.
        let framing = match request.version() {
            Version::HTTP_2 => Ok(()),
            _ => verdicts.next(),
        };
        let outbound = Arc::clone(&outbound);
        async move { Ok::<_, Infallible>(outbound.handle(app, framing, request).await) }
    });
    // With upgrades: a `CONNECT` answered `200` hands its connection to the tunnel.
    let server = server(&limits);
    if let Err(e) = server.serve_connection_with_upgrades(TokioIo::new(io), service).await {
        tracing::debug!(%app, error = %e, "an app connection ended with an error");
    }
}

/// The HTTP server the app talks to, bounded by `limits`.
fn server(limits: &Limits) -> auto::Builder<TokioExecutor> {
    let mut builder = auto::Builder::new(TokioExecutor::new());
    builder
        .http1()
        .timer(TokioTimer::new())
        .header_read_timeout(limits.header_read_timeout)
        .max_headers(limits.max_headers)
        .max_buf_size(limits.max_header_bytes.max(MIN_HTTP1_BUFFER));
    builder
        .http2()
        .timer(TokioTimer::new())
        .max_header_list_size(u32::try_from(limits.max_header_bytes).unwrap_or(u32::MAX))
        .max_concurrent_streams(limits.max_concurrent_streams);
    builder
}

/// What every step may need to know about the request in hand.
#[derive(Debug)]
struct Call<'a> {
    app: SocketAddr,
    request_id: &'a HeaderValue,
    version: Version,
}

/// What the steps learned that the metrics and the audit record need once the
/// response is known.
#[derive(Debug)]
struct Trail<'a> {
    /// The metrics destination: a service id, or [`EXTERNAL`]; none is [`UNKNOWN`].
    destination: Option<String>,
    /// The request went out through Passthrough.
    passthrough: bool,
    /// The egress decision made, when one was and the audit sink is enabled;
    /// recorded even when the app goes away before the answer.
    decision: audit::Recorder<'a>,
}

impl Trail<'_> {
    /// The metrics decision of a forwarded request.
    fn forwarded(&self) -> &'static str {
        if self.passthrough {
            "passthrough"
        } else {
            "allow"
        }
    }
}

impl Outbound {
    /// One request from the app, answered, counted and audited.
    async fn handle(
        &self,
        app: SocketAddr,
        framing: Result<(), Refusal>,
        request: Request<Incoming>,
    ) -> Response<ProxyBody> {
        let arrived = Instant::now();
        let (mut parts, body) = request.into_parts();
        let request_id = request_id::ensure(&mut parts.headers);
        let call = Call {
            app,
            request_id: &request_id,
            version: parts.version,
        };
        // An app may send tunnel bytes right after its `CONNECT`, before the answer.
        let close = framing.is_err() || (parts.method == Method::CONNECT && parts.version != Version::HTTP_2);
        let mut trail = Trail {
            destination: None,
            passthrough: false,
            decision: audit::Recorder::new(&*self.ctx.audit, arrived),
        };
        let result = match framing {
            Ok(()) => self.proxy(&call, parts, body, &mut trail).await,
            Err(refusal) => Err(refusal),
        };
        let (mut response, decision) = match result {
            Ok(response) => (response, trail.forwarded()),
            Err(refusal) => {
                let label = refusal.label();
                (refusal.into_response(&request_id), label)
            }
        };
        if close && !response.status().is_success() {
            // The connection's framing is in doubt, or what follows a refused
            // `CONNECT` is not HTTP: nothing more is read from it.
            close_after(&mut response);
        }
        let status = response.status().as_u16();
        self.ctx.metrics.request(&RequestLabels {
            source: self.ctx.id.as_str(),
            destination: trail.destination.as_deref().unwrap_or(UNKNOWN),
            side: Direction::Egress,
            decision,
            status,
        });
        trail.decision.finish(status);
        response
    }

    /// The pipeline, step by step; any step may refuse.
    async fn proxy(
        &self,
        call: &Call<'_>,
        mut parts: Parts,
        body: Incoming,
        trail: &mut Trail<'_>,
    ) -> Result<Response<ProxyBody>, Refusal> {
        check_header_count(&parts.headers, self.ctx.limits.max_headers)?;
        if parts.method == Method::CONNECT {
            return self.tunnel(call, parts, trail).await;
        }
        let canonical = canonicalize(&parts, Some(HTTP_PORT))?;
        sanitize(&mut parts.headers, call.request_id);
        let state = self.snapshot(call, canonical.action, trail)?;
        self.pool.prune_for(&state);
        let target = match classify(&state, &canonical.host) {
            Destination::Mesh(target) => target,
            Destination::UnlistedPort { service, port } => {
                let request_id = call.request_id.to_str().unwrap_or_default();
                tracing::info!(request_id, port, service = %service.id(), "the service does not listen on this port; denied");
                trail.destination = Some(service.id().to_owned());
                trail
                    .decision
                    .set(self.refused_decision(call, service.id(), canonical.action, canonical.path.path()));
                return Err(EGRESS_DENIED);
            }
            Destination::Unknown => return self.external(call, &state, parts, body, &canonical, trail).await,
        };
        trail.destination = Some(target.service.id().to_owned());
        self.authorize(&state, call, target.service, &canonical, &parts.headers, trail)?;
        self.check_audit(trail)?;
        let endpoint = self.endpoint(target.service)?;
        let upstream = forward::upstream_request(parts, body, &canonical)?;
        let response = forward::send(&self.pool, endpoint, target.service, upstream).await?;
        Ok(forward::downstream_response(response, call.request_id, call.version))
    }

    /// The policy snapshot in force; none yet denies everything (fail-closed).
    fn snapshot(
        &self,
        call: &Call<'_>,
        action: palisade_authz::Action,
        trail: &mut Trail<'_>,
    ) -> Result<Arc<PolicyState>, Refusal> {
        self.ctx.policy.load_full().ok_or_else(|| {
            let request_id = call.request_id.to_str().unwrap_or_default();
            tracing::info!(request_id, "no policy snapshot yet; denied");
            trail.decision.set(self.refused_decision(call, UNKNOWN, action, ""));
            EGRESS_DENIED
        })
    }

    /// The caller's egress decision, logged and noted for the audit record.
    fn authorize(
        &self,
        state: &PolicyState,
        call: &Call<'_>,
        service: &Service,
        canonical: &Canonical,
        headers: &HeaderMap,
        trail: &mut Trail<'_>,
    ) -> Result<(), Refusal> {
        let headers = headers::policy_view(headers)?;
        let decision = authorize::decide(
            state.engine(),
            EgressRequest {
                request_id: call.request_id,
                principal: &self.ctx.id,
                service,
                canonical,
                headers: &headers,
                source_ip: call.app.ip(),
                time_unix: now_unix(),
            },
        );
        decision.log();
        if self.ctx.audit.enabled() {
            trail.decision.set(Some(PendingDecision {
                side: Side::Egress,
                effect: audit::effect(&decision.decision),
                principal: self.ctx.id.to_string(),
                action: audit::action_name(canonical.action),
                resource: service.id().to_owned(),
                path: canonical.path.path().to_owned(),
                policies: audit::policies(&decision.decision),
                request_id: call.request_id.to_str().unwrap_or_default().to_owned(),
            }));
        }
        decision.enforce()
    }

    /// The record of a deny made without asking the engine (no snapshot, a port
    /// the service does not list), when the audit sink is enabled.
    fn refused_decision(
        &self,
        call: &Call<'_>,
        resource: &str,
        action: palisade_authz::Action,
        path: &str,
    ) -> Option<PendingDecision> {
        self.ctx.audit.enabled().then(|| PendingDecision {
            side: Side::Egress,
            effect: Effect::Deny,
            principal: self.ctx.id.to_string(),
            action: audit::action_name(action),
            resource: resource.to_owned(),
            path: path.to_owned(),
            policies: Vec::new(),
            request_id: call.request_id.to_str().unwrap_or_default().to_owned(),
        })
    }

    /// Strict audit mode: nothing is forwarded without a place held for its record.
    fn check_audit(&self, trail: &mut Trail<'_>) -> Result<(), Refusal> {
        if self.ctx.strict_audit {
            trail.decision.reserve()?;
        }
        Ok(())
    }

    /// The next endpoint of the service, round-robin.
    fn endpoint<'s>(&self, service: &'s Service) -> Result<&'s Endpoint, Refusal> {
        let endpoints = service.endpoints();
        let n = self.next_endpoint.fetch_add(1, Ordering::Relaxed);
        endpoints
            .get(n % endpoints.len().max(1))
            .ok_or_else(|| Refusal::Unavailable(format!("`{}` has no endpoints in the registry", service.id())))
    }
}

/// More header lines than allowed: 431 (hyper bounds HTTP/1 itself; this bounds h2).
fn check_header_count(headers: &HeaderMap, max: usize) -> Result<(), Refusal> {
    if headers.len() > max {
        return Err(Refusal::HeadersTooLarge);
    }
    Ok(())
}

/// Hop-by-hop and identity headers removed, then the request id set again, so a
/// `Connection` header cannot remove it.
fn sanitize(headers: &mut HeaderMap, request_id: &HeaderValue) {
    headers::sanitize(headers);
    headers.insert(REQUEST_ID.clone(), request_id.clone());
}

fn now_unix() -> i64 {
    let seconds = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap_or_default()
        .as_secs();
    i64::try_from(seconds).unwrap_or(i64::MAX)
}

#[cfg(test)]
mod tests;
