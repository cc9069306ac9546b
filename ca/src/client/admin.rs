//! The operator's client for the CA's admin API (`palisade ca revoke`, …).

use std::time::Duration;

use tonic::metadata::{Ascii, MetadataValue};
use tonic::service::interceptor::InterceptedService;
use tonic::transport::Channel;
use tonic::{Request, Status};

use super::{connect, CaEndpoint, ClientError};
use crate::proto::v1 as pb;
use crate::revocation::signed::entry_from_proto;
use crate::revocation::{RevocationEntry, RevocationTarget};
use crate::spiffe_id::SpiffeId;
use crate::tls::SvidResolver;

/// Adds the admin credential to every call.
#[derive(Clone, Debug)]
pub struct BearerAuth(MetadataValue<Ascii>);

impl tonic::service::Interceptor for BearerAuth {
    fn call(&mut self, mut request: Request<()>) -> Result<Request<()>, Status> {
        request.metadata_mut().insert("authorization", self.0.clone());
        Ok(request)
    }
}

/// A connected admin client.
#[derive(Debug, Clone)]
pub struct AdminClient {
    inner: pb::ca_admin_client::CaAdminClient<InterceptedService<Channel, BearerAuth>>,
}

impl AdminClient {
    pub async fn connect(endpoint: &CaEndpoint, admin_token: &str) -> Result<Self, ClientError> {
        let header = format!("Bearer {}", admin_token.trim())
            .parse::<MetadataValue<Ascii>>()
            .map_err(|_| {
                ClientError::Key(
                    "the admin credential is not printable ASCII; use the CA directory's admin.token".into(),
                )
            })?;
        let channel = connect(endpoint, SvidResolver::empty()).await?;
        Ok(Self {
            inner: pb::ca_admin_client::CaAdminClient::with_interceptor(channel, BearerAuth(header)),
        })
    }

    /// Revokes; returns the list version after the call and whether it changed.
    pub async fn revoke(&mut self, target: &RevocationTarget, reason: &str) -> Result<(u64, bool), ClientError> {
        let r = self
            .inner
            .revoke(pb::RevokeRequest {
                target: Some(target_proto(target)),
                reason: reason.to_string(),
            })
            .await?
            .into_inner();
        Ok((r.version, r.changed))
    }

    pub async fn unrevoke(&mut self, target: &RevocationTarget) -> Result<(u64, bool), ClientError> {
        let r = self
            .inner
            .unrevoke(pb::UnrevokeRequest {
                target: Some(target_proto(target)),
            })
            .await?
            .into_inner();
        Ok((r.version, r.changed))
    }

    pub async fn create_join_token(
        &mut self,
        id: &SpiffeId,
        ttl: Option<Duration>,
    ) -> Result<pb::JoinToken, ClientError> {
        let ttl_seconds = ttl.map(|t| u32::try_from(t.as_secs()).unwrap_or(u32::MAX)).unwrap_or(0);
        Ok(self
            .inner
            .create_join_token(pb::CreateJoinTokenRequest {
                spiffe_id: id.to_string(),
                ttl_seconds,
            })
            .await?
            .into_inner())
    }

    pub async fn list_revocations(&mut self) -> Result<(u64, Vec<RevocationEntry>), ClientError> {
        let r = self
            .inner
            .list_revocations(pb::ListRevocationsRequest {})
            .await?
            .into_inner();
        let entries = r
            .entries
            .iter()
            .map(entry_from_proto)
            .collect::<Result<_, _>>()
            .map_err(ClientError::BadResponse)?;
        Ok((r.version, entries))
    }
}

fn target_proto(t: &RevocationTarget) -> pb::RevocationTarget {
    use pb::revocation_target::Target;
    pb::RevocationTarget {
        target: Some(match t {
            RevocationTarget::Serial(s) => Target::SerialHex(s.to_string()),
            RevocationTarget::SpiffeId(id) => Target::SpiffeId(id.to_string()),
        }),
    }
}
