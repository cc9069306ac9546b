//! The operator API: revocations and join tokens, behind the admin credential.
//!
//! Two credentials: `admin.token` may do everything; `revoker.token` may only
//! list revocations, revoke with a reason that starts with
//! [`REVOKER_REASON_PREFIX`], and unrevoke what it revoked (an entry whose reason
//! starts with it). The Kubernetes controller holds the revoker one, so whoever
//! takes the controller can neither mint join tokens (and with them any identity
//! of the mesh) nor undo an operator's `palisade ca revoke`.

use std::sync::Arc;
use std::time::{Duration, SystemTime};

use tonic::{Request, Response, Status};

use super::events::CaEvent;
use super::{blocking, store_status, CaState};
use crate::attest::join_token::{hash_secret, new_secret, secret_matches, DEFAULT_TOKEN_TTL, MAX_TOKEN_TTL};
use crate::proto::v1 as pb;
use crate::revocation::signed::entry_to_proto;
use crate::revocation::RevocationTarget;
use crate::spiffe_id::SpiffeId;
use crate::svid::unix_seconds;

#[derive(Debug)]
pub(crate) struct Admin {
    state: Arc<CaState>,
}

impl Admin {
    pub(crate) fn new(state: Arc<CaState>) -> Self {
        Self { state }
    }

    /// Lets the call through when it carries a credential that may do `scope`;
    /// which one it was.
    fn authorize<T>(&self, request: &Request<T>, scope: Scope) -> Result<Caller, Status> {
        let presented = request
            .metadata()
            .get("authorization")
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.strip_prefix("Bearer "));
        let Some(token) = presented else {
            return Err(unauthenticated());
        };
        if secret_matches(token, &self.state.admin_hash) {
            return Ok(Caller::Admin);
        }
        let revoker = (self.state.revoker_hash.as_deref()).is_some_and(|hash| secret_matches(token, hash));
        match (revoker, scope) {
            (true, Scope::Revocations) => Ok(Caller::Revoker),
            (true, Scope::Admin) => Err(Status::permission_denied(
                "this credential (`revoker.token`) may only revoke, unrevoke and list revocations; \
                 creating join tokens needs the CA directory's `admin.token`",
            )),
            (false, _) => Err(unauthenticated()),
        }
    }
}

/// The start of the reason of every revocation `revoker.token` makes: the
/// entries it may unrevoke. The Kubernetes controller writes
/// `k8s:certificaterevocation/NAME: REASON`.
pub const REVOKER_REASON_PREFIX: &str = "k8s:certificaterevocation/";

/// Who called.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Caller {
    Admin,
    Revoker,
}

/// The most entries `revoker.token` may have revoked at once.
pub const MAX_REVOKER_ENTRIES: usize = 10_000;

/// Whether `revoker.token` may revoke `target`: a workload of this CA's trust
/// domain outside `palisade-system` (the CA, control plane, audit service and
/// controller live there), by SPIFFE ID or by the serial of one of its
/// certificates, while it holds fewer than [`MAX_REVOKER_ENTRIES`].
fn revoker_may_revoke(state: &CaState, target: &RevocationTarget) -> Result<(), Status> {
    let td = state.signer.trust_domain();
    let id = match target {
        RevocationTarget::SpiffeId(id) => Some(id.clone()),
        RevocationTarget::Serial(serial) => state.store.issued(serial).map_err(store_status)?.map(|r| r.id),
    };
    if let Some(id) = &id {
        let system = id.namespace() == Some(SYSTEM_NAMESPACE);
        if !id.is_member_of(td) || id.path().is_empty() || system {
            return Err(revoker_refused(&format!(
                "revokes only workloads of trust domain `{td}` outside namespace `{SYSTEM_NAMESPACE}`, not `{id}`"
            )));
        }
    }
    let (_, entries) = state.store.revocations().map_err(store_status)?;
    let owned = entries
        .iter()
        .filter(|e| e.reason.starts_with(REVOKER_REASON_PREFIX))
        .count();
    if owned >= MAX_REVOKER_ENTRIES {
        return Err(Status::resource_exhausted(format!(
            "`revoker.token` holds {owned} revocations, its limit; unrevoke some, or revoke with `admin.token`"
        )));
    }
    Ok(())
}

/// The namespace of Palisade's own services.
const SYSTEM_NAMESPACE: &str = "palisade-system";

/// What the revoker may not do, in words.
fn revoker_refused(what: &str) -> Status {
    Status::permission_denied(format!(
        "this credential (`revoker.token`) {what}; use the CA directory's `admin.token`"
    ))
}

/// What a call needs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Scope {
    /// Revoke, unrevoke, list revocations: `admin.token` or `revoker.token`.
    Revocations,
    /// Everything else: `admin.token` only.
    Admin,
}

fn unauthenticated() -> Status {
    Status::unauthenticated(
        "missing or wrong admin credential; pass the CA directory's `admin.token` (--dir or --admin-token-file), \
         or `revoker.token` for revocations",
    )
}

#[tonic::async_trait]
impl pb::ca_admin_server::CaAdmin for Admin {
    async fn revoke(&self, request: Request<pb::RevokeRequest>) -> Result<Response<pb::RevocationChange>, Status> {
        let caller = self.authorize(&request, Scope::Revocations)?;
        let req = request.into_inner();
        let target = target(req.target.as_ref())?;
        let reason: String = req.reason.chars().filter(|c| !c.is_control()).take(256).collect();
        if caller == Caller::Revoker && !reason.starts_with(REVOKER_REASON_PREFIX) {
            return Err(revoker_refused(&format!(
                "revokes only with a reason that starts with `{REVOKER_REASON_PREFIX}`"
            )));
        }
        let state = Arc::clone(&self.state);
        blocking(move || {
            if caller == Caller::Revoker {
                revoker_may_revoke(&state, &target)?;
            }
            let (mut version, mut changed) = state
                .store
                .revoke(&target, &reason, unix_seconds(SystemTime::now()))
                .map_err(store_status)?;
            if caller == Caller::Admin && !changed && !reason.starts_with(REVOKER_REASON_PREFIX) {
                // Already revoked by the controller: the operator's revocation
                // takes it over, so the controller's credential cannot undo it.
                (version, changed) = (state.store)
                    .take_over(&target, &reason, REVOKER_REASON_PREFIX)
                    .map_err(store_status)?;
            }
            state.publish().map_err(|e| Status::internal(e.to_string()))?;
            tracing::info!(%target, version, changed, "revoked");
            if changed {
                state.report(CaEvent::Revoked { target, reason });
            }
            Ok(pb::RevocationChange { version, changed })
        })
        .await
        .map(Response::new)
    }

    async fn unrevoke(&self, request: Request<pb::UnrevokeRequest>) -> Result<Response<pb::RevocationChange>, Status> {
        let caller = self.authorize(&request, Scope::Revocations)?;
        let target = target(request.get_ref().target.as_ref())?;
        let state = Arc::clone(&self.state);
        blocking(move || {
            let (version, changed) = match caller {
                Caller::Admin => state.store.unrevoke(&target).map_err(store_status)?,
                // Checked and deleted in one transaction: no operator's entry can
                // slip in between.
                Caller::Revoker => (state.store)
                    .unrevoke_own(&target, REVOKER_REASON_PREFIX)
                    .map_err(store_status)?
                    .ok_or_else(|| revoker_refused("unrevokes only what it revoked"))?,
            };
            state.publish().map_err(|e| Status::internal(e.to_string()))?;
            tracing::info!(%target, version, changed, "unrevoked");
            if changed {
                state.report(CaEvent::Unrevoked { target });
            }
            Ok(pb::RevocationChange { version, changed })
        })
        .await
        .map(Response::new)
    }

    async fn create_join_token(
        &self,
        request: Request<pb::CreateJoinTokenRequest>,
    ) -> Result<Response<pb::JoinToken>, Status> {
        let _admin = self.authorize(&request, Scope::Admin)?;
        let req = request.into_inner();
        let id = SpiffeId::parse(&req.spiffe_id).map_err(|e| Status::invalid_argument(e.to_string()))?;
        let td = self.state.signer.trust_domain();
        if !id.is_member_of(td) {
            return Err(Status::invalid_argument(format!(
                "`{id}` is not in this CA's trust domain `{td}`"
            )));
        }
        if id.path().is_empty() {
            return Err(Status::invalid_argument(format!(
                "`{id}` names the trust domain, not a workload"
            )));
        }
        let ttl = match req.ttl_seconds {
            0 => DEFAULT_TOKEN_TTL,
            s => Duration::from_secs(u64::from(s)),
        };
        if ttl > MAX_TOKEN_TTL {
            return Err(Status::invalid_argument(format!(
                "a join token lives at most {}s (24 h)",
                MAX_TOKEN_TTL.as_secs()
            )));
        }
        let state = Arc::clone(&self.state);
        blocking(move || {
            let token = new_secret().map_err(|e| Status::internal(e.to_string()))?;
            let now = unix_seconds(SystemTime::now());
            let expires = now.saturating_add(i64::try_from(ttl.as_secs()).unwrap_or(i64::MAX));
            state
                .store
                .insert_join_token(&hash_secret(&token), &id, now, expires)
                .map_err(store_status)?;
            tracing::info!(%id, expires, "join token created");
            Ok(pb::JoinToken {
                token,
                spiffe_id: id.to_string(),
                expires_at_unix: expires,
            })
        })
        .await
        .map(Response::new)
    }

    async fn list_revocations(
        &self,
        request: Request<pb::ListRevocationsRequest>,
    ) -> Result<Response<pb::RevocationListing>, Status> {
        let _any = self.authorize(&request, Scope::Revocations)?;
        let state = Arc::clone(&self.state);
        blocking(move || {
            let (version, entries) = state.store.revocations().map_err(store_status)?;
            Ok(pb::RevocationListing {
                version,
                entries: entries.iter().map(entry_to_proto).collect(),
            })
        })
        .await
        .map(Response::new)
    }
}

fn target(t: Option<&pb::RevocationTarget>) -> Result<RevocationTarget, Status> {
    use pb::revocation_target::Target;
    match t.and_then(|t| t.target.as_ref()) {
        Some(Target::SerialHex(s)) => s
            .parse()
            .map(RevocationTarget::Serial)
            .map_err(|e| Status::invalid_argument(format!("{e}"))),
        Some(Target::SpiffeId(id)) => SpiffeId::parse(id)
            .map(RevocationTarget::SpiffeId)
            .map_err(|e| Status::invalid_argument(e.to_string())),
        None => Err(Status::invalid_argument("name what to revoke: a serial or a SPIFFE ID")),
    }
}
