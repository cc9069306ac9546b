//! What every store backend must do. Each function is one rule, run by
//! `audit/tests/store.rs` against SQLite and against PostgreSQL.

use palisade_audit::chain::{hash_of, Verification};
use palisade_audit::query::{Filter, KindFilter};
use palisade_audit::record::{Effect, Event, Side, StoredRecord, GENESIS};
use palisade_audit::store::{Appended, Store, StoreError};

use crate::harness::{record, records, Db, T0};

const WEB: &str = "spiffe://prod.example/ns/shop/sa/web";
const CA: &str = "spiffe://prod.example/palisade/ca";
const RECEIVED: i64 = T0 + 3_600_000_000;

/// Every record of a store, in seq order, paging 7 at a time.
async fn all(store: &Store) -> Vec<StoredRecord> {
    let mut out: Vec<StoredRecord> = Vec::new();
    for _ in 0..10_000 {
        let after = out.last().map_or(0, |r| r.seq);
        let page = store.page(&Filter::default(), after, 7).await.unwrap();
        if page.is_empty() {
            return out;
        }
        out.extend(page);
    }
    panic!("paging did not end");
}

pub async fn appended_records_read_back_equal(db: Db) {
    let store = db.open().await;
    let batch = records("web", 16);
    let appended = store.append(WEB, RECEIVED, &batch).await.unwrap();
    assert_eq!(
        appended,
        Appended {
            stored: 16,
            duplicates: 0,
            last_seq: 16
        }
    );
    let stored = all(&store).await;
    assert_eq!(stored.iter().map(|s| s.record.clone()).collect::<Vec<_>>(), batch);
    assert!(stored.iter().all(|s| s.sender == WEB && s.received_micros == RECEIVED));
    assert_eq!(stored[0].prev_hash, GENESIS);
    for (i, s) in stored.iter().enumerate() {
        let prev = if i == 0 { GENESIS } else { stored[i - 1].hash };
        assert_eq!(s.prev_hash, prev);
        assert_eq!(s.hash, hash_of(&prev, s.seq, WEB, RECEIVED, &s.record));
    }
}

pub async fn seq_counts_from_one_without_gaps_across_batches_and_senders(db: Db) {
    let store = db.open().await;
    store.append(WEB, RECEIVED, &records("a", 5)).await.unwrap();
    store.append(CA, RECEIVED, &records("b", 3)).await.unwrap();
    let last = store.append(WEB, RECEIVED, &records("c", 4)).await.unwrap();
    assert_eq!(last.last_seq, 12);
    let seqs: Vec<u64> = all(&store).await.iter().map(|s| s.seq).collect();
    assert_eq!(seqs, (1..=12).collect::<Vec<_>>());
    assert_eq!(store.count().await.unwrap(), 12);
}

pub async fn a_replayed_batch_is_stored_once_and_takes_no_seq(db: Db) {
    let store = db.open().await;
    let batch = records("web", 10);
    store.append(WEB, RECEIVED, &batch[..6]).await.unwrap();
    // The answer to the first send was lost: the sender sends everything again.
    let replay = store.append(WEB, RECEIVED + 1, &batch).await.unwrap();
    assert_eq!(
        replay,
        Appended {
            stored: 4,
            duplicates: 6,
            last_seq: 10
        }
    );
    let again = store.append(WEB, RECEIVED + 2, &batch).await.unwrap();
    assert_eq!(
        again,
        Appended {
            stored: 0,
            duplicates: 10,
            last_seq: 10
        }
    );
    assert_eq!(store.count().await.unwrap(), 10);
    let head = store.head().await.unwrap().unwrap();
    assert_eq!((head.seq, head.record_id.as_str()), (10, "web-9"));
    assert!(store.verify().await.unwrap().is_intact());
}

pub async fn a_repeat_within_one_batch_is_stored_once(db: Db) {
    let store = db.open().await;
    let mut batch = records("web", 3);
    batch.push(batch[1].clone());
    let appended = store.append(WEB, RECEIVED, &batch).await.unwrap();
    assert_eq!(
        appended,
        Appended {
            stored: 3,
            duplicates: 1,
            last_seq: 3
        }
    );
    assert!(store.verify().await.unwrap().is_intact());
}

pub async fn the_same_id_from_two_senders_is_two_records(db: Db) {
    let store = db.open().await;
    store.append(WEB, RECEIVED, &records("x", 2)).await.unwrap();
    let other = store.append(CA, RECEIVED, &records("x", 2)).await.unwrap();
    assert_eq!(
        other,
        Appended {
            stored: 2,
            duplicates: 0,
            last_seq: 4
        }
    );
}

pub async fn an_empty_store_verifies_with_no_head(db: Db) {
    let store = db.open().await;
    assert_eq!(
        store.verify().await.unwrap(),
        Verification {
            records: 0,
            broken: None
        }
    );
    assert_eq!(store.head().await.unwrap(), None);
    assert_eq!(store.count().await.unwrap(), 0);
    let empty = store.append(WEB, RECEIVED, &[]).await.unwrap();
    assert_eq!(
        empty,
        Appended {
            stored: 0,
            duplicates: 0,
            last_seq: 0
        }
    );
}

pub async fn the_chain_verifies_and_verify_with_visits_every_record(db: Db) {
    let store = db.open().await;
    for batch in 0..5 {
        store
            .append(WEB, RECEIVED, &records(&format!("b{batch}"), 9))
            .await
            .unwrap();
    }
    let mut seen = Vec::new();
    let verification = store.verify_with(|r| seen.push(r.seq)).await.unwrap();
    assert_eq!(
        verification,
        Verification {
            records: 45,
            broken: None
        }
    );
    assert_eq!(seen, (1..=45).collect::<Vec<_>>());
}

pub async fn a_reopened_store_continues_the_chain(db: Db) {
    {
        let store = db.open().await;
        store.append(WEB, RECEIVED, &records("before", 5)).await.unwrap();
    }
    let store = db.open().await;
    let appended = store.append(WEB, RECEIVED, &records("after", 5)).await.unwrap();
    assert_eq!(appended.last_seq, 10);
    // A replay across the restart is still a duplicate.
    let replay = store.append(WEB, RECEIVED, &records("before", 5)).await.unwrap();
    assert_eq!(replay.duplicates, 5);
    assert_eq!(
        store.verify().await.unwrap(),
        Verification {
            records: 10,
            broken: None
        }
    );
}

/// One way to tamper with a store of six records (seq 1 an allowed decision, 2 a
/// denied one, 3 a dry-run denial, 4 a BlackHole, 5 a Passthrough, 6 an
/// allowlisted call), and the first broken link `verify` must name.
struct Tamper {
    what: &'static str,
    sql: fn(&Db, &[StoredRecord]) -> String,
    seq: u64,
    record_id: &'static str,
    problem: &'static str,
}

const TAMPERING: &[Tamper] = &[
    Tamper {
        what: "edit a decision's effect from deny to allow",
        sql: |_, _| "UPDATE audit_records SET effect = 'allow' WHERE seq = 2".to_owned(),
        seq: 2,
        record_id: "web-1",
        problem: "its hash does not match its contents: the record was edited",
    },
    Tamper {
        what: "edit a path",
        sql: |_, _| "UPDATE audit_records SET path = '/admin' WHERE seq = 1".to_owned(),
        seq: 1,
        record_id: "web-0",
        problem: "its hash does not match its contents: the record was edited",
    },
    Tamper {
        what: "edit the time a record arrived",
        sql: |_, _| "UPDATE audit_records SET received_us = received_us - 1 WHERE seq = 4".to_owned(),
        seq: 4,
        record_id: "web-3",
        problem: "its hash does not match its contents: the record was edited",
    },
    Tamper {
        what: "give a decision a column of another kind",
        sql: |_, _| "UPDATE audit_records SET host = 'evil.example' WHERE seq = 2".to_owned(),
        seq: 2,
        record_id: "web-1",
        problem: "column `host` is set, but a record of this kind has no such field",
    },
    Tamper {
        what: "write an impossible effect",
        sql: |_, _| "UPDATE audit_records SET effect = 'maybe' WHERE seq = 3".to_owned(),
        seq: 3,
        record_id: "web-2",
        problem: "column `effect` holds `maybe`, not one of allow, deny, dry_run_deny",
    },
    Tamper {
        what: "delete a middle row",
        sql: |_, _| "DELETE FROM audit_records WHERE seq = 3".to_owned(),
        seq: 4,
        record_id: "web-3",
        problem: "sequence jumps from 2 to 4: record 3 was deleted",
    },
    Tamper {
        what: "delete the first row",
        sql: |_, _| "DELETE FROM audit_records WHERE seq = 1".to_owned(),
        seq: 2,
        record_id: "web-1",
        problem: "the chain starts at record 2 instead of 1: record 1 was deleted",
    },
    Tamper {
        what: "delete the last row",
        sql: |_, _| "DELETE FROM audit_records WHERE seq = 6".to_owned(),
        seq: 6,
        record_id: "web-5",
        problem: "the chain ends at record 5 but the store's head is record 6: record 6 was deleted",
    },
    Tamper {
        what: "insert a forged row in the middle, hashed from the wrong prev",
        sql: |db, stored| {
            let forged = forged_row(db, stored, 4, &[0xAB; 32]);
            format!(
                "UPDATE audit_records SET seq = seq + 1000 WHERE seq >= 4;\n\
                 UPDATE audit_records SET seq = seq - 999 WHERE seq >= 1000;\n{forged}"
            )
        },
        seq: 4,
        record_id: "forged",
        problem: "its prev_hash is not the hash of record 3: a record before it was deleted, inserted",
    },
    Tamper {
        what: "append a well-formed row behind the service's back",
        sql: |db, stored| forged_row(db, stored, 7, &stored[5].hash),
        seq: 7,
        record_id: "",
        problem: "the store's head is record 6 but records up to 7 exist: records after 6 were inserted outside",
    },
    Tamper {
        what: "swap two rows' seq",
        sql: |_, _| {
            "UPDATE audit_records SET seq = 1000 WHERE seq = 2;\n\
             UPDATE audit_records SET seq = 2 WHERE seq = 5;\n\
             UPDATE audit_records SET seq = 5 WHERE seq = 1000;"
                .to_owned()
        },
        seq: 2,
        record_id: "web-4",
        problem: "neither its hash nor its prev_hash fit (its prev_hash is not the hash of record 1): the record \
                  was moved here from elsewhere in the chain, or replaced",
    },
    Tamper {
        what: "edit a record and recompute its hash",
        sql: |db, stored| {
            let mut edited = stored[2].record.clone();
            if let Event::Decision(d) = &mut edited.event {
                d.effect = Effect::Allow;
            }
            let hash = hash_of(&stored[1].hash, 3, WEB, RECEIVED, &edited);
            format!(
                "UPDATE audit_records SET effect = 'allow', hash = {} WHERE seq = 3",
                db.blob(&hash)
            )
        },
        seq: 4,
        record_id: "web-3",
        problem: "its prev_hash is not the hash of record 3",
    },
    Tamper {
        what: "delete the head row",
        sql: |_, _| "DELETE FROM audit_head".to_owned(),
        seq: 1,
        record_id: "",
        problem: "the store's head row is missing although records exist",
    },
];

/// An INSERT of a decision at `seq`, chained to `prev`, with a hash that matches
/// its contents.
fn forged_row(db: &Db, stored: &[StoredRecord], seq: u64, prev: &[u8; 32]) -> String {
    let mut forged = stored[0].record.clone();
    forged.id = "forged".to_owned();
    if let Event::Decision(d) = &mut forged.event {
        d.principal = WEB.to_owned();
    }
    let hash = hash_of(prev, seq, WEB, RECEIVED, &forged);
    format!(
        "INSERT INTO audit_records (seq, sender, record_id, received_us, time_us, kind, side, effect, principal, \
         action, resource, path, policies, request_id, status, latency_us, prev_hash, hash) VALUES \
         ({seq}, '{WEB}', 'forged', {RECEIVED}, {}, 'decision', 'egress', 'allow', '{WEB}', 'POST', \
         'payments/payments', '/v1/charge', '[\"shop-web-pays\",\"line\\nbreak, \\\"quoted\\\"\"]', 'req-0', 200, \
         1250, {}, {});",
        forged.time_micros,
        db.blob(prev),
        db.blob(&hash)
    )
}

pub async fn tampering_is_found_and_the_first_broken_record_named(make_db: impl AsyncFn() -> Option<Db>) {
    for case in TAMPERING {
        let Some(db) = make_db().await else { return };
        let store = db.open().await;
        store.append(WEB, RECEIVED, &records("web", 6)).await.unwrap();
        let stored = all(&store).await;
        assert!(
            store.verify().await.unwrap().is_intact(),
            "{}: intact before",
            case.what
        );
        db.exec(&(case.sql)(&db, &stored)).await;
        let broken = store
            .verify()
            .await
            .unwrap()
            .broken
            .unwrap_or_else(|| panic!("{}: verify found nothing", case.what));
        assert_eq!(broken.seq, case.seq, "{}: {broken:?}", case.what);
        assert_eq!(broken.record_id, case.record_id, "{}: {broken:?}", case.what);
        if !case.record_id.is_empty() {
            assert_eq!(broken.sender, WEB, "{}", case.what);
        }
        assert!(
            broken.problem.starts_with(case.problem),
            "{}: {}",
            case.what,
            broken.problem
        );
    }
}

pub async fn an_unreadable_row_fails_a_page_with_its_name(db: Db) {
    let store = db.open().await;
    store.append(WEB, RECEIVED, &records("web", 4)).await.unwrap();
    db.exec("UPDATE audit_records SET side = 'sideways' WHERE seq = 2")
        .await;
    let err = store.page(&Filter::default(), 0, 10).await.unwrap_err();
    assert!(matches!(err, StoreError::Malformed { seq: 2, .. }), "{err}");
    assert!(
        err.to_string().starts_with(
            "stored record 2 (id `web-1` from `spiffe://prod.example/ns/shop/sa/web`) \
         cannot be read: column `side` holds `sideways`, not one of egress, ingress"
        ),
        "{err}"
    );
}

pub async fn appending_after_the_head_row_was_deleted_is_refused(db: Db) {
    let store = db.open().await;
    store.append(WEB, RECEIVED, &records("web", 2)).await.unwrap();
    db.exec("DELETE FROM audit_head").await;
    let err = store.append(WEB, RECEIVED, &records("more", 2)).await.unwrap_err();
    assert!(matches!(err, StoreError::HeadMissing { .. }), "{err}");
}

pub async fn every_filter_narrows_like_filter_matches(db: Db) {
    let store = db.open().await;
    store.append(WEB, RECEIVED, &records("web", 24)).await.unwrap();
    store
        .append(CA, RECEIVED, &[record("ca", 30), record("ca", 31)])
        .await
        .unwrap();
    let everything = all(&store).await;
    let text = |s: &str| Some(s.to_owned());
    let filters = [
        Filter {
            since_micros: Some(T0 + 10_000_000),
            ..Filter::default()
        },
        Filter {
            until_micros: Some(T0 + 10_000_000),
            ..Filter::default()
        },
        Filter {
            since_micros: Some(T0 + 5_000_000),
            until_micros: Some(T0 + 9_000_000),
            ..Filter::default()
        },
        Filter {
            effect: Some(Effect::Deny),
            ..Filter::default()
        },
        Filter {
            effect: Some(Effect::DryRunDeny),
            ..Filter::default()
        },
        Filter {
            side: Some(Side::Ingress),
            ..Filter::default()
        },
        Filter {
            source: text("spiffe://prod.example/ns/shop/sa/batch"),
            ..Filter::default()
        },
        Filter {
            source: text(CA),
            ..Filter::default()
        },
        Filter {
            dest: text("payments/payments"),
            ..Filter::default()
        },
        Filter {
            dest: text("api.stripe.com"),
            ..Filter::default()
        },
        Filter {
            dest: text("evil.example:443"),
            ..Filter::default()
        },
        Filter {
            kind: Some(KindFilter::Decision),
            ..Filter::default()
        },
        Filter {
            kind: Some(KindFilter::External),
            ..Filter::default()
        },
        Filter {
            kind: Some(KindFilter::BlackHole),
            ..Filter::default()
        },
        Filter {
            kind: Some(KindFilter::Passthrough),
            ..Filter::default()
        },
        Filter {
            kind: Some(KindFilter::Allowlisted),
            ..Filter::default()
        },
        Filter {
            kind: Some(KindFilter::Identity),
            ..Filter::default()
        },
        Filter {
            kind: Some(KindFilter::Policy),
            ..Filter::default()
        },
        Filter {
            effect: Some(Effect::Allow),
            side: Some(Side::Egress),
            since_micros: Some(T0 + 4_000_000),
            source: text(WEB),
            ..Filter::default()
        },
    ];
    for filter in &filters {
        let expected: Vec<u64> = everything.iter().filter(|r| filter.matches(r)).map(|r| r.seq).collect();
        assert!(
            !expected.is_empty() && expected.len() < everything.len(),
            "{filter:?} does not narrow"
        );
        // Paged three at a time, so keyset paging with a filter is covered too.
        let mut got = Vec::new();
        for _ in 0..100 {
            let page = store.page(filter, got.last().copied().unwrap_or(0), 3).await.unwrap();
            if page.is_empty() {
                break;
            }
            assert!(page.iter().all(|r| filter.matches(r)), "{filter:?}");
            got.extend(page.iter().map(|r| r.seq));
        }
        assert_eq!(got, expected, "{filter:?}");
    }
}

pub async fn two_stores_appending_concurrently_keep_one_chain(db: Db) {
    const TASKS: usize = 4;
    const BATCHES: usize = 50;
    const BATCH: usize = 20;
    let stores = [db.open().await, db.open().await];
    let mut tasks = tokio::task::JoinSet::new();
    for (s, store) in stores.iter().enumerate() {
        for t in 0..TASKS {
            let store = store.clone();
            tasks.spawn(async move {
                let sender = format!("spiffe://prod.example/ns/shop/sa/replica{s}-task{t}");
                for b in 0..BATCHES {
                    let batch = records(&format!("b{b}"), BATCH);
                    let appended = store.append(&sender, RECEIVED, &batch).await.unwrap();
                    assert_eq!(appended.stored as usize, BATCH);
                }
            });
        }
    }
    while let Some(done) = tasks.join_next().await {
        done.unwrap();
    }
    let total = (2 * TASKS * BATCHES * BATCH) as u64;
    assert_eq!(stores[0].count().await.unwrap(), total);
    assert_eq!(
        stores[1].verify().await.unwrap(),
        Verification {
            records: total,
            broken: None
        }
    );
    let head = stores[0].head().await.unwrap().unwrap();
    assert_eq!(head.seq, total);
    let everything = all(&stores[0]).await;
    assert_eq!(
        everything.iter().map(|r| r.seq).collect::<Vec<_>>(),
        (1..=total).collect::<Vec<_>>()
    );
    // Each sender's records kept their order within the one total order.
    let mut last = std::collections::HashMap::new();
    for r in &everything {
        let (batch, i) = r.record.id.trim_start_matches('b').split_once('-').unwrap();
        let position: (usize, usize) = (batch.parse().unwrap(), i.parse().unwrap());
        if let Some(before) = last.insert(r.sender.clone(), position) {
            assert!(before < position, "{} of {} stored out of order", r.record.id, r.sender);
        }
    }
}
