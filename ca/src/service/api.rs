//! The workload API: `Sign`, `GetBundle`, `WatchRevocations`.

use std::pin::Pin;
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use tokio_stream::wrappers::WatchStream;
use tokio_stream::{Stream, StreamExt};
use tonic::{Request, Response, Status};

use super::events::CaEvent;
use super::incoming::{PeerInfo, PeerSvid};
use super::{blocking, issue_status, store_status, token_review, CaState};
use crate::attest::join_token::hash_secret;
use crate::issuer::{IssueError, MAX_LEAF_TTL};
use crate::proto::v1 as pb;
use crate::spiffe_id::SpiffeId;
use crate::store::{IssuanceKind, IssuanceRecord};
use crate::svid::unix_seconds;

#[derive(Debug)]
pub(crate) struct Api {
    state: Arc<CaState>,
}

impl Api {
    pub(crate) fn new(state: Arc<CaState>) -> Self {
        Self { state }
    }
}

/// The one credential a `Sign` call carries; a ServiceAccount token is already
/// reviewed (no Debug: a join token is a secret).
enum Credential {
    Svid(PeerSvid),
    JoinToken(String),
    ServiceAccount(SpiffeId),
}

/// Who the caller is allowed to be, and how that was established.
enum Attested {
    Token { id: SpiffeId, hash: [u8; 32] },
    ServiceAccount { id: SpiffeId },
    Renewal { id: SpiffeId, from: crate::serial::Serial },
}

impl Attested {
    fn id(&self) -> &SpiffeId {
        match self {
            Self::Token { id, .. } | Self::ServiceAccount { id } | Self::Renewal { id, .. } => id,
        }
    }
}

#[tonic::async_trait]
impl pb::ca_server::Ca for Api {
    async fn sign(&self, request: Request<pb::SignRequest>) -> Result<Response<pb::SignResponse>, Status> {
        let peer = request.extensions().get::<PeerInfo>().and_then(|p| p.svid.clone());
        let mut req = request.into_inner();
        let ttl = match req.ttl_seconds {
            0 => self.state.default_ttl,
            s => Duration::from_secs(u64::from(s)),
        };
        if ttl > MAX_LEAF_TTL {
            return Err(Status::invalid_argument(format!(
                "a lifetime of {}s was asked for; the CA signs up to {}s (24 h)",
                ttl.as_secs(),
                MAX_LEAF_TTL.as_secs()
            )));
        }
        let credential = credential(&self.state, peer, &mut req).await?;
        let state = Arc::clone(&self.state);
        blocking(move || sign(&state, credential, &req, ttl))
            .await
            .map(Response::new)
    }

    async fn get_bundle(&self, _request: Request<pb::GetBundleRequest>) -> Result<Response<pb::Bundle>, Status> {
        let bundle = self.state.signer.bundle();
        Ok(Response::new(pb::Bundle {
            trust_domain: bundle.trust_domain().to_string(),
            roots_der: bundle.roots().iter().map(|r| r.to_vec()).collect(),
        }))
    }

    type WatchRevocationsStream = Pin<Box<dyn Stream<Item = Result<pb::SignedRevocationList, Status>> + Send>>;

    async fn watch_revocations(
        &self,
        _request: Request<pb::WatchRevocationsRequest>,
    ) -> Result<Response<Self::WatchRevocationsStream>, Status> {
        let stream = WatchStream::new(self.state.lists.subscribe()).map(|published| Ok(published.signed.clone()));
        Ok(Response::new(Box::pin(stream)))
    }
}

/// Takes the one credential out of the request (so no token travels further) and,
/// for a ServiceAccount token, has the API server review it: before the blocking
/// sign, bounded in time and concurrency.
async fn credential(state: &CaState, peer: Option<PeerSvid>, req: &mut pb::SignRequest) -> Result<Credential, Status> {
    let join_token = std::mem::take(&mut req.join_token);
    let sa_token = std::mem::take(&mut req.service_account_token);
    match (peer, join_token.is_empty(), sa_token.is_empty()) {
        (Some(peer), true, true) => Ok(Credential::Svid(peer)),
        (None, false, true) => Ok(Credential::JoinToken(join_token)),
        (None, true, false) => {
            let td = state.signer.trust_domain();
            let id = token_review::attest(state.token_reviews.as_ref(), td, &sa_token).await?;
            Ok(Credential::ServiceAccount(id))
        }
        (None, true, true) => Err(Status::unauthenticated(
            "no credential: present the current SVID as the TLS client certificate to renew, or a join token from `palisade ca token create`, or a Kubernetes ServiceAccount token",
        )),
        _ => Err(Status::invalid_argument(
            "send exactly one credential: a join token or a ServiceAccount token (first SVID), or a client certificate (renewal)",
        )),
    }
}

fn sign(
    state: &CaState,
    credential: Credential,
    req: &pb::SignRequest,
    ttl: Duration,
) -> Result<pb::SignResponse, Status> {
    let now = SystemTime::now();
    let attested = attest(state, credential, now)?;
    let id = attested.id();
    if state.trust.revocations().is_id_revoked(id) {
        return Err(Status::permission_denied(format!(
            "`{id}` is revoked; the CA issues to it again only after `palisade ca unrevoke --spiffe-id {id}`"
        )));
    }
    let issued = state
        .signer
        .sign_csr(&req.csr_der, id, ttl, now)
        .map_err(|e| sign_status(&attested, e))?;
    let record = IssuanceRecord {
        serial: issued.serial.clone(),
        id: issued.id.clone(),
        kind: match attested {
            Attested::Token { .. } | Attested::ServiceAccount { .. } => IssuanceKind::Issued,
            Attested::Renewal { .. } => IssuanceKind::Renewed,
        },
        not_before_unix: unix_seconds(issued.not_before),
        not_after_unix: unix_seconds(issued.not_after),
        issued_at_unix: unix_seconds(now),
        renewed_from: match &attested {
            Attested::Token { .. } | Attested::ServiceAccount { .. } => None,
            Attested::Renewal { from, .. } => Some(from.clone()),
        },
    };
    match &attested {
        Attested::Token { hash, .. } => {
            if !state
                .store
                .consume_join_token(hash, unix_seconds(now), &record)
                .map_err(store_status)?
            {
                return Err(token_refused());
            }
        }
        Attested::ServiceAccount { .. } => state.store.record_issued(&record).map_err(store_status)?,
        Attested::Renewal { from, .. } => {
            state.store.record_issued(&record).map_err(store_status)?;
            // A revocation that raced this renewal must not miss the new certificate.
            if let Some(ancestor) = state.store.revoked_ancestor(&issued.serial).map_err(store_status)? {
                let target = crate::revocation::RevocationTarget::Serial(issued.serial.clone());
                let why = format!("renewed from revoked serial {ancestor}");
                state
                    .store
                    .revoke(&target, &why, unix_seconds(now))
                    .map_err(store_status)?;
                let _ = state.publish();
                state.report(CaEvent::Revoked { target, reason: why });
                return Err(lineage_revoked(from, &ancestor));
            }
        }
    }
    tracing::info!(id = %issued.id, serial = %issued.serial, kind = ?record.kind, "SVID signed");
    let (id, serial, not_after_unix) = (issued.id.clone(), issued.serial.clone(), record.not_after_unix);
    state.report(match record.kind {
        IssuanceKind::Renewed => CaEvent::Renewed {
            id,
            serial,
            not_after_unix,
        },
        _ => CaEvent::Issued {
            id,
            serial,
            not_after_unix,
        },
    });
    Ok(pb::SignResponse {
        leaf_der: issued.leaf.to_vec(),
        chain_der: state.signer.chain().iter().map(|c| c.to_vec()).collect(),
        bundle_der: state.signer.bundle().roots().iter().map(|r| r.to_vec()).collect(),
        spiffe_id: issued.id.to_string(),
        serial_hex: issued.serial.to_string(),
        not_after_unix: unix_seconds(issued.not_after),
    })
}

/// A refusal to sign. A ServiceAccount token attests one identity: a CSR for any
/// other (another namespace or service account) is a denial naming both.
fn sign_status(attested: &Attested, e: IssueError) -> Status {
    match (attested, e) {
        (Attested::ServiceAccount { id }, IssueError::SanMismatch { found, .. }) => Status::permission_denied(format!(
            "the ServiceAccount token attests `{id}` only, but the CSR names {found}; a pod's token bootstraps the SVID of its own namespace and service account"
        )),
        (_, e) => issue_status(e),
    }
}

/// Establishes the identity the caller may have from its one credential: its
/// current SVID (renewal), a join token or a reviewed ServiceAccount token (first
/// issuance).
fn attest(state: &CaState, credential: Credential, now: SystemTime) -> Result<Attested, Status> {
    match credential {
        Credential::Svid(peer) => {
            // The handshake verified the chain; re-check what may have changed since.
            if now > peer.not_after {
                return Err(Status::unauthenticated(
                    "the client SVID has expired; bootstrap again with a new join token or the pod's ServiceAccount token",
                ));
            }
            let revocations = state.trust.revocations();
            if revocations.is_serial_revoked(&peer.serial) {
                return Err(Status::permission_denied(format!(
                    "the client SVID (serial {}) is revoked; renewal refused",
                    peer.serial
                )));
            }
            if let Some(ancestor) = state.store.revoked_ancestor(&peer.serial).map_err(store_status)? {
                return Err(lineage_revoked(&peer.serial, &ancestor));
            }
            Ok(Attested::Renewal {
                id: peer.id,
                from: peer.serial,
            })
        }
        Credential::JoinToken(join_token) => {
            let hash = hash_secret(&join_token);
            match state
                .store
                .join_token_id(&hash, unix_seconds(now))
                .map_err(store_status)?
            {
                Some(id) => Ok(Attested::Token { id, hash }),
                None => Err(token_refused()),
            }
        }
        Credential::ServiceAccount(id) => Ok(Attested::ServiceAccount { id }),
    }
}

fn lineage_revoked(serial: &crate::serial::Serial, ancestor: &crate::serial::Serial) -> Status {
    Status::permission_denied(format!(
        "the client SVID (serial {serial}) was renewed from revoked serial {ancestor}; renewal refused, bootstrap again with a new join token or the pod's ServiceAccount token"
    ))
}

fn token_refused() -> Status {
    Status::permission_denied(
        "the join token is unknown, already used or expired; create a new one with `palisade ca token create`",
    )
}
