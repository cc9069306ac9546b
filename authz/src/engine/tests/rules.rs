//! Default deny, forbid wins, an error denies, dry run reports without denying.

use cedar_policy::{Authorizer, PolicySet};

use super::*;
use Action::{Delete, Get, Post};
use Direction::Egress;
use Effect::{Allow, Deny};

const SHOP_GETS: &str = r#"@id("shop-gets")
permit(principal in Namespace::"shop", action == Action::"GET", resource);"#;

#[test]
fn a_permit_allows_and_nothing_else_does() {
    let engine = Bundle::shop().egress("shop", SHOP_GETS).build();
    check(
        &engine,
        &[
            case(
                "a permit allows",
                Egress,
                request(FRONTEND, Get, REVIEWS, "/"),
                Allow,
                &["shop-gets"],
            ),
            case(
                "no permit: default deny",
                Egress,
                request(FRONTEND, Post, REVIEWS, "/"),
                Deny,
                &[],
            ),
            case(
                "no policy at all: deny",
                Egress,
                request(MONITOR, Get, REVIEWS, "/"),
                Deny,
                &[],
            ),
        ],
    );
}

#[test]
fn a_forbid_beats_any_permit() {
    let engine = Bundle::shop()
        .egress("shop", SHOP_GETS)
        .egress(
            "shop",
            r#"@id("no-admin")
            forbid(principal in Namespace::"shop", action, resource)
            when { context.path == "/admin" || context.path like "/admin/*" };"#,
        )
        .build();
    check(
        &engine,
        &[
            case(
                "permit alone",
                Egress,
                request(FRONTEND, Get, REVIEWS, "/a"),
                Allow,
                &["shop-gets"],
            ),
            case(
                "forbid wins",
                Egress,
                request(FRONTEND, Get, REVIEWS, "/admin"),
                Deny,
                &["no-admin"],
            ),
            case(
                "forbid wins below",
                Egress,
                request(FRONTEND, Get, REVIEWS, "/admin/x"),
                Deny,
                &["no-admin"],
            ),
        ],
    );
}

#[test]
fn an_erroring_forbid_denies_where_cedar_alone_would_allow() {
    // frontend has no `pci` tag: `getTag` errors, Cedar skips the forbid.
    let forbid = r#"@id("pci-only")
        forbid(principal in Namespace::"shop", action, resource)
        when { principal.getTag("pci") != "true" };"#;
    let bundle = Bundle::shop().egress("shop", SHOP_GETS).egress("shop", forbid);
    let cedar_alone = cedar_decision(&bundle, &request(FRONTEND, Get, REVIEWS, "/"));
    assert_eq!(
        cedar_alone,
        cedar_policy::Decision::Allow,
        "the premise: Cedar skips the error"
    );

    let engine = bundle.build();
    check(
        &engine,
        &[
            case(
                "tag missing: error",
                Egress,
                request(FRONTEND, Get, REVIEWS, "/"),
                Deny,
                &["pci-only"],
            ),
            case(
                "tag present, true",
                Egress,
                request(CHECKOUT, Get, REVIEWS, "/"),
                Allow,
                &["shop-gets"],
            ),
        ],
    );
    let decision = engine.evaluate(Egress, &request(FRONTEND, Get, REVIEWS, "/"));
    assert_eq!(decision.errors.len(), 1, "{:?}", decision.errors);
    assert!(decision.errors[0].starts_with("policy `pci-only` (policies/shop/egress/test.cedar:2): "));
}

#[test]
fn an_erroring_permit_denies_even_beside_a_satisfied_permit() {
    let engine = Bundle::shop()
        .egress("shop", SHOP_GETS)
        .egress(
            "shop",
            r#"@id("team-x")
            permit(principal in Namespace::"shop", action, resource)
            when { principal.getTag("team") == "x" };"#,
        )
        .build();
    let decision = engine.evaluate(Egress, &request(FRONTEND, Get, REVIEWS, "/"));
    assert_eq!(decision.effect, Deny);
    assert_eq!(ids(&decision.determining), ["team-x"]);
    assert_eq!(decision.errors.len(), 1);
    assert!(decision.errors[0].contains("`team-x`"), "{:?}", decision.errors);
    assert!(decision.errors[0].contains("team"), "{:?}", decision.errors);
}

const DRY_NO_DELETE: &str = r#"@id("dry-no-delete") @mode("dry-run")
forbid(principal in Namespace::"shop", action == Action::"DELETE", resource);"#;

#[test]
fn a_dry_run_forbid_reports_but_does_not_deny() {
    let engine = Bundle::shop()
        .egress(
            "shop",
            r#"@id("shop-all") permit(principal in Namespace::"shop", action, resource);"#,
        )
        .egress("shop", DRY_NO_DELETE)
        .build();

    let would_deny = engine.evaluate(Egress, &request(FRONTEND, Delete, REVIEWS, "/r/1"));
    assert_eq!(would_deny.effect, Allow);
    assert!(would_deny.dry_run_deny);
    assert_eq!(ids(&would_deny.determining), ["shop-all"]);
    assert_eq!(ids(&would_deny.dry_run_determining), ["dry-no-delete"]);
    assert!(would_deny.errors.is_empty());

    let fine = engine.evaluate(Egress, &request(FRONTEND, Get, REVIEWS, "/r/1"));
    assert_eq!((fine.effect, fine.dry_run_deny), (Allow, false));
    assert!(fine.dry_run_determining.is_empty());
}

#[test]
fn dry_run_is_only_asked_about_requests_the_enforced_policies_allow() {
    // No enforced permit: the request is a deny, not a dry-run deny.
    let engine = Bundle::shop().egress("shop", DRY_NO_DELETE).build();
    let decision = engine.evaluate(Egress, &request(FRONTEND, Delete, REVIEWS, "/"));
    assert_eq!((decision.effect, decision.dry_run_deny), (Deny, false));
}

#[test]
fn a_dry_run_permit_changes_nothing_and_an_erroring_dry_run_policy_would_deny() {
    let engine = Bundle::shop()
        .egress("shop", SHOP_GETS)
        .egress(
            "shop",
            r#"@id("dry-permit") @mode("dry-run") permit(principal, action, resource);"#,
        )
        .egress(
            "shop",
            r#"@id("dry-pci") @mode("dry-run")
            forbid(principal in Namespace::"shop", action, resource)
            when { principal.getTag("pci") != "true" };"#,
        )
        .build();
    let posted = engine.evaluate(Egress, &request(FRONTEND, Post, REVIEWS, "/"));
    assert_eq!(
        (posted.effect, posted.dry_run_deny),
        (Deny, false),
        "dry-run permits never allow"
    );

    let errored = engine.evaluate(Egress, &request(FRONTEND, Get, REVIEWS, "/"));
    assert_eq!(errored.effect, Allow, "a dry-run error is not enforced");
    assert!(errored.dry_run_deny);
    assert_eq!(ids(&errored.dry_run_determining), ["dry-pci"]);
    assert!(errored.errors.is_empty(), "only enforced errors are errors");

    let checkout = engine.evaluate(Egress, &request(CHECKOUT, Get, REVIEWS, "/"));
    assert_eq!((checkout.effect, checkout.dry_run_deny), (Allow, false));
}

/// SECURITY.md §1 rule 8, for the policy reference: `like "/api/admin*"` is a string
/// prefix, not a path prefix.
#[test]
fn like_with_a_trailing_star_matches_more_than_the_directory() {
    let engine = Bundle::shop()
        .egress("shop", SHOP_GETS)
        .egress(
            "shop",
            r#"@id("prefix") forbid(principal, action, resource)
            when { context.path like "/api/admin*" };"#,
        )
        .egress(
            "ops",
            r#"@id("ops-gets") permit(principal in Namespace::"ops", action == Action::"GET", resource);"#,
        )
        .egress(
            "ops",
            r#"@id("safe-idiom") forbid(principal, action, resource)
            when { context.path == "/api/admin" || context.path like "/api/admin/*" };"#,
        )
        .build();
    check(
        &engine,
        &[
            case(
                "prefix: the directory",
                Egress,
                request(FRONTEND, Get, REVIEWS, "/api/admin"),
                Deny,
                &["prefix"],
            ),
            case(
                "prefix: below it",
                Egress,
                request(FRONTEND, Get, REVIEWS, "/api/admin/x"),
                Deny,
                &["prefix"],
            ),
            case(
                "prefix: a sibling too",
                Egress,
                request(FRONTEND, Get, REVIEWS, "/api/administrator"),
                Deny,
                &["prefix"],
            ),
            case(
                "idiom: the directory",
                Egress,
                request(MONITOR, Get, REVIEWS, "/api/admin"),
                Deny,
                &["safe-idiom"],
            ),
            case(
                "idiom: below it",
                Egress,
                request(MONITOR, Get, REVIEWS, "/api/admin/x"),
                Deny,
                &["safe-idiom"],
            ),
            case(
                "idiom: not the sibling",
                Egress,
                request(MONITOR, Get, REVIEWS, "/api/administrator"),
                Allow,
                &["ops-gets"],
            ),
        ],
    );
}

#[test]
fn a_bundle_with_two_policies_of_one_id_is_refused() {
    let bundle = Bundle::shop().egress("shop", SHOP_GETS).ingress("shop", SHOP_GETS);
    let error = Engine::new(bundle.input().clone()).unwrap_err();
    assert_eq!(
        error.to_string(),
        "two policies have the id `shop-gets`; give every policy a unique `@id`"
    );
}

#[test]
fn a_registry_listing_one_workload_twice_differently_is_refused() {
    let bundle = Bundle::shop().workload(FRONTEND, &[("app", "other")]);
    let error = Engine::new(bundle.input().clone()).unwrap_err();
    assert!(matches!(error, crate::engine::EngineError::DuplicateEntity(ref id) if id == FRONTEND));
}

fn ids(policies: &[DeterminingPolicy]) -> Vec<&str> {
    policies.iter().map(|p| p.id.as_str()).collect()
}

/// Cedar's own answer over every policy of the bundle, errors skipped.
fn cedar_decision(bundle: &Bundle, facts: &RequestFacts<'_>) -> cedar_policy::Decision {
    let engine = Engine::new(bundle.input().clone()).unwrap();
    let policies = bundle
        .input()
        .policies
        .iter()
        .map(|s| s.policy.new_id(cedar_policy::PolicyId::new(&s.id)));
    let set = PolicySet::from_policies(policies).unwrap();
    let request = engine.cedar_request(facts).unwrap();
    Authorizer::new()
        .is_authorized(&request, &set, engine.entities())
        .decision()
}

#[test]
fn an_engine_can_be_shared_between_threads() {
    fn shared<T: Send + Sync>() {}
    shared::<Engine>();
}
