//! The inbound side end to end: real TLS handshakes with SVIDs minted by a CA made
//! at test time, real sockets on 127.0.0.1, and a real app (a tiny hyper server
//! speaking HTTP/1.1 and h2c) behind the sidecar, which records what reaches it.
//! The cases read as the specification; [`fixture`] holds the machinery.

mod fixture;

use std::net::IpAddr;
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime};

use bytes::Bytes;
use http::{Request, Version};
use http_body_util::{BodyExt, Full};
use hyper::client::conn::http2;
use hyper_util::rt::{TokioExecutor, TokioIo};
use palisade_ca::revocation::{RevocationEntry, RevocationSet, RevocationTarget};
use palisade_ca::{SpiffeId, Svid};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};

use self::fixture::{
    h1_over, lock, post, read_some, send_h1, send_h2, server_serial, tls_connect, tls_connect_from, within, Mesh,
};
use super::AppProtocol;
use crate::connections::spawn_expiry_sweeper;
use crate::context::Limits;
use crate::state::empty_handle;
use crate::testing::{handle, shop_state, TestPki, CHECKOUT, FRONTEND, PAYMENTS, REVIEWS};

const PAYMENTS_XFCC_FROM_CHECKOUT: &str =
    "By=spiffe://shop.example/ns/payments/sa/payments;URI=spiffe://shop.example/ns/checkout/sa/checkout";

// ---- Allowed requests reach the app, with identity set from the handshake ----

#[tokio::test]
async fn an_allowed_request_reaches_the_app_with_the_verified_peer_and_no_forged_identity() {
    let mesh = Mesh::start(PAYMENTS).await;
    let mut h1 = mesh.h1(CHECKOUT).await;
    let request = post("/charge")
        .header("host", "payments.shop")
        .header("x-request-id", "req-1")
        .header(
            "x-forwarded-client-cert",
            "By=x;URI=spiffe://shop.example/ns/evil/sa/evil",
        )
        .header("x-palisade-foo", "forged")
        .header("connection", "keep-alive, x-forwarded-client-cert, x-palisade-foo")
        .body(Full::new(Bytes::from_static(b"amount=5")))
        .unwrap();
    let reply = send_h1(&mut h1, request).await;

    assert_eq!(reply.status, 200, "{}", reply.body);
    assert_eq!(reply.body, "hello from the app");
    assert_eq!(reply.headers["x-request-id"], "req-1");
    assert!(
        reply.headers.get("x-palisade-secret").is_none(),
        "identity headers leave the app's response"
    );
    assert!(reply.headers.get("x-forwarded-client-cert").is_none());

    let seen = mesh.app.only();
    assert_eq!(seen.uri, "/charge");
    assert_eq!(seen.version, Version::HTTP_11);
    assert_eq!(
        seen.header_values("x-forwarded-client-cert"),
        [PAYMENTS_XFCC_FROM_CHECKOUT]
    );
    assert!(seen.headers.get("x-palisade-foo").is_none());
    assert_eq!(seen.header_values("host"), ["payments.shop"]);
    assert_eq!(seen.header_values("x-request-id"), ["req-1"]);
    assert_eq!(seen.body, "amount=5");
    assert_eq!(mesh.count(CHECKOUT, "payments/payments", "allow", 200), 1);
}

#[tokio::test]
async fn http2_callers_work_and_reach_an_http1_app_with_the_canonical_target() {
    let mesh = Mesh::start(REVIEWS).await;
    let mut h2 = mesh.h2(FRONTEND).await;
    let request = Request::get("https://Reviews.Shop/r/./1//x?sort=new")
        .header("x-forwarded-client-cert", "forged")
        .header("x-palisade-foo", "forged")
        .body(Full::default())
        .unwrap();
    let reply = send_h2(&mut h2, request).await;

    assert_eq!(reply.status, 200, "{}", reply.body);
    assert_eq!(reply.headers.get_all("x-request-id").iter().count(), 1);
    let seen = mesh.app.only();
    assert_eq!(
        seen.version,
        Version::HTTP_11,
        "Auto sends non-gRPC requests over HTTP/1.1"
    );
    assert_eq!(seen.uri, "/r/1/x?sort=new");
    assert_eq!(seen.header_values("host"), ["reviews.shop"]);
    assert_eq!(
        seen.header_values("x-forwarded-client-cert"),
        ["By=spiffe://shop.example/ns/reviews/sa/reviews;URI=spiffe://shop.example/ns/web/sa/frontend"]
    );
    assert!(seen.headers.get("x-palisade-foo").is_none());
}

#[tokio::test]
async fn grpc_goes_over_h2c_and_its_trailers_come_back() {
    let mesh = Mesh::start(PAYMENTS).await;
    let mut h2 = mesh.h2(CHECKOUT).await;
    let request = Request::post("https://payments.shop/charge")
        .header("content-type", "application/grpc")
        .header("te", "trailers")
        .body(Full::new(Bytes::from_static(b"\0\0\0\0\x01x")))
        .unwrap();
    let reply = send_h2(&mut h2, request).await;

    assert_eq!(reply.status, 200, "{}", reply.body);
    let trailers = reply.trailers.expect("gRPC status travels in trailers");
    assert_eq!(trailers["grpc-status"], "0");
    let seen = mesh.app.only();
    assert_eq!(seen.version, Version::HTTP_2, "Auto sends gRPC over h2c");
    assert_eq!(seen.header_values("te"), ["trailers"]);
    assert_eq!(
        seen.header_values("x-forwarded-client-cert"),
        [PAYMENTS_XFCC_FROM_CHECKOUT]
    );
}

#[tokio::test]
async fn the_app_protocol_can_be_forced() {
    let mesh = Mesh::with(PAYMENTS, handle(shop_state()), AppProtocol::H2, Limits::default()).await;
    let mut h1 = mesh.h1(CHECKOUT).await;
    let reply = send_h1(
        &mut h1,
        post("/charge")
            .header("host", "payments.shop")
            .body(Full::default())
            .unwrap(),
    )
    .await;
    assert_eq!(reply.status, 200, "{}", reply.body);
    let seen = mesh.app.only();
    assert_eq!(seen.version, Version::HTTP_2);
    assert_eq!(seen.uri, "http://payments.shop/charge");
}

#[tokio::test]
async fn connections_to_the_app_are_reused() {
    let mesh = Mesh::start(PAYMENTS).await;
    let mut h1 = mesh.h1(CHECKOUT).await;
    for _ in 0..5 {
        let reply = send_h1(
            &mut h1,
            post("/charge")
                .header("host", "payments.shop")
                .body(Full::default())
                .unwrap(),
        )
        .await;
        assert_eq!(reply.status, 200);
    }
    assert_eq!(mesh.app.requests().len(), 5);
    assert_eq!(
        *lock(&mesh.app.connections),
        1,
        "one pooled HTTP/1.1 connection serves them all"
    );
}

// ---- Refusals: the app receives nothing ----

#[tokio::test]
async fn an_ingress_deny_is_a_403_naming_only_the_side_and_the_request() {
    let mesh = Mesh::start(PAYMENTS).await;
    let mut h1 = mesh.h1(FRONTEND).await;
    let request = post("/charge")
        .header("host", "payments.shop")
        .header("x-request-id", "req-42")
        .body(Full::default())
        .unwrap();
    let reply = send_h1(&mut h1, request).await;

    assert_eq!(reply.status, 403);
    assert_eq!(
        reply.body,
        r#"{"decision":"deny","side":"ingress","requestId":"req-42"}"#
    );
    assert_eq!(reply.headers["content-type"], "application/json");
    assert!(
        mesh.app.requests().is_empty(),
        "the PCI service never sees a non-PCI caller"
    );
    assert_eq!(mesh.count(FRONTEND, "payments/payments", "deny", 403), 1);
}

#[tokio::test]
async fn without_a_policy_snapshot_everything_is_denied() {
    let mesh = Mesh::with(PAYMENTS, empty_handle(), AppProtocol::Auto, Limits::default()).await;
    let mut h1 = mesh.h1(CHECKOUT).await;
    let reply = send_h1(
        &mut h1,
        post("/charge")
            .header("host", "payments.shop")
            .body(Full::default())
            .unwrap(),
    )
    .await;
    assert_eq!(reply.status, 403);
    assert!(
        reply.body.starts_with(r#"{"decision":"deny","side":"ingress""#),
        "{}",
        reply.body
    );
    assert!(mesh.app.requests().is_empty());
    assert_eq!(mesh.count(CHECKOUT, "unknown", "deny", 403), 1);
}

#[tokio::test]
async fn a_host_not_served_here_is_misdirected() {
    let mesh = Mesh::start(PAYMENTS).await;
    let mut h1 = mesh.h1(FRONTEND).await;
    for host in ["reviews.shop", "nowhere.shop"] {
        let request = Request::get("/").header("host", host).body(Full::default()).unwrap();
        let reply = send_h1(&mut h1, request).await;
        assert_eq!(reply.status, 421, "{host}: {}", reply.body);
    }
    assert!(mesh.app.requests().is_empty());
    assert_eq!(mesh.count(FRONTEND, "unknown", "misdirected", 421), 2);
}

#[tokio::test]
async fn peer_sent_hosts_never_become_metrics_labels() {
    let mesh = Mesh::start(PAYMENTS).await;
    let mut h1 = mesh.h1(FRONTEND).await;
    for i in 0..20 {
        let host = format!("attacker-{i}.evil");
        let request = Request::get("/").header("host", &host).body(Full::default()).unwrap();
        assert_eq!(send_h1(&mut h1, request).await.status, 421);
    }
    let bad_header = post("/charge")
        .header("host", "attacker-bad-header.evil")
        .header("x-name", http::HeaderValue::from_bytes(b"caf\xc3\xa9").unwrap())
        .body(Full::default())
        .unwrap();
    assert_eq!(send_h1(&mut h1, bad_header).await.status, 400);
    assert_eq!(mesh.count(FRONTEND, "unknown", "misdirected", 421), 20);
    assert_eq!(mesh.count(FRONTEND, "unknown", "bad_request", 400), 1);
    let page = mesh.ctx.metrics.render();
    assert!(!page.contains("attacker"), "{page}");
}

#[tokio::test]
async fn requests_without_a_single_meaning_are_refused_before_the_app() {
    let limits = Limits {
        max_header_bytes: 4096,
        ..Limits::default()
    };
    let mesh = Mesh::with(PAYMENTS, handle(shop_state()), AppProtocol::Auto, limits).await;
    let charge = "POST /charge HTTP/1.1\r\nHost: payments.shop\r\n";
    let many_headers: String = (0..120).map(|i| format!("x-h{i}: v\r\n")).collect();
    let cases = [
        (
            "Content-Length with Transfer-Encoding",
            format!("{charge}Content-Length: 5\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nhello\r\n0\r\n\r\n"),
            400,
        ),
        (
            "Transfer-Encoding then Content-Length",
            format!("{charge}Transfer-Encoding: chunked\r\nContent-Length: 5\r\n\r\n5\r\nhello\r\n0\r\n\r\n"),
            400,
        ),
        (
            "repeated Content-Length",
            format!("{charge}Content-Length: 1\r\nContent-Length: 1\r\n\r\nx"),
            400,
        ),
        (
            "duplicate Host",
            "POST /charge HTTP/1.1\r\nHost: payments.shop\r\nHost: payments.shop\r\nContent-Length: 0\r\n\r\n".to_owned(),
            400,
        ),
        (
            "dot segments above the root",
            "POST /a/../../charge HTTP/1.1\r\nHost: payments.shop\r\nContent-Length: 0\r\n\r\n".to_owned(),
            400,
        ),
        (
            "encoded slash",
            "POST /charge%2Fx HTTP/1.1\r\nHost: payments.shop\r\nContent-Length: 0\r\n\r\n".to_owned(),
            400,
        ),
        (
            "h2c upgrade",
            format!("{charge}Connection: Upgrade, HTTP2-Settings\r\nUpgrade: h2c\r\nHTTP2-Settings: AAMAAABkAAQAAP__\r\nContent-Length: 0\r\n\r\n"),
            501,
        ),
        (
            "oversized header",
            format!("{charge}x-big: {}\r\n\r\n", "a".repeat(6000)),
            431,
        ),
        ("too many headers", format!("{charge}{many_headers}\r\n"), 431),
        ("obs-fold", format!("{charge}x-a: 1\r\n 2\r\nContent-Length: 0\r\n\r\n"), 400),
        ("space before a colon", format!("{charge}x-a : 1\r\nContent-Length: 0\r\n\r\n"), 400),
        ("underscore in a header name", format!("{charge}x_a: 1\r\nContent-Length: 0\r\n\r\n"), 400),
        ("transfer coding other than chunked", format!("{charge}Transfer-Encoding: gzip\r\n\r\n"), 400),
        (
            "lower-case method",
            "post /charge HTTP/1.1\r\nHost: payments.shop\r\nContent-Length: 0\r\n\r\n".to_owned(),
            400,
        ),
        (
            "absolute-form authority differing from Host",
            "POST http://payments.shop/charge HTTP/1.1\r\nHost: reviews.shop\r\nContent-Length: 0\r\n\r\n".to_owned(),
            400,
        ),
        (
            "encoded NUL",
            "POST /charge%00 HTTP/1.1\r\nHost: payments.shop\r\nContent-Length: 0\r\n\r\n".to_owned(),
            400,
        ),
        (
            "backslash",
            "POST /x\\..\\charge HTTP/1.1\r\nHost: payments.shop\r\nContent-Length: 0\r\n\r\n".to_owned(),
            400,
        ),
        ("empty Host", "POST /charge HTTP/1.1\r\nHost: \r\nContent-Length: 0\r\n\r\n".to_owned(), 400),
    ];
    for (name, wire, status) in cases {
        let head = mesh.raw(CHECKOUT, wire.as_bytes()).await;
        assert!(
            head.starts_with(&format!("HTTP/1.1 {status} ")),
            "{name}: expected {status}, got {head:?}"
        );
    }
    assert!(mesh.app.requests().is_empty(), "{:?}", mesh.app.requests());

    // And a sound request on the same kind of connection does pass.
    let head = mesh
        .raw(CHECKOUT, format!("{charge}Content-Length: 0\r\n\r\n").as_bytes())
        .await;
    assert!(head.starts_with("HTTP/1.1 200 "), "{head:?}");
}

/// A request-target longer than the canonicalizer takes (8 KiB), within the
/// default header limit, gets 414 and reaches nothing.
#[tokio::test]
async fn an_overlong_request_target_is_414() {
    let mesh = Mesh::start(PAYMENTS).await;
    let wire = format!(
        "POST /{} HTTP/1.1\r\nHost: payments.shop\r\nContent-Length: 0\r\n\r\n",
        "a".repeat(9000)
    );
    let head = mesh.raw(CHECKOUT, wire.as_bytes()).await;
    assert!(head.starts_with("HTTP/1.1 414 "), "{head:?}");
    assert!(mesh.app.requests().is_empty());
}

#[tokio::test]
async fn pipelined_requests_get_one_verdict_each_and_an_ambiguous_one_ends_the_connection() {
    let mesh = Mesh::start(PAYMENTS).await;
    let charge = "POST /charge HTTP/1.1\r\nHost: payments.shop\r\n";
    let wire = format!(
        "{charge}Content-Length: 5\r\n\r\nhello\
         {charge}Transfer-Encoding: chunked\r\n\r\n3\r\nhel\r\n2\r\nlo\r\n0\r\n\r\n\
         {charge}Content-Length: 1\r\nContent-Length: 1\r\n\r\nx\
         {charge}Content-Length: 0\r\n\r\n"
    );
    let (statuses, closed) = mesh.raw_until_closed(CHECKOUT, wire.as_bytes()).await;
    assert_eq!(statuses, [200, 200, 400]);
    assert!(closed, "the refusal closes the connection");
    let bodies: Vec<String> = mesh.app.requests().into_iter().map(|seen| seen.body).collect();
    assert_eq!(bodies, ["hello", "hello"]);
}

#[tokio::test]
async fn after_an_upgrade_request_nothing_more_on_the_connection_reaches_the_app() {
    let mesh = Mesh::start(PAYMENTS).await;
    let charge = "POST /charge HTTP/1.1\r\nHost: payments.shop\r\n";
    // What follows an upgrade request may not be HTTP/1 at all: the watch stops
    // following, and fails closed (a repeated length here would otherwise pass,
    // since hyper merges equal lengths before the pipeline sees them).
    let wire = format!(
        "{charge}Connection: Upgrade\r\nUpgrade: websocket\r\nContent-Length: 0\r\n\r\n\
         {charge}Content-Length: 1\r\nContent-Length: 1\r\n\r\nx"
    );
    let (statuses, closed) = mesh.raw_until_closed(CHECKOUT, wire.as_bytes()).await;
    assert_eq!(statuses, [501, 400]);
    assert!(closed);
    assert!(mesh.app.requests().is_empty(), "{:?}", mesh.app.requests());
}

#[tokio::test]
async fn an_oversized_http2_header_list_is_refused_before_the_app() {
    let limits = Limits {
        max_header_bytes: 4096,
        ..Limits::default()
    };
    let mesh = Mesh::with(PAYMENTS, handle(shop_state()), AppProtocol::Auto, limits).await;
    let mut h2 = mesh.h2(CHECKOUT).await;
    let request = Request::post("https://payments.shop/charge")
        .header("x-big", "a".repeat(6000))
        .body(Full::default())
        .unwrap();
    let response = within(h2.send_request(request)).await.unwrap();
    assert_eq!(response.status(), 431, "h2 answers an oversized header list itself");
    assert!(mesh.app.requests().is_empty());
    let charge = Request::post("https://payments.shop/charge")
        .body(Full::default())
        .unwrap();
    assert_eq!(
        send_h2(&mut h2, charge).await.status,
        200,
        "only that stream was refused"
    );
}

#[tokio::test]
async fn the_app_being_down_is_a_502() {
    let closed = {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        listener.local_addr().unwrap()
    };
    let mut mesh = Mesh::start(PAYMENTS).await;
    mesh.restart_with_app(closed).await;
    let mut h1 = mesh.h1(CHECKOUT).await;
    let reply = send_h1(
        &mut h1,
        post("/charge")
            .header("host", "payments.shop")
            .body(Full::default())
            .unwrap(),
    )
    .await;
    assert_eq!(reply.status, 502);
    assert!(reply.body.contains(r#""error":"bad_gateway""#), "{}", reply.body);
    assert_eq!(mesh.count(CHECKOUT, "payments/payments", "allow", 502), 1);
}

// ---- Who may connect at all ----

#[tokio::test]
async fn peers_without_a_valid_svid_of_our_bundle_are_refused_at_the_handshake() {
    let mesh = Mesh::start(PAYMENTS).await;
    let other_ca = TestPki::shop();
    let id = SpiffeId::parse(CHECKOUT).unwrap();
    let expired = mesh
        .pki
        .signer
        .mint(
            &id,
            Duration::from_secs(3600),
            SystemTime::now() - Duration::from_secs(7200),
        )
        .unwrap();
    let cases: [(&str, Option<Svid>, &str); 3] = [
        ("no client certificate", None, "no_client_cert"),
        ("another CA's certificate", Some(other_ca.svid(CHECKOUT)), "untrusted"),
        ("an expired certificate", Some(expired), "expired"),
    ];
    for (name, svid, reason) in cases {
        let config = mesh.client_config(svid.as_ref(), &[b"h2"]);
        assert!(mesh.request_fails(config).await, "{name}: the request went through");
        mesh.wait_for_metric(&format!(
            "palisade_tls_handshake_failures_total{{reason=\"{reason}\"}} 1"
        ))
        .await;
    }

    let mut plaintext = TcpStream::connect(mesh.addr).await.unwrap();
    plaintext
        .write_all(b"POST /charge HTTP/1.1\r\nHost: payments.shop\r\nContent-Length: 0\r\n\r\n")
        .await
        .unwrap();
    let answer = read_some(&mut plaintext).await;
    assert!(
        !answer.starts_with(b"HTTP/"),
        "plaintext got an HTTP answer: {answer:?}"
    );
    mesh.wait_for_metric("palisade_tls_handshake_failures_total{reason=\"tls\"} 1")
        .await;
    assert!(mesh.app.requests().is_empty());
}

#[tokio::test]
async fn pending_handshakes_are_capped_and_time_out() {
    let limits = Limits {
        max_pending_handshakes: 1,
        handshake_timeout: Duration::from_millis(300),
        ..Limits::default()
    };
    let mesh = Mesh::with(PAYMENTS, handle(shop_state()), AppProtocol::Auto, limits).await;
    let _silent = TcpStream::connect(mesh.addr).await.unwrap();
    tokio::time::sleep(Duration::from_millis(50)).await;
    assert!(
        mesh.request_fails(mesh.client_config(Some(&mesh.pki.svid(CHECKOUT)), &[b"h2"]))
            .await
    );
    mesh.wait_for_metric("palisade_tls_handshake_failures_total{reason=\"too_many_pending\"} 1")
        .await;
    mesh.wait_for_metric("palisade_tls_handshake_failures_total{reason=\"client_hello_timeout\"} 1")
        .await;
    let mut h2 = mesh.h2(CHECKOUT).await;
    let reply = send_h2(
        &mut h2,
        Request::post("https://payments.shop/charge")
            .body(Full::default())
            .unwrap(),
    )
    .await;
    assert_eq!(reply.status, 200, "the slot is free again after the timeout");
}

#[tokio::test]
async fn one_host_holding_idle_connections_cannot_lock_out_another() {
    let limits = Limits {
        max_pending_handshakes: 20,
        ..Limits::default()
    };
    assert_eq!(limits.max_pending_handshakes_per_ip, 16);
    let mesh = Mesh::with(PAYMENTS, handle(shop_state()), AppProtocol::Auto, limits).await;
    let mut idle = Vec::new();
    for _ in 0..30 {
        idle.push(TcpStream::connect(mesh.addr).await.unwrap());
    }
    mesh.wait_for_metric("palisade_tls_handshake_failures_total{reason=\"too_many_pending_from_ip\"} 14")
        .await;

    let config = mesh.client_config(Some(&mesh.pki.svid(CHECKOUT)), &[b"h2"]);
    let tls = within(tls_connect_from(IpAddr::from([127, 0, 0, 2]), mesh.addr, config))
        .await
        .unwrap();
    let (mut h2, connection) = http2::handshake(TokioExecutor::new(), TokioIo::new(tls)).await.unwrap();
    tokio::spawn(connection);
    let charge = Request::post("https://payments.shop/charge")
        .body(Full::<Bytes>::default())
        .unwrap();
    assert_eq!(
        send_h2(&mut h2, charge).await.status,
        200,
        "another source IP gets through"
    );
    assert!(
        !mesh.ctx.metrics.render().contains("reason=\"too_many_pending\""),
        "the global cap was never reached"
    );
}

#[tokio::test]
async fn a_silent_connection_is_dropped_after_the_client_hello_deadline() {
    let limits = Limits {
        client_hello_timeout: Duration::from_millis(300),
        ..Limits::default()
    };
    let mesh = Mesh::with(PAYMENTS, handle(shop_state()), AppProtocol::Auto, limits).await;
    let mut silent = TcpStream::connect(mesh.addr).await.unwrap();
    let started = Instant::now();
    let mut buf = [0u8; 16];
    let read = tokio::time::timeout(Duration::from_secs(2), silent.read(&mut buf)).await;
    assert!(
        matches!(read, Ok(Ok(0) | Err(_))),
        "the sidecar closes a connection with no ClientHello well before the 10 s handshake timeout: {read:?}"
    );
    assert!(started.elapsed() >= Duration::from_millis(250));
    mesh.wait_for_metric("palisade_tls_handshake_failures_total{reason=\"client_hello_timeout\"} 1")
        .await;
}

#[tokio::test]
async fn connections_per_peer_identity_are_capped() {
    let limits = Limits {
        max_connections_per_peer: 1,
        ..Limits::default()
    };
    let mesh = Mesh::with(PAYMENTS, handle(shop_state()), AppProtocol::Auto, limits).await;
    let mut first = mesh.h2(CHECKOUT).await;
    let charge = || {
        Request::post("https://payments.shop/charge")
            .body(Full::default())
            .unwrap()
    };
    assert_eq!(send_h2(&mut first, charge()).await.status, 200);
    assert!(
        mesh.request_fails(mesh.client_config(Some(&mesh.pki.svid(CHECKOUT)), &[b"h2"]))
            .await
    );
    mesh.wait_for_metric("palisade_tls_handshake_failures_total{reason=\"peer_connection_limit\"} 1")
        .await;
    let mut other_peer = mesh.h2(FRONTEND).await;
    assert_eq!(
        send_h2(&mut other_peer, charge()).await.status,
        403,
        "another identity has its own cap"
    );
    assert_eq!(send_h2(&mut first, charge()).await.status, 200);
}

// ---- Trailers are header fields too ----

#[tokio::test]
async fn identity_trailers_never_reach_the_app_or_the_caller_and_grpc_status_does() {
    let mesh = Mesh::start(PAYMENTS).await;
    let mut h2 = mesh.h2_boxed(CHECKOUT).await;
    let mut trailers = http::HeaderMap::new();
    trailers.insert(
        "x-forwarded-client-cert",
        http::HeaderValue::from_static("URI=spiffe://evil/ns/x/sa/admin"),
    );
    trailers.insert("x-palisade-peer", http::HeaderValue::from_static("forged"));
    trailers.insert("x-checksum", http::HeaderValue::from_static("abc"));
    let body = Full::new(Bytes::from_static(b"\0\0\0\0\x01x"))
        .with_trailers(std::future::ready(Some(Ok(trailers))))
        .boxed();
    let request = Request::post("https://payments.shop/charge")
        .header("content-type", "application/grpc")
        .header("te", "trailers")
        .body(body)
        .unwrap();
    let reply = send_h2(&mut h2, request).await;

    assert_eq!(reply.status, 200, "{}", reply.body);
    let seen = mesh.app.only();
    let app_trailers = seen.trailers.clone().expect("the other trailers pass");
    assert_eq!(app_trailers["x-checksum"], "abc");
    assert!(
        app_trailers.get("x-forwarded-client-cert").is_none(),
        "{app_trailers:?}"
    );
    assert!(app_trailers.get("x-palisade-peer").is_none(), "{app_trailers:?}");
    assert_eq!(
        seen.header_values("x-forwarded-client-cert"),
        [PAYMENTS_XFCC_FROM_CHECKOUT]
    );
    let trailers = reply.trailers.expect("gRPC status travels in trailers");
    assert_eq!(trailers["grpc-status"], "0");
    assert!(trailers.get("x-palisade-secret").is_none(), "{trailers:?}");
    assert!(trailers.get("x-forwarded-client-cert").is_none(), "{trailers:?}");
}

// ---- Live connections: revocation cuts, rotation does not, shutdown ends ----

#[tokio::test]
async fn a_revoked_peer_loses_its_live_connection_within_a_second() {
    let mesh = Mesh::start(PAYMENTS).await;
    let svid = mesh.pki.svid(CHECKOUT);
    let (mut h2, closed) = mesh.h2_with(mesh.client_config(Some(&svid), &[b"h2"])).await;
    let charge = || {
        Request::post("https://payments.shop/charge")
            .body(Full::default())
            .unwrap()
    };
    assert_eq!(send_h2(&mut h2, charge()).await.status, 200);

    let entry = RevocationEntry {
        target: RevocationTarget::Serial(svid.serial().clone()),
        reason: "key compromise".to_owned(),
        revoked_at_unix: 0,
    };
    let set = RevocationSet::new(1, [&entry]);
    assert!(mesh.ctx.trust.update_revocations(set.clone()));
    let started = Instant::now();
    assert_eq!(mesh.ctx.connections.close_revoked(&set), 1);
    tokio::time::timeout(Duration::from_secs(1), closed)
        .await
        .expect("the live connection is closed within 1 s")
        .unwrap();
    println!("revoked peer's live connection closed after {:?}", started.elapsed());
    assert!(h2.is_closed());

    assert!(mesh.request_fails(mesh.client_config(Some(&svid), &[b"h2"])).await);
    mesh.wait_for_metric("palisade_tls_handshake_failures_total{reason=\"revoked\"} 1")
        .await;
    assert!(mesh.ctx.connections.is_empty());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_peer_loses_its_live_connection_within_a_second_of_its_certificate_expiring() {
    let mesh = Mesh::start(PAYMENTS).await;
    let _sweeper = AbortOnDrop(spawn_expiry_sweeper(
        Arc::clone(&mesh.ctx.connections),
        Arc::clone(&mesh.ctx.metrics),
    ));
    let svid = mesh.pki.svid_valid_for(CHECKOUT, Duration::from_secs(3));
    let not_after = svid.not_after();
    let (mut h2, closed) = mesh.h2_with(mesh.client_config(Some(&svid), &[b"h2"])).await;
    let charge = || {
        Request::post("https://payments.shop/charge")
            .body(Full::default())
            .unwrap()
    };
    assert_eq!(send_h2(&mut h2, charge()).await.status, 200);
    assert!(SystemTime::now() < not_after, "the connection was live before expiry");

    let until_expiry = not_after.duration_since(SystemTime::now()).unwrap_or_default();
    tokio::time::timeout(until_expiry + Duration::from_millis(1500), closed)
        .await
        .expect("the live connection is closed within ~1 s of the peer's not_after")
        .unwrap();
    let late = SystemTime::now().duration_since(not_after);
    assert!(late.is_ok(), "closed before the certificate expired");
    println!("expired peer's live connection closed {late:?} after not_after");
    assert!(h2.is_closed());
    mesh.wait_for_metric("palisade_expired_connections_closed_total 1")
        .await;
    assert!(eventually_empty(&mesh).await);
}

/// Aborts a background task when the test ends.
struct AbortOnDrop(tokio::task::JoinHandle<()>);

impl Drop for AbortOnDrop {
    fn drop(&mut self) {
        self.0.abort();
    }
}

async fn eventually_empty(mesh: &Mesh) -> bool {
    for _ in 0..100 {
        if mesh.ctx.connections.is_empty() {
            return true;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    false
}

#[tokio::test]
async fn rotation_keeps_open_connections_and_new_handshakes_see_the_new_serial() {
    let mesh = Mesh::start(PAYMENTS).await;
    let config = mesh.client_config(Some(&mesh.pki.svid(CHECKOUT)), &[b"http/1.1"]);
    let tls = tls_connect(mesh.addr, Arc::clone(&config)).await.unwrap();
    let before = server_serial(&tls);
    let mut h1 = h1_over(tls).await;
    let charge = || {
        post("/charge")
            .header("host", "payments.shop")
            .body(Full::default())
            .unwrap()
    };
    assert_eq!(send_h1(&mut h1, charge()).await.status, 200);

    let rotated = mesh.pki.svid(PAYMENTS);
    mesh.ctx.resolver.set(&rotated).unwrap();
    assert_eq!(
        send_h1(&mut h1, charge()).await.status,
        200,
        "the open connection keeps working"
    );
    let after = server_serial(&tls_connect(mesh.addr, config).await.unwrap());
    assert_ne!(before, after);
    assert_eq!(&after, rotated.serial());
}

#[tokio::test]
async fn aborting_serve_ends_its_connections() {
    let mesh = Mesh::start(PAYMENTS).await;
    let (mut h2, closed) = mesh
        .h2_with(mesh.client_config(Some(&mesh.pki.svid(CHECKOUT)), &[b"h2"]))
        .await;
    assert_eq!(
        send_h2(
            &mut h2,
            Request::post("https://payments.shop/charge")
                .body(Full::default())
                .unwrap()
        )
        .await
        .status,
        200
    );
    mesh.server.abort();
    tokio::time::timeout(Duration::from_secs(1), closed)
        .await
        .expect("connections end with serve")
        .unwrap();
}

/// Connections to the app are capped: with every one busy, a further request
/// waits up to the connect timeout, then gets 503 instead of another connection.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn connections_to_the_app_are_capped() {
    let limits = Limits {
        max_app_connections: 2,
        connect_timeout: Duration::from_millis(300),
        ..Limits::default()
    };
    let mut mesh = Mesh::with(PAYMENTS, handle(shop_state()), AppProtocol::Http1, limits).await;
    // An app that accepts connections and never answers.
    let silent = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let silent_addr = silent.local_addr().unwrap();
    let accepted = Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let counter = Arc::clone(&accepted);
    let holder = tokio::spawn(async move {
        let mut held = Vec::new();
        while let Ok((tcp, _)) = silent.accept().await {
            counter.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
            held.push(tcp);
        }
    });
    mesh.restart_with_app(silent_addr).await;
    let h2 = mesh.h2(CHECKOUT).await;
    let mut calls = Vec::new();
    for _ in 0..3 {
        let mut sender = h2.clone();
        calls.push(tokio::spawn(async move {
            let request = Request::post("https://payments.shop/charge")
                .body(Full::new(Bytes::new()))
                .unwrap();
            tokio::time::timeout(Duration::from_secs(3), sender.send_request(request))
                .await
                .ok()
                .and_then(Result::ok)
                .map(|response| response.status().as_u16())
        }));
    }
    let mut statuses = Vec::new();
    for call in calls {
        statuses.push(call.await.unwrap());
    }
    statuses.sort();
    assert_eq!(
        statuses,
        [None, None, Some(503)],
        "two wait on the silent app, the third is refused"
    );
    assert_eq!(
        accepted.load(std::sync::atomic::Ordering::SeqCst),
        2,
        "no third connection to the app"
    );
    holder.abort();
}
