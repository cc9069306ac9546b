//! Which policies a request evaluates: its namespace's, and within it the general
//! ones plus those scoped to exactly its principal (egress) or resource (ingress).

use cedar_policy::{Authorizer, PolicyId, PolicySet};

use super::*;
use Action::{Get, Post};
use Direction::{Egress, Ingress};
use Effect::{Allow, Deny};

/// The seeds' PCI story plus policies that try to reach across namespaces.
fn mesh() -> Bundle {
    Bundle::shop()
        .egress(
            "shop",
            r#"@id("shop-calls-mesh")
            permit(principal in Namespace::"shop", action in Action::"http", resource is Service);"#,
        )
        .egress(
            "shop",
            r#"@id("checkout-to-stripe")
            permit(principal == Workload::"spiffe://mesh.test/ns/shop/sa/checkout",
                   action == Action::"POST", resource == ExternalHost::"api.stripe.com:443");"#,
        )
        .egress(
            "shop",
            r#"@id("shop-healthz")
            permit(principal is Workload, action == Action::"GET", resource)
            when { context.path == "/healthz" && principal.serviceAccount != "" };"#,
        )
        // Owned by ops, naming shop's workloads: must never apply to them.
        .egress(
            "ops",
            r#"@id("ops-grants-frontend")
            permit(principal == Workload::"spiffe://mesh.test/ns/shop/sa/frontend", action, resource);"#,
        )
        .egress(
            "ops",
            r#"@id("ops-to-stripe") permit(principal, action, resource == ExternalHost::"api.stripe.com:443");"#,
        )
        .ingress(
            "pay",
            r#"@id("payments-pci-only")
            permit(principal, action == Action::"POST", resource == Service::"pay/payments")
            when { principal.hasTag("pci") && principal.getTag("pci") == "true" && context.path == "/charge" };"#,
        )
        .ingress(
            "shop",
            r#"@id("shop-internal") permit(principal in Namespace::"shop", action, resource in Namespace::"shop");"#,
        )
        .ingress(
            "shop",
            r#"@id("reviews-public") permit(principal, action == Action::"GET", resource == Service::"shop/reviews");"#,
        )
        // Owned by shop, naming pay's service: must never apply to it.
        .ingress(
            "shop",
            r#"@id("shop-grants-payments") permit(principal, action, resource == Service::"pay/payments");"#,
        )
}

#[test]
fn egress_evaluates_only_the_callers_namespace() {
    check(
        &mesh().build(),
        &[
            case(
                "own namespace's permit",
                Egress,
                request(FRONTEND, Get, PAYMENTS, "/"),
                Allow,
                &["shop-calls-mesh"],
            ),
            case(
                "another namespace's exact permit never applies",
                Egress,
                request(FRONTEND, Post, STRIPE, "/v1/charges"),
                Deny,
                &[],
            ),
            case(
                "it applies in its own namespace",
                Egress,
                request(MONITOR, Post, STRIPE, "/"),
                Allow,
                &["ops-to-stripe"],
            ),
            case(
                "ops has no mesh permit",
                Egress,
                request(MONITOR, Get, REVIEWS, "/"),
                Deny,
                &[],
            ),
        ],
    );
}

#[test]
fn ingress_evaluates_only_the_callees_namespace() {
    check(
        &mesh().build(),
        &[
            case(
                "pci caller",
                Ingress,
                request(CHECKOUT, Post, PAYMENTS, "/charge"),
                Allow,
                &["payments-pci-only"],
            ),
            case(
                "the seeds' PCI example: frontend's egress says yes, payments says no",
                Ingress,
                request(FRONTEND, Post, PAYMENTS, "/charge"),
                Deny,
                &[],
            ),
            case(
                "shop's own service",
                Ingress,
                request(FRONTEND, Get, CATALOG, "/"),
                Allow,
                &["shop-internal"],
            ),
        ],
    );
    let frontend_egress = mesh()
        .build()
        .evaluate(Egress, &request(FRONTEND, Post, PAYMENTS, "/charge"));
    assert_eq!(
        frontend_egress.effect, Allow,
        "the mismatch: egress allows what ingress denies"
    );
}

#[test]
fn exact_scopes_apply_to_their_principal_or_resource_only() {
    check(
        &mesh().build(),
        &[
            case(
                "checkout's own permit",
                Egress,
                request(CHECKOUT, Post, STRIPE, "/"),
                Allow,
                &["checkout-to-stripe"],
            ),
            case(
                "not for another workload",
                Egress,
                request(FRONTEND, Post, STRIPE, "/"),
                Deny,
                &[],
            ),
            case(
                "not for another action",
                Egress,
                request(CHECKOUT, Get, STRIPE, "/"),
                Deny,
                &[],
            ),
            case(
                "reviews is public",
                Ingress,
                request(MONITOR, Get, REVIEWS, "/"),
                Allow,
                &["reviews-public"],
            ),
            case(
                "catalog is not",
                Ingress,
                request(MONITOR, Get, CATALOG, "/"),
                Deny,
                &[],
            ),
        ],
    );
}

#[test]
fn an_unregistered_principal_gets_the_general_policies_and_fails_closed() {
    let engine = mesh().build();
    check(
        &engine,
        &[
            case(
                "not in its namespace's entity",
                Egress,
                request(STRANGER, Get, REVIEWS, "/"),
                Deny,
                &[],
            ),
            case(
                "no exact permit of others",
                Egress,
                request(STRANGER, Post, STRIPE, "/"),
                Deny,
                &[],
            ),
            case(
                "registered: general permits apply",
                Egress,
                request(FRONTEND, Get, STRIPE, "/healthz"),
                Allow,
                &["shop-healthz"],
            ),
            case(
                "unregistered: its attributes error",
                Egress,
                request(STRANGER, Get, STRIPE, "/healthz"),
                Deny,
                &["shop-healthz"],
            ),
            case(
                "and at ingress",
                Ingress,
                request(STRANGER, Get, CATALOG, "/"),
                Deny,
                &[],
            ),
        ],
    );
    let attributes = engine.evaluate(Egress, &request(STRANGER, Get, STRIPE, "/healthz"));
    assert_eq!(attributes.errors.len(), 1, "{:?}", attributes.errors);

    let nameless = engine.evaluate(Egress, &request("spiffe://mesh.test/web", Get, REVIEWS, "/"));
    assert_eq!(nameless.effect, Deny);
    assert!(
        nameless.errors[0].contains("names no namespace"),
        "{:?}",
        nameless.errors
    );
}

#[test]
fn ingress_to_an_external_host_is_a_deny_with_an_error() {
    let decision = mesh().build().evaluate(Ingress, &request(CHECKOUT, Post, STRIPE, "/"));
    assert_eq!(decision.effect, Deny);
    assert_eq!(
        decision.errors,
        ["ingress to the external host `api.stripe.com:443` cannot be authorized; external hosts are egress-only"]
    );
}

#[test]
fn registered_owners_share_identical_sets() {
    let bundle = mesh()
        .workload("spiffe://mesh.test/ns/shop/sa/a", &[])
        .workload("spiffe://mesh.test/ns/shop/sa/b", &[]);
    let partitioned = partitioned(&bundle);
    let sets = |id: &str| {
        let found = partitioned.workloads.get(id).or_else(|| partitioned.services.get(id));
        std::sync::Arc::as_ptr(found.unwrap())
    };
    // Workloads of shop without policies of their own share one group of sets;
    // checkout, with its own, has another.
    assert_eq!(sets(FRONTEND), sets("spiffe://mesh.test/ns/shop/sa/a"));
    assert_eq!(sets(FRONTEND), sets("spiffe://mesh.test/ns/shop/sa/b"));
    assert_ne!(sets(FRONTEND), sets(CHECKOUT));
    // reviews: shop's general policies plus its own; catalog: the general ones only.
    assert_ne!(sets("shop/reviews"), sets("shop/catalog"));
}

fn partitioned(bundle: &Bundle) -> crate::engine::partition::Partitioned {
    use crate::engine::{entities, partition, schema};
    let input = bundle.input();
    let names = entities::Names::new().unwrap();
    let entities = entities::build(&names, input, &schema::schema().unwrap()).unwrap();
    let snapshot = partition::Snapshot {
        names: &names,
        entities: &entities,
        workloads: &input.workloads,
        services: &input.services,
    };
    partition::partition(&snapshot, &input.policies).unwrap()
}

/// Partitioning and context slicing are optimizations: for every request they must
/// decide exactly as the owning namespace's whole policy list over the whole context
/// would (with errors denying).
#[test]
fn partitioned_decisions_equal_whole_namespace_decisions() {
    let bundle = mesh()
        .egress(
            "shop",
            r#"@id("shop-no-admin") forbid(principal in Namespace::"shop", action, resource) when { context.path like "/admin*" };"#,
        )
        .egress(
            "shop",
            r#"@id("shop-no-roles") forbid(principal, action, resource)
            when { context.headers.containsAny(["x-role:admin", "x-debug:1"]) };"#,
        )
        .egress(
            "shop",
            r#"@id("shop-no-root") forbid(principal, action, resource) when { context.headers == ["x-role:root"] };"#,
        )
        .egress(
            "ops",
            r#"@id("ops-daytime") forbid(principal, action, resource) when { context.time > datetime("2026-11-22T13:00:00Z") };"#,
        )
        .egress(
            "ops",
            r#"@id("ops-debug") permit(principal, action, resource) when { context.headerNames.contains("x-debug") };"#,
        )
        // Scopes that are false for the namespace's own principals and services.
        .egress("shop", r#"@id("shop-names-ops") permit(principal in Namespace::"ops", action, resource);"#)
        .ingress("shop", r#"@id("shop-names-pay") permit(principal, action, resource is Service in Namespace::"pay");"#)
        .ingress(
            "pay",
            r#"@id("pay-no-tens") forbid(principal, action, resource)
            when { context has sourceIp && context.sourceIp.isInRange(ip("10.0.0.0/8")) };"#,
        );
    let engine = Engine::new(bundle.input().clone()).unwrap();
    let principals = [FRONTEND, CHECKOUT, MONITOR, STRANGER];
    let resources = [
        REVIEWS,
        CATALOG,
        PAYMENTS,
        STRIPE,
        Resource::Service {
            namespace: "pay",
            name: "ghost",
        },
    ];
    let headers: [&'static [(&'static str, &'static str)]; 4] = [
        &[],
        &[("X-Role", "user, admin")],
        &[("x-debug", "1"), ("x-role", "root")],
        &[("x-role", "root")],
    ];
    let ip = |s: &str| Some(s.parse().unwrap());
    let mut compared = 0;
    for principal in principals {
        for resource in resources {
            for action in [Get, Post, Action::Delete, Action::Connect] {
                for path in ["/", "/charge", "/healthz", "/admin"] {
                    for (i, headers) in headers.into_iter().enumerate() {
                        let (source_ip, time_unix) = if i % 2 == 0 {
                            (None, NOON)
                        } else {
                            (ip("10.0.0.7"), NOON + 7200)
                        };
                        let facts = RequestFacts {
                            headers,
                            source_ip,
                            time_unix,
                            ..request(principal, action, resource, path)
                        };
                        for direction in [Egress, Ingress] {
                            let Some(namespace) = owner(direction, &facts) else {
                                continue;
                            };
                            let expected = whole_namespace(&bundle, &engine, direction, namespace, &facts);
                            let got = engine.evaluate(direction, &facts).effect;
                            assert_eq!(got, expected, "{direction:?} {facts:?}");
                            compared += 1;
                        }
                    }
                }
            }
        }
    }
    assert!(compared > 2000, "{compared}");
}

fn owner(direction: Direction, facts: &RequestFacts<'static>) -> Option<&'static str> {
    match (direction, facts.resource) {
        (Direction::Egress, _) => crate::engine::route::namespace_of(facts.principal),
        (Direction::Ingress, Resource::Service { namespace, .. }) => Some(namespace),
        (Direction::Ingress, Resource::External { .. }) => None,
    }
}

fn whole_namespace(
    bundle: &Bundle,
    engine: &Engine,
    direction: Direction,
    namespace: &str,
    facts: &RequestFacts<'_>,
) -> Effect {
    let policies = bundle
        .input()
        .policies
        .iter()
        .filter(|s| s.direction == direction && s.namespace == namespace && s.mode == Mode::Enforce)
        .map(|s| s.policy.new_id(PolicyId::new(&s.id)));
    let set = PolicySet::from_policies(policies).unwrap();
    let request = engine.cedar_request(facts).unwrap();
    let response = Authorizer::new().is_authorized(&request, &set, engine.entities());
    let errored = response.diagnostics().errors().next().is_some();
    match response.decision() {
        cedar_policy::Decision::Allow if !errored => Allow,
        _ => Deny,
    }
}
