//! The check of one `CedarPolicy`: its text, at the path the controller would
//! give it, in the bundle the controller last published, through the same loader
//! as `palisade policy validate`.
//!
//! A diagnostic is this policy's fault when it is in this policy's file, or when
//! it is elsewhere but appears only because this policy was added (an `@id` that
//! another file already uses is reported at whichever of the two the loader reads
//! second). Problems the bundle had already are someone else's: the policy is
//! admitted with a warning. An internal error of the loader is always a refusal:
//! nothing could be checked.

use std::collections::BTreeSet;
use std::sync::Arc;

use palisade_policy::{BundleFiles, Diagnostic, Diagnostics, Problem};

use super::review::{CODE_INVALID, CODE_MALFORMED};
use super::ReviewContext;
use crate::resources::cedar_policy::MAX_POLICY_BYTES;
use crate::resources::{CedarPolicySpec, PolicyDirection, PolicyMode};
use crate::source::{id_owner, policy_file, NAMESPACE_POLICIES, NAMESPACE_POLICY_BYTES};

/// The longest refusal message, in bytes. The API server passes the message on
/// to `kubectl` and into its audit log; this keeps a long list of problems
/// readable and those records small. Longer messages are cut between two
/// diagnostics, with a note saying how many were left out.
pub const MAX_MESSAGE_BYTES: usize = 12 * 1024;
/// The longest warning, in bytes: the API server truncates longer ones.
pub const MAX_WARNING_BYTES: usize = 256;
/// Room kept for the note that says what was cut.
const NOTE_BYTES: usize = 160;

/// A `CedarPolicy` as the webhook checks it.
#[derive(Debug, Clone)]
pub(super) struct Named {
    pub(super) namespace: String,
    pub(super) name: String,
    pub(super) spec: CedarPolicySpec,
}

/// What the check found.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) enum Verdict {
    /// Admit it, with these warnings.
    Valid { warnings: Vec<String> },
    /// Refuse it with this code and message.
    Invalid { code: u16, message: String },
}

/// Checks `policy` against the bundle of `context`.
pub(super) fn check(policy: &Named, context: &ReviewContext) -> Verdict {
    if let Err(refusal) = admissible(policy) {
        return refusal;
    }
    let path = policy_file(&policy.namespace, &policy.spec, &policy.name);
    let mut files = base_files(policy, context);
    if let Err(refusal) = within_budget(policy, &files) {
        return refusal;
    }
    Arc::make_mut(&mut files).insert(path.as_str(), policy.spec.policy.as_str());
    match palisade_policy::load_files(&files) {
        Ok(bundle) => own_ids(policy, &path, &bundle, &files),
        Err(found) => judge(policy, &path, files, found),
    }
}

/// Refuses what needs no loading: names the bundle path cannot hold, and text
/// over the CRD's limit (which the API server enforces before us, but a request
/// may come from anyone who can reach the port).
fn admissible(policy: &Named) -> Result<(), Verdict> {
    check_names(policy).map_err(|message| Verdict::Invalid {
        code: CODE_MALFORMED,
        message,
    })?;
    if policy.spec.policy.len() > MAX_POLICY_BYTES {
        let (namespace, name) = (&policy.namespace, &policy.name);
        let message = format!(
            "CedarPolicy {namespace}/{name} is invalid: its policy text is over the limit of {MAX_POLICY_BYTES} bytes; split it into several CedarPolicies"
        );
        return Err(Verdict::Invalid {
            code: CODE_INVALID,
            message,
        });
    }
    Ok(())
}

/// Admits the policy, warning about each `@id` that starts with another
/// namespace's name and `-`: that namespace may take it later, and this policy
/// would then be left out.
fn own_ids(policy: &Named, path: &str, bundle: &palisade_policy::Bundle, files: &BundleFiles) -> Verdict {
    let mut namespaces: BTreeSet<&str> = (files.paths())
        .filter_map(|p| p.strip_prefix("policies/")?.split('/').next())
        .collect();
    namespaces.insert(&policy.namespace);
    let foreign = (bundle.policies().iter()).filter(|p| p.file() == path).find_map(|p| {
        Some((
            p.id(),
            id_owner(p.id(), &namespaces).filter(|o| *o != policy.namespace)?,
        ))
    });
    let warnings = match foreign {
        None => Vec::new(),
        Some((id, owner)) => {
            let mut warning = format!(
                "policy id `{}` starts with `{owner}-`: namespace `{owner}` may use it, and then this policy is left \
                 out; start the ids of namespace `{}` with `{}-`",
                escape(id),
                policy.namespace,
                policy.namespace
            );
            cut(&mut warning, MAX_WARNING_BYTES);
            vec![warning]
        }
    };
    Verdict::Valid { warnings }
}

/// Refuses a policy that would put its namespace over its budget (the controller
/// would hold the namespace on its last valid set): `files` is the bundle
/// without any version of this policy.
fn within_budget(policy: &Named, files: &BundleFiles) -> Result<(), Verdict> {
    let prefix = format!("policies/{}/", policy.namespace);
    let (count, bytes) = (files.iter())
        .filter(|(path, _)| path.starts_with(&prefix))
        .fold((1_usize, policy.spec.policy.len()), |(n, b), (_, text)| {
            (n + 1, b + text.len())
        });
    if count <= NAMESPACE_POLICIES && bytes <= NAMESPACE_POLICY_BYTES {
        return Ok(());
    }
    let (namespace, name) = (&policy.namespace, &policy.name);
    let message = format!(
        "CedarPolicy {namespace}/{name} is refused: with it, namespace `{namespace}` would have {count} CedarPolicies \
         of {bytes} bytes in all, over what one namespace may have ({NAMESPACE_POLICIES} policies, \
         {NAMESPACE_POLICY_BYTES} bytes); remove or merge policies of the namespace"
    );
    Err(Verdict::Invalid {
        code: CODE_INVALID,
        message,
    })
}

/// Splits what loading `files` (with the policy at `path`) `found` into this
/// policy's problems and the bundle's own; only the first refuse it.
fn judge(policy: &Named, path: &str, mut files: Arc<BundleFiles>, found: Diagnostics) -> Verdict {
    let elsewhere = |d: &Diagnostic| d.file() != Some(path) && !is_internal(d);
    let before = match found.iter().any(elsewhere) {
        true => {
            Arc::make_mut(&mut files).remove(path);
            palisade_policy::load_files(&files).err().unwrap_or_default()
        }
        false => Diagnostics::default(),
    };
    let (ours, theirs): (Vec<Diagnostic>, Vec<Diagnostic>) = found
        .into_iter()
        .partition(|d| !elsewhere(d) || !before.iter().any(|b| b == d));
    match ours.is_empty() {
        true => Verdict::Valid {
            warnings: vec![warning(&theirs)],
        },
        false => Verdict::Invalid {
            code: CODE_INVALID,
            message: message(policy, &ours.into()),
        },
    }
}

/// The current bundle without any version of this resource's file (its
/// direction or mode may be changing), or a bundle with nothing but `mesh.yaml`
/// when the controller has published none yet. Shared until it is changed.
fn base_files(policy: &Named, context: &ReviewContext) -> Arc<BundleFiles> {
    let mut files = context.files.clone().unwrap_or_else(|| Arc::new(minimal(context)));
    for direction in [PolicyDirection::Ingress, PolicyDirection::Egress] {
        for mode in [PolicyMode::Enforce, PolicyMode::DryRun] {
            let spec = CedarPolicySpec {
                direction,
                mode,
                policy: String::new(),
            };
            let path = policy_file(&policy.namespace, &spec, &policy.name);
            if files.contains(&path) {
                Arc::make_mut(&mut files).remove(&path);
            }
        }
    }
    files
}

/// `mesh.yaml` with the context's trust domain, and nothing else.
fn minimal(context: &ReviewContext) -> BundleFiles {
    let mut files = BundleFiles::new();
    // A trust domain is `[a-z0-9._-]` only: quoted, it is always a YAML string.
    files.insert(
        "mesh.yaml",
        format!("trustDomain: \"{}\"\n", context.trust_domain.as_str()),
    );
    files
}

/// The namespace must be a DNS label and the name a DNS subdomain not ending in
/// `.dry-run`: the API server ensures both, and the bundle path relies on them.
fn check_names(policy: &Named) -> Result<(), String> {
    let (namespace, name) = (&policy.namespace, &policy.name);
    let label = |s: &str| {
        !s.is_empty()
            && s.len() <= 63
            && s.bytes()
                .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-')
    };
    if !label(namespace) {
        return Err(format!(
            "`{}` is not a namespace name; a CedarPolicy lives in a namespace",
            escape(namespace)
        ));
    }
    if name.len() > 253 || !name.split('.').all(label) {
        return Err(format!(
            "`{}` is not a resource name; use lower-case letters, digits, `-` and `.`",
            escape(name)
        ));
    }
    if name.ends_with(".dry-run") {
        return Err("a CedarPolicy name may not end in `.dry-run` (that suffix marks dry-run policy files); set `spec.mode: dry-run` instead".to_owned());
    }
    Ok(())
}

/// At most 64 characters of `s`, control characters escaped.
fn escape(s: &str) -> String {
    s.chars().take(64).flat_map(char::escape_debug).collect()
}

fn is_internal(diagnostic: &Diagnostic) -> bool {
    matches!(diagnostic.problem(), Problem::Internal(_))
}

/// The refusal: a line naming the resource, then what `palisade policy validate`
/// prints for `diagnostics`, cut at [`MAX_MESSAGE_BYTES`] between two
/// diagnostics (inside the first one only when that alone is too long).
fn message(policy: &Named, diagnostics: &Diagnostics) -> String {
    let mut message = format!(
        "CedarPolicy {}/{} is invalid:\n{diagnostics}",
        policy.namespace, policy.name
    );
    if message.len() <= MAX_MESSAGE_BYTES {
        return message;
    }
    let budget = MAX_MESSAGE_BYTES - NOTE_BYTES;
    message.truncate(message.find('\n').map_or(0, |i| i + 1));
    let mut shown = 0;
    for diagnostic in diagnostics {
        let text = diagnostic.to_string();
        let separator = if shown == 0 { "" } else { "\n\n" };
        if shown > 0 && message.len() + separator.len() + text.len() > budget {
            break;
        }
        message.push_str(separator);
        message.push_str(&text);
        shown += 1;
    }
    // The first diagnostic alone may be too long: it is cut inside.
    let cut_inside = message.len() > budget;
    cut(&mut message, budget);
    message.push_str("\n\n...");
    if cut_inside {
        message.push_str(" (cut short)");
    }
    match diagnostics.len() - shown {
        0 => {}
        1 => message.push_str(" and 1 more problem not shown"),
        n => message.push_str(&format!(" and {n} more problems not shown")),
    }
    message.push_str("; run `palisade policy validate` on the bundle to see them all");
    message
}

/// The warning for problems the bundle had before this policy.
fn warning(theirs: &[Diagnostic]) -> String {
    let first = theirs.iter().find_map(Diagnostic::file).unwrap_or("the bundle");
    let count = theirs.len();
    let problems = if count == 1 { "problem" } else { "problems" };
    let mut warning = format!(
        "this CedarPolicy is valid, but the bundle has {count} {problems} elsewhere (first in `{}`); see the status of the palisade resources",
        escape(first)
    );
    cut(&mut warning, MAX_WARNING_BYTES);
    warning
}

/// Cuts `s` to at most `max` bytes, on a character boundary.
fn cut(s: &mut String, max: usize) {
    if s.len() > max {
        let end = (0..=max).rev().find(|&i| s.is_char_boundary(i)).unwrap_or(0);
        s.truncate(end);
    }
}
