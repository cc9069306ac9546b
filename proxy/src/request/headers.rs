//! Header handling both sides share (`SECURITY.md` §1 rules 6–7, §2).
//!
//! Order matters: hop-by-hop headers (including those a `Connection` header names)
//! are removed first, then every identity header, and only then is identity set
//! again from the verified peer, so no header a caller sends can remove or forge it.

use http::header::{CONNECTION, TE};
use http::{HeaderMap, HeaderName, HeaderValue};
use palisade_ca::SpiffeId;

use super::Refusal;

/// The identity header the app receives: who called, as the TLS handshake proved.
pub static XFCC: HeaderName = HeaderName::from_static("x-forwarded-client-cert");

/// Headers meaningful for one connection only (RFC 9110 §7.6.1), never forwarded.
const HOP_BY_HOP: [&str; 8] = [
    "connection",
    "proxy-connection",
    "keep-alive",
    "transfer-encoding",
    "upgrade",
    "trailer",
    "proxy-authenticate",
    "proxy-authorization",
];

/// Removes the hop-by-hop headers and every header a `Connection` header names.
/// `te: trailers` is kept (gRPC needs it on HTTP/2); any other `te` is removed.
pub fn strip_hop_by_hop(headers: &mut HeaderMap) {
    let named: Vec<HeaderName> = headers
        .get_all(CONNECTION)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .filter_map(|name| HeaderName::from_bytes(name.trim().as_bytes()).ok())
        .collect();
    for name in named {
        // A `Connection` header naming an identity header removes nothing that
        // matters: identity headers are stripped and set again afterwards anyway.
        headers.remove(name);
    }
    for name in HOP_BY_HOP {
        headers.remove(name);
    }
    let te_is_trailers = {
        let mut values = headers.get_all(TE).iter();
        matches!((values.next(), values.next()), (Some(v), None) if v.as_bytes().eq_ignore_ascii_case(b"trailers"))
    };
    if !te_is_trailers {
        headers.remove(TE);
    }
}

/// Removes `x-forwarded-client-cert` and every `x-palisade-*` header.
pub fn strip_identity(headers: &mut HeaderMap) {
    headers.remove(&XFCC);
    let palisade: Vec<HeaderName> = headers
        .keys()
        .filter(|name| name.as_str().starts_with("x-palisade-"))
        .cloned()
        .collect();
    for name in palisade {
        headers.remove(name);
    }
}

/// Strips hop-by-hop and identity headers, in that order.
pub fn sanitize(headers: &mut HeaderMap) {
    strip_hop_by_hop(headers);
    strip_identity(headers);
}

/// Sets `x-forwarded-client-cert: By=<this workload>;URI=<verified peer>`, in the
/// format Envoy uses. Both values are parsed SPIFFE IDs, whose grammar holds no
/// byte that could break out of the header (`"`, `;`, `,`, `=`, CR, LF).
pub fn set_xfcc(headers: &mut HeaderMap, local: &SpiffeId, peer: &SpiffeId) {
    let value = format!("By={local};URI={peer}");
    if let Ok(value) = HeaderValue::from_str(&value) {
        headers.insert(XFCC.clone(), value);
    }
}

/// The headers as policies see them: lower-case names and each line's value.
///
/// # Errors
///
/// 400 when a value is not UTF-8: it could not be matched faithfully.
pub fn policy_view(headers: &HeaderMap) -> Result<Vec<(&str, &str)>, Refusal> {
    headers
        .iter()
        .map(|(name, value)| match value.to_str() {
            Ok(value) => Ok((name.as_str(), value)),
            Err(_) => Err(Refusal::BadRequest(format!(
                "the value of header `{name}` is not visible ASCII; send it encoded"
            ))),
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn map(lines: &[(&str, &str)]) -> HeaderMap {
        let mut headers = HeaderMap::new();
        for (name, value) in lines {
            headers.append(
                HeaderName::from_bytes(name.as_bytes()).unwrap(),
                HeaderValue::from_str(value).unwrap(),
            );
        }
        headers
    }

    #[test]
    fn identity_headers_are_stripped_and_a_connection_header_cannot_protect_them() {
        let mut headers = map(&[
            ("connection", "x-forwarded-client-cert, x-keep"),
            ("x-forwarded-client-cert", "URI=spiffe://evil/ns/a/sa/b"),
            ("x-palisade-peer", "forged"),
            ("x-keep", "dropped because connection names it"),
            ("x-other", "stays"),
        ]);
        sanitize(&mut headers);
        let local = SpiffeId::parse("spiffe://td/ns/b/sa/b").unwrap();
        let peer = SpiffeId::parse("spiffe://td/ns/a/sa/a").unwrap();
        set_xfcc(&mut headers, &local, &peer);
        assert_eq!(
            headers.get_all(&XFCC).iter().collect::<Vec<_>>(),
            ["By=spiffe://td/ns/b/sa/b;URI=spiffe://td/ns/a/sa/a"]
        );
        assert!(headers.get("x-palisade-peer").is_none());
        assert!(headers.get("x-keep").is_none());
        assert!(headers.get("connection").is_none());
        assert_eq!(headers.get("x-other").unwrap(), "stays");
    }

    #[test]
    fn te_trailers_survives_for_grpc_and_other_codings_do_not() {
        let mut grpc = map(&[("te", "trailers")]);
        strip_hop_by_hop(&mut grpc);
        assert_eq!(grpc.get(TE).unwrap(), "trailers");
        let mut gzip = map(&[("te", "gzip")]);
        strip_hop_by_hop(&mut gzip);
        assert!(gzip.get(TE).is_none());
    }

    #[test]
    fn every_line_reaches_policies() {
        let headers = map(&[("x-role", "user"), ("x-role", "admin")]);
        let view = policy_view(&headers).unwrap();
        assert_eq!(view, [("x-role", "user"), ("x-role", "admin")]);
    }

    #[test]
    fn non_ascii_values_are_refused() {
        let mut headers = HeaderMap::new();
        headers.insert("x-name", HeaderValue::from_bytes(b"caf\xc3\xa9").unwrap());
        assert!(matches!(policy_view(&headers), Err(Refusal::BadRequest(_))));
    }
}
