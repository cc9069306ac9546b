//! The Kubernetes controller against a fake API server (the one part faked: no
//! API server can run here), with a real CA, the real loader and kube's real
//! client and watchers.

use std::sync::Arc;
use std::time::Duration;

use palisade_ca::client::{fetch_svid, ClientError, Credential};
use palisade_crds::controller::LeaseTiming;
use serde_json::{json, Value};
use tonic::Code;

use crate::support::kubernetes::{
    cedar_policy, certificate_revocation, has_line_and_column, pod, quick_lease, Cluster, Controller, LEASE,
    LEASE_NAMESPACE, PALISADE, TD,
};
use crate::support::{eventually, fails, ok, s};

const WAIT: Duration = Duration::from_secs(30);

const GUARD_PATH: &str = "policies/payments/ingress/guard.cedar";
const FRONTEND_PATH: &str = "policies/web/egress/frontend.cedar";

/// payments refuses every caller without `pci=true`.
const GUARD: &str = r#"@id("payments-forbid-non-pci")
forbid (
  principal,
  action,
  resource in Namespace::"payments"
)
unless { principal.hasTag("pci") && principal.getTag("pci") == "true" };
"#;

/// A broken edit of the guard: the error is on line 3.
const GUARD_BROKEN: &str = r#"@id("payments-open-to-all")
permit (
  principal ==,
  action,
  resource in Namespace::"payments"
);
"#;

fn frontend(actions: &str, id: &str) -> String {
    format!(
        r#"@id("{id}")
permit (
  principal == Workload::"spiffe://{TD}/ns/web/sa/frontend",
  action in [{actions}],
  resource in Namespace::"payments"
);
"#
    )
}

/// The shop's two namespaces of this story: pods and one policy each.
fn shop(cluster: &Cluster) {
    cluster.apply(pod("web", "frontend-1", "frontend", json!({"app": "frontend"})));
    cluster.apply(pod(
        "payments",
        "payments-1",
        "payments",
        json!({"app": "payments", "pci": "true"}),
    ));
    cluster.apply(cedar_policy("payments", "guard", "ingress", GUARD));
    cluster.apply(cedar_policy(
        "web",
        "frontend",
        "egress",
        &frontend(r#"Action::"GET""#, "web-frontend-reads-payments"),
    ));
}

/// The labels `controller` published for workload `id`, once it published it.
fn published_labels(controller: &Controller, id: &str) -> Option<Value> {
    let text = controller.published()?.get("workloads.yaml")?.to_owned();
    let entries: Vec<Value> = serde_yaml_ng::from_str(&text).ok()?;
    let entry = entries.into_iter().find(|e| e["spiffeId"] == id)?;
    Some(entry.get("labels").cloned().unwrap_or_else(|| json!({})))
}

/// Waits until `controller` published a bundle holding `text` at `path`.
async fn published(controller: &Controller, path: &str, text: &str) {
    let what = format!("`{path}` published with {text:?} by {}", controller.name);
    eventually(WAIT, &what, || {
        controller.policy_text(path).filter(|t| t.contains(text)).map(|_| ())
    })
    .await;
}

/// Waits until a condition of a resource has this status and reason; the condition.
async fn condition(
    cluster: &Cluster,
    (kind, namespace, name): (&str, Option<&str>, &str),
    type_: &str,
    (status, reason): (&str, &str),
) -> Value {
    let what = format!("{kind} {name}: {type_}={status} ({reason})");
    eventually(WAIT, &what, || {
        cluster
            .condition(kind, namespace, name, type_)
            .filter(|c| c["status"] == status && c["reason"] == reason)
    })
    .await
}

/// Waits until the controller has finished `n` bundle reconciles.
async fn reconciles(controller: &Controller, n: u64) {
    eventually(WAIT, &format!("{n} reconciles by {}", controller.name), || {
        (controller.bundle_reconciles() >= n).then_some(())
    })
    .await;
}

/// The must-show: an invalid CedarPolicy is marked Invalid with its message and
/// position, its namespace keeps enforcing its last valid set (the forbid stays),
/// and another namespace's change is published meanwhile.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_invalid_policy_is_marked_invalid_and_holds_only_its_own_namespace() {
    let cluster = Cluster::start().await;
    shop(&cluster);
    let controller = cluster.controller("solo", LeaseTiming::default()).await;
    published(&controller, GUARD_PATH, "payments-forbid-non-pci").await;
    let guard = ("CedarPolicy", Some("payments"), "guard");
    let accepted = condition(&cluster, guard, "Accepted", ("True", "Valid")).await;
    assert_eq!(accepted["observedGeneration"], 1);
    condition(&cluster, guard, "Applied", ("True", "Published")).await;

    // Both namespaces change; payments' change is broken.
    cluster.apply(cedar_policy("payments", "guard", "ingress", GUARD_BROKEN));
    let v2 = frontend(r#"Action::"GET", Action::"POST""#, "web-frontend-calls-payments");
    cluster.apply(cedar_policy("web", "frontend", "egress", &v2));

    published(&controller, FRONTEND_PATH, "web-frontend-calls-payments").await;
    let invalid = condition(&cluster, guard, "Accepted", ("False", "Invalid")).await;
    let message = invalid["message"].as_str().unwrap();
    assert!(
        message.contains("spec.policy") && has_line_and_column(message, 3),
        "the message points into the resource, at line 3 and a column: {message}"
    );
    assert_eq!(
        invalid["observedGeneration"], 2,
        "the verdict is about the broken generation"
    );
    condition(&cluster, guard, "Applied", ("False", "Invalid")).await;

    let bundle = controller.published().unwrap();
    assert_eq!(
        bundle.get(GUARD_PATH),
        Some(GUARD),
        "payments keeps its last valid set: the forbid is still enforced"
    );
    assert!(
        !bundle.iter().any(|(_, text)| text.contains("payments-open-to-all")),
        "nothing of the broken policy is published"
    );
    condition(
        &cluster,
        ("CedarPolicy", Some("web"), "frontend"),
        "Applied",
        ("True", "Published"),
    )
    .await;

    // The bundle directory is what the control plane serves: it loads.
    ok(&["policy", "validate", s(&controller.out.join("current"))]);

    // Fixed, the payments change goes through too.
    cluster.apply(cedar_policy(
        "payments",
        "guard",
        "ingress",
        &GUARD.replace("forbid-non-pci", "pci-only"),
    ));
    published(&controller, GUARD_PATH, "payments-pci-only").await;
    condition(&cluster, guard, "Accepted", ("True", "Valid")).await;
}

/// Status is written by server-side apply on `/status` with our field manager,
/// only when it changes: a reconcile with nothing new writes nothing, and an
/// unchanged cluster publishes nothing new.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn status_is_server_side_applied_once_and_an_unchanged_cluster_writes_nothing() {
    let cluster = Cluster::start().await;
    shop(&cluster);
    let resync = Duration::from_millis(200);
    let controller = cluster.controller_with("solo", LeaseTiming::default(), resync).await;
    for name in [("payments", "guard"), ("web", "frontend")] {
        condition(
            &cluster,
            ("CedarPolicy", Some(name.0), name.1),
            "Applied",
            ("True", "Published"),
        )
        .await;
    }
    condition(
        &cluster,
        ("MeshConfig", None, "default"),
        "Applied",
        ("True", "Published"),
    )
    .await;

    let writes = cluster.status_writes();
    assert!(!writes.is_empty());
    for write in &writes {
        assert_eq!(write.method, "PATCH", "{write:?}");
        assert!(
            write.path.ends_with("/status"),
            "only the status subresource is written: {write:?}"
        );
        assert_eq!(
            write.content_type.as_deref(),
            Some("application/apply-patch+yaml"),
            "{write:?}"
        );
        assert_eq!(write.field_manager.as_deref(), Some("palisade-controller"), "{write:?}");
    }
    let guard = cluster
        .api
        .get(PALISADE, "CedarPolicy", Some("payments"), "guard")
        .unwrap();
    assert_eq!(
        guard["metadata"]["generation"], 1,
        "a status write never bumps the generation"
    );
    let link = controller.current_link().unwrap();
    let versions = controller.versions();

    // Reconciles with nothing new: the resync's, and a change that leaves the
    // bundle as it was (a pod annotation nobody reads).
    let mut touched = pod("web", "frontend-1", "frontend", json!({"app": "frontend"}));
    touched["metadata"]["annotations"] = json!({"kubectl.kubernetes.io/restartedAt": "now"});
    cluster.apply(touched);
    reconciles(&controller, controller.bundle_reconciles() + 5).await;

    assert_eq!(cluster.status_writes(), writes, "nothing new to say: no status write");
    assert_eq!(
        controller.current_link().unwrap(),
        link,
        "the same bundle: the link stays"
    );
    assert_eq!(controller.versions(), versions, "no new version directory");

    // A real change swaps `current` to a new version and keeps the one before.
    cluster.apply(cedar_policy(
        "web",
        "frontend",
        "egress",
        &frontend(r#"Action::"POST""#, "web-posts"),
    ));
    published(&controller, FRONTEND_PATH, "web-posts").await;
    assert_ne!(controller.current_link().unwrap(), link);
    assert_eq!(controller.versions().len(), 2, "the new version and the one before");
}

fn refused_with(result: Result<palisade_ca::Svid, ClientError>, code: Code) -> String {
    match result {
        Err(ClientError::Refused(status)) => {
            assert_eq!(status.code(), code, "{status:?}");
            status.message().to_string()
        }
        other => panic!("expected a {code:?} refusal, got {other:?}"),
    }
}

/// The must-show: a CertificateRevocation makes the CA refuse renewal for that
/// ID, its status says when; deleting it unrevokes.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_certificate_revocation_is_applied_at_the_ca_and_deleting_it_unrevokes() {
    let cluster = Cluster::start().await;
    let endpoint = cluster.ca.endpoint(&cluster.ca_server);
    let web = cluster.ca.id("web", "frontend");
    let token = cluster.ca.token(&web);
    let svid = fetch_svid(&endpoint, &web, &Credential::JoinToken(token), None)
        .await
        .expect("a first SVID from a join token");
    let svid = Arc::new(svid);
    let renewed = fetch_svid(&endpoint, &web, &Credential::Svid(Arc::clone(&svid)), None).await;
    assert!(renewed.is_ok(), "not revoked yet, it renews: {renewed:?}");
    let _controller = cluster.controller("solo", LeaseTiming::default()).await;

    cluster.apply(certificate_revocation("frontend-key-leak", web.as_str(), "key leaked"));
    let revocation = ("CertificateRevocation", None, "frontend-key-leak");
    let applied = condition(&cluster, revocation, "Applied", ("True", "Revoked")).await;
    assert!(
        applied["message"].as_str().unwrap().contains("revocation list version"),
        "{applied}"
    );
    let status = cluster
        .status("CertificateRevocation", None, "frontend-key-leak")
        .unwrap();
    let revoked_at = status["revokedAt"].as_str().expect("revokedAt is set");
    assert!(
        revoked_at.ends_with('Z') && revoked_at.contains('T'),
        "RFC 3339: {revoked_at}"
    );

    let listed = ca_revocations(&cluster);
    assert!(
        listed.contains("k8s:certificaterevocation/frontend-key-leak: key leaked") && listed.contains(web.as_str()),
        "the CA lists it, naming the resource: {listed}"
    );
    // The CA refuses the revoked SVID at the handshake, and refuses to issue to
    // the identity at all, even with a fresh join token.
    let renewal = fetch_svid(&endpoint, &web, &Credential::Svid(Arc::clone(&svid)), None).await;
    assert!(renewal.is_err(), "a revoked identity cannot renew: {renewal:?}");
    let token = cluster.ca.token(&web);
    let message = refused_with(
        fetch_svid(&endpoint, &web, &Credential::JoinToken(token), None).await,
        Code::PermissionDenied,
    );
    assert!(message.contains("revoked"), "{message}");

    cluster
        .api
        .delete(PALISADE, "CertificateRevocation", None, "frontend-key-leak")
        .unwrap();
    eventually(WAIT, "the CA to drop the revocation", || {
        (!ca_revocations(&cluster).contains(web.as_str())).then_some(())
    })
    .await;
    fetch_svid(&endpoint, &web, &Credential::Svid(svid), None)
        .await
        .expect("renewal works again once unrevoked");
}

/// A revocation made by hand at the CA is not the controller's to take back.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_revocation_made_by_hand_outlives_the_controller() {
    let cluster = Cluster::start().await;
    let db = cluster.ca.id("db", "postgres");
    ok(&[
        "ca",
        "revoke",
        "--spiffe-id",
        db.as_str(),
        "--reason",
        "by hand",
        "--dir",
        cluster.ca.path(),
    ]);
    let controller = cluster.controller("solo", LeaseTiming::default()).await;
    cluster.apply(certificate_revocation("other", &format!("spiffe://{TD}/ns/x/sa/y"), ""));
    condition(
        &cluster,
        ("CertificateRevocation", None, "other"),
        "Applied",
        ("True", "Revoked"),
    )
    .await;
    cluster
        .api
        .delete(PALISADE, "CertificateRevocation", None, "other")
        .unwrap();
    eventually(WAIT, "the CA to drop `other`", || {
        (!ca_revocations(&cluster).contains("ns/x/sa/y")).then_some(())
    })
    .await;
    assert!(
        ca_revocations(&cluster).contains(db.as_str()),
        "the manual revocation stays"
    );
    controller.stop().await;
}

fn ca_revocations(cluster: &Cluster) -> String {
    ok(&[
        "ca",
        "revocations",
        "list",
        "--remote",
        "--output",
        "json",
        "--dir",
        cluster.ca.path(),
    ])
}

/// Two replicas: only the Lease holder writes and publishes; when it crashes,
/// the other takes over once the Lease expires, and carries on.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn only_the_lease_holder_writes_and_a_follower_takes_over_when_it_dies() {
    let cluster = Cluster::start().await;
    shop(&cluster);
    let a = cluster.controller("replica-a", quick_lease()).await;
    let b = cluster.controller("replica-b", quick_lease()).await;
    let holder = eventually(WAIT, "a Lease holder", || cluster.lease_holder()).await;
    let (leader, follower) = if holder == a.name { (a, b) } else { (b, a) };
    condition(
        &cluster,
        ("CedarPolicy", Some("payments"), "guard"),
        "Applied",
        ("True", "Published"),
    )
    .await;
    published(&leader, GUARD_PATH, "payments-forbid-non-pci").await;
    reconciles(&follower, 1).await;

    let writers: Vec<_> = cluster.status_writes().into_iter().map(|w| w.user_agent).collect();
    assert!(!writers.is_empty());
    assert!(
        writers.iter().all(|w| w.as_deref() == Some(leader.name.as_str())),
        "only {} wrote status: {writers:?}",
        leader.name
    );
    let lease = cluster
        .api
        .get("coordination.k8s.io/v1", "Lease", Some(LEASE_NAMESPACE), LEASE);
    assert!(
        follower.published().is_none(),
        "a follower publishes nothing; the Lease: {lease:?}"
    );
    assert!(!follower.progress.borrow().leading);

    let (old, new) = (leader.name.clone(), follower.name.clone());
    leader.kill();
    eventually(WAIT, "the follower to take the expired Lease", || {
        (cluster.lease_holder().as_deref() == Some(new.as_str())).then_some(())
    })
    .await;
    let lease = cluster
        .api
        .get("coordination.k8s.io/v1", "Lease", Some(LEASE_NAMESPACE), LEASE)
        .unwrap();
    assert!(lease["spec"]["leaseTransitions"].as_i64().unwrap() >= 1, "{lease}");

    // The new leader publishes what it built as a follower, and writes status.
    published(&follower, GUARD_PATH, "payments-forbid-non-pci").await;
    cluster.apply(cedar_policy(
        "web",
        "frontend",
        "egress",
        &frontend(r#"Action::"POST""#, "web-posts-after-failover"),
    ));
    published(&follower, FRONTEND_PATH, "web-posts-after-failover").await;
    eventually(WAIT, "a status write by the new leader", || {
        cluster
            .status_writes()
            .iter()
            .any(|w| w.user_agent.as_deref() == Some(new.as_str()))
            .then_some(())
    })
    .await;
    assert!(
        cluster
            .condition("CedarPolicy", Some("web"), "frontend", "Applied")
            .is_some_and(|c| c["status"] == "True"),
        "{old} is gone and {new} keeps the statuses current"
    );
}

/// A leader that stops gracefully releases the Lease: a follower takes it
/// without waiting for it to expire.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_leader_that_stops_hands_the_lease_over() {
    let cluster = Cluster::start().await;
    let slow = LeaseTiming {
        duration: Duration::from_secs(600),
        ..quick_lease()
    };
    let first = cluster.controller("first", slow).await;
    eventually(WAIT, "first to lead", || {
        (cluster.lease_holder().as_deref() == Some("first")).then_some(())
    })
    .await;
    let second = cluster.controller("second", slow).await;
    first.stop().await;
    eventually(WAIT, "second to take the released Lease", || {
        (cluster.lease_holder().as_deref() == Some("second")).then_some(())
    })
    .await;
    drop(second);
}

/// The CLI: `palisade controller run --kubeconfig F --bundle-out DIR …` as a
/// process, against the fake; `--control-plane` without a credential for the
/// controller's own SVID is a usage error that says which flags give one.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_cli_runs_the_controller_from_a_kubeconfig() {
    let cluster = Cluster::start().await;
    shop(&cluster);
    let kubeconfig = cluster.api.write_kubeconfig(cluster.tmp.path()).unwrap();
    let out = cluster.tmp.path().join("out");
    let bundle = cluster.ca.file("bundle.pem");
    let token = cluster.ca.file("revoker.token");
    let common = [
        "--ca",
        cluster.ca_server.addr.as_str(),
        "--trust-bundle",
        s(&bundle),
        "--trust-domain",
        TD,
        "--admin-token-file",
        s(&token),
    ];

    let mut args = vec!["controller", "run", "--control-plane", "127.0.0.1:15010"];
    args.extend_from_slice(&common);
    args.extend_from_slice(&["--kubeconfig", s(&kubeconfig)]);
    let said = fails(&args, 2);
    assert!(
        said.contains("--join-token") && said.contains("--service-account-token-file"),
        "{said}"
    );

    let mut args = vec!["controller", "run", "--bundle-out", s(&out), "--identity", "cli"];
    args.extend_from_slice(&common);
    args.extend_from_slice(&["--kubeconfig", s(&kubeconfig)]);
    let mut child = crate::support::palisade()
        .args(&args)
        .stdin(std::process::Stdio::null())
        .stdout(std::process::Stdio::null())
        .spawn()
        .unwrap();
    let current = out.join("current");
    eventually(WAIT, "the CLI controller to publish", || {
        std::fs::read_to_string(current.join(GUARD_PATH)).ok()
    })
    .await;
    condition(
        &cluster,
        ("CedarPolicy", Some("payments"), "guard"),
        "Applied",
        ("True", "Published"),
    )
    .await;
    assert_eq!(cluster.lease_holder().as_deref(), Some("cli"));
    let agents: Vec<_> = cluster
        .status_writes()
        .into_iter()
        .filter_map(|w| w.user_agent)
        .collect();
    assert!(
        agents
            .iter()
            .all(|a| a.starts_with("palisade-controller/") && a.contains("(cli)")),
        "{agents:?}"
    );
    let _ = child.kill();
    let _ = child.wait();
}

/// A workload's tags are its Namespace's labels: a pod that gives itself
/// `pci=true` gets no such tag, and labelling the Namespace (which only cluster
/// administrators may do) gives it to the workloads there, through the
/// controller's watch of Namespaces.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_workloads_tags_come_from_its_namespace_never_from_its_pods() {
    let cluster = Cluster::start().await;
    shop(&cluster);
    let frontend_id = format!("spiffe://{TD}/ns/web/sa/frontend");
    let payments_id = format!("spiffe://{TD}/ns/payments/sa/payments");
    // Whoever may create pods in `web` labels theirs as PCI.
    cluster.apply(pod(
        "web",
        "frontend-1",
        "frontend",
        json!({"app": "frontend", "pci": "true"}),
    ));
    let controller = cluster.controller("solo", LeaseTiming::default()).await;
    let forged = eventually(WAIT, "the frontend workload published", || {
        published_labels(&controller, &frontend_id)
    })
    .await;
    assert_eq!(forged.get("pci"), None, "a pod label is no tag: {forged}");
    let payments = published_labels(&controller, &payments_id).unwrap();
    assert_eq!(payments.get("pci"), None, "nor is the payments pod's own: {payments}");

    cluster.apply(json!({
        "apiVersion": "v1",
        "kind": "Namespace",
        "metadata": {"name": "payments", "labels": {"pci": "true", "kubernetes.io/metadata.name": "payments"}},
    }));
    let payments = eventually(WAIT, "payments tagged pci by its Namespace", || {
        published_labels(&controller, &payments_id).filter(|l| l["pci"] == "true")
    })
    .await;
    assert_eq!(payments, json!({"pci": "true"}), "Kubernetes' own labels are no tags");
    assert_eq!(published_labels(&controller, &frontend_id).unwrap().get("pci"), None);
}
