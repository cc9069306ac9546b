//! What a CSR must be before the CA signs anything for it.
//!
//! The CA takes only the public key from a CSR: subject, key usages and validity come
//! from the CA's own template. The CSR must still say exactly what it asks for — its
//! one SAN the attested SPIFFE ID, no CA bit, a strong key — so a client that asks
//! for more is told no instead of quietly getting less.

use x509_parser::certification_request::X509CertificationRequest;
use x509_parser::extensions::{GeneralName, ParsedExtension};
use x509_parser::oid_registry::{
    OID_EC_P256, OID_KEY_TYPE_EC_PUBLIC_KEY, OID_NIST_EC_P384, OID_PKCS1_RSAENCRYPTION, OID_SIG_ED25519,
};
use x509_parser::prelude::FromDer;
use x509_parser::public_key::PublicKey;

use super::IssueError;
use crate::spiffe_id::SpiffeId;

/// The smallest RSA modulus accepted.
const MIN_RSA_BITS: usize = 2048;

/// Checks `der` against the attested identity; returns the CSR's public key (SPKI DER).
pub(crate) fn check_csr(der: &[u8], attested: &SpiffeId) -> Result<Vec<u8>, IssueError> {
    let csr = match X509CertificationRequest::from_der(der) {
        Ok(([], csr)) => csr,
        Ok(_) => return Err(IssueError::MalformedCsr("trailing bytes after the CSR".into())),
        Err(e) => return Err(IssueError::MalformedCsr(e.to_string())),
    };
    let spki = &csr.certification_request_info.subject_pki;
    // The key first: the signature check cannot verify an RSA key under 2048 bits,
    // and such a key is too weak, not a bad signature.
    check_key(spki)?;
    csr.verify_signature().map_err(|_| IssueError::CsrSignature)?;
    let mut sans: Vec<String> = Vec::new();
    for ext in csr.requested_extensions().into_iter().flatten() {
        match ext {
            ParsedExtension::SubjectAlternativeName(san) => {
                sans.extend(san.general_names.iter().map(describe_name));
            }
            ParsedExtension::BasicConstraints(bc) if bc.ca => return Err(IssueError::CaRequested),
            ParsedExtension::KeyUsage(ku) if ku.key_cert_sign() || ku.crl_sign() => {
                return Err(IssueError::ExcessUsage("key usage keyCertSign or cRLSign".into()))
            }
            ParsedExtension::ExtendedKeyUsage(eku)
                if eku.any
                    || eku.code_signing
                    || eku.email_protection
                    || eku.time_stamping
                    || eku.ocsp_signing
                    || !eku.other.is_empty() =>
            {
                return Err(IssueError::ExcessUsage(
                    "an extended key usage other than serverAuth and clientAuth".into(),
                ))
            }
            // What remains is within what every SVID gets (digitalSignature,
            // serverAuth, clientAuth, cA false): the CA's template sets it anyway.
            ParsedExtension::BasicConstraints(_)
            | ParsedExtension::KeyUsage(_)
            | ParsedExtension::ExtendedKeyUsage(_) => {}
            _ => return Err(IssueError::UnsupportedCsrExtension),
        }
    }
    let want = format!("URI:{attested}");
    match sans.as_slice() {
        [only] if *only == want => Ok(spki.raw.to_vec()),
        [] => Err(IssueError::SanMismatch {
            attested: attested.clone(),
            found: "no SAN".into(),
        }),
        _ => Err(IssueError::SanMismatch {
            attested: attested.clone(),
            found: sans.join(", "),
        }),
    }
}

fn check_key(spki: &x509_parser::x509::SubjectPublicKeyInfo<'_>) -> Result<(), IssueError> {
    let alg = &spki.algorithm.algorithm;
    if *alg == OID_KEY_TYPE_EC_PUBLIC_KEY {
        let curve = spki.algorithm.parameters.as_ref().and_then(|p| p.as_oid().ok());
        return match curve {
            Some(c) if c == OID_EC_P256 || c == OID_NIST_EC_P384 => Ok(()),
            _ => Err(IssueError::WeakKey(
                "an elliptic curve other than P-256 or P-384".into(),
            )),
        };
    }
    if *alg == OID_SIG_ED25519 {
        return Ok(());
    }
    if *alg == OID_PKCS1_RSAENCRYPTION {
        return match spki.parsed() {
            Ok(PublicKey::RSA(rsa)) if rsa.key_size() >= MIN_RSA_BITS => Ok(()),
            Ok(PublicKey::RSA(rsa)) => Err(IssueError::WeakKey(format!("an RSA key of {} bits", rsa.key_size()))),
            _ => Err(IssueError::MalformedCsr("unreadable RSA public key".into())),
        };
    }
    Err(IssueError::WeakKey(format!("an unsupported key algorithm ({alg})")))
}

fn describe_name(name: &GeneralName<'_>) -> String {
    let s = match name {
        GeneralName::URI(u) => format!("URI:{u}"),
        GeneralName::DNSName(d) => format!("DNS:{d}"),
        GeneralName::RFC822Name(e) => format!("email:{e}"),
        GeneralName::IPAddress(_) => "IP address".into(),
        other => format!("{other:?}"),
    };
    s.escape_debug().take(300).collect()
}
