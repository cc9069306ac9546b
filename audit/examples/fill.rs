//! Fills an audit store with a realistic mix of records, for the report benchmark
//! (`bench/audit.sh`): request pairs (egress + ingress) with some denials and
//! dry-run denials, external events of each kind, identity events and policy
//! changes, spread over the last 24 hours.
//!
//! `cargo run --release -p palisade-audit --example fill -- sqlite:///tmp/audit.db 1000000`

#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::indexing_slicing,
    reason = "a benchmark tool"
)]

use palisade_audit::record::*;
use palisade_audit::store::Store;

const SENDERS: [&str; 4] = [
    "spiffe://shop.example/ns/web/sa/frontend",
    "spiffe://shop.example/ns/checkout/sa/checkout",
    "spiffe://shop.example/ns/reviews/sa/reviews",
    "spiffe://shop.example/ns/payments/sa/payments",
];
const SERVICES: [&str; 4] = [
    "web/frontend",
    "checkout/checkout",
    "reviews/reviews",
    "payments/payments",
];
const BATCH: usize = 1000;

#[tokio::main(flavor = "current_thread")]
async fn main() {
    let mut args = std::env::args().skip(1);
    let url = args.next().expect("usage: fill DATABASE-URL COUNT");
    let count: usize = args
        .next()
        .and_then(|n| n.parse().ok())
        .expect("usage: fill DATABASE-URL COUNT");
    let store = Store::open(&url).await.expect("the store opens");
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_micros() as i64;
    let day = 24 * 3600 * 1_000_000_i64;
    let started = std::time::Instant::now();
    let mut made = 0;
    let mut batches: Vec<Vec<Record>> = vec![Vec::new(); SENDERS.len()];
    while made < count {
        let n = made as i64;
        let time = now - day + (n * day / count.max(1) as i64);
        let caller = made / 2 % SENDERS.len();
        let callee = (caller + 1 + made / 7 % 3) % SENDERS.len();
        let request_id = format!("req-{}", made / 2);
        let (sender, event) = match made % 100 {
            0..=89 => {
                let side = if made % 2 == 0 { Side::Egress } else { Side::Ingress };
                let effect = match made % 50 {
                    7 => Effect::Deny,
                    9 => Effect::DryRunDeny,
                    _ => Effect::Allow,
                };
                let sender = if side == Side::Egress { caller } else { callee };
                let policy = format!("{}-{}", SERVICES[sender].split('/').next().unwrap(), side.as_str());
                (
                    sender,
                    Event::Decision(Decision {
                        side,
                        effect,
                        principal: SENDERS[caller].to_owned(),
                        action: ["GET", "POST", "DELETE"][made % 3].to_owned(),
                        resource: SERVICES[callee].to_owned(),
                        path: format!("/api/items/{}", made % 1000),
                        policies: vec![policy],
                        request_id,
                        status: if effect == Effect::Deny { 403 } else { 200 },
                        latency_micros: 300 + (made % 700) as u64,
                    }),
                )
            }
            90..=97 => (
                caller,
                Event::External(External {
                    kind: ExternalKind::ALL[made % 3],
                    workload: SENDERS[caller].to_owned(),
                    host: ["api.stripe.com", "unlisted.example", "metrics.vendor.example"][made % 3].to_owned(),
                    sni: String::new(),
                    port: 443,
                    protocol: "tls".to_owned(),
                    request_id,
                    reason: [
                        "allowed by egress.yaml and the egress policy",
                        "`unlisted.example:443` is not in the egress allowlist (REGISTRY_ONLY)",
                        "not in the egress allowlist; passed flagged (ALLOW_ANY)",
                    ][made % 3]
                        .to_owned(),
                }),
            ),
            98 => (
                0,
                Event::Identity(Identity {
                    kind: IdentityKind::Renewed,
                    spiffe_id: SENDERS[caller].to_owned(),
                    serial: format!("{made:032x}"),
                    reason: String::new(),
                    not_after_unix: time / 1_000_000 + 3600,
                }),
            ),
            _ => (
                0,
                Event::Policy(PolicyChange {
                    outcome: PolicyOutcome::Accepted,
                    version: made as u64,
                    digest: format!("sha256:{made:064x}"),
                    detail: String::new(),
                }),
            ),
        };
        batches[sender].push(Record {
            id: format!("fill-{made}"),
            time_micros: time,
            event,
        });
        made += 1;
        for (i, batch) in batches.iter_mut().enumerate() {
            if batch.len() >= BATCH || (made == count && !batch.is_empty()) {
                store
                    .append(SENDERS[i], time, batch)
                    .await
                    .expect("the batch is stored");
                batch.clear();
            }
        }
    }
    let elapsed = started.elapsed();
    eprintln!(
        "{count} records stored in {elapsed:.2?} ({:.0} records/s)",
        count as f64 / elapsed.as_secs_f64()
    );
}
