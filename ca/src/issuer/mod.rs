//! Issuing certificates: the CA's chain (root → intermediate) and X.509-SVID leaves
//! signed by the intermediate from a workload's CSR — for the identity the CA
//! attested, never for one the CSR merely names.

mod csr;
pub(crate) mod template;

pub use template::BACKDATE;

use std::time::{Duration, SystemTime};

use rcgen::{Issuer, KeyPair, SigningKey, SubjectPublicKeyInfo};
use rustls_pki_types::{CertificateDer, PrivateKeyDer, PrivatePkcs8KeyDer};
use time::OffsetDateTime;

use crate::bundle::TrustBundle;
use crate::serial::Serial;
use crate::spiffe_id::{SpiffeId, TrustDomain};
use crate::svid::{parse_certificate, system_time, Svid};

/// The lifetime of a leaf when none is asked for.
pub const DEFAULT_LEAF_TTL: Duration = Duration::from_secs(3600);
/// The longest leaf lifetime the CA signs.
pub const MAX_LEAF_TTL: Duration = Duration::from_secs(24 * 3600);
/// Lifetime of a root made by `palisade ca init`.
pub const ROOT_LIFETIME: time::Duration = time::Duration::days(3650);
/// Lifetime of the intermediate signing CA.
pub const INTERMEDIATE_LIFETIME: time::Duration = time::Duration::days(365);

/// Why the CA refused to issue. Nothing is stored when any of these is returned.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum IssueError {
    #[error("the CSR is not a valid PKCS#10 request: {0}")]
    MalformedCsr(String),
    #[error("the CSR's signature does not verify with its own public key")]
    CsrSignature,
    #[error(
        "the CSR must name exactly one SAN, the URI `{attested}` the CA attested for this caller; it names {found}"
    )]
    SanMismatch { attested: SpiffeId, found: String },
    #[error("the CSR asks for a CA certificate; the CA signs only leaf SVIDs")]
    CaRequested,
    #[error("the CSR asks for {0}, which an SVID never has; request only the SPIFFE ID URI SAN")]
    ExcessUsage(String),
    #[error("the CSR carries an extension the CA does not sign; request only the SPIFFE ID URI SAN")]
    UnsupportedCsrExtension,
    #[error("the CSR's key is too weak or unsupported: {0}; use ECDSA P-256 (the default), P-384, Ed25519 or RSA of 2048 bits or more")]
    WeakKey(String),
    #[error("a lifetime of {requested}s was asked for; the CA signs from 1s up to {max}s (24 h)", max = MAX_LEAF_TTL.as_secs())]
    BadTtl { requested: u64 },
    #[error("the root certificate cannot be used: {0}")]
    BadRoot(String),
    #[error("the CA could not sign: {0}")]
    Internal(String),
}

/// A leaf the CA signed for a CSR.
#[derive(Debug, Clone)]
pub struct IssuedCert {
    pub leaf: CertificateDer<'static>,
    pub id: SpiffeId,
    pub serial: Serial,
    pub not_before: SystemTime,
    pub not_after: SystemTime,
}

/// The keys and certificates made by [`new_ca`].
#[derive(Debug)]
pub struct CaMaterial {
    pub root_cert: CertificateDer<'static>,
    /// `None` when the root was plugged in: its key stays with its owner.
    pub root_key: Option<KeyPair>,
    pub intermediate_cert: CertificateDer<'static>,
    pub intermediate_key: KeyPair,
}

/// Makes a new CA: a root (generated, or the given plug-in root) and an intermediate
/// signed by it.
pub fn new_ca(
    td: &TrustDomain,
    now: SystemTime,
    plug_in_root: Option<(CertificateDer<'static>, KeyPair)>,
) -> Result<CaMaterial, IssueError> {
    let now = OffsetDateTime::from(now);
    let (root_cert, root_key, root_issuer) = match plug_in_root {
        Some((cert, key)) => {
            check_plug_in_root(&cert, &key, now)?;
            let issuer = Issuer::from_ca_cert_der(&cert, key).map_err(|e| IssueError::BadRoot(e.to_string()))?;
            (cert, None, issuer)
        }
        None => {
            let key = KeyPair::generate().map_err(internal)?;
            let params = template::root(td, now, ROOT_LIFETIME)?;
            let cert = params.self_signed(&key).map_err(internal)?.der().clone();
            let issuer_key =
                KeyPair::from_pkcs8_der_and_sign_algo(&PrivatePkcs8KeyDer::from(key.serialize_der()), key.algorithm())
                    .map_err(internal)?;
            (cert, Some(key), Issuer::new(params, issuer_key))
        }
    };
    let intermediate_key = KeyPair::generate().map_err(internal)?;
    let intermediate_cert = template::intermediate(td, now, INTERMEDIATE_LIFETIME)?
        .signed_by(&intermediate_key, &root_issuer)
        .map_err(internal)?
        .der()
        .clone();
    Ok(CaMaterial {
        root_cert,
        root_key,
        intermediate_cert,
        intermediate_key,
    })
}

fn check_plug_in_root(cert: &CertificateDer<'_>, key: &KeyPair, now: OffsetDateTime) -> Result<(), IssueError> {
    let parsed = parse_certificate(cert).map_err(|e| IssueError::BadRoot(e.to_string()))?;
    if !parsed.is_ca() {
        return Err(IssueError::BadRoot(
            "it is not a CA certificate (basicConstraints cA is false)".into(),
        ));
    }
    let ku = parsed.key_usage().map_err(|e| IssueError::BadRoot(e.to_string()))?;
    if ku.is_some_and(|ku| !ku.value.key_cert_sign()) {
        return Err(IssueError::BadRoot(
            "its key usage does not allow signing certificates (keyCertSign)".into(),
        ));
    }
    if parsed.public_key().subject_public_key.data.as_ref() != key.public_key_raw() {
        return Err(IssueError::BadRoot("the key does not belong to the certificate".into()));
    }
    let validity = parsed.validity();
    if now.unix_timestamp() < validity.not_before.timestamp() || now.unix_timestamp() > validity.not_after.timestamp() {
        return Err(IssueError::BadRoot("it is not valid at this time".into()));
    }
    Ok(())
}

/// The running CA's signing half: the intermediate's key and the chain above it.
pub struct CaSigner {
    trust_domain: TrustDomain,
    issuer: Issuer<'static, KeyPair>,
    chain: Vec<CertificateDer<'static>>,
    not_after: SystemTime,
    bundle: TrustBundle,
}

impl std::fmt::Debug for CaSigner {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("CaSigner")
            .field("trust_domain", &self.trust_domain)
            .finish_non_exhaustive()
    }
}

impl CaSigner {
    /// `intermediate` signs; `bundle` holds the roots it chains to.
    pub fn new(intermediate: CertificateDer<'static>, key: KeyPair, bundle: TrustBundle) -> Result<Self, IssueError> {
        let parsed = parse_certificate(&intermediate).map_err(|e| IssueError::BadRoot(e.to_string()))?;
        let not_after = system_time(parsed.validity().not_after.timestamp());
        if parsed.public_key().subject_public_key.data.as_ref() != key.public_key_raw() {
            return Err(IssueError::BadRoot(
                "the intermediate key does not belong to the intermediate certificate".into(),
            ));
        }
        let issuer = Issuer::from_ca_cert_der(&intermediate, key).map_err(internal)?;
        Ok(Self {
            trust_domain: bundle.trust_domain().clone(),
            issuer,
            chain: vec![intermediate],
            not_after,
            bundle,
        })
    }

    pub fn trust_domain(&self) -> &TrustDomain {
        &self.trust_domain
    }

    /// The certificates between a leaf and the root (the intermediate).
    pub fn chain(&self) -> &[CertificateDer<'static>] {
        &self.chain
    }

    pub fn bundle(&self) -> &TrustBundle {
        &self.bundle
    }

    /// Signs `message` with the intermediate's key (ECDSA P-256 / SHA-256, DER).
    pub fn sign(&self, message: &[u8]) -> Result<Vec<u8>, IssueError> {
        self.issuer.key().sign(message).map_err(internal)
    }

    pub(crate) fn issuer(&self) -> &Issuer<'static, KeyPair> {
        &self.issuer
    }

    /// Signs a leaf for `attested` from a CSR that asks for exactly that identity.
    pub fn sign_csr(
        &self,
        csr_der: &[u8],
        attested: &SpiffeId,
        ttl: Duration,
        now: SystemTime,
    ) -> Result<IssuedCert, IssueError> {
        let spki = csr::check_csr(csr_der, attested)?;
        let public_key = SubjectPublicKeyInfo::from_der(&spki).map_err(|e| IssueError::WeakKey(e.to_string()))?;
        self.sign_leaf(attested, &public_key, ttl, now)
    }

    /// Mints a key and an SVID here (`palisade ca issue`, for operators and tests:
    /// the key is written out by the caller, so this is not for workloads).
    pub fn mint(&self, id: &SpiffeId, ttl: Duration, now: SystemTime) -> Result<Svid, IssueError> {
        let key = KeyPair::generate().map_err(internal)?;
        let issued = self.sign_leaf(id, &key, ttl, now)?;
        let mut chain = vec![issued.leaf];
        chain.extend(self.chain.iter().cloned());
        let der = PrivateKeyDer::Pkcs8(PrivatePkcs8KeyDer::from(key.serialize_der()));
        Svid::new(chain, der).map_err(|e| IssueError::Internal(e.to_string()))
    }

    fn sign_leaf(
        &self,
        id: &SpiffeId,
        public_key: &impl rcgen::PublicKeyData,
        ttl: Duration,
        now: SystemTime,
    ) -> Result<IssuedCert, IssueError> {
        if ttl.is_zero() || ttl > MAX_LEAF_TTL {
            return Err(IssueError::BadTtl {
                requested: ttl.as_secs(),
            });
        }
        if !id.is_member_of(&self.trust_domain) {
            return Err(IssueError::Internal(format!(
                "`{id}` is not in trust domain `{}`",
                self.trust_domain
            )));
        }
        let not_after = (now + ttl).min(self.not_after);
        if not_after <= now {
            return Err(IssueError::Internal(
                "the intermediate CA certificate has expired; rotate it".into(),
            ));
        }
        let params = template::leaf(id, OffsetDateTime::from(now), OffsetDateTime::from(not_after))?;
        let cert = params.signed_by(public_key, &self.issuer).map_err(internal)?;
        let serial = params
            .serial_number
            .as_ref()
            .map(|s| Serial::from_be_bytes(s.as_ref()))
            .unwrap_or_else(|| Serial::from_be_bytes(&[]));
        Ok(IssuedCert {
            leaf: cert.der().clone(),
            id: id.clone(),
            serial,
            not_before: system_time(OffsetDateTime::from(now).unix_timestamp() - BACKDATE.whole_seconds()),
            not_after: system_time(OffsetDateTime::from(not_after).unix_timestamp()),
        })
    }
}

fn internal(e: impl std::fmt::Display) -> IssueError {
    IssueError::Internal(e.to_string())
}

#[cfg(test)]
mod tests;
