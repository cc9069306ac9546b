//! The resources the fake API server serves: the ones the controller reads and
//! writes, and nothing else (anything else is a 404, as on a cluster without
//! that API).

/// One resource type, as its API paths and objects name it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Kind {
    /// The API group; empty for the core group (`/api/v1`).
    pub group: &'static str,
    pub version: &'static str,
    /// The path segment: `pods`, `cedarpolicies`, ….
    pub plural: &'static str,
    /// The object's `kind`.
    pub kind: &'static str,
    /// Whether objects live in a namespace.
    pub namespaced: bool,
    /// Whether `.status` is a subresource (written through `/status` only).
    pub status_subresource: bool,
}

impl Kind {
    /// `v1` or `GROUP/VERSION`.
    pub fn api_version(&self) -> String {
        match self.group {
            "" => self.version.to_owned(),
            group => format!("{group}/{}", self.version),
        }
    }
}

const fn kind(
    group: &'static str,
    version: &'static str,
    plural: &'static str,
    kind: &'static str,
    namespaced: bool,
    status_subresource: bool,
) -> Kind {
    Kind {
        group,
        version,
        plural,
        kind,
        namespaced,
        status_subresource,
    }
}

/// Every resource served.
pub const KINDS: [Kind; 9] = [
    kind("", "v1", "pods", "Pod", true, true),
    kind("", "v1", "namespaces", "Namespace", false, false),
    kind("", "v1", "services", "Service", true, true),
    kind("discovery.k8s.io", "v1", "endpointslices", "EndpointSlice", true, false),
    kind("coordination.k8s.io", "v1", "leases", "Lease", true, false),
    kind("palisade.dev", "v1alpha1", "cedarpolicies", "CedarPolicy", true, true),
    kind(
        "palisade.dev",
        "v1alpha1",
        "egressallowlists",
        "EgressAllowlist",
        true,
        true,
    ),
    kind("palisade.dev", "v1alpha1", "meshconfigs", "MeshConfig", false, true),
    kind(
        "palisade.dev",
        "v1alpha1",
        "certificaterevocations",
        "CertificateRevocation",
        false,
        true,
    ),
];

/// The served resource of a path's group, version and plural.
pub fn by_path(group: &str, version: &str, plural: &str) -> Option<&'static Kind> {
    KINDS
        .iter()
        .find(|k| k.group == group && k.version == version && k.plural == plural)
}

/// The served resource of an object's `apiVersion` and `kind`.
pub fn by_object(api_version: &str, kind: &str) -> Option<&'static Kind> {
    KINDS.iter().find(|k| k.kind == kind && k.api_version() == api_version)
}
