//! The example bundle `examples/shop` loads, with the parts the demo relies on.

use palisade_authz::{Direction, Mode};
use palisade_policy::egress::{HostPattern, Protocol};
use palisade_policy::mesh::OutboundMode;

use crate::support::shop;

#[test]
fn the_shop_bundle_loads_without_errors() {
    let bundle = palisade_policy::load(shop()).unwrap_or_else(|errors| panic!("{errors}"));
    assert_eq!(bundle.mesh().trust_domain().as_str(), "shop.example");
    assert_eq!(bundle.mesh().outbound_mode(), OutboundMode::RegistryOnly);

    let services: Vec<String> = bundle.registry().services().iter().map(|s| s.id().to_owned()).collect();
    assert_eq!(
        services,
        [
            "checkout/checkout",
            "payments/payments",
            "reviews/reviews",
            "web/frontend"
        ]
    );
    let payments = bundle.registry().service("payments", "payments").unwrap();
    assert_eq!(payments.hosts(), ["payments.shop", "payments.payments.svc"]);
    assert_eq!(payments.labels().get("pci").map(String::as_str), Some("true"));
    assert_eq!(
        payments.served_by()[0].as_str(),
        "spiffe://shop.example/ns/payments/sa/payments"
    );

    let checkout = bundle
        .registry()
        .workload("spiffe://shop.example/ns/checkout/sa/checkout")
        .unwrap();
    assert_eq!(
        (checkout.namespace(), checkout.service_account()),
        ("checkout", "checkout")
    );
    assert_eq!(checkout.labels().get("pci").map(String::as_str), Some("true"));
    assert_eq!(bundle.registry().workloads().len(), 4);

    let [stripe] = bundle.egress().rules() else {
        panic!("one egress rule")
    };
    assert_eq!(stripe.host(), &HostPattern::Exact("api.stripe.com".into()));
    assert_eq!((stripe.ports(), stripe.protocol()), (&[443][..], Protocol::Tls));
    assert!(stripe.workloads().matches(checkout));
    let frontend = bundle
        .registry()
        .workload("spiffe://shop.example/ns/web/sa/frontend")
        .unwrap();
    assert!(!stripe.workloads().matches(frontend));
}

#[test]
fn every_policy_knows_its_owner_mode_and_place() {
    let bundle = palisade_policy::load(shop()).unwrap();
    let forbid = bundle.policy("payments-forbid-non-pci").unwrap();
    assert_eq!(
        (forbid.namespace(), forbid.direction(), forbid.mode()),
        ("payments", Direction::Ingress, Mode::Enforce)
    );
    assert_eq!(forbid.file(), "policies/payments/ingress/pci.cedar");
    assert!(forbid
        .location()
        .file
        .ends_with("examples/shop/policies/payments/ingress/pci.cedar"));
    assert_eq!((forbid.location().line, forbid.location().column), (19, 1));
    assert_eq!(forbid.cedar().id().to_string(), "payments-forbid-non-pci");

    let dry_run = bundle.policy("reviews-no-debug-header").unwrap();
    assert_eq!(dry_run.mode(), Mode::DryRun);
    let stripe = bundle.policy("checkout-calls-stripe").unwrap();
    assert_eq!(
        (stripe.namespace(), stripe.direction()),
        ("checkout", Direction::Egress)
    );
}

#[test]
fn the_engine_input_holds_the_whole_bundle() {
    let bundle = palisade_policy::load(shop()).unwrap();
    let input = bundle.engine_input();
    assert_eq!(input.policies.len(), bundle.policies().len());
    assert_eq!(input.policies.len(), 12);
    assert_eq!(input.workloads.len(), 4);
    assert_eq!(input.services.len(), 4);
    let external: Vec<(String, u16)> = input
        .external_hosts
        .iter()
        .map(|h| (h.hostname.clone(), h.port))
        .collect();
    assert_eq!(external, [("api.stripe.com".to_owned(), 443)]);
    palisade_authz::Engine::new(input).unwrap();
}

/// The shop's own test files agree with the engine: a plain evaluation of every
/// case (egress, ingress for a service, the allowlist for an external host).
#[test]
fn the_shop_test_expectations_hold_under_the_engine() {
    use palisade_authz::{normalize_path, Effect, Engine, Protocol, RequestFacts, Resource};
    use palisade_policy::testcases::Target;

    let bundle = palisade_policy::load(shop()).unwrap();
    let engine = Engine::new(bundle.engine_input()).unwrap();
    for case in palisade_policy::testcases::load(shop()).unwrap() {
        let path = normalize_path(&case.path).unwrap();
        let headers: Vec<(&str, &str)> = case.headers.iter().map(|(k, v)| (k.as_str(), v.as_str())).collect();
        let (resource, host, protocol) = match &case.to {
            Target::Service { namespace, name } => {
                let host = bundle.registry().service(namespace, name).unwrap().hosts()[0].as_str();
                (Resource::Service { namespace, name }, host, Protocol::Http1)
            }
            Target::External { host, port } => {
                let port = port.unwrap_or(443);
                (
                    Resource::External { hostname: host, port },
                    host.as_str(),
                    Protocol::Tcp,
                )
            }
        };
        let facts = RequestFacts {
            principal: case.from.as_str(),
            action: case.action,
            resource,
            path: path.path(),
            host,
            protocol,
            source_ip: None,
            headers: &headers,
            time_unix: 1_700_000_000,
        };
        let egress = engine.evaluate(Direction::Egress, &facts).effect;
        let (ingress, reachable) = match &case.to {
            Target::Service { .. } => (Some(engine.evaluate(Direction::Ingress, &facts).effect), true),
            Target::External { host, port } => {
                let caller = bundle.registry().workload(case.from.as_str());
                let host = palisade_authz::normalize_host(host, None).unwrap();
                let allowed = caller.and_then(|w| {
                    let protocol = palisade_policy::egress::Protocol::Tls;
                    bundle.egress().allowing(w, &host, port.unwrap_or(443), protocol)
                });
                (None, allowed.is_some())
            }
        };
        if case.name.contains("debug header") {
            assert!(
                engine.evaluate(Direction::Ingress, &facts).dry_run_deny,
                "{}",
                case.name
            );
        }
        let overall = match (egress, ingress, reachable) {
            (Effect::Allow, None | Some(Effect::Allow), true) => Effect::Allow,
            _ => Effect::Deny,
        };
        assert_eq!(
            (egress, ingress, overall),
            (case.expect.egress, case.expect.ingress, case.expect.overall),
            "{}",
            case.name
        );
    }
}
