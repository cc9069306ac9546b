//! The one call into [`crate::source`]: the cluster as the caches hold it →
//! the bundle's files and a verdict per resource, keeping each namespace's last
//! valid policy set across rebuilds.
//!
//! The controller runs it on every change, leader or not, so a follower that
//! takes over already knows each namespace's last valid set.

use palisade_policy::snapshot::SnapshotDigest;
use palisade_policy::BundleFiles;

pub use crate::source::Kind;
use crate::source::{self, BuildError, ClusterState, LastValid, Outcome as SourceOutcome, SourceOptions};

/// One resource, by kind, namespace and name.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct ResourceRef {
    pub kind: Kind,
    pub namespace: Option<String>,
    pub name: String,
}

impl std::fmt::Display for ResourceRef {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match &self.namespace {
            Some(ns) => write!(f, "{} {ns}/{}", self.kind, self.name),
            None => write!(f, "{} {}", self.kind, self.name),
        }
    }
}

/// What the build made of one resource.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Outcome {
    /// Valid and in the bundle.
    Accepted,
    /// Invalid: the validator's message, with the line and column in the resource.
    Invalid(String),
    /// Valid, but its namespace keeps its last valid policies (the message says why).
    Held(String),
}

/// A resource's outcome, for the `metadata.generation` it was built from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Verdict {
    pub resource: ResourceRef,
    pub generation: Option<i64>,
    pub outcome: Outcome,
}

/// A built bundle.
#[derive(Debug, Clone)]
pub struct Rebuilt {
    /// The canonical files: what is published.
    pub files: BundleFiles,
    pub digest: SnapshotDigest,
    /// Its trust domain (the MeshConfig's).
    pub trust_domain: palisade_ca::TrustDomain,
    pub verdicts: Vec<Verdict>,
    /// What was left out or changed, for the log.
    pub notes: Vec<String>,
}

/// No bundle could be built.
#[derive(Debug, thiserror::Error)]
pub enum RebuildError {
    #[error(transparent)]
    Build(#[from] BuildError),
    #[error("the bundle build task failed")]
    TaskFailed,
}

/// Builds bundles, remembering each namespace's last valid policies.
#[derive(Debug, Default)]
pub struct Rebuilder {
    last_valid: LastValid,
    options: SourceOptions,
}

impl Rebuilder {
    pub fn new(options: SourceOptions) -> Self {
        Self {
            last_valid: LastValid::default(),
            options,
        }
    }

    /// Builds the bundle of `state` (off the async runtime: validation is CPU work).
    ///
    /// # Errors
    ///
    /// When no bundle can be built at all (no `MeshConfig`, an invalid one, or
    /// problems no resource can be blamed for): nothing is to be published.
    pub async fn rebuild(&mut self, state: ClusterState) -> Result<Rebuilt, RebuildError> {
        let last_valid = self.last_valid.clone();
        let options = self.options.clone();
        let built = tokio::task::spawn_blocking(move || source::build(&state, &last_valid, &options))
            .await
            .map_err(|_| RebuildError::TaskFailed)??;
        self.last_valid = built.last_valid;
        let verdicts = built.verdicts.into_iter().map(verdict).collect();
        Ok(Rebuilt {
            trust_domain: built.bundle.mesh().trust_domain().clone(),
            files: built.files,
            digest: built.digest,
            verdicts,
            notes: built.notes,
        })
    }
}

fn verdict(v: source::Verdict) -> Verdict {
    let outcome = match v.outcome {
        SourceOutcome::Accepted => Outcome::Accepted,
        SourceOutcome::Invalid { message } => Outcome::Invalid(message),
        SourceOutcome::Held { message } => Outcome::Held(message),
    };
    Verdict {
        resource: ResourceRef {
            kind: v.kind,
            namespace: v.namespace,
            name: v.name,
        },
        generation: v.generation,
        outcome,
    }
}
