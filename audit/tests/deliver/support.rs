//! A small audit mesh on loopback: a CA made at test time, an audit service on
//! its own runtime (so a test can kill it like a crashed process) storing into an
//! in-memory sink, and senders delivering to it.

use std::collections::HashSet;
use std::future::Future;
use std::net::SocketAddr;
use std::path::Path;
use std::sync::atomic::{AtomicU32, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime};

use tokio::runtime::Runtime;
use tokio::sync::watch;
use tokio::task::JoinHandle;

use palisade_audit::deliver::{Auditor, DeliverParams, DeliveryMetrics};
use palisade_audit::ingest::{audit_service_id, serve, Appended, ServeParams, Sink, SinkError};
use palisade_audit::record::{Decision, Effect, Event, Record, Side};
use palisade_ca::issuer::{new_ca, CaSigner};
use palisade_ca::revocation::{RevocationEntry, RevocationSet, RevocationTarget};
use palisade_ca::tls::SvidResolver;
use palisade_ca::verify::Trust;
use palisade_ca::{SpiffeId, TrustBundle, TrustDomain};

pub const TD: &str = "audit.example";
pub const FRONTEND: &str = "spiffe://audit.example/ns/web/sa/frontend";
pub const PAYMENTS: &str = "spiffe://audit.example/ns/payments/sa/payments";
pub const IMPOSTOR: &str = "spiffe://audit.example/ns/palisade-system/sa/impostor";

/// How long any wait on a condition may take before the test fails.
pub const PATIENCE: Duration = Duration::from_secs(30);

pub fn id(s: &str) -> SpiffeId {
    SpiffeId::parse(s).unwrap()
}

/// The audit service's ID in the test trust domain.
pub fn audit_id() -> SpiffeId {
    audit_service_id(&TrustDomain::new(TD).unwrap()).unwrap()
}

/// A CA of [`TD`] on the real clock (handshakes check validity against it).
pub struct Ca {
    signer: CaSigner,
}

impl Ca {
    pub fn new() -> Self {
        let td = TrustDomain::new(TD).unwrap();
        let material = new_ca(&td, SystemTime::now(), None).unwrap();
        let bundle = TrustBundle::new(td, vec![material.root_cert]).unwrap();
        let signer = CaSigner::new(material.intermediate_cert, material.intermediate_key, bundle).unwrap();
        Self { signer }
    }

    /// What peers of this CA verify against.
    pub fn trust(&self) -> Arc<Trust> {
        Trust::new(self.signer.bundle().clone(), Default::default())
    }

    /// The same, with `revoked` revoked.
    pub fn trust_revoking(&self, revoked: &str) -> Arc<Trust> {
        let entry = RevocationEntry {
            target: RevocationTarget::SpiffeId(id(revoked)),
            reason: "compromised".into(),
            revoked_at_unix: 0,
        };
        Trust::new(self.signer.bundle().clone(), RevocationSet::new(1, [&entry]))
    }

    /// A resolver serving a fresh SVID for `id`.
    pub fn svid(&self, id_str: &str) -> Arc<SvidResolver> {
        let svid = self
            .signer
            .mint(&id(id_str), Duration::from_secs(3600), SystemTime::now())
            .unwrap();
        SvidResolver::with(&svid).unwrap()
    }
}

/// A sink that keeps records in arrival order, deduplicated by (sender, id),
/// like the store.
pub struct MemorySink {
    state: Mutex<State>,
    /// Batches still to store and then fail (a lost answer).
    fail_after_storing: AtomicU32,
    /// Appends wait while this is false (a slow store).
    open: watch::Sender<bool>,
    /// Appends waiting now.
    waiting: AtomicUsize,
}

#[derive(Default)]
struct State {
    seen: HashSet<(String, String)>,
    stored: Vec<(String, Record)>,
    duplicates: u64,
}

impl MemorySink {
    pub fn new() -> Arc<Self> {
        Arc::new(Self {
            state: Mutex::default(),
            fail_after_storing: AtomicU32::new(0),
            open: watch::Sender::new(true),
            waiting: AtomicUsize::new(0),
        })
    }

    /// Appends wait from now on, until [`Self::release`].
    pub fn hold(&self) {
        self.open.send_replace(false);
    }

    pub fn release(&self) {
        self.open.send_replace(true);
    }

    /// Waits until an append is held.
    pub async fn holding(&self) {
        let held = eventually(|| (self.waiting.load(Ordering::SeqCst) > 0).then_some(())).await;
        assert!(held.is_some(), "no append arrived");
    }

    /// The next `batches` batches are stored, then answered with an error.
    pub fn fail_after_storing(&self, batches: u32) {
        self.fail_after_storing.store(batches, Ordering::SeqCst);
    }

    /// Every record stored, with its sender, in arrival order.
    pub fn stored(&self) -> Vec<(String, Record)> {
        self.state.lock().unwrap().stored.clone()
    }

    pub fn len(&self) -> usize {
        self.state.lock().unwrap().stored.len()
    }

    pub fn duplicates(&self) -> u64 {
        self.state.lock().unwrap().duplicates
    }

    /// The policy versions `sender` stored, in arrival order.
    pub fn versions_of(&self, sender: &str) -> Vec<u64> {
        let state = self.state.lock().unwrap();
        let of_sender = state.stored.iter().filter(|(s, _)| s == sender);
        of_sender.map(|(_, record)| version(record)).collect()
    }

    /// Waits until `count` records are stored.
    pub async fn holds(&self, count: usize) {
        let held = eventually(|| (self.len() >= count).then_some(())).await;
        assert!(held.is_some(), "the sink holds {} records, not {count}", self.len());
    }

    fn store(&self, sender: &str, records: Vec<Record>) -> Result<Appended, SinkError> {
        let mut state = self.state.lock().unwrap();
        let mut appended = Appended::default();
        for record in records {
            if state.seen.insert((sender.to_owned(), record.id.clone())) {
                state.stored.push((sender.to_owned(), record));
                appended.stored += 1;
            } else {
                state.duplicates += 1;
                appended.duplicates += 1;
            }
        }
        let fail = self
            .fail_after_storing
            .fetch_update(Ordering::SeqCst, Ordering::SeqCst, |n| n.checked_sub(1))
            .is_ok();
        if fail {
            return Err(SinkError::new("the disk went away just after the commit"));
        }
        Ok(appended)
    }
}

impl Sink for MemorySink {
    fn append(
        &self,
        sender: &str,
        _received_micros: i64,
        records: Vec<Record>,
    ) -> impl Future<Output = Result<Appended, SinkError>> + Send {
        let mut open = self.open.subscribe();
        async move {
            self.waiting.fetch_add(1, Ordering::SeqCst);
            let _ = open.wait_for(|open| *open).await;
            self.waiting.fetch_sub(1, Ordering::SeqCst);
            self.store(sender, records)
        }
    }
}

/// The audit service, on a runtime of its own: killing it drops every task and
/// socket at once, as a crash would.
pub struct AuditServer {
    pub addr: SocketAddr,
    pub sink: Arc<MemorySink>,
    runtime: Option<Runtime>,
}

impl AuditServer {
    /// The audit service of `ca` on a fresh loopback port.
    pub fn start(ca: &Ca, sink: Arc<MemorySink>) -> Self {
        Self::start_with(ca, audit_id().as_str(), ca.trust(), sink)
    }

    /// A server presenting `server_id`, trusting `trust`.
    pub fn start_with(ca: &Ca, server_id: &str, trust: Arc<Trust>, sink: Arc<MemorySink>) -> Self {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        Self::serve(ca, server_id, trust, sink, listener)
    }

    /// Kills the service: every task, connection and the listener are gone when
    /// this returns.
    pub async fn kill(&mut self) {
        let runtime = self.runtime.take().expect("the service is running");
        tokio::task::spawn_blocking(move || runtime.shutdown_timeout(Duration::from_secs(5)))
            .await
            .unwrap();
    }

    /// Starts the audit service again on the same address and sink.
    pub async fn restart(&mut self, ca: &Ca) {
        assert!(self.runtime.is_none(), "kill it first");
        let addr = self.addr;
        let listener = eventually(|| std::net::TcpListener::bind(addr).ok())
            .await
            .expect("the address is free again");
        *self = Self::serve(ca, audit_id().as_str(), ca.trust(), Arc::clone(&self.sink), listener);
    }

    fn serve(
        ca: &Ca,
        server_id: &str,
        trust: Arc<Trust>,
        sink: Arc<MemorySink>,
        listener: std::net::TcpListener,
    ) -> Self {
        listener.set_nonblocking(true).unwrap();
        let addr = listener.local_addr().unwrap();
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(1)
            .enable_all()
            .build()
            .unwrap();
        let resolver = ca.svid(server_id);
        let served = Arc::clone(&sink);
        runtime.spawn(async move {
            let params = ServeParams {
                listener: tokio::net::TcpListener::from_std(listener).unwrap(),
                resolver,
                trust,
                sink: served,
            };
            serve(params, std::future::pending()).await.unwrap();
        });
        Self {
            addr,
            sink,
            runtime: Some(runtime),
        }
    }
}

impl Drop for AuditServer {
    fn drop(&mut self) {
        if let Some(runtime) = self.runtime.take() {
            runtime.shutdown_background();
        }
    }
}

/// A loopback address where nothing listens.
pub fn nowhere() -> SocketAddr {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    listener.local_addr().unwrap()
}

/// Delivery parameters for a sender `sender_id` of `ca` to `addr`, spooling
/// under `dir`.
pub fn params(ca: &Ca, sender_id: &str, addr: SocketAddr, dir: &Path) -> DeliverParams {
    DeliverParams::new(
        addr.to_string(),
        ca.trust(),
        ca.svid(sender_id),
        audit_id(),
        dir.join("spool/audit.spool"),
    )
}

pub fn start(params: DeliverParams) -> (Auditor, JoinHandle<()>) {
    Auditor::start(params).unwrap()
}

/// Stops a sender the way a process exit would: the auditor dropped, its task
/// done (what was not confirmed is in the spool).
pub async fn stop(auditor: Auditor, task: JoinHandle<()>) {
    drop(auditor);
    tokio::time::timeout(PATIENCE, task)
        .await
        .expect("the delivery task ends once its auditor is dropped")
        .unwrap();
}

/// Record number `n`: an ingress decision (which any sidecar may record; the
/// ingest refuses CA and policy events from workloads) whose latency field says
/// its place.
pub fn numbered(n: u64) -> Event {
    Event::Decision(Decision {
        side: Side::Ingress,
        effect: Effect::Allow,
        principal: "spiffe://test.example/ns/a/sa/caller".into(),
        action: "GET".into(),
        resource: "shop/web".into(),
        path: "/".into(),
        policies: vec!["allow-all".into()],
        request_id: format!("req-{n}"),
        status: 200,
        latency_micros: n,
    })
}

/// The place of a record made by [`numbered`].
pub fn version(record: &Record) -> u64 {
    match &record.event {
        Event::Decision(d) => d.latency_micros,
        other => panic!("not a numbered record: {other:?}"),
    }
}

/// Records versions `range` in order.
pub fn record_all(auditor: &Auditor, range: std::ops::Range<u64>) {
    for n in range {
        auditor.record(numbered(n));
    }
}

/// `0..n`.
pub fn upto(n: u64) -> Vec<u64> {
    (0..n).collect()
}

/// Waits until `metrics` of `auditor` satisfy `done`.
pub async fn metrics_when(auditor: &Auditor, done: impl Fn(&DeliveryMetrics) -> bool) -> DeliveryMetrics {
    eventually(|| Some(auditor.metrics()).filter(|m| done(m)))
        .await
        .unwrap_or_else(|| panic!("metrics never got there: {:?}", auditor.metrics()))
}

/// Polls `check` every 10 ms until it gives a value, for at most [`PATIENCE`].
pub async fn eventually<T>(mut check: impl FnMut() -> Option<T>) -> Option<T> {
    let deadline = tokio::time::Instant::now() + PATIENCE;
    loop {
        if let Some(value) = check() {
            return Some(value);
        }
        if tokio::time::Instant::now() >= deadline {
            return None;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}
