//! Audit records from the CA and the control plane.
//!
//! Both make records before they can talk to the audit service: the CA issues its
//! own SVID, the control plane publishes its first bundle, and only then is there
//! an identity for the mTLS client. [`LateAuditor`] keeps those early records in
//! order and hands them to the delivery client once it exists; after that every
//! record goes straight to its queue (which never blocks).

use std::sync::{Mutex, OnceLock, PoisonError};

use palisade_audit::deliver::Auditor;
use palisade_audit::record::{Event, Identity, IdentityKind, PolicyChange, PolicyOutcome};
use palisade_ca::revocation::RevocationTarget;
use palisade_ca::service::events::{CaEvent, CaEvents};
use palisade_policy::distribute::PolicyEvent;

/// The diagnostics of a rejected edit kept in its record, at most.
const MAX_DETAIL: usize = 4096;

/// An audit client that may not exist yet.
#[derive(Debug, Default)]
pub struct LateAuditor {
    auditor: OnceLock<Auditor>,
    early: Mutex<Vec<Event>>,
}

impl LateAuditor {
    /// Sends every early record, in order, then everything else straight through.
    pub fn connect(&self, auditor: Auditor) {
        let mut early = self.early.lock().unwrap_or_else(PoisonError::into_inner);
        for event in early.drain(..) {
            auditor.record(event);
        }
        let _ = self.auditor.set(auditor);
    }

    /// Records `event` now, or once connected.
    pub fn record(&self, event: Event) {
        if let Some(auditor) = self.auditor.get() {
            return auditor.record(event);
        }
        let mut early = self.early.lock().unwrap_or_else(PoisonError::into_inner);
        // Connected while we waited for the lock: the queue is there now.
        match self.auditor.get() {
            Some(auditor) => auditor.record(event),
            None => early.push(event),
        }
    }

    /// A control-plane event as a record.
    pub fn policy(&self, event: &PolicyEvent) {
        let change = match event {
            PolicyEvent::Accepted { version, digest, .. } => PolicyChange {
                outcome: PolicyOutcome::Accepted,
                version: *version,
                digest: digest.to_string(),
                detail: String::new(),
            },
            PolicyEvent::Rejected { diagnostics } => PolicyChange {
                outcome: PolicyOutcome::Rejected,
                version: 0,
                digest: String::new(),
                detail: truncate(diagnostics.to_string(), MAX_DETAIL),
            },
            _ => return,
        };
        self.record(Event::Policy(change));
    }
}

impl CaEvents for LateAuditor {
    fn event(&self, event: CaEvent) {
        let identity = match event {
            CaEvent::Issued {
                id,
                serial,
                not_after_unix,
            } => certificate(IdentityKind::Issued, id.as_str(), serial.to_string(), not_after_unix),
            CaEvent::Renewed {
                id,
                serial,
                not_after_unix,
            } => certificate(IdentityKind::Renewed, id.as_str(), serial.to_string(), not_after_unix),
            CaEvent::Revoked { target, reason } => revocation(IdentityKind::Revoked, &target, reason),
            CaEvent::Unrevoked { target } => revocation(IdentityKind::Unrevoked, &target, String::new()),
        };
        self.record(Event::Identity(identity));
    }
}

fn certificate(kind: IdentityKind, id: &str, serial: String, not_after_unix: i64) -> Identity {
    Identity {
        kind,
        spiffe_id: id.to_owned(),
        serial,
        reason: String::new(),
        not_after_unix,
    }
}

fn revocation(kind: IdentityKind, target: &RevocationTarget, reason: String) -> Identity {
    let (spiffe_id, serial) = match target {
        RevocationTarget::SpiffeId(id) => (id.to_string(), String::new()),
        RevocationTarget::Serial(serial) => (String::new(), serial.to_string()),
    };
    Identity {
        kind,
        spiffe_id,
        serial,
        reason,
        not_after_unix: 0,
    }
}

fn truncate(mut text: String, max: usize) -> String {
    if text.len() > max {
        let mut end = max;
        while !text.is_char_boundary(end) {
            end -= 1;
        }
        text.truncate(end);
        text.push_str("\n…(truncated)");
    }
    text
}

/// Starts the delivery client `args` ask for (or a disabled one) and connects
/// `late` to it. The returned task runs the delivery; abort it on shutdown.
pub fn start(
    late: &LateAuditor,
    args: &crate::cli::AuditClient,
    default_spool: &std::path::Path,
    td: &palisade_ca::TrustDomain,
    resolver: std::sync::Arc<palisade_ca::tls::SvidResolver>,
    trust: std::sync::Arc<palisade_ca::verify::Trust>,
) -> anyhow::Result<Option<tokio::task::JoinHandle<()>>> {
    let Some(address) = &args.address else {
        late.connect(Auditor::disabled());
        return Ok(None);
    };
    let spool = args.spool.clone().unwrap_or_else(|| default_spool.to_owned());
    let expected = palisade_audit::ingest::audit_service_id(td)?;
    let (auditor, task) = Auditor::start(palisade_audit::deliver::DeliverParams::new(
        address.clone(),
        trust,
        resolver,
        expected,
        spool,
    ))?;
    late.connect(auditor);
    Ok(Some(task))
}
