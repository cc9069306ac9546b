//! The inbound TLS step: a TLS 1.3 handshake that requires a client SVID and
//! verifies it (bundle, SPIFFE rules, revocations: `SECURITY.md` §3), bounded in
//! time and in how many may be in progress at once, and the verified peer it yields.
//!
//! A handshake in progress holds a slot of a global cap and one of its source IP's
//! cap, so one host cannot take them all; the ClientHello must arrive within a
//! short deadline, the whole handshake within a longer one, so a silent
//! connection gives its slots back quickly.

use std::collections::HashMap;
use std::io;
use std::net::{IpAddr, SocketAddr};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::SystemTime;

use palisade_ca::svid::SvidFacts;
use palisade_ca::tls::server_config;
use palisade_ca::verify::{svid_error, SvidClientVerifier};
use palisade_ca::{Serial, SpiffeId};
use rustls::server::Acceptor;
use rustls::CertificateError;
use rustls::ServerConfig;
use tokio::net::TcpStream;
use tokio::sync::{OwnedSemaphorePermit, Semaphore};
use tokio::time::Instant;
use tokio_rustls::server::TlsStream;
use tokio_rustls::LazyConfigAcceptor;

use crate::context::Context;

/// The application protocols offered, most preferred first.
const ALPN: [&[u8]; 2] = [b"h2", b"http/1.1"];

/// The HTTP version the handshake settled on.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Alpn {
    H2,
    /// `http/1.1`, or no ALPN at all.
    Http1,
}

/// The verified caller of one connection.
#[derive(Debug, Clone)]
pub(super) struct Peer {
    pub(super) id: SpiffeId,
    pub(super) serial: Serial,
    /// When the peer's certificate expires: the connection is cut then.
    pub(super) not_after: SystemTime,
    pub(super) addr: SocketAddr,
    pub(super) alpn: Alpn,
}

/// The server config, built once: the resolver swaps certificates in place on
/// rotation and the verifier reads the live [`Trust`](palisade_ca::verify::Trust).
pub(super) fn server_tls(ctx: &Context) -> Result<Arc<ServerConfig>, rustls::Error> {
    let verifier = SvidClientVerifier::new(Arc::clone(&ctx.trust), true);
    let config = server_config(Arc::clone(&ctx.resolver), verifier, &ALPN)?;
    Ok(Arc::new(config))
}

/// The caps on handshakes in progress: `Limits::max_pending_handshakes` in all and
/// `Limits::max_pending_handshakes_per_ip` from one source IP.
#[derive(Debug)]
pub(super) struct Pending {
    all: Arc<Semaphore>,
    per_ip: Arc<Mutex<HashMap<IpAddr, usize>>>,
    max_per_ip: usize,
}

/// Why a handshake could not start.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum PendingFull {
    /// Every slot is taken.
    All,
    /// Every slot of this source IP is taken.
    FromIp,
}

impl PendingFull {
    /// The metrics label.
    pub(super) fn reason(self) -> &'static str {
        match self {
            Self::All => "too_many_pending",
            Self::FromIp => "too_many_pending_from_ip",
        }
    }
}

/// One handshake's slots, given back on drop.
#[derive(Debug)]
pub(super) struct PendingSlot {
    _permit: OwnedSemaphorePermit,
    per_ip: Arc<Mutex<HashMap<IpAddr, usize>>>,
    ip: IpAddr,
}

impl Pending {
    pub(super) fn new(max: usize, max_per_ip: usize) -> Self {
        Self {
            all: Arc::new(Semaphore::new(max)),
            per_ip: Arc::default(),
            max_per_ip,
        }
    }

    /// Slots for one more handshake from `ip`, unless its own or every slot is taken.
    pub(super) fn try_enter(&self, ip: IpAddr) -> Result<PendingSlot, PendingFull> {
        let ip = ip.to_canonical();
        let mut per_ip = lock(&self.per_ip);
        let count = per_ip.get(&ip).copied().unwrap_or(0);
        if count >= self.max_per_ip {
            return Err(PendingFull::FromIp);
        }
        let permit = Arc::clone(&self.all)
            .try_acquire_owned()
            .map_err(|_| PendingFull::All)?;
        per_ip.insert(ip, count.saturating_add(1));
        Ok(PendingSlot {
            _permit: permit,
            per_ip: Arc::clone(&self.per_ip),
            ip,
        })
    }
}

impl Drop for PendingSlot {
    fn drop(&mut self) {
        let mut per_ip = lock(&self.per_ip);
        if let Some(count) = per_ip.get_mut(&self.ip) {
            *count = count.saturating_sub(1);
            if *count == 0 {
                per_ip.remove(&self.ip);
            }
        }
    }
}

fn lock<T>(mutex: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    mutex.lock().unwrap_or_else(PoisonError::into_inner)
}

/// Runs the handshake: the ClientHello within `client_hello_timeout`, the whole of
/// it within `handshake_timeout`. A refused or failed handshake is counted by
/// reason and logged; it yields nothing.
pub(super) async fn handshake(
    config: &Arc<ServerConfig>,
    ctx: &Context,
    tcp: TcpStream,
    remote: SocketAddr,
) -> Option<(TlsStream<TcpStream>, Peer)> {
    let limits = &ctx.limits;
    let deadline = Instant::now() + limits.handshake_timeout;
    let hello_deadline = deadline.min(Instant::now() + limits.client_hello_timeout);
    let accepted = match tokio::time::timeout_at(hello_deadline, LazyConfigAcceptor::new(Acceptor::default(), tcp))
        .await
    {
        Ok(Ok(start)) => tokio::time::timeout_at(deadline, start.into_stream(Arc::clone(config))).await,
        Ok(Err(e)) => Ok(Err(e)),
        Err(_) => {
            ctx.metrics.handshake_failure("client_hello_timeout");
            tracing::debug!(%remote, timeout = ?limits.client_hello_timeout, "no TLS ClientHello in time; inbound connection closed");
            return None;
        }
    };
    let tls = match accepted {
        Ok(Ok(tls)) => tls,
        Ok(Err(e)) => {
            let reason = failure_reason(&e);
            ctx.metrics.handshake_failure(reason);
            if is_certificate_refusal(reason) {
                tracing::info!(%remote, reason, error = %e, "inbound TLS handshake refused");
            } else {
                tracing::debug!(%remote, reason, error = %e, "inbound TLS handshake failed");
            }
            return None;
        }
        Err(_) => {
            ctx.metrics.handshake_failure("timeout");
            tracing::debug!(%remote, timeout = ?limits.handshake_timeout, "inbound TLS handshake timed out");
            return None;
        }
    };
    let Some(peer) = peer(&tls, remote) else {
        // Unreachable past the verifier, which refuses any leaf without one SPIFFE ID.
        ctx.metrics.handshake_failure("bad_spiffe_id");
        tracing::warn!(%remote, "inbound peer certificate has no SPIFFE ID after verification; connection closed");
        return None;
    };
    Some((tls, peer))
}

/// The peer of a completed handshake: its leaf's SPIFFE ID and serial.
fn peer(tls: &TlsStream<TcpStream>, addr: SocketAddr) -> Option<Peer> {
    let session = tls.get_ref().1;
    let leaf = session.peer_certificates()?.first()?;
    let facts = SvidFacts::parse(leaf).ok()?;
    let alpn = match session.alpn_protocol() {
        Some(b"h2") => Alpn::H2,
        _ => Alpn::Http1,
    };
    Some(Peer {
        id: facts.id?,
        serial: facts.serial,
        not_after: facts.not_after,
        addr,
        alpn,
    })
}

/// A short, stable label for a failed handshake, for metrics.
pub(super) fn failure_reason(e: &io::Error) -> &'static str {
    let Some(tls) = e.get_ref().and_then(|inner| inner.downcast_ref::<rustls::Error>()) else {
        return "io";
    };
    if let Some(svid) = svid_error(tls) {
        return svid.reason();
    }
    match tls {
        rustls::Error::NoCertificatesPresented => "no_client_cert",
        rustls::Error::InvalidCertificate(CertificateError::Expired) => "expired",
        rustls::Error::InvalidCertificate(CertificateError::NotValidYet) => "not_yet_valid",
        rustls::Error::InvalidCertificate(CertificateError::Revoked) => "revoked",
        rustls::Error::InvalidCertificate(_) => "bad_certificate",
        _ => "tls",
    }
}

/// Whether a failure was a refused client certificate (worth an info line) rather
/// than noise such as a port scan or a plaintext request.
fn is_certificate_refusal(reason: &str) -> bool {
    !matches!(reason, "io" | "tls" | "timeout" | "client_hello_timeout")
}
