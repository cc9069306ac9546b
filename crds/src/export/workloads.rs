//! `workloads.yaml` entries → a ServiceAccount and a Deployment per identity.
//!
//! The Deployment runs one pod of two containers: `app` (`palisade demo app`, a
//! stand-in that answers with what it saw) and `palisade-proxy`, the sidecar,
//! which gets its first certificate with a projected ServiceAccount token for the
//! CA (audience `palisade-ca`, one hour) and trusts the roots of the ConfigMap
//! `palisade-trust-bundle`. No Secret is mounted; both containers run as
//! non-root with a read-only root filesystem and no capabilities.

use std::collections::{BTreeMap, BTreeSet};

use k8s_openapi::api::apps::v1::{Deployment, DeploymentSpec};
use k8s_openapi::api::core::v1::{
    Capabilities, ConfigMapVolumeSource, Container, ContainerPort, EmptyDirVolumeSource, PodSecurityContext, PodSpec,
    PodTemplateSpec, ProjectedVolumeSource, SeccompProfile, SecurityContext, ServiceAccount,
    ServiceAccountTokenProjection, Volume, VolumeMount, VolumeProjection,
};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{LabelSelector, ObjectMeta};
use palisade_ca::SpiffeId;
use palisade_policy::registry::WorkloadEntry;

use super::names::{is_dns_subdomain, is_label_key, is_label_value};
use super::{ExportError, ExportOptions};
use crate::labels::{
    is_hidden_namespace_label, is_hidden_pod_label, DEFAULT_INBOUND_PORT, INBOUND_PORT_ANNOTATION, WORKLOAD_LABEL,
};
use crate::source::shared_labels;

/// Where the demo app listens, and where the sidecar forwards allowed requests.
const APP_ADDRESS: &str = "127.0.0.1:8080";
/// The image's unprivileged user (its Dockerfile's `USER`).
const NON_ROOT_USER: i64 = 65532;
/// The projected ServiceAccount token the sidecar presents to the CA.
const TOKEN_DIR: &str = "/var/run/secrets/palisade";
const TOKEN_FILE: &str = "token";
const TOKEN_AUDIENCE: &str = "palisade-ca";
const TOKEN_SECONDS: i64 = 3600;
/// The ConfigMap holding the CA's trust bundle, and its key.
const TRUST_BUNDLE_CONFIG_MAP: &str = "palisade-trust-bundle";
const TRUST_BUNDLE_KEY: &str = "bundle.pem";
const TRUST_BUNDLE_DIR: &str = "/etc/palisade/trust";

/// A ServiceAccount and a Deployment per entry, in entry order.
pub(super) fn workloads(
    entries: &[WorkloadEntry],
    inbound_ports: &BTreeMap<String, u16>,
    options: &ExportOptions,
) -> Result<(Vec<ServiceAccount>, Vec<Deployment>), ExportError> {
    let mut accounts = Vec::with_capacity(entries.len());
    let mut deployments = Vec::with_capacity(entries.len());
    for entry in entries {
        let (namespace, account) = identity(&entry.spiffe_id)?;
        check_labels(&format!("workload `{}`", entry.spiffe_id), &entry.labels, |key| {
            is_hidden_pod_label(key) || is_hidden_namespace_label(key)
        })?;
        let workload = Workload {
            id: &entry.spiffe_id,
            namespace: &namespace,
            account: &account,
            labels: &entry.labels,
            inbound_port: inbound_ports.get(&entry.spiffe_id).copied(),
        };
        accounts.push(ServiceAccount {
            metadata: workload.meta(),
            automount_service_account_token: Some(false),
            ..ServiceAccount::default()
        });
        deployments.push(workload.deployment(options));
    }
    Ok((accounts, deployments))
}

/// Where the exported workloads' labels go: the labels every workload of a
/// namespace shares go on the Namespace (tags a policy can trust); the keys of
/// the others become self-asserted (pods give them).
#[derive(Debug, Default)]
pub(super) struct LabelTrust {
    pub(super) namespaces: BTreeMap<String, BTreeMap<String, String>>,
    pub(super) self_asserted: BTreeSet<String>,
}

/// Splits the workloads' labels into Namespace labels and self-asserted keys, so
/// that the controller gives each identity exactly its labels back. A key that
/// differs between workloads of one namespace could only be self-asserted, which
/// anyone who creates a pod can forge: when `read(key)` (a policy or an allowlist
/// reads it), that is refused.
pub(super) fn label_trust(entries: &[WorkloadEntry], read: impl Fn(&str) -> bool) -> Result<LabelTrust, ExportError> {
    let mut by_namespace: BTreeMap<String, Vec<&BTreeMap<String, String>>> = BTreeMap::new();
    for entry in entries {
        let (namespace, _) = identity(&entry.spiffe_id)?;
        by_namespace.entry(namespace).or_default().push(&entry.labels);
    }
    let mut trust = LabelTrust::default();
    for (namespace, sets) in by_namespace {
        let (shared, rest) = shared_labels(&sets);
        for key in rest {
            if read(key) {
                return Err(ExportError::DisputedTag {
                    namespace,
                    key: key.clone(),
                });
            }
            trust.self_asserted.insert(key.clone());
        }
        trust.namespaces.insert(namespace, shared);
    }
    Ok(trust)
}

/// Every label is a valid Kubernetes label that `hidden` lets through.
pub(super) fn check_labels(
    what: &str,
    labels: &BTreeMap<String, String>,
    hidden: impl Fn(&str) -> bool,
) -> Result<(), ExportError> {
    for (key, value) in labels {
        if hidden(key) {
            return Err(ExportError::HiddenLabel {
                what: what.to_owned(),
                key: key.clone(),
            });
        }
        let invalid = |part: &str, value: &str, hint| ExportError::Invalid {
            what: format!("the label {part} of {what}"),
            value: value.to_owned(),
            hint,
        };
        if !is_label_key(key) {
            let hint = "a label key is an optional DNS prefix and `/`, then 1 to 63 letters, digits, `-`, `_` or `.`";
            return Err(invalid("key", key, hint));
        }
        if !is_label_value(value) {
            let hint = "a label value is empty or 1 to 63 letters, digits, `-`, `_` or `.`, starting and ending with \
                        a letter or digit";
            return Err(invalid("value", value, hint));
        }
    }
    Ok(())
}

/// The namespace and service account of a workload ID, the account a name the
/// API server takes (for the ServiceAccount, the Deployment and a label value).
fn identity(raw: &str) -> Result<(String, String), ExportError> {
    let id = SpiffeId::parse(raw).ok();
    let parts = id
        .as_ref()
        .and_then(|id| Some((id.namespace()?, id.service_account()?)));
    let Some((namespace, account)) = parts else {
        return Err(ExportError::Invalid {
            what: "workload SPIFFE ID".into(),
            value: raw.to_owned(),
            hint: "write it as `spiffe://<trust domain>/ns/<namespace>/sa/<service account>`",
        });
    };
    if !is_dns_subdomain(account) || account.len() > 63 {
        return Err(ExportError::Invalid {
            what: format!("the service account of workload `{raw}`"),
            value: account.to_owned(),
            hint: "use at most 63 lower-case letters, digits, `-` and `.` after `/sa/`",
        });
    }
    Ok((namespace.to_owned(), account.to_owned()))
}

/// One workload being exported.
struct Workload<'a> {
    id: &'a str,
    namespace: &'a str,
    account: &'a str,
    labels: &'a BTreeMap<String, String>,
    inbound_port: Option<u16>,
}

impl Workload<'_> {
    /// Name and namespace (the account's name), labelled with the workload.
    fn meta(&self) -> ObjectMeta {
        ObjectMeta {
            name: Some(self.account.to_owned()),
            namespace: Some(self.namespace.to_owned()),
            labels: Some(self.selector()),
            ..ObjectMeta::default()
        }
    }

    fn selector(&self) -> BTreeMap<String, String> {
        [(WORKLOAD_LABEL.to_owned(), self.account.to_owned())].into()
    }

    fn deployment(&self, options: &ExportOptions) -> Deployment {
        let mut labels = self.labels.clone();
        labels.extend(self.selector());
        let annotations = (self.inbound_port).map(|p| [(INBOUND_PORT_ANNOTATION.to_owned(), p.to_string())].into());
        let template = PodTemplateSpec {
            metadata: Some(ObjectMeta {
                labels: Some(labels),
                annotations,
                ..ObjectMeta::default()
            }),
            spec: Some(self.pod_spec(options)),
        };
        Deployment {
            metadata: self.meta(),
            spec: Some(DeploymentSpec {
                replicas: Some(1),
                selector: LabelSelector {
                    match_labels: Some(self.selector()),
                    ..LabelSelector::default()
                },
                template,
                ..DeploymentSpec::default()
            }),
            status: None,
        }
    }

    fn pod_spec(&self, options: &ExportOptions) -> PodSpec {
        PodSpec {
            service_account_name: Some(self.account.to_owned()),
            automount_service_account_token: Some(false),
            security_context: Some(PodSecurityContext {
                run_as_non_root: Some(true),
                run_as_user: Some(NON_ROOT_USER),
                // The projected token and the trust bundle readable by that user.
                fs_group: Some(NON_ROOT_USER),
                seccomp_profile: Some(SeccompProfile {
                    type_: "RuntimeDefault".into(),
                    ..SeccompProfile::default()
                }),
                ..PodSecurityContext::default()
            }),
            containers: vec![self.app(options), self.proxy(options)],
            volumes: Some(volumes()),
            ..PodSpec::default()
        }
    }

    fn app(&self, options: &ExportOptions) -> Container {
        let args = ["demo", "app", "--name", self.account, "--listen", APP_ADDRESS];
        container("app", options, &args)
    }

    fn proxy(&self, options: &ExportOptions) -> Container {
        let port = self.inbound_port.unwrap_or(DEFAULT_INBOUND_PORT);
        let (token, trust, inbound) = (
            format!("{TOKEN_DIR}/{TOKEN_FILE}"),
            format!("{TRUST_BUNDLE_DIR}/{TRUST_BUNDLE_KEY}"),
            format!("0.0.0.0:{port}"),
        );
        let args = [
            "proxy",
            "run",
            "--id",
            self.id,
            "--service-account-token-file",
            &token,
            "--trust-bundle",
            &trust,
            "--ca",
            &options.ca,
            "--control-plane",
            &options.control_plane,
            "--inbound",
            &inbound,
            "--app",
            APP_ADDRESS,
        ];
        Container {
            ports: Some(vec![ContainerPort {
                name: Some("palisade-mtls".into()),
                container_port: i32::from(port),
                ..ContainerPort::default()
            }]),
            volume_mounts: Some(vec![
                mount("palisade-token", TOKEN_DIR),
                mount(TRUST_BUNDLE_CONFIG_MAP, TRUST_BUNDLE_DIR),
                VolumeMount {
                    read_only: None,
                    ..mount("tmp", "/tmp")
                },
            ]),
            ..container("palisade-proxy", options, &args)
        }
    }
}

/// A container of the image (whose entrypoint is `palisade`) running `palisade
/// ARGS`, locked down.
fn container(name: &str, options: &ExportOptions, args: &[&str]) -> Container {
    Container {
        name: name.to_owned(),
        image: Some(options.image.clone()),
        args: Some(args.iter().map(|a| (*a).to_owned()).collect()),
        security_context: Some(SecurityContext {
            read_only_root_filesystem: Some(true),
            run_as_non_root: Some(true),
            allow_privilege_escalation: Some(false),
            capabilities: Some(Capabilities {
                drop: Some(vec!["ALL".into()]),
                ..Capabilities::default()
            }),
            ..SecurityContext::default()
        }),
        ..Container::default()
    }
}

fn mount(name: &str, path: &str) -> VolumeMount {
    VolumeMount {
        name: name.to_owned(),
        mount_path: path.to_owned(),
        read_only: Some(true),
        ..VolumeMount::default()
    }
}

/// The token for the CA, the trust bundle, and a writable `/tmp` for the
/// sidecar's audit spool.
fn volumes() -> Vec<Volume> {
    let token = ProjectedVolumeSource {
        sources: Some(vec![VolumeProjection {
            service_account_token: Some(ServiceAccountTokenProjection {
                audience: Some(TOKEN_AUDIENCE.into()),
                expiration_seconds: Some(TOKEN_SECONDS),
                path: TOKEN_FILE.into(),
            }),
            ..VolumeProjection::default()
        }]),
        ..ProjectedVolumeSource::default()
    };
    vec![
        Volume {
            name: "palisade-token".into(),
            projected: Some(token),
            ..Volume::default()
        },
        Volume {
            name: TRUST_BUNDLE_CONFIG_MAP.into(),
            config_map: Some(ConfigMapVolumeSource {
                name: TRUST_BUNDLE_CONFIG_MAP.into(),
                ..ConfigMapVolumeSource::default()
            }),
            ..Volume::default()
        },
        Volume {
            name: "tmp".into(),
            empty_dir: Some(EmptyDirVolumeSource::default()),
            ..Volume::default()
        },
    ]
}
