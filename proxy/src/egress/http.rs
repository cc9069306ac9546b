//! A plain HTTP request to an external host: HTTP/1.1 over a new connection to an
//! address the sidecar resolved, the request as decided on.
//!
//! Upstream goes the canonical path with the original query in origin-form, the
//! canonical host in `Host` (with its port unless 80), and the headers the
//! outbound pipeline left: hop-by-hop and identity headers are already gone, and
//! no `x-forwarded-client-cert` is ever set for the outside. Whatever HTTP version
//! the app spoke, the external host gets HTTP/1.1.

use http::header::HOST;
use http::request::Parts;
use http::uri::PathAndQuery;
use http::{Extensions, HeaderValue, Request, Response, Uri, Version};
use hyper::body::Incoming;
use hyper::client::conn::http1;
use hyper_util::rt::TokioIo;
use tokio::net::TcpStream;

use crate::request::body::{SanitizedTrailers, Streamed};
use crate::request::{Canonical, Refusal};

/// The request as the external host receives it; `parts` were sanitized.
///
/// # Errors
///
/// 400 when the canonical host or target cannot be written (a request that
/// canonicalized cannot hit this).
pub fn upstream_request(mut parts: Parts, body: Incoming, canonical: &Canonical) -> Result<Request<Streamed>, Refusal> {
    let unwritable = || Refusal::BadRequest("the request's path or host cannot be forwarded".to_owned());
    let host = match canonical.host.port() {
        Some(port) => HeaderValue::try_from(format!("{}:{port}", canonical.host.name())),
        None => HeaderValue::try_from(canonical.host.name()),
    }
    .map_err(|_| unwritable())?;
    let target = PathAndQuery::try_from(canonical.path.request_target()).map_err(|_| unwritable())?;
    parts.uri = Uri::from(target);
    parts.version = Version::HTTP_11;
    parts.headers.insert(HOST, host);
    parts.extensions = Extensions::new();
    Ok(Request::from_parts(parts, SanitizedTrailers::new(body)))
}

/// Sends `request` over `stream` and returns the response head; the connection
/// lives on in its own task until the response body is read, then closes.
///
/// # Errors
///
/// 502 when the external host fails before answering.
pub async fn send(
    stream: TcpStream,
    resource: &str,
    request: Request<Streamed>,
) -> Result<Response<Incoming>, Refusal> {
    let failed = |e: hyper::Error| Refusal::BadGateway(format!("the request to `{resource}` failed: {e}"));
    let (mut sender, connection) = http1::handshake(TokioIo::new(stream)).await.map_err(failed)?;
    tokio::spawn(async move {
        if let Err(e) = connection.await {
            tracing::debug!(error = %e, "a connection to an external host ended with an error");
        }
    });
    sender.send_request(request).await.map_err(failed)
}
