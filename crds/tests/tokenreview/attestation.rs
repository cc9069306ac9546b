//! What a pod's ServiceAccount token gets from the CA, and what it never gets.

use std::sync::Arc;
use std::time::SystemTime;

use palisade_ca::attest::service_account::DEFAULT_AUDIENCE;
use palisade_ca::client::rotation::{self, Bootstrap, RotationParams};
use palisade_ca::client::{connect, ClientError};
use palisade_ca::proto::v1 as pb;
use palisade_ca::service::events::CaEvent;
use palisade_ca::service::ReviewLimits;
use palisade_ca::tls::SvidResolver;
use palisade_ca::{verify_svid, Usage};
use tonic::Code;

use crate::support::{bootstrap, id, refused_with, Cluster, KnownToken, RunningCa};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_pods_token_gets_the_svid_of_its_namespace_and_service_account() {
    let cluster = Cluster::start().await;
    cluster
        .api
        .knows("token-web", KnownToken::new("shop", "web", DEFAULT_AUDIENCE));
    let web = id("shop", "web");

    let svid = cluster
        .bootstrap(&web, "token-web")
        .await
        .expect("the pod's token bootstraps its SVID");

    assert_eq!(svid.id(), &web);
    verify_svid(
        &svid.chain()[0],
        &svid.chain()[1..],
        &cluster.ca.endpoint.trust.bundle(),
        &Default::default(),
        Usage::Client,
        SystemTime::now(),
    )
    .expect("the SVID verifies against the trust bundle");
    let seen = cluster.api.seen_reviews();
    assert_eq!(seen.len(), 1, "one review per bootstrap");
    assert_eq!(seen[0].token, "token-web");
    assert_eq!(
        seen[0].audiences,
        [DEFAULT_AUDIENCE],
        "the CA asks for its own audience only"
    );
    assert_eq!(
        cluster.ca.events(),
        [CaEvent::Issued {
            id: web.clone(),
            serial: svid.serial().clone(),
            not_after_unix: palisade_ca::svid::unix_seconds(svid.not_after()),
        }],
        "recorded like a join-token issuance"
    );
    assert_eq!(cluster.ca.live_serials(&web), 1);

    // A projected token is not single-use: a restarted sidecar bootstraps again.
    let again = cluster.bootstrap(&web, "token-web").await.unwrap();
    assert_ne!(again.serial(), svid.serial());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tokens_the_api_server_does_not_authenticate_for_the_ca_get_nothing() {
    let cluster = Cluster::start().await;
    let kubernetes_audience = "https://kubernetes.default.svc.cluster.local";
    cluster.api.knows(
        "token-for-the-api-server",
        KnownToken::new("shop", "web", kubernetes_audience),
    );
    cluster.api.knows(
        "token-expired",
        KnownToken::new("shop", "web", DEFAULT_AUDIENCE).expired(),
    );
    let web = id("shop", "web");
    let cases = [
        (
            "a token of another audience",
            "token-for-the-api-server",
            "token audiences",
        ),
        ("an expired token", "token-expired", "has expired"),
        (
            "a token the API server does not know",
            "token-forged",
            "invalid bearer token",
        ),
    ];
    for (what, token, reason) in cases {
        let message = refused_with(cluster.bootstrap(&web, token).await, Code::Unauthenticated);
        assert!(message.contains(reason), "{what}: {message}");
        assert!(
            message.contains("did not authenticate the ServiceAccount token"),
            "{what}: {message}"
        );
        assert!(!message.contains(token), "{what}: the token is never echoed: {message}");
    }
    assert!(cluster.ca.events().is_empty(), "nothing issued");
    assert_eq!(cluster.ca.live_serials(&web), 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_token_never_signs_another_namespace_or_service_account() {
    let cluster = Cluster::start().await;
    cluster
        .api
        .knows("token-web", KnownToken::new("shop", "web", DEFAULT_AUDIENCE));
    for other in [
        id("payments", "web"),
        id("shop", "admin"),
        id("palisade-system", "palisade-ca"),
    ] {
        let before = cluster.ca.live_serials(&other);
        let message = refused_with(cluster.bootstrap(&other, "token-web").await, Code::PermissionDenied);
        assert!(
            message.contains("spiffe://k8s.example/ns/shop/sa/web") && message.contains(other.as_str()),
            "names both IDs: {message}"
        );
        assert_eq!(
            cluster.ca.live_serials(&other),
            before,
            "{other}: nothing new in the store"
        );
    }
    assert!(cluster.ca.events().is_empty(), "nothing issued");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_revoked_identity_gets_no_svid_from_its_token() {
    let cluster = Cluster::start().await;
    cluster
        .api
        .knows("token-web", KnownToken::new("shop", "web", DEFAULT_AUDIENCE));
    let web = id("shop", "web");
    cluster.ca.revoke(&web).await;

    let message = refused_with(cluster.bootstrap(&web, "token-web").await, Code::PermissionDenied);

    assert!(message.contains("is revoked"), "{message}");
    assert_eq!(cluster.ca.live_serials(&web), 0);
    assert!(
        !cluster.ca.events().iter().any(|e| matches!(e, CaEvent::Issued { .. })),
        "nothing issued"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_ca_without_kubernetes_attestation_refuses_service_account_tokens() {
    let ca = RunningCa::start(None, ReviewLimits::default()).await;

    let message = refused_with(
        bootstrap(&ca, &id("shop", "web"), "token-web").await,
        Code::FailedPrecondition,
    );

    assert!(message.contains("--kubernetes-attestation"), "{message}");
    assert!(ca.events().is_empty());
}

/// A call carries exactly one credential: a ServiceAccount token together with a
/// join token or with a client certificate is refused before anything is reviewed.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_service_account_token_is_the_only_credential_of_its_call() {
    let cluster = Cluster::start().await;
    cluster
        .api
        .knows("token-web", KnownToken::new("shop", "web", DEFAULT_AUDIENCE));
    let web = id("shop", "web");
    let svid = cluster.bootstrap(&web, "token-web").await.unwrap();
    let reviews = cluster.api.seen_reviews().len();

    let sign = |resolver: Arc<SvidResolver>, join_token: &str| {
        let request = pb::SignRequest {
            csr_der: csr(&web),
            join_token: join_token.to_owned(),
            ttl_seconds: 0,
            service_account_token: "token-web".to_owned(),
        };
        let endpoint = cluster.ca.endpoint.clone();
        async move {
            let channel = connect(&endpoint, resolver).await.unwrap();
            pb::ca_client::CaClient::new(channel).sign(request).await
        }
    };
    let with_join_token = sign(SvidResolver::empty(), "0123abcd").await.unwrap_err();
    assert_eq!(with_join_token.code(), Code::InvalidArgument, "{with_join_token:?}");
    assert!(with_join_token.message().contains("exactly one credential"));
    let renewing = sign(SvidResolver::with(&svid).unwrap(), "").await.unwrap_err();
    assert_eq!(renewing.code(), Code::InvalidArgument, "{renewing:?}");

    assert_eq!(cluster.api.seen_reviews().len(), reviews, "neither was reviewed");
    assert_eq!(cluster.ca.live_serials(&web), 1, "only the first SVID");
}

/// The sidecar's way: `Bootstrap::ServiceAccountToken(FILE)` reads the file at
/// each start (the kubelet rotates it); a missing or empty file is a clear error.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_sidecar_bootstraps_from_its_token_file() {
    let cluster = Cluster::start().await;
    cluster
        .api
        .knows("token-web-1", KnownToken::new("shop", "web", DEFAULT_AUDIENCE));
    cluster
        .api
        .knows("token-web-2", KnownToken::new("shop", "web", DEFAULT_AUDIENCE));
    let web = id("shop", "web");
    let tmp = tempfile::tempdir().unwrap();
    let file = tmp.path().join("token");
    let params = RotationParams {
        endpoint: cluster.ca.endpoint.clone(),
        id: web.clone(),
        bootstrap: Bootstrap::ServiceAccountToken(file.clone()),
        ttl: None.into(),
    };

    std::fs::write(&file, "token-web-1\n").unwrap();
    let (svids, task) = rotation::start(params.clone())
        .await
        .expect("bootstrapped from the file");
    assert_eq!(svids.borrow().id(), &web);
    task.abort();
    std::fs::write(&file, "token-web-2").unwrap();
    let (_svids, task) = rotation::start(params.clone()).await.expect("the rotated token works");
    task.abort();
    let tokens: Vec<String> = cluster.api.seen_reviews().into_iter().map(|s| s.token).collect();
    assert_eq!(
        tokens,
        ["token-web-1", "token-web-2"],
        "the file is read again, trimmed"
    );

    std::fs::write(&file, "").unwrap();
    let empty = rotation::start(params.clone()).await.map(|_| ()).unwrap_err();
    assert!(matches!(empty, ClientError::TokenFile { .. }), "{empty}");
    assert!(empty.to_string().contains("is empty"), "{empty}");
    std::fs::remove_file(&file).unwrap();
    let missing = rotation::start(params).await.map(|_| ()).unwrap_err();
    assert!(missing.to_string().contains(&file.display().to_string()), "{missing}");
}

/// A CSR for `id` with a fresh key.
fn csr(id: &palisade_ca::SpiffeId) -> Vec<u8> {
    let key = rcgen::KeyPair::generate().unwrap();
    let mut params = rcgen::CertificateParams::default();
    params.subject_alt_names = vec![rcgen::SanType::URI(id.as_str().try_into().unwrap())];
    params.serialize_request(&key).unwrap().der().to_vec()
}

/// A sidecar whose SVID expired while it could not renew (here: the CA refuses
/// renewals with that certificate) presents its pod's token again and gets a new
/// SVID, as at its start; renewing with the expired SVID would never work.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_sidecar_whose_svid_expired_bootstraps_again_with_its_token() {
    use palisade_ca::revocation::RevocationTarget;

    let cluster = Cluster::start().await;
    cluster
        .api
        .knows("token-web", KnownToken::new("shop", "web", DEFAULT_AUDIENCE));
    let dir = tempfile::tempdir().unwrap();
    let token_file = dir.path().join("token");
    std::fs::write(&token_file, "token-web\n").unwrap();
    let web = id("shop", "web");
    let (mut svids, _task) = rotation::start(RotationParams {
        endpoint: cluster.ca.endpoint.clone(),
        id: web.clone(),
        bootstrap: Bootstrap::ServiceAccountToken(token_file),
        ttl: Some(std::time::Duration::from_secs(2)).into(),
    })
    .await
    .unwrap();
    // Each SVID it gets is revoked by serial at once, so its renewals are refused:
    // only a new bootstrap, once the SVID has expired, gets it another.
    let bootstraps = || {
        let issued = cluster.ca.events().into_iter();
        issued
            .filter(|e| matches!(e, CaEvent::Issued { id, .. } if *id == web))
            .count()
    };
    tokio::time::timeout(crate::support::PATIENCE, async {
        loop {
            let svid = Arc::clone(&svids.borrow_and_update());
            cluster
                .ca
                .revoke_target(RevocationTarget::Serial(svid.serial().clone()))
                .await;
            if bootstraps() >= 2 {
                return;
            }
            svids.changed().await.unwrap();
        }
    })
    .await
    .expect("a second bootstrap after the SVID expired");
}
