//! CedarPolicies → `policies/NS/DIRECTION/NAME.cedar`, text verbatim.
//!
//! A policy in `mode: dry-run` is the file `NAME.dry-run.cedar`, every policy of
//! which is dry-run. Line and column inside the file are those inside
//! `spec.policy`, so a diagnostic points into the resource as it is.

use std::collections::{BTreeMap, BTreeSet};

use palisade_policy::bundle::DRY_RUN_SUFFIX;

use crate::resources::{CedarPolicy, CedarPolicySpec, PolicyMode};

/// The bundle path of the CedarPolicy `name` of `namespace`:
/// `policies/NS/DIRECTION/NAME.cedar`, or `NAME.dry-run.cedar` in dry-run mode.
pub fn policy_file(namespace: &str, spec: &CedarPolicySpec, name: &str) -> String {
    let suffix = match spec.mode {
        PolicyMode::Enforce => ".cedar",
        PolicyMode::DryRun => DRY_RUN_SUFFIX,
    };
    format!("policies/{namespace}/{}/{name}{suffix}", spec.direction.as_str())
}

/// A CedarPolicy as a bundle file.
#[derive(Debug, Clone)]
pub(super) struct PolicyItem<'a> {
    /// Its index in the cluster state.
    pub(super) index: usize,
    pub(super) path: String,
    pub(super) text: &'a str,
}

/// The policy files, by namespace; and the policies that cannot be a file, with
/// why.
pub(super) fn items(policies: &[CedarPolicy]) -> (BTreeMap<&str, Vec<PolicyItem<'_>>>, BTreeMap<usize, String>) {
    let mut by_namespace: BTreeMap<&str, Vec<PolicyItem<'_>>> = BTreeMap::new();
    let mut invalid = BTreeMap::new();
    let mut paths = BTreeSet::new();
    for (index, policy) in policies.iter().enumerate() {
        let (Some(namespace), Some(name)) = (policy.metadata.namespace.as_deref(), policy.metadata.name.as_deref())
        else {
            continue;
        };
        let path = policy_file(namespace, &policy.spec, name);
        if name.ends_with(".dry-run") || !paths.insert(path.clone()) {
            invalid.insert(index, dry_run_name(namespace, name));
            by_namespace.entry(namespace).or_default();
            continue;
        }
        let item = PolicyItem {
            index,
            path,
            text: &policy.spec.policy,
        };
        by_namespace.entry(namespace).or_default().push(item);
    }
    (by_namespace, invalid)
}

/// A name ending in `.dry-run` would make an enforced policy's file a dry-run one.
fn dry_run_name(namespace: &str, name: &str) -> String {
    format!(
        "error: a CedarPolicy name may not end in `.dry-run` (that suffix marks dry-run policy files); \
         rename `{namespace}/{name}` and set `spec.mode: dry-run` instead"
    )
}

/// How a diagnostic names a policy file: the resource and the field its text is
/// in, `CedarPolicy NS/NAME spec.policy`.
pub(super) fn resource_ref(policy: &CedarPolicy) -> String {
    let namespace = policy.metadata.namespace.as_deref().unwrap_or_default();
    let name = policy.metadata.name.as_deref().unwrap_or_default();
    format!("CedarPolicy {namespace}/{name} spec.policy")
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::resources::PolicyDirection;
    use crate::source::test_objects::policy;

    #[test]
    fn a_policy_is_a_file_of_its_namespace_and_direction() {
        let mut spec = policy("web", "frontend", PolicyDirection::Egress, "x").spec;
        assert_eq!(
            policy_file("web", &spec, "frontend"),
            "policies/web/egress/frontend.cedar"
        );
        spec.mode = PolicyMode::DryRun;
        spec.direction = PolicyDirection::Ingress;
        assert_eq!(
            policy_file("web", &spec, "frontend"),
            "policies/web/ingress/frontend.dry-run.cedar"
        );
    }

    #[test]
    fn an_enforced_policy_cannot_pose_as_a_dry_run_file() {
        let mut dry = policy("web", "a", PolicyDirection::Egress, "x");
        dry.spec.mode = PolicyMode::DryRun;
        let sneaky = policy("web", "a.dry-run", PolicyDirection::Egress, "y");
        let policies = [dry, sneaky];
        let (files, invalid) = items(&policies);
        assert_eq!(files["web"].len(), 1);
        assert_eq!(files["web"][0].path, "policies/web/egress/a.dry-run.cedar");
        assert!(invalid[&1].contains("may not end in `.dry-run`"), "{invalid:?}");
    }
}
