//! The canonical form: what the control plane publishes, equal for equal bundles
//! whichever source (directory or Kubernetes) they came from.

use palisade_policy::{canonical, load_canonical, load_files, load_with_files, BundleFiles};

use crate::support::{shop, TempBundle};

fn shop_files() -> BundleFiles {
    load_with_files(shop()).unwrap().0
}

#[test]
fn the_shop_means_the_same_in_canonical_form() {
    let files = shop_files();
    let (canonical_files, bundle) = load_canonical(&files).unwrap();
    assert_eq!(bundle.digest(), load_files(&files).unwrap().digest());
    assert_eq!(
        canonical(&canonical_files),
        canonical_files,
        "canonical twice is canonical once"
    );
    for (path, text) in canonical_files.iter() {
        if path.ends_with(".cedar") {
            assert_eq!(Some(text), files.get(path), "{path} is kept verbatim");
        } else {
            assert!(!text.contains('#'), "{path}: comments are dropped:\n{text}");
        }
    }
}

#[test]
fn entry_order_and_formatting_do_not_matter() {
    let a = TempBundle::new()
        .write("mesh.yaml", "trustDomain: td\n")
        .write(
            "workloads.yaml",
            "- spiffeId: spiffe://td/ns/b/sa/b\n- spiffeId: spiffe://td/ns/a/sa/a\n  labels: {x: y}\n",
        )
        .write(
            "services.yaml",
            "- {namespace: b, name: b, hosts: [b.b.svc], ports: [81, 80], servedBy: [spiffe://td/ns/b/sa/b], endpoints: ['10.0.0.2:1', '10.0.0.1:1']}\n\
             - {namespace: a, name: a, hosts: [a.a.svc], ports: [80], servedBy: [spiffe://td/ns/a/sa/a]}\n",
        );
    let b = TempBundle::new()
        .write("mesh.yaml", "# the mesh\noutboundMode: REGISTRY_ONLY\ntrustDomain: td\n")
        .write(
            "workloads.yaml",
            "- spiffeId: spiffe://td/ns/a/sa/a\n  labels:\n    x: y\n- spiffeId: spiffe://td/ns/b/sa/b\n",
        )
        .write(
            "services.yaml",
            "- namespace: a\n  name: a\n  hosts: [a.a.svc]\n  ports: [80]\n  servedBy: [spiffe://td/ns/a/sa/a]\n\
             - namespace: b\n  name: b\n  hosts: [b.b.svc]\n  ports: [80, 81]\n  servedBy: [spiffe://td/ns/b/sa/b]\n  endpoints: ['10.0.0.1:1', '10.0.0.2:1']\n",
        )
        .write("egress.yaml", "# nothing leaves yet\n[]\n");
    let (a, _) = load_canonical(&load_with_files(a.path()).unwrap().0).unwrap();
    let (b, _) = load_canonical(&load_with_files(b.path()).unwrap().0).unwrap();
    assert_eq!(a, b);
    assert!(!b.contains("egress.yaml"), "an empty list is left out");
}

#[test]
fn every_policy_of_a_dry_run_file_is_dry_run() {
    use palisade_authz::Mode;
    let bundle = TempBundle::shop()
        .write(
            "policies/web/egress/trial.dry-run.cedar",
            "@id(\"web-trial\")\nforbid (principal in Namespace::\"web\", action, resource in Namespace::\"reviews\");\n",
        )
        .write(
            "policies/web/egress/trial-enforced.cedar",
            "@id(\"web-trial-enforced\")\nforbid (principal in Namespace::\"web\", action, resource in Namespace::\"payments\");\n",
        );
    let bundle = palisade_policy::load(bundle.path()).unwrap();
    assert_eq!(bundle.policy("web-trial").unwrap().mode(), Mode::DryRun);
    assert_eq!(bundle.policy("web-trial-enforced").unwrap().mode(), Mode::Enforce);
}
