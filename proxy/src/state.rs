//! The policy snapshot a proxy enforces: a validated bundle, the engine built from
//! it and an index from host names to services, built off the request path and
//! swapped in whole.
//!
//! [`PolicyHandle`] holds `None` until the first snapshot arrives: every request is
//! then denied (fail-closed) and the proxy is not ready. After that, a snapshot is
//! only ever replaced by another valid one (whatever the control plane sends last:
//! a restarted control plane numbers from 1 again, so versions are not compared),
//! and losing the control plane keeps the last good snapshot enforcing
//! (fail-static).

use std::collections::HashMap;
use std::sync::Arc;

use arc_swap::ArcSwapOption;
use palisade_authz::{Engine, EngineError};
use palisade_policy::registry::{Service, Workload};
use palisade_policy::Bundle;

/// The snapshot in force, read lock-free on every request.
pub type PolicyHandle = Arc<ArcSwapOption<PolicyState>>;

/// A new, empty handle: fail-closed until the first snapshot.
pub fn empty_handle() -> PolicyHandle {
    Arc::new(ArcSwapOption::empty())
}

/// One snapshot, compiled.
#[derive(Debug)]
pub struct PolicyState {
    version: u64,
    digest: String,
    bundle: Bundle,
    engine: Engine,
    /// Canonical host name → index into `bundle.registry().services()`.
    hosts: HashMap<String, usize>,
}

impl PolicyState {
    /// Compiles a bundle. Slow for large bundles (the engine partitions every
    /// policy): call it off the request path, e.g. in `spawn_blocking`.
    ///
    /// # Errors
    ///
    /// When the engine refuses the bundle's policies.
    pub fn build(version: u64, digest: String, bundle: Bundle) -> Result<Self, EngineError> {
        let engine = Engine::new(bundle.engine_input())?;
        let mut hosts = HashMap::new();
        for (index, service) in bundle.registry().services().iter().enumerate() {
            for host in service.hosts() {
                hosts.insert(host.clone(), index);
            }
        }
        Ok(Self {
            version,
            digest,
            bundle,
            engine,
            hosts,
        })
    }

    /// The snapshot's version, as the control plane numbered it.
    pub fn version(&self) -> u64 {
        self.version
    }

    /// The snapshot's digest (`sha256:…`).
    pub fn digest(&self) -> &str {
        &self.digest
    }

    /// The bundle the snapshot holds.
    pub fn bundle(&self) -> &Bundle {
        &self.bundle
    }

    /// The engine built from it.
    pub fn engine(&self) -> &Engine {
        &self.engine
    }

    /// The service answering to a canonical host name (no port).
    pub fn service_by_host(&self, host: &str) -> Option<&Service> {
        let index = *self.hosts.get(host)?;
        self.bundle.registry().services().get(index)
    }

    /// The registered workload with this SPIFFE ID.
    pub fn workload(&self, spiffe_id: &str) -> Option<&Workload> {
        self.bundle.registry().workload(spiffe_id)
    }
}

#[cfg(test)]
mod tests {
    use crate::testing::shop_state;

    #[test]
    fn services_are_found_by_any_of_their_hosts() {
        let state = shop_state();
        let by_short = state.service_by_host("payments.shop").unwrap();
        let by_long = state.service_by_host("payments.payments.svc").unwrap();
        assert_eq!(by_short.id(), "payments/payments");
        assert_eq!(by_short, by_long);
        assert!(state.service_by_host("payments.shop.evil").is_none());
    }
}
