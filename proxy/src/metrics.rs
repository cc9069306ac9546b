//! Prometheus counters and gauges of one sidecar, rendered in the text format.
//!
//! Recording a request takes a read lock and an atomic add when its label set was
//! seen before (always, after warm-up: the labels come from the registry), and
//! allocates only the first time a label set appears.
//!
//! Label values come from the registry and from verified identities, never from
//! what a peer sends; still, a family holds at most [`MAX_SERIES`] label sets, and
//! counts anything beyond into one overflow series (`source="overflow"`), so no
//! caller can grow the page without bound.
//!
//! Requests for destinations outside the mesh count under the destination
//! `external` in `palisade_requests_total` (forwarded through Passthrough with the
//! decision `passthrough`); their host names, which the app chooses, go only into
//! `palisade_proxy_external_total{kind, host}`, capped the same way.

use std::collections::HashMap;
use std::fmt::Write as _;
use std::hash::BuildHasher;
use std::sync::atomic::{AtomicI64, AtomicU64, AtomicUsize, Ordering};
use std::sync::{PoisonError, RwLock};

use palisade_authz::Direction;

use crate::request::respond::side_name;

/// Most label sets one family holds; later ones count into the overflow series.
pub const MAX_SERIES: usize = 10_000;

/// Every label value of the overflow series.
const OVERFLOW: &str = "overflow";

/// One request's labels.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct RequestLabels<'a> {
    /// The caller's SPIFFE ID.
    pub source: &'a str,
    /// The destination service (`ns/name`) or external host.
    pub destination: &'a str,
    pub side: Direction,
    /// `allow`, `deny`, or a refusal's label (`bad_request`, …).
    pub decision: &'a str,
    pub status: u16,
}

#[derive(Debug)]
struct OwnedLabels {
    source: Box<str>,
    destination: Box<str>,
    side: Direction,
    decision: Box<str>,
    status: u16,
}

impl OwnedLabels {
    fn new(l: &RequestLabels<'_>) -> Self {
        Self {
            source: l.source.into(),
            destination: l.destination.into(),
            side: l.side,
            decision: l.decision.into(),
            status: l.status,
        }
    }

    fn matches(&self, l: &RequestLabels<'_>) -> bool {
        *self.source == *l.source
            && *self.destination == *l.destination
            && self.side == l.side
            && *self.decision == *l.decision
            && self.status == l.status
    }
}

/// One external event's labels: `allowlisted`, `blackhole` or `passthrough`, and
/// the canonical host.
#[derive(Debug)]
struct ExternalLabels {
    kind: &'static str,
    host: Box<str>,
}

/// A labelled counter family keyed by a hash of its labels.
#[derive(Debug)]
struct Family<L> {
    hasher: std::hash::RandomState,
    series: RwLock<HashMap<u64, Vec<(L, AtomicU64)>>>,
    /// How many label sets `series` holds.
    len: AtomicUsize,
}

impl<L> Default for Family<L> {
    fn default() -> Self {
        Self {
            hasher: std::hash::RandomState::new(),
            series: RwLock::default(),
            len: AtomicUsize::new(0),
        }
    }
}

/// Every metric of a sidecar.
#[derive(Debug, Default)]
pub struct Metrics {
    requests: Family<OwnedLabels>,
    handshake_failures: Family<Box<str>>,
    external: Family<ExternalLabels>,
    svid_expiry: AtomicI64,
    snapshot_version: AtomicU64,
    revocation_version: AtomicU64,
    revoked_connections_closed: AtomicU64,
    expired_connections_closed: AtomicU64,
}

impl Metrics {
    /// Counts one request; into the overflow series once [`MAX_SERIES`] label sets
    /// are held.
    pub fn request(&self, labels: &RequestLabels<'_>) {
        let counted = self
            .requests
            .add(MAX_SERIES, labels, |l| l.matches(labels), || OwnedLabels::new(labels));
        if !counted {
            let overflow = RequestLabels {
                source: OVERFLOW,
                destination: OVERFLOW,
                side: labels.side,
                decision: OVERFLOW,
                status: 0,
            };
            // One overflow series per side: room for them beyond the cap.
            self.requests.add(
                MAX_SERIES.saturating_add(2),
                &overflow,
                |l| l.matches(&overflow),
                || OwnedLabels::new(&overflow),
            );
        }
    }

    /// Counts one failed TLS handshake, by reason (`expired`, `revoked`, …).
    pub fn handshake_failure(&self, reason: &str) {
        let family = &self.handshake_failures;
        if !family.add(MAX_SERIES, reason, |r| &**r == reason, || reason.into()) {
            family.add(
                MAX_SERIES.saturating_add(1),
                OVERFLOW,
                |r| &**r == OVERFLOW,
                || OVERFLOW.into(),
            );
        }
    }

    /// Counts one request or tunnel for an external host, by kind (`allowlisted`,
    /// `blackhole`, `passthrough`) and host; into `host="overflow"` once
    /// [`MAX_SERIES`] label sets are held.
    pub fn external(&self, kind: &'static str, host: &str) {
        let family = &self.external;
        let own = || ExternalLabels {
            kind,
            host: host.into(),
        };
        if !family.add(MAX_SERIES, &(kind, host), |l| l.kind == kind && *l.host == *host, own) {
            // One overflow series per kind: room for them beyond the cap.
            family.add(
                MAX_SERIES.saturating_add(3),
                &(kind, OVERFLOW),
                |l| l.kind == kind && &*l.host == OVERFLOW,
                || ExternalLabels {
                    kind,
                    host: OVERFLOW.into(),
                },
            );
        }
    }

    /// The number of external events counted with this kind and host.
    pub fn external_count(&self, kind: &str, host: &str) -> u64 {
        let hash = self.external.hasher.hash_one((kind, host));
        self.external
            .read()
            .get(&hash)
            .and_then(|series| series.iter().find(|(l, _)| l.kind == kind && *l.host == *host))
            .map_or(0, |(_, count)| count.load(Ordering::Relaxed))
    }

    /// The current SVID's expiry, in Unix seconds.
    pub fn set_svid_expiry(&self, unix_seconds: i64) {
        self.svid_expiry.store(unix_seconds, Ordering::Relaxed);
    }

    /// The snapshot version in force.
    pub fn set_snapshot_version(&self, version: u64) {
        self.snapshot_version.store(version, Ordering::Relaxed);
    }

    /// The revocation list version in force.
    pub fn set_revocation_version(&self, version: u64) {
        self.revocation_version.store(version, Ordering::Relaxed);
    }

    /// Counts connections cut because their peer was revoked.
    pub fn revoked_connections_closed(&self, n: usize) {
        let n = u64::try_from(n).unwrap_or(u64::MAX);
        self.revoked_connections_closed.fetch_add(n, Ordering::Relaxed);
    }

    /// Counts connections cut because their peer's certificate expired.
    pub fn expired_connections_closed(&self, n: usize) {
        let n = u64::try_from(n).unwrap_or(u64::MAX);
        self.expired_connections_closed.fetch_add(n, Ordering::Relaxed);
    }

    /// The number of requests counted with exactly these labels.
    pub fn request_count(&self, labels: &RequestLabels<'_>) -> u64 {
        let hash = self.requests.hasher.hash_one(labels);
        self.requests
            .read()
            .get(&hash)
            .and_then(|series| series.iter().find(|(l, _)| l.matches(labels)))
            .map_or(0, |(_, count)| count.load(Ordering::Relaxed))
    }

    /// Everything, in the Prometheus text exposition format.
    pub fn render(&self) -> String {
        let mut out = String::new();
        out.push_str(
            "# HELP palisade_requests_total Requests seen, by caller, destination, side, decision and status.\n",
        );
        out.push_str("# TYPE palisade_requests_total counter\n");
        for (l, count) in self.requests.read().values().flatten() {
            let _ = writeln!(
                out,
                "palisade_requests_total{{source=\"{}\",destination=\"{}\",side=\"{}\",decision=\"{}\",status=\"{}\"}} {}",
                escape(&l.source),
                escape(&l.destination),
                side_name(l.side),
                escape(&l.decision),
                l.status,
                count.load(Ordering::Relaxed)
            );
        }
        out.push_str("# HELP palisade_tls_handshake_failures_total Refused or failed TLS handshakes, by reason.\n");
        out.push_str("# TYPE palisade_tls_handshake_failures_total counter\n");
        for (reason, count) in self.handshake_failures.read().values().flatten() {
            let _ = writeln!(
                out,
                "palisade_tls_handshake_failures_total{{reason=\"{}\"}} {}",
                escape(reason),
                count.load(Ordering::Relaxed)
            );
        }
        out.push_str(
            "# HELP palisade_proxy_external_total Requests and tunnels for hosts outside the mesh, by kind and host.\n",
        );
        out.push_str("# TYPE palisade_proxy_external_total counter\n");
        for (l, count) in self.external.read().values().flatten() {
            let _ = writeln!(
                out,
                "palisade_proxy_external_total{{kind=\"{}\",host=\"{}\"}} {}",
                l.kind,
                escape(&l.host),
                count.load(Ordering::Relaxed)
            );
        }
        let gauges = [
            (
                "palisade_svid_expiry_timestamp_seconds",
                "gauge",
                "When the current SVID expires (Unix seconds).",
                self.svid_expiry.load(Ordering::Relaxed).to_string(),
            ),
            (
                "palisade_policy_snapshot_version",
                "gauge",
                "The policy snapshot version in force (0: none yet).",
                self.snapshot_version.load(Ordering::Relaxed).to_string(),
            ),
            (
                "palisade_revocation_list_version",
                "gauge",
                "The revocation list version in force.",
                self.revocation_version.load(Ordering::Relaxed).to_string(),
            ),
            (
                "palisade_revoked_connections_closed_total",
                "counter",
                "Live connections cut because their peer was revoked.",
                self.revoked_connections_closed.load(Ordering::Relaxed).to_string(),
            ),
            (
                "palisade_expired_connections_closed_total",
                "counter",
                "Live connections cut because their peer's certificate expired.",
                self.expired_connections_closed.load(Ordering::Relaxed).to_string(),
            ),
        ];
        for (name, kind, help, value) in gauges {
            let _ = writeln!(out, "# HELP {name} {help}\n# TYPE {name} {kind}\n{name} {value}");
        }
        out
    }
}

impl<L> Family<L> {
    /// Adds one to the series `matches` finds, first made by `own` unless the
    /// family holds `cap` series already; false when it was not counted.
    fn add<K: std::hash::Hash + ?Sized>(
        &self,
        cap: usize,
        key: &K,
        matches: impl Fn(&L) -> bool,
        own: impl FnOnce() -> L,
    ) -> bool {
        let hash = self.hasher.hash_one(key);
        if let Some(series) = self.read().get(&hash) {
            if let Some((_, count)) = series.iter().find(|(l, _)| matches(l)) {
                count.fetch_add(1, Ordering::Relaxed);
                return true;
            }
        }
        let mut all = self.write();
        if let Some((_, count)) = all
            .get(&hash)
            .and_then(|series| series.iter().find(|(l, _)| matches(l)))
        {
            count.fetch_add(1, Ordering::Relaxed);
            return true;
        }
        if self.len.load(Ordering::Relaxed) >= cap {
            return false;
        }
        all.entry(hash).or_default().push((own(), AtomicU64::new(1)));
        self.len.fetch_add(1, Ordering::Relaxed);
        true
    }

    /// How many label sets the family holds.
    #[cfg(test)]
    fn len(&self) -> usize {
        self.len.load(Ordering::Relaxed)
    }

    fn read(&self) -> std::sync::RwLockReadGuard<'_, HashMap<u64, Vec<(L, AtomicU64)>>> {
        self.series.read().unwrap_or_else(PoisonError::into_inner)
    }

    fn write(&self) -> std::sync::RwLockWriteGuard<'_, HashMap<u64, Vec<(L, AtomicU64)>>> {
        self.series.write().unwrap_or_else(PoisonError::into_inner)
    }
}

/// Escapes a label value (`\`, `"` and line feeds).
fn escape(value: &str) -> String {
    value.replace('\\', "\\\\").replace('"', "\\\"").replace('\n', "\\n")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn requests_are_counted_by_label_set() {
        let m = Metrics::default();
        let allow = RequestLabels {
            source: "spiffe://td/ns/a/sa/a",
            destination: "b/b",
            side: Direction::Ingress,
            decision: "allow",
            status: 200,
        };
        let deny = RequestLabels {
            decision: "deny",
            status: 403,
            ..allow
        };
        m.request(&allow);
        m.request(&allow);
        m.request(&deny);
        assert_eq!(m.request_count(&allow), 2);
        assert_eq!(m.request_count(&deny), 1);
        let text = m.render();
        assert!(text.contains(
            "palisade_requests_total{source=\"spiffe://td/ns/a/sa/a\",destination=\"b/b\",side=\"ingress\",decision=\"allow\",status=\"200\"} 2"
        ));
    }

    #[test]
    fn series_beyond_the_cap_count_into_one_overflow_series() {
        let m = Metrics::default();
        let hosts: Vec<String> = (0..MAX_SERIES + 50).map(|i| format!("host-{i}.evil")).collect();
        for host in &hosts {
            m.request(&RequestLabels {
                source: "spiffe://td/ns/a/sa/a",
                destination: host,
                side: Direction::Ingress,
                decision: "misdirected",
                status: 421,
            });
        }
        assert_eq!(m.requests.len(), MAX_SERIES + 1);
        let overflow = RequestLabels {
            source: "overflow",
            destination: "overflow",
            side: Direction::Ingress,
            decision: "overflow",
            status: 0,
        };
        assert_eq!(m.request_count(&overflow), 50);
        assert!(m.render().contains(
            "palisade_requests_total{source=\"overflow\",destination=\"overflow\",side=\"ingress\",decision=\"overflow\",status=\"0\"} 50"
        ));
        let last = hosts.last().unwrap();
        assert!(!m.render().contains(last.as_str()));
    }

    #[test]
    fn external_hosts_are_counted_by_kind_and_host_and_capped() {
        let m = Metrics::default();
        m.external("blackhole", "evil.example");
        m.external("blackhole", "evil.example");
        m.external("passthrough", "evil.example");
        assert_eq!(m.external_count("blackhole", "evil.example"), 2);
        assert!(m
            .render()
            .contains("palisade_proxy_external_total{kind=\"passthrough\",host=\"evil.example\"} 1"));
        for i in 0..MAX_SERIES + 5 {
            m.external("blackhole", &format!("h{i}.evil"));
        }
        assert_eq!(m.external.len(), MAX_SERIES + 1);
        assert!(m.external_count("blackhole", "overflow") >= 5);
    }

    #[test]
    fn handshake_failures_by_reason() {
        let m = Metrics::default();
        m.handshake_failure("revoked");
        m.handshake_failure("revoked");
        assert!(m
            .render()
            .contains("palisade_tls_handshake_failures_total{reason=\"revoked\"} 2"));
    }
}
