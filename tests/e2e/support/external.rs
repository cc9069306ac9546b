//! Stand-ins for hosts outside the mesh (there is no internet here): a TLS server
//! with a certificate for a public name, and the HTTP app of `app.rs`. Sidecars
//! reach them through their `--resolve NAME=ADDR` mapping.

use std::net::SocketAddr;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use rustls::pki_types::{CertificateDer, PrivateKeyDer, PrivatePkcs8KeyDer, ServerName};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

/// A TLS server for `name` that answers any HTTP/1.1 request with `hello from NAME`.
pub struct TlsHost {
    pub addr: SocketAddr,
    /// Its certificate, for clients to trust.
    pub cert: CertificateDer<'static>,
    accepted: Arc<AtomicUsize>,
    task: tokio::task::JoinHandle<()>,
}

impl TlsHost {
    pub async fn start(name: &'static str, ip: std::net::IpAddr) -> Self {
        let key = rcgen::KeyPair::generate().unwrap();
        let cert = rcgen::CertificateParams::new(vec![name.to_owned()])
            .unwrap()
            .self_signed(&key)
            .unwrap();
        let cert = cert.der().clone();
        let config = rustls::ServerConfig::builder_with_provider(Arc::new(rustls::crypto::ring::default_provider()))
            .with_safe_default_protocol_versions()
            .unwrap()
            .with_no_client_auth()
            .with_single_cert(
                vec![cert.clone()],
                PrivateKeyDer::Pkcs8(PrivatePkcs8KeyDer::from(key.serialize_der())),
            )
            .unwrap();
        let acceptor = tokio_rustls::TlsAcceptor::from(Arc::new(config));
        let listener = tokio::net::TcpListener::bind((ip, 0)).await.unwrap();
        let addr = listener.local_addr().unwrap();
        let accepted = Arc::new(AtomicUsize::new(0));
        let counter = Arc::clone(&accepted);
        let task = tokio::spawn(async move {
            loop {
                let Ok((tcp, _)) = listener.accept().await else {
                    continue;
                };
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
        Self {
            addr,
            cert,
            accepted,
            task,
        }
    }

    /// TCP connections accepted so far (handshakes or not).
    pub fn connections(&self) -> usize {
        self.accepted.load(Ordering::SeqCst)
    }
}

impl Drop for TlsHost {
    fn drop(&mut self) {
        self.task.abort();
    }
}

/// What an app saw when it tunnelled through its sidecar.
#[derive(Debug)]
pub enum Tunnel {
    /// The sidecar refused the CONNECT with this status and body.
    Refused { status: u16, body: String },
    /// The CONNECT was accepted but the TLS handshake failed.
    HandshakeFailed(String),
    /// The whole HTTPS exchange worked: the response.
    Answered(String),
}

/// `CONNECT target` through the sidecar at `outbound`, then TLS with `sni` (trusting
/// `cert`), then `GET /`: what an app with an HTTPS proxy setting does.
pub async fn https_via_connect(
    outbound: SocketAddr,
    target: &str,
    sni: &str,
    cert: &CertificateDer<'static>,
) -> Tunnel {
    let mut tcp = TcpStream::connect(outbound).await.unwrap();
    let request = format!("CONNECT {target} HTTP/1.1\r\nHost: {target}\r\n\r\n");
    tcp.write_all(request.as_bytes()).await.unwrap();
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
            .unwrap_or(0);
        let mut rest = vec![0u8; length];
        let _ = tokio::time::timeout(Duration::from_secs(5), tcp.read_exact(&mut rest)).await;
        return Tunnel::Refused {
            status,
            body: format!("{head}{}", String::from_utf8_lossy(&rest)),
        };
    }
    let mut roots = rustls::RootCertStore::empty();
    roots.add(cert.clone()).unwrap();
    let config = rustls::ClientConfig::builder_with_provider(Arc::new(rustls::crypto::ring::default_provider()))
        .with_safe_default_protocol_versions()
        .unwrap()
        .with_root_certificates(roots)
        .with_no_client_auth();
    let connector = tokio_rustls::TlsConnector::from(Arc::new(config));
    let name = ServerName::try_from(sni.to_owned()).unwrap();
    let handshake = tokio::time::timeout(Duration::from_secs(10), connector.connect(name, tcp)).await;
    let mut tls = match handshake {
        Ok(Ok(tls)) => tls,
        Ok(Err(e)) => return Tunnel::HandshakeFailed(e.to_string()),
        Err(_) => return Tunnel::HandshakeFailed("timed out".into()),
    };
    let host = target.split(':').next().unwrap_or(target);
    tls.write_all(format!("GET / HTTP/1.1\r\nHost: {host}\r\nConnection: close\r\n\r\n").as_bytes())
        .await
        .unwrap();
    let mut response = Vec::new();
    let _ = tokio::time::timeout(Duration::from_secs(10), tls.read_to_end(&mut response)).await;
    Tunnel::Answered(String::from_utf8_lossy(&response).into_owned())
}

/// Reads up to the end of a response head, byte by byte (the tunnel follows it).
async fn read_head(tcp: &mut TcpStream) -> String {
    let mut head = Vec::new();
    let mut byte = [0u8; 1];
    while !head.ends_with(b"\r\n\r\n") && head.len() < 16 * 1024 {
        match tokio::time::timeout(Duration::from_secs(10), tcp.read(&mut byte)).await {
            Ok(Ok(1)) => head.push(byte[0]),
            _ => break,
        }
    }
    String::from_utf8_lossy(&head).into_owned()
}
