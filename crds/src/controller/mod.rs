//! The controller: cluster state in, a policy bundle and statuses out.
//!
//! It watches the four Palisade resources plus Services, EndpointSlices and
//! Pods ([`watch`]); on every change (debounced) it builds the bundle through
//! the same loader and validator as a bundle directory ([`rebuild`], which calls
//! [`crate::source`]), publishes it when its digest changed ([`publish`]) and
//! writes each resource's `Accepted`/`Applied` conditions back by server-side
//! apply ([`status`]). `CertificateRevocation`s are applied through the CA's
//! admin API ([`revocations`]). Failed steps are retried with exponential
//! backoff ([`backoff`]); every step is idempotent, so a reconcile with nothing
//! new writes nothing.
//!
//! Several replicas may run: the holder of a Lease ([`leader`]) is the only one
//! that writes status, talks to the CA and publishes; the others keep their
//! caches warm to take over. The controller reads what it watches and writes
//! only its resources' status and its Lease: no finalizers, no spec writes.

pub mod backoff;
pub mod leader;
pub mod publish;
pub mod rebuild;
mod reconcile;
pub mod revocations;
pub mod status;
pub mod time;
pub mod watch;

use std::future::Future;
use std::path::PathBuf;
use std::time::Duration;

use kube::Client;

pub use self::backoff::BackoffPolicy;
pub use self::leader::{LeaseParams, LeaseTiming};
pub use self::publish::PublishError;
pub use self::revocations::CaAdmin;
use crate::source::SourceOptions;
use crate::webhook::ReviewContext;
use palisade_policy::distribute::PushParams;

/// Where the built bundle goes.
#[derive(Debug, Clone)]
pub enum Output {
    /// `--bundle-out DIR`: versions under `DIR`, the current one at `DIR/current`
    /// (see [`publish`]).
    BundleDir(PathBuf),
    /// `--control-plane ADDR`: pushed to a control plane started with
    /// `--from-controller`, as the controller's SVID.
    ControlPlane(PushParams),
}

/// Tuning; the defaults suit a cluster.
#[derive(Debug, Clone)]
pub struct Options {
    /// How long to wait after a change for more before rebuilding (200 ms).
    pub debounce: Duration,
    /// Retries of failed steps (500 ms doubling to 30 s).
    pub backoff: BackoffPolicy,
    /// How often to reconcile even without a change (5 min), e.g. to revoke
    /// again what someone unrevoked at the CA by hand.
    pub resync: Duration,
}

impl Default for Options {
    fn default() -> Self {
        Self {
            debounce: Duration::from_millis(200),
            backoff: BackoffPolicy::default(),
            resync: Duration::from_secs(300),
        }
    }
}

/// Everything the controller needs.
#[derive(Clone)]
pub struct Params {
    pub client: Client,
    pub output: Output,
    /// The CA's admin API, for `CertificateRevocation`s.
    pub ca: CaAdmin,
    /// The Lease, and this replica's identity in it.
    pub lease: LeaseParams,
    /// The cluster's DNS domain, for the services' host names (`cluster.local`).
    pub cluster_domain: String,
    pub options: Options,
    /// Told how the controller is doing after each step (for a readiness
    /// endpoint, and for tests to wait on).
    pub progress: Option<tokio::sync::watch::Sender<Progress>>,
    /// Given each bundle built (leader or not), for the admission webhook this
    /// replica serves: it checks a new policy against the current bundle.
    pub review: Option<tokio::sync::watch::Sender<ReviewContext>>,
}

impl std::fmt::Debug for Params {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Params")
            .field("output", &self.output)
            .field("ca", &self.ca)
            .field("lease", &self.lease)
            .field("cluster_domain", &self.cluster_domain)
            .field("options", &self.options)
            .finish_non_exhaustive()
    }
}

/// How the controller is doing.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Progress {
    /// Whether this replica holds the Lease.
    pub leading: bool,
    /// Bundle reconciles finished (a follower rebuilds too).
    pub bundle_reconciles: u64,
    /// Revocation reconciles finished (leader only).
    pub revocation_reconciles: u64,
    /// The digest of the bundle this replica last published or found published.
    pub published: Option<String>,
    /// The error of the last step that failed, until a step succeeds.
    pub last_error: Option<String>,
}

/// The controller cannot start.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ControllerError {
    #[error(transparent)]
    Publish(#[from] PublishError),
    #[error("cannot read the CA admin credential `{}`: {source}; pass the CA directory's admin.token with --admin-token-file", path.display())]
    AdminToken { path: PathBuf, source: std::io::Error },
}

/// Runs the controller until `shutdown` resolves; a leader releases its Lease
/// on the way out.
///
/// # Errors
///
/// Only what prevents starting: an output that is not available, a bundle
/// directory that cannot be created, an unreadable admin credential. Everything
/// later (the API server or the CA away, a write refused) is logged and retried.
pub async fn run(params: Params, shutdown: impl Future<Output = ()> + Send) -> Result<(), ControllerError> {
    let publisher = match &params.output {
        Output::BundleDir(dir) => publish::Publisher::Dir(publish::DirPublisher::open(dir.clone())?),
        Output::ControlPlane(push) => publish::Publisher::Push {
            params: push.clone(),
            current: None,
        },
    };
    std::fs::read_to_string(&params.ca.token_file).map_err(|source| ControllerError::AdminToken {
        path: params.ca.token_file.clone(),
        source,
    })?;
    let caches = watch::Caches::start(&params.client);
    let elector = leader::Elector::new(params.client.clone(), params.lease.clone());
    let leading = elector.leader();
    let (stop, stopped) = tokio::sync::watch::channel(false);
    let mut election = AbortOnDrop(tokio::spawn(elector.run(async move {
        let mut stopped = stopped;
        let _ = stopped.wait_for(|stop| *stop).await;
    })));
    let mut source = SourceOptions::default();
    source.cluster_domain.clone_from(&params.cluster_domain);
    let reconciler = reconcile::Reconciler::new(&params, source, publisher);
    reconciler.run(&caches, leading, shutdown).await;
    stop.send_replace(true);
    let _ = (&mut election.0).await;
    Ok(())
}

/// A task that ends with its owner, as it would with the process: a
/// controller dropped mid-way (a test's crash) does not keep renewing its Lease.
struct AbortOnDrop(tokio::task::JoinHandle<()>);

impl Drop for AbortOnDrop {
    fn drop(&mut self) {
        self.0.abort();
    }
}
