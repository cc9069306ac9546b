//! What one namespace's `kubectl apply` rights cannot do to the others: claim
//! their hosts or an allowlisted external host, give its workloads tags only an
//! administrator may give, or make the bundle too big for everyone.

use k8s_openapi::api::core::v1::{Pod, Service};
use palisade_crds::resources::{CedarPolicy, CedarPolicySpec, PolicyDirection, PolicyMode};
use palisade_crds::source::{Kind, LastValid, Outcome, NAMESPACE_ENTRY_BYTES, NAMESPACE_POLICIES};

use crate::support::{build_ok, outcome, policy_ids, policy_mut, shop_cluster};

const ATTACKER: &str = "tenant";

/// A running pod of the attacker's namespace, and a Service selecting it that
/// claims `hosts`.
fn attacker_service(name: &str, hosts: &str) -> (Pod, Service) {
    let pod: Pod = serde_json::from_value(serde_json::json!({
        "metadata": {"name": format!("{name}-1"), "namespace": ATTACKER, "labels": {"app": name}},
        "spec": {"serviceAccountName": name, "containers": []},
        "status": {"phase": "Running"}
    }))
    .unwrap();
    let service: Service = serde_json::from_value(serde_json::json!({
        "metadata": {"name": name, "namespace": ATTACKER, "annotations": {"palisade.dev/hosts": hosts}},
        "spec": {"selector": {"app": name}, "ports": [{"port": 443}]}
    }))
    .unwrap();
    (pod, service)
}

/// Pods of the attacker's namespace, each of its own service account, enough to
/// take more than the namespace's share of `workloads.yaml`.
fn crowd() -> Vec<Pod> {
    let label = "x".repeat(60);
    (0..=NAMESPACE_ENTRY_BYTES / 120)
        .map(|count| {
            serde_json::from_value(serde_json::json!({
                "metadata": {"name": format!("w{count}"), "namespace": ATTACKER},
                "spec": {"serviceAccountName": format!("sa-{count}-{label}"), "containers": []},
                "status": {"phase": "Running"}
            }))
            .unwrap()
        })
        .collect()
}

fn attacker_policy(name: &str, text: String) -> CedarPolicy {
    let mut policy = CedarPolicy::new(
        name,
        CedarPolicySpec {
            direction: PolicyDirection::Egress,
            mode: PolicyMode::Enforce,
            policy: text,
        },
    );
    policy.metadata.namespace = Some(ATTACKER.into());
    policy.metadata.generation = Some(1);
    policy
}

#[test]
fn a_tenant_service_cannot_claim_an_allowlisted_external_host_nor_another_namespaces_name() {
    let mut state = shop_cluster();
    let before = build_ok(&state, &LastValid::new());
    for (name, hosts) in [
        ("stripe", "api.stripe.com"),
        ("fake-payments", "payments.shop"),
        ("fake-cluster-name", "payments.payments.svc"),
    ] {
        let (pod, service) = attacker_service(name, hosts);
        state.pods.push(pod);
        state.services.push(service);
    }
    let built = build_ok(&state, &LastValid::new());
    let registry = built.bundle.registry();
    for name in ["stripe", "fake-payments", "fake-cluster-name"] {
        assert!(registry.service(ATTACKER, name).is_none(), "{name} is left out");
    }
    let stripe_note = built.notes.iter().find(|n| n.contains(&format!("`{ATTACKER}/stripe`")));
    assert!(
        stripe_note.is_some_and(|n| n.contains("`api.stripe.com`, which is not delegated to its namespace")),
        "{:?}",
        built.notes
    );
    let payments_note = built.notes.iter().find(|n| n.contains("fake-payments"));
    assert!(
        payments_note.is_some_and(|n| n.contains("not delegated to its namespace")),
        "{:?}",
        built.notes
    );
    let cluster_note = built.notes.iter().find(|n| n.contains("fake-cluster-name"));
    assert!(
        cluster_note.is_some_and(|n| n.contains("a cluster name that is not its own")),
        "{:?}",
        built.notes
    );
    assert_eq!(
        outcome(&built, Kind::EgressAllowlist, "checkout", "api.stripe.com"),
        &Outcome::Accepted,
        "the allowlist of the other namespace is untouched"
    );
    assert_eq!(built.bundle.egress().rules().len(), 1);
    assert!(registry.service("payments", "payments").is_some());
    let without_attacker: Vec<_> = (built.bundle.registry().services().iter())
        .filter(|s| s.namespace() != ATTACKER)
        .map(|s| s.id().to_owned())
        .collect();
    let shop: Vec<_> = (before.bundle.registry().services().iter())
        .map(|s| s.id().to_owned())
        .collect();
    assert_eq!(without_attacker, shop);

    // Delegated by the administrators, the name is the tenant's.
    let mesh = state.mesh.as_mut().unwrap();
    mesh.spec
        .host_delegations
        .push(palisade_crds::resources::HostDelegation {
            namespace: ATTACKER.into(),
            hosts: vec!["*.tenant.example".into()],
        });
    let (pod, service) = attacker_service("site", "www.tenant.example");
    state.pods.push(pod);
    state.services.push(service);
    let built = build_ok(&state, &LastValid::new());
    assert!(built.bundle.registry().service(ATTACKER, "site").is_some());
}

#[test]
fn a_namespace_over_its_policy_budget_is_held_and_the_rest_of_the_mesh_updates() {
    let mut state = shop_cluster();
    let first = build_ok(&state, &LastValid::new());
    for i in 0..=NAMESPACE_POLICIES {
        let text = format!(
            "@id(\"tenant-{i}\")\npermit (principal in Namespace::\"{ATTACKER}\", action == Action::\"GET\", resource in Namespace::\"reviews\");\n"
        );
        state.policies.push(attacker_policy(&format!("p{i}"), text));
    }
    let extra = "@id(\"web-frontend-reads-reviews\")\npermit (\n  principal in Namespace::\"web\",\n  action == Action::\"GET\",\n  resource in Namespace::\"reviews\"\n);\n";
    policy_mut(&mut state, "web", "frontend-egress")
        .spec
        .policy
        .push_str(extra);
    let second = build_ok(&state, &first.last_valid);
    assert!(
        policy_ids(&second, ATTACKER).is_empty(),
        "held on its last valid set: none"
    );
    assert!(policy_ids(&second, "web").contains(&"web-frontend-reads-reviews".to_owned()));
    let Outcome::Held { message } = outcome(&second, Kind::CedarPolicy, ATTACKER, "p0") else {
        panic!("{:?}", outcome(&second, Kind::CedarPolicy, ATTACKER, "p0"));
    };
    assert!(
        message.contains(&format!("has {} CedarPolicies", NAMESPACE_POLICIES + 1)),
        "{message}"
    );
    assert!(!second.last_valid.namespaces().any(|ns| ns == ATTACKER));
}

#[test]
fn a_namespace_that_runs_too_many_identities_loses_its_workloads_only() {
    let mut state = shop_cluster();
    state.pods.extend(crowd());
    let built = build_ok(&state, &LastValid::new());
    let registry = built.bundle.registry();
    assert!(
        registry.workloads().iter().all(|w| w.namespace() != ATTACKER),
        "the tenant's identities are left out"
    );
    assert!(registry
        .workload("spiffe://shop.example/ns/payments/sa/payments")
        .is_some());
    assert!(
        built
            .notes
            .iter()
            .any(|n| n.contains("over what one namespace may take")),
        "{:?}",
        &built.notes[..1]
    );
}

#[test]
fn a_service_whose_workloads_are_cut_takes_no_host_from_another() {
    use palisade_crds::resources::HostDelegation;

    let mut state = shop_cluster();
    // Both namespaces may claim `pay.shop.example`; the tenant's Service is older.
    let mesh = state.mesh.as_mut().unwrap();
    for namespace in [ATTACKER, "payments"] {
        mesh.spec.host_delegations.push(HostDelegation {
            namespace: namespace.into(),
            hosts: vec!["pay.shop.example".into()],
        });
    }
    let (pod, mut squatter) = attacker_service("pay", "pay.shop.example");
    squatter.metadata.creation_timestamp = Some(k8s_openapi::apimachinery::pkg::apis::meta::v1::Time(
        k8s_openapi::jiff::Timestamp::UNIX_EPOCH,
    ));
    state.pods.push(pod);
    state.services.push(squatter);
    let payments = (state.services.iter_mut())
        .find(|s| s.metadata.namespace.as_deref() == Some("payments"))
        .unwrap();
    let annotations = payments.metadata.annotations.get_or_insert_with(Default::default);
    let hosts = annotations.get("palisade.dev/hosts").cloned().unwrap_or_default();
    annotations.insert("palisade.dev/hosts".into(), format!("{hosts},pay.shop.example"));
    // ...then runs so many identities that its workloads are cut.
    state.pods.extend(crowd());
    let built = build_ok(&state, &LastValid::new());
    let registry = built.bundle.registry();
    assert!(registry.service(ATTACKER, "pay").is_none());
    let payments = registry
        .service("payments", "payments")
        .expect("payments keeps its Service");
    assert!(
        payments.hosts().iter().any(|h| h == "pay.shop.example"),
        "{:?}",
        payments.hosts()
    );
}
