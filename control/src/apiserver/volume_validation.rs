//! What kube-apiserver checks in a pod's volume sources and in its containers' `env[].valueFrom`:
//! one source each, the paths files are written to, file modes, and the downward API fields and
//! resources that can be named. The messages and field paths are Kubernetes' own
//! (`pkg/apis/core/validation`), so a user sees at `kubectl apply` what would otherwise surface
//! later as a pod stuck in `CreateContainerConfigError`.

use std::collections::HashSet;

use serde_json::Value;

use super::error::Cause;
use super::validation::config_key;

/// Every volume source a Kubernetes `Volume` can name (one of them must be set).
const VOLUME_SOURCES: &[&str] = &[
    "hostPath",
    "emptyDir",
    "gcePersistentDisk",
    "awsElasticBlockStore",
    "gitRepo",
    "secret",
    "nfs",
    "iscsi",
    "glusterfs",
    "persistentVolumeClaim",
    "rbd",
    "flexVolume",
    "cinder",
    "cephfs",
    "flocker",
    "downwardAPI",
    "fc",
    "azureFile",
    "configMap",
    "vsphereVolume",
    "quobyte",
    "azureDisk",
    "photonPersistentDisk",
    "projected",
    "portworxVolume",
    "scaleIO",
    "storageos",
    "csi",
    "ephemeral",
    "image",
];

/// The sources of one `projected` volume entry, in the order Kubernetes counts them (the
/// second one set is the one named as forbidden).
const PROJECTED_SOURCES: &[&str] = &[
    "secret",
    "downwardAPI",
    "configMap",
    "serviceAccountToken",
    "clusterTrustBundle",
    "podCertificate",
];

/// The `fieldRef`s a downwardAPI volume file can name (besides one label or annotation).
const VOLUME_FIELD_PATHS: &[&str] = &[
    "metadata.annotations",
    "metadata.labels",
    "metadata.name",
    "metadata.namespace",
    "metadata.uid",
];

/// The `fieldRef`s an environment variable can name (besides one label or annotation).
const ENV_FIELD_PATHS: &[&str] = &[
    "metadata.name",
    "metadata.namespace",
    "metadata.uid",
    "spec.nodeName",
    "spec.serviceAccountName",
    "status.hostIP",
    "status.hostIPs",
    "status.podIP",
    "status.podIPs",
];

/// The resources a `resourceFieldRef` can name.
const RESOURCE_FIELDS: &[&str] = &[
    "limits.cpu",
    "limits.ephemeral-storage",
    "limits.memory",
    "requests.cpu",
    "requests.ephemeral-storage",
    "requests.memory",
];

const FILE_MODE: &str = "must be a number between 0 and 0777 (octal), both inclusive";

/// Exactly one of `sources` must be set in `obj` (a volume, or a PersistentVolume's spec)
/// at `path`, with kube-apiserver's messages.
pub fn one_source(obj: &Value, sources: &[&str], path: &str, causes: &mut Vec<Cause>) {
    let set: Vec<&str> = sources
        .iter()
        .copied()
        .filter(|s| !obj[*s].is_null())
        .collect();
    match set.as_slice() {
        [] => causes.push(Cause {
            reason: "FieldValueRequired",
            message: "Required value: must specify a volume type".into(),
            field: path.to_string(),
        }),
        [_] => {}
        [_, more @ ..] => {
            for s in more {
                causes.push(Cause::forbidden(
                    format!("{path}.{s}"),
                    "may not specify more than 1 volume type",
                ));
            }
        }
    }
}

/// Validates the volume at `path` (`spec.volumes[i]`).
pub fn volume(vol: &Value, path: &str, causes: &mut Vec<Cause>) {
    one_source(vol, VOLUME_SOURCES, path, causes);
    let mut paths = HashSet::new();
    if let Some(cm) = vol.get("configMap").filter(|v| !v.is_null()) {
        object_files(cm, "name", &format!("{path}.configMap"), &mut paths, causes);
        file_mode(
            &cm["defaultMode"],
            &format!("{path}.configMap.defaultMode"),
            causes,
        );
    }
    if let Some(secret) = vol.get("secret").filter(|v| !v.is_null()) {
        let p = format!("{path}.secret");
        object_files(secret, "secretName", &p, &mut paths, causes);
        file_mode(&secret["defaultMode"], &format!("{p}.defaultMode"), causes);
    }
    if let Some(downward) = vol.get("downwardAPI").filter(|v| !v.is_null()) {
        let p = format!("{path}.downwardAPI");
        downward_files(downward, &p, &mut paths, causes);
        file_mode(
            &downward["defaultMode"],
            &format!("{p}.defaultMode"),
            causes,
        );
    }
    if let Some(projected) = vol.get("projected").filter(|v| !v.is_null()) {
        let p = format!("{path}.projected");
        file_mode(
            &projected["defaultMode"],
            &format!("{p}.defaultMode"),
            causes,
        );
        for (i, source) in projected["sources"]
            .as_array()
            .into_iter()
            .flatten()
            .enumerate()
        {
            let sp = format!("{p}.sources[{i}]");
            let set: Vec<&str> = PROJECTED_SOURCES
                .iter()
                .copied()
                .filter(|s| !source[*s].is_null())
                .collect();
            for s in set.iter().skip(1) {
                causes.push(Cause::forbidden(
                    format!("{sp}.{s}"),
                    "may not specify more than 1 volume type per source",
                ));
            }
            for kind in ["configMap", "secret"] {
                if let Some(obj) = source.get(kind).filter(|v| !v.is_null()) {
                    object_files(obj, "name", &format!("{sp}.{kind}"), &mut paths, causes);
                }
            }
            if let Some(downward) = source.get("downwardAPI").filter(|v| !v.is_null()) {
                downward_files(downward, &format!("{sp}.downwardAPI"), &mut paths, causes);
            }
        }
    }
    if let Some(host) = vol.get("hostPath").filter(|v| !v.is_null())
        && host["path"].as_str().is_none_or(str::is_empty)
    {
        causes.push(Cause::required(format!("{path}.hostPath.path")));
    }
}

/// A ConfigMap's or Secret's files: the object's name, then each item's key, path and mode.
fn object_files(
    source: &Value,
    name_field: &str,
    path: &str,
    paths: &mut HashSet<String>,
    causes: &mut Vec<Cause>,
) {
    if source[name_field].as_str().is_none_or(str::is_empty) {
        causes.push(Cause::required(format!("{path}.{name_field}")));
    }
    for (i, item) in source["items"].as_array().into_iter().flatten().enumerate() {
        let ip = format!("{path}.items[{i}]");
        key(&item["key"], format!("{ip}.key"), causes);
        file_path(&item["path"], &format!("{ip}.path"), paths, causes);
        file_mode(&item["mode"], &format!("{ip}.mode"), causes);
    }
}

/// A downwardAPI volume's files: each a path, one field or resource, and a mode.
fn downward_files(
    source: &Value,
    path: &str,
    paths: &mut HashSet<String>,
    causes: &mut Vec<Cause>,
) {
    for (i, item) in source["items"].as_array().into_iter().flatten().enumerate() {
        let ip = format!("{path}.items[{i}]");
        file_path(&item["path"], &format!("{ip}.path"), paths, causes);
        file_mode(&item["mode"], &format!("{ip}.mode"), causes);
        let (field, resource) = (&item["fieldRef"], &item["resourceFieldRef"]);
        match (field.is_null(), resource.is_null()) {
            (false, false) => causes.push(Cause::invalid(
                &ip,
                "resource",
                "fieldRef and resourceFieldRef can not be specified simultaneously",
            )),
            (true, true) => causes.push(Cause {
                reason: "FieldValueRequired",
                message: "Required value: one of fieldRef and resourceFieldRef is required".into(),
                field: ip.clone(),
            }),
            (false, true) => {
                field_path(field, &format!("{ip}.fieldRef"), VOLUME_FIELD_PATHS, causes)
            }
            (true, false) => {
                let rp = format!("{ip}.resourceFieldRef");
                if resource["containerName"].as_str().is_none_or(str::is_empty) {
                    causes.push(Cause::required(format!("{rp}.containerName")));
                }
                resource_field(resource, &rp, causes);
            }
        }
    }
}

/// A ConfigMap or Secret key: required, and a valid config key.
fn key(v: &Value, field: String, causes: &mut Vec<Cause>) {
    match v.as_str() {
        None | Some("") => causes.push(Cause::required(field)),
        Some(key) => {
            if let Some(why) = config_key(key) {
                causes.push(Cause::invalid(field, key, why));
            }
        }
    }
}

/// A file's path inside its volume: relative, without `..`, not starting with `..`, and not
/// given twice.
fn file_path(v: &Value, field: &str, paths: &mut HashSet<String>, causes: &mut Vec<Cause>) {
    let Some(p) = v.as_str().filter(|p| !p.is_empty()) else {
        causes.push(Cause::required(field));
        return;
    };
    if p.starts_with('/') {
        causes.push(Cause::invalid(field, p, "must be a relative path"));
    } else if p.split('/').any(|c| c == "..") {
        causes.push(Cause::invalid(field, p, "must not contain '..'"));
    } else if p.starts_with("..") {
        causes.push(Cause::invalid(field, p, "must not start with '..'"));
    } else if !paths.insert(p.to_string()) {
        causes.push(Cause::invalid(field, p, "conflicting duplicate paths"));
    }
}

fn file_mode(v: &Value, field: &str, causes: &mut Vec<Cause>) {
    if let Some(mode) = v.as_i64()
        && !(0..=0o777).contains(&mode)
    {
        causes.push(Cause::invalid(field, mode, FILE_MODE));
    }
}

/// A `fieldRef`'s `fieldPath`: one of `allowed`, or one label or annotation by key.
fn field_path(field_ref: &Value, path: &str, allowed: &[&str], causes: &mut Vec<Cause>) {
    let fp = format!("{path}.fieldPath");
    let Some(p) = field_ref["fieldPath"].as_str().filter(|p| !p.is_empty()) else {
        causes.push(Cause::required(fp));
        return;
    };
    let subscripted = ["metadata.labels['", "metadata.annotations['"]
        .iter()
        .any(|prefix| {
            p.strip_prefix(prefix)
                .is_some_and(|rest| rest.len() > 2 && rest.ends_with("']"))
        });
    if !allowed.contains(&p) && !subscripted {
        causes.push(Cause::not_supported(fp, p, allowed));
    }
}

/// A `resourceFieldRef`: a resource that can be named, and a divisor that fits it.
fn resource_field(resource_ref: &Value, path: &str, causes: &mut Vec<Cause>) {
    let Some(resource) = resource_ref["resource"].as_str().filter(|r| !r.is_empty()) else {
        causes.push(Cause::required(format!("{path}.resource")));
        return;
    };
    if !RESOURCE_FIELDS.contains(&resource) {
        causes.push(Cause::not_supported(
            format!("{path}.resource"),
            resource,
            RESOURCE_FIELDS,
        ));
        return;
    }
    let Some(divisor) = resource_ref["divisor"].as_str() else {
        return;
    };
    let (allowed, message): (&[&str], &str) = if resource.ends_with(".cpu") {
        (
            &["1m", "1"],
            "only divisor's values 1m and 1 are supported with the cpu resource",
        )
    } else {
        (
            &[
                "1", "1k", "1M", "1G", "1T", "1P", "1E", "1Ki", "1Mi", "1Gi", "1Ti", "1Pi", "1Ei",
            ],
            if resource.ends_with(".memory") {
                "only divisor's values 1, 1k, 1M, 1G, 1T, 1P, 1E, 1Ki, 1Mi, 1Gi, 1Ti, 1Pi, 1Ei are supported with the memory resource"
            } else {
                "only divisor's values 1, 1k, 1M, 1G, 1T, 1P, 1E, 1Ki, 1Mi, 1Gi, 1Ti, 1Pi, 1Ei are supported with the local ephemeral storage resource"
            },
        )
    };
    if !allowed.contains(&divisor) {
        causes.push(Cause::invalid(format!("{path}.divisor"), divisor, message));
    }
}

/// Validates `env[j]` of a container at `path`: a `valueFrom` names exactly one source, and
/// not beside a `value`.
pub fn env_value_from(env: &Value, path: &str, causes: &mut Vec<Cause>) {
    let from = &env["valueFrom"];
    if from.is_null() {
        return;
    }
    let fp = format!("{path}.valueFrom");
    if env["value"].as_str().is_some_and(|v| !v.is_empty()) {
        causes.push(Cause::invalid(
            &fp,
            "",
            "may not be specified when `value` is not empty",
        ));
    }
    let sources = [
        "fieldRef",
        "resourceFieldRef",
        "configMapKeyRef",
        "secretKeyRef",
    ];
    let set: Vec<&str> = sources
        .into_iter()
        .filter(|s| !from[*s].is_null())
        .collect();
    match set.as_slice() {
        [] => {
            causes.push(Cause::invalid(
                &fp,
                "",
                "must specify one of: `fieldRef`, `resourceFieldRef`, `configMapKeyRef` or `secretKeyRef`",
            ));
            return;
        }
        [_] => {}
        _ => {
            causes.push(Cause::invalid(
                &fp,
                "",
                "may not have more than one field specified at a time",
            ));
            return;
        }
    }
    match set[0] {
        "fieldRef" => field_path(
            &from["fieldRef"],
            &format!("{fp}.fieldRef"),
            ENV_FIELD_PATHS,
            causes,
        ),
        "resourceFieldRef" => resource_field(
            &from["resourceFieldRef"],
            &format!("{fp}.resourceFieldRef"),
            causes,
        ),
        kind => {
            let kp = format!("{fp}.{kind}");
            key(&from[kind]["key"], format!("{kp}.key"), causes);
            if from[kind]["name"].as_str().is_none_or(str::is_empty) {
                causes.push(Cause::required(format!("{kp}.name")));
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn volume_causes(v: Value) -> Vec<(String, String)> {
        let mut causes = Vec::new();
        volume(&v, "spec.volumes[0]", &mut causes);
        causes.into_iter().map(|c| (c.field, c.message)).collect()
    }

    fn env_causes(v: Value) -> Vec<(String, String)> {
        let mut causes = Vec::new();
        env_value_from(&v, "spec.containers[0].env[0]", &mut causes);
        causes.into_iter().map(|c| (c.field, c.message)).collect()
    }

    fn one(field: &str, message: &str) -> Vec<(String, String)> {
        vec![(field.to_string(), message.to_string())]
    }

    #[test]
    fn volumes_as_kubernetes_accepts_them_pass() {
        for v in [
            json!({"name": "a", "configMap": {"name": "cm", "defaultMode": 0o644,
                "items": [{"key": "k", "path": "dir/file", "mode": 0o400}]}}),
            json!({"name": "a", "secret": {"secretName": "s"}}),
            json!({"name": "a", "emptyDir": {}}),
            json!({"name": "a", "downwardAPI": {"items": [
                {"path": "labels", "fieldRef": {"fieldPath": "metadata.labels"}},
                {"path": "tier", "fieldRef": {"fieldPath": "metadata.labels['tier']"}},
                {"path": "mem", "resourceFieldRef": {"containerName": "c", "resource": "limits.memory", "divisor": "1Mi"}}]}}),
            json!({"name": "a", "projected": {"sources": [
                {"configMap": {"name": "cm"}}, {"secret": {"name": "s"}},
                {"serviceAccountToken": {"path": "token"}}]}}),
        ] {
            assert_eq!(volume_causes(v.clone()), vec![], "{v}");
        }
    }

    #[test]
    fn bad_volumes_get_kubernetes_messages_and_fields() {
        let table = [
            (
                json!({"name": "a"}),
                one(
                    "spec.volumes[0]",
                    "Required value: must specify a volume type",
                ),
            ),
            (
                json!({"name": "a", "emptyDir": {}, "configMap": {"name": "cm"}}),
                one(
                    "spec.volumes[0].configMap",
                    "Forbidden: may not specify more than 1 volume type",
                ),
            ),
            (
                json!({"name": "a", "configMap": {}}),
                one("spec.volumes[0].configMap.name", "Required value"),
            ),
            (
                json!({"name": "a", "secret": {"defaultMode": 1000}}),
                vec![
                    (
                        "spec.volumes[0].secret.secretName".into(),
                        "Required value".into(),
                    ),
                    (
                        "spec.volumes[0].secret.defaultMode".into(),
                        format!("Invalid value: 1000: {FILE_MODE}"),
                    ),
                ],
            ),
            (
                json!({"name": "a", "configMap": {"name": "cm", "items": [{"key": "k", "path": "../x"}]}}),
                one(
                    "spec.volumes[0].configMap.items[0].path",
                    "Invalid value: \"../x\": must not contain '..'",
                ),
            ),
            (
                json!({"name": "a", "configMap": {"name": "cm", "items": [{"key": "k", "path": "/etc/x"}]}}),
                one(
                    "spec.volumes[0].configMap.items[0].path",
                    "Invalid value: \"/etc/x\": must be a relative path",
                ),
            ),
            (
                json!({"name": "a", "configMap": {"name": "cm", "items": [{"key": "k", "path": "..data"}]}}),
                one(
                    "spec.volumes[0].configMap.items[0].path",
                    "Invalid value: \"..data\": must not start with '..'",
                ),
            ),
            (
                json!({"name": "a", "configMap": {"name": "cm", "items": [{"key": "bad key", "path": "p"}]}}),
                vec![(
                    "spec.volumes[0].configMap.items[0].key".into(),
                    format!(
                        "Invalid value: \"bad key\": {}",
                        config_key("bad key").unwrap()
                    ),
                )],
            ),
            (
                json!({"name": "a", "downwardAPI": {"items": [{"path": "ip", "fieldRef": {"fieldPath": "status.podIP"}}]}}),
                one(
                    "spec.volumes[0].downwardAPI.items[0].fieldRef.fieldPath",
                    "Unsupported value: \"status.podIP\": supported values: \"metadata.annotations\", \"metadata.labels\", \"metadata.name\", \"metadata.namespace\", \"metadata.uid\"",
                ),
            ),
            (
                json!({"name": "a", "downwardAPI": {"items": [{"path": "m", "resourceFieldRef": {"resource": "limits.memory"}}]}}),
                one(
                    "spec.volumes[0].downwardAPI.items[0].resourceFieldRef.containerName",
                    "Required value",
                ),
            ),
            (
                json!({"name": "a", "downwardAPI": {"items": [{"path": "m"}]}}),
                one(
                    "spec.volumes[0].downwardAPI.items[0]",
                    "Required value: one of fieldRef and resourceFieldRef is required",
                ),
            ),
            (
                json!({"name": "a", "projected": {"sources": [{"configMap": {"name": "cm"}, "secret": {"name": "s"}}]}}),
                one(
                    "spec.volumes[0].projected.sources[0].configMap",
                    "Forbidden: may not specify more than 1 volume type per source",
                ),
            ),
            (
                json!({"name": "a", "projected": {"sources": [
                    {"configMap": {"name": "cm", "items": [{"key": "k", "path": "same"}]}},
                    {"secret": {"name": "s", "items": [{"key": "k", "path": "same"}]}}]}}),
                one(
                    "spec.volumes[0].projected.sources[1].secret.items[0].path",
                    "Invalid value: \"same\": conflicting duplicate paths",
                ),
            ),
            (
                json!({"name": "a", "hostPath": {}}),
                one("spec.volumes[0].hostPath.path", "Required value"),
            ),
        ];
        for (v, want) in table {
            assert_eq!(volume_causes(v.clone()), want, "{v}");
        }
    }

    #[test]
    fn env_value_from_names_one_source_kubernetes_knows() {
        for ok in [
            json!({"name": "A", "value": "x"}),
            json!({"name": "A", "valueFrom": {"fieldRef": {"fieldPath": "status.podIP"}}}),
            json!({"name": "A", "valueFrom": {"fieldRef": {"fieldPath": "metadata.annotations['a/b']"}}}),
            json!({"name": "A", "valueFrom": {"resourceFieldRef": {"resource": "limits.cpu", "divisor": "1m"}}}),
            json!({"name": "A", "valueFrom": {"configMapKeyRef": {"name": "cm", "key": "k"}}}),
        ] {
            assert_eq!(env_causes(ok.clone()), vec![], "{ok}");
        }
        let from = "spec.containers[0].env[0].valueFrom";
        let table = [
            (
                json!({"name": "A", "value": "x", "valueFrom": {"fieldRef": {"fieldPath": "metadata.name"}}}),
                one(
                    from,
                    "Invalid value: \"\": may not be specified when `value` is not empty",
                ),
            ),
            (
                json!({"name": "A", "valueFrom": {}}),
                one(
                    from,
                    "Invalid value: \"\": must specify one of: `fieldRef`, `resourceFieldRef`, `configMapKeyRef` or `secretKeyRef`",
                ),
            ),
            (
                json!({"name": "A", "valueFrom": {"fieldRef": {"fieldPath": "metadata.name"}, "secretKeyRef": {"name": "s", "key": "k"}}}),
                one(
                    from,
                    "Invalid value: \"\": may not have more than one field specified at a time",
                ),
            ),
            (
                json!({"name": "A", "valueFrom": {"fieldRef": {"fieldPath": "metadata.labels"}}}),
                vec![(
                    format!("{from}.fieldRef.fieldPath"),
                    format!(
                        "Unsupported value: \"metadata.labels\": supported values: {}",
                        ENV_FIELD_PATHS
                            .iter()
                            .map(|p| format!("\"{p}\""))
                            .collect::<Vec<_>>()
                            .join(", ")
                    ),
                )],
            ),
            (
                json!({"name": "A", "valueFrom": {"resourceFieldRef": {"resource": "limits.gpu"}}}),
                vec![(
                    format!("{from}.resourceFieldRef.resource"),
                    format!(
                        "Unsupported value: \"limits.gpu\": supported values: {}",
                        RESOURCE_FIELDS
                            .iter()
                            .map(|p| format!("\"{p}\""))
                            .collect::<Vec<_>>()
                            .join(", ")
                    ),
                )],
            ),
            (
                json!({"name": "A", "valueFrom": {"resourceFieldRef": {"resource": "limits.cpu", "divisor": "2"}}}),
                one(
                    &format!("{from}.resourceFieldRef.divisor"),
                    "Invalid value: \"2\": only divisor's values 1m and 1 are supported with the cpu resource",
                ),
            ),
            (
                json!({"name": "A", "valueFrom": {"secretKeyRef": {"name": "s"}}}),
                one(&format!("{from}.secretKeyRef.key"), "Required value"),
            ),
        ];
        for (v, want) in table {
            assert_eq!(env_causes(v.clone()), want, "{v}");
        }
    }
}
