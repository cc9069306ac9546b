//! Running a bundle's policy tests (`DIR/tests/*.yaml`).

use palisade_authz::engine::{Effect, Engine};

use super::explain::{explain, ExplainError, Explanation, Query};
use crate::testcases::TestCase;
use crate::Bundle;

/// What one case did.
#[derive(Debug)]
pub struct CaseResult<'a> {
    pub case: &'a TestCase,
    pub outcome: Result<Explanation, ExplainError>,
    /// What differed from the expectation (empty: passed).
    pub failures: Vec<String>,
}

impl CaseResult<'_> {
    pub fn passed(&self) -> bool {
        self.failures.is_empty()
    }
}

/// Runs every case against the bundle.
pub fn run<'a>(bundle: &Bundle, engine: &Engine, cases: &'a [TestCase], now_unix: i64) -> Vec<CaseResult<'a>> {
    cases
        .iter()
        .map(|case| run_one(bundle, engine, case, now_unix))
        .collect()
}

fn run_one<'a>(bundle: &Bundle, engine: &Engine, case: &'a TestCase, now_unix: i64) -> CaseResult<'a> {
    let headers: Vec<(String, String)> = case.headers.iter().map(|(k, v)| (k.clone(), v.clone())).collect();
    let query = Query {
        from: case.from.as_str(),
        to: &case.to,
        action: case.action,
        target: &case.path,
        headers: &headers,
        now_unix,
    };
    let outcome = explain(bundle, engine, &query);
    let mut failures = Vec::new();
    match &outcome {
        Err(e) => failures.push(format!("could not be evaluated: {e}")),
        Ok(x) => {
            let differs = |side: &str, expected: Effect, got: Effect| {
                (expected != got).then(|| format!("{side}: expected {}, got {}", word(expected), word(got)))
            };
            failures.extend(differs("egress", case.expect.egress, x.egress.effect));
            match (case.expect.ingress, &x.ingress) {
                (Some(expected), Some(got)) => failures.extend(differs("ingress", expected, got.effect)),
                (Some(_), None) => {
                    failures.push("ingress: expected a decision, but the destination is external".into())
                }
                (None, _) => {}
            }
            failures.extend(differs("overall", case.expect.overall, x.overall));
        }
    }
    CaseResult {
        case,
        outcome,
        failures,
    }
}

/// `allow` or `deny`.
pub fn word(effect: Effect) -> &'static str {
    match effect {
        Effect::Allow => "allow",
        Effect::Deny => "deny",
    }
}
