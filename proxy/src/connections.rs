//! The live connections with mesh peers, by the peer's SVID, so that a revocation
//! or the SVID's expiry cuts them: new handshakes already fail in the verifier, and
//! [`LiveConnections::close_revoked`] and [`LiveConnections::close_expired`] (run
//! every second by [`spawn_expiry_sweeper`]) close the connections that were
//! established before.
//!
//! A connection task registers its peer and selects on the returned
//! [`CloseSignal`] beside the connection itself; dropping the [`Registration`]
//! unregisters it.

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, SystemTime};

use palisade_ca::revocation::RevocationSet;
use palisade_ca::{Serial, SpiffeId};
use tokio::sync::watch;
use tokio::task::JoinHandle;

use crate::metrics::Metrics;

/// How often [`spawn_expiry_sweeper`] looks for expired peers.
const SWEEP_EVERY: Duration = Duration::from_secs(1);

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
    /// When the peer's certificate expires.
    not_after: SystemTime,
    close: watch::Sender<bool>,
}

impl Peer {
    /// Signals the connection to close; false when it was signalled already.
    fn close(&self) -> bool {
        !self.close.send_replace(true)
    }
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

    /// Registers a connection with the peer holding the SVID `serial` for `id`,
    /// valid until `not_after`. A peer expired already gets a signal that has fired.
    pub fn register(
        self: &Arc<Self>,
        id: SpiffeId,
        serial: Serial,
        not_after: SystemTime,
    ) -> (Registration, CloseSignal) {
        let key = self.next.fetch_add(1, Ordering::Relaxed);
        let expired = not_after <= SystemTime::now();
        let (close, signal) = watch::channel(expired);
        self.lock().insert(
            key,
            Peer {
                id,
                serial,
                not_after,
                close,
            },
        );
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

    /// Signals every connection whose peer's certificate expired by `now` to close,
    /// and returns how many had not been signalled before.
    pub fn close_expired(&self, now: SystemTime) -> usize {
        self.lock()
            .values()
            .filter(|peer| peer.not_after <= now)
            .filter(|peer| peer.close())
            .count()
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

/// Every second, cuts the connections whose peer's certificate has expired, and
/// counts them; runs until aborted.
pub fn spawn_expiry_sweeper(connections: Arc<LiveConnections>, metrics: Arc<Metrics>) -> JoinHandle<()> {
    tokio::spawn(async move {
        let mut ticks = tokio::time::interval(SWEEP_EVERY);
        ticks.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            ticks.tick().await;
            let closed = connections.close_expired(SystemTime::now());
            if closed > 0 {
                metrics.expired_connections_closed(closed);
                tracing::info!(closed, "live connections cut: their peer's certificate expired");
            }
        }
    })
}

impl Drop for Registration {
    fn drop(&mut self) {
        self.connections.lock().remove(&self.key);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn peer() -> (SpiffeId, Serial) {
        let pki = crate::testing::TestPki::shop();
        let svid = pki.svid(crate::testing::CHECKOUT);
        (svid.id().clone(), svid.serial().clone())
    }

    #[test]
    fn expired_peers_are_closed_once_and_live_ones_are_not() {
        let connections = LiveConnections::new();
        let (id, serial) = peer();
        let now = SystemTime::now();
        let (_live, live_signal) = connections.register(id.clone(), serial.clone(), now + Duration::from_secs(3600));
        let (_expiring, expiring_signal) = connections.register(id, serial, now + Duration::from_secs(60));
        assert_eq!(connections.close_expired(now), 0);
        assert_eq!(connections.close_expired(now + Duration::from_secs(61)), 1);
        assert_eq!(
            connections.close_expired(now + Duration::from_secs(62)),
            0,
            "counted once"
        );
        assert!(*expiring_signal.0.borrow());
        assert!(!*live_signal.0.borrow());
    }

    #[test]
    fn a_peer_expired_at_registration_is_closed_at_once() {
        let connections = LiveConnections::new();
        let (id, serial) = peer();
        let (_registration, signal) = connections.register(id, serial, SystemTime::now() - Duration::from_secs(1));
        assert!(*signal.0.borrow());
    }
}
