//! Trust bundles: the root certificates that anchor one trust domain.
//!
//! A bundle may hold several roots, so a root can be rotated with overlap: the new
//! root joins the bundle before anything is issued under it, and the old one leaves
//! only after every certificate under it has expired.

use std::path::Path;
use std::time::SystemTime;

use rustls_pki_types::pem::PemObject;
use rustls_pki_types::{CertificateDer, TrustAnchor};
use x509_parser::certificate::X509Certificate;

use crate::spiffe_id::TrustDomain;

/// The roots of one trust domain, parsed once into path-validation anchors.
///
/// A bundle may also carry *verified intermediates*: CA certificates checked once
/// against the roots (signature, cA, keyCertSign) when added. A chain presenting
/// exactly such an intermediate is validated from it, saving the intermediate's
/// signature check on every handshake; its validity window is still checked each
/// time. Any other chain is validated from the roots as usual.
#[derive(Clone, Debug)]
pub struct TrustBundle {
    trust_domain: TrustDomain,
    roots: Vec<CertificateDer<'static>>,
    anchors: Vec<TrustAnchor<'static>>,
    verified_intermediates: Vec<VerifiedIntermediate>,
}

/// An intermediate checked against the roots once, usable as a path shortcut.
#[derive(Clone, Debug)]
pub struct VerifiedIntermediate {
    pub(crate) der: CertificateDer<'static>,
    pub(crate) serial: crate::serial::Serial,
    pub(crate) anchor: TrustAnchor<'static>,
    pub(crate) not_before: SystemTime,
    pub(crate) not_after: SystemTime,
}

/// A trust bundle could not be read.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum BundleError {
    #[error("the trust bundle holds no certificate; give the `bundle.pem` written by `palisade ca init`")]
    Empty,
    #[error("cannot read the trust bundle `{path}`: {source}")]
    Io {
        path: String,
        #[source]
        source: std::io::Error,
    },
    #[error("the trust bundle is not valid PEM: {0}; give the `bundle.pem` written by `palisade ca init`")]
    Pem(String),
    #[error("certificate {index} of the trust bundle is not a usable root: {reason}")]
    InvalidRoot { index: usize, reason: String },
}

impl TrustBundle {
    /// Builds a bundle from DER roots; every root must parse as a trust anchor.
    pub fn new(trust_domain: TrustDomain, roots: Vec<CertificateDer<'static>>) -> Result<Self, BundleError> {
        if roots.is_empty() {
            return Err(BundleError::Empty);
        }
        let anchors = roots
            .iter()
            .enumerate()
            .map(|(index, root)| {
                check_root(root).map_err(|reason| BundleError::InvalidRoot {
                    index,
                    reason: reason.into(),
                })?;
                webpki::anchor_from_trusted_cert(root)
                    .map(|a| a.to_owned())
                    .map_err(|e| BundleError::InvalidRoot {
                        index,
                        reason: format!("{e:?}"),
                    })
            })
            .collect::<Result<_, _>>()?;
        Ok(Self {
            trust_domain,
            roots,
            anchors,
            verified_intermediates: Vec::new(),
        })
    }

    /// Adds the intermediates that a root of this bundle signed directly and that may
    /// sign certificates; others are ignored. Returns how many were added.
    pub fn add_intermediates(&mut self, intermediates: &[CertificateDer<'_>]) -> usize {
        let mut added = 0;
        for der in intermediates {
            let known =
                self.verified_intermediate(der).is_some() || self.roots.iter().any(|r| r.as_ref() == der.as_ref());
            if known || check_root(der).is_err() {
                continue;
            }
            let Ok(cert) = crate::svid::parse_certificate(der) else {
                continue;
            };
            // Path validation checks an intermediate's extended key usage; from a
            // shortcut it cannot, so only intermediates that restrict nothing qualify.
            let eku_ok = match cert.extended_key_usage() {
                Ok(None) => true,
                Ok(Some(e)) => e.value.server_auth && e.value.client_auth,
                Err(_) => false,
            };
            if !eku_ok || !self.issued_by_unconstrained_root(&cert) {
                continue;
            }
            let der = CertificateDer::from(der.to_vec());
            let Ok(anchor) = webpki::anchor_from_trusted_cert(&der).map(|a| a.to_owned()) else {
                continue;
            };
            let validity = cert.validity();
            self.verified_intermediates.push(VerifiedIntermediate {
                serial: crate::serial::Serial::from_be_bytes(cert.raw_serial()),
                anchor,
                not_before: crate::svid::system_time(validity.not_before.timestamp()),
                not_after: crate::svid::system_time(validity.not_after.timestamp()),
                der,
            });
            added += 1;
        }
        added
    }

    /// The intermediates verified into this bundle.
    pub fn verified_intermediates(&self) -> impl Iterator<Item = &CertificateDer<'static>> {
        self.verified_intermediates.iter().map(|v| &v.der)
    }

    /// The verified intermediate with exactly these bytes, if any.
    pub(crate) fn verified_intermediate(&self, der: &[u8]) -> Option<&VerifiedIntermediate> {
        self.verified_intermediates.iter().find(|v| v.der.as_ref() == der)
    }

    /// Whether a root of this bundle with no constraint that path validation would
    /// apply below it (name constraints, a path length of 0) signed `cert`: only then
    /// may `cert` stand in for that root.
    fn issued_by_unconstrained_root(&self, cert: &X509Certificate<'_>) -> bool {
        self.roots.iter().any(|root| {
            crate::svid::parse_certificate(root).is_ok_and(|root| {
                let unconstrained = matches!(root.name_constraints(), Ok(None))
                    && matches!(root.basic_constraints(), Ok(Some(bc)) if bc.value.path_len_constraint != Some(0));
                unconstrained && signed_by(cert, &root)
            })
        })
    }
    /// Whether a root of this bundle signed `cert` (subject/issuer match and signature).
    pub(crate) fn issued_by_root(&self, cert: &X509Certificate<'_>) -> bool {
        self.roots
            .iter()
            .any(|root| crate::svid::parse_certificate(root).is_ok_and(|root| signed_by(cert, &root)))
    }
    /// Reads a PEM bundle (one or more `CERTIFICATE` blocks).
    pub fn from_pem(trust_domain: TrustDomain, pem: &[u8]) -> Result<Self, BundleError> {
        Self::new(trust_domain, certs_from_pem(pem).map_err(BundleError::Pem)?)
    }

    /// Reads a PEM bundle from a file.
    pub fn load(trust_domain: TrustDomain, path: &Path) -> Result<Self, BundleError> {
        let pem = std::fs::read(path).map_err(|source| BundleError::Io {
            path: path.display().to_string(),
            source,
        })?;
        Self::from_pem(trust_domain, &pem)
    }

    pub fn trust_domain(&self) -> &TrustDomain {
        &self.trust_domain
    }

    pub fn roots(&self) -> &[CertificateDer<'static>] {
        &self.roots
    }

    pub fn anchors(&self) -> &[TrustAnchor<'static>] {
        &self.anchors
    }

    /// The bundle as PEM, one block per root.
    pub fn to_pem(&self) -> String {
        certs_to_pem(&self.roots)
    }
}

/// Whether `issuer` signed `cert` with an algorithm the TLS stack also accepts
/// (x509-parser alone would take SHA-1 and short RSA keys).
fn signed_by(cert: &X509Certificate<'_>, issuer: &X509Certificate<'_>) -> bool {
    use x509_parser::oid_registry::{
        OID_PKCS1_RSASSAPSS, OID_PKCS1_SHA256WITHRSA, OID_PKCS1_SHA384WITHRSA, OID_PKCS1_SHA512WITHRSA,
        OID_SIG_ECDSA_WITH_SHA256, OID_SIG_ECDSA_WITH_SHA384, OID_SIG_ED25519,
    };
    let alg = &cert.signature_algorithm.algorithm;
    let strong_alg = [
        OID_SIG_ECDSA_WITH_SHA256,
        OID_SIG_ECDSA_WITH_SHA384,
        OID_SIG_ED25519,
        OID_PKCS1_SHA256WITHRSA,
        OID_PKCS1_SHA384WITHRSA,
        OID_PKCS1_SHA512WITHRSA,
        OID_PKCS1_RSASSAPSS,
    ]
    .contains(alg);
    let strong_key = match issuer.public_key().parsed() {
        Ok(x509_parser::public_key::PublicKey::RSA(rsa)) => rsa.key_size() >= 2048,
        Ok(_) => true,
        Err(_) => false,
    };
    strong_alg
        && strong_key
        && issuer.subject() == cert.issuer()
        && cert.verify_signature(Some(issuer.public_key())).is_ok()
}

/// A root must be a CA allowed to sign certificates (webpki does not look at a trust
/// anchor's extensions, so this is checked here, once, when the bundle is read).
fn check_root(root: &CertificateDer<'_>) -> Result<(), &'static str> {
    let cert = crate::svid::parse_certificate(root).map_err(|_| "it is not valid DER X.509")?;
    if !cert.is_ca() {
        return Err("it is not a CA certificate (basicConstraints cA is false)");
    }
    let ku = cert.key_usage().map_err(|_| "its key usage extension is malformed")?;
    if ku.is_some_and(|ku| !ku.value.key_cert_sign()) {
        return Err("its key usage does not allow keyCertSign");
    }
    Ok(())
}

/// Reads every `CERTIFICATE` block of a PEM text.
pub fn certs_from_pem(pem: &[u8]) -> Result<Vec<CertificateDer<'static>>, String> {
    CertificateDer::pem_slice_iter(pem)
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| e.to_string())
}

/// Writes certificates as PEM `CERTIFICATE` blocks.
pub fn certs_to_pem(certs: &[CertificateDer<'_>]) -> String {
    certs.iter().map(|c| pem_block("CERTIFICATE", c)).collect()
}

/// One PEM block (`PRIVATE KEY`, `X509 CRL`, …).
pub fn pem_block(tag: &str, der: &[u8]) -> String {
    pem::encode(&pem::Pem::new(tag, der.to_vec()))
}

#[cfg(test)]
mod tests {
    use rcgen::{BasicConstraints, CertificateParams, IsCa, KeyPair, KeyUsagePurpose};

    use super::*;

    fn cert(is_ca: IsCa, key_usages: Vec<KeyUsagePurpose>) -> CertificateDer<'static> {
        let mut p = CertificateParams::default();
        p.is_ca = is_ca;
        p.key_usages = key_usages;
        p.self_signed(&KeyPair::generate().unwrap()).unwrap().der().clone()
    }

    fn bundle(roots: Vec<CertificateDer<'static>>) -> Result<TrustBundle, BundleError> {
        TrustBundle::new(TrustDomain::new("td").unwrap(), roots)
    }

    #[test]
    fn a_bundle_holds_only_roots_that_may_sign_certificates() {
        let ca = IsCa::Ca(BasicConstraints::Unconstrained);
        assert!(bundle(vec![cert(ca, vec![KeyUsagePurpose::KeyCertSign])]).is_ok());
        assert!(
            bundle(vec![cert(ca, vec![])]).is_ok(),
            "no key usage extension: unrestricted"
        );
        let refused = [
            ("empty", vec![]),
            (
                "a leaf",
                vec![cert(IsCa::ExplicitNoCa, vec![KeyUsagePurpose::DigitalSignature])],
            ),
            ("no cA", vec![cert(IsCa::NoCa, vec![])]),
            (
                "a CA without keyCertSign",
                vec![cert(ca, vec![KeyUsagePurpose::DigitalSignature])],
            ),
            ("garbage", vec![CertificateDer::from(b"junk".to_vec())]),
        ];
        for (case, roots) in refused {
            assert!(bundle(roots).is_err(), "{case} must be refused");
        }
    }

    #[test]
    fn pem_round_trips() {
        let root = cert(
            IsCa::Ca(BasicConstraints::Unconstrained),
            vec![KeyUsagePurpose::KeyCertSign],
        );
        let b = bundle(vec![root.clone()]).unwrap();
        let again = TrustBundle::from_pem(TrustDomain::new("td").unwrap(), b.to_pem().as_bytes()).unwrap();
        assert_eq!(again.roots(), &[root]);
        assert!(TrustBundle::from_pem(TrustDomain::new("td").unwrap(), b"not pem").is_err());
    }
}
