//! The JSON format: the [`Report`] serialized as it is, pretty-printed, with
//! camelCase keys, times as RFC 3339 strings, hashes as hex, and every enum in its
//! one spelling (`egress`, `dry_run_deny`, `blackhole`, …).

use super::model::Report;

impl Report {
    /// The report as pretty-printed JSON.
    pub fn to_json(&self) -> String {
        // Every map key is a string or a unit enum and every value plain data, so
        // serialization cannot fail; should it ever, the output says so as JSON.
        serde_json::to_string_pretty(self).unwrap_or_else(|err| {
            serde_json::json!({ "error": format!("the report could not be serialized: {err}") }).to_string()
        })
    }
}
