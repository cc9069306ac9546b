//! The webhook's serving certificate, read from PEM files and read again when
//! they change.
//!
//! Why files and not the controller's SVID: the API server calls the webhook by a
//! DNS name (`palisade-controller.palisade-system.svc`) and verifies that name
//! against the `caBundle` of the `ValidatingWebhookConfiguration`; an SVID
//! carries only a SPIFFE URI, which the API server does not accept. cert-manager
//! (or any tool) issues the certificate into a Secret mounted as files, and
//! rotates it there; the files are polled, and a new pair is taken into use for
//! the next handshakes, with no restart. A pair that cannot be used (half
//! written, or a key that does not match) is logged and the old pair kept.

use std::io;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use arc_swap::ArcSwap;
use rustls::crypto::CryptoProvider;
use rustls::server::{ClientHello, ResolvesServerCert};
use rustls::sign::CertifiedKey;
use rustls_pki_types::pem::PemObject;
use rustls_pki_types::{CertificateDer, PrivateKeyDer};
use tokio::io::AsyncReadExt;

use super::metrics::{Event, WebhookMetrics};
use super::server::WebhookError;

/// The largest certificate or key file read, in bytes.
const MAX_PEM_BYTES: u64 = 1 << 20;

/// Where the certificate and key are.
#[derive(Debug, Clone)]
pub(super) struct PemFiles {
    pub(super) cert: PathBuf,
    pub(super) key: PathBuf,
}

/// Hands rustls the current certificate; [`Self::watch`] keeps it current.
#[derive(Debug)]
pub(super) struct ReloadingCert {
    files: PemFiles,
    provider: Arc<CryptoProvider>,
    current: ArcSwap<CertifiedKey>,
    /// The bytes last read (used or not), so a pair is tried and logged once.
    seen: Mutex<(Vec<u8>, Vec<u8>)>,
}

impl ReloadingCert {
    /// Reads the pair once.
    ///
    /// # Errors
    ///
    /// When a file cannot be read, holds no usable PEM, or the key does not match
    /// the certificate.
    pub(super) async fn load(files: PemFiles, provider: Arc<CryptoProvider>) -> Result<Self, WebhookError> {
        let (cert_pem, key_pem) = read_pair(&files).await?;
        let key = certified_key(&files, &cert_pem, &key_pem, &provider)?;
        Ok(Self {
            files,
            provider,
            current: ArcSwap::from_pointee(key),
            seen: Mutex::new((cert_pem, key_pem)),
        })
    }

    /// Reads the files every `interval`, forever, taking a changed pair into use.
    pub(super) async fn watch(self: Arc<Self>, interval: Duration, metrics: Arc<WebhookMetrics>) {
        let mut ticks = tokio::time::interval(interval);
        ticks.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            ticks.tick().await;
            self.reload(&metrics).await;
        }
    }

    /// One poll: nothing when the files are as last seen.
    async fn reload(&self, metrics: &WebhookMetrics) {
        let (cert_pem, key_pem) = match read_pair(&self.files).await {
            Ok(pair) => pair,
            Err(e) => {
                tracing::warn!(error = %e, "cannot read the webhook certificate; keeping the current one");
                return;
            }
        };
        {
            let Ok(mut seen) = self.seen.lock() else { return };
            if seen.0 == cert_pem && seen.1 == key_pem {
                return;
            }
            *seen = (cert_pem.clone(), key_pem.clone());
        }
        match certified_key(&self.files, &cert_pem, &key_pem, &self.provider) {
            Ok(key) => {
                self.current.store(Arc::new(key));
                metrics.count(Event::CertificateReloaded);
                tracing::info!(cert = %self.files.cert.display(), "webhook certificate rotated");
            }
            Err(e) => {
                metrics.count(Event::CertificateReloadFailed);
                tracing::warn!(error = %e, "the changed webhook certificate cannot be used; keeping the current one");
            }
        }
    }
}

impl ResolvesServerCert for ReloadingCert {
    fn resolve(&self, _client_hello: ClientHello<'_>) -> Option<Arc<CertifiedKey>> {
        Some(self.current.load_full())
    }
}

async fn read_pair(files: &PemFiles) -> Result<(Vec<u8>, Vec<u8>), WebhookError> {
    Ok((read(&files.cert).await?, read(&files.key).await?))
}

/// Reads at most [`MAX_PEM_BYTES`] of `path`.
async fn read(path: &Path) -> Result<Vec<u8>, WebhookError> {
    let error = |source: io::Error| WebhookError::Read {
        path: path.to_path_buf(),
        source,
    };
    let file = tokio::fs::File::open(path).await.map_err(error)?;
    let mut bytes = Vec::new();
    file.take(MAX_PEM_BYTES + 1)
        .read_to_end(&mut bytes)
        .await
        .map_err(error)?;
    if bytes.len() as u64 > MAX_PEM_BYTES {
        return Err(WebhookError::TooLarge {
            path: path.to_path_buf(),
            limit: MAX_PEM_BYTES,
        });
    }
    Ok(bytes)
}

/// The chain of `cert_pem` (leaf first) with the key of `key_pem`.
fn certified_key(
    files: &PemFiles,
    cert_pem: &[u8],
    key_pem: &[u8],
    provider: &CryptoProvider,
) -> Result<CertifiedKey, WebhookError> {
    let pem = |path: &Path, reason: String| WebhookError::Pem {
        path: path.to_path_buf(),
        reason,
    };
    let chain = CertificateDer::pem_slice_iter(cert_pem)
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| pem(&files.cert, e.to_string()))?;
    if chain.is_empty() {
        return Err(pem(&files.cert, "it holds no `CERTIFICATE` block".to_owned()));
    }
    let key = PrivateKeyDer::from_pem_slice(key_pem).map_err(|e| pem(&files.key, e.to_string()))?;
    CertifiedKey::from_der(chain, key, provider).map_err(|source| WebhookError::Key {
        cert: files.cert.clone(),
        key: files.key.clone(),
        source,
    })
}
