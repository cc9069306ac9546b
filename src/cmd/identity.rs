//! The identity of a Palisade service (control plane, audit service, controller): its
//! SVID from a join token or a ServiceAccount token, renewed at half-life, and the CA's revocations followed so that
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
use crate::cli::FirstSvidArgs;

/// A service's live identity and the tasks that keep it live.
pub struct ServiceIdentity {
    pub resolver: Arc<SvidResolver>,
    pub trust: Arc<Trust>,
    pub tasks: Vec<JoinHandle<()>>,
}

impl ServiceIdentity {
    /// Gets the first SVID for `id` as `first` says, then keeps it fresh and
    /// follows revocations.
    pub async fn start(
        ca: &str,
        trust_bundle: &Path,
        td: &TrustDomain,
        id: SpiffeId,
        first: &FirstSvidArgs,
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
            bootstrap: bootstrap(first)?,
            ttl: None.into(),
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

/// The first-SVID credential the flags give (clap lets exactly one through).
fn bootstrap(first: &FirstSvidArgs) -> anyhow::Result<Bootstrap> {
    match (&first.join_token, &first.service_account_token_file) {
        (Some(token), None) => Ok(Bootstrap::JoinToken(token.clone())),
        (None, Some(file)) => Ok(Bootstrap::ServiceAccountToken(file.clone())),
        _ => Err(UsageError("give --join-token or --service-account-token-file (one of them)".into()).into()),
    }
}

impl Drop for ServiceIdentity {
    fn drop(&mut self) {
        for task in &self.tasks {
            task.abort();
        }
    }
}
