//! What delivery counts, shared by [`super::Auditor::record`] (on the request path)
//! and the delivery task: plain atomics, and a loud but rate-limited error log for
//! every record dropped.

use std::fmt::{self, Write};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

/// How often the drop log may speak; the records dropped meanwhile are counted
/// into the next line.
const DROP_LOG_EVERY: Duration = Duration::from_secs(10);

/// Why a record was dropped. Nothing else drops a record.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum DropReason {
    /// The in-memory queue was full: the delivery task could not keep up (the
    /// spool's disk is too slow, or the task has stopped).
    QueueFull,
    /// The service is away or behind and the spool file is at its size limit.
    SpoolFull,
    /// The spool file could not be written or read back (disk error, corruption).
    SpoolError,
    /// The audit service would refuse the record (or refused it).
    Invalid,
}

impl DropReason {
    /// Every reason, in the order metrics list them.
    pub const ALL: [Self; 4] = [Self::QueueFull, Self::SpoolFull, Self::SpoolError, Self::Invalid];

    /// The `reason` label.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::QueueFull => "queue_full",
            Self::SpoolFull => "spool_full",
            Self::SpoolError => "spool_error",
            Self::Invalid => "invalid",
        }
    }

    fn index(self) -> usize {
        match self {
            Self::QueueFull => 0,
            Self::SpoolFull => 1,
            Self::SpoolError => 2,
            Self::Invalid => 3,
        }
    }
}

impl fmt::Display for DropReason {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// A snapshot of one sender's delivery counters.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct DeliveryMetrics {
    /// Records the audit service confirmed.
    pub sent: u64,
    /// Records written to the spool file (each counted once, when first written).
    pub spooled: u64,
    /// Records dropped because the queue was full.
    pub dropped_queue_full: u64,
    /// Records dropped because the spool was full.
    pub dropped_spool_full: u64,
    /// Records dropped because the spool could not be written or read back.
    pub dropped_spool_error: u64,
    /// Records dropped because the audit service would refuse them.
    pub dropped_invalid: u64,
    /// Records discarded because no audit service is configured ([`super::Auditor::disabled`]).
    pub discarded: u64,
    /// Records in the in-memory queue now.
    pub queued: u64,
    /// Records in the spool file waiting for the service now.
    pub spool_records: u64,
    /// The size of the spool file now, in bytes (its header included).
    pub spool_bytes: u64,
    /// Whether a connection to the audit service is up now.
    pub connected: bool,
}

impl DeliveryMetrics {
    /// Records dropped, for every reason.
    pub fn dropped(&self) -> u64 {
        DropReason::ALL.iter().map(|r| self.dropped_for(*r)).sum()
    }

    /// Records dropped for `reason`.
    pub fn dropped_for(&self, reason: DropReason) -> u64 {
        match reason {
            DropReason::QueueFull => self.dropped_queue_full,
            DropReason::SpoolFull => self.dropped_spool_full,
            DropReason::SpoolError => self.dropped_spool_error,
            DropReason::Invalid => self.dropped_invalid,
        }
    }

    /// The Prometheus text exposition of these metrics, named
    /// `{prefix}_audit_records_sent_total` and so on (`prefix` is `palisade`).
    pub fn render_prometheus(&self, prefix: &str) -> String {
        let mut out = String::new();
        let counters = [
            (
                "records_sent_total",
                "Audit records the audit service confirmed.",
                self.sent,
            ),
            (
                "records_spooled_total",
                "Audit records written to the on-disk spool.",
                self.spooled,
            ),
            (
                "records_discarded_total",
                "Audit records discarded because no audit service is configured.",
                self.discarded,
            ),
        ];
        for (name, help, value) in counters {
            let _ = writeln!(
                out,
                "# HELP {prefix}_audit_{name} {help}\n# TYPE {prefix}_audit_{name} counter\n{prefix}_audit_{name} {value}"
            );
        }
        let dropped = format!("{prefix}_audit_records_dropped_total");
        let _ = writeln!(
            out,
            "# HELP {dropped} Audit records dropped, by reason.\n# TYPE {dropped} counter"
        );
        for reason in DropReason::ALL {
            let _ = writeln!(out, "{dropped}{{reason=\"{reason}\"}} {}", self.dropped_for(reason));
        }
        let gauges = [
            ("queue_depth", "Audit records in the in-memory queue.", self.queued),
            (
                "spool_records",
                "Audit records in the spool waiting for the audit service.",
                self.spool_records,
            ),
            (
                "spool_bytes",
                "Size of the audit spool file in bytes.",
                self.spool_bytes,
            ),
            (
                "connected",
                "Whether the connection to the audit service is up (1) or not (0).",
                u64::from(self.connected),
            ),
        ];
        for (name, help, value) in gauges {
            let _ = writeln!(
                out,
                "# HELP {prefix}_audit_{name} {help}\n# TYPE {prefix}_audit_{name} gauge\n{prefix}_audit_{name} {value}"
            );
        }
        out
    }
}

/// The counters behind [`DeliveryMetrics`], shared by the auditor and its task.
#[derive(Debug)]
pub(crate) struct Counters {
    pub(crate) sent: AtomicU64,
    pub(crate) spooled: AtomicU64,
    pub(crate) discarded: AtomicU64,
    dropped: [AtomicU64; 4],
    pub(crate) spool_records: AtomicU64,
    pub(crate) spool_bytes: AtomicU64,
    pub(crate) connected: AtomicBool,
    /// The spool refused the last record offered to it (full or unwritable);
    /// cleared when it takes one again or empties.
    pub(crate) spool_refusing: AtomicBool,
    log: DropLog,
}

impl Counters {
    pub(crate) fn new() -> Self {
        Self {
            sent: AtomicU64::new(0),
            spooled: AtomicU64::new(0),
            discarded: AtomicU64::new(0),
            dropped: Default::default(),
            spool_records: AtomicU64::new(0),
            spool_bytes: AtomicU64::new(0),
            connected: AtomicBool::new(false),
            spool_refusing: AtomicBool::new(false),
            log: DropLog::new(),
        }
    }

    /// Counts `count` records dropped for `reason`, and says so at error level
    /// (at most once per [`DROP_LOG_EVERY`], with everything dropped since).
    pub(crate) fn dropped(&self, reason: DropReason, count: u64, why: &dyn fmt::Display) {
        if count == 0 {
            return;
        }
        if let Some(counter) = self.dropped.get(reason.index()) {
            counter.fetch_add(count, Ordering::Relaxed);
        }
        if let Some(since_last) = self.log.due(count) {
            let totals = self.snapshot(0);
            tracing::error!(
                %reason,
                dropped = since_last,
                total_dropped = totals.dropped(),
                queue_full = totals.dropped_queue_full,
                spool_full = totals.dropped_spool_full,
                spool_error = totals.dropped_spool_error,
                invalid = totals.dropped_invalid,
                "audit records dropped: {why}"
            );
        }
    }

    pub(crate) fn add(counter: &AtomicU64, count: u64) {
        counter.fetch_add(count, Ordering::Relaxed);
    }

    pub(crate) fn snapshot(&self, queued: u64) -> DeliveryMetrics {
        let dropped = |r: DropReason| self.dropped.get(r.index()).map_or(0, |c| c.load(Ordering::Relaxed));
        DeliveryMetrics {
            sent: self.sent.load(Ordering::Relaxed),
            spooled: self.spooled.load(Ordering::Relaxed),
            dropped_queue_full: dropped(DropReason::QueueFull),
            dropped_spool_full: dropped(DropReason::SpoolFull),
            dropped_spool_error: dropped(DropReason::SpoolError),
            dropped_invalid: dropped(DropReason::Invalid),
            discarded: self.discarded.load(Ordering::Relaxed),
            queued,
            spool_records: self.spool_records.load(Ordering::Relaxed),
            spool_bytes: self.spool_bytes.load(Ordering::Relaxed),
            connected: self.connected.load(Ordering::Relaxed),
        }
    }
}

/// Rate limit of the drop log, lock-free: whoever moves `next_ms` on logs.
#[derive(Debug)]
struct DropLog {
    start: Instant,
    /// Milliseconds after `start` before which the log stays quiet.
    next_ms: AtomicU64,
    /// Dropped since the last line.
    unlogged: AtomicU64,
}

impl DropLog {
    fn new() -> Self {
        Self {
            start: Instant::now(),
            next_ms: AtomicU64::new(0),
            unlogged: AtomicU64::new(0),
        }
    }

    /// Adds `count`; when a line is due, the count to report.
    fn due(&self, count: u64) -> Option<u64> {
        self.unlogged.fetch_add(count, Ordering::Relaxed);
        let now = u64::try_from(self.start.elapsed().as_millis()).unwrap_or(u64::MAX);
        let next = self.next_ms.load(Ordering::Relaxed);
        let every = u64::try_from(DROP_LOG_EVERY.as_millis()).unwrap_or(u64::MAX);
        if now < next {
            return None;
        }
        self.next_ms
            .compare_exchange(next, now.saturating_add(every), Ordering::Relaxed, Ordering::Relaxed)
            .ok()?;
        Some(self.unlogged.swap(0, Ordering::Relaxed))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn drops_are_counted_by_reason_and_rendered_with_the_prefix() {
        let counters = Counters::new();
        counters.dropped(DropReason::SpoolFull, 3, &"test");
        counters.dropped(DropReason::QueueFull, 1, &"test");
        Counters::add(&counters.sent, 7);
        let metrics = counters.snapshot(2);
        assert_eq!(metrics.dropped(), 4);
        let text = metrics.render_prometheus("palisade");
        assert!(text.contains("palisade_audit_records_sent_total 7\n"), "{text}");
        assert!(
            text.contains("palisade_audit_records_dropped_total{reason=\"spool_full\"} 3\n"),
            "{text}"
        );
        assert!(
            text.contains("palisade_audit_records_dropped_total{reason=\"queue_full\"} 1\n"),
            "{text}"
        );
        assert!(text.contains("palisade_audit_queue_depth 2\n"), "{text}");
        assert!(text.contains("palisade_audit_connected 0\n"), "{text}");
        assert!(text.contains("# TYPE palisade_audit_spool_bytes gauge\n"), "{text}");
    }

    #[test]
    fn the_drop_log_speaks_once_per_period_with_the_count_since_the_last_line() {
        let log = DropLog::new();
        assert_eq!(log.due(2), Some(2), "the first drop is logged at once");
        assert_eq!(log.due(5), None, "then the log is quiet");
        assert_eq!(log.due(1), None);
        log.next_ms.store(0, Ordering::Relaxed);
        assert_eq!(log.due(1), Some(7), "the next line carries everything since");
    }
}
