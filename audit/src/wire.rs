//! Records on the wire: [`Record`] ↔ [`pb::Record`].
//!
//! The way out ([`From`]) cannot fail. The way in ([`TryFrom`]) is where the audit
//! service refuses what it will not store: an unspecified or unknown enum, a
//! missing event, an id that is empty or over [`MAX_ID_BYTES`], any text over
//! [`MAX_TEXT_BYTES`], more than [`MAX_POLICIES`] policies, an HTTP status over
//! [`MAX_STATUS`], an external port outside 1..=65535. Each refusal names its field.
//!
//! Senders run the same [`check`] before a record leaves the process (so the
//! service never refuses a batch for a record a sender could have caught), after
//! [`fit`] has cut over-long text and policy lists to the limits: a decision about a
//! request with a 20 KiB path is still audited, with the first 8 KiB of the path.

use crate::proto::v1 as pb;
use crate::record::{
    Decision, Effect, Event, External, ExternalKind, Identity, IdentityKind, PolicyChange, PolicyOutcome, Record, Side,
};

/// The longest record id, in bytes.
pub const MAX_ID_BYTES: usize = 128;
/// The longest text field, in bytes.
pub const MAX_TEXT_BYTES: usize = 8 * 1024;
/// The most policies one decision may name.
pub const MAX_POLICIES: usize = 64;
/// The highest HTTP status (0: none was sent).
pub const MAX_STATUS: u32 = 999;

/// Why a record from the wire was refused; each names the field.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum WireError {
    #[error("`id` is empty; give every record a unique id")]
    EmptyId,
    #[error("`id` is {len} bytes; an id is at most {MAX_ID_BYTES} bytes")]
    IdTooLong { len: usize },
    #[error("`event` is missing; set one of `decision`, `external`, `identity`, `policy`")]
    MissingEvent,
    #[error("`{field}` is {value}, which is unspecified or unknown; set one of the values the proto defines")]
    Enum { field: &'static str, value: i32 },
    #[error("`{field}` is {len} bytes; a text field is at most {MAX_TEXT_BYTES} bytes")]
    TextTooLong { field: &'static str, len: usize },
    #[error("`decision.policies` names {count} policies; a decision names at most {MAX_POLICIES}")]
    TooManyPolicies { count: usize },
    #[error("`decision.status` is {0}; an HTTP status is at most {MAX_STATUS} (0 when none was sent)")]
    Status(u32),
    #[error("`external.port` is {0}; a port is 1 to 65535")]
    Port(u32),
}

impl WireError {
    /// The field refused, as the proto names it (`decision.status`, `id`, …).
    pub fn field(&self) -> &'static str {
        match self {
            Self::EmptyId | Self::IdTooLong { .. } => "id",
            Self::MissingEvent => "event",
            Self::Enum { field, .. } | Self::TextTooLong { field, .. } => field,
            Self::TooManyPolicies { .. } => "decision.policies",
            Self::Status(_) => "decision.status",
            Self::Port(_) => "external.port",
        }
    }
}

impl From<Record> for pb::Record {
    fn from(record: Record) -> Self {
        let event = match record.event {
            Event::Decision(d) => pb::record::Event::Decision(decision_out(d)),
            Event::External(e) => pb::record::Event::External(external_out(e)),
            Event::Identity(i) => pb::record::Event::Identity(identity_out(i)),
            Event::Policy(p) => pb::record::Event::Policy(policy_out(p)),
        };
        Self {
            id: record.id,
            time_unix_micros: record.time_micros,
            event: Some(event),
        }
    }
}

impl From<&Record> for pb::Record {
    fn from(record: &Record) -> Self {
        Self::from(record.clone())
    }
}

impl TryFrom<pb::Record> for Record {
    type Error = WireError;

    fn try_from(record: pb::Record) -> Result<Self, WireError> {
        check_id(&record.id)?;
        let event = match record.event.ok_or(WireError::MissingEvent)? {
            pb::record::Event::Decision(d) => Event::Decision(decision_in(d)?),
            pb::record::Event::External(e) => Event::External(external_in(e)?),
            pb::record::Event::Identity(i) => Event::Identity(identity_in(i)?),
            pb::record::Event::Policy(p) => Event::Policy(policy_in(p)?),
        };
        Ok(Self {
            id: record.id,
            time_micros: record.time_unix_micros,
            event,
        })
    }
}

/// Whether the audit service would take `record`, without converting it.
///
/// # Errors
///
/// The first field the service would refuse.
pub fn check(record: &pb::Record) -> Result<(), WireError> {
    check_id(&record.id)?;
    match record.event.as_ref().ok_or(WireError::MissingEvent)? {
        pb::record::Event::Decision(d) => check_decision(d),
        pb::record::Event::External(e) => check_external(e),
        pb::record::Event::Identity(i) => check_identity(i),
        pb::record::Event::Policy(p) => check_policy(p),
    }
}

/// Cuts every text field to [`MAX_TEXT_BYTES`] (on a character boundary) and the
/// policies of a decision to the first [`MAX_POLICIES`]. What senders do before
/// [`check`]; the id is left alone (the sender makes it).
pub fn fit(record: &mut pb::Record) {
    match &mut record.event {
        Some(pb::record::Event::Decision(d)) => {
            d.policies.truncate(MAX_POLICIES);
            let texts = [
                &mut d.principal,
                &mut d.action,
                &mut d.resource,
                &mut d.path,
                &mut d.request_id,
            ];
            texts.into_iter().chain(d.policies.iter_mut()).for_each(cut);
        }
        Some(pb::record::Event::External(e)) => {
            let texts = [
                &mut e.workload,
                &mut e.host,
                &mut e.sni,
                &mut e.protocol,
                &mut e.request_id,
                &mut e.reason,
            ];
            texts.into_iter().for_each(cut);
        }
        Some(pb::record::Event::Identity(i)) => [&mut i.spiffe_id, &mut i.serial, &mut i.reason]
            .into_iter()
            .for_each(cut),
        Some(pb::record::Event::Policy(p)) => [&mut p.digest, &mut p.detail].into_iter().for_each(cut),
        None => {}
    }
}

/// Cuts `s` to at most [`MAX_TEXT_BYTES`], on a character boundary.
fn cut(s: &mut String) {
    if s.len() > MAX_TEXT_BYTES {
        let mut end = MAX_TEXT_BYTES;
        while !s.is_char_boundary(end) {
            end -= 1;
        }
        s.truncate(end);
    }
}

fn check_id(id: &str) -> Result<(), WireError> {
    if id.is_empty() {
        return Err(WireError::EmptyId);
    }
    if id.len() > MAX_ID_BYTES {
        return Err(WireError::IdTooLong { len: id.len() });
    }
    Ok(())
}

fn text(field: &'static str, value: &str) -> Result<(), WireError> {
    if value.len() > MAX_TEXT_BYTES {
        return Err(WireError::TextTooLong {
            field,
            len: value.len(),
        });
    }
    Ok(())
}

fn check_decision(d: &pb::Decision) -> Result<(), WireError> {
    side(d.side)?;
    effect(d.effect)?;
    text("decision.principal", &d.principal)?;
    text("decision.action", &d.action)?;
    text("decision.resource", &d.resource)?;
    text("decision.path", &d.path)?;
    text("decision.request_id", &d.request_id)?;
    if d.policies.len() > MAX_POLICIES {
        return Err(WireError::TooManyPolicies {
            count: d.policies.len(),
        });
    }
    d.policies.iter().try_for_each(|p| text("decision.policies", p))?;
    status(d.status)?;
    Ok(())
}

fn check_external(e: &pb::External) -> Result<(), WireError> {
    external_kind(e.kind)?;
    text("external.workload", &e.workload)?;
    text("external.host", &e.host)?;
    text("external.sni", &e.sni)?;
    port(e.port)?;
    text("external.protocol", &e.protocol)?;
    text("external.request_id", &e.request_id)?;
    text("external.reason", &e.reason)?;
    Ok(())
}

fn check_identity(i: &pb::Identity) -> Result<(), WireError> {
    identity_kind(i.kind)?;
    text("identity.spiffe_id", &i.spiffe_id)?;
    text("identity.serial", &i.serial)?;
    text("identity.reason", &i.reason)?;
    Ok(())
}

fn check_policy(p: &pb::PolicyChange) -> Result<(), WireError> {
    policy_outcome(p.outcome)?;
    text("policy.digest", &p.digest)?;
    text("policy.detail", &p.detail)?;
    Ok(())
}

fn decision_in(d: pb::Decision) -> Result<Decision, WireError> {
    check_decision(&d)?;
    Ok(Decision {
        side: side(d.side)?,
        effect: effect(d.effect)?,
        principal: d.principal,
        action: d.action,
        resource: d.resource,
        path: d.path,
        policies: d.policies,
        request_id: d.request_id,
        status: status(d.status)?,
        latency_micros: d.latency_micros,
    })
}

fn external_in(e: pb::External) -> Result<External, WireError> {
    check_external(&e)?;
    Ok(External {
        kind: external_kind(e.kind)?,
        workload: e.workload,
        host: e.host,
        sni: e.sni,
        port: port(e.port)?,
        protocol: e.protocol,
        request_id: e.request_id,
        reason: e.reason,
    })
}

fn identity_in(i: pb::Identity) -> Result<Identity, WireError> {
    check_identity(&i)?;
    Ok(Identity {
        kind: identity_kind(i.kind)?,
        spiffe_id: i.spiffe_id,
        serial: i.serial,
        reason: i.reason,
        not_after_unix: i.not_after_unix,
    })
}

fn policy_in(p: pb::PolicyChange) -> Result<PolicyChange, WireError> {
    check_policy(&p)?;
    Ok(PolicyChange {
        outcome: policy_outcome(p.outcome)?,
        version: p.version,
        digest: p.digest,
        detail: p.detail,
    })
}

fn status(value: u32) -> Result<u16, WireError> {
    u16::try_from(value)
        .ok()
        .filter(|s| u32::from(*s) <= MAX_STATUS)
        .ok_or(WireError::Status(value))
}

fn port(value: u32) -> Result<u16, WireError> {
    u16::try_from(value)
        .ok()
        .filter(|p| *p != 0)
        .ok_or(WireError::Port(value))
}

fn side(value: i32) -> Result<Side, WireError> {
    match pb::Side::try_from(value) {
        Ok(pb::Side::Egress) => Ok(Side::Egress),
        Ok(pb::Side::Ingress) => Ok(Side::Ingress),
        _ => Err(WireError::Enum {
            field: "decision.side",
            value,
        }),
    }
}

fn effect(value: i32) -> Result<Effect, WireError> {
    match pb::Effect::try_from(value) {
        Ok(pb::Effect::Allow) => Ok(Effect::Allow),
        Ok(pb::Effect::Deny) => Ok(Effect::Deny),
        Ok(pb::Effect::DryRunDeny) => Ok(Effect::DryRunDeny),
        _ => Err(WireError::Enum {
            field: "decision.effect",
            value,
        }),
    }
}

fn external_kind(value: i32) -> Result<ExternalKind, WireError> {
    match pb::ExternalKind::try_from(value) {
        Ok(pb::ExternalKind::Allowlisted) => Ok(ExternalKind::Allowlisted),
        Ok(pb::ExternalKind::Blackhole) => Ok(ExternalKind::BlackHole),
        Ok(pb::ExternalKind::Passthrough) => Ok(ExternalKind::Passthrough),
        _ => Err(WireError::Enum {
            field: "external.kind",
            value,
        }),
    }
}

fn identity_kind(value: i32) -> Result<IdentityKind, WireError> {
    match pb::IdentityKind::try_from(value) {
        Ok(pb::IdentityKind::Issued) => Ok(IdentityKind::Issued),
        Ok(pb::IdentityKind::Renewed) => Ok(IdentityKind::Renewed),
        Ok(pb::IdentityKind::Revoked) => Ok(IdentityKind::Revoked),
        Ok(pb::IdentityKind::Unrevoked) => Ok(IdentityKind::Unrevoked),
        _ => Err(WireError::Enum {
            field: "identity.kind",
            value,
        }),
    }
}

fn policy_outcome(value: i32) -> Result<PolicyOutcome, WireError> {
    match pb::PolicyOutcome::try_from(value) {
        Ok(pb::PolicyOutcome::Accepted) => Ok(PolicyOutcome::Accepted),
        Ok(pb::PolicyOutcome::Rejected) => Ok(PolicyOutcome::Rejected),
        _ => Err(WireError::Enum {
            field: "policy.outcome",
            value,
        }),
    }
}

fn decision_out(d: Decision) -> pb::Decision {
    let side = match d.side {
        Side::Egress => pb::Side::Egress,
        Side::Ingress => pb::Side::Ingress,
    };
    let effect = match d.effect {
        Effect::Allow => pb::Effect::Allow,
        Effect::Deny => pb::Effect::Deny,
        Effect::DryRunDeny => pb::Effect::DryRunDeny,
    };
    pb::Decision {
        side: side.into(),
        effect: effect.into(),
        principal: d.principal,
        action: d.action,
        resource: d.resource,
        path: d.path,
        policies: d.policies,
        request_id: d.request_id,
        status: d.status.into(),
        latency_micros: d.latency_micros,
    }
}

fn external_out(e: External) -> pb::External {
    let kind = match e.kind {
        ExternalKind::Allowlisted => pb::ExternalKind::Allowlisted,
        ExternalKind::BlackHole => pb::ExternalKind::Blackhole,
        ExternalKind::Passthrough => pb::ExternalKind::Passthrough,
    };
    pb::External {
        kind: kind.into(),
        workload: e.workload,
        host: e.host,
        sni: e.sni,
        port: e.port.into(),
        protocol: e.protocol,
        request_id: e.request_id,
        reason: e.reason,
    }
}

fn identity_out(i: Identity) -> pb::Identity {
    let kind = match i.kind {
        IdentityKind::Issued => pb::IdentityKind::Issued,
        IdentityKind::Renewed => pb::IdentityKind::Renewed,
        IdentityKind::Revoked => pb::IdentityKind::Revoked,
        IdentityKind::Unrevoked => pb::IdentityKind::Unrevoked,
    };
    pb::Identity {
        kind: kind.into(),
        spiffe_id: i.spiffe_id,
        serial: i.serial,
        reason: i.reason,
        not_after_unix: i.not_after_unix,
    }
}

fn policy_out(p: PolicyChange) -> pb::PolicyChange {
    let outcome = match p.outcome {
        PolicyOutcome::Accepted => pb::PolicyOutcome::Accepted,
        PolicyOutcome::Rejected => pb::PolicyOutcome::Rejected,
    };
    pb::PolicyChange {
        outcome: outcome.into(),
        version: p.version,
        digest: p.digest,
        detail: p.detail,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn decision() -> Record {
        Record {
            id: "abc-1".into(),
            time_micros: 1_700_000_000_000_000,
            event: Event::Decision(Decision {
                side: Side::Ingress,
                effect: Effect::DryRunDeny,
                principal: "spiffe://td/ns/web/sa/frontend".into(),
                action: "GET".into(),
                resource: "payments/payments".into(),
                path: "/charge".into(),
                policies: vec!["p1".into(), "p2".into()],
                request_id: "r-1".into(),
                status: 403,
                latency_micros: 120,
            }),
        }
    }

    fn external() -> Record {
        Record {
            id: "abc-2".into(),
            time_micros: 5,
            event: Event::External(External {
                kind: ExternalKind::BlackHole,
                workload: "spiffe://td/ns/web/sa/frontend".into(),
                host: "evil.example".into(),
                sni: "evil.example".into(),
                port: 443,
                protocol: "tls".into(),
                request_id: String::new(),
                reason: "not allowlisted".into(),
            }),
        }
    }

    fn others() -> Vec<Record> {
        let identity = Event::Identity(Identity {
            kind: IdentityKind::Unrevoked,
            spiffe_id: "spiffe://td/ns/a/sa/b".into(),
            serial: "0a".into(),
            reason: "mistake".into(),
            not_after_unix: 0,
        });
        let policy = Event::Policy(PolicyChange {
            outcome: PolicyOutcome::Rejected,
            version: 0,
            digest: String::new(),
            detail: "line 3: unexpected token".into(),
        });
        [identity, policy]
            .into_iter()
            .map(|event| Record {
                id: "x".into(),
                time_micros: -1,
                event,
            })
            .collect()
    }

    #[test]
    fn every_kind_of_record_survives_the_round_trip() {
        for record in [decision(), external()].into_iter().chain(others()) {
            let wire = pb::Record::from(&record);
            assert_eq!(check(&wire), Ok(()));
            assert_eq!(Record::try_from(wire), Ok(record));
        }
    }

    fn refused(record: pb::Record) -> WireError {
        let by_check = check(&record).unwrap_err();
        let by_conversion = Record::try_from(record).unwrap_err();
        assert_eq!(by_check, by_conversion, "check and conversion agree");
        by_conversion
    }

    fn decision_wire(change: impl FnOnce(&mut pb::Decision)) -> pb::Record {
        let mut wire = pb::Record::from(&decision());
        let Some(pb::record::Event::Decision(d)) = &mut wire.event else {
            unreachable!()
        };
        change(d);
        wire
    }

    #[test]
    fn an_unspecified_or_unknown_enum_is_refused_by_its_field() {
        let err = refused(decision_wire(|d| d.side = 0));
        assert_eq!(err.field(), "decision.side");
        let err = refused(decision_wire(|d| d.effect = 99));
        assert_eq!(
            err,
            WireError::Enum {
                field: "decision.effect",
                value: 99
            }
        );
        assert!(err.to_string().contains("`decision.effect` is 99"), "{err}");
    }

    #[test]
    fn a_record_without_an_event_is_refused() {
        let mut wire = pb::Record::from(&decision());
        wire.event = None;
        assert_eq!(refused(wire), WireError::MissingEvent);
    }

    #[test]
    fn an_id_must_be_present_and_short() {
        let mut wire = pb::Record::from(&decision());
        wire.id = String::new();
        assert_eq!(refused(wire.clone()), WireError::EmptyId);
        wire.id = "a".repeat(MAX_ID_BYTES);
        assert_eq!(check(&wire), Ok(()));
        wire.id.push('a');
        assert_eq!(refused(wire), WireError::IdTooLong { len: MAX_ID_BYTES + 1 });
    }

    #[test]
    fn text_policies_status_and_port_have_limits() {
        let long = "é".repeat(MAX_TEXT_BYTES / 2 + 1);
        let err = refused(decision_wire(|d| d.path = long.clone()));
        assert_eq!(err.field(), "decision.path");
        let err = refused(decision_wire(|d| d.policies = vec!["p".into(); MAX_POLICIES + 1]));
        assert_eq!(
            err,
            WireError::TooManyPolicies {
                count: MAX_POLICIES + 1
            }
        );
        assert_eq!(refused(decision_wire(|d| d.status = 1000)), WireError::Status(1000));
        assert_eq!(refused(decision_wire(|d| d.status = 70_000)), WireError::Status(70_000));

        let mut wire = pb::Record::from(&external());
        let Some(pb::record::Event::External(e)) = &mut wire.event else {
            unreachable!()
        };
        e.port = 0;
        assert_eq!(refused(wire.clone()), WireError::Port(0));
        let Some(pb::record::Event::External(e)) = &mut wire.event else {
            unreachable!()
        };
        e.port = 65_536;
        assert_eq!(refused(wire), WireError::Port(65_536));
    }

    #[test]
    fn fit_cuts_text_on_a_character_boundary_and_keeps_the_first_policies() {
        let mut wire = decision_wire(|d| {
            d.path = "é".repeat(MAX_TEXT_BYTES);
            d.policies = (0..100).map(|i| format!("p{i}")).collect();
        });
        fit(&mut wire);
        assert_eq!(check(&wire), Ok(()));
        let Some(pb::record::Event::Decision(d)) = &wire.event else {
            unreachable!()
        };
        assert_eq!(d.path.len(), MAX_TEXT_BYTES);
        assert_eq!(d.policies.len(), MAX_POLICIES);
        assert_eq!(d.policies.first().map(String::as_str), Some("p0"));
    }
}
