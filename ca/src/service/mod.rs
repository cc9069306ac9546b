//! The CA service (`palisade ca serve`): tonic gRPC over TLS, the CA presenting its
//! own SVID.
//!
//! [`CaState`] holds everything a call needs; state changes go to the [`Store`]
//! first and are published only once durable. Revocation lists are signed once per
//! version and fanned out to every `WatchRevocations` stream through a `watch`
//! channel. The store is also polled, so a revocation written by an offline
//! `palisade ca revoke --offline` reaches a running CA's watchers.
//!
//! A first SVID is attested by a join token or, with a [`TokenReviewer`], by a
//! Kubernetes ServiceAccount token ([`token_review`]); a renewal by the caller's
//! current SVID.

mod admin;
mod api;
pub mod events;
pub mod incoming;
mod token_review;

pub use admin::REVOKER_REASON_PREFIX;
pub use token_review::ReviewLimits;

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use tokio::net::TcpListener;
use tokio::sync::{mpsc, watch};
use tokio_stream::wrappers::ReceiverStream;
use tonic::Status;

use self::events::{CaEvent, CaEvents};
use self::token_review::TokenReviews;
use crate::attest::service_account::TokenReviewer;
use crate::dir::{CaDir, CaDirError};
use crate::issuer::{CaSigner, IssueError};
use crate::proto::v1 as pb;
use crate::revocation::signed::sign_list;
use crate::revocation::RevocationSet;
use crate::spiffe_id::{SpiffeId, TrustDomain};
use crate::store::{IssuanceKind, IssuanceRecord, Store, StoreError};
use crate::svid::unix_seconds;
use crate::tls::SvidResolver;
use crate::verify::{SvidClientVerifier, Trust};

/// The SPIFFE ID the CA serves under: `spiffe://TD/ns/palisade-system/sa/palisade-ca`.
pub fn ca_spiffe_id(td: &TrustDomain) -> Result<SpiffeId, crate::spiffe_id::SpiffeIdError> {
    SpiffeId::mesh(td, "palisade-system", "palisade-ca")
}

/// Lifetime of the CA's own serving SVID; it is renewed at half of it.
const OWN_SVID_TTL: Duration = Duration::from_secs(24 * 3600);
/// How often the store is checked for revocations made by other processes.
const STORE_POLL: Duration = Duration::from_secs(2);

/// The CA could not start or stopped.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ServeError {
    #[error(transparent)]
    Dir(#[from] CaDirError),
    #[error(transparent)]
    Store(#[from] StoreError),
    #[error(transparent)]
    Issue(#[from] IssueError),
    #[error("cannot listen on {addr}: {source}; pick a free address with --listen")]
    Bind {
        addr: SocketAddr,
        #[source]
        source: std::io::Error,
    },
    #[error("TLS setup failed: {0}")]
    Tls(#[from] rustls::Error),
    #[error("the gRPC server failed: {0}")]
    Grpc(#[from] tonic::transport::Error),
    #[error("the CA directory has no admin credential hash; re-create it with `palisade ca init`")]
    NoAdminCredential,
}

/// A signed revocation list and its version, as published.
#[derive(Debug)]
pub(crate) struct Published {
    pub version: u64,
    pub signed: pb::SignedRevocationList,
}

/// Everything the CA's calls share.
#[derive(Debug)]
pub struct CaState {
    pub(crate) signer: CaSigner,
    pub(crate) store: Store,
    pub(crate) trust: Arc<Trust>,
    pub(crate) lists: watch::Sender<Arc<Published>>,
    pub(crate) admin_hash: String,
    /// The revoker credential's: revocations only.
    pub(crate) revoker_hash: Option<String>,
    pub(crate) default_ttl: Duration,
    pub(crate) events: Option<Arc<dyn CaEvents>>,
    /// `None`: ServiceAccount tokens are refused.
    pub(crate) token_reviews: Option<TokenReviews>,
}

impl CaState {
    /// Loads the CA from its directory, with the settings of `params`.
    pub fn load(params: &ServeParams) -> Result<Arc<Self>, ServeError> {
        let signer = params.dir.signer()?;
        let store = params.dir.store()?;
        let admin_hash = store.admin_token_hash()?.ok_or(ServeError::NoAdminCredential)?;
        params.dir.ensure_revoker_token(&store)?;
        let revoker_hash = store.revoker_token_hash()?;
        let trust = Trust::new(signer.bundle().clone(), RevocationSet::default());
        trust.learn_intermediates(signer.chain());
        let (lists, _) = watch::channel(Arc::new(Published {
            version: 0,
            signed: pb::SignedRevocationList::default(),
        }));
        let state = Arc::new(Self {
            signer,
            store,
            trust,
            lists,
            admin_hash,
            revoker_hash,
            default_ttl: params.default_ttl,
            events: params.events.clone(),
            token_reviews: params.reviewer.as_ref().map(|reviewer| {
                TokenReviews::new(
                    Arc::clone(reviewer),
                    params.token_audience.clone(),
                    params.review_limits,
                )
            }),
        });
        state.publish()?;
        Ok(state)
    }

    /// Signs the store's current revocation list and publishes it if it is newer.
    pub(crate) fn publish(&self) -> Result<u64, ServeError> {
        let (version, entries) = self.store.revocations()?;
        if version <= self.lists.borrow().version {
            return Ok(version);
        }
        let signed = sign_list(&self.signer, version, unix_seconds(SystemTime::now()), &entries)?;
        self.trust.update_revocations(RevocationSet::new(version, &entries));
        self.lists.send_if_modified(|current| {
            let newer = version > current.version;
            if newer {
                *current = Arc::new(Published { version, signed });
            }
            newer
        });
        tracing::info!(version, entries = entries.len(), "revocation list published");
        Ok(version)
    }

    /// Reports an event to the sink, if there is one.
    pub(crate) fn report(&self, event: CaEvent) {
        if let Some(events) = &self.events {
            events.event(event);
        }
    }

    /// Issues the CA's own serving SVID (its key stays in this process).
    fn own_svid(&self) -> Result<crate::svid::Svid, ServeError> {
        let td = self.signer.trust_domain();
        let id = ca_spiffe_id(td).map_err(|e| IssueError::Internal(e.to_string()))?;
        let now = SystemTime::now();
        let svid = self.signer.mint(&id, OWN_SVID_TTL, now)?;
        self.store.record_issued(&IssuanceRecord {
            serial: svid.serial().clone(),
            id,
            kind: IssuanceKind::Issued,
            not_before_unix: unix_seconds(svid.not_before()),
            not_after_unix: unix_seconds(svid.not_after()),
            issued_at_unix: unix_seconds(now),
            renewed_from: None,
        })?;
        self.report(CaEvent::Issued {
            id: svid.id().clone(),
            serial: svid.serial().clone(),
            not_after_unix: unix_seconds(svid.not_after()),
        });
        Ok(svid)
    }
}

/// What `ca serve` needs.
#[derive(Debug, Clone)]
pub struct ServeParams {
    pub dir: CaDir,
    pub listen: SocketAddr,
    pub default_ttl: Duration,
    /// Where CA events go (the audit service), if anywhere.
    pub events: Option<Arc<dyn CaEvents>>,
    /// Reviews Kubernetes ServiceAccount tokens (`--kubernetes-attestation`);
    /// `None`: the CA refuses them.
    pub reviewer: Option<Arc<dyn TokenReviewer>>,
    /// The audience a ServiceAccount token must be for (`palisade-ca` by default,
    /// [`crate::attest::service_account::DEFAULT_AUDIENCE`]).
    pub token_audience: String,
    /// Bounds on the reviews asked of the API server.
    pub review_limits: ReviewLimits,
}

/// What a started CA tells its caller.
#[derive(Debug, Clone)]
pub struct Started {
    /// The bound address (differs from `listen` when port 0 was asked for).
    pub addr: SocketAddr,
    /// The CA's own SVID, renewed in place: a client identity for talking to the
    /// audit service.
    pub resolver: Arc<SvidResolver>,
    /// The trust bundle and the live revocations.
    pub trust: Arc<Trust>,
}

/// Runs the CA until `shutdown` resolves. `on_listening` is told the bound address
/// (also written to the directory's `ca.addr`), the CA's own SVID and its trust.
pub async fn serve(
    params: ServeParams,
    on_listening: impl FnOnce(Started),
    shutdown: impl std::future::Future<Output = ()> + Send,
) -> Result<(), ServeError> {
    let state = CaState::load(&params)?;
    let resolver = SvidResolver::with(&state.own_svid()?)?;
    let verifier = SvidClientVerifier::new(Arc::clone(&state.trust), false);
    let tls = crate::tls::server_config(Arc::clone(&resolver), verifier, &[b"h2"])?;
    let listener = TcpListener::bind(params.listen)
        .await
        .map_err(|source| ServeError::Bind {
            addr: params.listen,
            source,
        })?;
    let bound = listener.local_addr().map_err(|source| ServeError::Bind {
        addr: params.listen,
        source,
    })?;
    params.dir.write_addr(&bound.to_string())?;
    on_listening(Started {
        addr: bound,
        resolver: Arc::clone(&resolver),
        trust: Arc::clone(&state.trust),
    });

    let (tx, rx) = mpsc::channel(64);
    let accept = tokio::spawn(incoming::accept_loop(listener, incoming::acceptor(tls), tx));
    let background = tokio::spawn(background(Arc::clone(&state), resolver));
    let result = tonic::transport::Server::builder()
        .http2_keepalive_interval(Some(Duration::from_secs(30)))
        .add_service(pb::ca_server::CaServer::new(api::Api::new(Arc::clone(&state))))
        .add_service(pb::ca_admin_server::CaAdminServer::new(admin::Admin::new(Arc::clone(
            &state,
        ))))
        .serve_with_incoming_shutdown(ReceiverStream::new(rx), shutdown)
        .await;
    accept.abort();
    background.abort();
    Ok(result?)
}

/// Renews the CA's own SVID at half its life and picks up revocations written to
/// the store by other processes.
async fn background(state: Arc<CaState>, resolver: Arc<SvidResolver>) {
    let mut renew_at = tokio::time::Instant::now() + OWN_SVID_TTL / 2;
    loop {
        tokio::time::sleep(STORE_POLL).await;
        let s = Arc::clone(&state);
        if let Ok(Err(e)) = tokio::task::spawn_blocking(move || s.publish()).await {
            tracing::warn!(error = %e, "cannot read revocations from the store");
        }
        if tokio::time::Instant::now() >= renew_at {
            match state.own_svid().map(|svid| resolver.set(&svid)) {
                Ok(Ok(())) => renew_at = tokio::time::Instant::now() + OWN_SVID_TTL / 2,
                Ok(Err(e)) => tracing::error!(error = %e, "cannot install the CA's renewed SVID"),
                Err(e) => tracing::error!(error = %e, "cannot renew the CA's own SVID"),
            }
        }
    }
}

/// Runs a blocking store/signing step off the async runtime.
pub(crate) async fn blocking<T: Send + 'static>(
    f: impl FnOnce() -> Result<T, Status> + Send + 'static,
) -> Result<T, Status> {
    tokio::task::spawn_blocking(f)
        .await
        .map_err(|e| Status::internal(format!("the CA task failed: {e}")))?
}

/// The gRPC status for a refusal to issue.
pub(crate) fn issue_status(e: IssueError) -> Status {
    match e {
        IssueError::Internal(_) | IssueError::BadRoot(_) => Status::internal(e.to_string()),
        _ => Status::invalid_argument(e.to_string()),
    }
}

pub(crate) fn store_status(e: StoreError) -> Status {
    tracing::error!(error = %e, "CA state failure");
    Status::unavailable(format!("the CA could not record the change, nothing was done: {e}"))
}
