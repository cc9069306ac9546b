//! Pooled HTTP/2 connections to other sidecars, one multiplexed connection per
//! endpoint and set of expected server identities.
//!
//! The key holds the identities as well as the address: a connection verified for
//! a service served by `A` is never reused for a service that `A` does not serve.
//! A request reads the pool under a short read lock and clones the connection's
//! sender; only the first request to a cold slot connects, the others wait on that
//! slot alone (and share its failure rather than each trying in turn). Each live
//! connection is registered in [`LiveConnections`](crate::connections) by the
//! server's SVID and dropped, freeing its slot, when that SVID is revoked or
//! expires.
//!
//! TLS client configs are built once per set of expected identities. The SVID
//! they present comes from the resolver, which rotation swaps in place: new
//! connections present the new SVID, live ones carry on.

use std::collections::HashMap;
use std::hash::BuildHasher;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, PoisonError, RwLock, Weak};

use hyper::client::conn::http2::SendRequest;
use palisade_ca::tls::client_config;
use palisade_ca::verify::SvidServerVerifier;
use palisade_ca::SpiffeId;
use palisade_policy::registry::Endpoint;
use rustls::ClientConfig;

use super::connect::{connect, ConnectError, Connected};
use crate::context::Context;
use crate::request::body::Streamed;
use crate::state::PolicyState;

/// Every pooled connection of one sidecar.
#[derive(Debug)]
pub(crate) struct Pool {
    ctx: Arc<Context>,
    hasher: std::hash::RandomState,
    slots: RwLock<HashMap<u64, Vec<Arc<Slot>>>>,
    configs: RwLock<HashMap<Vec<SpiffeId>, Arc<ClientConfig>>>,
    next_connection: AtomicU64,
    /// The snapshot the slots were last pruned against: its address for the
    /// per-request check, and a `Weak` that keeps the address from being reused.
    pruned_for: AtomicUsize,
    pruned_weak: Mutex<std::sync::Weak<PolicyState>>,
}

/// One endpoint, reached with one set of expected identities.
#[derive(Debug)]
struct Slot {
    endpoint: Endpoint,
    served_by: Vec<SpiffeId>,
    tls: Arc<ClientConfig>,
    live: Mutex<Option<Live>>,
    /// Connection attempts finished, so waiters can tell a new failure from an old one.
    attempts: AtomicU64,
    /// Held while connecting; holds the last attempt's failure.
    connecting: tokio::sync::Mutex<Option<ConnectError>>,
}

#[derive(Debug)]
struct Live {
    id: u64,
    sender: SendRequest<Streamed>,
}

impl Pool {
    pub(crate) fn new(ctx: Arc<Context>) -> Self {
        Self {
            ctx,
            hasher: std::hash::RandomState::new(),
            slots: RwLock::default(),
            configs: RwLock::default(),
            next_connection: AtomicU64::new(0),
            pruned_for: AtomicUsize::new(0),
            pruned_weak: Mutex::new(std::sync::Weak::new()),
        }
    }

    /// Drops the slots that no service of `state` names any more (its endpoint
    /// with its `servedBy`), once per snapshot; a pointer compare otherwise. A
    /// dropped slot's connection ends when its last in-flight request finishes.
    pub(crate) fn prune_for(&self, state: &Arc<PolicyState>) {
        let address = Arc::as_ptr(state) as usize;
        if self.pruned_for.load(Ordering::Acquire) == address {
            return;
        }
        let mut weak = self.pruned_weak.lock().unwrap_or_else(PoisonError::into_inner);
        if self.pruned_for.load(Ordering::Acquire) == address {
            return;
        }
        let services = state.bundle().registry().services();
        let named = |slot: &Slot| {
            services
                .iter()
                .any(|s| s.served_by() == slot.served_by.as_slice() && s.endpoints().contains(&slot.endpoint))
        };
        let mut slots = self.slots.write().unwrap_or_else(PoisonError::into_inner);
        let before: usize = slots.values().map(Vec::len).sum();
        for bucket in slots.values_mut() {
            bucket.retain(|slot| named(slot));
        }
        slots.retain(|_, bucket| !bucket.is_empty());
        let dropped = before - slots.values().map(Vec::len).sum::<usize>();
        if dropped > 0 {
            tracing::info!(
                dropped,
                "dropped pooled connections the new policy snapshot no longer names"
            );
        }
        *weak = Arc::downgrade(state);
        self.pruned_for.store(address, Ordering::Release);
    }

    /// A sender on a live connection to `endpoint` whose server presented one of
    /// `served_by`, connecting first when there is none.
    pub(crate) async fn sender(
        &self,
        endpoint: &Endpoint,
        served_by: &[SpiffeId],
    ) -> Result<SendRequest<Streamed>, ConnectError> {
        let slot = self.slot(endpoint, served_by)?;
        if let Some(sender) = slot.ready() {
            return Ok(sender);
        }
        let seen = slot.attempts.load(Ordering::Acquire);
        let mut last_failure = slot.connecting.lock().await;
        if let Some(sender) = slot.ready() {
            return Ok(sender);
        }
        if slot.attempts.load(Ordering::Acquire) != seen {
            if let Some(failure) = last_failure.clone() {
                return Err(failure);
            }
        }
        let result = connect(&self.ctx, &slot.endpoint, Arc::clone(&slot.tls))
            .await
            .and_then(|connected| self.keep(&slot, connected));
        slot.attempts.fetch_add(1, Ordering::Release);
        match result {
            Ok(sender) => {
                *last_failure = None;
                Ok(sender)
            }
            Err(failure) => {
                if let Some(reason) = failure.handshake_reason() {
                    self.ctx.metrics.handshake_failure(reason);
                }
                tracing::warn!(error = %failure, "cannot connect to a mesh endpoint");
                *last_failure = Some(failure.clone());
                Err(failure)
            }
        }
    }

    /// Registers a new connection, stores its sender in the slot and spawns the task
    /// that drives it until it ends or its server is revoked.
    fn keep(&self, slot: &Arc<Slot>, connected: Connected) -> Result<SendRequest<Streamed>, ConnectError> {
        let Connected {
            sender,
            connection,
            server,
            serial,
            not_after,
            endpoint,
        } = connected;
        let (registration, mut close) = self.ctx.connections.register(server.clone(), serial.clone(), not_after);
        // Registered first, checked second: a revocation that arrived after the
        // verifier ran and before the registration is caught here, any later one by
        // `close_revoked`.
        if self.ctx.trust.revocations().is_revoked(&serial, &server) {
            return Err(ConnectError::Handshake {
                endpoint,
                reason: "revoked",
                detail: format!("the server's SVID for `{server}` was revoked during the handshake"),
            });
        }
        let id = self.next_connection.fetch_add(1, Ordering::Relaxed);
        *slot.lock_live() = Some(Live {
            id,
            sender: sender.clone(),
        });
        let weak = Arc::downgrade(slot);
        tracing::debug!(%endpoint, %server, "connected to a mesh endpoint");
        tokio::spawn(async move {
            let _registration = registration;
            tokio::select! {
                result = connection => {
                    if let Err(e) = result {
                        tracing::debug!(%endpoint, error = %e, "a mesh connection ended");
                    }
                }
                () = close.closed() => {
                    tracing::info!(%endpoint, %server, "the server's SVID was revoked or expired; closing its connection");
                }
            }
            forget(&weak, id);
        });
        Ok(sender)
    }

    /// The slot for this key, made on first use.
    fn slot(&self, endpoint: &Endpoint, served_by: &[SpiffeId]) -> Result<Arc<Slot>, ConnectError> {
        let hash = self.hasher.hash_one((endpoint, served_by));
        let found = |slots: &HashMap<u64, Vec<Arc<Slot>>>| {
            slots
                .get(&hash)
                .and_then(|bucket| bucket.iter().find(|s| s.is_for(endpoint, served_by)))
                .cloned()
        };
        if let Some(slot) = found(&self.slots.read().unwrap_or_else(PoisonError::into_inner)) {
            return Ok(slot);
        }
        let tls = self.tls(served_by)?;
        let mut slots = self.slots.write().unwrap_or_else(PoisonError::into_inner);
        if let Some(slot) = found(&slots) {
            return Ok(slot);
        }
        let slot = Arc::new(Slot {
            endpoint: endpoint.clone(),
            served_by: served_by.to_vec(),
            tls,
            live: Mutex::new(None),
            attempts: AtomicU64::new(0),
            connecting: tokio::sync::Mutex::new(None),
        });
        slots.entry(hash).or_default().push(Arc::clone(&slot));
        Ok(slot)
    }

    /// The TLS client config that accepts exactly the servers `served_by` lists.
    fn tls(&self, served_by: &[SpiffeId]) -> Result<Arc<ClientConfig>, ConnectError> {
        if let Some(config) = self
            .configs
            .read()
            .unwrap_or_else(PoisonError::into_inner)
            .get(served_by)
        {
            return Ok(Arc::clone(config));
        }
        let verifier = SvidServerVerifier::new(Arc::clone(&self.ctx.trust), served_by.to_vec());
        let config =
            client_config(Arc::clone(&self.ctx.resolver), verifier, &[b"h2"]).map_err(|e| ConnectError::Handshake {
                endpoint: String::new(),
                reason: "tls_config",
                detail: e.to_string(),
            })?;
        let config = Arc::new(config);
        self.configs
            .write()
            .unwrap_or_else(PoisonError::into_inner)
            .insert(served_by.to_vec(), Arc::clone(&config));
        Ok(config)
    }

    /// How many slots hold a live connection.
    #[cfg(test)]
    pub(crate) fn live_connections(&self) -> usize {
        self.slots
            .read()
            .unwrap_or_else(PoisonError::into_inner)
            .values()
            .flatten()
            .filter(|slot| slot.ready().is_some())
            .count()
    }
}

impl Slot {
    fn is_for(&self, endpoint: &Endpoint, served_by: &[SpiffeId]) -> bool {
        self.endpoint == *endpoint && self.served_by == served_by
    }

    /// The live connection's sender, when it has one that is still open.
    fn ready(&self) -> Option<SendRequest<Streamed>> {
        let live = self.lock_live();
        live.as_ref()
            .filter(|live| !live.sender.is_closed())
            .map(|live| live.sender.clone())
    }

    fn lock_live(&self) -> std::sync::MutexGuard<'_, Option<Live>> {
        self.live.lock().unwrap_or_else(PoisonError::into_inner)
    }
}

/// Frees a slot whose connection `id` ended (unless a newer one took its place).
fn forget(slot: &Weak<Slot>, id: u64) {
    if let Some(slot) = slot.upgrade() {
        let mut live = slot.lock_live();
        if live.as_ref().is_some_and(|live| live.id == id) {
            *live = None;
        }
    }
}
