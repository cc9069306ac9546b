//! Leaving the mesh: allowlisted hosts pass, unknown hosts are BlackHole
//! (`REGISTRY_ONLY`) or Passthrough (`ALLOW_ANY`), a CONNECT whose TLS SNI names
//! another host is refused — and every one of them lands in the audit log.
//!
//! There is no internet here: `api.stripe.com`, `status.partner.example` and
//! `unlisted.example` are local servers the sidecars reach through `--resolve`.

use std::time::Duration;

use crate::support::app::App;
use crate::support::client::call;
use crate::support::eventually;
use crate::support::external::{https_via_connect, TlsHost, Tunnel};
use crate::support::mesh::{Mesh, Options};

const CHECKOUT: &str = "spiffe://shop.example/ns/checkout/sa/checkout";
const FRONTEND: &str = "spiffe://shop.example/ns/web/sa/frontend";

/// frontend may GET the partner's status page over plain HTTP.
const PARTNER_EGRESS: &str = "- host: api.stripe.com
  ports: [443]
  protocol: tls
  workloads:
    namespaces: [checkout]
    labels: { pci: \"true\" }
- host: status.partner.example
  ports: [80]
  protocol: http
  workloads:
    namespaces: [web]
";
const PARTNER_POLICY: &str = "@id(\"frontend-reads-partner-status\")
permit (
  principal == Workload::\"spiffe://shop.example/ns/web/sa/frontend\",
  action == Action::\"GET\",
  resource == ExternalHost::\"status.partner.example:80\"
);
";

/// The external records of the audit log, as `audit query --kind K -o json` prints them.
fn external_records(mesh: &Mesh, kind: &str) -> Vec<serde_json::Value> {
    let out = mesh.audit_cli(&["query", "--kind", kind, "--output", "json"]);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let all: Vec<serde_json::Value> = serde_json::from_slice(&out.stdout).unwrap();
    all.into_iter().map(|r| r["record"]["event"].clone()).collect()
}

/// Waits until the audit log holds a record of `kind` for `host` from `workload`.
async fn audited(mesh: &Mesh, kind: &str, workload: &str, host: &str) -> serde_json::Value {
    eventually(
        Duration::from_secs(20),
        &format!("a {kind} record for {workload} → {host}"),
        || {
            external_records(mesh, kind)
                .into_iter()
                .find(|e| e["workload"] == workload && e["host"] == host)
        },
    )
    .await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn allowlisted_blackhole_passthrough_and_fronting_each_audited() {
    let ip = std::net::IpAddr::from([127, 0, 0, 200]);
    let stripe = TlsHost::start("api.stripe.com", ip).await;
    let partner = App::start_on("partner", ip).await;
    let unlisted = App::start_on("unlisted", ip).await;
    let resolve_stripe = format!("api.stripe.com={}", stripe.addr);
    let resolve_partner = format!("status.partner.example={}", partner.addr);
    let resolve_unlisted = format!("unlisted.example={}", unlisted.addr);
    let frontend_flags = [
        "--resolve",
        &resolve_partner,
        "--resolve",
        &resolve_unlisted,
        "--resolve",
        &resolve_stripe,
    ];
    let checkout_flags = ["--resolve", &resolve_stripe, "--resolve", &resolve_unlisted];
    let mesh = Mesh::start(Options {
        flags: &[("frontend", &frontend_flags), ("checkout", &checkout_flags)],
        files: &[
            ("egress.yaml", PARTNER_EGRESS),
            ("policies/web/egress/partner.cedar", PARTNER_POLICY),
        ],
        only: &["frontend", "checkout"],
        audit: true,
        ..Options::default()
    })
    .await;
    let frontend = mesh.workload("frontend").outbound;
    let checkout = mesh.workload("checkout").outbound;

    // Allowlisted over TLS: checkout's CONNECT to Stripe, SNI = the target, end to end.
    match https_via_connect(checkout, "api.stripe.com:443", "api.stripe.com", &stripe.cert).await {
        Tunnel::Answered(response) => assert!(response.ends_with("hello from api.stripe.com"), "{response}"),
        other => panic!("checkout → api.stripe.com should pass: {other:?}"),
    }
    let record = audited(&mesh, "allowlisted", CHECKOUT, "api.stripe.com").await;
    assert_eq!(record["sni"], "api.stripe.com");
    assert_eq!(record["port"], 443);

    // Allowlisted over HTTP: frontend → the partner's status page, by Host.
    let reply = call(frontend, "GET", "status.partner.example", "/health", &[]);
    assert_eq!(reply.status, 200, "{}", reply.body);
    assert_eq!(partner.count(), 1);
    audited(&mesh, "allowlisted", FRONTEND, "status.partner.example").await;

    // Domain fronting: an allowed CONNECT target with another name in the SNI.
    let before = stripe.connections();
    match https_via_connect(checkout, "api.stripe.com:443", "evil.example", &stripe.cert).await {
        Tunnel::HandshakeFailed(why) => eprintln!("fronted handshake refused: {why}"),
        other => panic!("a mismatched SNI must be refused: {other:?}"),
    }
    assert_eq!(stripe.connections(), before, "nothing reached the host");
    let fronted = audited(&mesh, "blackhole", CHECKOUT, "api.stripe.com").await;
    assert_eq!(fronted["sni"], "evil.example");

    // BlackHole: Stripe is allowlisted for checkout only; unlisted.example for nobody.
    match https_via_connect(frontend, "api.stripe.com:443", "api.stripe.com", &stripe.cert).await {
        Tunnel::Refused { status, body } => {
            assert_eq!(status, 403, "{body}");
            assert!(body.contains(r#""side":"egress""#), "{body}");
        }
        other => panic!("frontend → api.stripe.com must be BlackHole: {other:?}"),
    }
    audited(&mesh, "blackhole", FRONTEND, "api.stripe.com").await;
    let reply = call(frontend, "GET", "unlisted.example", "/", &[]);
    assert_eq!(reply.status, 403, "{}", reply.body);
    assert_eq!(unlisted.count(), 0, "a BlackHole never connects");
    audited(&mesh, "blackhole", FRONTEND, "unlisted.example").await;

    // ALLOW_ANY: the same unknown host passes, flagged as Passthrough.
    std::fs::write(
        mesh.bundle.join("mesh.yaml"),
        "trustDomain: shop.example\noutboundMode: ALLOW_ANY\n",
    )
    .unwrap();
    eventually(
        Duration::from_secs(20),
        "Passthrough once ALLOW_ANY is in force",
        || (call(frontend, "GET", "unlisted.example", "/", &[]).status == 200).then_some(()),
    )
    .await;
    assert!(unlisted.count() >= 1);
    let passed = audited(&mesh, "passthrough", FRONTEND, "unlisted.example").await;
    assert_eq!(passed["port"], 80);
    match https_via_connect(frontend, "api.stripe.com:443", "api.stripe.com", &stripe.cert).await {
        Tunnel::Answered(_) => {}
        other => panic!("frontend → api.stripe.com is Passthrough under ALLOW_ANY: {other:?}"),
    }
    audited(&mesh, "passthrough", FRONTEND, "api.stripe.com").await;

    // The log that recorded all this is intact.
    let out = mesh.audit_cli(&["verify"]);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stdout));
}
