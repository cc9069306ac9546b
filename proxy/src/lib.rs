//! The Palisade sidecar.
//!
//! This crate will own: the inbound mTLS listener, the outbound listener, HTTP/1.1
//! and HTTP/2 (gRPC) proxying with enforcement of the caller's egress and the callee's
//! ingress policy, egress control (allowlist, BlackHole, Passthrough), SVID rotation,
//! revocation enforcement, metrics and audit emission.
//!
//! Nothing is built here yet: see the sidecar issue.
