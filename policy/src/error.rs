//! Diagnostics: what is wrong with a bundle, where, rendered like rustc.
//!
//! A [`Diagnostic`] is a [`Problem`] (what is wrong, with a hint for what to do)
//! plus where it is: a file, and usually a line and column with the source line
//! and a caret under the offending text. Loading a bundle collects every
//! diagnostic it finds into [`Diagnostics`] instead of stopping at the first one,
//! so a user fixes a bundle in one round.
//!
//! ```text
//! error: ingress policy of namespace `payments` must constrain `resource` to that namespace, …
//!  --> examples/shop/policies/payments/ingress/pci.cedar:4:3
//!   |
//! 4 |   resource
//!   |   ^^^^^^^^
//! ```

use std::fmt;
use std::sync::Arc;

use palisade_authz::{Direction, NormalizeError, SourceLocation};
use palisade_ca::SpiffeIdError;

/// What is wrong. Messages follow Cedar's rules: lower-case, no final period,
/// user input in backticks, a hint for what to do next.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum Problem {
    /// A file or directory could not be read.
    #[error("cannot read it: {reason}")]
    Read { reason: String },

    /// A required file is missing.
    #[error("the bundle has no `{name}`; create it (see policy/README.md)")]
    MissingFile { name: &'static str },

    /// A file over the size limit.
    #[error("the file is over the limit of {limit} bytes; split it or remove what is not needed")]
    FileTooLarge { limit: usize },

    /// More files than a bundle may hold.
    #[error("the bundle has more than {limit} files; merge policy files or remove what is not needed")]
    TooManyFiles { limit: usize },

    /// More bytes than a bundle may hold.
    #[error("the bundle's files are over the limit of {limit} bytes in all; remove what is not needed")]
    BundleTooLarge { limit: usize },

    /// Something in the bundle directory that has no place there.
    #[error("unexpected {what}; {hint}")]
    UnexpectedEntry { what: String, hint: &'static str },

    /// YAML syntax, an unknown field, or a value of the wrong type.
    #[error("{message}")]
    Yaml { message: String },

    /// A trust domain that is not one.
    #[error("{0}")]
    InvalidTrustDomain(SpiffeIdError),
    /// A `leafTtl` that is not a duration between one minute and 24 hours.
    #[error("`{value}` is not a certificate lifetime: give a number and `s`, `m` or `h`, from `1m` to `24h` (e.g. `30m`, `1h`)")]
    InvalidLeafTtl { value: String },

    /// A string that is not a SPIFFE ID.
    #[error("{0}")]
    InvalidSpiffeId(SpiffeIdError),

    /// A SPIFFE ID without the mesh path `/ns/<namespace>/sa/<service account>`.
    #[error(
        "SPIFFE ID `{id}` is not a mesh workload ID; write it as `spiffe://<trust domain>/ns/<namespace>/sa/<service account>`"
    )]
    NotMeshId { id: String },

    /// A SPIFFE ID of another trust domain.
    #[error(
        "SPIFFE ID `{id}` is outside the trust domain `{trust_domain}` of `mesh.yaml`; use an ID of `{trust_domain}`"
    )]
    OutsideTrustDomain { id: String, trust_domain: String },

    /// A namespace or service name that is not a DNS-1123 label.
    #[error(
        "invalid {what} `{name}`: use 1 to 63 lower-case letters, digits or `-`, starting and ending with a letter or digit"
    )]
    InvalidName { what: &'static str, name: String },

    /// A list that must not be empty is.
    #[error("`{field}` is empty; list at least one")]
    EmptyList { field: &'static str },

    /// A port outside 1..=65535.
    #[error("port `{port}` is out of range; use a port from 1 to 65535")]
    InvalidPort { port: i64 },

    /// A host name that has no canonical form.
    #[error("invalid host `{host}`: {reason}")]
    InvalidHost { host: String, reason: NormalizeError },

    /// A host name written with a port.
    #[error("host `{host}` has a port; list ports under `ports`")]
    HostWithPort { host: String },

    /// A host pattern with a `*` anywhere but as a whole first label, or too broad.
    #[error("invalid host pattern `{host}`: {hint}")]
    InvalidWildcard { host: String, hint: &'static str },

    /// An endpoint that is not `host:port`.
    #[error("invalid endpoint `{endpoint}`: {hint}")]
    InvalidEndpoint { endpoint: String, hint: String },

    /// A label with an empty key.
    #[error("a label has an empty key; give every label a name")]
    EmptyLabelKey,

    /// Two services with one `NAMESPACE/NAME`.
    #[error("service `{id}` is declared twice (first at {first}); merge the two entries")]
    DuplicateService { id: String, first: Located },

    /// Two workloads with one SPIFFE ID.
    #[error("workload `{id}` is declared twice (first at {first}); merge the two entries")]
    DuplicateWorkload { id: String, first: Located },

    /// Two services answering to one host name, or an external host that is a mesh host.
    #[error("host `{host}` already belongs to service `{service}`; a host names one destination")]
    DuplicateHost { host: String, service: String },

    /// A `servedBy` or selector SPIFFE ID that `workloads.yaml` does not list.
    #[error("workload `{id}` is not in `workloads.yaml`; add it there or fix the ID")]
    UnknownWorkload { id: String },

    /// An egress rule that selects no workload.
    #[error("the rule selects no workload; name `namespaces`, `labels` or `spiffeIds` under `workloads`")]
    EmptySelector,

    /// Cedar syntax.
    #[error("{message}")]
    CedarSyntax { message: String },

    /// Strict validation against the mesh schema.
    #[error("{message}")]
    CedarValidation { message: String },

    /// A Cedar template (`?principal`, `?resource`).
    #[error("templates are not supported; write the entity instead of `?principal` or `?resource`")]
    Template,

    /// A policy without `@id`.
    #[error("policy has no `@id`; add `@id(\"...\")` before `permit` or `forbid`, unique in the bundle")]
    MissingId,

    /// `@id("")` or an id with control characters.
    #[error("policy `@id` `{id}` is invalid; use a non-empty id without control characters")]
    InvalidId { id: String },

    /// An `@mode` other than `dry-run`.
    #[error("unknown `@mode(\"{value}\")`; write `@mode(\"dry-run\")`, or remove `@mode` to enforce the policy")]
    InvalidMode { value: String },

    /// Two policies with one `@id`.
    #[error("policy id `{id}` is used twice (first at {first}); give every policy its own `@id`")]
    DuplicateId { id: String, first: Located },

    /// The namespace rule.
    #[error(
        "{direction} policy of namespace `{namespace}` must constrain `{variable}` to that namespace, \
         as {expected}; this one {found}"
    )]
    Scope {
        direction: DirectionName,
        namespace: String,
        variable: &'static str,
        expected: String,
        found: String,
    },

    /// A policy test case whose `to` is neither `NS/SERVICE` nor `HOST[:PORT]`.
    #[error("invalid `to` `{to}`: {hint}")]
    InvalidTarget { to: String, hint: String },

    /// A method the schema has no action for.
    #[error("unknown method `{method}`; use GET, HEAD, POST, PUT, PATCH, DELETE, OPTIONS or CONNECT, in upper case")]
    InvalidMethod { method: String },

    /// `expect.ingress` given for an external host, or missing for a service.
    #[error("{0}")]
    IngressExpectation(&'static str),

    /// Two test cases with one name.
    #[error("test case `{name}` is defined twice (first at {first}); give every case its own name")]
    DuplicateTestName { name: String, first: Located },

    /// A header name that is not an HTTP token.
    #[error("invalid header name `{name}`; use letters, digits and `-`")]
    InvalidHeaderName { name: String },

    /// A loader invariant broke; please report it.
    #[error("internal error: {0}; please report it")]
    Internal(&'static str),
}

/// A [`SourceLocation`] shown as `file:line:col` inside a message.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Located(pub SourceLocation);

impl fmt::Display for Located {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}:{}:{}", self.0.file, self.0.line, self.0.column)
    }
}

/// A [`Direction`] as the word a message uses.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct DirectionName(pub Direction);

impl fmt::Display for DirectionName {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self.0 {
            Direction::Egress => "egress",
            Direction::Ingress => "ingress",
        })
    }
}

/// The source line a diagnostic points into, with what to underline.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Excerpt {
    /// The whole line, without its line break.
    pub text: String,
    /// The 1-based column (in characters) where the underline starts.
    pub column: u32,
    /// How many characters to underline, at least one.
    pub width: u32,
    /// A short note printed after the carets.
    pub label: Option<String>,
}

/// One problem and where it is.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Diagnostic(Box<Inner>);

#[derive(Debug, Clone, PartialEq, Eq)]
struct Inner {
    problem: Problem,
    file: Option<Arc<str>>,
    line: u32,
    excerpt: Option<Excerpt>,
    help: Option<String>,
}

impl Diagnostic {
    /// A problem with no place in any file.
    pub fn new(problem: Problem) -> Self {
        Self(Box::new(Inner {
            problem,
            file: None,
            line: 0,
            excerpt: None,
            help: None,
        }))
    }

    /// A problem with a whole file or directory.
    pub fn in_file(problem: Problem, file: Arc<str>) -> Self {
        let mut diagnostic = Self::new(problem);
        diagnostic.0.file = Some(file);
        diagnostic
    }

    /// A problem at a line of a file, with the excerpt to show.
    pub fn at(problem: Problem, file: Arc<str>, line: u32, excerpt: Excerpt) -> Self {
        let mut diagnostic = Self::in_file(problem, file);
        diagnostic.0.line = line;
        diagnostic.0.excerpt = Some(excerpt);
        diagnostic
    }

    /// Adds a `= help:` line.
    #[must_use]
    pub fn with_help(mut self, help: impl Into<String>) -> Self {
        self.0.help = Some(help.into());
        self
    }

    /// Adds a note after the carets (ignored without an excerpt).
    #[must_use]
    pub fn with_label(mut self, label: Option<String>) -> Self {
        if let Some(excerpt) = &mut self.0.excerpt {
            excerpt.label = label;
        }
        self
    }

    /// What is wrong.
    pub fn problem(&self) -> &Problem {
        &self.0.problem
    }

    /// The file, when the problem is in one.
    pub fn file(&self) -> Option<&str> {
        self.0.file.as_deref()
    }

    /// `file:line:col`, when the problem has a place in a file.
    pub fn location(&self) -> Option<SourceLocation> {
        let file = self.0.file.clone()?;
        let excerpt = self.0.excerpt.as_ref()?;
        Some(SourceLocation {
            file,
            line: self.0.line,
            column: excerpt.column,
        })
    }

    /// The source line and underline, when there is one.
    pub fn excerpt(&self) -> Option<&Excerpt> {
        self.0.excerpt.as_ref()
    }

    /// The extra hint, when there is one.
    pub fn help(&self) -> Option<&str> {
        self.0.help.as_deref()
    }
}

impl fmt::Display for Diagnostic {
    /// Renders like rustc:
    ///
    /// ```text
    /// error: message
    ///  --> path:line:col
    ///   |
    /// 7 | source line
    ///   |     ^^^^ label
    ///   = help: hint
    /// ```
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let Inner {
            problem,
            file,
            line,
            excerpt,
            help,
        } = &*self.0;
        write!(f, "error: {problem}")?;
        let gutter = " ".repeat(line.to_string().len());
        match (file, excerpt) {
            (Some(file), Some(excerpt)) => {
                write!(f, "\n{gutter}--> {file}:{line}:{}", excerpt.column)?;
                write!(f, "\n{gutter} |\n{line} | {}", excerpt.text)?;
                let indent = " ".repeat(excerpt.column.saturating_sub(1) as usize);
                let carets = "^".repeat(excerpt.width.max(1) as usize);
                write!(f, "\n{gutter} | {indent}{carets}")?;
                if let Some(label) = &excerpt.label {
                    write!(f, " {label}")?;
                }
            }
            (Some(file), None) => write!(f, "\n --> {file}")?,
            (None, _) => {}
        }
        if let Some(help) = help {
            write!(f, "\n{gutter} = help: {help}")?;
        }
        Ok(())
    }
}

/// Every problem found in a bundle or a set of test files; never empty when
/// returned as an error.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Diagnostics(Vec<Diagnostic>);

impl Diagnostics {
    /// The diagnostics, in the order they were found (files in a stable order).
    pub fn iter(&self) -> std::slice::Iter<'_, Diagnostic> {
        self.0.iter()
    }

    /// How many there are.
    pub fn len(&self) -> usize {
        self.0.len()
    }

    /// Whether there are none.
    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }

    pub(crate) fn push(&mut self, diagnostic: Diagnostic) {
        self.0.push(diagnostic);
    }
}

impl From<Vec<Diagnostic>> for Diagnostics {
    fn from(diagnostics: Vec<Diagnostic>) -> Self {
        Self(diagnostics)
    }
}

impl<'a> IntoIterator for &'a Diagnostics {
    type Item = &'a Diagnostic;
    type IntoIter = std::slice::Iter<'a, Diagnostic>;

    fn into_iter(self) -> Self::IntoIter {
        self.0.iter()
    }
}

impl IntoIterator for Diagnostics {
    type Item = Diagnostic;
    type IntoIter = std::vec::IntoIter<Diagnostic>;

    fn into_iter(self) -> Self::IntoIter {
        self.0.into_iter()
    }
}

impl fmt::Display for Diagnostics {
    /// Every diagnostic, a blank line between two.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for (i, diagnostic) in self.0.iter().enumerate() {
            if i > 0 {
                f.write_str("\n\n")?;
            }
            write!(f, "{diagnostic}")?;
        }
        Ok(())
    }
}

impl std::error::Error for Diagnostics {}

#[cfg(test)]
mod tests {
    use super::*;

    fn excerpt(text: &str, column: u32, width: u32) -> Excerpt {
        Excerpt {
            text: text.into(),
            column,
            width,
            label: None,
        }
    }

    #[test]
    fn renders_like_rustc() {
        let d = Diagnostic::at(Problem::MissingId, "p/a.cedar".into(), 7, excerpt("  permit (", 3, 6))
            .with_help("ids appear in audit records");
        assert_eq!(
            d.to_string(),
            "error: policy has no `@id`; add `@id(\"...\")` before `permit` or `forbid`, unique in the bundle\n \
             --> p/a.cedar:7:3\n  |\n7 |   permit (\n  |   ^^^^^^\n  = help: ids appear in audit records"
        );
    }

    #[test]
    fn the_gutter_grows_with_the_line_number() {
        let d = Diagnostic::at(Problem::Template, "f".into(), 120, excerpt("x", 1, 1));
        let text = d.to_string();
        assert!(text.contains("\n   --> f:120:1\n    |\n120 | x\n    | ^"), "{text}");
    }

    #[test]
    fn a_file_problem_names_the_file_only() {
        let d = Diagnostic::in_file(Problem::MissingFile { name: "mesh.yaml" }, "b/mesh.yaml".into());
        assert!(d.to_string().ends_with("\n --> b/mesh.yaml"));
        assert_eq!(d.location(), None);
    }
}
