//! `palisade demo`, as a newcomer runs it: one process that starts the whole
//! mesh, plays the shop's story, checks every outcome itself and exits 0 —
//! leaving a report behind and no process running.

use std::path::Path;

use crate::support::{palisade, s};

/// The story's lines: who → whom, what, the decision column, the status.
const STEPS: [(&str, &str, &str, &str); 15] = [
    (
        "frontend → reviews",
        "GET /reviews/1 ",
        "egress allow  ingress allow",
        "200",
    ),
    (
        "frontend → payments",
        "POST /charge",
        "egress allow  ingress deny",
        "403",
    ),
    (
        "checkout → payments",
        "POST /charge",
        "egress allow  ingress allow",
        "200",
    ),
    (
        "checkout → payments",
        "DELETE /charge",
        "egress deny   ingress —",
        "403",
    ),
    ("reviews → payments", "POST /charge", "egress deny   ingress —", "403"),
    (
        "frontend → reviews",
        "(x-debug: 1)",
        "egress allow  ingress dry-run deny",
        "200",
    ),
    ("checkout → api.stripe.com", "CONNECT", "egress allowlisted", "200"),
    ("frontend → api.stripe.com", "CONNECT", "egress BlackHole", "403"),
    ("frontend → unlisted.example", "GET /", "egress BlackHole", "403"),
    ("checkout → unlisted.example", "GET /", "egress BlackHole", "403"),
    ("frontend → api.stripe.com", "CONNECT", "egress Passthrough", "200"),
    ("frontend → unlisted.example", "GET /", "egress Passthrough", "200"),
    (
        "frontend → reviews",
        "(x-debug: 1)",
        "egress allow  ingress deny",
        "403",
    ),
    (
        "frontend → reviews",
        "GET /reviews/1 ",
        "egress allow  ingress allow",
        "200",
    ),
    (
        "frontend → reviews",
        "GET /reviews/1 ",
        "refused at the mTLS handshake",
        "502",
    ),
];

/// The processes the demo wrote to DIR/pids that still run this binary.
fn still_running(dir: &Path) -> Vec<String> {
    let pids = std::fs::read_to_string(dir.join("pids")).unwrap();
    let exe = env!("CARGO_BIN_EXE_palisade");
    pids.lines()
        .filter(|line| {
            let pid = line.split_whitespace().next().unwrap();
            // On Linux /proc tells; a pid reused by another program does not count.
            std::fs::read(format!("/proc/{pid}/cmdline"))
                .is_ok_and(|cmdline| String::from_utf8_lossy(&cmdline).starts_with(exe))
        })
        .map(str::to_owned)
        .collect()
}

#[test]
fn the_demo_plays_every_step_reports_and_leaves_nothing_running() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("demo");
    // A previous run's state is wiped, not mixed in.
    std::fs::create_dir_all(dir.join("ca")).unwrap();
    std::fs::write(dir.join("ca/root.pem"), "stale").unwrap();

    let out = palisade().args(["demo", "--dir", s(&dir)]).output().unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(0), "stdout:\n{stdout}\nstderr:\n{stderr}");

    // Every step's line, in order, with its decision and status.
    let lines: Vec<&str> = stdout.lines().filter(|l| l.starts_with('✓')).collect();
    assert_eq!(lines.len(), STEPS.len(), "{stdout}");
    for (line, (who, what, decision, status)) in lines.iter().zip(STEPS) {
        let fields = format!(" {status} ");
        assert!(
            line.contains(who) && line.contains(what) && line.contains(decision) && line.contains(&fields),
            "expected `{who} {what} {decision} {status}`, got: {line}"
        );
    }
    // The deciding policies come from the audit log.
    for policy in [
        "payments-forbid-non-pci",
        "reviews-never-calls-payments",
        "reviews-no-debug-header",
    ] {
        assert!(stdout.contains(policy), "{policy} is named: {stdout}");
    }
    assert!(stdout.contains("chain intact"), "{stdout}");
    assert!(
        stdout.contains("egress-only mismatch"),
        "policy analyze's table: {stdout}"
    );

    // The report shows the denials, the external traffic and the intact chain.
    let html = std::fs::read_to_string(dir.join("report.html")).unwrap();
    for expected in [
        "payments-forbid-non-pci",
        "reviews-never-calls-payments",
        "unlisted.example:80 (BlackHole)",
        "unlisted.example:80 (Passthrough)",
        "Hash chain intact",
    ] {
        assert!(html.contains(expected), "report.html shows {expected}");
    }
    let md = std::fs::read_to_string(dir.join("report.md")).unwrap();
    assert!(md.contains("| BlackHole | 3 |"), "{md}");
    assert!(
        !std::fs::read_to_string(dir.join("ca/root.pem"))
            .unwrap()
            .contains("stale"),
        "a new CA replaced the old run's"
    );

    // The bundle the demo ran is examples/shop, file for file.
    let files = |root: &Path| {
        let mut found = Vec::new();
        let mut todo = vec![root.to_owned()];
        while let Some(d) = todo.pop() {
            for entry in std::fs::read_dir(d).unwrap() {
                let path = entry.unwrap().path();
                if path.is_dir() {
                    todo.push(path);
                } else {
                    found.push(path.strip_prefix(root).unwrap().to_owned());
                }
            }
        }
        found.sort();
        found
    };
    let shop = Path::new(env!("CARGO_MANIFEST_DIR")).join("examples/shop");
    assert_eq!(
        files(&dir.join("shop")),
        files(&shop),
        "the demo embeds every file of examples/shop"
    );

    // Nothing is left running.
    let pids = std::fs::read_to_string(dir.join("pids")).unwrap();
    assert_eq!(
        pids.lines().count(),
        11,
        "CA, audit, control plane, 4 apps, 4 sidecars: {pids}"
    );
    assert_eq!(still_running(&dir), Vec::<String>::new(), "every child was stopped");
}

/// `palisade demo app` is still the small app the benchmarks put behind a sidecar.
#[test]
fn demo_app_is_still_a_subcommand() {
    let out = palisade().args(["demo", "app", "--help"]).output().unwrap();
    assert!(out.status.success());
    assert!(String::from_utf8_lossy(&out.stdout).contains("--listen"));
    let out = palisade().args(["demo", "--keep-running", "app"]).output().unwrap();
    assert_eq!(
        out.status.code(),
        Some(2),
        "demo's own flags do not mix with its subcommand"
    );
}
