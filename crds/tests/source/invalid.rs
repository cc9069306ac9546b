//! What is invalid is left out, never half-applied: a namespace with an invalid
//! policy keeps its last valid set (or none), an invalid allowlist is dropped,
//! and a build with nothing to blame fails instead of publishing.

use palisade_crds::source::{build, BuildError, Kind, LastValid, Outcome, SourceOptions};

use crate::support::{build_ok, outcome, policy_ids, policy_mut, shop_cluster, BROKEN};

#[test]
fn an_invalid_policy_holds_its_namespace_on_its_last_valid_set_while_others_update() {
    let mut state = shop_cluster();
    let first = build_ok(&state, &LastValid::new());

    policy_mut(&mut state, "payments", "pci").spec.policy = BROKEN.into();
    let extra = "@id(\"web-frontend-reads-reviews\")\npermit (\n  principal in Namespace::\"web\",\n  action == Action::\"GET\",\n  resource in Namespace::\"reviews\"\n);\n";
    policy_mut(&mut state, "web", "frontend-egress")
        .spec
        .policy
        .push_str(extra);
    let second = build_ok(&state, &first.last_valid);

    let payments = policy_ids(&second, "payments");
    assert!(
        payments.contains(&"payments-forbid-non-pci".to_owned()),
        "the forbid still holds: {payments:?}"
    );
    assert_eq!(payments, policy_ids(&first, "payments"), "never a partial set");
    assert!(
        policy_ids(&second, "web").contains(&"web-frontend-reads-reviews".to_owned()),
        "web updated"
    );
    assert!(matches!(
        outcome(&second, Kind::CedarPolicy, "payments", "pci"),
        Outcome::Invalid { .. }
    ));
    assert_eq!(
        outcome(&second, Kind::CedarPolicy, "web", "frontend-egress"),
        &Outcome::Accepted
    );
    assert_eq!(second.last_valid.files("payments"), first.last_valid.files("payments"));
    assert_ne!(second.last_valid.files("web"), first.last_valid.files("web"));
}

#[test]
fn the_other_policies_of_a_held_namespace_say_why_they_are_not_in_effect() {
    let mut state = shop_cluster();
    let first = build_ok(&state, &LastValid::new());
    policy_mut(&mut state, "reviews", "reviews-egress").spec.policy = BROKEN.replace("payments-broken", "r");
    let second = build_ok(&state, &first.last_valid);
    let Outcome::Held { message } = outcome(&second, Kind::CedarPolicy, "reviews", "reviews-ingress") else {
        panic!("{:?}", second.verdicts);
    };
    assert!(
        message.contains("keeps its last valid policy set because CedarPolicy `reviews/reviews-egress` is invalid"),
        "{message}"
    );
    assert!(outcome(&second, Kind::CedarPolicy, "reviews", "reviews-ingress").is_valid());
}

#[test]
fn an_invalid_policy_with_no_last_valid_set_leaves_its_namespace_without_policies() {
    let mut state = shop_cluster();
    policy_mut(&mut state, "payments", "pci").spec.policy = BROKEN.into();
    let built = build_ok(&state, &LastValid::new());
    assert_eq!(
        policy_ids(&built, "payments"),
        Vec::<String>::new(),
        "no policy: every call denied"
    );
    assert!(!policy_ids(&built, "web").is_empty(), "other namespaces load as usual");
    assert_eq!(built.last_valid.files("payments"), None);
}

#[test]
fn the_invalid_message_is_the_validators_pointing_into_the_resource() {
    let mut state = shop_cluster();
    policy_mut(&mut state, "payments", "pci").spec.policy = BROKEN.into();
    let built = build_ok(&state, &LastValid::new());
    let Outcome::Invalid { message } = outcome(&built, Kind::CedarPolicy, "payments", "pci") else {
        panic!("{:?}", built.verdicts);
    };
    assert!(message.starts_with("error: "), "{message}");
    assert!(
        message.contains("--> CedarPolicy payments/pci spec.policy:5:"),
        "{message}"
    );
    assert!(message.contains("5 |   action == Action::\"FETCH\","), "{message}");
    assert!(!message.contains("policies/payments"), "no bundle path: {message}");
}

#[test]
fn a_held_namespace_whose_last_valid_set_no_longer_loads_has_no_policies() {
    let mut state = shop_cluster();
    let first = build_ok(&state, &LastValid::new());
    policy_mut(&mut state, "web", "frontend-ingress").spec.policy = BROKEN.replace("payments-broken", "w");
    // web's last valid egress policies name workloads of shop.example
    state.mesh.as_mut().unwrap().spec.trust_domain = "other.example".into();
    let built = build_ok(&state, &first.last_valid);
    assert_eq!(policy_ids(&built, "web"), Vec::<String>::new());
    let Outcome::Invalid { message } = outcome(&built, Kind::CedarPolicy, "web", "frontend-egress") else {
        panic!("{:?}", built.verdicts);
    };
    assert!(
        message.contains("outside the trust domain `other.example`"),
        "{message}"
    );
    assert_eq!(
        built.last_valid.files("web"),
        first.last_valid.files("web"),
        "kept for later"
    );
}

#[test]
fn a_current_policy_cannot_take_the_policy_id_of_a_held_namespace() {
    let mut state = shop_cluster();
    let first = build_ok(&state, &LastValid::new());
    policy_mut(&mut state, "reviews", "reviews-egress").spec.policy = BROKEN.replace("payments-broken", "r");
    // checkout (before reviews in path order) now takes the @id of reviews' last valid forbid
    let text = "@id(\"reviews-never-calls-payments\")\nforbid (\n  principal in Namespace::\"checkout\",\n  action,\n  resource in Namespace::\"reviews\"\n);\n";
    policy_mut(&mut state, "checkout", "checkout-egress")
        .spec
        .policy
        .push_str(text);
    let built = build_ok(&state, &first.last_valid);
    assert_eq!(
        policy_ids(&built, "reviews"),
        policy_ids(&first, "reviews"),
        "reviews keeps its last valid set, the forbid included"
    );
    let Outcome::Invalid { message } = outcome(&built, Kind::CedarPolicy, "checkout", "checkout-egress") else {
        panic!("{:?}", built.verdicts);
    };
    assert!(
        message.contains("is namespace `reviews`'s") && message.contains("CedarPolicy reviews/reviews-egress"),
        "{message}"
    );
}

#[test]
fn an_invalid_allowlist_is_left_out() {
    let mut state = shop_cluster();
    let mut taken = state.allowlists[0].clone();
    taken.metadata.name = Some("takes-a-mesh-host".into());
    taken.spec.hosts = vec!["payments.shop".into()];
    state.allowlists.push(taken);
    let built = build_ok(&state, &LastValid::new());
    let Outcome::Invalid { message } = outcome(&built, Kind::EgressAllowlist, "checkout", "takes-a-mesh-host") else {
        panic!("{:?}", built.verdicts);
    };
    assert!(
        message.contains("`payments.shop` in `spec.hosts` is a name of the mesh service `payments/payments`"),
        "{message}"
    );
    assert_eq!(built.bundle.egress().rules().len(), 1, "only api.stripe.com");
    assert_eq!(
        outcome(&built, Kind::EgressAllowlist, "checkout", "api.stripe.com"),
        &Outcome::Accepted
    );
}

#[test]
fn without_a_mesh_config_nothing_is_built() {
    let mut state = shop_cluster();
    state.mesh = None;
    let error = build(&state, &LastValid::new(), &SourceOptions::default()).unwrap_err();
    assert!(matches!(error, BuildError::NoMeshConfig), "{error}");
}

#[test]
fn an_invalid_mesh_config_is_an_error_naming_the_field() {
    let mut state = shop_cluster();
    state.mesh.as_mut().unwrap().spec.leaf_ttl = Some("25h".into());
    let error = build(&state, &LastValid::new(), &SourceOptions::default()).unwrap_err();
    let BuildError::InvalidMeshConfig { message } = &error else {
        panic!("{error}");
    };
    assert!(message.contains("`25h` is not a certificate lifetime"), "{message}");
    assert!(message.ends_with("(`spec.leafTtl`)"), "{message}");
}

#[test]
fn diagnostics_no_resource_explains_fail_the_build_instead_of_looping() {
    let mut state = shop_cluster();
    // not a namespace Kubernetes allows: the layout check names the directory, no resource
    policy_mut(&mut state, "web", "frontend-egress").metadata.namespace = Some("Not_A_Namespace".into());
    let error = build(&state, &LastValid::new(), &SourceOptions::default()).unwrap_err();
    let BuildError::Invalid(diagnostics) = &error else {
        panic!("{error}");
    };
    assert!(
        diagnostics.to_string().contains("invalid namespace `Not_A_Namespace`"),
        "{error}"
    );
}

#[test]
fn a_namespace_cannot_take_another_namespaces_policy_id_away() {
    use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;
    use palisade_crds::resources::{CedarPolicy, CedarPolicySpec, PolicyDirection, PolicyMode};

    let at = |s: &str| Some(Time(s.parse().unwrap()));
    let mut state = shop_cluster();
    for policy in &mut state.policies {
        policy.metadata.creation_timestamp = at("2026-01-01T00:00:00Z");
    }
    let first = build_ok(&state, &LastValid::new());
    // `checkout` sorts before `payments`: the loader reads this file first.
    let mut squatter = CedarPolicy::new(
        "aaa",
        CedarPolicySpec {
            direction: PolicyDirection::Ingress,
            mode: PolicyMode::Enforce,
            policy: "@id(\"payments-forbid-non-pci\")\npermit (principal, action == Action::\"GET\", resource in Namespace::\"checkout\");\n".into(),
        },
    );
    squatter.metadata.namespace = Some("checkout".into());
    squatter.metadata.creation_timestamp = at("2026-06-01T00:00:00Z");
    state.policies.push(squatter);

    let second = build_ok(&state, &first.last_valid);
    assert_eq!(
        policy_ids(&second, "payments"),
        policy_ids(&first, "payments"),
        "payments keeps its policies, its forbid included"
    );
    assert_eq!(
        outcome(&second, Kind::CedarPolicy, "payments", "pci"),
        &Outcome::Accepted
    );
    let Outcome::Invalid { message } = outcome(&second, Kind::CedarPolicy, "checkout", "aaa") else {
        panic!("{:?}", second.verdicts);
    };
    assert!(
        message.contains("is namespace `payments`'s") && message.contains("CedarPolicy payments/pci"),
        "{message}"
    );
    assert!(
        message.contains("CedarPolicy checkout/aaa spec.policy:1:1"),
        "{message}"
    );
}

#[test]
fn an_allowlist_with_an_empty_label_key_is_invalid_once_whatever_its_hosts() {
    let mut state = shop_cluster();
    let mut empty_key = state.allowlists[0].clone();
    empty_key.metadata.name = Some("empty-key".into());
    empty_key.spec.hosts = (0..64).map(|i| format!("h{i}.example.com")).collect();
    empty_key.spec.workloads.labels.insert(String::new(), "x".into());
    state.allowlists.push(empty_key);
    let built = build_ok(&state, &LastValid::new());
    let Outcome::Invalid { message } = outcome(&built, Kind::EgressAllowlist, "checkout", "empty-key") else {
        panic!("{:?}", built.verdicts);
    };
    assert_eq!(
        message,
        "error: a label key of `spec.workloads.labels` is empty; give every label a key"
    );
    assert_eq!(built.bundle.egress().rules().len(), 1, "only api.stripe.com");
}

#[test]
fn a_namespace_cannot_keep_an_id_of_another_namespace_once_that_namespace_wants_it() {
    let mut state = shop_cluster();
    let first = build_ok(&state, &LastValid::new());
    let squat = "@id(\"payments-refunds\")\npermit (\n  principal in Namespace::\"checkout\",\n  action == Action::\"GET\",\n  resource in Namespace::\"reviews\"\n);\n";
    policy_mut(&mut state, "checkout", "checkout-egress")
        .spec
        .policy
        .push_str(squat);
    let second = build_ok(&state, &first.last_valid);
    assert_eq!(
        outcome(&second, Kind::CedarPolicy, "checkout", "checkout-egress"),
        &Outcome::Accepted,
        "an id nobody else wants is anyone's"
    );

    // payments wants its id: checkout's policy is the one left out, although older.
    let own = "@id(\"payments-refunds\")\npermit (\n  principal in Namespace::\"checkout\",\n  action == Action::\"POST\",\n  resource == Service::\"payments/payments\"\n) when { context.path == \"/refund\" };\n";
    policy_mut(&mut state, "payments", "pci").spec.policy.push_str(own);
    let third = build_ok(&state, &second.last_valid);
    assert!(policy_ids(&third, "payments").contains(&"payments-refunds".to_owned()));
    assert_eq!(
        outcome(&third, Kind::CedarPolicy, "payments", "pci"),
        &Outcome::Accepted
    );
    let Outcome::Invalid { message } = outcome(&third, Kind::CedarPolicy, "checkout", "checkout-egress") else {
        panic!("{:?}", third.verdicts);
    };
    assert!(message.contains("payments-refunds"), "{message}");
    assert!(
        policy_ids(&third, "checkout").is_empty(),
        "its last valid set holds payments' id too, so it has none: never a partial set"
    );
}

#[test]
fn an_id_no_namespace_owns_stays_with_the_older_policy() {
    use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;

    let at = |s: &str| Some(Time(s.parse().unwrap()));
    let mut state = shop_cluster();
    for policy in &mut state.policies {
        policy.metadata.creation_timestamp = at("2026-01-01T00:00:00Z");
    }
    let guard = "@id(\"mesh-wide-guard\")\nforbid (principal, action == Action::\"DELETE\", resource in Namespace::\"payments\");\n";
    policy_mut(&mut state, "payments", "pci").spec.policy.push_str(guard);
    let first = build_ok(&state, &LastValid::new());
    let newer = "@id(\"mesh-wide-guard\")\npermit (principal, action == Action::\"GET\", resource in Namespace::\"checkout\");\n";
    let checkout = policy_mut(&mut state, "checkout", "checkout-ingress");
    checkout.spec.policy.push_str(newer);
    checkout.metadata.creation_timestamp = at("2026-06-01T00:00:00Z");
    let second = build_ok(&state, &first.last_valid);
    assert!(policy_ids(&second, "payments").contains(&"mesh-wide-guard".to_owned()));
    let Outcome::Invalid { message } = outcome(&second, Kind::CedarPolicy, "checkout", "checkout-ingress") else {
        panic!("{:?}", second.verdicts);
    };
    assert!(
        message.contains("already used by CedarPolicy payments/pci spec.policy, which is older"),
        "{message}"
    );
}

#[test]
fn what_a_tenant_writes_costs_the_loader_no_diagnostic_per_entry() {
    use k8s_openapi::api::core::v1::Service;

    let mut state = shop_cluster();
    // An allowlist of hosts that are no host names, another of a mesh service's
    // cluster name: each refused once, as a whole.
    let mut numeric = state.allowlists[0].clone();
    numeric.metadata.name = Some("numeric".into());
    numeric.spec.hosts = (0..64).map(|i| format!("a{i}.123")).collect();
    let mut mesh_name = state.allowlists[0].clone();
    mesh_name.metadata.name = Some("mesh-name".into());
    mesh_name.spec.hosts = vec!["payments.payments.svc".into()];
    state.allowlists.extend([numeric, mesh_name]);
    // Services with no host and with no port.
    let service = |name: &str, annotation: &str, ports: serde_json::Value| -> Service {
        serde_json::from_value(serde_json::json!({
            "metadata": {"name": name, "namespace": "checkout", "annotations": {"palisade.dev/hosts": annotation}},
            "spec": {"selector": {"palisade.dev/workload": "checkout"}, "ports": ports}
        }))
        .unwrap()
    };
    state
        .services
        .push(service("no-host", " , ", serde_json::json!([{"port": 80}])));
    state
        .services
        .push(service("no-port", "no-port.checkout.svc", serde_json::json!([])));
    let built = build_ok(&state, &LastValid::new());
    for name in ["numeric", "mesh-name"] {
        let Outcome::Invalid { message } = outcome(&built, Kind::EgressAllowlist, "checkout", name) else {
            panic!("{name}: {:?}", built.verdicts);
        };
        assert!(message.starts_with("error: `"), "{name}: {message}");
        assert_eq!(message.matches("error:").count(), 1, "once, not per host: {message}");
    }
    let notes = built.notes.join("\n");
    assert!(
        notes.contains("service `checkout/no-host` is left out: its `palisade.dev/hosts` lists no host"),
        "{notes}"
    );
    assert!(
        notes.contains("service `checkout/no-port` is left out: it has no port"),
        "{notes}"
    );
    assert_eq!(built.bundle.egress().rules().len(), 1, "only api.stripe.com");
}
