//! Audit store benchmarks on SQLite: batched ingest (target ≥ 50,000 records/s),
//! and verifying and paging a store of a million records (a report over 1M
//! records, chain check included, must take ≤ 10 s).
//!
//! `cargo bench -p palisade-audit --bench ingest`; `PALISADE_BENCH_RECORDS` sets
//! the size of the large store (default 1,000,000).

#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::indexing_slicing,
    reason = "benchmark setup"
)]

use std::time::Duration;

use criterion::{criterion_group, criterion_main, BatchSize, Criterion, SamplingMode, Throughput};
use palisade_audit::query::Filter;
use palisade_audit::record::{Decision, Effect, Event, Record, Side};
use palisade_audit::store::Store;

const BATCH: usize = 1_000;
const SENDER: &str = "spiffe://prod.example/ns/shop/sa/web";

/// A realistic decision record: ids like a sidecar makes them, real-looking names.
fn decision(n: u64) -> Record {
    Record {
        id: format!("7f3a9c2e-{n:012}"),
        time_micros: 1_767_225_600_000_000 + i64::try_from(n).unwrap() * 1_000,
        event: Event::Decision(Decision {
            side: if n.is_multiple_of(2) {
                Side::Egress
            } else {
                Side::Ingress
            },
            effect: if n.is_multiple_of(17) {
                Effect::Deny
            } else {
                Effect::Allow
            },
            principal: "spiffe://prod.example/ns/shop/sa/web".to_owned(),
            action: "POST".to_owned(),
            resource: "payments/payments".to_owned(),
            path: format!("/v1/charges/{}", n % 1000),
            policies: vec!["shop-web-pays-payments".to_owned()],
            request_id: format!("{n:016x}a1b2c3d4"),
            status: 200,
            latency_micros: 1_000 + n % 5_000,
        }),
    }
}

fn batch(first: u64) -> Vec<Record> {
    (first..first + BATCH as u64).map(decision).collect()
}

fn runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(1)
        .enable_all()
        .build()
        .unwrap()
}

fn ingest(c: &mut Criterion) {
    let rt = runtime();
    let dir = tempfile::tempdir().unwrap();
    let store = rt
        .block_on(Store::open(&format!(
            "sqlite://{}",
            dir.path().join("audit.db").display()
        )))
        .unwrap();
    let mut next = 0u64;
    let mut g = c.benchmark_group("audit_store");
    g.throughput(Throughput::Elements(BATCH as u64));
    g.bench_function("append 1,000 decisions (SQLite, one transaction)", |b| {
        b.iter_batched(
            || {
                next += BATCH as u64;
                batch(next)
            },
            |records| {
                rt.block_on(store.append(SENDER, 1_767_225_600_000_000, &records))
                    .unwrap()
            },
            BatchSize::PerIteration,
        )
    });
    g.finish();
}

fn large_store(c: &mut Criterion) {
    let records: u64 = std::env::var("PALISADE_BENCH_RECORDS")
        .ok()
        .and_then(|n| n.parse().ok())
        .unwrap_or(1_000_000);
    let rt = runtime();
    let dir = tempfile::tempdir().unwrap();
    let store = rt
        .block_on(Store::open(&format!(
            "sqlite://{}",
            dir.path().join("audit.db").display()
        )))
        .unwrap();
    rt.block_on(async {
        for first in (0..records).step_by(BATCH) {
            store
                .append(SENDER, 1_767_225_600_000_000, &batch(first))
                .await
                .unwrap();
        }
    });
    let mut g = c.benchmark_group("audit_store_large");
    g.sample_size(10)
        .sampling_mode(SamplingMode::Flat)
        .measurement_time(Duration::from_secs(30));
    g.throughput(Throughput::Elements(records));
    g.bench_function(format!("verify the chain of {records} records"), |b| {
        b.iter(|| {
            let v = rt.block_on(store.verify()).unwrap();
            assert!(v.is_intact());
        })
    });
    g.bench_function(format!("page through {records} records, 10,000 per page"), |b| {
        b.iter(|| {
            rt.block_on(async {
                let mut after = 0;
                loop {
                    let page = store.page(&Filter::default(), after, 10_000).await.unwrap();
                    match page.last() {
                        Some(last) => after = last.seq,
                        None => break,
                    }
                }
            })
        })
    });
    g.finish();
}

criterion_group!(benches, ingest, large_store);
criterion_main!(benches);
