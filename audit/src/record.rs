//! The records of the audit log.
//!
//! A sender (a sidecar, the CA, the control plane) makes a [`Record`]: a unique id,
//! a time and one [`Event`]. The audit service stores it as a [`StoredRecord`]:
//! stamped with the sender's verified SPIFFE ID and the time it arrived, given the
//! next sequence number of the store's one total order, and chained to the record
//! before it (see [`crate::chain`]).

use std::fmt;
use std::str::FromStr;

use serde::Serialize;

/// A SHA-256 digest: a record's hash, or the previous record's.
pub type Hash = [u8; 32];

/// The `prev_hash` of the first record of a store.
pub const GENESIS: Hash = [0; 32];

/// One event, as its sender made it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Record {
    /// Unique per sender: a replay of the same record is stored once.
    pub id: String,
    /// When it happened, by the sender's clock, in microseconds since the epoch.
    pub time_micros: i64,
    pub event: Event,
}

/// What happened.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(tag = "type", rename_all = "camelCase")]
pub enum Event {
    Decision(Decision),
    External(External),
    Identity(Identity),
    Policy(PolicyChange),
}

impl Event {
    /// The kind, as stored and as `--kind` filters name it.
    pub fn kind(&self) -> EventKind {
        match self {
            Self::Decision(_) => EventKind::Decision,
            Self::External(_) => EventKind::External,
            Self::Identity(_) => EventKind::Identity,
            Self::Policy(_) => EventKind::Policy,
        }
    }
}

/// One authorization decision of one sidecar.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Decision {
    pub side: Side,
    pub effect: Effect,
    /// The caller's SPIFFE ID.
    pub principal: String,
    /// The Cedar action (`GET`, `POST`, `connect`, …).
    pub action: String,
    /// The Cedar resource: a service id (`payments/payments`) or `HOST:PORT`.
    pub resource: String,
    /// The canonical path.
    pub path: String,
    /// The `@id` of each policy that determined the decision.
    pub policies: Vec<String>,
    /// Shared by the caller's and the callee's record of one request.
    pub request_id: String,
    /// The HTTP status the caller got (0 when none was sent).
    pub status: u16,
    pub latency_micros: u64,
}

/// A request or tunnel for a destination outside the mesh.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct External {
    pub kind: ExternalKind,
    /// The calling workload's SPIFFE ID.
    pub workload: String,
    pub host: String,
    /// The SNI of the TLS ClientHello (tunnels), empty otherwise.
    pub sni: String,
    pub port: u16,
    /// `http` or `tls`.
    pub protocol: String,
    pub request_id: String,
    /// Why it was refused or let through, in words.
    pub reason: String,
}

/// A CA event.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Identity {
    pub kind: IdentityKind,
    pub spiffe_id: String,
    /// Hex serial (empty when a revocation names an ID).
    pub serial: String,
    pub reason: String,
    /// The certificate's expiry (0 when not a certificate).
    pub not_after_unix: i64,
}

/// A control-plane event.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct PolicyChange {
    pub outcome: PolicyOutcome,
    /// The published version (0 for a rejected edit).
    pub version: u64,
    /// The bundle digest (`sha256:…`); empty for a rejected edit.
    pub digest: String,
    /// The diagnostics of a rejected edit.
    pub detail: String,
}

/// A record as the store keeps it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct StoredRecord {
    /// Position in the store's one total order, from 1, without gaps.
    pub seq: u64,
    /// The sender's verified SPIFFE ID.
    pub sender: String,
    /// When the audit service received it, in microseconds since the epoch.
    pub received_micros: i64,
    pub record: Record,
    /// The hash of the record at `seq - 1` ([`GENESIS`] for the first).
    #[serde(serialize_with = "hex")]
    pub prev_hash: Hash,
    /// SHA-256 over `prev_hash` and this record's canonical encoding.
    #[serde(serialize_with = "hex")]
    pub hash: Hash,
}

fn hex<S: serde::Serializer>(hash: &Hash, s: S) -> Result<S::Ok, S::Error> {
    s.serialize_str(&to_hex(hash))
}

/// Lower-case hex of a hash.
pub fn to_hex(hash: &Hash) -> String {
    use std::fmt::Write;
    hash.iter().fold(String::with_capacity(64), |mut out, b| {
        let _ = write!(out, "{b:02x}");
        out
    })
}

/// A word naming an enum value was not one of its spellings.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("`{value}` is not a valid {what}; expected one of: {}", .expected.join(", "))]
pub struct UnknownValue {
    pub what: &'static str,
    pub value: String,
    pub expected: &'static [&'static str],
}

/// Enums spelled one way everywhere: stored, printed, parsed from flags.
macro_rules! spelled {
    ($(#[$meta:meta])* $name:ident, $what:literal { $($(#[$vmeta:meta])* $variant:ident = $text:literal),+ $(,)? }) => {
        $(#[$meta])*
        #[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize)]
        pub enum $name {
            $($(#[$vmeta])* #[serde(rename = $text)] $variant),+
        }

        impl $name {
            /// Every value.
            pub const ALL: &'static [Self] = &[$(Self::$variant),+];

            /// The one spelling.
            pub fn as_str(self) -> &'static str {
                match self {
                    $(Self::$variant => $text),+
                }
            }
        }

        impl fmt::Display for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str(self.as_str())
            }
        }

        impl FromStr for $name {
            type Err = UnknownValue;

            fn from_str(s: &str) -> Result<Self, Self::Err> {
                match s {
                    $($text => Ok(Self::$variant),)+
                    _ => Err(UnknownValue {
                        what: $what,
                        value: s.to_owned(),
                        expected: &[$($text),+],
                    }),
                }
            }
        }
    };
}

spelled!(
    /// The kind of an event.
    EventKind, "record kind" {
        Decision = "decision",
        External = "external",
        Identity = "identity",
        Policy = "policy",
    }
);

spelled!(
    /// Which sidecar decided: the caller's (egress) or the callee's (ingress).
    Side, "side" {
        Egress = "egress",
        Ingress = "ingress",
    }
);

spelled!(
    /// The outcome of a decision.
    Effect, "effect" {
        Allow = "allow",
        Deny = "deny",
        /// Allowed by the enforced policies; a dry-run policy would deny it.
        DryRunDeny = "dry_run_deny",
    }
);

spelled!(
    /// What happened to a request for an external destination.
    ExternalKind, "external kind" {
        /// Allowed by `egress.yaml` and the caller's egress policy.
        Allowlisted = "allowlisted",
        /// Refused.
        BlackHole = "blackhole",
        /// Not allowlisted, let through flagged (`ALLOW_ANY`).
        Passthrough = "passthrough",
    }
);

spelled!(
    /// A CA event.
    IdentityKind, "identity event" {
        Issued = "issued",
        Renewed = "renewed",
        Revoked = "revoked",
        Unrevoked = "unrevoked",
    }
);

spelled!(
    /// A control-plane event.
    PolicyOutcome, "policy outcome" {
        Accepted = "accepted",
        Rejected = "rejected",
    }
);

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_spelling_parses_back() {
        for kind in ExternalKind::ALL {
            assert_eq!(kind.as_str().parse::<ExternalKind>(), Ok(*kind));
        }
        for effect in Effect::ALL {
            assert_eq!(effect.as_str().parse::<Effect>(), Ok(*effect));
        }
        let err = "BlackHole".parse::<ExternalKind>().unwrap_err();
        assert_eq!(
            err.to_string(),
            "`BlackHole` is not a valid external kind; expected one of: allowlisted, blackhole, passthrough"
        );
    }

    #[test]
    fn hex_is_lower_case() {
        let mut hash = GENESIS;
        hash[0] = 0xAB;
        assert!(to_hex(&hash).starts_with("ab00"));
        assert_eq!(to_hex(&hash).len(), 64);
    }
}
