//! X.509-SVID verification: the one function every TLS peer of the mesh trusts.
//!
//! [`verify_svid`] applies, in order: the SVID profile of the leaf (exactly one URI
//! SAN holding a valid SPIFFE ID, not a CA, key usage `digitalSignature` without
//! `keyCertSign`/`cRLSign`, extended key usage — when present — holding both
//! `serverAuth` and `clientAuth`, no unknown critical extension), the trust domain
//! of the ID against the bundle's, the validity period with [`CLOCK_SKEW`], path
//! validation to the bundle with rustls-webpki (every intermediate a CA allowed to
//! sign certificates), and revocation by serial and by SPIFFE ID.
//!
//! The SPIFFE ID comes from the URI SAN only, never from a DNS SAN or the subject.

mod cache;
mod tls;

pub use tls::{svid_error, SvidClientVerifier, SvidServerVerifier, Trust};

use std::time::{Duration, SystemTime};

use rustls_pki_types::{CertificateDer, UnixTime};
use x509_parser::certificate::X509Certificate;

use crate::bundle::TrustBundle;
use crate::revocation::RevocationSet;
use crate::serial::Serial;
use crate::spiffe_id::SpiffeId;
use crate::svid::{has_unknown_critical_extension, parse_certificate, system_time, uri_sans, SvidParseError};

/// How far a peer's clock may be from ours: a certificate is accepted from
/// `notBefore - CLOCK_SKEW` to `notAfter + CLOCK_SKEW`.
pub const CLOCK_SKEW: Duration = Duration::from_secs(30);

/// Which side of a TLS connection the SVID authenticates.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Usage {
    /// The certificate a client presents (checked by a server).
    Client,
    /// The certificate a server presents (checked by a client).
    Server,
}

/// A peer whose SVID passed every check.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct VerifiedSvid {
    pub id: SpiffeId,
    pub serial: Serial,
    pub not_after: SystemTime,
}

/// Why an SVID was refused. Each variant is one rule.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum SvidError {
    #[error("the peer certificate is malformed: {0}")]
    Malformed(String),
    #[error("the peer certificate must have exactly one URI SAN, it has {0}")]
    UriSanCount(usize),
    #[error("the peer certificate's URI SAN `{0}` is not a valid SPIFFE ID")]
    InvalidSpiffeId(String),
    #[error("the peer certificate's SPIFFE ID `{0}` has no path; an SVID names a workload, not a trust domain")]
    TrustDomainId(String),
    #[error("the peer certificate is a CA certificate; an SVID leaf must have cA false")]
    LeafIsCa,
    #[error("the peer certificate has no key usage extension; an SVID must carry digitalSignature")]
    NoKeyUsage,
    #[error("the peer certificate's key usage lacks digitalSignature")]
    NoDigitalSignature,
    #[error("the peer certificate's key usage allows signing certificates or CRLs; an SVID leaf must not")]
    SigningKeyUsage,
    #[error("the peer certificate's extended key usage must hold both serverAuth and clientAuth")]
    ExtendedKeyUsage,
    #[error("the peer certificate carries an unknown critical extension")]
    UnknownCriticalExtension,
    #[error("the peer's SPIFFE ID `{id}` is not in trust domain `{expected}`")]
    WrongTrustDomain { id: String, expected: String },
    #[error("the peer certificate is not valid yet (clock skew allowance {}s)", CLOCK_SKEW.as_secs())]
    NotYetValid,
    #[error("the peer certificate has expired (clock skew allowance {}s)", CLOCK_SKEW.as_secs())]
    Expired,
    #[error("the peer certificate does not chain to the trust bundle: {0}")]
    UntrustedChain(String),
    #[error("an intermediate of the peer's chain may not sign certificates (needs cA and keyCertSign)")]
    BadIntermediate,
    #[error("the peer certificate (serial {serial}) is revoked")]
    RevokedSerial { serial: Serial },
    #[error("the peer's chain holds a revoked CA certificate (serial {serial})")]
    RevokedIssuer { serial: Serial },
    #[error("the peer's SPIFFE ID `{id}` is revoked")]
    RevokedId { id: SpiffeId },
    #[error("the peer's SPIFFE ID `{id}` is not one expected here ({expected})")]
    UnexpectedId { id: SpiffeId, expected: String },
}

impl SvidError {
    /// A short, stable label for metrics (`handshake failures by reason`).
    pub fn reason(&self) -> &'static str {
        match self {
            Self::Malformed(_) => "malformed",
            Self::UriSanCount(_) | Self::InvalidSpiffeId(_) | Self::TrustDomainId(_) => "bad_spiffe_id",
            Self::LeafIsCa
            | Self::NoKeyUsage
            | Self::NoDigitalSignature
            | Self::SigningKeyUsage
            | Self::ExtendedKeyUsage
            | Self::UnknownCriticalExtension => "not_an_svid",
            Self::WrongTrustDomain { .. } => "wrong_trust_domain",
            Self::NotYetValid => "not_yet_valid",
            Self::Expired => "expired",
            Self::UntrustedChain(_) | Self::BadIntermediate => "untrusted",
            Self::RevokedSerial { .. } | Self::RevokedId { .. } | Self::RevokedIssuer { .. } => "revoked",
            Self::UnexpectedId { .. } => "unexpected_identity",
        }
    }
}

impl From<SvidParseError> for SvidError {
    fn from(e: SvidParseError) -> Self {
        Self::Malformed(e.to_string())
    }
}

/// Verifies a presented chain (leaf, then intermediates) as an X.509-SVID of the
/// bundle's trust domain, at `now`.
pub fn verify_svid(
    leaf: &CertificateDer<'_>,
    intermediates: &[CertificateDer<'_>],
    bundle: &TrustBundle,
    revocations: &RevocationSet,
    usage: Usage,
    now: SystemTime,
) -> Result<VerifiedSvid, SvidError> {
    let cert = parse_certificate(leaf)?;
    let id = check_svid_profile(&cert)?;
    if !id.is_member_of(bundle.trust_domain()) {
        return Err(SvidError::WrongTrustDomain {
            id: id.to_string(),
            expected: bundle.trust_domain().to_string(),
        });
    }
    let validity = cert.validity();
    let not_before = system_time(validity.not_before.timestamp());
    let not_after = system_time(validity.not_after.timestamp());
    let path_time = check_validity(not_before, not_after, now)?;
    check_path(leaf, intermediates, bundle, revocations, usage, path_time)?;
    let serial = Serial::from_be_bytes(cert.raw_serial());
    check_revocation(&id, &serial, revocations)?;
    Ok(VerifiedSvid { id, serial, not_after })
}

fn check_revocation(id: &SpiffeId, serial: &Serial, revocations: &RevocationSet) -> Result<(), SvidError> {
    if revocations.is_serial_revoked(serial) {
        return Err(SvidError::RevokedSerial { serial: serial.clone() });
    }
    if revocations.is_id_revoked(id) {
        return Err(SvidError::RevokedId { id: id.clone() });
    }
    Ok(())
}

/// The SVID rules on the leaf alone; returns its SPIFFE ID.
fn check_svid_profile(cert: &X509Certificate<'_>) -> Result<SpiffeId, SvidError> {
    let uris = uri_sans(cert)?;
    let [uri] = uris.as_slice() else {
        return Err(SvidError::UriSanCount(uris.len()));
    };
    let id = SpiffeId::parse(uri).map_err(|_| SvidError::InvalidSpiffeId(uri.escape_debug().take(256).collect()))?;
    if id.path().is_empty() {
        return Err(SvidError::TrustDomainId(id.to_string()));
    }
    let bc = cert
        .basic_constraints()
        .map_err(|e| SvidError::Malformed(e.to_string()))?;
    if bc.is_some_and(|bc| bc.value.ca) {
        return Err(SvidError::LeafIsCa);
    }
    let ku = cert
        .key_usage()
        .map_err(|e| SvidError::Malformed(e.to_string()))?
        .ok_or(SvidError::NoKeyUsage)?;
    if !ku.value.digital_signature() {
        return Err(SvidError::NoDigitalSignature);
    }
    if ku.value.key_cert_sign() || ku.value.crl_sign() {
        return Err(SvidError::SigningKeyUsage);
    }
    let eku = cert
        .extended_key_usage()
        .map_err(|e| SvidError::Malformed(e.to_string()))?;
    if eku.is_some_and(|eku| !(eku.value.server_auth && eku.value.client_auth)) {
        return Err(SvidError::ExtendedKeyUsage);
    }
    if has_unknown_critical_extension(cert) {
        return Err(SvidError::UnknownCriticalExtension);
    }
    Ok(id)
}

/// Checks the validity window with the skew allowance and returns the time at
/// which the path is validated: `now`, moved inside the leaf's window when the
/// allowance was needed (so webpki applies the same rule to the chain).
fn check_validity(not_before: SystemTime, not_after: SystemTime, now: SystemTime) -> Result<UnixTime, SvidError> {
    if now + CLOCK_SKEW < not_before {
        return Err(SvidError::NotYetValid);
    }
    if now > not_after + CLOCK_SKEW {
        return Err(SvidError::Expired);
    }
    let t = now.clamp(not_before, not_after.max(not_before));
    Ok(UnixTime::since_unix_epoch(
        t.duration_since(SystemTime::UNIX_EPOCH).unwrap_or_default(),
    ))
}

fn check_path(
    leaf: &CertificateDer<'_>,
    intermediates: &[CertificateDer<'_>],
    bundle: &TrustBundle,
    revocations: &RevocationSet,
    usage: Usage,
    time: UnixTime,
) -> Result<(), SvidError> {
    let ee = webpki::EndEntityCert::try_from(leaf).map_err(|e| SvidError::Malformed(format!("{e:?}")))?;
    let eku = match usage {
        Usage::Client => webpki::KeyUsage::client_auth(),
        Usage::Server => webpki::KeyUsage::server_auth(),
    };
    let algs = crate::tls::provider().signature_verification_algorithms.all;
    // The common case: the one intermediate every mesh SVID carries, verified against
    // the roots when the bundle was built. Only its validity window is left to check.
    if let [only] = intermediates {
        if let Some(shortcut) = bundle.verified_intermediate(only) {
            let now = SystemTime::UNIX_EPOCH + Duration::from_secs(time.as_secs());
            if now < shortcut.not_before {
                return Err(SvidError::NotYetValid);
            }
            if now > shortcut.not_after {
                return Err(SvidError::Expired);
            }
            ee.verify_for_usage(algs, std::slice::from_ref(&shortcut.anchor), &[], time, eku, None, None)
                .map_err(webpki_error)?;
            return check_issuer_revocation(&shortcut.serial, revocations);
        }
    }
    let path = ee
        .verify_for_usage(algs, bundle.anchors(), intermediates, time, eku, None, None)
        .map_err(webpki_error)?;
    for intermediate in path.intermediate_certificates() {
        let der = intermediate.der();
        let cert = parse_certificate(der.as_ref())?;
        let ku = cert.key_usage().map_err(|e| SvidError::Malformed(e.to_string()))?;
        if !cert.is_ca() || ku.is_some_and(|ku| !ku.value.key_cert_sign()) {
            return Err(SvidError::BadIntermediate);
        }
        check_issuer_revocation(&Serial::from_be_bytes(cert.raw_serial()), revocations)?;
    }
    Ok(())
}

/// A CA certificate in the path whose serial is revoked voids the chain.
pub(crate) fn check_issuer_revocation(serial: &Serial, revocations: &RevocationSet) -> Result<(), SvidError> {
    if revocations.is_serial_revoked(serial) {
        return Err(SvidError::RevokedIssuer { serial: serial.clone() });
    }
    Ok(())
}

fn webpki_error(e: webpki::Error) -> SvidError {
    match e {
        webpki::Error::CaUsedAsEndEntity => SvidError::LeafIsCa,
        webpki::Error::CertExpired { .. } => SvidError::Expired,
        webpki::Error::CertNotValidYet { .. } => SvidError::NotYetValid,
        webpki::Error::UnsupportedCriticalExtension => SvidError::UnknownCriticalExtension,
        other => SvidError::UntrustedChain(format!("{other:?}")),
    }
}

/// The SPIFFE ID of a leaf that was already verified during the TLS handshake.
pub fn peer_id(leaf: &CertificateDer<'_>) -> Result<SpiffeId, SvidError> {
    let cert = parse_certificate(leaf)?;
    check_svid_profile(&cert)
}

#[cfg(test)]
mod tests;
