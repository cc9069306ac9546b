//! Starting the demo mesh: the CA, the audit service, the control plane over a
//! copy of `examples/shop` (built into the binary, so the demo runs from any
//! directory), and for each shop workload its app and its sidecar, all on one
//! loopback address. The order follows the dependencies: the CA first (everyone
//! gets an SVID from it), then the audit service (the CA's records wait in its
//! spool meanwhile), then the control plane, then apps and sidecars.

use std::net::{IpAddr, SocketAddr};
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use super::net::{self, StandIn};
use super::procs::{ProcessError, Processes};

/// The trust domain of the shop.
pub const TRUST_DOMAIN: &str = "shop.example";

/// The unlisted external host of the story.
pub const UNLISTED: &str = "unlisted.example";

/// The shop's workloads: name, namespace.
const SHOP: [(&str, &str); 4] = [
    ("frontend", "web"),
    ("checkout", "checkout"),
    ("reviews", "reviews"),
    ("payments", "payments"),
];

/// `examples/shop`, built in: path in the bundle, contents.
pub const BUNDLE: [(&str, &str); 14] = [
    ("mesh.yaml", include_str!("../../../examples/shop/mesh.yaml")),
    ("services.yaml", include_str!("../../../examples/shop/services.yaml")),
    ("workloads.yaml", include_str!("../../../examples/shop/workloads.yaml")),
    ("egress.yaml", include_str!("../../../examples/shop/egress.yaml")),
    (
        "policies/web/egress/frontend-egress.cedar",
        include_str!("../../../examples/shop/policies/web/egress/frontend-egress.cedar"),
    ),
    (
        "policies/web/ingress/frontend-ingress.cedar",
        include_str!("../../../examples/shop/policies/web/ingress/frontend-ingress.cedar"),
    ),
    (
        "policies/checkout/egress/checkout-egress.cedar",
        include_str!("../../../examples/shop/policies/checkout/egress/checkout-egress.cedar"),
    ),
    (
        "policies/checkout/ingress/checkout-ingress.cedar",
        include_str!("../../../examples/shop/policies/checkout/ingress/checkout-ingress.cedar"),
    ),
    (
        "policies/reviews/egress/reviews-egress.cedar",
        include_str!("../../../examples/shop/policies/reviews/egress/reviews-egress.cedar"),
    ),
    (
        "policies/reviews/ingress/reviews-ingress.cedar",
        include_str!("../../../examples/shop/policies/reviews/ingress/reviews-ingress.cedar"),
    ),
    (
        "policies/payments/ingress/pci.cedar",
        include_str!("../../../examples/shop/policies/payments/ingress/pci.cedar"),
    ),
    (
        "tests/shop.yaml",
        include_str!("../../../examples/shop/tests/shop.yaml"),
    ),
    ("tests/pci.yaml", include_str!("../../../examples/shop/tests/pci.yaml")),
    (
        "tests/egress.yaml",
        include_str!("../../../examples/shop/tests/egress.yaml"),
    ),
];

/// What a previous run left in DIR; removed at start. Nothing else in DIR is touched.
const STATE: [&str; 12] = [
    "ca",
    "shop",
    "logs",
    "spool",
    "proxies",
    "audit.db",
    "audit.db-wal",
    "audit.db-shm",
    "report.html",
    "report.md",
    "pids",
    "README.txt",
];

/// The mesh did not come up.
#[derive(Debug, thiserror::Error)]
pub enum MeshError {
    #[error(transparent)]
    Process(#[from] ProcessError),
    #[error(transparent)]
    Net(#[from] net::NetError),
    #[error("cannot prepare {path}: {source}; is the demo directory writable?")]
    Dir { path: PathBuf, source: std::io::Error },
    #[error("no free port on {ip}: {source}")]
    Port { ip: IpAddr, source: std::io::Error },
    #[error("{what} within {limit:?}; see {log}")]
    NotReady { what: String, limit: Duration, log: String },
    #[error("no workload named {0} in the shop")]
    NoWorkload(String),
    #[error("{0}")]
    Unexpected(String),
}

/// One shop workload: its app and its sidecar.
#[derive(Debug, Clone)]
pub struct Workload {
    pub name: &'static str,
    pub id: String,
    pub app: SocketAddr,
    pub inbound: SocketAddr,
    pub outbound: SocketAddr,
    pub admin: SocketAddr,
}

/// The running demo mesh.
#[derive(Debug)]
pub struct Mesh {
    /// Declared first so its children are stopped before the stand-ins go.
    pub procs: Processes,
    pub dir: PathBuf,
    pub bundle: PathBuf,
    pub ca_dir: PathBuf,
    pub database: String,
    pub control_plane_admin: SocketAddr,
    pub workloads: Vec<Workload>,
    pub stripe: StandIn,
    pub unlisted: StandIn,
}

fn s(path: &Path) -> String {
    path.display().to_string()
}

fn strings(args: &[&str]) -> Vec<String> {
    args.iter().map(|a| (*a).to_owned()).collect()
}

/// Removes a previous run's state from `dir` and lays out the directories.
fn prepare(dir: &Path) -> Result<(), MeshError> {
    let fail = |path: &Path| {
        let path = path.to_owned();
        move |source| MeshError::Dir { path, source }
    };
    std::fs::create_dir_all(dir).map_err(fail(dir))?;
    for name in STATE {
        let path = dir.join(name);
        let removed = if path.is_dir() {
            std::fs::remove_dir_all(&path)
        } else if path.exists() {
            std::fs::remove_file(&path)
        } else {
            Ok(())
        };
        removed.map_err(fail(&path))?;
    }
    for sub in ["logs", "spool", "proxies"] {
        std::fs::create_dir_all(dir.join(sub)).map_err(fail(&dir.join(sub)))?;
    }
    for (path, text) in BUNDLE {
        let path = dir.join("shop").join(path);
        if let Some(parent) = path.parent() {
            std::fs::create_dir_all(parent).map_err(fail(parent))?;
        }
        std::fs::write(&path, text).map_err(fail(&path))?;
    }
    Ok(())
}

impl Mesh {
    /// Starts the whole mesh in `dir`, printing one line per component.
    pub async fn start(dir: &Path) -> Result<Self, MeshError> {
        prepare(dir)?;
        let ip = net::loopback_ip();
        let port = || net::free_addr(ip).map_err(|source| MeshError::Port { ip, source });
        let mut procs = Processes::new(&dir.join("logs"), &dir.join("pids"))?;
        let bundle = dir.join("shop");
        let ca_dir = dir.join("ca");
        let trust = s(&ca_dir.join("bundle.pem"));
        let database = format!("sqlite://{}", s(&dir.join("audit.db")));
        let spool = |name: &str| s(&dir.join("spool").join(format!("{name}.spool")));

        let stripe = StandIn::tls("api.stripe.com", ip).await?;
        let unlisted = StandIn::http(UNLISTED, ip).await?;

        // The CA.
        procs
            .ok(
                &strings(&["ca", "init", "--trust-domain", TRUST_DOMAIN, "--dir", &s(&ca_dir)]),
                &[],
            )
            .await?;
        let (audit, audit_admin) = (port()?, port()?);
        let ca = procs
            .server(
                "ca",
                &strings(&[
                    "ca",
                    "serve",
                    "--dir",
                    &s(&ca_dir),
                    "--listen",
                    &SocketAddr::new(ip, 0).to_string(),
                    "--audit",
                    &audit.to_string(),
                    "--audit-spool",
                    &spool("ca"),
                ]),
                &[],
            )
            .await?;
        println!(
            "  CA                {ca}   (trust domain {TRUST_DOMAIN}, files in {})",
            s(&ca_dir)
        );

        // The audit service.
        let audit_token = create_token(&procs, &ca_dir, "palisade-system", "palisade-audit").await?;
        procs
            .server(
                "audit",
                &strings(&[
                    "audit",
                    "serve",
                    "--database",
                    &database,
                    "--listen",
                    &audit.to_string(),
                    "--admin",
                    &audit_admin.to_string(),
                    "--trust-domain",
                    TRUST_DOMAIN,
                    "--ca",
                    &ca,
                    "--trust-bundle",
                    &trust,
                ]),
                &[("PALISADE_JOIN_TOKEN", &audit_token)],
            )
            .await?;
        println!("  audit service     {audit}   (SQLite {})", s(&dir.join("audit.db")));

        // The workloads' addresses, then the bundle's endpoints rewritten to them.
        let mut workloads = Vec::new();
        for (name, namespace) in SHOP {
            workloads.push(Workload {
                name,
                id: format!("spiffe://{TRUST_DOMAIN}/ns/{namespace}/sa/{name}"),
                app: port()?,
                inbound: port()?,
                outbound: port()?,
                admin: port()?,
            });
        }
        let services_path = bundle.join("services.yaml");
        let mut services = std::fs::read_to_string(&services_path).map_err(|source| MeshError::Dir {
            path: services_path.clone(),
            source,
        })?;
        for (i, w) in (0u16..).zip(&workloads) {
            services = services.replace(&format!("127.0.0.1:{}", 15001 + i), &w.inbound.to_string());
        }
        std::fs::write(&services_path, services).map_err(|source| MeshError::Dir {
            path: services_path.clone(),
            source,
        })?;

        // The control plane.
        let control_plane_admin = port()?;
        let cp_token = create_token(&procs, &ca_dir, "palisade-system", "palisade-control-plane").await?;
        let control_plane = procs
            .server(
                "control-plane",
                &strings(&[
                    "control-plane",
                    "serve",
                    "--bundle",
                    &s(&bundle),
                    "--listen",
                    &SocketAddr::new(ip, 0).to_string(),
                    "--admin",
                    &control_plane_admin.to_string(),
                    "--ca",
                    &ca,
                    "--trust-bundle",
                    &trust,
                    "--audit",
                    &audit.to_string(),
                    "--audit-spool",
                    &spool("control-plane"),
                ]),
                &[("PALISADE_JOIN_TOKEN", &cp_token)],
            )
            .await?;
        println!("  control plane     {control_plane}   (bundle {})", s(&bundle));

        // Apps and sidecars. Every sidecar maps the two external names to their stand-ins.
        let resolve_stripe = format!("api.stripe.com={}", stripe.addr);
        let resolve_unlisted = format!("{UNLISTED}={}", unlisted.addr);
        for w in &workloads {
            procs
                .server(
                    &format!("{}-app", w.name),
                    &strings(&["demo", "app", "--name", w.name, "--listen", &w.app.to_string()]),
                    &[],
                )
                .await?;
            let config = format!(
                "id: {}\ntrustBundle: {trust}\nca: {ca}\ncontrolPlane: {control_plane}\ninbound: {}\noutbound: {}\nadmin: {}\napp: {}\n",
                w.id, w.inbound, w.outbound, w.admin, w.app,
            );
            let file = dir.join("proxies").join(format!("{}.yaml", w.name));
            std::fs::write(&file, config).map_err(|source| MeshError::Dir {
                path: file.clone(),
                source,
            })?;
            let (namespace, sa) = SHOP
                .iter()
                .find(|(n, _)| *n == w.name)
                .map_or(("", w.name), |(n, ns)| (*ns, *n));
            let token = create_token(&procs, &ca_dir, namespace, sa).await?;
            procs
                .server(
                    &format!("{}-sidecar", w.name),
                    &strings(&[
                        "proxy",
                        "run",
                        "--config",
                        &s(&file),
                        "--audit",
                        &audit.to_string(),
                        "--audit-spool",
                        &spool(w.name),
                        "--resolve",
                        &resolve_stripe,
                        "--resolve",
                        &resolve_unlisted,
                    ]),
                    &[("PALISADE_JOIN_TOKEN", &token)],
                )
                .await?;
        }
        let mesh = Self {
            procs,
            dir: dir.to_owned(),
            bundle,
            ca_dir,
            database,
            control_plane_admin,
            workloads,
            stripe,
            unlisted,
        };
        for w in &mesh.workloads {
            mesh.wait_ready(w).await?;
            println!(
                "  {:<17} app {}  sidecar outbound {}  inbound {}  admin {}",
                w.name, w.app, w.outbound, w.inbound, w.admin
            );
        }
        println!(
            "  stand-ins         api.stripe.com → {} (TLS), {UNLISTED} → {} (HTTP)",
            mesh.stripe.addr, mesh.unlisted.addr
        );
        Ok(mesh)
    }

    /// The workload called `name`.
    pub fn workload(&self, name: &str) -> Result<&Workload, MeshError> {
        self.workloads
            .iter()
            .find(|w| w.name == name)
            .ok_or_else(|| MeshError::NoWorkload(name.to_owned()))
    }

    /// Waits (≤ 20 s) until the sidecar's `/ready` answers 200 (it has an SVID and a
    /// policy snapshot).
    async fn wait_ready(&self, w: &Workload) -> Result<(), MeshError> {
        let what = format!("{}'s sidecar was not ready", w.name);
        let log = s(&self.procs.log(&format!("{}-sidecar", w.name)));
        eventually(Duration::from_secs(20), &what, &log, || async {
            matches!(net::admin_get(w.admin, "/ready").await, Ok(r) if r.status == 200).then_some(())
        })
        .await
    }

    /// A sidecar's `/config`.
    pub async fn config(&self, name: &str) -> Result<serde_json::Value, MeshError> {
        let reply = net::admin_get(self.workload(name)?.admin, "/config").await?;
        serde_json::from_str(&reply.body)
            .map_err(|e| MeshError::Unexpected(format!("{name}'s sidecar /config is not JSON ({e}): {}", reply.body)))
    }

    /// A sidecar's `/metrics`.
    pub async fn metrics(&self, name: &str) -> Result<String, MeshError> {
        Ok(net::admin_get(self.workload(name)?.admin, "/metrics").await?.body)
    }

    /// The policy snapshot version a sidecar enforces (0 before the first).
    pub async fn snapshot_version(&self, name: &str) -> Result<u64, MeshError> {
        Ok(self
            .config(name)
            .await?
            .pointer("/snapshot/version")
            .and_then(serde_json::Value::as_u64)
            .unwrap_or(0))
    }

    /// The revocation list version a sidecar holds.
    pub async fn revocations_version(&self, name: &str) -> Result<u64, MeshError> {
        Ok(self
            .config(name)
            .await?
            .pointer("/revocations/version")
            .and_then(serde_json::Value::as_u64)
            .unwrap_or(0))
    }

    /// Waits (≤ 10 s) until `name`'s sidecar enforces a snapshot newer than `than`.
    pub async fn wait_snapshot_after(&self, name: &str, than: u64) -> Result<u64, MeshError> {
        let what = format!("{name}'s sidecar did not get the edited bundle");
        let log = s(&self.procs.log("control-plane"));
        eventually(Duration::from_secs(10), &what, &log, || async {
            self.snapshot_version(name).await.ok().filter(|v| *v > than)
        })
        .await
    }

    /// Waits (≤ 10 s) until `name`'s sidecar holds a revocation list newer than `than`.
    pub async fn wait_revocations_after(&self, name: &str, than: u64) -> Result<u64, MeshError> {
        let what = format!("{name}'s sidecar did not get the new revocation list");
        let log = s(&self.procs.log("ca"));
        eventually(Duration::from_secs(10), &what, &log, || async {
            self.revocations_version(name).await.ok().filter(|v| *v > than)
        })
        .await
    }

    /// `palisade ARGS` (one-shot), insisting on exit 0.
    pub async fn palisade(&self, args: &[&str]) -> Result<String, MeshError> {
        Ok(self.procs.ok(&strings(args), &[]).await?)
    }

    /// The newest `limit` audit records, as `audit query -o json` prints them.
    pub async fn audit_records(&self, limit: usize) -> Result<Vec<serde_json::Value>, MeshError> {
        let limit = limit.to_string();
        let out = self
            .palisade(&[
                "audit",
                "query",
                "--database",
                &self.database,
                "--output",
                "json",
                "--limit",
                &limit,
            ])
            .await?;
        if out.trim().is_empty() {
            return Ok(Vec::new());
        }
        serde_json::from_str(&out)
            .map_err(|e| MeshError::Unexpected(format!("`audit query -o json` did not print JSON ({e}): {out}")))
    }
}

/// `palisade ca token create` for `spiffe://TD/ns/NAMESPACE/sa/SA`.
async fn create_token(procs: &Processes, ca_dir: &Path, namespace: &str, sa: &str) -> Result<String, MeshError> {
    let id = format!("spiffe://{TRUST_DOMAIN}/ns/{namespace}/sa/{sa}");
    let out = procs
        .ok(
            &strings(&["ca", "token", "create", "--spiffe-id", &id, "--dir", &s(ca_dir)]),
            &[],
        )
        .await?;
    Ok(out.trim().to_owned())
}

/// Polls `f` every 50 ms until it returns `Some`, for at most `limit`.
pub async fn eventually<T, F, Fut>(limit: Duration, what: &str, log: &str, mut f: F) -> Result<T, MeshError>
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Option<T>>,
{
    let start = Instant::now();
    loop {
        if let Some(v) = f().await {
            return Ok(v);
        }
        if start.elapsed() > limit {
            return Err(MeshError::NotReady {
                what: what.to_owned(),
                limit,
                log: log.to_owned(),
            });
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}
