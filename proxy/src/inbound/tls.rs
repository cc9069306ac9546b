//! The inbound TLS step: a TLS 1.3 handshake that requires a client SVID and
//! verifies it (bundle, SPIFFE rules, revocations: `SECURITY.md` §3), bounded in
//! time and in how many may be in progress at once, and the verified peer it yields.

use std::io;
use std::net::SocketAddr;
use std::sync::Arc;

use palisade_ca::svid::SvidFacts;
use palisade_ca::tls::server_config;
use palisade_ca::verify::{svid_error, SvidClientVerifier};
use palisade_ca::{Serial, SpiffeId};
use rustls::CertificateError;
use tokio::net::TcpStream;
use tokio::sync::{OwnedSemaphorePermit, Semaphore};
use tokio_rustls::server::TlsStream;
use tokio_rustls::TlsAcceptor;

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
    pub(super) addr: SocketAddr,
    pub(super) alpn: Alpn,
}

/// The acceptor, built once: the resolver swaps certificates in place on rotation
/// and the verifier reads the live [`Trust`](palisade_ca::verify::Trust).
pub(super) fn acceptor(ctx: &Context) -> Result<TlsAcceptor, rustls::Error> {
    let verifier = SvidClientVerifier::new(Arc::clone(&ctx.trust), true);
    let config = server_config(Arc::clone(&ctx.resolver), verifier, &ALPN)?;
    Ok(TlsAcceptor::from(Arc::new(config)))
}

/// The cap on handshakes in progress (`Limits::max_pending_handshakes`).
#[derive(Debug)]
pub(super) struct Pending(Arc<Semaphore>);

impl Pending {
    pub(super) fn new(max: usize) -> Self {
        Self(Arc::new(Semaphore::new(max)))
    }

    /// A slot for one more handshake, or none when all are taken.
    pub(super) fn try_enter(&self) -> Option<OwnedSemaphorePermit> {
        Arc::clone(&self.0).try_acquire_owned().ok()
    }
}

/// Runs the handshake within the context's deadline. A refused or failed handshake
/// is counted by reason and logged; it yields nothing.
pub(super) async fn handshake(
    acceptor: &TlsAcceptor,
    ctx: &Context,
    tcp: TcpStream,
    remote: SocketAddr,
) -> Option<(TlsStream<TcpStream>, Peer)> {
    let tls = match tokio::time::timeout(ctx.limits.handshake_timeout, acceptor.accept(tcp)).await {
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
            tracing::debug!(%remote, timeout = ?ctx.limits.handshake_timeout, "inbound TLS handshake timed out");
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
    !matches!(reason, "io" | "tls" | "timeout")
}
