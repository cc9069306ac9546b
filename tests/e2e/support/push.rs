//! The controller as it runs beside a mesh, as real processes: `palisade ca
//! serve`, `palisade control-plane serve --from-controller`, and `palisade
//! controller run --control-plane` pushing to it and serving its admission
//! webhook, against the fake API server holding the shop (the one part faked).

use std::net::SocketAddr;
use std::process::Stdio;
use std::time::{Duration, Instant};

use palisade_crds::fake::FakeApiServer;
use serde_json::Value;

use super::mesh::{admin_get, free_port, mesh_ip};
use super::shop_cluster::apply_shop;
use super::webhook::{self, Answer, WebhookPki};
use super::{palisade, s, CaDirFixture, Server};

/// shop.yaml's MeshConfig says so.
pub const TD: &str = "shop.example";
const CONTROL_PLANE_ID: &str = "spiffe://shop.example/ns/palisade-system/sa/palisade-control-plane";
const CONTROLLER_ID: &str = "spiffe://shop.example/ns/palisade-system/sa/palisade-controller";
/// What the controller prints once its webhook listens; the URL follows.
const WEBHOOK_LINE: &str = "admission webhook on ";
/// How long a push, a status write or a restart may take on a loaded machine.
pub const WAIT: Duration = Duration::from_secs(60);

/// What the control plane's admin `/bundle` page says it serves.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Served {
    pub version: u64,
    pub digest: String,
    /// The last pushed bundle it refused, if any.
    pub last_rejected: Value,
}

/// Fields drop in order: the controller, then the control plane, then the rest.
pub struct PushCluster {
    pub controller: Server,
    pub control_plane: Option<Server>,
    /// The webhook's URL, as the controller printed it.
    pub webhook_url: String,
    pub webhook_pki: WebhookPki,
    pub api: FakeApiServer,
    /// The shop's CedarPolicies, `(namespace, name)`.
    pub policies: Vec<(String, String)>,
    pub control_plane_addr: SocketAddr,
    pub control_plane_admin: SocketAddr,
    pub ca_server: Server,
    pub ca: CaDirFixture,
    _tmp: tempfile::TempDir,
}

impl PushCluster {
    /// The CA, the fake API server holding the shop, the control plane, and the
    /// controller pushing to it.
    pub async fn start() -> Self {
        let ca = CaDirFixture::init(TD);
        let ca_server = ca.serve();
        let api = FakeApiServer::start().await.unwrap();
        let policies = apply_shop(&api);
        let tmp = tempfile::tempdir().unwrap();
        let webhook_pki = WebhookPki::write(tmp.path());
        // An address of its own, so a restart can bind the same port again.
        let ip = mesh_ip();
        let (control_plane_addr, control_plane_admin) = (free_port(ip), free_port(ip));
        let control_plane = control_plane(&ca, &ca_server, control_plane_addr, control_plane_admin);
        let kubeconfig = api.write_kubeconfig(tmp.path()).unwrap();
        let controller = controller(&ca, &ca_server, &kubeconfig, control_plane_addr, &webhook_pki);
        let webhook_url = controller.addr.clone();
        Self {
            controller,
            control_plane: Some(control_plane),
            webhook_url,
            webhook_pki,
            api,
            policies,
            control_plane_addr,
            control_plane_admin,
            ca_server,
            ca,
            _tmp: tmp,
        }
    }

    /// Kills the control plane (SIGKILL), as a crash would.
    pub fn kill_control_plane(&mut self) {
        if let Some(server) = self.control_plane.take() {
            server.kill();
        }
    }

    /// Starts a new control plane on the same addresses: it starts empty.
    pub fn start_control_plane(&mut self) {
        let server = control_plane(
            &self.ca,
            &self.ca_server,
            self.control_plane_addr,
            self.control_plane_admin,
        );
        self.control_plane = Some(server);
    }

    /// What the control plane serves now, if it answers.
    pub fn served(&self) -> Option<Served> {
        let (status, body) = admin_get(self.control_plane_admin, "/bundle");
        if status != 200 {
            return None;
        }
        let page: Value = serde_json::from_str(&body).unwrap();
        Some(Served {
            version: page["version"].as_u64().unwrap(),
            digest: page["digest"].as_str().unwrap().to_owned(),
            last_rejected: page["lastRejected"].clone(),
        })
    }

    /// Waits until the control plane serves the bundle of `digest`.
    pub async fn serving(&self, what: &str, digest: &str) -> Served {
        let deadline = Instant::now() + WAIT;
        loop {
            let served = self.served();
            if let Some(served) = served.as_ref().filter(|b| b.digest == digest) {
                return served.clone();
            }
            assert!(
                Instant::now() < deadline,
                "the control plane did not serve {what} ({digest}) within {WAIT:?}; it serves {served:?}"
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    /// Asks the webhook about creating `policy`, as the API server would.
    pub async fn review(&self, uid: &str, policy: &Value) -> Answer {
        webhook::review(&self.webhook_url, &self.webhook_pki, uid, policy).await
    }
}

fn token(ca: &CaDirFixture, id: &str) -> String {
    let id = palisade_ca::SpiffeId::parse(id).unwrap();
    ca.token(&id)
}

/// `palisade control-plane serve --from-controller` with a fresh join token.
fn control_plane(ca: &CaDirFixture, ca_server: &Server, listen: SocketAddr, admin: SocketAddr) -> Server {
    let trust = ca.file("bundle.pem");
    let (listen, admin) = (listen.to_string(), admin.to_string());
    Server::start(&[
        "control-plane",
        "serve",
        "--from-controller",
        "--trust-domain",
        TD,
        "--listen",
        &listen,
        "--admin",
        &admin,
        "--ca",
        &ca_server.addr,
        "--trust-bundle",
        s(&trust),
        "--join-token",
        &token(ca, CONTROL_PLANE_ID),
    ])
}

/// `palisade controller run --control-plane ADDR` with its webhook on a free
/// port; its stderr is kept, for its retries to be counted.
fn controller(
    ca: &CaDirFixture,
    ca_server: &Server,
    kubeconfig: &std::path::Path,
    control_plane: SocketAddr,
    pki: &WebhookPki,
) -> Server {
    let (trust, admin_token) = (ca.file("bundle.pem"), ca.file("revoker.token"));
    let control_plane = control_plane.to_string();
    let mut command = palisade();
    command
        .args([
            "controller",
            "run",
            "--kubeconfig",
            s(kubeconfig),
            "--control-plane",
            &control_plane,
            "--trust-domain",
            TD,
            "--ca",
            &ca_server.addr,
            "--trust-bundle",
            s(&trust),
            "--admin-token-file",
            s(&admin_token),
            "--identity",
            "test-1",
            "--webhook-listen",
            "127.0.0.1:0",
            "--webhook-cert",
            s(&pki.cert),
            "--webhook-key",
            s(&pki.key),
        ])
        .env("PALISADE_JOIN_TOKEN", token(ca, CONTROLLER_ID))
        .stderr(Stdio::piped());
    Server::spawn(&mut command, WEBHOOK_LINE)
}
