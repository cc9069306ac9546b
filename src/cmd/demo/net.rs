//! The demo's network pieces: free loopback ports, the app-side HTTP client that
//! talks to a sidecar's outbound port, and the stand-ins for hosts outside the mesh
//! (there is no internet in a demo): a TLS server for `api.stripe.com` and a plain
//! HTTP server for an unlisted host. Each stand-in counts the connections it
//! accepted, so the demo can show that a BlackHole never reached it.

use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper_util::rt::TokioIo;
use rustls_pki_types::{CertificateDer, PrivateKeyDer, PrivatePkcs8KeyDer, ServerName};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};

/// How long one call may take before the demo gives up on it.
const CALL_TIMEOUT: Duration = Duration::from_secs(15);

/// A network step of the demo failed.
#[derive(Debug, thiserror::Error)]
pub enum NetError {
    #[error("cannot reach {addr}: {source}; is the process behind it still running? (see the logs)")]
    Connect { addr: SocketAddr, source: std::io::Error },
    #[error("{what} at {addr} failed: {why}")]
    Exchange {
        addr: SocketAddr,
        what: String,
        why: String,
    },
    #[error("{what} at {addr} took longer than {CALL_TIMEOUT:?}")]
    Timeout { addr: SocketAddr, what: String },
    #[error("cannot start the stand-in for {name}: {why}")]
    StandIn { name: String, why: String },
}

/// The loopback address the demo binds everything to: 127.0.0.77 where the system
/// routes all of 127/8 to loopback (Linux), so ports picked for the demo cannot be
/// taken by other programs binding 127.0.0.1; 127.0.0.1 elsewhere.
pub fn loopback_ip() -> IpAddr {
    let dedicated = IpAddr::V4(Ipv4Addr::new(127, 0, 0, 77));
    if std::net::TcpListener::bind((dedicated, 0)).is_ok() {
        dedicated
    } else {
        IpAddr::V4(Ipv4Addr::LOCALHOST)
    }
}

/// A free port on `ip`: bound, then released for the process that will listen on it.
pub fn free_addr(ip: IpAddr) -> std::io::Result<SocketAddr> {
    std::net::TcpListener::bind((ip, 0))?.local_addr()
}

/// An HTTP response as the app saw it.
#[derive(Debug, Clone)]
pub struct Reply {
    pub status: u16,
    pub body: String,
}

/// `METHOD http://HOST/PATH` through the sidecar at `outbound`, in proxy form, as
/// an app configured with an HTTP proxy sends it.
pub async fn call(
    outbound: SocketAddr,
    method: &str,
    host: &str,
    path: &str,
    headers: &[(&str, &str)],
) -> Result<Reply, NetError> {
    let what = format!("{method} http://{host}{path}");
    request(outbound, method, &format!("http://{host}{path}"), host, headers, &what).await
}

/// `GET path` on an admin port (plain HTTP).
pub async fn admin_get(admin: SocketAddr, path: &str) -> Result<Reply, NetError> {
    request(admin, "GET", path, "admin", &[], &format!("GET {path}")).await
}

async fn request(
    addr: SocketAddr,
    method: &str,
    uri: &str,
    host: &str,
    headers: &[(&str, &str)],
    what: &str,
) -> Result<Reply, NetError> {
    let exchange = async {
        let tcp = TcpStream::connect(addr)
            .await
            .map_err(|source| NetError::Connect { addr, source })?;
        let fail = |why: String| NetError::Exchange {
            addr,
            what: what.to_owned(),
            why,
        };
        let (mut sender, connection) = hyper::client::conn::http1::handshake(TokioIo::new(tcp))
            .await
            .map_err(|e| fail(e.to_string()))?;
        tokio::spawn(connection);
        let body = if method == "POST" || method == "PUT" {
            Bytes::from_static(b"{}")
        } else {
            Bytes::new()
        };
        let mut builder = http::Request::builder()
            .method(method)
            .uri(uri)
            .header(http::header::HOST, host);
        for (name, value) in headers {
            builder = builder.header(*name, *value);
        }
        let request = builder.body(Full::new(body)).map_err(|e| fail(e.to_string()))?;
        let response = sender.send_request(request).await.map_err(|e| fail(e.to_string()))?;
        let status = response.status().as_u16();
        let body = response
            .into_body()
            .collect()
            .await
            .map_err(|e| fail(e.to_string()))?
            .to_bytes();
        Ok(Reply {
            status,
            body: String::from_utf8_lossy(&body).into_owned(),
        })
    };
    tokio::time::timeout(CALL_TIMEOUT, exchange)
        .await
        .map_err(|_| NetError::Timeout {
            addr,
            what: what.to_owned(),
        })?
}

/// A stand-in for a host outside the mesh, and how many connections reached it.
#[derive(Debug)]
pub struct StandIn {
    pub addr: SocketAddr,
    /// The TLS certificate, for a TLS stand-in (what a client must trust).
    pub cert: Option<CertificateDer<'static>>,
    hits: Arc<AtomicUsize>,
    task: tokio::task::JoinHandle<()>,
}

impl StandIn {
    /// TCP connections accepted so far.
    pub fn hits(&self) -> usize {
        self.hits.load(Ordering::SeqCst)
    }

    /// A TLS server for `name` (a self-signed certificate for that name) that answers
    /// any request with `hello from NAME`.
    pub async fn tls(name: &'static str, ip: IpAddr) -> Result<Self, NetError> {
        let fail = |why: String| NetError::StandIn {
            name: name.to_owned(),
            why,
        };
        let key = rcgen::KeyPair::generate().map_err(|e| fail(e.to_string()))?;
        let cert = rcgen::CertificateParams::new(vec![name.to_owned()])
            .and_then(|params| params.self_signed(&key))
            .map_err(|e| fail(e.to_string()))?;
        let cert = cert.der().clone();
        let config = rustls::ServerConfig::builder_with_provider(Arc::new(rustls::crypto::ring::default_provider()))
            .with_safe_default_protocol_versions()
            .map_err(|e| fail(e.to_string()))?
            .with_no_client_auth()
            .with_single_cert(
                vec![cert.clone()],
                PrivateKeyDer::Pkcs8(PrivatePkcs8KeyDer::from(key.serialize_der())),
            )
            .map_err(|e| fail(e.to_string()))?;
        let acceptor = tokio_rustls::TlsAcceptor::from(Arc::new(config));
        let listener = TcpListener::bind((ip, 0)).await.map_err(|e| fail(e.to_string()))?;
        let addr = listener.local_addr().map_err(|e| fail(e.to_string()))?;
        let hits = Arc::new(AtomicUsize::new(0));
        let counter = Arc::clone(&hits);
        let task = tokio::spawn(async move {
            while let Ok((tcp, _)) = listener.accept().await {
                counter.fetch_add(1, Ordering::SeqCst);
                let acceptor = acceptor.clone();
                tokio::spawn(async move {
                    let Ok(mut tls) = acceptor.accept(tcp).await else {
                        return;
                    };
                    let mut buf = vec![0u8; 4096];
                    let _ = tls.read(&mut buf).await;
                    let body = format!("hello from {name}");
                    let response = format!(
                        "HTTP/1.1 200 OK\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
                        body.len()
                    );
                    let _ = tls.write_all(response.as_bytes()).await;
                    let _ = tls.shutdown().await;
                });
            }
        });
        Ok(Self {
            addr,
            cert: Some(cert),
            hits,
            task,
        })
    }

    /// A plain HTTP server for `name`: the demo app's echo.
    pub async fn http(name: &'static str, ip: IpAddr) -> Result<Self, NetError> {
        let fail = |why: String| NetError::StandIn {
            name: name.to_owned(),
            why,
        };
        let listener = TcpListener::bind((ip, 0)).await.map_err(|e| fail(e.to_string()))?;
        let addr = listener.local_addr().map_err(|e| fail(e.to_string()))?;
        let hits = Arc::new(AtomicUsize::new(0));
        let task = tokio::spawn(super::serve_app(listener, name.into(), Some(Arc::clone(&hits))));
        Ok(Self {
            addr,
            cert: None,
            hits,
            task,
        })
    }
}

impl Drop for StandIn {
    fn drop(&mut self) {
        self.task.abort();
    }
}

/// What an app saw when it tunnelled to an external host through its sidecar.
#[derive(Debug)]
pub enum Tunnel {
    /// The sidecar refused the CONNECT with this status and body.
    Refused { status: u16, body: String },
    /// The CONNECT was accepted but the TLS handshake through it failed.
    HandshakeFailed(String),
    /// The whole HTTPS exchange worked: the response.
    Answered(String),
}

/// `CONNECT HOST:443` through the sidecar at `outbound`, TLS to `host` (trusting
/// `cert` only), then `GET /`: what an app with an HTTPS proxy setting does.
pub async fn https_via_connect(
    outbound: SocketAddr,
    host: &str,
    cert: &CertificateDer<'static>,
    request_id: &str,
) -> Result<Tunnel, NetError> {
    let what = format!("CONNECT {host}:443");
    let fail = |why: String| NetError::Exchange {
        addr: outbound,
        what: what.clone(),
        why,
    };
    let exchange = async {
        let mut tcp = TcpStream::connect(outbound)
            .await
            .map_err(|source| NetError::Connect { addr: outbound, source })?;
        let request = format!("CONNECT {host}:443 HTTP/1.1\r\nHost: {host}:443\r\nx-request-id: {request_id}\r\n\r\n");
        tcp.write_all(request.as_bytes())
            .await
            .map_err(|e| fail(e.to_string()))?;
        let head = read_head(&mut tcp).await;
        let status: u16 = head.get(9..12).and_then(|s| s.parse().ok()).unwrap_or(0);
        if status != 200 {
            let length = head
                .lines()
                .find_map(|l| {
                    l.to_ascii_lowercase()
                        .strip_prefix("content-length:")
                        .map(|v| v.trim().to_owned())
                })
                .and_then(|v| v.parse::<usize>().ok())
                .unwrap_or(0)
                .min(64 * 1024);
            let mut rest = vec![0u8; length];
            let _ = tcp.read_exact(&mut rest).await;
            return Ok(Tunnel::Refused {
                status,
                body: String::from_utf8_lossy(&rest).into_owned(),
            });
        }
        let mut roots = rustls::RootCertStore::empty();
        roots.add(cert.clone()).map_err(|e| fail(e.to_string()))?;
        let config = rustls::ClientConfig::builder_with_provider(Arc::new(rustls::crypto::ring::default_provider()))
            .with_safe_default_protocol_versions()
            .map_err(|e| fail(e.to_string()))?
            .with_root_certificates(roots)
            .with_no_client_auth();
        let connector = tokio_rustls::TlsConnector::from(Arc::new(config));
        let name = ServerName::try_from(host.to_owned()).map_err(|e| fail(e.to_string()))?;
        let mut tls = match connector.connect(name, tcp).await {
            Ok(tls) => tls,
            Err(e) => return Ok(Tunnel::HandshakeFailed(e.to_string())),
        };
        tls.write_all(format!("GET / HTTP/1.1\r\nHost: {host}\r\nConnection: close\r\n\r\n").as_bytes())
            .await
            .map_err(|e| fail(e.to_string()))?;
        let mut response = Vec::new();
        let _ = tls.read_to_end(&mut response).await;
        Ok(Tunnel::Answered(String::from_utf8_lossy(&response).into_owned()))
    };
    tokio::time::timeout(CALL_TIMEOUT, exchange)
        .await
        .map_err(|_| NetError::Timeout {
            addr: outbound,
            what: what.clone(),
        })?
}

/// Reads up to the end of a response head, byte by byte (the tunnel follows it).
async fn read_head(tcp: &mut TcpStream) -> String {
    let mut head = Vec::new();
    let mut byte = [0u8; 1];
    while !head.ends_with(b"\r\n\r\n") && head.len() < 16 * 1024 {
        match tcp.read(&mut byte).await {
            Ok(1) => head.extend_from_slice(&byte),
            _ => break,
        }
    }
    String::from_utf8_lossy(&head).into_owned()
}
