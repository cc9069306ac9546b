//! The reconcile loop: wait for a change, the leadership, a retry or the
//! resync; then rebuild and publish the bundle and write statuses, and/or make
//! the CA's revocations match the `CertificateRevocation`s.
//!
//! The two tasks are independent: a CA that is away delays revocations only,
//! and an invalid cluster state delays nothing at the CA. Each is retried with
//! its own backoff when it fails.

use std::future::Future;
use std::sync::Arc;

use kube::runtime::reflector::{Lookup, ObjectRef, Store};
use kube::ResourceExt;
use tokio::sync::watch;
use tokio::time::Instant;

use super::backoff::Backoff;
use super::publish::{Published, Publisher};
use super::rebuild::{Kind, RebuildError, Rebuilder, Verdict};
use super::revocations::{revocation_status, Revoker};
use super::status::{bundle_status, invalid_status, StatusWriter, WithStatus};
use super::watch::{Caches, Changes};
use super::{Options, Params, Progress};
use crate::source::{BuildError, SourceOptions};
use crate::webhook::ReviewContext;

/// A task that is due now, or later after a failure.
#[derive(Debug)]
struct Task {
    due: bool,
    retry_at: Option<Instant>,
    backoff: Backoff,
}

impl Task {
    fn new(options: &Options) -> Self {
        Self {
            due: true,
            retry_at: None,
            backoff: Backoff::new(options.backoff),
        }
    }

    /// Whether to run it now (and it is no longer due).
    fn take(&mut self) -> bool {
        std::mem::replace(&mut self.due, false)
    }

    fn done(&mut self, result: Result<(), String>, what: &str) {
        match result {
            Ok(()) => {
                self.backoff.succeeded();
                self.retry_at = None;
            }
            Err(e) => {
                let delay = self.backoff.failed();
                tracing::warn!(error = %e, retry_in = ?delay, "{what} failed; retrying");
                self.retry_at = Some(Instant::now() + delay);
            }
        }
    }
}

/// The controller's state between reconciles.
#[derive(Debug)]
pub struct Reconciler {
    rebuilder: Rebuilder,
    publisher: Publisher,
    statuses: StatusWriter,
    revoker: Revoker,
    options: Options,
    bundle: Task,
    revocations: Task,
    notes: Vec<String>,
    progress: watch::Sender<Progress>,
    review: Option<watch::Sender<ReviewContext>>,
}

impl Reconciler {
    pub fn new(params: &Params, source: SourceOptions, publisher: Publisher) -> Self {
        Self {
            rebuilder: Rebuilder::new(source),
            publisher,
            statuses: StatusWriter::new(params.client.clone()),
            revoker: Revoker::new(params.ca.clone()),
            options: params.options.clone(),
            bundle: Task::new(&params.options),
            revocations: Task::new(&params.options),
            notes: Vec::new(),
            progress: params
                .progress
                .clone()
                .unwrap_or_else(|| watch::Sender::new(Progress::default())),
            review: params.review.clone(),
        }
    }

    /// Reconciles until `shutdown`, once every cache has listed.
    pub async fn run(
        mut self,
        caches: &Caches,
        mut leading: watch::Receiver<bool>,
        shutdown: impl Future<Output = ()>,
    ) {
        let mut shutdown = std::pin::pin!(shutdown);
        let mut changes = caches.changes();
        let mut ready = caches.ready();
        tokio::select! {
            _ = ready.wait_for(|ready| *ready) => {}
            () = &mut shutdown => return,
        }
        let mut seen = *changes.borrow_and_update();
        let mut resync = tokio::time::interval_at(Instant::now() + self.options.resync, self.options.resync);
        loop {
            self.work(caches, &leading).await;
            let retry = [self.bundle.retry_at, self.revocations.retry_at]
                .into_iter()
                .flatten()
                .min();
            tokio::select! {
                () = &mut shutdown => return,
                changed = changes.changed() => {
                    if changed.is_err() {
                        return;
                    }
                    tokio::time::sleep(self.options.debounce).await;
                    let now = *changes.borrow_and_update();
                    self.changed(seen, now);
                    seen = now;
                }
                changed = leading.changed() => {
                    if changed.is_err() {
                        return;
                    }
                    if *leading.borrow_and_update() {
                        self.bundle.due = true;
                        self.revocations.due = true;
                    }
                }
                () = sleep_until(retry) => {
                    let now = Instant::now();
                    for task in [&mut self.bundle, &mut self.revocations] {
                        task.due |= task.retry_at.is_some_and(|at| at <= now);
                    }
                }
                _ = resync.tick() => {
                    self.bundle.due = true;
                    self.revocations.due = true;
                }
            }
        }
    }

    fn changed(&mut self, before: Changes, now: Changes) {
        self.bundle.due |= now.bundle != before.bundle;
        self.revocations.due |= now.revocations != before.revocations;
    }

    async fn work(&mut self, caches: &Caches, leading: &watch::Receiver<bool>) {
        let leads = *leading.borrow();
        self.progress
            .send_if_modified(|p| std::mem::replace(&mut p.leading, leads) != leads);
        if self.bundle.take() {
            let result = fenced(leading, self.reconcile_bundle(caches, leading)).await;
            self.report(&result, |p| p.bundle_reconciles = p.bundle_reconciles.wrapping_add(1));
            self.bundle.done(result, "reconciling the policy bundle");
        }
        if self.revocations.take() && *leading.borrow() {
            let result = fenced(leading, self.reconcile_revocations(caches, leading)).await;
            self.report(&result, |p| {
                p.revocation_reconciles = p.revocation_reconciles.wrapping_add(1)
            });
            self.revocations.done(result, "reconciling CertificateRevocations");
        }
    }

    fn report(&self, result: &Result<(), String>, count: impl FnOnce(&mut Progress)) {
        let published = self.publisher.current().map(|p| p.digest.to_string());
        self.progress.send_modify(|p| {
            count(p);
            p.published = published;
            p.last_error = result.as_ref().err().cloned();
        });
    }

    /// Rebuilds (leader or not, to keep the last valid sets warm); the leader
    /// also publishes and writes statuses.
    async fn reconcile_bundle(&mut self, caches: &Caches, leading: &watch::Receiver<bool>) -> Result<(), String> {
        let built = match self.rebuilder.rebuild(caches.cluster_state()).await {
            Ok(built) => built,
            Err(RebuildError::Build(BuildError::InvalidMeshConfig { message })) => {
                tracing::warn!(error = %message, "the MeshConfig is invalid; the last bundle published stays");
                let leads = *leading.borrow();
                if !leads {
                    return Ok(());
                }
                return self
                    .write_mesh_invalid(caches, &message)
                    .await
                    .map_err(|e| e.to_string());
            }
            Err(RebuildError::Build(e)) => {
                // Nothing to retry: the next change of the cluster may fix it.
                tracing::warn!(error = %e, "no policy bundle to publish; the last one published stays");
                return Ok(());
            }
            Err(e) => return Err(e.to_string()),
        };
        if let Some(review) = &self.review {
            let context = ReviewContext::new(built.trust_domain.clone());
            review.send_replace(context.with_files(Arc::new(built.files.clone())));
        }
        if built.notes != self.notes {
            for note in &built.notes {
                // Debug-quoted: a note may carry annotation text, which may hold newlines.
                tracing::info!(note = ?note, "building the policy bundle");
            }
            self.notes.clone_from(&built.notes);
        }
        if !*leading.borrow() {
            return Ok(());
        }
        let published = self
            .publisher
            .publish(&built.files, built.digest)
            .await
            .map_err(|e| e.to_string())?;
        self.write_statuses(caches, &built.verdicts, &published, leading).await
    }

    async fn write_statuses(
        &mut self,
        caches: &Caches,
        verdicts: &[Verdict],
        published: &Published,
        leading: &watch::Receiver<bool>,
    ) -> Result<(), String> {
        let now = super::time::now();
        let mut failed = 0_usize;
        for verdict in verdicts {
            if !*leading.borrow() {
                return Ok(());
            }
            let result = match verdict.resource.kind {
                Kind::CedarPolicy => {
                    self.write_bundle_status(caches.policies(), verdict, published, &now)
                        .await
                }
                Kind::EgressAllowlist => {
                    self.write_bundle_status(caches.allowlists(), verdict, published, &now)
                        .await
                }
                Kind::MeshConfig => {
                    self.write_bundle_status(caches.meshes(), verdict, published, &now)
                        .await
                }
            };
            if let Err(e) = result {
                tracing::warn!(resource = %verdict.resource, error = %e, "cannot write the status");
                failed += 1;
            }
        }
        match failed {
            0 => Ok(()),
            n => Err(format!("{n} status writes failed")),
        }
    }

    /// Writes one verdict's status, unless the resource changed or went away
    /// since the build (the rebuild its change triggers covers it).
    async fn write_bundle_status<K: WithStatus + Lookup<DynamicType = ()>>(
        &mut self,
        store: &Store<K>,
        verdict: &Verdict,
        published: &Published,
        now: &str,
    ) -> Result<(), kube::Error> {
        let mut reference = ObjectRef::<K>::new(&verdict.resource.name);
        if let Some(ns) = &verdict.resource.namespace {
            reference = reference.within(ns);
        }
        let Some(object) = store.get(&reference) else {
            return Ok(());
        };
        if object.meta().generation != verdict.generation {
            return Ok(());
        }
        let desired = bundle_status(object.status(), verdict, published, now);
        self.statuses.write(&*object, desired).await.map(|_| ())
    }

    /// Marks the MeshConfig `default` Invalid with `message`.
    async fn write_mesh_invalid(&mut self, caches: &Caches, message: &str) -> Result<(), kube::Error> {
        let Some(mesh) = caches.meshes().get(&ObjectRef::new("default")) else {
            return Ok(());
        };
        let now = super::time::now();
        let desired = invalid_status(mesh.status(), Kind::MeshConfig, mesh.metadata.generation, message, &now);
        self.statuses.write(&*mesh, desired).await.map(|_| ())
    }

    async fn reconcile_revocations(&mut self, caches: &Caches, leading: &watch::Receiver<bool>) -> Result<(), String> {
        let resources = caches.revocations();
        let reconciled = self.revoker.reconcile(&resources).await;
        let now = super::time::now();
        let mut failed = 0_usize;
        for resource in &resources {
            let Some(found) = reconciled.found.get(&resource.name_any()) else {
                continue;
            };
            if !*leading.borrow() {
                return Ok(());
            }
            let desired = revocation_status(resource.status.as_ref(), resource.metadata.generation, found, &now);
            if let Err(e) = self.statuses.write(resource, desired).await {
                tracing::warn!(name = %resource.name_any(), error = %e, "cannot write a CertificateRevocation's status");
                failed += 1;
            }
        }
        match (reconciled.error, failed) {
            (Some(e), _) => Err(format!("the CA: {e}")),
            (None, 0) => Ok(()),
            (None, n) => Err(format!("{n} status writes failed")),
        }
    }
}

/// Runs `work`, and when this replica leads as it starts, cancels it the moment
/// it stops: a write still in flight (a status, a push, a call to the CA) is
/// dropped then. A leader stops leading `renew_deadline` before its Lease can
/// expire, so what it had under way is gone before another replica may take
/// over and write.
async fn fenced(
    leading: &watch::Receiver<bool>,
    work: impl std::future::Future<Output = Result<(), String>>,
) -> Result<(), String> {
    if !*leading.borrow() {
        return work.await;
    }
    let mut lost = leading.clone();
    tokio::select! {
        result = work => result,
        _ = lost.wait_for(|leads| !*leads) => {
            tracing::info!("stopped leading: the writes under way are cancelled");
            Ok(())
        }
    }
}

/// Sleeps until `at`, or forever.
async fn sleep_until(at: Option<Instant>) {
    match at {
        Some(at) => tokio::time::sleep_until(at).await,
        None => std::future::pending().await,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn a_leaders_work_is_cancelled_when_it_stops_leading() {
        let leading = watch::Sender::new(true);
        let receiver = leading.subscribe();
        let hung = fenced(&receiver, std::future::pending());
        let lose = async {
            tokio::task::yield_now().await;
            leading.send_replace(false);
        };
        let (result, ()) = tokio::join!(hung, lose);
        assert_eq!(result, Ok(()), "the hung write is dropped, not waited for");
    }

    #[tokio::test]
    async fn a_followers_work_runs_to_its_end() {
        let leading = watch::Sender::new(false);
        let receiver = leading.subscribe();
        let result = fenced(&receiver, async { Err::<(), _>("done".to_owned()) }).await;
        assert_eq!(result, Err("done".to_owned()));
    }
}
