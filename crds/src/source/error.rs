//! Why no bundle could be built at all.

use palisade_policy::Diagnostics;

/// The cluster state gives no bundle: the controller publishes nothing new and
/// proxies keep their last snapshot (fail closed for a first one).
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum BuildError {
    /// No `MeshConfig` named `default`.
    #[error("there is no MeshConfig `default`, so the mesh has no trust domain; create it (`kubectl apply` one named `default`)")]
    NoMeshConfig,

    /// The `MeshConfig` is invalid (its verdict is this message).
    #[error("MeshConfig `default` is invalid: {message}")]
    InvalidMeshConfig { message: String },

    /// Diagnostics no single resource could be blamed for (or blaming did not
    /// make the bundle valid).
    #[error("the cluster's resources do not make a valid bundle and no single resource could be left out to fix it; the last bundle stays:\n{0}")]
    Invalid(Diagnostics),

    /// A bundle file could not be rendered as YAML.
    #[error("cannot render `{file}`: {reason}; please report it")]
    Render { file: &'static str, reason: String },
}
