//! A file of the bundle held in memory, and the translation of its offsets and
//! positions into locations and excerpts for [`Diagnostic`]s.

use std::path::Path;
use std::sync::Arc;

use palisade_authz::SourceLocation;

use crate::error::{Diagnostic, Excerpt, Problem};

/// One file read from a bundle directory.
#[derive(Debug, Clone)]
pub(crate) struct SourceFile {
    /// The path shown to people: the bundle directory joined with `relative`.
    pub(crate) shown: Arc<str>,
    /// The path inside the bundle, with `/` separators (what the digest encodes).
    pub(crate) relative: String,
    pub(crate) text: String,
    /// Where each entry of a top-level block sequence starts (byte offset,
    /// 0-based line), found once when first needed; `None` when the file is not
    /// such a sequence (see `yaml.rs`).
    pub(crate) entries: std::sync::OnceLock<Option<Vec<(usize, usize)>>>,
}

impl SourceFile {
    /// Reads `relative` under `root` (at most [`crate::bundle::MAX_FILE_BYTES`]).
    pub(crate) fn read(root: &Path, relative: &str) -> Result<Self, Diagnostic> {
        let path = root.join(relative);
        let shown: Arc<str> = path.display().to_string().into();
        match crate::bundle::files::read_capped(&path) {
            Ok(text) => Ok(Self {
                shown,
                relative: relative.to_owned(),
                text,
                entries: std::sync::OnceLock::new(),
            }),
            Err(problem) => Err(Diagnostic::in_file(problem, shown)),
        }
    }

    /// A file of a bundle held in memory, shown as `shown`.
    pub(crate) fn new(shown: Arc<str>, relative: &str, text: &str) -> Self {
        Self {
            shown,
            relative: relative.to_owned(),
            text: text.to_owned(),
            entries: std::sync::OnceLock::new(),
        }
    }

    /// A file from memory, for tests.
    #[cfg(test)]
    pub(crate) fn in_memory(relative: &str, text: &str) -> Self {
        Self {
            shown: relative.into(),
            relative: relative.to_owned(),
            text: text.to_owned(),
            entries: std::sync::OnceLock::new(),
        }
    }

    /// The 1-based line and character column of a byte offset (clamped to the text).
    pub(crate) fn position(&self, offset: usize) -> (u32, u32) {
        let offset = floor_char_boundary(&self.text, offset);
        let before = self.text.get(..offset).unwrap_or_default();
        let line_start = before.rfind('\n').map_or(0, |i| i + 1);
        let line = before.matches('\n').count() + 1;
        let column = before.get(line_start..).unwrap_or_default().chars().count() + 1;
        (to_u32(line), to_u32(column))
    }

    /// Where a byte offset is.
    pub(crate) fn location(&self, offset: usize) -> SourceLocation {
        let (line, column) = self.position(offset);
        SourceLocation {
            file: self.shown.clone(),
            line,
            column,
        }
    }

    /// A diagnostic underlining the bytes `start..end` (only their first line).
    pub(crate) fn span_diagnostic(&self, problem: Problem, start: usize, end: usize) -> Diagnostic {
        let (line, column) = self.position(start);
        let (end_line, end_column) = self.position(end.max(start));
        let text = self.line_text(line);
        let width = if end_line == line {
            end_column.saturating_sub(column)
        } else {
            to_u32(text.chars().count()).saturating_sub(column.saturating_sub(1))
        };
        self.diagnostic_at(problem, line, column, width.max(1))
    }

    /// A diagnostic at a 1-based line and column, underlining `width` characters.
    pub(crate) fn diagnostic_at(&self, problem: Problem, line: u32, column: u32, width: u32) -> Diagnostic {
        let excerpt = Excerpt {
            text: self.line_text(line),
            column: column.max(1),
            width: width.max(1),
            label: None,
        };
        Diagnostic::at(problem, self.shown.clone(), line.max(1), excerpt)
    }

    /// A diagnostic about the whole file.
    pub(crate) fn file_diagnostic(&self, problem: Problem) -> Diagnostic {
        Diagnostic::in_file(problem, self.shown.clone())
    }

    /// Line `line` (1-based) without its line break; tabs shown as one space so
    /// the caret lines up.
    fn line_text(&self, line: u32) -> String {
        let index = (line.max(1) - 1) as usize;
        let text = self.text.split('\n').nth(index).unwrap_or_default();
        text.strip_suffix('\r').unwrap_or(text).replace('\t', " ")
    }
}

fn floor_char_boundary(text: &str, offset: usize) -> usize {
    let mut offset = offset.min(text.len());
    while !text.is_char_boundary(offset) {
        offset -= 1;
    }
    offset
}

fn to_u32(n: usize) -> u32 {
    u32::try_from(n).unwrap_or(u32::MAX)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn offsets_become_lines_and_character_columns() {
        let file = SourceFile::in_memory("f", "ab\n\u{e9}cd\n");
        assert_eq!(file.position(0), (1, 1));
        assert_eq!(file.position(3), (2, 1));
        assert_eq!(file.position(5), (2, 2), "é is one column");
        assert_eq!(file.position(4), (2, 1), "inside a character: its start");
        assert_eq!(file.position(99), (3, 1), "past the end: the end");
    }

    #[test]
    fn a_span_underlines_its_first_line_only() {
        let file = SourceFile::in_memory("f", "x = 1\npermit (\n  y\n);\n");
        let d = file.span_diagnostic(Problem::Template, 8, 20);
        let excerpt = d.excerpt().unwrap();
        assert_eq!(
            (excerpt.text.as_str(), excerpt.column, excerpt.width),
            ("permit (", 3, 6)
        );
        assert_eq!(d.location().unwrap().line, 2);
    }
}
