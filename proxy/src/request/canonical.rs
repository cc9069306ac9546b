//! From a parsed HTTP request to the canonical facts a decision is made on, or a
//! refusal (`SECURITY.md` §1 rule 1 and §2). hyper has already parsed the bytes
//! and refused what it cannot frame; this adds the rules hyper leaves to us.

use http::header::{CONTENT_LENGTH, CONTENT_TYPE, HOST, TRANSFER_ENCODING, UPGRADE};
use http::request::Parts;
use http::{Method, Version};
use palisade_authz::normalize::{normalize_host, normalize_path, NormalizeError, NormalizedHost, NormalizedPath};
use palisade_authz::{Action, Protocol};

use super::Refusal;

/// A request reduced to what policies match.
#[derive(Debug, Clone)]
pub struct Canonical {
    pub action: Action,
    /// The canonical path and the original query: what goes upstream.
    pub path: NormalizedPath,
    /// The canonical host and port.
    pub host: NormalizedHost,
    pub protocol: Protocol,
}

/// Canonicalizes a request; `default_port` is the port a Host without one means.
///
/// # Errors
///
/// The refusal to send instead of forwarding: 400 for a request with no single
/// meaning, 405 for a method policies cannot name, 414 for a target too long,
/// 501 for an upgrade.
pub fn canonicalize(parts: &Parts, default_port: Option<u16>) -> Result<Canonical, Refusal> {
    check_framing(parts)?;
    check_header_names(parts)?;
    let action = action(&parts.method)?;
    let host = host(parts, default_port)?;
    let target = parts
        .uri
        .path_and_query()
        .map(http::uri::PathAndQuery::as_str)
        .ok_or_else(|| Refusal::BadRequest("the request has no path".to_owned()))?;
    let path = normalize_path(target).map_err(refusal)?;
    Ok(Canonical {
        action,
        path,
        host,
        protocol: protocol(parts),
    })
}

/// The refusal for a request whose path or host has no canonical form.
pub fn refusal(error: NormalizeError) -> Refusal {
    match error {
        NormalizeError::TargetTooLong { .. } => Refusal::TargetTooLong,
        other => Refusal::BadRequest(other.to_string()),
    }
}

fn check_framing(parts: &Parts) -> Result<(), Refusal> {
    let bad = |reason: &str| Err(Refusal::BadRequest(reason.to_owned()));
    if parts.headers.contains_key(UPGRADE) {
        return Err(Refusal::UpgradeUnsupported);
    }
    let lengths = parts.headers.get_all(CONTENT_LENGTH).iter().count();
    let mut codings = parts.headers.get_all(TRANSFER_ENCODING).iter();
    if lengths > 1 {
        return bad("the request has several Content-Length headers");
    }
    if let Some(length) = parts.headers.get(CONTENT_LENGTH) {
        let digits = length.as_bytes();
        if digits.is_empty() || !digits.iter().all(u8::is_ascii_digit) {
            return bad("the Content-Length header is not a plain decimal number");
        }
    }
    match (codings.next(), codings.next()) {
        (None, _) => {}
        (Some(_), _) if lengths > 0 => return bad("the request has both Content-Length and Transfer-Encoding"),
        (Some(only), None) if only.as_bytes().eq_ignore_ascii_case(b"chunked") => {}
        (Some(_), _) => return bad("the only transfer coding accepted is a single `chunked`"),
    }
    Ok(())
}

/// `_` is a token byte, so hyper and h2 accept it, but servers that map headers to
/// variables (CGI, many frameworks) read `x_user` as `x-user`: two spellings of one
/// header that policies would see as two (`SECURITY.md` §1 rule 1).
pub(crate) fn check_header_names(parts: &Parts) -> Result<(), Refusal> {
    match parts.headers.keys().find(|name| name.as_str().contains('_')) {
        Some(name) => Err(Refusal::BadRequest(format!(
            "the header name `{name}` has an `_`; use `-`"
        ))),
        None => Ok(()),
    }
}

fn action(method: &Method) -> Result<Action, Refusal> {
    let name = method.as_str();
    if !name.bytes().all(|b| b.is_ascii_uppercase()) {
        return Err(Refusal::BadRequest(format!(
            "the method `{}` is not upper-case letters",
            name.escape_debug()
        )));
    }
    Ok(match *method {
        Method::GET => Action::Get,
        Method::HEAD => Action::Head,
        Method::POST => Action::Post,
        Method::PUT => Action::Put,
        Method::PATCH => Action::Patch,
        Method::DELETE => Action::Delete,
        Method::OPTIONS => Action::Options,
        _ => {
            return Err(Refusal::MethodNotAllowed(format!(
                "the method `{name}` cannot be authorized; use GET, HEAD, POST, PUT, PATCH, DELETE or OPTIONS"
            )))
        }
    })
}

/// The one host of the request: `Host`, the absolute-form authority, or HTTP/2's
/// `:authority`; when two are present they must agree.
fn host(parts: &Parts, default_port: Option<u16>) -> Result<NormalizedHost, Refusal> {
    let mut hosts = parts.headers.get_all(HOST).iter();
    let header = match (hosts.next(), hosts.next()) {
        (_, Some(_)) => return Err(Refusal::BadRequest("the request has several Host headers".to_owned())),
        (Some(value), None) => Some(
            value
                .to_str()
                .map_err(|_| Refusal::BadRequest("the Host header is not ASCII".to_owned()))?,
        ),
        (None, None) => None,
    };
    let authority = parts.uri.authority().map(http::uri::Authority::as_str);
    let normalize = |raw: &str| normalize_host(raw, default_port).map_err(refusal);
    match (header, authority) {
        (Some(header), Some(authority)) => {
            let (header, authority) = (normalize(header)?, normalize(authority)?);
            if header != authority {
                return Err(Refusal::BadRequest(
                    "the request's authority and its Host header differ".to_owned(),
                ));
            }
            Ok(header)
        }
        (Some(one), None) | (None, Some(one)) => normalize(one),
        (None, None) => Err(Refusal::BadRequest("the request has no Host header".to_owned())),
    }
}

fn protocol(parts: &Parts) -> Protocol {
    if parts.version != Version::HTTP_2 {
        return Protocol::Http1;
    }
    let grpc = parts
        .headers
        .get(CONTENT_TYPE)
        .is_some_and(|v| v.as_bytes().starts_with(b"application/grpc"));
    if grpc {
        Protocol::Grpc
    } else {
        Protocol::H2
    }
}

#[cfg(test)]
mod tests {
    use http::Request;

    use super::*;

    fn parts(method: &str, uri: &str, headers: &[(&str, &str)]) -> Parts {
        let mut builder = Request::builder().method(method).uri(uri);
        for (name, value) in headers {
            builder = builder.header(*name, *value);
        }
        builder.body(()).unwrap().into_parts().0
    }

    fn refused(method: &str, uri: &str, headers: &[(&str, &str)]) -> Refusal {
        canonicalize(&parts(method, uri, headers), Some(80)).unwrap_err()
    }

    #[test]
    fn a_plain_request_is_canonical() {
        let facts = canonicalize(&parts("GET", "/a/./b//c?x=1", &[("host", "Reviews.Shop:80")]), Some(80)).unwrap();
        assert_eq!(facts.action, Action::Get);
        assert_eq!(facts.path.path(), "/a/b/c");
        assert_eq!(facts.path.query(), Some("x=1"));
        assert_eq!(facts.host.name(), "reviews.shop");
        assert_eq!(facts.host.port(), None);
        assert_eq!(facts.protocol, Protocol::Http1);
    }

    #[test]
    fn the_rules_hyper_leaves_to_us() {
        let host = ("host", "a.shop");
        type Case<'a> = (&'a str, &'a str, Vec<(&'a str, &'a str)>, u16);
        let cases: [Case<'_>; 13] = [
            ("GET", "/", vec![("host", "a.shop"), ("host", "b.shop")], 400),
            ("GET", "/", vec![], 400),
            ("GET", "/", vec![("host", "")], 400),
            ("GET", "http://b.shop/", vec![host], 400),
            (
                "POST",
                "/",
                vec![host, ("content-length", "5"), ("transfer-encoding", "chunked")],
                400,
            ),
            ("POST", "/", vec![host, ("content-length", "+5")], 400),
            (
                "POST",
                "/",
                vec![host, ("content-length", "5"), ("content-length", "5")],
                400,
            ),
            ("POST", "/", vec![host, ("transfer-encoding", "gzip, chunked")], 400),
            ("GET", "/", vec![host, ("upgrade", "websocket")], 501),
            ("TRACE", "/", vec![host], 405),
            ("GET", "/a/../../etc", vec![host], 400),
            ("GET", "/a%2Fb", vec![host], 400),
            ("GET", "/", vec![host, ("x_user", "admin")], 400),
        ];
        for (method, uri, headers, status) in cases {
            assert_eq!(
                refused(method, uri, &headers).status(),
                status,
                "{method} {uri} {headers:?}"
            );
        }
    }

    #[test]
    fn an_absolute_form_authority_that_matches_host_is_fine() {
        let facts = canonicalize(&parts("GET", "http://a.shop/x", &[("host", "A.SHOP")]), Some(80)).unwrap();
        assert_eq!(facts.host.name(), "a.shop");
        assert_eq!(facts.path.path(), "/x");
    }

    #[test]
    fn grpc_is_recognised_on_http2_only() {
        let mut p = parts(
            "POST",
            "http://a.shop/pkg.Svc/Call",
            &[("content-type", "application/grpc")],
        );
        p.version = Version::HTTP_2;
        assert_eq!(canonicalize(&p, None).unwrap().protocol, Protocol::Grpc);
    }
}
