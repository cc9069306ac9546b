//! The audit service's ingest side: `AuditLog.Append` over mutual TLS.
//!
//! **Who may write.** Only mesh identities: the TLS handshake requires a client
//! SVID that verifies against the trust bundle and is not revoked (the same
//! [`SvidClientVerifier`] every mesh server uses). The sender of a record is the
//! verified peer SVID's SPIFFE ID, stamped here; the payload has no sender field,
//! so no client can write in another's name.
//!
//! **What is stored.** A batch holds at most [`MAX_BATCH_RECORDS`] records and
//! [`MAX_MESSAGE_BYTES`]. Every record is checked ([`crate::wire`]) before any is
//! handed to the [`Sink`]: one bad record refuses the whole batch with
//! `InvalidArgument`, naming its index (also in the [`RECORD_INDEX_METADATA`]
//! metadata, so a sender can set that one record aside) and field; nothing of it is
//! stored. The sink deduplicates by (sender, id), so a batch resent after a lost
//! answer is stored exactly once. A sink failure answers `Unavailable`: the sender
//! keeps the batch and retries.
//!
//! **Logs.** Debug per batch; warn on every refusal.

use std::future::Future;
use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use tokio::net::TcpListener;
use tokio::sync::mpsc;
use tokio_stream::wrappers::ReceiverStream;
use tonic::metadata::MetadataValue;
use tonic::{Request, Response, Status};

use palisade_ca::service::incoming::{accept_loop, acceptor, PeerInfo};
use palisade_ca::tls::SvidResolver;
use palisade_ca::verify::{SvidClientVerifier, Trust};
use palisade_ca::{SpiffeId, SpiffeIdError, TrustDomain};

use crate::proto::v1 as pb;
use crate::record::{Event, Record, Side};
use crate::wire::WireError;

/// The most records one `Append` may carry.
pub const MAX_BATCH_RECORDS: usize = 10_000;
/// The largest `Append` request, in bytes.
pub const MAX_MESSAGE_BYTES: usize = 16 * 1024 * 1024;
/// The response metadata key naming the index of the record that refused a batch.
pub const RECORD_INDEX_METADATA: &str = "palisade-record-index";

/// The SPIFFE ID the audit service serves under:
/// `spiffe://TD/ns/palisade-system/sa/palisade-audit`. Senders accept no other.
///
/// # Errors
///
/// Only if the trust domain is too long to make a SPIFFE ID of.
pub fn audit_service_id(td: &TrustDomain) -> Result<SpiffeId, SpiffeIdError> {
    SpiffeId::mesh(td, "palisade-system", "palisade-audit")
}

/// What a [`Sink`] did with a batch.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Appended {
    /// Records stored now.
    pub stored: u64,
    /// Records skipped because their (sender, id) was already stored.
    pub duplicates: u64,
}

/// The sink could not take a batch; the sender is told to retry.
#[derive(Debug, thiserror::Error)]
#[error("{0}")]
pub struct SinkError(Box<dyn std::error::Error + Send + Sync>);

impl SinkError {
    /// Wraps the store's error.
    pub fn new(error: impl Into<Box<dyn std::error::Error + Send + Sync>>) -> Self {
        Self(error.into())
    }
}

/// Where verified batches go: the store, in production.
pub trait Sink: Send + Sync + 'static {
    /// Appends `records` of `sender` in order, all or none, skipping any whose
    /// (sender, id) is already stored; answers once they are durable.
    fn append(
        &self,
        sender: &str,
        received_micros: i64,
        records: Vec<Record>,
    ) -> impl Future<Output = Result<Appended, SinkError>> + Send;
}

/// What [`serve`] needs.
#[derive(Debug)]
pub struct ServeParams<S> {
    /// Where to accept senders, already bound.
    pub listener: TcpListener,
    /// The audit service's own SVID (for [`audit_service_id`]), kept rotated by the caller.
    pub resolver: Arc<SvidResolver>,
    /// What senders' client SVIDs are verified against (bundle and revocations).
    pub trust: Arc<Trust>,
    /// Where verified batches go.
    pub sink: Arc<S>,
}

/// The ingest server could not start or stopped.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ServeError {
    #[error("TLS setup failed: {0}; check the audit service's SVID")]
    Tls(#[from] rustls::Error),
    #[error("the audit ingest server failed: {0}")]
    Grpc(#[from] tonic::transport::Error),
}

/// Serves `AuditLog` until `shutdown` resolves: TLS 1.3, client SVID mandatory,
/// verified against `params.trust`.
///
/// # Errors
///
/// The TLS configuration or the gRPC server failed.
pub async fn serve<S: Sink>(
    params: ServeParams<S>,
    shutdown: impl Future<Output = ()> + Send,
) -> Result<(), ServeError> {
    let verifier = SvidClientVerifier::new(params.trust, true);
    let tls = palisade_ca::tls::server_config(params.resolver, verifier, &[b"h2"])?;
    let (tx, rx) = mpsc::channel(64);
    let accept = tokio::spawn(accept_loop(params.listener, acceptor(tls), tx));
    let service = pb::audit_log_server::AuditLogServer::new(Ingest { sink: params.sink })
        .max_decoding_message_size(MAX_MESSAGE_BYTES);
    let result = tonic::transport::Server::builder()
        .http2_keepalive_interval(Some(Duration::from_secs(30)))
        .add_service(service)
        .serve_with_incoming_shutdown(ReceiverStream::new(rx), shutdown)
        .await;
    accept.abort();
    Ok(result?)
}

/// The service: verified batches into the sink.
#[derive(Debug)]
struct Ingest<S> {
    sink: Arc<S>,
}

#[tonic::async_trait]
impl<S: Sink> pb::audit_log_server::AuditLog for Ingest<S> {
    async fn append(&self, request: Request<pb::AppendRequest>) -> Result<Response<pb::AppendResponse>, Status> {
        let sender = peer_id(&request)?;
        let records = validate(&sender, request.into_inner().records)?;
        authorize(&sender, &records, now_micros())?;
        if records.is_empty() {
            return Ok(Response::new(pb::AppendResponse::default()));
        }
        let count = records.len();
        let appended = self
            .sink
            .append(sender.as_str(), now_micros(), records)
            .await
            .map_err(|e| {
                tracing::warn!(%sender, records = count, error = %e, "audit batch not stored; the sender will retry");
                Status::unavailable(format!("the audit store failed: {e}; retry later"))
            })?;
        tracing::debug!(%sender, records = count, stored = appended.stored, duplicates = appended.duplicates, "audit batch stored");
        Ok(Response::new(pb::AppendResponse {
            stored: u32::try_from(appended.stored).unwrap_or(u32::MAX),
            duplicates: u32::try_from(appended.duplicates).unwrap_or(u32::MAX),
        }))
    }
}

/// Converts every record, or refuses the batch at the first bad one.
fn validate(sender: &SpiffeId, records: Vec<pb::Record>) -> Result<Vec<Record>, Status> {
    if records.len() > MAX_BATCH_RECORDS {
        tracing::warn!(%sender, records = records.len(), "audit batch refused: too many records");
        return Err(Status::invalid_argument(format!(
            "the batch holds {} records; send at most {MAX_BATCH_RECORDS} per batch",
            records.len()
        )));
    }
    for (index, record) in records.iter().enumerate() {
        if let Err(e) = crate::wire::check(record) {
            return Err(invalid(sender, index, &record.id, &e));
        }
    }
    // Checked above, so no conversion fails.
    let converted = records.into_iter().enumerate();
    converted
        .map(|(index, record)| Record::try_from(record).map_err(|e| invalid(sender, index, "", &e)))
        .collect()
}

/// How far ahead of the service's clock a record's time may be.
const MAX_CLOCK_SKEW_MICROS: i64 = 5 * 60 * 1_000_000;

/// What a sender may say: CA events only from the CA, policy events only from the
/// control plane, external events and egress decisions only about itself (an
/// ingress decision names its caller, whom the callee's sidecar verified), and no
/// time in the future. A sidecar's SVID cannot speak for anyone else.
fn authorize(sender: &SpiffeId, records: &[Record], now_micros: i64) -> Result<(), Status> {
    let td = sender.trust_domain();
    let system = |account: &str| SpiffeId::mesh(&td, "palisade-system", account).ok();
    let (ca, control_plane) = (system("palisade-ca"), system("palisade-control-plane"));
    for (index, record) in records.iter().enumerate() {
        let problem = match &record.event {
            Event::Identity(_) if ca.as_ref() != Some(sender) => Some("only the CA may record identity events"),
            Event::Policy(_) if control_plane.as_ref() != Some(sender) => {
                Some("only the control plane may record policy changes")
            }
            Event::External(e) if e.workload != sender.as_str() => {
                Some("an external event names another workload than its sender")
            }
            Event::Decision(d) if d.side == Side::Egress && d.principal != sender.as_str() => {
                Some("an egress decision names another caller than its sender")
            }
            _ if record.time_micros > now_micros.saturating_add(MAX_CLOCK_SKEW_MICROS) => {
                Some("its time is more than 5 minutes ahead of the audit service's clock")
            }
            _ => None,
        };
        if let Some(problem) = problem {
            tracing::warn!(%sender, index, id = %shown(&record.id), problem, "audit batch refused: record not the sender's to make");
            let mut status = Status::invalid_argument(format!(
                "record {index} (id `{}`) is refused: {problem}; nothing of this batch was stored",
                shown(&record.id)
            ));
            status
                .metadata_mut()
                .insert(RECORD_INDEX_METADATA, MetadataValue::from(index));
            return Err(status);
        }
    }
    Ok(())
}

/// The refusal of a batch for its record at `index`.
fn invalid(sender: &SpiffeId, index: usize, id: &str, e: &WireError) -> Status {
    let id = shown(id);
    tracing::warn!(%sender, index, id = %id, field = e.field(), error = %e, "audit batch refused: invalid record");
    let mut status = Status::invalid_argument(format!(
        "record {index} (id `{id}`) is invalid: {e}; nothing of this batch was stored"
    ));
    status
        .metadata_mut()
        .insert(RECORD_INDEX_METADATA, MetadataValue::from(index));
    status
}

/// The caller's verified SPIFFE ID.
fn peer_id<T>(request: &Request<T>) -> Result<SpiffeId, Status> {
    let svid = request
        .extensions()
        .get::<PeerInfo>()
        .and_then(|peer| peer.svid.as_ref());
    svid.map(|svid| svid.id.clone()).ok_or_else(|| {
        tracing::warn!("audit batch refused: no verified client SVID");
        Status::unauthenticated("no verified client SVID; connect with the sender's SVID as the TLS client certificate")
    })
}

/// An id as logs and errors show it: at most its first 128 bytes.
fn shown(id: &str) -> &str {
    let mut end = id.len().min(crate::wire::MAX_ID_BYTES);
    while !id.is_char_boundary(end) {
        end -= 1;
    }
    id.get(..end).unwrap_or_default()
}

/// Microseconds since the epoch by the service's clock.
fn now_micros() -> i64 {
    let micros = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap_or_default()
        .as_micros();
    i64::try_from(micros).unwrap_or(i64::MAX)
}

/// The production [`Sink`]: the store, with counters for the service's `/metrics`.
#[derive(Debug)]
pub struct StoreSink {
    store: crate::store::Store,
    batches: std::sync::atomic::AtomicU64,
    stored: std::sync::atomic::AtomicU64,
    duplicates: std::sync::atomic::AtomicU64,
    failures: std::sync::atomic::AtomicU64,
}

impl StoreSink {
    /// A sink appending to `store`.
    pub fn new(store: crate::store::Store) -> Self {
        Self {
            store,
            batches: 0.into(),
            stored: 0.into(),
            duplicates: 0.into(),
            failures: 0.into(),
        }
    }

    /// The counters in Prometheus text format.
    pub fn render_metrics(&self) -> String {
        use std::sync::atomic::Ordering::Relaxed;
        let mut out = String::new();
        for (name, help, value) in [
            ("palisade_audit_batches_total", "Batches appended.", &self.batches),
            ("palisade_audit_records_stored_total", "Records stored.", &self.stored),
            (
                "palisade_audit_records_duplicate_total",
                "Records skipped because their (sender, id) was already stored (resends).",
                &self.duplicates,
            ),
            (
                "palisade_audit_append_failures_total",
                "Batches the store could not take (senders retry).",
                &self.failures,
            ),
        ] {
            out.push_str(&format!(
                "# HELP {name} {help}\n# TYPE {name} counter\n{name} {}\n",
                value.load(Relaxed)
            ));
        }
        out
    }
}

impl Sink for StoreSink {
    async fn append(&self, sender: &str, received_micros: i64, records: Vec<Record>) -> Result<Appended, SinkError> {
        use std::sync::atomic::Ordering::Relaxed;
        match self.store.append(sender, received_micros, &records).await {
            Ok(appended) => {
                self.batches.fetch_add(1, Relaxed);
                self.stored.fetch_add(appended.stored.into(), Relaxed);
                self.duplicates.fetch_add(appended.duplicates.into(), Relaxed);
                Ok(Appended {
                    stored: appended.stored.into(),
                    duplicates: appended.duplicates.into(),
                })
            }
            Err(e) => {
                self.failures.fetch_add(1, Relaxed);
                tracing::warn!(error = %e, sender, records = records.len(), "the store refused a batch; the sender will retry");
                Err(SinkError::new(e))
            }
        }
    }
}
