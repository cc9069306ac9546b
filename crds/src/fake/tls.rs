//! The fake's TLS: a throwaway CA made by rcgen at start and a server
//! certificate for `127.0.0.1` and `localhost`, so kube's client verifies the
//! server as it would a real API server.

use std::sync::Arc;

use rcgen::{BasicConstraints, CertificateParams, DnType, IsCa, Issuer, KeyPair};
use rustls::pki_types::{CertificateDer, PrivateKeyDer, PrivatePkcs8KeyDer};

use super::FakeError;

/// The server's TLS settings and the CA certificate clients trust.
pub struct Tls {
    pub server: Arc<rustls::ServerConfig>,
    pub ca_der: Vec<u8>,
    pub ca_pem: String,
}

impl std::fmt::Debug for Tls {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Tls").finish_non_exhaustive()
    }
}

/// A fresh CA and a server certificate it signed.
pub fn make() -> Result<Tls, FakeError> {
    let err = |e: rcgen::Error| FakeError::Tls(e.to_string());
    let ca_key = KeyPair::generate().map_err(err)?;
    let mut ca_params = CertificateParams::new(Vec::<String>::new()).map_err(err)?;
    ca_params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    ca_params
        .distinguished_name
        .push(DnType::CommonName, "palisade fake Kubernetes API CA");
    let ca_cert = ca_params.self_signed(&ca_key).map_err(err)?;
    let issuer = Issuer::new(ca_params, ca_key);

    let key = KeyPair::generate().map_err(err)?;
    let mut params = CertificateParams::new(vec!["127.0.0.1".to_owned(), "localhost".to_owned()]).map_err(err)?;
    params
        .distinguished_name
        .push(DnType::CommonName, "palisade fake Kubernetes API");
    let cert = params.signed_by(&key, &issuer).map_err(err)?;

    let chain = vec![cert.der().clone(), ca_cert.der().clone()];
    let key = PrivateKeyDer::Pkcs8(PrivatePkcs8KeyDer::from(key.serialize_der()));
    let server = server_config(chain, key)?;
    Ok(Tls {
        server: Arc::new(server),
        ca_der: ca_cert.der().to_vec(),
        ca_pem: ca_cert.pem(),
    })
}

fn server_config(
    chain: Vec<CertificateDer<'static>>,
    key: PrivateKeyDer<'static>,
) -> Result<rustls::ServerConfig, FakeError> {
    let tls = |e: rustls::Error| FakeError::Tls(e.to_string());
    let mut config = rustls::ServerConfig::builder_with_provider(Arc::new(rustls::crypto::ring::default_provider()))
        .with_safe_default_protocol_versions()
        .map_err(tls)?
        .with_no_client_auth()
        .with_single_cert(chain, key)
        .map_err(tls)?;
    config.alpn_protocols = vec![b"http/1.1".to_vec()];
    Ok(config)
}
