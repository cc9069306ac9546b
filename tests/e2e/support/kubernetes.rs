//! A cluster for the controller's tests: the fake Kubernetes API server (the one
//! part a test may fake), a real CA process, and real controllers run in this
//! process (so a test can crash one by aborting it).

use std::path::PathBuf;
use std::time::Duration;

use palisade_crds::controller::{
    self, BackoffPolicy, CaAdmin, ControllerError, LeaseParams, LeaseTiming, Options, Output, Params, Progress,
};
use palisade_crds::fake::{FakeApiServer, RecordedRequest};
use palisade_policy::BundleFiles;
use serde_json::{json, Value};
use tokio::sync::{oneshot, watch};
use tokio::task::JoinHandle;

use super::{CaDirFixture, Server};

/// The mesh's trust domain (the CA's).
pub const TD: &str = "k8s.test";
/// The group and version of Palisade's resources.
pub const PALISADE: &str = "palisade.dev/v1alpha1";
/// The controllers' Lease.
pub const LEASE_NAMESPACE: &str = "palisade-system";
pub const LEASE: &str = "palisade-controller";

/// Lease timing short enough for a test to see a takeover.
pub fn quick_lease() -> LeaseTiming {
    LeaseTiming {
        duration: Duration::from_secs(2),
        renew_every: Duration::from_millis(300),
        renew_deadline: Duration::from_millis(1200),
        retry_every: Duration::from_millis(200),
    }
}

/// The fake API server, a running CA, and a temp dir.
pub struct Cluster {
    pub api: FakeApiServer,
    pub ca_server: Server,
    pub ca: CaDirFixture,
    pub tmp: tempfile::TempDir,
}

/// A controller running in this process.
pub struct Controller {
    pub name: String,
    /// Its `--bundle-out` directory.
    pub out: PathBuf,
    pub progress: watch::Receiver<Progress>,
    task: JoinHandle<Result<(), ControllerError>>,
    stop: Option<oneshot::Sender<()>>,
}

impl Cluster {
    /// A cluster with the MeshConfig `default` of [`TD`] and nothing else.
    pub async fn start() -> Self {
        let api = FakeApiServer::start().await.expect("the fake API server starts");
        let ca = CaDirFixture::init(TD);
        let ca_server = ca.serve();
        let cluster = Self {
            api,
            ca_server,
            ca,
            tmp: tempfile::tempdir().unwrap(),
        };
        cluster.apply(mesh_config());
        cluster
    }

    /// Creates or replaces an object, as kubectl or kubelet would.
    pub fn apply(&self, object: Value) -> Value {
        self.api.apply(object).expect("the fake stores the object")
    }

    /// A Palisade resource's status, if it has one.
    pub fn status(&self, kind: &str, namespace: Option<&str>, name: &str) -> Option<Value> {
        self.api
            .get(PALISADE, kind, namespace, name)
            .and_then(|o| o.get("status").cloned())
    }

    /// A condition of a Palisade resource's status.
    pub fn condition(&self, kind: &str, namespace: Option<&str>, name: &str, type_: &str) -> Option<Value> {
        let status = self.status(kind, namespace, name)?;
        status
            .get("conditions")?
            .as_array()?
            .iter()
            .find(|c| c["type"] == type_)
            .cloned()
    }

    /// Who holds the Lease.
    pub fn lease_holder(&self) -> Option<String> {
        let lease = self
            .api
            .get("coordination.k8s.io/v1", "Lease", Some(LEASE_NAMESPACE), LEASE)?;
        lease["spec"]["holderIdentity"].as_str().map(str::to_owned)
    }

    /// Status writes so far (server-side applies to `/status`), and by whom.
    pub fn status_writes(&self) -> Vec<RecordedRequest> {
        self.api
            .writes()
            .into_iter()
            .filter(|r| !r.path.contains("/leases"))
            .collect()
    }

    /// Starts a controller named `name` with its own bundle directory.
    pub async fn controller(&self, name: &str, lease: LeaseTiming) -> Controller {
        self.controller_with(name, lease, Duration::from_secs(300)).await
    }

    /// Starts a controller that also reconciles every `resync`.
    pub async fn controller_with(&self, name: &str, lease: LeaseTiming, resync: Duration) -> Controller {
        let out = self.tmp.path().join(format!("bundle-{name}"));
        let mut config = self.api.config().unwrap();
        config
            .headers
            .push((http::header::USER_AGENT, http::HeaderValue::from_str(name).unwrap()));
        let client = kube::Client::try_from(config).unwrap();
        let (progress_tx, progress) = watch::channel(Progress::default());
        let params = Params {
            client,
            output: Output::BundleDir(out.clone()),
            ca: CaAdmin {
                endpoint: self.ca.endpoint(&self.ca_server),
                token_file: self.ca.file("revoker.token"),
            },
            lease: LeaseParams {
                namespace: LEASE_NAMESPACE.into(),
                name: LEASE.into(),
                identity: name.into(),
                timing: lease,
            },
            cluster_domain: "cluster.local".into(),
            options: Options {
                debounce: Duration::from_millis(50),
                backoff: BackoffPolicy {
                    initial: Duration::from_millis(100),
                    max: Duration::from_secs(2),
                },
                resync,
            },
            progress: Some(progress_tx),
            review: None,
        };
        let (stop, stopped) = oneshot::channel::<()>();
        let task = tokio::spawn(controller::run(params, async move {
            let _ = stopped.await;
        }));
        Controller {
            name: name.into(),
            out,
            progress,
            task,
            stop: Some(stop),
        }
    }
}

impl Controller {
    /// The bundle at `--bundle-out DIR/current`, if one was published.
    pub fn published(&self) -> Option<BundleFiles> {
        let current = self.out.join("current");
        current.exists().then(|| BundleFiles::read_dir(current).ok()).flatten()
    }

    /// Where `DIR/current` points.
    pub fn current_link(&self) -> Option<PathBuf> {
        std::fs::read_link(self.out.join("current")).ok()
    }

    /// The version directories under `DIR`.
    pub fn versions(&self) -> Vec<String> {
        let mut names: Vec<String> = std::fs::read_dir(&self.out)
            .map(|d| {
                d.flatten()
                    .filter_map(|e| e.file_name().into_string().ok())
                    .filter(|n| n.starts_with(".bundle-"))
                    .collect()
            })
            .unwrap_or_default();
        names.sort();
        names
    }

    /// The text of a published policy file, if any.
    pub fn policy_text(&self, path: &str) -> Option<String> {
        self.published()?.get(path).map(str::to_owned)
    }

    /// How many bundle reconciles it has finished.
    pub fn bundle_reconciles(&self) -> u64 {
        self.progress.borrow().bundle_reconciles
    }

    /// Crashes it: the task is dropped mid-way, nothing is released.
    pub fn kill(self) {
        self.task.abort();
    }

    /// Stops it gracefully (a leader releases the Lease).
    pub async fn stop(mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
        let ended = tokio::time::timeout(Duration::from_secs(10), &mut self.task).await;
        ended
            .expect("the controller stops within 10 s")
            .expect("the controller task ran")
            .expect("the controller ended without error");
    }
}

impl Drop for Controller {
    fn drop(&mut self) {
        self.task.abort();
    }
}

pub fn mesh_config() -> Value {
    json!({
        "apiVersion": PALISADE,
        "kind": "MeshConfig",
        "metadata": {"name": "default"},
        "spec": {"trustDomain": TD},
    })
}

/// A running pod of service account `sa`.
pub fn pod(namespace: &str, name: &str, sa: &str, labels: Value) -> Value {
    json!({
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {"name": name, "namespace": namespace, "labels": labels},
        "spec": {"serviceAccountName": sa, "containers": [{"name": "app", "image": "app"}]},
        "status": {"phase": "Running", "podIP": "127.0.0.1"},
    })
}

pub fn cedar_policy(namespace: &str, name: &str, direction: &str, text: &str) -> Value {
    json!({
        "apiVersion": PALISADE,
        "kind": "CedarPolicy",
        "metadata": {"name": name, "namespace": namespace},
        "spec": {"direction": direction, "policy": text},
    })
}

pub fn certificate_revocation(name: &str, spiffe_id: &str, reason: &str) -> Value {
    json!({
        "apiVersion": PALISADE,
        "kind": "CertificateRevocation",
        "metadata": {"name": name},
        "spec": {"spiffeId": spiffe_id, "reason": reason},
    })
}

/// Whether `message` holds `LINE:COLUMN` for this line.
pub fn has_line_and_column(message: &str, line: u32) -> bool {
    let needle = format!("{line}:");
    message.match_indices(&needle).any(|(at, _)| {
        let before = message[..at].chars().last();
        let after = message[at + needle.len()..].chars().next();
        !before.is_some_and(|c| c.is_ascii_digit()) && after.is_some_and(|c| c.is_ascii_digit())
    })
}
