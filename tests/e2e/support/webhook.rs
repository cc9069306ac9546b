//! The API server's side of the admission webhook: a serving certificate made by
//! rcgen for the controller's Service name, and an AdmissionReview v1 about a
//! CedarPolicy POSTed over HTTPS (HTTP/1.1) to the address the controller
//! printed, trusting only the CA that issued that certificate.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper_util::rt::TokioIo;
use rcgen::{BasicConstraints, CertificateParams, DnType, IsCa, Issuer, KeyPair};
use rustls::pki_types::{CertificateDer, ServerName};
use rustls::{ClientConfig, RootCertStore};
use serde_json::{json, Value};
use tokio::net::TcpStream;
use tokio_rustls::TlsConnector;

use super::shop_cluster::PALISADE;

/// The name the API server calls the webhook by (`--webhook-cert` is for it).
pub const SERVICE_DNS: &str = "palisade-controller.palisade-system.svc";

/// The webhook's certificate and key files, and the CA the API server trusts.
pub struct WebhookPki {
    ca: CertificateDer<'static>,
    pub cert: PathBuf,
    pub key: PathBuf,
}

impl WebhookPki {
    /// A CA, and a certificate it issued for [`SERVICE_DNS`], written under `dir`.
    pub fn write(dir: &Path) -> Self {
        let ca_key = KeyPair::generate().unwrap();
        let mut ca_params = CertificateParams::new(Vec::<String>::new()).unwrap();
        ca_params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        ca_params.distinguished_name.push(DnType::CommonName, "webhook CA");
        let ca = ca_params.self_signed(&ca_key).unwrap();
        let issuer = Issuer::new(ca_params, ca_key);
        let key = KeyPair::generate().unwrap();
        let cert = CertificateParams::new(vec![SERVICE_DNS.to_owned()])
            .unwrap()
            .signed_by(&key, &issuer)
            .unwrap();
        let (cert_path, key_path) = (dir.join("webhook.crt"), dir.join("webhook.key"));
        std::fs::write(&cert_path, cert.pem()).unwrap();
        std::fs::write(&key_path, key.serialize_pem()).unwrap();
        Self {
            ca: ca.der().clone(),
            cert: cert_path,
            key: key_path,
        }
    }

    fn client(&self) -> Arc<ClientConfig> {
        let mut roots = RootCertStore::empty();
        roots.add(self.ca.clone()).unwrap();
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        let mut config = ClientConfig::builder_with_provider(provider)
            .with_safe_default_protocol_versions()
            .unwrap()
            .with_root_certificates(roots)
            .with_no_client_auth();
        config.alpn_protocols = vec![b"http/1.1".to_vec()];
        Arc::new(config)
    }
}

/// The webhook's answer to one review.
#[derive(Debug)]
pub struct Answer {
    pub allowed: bool,
    /// Why it refused (empty when admitted).
    pub message: String,
}

/// POSTs an AdmissionReview about `policy` (a CedarPolicy object) to `url`
/// (`https://ADDR/PATH`, as the controller printed it).
pub async fn review(url: &str, pki: &WebhookPki, uid: &str, policy: &Value) -> Answer {
    let (addr, path) = url.trim_start_matches("https://").split_once('/').unwrap();
    let tcp = TcpStream::connect(addr).await.unwrap();
    let name = ServerName::try_from(SERVICE_DNS).unwrap();
    let tls = TlsConnector::from(pki.client()).connect(name, tcp).await.unwrap();
    let (mut sender, connection) = hyper::client::conn::http1::handshake(TokioIo::new(tls)).await.unwrap();
    tokio::spawn(connection);
    let request = http::Request::post(format!("/{path}"))
        .header("host", SERVICE_DNS)
        .header("content-type", "application/json")
        .body(Full::new(Bytes::from(admission_review(uid, policy).to_string())))
        .unwrap();
    let response = sender.send_request(request).await.unwrap();
    assert_eq!(response.status(), http::StatusCode::OK);
    let body = response.into_body().collect().await.unwrap().to_bytes();
    let answer: Value = serde_json::from_slice(&body).unwrap();
    assert_eq!(answer["response"]["uid"], uid, "{answer}");
    Answer {
        allowed: answer["response"]["allowed"].as_bool().unwrap(),
        message: answer["response"]["status"]["message"]
            .as_str()
            .unwrap_or_default()
            .to_owned(),
    }
}

/// A new CedarPolicy, as `kubectl apply` sends it.
pub fn cedar_policy(namespace: &str, name: &str, direction: &str, text: &str) -> Value {
    json!({
        "apiVersion": PALISADE,
        "kind": "CedarPolicy",
        "metadata": {"name": name, "namespace": namespace},
        "spec": {"direction": direction, "policy": text},
    })
}

/// The AdmissionReview v1 an API server sends for creating `policy`.
fn admission_review(uid: &str, policy: &Value) -> Value {
    let gvk = json!({"group": "palisade.dev", "version": "v1alpha1", "kind": "CedarPolicy"});
    json!({
        "apiVersion": "admission.k8s.io/v1",
        "kind": "AdmissionReview",
        "request": {
            "uid": uid,
            "kind": gvk,
            "resource": {"group": "palisade.dev", "version": "v1alpha1", "resource": "cedarpolicies"},
            "requestKind": gvk,
            "name": policy["metadata"]["name"],
            "namespace": policy["metadata"]["namespace"],
            "operation": "CREATE",
            "userInfo": {"username": "alice", "groups": ["system:authenticated"]},
            "object": policy,
            "oldObject": null,
            "dryRun": false,
            "options": {"apiVersion": "meta.k8s.io/v1", "kind": "CreateOptions"},
        }
    })
}
