//! The CA's durable state: join tokens (hashed), revocations with their list
//! version, the issuance log, and the admin credential's hash.
//!
//! One SQLite file in the CA directory, in WAL mode with `synchronous=FULL`: every
//! call that changes state has reached the disk before it returns, so a success the
//! CA reports survives a crash. Several processes may open it (the running CA and
//! offline commands such as `palisade ca crl`).

use std::path::Path;
use std::sync::Mutex;
use std::time::Duration;

use rusqlite::{params, Connection, OptionalExtension};

use crate::revocation::{RevocationEntry, RevocationTarget};
use crate::serial::Serial;
use crate::spiffe_id::SpiffeId;

/// A state operation failed.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum StoreError {
    #[error("cannot open the CA state `{path}`: {source}; check the CA directory and its permissions")]
    Open {
        path: String,
        #[source]
        source: rusqlite::Error,
    },
    #[error("the CA state database failed: {0}")]
    Sql(#[from] rusqlite::Error),
    #[error("the CA state holds an invalid value: {0}")]
    Corrupt(String),
    #[error("the CA state lock was poisoned by an earlier failure; restart the CA")]
    Poisoned,
}

/// How a certificate came to be.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum IssuanceKind {
    /// First SVID, bootstrapped with a join token.
    Issued,
    /// Renewed with the previous SVID.
    Renewed,
    /// Minted offline by `palisade ca issue`.
    Minted,
}

impl IssuanceKind {
    fn as_str(self) -> &'static str {
        match self {
            Self::Issued => "issued",
            Self::Renewed => "renewed",
            Self::Minted => "minted",
        }
    }
}

/// One line of the issuance log.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct IssuanceRecord {
    pub serial: Serial,
    pub id: SpiffeId,
    pub kind: IssuanceKind,
    pub not_before_unix: i64,
    pub not_after_unix: i64,
    pub issued_at_unix: i64,
    /// For a renewal, the serial of the certificate that authenticated it.
    pub renewed_from: Option<Serial>,
}

/// Handle to the state file.
#[derive(Debug)]
pub struct Store {
    conn: Mutex<Connection>,
}

const SCHEMA: &str = "
CREATE TABLE IF NOT EXISTS meta (key TEXT PRIMARY KEY, value TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS join_tokens (
    token_sha256 BLOB PRIMARY KEY,
    spiffe_id TEXT NOT NULL,
    created_at INTEGER NOT NULL,
    expires_at INTEGER NOT NULL,
    used_at INTEGER
);
CREATE TABLE IF NOT EXISTS revocations (
    kind TEXT NOT NULL CHECK (kind IN ('serial', 'spiffe_id')),
    value TEXT NOT NULL,
    reason TEXT NOT NULL,
    revoked_at INTEGER NOT NULL,
    PRIMARY KEY (kind, value)
);
CREATE TABLE IF NOT EXISTS issued (
    serial TEXT PRIMARY KEY,
    spiffe_id TEXT NOT NULL,
    kind TEXT NOT NULL,
    not_before INTEGER NOT NULL,
    not_after INTEGER NOT NULL,
    issued_at INTEGER NOT NULL,
    renewed_from TEXT
);
CREATE INDEX IF NOT EXISTS issued_by_id ON issued (spiffe_id, not_after);
CREATE INDEX IF NOT EXISTS issued_by_parent ON issued (renewed_from);
";

const REVOCATION_VERSION: &str = "revocation_version";
const ADMIN_TOKEN: &str = "admin_token_sha256";
const REVOKER_TOKEN: &str = "revoker_token_sha256";

impl Store {
    /// Opens (creating when absent) the state file.
    pub fn open(path: &Path) -> Result<Self, StoreError> {
        let open_err = |source| StoreError::Open {
            path: path.display().to_string(),
            source,
        };
        let conn = Connection::open(path).map_err(open_err)?;
        conn.busy_timeout(Duration::from_secs(10)).map_err(open_err)?;
        conn.pragma_update(None, "journal_mode", "WAL").map_err(open_err)?;
        conn.pragma_update(None, "synchronous", "FULL").map_err(open_err)?;
        conn.execute_batch(SCHEMA).map_err(open_err)?;
        Ok(Self { conn: Mutex::new(conn) })
    }

    fn with<T>(&self, f: impl FnOnce(&mut Connection) -> Result<T, StoreError>) -> Result<T, StoreError> {
        let mut conn = self.conn.lock().map_err(|_| StoreError::Poisoned)?;
        f(&mut conn)
    }

    /// Stores the SHA-256 of the admin credential.
    pub fn set_admin_token_hash(&self, hash: &[u8; 32]) -> Result<(), StoreError> {
        self.set_meta(ADMIN_TOKEN, &hex(hash))
    }

    pub fn admin_token_hash(&self) -> Result<Option<String>, StoreError> {
        self.meta(ADMIN_TOKEN)
    }

    /// Stores the SHA-256 of the revoker credential (revocations only).
    pub fn set_revoker_token_hash(&self, hash: &[u8; 32]) -> Result<(), StoreError> {
        self.set_meta(REVOKER_TOKEN, &hex(hash))
    }

    pub fn revoker_token_hash(&self) -> Result<Option<String>, StoreError> {
        self.meta(REVOKER_TOKEN)
    }

    fn set_meta(&self, key: &str, value: &str) -> Result<(), StoreError> {
        self.with(|c| {
            c.execute(
                "INSERT INTO meta (key, value) VALUES (?1, ?2) ON CONFLICT (key) DO UPDATE SET value = excluded.value",
                params![key, value],
            )?;
            Ok(())
        })
    }

    fn meta(&self, key: &str) -> Result<Option<String>, StoreError> {
        self.with(|c| {
            Ok(
                c.query_row("SELECT value FROM meta WHERE key = ?1", [key], |r| r.get(0))
                    .optional()?,
            )
        })
    }

    /// Records a new join token (only its hash).
    pub fn insert_join_token(
        &self,
        hash: &[u8; 32],
        id: &SpiffeId,
        now: i64,
        expires_at: i64,
    ) -> Result<(), StoreError> {
        self.with(|c| {
            c.execute(
                "INSERT INTO join_tokens (token_sha256, spiffe_id, created_at, expires_at) VALUES (?1, ?2, ?3, ?4)",
                params![hash.as_slice(), id.as_str(), now, expires_at],
            )?;
            Ok(())
        })
    }

    /// The identity a join token bootstraps, when it exists, is unused and unexpired.
    pub fn join_token_id(&self, hash: &[u8; 32], now: i64) -> Result<Option<SpiffeId>, StoreError> {
        self.with(|c| {
            let id: Option<String> = c
                .query_row(
                    "SELECT spiffe_id FROM join_tokens WHERE token_sha256 = ?1 AND used_at IS NULL AND expires_at > ?2",
                    params![hash.as_slice(), now],
                    |r| r.get(0),
                )
                .optional()?;
            id.map(|s| parse_id(&s)).transpose()
        })
    }

    /// Burns the token and logs the issuance in one transaction. Returns false (and
    /// changes nothing) when the token was used or expired meanwhile.
    pub fn consume_join_token(&self, hash: &[u8; 32], now: i64, record: &IssuanceRecord) -> Result<bool, StoreError> {
        self.with(|c| {
            let tx = c.transaction()?;
            let n = tx.execute(
                "UPDATE join_tokens SET used_at = ?2 WHERE token_sha256 = ?1 AND used_at IS NULL AND expires_at > ?2 AND spiffe_id = ?3",
                params![hash.as_slice(), now, record.id.as_str()],
            )?;
            if n != 1 {
                return Ok(false);
            }
            insert_issued(&tx, record)?;
            tx.commit()?;
            Ok(true)
        })
    }

    /// Logs an issuance (renewal or offline mint).
    pub fn record_issued(&self, record: &IssuanceRecord) -> Result<(), StoreError> {
        self.with(|c| insert_issued(c, record))
    }

    /// The issuance log entry of a serial, when this CA issued it.
    pub fn issued(&self, serial: &Serial) -> Result<Option<IssuanceRecord>, StoreError> {
        self.with(|c| {
            let row = c
                .query_row(
                    "SELECT serial, spiffe_id, kind, not_before, not_after, issued_at, renewed_from
                     FROM issued WHERE serial = ?1",
                    [serial.to_string()],
                    |r| {
                        Ok((
                            (r.get::<_, String>(0)?, r.get::<_, String>(1)?, r.get::<_, String>(2)?),
                            (r.get(3)?, r.get(4)?, r.get(5)?),
                            r.get::<_, Option<String>>(6)?,
                        ))
                    },
                )
                .optional()?;
            row.map(|((s, id, kind), (nb, na, at), parent)| {
                Ok(IssuanceRecord {
                    serial: s
                        .parse()
                        .map_err(|e: crate::serial::SerialError| StoreError::Corrupt(e.to_string()))?,
                    id: parse_id(&id)?,
                    kind: match kind.as_str() {
                        "issued" => IssuanceKind::Issued,
                        "renewed" => IssuanceKind::Renewed,
                        _ => IssuanceKind::Minted,
                    },
                    not_before_unix: nb,
                    not_after_unix: na,
                    issued_at_unix: at,
                    renewed_from: parent.map(|p| parse_serial(&p)).transpose()?,
                })
            })
            .transpose()
        })
    }

    /// Serials issued to `id` that are still valid at `now`.
    pub fn live_serials_of(&self, id: &SpiffeId, now: i64) -> Result<Vec<Serial>, StoreError> {
        self.with(|c| {
            let mut stmt =
                c.prepare("SELECT serial FROM issued WHERE spiffe_id = ?1 AND not_after > ?2 ORDER BY serial")?;
            let rows = stmt.query_map(params![id.as_str(), now], |r| r.get::<_, String>(0))?;
            rows.map(|r| {
                r?.parse()
                    .map_err(|e: crate::serial::SerialError| StoreError::Corrupt(e.to_string()))
            })
            .collect()
        })
    }

    /// Adds a revocation; returns the list version after it and whether it changed.
    pub fn revoke(&self, target: &RevocationTarget, reason: &str, now: i64) -> Result<(u64, bool), StoreError> {
        let (kind, value) = target_columns(target);
        self.with(|c| {
            let tx = c.transaction()?;
            let mut n = tx.execute(
                "INSERT INTO revocations (kind, value, reason, revoked_at) VALUES (?1, ?2, ?3, ?4) ON CONFLICT DO NOTHING",
                params![kind, value, reason, now],
            )?;
            if let RevocationTarget::Serial(serial) = target {
                // A certificate renewed from a revoked one goes with it: otherwise a
                // stolen key could renew itself out of reach of `revoke --serial`.
                let why = format!("renewed from revoked serial {serial}");
                n += tx.execute(
                    "WITH RECURSIVE d(serial) AS (
                         SELECT serial FROM issued WHERE renewed_from = ?1
                         UNION SELECT i.serial FROM issued i JOIN d ON i.renewed_from = d.serial)
                     INSERT INTO revocations (kind, value, reason, revoked_at)
                         SELECT 'serial', serial, ?2, ?3 FROM d WHERE true ON CONFLICT DO NOTHING",
                    params![value, why, now],
                )?;
            }
            let version = bump_version(&tx, n >= 1)?;
            tx.commit()?;
            Ok((version, n >= 1))
        })
    }

    /// The nearest revoked serial among the certificates `serial` was renewed from.
    pub fn revoked_ancestor(&self, serial: &Serial) -> Result<Option<Serial>, StoreError> {
        self.with(|c| {
            let found: Option<String> = c
                .query_row(
                    "WITH RECURSIVE a(serial, depth) AS (
                         SELECT renewed_from, 1 FROM issued WHERE serial = ?1 AND renewed_from IS NOT NULL
                         UNION SELECT i.renewed_from, a.depth + 1 FROM issued i JOIN a ON i.serial = a.serial
                             WHERE i.renewed_from IS NOT NULL)
                     SELECT a.serial FROM a JOIN revocations r ON r.kind = 'serial' AND r.value = a.serial
                     ORDER BY a.depth LIMIT 1",
                    [serial.to_string()],
                    |r| r.get(0),
                )
                .optional()?;
            found.map(|s| parse_serial(&s)).transpose()
        })
    }

    /// Removes a revocation; returns the list version after it and whether it changed.
    /// Gives the entry of `target` the reason `reason` when its reason starts with
    /// `prefix` (an operator's revocation takes over one the Kubernetes controller
    /// made, so the controller's credential can no longer undo it); the list's
    /// version, and whether it changed.
    pub fn take_over(&self, target: &RevocationTarget, reason: &str, prefix: &str) -> Result<(u64, bool), StoreError> {
        let (kind, value) = target_columns(target);
        self.with(|c| {
            let tx = c.transaction()?;
            let n = tx.execute(
                "UPDATE revocations SET reason = ?3 WHERE kind = ?1 AND value = ?2 AND substr(reason, 1, length(?4)) = ?4",
                params![kind, value, reason, prefix],
            )?;
            let version = bump_version(&tx, n == 1)?;
            tx.commit()?;
            Ok((version, n == 1))
        })
    }

    /// Unrevokes `target` only if its reason starts with `prefix`, in one
    /// transaction; `None` when its entry has another reason (nothing changed).
    pub fn unrevoke_own(&self, target: &RevocationTarget, prefix: &str) -> Result<Option<(u64, bool)>, StoreError> {
        let (kind, value) = target_columns(target);
        self.with(|c| {
            let tx = c.transaction()?;
            let reason: Option<String> = tx
                .query_row(
                    "SELECT reason FROM revocations WHERE kind = ?1 AND value = ?2",
                    params![kind, value],
                    |r| r.get(0),
                )
                .optional()?;
            if reason.is_some_and(|r| !r.starts_with(prefix)) {
                return Ok(None);
            }
            let n = tx.execute(
                "DELETE FROM revocations WHERE kind = ?1 AND value = ?2",
                params![kind, value],
            )?;
            let version = bump_version(&tx, n == 1)?;
            tx.commit()?;
            Ok(Some((version, n == 1)))
        })
    }

    pub fn unrevoke(&self, target: &RevocationTarget) -> Result<(u64, bool), StoreError> {
        // Every reason starts with the empty prefix: `None` cannot come back.
        Ok(self.unrevoke_own(target, "")?.unwrap_or_default())
    }

    /// The current list version and every revocation, oldest first.
    pub fn revocations(&self) -> Result<(u64, Vec<RevocationEntry>), StoreError> {
        self.with(|c| {
            let version = read_version(c)?;
            let mut stmt =
                c.prepare("SELECT kind, value, reason, revoked_at FROM revocations ORDER BY revoked_at, kind, value")?;
            let rows = stmt.query_map([], |r| {
                Ok((
                    r.get::<_, String>(0)?,
                    r.get::<_, String>(1)?,
                    r.get::<_, String>(2)?,
                    r.get::<_, i64>(3)?,
                ))
            })?;
            let mut entries = Vec::new();
            for row in rows {
                let (kind, value, reason, revoked_at_unix) = row?;
                let target = match kind.as_str() {
                    "serial" => RevocationTarget::Serial(
                        value
                            .parse()
                            .map_err(|e: crate::serial::SerialError| StoreError::Corrupt(e.to_string()))?,
                    ),
                    _ => RevocationTarget::SpiffeId(parse_id(&value)?),
                };
                entries.push(RevocationEntry {
                    target,
                    reason,
                    revoked_at_unix,
                });
            }
            Ok((version, entries))
        })
    }
}

fn insert_issued(c: &Connection, r: &IssuanceRecord) -> Result<(), StoreError> {
    c.execute(
        "INSERT INTO issued (serial, spiffe_id, kind, not_before, not_after, issued_at, renewed_from)
         VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7)",
        params![
            r.serial.to_string(),
            r.id.as_str(),
            r.kind.as_str(),
            r.not_before_unix,
            r.not_after_unix,
            r.issued_at_unix,
            r.renewed_from.as_ref().map(ToString::to_string)
        ],
    )?;
    Ok(())
}

fn read_version(c: &Connection) -> Result<u64, StoreError> {
    let v: Option<String> = c
        .query_row("SELECT value FROM meta WHERE key = ?1", [REVOCATION_VERSION], |r| {
            r.get(0)
        })
        .optional()?;
    v.map(|v| {
        v.parse()
            .map_err(|_| StoreError::Corrupt(format!("revocation version `{v}`")))
    })
    .transpose()
    .map(|v| v.unwrap_or(1))
}

/// The list starts at version 1 (an empty list); every change adds one.
fn bump_version(c: &Connection, changed: bool) -> Result<u64, StoreError> {
    let current = read_version(c)?;
    if !changed {
        return Ok(current);
    }
    let next = current.saturating_add(1);
    c.execute(
        "INSERT INTO meta (key, value) VALUES (?1, ?2) ON CONFLICT (key) DO UPDATE SET value = excluded.value",
        params![REVOCATION_VERSION, next.to_string()],
    )?;
    Ok(next)
}

fn target_columns(t: &RevocationTarget) -> (&'static str, String) {
    match t {
        RevocationTarget::Serial(s) => ("serial", s.to_string()),
        RevocationTarget::SpiffeId(id) => ("spiffe_id", id.to_string()),
    }
}

fn parse_serial(s: &str) -> Result<Serial, StoreError> {
    s.parse()
        .map_err(|e: crate::serial::SerialError| StoreError::Corrupt(e.to_string()))
}

fn parse_id(s: &str) -> Result<SpiffeId, StoreError> {
    SpiffeId::parse(s).map_err(|e| StoreError::Corrupt(e.to_string()))
}

/// Lower-case hex.
pub fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn id(s: &str) -> SpiffeId {
        SpiffeId::parse(s).unwrap()
    }

    fn record(serial: &str, who: &str, not_after: i64) -> IssuanceRecord {
        IssuanceRecord {
            serial: serial.parse().unwrap(),
            id: id(who),
            kind: IssuanceKind::Issued,
            not_before_unix: 0,
            not_after_unix: not_after,
            issued_at_unix: 0,
            renewed_from: None,
        }
    }

    #[test]
    fn revoking_a_serial_revokes_what_was_renewed_from_it_and_renewal_checks_ancestors() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(&dir.path().join("state.db")).unwrap();
        let child = |serial: &str, parent: &str| IssuanceRecord {
            renewed_from: Some(parent.parse().unwrap()),
            kind: IssuanceKind::Renewed,
            ..record(serial, "spiffe://td/ns/a/sa/web", 999)
        };
        store
            .record_issued(&record("01", "spiffe://td/ns/a/sa/web", 999))
            .unwrap();
        store.record_issued(&child("02", "01")).unwrap(); // the thief's renewal
        store.record_issued(&child("03", "02")).unwrap();
        store.record_issued(&child("04", "01")).unwrap(); // the workload's own renewal
        store
            .record_issued(&record("05", "spiffe://td/ns/a/sa/web", 999))
            .unwrap(); // a fresh bootstrap
        assert_eq!(store.revoked_ancestor(&"03".parse().unwrap()).unwrap(), None);
        let (_, changed) = store
            .revoke(&RevocationTarget::Serial("01".parse().unwrap()), "keyCompromise", 9)
            .unwrap();
        assert!(changed);
        let (_, entries) = store.revocations().unwrap();
        let mut revoked: Vec<String> = entries
            .iter()
            .map(|e| match &e.target {
                RevocationTarget::Serial(s) => s.to_string(),
                RevocationTarget::SpiffeId(id) => id.to_string(),
            })
            .collect();
        revoked.sort();
        assert_eq!(
            revoked,
            ["01", "02", "03", "04"],
            "the whole lineage, not the fresh bootstrap"
        );
        assert_eq!(
            store.revoked_ancestor(&"03".parse().unwrap()).unwrap(),
            Some("02".parse().unwrap())
        );
        assert_eq!(store.revoked_ancestor(&"05".parse().unwrap()).unwrap(), None);
    }

    #[test]
    fn a_join_token_is_used_once_and_only_for_its_identity() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(&dir.path().join("state.db")).unwrap();
        let h = [7u8; 32];
        let web = id("spiffe://td/ns/a/sa/web");
        store.insert_join_token(&h, &web, 100, 200).unwrap();
        assert_eq!(store.join_token_id(&h, 150).unwrap(), Some(web.clone()));
        assert_eq!(store.join_token_id(&h, 200).unwrap(), None, "expired at 200");
        assert!(!store
            .consume_join_token(&h, 150, &record("01", "spiffe://td/ns/a/sa/other", 999))
            .unwrap());
        assert!(store
            .consume_join_token(&h, 150, &record("02", "spiffe://td/ns/a/sa/web", 999))
            .unwrap());
        assert!(!store
            .consume_join_token(&h, 151, &record("03", "spiffe://td/ns/a/sa/web", 999))
            .unwrap());
        assert_eq!(store.join_token_id(&h, 151).unwrap(), None);
        assert!(
            store.issued(&"01".parse().unwrap()).unwrap().is_none(),
            "a refused use logs nothing"
        );
        assert!(store.issued(&"02".parse().unwrap()).unwrap().is_some());
    }

    #[test]
    fn revocations_bump_the_version_only_when_they_change_something_and_survive_reopen() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("state.db");
        let store = Store::open(&path).unwrap();
        let t = RevocationTarget::SpiffeId(id("spiffe://td/ns/a/sa/web"));
        assert_eq!(store.revocations().unwrap().0, 1);
        assert_eq!(store.revoke(&t, "compromised", 5).unwrap(), (2, true));
        assert_eq!(store.revoke(&t, "again", 6).unwrap(), (2, false));
        let s = RevocationTarget::Serial("0a".parse().unwrap());
        assert_eq!(store.revoke(&s, "", 7).unwrap(), (3, true));
        drop(store);
        let store = Store::open(&path).unwrap();
        let (version, entries) = store.revocations().unwrap();
        assert_eq!(version, 3);
        assert_eq!(entries.len(), 2);
        assert_eq!(entries.first().unwrap().reason, "compromised");
        assert_eq!(store.unrevoke(&t).unwrap(), (4, true));
        assert_eq!(store.unrevoke(&t).unwrap(), (4, false));
    }

    #[test]
    fn live_serials_are_the_unexpired_ones_of_that_identity() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(&dir.path().join("state.db")).unwrap();
        store
            .record_issued(&record("01", "spiffe://td/ns/a/sa/web", 100))
            .unwrap();
        store
            .record_issued(&record("02", "spiffe://td/ns/a/sa/web", 300))
            .unwrap();
        store
            .record_issued(&record("03", "spiffe://td/ns/a/sa/db", 300))
            .unwrap();
        let live = store.live_serials_of(&id("spiffe://td/ns/a/sa/web"), 200).unwrap();
        assert_eq!(live, vec!["02".parse().unwrap()]);
    }
}
