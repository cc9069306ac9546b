//! A bundle as a set of files: read from a directory once, or held in memory.
//!
//! [`BundleFiles`] is what the loader validates and what the control plane
//! distributes, so the two never differ: the directory is read once, and that exact
//! set is both checked and sent. [`BundleFiles::read_dir`] reads only the files the
//! layout has a place for and reports every other entry, and [`check`] applies the
//! same layout rule to an in-memory set (a snapshot received from the network), so
//! either way a bundle holds nothing but `mesh.yaml`, `workloads.yaml`,
//! `services.yaml`, `egress.yaml` and `policies/NS/{egress,ingress}/*.cedar`.
//!
//! Sizes are capped ([`MAX_FILE_BYTES`], [`MAX_FILES`], [`MAX_TOTAL_BYTES`]): going
//! over is a diagnostic, never an unbounded read.

use std::collections::{BTreeMap, BTreeSet};
use std::io::Read;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use palisade_authz::Direction;

use crate::error::{Diagnostic, Diagnostics, Problem};
use crate::field::is_dns_label;

/// The largest file a bundle may hold, in bytes (4 MiB).
pub const MAX_FILE_BYTES: usize = 4 << 20;
/// The most files a bundle may hold.
pub const MAX_FILES: usize = 10_000;
/// The most bytes all files of a bundle may hold together (64 MiB).
pub const MAX_TOTAL_BYTES: usize = 64 << 20;

/// The YAML files at the top of a bundle.
pub(crate) const YAML_FILES: [&str; 4] = ["mesh.yaml", "workloads.yaml", "services.yaml", "egress.yaml"];

const TOP_HINT: &str =
    "a bundle holds only `mesh.yaml`, `workloads.yaml`, `services.yaml`, `egress.yaml` and `policies/`";
const POLICIES_HINT: &str = "`policies/` holds one directory per namespace";
const NAMESPACE_HINT: &str = "a namespace directory holds only `egress/` and `ingress/`";
const CEDAR_HINT: &str = "policy files end in `.cedar`; move or rename it";

/// The files of a bundle: relative path (with `/` separators) to text, in path
/// order. It may hold anything; [`crate::load_files`] accepts it only when it has
/// the layout of a bundle and every file in it is valid.
#[derive(Debug, Clone, Default, PartialEq, Eq, Hash)]
pub struct BundleFiles(BTreeMap<String, String>);

impl BundleFiles {
    /// No files.
    pub fn new() -> Self {
        Self::default()
    }

    /// Reads the bundle in `dir`: exactly the files the layout has a place for.
    ///
    /// # Errors
    ///
    /// Every entry with no place in the layout (hidden ones, `.name`, are
    /// skipped), every file that cannot be read or is not UTF-8, and going over
    /// the size limits. The content of the files is not checked here: that is
    /// [`crate::load_files`].
    pub fn read_dir(dir: impl AsRef<Path>) -> Result<Self, Diagnostics> {
        let read = read(dir.as_ref());
        match read.diagnostics.is_empty() {
            true => Ok(read.files),
            false => Err(read.diagnostics),
        }
    }

    /// Adds or replaces a file; the text it replaced.
    pub fn insert(&mut self, path: impl Into<String>, text: impl Into<String>) -> Option<String> {
        self.0.insert(path.into(), text.into())
    }

    /// Removes a file; its text.
    pub fn remove(&mut self, path: &str) -> Option<String> {
        self.0.remove(path)
    }

    /// The text of `path`.
    pub fn get(&self, path: &str) -> Option<&str> {
        self.0.get(path).map(String::as_str)
    }

    /// Whether it holds `path`.
    pub fn contains(&self, path: &str) -> bool {
        self.0.contains_key(path)
    }

    /// Every file as (path, text), in path order.
    pub fn iter(&self) -> impl ExactSizeIterator<Item = (&str, &str)> + '_ {
        self.0.iter().map(|(path, text)| (path.as_str(), text.as_str()))
    }

    /// Every path, in order.
    pub fn paths(&self) -> impl ExactSizeIterator<Item = &str> + '_ {
        self.0.keys().map(String::as_str)
    }

    /// How many files it holds.
    pub fn len(&self) -> usize {
        self.0.len()
    }

    /// Whether it holds no file.
    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }

    /// The bytes of all texts together.
    pub fn total_bytes(&self) -> usize {
        self.0.values().map(String::len).sum()
    }
}

impl From<BTreeMap<String, String>> for BundleFiles {
    fn from(files: BTreeMap<String, String>) -> Self {
        Self(files)
    }
}

impl FromIterator<(String, String)> for BundleFiles {
    fn from_iter<I: IntoIterator<Item = (String, String)>>(iter: I) -> Self {
        Self(iter.into_iter().collect())
    }
}

/// How paths are shown in diagnostics: joined to the directory a bundle was read
/// from, or as they are for a bundle from memory.
#[derive(Debug, Clone, Default)]
pub(crate) struct Shown(Option<PathBuf>);

impl Shown {
    pub(crate) fn under(dir: &Path) -> Self {
        Self(Some(dir.to_path_buf()))
    }

    pub(crate) fn path(&self, relative: &str) -> Arc<str> {
        match &self.0 {
            Some(dir) => dir.join(relative).display().to_string().into(),
            None => relative.into(),
        }
    }
}

/// What reading a directory gave: the files, every problem, and the files that
/// exist but could not be read (so that the loader does not call them missing).
#[derive(Debug, Default)]
pub(crate) struct DirRead {
    pub(crate) files: BundleFiles,
    pub(crate) diagnostics: Diagnostics,
    pub(crate) unreadable: BTreeSet<String>,
}

/// Reads every file of the layout under `dir`, reporting everything else.
pub(crate) fn read(dir: &Path) -> DirRead {
    let mut walk = Walk {
        dir,
        shown: Shown::under(dir),
        out: DirRead::default(),
        total: 0,
        full: false,
    };
    for name in YAML_FILES {
        if dir.join(name).exists() {
            walk.file(name);
        }
    }
    if dir.join("policies").exists() {
        walk.policies();
    }
    walk.out
}

/// The state of one walk over a bundle directory.
struct Walk<'a> {
    dir: &'a Path,
    shown: Shown,
    out: DirRead,
    total: usize,
    /// A limit was reached: nothing more is read.
    full: bool,
}

impl Walk<'_> {
    /// `policies/`: one directory per namespace.
    fn policies(&mut self) {
        for namespace in self.entries("policies") {
            let relative = format!("policies/{}", namespace.name);
            if !namespace.is_dir {
                self.unexpected(&relative, "file", POLICIES_HINT);
            } else if !is_dns_label(&namespace.name) {
                self.invalid_namespace(&namespace.name);
            } else {
                self.namespace(&relative);
            }
        }
    }

    /// `policies/NS/`: its `egress/` and `ingress/` directories of `.cedar` files.
    fn namespace(&mut self, namespace: &str) {
        for entry in self.entries(namespace) {
            let relative = format!("{namespace}/{}", entry.name);
            if !entry.is_dir || direction(&entry.name).is_none() {
                self.unexpected(&relative, kind(entry.is_dir), NAMESPACE_HINT);
                continue;
            }
            for file in self.entries(&relative) {
                let path = format!("{relative}/{}", file.name);
                if file.is_dir || !is_policy_file(&file.name) {
                    self.unexpected(&path, kind(file.is_dir), CEDAR_HINT);
                } else {
                    self.file(&path);
                }
            }
        }
    }

    /// Reads one file, within the limits.
    fn file(&mut self, relative: &str) {
        if self.full {
            return;
        }
        if self.out.files.len() >= MAX_FILES {
            self.full = true;
            self.push(Diagnostic::new(Problem::TooManyFiles { limit: MAX_FILES }));
            return;
        }
        match read_capped(&self.dir.join(relative)) {
            Ok(text) if self.total.saturating_add(text.len()) > MAX_TOTAL_BYTES => {
                self.full = true;
                self.push(Diagnostic::new(Problem::BundleTooLarge { limit: MAX_TOTAL_BYTES }));
            }
            Ok(text) => {
                self.total += text.len();
                self.out.files.insert(relative, text);
            }
            Err(problem) => {
                self.out.unreadable.insert(relative.to_owned());
                self.push(Diagnostic::in_file(problem, self.shown.path(relative)));
            }
        }
    }

    /// The entries of `relative` in name order, hidden ones (`.name`) left out.
    fn entries(&mut self, relative: &str) -> Vec<Entry> {
        let read = match std::fs::read_dir(self.dir.join(relative)) {
            Ok(read) => read,
            Err(error) => {
                self.read_error(relative, &error);
                return Vec::new();
            }
        };
        let mut entries = Vec::new();
        for entry in read {
            let entry = match entry {
                Ok(entry) => entry,
                Err(error) => {
                    self.read_error(relative, &error);
                    continue;
                }
            };
            let Ok(name) = entry.file_name().into_string() else {
                let hint = "name files and directories in UTF-8";
                self.unexpected(relative, "entry with a non-UTF-8 name in", hint);
                continue;
            };
            if !name.starts_with('.') {
                let is_dir = entry.path().is_dir();
                entries.push(Entry { name, is_dir });
            }
        }
        entries.sort_by(|a, b| a.name.cmp(&b.name));
        entries
    }

    fn read_error(&mut self, relative: &str, error: &std::io::Error) {
        let problem = Problem::Read {
            reason: error.to_string(),
        };
        self.push(Diagnostic::in_file(problem, self.shown.path(relative)));
    }

    fn unexpected(&mut self, relative: &str, what: &str, hint: &'static str) {
        self.push(unexpected(&self.shown, relative, what, hint));
    }

    fn invalid_namespace(&mut self, name: &str) {
        self.push(invalid_namespace(&self.shown, name));
    }

    fn push(&mut self, diagnostic: Diagnostic) {
        self.out.diagnostics.push(diagnostic);
    }
}

/// One entry of a directory.
struct Entry {
    name: String,
    is_dir: bool,
}

/// Reads a UTF-8 file of at most [`MAX_FILE_BYTES`], never more than that into memory.
pub(crate) fn read_capped(path: &Path) -> Result<String, Problem> {
    let read_error = |error: std::io::Error| Problem::Read {
        reason: error.to_string(),
    };
    let file = std::fs::File::open(path).map_err(read_error)?;
    let limit = u64::try_from(MAX_FILE_BYTES).unwrap_or(u64::MAX);
    let mut bytes = Vec::new();
    file.take(limit.saturating_add(1))
        .read_to_end(&mut bytes)
        .map_err(read_error)?;
    if bytes.len() > MAX_FILE_BYTES {
        return Err(Problem::FileTooLarge { limit: MAX_FILE_BYTES });
    }
    String::from_utf8(bytes).map_err(|_| Problem::Read {
        reason: "it is not UTF-8 text".into(),
    })
}

/// The files of an in-memory bundle, placed in the layout: the policy files by
/// namespace, direction (egress first) and name. Every path with no place in
/// the layout, and going over the limits, is reported.
pub(crate) fn check<'a>(files: &'a BundleFiles, shown: &Shown, diagnostics: &mut Diagnostics) -> Layout<'a> {
    if files.len() > MAX_FILES {
        diagnostics.push(Diagnostic::new(Problem::TooManyFiles { limit: MAX_FILES }));
    }
    if files.total_bytes() > MAX_TOTAL_BYTES {
        diagnostics.push(Diagnostic::new(Problem::BundleTooLarge { limit: MAX_TOTAL_BYTES }));
    }
    let mut layout = Layout::default();
    let mut reported = BTreeSet::new();
    for (path, text) in files.iter() {
        if text.len() > MAX_FILE_BYTES {
            let problem = Problem::FileTooLarge { limit: MAX_FILE_BYTES };
            diagnostics.push(Diagnostic::in_file(problem, shown.path(path)));
            continue;
        }
        match place(path) {
            Ok(Place::Yaml) => {}
            Ok(Place::Policy { namespace, direction }) => {
                let index = usize::from(direction == Direction::Ingress);
                let by_direction = layout.policies.entry(namespace).or_default();
                if let Some(paths) = by_direction.get_mut(index) {
                    paths.push(path);
                }
            }
            Err(misplaced) => {
                if reported.insert(misplaced.at.clone()) {
                    diagnostics.push(misplaced.diagnostic(shown));
                }
            }
        }
    }
    layout
}

/// The policy files of a bundle, in the order the loader reads them.
#[derive(Debug, Default)]
pub(crate) struct Layout<'a> {
    /// Namespace → [egress paths, ingress paths], each in name order.
    pub(crate) policies: BTreeMap<&'a str, [Vec<&'a str>; 2]>,
}

/// Where a path belongs in the layout.
enum Place<'a> {
    Yaml,
    Policy { namespace: &'a str, direction: Direction },
}

/// A path with no place in the layout: the entry to report and why.
struct Misplaced {
    /// The first entry of the path that has no place (a file or a directory).
    at: String,
    what: Option<&'static str>,
    hint: &'static str,
}

impl Misplaced {
    fn diagnostic(&self, shown: &Shown) -> Diagnostic {
        match self.what {
            Some(what) => unexpected(shown, &self.at, what, self.hint),
            None => {
                let namespace = self.at.strip_prefix("policies/").unwrap_or(&self.at);
                invalid_namespace(shown, namespace)
            }
        }
    }
}

/// Places `path` in the layout; the same rules [`read`] walks a directory by.
fn place(path: &str) -> Result<Place<'_>, Misplaced> {
    let segments: Vec<&str> = path.split('/').collect();
    let misplaced = |depth: usize, hint| {
        let at = segments.get(..depth).unwrap_or(&segments).join("/");
        Err(Misplaced {
            at,
            what: Some(kind(depth < segments.len())),
            hint,
        })
    };
    match segments.as_slice() {
        [name] if YAML_FILES.contains(name) => Ok(Place::Yaml),
        ["policies", namespace, ..] if !is_dns_label(namespace) && segments.len() > 2 => Err(Misplaced {
            at: format!("policies/{namespace}"),
            what: None,
            hint: POLICIES_HINT,
        }),
        ["policies", _, dir, ..] if direction(dir).is_none() || segments.len() == 3 => misplaced(3, NAMESPACE_HINT),
        ["policies", namespace, dir, file] if is_policy_file(file) => Ok(Place::Policy {
            namespace,
            direction: direction(dir).unwrap_or(Direction::Egress),
        }),
        ["policies", _, _, _, ..] => misplaced(4, CEDAR_HINT),
        ["policies", ..] => misplaced(2, POLICIES_HINT),
        _ => misplaced(1, TOP_HINT),
    }
}

/// `egress` or `ingress`.
fn direction(name: &str) -> Option<Direction> {
    match name {
        "egress" => Some(Direction::Egress),
        "ingress" => Some(Direction::Ingress),
        _ => None,
    }
}

/// `NAME.cedar`, not hidden.
fn is_policy_file(name: &str) -> bool {
    name.strip_suffix(".cedar").is_some_and(|stem| !stem.is_empty()) && !name.starts_with('.')
}

fn kind(is_dir: bool) -> &'static str {
    if is_dir {
        "directory"
    } else {
        "file"
    }
}

fn unexpected(shown: &Shown, relative: &str, what: &str, hint: &'static str) -> Diagnostic {
    let what = format!("{what} `{relative}`");
    Diagnostic::in_file(Problem::UnexpectedEntry { what, hint }, shown.path(relative))
}

fn invalid_namespace(shown: &Shown, name: &str) -> Diagnostic {
    let problem = Problem::InvalidName {
        what: "namespace",
        name: name.to_owned(),
    };
    Diagnostic::in_file(problem, shown.path(&format!("policies/{name}")))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn problems(paths: &[&str]) -> Vec<String> {
        let files: BundleFiles = paths.iter().map(|p| ((*p).to_owned(), String::new())).collect();
        let mut diagnostics = Diagnostics::default();
        check(&files, &Shown::default(), &mut diagnostics);
        diagnostics.iter().map(|d| d.problem().to_string()).collect()
    }

    #[test]
    fn the_layout_has_a_place_for_the_yaml_files_and_the_policy_files() {
        let ok = [
            "mesh.yaml",
            "workloads.yaml",
            "services.yaml",
            "egress.yaml",
            "policies/web/egress/a.cedar",
            "policies/web/ingress/b.cedar",
        ];
        assert_eq!(problems(&ok), Vec::<String>::new());
    }

    #[test]
    fn a_path_with_no_place_is_named_at_its_first_misplaced_entry() {
        let cases = [
            ("README.md", "unexpected file `README.md`"),
            ("tests/a.yaml", "unexpected directory `tests`"),
            ("/mesh.yaml", "unexpected directory ``"),
            ("policies", "unexpected file `policies`"),
            ("policies/a.cedar", "unexpected file `policies/a.cedar`"),
            ("policies/Web/egress/a.cedar", "invalid namespace `Web`"),
            ("policies/../egress/a.cedar", "invalid namespace `..`"),
            ("policies/web/egress", "unexpected file `policies/web/egress`"),
            (
                "policies/web/inbound/a.cedar",
                "unexpected directory `policies/web/inbound`",
            ),
            (
                "policies/web/egress/a.txt",
                "unexpected file `policies/web/egress/a.txt`",
            ),
            (
                "policies/web/egress/.cedar",
                "unexpected file `policies/web/egress/.cedar`",
            ),
            (
                "policies/web/egress/x/a.cedar",
                "unexpected directory `policies/web/egress/x`",
            ),
            (
                "policies/web/egress//a.cedar",
                "unexpected directory `policies/web/egress/`",
            ),
        ];
        for (path, says) in cases {
            let found = problems(&[path]);
            assert_eq!(found.len(), 1, "{path}: {found:?}");
            assert!(found[0].starts_with(says), "{path}: {found:?}");
        }
    }

    #[test]
    fn a_misplaced_directory_is_reported_once() {
        let found = problems(&["policies/web/inbound/a.cedar", "policies/web/inbound/b.cedar"]);
        assert_eq!(found.len(), 1, "{found:?}");
    }

    #[test]
    fn policy_files_are_placed_by_namespace_then_direction_then_name() {
        let files: BundleFiles = [
            "policies/a-b/egress/x.cedar",
            "policies/a/ingress/y.cedar",
            "policies/a/egress/z.cedar",
        ]
        .iter()
        .map(|p| ((*p).to_owned(), String::new()))
        .collect();
        let layout = check(&files, &Shown::default(), &mut Diagnostics::default());
        let order: Vec<&str> = layout.policies.values().flatten().flatten().copied().collect();
        assert_eq!(
            order,
            [
                "policies/a/egress/z.cedar",
                "policies/a/ingress/y.cedar",
                "policies/a-b/egress/x.cedar"
            ]
        );
    }

    #[test]
    fn oversized_files_and_bundles_are_diagnostics() {
        let mut files = BundleFiles::new();
        files.insert("mesh.yaml", "x".repeat(MAX_FILE_BYTES + 1));
        let mut diagnostics = Diagnostics::default();
        check(&files, &Shown::default(), &mut diagnostics);
        assert!(diagnostics.to_string().contains("over the limit"), "{diagnostics}");

        let many: BundleFiles = (0..=MAX_FILES)
            .map(|i| (format!("policies/web/egress/{i}.cedar"), String::new()))
            .collect();
        let mut diagnostics = Diagnostics::default();
        check(&many, &Shown::default(), &mut diagnostics);
        assert!(
            diagnostics.to_string().contains("more than 10000 files"),
            "{diagnostics}"
        );
    }

    #[test]
    fn reading_a_directory_caps_each_file() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("mesh.yaml"), "#".repeat(MAX_FILE_BYTES + 1)).unwrap();
        let errors = BundleFiles::read_dir(dir.path()).unwrap_err();
        assert!(errors.to_string().contains("over the limit"), "{errors}");
    }
}
