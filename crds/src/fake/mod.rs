//! A small in-process Kubernetes API server, for tests only (feature
//! `fake-api`).
//!
//! No Kubernetes API server can run where Palisade's tests run, and the API
//! server is the one part of a cluster a test may fake: everything on our side
//! (the controller, kube's real [`kube::Client`] and `watcher`, the loader) runs
//! for real against it. It speaks the API's JSON over real TLS (a throwaway CA
//! from rcgen), keeps objects in memory with a global `resourceVersion`, and
//! serves what the controller uses: list, watch (with bookmarks, timeouts and
//! 410 Gone), get, create, replace with optimistic concurrency, server-side
//! apply (recording `managedFields`; `/status` writes the status only and never
//! bumps `generation`) and delete. See [`routes`] for what is not served. It also
//! answers TokenReviews for the tokens a test registers ([`tokenreview`]), for
//! the CA's ServiceAccount attestation.
//!
//! Tests set the cluster up with [`FakeApiServer::apply`] (as kubectl, kubelet
//! and other controllers would), read results with [`FakeApiServer::get`], and
//! check how the controller wrote with [`FakeApiServer::requests`].
//!
//! It is a test double of the API server only: no admission, no validation of
//! objects against their schema, no field ownership conflicts, no RBAC.

pub mod kinds;
mod object;
pub mod routes;
pub mod store;
mod tls;
pub mod tokenreview;
mod watch;

pub use tokenreview::{KnownToken, SeenReview};

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, PoisonError};

use hyper::service::service_fn;
use hyper_util::rt::TokioIo;
use serde_json::Value;
use tokio::net::TcpListener;
use tokio::task::JoinHandle;

use self::store::{ApiError, Store};

/// The fake could not start or refused a helper's call.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum FakeError {
    #[error("cannot make the fake API server's certificate: {0}")]
    Tls(String),
    #[error("cannot listen on loopback: {0}")]
    Io(#[from] std::io::Error),
    #[error("the fake API server refused: {message} ({code})")]
    Refused { code: u16, message: String },
    #[error("cannot build a kube client for the fake: {0}")]
    Client(String),
}

impl From<ApiError> for FakeError {
    fn from(e: ApiError) -> Self {
        Self::Refused {
            code: e.code,
            message: e.message,
        }
    }
}

/// One request as the fake received it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RecordedRequest {
    /// `GET`, `PATCH`, ….
    pub method: String,
    /// The path, without the query.
    pub path: String,
    /// The raw query.
    pub query: String,
    pub content_type: Option<String>,
    /// The `fieldManager` query parameter, decoded.
    pub field_manager: Option<String>,
    /// The `User-Agent` header: which client sent it.
    pub user_agent: Option<String>,
}

impl RecordedRequest {
    /// Whether it wrote something (anything but `GET`).
    pub fn is_write(&self) -> bool {
        self.method != "GET"
    }
}

/// What the server's tasks share.
#[derive(Debug)]
pub struct Shared {
    store: Mutex<Store>,
    /// The store's revision, for watches to wait on.
    revision: tokio::sync::watch::Sender<u64>,
    requests: Mutex<Vec<RecordedRequest>>,
    shutdown: tokio::sync::watch::Sender<bool>,
    /// While `true`, requests for Leases get no answer (an API server that hangs).
    stall_leases: tokio::sync::watch::Sender<bool>,
    /// The TokenReview endpoint.
    reviews: tokenreview::Reviews,
}

impl Shared {
    fn read<T>(&self, f: impl FnOnce(&Store) -> T) -> T {
        f(&self.store.lock().unwrap_or_else(PoisonError::into_inner))
    }

    fn write<T>(&self, f: impl FnOnce(&mut Store) -> T) -> T {
        let mut store = self.store.lock().unwrap_or_else(PoisonError::into_inner);
        let out = f(&mut store);
        self.revision.send_replace(store.revision());
        out
    }

    fn record(&self, request: RecordedRequest) {
        self.requests
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .push(request);
    }
}

/// A running fake API server on `127.0.0.1`; stopped when dropped.
#[derive(Debug)]
pub struct FakeApiServer {
    shared: Arc<Shared>,
    addr: SocketAddr,
    ca_der: Vec<u8>,
    ca_pem: String,
    task: JoinHandle<()>,
}

impl FakeApiServer {
    /// Starts a server on a free loopback port.
    ///
    /// # Errors
    ///
    /// When no certificate can be made or no port bound.
    pub async fn start() -> Result<Self, FakeError> {
        let tls = tls::make()?;
        let listener = TcpListener::bind(("127.0.0.1", 0)).await?;
        let addr = listener.local_addr()?;
        let shared = Arc::new(Shared {
            store: Mutex::new(Store::default()),
            revision: tokio::sync::watch::Sender::new(0),
            requests: Mutex::new(Vec::new()),
            shutdown: tokio::sync::watch::Sender::new(false),
            stall_leases: tokio::sync::watch::Sender::new(false),
            reviews: tokenreview::Reviews::default(),
        });
        let acceptor = tokio_rustls::TlsAcceptor::from(Arc::clone(&tls.server));
        let task = tokio::spawn(serve(listener, acceptor, Arc::clone(&shared)));
        Ok(Self {
            shared,
            addr,
            ca_der: tls.ca_der,
            ca_pem: tls.ca_pem,
            task,
        })
    }

    /// While `stall` is `true`, requests for Leases are read and never answered,
    /// as by an API server that hangs; set it back to `false` and they are.
    pub fn stall_leases(&self, stall: bool) {
        self.shared.stall_leases.send_replace(stall);
    }

    /// `https://127.0.0.1:PORT`.
    pub fn url(&self) -> String {
        format!("https://{}", self.addr)
    }

    /// The CA certificate (PEM) that signed the server's certificate.
    pub fn ca_pem(&self) -> &str {
        &self.ca_pem
    }

    /// A kube config for this server, trusting its CA, default namespace `default`.
    ///
    /// # Errors
    ///
    /// Never in practice: the URL is always valid.
    pub fn config(&self) -> Result<kube::Config, FakeError> {
        let url = self
            .url()
            .parse::<http::Uri>()
            .map_err(|e| FakeError::Client(e.to_string()))?;
        let mut config = kube::Config::new(url);
        config.root_cert = Some(vec![self.ca_der.clone()]);
        Ok(config)
    }

    /// kube's real client, talking to this server.
    ///
    /// # Errors
    ///
    /// When kube cannot build its TLS client.
    pub fn client(&self) -> Result<kube::Client, FakeError> {
        kube::Client::try_from(self.config()?).map_err(|e| FakeError::Client(e.to_string()))
    }

    /// Writes `DIR/kubeconfig` (and `DIR/fake-api-ca.pem`) for a process to reach
    /// this server with `--kubeconfig`; the kubeconfig's path.
    ///
    /// # Errors
    ///
    /// When the files cannot be written.
    pub fn write_kubeconfig(&self, dir: &Path) -> Result<PathBuf, FakeError> {
        let ca = dir.join("fake-api-ca.pem");
        std::fs::write(&ca, &self.ca_pem)?;
        let config = serde_json::json!({
            "apiVersion": "v1",
            "kind": "Config",
            "clusters": [{"name": "fake", "cluster": {"server": self.url(), "certificate-authority": ca}}],
            "users": [{"name": "fake", "user": {}}],
            "contexts": [{"name": "fake", "context": {"cluster": "fake", "user": "fake", "namespace": "default"}}],
            "current-context": "fake",
        });
        let path = dir.join("kubeconfig");
        std::fs::write(&path, config.to_string())?;
        Ok(path)
    }

    /// Creates or replaces an object as the cluster's other writers would
    /// (status included, no field manager); the stored object.
    ///
    /// # Errors
    ///
    /// When the object is not of a served kind or has no name.
    pub fn apply(&self, object: Value) -> Result<Value, FakeError> {
        Ok(self.shared.write(|store| store.put(object))?)
    }

    /// Deletes an object; the deleted object.
    ///
    /// # Errors
    ///
    /// When it does not exist.
    pub fn delete(
        &self,
        api_version: &str,
        kind: &str,
        namespace: Option<&str>,
        name: &str,
    ) -> Result<Value, FakeError> {
        let kind = known(api_version, kind)?;
        Ok(self.shared.write(|store| store.delete(kind, namespace, name))?)
    }

    /// An object, if it exists.
    pub fn get(&self, api_version: &str, kind: &str, namespace: Option<&str>, name: &str) -> Option<Value> {
        let kind = kinds::by_object(api_version, kind)?;
        self.shared.read(|store| store.get(kind, namespace, name).ok())
    }

    /// The store's current revision (the `resourceVersion` of the last write).
    pub fn revision(&self) -> u64 {
        self.shared.read(Store::revision)
    }

    /// Every request received so far, in order.
    pub fn requests(&self) -> Vec<RecordedRequest> {
        self.shared
            .requests
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .clone()
    }

    /// Registers a ServiceAccount `token` for TokenReviews.
    pub fn knows(&self, token: &str, known: KnownToken) {
        self.shared.reviews.knows(token, known);
    }

    /// Every TokenReview asked for so far.
    pub fn seen_reviews(&self) -> Vec<SeenReview> {
        self.shared.reviews.seen()
    }

    /// From now on, refuse every TokenReview with 403 Forbidden (or stop refusing).
    pub fn forbid_reviews(&self, forbidden: bool) {
        self.shared.reviews.forbid(forbidden);
    }

    /// TokenReviews of `token` get no answer until [`Self::release_held_reviews`].
    pub fn hold_review(&self, token: &str) {
        self.shared.reviews.hold(token);
    }

    /// Lets every held TokenReview answer.
    pub fn release_held_reviews(&self) {
        self.shared.reviews.release_held();
    }

    /// The writes (anything but `GET`) received so far.
    pub fn writes(&self) -> Vec<RecordedRequest> {
        self.requests().into_iter().filter(RecordedRequest::is_write).collect()
    }
}

impl Drop for FakeApiServer {
    fn drop(&mut self) {
        self.shared.shutdown.send_replace(true);
        self.task.abort();
    }
}

fn known(api_version: &str, kind: &str) -> Result<&'static kinds::Kind, FakeError> {
    kinds::by_object(api_version, kind).ok_or_else(|| FakeError::Refused {
        code: 404,
        message: format!("the fake does not serve `{api_version}` `{kind}`"),
    })
}

/// Resolves once the server is stopping.
async fn stopped(shutdown: &mut tokio::sync::watch::Receiver<bool>) {
    let _ = shutdown.wait_for(|stop| *stop).await;
}

/// Accepts connections until shutdown.
async fn serve(listener: TcpListener, acceptor: tokio_rustls::TlsAcceptor, shared: Arc<Shared>) {
    let mut shutdown = shared.shutdown.subscribe();
    loop {
        let accepted = tokio::select! {
            accepted = listener.accept() => accepted,
            () = stopped(&mut shutdown) => return,
        };
        let Ok((tcp, _)) = accepted else { continue };
        tokio::spawn(connection(tcp, acceptor.clone(), Arc::clone(&shared)));
    }
}

async fn connection(tcp: tokio::net::TcpStream, acceptor: tokio_rustls::TlsAcceptor, shared: Arc<Shared>) {
    let mut shutdown = shared.shutdown.subscribe();
    let Ok(tls) = acceptor.accept(tcp).await else { return };
    let service = service_fn(move |request| routes::handle(Arc::clone(&shared), request));
    let connection = hyper::server::conn::http1::Builder::new().serve_connection(TokioIo::new(tls), service);
    tokio::select! {
        _ = connection => {}
        () = stopped(&mut shutdown) => {}
    }
}

#[cfg(test)]
mod tests {
    use k8s_openapi::api::coordination::v1::{Lease, LeaseSpec};
    use kube::api::{Api, ObjectMeta, Patch, PatchParams, PostParams, WatchEvent, WatchParams};
    use serde_json::json;
    use tokio_stream::StreamExt;

    use super::*;
    use crate::resources::CedarPolicy;

    fn lease(holder: &str) -> Lease {
        Lease {
            metadata: ObjectMeta {
                name: Some("l".into()),
                ..ObjectMeta::default()
            },
            spec: Some(LeaseSpec {
                holder_identity: Some(holder.into()),
                ..LeaseSpec::default()
            }),
        }
    }

    fn conflict<T: std::fmt::Debug>(result: kube::Result<T>) -> u16 {
        match result {
            Err(kube::Error::Api(status)) => status.code,
            other => panic!("expected a refusal, got {other:?}"),
        }
    }

    #[tokio::test]
    async fn kubes_client_creates_reads_replaces_and_deletes_over_tls() {
        let fake = FakeApiServer::start().await.unwrap();
        let leases: Api<Lease> = Api::namespaced(fake.client().unwrap(), "ns");
        let created = leases.create(&PostParams::default(), &lease("a")).await.unwrap();
        assert_eq!(conflict(leases.create(&PostParams::default(), &lease("a")).await), 409);

        let mut mine = created.clone();
        mine.spec = Some(lease("b").spec.unwrap());
        let replaced = leases.replace("l", &PostParams::default(), &mine).await.unwrap();
        assert_ne!(replaced.metadata.resource_version, created.metadata.resource_version);
        let stale = leases.replace("l", &PostParams::default(), &created).await;
        assert_eq!(conflict(stale), 409, "a write from an old read loses");

        let listed = leases.list(&Default::default()).await.unwrap();
        assert_eq!(listed.items.len(), 1);
        assert_eq!(listed.metadata.resource_version, Some(fake.revision().to_string()));
        leases.delete("l", &Default::default()).await.unwrap();
        assert_eq!(conflict(leases.get("l").await), 404);
    }

    #[tokio::test]
    async fn a_status_apply_writes_only_the_status_and_records_its_manager() {
        let fake = FakeApiServer::start().await.unwrap();
        fake.apply(json!({
            "apiVersion": "palisade.dev/v1alpha1", "kind": "CedarPolicy",
            "metadata": {"name": "p", "namespace": "web"},
            "spec": {"direction": "egress", "policy": "// x"},
        }))
        .unwrap();
        let policies: Api<CedarPolicy> = Api::namespaced(fake.client().unwrap(), "web");
        let patch = json!({
            "apiVersion": "palisade.dev/v1alpha1", "kind": "CedarPolicy",
            "spec": {"direction": "ingress", "policy": "// changed"},
            "status": {"observedGeneration": 1},
        });
        let params = PatchParams::apply("tester").force();
        let applied = policies
            .patch_status("p", &params, &Patch::Apply(&patch))
            .await
            .unwrap();
        assert_eq!(applied.spec.policy, "// x", "the spec is not the status subresource's");
        assert_eq!(applied.status.and_then(|s| s.observed_generation), Some(1));
        assert_eq!(applied.metadata.generation, Some(1));
        let managed = applied.metadata.managed_fields.unwrap_or_default();
        assert_eq!(managed.first().and_then(|m| m.manager.as_deref()), Some("tester"));

        let request = fake.writes().pop().unwrap();
        assert_eq!(request.method, "PATCH");
        assert_eq!(
            request.path,
            "/apis/palisade.dev/v1alpha1/namespaces/web/cedarpolicies/p/status"
        );
        assert_eq!(request.content_type.as_deref(), Some(routes::APPLY_PATCH));
        assert_eq!(request.field_manager.as_deref(), Some("tester"));
    }

    #[tokio::test]
    async fn a_watch_streams_changes_and_ends_with_a_bookmark_at_its_timeout() {
        let fake = FakeApiServer::start().await.unwrap();
        let leases: Api<Lease> = Api::namespaced(fake.client().unwrap(), "ns");
        leases.create(&PostParams::default(), &lease("a")).await.unwrap();
        let from = fake.revision().to_string();
        leases.delete("l", &Default::default()).await.unwrap();
        let params = WatchParams::default().timeout(1);
        let events: Vec<_> = leases.watch(&params, &from).await.unwrap().collect().await;
        let kinds: Vec<&str> = events
            .iter()
            .map(|e| match e {
                Ok(WatchEvent::Deleted(_)) => "deleted",
                Ok(WatchEvent::Bookmark(_)) => "bookmark",
                _ => "other",
            })
            .collect();
        assert_eq!(kinds, ["deleted", "bookmark"]);
    }

    #[tokio::test]
    async fn a_watch_from_before_the_kept_history_is_told_gone() {
        let fake = FakeApiServer::start().await.unwrap();
        for i in 0..=store::HISTORY + 1 {
            fake.apply(
                json!({"apiVersion": "v1", "kind": "Pod", "metadata": {"name": format!("p{i}"), "namespace": "a"}}),
            )
            .unwrap();
        }
        let pods: Api<k8s_openapi::api::core::v1::Pod> = Api::all(fake.client().unwrap());
        let stream = pods.watch(&WatchParams::default(), "1").await.unwrap();
        let first = std::pin::pin!(stream).next().await.unwrap().unwrap();
        match first {
            WatchEvent::Error(status) => assert_eq!(status.code, 410),
            other => panic!("expected 410 Gone, got {other:?}"),
        }
    }
}
