//! Who may write, and as whom: only a client SVID of the trust bundle, not
//! revoked; the sender is the certificate's SPIFFE ID; a batch is checked whole
//! before anything is stored.

use std::sync::Arc;

use tonic::transport::Endpoint;
use tonic::Code;

use palisade_audit::ingest::{MAX_BATCH_RECORDS, RECORD_INDEX_METADATA};
use palisade_audit::proto::v1 as pb;
use palisade_audit::proto::v1::audit_log_client::AuditLogClient;
use palisade_audit::record::Record;
use palisade_ca::client::{svid_channel, SvidPeer};
use palisade_ca::tls::SvidResolver;
use palisade_ca::verify::Trust;

use crate::support::*;

/// Sends `records` to `server` as whoever `resolver` names; the error of the
/// connection or of the call.
async fn append_raw(
    server: &AuditServer,
    trust: Arc<Trust>,
    resolver: Arc<SvidResolver>,
    records: Vec<pb::Record>,
) -> Result<pb::AppendResponse, String> {
    let endpoint = Endpoint::from_shared(format!("http://{}", server.addr)).unwrap();
    let peer = SvidPeer {
        addr: server.addr.to_string(),
        trust,
        resolver,
        expected: audit_id(),
    };
    let channel = svid_channel(endpoint, peer).await.map_err(|e| e.to_string())?;
    let mut client = AuditLogClient::new(channel);
    let answer = client.append(pb::AppendRequest { records }).await;
    answer.map(|r| r.into_inner()).map_err(|status| format!("{status:?}"))
}

fn wire(n: u64) -> pb::Record {
    let record = Record {
        id: format!("raw-{n}"),
        time_micros: 1,
        event: numbered(n),
    };
    pb::Record::from(&record)
}

#[tokio::test]
async fn each_record_is_stamped_with_the_sender_its_certificate_names() {
    let ca = Ca::new();
    let server = AuditServer::start(&ca, MemorySink::new());
    let dir = tempfile::tempdir().unwrap();
    let (frontend, frontend_task) = start(params(&ca, FRONTEND, server.addr, &dir.path().join("f")));
    let (payments, payments_task) = start(params(&ca, PAYMENTS, server.addr, &dir.path().join("p")));
    record_all(&frontend, 0..3);
    record_all(&payments, 100..102);
    server.sink.holds(5).await;
    assert_eq!(server.sink.versions_of(FRONTEND), [0, 1, 2]);
    assert_eq!(server.sink.versions_of(PAYMENTS), [100, 101]);
    stop(frontend, frontend_task).await;
    stop(payments, payments_task).await;
}

#[tokio::test]
async fn a_client_with_a_foreign_certificate_or_none_is_refused_and_nothing_is_stored() {
    let ca = Ca::new();
    let foreign = Ca::new();
    let server = AuditServer::start(&ca, MemorySink::new());
    let refused = append_raw(&server, ca.trust(), foreign.svid(FRONTEND), vec![wire(1)]).await;
    assert!(refused.is_err(), "a certificate of another CA: {refused:?}");
    let refused = append_raw(&server, ca.trust(), SvidResolver::empty(), vec![wire(2)]).await;
    assert!(refused.is_err(), "no certificate: {refused:?}");
    let accepted = append_raw(&server, ca.trust(), ca.svid(FRONTEND), vec![]).await;
    assert_eq!(
        accepted,
        Ok(pb::AppendResponse::default()),
        "the same server takes a mesh identity"
    );
    assert_eq!(server.sink.len(), 0);
}

#[tokio::test]
async fn a_revoked_client_is_refused() {
    let ca = Ca::new();
    let server = AuditServer::start_with(&ca, audit_id().as_str(), ca.trust_revoking(FRONTEND), MemorySink::new());
    let refused = append_raw(&server, ca.trust(), ca.svid(FRONTEND), vec![wire(1)]).await;
    assert!(refused.is_err(), "{refused:?}");
    let accepted = append_raw(&server, ca.trust(), ca.svid(PAYMENTS), vec![wire(2)]).await;
    assert_eq!(accepted.map(|a| a.stored), Ok(1));
    assert_eq!(server.sink.versions_of(PAYMENTS), [2]);
    assert!(server.sink.versions_of(FRONTEND).is_empty());
}

#[tokio::test]
async fn a_sender_refuses_a_server_that_is_not_the_audit_service() {
    let ca = Ca::new();
    let impostor = AuditServer::start_with(&ca, IMPOSTOR, ca.trust(), MemorySink::new());
    let refused = append_raw(&impostor, ca.trust(), ca.svid(FRONTEND), vec![wire(1)]).await;
    assert!(refused.is_err(), "{refused:?}");

    let dir = tempfile::tempdir().unwrap();
    let (auditor, task) = start(params(&ca, FRONTEND, impostor.addr, dir.path()));
    record_all(&auditor, 0..5);
    let metrics = metrics_when(&auditor, |m| m.spooled == 5).await;
    assert!(!metrics.connected);
    assert_eq!(metrics.sent, 0);
    assert_eq!(impostor.sink.len(), 0, "nothing reached the impostor");
    stop(auditor, task).await;
}

#[tokio::test]
async fn one_invalid_record_refuses_the_batch_naming_its_index_and_field_and_nothing_is_stored() {
    let ca = Ca::new();
    let server = AuditServer::start(&ca, MemorySink::new());
    let mut bad = wire(2);
    bad.event = Some(pb::record::Event::Decision(pb::Decision {
        side: pb::Side::Egress.into(),
        effect: pb::Effect::Allow.into(),
        status: 1000,
        ..Default::default()
    }));
    let endpoint = Endpoint::from_shared(format!("http://{}", server.addr)).unwrap();
    let peer = SvidPeer {
        addr: server.addr.to_string(),
        trust: ca.trust(),
        resolver: ca.svid(FRONTEND),
        expected: audit_id(),
    };
    let mut client = AuditLogClient::new(svid_channel(endpoint, peer).await.unwrap());
    let status = client
        .append(pb::AppendRequest {
            records: vec![wire(0), wire(1), bad],
        })
        .await
        .unwrap_err();
    assert_eq!(status.code(), Code::InvalidArgument);
    assert!(
        status.message().contains("record 2 (id `raw-2`)"),
        "{}",
        status.message()
    );
    assert!(
        status.message().contains("`decision.status` is 1000"),
        "{}",
        status.message()
    );
    let index = status.metadata().get(RECORD_INDEX_METADATA).unwrap();
    assert_eq!(index.to_str().unwrap(), "2");
    assert_eq!(
        server.sink.len(),
        0,
        "the valid records before it were not stored either"
    );

    let too_many = (0..=MAX_BATCH_RECORDS as u64).map(wire).collect();
    let status = client
        .append(pb::AppendRequest { records: too_many })
        .await
        .unwrap_err();
    assert_eq!(status.code(), Code::InvalidArgument);
    assert!(status.message().contains("at most 10000"), "{}", status.message());
    assert_eq!(server.sink.len(), 0);
}

#[tokio::test]
async fn a_batch_resent_after_a_lost_answer_is_stored_once() {
    let ca = Ca::new();
    let server = AuditServer::start(&ca, MemorySink::new());
    server.sink.fail_after_storing(1);
    let dir = tempfile::tempdir().unwrap();
    let (auditor, task) = start(params(&ca, FRONTEND, server.addr, dir.path()));
    record_all(&auditor, 0..100);
    let metrics = metrics_when(&auditor, |m| m.sent == 100).await;
    assert_eq!(server.sink.versions_of(FRONTEND), upto(100));
    assert!(server.sink.duplicates() > 0, "the first batch was sent again");
    assert_eq!(metrics.dropped(), 0);
    stop(auditor, task).await;
}

/// A sidecar's SVID speaks only for that sidecar: it cannot record CA events or
/// policy changes, external events or egress decisions of another workload, nor
/// date a record in the future. Each is refused with its index; nothing stored.
#[tokio::test]
async fn a_sender_cannot_record_what_is_not_its_own_to_say() {
    use palisade_audit::record::{Event, External, ExternalKind, Identity, IdentityKind, PolicyChange, PolicyOutcome};
    let ca = Ca::new();
    let sink = MemorySink::new();
    let server = AuditServer::start(&ca, sink.clone());
    let endpoint = Endpoint::from_shared(format!("http://{}", server.addr)).unwrap();
    let peer = SvidPeer {
        addr: server.addr.to_string(),
        trust: ca.trust(),
        resolver: ca.svid(FRONTEND),
        expected: audit_id(),
    };
    let mut client = AuditLogClient::new(svid_channel(endpoint, peer).await.unwrap());
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_micros() as i64;
    let other = "spiffe://test.example/ns/pay/sa/payments";
    let external = |workload: &str| {
        Event::External(External {
            kind: ExternalKind::BlackHole,
            workload: workload.into(),
            host: "evil.example".into(),
            sni: String::new(),
            port: 443,
            protocol: "tls".into(),
            request_id: "r".into(),
            reason: "x".into(),
        })
    };
    let mut egress = numbered(1);
    if let Event::Decision(d) = &mut egress {
        d.side = palisade_audit::record::Side::Egress;
        d.principal = other.into();
    }
    let cases: Vec<(Event, i64, &str)> = vec![
        (
            Event::Identity(Identity {
                kind: IdentityKind::Revoked,
                spiffe_id: other.into(),
                serial: String::new(),
                reason: "forged".into(),
                not_after_unix: 0,
            }),
            now,
            "only the CA may record identity events",
        ),
        (
            Event::Policy(PolicyChange {
                outcome: PolicyOutcome::Accepted,
                version: 9,
                digest: "sha256:00".into(),
                detail: String::new(),
            }),
            now,
            "only the control plane may record policy changes",
        ),
        (external(other), now, "names another workload"),
        (egress, now, "names another caller"),
        (numbered(2), now + 3_600_000_000, "ahead of the audit service's clock"),
    ];
    for (event, time_micros, expected) in cases {
        let record = palisade_audit::record::Record {
            id: "forged-1".into(),
            time_micros,
            event,
        };
        let status = client
            .append(pb::AppendRequest {
                records: vec![wire(0), (&record).into()],
            })
            .await
            .unwrap_err();
        assert_eq!(status.code(), Code::InvalidArgument, "{}", status.message());
        assert!(status.message().contains("record 1"), "{}", status.message());
        assert!(status.message().contains(expected), "{}", status.message());
    }
    assert_eq!(sink.len(), 0, "nothing of any refused batch was stored");
    // Its own external event is fine.
    let own = palisade_audit::record::Record {
        id: "own-1".into(),
        time_micros: now,
        event: external(FRONTEND),
    };
    client
        .append(pb::AppendRequest {
            records: vec![(&own).into()],
        })
        .await
        .unwrap();
    assert_eq!(sink.len(), 1);
}
