//! Sending an allowed request to the destination's sidecar and its response back.
//!
//! Upstream goes exactly what was decided on (`SECURITY.md` §1 rule 4): the
//! canonical path with the original query, in origin-form, with the canonical host
//! as `:authority`. Bodies stream both ways and trailers pass (gRPC), sanitized
//! like heads.

use http::header::HOST;
use http::request::Parts;
use http::uri::{Authority, PathAndQuery, Scheme};
use http::{Extensions, HeaderValue, Request, Response, Uri, Version};
use http_body_util::Either;
use hyper::body::Incoming;
use palisade_ca::SpiffeId;
use palisade_policy::registry::{Endpoint, Service};

use super::pool::Pool;
use crate::request::body::{SanitizedTrailers, Streamed};
use crate::request::headers;
use crate::request::request_id::REQUEST_ID;
use crate::request::respond::ProxyBody;
use crate::request::{Canonical, Refusal};

/// The request as the destination's sidecar receives it. `parts` were sanitized.
///
/// # Errors
///
/// 400 when the canonical host or target cannot be written as a URI (a request
/// that canonicalized cannot hit this).
pub(crate) fn upstream_request(
    mut parts: Parts,
    body: Incoming,
    canonical: &Canonical,
) -> Result<Request<Streamed>, Refusal> {
    let authority = match canonical.host.port() {
        Some(port) => format!("{}:{port}", canonical.host.name()),
        None => canonical.host.name().to_owned(),
    };
    let unwritable = |e: http::Error| Refusal::BadRequest(format!("the request cannot be forwarded: {e}"));
    let authority = Authority::try_from(authority).map_err(|e| unwritable(e.into()))?;
    let target = PathAndQuery::try_from(canonical.path.request_target()).map_err(|e| unwritable(e.into()))?;
    parts.uri = Uri::builder()
        .scheme(Scheme::HTTP)
        .authority(authority)
        .path_and_query(target)
        .build()
        .map_err(unwritable)?;
    parts.version = Version::HTTP_2;
    // `:authority` carries the host; the app's hyper extensions stay here.
    parts.headers.remove(HOST);
    parts.extensions = Extensions::new();
    Ok(Request::from_parts(parts, SanitizedTrailers::new(body)))
}

/// Sends `request` over a pooled connection to `endpoint`; when the pooled
/// connection turns out closed before the request left, reconnects and sends once
/// more.
///
/// # Errors
///
/// 502 or 503 when no connection can be made (see
/// [`ConnectError::refusal`](super::connect::ConnectError::refusal)), 502 when the
/// request fails on the connection.
pub(crate) async fn send(
    pool: &Pool,
    endpoint: &Endpoint,
    service: &Service,
    request: Request<Streamed>,
) -> Result<Response<Incoming>, Refusal> {
    let served_by: &[SpiffeId] = service.served_by();
    let connect_refusal = |e: super::connect::ConnectError| e.refusal(service.id());
    let mut sender = pool.sender(endpoint, served_by).await.map_err(connect_refusal)?;
    let failed = |e: hyper::Error| {
        Refusal::BadGateway(format!(
            "the request to `{}` at {}:{} failed: {e}",
            service.id(),
            endpoint.host,
            endpoint.port
        ))
    };
    match sender.try_send_request(request).await {
        Ok(response) => Ok(response),
        Err(mut error) => match error.take_message() {
            Some(request) => {
                let mut sender = pool.sender(endpoint, served_by).await.map_err(connect_refusal)?;
                sender.send_request(request).await.map_err(failed)
            }
            None => Err(failed(error.into_error())),
        },
    }
}

/// The response as the app receives it: hop-by-hop and identity headers removed
/// (from the trailers too),
/// the request id set, the app's HTTP version.
pub(crate) fn downstream_response(
    response: Response<Incoming>,
    request_id: &HeaderValue,
    version: Version,
) -> Response<ProxyBody> {
    let (mut parts, body) = response.into_parts();
    headers::sanitize(&mut parts.headers);
    parts.headers.insert(REQUEST_ID.clone(), request_id.clone());
    parts.version = version;
    parts.extensions = Extensions::new();
    Response::from_parts(parts, Either::Left(SanitizedTrailers::new(body)))
}
