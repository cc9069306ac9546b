//! `deploy/kubernetes/webhook.yaml` says what the server does.

use k8s_openapi::api::admissionregistration::v1::ValidatingWebhookConfiguration;

use super::super::server::PATH;

const MANIFEST: &str = include_str!("../../../../deploy/kubernetes/webhook.yaml");

#[test]
fn the_webhook_configuration_sends_cedar_policy_writes_to_the_served_path() {
    let config: ValidatingWebhookConfiguration = serde_yaml_ng::from_str(MANIFEST).unwrap();
    let [webhook] = config.webhooks.unwrap().try_into().unwrap();
    assert_eq!(webhook.admission_review_versions, ["v1"]);
    assert_eq!(webhook.side_effects, "None");
    assert_eq!(webhook.failure_policy.as_deref(), Some("Fail"));
    assert_eq!(webhook.match_policy.as_deref(), Some("Equivalent"));
    assert_eq!(webhook.timeout_seconds, Some(5));
    let service = webhook.client_config.service.unwrap();
    assert_eq!(
        (service.namespace.as_str(), service.name.as_str()),
        ("palisade-system", "palisade-controller")
    );
    assert_eq!((service.port, service.path.as_deref()), (Some(443), Some(PATH)));
    let [rule] = webhook.rules.unwrap().try_into().unwrap();
    assert_eq!(rule.api_groups.unwrap(), [crate::resources::GROUP]);
    assert_eq!(rule.api_versions.unwrap(), [crate::resources::VERSION]);
    assert_eq!(rule.resources.unwrap(), ["cedarpolicies"]);
    assert_eq!(rule.operations.unwrap(), ["CREATE", "UPDATE"]);
    let annotations = config.metadata.annotations.unwrap();
    assert!(annotations.contains_key("cert-manager.io/inject-ca-from"));
}
