//! The CA directory: everything `palisade ca init` writes and `ca serve` reads.
//!
//! | file | what | mode |
//! | --- | --- | --- |
//! | `ca.json` | trust domain | 0644 |
//! | `root.pem` | root certificate | 0644 |
//! | `root.key` | root key (only when `init` generated the root; move it offline) | 0600 |
//! | `intermediate.pem`, `intermediate.key` | the signing CA | 0644, 0600 |
//! | `bundle.pem` | the trust bundle: give it to every workload | 0644 |
//! | `admin.token` | the admin credential for `ca revoke`, `ca token create`, … | 0600 |
//! | `revoker.token` | a credential that may only revoke, unrevoke and list revocations (for the Kubernetes controller) | 0600 |
//! | `state.db` | revocations, join tokens (hashed), issuance log | 0600 |
//! | `ca.addr` | where `ca serve` listens (written at start) | 0644 |

use std::fs::OpenOptions;
use std::io::Write;
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};
use std::time::SystemTime;

use rcgen::KeyPair;
use rustls_pki_types::CertificateDer;
use serde::{Deserialize, Serialize};

use crate::attest::join_token;
use crate::bundle::{certs_from_pem, certs_to_pem, BundleError, TrustBundle};
use crate::issuer::{new_ca, CaSigner, IssueError};
use crate::spiffe_id::TrustDomain;
use crate::store::{Store, StoreError};

/// A CA directory could not be made or read.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum CaDirError {
    #[error("`{0}` already exists; pass --force to replace the whole CA (every issued SVID becomes untrusted)")]
    Exists(String),
    #[error("`{path}`: {source}")]
    Io {
        path: String,
        #[source]
        source: std::io::Error,
    },
    #[error(
        "`{0}` is missing: is this a CA directory? create one with `palisade ca init --trust-domain TD --dir DIR`"
    )]
    Missing(String),
    #[error("`{path}` is not a usable key: {reason}")]
    BadKey { path: String, reason: String },
    #[error("`{path}` is not a usable certificate: {reason}")]
    BadCert { path: String, reason: String },
    #[error("`{path}` is invalid: {reason}")]
    BadConfig { path: String, reason: String },
    #[error(transparent)]
    Issue(#[from] IssueError),
    #[error(transparent)]
    Bundle(#[from] BundleError),
    #[error(transparent)]
    Store(#[from] StoreError),
    #[error(transparent)]
    Random(#[from] join_token::RandomError),
}

/// The settings file of a CA directory.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct CaConfig {
    pub trust_domain: TrustDomain,
}

/// What `init` needs.
#[derive(Debug)]
pub struct InitParams {
    pub trust_domain: TrustDomain,
    /// An existing root to sign the intermediate with (certificate PEM, key PEM).
    pub plug_in_root: Option<(PathBuf, PathBuf)>,
    pub force: bool,
    pub now: SystemTime,
}

/// A CA directory on disk.
#[derive(Debug, Clone)]
pub struct CaDir {
    path: PathBuf,
}

const SECRET: u32 = 0o600;
const PUBLIC: u32 = 0o644;

impl CaDir {
    pub fn new(path: impl Into<PathBuf>) -> Self {
        Self { path: path.into() }
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    pub fn file(&self, name: &str) -> PathBuf {
        self.path.join(name)
    }

    /// Makes a new CA in the directory; refuses to replace one unless `force`.
    pub fn init(&self, params: InitParams) -> Result<(), CaDirError> {
        let ours = [
            "ca.json",
            "root.pem",
            "root.key",
            "intermediate.pem",
            "intermediate.key",
            "bundle.pem",
            "admin.token",
            "state.db",
        ];
        if !params.force {
            if let Some(existing) = ours.iter().map(|f| self.file(f)).find(|p| p.exists()) {
                return Err(CaDirError::Exists(existing.display().to_string()));
            }
        }
        std::fs::create_dir_all(&self.path).map_err(|source| self.io("", source))?;
        for stale in ["root.key", "state.db", "state.db-wal", "state.db-shm", "ca.addr"] {
            match std::fs::remove_file(self.file(stale)) {
                Ok(()) => {}
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
                Err(source) => return Err(self.io(stale, source)),
            }
        }
        let plug_in = params
            .plug_in_root
            .as_ref()
            .map(|(c, k)| load_cert_and_key(c, k))
            .transpose()?;
        let material = new_ca(&params.trust_domain, params.now, plug_in)?;
        let config = CaConfig {
            trust_domain: params.trust_domain.clone(),
        };
        let json = serde_json::to_string_pretty(&config).map_err(|e| CaDirError::BadConfig {
            path: "ca.json".into(),
            reason: e.to_string(),
        })?;
        self.write("ca.json", json.as_bytes(), PUBLIC)?;
        self.write(
            "root.pem",
            certs_to_pem(std::slice::from_ref(&material.root_cert)).as_bytes(),
            PUBLIC,
        )?;
        if let Some(root_key) = &material.root_key {
            self.write("root.key", root_key.serialize_pem().as_bytes(), SECRET)?;
        }
        self.write(
            "intermediate.pem",
            certs_to_pem(std::slice::from_ref(&material.intermediate_cert)).as_bytes(),
            PUBLIC,
        )?;
        self.write(
            "intermediate.key",
            material.intermediate_key.serialize_pem().as_bytes(),
            SECRET,
        )?;
        self.write(
            "bundle.pem",
            certs_to_pem(std::slice::from_ref(&material.root_cert)).as_bytes(),
            PUBLIC,
        )?;
        let admin = join_token::new_secret()?;
        self.write("admin.token", format!("{admin}\n").as_bytes(), SECRET)?;
        let store = self.create_store()?;
        store.set_admin_token_hash(&join_token::hash_secret(&admin))?;
        self.ensure_revoker_token(&store)?;
        Ok(())
    }

    /// Makes `revoker.token` and records its hash, unless the store has one
    /// already (a directory made before revoker tokens existed gets one here).
    pub fn ensure_revoker_token(&self, store: &Store) -> Result<(), CaDirError> {
        if store.revoker_token_hash()?.is_some() {
            return Ok(());
        }
        let revoker = join_token::new_secret()?;
        self.write("revoker.token", format!("{revoker}\n").as_bytes(), SECRET)?;
        store.set_revoker_token_hash(&join_token::hash_secret(&revoker))?;
        Ok(())
    }

    /// The CA's settings.
    pub fn config(&self) -> Result<CaConfig, CaDirError> {
        let text = self.read("ca.json")?;
        serde_json::from_slice(&text).map_err(|e| CaDirError::BadConfig {
            path: self.file("ca.json").display().to_string(),
            reason: e.to_string(),
        })
    }

    /// The trust bundle.
    pub fn bundle(&self) -> Result<TrustBundle, CaDirError> {
        let td = self.config()?.trust_domain;
        Ok(TrustBundle::from_pem(td, &self.read("bundle.pem")?)?)
    }

    /// The intermediate's signer.
    pub fn signer(&self) -> Result<CaSigner, CaDirError> {
        let (cert, key) = load_cert_and_key(&self.file("intermediate.pem"), &self.file("intermediate.key"))?;
        Ok(CaSigner::new(cert, key, self.bundle()?)?)
    }

    /// Opens the state file of an initialized directory.
    pub fn store(&self) -> Result<Store, CaDirError> {
        let path = self.file("state.db");
        if !path.exists() {
            return Err(CaDirError::Missing(path.display().to_string()));
        }
        Ok(Store::open(&path)?)
    }

    fn create_store(&self) -> Result<Store, CaDirError> {
        let path = self.file("state.db");
        OpenOptions::new()
            .write(true)
            .create(true)
            .truncate(false)
            .mode(SECRET)
            .open(&path)
            .map_err(|source| self.io("state.db", source))?;
        Ok(Store::open(&path)?)
    }

    /// The admin credential (trimmed).
    pub fn admin_token(&self) -> Result<String, CaDirError> {
        Ok(String::from_utf8_lossy(&self.read("admin.token")?).trim().to_string())
    }

    /// Records where the CA listens, for the CLI's admin calls.
    pub fn write_addr(&self, addr: &str) -> Result<(), CaDirError> {
        self.write("ca.addr", format!("{addr}\n").as_bytes(), PUBLIC)
    }

    /// Where a running CA listens, if one wrote its address.
    pub fn addr(&self) -> Option<String> {
        std::fs::read_to_string(self.file("ca.addr"))
            .ok()
            .map(|s| s.trim().to_string())
    }

    fn read(&self, name: &str) -> Result<Vec<u8>, CaDirError> {
        let path = self.file(name);
        std::fs::read(&path).map_err(|source| match source.kind() {
            std::io::ErrorKind::NotFound => CaDirError::Missing(path.display().to_string()),
            _ => self.io(name, source),
        })
    }

    fn write(&self, name: &str, data: &[u8], mode: u32) -> Result<(), CaDirError> {
        write_file(&self.file(name), data, mode)
    }

    fn io(&self, name: &str, source: std::io::Error) -> CaDirError {
        CaDirError::Io {
            path: self.file(name).display().to_string(),
            source,
        }
    }
}

/// Writes a file with `mode` (replacing it), syncing it to disk. The file is made
/// under a temporary name and renamed, so a reader never sees half a key.
pub fn write_file(path: &Path, data: &[u8], mode: u32) -> Result<(), CaDirError> {
    let io = |source| CaDirError::Io {
        path: path.display().to_string(),
        source,
    };
    let tmp = path.with_extension("tmp");
    let _ = std::fs::remove_file(&tmp);
    let mut f = OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(mode)
        .open(&tmp)
        .map_err(io)?;
    f.write_all(data).map_err(io)?;
    f.sync_all().map_err(io)?;
    std::fs::rename(&tmp, path).map_err(io)
}

/// Reads a PEM certificate (the first block) and its PEM private key.
pub fn load_cert_and_key(cert_path: &Path, key_path: &Path) -> Result<(CertificateDer<'static>, KeyPair), CaDirError> {
    let cert_pem = std::fs::read(cert_path).map_err(|source| CaDirError::Io {
        path: cert_path.display().to_string(),
        source,
    })?;
    let cert = certs_from_pem(&cert_pem)
        .ok()
        .and_then(|c| c.into_iter().next())
        .ok_or_else(|| CaDirError::BadCert {
            path: cert_path.display().to_string(),
            reason: "no PEM CERTIFICATE block".into(),
        })?;
    let key_pem = std::fs::read_to_string(key_path).map_err(|source| CaDirError::Io {
        path: key_path.display().to_string(),
        source,
    })?;
    let key = KeyPair::from_pem(&key_pem).map_err(|e| CaDirError::BadKey {
        path: key_path.display().to_string(),
        reason: format!("{e}; give a PKCS#8 PEM key (`openssl pkcs8 -topk8 -nocrypt`)"),
    })?;
    Ok((cert, key))
}
