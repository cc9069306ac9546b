//! The status every Palisade resource carries: conditions a platform team reads
//! back with `kubectl get` and `kubectl describe`.
//!
//! Two condition types, as Gateway API does:
//!
//! - `Accepted`: `True` (reason `Valid`) when the resource is valid and the
//!   controller uses it; `False` (reason `Invalid`) with the validator's message
//!   when it is not. An invalid `CedarPolicy` leaves its namespace on its last
//!   valid policy set.
//! - `Applied`: `True` once what the resource says is in effect (the policy bundle
//!   version that carries it was published, the revocation is in the CA's list);
//!   `False` with the reason while it is not.
//!
//! Each condition says which `metadata.generation` it is about, so a reader can
//! tell a stale status from a current one.

use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

/// Condition type: the controller checked the resource.
pub const ACCEPTED: &str = "Accepted";
/// Condition type: what the resource says is in effect.
pub const APPLIED: &str = "Applied";

/// Reason of `Accepted=True`.
pub const REASON_VALID: &str = "Valid";
/// Reason of `Accepted=False`: the message says what is wrong.
pub const REASON_INVALID: &str = "Invalid";
/// Reason of `Applied=True` for bundle resources: the bundle that carries it was published.
pub const REASON_PUBLISHED: &str = "Published";
/// Reason of `Applied=False`: valid, but its namespace is held on its last valid
/// policies because another of its policies is invalid.
pub const REASON_HELD: &str = "Held";
/// Reason of `Applied=True` for a `CertificateRevocation`: in the CA's list.
pub const REASON_REVOKED: &str = "Revoked";
/// Reason of `Applied=False` for a `CertificateRevocation`: the CA could not be
/// reached or refused; the controller retries.
pub const REASON_CA_UNAVAILABLE: &str = "CaUnavailable";

/// The status of a Palisade resource.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct ResourceStatus {
    /// The `metadata.generation` the controller last acted on.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub observed_generation: Option<i64>,
    /// `Accepted` and `Applied`, each with its reason and message.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub conditions: Vec<Condition>,
    /// `CertificateRevocation` only: when the CA revoked it (RFC 3339), as its
    /// revocation list records it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub revoked_at: Option<String>,
}

/// One condition, in the shape Kubernetes uses everywhere (`metav1.Condition`).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct Condition {
    /// `Accepted` or `Applied`.
    #[serde(rename = "type")]
    pub type_: String,
    /// `True`, `False` or `Unknown`.
    #[schemars(extend("enum" = ["True", "False", "Unknown"]))]
    pub status: String,
    /// A CamelCase word for programs: `Valid`, `Invalid`, `Published`, `Revoked`, …
    pub reason: String,
    /// What happened, for people: for `Invalid`, the validator's message with the
    /// line and column inside the resource.
    #[serde(default)]
    pub message: String,
    /// The `metadata.generation` this condition is about.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub observed_generation: Option<i64>,
    /// When `status` last changed (RFC 3339).
    pub last_transition_time: String,
}

impl ResourceStatus {
    /// The condition of type `type_`, if set.
    pub fn condition(&self, type_: &str) -> Option<&Condition> {
        self.conditions.iter().find(|c| c.type_ == type_)
    }

    /// Sets a condition, keeping its `lastTransitionTime` when its status did not
    /// change (so a status rewritten with the same verdict does not churn).
    pub fn set(&mut self, mut condition: Condition) {
        match self.conditions.iter_mut().find(|c| c.type_ == condition.type_) {
            Some(old) => {
                if old.status == condition.status {
                    condition.last_transition_time = std::mem::take(&mut old.last_transition_time);
                }
                *old = condition;
            }
            None => self.conditions.push(condition),
        }
        self.conditions.sort_by(|a, b| a.type_.cmp(&b.type_));
    }
}

impl Condition {
    /// A condition with status `True` or `False`.
    pub fn new(
        type_: &str,
        status: bool,
        reason: &str,
        message: impl Into<String>,
        generation: Option<i64>,
        now: &str,
    ) -> Self {
        Self {
            type_: type_.to_owned(),
            status: if status { "True" } else { "False" }.to_owned(),
            reason: reason.to_owned(),
            message: message.into(),
            observed_generation: generation,
            last_transition_time: now.to_owned(),
        }
    }

    /// Whether the status is `True`.
    pub fn is_true(&self) -> bool {
        self.status == "True"
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn setting_the_same_verdict_again_keeps_its_transition_time() {
        let mut status = ResourceStatus::default();
        status.set(Condition::new(ACCEPTED, true, REASON_VALID, "", Some(1), "t1"));
        status.set(Condition::new(ACCEPTED, true, REASON_VALID, "", Some(2), "t2"));
        let accepted = status.condition(ACCEPTED).unwrap();
        assert_eq!(accepted.last_transition_time, "t1");
        assert_eq!(accepted.observed_generation, Some(2));

        status.set(Condition::new(ACCEPTED, false, REASON_INVALID, "bad", Some(3), "t3"));
        assert_eq!(status.condition(ACCEPTED).unwrap().last_transition_time, "t3");
        assert_eq!(status.conditions.len(), 1);
    }

    #[test]
    fn conditions_are_kept_in_type_order() {
        let mut status = ResourceStatus::default();
        status.set(Condition::new(APPLIED, true, "Published", "", None, "t"));
        status.set(Condition::new(ACCEPTED, true, REASON_VALID, "", None, "t"));
        let types: Vec<_> = status.conditions.iter().map(|c| c.type_.as_str()).collect();
        assert_eq!(types, [ACCEPTED, APPLIED]);
    }
}
