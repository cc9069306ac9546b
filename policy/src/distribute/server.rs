//! The control plane's side: the `PolicyDistribution` gRPC service over mutual
//! TLS, each proxy identified by its verified client SVID.

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::time::Duration;

use tokio::net::TcpListener;
use tokio::sync::{mpsc, watch};
use tokio_stream::wrappers::{ReceiverStream, WatchStream};
use tokio_stream::{Stream, StreamExt};
use tonic::{Request, Response, Status};

use palisade_ca::service::incoming::{accept_loop, acceptor, PeerInfo};
use palisade_ca::tls::SvidResolver;
use palisade_ca::verify::{SvidClientVerifier, Trust};
use palisade_ca::SpiffeId;

use super::push::PushService;
use super::status::ProxyStatus;
use super::watch::Published;
use crate::proto::v1 as pb;
use crate::snapshot::{for_workload, Snapshot};

/// The longest acknowledgement error kept, in bytes; longer ones are cut.
const MAX_ACK_ERROR: usize = 4096;

/// What [`serve`] needs.
#[derive(Debug)]
pub struct ServeParams {
    /// Where to accept proxies, already bound.
    pub listener: TcpListener,
    /// The control plane's own SVID, kept rotated by the caller.
    pub resolver: Arc<SvidResolver>,
    /// What proxies' client SVIDs are verified against (bundle and revocations).
    pub trust: Arc<Trust>,
    /// The published bundle (see [`super::watch_bundle`]).
    pub published: watch::Receiver<Arc<Published>>,
    /// Where each proxy's streams and answers are recorded.
    pub status: Arc<ProxyStatus>,
    /// `BundleSource`, when the bundle comes from the Kubernetes controller
    /// ([`super::push_source`]); `None` when it comes from a directory.
    pub push: Option<PushService>,
}

/// The distribution server could not start or stopped.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ServeError {
    #[error("TLS setup failed: {0}; check the control plane's SVID")]
    Tls(#[from] rustls::Error),
    #[error("the policy distribution server failed: {0}")]
    Grpc(#[from] tonic::transport::Error),
}

/// Serves `PolicyDistribution` until `shutdown` resolves: TLS 1.3, client SVID
/// mandatory, verified against `trust`.
///
/// A stream stays open after its proxy's SVID expires or is revoked (verification
/// happens at the handshake); the proxy's next connection is refused then.
///
/// # Errors
///
/// The TLS configuration or the gRPC server failed.
pub async fn serve(params: ServeParams, shutdown: impl Future<Output = ()> + Send) -> Result<(), ServeError> {
    let verifier = SvidClientVerifier::new(params.trust, true);
    let tls = palisade_ca::tls::server_config(params.resolver, verifier, &[b"h2"])?;
    let (tx, rx) = mpsc::channel(64);
    let accept = tokio::spawn(accept_loop(params.listener, acceptor(tls), tx));
    let service = Distribution {
        published: params.published,
        status: params.status,
    };
    let result = tonic::transport::Server::builder()
        .http2_keepalive_interval(Some(Duration::from_secs(30)))
        .add_service(pb::policy_distribution_server::PolicyDistributionServer::new(service))
        .add_optional_service(params.push)
        .serve_with_incoming_shutdown(ReceiverStream::new(rx), shutdown)
        .await;
    accept.abort();
    Ok(result?)
}

/// The service: the published bundle and the proxies' status.
#[derive(Debug)]
struct Distribution {
    published: watch::Receiver<Arc<Published>>,
    status: Arc<ProxyStatus>,
}

type SnapshotStream = Pin<Box<dyn Stream<Item = Result<pb::Snapshot, Status>> + Send>>;

#[tonic::async_trait]
impl pb::policy_distribution_server::PolicyDistribution for Distribution {
    type WatchStream = SnapshotStream;

    /// The caller's snapshot of the current version at once, then of every new
    /// version (even when its part did not change: the version a proxy holds
    /// always says how current it is).
    async fn watch(&self, request: Request<pb::WatchRequest>) -> Result<Response<SnapshotStream>, Status> {
        let id = peer_id(&request)?;
        tracing::info!(proxy = %id, "policy stream opened");
        let open = self.status.stream_opened(&id);
        let status = Arc::clone(&self.status);
        // Version 0 is a control plane waiting for its first bundle: nothing to send.
        let published = WatchStream::new(self.published.clone()).filter(|published| published.version > 0);
        let stream = published.map(move |published| {
            let _counted_until_dropped = &open;
            let files = for_workload(&published.files, &published.bundle, &id);
            let snapshot = Snapshot::new(published.version, files);
            status.sent(&id, snapshot.version(), snapshot.digest());
            tracing::debug!(proxy = %id, version = snapshot.version(), digest = %snapshot.digest(), "snapshot sent");
            Ok(to_wire(&snapshot))
        });
        Ok(Response::new(Box::pin(stream)))
    }

    async fn ack(&self, request: Request<pb::AckRequest>) -> Result<Response<pb::AckResponse>, Status> {
        let id = peer_id(&request)?;
        let ack = request.into_inner();
        let digest = cut(&ack.digest, 80);
        if ack.accepted {
            tracing::info!(proxy = %id, version = ack.version, %digest, "snapshot applied");
            self.status.acked(&id, ack.version, digest);
        } else {
            let error = cut(&ack.error, MAX_ACK_ERROR);
            tracing::warn!(proxy = %id, version = ack.version, %digest, %error, "snapshot refused by the proxy");
            self.status.nacked(&id, ack.version, digest, error);
        }
        Ok(Response::new(pb::AckResponse {}))
    }
}

/// The caller's verified SPIFFE ID.
fn peer_id<T>(request: &Request<T>) -> Result<SpiffeId, Status> {
    let svid = request
        .extensions()
        .get::<PeerInfo>()
        .and_then(|peer| peer.svid.as_ref());
    svid.map(|svid| svid.id.clone()).ok_or_else(|| {
        Status::unauthenticated("no verified client SVID; connect with the proxy's SVID as the TLS client certificate")
    })
}

fn to_wire(snapshot: &Snapshot) -> pb::Snapshot {
    let files = snapshot.files().iter().map(|(path, text)| pb::File {
        path: path.to_owned(),
        text: text.to_owned(),
    });
    pb::Snapshot {
        version: snapshot.version(),
        digest: snapshot.digest().to_string(),
        files: files.collect(),
    }
}

/// At most `max` bytes of `s`, cut on a character boundary.
fn cut(s: &str, max: usize) -> &str {
    let mut end = s.len().min(max);
    while !s.is_char_boundary(end) {
        end -= 1;
    }
    s.get(..end).unwrap_or_default()
}
