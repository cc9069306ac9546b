//! What the CA signs, and what it refuses: a leaf only for the attested identity,
//! from a CSR that asks for exactly that, with a strong key, for a bounded time; and
//! a CA chain only under a root that is a CA whose key we hold.

use rcgen::{
    BasicConstraints, CertificateParams, CustomExtension, ExtendedKeyUsagePurpose as Eku, IsCa, KeyUsagePurpose as Ku,
    PublicKeyData, SignatureAlgorithm, PKCS_ECDSA_P256_SHA256, PKCS_ECDSA_P384_SHA384, PKCS_ED25519,
};
use x509_parser::extensions::GeneralName;

use super::*;
use crate::revocation::RevocationSet;
use crate::testing::{dns_san, id, now, now_plus, trust_domain, unchanged, uri_san, TestCa, Tweak, TD, WORKLOAD};
use crate::verify::{verify_svid, Usage};

/// A CSR from a fresh key of `alg` asking for [`WORKLOAD`], changed by `tweak`.
fn csr_with(alg: &'static SignatureAlgorithm, tweak: impl FnOnce(&mut CertificateParams)) -> (Vec<u8>, KeyPair) {
    let key = KeyPair::generate_for(alg).unwrap();
    let mut params = CertificateParams::default();
    params.subject_alt_names = vec![uri_san(WORKLOAD)];
    tweak(&mut params);
    let csr = params.serialize_request(&key).unwrap().der().to_vec();
    (csr, key)
}

fn csr(tweak: impl FnOnce(&mut CertificateParams)) -> Vec<u8> {
    csr_with(&PKCS_ECDSA_P256_SHA256, tweak).0
}

fn sign(ca: &TestCa, csr: &[u8]) -> Result<IssuedCert, IssueError> {
    ca.signer.sign_csr(csr, &id(WORKLOAD), DEFAULT_LEAF_TTL, now())
}

/// The leaf verifies as an SVID of the CA's trust domain, as client and as server.
fn assert_chains(ca: &TestCa, issued: &IssuedCert) {
    for usage in [Usage::Client, Usage::Server] {
        let verified = verify_svid(
            &issued.leaf,
            ca.signer.chain(),
            ca.bundle(),
            &RevocationSet::default(),
            usage,
            now(),
        )
        .unwrap_or_else(|e| panic!("{usage:?}: {e}"));
        assert_eq!(verified.id, issued.id);
        assert_eq!(verified.serial, issued.serial);
    }
}

/// The name of the error variant, e.g. `"MalformedCsr"`, so tables read as rule names.
fn rule(e: &IssueError) -> String {
    format!("{e:?}")
        .split([' ', '{', '('])
        .next()
        .unwrap_or_default()
        .to_owned()
}

fn unix(t: SystemTime) -> i64 {
    crate::svid::unix_seconds(t)
}

mod sign_csr {
    use super::*;

    #[test]
    fn a_leaf_for_the_attested_id_is_an_svid_and_nothing_more() {
        let ca = TestCa::new(TD);
        let (csr, key) = csr_with(&PKCS_ECDSA_P256_SHA256, unchanged);
        let issued = sign(&ca, &csr).unwrap();
        let cert = parse_certificate(&issued.leaf).unwrap();

        let sans: Vec<_> = cert
            .subject_alternative_name()
            .unwrap()
            .unwrap()
            .value
            .general_names
            .clone();
        assert_eq!(
            sans,
            vec![GeneralName::URI(WORKLOAD)],
            "exactly one SAN, the attested URI"
        );
        assert!(!cert.is_ca());
        let ku = cert.key_usage().unwrap().unwrap().value;
        assert!(ku.digital_signature() && !ku.key_cert_sign() && !ku.crl_sign(), "{ku}");
        let eku = cert.extended_key_usage().unwrap().unwrap().value;
        assert!(eku.server_auth && eku.client_auth && !eku.any, "{eku:?}");
        assert_eq!(
            cert.public_key().raw,
            key.subject_public_key_info(),
            "the CSR's key, certified"
        );

        let (not_before, not_after) = (
            cert.validity().not_before.timestamp(),
            cert.validity().not_after.timestamp(),
        );
        assert_eq!(not_before, unix(now()) - BACKDATE.whole_seconds());
        assert!(not_after - not_before <= (DEFAULT_LEAF_TTL.as_secs() as i64) + BACKDATE.whole_seconds());
        assert_eq!(
            (unix(issued.not_before), unix(issued.not_after)),
            (not_before, not_after)
        );
        assert_eq!(issued.id, id(WORKLOAD));
        assert_chains(&ca, &issued);
    }

    #[test]
    fn every_leaf_gets_its_own_serial() {
        let ca = TestCa::new(TD);
        let (a, b) = (sign(&ca, &csr(unchanged)).unwrap(), sign(&ca, &csr(unchanged)).unwrap());
        assert_ne!(a.serial, b.serial);
    }

    /// CSRs that may be signed: the CA takes their key and writes the rest itself.
    #[test]
    fn csrs_that_ask_for_no_more_than_the_attested_leaf_are_signed() {
        let cases: Vec<(&str, Tweak)> = vec![
            ("the attested URI SAN only", unchanged),
            ("cA false, said out loud", |p| p.is_ca = IsCa::ExplicitNoCa),
            ("the SVID key usages", |p| {
                p.key_usages = vec![Ku::DigitalSignature];
                p.extended_key_usages = vec![Eku::ServerAuth, Eku::ClientAuth];
            }),
        ];
        let ca = TestCa::new(TD);
        for (case, tweak) in cases {
            let issued = sign(&ca, &csr(tweak)).unwrap_or_else(|e| panic!("{case}: {e}"));
            assert_chains(&ca, &issued);
        }
    }

    /// Each row asks for something the attested caller may not have.
    #[test]
    fn a_csr_asking_for_more_than_the_attested_leaf_is_refused() {
        let mismatch = |found: &str| IssueError::SanMismatch {
            attested: id(WORKLOAD),
            found: found.into(),
        };
        let cases: Vec<(&str, Tweak, IssueError)> = vec![
            (
                "another workload's ID",
                |p| p.subject_alt_names = vec![uri_san("spiffe://td/ns/a/sa/admin")],
                mismatch("URI:spiffe://td/ns/a/sa/admin"),
            ),
            (
                "a prefix of the attested ID",
                |p| p.subject_alt_names = vec![uri_san("spiffe://td/ns/a/sa")],
                mismatch("URI:spiffe://td/ns/a/sa"),
            ),
            (
                "the attested ID and a DNS name",
                |p| p.subject_alt_names.push(dns_san("web.td")),
                mismatch("URI:spiffe://td/ns/a/sa/b, DNS:web.td"),
            ),
            (
                "the attested ID twice",
                |p| p.subject_alt_names.push(uri_san(WORKLOAD)),
                mismatch("URI:spiffe://td/ns/a/sa/b, URI:spiffe://td/ns/a/sa/b"),
            ),
            (
                "the attested ID as a DNS name",
                |p| p.subject_alt_names = vec![dns_san(WORKLOAD)],
                mismatch("DNS:spiffe://td/ns/a/sa/b"),
            ),
            ("no SAN", |p| p.subject_alt_names.clear(), mismatch("no SAN")),
            (
                "a CA certificate",
                |p| p.is_ca = IsCa::Ca(BasicConstraints::Unconstrained),
                IssueError::CaRequested,
            ),
            (
                "a CA certificate that may sign nothing below it",
                |p| p.is_ca = IsCa::Ca(BasicConstraints::Constrained(0)),
                IssueError::CaRequested,
            ),
            (
                "key usage keyCertSign",
                |p| p.key_usages = vec![Ku::DigitalSignature, Ku::KeyCertSign],
                IssueError::ExcessUsage("key usage keyCertSign or cRLSign".into()),
            ),
            (
                "key usage cRLSign",
                |p| p.key_usages = vec![Ku::CrlSign],
                IssueError::ExcessUsage("key usage keyCertSign or cRLSign".into()),
            ),
            (
                "extended key usage codeSigning",
                |p| p.extended_key_usages = vec![Eku::ServerAuth, Eku::CodeSigning],
                IssueError::ExcessUsage("an extended key usage other than serverAuth and clientAuth".into()),
            ),
            (
                "extended key usage any",
                |p| p.extended_key_usages = vec![Eku::Any],
                IssueError::ExcessUsage("an extended key usage other than serverAuth and clientAuth".into()),
            ),
            (
                "an extension the CA does not sign",
                |p| {
                    p.custom_extensions.push(CustomExtension::from_oid_content(
                        &[1, 3, 6, 1, 4, 1, 55555, 1],
                        vec![0x05, 0x00],
                    ));
                },
                IssueError::UnsupportedCsrExtension,
            ),
        ];
        let ca = TestCa::new(TD);
        for (case, tweak, want) in cases {
            assert_eq!(sign(&ca, &csr(tweak)).err(), Some(want), "{case}");
        }
    }

    #[test]
    fn a_csr_asking_for_exactly_what_an_svid_has_is_signed() {
        let ca = TestCa::new(TD);
        let asked = csr(|p| {
            p.key_usages = vec![Ku::DigitalSignature];
            p.extended_key_usages = vec![Eku::ServerAuth, Eku::ClientAuth];
            p.is_ca = IsCa::ExplicitNoCa;
        });
        assert_chains(&ca, &sign(&ca, &asked).unwrap());
    }

    #[test]
    fn a_csr_that_is_not_one_signed_request_is_refused() {
        let good = csr(unchanged);
        let mut tampered = good.clone();
        *tampered.last_mut().unwrap() ^= 0x01; // the last byte of the signature
        let cases: Vec<(&str, Vec<u8>, &str)> = vec![
            ("a tampered signature", tampered, "CsrSignature"),
            ("nothing", vec![], "MalformedCsr"),
            ("garbage", b"not a csr".to_vec(), "MalformedCsr"),
            ("a truncated CSR", good[..good.len() - 1].to_vec(), "MalformedCsr"),
            ("a trailing byte", [good.as_slice(), &[0]].concat(), "MalformedCsr"),
        ];
        let ca = TestCa::new(TD);
        for (case, der, want) in cases {
            let got = sign(&ca, &der).err();
            assert_eq!(got.as_ref().map(rule).as_deref(), Some(want), "{case}: {got:?}");
        }
    }

    #[test]
    fn the_lifetime_is_from_one_second_to_a_day() {
        let cases: Vec<(Duration, Option<IssueError>)> = vec![
            (Duration::ZERO, Some(IssueError::BadTtl { requested: 0 })),
            (Duration::from_secs(1), None),
            (DEFAULT_LEAF_TTL, None),
            (MAX_LEAF_TTL, None),
            (
                MAX_LEAF_TTL + Duration::from_secs(1),
                Some(IssueError::BadTtl { requested: 86_401 }),
            ),
            (
                Duration::from_secs(365 * 86_400),
                Some(IssueError::BadTtl {
                    requested: 365 * 86_400,
                }),
            ),
        ];
        let ca = TestCa::new(TD);
        for (ttl, want) in cases {
            let got = ca.signer.sign_csr(&csr(unchanged), &id(WORKLOAD), ttl, now());
            match (&got, want) {
                (Ok(issued), None) => assert_eq!(unix(issued.not_after), unix(now() + ttl), "{ttl:?}"),
                (_, want) => assert_eq!(got.err(), want, "{ttl:?}"),
            }
        }
    }

    #[test]
    fn p384_and_ed25519_keys_are_signed() {
        let ca = TestCa::new(TD);
        for alg in [&PKCS_ECDSA_P384_SHA384, &PKCS_ED25519] {
            let (csr, key) = csr_with(alg, unchanged);
            let issued = sign(&ca, &csr).unwrap_or_else(|e| panic!("{alg:?}: {e}"));
            let cert = parse_certificate(&issued.leaf).unwrap();
            assert_eq!(cert.public_key().raw, key.subject_public_key_info(), "{alg:?}");
            assert_chains(&ca, &issued);
        }
    }

    /// RSA keys come from the `openssl` binary: rcgen's ring backend cannot make them.
    #[test]
    fn an_rsa_key_needs_2048_bits() {
        let cases: Vec<(u32, bool)> = vec![(1024, false), (2048, true)];
        let ca = TestCa::new(TD);
        for (bits, signed) in cases {
            let Some(csr) = openssl_rsa_csr(bits) else {
                println!("skipped: the `openssl` binary is not available to make an RSA-{bits} CSR");
                return;
            };
            let got = sign(&ca, &csr);
            match (signed, got) {
                (true, Ok(issued)) => assert_chains(&ca, &issued),
                (false, Err(IssueError::WeakKey(why))) => assert!(why.contains("1024"), "{why}"),
                (_, got) => panic!("RSA-{bits}: {got:?}"),
            }
        }
    }

    fn openssl_rsa_csr(bits: u32) -> Option<Vec<u8>> {
        let dir = tempfile::tempdir().unwrap();
        let out = dir.path().join("csr.der");
        let status = std::process::Command::new("openssl")
            .args([
                "req",
                "-new",
                "-newkey",
                &format!("rsa:{bits}"),
                "-nodes",
                "-keyout",
                "/dev/null",
                "-subj",
                "/O=x",
            ])
            .args([
                "-addext",
                &format!("subjectAltName=URI:{WORKLOAD}"),
                "-outform",
                "DER",
                "-out",
            ])
            .arg(&out)
            .stderr(std::process::Stdio::null())
            .status()
            .ok()?;
        assert!(status.success(), "openssl req failed for RSA-{bits}");
        Some(std::fs::read(out).unwrap())
    }

    #[test]
    fn a_leaf_never_outlives_the_intermediate() {
        let ca = TestCa::new(TD);
        let intermediate_end = parse_certificate(&ca.intermediate)
            .unwrap()
            .validity()
            .not_after
            .timestamp();
        let late = system_time(intermediate_end - 3600);
        let issued = ca
            .signer
            .sign_csr(&csr(unchanged), &id(WORKLOAD), MAX_LEAF_TTL, late)
            .unwrap();
        assert_eq!(unix(issued.not_after), intermediate_end);
        let cert = parse_certificate(&issued.leaf).unwrap();
        assert_eq!(cert.validity().not_after.timestamp(), intermediate_end);

        let after_it = system_time(intermediate_end + 1);
        let got = ca
            .signer
            .sign_csr(&csr(unchanged), &id(WORKLOAD), MAX_LEAF_TTL, after_it);
        assert!(
            matches!(got, Err(IssueError::Internal(_))),
            "signed under an expired intermediate: {got:?}"
        );
    }

    #[test]
    fn the_ca_signs_only_ids_of_its_own_trust_domain() {
        let ca = TestCa::new(TD);
        let foreign = id("spiffe://evil.org/ns/a/sa/b");
        let csr = csr(|p| p.subject_alt_names = vec![uri_san(foreign.as_str())]);
        let got = ca.signer.sign_csr(&csr, &foreign, DEFAULT_LEAF_TTL, now());
        assert!(matches!(got, Err(IssueError::Internal(_))), "{got:?}");
    }
}

mod ca_chain {
    use super::*;

    #[test]
    fn a_new_ca_is_a_root_and_an_intermediate_that_may_sign_leaves_only() {
        let td = trust_domain(TD);
        let material = new_ca(&td, now(), None).unwrap();
        assert!(material.root_key.is_some());
        let root = parse_certificate(&material.root_cert).unwrap();
        let intermediate = parse_certificate(&material.intermediate_cert).unwrap();
        assert!(root.is_ca() && intermediate.is_ca());
        assert_eq!(root.subject(), root.issuer(), "the root is self-signed");
        assert_eq!(intermediate.issuer(), root.subject());
        intermediate.verify_signature(Some(root.public_key())).unwrap();
        let path_len = intermediate
            .basic_constraints()
            .unwrap()
            .unwrap()
            .value
            .path_len_constraint;
        assert_eq!(path_len, Some(0), "the intermediate signs leaves, not CAs");
        for cert in [&root, &intermediate] {
            assert!(cert.key_usage().unwrap().unwrap().value.key_cert_sign());
        }
    }

    /// A root certificate and its key, as an operator's own PKI hands them over.
    type PlugIn = (CertificateDer<'static>, KeyPair);

    /// A root made by rcgen, changed by `tweak`.
    fn plug_in_root(tweak: Tweak) -> PlugIn {
        let key = KeyPair::generate().unwrap();
        let mut params = CertificateParams::default();
        params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        params.key_usages = vec![Ku::KeyCertSign, Ku::CrlSign];
        params.not_before = now_plus(-86_400);
        params.not_after = now_plus(3650 * 86_400);
        tweak(&mut params);
        (params.self_signed(&key).unwrap().der().clone(), key)
    }

    #[test]
    fn a_plug_in_root_anchors_the_new_ca_and_keeps_its_key() {
        let td = trust_domain(TD);
        let (root, key) = plug_in_root(unchanged);
        let material = new_ca(&td, now(), Some((root.clone(), key))).unwrap();
        assert_eq!(material.root_cert, root, "the bundle is the plug-in root");
        assert!(material.root_key.is_none(), "its key stays with its owner");

        let bundle = TrustBundle::new(td, vec![material.root_cert]).unwrap();
        let signer = CaSigner::new(material.intermediate_cert, material.intermediate_key, bundle).unwrap();
        let svid = signer.mint(&id(WORKLOAD), DEFAULT_LEAF_TTL, now()).unwrap();
        let verified = verify_svid(
            &svid.chain()[0],
            &svid.chain()[1..],
            signer.bundle(),
            &RevocationSet::default(),
            Usage::Server,
            now(),
        );
        assert_eq!(verified.unwrap().id, id(WORKLOAD));
    }

    #[test]
    fn a_plug_in_root_that_cannot_anchor_the_ca_is_refused() {
        let cases: Vec<(&str, PlugIn)> = vec![
            (
                "its key is another",
                (plug_in_root(unchanged).0, KeyPair::generate().unwrap()),
            ),
            ("it is not a CA", plug_in_root(|p| p.is_ca = IsCa::NoCa)),
            ("it says cA false", plug_in_root(|p| p.is_ca = IsCa::ExplicitNoCa)),
            (
                "its key usage forbids signing certificates",
                plug_in_root(|p| p.key_usages = vec![Ku::CrlSign]),
            ),
            ("it has expired", plug_in_root(|p| p.not_after = now_plus(-1))),
            ("it is not valid yet", plug_in_root(|p| p.not_before = now_plus(3600))),
            (
                "it is not DER",
                (CertificateDer::from(b"garbage".to_vec()), KeyPair::generate().unwrap()),
            ),
        ];
        let td = trust_domain(TD);
        for (case, root) in cases {
            let got = new_ca(&td, now(), Some(root));
            assert!(matches!(got, Err(IssueError::BadRoot(_))), "{case}: {got:?}");
        }
    }

    #[test]
    fn a_signer_whose_key_is_not_the_intermediates_is_refused() {
        let ca = TestCa::new(TD);
        let got = CaSigner::new(
            ca.intermediate.clone(),
            KeyPair::generate().unwrap(),
            ca.bundle().clone(),
        );
        assert!(matches!(got, Err(IssueError::BadRoot(_))), "{got:?}");
    }
}
