//! The proxy's admin pages.

use std::sync::Arc;

use palisade_ca::svid::unix_seconds;
use palisade_ca::Svid;
use palisade_policy::distribute::FollowState;
use serde_json::json;
use tokio::sync::watch;

use crate::admin::{Page, Pages};
use crate::context::Context;

/// `/live`, `/ready`, `/metrics`, `/config`.
#[derive(Debug)]
pub(super) struct ProxyPages {
    pub(super) ctx: Arc<Context>,
    pub(super) svids: watch::Receiver<Arc<Svid>>,
    pub(super) control_plane: watch::Receiver<FollowState>,
    pub(super) control_plane_addr: String,
}

impl Pages for ProxyPages {
    fn page(&self, path: &str) -> Option<Page> {
        Some(match path {
            "/live" => Page::text(200, "live\n"),
            "/ready" => self.ready(),
            "/metrics" => Page {
                status: 200,
                content_type: "text/plain; version=0.0.4; charset=utf-8",
                body: self.ctx.metrics.render() + &self.ctx.audit.render_metrics(),
            },
            "/config" => Page::json(&self.config()),
            _ => return None,
        })
    }
}

impl ProxyPages {
    /// Ready once a policy snapshot is in force (before that every request is
    /// denied) and the SVID is still valid.
    fn ready(&self) -> Page {
        let expired = self.svids.borrow().not_after() <= std::time::SystemTime::now();
        match (self.ctx.policy.load().as_ref(), expired) {
            (Some(state), false) => Page::json(&json!({"ready": true, "snapshotVersion": state.version()})),
            (None, _) => Page::json_with_status(
                503,
                &json!({
                    "ready": false,
                    "reason": format!(
                        "no policy snapshot yet from the control plane at {}: every request is denied until one arrives",
                        self.control_plane_addr
                    ),
                }),
            ),
            (Some(_), true) => Page::json_with_status(
                503,
                &json!({"ready": false, "reason": "the SVID has expired and the CA cannot renew it"}),
            ),
        }
    }

    fn config(&self) -> serde_json::Value {
        let svid = Arc::clone(&self.svids.borrow());
        let policy = self.ctx.policy.load();
        let revocations = self.ctx.trust.revocations();
        let control_plane = {
            let state = self.control_plane.borrow();
            json!({
                "address": self.control_plane_addr,
                "connected": state.connected,
                "lastError": state.last_error,
            })
        };
        json!({
            "id": self.ctx.id.to_string(),
            "svid": {
                "serial": svid.serial().to_string(),
                "notBefore": unix_seconds(svid.not_before()),
                "notAfter": unix_seconds(svid.not_after()),
            },
            "snapshot": policy.as_ref().map(|state| json!({
                "version": state.version(),
                "digest": state.digest(),
            })),
            "controlPlane": control_plane,
            "revocations": {
                "version": revocations.version(),
                "entries": revocations.len(),
            },
            "liveConnections": self.ctx.connections.len(),
        })
    }
}
