//! `CONNECT` tunnels: decided on the target's name before the `200`, then checked
//! on the SNI of the app's ClientHello before anything goes upstream, with a real
//! rustls client through the sidecar to a real rustls server on 127.0.0.1.

use std::time::Duration;

use bytes::Bytes;
use http::{Method, Request, Version};
use http_body_util::Full;
use palisade_audit::record::{Effect, ExternalKind, Side};
use rustls::AlertDescription;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

use super::origin::{external_sidecar, open_tunnel, read_to_close, replace, shop_edited, tls_over, TlsOrigin};
use super::support::{h2c, Sidecar};
use crate::context::Limits;
use crate::state::PolicyState;
use crate::testing::{RecordingSink, TestPki, CHECKOUT, FRONTEND};

/// The shop with Stripe allowlisted (and permitted to checkout) on `port` instead
/// of 443; `ALLOW_ANY` when `allow_any`.
fn stripe_shop(port: u16, allow_any: bool) -> PolicyState {
    shop_edited(|dir| {
        replace(dir, "egress.yaml", "ports: [443]", &format!("ports: [{port}]"));
        replace(
            dir,
            "policies/checkout/egress/checkout-egress.cedar",
            "api.stripe.com:443",
            &format!("api.stripe.com:{port}"),
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

const NAMES: [(&str, &str); 3] = [
    ("api.stripe.com", "127.0.0.1"),
    ("other.example", "127.0.0.1"),
    ("evil.example", "127.0.0.1"),
];

async fn sidecar(pki: &TestPki, id: &str, state: PolicyState) -> (Sidecar, std::sync::Arc<RecordingSink>) {
    external_sidecar(pki, id, state, &NAMES, |_| {}).await
}

/// The TLS alert a client was refused with.
fn alert(error: &std::io::Error) -> Option<AlertDescription> {
    match error.get_ref()?.downcast_ref::<rustls::Error>()? {
        rustls::Error::AlertReceived(alert) => Some(*alert),
        _ => None,
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_allowlisted_tunnel_carries_tls_end_to_end() {
    let pki = TestPki::shop();
    let origin = TlsOrigin::start(&["api.stripe.com"]).await;
    let port = origin.addr.port();
    let (app, sink) = sidecar(&pki, CHECKOUT, stripe_shop(port, false)).await;
    let target = format!("api.stripe.com:{port}");
    let (tcp, status, head) = open_tunnel(app.addr, &target).await;
    assert_eq!(status, 200, "{head}");
    assert!(!head.to_ascii_lowercase().contains("x-palisade-egress"), "{head}");
    let mut tls = tls_over(tcp, origin.client(true), "api.stripe.com").await.unwrap();
    tls.write_all(b"ping\n").await.unwrap();
    let mut answer = [0u8; 11];
    tls.read_exact(&mut answer).await.unwrap();
    assert_eq!(&answer, b"pong: ping\n");
    assert_eq!(origin.snis(), [Some("api.stripe.com".to_owned())]);

    let decision = sink.decisions().pop().unwrap();
    assert_eq!((decision.side, decision.effect), (Side::Egress, Effect::Allow));
    assert_eq!((decision.action.as_str(), decision.path.as_str()), ("connect", ""));
    assert_eq!(decision.resource, target);
    assert_eq!(decision.policies, ["checkout-calls-stripe"]);
    assert_eq!(decision.status, 200);
    let external = sink.externals().pop().unwrap();
    assert_eq!(external.kind, ExternalKind::Allowlisted);
    assert_eq!((external.host.as_str(), external.port), ("api.stripe.com", port));
    assert_eq!(
        (external.sni.as_str(), external.protocol.as_str()),
        ("api.stripe.com", "tls")
    );
    assert_eq!(external.request_id, decision.request_id);
    assert_eq!(app.counted("external", "allow", 200), 1);
    assert_eq!(app.ctx.metrics.external_count("allowlisted", "api.stripe.com"), 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_client_hello_without_the_target_as_its_sni_is_refused_and_nothing_goes_upstream() {
    let pki = TestPki::shop();
    let origin = TlsOrigin::start(&["api.stripe.com", "other.example"]).await;
    let port = origin.addr.port();
    let (app, sink) = sidecar(&pki, CHECKOUT, stripe_shop(port, false)).await;
    let target = format!("api.stripe.com:{port}");
    // (the name the client asks for, whether it sends SNI, the recorded reason)
    let cases = [
        (
            "other.example",
            true,
            "SNI `other.example` does not match the CONNECT target `api.stripe.com`",
        ),
        (
            "api.stripe.com",
            false,
            "the ClientHello has no SNI; a tunnel goes only to the name it was opened for, `api.stripe.com`",
        ),
    ];
    for (name, sni, reason) in cases {
        let (tcp, status, _) = open_tunnel(app.addr, &target).await;
        assert_eq!(status, 200);
        let error = tls_over(tcp, origin.client(sni), name).await.unwrap_err();
        assert_eq!(
            alert(&error),
            Some(AlertDescription::UnrecognisedName),
            "{name}: {error}"
        );
        let external = sink.externals().pop().unwrap();
        assert_eq!(external.kind, ExternalKind::BlackHole, "{name}");
        assert_eq!(external.reason, reason);
    }
    assert_eq!(origin.tcp(), 0, "the upstream saw no connection");
    assert_eq!(app.ctx.metrics.external_count("blackhole", "api.stripe.com"), 2);
}

/// A ClientHello naming `sni`, with an `encrypted_client_hello` extension.
fn hello_with_ech(sni: &str) -> Vec<u8> {
    let mut server_name = vec![0];
    server_name.extend((sni.len() as u16).to_be_bytes());
    server_name.extend(sni.as_bytes());
    let mut sni_data = (server_name.len() as u16).to_be_bytes().to_vec();
    sni_data.extend(server_name);
    let mut extensions = Vec::new();
    for (kind, data) in [(0u16, sni_data), (0xfe0d, vec![0; 32])] {
        extensions.extend(kind.to_be_bytes());
        extensions.extend((data.len() as u16).to_be_bytes());
        extensions.extend(data);
    }
    let mut body = vec![3, 3];
    body.extend([9; 32]);
    body.extend([0, 0, 2, 0x13, 0x01, 1, 0]);
    body.extend((extensions.len() as u16).to_be_bytes());
    body.extend(extensions);
    let mut message = vec![1];
    message.extend(&(body.len() as u32).to_be_bytes()[1..]);
    message.extend(body);
    let mut record = vec![22, 3, 1];
    record.extend((message.len() as u16).to_be_bytes());
    record.extend(message);
    record
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unreadable_oversized_slow_and_encrypted_client_hellos_are_refused_with_an_alert() {
    let pki = TestPki::shop();
    let origin = TlsOrigin::start(&["api.stripe.com"]).await;
    let port = origin.addr.port();
    let (app, sink) = external_sidecar(&pki, CHECKOUT, stripe_shop(port, false), &NAMES, |ctx| {
        ctx.limits = Limits {
            tunnel_hello_timeout: Duration::from_millis(300),
            ..Limits::default()
        };
    })
    .await;
    // A message of 16 KiB in two records: within no record's limit, beyond the
    // 16 KiB and one header a tunnel reads.
    let mut oversized = Vec::new();
    for half in 0..2 {
        oversized.extend([22, 3, 1, 0x20, 0x00]);
        let mut fragment = vec![0u8; 0x2000];
        if half == 0 {
            fragment[..4].copy_from_slice(&[1, 0, 0x3f, 0xfc]);
        }
        oversized.extend(fragment);
    }
    // (what the app sends after the 200, the alert, words of the recorded reason)
    let cases: [(Vec<u8>, u8, &str); 4] = [
        (hello_with_ech("api.stripe.com"), 112, "encrypted (ECH)"),
        (
            b"GET / HTTP/1.1\r\nHost: api.stripe.com\r\n\r\n".to_vec(),
            40,
            "not a TLS handshake record",
        ),
        (oversized, 40, "more than the 16384 accepted"),
        (
            hello_with_ech("api.stripe.com")[..20].to_vec(),
            40,
            "no whole TLS ClientHello within",
        ),
    ];
    let target = format!("api.stripe.com:{port}");
    for (sent, description, reason) in cases {
        let (mut tcp, status, _) = open_tunnel(app.addr, &target).await;
        assert_eq!(status, 200);
        tcp.write_all(&sent).await.unwrap();
        let answer = read_to_close(&mut tcp).await;
        assert_eq!(answer, [21, 3, 3, 0, 2, 2, description], "{reason}");
        let external = sink.externals().pop().unwrap();
        assert_eq!(external.kind, ExternalKind::BlackHole);
        assert!(external.reason.contains(reason), "{}", external.reason);
    }
    assert_eq!(origin.tcp(), 0, "the upstream saw no connection");
}

/// A ClientHello naming `sni`, hand-made (no key share: enough to be read, not to
/// finish a handshake).
fn plain_hello(sni: &str) -> Vec<u8> {
    let with_ech = hello_with_ech(sni);
    // Drop the ECH extension (its 36 bytes, last) and fix the three lengths.
    let mut hello = with_ech[..with_ech.len() - 36].to_vec();
    let fix = |hello: &mut Vec<u8>, at: usize, width: usize| {
        let len = hello.len() - at - width;
        let bytes = (len as u32).to_be_bytes();
        hello[at..at + width].copy_from_slice(&bytes[4 - width..]);
    };
    fix(&mut hello, 3, 2); // record
    fix(&mut hello, 6, 3); // handshake message
    fix(&mut hello, 5 + 4 + 2 + 32 + 1 + 4 + 2, 2); // extensions
    hello
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_client_hello_sent_with_the_connect_goes_upstream_verbatim_only_after_its_check() {
    let pki = TestPki::shop();
    let upstream = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = upstream.local_addr().unwrap().port();
    let (app, sink) = sidecar(&pki, CHECKOUT, stripe_shop(port, false)).await;
    let hello = plain_hello("api.stripe.com");
    assert_eq!(
        crate::egress::sni::parse(&hello).unwrap(),
        crate::egress::sni::Progress::Complete(crate::egress::sni::ClientHello {
            sni: Some("api.stripe.com".into()),
            encrypted: false
        })
    );
    let mut wire =
        format!("CONNECT api.stripe.com:{port} HTTP/1.1\r\nHost: api.stripe.com:{port}\r\n\r\n").into_bytes();
    wire.extend(&hello);
    let mut tcp = tokio::net::TcpStream::connect(app.addr).await.unwrap();
    tcp.write_all(&wire).await.unwrap();
    let (mut seen, _) = tokio::time::timeout(Duration::from_secs(10), upstream.accept())
        .await
        .unwrap()
        .unwrap();
    let mut received = vec![0u8; hello.len()];
    seen.read_exact(&mut received).await.unwrap();
    assert_eq!(received, hello, "the ClientHello went upstream verbatim");
    seen.write_all(b"ok").await.unwrap();
    let mut answer = Vec::new();
    while !answer.ends_with(b"ok") {
        let mut byte = [0u8; 1];
        assert_eq!(tcp.read(&mut byte).await.unwrap(), 1, "{answer:?}");
        answer.push(byte[0]);
    }
    let answer = String::from_utf8(answer).unwrap();
    assert!(answer.starts_with("HTTP/1.1 200"), "{answer}");
    assert!(answer.ends_with("\r\n\r\nok"), "{answer}");
    assert_eq!(sink.externals().pop().unwrap().kind, ExternalKind::Allowlisted);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_tunnel_to_a_host_not_allowlisted_is_black_holed_before_anything_is_connected() {
    let pki = TestPki::shop();
    let origin = TlsOrigin::start(&["api.stripe.com"]).await;
    let port = origin.addr.port();
    // (caller, target): a host in no rule, and Stripe for a workload the rule does not select.
    let cases = [
        (CHECKOUT, format!("evil.example:{port}")),
        (FRONTEND, format!("api.stripe.com:{port}")),
    ];
    for (caller, target) in cases {
        let (app, sink) = sidecar(&pki, caller, stripe_shop(port, false)).await;
        let (mut tcp, status, head) = open_tunnel(app.addr, &target).await;
        assert_eq!(status, 403, "{caller} {target}: {head}");
        let body = String::from_utf8(read_to_close(&mut tcp).await).unwrap();
        assert!(
            body.contains(&format!("`{target}` is not in the egress allowlist")),
            "{body}"
        );
        let external = sink.externals().pop().unwrap();
        assert_eq!(
            (external.kind, external.protocol.as_str()),
            (ExternalKind::BlackHole, "tls")
        );
        let decision = sink.decisions().pop().unwrap();
        assert_eq!((decision.effect, decision.status), (Effect::Deny, 403));
        assert_eq!(decision.action, "connect");
    }
    assert_eq!(origin.tcp(), 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_tunnel_through_passthrough_is_flagged_and_still_checked_on_its_sni() {
    let pki = TestPki::shop();
    let origin = TlsOrigin::start(&["other.example"]).await;
    let port = origin.addr.port();
    let (app, sink) = sidecar(&pki, FRONTEND, stripe_shop(port, true)).await;
    let (tcp, status, head) = open_tunnel(app.addr, &format!("other.example:{port}")).await;
    assert_eq!(status, 200);
    assert!(
        head.to_ascii_lowercase().contains("x-palisade-egress: passthrough"),
        "{head}"
    );
    let mut tls = tls_over(tcp, origin.client(true), "other.example").await.unwrap();
    tls.write_all(b"hi\n").await.unwrap();
    let mut answer = [0u8; 9];
    tls.read_exact(&mut answer).await.unwrap();
    assert_eq!(&answer, b"pong: hi\n");
    let external = sink.externals().pop().unwrap();
    assert_eq!(
        (external.kind, external.sni.as_str()),
        (ExternalKind::Passthrough, "other.example")
    );
    assert_eq!(app.counted("external", "passthrough", 200), 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tunnels_to_mesh_hosts_and_over_http2_are_refused() {
    let pki = TestPki::shop();
    let (app, sink) = sidecar(&pki, FRONTEND, stripe_shop(443, false)).await;
    let (mut tcp, status, _) = open_tunnel(app.addr, "reviews.shop:8080").await;
    assert_eq!(status, 403);
    let body = String::from_utf8(read_to_close(&mut tcp).await).unwrap();
    assert!(body.contains("`reviews.shop` is a mesh service"), "{body}");

    let mut connect = Request::new(Full::<Bytes>::default());
    *connect.method_mut() = Method::CONNECT;
    *connect.uri_mut() = "api.stripe.com:443".parse().unwrap();
    *connect.version_mut() = Version::HTTP_2;
    let (parts, body, _) = h2c(app.addr, connect).await;
    assert_eq!(parts.status, 405);
    assert!(String::from_utf8_lossy(&body).contains("HTTP/1.1 only"), "{body:?}");
    assert!(sink.externals().is_empty(), "{:?}", sink.externals());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn nothing_pipelined_after_a_refused_tunnel_is_read() {
    let pki = TestPki::shop();
    let origin = TlsOrigin::start(&["api.stripe.com"]).await;
    let port = origin.addr.port();
    let (app, _) = sidecar(&pki, FRONTEND, stripe_shop(port, true)).await;
    let wire = format!(
        "CONNECT reviews.shop:8080 HTTP/1.1\r\nHost: reviews.shop:8080\r\n\r\n\
         GET / HTTP/1.1\r\nHost: other.example:{port}\r\n\r\n"
    );
    let mut tcp = tokio::net::TcpStream::connect(app.addr).await.unwrap();
    tcp.write_all(wire.as_bytes()).await.unwrap();
    let answer = String::from_utf8(read_to_close(&mut tcp).await).unwrap();
    let statuses: Vec<&str> = answer
        .split("HTTP/1.1 ")
        .skip(1)
        .map(|response| &response[..3])
        .collect();
    assert_eq!(statuses, ["403"], "{answer}");
    assert!(answer.to_ascii_lowercase().contains("connection: close"), "{answer}");
    assert_eq!(origin.tcp(), 0);
}
