//! CA micro-benchmarks: CSR → signed leaf, and SVID verification.
//!
//! `cargo bench -p palisade-ca --bench ca`; figures go in docs/benchmarks.md.

#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::indexing_slicing,
    reason = "benchmark setup"
)]

use std::hint::black_box;
use std::time::{Duration, SystemTime};

use criterion::{criterion_group, criterion_main, Criterion, Throughput};
use palisade_ca::issuer::{new_ca, CaSigner};
use palisade_ca::revocation::{RevocationEntry, RevocationSet, RevocationTarget};
use palisade_ca::{verify_svid, SpiffeId, TrustBundle, TrustDomain, Usage};

fn signer() -> CaSigner {
    let td = TrustDomain::new("bench.test").unwrap();
    let m = new_ca(&td, SystemTime::now(), None).unwrap();
    let bundle = TrustBundle::new(td, vec![m.root_cert]).unwrap();
    CaSigner::new(m.intermediate_cert, m.intermediate_key, bundle).unwrap()
}

fn sign(c: &mut Criterion) {
    let signer = signer();
    let id = SpiffeId::parse("spiffe://bench.test/ns/shop/sa/web").unwrap();
    let key = rcgen::KeyPair::generate().unwrap();
    let mut params = rcgen::CertificateParams::default();
    params.subject_alt_names = vec![rcgen::SanType::URI(id.as_str().try_into().unwrap())];
    let csr = params.serialize_request(&key).unwrap().der().to_vec();
    let mut g = c.benchmark_group("ca");
    g.throughput(Throughput::Elements(1));
    g.bench_function("sign_csr (CSR checks + leaf signed by the intermediate)", |b| {
        b.iter(|| {
            signer
                .sign_csr(black_box(&csr), &id, Duration::from_secs(3600), SystemTime::now())
                .unwrap()
        })
    });
    g.finish();
}

fn verify(c: &mut Criterion) {
    let signer = signer();
    let id = SpiffeId::parse("spiffe://bench.test/ns/shop/sa/web").unwrap();
    let svid = signer.mint(&id, Duration::from_secs(3600), SystemTime::now()).unwrap();
    let (leaf, intermediates) = svid.chain().split_first().unwrap();
    // A realistic revocation set: 1,000 serials and 100 identities.
    let entries: Vec<RevocationEntry> = (0..1000u32)
        .map(|i| RevocationTarget::Serial(palisade_ca::Serial::from_be_bytes(&i.to_be_bytes())))
        .chain((0..100).map(|i| {
            RevocationTarget::SpiffeId(SpiffeId::parse(&format!("spiffe://bench.test/ns/x/sa/r{i}")).unwrap())
        }))
        .map(|target| RevocationEntry {
            target,
            reason: String::new(),
            revoked_at_unix: 0,
        })
        .collect();
    let revocations = RevocationSet::new(2, &entries);
    let mut with_shortcut = signer.bundle().clone();
    assert_eq!(with_shortcut.add_intermediates(intermediates), 1);

    // Baseline in the same run: one raw ECDSA P-256 signature check with ring, the
    // floor under any certificate verification.
    let rng = ring::rand::SystemRandom::new();
    let alg = &ring::signature::ECDSA_P256_SHA256_ASN1_SIGNING;
    let pkcs8 = ring::signature::EcdsaKeyPair::generate_pkcs8(alg, &rng).unwrap();
    let key = ring::signature::EcdsaKeyPair::from_pkcs8(alg, pkcs8.as_ref(), &rng).unwrap();
    let msg = [7u8; 256];
    let sig = key.sign(&rng, &msg).unwrap();
    let public = ring::signature::UnparsedPublicKey::new(
        &ring::signature::ECDSA_P256_SHA256_ASN1,
        ring::signature::KeyPair::public_key(&key).as_ref().to_vec(),
    );

    let mut g = c.benchmark_group("ca");
    g.throughput(Throughput::Elements(1));
    g.bench_function("baseline: one ECDSA P-256 verify (ring)", |b| {
        b.iter(|| public.verify(black_box(&msg), sig.as_ref()).unwrap())
    });
    let full = signer.bundle();
    g.bench_function(
        "verify_svid, full path (leaf + intermediate to root, 1,100 revocations)",
        |b| {
            b.iter(|| {
                verify_svid(
                    black_box(leaf),
                    intermediates,
                    full,
                    &revocations,
                    Usage::Client,
                    SystemTime::now(),
                )
                .unwrap()
            })
        },
    );
    g.bench_function("verify_svid, verified intermediate (1,100 revocations)", |b| {
        b.iter(|| {
            verify_svid(
                black_box(leaf),
                intermediates,
                &with_shortcut,
                &revocations,
                Usage::Client,
                SystemTime::now(),
            )
            .unwrap()
        })
    });
    let trust = palisade_ca::verify::Trust::new(with_shortcut.clone(), revocations.clone());
    trust
        .verify(leaf, intermediates, Usage::Client, SystemTime::now())
        .unwrap();
    g.bench_function(
        "Trust::verify, chain seen before (cache hit: validity + revocation)",
        |b| {
            b.iter(|| {
                trust
                    .verify(black_box(leaf), intermediates, Usage::Client, SystemTime::now())
                    .unwrap()
            })
        },
    );
    g.finish();
}

criterion_group!(benches, sign, verify);
criterion_main!(benches);
