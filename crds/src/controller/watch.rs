//! The controller's view of the cluster: one kube-runtime `watcher` and
//! `reflector` store per resource it reads, across all namespaces.
//!
//! Every change bumps a counter the reconcile loop waits on: one for what the
//! policy bundle is built from (the three Palisade resources of the bundle,
//! Services, EndpointSlices, Pods, Namespaces) and one for `CertificateRevocation`s, so a
//! Pod that comes and goes does not make the controller ask the CA anything.
//! Nothing is built before every store has listed once ([`Caches::ready`]): a
//! bundle built from a half-listed cluster would be wrong, not just late.

use std::fmt::Debug;
use std::hash::Hash;

use k8s_openapi::api::core::v1::{Namespace, Pod, Service};
use k8s_openapi::api::discovery::v1::EndpointSlice;
use kube::runtime::reflector::{self, Store};
use kube::runtime::{watcher, WatchStreamExt};
use kube::{Api, Client, Resource};
use serde::de::DeserializeOwned;
use tokio::sync::watch;
use tokio::task::JoinHandle;
use tokio_stream::StreamExt;

use crate::resources::{CedarPolicy, CertificateRevocation, EgressAllowlist, MeshConfig};
use crate::source::ClusterState;

/// How many changes have been seen, per kind of work they call for.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Changes {
    /// Changes of what the bundle is built from.
    pub bundle: u64,
    /// Changes of `CertificateRevocation`s.
    pub revocations: u64,
}

/// The stores, kept current by their watch tasks (stopped on drop).
#[derive(Debug)]
pub struct Caches {
    policies: Store<CedarPolicy>,
    allowlists: Store<EgressAllowlist>,
    meshes: Store<MeshConfig>,
    revocations: Store<CertificateRevocation>,
    services: Store<Service>,
    slices: Store<EndpointSlice>,
    pods: Store<Pod>,
    namespaces: Store<Namespace>,
    changes: watch::Sender<Changes>,
    ready: watch::Sender<bool>,
    tasks: Vec<JoinHandle<()>>,
}

impl Caches {
    /// Starts watching everything the controller reads.
    pub fn start(client: &Client) -> Self {
        let changes = watch::Sender::new(Changes::default());
        let bundle: fn(&mut Changes) = |c| c.bundle = c.bundle.wrapping_add(1);
        let revocation: fn(&mut Changes) = |c| c.revocations = c.revocations.wrapping_add(1);
        let mut tasks = Vec::new();
        let policies = watch_all(client, &changes, bundle, &mut tasks);
        let allowlists = watch_all(client, &changes, bundle, &mut tasks);
        let meshes = watch_all(client, &changes, bundle, &mut tasks);
        let revocations = watch_all(client, &changes, revocation, &mut tasks);
        let services = watch_all(client, &changes, bundle, &mut tasks);
        let slices = watch_all(client, &changes, bundle, &mut tasks);
        let pods = watch_all(client, &changes, bundle, &mut tasks);
        let namespaces = watch_all(client, &changes, bundle, &mut tasks);
        let mut caches = Self {
            policies,
            allowlists,
            meshes,
            revocations,
            services,
            slices,
            pods,
            namespaces,
            changes,
            ready: watch::Sender::new(false),
            tasks,
        };
        caches.tasks.push(tokio::spawn(caches.until_ready()));
        caches
    }

    /// Follows the change counters.
    pub fn changes(&self) -> watch::Receiver<Changes> {
        self.changes.subscribe()
    }

    /// Becomes `true` once every store has listed once.
    pub fn ready(&self) -> watch::Receiver<bool> {
        self.ready.subscribe()
    }

    /// What the bundle is built from, as the stores hold it now.
    pub fn cluster_state(&self) -> ClusterState {
        ClusterState {
            mesh: self
                .meshes
                .state()
                .iter()
                .find(|m| m.metadata.name.as_deref() == Some("default"))
                .map(|m| (**m).clone()),
            policies: owned(&self.policies),
            allowlists: owned(&self.allowlists),
            services: owned(&self.services),
            slices: owned(&self.slices),
            pods: owned(&self.pods),
            namespaces: owned(&self.namespaces),
        }
    }

    /// Every `CertificateRevocation`.
    pub fn revocations(&self) -> Vec<CertificateRevocation> {
        owned(&self.revocations)
    }

    /// The stored `CedarPolicy`s, for their current status.
    pub fn policies(&self) -> &Store<CedarPolicy> {
        &self.policies
    }

    /// The stored `EgressAllowlist`s.
    pub fn allowlists(&self) -> &Store<EgressAllowlist> {
        &self.allowlists
    }

    /// The stored `MeshConfig`s.
    pub fn meshes(&self) -> &Store<MeshConfig> {
        &self.meshes
    }

    /// A task that sets `ready` once every store has listed.
    fn until_ready(&self) -> impl std::future::Future<Output = ()> + Send + 'static {
        let stores = (
            self.policies.clone(),
            self.allowlists.clone(),
            self.meshes.clone(),
            self.revocations.clone(),
            (self.services.clone(), self.slices.clone(), self.pods.clone()),
            self.namespaces.clone(),
        );
        let ready = self.ready.clone();
        async move {
            let (a, b, c, d, (e, f, g), h) = stores;
            let all = tokio::try_join!(
                a.wait_until_ready(),
                b.wait_until_ready(),
                c.wait_until_ready(),
                d.wait_until_ready(),
                e.wait_until_ready(),
                f.wait_until_ready(),
                g.wait_until_ready(),
                h.wait_until_ready(),
            );
            if all.is_ok() {
                ready.send_replace(true);
            }
        }
    }
}

impl Drop for Caches {
    fn drop(&mut self) {
        for task in &self.tasks {
            task.abort();
        }
    }
}

fn owned<K: Clone + reflector::Lookup<DynamicType = ()> + 'static>(store: &Store<K>) -> Vec<K> {
    store.state().iter().map(|k| (**k).clone()).collect()
}

/// Starts a watcher and reflector of every `K` in the cluster (its task joins
/// `tasks`); its store.
fn watch_all<K>(
    client: &Client,
    changes: &watch::Sender<Changes>,
    bump: fn(&mut Changes),
    tasks: &mut Vec<JoinHandle<()>>,
) -> Store<K>
where
    K: Resource<DynamicType = ()> + Clone + DeserializeOwned + Debug + Send + Sync + 'static,
    K::DynamicType: Eq + Hash + Clone,
{
    let (reader, writer) = reflector::store::<K>();
    let stream = watcher(Api::<K>::all(client.clone()), watcher::Config::default())
        .default_backoff()
        .reflect(writer);
    let changes = changes.clone();
    let task = tokio::spawn(async move {
        let mut stream = std::pin::pin!(stream);
        while let Some(event) = stream.next().await {
            match event {
                Ok(watcher::Event::Apply(_) | watcher::Event::Delete(_) | watcher::Event::InitDone) => {
                    changes.send_modify(bump);
                }
                Ok(watcher::Event::Init | watcher::Event::InitApply(_)) => {}
                Err(e) => tracing::warn!(kind = %K::kind(&()), error = %e, "watch failed; retrying"),
            }
        }
    });
    tasks.push(task);
    reader
}
