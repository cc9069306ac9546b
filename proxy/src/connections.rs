//! The live connections with mesh peers, by the peer's SVID, so that a revocation
//! cuts them: new handshakes already fail in the verifier, and
//! [`LiveConnections::close_revoked`] closes the connections that were established
//! before the revocation arrived.
//!
//! A connection task registers its peer and selects on the returned
//! [`CloseSignal`] beside the connection itself; dropping the [`Registration`]
//! unregisters it.

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, PoisonError};

use palisade_ca::revocation::RevocationSet;
use palisade_ca::{Serial, SpiffeId};
use tokio::sync::watch;

/// Every registered peer connection. Locked only when a connection opens or closes
/// and when revocations change, never per request.
#[derive(Debug, Default)]
pub struct LiveConnections {
    next: AtomicU64,
    peers: Mutex<HashMap<u64, Peer>>,
}

#[derive(Debug)]
struct Peer {
    id: SpiffeId,
    serial: Serial,
    close: watch::Sender<bool>,
}

/// Keeps a connection registered while it lives.
#[derive(Debug)]
pub struct Registration {
    key: u64,
    connections: Arc<LiveConnections>,
}

/// Resolves when the connection must be closed.
#[derive(Debug, Clone)]
pub struct CloseSignal(watch::Receiver<bool>);

impl CloseSignal {
    /// Waits until the connection must close. Never resolves for a connection that
    /// stays authorized.
    pub async fn closed(&mut self) {
        if self.0.wait_for(|closed| *closed).await.is_err() {
            // The registry is gone (shutdown): nothing will ever close this one.
            std::future::pending::<()>().await;
        }
    }
}

impl LiveConnections {
    /// A new, empty registry.
    pub fn new() -> Arc<Self> {
        Arc::new(Self::default())
    }

    /// Registers a connection with the peer holding the SVID `serial` for `id`.
    pub fn register(self: &Arc<Self>, id: SpiffeId, serial: Serial) -> (Registration, CloseSignal) {
        let key = self.next.fetch_add(1, Ordering::Relaxed);
        let (close, signal) = watch::channel(false);
        self.lock().insert(key, Peer { id, serial, close });
        let registration = Registration {
            key,
            connections: Arc::clone(self),
        };
        (registration, CloseSignal(signal))
    }

    /// Signals every connection whose peer `revocations` revokes (by serial or by
    /// ID) to close, and returns how many.
    pub fn close_revoked(&self, revocations: &RevocationSet) -> usize {
        let peers = self.lock();
        let mut closed = 0;
        for peer in peers.values() {
            if revocations.is_revoked(&peer.serial, &peer.id) {
                peer.close.send_replace(true);
                closed += 1;
            }
        }
        closed
    }

    /// How many connections are registered.
    pub fn len(&self) -> usize {
        self.lock().len()
    }

    /// Whether none is.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<u64, Peer>> {
        self.peers.lock().unwrap_or_else(PoisonError::into_inner)
    }
}

impl Drop for Registration {
    fn drop(&mut self) {
        self.connections.lock().remove(&self.key);
    }
}
