//! The policy tooling as a platform team uses it, through the real binary.

use crate::support::{fails, ok, run, s};

fn shop() -> String {
    format!("{}/examples/shop", env!("CARGO_MANIFEST_DIR"))
}

/// A copy of the shop bundle to break.
fn shop_copy() -> (tempfile::TempDir, std::path::PathBuf) {
    let tmp = tempfile::tempdir().unwrap();
    let dst = tmp.path().join("shop");
    copy_dir(std::path::Path::new(&shop()), &dst);
    (tmp, dst)
}

fn copy_dir(from: &std::path::Path, to: &std::path::Path) {
    std::fs::create_dir_all(to).unwrap();
    for entry in std::fs::read_dir(from).unwrap() {
        let path = entry.unwrap().path();
        let target = to.join(path.file_name().unwrap());
        if path.is_dir() {
            copy_dir(&path, &target);
        } else {
            std::fs::copy(&path, &target).unwrap();
        }
    }
}

#[test]
fn the_shop_bundle_validates_is_formatted_and_its_tests_pass() {
    let out = ok(&["policy", "validate", &shop()]);
    assert!(out.contains("is valid") && out.contains("digest sha256:"), "{out}");
    ok(&["policy", "fmt", "--check", &shop()]);
    let out = ok(&["policy", "test", &shop()]);
    let last = out.lines().last().unwrap();
    assert!(last.ends_with("passed, 0 failed") && !last.starts_with("0 "), "{out}");
}

#[test]
fn analyze_lists_frontend_to_payments_as_an_egress_only_mismatch() {
    let out = ok(&["policy", "analyze", &shop()]);
    let row = out
        .lines()
        .find(|l| {
            l.starts_with("egress-only mismatch")
                && l.contains("/ns/web/sa/frontend")
                && l.contains("payments/payments")
                && l.contains("POST")
        })
        .unwrap_or_else(|| panic!("no frontend → payments POST mismatch in:\n{out}"));
    assert!(row.contains("/charge"), "{row}");
    let json: serde_json::Value = serde_json::from_str(&ok(&["policy", "analyze", &shop(), "-o", "json"])).unwrap();
    assert!(json["edges"]
        .as_array()
        .unwrap()
        .iter()
        .any(|e| e["kind"] == "egress-only mismatch"));
    assert!(ok(&["policy", "analyze", &shop(), "-o", "dot"]).starts_with("digraph"));
}

#[test]
fn explain_names_the_policy_that_decided_on_each_side() {
    let out = ok(&[
        "policy",
        "explain",
        &shop(),
        "--from",
        "spiffe://shop.example/ns/web/sa/frontend",
        "--to",
        "payments/payments",
        "--method",
        "POST",
        "--path",
        "/charge",
        "-o",
        "json",
    ]);
    let x: serde_json::Value = serde_json::from_str(&out).unwrap();
    assert_eq!(x["egress"]["decision"], "allow", "{x}");
    assert_eq!(x["ingress"]["decision"], "deny", "{x}");
    assert_eq!(x["overall"], "deny");
    let by = &x["ingress"]["determiningPolicies"][0];
    assert_eq!(by["id"], "payments-forbid-non-pci", "{x}");
    assert!(
        by["file"]
            .as_str()
            .unwrap()
            .ends_with("policies/payments/ingress/pci.cedar")
            && by["line"].as_u64().unwrap() > 0
    );

    let err = fails(
        &[
            "policy",
            "explain",
            &shop(),
            "--from",
            "spiffe://shop.example/ns/web/sa/frontend",
            "--to",
            "payments/payments",
            "--path",
            "/%2e%2e/x",
        ],
        2,
    );
    assert!(err.contains("refuse this request before any policy"), "{err}");
    fails(
        &[
            "policy",
            "explain",
            &shop(),
            "--from",
            "x",
            "--to",
            "payments/payments",
            "--method",
            "post",
        ],
        2,
    );
}

#[test]
fn an_invalid_bundle_reports_every_error_with_its_place_and_loads_nothing() {
    let (_tmp, dir) = shop_copy();
    let broken = dir.join("policies/reviews/ingress/broken.cedar");
    std::fs::write(
        &broken,
        "@id(\"oops\")\npermit (principal, action, resource in Namespace::\"payments\");\n",
    )
    .unwrap();
    std::fs::write(
        dir.join("policies/web/egress/syntax.cedar"),
        "@id(\"s\")\npermit (principal in Namespace::\"web\", action resource);\n",
    )
    .unwrap();
    let out = run(&["policy", "validate", s(&dir)]);
    assert_eq!(out.status.code(), Some(1));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("broken.cedar:2:"),
        "the namespace rule, with its place:\n{err}"
    );
    assert!(
        err.contains("syntax.cedar:2:"),
        "the syntax error too, with its place:\n{err}"
    );
    assert!(err.contains('^'), "a caret excerpt:\n{err}");
    assert!(err.contains("nothing was loaded"), "{err}");
}

#[test]
fn a_failing_policy_test_is_explained_and_fails_the_run() {
    let (_tmp, dir) = shop_copy();
    std::fs::write(
        dir.join("tests/wrong.yaml"),
        "- name: wrongly expects frontend to charge\n  from: spiffe://shop.example/ns/web/sa/frontend\n  to: payments/payments\n  method: POST\n  path: /charge\n  expect: { egress: allow, ingress: allow, overall: allow }\n",
    )
    .unwrap();
    let out = run(&["policy", "test", s(&dir)]);
    assert_eq!(out.status.code(), Some(1));
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(text.contains("FAIL  wrongly expects frontend to charge"), "{text}");
    assert!(text.contains("ingress: expected allow, got deny"), "{text}");
    assert!(
        text.contains("payments-forbid-non-pci"),
        "the explanation names the forbid:\n{text}"
    );
    assert!(text.lines().last().unwrap().ends_with("1 failed"), "{text}");
}
