//! The CA's lifecycle as operators and workloads see it.

use std::process::Command;
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use palisade_ca::client::revocations::follow;
use palisade_ca::client::rotation::{self, Bootstrap, RotationParams};
use palisade_ca::client::{connect, fetch_svid, ClientError, Credential};
use palisade_ca::proto::v1 as pb;
use palisade_ca::tls::SvidResolver;
use palisade_ca::{verify_svid, Usage};
use tokio::sync::watch;
use tonic::Code;
use x509_parser::prelude::FromDer;

use crate::support::{eventually, fails, has_openssl, ok, s, CaDirFixture};

fn refused_with(result: Result<palisade_ca::Svid, ClientError>, code: Code) -> String {
    match result {
        Err(ClientError::Refused(status)) => {
            assert_eq!(status.code(), code, "{status:?}");
            status.message().to_string()
        }
        other => panic!("expected a {code:?} refusal, got {other:?}"),
    }
}

/// init → serve → token → SVID → renew → revoke by ID → renewal refused, the
/// revocation arrives on WatchRevocations → `ca crl` lists the serials.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn svid_lifecycle_from_join_token_to_crl() {
    let ca = CaDirFixture::init("e2e.test");
    let server = ca.serve();
    let endpoint = ca.endpoint(&server);
    let web = ca.id("shop", "web");

    // First SVID from a join token: the key is made here, only the CSR travels.
    let token = ca.token(&web);
    let first = fetch_svid(
        &endpoint,
        &web,
        &Credential::JoinToken(token.clone()),
        Some(Duration::from_secs(4)),
    )
    .await
    .expect("the join token bootstraps an SVID");
    assert_eq!(first.id(), &web);
    let verified = verify_svid(
        &first.chain()[0],
        &first.chain()[1..],
        &ca.bundle(),
        &Default::default(),
        Usage::Client,
        SystemTime::now(),
    )
    .expect("the issued SVID verifies against the bundle");
    assert_eq!(&verified.serial, first.serial());

    // The token was single-use.
    let reuse = fetch_svid(&endpoint, &web, &Credential::JoinToken(token), None).await;
    refused_with(reuse, Code::PermissionDenied);

    // Rotation renews at about half of the 4 s lifetime, with the current SVID as credential.
    let (mut svids, rotation_task) = rotation::start(RotationParams {
        endpoint: endpoint.clone(),
        id: web.clone(),
        bootstrap: Bootstrap::Existing(Arc::new(first)),
        ttl: Some(Duration::from_secs(4)).into(),
    })
    .await
    .unwrap();
    let first_serial = svids.borrow().serial().clone();
    tokio::time::timeout(Duration::from_secs(10), svids.changed())
        .await
        .expect("renewed within 10 s")
        .unwrap();
    let renewed = Arc::clone(&svids.borrow());
    assert_eq!(renewed.id(), &web, "renewal keeps the identity");
    assert_ne!(renewed.serial(), &first_serial, "renewal issues a new certificate");
    rotation_task.abort();

    // Follow the revocation stream: version 1 (empty) arrives first.
    let trust = palisade_ca::verify::Trust::new(ca.bundle(), Default::default());
    let (updates_tx, mut updates) = watch::channel(None);
    let follower = tokio::spawn(follow(
        endpoint.clone(),
        SvidResolver::empty(),
        Arc::clone(&trust),
        updates_tx,
    ));
    tokio::time::timeout(Duration::from_secs(10), updates.changed())
        .await
        .expect("the first list arrives")
        .unwrap();
    assert_eq!(trust.revocations().version(), 1);

    // Revoke the identity through the CLI (admin API of the running CA).
    let started = std::time::Instant::now();
    let said = ok(&[
        "ca",
        "revoke",
        "--spiffe-id",
        web.as_str(),
        "--reason",
        "keyCompromise",
        "--dir",
        ca.path(),
    ]);
    assert!(said.contains("revoked SPIFFE ID"), "{said}");
    eventually(Duration::from_secs(5), "the revocation on WatchRevocations", || {
        trust.revocations().is_id_revoked(&web).then_some(())
    })
    .await;
    eprintln!(
        "revocation reached the watcher {:?} after the CLI started",
        started.elapsed()
    );
    follower.abort();

    // Renewal with the (now revoked) SVID is refused, and so is a fresh token for that ID.
    let renewal = fetch_svid(&endpoint, &web, &Credential::Svid(Arc::clone(&renewed)), None).await;
    assert!(renewal.is_err(), "a revoked identity cannot renew: {renewal:?}");
    let token = ca.token(&web);
    let msg = refused_with(
        fetch_svid(&endpoint, &web, &Credential::JoinToken(token), None).await,
        Code::PermissionDenied,
    );
    assert!(msg.contains("revoked"), "{msg}");

    // The CRL lists both certificates of the revoked identity, signed by the intermediate.
    let crl_path = ca.dir.join("crl.der");
    ok(&["ca", "crl", "--out", s(&crl_path), "--dir", ca.path()]);
    let der = std::fs::read(&crl_path).unwrap();
    let (_, crl) = x509_parser::revocation_list::CertificateRevocationList::from_der(&der).unwrap();
    let listed: Vec<String> = crl
        .iter_revoked_certificates()
        .map(|r| palisade_ca::Serial::from_be_bytes(r.raw_serial()).to_string())
        .collect();
    for serial in [&first_serial, renewed.serial()] {
        assert!(listed.contains(&serial.to_string()), "CRL {listed:?} lacks {serial}");
    }
    if has_openssl() {
        let out = Command::new("openssl")
            .args([
                "crl",
                "-inform",
                "DER",
                "-in",
                s(&crl_path),
                "-CAfile",
                s(&ca.file("intermediate.pem")),
                "-noout",
                "-verify",
            ])
            .output()
            .unwrap();
        assert!(String::from_utf8_lossy(&out.stderr).contains("verify OK"), "{out:?}");
    }

    // Unrevoked, the identity can be bootstrapped again.
    ok(&["ca", "unrevoke", "--spiffe-id", web.as_str(), "--dir", ca.path()]);
    let token = ca.token(&web);
    fetch_svid(&endpoint, &web, &Credential::JoinToken(token), None)
        .await
        .expect("issued again after unrevoke");
}

/// A CSR that asks for more than the attested identity is refused, and the token
/// survives (nothing was stored), so the right CSR still works with it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_ca_signs_only_the_attested_identity() {
    let ca = CaDirFixture::init("e2e.test");
    let server = ca.serve();
    let endpoint = ca.endpoint(&server);
    let web = ca.id("shop", "web");
    let token = ca.token(&web);

    let mut client = pb::ca_client::CaClient::new(connect(&endpoint, SvidResolver::empty()).await.unwrap());
    let csr_for = |sans: Vec<rcgen::SanType>, ca_bit: bool| {
        let key = rcgen::KeyPair::generate().unwrap();
        let mut params = rcgen::CertificateParams::default();
        params.subject_alt_names = sans;
        if ca_bit {
            params.is_ca = rcgen::IsCa::Ca(rcgen::BasicConstraints::Unconstrained);
        }
        params.serialize_request(&key).unwrap().der().to_vec()
    };
    let uri = |s: &str| rcgen::SanType::URI(s.try_into().unwrap());
    let attacks = [
        (
            "another identity",
            csr_for(vec![uri("spiffe://e2e.test/ns/shop/sa/payments")], false),
        ),
        (
            "an extra SAN",
            csr_for(
                vec![
                    uri(web.as_str()),
                    rcgen::SanType::DnsName("evil.example".try_into().unwrap()),
                ],
                false,
            ),
        ),
        (
            "two URI SANs",
            csr_for(
                vec![uri(web.as_str()), uri("spiffe://e2e.test/ns/shop/sa/payments")],
                false,
            ),
        ),
        ("no SAN", csr_for(vec![], false)),
        ("a CA certificate", csr_for(vec![uri(web.as_str())], true)),
        ("garbage", b"not a CSR".to_vec()),
    ];
    for (what, csr_der) in attacks {
        let status = client
            .sign(pb::SignRequest {
                csr_der,
                join_token: token.clone(),
                ttl_seconds: 0,
                service_account_token: String::new(),
            })
            .await
            .expect_err(&format!("a CSR with {what} must be refused"));
        assert_eq!(status.code(), Code::InvalidArgument, "{what}: {status:?}");
    }
    let status = client
        .sign(pb::SignRequest {
            csr_der: csr_for(vec![uri(web.as_str())], false),
            join_token: token.clone(),
            ttl_seconds: 25 * 3600,
            service_account_token: String::new(),
        })
        .await
        .expect_err("a TTL above 24 h must be refused");
    assert_eq!(status.code(), Code::InvalidArgument);
    let status = client
        .sign(pb::SignRequest {
            csr_der: csr_for(vec![uri(web.as_str())], false),
            join_token: String::new(),
            ttl_seconds: 0,
            service_account_token: String::new(),
        })
        .await
        .expect_err("no credential at all");
    assert_eq!(status.code(), Code::Unauthenticated);

    // The token was not burned by the refusals.
    let svid = fetch_svid(&endpoint, &web, &Credential::JoinToken(token), None)
        .await
        .unwrap();
    let lifetime = svid.not_after().duration_since(svid.not_before()).unwrap();
    assert!(
        lifetime <= Duration::from_secs(3600 + 30),
        "default lifetime ≤ 1 h (+30 s backdating), got {lifetime:?}"
    );
}

/// Admin calls need the admin credential.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn admin_calls_need_the_admin_credential() {
    let ca = CaDirFixture::init("e2e.test");
    let _server = ca.serve();
    let wrong = ca.dir.join("wrong.token");
    std::fs::write(&wrong, "0".repeat(64)).unwrap();
    let err = fails(
        &[
            "ca",
            "revoke",
            "--serial",
            "0a",
            "--dir",
            ca.path(),
            "--admin-token-file",
            s(&wrong),
        ],
        1,
    );
    assert!(err.contains("admin credential"), "{err}");
    let listed = ok(&["ca", "revocations", "list", "--dir", ca.path(), "-o", "json"]);
    assert!(listed.contains("\"revocations\": []"), "nothing was revoked: {listed}");
}

/// `revoker.token` (what the Kubernetes controller holds) lists revocations,
/// revokes with the controller's reason and unrevokes what it revoked, and
/// nothing else: it cannot mint a join token nor undo an operator's revocation.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_revoker_credential_may_only_touch_its_own_revocations() {
    let ca = CaDirFixture::init("e2e.test");
    let _server = ca.serve();
    let revoker = ca.file("revoker.token");
    let tail = ["--dir", ca.path(), "--admin-token-file", s(&revoker)];
    let as_revoker = |args: &[&'static str]| -> Vec<&str> { args.iter().copied().chain(tail).collect() };
    let own = "k8s:certificaterevocation/leaked: keyCompromise";
    ok(&as_revoker(&["ca", "revoke", "--serial", "0abc", "--reason", own]));
    let listed = ok(&as_revoker(&["ca", "revocations", "list", "-o", "json"]));
    assert!(listed.contains("0abc"), "{listed}");
    let err = fails(
        &as_revoker(&["ca", "revoke", "--serial", "0abd", "--reason", "keyCompromise"]),
        1,
    );
    assert!(err.contains("revokes only with a reason that starts with"), "{err}");
    ok(&[
        "ca",
        "revoke",
        "--serial",
        "0def",
        "--reason",
        "keyCompromise",
        "--dir",
        ca.path(),
    ]);
    let err = fails(&as_revoker(&["ca", "unrevoke", "--serial", "0def"]), 1);
    assert!(err.contains("unrevokes only what it revoked"), "{err}");
    let web = "spiffe://e2e.test/ns/shop/sa/web";
    let err = fails(&as_revoker(&["ca", "token", "create", "--spiffe-id", web]), 1);
    assert!(err.contains("may only revoke, unrevoke and list revocations"), "{err}");
    ok(&as_revoker(&["ca", "unrevoke", "--serial", "0abc"]));
    let listed = ok(&["ca", "revocations", "list", "--dir", ca.path(), "-o", "json"]);
    assert!(!listed.contains("0abc") && listed.contains("0def"), "{listed}");

    // An operator who revokes what the controller revoked takes the entry over.
    ok(&as_revoker(&["ca", "revoke", "--serial", "0aaa", "--reason", own]));
    ok(&[
        "ca",
        "revoke",
        "--serial",
        "0aaa",
        "--reason",
        "keyCompromise",
        "--dir",
        ca.path(),
    ]);
    let err = fails(&as_revoker(&["ca", "unrevoke", "--serial", "0aaa"]), 1);
    assert!(err.contains("unrevokes only what it revoked"), "{err}");

    // Palisade's own services and other trust domains are out of its reach.
    for id in [
        "spiffe://e2e.test/ns/palisade-system/sa/palisade-control-plane",
        "spiffe://other.test/ns/shop/sa/web",
    ] {
        let err = fails(&as_revoker(&["ca", "revoke", "--spiffe-id", id, "--reason", own]), 1);
        assert!(
            err.contains("revokes only workloads of trust domain `e2e.test`"),
            "{id}: {err}"
        );
    }
}

/// Revocations and used tokens survive a crash of the CA (SIGKILL) and a restart.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn state_survives_a_crash() {
    let ca = CaDirFixture::init("e2e.test");
    let server = ca.serve();
    let web = ca.id("shop", "web");
    let token = ca.token(&web);
    fetch_svid(&ca.endpoint(&server), &web, &Credential::JoinToken(token.clone()), None)
        .await
        .unwrap();
    ok(&[
        "ca",
        "revoke",
        "--serial",
        "0abc",
        "--reason",
        "superseded",
        "--dir",
        ca.path(),
    ]);
    server.kill();

    let server = ca.serve();
    let listed = ok(&[
        "ca",
        "revocations",
        "list",
        "--dir",
        ca.path(),
        "--remote",
        "-o",
        "json",
    ]);
    assert!(listed.contains("\"0abc\""), "{listed}");
    let reuse = fetch_svid(&ca.endpoint(&server), &web, &Credential::JoinToken(token), None).await;
    refused_with(reuse, Code::PermissionDenied);
}

/// `ca issue` output is accepted by openssl: one URI SAN, validity ≤ 1 h.
#[test]
fn offline_mint_is_a_standard_x509_svid() {
    let ca = CaDirFixture::init("e2e.test");
    let out = ca.dir.join("web");
    ok(&[
        "ca",
        "issue",
        "--spiffe-id",
        "spiffe://e2e.test/ns/shop/sa/web",
        "--out",
        s(&out),
        "--dir",
        ca.path(),
    ]);
    let mode = std::os::unix::fs::PermissionsExt::mode(&std::fs::metadata(out.join("leaf.key")).unwrap().permissions());
    assert_eq!(mode & 0o777, 0o600, "the key is private");
    let inspected = ok(&[
        "ca",
        "inspect",
        s(&out.join("chain.pem")),
        "--dir",
        ca.path(),
        "-o",
        "json",
    ]);
    assert!(inspected.contains("\"valid\": true"), "{inspected}");
    fails(
        &[
            "ca",
            "issue",
            "--spiffe-id",
            "spiffe://e2e.test/ns/shop/sa/web",
            "--out",
            s(&out),
            "--dir",
            ca.path(),
        ],
        2,
    );
    if !has_openssl() {
        return;
    }
    let verify = Command::new("openssl")
        .args([
            "verify",
            "-CAfile",
            s(&ca.file("bundle.pem")),
            "-untrusted",
            s(&ca.file("intermediate.pem")),
            s(&out.join("leaf.pem")),
        ])
        .output()
        .unwrap();
    assert!(verify.status.success(), "openssl verify: {verify:?}");
    let text = Command::new("openssl")
        .args(["x509", "-in", s(&out.join("leaf.pem")), "-noout", "-text"])
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&text.stdout);
    assert_eq!(text.matches("URI:").count(), 1, "exactly one URI SAN:\n{text}");
    assert!(text.contains("URI:spiffe://e2e.test/ns/shop/sa/web"), "{text}");
}

/// What operators get wrong gets a clear error and a stable exit code.
#[test]
fn cli_errors_are_clear_and_exit_codes_stable() {
    let ca = CaDirFixture::init("e2e.test");
    let err = fails(&["ca", "init", "--trust-domain", "e2e.test", "--dir", ca.path()], 1);
    assert!(err.contains("--force"), "{err}");
    let err = fails(
        &[
            "ca",
            "init",
            "--trust-domain",
            "Upper.Case",
            "--dir",
            s(&ca.dir.join("x")),
        ],
        2,
    );
    assert!(err.contains("lower"), "{err}");
    fails(
        &[
            "ca",
            "issue",
            "--spiffe-id",
            "spiffe://e2e.test/a/../b",
            "--out",
            s(&ca.dir.join("o")),
            "--dir",
            ca.path(),
        ],
        2,
    );
    let err = fails(&["ca", "revoke", "--serial", "0a", "--dir", ca.path()], 2);
    assert!(err.contains("ca serve"), "no running CA is explained: {err}");
    let err = fails(
        &[
            "ca",
            "revoke",
            "--serial",
            "0a",
            "--dir",
            ca.path(),
            "--ca",
            "127.0.0.1:1",
        ],
        3,
    );
    assert!(err.contains("cannot reach the CA"), "{err}");
    fails(&["ca", "revoke", "--serial", "zz", "--dir", ca.path(), "--offline"], 2);
    fails(&["ca", "revoke", "--dir", ca.path()], 2);
}

/// An operator's own root signs the intermediate (Istio's plug-in CA); its key is
/// used once and not copied into the CA directory.
#[test]
fn a_plugged_in_root_anchors_the_mesh() {
    let tmp = tempfile::tempdir().unwrap();
    let key = rcgen::KeyPair::generate().unwrap();
    let mut params = rcgen::CertificateParams::default();
    params.is_ca = rcgen::IsCa::Ca(rcgen::BasicConstraints::Unconstrained);
    params.key_usages = vec![rcgen::KeyUsagePurpose::KeyCertSign, rcgen::KeyUsagePurpose::CrlSign];
    params.distinguished_name.push(rcgen::DnType::CommonName, "Corp root");
    let root = params.self_signed(&key).unwrap();
    let (cert_path, key_path) = (tmp.path().join("corp-root.pem"), tmp.path().join("corp-root.key"));
    std::fs::write(&cert_path, root.pem()).unwrap();
    std::fs::write(&key_path, key.serialize_pem()).unwrap();

    let dir = tmp.path().join("ca");
    ok(&[
        "ca",
        "init",
        "--trust-domain",
        "corp.test",
        "--dir",
        s(&dir),
        "--root-cert",
        s(&cert_path),
        "--root-key",
        s(&key_path),
    ]);
    assert!(
        !dir.join("root.key").exists(),
        "a plugged-in root's key stays with its owner"
    );
    let bundle = palisade_ca::bundle::certs_from_pem(&std::fs::read(dir.join("bundle.pem")).unwrap()).unwrap();
    assert_eq!(bundle, vec![root.der().clone()], "the bundle is the plugged-in root");

    let out = dir.join("web");
    ok(&[
        "ca",
        "issue",
        "--spiffe-id",
        "spiffe://corp.test/ns/shop/sa/web",
        "--out",
        s(&out),
        "--dir",
        s(&dir),
    ]);
    ok(&["ca", "inspect", s(&out.join("chain.pem")), "--dir", s(&dir)]);

    // A root that is not a CA is refused, and nothing is written.
    let leafish = rcgen::CertificateParams::new(vec!["x.test".into()])
        .unwrap()
        .self_signed(&key)
        .unwrap();
    std::fs::write(&cert_path, leafish.pem()).unwrap();
    let other = tmp.path().join("other");
    let err = fails(
        &[
            "ca",
            "init",
            "--trust-domain",
            "corp.test",
            "--dir",
            s(&other),
            "--root-cert",
            s(&cert_path),
            "--root-key",
            s(&key_path),
        ],
        1,
    );
    assert!(err.contains("not a CA"), "{err}");
    assert!(!other.join("intermediate.key").exists());
}

/// The CRL works with standard tools: `openssl verify -crl_check` accepts a leaf
/// before its serial is revoked and refuses it after.
#[test]
fn openssl_checks_the_crl() {
    if !has_openssl() {
        return;
    }
    let ca = CaDirFixture::init("e2e.test");
    let out = ca.dir.join("web");
    let issued = ok(&[
        "ca",
        "issue",
        "--spiffe-id",
        "spiffe://e2e.test/ns/shop/sa/web",
        "--out",
        s(&out),
        "--dir",
        ca.path(),
    ]);
    let serial = issued
        .lines()
        .find_map(|l| l.trim().strip_prefix("serial:"))
        .unwrap()
        .trim()
        .to_string();
    let cafile = ca.dir.join("cafile.pem");
    let pems = [
        std::fs::read(ca.file("bundle.pem")).unwrap(),
        std::fs::read(ca.file("intermediate.pem")).unwrap(),
    ]
    .concat();
    std::fs::write(&cafile, pems).unwrap();
    let crl = ca.dir.join("crl.pem");
    let openssl_verify = || {
        Command::new("openssl")
            .args([
                "verify",
                "-crl_check",
                "-CRLfile",
                s(&crl),
                "-CAfile",
                s(&cafile),
                s(&out.join("leaf.pem")),
            ])
            .output()
            .unwrap()
    };

    ok(&["ca", "crl", "--out", s(&crl), "--dir", ca.path()]);
    let before = openssl_verify();
    assert!(before.status.success(), "not revoked yet: {before:?}");

    ok(&["ca", "revoke", "--serial", &serial, "--offline", "--dir", ca.path()]);
    ok(&["ca", "crl", "--out", s(&crl), "--dir", ca.path()]);
    let after = openssl_verify();
    assert!(!after.status.success());
    assert!(
        String::from_utf8_lossy(&after.stdout).contains("revoked")
            || String::from_utf8_lossy(&after.stderr).contains("revoked"),
        "{after:?}"
    );
}

/// A stolen key cannot renew itself out of reach: revoking a serial revokes every
/// certificate renewed from it, and a renewal from that lineage is refused.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn revoking_a_serial_reaches_what_was_renewed_from_it() {
    let ca = CaDirFixture::init("e2e.test");
    let server = ca.serve();
    let endpoint = ca.endpoint(&server);
    let web = ca.id("shop", "web");
    let stolen = fetch_svid(&endpoint, &web, &Credential::JoinToken(ca.token(&web)), None)
        .await
        .unwrap();
    let stolen = Arc::new(stolen);
    let renewed = Arc::new(
        fetch_svid(&endpoint, &web, &Credential::Svid(Arc::clone(&stolen)), None)
            .await
            .unwrap(),
    );
    assert_ne!(renewed.serial(), stolen.serial());

    ok(&[
        "ca",
        "revoke",
        "--serial",
        &stolen.serial().to_string(),
        "--reason",
        "keyCompromise",
        "--dir",
        ca.path(),
    ]);
    let listed = ok(&["ca", "revocations", "list", "--dir", ca.path(), "-o", "json"]);
    assert!(
        listed.contains(&format!("\"{}\"", renewed.serial())),
        "the renewal is revoked too: {listed}"
    );
    let again = fetch_svid(&endpoint, &web, &Credential::Svid(renewed), None).await;
    assert!(again.is_err(), "no renewal from a revoked lineage: {again:?}");
}
