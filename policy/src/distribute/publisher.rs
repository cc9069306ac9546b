//! Publishing bundle versions: whatever the source (a watched directory, or the
//! Kubernetes controller pushing), each attempt goes through here. A valid bundle
//! whose files changed becomes the next version; the same files again change
//! nothing; an invalid bundle is reported and the current version stays. Every
//! attempt that found something new is reported once, for the audit trail.

use std::sync::Arc;

use tokio::sync::watch;

use super::watch::{PolicyEvent, Published};
use crate::bundle::{Bundle, BundleFiles};
use crate::error::Diagnostics;
use crate::snapshot::SnapshotDigest;

/// Where each attempt is reported.
type OnEvent = Box<dyn FnMut(&PolicyEvent) + Send>;

/// Publishes versions on a `watch` channel that the distribution server reads.
pub struct Publisher {
    tx: watch::Sender<Arc<Published>>,
    /// Behind a mutex only so that the publisher is `Sync`; one caller at a time
    /// holds it anyway (`&mut self`).
    on_event: std::sync::Mutex<OnEvent>,
    /// What the last attempt found: the digest of valid files, or the rendered
    /// problems. An attempt finding the same is not reported again.
    last: Result<SnapshotDigest, String>,
}

impl std::fmt::Debug for Publisher {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Publisher")
            .field("version", &self.tx.borrow().version)
            .finish()
    }
}

/// What became of one attempt.
#[derive(Debug, Clone)]
pub enum Offered {
    /// Published as a new version.
    Published { version: u64, digest: SnapshotDigest },
    /// The same files as the current version: nothing changed.
    Unchanged { version: u64, digest: SnapshotDigest },
    /// Invalid: the current version (`version`) stays.
    Rejected { version: u64, diagnostics: Diagnostics },
}

impl Publisher {
    /// Starts at `first`, reported to `on_event` as accepted (unless it is the
    /// version 0 of a control plane still waiting for its bundle).
    pub fn new(
        first: Published,
        mut on_event: impl FnMut(&PolicyEvent) + Send + 'static,
    ) -> (Self, watch::Receiver<Arc<Published>>) {
        if first.version > 0 {
            on_event(&accepted(&first));
        }
        let last = Ok(first.digest);
        let (tx, rx) = watch::channel(Arc::new(first));
        let on_event: OnEvent = Box::new(on_event);
        let on_event = std::sync::Mutex::new(on_event);
        (Self { tx, on_event, last }, rx)
    }

    /// Resolves when nobody reads the published versions any more.
    pub async fn closed(&self) {
        self.tx.closed().await;
    }

    /// The current version.
    pub fn current(&self) -> Arc<Published> {
        Arc::clone(&self.tx.borrow())
    }

    /// Takes the result of loading a bundle (canonical files and their bundle, or
    /// the problems): publishes, keeps, or rejects it. `source` names where it
    /// came from, for the logs.
    pub fn offer(&mut self, result: Result<(BundleFiles, Bundle), Diagnostics>, source: &str) -> Offered {
        let current = self.current();
        let seen = match &result {
            Ok((files, _)) => Ok(SnapshotDigest::of(files)),
            Err(diagnostics) => Err(diagnostics.to_string()),
        };
        let new = seen != self.last;
        self.last = seen;
        match result {
            Ok((files, bundle)) => self.publish(files, bundle, &current),
            Err(diagnostics) => {
                if new {
                    tracing::warn!(
                        %source,
                        "the changed policy bundle is invalid; version {} stays\n{diagnostics}",
                        current.version,
                    );
                    self.report(&PolicyEvent::Rejected {
                        diagnostics: diagnostics.clone(),
                    });
                }
                Offered::Rejected {
                    version: current.version,
                    diagnostics,
                }
            }
        }
    }

    fn publish(&mut self, files: BundleFiles, bundle: Bundle, current: &Published) -> Offered {
        let digest = SnapshotDigest::of(&files);
        if digest == current.digest {
            return Offered::Unchanged {
                version: current.version,
                digest,
            };
        }
        let next = Published {
            version: current.version.saturating_add(1),
            files,
            digest,
            bundle,
        };
        tracing::info!(version = next.version, digest = %next.digest, "policy bundle published");
        self.report(&accepted(&next));
        let version = next.version;
        self.tx.send_replace(Arc::new(next));
        Offered::Published { version, digest }
    }
}

impl Publisher {
    fn report(&mut self, event: &PolicyEvent) {
        let on_event = self
            .on_event
            .get_mut()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        on_event(event);
    }
}

fn accepted(published: &Published) -> PolicyEvent {
    PolicyEvent::Accepted {
        version: published.version,
        digest: published.digest,
        bundle_digest: published.bundle.digest(),
    }
}
