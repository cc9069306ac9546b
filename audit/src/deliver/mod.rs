//! The senders' side of the audit log: proxies, the CA and the control plane hand
//! each event to an [`Auditor`], which delivers it to the audit service.
//!
//! **Never blocking a request.** [`Auditor::record`] stamps the event with a
//! unique id and the time and offers it to a bounded in-memory queue with
//! `try_send`: it never awaits. One delivery task per auditor (`task.rs`) takes
//! records from the queue into batches and sends them over mTLS (`link.rs`),
//! accepting only the audit service's identity
//! ([`audit_service_id`](crate::ingest::audit_service_id)).
//!
//! **When the service is away or slow**, the task moves records from the queue
//! into a bounded spool file (format in `spool.rs`) and keeps doing so while it
//! reconnects (backoff from 100 ms doubling to 5 s, jittered), so the queue does
//! not fill. The queue fills only if the spool's disk cannot keep up.
//! When the service is back, the spool is replayed oldest first, before anything
//! newer, then truncated. The spool survives a restart of the sender: a new
//! auditor on the same path replays it first.
//!
//! **Exactly once, in order.** Records leave memory or the spool only when the
//! service confirms them; after a failure the same records, with the same ids,
//! are sent again, and the service drops what it already stored. One sender's
//! records arrive in the order [`Auditor::record`] was called.
//!
//! **Nothing lost silently.** A record is dropped only when the queue is full
//! (the spool's disk is not keeping up), the spool is full or unwritable, or the
//! service would refuse it; each is counted by reason ([`DeliveryMetrics`]) and
//! logged at error level (at most every 10 s, with the count). Text over the
//! service's limits is cut, not dropped ([`crate::wire::fit`]).
//!
//! **Strict mode.** [`Auditor::accepting`] says whether a record made now would be
//! kept; a strict sender denies a request when it is false
//! ([`Auditor::denies_requests`]).

mod link;
mod metrics;
mod spool;
mod task;

use std::path::PathBuf;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{SystemTime, UNIX_EPOCH};

use ring::rand::{SecureRandom, SystemRandom};
use tokio::sync::mpsc;
use tokio::task::JoinHandle;

use palisade_ca::client::SvidPeer;
use palisade_ca::tls::SvidResolver;
use palisade_ca::verify::Trust;
use palisade_ca::SpiffeId;

pub use metrics::{DeliveryMetrics, DropReason};
pub use spool::SpoolError;

use crate::ingest::MAX_BATCH_RECORDS;
use crate::proto::v1 as pb;
use crate::record::{Event, Record};
use crate::wire;
use metrics::Counters;

/// The default bound of the spool file.
pub const DEFAULT_SPOOL_MAX_BYTES: u64 = 64 * 1024 * 1024;
/// The smallest spool bound accepted.
pub const MIN_SPOOL_MAX_BYTES: u64 = 64 * 1024;
/// The default capacity of the in-memory queue, in records.
pub const DEFAULT_QUEUE_CAPACITY: usize = 65_536;
/// The default largest batch, in records.
pub const DEFAULT_BATCH_MAX: usize = 1_024;
/// The largest batch in bytes (the service takes up to 16 MiB per request).
const MAX_BATCH_BYTES: u64 = 8 * 1024 * 1024;

/// Where the audit service is, how to reach it, and the delivery's bounds.
#[derive(Debug, Clone)]
pub struct DeliverParams {
    /// The audit service, `host:port`.
    pub addr: String,
    /// What the audit service's SVID is verified against.
    pub trust: Arc<Trust>,
    /// The sender's own SVID, presented as the TLS client certificate (kept
    /// rotated by the caller). The service stamps records with its SPIFFE ID.
    pub resolver: Arc<SvidResolver>,
    /// The identity the service must present:
    /// [`audit_service_id`](crate::ingest::audit_service_id) of the trust domain.
    pub expected: SpiffeId,
    /// The spool file (its directory is created); one per sender process.
    pub spool_path: PathBuf,
    /// The spool file's bound, in bytes ([`DEFAULT_SPOOL_MAX_BYTES`]).
    pub spool_max_bytes: u64,
    /// The in-memory queue's capacity, in records ([`DEFAULT_QUEUE_CAPACITY`]).
    pub queue_capacity: usize,
    /// The most records per batch ([`DEFAULT_BATCH_MAX`], at most 10,000).
    pub batch_max: usize,
    /// Deny requests when auditing is impossible (see [`Auditor::denies_requests`]).
    pub strict: bool,
}

impl DeliverParams {
    /// Parameters with the default bounds, not strict.
    pub fn new(
        addr: impl Into<String>,
        trust: Arc<Trust>,
        resolver: Arc<SvidResolver>,
        expected: SpiffeId,
        spool_path: impl Into<PathBuf>,
    ) -> Self {
        Self {
            addr: addr.into(),
            trust,
            resolver,
            expected,
            spool_path: spool_path.into(),
            spool_max_bytes: DEFAULT_SPOOL_MAX_BYTES,
            queue_capacity: DEFAULT_QUEUE_CAPACITY,
            batch_max: DEFAULT_BATCH_MAX,
            strict: false,
        }
    }
}

/// Delivery could not start.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum DeliverError {
    #[error("the audit service address `{addr}` is not a host:port address ({reason})")]
    Address { addr: String, reason: String },
    #[error("`{field}` is {value}; {expected}")]
    Bound {
        field: &'static str,
        value: u64,
        expected: &'static str,
    },
    #[error(transparent)]
    Spool(#[from] SpoolError),
    #[error("the system random number generator failed; cannot make record ids")]
    Random,
    #[error("audit delivery must start inside a Tokio runtime")]
    NoRuntime,
}

/// A sender's handle on the audit log: cheap to clone, shared by every request.
///
/// The queue closes when the last clone is dropped; the delivery task then
/// sends what it can, leaves the rest in the spool, and ends.
#[derive(Debug, Clone)]
pub struct Auditor {
    inner: Arc<Inner>,
}

#[derive(Debug)]
struct Inner {
    /// `None`: no audit service configured.
    tx: Option<mpsc::Sender<pb::Record>>,
    /// The per-process random part of every id (hex).
    prefix: String,
    next: AtomicU64,
    strict: bool,
    counters: Arc<Counters>,
}

impl Auditor {
    /// Opens the spool and starts the delivery task. Must be called within a
    /// Tokio runtime; the task runs until every clone of the auditor is dropped.
    ///
    /// # Errors
    ///
    /// A bound out of range, an address that is not `host:port`, a spool that
    /// cannot be opened (or is in use), or no randomness for the ids.
    pub fn start(params: DeliverParams) -> Result<(Self, JoinHandle<()>), DeliverError> {
        let runtime = tokio::runtime::Handle::try_current().map_err(|_| DeliverError::NoRuntime)?;
        check_bounds(&params)?;
        let endpoint = link::endpoint(&params.addr).map_err(|reason| DeliverError::Address {
            addr: params.addr.clone(),
            reason,
        })?;
        let prefix = random_prefix()?;
        let spool = spool::Spool::open(&params.spool_path, params.spool_max_bytes)?;
        let (tx, rx) = mpsc::channel(params.queue_capacity);
        let counters = Arc::new(Counters::new());
        let spool_room = (params.spool_max_bytes - spool::HEADER_BYTES) / 2;
        let delivery = task::Delivery {
            rx,
            spool,
            spool_path: params.spool_path,
            counters: Arc::clone(&counters),
            endpoint,
            peer: SvidPeer {
                addr: params.addr,
                trust: params.trust,
                resolver: params.resolver,
                expected: params.expected,
            },
            batch_max: params.batch_max,
            batch_bytes: MAX_BATCH_BYTES.min(spool_room),
        };
        let handle = runtime.spawn(task::run(delivery));
        let inner = Inner {
            tx: Some(tx),
            prefix,
            next: AtomicU64::new(1),
            strict: params.strict,
            counters,
        };
        Ok((Self { inner: Arc::new(inner) }, handle))
    }

    /// An auditor for a sender with no audit service configured: records are
    /// discarded (and counted as such), and it always accepts.
    pub fn disabled() -> Self {
        let inner = Inner {
            tx: None,
            prefix: String::new(),
            next: AtomicU64::new(1),
            strict: false,
            counters: Arc::new(Counters::new()),
        };
        Self { inner: Arc::new(inner) }
    }

    /// Records `event` now. Never waits: the record is queued, or dropped and
    /// counted (queue full, or the service would refuse it).
    pub fn record(&self, event: Event) {
        let inner = &self.inner;
        let Some(tx) = &inner.tx else {
            Counters::add(&inner.counters.discarded, 1);
            return;
        };
        let Some(wire) = self.stamp(event) else { return };
        match tx.try_send(wire) {
            Ok(()) => {}
            Err(mpsc::error::TrySendError::Full(_)) => {
                let why = "the queue is full: the spool's disk is not keeping up";
                inner.counters.dropped(DropReason::QueueFull, 1, &why);
            }
            Err(mpsc::error::TrySendError::Closed(_)) => {
                let why = "the delivery task has stopped";
                inner.counters.dropped(DropReason::QueueFull, 1, &why);
            }
        }
    }

    /// The record of `event` as sent: a unique id, the time, every field within the
    /// service's bounds. `None` (dropped and counted) when the service would refuse it.
    fn stamp(&self, event: Event) -> Option<pb::Record> {
        let inner = &self.inner;
        let id = format!("{}-{}", inner.prefix, inner.next.fetch_add(1, Ordering::Relaxed));
        let mut wire = pb::Record::from(Record {
            id,
            time_micros: now_micros(),
            event,
        });
        wire::fit(&mut wire);
        if let Err(e) = wire::check(&wire) {
            let why = format_args!("the audit service would refuse it: {e}");
            inner.counters.dropped(DropReason::Invalid, 1, &why);
            return None;
        }
        Some(wire)
    }

    /// A place in the queue for one record, taken now and kept until the record is
    /// made: what strict mode asks before it forwards a request, so a request it
    /// lets through always has room for its record. `None` when not
    /// [`accepting`](Self::accepting), the queue has no free place, or no audit
    /// service is configured.
    pub fn reserve(&self) -> Option<Reserved> {
        if !self.accepting() {
            return None;
        }
        let permit = self.inner.tx.as_ref()?.clone().try_reserve_owned().ok()?;
        Some(Reserved {
            permit,
            auditor: self.clone(),
        })
    }

    /// Whether a record made now would be kept: false when the queue is full, the
    /// spool refused its last record (full or unwritable), or delivery has
    /// stopped. Always true for a [`disabled`](Self::disabled) auditor.
    pub fn accepting(&self) -> bool {
        let Some(tx) = &self.inner.tx else {
            return true;
        };
        tx.capacity() > 0 && !tx.is_closed() && !self.inner.counters.spool_refusing.load(Ordering::Relaxed)
    }

    /// Whether strict mode is on.
    pub fn strict(&self) -> bool {
        self.inner.strict
    }

    /// Whether a request must be denied now: strict mode, and not
    /// [`accepting`](Self::accepting).
    pub fn denies_requests(&self) -> bool {
        self.inner.strict && !self.accepting()
    }

    /// The delivery counters now.
    pub fn metrics(&self) -> DeliveryMetrics {
        let queued = self
            .inner
            .tx
            .as_ref()
            .map_or(0, |tx| tx.max_capacity().saturating_sub(tx.capacity()));
        self.inner.counters.snapshot(u64::try_from(queued).unwrap_or(u64::MAX))
    }
}

/// A place in the queue, held for one record ([`Auditor::reserve`]); dropping it
/// unused gives the place back.
#[derive(Debug)]
pub struct Reserved {
    permit: mpsc::OwnedPermit<pb::Record>,
    auditor: Auditor,
}

impl Reserved {
    /// Queues the record of `event` in the place held: it cannot find the queue full.
    pub fn record(self, event: Event) {
        if let Some(wire) = self.auditor.stamp(event) {
            self.permit.send(wire);
        }
    }
}

fn check_bounds(params: &DeliverParams) -> Result<(), DeliverError> {
    let bound = |field, value: usize, expected| DeliverError::Bound {
        field,
        value: u64::try_from(value).unwrap_or(u64::MAX),
        expected,
    };
    if params.queue_capacity == 0 || params.queue_capacity > tokio::sync::Semaphore::MAX_PERMITS {
        return Err(bound("queue_capacity", params.queue_capacity, "give at least 1 record"));
    }
    if !(1..=MAX_BATCH_RECORDS).contains(&params.batch_max) {
        return Err(bound("batch_max", params.batch_max, "give 1 to 10000 records"));
    }
    if params.spool_max_bytes < MIN_SPOOL_MAX_BYTES {
        return Err(DeliverError::Bound {
            field: "spool_max_bytes",
            value: params.spool_max_bytes,
            expected: "give at least 65536 bytes",
        });
    }
    Ok(())
}

/// 64 random bits, hex: ids of this process never collide with another's.
fn random_prefix() -> Result<String, DeliverError> {
    let mut bytes = [0u8; 8];
    SystemRandom::new().fill(&mut bytes).map_err(|_| DeliverError::Random)?;
    Ok(format!("{:016x}", u64::from_be_bytes(bytes)))
}

fn now_micros() -> i64 {
    let micros = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap_or_default()
        .as_micros();
    i64::try_from(micros).unwrap_or(i64::MAX)
}
