//! The caller's egress decision. Pure: facts in, a decision out; the engine does
//! the deciding, an evaluation error is a deny.
//!
//! [`EgressDecision`] is the decision with what it was made on, borrowed from the
//! request: what the log line says today and what an audit sink will copy into a
//! record tomorrow.

use std::net::IpAddr;

use http::HeaderValue;
use palisade_authz::{Action, Decision, Direction, Effect, Engine, RequestFacts, Resource};
use palisade_ca::SpiffeId;
use palisade_policy::registry::Service;

use crate::request::{Canonical, Refusal};

/// What an egress decision is made on.
#[derive(Debug, Clone, Copy)]
pub struct EgressRequest<'a> {
    pub request_id: &'a HeaderValue,
    /// This sidecar's workload: the caller.
    pub principal: &'a SpiffeId,
    pub service: &'a Service,
    pub canonical: &'a Canonical,
    /// The headers as policies see them (`headers::policy_view`).
    pub headers: &'a [(&'a str, &'a str)],
    /// The app's address.
    pub source_ip: IpAddr,
    pub time_unix: i64,
}

/// One egress decision and what it was made on.
#[derive(Debug, Clone)]
pub struct EgressDecision<'a> {
    pub request: EgressRequest<'a>,
    pub decision: Decision,
}

/// Decides a request for the caller's egress policies.
pub fn decide<'a>(engine: &Engine, request: EgressRequest<'a>) -> EgressDecision<'a> {
    let facts = RequestFacts {
        principal: request.principal.as_str(),
        action: request.canonical.action,
        resource: Resource::Service {
            namespace: request.service.namespace(),
            name: request.service.name(),
        },
        path: request.canonical.path.path(),
        host: request.canonical.host.name(),
        protocol: request.canonical.protocol,
        source_ip: Some(request.source_ip),
        headers: request.headers,
        time_unix: request.time_unix,
    };
    EgressDecision {
        request,
        decision: engine.evaluate(Direction::Egress, &facts),
    }
}

impl EgressDecision<'_> {
    /// The refusal the app gets when the decision denies.
    ///
    /// # Errors
    ///
    /// 403 naming the egress side when the decision denies.
    pub fn enforce(&self) -> Result<(), Refusal> {
        match self.decision.effect {
            Effect::Allow => Ok(()),
            Effect::Deny => Err(Refusal::Denied {
                side: Direction::Egress,
            }),
        }
    }

    /// Logs the decision: request id, service, method, path, effect and the
    /// policies that determined it.
    pub fn log(&self) {
        let request = &self.request;
        let ids = |policies: &[palisade_authz::DeterminingPolicy]| {
            policies.iter().map(|p| p.id.as_str()).collect::<Vec<_>>().join(",")
        };
        let request_id = request.request_id.to_str().unwrap_or_default();
        let service = format_args!("{}/{}", request.service.namespace(), request.service.name());
        let method = method_name(request.canonical.action);
        let path = request.canonical.path.path();
        let determining = ids(&self.decision.determining);
        match self.decision.effect {
            Effect::Allow => tracing::debug!(
                request_id, %service, method, path, effect = "allow", determining,
                dry_run_deny = self.decision.dry_run_deny,
                dry_run_determining = ids(&self.decision.dry_run_determining),
                "egress decision"
            ),
            Effect::Deny => tracing::info!(
                request_id, %service, method, path, effect = "deny", determining,
                errors = ?self.decision.errors,
                "egress decision"
            ),
        }
    }
}

/// The HTTP method an action stands for.
pub fn method_name(action: Action) -> &'static str {
    match action {
        Action::Get => "GET",
        Action::Head => "HEAD",
        Action::Post => "POST",
        Action::Put => "PUT",
        Action::Patch => "PATCH",
        Action::Delete => "DELETE",
        Action::Options => "OPTIONS",
        Action::Connect => "CONNECT",
    }
}

#[cfg(test)]
mod tests {
    use http::Request;

    use super::*;
    use crate::request::canonicalize;
    use crate::testing::{shop_state, CHECKOUT, FRONTEND, REVIEWS};

    #[test]
    fn egress_decisions_of_the_shop() {
        let state = shop_state();
        let cases = [
            (
                FRONTEND,
                "GET",
                "reviews.shop",
                "/reviews/42",
                Effect::Allow,
                "web-frontend-calls-reviews",
            ),
            (
                FRONTEND,
                "POST",
                "payments.shop",
                "/charge",
                Effect::Allow,
                "web-frontend-calls-payments",
            ),
            (
                REVIEWS,
                "POST",
                "payments.shop",
                "/charge",
                Effect::Deny,
                "reviews-never-calls-payments",
            ),
            (REVIEWS, "GET", "frontend.shop", "/", Effect::Deny, ""),
            (
                CHECKOUT,
                "POST",
                "payments.shop",
                "/charge",
                Effect::Allow,
                "checkout-charges-payments",
            ),
            (CHECKOUT, "POST", "payments.shop", "/refund", Effect::Deny, ""),
        ];
        let id = HeaderValue::from_static("r-1");
        for (caller, method, host, path, effect, determining) in cases {
            let parts = Request::builder()
                .method(method)
                .uri(path)
                .header("host", host)
                .body(())
                .unwrap()
                .into_parts()
                .0;
            let canonical = canonicalize(&parts, Some(80)).unwrap();
            let principal = SpiffeId::parse(caller).unwrap();
            let request = EgressRequest {
                request_id: &id,
                principal: &principal,
                service: state.service_by_host(host).unwrap(),
                canonical: &canonical,
                headers: &[],
                source_ip: IpAddr::from([127, 0, 0, 1]),
                time_unix: 0,
            };
            let decision = decide(state.engine(), request);
            let ids: Vec<_> = decision.decision.determining.iter().map(|p| p.id.as_str()).collect();
            assert_eq!(decision.decision.effect, effect, "{caller} {method} {host}{path}");
            assert_eq!(ids.join(","), determining, "{caller} {method} {host}{path}");
            assert_eq!(decision.enforce().is_ok(), effect == Effect::Allow);
        }
    }
}
