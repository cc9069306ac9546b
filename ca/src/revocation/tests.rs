//! Revocation as peers receive it: a set checked on every handshake, a signed list
//! accepted only from the CA of the peer's own trust domain and only as sent, and
//! the X.509 CRL that tools outside the mesh read.

use std::time::{Duration, SystemTime};

use prost::Message;
use x509_parser::num_bigint::BigUint;
use x509_parser::prelude::{CertificateRevocationList, FromDer, ReasonCode};

use super::crl::{build_crl, CrlEntry, CRL_LIFETIME};
use super::signed::{sign_list, verify_list, ListError};
use super::*;
use crate::bundle::TrustBundle;
use crate::proto::v1 as pb;
use crate::svid::{parse_certificate, unix_seconds};
use crate::testing::{id, now, trust_domain, TestCa, TD, WORKLOAD};

fn serial(hex: &str) -> Serial {
    hex.parse().unwrap()
}

fn entries() -> Vec<RevocationEntry> {
    vec![
        RevocationEntry {
            target: RevocationTarget::Serial(serial("5a0c")),
            reason: "keyCompromise".into(),
            revoked_at_unix: 1_899_000_000,
        },
        RevocationEntry {
            target: RevocationTarget::SpiffeId(id(WORKLOAD)),
            reason: "the workload was decommissioned".into(),
            revoked_at_unix: 1_899_500_000,
        },
    ]
}

#[test]
fn a_set_revokes_exactly_its_serials_and_ids() {
    let set = RevocationSet::new(3, &entries());
    assert_eq!((set.version(), set.len(), set.is_empty()), (3, 2, false));
    assert!(set.is_serial_revoked(&serial("5a0c")));
    assert!(set.is_serial_revoked(&serial("00:5a:0c")), "serials compare as numbers");
    assert!(!set.is_serial_revoked(&serial("5a0d")));
    assert!(set.is_id_revoked(&id(WORKLOAD)));
    assert!(!set.is_id_revoked(&id("spiffe://td/ns/a/sa/bb")));
    assert!(set.is_revoked(&serial("01"), &id(WORKLOAD)));
    assert!(!set.is_revoked(&serial("01"), &id("spiffe://td/ns/a/sa/c")));
    assert!(RevocationSet::default().is_empty());
}

mod signed_list {
    use super::*;

    /// A change made to a signed list in transit.
    type Tamper = Box<dyn Fn(&mut pb::SignedRevocationList)>;

    /// The name of the error variant, e.g. `"BadSignature"`, so tables read as rule names.
    fn rule(e: &ListError) -> String {
        format!("{e:?}")
            .split([' ', '{', '('])
            .next()
            .unwrap_or_default()
            .to_owned()
    }

    fn signed(ca: &TestCa) -> pb::SignedRevocationList {
        sign_list(&ca.signer, 7, unix_seconds(now()), &entries()).unwrap()
    }

    #[test]
    fn a_list_signed_by_the_ca_round_trips() {
        let ca = TestCa::new(TD);
        let verified = verify_list(&signed(&ca), ca.bundle(), now()).unwrap();
        assert_eq!(verified.version, 7);
        assert_eq!(verified.issued_at_unix, unix_seconds(now()));
        assert_eq!(verified.entries, entries());
        let set = verified.to_set();
        assert_eq!(set.version(), 7);
        assert!(set.is_serial_revoked(&serial("5a0c")) && set.is_id_revoked(&id(WORKLOAD)));
    }

    #[test]
    fn a_signature_over_the_bare_list_is_refused() {
        // The signature covers a context string first, so the intermediate's signature
        // over anything else (a certificate body, say) never passes for a list.
        let ca = TestCa::new(TD);
        let mut list = signed(&ca);
        list.signature = ca.signer.sign(&list.list).unwrap();
        assert_eq!(
            verify_list(&list, ca.bundle(), now()).err(),
            Some(ListError::BadSignature)
        );
    }

    /// Each row changes a list in transit; the peer keeps the list it had.
    #[test]
    fn a_list_changed_in_transit_is_refused() {
        let ca = TestCa::new(TD);
        let leaf = ca.mint(WORKLOAD).chain()[0].to_vec();
        let cases: Vec<(&str, Tamper, &str)> = vec![
            (
                "a flipped byte in the list",
                Box::new(|s| s.list[3] ^= 0x01),
                "BadSignature",
            ),
            (
                "an entry dropped from the list",
                Box::new(drop_last_entry),
                "BadSignature",
            ),
            (
                "a flipped byte in the signature",
                Box::new(|s| *s.signature.last_mut().unwrap() ^= 0x01),
                "BadSignature",
            ),
            ("no signature", Box::new(|s| s.signature.clear()), "BadSignature"),
            ("no signer", Box::new(|s| s.signer_chain_der.clear()), "NoSigner"),
            (
                "an unreadable signer",
                Box::new(|s| s.signer_chain_der[0] = b"garbage".to_vec()),
                "BadSigner",
            ),
            (
                "a leaf of the CA as signer",
                Box::new(move |s| s.signer_chain_der[0] = leaf.clone()),
                "UntrustedSigner",
            ),
        ];
        for (case, tamper, want) in cases {
            let mut list = signed(&ca);
            tamper(&mut list);
            let got = verify_list(&list, ca.bundle(), now()).err();
            assert_eq!(got.as_ref().map(rule).as_deref(), Some(want), "{case}: {got:?}");
        }
    }

    fn drop_last_entry(signed: &mut pb::SignedRevocationList) {
        let mut list = pb::RevocationList::decode(signed.list.as_slice()).unwrap();
        list.entries.pop();
        signed.list = list.encode_to_vec();
    }

    #[test]
    fn a_list_of_another_ca_is_refused_even_with_our_intermediate_attached() {
        let (ours, theirs) = (TestCa::new(TD), TestCa::new(TD));
        let mut list = signed(&theirs);
        let got = verify_list(&list, ours.bundle(), now());
        assert_eq!(got.err(), Some(ListError::UntrustedSigner), "their own signer");
        list.signer_chain_der = vec![ours.intermediate.to_vec()];
        let got = verify_list(&list, ours.bundle(), now());
        assert_eq!(
            got.err(),
            Some(ListError::BadSignature),
            "our intermediate, their signature"
        );
    }

    #[test]
    fn a_list_for_another_trust_domain_is_refused() {
        let ca = TestCa::new(TD);
        let bundle = TrustBundle::new(trust_domain("other.org"), vec![ca.root.clone()]).unwrap();
        let got = verify_list(&signed(&ca), &bundle, now());
        assert_eq!(
            got.err(),
            Some(ListError::WrongTrustDomain {
                got: TD.into(),
                expected: "other.org".into()
            })
        );
    }

    /// The signer's validity is checked with the same clock skew as SVIDs (30 s).
    #[test]
    fn a_signer_must_be_valid_now() {
        let ca = TestCa::new(TD);
        let validity = parse_certificate(&ca.intermediate).unwrap().validity().clone();
        let at = |unix: i64| SystemTime::UNIX_EPOCH + Duration::from_secs(unix as u64);
        let (start, end) = (validity.not_before.timestamp(), validity.not_after.timestamp());
        let cases: Vec<(&str, SystemTime, bool)> = vec![
            ("10 s before notBefore", at(start - 10), true),
            ("60 s before notBefore", at(start - 60), false),
            ("10 s after notAfter", at(end + 10), true),
            ("60 s after notAfter", at(end + 60), false),
        ];
        let list = signed(&ca);
        for (case, when, valid) in cases {
            let got = verify_list(&list, ca.bundle(), when);
            match (valid, got) {
                (true, Ok(_)) => {}
                (false, Err(ListError::SignerNotValid)) => {}
                (_, got) => panic!("{case}: {got:?}"),
            }
        }
    }

    /// A well-signed list whose entries do not parse is refused whole, never in part.
    #[test]
    fn a_signed_list_with_an_unreadable_entry_is_malformed() {
        let ca = TestCa::new(TD);
        let targets = [
            None,
            Some(pb::revoked_entry::Target::SerialHex("not hex".into())),
            Some(pb::revoked_entry::Target::SpiffeId("spiffe://TD/x".into())),
        ];
        for target in targets {
            let bad = pb::RevokedEntry {
                target: target.clone(),
                reason: String::new(),
                revoked_at_unix: 0,
            };
            let list = pb::RevocationList {
                version: 1,
                issued_at_unix: 0,
                trust_domain: TD.into(),
                entries: vec![signed_entry(), bad],
            }
            .encode_to_vec();
            let signature = ca
                .signer
                .sign(&[super::signed::SIGNATURE_CONTEXT, &list].concat())
                .unwrap();
            let signed = pb::SignedRevocationList {
                list,
                signature,
                signer_chain_der: vec![ca.intermediate.to_vec()],
            };
            let got = verify_list(&signed, ca.bundle(), now());
            assert!(matches!(got, Err(ListError::Malformed(_))), "{target:?}: {got:?}");
        }
    }

    fn signed_entry() -> pb::RevokedEntry {
        pb::RevokedEntry {
            target: Some(pb::revoked_entry::Target::SerialHex("5a0c".into())),
            reason: String::new(),
            revoked_at_unix: 0,
        }
    }
}

mod crl {
    use super::*;

    fn crl_entries() -> Vec<CrlEntry> {
        vec![
            CrlEntry {
                serial: serial("5a0c"),
                revoked_at_unix: 1_899_000_000,
                reason: "keyCompromise".into(),
            },
            CrlEntry {
                serial: serial("ff01"),
                revoked_at_unix: 1_899_000_001,
                reason: "Superseded".into(),
            },
            CrlEntry {
                serial: serial("4000000000000000000000000000007f"),
                revoked_at_unix: 1_899_000_002,
                reason: "no reason".into(),
            },
        ]
    }

    fn parse(der: &[u8]) -> CertificateRevocationList<'_> {
        let (rest, crl) = CertificateRevocationList::from_der(der).unwrap();
        assert!(rest.is_empty());
        crl
    }

    #[test]
    fn the_crl_is_signed_by_the_intermediate_and_lists_the_serials() {
        let ca = TestCa::new(TD);
        let der = build_crl(&ca.signer, 7, now(), &crl_entries()).unwrap();
        let crl = parse(&der);
        let intermediate = parse_certificate(&ca.intermediate).unwrap();
        crl.verify_signature(intermediate.public_key()).unwrap();
        assert_eq!(crl.issuer(), intermediate.subject());
        assert_eq!(crl.crl_number(), Some(&BigUint::from(7u64)));
        assert_eq!(crl.last_update().timestamp(), unix_seconds(now()));
        assert_eq!(
            crl.next_update().map(|t| t.timestamp()),
            Some(unix_seconds(now() + CRL_LIFETIME))
        );

        let listed: Vec<(Serial, i64, Option<u8>)> = crl
            .iter_revoked_certificates()
            .map(|r| {
                (
                    Serial::from_be_bytes(r.raw_serial()),
                    r.revocation_date.timestamp(),
                    r.reason_code().map(|(_, c)| c.0),
                )
            })
            .collect();
        let keycompromise = ReasonCode::KeyCompromise.0;
        let superseded = ReasonCode::Superseded.0;
        let want: Vec<(Serial, i64, Option<u8>)> = vec![
            (serial("5a0c"), 1_899_000_000, Some(keycompromise)),
            (serial("ff01"), 1_899_000_001, Some(superseded)),
            (serial("4000000000000000000000000000007f"), 1_899_000_002, None),
        ];
        assert_eq!(listed, want);
    }

    #[test]
    fn the_crl_signature_does_not_verify_with_another_ca_key() {
        let (ours, theirs) = (TestCa::new(TD), TestCa::new(TD));
        let der = build_crl(&ours.signer, 1, now(), &crl_entries()).unwrap();
        let other = parse_certificate(&theirs.intermediate).unwrap();
        assert!(parse(&der).verify_signature(other.public_key()).is_err());
    }

    #[test]
    fn the_crl_number_is_the_list_version() {
        let ca = TestCa::new(TD);
        for version in [0, 1, 7, 0x80, 1 << 63, u64::MAX] {
            let der = build_crl(&ca.signer, version, now(), &[]).unwrap();
            let crl = parse(&der);
            assert_eq!(crl.crl_number(), Some(&BigUint::from(version)), "version {version}");
            assert_eq!(crl.iter_revoked_certificates().count(), 0);
        }
    }
}
