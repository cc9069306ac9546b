//! `palisade audit serve|verify|query|report`: the ingest service, and the commands
//! that read the store directly.

use std::collections::VecDeque;
use std::sync::Arc;
use std::time::SystemTime;

use palisade_audit::chain::{Head, Verification};
use palisade_audit::ingest::{self, audit_service_id};
use palisade_audit::query::{self, Filter, KindFilter, QueryFormat};
use palisade_audit::record::{to_hex, Effect, Side, StoredRecord};
use palisade_audit::report::redact::display_database;
use palisade_audit::report::{ReportBuilder, ReportFormat, Window};
use palisade_audit::store::Store;
use palisade_ca::TrustDomain;
use palisade_proxy::admin::{self, Page, Pages};

use super::identity::ServiceIdentity;
use super::{shutdown_signal, UsageError};
use crate::cli::{AuditCommand, AuditQuery, AuditReport, AuditServe, AuditVerify, Output, QueryOutput};
use crate::exit;
use crate::output;

/// Records read from the store per page.
const PAGE: usize = 10_000;

pub async fn run(command: AuditCommand) -> anyhow::Result<u8> {
    match command {
        AuditCommand::Serve(a) => serve(a).await,
        AuditCommand::Verify(a) => verify(a).await,
        AuditCommand::Query(a) => query(a).await,
        AuditCommand::Report(a) => report(a).await,
    }
}

/// Opens an existing store for reading: a SQLite URL naming no file is a typo, not
/// an empty log (only `audit serve` creates the database).
async fn open_existing(url: &str) -> anyhow::Result<Store> {
    if let Some(path) = url.strip_prefix("sqlite://") {
        if path != ":memory:" && !std::path::Path::new(path).exists() {
            return Err(UsageError(format!(
                "there is no audit database at `{path}`; check --database (the file `palisade audit serve --database {url}` writes)"
            ))
            .into());
        }
    }
    open(url).await
}

async fn open(url: &str) -> anyhow::Result<Store> {
    Store::open(url).await.map_err(|e| UsageError(e.to_string()).into())
}

async fn serve(a: AuditServe) -> anyhow::Result<u8> {
    let store = open(&a.database.database).await?;
    let td = TrustDomain::new(&a.trust_domain)?;
    let id = audit_service_id(&td)?;
    let identity = ServiceIdentity::start(&a.ca, &a.trust_bundle, &td, id.clone(), &a.first_svid).await?;
    let listener = tokio::net::TcpListener::bind(a.listen)
        .await
        .map_err(|e| anyhow::anyhow!("cannot listen on {}: {e}; is another process using it?", a.listen))?;
    let bound = listener.local_addr()?;
    let admin_listener = std::net::TcpListener::bind(a.admin)
        .map_err(|e| anyhow::anyhow!("cannot listen on {} (admin): {e}", a.admin))?;
    let sink = Arc::new(ingest::StoreSink::new(store));
    admin::serve(
        admin_listener,
        Arc::new(AuditPages {
            sink: Arc::clone(&sink),
        }),
    )?;
    println!(
        "palisade audit service {id}: database {}, admin on {}, listening on {bound}",
        redact(&a.database.database),
        a.admin
    );
    ingest::serve(
        ingest::ServeParams {
            listener,
            resolver: Arc::clone(&identity.resolver),
            trust: Arc::clone(&identity.trust),
            sink,
        },
        shutdown_signal(),
    )
    .await?;
    drop(identity);
    Ok(exit::OK)
}

/// The audit service's admin port.
struct AuditPages {
    sink: Arc<ingest::StoreSink>,
}

impl Pages for AuditPages {
    fn page(&self, path: &str) -> Option<Page> {
        Some(match path {
            "/live" | "/ready" => Page::text(200, "ready\n"),
            "/metrics" => Page::text(200, self.sink.render_metrics()),
            _ => return None,
        })
    }
}

async fn verify(a: AuditVerify) -> anyhow::Result<u8> {
    let store = open_existing(&a.database.database).await?;
    let verification = store.verify().await?;
    let head = store.head().await?;
    if a.output == Output::Json {
        let mut value = serde_json::to_value(&verification)?;
        if let (Some(object), Some(head)) = (value.as_object_mut(), &head) {
            object.insert("headSeq".into(), head.seq.into());
            object.insert("headHash".into(), to_hex(&head.hash).into());
        }
        print!("{}", output::json(&value));
    } else {
        print_verification(&verification, head);
    }
    Ok(if verification.is_intact() {
        exit::OK
    } else {
        exit::FAILED
    })
}

fn print_verification(v: &Verification, head: Option<Head>) {
    match &v.broken {
        None => {
            let head = head.map_or_else(
                || "the store is empty".to_owned(),
                |head| format!("head: record {}, hash {}", head.seq, to_hex(&head.hash)),
            );
            println!("chain intact: {} records verified; {head}", v.records);
        }
        Some(broken) => {
            println!(
                "chain BROKEN at record {} (id `{}`, sender {}): {}",
                broken.seq, broken.record_id, broken.sender, broken.problem
            );
            println!(
                "{} records before it verified; nothing from record {} on can be trusted",
                broken.seq.saturating_sub(1),
                broken.seq
            );
        }
    }
}

async fn query(a: AuditQuery) -> anyhow::Result<u8> {
    let store = open_existing(&a.database.database).await?;
    let now = now_micros();
    let filter = Filter {
        since_micros: a
            .since
            .as_deref()
            .map(|s| query::parse_since(s, now))
            .transpose()
            .map_err(|e| flag("since", e))?,
        until_micros: a
            .until
            .as_deref()
            .map(|s| query::parse_until(s, now))
            .transpose()
            .map_err(|e| flag("until", e))?,
        effect: a
            .effect
            .as_deref()
            .map(str::parse::<Effect>)
            .transpose()
            .map_err(usage)?,
        side: a.side.as_deref().map(str::parse::<Side>).transpose().map_err(usage)?,
        source: a.source,
        dest: a.dest,
        kind: a
            .kind
            .as_deref()
            .map(str::parse::<KindFilter>)
            .transpose()
            .map_err(usage)?,
    };
    // The newest `limit` matches, printed oldest first.
    let mut newest = VecDeque::with_capacity(a.limit.min(PAGE));
    let mut after = 0;
    loop {
        let page = store.page(&filter, after, PAGE).await?;
        let Some(last) = page.last() else { break };
        after = last.seq;
        for record in page {
            if newest.len() == a.limit {
                newest.pop_front();
            }
            if a.limit > 0 {
                newest.push_back(record);
            }
        }
    }
    let records: Vec<StoredRecord> = newest.into();
    let format = match a.output {
        QueryOutput::Table => QueryFormat::Table,
        QueryOutput::Json => QueryFormat::Json,
        QueryOutput::Csv => QueryFormat::Csv,
    };
    print!("{}", query::render(&records, format));
    if records.is_empty() && a.output == QueryOutput::Table {
        eprintln!("no records match");
    }
    Ok(exit::OK)
}

async fn report(a: AuditReport) -> anyhow::Result<u8> {
    let format: ReportFormat = a.format.parse().map_err(usage)?;
    let store = open_existing(&a.database.database).await?;
    let now = now_micros();
    let since = query::parse_since(&a.since, now).map_err(|e| flag("since", e))?;
    let until = match &a.until {
        Some(u) => query::parse_until(u, now).map_err(|e| flag("until", e))?,
        None => now,
    };
    if until < since {
        return Err(UsageError("--until is before --since; the window is empty".into()).into());
    }
    // One pass over the whole store: the chain is checked end to end while the
    // window's records are counted.
    let mut builder = ReportBuilder::new(Window {
        since_micros: since,
        until_micros: until,
    });
    let verification = store.verify_with(|record| builder.add(record)).await?;
    let report = builder.finish(verification, now, &redact(&a.database.database));
    let text = report.render(format);
    if a.out.as_os_str() == "-" {
        print!("{text}");
    } else {
        std::fs::write(&a.out, text)
            .map_err(|e| anyhow::anyhow!("cannot write the report to `{}`: {e}", a.out.display()))?;
        eprint!("{}", summary(&report));
        eprintln!("report written to {}", a.out.display());
    }
    Ok(exit::OK)
}

fn flag(name: &str, e: impl std::fmt::Display) -> anyhow::Error {
    UsageError(format!("--{name}: {e}")).into()
}

fn usage(e: impl std::fmt::Display) -> anyhow::Error {
    UsageError(e.to_string()).into()
}

fn now_micros() -> i64 {
    let micros = SystemTime::now()
        .duration_since(SystemTime::UNIX_EPOCH)
        .unwrap_or_default()
        .as_micros();
    i64::try_from(micros).unwrap_or(i64::MAX)
}

/// A database URL without its password, for printing.
fn redact(url: &str) -> String {
    display_database(url)
}

/// The report's headline figures, for the terminal.
fn summary(report: &palisade_audit::report::Report) -> String {
    use palisade_audit::record::ExternalKind;
    let t = &report.totals;
    let decisions = |effect: Effect| -> u64 { t.decisions.values().filter_map(|by| by.get(&effect)).sum() };
    let external = |kind: ExternalKind| t.external.get(&kind).copied().unwrap_or(0);
    let coverage = report
        .dual_approval
        .coverage_percent
        .map_or_else(|| "n/a".to_owned(), |p| format!("{p:.1} %"));
    let chain = match &report.chain.broken {
        None => format!("intact ({} records)", report.chain.records),
        Some(b) => format!("BROKEN at record {}: {}", b.seq, b.problem),
    };
    format!(
        "{} records from {} to {}\n  decisions: {} allowed, {} denied, {} dry-run denials\n  dual approval: {coverage} of {} requests allowed at ingress\n  external: {} allowlisted, {} BlackHole, {} Passthrough\n  chain: {chain}\n",
        t.records,
        report.since,
        report.until,
        decisions(Effect::Allow),
        decisions(Effect::Deny),
        decisions(Effect::DryRunDeny),
        report.dual_approval.ingress_allowed,
        external(ExternalKind::Allowlisted),
        external(ExternalKind::BlackHole),
        external(ExternalKind::Passthrough),
    )
}
