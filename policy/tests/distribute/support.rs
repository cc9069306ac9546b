//! A mesh on loopback: a CA made at test time, a control plane serving a copy of
//! the shop bundle, and proxies following it.

use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime};

use tokio::net::TcpListener;
use tokio::sync::{mpsc, oneshot};

use palisade_ca::issuer::{new_ca, CaSigner};
use palisade_ca::tls::SvidResolver;
use palisade_ca::verify::Trust;
use palisade_ca::{SpiffeId, TrustBundle, TrustDomain};
use palisade_policy::distribute::{
    control_plane_id, follow, serve, watch_bundle, BundleWatch, FollowParams, Follower, PolicyEvent, ProxyState,
    ProxyStatus, ServeParams, WatchParams,
};
use palisade_policy::snapshot::Snapshot;
use tempfile::TempDir;

pub const FRONTEND: &str = "spiffe://shop.example/ns/web/sa/frontend";
pub const CHECKOUT: &str = "spiffe://shop.example/ns/checkout/sa/checkout";
pub const REVIEWS: &str = "spiffe://shop.example/ns/reviews/sa/reviews";
pub const PAYMENTS: &str = "spiffe://shop.example/ns/payments/sa/payments";

/// `examples/shop`.
pub fn shop() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../examples/shop")
}

pub fn id(s: &str) -> SpiffeId {
    SpiffeId::parse(s).unwrap()
}

/// A copy of the shop example in a temporary directory.
pub fn shop_copy() -> TempDir {
    let dir = tempfile::tempdir().unwrap();
    copy(&shop(), dir.path());
    dir
}

fn copy(from: &Path, to: &Path) {
    for entry in std::fs::read_dir(from).unwrap() {
        let entry = entry.unwrap();
        let target = to.join(entry.file_name());
        if entry.path().is_dir() {
            std::fs::create_dir_all(&target).unwrap();
            copy(&entry.path(), &target);
        } else {
            std::fs::copy(entry.path(), target).unwrap();
        }
    }
}

/// A CA of `shop.example` on the real clock (handshakes check validity against it).
pub struct Ca {
    signer: CaSigner,
}

impl Ca {
    pub fn new() -> Self {
        let td = TrustDomain::new("shop.example").unwrap();
        let material = new_ca(&td, SystemTime::now(), None).unwrap();
        let bundle = TrustBundle::new(td, vec![material.root_cert]).unwrap();
        let signer = CaSigner::new(material.intermediate_cert, material.intermediate_key, bundle).unwrap();
        Self { signer }
    }

    /// What peers of this CA verify against.
    pub fn trust(&self) -> Arc<Trust> {
        Trust::new(self.signer.bundle().clone(), Default::default())
    }

    /// A resolver serving a fresh SVID for `id`.
    pub fn svid(&self, id_str: &str) -> Arc<SvidResolver> {
        let svid = self
            .signer
            .mint(&id(id_str), Duration::from_secs(3600), SystemTime::now())
            .unwrap();
        SvidResolver::with(&svid).unwrap()
    }
}

/// The control plane's own ID in the shop's trust domain.
pub fn control_plane() -> String {
    control_plane_id(&TrustDomain::new("shop.example").unwrap())
        .unwrap()
        .to_string()
}

/// A control plane serving a copy of the shop bundle on a loopback port.
pub struct ControlPlane {
    pub bundle: TempDir,
    pub addr: String,
    pub status: Arc<ProxyStatus>,
    pub events: Arc<Mutex<Vec<PolicyEvent>>>,
    pub watch: BundleWatch,
    _stop: oneshot::Sender<()>,
}

impl ControlPlane {
    /// Serving as the control plane.
    pub async fn start(ca: &Ca) -> Self {
        Self::start_as(ca, &control_plane()).await
    }

    /// Serving with an SVID for `server_id`.
    pub async fn start_as(ca: &Ca, server_id: &str) -> Self {
        let bundle = shop_copy();
        let events = Arc::new(Mutex::new(Vec::new()));
        let sink = Arc::clone(&events);
        let watch = watch_bundle(WatchParams::new(bundle.path()), move |event| {
            sink.lock().unwrap().push(event.clone());
        })
        .await
        .unwrap_or_else(|errors| panic!("{errors}"));
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap().to_string();
        let status = ProxyStatus::new();
        let (stop, stopped) = oneshot::channel::<()>();
        let params = ServeParams {
            listener,
            resolver: ca.svid(server_id),
            trust: ca.trust(),
            published: watch.published.clone(),
            status: Arc::clone(&status),
            push: None,
        };
        tokio::spawn(serve(params, async move {
            let _ = stopped.await;
        }));
        Self {
            bundle,
            addr,
            status,
            events,
            watch,
            _stop: stop,
        }
    }

    /// Writes `relative` in the served bundle directory.
    pub fn write(&self, relative: &str, text: &str) {
        std::fs::write(self.bundle.path().join(relative), text).unwrap();
    }

    pub fn read(&self, relative: &str) -> String {
        std::fs::read_to_string(self.bundle.path().join(relative)).unwrap()
    }

    /// The state of proxy `id` once `done` holds of it, within 2 s.
    pub async fn proxy_when(&self, id_str: &str, done: impl Fn(&ProxyState) -> bool) -> ProxyState {
        let id = id(id_str);
        eventually(Duration::from_secs(2), || self.status.proxy(&id).filter(|s| done(s)))
            .await
            .unwrap_or_else(|| panic!("proxy {id_str}: {:?}", self.status.proxy(&id)))
    }

    pub fn events(&self) -> Vec<PolicyEvent> {
        self.events.lock().unwrap().clone()
    }
}

/// A proxy following a control plane; every snapshot it is handed goes to `received`.
pub struct Proxy {
    pub follower: Follower,
    received: mpsc::UnboundedReceiver<Snapshot>,
}

impl Proxy {
    /// Follows `addr` as `proxy_id`, presenting `resolver` and trusting `trust`;
    /// `verdict` decides whether each snapshot is applied.
    pub fn follow(
        addr: &str,
        trust: Arc<Trust>,
        resolver: Arc<SvidResolver>,
        verdict: impl Fn(&Snapshot) -> Result<(), String> + Send + 'static,
    ) -> Self {
        let (tx, received) = mpsc::unbounded_channel();
        let params = FollowParams {
            addr: addr.to_owned(),
            trust,
            resolver,
            trust_domain: TrustDomain::new("shop.example").unwrap(),
        };
        let follower = follow(params, move |snapshot| {
            let result = verdict(&snapshot);
            let _ = tx.send(snapshot);
            result
        });
        Self { follower, received }
    }

    /// A proxy of `ca` with an SVID for `proxy_id` that loads every snapshot.
    pub fn of(ca: &Ca, control_plane: &ControlPlane, proxy_id: &str) -> Self {
        Self::of_addr(ca, &control_plane.addr, proxy_id)
    }

    /// As [`Proxy::of`], for the control plane at `addr`.
    pub fn of_addr(ca: &Ca, addr: &str, proxy_id: &str) -> Self {
        Self::follow(addr, ca.trust(), ca.svid(proxy_id), |snapshot| {
            snapshot.load().map(drop).map_err(|e| e.to_string())
        })
    }

    /// The next snapshot handed to the proxy, within `within`.
    pub async fn next(&mut self, within: Duration) -> Option<Snapshot> {
        tokio::time::timeout(within, self.received.recv()).await.ok().flatten()
    }
}

impl Drop for Proxy {
    fn drop(&mut self) {
        self.follower.task.abort();
    }
}

/// Polls `check` every 10 ms until it gives a value or `within` has passed.
pub async fn eventually<T>(within: Duration, mut check: impl FnMut() -> Option<T>) -> Option<T> {
    let deadline = tokio::time::Instant::now() + within;
    loop {
        if let Some(value) = check() {
            return Some(value);
        }
        if tokio::time::Instant::now() >= deadline {
            return None;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}
