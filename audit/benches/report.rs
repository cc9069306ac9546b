//! A compliance report over one million records: aggregation and rendering, the
//! report's part of the "1M records in ≤ 10 s end to end" target (reading the
//! store is measured by the store's own benchmark).
//!
//! The records are a synthetic day of a small mesh (`tests/report/mesh.rs`): 90 %
//! decisions in egress/ingress pairs, the rest external, identity and policy
//! events. They are made one at a time into one reused `StoredRecord`, as a store
//! cursor hands them over, so a million records never sit in memory at once.
//!
//! - `generate_1m`: making the records alone (the baseline to subtract).
//! - `aggregate_1m`: making them + `ReportBuilder::add` for each + `finish`.
//! - `end_to_end_1m`: `aggregate_1m` + rendering the HTML.
//! - `render_<format>`: rendering a finished 1M-record report in one format.
//!
//! Run: `cargo bench -p palisade-audit --bench report -- --warm-up-time 1`

#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    clippy::indexing_slicing,
    reason = "a benchmark whose setup fails has nothing to measure"
)]

#[path = "../tests/report/mesh.rs"]
#[allow(dead_code, reason = "shared with the tests, which use other parts")]
mod mesh;

use std::hint::black_box;
use std::time::Duration;

use criterion::{criterion_group, criterion_main, Criterion};
use palisade_audit::chain::Verification;
use palisade_audit::report::{Report, ReportBuilder, ReportFormat, Window};

const RECORDS: u64 = 1_000_000;
const UNTIL: i64 = 1_740_830_400_000_000; // 2025-03-01T12:00:00Z
const DAY: i64 = 86_400_000_000;

fn mesh() -> mesh::Mesh {
    mesh::Mesh {
        since: UNTIL - DAY,
        until: UNTIL,
        count: RECORDS,
    }
}

fn build(mesh: &mesh::Mesh) -> Report {
    let mut builder = ReportBuilder::new(Window {
        since_micros: mesh.since,
        until_micros: mesh.until,
    });
    let mut record = mesh::Mesh::blank();
    for i in 0..mesh.count {
        mesh.fill(&mut record, i);
        builder.add(&record);
    }
    builder.finish(
        Verification {
            records: mesh.count,
            broken: None,
        },
        UNTIL,
        "/var/lib/palisade/audit.db",
    )
}

fn report(c: &mut Criterion) {
    let mesh = mesh();
    let mut group = c.benchmark_group("report");
    group.sample_size(10).measurement_time(Duration::from_secs(8));
    group.bench_function("generate_1m", |b| {
        b.iter(|| {
            let mut record = mesh::Mesh::blank();
            for i in 0..mesh.count {
                mesh.fill(&mut record, i);
                black_box(&record);
            }
        });
    });
    group.bench_function("aggregate_1m", |b| b.iter(|| black_box(build(&mesh))));
    group.bench_function("end_to_end_1m", |b| b.iter(|| black_box(build(&mesh).to_html())));
    let report = build(&mesh);
    for format in ReportFormat::ALL {
        group.bench_function(format!("render_{format}"), |b| {
            b.iter(|| black_box(report.render(*format)))
        });
    }
    group.finish();
}

criterion_group!(benches, report);
criterion_main!(benches);
