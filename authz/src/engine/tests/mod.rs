//! The engine's specification, as tables of requests and the decisions they get.
//!
//! Each test builds a small bundle in code with [`Bundle`] and states, row by row,
//! what a request gets. Policies are written exactly as in a bundle file, with their
//! `@id` and, for dry-run, `@mode("dry-run")`.

mod requests;
mod rules;
mod scoping;

use std::collections::BTreeMap;

use cedar_policy::Policy;

use super::model::*;
use super::Engine;

pub(super) const FRONTEND: &str = "spiffe://mesh.test/ns/shop/sa/frontend";
pub(super) const CHECKOUT: &str = "spiffe://mesh.test/ns/shop/sa/checkout";
pub(super) const MONITOR: &str = "spiffe://mesh.test/ns/ops/sa/monitor";
/// In the `shop` namespace by its id, but not in the registry.
pub(super) const STRANGER: &str = "spiffe://mesh.test/ns/shop/sa/stranger";

pub(super) const REVIEWS: Resource<'static> = Resource::Service {
    namespace: "shop",
    name: "reviews",
};
pub(super) const CATALOG: Resource<'static> = Resource::Service {
    namespace: "shop",
    name: "catalog",
};
pub(super) const PAYMENTS: Resource<'static> = Resource::Service {
    namespace: "pay",
    name: "payments",
};
pub(super) const STRIPE: Resource<'static> = Resource::External {
    hostname: "api.stripe.com",
    port: 443,
};

/// 2026-11-22T12:00:00Z
pub(super) const NOON: i64 = 1_795_348_800;

/// A bundle built in code.
#[derive(Debug, Default)]
pub(super) struct Bundle {
    input: EngineInput,
}

impl Bundle {
    /// The registry every test uses: frontend and checkout (`pci=true`) in `shop`,
    /// monitor in `ops`; services shop/reviews, shop/catalog, pay/payments; the
    /// external host api.stripe.com:443.
    pub(super) fn shop() -> Self {
        Self::default()
            .workload(FRONTEND, &[("app", "frontend")])
            .workload(CHECKOUT, &[("app", "checkout"), ("pci", "true")])
            .workload(MONITOR, &[])
            .service("shop", "reviews", &[])
            .service("shop", "catalog", &[])
            .service("pay", "payments", &[("pci", "true")])
            .external_host("api.stripe.com", 443)
    }

    pub(super) fn workload(mut self, spiffe_id: &str, labels: &[(&str, &str)]) -> Self {
        let (namespace, service_account) = spiffe_id
            .strip_prefix("spiffe://mesh.test/ns/")
            .and_then(|rest| rest.split_once("/sa/"))
            .unwrap();
        self.input.workloads.push(WorkloadFacts {
            spiffe_id: spiffe_id.to_owned(),
            namespace: namespace.to_owned(),
            service_account: service_account.to_owned(),
            labels: labels_of(labels),
        });
        self
    }

    pub(super) fn service(mut self, namespace: &str, name: &str, labels: &[(&str, &str)]) -> Self {
        self.input.services.push(ServiceFacts {
            namespace: namespace.to_owned(),
            name: name.to_owned(),
            hosts: vec![format!("{name}.{namespace}.svc")],
            labels: labels_of(labels),
        });
        self
    }

    pub(super) fn external_host(mut self, hostname: &str, port: u16) -> Self {
        let host = ExternalHostFacts {
            hostname: hostname.to_owned(),
            port,
        };
        self.input.external_hosts.push(host);
        self
    }

    /// An egress policy of `namespace`, at line N of `policies/NS/egress/test.cedar`
    /// where N counts the bundle's policies from 1.
    pub(super) fn egress(self, namespace: &str, src: &str) -> Self {
        self.policy(Direction::Egress, namespace, src)
    }

    pub(super) fn ingress(self, namespace: &str, src: &str) -> Self {
        self.policy(Direction::Ingress, namespace, src)
    }

    fn policy(self, direction: Direction, namespace: &str, src: &str) -> Self {
        let dir = match direction {
            Direction::Egress => "egress",
            Direction::Ingress => "ingress",
        };
        let file = format!("policies/{namespace}/{dir}/test.cedar");
        let line = u32::try_from(self.input.policies.len()).unwrap() + 1;
        self.policy_at(
            direction,
            namespace,
            SourceLocation {
                file: file.into(),
                line,
                column: 1,
            },
            src,
        )
    }

    pub(super) fn policy_at(
        mut self,
        direction: Direction,
        namespace: &str,
        location: SourceLocation,
        src: &str,
    ) -> Self {
        self.input.policies.push(source(direction, namespace, location, src));
        self
    }

    pub(super) fn input(&self) -> &EngineInput {
        &self.input
    }

    pub(super) fn build(self) -> Engine {
        Engine::new(self.input).unwrap()
    }
}

fn labels_of(labels: &[(&str, &str)]) -> BTreeMap<String, String> {
    labels.iter().map(|&(k, v)| (k.to_owned(), v.to_owned())).collect()
}

/// What the bundle loader makes of one policy: its `@id`, its `@mode`.
pub(super) fn source(direction: Direction, namespace: &str, location: SourceLocation, src: &str) -> PolicySource {
    let policy = Policy::parse(None, src).unwrap();
    let id = policy.annotation("id").unwrap().to_owned();
    let mode = match policy.annotation("mode") {
        Some("dry-run") => Mode::DryRun,
        None => Mode::Enforce,
        Some(other) => panic!("unknown mode {other}"),
    };
    PolicySource {
        id,
        direction,
        namespace: namespace.to_owned(),
        mode,
        location,
        policy,
    }
}

/// A plain request at noon with no headers; change fields with `..request(...)`.
pub(super) fn request(
    principal: &'static str,
    action: Action,
    resource: Resource<'static>,
    path: &'static str,
) -> RequestFacts<'static> {
    let host = match resource {
        Resource::Service { name, .. } => name,
        Resource::External { hostname, .. } => hostname,
    };
    RequestFacts {
        principal,
        action,
        resource,
        path,
        host,
        protocol: Protocol::Http1,
        source_ip: None,
        headers: &[],
        time_unix: NOON,
    }
}

/// One row of a decision table.
#[derive(Debug)]
pub(super) struct Case {
    pub(super) name: &'static str,
    pub(super) direction: Direction,
    pub(super) facts: RequestFacts<'static>,
    pub(super) effect: Effect,
    /// The determining policies' ids, sorted.
    pub(super) determining: &'static [&'static str],
}

/// Checks every row, reporting all mismatches at once.
pub(super) fn check(engine: &Engine, cases: &[Case]) {
    let mut failures = Vec::new();
    for case in cases {
        let decision = engine.evaluate(case.direction, &case.facts);
        let ids: Vec<&str> = decision.determining.iter().map(|p| p.id.as_str()).collect();
        if decision.effect != case.effect || ids != case.determining {
            failures.push(format!(
                "{}: expected {:?} by {:?}, got {:?} by {:?} (errors {:?})",
                case.name, case.effect, case.determining, decision.effect, ids, decision.errors
            ));
        }
    }
    assert!(failures.is_empty(), "\n{}", failures.join("\n"));
}

/// Shorthand for a row.
pub(super) fn case(
    name: &'static str,
    direction: Direction,
    facts: RequestFacts<'static>,
    effect: Effect,
    determining: &'static [&'static str],
) -> Case {
    Case {
        name,
        direction,
        facts,
        effect,
        determining,
    }
}
