//! The decision on one external destination, by the table of the
//! [module documentation](super). Pure: the snapshot and the request's facts in, a
//! [`Verdict`] out; no resolution, no I/O.

use std::net::IpAddr;

use palisade_audit::record::{Effect as RecordEffect, ExternalKind};
use palisade_authz::{Action, Decision, DeterminingPolicy, Direction, Effect, NormalizedHost, RequestFacts, Resource};
use palisade_ca::SpiffeId;
use palisade_policy::egress::{HostPattern, Protocol};
use palisade_policy::mesh::OutboundMode;

use crate::audit;
use crate::request::Refusal;
use crate::state::PolicyState;

/// One request (or tunnel) for an external destination, as the decision sees it.
#[derive(Debug, Clone, Copy)]
pub struct ExternalAsk<'a> {
    /// This sidecar's workload: the caller.
    pub principal: &'a SpiffeId,
    /// The canonical host (its port is ignored: `port` is the one).
    pub host: &'a NormalizedHost,
    pub port: u16,
    /// `http` for plain HTTP, `tls` for a tunnel: which egress rules apply.
    pub protocol: Protocol,
    /// The request's method, or `connect` for a tunnel.
    pub action: Action,
    /// The canonical path (empty for a tunnel).
    pub path: &'a str,
    /// What the engine is told the request arrived over.
    pub wire: palisade_authz::Protocol,
    /// The headers as policies see them.
    pub headers: &'a [(&'a str, &'a str)],
    pub source_ip: IpAddr,
    pub time_unix: i64,
}

/// What is decided.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Verdict {
    /// `HOST:PORT`: the Cedar resource, and how records name the destination.
    pub resource: String,
    pub outcome: Outcome,
    /// Why, in words, for the audit record and the logs (may name policies: never
    /// sent to the app as such).
    pub reason: String,
    /// The engine's decision; `None` when it was not asked (not allowlisted in
    /// `REGISTRY_ONLY` mode).
    pub decision: Option<Decision>,
}

/// Where the request goes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Outcome {
    /// Allowlisted, and the caller's egress policy allows it.
    Allowlisted {
        /// The allowing rule names the host exactly (not a wildcard): it may reach
        /// addresses Passthrough never does.
        explicit: bool,
    },
    /// Not allowlisted, let through flagged (`ALLOW_ANY`, no explicit deny).
    Passthrough,
    /// Refused: what the app gets (audit kind `blackhole`).
    Refused(Refusal),
}

/// Decides one external request against the snapshot.
pub fn decide(state: &PolicyState, ask: &ExternalAsk<'_>) -> Verdict {
    let resource = format!("{}:{}", ask.host.name(), ask.port);
    let rule = state.workload(ask.principal.as_str()).and_then(|workload| {
        state
            .bundle()
            .egress()
            .allowing(workload, ask.host, ask.port, ask.protocol)
    });
    let mode = state.bundle().mesh().outbound_mode();
    if rule.is_none() && mode == OutboundMode::RegistryOnly {
        let reason = format!("`{resource}` is not in the egress allowlist");
        return Verdict {
            outcome: Outcome::Refused(Refusal::BlackHole(reason.clone())),
            resource,
            reason,
            decision: None,
        };
    }
    let decision = evaluate(state, ask);
    let (outcome, reason) = match (rule, decision.effect) {
        (Some(rule), Effect::Allow) => {
            let explicit = matches!(rule.host(), HostPattern::Exact(_));
            let reason = format!(
                "`{resource}` is allowlisted for {} by `{}`, and egress policy {} permits it",
                ask.protocol.as_str(),
                rule.host(),
                ids(&decision.determining)
            );
            (Outcome::Allowlisted { explicit }, reason)
        }
        (Some(_), Effect::Deny) => (
            Outcome::Refused(Refusal::Denied {
                side: Direction::Egress,
            }),
            denial(&resource, &decision),
        ),
        (None, Effect::Deny) if is_explicit(&decision) => (
            Outcome::Refused(Refusal::Denied {
                side: Direction::Egress,
            }),
            denial(&resource, &decision),
        ),
        (None, _) => (
            Outcome::Passthrough,
            format!("`{resource}` is not in the egress allowlist; let through flagged (outboundMode ALLOW_ANY)"),
        ),
    };
    Verdict {
        resource,
        outcome,
        reason,
        decision: Some(decision),
    }
}

impl Verdict {
    /// The audit kind.
    pub fn kind(&self) -> ExternalKind {
        match self.outcome {
            Outcome::Allowlisted { .. } => ExternalKind::Allowlisted,
            Outcome::Passthrough => ExternalKind::Passthrough,
            Outcome::Refused(_) => ExternalKind::BlackHole,
        }
    }

    /// The effect the decision record carries: what was enforced (a Passthrough is
    /// an allow even when Cedar denied by default).
    pub fn effect(&self) -> RecordEffect {
        match (&self.outcome, &self.decision) {
            (Outcome::Refused(_), _) => RecordEffect::Deny,
            (_, Some(decision)) if decision.effect == Effect::Allow => audit::effect(decision),
            _ => RecordEffect::Allow,
        }
    }

    /// The ids of the policies that determined the engine's decision.
    pub fn policies(&self) -> Vec<String> {
        self.decision.as_ref().map_or_else(Vec::new, audit::policies)
    }
}

/// The caller's egress decision on `ExternalHost::"HOST:PORT"`.
fn evaluate(state: &PolicyState, ask: &ExternalAsk<'_>) -> Decision {
    let facts = RequestFacts {
        principal: ask.principal.as_str(),
        action: ask.action,
        resource: Resource::External {
            hostname: ask.host.name(),
            port: ask.port,
        },
        path: ask.path,
        host: ask.host.name(),
        protocol: ask.wire,
        source_ip: Some(ask.source_ip),
        headers: ask.headers,
        time_unix: ask.time_unix,
    };
    state.engine().evaluate(Direction::Egress, &facts)
}

/// A deny some policy made (a `forbid`), or an evaluation error: not the default.
fn is_explicit(decision: &Decision) -> bool {
    !decision.determining.is_empty() || !decision.errors.is_empty()
}

/// Why Cedar denied, for the record.
fn denial(resource: &str, decision: &Decision) -> String {
    if !decision.determining.is_empty() {
        format!("egress policy {} forbids `{resource}`", ids(&decision.determining))
    } else if !decision.errors.is_empty() {
        format!(
            "the egress policies could not be evaluated for `{resource}`: {}",
            decision.errors.join("; ")
        )
    } else {
        format!("`{resource}`: no egress policy permits it")
    }
}

/// `` `a`, `b` ``.
fn ids(policies: &[DeterminingPolicy]) -> String {
    let quoted: Vec<String> = policies.iter().map(|p| format!("`{}`", p.id)).collect();
    quoted.join(", ")
}

#[cfg(test)]
mod tests {
    use std::net::Ipv4Addr;

    use palisade_authz::normalize_host;

    use super::*;
    use crate::testing::{shop_state, CHECKOUT, FRONTEND};

    fn ask<'a>(principal: &'a SpiffeId, host: &'a NormalizedHost, port: u16, protocol: Protocol) -> ExternalAsk<'a> {
        ExternalAsk {
            principal,
            host,
            port,
            protocol,
            action: match protocol {
                Protocol::Tls => Action::Connect,
                Protocol::Http => Action::Get,
            },
            path: "",
            wire: palisade_authz::Protocol::Tcp,
            headers: &[],
            source_ip: IpAddr::V4(Ipv4Addr::LOCALHOST),
            time_unix: 0,
        }
    }

    #[test]
    fn the_shop_allowlists_stripe_over_tls_for_checkout_only() {
        let state = shop_state();
        let stripe = normalize_host("api.stripe.com", None).unwrap();
        let checkout = SpiffeId::parse(CHECKOUT).unwrap();
        let frontend = SpiffeId::parse(FRONTEND).unwrap();

        let allowed = decide(&state, &ask(&checkout, &stripe, 443, Protocol::Tls));
        assert_eq!(allowed.outcome, Outcome::Allowlisted { explicit: true });
        assert_eq!(allowed.resource, "api.stripe.com:443");
        assert_eq!(allowed.policies(), ["checkout-calls-stripe"]);
        assert_eq!(allowed.effect(), RecordEffect::Allow);

        let cases = [
            (&frontend, 443, Protocol::Tls),
            (&checkout, 80, Protocol::Http),
            (&checkout, 8443, Protocol::Tls),
        ];
        for (who, port, protocol) in cases {
            let refused = decide(&state, &ask(who, &stripe, port, protocol));
            assert_eq!(refused.kind(), ExternalKind::BlackHole, "{who} {port} {protocol:?}");
            assert_eq!(
                refused.reason,
                format!("`api.stripe.com:{port}` is not in the egress allowlist")
            );
            assert_eq!(refused.decision, None, "the engine is not asked");
            assert_eq!(refused.effect(), RecordEffect::Deny);
        }
    }
}
