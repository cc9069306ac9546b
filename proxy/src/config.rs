//! The proxy's settings: a YAML file (`palisade proxy run --config FILE`) whose
//! every field is also a command-line flag; flags win. Parsed once into a
//! [`ProxyConfig`], with every bad or missing value named.
//!
//! ```yaml
//! id: spiffe://shop.example/ns/web/sa/frontend   # the workload's SPIFFE ID
//! joinToken: 3f…                                   # first SVID (or serviceAccountTokenFile,
//!                                                  #  or svidCert + svidKey)
//! # serviceAccountTokenFile: /var/run/secrets/palisade/token  # in Kubernetes: a projected
//! #                                                  #  token (audience palisade-ca), re-read
//! #                                                  #  at every attempt
//! trustBundle: /etc/palisade/bundle.pem            # roots of the trust domain
//! ca: 127.0.0.1:8443                               # the CA
//! controlPlane: 127.0.0.1:15010                    # policy snapshots
//! inbound: 0.0.0.0:15006                           # mTLS from other sidecars
//! app: 127.0.0.1:8080                              # the workload, on loopback
//! appProtocol: auto                                # auto | http1 | h2
//! outbound: 127.0.0.1:15001                        # the app's plain HTTP, loopback only
//! admin: 127.0.0.1:15000                           # /ready /metrics /config
//! svidTtl: 1h                                      # requested SVID lifetime
//! audit: 127.0.0.1:15020                           # the audit service (records only logged without)
//! auditStrict: false                               # deny requests while records cannot be kept
//! auditSpool: /var/lib/palisade/audit.spool        # records wait here while the service is away
//! auditSpoolMaxBytes: 67108864                     # the spool's bound (64 MiB)
//! resolve:                                         # external host names, before DNS
//!   api.stripe.com: [127.0.0.2]                    # (flag: --resolve api.stripe.com=127.0.0.2;
//!                                                  #  IP:PORT also replaces the port)
//! ```

use std::collections::BTreeMap;
use std::net::{IpAddr, SocketAddr};
use std::path::{Path, PathBuf};
use std::time::Duration;

use palisade_authz::normalize_host;
use palisade_ca::{SpiffeId, SpiffeIdError};
use serde::Deserialize;

/// Where the outbound listener binds when nothing says otherwise (loopback only).
pub const DEFAULT_OUTBOUND: &str = "127.0.0.1:15001";
/// Where the inbound listener binds when nothing says otherwise.
pub const DEFAULT_INBOUND: &str = "0.0.0.0:15006";
/// Where the admin listener binds when nothing says otherwise.
pub const DEFAULT_ADMIN: &str = "127.0.0.1:15000";

/// How the sidecar talks to its app.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum AppProtocol {
    /// gRPC over HTTP/2 (prior knowledge), everything else over HTTP/1.1.
    #[default]
    Auto,
    Http1,
    H2,
}

/// The file, or the flags: every field optional until [`ConfigLayer::resolve`].
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct ConfigLayer {
    pub id: Option<String>,
    pub join_token: Option<String>,
    /// A projected Kubernetes ServiceAccount token file (audience `palisade-ca`).
    pub service_account_token_file: Option<PathBuf>,
    pub svid_cert: Option<PathBuf>,
    pub svid_key: Option<PathBuf>,
    pub trust_bundle: Option<PathBuf>,
    pub ca: Option<String>,
    pub control_plane: Option<String>,
    pub inbound: Option<SocketAddr>,
    pub app: Option<SocketAddr>,
    pub app_protocol: Option<AppProtocol>,
    pub outbound: Option<SocketAddr>,
    pub admin: Option<SocketAddr>,
    /// A duration such as `30m` or `1h`.
    pub svid_ttl: Option<String>,
    /// External host names mapped to addresses, looked up before DNS (like curl's
    /// `--resolve` or Kubernetes `hostAliases`): for tests and air-gapped sites.
    pub resolve: Option<BTreeMap<String, Vec<MappedAddr>>>,
    pub audit: Option<String>,
    pub audit_strict: Option<bool>,
    pub audit_spool: Option<PathBuf>,
    pub audit_spool_max_bytes: Option<u64>,
}

/// How the first SVID is obtained.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum FirstSvid {
    /// A single-use join token from `palisade ca token create`.
    JoinToken(String),
    /// A Kubernetes projected ServiceAccount token in this file, which the CA
    /// reviews with the API server; re-read at every attempt (the kubelet rotates it).
    ServiceAccountToken(PathBuf),
    /// An SVID already on disk (chain PEM and key PEM), renewed through the CA.
    Files { cert: PathBuf, key: PathBuf },
}

/// Complete, checked settings.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ProxyConfig {
    pub id: SpiffeId,
    pub first_svid: FirstSvid,
    pub trust_bundle: PathBuf,
    pub ca: String,
    pub control_plane: String,
    pub inbound: SocketAddr,
    pub app: SocketAddr,
    pub app_protocol: AppProtocol,
    pub outbound: SocketAddr,
    pub admin: SocketAddr,
    pub svid_ttl: Option<Duration>,
    /// Canonical external host name → the addresses it stands for.
    pub resolve: BTreeMap<String, Vec<MappedAddr>>,
    /// Where decision and external records go; `None`: only logged.
    pub audit: Option<AuditSettings>,
}

/// Sending records to the audit service.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AuditSettings {
    /// `host:port` of `palisade audit serve`.
    pub address: String,
    /// Deny requests (503) while records could not be kept.
    pub strict: bool,
    /// The spool file (one per proxy process).
    pub spool: PathBuf,
    pub spool_max_bytes: u64,
}

/// A setting is missing or wrong.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ConfigError {
    #[error("cannot read the proxy config `{path}`: {source}")]
    Read { path: PathBuf, source: std::io::Error },
    #[error("the proxy config `{path}` is not valid: {reason}")]
    Parse { path: PathBuf, reason: String },
    #[error("`{field}` is required: set it in the config file or pass --{flag}")]
    Missing { field: &'static str, flag: &'static str },
    #[error("`id` is not a SPIFFE ID: {0}")]
    Id(#[from] SpiffeIdError),
    #[error(
        "give the first SVID one way: `joinToken`, `serviceAccountTokenFile`, or `svidCert` with `svidKey` (only one)"
    )]
    Credential,
    #[error("`{field}` must be a loopback address, not `{addr}`: {why}")]
    NotLoopback {
        field: &'static str,
        addr: SocketAddr,
        why: &'static str,
    },
    #[error("`svidTtl` is `{0}`: use a duration such as `30m` or `1h` (at most 24h)")]
    Ttl(String),
    #[error("`auditStrict` needs an audit service: set `audit` (--audit HOST:PORT) too")]
    StrictWithoutAudit,
    #[error("the `resolve` entry `{entry}` is not valid: {reason}; write it as HOST=IP[,IP] (flag) or `HOST: [IP, …]` (file)")]
    Resolve { entry: String, reason: String },
}

impl ConfigLayer {
    /// Reads a YAML config file.
    ///
    /// # Errors
    ///
    /// When it cannot be read or parsed (unknown fields included).
    pub fn read(path: &Path) -> Result<Self, ConfigError> {
        let text = std::fs::read_to_string(path).map_err(|source| ConfigError::Read {
            path: path.to_owned(),
            source,
        })?;
        serde_yaml_ng::from_str(&text).map_err(|e| ConfigError::Parse {
            path: path.to_owned(),
            reason: e.to_string(),
        })
    }

    /// This layer with `over`'s set fields taking precedence.
    pub fn overridden_by(self, over: Self) -> Self {
        Self {
            id: over.id.or(self.id),
            join_token: over.join_token.or(self.join_token),
            service_account_token_file: over.service_account_token_file.or(self.service_account_token_file),
            svid_cert: over.svid_cert.or(self.svid_cert),
            svid_key: over.svid_key.or(self.svid_key),
            trust_bundle: over.trust_bundle.or(self.trust_bundle),
            ca: over.ca.or(self.ca),
            control_plane: over.control_plane.or(self.control_plane),
            inbound: over.inbound.or(self.inbound),
            app: over.app.or(self.app),
            app_protocol: over.app_protocol.or(self.app_protocol),
            outbound: over.outbound.or(self.outbound),
            admin: over.admin.or(self.admin),
            svid_ttl: over.svid_ttl.or(self.svid_ttl),
            resolve: match (self.resolve, over.resolve) {
                (Some(mut base), Some(over)) => {
                    base.extend(over);
                    Some(base)
                }
                (base, over) => over.or(base),
            },
            audit: over.audit.or(self.audit),
            audit_strict: over.audit_strict.or(self.audit_strict),
            audit_spool: over.audit_spool.or(self.audit_spool),
            audit_spool_max_bytes: over.audit_spool_max_bytes.or(self.audit_spool_max_bytes),
        }
    }

    /// The `--resolve HOST=IP[,IP]` flags, as a layer's `resolve` (none when no
    /// flag was given).
    ///
    /// # Errors
    ///
    /// The first flag that is not `HOST=IP[,IP]`.
    pub fn resolve_flags<S: AsRef<str>>(flags: &[S]) -> Result<Option<BTreeMap<String, Vec<MappedAddr>>>, ConfigError> {
        if flags.is_empty() {
            return Ok(None);
        }
        let mut map = BTreeMap::new();
        for flag in flags {
            let (host, ips) = parse_resolve_flag(flag.as_ref())?;
            map.insert(host, ips);
        }
        Ok(Some(map))
    }

    /// Checks the settings and fills in defaults.
    ///
    /// # Errors
    ///
    /// The first missing or wrong setting.
    pub fn resolve(self) -> Result<ProxyConfig, ConfigError> {
        let missing = |field, flag| ConfigError::Missing { field, flag };
        let id = SpiffeId::parse(&self.id.ok_or(missing("id", "id"))?)?;
        let first_svid = match (
            self.join_token,
            self.service_account_token_file,
            self.svid_cert,
            self.svid_key,
        ) {
            (Some(token), None, None, None) => FirstSvid::JoinToken(token),
            (None, Some(file), None, None) => FirstSvid::ServiceAccountToken(file),
            (None, None, Some(cert), Some(key)) => FirstSvid::Files { cert, key },
            _ => return Err(ConfigError::Credential),
        };
        let outbound = self.outbound.unwrap_or_else(|| default_addr(DEFAULT_OUTBOUND));
        let app = self.app.ok_or(missing("app", "app"))?;
        loopback(
            "outbound",
            outbound,
            "the outbound port speaks plain HTTP as this workload",
        )?;
        loopback("app", app, "requests reach the app unencrypted")?;
        let admin = self.admin.unwrap_or_else(|| default_addr(DEFAULT_ADMIN));
        loopback(
            "admin",
            admin,
            "the admin pages list callers and configuration without authentication",
        )?;
        let svid_ttl = self.svid_ttl.map(|t| parse_ttl(&t)).transpose()?;
        let resolve = canonical_resolve(self.resolve.unwrap_or_default())?;
        let audit = match self.audit {
            Some(address) => Some(AuditSettings {
                address,
                strict: self.audit_strict.unwrap_or(false),
                spool: self.audit_spool.unwrap_or_else(|| default_spool(&id, outbound)),
                spool_max_bytes: self
                    .audit_spool_max_bytes
                    .unwrap_or(palisade_audit::deliver::DEFAULT_SPOOL_MAX_BYTES),
            }),
            None if self.audit_strict == Some(true) => return Err(ConfigError::StrictWithoutAudit),
            None => None,
        };
        Ok(ProxyConfig {
            id,
            first_svid,
            trust_bundle: self.trust_bundle.ok_or(missing("trustBundle", "trust-bundle"))?,
            ca: self.ca.ok_or(missing("ca", "ca"))?,
            control_plane: self.control_plane.ok_or(missing("controlPlane", "control-plane"))?,
            inbound: self.inbound.unwrap_or_else(|| default_addr(DEFAULT_INBOUND)),
            app,
            app_protocol: self.app_protocol.unwrap_or_default(),
            outbound,
            admin,
            svid_ttl,
            resolve,
            audit,
        })
    }
}

/// Where a `resolve` entry sends a name: an IP address, or an `IP:PORT` (`[V6]:PORT`)
/// whose port replaces the one the app asked for (a stand-in on a local port).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Deserialize)]
#[serde(try_from = "String")]
pub struct MappedAddr {
    pub ip: IpAddr,
    pub port: Option<u16>,
}

impl MappedAddr {
    /// The socket address for a request that named `port`.
    pub fn socket(self, port: u16) -> SocketAddr {
        SocketAddr::new(self.ip, self.port.unwrap_or(port))
    }
}

impl From<IpAddr> for MappedAddr {
    fn from(ip: IpAddr) -> Self {
        Self { ip, port: None }
    }
}

impl std::str::FromStr for MappedAddr {
    type Err = std::net::AddrParseError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s.parse::<IpAddr>() {
            Ok(ip) => Ok(ip.into()),
            Err(_) => s.parse::<SocketAddr>().map(|a| Self {
                ip: a.ip(),
                port: Some(a.port()),
            }),
        }
    }
}

impl TryFrom<String> for MappedAddr {
    type Error = String;

    fn try_from(s: String) -> Result<Self, Self::Error> {
        s.parse().map_err(|_| format!("`{s}` is not an IP address or IP:PORT"))
    }
}

/// One `--resolve` flag: `HOST=IP[,IP]` (each may be `IP:PORT`).
///
/// # Errors
///
/// When it is not of that form (the host is checked by [`ConfigLayer::resolve`]).
pub fn parse_resolve_flag(flag: &str) -> Result<(String, Vec<MappedAddr>), ConfigError> {
    let bad = |reason: &str| ConfigError::Resolve {
        entry: flag.to_owned(),
        reason: reason.to_owned(),
    };
    let (host, ips) = flag.split_once('=').ok_or_else(|| bad("it has no `=`"))?;
    let ips = ips
        .split(',')
        .map(|ip| {
            ip.trim()
                .parse::<MappedAddr>()
                .map_err(|_| bad("an address is not an IP address or IP:PORT"))
        })
        .collect::<Result<Vec<_>, _>>()?;
    Ok((host.trim().to_owned(), ips))
}

/// The map with canonical host names (lower case, no trailing dot) as keys, each
/// with at least one address.
fn canonical_resolve(raw: BTreeMap<String, Vec<MappedAddr>>) -> Result<BTreeMap<String, Vec<MappedAddr>>, ConfigError> {
    let mut map = BTreeMap::new();
    for (host, ips) in raw {
        let bad = |reason: String| ConfigError::Resolve {
            entry: host.clone(),
            reason,
        };
        let name = normalize_host(&host, None).map_err(|e| bad(e.to_string()))?;
        if name.port().is_some() {
            return Err(bad("a host name here has no port".to_owned()));
        }
        if ips.is_empty() {
            return Err(bad("it maps to no address".to_owned()));
        }
        map.insert(name.name().to_owned(), ips);
    }
    Ok(map)
}

/// The spool when none is named: in the temp directory, one per identity and
/// outbound port (so two proxies on one machine never share one).
fn default_spool(id: &SpiffeId, outbound: SocketAddr) -> PathBuf {
    let name: String = id
        .as_str()
        .trim_start_matches("spiffe://")
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || c == '.' || c == '-' {
                c
            } else {
                '_'
            }
        })
        .collect();
    std::env::temp_dir().join(format!("palisade-audit-{name}-{}.spool", outbound.port()))
}

fn default_addr(addr: &str) -> SocketAddr {
    addr.parse().unwrap_or(SocketAddr::from(([127, 0, 0, 1], 0)))
}

fn loopback(field: &'static str, addr: SocketAddr, why: &'static str) -> Result<(), ConfigError> {
    if addr.ip().is_loopback() {
        Ok(())
    } else {
        Err(ConfigError::NotLoopback { field, addr, why })
    }
}

/// `90s`, `30m`, `1h`: a number and one unit; between 1 minute and 24 hours.
pub fn parse_ttl(text: &str) -> Result<Duration, ConfigError> {
    let bad = || ConfigError::Ttl(text.to_owned());
    let split = text.find(|c: char| !c.is_ascii_digit()).ok_or_else(bad)?;
    let (number, unit) = text.split_at(split);
    let n: u64 = number.parse().map_err(|_| bad())?;
    let secs = match unit {
        "s" => Some(n),
        "m" => n.checked_mul(60),
        "h" => n.checked_mul(3600),
        _ => None,
    }
    .ok_or_else(bad)?;
    if !(60..=86_400).contains(&secs) {
        return Err(bad());
    }
    Ok(Duration::from_secs(secs))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn layer(yaml: &str) -> ConfigLayer {
        serde_yaml_ng::from_str(yaml).unwrap()
    }

    const BASE: &str = "id: spiffe://td/ns/a/sa/b\njoinToken: t\ntrustBundle: b.pem\nca: 127.0.0.1:1\ncontrolPlane: 127.0.0.1:2\napp: 127.0.0.1:8080\n";

    #[test]
    fn a_complete_file_resolves_with_safe_defaults() {
        let config = layer(BASE).resolve().unwrap();
        assert_eq!(config.outbound, "127.0.0.1:15001".parse().unwrap());
        assert_eq!(config.admin, "127.0.0.1:15000".parse().unwrap());
        assert_eq!(config.app_protocol, AppProtocol::Auto);
        assert_eq!(config.first_svid, FirstSvid::JoinToken("t".into()));
    }

    #[test]
    fn a_service_account_token_file_is_the_third_way_to_the_first_svid() {
        let kubernetes = BASE.replace(
            "joinToken: t\n",
            "serviceAccountTokenFile: /var/run/secrets/palisade/token\n",
        );
        let config = layer(&kubernetes).resolve().unwrap();
        assert_eq!(
            config.first_svid,
            FirstSvid::ServiceAccountToken("/var/run/secrets/palisade/token".into())
        );
        let both = format!("{BASE}serviceAccountTokenFile: /var/run/secrets/palisade/token\n");
        assert!(
            matches!(layer(&both).resolve(), Err(ConfigError::Credential)),
            "a join token and a token file together are refused"
        );
        let with_files = format!("{kubernetes}svidCert: c.pem\nsvidKey: k.pem\n");
        assert!(matches!(layer(&with_files).resolve(), Err(ConfigError::Credential)));
        let none = BASE.replace("joinToken: t\n", "");
        assert!(matches!(layer(&none).resolve(), Err(ConfigError::Credential)));
        let flag = ConfigLayer {
            service_account_token_file: Some("/flag/token".into()),
            ..ConfigLayer::default()
        };
        let over_file = layer(&kubernetes).overridden_by(flag).resolve().unwrap();
        assert_eq!(
            over_file.first_svid,
            FirstSvid::ServiceAccountToken("/flag/token".into())
        );
    }

    #[test]
    fn flags_override_the_file() {
        let flags = ConfigLayer {
            app: Some("127.0.0.1:9090".parse().unwrap()),
            ..ConfigLayer::default()
        };
        let config = layer(BASE).overridden_by(flags).resolve().unwrap();
        assert_eq!(config.app, "127.0.0.1:9090".parse().unwrap());
    }

    #[test]
    fn mistakes_are_named() {
        let cases = [("idd: x\n", "unknown field"), ("ca: [1]\n", "invalid type")];
        for (yaml, expected) in cases {
            let error = serde_yaml_ng::from_str::<ConfigLayer>(yaml).unwrap_err().to_string();
            assert!(error.contains(expected), "{yaml}: {error}");
        }
        let no_app = BASE.replace("app: 127.0.0.1:8080\n", "");
        assert!(matches!(
            layer(&no_app).resolve(),
            Err(ConfigError::Missing { field: "app", .. })
        ));
        let both = format!("{BASE}svidCert: c.pem\nsvidKey: k.pem\n");
        assert!(matches!(layer(&both).resolve(), Err(ConfigError::Credential)));
        let exposed = format!("{BASE}outbound: 0.0.0.0:15001\n");
        assert!(matches!(
            layer(&exposed).resolve(),
            Err(ConfigError::NotLoopback { field: "outbound", .. })
        ));
        let bad_id = BASE.replace("spiffe://td/ns/a/sa/b", "spiffe://TD/x");
        assert!(matches!(layer(&bad_id).resolve(), Err(ConfigError::Id(_))));
        let ttl = format!("{BASE}svidTtl: 2d\n");
        assert!(matches!(layer(&ttl).resolve(), Err(ConfigError::Ttl(_))));
    }

    #[test]
    fn resolve_maps_canonical_names_and_flags_win_per_host() {
        let file = format!("{BASE}resolve:\n  API.Stripe.com.: [127.0.0.2, \"::1\"]\n  example.com: [10.0.0.1]\n");
        let flags = ConfigLayer {
            resolve: ConfigLayer::resolve_flags(&["example.com=127.0.0.3,127.0.0.4"]).unwrap(),
            ..ConfigLayer::default()
        };
        let config = layer(&file).overridden_by(flags).resolve().unwrap();
        let ip = |s: &str| s.parse::<MappedAddr>().unwrap();
        assert_eq!(config.resolve["api.stripe.com"], [ip("127.0.0.2"), ip("::1")]);
        assert_eq!(config.resolve["example.com"], [ip("127.0.0.3"), ip("127.0.0.4")]);
        // IP:PORT sends the name to a stand-in on another port.
        let flags = ConfigLayer::resolve_flags(&["api.stripe.com=127.0.0.9:8443,[::1]:9443"]).unwrap();
        let config = ConfigLayer {
            resolve: flags,
            ..layer(BASE)
        }
        .resolve()
        .unwrap();
        let mapped = &config.resolve["api.stripe.com"];
        assert_eq!(mapped[0].socket(443), "127.0.0.9:8443".parse().unwrap());
        assert_eq!(mapped[1].socket(443), "[::1]:9443".parse().unwrap());
        assert_eq!(ip("10.0.0.1").socket(443), "10.0.0.1:443".parse().unwrap());
        assert_eq!(ConfigLayer::resolve_flags::<&str>(&[]).unwrap(), None);
        for bad in ["example.com", "example.com=", "example.com=x.y", "=127.0.0.1"] {
            let parsed = ConfigLayer::resolve_flags(&[bad]).and_then(|map| {
                ConfigLayer {
                    resolve: map,
                    ..layer(BASE)
                }
                .resolve()
            });
            assert!(matches!(parsed, Err(ConfigError::Resolve { .. })), "{bad}: {parsed:?}");
        }
        for yaml in ["resolve:\n  a.example: []\n", "resolve:\n  a.example:80: [127.0.0.1]\n"] {
            let config = layer(&format!("{BASE}{yaml}")).resolve();
            assert!(matches!(config, Err(ConfigError::Resolve { .. })), "{yaml}: {config:?}");
        }
    }
}
