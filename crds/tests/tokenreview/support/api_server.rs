//! The one faked part: a small Kubernetes API server over real TLS on loopback that
//! answers `POST /apis/authentication.k8s.io/v1/tokenreviews` with the JSON the
//! real one sends, for the tokens a test registers.
//!
//! Like the real API server it authenticates a token only for the audiences it was
//! minted for: the answer's `audiences` are the intersection with the requested
//! ones, and no intersection (or an expired or unknown token) is
//! `authenticated: false` with the real server's error text. It records every
//! review it was asked for, can be told to refuse the caller (403, as when the CA's
//! service account may not create `tokenreviews`) and can hold a token's review
//! until released (an API server that does not answer).

use std::collections::HashMap;
use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime};

use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper::body::Incoming;
use hyper::{Request, Response, StatusCode};
use hyper_util::rt::{TokioExecutor, TokioIo};
use rustls::pki_types::{CertificateDer, PrivateKeyDer, PrivatePkcs8KeyDer};
use serde_json::{json, Value};
use tokio::sync::watch;
use tokio::task::{JoinHandle, JoinSet};

const REVIEWS_PATH: &str = "/apis/authentication.k8s.io/v1/tokenreviews";
/// The audience the real API server assumes when a review names none.
const API_SERVER_AUDIENCE: &str = "https://kubernetes.default.svc.cluster.local";

/// A token the fake API server knows: whose it is, for which audiences, until when.
#[derive(Debug, Clone)]
pub struct KnownToken {
    pub namespace: String,
    pub service_account: String,
    pub audiences: Vec<String>,
    pub expires: SystemTime,
    pub pod_name: String,
    pub pod_uid: String,
}

impl KnownToken {
    /// A token of `namespace`/`service_account` for `audience`, valid for an hour.
    pub fn new(namespace: &str, service_account: &str, audience: &str) -> Self {
        Self {
            namespace: namespace.to_owned(),
            service_account: service_account.to_owned(),
            audiences: vec![audience.to_owned()],
            expires: SystemTime::now() + Duration::from_secs(3600),
            pod_name: format!("{service_account}-6d4c9"),
            pod_uid: "0b7e2f3a-1c44-4b7e-9d0a-5e3f2a1b9c8d".to_owned(),
        }
    }

    /// The same token, expired a minute ago.
    pub fn expired(self) -> Self {
        Self {
            expires: SystemTime::now() - Duration::from_secs(60),
            ..self
        }
    }
}

/// One review the fake API server was asked for.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SeenReview {
    pub token: String,
    pub audiences: Vec<String>,
}

#[derive(Default)]
struct State {
    tokens: Mutex<HashMap<String, KnownToken>>,
    seen: Mutex<Vec<SeenReview>>,
    forbidden: AtomicBool,
    held: Mutex<Vec<String>>,
}

/// The fake API server; stops when dropped.
pub struct FakeApiServer {
    pub addr: SocketAddr,
    /// Its self-signed certificate, for the client to trust.
    pub cert: CertificateDer<'static>,
    /// The same, PEM, for a kubeconfig's `certificate-authority`.
    pub cert_pem: String,
    state: Arc<State>,
    release: watch::Sender<bool>,
    task: JoinHandle<()>,
}

impl FakeApiServer {
    pub async fn start() -> Self {
        let key = rcgen::KeyPair::generate().unwrap();
        let certificate = rcgen::CertificateParams::new(vec!["127.0.0.1".to_owned()])
            .unwrap()
            .self_signed(&key)
            .unwrap();
        let (cert, cert_pem) = (certificate.der().clone(), certificate.pem());
        let mut config =
            rustls::ServerConfig::builder_with_provider(Arc::new(rustls::crypto::ring::default_provider()))
                .with_safe_default_protocol_versions()
                .unwrap()
                .with_no_client_auth()
                .with_single_cert(
                    vec![cert.clone()],
                    PrivateKeyDer::Pkcs8(PrivatePkcs8KeyDer::from(key.serialize_der())),
                )
                .unwrap();
        config.alpn_protocols = vec![b"h2".to_vec(), b"http/1.1".to_vec()];
        let acceptor = tokio_rustls::TlsAcceptor::from(Arc::new(config));
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let state = Arc::new(State::default());
        let (release, released) = watch::channel(false);
        let task = tokio::spawn(accept_loop(listener, acceptor, Arc::clone(&state), released));
        Self {
            addr,
            cert,
            cert_pem,
            state,
            release,
            task,
        }
    }

    /// `https://127.0.0.1:PORT`.
    pub fn url(&self) -> String {
        format!("https://{}", self.addr)
    }

    /// The client configuration an operator's kubeconfig would give: this server,
    /// trusted by its certificate.
    pub fn kube_config(&self) -> kube::Config {
        let mut config = kube::Config::new(self.url().parse().unwrap());
        config.root_cert = Some(vec![self.cert.to_vec()]);
        config
    }

    /// A kubeconfig file for this server (its certificate beside it in `dir`), as an
    /// operator would pass with `--kubeconfig`.
    pub fn kubeconfig_file(&self, dir: &std::path::Path) -> std::path::PathBuf {
        let ca = dir.join("api-server-ca.pem");
        std::fs::write(&ca, &self.cert_pem).unwrap();
        let kubeconfig = format!(
            "apiVersion: v1\nkind: Config\nclusters:\n- name: fake\n  cluster:\n    server: {}\n    certificate-authority: {}\ncontexts:\n- name: fake\n  context:\n    cluster: fake\n    user: palisade-ca\ncurrent-context: fake\nusers:\n- name: palisade-ca\n  user: {{}}\n",
            self.url(),
            ca.display()
        );
        let path = dir.join("kubeconfig");
        std::fs::write(&path, kubeconfig).unwrap();
        path
    }

    /// Registers `token`.
    pub fn knows(&self, token: &str, known: KnownToken) {
        self.state.tokens.lock().unwrap().insert(token.to_owned(), known);
    }

    /// Every review asked for so far.
    pub fn seen(&self) -> Vec<SeenReview> {
        self.state.seen.lock().unwrap().clone()
    }

    /// From now on, refuse every review with 403 Forbidden (or stop refusing).
    pub fn forbid(&self, forbidden: bool) {
        self.state.forbidden.store(forbidden, Ordering::SeqCst);
    }

    /// Reviews of `token` get no answer until [`Self::release_held`].
    pub fn hold(&self, token: &str) {
        self.release.send_replace(false);
        self.state.held.lock().unwrap().push(token.to_owned());
    }

    /// Lets every held review answer.
    pub fn release_held(&self) {
        self.state.held.lock().unwrap().clear();
        self.release.send_replace(true);
    }
}

impl Drop for FakeApiServer {
    fn drop(&mut self) {
        self.task.abort();
    }
}

/// Serves each connection on a task owned by the loop, so aborting the loop ends
/// them all.
async fn accept_loop(
    listener: tokio::net::TcpListener,
    acceptor: tokio_rustls::TlsAcceptor,
    state: Arc<State>,
    released: watch::Receiver<bool>,
) {
    let mut connections = JoinSet::new();
    loop {
        let Ok((tcp, _)) = listener.accept().await else {
            continue;
        };
        let acceptor = acceptor.clone();
        let state = Arc::clone(&state);
        let released = released.clone();
        connections.spawn(async move {
            let Ok(tls) = acceptor.accept(tcp).await else {
                return;
            };
            let service =
                hyper::service::service_fn(move |request| handle(Arc::clone(&state), released.clone(), request));
            let _ = hyper_util::server::conn::auto::Builder::new(TokioExecutor::new())
                .serve_connection(TokioIo::new(tls), service)
                .await;
        });
    }
}

async fn handle(
    state: Arc<State>,
    mut released: watch::Receiver<bool>,
    request: Request<Incoming>,
) -> Result<Response<Full<Bytes>>, Infallible> {
    if request.method() != hyper::Method::POST || request.uri().path() != REVIEWS_PATH {
        let path = request.uri().path().to_owned();
        return Ok(status_response(
            StatusCode::NOT_FOUND,
            "NotFound",
            &format!("the server could not find the requested resource ({path})"),
        ));
    }
    let body = request
        .into_body()
        .collect()
        .await
        .map(|b| b.to_bytes())
        .unwrap_or_default();
    let Ok(review) = serde_json::from_slice::<Value>(&body) else {
        return Ok(status_response(
            StatusCode::BAD_REQUEST,
            "BadRequest",
            "the body is not a TokenReview",
        ));
    };
    let spec = review.get("spec").cloned().unwrap_or(Value::Null);
    let token = spec.get("token").and_then(Value::as_str).unwrap_or_default().to_owned();
    let audiences: Vec<String> = spec
        .get("audiences")
        .and_then(Value::as_array)
        .map(|a| a.iter().filter_map(Value::as_str).map(str::to_owned).collect())
        .unwrap_or_default();
    state.seen.lock().unwrap().push(SeenReview {
        token: token.clone(),
        audiences: audiences.clone(),
    });
    if state.forbidden.load(Ordering::SeqCst) {
        return Ok(status_response(
            StatusCode::FORBIDDEN,
            "Forbidden",
            "tokenreviews.authentication.k8s.io is forbidden: User \"system:serviceaccount:palisade-system:palisade-ca\" cannot create resource \"tokenreviews\" in API group \"authentication.k8s.io\" at the cluster scope",
        ));
    }
    if state.held.lock().unwrap().contains(&token) {
        let _ = released.wait_for(|released| *released).await;
    }
    let known = state.tokens.lock().unwrap().get(&token).cloned();
    let status = review_status(known.as_ref(), &audiences);
    let answer = json!({
        "kind": "TokenReview",
        "apiVersion": "authentication.k8s.io/v1",
        "metadata": { "creationTimestamp": null },
        "spec": spec,
        "status": status,
    });
    Ok(json_response(StatusCode::CREATED, &answer))
}

/// What the real API server says about a token asked for `requested` audiences.
fn review_status(known: Option<&KnownToken>, requested: &[String]) -> Value {
    let requested = if requested.is_empty() {
        vec![API_SERVER_AUDIENCE.to_owned()]
    } else {
        requested.to_vec()
    };
    let Some(known) = known else {
        return refused("[invalid bearer token, square/go-jose: error in cryptographic primitive]");
    };
    if known.expires < SystemTime::now() {
        return refused("[invalid bearer token, service account token has expired]");
    }
    let both: Vec<&String> = requested.iter().filter(|a| known.audiences.contains(a)).collect();
    if both.is_empty() {
        return refused(&format!(
            "[invalid bearer token, token audiences {:?} is invalid for the target audiences {:?}]",
            known.audiences, requested
        ));
    }
    json!({
        "authenticated": true,
        "user": {
            "username": format!("system:serviceaccount:{}:{}", known.namespace, known.service_account),
            "uid": "5a0e6b6c-8d5f-4b8e-a1d2-3c4b5a6f7e8d",
            "groups": ["system:serviceaccounts", format!("system:serviceaccounts:{}", known.namespace), "system:authenticated"],
            "extra": {
                "authentication.kubernetes.io/credential-id": ["JTI=3c0b4a52-9e1f-4b43-8c77-2f1d5e6a7b8c"],
                "authentication.kubernetes.io/node-name": ["worker-1"],
                "authentication.kubernetes.io/pod-name": [known.pod_name],
                "authentication.kubernetes.io/pod-uid": [known.pod_uid],
            },
        },
        "audiences": both,
    })
}

fn refused(error: &str) -> Value {
    json!({ "user": {}, "error": error })
}

fn status_response(code: StatusCode, reason: &str, message: &str) -> Response<Full<Bytes>> {
    let body = json!({
        "kind": "Status",
        "apiVersion": "v1",
        "metadata": {},
        "status": "Failure",
        "message": message,
        "reason": reason,
        "code": code.as_u16(),
    });
    json_response(code, &body)
}

fn json_response(code: StatusCode, body: &Value) -> Response<Full<Bytes>> {
    Response::builder()
        .status(code)
        .header("content-type", "application/json")
        .body(Full::new(Bytes::from(body.to_string())))
        .unwrap()
}
