//! External hosts for the egress tests, on 127.0.0.1: a plain HTTP/1.1 server and a
//! TLS server with an rcgen certificate, each recording what it saw; a policy
//! bundle made from the shop with edits; and a sidecar mapping names to them.

use std::net::{IpAddr, SocketAddr};
use std::path::Path;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use bytes::Bytes;
use http::{HeaderMap, Method, Request, Response, Uri};
use http_body_util::{BodyExt, Full};
use hyper::body::Incoming;
use hyper::service::service_fn;
use hyper_util::rt::TokioIo;
use rustls::pki_types::{CertificateDer, PrivateKeyDer, PrivatePkcs8KeyDer, ServerName};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::task::JoinHandle;

use super::support::{copy_dir, Sidecar};
use crate::egress::EgressSettings;
use crate::state::PolicyState;
use crate::testing::{context_with, handle, shop_dir, RecordingSink, TestPki};

/// The body the HTTP origin answers with.
pub(super) const ORIGIN_BODY: &str = "hello from outside";

/// One request as the HTTP origin received it.
#[derive(Debug, Clone)]
pub(super) struct OriginRequest {
    pub(super) method: Method,
    pub(super) uri: Uri,
    pub(super) headers: HeaderMap,
    pub(super) body: Bytes,
}

/// A plain HTTP/1.1 server outside the mesh.
pub(super) struct HttpOrigin {
    pub(super) addr: SocketAddr,
    accepted: Arc<AtomicUsize>,
    requests: Arc<Mutex<Vec<OriginRequest>>>,
    task: JoinHandle<()>,
}

impl HttpOrigin {
    pub(super) async fn start() -> Self {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let accepted = Arc::new(AtomicUsize::new(0));
        let requests = Arc::new(Mutex::new(Vec::new()));
        let (count, seen) = (Arc::clone(&accepted), Arc::clone(&requests));
        let task = tokio::spawn(async move {
            while let Ok((tcp, _)) = listener.accept().await {
                count.fetch_add(1, Ordering::SeqCst);
                let seen = Arc::clone(&seen);
                let service = service_fn(move |request| record(Arc::clone(&seen), request));
                tokio::spawn(hyper::server::conn::http1::Builder::new().serve_connection(TokioIo::new(tcp), service));
            }
        });
        Self {
            addr,
            accepted,
            requests,
            task,
        }
    }

    /// Connections accepted.
    pub(super) fn tcp(&self) -> usize {
        self.accepted.load(Ordering::SeqCst)
    }

    pub(super) fn requests(&self) -> Vec<OriginRequest> {
        self.requests.lock().unwrap().clone()
    }
}

impl Drop for HttpOrigin {
    fn drop(&mut self) {
        self.task.abort();
    }
}

async fn record(
    seen: Arc<Mutex<Vec<OriginRequest>>>,
    request: Request<Incoming>,
) -> Result<Response<Full<Bytes>>, hyper::Error> {
    let (parts, body) = request.into_parts();
    let body = body.collect().await?.to_bytes();
    seen.lock().unwrap().push(OriginRequest {
        method: parts.method,
        uri: parts.uri,
        headers: parts.headers,
        body,
    });
    let response = Response::builder()
        .header("x-origin", "1")
        .header("x-palisade-peer", "forged")
        .header("x-forwarded-client-cert", "By=forged")
        .body(Full::new(Bytes::from_static(ORIGIN_BODY.as_bytes())));
    Ok(response.unwrap())
}

/// A TLS server outside the mesh with a self-signed certificate for `names`; it
/// answers each line it reads with `pong: ` and the line.
pub(super) struct TlsOrigin {
    pub(super) addr: SocketAddr,
    /// Its certificate, for clients to trust.
    pub(super) cert: CertificateDer<'static>,
    accepted: Arc<AtomicUsize>,
    /// The SNI of each handshake that completed.
    snis: Arc<Mutex<Vec<Option<String>>>>,
    task: JoinHandle<()>,
}

impl TlsOrigin {
    pub(super) async fn start(names: &[&str]) -> Self {
        let names: Vec<String> = names.iter().map(|n| (*n).to_owned()).collect();
        let certified = rcgen::generate_simple_self_signed(names).unwrap();
        let cert = certified.cert.der().clone();
        let key = PrivateKeyDer::Pkcs8(PrivatePkcs8KeyDer::from(certified.signing_key.serialize_der()));
        let config = rustls::ServerConfig::builder()
            .with_no_client_auth()
            .with_single_cert(vec![cert.clone()], key)
            .unwrap();
        let acceptor = tokio_rustls::TlsAcceptor::from(Arc::new(config));
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let accepted = Arc::new(AtomicUsize::new(0));
        let snis = Arc::new(Mutex::new(Vec::new()));
        let (count, seen) = (Arc::clone(&accepted), Arc::clone(&snis));
        let task = tokio::spawn(async move {
            while let Ok((tcp, _)) = listener.accept().await {
                count.fetch_add(1, Ordering::SeqCst);
                let (acceptor, seen) = (acceptor.clone(), Arc::clone(&seen));
                tokio::spawn(async move {
                    let Ok(mut tls) = acceptor.accept(tcp).await else {
                        return;
                    };
                    let sni = tls.get_ref().1.server_name().map(str::to_owned);
                    seen.lock().unwrap().push(sni);
                    let mut buf = vec![0u8; 4096];
                    while let Ok(n) = tls.read(&mut buf).await {
                        if n == 0 {
                            break;
                        }
                        let mut answer = b"pong: ".to_vec();
                        answer.extend_from_slice(&buf[..n]);
                        if tls.write_all(&answer).await.is_err() {
                            break;
                        }
                    }
                });
            }
        });
        Self {
            addr,
            cert,
            accepted,
            snis,
            task,
        }
    }

    /// Connections accepted.
    pub(super) fn tcp(&self) -> usize {
        self.accepted.load(Ordering::SeqCst)
    }

    pub(super) fn snis(&self) -> Vec<Option<String>> {
        self.snis.lock().unwrap().clone()
    }

    /// A client config that trusts this origin; `sni` off sends no SNI.
    pub(super) fn client(&self, sni: bool) -> Arc<rustls::ClientConfig> {
        let mut roots = rustls::RootCertStore::empty();
        roots.add(self.cert.clone()).unwrap();
        let mut config = rustls::ClientConfig::builder()
            .with_root_certificates(roots)
            .with_no_client_auth();
        config.enable_sni = sni;
        Arc::new(config)
    }
}

impl Drop for TlsOrigin {
    fn drop(&mut self) {
        self.task.abort();
    }
}

/// The shop's bundle with `edit` applied to a copy of its directory, compiled.
pub(super) fn shop_edited(edit: impl FnOnce(&Path)) -> PolicyState {
    let dir = tempfile::tempdir().unwrap();
    copy_dir(&shop_dir(), dir.path());
    edit(dir.path());
    let bundle = palisade_policy::load(dir.path()).unwrap();
    let digest = bundle.digest().to_string();
    PolicyState::build(1, digest, bundle).unwrap()
}

/// Appends `text` to the bundle file `file`.
pub(super) fn append(dir: &Path, file: &str, text: &str) {
    let path = dir.join(file);
    let mut content = std::fs::read_to_string(&path).unwrap();
    content.push_str(text);
    std::fs::write(path, content).unwrap();
}

/// Replaces `from` with `to` in the bundle file `file` (which must hold it).
pub(super) fn replace(dir: &Path, file: &str, from: &str, to: &str) {
    let path = dir.join(file);
    let content = std::fs::read_to_string(&path).unwrap();
    assert!(content.contains(from), "no `{from}` in {file}");
    std::fs::write(path, content.replace(from, to)).unwrap();
}

/// A sidecar for `id` with `state` in force, these names mapped, and its records
/// kept in the returned sink.
pub(super) async fn external_sidecar(
    pki: &TestPki,
    id: &str,
    state: PolicyState,
    names: &[(&str, &str)],
    edit: impl FnOnce(&mut crate::context::Context),
) -> (Sidecar, Arc<RecordingSink>) {
    let sink = Arc::new(RecordingSink::default());
    let audit = Arc::clone(&sink);
    let resolve = names
        .iter()
        .map(|(host, ip)| ((*host).to_owned(), vec![ip.parse::<IpAddr>().unwrap().into()]));
    let ctx = context_with(pki, id, handle(state), |ctx| {
        ctx.egress = EgressSettings::new(resolve);
        ctx.audit = audit;
        edit(ctx);
    });
    (Sidecar::start_with(ctx).await, sink)
}

/// Opens a tunnel: sends `CONNECT target` and reads the response head byte by
/// byte (so nothing after it is taken); returns the connection and the status.
pub(super) async fn open_tunnel(sidecar: SocketAddr, target: &str) -> (TcpStream, u16, String) {
    let mut tcp = TcpStream::connect(sidecar).await.unwrap();
    let request = format!("CONNECT {target} HTTP/1.1\r\nHost: {target}\r\n\r\n");
    tcp.write_all(request.as_bytes()).await.unwrap();
    let mut head = Vec::new();
    let mut byte = [0u8; 1];
    while !head.ends_with(b"\r\n\r\n") {
        assert!(head.len() < 16 * 1024, "no end of the response head");
        let n = tokio::time::timeout(Duration::from_secs(10), tcp.read(&mut byte))
            .await
            .unwrap()
            .unwrap();
        assert_eq!(n, 1, "the sidecar closed in the middle of the response head: {head:?}");
        head.push(byte[0]);
    }
    let head = String::from_utf8(head).unwrap();
    let status = head.split(' ').nth(1).unwrap().parse().unwrap();
    (tcp, status, head)
}

/// A TLS client for `name` over `tcp`.
pub(super) async fn tls_over(
    tcp: TcpStream,
    config: Arc<rustls::ClientConfig>,
    name: &str,
) -> std::io::Result<tokio_rustls::client::TlsStream<TcpStream>> {
    let name = ServerName::try_from(name.to_owned()).unwrap();
    tokio_rustls::TlsConnector::from(config).connect(name, tcp).await
}

/// Reads until the peer closes (at most 10 s).
pub(super) async fn read_to_close(tcp: &mut TcpStream) -> Vec<u8> {
    let mut all = Vec::new();
    let read = tokio::time::timeout(Duration::from_secs(10), tcp.read_to_end(&mut all)).await;
    assert!(read.is_ok(), "the sidecar did not close the connection");
    all
}
