//! The audit store's conformance suite: every rule in `store/conformance.rs` runs
//! against SQLite (a fresh file per test) and against PostgreSQL (a fresh schema
//! per test; skipped with a message unless `PALISADE_TEST_POSTGRES` names a
//! reachable server), plus what only one backend or the URL parser has.

#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    clippy::indexing_slicing,
    reason = "tests assert by panicking"
)]

#[path = "store/conformance.rs"]
mod conformance;
#[path = "store/harness.rs"]
mod harness;

use harness::Db;
use palisade_audit::store::{Store, StoreError};

/// Runs each named rule of [`conformance`] on both backends.
macro_rules! on_both_backends {
    ($($rule:ident),+ $(,)?) => {
        mod sqlite {
            $(
                #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
                async fn $rule() {
                    crate::conformance::$rule(crate::harness::Db::sqlite().await).await;
                }
            )+
        }

        mod postgres {
            $(
                #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
                async fn $rule() {
                    let Some(db) = crate::harness::Db::postgres().await else { return };
                    crate::conformance::$rule(db).await;
                }
            )+
        }
    };
}

on_both_backends!(
    appended_records_read_back_equal,
    seq_counts_from_one_without_gaps_across_batches_and_senders,
    a_replayed_batch_is_stored_once_and_takes_no_seq,
    a_repeat_within_one_batch_is_stored_once,
    the_same_id_from_two_senders_is_two_records,
    an_empty_store_verifies_with_no_head,
    the_chain_verifies_and_verify_with_visits_every_record,
    a_reopened_store_continues_the_chain,
    an_unreadable_row_fails_a_page_with_its_name,
    appending_after_the_head_row_was_deleted_is_refused,
    every_filter_narrows_like_filter_matches,
    two_stores_appending_concurrently_keep_one_chain,
);

#[tokio::test]
async fn sqlite_tampering_is_found_and_the_first_broken_record_named() {
    conformance::tampering_is_found_and_the_first_broken_record_named(async || Some(Db::sqlite().await)).await;
}

#[tokio::test]
async fn postgres_tampering_is_found_and_the_first_broken_record_named() {
    conformance::tampering_is_found_and_the_first_broken_record_named(Db::postgres).await;
}

#[tokio::test]
async fn a_sqlite_store_is_one_private_file_in_wal_mode() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("audit.db");
    let store = Store::open(&format!("sqlite://{}", path.display())).await.unwrap();
    store
        .append("spiffe://td/a", 0, &harness::records("a", 2))
        .await
        .unwrap();
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        assert_eq!(std::fs::metadata(&path).unwrap().permissions().mode() & 0o777, 0o600);
    }
    let conn = rusqlite::Connection::open(&path).unwrap();
    let mode: String = conn.query_row("PRAGMA journal_mode", [], |row| row.get(0)).unwrap();
    assert_eq!(mode, "wal");
    assert_eq!(store.location(), path.display().to_string());
}

#[tokio::test]
async fn an_in_memory_store_works_for_tests() {
    let store = Store::open("sqlite::memory:").await.unwrap();
    store
        .append("spiffe://td/a", 0, &harness::records("a", 9))
        .await
        .unwrap();
    assert_eq!(store.verify().await.unwrap().records, 9);
}

#[tokio::test]
async fn a_sqlite_file_in_a_missing_directory_says_what_to_check() {
    let dir = tempfile::tempdir().unwrap();
    let url = format!("sqlite://{}/missing/audit.db", dir.path().display());
    let err = Store::open(&url).await.unwrap_err();
    assert!(matches!(err, StoreError::Open { .. }), "{err}");
    assert!(
        err.to_string()
            .ends_with("check that its directory exists and is writable"),
        "{err}"
    );
}

#[tokio::test]
async fn an_unreachable_postgres_says_where_it_looked() {
    // Port 1 on loopback: nothing listens there.
    let err = Store::open("postgres://audit:secret@127.0.0.1:1/audit")
        .await
        .unwrap_err();
    assert!(matches!(err, StoreError::Connect { .. }), "{err}");
    let message = err.to_string();
    assert!(
        message.starts_with("cannot connect to the audit database at `127.0.0.1:1/audit`"),
        "{message}"
    );
    assert!(!message.contains("secret"), "{message}");
}

#[tokio::test]
async fn an_unknown_url_names_the_accepted_forms() {
    let err = Store::open("audit.db").await.unwrap_err();
    assert!(matches!(err, StoreError::BadUrl { .. }), "{err}");
    assert!(err.to_string().contains("use `sqlite://FILE`"), "{err}");
}
