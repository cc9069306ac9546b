//! The control plane streams each proxy its snapshot over mutual TLS; the proxy
//! answers ACK or NACK; edits of the bundle directory reach proxies within a
//! second, and invalid edits never do.

use std::time::{Duration, Instant};

use palisade_policy::distribute::PolicyEvent;
use palisade_policy::snapshot::for_workload;
use palisade_policy::{load_canonical, load_with_files};

use crate::support::{id, Ca, ControlPlane, Proxy, FRONTEND, PAYMENTS};

const SECOND: Duration = Duration::from_secs(1);
const PCI: &str = "policies/payments/ingress/pci.cedar";

#[tokio::test]
async fn a_proxy_receives_its_own_snapshot_and_its_ack_is_recorded() {
    let ca = Ca::new();
    let cp = ControlPlane::start(&ca).await;
    let mut frontend = Proxy::of(&ca, &cp, FRONTEND);

    let snapshot = frontend.next(2 * SECOND).await.expect("a snapshot at once");
    assert_eq!(snapshot.version(), 1);
    let (files, _) = load_with_files(cp.bundle.path()).unwrap();
    let (files, bundle) = load_canonical(&files).unwrap();
    assert_eq!(
        snapshot.files(),
        &for_workload(&files, &bundle, &id(FRONTEND)),
        "what was sent is the canonical form of the directory"
    );
    assert!(
        !snapshot.files().contains(PCI),
        "payments' ingress is not frontend's business"
    );

    let state = cp.proxy_when(FRONTEND, |s| s.acked.is_some()).await;
    let acked = state.acked.unwrap();
    assert_eq!((acked.version, acked.digest), (1, snapshot.digest().to_string()));
    assert_eq!((state.streams, state.sent.unwrap().version), (1, 1));
    assert_eq!(state.nacked, None);
    let follower = frontend.follower.state.borrow().clone();
    assert!(follower.connected);
    assert_eq!(follower.applied, Some((1, snapshot.digest())));
}

#[tokio::test]
async fn an_edit_of_a_policy_reaches_the_proxy_as_version_2_within_a_second() {
    let ca = Ca::new();
    let cp = ControlPlane::start(&ca).await;
    let mut payments = Proxy::of(&ca, &cp, PAYMENTS);
    payments.next(2 * SECOND).await.expect("version 1");
    cp.proxy_when(PAYMENTS, |s| s.acked.is_some()).await;

    let edited = Instant::now();
    cp.write(PCI, &cp.read(PCI).replace("/charge", "/charges"));
    let snapshot = payments.next(SECOND).await.expect("version 2 within a second");
    assert!(edited.elapsed() < SECOND, "{:?}", edited.elapsed());
    assert_eq!(snapshot.version(), 2);
    assert!(snapshot.files().get(PCI).unwrap().contains("/charges"));
    cp.proxy_when(PAYMENTS, |s| s.acked.as_ref().is_some_and(|a| a.version == 2))
        .await;
    assert!(matches!(
        cp.events().as_slice(),
        [
            PolicyEvent::Accepted { version: 1, .. },
            PolicyEvent::Accepted { version: 2, .. }
        ]
    ));
}

#[tokio::test]
async fn an_invalid_edit_reaches_no_proxy_and_the_version_stays() {
    let ca = Ca::new();
    let cp = ControlPlane::start(&ca).await;
    let mut payments = Proxy::of(&ca, &cp, PAYMENTS);
    payments.next(2 * SECOND).await.expect("version 1");

    let good = cp.read(PCI);
    cp.write(PCI, "@id(\"open\")\npermit (principal, action, resource);\n");
    assert!(
        payments.next(3 * SECOND).await.is_none(),
        "an invalid bundle is never sent"
    );
    assert_eq!(cp.watch.published.borrow().version, 1);
    let events = cp.events();
    let [PolicyEvent::Accepted { version: 1, .. }, PolicyEvent::Rejected { diagnostics }] = events.as_slice() else {
        panic!("one acceptance, one rejection: {events:?}")
    };
    assert!(diagnostics.to_string().contains("pci.cedar"), "{diagnostics}");

    cp.write(PCI, &good.replace("/charge", "/refund"));
    let snapshot = payments.next(2 * SECOND).await.expect("the next valid edit");
    assert_eq!(snapshot.version(), 2, "versions count published bundles only");
}

#[tokio::test]
async fn a_snapshot_the_proxy_refuses_is_recorded_as_a_nack_with_its_error() {
    let ca = Ca::new();
    let cp = ControlPlane::start(&ca).await;
    let mut frontend = Proxy::follow(&cp.addr, ca.trust(), ca.svid(FRONTEND), |_| {
        Err("engine build failed: out of memory".to_owned())
    });
    frontend.next(2 * SECOND).await.expect("a snapshot");
    let state = cp.proxy_when(FRONTEND, |s| s.nacked.is_some()).await;
    let nacked = state.nacked.unwrap();
    assert_eq!(
        (nacked.version, nacked.error.as_str()),
        (1, "engine build failed: out of memory")
    );
    assert_eq!(state.acked, None);
    let follower = frontend.follower.state.borrow().clone();
    assert_eq!(follower.applied, None);
    assert_eq!(
        follower.last_error.as_deref(),
        Some("engine build failed: out of memory")
    );
}

#[tokio::test]
async fn the_status_page_counts_open_streams() {
    let ca = Ca::new();
    let cp = ControlPlane::start(&ca).await;
    let mut first = Proxy::of(&ca, &cp, FRONTEND);
    let mut second = Proxy::of(&ca, &cp, FRONTEND);
    first.next(2 * SECOND).await.unwrap();
    second.next(2 * SECOND).await.unwrap();
    cp.proxy_when(FRONTEND, |s| s.streams == 2).await;
    drop(second);
    cp.proxy_when(FRONTEND, |s| s.streams == 1).await;
    let json = serde_json::to_value(cp.status.snapshot()).unwrap();
    assert_eq!(json[0]["spiffeId"], FRONTEND);
}
