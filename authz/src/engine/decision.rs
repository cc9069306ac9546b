//! Cedar's responses as a [`Decision`]: default deny, forbid wins, and an evaluation
//! error is a deny.
//!
//! Cedar skips a policy whose evaluation errors and decides on the others, so an
//! erroring forbid would let the permits through. Here any error of an enforced
//! policy makes the effect `Deny`; the erroring policy is listed among the
//! determining policies (it is why the request was denied) and its error in `errors`.

use std::collections::HashMap;

use cedar_policy::{AuthorizationError, PolicyId, Response};

use super::error::RequestError;
use super::model::{Decision, DeterminingPolicy, Effect, SourceLocation};

/// Every policy of the snapshot by id, to name them in decisions.
#[derive(Debug)]
pub(super) struct Catalog(HashMap<Box<str>, DeterminingPolicy>);

impl Catalog {
    pub(super) fn new(policies: HashMap<Box<str>, DeterminingPolicy>) -> Self {
        Self(policies)
    }

    fn policy(&self, id: &PolicyId) -> DeterminingPolicy {
        match self.0.get(text(id)) {
            Some(policy) => policy.clone(),
            // Unreachable: every policy in a set was catalogued when the set was built.
            None => DeterminingPolicy {
                id: id.to_string(),
                location: SourceLocation {
                    file: "<unknown>".into(),
                    line: 0,
                    column: 0,
                },
            },
        }
    }

    fn error(&self, error: &AuthorizationError) -> String {
        let AuthorizationError::PolicyEvaluationError(error) = error;
        let location = &self.policy(error.policy_id()).location;
        format!(
            "policy `{}` ({}:{}): {}",
            error.policy_id(),
            location.file,
            location.line,
            error.inner()
        )
    }
}

/// What Cedar answered for one policy set.
struct Outcome<'r> {
    /// Cedar's own verdict, which ignores erroring policies.
    cedar_allows: bool,
    /// The satisfied permits (when Cedar allows) or forbids (when it denies).
    reasons: Vec<&'r PolicyId>,
    errors: Vec<&'r AuthorizationError>,
}

impl<'r> Outcome<'r> {
    fn of(response: &'r Response) -> Self {
        let diagnostics = response.diagnostics();
        Self {
            cedar_allows: response.decision() == cedar_policy::Decision::Allow,
            reasons: diagnostics.reason().collect(),
            errors: diagnostics.errors().collect(),
        }
    }

    /// The satisfied forbids and the erroring policies: what makes a set deny when
    /// something else allowed the request.
    fn denying(&self) -> Vec<&'r PolicyId> {
        let forbids = if self.cedar_allows { &[][..] } else { &self.reasons[..] };
        let erroring = self.errors.iter().map(|e| policy_id(e));
        let mut ids: Vec<&PolicyId> = forbids.iter().copied().chain(erroring).collect();
        ids.sort_unstable_by_key(|id| text(id));
        ids.dedup();
        ids
    }
}

fn text(id: &PolicyId) -> &str {
    id.as_ref()
}

fn policy_id(error: &AuthorizationError) -> &PolicyId {
    let AuthorizationError::PolicyEvaluationError(error) = error;
    error.policy_id()
}

/// The decision of the enforced policy set.
pub(super) fn enforced(response: &Response, catalog: &Catalog) -> Decision {
    let outcome = Outcome::of(response);
    let allowed = outcome.cedar_allows && outcome.errors.is_empty();
    let determining = if allowed {
        let mut permits = outcome.reasons.clone();
        permits.sort_unstable_by_key(|id| text(id));
        permits
    } else {
        outcome.denying()
    };
    let mut errors: Vec<String> = outcome.errors.iter().map(|e| catalog.error(e)).collect();
    errors.sort_unstable();
    Decision {
        effect: if allowed { Effect::Allow } else { Effect::Deny },
        dry_run_deny: false,
        determining: determining.into_iter().map(|id| catalog.policy(id)).collect(),
        dry_run_determining: Vec::new(),
        errors,
    }
}

/// Adds the dry-run verdict to an allowed decision: the dry-run policies would deny
/// when one of their forbids is satisfied or one of them errors.
pub(super) fn add_dry_run(decision: &mut Decision, response: &Response, catalog: &Catalog) {
    let denying = Outcome::of(response).denying();
    decision.dry_run_deny = !denying.is_empty();
    decision.dry_run_determining = denying.into_iter().map(|id| catalog.policy(id)).collect();
}

/// A request that could not be evaluated: a deny carrying the reason.
pub(super) fn refused(error: &RequestError) -> Decision {
    Decision {
        effect: Effect::Deny,
        dry_run_deny: false,
        determining: Vec::new(),
        dry_run_determining: Vec::new(),
        errors: vec![error.to_string()],
    }
}
