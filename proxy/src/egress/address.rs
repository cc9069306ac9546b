//! From an external host's name to the addresses the sidecar connects to, and the
//! addresses it never connects to.
//!
//! The name is resolved by the sidecar, never taken from the app: an IP-literal
//! host is its own address; otherwise the proxy config's `resolve` map, then DNS.
//! [`check`] then refuses, for a destination not allowlisted by its exact name, any
//! address [`restricted`] names (link-local and metadata, unspecified, multicast,
//! broadcast), and for every destination this sidecar's own listeners. One
//! restricted address among several refuses them all: a name that resolves partly
//! into the metadata service is not one to trust.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};
use std::time::Duration;

use tokio::net::TcpStream;

use super::{EgressSettings, OwnListeners};
use crate::request::Refusal;

/// Why an external destination cannot be reached.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum AddressError {
    #[error("cannot resolve `{host}`: {reason}; check the name, or map it in the proxy's `resolve` setting")]
    Unresolvable { host: String, reason: String },
    #[error("`{host}` resolves to no address")]
    NoAddress { host: String },
    #[error("`{resource}` resolves to {ip}, {what}, which only an egress rule naming the host exactly may reach")]
    Restricted {
        resource: String,
        ip: IpAddr,
        what: &'static str,
    },
    #[error("`{resource}` resolves to {addr}, a listener of this sidecar (a loop)")]
    Loop { resource: String, addr: SocketAddr },
    #[error("cannot connect to `{resource}` at {addrs}: {reason}")]
    Unreachable {
        resource: String,
        addrs: String,
        reason: String,
    },
}

impl AddressError {
    /// Whether the egress layer refused the destination (BlackHole), rather than
    /// failed to reach it.
    pub fn is_refusal(&self) -> bool {
        matches!(self, Self::Restricted { .. } | Self::Loop { .. })
    }

    /// What the app gets: 403 BlackHole for a refusal, 502 otherwise.
    pub fn refusal(&self) -> Refusal {
        if self.is_refusal() {
            Refusal::BlackHole(self.to_string())
        } else {
            Refusal::BadGateway(self.to_string())
        }
    }
}

/// The addresses of `host` (canonical; IPv6 in brackets) on `port`.
///
/// # Errors
///
/// When DNS fails or times out after `timeout`, or finds nothing.
pub async fn resolve(
    settings: &EgressSettings,
    host: &str,
    port: u16,
    timeout: Duration,
) -> Result<Vec<SocketAddr>, AddressError> {
    if let Some(ip) = ip_literal(host) {
        return Ok(vec![SocketAddr::new(ip, port)]);
    }
    if let Some(ips) = settings.resolve.get(host) {
        return Ok(ips.iter().map(|ip| ip.socket(port)).collect());
    }
    let unresolvable = |reason: String| AddressError::Unresolvable {
        host: host.to_owned(),
        reason,
    };
    let found = tokio::time::timeout(timeout, tokio::net::lookup_host((host, port)))
        .await
        .map_err(|_| unresolvable(format!("no answer within {}s", timeout.as_secs_f32())))?
        .map_err(|e| unresolvable(e.to_string()))?;
    let addrs: Vec<SocketAddr> = found.collect();
    if addrs.is_empty() {
        return Err(AddressError::NoAddress { host: host.to_owned() });
    }
    Ok(addrs)
}

/// Checks the addresses `resource` resolved to; `explicit` when an egress rule
/// names its host exactly.
///
/// # Errors
///
/// The first address that is this sidecar's own listener, or (unless `explicit`)
/// [`restricted`].
pub fn check(resource: &str, addrs: &[SocketAddr], explicit: bool, own: &OwnListeners) -> Result<(), AddressError> {
    for addr in addrs {
        if own.contains(*addr) {
            return Err(AddressError::Loop {
                resource: resource.to_owned(),
                addr: *addr,
            });
        }
        if explicit {
            continue;
        }
        if let Some(what) = restricted(addr.ip()) {
            return Err(AddressError::Restricted {
                resource: resource.to_owned(),
                ip: addr.ip().to_canonical(),
                what,
            });
        }
    }
    Ok(())
}

/// What an address is, when Passthrough must never reach it: link-local (the
/// metadata services of most clouds among them: 169.254.169.254), another cloud
/// metadata address, unspecified, multicast or broadcast. IPv4-mapped and NAT64
/// (`64:ff9b::/96`) addresses are judged by the IPv4 address they carry.
pub fn restricted(ip: IpAddr) -> Option<&'static str> {
    match ip.to_canonical() {
        IpAddr::V4(v4) => restricted_v4(v4),
        IpAddr::V6(v6) => restricted_v6(v6),
    }
}

fn restricted_v4(ip: Ipv4Addr) -> Option<&'static str> {
    const ALIBABA_METADATA: Ipv4Addr = Ipv4Addr::new(100, 100, 100, 200);
    const AZURE_WIRESERVER: Ipv4Addr = Ipv4Addr::new(168, 63, 129, 16);
    if ip.is_link_local() {
        Some("a link-local address (cloud metadata services live there)")
    } else if ip == ALIBABA_METADATA || ip == AZURE_WIRESERVER {
        Some("a cloud metadata address")
    } else if ip.octets().first() == Some(&0) {
        Some("an unspecified address")
    } else if ip.is_multicast() {
        Some("a multicast address")
    } else if ip.is_broadcast() {
        Some("the broadcast address")
    } else {
        None
    }
}

fn restricted_v6(ip: Ipv6Addr) -> Option<&'static str> {
    const AWS_METADATA: Ipv6Addr = Ipv6Addr::new(0xfd00, 0x0ec2, 0, 0, 0, 0, 0, 0x0254);
    let segments = ip.segments();
    // IPv4 carried in IPv6: NAT64 (well-known and local-use prefixes) and the
    // deprecated IPv4-compatible form (`::a9fe:a9fe`); mapped ones were made
    // canonical above. Judged as the IPv4 address they reach.
    let embedded = match segments {
        [0x0064, 0xff9b, 0, 0, 0, 0, high, low] | [0x0064, 0xff9b, 0x0001, _, _, _, high, low] => Some((high, low)),
        [0, 0, 0, 0, 0, 0, high, low] if high != 0 => Some((high, low)),
        _ => None,
    };
    if let Some((high, low)) = embedded {
        let [a, b] = high.to_be_bytes();
        let [c, d] = low.to_be_bytes();
        return restricted_v4(Ipv4Addr::new(a, b, c, d));
    }
    if segments.first().is_some_and(|first| first & 0xffc0 == 0xfe80) {
        Some("a link-local address (cloud metadata services live there)")
    } else if ip == AWS_METADATA {
        Some("a cloud metadata address")
    } else if ip.is_unspecified() {
        Some("an unspecified address")
    } else if ip.is_multicast() {
        Some("a multicast address")
    } else {
        None
    }
}

/// Connects to the first of `addrs` that answers, all within `timeout`.
///
/// # Errors
///
/// When none answers in time.
pub async fn connect(resource: &str, addrs: &[SocketAddr], timeout: Duration) -> Result<TcpStream, AddressError> {
    let attempts = async {
        let mut last = None;
        for addr in addrs {
            match TcpStream::connect(addr).await {
                Ok(stream) => return Ok(stream),
                Err(e) => last = Some(format!("{addr}: {e}")),
            }
        }
        Err(last.unwrap_or_else(|| "no address".to_owned()))
    };
    let unreachable = |reason: String| AddressError::Unreachable {
        resource: resource.to_owned(),
        addrs: shown(addrs),
        reason,
    };
    let stream = tokio::time::timeout(timeout, attempts)
        .await
        .map_err(|_| unreachable(format!("no answer within {}s", timeout.as_secs_f32())))?
        .map_err(unreachable)?;
    // Latency over throughput for small requests; failing to set it changes nothing else.
    let _ = stream.set_nodelay(true);
    Ok(stream)
}

/// An IPv4 or bracketed IPv6 literal.
fn ip_literal(host: &str) -> Option<IpAddr> {
    let bare = host.strip_prefix('[').and_then(|h| h.strip_suffix(']')).unwrap_or(host);
    bare.parse().ok()
}

/// `a, b, c` for messages.
fn shown(addrs: &[SocketAddr]) -> String {
    let all: Vec<String> = addrs.iter().map(ToString::to_string).collect();
    all.join(", ")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn addresses_passthrough_never_reaches() {
        let restricted_ones = [
            "169.254.169.254",
            "169.254.0.1",
            "100.100.100.200",
            "0.0.0.0",
            "0.1.2.3",
            "224.0.0.1",
            "255.255.255.255",
            "fe80::1",
            "febf::1",
            "fd00:ec2::254",
            "::",
            "ff02::1",
            "::ffff:169.254.169.254",
            "64:ff9b::a9fe:a9fe",
            "64:ff9b:1::a9fe:a9fe",
            "::a9fe:a9fe",
            "168.63.129.16",
        ];
        for ip in restricted_ones {
            assert!(restricted(ip.parse().unwrap()).is_some(), "{ip}");
        }
        for ip in [
            "127.0.0.1",
            "10.0.0.1",
            "8.8.8.8",
            "100.100.100.201",
            "::1",
            "2001:db8::1",
            "fec0::1",
        ] {
            assert_eq!(restricted(ip.parse().unwrap()), None, "{ip}");
        }
    }

    #[tokio::test]
    async fn literals_and_the_resolve_map_come_before_dns() {
        let settings = EgressSettings::new([("api.stripe.com".to_owned(), vec!["127.0.0.2".parse().unwrap()])]);
        let timeout = Duration::from_secs(1);
        let found = resolve(&settings, "api.stripe.com", 443, timeout).await.unwrap();
        assert_eq!(found, ["127.0.0.2:443".parse().unwrap()]);
        let found = resolve(&settings, "[::1]", 80, timeout).await.unwrap();
        assert_eq!(found, ["[::1]:80".parse().unwrap()]);
        let found = resolve(&settings, "10.1.2.3", 80, timeout).await.unwrap();
        assert_eq!(found, ["10.1.2.3:80".parse().unwrap()]);
    }

    #[test]
    fn an_exact_rule_may_reach_restricted_addresses_but_nothing_reaches_the_sidecar_itself() {
        let own = OwnListeners::default();
        own.set(vec!["127.0.0.1:15001".parse().unwrap()]);
        let metadata: SocketAddr = "169.254.169.254:80".parse().unwrap();
        let public: SocketAddr = "203.0.113.7:80".parse().unwrap();
        assert!(check("m:80", &[metadata], true, &own).is_ok());
        let error = check("m:80", &[public, metadata], false, &own).unwrap_err();
        assert!(error.is_refusal());
        assert_eq!(
            error.to_string(),
            "`m:80` resolves to 169.254.169.254, a link-local address (cloud metadata services live there), which only an egress rule naming the host exactly may reach"
        );
        let looped = check("x:15001", &["127.0.0.1:15001".parse().unwrap()], true, &own).unwrap_err();
        assert_eq!(looped.refusal().status(), 403);
        assert!(looped.to_string().contains("a listener of this sidecar"), "{looped}");
    }
}
