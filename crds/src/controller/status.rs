//! Status write-back: each resource's `Accepted` and `Applied` conditions.
//!
//! The status is computed from the build's verdict ([`bundle_status`]) or the
//! CA's answer (see `revocations`), starting from the status the resource
//! already has so that transition times only move when a condition's status
//! does. It is written only when it differs, by server-side apply of `.status`
//! on the `/status` subresource with field manager [`FIELD_MANAGER`] (forced: the
//! controller owns its resources' status), so a reconcile with nothing new
//! writes nothing and two replicas writing the same status never conflict. The
//! controller never writes a spec.

use std::collections::HashMap;
use std::fmt::Debug;

use kube::api::{Patch, PatchParams};
use kube::{Api, Client, Resource, ResourceExt};
use serde::de::DeserializeOwned;
use serde::Serialize;
use serde_json::json;

use super::publish::Published;
use super::rebuild::{Kind, Outcome, Verdict};
use crate::resources::status::{ACCEPTED, APPLIED, REASON_HELD, REASON_INVALID, REASON_PUBLISHED, REASON_VALID};
use crate::resources::{CedarPolicy, CertificateRevocation, Condition, EgressAllowlist, MeshConfig, ResourceStatus};

/// The field manager of every status write.
pub const FIELD_MANAGER: &str = "palisade-controller";

/// The status `verdict` gives a bundle resource whose status is `current`, now
/// that the bundle `published` is out.
pub fn bundle_status(
    current: Option<&ResourceStatus>,
    verdict: &Verdict,
    published: &Published,
    now: &str,
) -> ResourceStatus {
    let generation = verdict.generation;
    let applied = match &verdict.outcome {
        Outcome::Invalid(message) => return invalid_status(current, verdict.resource.kind, generation, message, now),
        Outcome::Accepted => Condition::new(
            APPLIED,
            true,
            REASON_PUBLISHED,
            format!(
                "in the policy bundle {} published at {}",
                published.digest, published.at
            ),
            generation,
            now,
        ),
        Outcome::Held(why) => Condition::new(APPLIED, false, REASON_HELD, why.as_str(), generation, now),
    };
    let mut status = current.cloned().unwrap_or_default();
    status.observed_generation = generation;
    status.set(Condition::new(ACCEPTED, true, REASON_VALID, "", generation, now));
    status.set(applied);
    status
}

/// The status of an invalid bundle resource: the validator's `message`, not applied.
pub fn invalid_status(
    current: Option<&ResourceStatus>,
    kind: Kind,
    generation: Option<i64>,
    message: &str,
    now: &str,
) -> ResourceStatus {
    let mut status = current.cloned().unwrap_or_default();
    status.observed_generation = generation;
    status.set(Condition::new(
        ACCEPTED,
        false,
        REASON_INVALID,
        message,
        generation,
        now,
    ));
    status.set(Condition::new(
        APPLIED,
        false,
        REASON_INVALID,
        not_applied(kind),
        generation,
        now,
    ));
    status
}

fn not_applied(kind: Kind) -> &'static str {
    match kind {
        Kind::CedarPolicy => "not in effect: its namespace keeps its last valid policies until this one is fixed",
        Kind::EgressAllowlist => "not in effect: left out of the policy bundle until it is fixed",
        Kind::MeshConfig => "not in effect: nothing is published until it is fixed",
    }
}

/// A Palisade resource, with the status it carries.
pub trait WithStatus: Resource<DynamicType = ()> + Clone + DeserializeOwned + Serialize + Debug {
    fn status(&self) -> Option<&ResourceStatus>;
    /// The API of the resources like `self` (in its namespace, if it has one).
    fn api(&self, client: Client) -> Api<Self>;
}

macro_rules! with_status {
    ($scope:ident: $($kind:ty),*) => {$(
        impl WithStatus for $kind {
            fn status(&self) -> Option<&ResourceStatus> {
                self.status.as_ref()
            }

            fn api(&self, client: Client) -> Api<Self> {
                with_status!(@api $scope, self, client)
            }
        }
    )*};
    (@api namespaced, $self:ident, $client:ident) => {
        Api::namespaced($client, &$self.namespace().unwrap_or_default())
    };
    (@api cluster, $self:ident, $client:ident) => {
        Api::all($client)
    };
}
with_status!(namespaced: CedarPolicy, EgressAllowlist);
with_status!(cluster: MeshConfig, CertificateRevocation);

/// Writes statuses, remembering its own writes so that a cache which has not
/// seen one yet does not cause the same write again.
pub struct StatusWriter {
    client: Client,
    /// (kind, namespace, name) → the status written and the `resourceVersion`
    /// the object had when it was.
    written: HashMap<(String, String, String), (ResourceStatus, Option<String>)>,
}

impl Debug for StatusWriter {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("StatusWriter")
            .field("written", &self.written.len())
            .finish_non_exhaustive()
    }
}

impl StatusWriter {
    pub fn new(client: Client) -> Self {
        Self {
            client,
            written: HashMap::new(),
        }
    }

    /// Writes `desired` as `object`'s status unless it already is (or was just
    /// written and the cache has not caught up); whether it wrote.
    ///
    /// # Errors
    ///
    /// The API server's refusal (the object was deleted meanwhile, no permission, …).
    pub async fn write<K: WithStatus>(&mut self, object: &K, desired: ResourceStatus) -> Result<bool, kube::Error> {
        let key = (
            K::kind(&()).into_owned(),
            object.namespace().unwrap_or_default(),
            object.name_any(),
        );
        if object.status() == Some(&desired) {
            self.written.remove(&key);
            return Ok(false);
        }
        let version = object.resource_version();
        if self.written.get(&key) == Some(&(desired.clone(), version.clone())) {
            return Ok(false);
        }
        let api = object.api(self.client.clone());
        let patch = json!({
            "apiVersion": K::api_version(&()),
            "kind": K::kind(&()),
            "status": desired,
        });
        let params = PatchParams::apply(FIELD_MANAGER).force();
        api.patch_status(&key.2, &params, &Patch::Apply(&patch)).await?;
        tracing::debug!(kind = %key.0, namespace = %key.1, name = %key.2, "status written");
        self.written.insert(key, (desired, version));
        Ok(true)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::controller::rebuild::ResourceRef;
    use palisade_policy::snapshot::SnapshotDigest;

    fn verdict(outcome: Outcome, generation: i64) -> Verdict {
        Verdict {
            resource: ResourceRef {
                kind: Kind::CedarPolicy,
                namespace: Some("web".into()),
                name: "p".into(),
            },
            generation: Some(generation),
            outcome,
        }
    }

    fn published() -> Published {
        Published {
            digest: SnapshotDigest::of(&Default::default()),
            at: "2030-01-01T00:00:00Z".into(),
        }
    }

    #[test]
    fn an_accepted_resource_is_valid_and_published_in_the_bundle() {
        let status = bundle_status(None, &verdict(Outcome::Accepted, 3), &published(), "t1");
        assert_eq!(status.observed_generation, Some(3));
        let applied = status.condition(APPLIED).unwrap();
        assert!(applied.is_true());
        assert_eq!(applied.reason, REASON_PUBLISHED);
        assert!(applied.message.contains("sha256:") && applied.message.contains("2030-01-01T00:00:00Z"));
        assert!(status.condition(ACCEPTED).unwrap().is_true());
    }

    #[test]
    fn an_invalid_resource_carries_the_message_and_is_not_applied() {
        let status = bundle_status(
            None,
            &verdict(Outcome::Invalid("spec.policy 3:7: unexpected token".into()), 2),
            &published(),
            "t",
        );
        let accepted = status.condition(ACCEPTED).unwrap();
        assert_eq!(
            (accepted.status.as_str(), accepted.reason.as_str()),
            ("False", REASON_INVALID)
        );
        assert!(accepted.message.contains("3:7"));
        assert_eq!(status.condition(APPLIED).unwrap().reason, REASON_INVALID);
    }

    #[test]
    fn a_held_resource_is_valid_but_not_applied() {
        let status = bundle_status(
            None,
            &verdict(Outcome::Held("`q` is invalid".into()), 1),
            &published(),
            "t",
        );
        assert!(status.condition(ACCEPTED).unwrap().is_true());
        let applied = status.condition(APPLIED).unwrap();
        assert_eq!((applied.is_true(), applied.reason.as_str()), (false, REASON_HELD));
    }

    #[test]
    fn the_same_verdict_again_gives_the_same_status_whenever_it_is_computed() {
        let first = bundle_status(None, &verdict(Outcome::Accepted, 1), &published(), "t1");
        let again = bundle_status(Some(&first), &verdict(Outcome::Accepted, 1), &published(), "t2");
        assert_eq!(first, again, "nothing to write");
    }
}
