//! StorageClasses as kube-apiserver's DefaultStorageClass admission plugin reads them: a new
//! PersistentVolumeClaim that names no class (`storageClassName` absent; an empty string means
//! "no class") gets the default one, the class annotated
//! `storageclass.kubernetes.io/is-default-class: "true"` (the newest, when several are).
//!
//! Every cluster has the class `local-path` (see [`local_path_class`]), which the
//! persistent-volume controller provisions as a directory on the node of the claim's first pod.

use serde_json::{Value, json};

use super::api::{Api, ListParams};
use super::error::ApiResult;
use super::resources::{self, ResourceInfo};

/// The annotation that makes a class the default.
pub const DEFAULT_CLASS_ANNOTATION: &str = "storageclass.kubernetes.io/is-default-class";
/// The provisioner of node-local directories (also the CSI driver name of the volumes it
/// makes, which the node agent mounts).
pub const LOCAL_PATH_PROVISIONER: &str = "flotilla.dev/local-path";
/// The built-in class's name.
pub const LOCAL_PATH_CLASS: &str = "local-path";

/// The `storageclasses` resource.
pub fn storage_classes() -> &'static ResourceInfo {
    resources::find("storage.k8s.io", "v1", "storageclasses").expect("storageclasses served")
}

/// Whether `class` is marked the default.
pub fn is_default(class: &Value) -> bool {
    class["metadata"]["annotations"][DEFAULT_CLASS_ANNOTATION] == "true"
}

/// The built-in default class: node-local directories, provisioned once the claim's first pod
/// is scheduled (as k3s's `local-path`), deleted with their claim.
pub fn local_path_class() -> Value {
    json!({
        "apiVersion": "storage.k8s.io/v1", "kind": "StorageClass",
        "metadata": {
            "name": LOCAL_PATH_CLASS,
            "annotations": {DEFAULT_CLASS_ANNOTATION: "true"},
            "labels": {"app.kubernetes.io/managed-by": "flotilla"},
        },
        "provisioner": LOCAL_PATH_PROVISIONER,
        "reclaimPolicy": "Delete",
        "volumeBindingMode": "WaitForFirstConsumer",
    })
}

/// The default class among `classes`: the newest marked default (name order breaks ties).
pub fn default_class(classes: &[Value]) -> Option<&Value> {
    classes.iter().filter(|c| is_default(c)).max_by(|a, b| {
        let created = |c: &Value| {
            c["metadata"]["creationTimestamp"]
                .as_str()
                .unwrap_or("")
                .to_string()
        };
        created(a).cmp(&created(b)).then_with(|| {
            b["metadata"]["name"]
                .as_str()
                .cmp(&a["metadata"]["name"].as_str())
        })
    })
}

/// The finalizer that keeps a claim while a pod uses it (kube-apiserver's
/// StorageObjectInUseProtection admission adds it; the persistent-volume controller removes it).
pub const CLAIM_PROTECTION_FINALIZER: &str = "kubernetes.io/pvc-protection";

/// The finalizer that keeps a volume while a claim is bound to it (kube-apiserver's
/// StorageObjectInUseProtection admission adds it).
pub const VOLUME_PROTECTION_FINALIZER: &str = "kubernetes.io/pv-protection";

/// Admits a new volume: it gets the [`VOLUME_PROTECTION_FINALIZER`].
pub fn admit_volume(volume: &mut Value) {
    add_finalizer(volume, VOLUME_PROTECTION_FINALIZER);
}

fn add_finalizer(obj: &mut Value, finalizer: &str) {
    let finalizers = &mut obj["metadata"]["finalizers"];
    if !finalizers.is_array() {
        *finalizers = json!([]);
    }
    if let Some(list) = finalizers.as_array_mut()
        && !list.iter().any(|f| f == finalizer)
    {
        list.push(json!(finalizer));
    }
}

/// Admits a new claim: it gets the [`CLAIM_PROTECTION_FINALIZER`], and, without
/// `storageClassName`, the default class's name, if there is one.
pub async fn admit_claim(api: &Api, claim: &mut Value) -> ApiResult<()> {
    add_finalizer(claim, CLAIM_PROTECTION_FINALIZER);
    if !claim["spec"]["storageClassName"].is_null() {
        return Ok(());
    }
    let (classes, _, _) = api
        .list(storage_classes(), None, &ListParams::default())
        .await?;
    if let Some(name) = default_class(&classes).and_then(|c| c["metadata"]["name"].as_str()) {
        claim["spec"]["storageClassName"] = json!(name);
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn class(name: &str, default: bool, created: &str) -> Value {
        let mut c = json!({"metadata": {"name": name, "creationTimestamp": created}});
        if default {
            c["metadata"]["annotations"] = json!({DEFAULT_CLASS_ANNOTATION: "true"});
        }
        c
    }

    #[test]
    fn the_newest_class_marked_default_is_the_default() {
        let classes = [
            class("a", true, "2026-01-01T00:00:00Z"),
            class("b", true, "2026-02-01T00:00:00Z"),
            class("c", false, "2026-03-01T00:00:00Z"),
        ];
        assert_eq!(default_class(&classes).unwrap()["metadata"]["name"], "b");
        assert!(default_class(&classes[2..]).is_none());
        assert!(is_default(&local_path_class()));
    }
}
