//! What [`build`](super::build) says of each Palisade resource: what the
//! controller writes into its `Accepted` condition.

use std::fmt;

/// A Palisade resource kind that gets a verdict.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Kind {
    /// `MeshConfig` (cluster-scoped).
    MeshConfig,
    /// `CedarPolicy`.
    CedarPolicy,
    /// `EgressAllowlist`.
    EgressAllowlist,
}

impl Kind {
    /// The Kubernetes kind.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::MeshConfig => "MeshConfig",
            Self::CedarPolicy => "CedarPolicy",
            Self::EgressAllowlist => "EgressAllowlist",
        }
    }
}

impl fmt::Display for Kind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// One resource and what became of it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Verdict {
    pub kind: Kind,
    /// `None` for cluster-scoped resources.
    pub namespace: Option<String>,
    pub name: String,
    /// The `metadata.generation` the verdict is about.
    pub generation: Option<i64>,
    pub outcome: Outcome,
}

/// What became of a resource.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Outcome {
    /// Valid, and in the bundle.
    Accepted,
    /// Not valid: left out of the bundle. `message` is the validator's, as the CLI
    /// prints it, naming the resource and the line and column inside it.
    Invalid { message: String },
    /// Valid itself, but not in effect: another policy of its namespace is
    /// invalid, so the namespace keeps its last valid policy set (never a partial
    /// one). `message` says which.
    Held { message: String },
}

impl Outcome {
    /// Whether the resource is valid (`Accepted=True`): accepted or held.
    pub fn is_valid(&self) -> bool {
        !matches!(self, Self::Invalid { .. })
    }

    /// The message, empty for [`Outcome::Accepted`].
    pub fn message(&self) -> &str {
        match self {
            Self::Accepted => "",
            Self::Invalid { message } | Self::Held { message } => message,
        }
    }
}
