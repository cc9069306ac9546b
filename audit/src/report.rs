//! Compliance reports: `palisade audit report --since 24h --format html|json|csv|md`.
//!
//! A report is computed in one streaming pass and then rendered:
//!
//! 1. [`ReportBuilder`] takes every record of the store in sequence order
//!    ([`ReportBuilder::add`]) and counts the ones whose time falls in the
//!    [`Window`]. It keeps counts, a few flags per request id and the last few
//!    identity and policy events, never the records themselves, so a million
//!    records cost memory in proportion to the distinct names and request ids.
//! 2. [`ReportBuilder::finish`] adds the chain's [`Verification`](crate::chain::Verification)
//!    and returns a [`Report`]: plain, sorted data ([`model`]) that every format
//!    prints the same way.
//! 3. [`Report::render`] prints it as HTML ([`html`]: one self-contained file with
//!    inline SVG charts, readable printed), JSON ([`json`]), one CSV ([`csv`], its
//!    columns documented there) or Markdown ([`markdown`]).
//!
//! Record fields (principals, paths, hosts, reasons) come from senders and are
//! treated as hostile in every format: HTML-escaped, CSV-injection-proofed,
//! Markdown-escaped, control characters replaced. The database is printed without
//! its password ([`redact`]).

pub mod csv;
pub mod html;
pub mod json;
pub mod markdown;
pub mod model;
pub mod redact;

mod builder;
mod text;

use std::fmt;
use std::path::Path;
use std::str::FromStr;

use crate::record::UnknownValue;

pub use builder::ReportBuilder;
pub use model::{Report, Timestamp, Window, DEFAULT_DENY};

/// The formats a report can be printed in.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum ReportFormat {
    /// One self-contained HTML file with inline SVG charts.
    Html,
    /// Pretty-printed JSON of the [`Report`].
    Json,
    /// One CSV file; see [`csv`] for its columns.
    Csv,
    /// GitHub-flavoured Markdown.
    Markdown,
}

impl ReportFormat {
    /// Every format.
    pub const ALL: &'static [Self] = &[Self::Html, Self::Json, Self::Csv, Self::Markdown];

    /// The spelling `--format` takes.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Html => "html",
            Self::Json => "json",
            Self::Csv => "csv",
            Self::Markdown => "md",
        }
    }

    /// The format an output file's extension names (`.html`/`.htm`, `.json`,
    /// `.csv`, `.md`/`.markdown`, any case), if any.
    pub fn from_path_extension(path: &Path) -> Option<Self> {
        let extension = path.extension()?.to_str()?.to_ascii_lowercase();
        match extension.as_str() {
            "html" | "htm" => Some(Self::Html),
            "json" => Some(Self::Json),
            "csv" => Some(Self::Csv),
            "md" | "markdown" => Some(Self::Markdown),
            _ => None,
        }
    }
}

impl fmt::Display for ReportFormat {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl FromStr for ReportFormat {
    type Err = UnknownValue;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s {
            "html" => Ok(Self::Html),
            "json" => Ok(Self::Json),
            "csv" => Ok(Self::Csv),
            "md" | "markdown" => Ok(Self::Markdown),
            _ => Err(UnknownValue {
                what: "report format",
                value: s.to_owned(),
                expected: &["html", "json", "csv", "md"],
            }),
        }
    }
}

impl Report {
    /// The report in one format.
    pub fn render(&self, format: ReportFormat) -> String {
        match format {
            ReportFormat::Html => self.to_html(),
            ReportFormat::Json => self.to_json(),
            ReportFormat::Csv => self.to_csv(),
            ReportFormat::Markdown => self.to_markdown(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn formats_parse_from_their_spelling_and_extension() {
        for format in ReportFormat::ALL {
            assert_eq!(format.as_str().parse::<ReportFormat>(), Ok(*format));
        }
        assert_eq!(
            ReportFormat::from_path_extension(Path::new("/tmp/r.HTML")),
            Some(ReportFormat::Html)
        );
        assert_eq!(
            ReportFormat::from_path_extension(Path::new("r.markdown")),
            Some(ReportFormat::Markdown)
        );
        assert_eq!(ReportFormat::from_path_extension(Path::new("report")), None);
        let err = "pdf".parse::<ReportFormat>().unwrap_err();
        assert_eq!(
            err.to_string(),
            "`pdf` is not a valid report format; expected one of: html, json, csv, md"
        );
    }
}
