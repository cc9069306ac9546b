//! The Cedar engine: one bundle snapshot in, one decision per request and direction out.
//!
//! An [`Engine`] is built once per snapshot ([`Engine::new`]), off the hot path: the
//! registry becomes Cedar entities checked against the mesh [`schema`], and the
//! policies are split into small pre-built policy sets (see `partition.rs`). Then
//! [`Engine::evaluate`] is a pure function of the engine and the request: no I/O, no
//! policy set built, no entity store copied.
//!
//! # The rules
//!
//! - **Egress** evaluates only the policies owned by the caller's namespace, and of
//!   those only the namespace's general policies plus the ones scoped to exactly this
//!   caller (`principal == Workload::"…"`). **Ingress** evaluates only the policies
//!   owned by the callee's namespace: its general ones plus the ones scoped to exactly
//!   this service (`resource == Service::"NS/NAME"`). Of those, only the policies whose
//!   action scope admits the request's action. External hosts are egress-only;
//!   ingress to one is a deny with an error.
//! - **Default deny; a satisfied forbid wins; any evaluation error of an enforced
//!   policy is a deny**, even when the erroring policy is a permit and another permit
//!   is satisfied. (Cedar alone would skip the erroring policy, and an erroring forbid
//!   would then widen access.)
//! - A request that cannot be turned into a Cedar request (a time outside Cedar's
//!   `datetime` range, an unregistered principal whose id names no namespace) is a
//!   deny with an error.
//!
//! # How a decision stays small
//!
//! Cedar evaluates every policy of the set it is given, rebuilding each condition on
//! every request, so the engine hands it as little as it exactly can:
//!
//! 1. the owning namespace's policies, split by exact principal or resource
//!    (`partition.rs`);
//! 2. of those, the ones whose action scope admits the action;
//! 3. for registered principals (egress) and services (ingress), with the scope
//!    constraints already decided against the snapshot's entities removed, and the
//!    policies they exclude left out (`scope.rs`);
//! 4. with a context holding only what those policies read of it (`context_reads.rs`).
//!
//! Each step is exact: `tests/scoping.rs` checks the engine against Cedar evaluating
//! the owning namespace's whole policy list over the whole context.
//!
//! # Dry run
//!
//! Dry-run policies are evaluated in their own policy set, and only when the enforced
//! policies allow. The definition: a request is a **dry-run deny** when evaluating the
//! enforced and dry-run policies *together* (with the same rules: forbid wins, an error
//! denies) would deny it while the enforced policies alone allow it. Since the
//! enforced policies allowed (a permit holds, no forbid holds, nothing errored), that
//! is exactly: a dry-run forbid is satisfied, or a dry-run policy errors. Those
//! policies are `dry_run_determining`; a dry-run error is reported there and never in
//! `errors`, which holds only what made the enforced decision a deny. Consequences: a
//! dry-run permit never changes anything (it cannot make a request deny), and a request
//! the enforced policies deny is never a dry-run deny (it is a deny).

mod context;
mod context_reads;
mod decision;
mod entities;
mod error;
mod extension_values;
pub mod model;
mod partition;
mod route;
mod schema;
mod scope;

#[cfg(test)]
mod tests;

use cedar_policy::{Authorizer, Entities, PolicySet, Request};

use context_reads::Reads;
use decision::Catalog;
use route::{Registry, RegistryParams, Route};

pub use error::{EngineError, RequestError};
pub use model::{
    Action, Decision, DeterminingPolicy, Direction, Effect, EngineInput, ExternalHostFacts, Mode, PolicySource,
    Protocol, RequestFacts, Resource, ServiceFacts, SourceLocation, WorkloadFacts,
};
pub use schema::{schema, SCHEMA_SRC};

/// Decides requests for one bundle snapshot. Cheap to share (`Arc<Engine>`); build a
/// new one for a new snapshot.
#[derive(Debug)]
pub struct Engine {
    entities: Entities,
    registry: Registry,
    catalog: Catalog,
    authorizer: Authorizer,
}

impl Engine {
    /// Builds the entities and the partitioned policy sets of one snapshot.
    ///
    /// The policies are expected to have been validated against the schema by the
    /// bundle loader; the engine does not validate them again, and a policy that errors
    /// at evaluation time denies.
    ///
    /// # Errors
    ///
    /// When the registry does not conform to the schema, lists one id twice with
    /// different facts, or two policies share an `@id`.
    pub fn new(input: EngineInput) -> Result<Self, EngineError> {
        let schema = schema::schema()?;
        let names = entities::Names::new()?;
        let entities = entities::build(&names, &input, &schema)?;
        let snapshot = partition::Snapshot {
            names: &names,
            entities: &entities,
            workloads: &input.workloads,
            services: &input.services,
        };
        let mut partitioned = partition::partition(&snapshot, &input.policies)?;
        let catalog = Catalog::new(std::mem::take(&mut partitioned.policies));
        let registry = Registry::new(RegistryParams {
            names,
            workloads: &input.workloads,
            services: &input.services,
            external_hosts: &input.external_hosts,
            partitioned,
        });
        Ok(Self {
            entities,
            registry,
            catalog,
            authorizer: Authorizer::new(),
        })
    }

    /// Decides one request for one direction. Never fails: anything that cannot be
    /// evaluated is a deny carrying its error.
    pub fn evaluate(&self, direction: Direction, facts: &RequestFacts<'_>) -> Decision {
        match self.try_evaluate(direction, facts) {
            Ok(decision) => decision,
            Err(error) => decision::refused(&error),
        }
    }

    fn try_evaluate(&self, direction: Direction, facts: &RequestFacts<'_>) -> Result<Decision, RequestError> {
        let Route {
            principal,
            resource,
            sets,
        } = self.registry.route(direction, facts)?;
        let request = self.request(principal, resource, facts, &sets.reads)?;
        let mut decision = decision::enforced(&self.authorize(&request, &sets.enforce), &self.catalog);
        if let (Effect::Allow, Some(dry_run)) = (decision.effect, &sets.dry_run) {
            decision::add_dry_run(&mut decision, &self.authorize(&request, dry_run), &self.catalog);
        }
        Ok(decision)
    }

    fn authorize(&self, request: &Request, policies: &PolicySet) -> cedar_policy::Response {
        self.authorizer.is_authorized(request, policies, &self.entities)
    }

    fn request(
        &self,
        principal: cedar_policy::EntityUid,
        resource: cedar_policy::EntityUid,
        facts: &RequestFacts<'_>,
        reads: &Reads,
    ) -> Result<Request, RequestError> {
        let action = self.registry.names().action(facts.action).clone();
        let context = context::build(facts, reads)?;
        Ok(Request::new(principal, action, resource, context, None)?)
    }

    /// The Cedar request for these facts with the whole `RequestContext`, for tools that
    /// evaluate policies themselves (explain, benchmarks). [`evaluate`](Self::evaluate)
    /// builds only what its policy set reads of the context.
    ///
    /// # Errors
    ///
    /// When the context cannot be built, as for [`evaluate`](Self::evaluate).
    pub fn cedar_request(&self, facts: &RequestFacts<'_>) -> Result<Request, RequestError> {
        let principal = self.registry.principal(facts.principal);
        let resource = self.registry.resource(facts.resource);
        self.request(principal, resource, facts, &Reads::all())
    }

    /// The snapshot's entities: namespaces, workloads, services, external hosts and
    /// the schema's actions.
    pub fn entities(&self) -> &Entities {
        &self.entities
    }
}
