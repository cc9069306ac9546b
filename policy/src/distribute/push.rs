//! The bundle pushed by the Kubernetes controller: `BundleSource.Publish`.
//!
//! The server side ([`push_source`]) takes the files, runs them through the same
//! loader and canonical form as a directory, and offers them to the control
//! plane's [`Publisher`]. Only the controller's verified SVID ([`controller_id`])
//! may call it; pushes are taken one at a time. The client side ([`push`]) is what
//! `palisade controller run --control-plane ADDR` calls after each change.

use std::sync::Arc;
use std::time::Duration;

use tokio::sync::Mutex;
use tonic::service::interceptor::{InterceptedService, Interceptor};
use tonic::transport::Endpoint;
use tonic::{Request, Response, Status};

use palisade_ca::client::{svid_channel, ChannelError, SvidPeer};
use palisade_ca::service::incoming::PeerInfo;
use palisade_ca::tls::SvidResolver;
use palisade_ca::verify::Trust;
use palisade_ca::{SpiffeId, SpiffeIdError, TrustDomain};

use super::publisher::{Offered, Publisher};
use super::{control_plane_id, controller_id};
use crate::bundle::{load_canonical, load_files, BundleFiles, MAX_FILES, MAX_TOTAL_BYTES};
use crate::proto::v1 as pb;

/// The largest push accepted: a bundle at its size limits, with room for paths
/// and framing.
const MAX_MESSAGE_BYTES: usize = MAX_TOTAL_BYTES + (MAX_TOTAL_BYTES / 4);
/// The longest problem text sent back; the control plane logs all of it.
const MAX_PROBLEMS_BYTES: usize = 16 * 1024;
/// How long connecting (TCP + TLS) may take.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(5);
/// How long one push may take, the control plane's validation included.
const PUSH_TIMEOUT: Duration = Duration::from_secs(60);

/// The `BundleSource` service as [`super::serve`] runs it.
pub type PushService = InterceptedService<pb::bundle_source_server::BundleSourceServer<Source>, OnlyController>;

/// The `BundleSource` service for [`super::serve`]: bundles pushed by the
/// controller of `trust_domain` go to `publisher`. Any other caller is refused
/// before its message is read (an interceptor sees only the verified peer), so a
/// mesh workload cannot make the control plane decode large bodies.
pub fn push_source(publisher: Arc<Mutex<Publisher>>, trust_domain: &TrustDomain) -> Result<PushService, SpiffeIdError> {
    let controller = controller_id(trust_domain)?;
    let source = Source {
        publisher,
        controller: controller.clone(),
    };
    let server = pb::bundle_source_server::BundleSourceServer::new(source).max_decoding_message_size(MAX_MESSAGE_BYTES);
    Ok(InterceptedService::new(server, OnlyController(controller)))
}

/// Lets through only calls whose verified client SVID is the controller's.
#[derive(Debug, Clone)]
pub struct OnlyController(SpiffeId);

impl Interceptor for OnlyController {
    fn call(&mut self, request: Request<()>) -> Result<Request<()>, Status> {
        let caller = request
            .extensions()
            .get::<PeerInfo>()
            .and_then(|peer| peer.svid.as_ref())
            .map(|svid| &svid.id);
        match caller {
            Some(id) if *id == self.0 => Ok(request),
            Some(id) => Err(Status::permission_denied(format!(
                "`{id}` may not publish bundles; only `{}` may",
                self.0
            ))),
            None => Err(Status::unauthenticated("no verified client SVID")),
        }
    }
}

/// The service behind [`push_source`].
#[derive(Debug)]
pub struct Source {
    publisher: Arc<Mutex<Publisher>>,
    controller: SpiffeId,
}

#[tonic::async_trait]
impl pb::bundle_source_server::BundleSource for Source {
    async fn publish(&self, request: Request<pb::PublishRequest>) -> Result<Response<pb::PublishResponse>, Status> {
        let caller = request
            .extensions()
            .get::<PeerInfo>()
            .and_then(|peer| peer.svid.as_ref())
            .map(|svid| svid.id.clone());
        match caller {
            Some(id) if id == self.controller => {}
            Some(id) => {
                return Err(Status::permission_denied(format!(
                    "`{id}` may not publish bundles; only `{}` may",
                    self.controller
                )))
            }
            None => return Err(Status::unauthenticated("no verified client SVID")),
        }
        let files = received(request.into_inner())?;
        let loaded = tokio::task::spawn_blocking(move || load_files(&files).and_then(|_| load_canonical(&files)))
            .await
            .map_err(|_| Status::internal("the bundle loading task failed"))?;
        let offered = self.publisher.lock().await.offer(loaded, "the Kubernetes controller");
        match offered {
            Offered::Published { version, digest } => Ok(answer(version, &digest.to_string(), true)),
            Offered::Unchanged { version, digest } => Ok(answer(version, &digest.to_string(), false)),
            Offered::Rejected { version, diagnostics } => {
                let text = diagnostics.to_string();
                Err(Status::invalid_argument(format!(
                    "the bundle is invalid; version {version} stays:\n{}",
                    cut(&text, MAX_PROBLEMS_BYTES)
                )))
            }
        }
    }
}

/// The pushed files, each path once and within the bundle limits.
fn received(request: pb::PublishRequest) -> Result<BundleFiles, Status> {
    if request.files.len() > MAX_FILES {
        return Err(Status::invalid_argument(format!(
            "{} files were pushed; a bundle holds at most {MAX_FILES}",
            request.files.len()
        )));
    }
    let mut files = BundleFiles::new();
    for file in request.files {
        let path = file.path;
        if files.insert(path.clone(), file.text).is_some() {
            return Err(Status::invalid_argument(format!(
                "`{}` was pushed twice",
                cut(&path, 200)
            )));
        }
    }
    Ok(files)
}

fn answer(version: u64, digest: &str, changed: bool) -> Response<pb::PublishResponse> {
    Response::new(pb::PublishResponse {
        version,
        digest: digest.to_owned(),
        changed,
    })
}

/// Where the control plane is, and the controller's own identity.
#[derive(Debug, Clone)]
pub struct PushParams {
    /// `host:port`.
    pub addr: String,
    /// What the control plane's SVID is verified against.
    pub trust: Arc<Trust>,
    /// The controller's SVID, presented as the TLS client certificate.
    pub resolver: Arc<SvidResolver>,
    /// The server must be [`control_plane_id`] of it.
    pub trust_domain: TrustDomain,
}

/// What the control plane did with a push.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Pushed {
    /// The version now served.
    pub version: u64,
    /// Its digest, `sha256:…`.
    pub digest: String,
    /// False when the bundle was already the current one.
    pub changed: bool,
}

/// A push failed.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum PushError {
    #[error("cannot reach the control plane at `{addr}`: {reason}; is it running with `--from-controller`?")]
    Connect { addr: String, reason: String },
    #[error("the control plane refused the bundle: {}", .0.message())]
    Refused(#[from] Status),
    #[error("the control plane did not answer within {0:?}")]
    Timeout(Duration),
    #[error("TLS setup failed: {0}; check the controller's SVID")]
    Tls(#[from] rustls::Error),
    #[error("the trust domain has no control plane ID: {0}")]
    Identity(#[from] SpiffeIdError),
}

/// Pushes `files` (the whole bundle) to the control plane.
///
/// # Errors
///
/// Connecting failed, the control plane refused (an invalid bundle, or a caller
/// that is not the controller), or it did not answer in time.
pub async fn push(params: &PushParams, files: &BundleFiles) -> Result<Pushed, PushError> {
    let failed = |reason: String| PushError::Connect {
        addr: params.addr.clone(),
        reason,
    };
    let grpc = Endpoint::from_shared(format!("http://{}", params.addr))
        .map_err(|e| failed(format!("it is not a host:port address ({e})")))?
        .connect_timeout(CONNECT_TIMEOUT)
        .timeout(PUSH_TIMEOUT);
    let peer = SvidPeer {
        addr: params.addr.clone(),
        trust: Arc::clone(&params.trust),
        resolver: Arc::clone(&params.resolver),
        expected: control_plane_id(&params.trust_domain)?,
    };
    let channel = svid_channel(grpc, peer).await.map_err(|e| match e {
        ChannelError::Tls(e) => PushError::Tls(e),
        other => failed(other.to_string()),
    })?;
    let request = pb::PublishRequest {
        files: files
            .iter()
            .map(|(path, text)| pb::File {
                path: path.to_owned(),
                text: text.to_owned(),
            })
            .collect(),
    };
    let mut client =
        pb::bundle_source_client::BundleSourceClient::new(channel).max_encoding_message_size(MAX_MESSAGE_BYTES);
    let answer = tokio::time::timeout(PUSH_TIMEOUT, client.publish(request))
        .await
        .map_err(|_| PushError::Timeout(PUSH_TIMEOUT))??
        .into_inner();
    Ok(Pushed {
        version: answer.version,
        digest: answer.digest,
        changed: answer.changed,
    })
}

/// At most `max` bytes of `s`, cut on a character boundary.
fn cut(s: &str, max: usize) -> &str {
    let mut end = s.len().min(max);
    while !s.is_char_boundary(end) {
        end -= 1;
    }
    s.get(..end).unwrap_or_default()
}
