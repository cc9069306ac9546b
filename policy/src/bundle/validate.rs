//! Strict validation of a file's policies against the mesh schema, and the
//! translation of Cedar's diagnostics (parse errors, validation errors and
//! warnings) into ours, located in the file.
//!
//! Validator **warnings are errors** here: a policy that can never apply (a forbid
//! that silently protects nothing), or text with bidirectional or confusable
//! characters, has no place in a security policy.

use std::collections::{HashMap, HashSet};
use std::ops::Range;

use cedar_policy::ffi::DetailedError;
use cedar_policy::{ParseError, PolicyId, PolicySet, ValidationMode, Validator};

use crate::error::{Diagnostic, Problem};
use crate::source::SourceFile;

/// A Cedar syntax error, underlined where Cedar points.
pub(super) fn syntax(file: &SourceFile, error: &ParseError) -> Diagnostic {
    let detail = DetailedError::from(error);
    let problem = Problem::CedarSyntax {
        message: detail.message.clone(),
    };
    located(file, problem, &detail, None)
}

/// Validates `set` (parsed from `file`) strictly; the diagnostics of each policy,
/// in the order Cedar reports them, duplicates (one per action) dropped.
///
/// `spans` holds each policy's text range, `ids` its `@id` where it has one.
pub(super) fn schema(
    file: &SourceFile,
    set: &PolicySet,
    validator: &Validator,
    spans: &HashMap<PolicyId, Range<usize>>,
    ids: &HashMap<PolicyId, String>,
) -> HashMap<PolicyId, Vec<Diagnostic>> {
    let result = validator.validate(set, ValidationMode::Strict);
    let errors = result
        .validation_errors()
        .map(|e| (e.policy_id(), DetailedError::from(e)));
    let warnings = result
        .validation_warnings()
        .map(|w| (w.policy_id(), DetailedError::from(w)));
    let mut seen = HashSet::new();
    let mut out: HashMap<PolicyId, Vec<Diagnostic>> = HashMap::new();
    for (id, detail) in errors.chain(warnings) {
        let text = message(&detail.message, id, ids.get(id).map(String::as_str));
        let fallback = spans.get(id).cloned();
        let key = (
            id.clone(),
            detail.source_locations.first().map(|l| (l.loc.start, l.loc.end)),
            text.clone(),
        );
        if !seen.insert(key) {
            continue;
        }
        let mut diagnostic = located(file, Problem::CedarValidation { message: text }, &detail, fallback);
        if let Some(help) = &detail.help {
            diagnostic = diagnostic.with_help(message(help, id, None));
        }
        out.entry(id.clone()).or_default().push(diagnostic);
    }
    out
}

/// A diagnostic at Cedar's first label, else at `fallback`, else on the file.
fn located(file: &SourceFile, problem: Problem, detail: &DetailedError, fallback: Option<Range<usize>>) -> Diagnostic {
    let label = detail.source_locations.first();
    let range = label.map(|l| l.loc.start..l.loc.end).or(fallback);
    let diagnostic = match range {
        Some(range) => file.span_diagnostic(problem, range.start, range.end),
        None => file.file_diagnostic(problem),
    };
    let diagnostic = diagnostic.with_label(label.and_then(|l| l.label.clone()));
    match &detail.help {
        Some(help) => diagnostic.with_help(help.clone()),
        None => diagnostic,
    }
}

/// Cedar's message with its generated policy id (`policy3`) replaced by the
/// policy's `@id`, and the action it happened to check first left out (the
/// same error is reported once per action).
fn message(cedar: &str, id: &PolicyId, annotated: Option<&str>) -> String {
    let prefix = format!("for policy `{id}`, ");
    let mut rest = cedar.strip_prefix(&prefix).unwrap_or(cedar).to_owned();
    while let Some(start) = rest.find(" for Action::\"") {
        let name_start = start + " for Action::\"".len();
        let Some(len) = rest.get(name_start..).and_then(|tail| tail.find('"')) else {
            break;
        };
        rest.replace_range(start..name_start + len + 1, "");
    }
    match annotated {
        Some(annotated) => format!("in policy `{annotated}`: {rest}"),
        None => rest,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn messages_name_the_policy_by_its_id_and_no_single_action() {
        let id = PolicyId::new("policy0");
        let cedar = "for policy `policy0`, attribute `foo` in context for Action::\"PUT\" not found";
        assert_eq!(
            message(cedar, &id, Some("web-reads")),
            "in policy `web-reads`: attribute `foo` in context not found"
        );
        assert_eq!(message(cedar, &id, None), "attribute `foo` in context not found");
    }
}
