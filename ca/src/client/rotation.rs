//! Keeping an SVID fresh: renew at about half of its lifetime (with jitter, so a
//! fleet started together does not renew together), retry with backoff while the
//! CA is away, and publish each new SVID on a `watch` channel so TLS servers and
//! clients swap certificates in place.
//!
//! Renewals are authenticated by the current SVID. Once it has expired (the CA
//! was away for longer than its lifetime), a sidecar that bootstrapped with a
//! ServiceAccount token presents its pod's current token instead, as at its
//! start; with a join token (single use) it cannot, and keeps trying with the
//! expired SVID, which the CA refuses, until it is restarted with a new token.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use tokio::sync::watch;
use tokio::task::JoinHandle;

use super::{fetch_svid, CaEndpoint, ClientError, Credential};
use crate::spiffe_id::SpiffeId;
use crate::svid::Svid;

/// The share of the lifetime after which an SVID is renewed, before jitter.
pub const RENEW_AT: f64 = 0.5;
/// Jitter around [`RENEW_AT`], as a share of the lifetime (±).
pub const RENEW_JITTER: f64 = 0.1;

/// How the first SVID is obtained.
#[derive(Debug, Clone)]
pub enum Bootstrap {
    JoinToken(String),
    /// A Kubernetes projected ServiceAccount token in this file, read again at
    /// every attempt (the kubelet rotates it).
    ServiceAccountToken(PathBuf),
    Existing(Arc<Svid>),
}

/// The lifetime to ask the CA for at each issuance; `None` for the CA's default.
#[derive(Debug, Clone)]
pub enum Ttl {
    /// Always this one (a sidecar's own `svidTtl`).
    Fixed(Option<Duration>),
    /// Whatever the channel holds when the request is made: a sidecar follows its
    /// mesh's `leafTtl` this way, from one renewal to the next.
    Follow(watch::Receiver<Option<Duration>>),
}

impl Ttl {
    /// The lifetime to ask for now.
    pub fn get(&self) -> Option<Duration> {
        match self {
            Self::Fixed(ttl) => *ttl,
            Self::Follow(ttl) => *ttl.borrow(),
        }
    }
}

impl From<Option<Duration>> for Ttl {
    fn from(ttl: Option<Duration>) -> Self {
        Self::Fixed(ttl)
    }
}

/// What a rotation needs.
#[derive(Debug, Clone)]
pub struct RotationParams {
    pub endpoint: CaEndpoint,
    pub id: SpiffeId,
    pub bootstrap: Bootstrap,
    /// The lifetime to ask for at each issuance.
    pub ttl: Ttl,
}

/// Gets the first SVID (retrying while the CA is unreachable; a refusal is final)
/// and spawns the renewal loop. The loop ends when every receiver is dropped.
pub async fn start(params: RotationParams) -> Result<(watch::Receiver<Arc<Svid>>, JoinHandle<()>), ClientError> {
    let first = match &params.bootstrap {
        Bootstrap::Existing(svid) => Arc::clone(svid),
        Bootstrap::JoinToken(token) => {
            let credential = Credential::JoinToken(token.clone());
            Arc::new(retry_transient(|| fetch_svid(&params.endpoint, &params.id, &credential, params.ttl.get())).await?)
        }
        Bootstrap::ServiceAccountToken(path) => Arc::new(
            retry_transient(|| async {
                let credential = Credential::ServiceAccountToken(read_token(path)?);
                fetch_svid(&params.endpoint, &params.id, &credential, params.ttl.get()).await
            })
            .await?,
        ),
    };
    let (tx, rx) = watch::channel(first);
    let task = tokio::spawn(renew_loop(params, tx));
    Ok((rx, task))
}

async fn renew_loop(params: RotationParams, tx: watch::Sender<Arc<Svid>>) {
    loop {
        let current = Arc::clone(&tx.borrow());
        let delay = renewal_delay(current.not_before(), current.not_after(), SystemTime::now(), jitter());
        tokio::select! {
            () = tokio::time::sleep(delay) => {}
            () = tx.closed() => return,
        }
        let mut backoff = Backoff::default();
        loop {
            let credential = renewal_credential(&params.bootstrap, &current, SystemTime::now());
            match fetch_svid(&params.endpoint, &params.id, &credential, params.ttl.get()).await {
                Ok(svid) => {
                    tracing::info!(id = %svid.id(), serial = %svid.serial(), "SVID renewed");
                    tx.send_replace(Arc::new(svid));
                    break;
                }
                Err(e) => {
                    let expired = SystemTime::now() > current.not_after();
                    tracing::warn!(error = %e, expired, "SVID renewal failed; retrying");
                    tokio::select! {
                        () = tokio::time::sleep(backoff.next_delay()) => {}
                        () = tx.closed() => return,
                    }
                }
            }
        }
    }
}

/// What a renewal of `current` presents at `now`: the SVID while it is valid;
/// once it has expired, the pod's ServiceAccount token when the sidecar has one
/// (read again: the kubelet rotates it). A token file that cannot be read leaves
/// the SVID, whose refusal says what is wrong.
fn renewal_credential(bootstrap: &Bootstrap, current: &Arc<Svid>, now: SystemTime) -> Credential {
    match bootstrap {
        Bootstrap::ServiceAccountToken(path) if now > current.not_after() => match read_token(path) {
            Ok(token) => {
                tracing::warn!(id = %current.id(), "the SVID has expired; presenting the ServiceAccount token instead");
                Credential::ServiceAccountToken(token)
            }
            Err(e) => {
                tracing::warn!(error = %e, "the SVID has expired and the ServiceAccount token cannot be read");
                Credential::Svid(Arc::clone(current))
            }
        },
        _ => Credential::Svid(Arc::clone(current)),
    }
}

/// The ServiceAccount token in `path`, without surrounding whitespace.
///
/// # Errors
///
/// When the file cannot be read or holds no token.
pub fn read_token(path: &Path) -> Result<String, ClientError> {
    let bad = |reason: String| ClientError::TokenFile {
        path: path.display().to_string(),
        reason,
    };
    let text = std::fs::read_to_string(path).map_err(|e| bad(e.to_string()))?;
    match text.trim() {
        "" => Err(bad("the file is empty".to_owned())),
        token => Ok(token.to_owned()),
    }
}

/// When to renew an SVID valid from `not_before` to `not_after`, seen at `now`:
/// at `RENEW_AT ± RENEW_JITTER` of its lifetime (`jitter` in -1..=1), or at once
/// when that moment has passed.
pub fn renewal_delay(not_before: SystemTime, not_after: SystemTime, now: SystemTime, jitter: f64) -> Duration {
    let Ok(lifetime) = not_after.duration_since(not_before) else {
        return Duration::ZERO;
    };
    let share = RENEW_AT + RENEW_JITTER * jitter.clamp(-1.0, 1.0);
    let renew_at = not_before + lifetime.mul_f64(share);
    renew_at.duration_since(now).unwrap_or_default()
}

/// A random number in -1..=1.
fn jitter() -> f64 {
    let mut b = [0u8; 1];
    let _ = ring::rand::SecureRandom::fill(&ring::rand::SystemRandom::new(), &mut b);
    f64::from(b[0]) / 127.5 - 1.0
}

/// Exponential backoff from 250 ms to 30 s.
#[derive(Debug)]
pub(crate) struct Backoff {
    next: Duration,
}

impl Default for Backoff {
    fn default() -> Self {
        Self {
            next: Duration::from_millis(250),
        }
    }
}

impl Backoff {
    pub(crate) fn next_delay(&mut self) -> Duration {
        let d = self.next;
        self.next = (self.next * 2).min(Duration::from_secs(30));
        d
    }
}

/// Retries `f` while its error is transient.
pub(crate) async fn retry_transient<T, F, Fut>(mut f: F) -> Result<T, ClientError>
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Result<T, ClientError>>,
{
    let mut backoff = Backoff::default();
    loop {
        match f().await {
            Err(e) if e.is_transient() => {
                let delay = backoff.next_delay();
                tracing::warn!(error = %e, retry_in = ?delay, "the CA is unavailable; retrying");
                tokio::time::sleep(delay).await;
            }
            other => return other,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_followed_lifetime_is_read_at_each_request() {
        let (tx, rx) = watch::channel(None);
        let ttl = Ttl::Follow(rx);
        assert_eq!(ttl.get(), None, "the CA's default until the mesh says");
        tx.send_replace(Some(Duration::from_secs(1800)));
        assert_eq!(ttl.get(), Some(Duration::from_secs(1800)));
        assert_eq!(
            Ttl::from(Some(Duration::from_secs(60))).get(),
            Some(Duration::from_secs(60))
        );
    }

    #[test]
    fn renews_at_half_life_within_the_jitter_band() {
        let t0 = SystemTime::UNIX_EPOCH + Duration::from_secs(1_000_000);
        let hour = Duration::from_secs(3600);
        assert_eq!(renewal_delay(t0, t0 + hour, t0, 0.0), Duration::from_secs(1800));
        assert_eq!(renewal_delay(t0, t0 + hour, t0, 1.0), Duration::from_secs(2160));
        assert_eq!(renewal_delay(t0, t0 + hour, t0, -1.0), Duration::from_secs(1440));
        assert_eq!(
            renewal_delay(t0, t0 + hour, t0, 9.0),
            Duration::from_secs(2160),
            "jitter is clamped"
        );
        assert_eq!(
            renewal_delay(t0, t0 + hour, t0 + hour, 0.0),
            Duration::ZERO,
            "overdue renews at once"
        );
        assert_eq!(
            renewal_delay(t0 + hour, t0, t0, 0.0),
            Duration::ZERO,
            "an inverted window renews at once"
        );
    }

    #[test]
    fn the_token_file_is_read_trimmed_and_must_hold_a_token() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("token");
        std::fs::write(&path, "eyJhbGciOi.x.y\n").unwrap();
        assert_eq!(read_token(&path).unwrap(), "eyJhbGciOi.x.y");
        std::fs::write(&path, " \n").unwrap();
        let empty = read_token(&path).unwrap_err();
        assert!(empty.to_string().contains("is empty"), "{empty}");
        assert!(!empty.is_transient());
        let missing = read_token(&dir.path().join("absent")).unwrap_err();
        assert!(matches!(missing, ClientError::TokenFile { .. }), "{missing}");
        assert!(missing.to_string().contains("absent"), "{missing}");
    }

    #[test]
    fn jitter_stays_in_band_and_backoff_is_capped() {
        for _ in 0..1000 {
            let j = jitter();
            assert!((-1.0..=1.0).contains(&j));
        }
        let mut b = Backoff::default();
        let delays: Vec<_> = (0..10).map(|_| b.next_delay()).collect();
        assert_eq!(delays.first(), Some(&Duration::from_millis(250)));
        assert_eq!(delays.last(), Some(&Duration::from_secs(30)));
    }
}
