//! The TokenReview client on its own: what it asks the API server, what it makes of
//! the answer, and how `ca serve --kubernetes-attestation [--kubeconfig FILE]`
//! reaches the API server.

use palisade_ca::attest::service_account::{ReviewError, TokenReviewer, DEFAULT_AUDIENCE};
use palisade_crds::tokenreview::{ConnectError, KubeTokenReviewer};

use crate::support::{FakeApiServer, KnownToken};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_kubeconfig_file_reaches_the_api_server_and_the_answer_is_mapped() {
    let api = FakeApiServer::start().await.unwrap();
    api.knows("token-web", KnownToken::new("shop", "web", DEFAULT_AUDIENCE));
    let tmp = tempfile::tempdir().unwrap();
    let kubeconfig = api.write_kubeconfig(tmp.path()).unwrap();

    let reviewer = KubeTokenReviewer::connect(Some(&kubeconfig), DEFAULT_AUDIENCE)
        .await
        .expect("the kubeconfig loads");
    let review = reviewer.review("token-web").await.expect("the API server answers");

    assert!(review.authenticated);
    assert_eq!(review.username, "system:serviceaccount:shop:web");
    assert_eq!(review.audiences, [DEFAULT_AUDIENCE]);
    assert_eq!(review.pod_name.as_deref(), Some("web-6d4c9"));
    assert!(review.pod_uid.is_some());
    assert_eq!(api.seen_reviews()[0].audiences, [DEFAULT_AUDIENCE]);

    let unknown = reviewer.review("token-forged").await.expect("an answer, not a failure");
    assert!(!unknown.authenticated);
    assert!(unknown.error.contains("invalid bearer token"), "{}", unknown.error);
    assert!(unknown.username.is_empty());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_missing_config_says_which_one_was_tried() {
    let tmp = tempfile::tempdir().unwrap();
    let absent = tmp.path().join("no-such-kubeconfig");
    let e = KubeTokenReviewer::connect(Some(&absent), DEFAULT_AUDIENCE)
        .await
        .unwrap_err();
    assert!(matches!(e, ConnectError::Kubeconfig { .. }), "{e}");
    assert!(e.to_string().contains(&absent.display().to_string()), "{e}");

    if std::env::var_os("KUBERNETES_SERVICE_HOST").is_none() {
        let e = KubeTokenReviewer::connect(None, DEFAULT_AUDIENCE).await.unwrap_err();
        assert!(matches!(e, ConnectError::InCluster(_)), "{e}");
        assert!(e.to_string().contains("--kubeconfig"), "a hint: {e}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_api_server_that_cannot_be_reached_is_a_failure_not_an_answer() {
    let closed = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap();
    let config = kube::Config::new(format!("https://{closed}").parse().unwrap());
    let reviewer = KubeTokenReviewer::new(kube::Client::try_from(config).unwrap(), DEFAULT_AUDIENCE);

    let e = reviewer.review("token-web").await.unwrap_err();

    let ReviewError::Unavailable(reason) = &e else {
        panic!("{e}")
    };
    assert!(!reason.contains("token-web"), "the token is never echoed: {e}");
    assert!(e.to_string().contains("may create `tokenreviews`"), "a hint: {e}");
}
