//! Applying `PATCH` request bodies to stored objects.
//!
//! Three formats, chosen by the request's `Content-Type` ([`PatchType::from_content_type`]):
//!
//! - JSON patch (RFC 6902), through the `json-patch` crate;
//! - JSON merge patch (RFC 7386), through the same crate;
//! - Kubernetes strategic merge patch, implemented here after
//!   `k8s.io/apimachinery/pkg/util/strategicpatch` with the options the API server uses
//!   (`MergeParallelList` and `IgnoreUnmatchedNulls`). This is what `kubectl apply`, `kubectl
//!   patch`, `kubectl edit` and the kubelet's status updates send, so it must agree with
//!   Kubernetes on the built-in kinds.
//!
//! Strategic merge patch needs to know, for each list field, whether it is replaced wholesale,
//! merged as a set of scalars or merged element-wise by a key. Kubernetes reads that from
//! `patchStrategy`/`patchMergeKey` struct tags; we keep the same facts in a path-aware table,
//! [`strategy`], so the patch logic itself works on untyped [`serde_json::Value`]s.
//!
//! Everything here is pure: no I/O, no store access. The REST handler turns [`PatchError`] into a
//! Kubernetes `Status`.

use std::fmt;

use serde_json::{Map, Value};

/// The patch formats the API server accepts, one per `Content-Type`.
///
/// Server-side apply (`application/apply-patch+yaml`) is not one of them: it is not a patch
/// of the object but a statement of the fields one manager owns, handled by
/// [`super::apply`]; [`PatchType::from_content_type`] returns `None` for it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PatchType {
    /// RFC 6902 JSON patch: a list of `add`/`remove`/`replace`/`move`/`copy`/`test` operations.
    Json,
    /// RFC 7386 JSON merge patch: a partial object, `null` deletes, lists are replaced.
    Merge,
    /// Kubernetes strategic merge patch: a merge patch whose lists merge by key and which
    /// understands `$patch`, `$retainKeys`, `$setElementOrder/…` and
    /// `$deleteFromPrimitiveList/…` directives.
    StrategicMerge,
}

impl PatchType {
    /// The patch type for a request's `Content-Type` header, ignoring parameters such as
    /// `;charset=utf-8` and letter case. `None` means the media type is not one of these three
    /// (the caller handles server-side apply and answers 415 Unsupported Media Type otherwise).
    pub fn from_content_type(ct: &str) -> Option<PatchType> {
        let essence = ct.split(';').next().unwrap_or_default().trim();
        if essence.eq_ignore_ascii_case("application/json-patch+json") {
            Some(PatchType::Json)
        } else if essence.eq_ignore_ascii_case("application/merge-patch+json") {
            Some(PatchType::Merge)
        } else if essence.eq_ignore_ascii_case("application/strategic-merge-patch+json") {
            Some(PatchType::StrategicMerge)
        } else {
            None
        }
    }

    /// The canonical `Content-Type` of this patch format, for error messages and for clients.
    pub fn content_type(self) -> &'static str {
        match self {
            PatchType::Json => "application/json-patch+json",
            PatchType::Merge => "application/merge-patch+json",
            PatchType::StrategicMerge => "application/strategic-merge-patch+json",
        }
    }
}

impl fmt::Display for PatchType {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            PatchType::Json => "json patch",
            PatchType::Merge => "merge patch",
            PatchType::StrategicMerge => "strategic merge patch",
        })
    }
}

/// Why a patch could not be applied. Every variant is the client's fault: the caller answers
/// 400 Bad Request for a body it cannot read and 422 Invalid otherwise.
#[derive(Debug, thiserror::Error)]
pub enum PatchError {
    /// The body is not JSON (merge and strategic merge patch).
    #[error("{ty} body is not valid json: {source}")]
    InvalidJson {
        /// The patch format the body was read as.
        ty: PatchType,
        /// The parser's complaint.
        source: serde_json::Error,
    },
    /// The body of a JSON patch is not a list of RFC 6902 operations.
    #[error("json patch body is not a list of operations: {0}")]
    InvalidJsonPatch(#[source] serde_json::Error),
    /// A merge or strategic merge patch whose top level is not a JSON object.
    #[error("{0} must be a json object")]
    NotAnObject(PatchType),
    /// A JSON patch `test` operation found a different value. Kept apart from
    /// [`PatchError::JsonPatchFailed`] so the caller can report it as a failed precondition.
    #[error("json patch test operation {index} failed: the value at '{path}' does not match")]
    TestFailed {
        /// Index of the failing operation in the patch.
        index: usize,
        /// The JSON pointer the operation tested.
        path: String,
    },
    /// Any other JSON patch operation failure (missing path, bad index, move into itself…).
    #[error("json patch operation {index} ({op}) failed at '{path}': {reason}")]
    JsonPatchFailed {
        /// Index of the failing operation in the patch.
        index: usize,
        /// The operation's name (`add`, `remove`, …).
        op: &'static str,
        /// The JSON pointer the operation targeted.
        path: String,
        /// What went wrong.
        reason: String,
    },
    /// A malformed strategic merge patch: an unknown or misplaced directive, a list element
    /// without its merge key, a field outside `$retainKeys`…
    #[error("invalid strategic merge patch at '{path}': {reason}")]
    InvalidStrategicMerge {
        /// Dotted field path from the object root (list indices omitted).
        path: String,
        /// What is wrong there.
        reason: String,
    },
    /// The patch turned the object into something that is not a JSON object (e.g. a JSON patch
    /// `replace` of the root with a string, or `$patch: delete` of the whole object).
    #[error("patched object is not a json object")]
    PatchedNotAnObject,
}

/// Applies `patch` (the raw request body) of type `ty` to `original`, a stored object of the
/// given Kubernetes `kind`, and returns the patched object. `original` is not modified.
///
/// `kind` only matters for strategic merge patch, where it selects the list merge strategies
/// (see [`strategy`]). The result is always a JSON object; validating it is the caller's job.
pub fn apply_patch(
    kind: &str,
    original: &Value,
    patch: &[u8],
    ty: PatchType,
) -> Result<Value, PatchError> {
    let patched = match ty {
        PatchType::Json => {
            let ops: json_patch::Patch =
                serde_json::from_slice(patch).map_err(PatchError::InvalidJsonPatch)?;
            let mut doc = original.clone();
            json_patch::patch(&mut doc, &ops.0).map_err(|e| json_patch_error(&ops, e))?;
            doc
        }
        PatchType::Merge => {
            let patch = parse_object(patch, ty)?;
            let mut doc = original.clone();
            json_patch::merge(&mut doc, &Value::Object(patch));
            doc
        }
        PatchType::StrategicMerge => {
            let patch = parse_object(patch, ty)?;
            let original = match original {
                Value::Object(map) => map.clone(),
                _ => Map::new(),
            };
            let merger = StrategicMerge { kind };
            let mut path = Vec::new();
            match merger.merge_map(original, patch, &mut path)? {
                Some(map) => Value::Object(map),
                None => return Err(PatchError::PatchedNotAnObject),
            }
        }
    };
    if patched.is_object() {
        Ok(patched)
    } else {
        Err(PatchError::PatchedNotAnObject)
    }
}

/// Merges a server-side apply configuration (already checked and stripped of `null`s) into
/// `original` with the list strategies of [`strategy`]: maps merge key by key, keyed lists
/// element by element, sets of scalars as a union, other lists are replaced. Server-side apply
/// ([`super::apply`]) removes the fields a manager gave up before calling this.
pub fn merge_applied(
    kind: &str,
    original: &Value,
    applied: Map<String, Value>,
) -> Result<Value, PatchError> {
    let original = match original {
        Value::Object(map) => map.clone(),
        _ => Map::new(),
    };
    let merger = StrategicMerge { kind };
    match merger.merge_map(original, applied, &mut Vec::new())? {
        Some(map) => Ok(Value::Object(map)),
        None => Err(PatchError::PatchedNotAnObject),
    }
}

fn parse_object(body: &[u8], ty: PatchType) -> Result<Map<String, Value>, PatchError> {
    match serde_json::from_slice(body) {
        Ok(Value::Object(map)) => Ok(map),
        Ok(_) => Err(PatchError::NotAnObject(ty)),
        Err(source) => Err(PatchError::InvalidJson { ty, source }),
    }
}

fn json_patch_error(ops: &json_patch::Patch, err: json_patch::PatchError) -> PatchError {
    let index = err.operation;
    let path = err.path.to_string();
    if matches!(err.kind, json_patch::PatchErrorKind::TestFailed) {
        return PatchError::TestFailed { index, path };
    }
    let op = match ops.0.get(index) {
        Some(json_patch::PatchOperation::Add(_)) => "add",
        Some(json_patch::PatchOperation::Remove(_)) => "remove",
        Some(json_patch::PatchOperation::Replace(_)) => "replace",
        Some(json_patch::PatchOperation::Move(_)) => "move",
        Some(json_patch::PatchOperation::Copy(_)) => "copy",
        Some(json_patch::PatchOperation::Test(_)) => "test",
        None => "unknown",
    };
    PatchError::JsonPatchFailed {
        index,
        op,
        path,
        reason: err.kind.to_string(),
    }
}

/// How a strategic merge patch combines a list field of the original with the patch's list.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ListStrategy {
    /// The patch's list replaces the original's. Kubernetes' default for fields without a
    /// `patchStrategy` tag (`tolerations`, `args`, `containerStatuses`, …).
    Replace,
    /// A set of scalars: the result is the union, and `$deleteFromPrimitiveList/<field>`
    /// removes values (`patchStrategy: merge` without a merge key, e.g. `metadata.finalizers`).
    MergePrimitive,
    /// A list of objects identified by the named field: patch elements merge into the original
    /// element with the same key or are added; `$patch: delete` elements remove one.
    MergeByKey(&'static str),
}

/// The strategic-merge strategy of the list at `path` in an object of `kind`.
///
/// `path` is the chain of field names from the object root, list indices left out: the `env`
/// of any container of a Deployment is `["spec", "template", "spec", "containers", "env"]`.
/// The table follows the `patchStrategy`/`patchMergeKey` tags of `k8s.io/api` v1.33 for the
/// kinds Flotilla serves; a pod template's `PodSpec` and `ObjectMeta` share one sub-table with
/// `Pod`. Fields not listed, and kinds not known, are [`ListStrategy::Replace`].
///
/// Like Kubernetes, lists whose OpenAPI list-map has two keys (container `ports` by
/// `containerPort`+`protocol`, Service `ports` by `port`+`protocol`, `topologySpreadConstraints`
/// by `topologyKey`+`whenUnsatisfiable`) merge by the first key only.
pub fn strategy(kind: &str, path: &[&str]) -> ListStrategy {
    use ListStrategy::{MergeByKey, MergePrimitive, Replace};

    if let ["metadata", rest @ ..] = path {
        return object_meta_strategy(rest);
    }
    for template in pod_template_paths(kind) {
        if let Some(rest) = path.strip_prefix(*template) {
            return match rest {
                ["metadata", rest @ ..] => object_meta_strategy(rest),
                ["spec", rest @ ..] => pod_spec_strategy(rest),
                _ => Replace,
            };
        }
    }
    match (kind, path) {
        ("Pod", ["spec", rest @ ..]) => pod_spec_strategy(rest),
        ("Pod", ["status", "conditions"]) => MergeByKey("type"),
        ("Pod", ["status", "podIPs" | "hostIPs"]) => MergeByKey("ip"),
        ("Pod", ["status", "resourceClaimStatuses"]) => MergeByKey("name"),
        ("Service", ["spec", "ports"]) => MergeByKey("port"),
        ("Node", ["spec", "podCIDRs"]) => MergePrimitive,
        ("Node", ["status", "addresses"]) => MergeByKey("type"),
        ("ServiceAccount", ["secrets"]) => MergeByKey("name"),
        (
            "Node"
            | "Service"
            | "Namespace"
            | "Deployment"
            | "ReplicaSet"
            | "DaemonSet"
            | "StatefulSet"
            | "Job"
            | "ReplicationController"
            | "HorizontalPodAutoscaler"
            | "PersistentVolumeClaim",
            ["status", "conditions"],
        ) => MergeByKey("type"),
        _ => Replace,
    }
}

/// Where each workload kind embeds a `PodTemplateSpec`.
fn pod_template_paths(kind: &str) -> &'static [&'static [&'static str]] {
    match kind {
        "Deployment"
        | "ReplicaSet"
        | "DaemonSet"
        | "StatefulSet"
        | "Job"
        | "ReplicationController" => &[&["spec", "template"]],
        "CronJob" => &[&["spec", "jobTemplate", "spec", "template"]],
        "PodTemplate" => &[&["template"]],
        _ => &[],
    }
}

fn object_meta_strategy(path: &[&str]) -> ListStrategy {
    match path {
        ["finalizers"] => ListStrategy::MergePrimitive,
        ["ownerReferences"] => ListStrategy::MergeByKey("uid"),
        _ => ListStrategy::Replace,
    }
}

fn pod_spec_strategy(path: &[&str]) -> ListStrategy {
    use ListStrategy::{MergeByKey, Replace};
    match path {
        ["containers" | "initContainers" | "ephemeralContainers"] => MergeByKey("name"),
        [
            "containers" | "initContainers" | "ephemeralContainers",
            field,
        ] => match *field {
            "env" => MergeByKey("name"),
            "ports" => MergeByKey("containerPort"),
            "volumeMounts" => MergeByKey("mountPath"),
            "volumeDevices" => MergeByKey("devicePath"),
            _ => Replace,
        },
        ["volumes" | "imagePullSecrets" | "resourceClaims" | "schedulingGates"] => {
            MergeByKey("name")
        }
        ["hostAliases"] => MergeByKey("ip"),
        ["topologySpreadConstraints"] => MergeByKey("topologyKey"),
        _ => Replace,
    }
}

const DIRECTIVE: &str = "$patch";
const RETAIN_KEYS: &str = "$retainKeys";
const SET_ELEMENT_ORDER: &str = "$setElementOrder/";
const DELETE_FROM_PRIMITIVE_LIST: &str = "$deleteFromPrimitiveList/";

/// A strategic merge of one patch into one object of `kind`.
///
/// Maps and lists are taken by value and merged in place; `path` is the field chain of the
/// value being merged, used for strategy look-ups and error messages.
struct StrategicMerge<'a> {
    kind: &'a str,
}

impl StrategicMerge<'_> {
    fn invalid(&self, path: &[String], reason: impl Into<String>) -> PatchError {
        PatchError::InvalidStrategicMerge {
            path: if path.is_empty() {
                "<root>".to_owned()
            } else {
                path.join(".")
            },
            reason: reason.into(),
        }
    }

    fn strategy(&self, path: &[String]) -> ListStrategy {
        let path: Vec<&str> = path.iter().map(String::as_str).collect();
        strategy(self.kind, &path)
    }

    /// Merges `patch` into `original`. `None` means the patch deletes this map (`$patch: delete`).
    fn merge_map(
        &self,
        mut original: Map<String, Value>,
        mut patch: Map<String, Value>,
        path: &mut Vec<String>,
    ) -> Result<Option<Map<String, Value>>, PatchError> {
        if let Some(directive) = patch.shift_remove(DIRECTIVE) {
            match directive.as_str() {
                // Kubernetes returns the patch as it is; cleaning it also drops nulls and
                // directives nested inside, which its typed decoding would drop later.
                Some("replace") => return self.merge_map(Map::new(), patch, path),
                Some("delete") => return Ok(None),
                // Kubernetes rejects `$patch: merge` in a map; it means what no directive means.
                Some("merge") => {}
                _ => {
                    return Err(self.invalid(path, format!("unknown $patch directive {directive}")));
                }
            }
        }

        if let Some(retain) = patch.shift_remove(RETAIN_KEYS) {
            self.apply_retain_keys(&mut original, &patch, &retain, path)?;
        }

        let mut orders = Vec::new();
        let mut deletions = Vec::new();
        let mut fields = Vec::new();
        for (key, value) in patch {
            if let Some(field) = key.strip_prefix(SET_ELEMENT_ORDER) {
                let Value::Array(order) = value else {
                    return Err(self.invalid(path, format!("{key} must be a list")));
                };
                orders.push((field.to_owned(), order));
            } else if let Some(field) = key.strip_prefix(DELETE_FROM_PRIMITIVE_LIST) {
                let Value::Array(values) = value else {
                    return Err(self.invalid(path, format!("{key} must be a list")));
                };
                deletions.push((field.to_owned(), values));
            } else if key.starts_with('$') {
                return Err(self.invalid(path, format!("unknown directive {key}")));
            } else {
                fields.push((key, value));
            }
        }

        for (key, value) in fields {
            if value.is_null() {
                original.shift_remove(&key);
                continue;
            }
            let order = take_order(&mut orders, &key);
            let existing = original.get_mut(&key).map(Value::take);
            // The list as the server had it, to place server-only elements when reordering.
            let server_order = match (&order, &existing) {
                (Some(_), Some(Value::Array(list))) => list.clone(),
                _ => Vec::new(),
            };
            path.push(key);
            let merged = match self.merge_value(existing, value, path)? {
                Some(Value::Array(list)) => Some(Value::Array(self.apply_element_order(
                    list,
                    order,
                    &server_order,
                    path,
                )?)),
                other => other,
            };
            let Some(key) = path.pop() else {
                continue;
            };
            match merged {
                Some(value) => {
                    original.insert(key, value);
                }
                None => {
                    original.shift_remove(&key);
                }
            }
        }

        // `$setElementOrder` for lists the patch does not otherwise touch only reorders.
        for (field, order) in orders {
            if let Some(Value::Array(list)) = original.get_mut(&field) {
                let current = std::mem::take(list);
                let server_order = current.clone();
                path.push(field);
                let ordered =
                    self.apply_element_order(current, Some(order), &server_order, path)?;
                if let Some(field) = path.pop()
                    && let Some(Value::Array(list)) = original.get_mut(&field)
                {
                    *list = ordered;
                }
            }
        }

        for (field, values) in deletions {
            if let Some(Value::Array(list)) = original.get_mut(&field) {
                list.retain(|item| !values.contains(item));
            }
        }

        Ok(Some(original))
    }

    /// Checks `$retainKeys` and drops from `original` every field it does not name.
    fn apply_retain_keys(
        &self,
        original: &mut Map<String, Value>,
        patch: &Map<String, Value>,
        retain: &Value,
        path: &[String],
    ) -> Result<(), PatchError> {
        let Some(retain) = retain.as_array() else {
            return Err(self.invalid(path, "$retainKeys must be a list of field names"));
        };
        let mut keep = Vec::with_capacity(retain.len());
        for key in retain {
            let Some(key) = key.as_str() else {
                return Err(self.invalid(path, "$retainKeys must be a list of field names"));
            };
            keep.push(key);
        }
        for (key, value) in patch {
            let directive =
                key.starts_with(SET_ELEMENT_ORDER) || key.starts_with(DELETE_FROM_PRIMITIVE_LIST);
            if !value.is_null() && !directive && !keep.contains(&key.as_str()) {
                return Err(self.invalid(
                    path,
                    format!("field {key} is in the patch but not in $retainKeys"),
                ));
            }
        }
        original.retain(|key, _| keep.contains(&key.as_str()));
        Ok(())
    }

    /// Merges a non-null patch value into the original value of the same field, if any.
    fn merge_value(
        &self,
        original: Option<Value>,
        patch: Value,
        path: &mut Vec<String>,
    ) -> Result<Option<Value>, PatchError> {
        match patch {
            Value::Object(patch) => {
                let original = match original {
                    Some(Value::Object(map)) => map,
                    _ => Map::new(),
                };
                Ok(self.merge_map(original, patch, path)?.map(Value::Object))
            }
            Value::Array(patch) => {
                let original = match original {
                    Some(Value::Array(list)) => list,
                    _ => Vec::new(),
                };
                Ok(Some(Value::Array(self.merge_list(original, patch, path)?)))
            }
            scalar => Ok(Some(scalar)),
        }
    }

    fn merge_list(
        &self,
        original: Vec<Value>,
        patch: Vec<Value>,
        path: &mut Vec<String>,
    ) -> Result<Vec<Value>, PatchError> {
        match self.strategy(path) {
            ListStrategy::Replace => self.clean_list(patch, path),
            ListStrategy::MergePrimitive => self.merge_primitive_list(original, patch, path),
            ListStrategy::MergeByKey(key) => self.merge_keyed_list(original, patch, key, path),
        }
    }

    /// A list that replaces the original: drops bare directive elements and cleans the rest.
    fn clean_list(
        &self,
        patch: Vec<Value>,
        path: &mut Vec<String>,
    ) -> Result<Vec<Value>, PatchError> {
        let mut out = Vec::with_capacity(patch.len());
        for item in patch {
            match item {
                Value::Object(map) if map.len() == 1 && map.contains_key(DIRECTIVE) => {}
                Value::Object(map) => {
                    if let Some(map) = self.merge_map(Map::new(), map, path)? {
                        out.push(Value::Object(map));
                    }
                }
                other => out.push(other),
            }
        }
        Ok(out)
    }

    fn merge_primitive_list(
        &self,
        original: Vec<Value>,
        patch: Vec<Value>,
        path: &[String],
    ) -> Result<Vec<Value>, PatchError> {
        let mut replace = false;
        let mut items = Vec::with_capacity(patch.len());
        for item in patch {
            match item {
                Value::Object(map) => match map.get(DIRECTIVE).and_then(Value::as_str) {
                    Some("replace") if map.len() == 1 => replace = true,
                    _ => {
                        return Err(self.invalid(path, "a list of scalars cannot contain objects"));
                    }
                },
                Value::Array(_) => {
                    return Err(self.invalid(path, "lists of lists cannot be merged"));
                }
                scalar => items.push(scalar),
            }
        }
        if replace {
            return Ok(dedup(items));
        }
        let patch_items = dedup(items);
        let mut merged = original.clone();
        for item in &patch_items {
            if !merged.contains(item) {
                merged.push(item.clone());
            }
        }
        let merged = dedup(merged);
        Ok(normalize_order(merged, &patch_items, &original, None))
    }

    fn merge_keyed_list(
        &self,
        mut original: Vec<Value>,
        patch: Vec<Value>,
        key: &'static str,
        path: &mut Vec<String>,
    ) -> Result<Vec<Value>, PatchError> {
        // First the directive elements: deletions, and a replace of the whole list.
        let mut replace = false;
        let mut items = Vec::with_capacity(patch.len());
        for item in patch {
            let Value::Object(mut map) = item else {
                return Err(self.invalid(path, format!("elements must be objects merged by {key}")));
            };
            match map.get(DIRECTIVE).map(|d| (d.as_str(), d)) {
                None => items.push(map),
                Some((Some("delete"), _)) => {
                    let Some(value) = map.get(key) else {
                        return Err(self.missing_key(path, key));
                    };
                    original.retain(|o| o.get(key) != Some(value));
                }
                Some((Some("replace"), _)) => replace = true,
                // Kubernetes rejects this ("merging lists cannot yet be specified in the
                // patch"); merging is what the element means without it.
                Some((Some("merge"), _)) => {
                    map.shift_remove(DIRECTIVE);
                    items.push(map);
                }
                Some((_, directive)) => {
                    return Err(self.invalid(path, format!("unknown $patch directive {directive}")));
                }
            }
        }
        if replace {
            let mut out = Vec::with_capacity(items.len());
            for item in items {
                if let Some(map) = self.merge_map(Map::new(), item, path)? {
                    out.push(Value::Object(map));
                }
            }
            return Ok(out);
        }

        // Then merge the remaining elements by key, adding the ones the original lacks.
        let server_order: Vec<Value> = original.clone();
        let mut patch_order = Vec::with_capacity(items.len());
        for item in items {
            let Some(value) = item.get(key).cloned() else {
                return Err(self.missing_key(path, key));
            };
            let position = original.iter().position(|o| o.get(key) == Some(&value));
            match position {
                Some(index) => {
                    let existing = match original[index].take() {
                        Value::Object(map) => map,
                        _ => Map::new(),
                    };
                    match self.merge_map(existing, item, path)? {
                        Some(map) => original[index] = Value::Object(map),
                        None => {
                            original.remove(index);
                        }
                    }
                }
                None => {
                    if let Some(map) = self.merge_map(Map::new(), item, path)? {
                        original.push(Value::Object(map));
                    }
                }
            }
            patch_order.push(single_key(key, value));
        }
        Ok(normalize_order(
            original,
            &patch_order,
            &server_order,
            Some(key),
        ))
    }

    fn missing_key(&self, path: &[String], key: &str) -> PatchError {
        self.invalid(path, format!("list element has no merge key {key}"))
    }

    /// Reorders a merged list by its `$setElementOrder` directive, if the patch sent one.
    fn apply_element_order(
        &self,
        list: Vec<Value>,
        order: Option<Vec<Value>>,
        server_order: &[Value],
        path: &[String],
    ) -> Result<Vec<Value>, PatchError> {
        let Some(order) = order else {
            return Ok(list);
        };
        match self.strategy(path) {
            ListStrategy::Replace => Ok(list),
            ListStrategy::MergePrimitive => Ok(normalize_order(list, &order, server_order, None)),
            ListStrategy::MergeByKey(key) => {
                if order.iter().any(|o| o.get(key).is_none()) {
                    return Err(self.invalid(
                        path,
                        format!("$setElementOrder elements must carry the merge key {key}"),
                    ));
                }
                Ok(normalize_order(list, &order, server_order, Some(key)))
            }
        }
    }
}

fn take_order(orders: &mut Vec<(String, Vec<Value>)>, field: &str) -> Option<Vec<Value>> {
    let index = orders.iter().position(|(f, _)| f == field)?;
    Some(orders.remove(index).1)
}

fn single_key(key: &str, value: Value) -> Value {
    let mut map = Map::new();
    map.insert(key.to_owned(), value);
    Value::Object(map)
}

fn dedup(items: Vec<Value>) -> Vec<Value> {
    let mut out: Vec<Value> = Vec::with_capacity(items.len());
    for item in items {
        if !out.contains(&item) {
            out.push(item);
        }
    }
    out
}

/// What identifies a list element: its merge key's value, or the scalar itself.
fn identity<'v>(item: &'v Value, key: Option<&str>) -> Option<&'v Value> {
    match key {
        Some(key) => item.get(key),
        None => Some(item),
    }
}

fn position_in(list: &[Value], item: &Value, key: Option<&str>) -> Option<usize> {
    let id = identity(item, key)?;
    list.iter()
        .position(|other| identity(other, key) == Some(id))
}

/// Kubernetes' `normalizeElementOrder`: elements named by `wanted` come in that order, the
/// others keep their order from `server`, and the two runs are interleaved so each server-only
/// element stays in front of the wanted elements it preceded on the server. Elements new to the
/// server therefore go before the server-only elements that follow them, as in Kubernetes.
fn normalize_order(
    merged: Vec<Value>,
    wanted: &[Value],
    server: &[Value],
    key: Option<&str>,
) -> Vec<Value> {
    let (mut from_patch, mut server_only): (Vec<Value>, Vec<Value>) = merged
        .into_iter()
        .partition(|item| position_in(wanted, item, key).is_some());
    from_patch.sort_by_key(|item| position_in(wanted, item, key).unwrap_or(usize::MAX));
    server_only.sort_by_key(|item| position_in(server, item, key).unwrap_or(usize::MAX));

    let mut out = Vec::with_capacity(from_patch.len() + server_only.len());
    let mut left = server_only.into_iter().peekable();
    let mut right = from_patch.into_iter().peekable();
    loop {
        let take_left = match (left.peek(), right.peek()) {
            (None, None) => break,
            (Some(_), None) => true,
            (None, Some(_)) => false,
            (Some(l), Some(r)) => {
                match (position_in(server, l, key), position_in(server, r, key)) {
                    (Some(li), Some(ri)) => li < ri,
                    _ => false,
                }
            }
        };
        let next = if take_left { left.next() } else { right.next() };
        if let Some(item) = next {
            out.push(item);
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    fn smp(kind: &str, original: &Value, patch: &Value) -> Result<Value, PatchError> {
        apply_patch(
            kind,
            original,
            patch.to_string().as_bytes(),
            PatchType::StrategicMerge,
        )
    }

    /// Fails the test if any `$`-key survived into a patched object.
    fn assert_no_directives(value: &Value, case: &str) {
        match value {
            Value::Object(map) => {
                for (k, v) in map {
                    assert!(!k.starts_with('$'), "{case}: directive {k} leaked");
                    assert_no_directives(v, case);
                }
            }
            Value::Array(list) => list.iter().for_each(|v| assert_no_directives(v, case)),
            _ => {}
        }
    }

    #[test]
    fn content_types_map_to_patch_types() {
        let cases = [
            ("application/json-patch+json", Some(PatchType::Json)),
            ("application/merge-patch+json", Some(PatchType::Merge)),
            (
                "application/strategic-merge-patch+json",
                Some(PatchType::StrategicMerge),
            ),
            (
                "application/strategic-merge-patch+json; charset=utf-8",
                Some(PatchType::StrategicMerge),
            ),
            ("Application/Merge-Patch+JSON", Some(PatchType::Merge)),
            ("application/apply-patch+yaml", None),
            ("application/json", None),
            ("", None),
        ];
        for (ct, want) in cases {
            assert_eq!(PatchType::from_content_type(ct), want, "{ct}");
            if let Some(ty) = want {
                assert_eq!(PatchType::from_content_type(ty.content_type()), Some(ty));
            }
        }
    }

    #[test]
    fn json_patches_apply_or_fail_with_the_right_error() {
        let pod = json!({
            "metadata": {"name": "web", "labels": {"app": "web"}},
            "spec": {"containers": [{"name": "c", "image": "a:1"}]}
        });
        type Check = fn(Result<Value, PatchError>);
        let cases: Vec<(&str, &str, Check)> = vec![
            (
                "replace an image",
                r#"[{"op":"replace","path":"/spec/containers/0/image","value":"a:2"}]"#,
                |r| assert_eq!(r.unwrap()["spec"]["containers"][0]["image"], "a:2"),
            ),
            (
                "add a label with an escaped key",
                r#"[{"op":"add","path":"/metadata/labels/example.com~1tier","value":"x"}]"#,
                |r| assert_eq!(r.unwrap()["metadata"]["labels"]["example.com/tier"], "x"),
            ),
            (
                "remove then test",
                r#"[{"op":"remove","path":"/metadata/labels/app"},
                    {"op":"test","path":"/metadata/labels","value":{}}]"#,
                |r| assert_eq!(r.unwrap()["metadata"]["labels"], json!({})),
            ),
            (
                "failed test is its own error",
                r#"[{"op":"test","path":"/metadata/name","value":"other"}]"#,
                |r| {
                    assert!(matches!(
                        r,
                        Err(PatchError::TestFailed { index: 0, ref path }) if path == "/metadata/name"
                    ))
                },
            ),
            (
                "missing path fails with the operation named",
                r#"[{"op":"add","path":"/metadata/labels/x","value":"1"},
                    {"op":"remove","path":"/spec/nope"}]"#,
                |r| {
                    let err = r.unwrap_err();
                    assert!(
                        matches!(
                            err,
                            PatchError::JsonPatchFailed {
                                index: 1,
                                op: "remove",
                                ..
                            }
                        ),
                        "{err}"
                    );
                },
            ),
            (
                "body that is not a list of operations",
                r#"{"op":"add"}"#,
                |r| assert!(matches!(r, Err(PatchError::InvalidJsonPatch(_)))),
            ),
            ("unknown op", r#"[{"op":"frobnicate","path":"/a"}]"#, |r| {
                assert!(matches!(r, Err(PatchError::InvalidJsonPatch(_))))
            }),
            (
                "replacing the root with a scalar",
                r#"[{"op":"replace","path":"","value":"x"}]"#,
                |r| assert!(matches!(r, Err(PatchError::PatchedNotAnObject))),
            ),
        ];
        for (name, patch, check) in cases {
            eprintln!("case: {name}");
            check(apply_patch("Pod", &pod, patch.as_bytes(), PatchType::Json));
        }
    }

    #[test]
    fn merge_patches_follow_rfc_7386() {
        let cm = json!({
            "metadata": {"name": "cm", "labels": {"a": "1", "b": "2"}},
            "data": {"k": "v"},
            "list": [1, 2, 3]
        });
        let ok = [
            (
                "null deletes and lists are replaced",
                json!({"metadata": {"labels": {"a": null, "c": "3"}}, "list": [9]}),
                json!({
                    "metadata": {"name": "cm", "labels": {"b": "2", "c": "3"}},
                    "data": {"k": "v"},
                    "list": [9]
                }),
            ),
            ("empty patch changes nothing", json!({}), cm.clone()),
        ];
        for (name, patch, want) in ok {
            let got = apply_patch(
                "ConfigMap",
                &cm,
                patch.to_string().as_bytes(),
                PatchType::Merge,
            );
            assert_eq!(got.unwrap(), want, "{name}");
        }
        let not_object = apply_patch("ConfigMap", &cm, b"[1]", PatchType::Merge);
        assert!(matches!(
            not_object,
            Err(PatchError::NotAnObject(PatchType::Merge))
        ));
        let not_json = apply_patch("ConfigMap", &cm, b"{", PatchType::Merge);
        assert!(matches!(not_json, Err(PatchError::InvalidJson { .. })));
    }

    #[test]
    fn strategy_table_follows_kubernetes_tags() {
        use ListStrategy::{MergeByKey, MergePrimitive, Replace};
        let cases: &[(&str, &[&str], ListStrategy)] = &[
            ("Pod", &["spec", "containers"], MergeByKey("name")),
            (
                "Pod",
                &["spec", "initContainers", "env"],
                MergeByKey("name"),
            ),
            (
                "Pod",
                &["spec", "containers", "ports"],
                MergeByKey("containerPort"),
            ),
            (
                "Pod",
                &["spec", "containers", "volumeMounts"],
                MergeByKey("mountPath"),
            ),
            (
                "Pod",
                &["spec", "containers", "volumeDevices"],
                MergeByKey("devicePath"),
            ),
            ("Pod", &["spec", "containers", "resizePolicy"], Replace),
            ("Pod", &["spec", "containers", "args"], Replace),
            ("Pod", &["spec", "ephemeralContainers"], MergeByKey("name")),
            ("Pod", &["spec", "volumes"], MergeByKey("name")),
            ("Pod", &["spec", "imagePullSecrets"], MergeByKey("name")),
            ("Pod", &["spec", "hostAliases"], MergeByKey("ip")),
            ("Pod", &["spec", "tolerations"], Replace),
            (
                "Pod",
                &["spec", "topologySpreadConstraints"],
                MergeByKey("topologyKey"),
            ),
            ("Pod", &["spec", "schedulingGates"], MergeByKey("name")),
            ("Pod", &["spec", "resourceClaims"], MergeByKey("name")),
            ("Pod", &["status", "conditions"], MergeByKey("type")),
            ("Pod", &["status", "podIPs"], MergeByKey("ip")),
            ("Pod", &["status", "containerStatuses"], Replace),
            ("Pod", &["metadata", "finalizers"], MergePrimitive),
            ("Pod", &["metadata", "ownerReferences"], MergeByKey("uid")),
            ("Pod", &["metadata", "managedFields"], Replace),
            (
                "Deployment",
                &["spec", "template", "spec", "containers"],
                MergeByKey("name"),
            ),
            (
                "Deployment",
                &["spec", "template", "spec", "containers", "env"],
                MergeByKey("name"),
            ),
            (
                "Deployment",
                &["spec", "template", "metadata", "finalizers"],
                MergePrimitive,
            ),
            ("Deployment", &["spec", "containers"], Replace),
            ("Deployment", &["status", "conditions"], MergeByKey("type")),
            (
                "DaemonSet",
                &["spec", "template", "spec", "volumes"],
                MergeByKey("name"),
            ),
            (
                "Job",
                &["spec", "template", "spec", "initContainers"],
                MergeByKey("name"),
            ),
            ("Job", &["status", "conditions"], MergeByKey("type")),
            (
                "CronJob",
                &[
                    "spec",
                    "jobTemplate",
                    "spec",
                    "template",
                    "spec",
                    "containers",
                ],
                MergeByKey("name"),
            ),
            ("ReplicaSet", &["status", "conditions"], MergeByKey("type")),
            ("Service", &["spec", "ports"], MergeByKey("port")),
            ("Service", &["spec", "ipFamilies"], Replace),
            ("Node", &["spec", "taints"], Replace),
            ("Node", &["spec", "podCIDRs"], MergePrimitive),
            ("Node", &["status", "addresses"], MergeByKey("type")),
            ("Node", &["status", "conditions"], MergeByKey("type")),
            ("Node", &["status", "images"], Replace),
            ("Namespace", &["status", "conditions"], MergeByKey("type")),
            ("ServiceAccount", &["secrets"], MergeByKey("name")),
            ("ServiceAccount", &["imagePullSecrets"], Replace),
            ("Endpoints", &["subsets"], Replace),
            ("EndpointSlice", &["endpoints"], Replace),
            (
                "HorizontalPodAutoscaler",
                &["status", "conditions"],
                MergeByKey("type"),
            ),
            ("HorizontalPodAutoscaler", &["spec", "metrics"], Replace),
            ("ConfigMap", &["metadata", "finalizers"], MergePrimitive),
            ("Widget", &["spec", "containers"], Replace),
        ];
        for (kind, path, want) in cases {
            assert_eq!(strategy(kind, path), *want, "{kind} {path:?}");
        }
    }

    struct Case {
        name: &'static str,
        kind: &'static str,
        original: Value,
        patch: Value,
        want: Value,
    }

    #[test]
    fn strategic_merge_patches_merge_like_kubernetes() {
        let cases = vec![
            Case {
                name: "null deletes a map key and unmatched nulls are ignored",
                kind: "ConfigMap",
                original: json!({"metadata": {"labels": {"a": "1", "b": "2"}}, "data": {"k": "v"}}),
                patch: json!({"metadata": {"labels": {"a": null, "zz": null}}, "data": {"n": "m"}}),
                want: json!({"metadata": {"labels": {"b": "2"}}, "data": {"k": "v", "n": "m"}}),
            },
            Case {
                name: "containers merge by name",
                kind: "Pod",
                original: json!({"spec": {"containers": [
                    {"name": "a", "image": "a:1", "args": ["x"]},
                    {"name": "b", "image": "b:1"}
                ]}}),
                patch: json!({"spec": {"containers": [{"name": "b", "image": "b:2"}]}}),
                want: json!({"spec": {"containers": [
                    {"name": "a", "image": "a:1", "args": ["x"]},
                    {"name": "b", "image": "b:2"}
                ]}}),
            },
            Case {
                name: "a new element without $setElementOrder goes first, as in kubernetes",
                kind: "Pod",
                original: json!({"spec": {"containers": [{"name": "a", "env": [
                    {"name": "A", "value": "1"}, {"name": "B", "value": "2"}
                ]}]}}),
                patch: json!({"spec": {"containers": [{"name": "a", "env": [
                    {"name": "C", "value": "3"}
                ]}]}}),
                want: json!({"spec": {"containers": [{"name": "a", "env": [
                    {"name": "C", "value": "3"}, {"name": "A", "value": "1"}, {"name": "B", "value": "2"}
                ]}]}}),
            },
            Case {
                name: "env var added by name in $setElementOrder position",
                kind: "Pod",
                original: json!({"spec": {"containers": [{"name": "a", "env": [
                    {"name": "A", "value": "1"}, {"name": "B", "value": "2"}
                ]}]}}),
                patch: json!({"spec": {
                    "$setElementOrder/containers": [{"name": "a"}],
                    "containers": [{
                        "name": "a",
                        "$setElementOrder/env": [{"name": "A"}, {"name": "C"}, {"name": "B"}],
                        "env": [{"name": "C", "value": "3"}]
                    }]
                }}),
                want: json!({"spec": {"containers": [{"name": "a", "env": [
                    {"name": "A", "value": "1"}, {"name": "C", "value": "3"}, {"name": "B", "value": "2"}
                ]}]}}),
            },
            Case {
                name: "env var removed by name",
                kind: "Pod",
                original: json!({"spec": {"containers": [{"name": "a", "env": [
                    {"name": "A", "value": "1"}, {"name": "B", "value": "2"}
                ]}]}}),
                patch: json!({"spec": {"containers": [{
                    "name": "a",
                    "$setElementOrder/env": [{"name": "A"}],
                    "env": [{"$patch": "delete", "name": "B"}]
                }]}}),
                want: json!({"spec": {"containers": [{"name": "a", "env": [
                    {"name": "A", "value": "1"}
                ]}]}}),
            },
            Case {
                name: "container deleted with $patch: delete",
                kind: "Deployment",
                original: json!({"spec": {"template": {"spec": {"containers": [
                    {"name": "app", "image": "app:1"}, {"name": "sidecar", "image": "s:1"}
                ]}}}}),
                patch: json!({"spec": {"template": {"spec": {
                    "$setElementOrder/containers": [{"name": "app"}],
                    "containers": [{"$patch": "delete", "name": "sidecar"}]
                }}}}),
                want: json!({"spec": {"template": {"spec": {"containers": [
                    {"name": "app", "image": "app:1"}
                ]}}}}),
            },
            Case {
                name: "lists without a strategy are replaced wholesale",
                kind: "Pod",
                original: json!({"spec": {
                    "tolerations": [{"key": "a", "operator": "Exists"}, {"key": "b", "operator": "Exists"}],
                    "containers": [{"name": "c", "args": ["1", "2"]}]
                }}),
                patch: json!({"spec": {
                    "tolerations": [{"key": "c", "operator": "Exists", "value": null}],
                    "containers": [{"name": "c", "args": ["3"]}]
                }}),
                want: json!({"spec": {
                    "tolerations": [{"key": "c", "operator": "Exists"}],
                    "containers": [{"name": "c", "args": ["3"]}]
                }}),
            },
            Case {
                name: "finalizers are set-unioned",
                kind: "ConfigMap",
                original: json!({"metadata": {"finalizers": ["a", "b"]}}),
                patch: json!({"metadata": {"finalizers": ["b", "c"]}}),
                want: json!({"metadata": {"finalizers": ["a", "b", "c"]}}),
            },
            Case {
                name: "$deleteFromPrimitiveList removes finalizers",
                kind: "Pod",
                original: json!({"metadata": {"finalizers": ["a", "b", "c"]}}),
                patch: json!({"metadata": {"$deleteFromPrimitiveList/finalizers": ["b", "z"]}}),
                want: json!({"metadata": {"finalizers": ["a", "c"]}}),
            },
            Case {
                name: "finalizers added, removed and ordered in one patch",
                kind: "Pod",
                original: json!({"metadata": {"finalizers": ["a", "b"]}}),
                patch: json!({"metadata": {
                    "$setElementOrder/finalizers": ["c", "a"],
                    "$deleteFromPrimitiveList/finalizers": ["b"],
                    "finalizers": ["c"]
                }}),
                want: json!({"metadata": {"finalizers": ["c", "a"]}}),
            },
            Case {
                name: "$retainKeys switches a volume source",
                kind: "Pod",
                original: json!({"spec": {"volumes": [
                    {"name": "v", "emptyDir": {}},
                    {"name": "w", "emptyDir": {}}
                ]}}),
                patch: json!({"spec": {
                    "$setElementOrder/volumes": [{"name": "v"}, {"name": "w"}],
                    "volumes": [{
                        "$retainKeys": ["configMap", "name"],
                        "name": "v",
                        "configMap": {"name": "cm"},
                        "emptyDir": null
                    }]
                }}),
                want: json!({"spec": {"volumes": [
                    {"name": "v", "configMap": {"name": "cm"}},
                    {"name": "w", "emptyDir": {}}
                ]}}),
            },
            Case {
                name: "$retainKeys on a deployment strategy",
                kind: "Deployment",
                original: json!({"spec": {"strategy": {
                    "type": "RollingUpdate",
                    "rollingUpdate": {"maxSurge": 1, "maxUnavailable": 0}
                }}}),
                patch: json!({"spec": {"strategy": {
                    "$retainKeys": ["type"], "type": "Recreate", "rollingUpdate": null
                }}}),
                want: json!({"spec": {"strategy": {"type": "Recreate"}}}),
            },
            Case {
                name: "$patch: replace on a map",
                kind: "Deployment",
                original: json!({"spec": {"template": {"metadata": {"labels": {"a": "1", "b": "2"}}}}}),
                patch: json!({"spec": {"template": {"metadata": {"labels": {"$patch": "replace", "c": "3"}}}}}),
                want: json!({"spec": {"template": {"metadata": {"labels": {"c": "3"}}}}}),
            },
            Case {
                name: "$patch: replace on a list",
                kind: "Pod",
                original: json!({"spec": {"containers": [{"name": "a", "image": "a"}, {"name": "b", "image": "b"}]}}),
                patch: json!({"spec": {"containers": [{"$patch": "replace"}, {"name": "c", "image": "c"}]}}),
                want: json!({"spec": {"containers": [{"name": "c", "image": "c"}]}}),
            },
            Case {
                name: "$patch: delete on a map removes it",
                kind: "Pod",
                original: json!({"spec": {"securityContext": {"runAsUser": 1}, "nodeName": "n"}}),
                patch: json!({"spec": {"securityContext": {"$patch": "delete"}}}),
                want: json!({"spec": {"nodeName": "n"}}),
            },
            Case {
                name: "$patch: merge is plain merging",
                kind: "Pod",
                original: json!({"metadata": {"labels": {"a": "1"}}}),
                patch: json!({"metadata": {"labels": {"$patch": "merge", "b": "2"}}}),
                want: json!({"metadata": {"labels": {"a": "1", "b": "2"}}}),
            },
            Case {
                name: "$setElementOrder alone reorders and keeps server-only elements",
                kind: "Pod",
                original: json!({"spec": {"containers": [
                    {"name": "a"}, {"name": "b"}, {"name": "injected"}
                ]}}),
                patch: json!({"spec": {"$setElementOrder/containers": [{"name": "b"}, {"name": "a"}]}}),
                want: json!({"spec": {"containers": [
                    {"name": "b"}, {"name": "a"}, {"name": "injected"}
                ]}}),
            },
            Case {
                name: "a list the original lacks is built from the patch without directives",
                kind: "Pod",
                original: json!({"spec": {}}),
                patch: json!({"spec": {
                    "$setElementOrder/containers": [{"name": "b"}, {"name": "a"}],
                    "containers": [
                        {"name": "a", "env": [{"name": "X", "value": null}, {"$patch": "delete", "name": "Y"}]},
                        {"name": "b", "securityContext": {"$patch": "replace", "runAsUser": 2}}
                    ]
                }}),
                want: json!({"spec": {"containers": [
                    {"name": "b", "securityContext": {"runAsUser": 2}},
                    {"name": "a", "env": [{"name": "X"}]}
                ]}}),
            },
            Case {
                name: "service ports merge by port",
                kind: "Service",
                original: json!({"spec": {"ports": [
                    {"name": "http", "port": 80, "targetPort": 8080},
                    {"name": "https", "port": 443, "targetPort": 8443}
                ]}}),
                patch: json!({"spec": {
                    "$setElementOrder/ports": [{"port": 80}, {"port": 443}],
                    "ports": [{"port": 80, "targetPort": 9090}]
                }}),
                want: json!({"spec": {"ports": [
                    {"name": "http", "port": 80, "targetPort": 9090},
                    {"name": "https", "port": 443, "targetPort": 8443}
                ]}}),
            },
            Case {
                name: "node taints are replaced and status lists merge by type",
                kind: "Node",
                original: json!({
                    "spec": {"taints": [{"key": "a", "effect": "NoSchedule"}]},
                    "status": {
                        "conditions": [
                            {"type": "Ready", "status": "False"},
                            {"type": "MemoryPressure", "status": "False"}
                        ],
                        "addresses": [{"type": "InternalIP", "address": "10.0.0.1"}]
                    }
                }),
                patch: json!({
                    "spec": {"taints": [{"key": "b", "effect": "NoExecute"}]},
                    "status": {
                        "$setElementOrder/conditions": [{"type": "Ready"}, {"type": "MemoryPressure"}],
                        "conditions": [{"type": "Ready", "status": "True"}],
                        "addresses": [{"type": "Hostname", "address": "n1"}]
                    }
                }),
                want: json!({
                    "spec": {"taints": [{"key": "b", "effect": "NoExecute"}]},
                    "status": {
                        "conditions": [
                            {"type": "Ready", "status": "True"},
                            {"type": "MemoryPressure", "status": "False"}
                        ],
                        "addresses": [
                            {"type": "Hostname", "address": "n1"},
                            {"type": "InternalIP", "address": "10.0.0.1"}
                        ]
                    }
                }),
            },
            Case {
                name: "kubelet-style pod status patch",
                kind: "Pod",
                original: json!({"status": {
                    "phase": "Pending",
                    "conditions": [{"type": "PodScheduled", "status": "True"}],
                    "containerStatuses": [{"name": "c", "ready": false}]
                }}),
                patch: json!({"status": {
                    "$setElementOrder/conditions": [
                        {"type": "Initialized"}, {"type": "Ready"}, {"type": "PodScheduled"}
                    ],
                    "conditions": [
                        {"type": "Initialized", "status": "True"},
                        {"type": "Ready", "status": "True"}
                    ],
                    "containerStatuses": [{"name": "c", "ready": true}],
                    "phase": "Running",
                    "podIP": "10.1.0.5",
                    "podIPs": [{"ip": "10.1.0.5"}]
                }}),
                want: json!({"status": {
                    "phase": "Running",
                    "conditions": [
                        {"type": "Initialized", "status": "True"},
                        {"type": "Ready", "status": "True"},
                        {"type": "PodScheduled", "status": "True"}
                    ],
                    "containerStatuses": [{"name": "c", "ready": true}],
                    "podIP": "10.1.0.5",
                    "podIPs": [{"ip": "10.1.0.5"}]
                }}),
            },
            Case {
                name: "daemonset volume mounts merge by mountPath",
                kind: "DaemonSet",
                original: json!({"spec": {"template": {"spec": {"containers": [{"name": "c", "volumeMounts": [
                    {"name": "a", "mountPath": "/a"}, {"name": "b", "mountPath": "/b"}
                ]}]}}}}),
                patch: json!({"spec": {"template": {"spec": {"containers": [{"name": "c", "volumeMounts": [
                    {"mountPath": "/b", "readOnly": true}
                ]}]}}}}),
                want: json!({"spec": {"template": {"spec": {"containers": [{"name": "c", "volumeMounts": [
                    {"name": "a", "mountPath": "/a"}, {"name": "b", "mountPath": "/b", "readOnly": true}
                ]}]}}}}),
            },
            Case {
                name: "job template container ports merge by containerPort",
                kind: "Job",
                original: json!({"spec": {"template": {"spec": {"containers": [{"name": "c", "ports": [
                    {"containerPort": 80, "name": "http"}
                ]}]}}}}),
                patch: json!({"spec": {"template": {"spec": {"containers": [{"name": "c", "ports": [
                    {"containerPort": 80, "protocol": "TCP"}
                ]}]}}}}),
                want: json!({"spec": {"template": {"spec": {"containers": [{"name": "c", "ports": [
                    {"containerPort": 80, "name": "http", "protocol": "TCP"}
                ]}]}}}}),
            },
            Case {
                name: "owner references merge by uid",
                kind: "ReplicaSet",
                original: json!({"metadata": {"ownerReferences": [
                    {"uid": "1", "name": "d", "controller": true}
                ]}}),
                patch: json!({"metadata": {"ownerReferences": [
                    {"uid": "1", "blockOwnerDeletion": true}, {"uid": "2", "name": "e"}
                ]}}),
                want: json!({"metadata": {"ownerReferences": [
                    {"uid": "1", "name": "d", "controller": true, "blockOwnerDeletion": true},
                    {"uid": "2", "name": "e"}
                ]}}),
            },
            Case {
                name: "a value of another type is replaced",
                kind: "ConfigMap",
                original: json!({"data": "oops"}),
                patch: json!({"data": {"k": "v", "gone": null}}),
                want: json!({"data": {"k": "v"}}),
            },
            Case {
                name: "scale subresource",
                kind: "Scale",
                original: json!({"spec": {"replicas": 1}, "status": {"replicas": 1}}),
                patch: json!({"spec": {"replicas": 3}}),
                want: json!({"spec": {"replicas": 3}, "status": {"replicas": 1}}),
            },
            Case {
                name: "topology spread constraints merge by topologyKey",
                kind: "Pod",
                original: json!({"spec": {"topologySpreadConstraints": [
                    {"topologyKey": "zone", "maxSkew": 1, "whenUnsatisfiable": "DoNotSchedule"}
                ]}}),
                patch: json!({"spec": {"topologySpreadConstraints": [
                    {"topologyKey": "zone", "maxSkew": 2}
                ]}}),
                want: json!({"spec": {"topologySpreadConstraints": [
                    {"topologyKey": "zone", "maxSkew": 2, "whenUnsatisfiable": "DoNotSchedule"}
                ]}}),
            },
        ];
        for case in cases {
            let got = smp(case.kind, &case.original, &case.patch)
                .unwrap_or_else(|e| panic!("{}: {e}", case.name));
            assert_eq!(got, case.want, "{}", case.name);
            assert_no_directives(&got, case.name);
        }
    }

    /// The patch kubectl 1.32 `apply` sends after a manifest changes an image, adds an env
    /// var, drops a container and a label.
    #[test]
    fn kubectl_apply_patch_updates_a_deployment() {
        let last_applied = r#"{"apiVersion":"apps/v1","kind":"Deployment","metadata":{"annotations":{},"name":"web","namespace":"default"},"spec":{"selector":{"matchLabels":{"app":"web"}},"template":{"metadata":{"labels":{"app":"web"}},"spec":{"containers":[{"env":[{"name":"A","value":"1"},{"name":"B","value":"2"}],"image":"web:2","name":"web"}]}}}}"#;
        let original = json!({
            "apiVersion": "apps/v1",
            "kind": "Deployment",
            "metadata": {
                "name": "web",
                "namespace": "default",
                "annotations": {
                    "deployment.kubernetes.io/revision": "1",
                    "kubectl.kubernetes.io/last-applied-configuration": "{}"
                },
                "labels": {"team": "x"}
            },
            "spec": {
                "replicas": 2,
                "selector": {"matchLabels": {"app": "web"}},
                "template": {
                    "metadata": {"labels": {"app": "web"}},
                    "spec": {
                        "containers": [
                            {"name": "web", "image": "web:1", "env": [{"name": "A", "value": "1"}],
                             "resources": {}, "terminationMessagePath": "/dev/termination-log"},
                            {"name": "old", "image": "old:1"}
                        ],
                        "restartPolicy": "Always"
                    }
                }
            },
            "status": {"replicas": 2}
        });
        let patch = json!({
            "metadata": {
                "annotations": {"kubectl.kubernetes.io/last-applied-configuration": last_applied},
                "labels": null
            },
            "spec": {"template": {"spec": {
                "$setElementOrder/containers": [{"name": "web"}],
                "containers": [
                    {
                        "$setElementOrder/env": [{"name": "A"}, {"name": "B"}],
                        "env": [{"name": "B", "value": "2"}],
                        "image": "web:2",
                        "name": "web"
                    },
                    {"$patch": "delete", "name": "old"}
                ]
            }}}
        });
        let got = smp("Deployment", &original, &patch).unwrap();
        assert_no_directives(&got, "kubectl apply");
        assert_eq!(
            got["metadata"]["annotations"]["kubectl.kubernetes.io/last-applied-configuration"],
            last_applied
        );
        assert_eq!(
            got["metadata"]["annotations"]["deployment.kubernetes.io/revision"],
            "1"
        );
        assert!(got["metadata"].get("labels").is_none());
        assert_eq!(
            got["spec"]["template"]["spec"]["containers"],
            json!([{
                "name": "web",
                "image": "web:2",
                "env": [{"name": "A", "value": "1"}, {"name": "B", "value": "2"}],
                "resources": {},
                "terminationMessagePath": "/dev/termination-log"
            }])
        );
        assert_eq!(got["spec"]["replicas"], 2);
        assert_eq!(got["status"], json!({"replicas": 2}));
    }

    #[test]
    fn malformed_strategic_merge_patches_are_rejected() {
        let pod = json!({"metadata": {"name": "p"}, "spec": {"containers": [{"name": "c"}]}});
        let cases = [
            (
                "unknown directive",
                json!({"spec": {"$frob": 1}}),
                "unknown directive $frob",
            ),
            (
                "unknown $patch",
                json!({"spec": {"$patch": "bogus"}}),
                "unknown $patch",
            ),
            (
                "unknown $patch in a list",
                json!({"spec": {"containers": [{"name": "c", "$patch": "bogus"}]}}),
                "unknown $patch",
            ),
            (
                "element without its merge key",
                json!({"spec": {"containers": [{"image": "x"}]}}),
                "no merge key name",
            ),
            (
                "delete without its merge key",
                json!({"spec": {"containers": [{"$patch": "delete"}]}}),
                "no merge key name",
            ),
            (
                "scalar in a keyed list",
                json!({"spec": {"containers": ["c"]}}),
                "must be objects",
            ),
            (
                "object in a primitive list",
                json!({"metadata": {"finalizers": [{"a": 1}]}}),
                "cannot contain objects",
            ),
            (
                "field outside $retainKeys",
                json!({"spec": {"$retainKeys": ["containers"], "nodeName": "n"}}),
                "not in $retainKeys",
            ),
            (
                "$retainKeys not a list",
                json!({"spec": {"$retainKeys": "x"}}),
                "$retainKeys",
            ),
            (
                "$setElementOrder not a list",
                json!({"spec": {"$setElementOrder/containers": {}}}),
                "must be a list",
            ),
        ];
        for (name, patch, want) in cases {
            let err = smp("Pod", &pod, &patch).expect_err(name);
            assert!(
                matches!(err, PatchError::InvalidStrategicMerge { .. }),
                "{name}: {err}"
            );
            assert!(err.to_string().contains(want), "{name}: {err}");
        }
        let whole = smp("Pod", &pod, &json!({"$patch": "delete"}));
        assert!(matches!(whole, Err(PatchError::PatchedNotAnObject)));
        let list = apply_patch("Pod", &pod, b"[]", PatchType::StrategicMerge);
        assert!(matches!(
            list,
            Err(PatchError::NotAnObject(PatchType::StrategicMerge))
        ));
    }

    #[test]
    fn error_messages_are_lower_case_and_name_the_place() {
        let pod = json!({"spec": {"containers": [{"name": "c"}]}});
        let err = smp(
            "Pod",
            &pod,
            &json!({"spec": {"containers": [{"image": "x"}]}}),
        )
        .unwrap_err();
        assert_eq!(
            err.to_string(),
            "invalid strategic merge patch at 'spec.containers': list element has no merge key name"
        );
        let err = apply_patch(
            "Pod",
            &pod,
            br#"[{"op":"test","path":"/spec","value":1}]"#,
            PatchType::Json,
        )
        .unwrap_err();
        assert_eq!(
            err.to_string(),
            "json patch test operation 0 failed: the value at '/spec' does not match"
        );
    }
}
