//! What can go wrong building an engine, and building one request.
//!
//! Cedar's own errors are large; they are boxed so a `Result` stays small.

use cedar_policy::entities_errors::EntitiesError;
use cedar_policy::{
    CedarSchemaError, ContextCreationError, EntityAttrEvaluationError, ParseErrors, PolicySetError,
    RequestValidationError,
};

/// An [`Engine`](super::Engine) could not be built from a snapshot. The snapshot is
/// refused as a whole; the caller keeps enforcing the last good engine.
#[derive(Debug, thiserror::Error)]
pub enum EngineError {
    /// The compiled-in schema does not parse (a bug of this crate, caught by its tests).
    #[error("the mesh schema does not parse: {0}")]
    Schema(Box<CedarSchemaError>),
    /// A fixed name of the schema does not parse (a bug of this crate).
    #[error("the name `{name}` does not parse: {source}")]
    Name {
        name: &'static str,
        #[source]
        source: Box<ParseErrors>,
    },
    /// Two policies share an `@id`.
    #[error("two policies have the id `{0}`; give every policy a unique `@id`")]
    DuplicatePolicyId(String),
    /// Two registry entries have the same entity id but different facts.
    #[error("the registry lists `{0}` twice with different facts; keep one entry")]
    DuplicateEntity(String),
    /// A registry entry could not become a Cedar entity.
    #[error("registry entry `{id}` is not a valid entity: {source}")]
    Entity {
        id: String,
        #[source]
        source: Box<EntityAttrEvaluationError>,
    },
    /// The registry's entities do not conform to the mesh schema.
    #[error("the registry does not conform to the mesh schema: {0}")]
    Entities(Box<EntitiesError>),
    /// A policy could not be added to a policy set (for example a template).
    #[error("policy `{id}` cannot be evaluated: {source}; only static policies are supported")]
    PolicySet {
        id: String,
        #[source]
        source: Box<PolicySetError>,
    },
}

impl From<CedarSchemaError> for EngineError {
    fn from(error: CedarSchemaError) -> Self {
        Self::Schema(Box::new(error))
    }
}

impl From<EntitiesError> for EngineError {
    fn from(error: EntitiesError) -> Self {
        Self::Entities(Box::new(error))
    }
}

/// One request could not be turned into a Cedar request. The decision is a deny that
/// carries this error; nothing panics and nothing is allowed.
#[derive(Debug, thiserror::Error)]
pub enum RequestError {
    /// Ingress policies guard mesh services only.
    #[error("ingress to the external host `{hostname}:{port}` cannot be authorized; external hosts are egress-only")]
    IngressToExternal { hostname: String, port: u16 },
    /// A principal outside the registry whose SPIFFE ID names no namespace.
    #[error(
        "principal `{0}` is not in the registry and its id names no namespace \
         (expected `spiffe://TRUST-DOMAIN/ns/NAMESPACE/sa/ACCOUNT`)"
    )]
    PrincipalWithoutNamespace(String),
    /// The request time cannot be a Cedar `datetime` (years 0000 to 9999 only).
    #[error("request time `{0}` (seconds since the Unix epoch) is outside the years 0000 to 9999")]
    TimeOutOfRange(i64),
    /// Cedar refused the context.
    #[error("the request context cannot be built: {0}")]
    Context(Box<ContextCreationError>),
    /// Cedar refused the request.
    #[error("the request cannot be built: {0}")]
    Request(Box<RequestValidationError>),
}

impl From<ContextCreationError> for RequestError {
    fn from(error: ContextCreationError) -> Self {
        Self::Context(Box::new(error))
    }
}

impl From<RequestValidationError> for RequestError {
    fn from(error: RequestValidationError) -> Self {
        Self::Request(Box::new(error))
    }
}
