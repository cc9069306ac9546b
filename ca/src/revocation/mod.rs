//! Revocation: what is revoked, the signed lists the CA pushes to every peer, and
//! the standard X.509 CRL for everything else.
//!
//! A revocation names a certificate serial or a whole SPIFFE ID. Revoking an ID
//! makes every certificate carrying it untrusted and stops the CA from issuing to
//! it until it is unrevoked.

pub mod crl;
pub mod signed;

use std::collections::HashSet;
use std::fmt;

use crate::serial::Serial;
use crate::spiffe_id::SpiffeId;

/// What one revocation names.
#[derive(Clone, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum RevocationTarget {
    Serial(Serial),
    SpiffeId(SpiffeId),
}

impl fmt::Display for RevocationTarget {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Serial(s) => write!(f, "serial {s}"),
            Self::SpiffeId(id) => write!(f, "SPIFFE ID {id}"),
        }
    }
}

/// One revocation with why and when.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RevocationEntry {
    pub target: RevocationTarget,
    pub reason: String,
    pub revoked_at_unix: i64,
}

/// An immutable set of revocations at one version, checked on every handshake.
#[derive(Clone, Debug, Default)]
pub struct RevocationSet {
    version: u64,
    serials: HashSet<Serial>,
    ids: HashSet<SpiffeId>,
}

impl RevocationSet {
    /// Builds the set of a given list version.
    pub fn new<'a>(version: u64, entries: impl IntoIterator<Item = &'a RevocationEntry>) -> Self {
        let mut set = Self {
            version,
            ..Self::default()
        };
        for entry in entries {
            match &entry.target {
                RevocationTarget::Serial(s) => set.serials.insert(s.clone()),
                RevocationTarget::SpiffeId(id) => set.ids.insert(id.clone()),
            };
        }
        set
    }

    /// The list version this set was built from (0: nothing received yet).
    pub fn version(&self) -> u64 {
        self.version
    }

    pub fn is_serial_revoked(&self, serial: &Serial) -> bool {
        self.serials.contains(serial)
    }

    pub fn is_id_revoked(&self, id: &SpiffeId) -> bool {
        self.ids.contains(id)
    }

    /// Whether a certificate with this serial and ID must be refused.
    pub fn is_revoked(&self, serial: &Serial, id: &SpiffeId) -> bool {
        self.is_serial_revoked(serial) || self.is_id_revoked(id)
    }

    pub fn len(&self) -> usize {
        self.serials.len() + self.ids.len()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

#[cfg(test)]
mod tests;
