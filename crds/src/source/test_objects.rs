//! Small constructors of cluster objects for the unit tests.

use std::collections::BTreeMap;

use k8s_openapi::api::core::v1::{ObjectReference, Pod, PodSpec, PodStatus, Service, ServicePort, ServiceSpec};
use k8s_openapi::api::discovery::v1::{Endpoint, EndpointConditions, EndpointSlice};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;

use crate::labels::SERVICE_NAME_LABEL;
use crate::resources::{
    CedarPolicy, CedarPolicySpec, EgressAllowlist, EgressAllowlistSpec, EgressProtocol, PolicyDirection, PolicyMode,
    WorkloadSelector,
};

pub(crate) fn map(pairs: &[(&str, &str)]) -> BTreeMap<String, String> {
    pairs.iter().map(|(k, v)| ((*k).to_owned(), (*v).to_owned())).collect()
}

pub(crate) fn meta(namespace: &str, name: &str) -> ObjectMeta {
    ObjectMeta {
        namespace: (!namespace.is_empty()).then(|| namespace.to_owned()),
        name: Some(name.to_owned()),
        generation: Some(1),
        ..ObjectMeta::default()
    }
}

/// A running pod; `service_account` empty for none.
pub(crate) fn pod(namespace: &str, name: &str, service_account: &str, labels: &[(&str, &str)]) -> Pod {
    Pod {
        metadata: ObjectMeta {
            labels: Some(map(labels)),
            ..meta(namespace, name)
        },
        spec: Some(PodSpec {
            service_account_name: (!service_account.is_empty()).then(|| service_account.to_owned()),
            ..PodSpec::default()
        }),
        status: Some(PodStatus {
            phase: Some("Running".into()),
            ..PodStatus::default()
        }),
    }
}

pub(crate) fn service(namespace: &str, name: &str, selector: &[(&str, &str)], ports: &[i32]) -> Service {
    Service {
        metadata: meta(namespace, name),
        spec: Some(ServiceSpec {
            selector: Some(map(selector)),
            ports: Some(
                (ports.iter())
                    .map(|port| ServicePort {
                        port: *port,
                        ..ServicePort::default()
                    })
                    .collect(),
            ),
            ..ServiceSpec::default()
        }),
        status: None,
    }
}

/// A slice of `service` with one endpoint per (address, pod, ready).
pub(crate) fn slice(namespace: &str, service: &str, endpoints: &[(&str, &str, Option<bool>)]) -> EndpointSlice {
    let endpoint = |(address, pod, ready): &(&str, &str, Option<bool>)| Endpoint {
        addresses: vec![(*address).to_owned()],
        conditions: Some(EndpointConditions {
            ready: *ready,
            ..EndpointConditions::default()
        }),
        target_ref: Some(ObjectReference {
            kind: Some("Pod".into()),
            namespace: Some(namespace.to_owned()),
            name: Some((*pod).to_owned()),
            ..ObjectReference::default()
        }),
        ..Endpoint::default()
    };
    EndpointSlice {
        address_type: "IPv4".into(),
        endpoints: endpoints.iter().map(endpoint).collect(),
        metadata: ObjectMeta {
            labels: Some(map(&[(SERVICE_NAME_LABEL, service)])),
            ..meta(namespace, &format!("{service}-abcde"))
        },
        ports: None,
    }
}

pub(crate) fn policy(namespace: &str, name: &str, direction: PolicyDirection, text: &str) -> CedarPolicy {
    let mut policy = CedarPolicy::new(
        name,
        CedarPolicySpec {
            direction,
            mode: PolicyMode::Enforce,
            policy: text.to_owned(),
        },
    );
    policy.metadata = meta(namespace, name);
    policy
}

pub(crate) fn allowlist(
    namespace: &str,
    name: &str,
    hosts: &[&str],
    labels: &[(&str, &str)],
    service_accounts: &[&str],
) -> EgressAllowlist {
    let mut allowlist = EgressAllowlist::new(
        name,
        EgressAllowlistSpec {
            workloads: WorkloadSelector {
                labels: map(labels),
                service_accounts: service_accounts.iter().map(|s| (*s).to_owned()).collect(),
            },
            hosts: hosts.iter().map(|h| (*h).to_owned()).collect(),
            ports: vec![443],
            protocol: EgressProtocol::Tls,
        },
    );
    allowlist.metadata = meta(namespace, name);
    allowlist
}
