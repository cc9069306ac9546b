//! Signed revocation lists: what `WatchRevocations` streams.
//!
//! The CA signs the encoded list with its intermediate key and sends the
//! intermediate along; a peer accepts a list only when that certificate chains to
//! its trust bundle, the signature verifies over the exact bytes received, and the
//! list is for its trust domain. A version older than the one a peer holds is
//! ignored by [`crate::verify::Trust::update_revocations`].

use std::time::SystemTime;

use prost::Message;
use rustls_pki_types::CertificateDer;

use super::{RevocationEntry, RevocationSet, RevocationTarget};
use crate::bundle::TrustBundle;
use crate::issuer::{CaSigner, IssueError};
use crate::proto::v1 as pb;
use crate::serial::Serial;
use crate::spiffe_id::SpiffeId;
use crate::svid::parse_certificate;
use crate::verify::CLOCK_SKEW;

/// A revocation list that passed every check.
#[derive(Debug, Clone)]
pub struct VerifiedList {
    pub version: u64,
    pub issued_at_unix: i64,
    pub entries: Vec<RevocationEntry>,
}

impl VerifiedList {
    /// The set checked on handshakes.
    pub fn to_set(&self) -> RevocationSet {
        RevocationSet::new(self.version, &self.entries)
    }
}

/// Why a revocation list was refused; the peer keeps the list it had.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum ListError {
    #[error("the revocation list carries no signer certificate")]
    NoSigner,
    #[error("the revocation list's signer certificate is unreadable: {0}")]
    BadSigner(String),
    #[error("the revocation list's signer is not a CA of the trust bundle")]
    UntrustedSigner,
    #[error("the revocation list's signer certificate is not valid at this time")]
    SignerNotValid,
    #[error("the revocation list's signature does not verify")]
    BadSignature,
    #[error("the revocation list is malformed: {0}")]
    Malformed(String),
    #[error("the revocation list is for trust domain `{got}`, not `{expected}`")]
    WrongTrustDomain { got: String, expected: String },
}

/// What a list signature covers before the list itself, so a signature made by the
/// intermediate for a list can never be taken for one over a certificate, or back.
pub const SIGNATURE_CONTEXT: &[u8] = b"palisade revocation list v1\0";

fn signed_message(list: &[u8]) -> Vec<u8> {
    [SIGNATURE_CONTEXT, list].concat()
}

/// Encodes and signs a list with the CA's intermediate.
pub fn sign_list(
    signer: &CaSigner,
    version: u64,
    issued_at_unix: i64,
    entries: &[RevocationEntry],
) -> Result<pb::SignedRevocationList, IssueError> {
    let list = pb::RevocationList {
        version,
        issued_at_unix,
        trust_domain: signer.trust_domain().to_string(),
        entries: entries.iter().map(entry_to_proto).collect(),
    }
    .encode_to_vec();
    let signature = signer.sign(&signed_message(&list))?;
    Ok(pb::SignedRevocationList {
        list,
        signature,
        signer_chain_der: signer.chain().iter().map(|c| c.to_vec()).collect(),
    })
}

/// Checks a received list against the bundle at `now`.
pub fn verify_list(
    signed: &pb::SignedRevocationList,
    bundle: &TrustBundle,
    now: SystemTime,
) -> Result<VerifiedList, ListError> {
    let signer_der = signed.signer_chain_der.first().ok_or(ListError::NoSigner)?;
    let signer = parse_certificate(signer_der).map_err(|e| ListError::BadSigner(e.to_string()))?;
    if !signer.is_ca() {
        return Err(ListError::UntrustedSigner);
    }
    let is_root = bundle.roots().iter().any(|root| root.as_ref() == signer_der.as_slice());
    if !is_root && !bundle.issued_by_root(&signer) {
        return Err(ListError::UntrustedSigner);
    }
    let now_unix = crate::svid::unix_seconds(now);
    let skew = i64::try_from(CLOCK_SKEW.as_secs()).unwrap_or(0);
    let validity = signer.validity();
    if now_unix + skew < validity.not_before.timestamp() || now_unix - skew > validity.not_after.timestamp() {
        return Err(ListError::SignerNotValid);
    }
    let key = ring::signature::UnparsedPublicKey::new(
        &ring::signature::ECDSA_P256_SHA256_ASN1,
        signer.public_key().subject_public_key.data.as_ref(),
    );
    key.verify(&signed_message(&signed.list), &signed.signature)
        .map_err(|_| ListError::BadSignature)?;
    let list = pb::RevocationList::decode(signed.list.as_slice()).map_err(|e| ListError::Malformed(e.to_string()))?;
    if list.trust_domain != bundle.trust_domain().as_str() {
        return Err(ListError::WrongTrustDomain {
            got: list.trust_domain.chars().take(255).collect(),
            expected: bundle.trust_domain().to_string(),
        });
    }
    let entries = list
        .entries
        .iter()
        .map(entry_from_proto)
        .collect::<Result<Vec<_>, _>>()
        .map_err(ListError::Malformed)?;
    Ok(VerifiedList {
        version: list.version,
        issued_at_unix: list.issued_at_unix,
        entries,
    })
}

/// The signer chain as certificates (for callers that show it).
pub fn signer_chain(signed: &pb::SignedRevocationList) -> Vec<CertificateDer<'static>> {
    signed
        .signer_chain_der
        .iter()
        .map(|d| CertificateDer::from(d.clone()))
        .collect()
}

pub(crate) fn entry_to_proto(e: &RevocationEntry) -> pb::RevokedEntry {
    pb::RevokedEntry {
        target: Some(match &e.target {
            RevocationTarget::Serial(s) => pb::revoked_entry::Target::SerialHex(s.to_string()),
            RevocationTarget::SpiffeId(id) => pb::revoked_entry::Target::SpiffeId(id.to_string()),
        }),
        reason: e.reason.clone(),
        revoked_at_unix: e.revoked_at_unix,
    }
}

pub(crate) fn entry_from_proto(e: &pb::RevokedEntry) -> Result<RevocationEntry, String> {
    let target = match &e.target {
        Some(pb::revoked_entry::Target::SerialHex(s)) => {
            RevocationTarget::Serial(s.parse::<Serial>().map_err(|e| e.to_string())?)
        }
        Some(pb::revoked_entry::Target::SpiffeId(id)) => {
            RevocationTarget::SpiffeId(SpiffeId::parse(id).map_err(|e| e.to_string())?)
        }
        None => return Err("an entry names neither a serial nor a SPIFFE ID".into()),
    };
    Ok(RevocationEntry {
        target,
        reason: e.reason.clone(),
        revoked_at_unix: e.revoked_at_unix,
    })
}
