//! Mesh-wide settings: `mesh.yaml`.
//!
//! ```yaml
//! trustDomain: shop.example      # required: the SPIFFE trust domain of every workload
//! outboundMode: REGISTRY_ONLY    # optional: REGISTRY_ONLY (default) or ALLOW_ANY
//! leafTtl: 1h                    # optional: the SVID lifetime sidecars ask for (1m to 24h)
//! ```

use std::time::Duration;

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
    /// The lifetime of the workload certificates sidecars ask the CA for (`30m`,
    /// `1h`, from `1m` to `24h`); sidecars renew at about half of it. Default: the
    /// CA's own default (1 h). A sidecar's own `svidTtl` setting wins.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub leaf_ttl: Option<String>,
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
    leaf_ttl: Option<Duration>,
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

    /// The SVID lifetime sidecars ask for; `None` for the CA's default.
    pub fn leaf_ttl(&self) -> Option<Duration> {
        self.leaf_ttl
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
    let leaf_ttl = match raw.leaf_ttl.as_deref().map(parse_ttl) {
        None => Ok(None),
        Some(Some(ttl)) => Ok(Some(ttl)),
        Some(None) => {
            let value = raw.leaf_ttl.clone().unwrap_or_default();
            let problem = Problem::InvalidLeafTtl { value };
            diagnostics.push(file.yaml_diagnostic(problem, &[Step::Key("leafTtl")]));
            Err(())
        }
    };
    let trust_domain = TrustDomain::new(&raw.trust_domain).map_err(|error| {
        let problem = Problem::InvalidTrustDomain(error);
        diagnostics.push(file.yaml_diagnostic(problem, &[Step::Key("trustDomain")]));
    });
    Some(MeshSettings {
        trust_domain: trust_domain.ok()?,
        outbound_mode: raw.outbound_mode,
        leaf_ttl: leaf_ttl.ok()?,
    })
}

/// The longest certificate lifetime `leafTtl` may ask for (the CA's cap).
const MAX_LEAF_TTL: Duration = Duration::from_secs(24 * 3600);
/// The shortest: below a minute, renewals would be near constant.
const MIN_LEAF_TTL: Duration = Duration::from_secs(60);

/// `30s`, `30m`, `1h`: a number and a unit, within the bounds.
fn parse_ttl(text: &str) -> Option<Duration> {
    let unit = match text.chars().last()? {
        's' => 1,
        'm' => 60,
        'h' => 3600,
        _ => return None,
    };
    let digits = text.get(..text.len() - 1)?;
    if digits.is_empty() || digits.len() > 6 || !digits.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    let ttl = Duration::from_secs(digits.parse::<u64>().ok()?.checked_mul(unit)?);
    (MIN_LEAF_TTL..=MAX_LEAF_TTL).contains(&ttl).then_some(ttl)
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

    #[test]
    fn the_leaf_ttl_is_a_bounded_duration() {
        assert_eq!(parse_text("trustDomain: a\n").unwrap().leaf_ttl(), None);
        let mesh = parse_text("trustDomain: a\nleafTtl: 30m\n").unwrap();
        assert_eq!(mesh.leaf_ttl(), Some(Duration::from_secs(1800)));
        assert_eq!(
            parse_text("trustDomain: a\nleafTtl: 24h\n").unwrap().leaf_ttl(),
            Some(MAX_LEAF_TTL)
        );
        for bad in ["25h", "30", "0m", "59s", "1d", "-1h", "1.5h", "h", "9999999h", "1 h"] {
            let errors = parse_text(&format!("trustDomain: a\nleafTtl: {bad}\n")).unwrap_err();
            let d = errors.iter().next().unwrap();
            assert_eq!(d.location().map(|l| l.line), Some(2), "{bad}: {d}");
            assert!(d.to_string().contains("from `1m` to `24h`"), "{bad}: {d}");
        }
    }
}
