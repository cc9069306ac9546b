//! Snapshots: the versioned files one proxy receives, and the only way a proxy
//! turns what it received into a [`Bundle`].
//!
//! A [`Snapshot`] is a version, a set of [`BundleFiles`] and a [`SnapshotDigest`]
//! over those files. The control plane makes one per proxy with [`for_workload`]
//! (what that workload's sidecar needs to decide, and nothing of other namespaces'
//! private policies) and [`Snapshot::new`]. A proxy gets a [`Bundle`] out of a
//! received snapshot only through [`Snapshot::load`], which recomputes the digest
//! and then runs the full loader ([`crate::load_files`]): a corrupt or invalid
//! snapshot is refused with a clear error and changes nothing.

use std::collections::BTreeSet;
use std::fmt;
use std::str::FromStr;

use ring::digest::{Context, SHA256};

use palisade_ca::SpiffeId;

use crate::bundle::{load_files, Bundle, BundleFiles};
use crate::egress::EgressEntry;
use crate::error::Diagnostics;
use crate::registry::Workload;

/// A SHA-256 digest of a snapshot's files, shown as `sha256:` and 64 lower-case
/// hex digits.
///
/// It covers every (path, text) pair in path order, each length-prefixed (so no
/// two sets of files share an encoding), and nothing else: not the version, not
/// where the files came from. Unlike the bundle's [`crate::Digest`], which covers
/// what a bundle means, it covers the exact text sent.
#[derive(Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct SnapshotDigest([u8; 32]);

impl SnapshotDigest {
    /// The digest of `files`.
    pub fn of(files: &BundleFiles) -> Self {
        let mut context = Context::new(&SHA256);
        let mut write = |bytes: &[u8]| {
            context.update(&u64::try_from(bytes.len()).unwrap_or(u64::MAX).to_be_bytes());
            context.update(bytes);
        };
        write(b"palisade-snapshot-v1");
        write(&u64::try_from(files.len()).unwrap_or(u64::MAX).to_be_bytes());
        for (path, text) in files.iter() {
            write(path.as_bytes());
            write(text.as_bytes());
        }
        let mut bytes = [0; 32];
        bytes.copy_from_slice(context.finish().as_ref());
        Self(bytes)
    }

    /// The 32 bytes.
    pub fn as_bytes(&self) -> &[u8; 32] {
        &self.0
    }
}

impl fmt::Display for SnapshotDigest {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("sha256:")?;
        self.0.iter().try_for_each(|b| write!(f, "{b:02x}"))
    }
}

impl fmt::Debug for SnapshotDigest {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Display::fmt(self, f)
    }
}

impl FromStr for SnapshotDigest {
    type Err = SnapshotError;

    /// `sha256:` and exactly 64 lower-case hex digits.
    fn from_str(s: &str) -> Result<Self, SnapshotError> {
        let invalid = || SnapshotError::InvalidDigest { digest: shorten(s) };
        let hex = s.strip_prefix("sha256:").ok_or_else(invalid)?;
        if hex.len() != 64 {
            return Err(invalid());
        }
        let mut bytes = [0u8; 32];
        for (byte, pair) in bytes.iter_mut().zip(hex.as_bytes().chunks(2)) {
            let digit = |c: u8| match c {
                b'0'..=b'9' => Some(c - b'0'),
                b'a'..=b'f' => Some(c - b'a' + 10),
                _ => None,
            };
            let [high, low] = pair else { return Err(invalid()) };
            *byte = (digit(*high).ok_or_else(invalid)? << 4) | digit(*low).ok_or_else(invalid)?;
        }
        Ok(Self(bytes))
    }
}

/// A received snapshot that cannot be used. Nothing is applied then.
#[derive(Debug, Clone, thiserror::Error)]
#[non_exhaustive]
pub enum SnapshotError {
    /// The digest is not `sha256:` and 64 lower-case hex digits.
    #[error("the snapshot's digest `{digest}` is not `sha256:` and 64 lower-case hex digits; the control plane sent a malformed snapshot")]
    InvalidDigest { digest: String },

    /// The same path twice.
    #[error("the snapshot holds `{path}` twice; the control plane sent a malformed snapshot")]
    DuplicatePath { path: String },

    /// The files do not match the digest sent with them.
    #[error("the snapshot's files have digest `{computed}`, not the `{claimed}` sent with them; it was corrupted on the way, and the last good policy stays")]
    DigestMismatch {
        claimed: SnapshotDigest,
        computed: SnapshotDigest,
    },

    /// The files are not a valid bundle.
    #[error(
        "the snapshot is not a valid bundle, and the last good policy stays; fix the bundle on the control plane:\n{0}"
    )]
    Invalid(Diagnostics),
}

/// One version of the files one proxy enforces.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Snapshot {
    version: u64,
    files: BundleFiles,
    digest: SnapshotDigest,
}

impl Snapshot {
    /// A snapshot of `files` at `version`, its digest computed.
    pub fn new(version: u64, files: BundleFiles) -> Self {
        let digest = SnapshotDigest::of(&files);
        Self { version, files, digest }
    }

    /// A snapshot as received: the digest as sent, checked only by [`Snapshot::load`].
    ///
    /// # Errors
    ///
    /// A digest that does not parse, or a path given twice.
    pub fn received(
        version: u64,
        digest: &str,
        files: impl IntoIterator<Item = (String, String)>,
    ) -> Result<Self, SnapshotError> {
        let digest = digest.parse()?;
        let mut set = BundleFiles::new();
        for (path, text) in files {
            if set.contains(&path) {
                return Err(SnapshotError::DuplicatePath { path: shorten(&path) });
            }
            set.insert(path, text);
        }
        Ok(Self {
            version,
            files: set,
            digest,
        })
    }

    /// The version: the control plane's bundle version it was made from.
    pub fn version(&self) -> u64 {
        self.version
    }

    /// The files.
    pub fn files(&self) -> &BundleFiles {
        &self.files
    }

    /// The digest, as made or as received.
    pub fn digest(&self) -> SnapshotDigest {
        self.digest
    }

    /// The bundle of this snapshot, after checking the digest and every rule of
    /// the loader.
    ///
    /// # Errors
    ///
    /// The files do not match the digest, or are not a valid bundle.
    pub fn load(&self) -> Result<Bundle, SnapshotError> {
        let computed = SnapshotDigest::of(&self.files);
        if computed != self.digest {
            return Err(SnapshotError::DigestMismatch {
                claimed: self.digest,
                computed,
            });
        }
        load_files(&self.files).map_err(SnapshotError::Invalid)
    }
}

/// What the sidecar of workload `id` receives of a bundle: `files` are the files
/// `bundle` was loaded from.
///
/// - `mesh.yaml`, `workloads.yaml` and `services.yaml`, whole: any workload may
///   call this one, so its ingress check needs every caller's labels; it may call
///   any service, so its routing and secure naming need every service.
/// - Its **egress** policies: `policies/<its namespace>/egress/*`.
/// - The **ingress** policies of every namespace owning a service it serves (its
///   SPIFFE ID is in the service's `servedBy`): `policies/<NS>/ingress/*`.
/// - `egress.yaml` reduced to the rules whose workload selector matches it, and
///   no `egress.yaml` when none does.
///
/// Policies are picked by path, which the namespace rule makes sufficient: a
/// namespace's policies never reach outside that namespace, so no policy left
/// out could apply to this workload's decisions. A workload the registry does
/// not list gets the mesh settings and the registry and no policy: it denies
/// everything. The result is itself a valid bundle.
pub fn for_workload(files: &BundleFiles, bundle: &Bundle, id: &SpiffeId) -> BundleFiles {
    let mut out = BundleFiles::new();
    for name in ["mesh.yaml", "workloads.yaml", "services.yaml"] {
        if let Some(text) = files.get(name) {
            out.insert(name, text);
        }
    }
    let Some(workload) = bundle.registry().workload(id.as_str()) else {
        return out;
    };
    let mut directories = BTreeSet::from([format!("policies/{}/egress/", workload.namespace())]);
    let served = bundle.registry().services().iter();
    directories.extend(
        served
            .filter(|service| service.served_by().contains(id))
            .map(|service| format!("policies/{}/ingress/", service.namespace())),
    );
    for (path, text) in files.iter() {
        let in_directory = |dir: &String| path.strip_prefix(dir.as_str()).is_some_and(|name| !name.contains('/'));
        if directories.iter().any(in_directory) {
            out.insert(path, text);
        }
    }
    if let Some(egress) = egress_for(files, bundle, workload) {
        out.insert("egress.yaml", egress);
    }
    out
}

/// The entries of `egress.yaml` that apply to `workload`, as YAML; `None` when
/// none does (or, failing closed, when the files do not match the bundle).
fn egress_for(files: &BundleFiles, bundle: &Bundle, workload: &Workload) -> Option<String> {
    let rules = bundle.egress().rules();
    if rules.is_empty() {
        return None;
    }
    let entries: Vec<EgressEntry> = serde_yaml_ng::from_str(files.get("egress.yaml")?).ok()?;
    if entries.len() != rules.len() {
        return None;
    }
    let matching: Vec<&EgressEntry> = (entries.iter().zip(rules))
        .filter(|(_, rule)| rule.workloads().matches(workload))
        .map(|(entry, _)| entry)
        .collect();
    if matching.is_empty() {
        return None;
    }
    serde_yaml_ng::to_string(&matching).ok()
}

/// At most 200 characters of untrusted text, for an error message.
fn shorten(s: &str) -> String {
    match s.char_indices().nth(200) {
        Some((end, _)) => format!("{}…", s.get(..end).unwrap_or_default()),
        None => s.to_owned(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn files(pairs: &[(&str, &str)]) -> BundleFiles {
        pairs.iter().map(|(p, t)| ((*p).to_owned(), (*t).to_owned())).collect()
    }

    #[test]
    fn the_digest_is_length_prefixed_so_moving_a_boundary_changes_it() {
        let a = SnapshotDigest::of(&files(&[("ab", "c")]));
        let b = SnapshotDigest::of(&files(&[("a", "bc")]));
        assert_ne!(a, b);
        assert_eq!(a, SnapshotDigest::of(&files(&[("ab", "c")])));
    }

    #[test]
    fn a_digest_round_trips_through_its_text_and_nothing_else_parses() {
        let digest = SnapshotDigest::of(&files(&[("mesh.yaml", "trustDomain: a\n")]));
        assert_eq!(digest.to_string().parse::<SnapshotDigest>().unwrap(), digest);
        let upper = digest.to_string().to_uppercase().replace("SHA256", "sha256");
        for bad in [
            "",
            "sha256:",
            "sha1:00",
            "sha256:zz",
            upper.as_str(),
            &format!("{digest}0"),
        ] {
            assert!(bad.parse::<SnapshotDigest>().is_err(), "{bad}");
        }
    }

    #[test]
    fn a_received_snapshot_refuses_a_path_given_twice() {
        let digest = SnapshotDigest::of(&BundleFiles::new()).to_string();
        let twice = [("a".to_owned(), "1".to_owned()), ("a".to_owned(), "2".to_owned())];
        let error = Snapshot::received(1, &digest, twice).unwrap_err();
        assert!(matches!(error, SnapshotError::DuplicatePath { .. }), "{error}");
    }
}
