//! The objects, in memory: what etcd and the API server's storage layer keep.
//!
//! One global revision counter gives every write its `resourceVersion`; every
//! change is kept in a bounded history that watches resume from (a watch from
//! before it gets 410 Gone, as from a compacted etcd). A write that changes
//! nothing is not a write: no new revision, no event.

use std::collections::{BTreeMap, VecDeque};

use serde_json::{json, Value};

use super::kinds::Kind;
use super::object::{
    bump_generation, carry_server_fields, check_name, has_manager, merged, now, record_manager, set_meta, spec_changed,
    text, typed,
};

/// How many changes are kept for watches to resume from.
pub const HISTORY: usize = 4096;

/// Where an object is kept.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
struct Key {
    group: &'static str,
    plural: &'static str,
    namespace: String,
    name: String,
}

/// What happened to an object, as a watch says it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum EventType {
    Added,
    Modified,
    Deleted,
}

impl EventType {
    /// `ADDED`, `MODIFIED` or `DELETED`.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Added => "ADDED",
            Self::Modified => "MODIFIED",
            Self::Deleted => "DELETED",
        }
    }
}

/// One write, for watches.
#[derive(Debug, Clone)]
pub struct Change {
    pub revision: u64,
    pub kind: &'static Kind,
    pub namespace: String,
    pub event: EventType,
    pub object: Value,
}

/// Which part of an object a write is for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Part {
    /// The resource itself: everything but a status subresource's `.status`.
    Main,
    /// The `/status` subresource: `.status` only.
    Status,
}

/// A refusal, answered as a Kubernetes `Status` object.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ApiError {
    pub code: u16,
    pub reason: &'static str,
    pub message: String,
}

impl ApiError {
    pub fn new(code: u16, reason: &'static str, message: impl Into<String>) -> Self {
        Self {
            code,
            reason,
            message: message.into(),
        }
    }

    pub fn bad_request(message: impl Into<String>) -> Self {
        Self::new(400, "BadRequest", message)
    }

    pub fn not_found(kind: &Kind, name: &str) -> Self {
        Self::new(
            404,
            "NotFound",
            format!("{}.{} \"{name}\" not found", kind.plural, kind.group),
        )
    }

    fn conflict(kind: &Kind, name: &str) -> Self {
        let message = format!(
            "Operation cannot be fulfilled on {}.{} \"{name}\": the object has been modified; please apply your changes to the latest version and try again",
            kind.plural, kind.group
        );
        Self::new(409, "Conflict", message)
    }

    /// The `Status` object of this refusal.
    pub fn to_status(&self) -> Value {
        json!({
            "kind": "Status",
            "apiVersion": "v1",
            "metadata": {},
            "status": "Failure",
            "message": self.message,
            "reason": self.reason,
            "code": self.code,
        })
    }
}

/// Every object, the revision counter and the recent changes.
#[derive(Debug, Default)]
pub struct Store {
    objects: BTreeMap<Key, Value>,
    revision: u64,
    history: VecDeque<Change>,
    /// The newest revision no longer in `history`.
    compacted: u64,
    uids: u64,
}

impl Store {
    /// The revision of the last write.
    pub fn revision(&self) -> u64 {
        self.revision
    }

    /// The objects of `kind` in `namespace` (all namespaces when `None`), in name order.
    pub fn list(&self, kind: &Kind, namespace: Option<&str>) -> Vec<Value> {
        self.objects
            .iter()
            .filter(|(key, _)| key.group == kind.group && key.plural == kind.plural)
            .filter(|(key, _)| namespace.is_none_or(|ns| key.namespace == ns))
            .map(|(_, object)| object.clone())
            .collect()
    }

    pub fn get(&self, kind: &'static Kind, namespace: Option<&str>, name: &str) -> Result<Value, ApiError> {
        let key = key(kind, namespace, name)?;
        self.objects
            .get(&key)
            .cloned()
            .ok_or_else(|| ApiError::not_found(kind, name))
    }

    /// POST: a new object (409 when it exists). A status subresource's `.status` is dropped.
    pub fn create(&mut self, kind: &'static Kind, namespace: Option<&str>, body: Value) -> Result<Value, ApiError> {
        let mut object = typed(kind, body)?;
        if kind.status_subresource {
            if let Some(fields) = object.as_object_mut() {
                fields.remove("status");
            }
        }
        self.insert_new(kind, namespace, object, None)
    }

    /// PUT: replaces the object (or its status), refusing a stale `resourceVersion` with 409.
    pub fn replace(
        &mut self,
        kind: &'static Kind,
        namespace: Option<&str>,
        name: &str,
        body: Value,
        part: Part,
    ) -> Result<Value, ApiError> {
        let body = typed(kind, body)?;
        check_name(&body, name)?;
        let current = self.get(kind, namespace, name)?;
        if let Some(expected) = text(&body, "resourceVersion") {
            if Some(expected) != text(&current, "resourceVersion") {
                return Err(ApiError::conflict(kind, name));
            }
        }
        let next = merged(kind, &current, body, part, false);
        self.update(kind, namespace, name, current, next, part)
    }

    /// PATCH with `application/apply-patch+yaml`: server-side apply by `manager`.
    /// On `/status` the patch's `.status` replaces the object's; on the resource
    /// the patch is merged in (maps merged, everything else replaced). An object
    /// that does not exist is created (not through `/status`).
    pub fn apply(
        &mut self,
        kind: &'static Kind,
        namespace: Option<&str>,
        name: &str,
        patch: Value,
        manager: &str,
        part: Part,
    ) -> Result<Value, ApiError> {
        let patch = typed(kind, patch)?;
        check_name(&patch, name)?;
        let current = match self.get(kind, namespace, name) {
            Ok(current) => current,
            Err(e) if e.code == 404 && part == Part::Main => {
                let mut object = patch;
                set_meta(&mut object, "name", json!(name));
                return self.insert_new(kind, namespace, object, Some((manager, part)));
            }
            Err(e) => return Err(e),
        };
        if let Some(expected) = text(&patch, "resourceVersion") {
            if Some(expected) != text(&current, "resourceVersion") {
                return Err(ApiError::conflict(kind, name));
            }
        }
        let mut next = merged(kind, &current, patch, part, true);
        let known = has_manager(&current, manager, part);
        if !known || next != current {
            record_manager(&mut next, kind, manager, part);
        }
        self.update(kind, namespace, name, current, next, part)
    }

    /// DELETE: removes the object; the deleted object is returned.
    pub fn delete(&mut self, kind: &'static Kind, namespace: Option<&str>, name: &str) -> Result<Value, ApiError> {
        let key = key(kind, namespace, name)?;
        let mut object = self
            .objects
            .remove(&key)
            .ok_or_else(|| ApiError::not_found(kind, name))?;
        self.revision += 1;
        set_meta(&mut object, "resourceVersion", json!(self.revision.to_string()));
        self.record(kind, &key.namespace, EventType::Deleted, &object);
        Ok(object)
    }

    /// Creates or replaces a whole object, as a test sets a cluster up (what
    /// kubectl, kubelet and other controllers would write): a status given
    /// replaces the stored one, none keeps it.
    pub fn put(&mut self, object: Value) -> Result<Value, ApiError> {
        let api_version = object.get("apiVersion").and_then(Value::as_str).unwrap_or_default();
        let kind_name = object.get("kind").and_then(Value::as_str).unwrap_or_default();
        let kind = super::kinds::by_object(api_version, kind_name)
            .ok_or_else(|| ApiError::bad_request(format!("the fake does not serve `{api_version}` `{kind_name}`")))?;
        let namespace = text(&object, "namespace").map(str::to_owned);
        let name = text(&object, "name")
            .ok_or_else(|| ApiError::bad_request("metadata.name is required"))?
            .to_owned();
        match self.get(kind, namespace.as_deref(), &name) {
            Ok(current) => {
                let mut next = object;
                carry_server_fields(&current, &mut next);
                if let (Some(status), Some(fields)) = (current.get("status"), next.as_object_mut()) {
                    fields.entry("status").or_insert_with(|| status.clone());
                }
                self.update(kind, namespace.as_deref(), &name, current, next, Part::Main)
            }
            Err(e) if e.code == 404 => self.insert_new(kind, namespace.as_deref(), object, None),
            Err(e) => Err(e),
        }
    }

    /// The changes of `kind` (in `namespace`, or all) after `revision`; 410 Gone
    /// when some of them are no longer kept.
    pub fn changes_since(&self, kind: &Kind, namespace: Option<&str>, revision: u64) -> Result<Vec<Change>, ApiError> {
        if revision < self.compacted {
            let message = format!("too old resource version: {revision} ({})", self.compacted);
            return Err(ApiError::new(410, "Expired", message));
        }
        Ok(self
            .history
            .iter()
            .filter(|c| c.revision > revision && *c.kind == *kind)
            .filter(|c| namespace.is_none_or(|ns| c.namespace == ns))
            .cloned()
            .collect())
    }

    fn insert_new(
        &mut self,
        kind: &'static Kind,
        namespace: Option<&str>,
        mut object: Value,
        manager: Option<(&str, Part)>,
    ) -> Result<Value, ApiError> {
        let name = text(&object, "name")
            .ok_or_else(|| ApiError::bad_request("metadata.name is required (generateName is not supported)"))?
            .to_owned();
        let namespace = resolve_namespace(kind, namespace, text(&object, "namespace"))?;
        let key = key(kind, namespace.as_deref(), &name)?;
        if self.objects.contains_key(&key) {
            let message = format!("{}.{} \"{name}\" already exists", kind.plural, kind.group);
            return Err(ApiError::new(409, "AlreadyExists", message));
        }
        self.revision += 1;
        self.uids += 1;
        if let Some(ns) = &namespace {
            set_meta(&mut object, "namespace", json!(ns));
        }
        set_meta(
            &mut object,
            "uid",
            json!(format!("00000000-0000-4000-8000-{:012x}", self.uids)),
        );
        set_meta(&mut object, "creationTimestamp", json!(now()));
        set_meta(&mut object, "generation", json!(1));
        set_meta(&mut object, "resourceVersion", json!(self.revision.to_string()));
        if let Some((manager, part)) = manager {
            record_manager(&mut object, kind, manager, part);
        }
        self.objects.insert(key.clone(), object.clone());
        self.record(kind, &key.namespace, EventType::Added, &object);
        Ok(object)
    }

    /// Stores `next` in place of `current` unless nothing changed.
    fn update(
        &mut self,
        kind: &'static Kind,
        namespace: Option<&str>,
        name: &str,
        current: Value,
        mut next: Value,
        part: Part,
    ) -> Result<Value, ApiError> {
        if part == Part::Main && spec_changed(&current, &next) {
            bump_generation(&mut next);
        }
        if next == current {
            return Ok(current);
        }
        self.revision += 1;
        set_meta(&mut next, "resourceVersion", json!(self.revision.to_string()));
        let key = key(kind, namespace, name)?;
        self.objects.insert(key.clone(), next.clone());
        self.record(kind, &key.namespace, EventType::Modified, &next);
        Ok(next)
    }

    fn record(&mut self, kind: &'static Kind, namespace: &str, event: EventType, object: &Value) {
        if self.history.len() >= HISTORY {
            if let Some(old) = self.history.pop_front() {
                self.compacted = old.revision;
            }
        }
        self.history.push_back(Change {
            revision: self.revision,
            kind,
            namespace: namespace.to_owned(),
            event,
            object: object.clone(),
        });
    }
}

/// The key of an object; a namespace is required exactly for namespaced kinds.
fn key(kind: &'static Kind, namespace: Option<&str>, name: &str) -> Result<Key, ApiError> {
    let namespace = match (kind.namespaced, namespace) {
        (true, Some(ns)) => ns.to_owned(),
        (false, None) => String::new(),
        (true, None) => return Err(ApiError::bad_request(format!("{} are namespaced", kind.plural))),
        (false, Some(_)) => return Err(ApiError::not_found(kind, name)),
    };
    Ok(Key {
        group: kind.group,
        plural: kind.plural,
        namespace,
        name: name.to_owned(),
    })
}

/// The namespace from the path, else the body's; they must agree.
fn resolve_namespace(kind: &Kind, path: Option<&str>, body: Option<&str>) -> Result<Option<String>, ApiError> {
    match (kind.namespaced, path, body) {
        (false, _, _) => Ok(None),
        (true, Some(p), Some(b)) if p != b => Err(ApiError::bad_request(format!(
            "the namespace of the object ({b}) does not match the namespace on the request ({p})"
        ))),
        (true, Some(ns), _) | (true, None, Some(ns)) => Ok(Some(ns.to_owned())),
        (true, None, None) => Err(ApiError::bad_request("metadata.namespace is required")),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::fake::kinds::by_path;

    fn policies() -> &'static Kind {
        by_path("palisade.dev", "v1alpha1", "cedarpolicies").unwrap()
    }

    fn policy(text: &str) -> Value {
        json!({"metadata": {"name": "p", "namespace": "web"}, "spec": {"direction": "egress", "policy": text}})
    }

    #[test]
    fn a_create_sets_what_the_server_owns_and_a_second_create_conflicts() {
        let mut store = Store::default();
        let created = store.create(policies(), Some("web"), policy("a")).unwrap();
        assert_eq!(text(&created, "resourceVersion"), Some("1"));
        assert_eq!(created["metadata"]["generation"], 1);
        assert!(text(&created, "uid").is_some() && text(&created, "creationTimestamp").is_some());
        assert_eq!(created["kind"], "CedarPolicy");
        let again = store.create(policies(), Some("web"), policy("a")).unwrap_err();
        assert_eq!((again.code, again.reason), (409, "AlreadyExists"));
    }

    #[test]
    fn a_replace_with_a_stale_resource_version_conflicts() {
        let mut store = Store::default();
        store.create(policies(), Some("web"), policy("a")).unwrap();
        let mut body = policy("b");
        body["metadata"]["resourceVersion"] = json!("1");
        let replaced = store
            .replace(policies(), Some("web"), "p", body.clone(), Part::Main)
            .unwrap();
        assert_eq!(replaced["metadata"]["generation"], 2);
        let stale = store
            .replace(policies(), Some("web"), "p", body, Part::Main)
            .unwrap_err();
        assert_eq!(stale.code, 409);
    }

    #[test]
    fn a_status_apply_changes_only_the_status_and_never_the_generation() {
        let mut store = Store::default();
        store.create(policies(), Some("web"), policy("a")).unwrap();
        let mut patch = policy("changed");
        patch["status"] = json!({"observedGeneration": 1});
        let applied = store
            .apply(policies(), Some("web"), "p", patch.clone(), "me", Part::Status)
            .unwrap();
        assert_eq!(applied["spec"]["policy"], "a");
        assert_eq!(applied["status"]["observedGeneration"], 1);
        assert_eq!(applied["metadata"]["generation"], 1);
        assert_eq!(applied["metadata"]["managedFields"][0]["manager"], "me");
        assert_eq!(applied["metadata"]["managedFields"][0]["subresource"], "status");

        let revision = store.revision();
        store
            .apply(policies(), Some("web"), "p", patch, "me", Part::Status)
            .unwrap();
        assert_eq!(store.revision(), revision, "an apply that changes nothing is no write");
    }

    #[test]
    fn a_watch_from_before_the_kept_history_is_gone() {
        let mut store = Store::default();
        for i in 0..=HISTORY {
            store
                .put(
                    json!({"apiVersion": "v1", "kind": "Pod", "metadata": {"name": format!("p{i}"), "namespace": "a"}}),
                )
                .unwrap();
        }
        assert_eq!(
            store
                .changes_since(&crate::fake::kinds::KINDS[0], None, 0)
                .unwrap_err()
                .code,
            410
        );
        let recent = store.changes_since(&crate::fake::kinds::KINDS[0], Some("a"), store.revision() - 2);
        assert_eq!(recent.unwrap().len(), 2);
    }
}
