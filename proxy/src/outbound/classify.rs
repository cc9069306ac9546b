//! Where an app's request is going: a service of the registry on one of its ports,
//! or somewhere else. Pure: a lookup in the snapshot, no I/O.
//!
//! Only the canonical host name decides, never an address the app chose
//! (`SECURITY.md` §4).

use palisade_authz::NormalizedHost;
use palisade_policy::registry::Service;

use crate::state::PolicyState;

/// The destination of a request.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Destination<'a> {
    /// A service of the registry, on one of its ports.
    Mesh(MeshTarget<'a>),
    /// A host of the registry, on a port its service does not list.
    UnlistedPort { service: &'a Service, port: u16 },
    /// Not a host of the registry: an external host, which the egress allowlist,
    /// BlackHole and Passthrough decide ([`crate::egress`]).
    Unknown,
}

/// A service of the registry and the port the request named.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct MeshTarget<'a> {
    pub service: &'a Service,
    /// The port named, or the service's first port when the request named none.
    pub port: u16,
}

/// Classifies a canonical host.
pub fn classify<'a>(state: &'a PolicyState, host: &NormalizedHost) -> Destination<'a> {
    let Some(service) = state.service_by_host(host.name()) else {
        return Destination::Unknown;
    };
    let Some(port) = host.port().or_else(|| service.ports().first().copied()) else {
        return Destination::Unknown;
    };
    if service.ports().contains(&port) {
        Destination::Mesh(MeshTarget { service, port })
    } else {
        Destination::UnlistedPort { service, port }
    }
}

#[cfg(test)]
mod tests {
    use palisade_authz::normalize_host;

    use super::*;
    use crate::testing::shop_state;

    #[test]
    fn hosts_and_ports() {
        let state = shop_state();
        let cases = [
            ("reviews.shop", Some(("reviews/reviews", 8080))),
            ("Reviews.Shop:8080", Some(("reviews/reviews", 8080))),
            ("reviews.reviews.svc.", Some(("reviews/reviews", 8080))),
            ("reviews.shop:80", Some(("reviews/reviews", 8080))),
            ("payments.shop:8080", Some(("payments/payments", 8080))),
        ];
        for (raw, expected) in cases {
            let host = normalize_host(raw, Some(80)).unwrap();
            let Destination::Mesh(target) = classify(&state, &host) else {
                panic!("{raw} is not a mesh destination");
            };
            assert_eq!(Some((target.service.id(), target.port)), expected, "{raw}");
        }
    }

    #[test]
    fn unknown_hosts_and_unlisted_ports() {
        let state = shop_state();
        let unknown = ["evil.example", "reviews.shop.evil", "shop", "127.0.0.1:15003"];
        for raw in unknown {
            let host = normalize_host(raw, Some(80)).unwrap();
            assert_eq!(classify(&state, &host), Destination::Unknown, "{raw}");
        }
        let host = normalize_host("reviews.shop:9090", Some(80)).unwrap();
        assert!(matches!(
            classify(&state, &host),
            Destination::UnlistedPort { port: 9090, .. }
        ));
    }
}
