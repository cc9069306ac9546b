//! Delivery from a sender: every record arrives exactly once and in order, while
//! the service is up, killed, restarted; `record` never waits; what cannot be
//! kept is dropped, counted and refused by `accepting`.

use palisade_audit::deliver::{Auditor, DEFAULT_QUEUE_CAPACITY, MIN_SPOOL_MAX_BYTES};
use palisade_audit::record::{Decision, Effect, Event, Side};

use crate::support::*;

#[tokio::test]
async fn ten_thousand_records_arrive_exactly_once_in_order() {
    let ca = Ca::new();
    let server = AuditServer::start(&ca, MemorySink::new());
    let dir = tempfile::tempdir().unwrap();
    let (auditor, task) = start(params(&ca, FRONTEND, server.addr, dir.path()));
    record_all(&auditor, 0..10_000);
    let metrics = metrics_when(&auditor, |m| m.sent == 10_000).await;
    assert_eq!(server.sink.versions_of(FRONTEND), upto(10_000));
    assert_eq!(server.sink.duplicates(), 0);
    assert_eq!(metrics.dropped(), 0);
    stop(auditor, task).await;
}

#[tokio::test]
async fn records_made_while_the_service_is_down_are_spooled_then_delivered_once_in_order() {
    let ca = Ca::new();
    let mut server = AuditServer::start(&ca, MemorySink::new());
    let dir = tempfile::tempdir().unwrap();
    let (auditor, task) = start(params(&ca, FRONTEND, server.addr, dir.path()));
    record_all(&auditor, 0..100);
    server.sink.holds(100).await;

    server.kill().await;
    record_all(&auditor, 100..1_100);
    let down = metrics_when(&auditor, |m| m.spooled == 1_000 && !m.connected).await;
    assert!(down.spool_bytes > 0);
    assert!(auditor.accepting());

    server.restart(&ca).await;
    record_all(&auditor, 1_100..1_200);
    let up = metrics_when(&auditor, |m| m.sent == 1_200).await;
    assert_eq!(server.sink.versions_of(FRONTEND), upto(1_200));
    assert_eq!(up.dropped(), 0);
    assert_eq!(down.spool_records, 1_000);
    let emptied = metrics_when(&auditor, |m| m.spool_records == 0).await;
    assert!(emptied.connected);
    assert!(emptied.spool_bytes < down.spool_bytes, "a replayed spool is truncated");
    stop(auditor, task).await;
}

#[tokio::test]
async fn records_made_while_a_batch_waits_for_a_slow_service_spool_behind_it_and_arrive_in_order() {
    let ca = Ca::new();
    let server = AuditServer::start(&ca, MemorySink::new());
    let dir = tempfile::tempdir().unwrap();
    let (auditor, task) = start(params(&ca, FRONTEND, server.addr, dir.path()));
    server.sink.hold();
    auditor.record(numbered(0));
    server.sink.holding().await;
    record_all(&auditor, 1..5_000);
    let slow = metrics_when(&auditor, |m| m.queued == 0 && m.spooled > 0).await;
    assert!(slow.connected, "the service is slow, not away");
    assert!(auditor.accepting());

    server.sink.release();
    let metrics = metrics_when(&auditor, |m| m.sent == 5_000).await;
    assert_eq!(server.sink.versions_of(FRONTEND), upto(5_000));
    assert_eq!(server.sink.duplicates(), 0);
    assert_eq!(metrics.dropped(), 0);
    assert_eq!(metrics_when(&auditor, |m| m.spool_records == 0).await.sent, 5_000);
    stop(auditor, task).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn senders_under_load_through_a_kill_and_restart_lose_nothing_and_keep_their_order() {
    let ca = Ca::new();
    let mut server = AuditServer::start(&ca, MemorySink::new());
    let dir = tempfile::tempdir().unwrap();
    let senders = [FRONTEND, PAYMENTS].map(|id| start(params(&ca, id, server.addr, &dir.path().join(&id[9..]))));
    let load = |auditor: &Auditor, range: std::ops::Range<u64>| {
        let auditor = auditor.clone();
        tokio::spawn(async move {
            for n in range {
                auditor.record(numbered(n));
                if n % 64 == 0 {
                    tokio::task::yield_now().await;
                }
            }
        })
    };

    let before: Vec<_> = senders.iter().map(|(a, _)| load(a, 0..3_000)).collect();
    server.sink.holds(500).await;
    server.kill().await;
    for running in before {
        running.await.unwrap();
    }
    let during: Vec<_> = senders.iter().map(|(a, _)| load(a, 3_000..5_000)).collect();
    for running in during {
        running.await.unwrap();
    }
    for (auditor, _) in &senders {
        metrics_when(auditor, |m| m.queued == 0 && m.spooled > 0).await;
    }
    server.restart(&ca).await;
    let after: Vec<_> = senders.iter().map(|(a, _)| load(a, 5_000..6_000)).collect();
    for running in after {
        running.await.unwrap();
    }

    for (auditor, _) in &senders {
        let metrics = metrics_when(auditor, |m| m.sent == 6_000).await;
        assert_eq!(metrics.dropped(), 0, "{metrics:?}");
    }
    assert_eq!(server.sink.versions_of(FRONTEND), upto(6_000));
    assert_eq!(server.sink.versions_of(PAYMENTS), upto(6_000));
    for (auditor, task) in senders {
        stop(auditor, task).await;
    }
}

#[tokio::test]
async fn a_full_spool_drops_counts_loudly_and_stops_accepting() {
    let ca = Ca::new();
    let dir = tempfile::tempdir().unwrap();
    let mut params = params(&ca, FRONTEND, nowhere(), dir.path());
    params.spool_max_bytes = MIN_SPOOL_MAX_BYTES;
    params.strict = true;
    let (auditor, task) = start(params);
    assert!(auditor.accepting() && !auditor.denies_requests());
    record_all(&auditor, 0..2_000);
    let metrics = metrics_when(&auditor, |m| m.spooled + m.dropped_spool_full == 2_000).await;
    assert!(metrics.dropped_spool_full > 0);
    assert!(metrics.spool_bytes <= MIN_SPOOL_MAX_BYTES);
    assert!(!auditor.accepting(), "a record made now would be dropped");
    assert!(auditor.denies_requests(), "a strict sender denies requests");
    let text = metrics.render_prometheus("palisade");
    let line = format!(
        "palisade_audit_records_dropped_total{{reason=\"spool_full\"}} {}\n",
        metrics.dropped_spool_full
    );
    assert!(text.contains(&line), "{text}");
    stop(auditor, task).await;
}

/// The test's runtime has one thread and the test never yields: the delivery
/// task cannot run, so the queue fills.
#[tokio::test(flavor = "current_thread")]
async fn a_full_queue_drops_without_waiting_and_stops_accepting() {
    let ca = Ca::new();
    let dir = tempfile::tempdir().unwrap();
    let mut params = params(&ca, FRONTEND, nowhere(), dir.path());
    params.queue_capacity = 4;
    let (auditor, _task) = start(params);
    record_all(&auditor, 0..10);
    let metrics = auditor.metrics();
    assert_eq!(metrics.queued, 4);
    assert_eq!(metrics.dropped_queue_full, 6);
    assert!(!auditor.accepting());
    assert!(!auditor.denies_requests(), "not strict: requests go on");
    assert_eq!(DEFAULT_QUEUE_CAPACITY, 65_536);
}

/// Strict mode reserves the record's place before it forwards a request: other
/// records filling the queue meanwhile cannot take it, and a place held but
/// unused is given back.
#[tokio::test]
async fn a_reserved_place_is_kept_for_its_record_when_the_queue_fills() {
    let ca = Ca::new();
    let dir = tempfile::tempdir().unwrap();
    let mut params = params(&ca, FRONTEND, nowhere(), dir.path());
    params.queue_capacity = 4;
    params.strict = true;
    let (auditor, _task) = start(params);
    let held = auditor.reserve().expect("an empty queue has room");
    let unused = auditor.reserve().expect("room for a second");
    drop(unused);
    record_all(&auditor, 0..10);
    assert_eq!(auditor.metrics().dropped_queue_full, 7, "three places were free");
    assert!(auditor.reserve().is_none(), "no place left: a strict sidecar refuses");
    assert!(auditor.denies_requests());
    held.record(numbered(99));
    let metrics = auditor.metrics();
    assert_eq!(metrics.queued, 4);
    assert_eq!(metrics.dropped_queue_full, 7, "the held place took its record");
}

#[tokio::test]
async fn an_event_the_service_would_refuse_is_dropped_as_invalid_and_long_text_is_cut() {
    let ca = Ca::new();
    let server = AuditServer::start(&ca, MemorySink::new());
    let dir = tempfile::tempdir().unwrap();
    let (auditor, task) = start(params(&ca, FRONTEND, server.addr, dir.path()));
    let decision = |status, path: &str| {
        Event::Decision(Decision {
            side: Side::Ingress,
            effect: Effect::Deny,
            principal: FRONTEND.into(),
            action: "GET".into(),
            resource: "payments/payments".into(),
            path: path.into(),
            policies: vec![],
            request_id: "r".into(),
            status,
            latency_micros: 1,
        })
    };
    auditor.record(decision(1000, "/"));
    auditor.record(decision(403, &"/a".repeat(10_000)));
    assert_eq!(auditor.metrics().dropped_invalid, 1);
    server.sink.holds(1).await;
    let stored = server.sink.stored();
    let Event::Decision(kept) = &stored[0].1.event else {
        panic!("{stored:?}")
    };
    assert_eq!(kept.path.len(), 8 * 1024);
    stop(auditor, task).await;
}

#[tokio::test]
async fn a_disabled_auditor_discards_counts_and_always_accepts() {
    let auditor = Auditor::disabled();
    record_all(&auditor, 0..3);
    let metrics = auditor.metrics();
    assert_eq!(metrics.discarded, 3);
    assert_eq!(metrics.dropped(), 0);
    assert!(auditor.accepting() && !auditor.denies_requests());
}
