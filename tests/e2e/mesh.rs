//! The sidecar story end to end: real CA, control plane, sidecars and apps as
//! separate processes, real mTLS between sidecars, real Cedar decisions on both
//! sides of every call.

use std::time::{Duration, Instant};

use crate::support::client::{call, grpc_request, h2, raw};
use crate::support::mesh::{admin_get, Mesh, Options};
use crate::support::{eventually, ok};

const FRONTEND: &str = "spiffe://shop.example/ns/web/sa/frontend";
const REVIEWS: &str = "spiffe://shop.example/ns/reviews/sa/reviews";
const PAYMENTS: &str = "spiffe://shop.example/ns/payments/sa/payments";

/// Allowed calls pass with the verified caller in XFCC; egress denials never
/// leave the caller's sidecar; ingress denials (the PCI case) never reach the app.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn both_sides_decide_every_call() {
    let mesh = Mesh::shop().await;
    let frontend = mesh.workload("frontend").outbound;
    let reviews_app = &mesh.workload("reviews").app;
    let payments_app = &mesh.workload("payments").app;

    // Allowed by frontend's egress and reviews' ingress. A spoofed XFCC, even one
    // the Connection header names, is replaced by the verified identity.
    let reply = call(
        frontend,
        "GET",
        "reviews.shop:8080",
        "/reviews/./42//stars?x=1",
        &[
            (
                "x-forwarded-client-cert",
                "By=x;URI=spiffe://shop.example/ns/checkout/sa/checkout",
            ),
            ("x-palisade-peer", "forged"),
            ("x-request-id", "call-1"),
        ],
    );
    assert_eq!(reply.status, 200, "{}", reply.body);
    let seen = reviews_app.seen().pop().unwrap();
    assert_eq!(seen.target, "/reviews/42/stars?x=1", "the app gets the canonical path");
    assert_eq!(
        seen.header("x-forwarded-client-cert"),
        Some(format!("By={REVIEWS};URI={FRONTEND}").as_str())
    );
    assert_eq!(seen.header("x-palisade-peer"), None);
    assert_eq!(seen.header("x-request-id"), Some("call-1"));
    assert_eq!(reply.header("x-request-id"), Some("call-1"));

    // Egress deny: reviews may never call payments; nothing leaves reviews' sidecar.
    let before = payments_app.count();
    let reply = call(
        mesh.workload("reviews").outbound,
        "POST",
        "payments.shop:8080",
        "/charge",
        &[],
    );
    assert_eq!(reply.status, 403);
    let body = reply.json();
    assert_eq!(body["decision"], "deny");
    assert_eq!(body["side"], "egress");
    assert!(body["requestId"].as_str().is_some_and(|id| !id.is_empty()));
    assert!(
        !mesh.metrics("payments").contains(&format!("source=\"{REVIEWS}\"")),
        "payments' sidecar saw nothing"
    );

    // Ingress deny, the PCI case: frontend's egress allows, payments' ingress refuses.
    let reply = call(frontend, "POST", "payments.shop:8080", "/charge", &[]);
    assert_eq!(reply.status, 403, "{}", reply.body);
    assert_eq!(reply.json()["side"], "ingress");
    assert!(!reply.body.contains("pci"), "no policy text leaks: {}", reply.body);
    assert_eq!(payments_app.count(), before, "payments' app received nothing");

    // checkout carries pci=true: allowed on both sides; DELETE is not.
    let checkout = mesh.workload("checkout").outbound;
    assert_eq!(call(checkout, "POST", "payments.shop:8080", "/charge", &[]).status, 200);
    assert_eq!(
        call(checkout, "DELETE", "payments.shop:8080", "/charge", &[]).status,
        403
    );
    assert_eq!(payments_app.count(), before + 1);

    // Unknown destinations are denied at egress for now.
    assert_eq!(call(frontend, "GET", "unknown.example", "/", &[]).status, 403);

    // Bad input from the app: refused at the caller's sidecar, nothing forwarded.
    let count = reviews_app.count();
    for (request, status) in [
        (&b"GET /a/../../etc HTTP/1.1\r\nHost: reviews.shop:8080\r\nConnection: close\r\n\r\n"[..], 400),
        (b"GET /a%2Fb HTTP/1.1\r\nHost: reviews.shop:8080\r\nConnection: close\r\n\r\n", 400),
        (b"GET / HTTP/1.1\r\nHost: reviews.shop:8080\r\nHost: payments.shop\r\nConnection: close\r\n\r\n", 400),
        (b"POST / HTTP/1.1\r\nHost: reviews.shop:8080\r\nContent-Length: 3\r\nTransfer-Encoding: chunked\r\nConnection: close\r\n\r\n0\r\n\r\n", 400),
    ] {
        let reply = raw(frontend, request);
        assert_eq!(reply.status, status, "{}", String::from_utf8_lossy(request));
    }
    let huge = format!(
        "GET / HTTP/1.1\r\nHost: reviews.shop:8080\r\nx-big: {}\r\nConnection: close\r\n\r\n",
        "a".repeat(100 * 1024)
    );
    assert_eq!(raw(frontend, huge.as_bytes()).status, 431);
    assert_eq!(reviews_app.count(), count);

    // HTTP/2 from the app works the same way.
    let request = http::Request::get("http://reviews.shop:8080/reviews")
        .body(http_body_util::Full::new(bytes::Bytes::new()))
        .unwrap();
    assert_eq!(h2(frontend, request).await.status, 200);

    // Metrics count decisions by side.
    let metrics = mesh.metrics("payments");
    assert!(
        metrics.contains(&format!(
            "source=\"{FRONTEND}\",destination=\"payments/payments\",side=\"ingress\",decision=\"deny\",status=\"403\""
        )),
        "{metrics}"
    );
    let config = mesh.config("payments");
    assert_eq!(config["id"], PAYMENTS);
    assert!(config["snapshot"]["digest"].as_str().unwrap().starts_with("sha256:"));
}

/// gRPC passes end to end over h2: the path policies see is `/pkg.Service/Method`.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn grpc_passes_end_to_end() {
    let grpc_policy = r#"@id("reviews-grpc-list-from-web")
permit (
  principal in Namespace::"web",
  action == Action::"POST",
  resource == Service::"reviews/reviews"
)
when { context.path == "/reviews.v1.Reviews/List" };
"#;
    let mesh = Mesh::start(Options {
        files: &[("policies/reviews/ingress/grpc.cedar", grpc_policy)],
        only: &["frontend", "reviews"],
        ..Options::default()
    })
    .await;
    let frontend = mesh.workload("frontend").outbound;
    let reply = h2(frontend, grpc_request("reviews.shop:8080", "/reviews.v1.Reviews/List")).await;
    assert_eq!(reply.status, 200, "{}", reply.body);
    let trailers = reply.trailers.expect("gRPC trailers come back");
    assert_eq!(trailers.get("grpc-status").unwrap(), "0");
    let seen = mesh.workload("reviews").app.seen().pop().unwrap();
    assert_eq!(seen.target, "/reviews.v1.Reviews/List");

    // Another method of the same service is not permitted.
    let reply = h2(
        frontend,
        grpc_request("reviews.shop:8080", "/reviews.v1.Reviews/Delete"),
    )
    .await;
    assert_eq!(reply.status, 403);
}

/// The inbound port accepts only mesh peers with valid SVIDs of our trust bundle.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_inbound_port_refuses_unauthenticated_peers() {
    let mesh = Mesh::start(Options {
        only: &["frontend", "reviews"],
        ..Options::default()
    })
    .await;
    let inbound = mesh.workload("reviews").inbound;
    let app = &mesh.workload("reviews").app;

    // Plaintext HTTP: no HTTP answer, nothing reaches the app.
    let reply = raw(
        inbound,
        b"GET / HTTP/1.1\r\nHost: reviews.shop:8080\r\nConnection: close\r\n\r\n",
    );
    assert_eq!(reply.status, 0, "plaintext got an HTTP answer: {}", reply.body);

    // TLS without a client certificate, with one from another CA, and with an
    // expired one of our own CA (1 s lifetime, tried after the 30 s skew); a valid
    // one of our CA is the control that shows the probe itself can get through.
    let stranger_ca = crate::support::CaDirFixture::init("shop.example");
    let stranger = issued(stranger_ca.path(), FRONTEND, "1h");
    let valid = issued(mesh.ca.path(), FRONTEND, "1h");
    let expired = issued(mesh.ca.path(), FRONTEND, "1s");
    let expiry = std::time::SystemTime::now() + Duration::from_secs(1);
    let trust = palisade_ca::verify::Trust::new(mesh.ca.bundle(), Default::default());
    let resolver = |svid: &palisade_ca::Svid| palisade_ca::tls::SvidResolver::with(svid).unwrap();
    let cases = [
        ("no client certificate", palisade_ca::tls::SvidResolver::empty(), false),
        ("a certificate from another CA", resolver(&stranger), false),
        ("an expired certificate", resolver(&expired), false),
        ("a valid certificate (control)", resolver(&valid), true),
    ];
    // Wait out the verifier's 30 s clock-skew allowance for the expired one.
    let past_skew = expiry + Duration::from_secs(31);
    if let Ok(wait) = past_skew.duration_since(std::time::SystemTime::now()) {
        tokio::time::sleep(wait).await;
    }
    for (what, resolver, accepted) in cases {
        let verifier = palisade_ca::verify::SvidServerVerifier::new(
            std::sync::Arc::clone(&trust),
            vec![palisade_ca::SpiffeId::parse(REVIEWS).unwrap()],
        );
        let config = palisade_ca::tls::client_config(resolver, verifier, &[b"http/1.1"]).unwrap();
        let connector = tokio_rustls::TlsConnector::from(std::sync::Arc::new(config));
        let tcp = tokio::net::TcpStream::connect(inbound).await.unwrap();
        let name = rustls_pki_types::ServerName::try_from("reviews.invalid").unwrap();
        let answered = match connector.connect(name, tcp).await {
            Err(_) => false,
            Ok(mut tls) => {
                // TLS 1.3 clients finish before the server checks their certificate:
                // a refusal arrives as an alert on the first read.
                use tokio::io::{AsyncReadExt, AsyncWriteExt};
                let _ = tls
                    .write_all(b"GET /reviews HTTP/1.1\r\nHost: reviews.shop:8080\r\nConnection: close\r\n\r\n")
                    .await;
                let mut buf = Vec::new();
                let _ = tokio::time::timeout(Duration::from_secs(5), tls.read_to_end(&mut buf)).await;
                buf.starts_with(b"HTTP/1.1 200")
            }
        };
        assert_eq!(answered, accepted, "{what}");
    }
    assert_eq!(app.count(), 1, "only the control reached the app");
    let metrics = mesh.metrics("reviews");
    assert!(metrics.contains("palisade_tls_handshake_failures_total"), "{metrics}");
}

/// Secure naming: a server whose SVID is not one the registry lists for the
/// service gets nothing.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_server_with_the_wrong_identity_is_refused() {
    // payments' endpoint is reviews' sidecar: it presents reviews' SVID.
    let mesh = Mesh::start(Options {
        endpoint_of: &[("payments", "reviews")],
        only: &["checkout", "reviews"],
        ..Options::default()
    })
    .await;
    let reply = call(
        mesh.workload("checkout").outbound,
        "POST",
        "payments.shop:8080",
        "/charge",
        &[],
    );
    assert_eq!(reply.status, 502, "{}", reply.body);
    assert_eq!(mesh.workload("reviews").app.count(), 0);
    assert!(
        !mesh.metrics("reviews").contains("palisade_requests_total{"),
        "the impostor saw no request"
    );
}

/// A bundle edit is in force within a second, with no restart; an invalid edit
/// changes nothing; with the control plane gone the last snapshot keeps
/// enforcing, and a proxy that never had one denies everything.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn live_policy_edits_and_a_lost_control_plane() {
    let mut mesh = Mesh::start(Options {
        only: &["frontend", "reviews"],
        ..Options::default()
    })
    .await;
    let frontend = mesh.workload("frontend").outbound;
    assert_eq!(call(frontend, "GET", "reviews.shop:8080", "/reviews", &[]).status, 200);
    let version = mesh.config("reviews")["snapshot"]["version"].as_u64().unwrap();

    // An invalid edit: logged by the control plane, nothing changes.
    let broken = mesh.bundle.join("policies/reviews/ingress/broken.cedar");
    std::fs::write(&broken, "permit (principal, action, resource").unwrap();
    let admin = mesh.control_plane_admin.to_string();
    let status = eventually(Duration::from_secs(5), "the control plane to reject the edit", || {
        let status = ok(&["control-plane", "status", "--admin", &admin]);
        status.contains("was rejected").then_some(status)
    })
    .await;
    assert!(
        status.contains("broken.cedar"),
        "the rejection names the file: {status}"
    );
    assert_eq!(mesh.config("reviews")["snapshot"]["version"].as_u64().unwrap(), version);
    assert_eq!(call(frontend, "GET", "reviews.shop:8080", "/reviews", &[]).status, 200);
    std::fs::remove_file(&broken).unwrap();

    // A valid edit: reviews forbids frontend. Measured from the write to the
    // first call that sees it.
    let forbid = "@id(\"reviews-closed\")\nforbid (principal, action, resource in Namespace::\"reviews\");\n";
    let written = Instant::now();
    std::fs::write(mesh.bundle.join("policies/reviews/ingress/closed.cedar"), forbid).unwrap();
    eventually(Duration::from_secs(5), "the edit to take effect", || {
        (call(frontend, "GET", "reviews.shop:8080", "/reviews", &[]).status == 403).then_some(())
    })
    .await;
    let took = written.elapsed();
    println!("policy edit in force after {} ms", took.as_millis());
    eventually(
        Duration::from_secs(5),
        "`control-plane status` to show reviews current",
        || {
            let status = ok(&["control-plane", "status", "--admin", &admin]);
            let row = status.lines().find(|l| l.starts_with(REVIEWS))?;
            row.contains("current").then_some(())
        },
    )
    .await;

    // The control plane dies: the last snapshot keeps enforcing.
    mesh.control_plane.take().unwrap().kill();
    std::fs::remove_file(mesh.bundle.join("policies/reviews/ingress/closed.cedar")).unwrap();
    eventually(
        Duration::from_secs(5),
        "the sidecars to notice the control plane is gone",
        || {
            let gone = |name| mesh.config(name)["controlPlane"]["connected"] == false;
            (gone("frontend") && gone("reviews")).then_some(())
        },
    )
    .await;
    assert_eq!(call(frontend, "GET", "reviews.shop:8080", "/reviews", &[]).status, 403);
    assert_eq!(
        call(
            mesh.workload("reviews").outbound,
            "POST",
            "payments.shop:8080",
            "/charge",
            &[]
        )
        .status,
        403
    );
    assert_eq!(
        admin_get(mesh.workload("reviews").admin, "/ready").0,
        200,
        "still ready: fail-static"
    );

    // A proxy that never got a snapshot denies everything and is not ready.
    mesh.start_sidecar("checkout", &[]);
    let checkout = mesh.workload("checkout");
    eventually(
        Duration::from_secs(5),
        "checkout's sidecar to fail to reach the control plane",
        || {
            mesh.config("checkout")["controlPlane"]["lastError"]
                .is_string()
                .then_some(())
        },
    )
    .await;
    assert_eq!(admin_get(checkout.admin, "/ready").0, 503);
    assert_eq!(
        call(checkout.outbound, "GET", "reviews.shop:8080", "/reviews", &[]).status,
        403
    );

    // The control plane returns: proxies catch up with the bundle on disk.
    mesh.start_control_plane();
    mesh.wait_ready("checkout").await;
    eventually(
        Duration::from_secs(10),
        "frontend → reviews to be allowed again",
        || (call(frontend, "GET", "reviews.shop:8080", "/reviews", &[]).status == 200).then_some(()),
    )
    .await;
}

/// A revoked peer's live connection is cut within a second and it cannot
/// connect again.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn revocation_cuts_live_connections() {
    let mesh = Mesh::start(Options {
        only: &["frontend", "reviews"],
        ..Options::default()
    })
    .await;
    let frontend = mesh.workload("frontend").outbound;
    assert_eq!(call(frontend, "GET", "reviews.shop:8080", "/reviews", &[]).status, 200);
    assert_eq!(
        mesh.config("reviews")["liveConnections"],
        1,
        "one pooled connection from frontend"
    );

    let revoked = Instant::now();
    ok(&[
        "ca",
        "revoke",
        "--spiffe-id",
        FRONTEND,
        "--reason",
        "compromised",
        "--dir",
        mesh.ca.path(),
    ]);
    let cut = eventually(Duration::from_secs(10), "the live connection to be cut", || {
        (mesh.config("reviews")["liveConnections"] == 0).then(|| revoked.elapsed())
    })
    .await;
    println!(
        "revoked peer's live connection closed {} ms after `ca revoke` was sent",
        cut.as_millis()
    );

    let reply = call(frontend, "GET", "reviews.shop:8080", "/reviews", &[]);
    assert_eq!(reply.status, 502, "{}", reply.body);
    assert!(
        mesh.metrics("reviews").contains("reason=\"revoked\""),
        "{}",
        mesh.metrics("reviews")
    );
}

/// Three SVID rotations on both sides under continuous traffic: zero failures.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rotations_under_traffic_fail_nothing() {
    let short = ["--svid-ttl", "1m"];
    let mesh = Mesh::start(Options {
        only: &["frontend", "reviews"],
        flags: &[("frontend", &short), ("reviews", &short)],
        ..Options::default()
    })
    .await;
    let frontend = mesh.workload("frontend").outbound;
    let serial = |name| mesh.config(name)["svid"]["serial"].as_str().unwrap().to_string();
    let mut serials = [vec![serial("frontend")], vec![serial("reviews")]];
    let (mut calls, mut failures) = (0u32, Vec::new());
    let deadline = Instant::now() + Duration::from_secs(150);
    while serials.iter().any(|s| s.len() < 4) && Instant::now() < deadline {
        let reply = call(frontend, "GET", "reviews.shop:8080", "/reviews", &[]);
        calls += 1;
        if reply.status != 200 {
            failures.push((reply.status, reply.body));
        }
        for (seen, name) in serials.iter_mut().zip(["frontend", "reviews"]) {
            let now = serial(name);
            if seen.last() != Some(&now) {
                seen.push(now);
            }
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    println!(
        "{calls} calls across {} frontend and {} reviews rotations: {} failed",
        serials[0].len() - 1,
        serials[1].len() - 1,
        failures.len()
    );
    assert!(
        serials.iter().all(|s| s.len() >= 4),
        "fewer than three rotations: {serials:?}"
    );
    assert!(failures.is_empty(), "{failures:?}");
}

/// `palisade ca issue` for `id` with lifetime `ttl` from the CA in `ca_dir`.
fn issued(ca_dir: &str, id: &str, ttl: &str) -> palisade_ca::Svid {
    let out = tempfile::tempdir().unwrap();
    let out_dir = crate::support::s(out.path());
    ok(&[
        "ca",
        "issue",
        "--spiffe-id",
        id,
        "--ttl",
        ttl,
        "--out",
        out_dir,
        "--dir",
        ca_dir,
    ]);
    palisade_ca::Svid::new(
        palisade_ca::bundle::certs_from_pem(&std::fs::read(out.path().join("chain.pem")).unwrap()).unwrap(),
        rustls_pki_types::pem::PemObject::from_pem_file(out.path().join("leaf.key")).unwrap(),
    )
    .unwrap()
}
