//! The outbound side end to end: an app's raw HTTP in, real mTLS handshakes to a
//! recording upstream sidecar on 127.0.0.1, and what each side saw.

mod audit;
mod egress;
mod origin;
mod support;
mod tunnel;

use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use bytes::Bytes;
use http::{HeaderMap, HeaderValue, Request};
use http_body_util::{BodyExt, Full};
use palisade_ca::revocation::{RevocationEntry, RevocationSet, RevocationTarget};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

use self::support::{eventually, h2c, shop_pointing_at, Sidecar, Upstream, UPSTREAM_BODY};
use crate::connections::spawn_expiry_sweeper;
use crate::context::Limits;
use crate::state::empty_handle;
use crate::testing::{handle, TestPki, FRONTEND, PAYMENTS, REVIEWS};

const REVIEWS_ENDPOINT: &str = "127.0.0.1:15003";
const PAYMENTS_ENDPOINT: &str = "127.0.0.1:15004";

/// A sidecar for `caller` whose registry sends `endpoint`'s service to `upstream`.
async fn sidecar(pki: &TestPki, caller: &str, moves: &[(&str, SocketAddr)]) -> Sidecar {
    Sidecar::start(pki, caller, handle(shop_pointing_at(moves))).await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn frontend_reads_reviews_in_absolute_and_origin_form() {
    let pki = TestPki::shop();
    let upstream = Upstream::start(&pki, REVIEWS).await;
    let app = sidecar(&pki, FRONTEND, &[(REVIEWS_ENDPOINT, upstream.addr)]).await;
    // (request line and headers, the authority upstream, the request id the app sent);
    // a `Connection` header naming `x-request-id` cannot remove it.
    let cases: [(&str, &str, Option<&str>); 5] = [
        (
            "GET http://reviews.shop:8080/reviews/./42?x=1 HTTP/1.1\r\nHost: reviews.shop:8080\r\n",
            "reviews.shop:8080",
            None,
        ),
        ("GET http://Reviews.Shop:8080/reviews//42?x=1 HTTP/1.1\r\n", "reviews.shop:8080", None),
        (
            "GET /reviews/%34%32?x=1 HTTP/1.1\r\nHost: reviews.shop\r\nX-Request-Id: app-id-1\r\n",
            "reviews.shop",
            Some("app-id-1"),
        ),
        (
            "GET /reviews/42?x=1 HTTP/1.1\r\nHost: reviews.reviews.svc:8080\r\nx-palisade-peer: forged\r\nx-forwarded-client-cert: URI=spiffe://shop.example/ns/payments/sa/payments\r\n",
            "reviews.reviews.svc:8080",
            None,
        ),
        (
            "GET /reviews/42?x=1 HTTP/1.1\r\nHost: reviews.shop\r\nConnection: x-request-id, keep-alive\r\nX-Request-Id: app-id-2\r\n",
            "reviews.shop",
            Some("app-id-2"),
        ),
    ];
    for (i, (head, authority, request_id)) in cases.into_iter().enumerate() {
        let answer = app.raw(format!("{head}Connection: close\r\n\r\n").as_bytes()).await;
        assert_eq!(answer.status, 200, "{head}: {answer:?}");
        assert_eq!(answer.body, UPSTREAM_BODY);
        let received = upstream.seen.requests().pop().unwrap();
        assert_eq!(upstream.seen.requests().len(), i + 1);
        assert_eq!(
            received.uri.path_and_query().unwrap().as_str(),
            "/reviews/42?x=1",
            "{head}"
        );
        assert_eq!(received.uri.authority().unwrap().as_str(), authority, "{head}");
        assert!(received.headers.get("host").is_none());
        assert_eq!(received.client.as_deref(), Some(FRONTEND));
        assert!(received.headers.get("x-palisade-peer").is_none());
        assert!(received.headers.get("x-forwarded-client-cert").is_none());
        let forwarded_id = received.headers.get("x-request-id").unwrap().to_str().unwrap();
        match request_id {
            Some(id) => assert_eq!(forwarded_id, id),
            None => assert_eq!(forwarded_id.len(), 32, "a generated id: {forwarded_id}"),
        }
        // The response: the same id, no identity header from upstream.
        assert_eq!(answer.header("x-request-id"), Some(forwarded_id));
        assert_eq!(answer.header("x-upstream"), Some("1"));
        assert!(answer.header("x-palisade-peer").is_none());
        assert!(answer.header("x-forwarded-client-cert").is_none());
    }
    assert_eq!(app.counted("reviews/reviews", "allow", 200), 5);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn request_bodies_stream_upstream() {
    let pki = TestPki::shop();
    let upstream = Upstream::start(&pki, REVIEWS).await;
    let app = sidecar(&pki, FRONTEND, &[(REVIEWS_ENDPOINT, upstream.addr)]).await;
    let requests: [&[u8]; 2] = [
        b"POST /reviews HTTP/1.1\r\nHost: reviews.shop\r\nContent-Length: 5\r\nConnection: close\r\n\r\nhello",
        b"POST /reviews HTTP/1.1\r\nHost: reviews.shop\r\nTransfer-Encoding: chunked\r\nConnection: close\r\n\r\n3\r\nhel\r\n2\r\nlo\r\n0\r\n\r\n",
    ];
    for request in requests {
        let answer = app.raw(request).await;
        assert_eq!(answer.status, 200, "{answer:?}");
        let received = upstream.seen.requests().pop().unwrap();
        assert_eq!(received.method, "POST");
        assert_eq!(received.body, "hello");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_egress_deny_sends_nothing() {
    let pki = TestPki::shop();
    let upstream = Upstream::start(&pki, PAYMENTS).await;
    let app = sidecar(&pki, REVIEWS, &[(PAYMENTS_ENDPOINT, upstream.addr)]).await;
    let answer = app
        .raw(b"POST /charge HTTP/1.1\r\nHost: payments.shop\r\nX-Request-Id: r-7\r\nContent-Length: 2\r\nConnection: close\r\n\r\n{}")
        .await;
    assert_eq!(answer.status, 403);
    assert_eq!(answer.body, r#"{"decision":"deny","side":"egress","requestId":"r-7"}"#);
    assert_eq!(answer.header("content-type"), Some("application/json"));
    assert_eq!(upstream.seen.tcp(), 0, "no connection to the destination at all");
    assert_eq!(app.counted("payments/payments", "deny", 403), 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unknown_hosts_unlisted_ports_and_tunnels_to_the_mesh_are_denied() {
    let pki = TestPki::shop();
    let upstream = Upstream::start(&pki, REVIEWS).await;
    let app = sidecar(&pki, FRONTEND, &[(REVIEWS_ENDPOINT, upstream.addr)]).await;
    let upstream_addr = upstream.addr.to_string();
    // The shop is REGISTRY_ONLY: a host outside the registry is BlackHole.
    let cases = [
        ("/", "Host: evil.example".to_owned()),
        ("/", "Host: reviews.shop:9090".to_owned()),
        ("/", "Host: reviews.shop.evil".to_owned()),
        // The address the app chose, even the right one, is never a destination.
        ("/", format!("Host: {upstream_addr}")),
    ];
    for (target, host) in &cases {
        let answer = app.get(target, &[host]).await;
        assert_eq!(answer.status, 403, "{host}: {answer:?}");
        assert!(answer.body.contains(r#""side":"egress""#));
    }
    let connect = app
        .raw(b"CONNECT reviews.shop:8080 HTTP/1.1\r\nHost: reviews.shop:8080\r\nConnection: close\r\n\r\n")
        .await;
    assert_eq!(connect.status, 403);
    assert!(connect.body.contains("is a mesh service"), "{}", connect.body);
    assert_eq!(upstream.seen.tcp(), 0);
    assert_eq!(app.counted("external", "blackhole", 403), 3);
    assert_eq!(app.counted("reviews/reviews", "deny", 403), 1);
    assert_eq!(app.counted("reviews/reviews", "tunnel_to_mesh", 403), 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_server_with_another_identity_gets_nothing() {
    let pki = TestPki::shop();
    // payments' endpoint, but the server there is reviews.
    let impostor = Upstream::start(&pki, REVIEWS).await;
    let app = sidecar(&pki, FRONTEND, &[(PAYMENTS_ENDPOINT, impostor.addr)]).await;
    let answer = app
        .raw(b"POST /charge HTTP/1.1\r\nHost: payments.shop\r\nContent-Length: 2\r\nConnection: close\r\n\r\n{}")
        .await;
    assert_eq!(answer.status, 502, "{answer:?}");
    let expected = format!(
        "the server at {} presented `{REVIEWS}` but `payments/payments` is served by {PAYMENTS}",
        impostor.addr
    );
    assert!(answer.body.contains(&expected), "{}", answer.body);
    assert!(impostor.seen.requests().is_empty());
    assert_eq!(impostor.seen.tls(), 0);
    assert!(app
        .ctx
        .metrics
        .render()
        .contains("palisade_tls_handshake_failures_total{reason=\"unexpected_identity\"} 1"));
    assert_eq!(app.counted("payments/payments", "bad_gateway", 502), 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_connection_verified_for_one_service_is_not_reused_for_another() {
    let pki = TestPki::shop();
    let upstream = Upstream::start(&pki, REVIEWS).await;
    let app = sidecar(
        &pki,
        FRONTEND,
        &[(REVIEWS_ENDPOINT, upstream.addr), (PAYMENTS_ENDPOINT, upstream.addr)],
    )
    .await;
    assert_eq!(app.get("/reviews/1", &["Host: reviews.shop"]).await.status, 200);
    assert_eq!(app.get("/charge", &["Host: payments.shop"]).await.status, 502);
    assert_eq!(upstream.seen.tcp(), 2);
    assert_eq!(upstream.seen.tls(), 1);
    assert_eq!(upstream.seen.requests().len(), 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn one_connection_carries_every_request() {
    let pki = TestPki::shop();
    let upstream = Upstream::start(&pki, REVIEWS).await;
    let app = std::sync::Arc::new(sidecar(&pki, FRONTEND, &[(REVIEWS_ENDPOINT, upstream.addr)]).await);
    // Cold pool first: 20 at once make one connection between them.
    let mut concurrent = tokio::task::JoinSet::new();
    for i in 0..20 {
        let app = std::sync::Arc::clone(&app);
        concurrent.spawn(async move { app.get(&format!("/reviews/{i}"), &["Host: reviews.shop"]).await.status });
    }
    while let Some(status) = concurrent.join_next().await {
        assert_eq!(status.unwrap(), 200);
    }
    for i in 0..50 {
        let answer = app.get(&format!("/reviews/{i}"), &["Host: reviews.shop:8080"]).await;
        assert_eq!(answer.status, 200);
    }
    assert_eq!(upstream.seen.requests().len(), 70);
    assert_eq!(upstream.seen.tls(), 1);
    assert_eq!(upstream.seen.tcp(), 1);
    assert_eq!(app.outbound.pool.live_connections(), 1);
    assert_eq!(app.ctx.connections.len(), 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn grpc_over_h2c_passes_with_its_trailers() {
    let pki = TestPki::shop();
    let upstream = Upstream::start(&pki, REVIEWS).await;
    let app = sidecar(&pki, FRONTEND, &[(REVIEWS_ENDPOINT, upstream.addr)]).await;
    let message = Bytes::from_static(&[0, 0, 0, 0, 2, 8, 1]);
    let request = Request::post("http://reviews.shop:8080/shop.Reviews/List")
        .header("content-type", "application/grpc")
        .header("te", "trailers")
        .body(Full::new(message.clone()))
        .unwrap();
    let (parts, body, trailers) = h2c(app.addr, request).await;
    assert_eq!(parts.status, 200);
    assert_eq!(body, message);
    assert_eq!(trailers.unwrap().get("grpc-status").unwrap(), "0");
    assert!(parts.headers.get("x-request-id").is_some());
    let received = upstream.seen.requests().pop().unwrap();
    assert_eq!(received.uri.path(), "/shop.Reviews/List");
    assert_eq!(received.headers.get("te").unwrap(), "trailers");
    assert_eq!(received.headers.get("content-type").unwrap(), "application/grpc");
    assert_eq!(received.body, message);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn identity_trailers_are_stripped_both_ways_and_grpc_status_passes() {
    let pki = TestPki::shop();
    let upstream = Upstream::start(&pki, REVIEWS).await;
    let app = sidecar(&pki, FRONTEND, &[(REVIEWS_ENDPOINT, upstream.addr)]).await;
    let mut trailers = HeaderMap::new();
    trailers.insert(
        "x-forwarded-client-cert",
        HeaderValue::from_static("URI=spiffe://evil/ns/x/sa/admin"),
    );
    trailers.insert("x-palisade-peer", HeaderValue::from_static("forged"));
    trailers.insert("x-checksum", HeaderValue::from_static("abc"));
    let message = Bytes::from_static(&[0, 0, 0, 0, 2, 8, 1]);
    let body = Full::new(message.clone()).with_trailers(std::future::ready(Some(Ok::<_, Infallible>(trailers))));
    let request = Request::post("http://reviews.shop:8080/shop.Reviews/List")
        .header("content-type", "application/grpc")
        .header("te", "trailers")
        .body(body)
        .unwrap();
    let (parts, body, trailers) = h2c(app.addr, request).await;
    assert_eq!(parts.status, 200);
    assert_eq!(body, message);
    let trailers = trailers.unwrap();
    assert_eq!(trailers["grpc-status"], "0");
    assert!(trailers.get("x-palisade-peer").is_none(), "{trailers:?}");
    assert!(trailers.get("x-forwarded-client-cert").is_none(), "{trailers:?}");
    let received = upstream.seen.requests().pop().unwrap().trailers.unwrap();
    assert_eq!(received["x-checksum"], "abc");
    assert!(received.get("x-palisade-peer").is_none(), "{received:?}");
    assert!(received.get("x-forwarded-client-cert").is_none(), "{received:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn h2c_requests_are_bounded_and_canonicalized_too() {
    let pki = TestPki::shop();
    let upstream = Upstream::start(&pki, REVIEWS).await;
    let app = sidecar(&pki, FRONTEND, &[(REVIEWS_ENDPOINT, upstream.addr)]).await;
    let mut many = Request::get("http://reviews.shop/reviews");
    for i in 0..101 {
        many = many.header(format!("x-h{i}"), "1");
    }
    let cases = [
        (many.body(Full::<Bytes>::default()).unwrap(), 431),
        (
            Request::get("http://reviews.shop/reviews")
                .header("host", "payments.shop")
                .body(Full::default())
                .unwrap(),
            400,
        ),
        (
            Request::get("http://reviews.shop/a/../../x")
                .body(Full::default())
                .unwrap(),
            400,
        ),
    ];
    for (request, status) in cases {
        let shown = format!("{} {:?}", request.uri(), request.headers().get("host"));
        let (parts, _, _) = h2c(app.addr, request).await;
        assert_eq!(parts.status, status, "{shown}");
    }
    assert_eq!(upstream.seen.tcp(), 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_app_slow_to_send_its_headers_is_cut_off() {
    let pki = TestPki::shop();
    let limits = Limits {
        header_read_timeout: Duration::from_millis(200),
        ..Limits::default()
    };
    let app = Sidecar::with_limits(&pki, FRONTEND, handle(shop_pointing_at(&[])), limits).await;
    let mut tcp = tokio::net::TcpStream::connect(app.addr).await.unwrap();
    tcp.write_all(b"GET /reviews HTTP/1.1\r\nHost: reviews.shop\r\n")
        .await
        .unwrap();
    let mut buf = [0u8; 1024];
    let closed = tokio::time::timeout(Duration::from_secs(2), async {
        loop {
            match tcp.read(&mut buf).await {
                Ok(0) | Err(_) => break,
                Ok(_) => {}
            }
        }
    })
    .await;
    assert!(closed.is_ok(), "the connection is closed after the header read timeout");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn requests_without_one_meaning_are_refused_and_nothing_is_sent() {
    let pki = TestPki::shop();
    let upstream = Upstream::start(&pki, REVIEWS).await;
    let app = sidecar(&pki, FRONTEND, &[(REVIEWS_ENDPOINT, upstream.addr)]).await;
    let host = "Host: reviews.shop\r\n";
    let big = format!("x-big: {}\r\n", "a".repeat(70 * 1024));
    let many: String = (0..101).map(|i| format!("x-h{i}: 1\r\n")).collect();
    // (request line and headers, body, status)
    let cases: [(String, &str, u16); 10] = [
        (format!("GET /a/../../x HTTP/1.1\r\n{host}"), "", 400),
        (format!("GET /reviews%2F42 HTTP/1.1\r\n{host}"), "", 400),
        (format!("GET /reviews%2f42 HTTP/1.1\r\n{host}"), "", 400),
        (format!("GET / HTTP/1.1\r\n{host}Host: payments.shop\r\n"), "", 400),
        (format!("GET http://payments.shop/ HTTP/1.1\r\n{host}"), "", 400),
        (
            format!("POST /reviews HTTP/1.1\r\n{host}Content-Length: 5\r\nTransfer-Encoding: chunked\r\n"),
            "0\r\n\r\n",
            400,
        ),
        (
            format!("POST /reviews HTTP/1.1\r\n{host}Transfer-Encoding: chunked\r\nContent-Length: 5\r\n"),
            "0\r\n\r\n",
            400,
        ),
        (
            format!("POST /reviews HTTP/1.1\r\n{host}Content-Length: 2\r\nContent-Length: 2\r\n"),
            "ab",
            400,
        ),
        (format!("GET /reviews HTTP/1.1\r\n{host}{big}"), "", 431),
        (format!("GET /reviews HTTP/1.1\r\n{host}{many}"), "", 431),
    ];
    for (head, body, status) in &cases {
        let answer = app
            .raw(format!("{head}Connection: close\r\n\r\n{body}").as_bytes())
            .await;
        let shown: String = head.chars().take(120).collect();
        assert_eq!(answer.status, *status, "{shown}: {answer:?}");
    }
    assert_eq!(upstream.seen.tcp(), 0, "nothing was sent");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_connection_after_an_ambiguous_request_is_closed() {
    let pki = TestPki::shop();
    let upstream = Upstream::start(&pki, REVIEWS).await;
    let app = sidecar(&pki, FRONTEND, &[(REVIEWS_ENDPOINT, upstream.addr)]).await;
    // A smuggled second request hides in the first one's body: neither is forwarded.
    let answer = app
        .raw(b"POST /reviews HTTP/1.1\r\nHost: reviews.shop\r\nContent-Length: 40\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\nGET /admin HTTP/1.1\r\nHost: reviews.shop\r\n\r\n")
        .await;
    assert_eq!(answer.status, 400);
    assert_eq!(answer.header("connection"), Some("close"));
    assert_eq!(upstream.seen.tcp(), 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_revoked_server_loses_its_pooled_connection() {
    let pki = TestPki::shop();
    let upstream = Upstream::start(&pki, REVIEWS).await;
    let app = sidecar(&pki, FRONTEND, &[(REVIEWS_ENDPOINT, upstream.addr)]).await;
    assert_eq!(app.get("/reviews/1", &["Host: reviews.shop"]).await.status, 200);
    assert_eq!(app.ctx.connections.len(), 1);

    let entry = RevocationEntry {
        target: RevocationTarget::Serial(upstream.svid.serial().clone()),
        reason: "key compromise".to_owned(),
        revoked_at_unix: 0,
    };
    let revocations = RevocationSet::new(1, [&entry]);
    assert!(app.ctx.trust.update_revocations(revocations.clone()));
    assert_eq!(app.ctx.connections.close_revoked(&revocations), 1);
    let seen = std::sync::Arc::clone(&upstream.seen);
    let ctx = std::sync::Arc::clone(&app.ctx);
    let dropped = eventually(Duration::from_secs(1), || {
        seen.open.load(std::sync::atomic::Ordering::SeqCst) == 0 && ctx.connections.is_empty()
    })
    .await;
    assert!(dropped, "the pooled connection is closed within 1 s");

    let answer = app.get("/reviews/2", &["Host: reviews.shop"]).await;
    assert_eq!(answer.status, 502, "{answer:?}");
    assert!(answer.body.contains("revoked"), "{}", answer.body);
    assert_eq!(upstream.seen.requests().len(), 1);
    assert!(app
        .ctx
        .metrics
        .render()
        .contains("palisade_tls_handshake_failures_total{reason=\"revoked\"} 1"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_server_whose_svid_expires_loses_its_pooled_connection_within_a_second() {
    let pki = TestPki::shop();
    let svid = pki.svid_valid_for(REVIEWS, Duration::from_secs(3));
    let not_after = svid.not_after();
    let upstream = Upstream::presenting(&pki, svid).await;
    let app = sidecar(&pki, FRONTEND, &[(REVIEWS_ENDPOINT, upstream.addr)]).await;
    let sweeper = spawn_expiry_sweeper(Arc::clone(&app.ctx.connections), Arc::clone(&app.ctx.metrics));
    assert_eq!(app.get("/reviews/1", &["Host: reviews.shop"]).await.status, 200);
    assert_eq!(app.ctx.connections.len(), 1);
    assert!(SystemTime::now() < not_after);

    let until_expiry = not_after.duration_since(SystemTime::now()).unwrap_or_default();
    let (seen, ctx) = (Arc::clone(&upstream.seen), Arc::clone(&app.ctx));
    let dropped = eventually(until_expiry + Duration::from_millis(1500), || {
        seen.open.load(Ordering::SeqCst) == 0 && ctx.connections.is_empty()
    })
    .await;
    sweeper.abort();
    assert!(
        dropped,
        "the pooled connection is closed within ~1 s of the server's not_after"
    );
    assert!(SystemTime::now() >= not_after, "not before it expired");
    assert_eq!(app.outbound.pool.live_connections(), 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn without_a_snapshot_everything_is_denied() {
    let pki = TestPki::shop();
    let upstream = Upstream::start(&pki, REVIEWS).await;
    let app = Sidecar::start(&pki, FRONTEND, empty_handle()).await;
    let answer = app
        .get("/reviews/1", &["Host: reviews.shop", "X-Request-Id: r-1"])
        .await;
    assert_eq!(answer.status, 403);
    assert_eq!(answer.body, r#"{"decision":"deny","side":"egress","requestId":"r-1"}"#);
    assert_eq!(upstream.seen.tcp(), 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_endpoint_that_is_down_is_503() {
    let pki = TestPki::shop();
    let closed = {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        listener.local_addr().unwrap()
    };
    let app = sidecar(&pki, FRONTEND, &[(REVIEWS_ENDPOINT, closed)]).await;
    let answer = app.get("/reviews/1", &["Host: reviews.shop"]).await;
    assert_eq!(answer.status, 503, "{answer:?}");
    assert!(answer.body.contains(&closed.to_string()), "{}", answer.body);
}

/// A snapshot that moves a service to another endpoint retires the pooled
/// connection to the old one; requests go to the new one.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_new_snapshot_retires_connections_it_no_longer_names() {
    let pki = TestPki::shop();
    let old = Upstream::start(&pki, REVIEWS).await;
    let new = Upstream::start(&pki, REVIEWS).await;
    let app = sidecar(&pki, FRONTEND, &[(REVIEWS_ENDPOINT, old.addr)]).await;
    assert_eq!(app.get("/reviews", &["Host: reviews.shop"]).await.status, 200);
    assert_eq!(app.ctx.connections.len(), 1);

    app.ctx
        .policy
        .store(Some(Arc::new(shop_pointing_at(&[(REVIEWS_ENDPOINT, new.addr)]))));
    assert_eq!(app.get("/reviews", &["Host: reviews.shop"]).await.status, 200);
    assert_eq!(new.seen.requests().len(), 1);
    assert_eq!(old.seen.requests().len(), 1, "nothing more went to the old endpoint");
    let retired = eventually(Duration::from_secs(2), || {
        app.ctx.connections.len() == 1 && app.outbound.pool.live_connections() == 1
    })
    .await;
    assert!(retired, "the connection to the old endpoint is still open");
}
