//! The compliance report, specified by its figures.
//!
//! `day()` is a hand-made log of ~200 records around one 24-hour window: requests
//! allowed by both sides, allowed only at ingress, allowed at egress and denied at
//! ingress, denied at egress (with and without a determining policy), dry-run
//! denials, decisions without a request id, external traffic of every kind,
//! identity events, accepted and rejected policy edits, and records just outside
//! the window. Every figure of the report is checked against a computation over
//! that list written here, independently of the builder.

#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    clippy::indexing_slicing,
    reason = "tests assert by panicking"
)]

#[path = "report/mesh.rs"]
#[allow(dead_code, reason = "shared with the benchmark, which uses other parts")]
mod mesh;

use std::collections::{BTreeMap, BTreeSet, HashMap};

use palisade_audit::chain::{BrokenLink, Verification};
use palisade_audit::record::{
    to_hex, Decision, Effect, Event, EventKind, External, ExternalKind, Identity, IdentityKind, PolicyChange,
    PolicyOutcome, Record, Side, StoredRecord, GENESIS,
};
use palisade_audit::report::model::{DualApproval, IdentityEvents};
use palisade_audit::report::{Report, ReportBuilder, ReportFormat, Timestamp, Window, DEFAULT_DENY};

const MINUTE: i64 = 60_000_000;
const HOUR: i64 = 60 * MINUTE;
/// 2023-11-14T22:13:20Z.
const T0: i64 = 1_700_000_000_000_000;
const WINDOW: Window = Window {
    since_micros: T0,
    until_micros: T0 + 24 * HOUR,
};
const GENERATED: i64 = T0 + 24 * HOUR + 5 * MINUTE;

const FRONTEND: &str = "spiffe://mesh.test/ns/shop/sa/frontend";
const CHECKOUT: &str = "spiffe://mesh.test/ns/shop/sa/checkout";
const REPORTER: &str = "spiffe://mesh.test/ns/batch/sa/reporter";
const PAYMENTS: &str = "payments/payments";
const ORDERS: &str = "orders/orders";

// ---------------------------------------------------------------------------
// The log

#[derive(Default)]
struct Log {
    records: Vec<StoredRecord>,
}

impl Log {
    fn push(&mut self, time: i64, sender: &str, event: Event) {
        let seq = self.records.len() as u64 + 1;
        let mut hash = GENESIS;
        hash[..8].copy_from_slice(&seq.to_be_bytes());
        let prev_hash = self.records.last().map_or(GENESIS, |r| r.hash);
        self.records.push(StoredRecord {
            seq,
            sender: sender.to_owned(),
            received_micros: time + 1_000,
            record: Record {
                id: format!("rec-{seq}"),
                time_micros: time,
                event,
            },
            prev_hash,
            hash,
        });
    }

    #[allow(clippy::too_many_arguments, reason = "one decision, spelled out")]
    fn decision(
        &mut self,
        time: i64,
        side: Side,
        effect: Effect,
        principal: &str,
        resource: &str,
        policies: &[&str],
        request_id: &str,
    ) {
        let decision = Decision {
            side,
            effect,
            principal: principal.to_owned(),
            action: "GET".to_owned(),
            resource: resource.to_owned(),
            path: "/v1/things".to_owned(),
            policies: policies.iter().map(|p| (*p).to_owned()).collect(),
            request_id: request_id.to_owned(),
            status: if effect == Effect::Deny { 403 } else { 200 },
            latency_micros: 800,
        };
        self.push(time, principal, Event::Decision(decision));
    }

    fn external(&mut self, time: i64, kind: ExternalKind, workload: &str, host: &str, port: u16, reason: &str) {
        let external = External {
            kind,
            workload: workload.to_owned(),
            host: host.to_owned(),
            sni: host.to_owned(),
            port,
            protocol: "tls".to_owned(),
            request_id: format!("ext-{time}"),
            reason: reason.to_owned(),
        };
        self.push(time, workload, Event::External(external));
    }

    fn identity(&mut self, time: i64, kind: IdentityKind, spiffe_id: &str, serial: &str, reason: &str) {
        let identity = Identity {
            kind,
            spiffe_id: spiffe_id.to_owned(),
            serial: serial.to_owned(),
            reason: reason.to_owned(),
            not_after_unix: time / 1_000_000 + 3_600,
        };
        self.push(time, "spiffe://mesh.test/ns/palisade/sa/ca", Event::Identity(identity));
    }

    fn policy(&mut self, time: i64, outcome: PolicyOutcome, version: u64, digest: &str, detail: &str) {
        let change = PolicyChange {
            outcome,
            version,
            digest: digest.to_owned(),
            detail: detail.to_owned(),
        };
        self.push(
            time,
            "spiffe://mesh.test/ns/palisade/sa/control-plane",
            Event::Policy(change),
        );
    }

    fn report(&self) -> Report {
        report_of(&self.records, WINDOW, intact(self.records.len()))
    }

    /// The records of the window, as the report must count them.
    fn in_window(&self) -> Vec<&StoredRecord> {
        self.records
            .iter()
            .filter(|r| (T0..=T0 + 24 * HOUR).contains(&r.record.time_micros))
            .collect()
    }

    fn decisions(&self) -> Vec<(u64, i64, &Decision)> {
        self.in_window()
            .into_iter()
            .filter_map(|r| match &r.record.event {
                Event::Decision(d) => Some((r.seq, r.record.time_micros, d)),
                _ => None,
            })
            .collect()
    }
}

fn report_of(records: &[StoredRecord], window: Window, chain: Verification) -> Report {
    let mut builder = ReportBuilder::new(window);
    for record in records {
        builder.add(record);
    }
    builder.finish(
        chain,
        GENERATED,
        "postgres://audit:hunter2@db.internal:5432/audit?sslmode=require",
    )
}

fn intact(records: usize) -> Verification {
    Verification {
        records: records as u64,
        broken: None,
    }
}

/// One day of a small mesh, plus records just outside it.
fn day() -> Log {
    let mut log = Log::default();
    // Outside the window, before it.
    log.decision(T0 - 1, Side::Egress, Effect::Deny, REPORTER, PAYMENTS, &[], "early-1");
    log.external(
        T0 - HOUR,
        ExternalKind::BlackHole,
        REPORTER,
        "early.example",
        443,
        "refused",
    );
    log.identity(T0 - 2, IdentityKind::Revoked, FRONTEND, "ee", "too early");
    // On the first instant of the window.
    log.decision(
        T0,
        Side::Egress,
        Effect::Allow,
        FRONTEND,
        ORDERS,
        &["allow-frontend-orders"],
        "first",
    );

    for i in 0..40_i64 {
        let t = T0 + 30 * MINUTE + i * 30 * MINUTE;
        let id = format!("req-{i:02}");
        match i % 8 {
            // Both sides allow; in one of three the callee's record is stored first.
            0 | 1 => {
                log.decision(
                    t,
                    Side::Egress,
                    Effect::Allow,
                    FRONTEND,
                    ORDERS,
                    &["allow-frontend-orders"],
                    &id,
                );
                log.decision(
                    t + 1,
                    Side::Ingress,
                    Effect::Allow,
                    FRONTEND,
                    ORDERS,
                    &["orders-allow-shop"],
                    &id,
                );
            }
            2 => {
                log.decision(
                    t + 1,
                    Side::Ingress,
                    Effect::Allow,
                    CHECKOUT,
                    PAYMENTS,
                    &["payments-allow-checkout"],
                    &id,
                );
                log.decision(
                    t,
                    Side::Egress,
                    Effect::Allow,
                    CHECKOUT,
                    PAYMENTS,
                    &["checkout-egress"],
                    &id,
                );
            }
            // Allowed by the caller's sidecar, denied by the callee's.
            3 => {
                log.decision(
                    t,
                    Side::Egress,
                    Effect::Allow,
                    REPORTER,
                    PAYMENTS,
                    &["batch-egress-any"],
                    &id,
                );
                log.decision(
                    t + 1,
                    Side::Ingress,
                    Effect::Deny,
                    REPORTER,
                    PAYMENTS,
                    &["payments-forbid-batch"],
                    &id,
                );
            }
            // Only the callee's record: no egress allow.
            4 => log.decision(
                t,
                Side::Ingress,
                Effect::Allow,
                REPORTER,
                ORDERS,
                &["orders-allow-reporting"],
                &id,
            ),
            // Denied at egress: nothing permits it.
            5 => log.decision(t, Side::Egress, Effect::Deny, FRONTEND, PAYMENTS, &[], &id),
            // A dry-run policy would deny it at ingress: enforced as an allow.
            6 => {
                log.decision(
                    t,
                    Side::Egress,
                    Effect::Allow,
                    CHECKOUT,
                    ORDERS,
                    &["checkout-egress"],
                    &id,
                );
                log.decision(
                    t + 1,
                    Side::Ingress,
                    Effect::DryRunDeny,
                    CHECKOUT,
                    ORDERS,
                    &["dryrun-orders-lockdown"],
                    &id,
                );
            }
            // A dry-run denial at egress, allowed at ingress; and a denial two policies determined.
            _ => {
                log.decision(
                    t,
                    Side::Egress,
                    Effect::DryRunDeny,
                    CHECKOUT,
                    ORDERS,
                    &["dryrun-egress-tighten"],
                    &id,
                );
                log.decision(
                    t + 1,
                    Side::Ingress,
                    Effect::Allow,
                    CHECKOUT,
                    ORDERS,
                    &["orders-allow-shop"],
                    &id,
                );
                let other = format!("{id}-b");
                log.decision(
                    t + 2,
                    Side::Egress,
                    Effect::Deny,
                    CHECKOUT,
                    PAYMENTS,
                    &["forbid-refunds", "forbid-weekend"],
                    &other,
                );
            }
        }
    }
    // Decisions without a request id.
    log.decision(
        T0 + 3 * HOUR,
        Side::Egress,
        Effect::Allow,
        FRONTEND,
        ORDERS,
        &["allow-frontend-orders"],
        "",
    );
    log.decision(T0 + 4 * HOUR, Side::Ingress, Effect::Deny, FRONTEND, PAYMENTS, &[], "");

    let hosts = [
        (ExternalKind::BlackHole, REPORTER, "exfil.example", 443),
        (ExternalKind::Passthrough, FRONTEND, "api.partner.example", 443),
        (ExternalKind::Allowlisted, CHECKOUT, "api.stripe.example", 443),
        (ExternalKind::BlackHole, FRONTEND, "2001:db8::7", 8443),
        (ExternalKind::Allowlisted, CHECKOUT, "api.stripe.example", 443),
        (ExternalKind::BlackHole, REPORTER, "exfil.example", 443),
        (ExternalKind::Passthrough, REPORTER, "api.partner.example", 443),
    ];
    for i in 0..30_i64 {
        let (kind, workload, host, port) = hosts[(i as usize * 5 + i as usize / 7) % hosts.len()];
        log.external(
            T0 + 10 * MINUTE + i * 40 * MINUTE,
            kind,
            workload,
            host,
            port,
            "by the book",
        );
    }

    let kinds = [
        IdentityKind::Issued,
        IdentityKind::Renewed,
        IdentityKind::Renewed,
        IdentityKind::Revoked,
        IdentityKind::Unrevoked,
    ];
    for i in 0..60_i64 {
        let who = [FRONTEND, CHECKOUT, REPORTER][i as usize % 3];
        log.identity(
            T0 + 5 * MINUTE + i * 20 * MINUTE,
            kinds[i as usize % 5],
            who,
            &format!("{:04x}", 0xa000 + i),
            &format!("reason {i}"),
        );
    }

    for v in 1..=4_u64 {
        log.policy(
            T0 + (v as i64) * 5 * HOUR,
            PolicyOutcome::Accepted,
            v,
            &format!("sha256:{v:064x}"),
            "",
        );
    }
    log.policy(
        T0 + 7 * HOUR,
        PolicyOutcome::Rejected,
        0,
        "",
        "payments.cedar:3:1: unexpected token\n  forbid(principal\n",
    );
    log.policy(
        T0 + 9 * HOUR,
        PolicyOutcome::Rejected,
        0,
        "",
        "\n  orders.cedar: unknown entity type\nmore",
    );

    // On the last instant of the window, then after it.
    log.decision(
        T0 + 24 * HOUR,
        Side::Egress,
        Effect::Deny,
        REPORTER,
        ORDERS,
        &["forbid-late"],
        "last",
    );
    log.decision(
        T0 + 24 * HOUR + 1,
        Side::Egress,
        Effect::Deny,
        REPORTER,
        PAYMENTS,
        &[],
        "late-1",
    );
    log.external(
        T0 + 25 * HOUR,
        ExternalKind::Passthrough,
        FRONTEND,
        "late.example",
        443,
        "too late",
    );
    log.policy(T0 + 26 * HOUR, PolicyOutcome::Accepted, 9, "sha256:late", "");
    log
}

// ---------------------------------------------------------------------------
// Figures

#[test]
fn the_fixture_is_the_size_the_brief_asks_for() {
    let log = day();
    assert!(
        (180..=230).contains(&log.records.len()),
        "{} records",
        log.records.len()
    );
    assert!(log.in_window().len() < log.records.len());
}

#[test]
fn totals_count_the_records_of_the_window_by_kind_side_and_effect() {
    let log = day();
    let report = log.report();
    let in_window = log.in_window();
    assert_eq!(report.totals.records, in_window.len() as u64);
    for kind in EventKind::ALL {
        let expected = in_window.iter().filter(|r| r.record.event.kind() == *kind).count() as u64;
        assert_eq!(report.totals.by_kind[kind], expected, "{kind}");
    }
    assert_eq!(report.totals.by_kind.len(), EventKind::ALL.len());
    for side in Side::ALL {
        for effect in Effect::ALL {
            let expected = log
                .decisions()
                .iter()
                .filter(|(_, _, d)| d.side == *side && d.effect == *effect)
                .count();
            assert_eq!(
                report.totals.decisions[side][effect], expected as u64,
                "{side} {effect}"
            );
        }
    }
    let ids: BTreeSet<&str> = log
        .decisions()
        .iter()
        .map(|(_, _, d)| d.request_id.as_str())
        .filter(|id| !id.is_empty())
        .collect();
    assert_eq!(report.totals.requests, ids.len() as u64);
    for kind in ExternalKind::ALL {
        let expected = in_window
            .iter()
            .filter(|r| matches!(&r.record.event, Event::External(e) if e.kind == *kind))
            .count();
        assert_eq!(report.totals.external[kind], expected as u64, "{kind}");
    }
}

#[test]
fn denials_are_counted_by_edge_highest_first_then_by_name() {
    let log = day();
    let report = log.report();
    let mut expected: BTreeMap<(String, String, Side, Effect), u64> = BTreeMap::new();
    for (_, _, d) in log.decisions() {
        if d.effect != Effect::Allow {
            *expected
                .entry((d.principal.clone(), d.resource.clone(), d.side, d.effect))
                .or_default() += 1;
        }
    }
    let mut expected: Vec<_> = expected.into_iter().collect();
    expected.sort_by(|a, b| b.1.cmp(&a.1).then_with(|| a.0.cmp(&b.0)));
    let actual: Vec<_> = report
        .denials
        .by_edge
        .iter()
        .map(|e| ((e.principal.clone(), e.resource.clone(), e.side, e.effect), e.count))
        .collect();
    assert_eq!(actual, expected);
    assert!(actual.windows(2).all(|w| w[0].1 >= w[1].1));
}

#[test]
fn denials_are_counted_by_each_determining_policy_and_none_is_the_default_deny() {
    let log = day();
    let report = log.report();
    let mut expected: BTreeMap<(String, Side, Effect), u64> = BTreeMap::new();
    for (_, _, d) in log.decisions() {
        if d.effect == Effect::Allow {
            continue;
        }
        let names: Vec<String> = if d.policies.is_empty() {
            vec![DEFAULT_DENY.to_owned()]
        } else {
            d.policies.clone()
        };
        for name in names {
            *expected.entry((name, d.side, d.effect)).or_default() += 1;
        }
    }
    let mut expected: Vec<_> = expected.into_iter().collect();
    expected.sort_by(|a, b| b.1.cmp(&a.1).then_with(|| a.0.cmp(&b.0)));
    let actual: Vec<_> = report
        .denials
        .by_policy
        .iter()
        .map(|p| ((p.policy.clone(), p.side, p.effect), p.count))
        .collect();
    assert_eq!(actual, expected);

    let default = report
        .denials
        .by_policy
        .iter()
        .filter(|p| p.default_deny)
        .collect::<Vec<_>>();
    assert_eq!(default.len(), 2, "egress and ingress default denials");
    assert!(default.iter().all(|p| p.policy == "default deny (no policy permits)"));
    let two_policies = report
        .denials
        .by_policy
        .iter()
        .find(|p| p.policy == "forbid-weekend")
        .unwrap();
    assert_eq!(two_policies.count, 5, "one per denial that named it");
}

#[test]
fn dual_approval_counts_ingress_allows_that_have_an_egress_allow() {
    let log = day();
    let report = log.report();
    let states = request_states(&log);
    let ingress_allowed = states.values().filter(|s| s.ingress_allow).count() as u64;
    let both = states.values().filter(|s| s.ingress_allow && s.egress_allow).count() as u64;
    let dual = &report.dual_approval;
    assert_eq!(dual.ingress_allowed, ingress_allowed);
    assert_eq!(dual.both_allowed, both);
    assert_eq!(dual.missing_egress(), ingress_allowed - both);
    assert_eq!(
        dual.coverage_percent,
        Some(both as f64 * 100.0 / ingress_allowed as f64)
    );
    // The fixture's own arithmetic: 40 requests, 8 patterns.
    assert_eq!((ingress_allowed, both), (30, 25));

    let mut missing: Vec<(u64, &str)> = states
        .iter()
        .filter(|(_, s)| s.ingress_allow && !s.egress_allow)
        .map(|(id, s)| (s.first_seq, *id))
        .collect();
    missing.sort();
    let missing: Vec<String> = missing.into_iter().map(|(_, id)| id.to_owned()).take(20).collect();
    assert_eq!(dual.missing_egress_examples, missing);
    assert_eq!(
        dual.missing_egress_examples,
        ["req-04", "req-12", "req-20", "req-28", "req-36"]
    );
}

#[test]
fn a_dry_run_denial_counts_as_an_allow_for_dual_approval() {
    let log = day();
    let dual = log.report().dual_approval;
    // req-06 (ingress dry-run deny) and req-07 (egress dry-run deny) are covered.
    let states = request_states(&log);
    assert!(states["req-06"].ingress_allow && states["req-06"].egress_allow);
    assert!(states["req-07"].ingress_allow && states["req-07"].egress_allow);
    assert!(!dual
        .missing_egress_examples
        .iter()
        .any(|id| id == "req-06" || id == "req-07"));
}

#[test]
fn requests_allowed_at_egress_and_denied_at_ingress_are_counted_by_edge() {
    let log = day();
    let dual = log.report().dual_approval;
    let states = request_states(&log);
    let expected = states.values().filter(|s| s.egress_allow && s.ingress_deny).count() as u64;
    assert_eq!(dual.egress_allowed_ingress_denied, expected);
    assert_eq!(expected, 5);
    assert_eq!(dual.one_side_denied.len(), 1);
    let edge = &dual.one_side_denied[0];
    assert_eq!(
        (edge.principal.as_str(), edge.resource.as_str(), edge.requests),
        (REPORTER, PAYMENTS, 5)
    );
}

#[test]
fn at_most_20_requests_without_egress_are_listed_the_earliest_first() {
    let mut log = Log::default();
    for i in (0..25_i64).rev() {
        log.decision(
            T0 + HOUR + (25 - i) * MINUTE,
            Side::Ingress,
            Effect::Allow,
            REPORTER,
            ORDERS,
            &[],
            &format!("z-{i:02}"),
        );
    }
    log.decision(
        T0 + 2 * HOUR,
        Side::Ingress,
        Effect::Allow,
        FRONTEND,
        ORDERS,
        &[],
        "covered",
    );
    log.decision(
        T0 + 2 * HOUR,
        Side::Egress,
        Effect::Allow,
        FRONTEND,
        ORDERS,
        &[],
        "covered",
    );
    let dual = log.report().dual_approval;
    assert_eq!((dual.ingress_allowed, dual.both_allowed), (26, 1));
    assert_eq!(dual.missing_egress_examples.len(), DualApproval::EXAMPLES);
    let expected: Vec<String> = (5..25).rev().map(|i| format!("z-{i:02}")).collect();
    assert_eq!(dual.missing_egress_examples, expected);
}

#[test]
fn coverage_is_not_a_number_when_nothing_was_allowed_at_ingress() {
    let mut log = Log::default();
    log.decision(T0 + HOUR, Side::Egress, Effect::Deny, FRONTEND, PAYMENTS, &[], "x");
    let report = log.report();
    assert_eq!(report.dual_approval.coverage_percent, None);
    assert!(report.to_markdown().contains("**n/a**"));
}

#[test]
fn external_traffic_is_listed_blackhole_first_by_workload_and_destination() {
    let log = day();
    let report = log.report();
    let mut expected: BTreeMap<(u8, String, String, u16), u64> = BTreeMap::new();
    for r in log.in_window() {
        if let Event::External(e) = &r.record.event {
            let rank = match e.kind {
                ExternalKind::BlackHole => 0,
                ExternalKind::Passthrough => 1,
                ExternalKind::Allowlisted => 2,
            };
            *expected
                .entry((rank, e.workload.clone(), e.host.clone(), e.port))
                .or_default() += 1;
        }
    }
    let mut expected: Vec<_> = expected.into_iter().collect();
    expected.sort_by(|a, b| a.0 .0.cmp(&b.0 .0).then(b.1.cmp(&a.1)).then_with(|| a.0.cmp(&b.0)));
    let actual: Vec<_> = report
        .external
        .rows
        .iter()
        .map(|r| {
            let rank = match r.kind {
                ExternalKind::BlackHole => 0,
                ExternalKind::Passthrough => 1,
                ExternalKind::Allowlisted => 2,
            };
            ((rank, r.workload.clone(), r.host.clone(), r.port), r.count)
        })
        .collect();
    assert_eq!(actual, expected);
    assert_eq!(
        report.external.rows.first().map(|r| r.kind),
        Some(ExternalKind::BlackHole)
    );
    assert!(!report
        .external
        .rows
        .iter()
        .any(|r| r.host.contains("early") || r.host.contains("late")));
    assert!(report
        .to_csv()
        .contains("external,blackhole,,spiffe://mesh.test/ns/shop/sa/frontend,[2001:db8::7]:8443,,,"));
}

#[test]
fn identity_events_are_counted_by_kind_and_the_last_50_listed_oldest_first() {
    let log = day();
    let report = log.report();
    let events: Vec<(i64, &Identity)> = log
        .in_window()
        .into_iter()
        .filter_map(|r| match &r.record.event {
            Event::Identity(i) => Some((r.record.time_micros, i)),
            _ => None,
        })
        .collect();
    for kind in IdentityKind::ALL {
        let expected = events.iter().filter(|(_, i)| i.kind == *kind).count() as u64;
        assert_eq!(report.identity.by_kind[kind], expected, "{kind}");
    }
    assert_eq!(events.len(), 60);
    let last: Vec<_> = events[events.len() - IdentityEvents::RECENT..]
        .iter()
        .map(|(t, i)| {
            (
                Timestamp(*t),
                i.kind,
                i.spiffe_id.clone(),
                i.serial.clone(),
                i.reason.clone(),
            )
        })
        .collect();
    let actual: Vec<_> = report
        .identity
        .recent
        .iter()
        .map(|e| (e.time, e.kind, e.spiffe_id.clone(), e.serial.clone(), e.reason.clone()))
        .collect();
    assert_eq!(actual, last);
    assert_eq!(report.identity.recent.first().unwrap().reason, "reason 10");
}

#[test]
fn policy_changes_list_every_accepted_version_and_the_first_line_of_each_rejected_edit() {
    let log = day();
    let report = log.report();
    let changes: Vec<(i64, &PolicyChange)> = log
        .in_window()
        .into_iter()
        .filter_map(|r| match &r.record.event {
            Event::Policy(p) => Some((r.record.time_micros, p)),
            _ => None,
        })
        .collect();
    let accepted: Vec<_> = changes
        .iter()
        .filter(|(_, p)| p.outcome == PolicyOutcome::Accepted)
        .map(|(t, p)| (Timestamp(*t), p.version, p.digest.clone()))
        .collect();
    let actual: Vec<_> = report
        .policy
        .accepted
        .iter()
        .map(|a| (a.time, a.version, a.digest.clone()))
        .collect();
    assert_eq!(actual, accepted);
    assert_eq!(report.policy.accepted_total, 4);
    assert_eq!(report.policy.rejected_total, 2);
    let rejected: Vec<_> = report
        .policy
        .rejected
        .iter()
        .map(|r| (r.time, r.detail.as_str()))
        .collect();
    assert_eq!(
        rejected,
        [
            (Timestamp(T0 + 7 * HOUR), "payments.cedar:3:1: unexpected token"),
            (Timestamp(T0 + 9 * HOUR), "orders.cedar: unknown entity type"),
        ]
    );
}

#[test]
fn the_timeline_counts_decisions_per_half_hour_bucket_across_a_day() {
    let log = day();
    let timeline = log.report().timeline;
    let width = 30 * MINUTE;
    assert_eq!(timeline.bucket_micros, width);
    let first = T0.div_euclid(width) * width;
    assert_eq!(
        timeline.buckets.len(),
        49,
        "a day of half hours, the first cut by the window's start"
    );
    assert_eq!(timeline.buckets[0].start, Timestamp(first));
    for (i, bucket) in timeline.buckets.iter().enumerate() {
        assert_eq!(bucket.start, Timestamp(first + i as i64 * width));
        let in_bucket: Vec<_> = log
            .decisions()
            .into_iter()
            .filter(|(_, t, _)| (t - first).div_euclid(width) == i as i64)
            .collect();
        let count = |effect| in_bucket.iter().filter(|(_, _, d)| d.effect == effect).count() as u64;
        assert_eq!(
            (bucket.allow, bucket.deny, bucket.dry_run_deny),
            (count(Effect::Allow), count(Effect::Deny), count(Effect::DryRunDeny)),
            "bucket {i}"
        );
    }
    let total: u64 = timeline.buckets.iter().map(|b| b.allow + b.deny + b.dry_run_deny).sum();
    assert_eq!(total, log.decisions().len() as u64);
}

#[test]
fn records_outside_the_window_are_ignored_but_the_head_is_the_last_record_added() {
    let log = day();
    let report = log.report();
    let last = log.records.last().unwrap();
    assert!(!WINDOW.contains(last.record.time_micros));
    let head = report.head.as_ref().unwrap();
    assert_eq!((head.seq, head.hash.as_str()), (last.seq, to_hex(&last.hash).as_str()));
    let all = report.to_json();
    for outside in [
        "early-1",
        "early.example",
        "too early",
        "late-1",
        "late.example",
        "sha256:late",
    ] {
        assert!(!all.contains(outside), "{outside} is outside the window");
    }
    // Both instants at the window's edges are in it.
    assert!(all.contains("forbid-late"));
    assert!(report.totals.requests > 0 && log.decisions().iter().any(|(_, _, d)| d.request_id == "first"));

    let mut only_outside = Log::default();
    only_outside.decision(T0 - 5, Side::Egress, Effect::Deny, REPORTER, PAYMENTS, &[], "a");
    let report = only_outside.report();
    assert_eq!(report.totals.records, 0);
    assert!(report.denials.by_edge.is_empty());
    assert_eq!(report.head.map(|h| h.seq), Some(1));
}

#[test]
fn the_window_and_database_are_shown_and_the_password_is_not() {
    let report = day().report();
    assert_eq!(report.since.to_string(), "2023-11-14T22:13:20Z");
    assert_eq!(report.until.to_string(), "2023-11-15T22:13:20Z");
    assert_eq!(report.generated_at, Timestamp(GENERATED));
    assert_eq!(
        report.database,
        "postgres://audit@db.internal:5432/audit?sslmode=require"
    );
    for format in ReportFormat::ALL {
        let text = report.render(*format);
        assert!(!text.contains("hunter2"), "{format} leaks the password");
        assert!(text.contains("db.internal:5432"), "{format} names the database");
        assert!(text.contains("2023-11-14T22:13:20Z"), "{format} shows the window");
    }
}

// ---------------------------------------------------------------------------
// The chain's verdict

fn broken() -> Verification {
    Verification {
        records: 120,
        broken: Some(BrokenLink {
            seq: 42,
            record_id: "rec-42".to_owned(),
            sender: "spiffe://mesh.test/ns/shop/sa/frontend".to_owned(),
            problem: "its hash does not match its contents (edited)".to_owned(),
        }),
    }
}

#[test]
fn a_broken_chain_shows_in_every_format() {
    let log = day();
    let report = report_of(&log.records, WINDOW, broken());
    let html = report.to_html();
    assert!(html.contains("Hash chain BROKEN at seq 42"));
    assert!(html.contains(r#"class="chain broken""#));
    assert!(html.contains("its hash does not match its contents (edited)"));
    assert!(html.contains("✗ Broken"));
    let json: serde_json::Value = serde_json::from_str(&report.to_json()).unwrap();
    assert_eq!(json["chain"]["broken"]["seq"], 42);
    assert_eq!(
        json["chain"]["broken"]["problem"],
        "its hash does not match its contents (edited)"
    );
    assert!(report.to_csv().contains(
        "\nchain,broken,,spiffe://mesh.test/ns/shop/sa/frontend,rec-42,,seq 42: its hash does not match its contents (edited),120\n"
    ));
    let md = report.to_markdown();
    assert!(md.contains("**BROKEN** at seq 42"));
    assert!(md.contains("its hash does not match its contents (edited)"));
}

#[test]
fn an_intact_chain_shows_in_every_format() {
    let report = day().report();
    let html = report.to_html();
    assert!(html.contains("Hash chain intact") && html.contains(r#"class="chain intact""#));
    assert!(!html.contains("BROKEN"));
    let json: serde_json::Value = serde_json::from_str(&report.to_json()).unwrap();
    assert!(json["chain"]["broken"].is_null());
    let records = day().records.len();
    assert!(report.to_csv().contains(&format!("\nchain,intact,,,,,,{records}\n")));
    assert!(report.to_markdown().contains("**Intact**"));
}

// ---------------------------------------------------------------------------
// Hostile strings

const SCRIPT: &str = r#"<script>alert("x's")</script>"#;

fn hostile() -> Report {
    let mut log = Log::default();
    let evil_principal = format!("spiffe://mesh.test/ns/x/sa/{SCRIPT}");
    log.decision(
        T0 + HOUR,
        Side::Egress,
        Effect::Deny,
        &evil_principal,
        "a|b\nc",
        &[SCRIPT],
        SCRIPT,
    );
    log.decision(
        T0 + HOUR,
        Side::Ingress,
        Effect::Deny,
        FRONTEND,
        "=HYPERLINK(\"http://evil\")",
        &[],
        "x1",
    );
    log.decision(
        T0 + HOUR,
        Side::Ingress,
        Effect::Allow,
        FRONTEND,
        ORDERS,
        &[],
        "@SUM(1)",
    );
    log.external(T0 + HOUR, ExternalKind::BlackHole, "-2+3", SCRIPT, 443, SCRIPT);
    log.identity(
        T0 + HOUR,
        IdentityKind::Revoked,
        "+cmd",
        "'\"",
        &format!("{SCRIPT}\nsecond | line"),
    );
    log.policy(
        T0 + HOUR,
        PolicyOutcome::Rejected,
        0,
        "",
        &format!("{SCRIPT} in policy | x"),
    );
    let chain = Verification {
        records: 5,
        broken: Some(BrokenLink {
            seq: 3,
            record_id: SCRIPT.to_owned(),
            sender: SCRIPT.to_owned(),
            problem: SCRIPT.to_owned(),
        }),
    };
    let mut builder = ReportBuilder::new(WINDOW);
    for record in &log.records {
        builder.add(record);
    }
    builder.finish(chain, GENERATED, &format!("/var/lib/{SCRIPT}.db"))
}

#[test]
fn html_escapes_every_string_from_records() {
    let html = hostile().to_html();
    assert!(!html.contains("<script"), "a raw <script> tag reached the page");
    assert!(!html.contains(r#"alert("x"#));
    let escaped = "&lt;script&gt;alert(&quot;x&#39;s&quot;)&lt;/script&gt;";
    // Principal, policy, request id, host, reason, identity reason, rejected edit,
    // broken link (id, sender, problem), database: all present, all escaped.
    assert!(html.matches(escaped).count() >= 10, "{}", html.matches(escaped).count());
    assert!(html.contains("&#39;&quot;"), "the serial's quotes are escaped");
}

#[test]
fn csv_defuses_formulas_and_doubles_quotes() {
    let csv = hostile().to_csv();
    assert!(csv.contains(r#""'=HYPERLINK(""http://evil"")""#));
    assert!(csv.contains(",'@SUM(1),") || csv.contains(",'@SUM(1)\n"), "{csv}");
    assert!(csv.contains(",'-2+3,"));
    assert!(csv.contains(",'+cmd,"));
    assert!(csv.contains(r#""<script>alert(""x's"")</script>""#));
    let rows = parse_csv(&csv);
    assert_eq!(
        rows[0],
        ["section", "key", "side", "subject", "object", "time", "detail", "count"]
    );
    assert!(rows.iter().all(|row| row.len() == 8), "every row has 8 cells");
    assert!(
        rows.iter().any(|r| r[0] == "denials_by_edge" && r[4] == "a|b\nc"),
        "a line break stays inside its quoted cell"
    );
    for row in &rows {
        for cell in row {
            assert!(
                !cell.starts_with(['=', '+', '-', '@']),
                "{cell:?} would run as a formula"
            );
        }
    }
}

#[test]
fn markdown_escapes_pipes_html_and_newlines_in_cells() {
    let md = hostile().to_markdown();
    assert!(md.contains(r"a\|b<br>c"));
    assert!(md.contains(r"second \| line"));
    assert!(!md.replace(r"\<", "").contains("<script"), "no raw HTML tag");
    assert!(md.contains(r"\<script\>"));
    // Every row of a table has as many cell separators as the table's header.
    let mut expected = None;
    for line in md.lines() {
        if !line.starts_with('|') {
            expected = None;
            continue;
        }
        let pipes = line.replace(r"\|", "").matches('|').count();
        assert_eq!(*expected.get_or_insert(pipes), pipes, "{line}");
    }
}

// ---------------------------------------------------------------------------
// The formats

#[test]
fn html_is_one_self_contained_file_with_one_svg_per_chart() {
    let html = day().report().to_html();
    assert!(html.starts_with("<!DOCTYPE html>"));
    for external in [
        "http://",
        "https://",
        "<script",
        "<link",
        "<img",
        "<iframe",
        "src=",
        "href=",
        "url(",
        "@import",
        "@font-face",
    ] {
        assert!(!html.contains(external), "the page refers to `{external}`");
    }
    assert_eq!(
        html.matches("<svg").count(),
        3,
        "timeline, denied edges, external destinations"
    );
    assert_eq!(html.matches(r#"role="img""#).count(), 3);
    for id in ["chart-timeline", "chart-denials", "chart-external"] {
        assert!(
            html.contains(&format!(r#"<title id="{id}-title">"#)),
            "{id} has a title"
        );
    }
    assert!(html.contains("@media print"));
    assert!(html.contains("break-inside: avoid"));
}

#[test]
fn an_empty_report_renders_in_every_format_with_its_charts() {
    let report = report_of(&[], WINDOW, intact(0));
    assert_eq!(report.head, None);
    assert_eq!(report.totals.records, 0);
    let html = report.to_html();
    assert_eq!(html.matches("<svg").count(), 3);
    assert!(html.contains("the store is empty"));
    assert!(html.contains("None in this window."));
    for format in ReportFormat::ALL {
        assert!(!report.render(*format).is_empty());
    }
    assert!(serde_json::from_str::<serde_json::Value>(&report.to_json()).is_ok());
}

#[test]
fn json_is_the_report_with_camel_case_keys_and_rfc3339_times() {
    let report = day().report();
    let json: serde_json::Value = serde_json::from_str(&report.to_json()).unwrap();
    assert_eq!(json["since"], "2023-11-14T22:13:20Z");
    assert_eq!(json["generatedAt"], "2023-11-15T22:18:20Z");
    assert_eq!(
        json["totals"]["byKind"]["decision"],
        report.totals.by_kind[&EventKind::Decision]
    );
    assert_eq!(json["totals"]["decisions"]["ingress"]["dry_run_deny"], 5);
    assert_eq!(json["dualApproval"]["ingressAllowed"], 30);
    assert_eq!(json["external"]["rows"][0]["kind"], "blackhole");
    assert_eq!(json["timeline"]["buckets"].as_array().unwrap().len(), 49);
    assert_eq!(json["policy"]["rejected"][0]["time"], "2023-11-15T05:13:20Z");
}

#[test]
fn render_prints_the_format_asked_for() {
    let report = day().report();
    assert_eq!(report.render(ReportFormat::Html), report.to_html());
    assert_eq!(report.render(ReportFormat::Json), report.to_json());
    assert_eq!(report.render(ReportFormat::Csv), report.to_csv());
    assert_eq!(report.render(ReportFormat::Markdown), report.to_markdown());
    assert_eq!("md".parse::<ReportFormat>(), Ok(ReportFormat::Markdown));
}

// ---------------------------------------------------------------------------
// Helpers computing the expected figures

#[derive(Default, Debug)]
struct RequestState {
    first_seq: u64,
    egress_allow: bool,
    ingress_allow: bool,
    ingress_deny: bool,
}

fn request_states(log: &Log) -> HashMap<&str, RequestState> {
    let mut states: HashMap<&str, RequestState> = HashMap::new();
    for (seq, _, d) in log.decisions() {
        if d.request_id.is_empty() {
            continue;
        }
        let state = states.entry(d.request_id.as_str()).or_insert(RequestState {
            first_seq: seq,
            ..Default::default()
        });
        let allowed = d.effect != Effect::Deny;
        match d.side {
            Side::Egress => state.egress_allow |= allowed,
            Side::Ingress if allowed => state.ingress_allow = true,
            Side::Ingress => state.ingress_deny = true,
        }
    }
    states
}

/// RFC 4180, as a spreadsheet reads it.
fn parse_csv(text: &str) -> Vec<Vec<String>> {
    let mut rows = Vec::new();
    let mut row = Vec::new();
    let mut cell = String::new();
    let mut quoted = false;
    let mut chars = text.chars().peekable();
    while let Some(c) = chars.next() {
        match (c, quoted) {
            ('"', true) if chars.peek() == Some(&'"') => {
                chars.next();
                cell.push('"');
            }
            ('"', true) => quoted = false,
            ('"', false) if cell.is_empty() => quoted = true,
            (',', false) => row.push(std::mem::take(&mut cell)),
            ('\n', false) => {
                row.push(std::mem::take(&mut cell));
                rows.push(std::mem::take(&mut row));
            }
            _ => cell.push(c),
        }
    }
    assert!(
        !quoted && cell.is_empty() && row.is_empty(),
        "the CSV ends with a complete row"
    );
    rows
}
