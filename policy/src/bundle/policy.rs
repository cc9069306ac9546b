//! One `.cedar` file of `policies/NS/DIRECTION/`: its policies, each with its
//! `@id`, `@mode`, owner and location, checked against the schema and the
//! namespace rule.

use std::collections::{HashMap, HashSet};
use std::ops::Range;
use std::str::FromStr;

use cedar_policy::{PolicyId, PolicySet, Validator};

use palisade_authz::{Direction, Mode, PolicySource, SourceLocation};
use palisade_ca::TrustDomain;

use super::scope::Owner;
use super::{span, validate};
use crate::error::{Diagnostic, Diagnostics, Located, Problem};
use crate::source::SourceFile;

/// A validated policy of the bundle.
#[derive(Debug, Clone)]
pub struct Policy {
    id: String,
    direction: Direction,
    namespace: String,
    mode: Mode,
    location: SourceLocation,
    file: String,
    text: String,
    cedar: cedar_policy::Policy,
}

impl Policy {
    /// Its `@id`, unique in the bundle; also its Cedar policy id.
    pub fn id(&self) -> &str {
        &self.id
    }

    /// Egress (`policies/NS/egress/`) or ingress (`policies/NS/ingress/`).
    pub fn direction(&self) -> Direction {
        self.direction
    }

    /// The namespace that owns it.
    pub fn namespace(&self) -> &str {
        &self.namespace
    }

    /// Enforced, or dry-run with `@mode("dry-run")`.
    pub fn mode(&self) -> Mode {
        self.mode
    }

    /// Where it starts (its first annotation): the file as shown to people.
    pub fn location(&self) -> &SourceLocation {
        &self.location
    }

    /// Its file's path inside the bundle, `policies/NS/DIRECTION/NAME.cedar`.
    pub fn file(&self) -> &str {
        &self.file
    }

    /// Its text exactly as written, annotations included.
    pub fn text(&self) -> &str {
        &self.text
    }

    /// The Cedar policy, with the `@id` as its policy id.
    pub fn cedar(&self) -> &cedar_policy::Policy {
        &self.cedar
    }

    pub(crate) fn source(&self) -> PolicySource {
        PolicySource {
            id: self.id.clone(),
            direction: self.direction,
            namespace: self.namespace.clone(),
            mode: self.mode,
            location: self.location.clone(),
            policy: self.cedar.clone(),
        }
    }
}

/// What checking a policy file needs besides the file.
pub(super) struct Checks<'a> {
    pub(super) validator: &'a Validator,
    /// `None` when `mesh.yaml` is broken.
    pub(super) trust_domain: Option<&'a TrustDomain>,
    /// Every `@id` seen so far in the bundle, with where.
    pub(super) ids: HashMap<String, SourceLocation>,
}

/// The valid policies of `file`; every problem goes to `diagnostics`.
pub(super) fn load(
    file: &SourceFile,
    owner: &Owner,
    checks: &mut Checks<'_>,
    diagnostics: &mut Diagnostics,
) -> Vec<Policy> {
    let set = match PolicySet::from_str(&file.text) {
        Ok(set) => set,
        Err(errors) => {
            errors
                .iter()
                .for_each(|error| diagnostics.push(validate::syntax(file, error)));
            return Vec::new();
        }
    };
    let spans = spans(file, &set);
    let ids: HashMap<PolicyId, String> = (set.policies())
        .filter_map(|p| Some((p.id().clone(), p.annotation("id")?.to_owned())))
        .collect();
    let mut schema_errors = validate::schema(file, &set, checks.validator, &spans, &ids);
    let templates: HashSet<&PolicyId> = set.templates().map(cedar_policy::Template::id).collect();
    let mut policies = Vec::new();
    for (cedar_id, range) in ordered(&spans) {
        if templates.contains(cedar_id) {
            let head = span::effect(text(file, range)).map_or(range.clone(), |r| shift(r, range.start));
            diagnostics.push(file.span_diagnostic(Problem::Template, head.start, head.end));
            continue;
        }
        let Some(cedar) = set.policy(cedar_id) else {
            continue;
        };
        let errors_before = diagnostics.len();
        let policy = annotated(file, range, cedar, owner, checks, diagnostics);
        schema_errors
            .remove(cedar_id)
            .into_iter()
            .flatten()
            .for_each(|d| diagnostics.push(d));
        if diagnostics.len() == errors_before {
            policies.extend(policy);
        }
    }
    policies
}

/// Reads `@id` and `@mode` and checks the namespace rule.
fn annotated(
    file: &SourceFile,
    range: &Range<usize>,
    cedar: &cedar_policy::Policy,
    owner: &Owner,
    checks: &mut Checks<'_>,
    diagnostics: &mut Diagnostics,
) -> Option<Policy> {
    let at = Place { file, range };
    let id = policy_id(at, cedar, &mut checks.ids);
    let mode = mode(at, cedar);
    let scope = (owner.check(cedar, checks.trust_domain))
        .map_err(|problem| at.diagnostic(span::scope_element(at.text(), owner.variable()), problem));
    let (id, mode) = match (id, mode, scope) {
        (Ok(id), Ok(mode), Ok(())) => (id, mode),
        (id, mode, scope) => {
            let errors: [Option<Diagnostic>; 3] = [id.err(), mode.err(), scope.err()];
            errors.into_iter().flatten().for_each(|d| diagnostics.push(d));
            return None;
        }
    };
    Some(Policy {
        cedar: cedar.new_id(PolicyId::new(&id)),
        id,
        direction: owner.direction,
        namespace: owner.namespace.clone(),
        mode,
        location: file.location(range.start),
        file: file.relative.clone(),
        text: at.text().to_owned(),
    })
}

/// The `@id`, present, well-formed and not taken (then it is taken).
fn policy_id(
    at: Place<'_>,
    cedar: &cedar_policy::Policy,
    taken: &mut HashMap<String, SourceLocation>,
) -> Result<String, Diagnostic> {
    let Some(id) = cedar.annotation("id") else {
        return Err(at.diagnostic(span::effect(at.text()), Problem::MissingId));
    };
    let annotation = span::annotation(at.text(), "id");
    if id.is_empty() || id.chars().any(char::is_control) {
        let id = id.escape_debug().to_string();
        return Err(at.diagnostic(annotation, Problem::InvalidId { id }));
    }
    if let Some(first) = taken.get(id) {
        let problem = Problem::DuplicateId {
            id: id.to_owned(),
            first: Located(first.clone()),
        };
        return Err(at.diagnostic(annotation, problem));
    }
    taken.insert(id.to_owned(), at.file.location(at.range.start));
    Ok(id.to_owned())
}

/// The file name suffix that makes every policy of a file dry-run: the files form
/// of a `CedarPolicy` resource with `mode: dry-run`.
pub const DRY_RUN_SUFFIX: &str = ".dry-run.cedar";

/// `@mode`: absent (enforced, or dry-run in a `NAME.dry-run.cedar` file) or
/// `dry-run`.
fn mode(at: Place<'_>, cedar: &cedar_policy::Policy) -> Result<Mode, Diagnostic> {
    match cedar.annotation("mode") {
        None if at.file.relative.ends_with(DRY_RUN_SUFFIX) => Ok(Mode::DryRun),
        None => Ok(Mode::Enforce),
        Some("dry-run") => Ok(Mode::DryRun),
        Some(value) => {
            let problem = Problem::InvalidMode {
                value: value.to_owned(),
            };
            Err(at.diagnostic(span::annotation(at.text(), "mode"), problem))
        }
    }
}

/// One policy's text in its file.
#[derive(Clone, Copy)]
struct Place<'a> {
    file: &'a SourceFile,
    range: &'a Range<usize>,
}

impl Place<'_> {
    fn text(&self) -> &str {
        text(self.file, self.range)
    }

    /// A diagnostic underlining `part` (a range in the policy's text), or the
    /// whole policy when there is none.
    fn diagnostic(&self, part: Option<Range<usize>>, problem: Problem) -> Diagnostic {
        let part = part.map_or(self.range.clone(), |r| shift(r, self.range.start));
        self.file.span_diagnostic(problem, part.start, part.end)
    }
}

/// Each policy's and template's byte range in the file.
///
/// Cedar numbers them `policy0`, `policy1`, … in file order and keeps each one's
/// exact text, so searching for those texts one after another finds them.
fn spans(file: &SourceFile, set: &PolicySet) -> HashMap<PolicyId, Range<usize>> {
    let policies = set
        .policies()
        .map(|p| (p.id().clone(), p.to_cedar().unwrap_or_default()));
    let templates = set.templates().map(|t| (t.id().clone(), t.to_cedar()));
    let mut all: Vec<(PolicyId, String)> = policies.chain(templates).collect();
    all.sort_by_key(|(id, _)| number(id));
    let mut cursor = 0;
    let mut spans = HashMap::with_capacity(all.len());
    for (id, text) in all {
        let found = file.text.get(cursor..).and_then(|rest| rest.find(&text));
        let start = found.map_or(cursor, |offset| cursor + offset);
        cursor = start + found.map_or(0, |_| text.len());
        spans.insert(id, start..cursor);
    }
    spans
}

/// The policies in file order.
fn ordered(spans: &HashMap<PolicyId, Range<usize>>) -> Vec<(&PolicyId, &Range<usize>)> {
    let mut ordered: Vec<_> = spans.iter().collect();
    ordered.sort_by_key(|(_, range)| range.start);
    ordered
}

/// `N` of Cedar's generated id `policyN`.
fn number(id: &PolicyId) -> usize {
    id.to_string()
        .strip_prefix("policy")
        .and_then(|n| n.parse().ok())
        .unwrap_or(usize::MAX)
}

fn text<'a>(file: &'a SourceFile, range: &Range<usize>) -> &'a str {
    file.text.get(range.clone()).unwrap_or_default()
}

fn shift(range: Range<usize>, by: usize) -> Range<usize> {
    range.start + by..range.end + by
}
