//! The X.509-SVID rules of SECURITY.md §3, one table row per way a peer's
//! certificate can be wrong, then the [`Trust`] snapshot, the rustls verifiers and
//! a real TLS 1.3 handshake built on them.

use std::sync::Arc;
use std::time::Duration;

use rcgen::{BasicConstraints, CustomExtension, ExtendedKeyUsagePurpose as Eku, IsCa, KeyUsagePurpose as Ku, SanType};
use rustls::client::danger::ServerCertVerifier;
use rustls::server::danger::ClientCertVerifier;
use rustls::CertificateError;
use rustls_pki_types::ServerName;

use super::*;
use crate::bundle::TrustBundle;
use crate::revocation::{RevocationEntry, RevocationTarget};
use crate::testing::{
    dns_san, id, no_revocations, now, now_plus, trust_domain, unchanged, uri_san, TestCa, Tweak, TD, WORKLOAD,
};

const BOTH: [Usage; 2] = [Usage::Client, Usage::Server];

/// Verifies `leaf` as presented with `ca`'s intermediate, at [`now`], nothing revoked,
/// twice: validating the whole path from the root, and from the intermediate verified
/// once into the bundle. Both must decide alike, so every table row below also holds
/// for the shortcut the mesh takes on each handshake.
fn verify(ca: &TestCa, leaf: &CertificateDer<'_>, usage: Usage) -> Result<VerifiedSvid, SvidError> {
    let chain = std::slice::from_ref(&ca.intermediate);
    let full = verify_svid(leaf, chain, ca.bundle(), &no_revocations(), usage, now());
    let mut shortcut = ca.bundle().clone();
    assert_eq!(
        shortcut.add_intermediates(chain),
        1,
        "the CA's own intermediate is a shortcut"
    );
    let short = verify_svid(leaf, chain, &shortcut, &no_revocations(), usage, now());
    assert_eq!(
        full.as_ref().map_err(SvidError::reason),
        short.as_ref().map_err(SvidError::reason),
        "the shortcut decided differently from the full path: {full:?} vs {short:?}"
    );
    full
}

fn revoked(version: u64, targets: Vec<RevocationTarget>) -> RevocationSet {
    let entries: Vec<RevocationEntry> = targets
        .into_iter()
        .map(|target| RevocationEntry {
            target,
            reason: "keyCompromise".into(),
            revoked_at_unix: 0,
        })
        .collect();
    RevocationSet::new(version, &entries)
}

/// An extension no one knows, marked critical or not.
fn unknown_extension(critical: bool) -> CustomExtension {
    let mut ext = CustomExtension::from_oid_content(&[1, 3, 6, 1, 4, 1, 55555, 1], vec![0x05, 0x00]);
    ext.set_criticality(critical);
    ext
}

mod leaf_rules {
    use super::*;

    #[test]
    fn a_leaf_minted_by_the_ca_passes_with_its_id_and_serial() {
        let ca = TestCa::new(TD);
        let svid = ca.mint(WORKLOAD);
        for usage in BOTH {
            let verified = verify_svid(
                &svid.chain()[0],
                &svid.chain()[1..],
                ca.bundle(),
                &no_revocations(),
                usage,
                now(),
            )
            .unwrap_or_else(|e| panic!("{usage:?}: {e}"));
            assert_eq!(verified.id, id(WORKLOAD));
            assert_eq!(&verified.serial, svid.serial());
            assert_eq!(verified.not_after, svid.not_after());
        }
    }

    /// Leaves that bend but keep every rule.
    #[test]
    fn leaves_that_keep_every_rule_pass() {
        let cases: Vec<(&str, Tweak)> = vec![
            ("the production template, unchanged", unchanged),
            ("no extended key usage at all", |p| p.extended_key_usages.clear()),
            ("notBefore 10 s ahead, within the clock skew", |p| {
                p.not_before = now_plus(10)
            }),
            ("notAfter 10 s past, within the clock skew", |p| {
                p.not_before = now_plus(-3600);
                p.not_after = now_plus(-10);
            }),
            ("digitalSignature with keyEncipherment", |p| {
                p.key_usages.push(Ku::KeyEncipherment)
            }),
            ("a DNS SAN beside the URI SAN", |p| {
                p.subject_alt_names.push(dns_san("web.td"))
            }),
            ("an unknown extension that is not critical", |p| {
                p.custom_extensions.push(unknown_extension(false))
            }),
        ];
        let ca = TestCa::new(TD);
        for (case, tweak) in cases {
            let leaf = ca.leaf(tweak);
            for usage in BOTH {
                let verified = verify(&ca, &leaf, usage).unwrap_or_else(|e| panic!("{case} ({usage:?}): {e}"));
                assert_eq!(verified.id, id(WORKLOAD), "{case}");
            }
        }
    }

    /// Each row breaks one rule; the leaf is refused as a client and as a server
    /// certificate alike, under that rule.
    #[test]
    fn a_leaf_that_breaks_a_rule_is_refused_under_that_rule() {
        let wrong_td = SvidError::WrongTrustDomain {
            id: "spiffe://evil.org/ns/a/sa/b".into(),
            expected: TD.into(),
        };
        let cases: Vec<(&str, Tweak, SvidError)> = vec![
            // validity, with CLOCK_SKEW (30 s) either side
            (
                "expired long ago",
                |p| {
                    p.not_before = now_plus(-10 * 86400);
                    p.not_after = now_plus(-9 * 86400);
                },
                SvidError::Expired,
            ),
            (
                "not valid until tomorrow",
                |p| {
                    p.not_before = now_plus(86400);
                    p.not_after = now_plus(2 * 86400);
                },
                SvidError::NotYetValid,
            ),
            (
                "notBefore 60 s ahead, past the skew",
                |p| p.not_before = now_plus(60),
                SvidError::NotYetValid,
            ),
            (
                "notAfter 60 s past, past the skew",
                |p| {
                    p.not_before = now_plus(-3600);
                    p.not_after = now_plus(-60);
                },
                SvidError::Expired,
            ),
            // the SPIFFE ID: one URI SAN, valid, with a path, in our trust domain
            (
                "an ID of another trust domain",
                |p| p.subject_alt_names = vec![uri_san("spiffe://evil.org/ns/a/sa/b")],
                wrong_td,
            ),
            (
                "two URI SANs",
                |p| p.subject_alt_names.push(uri_san("spiffe://td/ns/a/sa/c")),
                SvidError::UriSanCount(2),
            ),
            (
                "a DNS SAN and no URI SAN",
                |p| p.subject_alt_names = vec![dns_san("web.td")],
                SvidError::UriSanCount(0),
            ),
            (
                "a DNS SAN that looks like a SPIFFE ID (CVE-2022-21656)",
                |p| {
                    p.subject_alt_names = vec![dns_san(WORKLOAD)];
                },
                SvidError::UriSanCount(0),
            ),
            (
                "no SAN at all",
                |p| p.subject_alt_names.clear(),
                SvidError::UriSanCount(0),
            ),
            (
                "a SPIFFE ID in an otherName SAN only",
                |p| {
                    p.subject_alt_names = vec![SanType::OtherName((vec![1, 3, 6, 1, 4, 1, 55555, 2], WORKLOAD.into()))];
                },
                SvidError::UriSanCount(0),
            ),
            (
                "a percent-encoded path, never decoded",
                |p| p.subject_alt_names = vec![uri_san("spiffe://td/ns/%61/sa/b")],
                SvidError::InvalidSpiffeId("spiffe://td/ns/%61/sa/b".into()),
            ),
            (
                "an upper-case trust domain, never lowered",
                |p| p.subject_alt_names = vec![uri_san("spiffe://TD/x")],
                SvidError::InvalidSpiffeId("spiffe://TD/x".into()),
            ),
            (
                "an https URI",
                |p| p.subject_alt_names = vec![uri_san("https://x")],
                SvidError::InvalidSpiffeId("https://x".into()),
            ),
            (
                "a dot-dot segment, never resolved",
                |p| p.subject_alt_names = vec![uri_san("spiffe://td/ns/../sa/b")],
                SvidError::InvalidSpiffeId("spiffe://td/ns/../sa/b".into()),
            ),
            (
                "the trust domain's own ID",
                |p| p.subject_alt_names = vec![uri_san("spiffe://td")],
                SvidError::TrustDomainId("spiffe://td".into()),
            ),
            // what the leaf may do
            (
                "cA true",
                |p| p.is_ca = IsCa::Ca(BasicConstraints::Unconstrained),
                SvidError::LeafIsCa,
            ),
            ("no key usage", |p| p.key_usages.clear(), SvidError::NoKeyUsage),
            (
                "keyEncipherment without digitalSignature",
                |p| p.key_usages = vec![Ku::KeyEncipherment],
                SvidError::NoDigitalSignature,
            ),
            (
                "keyCertSign",
                |p| p.key_usages.push(Ku::KeyCertSign),
                SvidError::SigningKeyUsage,
            ),
            (
                "cRLSign",
                |p| p.key_usages.push(Ku::CrlSign),
                SvidError::SigningKeyUsage,
            ),
            // CVE-2022-21657: an EKU, when present, holds both serverAuth and clientAuth
            (
                "serverAuth only",
                |p| p.extended_key_usages = vec![Eku::ServerAuth],
                SvidError::ExtendedKeyUsage,
            ),
            (
                "clientAuth only",
                |p| p.extended_key_usages = vec![Eku::ClientAuth],
                SvidError::ExtendedKeyUsage,
            ),
            (
                "emailProtection",
                |p| p.extended_key_usages = vec![Eku::EmailProtection],
                SvidError::ExtendedKeyUsage,
            ),
            (
                "anyExtendedKeyUsage",
                |p| p.extended_key_usages = vec![Eku::Any],
                SvidError::ExtendedKeyUsage,
            ),
            (
                "an unknown critical extension",
                |p| p.custom_extensions.push(unknown_extension(true)),
                SvidError::UnknownCriticalExtension,
            ),
        ];
        let ca = TestCa::new(TD);
        for (case, tweak, want) in cases {
            let leaf = ca.leaf(tweak);
            for usage in BOTH {
                assert_eq!(
                    verify(&ca, &leaf, usage).err(),
                    Some(want.clone()),
                    "{case} ({usage:?})"
                );
            }
        }
    }

    /// Two SAN extensions let two parsers read two identities from one certificate.
    #[test]
    fn a_second_san_extension_is_malformed() {
        let ca = TestCa::new(TD);
        let evil = b"spiffe://td/ns/a/sa/admin";
        let mut san = vec![0x30, evil.len() as u8 + 2, 0x86, evil.len() as u8];
        san.extend_from_slice(evil);
        let leaf = ca.leaf(|p| {
            p.custom_extensions
                .push(CustomExtension::from_oid_content(&[2, 5, 29, 17], san))
        });
        for usage in BOTH {
            let got = verify(&ca, &leaf, usage);
            assert!(matches!(got, Err(SvidError::Malformed(_))), "{usage:?}: {got:?}");
        }
    }

    #[test]
    fn bytes_that_are_not_one_certificate_are_malformed() {
        let ca = TestCa::new(TD);
        let good = ca.mint(WORKLOAD).chain()[0].to_vec();
        let cases: Vec<(&str, Vec<u8>)> = vec![
            ("nothing", vec![]),
            ("garbage", b"not a certificate".to_vec()),
            ("a truncated certificate", good[..good.len() - 1].to_vec()),
            (
                "a trailing byte after the certificate",
                [good.as_slice(), &[0]].concat(),
            ),
            (
                "a second certificate after the first",
                [good.as_slice(), &good].concat(),
            ),
        ];
        for (case, der) in cases {
            let got = verify(&ca, &CertificateDer::from(der), Usage::Client);
            assert!(matches!(got, Err(SvidError::Malformed(_))), "{case}: {got:?}");
        }
    }
}

mod chain_rules {
    use super::*;

    #[test]
    fn a_leaf_of_another_ca_with_the_same_trust_domain_is_untrusted() {
        let (ours, theirs) = (TestCa::new(TD), TestCa::new(TD));
        let svid = theirs.mint(WORKLOAD);
        for usage in BOTH {
            let got = verify_svid(
                &svid.chain()[0],
                &svid.chain()[1..],
                ours.bundle(),
                &no_revocations(),
                usage,
                now(),
            );
            assert!(matches!(got, Err(SvidError::UntrustedChain(_))), "{usage:?}: {got:?}");
        }
    }

    #[test]
    fn only_intermediates_a_root_signed_become_shortcuts() {
        let ca = TestCa::new(TD);
        let other = TestCa::new(TD);
        let mut bundle = ca.bundle().clone();
        assert_eq!(
            bundle.add_intermediates(std::slice::from_ref(&other.intermediate)),
            0,
            "another CA's"
        );
        assert_eq!(
            bundle.add_intermediates(std::slice::from_ref(&ca.root)),
            0,
            "the root itself"
        );
        let (no_sign, _) = ca.intermediate_with(|p| p.key_usages = vec![Ku::DigitalSignature]);
        assert_eq!(
            bundle.add_intermediates(&[no_sign]),
            0,
            "one that may not sign certificates"
        );
        let (not_ca, _) = ca.intermediate_with(|p| p.is_ca = IsCa::ExplicitNoCa);
        assert_eq!(bundle.add_intermediates(&[not_ca]), 0, "one that is not a CA");
        let (server_only, _) = ca.intermediate_with(|p| p.extended_key_usages = vec![Eku::ServerAuth]);
        assert_eq!(
            bundle.add_intermediates(&[server_only]),
            0,
            "one that restricts extended key usage"
        );
        assert_eq!(bundle.add_intermediates(std::slice::from_ref(&ca.intermediate)), 1);
        assert_eq!(
            bundle.add_intermediates(std::slice::from_ref(&ca.intermediate)),
            0,
            "added once"
        );
        // A leaf of the other CA, presented with its own intermediate, is still untrusted.
        let leaf = other.mint(WORKLOAD);
        let got = verify_svid(
            &leaf.chain()[0],
            &leaf.chain()[1..],
            &bundle,
            &no_revocations(),
            Usage::Client,
            now(),
        );
        assert_eq!(got.map_err(|e| e.reason()), Err("untrusted"));
    }

    #[test]
    fn a_shortcut_intermediate_outside_its_validity_is_refused() {
        let ca = TestCa::new(TD);
        let (expired, issuer) = ca.intermediate_with(|p| {
            p.not_before = now_plus(-7200);
            p.not_after = now_plus(-120);
        });
        let leaf = ca.leaf_signed_by(&issuer, unchanged);
        let mut bundle = ca.bundle().clone();
        assert_eq!(bundle.add_intermediates(std::slice::from_ref(&expired)), 1);
        for b in [ca.bundle(), &bundle] {
            let got = verify_svid(
                &leaf,
                std::slice::from_ref(&expired),
                b,
                &no_revocations(),
                Usage::Client,
                now(),
            );
            assert_eq!(got.map_err(|e| e.reason()), Err("expired"));
        }
    }

    #[test]
    fn a_chain_without_its_intermediate_is_untrusted() {
        let ca = TestCa::new(TD);
        let svid = ca.mint(WORKLOAD);
        let got = verify_svid(
            &svid.chain()[0],
            &[],
            ca.bundle(),
            &no_revocations(),
            Usage::Client,
            now(),
        );
        assert!(matches!(got, Err(SvidError::UntrustedChain(_))), "{got:?}");
    }

    /// An intermediate needs both cA and keyCertSign; the first row shows that a
    /// sound intermediate made the same way passes, so a refusal is the rule's doing.
    #[test]
    fn an_intermediate_must_be_a_ca_allowed_to_sign_certificates() {
        let cases: Vec<(&str, Tweak, bool)> = vec![
            ("the production intermediate template", unchanged, true),
            (
                "keyUsage without keyCertSign",
                |p| p.key_usages = vec![Ku::DigitalSignature, Ku::CrlSign],
                false,
            ),
            ("cA false", |p| p.is_ca = IsCa::ExplicitNoCa, false),
            ("no basicConstraints", |p| p.is_ca = IsCa::NoCa, false),
        ];
        let ca = TestCa::new(TD);
        for (case, tweak, passes) in cases {
            let (intermediate, issuer) = ca.intermediate_with(tweak);
            let leaf = ca.leaf_signed_by(&issuer, unchanged);
            for usage in BOTH {
                let got = verify_svid(
                    &leaf,
                    std::slice::from_ref(&intermediate),
                    ca.bundle(),
                    &no_revocations(),
                    usage,
                    now(),
                );
                match (passes, got) {
                    (true, Ok(_)) => {}
                    (false, Err(e)) => assert_eq!(e.reason(), "untrusted", "{case} ({usage:?}): {e}"),
                    (_, got) => panic!("{case} ({usage:?}): {got:?}"),
                }
            }
        }
    }

    #[test]
    fn a_revoked_serial_or_id_is_refused_and_ids_compare_over_their_full_length() {
        let ca = TestCa::new(TD);
        let svid = ca.mint(WORKLOAD);
        let serial = svid.serial().clone();
        let cases: Vec<(&str, RevocationSet, Option<SvidError>)> = vec![
            (
                "its serial",
                revoked(1, vec![RevocationTarget::Serial(serial.clone())]),
                Some(SvidError::RevokedSerial { serial }),
            ),
            (
                "its ID",
                revoked(1, vec![RevocationTarget::SpiffeId(id(WORKLOAD))]),
                Some(SvidError::RevokedId { id: id(WORKLOAD) }),
            ),
            (
                "a longer ID it is a prefix of",
                revoked(1, vec![RevocationTarget::SpiffeId(id("spiffe://td/ns/a/sa/bb"))]),
                None,
            ),
            (
                "a shorter ID that is its prefix",
                revoked(1, vec![RevocationTarget::SpiffeId(id("spiffe://td/ns/a/sa"))]),
                None,
            ),
            (
                "another serial",
                revoked(1, vec![RevocationTarget::Serial("01".parse().unwrap())]),
                None,
            ),
        ];
        for (case, revocations, want) in cases {
            for usage in BOTH {
                let got = verify_svid(
                    &svid.chain()[0],
                    &svid.chain()[1..],
                    ca.bundle(),
                    &revocations,
                    usage,
                    now(),
                );
                assert_eq!(got.err(), want, "revoked: {case} ({usage:?})");
            }
        }
    }
}

mod trust {
    use super::*;

    #[test]
    fn only_a_newer_revocation_list_is_installed() {
        let ca = TestCa::new(TD);
        for (offered, installed) in [(4, false), (5, false), (6, true)] {
            let trust = Trust::new(ca.bundle().clone(), revoked(5, vec![]));
            assert_eq!(
                trust.update_revocations(revoked(offered, vec![])),
                installed,
                "version {offered} over 5"
            );
            assert_eq!(trust.revocations().version(), if installed { offered } else { 5 });
        }
    }

    #[test]
    fn a_replayed_older_list_never_unrevokes() {
        let ca = TestCa::new(TD);
        let svid = ca.mint(WORKLOAD);
        let trust = Trust::new(
            ca.bundle().clone(),
            revoked(2, vec![RevocationTarget::Serial(svid.serial().clone())]),
        );
        assert!(!trust.update_revocations(revoked(1, vec![])));
        let got = trust.verify(&svid.chain()[0], &svid.chain()[1..], Usage::Client, now());
        assert!(matches!(got, Err(SvidError::RevokedSerial { .. })), "{got:?}");
    }

    #[test]
    fn a_new_revocation_applies_to_the_next_verification() {
        let ca = TestCa::new(TD);
        let svid = ca.mint(WORKLOAD);
        let trust = Trust::new(ca.bundle().clone(), no_revocations());
        assert!(trust
            .verify(&svid.chain()[0], &svid.chain()[1..], Usage::Client, now())
            .is_ok());
        assert!(trust.update_revocations(revoked(1, vec![RevocationTarget::SpiffeId(id(WORKLOAD))])));
        let got = trust.verify(&svid.chain()[0], &svid.chain()[1..], Usage::Client, now());
        assert_eq!(got.err(), Some(SvidError::RevokedId { id: id(WORKLOAD) }));
    }

    #[test]
    fn a_chain_seen_before_is_answered_from_the_cache_with_the_same_answer() {
        let ca = TestCa::new(TD);
        let svid = ca.mint(WORKLOAD);
        let (leaf, rest) = (&svid.chain()[0], &svid.chain()[1..]);
        let trust = Trust::new(ca.bundle().clone(), no_revocations());
        let cold = trust.verify(leaf, rest, Usage::Client, now()).unwrap();
        assert_eq!(trust.verified.load().len(), 1);
        assert_eq!(trust.verify(leaf, rest, Usage::Client, now()).unwrap(), cold);
        assert_eq!(
            trust.verify(leaf, rest, Usage::Server, now()).unwrap(),
            cold,
            "usage is part of the key"
        );
        assert_eq!(trust.verified.load().len(), 2);
    }

    #[test]
    fn a_refused_chain_is_not_remembered() {
        let ca = TestCa::new(TD);
        let trust = Trust::new(ca.bundle().clone(), no_revocations());
        let leaf = ca.leaf(|p| p.is_ca = IsCa::Ca(BasicConstraints::Unconstrained));
        for _ in 0..2 {
            assert!(trust
                .verify(&leaf, std::slice::from_ref(&ca.intermediate), Usage::Client, now())
                .is_err());
        }
        assert_eq!(trust.verified.load().len(), 0);
    }

    #[test]
    fn a_cached_chain_still_expires() {
        let ca = TestCa::new(TD);
        let svid = ca.mint(WORKLOAD);
        let trust = Trust::new(ca.bundle().clone(), no_revocations());
        trust
            .verify(&svid.chain()[0], &svid.chain()[1..], Usage::Client, now())
            .unwrap();
        let later = now() + Duration::from_secs(2 * 3600);
        let got = trust.verify(&svid.chain()[0], &svid.chain()[1..], Usage::Client, later);
        assert_eq!(got.err(), Some(SvidError::Expired));
    }

    #[test]
    fn a_root_rotated_out_of_the_bundle_takes_its_cached_chains_with_it() {
        let (old, new) = (TestCa::new(TD), TestCa::new(TD));
        let svid = old.mint(WORKLOAD);
        let trust = Trust::new(old.bundle().clone(), no_revocations());
        trust.learn_intermediates(&svid.chain()[1..]);
        trust
            .verify(&svid.chain()[0], &svid.chain()[1..], Usage::Client, now())
            .unwrap();
        assert!(trust.set_bundle(new.bundle().clone()));
        let got = trust.verify(&svid.chain()[0], &svid.chain()[1..], Usage::Client, now());
        assert_eq!(got.map_err(|e| e.reason()), Err("untrusted"));
    }

    #[test]
    fn a_revoked_intermediate_voids_every_chain_under_it_on_every_path() {
        let ca = TestCa::new(TD);
        let svid = ca.mint(WORKLOAD);
        let intermediate_serial = crate::svid::SvidFacts::parse(&ca.intermediate).unwrap().serial;
        let trust = Trust::new(ca.bundle().clone(), no_revocations());
        trust.learn_intermediates(&svid.chain()[1..]);
        trust
            .verify(&svid.chain()[0], &svid.chain()[1..], Usage::Client, now())
            .unwrap();
        assert!(trust.update_revocations(revoked(1, vec![RevocationTarget::Serial(intermediate_serial.clone())])));
        let want = Err(SvidError::RevokedIssuer {
            serial: intermediate_serial,
        });
        assert_eq!(
            trust.verify(&svid.chain()[0], &svid.chain()[1..], Usage::Client, now()),
            want,
            "cached"
        );
        let fresh = Trust::new(ca.bundle().clone(), trust.revocations().as_ref().clone());
        assert_eq!(
            fresh.verify(&svid.chain()[0], &svid.chain()[1..], Usage::Client, now()),
            want,
            "full path"
        );
        fresh.learn_intermediates(&svid.chain()[1..]);
        assert_eq!(
            fresh.verify(&svid.chain()[0], &svid.chain()[1..], Usage::Client, now()),
            want,
            "shortcut"
        );
    }

    #[test]
    fn a_chain_padded_with_extra_certificates_is_verified_but_not_remembered() {
        let ca = TestCa::new(TD);
        let svid = ca.mint(WORKLOAD);
        let trust = Trust::new(ca.bundle().clone(), no_revocations());
        let padded = [svid.chain()[1].clone(), ca.root.clone()];
        trust.verify(&svid.chain()[0], &padded, Usage::Client, now()).unwrap();
        assert_eq!(trust.verified.load().len(), 0);
    }

    #[test]
    fn learning_intermediates_never_undoes_a_bundle_swap() {
        let (old, new) = (TestCa::new(TD), TestCa::new(TD));
        let svid = old.mint(WORKLOAD);
        let trust = Trust::new(old.bundle().clone(), no_revocations());
        trust.learn_intermediates(&svid.chain()[1..]);
        assert!(trust.set_bundle(new.bundle().clone()));
        trust.learn_intermediates(&svid.chain()[1..]);
        assert_eq!(trust.bundle().roots(), new.bundle().roots(), "the new roots stay");
        assert!(trust
            .verify(&svid.chain()[0], &svid.chain()[1..], Usage::Client, now())
            .is_err());
        // An intermediate that a root of the new bundle also signed would carry over.
        let both = TrustBundle::new(trust_domain(TD), vec![old.root.clone(), new.root.clone()]).unwrap();
        let trust = Trust::new(old.bundle().clone(), no_revocations());
        trust.learn_intermediates(&svid.chain()[1..]);
        assert!(trust.set_bundle(both));
        assert_eq!(trust.bundle().verified_intermediates().count(), 1);
    }

    #[test]
    fn a_bundle_of_another_trust_domain_is_not_installed() {
        let (ours, other) = (TestCa::new(TD), TestCa::new("other.org"));
        let trust = Trust::new(ours.bundle().clone(), no_revocations());
        assert!(!trust.set_bundle(other.bundle().clone()));
        assert_eq!(trust.bundle().roots(), ours.bundle().roots());
        assert!(
            trust.set_bundle(TestCa::new(TD).bundle().clone()),
            "a new root of the same trust domain"
        );
    }
}

mod verifiers {
    use super::*;

    fn unix(t: SystemTime) -> UnixTime {
        UnixTime::since_unix_epoch(t.duration_since(SystemTime::UNIX_EPOCH).unwrap())
    }

    /// Secure naming: the server's ID must be one the client expected, compared whole.
    #[test]
    fn the_server_verifier_accepts_only_an_expected_id() {
        let ca = TestCa::new(TD);
        let svid = ca.mint(WORKLOAD);
        let trust = Trust::new(ca.bundle().clone(), no_revocations());
        let cases: Vec<(&str, Vec<&str>, bool)> = vec![
            ("the expected ID", vec![WORKLOAD], true),
            (
                "one of several expected IDs",
                vec!["spiffe://td/ns/a/sa/other", WORKLOAD],
                true,
            ),
            (
                "another ID of the right trust domain",
                vec!["spiffe://td/ns/a/sa/other"],
                false,
            ),
            (
                "an ID its own is a prefix of (CVE-2025-66220)",
                vec!["spiffe://td/ns/a/sa/bb"],
                false,
            ),
            ("an ID that is a prefix of its own", vec!["spiffe://td/ns/a/sa"], false),
            ("nothing expected", vec![], false),
        ];
        // The TLS server name plays no part: identity is the SPIFFE ID.
        let server_name = ServerName::try_from("anything.example").unwrap();
        for (case, expected, passes) in cases {
            let verifier = SvidServerVerifier::new(Arc::clone(&trust), expected.iter().map(|s| id(s)).collect());
            let got = verifier.verify_server_cert(&svid.chain()[0], &svid.chain()[1..], &server_name, &[], unix(now()));
            match (passes, got) {
                (true, Ok(_)) => {}
                (false, Err(e)) => assert!(
                    matches!(svid_error(&e), Some(SvidError::UnexpectedId { id: got, .. }) if *got == id(WORKLOAD)),
                    "{case}: {e:?}"
                ),
                (_, got) => panic!("{case}: {got:?}"),
            }
        }
    }

    /// How a refusal reaches rustls: expiry, not-yet-valid and revocation become the
    /// standard certificate errors (and alerts); every other rule stays readable
    /// through [`svid_error`].
    #[test]
    fn a_refusal_maps_to_the_rustls_error_that_carries_it() {
        let ca = TestCa::new(TD);
        let good = ca.mint(WORKLOAD);
        let server_only = ca.leaf(|p| p.extended_key_usages = vec![Eku::ServerAuth]);
        let expired = ca.leaf(|p| {
            p.not_before = now_plus(-7200);
            p.not_after = now_plus(-3600);
        });
        let revoked_trust = Trust::new(
            ca.bundle().clone(),
            revoked(1, vec![RevocationTarget::Serial(good.serial().clone())]),
        );
        let trust = Trust::new(ca.bundle().clone(), no_revocations());
        let intermediates = std::slice::from_ref(&ca.intermediate);
        let cases: Vec<(&str, &Arc<Trust>, &CertificateDer<'_>, CertificateError)> = vec![
            ("revoked", &revoked_trust, &good.chain()[0], CertificateError::Revoked),
            ("expired", &trust, &expired, CertificateError::Expired),
        ];
        for (case, trust, leaf, want) in cases {
            let verifier = SvidClientVerifier::new(Arc::clone(trust), true);
            let e = verifier
                .verify_client_cert(leaf, intermediates, unix(now()))
                .unwrap_err();
            assert_eq!(e, rustls::Error::InvalidCertificate(want), "{case}");
            assert_eq!(svid_error(&e), None, "{case}");
        }
        let verifier = SvidClientVerifier::new(Arc::clone(&trust), true);
        let e = verifier
            .verify_client_cert(&server_only, intermediates, unix(now()))
            .unwrap_err();
        assert_eq!(
            svid_error(&e),
            Some(&SvidError::ExtendedKeyUsage),
            "a server-only certificate as a client"
        );
        assert!(verifier
            .verify_client_cert(&good.chain()[0], &good.chain()[1..], unix(now()))
            .is_ok());
    }
}

/// Real TLS 1.3 handshakes over an in-memory pipe, with the configs every mesh peer uses.
mod handshake {
    use tokio_rustls::{TlsAcceptor, TlsConnector};

    use super::*;
    use crate::svid::Svid;
    use crate::tls::{client_config, server_config, SvidResolver};

    struct Outcome {
        server: Result<Option<SpiffeId>, std::io::Error>,
        client: Result<(), std::io::Error>,
    }

    /// Runs one handshake; the server reports the client ID it authenticated.
    async fn handshake(
        server: &Svid,
        client: &Svid,
        server_trust: Arc<Trust>,
        client_trust: Arc<Trust>,
        expected_server: &str,
    ) -> Outcome {
        let server_config = server_config(
            SvidResolver::with(server).unwrap(),
            SvidClientVerifier::new(server_trust, true),
            &[],
        )
        .unwrap();
        let client_config = client_config(
            SvidResolver::with(client).unwrap(),
            SvidServerVerifier::new(client_trust, vec![id(expected_server)]),
            &[],
        )
        .unwrap();
        let (client_io, server_io) = tokio::io::duplex(64 * 1024);
        let accept = async {
            let tls = TlsAcceptor::from(Arc::new(server_config)).accept(server_io).await?;
            Ok(tls.get_ref().1.peer_certificates().and_then(|c| peer_id(&c[0]).ok()))
        };
        let connect = async {
            let name = ServerName::try_from("ignored.example").unwrap();
            TlsConnector::from(Arc::new(client_config))
                .connect(name, client_io)
                .await
                .map(drop)
        };
        let (server, client) = tokio::join!(accept, connect);
        Outcome { server, client }
    }

    fn rustls_error(e: &std::io::Error) -> Option<&rustls::Error> {
        e.get_ref().and_then(|inner| inner.downcast_ref())
    }

    const SERVER: &str = "spiffe://td/ns/a/sa/server";
    const CLIENT: &str = "spiffe://td/ns/a/sa/client";

    #[tokio::test]
    async fn two_valid_peers_complete_mutual_tls() {
        let ca = TestCa::made_at(TD, SystemTime::now());
        let (server, client) = (ca.mint(SERVER), ca.mint(CLIENT));
        let trust = Trust::new(ca.bundle().clone(), no_revocations());
        let outcome = handshake(&server, &client, Arc::clone(&trust), trust, SERVER).await;
        outcome.client.unwrap();
        assert_eq!(outcome.server.unwrap(), Some(id(CLIENT)));
    }

    #[tokio::test]
    async fn a_client_with_a_revoked_serial_is_refused_at_the_handshake() {
        let ca = TestCa::made_at(TD, SystemTime::now());
        let (server, client) = (ca.mint(SERVER), ca.mint(CLIENT));
        let server_trust = Trust::new(
            ca.bundle().clone(),
            revoked(1, vec![RevocationTarget::Serial(client.serial().clone())]),
        );
        let client_trust = Trust::new(ca.bundle().clone(), no_revocations());
        let outcome = handshake(&server, &client, server_trust, client_trust, SERVER).await;
        let e = outcome.server.unwrap_err();
        assert_eq!(
            rustls_error(&e),
            Some(&rustls::Error::InvalidCertificate(CertificateError::Revoked)),
            "{e}"
        );
    }

    #[tokio::test]
    async fn a_client_refuses_a_valid_server_with_an_unexpected_id() {
        let ca = TestCa::made_at(TD, SystemTime::now());
        let (server, client) = (ca.mint(SERVER), ca.mint(CLIENT));
        let trust = Trust::new(ca.bundle().clone(), no_revocations());
        let outcome = handshake(
            &server,
            &client,
            Arc::clone(&trust),
            trust,
            "spiffe://td/ns/a/sa/intended",
        )
        .await;
        let e = outcome.client.unwrap_err();
        let refusal = rustls_error(&e).and_then(svid_error);
        assert!(matches!(refusal, Some(SvidError::UnexpectedId { .. })), "{e}");
        assert!(outcome.server.is_err(), "the server sees the client's alert");
    }
}
