//! One inbound connection after its handshake: the per-peer connection cap, the
//! registration that lets a revocation cut it, and HTTP/1.1 or HTTP/2 served with
//! every buffer and wait bounded (`SECURITY.md` §2).

use std::collections::HashMap;
use std::convert::Infallible;
use std::future::Future;
use std::sync::{Arc, Mutex, PoisonError};

use http::{Request, Response};
use hyper::body::Incoming;
use hyper::server::conn::{http1, http2};
use hyper::service::Service;
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use palisade_ca::SpiffeId;
use tokio::io::{AsyncRead, AsyncWrite};

use super::tls::Peer;
use crate::connections::{CloseSignal, Registration};
use crate::context::{Context, Limits};
use crate::request::respond::ProxyBody;

/// Live connections per peer identity.
#[derive(Debug, Default)]
pub(super) struct PeerSlots(Mutex<HashMap<SpiffeId, usize>>);

/// One connection's place in [`PeerSlots`], given back on drop.
#[derive(Debug)]
pub(super) struct Slot {
    slots: Arc<PeerSlots>,
    id: SpiffeId,
}

impl PeerSlots {
    /// A slot for one more connection from `id`, unless it has `max` already.
    fn take(self: &Arc<Self>, id: &SpiffeId, max: usize) -> Option<Slot> {
        let mut counts = self.lock();
        let count = counts.entry(id.clone()).or_insert(0);
        if *count >= max {
            return None;
        }
        *count = count.saturating_add(1);
        Some(Slot {
            slots: Arc::clone(self),
            id: id.clone(),
        })
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<SpiffeId, usize>> {
        self.0.lock().unwrap_or_else(PoisonError::into_inner)
    }
}

impl Drop for Slot {
    fn drop(&mut self) {
        let mut counts = self.slots.lock();
        if let Some(count) = counts.get_mut(&self.id) {
            *count = count.saturating_sub(1);
            if *count == 0 {
                counts.remove(&self.id);
            }
        }
    }
}

/// What keeps an admitted connection counted and registered while it lives.
#[derive(Debug)]
pub(super) struct Admission {
    _slot: Slot,
    _registration: Registration,
    pub(super) close: CloseSignal,
}

/// Admits a verified peer's connection: within its identity's cap, registered for
/// revocation cuts, and not revoked meanwhile (a revocation that arrived between
/// the handshake and the registration would otherwise miss this connection).
pub(super) fn admit(ctx: &Context, slots: &Arc<PeerSlots>, peer: &Peer) -> Option<Admission> {
    let max = ctx.limits.max_connections_per_peer;
    let Some(slot) = slots.take(&peer.id, max) else {
        ctx.metrics.handshake_failure("peer_connection_limit");
        tracing::warn!(peer = %peer.id, remote = %peer.addr, limit = max, "too many inbound connections from this peer; connection closed");
        return None;
    };
    let (registration, close) = ctx
        .connections
        .register(peer.id.clone(), peer.serial.clone(), peer.not_after);
    if ctx.trust.revocations().is_revoked(&peer.serial, &peer.id) {
        ctx.metrics.handshake_failure("revoked");
        tracing::info!(peer = %peer.id, serial = %peer.serial, "peer revoked during the handshake; connection closed");
        return None;
    }
    Some(Admission {
        _slot: slot,
        _registration: registration,
        close,
    })
}

/// Serves HTTP/1.1 until the peer is done, the connection fails, or `close` fires.
/// No upgrade (h2c included) is ever honoured.
pub(super) async fn serve_h1<IO, S>(io: IO, limits: &Limits, service: S, close: CloseSignal, peer: &Peer)
where
    IO: AsyncRead + AsyncWrite + Unpin + Send + 'static,
    S: Service<Request<Incoming>, Response = Response<ProxyBody>, Error = Infallible> + Send + 'static,
    S::Future: Send + 'static,
{
    let connection = http1::Builder::new()
        .timer(TokioTimer::new())
        .header_read_timeout(limits.header_read_timeout)
        .max_headers(limits.max_headers)
        .max_header_size(limits.max_header_bytes)
        .serve_connection(TokioIo::new(io), service);
    until_closed(connection, close, peer).await;
}

/// Serves HTTP/2 with the stream and header-list limits. h2's own flood guards stay
/// at their defaults: pending-accept resets (20), locally caused resets (1024),
/// CONTINUATION frames bounded by the header-list size, one pending PING and
/// SETTINGS acknowledgement at a time.
pub(super) async fn serve_h2<IO, S>(io: IO, limits: &Limits, service: S, close: CloseSignal, peer: &Peer)
where
    IO: AsyncRead + AsyncWrite + Unpin + Send + 'static,
    S: Service<Request<Incoming>, Response = Response<ProxyBody>, Error = Infallible> + Send + 'static,
    S::Future: Send + 'static,
{
    let connection = http2::Builder::new(TokioExecutor::new())
        .timer(TokioTimer::new())
        .max_concurrent_streams(limits.max_concurrent_streams)
        .max_header_list_size(u32::try_from(limits.max_header_bytes).unwrap_or(u32::MAX))
        .serve_connection(TokioIo::new(io), service);
    until_closed(connection, close, peer).await;
}

/// Drives a connection; a revocation or the peer's expiry drops it (and with it
/// the socket) at once.
async fn until_closed(connection: impl Future<Output = hyper::Result<()>>, mut close: CloseSignal, peer: &Peer) {
    tokio::select! {
        result = connection => {
            if let Err(e) = result {
                tracing::debug!(peer = %peer.id, remote = %peer.addr, error = %e, "inbound connection ended with an error");
            }
        }
        () = close.closed() => {
            tracing::info!(peer = %peer.id, serial = %peer.serial, remote = %peer.addr, "peer revoked or its certificate expired; live inbound connection closed");
        }
    }
}
