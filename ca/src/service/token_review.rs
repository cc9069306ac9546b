//! ServiceAccount-token attestation inside the CA service (`ca serve
//! --kubernetes-attestation`).
//!
//! Each token is reviewed by the Kubernetes API server, bounded in time, in how
//! many reviews run at once and in how many start per second — the callers are not authenticated yet, so they must
//! not be able to pile work onto the API server — and the pure
//! [`identity_for`] decides what the answer attests. The token itself is never
//! logged nor echoed in a status.

use std::sync::Arc;
use std::time::{Duration, Instant};

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
    /// How many reviews may start per second on average, after a burst of
    /// `burst`; a call beyond that fails at once with `resource_exhausted`.
    /// Without it, short reviews at the concurrency cap would still be thousands
    /// per second against the API server, from callers nobody has authenticated.
    pub per_second: u32,
    /// How many reviews may start at once after a quiet spell.
    pub burst: u32,
}

impl Default for ReviewLimits {
    fn default() -> Self {
        Self {
            timeout: Duration::from_secs(5),
            max_concurrent: 64,
            per_second: 50,
            burst: 100,
        }
    }
}

/// A token bucket: `burst` tokens at most, refilled at `per_second`.
#[derive(Debug)]
struct Bucket {
    tokens: f64,
    last: Instant,
}

impl Bucket {
    fn full(limits: &ReviewLimits) -> Self {
        Self {
            tokens: f64::from(limits.burst),
            last: Instant::now(),
        }
    }

    /// Takes one token if there is one, after refilling for the time since last.
    fn take(&mut self, limits: &ReviewLimits, now: Instant) -> bool {
        let elapsed = now.saturating_duration_since(self.last).as_secs_f64();
        self.last = now;
        let refilled = self.tokens + elapsed * f64::from(limits.per_second);
        self.tokens = refilled.min(f64::from(limits.burst));
        if self.tokens >= 1.0 {
            self.tokens -= 1.0;
            true
        } else {
            false
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
    bucket: std::sync::Mutex<Bucket>,
}

impl TokenReviews {
    pub(crate) fn new(reviewer: Arc<dyn TokenReviewer>, audience: String, limits: ReviewLimits) -> Self {
        Self {
            reviewer,
            audience,
            limits,
            permits: Arc::new(Semaphore::new(limits.max_concurrent)),
            bucket: std::sync::Mutex::new(Bucket::full(&limits)),
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
    let allowed = {
        let mut bucket = reviews.bucket.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
        bucket.take(&reviews.limits, Instant::now())
    };
    if !allowed {
        tracing::warn!(
            per_second = reviews.limits.per_second,
            "too many ServiceAccount token reviews; call refused"
        );
        return Err(Status::resource_exhausted(format!(
            "the CA reviews at most {} ServiceAccount tokens per second; try again shortly",
            reviews.limits.per_second
        )));
    }
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
            // The API server's words stay in the CA's log: the caller is not
            // authenticated, and they may name URLs, users and RBAC rules.
            tracing::warn!(error = %e, "ServiceAccount token review failed");
            Err(Status::unavailable(
                "the CA cannot have the token reviewed by the Kubernetes API server now; try again shortly \
                 (the CA's log says why)",
            ))
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
/// Why the caller's own token was refused (expired, another audience, unknown)
/// is said to the caller; the API server's own failures are not (see
/// [`review`]).
fn attest_status(e: &AttestError) -> Status {
    match e {
        AttestError::Unauthenticated { .. } | AttestError::Audience { .. } => Status::unauthenticated(e.to_string()),
        _ => Status::permission_denied(e.to_string()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_bucket_allows_a_burst_then_the_rate() {
        let limits = ReviewLimits {
            per_second: 2,
            burst: 3,
            ..ReviewLimits::default()
        };
        let mut bucket = Bucket::full(&limits);
        let t0 = bucket.last;
        assert!((0..3).all(|_| bucket.take(&limits, t0)), "the burst");
        assert!(!bucket.take(&limits, t0), "then nothing in the same instant");
        assert!(
            bucket.take(&limits, t0 + Duration::from_millis(500)),
            "one per half second at 2/s"
        );
        assert!(!bucket.take(&limits, t0 + Duration::from_millis(600)));
        let later = t0 + Duration::from_secs(60);
        assert!(
            (0..3).all(|_| bucket.take(&limits, later)),
            "refilled up to the burst, no more"
        );
        assert!(!bucket.take(&limits, later));
    }
}
