//! The mesh's Cedar schema, compiled into the crate so that the engine, the bundle
//! loader and the CLI all validate against the same text.

use cedar_policy::{CedarSchemaError, Schema};

/// The schema source, `policy/palisade.cedarschema` (human-readable Cedar schema).
pub const SCHEMA_SRC: &str = include_str!("../../../policy/palisade.cedarschema");

/// Parses [`SCHEMA_SRC`]. Warnings (such as shadowed names) are dropped: the schema
/// is ours and its tests keep it free of them.
///
/// # Errors
///
/// Only if the schema file itself is broken, which the crate's tests rule out.
#[expect(
    clippy::result_large_err,
    reason = "called once per bundle; Cedar's own error keeps its diagnostics for the loader"
)]
pub fn schema() -> Result<Schema, CedarSchemaError> {
    Schema::from_cedarschema_str(SCHEMA_SRC).map(|(schema, _warnings)| schema)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_schema_parses_without_warnings() {
        let (_, warnings) = Schema::from_cedarschema_str(SCHEMA_SRC).unwrap();
        let warnings: Vec<String> = warnings.map(|w| w.to_string()).collect();
        assert!(warnings.is_empty(), "{warnings:?}");
    }

    #[test]
    fn the_schema_knows_every_action_the_engine_sends() {
        let schema = schema().unwrap();
        let actions: Vec<String> = schema.actions().map(ToString::to_string).collect();
        for name in [
            "GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "OPTIONS", "connect", "http",
        ] {
            let uid = format!("Action::\"{name}\"");
            assert!(actions.contains(&uid), "{uid} missing from {actions:?}");
        }
    }
}
