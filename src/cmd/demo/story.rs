//! The story the demo plays on the running mesh, one line per call.
//!
//! Every call carries its own `x-request-id`; the line's decisions and deciding
//! policies are read back from the audit log (`palisade audit query -o json`), so
//! each line also proves that the sidecars' records reached the tamper-evident
//! log. A step whose outcome is not the expected one stops the demo with an
//! [`StoryError`] naming what was expected and what happened.

use std::time::Duration;

use serde_json::Value;

use super::mesh::{eventually, Mesh, MeshError, UNLISTED};
use super::net::{self, Tunnel};

/// How long the audit records of one call may take to be stored.
const AUDIT_WAIT: Duration = Duration::from_secs(15);

/// An outcome of the story was not the one expected.
#[derive(Debug, thiserror::Error)]
pub enum StoryError {
    #[error(transparent)]
    Mesh(#[from] MeshError),
    #[error(transparent)]
    Net(#[from] net::NetError),
    #[error("step `{step}`: expected {expected}, but {saw}. The components' logs are in {logs}")]
    Unexpected {
        step: String,
        expected: String,
        saw: String,
        logs: String,
    },
    #[error("cannot edit {path}: {why}")]
    Edit { path: String, why: String },
}

/// What a call between two mesh workloads should end in.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Mesh2 {
    /// Both sides allow: the callee's app answers.
    Allowed,
    /// The caller's sidecar refuses; nothing leaves it.
    EgressDenied,
    /// The caller's sidecar allows, the callee's refuses.
    IngressDenied,
    /// Allowed, but a dry-run policy records that it would deny.
    DryRunDenied,
}

impl Mesh2 {
    fn want(self) -> (&'static str, Option<&'static str>, u16) {
        match self {
            Self::Allowed => ("allow", Some("allow"), 200),
            Self::EgressDenied => ("deny", None, 403),
            Self::IngressDenied => ("allow", Some("deny"), 403),
            Self::DryRunDenied => ("allow", Some("dry_run_deny"), 200),
        }
    }
}

/// Plays the story on `mesh`.
#[derive(Debug)]
pub struct Story<'a> {
    mesh: &'a Mesh,
    next_id: usize,
}

fn effect_text(effect: &str) -> &str {
    match effect {
        "dry_run_deny" => "dry-run deny",
        other => other,
    }
}

/// A string field of a JSON record.
fn str_of<'v>(v: &'v Value, key: &str) -> Option<&'v str> {
    v.get(key).and_then(Value::as_str)
}

/// Whether a JSON record's field is the string `want`.
fn is(v: &Value, key: &str, want: &str) -> bool {
    str_of(v, key) == Some(want)
}

fn policies(record: Option<&Value>) -> Vec<String> {
    record
        .and_then(|r| r.get("policies"))
        .and_then(Value::as_array)
        .map(|ps| ps.iter().filter_map(|p| p.as_str().map(str::to_owned)).collect())
        .unwrap_or_default()
}

/// One line of the story: who → whom, what, the decisions, the status, why.
fn line(who: &str, what: &str, decision: &str, status: &str, why: &str) {
    println!("✓ {who:<28} {what:<28} {decision:<33} {status:<4} {why}");
}

/// A heading between parts of the story.
pub fn heading(text: &str) {
    println!("\n{text}");
}

impl<'a> Story<'a> {
    pub fn new(mesh: &'a Mesh) -> Self {
        Self { mesh, next_id: 0 }
    }

    fn request_id(&mut self) -> String {
        self.next_id += 1;
        format!("demo-{:02}", self.next_id)
    }

    fn unexpected(&self, step: &str, expected: String, saw: String) -> StoryError {
        StoryError::Unexpected {
            step: step.to_owned(),
            expected,
            saw,
            logs: self.mesh.dir.join("logs").display().to_string(),
        }
    }

    /// The audit records of `request_id`, once `done` says they are all there.
    async fn records(
        &self,
        step: &str,
        request_id: &str,
        done: impl Fn(&[Value]) -> bool,
    ) -> Result<Vec<Value>, StoryError> {
        let what = format!("step `{step}`: its audit records ({request_id}) were not all stored");
        let log = self.mesh.dir.join("logs").join("audit.log").display().to_string();
        let found = eventually(AUDIT_WAIT, &what, &log, || async {
            let all = self.mesh.audit_records(200).await.ok()?;
            let mine: Vec<Value> = all
                .iter()
                .filter_map(|r| r.pointer("/record/event").cloned())
                .filter(|e| is(e, "requestId", request_id))
                .collect();
            done(&mine).then_some(mine)
        })
        .await?;
        Ok(found)
    }

    /// `from` calls the mesh service `to` with `METHOD path`; checks the outcome.
    async fn mesh_call(
        &mut self,
        from: &str,
        to: &str,
        method: &str,
        path: &str,
        headers: &[(&str, &str)],
        expect: Mesh2,
    ) -> Result<(), StoryError> {
        let id = self.request_id();
        let mut all_headers = vec![("x-request-id", id.as_str())];
        all_headers.extend_from_slice(headers);
        let outbound = self.mesh.workload(from)?.outbound;
        let reply = net::call(outbound, method, &format!("{to}.shop:8080"), path, &all_headers).await?;
        let who = format!("{from} → {to}");
        let extra: String = headers.iter().map(|(k, v)| format!(" ({k}: {v})")).collect();
        let what = format!("{method} {path}{extra}");
        let step = format!("{who} {what}");
        let records = self
            .records(&step, &id, |rs| {
                let side = |s: &str| rs.iter().find(|r| is(r, "type", "decision") && is(r, "side", s));
                match side("egress") {
                    Some(e) if is(e, "effect", "deny") => true,
                    Some(_) => side("ingress").is_some(),
                    None => false,
                }
            })
            .await?;
        let side = |s: &str| records.iter().find(|r| is(r, "type", "decision") && is(r, "side", s));
        let (egress, ingress) = (side("egress"), side("ingress"));
        let egress_effect = egress.and_then(|r| str_of(r, "effect")).unwrap_or("?");
        let ingress_effect = ingress.and_then(|r| str_of(r, "effect"));
        let (want_egress, want_ingress, want_status) = expect.want();
        let decision = format!(
            "egress {:<5}  ingress {}",
            effect_text(egress_effect),
            ingress_effect.map_or("—", effect_text)
        );
        if egress_effect != want_egress || ingress_effect != want_ingress || reply.status != want_status {
            return Err(self.unexpected(
                &step,
                format!(
                    "egress {want_egress}, ingress {}, status {want_status}",
                    want_ingress.unwrap_or("(not reached)")
                ),
                format!(
                    "the audit log says {decision} and the app got {}: {}",
                    reply.status,
                    reply.body.trim()
                ),
            ));
        }
        let mut why: Vec<String> = policies(egress);
        why.extend(policies(ingress));
        let why = match expect {
            Mesh2::EgressDenied if why.is_empty() => "no egress policy permits it; nothing left the sidecar".to_owned(),
            Mesh2::EgressDenied => format!("({}); nothing left the sidecar", why.join(", ")),
            // The ingress record of a dry-run denial names the dry-run policy.
            Mesh2::DryRunDenied => format!("({}) would deny: recorded, not enforced", why.join(", ")),
            _ => format!("({})", why.join(", ")),
        };
        line(&who, &what, &decision, &reply.status.to_string(), &why);
        Ok(())
    }

    /// `from` reaches the external `host`: HTTPS through CONNECT for api.stripe.com,
    /// plain HTTP for the unlisted host. `kind` is the expected external record kind.
    async fn external_call(&mut self, from: &str, host: &str, kind: &str) -> Result<(), StoryError> {
        let id = self.request_id();
        let outbound = self.mesh.workload(from)?.outbound;
        let stand_in = if host == UNLISTED {
            &self.mesh.unlisted
        } else {
            &self.mesh.stripe
        };
        let hits = stand_in.hits();
        let (what, status, body) = match &stand_in.cert {
            Some(cert) => {
                let tunnel = net::https_via_connect(outbound, host, cert, &id).await?;
                let (status, body) = match tunnel {
                    Tunnel::Answered(text) => (200, text),
                    Tunnel::Refused { status, body } => (status, body),
                    Tunnel::HandshakeFailed(why) => (0, format!("TLS handshake failed: {why}")),
                };
                (format!("CONNECT {host}:443"), status, body)
            }
            None => {
                let reply = net::call(outbound, "GET", host, "/", &[("x-request-id", &id)]).await?;
                ("GET /".to_owned(), reply.status, reply.body)
            }
        };
        let who = format!("{from} → {host}");
        let step = format!("{who} {what}");
        let records = self
            .records(&step, &id, |rs| rs.iter().any(|r| is(r, "type", "external")))
            .await?;
        let record = records.iter().find(|r| is(r, "type", "external"));
        let saw_kind = record.and_then(|r| str_of(r, "kind")).unwrap_or("?");
        let reached = stand_in.hits() > hits;
        let (want_status, want_reached) = if kind == "blackhole" { (403, false) } else { (200, true) };
        if saw_kind != kind || status != want_status || reached != want_reached {
            return Err(self.unexpected(
                &step,
                format!("{kind}, status {want_status}"),
                format!(
                    "the audit log says {saw_kind}, the app got {status} ({}) and the host was {}reached",
                    body.trim(),
                    if reached { "" } else { "not " }
                ),
            ));
        }
        let shown = match kind {
            "blackhole" => "BlackHole",
            "passthrough" => "Passthrough",
            _ => "allowlisted",
        };
        let mut why = policies(records.iter().find(|r| is(r, "type", "decision")));
        if why.is_empty() {
            if let Some(reason) = record.and_then(|r| str_of(r, "reason")).filter(|r| !r.is_empty()) {
                why.push(reason.to_owned());
            }
        }
        let reached = if reached {
            format!("{host} answered")
        } else {
            format!("nothing reached {host}")
        };
        let why = if why.is_empty() {
            format!("({reached})")
        } else {
            format!("({}; {reached})", why.join(", "))
        };
        line(&who, &what, &format!("egress {shown}"), &status.to_string(), &why);
        Ok(())
    }

    /// Rewrites a file of the bundle copy with `edit`, which must change it.
    fn edit(&self, path: &str, edit: impl Fn(&str) -> String) -> Result<(), StoryError> {
        let path = self.mesh.bundle.join(path);
        let fail = |why: String| StoryError::Edit {
            path: path.display().to_string(),
            why,
        };
        let before = std::fs::read_to_string(&path).map_err(|e| fail(e.to_string()))?;
        let after = edit(&before);
        if after == before {
            return Err(fail("the expected text is not in the file".to_owned()));
        }
        std::fs::write(&path, after).map_err(|e| fail(e.to_string()))
    }

    /// The whole story.
    pub async fn play(&mut self) -> Result<(), StoryError> {
        heading("Calls inside the mesh (each decided twice: the caller's sidecar, then the callee's):");
        self.mesh_call("frontend", "reviews", "GET", "/reviews/1", &[], Mesh2::Allowed)
            .await?;
        self.mesh_call("frontend", "payments", "POST", "/charge", &[], Mesh2::IngressDenied)
            .await?;
        self.mesh_call("checkout", "payments", "POST", "/charge", &[], Mesh2::Allowed)
            .await?;
        self.mesh_call("checkout", "payments", "DELETE", "/charge", &[], Mesh2::EgressDenied)
            .await?;
        self.mesh_call("reviews", "payments", "POST", "/charge", &[], Mesh2::EgressDenied)
            .await?;
        self.mesh_call(
            "frontend",
            "reviews",
            "GET",
            "/reviews/1",
            &[("x-debug", "1")],
            Mesh2::DryRunDenied,
        )
        .await?;

        heading("Leaving the mesh (outboundMode REGISTRY_ONLY: only egress.yaml's hosts, for their workloads):");
        self.external_call("checkout", "api.stripe.com", "allowlisted").await?;
        self.external_call("frontend", "api.stripe.com", "blackhole").await?;
        self.external_call("frontend", UNLISTED, "blackhole").await?;
        self.external_call("checkout", UNLISTED, "blackhole").await?;

        let before = self.mesh.snapshot_version("frontend").await?;
        self.edit("mesh.yaml", |t| {
            t.replace("outboundMode: REGISTRY_ONLY", "outboundMode: ALLOW_ANY")
        })?;
        let after = self.mesh.wait_snapshot_after("frontend", before).await?;
        heading(&format!(
            "mesh.yaml edited: outboundMode ALLOW_ANY (snapshot v{before} → v{after} pushed to the sidecars, no restart):"
        ));
        self.external_call("frontend", "api.stripe.com", "passthrough").await?;
        self.external_call("frontend", UNLISTED, "passthrough").await?;

        let before = self.mesh.snapshot_version("reviews").await?;
        self.edit("policies/reviews/ingress/reviews-ingress.cedar", |t| {
            t.replace("@mode(\"dry-run\")\n", "")
        })?;
        let after = self.mesh.wait_snapshot_after("reviews", before).await?;
        heading(&format!(
            "policies/reviews/ingress/reviews-ingress.cedar edited: reviews-no-debug-header enforced, no longer dry run (v{before} → v{after}):"
        ));
        self.mesh_call(
            "frontend",
            "reviews",
            "GET",
            "/reviews/1",
            &[("x-debug", "1")],
            Mesh2::IngressDenied,
        )
        .await?;
        self.mesh_call("frontend", "reviews", "GET", "/reviews/1", &[], Mesh2::Allowed)
            .await?;

        self.revoke_frontend().await
    }

    /// `ca revoke` of frontend's identity: reviews' sidecar refuses its handshake.
    async fn revoke_frontend(&mut self) -> Result<(), StoryError> {
        let frontend = self.mesh.workload("frontend")?.id.clone();
        let before = self.mesh.revocations_version("reviews").await?;
        let ca_dir = self.mesh.ca_dir.display().to_string();
        self.mesh
            .palisade(&[
                "ca",
                "revoke",
                "--spiffe-id",
                &frontend,
                "--reason",
                "keyCompromise",
                "--dir",
                &ca_dir,
            ])
            .await?;
        let what = "reviews' sidecar did not receive the new revocation list".to_owned();
        let log = self.mesh.dir.join("logs").join("ca.log").display().to_string();
        let version = eventually(Duration::from_secs(10), &what, &log, || async {
            let config = self.mesh.config("reviews").await.ok()?;
            let version = config.pointer("/revocations/version").and_then(Value::as_u64)?;
            let live = config.get("liveConnections").and_then(Value::as_u64);
            (version > before && live == Some(0)).then_some(version)
        })
        .await?;
        heading(&format!(
            "ca revoke --spiffe-id {frontend} (revocation list v{before} → v{version} pushed to every sidecar):"
        ));
        let outbound = self.mesh.workload("frontend")?.outbound;
        let step = "frontend → reviews GET /reviews/1 after revocation";
        // The first call may meet the pooled connection just as reviews' sidecar cuts
        // it (revoked peers' live connections are cut): that is a 502 too, and the next
        // call's new handshake is the one refused. Never a 200; a few calls at most.
        for attempt in 1..=3 {
            let id = self.request_id();
            let reply = net::call(
                outbound,
                "GET",
                "reviews.shop:8080",
                "/reviews/1",
                &[("x-request-id", &id)],
            )
            .await?;
            let metrics = self.mesh.metrics("reviews").await?;
            let refused = metrics
                .lines()
                .any(|l| l.contains("reason=\"revoked\"") && !l.starts_with('#'));
            if reply.status == 502 && refused {
                break;
            }
            if reply.status != 502 || attempt == 3 {
                return Err(self.unexpected(
                    step,
                    "502 with reviews' sidecar counting a handshake refused as revoked".to_owned(),
                    format!(
                        "the app got {} ({}) and reviews' metrics {} a revoked handshake",
                        reply.status,
                        reply.body.trim(),
                        if refused { "show" } else { "do not show" }
                    ),
                ));
            }
        }
        line(
            "frontend → reviews",
            "GET /reviews/1",
            "refused at the mTLS handshake",
            "502",
            "(reviews' sidecar: frontend's SVID is revoked)",
        );
        Ok(())
    }
}
