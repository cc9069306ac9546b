//! One sidecar, assembled: identity first, then trust, then policy, then the
//! listeners, each a named step.
//!
//! 1. **Identity** — the first SVID from a join token, a Kubernetes
//!    ServiceAccount token file (or SVID files), then renewed
//!    at half-life by the CA client; the resolver swaps certificates in place.
//! 2. **Revocations** — followed from the CA; each newer list is installed into
//!    the trust store (new handshakes of a revoked peer fail) and the live
//!    connections of revoked peers are cut at once.
//! 3. **Policy** — snapshots followed from the control plane, each compiled off
//!    the request path and swapped in whole, then ACKed; a bad one is NACKed and
//!    changes nothing. Until the first arrives every request is denied.
//! 4. **Listeners** — inbound (mTLS), outbound (the app's plain HTTP) and admin.

use std::net::SocketAddr;
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use palisade_ca::bundle::certs_from_pem;
use palisade_ca::client::rotation::{self, Bootstrap, RotationParams, Ttl};
use palisade_ca::client::{revocations, CaEndpoint, ClientError};
use palisade_ca::revocation::signed::VerifiedList;
use palisade_ca::svid::unix_seconds;
use palisade_ca::tls::SvidResolver;
use palisade_ca::{Svid, TrustBundle};
use palisade_policy::distribute::{follow, FollowParams};
use palisade_policy::snapshot::Snapshot;
use rustls_pki_types::pem::PemObject;
use rustls_pki_types::PrivateKeyDer;
use tokio::net::TcpListener;
use tokio::sync::watch;

use palisade_audit::deliver::{Auditor, DeliverParams};

use crate::audit::{AuditSink, NoAudit};
use crate::config::{FirstSvid, ProxyConfig};
use crate::connections::LiveConnections;
use crate::context::{Context, Limits};
use crate::egress::EgressSettings;
use crate::inbound::{self, Inbound};
use crate::metrics::Metrics;
use crate::outbound::{self, Outbound};
use crate::state::{empty_handle, PolicyHandle, PolicyState};

mod pages;

/// The sidecar could not start.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum RunError {
    #[error("cannot read the trust bundle `{path}`: {reason}")]
    Bundle { path: String, reason: String },
    #[error("cannot read the SVID files: {0}")]
    SvidFiles(String),
    #[error("the SVID in the files is for {found}, but this proxy is {expected}")]
    WrongSvid { expected: String, found: String },
    #[error("cannot get an SVID from the CA: {0}")]
    Identity(#[from] ClientError),
    #[error("cannot install the SVID: {0}")]
    Tls(#[from] rustls::Error),
    #[error("cannot listen on {addr} ({what}): {source}; is another process using it?")]
    Bind {
        what: &'static str,
        addr: SocketAddr,
        source: std::io::Error,
    },
    #[error("cannot start the admin port: {0}")]
    Admin(std::io::Error),
    #[error("cannot start sending audit records: {0}")]
    Audit(String),
}

impl RunError {
    /// Whether a Palisade service could not be reached (rather than refused).
    pub fn is_unreachable(&self) -> bool {
        matches!(self, Self::Identity(e) if e.is_transient())
    }
}

type Task = tokio::task::JoinHandle<()>;

/// The audit client the config asks for: records of decisions and external
/// requests go to the audit service; without one they are only logged.
fn start_audit(
    config: &ProxyConfig,
    resolver: &Arc<SvidResolver>,
    trust: &Arc<palisade_ca::verify::Trust>,
) -> Result<(Arc<dyn AuditSink>, Option<Task>), RunError> {
    let Some(settings) = &config.audit else {
        return Ok((Arc::new(NoAudit), None));
    };
    let expected = palisade_audit::ingest::audit_service_id(&config.id.trust_domain())
        .map_err(|e| RunError::Audit(e.to_string()))?;
    let mut params = DeliverParams::new(
        settings.address.clone(),
        Arc::clone(trust),
        Arc::clone(resolver),
        expected,
        settings.spool.clone(),
    );
    params.spool_max_bytes = settings.spool_max_bytes;
    params.strict = settings.strict;
    let (auditor, task) = Auditor::start(params).map_err(|e| RunError::Audit(e.to_string()))?;
    tracing::info!(address = %settings.address, spool = %settings.spool.display(), strict = settings.strict, "audit records go to the audit service");
    Ok((Arc::new(auditor), Some(task)))
}

/// Where the sidecar listens, once bound.
#[derive(Debug, Clone, Copy)]
pub struct Bound {
    pub inbound: SocketAddr,
    pub outbound: SocketAddr,
    pub admin: SocketAddr,
}

/// Runs the sidecar until `shutdown` resolves.
///
/// # Errors
///
/// When it cannot start: no trust bundle, no SVID, a port taken.
pub async fn run(
    config: ProxyConfig,
    on_listening: impl FnOnce(Bound),
    shutdown: impl std::future::Future<Output = ()>,
) -> Result<(), RunError> {
    let bundle = read_bundle(&config)?;
    let endpoint = CaEndpoint::new(config.ca.clone(), bundle);
    let trust = Arc::clone(&endpoint.trust);
    let metrics = Arc::new(Metrics::default());

    // 1. Identity.
    let bootstrap = match &config.first_svid {
        FirstSvid::JoinToken(token) => Bootstrap::JoinToken(token.clone()),
        FirstSvid::ServiceAccountToken(file) => Bootstrap::ServiceAccountToken(file.clone()),
        FirstSvid::Files { cert, key } => Bootstrap::Existing(Arc::new(read_svid(&config, cert, key)?)),
    };
    // The mesh's leafTtl, from each snapshot: asked for at the next renewal.
    let mesh_ttl = watch::Sender::new(None);
    let (svids, rotation) = rotation::start(RotationParams {
        endpoint: endpoint.clone(),
        id: config.id.clone(),
        bootstrap,
        ttl: match config.svid_ttl {
            Some(ttl) => Ttl::Fixed(Some(ttl)),
            None => Ttl::Follow(mesh_ttl.subscribe()),
        },
    })
    .await?;
    let resolver = SvidResolver::with(&svids.borrow())?;
    let mut tasks = vec![rotation, resolver.follow(svids.clone())];
    tasks.push(tokio::spawn(track_expiry(svids.clone(), Arc::clone(&metrics))));
    tracing::info!(id = %config.id, serial = %svids.borrow().serial(), "SVID installed");

    let (audit, delivery) = start_audit(&config, &resolver, &trust)?;
    tasks.extend(delivery);

    let ctx = Arc::new(Context {
        id: config.id.clone(),
        resolver: Arc::clone(&resolver),
        trust: Arc::clone(&trust),
        policy: empty_handle(),
        connections: LiveConnections::new(),
        metrics: Arc::clone(&metrics),
        audit: Arc::clone(&audit),
        strict_audit: config.audit.as_ref().is_some_and(|a| a.strict),
        egress: EgressSettings::new(config.resolve.clone()),
        limits: Limits::default(),
    });
    tasks.push(crate::connections::spawn_expiry_sweeper(
        Arc::clone(&ctx.connections),
        Arc::clone(&metrics),
    ));

    // 2. Revocations.
    let (revocation_tx, revocation_rx) = watch::channel(None);
    tasks.push(tokio::spawn(revocations::follow(
        endpoint.clone(),
        Arc::clone(&resolver),
        Arc::clone(&trust),
        revocation_tx,
    )));
    tasks.push(tokio::spawn(cut_revoked(revocation_rx, Arc::clone(&ctx))));

    // 3. Policy.
    let follower = follow(
        FollowParams {
            addr: config.control_plane.clone(),
            trust: Arc::clone(&trust),
            resolver: Arc::clone(&resolver),
            trust_domain: config.id.trust_domain().clone(),
        },
        applier(ctx.policy.clone(), Arc::clone(&metrics), mesh_ttl),
    );
    tasks.push(follower.task);

    // 4. Listeners.
    let bind = |what, addr| async move {
        TcpListener::bind(addr)
            .await
            .map_err(|source| RunError::Bind { what, addr, source })
    };
    let inbound_listener = bind("inbound", config.inbound).await?;
    let outbound_listener = bind("outbound", config.outbound).await?;
    let admin_listener = std::net::TcpListener::bind(config.admin).map_err(|source| RunError::Bind {
        what: "admin",
        addr: config.admin,
        source,
    })?;
    let local = |l: &TcpListener, what, addr| l.local_addr().map_err(|source| RunError::Bind { what, addr, source });
    let bound = Bound {
        inbound: local(&inbound_listener, "inbound", config.inbound)?,
        outbound: local(&outbound_listener, "outbound", config.outbound)?,
        admin: admin_listener.local_addr().map_err(RunError::Admin)?,
    };
    // Never a destination of this sidecar's own egress (a loop).
    ctx.egress
        .listeners
        .set(vec![bound.inbound, bound.outbound, bound.admin]);
    let pages = pages::ProxyPages {
        ctx: Arc::clone(&ctx),
        svids,
        control_plane: follower.state,
        control_plane_addr: config.control_plane.clone(),
    };
    crate::admin::serve(admin_listener, Arc::new(pages)).map_err(RunError::Admin)?;
    let inbound = Arc::new(Inbound {
        ctx: Arc::clone(&ctx),
        app: config.app,
        app_protocol: config.app_protocol,
    });
    tasks.push(tokio::spawn(inbound::serve(inbound_listener, inbound)));
    tasks.push(tokio::spawn(outbound::serve(
        outbound_listener,
        Outbound::new(Arc::clone(&ctx)),
    )));
    on_listening(bound);

    shutdown.await;
    for task in tasks {
        task.abort();
    }
    Ok(())
}

/// What the snapshot follower does with each snapshot: verify, load, compile,
/// swap; the error it returns becomes the NACK's message.
///
/// The mesh's `leafTtl` goes to `mesh_ttl`, which the SVID rotation reads at its
/// next renewal (unless the sidecar has its own `svidTtl`).
fn applier(
    policy: PolicyHandle,
    metrics: Arc<Metrics>,
    mesh_ttl: watch::Sender<Option<Duration>>,
) -> impl FnMut(Snapshot) -> Result<(), String> + Send + 'static {
    move |snapshot: Snapshot| {
        let version = snapshot.version();
        let digest = snapshot.digest().to_string();
        let bundle = snapshot.load().map_err(|e| e.to_string())?;
        let leaf_ttl = bundle.mesh().leaf_ttl();
        // Compiling a large bundle takes a while: keep it off the async workers.
        let state = tokio::task::block_in_place(|| PolicyState::build(version, digest.clone(), bundle))
            .map_err(|e| format!("the snapshot's policies do not compile: {e}"))?;
        policy.store(Some(Arc::new(state)));
        mesh_ttl.send_if_modified(|ttl| std::mem::replace(ttl, leaf_ttl) != leaf_ttl);
        metrics.set_snapshot_version(version);
        tracing::info!(version, %digest, "policy snapshot in force");
        Ok(())
    }
}

/// Cuts the live connections of every peer each new revocation list revokes.
async fn cut_revoked(mut lists: watch::Receiver<Option<Arc<VerifiedList>>>, ctx: Arc<Context>) {
    while lists.changed().await.is_ok() {
        let revocations = ctx.trust.revocations();
        let closed = ctx.connections.close_revoked(&revocations);
        ctx.metrics.set_revocation_version(revocations.version());
        ctx.metrics.revoked_connections_closed(closed);
        if closed > 0 {
            tracing::warn!(
                closed,
                version = revocations.version(),
                "closed live connections of revoked peers"
            );
        }
    }
}

async fn track_expiry(mut svids: watch::Receiver<Arc<Svid>>, metrics: Arc<Metrics>) {
    loop {
        metrics.set_svid_expiry(unix_seconds(svids.borrow_and_update().not_after()));
        if svids.changed().await.is_err() {
            return;
        }
    }
}

fn read_bundle(config: &ProxyConfig) -> Result<TrustBundle, RunError> {
    let td = config.id.trust_domain().clone();
    TrustBundle::load(td, &config.trust_bundle).map_err(|e| RunError::Bundle {
        path: config.trust_bundle.display().to_string(),
        reason: e.to_string(),
    })
}

fn read_svid(config: &ProxyConfig, cert: &Path, key: &Path) -> Result<Svid, RunError> {
    let read = |path: &Path| std::fs::read(path).map_err(|e| RunError::SvidFiles(format!("`{}`: {e}", path.display())));
    let chain = certs_from_pem(&read(cert)?).map_err(RunError::SvidFiles)?;
    let key = PrivateKeyDer::from_pem_slice(&read(key)?)
        .map_err(|e| RunError::SvidFiles(format!("`{}` holds no private key: {e}", key.display())))?;
    let svid = Svid::new(chain, key).map_err(|e| RunError::SvidFiles(e.to_string()))?;
    if svid.id() != &config.id {
        return Err(RunError::WrongSvid {
            expected: config.id.to_string(),
            found: svid.id().to_string(),
        });
    }
    Ok(svid)
}
