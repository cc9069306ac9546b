//! The webhook over real TLS on loopback, as an API server calls it.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use http::{Method, Request, StatusCode};
use http_body_util::{BodyExt, Full};
use hyper_util::rt::{TokioExecutor, TokioIo};
use rcgen::{BasicConstraints, CertificateParams, DnType, IsCa, Issuer, KeyPair};
use rustls::pki_types::{CertificateDer, ServerName};
use rustls::{ClientConfig, RootCertStore, SupportedProtocolVersion};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{oneshot, watch};
use tokio::task::JoinHandle;
use tokio_rustls::client::TlsStream;
use tokio_rustls::TlsConnector;

use super::super::server::PATH;
use super::super::{serve, AdmissionReview, ReviewContext, WebhookError, WebhookLimits, WebhookMetrics, WebhookParams};
use super::*;

/// The name the API server calls the webhook by.
const SERVICE_DNS: &str = "palisade-controller.palisade-system.svc";
/// The body limit of the test server.
const MAX_BODY: usize = 64 * 1024;

/// A CA and a serving certificate it issued for [`SERVICE_DNS`] and 127.0.0.1.
struct Pki {
    ca: CertificateDer<'static>,
    cert_pem: String,
    key_pem: String,
}

impl Pki {
    fn new(name: &str) -> Self {
        let ca_key = KeyPair::generate().unwrap();
        let mut ca_params = CertificateParams::new(Vec::<String>::new()).unwrap();
        ca_params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        ca_params.distinguished_name.push(DnType::CommonName, name);
        let ca = ca_params.self_signed(&ca_key).unwrap();
        let issuer = Issuer::new(ca_params, ca_key);
        let key = KeyPair::generate().unwrap();
        let params = CertificateParams::new(vec![SERVICE_DNS.to_owned(), "127.0.0.1".to_owned()]).unwrap();
        let cert = params.signed_by(&key, &issuer).unwrap();
        Self {
            ca: ca.der().clone(),
            cert_pem: cert.pem(),
            key_pem: key.serialize_pem(),
        }
    }
}

/// A running webhook with its files, context and counters.
struct Webhook {
    addr: SocketAddr,
    dir: TempDir,
    context: watch::Sender<ReviewContext>,
    metrics: Arc<WebhookMetrics>,
    stop: Option<oneshot::Sender<()>>,
    task: JoinHandle<Result<(), WebhookError>>,
}

impl Webhook {
    async fn start(pki: &Pki, name: &str) -> Self {
        let dir = TempDir::new(name);
        dir.write("tls.crt", &pki.cert_pem);
        dir.write("tls.key", &pki.key_pem);
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let (context, receiver) = watch::channel(no_bundle());
        let metrics = Arc::new(WebhookMetrics::default());
        let params = WebhookParams {
            listener,
            cert: dir.path("tls.crt"),
            key: dir.path("tls.key"),
            context: receiver,
            limits: WebhookLimits {
                max_body_bytes: MAX_BODY,
                reload_interval: Duration::from_millis(100),
                body_read_timeout: Duration::from_secs(1),
                ..WebhookLimits::default()
            },
            metrics: Arc::clone(&metrics),
        };
        let (stop, stopped) = oneshot::channel::<()>();
        let task = tokio::spawn(serve(params, async move {
            let _ = stopped.await;
        }));
        Self {
            addr,
            dir,
            context,
            metrics,
            stop: Some(stop),
            task,
        }
    }

    /// POSTs an AdmissionReview and reads the answer's response.
    async fn review(&self, client: &Arc<ClientConfig>, body: &serde_json::Value) -> super::super::AdmissionResponse {
        let tls = connect(self.addr, client).await.unwrap();
        let (status, bytes) = send(tls, Method::POST, PATH, body.to_string().into_bytes()).await;
        assert_eq!(status, StatusCode::OK, "{}", String::from_utf8_lossy(&bytes));
        let answer: AdmissionReview = serde_json::from_slice(&bytes).unwrap();
        answer.response.unwrap()
    }

    async fn stop(mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
        (&mut self.task).await.unwrap().unwrap();
    }
}

/// A client trusting only `ca`, offering `alpn`, speaking `versions`.
fn client(
    ca: &CertificateDer<'static>,
    alpn: &[&[u8]],
    versions: &[&'static SupportedProtocolVersion],
) -> Arc<ClientConfig> {
    let mut roots = RootCertStore::empty();
    roots.add(ca.clone()).unwrap();
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let mut config = ClientConfig::builder_with_provider(provider)
        .with_protocol_versions(versions)
        .unwrap()
        .with_root_certificates(roots)
        .with_no_client_auth();
    config.alpn_protocols = alpn.iter().map(|p| p.to_vec()).collect();
    Arc::new(config)
}

fn h1_client(ca: &CertificateDer<'static>) -> Arc<ClientConfig> {
    client(ca, &[b"http/1.1"], rustls::DEFAULT_VERSIONS)
}

async fn connect(addr: SocketAddr, config: &Arc<ClientConfig>) -> std::io::Result<TlsStream<TcpStream>> {
    let tcp = TcpStream::connect(addr).await?;
    let name = ServerName::try_from(SERVICE_DNS).unwrap();
    TlsConnector::from(Arc::clone(config)).connect(name, tcp).await
}

/// One request over HTTP/2 when ALPN chose it, HTTP/1.1 otherwise.
async fn send(tls: TlsStream<TcpStream>, method: Method, path: &str, body: Vec<u8>) -> (StatusCode, Bytes) {
    let h2 = tls.get_ref().1.alpn_protocol() == Some(b"h2");
    let request = Request::builder()
        .method(method)
        .uri(format!("https://{SERVICE_DNS}{path}"))
        .header("content-type", "application/json")
        .body(Full::new(Bytes::from(body)))
        .unwrap();
    let io = TokioIo::new(tls);
    let response = if h2 {
        let (mut sender, connection) = hyper::client::conn::http2::handshake(TokioExecutor::new(), io)
            .await
            .unwrap();
        tokio::spawn(connection);
        sender.send_request(request).await.unwrap()
    } else {
        let (mut sender, connection) = hyper::client::conn::http1::handshake(io).await.unwrap();
        tokio::spawn(connection);
        let mut request = request;
        request
            .headers_mut()
            .insert("host", http::HeaderValue::from_static(SERVICE_DNS));
        sender.send_request(request).await.unwrap()
    };
    let status = response.status();
    (status, response.into_body().collect().await.unwrap().to_bytes())
}

/// Waits until `done` holds, failing the test after ten seconds.
async fn eventually(what: &str, mut done: impl AsyncFnMut() -> bool) {
    let deadline = Instant::now() + Duration::from_secs(10);
    while !done().await {
        assert!(Instant::now() < deadline, "timed out waiting until {what}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

#[tokio::test]
async fn over_tls_an_invalid_policy_is_refused_and_a_valid_one_admitted_on_http1_and_http2() {
    let pki = Pki::new("webhook CA");
    let webhook = Webhook::start(&pki, "tls-review").await;
    for alpn in [b"http/1.1".as_slice(), b"h2".as_slice()] {
        let client = client(&pki.ca, &[alpn], rustls::DEFAULT_VERSIONS);
        let invalid = Policy::ingress("payments", "reach", OUTSIDE).review("uid-bad", "CREATE");
        let response = webhook.review(&client, &invalid).await;
        assert_eq!((response.uid.as_str(), response.allowed), ("uid-bad", false));
        let status = response.status.unwrap();
        assert_eq!(status.code, 422);
        assert!(status
            .message
            .starts_with("CedarPolicy payments/reach is invalid:\nerror: ingress policy"));

        let valid = Policy::ingress("payments", "pci", PCI).review("uid-good", "CREATE");
        let response = webhook.review(&client, &valid).await;
        assert_eq!((response.uid.as_str(), response.allowed), ("uid-good", true));
    }
    assert_eq!((webhook.metrics.refused(), webhook.metrics.admitted()), (2, 2));
    webhook.stop().await;
}

#[tokio::test]
async fn an_api_server_speaking_tls_1_2_is_served() {
    let pki = Pki::new("webhook CA");
    let webhook = Webhook::start(&pki, "tls12").await;
    let client = client(&pki.ca, &[b"http/1.1"], &[&rustls::version::TLS12]);
    let valid = Policy::ingress("payments", "pci", PCI).review("uid-12", "CREATE");
    assert!(webhook.review(&client, &valid).await.allowed);
    webhook.stop().await;
}

#[tokio::test]
async fn a_client_that_does_not_trust_the_certificate_fails_the_handshake() {
    let pki = Pki::new("webhook CA");
    let webhook = Webhook::start(&pki, "untrusted").await;
    let stranger = Pki::new("another CA");
    assert!(connect(webhook.addr, &h1_client(&stranger.ca)).await.is_err());
    webhook.stop().await;
}

#[tokio::test]
async fn the_policy_is_checked_against_the_bundle_the_controller_published_last() {
    let pki = Pki::new("webhook CA");
    let webhook = Webhook::start(&pki, "context").await;
    let client = h1_client(&pki.ca);
    let body = Policy::ingress("payments", "pci", PCI).review("uid-ctx", "CREATE");
    assert!(webhook.review(&client, &body).await.allowed);
    // The controller publishes a bundle in which web already uses that `@id`.
    let web = PCI.replace("payments/payments", "web/frontend");
    let published = published(&[("policies/web/ingress/copy.cedar", web.as_str())]);
    webhook.context.send(published).unwrap();
    let response = webhook.review(&client, &body).await;
    assert!(!response.allowed);
    assert!(response.status.unwrap().message.contains("is used twice"));
    webhook.stop().await;
}

#[tokio::test]
async fn what_is_not_a_review_gets_an_http_error() {
    let pki = Pki::new("webhook CA");
    let webhook = Webhook::start(&pki, "http-errors").await;
    let client = h1_client(&pki.ca);
    let cases = [
        (
            Method::POST,
            PATH,
            vec![b' '; MAX_BODY + 1],
            StatusCode::PAYLOAD_TOO_LARGE,
        ),
        (Method::GET, PATH, Vec::new(), StatusCode::METHOD_NOT_ALLOWED),
        (Method::POST, "/validate/other", b"{}".to_vec(), StatusCode::NOT_FOUND),
        (Method::POST, "/", b"{}".to_vec(), StatusCode::NOT_FOUND),
    ];
    for (method, path, body, expected) in cases {
        let tls = connect(webhook.addr, &client).await.unwrap();
        let (status, _) = send(tls, method.clone(), path, body).await;
        assert_eq!(status, expected, "{method} {path}");
    }
    // Garbage that fits is a review refused, not an HTTP error: the API server reads the reason.
    let tls = connect(webhook.addr, &client).await.unwrap();
    let (status, body) = send(tls, Method::POST, PATH, b"\x00garbage".to_vec()).await;
    assert_eq!(status, StatusCode::OK);
    let answer: AdmissionReview = serde_json::from_slice(&body).unwrap();
    assert!(!answer.response.unwrap().allowed);
    assert_eq!((webhook.metrics.rejected_http(), webhook.metrics.malformed()), (4, 1));
    webhook.stop().await;
}

#[tokio::test]
async fn a_body_that_does_not_arrive_gets_408() {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let pki = Pki::new("webhook CA");
    let webhook = Webhook::start(&pki, "slow-body").await;
    let mut tls = connect(webhook.addr, &h1_client(&pki.ca)).await.unwrap();
    let head = format!("POST {PATH} HTTP/1.1\r\nhost: {SERVICE_DNS}\r\ncontent-length: 100\r\n\r\n{{\"api");
    tls.write_all(head.as_bytes()).await.unwrap();
    let mut answer = Vec::new();
    let read = tokio::time::timeout(Duration::from_secs(10), tls.read_to_end(&mut answer)).await;
    assert!(read.is_ok(), "no answer within the test's deadline");
    let answer = String::from_utf8_lossy(&answer);
    assert!(answer.starts_with("HTTP/1.1 408 "), "{answer}");
    webhook.stop().await;
}

#[tokio::test]
async fn a_rotated_certificate_is_picked_up_and_an_unusable_one_is_ignored() {
    let old = Pki::new("old CA");
    let webhook = Webhook::start(&old, "rotation").await;
    let (old_client, new) = (h1_client(&old.ca), Pki::new("new CA"));
    let new_client = h1_client(&new.ca);
    assert!(connect(webhook.addr, &new_client).await.is_err());

    // Half a rotation (a new certificate, the old key) cannot be used: the old pair stays.
    webhook.dir.write("tls.crt", &new.cert_pem);
    eventually("the mismatched pair is refused", async || {
        webhook.metrics.certificate_reload_failures() >= 1
    })
    .await;
    assert!(connect(webhook.addr, &old_client).await.is_ok());

    webhook.dir.write("tls.key", &new.key_pem);
    eventually("the new certificate is served", async || {
        connect(webhook.addr, &new_client).await.is_ok()
    })
    .await;
    assert!(connect(webhook.addr, &old_client).await.is_err());
    assert_eq!(webhook.metrics.certificate_reloads(), 1);
    let valid = Policy::ingress("payments", "pci", PCI).review("uid-rot", "CREATE");
    assert!(webhook.review(&new_client, &valid).await.allowed);
    webhook.stop().await;
}

/// Whether an error is the one a case expects.
type IsExpected = fn(&WebhookError) -> bool;

#[tokio::test]
async fn serve_refuses_to_start_without_a_usable_certificate_and_key() {
    let (pki, other) = (Pki::new("webhook CA"), Pki::new("other CA"));
    let dir = TempDir::new("unusable");
    dir.write("cert.pem", &pki.cert_pem);
    dir.write("key.pem", &pki.key_pem);
    dir.write("other-key.pem", &other.key_pem);
    dir.write("garbage.pem", "not pem at all\n");
    let cases: [(&str, &str, IsExpected); 4] = [
        ("missing.pem", "key.pem", |e| matches!(e, WebhookError::Read { .. })),
        ("garbage.pem", "key.pem", |e| matches!(e, WebhookError::Pem { .. })),
        ("cert.pem", "garbage.pem", |e| matches!(e, WebhookError::Pem { .. })),
        ("cert.pem", "other-key.pem", |e| matches!(e, WebhookError::Key { .. })),
    ];
    for (cert, key, expected) in cases {
        let params = WebhookParams {
            listener: TcpListener::bind("127.0.0.1:0").await.unwrap(),
            cert: dir.path(cert),
            key: dir.path(key),
            context: watch::channel(no_bundle()).1,
            limits: WebhookLimits::default(),
            metrics: Arc::default(),
        };
        let error = serve(params, std::future::pending()).await.unwrap_err();
        assert!(expected(&error), "{cert} {key}: {error}");
        assert!(
            error.to_string().contains(cert) || error.to_string().contains(key),
            "{error}"
        );
    }
}
