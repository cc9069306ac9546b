//! What the TokenReview tests run against: the fake Kubernetes API server (the
//! one part that may be faked, `palisade_crds::fake`, whose TokenReview endpoint
//! answers for the tokens a test registers), a real CA ([`ca`]) reviewing tokens
//! with the real `KubeTokenReviewer`, and the real CA client.

pub mod ca;

use std::sync::Arc;
use std::time::{Duration, Instant};

use palisade_ca::attest::service_account::DEFAULT_AUDIENCE;
use palisade_ca::client::{fetch_svid, ClientError, Credential};
use palisade_ca::service::ReviewLimits;
use palisade_ca::{SpiffeId, Svid};
use palisade_crds::tokenreview::KubeTokenReviewer;
use tonic::Code;

pub use ca::{id, RunningCa};
pub use palisade_crds::fake::{FakeApiServer, KnownToken};

/// How long any wait on a condition may take before the test fails.
pub const PATIENCE: Duration = Duration::from_secs(30);

/// A cluster's API server and a CA started with `--kubernetes-attestation`.
pub struct Cluster {
    pub api: FakeApiServer,
    pub ca: RunningCa,
}

impl Cluster {
    pub async fn start() -> Self {
        Self::with_limits(ReviewLimits::default()).await
    }

    pub async fn with_limits(limits: ReviewLimits) -> Self {
        let api = FakeApiServer::start().await.unwrap();
        let client = kube::Client::try_from(api.config().unwrap()).unwrap();
        let reviewer = KubeTokenReviewer::new(client, DEFAULT_AUDIENCE);
        let ca = RunningCa::start(Some(Arc::new(reviewer)), limits).await;
        Self { api, ca }
    }

    /// What a sidecar does first: a key and a CSR for `id`, the pod's token as the
    /// credential.
    pub async fn bootstrap(&self, id: &SpiffeId, token: &str) -> Result<Svid, ClientError> {
        bootstrap(&self.ca, id, token).await
    }
}

pub async fn bootstrap(ca: &RunningCa, id: &SpiffeId, token: &str) -> Result<Svid, ClientError> {
    fetch_svid(
        &ca.endpoint,
        id,
        &Credential::ServiceAccountToken(token.to_owned()),
        None,
    )
    .await
}

/// The refusal's message, after checking its code.
pub fn refused_with(result: Result<Svid, ClientError>, code: Code) -> String {
    match result {
        Err(ClientError::Refused(status)) => {
            assert_eq!(status.code(), code, "{status:?}");
            status.message().to_owned()
        }
        other => panic!("expected a {code:?} refusal, got {other:?}"),
    }
}

/// Waits, polling, until `condition` holds; fails the test after [`PATIENCE`].
pub async fn eventually(what: &str, condition: impl Fn() -> bool) {
    let deadline = Instant::now() + PATIENCE;
    while !condition() {
        assert!(Instant::now() < deadline, "timed out waiting until {what}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}
