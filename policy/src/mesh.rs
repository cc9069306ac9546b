//! Mesh-wide settings: `mesh.yaml`.
//!
//! ```yaml
//! trustDomain: shop.example      # required: the SPIFFE trust domain of every workload
//! outboundMode: REGISTRY_ONLY    # optional: REGISTRY_ONLY (default) or ALLOW_ANY
//! ```

use serde::{Deserialize, Serialize};

use palisade_ca::TrustDomain;

use crate::error::{Diagnostics, Problem};
use crate::source::SourceFile;
use crate::yaml::Step;

/// The file format of `mesh.yaml`.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct MeshFile {
    /// The SPIFFE trust domain, e.g. `shop.example`: every workload ID of the
    /// bundle is `spiffe://<trustDomain>/ns/<namespace>/sa/<service account>`.
    pub trust_domain: String,
    /// What a sidecar does with a destination that is neither a mesh service nor an
    /// allowlisted external host. Default: `REGISTRY_ONLY`.
    #[serde(default)]
    pub outbound_mode: OutboundMode,
}

/// What happens to traffic for a destination the bundle does not know.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum OutboundMode {
    /// Blocked (BlackHole) and audited. The default: fail closed.
    #[default]
    #[serde(rename = "REGISTRY_ONLY")]
    RegistryOnly,
    /// Allowed (Passthrough), flagged and audited.
    #[serde(rename = "ALLOW_ANY")]
    AllowAny,
}

impl OutboundMode {
    /// The spelling of the file format, `REGISTRY_ONLY` or `ALLOW_ANY`.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::RegistryOnly => "REGISTRY_ONLY",
            Self::AllowAny => "ALLOW_ANY",
        }
    }
}

/// Mesh settings, as parsed from `mesh.yaml`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MeshSettings {
    trust_domain: TrustDomain,
    outbound_mode: OutboundMode,
}

impl MeshSettings {
    /// The trust domain every workload of the bundle belongs to.
    pub fn trust_domain(&self) -> &TrustDomain {
        &self.trust_domain
    }

    /// What happens to traffic for unknown destinations.
    pub fn outbound_mode(&self) -> OutboundMode {
        self.outbound_mode
    }
}

/// Parses `mesh.yaml`; `None` after reporting what is wrong.
pub(crate) fn parse(file: &SourceFile, diagnostics: &mut Diagnostics) -> Option<MeshSettings> {
    let raw: MeshFile = match file.parse_yaml::<Option<MeshFile>>() {
        Ok(Some(raw)) => raw,
        Ok(None) => {
            diagnostics.push(file.file_diagnostic(Problem::Yaml {
                message: "`mesh.yaml` is empty; it needs at least `trustDomain`".into(),
            }));
            return None;
        }
        Err(diagnostic) => {
            diagnostics.push(diagnostic);
            return None;
        }
    };
    match TrustDomain::new(&raw.trust_domain) {
        Ok(trust_domain) => Some(MeshSettings {
            trust_domain,
            outbound_mode: raw.outbound_mode,
        }),
        Err(error) => {
            let problem = Problem::InvalidTrustDomain(error);
            diagnostics.push(file.yaml_diagnostic(problem, &[Step::Key("trustDomain")]));
            None
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse_text(text: &str) -> Result<MeshSettings, Diagnostics> {
        let mut diagnostics = Diagnostics::default();
        let file = SourceFile::in_memory("mesh.yaml", text);
        parse(&file, &mut diagnostics).ok_or(diagnostics)
    }

    #[test]
    fn the_outbound_mode_defaults_to_registry_only() {
        let mesh = parse_text("trustDomain: shop.example\n").unwrap();
        assert_eq!(mesh.trust_domain().as_str(), "shop.example");
        assert_eq!(mesh.outbound_mode(), OutboundMode::RegistryOnly);
    }

    #[test]
    fn allow_any_is_spelled_as_in_istio() {
        let mesh = parse_text("trustDomain: a\noutboundMode: ALLOW_ANY\n").unwrap();
        assert_eq!(mesh.outbound_mode(), OutboundMode::AllowAny);
    }

    #[test]
    fn errors_point_at_the_value() {
        let errors = parse_text("trustDomain: a\noutboundMode: allow_any\n").unwrap_err();
        let d = errors.iter().next().unwrap();
        assert_eq!(d.location().map(|l| (l.line, l.column)), Some((2, 15)), "{d}");
        let errors = parse_text("outboundMode: ALLOW_ANY\ntrustDomain: Shop.Example\n").unwrap_err();
        let d = errors.iter().next().unwrap();
        assert_eq!(d.location().map(|l| (l.line, l.column)), Some((2, 14)), "{d}");
        assert!(parse_text("").is_err());
    }
}
