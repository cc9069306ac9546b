//! Chains already verified under the current bundle.
//!
//! A peer presents the same chain on every handshake for the life of its SVID, and
//! each full verification costs two ECDSA signature checks. [`Trust`](super::Trust)
//! remembers chains that passed [`verify_svid`](super::verify_svid), keyed by the
//! SHA-256 of the usage and the exact bytes of every certificate, and on a hit checks
//! only what can change: the validity window (with the same skew and the chain's own
//! windows) and revocation. The cache belongs to one bundle snapshot: a new bundle
//! starts an empty cache, so a root that left the bundle takes its chains with it.
//! It is read without a lock and replaced whole (copy on write) on the rare insert;
//! it never holds more than [`MAX_ENTRIES`]. Only chains of at most one intermediate
//! (what the CA issues) are remembered, so a peer padding its chain with extra
//! certificates gets a full verification each time and cannot churn the cache.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::SystemTime;

use rustls_pki_types::CertificateDer;

use super::{check_issuer_revocation, check_revocation, check_validity, SvidError, Usage, VerifiedSvid};
use crate::bundle::TrustBundle;
use crate::revocation::RevocationSet;
use crate::svid::{parse_certificate, system_time};

/// The most chains remembered; when full, the cache starts over.
pub const MAX_ENTRIES: usize = 4096;

/// One bundle snapshot's verified chains.
#[derive(Debug)]
pub(crate) struct VerifiedCache {
    bundle: Arc<TrustBundle>,
    entries: HashMap<[u8; 32], Cached>,
}

#[derive(Debug, Clone)]
struct Cached {
    svid: VerifiedSvid,
    leaf_not_before: SystemTime,
    /// The window in which every certificate of the presented chain is valid.
    chain_not_before: SystemTime,
    chain_not_after: SystemTime,
    /// Serials of the presented intermediates, checked against revocations on a hit.
    issuer_serials: Vec<crate::serial::Serial>,
}

impl VerifiedCache {
    pub(crate) fn empty(bundle: Arc<TrustBundle>) -> Self {
        Self {
            bundle,
            entries: HashMap::new(),
        }
    }

    /// The answer for a chain seen before under `bundle`, if any.
    pub(crate) fn lookup(
        &self,
        bundle: &Arc<TrustBundle>,
        key: &[u8; 32],
        revocations: &RevocationSet,
        now: SystemTime,
    ) -> Option<Result<VerifiedSvid, SvidError>> {
        if !Arc::ptr_eq(&self.bundle, bundle) {
            return None;
        }
        let hit = self.entries.get(key)?;
        Some(hit.check(revocations, now))
    }

    /// This cache with one more entry, for `bundle` (a different bundle starts over).
    pub(crate) fn with(
        &self,
        bundle: &Arc<TrustBundle>,
        key: [u8; 32],
        verified: &VerifiedSvid,
        leaf: &CertificateDer<'_>,
        intermediates: &[CertificateDer<'_>],
    ) -> Option<Self> {
        let entry = Cached::new(verified, leaf, intermediates)?;
        let mut entries = if Arc::ptr_eq(&self.bundle, bundle) && self.entries.len() < MAX_ENTRIES {
            self.entries.clone()
        } else {
            HashMap::new()
        };
        entries.insert(key, entry);
        Some(Self {
            bundle: Arc::clone(bundle),
            entries,
        })
    }

    #[cfg(test)]
    pub(crate) fn len(&self) -> usize {
        self.entries.len()
    }
}

impl Cached {
    fn new(svid: &VerifiedSvid, leaf: &CertificateDer<'_>, intermediates: &[CertificateDer<'_>]) -> Option<Self> {
        let facts = |der: &CertificateDer<'_>| {
            let cert = parse_certificate(der).ok()?;
            let v = cert.validity();
            let serial = crate::serial::Serial::from_be_bytes(cert.raw_serial());
            Some((
                system_time(v.not_before.timestamp()),
                system_time(v.not_after.timestamp()),
                serial,
            ))
        };
        let (leaf_not_before, leaf_not_after, _) = facts(leaf)?;
        let (mut chain_not_before, mut chain_not_after) = (leaf_not_before, leaf_not_after);
        let mut issuer_serials = Vec::with_capacity(intermediates.len());
        for i in intermediates {
            let (nb, na, serial) = facts(i)?;
            chain_not_before = chain_not_before.max(nb);
            chain_not_after = chain_not_after.min(na);
            issuer_serials.push(serial);
        }
        Some(Self {
            svid: svid.clone(),
            leaf_not_before,
            chain_not_before,
            chain_not_after,
            issuer_serials,
        })
    }

    /// What a full verification would now say, given it passed before under this bundle.
    fn check(&self, revocations: &RevocationSet, now: SystemTime) -> Result<VerifiedSvid, SvidError> {
        let t = check_validity(self.leaf_not_before, self.svid.not_after, now)?;
        let t = SystemTime::UNIX_EPOCH + std::time::Duration::from_secs(t.as_secs());
        if t < self.chain_not_before {
            return Err(SvidError::NotYetValid);
        }
        if t > self.chain_not_after {
            return Err(SvidError::Expired);
        }
        check_revocation(&self.svid.id, &self.svid.serial, revocations)?;
        for serial in &self.issuer_serials {
            check_issuer_revocation(serial, revocations)?;
        }
        Ok(self.svid.clone())
    }
}

/// SHA-256 over the usage and the length-prefixed bytes of every certificate.
pub(crate) fn key(usage: Usage, leaf: &CertificateDer<'_>, intermediates: &[CertificateDer<'_>]) -> [u8; 32] {
    let mut ctx = ring::digest::Context::new(&ring::digest::SHA256);
    ctx.update(&[match usage {
        Usage::Client => 1,
        Usage::Server => 2,
    }]);
    for cert in std::iter::once(leaf).chain(intermediates) {
        ctx.update(&u32::try_from(cert.len()).unwrap_or(u32::MAX).to_be_bytes());
        ctx.update(cert);
    }
    let mut out = [0u8; 32];
    out.copy_from_slice(ctx.finish().as_ref());
    out
}
