//! The certificate templates of the CA: root, intermediate and SVID leaf.

use rcgen::{
    BasicConstraints, CertificateParams, DistinguishedName, DnType, ExtendedKeyUsagePurpose, IsCa, KeyUsagePurpose,
    SanType, SerialNumber,
};
use time::OffsetDateTime;

use super::IssueError;
use crate::spiffe_id::{SpiffeId, TrustDomain};

/// How far back a leaf's notBefore is set, so a peer whose clock runs a little
/// behind the CA's accepts a certificate the moment it is issued.
pub const BACKDATE: time::Duration = time::Duration::seconds(30);

/// The root CA: self-signed, may sign intermediates, names its trust domain.
pub(crate) fn root(
    td: &TrustDomain,
    now: OffsetDateTime,
    lifetime: time::Duration,
) -> Result<CertificateParams, IssueError> {
    ca_params(
        td,
        "Palisade root CA",
        IsCa::Ca(BasicConstraints::Unconstrained),
        now,
        lifetime,
    )
}

/// The intermediate (signing) CA: may sign leaves only.
pub(crate) fn intermediate(
    td: &TrustDomain,
    now: OffsetDateTime,
    lifetime: time::Duration,
) -> Result<CertificateParams, IssueError> {
    ca_params(
        td,
        "Palisade intermediate CA",
        IsCa::Ca(BasicConstraints::Constrained(0)),
        now,
        lifetime,
    )
}

fn ca_params(
    td: &TrustDomain,
    common_name: &str,
    is_ca: IsCa,
    now: OffsetDateTime,
    lifetime: time::Duration,
) -> Result<CertificateParams, IssueError> {
    let mut p = CertificateParams::default();
    let mut dn = DistinguishedName::new();
    dn.push(DnType::OrganizationName, "Palisade");
    dn.push(DnType::OrganizationalUnitName, td.as_str());
    dn.push(DnType::CommonName, common_name);
    p.distinguished_name = dn;
    p.is_ca = is_ca;
    p.key_usages = vec![
        KeyUsagePurpose::KeyCertSign,
        KeyUsagePurpose::CrlSign,
        KeyUsagePurpose::DigitalSignature,
    ];
    p.subject_alt_names = vec![uri_san(&td.id())?];
    p.serial_number = Some(random_serial()?);
    p.not_before = now - BACKDATE;
    p.not_after = now + lifetime;
    Ok(p)
}

/// An X.509-SVID leaf for `id`, valid from now (backdated) to `not_after`.
pub(crate) fn leaf(
    id: &SpiffeId,
    now: OffsetDateTime,
    not_after: OffsetDateTime,
) -> Result<CertificateParams, IssueError> {
    let mut p = CertificateParams::default();
    let mut dn = DistinguishedName::new();
    dn.push(DnType::OrganizationName, "Palisade");
    p.distinguished_name = dn;
    p.is_ca = IsCa::ExplicitNoCa;
    p.key_usages = vec![KeyUsagePurpose::DigitalSignature];
    p.extended_key_usages = vec![ExtendedKeyUsagePurpose::ServerAuth, ExtendedKeyUsagePurpose::ClientAuth];
    p.subject_alt_names = vec![uri_san(id)?];
    p.use_authority_key_identifier_extension = true;
    p.serial_number = Some(random_serial()?);
    p.not_before = now - BACKDATE;
    p.not_after = not_after;
    Ok(p)
}

fn uri_san(id: &SpiffeId) -> Result<SanType, IssueError> {
    let uri = id
        .as_str()
        .try_into()
        .map_err(|e| IssueError::Internal(format!("URI SAN: {e}")))?;
    Ok(SanType::URI(uri))
}

/// 128 random bits, positive and without a leading zero byte.
pub(crate) fn random_serial() -> Result<SerialNumber, IssueError> {
    let mut bytes = [0u8; 16];
    ring::rand::SecureRandom::fill(&ring::rand::SystemRandom::new(), &mut bytes)
        .map_err(|_| IssueError::Internal("the system random source failed".into()))?;
    if let Some(first) = bytes.first_mut() {
        *first = (*first & 0x7f) | 0x40;
    }
    Ok(SerialNumber::from_slice(&bytes))
}
