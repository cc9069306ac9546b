//! The fixture: an app, a sidecar in front of it, and callers.

use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use bytes::Bytes;
use http::{HeaderMap, HeaderValue, Method, Request, Response, StatusCode, Version};
use http_body_util::combinators::BoxBody;
use http_body_util::{BodyExt, Full};
use hyper::body::Incoming;
use hyper::client::conn::{http1, http2};
use hyper::service::service_fn;
use hyper_util::rt::{TokioExecutor, TokioIo};
use palisade_ca::svid::SvidFacts;
use palisade_ca::tls::{client_config, SvidResolver};
use palisade_ca::verify::SvidServerVerifier;
use palisade_ca::{Serial, SpiffeId, Svid};
use rustls::ClientConfig;
use rustls_pki_types::ServerName;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::task::JoinHandle;
use tokio_rustls::client::TlsStream;
use tokio_rustls::TlsConnector;

use crate::connections::LiveConnections;
use crate::context::{Context, Limits};
use crate::inbound::{serve, AppProtocol, Inbound};
use crate::metrics::{Metrics, RequestLabels};
use crate::state::PolicyHandle;
use crate::testing::{handle, shop_state, TestPki};

/// A sidecar for one shop workload with its app behind it, serving until dropped.
pub(super) struct Mesh {
    pub(super) pki: TestPki,
    pub(super) ctx: Arc<Context>,
    pub(super) addr: SocketAddr,
    pub(super) app: Arc<App>,
    app_protocol: AppProtocol,
    pub(super) server: JoinHandle<()>,
}

impl Drop for Mesh {
    fn drop(&mut self) {
        self.server.abort();
    }
}

impl Mesh {
    /// The shop policy in force, `Auto` app protocol, default limits.
    pub(super) async fn start(local: &str) -> Self {
        Self::with(local, handle(shop_state()), AppProtocol::Auto, Limits::default()).await
    }

    pub(super) async fn with(local: &str, policy: PolicyHandle, app_protocol: AppProtocol, limits: Limits) -> Self {
        let pki = TestPki::shop();
        let ctx = Arc::new(Context {
            id: SpiffeId::parse(local).unwrap(),
            resolver: SvidResolver::with(&pki.svid(local)).unwrap(),
            trust: pki.trust(),
            policy,
            connections: LiveConnections::new(),
            metrics: Arc::new(Metrics::default()),
            audit: Arc::new(crate::audit::NoAudit),
            strict_audit: false,
            egress: crate::egress::EgressSettings::default(),
            limits,
        });
        let app = App::start().await;
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let inbound = Arc::new(Inbound {
            ctx: Arc::clone(&ctx),
            app: app.addr,
            app_protocol,
        });
        let server = tokio::spawn(serve(listener, inbound));
        Self {
            pki,
            ctx,
            addr,
            app,
            app_protocol,
            server,
        }
    }

    /// Serves again on a new port, forwarding to `app`.
    pub(super) async fn restart_with_app(&mut self, app: SocketAddr) {
        self.server.abort();
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        self.addr = listener.local_addr().unwrap();
        let inbound = Arc::new(Inbound {
            ctx: Arc::clone(&self.ctx),
            app,
            app_protocol: self.app_protocol,
        });
        self.server = tokio::spawn(serve(listener, inbound));
    }

    /// A caller's TLS config: `svid` as its client certificate (none: no
    /// certificate), expecting this sidecar's identity from the server.
    pub(super) fn client_config(&self, svid: Option<&Svid>, alpn: &[&[u8]]) -> Arc<ClientConfig> {
        let resolver = match svid {
            Some(svid) => SvidResolver::with(svid).unwrap(),
            None => SvidResolver::empty(),
        };
        let verifier = SvidServerVerifier::new(self.pki.trust(), vec![self.ctx.id.clone()]);
        Arc::new(client_config(resolver, verifier, alpn).unwrap())
    }

    pub(super) async fn h1(&self, caller: &str) -> http1::SendRequest<Full<Bytes>> {
        let config = self.client_config(Some(&self.pki.svid(caller)), &[b"http/1.1"]);
        h1_over(tls_connect(self.addr, config).await.unwrap()).await
    }

    pub(super) async fn h2(&self, caller: &str) -> http2::SendRequest<Full<Bytes>> {
        self.h2_with(self.client_config(Some(&self.pki.svid(caller)), &[b"h2"]))
            .await
            .0
    }

    /// An HTTP/2 connection and a receiver that resolves when it has closed.
    pub(super) async fn h2_with(
        &self,
        config: Arc<ClientConfig>,
    ) -> (http2::SendRequest<Full<Bytes>>, tokio::sync::oneshot::Receiver<()>) {
        let tls = tls_connect(self.addr, config).await.unwrap();
        let (sender, connection) = http2::handshake(TokioExecutor::new(), TokioIo::new(tls)).await.unwrap();
        let (closed_tx, closed) = tokio::sync::oneshot::channel();
        tokio::spawn(async move {
            let _ = connection.await;
            let _ = closed_tx.send(());
        });
        (sender, closed)
    }

    /// An HTTP/2 connection as `caller` whose request bodies may carry trailers.
    pub(super) async fn h2_boxed(&self, caller: &str) -> http2::SendRequest<BoxBody<Bytes, Infallible>> {
        let config = self.client_config(Some(&self.pki.svid(caller)), &[b"h2"]);
        let tls = tls_connect(self.addr, config).await.unwrap();
        let (sender, connection) = http2::handshake(TokioExecutor::new(), TokioIo::new(tls)).await.unwrap();
        tokio::spawn(connection);
        sender
    }

    /// Whether a request with `config` fails (handshake refused or connection cut).
    pub(super) async fn request_fails(&self, config: Arc<ClientConfig>) -> bool {
        let attempt = async {
            let tls = tls_connect(self.addr, config).await.map_err(|e| e.to_string())?;
            let (mut sender, connection) = http2::handshake(TokioExecutor::new(), TokioIo::new(tls))
                .await
                .map_err(|e| e.to_string())?;
            tokio::spawn(connection);
            let request = Request::post("https://payments.shop/charge")
                .body(Full::<Bytes>::default())
                .unwrap();
            sender.send_request(request).await.map_err(|e| e.to_string())
        };
        within(attempt).await.is_err()
    }

    /// Writes `wire` over a TLS connection (ALPN http/1.1) and returns the head of
    /// the answer.
    pub(super) async fn raw(&self, caller: &str, wire: &[u8]) -> String {
        let config = self.client_config(Some(&self.pki.svid(caller)), &[b"http/1.1"]);
        let mut tls = tls_connect(self.addr, config).await.unwrap();
        tls.write_all(wire).await.unwrap();
        let answer = read_some(&mut tls).await;
        String::from_utf8_lossy(&answer).into_owned()
    }

    /// Writes `wire` over a TLS connection (ALPN http/1.1) and returns the status of
    /// every answer until the sidecar closes the connection (within 5 s), and
    /// whether the last one asked to close it.
    pub(super) async fn raw_until_closed(&self, caller: &str, wire: &[u8]) -> (Vec<u16>, bool) {
        let config = self.client_config(Some(&self.pki.svid(caller)), &[b"http/1.1"]);
        let mut tls = tls_connect(self.addr, config).await.unwrap();
        tls.write_all(wire).await.unwrap();
        let mut answer = Vec::new();
        let read = tokio::time::timeout(Duration::from_secs(5), tls.read_to_end(&mut answer)).await;
        assert!(read.is_ok(), "the connection is still open after 5 s");
        let answer = String::from_utf8_lossy(&answer);
        let statuses = answer
            .match_indices("HTTP/1.1 ")
            .map(|(at, _)| answer[at + 9..at + 12].parse().unwrap())
            .collect();
        let last = answer.rsplit("HTTP/1.1 ").next().unwrap_or_default();
        (statuses, last.contains("\r\nconnection: close\r\n"))
    }

    /// How many requests were counted with these labels.
    pub(super) fn count(&self, source: &str, destination: &str, decision: &str, status: u16) -> u64 {
        self.ctx.metrics.request_count(&RequestLabels {
            source,
            destination,
            side: palisade_authz::Direction::Ingress,
            decision,
            status,
        })
    }

    /// Waits (up to 5 s) until the metrics page holds `line`.
    pub(super) async fn wait_for_metric(&self, line: &str) {
        for _ in 0..500 {
            if self.ctx.metrics.render().contains(line) {
                return;
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        panic!("metric `{line}` not found in:\n{}", self.ctx.metrics.render());
    }
}

pub(super) async fn tls_connect(addr: SocketAddr, config: Arc<ClientConfig>) -> std::io::Result<TlsStream<TcpStream>> {
    tls_over(TcpStream::connect(addr).await?, config).await
}

/// A TLS connection to `addr` from the local address `from` (another loopback
/// address is another source IP).
pub(super) async fn tls_connect_from(
    from: std::net::IpAddr,
    addr: SocketAddr,
    config: Arc<ClientConfig>,
) -> std::io::Result<TlsStream<TcpStream>> {
    let socket = tokio::net::TcpSocket::new_v4()?;
    socket.bind(SocketAddr::new(from, 0))?;
    tls_over(socket.connect(addr).await?, config).await
}

async fn tls_over(tcp: TcpStream, config: Arc<ClientConfig>) -> std::io::Result<TlsStream<TcpStream>> {
    let name = ServerName::try_from("payments.shop").unwrap();
    TlsConnector::from(config).connect(name, tcp).await
}

pub(super) async fn h1_over(tls: TlsStream<TcpStream>) -> http1::SendRequest<Full<Bytes>> {
    let (sender, connection) = http1::handshake(TokioIo::new(tls)).await.unwrap();
    tokio::spawn(connection);
    sender
}

pub(super) fn server_serial(tls: &TlsStream<TcpStream>) -> Serial {
    let leaf = tls.get_ref().1.peer_certificates().unwrap().first().unwrap();
    SvidFacts::parse(leaf).unwrap().serial
}

pub(super) fn post(path: &str) -> http::request::Builder {
    Request::builder().method(Method::POST).uri(path)
}

/// A response, read whole.
#[derive(Debug)]
pub(super) struct Reply {
    pub(super) status: StatusCode,
    pub(super) headers: HeaderMap,
    pub(super) body: String,
    pub(super) trailers: Option<HeaderMap>,
}

pub(super) async fn send_h1(sender: &mut http1::SendRequest<Full<Bytes>>, request: Request<Full<Bytes>>) -> Reply {
    read_reply(within(sender.send_request(request)).await.unwrap()).await
}

pub(super) async fn send_h2<B>(sender: &mut http2::SendRequest<B>, request: Request<B>) -> Reply
where
    B: hyper::body::Body + Send + Unpin + 'static,
    B::Data: Send,
    B::Error: Into<Box<dyn std::error::Error + Send + Sync>>,
{
    read_reply(within(sender.send_request(request)).await.unwrap()).await
}

async fn read_reply(response: Response<Incoming>) -> Reply {
    let (parts, body) = response.into_parts();
    let collected = within(body.collect()).await.unwrap();
    let trailers = collected.trailers().cloned();
    Reply {
        status: parts.status,
        headers: parts.headers,
        body: String::from_utf8_lossy(&collected.to_bytes()).into_owned(),
        trailers,
    }
}

/// What arrives within 5 s, up to the end of a response head or the connection.
pub(super) async fn read_some(io: &mut (impl tokio::io::AsyncRead + Unpin)) -> Vec<u8> {
    let mut answer = Vec::new();
    let mut buf = [0u8; 4096];
    let deadline = tokio::time::Instant::now() + Duration::from_secs(5);
    while !answer.windows(4).any(|w| w == b"\r\n\r\n") {
        match tokio::time::timeout_at(deadline, io.read(&mut buf)).await {
            Ok(Ok(n)) if n > 0 => answer.extend_from_slice(&buf[..n]),
            _ => break,
        }
    }
    answer
}

pub(super) async fn within<T>(future: impl std::future::Future<Output = T>) -> T {
    tokio::time::timeout(Duration::from_secs(5), future)
        .await
        .expect("timed out after 5 s")
}

pub(super) fn lock<T>(mutex: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    mutex.lock().unwrap()
}

/// The app behind the sidecar: HTTP/1.1 and h2c on one port; records every request
/// and answers 200, with identity headers of its own that must not leak out, and
/// gRPC trailers for gRPC requests.
pub(super) struct App {
    pub(super) addr: SocketAddr,
    seen: Mutex<Vec<Seen>>,
    pub(super) connections: Mutex<usize>,
}

#[derive(Debug, Clone)]
pub(super) struct Seen {
    pub(super) uri: String,
    pub(super) version: Version,
    pub(super) headers: HeaderMap,
    pub(super) body: String,
    pub(super) trailers: Option<HeaderMap>,
}

impl Seen {
    pub(super) fn header_values(&self, name: &str) -> Vec<&str> {
        self.headers.get_all(name).iter().map(|v| v.to_str().unwrap()).collect()
    }
}

impl App {
    async fn start() -> Arc<Self> {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let app = Arc::new(Self {
            addr: listener.local_addr().unwrap(),
            seen: Mutex::default(),
            connections: Mutex::new(0),
        });
        let serving = Arc::clone(&app);
        tokio::spawn(async move {
            loop {
                let (tcp, _) = listener.accept().await.unwrap();
                *lock(&serving.connections) += 1;
                let app = Arc::clone(&serving);
                let service = service_fn(move |request| Arc::clone(&app).answer(request));
                tokio::spawn(async move {
                    let _ = hyper_util::server::conn::auto::Builder::new(TokioExecutor::new())
                        .serve_connection(TokioIo::new(tcp), service)
                        .await;
                });
            }
        });
        app
    }

    async fn answer(
        self: Arc<Self>,
        request: Request<Incoming>,
    ) -> Result<Response<impl hyper::body::Body<Data = Bytes, Error = Infallible>>, Infallible> {
        let (parts, body) = request.into_parts();
        let collected = body.collect().await.ok();
        let trailers = collected.as_ref().and_then(|c| c.trailers().cloned());
        let body = collected.map(|c| c.to_bytes()).unwrap_or_default();
        let grpc = parts.headers.get("content-type") == Some(&HeaderValue::from_static("application/grpc"));
        lock(&self.seen).push(Seen {
            uri: parts.uri.to_string(),
            version: parts.version,
            headers: parts.headers,
            body: String::from_utf8_lossy(&body).into_owned(),
            trailers,
        });
        let trailers = grpc.then(|| {
            let mut trailers = HeaderMap::new();
            trailers.insert("grpc-status", HeaderValue::from_static("0"));
            trailers.insert("x-palisade-secret", HeaderValue::from_static("leak"));
            trailers.insert("x-forwarded-client-cert", HeaderValue::from_static("leak"));
            Ok(trailers)
        });
        let body = Full::new(Bytes::from_static(b"hello from the app")).with_trailers(std::future::ready(trailers));
        let mut response = Response::new(body);
        let headers = response.headers_mut();
        headers.insert("x-palisade-secret", HeaderValue::from_static("leak"));
        headers.insert("x-forwarded-client-cert", HeaderValue::from_static("leak"));
        if grpc {
            headers.insert("content-type", HeaderValue::from_static("application/grpc"));
        }
        Ok(response)
    }

    pub(super) fn requests(&self) -> Vec<Seen> {
        lock(&self.seen).clone()
    }

    /// The one request the app received.
    pub(super) fn only(&self) -> Seen {
        let seen = self.requests();
        assert_eq!(seen.len(), 1, "{seen:?}");
        seen.into_iter().next().unwrap()
    }
}
