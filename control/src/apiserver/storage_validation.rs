//! What kube-apiserver checks in PersistentVolumeClaims (and StatefulSets' claim templates),
//! PersistentVolumes and StorageClasses, with its messages and field paths
//! (`pkg/apis/core/validation`, `pkg/apis/storage/validation`).

use serde_json::Value;

use super::error::Cause;
use super::validation::{items, shown};
use crate::scheduler::quantity::Quantity;

/// The access modes a claim or volume may ask for.
const ACCESS_MODES: &[&str] = &[
    "ReadOnlyMany",
    "ReadWriteMany",
    "ReadWriteOnce",
    "ReadWriteOncePod",
];
const VOLUME_MODES: &[&str] = &["Block", "Filesystem"];

/// The volume sources a PersistentVolume can name (exactly one).
const PERSISTENT_SOURCES: &[&str] = &[
    "hostPath",
    "local",
    "csi",
    "nfs",
    "iscsi",
    "glusterfs",
    "rbd",
    "flexVolume",
    "cinder",
    "cephfs",
    "fc",
    "flocker",
    "azureFile",
    "vsphereVolume",
    "quobyte",
    "azureDisk",
    "photonPersistentDisk",
    "portworxVolume",
    "scaleIO",
    "storageos",
    "gcePersistentDisk",
    "awsElasticBlockStore",
];

fn access_modes(modes: &Value, path: &str, causes: &mut Vec<Cause>) {
    let list = items(modes);
    if list.is_empty() {
        causes.push(Cause {
            reason: "FieldValueRequired",
            message: "Required value: at least 1 access mode is required".into(),
            field: path.into(),
        });
        return;
    }
    for m in list {
        let m = shown(m);
        if !ACCESS_MODES.contains(&m.as_str()) {
            causes.push(Cause::not_supported(path, m, ACCESS_MODES));
        }
    }
    if list.len() > 1 && list.iter().any(|m| m == "ReadWriteOncePod") {
        causes.push(Cause::forbidden(
            path,
            "may not use ReadWriteOncePod with other access modes",
        ));
    }
}

fn volume_mode(mode: &Value, path: &str, causes: &mut Vec<Cause>) {
    if let Some(m) = mode.as_str()
        && !VOLUME_MODES.contains(&m)
    {
        causes.push(Cause::not_supported(path, m, VOLUME_MODES));
    }
}

/// A storage quantity at `field`: present, well formed and above zero.
fn storage(v: &Value, field: &str, causes: &mut Vec<Cause>) {
    if v.is_null() {
        causes.push(Cause::required(field));
        return;
    }
    let text = shown(v);
    match Quantity::parse(&text) {
        Err(e) => causes.push(Cause::invalid(field, &text, e.to_string())),
        Ok(q) if q.milli_value() <= 0 => {
            causes.push(Cause::invalid(field, &text, "must be greater than zero"));
        }
        Ok(_) => {}
    }
}

/// A claim's spec at `path` (a PersistentVolumeClaim's, or a StatefulSet's claim template's).
pub fn claim_spec(spec: &Value, path: &str, causes: &mut Vec<Cause>) {
    access_modes(&spec["accessModes"], &format!("{path}.accessModes"), causes);
    storage(
        &spec["resources"]["requests"]["storage"],
        &format!("{path}.resources[storage]"),
        causes,
    );
    volume_mode(&spec["volumeMode"], &format!("{path}.volumeMode"), causes);
}

/// What a claim update may change: its requests (expansion), and its `volumeName` once, when
/// it is bound.
pub fn claim_update(new: &Value, old: &Value, causes: &mut Vec<Cause>) {
    let fixed = |spec: &Value| {
        let mut s = spec.clone();
        if let Some(m) = s.as_object_mut() {
            m.remove("resources");
            if old["volumeName"].as_str().is_none_or(str::is_empty) {
                m.remove("volumeName");
            }
            m.retain(|_, v| !v.is_null());
        }
        s
    };
    if fixed(new) != fixed(old) {
        causes.push(Cause::forbidden(
            "spec",
            "spec is immutable after creation except resources.requests and \
             volumeAttributesClassName for bound claims",
        ));
    }
}

/// A PersistentVolume's spec.
pub fn persistent_volume(spec: &Value, causes: &mut Vec<Cause>) {
    access_modes(&spec["accessModes"], "spec.accessModes", causes);
    if spec["capacity"].is_null() {
        causes.push(Cause::required("spec.capacity"));
    } else {
        storage(
            &spec["capacity"]["storage"],
            "spec.capacity[storage]",
            causes,
        );
    }
    volume_mode(&spec["volumeMode"], "spec.volumeMode", causes);
    const POLICIES: &[&str] = &["Delete", "Recycle", "Retain"];
    if let Some(p) = spec["persistentVolumeReclaimPolicy"].as_str()
        && !POLICIES.contains(&p)
    {
        causes.push(Cause::not_supported(
            "spec.persistentVolumeReclaimPolicy",
            p,
            POLICIES,
        ));
    }
    super::volume_validation::one_source(spec, PERSISTENT_SOURCES, "spec", causes);
    if !spec["local"].is_null() && spec["nodeAffinity"].is_null() {
        causes.push(Cause {
            reason: "FieldValueRequired",
            message: "Required value: Local volume requires node affinity".into(),
            field: "spec.nodeAffinity".into(),
        });
    }
    for (source, field) in [("hostPath", "path"), ("local", "path")] {
        if !spec[source].is_null() && spec[source][field].as_str().is_none_or(str::is_empty) {
            causes.push(Cause::required(format!("spec.{source}.{field}")));
        }
    }
}

/// A StorageClass.
pub fn storage_class(obj: &Value, causes: &mut Vec<Cause>) {
    if obj["provisioner"].as_str().is_none_or(str::is_empty) {
        causes.push(Cause::required("provisioner"));
    }
    const POLICIES: &[&str] = &["Delete", "Retain"];
    if let Some(p) = obj["reclaimPolicy"].as_str()
        && !POLICIES.contains(&p)
    {
        causes.push(Cause::not_supported("reclaimPolicy", p, POLICIES));
    }
    const MODES: &[&str] = &["Immediate", "WaitForFirstConsumer"];
    if let Some(m) = obj["volumeBindingMode"].as_str()
        && !MODES.contains(&m)
    {
        causes.push(Cause::not_supported("volumeBindingMode", m, MODES));
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    use crate::apiserver::error::cause_fields as fields;

    #[test]
    fn a_claim_needs_access_modes_and_a_positive_storage_request() {
        let good = json!({"accessModes": ["ReadWriteOnce"], "resources": {"requests": {"storage": "1Gi"}}});
        assert!(fields(|c| claim_spec(&good, "spec", c)).is_empty());
        let bad = json!({"accessModes": ["ReadWriteSometimes"], "resources": {"requests": {"storage": "0"}}, "volumeMode": "Tape"});
        assert_eq!(
            fields(|c| claim_spec(&bad, "spec", c)),
            [
                "spec.accessModes",
                "spec.resources[storage]",
                "spec.volumeMode"
            ]
        );
        assert_eq!(
            fields(|c| claim_spec(&json!({}), "spec", c)),
            ["spec.accessModes", "spec.resources[storage]"]
        );
    }

    #[test]
    fn a_claim_may_only_grow_and_be_bound_once() {
        let old = json!({"accessModes": ["ReadWriteOnce"], "resources": {"requests": {"storage": "1Gi"}}});
        let mut grown = old.clone();
        grown["resources"]["requests"]["storage"] = json!("2Gi");
        assert!(fields(|c| claim_update(&grown, &old, c)).is_empty());
        let mut bound = old.clone();
        bound["volumeName"] = json!("pv-1");
        assert!(fields(|c| claim_update(&bound, &old, c)).is_empty());
        let mut rebound = bound.clone();
        rebound["volumeName"] = json!("pv-2");
        assert_eq!(fields(|c| claim_update(&rebound, &bound, c)), ["spec"]);
        let mut other = old.clone();
        other["storageClassName"] = json!("fast");
        assert_eq!(fields(|c| claim_update(&other, &old, c)), ["spec"]);
    }

    #[test]
    fn a_volume_has_one_source_a_capacity_and_local_ones_a_node() {
        let good = json!({"accessModes": ["ReadWriteOnce"], "capacity": {"storage": "1Gi"}, "hostPath": {"path": "/srv"}});
        assert!(fields(|c| persistent_volume(&good, c)).is_empty());
        let none = json!({"accessModes": ["ReadWriteOnce"], "capacity": {"storage": "1Gi"}});
        assert_eq!(fields(|c| persistent_volume(&none, c)), ["spec"]);
        let two = json!({"accessModes": ["ReadWriteOnce"], "capacity": {"storage": "1Gi"},
            "hostPath": {"path": "/a"}, "local": {"path": "/b"}});
        assert_eq!(
            fields(|c| persistent_volume(&two, c)),
            ["spec.local", "spec.nodeAffinity"]
        );
    }

    #[test]
    fn a_storage_class_needs_a_provisioner_and_known_modes() {
        let bad = json!({"reclaimPolicy": "Recycle", "volumeBindingMode": "Later"});
        assert_eq!(
            fields(|c| storage_class(&bad, c)),
            ["provisioner", "reclaimPolicy", "volumeBindingMode"]
        );
    }
}
