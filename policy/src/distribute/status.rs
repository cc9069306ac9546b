//! What the control plane knows of each proxy: its open streams, what it was
//! sent, and what it acknowledged or refused. An admin page shows it as JSON.
//!
//! A `Mutex` guards it: it changes once per stream, snapshot or acknowledgement,
//! never per request.

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::time::SystemTime;

use serde::Serialize;

use palisade_ca::SpiffeId;

use crate::snapshot::SnapshotDigest;

/// The state of every proxy that ever connected, by SPIFFE ID.
#[derive(Debug, Default)]
pub struct ProxyStatus {
    proxies: Mutex<BTreeMap<SpiffeId, ProxyState>>,
}

/// What the control plane knows of one proxy.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct ProxyState {
    /// The proxy's SPIFFE ID (its verified client SVID).
    pub spiffe_id: String,
    /// How many `Watch` streams it has open now.
    pub streams: u32,
    /// The last snapshot sent to it.
    pub sent: Option<Version>,
    /// The last snapshot it applied.
    pub acked: Option<Version>,
    /// The last snapshot it refused, and why.
    pub nacked: Option<Refusal>,
    /// When it last opened a stream, was sent a snapshot or answered one (Unix seconds).
    pub last_seen_unix: i64,
}

/// One snapshot version and its digest.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Version {
    pub version: u64,
    pub digest: String,
}

/// A snapshot a proxy refused.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Refusal {
    pub version: u64,
    pub digest: String,
    pub error: String,
}

impl ProxyStatus {
    /// No proxy yet.
    pub fn new() -> Arc<Self> {
        Arc::default()
    }

    /// Every proxy, by SPIFFE ID.
    pub fn snapshot(&self) -> Vec<ProxyState> {
        self.lock().values().cloned().collect()
    }

    /// The state of one proxy.
    pub fn proxy(&self, id: &SpiffeId) -> Option<ProxyState> {
        self.lock().get(id).cloned()
    }

    /// A stream of `id` opened; it counts as open until the guard is dropped.
    pub fn stream_opened(self: &Arc<Self>, id: &SpiffeId) -> StreamGuard {
        self.update(id, |state| state.streams = state.streams.saturating_add(1));
        StreamGuard {
            status: Arc::clone(self),
            id: id.clone(),
        }
    }

    /// `id` was sent a snapshot.
    pub fn sent(&self, id: &SpiffeId, version: u64, digest: SnapshotDigest) {
        self.update(id, |state| state.sent = Some(Version::new(version, digest)));
    }

    /// `id` applied a snapshot.
    pub fn acked(&self, id: &SpiffeId, version: u64, digest: &str) {
        self.update(id, |state| {
            state.acked = Some(Version {
                version,
                digest: digest.to_owned(),
            });
        });
    }

    /// `id` refused a snapshot.
    pub fn nacked(&self, id: &SpiffeId, version: u64, digest: &str, error: &str) {
        self.update(id, |state| {
            state.nacked = Some(Refusal {
                version,
                digest: digest.to_owned(),
                error: error.to_owned(),
            });
        });
    }

    fn update(&self, id: &SpiffeId, change: impl FnOnce(&mut ProxyState)) {
        let mut proxies = self.lock();
        let state = proxies.entry(id.clone()).or_insert_with(|| ProxyState::new(id));
        change(state);
        state.last_seen_unix = palisade_ca::svid::unix_seconds(SystemTime::now());
    }

    /// The map; a panic elsewhere while holding it leaves plain data behind, still usable.
    fn lock(&self) -> MutexGuard<'_, BTreeMap<SpiffeId, ProxyState>> {
        self.proxies.lock().unwrap_or_else(PoisonError::into_inner)
    }
}

impl ProxyState {
    fn new(id: &SpiffeId) -> Self {
        Self {
            spiffe_id: id.to_string(),
            streams: 0,
            sent: None,
            acked: None,
            nacked: None,
            last_seen_unix: 0,
        }
    }
}

impl Version {
    fn new(version: u64, digest: SnapshotDigest) -> Self {
        Self {
            version,
            digest: digest.to_string(),
        }
    }
}

/// Counts one open stream of a proxy until dropped.
#[derive(Debug)]
pub struct StreamGuard {
    status: Arc<ProxyStatus>,
    id: SpiffeId,
}

impl Drop for StreamGuard {
    fn drop(&mut self) {
        let mut proxies = self.status.lock();
        if let Some(state) = proxies.get_mut(&self.id) {
            state.streams = state.streams.saturating_sub(1);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn streams_are_counted_while_open_and_answers_are_kept() {
        let status = ProxyStatus::new();
        let id = SpiffeId::parse("spiffe://td/ns/a/sa/b").unwrap();
        let first = status.stream_opened(&id);
        let second = status.stream_opened(&id);
        assert_eq!(status.proxy(&id).unwrap().streams, 2);
        drop(first);
        assert_eq!(status.proxy(&id).unwrap().streams, 1);
        drop(second);
        status.acked(&id, 3, "sha256:00");
        status.nacked(&id, 4, "sha256:11", "bad");
        let state = status.proxy(&id).unwrap();
        assert_eq!((state.streams, state.acked.unwrap().version), (0, 3));
        assert_eq!(state.nacked.unwrap().error, "bad");
        assert!(state.last_seen_unix > 0);
    }

    #[test]
    fn the_admin_page_gets_camel_case_json() {
        let status = ProxyStatus::new();
        let id = SpiffeId::parse("spiffe://td/ns/a/sa/b").unwrap();
        status.acked(&id, 1, "sha256:00");
        let json = serde_json::to_value(status.snapshot()).unwrap();
        assert_eq!(json[0]["spiffeId"], "spiffe://td/ns/a/sa/b");
        assert_eq!(json[0]["acked"]["version"], 1);
        assert!(json[0]["nacked"].is_null());
    }
}
