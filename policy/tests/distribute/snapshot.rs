//! What one proxy receives of a bundle, and that a snapshot is checked before use.

use palisade_policy::snapshot::{for_workload, Snapshot, SnapshotDigest, SnapshotError};
use palisade_policy::{load, load_files, load_with_files, Bundle, BundleFiles};

use crate::support::{id, shop, CHECKOUT, FRONTEND, PAYMENTS, REVIEWS};

fn shop_files() -> (BundleFiles, Bundle) {
    load_with_files(shop()).unwrap_or_else(|errors| panic!("{errors}"))
}

#[test]
fn a_bundle_from_memory_is_the_bundle_from_its_directory() {
    let files = BundleFiles::read_dir(shop()).unwrap();
    let from_memory = load_files(&files).unwrap_or_else(|errors| panic!("{errors}"));
    let from_dir = load(shop()).unwrap();
    assert_eq!(from_memory.digest(), from_dir.digest());
    assert_eq!(shop_files().0, files, "what was validated is what is returned");
    assert!(
        !files.contains("tests/shop.yaml"),
        "test files are not part of the bundle"
    );
}

#[test]
fn diagnostics_of_a_bundle_from_memory_name_paths_inside_the_bundle() {
    let (mut files, _) = shop_files();
    files.insert("policies/web/egress/broken.cedar", "@id(\"x\")\npermit (");
    let errors = load_files(&files).unwrap_err();
    assert!(
        errors.to_string().contains(" --> policies/web/egress/broken.cedar:2:"),
        "{errors}"
    );
}

/// What one workload's sidecar must and must not receive.
struct Row {
    workload: &'static str,
    /// Policies it decides with: its namespace's egress, the ingress of what it serves.
    receives: &'static [&'static str],
    /// Other namespaces' policies.
    not: &'static [&'static str],
    /// The hosts of the egress rules that select it.
    egress_hosts: &'static [&'static str],
}

const TABLE: &[Row] = &[
    Row {
        workload: FRONTEND,
        receives: &[
            "web-frontend-calls-payments",
            "web-frontend-places-orders",
            "web-frontend-readable",
        ],
        not: &[
            "payments-forbid-non-pci",
            "checkout-takes-orders-from-web",
            "reviews-readable-from-web",
        ],
        egress_hosts: &[],
    },
    Row {
        workload: PAYMENTS,
        receives: &["payments-charge-from-pci", "payments-forbid-non-pci"],
        not: &[
            "web-frontend-calls-payments",
            "checkout-charges-payments",
            "reviews-never-calls-payments",
        ],
        egress_hosts: &[],
    },
    Row {
        workload: CHECKOUT,
        receives: &[
            "checkout-charges-payments",
            "checkout-calls-stripe",
            "checkout-takes-orders-from-web",
        ],
        not: &["payments-charge-from-pci", "web-frontend-readable"],
        egress_hosts: &["api.stripe.com"],
    },
    Row {
        workload: REVIEWS,
        receives: &[
            "reviews-never-calls-payments",
            "reviews-readable-from-web",
            "reviews-no-debug-header",
        ],
        not: &["web-frontend-calls-reviews", "payments-forbid-non-pci"],
        egress_hosts: &[],
    },
];

#[test]
fn each_workload_receives_its_egress_the_ingress_it_serves_and_its_egress_rules() {
    let (files, bundle) = shop_files();
    for row in TABLE {
        let workload = row.workload;
        let mine = load_files(&for_workload(&files, &bundle, &id(workload)))
            .unwrap_or_else(|errors| panic!("{workload}: its snapshot does not load:\n{errors}"));
        for policy in row.receives {
            assert!(mine.policy(policy).is_some(), "{workload} lacks `{policy}`");
        }
        for policy in row.not {
            assert!(mine.policy(policy).is_none(), "{workload} was sent `{policy}`");
        }
        let got: Vec<String> = mine.egress().rules().iter().map(|r| r.host().to_string()).collect();
        assert_eq!(got, row.egress_hosts, "{workload}: egress rules");
        assert_eq!(
            mine.registry(),
            bundle.registry(),
            "{workload}: the registry comes whole"
        );
        assert_eq!(mine.mesh(), bundle.mesh());
    }
}

#[test]
fn no_egress_yaml_is_sent_when_no_rule_selects_the_workload() {
    let (files, bundle) = shop_files();
    assert!(!for_workload(&files, &bundle, &id(FRONTEND)).contains("egress.yaml"));
    let checkout = for_workload(&files, &bundle, &id(CHECKOUT));
    assert!(checkout.get("egress.yaml").unwrap().contains("api.stripe.com"));
}

#[test]
fn a_workload_the_registry_does_not_list_gets_the_registry_and_no_policy() {
    let (files, bundle) = shop_files();
    let stranger = for_workload(&files, &bundle, &id("spiffe://shop.example/ns/web/sa/stranger"));
    let paths: Vec<&str> = stranger.paths().collect();
    assert_eq!(paths, ["mesh.yaml", "services.yaml", "workloads.yaml"]);
    assert!(load_files(&stranger).unwrap().policies().is_empty());
}

#[test]
fn a_workload_not_selected_by_a_rule_its_policies_name_still_gets_a_valid_bundle() {
    let dir = crate::support::shop_copy();
    let workloads = std::fs::read_to_string(dir.path().join("workloads.yaml")).unwrap();
    let clerk = "spiffe://shop.example/ns/checkout/sa/clerk";
    std::fs::write(
        dir.path().join("workloads.yaml"),
        format!("{workloads}\n- spiffeId: {clerk}\n"),
    )
    .unwrap();
    let (files, bundle) = load_with_files(dir.path()).unwrap_or_else(|errors| panic!("{errors}"));
    let mine = load_files(&for_workload(&files, &bundle, &id(clerk))).unwrap();
    assert!(mine.policy("checkout-calls-stripe").is_some(), "its namespace's egress");
    assert!(
        mine.egress().rules().is_empty(),
        "not PCI: Stripe is not allowlisted for it"
    );
}

#[test]
fn a_snapshot_is_loaded_only_when_its_files_match_its_digest() {
    let (files, bundle) = shop_files();
    let sent = Snapshot::new(7, for_workload(&files, &bundle, &id(PAYMENTS)));
    assert_eq!(sent.load().unwrap().policies().len(), 2);

    let mut tampered: Vec<(String, String)> = sent.files().iter().map(|(p, t)| (p.to_owned(), t.to_owned())).collect();
    let pci = tampered.iter_mut().find(|(p, _)| p.ends_with("pci.cedar")).unwrap();
    pci.1 = pci.1.replace("forbid", "permit");
    let received = Snapshot::received(7, &sent.digest().to_string(), tampered).unwrap();
    let error = received.load().unwrap_err();
    assert!(matches!(error, SnapshotError::DigestMismatch { .. }), "{error}");
    assert!(error.to_string().contains("the last good policy stays"), "{error}");
}

#[test]
fn a_snapshot_that_is_not_a_valid_bundle_is_refused_with_its_diagnostics() {
    let (files, bundle) = shop_files();
    let mut mine = for_workload(&files, &bundle, &id(FRONTEND));
    mine.insert(
        "policies/web/egress/frontend-egress.cedar",
        "permit (principal, action, resource);",
    );
    let error = Snapshot::new(2, mine).load().unwrap_err();
    assert!(matches!(error, SnapshotError::Invalid(_)), "{error}");
    assert!(
        error.to_string().contains("policies/web/egress/frontend-egress.cedar"),
        "{error}"
    );

    let mut escaping = BundleFiles::new();
    escaping.insert("mesh.yaml", "trustDomain: shop.example\n");
    escaping.insert("../../etc/passwd", "root");
    let error = Snapshot::new(3, escaping).load().unwrap_err();
    assert!(error.to_string().contains("unexpected directory `..`"), "{error}");
}

#[test]
fn a_malformed_digest_is_refused_before_anything_is_read() {
    let error = Snapshot::received(1, "md5:abc", Vec::new()).unwrap_err();
    assert!(matches!(error, SnapshotError::InvalidDigest { .. }), "{error}");
    let digest: SnapshotDigest = SnapshotDigest::of(&BundleFiles::new());
    assert!(Snapshot::received(1, &digest.to_string(), Vec::new()).is_ok());
}

#[test]
fn the_reduced_egress_yaml_still_selects_the_workload() {
    let (files, bundle) = shop_files();
    let mine = load_files(&for_workload(&files, &bundle, &id(CHECKOUT))).unwrap();
    let checkout = mine.registry().workload(CHECKOUT).unwrap();
    let [stripe] = mine.egress().rules() else {
        panic!("one rule")
    };
    assert!(stripe.workloads().matches(checkout));
    assert_eq!(stripe, &bundle.egress().rules()[0], "the same rule, re-serialized");
}
