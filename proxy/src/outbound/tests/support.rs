//! What the outbound tests stand on: a mesh sidecar's mTLS HTTP/2 server that
//! records everything it receives, the shop's policy with its endpoints pointed at
//! such servers, the sidecar under test on an ephemeral port, and an app that
//! speaks raw HTTP/1 bytes or HTTP/2 with prior knowledge.

use std::convert::Infallible;
use std::net::SocketAddr;
use std::path::Path;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use bytes::Bytes;
use http::{HeaderMap, HeaderValue, Method, Request, Response, Uri};
use http_body_util::{BodyExt, Full};
use hyper::body::Incoming;
use hyper::service::service_fn;
use hyper_util::rt::{TokioExecutor, TokioIo};
use palisade_ca::svid::SvidFacts;
use palisade_ca::tls::{server_config, SvidResolver};
use palisade_ca::verify::SvidClientVerifier;
use palisade_ca::Svid;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::task::JoinHandle;

use crate::context::{Context, Limits};
use crate::outbound::{serve, Outbound};
use crate::state::{PolicyHandle, PolicyState};
use crate::testing::{context, context_with, shop_dir, TestPki};

/// The body the upstream answers plain requests with.
pub(super) const UPSTREAM_BODY: &str = "hello from upstream";

/// One request as the upstream received it.
#[derive(Debug, Clone)]
pub(super) struct Received {
    pub(super) method: Method,
    pub(super) uri: Uri,
    pub(super) headers: HeaderMap,
    pub(super) body: Bytes,
    pub(super) trailers: Option<HeaderMap>,
    /// The SPIFFE ID of the client certificate the caller presented.
    pub(super) client: Option<String>,
}

/// What an upstream saw.
#[derive(Debug, Default)]
pub(super) struct Seen {
    pub(super) tcp_accepts: AtomicUsize,
    pub(super) tls_accepts: AtomicUsize,
    /// Connections open now.
    pub(super) open: AtomicUsize,
    pub(super) requests: Mutex<Vec<Received>>,
}

impl Seen {
    pub(super) fn tcp(&self) -> usize {
        self.tcp_accepts.load(Ordering::SeqCst)
    }

    pub(super) fn tls(&self) -> usize {
        self.tls_accepts.load(Ordering::SeqCst)
    }

    pub(super) fn requests(&self) -> Vec<Received> {
        self.requests.lock().unwrap().clone()
    }
}

/// A destination's sidecar: mTLS (client certificate required), ALPN h2.
pub(super) struct Upstream {
    pub(super) addr: SocketAddr,
    pub(super) seen: Arc<Seen>,
    /// The SVID it presents.
    pub(super) svid: Svid,
    task: JoinHandle<()>,
}

impl Upstream {
    /// Starts one presenting an SVID for `presents`.
    pub(super) async fn start(pki: &TestPki, presents: &str) -> Self {
        Self::presenting(pki, pki.svid(presents)).await
    }

    /// Starts one presenting `svid`.
    pub(super) async fn presenting(pki: &TestPki, svid: Svid) -> Self {
        let config = server_config(
            SvidResolver::with(&svid).unwrap(),
            SvidClientVerifier::new(pki.trust(), true),
            &[b"h2"],
        )
        .unwrap();
        let acceptor = tokio_rustls::TlsAcceptor::from(Arc::new(config));
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let seen = Arc::new(Seen::default());
        let task = tokio::spawn(accept(listener, acceptor, Arc::clone(&seen)));
        Self { addr, seen, svid, task }
    }
}

impl Drop for Upstream {
    fn drop(&mut self) {
        self.task.abort();
    }
}

async fn accept(listener: TcpListener, acceptor: tokio_rustls::TlsAcceptor, seen: Arc<Seen>) {
    while let Ok((tcp, _)) = listener.accept().await {
        seen.tcp_accepts.fetch_add(1, Ordering::SeqCst);
        let (acceptor, seen) = (acceptor.clone(), Arc::clone(&seen));
        tokio::spawn(async move {
            let Ok(tls) = acceptor.accept(tcp).await else {
                return;
            };
            seen.tls_accepts.fetch_add(1, Ordering::SeqCst);
            let client = tls
                .get_ref()
                .1
                .peer_certificates()
                .and_then(|chain| chain.first())
                .and_then(|leaf| SvidFacts::parse(leaf).ok())
                .and_then(|facts| facts.id)
                .map(|id| id.to_string());
            seen.open.fetch_add(1, Ordering::SeqCst);
            let record = Arc::clone(&seen);
            let service = service_fn(move |request| respond(Arc::clone(&record), client.clone(), request));
            let _ = hyper::server::conn::http2::Builder::new(TokioExecutor::new())
                .serve_connection(TokioIo::new(tls), service)
                .await;
            seen.open.fetch_sub(1, Ordering::SeqCst);
        });
    }
}

type UpstreamBody =
    http_body_util::combinators::WithTrailers<Full<Bytes>, std::future::Ready<Option<Result<HeaderMap, Infallible>>>>;

/// Records the request; answers gRPC by echoing the body with `grpc-status: 0` in
/// the trailers, anything else with [`UPSTREAM_BODY`] and headers the app must not see.
async fn respond(
    seen: Arc<Seen>,
    client: Option<String>,
    request: Request<Incoming>,
) -> Result<Response<UpstreamBody>, hyper::Error> {
    let (parts, body) = request.into_parts();
    let collected = body.collect().await?;
    let trailers = collected.trailers().cloned();
    let body = collected.to_bytes();
    let grpc = parts
        .headers
        .get("content-type")
        .is_some_and(|v| v.as_bytes().starts_with(b"application/grpc"));
    seen.requests.lock().unwrap().push(Received {
        method: parts.method,
        uri: parts.uri,
        headers: parts.headers,
        body: body.clone(),
        trailers,
        client,
    });
    let response = if grpc {
        let mut trailers = HeaderMap::new();
        trailers.insert("grpc-status", HeaderValue::from_static("0"));
        trailers.insert("x-palisade-peer", HeaderValue::from_static("forged"));
        trailers.insert("x-forwarded-client-cert", HeaderValue::from_static("By=forged"));
        Response::builder()
            .header("content-type", "application/grpc")
            .body(Full::new(body).with_trailers(std::future::ready(Some(Ok(trailers)))))
    } else {
        Response::builder()
            .header("x-upstream", "1")
            .header("x-palisade-peer", "forged")
            .header("x-forwarded-client-cert", "By=forged")
            .body(Full::new(Bytes::from_static(UPSTREAM_BODY.as_bytes())).with_trailers(std::future::ready(None)))
    };
    Ok(response.unwrap())
}

/// The shop's policy, with each listed endpoint (`"127.0.0.1:15004"`) moved.
pub(super) fn shop_pointing_at(moves: &[(&str, SocketAddr)]) -> PolicyState {
    let dir = tempfile::tempdir().unwrap();
    copy_dir(&shop_dir(), dir.path());
    let services = dir.path().join("services.yaml");
    let mut yaml = std::fs::read_to_string(&services).unwrap();
    for (from, to) in moves {
        assert!(yaml.contains(from), "no endpoint {from} in services.yaml");
        yaml = yaml.replace(from, &to.to_string());
    }
    std::fs::write(&services, yaml).unwrap();
    let bundle = palisade_policy::load(dir.path()).unwrap();
    let digest = bundle.digest().to_string();
    PolicyState::build(1, digest, bundle).unwrap()
}

pub(super) fn copy_dir(from: &Path, to: &Path) {
    std::fs::create_dir_all(to).unwrap();
    for entry in std::fs::read_dir(from).unwrap() {
        let entry = entry.unwrap();
        let target = to.join(entry.file_name());
        if entry.file_type().unwrap().is_dir() {
            copy_dir(&entry.path(), &target);
        } else {
            std::fs::copy(entry.path(), target).unwrap();
        }
    }
}

/// The sidecar under test, serving its outbound port.
pub(super) struct Sidecar {
    pub(super) addr: SocketAddr,
    pub(super) ctx: Arc<Context>,
    pub(super) outbound: Arc<Outbound>,
    task: JoinHandle<()>,
}

impl Sidecar {
    pub(super) async fn start(pki: &TestPki, id: &str, policy: PolicyHandle) -> Self {
        Self::start_with(context(pki, id, policy)).await
    }

    /// One with these limits instead of the defaults.
    pub(super) async fn with_limits(pki: &TestPki, id: &str, policy: PolicyHandle, limits: Limits) -> Self {
        Self::start_with(context_with(pki, id, policy, |ctx| ctx.limits = limits)).await
    }

    pub(super) async fn start_with(ctx: Arc<Context>) -> Self {
        let outbound = Outbound::new(Arc::clone(&ctx));
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let task = tokio::spawn(serve(listener, Arc::clone(&outbound)));
        Self {
            addr,
            ctx,
            outbound,
            task,
        }
    }

    /// Sends raw HTTP/1 bytes as the app; the request should say `Connection: close`.
    pub(super) async fn raw(&self, request: &[u8]) -> Answer {
        raw(self.addr, request).await
    }

    /// `GET target` with these header lines, closing the connection after.
    pub(super) async fn get(&self, target: &str, headers: &[&str]) -> Answer {
        let mut request = format!("GET {target} HTTP/1.1\r\n");
        for line in headers {
            request.push_str(line);
            request.push_str("\r\n");
        }
        request.push_str("Connection: close\r\n\r\n");
        self.raw(request.as_bytes()).await
    }

    /// The count of requests with these labels.
    pub(super) fn counted(&self, destination: &str, decision: &str, status: u16) -> u64 {
        self.ctx.metrics.request_count(&crate::metrics::RequestLabels {
            source: self.ctx.id.as_str(),
            destination,
            side: palisade_authz::Direction::Egress,
            decision,
            status,
        })
    }
}

impl Drop for Sidecar {
    fn drop(&mut self) {
        self.task.abort();
    }
}

/// An HTTP/1 response as the app read it.
#[derive(Debug)]
pub(super) struct Answer {
    pub(super) status: u16,
    pub(super) headers: Vec<(String, String)>,
    pub(super) body: String,
}

impl Answer {
    pub(super) fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(n, _)| n.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }

    fn parse(bytes: &[u8]) -> Self {
        let text = String::from_utf8_lossy(bytes);
        let (head, body) = text
            .split_once("\r\n\r\n")
            .unwrap_or_else(|| panic!("no complete response in {text:?}"));
        let mut lines = head.split("\r\n");
        let status = lines.next().unwrap().split(' ').nth(1).unwrap().parse().unwrap();
        let headers: Vec<(String, String)> = lines
            .map(|line| {
                let (name, value) = line.split_once(':').unwrap();
                (name.trim().to_owned(), value.trim().to_owned())
            })
            .collect();
        let mut answer = Self {
            status,
            headers,
            body: body.to_owned(),
        };
        if answer
            .header("transfer-encoding")
            .is_some_and(|v| v.eq_ignore_ascii_case("chunked"))
        {
            answer.body = dechunk(body);
        }
        answer
    }
}

fn dechunk(mut rest: &str) -> String {
    let mut body = String::new();
    while let Some((size, after)) = rest.split_once("\r\n") {
        let size = usize::from_str_radix(size.split(';').next().unwrap().trim(), 16).unwrap();
        if size == 0 {
            break;
        }
        body.push_str(&after[..size]);
        rest = &after[size + 2..];
    }
    body
}

/// Writes `request` to `addr` and reads until the server closes.
pub(super) async fn raw(addr: SocketAddr, request: &[u8]) -> Answer {
    let tcp = TcpStream::connect(addr).await.unwrap();
    let (mut read, mut write) = tcp.into_split();
    let request = request.to_vec();
    // Written beside the read: a server refusing a large head stops reading it.
    let writer = tokio::spawn(async move {
        let _ = write.write_all(&request).await;
        write
    });
    let mut bytes = Vec::new();
    let mut buf = [0u8; 16 * 1024];
    let read_all = async {
        loop {
            match read.read(&mut buf).await {
                Ok(0) | Err(_) => break,
                Ok(n) => bytes.extend_from_slice(&buf[..n]),
            }
        }
    };
    tokio::time::timeout(Duration::from_secs(10), read_all)
        .await
        .expect("the sidecar closed the connection");
    writer.abort();
    Answer::parse(&bytes)
}

/// Sends one request as an HTTP/2 prior-knowledge (h2c) app; returns the
/// response head, body and trailers.
pub(super) async fn h2c<B>(addr: SocketAddr, request: Request<B>) -> (http::response::Parts, Bytes, Option<HeaderMap>)
where
    B: hyper::body::Body + Send + Unpin + 'static,
    B::Data: Send,
    B::Error: Into<Box<dyn std::error::Error + Send + Sync>>,
{
    let tcp = TcpStream::connect(addr).await.unwrap();
    let (mut sender, connection) = hyper::client::conn::http2::handshake(TokioExecutor::new(), TokioIo::new(tcp))
        .await
        .unwrap();
    tokio::spawn(connection);
    let response = sender.send_request(request).await.unwrap();
    let (parts, body) = response.into_parts();
    let collected = body.collect().await.unwrap();
    let trailers = collected.trailers().cloned();
    (parts, collected.to_bytes(), trailers)
}

/// Waits up to `limit` for `done`, checking every 10 ms.
pub(super) async fn eventually(limit: Duration, mut done: impl FnMut() -> bool) -> bool {
    let deadline = tokio::time::Instant::now() + limit;
    while tokio::time::Instant::now() < deadline {
        if done() {
            return true;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    done()
}
