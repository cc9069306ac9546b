//! The controller feeding a control plane, all real processes but the API server:
//! `palisade controller run --control-plane` builds the bundle from the cluster
//! (the fake API server holding shop.yaml, scheduled), pushes it over mTLS to
//! `palisade control-plane serve --from-controller`, writes statuses back, and
//! checks new CedarPolicies at its admission webhook against the bundle it built.

use crate::support::push::{PushCluster, WAIT};
use crate::support::shop_cluster::{condition, served_digest, shop_files, with_policy};
use crate::support::webhook::cedar_policy;
use crate::support::{eventually, Server};

/// The CedarPolicy edited here, and its file in the bundle.
const REVIEWS: (&str, &str) = ("reviews", "reviews-ingress");
const REVIEWS_PATH: &str = "policies/reviews/ingress/reviews-ingress.cedar";

/// What the controller logs each time a push (or another step of a rebuild) fails.
const RETRYING: &str = "reconciling the policy bundle failed; retrying";

/// The digest the control plane serves for `examples/shop`.
fn shop_digest() -> String {
    served_digest(&shop_files())
}

/// reviews-ingress, edited: the storefront may also send HEAD. Its text, and the
/// digest of the shop with it.
fn edited_reviews() -> (String, String) {
    let mut files = shop_files();
    let original = files.get(REVIEWS_PATH).unwrap().to_owned();
    let edited = original.replace(
        r#"action == Action::"GET","#,
        r#"action in [Action::"GET", Action::"HEAD"],"#,
    );
    assert_ne!(edited, original, "the edit changes the policy");
    files.insert(REVIEWS_PATH, edited.clone());
    (edited, served_digest(&files))
}

/// Puts reviews-ingress back as the shop has it.
fn restore_reviews(cluster: &PushCluster) {
    let original = shop_files().get(REVIEWS_PATH).unwrap().to_owned();
    cluster
        .api
        .apply(with_policy(&cluster.api, REVIEWS.0, REVIEWS.1, &original))
        .unwrap();
}

/// Waits until the CedarPolicy's `Accepted` condition is `True` for `generation`.
async fn accepted(cluster: &PushCluster, (namespace, name): (&str, &str), generation: i64) {
    let what = format!("CedarPolicy {namespace}/{name} Accepted=True at generation {generation}");
    eventually(WAIT, &what, || {
        condition(&cluster.api, namespace, name, "Accepted")
            .filter(|c| c["status"] == "True" && c["observedGeneration"] == generation)
    })
    .await;
}

/// Waits until the controller has logged `n` failed attempts.
async fn failed_attempts(controller: &Server, n: usize) {
    let what = format!("{n} failed pushes logged by the controller");
    eventually(WAIT, &what, || (controller.logged(RETRYING) >= n).then_some(())).await;
}

/// The must-show: what the control plane serves is the shop the cluster holds,
/// pushed by the controller, and each edit of a CedarPolicy after it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_control_plane_serves_the_shop_the_controller_pushed_and_then_each_edit() {
    let cluster = PushCluster::start().await;

    let shop = cluster.serving("the shop", &shop_digest()).await;
    assert!(
        shop.version >= 1,
        "version 0 is the control plane waiting for its first push, never served: {shop:?}"
    );
    assert!(shop.last_rejected.is_null(), "no push was refused: {shop:?}");
    assert_eq!(cluster.policies.len(), 7, "shop.yaml's seven CedarPolicies");
    for (namespace, name) in &cluster.policies {
        accepted(&cluster, (namespace, name), 1).await;
        let applied = condition(&cluster.api, namespace, name, "Applied").unwrap();
        assert_eq!(applied["status"], "True", "{namespace}/{name}: {applied}");
    }

    // `kubectl apply` of a changed spec.policy.
    let (edited, edited_digest) = edited_reviews();
    assert_ne!(edited_digest, shop_digest());
    cluster
        .api
        .apply(with_policy(&cluster.api, REVIEWS.0, REVIEWS.1, &edited))
        .unwrap();
    let after = cluster.serving("the edited shop", &edited_digest).await;
    assert!(
        after.version > shop.version,
        "a newer version: {after:?} after {shop:?}"
    );
    accepted(&cluster, REVIEWS, 2).await;

    // And back: the shop again, as a newer version still.
    restore_reviews(&cluster);
    let back = cluster.serving("the shop again", &shop_digest()).await;
    assert!(back.version > after.version, "{back:?} after {after:?}");
}

/// payments' PCI permit; its `@id` is in the published shop.
const REUSED_ID: &str = "payments-charge-from-pci";

/// A reviews ingress policy, valid on its own, under `id`.
fn reviews_policy(id: &str) -> String {
    format!(
        r#"@id("{id}")
permit (
  principal in Namespace::"checkout",
  action == Action::"GET",
  resource in Namespace::"reviews"
);
"#
    )
}

/// The webhook checks a new CedarPolicy against the bundle the controller built:
/// an `@id` that payments uses is refused in reviews, though the policy is valid
/// on its own (the same text under a new `@id` is admitted).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_webhook_refuses_an_id_of_the_built_bundle_in_another_namespace_and_admits_a_new_one() {
    let cluster = PushCluster::start().await;
    cluster.serving("the shop", &shop_digest()).await;

    let reuse = cedar_policy("reviews", "checkout-reads", "ingress", &reviews_policy(REUSED_ID));
    let refused = cluster.review("uid-reuse", &reuse).await;
    assert!(!refused.allowed, "an `@id` of payments, reused in reviews: {refused:?}");
    assert!(
        refused
            .message
            .contains(&format!("policy id `{REUSED_ID}` is used twice")),
        "{}",
        refused.message
    );
    assert!(
        refused.message.contains("CedarPolicy reviews/checkout-reads"),
        "it names the resource: {}",
        refused.message
    );

    let fresh = cedar_policy(
        "reviews",
        "checkout-reads",
        "ingress",
        &reviews_policy("reviews-readable-from-checkout"),
    );
    let admitted = cluster.review("uid-fresh", &fresh).await;
    assert!(admitted.allowed, "{admitted:?}");
}

/// The must-show: the control plane crashes and comes back on its address,
/// empty. The cluster changed meanwhile (reviews-ingress back to the shop's):
/// the controller's push fails, it retries with backoff, and the first retry
/// after the restart gives the new control plane the shop.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_control_plane_restarted_on_its_address_gets_the_bundle_from_the_controllers_retries() {
    let mut cluster = PushCluster::start().await;
    cluster.serving("the shop", &shop_digest()).await;
    let (edited, edited_digest) = edited_reviews();
    cluster
        .api
        .apply(with_policy(&cluster.api, REVIEWS.0, REVIEWS.1, &edited))
        .unwrap();
    cluster.serving("the edited shop", &edited_digest).await;

    cluster.kill_control_plane();
    assert_eq!(cluster.served(), None, "the control plane is gone");
    let failed_before = cluster.controller.logged(RETRYING);
    restore_reviews(&cluster);
    failed_attempts(&cluster.controller, failed_before + 2).await;

    cluster.start_control_plane();
    let served = cluster.serving("the shop, after the restart", &shop_digest()).await;
    assert!(
        served.version >= 1,
        "the restarted control plane waited for a push: {served:?}"
    );
    accepted(&cluster, REVIEWS, 3).await;
}

/// The same crash, with nothing changed in the cluster while the control plane
/// was away: the controller pushes at every reconcile, and in push mode it
/// resyncs every 30 s, so the restarted control plane gets the bundle back.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_control_plane_restarted_without_a_cluster_change_gets_the_bundle_again() {
    let mut cluster = PushCluster::start().await;
    let before = cluster.serving("the shop", &shop_digest()).await;
    cluster.kill_control_plane();
    cluster.start_control_plane();
    let after = cluster.serving("the shop, after the restart", &before.digest).await;
    assert!(after.version >= 1, "{after:?}");
}
