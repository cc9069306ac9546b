//! The CA's client side, used by every proxy and by the CLI.
//!
//! [`connect`] opens a gRPC channel over TLS 1.3 that verifies the CA's own SVID
//! (secure naming: `spiffe://TD/ns/palisade-system/sa/palisade-ca`). [`fetch_svid`]
//! makes a key in this process, sends a CSR and returns the signed SVID: the key
//! never leaves. [`rotation`] keeps an SVID fresh; [`revocations`] follows the CA's
//! signed revocation lists.

pub mod admin;
pub mod revocations;
pub mod rotation;

use std::sync::Arc;
use std::time::Duration;

use hyper_util::rt::TokioIo;
use rcgen::{CertificateParams, KeyPair, SanType};
use rustls_pki_types::{CertificateDer, PrivateKeyDer, PrivatePkcs8KeyDer, ServerName};
use tokio::net::TcpStream;
use tokio_rustls::TlsConnector;
use tonic::transport::{Channel, Endpoint};
use tonic::Code;

use crate::bundle::TrustBundle;
use crate::proto::v1 as pb;
use crate::service::ca_spiffe_id;
use crate::spiffe_id::SpiffeId;
use crate::svid::Svid;
use crate::tls::SvidResolver;
use crate::verify::{SvidServerVerifier, Trust};

/// How long connecting (TCP + TLS) to the CA may take.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(5);
/// How long one call may take.
const CALL_TIMEOUT: Duration = Duration::from_secs(15);

/// Where the CA is and how to recognize it.
#[derive(Debug, Clone)]
pub struct CaEndpoint {
    /// `host:port`.
    pub addr: String,
    /// The trust state the CA's SVID is checked against.
    pub trust: Arc<Trust>,
}

impl CaEndpoint {
    pub fn new(addr: impl Into<String>, bundle: TrustBundle) -> Self {
        Self {
            addr: addr.into(),
            trust: Trust::new(bundle, Default::default()),
        }
    }
}

/// A call to the CA failed.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ClientError {
    #[error("cannot reach the CA at {addr}: {reason}; is `palisade ca serve` running there?")]
    Connect { addr: String, reason: String },
    #[error("the CA refused: {}", .0.message())]
    Refused(tonic::Status),
    #[error("the CA's answer is unusable: {0}")]
    BadResponse(String),
    #[error("cannot make a key or CSR: {0}")]
    Key(String),
    #[error("TLS setup failed: {0}")]
    Tls(#[from] rustls::Error),
    #[error("cannot read the ServiceAccount token `{path}`: {reason}; mount a projected token with `audience: palisade-ca` there")]
    TokenFile { path: String, reason: String },
}

impl ClientError {
    /// Whether trying again later may succeed (the CA is away or busy), as opposed
    /// to a refusal that will stand (revoked, bad token, bad request).
    pub fn is_transient(&self) -> bool {
        match self {
            Self::Connect { .. } => true,
            Self::Refused(status) => matches!(
                status.code(),
                Code::Unavailable
                    | Code::DeadlineExceeded
                    | Code::ResourceExhausted
                    | Code::Aborted
                    | Code::Unknown
                    | Code::Internal
            ),
            _ => false,
        }
    }
}

impl From<tonic::Status> for ClientError {
    fn from(s: tonic::Status) -> Self {
        Self::Refused(s)
    }
}

/// Opens a channel to the CA, presenting the resolver's SVID when it has one.
pub async fn connect(endpoint: &CaEndpoint, resolver: Arc<SvidResolver>) -> Result<Channel, ClientError> {
    let td = endpoint.trust.bundle().trust_domain().clone();
    let ca_id = ca_spiffe_id(&td).map_err(|e| ClientError::BadResponse(e.to_string()))?;
    let grpc = Endpoint::from_shared(format!("http://{}", endpoint.addr))
        .map_err(|e| ClientError::Connect {
            addr: endpoint.addr.clone(),
            reason: format!("`{}` is not a host:port address ({e})", endpoint.addr),
        })?
        .connect_timeout(CONNECT_TIMEOUT)
        .timeout(CALL_TIMEOUT);
    let peer = SvidPeer {
        addr: endpoint.addr.clone(),
        trust: Arc::clone(&endpoint.trust),
        resolver,
        expected: ca_id,
    };
    svid_channel(grpc, peer).await.map_err(|e| match e {
        ChannelError::Tls(e) => ClientError::Tls(e),
        ChannelError::Connect(reason) => ClientError::Connect {
            addr: endpoint.addr.clone(),
            reason,
        },
    })
}

/// A mesh service reached over mTLS: where it is, whom to trust, what to present,
/// and the one identity it must present (secure naming).
#[derive(Debug, Clone)]
pub struct SvidPeer {
    /// `host:port`.
    pub addr: String,
    pub trust: Arc<Trust>,
    /// The caller's SVID (an empty resolver presents none).
    pub resolver: Arc<SvidResolver>,
    /// The SPIFFE ID the server must present.
    pub expected: SpiffeId,
}

/// Why [`svid_channel`] could not open a channel.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ChannelError {
    #[error("TLS setup failed: {0}")]
    Tls(#[from] rustls::Error),
    /// TCP, TLS or HTTP/2 failed; the reason holds the whole error chain.
    #[error("{0}")]
    Connect(String),
}

/// A gRPC channel over TLS 1.3 (ALPN h2) to `peer`, with `grpc`'s timeouts and
/// keep-alive settings. Used for the CA and the control plane alike.
pub async fn svid_channel(grpc: Endpoint, peer: SvidPeer) -> Result<Channel, ChannelError> {
    let verifier = SvidServerVerifier::new(peer.trust, vec![peer.expected]);
    let connector = TlsConnector::from(Arc::new(crate::tls::client_config(peer.resolver, verifier, &[b"h2"])?));
    let addr = peer.addr;
    grpc.connect_with_connector(tower::service_fn(move |_| {
        let connector = connector.clone();
        let addr = addr.clone();
        async move {
            let tcp = tokio::time::timeout(CONNECT_TIMEOUT, TcpStream::connect(&addr))
                .await
                .map_err(|_| std::io::Error::new(std::io::ErrorKind::TimedOut, "TCP connect timed out"))??;
            tcp.set_nodelay(true)?;
            // The name is not checked: the verifier checks the SPIFFE ID.
            let name = ServerName::try_from("palisade.invalid").map_err(std::io::Error::other)?;
            let tls = connector.connect(name, tcp).await?;
            Ok::<_, std::io::Error>(TokioIo::new(tls))
        }
    }))
    .await
    .map_err(|e| ChannelError::Connect(error_chain(&e)))
}

/// How the caller proves who it is.
#[derive(Debug, Clone)]
pub enum Credential {
    /// First SVID: a join token from `palisade ca token create`.
    JoinToken(String),
    /// First SVID in Kubernetes: the pod's projected ServiceAccount token, which
    /// the CA reviews with the API server.
    ServiceAccountToken(String),
    /// Renewal: the current SVID, presented as the TLS client certificate.
    Svid(Arc<Svid>),
}

/// Gets a new SVID for `id`: key and CSR made here, the key kept here.
pub async fn fetch_svid(
    endpoint: &CaEndpoint,
    id: &SpiffeId,
    credential: &Credential,
    ttl: Option<Duration>,
) -> Result<Svid, ClientError> {
    let key = KeyPair::generate().map_err(|e| ClientError::Key(e.to_string()))?;
    let csr = csr(id, &key)?;
    let (resolver, join_token, service_account_token) = match credential {
        Credential::JoinToken(t) => (SvidResolver::empty(), t.clone(), String::new()),
        Credential::ServiceAccountToken(t) => (SvidResolver::empty(), String::new(), t.clone()),
        Credential::Svid(svid) => (SvidResolver::with(svid)?, String::new(), String::new()),
    };
    let channel = connect(endpoint, resolver).await?;
    let ttl_seconds = ttl.map(|t| u32::try_from(t.as_secs()).unwrap_or(u32::MAX)).unwrap_or(0);
    let resp = pb::ca_client::CaClient::new(channel)
        .sign(pb::SignRequest {
            csr_der: csr,
            join_token,
            ttl_seconds,
            service_account_token,
        })
        .await?
        .into_inner();
    let mut chain = vec![CertificateDer::from(resp.leaf_der)];
    chain.extend(resp.chain_der.into_iter().map(CertificateDer::from));
    let svid = Svid::new(
        chain,
        PrivateKeyDer::Pkcs8(PrivatePkcs8KeyDer::from(key.serialize_der())),
    )
    .map_err(|e| ClientError::BadResponse(e.to_string()))?;
    endpoint
        .trust
        .learn_intermediates(svid.chain().get(1..).unwrap_or_default());
    if svid.id() != id {
        return Err(ClientError::BadResponse(format!(
            "the CA issued `{}` instead of `{id}`",
            svid.id()
        )));
    }
    Ok(svid)
}

/// A CSR whose one SAN is the SPIFFE ID.
fn csr(id: &SpiffeId, key: &KeyPair) -> Result<Vec<u8>, ClientError> {
    let mut params = CertificateParams::default();
    let uri = id.as_str().try_into().map_err(|e| ClientError::Key(format!("{e}")))?;
    params.subject_alt_names = vec![SanType::URI(uri)];
    let csr = params
        .serialize_request(key)
        .map_err(|e| ClientError::Key(e.to_string()))?;
    Ok(csr.der().to_vec())
}

/// The error and its causes on one line (tonic's transport errors hide the cause).
pub(crate) fn error_chain(e: &(dyn std::error::Error + 'static)) -> String {
    let mut out = e.to_string();
    let mut source = e.source();
    while let Some(s) = source {
        out.push_str(": ");
        out.push_str(&s.to_string());
        source = s.source();
    }
    out
}
