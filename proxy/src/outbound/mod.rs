//! Outbound: the app's plain HTTP in, the caller's egress decision, and the request
//! out over mTLS to the destination's sidecar.
//!
//! ```text
//! accept ─▶ HTTP/1.1 or h2c ─▶ framing ─▶ request id ─▶ canonicalize ─▶ sanitize
//!        ─▶ classify ─▶ authorize (egress) ─▶ endpoint ─▶ pooled mTLS h2 ─▶ response
//! ```
//!
//! The app connects on loopback in plain text: HTTP/1.1 as an explicit proxy
//! (absolute-form) or with a `Host` header (origin-form), or HTTP/2 with prior
//! knowledge (gRPC clients). A denied request never leaves: no connection to the
//! destination is even opened. An allowed one goes to an endpoint of the service
//! over a pooled HTTP/2 connection whose server proved, in the TLS handshake, an
//! identity the registry lists for that service.
//!
//! - [`classify`] — the destination: a mesh service or not (pure).
//! - [`authorize`] — the egress decision and what it was made on (pure).
//! - [`crate::request::framing`] — one framing per HTTP/1 request, checked on the
//!   bytes; a refusal closes the connection, and fails every later request on it.
//! - `connect`, `pool` — new mTLS HTTP/2 connections, and keeping them.
//! - `forward` — the request as sent upstream, the response as the app gets it.
//!
//! Not yet: CONNECT tunnels and external hosts (allowlist, BlackHole,
//! Passthrough) are denied; see [`classify::Destination::Unknown`].

pub mod authorize;
pub mod classify;
mod connect;
mod forward;
mod pool;

use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use http::request::Parts;
use http::{HeaderMap, HeaderValue, Method, Request, Response, Version};
use hyper::body::Incoming;
use hyper::service::service_fn;
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use hyper_util::server::conn::auto;
use palisade_authz::Direction;
use palisade_policy::registry::{Endpoint, Service};
use tokio::net::{TcpListener, TcpStream};

use self::authorize::EgressRequest;
use self::classify::{classify, Destination, MeshTarget};
pub use self::connect::ConnectError;
use self::pool::Pool;
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
    if let Err(e) = server(&limits).serve_connection(TokioIo::new(io), service).await {
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

impl Outbound {
    /// One request from the app, answered, and counted.
    async fn handle(
        &self,
        app: SocketAddr,
        framing: Result<(), Refusal>,
        request: Request<Incoming>,
    ) -> Response<ProxyBody> {
        let (mut parts, body) = request.into_parts();
        let request_id = request_id::ensure(&mut parts.headers);
        let call = Call {
            app,
            request_id: &request_id,
            version: parts.version,
        };
        let close = framing.is_err();
        let mut destination = None;
        let result = match framing {
            Ok(()) => self.proxy(&call, parts, body, &mut destination).await,
            Err(refusal) => Err(refusal),
        };
        let (mut response, decision) = match result {
            Ok(response) => (response, "allow"),
            Err(refusal) => {
                let label = refusal.label();
                (refusal.into_response(&request_id), label)
            }
        };
        if close {
            // The connection's framing is in doubt: nothing more is read from it.
            close_after(&mut response);
        }
        self.ctx.metrics.request(&RequestLabels {
            source: self.ctx.id.as_str(),
            destination: destination.as_deref().unwrap_or(UNKNOWN),
            side: Direction::Egress,
            decision,
            status: response.status().as_u16(),
        });
        response
    }

    /// The pipeline, step by step; any step may refuse.
    async fn proxy(
        &self,
        call: &Call<'_>,
        mut parts: Parts,
        body: Incoming,
        destination: &mut Option<String>,
    ) -> Result<Response<ProxyBody>, Refusal> {
        check_header_count(&parts.headers, self.ctx.limits.max_headers)?;
        refuse_tunnel(&parts)?;
        let canonical = canonicalize(&parts, Some(HTTP_PORT))?;
        sanitize(&mut parts.headers, call.request_id);
        let state = snapshot(self.ctx.policy.load_full(), call)?;
        self.pool.prune_for(&state);
        let target = mesh_target(&state, &canonical, call)?;
        *destination = Some(target.service.id().to_owned());
        self.authorize(&state, call, target.service, &canonical, &parts.headers)?;
        let endpoint = self.endpoint(target.service)?;
        let upstream = forward::upstream_request(parts, body, &canonical)?;
        let response = forward::send(&self.pool, endpoint, target.service, upstream).await?;
        Ok(forward::downstream_response(response, call.request_id, call.version))
    }

    /// The caller's egress decision, logged.
    fn authorize(
        &self,
        state: &PolicyState,
        call: &Call<'_>,
        service: &Service,
        canonical: &Canonical,
        headers: &HeaderMap,
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
        decision.enforce()
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

/// CONNECT: denied until tunnels are supported.
fn refuse_tunnel(parts: &Parts) -> Result<(), Refusal> {
    if parts.method == Method::CONNECT {
        tracing::info!(target = %parts.uri, "CONNECT tunnels are not supported yet; denied");
        return Err(EGRESS_DENIED);
    }
    Ok(())
}

/// Hop-by-hop and identity headers removed, then the request id set again, so a
/// `Connection` header cannot remove it.
fn sanitize(headers: &mut HeaderMap, request_id: &HeaderValue) {
    headers::sanitize(headers);
    headers.insert(REQUEST_ID.clone(), request_id.clone());
}

/// The policy snapshot in force; none yet denies everything (fail-closed).
fn snapshot(state: Option<Arc<PolicyState>>, call: &Call<'_>) -> Result<Arc<PolicyState>, Refusal> {
    state.ok_or_else(|| {
        let request_id = call.request_id.to_str().unwrap_or_default();
        tracing::info!(request_id, "no policy snapshot yet; denied");
        EGRESS_DENIED
    })
}

/// The mesh service the request is for; anything else is denied for now (the seam
/// for the egress allowlist, BlackHole and Passthrough).
fn mesh_target<'s>(state: &'s PolicyState, canonical: &Canonical, call: &Call<'_>) -> Result<MeshTarget<'s>, Refusal> {
    let request_id = call.request_id.to_str().unwrap_or_default();
    let host = canonical.host.name();
    match classify(state, &canonical.host) {
        Destination::Mesh(target) => Ok(target),
        Destination::UnlistedPort { service, port } => {
            tracing::info!(request_id, host, port, service = %service.id(), "the service does not listen on this port; denied");
            Err(EGRESS_DENIED)
        }
        Destination::Unknown => {
            tracing::info!(request_id, host, "not a host of the registry; denied");
            Err(EGRESS_DENIED)
        }
    }
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
