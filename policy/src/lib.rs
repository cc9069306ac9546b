//! Palisade policy bundles.
//!
//! This crate will own: the on-disk bundle (Cedar files, the schema, the service
//! registry, egress allowlists, mesh settings), its loader and validator (with the
//! namespace rule), analysis (mismatch graph, explain, policy tests) and distribution
//! of versioned snapshots to proxies over streaming gRPC.
//!
//! Nothing is built here yet: see the authorization and sidecar issues.
