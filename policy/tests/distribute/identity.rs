//! Who may talk: a proxy is its verified client SVID, and it talks only to the
//! control plane's identity.

use std::time::Duration;

use palisade_ca::tls::SvidResolver;

use crate::support::{eventually, Ca, ControlPlane, Proxy, FRONTEND};

/// Follows for a second; asserts nothing was delivered and a failure was seen.
async fn refused(mut proxy: Proxy) -> String {
    assert!(
        proxy.next(Duration::from_secs(1)).await.is_none(),
        "nothing is delivered"
    );
    let state = proxy.follower.state.clone();
    let error = eventually(Duration::from_secs(2), || state.borrow().last_error.clone()).await;
    assert!(!state.borrow().connected);
    error.expect("the failure is shown")
}

#[tokio::test]
async fn a_proxy_without_a_client_certificate_is_refused() {
    let ca = Ca::new();
    let cp = ControlPlane::start(&ca).await;
    refused(Proxy::follow(&cp.addr, ca.trust(), SvidResolver::empty(), |_| Ok(()))).await;
    assert!(cp.status.snapshot().is_empty(), "no proxy got as far as a stream");
}

#[tokio::test]
async fn a_proxy_with_a_certificate_of_another_ca_is_refused() {
    let ca = Ca::new();
    let other = Ca::new();
    let cp = ControlPlane::start(&ca).await;
    refused(Proxy::follow(&cp.addr, ca.trust(), other.svid(FRONTEND), |_| Ok(()))).await;
    assert!(cp.status.snapshot().is_empty());
}

#[tokio::test]
async fn a_proxy_refuses_a_server_that_is_not_the_control_plane() {
    let ca = Ca::new();
    let impostor = ControlPlane::start_as(&ca, "spiffe://shop.example/ns/palisade-system/sa/impostor").await;
    let error = refused(Proxy::of(&ca, &impostor, FRONTEND)).await;
    assert!(error.contains("cannot reach the control plane"), "{error}");
    assert!(impostor.status.snapshot().is_empty());
}
