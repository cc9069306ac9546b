//! The bundle directory, watched: each valid change becomes the next published
//! version; an invalid one is reported and changes nothing.
//!
//! The directory is read once per attempt into [`BundleFiles`], and that exact set
//! is validated and, when valid, published: no file is read again between the
//! check and the distribution. Changes are noticed by `notify` (debounced, so an
//! editor's burst of writes is one attempt) and, as a fallback for events it
//! misses (editors that replace files by renaming, network file systems), by
//! polling.

use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use notify::{EventKind, RecommendedWatcher, RecursiveMode, Watcher};
use tokio::sync::{mpsc, watch};

use super::publisher::Publisher;
use tokio::task::JoinHandle;

use crate::bundle::{load_canonical, load_with_files, Bundle, BundleFiles, Digest};
use crate::error::{Diagnostic, Diagnostics, Problem};
use crate::snapshot::SnapshotDigest;

/// A valid bundle as the control plane serves it.
#[derive(Debug)]
pub struct Published {
    /// 1 for the bundle read at start, one more for each change published since.
    pub version: u64,
    /// The exact files that were validated, and that proxies are sent parts of.
    pub files: BundleFiles,
    /// The digest of `files`.
    pub digest: SnapshotDigest,
    /// `files`, loaded.
    pub bundle: Bundle,
}

impl Published {
    /// Version 1 of `files` (canonical, as [`crate::load_canonical`] gives them)
    /// and their bundle.
    pub fn first(files: BundleFiles, bundle: Bundle) -> Self {
        Self {
            version: 1,
            digest: SnapshotDigest::of(&files),
            files,
            bundle,
        }
    }

    /// Version 0: what a control plane holds while it waits for its first bundle
    /// (pushed by the Kubernetes controller). It is never sent: a proxy keeps the
    /// snapshot it has (a new one has none and denies everything) until version 1.
    pub fn awaiting(files: BundleFiles, bundle: Bundle) -> Self {
        Self {
            version: 0,
            ..Self::first(files, bundle)
        }
    }
}

/// One attempt to load the bundle directory, for the policy audit trail.
#[derive(Debug, Clone)]
#[non_exhaustive]
pub enum PolicyEvent {
    /// A valid, changed bundle was published as `version`.
    Accepted {
        version: u64,
        /// The digest of its files.
        digest: SnapshotDigest,
        /// The digest of what it means ([`Bundle::digest`]).
        bundle_digest: Digest,
    },
    /// A changed bundle was invalid: nothing was published, the last version stays.
    Rejected {
        /// Every problem found; `Display` renders them like rustc.
        diagnostics: Diagnostics,
    },
}

/// Where the bundle is and how often to look.
#[derive(Debug, Clone)]
pub struct WatchParams {
    /// The bundle directory.
    pub dir: PathBuf,
    /// How long to wait after a change event for more of them before reading.
    pub debounce: Duration,
    /// How often to read the directory even without an event.
    pub poll: Duration,
}

impl WatchParams {
    /// Watches `dir` with a 100 ms debounce and a 2 s poll.
    pub fn new(dir: impl Into<PathBuf>) -> Self {
        Self {
            dir: dir.into(),
            debounce: Duration::from_millis(100),
            poll: Duration::from_secs(2),
        }
    }
}

/// A running watch: the published bundles, and the task that publishes them. The
/// task ends when every receiver is dropped.
#[derive(Debug)]
pub struct BundleWatch {
    /// The current published bundle, updated on each new version.
    pub published: watch::Receiver<Arc<Published>>,
    pub task: JoinHandle<()>,
}

/// Loads the bundle in `params.dir` and watches it. Every attempt that saw a
/// change (the first load included) is reported to `on_event`, once: a bundle
/// that stays invalid is not reported again on each poll.
///
/// # Errors
///
/// The problems of the bundle when it is invalid at start: the control plane
/// should not start without a valid policy.
pub async fn watch_bundle(
    params: WatchParams,
    on_event: impl FnMut(&PolicyEvent) + Send + 'static,
) -> Result<BundleWatch, Diagnostics> {
    let (files, bundle) = attempt(params.dir.clone()).await?;
    let first = Published::first(files, bundle);
    tracing::info!(version = 1, digest = %first.digest, dir = %params.dir.display(), "policy bundle loaded");
    let (publisher, published) = Publisher::new(first, on_event);
    let watcher = Watch { params, publisher };
    let task = tokio::spawn(watcher.run());
    Ok(BundleWatch { published, task })
}

/// The state of the watch task.
struct Watch {
    params: WatchParams,
    publisher: Publisher,
}

impl Watch {
    async fn run(mut self) {
        let (changes, mut changed) = mpsc::channel(1);
        let _watcher = self.notify(changes.clone());
        let mut poll = tokio::time::interval(self.params.poll);
        poll.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        poll.tick().await;
        loop {
            tokio::select! {
                () = self.publisher.closed() => return,
                _ = changed.recv() => {
                    tokio::time::sleep(self.params.debounce).await;
                    while changed.try_recv().is_ok() {}
                }
                _ = poll.tick() => {}
            }
            self.reload().await;
        }
    }

    /// Starts `notify` on the directory; `None` (polling only) when it cannot.
    fn notify(&self, changes: mpsc::Sender<()>) -> Option<RecommendedWatcher> {
        let handler = move |event: notify::Result<notify::Event>| {
            // Reading the files makes access events: they change nothing.
            if !matches!(
                event,
                Ok(notify::Event {
                    kind: EventKind::Access(_),
                    ..
                })
            ) {
                let _ = changes.try_send(());
            }
        };
        let started = notify::recommended_watcher(handler).and_then(|mut watcher| {
            watcher.watch(&self.params.dir, RecursiveMode::Recursive)?;
            Ok(watcher)
        });
        match started {
            Ok(watcher) => Some(watcher),
            Err(e) => {
                let dir = self.params.dir.display();
                tracing::warn!(error = %e, %dir, "cannot watch the bundle directory for changes; polling it only");
                None
            }
        }
    }

    /// Reads and checks the directory; publishes the next version when the bundle
    /// is valid and changed.
    async fn reload(&mut self) {
        let result = attempt(self.params.dir.clone()).await;
        let shown = self.params.dir.display().to_string();
        self.publisher.offer(result, &shown);
    }
}

/// The prefix of the version directories `palisade controller run --bundle-out`
/// writes.
pub const VERSION_PREFIX: &str = ".bundle-";

/// The directory name of the version whose canonical files have `digest`:
/// [`VERSION_PREFIX`] and the first 16 hex digits of the digest.
pub fn version_name(digest: crate::snapshot::SnapshotDigest) -> String {
    let hex: String = digest.as_bytes().iter().take(8).map(|b| format!("{b:02x}")).collect();
    format!("{VERSION_PREFIX}{hex}")
}

/// When `dir` is a version directory, that its files give the digest its name
/// says.
fn check_version_name(dir: &std::path::Path, canonical: &BundleFiles) -> Result<(), Diagnostics> {
    let name = dir.file_name().and_then(|n| n.to_str()).unwrap_or_default();
    if !name.starts_with(VERSION_PREFIX) || name == version_name(crate::snapshot::SnapshotDigest::of(canonical)) {
        return Ok(());
    }
    let problem = Problem::Internal("the bundle version changed while it was read (its files do not give the digest its name says); it is read again at the next change");
    Err(vec![Diagnostic::new(problem)].into())
}

/// Reads and loads the directory off the async runtime.
///
/// A symbolic link (`DIR/current`, swapped by `palisade controller run
/// --bundle-out DIR`) is resolved once, so one attempt reads one version. What is
/// published is the [`crate::bundle::canonical`] form.
///
/// The controller names each version `.bundle-` and the first 16 hex digits of
/// the digest of its canonical files, and removes old versions. A reader slow
/// enough to be in a version while it is removed could read only part of it (a
/// policy set without its `forbid`), so a version whose files do not give the
/// digest its name says is refused, and read again at the next change.
async fn attempt(dir: PathBuf) -> Result<(BundleFiles, Bundle), Diagnostics> {
    let read = move || {
        let dir = std::fs::canonicalize(&dir).unwrap_or(dir);
        let (files, _) = load_with_files(&dir)?;
        let (canonical, bundle) = load_canonical(&files)?;
        check_version_name(&dir, &canonical)?;
        Ok((canonical, bundle))
    };
    match tokio::task::spawn_blocking(read).await {
        Ok(result) => result,
        Err(_) => Err(vec![Diagnostic::new(Problem::Internal("the bundle loading task failed"))].into()),
    }
}

#[cfg(test)]
mod version_tests {
    use super::*;

    const MESH: &str = "trustDomain: shop.example\n";

    fn version(root: &std::path::Path, name: &str) -> PathBuf {
        let dir = root.join(name);
        std::fs::create_dir_all(&dir).unwrap();
        std::fs::write(dir.join("mesh.yaml"), MESH).unwrap();
        dir
    }

    #[tokio::test]
    async fn a_version_read_whole_loads_and_one_read_in_part_is_refused() {
        let root = tempfile::tempdir().unwrap();
        let (canonical, _) =
            load_canonical(&BundleFiles::from_iter([("mesh.yaml".to_owned(), MESH.to_owned())])).unwrap();
        let digest = crate::snapshot::SnapshotDigest::of(&canonical);
        let whole = version(root.path(), &version_name(digest));
        assert!(attempt(whole).await.is_ok());
        // A version named for other files: what a reader sees of a version being removed.
        let partial = version(root.path(), &format!("{VERSION_PREFIX}0123456789abcdef"));
        let error = attempt(partial).await.unwrap_err().to_string();
        assert!(error.contains("changed while it was read"), "{error}");
        // Any other directory is read as it is.
        assert!(attempt(version(root.path(), "plain")).await.is_ok());
    }
}
