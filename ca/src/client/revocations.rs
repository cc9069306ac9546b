//! Following the CA's revocation lists: each list is verified against the trust
//! bundle and installed into the peer's [`Trust`] only when newer, so every later
//! handshake refuses the revoked. Subscribers are told each installed version
//! (proxies use it to close live connections of a revoked peer).

use std::sync::Arc;
use std::time::SystemTime;

use tokio::sync::watch;
use tokio_stream::StreamExt;

use super::rotation::Backoff;
use super::{connect, CaEndpoint, ClientError};
use crate::proto::v1 as pb;
use crate::revocation::signed::{verify_list, VerifiedList};
use crate::tls::SvidResolver;
use crate::verify::Trust;

/// Follows `WatchRevocations` forever, reconnecting with backoff. `trust` receives
/// each verified, newer set; `updates` is told about each.
pub async fn follow(
    endpoint: CaEndpoint,
    resolver: Arc<SvidResolver>,
    trust: Arc<Trust>,
    updates: watch::Sender<Option<Arc<VerifiedList>>>,
) {
    let mut backoff = Backoff::default();
    loop {
        match follow_once(&endpoint, Arc::clone(&resolver), &trust, &updates, &mut backoff).await {
            Ok(()) => tracing::info!("the CA ended the revocation stream; reconnecting"),
            Err(e) => tracing::warn!(error = %e, "revocation stream failed; reconnecting"),
        }
        if updates.is_closed() {
            return;
        }
        tokio::time::sleep(backoff.next_delay()).await;
    }
}

async fn follow_once(
    endpoint: &CaEndpoint,
    resolver: Arc<SvidResolver>,
    trust: &Trust,
    updates: &watch::Sender<Option<Arc<VerifiedList>>>,
    backoff: &mut Backoff,
) -> Result<(), ClientError> {
    let channel = connect(endpoint, resolver).await?;
    let mut stream = pb::ca_client::CaClient::new(channel)
        .watch_revocations(pb::WatchRevocationsRequest {})
        .await?
        .into_inner();
    *backoff = Backoff::default();
    while let Some(signed) = stream.next().await {
        let signed = signed?;
        match verify_list(&signed, &trust.bundle(), SystemTime::now()) {
            Ok(list) => {
                if trust.update_revocations(list.to_set()) {
                    tracing::info!(
                        version = list.version,
                        entries = list.entries.len(),
                        "revocation list installed"
                    );
                    updates.send_replace(Some(Arc::new(list)));
                }
            }
            Err(e) => tracing::error!(error = %e, "revocation list refused; keeping the current one"),
        }
    }
    Ok(())
}
