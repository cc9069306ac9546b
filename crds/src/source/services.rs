//! Services and EndpointSlices → `services.yaml`.
//!
//! Only Services with a selector are mesh services (one without is not served by
//! pods of the mesh). Each one's `servedBy` is the identities of the live pods its
//! selector picks in its namespace; one that picks none is left out, since
//! nothing could serve it. Its endpoints are the addresses of its EndpointSlices
//! whose `ready` condition is not `false`, each with the target pod's
//! sidecar port ([`INBOUND_PORT_ANNOTATION`], default [`DEFAULT_INBOUND_PORT`]).
//!
//! Hosts: the [`HOSTS_ANNOTATION`] when present, else `NAME.NS.svc` and
//! `NAME.NS.svc.CLUSTER_DOMAIN`. Two rules keep a Service from taking another's
//! name: a cluster-style host (`….svc`, `….svc.CLUSTER_DOMAIN`) in the annotation
//! must be one of the Service's own, and when two Services claim one host the
//! older keeps it (then by namespace and name) and the other is left out.

use std::collections::{BTreeMap, BTreeSet};

use k8s_openapi::api::core::v1::Service;
use k8s_openapi::api::discovery::v1::{Endpoint, EndpointSlice};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;
use palisade_policy::registry::ServiceEntry;

use super::workloads::LivePods;
use super::SourceOptions;
use crate::labels::{
    service_policy_labels, DEFAULT_INBOUND_PORT, HOSTS_ANNOTATION, INBOUND_PORT_ANNOTATION, SERVICE_NAME_LABEL,
};

/// A mesh service and where it came from.
#[derive(Debug, Clone)]
pub(super) struct ServiceItem {
    /// `(namespace, name)`.
    pub(super) key: (String, String),
    created: Option<Time>,
    pub(super) entry: ServiceEntry,
}

/// The mesh services in namespace and name order, and a note for each Service
/// left out.
pub(super) fn services(
    services: &[Service],
    slices: &[EndpointSlice],
    pods: &LivePods<'_>,
    options: &SourceOptions,
) -> (Vec<ServiceItem>, Vec<String>) {
    let mut notes = Vec::new();
    let mut items: Vec<ServiceItem> = (services.iter())
        .filter_map(|service| item(service, slices, pods, options, &mut notes))
        .collect();
    items.sort_by(|a, b| a.key.cmp(&b.key));
    let items = claim_hosts(items, &mut notes);
    (items, notes)
}

fn item(
    service: &Service,
    slices: &[EndpointSlice],
    pods: &LivePods<'_>,
    options: &SourceOptions,
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
    let hosts = hosts(service, namespace, name, options, notes)?;
    let ports = (spec.ports.iter().flatten()).map(|p| i64::from(p.port)).collect();
    let entry = ServiceEntry {
        namespace: namespace.to_owned(),
        name: name.to_owned(),
        hosts,
        ports,
        labels: service_policy_labels(meta.labels.as_ref().unwrap_or(&BTreeMap::new())),
        served_by: served_by.into_iter().collect(),
        endpoints: endpoints(namespace, name, slices, pods, notes),
    };
    Some(ServiceItem {
        key: (namespace.to_owned(), name.to_owned()),
        created: meta.creation_timestamp.clone(),
        entry,
    })
}

/// The annotation's hosts, or the cluster names; `None` (with a note) when the
/// annotation claims another Service's cluster name.
fn hosts(
    service: &Service,
    namespace: &str,
    name: &str,
    options: &SourceOptions,
    notes: &mut Vec<String>,
) -> Option<Vec<String>> {
    let own = [
        format!("{name}.{namespace}.svc"),
        format!("{name}.{namespace}.svc.{}", options.cluster_domain),
    ];
    let annotation = (service.metadata.annotations.as_ref()).and_then(|a| a.get(HOSTS_ANNOTATION));
    let Some(annotation) = annotation else {
        return Some(own.to_vec());
    };
    let hosts: Vec<String> = (annotation.split(','))
        .map(str::trim)
        .filter(|h| !h.is_empty())
        .map(str::to_owned)
        .collect();
    let cluster_suffix = format!(".svc.{}", options.cluster_domain);
    let foreign = hosts.iter().find(|host| {
        let host = canonical(host);
        (host.ends_with(".svc") || host.ends_with(&cluster_suffix)) && !own.contains(&host)
    });
    if let Some(foreign) = foreign {
        notes.push(format!(
            "service `{namespace}/{name}` is left out: its `{HOSTS_ANNOTATION}` lists `{foreign}`, a cluster name \
             that is not its own; list only its own `{}` or `{}`, or names outside the cluster domain",
            own[0], own[1]
        ));
        return None;
    }
    Some(hosts)
}

/// A host name compared case-insensitively and without a trailing dot.
fn canonical(host: &str) -> String {
    host.strip_suffix('.').unwrap_or(host).to_ascii_lowercase()
}

/// `IP:PORT` (`[IPv6]:PORT`) of every ready address of the Service's slices.
fn endpoints(
    namespace: &str,
    name: &str,
    slices: &[EndpointSlice],
    pods: &LivePods<'_>,
    notes: &mut Vec<String>,
) -> Vec<String> {
    let owned = |slice: &&EndpointSlice| {
        slice.metadata.namespace.as_deref() == Some(namespace)
            && (slice.metadata.labels.as_ref())
                .and_then(|l| l.get(SERVICE_NAME_LABEL))
                .map(String::as_str)
                == Some(name)
    };
    let mut out = BTreeSet::new();
    for endpoint in slices.iter().filter(owned).flat_map(|slice| &slice.endpoints) {
        let ready = endpoint.conditions.as_ref().and_then(|c| c.ready);
        if ready == Some(false) {
            continue;
        }
        let Some(port) = inbound_port(namespace, endpoint, pods, notes) else {
            continue;
        };
        for address in &endpoint.addresses {
            out.insert(match address.contains(':') {
                true => format!("[{address}]:{port}"),
                false => format!("{address}:{port}"),
            });
        }
    }
    out.into_iter().collect()
}

/// The sidecar port of the endpoint's pod; `None` (with a note) when its
/// annotation is not a port.
fn inbound_port(namespace: &str, endpoint: &Endpoint, pods: &LivePods<'_>, notes: &mut Vec<String>) -> Option<u16> {
    let target = endpoint
        .target_ref
        .as_ref()
        .filter(|r| r.kind.as_deref().is_none_or(|k| k == "Pod"));
    let pod_namespace = target.and_then(|t| t.namespace.as_deref()).unwrap_or(namespace);
    let pod = target
        .and_then(|t| t.name.as_deref())
        .and_then(|name| pods.get(pod_namespace, name));
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

/// Gives each host to the oldest Service claiming it (then by namespace and
/// name); a Service that would share one is left out.
fn claim_hosts(items: Vec<ServiceItem>, notes: &mut Vec<String>) -> Vec<ServiceItem> {
    let mut by_age: Vec<ServiceItem> = items;
    by_age.sort_by(|a, b| (a.created.is_none(), &a.created, &a.key).cmp(&(b.created.is_none(), &b.created, &b.key)));
    let mut owners: BTreeMap<String, (String, String)> = BTreeMap::new();
    let mut kept = Vec::with_capacity(by_age.len());
    for item in by_age {
        let hosts: BTreeSet<String> = item.entry.hosts.iter().map(|h| canonical(h)).collect();
        if let Some((host, owner)) = hosts.iter().find_map(|h| owners.get(h).map(|owner| (h, owner))) {
            let (namespace, name) = &item.key;
            notes.push(format!(
                "service `{namespace}/{name}` is left out: host `{host}` belongs to the older service `{}/{}`; \
                 a host names one service",
                owner.0, owner.1
            ));
            continue;
        }
        hosts.into_iter().for_each(|h| {
            owners.insert(h, item.key.clone());
        });
        kept.push(item);
    }
    kept.sort_by(|a, b| a.key.cmp(&b.key));
    kept
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::source::test_objects::{map, pod, service, slice};
    use k8s_openapi::api::core::v1::Pod;

    fn build(services_: &[Service], slices: &[EndpointSlice], pods: &[Pod]) -> (Vec<ServiceItem>, Vec<String>) {
        let live = LivePods::new(pods, "td");
        services(services_, slices, &live, &SourceOptions::default())
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
        let mut named = service("shop", "web", &[("app", "web")], &[80]);
        named.metadata.annotations = Some(map(&[(HOSTS_ANNOTATION, "www.shop.example, web.shop.svc ,")]));
        let mut thief = service("attacker", "pay", &[("app", "web")], &[80]);
        thief.metadata.annotations = Some(map(&[(HOSTS_ANNOTATION, "payments.payments.svc")]));
        let mut attacker_pod = web_pod("x");
        attacker_pod.metadata.namespace = Some("attacker".into());
        let (items, notes) = build(&[named, thief], &[], &[web_pod("web-1"), attacker_pod]);
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
        let mut old = service("zeta", "web", &[("app", "web")], &[80]);
        old.metadata.annotations = Some(map(&[(HOSTS_ANNOTATION, "shop.example")]));
        old.metadata.creation_timestamp = time(100);
        let mut new = service("alpha", "web", &[("app", "web")], &[80]);
        new.metadata.annotations = Some(map(&[(HOSTS_ANNOTATION, "Shop.Example.")]));
        new.metadata.creation_timestamp = time(200);
        let pods: Vec<Pod> = ["zeta", "alpha"]
            .iter()
            .map(|ns| {
                let mut p = web_pod("w");
                p.metadata.namespace = Some((*ns).into());
                p
            })
            .collect();
        let (items, notes) = build(&[new, old], &[], &pods);
        let kept: Vec<_> = items.iter().map(|i| i.key.0.as_str()).collect();
        assert_eq!(kept, ["zeta"], "older wins even though `alpha` sorts first");
        assert!(
            notes[0].contains("host `shop.example` belongs to the older service `zeta/web`"),
            "{notes:?}"
        );
    }
}
