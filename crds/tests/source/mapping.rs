//! Rules of the mapping that only a cluster exercises: service accounts without
//! pods, Services the loader refuses, dry-run mode, pods that disagree on labels.

use palisade_crds::resources::PolicyMode;
use palisade_crds::source::{Kind, LastValid, Outcome};

use crate::support::{build_ok, outcome, policy_mut, shop_cluster};

#[test]
fn an_allowlist_naming_a_service_account_with_no_pod_matches_nothing() {
    let mut state = shop_cluster();
    state.allowlists[0].spec.workloads.service_accounts = vec!["not-running".into()];
    let built = build_ok(&state, &LastValid::new());
    assert!(built.bundle.egress().rules().is_empty());
    assert_eq!(
        outcome(&built, Kind::EgressAllowlist, "checkout", "api.stripe.com"),
        &Outcome::Accepted
    );
    assert!(
        built.notes.iter().any(|n| n.contains("selects no workload yet")),
        "{:?}",
        built.notes
    );
}

#[test]
fn a_service_the_loader_refuses_is_left_out_and_noted() {
    let mut state = shop_cluster();
    let reviews = state
        .services
        .iter_mut()
        .find(|s| s.metadata.name.as_deref() == Some("reviews"))
        .unwrap();
    reviews.metadata.annotations = Some([("palisade.dev/hosts".to_owned(), "reviews shop".to_owned())].into());
    let built = build_ok(&state, &LastValid::new());
    assert!(built.bundle.registry().service("reviews", "reviews").is_none());
    assert!(built.bundle.registry().service("payments", "payments").is_some());
    let note = built
        .notes
        .iter()
        .find(|n| n.starts_with("service `reviews/reviews` is left out"));
    assert!(
        note.is_some_and(|n| n.contains("`reviews shop`, which is not a host name")),
        "{:?}",
        built.notes
    );
}

#[test]
fn a_dry_run_policy_is_dry_run() {
    let mut state = shop_cluster();
    policy_mut(&mut state, "payments", "pci").spec.mode = PolicyMode::DryRun;
    let built = build_ok(&state, &LastValid::new());
    assert!(built.files.contains("policies/payments/ingress/pci.dry-run.cedar"));
    let forbid = built.bundle.policy("payments-forbid-non-pci").unwrap();
    assert_eq!(forbid.mode(), palisade_authz::Mode::DryRun);
}

#[test]
fn a_workloads_trusted_tags_come_from_its_namespace_and_a_pod_cannot_forge_one() {
    let mut state = shop_cluster();
    let mesh = state.mesh.as_ref().unwrap();
    assert!(
        mesh.spec.self_asserted_labels.is_empty(),
        "the shop exported: every label is its namespace's"
    );
    // An attacker who may create pods in `web` gives its own pod `pci: "true"`.
    let frontend = state
        .pods
        .iter_mut()
        .find(|p| p.metadata.namespace.as_deref() == Some("web"))
        .unwrap();
    frontend
        .metadata
        .labels
        .as_mut()
        .unwrap()
        .insert("pci".into(), "true".into());
    // ...and a second pod of payments says `pci: "false"`: the Namespace decides.
    let mut second = (state.pods.iter())
        .find(|p| p.metadata.namespace.as_deref() == Some("payments"))
        .unwrap()
        .clone();
    second.metadata.name = Some("payments-other".into());
    second
        .metadata
        .labels
        .as_mut()
        .unwrap()
        .insert("pci".into(), "false".into());
    state.pods.push(second);
    let built = build_ok(&state, &LastValid::new());
    let registry = built.bundle.registry();
    let labels = |id: &str| registry.workload(id).unwrap().labels().clone();
    assert_eq!(
        labels("spiffe://shop.example/ns/web/sa/frontend").get("pci"),
        None,
        "a pod label is no tag"
    );
    let payments = labels("spiffe://shop.example/ns/payments/sa/payments");
    assert_eq!(payments.get("pci").map(String::as_str), Some("true"));
    assert_eq!(payments.get("app").map(String::as_str), Some("payments"));
    assert!(built.notes.is_empty(), "{:?}", built.notes);

    // An administrator lets pods assert `pci`: now pods that disagree lose it.
    state.mesh.as_mut().unwrap().spec.self_asserted_labels = vec!["pci".into()];
    for namespace in &mut state.namespaces {
        namespace.metadata.labels.as_mut().map(|l| l.remove("pci"));
    }
    let built = build_ok(&state, &LastValid::new());
    let registry = built.bundle.registry();
    let labels = |id: &str| registry.workload(id).unwrap().labels().clone();
    assert_eq!(
        labels("spiffe://shop.example/ns/web/sa/frontend")
            .get("pci")
            .map(String::as_str),
        Some("true"),
        "self-asserted, as the MeshConfig allows"
    );
    assert_eq!(
        labels("spiffe://shop.example/ns/payments/sa/payments").get("pci"),
        None,
        "a pod without pci=true never lends it"
    );
    assert!(
        built.notes.iter().any(|n| n.contains("disagree on labels `pci`")),
        "{:?}",
        built.notes
    );
}
