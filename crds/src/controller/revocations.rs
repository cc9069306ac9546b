//! `CertificateRevocation`s, applied through the CA's admin API.
//!
//! The controller owns the CA entries whose reason starts with
//! `k8s:certificaterevocation/NAME` ([`REASON_PREFIX`]): each reconcile lists
//! the CA's revocations, revokes what a resource asks for and the list lacks,
//! and unrevokes the entries it owns that no resource asks for any more. That is
//! how deleting a resource unrevokes without a finalizer, also when the deletion
//! happened while no controller ran. An entry the controller does not own (a
//! `palisade ca revoke` by hand) is never unrevoked by it. Every step is
//! idempotent: a reconcile with nothing new only lists.

use std::collections::{BTreeMap, BTreeSet};
use std::path::PathBuf;

use kube::ResourceExt;
use palisade_ca::client::admin::AdminClient;
use palisade_ca::client::{CaEndpoint, ClientError};
use palisade_ca::revocation::{RevocationEntry, RevocationTarget};
use palisade_ca::SpiffeId;

use crate::resources::status::{
    ACCEPTED, APPLIED, REASON_CA_UNAVAILABLE, REASON_INVALID, REASON_REVOKED, REASON_VALID,
};
use crate::resources::{CertificateRevocation, Condition, ResourceStatus};

/// The start of the reason of every CA entry the controller made: the CA lets
/// `revoker.token` unrevoke only those.
pub const REASON_PREFIX: &str = palisade_ca::service::REVOKER_REASON_PREFIX;

/// How to reach the CA's admin API.
#[derive(Debug, Clone)]
pub struct CaAdmin {
    /// The CA's address and the trust bundle its certificate is checked against.
    pub endpoint: CaEndpoint,
    /// The admin credential (`admin.token` of the CA directory), read at each
    /// connection so a rotated secret is picked up.
    pub token_file: PathBuf,
}

/// What reconciling made of one resource.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Found {
    /// In the CA's list since `revoked_at` (RFC 3339); `version` is the list's.
    Revoked { version: u64, revoked_at: String },
    /// The spec names no valid target.
    Invalid(String),
    /// The CA could not be asked, or refused; retried.
    CaUnavailable(String),
}

/// The result of one reconcile: a finding per resource name, and the CA's error
/// if the reconcile is to be retried.
#[derive(Debug, Default)]
pub struct Reconciled {
    pub found: BTreeMap<String, Found>,
    pub error: Option<String>,
}

/// A resource's request, parsed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Wanted {
    pub name: String,
    pub target: RevocationTarget,
    pub reason: String,
}

/// What to change at the CA.
#[derive(Debug, Default, PartialEq, Eq)]
pub struct Plan {
    /// Targets to revoke, with the reason to give.
    pub revoke: Vec<(RevocationTarget, String)>,
    /// Targets the controller revoked that nothing asks for any more.
    pub unrevoke: Vec<RevocationTarget>,
}

/// What must change at the CA for its `entries` to match `wanted`.
pub fn plan(wanted: &[Wanted], entries: &[RevocationEntry]) -> Plan {
    let listed: BTreeSet<&RevocationTarget> = entries.iter().map(|e| &e.target).collect();
    let targets: BTreeSet<&RevocationTarget> = wanted.iter().map(|w| &w.target).collect();
    let mut revoke = Vec::new();
    let mut planned = BTreeSet::new();
    for w in wanted {
        if !listed.contains(&w.target) && planned.insert(&w.target) {
            revoke.push((w.target.clone(), ca_reason(&w.name, &w.reason)));
        }
    }
    let unrevoke = entries
        .iter()
        .filter(|e| owner(&e.reason).is_some() && !targets.contains(&e.target))
        .map(|e| e.target.clone())
        .collect();
    Plan { revoke, unrevoke }
}

/// The reason recorded at the CA for resource `name`.
pub fn ca_reason(name: &str, reason: &str) -> String {
    match reason.trim() {
        "" => format!("{REASON_PREFIX}{name}"),
        reason => format!("{REASON_PREFIX}{name}: {reason}"),
    }
}

/// The resource that made a CA entry with this reason, if the controller made it.
pub fn owner(reason: &str) -> Option<&str> {
    let rest = reason.strip_prefix(REASON_PREFIX)?;
    Some(rest.split_once(':').map_or(rest, |(name, _)| name)).filter(|name| !name.is_empty())
}

/// What `resource` asks to revoke.
///
/// # Errors
///
/// A message for its status when the spec names no valid target.
pub fn wanted(resource: &CertificateRevocation) -> Result<Wanted, String> {
    let spec = &resource.spec;
    let target = match (&spec.serial, &spec.spiffe_id) {
        (Some(serial), None) => serial
            .parse()
            .map(RevocationTarget::Serial)
            .map_err(|e| format!("spec.serial: {e}"))?,
        (None, Some(id)) => SpiffeId::parse(id)
            .map(RevocationTarget::SpiffeId)
            .map_err(|e| format!("spec.spiffeId: {e}"))?,
        _ => return Err("give exactly one of `spec.serial` and `spec.spiffeId`".to_owned()),
    };
    Ok(Wanted {
        name: resource.name_any(),
        target,
        reason: spec.reason.clone(),
    })
}

/// The status `found` gives a `CertificateRevocation` whose status is `current`.
pub fn revocation_status(
    current: Option<&ResourceStatus>,
    generation: Option<i64>,
    found: &Found,
    now: &str,
) -> ResourceStatus {
    let mut status = current.cloned().unwrap_or_default();
    let applied_before = status.condition(APPLIED).is_some_and(Condition::is_true) && status.revoked_at.is_some();
    status.observed_generation = generation;
    match found {
        Found::Invalid(message) => {
            status.set(Condition::new(
                ACCEPTED,
                false,
                REASON_INVALID,
                message.as_str(),
                generation,
                now,
            ));
            status.set(Condition::new(
                APPLIED,
                false,
                REASON_INVALID,
                "not revoked: the spec is invalid",
                generation,
                now,
            ));
            status.revoked_at = None;
        }
        // An outage revokes and unrevokes nothing: what was applied stays applied.
        Found::CaUnavailable(_) if applied_before => {}
        Found::CaUnavailable(message) => {
            status.set(Condition::new(ACCEPTED, true, REASON_VALID, "", generation, now));
            let message = format!("not revoked yet, retrying: {message}");
            status.set(Condition::new(
                APPLIED,
                false,
                REASON_CA_UNAVAILABLE,
                message,
                generation,
                now,
            ));
        }
        Found::Revoked { version, revoked_at } => {
            let unchanged = applied_before && status.revoked_at.as_ref() == Some(revoked_at);
            let message = match status.condition(APPLIED) {
                Some(applied) if unchanged => applied.message.clone(),
                _ => format!("revoked at the CA (revocation list version {version})"),
            };
            status.set(Condition::new(ACCEPTED, true, REASON_VALID, "", generation, now));
            status.set(Condition::new(APPLIED, true, REASON_REVOKED, message, generation, now));
            status.revoked_at = Some(revoked_at.clone());
        }
    }
    status
}

/// The CA side of the reconcile, with its connection kept between calls.
#[derive(Debug)]
pub struct Revoker {
    admin: CaAdmin,
    client: Option<AdminClient>,
}

impl Revoker {
    pub fn new(admin: CaAdmin) -> Self {
        Self { admin, client: None }
    }

    /// Makes the CA's list match `resources`; a finding per resource.
    pub async fn reconcile(&mut self, resources: &[CertificateRevocation]) -> Reconciled {
        let mut reconciled = Reconciled::default();
        let mut valid = Vec::new();
        for resource in resources {
            match wanted(resource) {
                Ok(w) => valid.push(w),
                Err(message) => {
                    reconciled.found.insert(resource.name_any(), Found::Invalid(message));
                }
            }
        }
        match self.apply(&valid).await {
            Ok((version, entries)) => {
                for w in &valid {
                    if let Some(entry) = entries.iter().find(|e| e.target == w.target) {
                        let revoked_at = super::time::unix(entry.revoked_at_unix);
                        reconciled
                            .found
                            .insert(w.name.clone(), Found::Revoked { version, revoked_at });
                    }
                }
            }
            Err(e) => {
                self.client = None;
                let message = e.to_string();
                for w in &valid {
                    reconciled
                        .found
                        .insert(w.name.clone(), Found::CaUnavailable(message.clone()));
                }
                reconciled.error = Some(message);
            }
        }
        reconciled
    }

    /// Lists, applies the plan, and lists again if anything changed.
    async fn apply(&mut self, wanted: &[Wanted]) -> Result<(u64, Vec<RevocationEntry>), ClientError> {
        let client = self.client().await?;
        let listed = client.list_revocations().await?;
        let plan = plan(wanted, &listed.1);
        if plan == Plan::default() {
            return Ok(listed);
        }
        for (target, reason) in &plan.revoke {
            let (version, _) = client.revoke(target, reason).await?;
            tracing::info!(%target, version, "revoked at the CA");
        }
        for target in &plan.unrevoke {
            let (version, _) = client.unrevoke(target).await?;
            tracing::info!(%target, version, "unrevoked at the CA: its CertificateRevocation is gone");
        }
        client.list_revocations().await
    }

    async fn client(&mut self) -> Result<&mut AdminClient, ClientError> {
        if self.client.is_none() {
            let path = &self.admin.token_file;
            let token = std::fs::read_to_string(path)
                .map_err(|e| ClientError::Key(format!("cannot read the admin credential `{}`: {e}", path.display())))?;
            self.client = Some(AdminClient::connect(&self.admin.endpoint, token.trim()).await?);
        }
        self.client
            .as_mut()
            .ok_or_else(|| ClientError::BadResponse("no admin connection".into()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn id(s: &str) -> RevocationTarget {
        RevocationTarget::SpiffeId(SpiffeId::parse(s).unwrap())
    }

    fn entry(target: RevocationTarget, reason: &str) -> RevocationEntry {
        RevocationEntry {
            target,
            reason: reason.to_owned(),
            revoked_at_unix: 1_900_000_000,
        }
    }

    fn want(name: &str, target: RevocationTarget) -> Wanted {
        Wanted {
            name: name.into(),
            target,
            reason: "key leaked".into(),
        }
    }

    const WEB: &str = "spiffe://td/ns/web/sa/web";
    const DB: &str = "spiffe://td/ns/db/sa/db";

    #[test]
    fn what_a_resource_asks_for_and_the_ca_lacks_is_revoked_naming_the_resource() {
        let plan = plan(&[want("web-leak", id(WEB))], &[]);
        assert_eq!(
            plan.revoke,
            [(id(WEB), "k8s:certificaterevocation/web-leak: key leaked".to_owned())]
        );
        assert!(plan.unrevoke.is_empty());
    }

    #[test]
    fn what_the_ca_already_lists_is_left_alone() {
        let entries = [entry(id(WEB), "k8s:certificaterevocation/web-leak: key leaked")];
        assert_eq!(plan(&[want("web-leak", id(WEB))], &entries), Plan::default());
    }

    #[test]
    fn an_entry_the_controller_made_whose_resource_is_gone_is_unrevoked() {
        let entries = [entry(id(WEB), "k8s:certificaterevocation/web-leak: key leaked")];
        assert_eq!(plan(&[], &entries).unrevoke, [id(WEB)]);
    }

    #[test]
    fn a_revocation_made_by_hand_is_never_unrevoked() {
        let entries = [entry(id(DB), "compromised"), entry(id(WEB), "k8s:other/x")];
        assert_eq!(plan(&[], &entries), Plan::default());
    }

    #[test]
    fn a_target_still_asked_for_by_another_resource_stays_revoked() {
        let entries = [entry(id(WEB), "k8s:certificaterevocation/first")];
        assert_eq!(plan(&[want("second", id(WEB))], &entries), Plan::default());
    }

    #[test]
    fn the_owner_is_read_back_from_the_reason() {
        assert_eq!(owner(&ca_reason("a", "why: because")), Some("a"));
        assert_eq!(owner(&ca_reason("a", "")), Some("a"));
        assert_eq!(owner("k8s:certificaterevocation/"), None);
        assert_eq!(owner("by hand"), None);
    }

    #[test]
    fn an_outage_does_not_take_back_an_applied_status() {
        let revoked = Found::Revoked {
            version: 4,
            revoked_at: "2030-03-17T17:46:40Z".into(),
        };
        let applied = revocation_status(None, Some(1), &revoked, "t1");
        assert_eq!(applied.revoked_at.as_deref(), Some("2030-03-17T17:46:40Z"));
        assert_eq!(applied.condition(APPLIED).unwrap().reason, REASON_REVOKED);
        assert!(applied.condition(APPLIED).unwrap().message.contains("version 4"));

        let outage = revocation_status(Some(&applied), Some(1), &Found::CaUnavailable("down".into()), "t2");
        assert_eq!(outage, applied);

        let later = Found::Revoked {
            version: 9,
            revoked_at: "2030-03-17T17:46:40Z".into(),
        };
        assert_eq!(
            revocation_status(Some(&applied), Some(1), &later, "t3"),
            applied,
            "another revocation's version bump does not rewrite this status"
        );
    }

    #[test]
    fn a_resource_not_yet_revoked_says_the_ca_is_unavailable() {
        let status = revocation_status(None, Some(1), &Found::CaUnavailable("connection refused".into()), "t");
        let applied = status.condition(APPLIED).unwrap();
        assert_eq!(
            (applied.is_true(), applied.reason.as_str()),
            (false, REASON_CA_UNAVAILABLE)
        );
        assert!(applied.message.contains("connection refused"));
    }
}
