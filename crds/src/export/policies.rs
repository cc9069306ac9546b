//! Policy files → CedarPolicies: `policies/NS/DIRECTION/NAME.cedar` is the
//! CedarPolicy `NAME` of `NS` (`NAME.dry-run.cedar`: `mode: dry-run`), its text
//! verbatim.

use std::collections::BTreeMap;

use palisade_policy::bundle::DRY_RUN_SUFFIX;
use palisade_policy::BundleFiles;

use super::names::{is_dns_subdomain, suggest};
use super::ExportError;
use crate::resources::cedar_policy::MAX_POLICY_BYTES;
use crate::resources::{CedarPolicy, CedarPolicySpec, PolicyDirection, PolicyMode};

/// A CedarPolicy per policy file, in file order.
pub(super) fn policies(files: &BundleFiles) -> Result<Vec<CedarPolicy>, ExportError> {
    let mut names: BTreeMap<(String, String), String> = BTreeMap::new();
    let mut out = Vec::new();
    for (path, text) in files.iter() {
        let Some((namespace, direction, file)) = split(path) else {
            continue;
        };
        let (name, mode) = match file.strip_suffix(DRY_RUN_SUFFIX) {
            Some(name) => (name, PolicyMode::DryRun),
            None => (file.strip_suffix(".cedar").unwrap_or(file), PolicyMode::Enforce),
        };
        check(path, name, text)?;
        let key = (namespace.to_owned(), name.to_owned());
        if let Some(first) = names.insert(key, path.to_owned()) {
            return Err(ExportError::DuplicatePolicyName {
                namespace: namespace.to_owned(),
                name: name.to_owned(),
                first,
                second: path.to_owned(),
            });
        }
        let spec = CedarPolicySpec {
            direction,
            mode,
            policy: text.to_owned(),
        };
        let mut policy = CedarPolicy::new(name, spec);
        policy.metadata.namespace = Some(namespace.to_owned());
        out.push(policy);
    }
    Ok(out)
}

/// `policies/NS/DIRECTION/FILE` → its parts.
fn split(path: &str) -> Option<(&str, PolicyDirection, &str)> {
    let mut parts = path.strip_prefix("policies/")?.split('/');
    let (namespace, direction, file) = (parts.next()?, parts.next()?, parts.next()?);
    let direction = match direction {
        "egress" => PolicyDirection::Egress,
        "ingress" => PolicyDirection::Ingress,
        _ => return None,
    };
    parts.next().is_none().then_some((namespace, direction, file))
}

/// A name the API server takes, and text a CedarPolicy may hold.
fn check(path: &str, name: &str, text: &str) -> Result<(), ExportError> {
    if !is_dns_subdomain(name) || name.ends_with(".dry-run") {
        let suggestion = match path.ends_with(DRY_RUN_SUFFIX) {
            true => format!("{}{DRY_RUN_SUFFIX}", suggest(name)),
            false => format!("{}.cedar", suggest(name)),
        };
        return Err(ExportError::PolicyName {
            file: path.to_owned(),
            name: name.to_owned(),
            suggestion,
        });
    }
    if text.is_empty() {
        return Err(ExportError::EmptyPolicy { file: path.to_owned() });
    }
    if text.len() > MAX_POLICY_BYTES {
        return Err(ExportError::PolicyTooLarge {
            file: path.to_owned(),
            limit: MAX_POLICY_BYTES,
        });
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn export(paths: &[&str]) -> Result<Vec<CedarPolicy>, ExportError> {
        let files: BundleFiles = paths.iter().map(|p| ((*p).to_owned(), "// x".to_owned())).collect();
        policies(&files)
    }

    #[test]
    fn a_file_is_a_policy_named_by_its_stem() {
        let exported = export(&[
            "mesh.yaml",
            "policies/web/egress/a.cedar",
            "policies/web/ingress/b.dry-run.cedar",
        ])
        .unwrap();
        let summary: Vec<_> = (exported.iter())
            .map(|p| (p.metadata.name.as_deref().unwrap(), p.spec.direction, p.spec.mode))
            .collect();
        assert_eq!(
            summary,
            [
                ("a", PolicyDirection::Egress, PolicyMode::Enforce),
                ("b", PolicyDirection::Ingress, PolicyMode::DryRun)
            ]
        );
        assert_eq!(exported[0].spec.policy, "// x");
    }

    #[test]
    fn a_stem_used_twice_in_a_namespace_is_refused() {
        for paths in [
            ["policies/web/egress/a.cedar", "policies/web/ingress/a.cedar"],
            ["policies/web/egress/a.cedar", "policies/web/egress/a.dry-run.cedar"],
        ] {
            let error = export(&paths).unwrap_err().to_string();
            assert!(
                error.contains("CedarPolicy names are unique per namespace; rename one of the files"),
                "{error}"
            );
        }
        assert!(export(&["policies/web/egress/a.cedar", "policies/api/egress/a.cedar"]).is_ok());
    }

    #[test]
    fn a_stem_that_is_not_a_kubernetes_name_is_refused_with_a_rename() {
        let error = export(&["policies/web/egress/Checkout_Egress.cedar"])
            .unwrap_err()
            .to_string();
        assert!(error.contains("`policies/web/egress/Checkout_Egress.cedar`"), "{error}");
        assert!(error.contains("rename the file to `checkout-egress.cedar`"), "{error}");
        let error = export(&["policies/web/egress/a.dry-run.dry-run.cedar"])
            .unwrap_err()
            .to_string();
        assert!(error.contains("rename the file to `a.dry-run.cedar`"), "{error}");
    }
}
