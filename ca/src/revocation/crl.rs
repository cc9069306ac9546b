//! The standard X.509 CRL (RFC 5280), signed by the intermediate, for tools outside
//! the mesh (`openssl verify -crl_check`, load balancers, auditors).
//!
//! A CRL lists serials only, so a revoked SPIFFE ID is written as the serials of
//! every still-valid certificate the CA issued to it.

use std::time::{Duration, SystemTime};

use rcgen::{CertificateRevocationListParams, KeyIdMethod, RevocationReason, RevokedCertParams, SerialNumber};
use rustls_pki_types::CertificateRevocationListDer;
use time::OffsetDateTime;

use crate::issuer::{CaSigner, IssueError};
use crate::serial::Serial;

/// How long a CRL is good for before a fresh one should be fetched.
pub const CRL_LIFETIME: Duration = Duration::from_secs(24 * 3600);

/// One line of the CRL.
#[derive(Debug, Clone)]
pub struct CrlEntry {
    pub serial: Serial,
    pub revoked_at_unix: i64,
    pub reason: String,
}

/// Builds and signs the CRL; `version` becomes its CRL number.
pub fn build_crl(
    signer: &CaSigner,
    version: u64,
    now: SystemTime,
    entries: &[CrlEntry],
) -> Result<CertificateRevocationListDer<'static>, IssueError> {
    let this_update = OffsetDateTime::from(now);
    let params = CertificateRevocationListParams {
        this_update,
        next_update: this_update + CRL_LIFETIME,
        crl_number: SerialNumber::from(version),
        issuing_distribution_point: None,
        revoked_certs: entries
            .iter()
            .map(|e| RevokedCertParams {
                serial_number: SerialNumber::from_slice(e.serial.as_bytes()),
                revocation_time: OffsetDateTime::from_unix_timestamp(e.revoked_at_unix).unwrap_or(this_update),
                reason_code: reason_code(&e.reason),
                invalidity_date: None,
            })
            .collect(),
        key_identifier_method: KeyIdMethod::Sha256,
    };
    let crl = params
        .signed_by(signer.issuer())
        .map_err(|e| IssueError::Internal(e.to_string()))?;
    Ok(crl.der().clone())
}

/// The RFC 5280 reason code for a free-text reason that names one; other reasons
/// are kept in the CA's own list only (`unspecified` is left out, as RFC 5280 asks).
fn reason_code(reason: &str) -> Option<RevocationReason> {
    let key: String = reason
        .chars()
        .filter(|c| c.is_ascii_alphanumeric())
        .collect::<String>()
        .to_ascii_lowercase();
    Some(match key.as_str() {
        "keycompromise" => RevocationReason::KeyCompromise,
        "cacompromise" => RevocationReason::CaCompromise,
        "affiliationchanged" => RevocationReason::AffiliationChanged,
        "superseded" => RevocationReason::Superseded,
        "cessationofoperation" => RevocationReason::CessationOfOperation,
        "privilegewithdrawn" => RevocationReason::PrivilegeWithdrawn,
        _ => return None,
    })
}
