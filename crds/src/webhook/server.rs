//! HTTPS for the API server: `POST /validate/cedarpolicy` with an AdmissionReview
//! v1, answered with one.
//!
//! accept → TLS (1.2 or 1.3, ALPN `h2` and `http/1.1`, the certificate of
//! `cert.rs`) → HTTP/1.1 or HTTP/2 → route → read the body (capped,
//! with a deadline) → review (off the async threads, a few at a time) → answer.
//!
//! Anything that is not a review gets a plain-text HTTP error (404, 405, 408,
//! 413, 415); a review always gets `200` with `allowed` true or false, as the
//! API server expects. Nothing a client sends can make the server panic.

use std::convert::Infallible;
use std::future::Future;
use std::io;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use http::header::{ALLOW, CONTENT_LENGTH, CONTENT_TYPE};
use http::{HeaderValue, Method, Request, Response, StatusCode};
use http_body_util::{BodyExt, Full, LengthLimitError, Limited};
use hyper::body::Incoming;
use hyper::service::service_fn;
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use hyper_util::server::conn::auto;
use rustls::crypto::CryptoProvider;
use rustls::ServerConfig;
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{watch, Semaphore};
use tokio::task::JoinSet;
use tokio_rustls::TlsAcceptor;

use super::cert::{PemFiles, ReloadingCert};
use super::metrics::{Event, WebhookMetrics};
use super::review::{self, AdmissionRequest, AdmissionResponse, AdmissionReview, CODE_INVALID};
use super::ReviewContext;

/// The one path served: what the `ValidatingWebhookConfiguration` names.
pub const PATH: &str = "/validate/cedarpolicy";

/// What [`serve`] needs.
#[derive(Debug)]
pub struct WebhookParams {
    /// Where the API server connects, already bound.
    pub listener: TcpListener,
    /// The PEM certificate chain, leaf first, for the service's DNS name
    /// (`--webhook-cert`); re-read when it changes.
    pub cert: PathBuf,
    /// The PEM private key of that certificate (`--webhook-key`).
    pub key: PathBuf,
    /// The bundle policies are checked against, fed by the controller.
    pub context: watch::Receiver<ReviewContext>,
    /// Sizes, deadlines and intervals.
    pub limits: WebhookLimits,
    /// Where the answers are counted.
    pub metrics: Arc<WebhookMetrics>,
}

/// The bounds of the server. The defaults suit an API server with
/// `timeoutSeconds: 5`.
#[derive(Debug, Clone)]
pub struct WebhookLimits {
    /// The largest body read (4 MiB); larger ones get `413`.
    pub max_body_bytes: usize,
    /// How long a TLS handshake may take.
    pub handshake_timeout: Duration,
    /// How long an HTTP/1.1 client may take to send a request's headers.
    pub header_read_timeout: Duration,
    /// How long a client may take to send a body; `408` after it.
    pub body_read_timeout: Duration,
    /// How many reviews run at once; the others wait their turn.
    pub max_concurrent_reviews: usize,
    /// How often the certificate files are read again (at least 100 ms).
    pub reload_interval: Duration,
}

impl Default for WebhookLimits {
    fn default() -> Self {
        Self {
            max_body_bytes: 4 << 20,
            handshake_timeout: Duration::from_secs(10),
            header_read_timeout: Duration::from_secs(10),
            body_read_timeout: Duration::from_secs(10),
            max_concurrent_reviews: 2,
            reload_interval: Duration::from_secs(5),
        }
    }
}

/// The webhook server could not start.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum WebhookError {
    /// A certificate or key file could not be read.
    #[error("cannot read `{}`: {source}; check the webhook's certificate and key files", path.display())]
    Read { path: PathBuf, source: io::Error },
    /// A certificate or key file over the size limit.
    #[error("`{}` is over the limit of {limit} bytes; give the webhook one PEM certificate chain and one PEM key", path.display())]
    TooLarge { path: PathBuf, limit: u64 },
    /// A file that holds no usable PEM.
    #[error("`{}` is not a usable PEM file: {reason}; give a certificate chain (leaf first) and a PKCS#8, PKCS#1 or SEC1 key", path.display())]
    Pem { path: PathBuf, reason: String },
    /// A key that rustls cannot use or that does not match the certificate.
    #[error("the key `{}` cannot serve the certificate `{}`: {source}; give the key the certificate was issued for", key.display(), cert.display())]
    Key {
        cert: PathBuf,
        key: PathBuf,
        source: rustls::Error,
    },
    /// The TLS configuration was refused.
    #[error("TLS setup failed: {0}")]
    Tls(#[from] rustls::Error),
}

/// Serves the webhook until `shutdown` resolves; open connections are closed
/// then.
///
/// # Errors
///
/// When the certificate and key cannot be read or used at start. Later changes
/// that cannot be used are logged, and the server keeps the pair it has.
pub async fn serve(params: WebhookParams, shutdown: impl Future<Output = ()> + Send) -> Result<(), WebhookError> {
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let files = PemFiles {
        cert: params.cert,
        key: params.key,
    };
    let cert = Arc::new(ReloadingCert::load(files, Arc::clone(&provider)).await?);
    let acceptor = TlsAcceptor::from(tls_config(provider, Arc::clone(&cert))?);
    let interval = params.limits.reload_interval.max(Duration::from_millis(100));
    let reload = tokio::spawn(cert.watch(interval, Arc::clone(&params.metrics)));
    let app = Arc::new(App {
        reviews: Semaphore::new(params.limits.max_concurrent_reviews.max(1)),
        context: params.context,
        limits: params.limits,
        metrics: params.metrics,
    });
    accept_loop(params.listener, acceptor, app, shutdown).await;
    reload.abort();
    Ok(())
}

/// TLS 1.3 and 1.2 (API servers may still speak 1.2), no client certificate:
/// the API server authenticates the webhook, not the other way round.
fn tls_config(provider: Arc<CryptoProvider>, cert: Arc<ReloadingCert>) -> Result<Arc<ServerConfig>, WebhookError> {
    let mut config = ServerConfig::builder_with_provider(provider)
        .with_protocol_versions(&[&rustls::version::TLS13, &rustls::version::TLS12])?
        .with_no_client_auth()
        .with_cert_resolver(cert);
    config.alpn_protocols = vec![b"h2".to_vec(), b"http/1.1".to_vec()];
    Ok(Arc::new(config))
}

async fn accept_loop(listener: TcpListener, acceptor: TlsAcceptor, app: Arc<App>, shutdown: impl Future<Output = ()>) {
    let mut connections = JoinSet::new();
    tokio::pin!(shutdown);
    loop {
        tokio::select! {
            () = &mut shutdown => break,
            accepted = listener.accept() => match accepted {
                Ok((tcp, peer)) => {
                    connections.spawn(connection(tcp, peer, acceptor.clone(), Arc::clone(&app)));
                }
                Err(e) => {
                    tracing::warn!(error = %e, "the webhook cannot accept a connection");
                    tokio::time::sleep(Duration::from_millis(50)).await;
                }
            },
            Some(_) = connections.join_next(), if !connections.is_empty() => {}
        }
    }
    connections.shutdown().await;
}

/// One connection: the handshake, then HTTP/1.1 or HTTP/2 until the client is done.
async fn connection(tcp: TcpStream, peer: SocketAddr, acceptor: TlsAcceptor, app: Arc<App>) {
    let tls = match tokio::time::timeout(app.limits.handshake_timeout, acceptor.accept(tcp)).await {
        Ok(Ok(tls)) => tls,
        Ok(Err(e)) => return tracing::debug!(%peer, error = %e, "webhook TLS handshake failed"),
        Err(_) => return tracing::debug!(%peer, "webhook TLS handshake timed out"),
    };
    let http = http_server(&app.limits);
    let service = service_fn(move |request| {
        let app = Arc::clone(&app);
        async move { Ok::<_, Infallible>(app.handle(request).await) }
    });
    if let Err(e) = http.serve_connection(TokioIo::new(tls), service).await {
        tracing::debug!(%peer, error = %e, "webhook connection ended with an error");
    }
}

fn http_server(limits: &WebhookLimits) -> auto::Builder<TokioExecutor> {
    let mut builder = auto::Builder::new(TokioExecutor::new());
    builder
        .http1()
        .timer(TokioTimer::new())
        .header_read_timeout(limits.header_read_timeout)
        .max_headers(64);
    builder
        .http2()
        .timer(TokioTimer::new())
        .max_concurrent_streams(16)
        .max_header_list_size(64 * 1024);
    builder
}

/// What every request needs.
#[derive(Debug)]
struct App {
    context: watch::Receiver<ReviewContext>,
    limits: WebhookLimits,
    metrics: Arc<WebhookMetrics>,
    reviews: Semaphore,
}

/// A request answered with an HTTP error instead of a review.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Rejection {
    NotFound,
    MethodNotAllowed,
    UnsupportedMediaType,
    TooLarge,
    Timeout,
    BadBody,
    Internal,
}

impl App {
    async fn handle(&self, request: Request<Incoming>) -> Response<Full<Bytes>> {
        match self.answer(request).await {
            Ok(review) => match serde_json::to_vec(&review) {
                Ok(body) => respond(StatusCode::OK, "application/json", body),
                Err(_) => self.reject(Rejection::Internal),
            },
            Err(rejection) => self.reject(rejection),
        }
    }

    async fn answer(&self, request: Request<Incoming>) -> Result<AdmissionReview, Rejection> {
        route(&request)?;
        let body = self.read_body(request).await?;
        let context = self.context.borrow().clone();
        let _turn = self.reviews.acquire().await.map_err(|_| Rejection::Internal)?;
        let metrics = Arc::clone(&self.metrics);
        tokio::task::spawn_blocking(move || decide(&body, &context, &metrics))
            .await
            .map_err(|_| Rejection::Internal)
    }

    /// The whole body: at most `max_body_bytes`, within `body_read_timeout`.
    async fn read_body(&self, request: Request<Incoming>) -> Result<Bytes, Rejection> {
        let max = self.limits.max_body_bytes;
        let declared = request
            .headers()
            .get(CONTENT_LENGTH)
            .and_then(|v| v.to_str().ok()?.parse::<u64>().ok());
        if declared.is_some_and(|length| length > max as u64) {
            return Err(Rejection::TooLarge);
        }
        let body = Limited::new(request.into_body(), max).collect();
        match tokio::time::timeout(self.limits.body_read_timeout, body).await {
            Ok(Ok(collected)) => Ok(collected.to_bytes()),
            Ok(Err(e)) if e.is::<LengthLimitError>() => Err(Rejection::TooLarge),
            Ok(Err(_)) => Err(Rejection::BadBody),
            Err(_) => Err(Rejection::Timeout),
        }
    }

    fn reject(&self, rejection: Rejection) -> Response<Full<Bytes>> {
        self.metrics.count(Event::RejectedHttp);
        let (status, text) = match rejection {
            Rejection::NotFound => (
                StatusCode::NOT_FOUND,
                "not found: the webhook serves `POST /validate/cedarpolicy`",
            ),
            Rejection::MethodNotAllowed => (StatusCode::METHOD_NOT_ALLOWED, "the webhook answers `POST` only"),
            Rejection::UnsupportedMediaType => (
                StatusCode::UNSUPPORTED_MEDIA_TYPE,
                "send an AdmissionReview as `application/json`",
            ),
            Rejection::TooLarge => (StatusCode::PAYLOAD_TOO_LARGE, "the body is over the webhook's limit"),
            Rejection::Timeout => (StatusCode::REQUEST_TIMEOUT, "the body did not arrive in time"),
            Rejection::BadBody => (StatusCode::BAD_REQUEST, "the body could not be read"),
            Rejection::Internal => (
                StatusCode::INTERNAL_SERVER_ERROR,
                "the review failed; see the controller's log",
            ),
        };
        let mut response = respond(status, "text/plain; charset=utf-8", format!("{text}\n").into_bytes());
        if rejection == Rejection::MethodNotAllowed {
            response.headers_mut().insert(ALLOW, HeaderValue::from_static("POST"));
        }
        response
    }
}

/// `POST /validate/cedarpolicy` with a JSON body (or none said).
fn route(request: &Request<Incoming>) -> Result<(), Rejection> {
    if request.uri().path() != PATH {
        return Err(Rejection::NotFound);
    }
    if request.method() != Method::POST {
        return Err(Rejection::MethodNotAllowed);
    }
    let content_type = request.headers().get(CONTENT_TYPE).map(HeaderValue::to_str);
    let is_json = |value: &str| {
        let essence = value.split(';').next().unwrap_or_default().trim();
        essence.eq_ignore_ascii_case("application/json")
    };
    match content_type {
        None | Some(Ok("")) => Ok(()),
        Some(Ok(value)) if is_json(value) => Ok(()),
        Some(_) => Err(Rejection::UnsupportedMediaType),
    }
}

/// The review of one body, counted and logged.
fn decide(body: &[u8], context: &ReviewContext, metrics: &WebhookMetrics) -> AdmissionReview {
    let response = match review::parse_request(body) {
        Ok(request) => {
            let response = review::review(&request, context);
            record(&request, &response, metrics);
            response
        }
        Err(refusal) => {
            metrics.count(Event::Malformed);
            let reason = refusal.status.as_ref().map(|s| s.message.as_str()).unwrap_or_default();
            tracing::warn!(uid = %refusal.uid, reason, "refused a body that is not an AdmissionReview v1");
            refusal
        }
    };
    response.into_review()
}

fn record(request: &AdmissionRequest, response: &AdmissionResponse, metrics: &WebhookMetrics) {
    let resource = format!("{}/{}", request.namespace, request.name);
    let (uid, operation, dry_run) = (&request.uid, request.operation, request.dry_run);
    let Some(status) = response.status.as_ref().filter(|_| !response.allowed) else {
        metrics.count(Event::Admitted);
        return tracing::debug!(%resource, %uid, ?operation, "admitted");
    };
    let problem = status.message.lines().nth(1).unwrap_or(&status.message);
    if status.code == CODE_INVALID {
        metrics.count(Event::Refused);
        tracing::info!(%resource, %uid, ?operation, dry_run, problem, "refused an invalid CedarPolicy");
    } else {
        metrics.count(Event::Malformed);
        tracing::warn!(%resource, %uid, ?operation, dry_run, problem, "refused a request the webhook cannot check");
    }
}

fn respond(status: StatusCode, content_type: &'static str, body: Vec<u8>) -> Response<Full<Bytes>> {
    let mut response = Response::new(Full::new(Bytes::from(body)));
    *response.status_mut() = status;
    response
        .headers_mut()
        .insert(CONTENT_TYPE, HeaderValue::from_static(content_type));
    response
}
