//! rustls verifiers built on [`verify_svid`]: every mTLS peer of the mesh uses these.
//!
//! The bundle and the revocation set live in a [`Trust`] that is swapped atomically
//! when a new bundle or revocation list arrives; each handshake reads the current
//! snapshot without a lock. Session resumption is disabled by the configs in
//! [`crate::tls`], so no handshake ever skips these checks.

use std::sync::Arc;
use std::time::{Duration, SystemTime};

use arc_swap::ArcSwap;
use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::server::danger::{ClientCertVerified, ClientCertVerifier};
use rustls::{CertificateError, DigitallySignedStruct, DistinguishedName, OtherError, SignatureScheme};
use rustls_pki_types::{CertificateDer, ServerName, UnixTime};

use super::cache::{self, VerifiedCache};
use super::{verify_svid, SvidError, Usage, VerifiedSvid};
use crate::bundle::TrustBundle;
use crate::revocation::RevocationSet;
use crate::spiffe_id::SpiffeId;

/// The live trust state of a peer: its trust bundle and the newest revocation set.
#[derive(Debug)]
pub struct Trust {
    bundle: ArcSwap<TrustBundle>,
    revocations: ArcSwap<RevocationSet>,
    pub(super) verified: ArcSwap<VerifiedCache>,
}

impl Trust {
    pub fn new(bundle: TrustBundle, revocations: RevocationSet) -> Arc<Self> {
        let bundle = Arc::new(bundle);
        Arc::new(Self {
            verified: ArcSwap::from_pointee(VerifiedCache::empty(Arc::clone(&bundle))),
            bundle: ArcSwap::new(bundle),
            revocations: ArcSwap::from_pointee(revocations),
        })
    }

    pub fn bundle(&self) -> Arc<TrustBundle> {
        self.bundle.load_full()
    }

    pub fn revocations(&self) -> Arc<RevocationSet> {
        self.revocations.load_full()
    }

    /// Replaces the bundle (root rotation). The trust domain must stay the same. The
    /// verified intermediates that a root of the new bundle still signed carry over.
    pub fn set_bundle(&self, bundle: TrustBundle) -> bool {
        if bundle.trust_domain() != self.bundle.load().trust_domain() {
            return false;
        }
        let mut bundle = bundle;
        let known: Vec<CertificateDer<'static>> = self.bundle.load().verified_intermediates().cloned().collect();
        bundle.add_intermediates(&known);
        self.bundle.store(Arc::new(bundle));
        true
    }

    /// Adds the intermediates of a chain this peer received from its CA to the
    /// bundle's verified shortcuts (see [`TrustBundle::add_intermediates`]). A bundle
    /// swapped in meanwhile is kept: the update retries on top of it.
    pub fn learn_intermediates(&self, intermediates: &[CertificateDer<'_>]) {
        self.bundle.rcu(|current| {
            if intermediates.iter().all(|i| current.verified_intermediate(i).is_some()) {
                return Arc::clone(current);
            }
            let mut next = TrustBundle::clone(current);
            if next.add_intermediates(intermediates) > 0 {
                Arc::new(next)
            } else {
                Arc::clone(current)
            }
        });
    }

    /// Installs a newer revocation set; an older or equal version is ignored so a
    /// replayed list can never un-revoke anything. Returns whether it was installed.
    pub fn update_revocations(&self, set: RevocationSet) -> bool {
        let mut installed = false;
        self.revocations.rcu(|current| {
            installed = set.version() > current.version();
            if installed {
                Arc::new(set.clone())
            } else {
                Arc::clone(current)
            }
        });
        installed
    }

    /// Verifies a chain against the current snapshot. A chain that passed before
    /// under this bundle is answered from the cache (see `verify/cache.rs`), which
    /// re-checks validity and revocation; any other goes through [`verify_svid`].
    pub fn verify(
        &self,
        leaf: &CertificateDer<'_>,
        intermediates: &[CertificateDer<'_>],
        usage: Usage,
        now: SystemTime,
    ) -> Result<VerifiedSvid, SvidError> {
        let bundle = self.bundle.load_full();
        let revocations = self.revocations.load();
        let key = cache::key(usage, leaf, intermediates);
        if let Some(answer) = self.verified.load().lookup(&bundle, &key, &revocations, now) {
            return answer;
        }
        let verified = verify_svid(leaf, intermediates, &bundle, &revocations, usage, now)?;
        if intermediates.len() > 1 {
            return Ok(verified);
        }
        self.verified.rcu(
            |current| match current.with(&bundle, key, &verified, leaf, intermediates) {
                Some(next) => Arc::new(next),
                None => Arc::clone(current),
            },
        );
        Ok(verified)
    }
}

/// Client side: verifies the server's SVID and that its ID is one of the expected
/// identities (secure naming). The TLS server name is ignored: identity is the
/// SPIFFE ID, never a DNS name.
#[derive(Debug)]
pub struct SvidServerVerifier {
    trust: Arc<Trust>,
    expected: Vec<SpiffeId>,
}

impl SvidServerVerifier {
    /// `expected` lists the IDs allowed to serve this destination; it must not be empty.
    pub fn new(trust: Arc<Trust>, expected: Vec<SpiffeId>) -> Arc<Self> {
        Arc::new(Self { trust, expected })
    }

    fn check(
        &self,
        leaf: &CertificateDer<'_>,
        intermediates: &[CertificateDer<'_>],
        now: UnixTime,
    ) -> Result<VerifiedSvid, SvidError> {
        let verified = self.trust.verify(leaf, intermediates, Usage::Server, system_now(now))?;
        if !self.expected.contains(&verified.id) {
            return Err(SvidError::UnexpectedId {
                id: verified.id,
                expected: list(&self.expected),
            });
        }
        Ok(verified)
    }
}

impl ServerCertVerifier for SvidServerVerifier {
    fn verify_server_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        intermediates: &[CertificateDer<'_>],
        _server_name: &ServerName<'_>,
        _ocsp_response: &[u8],
        now: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        self.check(end_entity, intermediates, now).map_err(to_rustls)?;
        Ok(ServerCertVerified::assertion())
    }

    fn verify_tls12_signature(
        &self,
        _message: &[u8],
        _cert: &CertificateDer<'_>,
        _dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        Err(tls12_refused())
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        tls13_signature(message, cert, dss)
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        supported_schemes()
    }
}

/// Server side: verifies a client's SVID. With `mandatory` false a client without a
/// certificate is admitted unauthenticated (the CA's join-token path); one that
/// presents a certificate must still pass every check.
#[derive(Debug)]
pub struct SvidClientVerifier {
    trust: Arc<Trust>,
    mandatory: bool,
}

impl SvidClientVerifier {
    pub fn new(trust: Arc<Trust>, mandatory: bool) -> Arc<Self> {
        Arc::new(Self { trust, mandatory })
    }
}

impl ClientCertVerifier for SvidClientVerifier {
    fn offer_client_auth(&self) -> bool {
        true
    }

    fn client_auth_mandatory(&self) -> bool {
        self.mandatory
    }

    fn root_hint_subjects(&self) -> &[DistinguishedName] {
        &[]
    }

    fn verify_client_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        intermediates: &[CertificateDer<'_>],
        now: UnixTime,
    ) -> Result<ClientCertVerified, rustls::Error> {
        self.trust
            .verify(end_entity, intermediates, Usage::Client, system_now(now))
            .map_err(to_rustls)?;
        Ok(ClientCertVerified::assertion())
    }

    fn verify_tls12_signature(
        &self,
        _message: &[u8],
        _cert: &CertificateDer<'_>,
        _dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        Err(tls12_refused())
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        tls13_signature(message, cert, dss)
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        supported_schemes()
    }
}

/// Maps a refusal to the rustls error that carries it (alerts and logs say why);
/// the [`SvidError`] stays reachable through [`OtherError`] for metrics.
fn to_rustls(e: SvidError) -> rustls::Error {
    let cert_error = match e {
        SvidError::Expired => CertificateError::Expired,
        SvidError::NotYetValid => CertificateError::NotValidYet,
        SvidError::RevokedSerial { .. } | SvidError::RevokedId { .. } | SvidError::RevokedIssuer { .. } => {
            CertificateError::Revoked
        }
        other => CertificateError::Other(OtherError(Arc::new(other))),
    };
    rustls::Error::InvalidCertificate(cert_error)
}

/// The [`SvidError`] behind a handshake failure, when one of our verifiers refused.
pub fn svid_error(e: &rustls::Error) -> Option<&SvidError> {
    match e {
        rustls::Error::InvalidCertificate(CertificateError::Other(OtherError(inner))) => inner.downcast_ref(),
        _ => None,
    }
}

fn tls13_signature(
    message: &[u8],
    cert: &CertificateDer<'_>,
    dss: &DigitallySignedStruct,
) -> Result<HandshakeSignatureValid, rustls::Error> {
    rustls::crypto::verify_tls13_signature(
        message,
        cert,
        dss,
        &crate::tls::provider().signature_verification_algorithms,
    )
}

fn supported_schemes() -> Vec<SignatureScheme> {
    crate::tls::provider()
        .signature_verification_algorithms
        .supported_schemes()
}

fn tls12_refused() -> rustls::Error {
    rustls::Error::General("TLS 1.2 is not allowed in the mesh".into())
}

fn system_now(now: UnixTime) -> SystemTime {
    SystemTime::UNIX_EPOCH + Duration::from_secs(now.as_secs())
}

fn list(ids: &[SpiffeId]) -> String {
    ids.iter().map(SpiffeId::as_str).collect::<Vec<_>>().join(", ")
}
