//! The figures of one report, as plain data: what [`super::ReportBuilder`] computes
//! and every renderer reads. No I/O and no formatting decisions live here, except
//! that times serialize as RFC 3339 (see [`Timestamp`]).
//!
//! Rows are sorted once, when the builder finishes, so every format lists them in
//! the same order.

use std::collections::BTreeMap;
use std::fmt;

use serde::Serialize;

use crate::chain::Verification;
use crate::record::{Effect, EventKind, ExternalKind, IdentityKind, Side};

/// The label of a denial that no policy determined: nothing permitted the request.
pub const DEFAULT_DENY: &str = "default deny (no policy permits)";

/// The time range a report covers, in microseconds since the epoch, both ends
/// included. A record is in the window when its own time (the sender's clock,
/// [`crate::record::Record::time_micros`]) is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Window {
    /// The first microsecond of the window.
    pub since_micros: i64,
    /// The last microsecond of the window.
    pub until_micros: i64,
}

impl Window {
    /// Whether a time falls in the window.
    pub fn contains(&self, time_micros: i64) -> bool {
        (self.since_micros..=self.until_micros).contains(&time_micros)
    }
}

/// A time, in microseconds since the epoch; displayed and serialized as RFC 3339
/// UTC with whole seconds (`2025-03-01T12:00:00Z`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Timestamp(pub i64);

impl fmt::Display for Timestamp {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&super::text::rfc3339(self.0))
    }
}

impl Serialize for Timestamp {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_str(self)
    }
}

/// A compliance report: every figure of every section.
#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Report {
    /// The first time of the window.
    pub since: Timestamp,
    /// The last time of the window.
    pub until: Timestamp,
    /// When the report was made.
    pub generated_at: Timestamp,
    /// Where the records came from, without any password.
    pub database: String,
    /// The last record of the store, when it had any.
    pub head: Option<Head>,
    /// Records, decisions, requests and external events, counted.
    pub totals: Totals,
    /// Denials by edge and by determining policy.
    pub denials: Denials,
    /// Requests allowed by both sides, and by one only.
    pub dual_approval: DualApproval,
    /// External traffic by kind, workload and destination.
    pub external: ExternalTraffic,
    /// CA events.
    pub identity: IdentityEvents,
    /// Policy versions published and edits rejected.
    pub policy: PolicyChanges,
    /// Decisions over the window, for the chart.
    pub timeline: Timeline,
    /// The verification of the whole chain (not only the window).
    pub chain: Verification,
}

/// The last record of the store.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Head {
    /// Its sequence number.
    pub seq: u64,
    /// Lower-case hex of its hash.
    pub hash: String,
}

/// Counts over every record of the window. Every map holds every key, zeros
/// included, in the enum's declaration order.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Totals {
    /// Records in the window.
    pub records: u64,
    /// Records by kind.
    pub by_kind: BTreeMap<EventKind, u64>,
    /// Decisions by the side that made them, then by effect.
    pub decisions: BTreeMap<Side, BTreeMap<Effect, u64>>,
    /// Distinct request ids among the decisions (decisions without one are not
    /// counted here).
    pub requests: u64,
    /// External events by kind.
    pub external: BTreeMap<ExternalKind, u64>,
}

impl Totals {
    /// Decisions of one effect, both sides together.
    pub fn decisions_with(&self, effect: Effect) -> u64 {
        self.decisions
            .values()
            .filter_map(|by_effect| by_effect.get(&effect))
            .sum()
    }

    /// External events of one kind.
    pub fn external_of(&self, kind: ExternalKind) -> u64 {
        self.external.get(&kind).copied().unwrap_or(0)
    }
}

/// Denials and dry-run denials, by edge and by the policy that determined them.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Denials {
    /// By count, highest first, then by principal, resource, side and effect.
    pub by_edge: Vec<EdgeDenials>,
    /// By count, highest first, then by policy, side and effect.
    pub by_policy: Vec<PolicyDenials>,
}

/// The denials of one edge at one side.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct EdgeDenials {
    /// The caller's SPIFFE ID.
    pub principal: String,
    /// The destination: a service id or `HOST:PORT`.
    pub resource: String,
    /// The side that denied.
    pub side: Side,
    /// [`Effect::Deny`] or [`Effect::DryRunDeny`].
    pub effect: Effect,
    /// Decisions.
    pub count: u64,
}

/// The denials one policy determined at one side. A denial determined by several
/// policies counts once for each.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct PolicyDenials {
    /// The policy's `@id`, or [`DEFAULT_DENY`].
    pub policy: String,
    /// True when no policy determined the denial.
    pub default_deny: bool,
    /// The side that denied.
    pub side: Side,
    /// [`Effect::Deny`] or [`Effect::DryRunDeny`].
    pub effect: Effect,
    /// Decisions (a decision naming two policies counts for both).
    pub count: u64,
}

/// Whether both sidecars approved the requests the callee let through.
///
/// A side *allowed* a request when its decision was [`Effect::Allow`] or
/// [`Effect::DryRunDeny`] (a dry-run denial is enforced as an allow).
#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct DualApproval {
    /// Request ids with an ingress allow.
    pub ingress_allowed: u64,
    /// Of those, the ones with an egress allow too.
    pub both_allowed: u64,
    /// `100 × both_allowed / ingress_allowed`; `None` when no request was allowed
    /// at ingress.
    pub coverage_percent: Option<f64>,
    /// Up to [`DualApproval::EXAMPLES`] request ids allowed at ingress without an
    /// egress allow, the earliest first.
    pub missing_egress_examples: Vec<String>,
    /// Request ids allowed at egress and denied at ingress: one side said no.
    pub egress_allowed_ingress_denied: u64,
    /// Those requests by edge (as the ingress denial names it), highest first.
    pub one_side_denied: Vec<EdgeRequests>,
}

impl DualApproval {
    /// How many request ids `missing_egress_examples` lists at most.
    pub const EXAMPLES: usize = 20;

    /// Request ids allowed at ingress without an egress allow.
    pub fn missing_egress(&self) -> u64 {
        self.ingress_allowed.saturating_sub(self.both_allowed)
    }
}

/// A number of requests on one edge.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct EdgeRequests {
    /// The caller's SPIFFE ID.
    pub principal: String,
    /// The destination the ingress denial names.
    pub resource: String,
    /// Request ids.
    pub requests: u64,
}

/// Traffic to destinations outside the mesh (totals are in [`Totals::external`]).
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct ExternalTraffic {
    /// Black-holed first, then passthrough, then allowlisted; within a kind by
    /// count, highest first, then by workload, host and port.
    pub rows: Vec<ExternalRow>,
}

/// The events of one kind from one workload to one destination.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct ExternalRow {
    /// What happened to the traffic.
    pub kind: ExternalKind,
    /// The calling workload's SPIFFE ID.
    pub workload: String,
    /// The destination host (a name or an address).
    pub host: String,
    /// The destination port.
    pub port: u16,
    /// Events.
    pub count: u64,
}

/// CA events.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct IdentityEvents {
    /// Every kind, zeros included.
    pub by_kind: BTreeMap<IdentityKind, u64>,
    /// The last [`IdentityEvents::RECENT`] events of the window, oldest first.
    pub recent: Vec<IdentityEvent>,
}

impl IdentityEvents {
    /// How many events `recent` keeps.
    pub const RECENT: usize = 50;
}

/// One CA event.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct IdentityEvent {
    /// When the CA did it (the record's time).
    pub time: Timestamp,
    /// What the CA did.
    pub kind: IdentityKind,
    /// The identity concerned.
    pub spiffe_id: String,
    /// The certificate's hex serial (empty when a revocation names an ID).
    pub serial: String,
    /// Why, in the CA's words.
    pub reason: String,
}

/// Policy versions published and edits refused. The lists keep the last
/// [`PolicyChanges::KEPT`] of each, oldest first; the totals count them all.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct PolicyChanges {
    /// Versions published in the window.
    pub accepted_total: u64,
    /// Edits rejected in the window.
    pub rejected_total: u64,
    /// The last published versions, oldest first.
    pub accepted: Vec<AcceptedVersion>,
    /// The last rejected edits, oldest first.
    pub rejected: Vec<RejectedEdit>,
}

impl PolicyChanges {
    /// How many entries each list keeps.
    pub const KEPT: usize = 1_000;
}

/// A published policy version.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct AcceptedVersion {
    /// When it was published.
    pub time: Timestamp,
    /// The version number.
    pub version: u64,
    /// The bundle digest (`sha256:…`).
    pub digest: String,
}

/// A refused policy edit.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct RejectedEdit {
    /// When it was rejected.
    pub time: Timestamp,
    /// The first non-blank line of its diagnostics.
    pub detail: String,
}

/// Decisions per time bucket. Buckets are `bucket_micros` wide and aligned to
/// multiples of it since the epoch, so the first and last may reach outside the
/// window (they count only records inside it).
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Timeline {
    /// The width of every bucket, in microseconds.
    pub bucket_micros: i64,
    /// The buckets, oldest first.
    pub buckets: Vec<TimeBucket>,
}

/// The decisions of one bucket, both sides together.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct TimeBucket {
    /// The first microsecond of the bucket.
    pub start: Timestamp,
    /// Allowed decisions.
    pub allow: u64,
    /// Denied decisions.
    pub deny: u64,
    /// Decisions a dry-run policy would have denied.
    pub dry_run_deny: u64,
}
