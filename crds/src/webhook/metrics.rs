//! What the webhook counts: answers by outcome, and HTTP requests it could not
//! answer with a review. Read by the controller's metrics page.

use std::fmt::Write as _;
use std::sync::atomic::{AtomicU64, Ordering};

/// Counters of one webhook server; shared with whoever renders them.
#[derive(Debug, Default)]
pub struct WebhookMetrics {
    admitted: AtomicU64,
    refused: AtomicU64,
    malformed: AtomicU64,
    rejected_http: AtomicU64,
    certificate_reloads: AtomicU64,
    certificate_reload_failures: AtomicU64,
}

/// Which counter to bump.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Event {
    /// A review answered `allowed: true`.
    Admitted,
    /// A policy refused as invalid.
    Refused,
    /// A review refused because it could not be understood.
    Malformed,
    /// An HTTP request answered with an error status (404, 405, 413, ...).
    RejectedHttp,
    /// A rotated certificate taken into use.
    CertificateReloaded,
    /// A changed certificate or key that could not be used.
    CertificateReloadFailed,
}

impl WebhookMetrics {
    pub(super) fn count(&self, event: Event) {
        let counter = match event {
            Event::Admitted => &self.admitted,
            Event::Refused => &self.refused,
            Event::Malformed => &self.malformed,
            Event::RejectedHttp => &self.rejected_http,
            Event::CertificateReloaded => &self.certificate_reloads,
            Event::CertificateReloadFailed => &self.certificate_reload_failures,
        };
        counter.fetch_add(1, Ordering::Relaxed);
    }

    /// Reviews answered `allowed: true`.
    pub fn admitted(&self) -> u64 {
        self.admitted.load(Ordering::Relaxed)
    }

    /// Policies refused as invalid.
    pub fn refused(&self) -> u64 {
        self.refused.load(Ordering::Relaxed)
    }

    /// Reviews refused because they could not be understood.
    pub fn malformed(&self) -> u64 {
        self.malformed.load(Ordering::Relaxed)
    }

    /// HTTP requests answered with an error status instead of a review.
    pub fn rejected_http(&self) -> u64 {
        self.rejected_http.load(Ordering::Relaxed)
    }

    /// Rotated certificates taken into use.
    pub fn certificate_reloads(&self) -> u64 {
        self.certificate_reloads.load(Ordering::Relaxed)
    }

    /// Changed certificates or keys that could not be used (the old ones stay).
    pub fn certificate_reload_failures(&self) -> u64 {
        self.certificate_reload_failures.load(Ordering::Relaxed)
    }

    /// The counters in the Prometheus text format.
    pub fn render(&self) -> String {
        let mut out = String::new();
        let _ = writeln!(
            out,
            "# HELP palisade_webhook_reviews_total AdmissionReviews answered, by outcome."
        );
        let _ = writeln!(out, "# TYPE palisade_webhook_reviews_total counter");
        for (outcome, value) in [
            ("admitted", self.admitted()),
            ("refused", self.refused()),
            ("malformed", self.malformed()),
        ] {
            let _ = writeln!(out, "palisade_webhook_reviews_total{{outcome=\"{outcome}\"}} {value}");
        }
        let counters = [
            (
                "palisade_webhook_http_errors_total",
                "HTTP requests answered with an error status instead of a review.",
                self.rejected_http(),
            ),
            (
                "palisade_webhook_certificate_reloads_total",
                "Rotated serving certificates taken into use.",
                self.certificate_reloads(),
            ),
            (
                "palisade_webhook_certificate_reload_failures_total",
                "Changed serving certificates that could not be used.",
                self.certificate_reload_failures(),
            ),
        ];
        for (name, help, value) in counters {
            let _ = writeln!(out, "# HELP {name} {help}\n# TYPE {name} counter\n{name} {value}");
        }
        out
    }
}
