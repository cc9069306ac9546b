//! One authorization decision (facts → `Decision`) as the bundle grows, against the
//! naive way: every policy of the bundle in one Cedar `PolicySet`, evaluated with
//! Cedar's `Authorizer` directly over the same entities and the same request.
//!
//! The generated bundle has 10 policies per namespace, written as real bundles are:
//! namespace-wide permits (`principal in Namespace::"nsK"`), permits to a service of
//! the next namespace, exact-principal and exact-service permits, forbids on paths and
//! headers, and a dry-run forbid. Each namespace has 4 workloads and 3 services.
//! Sizes: 10, 100, 1,000 and 10,000 policies (1 to 1,000 namespaces).
//!
//! The request: a workload of the middle namespace POSTs `/api/orders/42` over h2 to
//! a service of its own namespace, with six ordinary headers (one of them
//! comma-separated) and a source address. Both directions allow it.
//!
//! - `engine_egress` / `engine_ingress`: `Engine::evaluate`, facts to `Decision`.
//! - `naive`: the same facts to a Cedar request with the whole context
//!   (`Engine::cedar_request`), then `Authorizer::is_authorized` over one `PolicySet`
//!   holding every policy of the bundle (both directions, dry-run included).
//! - `engine_egress_address_time` (1,000 policies only): the same, but every
//!   namespace's egress forbid also reads `context.sourceIp` and `context.time`, so
//!   the engine must build those two extension values for the request.
//! - `build`: `Engine::new` for the whole bundle, the cost of a snapshot swap.
//!
//! Run: `cargo bench -p palisade-authz --bench engine -- --warm-up-time 1 --measurement-time 4`

#![expect(clippy::expect_used, reason = "a benchmark whose setup fails has nothing to measure")]

use std::collections::BTreeMap;
use std::hint::black_box;

use cedar_policy::{Authorizer, Policy, PolicyId, PolicySet};
use criterion::{criterion_group, criterion_main, BenchmarkId, Criterion};
use palisade_authz::{
    Action, Direction, Engine, EngineInput, Mode, PolicySource, Protocol, RequestFacts, Resource, ServiceFacts,
    SourceLocation, WorkloadFacts,
};

const POLICIES_PER_NAMESPACE: usize = 10;
const SIZES: [usize; 4] = [10, 100, 1_000, 10_000];

fn workload(ns: usize, w: usize) -> String {
    format!("spiffe://mesh.bench/ns/ns{ns}/sa/w{w}")
}

/// What the egress forbid of every namespace looks at.
#[derive(Debug, Clone, Copy)]
enum Forbid {
    /// The path only.
    Path,
    /// The path, the source address and the time.
    PathAddressTime,
}

/// One namespace's ten policies: five egress, five ingress.
fn namespace_policies(k: usize, namespaces: usize, forbid: Forbid) -> Vec<(Direction, Mode, String)> {
    use Direction::{Egress, Ingress};
    let next = (k + 1) % namespaces;
    let ns = format!("ns{k}");
    let extra = match forbid {
        Forbid::Path => "",
        Forbid::PathAddressTime => {
            r#" || (context has sourceIp && context.sourceIp.isInRange(ip("169.254.0.0/16"))) || context.time < datetime("2020-01-01")"#
        }
    };
    vec![
        (
            Egress,
            Mode::Enforce,
            format!(
                r#"permit(principal in Namespace::"{ns}", action in Action::"http", resource in Namespace::"{ns}");"#
            ),
        ),
        (
            Egress,
            Mode::Enforce,
            format!(
                r#"permit(principal in Namespace::"{ns}", action == Action::"GET", resource == Service::"ns{next}/svc0");"#
            ),
        ),
        (
            Egress,
            Mode::Enforce,
            format!(
                r#"permit(principal == Workload::"{}", action == Action::"POST", resource) when {{ context.path like "/api/*" }};"#,
                workload(k, 1)
            ),
        ),
        (
            Egress,
            Mode::Enforce,
            format!(
                r#"permit(principal == Workload::"{}", action in Action::"http", resource is ExternalHost) when {{ resource.port == 443 }};"#,
                workload(k, 2)
            ),
        ),
        (
            Egress,
            Mode::Enforce,
            format!(
                r#"forbid(principal in Namespace::"{ns}", action, resource) when {{ context.path == "/admin" || context.path like "/admin/*"{extra} }};"#
            ),
        ),
        (
            Ingress,
            Mode::Enforce,
            format!(r#"permit(principal in Namespace::"{ns}", action, resource in Namespace::"{ns}");"#),
        ),
        (
            Ingress,
            Mode::Enforce,
            format!(
                r#"permit(principal, action == Action::"GET", resource == Service::"{ns}/svc1") when {{ principal.hasTag("tier") && principal.getTag("tier") == "frontend" }};"#
            ),
        ),
        (
            Ingress,
            Mode::Enforce,
            format!(
                r#"permit(principal, action == Action::"POST", resource == Service::"{ns}/svc2") when {{ context.path == "/charge" && principal.hasTag("pci") }};"#
            ),
        ),
        (
            Ingress,
            Mode::Enforce,
            format!(
                r#"forbid(principal, action, resource in Namespace::"{ns}") when {{ context.headers.contains("x-role:admin") }};"#
            ),
        ),
        (
            Ingress,
            Mode::DryRun,
            format!(r#"forbid(principal, action == Action::"DELETE", resource in Namespace::"{ns}");"#),
        ),
    ]
}

fn bundle(policies: usize, forbid: Forbid) -> EngineInput {
    let namespaces = policies / POLICIES_PER_NAMESPACE;
    let mut input = EngineInput::default();
    for k in 0..namespaces {
        for w in 0..4 {
            let labels = BTreeMap::from([("tier".to_owned(), "frontend".to_owned())]);
            input.workloads.push(WorkloadFacts {
                spiffe_id: workload(k, w),
                namespace: format!("ns{k}"),
                service_account: format!("w{w}"),
                labels,
            });
        }
        for s in 0..3 {
            input.services.push(ServiceFacts {
                namespace: format!("ns{k}"),
                name: format!("svc{s}"),
                hosts: vec![format!("svc{s}.ns{k}.svc")],
                labels: BTreeMap::new(),
            });
        }
        for (i, (direction, mode, src)) in namespace_policies(k, namespaces, forbid).into_iter().enumerate() {
            let id = format!("ns{k}-p{i}");
            let line = u32::try_from(i + 1).expect("small");
            input.policies.push(PolicySource {
                policy: Policy::parse(Some(PolicyId::new(&id)), &src).expect("generated policy parses"),
                id,
                direction,
                namespace: format!("ns{k}"),
                mode,
                location: SourceLocation {
                    file: format!("policies/ns{k}/bench.cedar").into(),
                    line,
                    column: 1,
                },
            });
        }
    }
    input
}

const HEADERS: &[(&str, &str)] = &[
    ("accept", "application/json"),
    ("user-agent", "bench/1.0"),
    ("x-request-id", "0f8e4c1a-2d3b-4c5d-8e9f-a0b1c2d3e4f5"),
    ("x-role", "user, viewer"),
    ("accept-encoding", "gzip, deflate, br"),
    ("content-type", "application/json"),
];

/// A caller in the middle namespace calling a service of its own namespace.
fn facts<'a>(principal: &'a str, namespace: &'a str) -> RequestFacts<'a> {
    RequestFacts {
        principal,
        action: Action::Post,
        resource: Resource::Service {
            namespace,
            name: "svc2",
        },
        path: "/api/orders/42",
        host: "svc2",
        protocol: Protocol::H2,
        source_ip: Some("10.1.2.3".parse().expect("an address")),
        headers: HEADERS,
        time_unix: 1_795_348_800,
    }
}

fn decisions(c: &mut Criterion) {
    let mut group = c.benchmark_group("decision");
    for size in SIZES {
        let input = bundle(size, Forbid::Path);
        let naive = PolicySet::from_policies(input.policies.iter().map(|p| p.policy.clone())).expect("unique ids");
        let engine = Engine::new(input).expect("the bundle builds");
        let authorizer = Authorizer::new();
        let middle = size / POLICIES_PER_NAMESPACE / 2;
        let namespace = format!("ns{middle}");
        let caller = workload(middle, 1);
        let facts = facts(&caller, &namespace);

        for direction in [Direction::Egress, Direction::Ingress] {
            let decision = engine.evaluate(direction, &facts);
            assert_eq!(
                decision.effect,
                palisade_authz::Effect::Allow,
                "{direction:?}: {decision:?}"
            );
        }

        group.bench_with_input(BenchmarkId::new("engine_egress", size), &facts, |b, facts| {
            b.iter(|| engine.evaluate(Direction::Egress, black_box(facts)));
        });
        group.bench_with_input(BenchmarkId::new("engine_ingress", size), &facts, |b, facts| {
            b.iter(|| engine.evaluate(Direction::Ingress, black_box(facts)));
        });
        group.bench_with_input(BenchmarkId::new("naive", size), &facts, |b, facts| {
            b.iter(|| {
                let request = engine.cedar_request(black_box(facts)).expect("builds");
                authorizer.is_authorized(&request, &naive, engine.entities())
            });
        });
    }
    let input = bundle(1_000, Forbid::PathAddressTime);
    let engine = Engine::new(input).expect("the bundle builds");
    let (caller, namespace) = (workload(50, 1), "ns50".to_owned());
    let facts = facts(&caller, &namespace);
    assert_eq!(
        engine.evaluate(Direction::Egress, &facts).effect,
        palisade_authz::Effect::Allow
    );
    group.bench_with_input(
        BenchmarkId::new("engine_egress_address_time", 1_000),
        &facts,
        |b, facts| {
            b.iter(|| engine.evaluate(Direction::Egress, black_box(facts)));
        },
    );
    group.finish();
}

fn builds(c: &mut Criterion) {
    let mut group = c.benchmark_group("build");
    group.sample_size(10);
    for size in [1_000, 10_000] {
        let input = bundle(size, Forbid::Path);
        group.bench_with_input(BenchmarkId::new("engine_new", size), &input, |b, input| {
            b.iter(|| Engine::new(input.clone()).expect("the bundle builds"));
        });
    }
    group.finish();
}

criterion_group!(benches, decisions, builds);
criterion_main!(benches);
