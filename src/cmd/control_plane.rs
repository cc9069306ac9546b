//! `palisade control-plane serve|status`: the policy bundle, validated, watched and
//! streamed to proxies over mTLS.

use std::path::Path;
use std::sync::Arc;

use palisade_policy::distribute::{
    control_plane_id, push_source, serve, watch_bundle, BundleWatch, PolicyEvent, ProxyStatus, Published, Publisher,
    PushService, ServeParams, WatchParams,
};
use palisade_proxy::admin::{self, Page, Pages};
use serde_json::json;
use tokio::sync::watch;

use super::audit_sink::{self, LateAuditor};
use super::identity::ServiceIdentity;
use super::{shutdown_signal, UsageError};
use crate::cli::{ControlPlaneCommand, ControlPlaneServe, ControlPlaneStatus, Output};
use crate::exit;
use crate::output::{self, timestamp};

pub async fn run(command: ControlPlaneCommand) -> anyhow::Result<u8> {
    match command {
        ControlPlaneCommand::Serve(a) => control_plane_serve(*a).await,
        ControlPlaneCommand::Status(a) => status(a).await,
    }
}

async fn control_plane_serve(a: ControlPlaneServe) -> anyhow::Result<u8> {
    // The bundle first: an invalid bundle at start is a usage error, printed whole.
    let rejected = Arc::new(LastRejected::default());
    let audit = Arc::new(LateAuditor::default());
    let on_event = {
        let (rejected, audit) = (Arc::clone(&rejected), Arc::clone(&audit));
        move |event: &PolicyEvent| {
            rejected.record(event);
            audit.policy(event);
        }
    };
    let source = match (&a.bundle, &a.trust_domain) {
        (Some(dir), _) => match watch_bundle(WatchParams::new(dir), on_event).await {
            Ok(watch) => Source::Directory(dir.display().to_string(), watch),
            Err(diagnostics) => {
                eprintln!("{diagnostics}");
                eprintln!(
                    "error: the bundle in {} is not valid; nothing was served",
                    dir.display()
                );
                return Ok(exit::USAGE);
            }
        },
        (None, Some(td)) => Source::pushed(td, on_event)?,
        (None, None) => {
            return Err(UsageError("give --bundle DIR, or --from-controller with --trust-domain".into()).into())
        }
    };
    let published = source.published();
    let first = Arc::clone(&published.borrow());
    let td = first.bundle.mesh().trust_domain().clone();
    let id = control_plane_id(&td)?;
    let identity = ServiceIdentity::start(&a.ca, &a.trust_bundle, &td, id, &a.first_svid).await?;
    let delivery = audit_sink::start(
        &audit,
        &a.audit,
        Path::new("palisade-control-plane.audit-spool"),
        &td,
        Arc::clone(&identity.resolver),
        Arc::clone(&identity.trust),
    )?;

    let listener = tokio::net::TcpListener::bind(a.listen)
        .await
        .map_err(|e| anyhow::anyhow!("cannot listen on {}: {e}; is another process using it?", a.listen))?;
    let bound = listener.local_addr()?;
    let admin_listener = std::net::TcpListener::bind(a.admin)
        .map_err(|e| anyhow::anyhow!("cannot listen on {} (admin): {e}", a.admin))?;
    let status = ProxyStatus::new();
    let pages = ControlPlanePages {
        published: published.clone(),
        status: Arc::clone(&status),
        rejected,
    };
    admin::serve(admin_listener, Arc::new(pages))?;
    println!(
        "palisade control plane for {td}: bundle {} version {} ({}), admin on {}, listening on {bound}",
        source.name(),
        first.version,
        first.digest,
        a.admin
    );
    let result = serve(
        ServeParams {
            listener,
            resolver: Arc::clone(&identity.resolver),
            trust: Arc::clone(&identity.trust),
            published,
            status,
            push: source.push(&td)?,
        },
        shutdown_signal(),
    )
    .await;
    source.stop();
    if let Some(delivery) = delivery {
        delivery.abort();
    }
    drop(identity);
    result?;
    Ok(exit::OK)
}

/// Where the bundle comes from.
enum Source {
    /// A directory (shown as given), watched.
    Directory(String, BundleWatch),
    /// The Kubernetes controller's pushes.
    Pushed(Arc<tokio::sync::Mutex<Publisher>>, watch::Receiver<Arc<Published>>),
}

impl Source {
    /// Waiting for the controller: version 0, the mesh settings of `td` only, is
    /// never sent, so a proxy keeps what it has (a new one denies everything) until
    /// the first push.
    fn pushed(td: &str, on_event: impl FnMut(&PolicyEvent) + Send + 'static) -> anyhow::Result<Self> {
        let td = palisade_ca::TrustDomain::new(td).map_err(|e| UsageError(format!("--trust-domain: {e}")))?;
        let mesh = format!("trustDomain: {}\n", td.as_str());
        let files = palisade_policy::BundleFiles::from_iter([("mesh.yaml".to_owned(), mesh)]);
        let (files, bundle) = palisade_policy::load_canonical(&files)
            .map_err(|d| anyhow::anyhow!("the starting bundle of {td} is invalid:\n{d}"))?;
        let (publisher, published) = Publisher::new(Published::awaiting(files, bundle), on_event);
        Ok(Self::Pushed(Arc::new(tokio::sync::Mutex::new(publisher)), published))
    }

    fn name(&self) -> &str {
        match self {
            Self::Directory(dir, _) => dir,
            Self::Pushed(..) => "from the Kubernetes controller",
        }
    }

    fn published(&self) -> watch::Receiver<Arc<Published>> {
        match self {
            Self::Directory(_, watch) => watch.published.clone(),
            Self::Pushed(_, published) => published.clone(),
        }
    }

    /// The `BundleSource` service, when the controller pushes.
    fn push(&self, td: &palisade_ca::TrustDomain) -> anyhow::Result<Option<PushService>> {
        match self {
            Self::Directory(..) => Ok(None),
            Self::Pushed(publisher, _) => Ok(Some(push_source(Arc::clone(publisher), td)?)),
        }
    }

    fn stop(&self) {
        if let Self::Directory(_, watch) = self {
            watch.task.abort();
        }
    }
}

/// The last edit of the bundle that was refused, for operators (the watcher logs
/// each one with its diagnostics); cleared when a valid version is published.
#[derive(Default)]
struct LastRejected(std::sync::Mutex<Option<(i64, String)>>);

impl LastRejected {
    fn record(&self, event: &PolicyEvent) {
        let mut last = self.0.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
        match event {
            PolicyEvent::Rejected { diagnostics } => {
                let now = palisade_ca::svid::unix_seconds(std::time::SystemTime::now());
                *last = Some((now, diagnostics.to_string()));
            }
            PolicyEvent::Accepted { .. } => *last = None,
            _ => {}
        }
    }

    fn to_json(&self) -> serde_json::Value {
        let last = self.0.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
        last.as_ref().map_or(
            serde_json::Value::Null,
            |(at, diagnostics)| json!({"atUnix": at, "diagnostics": diagnostics}),
        )
    }
}

/// The control plane's admin port.
struct ControlPlanePages {
    published: watch::Receiver<Arc<Published>>,
    status: Arc<ProxyStatus>,
    rejected: Arc<LastRejected>,
}

impl Pages for ControlPlanePages {
    fn page(&self, path: &str) -> Option<Page> {
        let published = Arc::clone(&self.published.borrow());
        Some(match path {
            "/live" | "/ready" => Page::text(200, "ready\n"),
            "/bundle" => Page::json(&json!({
                "version": published.version,
                "digest": published.digest.to_string(),
                "bundleDigest": published.bundle.digest().to_string(),
                "lastRejected": self.rejected.to_json(),
            })),
            "/proxies" => Page::json(&json!({
                "version": published.version,
                "digest": published.digest.to_string(),
                "lastRejected": self.rejected.to_json(),
                "proxies": self.status.snapshot(),
            })),
            "/metrics" => {
                let proxies = self.status.snapshot();
                let connected = proxies.iter().filter(|p| p.streams > 0).count();
                let current = proxies
                    .iter()
                    .filter(|p| p.acked.as_ref().is_some_and(|v| v.version == published.version))
                    .count();
                Page::text(
                    200,
                    format!(
                        "# HELP palisade_control_plane_bundle_version The published bundle version.\n# TYPE palisade_control_plane_bundle_version gauge\npalisade_control_plane_bundle_version {}\n# HELP palisade_control_plane_proxies_connected Proxies with an open stream.\n# TYPE palisade_control_plane_proxies_connected gauge\npalisade_control_plane_proxies_connected {connected}\n# HELP palisade_control_plane_proxies_current Proxies that ACKed the published version.\n# TYPE palisade_control_plane_proxies_current gauge\npalisade_control_plane_proxies_current {current}\n",
                        published.version
                    ),
                )
            }
            _ => return None,
        })
    }
}

async fn status(a: ControlPlaneStatus) -> anyhow::Result<u8> {
    let body = tokio::task::spawn_blocking(move || http_get(a.admin, "/proxies")).await??;
    let value: serde_json::Value = serde_json::from_str(&body)?;
    if a.output == Output::Json {
        println!("{}", output::json(&value));
        return Ok(exit::OK);
    }
    let published = at(&value, "/version").as_u64().unwrap_or_default();
    println!(
        "published version {published} ({})",
        at(&value, "/digest").as_str().unwrap_or("?")
    );
    if let Some(diagnostics) = at(&value, "/lastRejected/diagnostics").as_str() {
        let when = timestamp(at(&value, "/lastRejected/atUnix").as_i64().unwrap_or(0));
        println!(
            "the last edit of the bundle ({when}) was rejected; version {published} stays in force:\n{diagnostics}"
        );
    }
    let version = |v: &serde_json::Value| at(v, "/version").as_u64().map_or("-".to_owned(), |n| n.to_string());
    let rows: Vec<Vec<String>> = at(&value, "/proxies")
        .as_array()
        .map(Vec::as_slice)
        .unwrap_or_default()
        .iter()
        .map(|p| {
            let (sent, acked, nacked) = (at(p, "/sent"), at(p, "/acked"), at(p, "/nacked"));
            let state = if at(acked, "/version").as_u64() == Some(published) {
                "current".to_owned()
            } else if nacked.is_object() {
                format!(
                    "NACK v{}: {}",
                    version(nacked),
                    at(nacked, "/error").as_str().unwrap_or("")
                )
            } else {
                "behind".to_owned()
            };
            let connected = at(p, "/streams").as_u64().unwrap_or(0) > 0;
            vec![
                at(p, "/spiffeId").as_str().unwrap_or("?").to_owned(),
                if connected { "yes" } else { "no" }.to_owned(),
                version(sent),
                version(acked),
                state,
                timestamp(at(p, "/lastSeenUnix").as_i64().unwrap_or(0)),
            ]
        })
        .collect();
    print!(
        "{}",
        output::table(&["PROXY", "CONNECTED", "SENT", "ACKED", "STATE", "LAST SEEN"], &rows)
    );
    Ok(exit::OK)
}

/// A plain GET on a loopback admin port.
fn http_get(addr: std::net::SocketAddr, path: &str) -> anyhow::Result<String> {
    use std::io::{Read, Write};
    let timeout = std::time::Duration::from_secs(5);
    let mut tcp = std::net::TcpStream::connect_timeout(&addr, timeout).map_err(|e| {
        palisade_ca::client::ClientError::Connect {
            addr: addr.to_string(),
            reason: format!("{e} (is `palisade control-plane serve --admin {addr}` running?)"),
        }
    })?;
    tcp.set_read_timeout(Some(timeout))?;
    tcp.write_all(format!("GET {path} HTTP/1.1\r\nHost: admin\r\nConnection: close\r\n\r\n").as_bytes())?;
    let mut response = String::new();
    tcp.read_to_string(&mut response)?;
    let (head, body) = response
        .split_once("\r\n\r\n")
        .ok_or_else(|| anyhow::anyhow!("the admin port at {addr} sent no HTTP response"))?;
    if !head.starts_with("HTTP/1.1 200") {
        anyhow::bail!(
            "the admin port at {addr} answered `{}`",
            head.lines().next().unwrap_or("")
        );
    }
    Ok(body.to_owned())
}

/// The value at a JSON pointer, or null.
fn at<'a>(value: &'a serde_json::Value, pointer: &str) -> &'a serde_json::Value {
    value.pointer(pointer).unwrap_or(&serde_json::Value::Null)
}
