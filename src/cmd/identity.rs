//! The identity of a Palisade service (control plane, audit service): its SVID from
//! a join token, renewed at half-life, and the CA's revocations followed so that
//! revoked peers are refused.

use std::path::Path;
use std::sync::Arc;

use palisade_ca::client::revocations;
use palisade_ca::client::rotation::{self, Bootstrap, RotationParams};
use palisade_ca::client::CaEndpoint;
use palisade_ca::tls::SvidResolver;
use palisade_ca::verify::Trust;
use palisade_ca::{SpiffeId, TrustBundle, TrustDomain};
use tokio::sync::watch;
use tokio::task::JoinHandle;

use super::UsageError;

/// A service's live identity and the tasks that keep it live.
pub struct ServiceIdentity {
    pub resolver: Arc<SvidResolver>,
    pub trust: Arc<Trust>,
    pub tasks: Vec<JoinHandle<()>>,
}

impl ServiceIdentity {
    /// Gets the first SVID for `id` with `join_token`, then keeps it fresh and
    /// follows revocations.
    pub async fn start(
        ca: &str,
        trust_bundle: &Path,
        td: &TrustDomain,
        id: SpiffeId,
        join_token: &str,
    ) -> anyhow::Result<Self> {
        let bundle = TrustBundle::load(td.clone(), trust_bundle).map_err(|e| {
            UsageError(format!(
                "cannot read the trust bundle `{}` for trust domain {td}: {e}",
                trust_bundle.display()
            ))
        })?;
        let endpoint = CaEndpoint::new(ca.to_owned(), bundle);
        let trust = Arc::clone(&endpoint.trust);
        let (svids, rotation) = rotation::start(RotationParams {
            endpoint: endpoint.clone(),
            id,
            bootstrap: Bootstrap::JoinToken(join_token.to_owned()),
            ttl: None,
        })
        .await?;
        let resolver = SvidResolver::with(&svids.borrow())?;
        let follow_svids = resolver.follow(svids);
        let (revocation_tx, _revocation_rx) = watch::channel(None);
        let revocations = tokio::spawn(revocations::follow(
            endpoint,
            Arc::clone(&resolver),
            Arc::clone(&trust),
            revocation_tx,
        ));
        Ok(Self {
            resolver,
            trust,
            tasks: vec![rotation, follow_svids, revocations],
        })
    }
}

impl Drop for ServiceIdentity {
    fn drop(&mut self) {
        for task in &self.tasks {
            task.abort();
        }
    }
}
