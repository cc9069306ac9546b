//! Services and EndpointSlices → `services.yaml`.
//!
//! Only Services with a selector are mesh services (one without is not served by
//! pods of the mesh). Each one's `servedBy` is the identities of the live pods its
//! selector picks in its namespace; one that picks none is left out, since
//! nothing could serve it. Its endpoints are the IP addresses of its
//! EndpointSlices whose `ready` condition is not `false`, each with the target
//! pod's (of its own namespace) sidecar port ([`INBOUND_PORT_ANNOTATION`], default [`DEFAULT_INBOUND_PORT`]).
//!
//! Hosts: the [`HOSTS_ANNOTATION`] when present, else `NAME.NS.svc` and
//! `NAME.NS.svc.CLUSTER_DOMAIN`. Whoever may create a Service in a namespace
//! sets that annotation, so three rules keep a Service from taking a name that is
//! not its namespace's, each leaving the Service out (never the other party):
//!
//! - a cluster-style host (`….svc`, `….svc.CLUSTER_DOMAIN`) must be one of the
//!   Service's own;
//! - any other host must be delegated to the Service's namespace by the
//!   `MeshConfig`'s `hostDelegations` (an exact name, or `*.domain` for exactly
//!   one more label), which only cluster administrators write;
//! - when two Services claim one host, the better right keeps it (an own
//!   cluster name, then an exact delegation, then a wildcard one), then the
//!   older Service (then by namespace and name), and the other is left out
//!   ([`claim_hosts`], run on each round's Services after every other cut).
//!
//! A name delegated to a namespace is a mesh name: an `EgressAllowlist` that
//! lists it is the one the loader refuses, so an allowlist cannot push a Service
//! out of the mesh either.

use std::collections::{BTreeMap, BTreeSet};
use std::net::IpAddr;

use k8s_openapi::api::core::v1::Service;
use k8s_openapi::api::discovery::v1::{Endpoint, EndpointSlice};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;
use palisade_policy::registry::ServiceEntry;

use palisade_authz::{host_matches, normalize_host};

use super::workloads::LivePods;
use super::SourceOptions;
use crate::labels::{
    service_policy_labels, DEFAULT_INBOUND_PORT, HOSTS_ANNOTATION, INBOUND_PORT_ANNOTATION, SERVICE_NAME_LABEL,
};
use crate::resources::HostDelegation;

/// A mesh service and where it came from.
#[derive(Debug, Clone)]
pub(super) struct ServiceItem {
    /// `(namespace, name)`.
    pub(super) key: (String, String),
    created: Option<Time>,
    pub(super) entry: ServiceEntry,
    /// Each host (canonical) and by what right the Service claims it.
    grants: BTreeMap<String, Grant>,
}

/// By what right a Service claims a host; the better right wins a contested
/// host, whatever the ages.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
enum Grant {
    /// One of its own cluster names.
    Own,
    /// A delegation of exactly this name to its namespace.
    Exact,
    /// A `*.domain` delegation to its namespace.
    Wildcard,
}

/// Who may claim which host names: what [`services`] checks each Service's
/// hosts against.
#[derive(Debug, Clone, Copy)]
pub(super) struct HostRules<'a> {
    pub(super) options: &'a SourceOptions,
    /// The `MeshConfig`'s delegations.
    pub(super) delegations: &'a [HostDelegation],
}

/// The mesh services in namespace and name order, and a note for each Service
/// left out.
pub(super) fn services(
    services: &[Service],
    slices: &[EndpointSlice],
    pods: &LivePods<'_>,
    rules: &HostRules<'_>,
) -> (Vec<ServiceItem>, Vec<String>) {
    let mut notes = Vec::new();
    let slices = SlicesByService::new(slices);
    let mut items: Vec<ServiceItem> = (services.iter())
        .filter_map(|service| item(service, &slices, pods, rules, &mut notes))
        .collect();
    items.sort_by(|a, b| a.key.cmp(&b.key));
    (items, notes)
}

/// EndpointSlices by the `(namespace, name)` of the Service they belong to
/// (label `kubernetes.io/service-name`): each Service finds its own without a
/// scan of every slice.
struct SlicesByService<'a>(BTreeMap<(String, String), Vec<&'a EndpointSlice>>);

impl<'a> SlicesByService<'a> {
    fn new(slices: &'a [EndpointSlice]) -> Self {
        let mut by_service: BTreeMap<(String, String), Vec<&EndpointSlice>> = BTreeMap::new();
        for slice in slices {
            let namespace = slice.metadata.namespace.as_ref();
            let service = (slice.metadata.labels.as_ref()).and_then(|l| l.get(SERVICE_NAME_LABEL));
            if let (Some(namespace), Some(service)) = (namespace, service) {
                let key = (namespace.clone(), service.clone());
                by_service.entry(key).or_default().push(slice);
            }
        }
        Self(by_service)
    }

    fn of(&self, namespace: &str, name: &str) -> &[&'a EndpointSlice] {
        let key = (namespace.to_owned(), name.to_owned());
        self.0.get(&key).map_or(&[], Vec::as_slice)
    }
}

fn item(
    service: &Service,
    slices: &SlicesByService<'_>,
    pods: &LivePods<'_>,
    rules: &HostRules<'_>,
    notes: &mut Vec<String>,
) -> Option<ServiceItem> {
    let meta = &service.metadata;
    let (namespace, name) = (meta.namespace.as_deref()?, meta.name.as_deref()?);
    let spec = service.spec.as_ref()?;
    let selector = spec.selector.as_ref().filter(|s| !s.is_empty())?;
    let served_by: BTreeSet<String> = pods.selected(namespace, selector).map(|p| p.identity.clone()).collect();
    if served_by.is_empty() {
        notes.push(format!(
            "service `{namespace}/{name}` is left out: its selector picks no running pod, so nothing could serve it"
        ));
        return None;
    }
    let grants = hosts(service, namespace, name, rules, notes)?;
    // The same port twice (TCP and UDP) is one port of the mesh.
    let mut seen = BTreeSet::new();
    let ports: Vec<i64> = (spec.ports.iter().flatten())
        .map(|p| i64::from(p.port))
        .filter(|p| seen.insert(*p))
        .collect();
    if ports.is_empty() {
        notes.push(format!("service `{namespace}/{name}` is left out: it has no port"));
        return None;
    }
    let entry = ServiceEntry {
        namespace: namespace.to_owned(),
        name: name.to_owned(),
        hosts: grants.iter().map(|(host, _)| host.clone()).collect(),
        ports,
        labels: service_policy_labels(meta.labels.as_ref().unwrap_or(&BTreeMap::new())),
        served_by: served_by.into_iter().collect(),
        endpoints: endpoints(namespace, name, slices, pods, notes),
    };
    Some(ServiceItem {
        key: (namespace.to_owned(), name.to_owned()),
        created: meta.creation_timestamp.clone(),
        entry,
        grants: (grants.iter())
            .map(|(host, grant)| (canonical_host(host), *grant))
            .collect(),
    })
}

/// The annotation's hosts, or the cluster names, each with the right to it;
/// `None` (with a note) when the annotation lists a host the Service may not
/// claim.
fn hosts(
    service: &Service,
    namespace: &str,
    name: &str,
    rules: &HostRules<'_>,
    notes: &mut Vec<String>,
) -> Option<Vec<(String, Grant)>> {
    let own = [
        format!("{name}.{namespace}.svc"),
        format!("{name}.{namespace}.svc.{}", rules.options.cluster_domain),
    ];
    let annotation = (service.metadata.annotations.as_ref()).and_then(|a| a.get(HOSTS_ANNOTATION));
    let Some(annotation) = annotation else {
        return Some(own.iter().map(|host| (host.clone(), Grant::Own)).collect());
    };
    let granted: Result<Vec<(String, Grant)>, String> = (annotation.split(','))
        .map(str::trim)
        .filter(|h| !h.is_empty())
        .map(|host| Ok((host.to_owned(), grant(host, namespace, &own, rules)?)))
        .collect();
    let granted = granted.and_then(|hosts| match hosts.is_empty() {
        true => Err("no host".to_owned()),
        false => Ok(hosts),
    });
    let hosts = match granted {
        Ok(hosts) => dedupe(hosts),
        Err(why) => {
            notes.push(format!(
                "service `{namespace}/{name}` is left out: its `{HOSTS_ANNOTATION}` lists {why}; it may list its own \
             `{}` and `{}`, and the names the MeshConfig `default` delegates to namespace `{namespace}` in \
             `hostDelegations`",
                own[0], own[1]
            ));
            return None;
        }
    };
    Some(hosts)
}

/// `hosts` without a host that differs from an earlier one only in case or a
/// trailing dot (the loader would refuse the Service for it).
fn dedupe(hosts: Vec<(String, Grant)>) -> Vec<(String, Grant)> {
    let mut seen = BTreeSet::new();
    hosts
        .into_iter()
        .filter(|(host, _)| seen.insert(canonical_host(host)))
        .collect()
}

/// The right by which the Service whose own names are `own` claims `host`; why
/// it may not, when it may not.
fn grant(host: &str, namespace: &str, own: &[String; 2], rules: &HostRules<'_>) -> Result<Grant, String> {
    let canonical = canonical_host(host);
    if own.contains(&canonical) {
        return Ok(Grant::Own);
    }
    let cluster_suffix = format!(".svc.{}", rules.options.cluster_domain);
    if canonical.ends_with(".svc") || canonical.ends_with(&cluster_suffix) {
        return Err(format!("`{host}`, a cluster name that is not its own"));
    }
    let normalized = match normalize_host(host, None) {
        Ok(normalized) if normalized.port().is_none() => normalized,
        _ => return Err(format!("`{host}`, which is not a host name")),
    };
    let patterns = (rules.delegations.iter())
        .filter(|d| d.namespace == namespace)
        .flat_map(|d| &d.hosts)
        .filter(|pattern| host_matches(pattern, &normalized));
    let best = patterns
        .map(|pattern| match pattern.starts_with("*.") {
            true => Grant::Wildcard,
            false => Grant::Exact,
        })
        .min();
    best.ok_or_else(|| format!("`{host}`, which is not delegated to its namespace"))
}

/// A host name compared case-insensitively and without a trailing dot.
pub(crate) fn canonical_host(host: &str) -> String {
    host.strip_suffix('.').unwrap_or(host).to_ascii_lowercase()
}

/// `IP:PORT` (`[IPv6]:PORT`) of every ready address of the Service's slices.
/// An address that is not an IP address (a slice of `addressType: FQDN`, or
/// anything else the loader would refuse) is left out, with one note for the
/// Service: a tenant's slices must not cost the loader a diagnostic each.
fn endpoints(
    namespace: &str,
    name: &str,
    slices: &SlicesByService<'_>,
    pods: &LivePods<'_>,
    notes: &mut Vec<String>,
) -> Vec<String> {
    let mut out = BTreeSet::new();
    let mut not_ip = 0_usize;
    for endpoint in slices.of(namespace, name).iter().flat_map(|slice| &slice.endpoints) {
        let ready = endpoint.conditions.as_ref().and_then(|c| c.ready);
        if ready == Some(false) {
            continue;
        }
        let Some(port) = inbound_port(namespace, endpoint, pods, notes) else {
            continue;
        };
        for address in &endpoint.addresses {
            match address.parse::<IpAddr>() {
                Ok(IpAddr::V4(ip)) => out.insert(format!("{ip}:{port}")),
                Ok(IpAddr::V6(ip)) => out.insert(format!("[{ip}]:{port}")),
                Err(_) => {
                    not_ip += 1;
                    continue;
                }
            };
        }
    }
    if not_ip > 0 {
        notes.push(format!(
            "service `{namespace}/{name}`: {not_ip} endpoint addresses of its EndpointSlices are not IP addresses \
             and are left out"
        ));
    }
    out.into_iter().collect()
}

/// The sidecar port of the endpoint's pod; `None` (with a note) when its
/// annotation is not a port.
fn inbound_port(namespace: &str, endpoint: &Endpoint, pods: &LivePods<'_>, notes: &mut Vec<String>) -> Option<u16> {
    // A slice points only at pods of its own namespace: a `targetRef` elsewhere
    // is ignored (the endpoint keeps the default port).
    let target = (endpoint.target_ref.as_ref())
        .filter(|r| r.kind.as_deref().is_none_or(|k| k == "Pod"))
        .filter(|r| r.namespace.as_deref().is_none_or(|ns| ns == namespace));
    let pod = target
        .and_then(|t| t.name.as_deref())
        .and_then(|name| pods.get(namespace, name));
    let Some(raw) = pod.and_then(|pod| pod.annotations.get(INBOUND_PORT_ANNOTATION)) else {
        return Some(DEFAULT_INBOUND_PORT);
    };
    match raw.trim().parse::<u16>() {
        Ok(port) if port > 0 => Some(port),
        _ => {
            let pod = pod.map_or(String::new(), |p| format!("{}/{}", p.namespace, p.name));
            notes.push(format!(
                "pod `{pod}` is left out of the endpoints: its `{INBOUND_PORT_ANNOTATION}` `{raw}` is not a port \
                 from 1 to 65535"
            ));
            None
        }
    }
}

/// Gives each host to one of the Services claiming it: the one with the best
/// right to it ([`Grant`]), then the oldest, then by namespace and name. A
/// Service that loses any of its hosts is left out, and only a Service that is
/// kept can take a host from another: the losers are settled round by round,
/// first those beaten by a Service that loses nothing (when every loser was
/// beaten by another loser, they all go). The controller runs this on the
/// Services of each round, after budget cuts and the loader's refusals, so a
/// Service that is left out for another reason holds no host.
pub(super) fn claim_hosts<'a>(
    items: impl Iterator<Item = &'a ServiceItem> + Clone,
) -> (BTreeSet<(String, String)>, Vec<String>) {
    let mut candidates: Vec<&ServiceItem> = items.collect();
    let mut notes = Vec::new();
    // Each round leaves at least one Service out, so there are at most as many rounds.
    for _ in 0..=candidates.len() {
        let winners = winners(&candidates);
        let lost = |item: &'a ServiceItem| -> Option<(&'a str, &'a ServiceItem)> {
            (item.grants.keys()).find_map(|host| {
                let winner = *winners.get(host.as_str())?;
                (winner.key != item.key).then_some((host.as_str(), winner))
            })
        };
        let losers: BTreeSet<&(String, String)> = candidates
            .iter()
            .filter(|i| lost(i).is_some())
            .map(|i| &i.key)
            .collect();
        if losers.is_empty() {
            break;
        }
        let beaten_by_keeper = |item: &ServiceItem| {
            (item.grants.keys()).any(|host| {
                winners
                    .get(host.as_str())
                    .is_some_and(|w| w.key != item.key && !losers.contains(&w.key))
            })
        };
        let settled = candidates.iter().any(|i| beaten_by_keeper(i));
        let (out, kept): (Vec<&ServiceItem>, Vec<&ServiceItem>) = candidates
            .iter()
            .partition(|i| losers.contains(&i.key) && (!settled || beaten_by_keeper(i)));
        for item in out {
            if let Some((host, winner)) = lost(item) {
                let (namespace, name) = &item.key;
                notes.push(format!(
                    "service `{namespace}/{name}` is left out: host `{host}` belongs to service `{}/{}`, which \
                     claims it by a better right or first; a host names one service",
                    winner.key.0, winner.key.1
                ));
            }
        }
        candidates = kept;
    }
    (candidates.iter().map(|i| i.key.clone()).collect(), notes)
}

/// The Service each host goes to, among `candidates`.
fn winners<'a>(candidates: &[&'a ServiceItem]) -> BTreeMap<&'a str, &'a ServiceItem> {
    fn priority<'i>(item: &'i ServiceItem, host: &str) -> (Grant, bool, &'i Option<Time>, &'i (String, String)) {
        let grant = item.grants.get(host).copied().unwrap_or(Grant::Wildcard);
        (grant, item.created.is_none(), &item.created, &item.key)
    }
    let mut winners: BTreeMap<&str, &ServiceItem> = BTreeMap::new();
    for item in candidates {
        for host in item.grants.keys() {
            let better = (winners.get(host.as_str())).is_none_or(|w| priority(item, host) < priority(w, host));
            if better {
                winners.insert(host, item);
            }
        }
    }
    winners
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::source::test_objects::{map, pod, service, slice};
    use k8s_openapi::api::core::v1::Pod;

    fn build(services_: &[Service], slices: &[EndpointSlice], pods: &[Pod]) -> (Vec<ServiceItem>, Vec<String>) {
        with_rules(services_, slices, pods, &[])
    }

    fn with_rules(
        services_: &[Service],
        slices: &[EndpointSlice],
        pods: &[Pod],
        delegations: &[HostDelegation],
    ) -> (Vec<ServiceItem>, Vec<String>) {
        let live = LivePods::new(pods, "td");
        let options = SourceOptions::default();
        let rules = HostRules {
            options: &options,
            delegations,
        };
        let (items, mut notes) = services(services_, slices, &live, &rules);
        let (kept, claim_notes) = claim_hosts(items.iter());
        notes.extend(claim_notes);
        (items.into_iter().filter(|i| kept.contains(&i.key)).collect(), notes)
    }

    fn delegate(namespace: &str, hosts: &[&str]) -> HostDelegation {
        HostDelegation {
            namespace: namespace.to_owned(),
            hosts: hosts.iter().map(|h| (*h).to_owned()).collect(),
        }
    }

    fn annotated(namespace: &str, name: &str, hosts: &str) -> Service {
        let mut svc = service(namespace, name, &[("app", "web")], &[80]);
        svc.metadata.annotations = Some(map(&[(HOSTS_ANNOTATION, hosts)]));
        svc
    }

    fn pod_in(namespace: &str) -> Pod {
        let mut p = pod(namespace, "w", "web", &[("app", "web")]);
        p.metadata.namespace = Some(namespace.into());
        p
    }

    fn web_pod(name: &str) -> Pod {
        pod("shop", name, "web", &[("app", "web")])
    }

    #[test]
    fn a_service_is_served_by_the_identities_its_selector_picks() {
        let mut other = pod("shop", "api-1", "api", &[("app", "api")]);
        other.metadata.namespace = Some("elsewhere".into());
        other.metadata.labels = Some(map(&[("app", "web")]));
        let mut svc = service("shop", "web", &[("app", "web")], &[80, 8080]);
        svc.metadata.labels = Some(map(&[("tier", "front"), ("palisade.dev/x", "y")]));
        let (items, notes) = build(&[svc], &[], &[web_pod("web-1"), web_pod("web-2"), other]);
        assert!(notes.is_empty(), "{notes:?}");
        let entry = &items[0].entry;
        assert_eq!(
            entry.served_by,
            ["spiffe://td/ns/shop/sa/web"],
            "pods of other namespaces never serve"
        );
        assert_eq!(entry.hosts, ["web.shop.svc", "web.shop.svc.cluster.local"]);
        assert_eq!(entry.ports, [80, 8080]);
        assert_eq!(entry.labels, map(&[("tier", "front")]));
    }

    #[test]
    fn a_service_whose_selector_picks_no_pod_is_left_out_and_reported() {
        let services_ = [service("shop", "ghost", &[("app", "ghost")], &[80])];
        let (items, notes) = build(&services_, &[], &[web_pod("web-1")]);
        assert!(items.is_empty());
        assert_eq!(
            notes,
            ["service `shop/ghost` is left out: its selector picks no running pod, so nothing could serve it"]
        );
        let mut headless = service("shop", "plain", &[], &[80]);
        headless.spec.as_mut().unwrap().selector = None;
        let (items, notes) = build(&[headless], &[], &[web_pod("web-1")]);
        assert!(
            items.is_empty() && notes.is_empty(),
            "a Service without selector is not a mesh service"
        );
    }

    #[test]
    fn endpoints_are_the_ready_addresses_with_each_pods_sidecar_port() {
        let mut annotated = web_pod("web-2");
        annotated.metadata.annotations = Some(map(&[(INBOUND_PORT_ANNOTATION, "15001")]));
        let slices = [
            slice(
                "shop",
                "web",
                &[
                    ("10.0.0.1", "web-1", Some(true)),
                    ("10.0.0.2", "web-2", None),
                    ("10.0.0.3", "web-3", Some(false)),
                ],
            ),
            slice("shop", "web", &[("fd00::1", "web-1", Some(true))]),
            slice("shop", "other", &[("10.9.9.9", "web-1", Some(true))]),
        ];
        let services_ = [service("shop", "web", &[("app", "web")], &[80])];
        let (items, _) = build(&services_, &slices, &[web_pod("web-1"), annotated]);
        assert_eq!(
            items[0].entry.endpoints,
            ["10.0.0.1:15006", "10.0.0.2:15001", "[fd00::1]:15006"]
        );
    }

    #[test]
    fn endpoint_addresses_that_are_not_ip_addresses_are_left_out_with_one_note() {
        let slices = [slice(
            "shop",
            "web",
            &[
                ("a1.123", "web-1", Some(true)),
                ("web.example", "web-1", Some(true)),
                ("010.0.0.1", "web-1", Some(true)),
                ("10.0.0.1", "web-1", Some(true)),
            ],
        )];
        let (items, notes) = build(
            &[service("shop", "web", &[("app", "web")], &[80])],
            &slices,
            &[web_pod("web-1")],
        );
        assert_eq!(items[0].entry.endpoints, ["10.0.0.1:15006"]);
        assert_eq!(
            notes,
            ["service `shop/web`: 3 endpoint addresses of its EndpointSlices are not IP addresses and are left out"]
        );
    }

    #[test]
    fn a_slice_cannot_borrow_the_port_of_a_pod_of_another_namespace() {
        let mut elsewhere = web_pod("web-1");
        elsewhere.metadata.namespace = Some("payments".into());
        elsewhere.metadata.annotations = Some(map(&[(INBOUND_PORT_ANNOTATION, "9999")]));
        let mut slice = slice("shop", "web", &[("10.0.0.1", "web-1", Some(true))]);
        if let Some(target) = slice.endpoints[0].target_ref.as_mut() {
            target.namespace = Some("payments".into());
        }
        let pods = [web_pod("web-1"), elsewhere];
        let (items, _) = build(&[service("shop", "web", &[("app", "web")], &[80])], &[slice], &pods);
        assert_eq!(items[0].entry.endpoints, ["10.0.0.1:15006"]);
    }

    #[test]
    fn a_pod_with_a_bad_inbound_port_is_left_out_of_the_endpoints() {
        let mut bad = web_pod("web-1");
        bad.metadata.annotations = Some(map(&[(INBOUND_PORT_ANNOTATION, "70000")]));
        let slices = [slice("shop", "web", &[("10.0.0.1", "web-1", Some(true))])];
        let (items, notes) = build(&[service("shop", "web", &[("app", "web")], &[80])], &slices, &[bad]);
        assert!(items[0].entry.endpoints.is_empty());
        assert!(notes[0].contains("`70000` is not a port"), "{notes:?}");
    }

    #[test]
    fn the_hosts_annotation_replaces_the_cluster_names_but_cannot_take_anothers() {
        let named = annotated("shop", "web", "www.shop.example, web.shop.svc ,");
        let thief = annotated("attacker", "pay", "payments.payments.svc");
        let delegations = [
            delegate("shop", &["www.shop.example"]),
            delegate("attacker", &["*.svc.cluster.local"]),
        ];
        let (items, notes) = with_rules(
            &[named, thief],
            &[],
            &[web_pod("web-1"), pod_in("attacker")],
            &delegations,
        );
        assert_eq!(items.len(), 1);
        assert_eq!(items[0].entry.hosts, ["www.shop.example", "web.shop.svc"]);
        assert!(
            notes[0].contains("`payments.payments.svc`, a cluster name that is not its own"),
            "{notes:?}"
        );
    }

    #[test]
    fn the_older_service_keeps_a_contested_host() {
        let time = |secs| Some(Time(k8s_openapi::jiff::Timestamp::from_second(secs).unwrap()));
        let mut old = annotated("zeta", "web", "shop.example");
        old.metadata.creation_timestamp = time(100);
        let mut new = annotated("alpha", "web", "Shop.Example.");
        new.metadata.creation_timestamp = time(200);
        let pods: Vec<Pod> = ["zeta", "alpha"]
            .iter()
            .map(|ns| {
                let mut p = web_pod("w");
                p.metadata.namespace = Some((*ns).into());
                p
            })
            .collect();
        let delegations = [
            delegate("zeta", &["shop.example"]),
            delegate("alpha", &["shop.example"]),
        ];
        let (items, notes) = with_rules(&[new, old], &[], &pods, &delegations);
        let kept: Vec<_> = items.iter().map(|i| i.key.0.as_str()).collect();
        assert_eq!(kept, ["zeta"], "older wins even though `alpha` sorts first");
        assert!(
            notes[0].contains("host `shop.example` belongs to service `zeta/web`"),
            "{notes:?}"
        );
    }

    #[test]
    fn a_host_outside_the_services_own_names_needs_a_delegation_to_its_namespace() {
        let stripe = annotated("attacker", "pay", "api.stripe.com");
        let shop = annotated("attacker", "shop", "www.shop.example");
        let (items, notes) = build(&[stripe, shop], &[], &[pod_in("attacker")]);
        assert!(items.is_empty(), "no MeshConfig delegation: no foreign name");
        assert!(
            notes[0].contains("lists `api.stripe.com`, which is not delegated to its namespace")
                && notes[0].contains("`hostDelegations`"),
            "{notes:?}"
        );
        let delegated_elsewhere = [delegate("shop", &["www.shop.example", "*.stripe.com"])];
        let (items, _) = with_rules(
            &[annotated("attacker", "shop", "www.shop.example")],
            &[],
            &[pod_in("attacker")],
            &delegated_elsewhere,
        );
        assert!(items.is_empty(), "a delegation to another namespace does not count");
    }

    #[test]
    fn a_wildcard_delegation_covers_exactly_one_more_label() {
        let delegations = [delegate("shop", &["*.shop.example"])];
        let cases = [
            ("www.shop.example", true),
            ("WWW.Shop.Example.", true),
            ("shop.example", false),
            ("a.b.shop.example", false),
            ("www.shop.example.evil", false),
            ("www.shop.example:8443", false),
        ];
        for (host, kept) in cases {
            let (items, notes) = with_rules(&[annotated("shop", "web", host)], &[], &[pod_in("shop")], &delegations);
            assert_eq!(items.len() == 1, kept, "{host}: {notes:?}");
        }
    }

    #[test]
    fn an_exact_delegation_wins_a_host_over_an_older_wildcard_claim() {
        let time = |secs| Some(Time(k8s_openapi::jiff::Timestamp::from_second(secs).unwrap()));
        let mut squatter = annotated("web", "pay", "pay.shop.example");
        squatter.metadata.creation_timestamp = time(100);
        let mut owner = annotated("payments", "payments", "pay.shop.example");
        owner.metadata.creation_timestamp = time(200);
        let delegations = [
            delegate("web", &["*.shop.example"]),
            delegate("payments", &["pay.shop.example"]),
        ];
        let (items, notes) = with_rules(
            &[squatter, owner],
            &[],
            &[pod_in("web"), pod_in("payments")],
            &delegations,
        );
        let kept: Vec<_> = items.iter().map(|i| i.key.0.as_str()).collect();
        assert_eq!(kept, ["payments"], "{notes:?}");
    }

    #[test]
    fn a_service_that_loses_a_host_takes_no_other_host_from_anyone() {
        let time = |secs| Some(Time(k8s_openapi::jiff::Timestamp::from_second(secs).unwrap()));
        // `loser` loses `a.shop.example` to `owner` (exact beats wildcard), so it
        // must not keep `b.shop.example` from the younger `third`.
        let mut owner = annotated("payments", "owner", "a.shop.example");
        owner.metadata.creation_timestamp = time(300);
        let mut loser = annotated("web", "loser", "a.shop.example,b.shop.example");
        loser.metadata.creation_timestamp = time(100);
        let mut third = annotated("web", "third", "b.shop.example");
        third.metadata.creation_timestamp = time(200);
        let delegations = [
            delegate("web", &["*.shop.example"]),
            delegate("payments", &["a.shop.example"]),
        ];
        let (items, notes) = with_rules(
            &[owner, loser, third],
            &[],
            &[pod_in("web"), pod_in("payments")],
            &delegations,
        );
        let kept: Vec<_> = items.iter().map(|i| i.key.1.as_str()).collect();
        assert_eq!(kept, ["owner", "third"], "{notes:?}");
    }
}
