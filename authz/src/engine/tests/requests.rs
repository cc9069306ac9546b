//! What a request carries into Cedar, and what a decision carries out.

use std::net::IpAddr;

use cedar_policy::Request;

use super::*;
use crate::engine::schema::schema;
use Action::Get;
use Direction::Egress;
use Effect::{Allow, Deny};

fn with_headers(headers: &'static [(&'static str, &'static str)]) -> RequestFacts<'static> {
    RequestFacts {
        headers,
        ..request(FRONTEND, Get, REVIEWS, "/")
    }
}

/// SECURITY.md §1 rule 6 (CVE-2020-25017, CVE-2026-31838).
#[test]
fn a_header_forbid_cannot_be_dodged_by_folding_or_repeating() {
    let engine = Bundle::shop()
        .egress(
            "shop",
            r#"@id("shop-gets") permit(principal in Namespace::"shop", action, resource);"#,
        )
        .egress(
            "shop",
            r#"@id("no-admin-role") forbid(principal, action, resource)
            when { context.headers.contains("x-role:admin") };"#,
        )
        .build();
    let admin = &["no-admin-role"][..];
    let allowed = &["shop-gets"][..];
    check(
        &engine,
        &[
            case("plain", Egress, with_headers(&[("x-role", "admin")]), Deny, admin),
            case(
                "second value",
                Egress,
                with_headers(&[("x-role", "user,admin")]),
                Deny,
                admin,
            ),
            case(
                "spaced values",
                Egress,
                with_headers(&[("x-role", "user , admin ")]),
                Deny,
                admin,
            ),
            case(
                "second line",
                Egress,
                with_headers(&[("x-role", "user"), ("x-role", "admin")]),
                Deny,
                admin,
            ),
            case(
                "upper-case name",
                Egress,
                with_headers(&[("X-Role", "admin")]),
                Deny,
                admin,
            ),
            case(
                "another role",
                Egress,
                with_headers(&[("x-role", "user")]),
                Allow,
                allowed,
            ),
            case(
                "a longer word",
                Egress,
                with_headers(&[("x-role", "administrator")]),
                Allow,
                allowed,
            ),
            case(
                "another header",
                Egress,
                with_headers(&[("x-other", "x-role:admin")]),
                Allow,
                allowed,
            ),
        ],
    );
}

#[test]
fn context_carries_header_names_source_address_time_and_protocol() {
    let engine = Bundle::shop()
        .egress(
            "shop",
            r#"@id("shop-all") permit(principal in Namespace::"shop", action, resource);"#,
        )
        .egress(
            "shop",
            r#"@id("no-debug") forbid(principal, action, resource) when { context.headerNames.contains("x-debug") };"#,
        )
        .egress(
            "shop",
            r#"@id("no-tens") forbid(principal, action, resource)
            when { context has sourceIp && context.sourceIp.isInRange(ip("10.0.0.0/8")) };"#,
        )
        .egress(
            "shop",
            r#"@id("expired") forbid(principal, action, resource) when { context.time >= datetime("2027-01-01") };"#,
        )
        .egress(
            "shop",
            r#"@id("no-tcp") forbid(principal, action, resource) when { context.protocol == "tcp" };"#,
        )
        .build();
    let plain = request(FRONTEND, Get, REVIEWS, "/");
    let ip = |s: &str| Some(s.parse::<IpAddr>().unwrap());
    check(
        &engine,
        &[
            case("plain", Egress, plain, Allow, &["shop-all"]),
            case(
                "header name",
                Egress,
                with_headers(&[("X-Debug", "")]),
                Deny,
                &["no-debug"],
            ),
            case(
                "address in range",
                Egress,
                RequestFacts {
                    source_ip: ip("10.9.8.7"),
                    ..plain
                },
                Deny,
                &["no-tens"],
            ),
            case(
                "the same address, IPv4-mapped",
                Egress,
                RequestFacts {
                    source_ip: ip("::ffff:10.9.8.7"),
                    ..plain
                },
                Deny,
                &["no-tens"],
            ),
            case(
                "outside the range",
                Egress,
                RequestFacts {
                    source_ip: ip("192.0.2.1"),
                    ..plain
                },
                Allow,
                &["shop-all"],
            ),
            case(
                "IPv6",
                Egress,
                RequestFacts {
                    source_ip: ip("2001:db8::1"),
                    ..plain
                },
                Allow,
                &["shop-all"],
            ),
            case(
                "time after",
                Egress,
                RequestFacts {
                    time_unix: 1_798_761_600,
                    ..plain
                },
                Deny,
                &["expired"],
            ),
            case(
                "a second before",
                Egress,
                RequestFacts {
                    time_unix: 1_798_761_599,
                    ..plain
                },
                Allow,
                &["shop-all"],
            ),
            case(
                "protocol",
                Egress,
                RequestFacts {
                    protocol: Protocol::Tcp,
                    ..plain
                },
                Deny,
                &["no-tcp"],
            ),
        ],
    );
}

#[test]
fn a_request_that_cannot_be_built_is_a_deny_with_an_error() {
    let engine = Bundle::shop()
        .egress(
            "shop",
            r#"@id("shop-all") permit(principal in Namespace::"shop", action, resource);"#,
        )
        .build();
    for time_unix in [i64::MIN, -62_167_219_201, 253_402_300_800, i64::MAX] {
        let facts = RequestFacts {
            time_unix,
            ..request(FRONTEND, Get, REVIEWS, "/")
        };
        let decision = engine.evaluate(Egress, &facts);
        assert_eq!(decision.effect, Deny, "{time_unix}");
        assert_eq!(
            decision.errors,
            [format!(
                "request time `{time_unix}` (seconds since the Unix epoch) is outside the years 0000 to 9999"
            )]
        );
    }
}

#[test]
fn determining_policies_carry_their_id_file_and_line() {
    let at = |file: &str, line| SourceLocation {
        file: file.into(),
        line,
        column: 1,
    };
    let engine = Bundle::shop()
        .policy_at(
            Direction::Egress,
            "shop",
            at("policies/shop/egress/mesh.cedar", 3),
            r#"@id("shop-all") permit(principal in Namespace::"shop", action, resource);"#,
        )
        .policy_at(
            Direction::Egress,
            "shop",
            at("policies/shop/egress/admin.cedar", 12),
            r#"@id("no-admin") forbid(principal, action, resource) when { context.path == "/admin" };"#,
        )
        .policy_at(
            Direction::Egress,
            "shop",
            at("policies/shop/egress/dry.cedar", 7),
            r#"@id("dry-no-x") @mode("dry-run") forbid(principal, action, resource) when { context.path == "/x" };"#,
        )
        .build();
    let allowed = engine.evaluate(Egress, &request(FRONTEND, Get, REVIEWS, "/"));
    assert_eq!(
        allowed.determining,
        [DeterminingPolicy {
            id: "shop-all".into(),
            location: at("policies/shop/egress/mesh.cedar", 3)
        }]
    );
    let denied = engine.evaluate(Egress, &request(FRONTEND, Get, REVIEWS, "/admin"));
    assert_eq!(
        denied.determining,
        [DeterminingPolicy {
            id: "no-admin".into(),
            location: at("policies/shop/egress/admin.cedar", 12)
        }]
    );
    let dry = engine.evaluate(Egress, &request(FRONTEND, Get, REVIEWS, "/x"));
    assert_eq!(
        dry.dry_run_determining,
        [DeterminingPolicy {
            id: "dry-no-x".into(),
            location: at("policies/shop/egress/dry.cedar", 7)
        }]
    );
}

/// The engine builds requests without asking Cedar to check them (it costs time on
/// every request); this proves they conform to the schema anyway.
#[test]
fn built_requests_conform_to_the_schema() {
    let engine = Bundle::shop().build();
    let schema = schema().unwrap();
    let variants = [
        request(FRONTEND, Get, REVIEWS, "/"),
        request(STRANGER, Action::Connect, STRIPE, "/"),
        RequestFacts {
            source_ip: Some("::ffff:10.0.0.1".parse().unwrap()),
            headers: &[("x-a", "1, 2"), ("X-B", "")],
            protocol: Protocol::Grpc,
            ..request(CHECKOUT, Action::Options, PAYMENTS, "/pkg.Svc/Method")
        },
    ];
    let actions = [
        Action::Get,
        Action::Head,
        Action::Post,
        Action::Put,
        Action::Patch,
        Action::Delete,
        Action::Options,
        Action::Connect,
    ];
    for facts in variants {
        for action in actions {
            let facts = RequestFacts { action, ..facts };
            let built = engine.cedar_request(&facts).unwrap();
            let checked = Request::new(
                built.principal().unwrap().clone(),
                built.action().unwrap().clone(),
                built.resource().unwrap().clone(),
                built.context().unwrap().clone(),
                Some(&schema),
            );
            assert!(checked.is_ok(), "{facts:?}: {checked:?}");
        }
    }
}
