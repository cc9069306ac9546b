//! Inbound: the callee's half of every mesh call.
//!
//! A connection goes through, in order:
//!
//! 1. `tls` — TLS 1.3 with a required client SVID, verified against the trust
//!    bundle, the SPIFFE rules and the revocations; bounded in time and in how many
//!    handshakes may be pending.
//! 2. `connection` — the peer's identity within its connection cap and registered,
//!    so a revocation cuts the live connection; then HTTP/2 (ALPN `h2`) or HTTP/1.1,
//!    with header, stream and timeout limits. No h2c upgrade.
//!
//! and each request, in order (`handle_request`):
//!
//! 1. framing ([`crate::request::framing`]) — an HTTP/1 head with no single
//!    framing, or any request after one the watch could not follow: 400 (431 for
//!    an oversized head), and the connection is closed;
//! 2. `x-request-id` kept or set;
//! 3. canonicalized (`SECURITY.md` §1) on the headers as received, since framing
//!    and upgrade checks need the hop-by-hop headers;
//! 4. hop-by-hop and identity headers stripped (from trailers too, both ways);
//! 5. `authorize` — the service the host names must be served here (else 421),
//!    then the callee's ingress policies decide (none yet: 403, fail-closed);
//! 6. strict audit mode: nothing reaches the app while the audit sink is not
//!    accepting records (503);
//! 7. `forward` — `x-forwarded-client-cert` set from the verified peer, and the
//!    canonical request streamed to the app on loopback.
//!
//! Every request is counted in the metrics and its decision logged; each decision
//! is recorded through the audit sink once the caller's status is known.

mod authorize;
mod connection;
mod forward;
#[cfg(test)]
mod tests;
mod tls;

use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime};

use http::request::Parts;
use http::{HeaderValue, Request, Response};
use http_body_util::Either;
use hyper::body::Incoming;
use hyper::service::service_fn;
use palisade_audit::record::Side;
use palisade_authz::{Direction, Effect};
use palisade_ca::svid::unix_seconds;
use rustls::ServerConfig;
use tokio::net::{TcpListener, TcpStream};
use tokio::task::JoinSet;

pub use authorize::DecisionRecord;

use self::authorize::{authorize, Ask, UNKNOWN};
use self::connection::PeerSlots;
use self::forward::{App, Target};
use self::tls::{Alpn, Peer, PendingSlot};
use crate::audit::{self, PendingDecision};
use crate::context::Context;
use crate::metrics::RequestLabels;
use crate::request::body::SanitizedTrailers;
use crate::request::framing::{close_after, Verdicts, Watched};
use crate::request::request_id::{self, REQUEST_ID};
use crate::request::respond::ProxyBody;
use crate::request::{canonicalize, headers, Canonical, Refusal};

/// One inbound listener's settings.
#[derive(Debug)]
pub struct Inbound {
    pub ctx: Arc<Context>,
    /// The app beside this sidecar, on loopback.
    pub app: SocketAddr,
    pub app_protocol: AppProtocol,
}

pub use crate::config::AppProtocol;

/// Serves the inbound port until the task running it is aborted; the connections
/// it spawned end with it.
pub async fn serve(listener: TcpListener, inbound: Arc<Inbound>) {
    let shared = match Listener::new(&inbound) {
        Ok(shared) => Arc::new(shared),
        Err(e) => {
            tracing::error!(error = %e, "cannot build the inbound TLS configuration; inbound port not served");
            return;
        }
    };
    let mut connections = JoinSet::new();
    loop {
        tokio::select! {
            accepted = listener.accept() => match accepted {
                Ok((tcp, remote)) => shared.accept(&mut connections, tcp, remote),
                Err(e) => {
                    tracing::warn!(error = %e, "inbound accept failed");
                    tokio::time::sleep(Duration::from_millis(100)).await;
                }
            },
            Some(_) = connections.join_next() => {}
        }
    }
}

/// What every connection of one listener shares.
struct Listener {
    ctx: Arc<Context>,
    tls: Arc<ServerConfig>,
    pending: tls::Pending,
    peers: Arc<PeerSlots>,
    app: App,
}

/// What every request of one connection shares.
#[derive(Debug)]
struct Connection {
    listener: Arc<Listener>,
    peer: Peer,
    /// HTTP/1 only: the verdict on each request's framing, in order.
    verdicts: Option<Verdicts>,
}

impl std::fmt::Debug for Listener {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Listener")
            .field("id", &self.ctx.id)
            .field("app", &self.app)
            .finish_non_exhaustive()
    }
}

impl Listener {
    fn new(inbound: &Inbound) -> Result<Self, rustls::Error> {
        let ctx = Arc::clone(&inbound.ctx);
        Ok(Self {
            tls: tls::server_tls(&ctx)?,
            pending: tls::Pending::new(
                ctx.limits.max_pending_handshakes,
                ctx.limits.max_pending_handshakes_per_ip,
            ),
            peers: Arc::default(),
            app: App::new(inbound.app, inbound.app_protocol, &ctx.limits),
            ctx,
        })
    }

    /// Spawns the connection, unless too many handshakes are pending already, in
    /// all or from its source IP.
    fn accept(self: &Arc<Self>, connections: &mut JoinSet<()>, tcp: TcpStream, remote: SocketAddr) {
        let slot = match self.pending.try_enter(remote.ip()) {
            Ok(slot) => slot,
            Err(full) => {
                self.ctx.metrics.handshake_failure(full.reason());
                tracing::warn!(%remote, reason = full.reason(), "too many inbound TLS handshakes in progress; connection closed");
                return;
            }
        };
        connections.spawn(handle_connection(Arc::clone(self), tcp, remote, slot));
    }
}

/// One connection: TLS, then the peer admitted, then HTTP.
async fn handle_connection(listener: Arc<Listener>, tcp: TcpStream, remote: SocketAddr, pending: PendingSlot) {
    let _ = tcp.set_nodelay(true);
    let handshake = tls::handshake(&listener.tls, &listener.ctx, tcp, remote).await;
    drop(pending);
    let Some((tls, peer)) = handshake else {
        return;
    };
    let Some(admission) = connection::admit(&listener.ctx, &listener.peers, &peer) else {
        return;
    };
    let ctx = Arc::clone(&listener.ctx);
    let limits = &ctx.limits;
    let service = |verdicts| {
        let connection = Arc::new(Connection {
            listener: Arc::clone(&listener),
            peer: peer.clone(),
            verdicts,
        });
        service_fn(move |request| handle_request(Arc::clone(&connection), request))
    };
    match peer.alpn {
        Alpn::H2 => connection::serve_h2(tls, limits, service(None), admission.close, &peer).await,
        Alpn::Http1 => {
            let (io, verdicts) = Watched::new(tls, limits);
            connection::serve_h1(io, limits, service(Some(verdicts)), admission.close, &peer).await;
        }
    }
}

/// One request, every step in order; see the module documentation.
async fn handle_request(
    connection: Arc<Connection>,
    request: Request<Incoming>,
) -> Result<Response<ProxyBody>, Infallible> {
    let arrived = Instant::now();
    let ctx = &connection.listener.ctx;
    let (mut parts, body) = request.into_parts();
    let request_id = request_id::ensure(&mut parts.headers);
    let mut recorder = audit::Recorder::new(&*ctx.audit, arrived);
    let checked = check(&connection, &mut parts, &request_id).and_then(|allowed| {
        // Strict audit mode: nothing reaches the app without a place held for its record.
        if ctx.strict_audit {
            if let Err(refusal) = recorder.reserve() {
                return Err(Refused {
                    refusal,
                    destination: allowed.destination,
                    close: false,
                    decision: allowed.decision,
                });
            }
        }
        Ok(allowed)
    });
    let (response, destination, decision) = match checked {
        Ok(allowed) => {
            recorder.set(allowed.decision.map(|d| *d));
            headers::set_xfcc(&mut parts.headers, &ctx.id, &connection.peer.id);
            let target = Target {
                path: allowed.canonical.path.request_target(),
                host: &allowed.canonical.host,
                protocol: allowed.canonical.protocol,
            };
            let response = match connection.listener.app.forward(parts, body, &target).await {
                Ok(response) => app_response(response, &request_id),
                Err(refusal) => refusal.into_response(&request_id),
            };
            (response, allowed.destination, "allow")
        }
        Err(refused) => {
            recorder.set(refused.decision.map(|d| *d));
            let decision = refused.refusal.label();
            let mut response = refused.refusal.into_response(&request_id);
            if refused.close {
                close_after(&mut response);
            }
            (response, refused.destination, decision)
        }
    };
    let status = response.status().as_u16();
    ctx.metrics.request(&RequestLabels {
        source: connection.peer.id.as_str(),
        destination: &destination,
        side: Direction::Ingress,
        decision,
        status,
    });
    recorder.finish(status);
    Ok(response)
}

/// A request that may go to the app.
struct Allowed {
    canonical: Canonical,
    destination: String,
    /// The decision's record, when the audit sink is enabled.
    decision: Option<Box<PendingDecision>>,
}

/// A request answered by the sidecar itself.
struct Refused {
    refusal: Refusal,
    /// The service (`ns/name`), or `unknown`: never a name the peer sent.
    destination: String,
    /// The request had no single framing: the connection is closed after the answer.
    close: bool,
    /// The decision's record, when one was made and the audit sink is enabled.
    decision: Option<Box<PendingDecision>>,
}

impl Refused {
    fn early(refusal: Refusal) -> Self {
        tracing::debug!(reason = refusal.label(), "inbound request refused before authorization");
        Self {
            refusal,
            destination: UNKNOWN.to_owned(),
            close: false,
            decision: None,
        }
    }

    fn framing(refusal: Refusal) -> Self {
        Self {
            close: true,
            ..Self::early(refusal)
        }
    }
}

/// Steps 1–5: framing, canonical form, sanitized headers, the ingress decision.
fn check(connection: &Connection, parts: &mut Parts, request_id: &HeaderValue) -> Result<Allowed, Refused> {
    let ctx = &connection.listener.ctx;
    if let Some(verdicts) = &connection.verdicts {
        verdicts.next().map_err(Refused::framing)?;
    }
    let canonical = canonicalize(parts, None).map_err(Refused::early)?;
    headers::sanitize(&mut parts.headers);
    // A `Connection: x-request-id` header cannot remove the id either.
    parts.headers.insert(REQUEST_ID.clone(), request_id.clone());
    let view = headers::policy_view(&parts.headers).map_err(Refused::early)?;
    let state = ctx.policy.load();
    let verdict = authorize(
        state.as_deref(),
        &Ask {
            local: &ctx.id,
            peer: &connection.peer.id,
            source_ip: connection.peer.addr.ip().to_canonical(),
            request_id,
            request: &canonical,
            headers: &view,
            time_unix: unix_seconds(SystemTime::now()),
        },
    );
    log_decision(&verdict.record);
    let decision = ctx.audit.enabled().then(|| Box::new(pending(&verdict.record)));
    let destination = verdict.record.destination;
    match verdict.refusal {
        None => Ok(Allowed {
            canonical,
            destination,
            decision,
        }),
        Some(refusal) => Err(Refused {
            refusal,
            destination,
            close: false,
            decision,
        }),
    }
}

/// The audit record of an ingress decision, before its status is known.
fn pending(record: &DecisionRecord) -> PendingDecision {
    let effect = match (record.effect, record.dry_run_deny) {
        (Effect::Deny, _) => palisade_audit::record::Effect::Deny,
        (Effect::Allow, true) => palisade_audit::record::Effect::DryRunDeny,
        (Effect::Allow, false) => palisade_audit::record::Effect::Allow,
    };
    PendingDecision {
        side: Side::Ingress,
        effect,
        principal: record.peer.clone(),
        action: audit::action_name(record.action),
        resource: record.destination.clone(),
        path: record.path.clone(),
        policies: match effect {
            // What determined a dry-run denial: the dry-run policies that would deny.
            palisade_audit::record::Effect::DryRunDeny => record.dry_run_determining.clone(),
            _ => record.determining.clone(),
        },
        request_id: record.request_id.clone(),
    }
}

fn log_decision(record: &DecisionRecord) {
    let policies = record.determining.join(",");
    let dry_run_policies = record.dry_run_determining.join(",");
    macro_rules! log {
        ($level:expr) => {
            tracing::event!(
                $level,
                request_id = %record.request_id,
                peer = %record.peer,
                service = %record.destination,
                host = %record.host,
                method = ?record.action,
                path = %record.path,
                effect = ?record.effect,
                policies = %policies,
                dry_run_deny = record.dry_run_deny,
                dry_run_policies = %dry_run_policies,
                errors = ?record.errors,
                snapshot = ?record.snapshot_version,
                "ingress decision"
            )
        };
    }
    if record.effect == Effect::Allow && !record.dry_run_deny {
        log!(tracing::Level::DEBUG);
    } else {
        log!(tracing::Level::INFO);
    }
}

/// The app's response as the caller gets it: no hop-by-hop or identity headers,
/// in its head or its trailers, and the request id.
fn app_response(mut response: Response<Incoming>, request_id: &HeaderValue) -> Response<ProxyBody> {
    headers::sanitize(response.headers_mut());
    response.headers_mut().insert(REQUEST_ID.clone(), request_id.clone());
    response.map(|body| Either::Left(SanitizedTrailers::new(body)))
}
