//! The proxy's side: follow the control plane's stream of snapshots, hand each to
//! the proxy, and answer ACK or NACK. Reconnects forever, with backoff.

use std::sync::Arc;
use std::time::Duration;

use tokio::sync::watch;
use tokio::task::JoinHandle;
use tonic::transport::{Channel, Endpoint};

use palisade_ca::client::{svid_channel, ChannelError, SvidPeer};
use palisade_ca::tls::SvidResolver;
use palisade_ca::verify::Trust;
use palisade_ca::{SpiffeIdError, TrustDomain};

use super::control_plane_id;
use crate::bundle::MAX_TOTAL_BYTES;
use crate::proto::v1 as pb;
use crate::snapshot::{Snapshot, SnapshotDigest, SnapshotError};

/// How long connecting (TCP + TLS) may take.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(5);
/// How long an acknowledgement may take.
const ACK_TIMEOUT: Duration = Duration::from_secs(10);
/// The first wait before reconnecting; it doubles up to [`MAX_BACKOFF`].
const MIN_BACKOFF: Duration = Duration::from_millis(100);
const MAX_BACKOFF: Duration = Duration::from_secs(5);
/// The largest snapshot message accepted: a bundle at its size limits, with room
/// for paths and framing.
const MAX_MESSAGE_BYTES: usize = 2 * MAX_TOTAL_BYTES;

/// Where the control plane is and how to recognize it.
#[derive(Debug, Clone)]
pub struct FollowParams {
    /// `host:port`.
    pub addr: String,
    /// What the control plane's SVID is verified against.
    pub trust: Arc<Trust>,
    /// The proxy's own SVID, presented as the TLS client certificate (kept rotated
    /// by the caller).
    pub resolver: Arc<SvidResolver>,
    /// The mesh's trust domain: the server must be [`control_plane_id`] of it.
    pub trust_domain: TrustDomain,
}

/// What the follower shows of itself (for the proxy's admin page).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct FollowState {
    /// A `Watch` stream is open now.
    pub connected: bool,
    /// The last snapshot applied.
    pub applied: Option<(u64, SnapshotDigest)>,
    /// The last failure: of the connection, or a snapshot refused.
    pub last_error: Option<String>,
}

/// A running follower.
#[derive(Debug)]
pub struct Follower {
    /// Its state, updated as it changes.
    pub state: watch::Receiver<FollowState>,
    /// The task; it runs until aborted.
    pub task: JoinHandle<()>,
}

/// Why one stream ended.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum FollowError {
    #[error("cannot reach the control plane at `{addr}`: {reason}; is it running there, and does it present the control plane's SVID?")]
    Connect { addr: String, reason: String },
    #[error("the control plane refused: {}", .0.message())]
    Refused(#[from] tonic::Status),
    #[error("the control plane did not take the acknowledgement within {0:?}")]
    AckTimeout(Duration),
    #[error("TLS setup failed: {0}; check the proxy's SVID")]
    Tls(#[from] rustls::Error),
    #[error("the trust domain has no control plane ID: {0}")]
    Identity(#[from] SpiffeIdError),
}

/// Follows the control plane's snapshots for this proxy until aborted. Each
/// snapshot goes to `apply` (where the proxy loads it with [`Snapshot::load`] and
/// builds its engine); `Ok` is sent back as an ACK, `Err` as a NACK with its
/// message, and the proxy keeps what it had. A snapshot that arrives malformed is
/// NACKed without calling `apply`.
///
/// `apply` runs on the follower's task: keep it short, or hand heavy work off.
/// Must be called from within a Tokio runtime.
pub fn follow(params: FollowParams, apply: impl FnMut(Snapshot) -> Result<(), String> + Send + 'static) -> Follower {
    let (state_tx, state) = watch::channel(FollowState::default());
    let task = tokio::spawn(run(params, Box::new(apply), state_tx));
    Follower { state, task }
}

type Apply = Box<dyn FnMut(Snapshot) -> Result<(), String> + Send>;

/// Streams, reconnecting with exponential backoff (reset after a stream that
/// delivered a snapshot).
async fn run(params: FollowParams, mut apply: Apply, state: watch::Sender<FollowState>) {
    let mut backoff = MIN_BACKOFF;
    loop {
        let mut delivered = false;
        let result = stream(&params, &mut apply, &state, &mut delivered).await;
        if delivered {
            backoff = MIN_BACKOFF;
        }
        state.send_modify(|s| {
            s.connected = false;
            if let Err(e) = &result {
                s.last_error = Some(e.to_string());
            }
        });
        match result {
            Ok(()) => tracing::info!(addr = %params.addr, "the control plane ended the policy stream; reconnecting"),
            Err(e) => {
                tracing::warn!(error = %e, retry_in = ?backoff, "policy stream failed; keeping the last good policy")
            }
        }
        tokio::time::sleep(backoff).await;
        backoff = (backoff * 2).min(MAX_BACKOFF);
    }
}

/// One connection: `Watch`, then apply and answer each snapshot until the stream ends.
async fn stream(
    params: &FollowParams,
    apply: &mut Apply,
    state: &watch::Sender<FollowState>,
    delivered: &mut bool,
) -> Result<(), FollowError> {
    let channel = connect(params).await?;
    let mut client = pb::policy_distribution_client::PolicyDistributionClient::new(channel)
        .max_decoding_message_size(MAX_MESSAGE_BYTES);
    let mut snapshots = client.watch(pb::WatchRequest {}).await?.into_inner();
    state.send_modify(|s| s.connected = true);
    tracing::info!(addr = %params.addr, "policy stream opened");
    while let Some(message) = snapshots.message().await? {
        *delivered = true;
        let (version, digest) = (message.version, message.digest.clone());
        let verdict = from_wire(message).map_err(|e| e.to_string()).and_then(|snapshot| {
            let digest = snapshot.digest();
            apply(snapshot).map(|()| digest)
        });
        state.send_modify(|s| match &verdict {
            Ok(digest) => s.applied = Some((version, *digest)),
            Err(error) => s.last_error = Some(error.clone()),
        });
        if let Err(error) = &verdict {
            tracing::warn!(version, %error, "snapshot refused; keeping the last good policy");
        }
        let ack = pb::AckRequest {
            version,
            digest,
            accepted: verdict.is_ok(),
            error: verdict.err().unwrap_or_default(),
        };
        tokio::time::timeout(ACK_TIMEOUT, client.ack(ack))
            .await
            .map_err(|_| FollowError::AckTimeout(ACK_TIMEOUT))??;
    }
    Ok(())
}

/// A channel to the control plane over TLS 1.3, presenting the proxy's SVID and
/// accepting only a server presenting [`control_plane_id`] (secure naming).
async fn connect(params: &FollowParams) -> Result<Channel, FollowError> {
    let failed = |reason: String| FollowError::Connect {
        addr: params.addr.clone(),
        reason,
    };
    let grpc = Endpoint::from_shared(format!("http://{}", params.addr))
        .map_err(|e| failed(format!("it is not a host:port address ({e})")))?
        .connect_timeout(CONNECT_TIMEOUT)
        .http2_keep_alive_interval(Duration::from_secs(30))
        .keep_alive_timeout(Duration::from_secs(10))
        .keep_alive_while_idle(true);
    let peer = SvidPeer {
        addr: params.addr.clone(),
        trust: Arc::clone(&params.trust),
        resolver: Arc::clone(&params.resolver),
        expected: control_plane_id(&params.trust_domain)?,
    };
    svid_channel(grpc, peer).await.map_err(|e| match e {
        ChannelError::Tls(e) => FollowError::Tls(e),
        other => failed(other.to_string()),
    })
}

fn from_wire(message: pb::Snapshot) -> Result<Snapshot, SnapshotError> {
    let files = message.files.into_iter().map(|file| (file.path, file.text));
    Snapshot::received(message.version, &message.digest, files)
}
