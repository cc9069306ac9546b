//! X.509-SVIDs: the certificate chain and private key a workload presents, and the
//! facts read from an SVID certificate.

use std::fmt;
use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use rustls::sign::CertifiedKey;
use rustls_pki_types::{CertificateDer, PrivateKeyDer};
use x509_parser::certificate::X509Certificate;
use x509_parser::extensions::{GeneralName, ParsedExtension};
use x509_parser::prelude::FromDer;

use crate::serial::Serial;
use crate::spiffe_id::SpiffeId;

/// An X.509-SVID with its private key: what a workload presents in TLS.
///
/// The key was generated in this process and never leaves it; `Debug` does not show it.
pub struct Svid {
    id: SpiffeId,
    chain: Vec<CertificateDer<'static>>,
    key: PrivateKeyDer<'static>,
    serial: Serial,
    not_before: SystemTime,
    not_after: SystemTime,
}

impl fmt::Debug for Svid {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Svid")
            .field("id", &self.id)
            .field("serial", &self.serial)
            .field("not_after", &unix_seconds(self.not_after))
            .finish_non_exhaustive()
    }
}

impl Svid {
    /// Pairs a chain (leaf first, then intermediates) with the leaf's private key.
    /// The leaf must carry one SPIFFE ID in its URI SAN.
    pub fn new(chain: Vec<CertificateDer<'static>>, key: PrivateKeyDer<'static>) -> Result<Self, SvidParseError> {
        let leaf = chain.first().ok_or(SvidParseError::NoCertificate)?;
        let facts = SvidFacts::parse(leaf)?;
        let id = facts.id.ok_or(SvidParseError::NoSpiffeId)?;
        Ok(Self {
            id,
            chain,
            key,
            serial: facts.serial,
            not_before: facts.not_before,
            not_after: facts.not_after,
        })
    }

    pub fn id(&self) -> &SpiffeId {
        &self.id
    }

    pub fn serial(&self) -> &Serial {
        &self.serial
    }

    pub fn not_before(&self) -> SystemTime {
        self.not_before
    }

    pub fn not_after(&self) -> SystemTime {
        self.not_after
    }

    /// The leaf followed by its intermediates.
    pub fn chain(&self) -> &[CertificateDer<'static>] {
        &self.chain
    }

    /// The private key in PKCS#8 DER, for the offline mint (`palisade ca issue`) only.
    pub fn private_key(&self) -> &PrivateKeyDer<'static> {
        &self.key
    }

    /// The chain and key as rustls serves them.
    pub fn certified_key(&self) -> Result<Arc<CertifiedKey>, rustls::Error> {
        let provider = crate::tls::provider();
        let key = provider.key_provider.load_private_key(self.key.clone_key())?;
        Ok(Arc::new(CertifiedKey::new(self.chain.clone(), key)))
    }
}

/// What can be read off a certificate without trusting it: the ground for
/// verification and for `palisade ca inspect`.
#[derive(Debug, Clone)]
pub struct SvidFacts {
    /// The SPIFFE ID, when the certificate has exactly one URI SAN holding a valid one.
    pub id: Option<SpiffeId>,
    /// How many URI SANs the certificate has.
    pub uri_sans: usize,
    pub serial: Serial,
    pub not_before: SystemTime,
    pub not_after: SystemTime,
    pub is_ca: bool,
    pub subject: String,
    pub issuer: String,
}

/// A certificate could not be read as an SVID.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum SvidParseError {
    #[error("no certificate was given")]
    NoCertificate,
    #[error("the certificate is not valid DER X.509: {0}")]
    Malformed(String),
    #[error("the certificate has no URI SAN holding a SPIFFE ID")]
    NoSpiffeId,
}

impl SvidFacts {
    pub fn parse(der: &[u8]) -> Result<Self, SvidParseError> {
        let cert = parse_certificate(der)?;
        let uris = uri_sans(&cert)?;
        let id = match uris.as_slice() {
            [one] => SpiffeId::parse(one).ok(),
            _ => None,
        };
        let validity = cert.validity();
        Ok(Self {
            id,
            uri_sans: uris.len(),
            serial: Serial::from_be_bytes(cert.raw_serial()),
            not_before: system_time(validity.not_before.timestamp()),
            not_after: system_time(validity.not_after.timestamp()),
            is_ca: cert.is_ca(),
            subject: cert.subject().to_string(),
            issuer: cert.issuer().to_string(),
        })
    }
}

/// Parses one DER certificate, refusing trailing bytes.
pub(crate) fn parse_certificate(der: &[u8]) -> Result<X509Certificate<'_>, SvidParseError> {
    match X509Certificate::from_der(der) {
        Ok(([], cert)) => Ok(cert),
        Ok(_) => Err(SvidParseError::Malformed("trailing bytes after the certificate".into())),
        Err(e) => Err(SvidParseError::Malformed(e.to_string())),
    }
}

/// Every URI SAN of the certificate; a duplicated SAN extension is malformed.
pub(crate) fn uri_sans<'a>(cert: &'a X509Certificate<'_>) -> Result<Vec<&'a str>, SvidParseError> {
    let san = cert
        .subject_alternative_name()
        .map_err(|e| SvidParseError::Malformed(e.to_string()))?;
    Ok(san
        .map(|san| {
            san.value
                .general_names
                .iter()
                .filter_map(|n| match n {
                    GeneralName::URI(uri) => Some(*uri),
                    _ => None,
                })
                .collect()
        })
        .unwrap_or_default())
}

/// True when the certificate carries a critical extension this crate does not know.
pub(crate) fn has_unknown_critical_extension(cert: &X509Certificate<'_>) -> bool {
    cert.extensions()
        .iter()
        .any(|ext| ext.critical && matches!(ext.parsed_extension(), ParsedExtension::UnsupportedExtension { .. }))
}

pub(crate) fn system_time(unix: i64) -> SystemTime {
    match u64::try_from(unix) {
        Ok(secs) => UNIX_EPOCH + Duration::from_secs(secs),
        Err(_) => UNIX_EPOCH,
    }
}

/// Seconds since the Unix epoch (0 before it).
pub fn unix_seconds(t: SystemTime) -> i64 {
    t.duration_since(UNIX_EPOCH)
        .map(|d| i64::try_from(d.as_secs()).unwrap_or(i64::MAX))
        .unwrap_or(0)
}
