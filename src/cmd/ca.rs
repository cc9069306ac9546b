//! `palisade ca …`

use std::sync::Arc;
use std::time::SystemTime;

use anyhow::{anyhow, Context};
use palisade_ca::attest::service_account::TokenReviewer;
use palisade_ca::bundle::{certs_from_pem, certs_to_pem, pem_block};
use palisade_ca::client::admin::AdminClient;
use palisade_ca::client::CaEndpoint;
use palisade_ca::dir::{write_file, CaDir, InitParams};
use palisade_ca::revocation::crl::{build_crl, CrlEntry};
use palisade_ca::revocation::{RevocationEntry, RevocationTarget};
use palisade_ca::service::{serve, ReviewLimits, ServeParams};
use palisade_ca::store::{IssuanceKind, IssuanceRecord};
use palisade_ca::svid::{unix_seconds, SvidFacts};
use palisade_ca::{verify_svid, SpiffeId, TrustBundle, TrustDomain, Usage};
use palisade_crds::tokenreview::KubeTokenReviewer;
use rustls_pki_types::CertificateDer;
use serde_json::json;

use super::audit_sink::{self, LateAuditor};
use super::UsageError;
use crate::cli::{self, CaCommand, CaConn, Output, RevocationsCommand, TokenCommand};
use crate::exit;
use crate::output::{self, timestamp};

pub async fn run(command: CaCommand) -> anyhow::Result<u8> {
    match command {
        CaCommand::Init(a) => init(a),
        CaCommand::Serve(a) => serve_ca(a).await,
        CaCommand::Token(TokenCommand::Create(a)) => token_create(a).await,
        CaCommand::Issue(a) => issue(a),
        CaCommand::Revoke(a) => revoke(a).await,
        CaCommand::Unrevoke(a) => unrevoke(a).await,
        CaCommand::Revocations(RevocationsCommand::List(a)) => revocations_list(a).await,
        CaCommand::Crl(a) => crl(a),
        CaCommand::Inspect(a) => inspect(a),
    }
}

fn init(a: cli::CaInit) -> anyhow::Result<u8> {
    let td = TrustDomain::new(&a.trust_domain)?;
    let dir = CaDir::new(&a.dir.dir);
    dir.init(InitParams {
        trust_domain: td.clone(),
        plug_in_root: a.root_cert.zip(a.root_key),
        force: a.force,
        now: SystemTime::now(),
    })?;
    let d = dir.path().display();
    println!("created CA for trust domain {td} in {d}");
    println!("  trust bundle:     {d}/bundle.pem   (give it to every workload)");
    println!("  admin credential: {d}/admin.token  (keep it secret)");
    if dir.file("root.key").exists() {
        println!("  root key:         {d}/root.key     (move it offline; only a new intermediate needs it)");
    }
    println!("next: palisade ca serve --dir {d} --listen 127.0.0.1:8443");
    Ok(exit::OK)
}

async fn serve_ca(a: cli::CaServe) -> anyhow::Result<u8> {
    let dir = CaDir::new(&a.dir.dir);
    let td = dir.config()?.trust_domain;
    let reviewer = token_reviewer(&a).await?;
    let shutdown = super::shutdown_signal();
    let audit = Arc::new(LateAuditor::default());
    let default_spool = dir.file("audit.spool");
    let mut delivery = None;
    let (failed_tx, failed_rx) = tokio::sync::oneshot::channel::<anyhow::Error>();
    let mut failure = None;
    serve(
        ServeParams {
            dir,
            listen: a.listen,
            default_ttl: a.default_ttl,
            events: Some(Arc::clone(&audit) as Arc<dyn palisade_ca::service::events::CaEvents>),
            reviewer,
            token_audience: a.token_audience.clone(),
            review_limits: ReviewLimits::default(),
        },
        |started| {
            // The CA's own SVID is the audit client's identity.
            match audit_sink::start(&audit, &a.audit, &default_spool, &td, started.resolver, started.trust) {
                Ok(task) => delivery = task,
                Err(e) => {
                    let _ = failed_tx.send(e);
                    return;
                }
            }
            println!("palisade CA for trust domain {td} listening on {}", started.addr);
        },
        async {
            tokio::select! {
                () = shutdown => {}
                Ok(e) = failed_rx => failure = Some(e),
            }
        },
    )
    .await?;
    if let Some(task) = delivery {
        task.abort();
    }
    if let Some(e) = failure {
        return Err(e.context("cannot start sending audit records"));
    }
    Ok(exit::OK)
}

/// The API server client for `--kubernetes-attestation`, if asked for.
async fn token_reviewer(a: &cli::CaServe) -> anyhow::Result<Option<Arc<dyn TokenReviewer>>> {
    if !a.kubernetes_attestation {
        return Ok(None);
    }
    let reviewer = KubeTokenReviewer::connect(a.kubeconfig.as_deref(), a.token_audience.clone())
        .await
        .context("--kubernetes-attestation needs the Kubernetes API server")?;
    tracing::info!(audience = %a.token_audience, "ServiceAccount tokens are reviewed with the Kubernetes API server");
    Ok(Some(Arc::new(reviewer)))
}

/// Resolves where the CA is and how to trust it.
fn endpoint(conn: &CaConn) -> anyhow::Result<CaEndpoint> {
    let dir = CaDir::new(&conn.dir.dir);
    let addr = match (&conn.addr, dir.addr()) {
        (Some(a), _) => a.clone(),
        (None, Some(a)) => a,
        (None, None) => {
            return Err(UsageError(format!(
                "no CA address: pass --ca HOST:PORT, or start `palisade ca serve --dir {}` (it writes ca.addr)",
                dir.path().display()
            ))
            .into())
        }
    };
    let td = match &conn.trust_domain {
        Some(td) => TrustDomain::new(td)?,
        None => {
            dir.config()
                .context("pass --trust-domain with --bundle when there is no CA directory")?
                .trust_domain
        }
    };
    let bundle_path = conn.bundle.clone().unwrap_or_else(|| dir.file("bundle.pem"));
    let bundle = TrustBundle::load(td, &bundle_path)?;
    Ok(CaEndpoint::new(addr, bundle))
}

async fn admin(conn: &CaConn) -> anyhow::Result<AdminClient> {
    let token_path = conn
        .admin_token_file
        .clone()
        .unwrap_or_else(|| CaDir::new(&conn.dir.dir).file("admin.token"));
    let token = std::fs::read_to_string(&token_path).with_context(|| {
        format!(
            "cannot read the admin credential `{}`; pass --admin-token-file",
            token_path.display()
        )
    })?;
    Ok(AdminClient::connect(&endpoint(conn)?, token.trim()).await?)
}

async fn token_create(a: cli::TokenCreate) -> anyhow::Result<u8> {
    let id = SpiffeId::parse(&a.spiffe_id)?;
    let token = admin(&a.conn).await?.create_join_token(&id, Some(a.ttl)).await?;
    match a.output {
        Output::Json => print!(
            "{}",
            output::json(
                &json!({"token": token.token, "spiffeId": token.spiffe_id, "expiresAt": timestamp(token.expires_at_unix)})
            )
        ),
        Output::Text | Output::Table => {
            println!("{}", token.token);
            eprintln!(
                "join token for {} (single use, expires {})",
                token.spiffe_id,
                timestamp(token.expires_at_unix)
            );
        }
    }
    Ok(exit::OK)
}

fn issue(a: cli::CaIssue) -> anyhow::Result<u8> {
    let id = SpiffeId::parse(&a.spiffe_id)?;
    let dir = CaDir::new(&a.dir.dir);
    let key_path = a.out.join("leaf.key");
    if key_path.exists() && !a.force {
        return Err(UsageError(format!(
            "`{}` already exists; pass --force to replace it",
            key_path.display()
        ))
        .into());
    }
    let signer = dir.signer()?;
    let store = dir.store()?;
    let (_, revoked) = store.revocations()?;
    if revoked
        .iter()
        .any(|e| e.target == RevocationTarget::SpiffeId(id.clone()))
    {
        return Err(anyhow!(
            "`{id}` is revoked; unrevoke it first with `palisade ca unrevoke --spiffe-id {id}`"
        ));
    }
    let now = SystemTime::now();
    let svid = signer.mint(&id, a.ttl, now)?;
    store.record_issued(&IssuanceRecord {
        serial: svid.serial().clone(),
        id: id.clone(),
        kind: IssuanceKind::Minted,
        not_before_unix: unix_seconds(svid.not_before()),
        not_after_unix: unix_seconds(svid.not_after()),
        issued_at_unix: unix_seconds(now),
        renewed_from: None,
    })?;
    std::fs::create_dir_all(&a.out).with_context(|| format!("cannot create `{}`", a.out.display()))?;
    let leaf = svid.chain().first().cloned().into_iter().collect::<Vec<_>>();
    let key_pem = pem_block("PRIVATE KEY", svid.private_key().secret_der());
    write_file(&a.out.join("leaf.pem"), certs_to_pem(&leaf).as_bytes(), 0o644)?;
    write_file(&key_path, key_pem.as_bytes(), 0o600)?;
    write_file(&a.out.join("chain.pem"), certs_to_pem(svid.chain()).as_bytes(), 0o644)?;
    write_file(&a.out.join("bundle.pem"), signer.bundle().to_pem().as_bytes(), 0o644)?;
    println!("issued {id}");
    println!("  serial:    {}", svid.serial());
    println!("  not after: {}", timestamp(unix_seconds(svid.not_after())));
    println!(
        "  files:     {0}/leaf.pem {0}/leaf.key {0}/chain.pem {0}/bundle.pem",
        a.out.display()
    );
    Ok(exit::OK)
}

fn target(t: &cli::Target) -> anyhow::Result<RevocationTarget> {
    match (&t.serial, &t.spiffe_id) {
        (Some(s), None) => Ok(RevocationTarget::Serial(s.parse()?)),
        (None, Some(id)) => Ok(RevocationTarget::SpiffeId(SpiffeId::parse(id)?)),
        _ => Err(UsageError("name exactly one of --serial or --spiffe-id".into()).into()),
    }
}

async fn revoke(a: cli::CaRevoke) -> anyhow::Result<u8> {
    let target = target(&a.target)?;
    let (version, changed) = if a.offline {
        CaDir::new(&a.conn.dir.dir)
            .store()?
            .revoke(&target, &a.reason, unix_seconds(SystemTime::now()))?
    } else {
        admin(&a.conn).await?.revoke(&target, &a.reason).await?
    };
    let what = if changed { "revoked" } else { "already revoked:" };
    println!("{what} {target} (revocation list version {version})");
    Ok(exit::OK)
}

async fn unrevoke(a: cli::CaUnrevoke) -> anyhow::Result<u8> {
    let target = target(&a.target)?;
    let (version, changed) = if a.offline {
        CaDir::new(&a.conn.dir.dir).store()?.unrevoke(&target)?
    } else {
        admin(&a.conn).await?.unrevoke(&target).await?
    };
    let what = if changed { "unrevoked" } else { "was not revoked:" };
    println!("{what} {target} (revocation list version {version})");
    Ok(exit::OK)
}

async fn revocations_list(a: cli::RevocationsList) -> anyhow::Result<u8> {
    let (version, entries) = if a.remote {
        admin(&a.conn).await?.list_revocations().await?
    } else {
        CaDir::new(&a.conn.dir.dir).store()?.revocations()?
    };
    let kind_value = |e: &RevocationEntry| match &e.target {
        RevocationTarget::Serial(s) => ("serial", s.to_string()),
        RevocationTarget::SpiffeId(id) => ("spiffe-id", id.to_string()),
    };
    match a.output {
        Output::Json => {
            let list: Vec<_> = entries
                .iter()
                .map(|e| {
                    let (kind, value) = kind_value(e);
                    json!({"kind": kind, "value": value, "reason": e.reason, "revokedAt": timestamp(e.revoked_at_unix)})
                })
                .collect();
            print!("{}", output::json(&json!({"version": version, "revocations": list})));
        }
        Output::Table | Output::Text => {
            let rows: Vec<Vec<String>> = entries
                .iter()
                .map(|e| {
                    let (kind, value) = kind_value(e);
                    vec![kind.into(), value, timestamp(e.revoked_at_unix), e.reason.clone()]
                })
                .collect();
            print!("{}", output::table(&["KIND", "VALUE", "REVOKED AT", "REASON"], &rows));
            eprintln!("revocation list version {version}, {} entries", entries.len());
        }
    }
    Ok(exit::OK)
}

fn crl(a: cli::CaCrl) -> anyhow::Result<u8> {
    let dir = CaDir::new(&a.dir.dir);
    let signer = dir.signer()?;
    let store = dir.store()?;
    let now = SystemTime::now();
    let (version, entries) = store.revocations()?;
    let mut lines = Vec::new();
    for e in &entries {
        let serials = match &e.target {
            RevocationTarget::Serial(s) => vec![s.clone()],
            RevocationTarget::SpiffeId(id) => store.live_serials_of(id, unix_seconds(now))?,
        };
        lines.extend(serials.into_iter().map(|serial| CrlEntry {
            serial,
            revoked_at_unix: e.revoked_at_unix,
            reason: e.reason.clone(),
        }));
    }
    lines.sort_by(|a, b| a.serial.cmp(&b.serial));
    lines.dedup_by(|a, b| a.serial == b.serial);
    let der = build_crl(&signer, version, now, &lines)?;
    let bytes = if a.out.extension().is_some_and(|e| e == "pem") {
        pem_block("X509 CRL", der.as_ref()).into_bytes()
    } else {
        der.to_vec()
    };
    write_file(&a.out, &bytes, 0o644)?;
    println!(
        "wrote CRL number {version} with {} serials to {}",
        lines.len(),
        a.out.display()
    );
    Ok(exit::OK)
}

fn inspect(a: cli::CaInspect) -> anyhow::Result<u8> {
    let pem = std::fs::read(&a.file).with_context(|| format!("cannot read `{}`", a.file.display()))?;
    let chain: Vec<CertificateDer<'static>> =
        certs_from_pem(&pem).map_err(|e| UsageError(format!("`{}` is not PEM: {e}", a.file.display())))?;
    let Some(leaf) = chain.first() else {
        return Err(UsageError(format!("`{}` holds no PEM CERTIFICATE block", a.file.display())).into());
    };
    let facts = SvidFacts::parse(leaf).map_err(|e| UsageError(e.to_string()))?;
    let dir = CaDir::new(&a.dir.dir);
    let store = dir.store().ok();
    let (revocations, version) = match &store {
        Some(s) => {
            let (version, entries) = s.revocations()?;
            (
                palisade_ca::revocation::RevocationSet::new(version, &entries),
                Some(version),
            )
        }
        None => (Default::default(), None),
    };
    let bundle = match (&a.bundle, &facts.id) {
        (Some(path), Some(id)) => Some(TrustBundle::load(id.trust_domain(), path)?),
        (None, _) => dir.bundle().ok(),
        (Some(_), None) => None,
    };
    let verdict = match &bundle {
        Some(b) => match verify_svid(
            leaf,
            chain.get(1..).unwrap_or_default(),
            b,
            &revocations,
            Usage::Client,
            SystemTime::now(),
        ) {
            Ok(_) => Ok(()),
            Err(e) => Err(e.to_string()),
        },
        None => Err("no trust bundle to check against (pass --dir or --bundle)".to_string()),
    };
    let known = store.as_ref().and_then(|s| s.issued(&facts.serial).ok().flatten());
    let status = match &verdict {
        Ok(()) => "valid".to_string(),
        Err(e) => format!("invalid: {e}"),
    };
    match a.output {
        Output::Json => print!(
            "{}",
            output::json(&json!({
                "spiffeId": facts.id.as_ref().map(ToString::to_string),
                "uriSans": facts.uri_sans,
                "serial": facts.serial.to_string(),
                "notBefore": timestamp(unix_seconds(facts.not_before)),
                "notAfter": timestamp(unix_seconds(facts.not_after)),
                "isCa": facts.is_ca,
                "subject": facts.subject,
                "issuer": facts.issuer,
                "chainLength": chain.len(),
                "status": status,
                "valid": verdict.is_ok(),
                "revocationListVersion": version,
                "issuedByThisCa": known.as_ref().map(|k| format!("{:?}", k.kind).to_lowercase()),
            }))
        ),
        Output::Table | Output::Text => {
            let id = facts
                .id
                .as_ref()
                .map_or_else(|| format!("(none: {} URI SANs)", facts.uri_sans), ToString::to_string);
            let rows = vec![
                vec!["SPIFFE ID".into(), id],
                vec!["Serial".into(), facts.serial.to_string()],
                vec!["Not before".into(), timestamp(unix_seconds(facts.not_before))],
                vec!["Not after".into(), timestamp(unix_seconds(facts.not_after))],
                vec!["Subject".into(), facts.subject.clone()],
                vec!["Issuer".into(), facts.issuer.clone()],
                vec!["Chain".into(), format!("{} certificate(s) in the file", chain.len())],
                vec![
                    "Issued here".into(),
                    known.map_or("unknown to this CA".into(), |k| format!("{:?}", k.kind).to_lowercase()),
                ],
                vec!["Status".into(), status],
            ];
            print!("{}", output::table(&["FIELD", "VALUE"], &rows));
        }
    }
    Ok(if verdict.is_ok() { exit::OK } else { exit::FAILED })
}
