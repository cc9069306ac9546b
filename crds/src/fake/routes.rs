//! The API's HTTP surface: paths to resources, verbs to store operations,
//! answers and refusals as the API server's JSON.
//!
//! Served: `GET` (one object, a list, or `?watch=true`), `POST`, `PUT`, `PATCH`
//! with `application/apply-patch+yaml` only, and `DELETE`, on
//! `/api/v1/[namespaces/NS/]PLURAL[/NAME[/status]]` and
//! `/apis/GROUP/VERSION/[namespaces/NS/]PLURAL[/NAME[/status]]`. Not served:
//! discovery, label and field selectors, paging (a list is one page), other
//! patch types, subresources but `status`.

use std::collections::BTreeMap;
use std::convert::Infallible;
use std::sync::Arc;

use bytes::Bytes;
use http::{Method, Request, Response, StatusCode};
use http_body_util::{BodyExt, Either, Full, Limited};
use hyper::body::Incoming;
use serde_json::{json, Value};

use super::kinds::{by_path, Kind};
use super::store::{ApiError, Part};
use super::{RecordedRequest, Shared};

/// The body of an answer: whole, or a watch stream.
pub type Body = Either<Full<Bytes>, super::watch::Stream>;

/// The largest request body accepted (the API server's limit is about 3 MiB).
const MAX_BODY: usize = 3 << 20;

/// The content type of server-side apply.
pub const APPLY_PATCH: &str = "application/apply-patch+yaml";

/// Answers one request.
pub async fn handle(shared: Arc<Shared>, request: Request<Incoming>) -> Result<Response<Body>, Infallible> {
    let query = query(request.uri().query().unwrap_or(""));
    let header = |name: http::header::HeaderName| {
        request
            .headers()
            .get(name)
            .and_then(|v| v.to_str().ok())
            .map(str::to_owned)
    };
    shared.record(RecordedRequest {
        method: request.method().to_string(),
        path: request.uri().path().to_owned(),
        query: request.uri().query().unwrap_or("").to_owned(),
        content_type: header(http::header::CONTENT_TYPE),
        field_manager: query.get("fieldManager").cloned(),
        user_agent: header(http::header::USER_AGENT),
    });
    if request.uri().path() == super::tokenreview::REVIEWS_PATH && request.method() == Method::POST {
        let answer = match body_bytes(request).await {
            Ok(body) => shared.reviews.answer(&body).await,
            Err(e) => Err(e),
        };
        return Ok(match answer {
            Ok(review) => json_response(201, &review),
            Err(e) => json_response(e.code, &e.to_status()),
        });
    }
    if request.uri().path().contains("/leases") {
        let mut stalled = shared.stall_leases.subscribe();
        // An error means the server is gone: answer, nobody is listening.
        let _gone = stalled.wait_for(|stall| !stall).await;
    }
    Ok(match answer(&shared, request, &query).await {
        Ok(response) => response,
        Err(e) => json_response(e.code, &e.to_status()),
    })
}

async fn answer(
    shared: &Arc<Shared>,
    request: Request<Incoming>,
    query: &BTreeMap<String, String>,
) -> Result<Response<Body>, ApiError> {
    let target = Target::parse(request.uri().path())?;
    let method = request.method().clone();
    let content_type = request
        .headers()
        .get(http::header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .unwrap_or("")
        .to_owned();
    let ns = target.namespace.as_deref();
    let kind = target.kind;
    match (&method, target.name.as_deref()) {
        (&Method::GET, None) if matches!(query.get("watch").map(String::as_str), Some("true" | "1")) => {
            let stream = super::watch::start(Arc::clone(shared), kind, target.namespace.clone(), query)?;
            Ok(stream_response(stream))
        }
        (&Method::GET, None) => {
            let (items, revision) = shared.read(|store| (store.list(kind, ns), store.revision()));
            Ok(ok(&list(kind, items, revision)))
        }
        (&Method::GET, Some(name)) => Ok(ok(&shared.read(|store| store.get(kind, ns, name))?)),
        (&Method::POST, None) => {
            let body = json_body(request).await?;
            let created = shared.write(|store| store.create(kind, ns, body))?;
            Ok(json_response(201, &created))
        }
        (&Method::PUT, Some(name)) => {
            let body = json_body(request).await?;
            Ok(ok(
                &shared.write(|store| store.replace(kind, ns, name, body, target.part))?
            ))
        }
        (&Method::PATCH, Some(name)) if content_type.starts_with(APPLY_PATCH) => {
            let manager = query
                .get("fieldManager")
                .filter(|m| !m.is_empty())
                .ok_or_else(|| ApiError::bad_request("fieldManager is required for apply requests"))?
                .clone();
            let patch = yaml_body(request).await?;
            Ok(ok(&shared.write(|store| {
                store.apply(kind, ns, name, patch, &manager, target.part)
            })?))
        }
        (&Method::PATCH, Some(_)) => Err(ApiError::new(
            415,
            "UnsupportedMediaType",
            format!("the fake serves only {APPLY_PATCH} patches, not `{content_type}`"),
        )),
        (&Method::DELETE, Some(name)) => Ok(ok(&shared.write(|store| store.delete(kind, ns, name))?)),
        _ => Err(ApiError::new(
            405,
            "MethodNotAllowed",
            format!("{method} is not served here"),
        )),
    }
}

/// What a path names.
struct Target {
    kind: &'static Kind,
    namespace: Option<String>,
    name: Option<String>,
    part: Part,
}

impl Target {
    fn parse(path: &str) -> Result<Self, ApiError> {
        let not_found = || ApiError::new(404, "NotFound", "the server could not find the requested resource");
        let segments: Vec<&str> = path.trim_start_matches('/').split('/').collect();
        let (group, version, rest) = match segments.as_slice() {
            ["api", version, rest @ ..] => ("", *version, rest),
            ["apis", group, version, rest @ ..] => (*group, *version, rest),
            _ => return Err(not_found()),
        };
        let (namespace, rest) = match rest {
            ["namespaces", ns, rest @ ..] if !rest.is_empty() => (Some((*ns).to_owned()), rest),
            rest => (None, rest),
        };
        let (plural, name, part) = match rest {
            [plural] => (*plural, None, Part::Main),
            [plural, name] => (*plural, Some((*name).to_owned()), Part::Main),
            [plural, name, "status"] => (*plural, Some((*name).to_owned()), Part::Status),
            _ => return Err(not_found()),
        };
        let kind = by_path(group, version, plural).ok_or_else(not_found)?;
        let status_not_served = part == Part::Status && !kind.status_subresource;
        if (namespace.is_some() && !kind.namespaced) || status_not_served {
            return Err(not_found());
        }
        Ok(Self {
            kind,
            namespace,
            name,
            part,
        })
    }
}

fn list(kind: &Kind, items: Vec<Value>, revision: u64) -> Value {
    json!({
        "apiVersion": kind.api_version(),
        "kind": format!("{}List", kind.kind),
        "metadata": {"resourceVersion": revision.to_string()},
        "items": items,
    })
}

async fn body_bytes(request: Request<Incoming>) -> Result<Bytes, ApiError> {
    Limited::new(request.into_body(), MAX_BODY)
        .collect()
        .await
        .map(|collected| collected.to_bytes())
        .map_err(|e| ApiError::new(413, "RequestEntityTooLarge", format!("cannot read the body: {e}")))
}

async fn json_body(request: Request<Incoming>) -> Result<Value, ApiError> {
    let bytes = body_bytes(request).await?;
    serde_json::from_slice(&bytes).map_err(|e| ApiError::bad_request(format!("the body is not JSON: {e}")))
}

async fn yaml_body(request: Request<Incoming>) -> Result<Value, ApiError> {
    let bytes = body_bytes(request).await?;
    serde_yaml_ng::from_slice(&bytes).map_err(|e| ApiError::bad_request(format!("the body is not YAML: {e}")))
}

fn ok(value: &Value) -> Response<Body> {
    json_response(200, value)
}

fn json_response(code: u16, value: &Value) -> Response<Body> {
    let mut response = Response::new(Either::Left(Full::new(Bytes::from(value.to_string()))));
    *response.status_mut() = StatusCode::from_u16(code).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
    response.headers_mut().insert(
        http::header::CONTENT_TYPE,
        http::HeaderValue::from_static("application/json"),
    );
    response
}

fn stream_response(stream: super::watch::Stream) -> Response<Body> {
    let mut response = Response::new(Either::Right(stream));
    response.headers_mut().insert(
        http::header::CONTENT_TYPE,
        http::HeaderValue::from_static("application/json"),
    );
    response
}

/// The query's parameters, percent-decoded (a repeated one keeps its last value).
fn query(raw: &str) -> BTreeMap<String, String> {
    raw.split('&')
        .filter(|pair| !pair.is_empty())
        .map(|pair| {
            let (name, value) = pair.split_once('=').unwrap_or((pair, ""));
            (decode(name), decode(value))
        })
        .collect()
}

fn decode(text: &str) -> String {
    let bytes = text.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while let Some(&b) = bytes.get(i) {
        let hex = bytes
            .get(i + 1..i + 3)
            .and_then(|h| std::str::from_utf8(h).ok())
            .and_then(|h| u8::from_str_radix(h, 16).ok());
        match (b, hex) {
            (b'%', Some(value)) => {
                out.push(value);
                i += 3;
            }
            (b'+', _) => {
                out.push(b' ');
                i += 1;
            }
            (b, _) => {
                out.push(b);
                i += 1;
            }
        }
    }
    String::from_utf8_lossy(&out).into_owned()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn paths_name_a_resource_a_namespace_an_object_and_a_part() {
        let t = Target::parse("/apis/palisade.dev/v1alpha1/namespaces/web/cedarpolicies/p/status").unwrap();
        assert_eq!(
            (t.kind.kind, t.namespace.as_deref(), t.name.as_deref(), t.part),
            ("CedarPolicy", Some("web"), Some("p"), Part::Status)
        );
        let t = Target::parse("/api/v1/pods").unwrap();
        assert_eq!((t.kind.kind, t.namespace, t.name), ("Pod", None, None));
        let t = Target::parse("/api/v1/namespaces").unwrap();
        assert_eq!((t.kind.kind, t.namespace, t.name), ("Namespace", None, None));
        let t = Target::parse("/api/v1/namespaces/web").unwrap();
        assert_eq!(
            (t.kind.kind, t.namespace, t.name.as_deref()),
            ("Namespace", None, Some("web"))
        );
        let t = Target::parse("/apis/palisade.dev/v1alpha1/meshconfigs/default").unwrap();
        assert_eq!((t.kind.kind, t.name.as_deref()), ("MeshConfig", Some("default")));
    }

    #[test]
    fn what_is_not_served_is_not_found() {
        for path in [
            "/",
            "/apis",
            "/api/v1/configmaps",
            "/api/v1/secrets",
            "/apis/palisade.dev/v1alpha1/namespaces/web/meshconfigs",
            "/apis/coordination.k8s.io/v1/namespaces/a/leases/l/status",
            "/api/v1/namespaces/a/pods/p/exec",
        ] {
            assert_eq!(Target::parse(path).err().map(|e| e.code), Some(404), "{path}");
        }
    }

    #[test]
    fn query_values_are_percent_decoded() {
        let q = query("watch=true&fieldManager=palisade%2Dcontroller&labelSelector=a%3Db+c&x");
        assert_eq!(q["fieldManager"], "palisade-controller");
        assert_eq!(q["labelSelector"], "a=b c");
        assert_eq!(q["x"], "");
    }
}
