//! What every part of a running sidecar shares: who it is, whom it trusts, the
//! policy in force, its live connections, its metrics, its audit sink, how it
//! reaches external hosts and its limits.

use std::sync::Arc;
use std::time::Duration;

use palisade_ca::tls::SvidResolver;
use palisade_ca::verify::Trust;
use palisade_ca::SpiffeId;

use crate::audit::AuditSink;
use crate::connections::LiveConnections;
use crate::egress::EgressSettings;
use crate::metrics::Metrics;
use crate::state::PolicyHandle;

/// The sidecar's shared state; cheap to clone behind an `Arc`.
#[derive(Debug)]
pub struct Context {
    /// The workload this sidecar stands beside.
    pub id: SpiffeId,
    /// Its current SVID, swapped in place on rotation.
    pub resolver: Arc<SvidResolver>,
    /// The trust bundle and revocations every peer is verified against.
    pub trust: Arc<Trust>,
    /// The policy snapshot in force (none: deny everything).
    pub policy: PolicyHandle,
    /// Live peer connections, for revocation cuts.
    pub connections: Arc<LiveConnections>,
    pub metrics: Arc<Metrics>,
    /// Where decision and external-destination records go.
    pub audit: Arc<dyn AuditSink>,
    /// Forward nothing (503) while `audit` is not accepting records.
    pub strict_audit: bool,
    /// Name mapping for external hosts, and this sidecar's own listeners (never a
    /// destination).
    pub egress: EgressSettings,
    pub limits: Limits,
}

/// Bounds on every buffer and wait (`SECURITY.md` §2).
#[derive(Debug, Clone)]
pub struct Limits {
    /// Time a peer has to finish the TLS handshake.
    pub handshake_timeout: Duration,
    /// Time a peer has to send its whole ClientHello (within `handshake_timeout`),
    /// so a silent connection gives its handshake slot back quickly.
    pub client_hello_timeout: Duration,
    /// Time a client has to send a request's headers (HTTP/1).
    pub header_read_timeout: Duration,
    /// Most header lines in one request (more: 431).
    pub max_headers: usize,
    /// Most bytes of request line and headers (more: 431).
    pub max_header_bytes: usize,
    /// Most concurrent streams on one HTTP/2 connection.
    pub max_concurrent_streams: u32,
    /// Most live connections from one peer identity on the inbound port.
    pub max_connections_per_peer: usize,
    /// Most TLS handshakes in progress at once on the inbound port.
    pub max_pending_handshakes: usize,
    /// Most TLS handshakes in progress at once from one source IP, so one host
    /// cannot take every slot of `max_pending_handshakes`.
    pub max_pending_handshakes_per_ip: usize,
    /// Time to connect to the app or to another sidecar (and to wait for a free
    /// app connection when all are busy).
    pub connect_timeout: Duration,
    /// Most HTTP/1.1 connections open to the app at once (each carries one request
    /// at a time); beyond it requests wait up to `connect_timeout`, then get 503.
    pub max_app_connections: usize,
    /// Time an app has, after the `200` to its `CONNECT`, to send its whole TLS
    /// ClientHello.
    pub tunnel_hello_timeout: Duration,
    /// A tunnel with no byte either way for this long is closed.
    pub tunnel_idle_timeout: Duration,
}

impl Default for Limits {
    fn default() -> Self {
        Self {
            handshake_timeout: Duration::from_secs(10),
            client_hello_timeout: Duration::from_secs(2),
            header_read_timeout: Duration::from_secs(10),
            max_headers: 100,
            max_header_bytes: 64 * 1024,
            max_concurrent_streams: 256,
            max_connections_per_peer: 256,
            max_pending_handshakes: 256,
            max_pending_handshakes_per_ip: 16,
            connect_timeout: Duration::from_secs(5),
            max_app_connections: 512,
            tunnel_hello_timeout: Duration::from_secs(5),
            tunnel_idle_timeout: Duration::from_secs(300),
        }
    }
}
