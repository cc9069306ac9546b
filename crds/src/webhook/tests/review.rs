//! What the webhook admits and refuses, one AdmissionReview at a time.

use serde_json::json;

use super::super::review::{parse_request, CODE_INVALID, CODE_MALFORMED};
use super::super::{review, review_json, AdmissionResponse, ReviewContext, MAX_MESSAGE_BYTES, MAX_WARNING_BYTES};
use super::*;

fn answer(policy: &Policy<'_>, context: &ReviewContext) -> AdmissionResponse {
    review(&policy.request("uid-1", "CREATE"), context)
}

fn refusal(response: &AdmissionResponse) -> (u16, String) {
    assert!(!response.allowed, "expected a refusal, got {response:?}");
    let status = response.status.as_ref().unwrap();
    (status.code, status.message.clone())
}

#[test]
fn a_valid_policy_is_admitted_without_warnings() {
    let response = answer(&Policy::ingress("payments", "pci", PCI), &no_bundle());
    assert_eq!(response, AdmissionResponse::allow("uid-1"));
}

#[test]
fn a_policy_that_does_not_parse_is_refused_at_its_line() {
    let response = answer(&Policy::ingress("payments", "broken", UNPARSABLE), &no_bundle());
    let (code, message) = refusal(&response);
    assert_eq!(code, CODE_INVALID);
    assert!(
        message.starts_with("CedarPolicy payments/broken is invalid:\nerror: "),
        "{message}"
    );
    assert!(
        message.contains(" --> policies/payments/ingress/broken.cedar:6:"),
        "{message}"
    );
}

#[test]
fn a_policy_that_does_not_validate_against_the_schema_is_refused() {
    let response = answer(&Policy::ingress("payments", "owner", OFF_SCHEMA), &no_bundle());
    let (code, message) = refusal(&response);
    assert_eq!(code, CODE_INVALID);
    assert!(message.contains("owner"), "{message}");
    assert!(
        message.contains(" --> policies/payments/ingress/owner.cedar:7:"),
        "{message}"
    );
}

#[test]
fn a_policy_reaching_into_another_namespace_is_refused() {
    let response = answer(&Policy::ingress("payments", "reach", OUTSIDE), &no_bundle());
    let (code, message) = refusal(&response);
    assert_eq!(code, CODE_INVALID);
    assert!(
        message.contains("error: ingress policy of namespace `payments` must constrain `resource` to that namespace"),
        "{message}"
    );
    assert!(
        message.contains("names `Namespace::\"web\"`, another namespace"),
        "{message}"
    );
}

#[test]
fn an_id_the_published_bundle_already_uses_is_refused_whichever_file_is_read_first() {
    let taken = PCI.replace("payments-charge-from-pci", "shared-id");
    // `checkout` is read before `payments`, `web` after: the loader reports the
    // duplicate at the second file, which is the published one for `checkout`.
    for other in ["checkout", "web"] {
        let existing = format!("@id(\"shared-id\")\npermit (principal, action, resource in Namespace::\"{other}\");\n");
        let path = format!("policies/{other}/ingress/mine.cedar");
        let context = published(&[(path.as_str(), existing.as_str())]);
        let response = answer(&Policy::ingress("payments", "pci", &taken), &context);
        let (code, message) = refusal(&response);
        assert_eq!(code, CODE_INVALID, "{other}");
        assert!(
            message.contains("policy id `shared-id` is used twice"),
            "{other}: {message}"
        );
    }
}

#[test]
fn an_id_of_another_namespace_is_admitted_with_a_warning() {
    let context = published(&[(
        "policies/checkout/ingress/checkout.cedar",
        "@id(\"checkout-in\")\npermit (principal, action, resource in Namespace::\"checkout\");\n",
    )]);
    let squat = PCI.replace("payments-charge-from-pci", "checkout-refunds");
    let response = answer(&Policy::ingress("payments", "pci", &squat), &context);
    assert!(response.allowed, "{response:?}");
    let warnings = &response.warnings;
    assert!(
        warnings
            .iter()
            .any(|w| w.contains("policy id `checkout-refunds` starts with `checkout-`")),
        "{warnings:?}"
    );
}

#[test]
fn an_update_replaces_the_published_version_of_the_same_resource() {
    let context = published(&[("policies/payments/ingress/pci.cedar", PCI)]);
    let update = Policy::ingress("payments", "pci", PCI);
    assert!(review(&update.request("uid-2", "UPDATE"), &context).allowed);
    // Switching to dry-run moves the file; the old one must not count as a duplicate.
    let to_dry_run = Policy::ingress("payments", "pci", PCI).dry_run();
    assert!(review(&to_dry_run.request("uid-3", "UPDATE"), &context).allowed);
}

#[test]
fn a_dry_run_policy_is_checked_at_its_dry_run_path() {
    let response = answer(
        &Policy::ingress("payments", "trial", UNPARSABLE).dry_run(),
        &no_bundle(),
    );
    let (_, message) = refusal(&response);
    assert!(
        message.contains(" --> policies/payments/ingress/trial.dry-run.cedar:"),
        "{message}"
    );
}

#[test]
fn a_name_ending_in_dry_run_is_refused() {
    let response = answer(&Policy::ingress("payments", "pci.dry-run", PCI), &no_bundle());
    let (code, message) = refusal(&response);
    assert_eq!(code, CODE_MALFORMED);
    assert!(message.contains("set `spec.mode: dry-run` instead"), "{message}");
}

#[test]
fn a_policy_text_over_the_crd_limit_is_refused() {
    let big = format!(
        "{PCI}//{}\n",
        "x".repeat(crate::resources::cedar_policy::MAX_POLICY_BYTES)
    );
    let (code, message) = refusal(&answer(&Policy::ingress("payments", "big", &big), &no_bundle()));
    assert_eq!(code, CODE_INVALID);
    assert!(message.contains("over the limit"), "{message}");
}

#[test]
fn a_policy_that_would_put_its_namespace_over_its_budget_is_refused_and_an_update_is_not_counted_twice() {
    use crate::source::NAMESPACE_POLICIES;
    let paths: Vec<(String, String)> = (0..NAMESPACE_POLICIES)
        .map(|i| {
            let text = PCI.replace("payments-charge-from-pci", &format!("p{i}"));
            (format!("policies/payments/ingress/p{i}.cedar"), text)
        })
        .collect();
    let files: Vec<(&str, &str)> = paths.iter().map(|(p, t)| (p.as_str(), t.as_str())).collect();
    let context = published(&files);
    let one_more = Policy::ingress("payments", "one-more", PCI);
    let (code, message) = refusal(&answer(&one_more, &context));
    assert_eq!(code, CODE_INVALID);
    assert!(
        message.contains(&format!(
            "namespace `payments` would have {} CedarPolicies",
            NAMESPACE_POLICIES + 1
        )),
        "{message}"
    );
    let p7 = PCI.replace("payments-charge-from-pci", "p7");
    let update = Policy::ingress("payments", "p7", &p7);
    assert!(
        review(&update.request("uid-2", "UPDATE"), &context).allowed,
        "an update of one of them replaces it"
    );
    let checkout = PCI.replace("payments", "checkout");
    let elsewhere = answer(&Policy::ingress("checkout", "fine", &checkout), &context);
    let refused_for_size = elsewhere.status.is_some_and(|s| s.message.contains("would have"));
    assert!(!refused_for_size, "other namespaces have budgets of their own");
}

#[test]
fn deletes_connects_other_kinds_and_subresources_are_allowed_without_a_look() {
    let garbage = Some(json!({ "spec": "not a policy" }));
    for operation in ["DELETE", "CONNECT"] {
        let body = review_of("uid-d", operation, "payments", "pci", garbage.clone());
        let request = parse_request(body.to_string().as_bytes()).unwrap();
        assert_eq!(review(&request, &no_bundle()), AdmissionResponse::allow("uid-d"));
    }
    let mut body = review_of("uid-k", "CREATE", "payments", "pci", garbage.clone());
    body["request"]["kind"]["kind"] = json!("EgressAllowlist");
    let request = parse_request(body.to_string().as_bytes()).unwrap();
    assert!(review(&request, &no_bundle()).allowed);
    let mut body = review_of("uid-s", "UPDATE", "payments", "pci", garbage);
    body["request"]["subResource"] = json!("status");
    let request = parse_request(body.to_string().as_bytes()).unwrap();
    assert!(review(&request, &no_bundle()).allowed);
}

#[test]
fn an_unknown_operation_is_refused() {
    let body = Policy::ingress("payments", "pci", PCI).review("uid-u", "PATCH");
    let answer = review_json(body.to_string().as_bytes(), &no_bundle());
    let response = answer.response.unwrap();
    assert_eq!((response.uid.as_str(), refusal(&response).0), ("uid-u", CODE_MALFORMED));
}

#[test]
fn a_body_that_is_not_an_admission_review_v1_is_refused_echoing_any_uid() {
    let v1beta1 = json!({
        "apiVersion": "admission.k8s.io/v1beta1", "kind": "AdmissionReview",
        "request": { "uid": "uid-old" }
    });
    let cases = [
        (b"\x00\xffnot json".to_vec(), ""),
        (b"{}".to_vec(), ""),
        (
            json!({ "apiVersion": "admission.k8s.io/v1", "kind": "AdmissionReview" })
                .to_string()
                .into_bytes(),
            "",
        ),
        (v1beta1.to_string().into_bytes(), "uid-old"),
    ];
    for (body, uid) in cases {
        let answer = review_json(&body, &no_bundle());
        assert_eq!(
            (answer.api_version.as_str(), answer.kind.as_str()),
            ("admission.k8s.io/v1", "AdmissionReview")
        );
        let response = answer.response.unwrap();
        assert_eq!(response.uid, uid);
        let (code, message) = refusal(&response);
        assert_eq!(code, CODE_MALFORMED);
        assert!(
            message.starts_with("the webhook expects an AdmissionReview admission.k8s.io/v1"),
            "{message}"
        );
    }
}

#[test]
fn an_object_that_is_not_a_cedar_policy_is_refused_echoing_the_uid() {
    let mut object = Policy::ingress("payments", "pci", PCI).object();
    object["spec"]["direction"] = json!("sideways");
    let body = review_of("uid-o", "CREATE", "payments", "pci", Some(object));
    let response = review_json(body.to_string().as_bytes(), &no_bundle()).response.unwrap();
    assert_eq!(response.uid, "uid-o");
    let (code, message) = refusal(&response);
    assert_eq!(code, CODE_MALFORMED);
    assert!(message.starts_with("the object is not a CedarPolicy: "), "{message}");
    let no_object = review_of("uid-n", "CREATE", "payments", "pci", None);
    let response = review_json(no_object.to_string().as_bytes(), &no_bundle())
        .response
        .unwrap();
    assert_eq!((response.uid.as_str(), refusal(&response).0), ("uid-n", CODE_MALFORMED));
}

#[test]
fn the_answer_is_an_admission_review_v1_with_the_request_uid() {
    let body = Policy::ingress("payments", "reach", OUTSIDE).review("705ab4f5-6393-11e8-b7cc-42010a800002", "CREATE");
    let answer = serde_json::to_value(review_json(body.to_string().as_bytes(), &no_bundle())).unwrap();
    assert_eq!(answer["apiVersion"], "admission.k8s.io/v1");
    assert_eq!(answer["kind"], "AdmissionReview");
    assert_eq!(answer["response"]["uid"], "705ab4f5-6393-11e8-b7cc-42010a800002");
    assert_eq!(answer["response"]["allowed"], false);
    assert_eq!(answer["response"]["status"]["code"], 422);
    assert!(answer.get("request").is_none() && answer["response"].get("warnings").is_none());
}

#[test]
fn the_message_is_what_palisade_policy_validate_prints_for_the_same_file() {
    let dir = TempDir::new("same-message");
    std::fs::write(dir.path("mesh.yaml"), "trustDomain: \"shop.example\"\n").unwrap();
    let policies = dir.path("policies/payments/ingress");
    std::fs::create_dir_all(&policies).unwrap();
    let text = format!("{UNPARSABLE}\n{OUTSIDE}");
    std::fs::write(policies.join("bad.cedar"), &text).unwrap();
    // `palisade policy validate DIR` prints the Display of the diagnostics, paths under DIR.
    let root = dir.path(""); // ends in `/`
    let cli = palisade_policy::load(&root).unwrap_err().to_string();
    let cli = cli.replace(&root.display().to_string(), "");

    let response = answer(&Policy::ingress("payments", "bad", &text), &no_bundle());
    let (_, message) = refusal(&response);
    assert_eq!(message, format!("CedarPolicy payments/bad is invalid:\n{cli}"));
}

#[test]
fn problems_the_published_bundle_already_had_are_a_warning_not_a_refusal() {
    let context = published(&[("policies/web/ingress/old.cedar", UNPARSABLE)]);
    let response = answer(&Policy::ingress("payments", "pci", PCI), &context);
    assert!(response.allowed);
    let [warning] = response.warnings.as_slice() else {
        panic!("{response:?}")
    };
    assert!(warning.len() <= MAX_WARNING_BYTES);
    assert!(warning.contains("`policies/web/ingress/old.cedar`"), "{warning}");
}

#[test]
fn a_long_list_of_problems_is_cut_with_a_note_of_how_many_were_left_out() {
    let one = "permit (principal, action, resource in Namespace::\"payments\");\n";
    let text = one.repeat(400);
    let (_, message) = refusal(&answer(&Policy::ingress("payments", "many", &text), &no_bundle()));
    assert!(message.len() <= MAX_MESSAGE_BYTES, "{}", message.len());
    assert!(message.starts_with("CedarPolicy payments/many is invalid:\nerror: policy has no `@id`"));
    let note = message.rsplit("\n\n").next().unwrap();
    assert!(note.starts_with("... and "), "{note}");
    assert!(
        note.ends_with(" more problems not shown; run `palisade policy validate` on the bundle to see them all"),
        "{note}"
    );
}

#[test]
fn one_problem_too_long_for_the_message_is_cut_inside() {
    let line = format!(
        "permit (principal, action, resource in Namespace::\"payments\") when {{ \"{}\" == \"\" }};\n",
        "y".repeat(20_000)
    );
    let (_, message) = refusal(&answer(&Policy::ingress("payments", "long", &line), &no_bundle()));
    assert!(message.len() <= MAX_MESSAGE_BYTES, "{}", message.len());
    assert!(
        message.contains("\n\n... (cut short)"),
        "{}",
        &message[message.len() - 300..]
    );
    assert!(message.ends_with("; run `palisade policy validate` on the bundle to see them all"));
}
