//! `palisade policy …`

use std::time::SystemTime;

use anyhow::Context;
use palisade_authz::engine::{Decision, Effect, Engine};
use palisade_ca::svid::unix_seconds;
use palisade_policy::analyze::explain::{explain, parse_method, parse_target, Explanation, Query};
use palisade_policy::analyze::mismatch::{analyze, to_dot, EdgeKind};
use palisade_policy::analyze::test::{run as run_tests, word};
use palisade_policy::format::{format_bundle, FileFormat};
use palisade_policy::Bundle;
use serde_json::json;

use super::UsageError;
use crate::cli::{self, AnalyzeOutput, Output, PolicyCommand};
use crate::exit;
use crate::output;

pub async fn run(command: PolicyCommand) -> anyhow::Result<u8> {
    match command {
        PolicyCommand::Validate(a) => validate(&a),
        PolicyCommand::Fmt(a) => fmt(&a),
        PolicyCommand::Explain(a) => explain_cmd(&a),
        PolicyCommand::Test(a) => test(&a),
        PolicyCommand::Analyze(a) => analyze_cmd(&a),
        PolicyCommand::Export(a) => export(&a),
    }
}

/// Loads a bundle, printing every problem; `None` when it is invalid.
fn load(dir: &std::path::Path) -> Option<Bundle> {
    match palisade_policy::load(dir) {
        Ok(b) => Some(b),
        Err(diagnostics) => {
            eprint!("{diagnostics}");
            eprintln!("bundle `{}` is invalid: nothing was loaded", dir.display());
            None
        }
    }
}

fn engine(bundle: &Bundle) -> anyhow::Result<Engine> {
    Engine::new(bundle.engine_input()).context("cannot build the authorization engine from the bundle")
}

fn now() -> i64 {
    unix_seconds(SystemTime::now())
}

fn export(a: &cli::PolicyExport) -> anyhow::Result<u8> {
    let cli::ExportFormat::Crds = a.format;
    let (files, bundle) = match palisade_policy::load_with_files(&a.dir) {
        Ok(loaded) => loaded,
        Err(diagnostics) => {
            eprint!("{diagnostics}");
            eprintln!("bundle `{}` is invalid: nothing was exported", a.dir.display());
            return Ok(exit::FAILED);
        }
    };
    let options = palisade_crds::export::ExportOptions {
        image: a.image.clone(),
        ca: a.ca.clone(),
        control_plane: a.control_plane.clone(),
    };
    let exported = palisade_crds::export::export(&files, &bundle, &options)
        .with_context(|| format!("bundle `{}` cannot be exported", a.dir.display()))?;
    print!("{}", palisade_crds::export::render_yaml(&exported)?);
    Ok(exit::OK)
}

fn validate(a: &cli::PolicyDir) -> anyhow::Result<u8> {
    let Some(bundle) = load(&a.dir) else {
        return Ok(exit::FAILED);
    };
    engine(&bundle)?;
    let policies = bundle.policies();
    let namespaces: std::collections::BTreeSet<&str> = policies.iter().map(|p| p.namespace()).collect();
    println!(
        "bundle `{}` is valid: {} policies in {} namespaces, {} workloads, {} services, {} egress rules; digest {}",
        a.dir.display(),
        policies.len(),
        namespaces.len(),
        bundle.registry().workloads().len(),
        bundle.registry().services().len(),
        bundle.egress().rules().len(),
        bundle.digest()
    );
    Ok(exit::OK)
}

fn fmt(a: &cli::PolicyFmt) -> anyhow::Result<u8> {
    let results = format_bundle(&a.dir, a.check).with_context(|| format!("cannot format `{}`", a.dir.display()))?;
    let mut code = exit::OK;
    for r in &results {
        match r {
            FileFormat::Unchanged(_) => {}
            FileFormat::Changed(f) if a.check => {
                println!("would reformat {}", f.display());
                code = exit::FAILED;
            }
            FileFormat::Changed(f) => println!("reformatted {}", f.display()),
            FileFormat::Failed(f, e) => {
                eprintln!("error: cannot format {}: {e}", f.display());
                code = exit::FAILED;
            }
        }
    }
    eprintln!("{} policy files checked", results.len());
    Ok(code)
}

fn explain_cmd(a: &cli::PolicyExplain) -> anyhow::Result<u8> {
    let action = parse_method(&a.method).ok_or_else(|| {
        UsageError(format!("`{}` is not a method the schema knows: GET, HEAD, POST, PUT, PATCH, DELETE, OPTIONS or CONNECT (upper-case)", a.method))
    })?;
    let to = parse_target(&a.to).map_err(UsageError)?;
    let headers = a
        .headers
        .iter()
        .map(|h| h.split_once('=').map(|(k, v)| (k.trim().to_string(), v.to_string())))
        .collect::<Option<Vec<_>>>()
        .ok_or_else(|| UsageError("write each --header as NAME=VALUE".into()))?;
    let Some(bundle) = load(&a.dir) else {
        return Ok(exit::FAILED);
    };
    let engine = engine(&bundle)?;
    let query = Query {
        from: &a.from,
        to: &to,
        action,
        target: &a.path,
        headers: &headers,
        now_unix: now(),
    };
    let x = explain(&bundle, &engine, &query).map_err(|e| UsageError(e.to_string()))?;
    if bundle.registry().workload(&a.from).is_none() {
        eprintln!(
            "warning: `{}` is not in workloads.yaml; it is decided as an unknown workload",
            a.from
        );
    }
    match a.output {
        Output::Json => print!("{}", output::json(&explanation_json(&x))),
        Output::Text | Output::Table => print!("{}", explanation_text(&a.from, &a.to, &a.method, &x)),
    }
    Ok(exit::OK)
}

/// The explanation for people.
pub fn explanation_text(from: &str, to: &str, method: &str, x: &Explanation) -> String {
    let mut out = format!("request  {from} -> {to}  {method} {}  (host {})\n", x.path, x.host);
    out.push_str(&side("egress", &x.egress));
    match (&x.ingress, x.allowlisted) {
        (Some(d), _) => out.push_str(&side("ingress", d)),
        (None, Some(listed)) => {
            out.push_str(&format!(
                "egress.yaml  {}\n",
                if listed {
                    "allowlisted for this workload"
                } else {
                    "NOT allowlisted for this workload (BlackHole)"
                }
            ));
        }
        (None, None) => {}
    }
    out.push_str(&format!("overall  {}\n", word(x.overall).to_uppercase()));
    out
}

fn side(name: &str, d: &Decision) -> String {
    let mut out = format!("{name:<8} {}", word(d.effect).to_uppercase());
    if d.determining.is_empty() {
        if d.effect == Effect::Deny && d.errors.is_empty() {
            out.push_str("  (no permit matched: default deny)");
        }
    } else {
        let by: Vec<String> = d
            .determining
            .iter()
            .map(|p| format!("{} ({}:{})", p.id, p.location.file, p.location.line))
            .collect();
        out.push_str(&format!("  by {}", by.join(", ")));
    }
    out.push('\n');
    for p in &d.dry_run_determining {
        out.push_str(&format!(
            "         dry-run: would deny by {} ({}:{})\n",
            p.id, p.location.file, p.location.line
        ));
    }
    for e in &d.errors {
        out.push_str(&format!("         error: {e}\n"));
    }
    out
}

fn decision_json(d: &Decision) -> serde_json::Value {
    let policies = |list: &[palisade_authz::engine::DeterminingPolicy]| -> Vec<serde_json::Value> {
        list.iter()
            .map(|p| json!({"id": p.id, "file": &*p.location.file, "line": p.location.line, "column": p.location.column}))
            .collect()
    };
    json!({
        "decision": word(d.effect),
        "dryRunDeny": d.dry_run_deny,
        "determiningPolicies": policies(&d.determining),
        "dryRunPolicies": policies(&d.dry_run_determining),
        "errors": d.errors,
    })
}

fn explanation_json(x: &Explanation) -> serde_json::Value {
    json!({
        "path": x.path,
        "host": x.host,
        "egress": decision_json(&x.egress),
        "ingress": x.ingress.as_ref().map(decision_json),
        "allowlisted": x.allowlisted,
        "overall": word(x.overall),
    })
}

fn test(a: &cli::PolicyDir) -> anyhow::Result<u8> {
    let Some(bundle) = load(&a.dir) else {
        return Ok(exit::FAILED);
    };
    let cases = match palisade_policy::testcases::load(&a.dir) {
        Ok(c) => c,
        Err(diagnostics) => {
            eprint!("{diagnostics}");
            return Ok(exit::FAILED);
        }
    };
    let engine = engine(&bundle)?;
    let results = run_tests(&bundle, &engine, &cases, now());
    let mut failed = 0;
    for r in &results {
        if r.passed() {
            println!("ok    {}", r.case.name);
            continue;
        }
        failed += 1;
        println!(
            "FAIL  {} ({}:{})",
            r.case.name, r.case.location.file, r.case.location.line
        );
        for f in &r.failures {
            println!("      {f}");
        }
        if let Ok(x) = &r.outcome {
            let to = match &r.case.to {
                palisade_policy::testcases::Target::Service { namespace, name } => format!("{namespace}/{name}"),
                palisade_policy::testcases::Target::External { host, port } => {
                    port.map_or_else(|| host.clone(), |p| format!("{host}:{p}"))
                }
            };
            for line in explanation_text(
                r.case.from.as_str(),
                &to,
                &format!("{:?}", r.case.action).to_uppercase(),
                x,
            )
            .lines()
            {
                println!("      | {line}");
            }
        }
    }
    println!("{} passed, {} failed", results.len() - failed, failed);
    Ok(if failed == 0 && !results.is_empty() {
        exit::OK
    } else {
        exit::FAILED
    })
}

fn analyze_cmd(a: &cli::PolicyAnalyze) -> anyhow::Result<u8> {
    let Some(bundle) = load(&a.dir) else {
        return Ok(exit::FAILED);
    };
    let engine = engine(&bundle)?;
    let edges = analyze(&bundle.engine_input(), &engine, now());
    match a.output {
        AnalyzeOutput::Dot => print!("{}", to_dot(&edges)),
        AnalyzeOutput::Json => {
            let list: Vec<_> = edges
                .iter()
                .map(|e| json!({"kind": e.kind.label(), "from": e.from, "to": e.to, "method": e.method, "paths": e.paths}))
                .collect();
            print!("{}", output::json(&json!({"edges": list})));
        }
        AnalyzeOutput::Table => {
            let rows: Vec<Vec<String>> = edges
                .iter()
                .map(|e| {
                    vec![
                        e.kind.label().into(),
                        e.from.clone(),
                        e.to.clone(),
                        e.method.into(),
                        e.paths.join(" "),
                    ]
                })
                .collect();
            print!("{}", output::table(&["KIND", "FROM", "TO", "METHOD", "PATHS"], &rows));
            let count = |k| edges.iter().filter(|e| e.kind == k).count();
            eprintln!(
                "{} allowed, {} egress-only mismatches, {} ingress-only grants",
                count(EdgeKind::Allowed),
                count(EdgeKind::EgressOnly),
                count(EdgeKind::IngressOnly)
            );
        }
    }
    Ok(exit::OK)
}
