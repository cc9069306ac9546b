//! Test fixtures: a real CA made by rcgen at test time, SVIDs it mints, the
//! `examples/shop` policy compiled into a [`PolicyState`], and sidecar contexts.

use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime};

use palisade_audit::record::{Decision, Event, External};

use palisade_ca::issuer::{new_ca, CaSigner};
use palisade_ca::revocation::RevocationSet;
use palisade_ca::tls::SvidResolver;
use palisade_ca::verify::Trust;
use palisade_ca::{SpiffeId, Svid, TrustBundle, TrustDomain};

use crate::audit::{AuditSink, NoAudit};
use crate::connections::LiveConnections;
use crate::context::{Context, Limits};
use crate::egress::EgressSettings;
use crate::metrics::Metrics;
use crate::state::{empty_handle, PolicyHandle, PolicyState};

/// The shop's identities.
pub(crate) const FRONTEND: &str = "spiffe://shop.example/ns/web/sa/frontend";
pub(crate) const CHECKOUT: &str = "spiffe://shop.example/ns/checkout/sa/checkout";
pub(crate) const REVIEWS: &str = "spiffe://shop.example/ns/reviews/sa/reviews";
pub(crate) const PAYMENTS: &str = "spiffe://shop.example/ns/payments/sa/payments";

/// A CA for a trust domain, made now (real handshakes check the wall clock).
pub(crate) struct TestPki {
    pub(crate) signer: CaSigner,
}

impl TestPki {
    pub(crate) fn new(td: &str) -> Self {
        let td = TrustDomain::new(td).unwrap();
        let material = new_ca(&td, SystemTime::now(), None).unwrap();
        let bundle = TrustBundle::new(td, vec![material.root_cert.clone()]).unwrap();
        let signer = CaSigner::new(material.intermediate_cert, material.intermediate_key, bundle).unwrap();
        Self { signer }
    }

    /// The shop's trust domain.
    pub(crate) fn shop() -> Self {
        Self::new("shop.example")
    }

    /// A fresh one-hour SVID for `id`.
    pub(crate) fn svid(&self, id: &str) -> Svid {
        self.svid_valid_for(id, Duration::from_secs(3600))
    }

    pub(crate) fn svid_valid_for(&self, id: &str, ttl: Duration) -> Svid {
        let id = SpiffeId::parse(id).unwrap();
        self.signer.mint(&id, ttl, SystemTime::now()).unwrap()
    }

    /// A trust store holding this CA's bundle and no revocations.
    pub(crate) fn trust(&self) -> Arc<Trust> {
        Trust::new(self.signer.bundle().clone(), RevocationSet::default())
    }
}

/// `examples/shop` of this repository.
pub(crate) fn shop_dir() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../examples/shop")
}

/// `examples/shop`, compiled, as version 1.
pub(crate) fn shop_state() -> PolicyState {
    let bundle = palisade_policy::load(shop_dir()).unwrap();
    let digest = bundle.digest().to_string();
    PolicyState::build(1, digest, bundle).unwrap()
}

/// A handle holding `state`.
pub(crate) fn handle(state: PolicyState) -> PolicyHandle {
    let handle = empty_handle();
    handle.store(Some(Arc::new(state)));
    handle
}

/// A sidecar context for `id`, with an SVID from `pki` and `policy` in force.
pub(crate) fn context(pki: &TestPki, id: &str, policy: PolicyHandle) -> Arc<Context> {
    context_with(pki, id, policy, |_| {})
}

/// The same, changed by `edit` before it is shared.
pub(crate) fn context_with(
    pki: &TestPki,
    id: &str,
    policy: PolicyHandle,
    edit: impl FnOnce(&mut Context),
) -> Arc<Context> {
    let svid = pki.svid(id);
    let mut ctx = Context {
        id: SpiffeId::parse(id).unwrap(),
        resolver: SvidResolver::with(&svid).unwrap(),
        trust: pki.trust(),
        policy,
        connections: LiveConnections::new(),
        metrics: Arc::new(Metrics::default()),
        audit: Arc::new(NoAudit),
        strict_audit: false,
        egress: EgressSettings::default(),
        limits: Limits::default(),
    };
    edit(&mut ctx);
    Arc::new(ctx)
}

/// An audit sink that keeps every event, and can be told to stop accepting.
#[derive(Debug, Default)]
pub(crate) struct RecordingSink {
    events: Mutex<Vec<Event>>,
    refusing: AtomicBool,
}

impl RecordingSink {
    /// One that accepts nothing (for strict mode).
    pub(crate) fn refusing() -> Self {
        let sink = Self::default();
        sink.refusing.store(true, Ordering::SeqCst);
        sink
    }

    pub(crate) fn events(&self) -> Vec<Event> {
        self.events.lock().unwrap().clone()
    }

    pub(crate) fn decisions(&self) -> Vec<Decision> {
        let decisions = self.events().into_iter().filter_map(|event| match event {
            Event::Decision(decision) => Some(decision),
            _ => None,
        });
        decisions.collect()
    }

    pub(crate) fn externals(&self) -> Vec<External> {
        let externals = self.events().into_iter().filter_map(|event| match event {
            Event::External(external) => Some(external),
            _ => None,
        });
        externals.collect()
    }
}

impl AuditSink for RecordingSink {
    fn record(&self, event: Event) {
        self.events.lock().unwrap().push(event);
    }

    fn accepting(&self) -> bool {
        !self.refusing.load(Ordering::SeqCst)
    }
}
