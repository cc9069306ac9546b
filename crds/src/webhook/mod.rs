//! The validating admission webhook for `CedarPolicy`: an invalid policy is
//! refused at `kubectl apply`, with the message `palisade policy validate` prints.
//!
//! - [`review`](mod@review): AdmissionReview v1 in and out, and the pure decision on one
//!   request: the policy's text is put where the controller would put it in the
//!   bundle it last published (see [`ReviewContext`]) and loaded with the same
//!   loader, so what the webhook admits is what the controller accepts.
//! - [`server`]: HTTPS for the API server, with a certificate that is re-read
//!   when it is rotated.
//! - `deploy/kubernetes/webhook.yaml`: the `ValidatingWebhookConfiguration`.
//!
//! The webhook does not replace the controller's own check: a policy that got in
//! while the webhook was away (or was valid against an older bundle) is still
//! marked `Invalid` by the controller and never published.

mod cert;
mod check;
mod metrics;
pub mod review;
pub mod server;

use std::sync::Arc;

use palisade_ca::TrustDomain;
use palisade_policy::BundleFiles;

pub use check::{MAX_MESSAGE_BYTES, MAX_WARNING_BYTES};
pub use metrics::WebhookMetrics;
pub use review::{review, review_json, AdmissionRequest, AdmissionResponse, AdmissionReview};
pub use server::{serve, WebhookError, WebhookLimits, WebhookParams};

/// What a policy is checked against; the controller sends a new one on every
/// bundle it publishes.
#[derive(Debug, Clone)]
pub struct ReviewContext {
    /// The mesh's trust domain, for the bundle used while `files` is `None`.
    pub trust_domain: TrustDomain,
    /// The files of the bundle the controller last published; `None` before the
    /// first one.
    pub files: Option<Arc<BundleFiles>>,
}

impl ReviewContext {
    /// Before any bundle: policies are checked on their own.
    pub fn new(trust_domain: TrustDomain) -> Self {
        Self {
            trust_domain,
            files: None,
        }
    }

    /// Checks policies against `files`, the bundle just published.
    #[must_use]
    pub fn with_files(mut self, files: Arc<BundleFiles>) -> Self {
        self.files = Some(files);
        self
    }
}

#[cfg(test)]
mod tests;
