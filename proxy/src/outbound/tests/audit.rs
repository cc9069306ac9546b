//! What both sides of a mesh call record, and strict audit mode, with a real
//! caller's sidecar, a real callee's sidecar and its app on 127.0.0.1.

use std::net::SocketAddr;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;

use bytes::Bytes;
use http::{Request, Response};
use http_body_util::Full;
use hyper::body::Incoming;
use hyper::service::service_fn;
use hyper_util::rt::TokioIo;
use palisade_audit::record::{Effect, Side};
use tokio::net::TcpListener;
use tokio::task::JoinHandle;

use super::origin::{external_sidecar, HttpOrigin};
use super::support::{shop_pointing_at, Sidecar, Upstream};
use crate::inbound::{serve, AppProtocol, Inbound};
use crate::testing::{context_with, handle, RecordingSink, TestPki, FRONTEND, REVIEWS};

const REVIEWS_ENDPOINT: &str = "127.0.0.1:15003";

/// An app answering 200 to everything, counting requests.
struct App {
    addr: SocketAddr,
    requests: Arc<AtomicUsize>,
    task: JoinHandle<()>,
}

impl App {
    async fn start() -> Self {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let requests = Arc::new(AtomicUsize::new(0));
        let count = Arc::clone(&requests);
        let task = tokio::spawn(async move {
            while let Ok((tcp, _)) = listener.accept().await {
                let count = Arc::clone(&count);
                let service = service_fn(move |_: Request<Incoming>| {
                    count.fetch_add(1, Ordering::SeqCst);
                    async { Ok::<_, hyper::Error>(Response::new(Full::new(Bytes::from_static(b"reviews")))) }
                });
                tokio::spawn(hyper::server::conn::http1::Builder::new().serve_connection(TokioIo::new(tcp), service));
            }
        });
        Self { addr, requests, task }
    }
}

impl Drop for App {
    fn drop(&mut self) {
        self.task.abort();
    }
}

/// reviews' sidecar in front of an app, recording into `sink`; `strict` for strict
/// audit mode.
async fn reviews(pki: &TestPki, sink: Arc<RecordingSink>, strict: bool) -> (SocketAddr, App, JoinHandle<()>) {
    let app = App::start().await;
    let ctx = context_with(pki, REVIEWS, handle(shop_pointing_at(&[])), |ctx| {
        ctx.audit = sink;
        ctx.strict_audit = strict;
    });
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let inbound = Arc::new(Inbound {
        ctx,
        app: app.addr,
        app_protocol: AppProtocol::Http1,
    });
    (addr, app, tokio::spawn(serve(listener, inbound)))
}

/// frontend's sidecar, its registry sending reviews to `reviews`.
async fn frontend(pki: &TestPki, reviews: SocketAddr, sink: Arc<RecordingSink>, strict: bool) -> Sidecar {
    let state = shop_pointing_at(&[(REVIEWS_ENDPOINT, reviews)]);
    Sidecar::start_with(context_with(pki, FRONTEND, handle(state), |ctx| {
        ctx.audit = sink;
        ctx.strict_audit = strict;
    }))
    .await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn each_side_records_its_decision_with_the_status_the_caller_got_and_one_request_id() {
    let pki = TestPki::shop();
    let (callee_sink, caller_sink) = (Arc::new(RecordingSink::default()), Arc::new(RecordingSink::default()));
    let (addr, _app, server) = reviews(&pki, Arc::clone(&callee_sink), false).await;
    let caller = frontend(&pki, addr, Arc::clone(&caller_sink), false).await;
    // (request, status, caller's effect, callee's effect, callee's policies)
    let cases = [
        (
            "GET",
            "/reviews/1",
            "",
            200,
            Effect::Allow,
            Effect::Allow,
            vec!["reviews-readable-from-web"],
        ),
        (
            "GET",
            "/reviews/2",
            "x-debug: 1\r\n",
            200,
            Effect::Allow,
            Effect::DryRunDeny,
            // A dry-run denial names the dry-run policy that would deny.
            vec!["reviews-no-debug-header"],
        ),
        (
            "POST",
            "/reviews",
            "Content-Length: 0\r\n",
            403,
            Effect::Allow,
            Effect::Deny,
            vec![],
        ),
    ];
    for (i, (method, path, extra, status, caller_effect, callee_effect, policies)) in cases.into_iter().enumerate() {
        let id = format!("r-mesh-{i}");
        let head = format!(
            "{method} {path} HTTP/1.1\r\nHost: reviews.shop\r\nX-Request-Id: {id}\r\n{extra}Connection: close\r\n\r\n"
        );
        assert_eq!(caller.raw(head.as_bytes()).await.status, status, "{method} {path}");
        let egress = caller_sink.decisions().pop().unwrap();
        let ingress = callee_sink.decisions().pop().unwrap();
        assert_eq!((egress.side, ingress.side), (Side::Egress, Side::Ingress));
        assert_eq!(
            (egress.request_id.as_str(), ingress.request_id.as_str()),
            (id.as_str(), id.as_str())
        );
        assert_eq!((egress.status, ingress.status), (status, status), "{method} {path}");
        assert_eq!(
            (egress.effect, ingress.effect),
            (caller_effect, callee_effect),
            "{method} {path}"
        );
        assert_eq!(ingress.policies, policies, "{method} {path}");
        assert_eq!(egress.policies, ["web-frontend-calls-reviews"]);
        for decision in [&egress, &ingress] {
            assert_eq!(decision.principal, FRONTEND);
            assert_eq!(decision.resource, "reviews/reviews");
            assert_eq!((decision.action.as_str(), decision.path.as_str()), (method, path));
        }
    }
    assert_eq!(caller_sink.decisions().len(), 3, "one record per decision");
    assert_eq!(callee_sink.decisions().len(), 3);
    // Refused before any decision: counted, not recorded.
    let answer = caller
        .raw(b"GET /a/../../x HTTP/1.1\r\nHost: reviews.shop\r\nConnection: close\r\n\r\n")
        .await;
    assert_eq!(answer.status, 400);
    assert_eq!(caller_sink.decisions().len(), 3);
    assert!(caller_sink.externals().is_empty());
    server.abort();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn in_strict_mode_nothing_is_forwarded_while_auditing_is_unavailable() {
    let pki = TestPki::shop();
    let reason = "auditing is unavailable and this sidecar runs in strict audit mode";

    // The caller's side, to the mesh: the destination's sidecar sees nothing.
    let upstream = Upstream::start(&pki, REVIEWS).await;
    let caller = frontend(&pki, upstream.addr, Arc::new(RecordingSink::refusing()), true).await;
    let answer = caller.get("/reviews/1", &["Host: reviews.shop"]).await;
    assert_eq!(answer.status, 503, "{answer:?}");
    assert!(answer.body.contains(reason), "{}", answer.body);
    assert_eq!(upstream.seen.tcp(), 0);
    // A denial is still a denial.
    assert_eq!(caller.get("/", &["Host: checkout.shop"]).await.status, 403);

    // The caller's side, to an allowlisted external host: not connected.
    let origin = HttpOrigin::start().await;
    let port = origin.addr.port();
    let state = super::origin::shop_edited(|dir| {
        super::origin::replace(
            dir,
            "mesh.yaml",
            "outboundMode: REGISTRY_ONLY",
            "outboundMode: ALLOW_ANY",
        );
    });
    let (external, _) = external_sidecar(&pki, FRONTEND, state, &[("evil.example", "127.0.0.1")], |ctx| {
        ctx.audit = Arc::new(RecordingSink::refusing());
        ctx.strict_audit = true;
    })
    .await;
    let answer = external.get("/", &[&format!("Host: evil.example:{port}")]).await;
    assert_eq!(answer.status, 503, "{answer:?}");
    assert_eq!(origin.tcp(), 0);

    // The callee's side: the app sees nothing.
    let (addr, app, server) = reviews(&pki, Arc::new(RecordingSink::refusing()), true).await;
    let caller = frontend(&pki, addr, Arc::new(RecordingSink::default()), false).await;
    let answer = caller.get("/reviews/1", &["Host: reviews.shop"]).await;
    assert_eq!(answer.status, 503, "{answer:?}");
    assert!(answer.body.contains(reason), "{}", answer.body);
    assert_eq!(app.requests.load(Ordering::SeqCst), 0);
    server.abort();
}

/// Polls `f` every 10 ms for at most 5 s.
async fn within_5s(what: &str, mut f: impl FnMut() -> bool) {
    for _ in 0..500 {
        if f() {
            return;
        }
        tokio::time::sleep(std::time::Duration::from_millis(10)).await;
    }
    panic!("timed out waiting for {what}");
}

/// The app went away while the callee's app was still answering: hyper drops both
/// sidecars' handlers, yet each side records its decision (status 0: no response
/// was sent), so a request that reached an app is never missing from the log.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_request_whose_caller_leaves_before_the_answer_is_still_recorded_on_both_sides() {
    use tokio::io::AsyncWriteExt;
    let pki = TestPki::shop();
    // An app that answers only after 30 s: the caller leaves long before.
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let app_addr = listener.local_addr().unwrap();
    let hits = Arc::new(AtomicUsize::new(0));
    let count = Arc::clone(&hits);
    let app = tokio::spawn(async move {
        while let Ok((tcp, _)) = listener.accept().await {
            let count = Arc::clone(&count);
            let service = service_fn(move |_: Request<Incoming>| {
                count.fetch_add(1, Ordering::SeqCst);
                async {
                    tokio::time::sleep(std::time::Duration::from_secs(30)).await;
                    Ok::<_, hyper::Error>(Response::new(Full::new(Bytes::from_static(b"late"))))
                }
            });
            tokio::spawn(hyper::server::conn::http1::Builder::new().serve_connection(TokioIo::new(tcp), service));
        }
    });
    let callee_sink = Arc::new(RecordingSink::default());
    let ctx = context_with(&pki, REVIEWS, handle(shop_pointing_at(&[])), |ctx| {
        ctx.audit = callee_sink.clone();
    });
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let server = tokio::spawn(serve(
        listener,
        Arc::new(Inbound {
            ctx,
            app: app_addr,
            app_protocol: AppProtocol::Http1,
        }),
    ));
    let caller_sink = Arc::new(RecordingSink::default());
    let caller = frontend(&pki, addr, Arc::clone(&caller_sink), false).await;
    let mut tcp = tokio::net::TcpStream::connect(caller.addr).await.unwrap();
    tcp.write_all(b"GET /reviews/1 HTTP/1.1\r\nHost: reviews.shop\r\nX-Request-Id: gone-1\r\n\r\n")
        .await
        .unwrap();
    within_5s("the request to reach the app", || hits.load(Ordering::SeqCst) == 1).await;
    drop(tcp);
    within_5s("both sides' records", || {
        caller_sink.decisions().len() == 1 && callee_sink.decisions().len() == 1
    })
    .await;
    for (side, sink) in [(Side::Egress, &caller_sink), (Side::Ingress, &callee_sink)] {
        let decision = sink.decisions().pop().unwrap();
        assert_eq!((decision.side, decision.effect), (side, Effect::Allow));
        assert_eq!(decision.request_id, "gone-1");
        assert_eq!(decision.status, 0, "no response was sent");
    }
    server.abort();
    app.abort();
}
