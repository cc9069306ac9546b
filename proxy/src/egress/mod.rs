//! Egress control: what happens to an app's request for a destination outside the
//! mesh (`SECURITY.md` §4, `DESIGN.md` "The sidecar").
//!
//! A request's destination is its canonical host, never an address the app chose:
//! a mesh service (the registry's hosts; [`crate::outbound`] calls it over mTLS), or
//! **external**. An external destination is reached over plain HTTP (origin-form
//! with `Host`, or absolute-form `http://host:port/…`; the port is the host's, or
//! 80) or through a `CONNECT host:port` tunnel carrying TLS.
//!
//! # The decision ([`mod@decide`], pure)
//!
//! The workload's egress rules (`egress.yaml`, for this sidecar's own workload as
//! the registry lists it: a workload the registry does not list has no rules) say
//! whether `(host, port)` is **allowlisted** for the protocol, `http` for plain
//! HTTP and `tls` for a tunnel. The caller's Cedar egress policies are asked too,
//! with resource `ExternalHost::"HOST:PORT"` and the request's action (`connect`
//! for a tunnel). Then:
//!
//! | allowlisted | `outboundMode` | Cedar | outcome | audit kind |
//! | --- | --- | --- | --- | --- |
//! | yes | any | allow | forwarded | `allowlisted` |
//! | yes | any | deny | 403, the plain egress denial | `blackhole` (reason: the determining policy, or "no egress policy permits it") |
//! | no | `REGISTRY_ONLY` | not asked | **BlackHole**: 403 with the reason, nothing connected | `blackhole` |
//! | no | `ALLOW_ANY` | explicit deny (a `forbid`, or an evaluation error) | BlackHole, the reason names the forbid | `blackhole` |
//! | no | `ALLOW_ANY` | allow, or default deny | **Passthrough**: forwarded, flagged | `passthrough` |
//!
//! A flagged request counts as `decision="passthrough"` in the metrics and its
//! response carries `x-palisade-egress: passthrough`.
//!
//! # Addresses ([`address`])
//!
//! The sidecar resolves the name itself: the proxy config's `resolve` map first
//! (like curl's `--resolve` or Kubernetes `hostAliases`), then DNS; an IP-literal
//! host is its own address. It connects only to those addresses. Through
//! Passthrough it never connects to a link-local or cloud metadata address
//! (169.254.0.0/16, `fe80::/10`, `fd00:ec2::254`, 100.100.100.200), an unspecified,
//! multicast or broadcast address: if the name resolves to any such address the
//! request is BlackHole, and says why. The same holds for a host allowlisted by a
//! wildcard; only a rule that names the host exactly may reach those addresses
//! ("unless listed explicitly"). This sidecar's own listeners are never a
//! destination, allowlisted or not (a loop).
//!
//! # Plain HTTP ([`http`])
//!
//! HTTP/1.1, one new connection per request, sanitized like the mesh path:
//! hop-by-hop and identity headers stripped both ways, never an
//! `x-forwarded-client-cert` to the outside; the canonical path and the original
//! query in origin-form, the canonical host in `Host`.
//!
//! # Tunnels (`CONNECT`, [`tunnel`])
//!
//! HTTP/1.1 only (HTTP/2's `CONNECT` is 405). The target must be authority-form
//! `host:port` (anything else is 400) and carry no body; a mesh host is refused
//! (403: call it over HTTP). The decision above is made on the target's name, with
//! protocol `tls` and action `connect`, and the name resolved (and its addresses
//! checked) **before** the answer: a refusal is a 403 and nothing is connected.
//! Only then does the app get its `200`; no byte goes upstream before it
//! (CVE-2025-64763), and nothing is even connected before it.
//!
//! After the `200` the sidecar reads the app's TLS ClientHello, bounded (16 KiB and
//! a 5-byte record header in all, reassembled when it spans records, within
//! [`Limits::tunnel_hello_timeout`](crate::context::Limits::tunnel_hello_timeout)),
//! and parses its SNI without terminating TLS ([`sni`]). No SNI, an encrypted
//! ClientHello (ECH), or an SNI that is not the `CONNECT` host (compared canonical:
//! case-insensitive, no trailing dot) is refused with a fatal `unrecognized_name`
//! alert (domain fronting: audit kind `blackhole`, "SNI `x` does not match the
//! CONNECT target `y`"); bytes that are not a ClientHello, one too large or too
//! slow, with `handshake_failure`. The upstream then sees no connection at all. A
//! match connects to the resolved addresses, writes the ClientHello, and splices
//! both ways until either side closes or nothing moves for
//! [`Limits::tunnel_idle_timeout`](crate::context::Limits::tunnel_idle_timeout).
//! The `Host` the app sends inside TLS cannot be seen without terminating TLS: the
//! SNI is what is checked.
//!
//! Once a `CONNECT` is answered `200` the connection is no longer HTTP: the framing
//! watch ([`crate::request::framing`]) stopped at the `CONNECT` head and the tunnel
//! takes the bare socket from under it. A refused `CONNECT` is answered with
//! `Connection: close`: whatever the app pipelined after it is never read.

pub mod address;
pub mod decide;
pub mod http;
pub mod sni;
pub mod tunnel;

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::Arc;

use arc_swap::ArcSwap;
use palisade_audit::record::ExternalKind;

pub use self::decide::{decide, ExternalAsk, Outcome, Verdict};
use crate::audit::{self, ExternalFacts};
use crate::config::MappedAddr;
use crate::context::Context;

/// How a sidecar reaches external hosts.
#[derive(Debug, Default)]
pub struct EgressSettings {
    /// Canonical host name → the addresses it stands for, looked up before DNS.
    pub resolve: HashMap<String, Vec<MappedAddr>>,
    /// This sidecar's own listeners, never a destination.
    pub listeners: OwnListeners,
}

impl EgressSettings {
    /// Settings with this name mapping (keys canonical, as
    /// [`ProxyConfig::resolve`](crate::config::ProxyConfig::resolve) holds them).
    pub fn new(resolve: impl IntoIterator<Item = (String, Vec<MappedAddr>)>) -> Self {
        Self {
            resolve: resolve.into_iter().collect(),
            listeners: OwnListeners::default(),
        }
    }
}

/// The addresses this sidecar listens on, set once they are bound.
#[derive(Debug, Default)]
pub struct OwnListeners(ArcSwap<Vec<SocketAddr>>);

impl OwnListeners {
    /// Replaces the set.
    pub fn set(&self, addrs: Vec<SocketAddr>) {
        self.0.store(Arc::new(addrs));
    }

    /// Whether connecting to `addr` would reach one of them: the same address, or
    /// the same port on a loopback or unspecified address when the listener is
    /// bound to the unspecified address (it answers on every local address; those
    /// other than loopback cannot be told apart here).
    pub fn contains(&self, addr: SocketAddr) -> bool {
        let ip = addr.ip().to_canonical();
        self.0.load().iter().any(|listener| {
            listener.port() == addr.port()
                && (listener.ip().to_canonical() == ip
                    || (listener.ip().is_unspecified() && (ip.is_loopback() || ip.is_unspecified())))
        })
    }
}

/// Counts one external request or tunnel in the metrics, logs it, and records it
/// when the audit sink is enabled.
pub(crate) fn report(ctx: &Context, facts: &ExternalFacts<'_>) {
    ctx.metrics.external(facts.kind.as_str(), facts.host);
    let (request_id, host, port, sni, reason) = (facts.request_id, facts.host, facts.port, facts.sni, facts.reason);
    match facts.kind {
        ExternalKind::BlackHole => tracing::info!(request_id, host, port, sni, reason, "external destination refused"),
        ExternalKind::Passthrough => tracing::info!(
            request_id,
            host,
            port,
            sni,
            reason,
            "external destination let through (Passthrough)"
        ),
        ExternalKind::Allowlisted => {
            tracing::debug!(request_id, host, port, sni, reason, "external destination allowed")
        }
    }
    if ctx.audit.enabled() {
        ctx.audit.record(audit::external(facts));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn own_listeners_are_recognised_on_their_address_and_on_loopback_when_bound_to_any() {
        let listeners = OwnListeners::default();
        listeners.set(vec![
            "127.0.0.1:15001".parse().unwrap(),
            "0.0.0.0:15006".parse().unwrap(),
        ]);
        for own in [
            "127.0.0.1:15001",
            "[::ffff:127.0.0.1]:15001",
            "127.0.0.1:15006",
            "[::1]:15006",
            "0.0.0.0:15006",
        ] {
            assert!(listeners.contains(own.parse().unwrap()), "{own}");
        }
        for other in ["127.0.0.1:15002", "127.0.0.2:15001", "10.0.0.1:15001"] {
            assert!(!listeners.contains(other.parse().unwrap()), "{other}");
        }
    }
}
