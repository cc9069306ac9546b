//! Leader election through a `coordination.k8s.io/v1` Lease, as client-go does.
//!
//! Only the holder of the Lease writes status, talks to the CA and publishes;
//! the other replicas keep their caches and last valid policy sets warm. The
//! holder renews every `renew_every`; a replica takes the Lease when it is free
//! or when its record has not changed for `duration` as measured on the
//! replica's own clock (so clock skew between machines does not matter). Every
//! write is a PUT carrying the `resourceVersion` read, so of two replicas trying
//! at once the API server lets exactly one win (the other gets 409). A holder
//! that cannot renew for `renew_deadline` (shorter than `duration`) stops acting
//! as leader before anyone else may take over, also when the API server stops
//! answering (each look at the Lease must end within what is left of the
//! deadline), and a holder that shuts down releases the Lease so a follower takes
//! over at once.

use std::time::Duration;

use k8s_openapi::api::coordination::v1::{Lease, LeaseSpec};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::MicroTime;
use k8s_openapi::jiff::Timestamp;
use kube::api::{ObjectMeta, PostParams};
use kube::{Api, Client};
use tokio::sync::watch;
use tokio::time::Instant;

/// How the Lease is held.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct LeaseTiming {
    /// How long a Lease not renewed stays its holder's (`leaseDurationSeconds`).
    pub duration: Duration,
    /// How often the holder renews.
    pub renew_every: Duration,
    /// How long the holder may fail to renew before it stops acting as leader;
    /// shorter than `duration`.
    pub renew_deadline: Duration,
    /// How often a follower looks at the Lease.
    pub retry_every: Duration,
}

impl Default for LeaseTiming {
    /// 15 s, renewed every 5 s, a 10 s deadline, followers look every 2 s.
    fn default() -> Self {
        Self {
            duration: Duration::from_secs(15),
            renew_every: Duration::from_secs(5),
            renew_deadline: Duration::from_secs(10),
            retry_every: Duration::from_secs(2),
        }
    }
}

/// What a replica should do about the Lease.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Decision {
    /// There is no Lease: create it, holding it.
    Create,
    /// It is ours: renew it.
    Renew,
    /// It is free or expired: take it.
    Take,
    /// Someone else holds it.
    Follow { holder: String },
}

/// The decision for replica `me`, given the Lease (if any), when its record was
/// last seen to change, and now (both on this replica's clock).
pub fn decide(lease: Option<&LeaseSpec>, me: &str, unchanged_since: Instant, now: Instant) -> Decision {
    let Some(spec) = lease else {
        return Decision::Create;
    };
    let holder = spec.holder_identity.as_deref().unwrap_or("");
    if holder == me {
        return Decision::Renew;
    }
    if holder.is_empty() {
        return Decision::Take;
    }
    let seconds = spec.lease_duration_seconds.unwrap_or(0).max(0);
    let duration = Duration::from_secs(u64::try_from(seconds).unwrap_or(0));
    if now.saturating_duration_since(unchanged_since) >= duration {
        return Decision::Take;
    }
    Decision::Follow {
        holder: holder.to_owned(),
    }
}

/// Where the Lease is and who this replica is.
#[derive(Debug, Clone)]
pub struct LeaseParams {
    pub namespace: String,
    pub name: String,
    /// This replica's identity (its pod name or host name).
    pub identity: String,
    pub timing: LeaseTiming,
}

/// Runs for one replica: holds or follows the Lease.
#[derive(Debug)]
pub struct Elector {
    api: Api<Lease>,
    params: LeaseParams,
    /// The `resourceVersion` of the record last seen, and when it was first seen.
    observed: Option<(String, Instant)>,
    leader: watch::Sender<bool>,
}

impl Elector {
    pub fn new(client: Client, params: LeaseParams) -> Self {
        Self {
            api: Api::namespaced(client, &params.namespace),
            params,
            observed: None,
            leader: watch::Sender::new(false),
        }
    }

    /// Whether this replica leads, now and as it changes.
    pub fn leader(&self) -> watch::Receiver<bool> {
        self.leader.subscribe()
    }

    /// Takes part in the election until `shutdown`, then releases the Lease if held.
    pub async fn run(mut self, shutdown: impl std::future::Future<Output = ()>) {
        let mut shutdown = std::pin::pin!(shutdown);
        let mut renewed: Option<Instant> = None;
        loop {
            let started = Instant::now();
            let deadline = self.params.timing.renew_deadline;
            let left = renewed.map_or(deadline, |at| {
                deadline.saturating_sub(started.saturating_duration_since(at))
            });
            let step = tokio::time::timeout(left, self.step(started)).await;
            let step = step.unwrap_or_else(|_| Err(StepError::TimedOut(left)));
            match step {
                Ok(true) => renewed = Some(started),
                Ok(false) => renewed = None,
                Err(e) => {
                    tracing::warn!(error = %e, lease = %self.params.name, "cannot read or write the Lease");
                    // Measured now, not when the step started: a step that hung
                    // until its timeout has used up the deadline.
                    let now = Instant::now();
                    if renewed.is_some_and(|at| now.saturating_duration_since(at) >= deadline) {
                        renewed = None;
                    }
                }
            }
            self.set_leader(renewed.is_some());
            // A leader looks again before its deadline passes, whatever `renew_every` says.
            let wait = match renewed {
                Some(at) => (self.params.timing.renew_every)
                    .min(deadline.saturating_sub(Instant::now().saturating_duration_since(at))),
                None => self.params.timing.retry_every,
            };
            tokio::select! {
                () = &mut shutdown => break,
                () = tokio::time::sleep(wait) => {}
            }
        }
        if *self.leader.borrow() {
            self.set_leader(false);
            if let Err(e) = self.release().await {
                tracing::warn!(error = %e, "cannot release the Lease; a follower takes over when it expires");
            }
        }
    }

    fn set_leader(&self, leads: bool) {
        let changed = self.leader.send_if_modified(|l| std::mem::replace(l, leads) != leads);
        if changed {
            match leads {
                true => tracing::info!(identity = %self.params.identity, "leading: this replica now writes"),
                false => tracing::info!(identity = %self.params.identity, "following: another replica writes"),
            }
        }
    }

    /// One look at the Lease; whether this replica holds it afterwards.
    async fn step(&mut self, now: Instant) -> Result<bool, StepError> {
        let lease = self.api.get_opt(&self.params.name).await?;
        let version = lease.as_ref().and_then(|l| l.metadata.resource_version.clone());
        let unchanged_since = match (&self.observed, &version) {
            (Some((seen, since)), Some(version)) if seen == version => *since,
            _ => {
                self.observed = version.map(|v| (v, now));
                now
            }
        };
        let spec = lease.as_ref().and_then(|l| l.spec.as_ref());
        let held = match decide(spec, &self.params.identity, unchanged_since, now) {
            Decision::Create => self.create().await?,
            Decision::Renew | Decision::Take => self.write(lease).await?,
            Decision::Follow { .. } => false,
        };
        Ok(held)
    }

    async fn create(&self) -> Result<bool, kube::Error> {
        let lease = Lease {
            metadata: ObjectMeta {
                name: Some(self.params.name.clone()),
                namespace: Some(self.params.namespace.clone()),
                ..ObjectMeta::default()
            },
            spec: Some(self.held(None)),
        };
        won(self.api.create(&PostParams::default(), &lease).await)
    }

    /// Renews or takes the Lease read as `lease`.
    async fn write(&self, lease: Option<Lease>) -> Result<bool, kube::Error> {
        let Some(mut lease) = lease else { return Ok(false) };
        lease.spec = Some(self.held(lease.spec.take()));
        won(self
            .api
            .replace(&self.params.name, &PostParams::default(), &lease)
            .await)
    }

    /// The spec of a Lease this replica holds from now: renewed, or taken over
    /// (a new acquire time, one more transition).
    fn held(&self, before: Option<LeaseSpec>) -> LeaseSpec {
        let now = MicroTime(Timestamp::now());
        let mut spec = before.unwrap_or_default();
        if spec.holder_identity.as_deref() != Some(self.params.identity.as_str()) {
            spec.acquire_time = Some(now.clone());
            spec.lease_transitions = Some(spec.lease_transitions.map_or(0, |t| t.saturating_add(1)));
        }
        let seconds = i32::try_from(self.params.timing.duration.as_secs()).unwrap_or(i32::MAX);
        spec.holder_identity = Some(self.params.identity.clone());
        spec.lease_duration_seconds = Some(seconds.max(1));
        spec.renew_time = Some(now);
        spec
    }

    /// Gives the Lease up so that a follower takes it at once.
    async fn release(&self) -> Result<(), kube::Error> {
        let Some(mut lease) = self.api.get_opt(&self.params.name).await? else {
            return Ok(());
        };
        let Some(spec) = lease.spec.as_mut() else { return Ok(()) };
        if spec.holder_identity.as_deref() != Some(self.params.identity.as_str()) {
            return Ok(());
        }
        spec.holder_identity = None;
        spec.lease_duration_seconds = Some(1);
        won(self
            .api
            .replace(&self.params.name, &PostParams::default(), &lease)
            .await)
        .map(|_| ())
    }
}

/// Why a look at the Lease failed.
#[derive(Debug, thiserror::Error)]
enum StepError {
    #[error(transparent)]
    Api(#[from] kube::Error),
    #[error("the API server did not answer within {0:?}, the time left to renew the Lease")]
    TimedOut(Duration),
}

/// A write's outcome: won, lost to another replica (409), or failed.
fn won(result: Result<Lease, kube::Error>) -> Result<bool, kube::Error> {
    match result {
        Ok(_) => Ok(true),
        Err(kube::Error::Api(status)) if status.code == 409 => Ok(false),
        Err(e) => Err(e),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn lease(holder: Option<&str>, seconds: i32) -> LeaseSpec {
        LeaseSpec {
            holder_identity: holder.map(str::to_owned),
            lease_duration_seconds: Some(seconds),
            ..LeaseSpec::default()
        }
    }

    fn at(base: Instant, secs: u64) -> Instant {
        base + Duration::from_secs(secs)
    }

    #[test]
    fn with_no_lease_a_replica_creates_it() {
        let t = Instant::now();
        assert_eq!(decide(None, "a", t, t), Decision::Create);
    }

    #[test]
    fn the_holder_renews_its_lease() {
        let t = Instant::now();
        assert_eq!(decide(Some(&lease(Some("a"), 15)), "a", t, at(t, 60)), Decision::Renew);
    }

    #[test]
    fn a_released_lease_is_taken_at_once() {
        let t = Instant::now();
        assert_eq!(decide(Some(&lease(None, 1)), "b", t, t), Decision::Take);
        assert_eq!(decide(Some(&lease(Some(""), 15)), "b", t, t), Decision::Take);
    }

    #[test]
    fn another_holders_lease_is_followed_until_it_stops_changing_for_its_duration() {
        let t = Instant::now();
        let held = lease(Some("a"), 15);
        let follow = Decision::Follow { holder: "a".into() };
        assert_eq!(decide(Some(&held), "b", t, at(t, 14)), follow);
        assert_eq!(decide(Some(&held), "b", t, at(t, 15)), Decision::Take);
    }

    #[test]
    fn a_lease_with_a_nonsense_duration_counts_as_expired() {
        let t = Instant::now();
        assert_eq!(decide(Some(&lease(Some("a"), -5)), "b", t, t), Decision::Take);
    }
}

#[cfg(all(test, feature = "fake-api"))]
mod against_the_fake {
    use super::*;
    use crate::fake::FakeApiServer;

    fn timing() -> LeaseTiming {
        LeaseTiming {
            duration: Duration::from_millis(1500),
            renew_every: Duration::from_millis(200),
            renew_deadline: Duration::from_millis(900),
            retry_every: Duration::from_millis(100),
        }
    }

    async fn until(leader: &mut watch::Receiver<bool>, leads: bool, within: Duration) -> bool {
        tokio::time::timeout(within, leader.wait_for(|l| *l == leads))
            .await
            .is_ok()
    }

    #[tokio::test]
    async fn a_leader_whose_api_server_stops_answering_stops_leading_within_its_deadline() {
        let api = FakeApiServer::start().await.unwrap();
        let params = LeaseParams {
            namespace: "palisade-system".into(),
            name: "palisade-controller".into(),
            identity: "a".into(),
            timing: timing(),
        };
        let elector = Elector::new(api.client().unwrap(), params);
        let mut leader = elector.leader();
        let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
        let task = tokio::spawn(elector.run(async move {
            let _ = stopped.await;
        }));
        assert!(until(&mut leader, true, Duration::from_secs(10)).await, "it leads");

        // Without the deadline, the renewal waits for kube's read timeout (minutes)
        // while a follower takes the Lease after `duration`: two leaders.
        api.stall_leases(true);
        assert!(
            until(&mut leader, false, Duration::from_secs(10)).await,
            "a hung renewal must not keep it leading"
        );

        api.stall_leases(false);
        assert!(
            until(&mut leader, true, Duration::from_secs(10)).await,
            "and leads again"
        );
        let _ = stop.send(());
        task.await.unwrap();
    }
}
