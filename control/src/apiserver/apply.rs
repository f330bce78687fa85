//! Server-side apply (`PATCH` with `Content-Type: application/apply-patch+yaml`).
//!
//! The applied configuration is a partial object naming the fields one *field manager* (the
//! `fieldManager` query parameter: `kubectl`, a controller's name…) wants to own. After
//! `k8s.io/apimachinery`'s structured-merge-diff, as far as Flotilla goes:
//!
//! - the fields of the applied configuration become that manager's, recorded in
//!   `metadata.managedFields` as a `FieldsV1` set with `operation: Apply`;
//! - a field another manager owns with a *different* value is a conflict: 409 with one
//!   `FieldManagerConflict` cause per field, unless `force=true`, which takes the field over;
//! - a field the manager applied before and leaves out now is removed from the object, unless
//!   another manager also owns it;
//! - lists merge as the strategic-merge table in [`super::patch::strategy`] says: by key
//!   (`containers` by `name`, …), as sets of scalars (`finalizers`), or atomically (`args`);
//!   maps merge key by key.
//!
//! Ordinary updates and patches of an object that has `managedFields` record their changes
//! as `operation: Update` entries ([`record_update`]), so an apply that would undo
//! `kubectl scale` or `kubectl edit` conflicts. A create whose client names its manager
//! (`fieldManager`, which kubectl always sends) records it ([`record_create`]). What
//! Kubernetes does and this does not: a create without `fieldManager` (the kube crate's
//! default) records no entry, and neither does a write to an object without entries, so such
//! fields are unowned and the first apply takes them without a conflict. This keeps the
//! bulk-create path free of field-set work.
//!
//! Everything here is pure; [`super::api::Api::apply`] reads and writes the store.

use std::collections::BTreeSet;

use serde_json::{Map, Value, json};

use super::objects;
use super::patch::{self, ListStrategy};

/// One field path in `FieldsV1` notation: `f:<field>`, `k:<json of the key fields>` (a list
/// element by key), `v:<json value>` (an element of a set of scalars) and `.` (the list
/// element itself), from the object root.
pub type FieldPath = Vec<String>;

/// A set of owned field paths.
pub type FieldSet = BTreeSet<FieldPath>;

/// What one apply request asks for.
#[derive(Debug, Clone)]
pub struct ApplyRequest<'a> {
    /// The object's kind, for the list merge strategies.
    pub kind: &'a str,
    /// `apiVersion` recorded in the manager's entry.
    pub api_version: &'a str,
    /// The `fieldManager`.
    pub manager: &'a str,
    /// `force=true`: take conflicting fields over instead of failing.
    pub force: bool,
    /// The subresource written, e.g. `Some("status")` for an apply to the status subresource.
    pub subresource: Option<&'a str>,
    /// The kind has a status subresource, so an apply to the main resource does not own
    /// `status` (the write drops it) and an apply to `status` owns nothing else.
    pub has_status: bool,
}

/// Why an apply was refused.
#[derive(Debug, Clone, PartialEq)]
pub enum ApplyError {
    /// The applied configuration is malformed (400 Bad Request).
    BadRequest(String),
    /// Fields owned by other managers would change (409 Conflict).
    Conflicts(Vec<Conflict>),
}

/// A field the applied configuration would change that another manager owns.
#[derive(Debug, Clone, PartialEq)]
pub struct Conflict {
    /// The other manager.
    pub manager: String,
    /// The `apiVersion` of the other manager's entry.
    pub api_version: String,
    /// The field, as Kubernetes prints it: `.spec.containers[name="web"].image`.
    pub field: String,
}

impl Conflict {
    /// `conflict with "kubectl-edit" using apps/v1`, the message of its Status cause.
    pub fn message(&self) -> String {
        format!(
            "conflict with \"{}\" using {}",
            self.manager, self.api_version
        )
    }
}

/// Fields an applied configuration never owns: identity and server-set metadata.
const IGNORED_METADATA: &[&str] = &[
    "name",
    "namespace",
    "generateName",
    "uid",
    "resourceVersion",
    "generation",
    "creationTimestamp",
    "deletionTimestamp",
    "deletionGracePeriodSeconds",
    "selfLink",
    "managedFields",
];

/// Applies `applied` (the request body, already parsed) for `req.manager` to `live` (`None`
/// when the object does not exist yet) and returns the object to store, `managedFields`
/// updated. The result is not validated; that is the caller's job.
pub fn apply(
    live: Option<&Value>,
    applied: Value,
    req: &ApplyRequest,
) -> Result<Value, ApplyError> {
    let Value::Object(mut applied) = applied else {
        return Err(ApplyError::BadRequest(
            "the applied configuration must be an object".into(),
        ));
    };
    for field in ["apiVersion", "kind"] {
        if applied
            .get(field)
            .and_then(Value::as_str)
            .is_none_or(str::is_empty)
        {
            return Err(ApplyError::BadRequest(format!(
                "{field} must be set in an applied configuration"
            )));
        }
    }
    if applied
        .get("metadata")
        .and_then(|m| m.get("managedFields"))
        .is_some_and(|m| !m.is_null())
    {
        return Err(ApplyError::BadRequest(
            "metadata.managedFields must be nil in an applied configuration".into(),
        ));
    }
    strip_nulls(&mut applied);
    let applied = Value::Object(applied);
    let mut owned = field_set(req.kind, &applied)?;
    owned.retain(|p| in_scope(p, req));

    let mut entries = live.map(managed_entries).unwrap_or_default();
    let mine = entries
        .iter()
        .position(|e| e.is(req.manager, "Apply", req.subresource));
    let previous = mine.map(|i| entries.remove(i));
    let before = previous
        .as_ref()
        .map(|e| e.fields.clone())
        .unwrap_or_default();

    // Conflicts: fields another manager owns whose value the applied configuration changes.
    let mut taken: Vec<Vec<FieldPath>> = vec![Vec::new(); entries.len()];
    if let Some(live) = live {
        for (entry, taken) in entries.iter().zip(&mut taken) {
            for path in owned.intersection(&entry.fields) {
                if is_leaf_value(path) && value_at(&applied, path) != value_at(live, path) {
                    taken.push(path.clone());
                }
            }
        }
    }
    // kube-apiserver's upgrade from client-side apply: kubectl's first server-side apply takes
    // over without conflicts the fields its last client-side apply set to what they still are.
    let upgrade = || {
        let Some(allowed) = live.and_then(|l| fields_from_last_applied(req.kind, l)) else {
            return false;
        };
        taken.iter().flatten().all(|p| allowed.contains(p))
    };
    if req.force || (req.manager == KUBECTL_APPLY_MANAGER && upgrade()) {
        for (entry, taken) in entries.iter_mut().zip(&taken) {
            for path in taken {
                entry.fields.remove(path);
            }
        }
    } else {
        let conflicts: Vec<Conflict> = entries
            .iter()
            .zip(&taken)
            .flat_map(|(entry, taken)| {
                taken.iter().map(|p| Conflict {
                    manager: entry.manager.clone(),
                    api_version: entry.api_version.clone(),
                    field: display_path(p),
                })
            })
            .collect();
        if !conflicts.is_empty() {
            return Err(ApplyError::Conflicts(conflicts));
        }
    }

    // Fields this manager gave up and nobody else owns are removed.
    let mut result = live.cloned().unwrap_or_else(|| json!({}));
    let others: FieldSet = entries
        .iter()
        .flat_map(|e| e.fields.iter().cloned())
        .collect();
    let mut removed: Vec<&FieldPath> = before
        .difference(&owned)
        .filter(|p| !others.contains(*p))
        .collect();
    removed.sort_by_key(|p| std::cmp::Reverse(p.len()));
    for path in removed {
        remove_at(&mut result, path);
    }

    let Value::Object(applied_map) = applied else {
        unreachable!("checked above")
    };
    let mut result = patch::merge_applied(req.kind, &result, applied_map)
        .map_err(|e| ApplyError::BadRequest(e.to_string()))?;

    entries.retain(|e| !e.fields.is_empty());
    if !owned.is_empty() {
        let mut entry = ManagedEntry::new(req.manager, "Apply", req, owned);
        // Unchanged ownership keeps its time, so a no-op apply writes nothing.
        if let Some(p) = previous
            && p.fields == entry.fields
            && p.api_version == entry.api_version
        {
            entry.time = p.time;
        }
        let at = mine.unwrap_or(entries.len()).min(entries.len());
        entries.insert(at, entry);
    }
    write_entries(&mut result, &entries);
    Ok(result)
}

/// The field manager of `kubectl apply --server-side`.
const KUBECTL_APPLY_MANAGER: &str = "kubectl";

/// The annotation `kubectl apply` (client-side) keeps its last configuration in.
const LAST_APPLIED: &str = "kubectl.kubernetes.io/last-applied-configuration";

/// The leaf fields of `live`'s last client-side apply configuration that still hold the values
/// it set (kube-apiserver's `lastAppliedManager`); `None` without a usable annotation.
fn fields_from_last_applied(kind: &str, live: &Value) -> Option<FieldSet> {
    let text = live["metadata"]["annotations"][LAST_APPLIED].as_str()?;
    let last: Value = serde_json::from_str(text).ok()?;
    if last["apiVersion"] != live["apiVersion"] {
        return None;
    }
    let mut fields = field_set(kind, &last).ok()?;
    fields.retain(|p| is_leaf_value(p) && value_at(&last, p) == value_at(live, p));
    Some(fields)
}

/// Records an ordinary write (create, update or patch, not apply) by `manager` in the
/// `managedFields` of `new`, when `old` has any (objects no one ever applied are not tracked,
/// which keeps plain writes cheap): the fields whose value the write set or changed become
/// `manager`'s, with `operation: Update`, and leave every other manager's set, so a later
/// apply of a different value conflicts with this manager. Returns whether anything changed.
pub fn record_update(old: &Value, new: &mut Value, manager: &str, req: &ApplyRequest) -> bool {
    if old["metadata"]["managedFields"]
        .as_array()
        .is_none_or(Vec::is_empty)
    {
        return false;
    }
    let (Ok(before), Ok(after)) = (field_set(req.kind, old), field_set(req.kind, new)) else {
        return false;
    };
    let changed: FieldSet = after
        .iter()
        .filter(|p| in_scope(p, req) && value_at(old, p) != value_at(new, p))
        .cloned()
        .collect();
    let gone: FieldSet = before
        .iter()
        .filter(|p| in_scope(p, req) && value_at(new, p).is_none())
        .cloned()
        .collect();
    if changed.is_empty() && gone.is_empty() {
        return false;
    }
    let mut entries = managed_entries(new);
    for entry in &mut entries {
        entry
            .fields
            .retain(|p| !changed.contains(p) && !gone.contains(p));
    }
    let mine = entries
        .iter()
        .position(|e| e.is(manager, "Update", req.subresource));
    let mut fields = mine.map(|i| entries.remove(i).fields).unwrap_or_default();
    fields.extend(changed);
    entries.retain(|e| !e.fields.is_empty());
    if !fields.is_empty() {
        entries.push(ManagedEntry::new(manager, "Update", req, fields));
    }
    write_entries(new, &entries);
    true
}

/// Records a create by a client that named its field manager: every field of the new
/// object (defaults included, `status` left out where it has its own subresource) becomes
/// that manager's, with `operation: Update`, as Kubernetes records it. A create that sends
/// its own `managedFields` keeps them.
pub fn record_create(obj: &mut Value, req: &ApplyRequest) {
    if obj["metadata"]
        .get("managedFields")
        .is_some_and(|m| !m.is_null())
    {
        return;
    }
    let Ok(fields) = field_set(req.kind, obj) else {
        return;
    };
    let fields: FieldSet = fields.into_iter().filter(|p| in_scope(p, req)).collect();
    if fields.is_empty() {
        return;
    }
    write_entries(
        obj,
        &[ManagedEntry::new(req.manager, "Update", req, fields)],
    );
}

/// Stores `entries` as the object's `managedFields` (none: the field goes).
fn write_entries(obj: &mut Value, entries: &[ManagedEntry]) {
    let meta = objects::meta_mut(obj);
    if entries.is_empty() {
        meta.remove("managedFields");
    } else {
        meta.insert(
            "managedFields".into(),
            Value::Array(entries.iter().map(ManagedEntry::to_json).collect()),
        );
    }
}

/// One `metadata.managedFields` entry.
#[derive(Debug, Clone, PartialEq)]
struct ManagedEntry {
    manager: String,
    operation: String,
    api_version: String,
    subresource: Option<String>,
    time: Option<String>,
    fields: FieldSet,
}

impl ManagedEntry {
    /// `manager`'s entry for `operation` on `req`'s subresource, stamped now.
    fn new(manager: &str, operation: &str, req: &ApplyRequest, fields: FieldSet) -> Self {
        ManagedEntry {
            manager: manager.to_string(),
            operation: operation.to_string(),
            api_version: req.api_version.to_string(),
            subresource: req.subresource.map(String::from),
            time: Some(objects::now_rfc3339()),
            fields,
        }
    }

    fn is(&self, manager: &str, operation: &str, subresource: Option<&str>) -> bool {
        self.manager == manager
            && self.operation == operation
            && self.subresource.as_deref().filter(|s| !s.is_empty()) == subresource
    }

    fn to_json(&self) -> Value {
        let mut m = Map::new();
        m.insert("manager".into(), json!(self.manager));
        m.insert("operation".into(), json!(self.operation));
        m.insert("apiVersion".into(), json!(self.api_version));
        if let Some(t) = &self.time {
            m.insert("time".into(), json!(t));
        }
        m.insert("fieldsType".into(), json!("FieldsV1"));
        m.insert("fieldsV1".into(), fields_v1(&self.fields));
        if let Some(s) = &self.subresource {
            m.insert("subresource".into(), json!(s));
        }
        Value::Object(m)
    }
}

/// The `managedFields` entries of an object; malformed entries are skipped.
fn managed_entries(obj: &Value) -> Vec<ManagedEntry> {
    let Some(list) = obj["metadata"]["managedFields"].as_array() else {
        return Vec::new();
    };
    list.iter()
        .filter_map(|e| {
            let text = |k: &str| e.get(k).and_then(Value::as_str).map(String::from);
            Some(ManagedEntry {
                manager: text("manager").unwrap_or_default(),
                operation: text("operation")?,
                api_version: text("apiVersion").unwrap_or_default(),
                subresource: text("subresource").filter(|s| !s.is_empty()),
                time: text("time"),
                fields: parse_fields_v1(e.get("fieldsV1")?),
            })
        })
        .collect()
}

/// Reads a `FieldsV1` tree into a set of paths.
pub fn parse_fields_v1(tree: &Value) -> FieldSet {
    fn walk(node: &Value, path: &mut FieldPath, out: &mut FieldSet) {
        let Some(map) = node.as_object() else { return };
        for (k, child) in map {
            path.push(k.clone());
            if k == "." || child.as_object().is_none_or(Map::is_empty) {
                out.insert(path.clone());
            } else {
                walk(child, path, out);
            }
            path.pop();
        }
    }
    let mut out = FieldSet::new();
    walk(tree, &mut Vec::new(), &mut out);
    out
}

/// Writes a set of paths as a `FieldsV1` tree.
pub fn fields_v1(set: &FieldSet) -> Value {
    let mut root = Map::new();
    for path in set {
        let mut node = &mut root;
        for element in path {
            node = node
                .entry(element.clone())
                .or_insert_with(|| json!({}))
                .as_object_mut()
                .expect("FieldsV1 nodes are objects");
        }
    }
    Value::Object(root)
}

/// The fields an applied configuration of `kind` sets.
pub fn field_set(kind: &str, applied: &Value) -> Result<FieldSet, ApplyError> {
    let mut out = FieldSet::new();
    let Some(map) = applied.as_object() else {
        return Ok(out);
    };
    for (k, v) in map {
        match k.as_str() {
            "apiVersion" | "kind" => {}
            "metadata" => {
                if let Some(meta) = v.as_object() {
                    for (mk, mv) in meta {
                        if !IGNORED_METADATA.contains(&mk.as_str()) {
                            let mut names = vec!["metadata", mk.as_str()];
                            let mut path = vec!["f:metadata".to_string(), format!("f:{mk}")];
                            walk_value(kind, mv, &mut names, &mut path, &mut out)?;
                        }
                    }
                }
            }
            _ => {
                let mut names = vec![k.as_str()];
                let mut path = vec![format!("f:{k}")];
                walk_value(kind, v, &mut names, &mut path, &mut out)?;
            }
        }
    }
    Ok(out)
}

fn walk_value<'v>(
    kind: &str,
    value: &'v Value,
    names: &mut Vec<&'v str>,
    path: &mut FieldPath,
    out: &mut FieldSet,
) -> Result<(), ApplyError> {
    match value {
        Value::Object(map) if !map.is_empty() => {
            for (k, v) in map {
                names.push(k);
                path.push(format!("f:{k}"));
                walk_value(kind, v, names, path, out)?;
                path.pop();
                names.pop();
            }
        }
        Value::Array(items) => match patch::strategy(kind, names) {
            ListStrategy::Replace => {
                out.insert(path.clone());
            }
            ListStrategy::MergePrimitive => {
                for item in items {
                    path.push(format!("v:{item}"));
                    out.insert(path.clone());
                    path.pop();
                }
            }
            ListStrategy::MergeByKey(key) => {
                for item in items {
                    let Some(id) = item.get(key).filter(|v| !v.is_null()) else {
                        return Err(ApplyError::BadRequest(format!(
                            "{}: an element has no \"{key}\", the key of this list",
                            display_path(path)
                        )));
                    };
                    path.push(format!("k:{}", json!({ key: id })));
                    path.push(".".into());
                    out.insert(path.clone());
                    path.pop();
                    if let Value::Object(fields) = item {
                        for (k, v) in fields {
                            names.push(k);
                            path.push(format!("f:{k}"));
                            walk_value(kind, v, names, path, out)?;
                            path.pop();
                            names.pop();
                        }
                    }
                    path.pop();
                }
            }
        },
        _ => {
            out.insert(path.clone());
        }
    }
    Ok(())
}

/// Whether a path belongs to what this request may own: with a status subresource, an apply
/// to the main resource does not own `status` and an apply to `status` owns only `status`; a
/// write to `pods/ephemeralcontainers` owns only `spec.ephemeralContainers`.
fn in_scope(path: &FieldPath, req: &ApplyRequest) -> bool {
    let is_status = path.first().is_some_and(|p| p == "f:status");
    match (req.has_status, req.subresource) {
        (_, Some("ephemeralcontainers")) => {
            path.len() >= EPHEMERAL_CONTAINERS.len()
                && path.iter().zip(EPHEMERAL_CONTAINERS).all(|(p, e)| p == e)
        }
        (true, Some(_)) => is_status,
        (true, None) => !is_status,
        (false, _) => true,
    }
}

/// The path of a pod's ephemeral containers, which `pods/ephemeralcontainers` writes.
const EPHEMERAL_CONTAINERS: [&str; 2] = ["f:spec", "f:ephemeralContainers"];

/// A path that names a value (a field or an atomic list), as opposed to a list element's
/// identity (`.`) or a set member (`v:`), which two managers can share without conflict.
fn is_leaf_value(path: &FieldPath) -> bool {
    path.last()
        .is_some_and(|last| last != "." && !last.starts_with("v:"))
}

/// The value at `path` in `obj`, if there is one.
pub fn value_at<'v>(obj: &'v Value, path: &[String]) -> Option<&'v Value> {
    let mut node = obj;
    for element in path {
        node = step(node, element)?;
    }
    Some(node)
}

fn step<'v>(node: &'v Value, element: &str) -> Option<&'v Value> {
    if element == "." {
        Some(node)
    } else if let Some(field) = element.strip_prefix("f:") {
        node.as_object()?.get(field)
    } else if let Some(key) = element.strip_prefix("k:") {
        let key = parse_key(key)?;
        node.as_array()?.iter().find(|item| has_key(item, &key))
    } else if let Some(value) = element.strip_prefix("v:") {
        let value: Value = serde_json::from_str(value).ok()?;
        node.as_array()?.iter().find(|item| **item == value)
    } else {
        None
    }
}

/// The key fields of a `k:` path element (after the prefix).
fn parse_key(key: &str) -> Option<Map<String, Value>> {
    serde_json::from_str(key).ok()
}

/// Whether a list element carries every key field of `key` with its value.
fn has_key(item: &Value, key: &Map<String, Value>) -> bool {
    key.iter().all(|(k, v)| item.get(k) == Some(v))
}

/// Removes what `path` names from `obj`: a field, a set member, or (for a path ending in
/// `.`) a whole list element. A path that leads nowhere is ignored.
fn remove_at(obj: &mut Value, path: &[String]) {
    let (target, parent_path) = match path {
        [rest @ .., key, dot] if dot == "." => (key.as_str(), rest),
        [rest @ .., last] => (last.as_str(), rest),
        [] => return,
    };
    let mut node = obj;
    for element in parent_path {
        let next = if let Some(field) = element.strip_prefix("f:") {
            node.as_object_mut().and_then(|m| m.get_mut(field))
        } else if let Some(key) = element.strip_prefix("k:") {
            let Some(key) = parse_key(key) else {
                return;
            };
            node.as_array_mut()
                .and_then(|items| items.iter_mut().find(|item| has_key(item, &key)))
        } else {
            None
        };
        match next {
            Some(n) => node = n,
            None => return,
        }
    }
    if let Some(field) = target.strip_prefix("f:") {
        if let Some(map) = node.as_object_mut() {
            map.remove(field);
        }
    } else if let Some(key) = target.strip_prefix("k:") {
        if let (Some(key), Some(items)) = (parse_key(key), node.as_array_mut()) {
            items.retain(|item| !has_key(item, &key));
        }
    } else if let Some(value) = target.strip_prefix("v:")
        && let (Ok(value), Some(items)) =
            (serde_json::from_str::<Value>(value), node.as_array_mut())
    {
        items.retain(|item| *item != value);
    }
}

/// A path as Kubernetes prints it in conflicts: `.spec.containers[name="web"].image`.
pub fn display_path(path: &[String]) -> String {
    let mut out = String::new();
    for element in path {
        if let Some(field) = element.strip_prefix("f:") {
            out.push('.');
            out.push_str(field);
        } else if let Some(key) = element.strip_prefix("k:") {
            let key: Map<String, Value> = serde_json::from_str(key).unwrap_or_default();
            let parts: Vec<String> = key.iter().map(|(k, v)| format!("{k}={v}")).collect();
            out.push_str(&format!("[{}]", parts.join(",")));
        } else if let Some(value) = element.strip_prefix("v:") {
            out.push_str(&format!("[={value}]"));
        }
    }
    out
}

/// Drops `null` fields, which an applied configuration uses to mean "not set".
fn strip_nulls(map: &mut Map<String, Value>) {
    map.retain(|_, v| !v.is_null());
    for v in map.values_mut() {
        match v {
            Value::Object(m) => strip_nulls(m),
            Value::Array(items) => {
                for item in items {
                    if let Value::Object(m) = item {
                        strip_nulls(m);
                    }
                }
            }
            _ => {}
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn req<'a>(manager: &'a str, force: bool) -> ApplyRequest<'a> {
        ApplyRequest {
            kind: "Deployment",
            api_version: "apps/v1",
            manager,
            force,
            subresource: None,
            has_status: true,
        }
    }

    fn deployment(replicas: i64, image: &str, extra_label: bool) -> Value {
        let mut labels = json!({"app": "web"});
        if extra_label {
            labels["tier"] = json!("front");
        }
        json!({
            "apiVersion": "apps/v1",
            "kind": "Deployment",
            "metadata": {"name": "web", "labels": labels},
            "spec": {
                "replicas": replicas,
                "template": {"spec": {"containers": [{"name": "web", "image": image, "args": ["a", "b"]}]}}
            }
        })
    }

    fn fields_of(obj: &Value, manager: &str) -> FieldSet {
        managed_entries(obj)
            .into_iter()
            .find(|e| e.manager == manager)
            .map(|e| e.fields)
            .unwrap_or_default()
    }

    fn path(p: &[&str]) -> FieldPath {
        p.iter().map(|s| s.to_string()).collect()
    }

    #[test]
    fn field_set_follows_list_strategies() {
        let set = field_set("Deployment", &deployment(3, "img:1", false)).unwrap();
        let c = r#"k:{"name":"web"}"#;
        assert!(set.contains(&path(&["f:metadata", "f:labels", "f:app"])));
        assert!(set.contains(&path(&["f:spec", "f:replicas"])));
        assert!(set.contains(&path(&[
            "f:spec",
            "f:template",
            "f:spec",
            "f:containers",
            c,
            "."
        ])));
        assert!(set.contains(&path(&[
            "f:spec",
            "f:template",
            "f:spec",
            "f:containers",
            c,
            "f:image"
        ])));
        // `args` is atomic: owned as a whole.
        assert!(set.contains(&path(&[
            "f:spec",
            "f:template",
            "f:spec",
            "f:containers",
            c,
            "f:args"
        ])));
        assert!(
            !set.iter()
                .any(|p| p.contains(&"f:name".to_string()) && p.len() == 2)
        );
        assert!(
            !set.iter()
                .any(|p| p[0] == "f:apiVersion" || p[0] == "f:kind")
        );
    }

    #[test]
    fn fields_v1_round_trips() {
        let set = field_set("Deployment", &deployment(3, "img:1", true)).unwrap();
        let tree = fields_v1(&set);
        assert_eq!(tree["f:spec"]["f:replicas"], json!({}));
        assert_eq!(parse_fields_v1(&tree), set);
    }

    #[test]
    fn first_apply_creates_and_records_the_manager() {
        let obj = apply(None, deployment(3, "img:1", false), &req("kubectl", false)).unwrap();
        assert_eq!(obj["spec"]["replicas"], 3);
        let mf = &obj["metadata"]["managedFields"][0];
        assert_eq!(mf["manager"], "kubectl");
        assert_eq!(mf["operation"], "Apply");
        assert_eq!(mf["fieldsType"], "FieldsV1");
        assert_eq!(mf["apiVersion"], "apps/v1");
        assert!(fields_of(&obj, "kubectl").contains(&path(&["f:spec", "f:replicas"])));
    }

    #[test]
    fn fields_left_out_are_removed_and_others_kept() {
        let live = apply(None, deployment(3, "img:1", true), &req("kubectl", false)).unwrap();
        let mut live = live;
        live["metadata"]["labels"]["added-by-hand"] = json!("yes");
        let next = apply(
            Some(&live),
            deployment(3, "img:2", false),
            &req("kubectl", false),
        )
        .unwrap();
        let labels = &next["metadata"]["labels"];
        assert_eq!(labels["app"], "web");
        assert!(labels.get("tier").is_none(), "{labels}");
        assert_eq!(labels["added-by-hand"], "yes");
        assert_eq!(
            next["spec"]["template"]["spec"]["containers"][0]["image"],
            "img:2"
        );
    }

    #[test]
    fn another_manager_changing_an_owned_field_conflicts_unless_forced() {
        let live = apply(None, deployment(3, "img:1", false), &req("kubectl", false)).unwrap();
        let scaler = json!({"apiVersion": "apps/v1", "kind": "Deployment",
            "metadata": {"name": "web"}, "spec": {"replicas": 5}});
        let Err(ApplyError::Conflicts(c)) =
            apply(Some(&live), scaler.clone(), &req("scaler", false))
        else {
            panic!("expected a conflict")
        };
        assert_eq!(c.len(), 1);
        assert_eq!(c[0].manager, "kubectl");
        assert_eq!(c[0].field, ".spec.replicas");
        assert_eq!(c[0].message(), "conflict with \"kubectl\" using apps/v1");

        // The same value is shared, not a conflict.
        let same = json!({"apiVersion": "apps/v1", "kind": "Deployment",
            "metadata": {"name": "web"}, "spec": {"replicas": 3}});
        let shared = apply(Some(&live), same, &req("scaler", false)).unwrap();
        assert!(fields_of(&shared, "kubectl").contains(&path(&["f:spec", "f:replicas"])));
        assert!(fields_of(&shared, "scaler").contains(&path(&["f:spec", "f:replicas"])));

        // Forced: the field changes hands.
        let forced = apply(Some(&live), scaler, &req("scaler", true)).unwrap();
        assert_eq!(forced["spec"]["replicas"], 5);
        assert!(!fields_of(&forced, "kubectl").contains(&path(&["f:spec", "f:replicas"])));
        assert!(fields_of(&forced, "scaler").contains(&path(&["f:spec", "f:replicas"])));
        // kubectl leaving replicas out now no longer removes it: scaler owns it.
        let mut without = deployment(3, "img:1", false);
        without["spec"].as_object_mut().unwrap().remove("replicas");
        let after = apply(Some(&forced), without, &req("kubectl", false)).unwrap();
        assert_eq!(after["spec"]["replicas"], 5);
    }

    #[test]
    fn list_elements_merge_by_key_and_leave_with_their_manager() {
        let two = json!({"apiVersion": "v1", "kind": "Pod", "metadata": {"name": "p"},
            "spec": {"containers": [{"name": "a", "image": "x"}, {"name": "b", "image": "y"}]}});
        let pod_req = ApplyRequest {
            kind: "Pod",
            api_version: "v1",
            manager: "m",
            force: false,
            subresource: None,
            has_status: true,
        };
        let live = apply(None, two, &pod_req).unwrap();
        let one = json!({"apiVersion": "v1", "kind": "Pod", "metadata": {"name": "p"},
            "spec": {"containers": [{"name": "a", "image": "x2"}]}});
        let next = apply(Some(&live), one, &pod_req).unwrap();
        let containers = next["spec"]["containers"].as_array().unwrap();
        assert_eq!(containers.len(), 1, "{containers:?}");
        assert_eq!(containers[0]["image"], "x2");
    }

    #[test]
    fn bad_applied_configurations_are_refused() {
        let r = req("m", false);
        assert!(matches!(
            apply(None, json!({"kind": "Deployment", "metadata": {"name": "x"}}), &r),
            Err(ApplyError::BadRequest(m)) if m.contains("apiVersion")
        ));
        assert!(matches!(
            apply(None, json!({"apiVersion": "apps/v1", "kind": "Deployment",
                "metadata": {"name": "x", "managedFields": [{}]}}), &r),
            Err(ApplyError::BadRequest(m)) if m.contains("managedFields")
        ));
        let keyless = json!({"apiVersion": "apps/v1", "kind": "Deployment", "metadata": {"name": "x"},
            "spec": {"template": {"spec": {"containers": [{"image": "i"}]}}}});
        assert!(matches!(
            apply(None, keyless, &r),
            Err(ApplyError::BadRequest(m)) if m.contains("containers") && m.contains("name")
        ));
    }

    #[test]
    fn status_applies_own_only_status() {
        let mut r = req("ctl", false);
        r.subresource = Some("status");
        let live = deployment(1, "i", false);
        let body = json!({"apiVersion": "apps/v1", "kind": "Deployment", "metadata": {"name": "web"},
            "spec": {"replicas": 9}, "status": {"replicas": 1}});
        let out = apply(Some(&live), body, &r).unwrap();
        let owned = fields_of(&out, "ctl");
        assert_eq!(
            owned,
            [path(&["f:status", "f:replicas"])].into_iter().collect()
        );
        assert_eq!(out["metadata"]["managedFields"][0]["subresource"], "status");
    }

    #[test]
    fn an_update_takes_the_fields_it_changes_so_a_later_apply_conflicts() {
        let live = apply(None, deployment(3, "img:1", false), &req("kubectl", false)).unwrap();
        let mut edited = live.clone();
        edited["spec"]["replicas"] = json!(7);
        assert!(record_update(
            &live,
            &mut edited,
            "kubectl-edit",
            &req("", false)
        ));
        let entry = managed_entries(&edited)
            .into_iter()
            .find(|e| e.manager == "kubectl-edit")
            .unwrap();
        assert_eq!(entry.operation, "Update");
        assert_eq!(
            entry.fields,
            [path(&["f:spec", "f:replicas"])].into_iter().collect()
        );
        assert!(!fields_of(&edited, "kubectl").contains(&path(&["f:spec", "f:replicas"])));
        let Err(ApplyError::Conflicts(c)) = apply(
            Some(&edited),
            deployment(3, "img:1", false),
            &req("kubectl", false),
        ) else {
            panic!("expected a conflict")
        };
        assert_eq!(c[0].manager, "kubectl-edit");
        // An unchanged write records nothing; an object no one applied is not tracked.
        let mut same = edited.clone();
        assert!(!record_update(&edited, &mut same, "x", &req("", false)));
        let plain = deployment(1, "i", false);
        let mut changed = plain.clone();
        changed["spec"]["replicas"] = json!(2);
        assert!(!record_update(&plain, &mut changed, "x", &req("", false)));
        assert!(changed["metadata"].get("managedFields").is_none());
    }

    #[test]
    fn a_named_create_owns_its_fields_so_a_different_apply_conflicts() {
        let mut created = deployment(2, "img:1", false);
        record_create(&mut created, &req("kubectl-create", false));
        let entry = &managed_entries(&created)[0];
        assert_eq!(
            (entry.manager.as_str(), entry.operation.as_str()),
            ("kubectl-create", "Update")
        );
        assert!(entry.fields.contains(&path(&["f:spec", "f:replicas"])));
        let Err(ApplyError::Conflicts(c)) = apply(
            Some(&created),
            deployment(3, "img:1", false),
            &req("kubectl", false),
        ) else {
            panic!("expected a conflict")
        };
        assert_eq!(c[0].manager, "kubectl-create");
        // The same values are shared instead.
        assert!(
            apply(
                Some(&created),
                deployment(2, "img:1", false),
                &req("kubectl", false)
            )
            .is_ok()
        );
    }

    #[test]
    fn kubectls_first_server_side_apply_takes_over_what_its_client_side_apply_set() {
        // A client-side apply: the object carries the annotation, and its fields belong to
        // kubectl-client-side-apply (an Update).
        let mut live = deployment(2, "img:1", false);
        let last = serde_json::to_string(&deployment(2, "img:1", false)).unwrap();
        live["metadata"]["annotations"] = json!({ LAST_APPLIED: last });
        record_create(&mut live, &req("kubectl-client-side-apply", false));
        assert!(
            fields_of(&live, "kubectl-client-side-apply")
                .contains(&path(&["f:spec", "f:replicas"]))
        );

        let applied = apply(
            Some(&live),
            deployment(3, "img:2", false),
            &req("kubectl", false),
        )
        .expect("no conflict for kubectl");
        assert_eq!(applied["spec"]["replicas"], 3);
        assert!(fields_of(&applied, "kubectl").contains(&path(&["f:spec", "f:replicas"])));
        assert!(
            !fields_of(&applied, "kubectl-client-side-apply")
                .contains(&path(&["f:spec", "f:replicas"]))
        );

        // Another manager gets the conflict, as does kubectl for a field changed since.
        assert!(matches!(
            apply(
                Some(&live),
                deployment(3, "img:1", false),
                &req("other", false)
            ),
            Err(ApplyError::Conflicts(_))
        ));
        let mut changed_since = live.clone();
        changed_since["spec"]["replicas"] = json!(5);
        let Err(ApplyError::Conflicts(c)) = apply(
            Some(&changed_since),
            deployment(3, "img:1", false),
            &req("kubectl", false),
        ) else {
            panic!("expected a conflict")
        };
        assert_eq!(c.len(), 1);
        assert_eq!(c[0].field, ".spec.replicas");
    }

    #[test]
    fn display_paths_read_like_kubernetes() {
        let p = path(&["f:spec", "f:containers", r#"k:{"name":"web"}"#, "f:image"]);
        assert_eq!(display_path(&p), r#".spec.containers[name="web"].image"#);
    }
}
