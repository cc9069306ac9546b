//! ServiceAccount-token attestation inside the CA service (`ca serve
//! --kubernetes-attestation`).
//!
//! Each token is reviewed by the Kubernetes API server, bounded in time and in how
//! many reviews run at once — the callers are not authenticated yet, so they must
//! not be able to pile work onto the API server — and the pure
//! [`identity_for`] decides what the answer attests. The token itself is never
//! logged nor echoed in a status.

use std::sync::Arc;
use std::time::Duration;

use tokio::sync::Semaphore;
use tonic::Status;

use crate::attest::service_account::{identity_for, AttestError, TokenReview, TokenReviewer};
use crate::spiffe_id::{SpiffeId, TrustDomain};

/// The longest token the CA sends for review (projected tokens are about 1 KiB).
const MAX_TOKEN_LEN: usize = 16 * 1024;

/// Bounds on the reviews the CA asks of the API server.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ReviewLimits {
    /// How long one review may take; past it the call fails with `unavailable`.
    pub timeout: Duration,
    /// How many reviews may run at once; a call beyond that fails at once with
    /// `resource_exhausted`.
    pub max_concurrent: usize,
}

impl Default for ReviewLimits {
    fn default() -> Self {
        Self {
            timeout: Duration::from_secs(5),
            max_concurrent: 64,
        }
    }
}

/// What the CA needs to attest ServiceAccount tokens.
#[derive(Debug)]
pub(crate) struct TokenReviews {
    reviewer: Arc<dyn TokenReviewer>,
    audience: String,
    limits: ReviewLimits,
    permits: Arc<Semaphore>,
}

impl TokenReviews {
    pub(crate) fn new(reviewer: Arc<dyn TokenReviewer>, audience: String, limits: ReviewLimits) -> Self {
        Self {
            reviewer,
            audience,
            limits,
            permits: Arc::new(Semaphore::new(limits.max_concurrent)),
        }
    }
}

/// The identity `token` attests in trust domain `td`, or the refusal's status.
/// `reviews` is `None` when the CA was started without Kubernetes attestation.
pub(crate) async fn attest(reviews: Option<&TokenReviews>, td: &TrustDomain, token: &str) -> Result<SpiffeId, Status> {
    let Some(reviews) = reviews else {
        return Err(Status::failed_precondition(
            "this CA does not accept ServiceAccount tokens; start it with `palisade ca serve --kubernetes-attestation`, or bootstrap with a join token",
        ));
    };
    if token.len() > MAX_TOKEN_LEN {
        return Err(Status::invalid_argument(format!(
            "the ServiceAccount token is {} bytes; the CA reviews tokens of up to {MAX_TOKEN_LEN} bytes",
            token.len()
        )));
    }
    let review = review(reviews, token).await?;
    match identity_for(td, &review, &reviews.audience) {
        Ok(id) => {
            tracing::info!(%id, pod = review.pod_name.as_deref(), pod_uid = review.pod_uid.as_deref(), "ServiceAccount token attested");
            Ok(id)
        }
        Err(e) => {
            tracing::info!(error = %e, "ServiceAccount token refused");
            Err(attest_status(&e))
        }
    }
}

/// One bounded review.
async fn review(reviews: &TokenReviews, token: &str) -> Result<TokenReview, Status> {
    let Ok(_permit) = Arc::clone(&reviews.permits).try_acquire_owned() else {
        tracing::warn!(
            limit = reviews.limits.max_concurrent,
            "too many ServiceAccount token reviews in progress; call refused"
        );
        return Err(Status::resource_exhausted(format!(
            "the CA is already reviewing {} ServiceAccount tokens; try again shortly",
            reviews.limits.max_concurrent
        )));
    };
    match tokio::time::timeout(reviews.limits.timeout, reviews.reviewer.review(token)).await {
        Ok(Ok(review)) => Ok(review),
        Ok(Err(e)) => {
            tracing::warn!(error = %e, "ServiceAccount token review failed");
            Err(Status::unavailable(e.to_string()))
        }
        Err(_) => {
            tracing::warn!(timeout = ?reviews.limits.timeout, "ServiceAccount token review timed out");
            Err(Status::unavailable(format!(
                "the Kubernetes API server did not answer the token review within {} ms; try again",
                reviews.limits.timeout.as_millis()
            )))
        }
    }
}

/// The gRPC status of a token that attests nothing: a token that is not valid (for
/// us) is `unauthenticated`; a valid one of something other than a usable
/// ServiceAccount is `permission_denied`.
fn attest_status(e: &AttestError) -> Status {
    match e {
        AttestError::Unauthenticated { .. } | AttestError::Audience { .. } => Status::unauthenticated(e.to_string()),
        _ => Status::permission_denied(e.to_string()),
    }
}
