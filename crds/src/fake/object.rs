//! What an object's fields mean to the server: the type and metadata it sets,
//! which part of an object a write may change, server-side apply's merge and
//! its `managedFields` record.

use serde_json::{json, Map, Value};

use super::kinds::Kind;
use super::store::{ApiError, Part};

/// `body` as an object of `kind`, with its `apiVersion` and `kind` set.
pub(super) fn typed(kind: &Kind, mut body: Value) -> Result<Value, ApiError> {
    let Some(fields) = body.as_object_mut() else {
        return Err(ApiError::bad_request("the body is not a JSON object"));
    };
    for (field, expected) in [("apiVersion", kind.api_version()), ("kind", kind.kind.to_owned())] {
        match fields.get(field).and_then(Value::as_str) {
            Some(given) if given != expected => {
                return Err(ApiError::bad_request(format!("{field} `{given}` is not `{expected}`")))
            }
            _ => {
                fields.insert(field.to_owned(), json!(expected));
            }
        }
    }
    Ok(body)
}

pub(super) fn check_name(body: &Value, name: &str) -> Result<(), ApiError> {
    match text(body, "name") {
        Some(given) if given != name => Err(ApiError::bad_request(format!(
            "the name of the object ({given}) does not match the name on the URL ({name})"
        ))),
        _ => Ok(()),
    }
}

/// The object a write leaves: `body` for the part written, `current` for the rest.
pub(super) fn merged(kind: &Kind, current: &Value, body: Value, part: Part, merge: bool) -> Value {
    match part {
        Part::Status => {
            let mut next = current.clone();
            if let Some(fields) = next.as_object_mut() {
                match body.get("status") {
                    Some(status) => fields.insert("status".to_owned(), status.clone()),
                    None => fields.remove("status"),
                };
            }
            next
        }
        Part::Main => {
            let mut body = body;
            if let Some(fields) = body.as_object_mut() {
                if kind.status_subresource {
                    fields.remove("status");
                }
            }
            let mut next = if merge {
                let mut next = current.clone();
                merge_into(&mut next, body);
                next
            } else {
                let mut next = body;
                if let (Some(status), true) = (current.get("status"), kind.status_subresource) {
                    if let Some(fields) = next.as_object_mut() {
                        fields.insert("status".to_owned(), status.clone());
                    }
                }
                next
            };
            carry_server_fields(current, &mut next);
            next
        }
    }
}

/// Merges `patch` into `target`: maps key by key, anything else replaced.
pub(super) fn merge_into(target: &mut Value, patch: Value) {
    match (target, patch) {
        (Value::Object(target), Value::Object(patch)) => {
            for (field, value) in patch {
                match target.get_mut(&field) {
                    Some(existing) if existing.is_object() && value.is_object() => merge_into(existing, value),
                    _ => {
                        target.insert(field, value);
                    }
                }
            }
        }
        (target, patch) => *target = patch,
    }
}

/// Copies what only the server sets from `current` into `next`.
pub(super) fn carry_server_fields(current: &Value, next: &mut Value) {
    for field in [
        "uid",
        "creationTimestamp",
        "generation",
        "resourceVersion",
        "managedFields",
    ] {
        match current.get("metadata").and_then(|m| m.get(field)) {
            Some(value) => set_meta(next, field, value.clone()),
            None => {
                if let Some(meta) = next.get_mut("metadata").and_then(Value::as_object_mut) {
                    meta.remove(field);
                }
            }
        }
    }
}

/// Whether anything but metadata and status changed.
pub(super) fn spec_changed(current: &Value, next: &Value) -> bool {
    let strip = |v: &Value| -> Map<String, Value> {
        let mut fields = v.as_object().cloned().unwrap_or_default();
        fields.remove("metadata");
        fields.remove("status");
        fields
    };
    strip(current) != strip(next)
}

pub(super) fn bump_generation(object: &mut Value) {
    let generation = object
        .get("metadata")
        .and_then(|m| m.get("generation"))
        .and_then(Value::as_i64)
        .unwrap_or(0);
    set_meta(object, "generation", json!(generation.saturating_add(1)));
}

pub(super) fn has_manager(object: &Value, manager: &str, part: Part) -> bool {
    managed_fields(object).is_some_and(|entries| entries.iter().any(|e| is_entry_of(e, manager, part)))
}

pub(super) fn managed_fields(object: &Value) -> Option<&Vec<Value>> {
    object.get("metadata")?.get("managedFields")?.as_array()
}

pub(super) fn is_entry_of(entry: &Value, manager: &str, part: Part) -> bool {
    let subresource = entry.get("subresource").and_then(Value::as_str).unwrap_or("");
    entry.get("manager").and_then(Value::as_str) == Some(manager)
        && subresource == if part == Part::Status { "status" } else { "" }
}

/// Records that `manager` applied `part` now (one entry per manager and part).
pub(super) fn record_manager(object: &mut Value, kind: &Kind, manager: &str, part: Part) {
    let mut entries: Vec<Value> = managed_fields(object)
        .map(|entries| {
            entries
                .iter()
                .filter(|e| !is_entry_of(e, manager, part))
                .cloned()
                .collect()
        })
        .unwrap_or_default();
    let mut entry = json!({
        "manager": manager,
        "operation": "Apply",
        "apiVersion": kind.api_version(),
        "time": now(),
        "fieldsType": "FieldsV1",
        "fieldsV1": {},
    });
    if let (Part::Status, Some(fields)) = (part, entry.as_object_mut()) {
        fields.insert("subresource".to_owned(), json!("status"));
    }
    entries.push(entry);
    set_meta(object, "managedFields", Value::Array(entries));
}

/// A string field of `metadata`.
pub fn text<'a>(object: &'a Value, field: &str) -> Option<&'a str> {
    object.get("metadata")?.get(field)?.as_str()
}

pub(super) fn set_meta(object: &mut Value, field: &str, value: Value) {
    let Some(fields) = object.as_object_mut() else {
        return;
    };
    let metadata = fields.entry("metadata").or_insert_with(|| json!({}));
    if let Some(metadata) = metadata.as_object_mut() {
        metadata.insert(field.to_owned(), value);
    }
}

/// Now, RFC 3339 to the second, as Kubernetes writes times.
pub fn now() -> String {
    let now = k8s_openapi::jiff::Timestamp::now();
    k8s_openapi::jiff::Timestamp::from_second(now.as_second())
        .unwrap_or(now)
        .to_string()
}
