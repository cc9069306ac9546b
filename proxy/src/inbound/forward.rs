//! The last step: an allowed request goes to the local app over loopback, bodies
//! and trailers streamed both ways (trailers sanitized like heads).
//!
//! Connections to the app are reused: a small stack of idle HTTP/1.1 connections
//! (one request at a time each) and one shared HTTP/2 connection (h2c, prior
//! knowledge) that carries every gRPC call concurrently. Locks are held only to
//! push or pop a sender, never across an await.

use std::net::SocketAddr;
use std::sync::{Arc, Mutex, PoisonError, Weak};
use std::time::Duration;

use http::header::HOST;
use http::request::Parts;
use http::uri::{Authority, PathAndQuery, Scheme};
use http::{HeaderValue, Request, Response, Uri, Version};
use hyper::body::Incoming;
use hyper::client::conn::{http1, http2};
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use palisade_authz::normalize::NormalizedHost;
use palisade_authz::Protocol;
use tokio::net::TcpStream;
use tokio::sync::Semaphore;

use super::AppProtocol;
use crate::context::Limits;
use crate::request::body::{SanitizedTrailers, Streamed};
use crate::request::Refusal;

/// Most idle HTTP/1.1 connections kept to the app.
const MAX_IDLE_H1: usize = 32;

/// The app beside this sidecar, and the connections to it.
#[derive(Debug)]
pub(super) struct App {
    addr: SocketAddr,
    protocol: AppProtocol,
    connect_timeout: Duration,
    idle_h1: Arc<Mutex<Vec<http1::SendRequest<Streamed>>>>,
    /// One permit per open HTTP/1.1 connection to the app, held by its task.
    h1_permits: Arc<Semaphore>,
    h2: Mutex<Option<http2::SendRequest<Streamed>>>,
}

/// Where the request goes and how to name it there.
#[derive(Debug)]
pub(super) struct Target<'a> {
    /// The canonical path and the original query.
    pub(super) path: &'a str,
    /// The canonical host, as the decision saw it.
    pub(super) host: &'a NormalizedHost,
    pub(super) protocol: Protocol,
}

/// Why the app did not answer (logged; the caller sees a plain 502).
#[derive(Debug, thiserror::Error)]
enum AppError {
    #[error("cannot connect to the app at `{addr}`: {source}")]
    Connect { addr: SocketAddr, source: std::io::Error },
    #[error("connecting to the app at `{0}` timed out")]
    ConnectTimeout(SocketAddr),
    #[error("the app connection failed: {0}")]
    Http(#[from] hyper::Error),
    #[error("every connection the sidecar may open to the app stayed busy")]
    Busy,
}

/// Which connection a request takes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Wire {
    Http1,
    H2,
}

impl App {
    pub(super) fn new(addr: SocketAddr, protocol: AppProtocol, limits: &Limits) -> Self {
        Self {
            addr,
            protocol,
            connect_timeout: limits.connect_timeout,
            idle_h1: Arc::default(),
            h1_permits: Arc::new(Semaphore::new(limits.max_app_connections)),
            h2: Mutex::new(None),
        }
    }

    /// Sends the request to the app and returns its response, streaming.
    ///
    /// # Errors
    ///
    /// 502 when the app cannot be reached or fails before answering.
    pub(super) async fn forward(
        &self,
        parts: Parts,
        body: Incoming,
        target: &Target<'_>,
    ) -> Result<Response<Incoming>, Refusal> {
        let wire = self.wire(target.protocol);
        let request = upstream_request(parts, SanitizedTrailers::new(body), target, wire)?;
        let result = match wire {
            Wire::Http1 => self.send_h1(request).await,
            Wire::H2 => self.send_h2(request).await,
        };
        result.map_err(|e| {
            tracing::warn!(app = %self.addr, error = %e, "the app did not answer");
            match e {
                AppError::Busy => {
                    Refusal::Unavailable("the app behind this sidecar is at its connection limit".to_owned())
                }
                _ => Refusal::BadGateway("the app behind this sidecar did not answer".to_owned()),
            }
        })
    }

    fn wire(&self, protocol: Protocol) -> Wire {
        match (self.protocol, protocol) {
            (AppProtocol::H2, _) | (AppProtocol::Auto, Protocol::Grpc) => Wire::H2,
            _ => Wire::Http1,
        }
    }

    /// On an idle connection, or a new one when none is left or the idle one turns
    /// out closed before the request was written (then it is safe to send again).
    async fn send_h1(&self, request: Request<Streamed>) -> Result<Response<Incoming>, AppError> {
        let request = match self.idle_h1() {
            Some(mut sender) => match sender.try_send_request(request).await {
                Ok(response) => {
                    self.recycle(sender);
                    return Ok(response);
                }
                Err(mut e) => match e.take_message() {
                    Some(request) => request,
                    None => return Err(e.into_error().into()),
                },
            },
            None => request,
        };
        let mut sender = self.connect_h1().await?;
        let response = sender.send_request(request).await?;
        self.recycle(sender);
        Ok(response)
    }

    fn idle_h1(&self) -> Option<http1::SendRequest<Streamed>> {
        let mut idle = lock(&self.idle_h1);
        while let Some(sender) = idle.pop() {
            if sender.is_ready() {
                return Some(sender);
            }
        }
        None
    }

    /// Returns the connection to the idle stack once the response body is done.
    fn recycle(&self, mut sender: http1::SendRequest<Streamed>) {
        let idle: Weak<_> = Arc::downgrade(&self.idle_h1);
        tokio::spawn(async move {
            if sender.ready().await.is_err() {
                return;
            }
            if let Some(idle) = idle.upgrade() {
                let mut idle = lock(&idle);
                if idle.len() < MAX_IDLE_H1 {
                    idle.push(sender);
                }
            }
        });
    }

    async fn connect_h1(&self) -> Result<http1::SendRequest<Streamed>, AppError> {
        let permits = Arc::clone(&self.h1_permits);
        let permit = tokio::time::timeout(self.connect_timeout, permits.acquire_owned())
            .await
            .ok()
            .and_then(Result::ok)
            .ok_or(AppError::Busy)?;
        let io = self.connect().await?;
        let (sender, connection) = http1::handshake(io).await?;
        tokio::spawn(async move {
            let _permit = permit;
            if let Err(e) = connection.await {
                tracing::debug!(error = %e, "HTTP/1.1 connection to the app ended");
            }
        });
        Ok(sender)
    }

    async fn send_h2(&self, request: Request<Streamed>) -> Result<Response<Incoming>, AppError> {
        let shared = lock(&self.h2).as_ref().filter(|s| !s.is_closed()).cloned();
        let request = match shared {
            Some(mut sender) => match sender.try_send_request(request).await {
                Ok(response) => return Ok(response),
                Err(mut e) => match e.take_message() {
                    Some(request) => request,
                    None => return Err(e.into_error().into()),
                },
            },
            None => request,
        };
        let mut sender = self.connect_h2().await?;
        *lock(&self.h2) = Some(sender.clone());
        Ok(sender.send_request(request).await?)
    }

    async fn connect_h2(&self) -> Result<http2::SendRequest<Streamed>, AppError> {
        let io = self.connect().await?;
        let (sender, connection) = http2::Builder::new(TokioExecutor::new())
            .timer(TokioTimer::new())
            .handshake(io)
            .await?;
        tokio::spawn(async move {
            if let Err(e) = connection.await {
                tracing::debug!(error = %e, "HTTP/2 connection to the app ended");
            }
        });
        Ok(sender)
    }

    async fn connect(&self) -> Result<TokioIo<TcpStream>, AppError> {
        let connecting = tokio::time::timeout(self.connect_timeout, TcpStream::connect(self.addr));
        let tcp = match connecting.await {
            Ok(Ok(tcp)) => tcp,
            Ok(Err(source)) => {
                return Err(AppError::Connect {
                    addr: self.addr,
                    source,
                })
            }
            Err(_) => return Err(AppError::ConnectTimeout(self.addr)),
        };
        let _ = tcp.set_nodelay(true);
        Ok(TokioIo::new(tcp))
    }
}

/// The request as the app gets it: the canonical path and the original query, the
/// canonical host (in `Host` over HTTP/1.1, in `:authority` over HTTP/2), and the
/// headers the earlier steps left.
fn upstream_request(
    mut parts: Parts,
    body: Streamed,
    target: &Target<'_>,
    wire: Wire,
) -> Result<Request<Streamed>, Refusal> {
    let authority = match target.host.port() {
        Some(port) => format!("{}:{port}", target.host.name()),
        None => target.host.name().to_owned(),
    };
    let path = PathAndQuery::try_from(target.path).map_err(|_| unforwardable())?;
    let mut uri = http::uri::Parts::default();
    uri.path_and_query = Some(path);
    match wire {
        Wire::Http1 => {
            parts.version = Version::HTTP_11;
            let host = HeaderValue::try_from(authority).map_err(|_| unforwardable())?;
            parts.headers.insert(HOST, host);
        }
        Wire::H2 => {
            parts.version = Version::HTTP_2;
            parts.headers.remove(HOST);
            uri.scheme = Some(Scheme::HTTP);
            uri.authority = Some(Authority::try_from(authority).map_err(|_| unforwardable())?);
        }
    }
    let uri = Uri::from_parts(uri).map_err(|_| unforwardable())?;
    let mut request = Request::new(body);
    *request.method_mut() = parts.method;
    *request.uri_mut() = uri;
    *request.version_mut() = parts.version;
    *request.headers_mut() = parts.headers;
    Ok(request)
}

fn unforwardable() -> Refusal {
    Refusal::BadRequest("the request's path or host cannot be forwarded".to_owned())
}

fn lock<T>(mutex: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    mutex.lock().unwrap_or_else(PoisonError::into_inner)
}
