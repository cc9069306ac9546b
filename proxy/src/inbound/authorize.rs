//! The ingress check, pure: from a canonical request and its verified caller to a
//! decision record and, unless the request may pass, the refusal to send.
//!
//! The request must name a service this workload serves (else 421); the callee's
//! ingress policies then decide. No snapshot yet denies everything (fail-closed).

use std::net::IpAddr;

use http::HeaderValue;
use palisade_authz::{Action, Decision, DeterminingPolicy, Direction, Effect, RequestFacts, Resource};
use palisade_ca::SpiffeId;
use palisade_policy::registry::Service;

use crate::request::{Canonical, Refusal};
use crate::state::PolicyState;

/// The destination of a request that named no service served here.
pub(super) const UNKNOWN: &str = "unknown";

/// One request as the ingress check sees it.
#[derive(Debug, Clone, Copy)]
pub(super) struct Ask<'a> {
    /// This sidecar's workload.
    pub(super) local: &'a SpiffeId,
    /// The verified caller.
    pub(super) peer: &'a SpiffeId,
    pub(super) source_ip: IpAddr,
    pub(super) request_id: &'a HeaderValue,
    pub(super) request: &'a Canonical,
    /// The sanitized headers, as policies see them.
    pub(super) headers: &'a [(&'a str, &'a str)],
    pub(super) time_unix: i64,
}

/// What was decided about one request, and why: what the logs say now and what an
/// audit sink will take later. Never sent to the caller.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DecisionRecord {
    pub request_id: String,
    /// The caller's SPIFFE ID.
    pub peer: String,
    /// The service (`ns/name`), or `unknown` when no service served here matched
    /// the host: only registry names, so metrics labels stay bounded.
    pub destination: String,
    /// The host the request named, as canonicalized (for logs, never a label).
    pub host: String,
    pub action: Action,
    /// The canonical path.
    pub path: String,
    pub effect: Effect,
    /// The policies that determined the effect (ids).
    pub determining: Vec<String>,
    /// A dry-run policy would have denied.
    pub dry_run_deny: bool,
    pub dry_run_determining: Vec<String>,
    /// Evaluation errors, and why a request was denied without evaluation.
    pub errors: Vec<String>,
    /// The policy snapshot that decided; none when there was none yet.
    pub snapshot_version: Option<u64>,
}

/// The ingress check's answer.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) struct Verdict {
    pub(super) record: DecisionRecord,
    /// `None`: forward the request. Otherwise the answer to send instead.
    pub(super) refusal: Option<Refusal>,
}

/// Decides one request against the snapshot in force.
pub(super) fn authorize(state: Option<&PolicyState>, ask: &Ask<'_>) -> Verdict {
    let host = ask.request.host.name();
    let Some(state) = state else {
        return denied(ask, None, "no policy snapshot yet: every request is denied");
    };
    let Some(service) = served_service(state, ask.local, host) else {
        let mut verdict = denied(ask, Some(state.version()), "the host is not served here");
        verdict.refusal = Some(Refusal::Misdirected);
        return verdict;
    };
    let facts = RequestFacts {
        principal: ask.peer.as_str(),
        action: ask.request.action,
        resource: Resource::Service {
            namespace: service.namespace(),
            name: service.name(),
        },
        path: ask.request.path.path(),
        host,
        protocol: ask.request.protocol,
        source_ip: Some(ask.source_ip),
        headers: ask.headers,
        time_unix: ask.time_unix,
    };
    let decision = state.engine().evaluate(Direction::Ingress, &facts);
    let refusal = (decision.effect == Effect::Deny).then_some(Refusal::Denied {
        side: Direction::Ingress,
    });
    Verdict {
        record: record(ask, service.id(), Some(state.version()), decision),
        refusal,
    }
}

/// The service named by `host` when `local` is one of the identities serving it.
fn served_service<'s>(state: &'s PolicyState, local: &SpiffeId, host: &str) -> Option<&'s Service> {
    state
        .service_by_host(host)
        .filter(|service| service.served_by().contains(local))
}

/// A deny made without asking the engine.
fn denied(ask: &Ask<'_>, snapshot_version: Option<u64>, why: &str) -> Verdict {
    let decision = Decision {
        effect: Effect::Deny,
        dry_run_deny: false,
        determining: Vec::new(),
        dry_run_determining: Vec::new(),
        errors: vec![why.to_owned()],
    };
    Verdict {
        record: record(ask, UNKNOWN, snapshot_version, decision),
        refusal: Some(Refusal::Denied {
            side: Direction::Ingress,
        }),
    }
}

fn record(ask: &Ask<'_>, destination: &str, snapshot_version: Option<u64>, decision: Decision) -> DecisionRecord {
    let ids = |policies: Vec<DeterminingPolicy>| policies.into_iter().map(|p| p.id).collect();
    DecisionRecord {
        request_id: ask.request_id.to_str().unwrap_or_default().to_owned(),
        peer: ask.peer.as_str().to_owned(),
        destination: destination.to_owned(),
        host: ask.request.host.name().to_owned(),
        action: ask.request.action,
        path: ask.request.path.path().to_owned(),
        effect: decision.effect,
        determining: ids(decision.determining),
        dry_run_deny: decision.dry_run_deny,
        dry_run_determining: ids(decision.dry_run_determining),
        errors: decision.errors,
        snapshot_version,
    }
}

#[cfg(test)]
mod tests {
    use std::net::Ipv4Addr;

    use http::Request;

    use super::*;
    use crate::request::canonicalize;
    use crate::testing::{shop_state, CHECKOUT, FRONTEND, PAYMENTS, REVIEWS};

    fn canonical(method: &str, host: &str, path: &str) -> Canonical {
        let parts = Request::builder()
            .method(method)
            .uri(path)
            .header("host", host)
            .body(())
            .unwrap()
            .into_parts()
            .0;
        canonicalize(&parts, None).unwrap()
    }

    fn decide(state: Option<&PolicyState>, local: &str, peer: &str, request: &Canonical) -> Verdict {
        let (local, peer) = (SpiffeId::parse(local).unwrap(), SpiffeId::parse(peer).unwrap());
        let id = HeaderValue::from_static("r-1");
        authorize(
            state,
            &Ask {
                local: &local,
                peer: &peer,
                source_ip: IpAddr::V4(Ipv4Addr::LOCALHOST),
                request_id: &id,
                request,
                headers: &[],
                time_unix: 1_700_000_000,
            },
        )
    }

    #[test]
    fn the_shop_ingress_table() {
        let state = shop_state();
        let cases = [
            (PAYMENTS, CHECKOUT, "POST", "payments.shop", "/charge", None),
            (PAYMENTS, FRONTEND, "POST", "payments.shop", "/charge", Some(403)),
            (PAYMENTS, CHECKOUT, "GET", "payments.shop", "/charge", Some(403)),
            (REVIEWS, FRONTEND, "GET", "reviews.reviews.svc", "/r/1", None),
            (REVIEWS, CHECKOUT, "GET", "reviews.shop", "/r/1", Some(403)),
            (PAYMENTS, CHECKOUT, "GET", "reviews.shop", "/r/1", Some(421)),
            (PAYMENTS, CHECKOUT, "GET", "nowhere.shop", "/", Some(421)),
        ];
        for (local, peer, method, host, path, status) in cases {
            let verdict = decide(Some(&state), local, peer, &canonical(method, host, path));
            assert_eq!(
                verdict.refusal.map(|r| r.status().as_u16()),
                status,
                "{peer} {method} {host}{path} at {local}"
            );
            if status == Some(421) {
                assert_eq!(verdict.record.destination, "unknown", "never the peer-sent host");
            }
        }
    }

    #[test]
    fn an_allow_names_its_policy_and_a_deny_its_forbid() {
        let state = shop_state();
        let allow = decide(
            Some(&state),
            PAYMENTS,
            CHECKOUT,
            &canonical("POST", "payments.shop", "/charge"),
        );
        assert_eq!(allow.record.determining, ["payments-charge-from-pci"]);
        assert_eq!(allow.record.destination, "payments/payments");
        let deny = decide(
            Some(&state),
            PAYMENTS,
            FRONTEND,
            &canonical("POST", "payments.shop", "/charge"),
        );
        assert_eq!(deny.record.determining, ["payments-forbid-non-pci"]);
        assert_eq!(deny.record.effect, Effect::Deny);
    }

    #[test]
    fn no_snapshot_denies_everything() {
        let verdict = decide(None, PAYMENTS, CHECKOUT, &canonical("POST", "payments.shop", "/charge"));
        assert_eq!(
            verdict.refusal,
            Some(Refusal::Denied {
                side: Direction::Ingress
            })
        );
        assert_eq!(verdict.record.destination, "unknown");
        assert_eq!(verdict.record.host, "payments.shop");
        assert_eq!(verdict.record.snapshot_version, None);
    }
}
