//! The audit log end to end: sidecars, the CA and the control plane send records
//! over mTLS to `palisade audit serve`; the service is killed under load and comes
//! back; nothing is lost or doubled, the chain verifies, the report's figures are
//! the records', and an edited row is caught by `audit verify`.

use std::collections::HashMap;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use crate::support::client::call;
use crate::support::eventually;
use crate::support::mesh::{Mesh, Options};

const THREADS: usize = 4;
const CALLS_PER_THREAD: usize = 150;

/// `audit query ARGS -o json`: the stored records.
fn query(mesh: &Mesh, args: &[&str]) -> Vec<serde_json::Value> {
    let mut all = vec!["query", "--output", "json", "--limit", "1000000"];
    all.extend_from_slice(args);
    let out = mesh.audit_cli(&all);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    serde_json::from_slice(&out.stdout).unwrap()
}

fn median(mut v: Vec<Duration>) -> Duration {
    v.sort();
    v.get(v.len() / 2).copied().unwrap_or_default()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn audit_service_killed_under_load_loses_nothing() {
    let mut mesh = Mesh::start(Options {
        only: &["frontend", "reviews"],
        audit: true,
        ..Options::default()
    })
    .await;
    let frontend = mesh.workload("frontend").outbound;

    // Load: THREADS × CALLS_PER_THREAD calls frontend → reviews, each with its own id.
    let done = Arc::new(AtomicUsize::new(0));
    let down = Arc::new(std::sync::atomic::AtomicBool::new(false));
    let threads: Vec<_> = (0..THREADS)
        .map(|t| {
            let (done, down) = (Arc::clone(&done), Arc::clone(&down));
            std::thread::spawn(move || {
                let mut results = Vec::new();
                for i in 0..CALLS_PER_THREAD {
                    let id = format!("load-{t}-{i}");
                    let started = Instant::now();
                    let reply = call(
                        frontend,
                        "GET",
                        "reviews.shop:8080",
                        "/reviews/1",
                        &[("x-request-id", &id)],
                    );
                    results.push((reply.status, started.elapsed(), down.load(Ordering::SeqCst)));
                    done.fetch_add(1, Ordering::SeqCst);
                }
                results
            })
        })
        .collect();
    let total = THREADS * CALLS_PER_THREAD;
    let at = |fraction: usize| {
        let done = Arc::clone(&done);
        move || (done.load(Ordering::SeqCst) * 4 >= total * fraction).then_some(())
    };
    eventually(Duration::from_secs(60), "a quarter of the load", at(1)).await;
    mesh.audit.as_mut().unwrap().server.take().unwrap().kill();
    down.store(true, Ordering::SeqCst);
    eventually(Duration::from_secs(60), "three quarters of the load", at(3)).await;
    down.store(false, Ordering::SeqCst);
    mesh.start_audit();
    let results: Vec<(u16, Duration, bool)> = threads.into_iter().flat_map(|t| t.join().unwrap()).collect();
    assert!(
        results.iter().all(|(status, ..)| *status == 200),
        "every call succeeded"
    );
    let (while_down, while_up): (Vec<&(u16, Duration, bool)>, Vec<_>) = results.iter().partition(|(_, _, down)| *down);
    eprintln!(
        "{} calls while the audit service was down (median {:?}, max {:?}); {} while up (median {:?}, max {:?})",
        while_down.len(),
        median(while_down.iter().map(|r| r.1).collect()),
        while_down.iter().map(|r| r.1).max().unwrap_or_default(),
        while_up.len(),
        median(while_up.iter().map(|r| r.1).collect()),
        while_up.iter().map(|r| r.1).max().unwrap_or_default(),
    );
    assert!(
        !while_down.is_empty(),
        "some calls ran while the audit service was away"
    );

    // Every decision arrives, exactly once: one egress and one ingress per call.
    let decisions = eventually(Duration::from_secs(60), "every decision record stored", || {
        let records = query(&mesh, &["--kind", "decision"]);
        let load = records
            .iter()
            .filter(|r| {
                r["record"]["event"]["requestId"]
                    .as_str()
                    .is_some_and(|id| id.starts_with("load-"))
            })
            .count();
        (load >= 2 * total).then_some(records)
    })
    .await;
    let mut per_request: HashMap<String, Vec<(String, String)>> = HashMap::new();
    for r in &decisions {
        let e = &r["record"]["event"];
        let id = e["requestId"].as_str().unwrap().to_owned();
        if id.starts_with("load-") {
            per_request
                .entry(id)
                .or_default()
                .push((e["side"].as_str().unwrap().into(), e["effect"].as_str().unwrap().into()));
        }
    }
    assert_eq!(per_request.len(), total, "one set of records per call");
    for (id, mut sides) in per_request {
        sides.sort();
        assert_eq!(
            sides,
            [("egress".into(), "allow".into()), ("ingress".into(), "allow".into())],
            "{id}: exactly one egress and one ingress record"
        );
    }
    let seqs: Vec<u64> = decisions.iter().map(|r| r["seq"].as_u64().unwrap()).collect();
    assert!(seqs.windows(2).all(|w| w[0] < w[1]), "one total order");

    // The CA's and the control plane's records are there too.
    let identity = query(&mesh, &["--kind", "identity"]);
    for who in ["ns/web/sa/frontend", "ns/reviews/sa/reviews"] {
        assert!(
            identity.iter().any(|r| {
                let e = &r["record"]["event"];
                e["kind"] == "issued" && e["spiffeId"].as_str().is_some_and(|id| id.ends_with(who))
            }),
            "the CA recorded {who}'s first SVID"
        );
    }
    assert!(identity
        .iter()
        .all(|r| r["sender"] == "spiffe://shop.example/ns/palisade-system/sa/palisade-ca"));
    let policy = query(&mesh, &["--kind", "policy"]);
    assert!(
        policy.iter().any(|r| r["record"]["event"]["outcome"] == "accepted"),
        "the control plane recorded the bundle it published"
    );

    // The chain is intact.
    let out = mesh.audit_cli(&["verify"]);
    let said = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "{said}");
    assert!(said.contains("chain intact"), "{said}");

    // The report's figures are the records'.
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("report.json");
    let out = mesh.audit_cli(&[
        "report",
        "--since",
        "1h",
        "--format",
        "json",
        "--out",
        path.to_str().unwrap(),
    ]);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let report: serde_json::Value = serde_json::from_str(&std::fs::read_to_string(&path).unwrap()).unwrap();
    check_report(&report, &query(&mesh, &[]));

    // Stop writers, then edit one stored decision: verify fails and names it.
    mesh.audit.as_mut().unwrap().server.take().unwrap().kill();
    let victim = decisions[decisions.len() / 2]["seq"].as_u64().unwrap();
    tamper(&mesh, victim);
    let out = mesh.audit_cli(&["verify"]);
    let said = String::from_utf8_lossy(&out.stdout);
    assert_eq!(out.status.code(), Some(1), "{said}");
    assert!(said.contains(&format!("record {victim}")), "{said}");
}

/// Every figure of the JSON report against the records themselves.
fn check_report(report: &serde_json::Value, records: &[serde_json::Value]) {
    let events: Vec<&serde_json::Value> = records.iter().map(|r| &r["record"]["event"]).collect();
    let decisions: Vec<_> = events.iter().filter(|e| e["type"] == "decision").collect();
    let count = |side: &str, effect: &str| {
        decisions
            .iter()
            .filter(|e| e["side"] == side && e["effect"] == effect)
            .count() as u64
    };
    let totals = &report["totals"];
    eprintln!("report totals: {totals}");
    assert_eq!(totals["records"].as_u64(), Some(records.len() as u64), "{totals}");
    for side in ["egress", "ingress"] {
        for effect in ["allow", "deny"] {
            assert_eq!(
                totals["decisions"][side][effect].as_u64().unwrap_or(0),
                count(side, effect),
                "{side} {effect}"
            );
        }
    }
    let ingress_allowed: std::collections::HashSet<&str> = decisions
        .iter()
        .filter(|e| e["side"] == "ingress" && e["effect"] == "allow")
        .filter_map(|e| e["requestId"].as_str())
        .collect();
    let coverage = &report["dualApproval"];
    assert_eq!(
        coverage["ingressAllowed"].as_u64(),
        Some(ingress_allowed.len() as u64),
        "{coverage}"
    );
    assert_eq!(
        coverage["bothAllowed"].as_u64(),
        Some(ingress_allowed.len() as u64),
        "{coverage}"
    );
    assert!(report["chain"]["broken"].is_null(), "{}", report["chain"]);
    assert_eq!(report["chain"]["records"].as_u64(), Some(records.len() as u64));
}

/// Flips one stored decision's effect, as someone with write access to the file would.
fn tamper(mesh: &Mesh, seq: u64) {
    let database = &mesh.audit.as_ref().unwrap().database;
    let path = database.strip_prefix("sqlite://").unwrap();
    let db = rusqlite::Connection::open(path).unwrap();
    let changed = db
        .execute("UPDATE audit_records SET effect = 'deny' WHERE seq = ?1", [seq as i64])
        .unwrap();
    assert_eq!(changed, 1);
}

/// Two audit services on one PostgreSQL: frontend's sidecar sends to one, checkout's
/// to the other, both under load at once; the store keeps one total order and one
/// valid chain, every call's two records once each.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_audit_services_on_one_postgresql_keep_one_chain() {
    let Ok(base) = std::env::var("PALISADE_TEST_POSTGRES") else {
        eprintln!("skipped: PostgreSQL not available (set PALISADE_TEST_POSTGRES)");
        return;
    };
    let Ok((client, connection)) = tokio_postgres::connect(&base, tokio_postgres::NoTls).await else {
        eprintln!("skipped: PostgreSQL not available at {base}");
        return;
    };
    tokio::spawn(connection);
    let schema = format!("e2e_{}", std::process::id());
    client
        .batch_execute(&format!(
            "DROP SCHEMA IF EXISTS {schema} CASCADE; CREATE SCHEMA {schema}"
        ))
        .await
        .unwrap();
    let separator = if base.contains('?') { '&' } else { '?' };
    let database = format!("{base}{separator}options=-csearch_path%3D{schema}");

    let mesh = Mesh::start(Options {
        only: &["frontend", "checkout", "payments"],
        audit: true,
        audit_database: Some(database),
        audit_replicas: 1,
        ..Options::default()
    })
    .await;
    let (frontend, checkout) = (mesh.workload("frontend").outbound, mesh.workload("checkout").outbound);
    const CALLS: usize = 200;
    let load = |outbound, host: &'static str, path: &'static str, tag: &'static str| {
        std::thread::spawn(move || {
            (0..CALLS)
                .map(|i| {
                    let id = format!("{tag}-{i}");
                    call(outbound, "POST", host, path, &[("x-request-id", &id)]).status
                })
                .collect::<Vec<u16>>()
        })
    };
    // frontend (→ replica 1) calls checkout (→ replica 2), which calls payments (→ replica 2).
    let a = load(frontend, "checkout.shop:8080", "/orders", "orders");
    let b = load(checkout, "payments.shop:8080", "/charge", "charges");
    for statuses in [a.join().unwrap(), b.join().unwrap()] {
        assert!(statuses.iter().all(|s| *s == 200), "{statuses:?}");
    }
    let decisions = eventually(Duration::from_secs(60), "every decision stored", || {
        let records = query(&mesh, &["--kind", "decision"]);
        (records.len() >= 4 * CALLS).then_some(records)
    })
    .await;
    assert_eq!(decisions.len(), 4 * CALLS, "each call's two records, once");
    let senders: std::collections::HashSet<&str> = decisions.iter().filter_map(|r| r["sender"].as_str()).collect();
    assert_eq!(senders.len(), 3, "{senders:?}");
    let out = mesh.audit_cli(&["verify"]);
    let said = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "{said}");
    eprintln!("{said}");
    drop(mesh);
    client
        .batch_execute(&format!("DROP SCHEMA {schema} CASCADE"))
        .await
        .unwrap();
}
