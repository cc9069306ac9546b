//! The digest names a bundle's content: stable across loads and directories,
//! different as soon as anything in it changes.

use crate::support::{shop, TempBundle};

fn digest(bundle: &TempBundle) -> palisade_policy::Digest {
    palisade_policy::load(bundle.path())
        .unwrap_or_else(|e| panic!("{e}"))
        .digest()
}

#[test]
fn the_digest_is_stable_across_loads_and_directories() {
    let first = palisade_policy::load(shop()).unwrap().digest();
    let second = palisade_policy::load(shop()).unwrap().digest();
    assert_eq!(first, second);
    assert_eq!(
        digest(&TempBundle::shop()),
        first,
        "a copy elsewhere has the same digest"
    );
    let shown = first.to_string();
    assert!(shown.starts_with("sha256:") && shown.len() == 7 + 64, "{shown}");
}

#[test]
fn the_digest_changes_when_a_policy_changes() {
    let bundle = TempBundle::shop();
    let before = digest(&bundle);
    let path = "policies/payments/ingress/pci.cedar";
    let text = std::fs::read_to_string(bundle.path().join(path)).unwrap();
    let bundle = bundle.write(path, &text.replace("/charge", "/charges"));
    assert_ne!(digest(&bundle), before);
}

#[test]
fn the_digest_changes_with_the_mode_the_registry_and_the_allowlist() {
    let base = digest(&TempBundle::shop());
    let changes: &[(&str, &str, &str)] = &[
        (
            "policies/web/egress/frontend-egress.cedar",
            "@id(\"web-frontend-calls-payments\")",
            "@id(\"web-frontend-calls-payments\")\n@mode(\"dry-run\")",
        ),
        ("workloads.yaml", "{ app: reviews }", "{ app: reviews, team: ugc }"),
        ("services.yaml", "127.0.0.1:15004", "127.0.0.1:15005"),
        ("egress.yaml", "ports: [443]", "ports: [443, 8443]"),
        ("mesh.yaml", "REGISTRY_ONLY", "ALLOW_ANY"),
    ];
    for (path, from, to) in changes {
        let bundle = TempBundle::shop();
        let text = std::fs::read_to_string(bundle.path().join(path)).unwrap();
        assert!(text.contains(from), "{path} has no `{from}`");
        let bundle = bundle.write(path, &text.replace(from, to));
        assert_ne!(digest(&bundle), base, "{path}: `{from}` → `{to}`");
    }
}

#[test]
fn the_order_of_registry_entries_does_not_matter() {
    let bundle = TempBundle::new();
    let before = digest(&bundle);
    let reordered = crate::support::WORKLOADS.lines().collect::<Vec<_>>();
    let (first, second) = reordered.split_at(2);
    let bundle = bundle.write("workloads.yaml", &(second.join("\n") + "\n" + &first.join("\n") + "\n"));
    assert_eq!(digest(&bundle), before);
}
