//! Plain HTTP to hosts outside the mesh: the allowlist, the caller's egress policy,
//! BlackHole and Passthrough, and the addresses never reached, through a real
//! sidecar to a real HTTP server on 127.0.0.1 that the `resolve` map names.

use std::net::SocketAddr;

use bytes::Bytes;
use http::Request;
use http_body_util::Full;
use palisade_audit::record::{Decision, Effect, External, ExternalKind, Side};

use super::origin::{append, external_sidecar, replace, shop_edited, HttpOrigin, ORIGIN_BODY};
use super::support::{h2c, Answer, Sidecar};
use crate::state::PolicyState;
use crate::testing::{RecordingSink, TestPki, FRONTEND};

/// The shop, with `api.partner.example:PORT` allowlisted over HTTP for `web`,
/// frontend's egress permitting GET to it and forbidding anything to
/// `forbidden.example:PORT`; `ALLOW_ANY` when `allow_any`.
fn partner_shop(port: u16, allow_any: bool) -> PolicyState {
    shop_edited(|dir| {
        append(
            dir,
            "egress.yaml",
            &format!(
                "- host: api.partner.example\n  ports: [{port}]\n  protocol: http\n  workloads:\n    namespaces: [web]\n"
            ),
        );
        append(
            dir,
            "policies/web/egress/frontend-egress.cedar",
            &format!(
                r#"
@id("web-reads-partner")
permit (principal in Namespace::"web", action == Action::"GET", resource == ExternalHost::"api.partner.example:{port}");

@id("web-never-calls-forbidden")
forbid (principal in Namespace::"web", action, resource == ExternalHost::"forbidden.example:{port}");
"#
            ),
        );
        if allow_any {
            replace(
                dir,
                "mesh.yaml",
                "outboundMode: REGISTRY_ONLY",
                "outboundMode: ALLOW_ANY",
            );
        }
    })
}

/// Names every test maps to 127.0.0.1 (or to a metadata address).
const NAMES: [(&str, &str); 5] = [
    ("api.partner.example", "127.0.0.1"),
    ("evil.example", "127.0.0.1"),
    ("forbidden.example", "127.0.0.1"),
    ("loop.example", "127.0.0.1"),
    ("metadata.evil", "169.254.169.254"),
];

/// A frontend sidecar for `state`; its own listeners are its outbound port and
/// `admin`.
async fn frontend(pki: &TestPki, state: PolicyState, admin: SocketAddr) -> (Sidecar, std::sync::Arc<RecordingSink>) {
    let (app, sink) = external_sidecar(pki, FRONTEND, state, &NAMES, |_| {}).await;
    app.ctx.egress.listeners.set(vec![app.addr, admin]);
    (app, sink)
}

fn last_external(sink: &RecordingSink) -> External {
    sink.externals().pop().expect("an external record")
}

fn last_decision(sink: &RecordingSink) -> Decision {
    sink.decisions().pop().expect("a decision record")
}

/// One row: the request line and headers, the status, the record's kind, words
/// its reason holds, whether the origin is reached.
type Row = (String, u16, ExternalKind, String, bool);

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn external_http_follows_the_allowlist_the_egress_policy_and_the_outbound_mode() {
    let pki = TestPki::shop();
    let origin = HttpOrigin::start().await;
    let port = origin.addr.port();
    let admin = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let admin_addr = admin.local_addr().unwrap();
    let partner = format!("api.partner.example:{port}");
    let registry_only: Vec<Row> = vec![
        (
            format!("GET http://{partner}/items/./1?x=1 HTTP/1.1\r\nHost: {partner}"),
            200,
            ExternalKind::Allowlisted,
            "egress policy `web-reads-partner` permits it".to_owned(),
            true,
        ),
        (
            format!("POST /items HTTP/1.1\r\nHost: {partner}\r\nContent-Length: 2"),
            403,
            ExternalKind::BlackHole,
            format!("`{partner}`: no egress policy permits it"),
            false,
        ),
        (
            format!("GET / HTTP/1.1\r\nHost: evil.example:{port}"),
            403,
            ExternalKind::BlackHole,
            format!("`evil.example:{port}` is not in the egress allowlist"),
            false,
        ),
    ];
    let allow_any: Vec<Row> = vec![
        (
            format!("POST /anything HTTP/1.1\r\nHost: evil.example:{port}\r\nContent-Length: 2"),
            200,
            ExternalKind::Passthrough,
            "let through flagged (outboundMode ALLOW_ANY)".to_owned(),
            true,
        ),
        (
            format!("GET http://{partner}/items HTTP/1.1"),
            200,
            ExternalKind::Allowlisted,
            "is allowlisted for http".to_owned(),
            true,
        ),
        (
            format!("GET / HTTP/1.1\r\nHost: forbidden.example:{port}"),
            403,
            ExternalKind::BlackHole,
            format!("egress policy `web-never-calls-forbidden` forbids `forbidden.example:{port}`"),
            false,
        ),
        (
            format!("GET / HTTP/1.1\r\nHost: 169.254.169.254:{port}"),
            403,
            ExternalKind::BlackHole,
            "resolves to 169.254.169.254, a link-local address".to_owned(),
            false,
        ),
        (
            format!("GET / HTTP/1.1\r\nHost: metadata.evil:{port}"),
            403,
            ExternalKind::BlackHole,
            "resolves to 169.254.169.254, a link-local address".to_owned(),
            false,
        ),
        (
            format!("GET / HTTP/1.1\r\nHost: loop.example:{}", admin_addr.port()),
            403,
            ExternalKind::BlackHole,
            "a listener of this sidecar (a loop)".to_owned(),
            false,
        ),
    ];
    for (allow_any_mode, rows) in [(false, registry_only), (true, allow_any)] {
        let (app, sink) = frontend(&pki, partner_shop(port, allow_any_mode), admin_addr).await;
        let mut rows = rows;
        if allow_any_mode {
            let own = format!("loop.example:{}", app.addr.port());
            rows.push((
                format!("GET / HTTP/1.1\r\nHost: {own}"),
                403,
                ExternalKind::BlackHole,
                "a listener of this sidecar (a loop)".to_owned(),
                false,
            ));
        }
        for (head, status, kind, reason, reached) in rows {
            let before = origin.requests().len();
            let body = if head.contains("Content-Length: 2") { "{}" } else { "" };
            let answer = app
                .raw(format!("{head}\r\nX-Request-Id: r-ext\r\nConnection: close\r\n\r\n{body}").as_bytes())
                .await;
            assert_eq!(answer.status, status, "{head}: {answer:?}");
            assert_eq!(origin.requests().len() - before, usize::from(reached), "{head}");
            if reached {
                assert_eq!(origin.requests().pop().unwrap().body, body, "{head}");
            }
            let external = last_external(&sink);
            assert_eq!(external.kind, kind, "{head}: {external:?}");
            assert!(external.reason.contains(&reason), "{head}: {}", external.reason);
            assert_eq!(
                (external.protocol.as_str(), external.request_id.as_str()),
                ("http", "r-ext")
            );
            assert_eq!(external.workload, FRONTEND);
            let decision = last_decision(&sink);
            assert_eq!((decision.side, decision.status), (Side::Egress, status), "{head}");
            assert_eq!(decision.effect == Effect::Allow, status == 200, "{head}: {decision:?}");
            assert_eq!(
                answer.header("x-palisade-egress"),
                (kind == ExternalKind::Passthrough).then_some("passthrough"),
                "{head}"
            );
            if status == 403 {
                assert!(answer.body.contains(r#""side":"egress""#), "{}", answer.body);
                assert!(
                    !answer.body.contains("web-never-calls"),
                    "no policy id to the app: {}",
                    answer.body
                );
            }
        }
        let metrics = app.ctx.metrics.render();
        assert!(!metrics.contains("destination=\"evil.example"), "{metrics}");
        if allow_any_mode {
            assert_eq!(app.counted("external", "passthrough", 200), 1);
            assert_eq!(app.ctx.metrics.external_count("passthrough", "evil.example"), 1);
        } else {
            assert_eq!(app.counted("external", "blackhole", 403), 1);
            assert_eq!(app.counted("external", "deny", 403), 1);
        }
    }
    drop(admin);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_allowlisted_request_goes_out_as_decided_and_sanitized_both_ways() {
    let pki = TestPki::shop();
    let origin = HttpOrigin::start().await;
    let port = origin.addr.port();
    let (app, sink) = external_sidecar(&pki, FRONTEND, partner_shop(port, false), &NAMES, |_| {}).await;
    let head = format!(
        "GET http://API.Partner.Example:{port}/items/%31//x?q=1 HTTP/1.1\r\n\
         Host: api.partner.example:{port}\r\n\
         x-forwarded-client-cert: By=forged\r\nx-palisade-peer: forged\r\n\
         Connection: x-hop, close\r\nx-hop: 1\r\nx-kept: 1\r\nX-Request-Id: r-out\r\n\r\n"
    );
    let answer = app.raw(head.as_bytes()).await;
    assert_eq!(answer.status, 200, "{answer:?}");
    assert_eq!(answer.body, ORIGIN_BODY);
    assert_eq!(answer.header("x-origin"), Some("1"));
    assert!(answer.header("x-palisade-peer").is_none());
    assert!(answer.header("x-forwarded-client-cert").is_none());
    let received = origin.requests().pop().unwrap();
    assert_eq!(received.uri, "/items/1/x?q=1");
    assert_eq!(received.headers["host"], format!("api.partner.example:{port}").as_str());
    assert_eq!(received.headers["x-kept"], "1");
    assert_eq!(received.headers["x-request-id"], "r-out");
    for stripped in ["x-forwarded-client-cert", "x-palisade-peer", "x-hop"] {
        assert!(received.headers.get(stripped).is_none(), "{stripped} went out");
    }
    let decision = last_decision(&sink);
    assert_eq!(decision.resource, format!("api.partner.example:{port}"));
    assert_eq!(
        (decision.action.as_str(), decision.path.as_str()),
        ("GET", "/items/1/x")
    );
    assert_eq!(decision.policies, ["web-reads-partner"]);
    assert_eq!(decision.principal, FRONTEND);
    assert_eq!(decision.request_id, "r-out");

    // An app speaking h2c reaches it too, over HTTP/1.1.
    let request = Request::get(format!("http://api.partner.example:{port}/h2"))
        .body(Full::<Bytes>::default())
        .unwrap();
    let (parts, body, _) = h2c(app.addr, request).await;
    assert_eq!(parts.status, 200);
    assert_eq!(body, ORIGIN_BODY);
    let received = origin.requests().pop().unwrap();
    assert_eq!(received.uri, "/h2");
    assert_eq!(received.method, "GET");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn https_in_absolute_form_is_refused_with_a_hint() {
    let pki = TestPki::shop();
    let origin = HttpOrigin::start().await;
    let port = origin.addr.port();
    let (app, _) = external_sidecar(&pki, FRONTEND, partner_shop(port, true), &NAMES, |_| {}).await;
    let answer: Answer = app
        .get(
            &format!("https://evil.example:{port}/"),
            &[&format!("Host: evil.example:{port}")],
        )
        .await;
    assert_eq!(answer.status, 400, "{answer:?}");
    assert!(answer.body.contains("CONNECT"), "{}", answer.body);
    assert_eq!(origin.tcp(), 0);
}
