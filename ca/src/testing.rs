//! Test certificates, made by rcgen at test time (never committed keys).
//!
//! A [`TestCa`] is what `palisade ca init` makes — a root and an intermediate from the
//! production templates, and the running [`CaSigner`] — at a fixed instant, [`now`].
//! Its leaves start from the production SVID template and change one thing (a
//! [`Tweak`]), so each negative test breaks exactly one rule and says which.

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use rcgen::{CertificateParams, Issuer, KeyPair, SanType};
use rustls_pki_types::CertificateDer;
use time::OffsetDateTime;

use crate::bundle::TrustBundle;
use crate::issuer::{new_ca, template, CaSigner, DEFAULT_LEAF_TTL};
use crate::revocation::RevocationSet;
use crate::spiffe_id::{SpiffeId, TrustDomain};
use crate::svid::Svid;

/// The trust domain of the CA most tests use.
pub(crate) const TD: &str = "td";

/// The workload every test leaf names unless a test says otherwise.
pub(crate) const WORKLOAD: &str = "spiffe://td/ns/a/sa/b";

/// The instant unit tests run at (2030-03-17T17:46:40Z), so validity arithmetic is exact.
pub(crate) fn now() -> SystemTime {
    UNIX_EPOCH + Duration::from_secs(1_900_000_000)
}

/// [`now`] moved by `secs` (negative: the past), as rcgen takes times.
pub(crate) fn now_plus(secs: i64) -> OffsetDateTime {
    OffsetDateTime::from(now()) + time::Duration::seconds(secs)
}

pub(crate) fn id(s: &str) -> SpiffeId {
    SpiffeId::parse(s).unwrap()
}

pub(crate) fn trust_domain(s: &str) -> TrustDomain {
    TrustDomain::new(s).unwrap()
}

pub(crate) fn uri_san(s: &str) -> SanType {
    SanType::URI(s.try_into().unwrap())
}

pub(crate) fn dns_san(s: &str) -> SanType {
    SanType::DnsName(s.try_into().unwrap())
}

/// Nothing revoked yet (version 0).
pub(crate) fn no_revocations() -> RevocationSet {
    RevocationSet::default()
}

/// One change to a certificate template: how a test certificate differs from a good one.
pub(crate) type Tweak = fn(&mut CertificateParams);

/// Leaves a template as production makes it.
pub(crate) fn unchanged(_: &mut CertificateParams) {}

/// A CA of one trust domain: root → intermediate, made by the production [`new_ca`].
pub(crate) struct TestCa {
    pub(crate) root: CertificateDer<'static>,
    pub(crate) intermediate: CertificateDer<'static>,
    pub(crate) signer: CaSigner,
    root_issuer: Issuer<'static, KeyPair>,
    made_at: SystemTime,
}

impl TestCa {
    /// A CA of `td` made at [`now`].
    pub(crate) fn new(td: &str) -> Self {
        Self::made_at(td, now())
    }

    /// A CA of `td` made at `at` (the wall clock, for real TLS handshakes).
    pub(crate) fn made_at(td: &str, at: SystemTime) -> Self {
        let td = trust_domain(td);
        let material = new_ca(&td, at, None).unwrap();
        let root_key = material.root_key.unwrap();
        let root_issuer = Issuer::from_ca_cert_der(&material.root_cert, root_key).unwrap();
        let bundle = TrustBundle::new(td, vec![material.root_cert.clone()]).unwrap();
        let signer = CaSigner::new(material.intermediate_cert.clone(), material.intermediate_key, bundle).unwrap();
        Self {
            root: material.root_cert,
            intermediate: material.intermediate_cert,
            signer,
            root_issuer,
            made_at: at,
        }
    }

    pub(crate) fn bundle(&self) -> &TrustBundle {
        self.signer.bundle()
    }

    /// A good SVID for `id` with its key, minted by the CA's own signer.
    pub(crate) fn mint(&self, id_str: &str) -> Svid {
        self.signer.mint(&id(id_str), DEFAULT_LEAF_TTL, self.made_at).unwrap()
    }

    /// A leaf for [`WORKLOAD`] from the production template, changed by `tweak`,
    /// signed by this CA's intermediate.
    pub(crate) fn leaf(&self, tweak: impl FnOnce(&mut CertificateParams)) -> CertificateDer<'static> {
        self.leaf_signed_by(self.signer.issuer(), tweak)
    }

    /// A leaf for [`WORKLOAD`] from the production template, changed by `tweak`,
    /// signed by `issuer`.
    pub(crate) fn leaf_signed_by(
        &self,
        issuer: &Issuer<'_, KeyPair>,
        tweak: impl FnOnce(&mut CertificateParams),
    ) -> CertificateDer<'static> {
        let at = OffsetDateTime::from(self.made_at);
        let mut params = template::leaf(&id(WORKLOAD), at, at + time::Duration::hours(1)).unwrap();
        tweak(&mut params);
        let key = KeyPair::generate().unwrap();
        params.signed_by(&key, issuer).unwrap().der().clone()
    }

    /// An intermediate signed by this CA's root from the production template,
    /// changed by `tweak`, with the issuer that signs under it.
    pub(crate) fn intermediate_with(
        &self,
        tweak: impl FnOnce(&mut CertificateParams),
    ) -> (CertificateDer<'static>, Issuer<'static, KeyPair>) {
        let at = OffsetDateTime::from(self.made_at);
        let mut params = template::intermediate(self.signer.trust_domain(), at, time::Duration::days(30)).unwrap();
        tweak(&mut params);
        let key = KeyPair::generate().unwrap();
        let cert = params.signed_by(&key, &self.root_issuer).unwrap().der().clone();
        let issuer = Issuer::from_ca_cert_der(&cert, key).unwrap();
        (cert, issuer)
    }
}
