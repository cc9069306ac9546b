//! A real Palisade CA (`palisade_ca::service::serve`, the code behind `palisade ca
//! serve`) on loopback, in a fresh CA directory, with the events it reports
//! recorded and its store open for inspection.

use std::sync::{Arc, Mutex};
use std::time::SystemTime;

use palisade_ca::attest::service_account::{TokenReviewer, DEFAULT_AUDIENCE};
use palisade_ca::client::admin::AdminClient;
use palisade_ca::client::CaEndpoint;
use palisade_ca::dir::{CaDir, InitParams};
use palisade_ca::revocation::RevocationTarget;
use palisade_ca::service::events::{CaEvent, CaEvents};
use palisade_ca::service::{ca_spiffe_id, serve, ReviewLimits, ServeError, ServeParams};
use palisade_ca::svid::unix_seconds;
use palisade_ca::{SpiffeId, TrustDomain};
use tokio::sync::oneshot;
use tokio::task::JoinHandle;

/// The trust domain of every test CA.
pub const TD: &str = "k8s.example";

/// The mesh ID of `namespace`/`service_account` in [`TD`].
pub fn id(namespace: &str, service_account: &str) -> SpiffeId {
    SpiffeId::mesh(&TrustDomain::new(TD).unwrap(), namespace, service_account).unwrap()
}

/// The CA's events, as an audit sink would get them.
#[derive(Debug, Default)]
pub struct RecordedEvents(Mutex<Vec<CaEvent>>);

impl CaEvents for RecordedEvents {
    fn event(&self, event: CaEvent) {
        self.0.lock().unwrap().push(event);
    }
}

/// A running CA; stops when dropped.
pub struct RunningCa {
    pub endpoint: CaEndpoint,
    dir: CaDir,
    events: Arc<RecordedEvents>,
    stop: Option<oneshot::Sender<()>>,
    task: JoinHandle<Result<(), ServeError>>,
    _tmp: tempfile::TempDir,
}

impl RunningCa {
    /// A CA that reviews ServiceAccount tokens with `reviewer` (none: it refuses
    /// them), requiring [`DEFAULT_AUDIENCE`], within `limits`.
    pub async fn start(reviewer: Option<Arc<dyn TokenReviewer>>, limits: ReviewLimits) -> Self {
        let tmp = tempfile::tempdir().unwrap();
        let dir = CaDir::new(tmp.path().join("ca"));
        dir.init(InitParams {
            trust_domain: TrustDomain::new(TD).unwrap(),
            plug_in_root: None,
            force: false,
            now: SystemTime::now(),
        })
        .unwrap();
        let events = Arc::new(RecordedEvents::default());
        let params = ServeParams {
            dir: dir.clone(),
            listen: "127.0.0.1:0".parse().unwrap(),
            default_ttl: palisade_ca::issuer::DEFAULT_LEAF_TTL,
            events: Some(Arc::clone(&events) as Arc<dyn CaEvents>),
            reviewer,
            token_audience: DEFAULT_AUDIENCE.to_owned(),
            review_limits: limits,
        };
        let (stop, stopped) = oneshot::channel::<()>();
        let (listening, bound) = oneshot::channel();
        let task = tokio::spawn(serve(
            params,
            move |started| {
                let _ = listening.send(started.addr);
            },
            async {
                let _ = stopped.await;
            },
        ));
        let addr = bound.await.expect("the CA starts");
        let endpoint = CaEndpoint::new(addr.to_string(), dir.bundle().unwrap());
        Self {
            endpoint,
            dir,
            events,
            stop: Some(stop),
            task,
            _tmp: tmp,
        }
    }

    /// Every event the CA reported so far about workloads (not about its own
    /// serving SVID, which it issues itself at start).
    pub fn events(&self) -> Vec<CaEvent> {
        let own = ca_spiffe_id(&TrustDomain::new(TD).unwrap()).unwrap();
        let events = self.events.0.lock().unwrap().clone();
        events
            .into_iter()
            .filter(|e| !matches!(e, CaEvent::Issued { id, .. } | CaEvent::Renewed { id, .. } if *id == own))
            .collect()
    }

    /// Serials the store holds as issued to `id` and still valid.
    pub fn live_serials(&self, id: &SpiffeId) -> usize {
        let store = self.dir.store().unwrap();
        store
            .live_serials_of(id, unix_seconds(SystemTime::now()))
            .unwrap()
            .len()
    }

    /// Revokes `id` through the admin API, as `palisade ca revoke --spiffe-id` does.
    pub async fn revoke(&self, id: &SpiffeId) {
        self.revoke_target(RevocationTarget::SpiffeId(id.clone())).await;
    }

    /// Revokes `target` through the admin API.
    pub async fn revoke_target(&self, target: RevocationTarget) {
        let mut admin = AdminClient::connect(&self.endpoint, &self.dir.admin_token().unwrap())
            .await
            .unwrap();
        admin.revoke(&target, "compromised pod").await.unwrap();
    }
}

impl Drop for RunningCa {
    fn drop(&mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
        self.task.abort();
    }
}
