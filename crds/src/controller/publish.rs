//! Where each built bundle goes: pushed to the control plane (`--control-plane
//! ADDR`, [`Publisher::Push`]), or written as a directory it reads (`--bundle-out
//! DIR`, [`DirPublisher`]).
//!
//! **Push.** The bundle's files go to the control plane's `BundleSource.Publish`
//! over mutual TLS, as the controller's SVID; the control plane loads them with the
//! same loader and answers with its version. A failed push is retried by the
//! reconciler with backoff. Every reconcile pushes, even an unchanged bundle (the
//! control plane answers "unchanged"), so a control plane that restarted gets its
//! bundle back by the next resync at the latest.
//!
//! **Directory.**
//! Each version is written whole into its own hidden directory,
//! `DIR/.bundle-<first 16 hex digits of its digest>` (through a temporary
//! directory renamed into place), and then the symbolic link `DIR/current` is
//! swapped to it by an atomic rename. A reader that resolves `DIR/current` once
//! sees one complete version, never a mix: run the control plane with
//! `palisade control-plane serve --bundle DIR/current`. The version before is
//! kept (a reader may still be in it); older ones are removed. A reader slow
//! enough to still be in one of those could see part of it, so the control plane
//! refuses a version whose files do not give the digest in its name. Nothing is
//! written when the digest is the one already published.

use std::io;
use std::path::{Path, PathBuf};

use palisade_policy::distribute::{push, PushError, PushParams};
use palisade_policy::snapshot::SnapshotDigest;
use palisade_policy::BundleFiles;

/// The link to the published version.
pub const CURRENT: &str = "current";
// The prefix of version directories (the control plane checks a version's
// files against the digest its name gives, so a version read while it is
// removed is refused, never loaded in part).
use palisade_policy::distribute::{version_name, VERSION_PREFIX};
/// The prefix of directories and links being written.
const TEMP_PREFIX: &str = ".tmp-";

/// A published version.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Published {
    pub digest: SnapshotDigest,
    /// When it was published (RFC 3339).
    pub at: String,
}

/// The bundle directory could not be written.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum PublishError {
    #[error("cannot write the policy bundle at `{}`: {source}; check that the directory exists and is writable", path.display())]
    Io { path: PathBuf, source: io::Error },
    #[error("the bundle writing task failed")]
    TaskFailed,
    #[error(transparent)]
    Push(#[from] PushError),
}

/// Publishes into one directory.
#[derive(Debug)]
pub struct DirPublisher {
    dir: PathBuf,
    current: Option<Published>,
}

impl DirPublisher {
    /// Creates `dir` if needed and learns what `dir/current` holds, so that a
    /// restarted controller does not publish the same bundle again.
    ///
    /// # Errors
    ///
    /// When `dir` cannot be created.
    pub fn open(dir: impl Into<PathBuf>) -> Result<Self, PublishError> {
        let dir = dir.into();
        std::fs::create_dir_all(&dir).map_err(io_at(&dir))?;
        let current = read_published(&dir.join(CURRENT));
        Ok(Self { dir, current })
    }

    /// The version `dir/current` holds, if any.
    pub fn current(&self) -> Option<&Published> {
        self.current.as_ref()
    }

    /// Publishes `files` (whose digest is `digest`) unless it is already current.
    ///
    /// # Errors
    ///
    /// When the files or the link cannot be written; `current` is then unchanged.
    pub async fn publish(&mut self, files: &BundleFiles, digest: SnapshotDigest) -> Result<Published, PublishError> {
        if let Some(current) = self.current.as_ref().filter(|c| c.digest == digest) {
            return Ok(current.clone());
        }
        let dir = self.dir.clone();
        let files = files.clone();
        let published = tokio::task::spawn_blocking(move || write_version(&dir, &files, digest))
            .await
            .map_err(|_| PublishError::TaskFailed)??;
        tracing::info!(digest = %published.digest, dir = %self.dir.display(), "published a new policy bundle");
        self.current = Some(published.clone());
        Ok(published)
    }
}

/// Writes `files` as a version of `dir` and points `dir/current` at it.
fn write_version(dir: &Path, files: &BundleFiles, digest: SnapshotDigest) -> Result<Published, PublishError> {
    let name = version_name(digest);
    let target = dir.join(&name);
    if read_published(&target).is_none_or(|p| p.digest != digest) {
        remove_if_present(&target)?;
        let temp = dir.join(format!("{TEMP_PREFIX}{name}"));
        remove_if_present(&temp)?;
        write_files(&temp, files)?;
        std::fs::rename(&temp, &target).map_err(io_at(&target))?;
    }
    let link = dir.join(CURRENT);
    let previous = std::fs::read_link(&link).ok();
    let temp_link = dir.join(format!("{TEMP_PREFIX}{CURRENT}"));
    remove_if_present(&temp_link)?;
    std::os::unix::fs::symlink(&name, &temp_link).map_err(io_at(&temp_link))?;
    std::fs::rename(&temp_link, &link).map_err(io_at(&link))?;
    prune(dir, &name, previous.as_deref())?;
    Ok(Published {
        digest,
        at: super::time::now(),
    })
}

fn write_files(root: &Path, files: &BundleFiles) -> Result<(), PublishError> {
    std::fs::create_dir_all(root).map_err(io_at(root))?;
    for (relative, text) in files.iter() {
        let path = root.join(relative);
        if let Some(parent) = path.parent() {
            std::fs::create_dir_all(parent).map_err(io_at(parent))?;
        }
        std::fs::write(&path, text).map_err(io_at(&path))?;
    }
    Ok(())
}

/// Removes every version but `keep` and `previous`, and leftovers of interrupted writes.
fn prune(dir: &Path, keep: &str, previous: Option<&Path>) -> Result<(), PublishError> {
    let previous = previous.and_then(Path::to_str);
    for entry in std::fs::read_dir(dir).map_err(io_at(dir))?.flatten() {
        let name = entry.file_name();
        let Some(name) = name.to_str() else { continue };
        let version = name.starts_with(VERSION_PREFIX) && name != keep && Some(name) != previous;
        if version || name.starts_with(TEMP_PREFIX) {
            remove_if_present(&entry.path())?;
        }
    }
    Ok(())
}

/// The digest and modification time of the bundle at `path`, if it reads.
fn read_published(path: &Path) -> Option<Published> {
    // Reading a missing directory gives an empty bundle, not an error.
    let modified = std::fs::metadata(path).and_then(|m| m.modified()).ok()?;
    let files = BundleFiles::read_dir(path).ok()?;
    Some(Published {
        digest: SnapshotDigest::of(&files),
        at: super::time::rfc3339(modified),
    })
}

fn remove_if_present(path: &Path) -> Result<(), PublishError> {
    let result = match std::fs::symlink_metadata(path) {
        Ok(meta) if meta.is_dir() => std::fs::remove_dir_all(path),
        Ok(_) => std::fs::remove_file(path),
        Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(()),
        Err(e) => Err(e),
    };
    result.map_err(io_at(path))
}

fn io_at(path: &Path) -> impl FnOnce(io::Error) -> PublishError + '_ {
    move |source| PublishError::Io {
        path: path.to_path_buf(),
        source,
    }
}

/// Publishes each built bundle, one way or the other.
#[derive(Debug)]
pub enum Publisher {
    /// `--bundle-out DIR`.
    Dir(DirPublisher),
    /// `--control-plane ADDR`.
    Push {
        params: PushParams,
        current: Option<Published>,
    },
}

impl Publisher {
    /// The version published last, if any.
    pub fn current(&self) -> Option<&Published> {
        match self {
            Self::Dir(dir) => dir.current(),
            Self::Push { current, .. } => current.as_ref(),
        }
    }

    /// Publishes `files` (whose digest is `digest`) unless it is already current.
    ///
    /// # Errors
    ///
    /// Writing the directory or the push failed; `current` is then unchanged.
    pub async fn publish(&mut self, files: &BundleFiles, digest: SnapshotDigest) -> Result<Published, PublishError> {
        match self {
            Self::Dir(dir) => dir.publish(files, digest).await,
            Self::Push { params, current } => {
                // Pushed even when unchanged (the control plane answers so): a
                // control plane that restarted waits for its bundle, and gets it at
                // the next reconcile, a change or the resync.
                let pushed = push(params, files).await?;
                tracing::info!(
                    version = pushed.version,
                    digest = %pushed.digest,
                    changed = pushed.changed,
                    addr = %params.addr,
                    "pushed the policy bundle to the control plane"
                );
                // The same bundle keeps its first publication time, so statuses
                // (which name it) are not rewritten at every reconcile.
                if let Some(same) = current.as_ref().filter(|c| c.digest == digest) {
                    return Ok(same.clone());
                }
                let published = Published {
                    digest,
                    at: super::time::now(),
                };
                *current = Some(published.clone());
                Ok(published)
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A directory under the system's temp dir, removed on drop.
    struct TempDir(PathBuf);

    impl TempDir {
        fn new(name: &str) -> Self {
            let nanos = std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .unwrap()
                .as_nanos();
            let dir = std::env::temp_dir().join(format!("palisade-{name}-{}-{nanos}", std::process::id()));
            std::fs::create_dir_all(&dir).unwrap();
            Self(dir)
        }
    }

    impl Drop for TempDir {
        fn drop(&mut self) {
            let _ = std::fs::remove_dir_all(&self.0);
        }
    }

    fn bundle(trust_domain: &str) -> (BundleFiles, SnapshotDigest) {
        let mut files = BundleFiles::new();
        files.insert("mesh.yaml", format!("trustDomain: {trust_domain}\n"));
        files.insert("policies/web/egress/a.cedar", "// nothing\n");
        let digest = SnapshotDigest::of(&files);
        (files, digest)
    }

    fn versions(dir: &Path) -> Vec<String> {
        let mut names: Vec<String> = std::fs::read_dir(dir)
            .unwrap()
            .map(|e| e.unwrap().file_name().into_string().unwrap())
            .filter(|n| n.starts_with(VERSION_PREFIX))
            .collect();
        names.sort();
        names
    }

    #[test]
    fn a_directory_with_nothing_published_has_no_current_version() {
        let tmp = TempDir::new("publish-empty");
        assert_eq!(DirPublisher::open(&tmp.0).unwrap().current(), None);
    }

    #[tokio::test]
    async fn current_points_at_a_complete_version_and_the_one_before_is_kept() {
        let tmp = TempDir::new("publish");
        let mut publisher = DirPublisher::open(&tmp.0).unwrap();
        for td in ["one.test", "two.test", "three.test"] {
            let (files, digest) = bundle(td);
            let published = publisher.publish(&files, digest).await.unwrap();
            assert_eq!(published.digest, digest);
            let read = BundleFiles::read_dir(tmp.0.join(CURRENT)).unwrap();
            assert_eq!(read, files, "current holds exactly the published files");
        }
        let link = std::fs::read_link(tmp.0.join(CURRENT)).unwrap();
        assert!(link.is_relative(), "the link survives moving the directory: {link:?}");
        assert_eq!(
            versions(&tmp.0).len(),
            2,
            "only the current and the previous version are kept"
        );
    }

    #[tokio::test]
    async fn an_unchanged_bundle_writes_nothing_even_after_a_restart() {
        let tmp = TempDir::new("publish-same");
        let (files, digest) = bundle("same.test");
        let first = DirPublisher::open(&tmp.0)
            .unwrap()
            .publish(&files, digest)
            .await
            .unwrap();
        let modified = std::fs::symlink_metadata(tmp.0.join(CURRENT))
            .unwrap()
            .modified()
            .unwrap();

        let mut restarted = DirPublisher::open(&tmp.0).unwrap();
        assert_eq!(restarted.current().map(|p| p.digest), Some(digest));
        let again = restarted.publish(&files, digest).await.unwrap();
        assert_eq!(again.digest, first.digest);
        let after = std::fs::symlink_metadata(tmp.0.join(CURRENT))
            .unwrap()
            .modified()
            .unwrap();
        assert_eq!(modified, after, "the link was not rewritten");
        assert_eq!(versions(&tmp.0).len(), 1);
    }

    #[tokio::test]
    async fn going_back_to_an_earlier_bundle_reuses_its_directory() {
        let tmp = TempDir::new("publish-back");
        let mut publisher = DirPublisher::open(&tmp.0).unwrap();
        let (a, a_digest) = bundle("a.test");
        let (b, b_digest) = bundle("b.test");
        publisher.publish(&a, a_digest).await.unwrap();
        publisher.publish(&b, b_digest).await.unwrap();
        publisher.publish(&a, a_digest).await.unwrap();
        assert_eq!(BundleFiles::read_dir(tmp.0.join(CURRENT)).unwrap(), a);
        assert_eq!(versions(&tmp.0).len(), 2);
    }
}
