//! The audit seam: what a sidecar hands the audit log, and the trait the delivery
//! client plugs into.
//!
//! A sidecar emits, through its [`AuditSink`]:
//!
//! - one [`Event::Decision`] per authorization decision, on each side (the inbound
//!   side's ingress decision; the outbound side's egress decision, on a mesh
//!   `Service` or on an `ExternalHost`), once the status the caller got is known:
//!   a decision is made before forwarding, but its record carries the final status
//!   and the latency from the request's arrival to the response head. A request
//!   refused before any decision (400, 431, …) has none;
//! - one [`Event::External`] per request or tunnel for a destination outside the
//!   mesh: allowlisted, BlackHole or Passthrough, with the reason in words.
//!
//! The sink never blocks a request: it queues or drops (and counts what it drops,
//! its own business). In strict audit mode a sidecar forwards nothing while its
//! sink is not [accepting](AuditSink::accepting): the caller gets 503
//! ([`Refusal::AuditUnavailable`](crate::request::Refusal::AuditUnavailable)).
//!
//! When the sink is not [enabled](AuditSink::enabled) ([`NoAudit`]) the pipeline
//! builds no record at all.

use std::time::Duration;

use palisade_audit::record::{Decision, Effect, Event, External, ExternalKind, Side};
use palisade_authz::{Action, Direction};

/// Where a sidecar's audit events go. Implementations queue; `record` never waits.
pub trait AuditSink: Send + Sync + std::fmt::Debug {
    /// Takes one event. Never blocks on I/O.
    fn record(&self, event: Event);

    /// Whether events are being accepted now (a full queue and spool, or an audit
    /// service away past the spool, say no). Strict mode forwards nothing then.
    fn accepting(&self) -> bool;

    /// Whether records should be built at all; `false` lets the pipeline skip them.
    fn enabled(&self) -> bool {
        true
    }

    /// The delivery's metrics in Prometheus text (sent, spooled, dropped…).
    fn render_metrics(&self) -> String {
        String::new()
    }

    /// Strict mode's question before it forwards a request: a place for the
    /// request's record, held until it is made. `None`: refuse the request.
    fn reserve(&self) -> Option<Reservation> {
        self.accepting().then_some(Reservation::Unreserved)
    }
}

/// Where a decision's record will go ([`AuditSink::reserve`]).
#[derive(Debug)]
pub enum Reservation {
    /// A place held in the delivery queue.
    Queue(palisade_audit::deliver::Reserved),
    /// The sink's ordinary [`record`](AuditSink::record).
    Unreserved,
}

/// No audit log: every event is dropped unbuilt, and strict mode never refuses.
#[derive(Debug, Clone, Copy, Default)]
pub struct NoAudit;

impl AuditSink for NoAudit {
    fn record(&self, _event: Event) {}

    fn accepting(&self) -> bool {
        true
    }

    fn enabled(&self) -> bool {
        false
    }
}

/// A decision's record before the response is known: [`PendingDecision::finish`]
/// adds the status and the latency.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PendingDecision {
    pub side: Side,
    pub effect: Effect,
    /// The caller's SPIFFE ID.
    pub principal: String,
    /// `GET`, `POST`, … or `connect`.
    pub action: &'static str,
    /// `ns/name` for a service, `HOST:PORT` for an external host.
    pub resource: String,
    /// The canonical path (empty for a tunnel).
    pub path: String,
    /// The ids of the policies that determined the effect.
    pub policies: Vec<String>,
    pub request_id: String,
}

impl PendingDecision {
    /// The record, now that the caller's status is known.
    pub fn finish(self, status: u16, latency: Duration) -> Event {
        Event::Decision(Decision {
            side: self.side,
            effect: self.effect,
            principal: self.principal,
            action: self.action.to_owned(),
            resource: self.resource,
            path: self.path,
            policies: self.policies,
            request_id: self.request_id,
            status,
            latency_micros: u64::try_from(latency.as_micros()).unwrap_or(u64::MAX),
        })
    }
}

/// A decision on its way to the audit log. [`finish`](Self::finish) records it with
/// the status the caller got; if the request is dropped first (the caller went away
/// while the app was answering: hyper drops the handler), it is recorded on drop
/// with status 0, "no response was sent". Either way every decision that let a
/// request through is recorded once.
pub struct Recorder<'a> {
    sink: &'a dyn AuditSink,
    arrived: std::time::Instant,
    pending: Option<PendingDecision>,
    reservation: Option<Reservation>,
}

impl<'a> Recorder<'a> {
    /// Nothing to record yet; the request arrived at `arrived`.
    pub fn new(sink: &'a dyn AuditSink, arrived: std::time::Instant) -> Self {
        Self {
            sink,
            arrived,
            pending: None,
            reservation: None,
        }
    }

    /// Strict mode: holds a place for the record before the request is forwarded.
    ///
    /// # Errors
    ///
    /// 503 when the sink has no place: the request must not be forwarded.
    pub fn reserve(&mut self) -> Result<(), crate::request::Refusal> {
        match self.sink.reserve() {
            Some(reservation) => {
                self.reservation = Some(reservation);
                Ok(())
            }
            None => {
                tracing::warn!("auditing is unavailable in strict audit mode; request refused");
                Err(crate::request::Refusal::AuditUnavailable)
            }
        }
    }

    fn emit(&mut self, status: u16) {
        if let Some(pending) = self.pending.take() {
            let event = pending.finish(status, self.arrived.elapsed());
            match self.reservation.take() {
                Some(Reservation::Queue(place)) => place.record(event),
                Some(Reservation::Unreserved) | None => self.sink.record(event),
            }
        }
    }

    /// The decision made (none when the sink is disabled or nothing was decided).
    pub fn set(&mut self, pending: Option<PendingDecision>) {
        self.pending = pending;
    }

    /// The decision, to amend before it is recorded.
    pub fn pending_mut(&mut self) -> Option<&mut PendingDecision> {
        self.pending.as_mut()
    }

    /// Records the decision with the status the caller got.
    pub fn finish(mut self, status: u16) {
        self.emit(status);
    }
}

impl Drop for Recorder<'_> {
    fn drop(&mut self) {
        self.emit(0);
    }
}

impl std::fmt::Debug for Recorder<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Recorder")
            .field("pending", &self.pending)
            .finish_non_exhaustive()
    }
}

/// One external request or tunnel, as [`external`] records it.
#[derive(Debug, Clone, Copy)]
pub struct ExternalFacts<'a> {
    pub kind: ExternalKind,
    /// This sidecar's workload.
    pub workload: &'a str,
    pub host: &'a str,
    pub port: u16,
    /// The ClientHello's SNI (tunnels), empty otherwise.
    pub sni: &'a str,
    /// `http` or `tls`.
    pub protocol: &'static str,
    pub request_id: &'a str,
    pub reason: &'a str,
}

/// The record of one external request or tunnel.
pub fn external(facts: &ExternalFacts<'_>) -> Event {
    Event::External(External {
        kind: facts.kind,
        workload: facts.workload.to_owned(),
        host: facts.host.to_owned(),
        sni: facts.sni.to_owned(),
        port: facts.port,
        protocol: facts.protocol.to_owned(),
        request_id: facts.request_id.to_owned(),
        reason: facts.reason.to_owned(),
    })
}

/// The record's effect of an engine decision: `dry_run_deny` when it allows but a
/// dry-run policy would deny.
pub fn effect(decision: &palisade_authz::Decision) -> Effect {
    match (decision.effect, decision.dry_run_deny) {
        (palisade_authz::Effect::Deny, _) => Effect::Deny,
        (palisade_authz::Effect::Allow, true) => Effect::DryRunDeny,
        (palisade_authz::Effect::Allow, false) => Effect::Allow,
    }
}

/// The ids a record names: the policies that determined its effect. For a dry-run
/// denial that is the dry-run policies that would have denied it (the permits that
/// let it through are not what a reviewer of the denial needs to see).
pub fn policies(decision: &palisade_authz::Decision) -> Vec<String> {
    let determining = if decision.effect == palisade_authz::Effect::Allow && decision.dry_run_deny {
        &decision.dry_run_determining
    } else {
        &decision.determining
    };
    determining.iter().map(|policy| policy.id.clone()).collect()
}

/// The record's side.
pub fn side(direction: Direction) -> Side {
    match direction {
        Direction::Egress => Side::Egress,
        Direction::Ingress => Side::Ingress,
    }
}

/// The Cedar action's name as records spell it: the method, or `connect`.
pub fn action_name(action: Action) -> &'static str {
    match action {
        Action::Connect => "connect",
        method => crate::outbound::authorize::method_name(method),
    }
}

/// The delivery client of `palisade-audit`: a bounded queue, batches over mTLS, a
/// spool while the service is away.
impl AuditSink for palisade_audit::deliver::Auditor {
    fn record(&self, event: Event) {
        palisade_audit::deliver::Auditor::record(self, event);
    }

    fn accepting(&self) -> bool {
        palisade_audit::deliver::Auditor::accepting(self)
    }

    fn render_metrics(&self) -> String {
        self.metrics().render_prometheus("palisade_proxy")
    }

    fn reserve(&self) -> Option<Reservation> {
        palisade_audit::deliver::Auditor::reserve(self).map(Reservation::Queue)
    }
}

#[cfg(test)]
mod tests {
    use palisade_authz::DeterminingPolicy;

    use super::*;

    #[test]
    fn an_allow_a_dry_run_policy_would_deny_is_recorded_as_such() {
        let mut decision = palisade_authz::Decision {
            effect: palisade_authz::Effect::Allow,
            dry_run_deny: true,
            determining: Vec::<DeterminingPolicy>::new(),
            dry_run_determining: Vec::new(),
            errors: Vec::new(),
        };
        assert_eq!(effect(&decision), Effect::DryRunDeny);
        decision.dry_run_deny = false;
        assert_eq!(effect(&decision), Effect::Allow);
        decision.effect = palisade_authz::Effect::Deny;
        assert_eq!(effect(&decision), Effect::Deny);
    }

    #[test]
    fn a_pending_decision_is_finished_with_the_status_and_latency() {
        let pending = PendingDecision {
            side: Side::Egress,
            effect: Effect::Allow,
            principal: "spiffe://td/ns/a/sa/a".to_owned(),
            action: action_name(Action::Connect),
            resource: "api.example.com:443".to_owned(),
            path: String::new(),
            policies: vec!["p".to_owned()],
            request_id: "r-1".to_owned(),
        };
        let Event::Decision(decision) = pending.finish(200, Duration::from_millis(3)) else {
            panic!("not a decision");
        };
        assert_eq!(decision.action, "connect");
        assert_eq!((decision.status, decision.latency_micros), (200, 3000));
    }

    #[test]
    fn no_audit_builds_nothing_and_never_refuses() {
        assert!(!NoAudit.enabled());
        assert!(NoAudit.accepting());
    }
}
