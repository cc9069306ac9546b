//! Reading the bundle's YAML files, with a location for every error.
//!
//! Syntax errors, unknown fields and values of the wrong type come from
//! `serde_yaml_ng` with their position; they stop the file they are in (what
//! follows cannot be trusted). Everything checked after parsing (a bad SPIFFE ID,
//! a port out of range, a duplicate) is found on the typed value and located by
//! its [`Path`] in the document: [`SourceFile::yaml_diagnostic`] parses the text
//! again, walking down that path only, and stops at the node with an error that
//! `serde_yaml_ng` marks with the node's position. That costs nothing when the
//! bundle is valid. A bundle's list files (`workloads.yaml`, `services.yaml`,
//! `egress.yaml`) are top-level block sequences: for them the entries' starts
//! are found once, and each error parses only its own entry, so a file with
//! thousands of bad entries costs a few passes over it, not one per error.

use std::collections::BTreeMap;
use std::fmt;

use serde::de::{self, DeserializeOwned, DeserializeSeed, IgnoredAny, MapAccess, SeqAccess, Visitor};
use serde::Deserializer;

use palisade_authz::SourceLocation;

use crate::error::{Diagnostic, Problem};
use crate::source::SourceFile;

/// One step from a node to one of its children.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Step<'a> {
    /// The value of a mapping's key.
    Key(&'a str),
    /// An element of a sequence.
    Index(usize),
}

/// Where a node is in a document: the steps from the root.
pub(crate) type Path<'a> = [Step<'a>];

impl SourceFile {
    /// Parses the file as a YAML document of type `T`; an empty document (or one
    /// holding only comments or `null`) is `T::default()`.
    pub(crate) fn parse_yaml<T: DeserializeOwned + Default>(&self) -> Result<T, Diagnostic> {
        match serde_yaml_ng::from_str::<Option<T>>(&self.text) {
            Ok(value) => Ok(value.unwrap_or_default()),
            Err(error) => Err(self.serde_diagnostic(&error)),
        }
    }

    /// A diagnostic pointing at the node at `path` (or, when the document has no
    /// such node, at its closest ancestor).
    pub(crate) fn yaml_diagnostic(&self, problem: Problem, path: &Path<'_>) -> Diagnostic {
        match self.yaml_position(path) {
            Some((line, column)) => self.diagnostic_at(problem, line, column, 1),
            None => self.file_diagnostic(problem),
        }
    }

    /// Where the node at `path` (or its closest ancestor) is; the start of the
    /// file when the document cannot be parsed.
    pub(crate) fn yaml_location(&self, path: &Path<'_>) -> SourceLocation {
        let (line, column) = self.yaml_position(path).unwrap_or((1, 1));
        SourceLocation {
            file: self.shown.clone(),
            line,
            column,
        }
    }

    fn yaml_position(&self, path: &Path<'_>) -> Option<(u32, u32)> {
        self.entry_position(path).or_else(|| {
            let located = Locate { path }.deserialize(serde_yaml_ng::Deserializer::from_str(&self.text));
            let location = located.err()?.location()?;
            Some((to_u32(location.line()), to_u32(location.column())))
        })
    }

    /// The position of `path` found by parsing only its entry, when the file is
    /// a top-level block sequence and `path` is inside an entry.
    fn entry_position(&self, path: &Path<'_>) -> Option<(u32, u32)> {
        let (Step::Index(index), rest) = path.split_first()? else {
            return None;
        };
        let starts = self.entries.get_or_init(|| entry_starts(&self.text)).as_ref()?;
        let (start, line) = *starts.get(*index)?;
        let end = starts
            .get(index.saturating_add(1))
            .map_or(self.text.len(), |(end, _)| *end);
        let entry = self.text.get(start..end)?;
        // The entry alone must be a list of exactly one element, or the starts
        // were wrong (a `- ` line inside a multi-line quoted scalar).
        let alone: Vec<IgnoredAny> = serde_yaml_ng::from_str(entry).ok()?;
        if alone.len() != 1 {
            return None;
        }
        let mut within = vec![Step::Index(0)];
        within.extend_from_slice(rest);
        position_in(entry, &within, line)
    }
}

/// The position of the node at `path` in `text` (or of its closest ancestor),
/// `first_line` lines down; `None` when `text` does not parse as far.
fn position_in(text: &str, path: &Path<'_>, first_line: usize) -> Option<(u32, u32)> {
    let located = Locate { path }.deserialize(serde_yaml_ng::Deserializer::from_str(text));
    let error = located.err()?;
    // Any other error (an alias to an anchor outside `text`, say) is not where
    // the node is.
    if !error.to_string().contains(LOCATING) {
        return None;
    }
    let location = error.location()?;
    Some((to_u32(location.line() + first_line), to_u32(location.column())))
}

/// Where each entry of a top-level block sequence starts: the lines that begin
/// with `-` and a blank. Trusted only when there are exactly as many as the
/// document has entries (a `-` line inside a block scalar, a flow sequence or a
/// mapping at the top: `None`, and every error parses the whole file).
fn entry_starts(text: &str) -> Option<Vec<(usize, usize)>> {
    // Line breaks other than `\n` (which YAML counts and `lines` would not), a
    // byte-order mark, or a list that does not start at the first content line
    // (indented, or after a mapping): the whole file, every time.
    if text.contains(['\r', '\u{85}', '\u{2028}', '\u{2029}', '\u{feff}']) {
        return None;
    }
    let mut starts = Vec::new();
    let mut offset = 0;
    for (line, content) in text.split_inclusive('\n').enumerate() {
        let rest = content.strip_prefix('-');
        if rest.is_some_and(|r| r.is_empty() || r.starts_with([' ', '\t', '\n'])) {
            starts.push((offset, line));
        } else if starts.is_empty() && !preamble(content) {
            return None;
        }
        offset += content.len();
    }
    let entries: Option<Vec<IgnoredAny>> = serde_yaml_ng::from_str(text).ok()?;
    (entries.map_or(0, |e| e.len()) == starts.len()).then_some(starts)
}

/// Whether `line` may come before a list's first entry: blank, a comment, a
/// directive or the document start.
fn preamble(line: &str) -> bool {
    let line = line.trim();
    line.is_empty() || line.starts_with('#') || line.starts_with('%') || line == "---"
}

/// What every error made while locating a node says.
const LOCATING: &str = "locating a node";

impl SourceFile {
    fn serde_diagnostic(&self, error: &serde_yaml_ng::Error) -> Diagnostic {
        let mut message = error.to_string();
        let Some(location) = error.location() else {
            return self.file_diagnostic(Problem::Yaml { message });
        };
        let (line, column) = (location.line(), location.column());
        let suffix = format!(" at line {line} column {column}");
        if let Some(at) = message.find(&suffix) {
            message.replace_range(at..at + suffix.len(), "");
        }
        let message = message
            .strip_prefix(".: ")
            .or_else(|| message.strip_prefix('.'))
            .unwrap_or(&message)
            .to_owned();
        self.diagnostic_at(Problem::Yaml { message }, to_u32(line), to_u32(column), 1)
    }
}

fn to_u32(n: usize) -> u32 {
    u32::try_from(n).unwrap_or(u32::MAX)
}

/// Walks down to the node at `path` and fails there, so that the error carries
/// the node's position. Fails at the deepest existing ancestor when a step is
/// missing.
struct Locate<'p, 'a> {
    path: &'p Path<'a>,
}

impl<'de> DeserializeSeed<'de> for Locate<'_, '_> {
    type Value = ();

    fn deserialize<D: Deserializer<'de>>(self, deserializer: D) -> Result<(), D::Error> {
        match self.path.split_first() {
            None => deserializer.deserialize_any(Found),
            Some((Step::Key(key), rest)) => deserializer.deserialize_map(InMap { key, rest }),
            Some((Step::Index(index), rest)) => deserializer.deserialize_seq(InSeq { index: *index, rest }),
        }
    }
}

/// The visitor at the target node: refuses whatever it is given.
struct Found;

impl Visitor<'_> for Found {
    type Value = ();

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "nothing ({LOCATING})")
    }
}

fn not_found<E: de::Error>() -> E {
    E::custom(LOCATING)
}

struct InMap<'p, 'a> {
    key: &'a str,
    rest: &'p Path<'a>,
}

impl<'de> Visitor<'de> for InMap<'_, '_> {
    type Value = ();

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("a mapping")
    }

    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<(), A::Error> {
        while let Some(key) = map.next_key::<KeyText>()? {
            if key.0.as_deref() == Some(self.key) {
                return map.next_value_seed(Locate { path: self.rest });
            }
            map.next_value::<IgnoredAny>()?;
        }
        Err(not_found())
    }
}

struct InSeq<'p, 'a> {
    index: usize,
    rest: &'p Path<'a>,
}

impl<'de> Visitor<'de> for InSeq<'_, '_> {
    type Value = ();

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("a sequence")
    }

    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<(), A::Error> {
        for _ in 0..self.index {
            if seq.next_element::<IgnoredAny>()?.is_none() {
                return Err(not_found());
            }
        }
        match seq.next_element_seed(Locate { path: self.rest })? {
            Some(()) => Ok(()),
            None => Err(not_found()),
        }
    }
}

/// A mapping key as text when it is a scalar, `None` when it is anything else.
struct KeyText(Option<String>);

impl<'de> de::Deserialize<'de> for KeyText {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        deserializer.deserialize_any(KeyTextVisitor)
    }
}

struct KeyTextVisitor;

impl<'de> Visitor<'de> for KeyTextVisitor {
    type Value = KeyText;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("a key")
    }

    fn visit_str<E: de::Error>(self, v: &str) -> Result<KeyText, E> {
        Ok(KeyText(Some(v.to_owned())))
    }

    fn visit_bool<E: de::Error>(self, v: bool) -> Result<KeyText, E> {
        Ok(KeyText(Some(v.to_string())))
    }

    fn visit_i64<E: de::Error>(self, v: i64) -> Result<KeyText, E> {
        Ok(KeyText(Some(v.to_string())))
    }

    fn visit_u64<E: de::Error>(self, v: u64) -> Result<KeyText, E> {
        Ok(KeyText(Some(v.to_string())))
    }

    fn visit_f64<E: de::Error>(self, v: f64) -> Result<KeyText, E> {
        Ok(KeyText(Some(v.to_string())))
    }

    fn visit_unit<E: de::Error>(self) -> Result<KeyText, E> {
        Ok(KeyText(None))
    }

    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<KeyText, A::Error> {
        while seq.next_element::<IgnoredAny>()?.is_some() {}
        Ok(KeyText(None))
    }

    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<KeyText, A::Error> {
        while map.next_entry::<IgnoredAny, IgnoredAny>()?.is_some() {}
        Ok(KeyText(None))
    }
}

/// `deserialize_with` for string maps (labels, headers) that refuses a key given
/// twice, where YAML would silently keep the last value.
pub(crate) fn unique_map<'de, D: Deserializer<'de>>(deserializer: D) -> Result<BTreeMap<String, String>, D::Error> {
    deserializer.deserialize_map(UniqueMap)
}

struct UniqueMap;

impl<'de> Visitor<'de> for UniqueMap {
    type Value = BTreeMap<String, String>;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("a mapping of strings to strings")
    }

    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Self::Value, A::Error> {
        let mut out = BTreeMap::new();
        while let Some((key, value)) = map.next_entry::<String, String>()? {
            if out.contains_key(&key) {
                return Err(de::Error::custom(format_args!("`{key}` is given twice; keep one")));
            }
            out.insert(key, value);
        }
        Ok(out)
    }

    fn visit_unit<E: de::Error>(self) -> Result<Self::Value, E> {
        Ok(BTreeMap::new())
    }
}

/// `deserialize_with` for lists of ports: integers, reported as port numbers
/// when they are not (the range is checked after parsing, with the position).
pub(crate) fn ports<'de, D: Deserializer<'de>>(deserializer: D) -> Result<Vec<i64>, D::Error> {
    deserializer.deserialize_seq(Ports)
}

struct Ports;

impl<'de> Visitor<'de> for Ports {
    type Value = Vec<i64>;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("a list of port numbers")
    }

    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Self::Value, A::Error> {
        let mut out = Vec::new();
        while let Some(Port(port)) = seq.next_element()? {
            out.push(port);
        }
        Ok(out)
    }
}

struct Port(i64);

impl<'de> de::Deserialize<'de> for Port {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        deserializer.deserialize_i64(PortVisitor)
    }
}

struct PortVisitor;

impl Visitor<'_> for PortVisitor {
    type Value = Port;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("a port number from 1 to 65535")
    }

    fn visit_i64<E: de::Error>(self, v: i64) -> Result<Port, E> {
        Ok(Port(v))
    }

    fn visit_u64<E: de::Error>(self, v: u64) -> Result<Port, E> {
        Ok(Port(i64::try_from(v).unwrap_or(i64::MAX)))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const DOC: &str = "\
- name: a
  ports: [80, 443]
- name: b
  labels:
    pci: \"true\"
";

    fn at(path: &Path<'_>) -> (u32, u32) {
        let file = SourceFile::in_memory("f.yaml", DOC);
        let location = file.yaml_diagnostic(Problem::EmptySelector, path).location().unwrap();
        (location.line, location.column)
    }

    #[test]
    fn locates_nodes_by_path() {
        assert_eq!(at(&[Step::Index(0), Step::Key("name")]), (1, 9));
        assert_eq!(at(&[Step::Index(0), Step::Key("ports"), Step::Index(1)]), (2, 15));
        assert_eq!(at(&[Step::Index(1), Step::Key("labels"), Step::Key("pci")]), (5, 10));
        assert_eq!(at(&[Step::Index(1)]), (3, 3));
    }

    #[test]
    fn a_missing_node_is_located_at_its_closest_ancestor() {
        assert_eq!(at(&[Step::Index(1), Step::Key("ports")]), (3, 3));
        assert_eq!(at(&[Step::Index(0), Step::Key("ports"), Step::Index(5)]), (2, 10));
    }

    #[derive(Debug, Default, serde::Deserialize)]
    struct Labels(#[serde(deserialize_with = "unique_map")] BTreeMap<String, String>);

    impl Labels {
        fn len(&self) -> usize {
            self.0.len()
        }
    }

    #[test]
    fn a_key_given_twice_is_an_error_with_its_position() {
        let file = SourceFile::in_memory("l.yaml", "a: x\nb: y\na: z\n");
        assert_eq!(file.parse_yaml::<Labels>().map(|l| l.len()).ok(), None);
        let d = file.parse_yaml::<Labels>().unwrap_err();
        assert!(d.problem().to_string().contains("`a` is given twice"), "{d}");
        assert_eq!(d.location().unwrap().line, 1);
    }

    #[test]
    fn syntax_errors_carry_their_position() {
        let file = SourceFile::in_memory("s.yaml", "- name: [a\n- b\n");
        let d = file.parse_yaml::<Vec<BTreeMap<String, String>>>().unwrap_err();
        assert_eq!(d.location().unwrap().file.as_ref(), "s.yaml");
        assert!(!d.problem().to_string().contains("at line"), "{d}");
    }

    #[test]
    fn an_empty_document_is_the_default() {
        let file = SourceFile::in_memory("e.yaml", "# nothing yet\n");
        assert!(file.parse_yaml::<Vec<String>>().unwrap().is_empty());
    }

    #[test]
    fn an_entry_is_located_in_its_entry_as_in_the_whole_file() {
        let mut text = String::from("# a list file\n");
        for i in 0..40 {
            text.push_str(&format!(
                "- host: h{i}.example.com\n  ports: [{i}, 443]\n  workloads:\n    namespaces:\n    - ns{i}\n    labels: {{ a: \"{i}\" }}\n\n"
            ));
        }
        let file = SourceFile::in_memory("egress.yaml", &text);
        let paths: Vec<Vec<Step<'_>>> = (0..40)
            .flat_map(|i| {
                [
                    vec![Step::Index(i)],
                    vec![Step::Index(i), Step::Key("host")],
                    vec![Step::Index(i), Step::Key("ports"), Step::Index(1)],
                    vec![
                        Step::Index(i),
                        Step::Key("workloads"),
                        Step::Key("namespaces"),
                        Step::Index(0),
                    ],
                    vec![
                        Step::Index(i),
                        Step::Key("workloads"),
                        Step::Key("labels"),
                        Step::Key("a"),
                    ],
                    vec![Step::Index(i), Step::Key("missing")],
                ]
            })
            .chain([vec![Step::Index(99)], vec![]])
            .collect();
        for path in &paths {
            assert_eq!(file.yaml_position(path), whole(&text, path), "{path:?}");
        }
        assert!(
            file.entries.get().is_some_and(Option::is_some),
            "the entries were found"
        );
    }

    #[test]
    fn a_file_that_is_not_a_plain_list_is_located_whole() {
        for text in [
            "top: [1, 2]\n",
            "[{a: 1}, {a: 2}]\n",
            "- a: |\n    text\n- b: 1\n",
            "- &x {a: 1}\n- *x\n",
            "\u{feff}- a: 1\n- a: 2\n- a: \"x\n- y\"\n",
            "  - a: 1\n  - a: 2\n",
            "- a: 1\r\n- a: 2\r\n",
            "- a: 1\n- a: \"x\n- y\"\n- a: 3\n",
            "- a: 'x\n- y'\n- a: 2\n",
        ] {
            let file = SourceFile::in_memory("x.yaml", text);
            for path in [
                vec![Step::Index(1), Step::Key("a")],
                vec![Step::Index(0)],
                vec![Step::Index(2), Step::Key("a")],
            ] {
                assert_eq!(file.yaml_position(&path), whole(text, &path), "{text:?} {path:?}");
            }
        }
    }

    /// Where the node is by a parse of the whole file: the reference.
    fn whole(text: &str, path: &Path<'_>) -> Option<(u32, u32)> {
        let located = Locate { path }.deserialize(serde_yaml_ng::Deserializer::from_str(text));
        let location = located.err()?.location()?;
        Some((to_u32(location.line()), to_u32(location.column())))
    }

    /// A small xorshift generator: the same documents at every run.
    struct Rng(u64);

    impl Rng {
        fn next(&mut self, below: usize) -> usize {
            self.0 ^= self.0 << 13;
            self.0 ^= self.0 >> 7;
            self.0 ^= self.0 << 17;
            usize::try_from(self.0 % u64::try_from(below.max(1)).unwrap()).unwrap()
        }
    }

    /// One list entry in one of the shapes people and the controller write.
    fn entry(rng: &mut Rng, i: usize) -> String {
        let scalar = |rng: &mut Rng| match rng.next(5) {
            0 => format!("v{i}"),
            1 => format!("\"- not an entry {i}\""),
            2 => format!("'x: {i}'"),
            3 => format!("{i}"),
            _ => "[a, b]".to_owned(),
        };
        match rng.next(6) {
            0 => format!("- {}\n", scalar(rng)),
            1 => format!("- k: {}\n  n: {{a: {i}, b: [1, 2]}}\n", scalar(rng)),
            2 => format!(
                "- text: |\n    - line one {i}\n    - line two\n  after: {}\n",
                scalar(rng)
            ),
            3 => format!("-\n  k: {}\n  list:\n  - {}\n  - x\n", scalar(rng), scalar(rng)),
            4 => format!(
                "# a comment\n- k: {}\n\n  # inside\n  m:\n    - deep: {i}\n",
                scalar(rng)
            ),
            _ => format!("- [{}, {}]\n", scalar(rng), scalar(rng)),
        }
    }

    #[test]
    fn locating_in_an_entry_agrees_with_locating_in_the_whole_file_on_generated_files() {
        let mut rng = Rng(0x9e37_79b9_7f4a_7c15);
        let keys = ["k", "n", "a", "b", "text", "after", "list", "m", "deep", "missing"];
        let mut by_entry = 0;
        for _ in 0..300 {
            let entries = rng.next(12);
            let mut text = String::new();
            if rng.next(4) == 0 {
                text.push_str("# header\n---\n");
            }
            for i in 0..entries {
                text.push_str(&entry(&mut rng, i));
            }
            let file = SourceFile::in_memory("list.yaml", &text);
            for _ in 0..20 {
                let mut path = vec![Step::Index(rng.next(entries + 1))];
                for _ in 0..rng.next(4) {
                    path.push(match rng.next(2) {
                        0 => Step::Key(keys[rng.next(keys.len())]),
                        _ => Step::Index(rng.next(3)),
                    });
                }
                assert_eq!(file.yaml_position(&path), whole(&text, &path), "{path:?} in\n{text}");
            }
            by_entry += usize::from(
                file.entries
                    .get()
                    .is_some_and(|e| e.as_ref().is_some_and(|e| !e.is_empty())),
            );
        }
        assert!(by_entry > 200, "most files are located entry by entry: {by_entry}");
    }
}
