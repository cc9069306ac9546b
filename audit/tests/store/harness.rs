//! A fresh database per test: a SQLite file in a temporary directory, or a
//! PostgreSQL schema `t_<random>` (dropped when the test ends), plus raw SQL access
//! for tampering the way an attacker with database access would.

use std::fmt::Write;

use palisade_audit::record::{
    Decision, Effect, Event, External, ExternalKind, Identity, IdentityKind, PolicyChange, PolicyOutcome, Record, Side,
};
use palisade_audit::store::Store;

/// The message a PostgreSQL test prints when it cannot run.
pub const SKIPPED: &str = "skipped: PostgreSQL not available (set PALISADE_TEST_POSTGRES)";

/// One test's database.
pub struct Db {
    backend: Backend,
    url: String,
}

enum Backend {
    Sqlite {
        _dir: tempfile::TempDir,
        path: std::path::PathBuf,
    },
    Postgres {
        admin: tokio_postgres::Client,
        base_url: String,
        schema: String,
    },
}

impl Db {
    /// A new SQLite file.
    pub async fn sqlite() -> Self {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("audit.db");
        let url = format!("sqlite://{}", path.display());
        Self {
            backend: Backend::Sqlite { _dir: dir, path },
            url,
        }
    }

    /// A new schema in the PostgreSQL of `PALISADE_TEST_POSTGRES`; `None` (after
    /// printing [`SKIPPED`]) when unset or unreachable.
    pub async fn postgres() -> Option<Self> {
        let Ok(base_url) = std::env::var("PALISADE_TEST_POSTGRES") else {
            println!("{SKIPPED}");
            return None;
        };
        let Ok((admin, connection)) = tokio_postgres::connect(&base_url, tokio_postgres::NoTls).await else {
            println!("{SKIPPED}");
            return None;
        };
        tokio::spawn(connection);
        let schema = format!("t_{}", random_hex());
        admin
            .batch_execute(&format!("CREATE SCHEMA {schema}; SET search_path TO {schema}"))
            .await
            .unwrap();
        let separator = if base_url.contains('?') { '&' } else { '?' };
        let url = format!("{base_url}{separator}options=-csearch_path%3D{schema}");
        Some(Self {
            backend: Backend::Postgres {
                admin,
                base_url,
                schema,
            },
            url,
        })
    }

    /// A new [`Store`] on this database (another replica, or a reopen).
    pub async fn open(&self) -> Store {
        Store::open(&self.url).await.unwrap()
    }

    /// Runs SQL directly on the database, behind the store's back.
    pub async fn exec(&self, sql: &str) {
        match &self.backend {
            Backend::Sqlite { path, .. } => rusqlite::Connection::open(path).unwrap().execute_batch(sql).unwrap(),
            Backend::Postgres { admin, .. } => admin.batch_execute(sql).await.unwrap(),
        }
    }

    /// A literal for bytes, in this database's SQL.
    pub fn blob(&self, bytes: &[u8]) -> String {
        let hex = bytes.iter().fold(String::new(), |mut s, b| {
            let _ = write!(s, "{b:02x}");
            s
        });
        match self.backend {
            Backend::Sqlite { .. } => format!("X'{hex}'"),
            Backend::Postgres { .. } => format!("'\\x{hex}'::bytea"),
        }
    }
}

impl Drop for Db {
    fn drop(&mut self) {
        let Backend::Postgres { base_url, schema, .. } = &self.backend else {
            return;
        };
        let (base_url, schema) = (base_url.clone(), schema.clone());
        // Drop runs inside the test's runtime, which cannot block: use a thread.
        let cleanup = std::thread::spawn(move || {
            let runtime = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .unwrap();
            runtime.block_on(async {
                if let Ok((client, connection)) = tokio_postgres::connect(&base_url, tokio_postgres::NoTls).await {
                    tokio::spawn(connection);
                    let _ = client.batch_execute(&format!("DROP SCHEMA {schema} CASCADE")).await;
                }
            });
        });
        let _ = cleanup.join();
    }
}

fn random_hex() -> String {
    let mut bytes = [0u8; 8];
    ring::rand::SecureRandom::fill(&ring::rand::SystemRandom::new(), &mut bytes).unwrap();
    bytes.iter().fold(String::new(), |mut s, b| {
        let _ = write!(s, "{b:02x}");
        s
    })
}

/// The start of the test data's clock: 2026-01-01T00:00:00Z.
pub const T0: i64 = 1_767_225_600_000_000;

/// `n` realistic records with ids `{prefix}-{i}`, one second apart, cycling
/// through every kind: an allowed and a denied decision, a dry-run denial, a
/// BlackHole, a Passthrough, an allowlisted call, an identity and a policy event.
pub fn records(prefix: &str, n: usize) -> Vec<Record> {
    (0..n).map(|i| record(prefix, i)).collect()
}

/// The `i`-th record of [`records`].
pub fn record(prefix: &str, i: usize) -> Record {
    let web = "spiffe://prod.example/ns/shop/sa/web";
    let batch = "spiffe://prod.example/ns/shop/sa/batch";
    let principal = if i.is_multiple_of(3) { batch } else { web };
    let decision = |side, effect, resource: &str, path: &str, status| {
        Event::Decision(Decision {
            side,
            effect,
            principal: principal.to_owned(),
            action: "POST".to_owned(),
            resource: resource.to_owned(),
            path: path.to_owned(),
            policies: vec!["shop-web-pays".to_owned(), "line\nbreak, \"quoted\"".to_owned()],
            request_id: format!("req-{i}"),
            status,
            latency_micros: 1_250 + i as u64,
        })
    };
    let external = |kind, host: &str| {
        Event::External(External {
            kind,
            workload: principal.to_owned(),
            host: host.to_owned(),
            sni: host.to_owned(),
            port: 443,
            protocol: "tls".to_owned(),
            request_id: format!("req-{i}"),
            reason: "not in egress.yaml".to_owned(),
        })
    };
    let event = match i % 8 {
        0 => decision(Side::Egress, Effect::Allow, "payments/payments", "/v1/charge", 200),
        1 => decision(Side::Ingress, Effect::Deny, "payments/payments", "/v1/refund", 403),
        2 => decision(
            Side::Egress,
            Effect::DryRunDeny,
            "api.stripe.com:443",
            "/v1/tokens",
            200,
        ),
        3 => external(ExternalKind::BlackHole, "evil.example"),
        4 => external(ExternalKind::Passthrough, "api.stripe.com"),
        5 => external(ExternalKind::Allowlisted, "api.github.com"),
        6 => Event::Identity(Identity {
            kind: IdentityKind::Issued,
            spiffe_id: web.to_owned(),
            serial: format!("{i:032x}"),
            reason: String::new(),
            not_after_unix: 1_767_229_200,
        }),
        _ => Event::Policy(PolicyChange {
            outcome: PolicyOutcome::Accepted,
            version: i as u64,
            digest: "sha256:0f1e2d".to_owned(),
            detail: String::new(),
        }),
    };
    Record {
        id: format!("{prefix}-{i}"),
        time_micros: T0 + 1_000_000 * i as i64,
        event,
    }
}
