//! One new connection to a destination's sidecar: TCP, then TLS 1.3 presenting this
//! workload's SVID and checking that the server presents an identity the registry
//! lists for the service (secure naming), then ALPN `h2` and the HTTP/2 handshake.
//!
//! Nothing here keeps the connection: [`pool`](super::pool) does.

use std::sync::Arc;
use std::time::{Duration, SystemTime};

use hyper::client::conn::http2;
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use palisade_ca::svid::SvidFacts;
use palisade_ca::verify::{svid_error, SvidError};
use palisade_ca::{Serial, SpiffeId};
use palisade_policy::registry::Endpoint;
use rustls::{CertificateError, ClientConfig};
use rustls_pki_types::ServerName;
use tokio::net::TcpStream;
use tokio_rustls::client::TlsStream;
use tokio_rustls::TlsConnector;

use crate::context::Context;
use crate::request::body::Streamed;
use crate::request::Refusal;

/// The HTTP/2 connection task's future, driven by the pool.
pub(crate) type Connection = http2::Connection<TokioIo<TlsStream<TcpStream>>, Streamed, TokioExecutor>;

/// How often an idle connection is pinged, so a dead peer is noticed.
const KEEP_ALIVE: Duration = Duration::from_secs(30);

/// A connection just made, with the server it was verified to be.
#[derive(Debug)]
pub(crate) struct Connected {
    pub(crate) sender: http2::SendRequest<Streamed>,
    pub(crate) connection: Connection,
    pub(crate) server: SpiffeId,
    pub(crate) serial: Serial,
    /// When the server's certificate expires: the connection is cut then.
    pub(crate) not_after: SystemTime,
    /// `host:port`, for messages.
    pub(crate) endpoint: String,
}

/// Why no connection to a destination's sidecar could be made.
#[derive(Debug, Clone, thiserror::Error)]
pub enum ConnectError {
    #[error("this sidecar has no SVID yet to call with; retry once it has one")]
    NoSvid,
    #[error("cannot connect to the sidecar at {endpoint}: {reason}")]
    Unreachable { endpoint: String, reason: String },
    #[error("the sidecar at {endpoint} did not answer within {}s", .after.as_secs_f32())]
    Timeout { endpoint: String, after: Duration },
    #[error("the server at {endpoint} presented `{presented}`, which the registry does not list for the service")]
    WrongIdentity {
        endpoint: String,
        presented: SpiffeId,
        expected: String,
    },
    #[error("the TLS handshake with the server at {endpoint} failed: {detail}")]
    Handshake {
        endpoint: String,
        /// The metrics label (`revoked`, `untrusted`, …).
        reason: &'static str,
        detail: String,
    },
    #[error("the server at {endpoint} did not agree to HTTP/2 (ALPN `h2`)")]
    NoHttp2 { endpoint: String },
    #[error("the HTTP/2 handshake with the server at {endpoint} failed: {detail}")]
    Http2 { endpoint: String, detail: String },
}

impl ConnectError {
    /// The refusal the app gets: 503 when the sidecar cannot be reached (or has no
    /// identity yet), 502 when it answered but could not be trusted or spoken to.
    pub fn refusal(&self, service: &str) -> Refusal {
        match self {
            Self::NoSvid | Self::Unreachable { .. } | Self::Timeout { .. } => {
                Refusal::Unavailable(format!("{self} (calling `{service}`)"))
            }
            Self::WrongIdentity {
                endpoint,
                presented,
                expected,
            } => Refusal::BadGateway(format!(
                "the server at {endpoint} presented `{presented}` but `{service}` is served by {expected}"
            )),
            Self::Handshake { .. } | Self::NoHttp2 { .. } | Self::Http2 { .. } => {
                Refusal::BadGateway(format!("{self} (calling `{service}`)"))
            }
        }
    }

    /// The metrics label of a failed TLS handshake, when it was one.
    pub fn handshake_reason(&self) -> Option<&'static str> {
        match self {
            Self::WrongIdentity { .. } => Some("unexpected_identity"),
            Self::Handshake { reason, .. } => Some(reason),
            Self::NoHttp2 { .. } => Some("no_alpn_h2"),
            _ => None,
        }
    }
}

/// Connects to `endpoint`, whose server must pass `tls`'s verifier.
pub(crate) async fn connect(
    ctx: &Context,
    endpoint: &Endpoint,
    tls: Arc<ClientConfig>,
) -> Result<Connected, ConnectError> {
    if ctx.resolver.current().is_none() {
        return Err(ConnectError::NoSvid);
    }
    let name = endpoint_name(endpoint);
    let tcp = tcp(endpoint, &name, ctx.limits.connect_timeout).await?;
    let tls = handshake(tcp, tls, &name, ctx.limits.handshake_timeout).await?;
    let (server, serial, not_after) = server_identity(&tls, &name)?;
    let (sender, connection) = http2::Builder::new(TokioExecutor::new())
        .timer(TokioTimer::new())
        .keep_alive_interval(KEEP_ALIVE)
        .handshake(TokioIo::new(tls))
        .await
        .map_err(|e| ConnectError::Http2 {
            endpoint: name.clone(),
            detail: e.to_string(),
        })?;
    Ok(Connected {
        sender,
        connection,
        server,
        serial,
        not_after,
        endpoint: name,
    })
}

/// `host:port` for messages.
fn endpoint_name(endpoint: &Endpoint) -> String {
    format!("{}:{}", endpoint.host, endpoint.port)
}

async fn tcp(endpoint: &Endpoint, name: &str, timeout: Duration) -> Result<TcpStream, ConnectError> {
    let host = endpoint.host.trim_start_matches('[').trim_end_matches(']');
    let stream = tokio::time::timeout(timeout, TcpStream::connect((host, endpoint.port)))
        .await
        .map_err(|_| ConnectError::Timeout {
            endpoint: name.to_owned(),
            after: timeout,
        })?
        .map_err(|e| ConnectError::Unreachable {
            endpoint: name.to_owned(),
            reason: e.to_string(),
        })?;
    // Latency over throughput for small requests; failing to set it changes nothing else.
    let _ = stream.set_nodelay(true);
    Ok(stream)
}

async fn handshake(
    tcp: TcpStream,
    config: Arc<ClientConfig>,
    name: &str,
    timeout: Duration,
) -> Result<TlsStream<TcpStream>, ConnectError> {
    // The name is not checked: the verifier checks the server's SPIFFE ID.
    let server_name = ServerName::try_from("sidecar.palisade.invalid").map_err(|e| ConnectError::Handshake {
        endpoint: name.to_owned(),
        reason: "tls",
        detail: e.to_string(),
    })?;
    let tls = tokio::time::timeout(timeout, TlsConnector::from(config).connect(server_name, tcp))
        .await
        .map_err(|_| ConnectError::Timeout {
            endpoint: name.to_owned(),
            after: timeout,
        })?
        .map_err(|e| handshake_error(&e, name))?;
    if tls.get_ref().1.alpn_protocol() != Some(b"h2") {
        return Err(ConnectError::NoHttp2 {
            endpoint: name.to_owned(),
        });
    }
    Ok(tls)
}

/// Why the handshake failed, from the error tokio-rustls wraps.
fn handshake_error(error: &std::io::Error, name: &str) -> ConnectError {
    let endpoint = name.to_owned();
    let Some(tls) = error.get_ref().and_then(|e| e.downcast_ref::<rustls::Error>()) else {
        return ConnectError::Handshake {
            endpoint,
            reason: "io",
            detail: error.to_string(),
        };
    };
    if let Some(SvidError::UnexpectedId { id, expected }) = svid_error(tls) {
        return ConnectError::WrongIdentity {
            endpoint,
            presented: id.clone(),
            expected: expected.clone(),
        };
    }
    let (reason, detail) = match (svid_error(tls), tls) {
        (Some(svid), _) => (svid.reason(), svid.to_string()),
        (None, rustls::Error::InvalidCertificate(CertificateError::Revoked)) => {
            ("revoked", "the server's certificate is revoked".to_owned())
        }
        (None, rustls::Error::InvalidCertificate(CertificateError::Expired)) => {
            ("expired", "the server's certificate has expired".to_owned())
        }
        (None, rustls::Error::InvalidCertificate(CertificateError::NotValidYet)) => {
            ("not_yet_valid", "the server's certificate is not valid yet".to_owned())
        }
        (None, rustls::Error::AlertReceived(alert)) => (
            "refused_by_server",
            format!("the server refused this sidecar's certificate ({alert:?})"),
        ),
        (None, other) => ("tls", other.to_string()),
    };
    ConnectError::Handshake {
        endpoint,
        reason,
        detail,
    }
}

/// The verified server's SPIFFE ID, serial and expiry, read off its leaf certificate.
fn server_identity(tls: &TlsStream<TcpStream>, name: &str) -> Result<(SpiffeId, Serial, SystemTime), ConnectError> {
    let failed = |detail: String| ConnectError::Handshake {
        endpoint: name.to_owned(),
        reason: "malformed",
        detail,
    };
    let leaf = tls
        .get_ref()
        .1
        .peer_certificates()
        .and_then(|chain| chain.first())
        .ok_or_else(|| failed("the server presented no certificate".to_owned()))?;
    let facts = SvidFacts::parse(leaf).map_err(|e| failed(e.to_string()))?;
    let id = facts
        .id
        .ok_or_else(|| failed("the server's certificate holds no SPIFFE ID".to_owned()))?;
    Ok((id, facts.serial, facts.not_after))
}
