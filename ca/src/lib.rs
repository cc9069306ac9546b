//! SPIFFE identity for Palisade: IDs, X.509-SVIDs, trust bundles, the CA and its
//! client, revocation, and the SVID verification every TLS peer of the mesh uses.
//!
//! - **Identity** — [`spiffe_id`] parses SPIFFE IDs exactly per the spec (never
//!   normalizing); [`svid`] holds an SVID and its key; [`bundle`] the roots.
//! - **Verification** — [`verify`]: one pure function applies the X509-SVID rules of
//!   `../shared/SECURITY.md` §3, and rustls verifiers built on it (secure naming on
//!   the client side); [`tls`] builds TLS 1.3-only configs with swappable SVIDs.
//! - **The CA** — [`issuer`] signs leaves only for the attested identity from a
//!   CSR; [`attest`] decides who a caller is (join tokens, Kubernetes
//!   ServiceAccount tokens); [`revocation`] the signed lists and the
//!   X.509 CRL; [`store`] the durable state; [`dir`] the CA directory; [`service`]
//!   the gRPC server (`palisade ca serve`).
//! - **The client** — [`client`]: CSR-based issuance and renewal (the key never
//!   leaves the process), the rotation loop, the revocation follower, admin calls.
//!
//! Not here: authorization (`palisade-authz`), proxying (`palisade-proxy`).

pub mod attest;
pub mod bundle;
pub mod client;
pub mod dir;
pub mod issuer;
pub mod proto;
pub mod revocation;
pub mod serial;
pub mod service;
pub mod spiffe_id;
pub mod store;
pub mod svid;
#[cfg(test)]
pub(crate) mod testing;
pub mod tls;
pub mod verify;

pub use bundle::TrustBundle;
pub use serial::Serial;
pub use spiffe_id::{SpiffeId, SpiffeIdError, TrustDomain};
pub use svid::Svid;
pub use verify::{verify_svid, SvidError, Usage, VerifiedSvid};
