//! [`ReportBuilder`]: one pass over the store, in sequence order, counting as it
//! goes. Memory grows with the number of distinct names and request ids, not with
//! the number of records: tables hold counts keyed by interned names, each request
//! id a few flags, and the lists (identity events, policy changes) keep only their
//! last entries.

mod names;
mod requests;
mod timeline;

use std::collections::{BTreeMap, HashMap, VecDeque};

use crate::chain::Verification;
use crate::record::{
    to_hex, Decision, Effect, Event, EventKind, External, ExternalKind, Hash, Identity, IdentityKind, PolicyChange,
    PolicyOutcome, Side, StoredRecord,
};

use super::model::{
    AcceptedVersion, Denials, EdgeDenials, ExternalRow, ExternalTraffic, Head, IdentityEvent, IdentityEvents,
    PolicyChanges, PolicyDenials, RejectedEdit, Report, Timestamp, Totals, Window, DEFAULT_DENY,
};
use super::redact::display_database;
use super::text::{external_rank, first_line};
use names::{Name, Names};
use requests::Requests;
use timeline::TimelineCounter;

/// Builds a [`Report`] from the records of a store, one at a time.
///
/// ```
/// use palisade_audit::chain::Verification;
/// use palisade_audit::report::{ReportBuilder, Window};
///
/// let mut builder = ReportBuilder::new(Window { since_micros: 0, until_micros: 86_400_000_000 });
/// # let records: Vec<palisade_audit::record::StoredRecord> = Vec::new();
/// for record in &records {
///     builder.add(record);
/// }
/// let verification = Verification { records: 0, broken: None };
/// let report = builder.finish(verification, 86_400_000_000, "/var/lib/palisade/audit.db");
/// assert_eq!(report.totals.records, 0);
/// ```
#[derive(Debug)]
pub struct ReportBuilder {
    window: Window,
    /// The seq and hash of the last record added (in hex only at the end: it is
    /// replaced for every record).
    head: Option<(u64, Hash)>,
    names: Names,
    records: u64,
    by_kind: BTreeMap<EventKind, u64>,
    decisions: BTreeMap<(Side, Effect), u64>,
    edge_denials: HashMap<(Name, Name, Side, Effect), u64>,
    /// `None` for a denial no policy determined.
    policy_denials: HashMap<(Option<Name>, Side, Effect), u64>,
    requests: Requests,
    external: HashMap<(ExternalKind, Name, Name, u16), u64>,
    identity_by_kind: BTreeMap<IdentityKind, u64>,
    identity_recent: VecDeque<IdentityEvent>,
    accepted_total: u64,
    rejected_total: u64,
    accepted: VecDeque<AcceptedVersion>,
    rejected: VecDeque<RejectedEdit>,
    timeline: TimelineCounter,
}

impl ReportBuilder {
    /// A builder for the records of `window`.
    pub fn new(window: Window) -> Self {
        Self {
            window,
            head: None,
            names: Names::default(),
            records: 0,
            by_kind: BTreeMap::new(),
            decisions: BTreeMap::new(),
            edge_denials: HashMap::new(),
            policy_denials: HashMap::new(),
            requests: Requests::default(),
            external: HashMap::new(),
            identity_by_kind: BTreeMap::new(),
            identity_recent: VecDeque::with_capacity(IdentityEvents::RECENT),
            accepted_total: 0,
            rejected_total: 0,
            accepted: VecDeque::new(),
            rejected: VecDeque::new(),
            timeline: TimelineCounter::new(window),
        }
    }

    /// Counts one record. Call it for every record of the store in sequence order:
    /// the last one given is the report's head, and records outside the window are
    /// otherwise ignored.
    pub fn add(&mut self, stored: &StoredRecord) {
        self.head = Some((stored.seq, stored.hash));
        let record = &stored.record;
        if !self.window.contains(record.time_micros) {
            return;
        }
        self.records += 1;
        *self.by_kind.entry(record.event.kind()).or_default() += 1;
        match &record.event {
            Event::Decision(decision) => self.add_decision(stored.seq, record.time_micros, decision),
            Event::External(external) => self.add_external(external),
            Event::Identity(identity) => self.add_identity(record.time_micros, identity),
            Event::Policy(change) => self.add_policy(record.time_micros, change),
        }
    }

    fn add_decision(&mut self, seq: u64, time_micros: i64, decision: &Decision) {
        *self.decisions.entry((decision.side, decision.effect)).or_default() += 1;
        self.timeline.add(time_micros, decision.effect);
        self.requests.add(seq, decision, &mut self.names);
        if decision.effect == Effect::Allow {
            return;
        }
        let edge = (
            self.names.intern(&decision.principal),
            self.names.intern(&decision.resource),
        );
        *self
            .edge_denials
            .entry((edge.0, edge.1, decision.side, decision.effect))
            .or_default() += 1;
        if decision.policies.is_empty() {
            *self
                .policy_denials
                .entry((None, decision.side, decision.effect))
                .or_default() += 1;
        }
        for policy in &decision.policies {
            let policy = Some(self.names.intern(policy));
            *self
                .policy_denials
                .entry((policy, decision.side, decision.effect))
                .or_default() += 1;
        }
    }

    fn add_external(&mut self, external: &External) {
        let workload = self.names.intern(&external.workload);
        let host = self.names.intern(&external.host);
        *self
            .external
            .entry((external.kind, workload, host, external.port))
            .or_default() += 1;
    }

    fn add_identity(&mut self, time_micros: i64, identity: &Identity) {
        *self.identity_by_kind.entry(identity.kind).or_default() += 1;
        keep_last(
            &mut self.identity_recent,
            IdentityEvents::RECENT,
            IdentityEvent {
                time: Timestamp(time_micros),
                kind: identity.kind,
                spiffe_id: identity.spiffe_id.clone(),
                serial: identity.serial.clone(),
                reason: identity.reason.clone(),
            },
        );
    }

    fn add_policy(&mut self, time_micros: i64, change: &PolicyChange) {
        let time = Timestamp(time_micros);
        match change.outcome {
            PolicyOutcome::Accepted => {
                self.accepted_total += 1;
                let version = AcceptedVersion {
                    time,
                    version: change.version,
                    digest: change.digest.clone(),
                };
                keep_last(&mut self.accepted, PolicyChanges::KEPT, version);
            }
            PolicyOutcome::Rejected => {
                self.rejected_total += 1;
                let edit = RejectedEdit {
                    time,
                    detail: first_line(&change.detail).to_owned(),
                };
                keep_last(&mut self.rejected, PolicyChanges::KEPT, edit);
            }
        }
    }

    fn totals(&self) -> Totals {
        let decisions = |side: Side| {
            let count = |effect: Effect| self.decisions.get(&(side, effect)).copied().unwrap_or(0);
            Effect::ALL.iter().map(|effect| (*effect, count(*effect))).collect()
        };
        let external = |kind: ExternalKind| {
            self.external
                .iter()
                .filter(|(key, _)| key.0 == kind)
                .map(|(_, n)| n)
                .sum()
        };
        Totals {
            records: self.records,
            by_kind: every(EventKind::ALL, &self.by_kind),
            decisions: Side::ALL.iter().map(|side| (*side, decisions(*side))).collect(),
            requests: self.requests.len(),
            external: ExternalKind::ALL.iter().map(|kind| (*kind, external(*kind))).collect(),
        }
    }

    /// The report: every table sorted, `database` shown without its password.
    pub fn finish(self, chain: Verification, generated_at_micros: i64, database: &str) -> Report {
        let names = &self.names;
        Report {
            since: Timestamp(self.window.since_micros),
            until: Timestamp(self.window.until_micros),
            generated_at: Timestamp(generated_at_micros),
            database: display_database(database),
            head: self.head.map(|(seq, hash)| Head {
                seq,
                hash: to_hex(&hash),
            }),
            totals: self.totals(),
            denials: Denials {
                by_edge: edge_rows(self.edge_denials, names),
                by_policy: policy_rows(self.policy_denials, names),
            },
            dual_approval: self.requests.finish(names),
            external: ExternalTraffic {
                rows: external_rows(self.external, names),
            },
            identity: IdentityEvents {
                by_kind: every(IdentityKind::ALL, &self.identity_by_kind),
                recent: self.identity_recent.into(),
            },
            policy: PolicyChanges {
                accepted_total: self.accepted_total,
                rejected_total: self.rejected_total,
                accepted: self.accepted.into(),
                rejected: self.rejected.into(),
            },
            timeline: self.timeline.finish(),
            chain,
        }
    }
}

/// Pushes `item`, dropping the oldest entry beyond `max`.
fn keep_last<T>(list: &mut VecDeque<T>, max: usize, item: T) {
    if list.len() >= max {
        list.pop_front();
    }
    list.push_back(item);
}

/// A count for every key, zeros included.
fn every<K: Ord + Copy>(keys: &[K], counts: &BTreeMap<K, u64>) -> BTreeMap<K, u64> {
    keys.iter()
        .map(|key| (*key, counts.get(key).copied().unwrap_or(0)))
        .collect()
}

fn edge_rows(counts: HashMap<(Name, Name, Side, Effect), u64>, names: &Names) -> Vec<EdgeDenials> {
    let mut rows: Vec<EdgeDenials> = counts
        .into_iter()
        .map(|((principal, resource, side, effect), count)| EdgeDenials {
            principal: names.name(principal).to_owned(),
            resource: names.name(resource).to_owned(),
            side,
            effect,
            count,
        })
        .collect();
    rows.sort_by(|a, b| {
        (b.count, &a.principal, &a.resource, a.side, a.effect).cmp(&(
            a.count,
            &b.principal,
            &b.resource,
            b.side,
            b.effect,
        ))
    });
    rows
}

fn policy_rows(counts: HashMap<(Option<Name>, Side, Effect), u64>, names: &Names) -> Vec<PolicyDenials> {
    let mut rows: Vec<PolicyDenials> = counts
        .into_iter()
        .map(|((policy, side, effect), count)| PolicyDenials {
            policy: policy.map_or(DEFAULT_DENY, |policy| names.name(policy)).to_owned(),
            default_deny: policy.is_none(),
            side,
            effect,
            count,
        })
        .collect();
    rows.sort_by(|a, b| {
        (b.count, &a.policy, a.default_deny, a.side, a.effect).cmp(&(
            a.count,
            &b.policy,
            b.default_deny,
            b.side,
            b.effect,
        ))
    });
    rows
}

fn external_rows(counts: HashMap<(ExternalKind, Name, Name, u16), u64>, names: &Names) -> Vec<ExternalRow> {
    let mut rows: Vec<ExternalRow> = counts
        .into_iter()
        .map(|((kind, workload, host, port), count)| ExternalRow {
            kind,
            workload: names.name(workload).to_owned(),
            host: names.name(host).to_owned(),
            port,
            count,
        })
        .collect();
    rows.sort_by(|a, b| {
        (external_rank(a.kind), b.count, &a.workload, &a.host, a.port).cmp(&(
            external_rank(b.kind),
            a.count,
            &b.workload,
            &b.host,
            b.port,
        ))
    });
    rows
}
