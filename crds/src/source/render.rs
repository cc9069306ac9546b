//! YAML text of the bundle files, remembering which lines each entry is on, so
//! that a loader diagnostic at a line names the object that produced it.

use std::ops::Range;

use serde::Serialize;

use super::BuildError;

/// A YAML list file and, for each entry, its lines and owner.
#[derive(Debug)]
pub(super) struct Rendered<K> {
    pub(super) text: String,
    /// 1-based line ranges, in order, with the owner of the entry on them.
    spans: Vec<(Range<u32>, K)>,
}

impl<K> Rendered<K> {
    /// Renders `entries` as one YAML list, each entry as `serde_yaml_ng` renders
    /// a list of it alone.
    pub(super) fn list<'a, T: Serialize + 'a>(
        file: &'static str,
        entries: impl IntoIterator<Item = (K, &'a T)>,
    ) -> Result<Self, BuildError> {
        let mut text = String::new();
        let mut spans = Vec::new();
        let mut line = 1u32;
        for (owner, entry) in entries {
            let chunk = yaml(file, std::slice::from_ref(entry))?;
            let lines = u32::try_from(chunk.matches('\n').count()).unwrap_or(u32::MAX);
            spans.push((line..line.saturating_add(lines), owner));
            line = line.saturating_add(lines);
            text.push_str(&chunk);
        }
        Ok(Self { text, spans })
    }

    /// Whether it has no entry (the file is left out then).
    pub(super) fn is_empty(&self) -> bool {
        self.spans.is_empty()
    }

    /// The owner of the entry on `line`.
    pub(super) fn owner(&self, line: u32) -> Option<&K> {
        self.spans
            .iter()
            .find(|(lines, _)| lines.contains(&line))
            .map(|(_, owner)| owner)
    }
}

/// `value` as YAML.
pub(super) fn yaml<T: Serialize + ?Sized>(file: &'static str, value: &T) -> Result<String, BuildError> {
    serde_yaml_ng::to_string(value).map_err(|error| BuildError::Render {
        file,
        reason: error.to_string(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use palisade_policy::registry::WorkloadEntry;

    #[test]
    fn each_entry_is_found_by_any_of_its_lines() {
        let entry = |id: &str, labels: &[(&str, &str)]| WorkloadEntry {
            spiffe_id: id.to_owned(),
            labels: crate::source::test_objects::map(labels),
        };
        let a = entry("spiffe://td/ns/a/sa/a", &[("x", "1"), ("y", "true")]);
        let b = entry("spiffe://td/ns/b/sa/b", &[]);
        let rendered = Rendered::list("workloads.yaml", [("a", &a), ("b", &b)]).unwrap();
        let parsed: Vec<WorkloadEntry> = serde_yaml_ng::from_str(&rendered.text).unwrap();
        assert_eq!(parsed, [a, b], "the pieces make one list");
        let lines: Vec<&str> = rendered.text.lines().collect();
        for (i, text) in lines.iter().enumerate() {
            let owner = rendered.owner(u32::try_from(i).unwrap() + 1).unwrap();
            let expected = if rendered.text.lines().position(|l| l.contains("/ns/b/")).unwrap() <= i {
                "b"
            } else {
                "a"
            };
            assert_eq!(*owner, expected, "line {}: {text}", i + 1);
        }
        assert_eq!(rendered.owner(u32::try_from(lines.len()).unwrap() + 1), None);
    }
}
