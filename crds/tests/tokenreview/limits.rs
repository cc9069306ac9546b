//! Reviews are bounded: the callers are not authenticated yet, so neither a slow
//! API server nor a flood of tokens may tie up the CA or pile onto the API server.

use std::time::Duration;

use palisade_ca::attest::service_account::DEFAULT_AUDIENCE;
use palisade_ca::service::ReviewLimits;
use tonic::Code;

use crate::support::{eventually, id, refused_with, Cluster, KnownToken};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_review_the_api_server_does_not_answer_in_time_is_unavailable() {
    let cluster = Cluster::with_limits(ReviewLimits {
        timeout: Duration::from_millis(500),
        ..ReviewLimits::default()
    })
    .await;
    cluster
        .api
        .knows("token-web", KnownToken::new("shop", "web", DEFAULT_AUDIENCE));
    cluster.api.hold_review("token-web");
    let web = id("shop", "web");

    let result = cluster.bootstrap(&web, "token-web").await;

    let transient = result.as_ref().is_err_and(|e| e.is_transient());
    let message = refused_with(result, Code::Unavailable);
    assert!(message.contains("did not answer the token review"), "{message}");
    assert!(transient, "a sidecar retries it");
    assert_eq!(cluster.ca.live_serials(&web), 0);
    cluster.api.release_held_reviews();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn reviews_beyond_the_concurrency_cap_are_refused_at_once() {
    let cluster = Cluster::with_limits(ReviewLimits {
        timeout: Duration::from_secs(60),
        max_concurrent: 1,
        ..ReviewLimits::default()
    })
    .await;
    cluster
        .api
        .knows("token-slow", KnownToken::new("shop", "slow", DEFAULT_AUDIENCE));
    cluster
        .api
        .knows("token-web", KnownToken::new("shop", "web", DEFAULT_AUDIENCE));
    cluster.api.hold_review("token-slow");
    let (slow, web) = (id("shop", "slow"), id("shop", "web"));

    let pending = {
        let endpoint = cluster.ca.endpoint.clone();
        let slow = slow.clone();
        tokio::spawn(async move {
            let credential = palisade_ca::client::Credential::ServiceAccountToken("token-slow".into());
            palisade_ca::client::fetch_svid(&endpoint, &slow, &credential, None).await
        })
    };
    eventually("the slow review reached the API server", || {
        cluster.api.seen_reviews().iter().any(|s| s.token == "token-slow")
    })
    .await;

    let message = refused_with(cluster.bootstrap(&web, "token-web").await, Code::ResourceExhausted);
    assert!(message.contains("try again"), "{message}");
    assert!(
        !cluster.api.seen_reviews().iter().any(|s| s.token == "token-web"),
        "the refused call never reached the API server"
    );

    cluster.api.release_held_reviews();
    let first = pending.await.unwrap().expect("the held review completes");
    assert_eq!(first.id(), &slow);
    let web_svid = cluster.bootstrap(&web, "token-web").await.expect("a free slot again");
    assert_eq!(web_svid.id(), &web);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_api_server_that_refuses_the_ca_makes_reviews_unavailable() {
    let cluster = Cluster::start().await;
    cluster
        .api
        .knows("token-web", KnownToken::new("shop", "web", DEFAULT_AUDIENCE));
    let web = id("shop", "web");
    cluster.api.forbid_reviews(true);

    let result = cluster.bootstrap(&web, "token-web").await;

    assert!(result.as_ref().is_err_and(|e| e.is_transient()), "a sidecar retries it");
    let message = refused_with(result, Code::Unavailable);
    assert!(
        !message.contains("cannot create resource") && !message.contains("palisade-ca"),
        "the API server's words stay in the CA's log, away from callers nobody authenticated: {message}"
    );
    assert!(message.contains("the CA's log says why"), "a hint: {message}");
    assert_eq!(cluster.ca.live_serials(&web), 0);

    cluster.api.forbid_reviews(false);
    cluster
        .bootstrap(&web, "token-web")
        .await
        .expect("works once the CA may review");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn reviews_beyond_the_rate_are_refused_at_once_and_never_reach_the_api_server() {
    // No refill at all, so that a slow machine cannot refill the bucket between calls.
    let cluster = Cluster::with_limits(ReviewLimits {
        per_second: 0,
        burst: 2,
        ..ReviewLimits::default()
    })
    .await;
    for name in ["a", "b", "c"] {
        let token = format!("token-{name}");
        cluster
            .api
            .knows(&token, KnownToken::new("shop", name, DEFAULT_AUDIENCE));
    }
    // The burst: two reviews at once are fine.
    for name in ["a", "b"] {
        let id = id("shop", name);
        cluster.bootstrap(&id, &format!("token-{name}")).await.unwrap();
    }
    // The third is refused before any API call.
    let c = id("shop", "c");
    let result = cluster.bootstrap(&c, "token-c").await;
    let message = refused_with(result, Code::ResourceExhausted);
    assert!(message.contains("per second"), "{message}");
    assert!(
        !cluster.api.seen_reviews().iter().any(|s| s.token == "token-c"),
        "the API server never saw it"
    );
    assert_eq!(cluster.ca.live_serials(&c), 0);
}
