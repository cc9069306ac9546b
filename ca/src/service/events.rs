//! What the CA did, for an audit log: certificates issued and renewed, identities
//! revoked and unrevoked.
//!
//! The CA crate does not know where events go; `palisade ca serve` plugs in a sink
//! that forwards them to the audit service. An event is reported once the change
//! it describes is durable in the store.

use crate::revocation::RevocationTarget;
use crate::serial::Serial;
use crate::spiffe_id::SpiffeId;

/// One CA event.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum CaEvent {
    /// A first SVID, attested by a join token or a Kubernetes ServiceAccount token.
    Issued {
        id: SpiffeId,
        serial: Serial,
        not_after_unix: i64,
    },
    /// An SVID renewed by the holder of a valid one.
    Renewed {
        id: SpiffeId,
        serial: Serial,
        not_after_unix: i64,
    },
    /// A serial or an ID revoked.
    Revoked { target: RevocationTarget, reason: String },
    /// A revocation lifted.
    Unrevoked { target: RevocationTarget },
}

/// Where CA events go. Must not block: it is called on the request path.
pub trait CaEvents: Send + Sync + std::fmt::Debug {
    fn event(&self, event: CaEvent);
}
