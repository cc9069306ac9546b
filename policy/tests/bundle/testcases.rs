//! The policy test files beside a bundle parse into typed cases.

use palisade_authz::{Action, Effect};
use palisade_policy::testcases::{self, Target};

use crate::support::{shop, TempBundle};

#[test]
fn the_shop_test_cases_parse() {
    let cases = testcases::load(shop()).unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(cases.len(), 13);
    let names: Vec<&str> = cases.iter().map(|c| c.name.as_str()).collect();
    assert_eq!(
        names[0], "checkout reaches Stripe",
        "files in name order: egress.yaml first"
    );

    let mismatch = cases
        .iter()
        .find(|c| c.name.starts_with("frontend thinks it may charge"))
        .unwrap();
    assert_eq!(mismatch.from.as_str(), "spiffe://shop.example/ns/web/sa/frontend");
    assert_eq!(
        mismatch.to,
        Target::Service {
            namespace: "payments".into(),
            name: "payments".into()
        }
    );
    assert_eq!((mismatch.action, mismatch.path.as_str()), (Action::Post, "/charge"));
    let expect = mismatch.expect;
    assert_eq!(
        (expect.egress, expect.ingress, expect.overall),
        (Effect::Allow, Some(Effect::Deny), Effect::Deny)
    );
    assert!(mismatch.location.file.ends_with("tests/pci.yaml"));
    assert_eq!((mismatch.location.line, mismatch.location.column), (3, 3));

    let stripe = &cases[0];
    assert_eq!(
        stripe.to,
        Target::External {
            host: "api.stripe.com".into(),
            port: Some(443)
        }
    );
    assert_eq!((stripe.action, stripe.expect.ingress), (Action::Connect, None));

    let debug = cases.iter().find(|c| c.name.contains("debug header")).unwrap();
    assert_eq!(debug.headers.get("x-debug").map(String::as_str), Some("1"));
}

#[test]
fn a_bundle_without_tests_has_no_cases() {
    assert!(testcases::load(TempBundle::new().path()).unwrap().is_empty());
}

#[test]
fn every_problem_of_every_test_file_is_reported_at_its_place() {
    let bundle = TempBundle::new()
        .write(
            "tests/a.yaml",
            "\
- name: one
  from: spiffe://shop.example/ns/web/sa/frontend
  to: payments/payments
  method: post
  expect: { egress: allow, ingress: deny, overall: deny }
- name: two
  from: spiffe://shop.example/ns/web/sa/frontend
  to: api.stripe.com
  method: GET
  expect: { egress: allow, ingress: deny, overall: deny }
- name: three
  from: spiffe://shop.example/ns/web/sa/frontend
  to: payments/payments
  method: GET
  expect: { egress: allow, overall: deny }
- name: one
  from: spiffe://shop.example/ns/web/sa/frontend
  to: Payments/x
  method: GET
  headers: { \"bad header\": x }
  expect: { egress: allow, overall: deny }
",
        )
        .write(
            "tests/b.yaml",
            "- name: four\n  from: x\n  to: a/b\n  method: GET\n  expect: { egress: maybe }\n",
        );
    let errors = testcases::load(bundle.path()).unwrap_err();
    let found: Vec<(String, u32, u32)> = errors
        .iter()
        .map(|d| {
            let l = d.location().unwrap_or_else(|| panic!("{d}"));
            (l.file.rsplit('/').next().unwrap().to_owned(), l.line, l.column)
        })
        .collect();
    let want = [
        ("a.yaml", 4, 11),  // method: post
        ("a.yaml", 10, 37), // ingress for an external host
        ("a.yaml", 15, 11), // no ingress for a service
        ("a.yaml", 16, 9),  // duplicate name
        ("a.yaml", 18, 7),  // bad service
        ("a.yaml", 20, 28), // bad header name (at its value)
        ("b.yaml", 5, 21),  // YAML: unknown variant
    ];
    let want: Vec<(String, u32, u32)> = want.iter().map(|(f, l, c)| (f.to_string(), *l, *c)).collect();
    assert_eq!(found, want, "{errors}");
}
