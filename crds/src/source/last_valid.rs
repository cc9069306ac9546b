//! The last policy set of each namespace that loaded: what a namespace keeps
//! enforcing while one of its policies is invalid.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

/// Each namespace's last valid policy files (bundle path → text).
///
/// [`build`](super::build) reads it and returns it updated; the controller keeps
/// it between builds (it may persist it: it serializes). A namespace absent from
/// it has no valid set yet, and an invalid policy there leaves it with no policy
/// at all, which denies every call to and from it.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct LastValid {
    namespaces: BTreeMap<String, BTreeMap<String, String>>,
}

impl LastValid {
    /// No namespace has a valid set yet (a controller that just started).
    pub fn new() -> Self {
        Self::default()
    }

    /// The last valid files of `namespace` (path → text).
    pub fn files(&self, namespace: &str) -> Option<&BTreeMap<String, String>> {
        self.namespaces.get(namespace)
    }

    /// Every namespace with a last valid set, in order.
    pub fn namespaces(&self) -> impl Iterator<Item = &str> {
        self.namespaces.keys().map(String::as_str)
    }

    /// Records the set `namespace` loaded with; an empty set is forgotten (no
    /// policy is what an absent entry means too).
    pub(super) fn record(&mut self, namespace: &str, files: BTreeMap<String, String>) {
        if files.is_empty() {
            self.namespaces.remove(namespace);
        } else {
            self.namespaces.insert(namespace.to_owned(), files);
        }
    }
}
