//! Dual approval: what each side decided about each request id. The two records of
//! one request come from two senders and may arrive in either order, so nothing can
//! be concluded until every record is in; per request id only a few flags are kept
//! (not the records), plus the edge of an ingress denial for the "one side said no"
//! table.

use std::collections::HashMap;

use crate::record::{Decision, Effect, Side};
use crate::report::model::{DualApproval, EdgeRequests};

use super::names::{Name, Names};

const EGRESS_ALLOW: u8 = 1;
const INGRESS_ALLOW: u8 = 1 << 1;
const INGRESS_DENY: u8 = 1 << 2;

#[derive(Debug)]
struct RequestState {
    /// The sequence number of its first decision, to list examples earliest first.
    first_seq: u64,
    flags: u8,
    /// (principal, resource) of its ingress denial.
    ingress_denied_edge: Option<(Name, Name)>,
}

/// The flags of every request id seen in the window.
#[derive(Debug, Default)]
pub(crate) struct Requests {
    states: HashMap<Box<str>, RequestState>,
}

impl Requests {
    /// Notes one decision; decisions without a request id are not tracked.
    pub(crate) fn add(&mut self, seq: u64, decision: &Decision, names: &mut Names) {
        if decision.request_id.is_empty() {
            return;
        }
        let state = match self.states.get_mut(decision.request_id.as_str()) {
            Some(state) => state,
            None => self
                .states
                .entry(decision.request_id.as_str().into())
                .or_insert(RequestState {
                    first_seq: seq,
                    flags: 0,
                    ingress_denied_edge: None,
                }),
        };
        let allowed = matches!(decision.effect, Effect::Allow | Effect::DryRunDeny);
        match (decision.side, allowed) {
            (Side::Egress, true) => state.flags |= EGRESS_ALLOW,
            (Side::Egress, false) => {}
            (Side::Ingress, true) => state.flags |= INGRESS_ALLOW,
            (Side::Ingress, false) => {
                state.flags |= INGRESS_DENY;
                if state.ingress_denied_edge.is_none() {
                    state.ingress_denied_edge =
                        Some((names.intern(&decision.principal), names.intern(&decision.resource)));
                }
            }
        }
    }

    /// Distinct request ids.
    pub(crate) fn len(&self) -> u64 {
        u64::try_from(self.states.len()).unwrap_or(u64::MAX)
    }

    pub(crate) fn finish(self, names: &Names) -> DualApproval {
        let has = |state: &RequestState, flags: u8| state.flags & flags == flags;
        let mut ingress_allowed = 0;
        let mut both_allowed = 0;
        let mut missing = Vec::new();
        let mut one_side: HashMap<(Name, Name), u64> = HashMap::new();
        for (id, state) in &self.states {
            if has(state, INGRESS_ALLOW) {
                ingress_allowed += 1;
                if has(state, EGRESS_ALLOW) {
                    both_allowed += 1;
                } else {
                    missing.push((state.first_seq, id));
                }
            }
            if let (true, Some(edge)) = (has(state, EGRESS_ALLOW | INGRESS_DENY), state.ingress_denied_edge) {
                *one_side.entry(edge).or_default() += 1;
            }
        }
        missing.sort_unstable();
        let mut one_side_denied: Vec<EdgeRequests> = one_side
            .into_iter()
            .map(|((principal, resource), requests)| EdgeRequests {
                principal: names.name(principal).to_owned(),
                resource: names.name(resource).to_owned(),
                requests,
            })
            .collect();
        one_side_denied
            .sort_by(|a, b| (b.requests, &a.principal, &a.resource).cmp(&(a.requests, &b.principal, &b.resource)));
        DualApproval {
            ingress_allowed,
            both_allowed,
            coverage_percent: (ingress_allowed > 0).then(|| coverage(both_allowed, ingress_allowed)),
            missing_egress_examples: missing
                .into_iter()
                .take(DualApproval::EXAMPLES)
                .map(|(_, id)| id.to_string())
                .collect(),
            egress_allowed_ingress_denied: one_side_denied.iter().map(|edge| edge.requests).sum(),
            one_side_denied,
        }
    }
}

/// `100 × part / whole`, as a report prints it.
pub(crate) fn coverage(part: u64, whole: u64) -> f64 {
    part as f64 * 100.0 / whole as f64
}
