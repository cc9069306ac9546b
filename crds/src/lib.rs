//! Kubernetes support for Palisade.
//!
//! This crate will own: the CustomResources of group `palisade.dev` (kube-rs),
//! the generated CRD manifests, and the controller that turns cluster state into
//! policy bundles and writes status conditions back.
//!
//! Nothing is built here yet: see the Kubernetes issue.

pub mod tokenreview;
