//! The spool outlives its sender: a restarted sender replays it first, and a
//! spool torn by a crash is replayed up to the tear.

use std::path::Path;

use crate::support::*;

/// Records `0..count` while the service is away, then stops the sender: the
/// records are left in its spool, whose path is returned.
async fn spooled_by_a_sender_that_stopped(ca: &Ca, dir: &Path, count: u64) -> std::path::PathBuf {
    let params = params(ca, FRONTEND, nowhere(), dir);
    let path = params.spool_path.clone();
    let (auditor, task) = start(params);
    record_all(&auditor, 0..count);
    metrics_when(&auditor, |m| m.spooled == count).await;
    stop(auditor, task).await;
    path
}

#[tokio::test]
async fn a_restarted_sender_replays_its_spool_before_anything_newer() {
    let ca = Ca::new();
    let dir = tempfile::tempdir().unwrap();
    spooled_by_a_sender_that_stopped(&ca, dir.path(), 50).await;

    let server = AuditServer::start(&ca, MemorySink::new());
    let (auditor, task) = start(params(&ca, FRONTEND, server.addr, dir.path()));
    record_all(&auditor, 50..60);
    metrics_when(&auditor, |m| m.sent == 60).await;
    assert_eq!(server.sink.versions_of(FRONTEND), upto(60));
    stop(auditor, task).await;
}

#[tokio::test]
async fn a_spool_with_a_torn_tail_is_replayed_up_to_the_tear() {
    let ca = Ca::new();
    let dir = tempfile::tempdir().unwrap();
    let path = spooled_by_a_sender_that_stopped(&ca, dir.path(), 20).await;
    let mut bytes = std::fs::read(&path).unwrap();
    bytes.extend_from_slice(&[200, 0, 0, 0, 1, 2, 3, 4, 5]);
    std::fs::write(&path, bytes).unwrap();

    let server = AuditServer::start(&ca, MemorySink::new());
    let (auditor, task) = start(params(&ca, FRONTEND, server.addr, dir.path()));
    metrics_when(&auditor, |m| m.sent == 20).await;
    assert_eq!(server.sink.versions_of(FRONTEND), upto(20));
    stop(auditor, task).await;
}

#[tokio::test]
async fn a_garbled_last_record_is_cut_and_the_ones_before_it_are_replayed() {
    let ca = Ca::new();
    let dir = tempfile::tempdir().unwrap();
    let path = spooled_by_a_sender_that_stopped(&ca, dir.path(), 20).await;
    let mut bytes = std::fs::read(&path).unwrap();
    *bytes.last_mut().unwrap() ^= 0xff;
    std::fs::write(&path, bytes).unwrap();

    let server = AuditServer::start(&ca, MemorySink::new());
    let (auditor, task) = start(params(&ca, FRONTEND, server.addr, dir.path()));
    metrics_when(&auditor, |m| m.sent == 19).await;
    assert_eq!(server.sink.versions_of(FRONTEND), upto(19));
    stop(auditor, task).await;
}
