//! rustls configuration for every mesh peer: TLS 1.3 only, the ring provider, SVIDs
//! served from a swappable resolver, and no session resumption (a resumed session
//! would skip the verifier, and with it a revocation or a changed bundle).

use std::sync::{Arc, OnceLock};

use arc_swap::ArcSwapOption;
use rustls::client::{ResolvesClientCert, Resumption};
use rustls::crypto::CryptoProvider;
use rustls::server::{ClientHello, NoServerSessionStorage, ResolvesServerCert};
use rustls::sign::CertifiedKey;
use rustls::{ClientConfig, ServerConfig, SignatureScheme};

use crate::svid::Svid;
use crate::verify::{SvidClientVerifier, SvidServerVerifier};

/// The process-wide crypto provider: rustls' ring provider.
pub fn provider() -> Arc<CryptoProvider> {
    static PROVIDER: OnceLock<Arc<CryptoProvider>> = OnceLock::new();
    Arc::clone(PROVIDER.get_or_init(|| Arc::new(rustls::crypto::ring::default_provider())))
}

/// Serves the current SVID to TLS handshakes. Rotation stores a new one; handshakes
/// already done keep their connection, new handshakes get the new certificate.
#[derive(Debug, Default)]
pub struct SvidResolver {
    current: ArcSwapOption<CertifiedKey>,
}

impl SvidResolver {
    /// A resolver with no SVID yet (a client bootstrapping with a join token).
    pub fn empty() -> Arc<Self> {
        Arc::new(Self::default())
    }

    /// A resolver serving `svid`.
    pub fn with(svid: &Svid) -> Result<Arc<Self>, rustls::Error> {
        let resolver = Self::empty();
        resolver.set(svid)?;
        Ok(resolver)
    }

    /// Swaps in a new SVID.
    pub fn set(&self, svid: &Svid) -> Result<(), rustls::Error> {
        self.current.store(Some(svid.certified_key()?));
        Ok(())
    }

    pub fn current(&self) -> Option<Arc<CertifiedKey>> {
        self.current.load_full()
    }

    /// Installs every SVID published on `svids` (the rotation's channel) until the
    /// channel closes: certificates rotate in place, live connections are untouched.
    pub fn follow(self: &Arc<Self>, mut svids: tokio::sync::watch::Receiver<Arc<Svid>>) -> tokio::task::JoinHandle<()> {
        let resolver = Arc::clone(self);
        tokio::spawn(async move {
            loop {
                let svid = Arc::clone(&svids.borrow_and_update());
                if let Err(e) = resolver.set(&svid) {
                    tracing::error!(error = %e, serial = %svid.serial(), "cannot install the new SVID; keeping the current one");
                }
                if svids.changed().await.is_err() {
                    return;
                }
            }
        })
    }
}

impl ResolvesServerCert for SvidResolver {
    fn resolve(&self, _client_hello: ClientHello<'_>) -> Option<Arc<CertifiedKey>> {
        self.current()
    }
}

impl ResolvesClientCert for SvidResolver {
    fn resolve(&self, _root_hint_subjects: &[&[u8]], _sigschemes: &[SignatureScheme]) -> Option<Arc<CertifiedKey>> {
        self.current()
    }

    fn has_certs(&self) -> bool {
        self.current.load().is_some()
    }
}

/// A TLS 1.3 server presenting the resolver's SVID and checking clients with `verifier`.
pub fn server_config(
    resolver: Arc<SvidResolver>,
    verifier: Arc<SvidClientVerifier>,
    alpn: &[&[u8]],
) -> Result<ServerConfig, rustls::Error> {
    let mut config = ServerConfig::builder_with_provider(provider())
        .with_protocol_versions(&[&rustls::version::TLS13])?
        .with_client_cert_verifier(verifier)
        .with_cert_resolver(resolver);
    config.session_storage = Arc::new(NoServerSessionStorage {});
    config.send_tls13_tickets = 0;
    config.alpn_protocols = alpn.iter().map(|p| p.to_vec()).collect();
    Ok(config)
}

/// A TLS 1.3 client presenting the resolver's SVID (when it has one) and checking
/// the server with `verifier` (secure naming).
pub fn client_config(
    resolver: Arc<SvidResolver>,
    verifier: Arc<SvidServerVerifier>,
    alpn: &[&[u8]],
) -> Result<ClientConfig, rustls::Error> {
    let mut config = ClientConfig::builder_with_provider(provider())
        .with_protocol_versions(&[&rustls::version::TLS13])?
        .dangerous()
        .with_custom_certificate_verifier(verifier)
        .with_client_cert_resolver(resolver);
    config.resumption = Resumption::disabled();
    config.alpn_protocols = alpn.iter().map(|p| p.to_vec()).collect();
    Ok(config)
}

#[cfg(test)]
mod tests {
    use std::time::{Duration, SystemTime};

    use rustls_pki_types::ServerName;
    use tokio::io::{AsyncReadExt, AsyncWriteExt};

    use super::*;
    use crate::issuer::{new_ca, CaSigner};
    use crate::verify::Trust;

    const TD: &str = "td";

    /// A CA on the real clock: these handshakes check validity against it.
    fn real_ca() -> CaSigner {
        let td = crate::TrustDomain::new(TD).unwrap();
        let m = new_ca(&td, SystemTime::now(), None).unwrap();
        let bundle = crate::TrustBundle::new(td, vec![m.root_cert]).unwrap();
        CaSigner::new(m.intermediate_cert, m.intermediate_key, bundle).unwrap()
    }

    fn mint(ca: &CaSigner, id: &str) -> Arc<Svid> {
        let id = crate::SpiffeId::parse(id).unwrap();
        Arc::new(ca.mint(&id, Duration::from_secs(3600), SystemTime::now()).unwrap())
    }

    /// A rotation swaps the served certificate in place: the connection made before
    /// it keeps working, the next handshake presents the new serial.
    #[tokio::test]
    async fn rotation_swaps_certificates_without_touching_live_connections() {
        let ca = real_ca();
        let server_id = format!("spiffe://{TD}/ns/a/sa/server");
        let first = mint(&ca, &server_id);
        let (tx, rx) = tokio::sync::watch::channel(Arc::clone(&first));
        let server_resolver = SvidResolver::empty();
        let follower = server_resolver.follow(rx);
        let trust = Trust::new(ca.bundle().clone(), Default::default());
        let server = Arc::new(
            server_config(
                Arc::clone(&server_resolver),
                SvidClientVerifier::new(Arc::clone(&trust), true),
                &[],
            )
            .unwrap(),
        );
        let client_svid = mint(&ca, &format!("spiffe://{TD}/ns/a/sa/client"));
        let verifier = SvidServerVerifier::new(trust, vec![crate::SpiffeId::parse(&server_id).unwrap()]);
        let client = Arc::new(client_config(SvidResolver::with(&client_svid).unwrap(), verifier, &[]).unwrap());

        // Connects, echoes once, returns the server's serial and the live stream.
        async fn connect(
            server: Arc<ServerConfig>,
            client: Arc<ClientConfig>,
        ) -> (crate::Serial, tokio_rustls::client::TlsStream<tokio::io::DuplexStream>) {
            let (c, s) = tokio::io::duplex(4096);
            let acceptor = tokio_rustls::TlsAcceptor::from(server);
            tokio::spawn(async move {
                let mut tls = acceptor.accept(s).await.unwrap();
                let mut buf = [0u8; 4];
                while tls.read_exact(&mut buf).await.is_ok() {
                    tls.write_all(&buf).await.unwrap();
                }
            });
            let name = ServerName::try_from("ignored.invalid").unwrap();
            let mut tls = tokio_rustls::TlsConnector::from(client).connect(name, c).await.unwrap();
            echo(&mut tls).await;
            let leaf = tls.get_ref().1.peer_certificates().unwrap()[0].clone();
            (crate::svid::SvidFacts::parse(&leaf).unwrap().serial, tls)
        }
        async fn echo(tls: &mut tokio_rustls::client::TlsStream<tokio::io::DuplexStream>) {
            tls.write_all(b"ping").await.unwrap();
            let mut buf = [0u8; 4];
            tls.read_exact(&mut buf).await.unwrap();
            assert_eq!(&buf, b"ping");
        }

        tokio::task::yield_now().await;
        let (serial_before, mut live) = connect(Arc::clone(&server), Arc::clone(&client)).await;
        assert_eq!(&serial_before, first.serial());

        let second = mint(&ca, &server_id);
        tx.send(Arc::clone(&second)).unwrap();
        for _ in 0..100 {
            if server_resolver
                .current()
                .is_some_and(|k| k.cert.first() == second.chain().first())
            {
                break;
            }
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
        echo(&mut live).await;
        let (serial_after, _) = connect(server, client).await;
        assert_eq!(&serial_after, second.serial());
        drop(tx);
        tokio::time::timeout(Duration::from_secs(1), follower)
            .await
            .unwrap()
            .unwrap();
    }
}
