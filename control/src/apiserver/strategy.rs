//! Per-kind behaviour of the generic REST handler: typed decoding, defaults, validation and
//! what a create or update may change.
//!
//! Objects travel as `serde_json::Value`; each kind is decoded into its `k8s-openapi` type once
//! per write, which both checks its shape and drops unknown fields (reported for
//! `fieldValidation`), exactly as kube-apiserver's decoding does.

use serde_json::{Map, Value, json};

use super::error::Cause;
use super::resources::{ResourceInfo, Subresource};
use super::storage_validation as sv;
use super::validation as v;

/// Decodes `obj` as the kind's `k8s-openapi` type and re-encodes it: the normalised object and
/// the paths of fields the type does not know (as Kubernetes' strict decoding names them:
/// `spec.containers[0].foo`).
pub fn decode(res: &ResourceInfo, obj: Value) -> Result<(Value, Vec<String>), String> {
    use k8s_openapi::api::{apps::v1 as apps, autoscaling::v2 as autoscaling, batch::v1 as batch};
    use k8s_openapi::api::{coordination::v1 as coordination, core::v1 as core};
    use k8s_openapi::api::{discovery::v1 as discovery, node::v1 as node, policy::v1 as policy};
    use k8s_openapi::api::{networking::v1 as networking, rbac::v1 as rbac};
    use k8s_openapi::api::{scheduling::v1 as scheduling, storage::v1 as storage};
    /// One pass: the typed decode consumes `obj` (no copies) and reports what it skipped.
    fn roundtrip<T: serde::de::DeserializeOwned + serde::Serialize>(
        obj: Value,
        unknown: &mut Vec<String>,
    ) -> Result<Value, String> {
        let typed: T = serde_ignored::deserialize(obj, |path| unknown.push(field_path(&path)))
            .map_err(|e| e.to_string())?;
        serde_json::to_value(typed).map_err(|e| e.to_string())
    }
    let mut unknown = Vec::new();
    let u = &mut unknown;
    let normal = match res.kind {
        "Namespace" => roundtrip::<core::Namespace>(obj, u),
        "Pod" => roundtrip::<core::Pod>(obj, u),
        "Node" => roundtrip::<core::Node>(obj, u),
        "Service" => roundtrip::<core::Service>(obj, u),
        "Endpoints" => roundtrip::<core::Endpoints>(obj, u),
        "ConfigMap" => roundtrip::<core::ConfigMap>(obj, u),
        "Secret" => roundtrip::<core::Secret>(obj, u),
        "Event" => roundtrip::<core::Event>(obj, u),
        "ServiceAccount" => roundtrip::<core::ServiceAccount>(obj, u),
        "PersistentVolumeClaim" => roundtrip::<core::PersistentVolumeClaim>(obj, u),
        "LimitRange" => roundtrip::<core::LimitRange>(obj, u),
        "ResourceQuota" => roundtrip::<core::ResourceQuota>(obj, u),
        "PersistentVolume" => roundtrip::<core::PersistentVolume>(obj, u),
        "StorageClass" => roundtrip::<storage::StorageClass>(obj, u),
        "Ingress" => roundtrip::<networking::Ingress>(obj, u),
        "IngressClass" => roundtrip::<networking::IngressClass>(obj, u),
        "NetworkPolicy" => roundtrip::<networking::NetworkPolicy>(obj, u),
        "Role" => roundtrip::<rbac::Role>(obj, u),
        "RoleBinding" => roundtrip::<rbac::RoleBinding>(obj, u),
        "ClusterRole" => roundtrip::<rbac::ClusterRole>(obj, u),
        "ClusterRoleBinding" => roundtrip::<rbac::ClusterRoleBinding>(obj, u),
        "Deployment" => roundtrip::<apps::Deployment>(obj, u),
        "ReplicaSet" => roundtrip::<apps::ReplicaSet>(obj, u),
        "DaemonSet" => roundtrip::<apps::DaemonSet>(obj, u),
        "StatefulSet" => roundtrip::<apps::StatefulSet>(obj, u),
        "ControllerRevision" => roundtrip::<apps::ControllerRevision>(obj, u),
        "Job" => roundtrip::<batch::Job>(obj, u),
        "CronJob" => roundtrip::<batch::CronJob>(obj, u),
        "EndpointSlice" => roundtrip::<discovery::EndpointSlice>(obj, u),
        "RuntimeClass" => roundtrip::<node::RuntimeClass>(obj, u),
        "Lease" => roundtrip::<coordination::Lease>(obj, u),
        "HorizontalPodAutoscaler" => roundtrip::<autoscaling::HorizontalPodAutoscaler>(obj, u),
        "PodDisruptionBudget" => roundtrip::<policy::PodDisruptionBudget>(obj, u),
        "PriorityClass" => roundtrip::<scheduling::PriorityClass>(obj, u),
        other => Err(format!("no decoder for kind {other}")),
    }?;
    Ok((normal, unknown))
}

/// Decodes `obj` as the `k8s-openapi` type `T`, with the paths of the fields `T` does not know
/// (as [`decode`] names them).
pub fn decode_typed<T: serde::de::DeserializeOwned>(
    obj: Value,
) -> Result<(T, Vec<String>), String> {
    let mut unknown = Vec::new();
    let typed: T = serde_ignored::deserialize(obj, |path| unknown.push(field_path(&path)))
        .map_err(|e| e.to_string())?;
    Ok((typed, unknown))
}

/// A skipped field's path as Kubernetes writes it: keys joined by `.`, indexes in brackets.
fn field_path(path: &serde_ignored::Path<'_>) -> String {
    use serde_ignored::Path;
    use std::fmt::Write;
    fn write(path: &Path<'_>, out: &mut String) {
        match path {
            Path::Root => {}
            Path::Seq { parent, index } => {
                write(parent, out);
                let _ = write!(out, "[{index}]");
            }
            Path::Map { parent, key } => {
                write(parent, out);
                if !out.is_empty() {
                    out.push('.');
                }
                out.push_str(key);
            }
            Path::Some { parent }
            | Path::NewtypeStruct { parent }
            | Path::NewtypeVariant { parent } => write(parent, out),
        }
    }
    let mut out = String::new();
    write(path, &mut out);
    out
}

/// [`map_mut`] of an object (made one when it is not).
fn obj_mut<'a>(v: &'a mut Value, key: &str) -> &'a mut Map<String, Value> {
    if !v.is_object() {
        *v = json!({});
    }
    map_mut(v.as_object_mut().expect("just made an object"), key)
}

/// The object at `key` of `map`, made an empty one when it is missing or null: defaulting
/// then fills in what is missing inside a struct a client gave in part, as Kubernetes' defaulting
/// functions do (a `strategy` with only `rollingUpdate`, say, still gets its `type`).
fn map_mut<'a>(map: &'a mut Map<String, Value>, key: &str) -> &'a mut Map<String, Value> {
    let v = map.entry(key).or_insert(Value::Null);
    if !v.is_object() {
        *v = json!({});
    }
    v.as_object_mut().expect("just made an object")
}

/// Sets `key` to `value` when it is unset: absent or null, or, for a string default, the empty
/// string (a Go string field's zero value, which Kubernetes' defaulting replaces too, e.g.
/// `dnsPolicy: ""` becomes `ClusterFirst`).
fn default(map: &mut Map<String, Value>, key: &str, value: Value) {
    let unset = match map.get(key) {
        None | Some(Value::Null) => true,
        Some(Value::String(s)) => s.is_empty() && value.is_string(),
        Some(_) => false,
    };
    if unset {
        map.insert(key.to_string(), value);
    }
}

/// Applies the Kubernetes defaults of the kind (done on every write, as decoding does).
pub fn apply_defaults(res: &ResourceInfo, obj: &mut Value) {
    match res.kind {
        "Pod" => {
            let spec = obj_mut(obj, "spec");
            default_pod_spec(spec);
            default_requests_to_limits(spec);
        }
        "Deployment" => {
            let spec = obj_mut(obj, "spec");
            default(spec, "replicas", json!(1));
            default(spec, "revisionHistoryLimit", json!(10));
            default(spec, "progressDeadlineSeconds", json!(600));
            let s = map_mut(spec, "strategy");
            default(s, "type", json!("RollingUpdate"));
            if s["type"] == "RollingUpdate" {
                let ru = map_mut(s, "rollingUpdate");
                default(ru, "maxSurge", json!("25%"));
                default(ru, "maxUnavailable", json!("25%"));
            }
            default_template(spec);
        }
        "ReplicaSet" => {
            let spec = obj_mut(obj, "spec");
            default(spec, "replicas", json!(1));
            default_template(spec);
        }
        "DaemonSet" => {
            let spec = obj_mut(obj, "spec");
            default(spec, "revisionHistoryLimit", json!(10));
            let s = map_mut(spec, "updateStrategy");
            default(s, "type", json!("RollingUpdate"));
            if s["type"] == "RollingUpdate" {
                let ru = map_mut(s, "rollingUpdate");
                default(ru, "maxUnavailable", json!(1));
                default(ru, "maxSurge", json!(0));
            }
            default_template(spec);
        }
        "PersistentVolumeClaim" => {
            default(obj_mut(obj, "spec"), "volumeMode", json!("Filesystem"));
        }
        "LimitRange" => {
            let spec = obj_mut(obj, "spec");
            for item in spec
                .get_mut("limits")
                .and_then(Value::as_array_mut)
                .into_iter()
                .flatten()
                .filter_map(Value::as_object_mut)
            {
                super::limit_range::default_item(item);
            }
        }
        "PersistentVolume" => {
            let spec = obj_mut(obj, "spec");
            default(spec, "persistentVolumeReclaimPolicy", json!("Retain"));
            default(spec, "volumeMode", json!("Filesystem"));
        }
        "StorageClass" => {
            let o = obj.as_object_mut().expect("an object");
            default(o, "reclaimPolicy", json!("Delete"));
            default(o, "volumeBindingMode", json!("Immediate"));
        }
        "StatefulSet" => {
            let spec = obj_mut(obj, "spec");
            default(spec, "replicas", json!(1));
            default(spec, "revisionHistoryLimit", json!(10));
            default(spec, "podManagementPolicy", json!("OrderedReady"));
            let s = map_mut(spec, "updateStrategy");
            default(s, "type", json!("RollingUpdate"));
            if s["type"] == "RollingUpdate" {
                let rolling = map_mut(s, "rollingUpdate");
                default(rolling, "partition", json!(0));
                // The MaxUnavailableStatefulSet feature is off by default in 1.32, and
                // kube-apiserver then drops the field (`dropStatefulSetDisabledFields`): a
                // manifest carrying it applies, and the set rolls one pod at a time.
                rolling.remove("maxUnavailable");
            }
            let retention = map_mut(spec, "persistentVolumeClaimRetentionPolicy");
            default(retention, "whenDeleted", json!("Retain"));
            default(retention, "whenScaled", json!("Retain"));
            default_template(spec);
        }
        "Job" => {
            let spec = obj_mut(obj, "spec");
            if spec.get("completions").is_none_or(Value::is_null)
                && spec.get("parallelism").is_none_or(Value::is_null)
            {
                spec.insert("completions".into(), json!(1));
            }
            default(spec, "parallelism", json!(1));
            // Kubernetes: unlimited when each index has a limit of its own.
            let per_index = spec
                .get("backoffLimitPerIndex")
                .is_some_and(|v| !v.is_null());
            default(
                spec,
                "backoffLimit",
                json!(if per_index { i64::from(i32::MAX) } else { 6 }),
            );
            default(spec, "completionMode", json!("NonIndexed"));
            default(spec, "suspend", json!(false));
            default_job_pod_template(spec);
        }
        "CronJob" => {
            let spec = obj_mut(obj, "spec");
            default(spec, "concurrencyPolicy", json!("Allow"));
            default(spec, "suspend", json!(false));
            default(spec, "successfulJobsHistoryLimit", json!(3));
            default(spec, "failedJobsHistoryLimit", json!(1));
            // The Job spec of the template is not defaulted (the Job is, once created); its pod
            // template is, as every pod spec.
            if let Some(job) = spec
                .get_mut("jobTemplate")
                .and_then(|t| t.get_mut("spec"))
                .and_then(Value::as_object_mut)
            {
                default_job_pod_template(job);
            }
        }
        "Service" => {
            let spec = obj_mut(obj, "spec");
            default(spec, "type", json!("ClusterIP"));
            default(spec, "sessionAffinity", json!("None"));
            if spec["type"] != "ExternalName" {
                default(spec, "internalTrafficPolicy", json!("Cluster"));
            }
            if matches!(spec["type"].as_str(), Some("NodePort" | "LoadBalancer")) {
                default(spec, "externalTrafficPolicy", json!("Cluster"));
            }
            if spec["sessionAffinity"] == "ClientIP" {
                let client_ip = map_mut(map_mut(spec, "sessionAffinityConfig"), "clientIP");
                default(client_ip, "timeoutSeconds", json!(10800));
            }
            if let Some(ports) = spec.get_mut("ports").and_then(Value::as_array_mut) {
                for p in ports.iter_mut().filter_map(Value::as_object_mut) {
                    default(p, "protocol", json!("TCP"));
                    if let Some(port) = p.get("port").cloned() {
                        default(p, "targetPort", port);
                    }
                }
            }
        }
        "Secret" => {
            let o = obj.as_object_mut().expect("object");
            default(o, "type", json!("Opaque"));
        }
        "PriorityClass" => {
            let o = obj.as_object_mut().expect("object");
            default(o, "preemptionPolicy", json!("PreemptLowerPriority"));
        }
        "Namespace" => {
            let spec = obj_mut(obj, "spec");
            default(spec, "finalizers", json!(["kubernetes"]));
        }
        _ => {}
    }
}

/// A Job spec's pod template gets pod defaults, but no `restartPolicy`: validation asks for
/// OnFailure or Never.
fn default_job_pod_template(spec: &mut Map<String, Value>) {
    if let Some(t) = spec.get_mut("template").and_then(Value::as_object_mut)
        && let Some(ps) = t.get_mut("spec").and_then(Value::as_object_mut)
    {
        let given = ps.get("restartPolicy").cloned();
        default_pod_spec(ps);
        match given {
            Some(p) => ps.insert("restartPolicy".into(), p),
            None => ps.remove("restartPolicy"),
        };
    }
}

fn default_template(spec: &mut Map<String, Value>) {
    if let Some(t) = spec.get_mut("template").and_then(Value::as_object_mut) {
        let ps = t.entry("spec").or_insert_with(|| json!({}));
        if let Some(ps) = ps.as_object_mut() {
            default_pod_spec(ps);
        }
    }
}

fn default_pod_spec(spec: &mut Map<String, Value>) {
    default(spec, "restartPolicy", json!("Always"));
    default(spec, "dnsPolicy", json!("ClusterFirst"));
    default(spec, "schedulerName", json!("default-scheduler"));
    default(spec, "terminationGracePeriodSeconds", json!(30));
    default(spec, "securityContext", json!({}));
    default(spec, "enableServiceLinks", json!(true));
    for list in ["initContainers", "containers", "ephemeralContainers"] {
        if let Some(cs) = spec.get_mut(list).and_then(Value::as_array_mut) {
            for c in cs.iter_mut().filter_map(Value::as_object_mut) {
                let image = c
                    .get("image")
                    .and_then(Value::as_str)
                    .unwrap_or("")
                    .to_string();
                let policy = if image_tag_is_latest(&image) {
                    "Always"
                } else {
                    "IfNotPresent"
                };
                default(c, "imagePullPolicy", json!(policy));
                default(c, "terminationMessagePath", json!("/dev/termination-log"));
                default(c, "terminationMessagePolicy", json!("File"));
                default(c, "resources", json!({}));
                if let Some(ports) = c.get_mut("ports").and_then(Value::as_array_mut) {
                    for p in ports.iter_mut().filter_map(Value::as_object_mut) {
                        default(p, "protocol", json!("TCP"));
                    }
                }
            }
        }
    }
}

/// A Pod's containers that give limits but not requests get requests equal to those limits,
/// resource by resource, as Kubernetes' `SetDefaults_Pod` does (for Pods only, not for the pod
/// templates of workloads): what the scheduler counts is then what `kubectl describe node`
/// and `kubectl get pod -o yaml` show.
fn default_requests_to_limits(spec: &mut Map<String, Value>) {
    for list in ["initContainers", "containers"] {
        let Some(cs) = spec.get_mut(list).and_then(Value::as_array_mut) else {
            continue;
        };
        for c in cs.iter_mut() {
            let Some(limits) = c["resources"]["limits"].as_object().cloned() else {
                continue;
            };
            let resources = obj_mut(c, "resources");
            let requests = resources.entry("requests").or_insert_with(|| json!({}));
            if !requests.is_object() {
                *requests = json!({});
            }
            let requests = requests.as_object_mut().expect("just made an object");
            for (resource, quantity) in limits {
                requests.entry(resource).or_insert(quantity);
            }
        }
    }
}

/// Whether an image reference has no tag or the `latest` tag (and no digest): such images
/// default to `imagePullPolicy: Always`, as in Kubernetes.
pub fn image_tag_is_latest(image: &str) -> bool {
    if image.contains('@') {
        return false;
    }
    let last = image.rsplit('/').next().unwrap_or(image);
    match last.rsplit_once(':') {
        Some((_, tag)) => tag == "latest",
        None => true,
    }
}

/// Resets what a client may not set on create: status for kinds with a status subresource,
/// starting status values (pod phase Pending, namespace phase Active).
pub fn prepare_for_create(res: &ResourceInfo, obj: &mut Value) {
    if res.has(Subresource::Status) && res.kind != "Node" {
        obj.as_object_mut().expect("object").remove("status");
    }
    match res.kind {
        "Pod" => obj["status"] = json!({"phase": "Pending", "qosClass": qos_class(&obj["spec"])}),
        "Namespace" => obj["status"] = json!({"phase": "Active"}),
        "PersistentVolumeClaim" | "PersistentVolume" => obj["status"] = json!({"phase": "Pending"}),
        "Secret" => merge_string_data(obj),
        _ => {}
    }
}

/// Sets what the server generates for a new object once its creator's fields are recorded, so
/// that no client owns it (kube-apiserver generates it after its field manager has run): a
/// Job's selector and its pods' labels. A later server-side apply that leaves them out then
/// keeps them, as it must: they are immutable.
pub fn generate_for_create(res: &ResourceInfo, obj: &mut Value) {
    if res.kind != "Job" {
        return;
    }
    // A Job selects its pods by its own uid unless the user opted into manual selection.
    let uid = obj["metadata"]["uid"]
        .as_str()
        .unwrap_or_default()
        .to_string();
    let manual = obj["spec"]["manualSelector"].as_bool().unwrap_or(false);
    if manual || uid.is_empty() {
        return;
    }
    let name = obj["metadata"]["name"]
        .as_str()
        .unwrap_or_default()
        .to_string();
    obj["spec"]["selector"] = json!({"matchLabels": {"batch.kubernetes.io/controller-uid": uid}});
    let tmeta = &mut obj["spec"]["template"]["metadata"];
    if !tmeta.is_object() {
        *tmeta = json!({});
    }
    if !tmeta["labels"].is_object() {
        tmeta["labels"] = json!({});
    }
    tmeta["labels"]["batch.kubernetes.io/controller-uid"] = json!(uid);
    tmeta["labels"]["controller-uid"] = json!(uid);
    tmeta["labels"]["batch.kubernetes.io/job-name"] = json!(name);
    tmeta["labels"]["job-name"] = json!(name);
}

/// Moves a Secret's write-only `stringData` into `data` (base64), as Kubernetes does.
pub fn merge_string_data(obj: &mut Value) {
    use base64::Engine;
    if let Some(Value::Object(sd)) = obj.as_object_mut().and_then(|o| o.remove("stringData")) {
        let data = obj_mut(obj, "data");
        for (k, v) in sd {
            let s = v.as_str().unwrap_or_default();
            data.insert(
                k,
                json!(base64::engine::general_purpose::STANDARD.encode(s)),
            );
        }
    }
}

/// The pod's QoS class from its containers' requests and limits.
pub fn qos_class(spec: &Value) -> &'static str {
    let containers: Vec<&Value> = ["initContainers", "containers"]
        .iter()
        .filter_map(|l| spec[l].as_array())
        .flatten()
        .collect();
    let mut any = false;
    let mut guaranteed = true;
    for c in &containers {
        let req = &c["resources"]["requests"];
        let lim = &c["resources"]["limits"];
        for r in ["cpu", "memory"] {
            let (rq, lm) = (req.get(r), lim.get(r));
            if rq.is_some() || lm.is_some() {
                any = true;
            }
            match (rq, lm) {
                (_, None) => guaranteed = false,
                (Some(a), Some(b)) if a != b => guaranteed = false,
                _ => {}
            }
        }
    }
    if !any {
        "BestEffort"
    } else if guaranteed {
        "Guaranteed"
    } else {
        "Burstable"
    }
}

/// Whether the object has a spec-like part that counts for `metadata.generation`.
pub fn has_generation(res: &ResourceInfo) -> bool {
    !matches!(
        res.kind,
        "ConfigMap"
            | "Secret"
            | "Event"
            | "Endpoints"
            | "EndpointSlice"
            | "ServiceAccount"
            | "Lease"
            | "ControllerRevision"
            | "Node"
            | "Namespace"
            | "PriorityClass"
            | "PersistentVolumeClaim"
            | "PersistentVolume"
            | "StorageClass"
            | "Role"
            | "RoleBinding"
            | "ClusterRole"
            | "ClusterRoleBinding"
            | "LimitRange"
            | "ResourceQuota"
    )
}

/// Whether a new version of an object changes anything outside `metadata` and `status`.
pub fn spec_changed(new: &Value, old: &Value) -> bool {
    let strip = |v: &Value| {
        let mut m = v.as_object().cloned().unwrap_or_default();
        for k in ["metadata", "status", "apiVersion", "kind"] {
            m.remove(k);
        }
        m
    };
    strip(new) != strip(old)
}

/// Validates a whole object (create and update).
pub fn validate(res: &ResourceInfo, obj: &Value) -> Vec<Cause> {
    let mut causes = Vec::new();
    let meta = &obj["metadata"];
    let name = meta["name"].as_str().unwrap_or("");
    if name.is_empty() {
        causes.push(Cause::required("metadata.name"));
    } else {
        let problem = match res.kind {
            "Namespace" => v::dns1123_label(name),
            "Service" => v::dns1035_label(name),
            _ => v::dns1123_subdomain(name),
        };
        if let Some(why) = problem {
            causes.push(Cause::invalid("metadata.name", name, why));
        }
    }
    if let Some(labels) = meta["labels"].as_object() {
        for (k, val) in labels {
            if let Some(why) = v::qualified_name(k) {
                causes.push(Cause::invalid("metadata.labels", k, why));
            }
            if let Some(why) = v::label_value(val.as_str().unwrap_or("")) {
                causes.push(Cause::invalid(
                    format!("metadata.labels.{k}"),
                    val.as_str().unwrap_or(""),
                    why,
                ));
            }
        }
    }
    if let Some(ann) = meta["annotations"].as_object() {
        let total: usize = ann
            .iter()
            .map(|(k, v)| k.len() + v.as_str().map_or(0, str::len))
            .sum();
        if total > 256 * 1024 {
            causes.push(Cause {
                reason: "FieldValueTooLong",
                message: format!("Too long: may not be more than 262144 bytes (is {total})"),
                field: "metadata.annotations".into(),
            });
        }
        for k in ann.keys() {
            if let Some(why) = v::qualified_name(&k.to_lowercase()) {
                causes.push(Cause::invalid("metadata.annotations", k, why));
            }
        }
    }
    match res.kind {
        "Pod" => v::pod_spec(&obj["spec"], "spec", &mut causes, None),
        "Deployment" | "ReplicaSet" | "DaemonSet" => {
            let kind = if res.kind == "DaemonSet" {
                "daemonset"
            } else {
                "deployment"
            };
            v::workload_selector(&obj["spec"], kind, &mut causes);
            if res.kind != "DaemonSet" {
                v::non_negative(&obj["spec"]["replicas"], "spec.replicas", &mut causes);
            }
            match res.kind {
                "Deployment" => v::update_strategy(
                    &obj["spec"]["strategy"],
                    "spec.strategy",
                    &["Recreate", "RollingUpdate"],
                    &mut causes,
                ),
                "DaemonSet" => v::update_strategy(
                    &obj["spec"]["updateStrategy"],
                    "spec.updateStrategy",
                    &["OnDelete", "RollingUpdate"],
                    &mut causes,
                ),
                _ => {}
            }
            v::pod_spec(
                &obj["spec"]["template"]["spec"],
                "spec.template.spec",
                &mut causes,
                Some(&["Always"]),
            );
        }
        "StatefulSet" => v::stateful_set_spec(&obj["spec"], &mut causes),
        "PersistentVolumeClaim" => sv::claim_spec(&obj["spec"], "spec", &mut causes),
        "PersistentVolume" => sv::persistent_volume(&obj["spec"], &mut causes),
        "StorageClass" => sv::storage_class(obj, &mut causes),
        "LimitRange" => v::limit_range(&obj["spec"], &mut causes),
        "ResourceQuota" => super::quota_validation::resource_quota_spec(&obj["spec"], &mut causes),
        "Role" => super::rbac_validation::rules(&obj["rules"], true, &mut causes),
        "ClusterRole" => super::rbac_validation::rules(&obj["rules"], false, &mut causes),
        "RoleBinding" | "ClusterRoleBinding" => {
            super::rbac_validation::binding(obj, res.kind == "RoleBinding", &mut causes)
        }
        "Ingress" => super::networking_validation::ingress(&obj["spec"], &mut causes),
        "IngressClass" if obj["spec"]["controller"].as_str().is_none_or(str::is_empty) => {
            causes.push(Cause::required("spec.controller"));
        }
        "NetworkPolicy" => super::networking_validation::network_policy(&obj["spec"], &mut causes),
        "Job" => v::job_spec(&obj["spec"], "spec", &mut causes),
        "CronJob" => v::cron_job(obj, &mut causes),
        "Service" => v::service_spec(&obj["spec"], &mut causes),
        "ConfigMap" | "Secret" => {
            let mut total = 0;
            for section in ["data", "binaryData"] {
                if let Some(data) = obj[section].as_object() {
                    for (k, value) in data {
                        if let Some(why) = v::config_key(k) {
                            causes.push(Cause::invalid(format!("{section}[{k}]"), k, why));
                        }
                        // A Secret's values (and binaryData) are base64: count the bytes.
                        let len = value.as_str().map_or(0, str::len);
                        total += if res.kind == "Secret" || section == "binaryData" {
                            len / 4 * 3
                        } else {
                            len
                        };
                    }
                }
            }
            if total > v::MAX_CONFIG_BYTES {
                causes.push(Cause {
                    reason: "FieldValueTooLong",
                    message: format!(
                        "Too long: may not be more than {} bytes",
                        v::MAX_CONFIG_BYTES
                    ),
                    field: if res.kind == "Secret" { "data" } else { "" }.into(),
                });
            }
            if res.kind == "Secret" {
                v::secret_type(obj, &mut causes);
            }
        }
        "HorizontalPodAutoscaler" => v::autoscaler_bounds(&obj["spec"], &mut causes),
        "PodDisruptionBudget" => v::disruption_budget(&obj["spec"], &mut causes),
        "PriorityClass" => v::priority_class(obj, &mut causes),
        "ControllerRevision" => {
            // Kubernetes' ValidateControllerRevision.
            v::non_negative(&obj["revision"], "revision", &mut causes);
            if obj["data"].is_null() {
                causes.push(Cause::required("data"));
            }
        }
        "RuntimeClass" => match obj["handler"].as_str() {
            None | Some("") => causes.push(Cause::required("handler")),
            Some(h) => {
                if let Some(why) = v::dns1123_label(h) {
                    causes.push(Cause::invalid("handler", h, why));
                }
            }
        },
        _ => {}
    }
    causes
}

/// Validates what only a create may not set, beside [`validate`]: a pod's ephemeral
/// containers (added later, through `pods/ephemeralcontainers`).
pub fn validate_create(res: &ResourceInfo, obj: &Value) -> Vec<Cause> {
    let mut causes = Vec::new();
    if res.kind == "Pod" {
        super::ephemeral_containers::forbid_on_create(&obj["spec"], &mut causes);
    }
    causes
}

/// Validates what an update may not change (immutable fields), given the old object.
pub fn validate_update(res: &ResourceInfo, new: &Value, old: &Value) -> Vec<Cause> {
    let mut causes = Vec::new();
    let immutable = |causes: &mut Vec<Cause>, path: &str, a: &Value, b: &Value| {
        if a != b {
            causes.push(Cause::invalid(path, a, "field is immutable"));
        }
    };
    match res.kind {
        "Deployment" | "ReplicaSet" | "DaemonSet" => immutable(
            &mut causes,
            "spec.selector",
            &new["spec"]["selector"],
            &old["spec"]["selector"],
        ),
        "ControllerRevision" => immutable(&mut causes, "data", &new["data"], &old["data"]),
        "StatefulSet" => v::stateful_set_update(&new["spec"], &old["spec"], &mut causes),
        "PersistentVolumeClaim" => sv::claim_update(&new["spec"], &old["spec"], &mut causes),
        "RoleBinding" | "ClusterRoleBinding" if new["roleRef"] != old["roleRef"] => {
            causes.push(Cause::invalid(
                "roleRef",
                new["roleRef"].to_string(),
                "cannot change roleRef",
            ));
        }
        "IngressClass" => immutable(
            &mut causes,
            "spec.controller",
            &new["spec"]["controller"],
            &old["spec"]["controller"],
        ),
        "StorageClass" => {
            for field in [
                "provisioner",
                "parameters",
                "reclaimPolicy",
                "volumeBindingMode",
            ] {
                if new[field] != old[field] {
                    causes.push(Cause::forbidden(
                        field,
                        format!("updates to {field} are forbidden."),
                    ));
                }
            }
        }
        "PriorityClass" => {
            // kube-apiserver's words for these two.
            for field in ["value", "preemptionPolicy"] {
                if new[field] != old[field] {
                    causes.push(Cause::forbidden(field, "may not be changed in an update."));
                }
            }
        }
        "Job" => {
            immutable(
                &mut causes,
                "spec.selector",
                &new["spec"]["selector"],
                &old["spec"]["selector"],
            );
            immutable(
                &mut causes,
                "spec.template",
                &new["spec"]["template"],
                &old["spec"]["template"],
            );
            immutable(
                &mut causes,
                "spec.completions",
                &new["spec"]["completions"],
                &old["spec"]["completions"],
            );
        }
        "Service" => {
            let (a, b) = (&new["spec"]["clusterIP"], &old["spec"]["clusterIP"]);
            if !a.is_null() && !b.is_null() && a != b && new["spec"]["type"] != "ExternalName" {
                immutable(&mut causes, "spec.clusterIP", a, b);
            }
        }
        "Pod" => {
            // Only images, activeDeadlineSeconds, tolerations (additions) and scheduling gates may
            // change on a pod's spec; compare the rest.
            let strip = |spec: &Value| {
                let mut s = spec.clone();
                if let Some(o) = s.as_object_mut() {
                    for k in [
                        "activeDeadlineSeconds",
                        "tolerations",
                        "schedulingGates",
                        "nodeName",
                    ] {
                        o.remove(k);
                    }
                    for list in ["containers", "initContainers"] {
                        if let Some(cs) = o.get_mut(list).and_then(Value::as_array_mut) {
                            for c in cs.iter_mut().filter_map(Value::as_object_mut) {
                                c.remove("image");
                            }
                        }
                    }
                }
                s
            };
            if strip(&new["spec"]) != strip(&old["spec"]) {
                causes.push(Cause::forbidden(
                    "spec",
                    "pod updates may not change fields other than `spec.containers[*].image`, `spec.initContainers[*].image`, `spec.activeDeadlineSeconds`, `spec.tolerations` (only additions to existing tolerations) or `spec.schedulingGates`",
                ));
            }
            let (a, b) = (&new["spec"]["nodeName"], &old["spec"]["nodeName"]);
            if !b.is_null() && a != b {
                immutable(&mut causes, "spec.nodeName", a, b);
            }
            // The QoS class is set at creation and never changes.
            let (a, b) = (&new["status"]["qosClass"], &old["status"]["qosClass"]);
            if !b.is_null() && a != b {
                immutable(&mut causes, "status.qosClass", a, b);
            }
        }
        "ConfigMap" | "Secret" => {
            // Kubernetes' ValidateConfigMapUpdate and ValidateSecretUpdate: once immutable,
            // always immutable, and the data stays as it is.
            if old["immutable"] == json!(true) {
                let frozen = "field is immutable when `immutable` is set";
                if new["immutable"] != json!(true) {
                    causes.push(Cause::forbidden("immutable", frozen));
                }
                for section in ["data", "binaryData"] {
                    if new[section] != old[section] {
                        causes.push(Cause::forbidden(section, frozen));
                    }
                }
            }
            if res.kind == "Secret" && new["type"] != old["type"] {
                immutable(&mut causes, "type", &new["type"], &old["type"]);
            }
        }
        _ => {}
    }
    causes
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::apiserver::resources;

    fn defaulted(kind_path: (&str, &str, &str), mut obj: Value) -> Value {
        let res = resources::find(kind_path.0, kind_path.1, kind_path.2).expect("served");
        apply_defaults(res, &mut obj);
        obj
    }

    #[test]
    fn empty_strings_are_defaulted_as_go_zero_values_are() {
        let pod = defaulted(
            ("", "v1", "pods"),
            json!({"spec": {"dnsPolicy": "", "restartPolicy": "", "schedulerName": "mine",
                            "containers": [{"name": "a", "image": "i"}]}}),
        );
        assert_eq!(pod["spec"]["dnsPolicy"], "ClusterFirst");
        assert_eq!(pod["spec"]["restartPolicy"], "Always");
        assert_eq!(pod["spec"]["schedulerName"], "mine");
        let service = defaulted(
            ("", "v1", "services"),
            json!({"spec": {"type": "", "ports": [{"port": 80, "protocol": ""}]}}),
        );
        assert_eq!(service["spec"]["type"], "ClusterIP");
        assert_eq!(service["spec"]["ports"][0]["protocol"], "TCP");
    }

    #[test]
    fn decoding_names_every_unknown_field_by_its_full_path() {
        let res = resources::find("", "v1", "pods").expect("served");
        let pod = json!({"apiVersion": "v1", "kind": "Pod", "bogus": 1,
            "metadata": {"name": "p", "labels": {"a": "b"}, "nope": null, "uid": null},
            "spec": {"containers": [{"name": "a", "image": "i"},
                                    {"name": "b", "image": "i", "colour": "red"}],
                     "extra": {"deep": true}}});
        let (normal, unknown) = decode(res, pod).unwrap();
        // As Kubernetes' strict decoding: an unknown field is unknown whatever its value, null
        // included (a known field set to null is not reported).
        assert_eq!(
            unknown,
            vec![
                "bogus",
                "metadata.nope",
                "spec.containers[1].colour",
                "spec.extra"
            ]
        );
        assert_eq!(normal["metadata"]["labels"]["a"], "b");
        assert!(normal["spec"].get("extra").is_none());
    }

    #[test]
    fn a_pods_missing_requests_default_to_its_limits_resource_by_resource() {
        let pod = defaulted(
            ("", "v1", "pods"),
            json!({"spec": {
            "initContainers": [{"name": "init", "image": "i:1",
                "resources": {"limits": {"cpu": "100m"}}}],
            "containers": [
                {"name": "a", "image": "a:1",
                    "resources": {"limits": {"cpu": "500m", "memory": "64Mi"}}},
                {"name": "b", "image": "b:1",
                    "resources": {"limits": {"cpu": "1", "memory": "1Gi"},
                        "requests": {"memory": "256Mi"}}},
                {"name": "c", "image": "c:1"},
            ]}}),
        );
        let containers = &pod["spec"]["containers"];
        assert_eq!(
            containers[0]["resources"]["requests"],
            json!({"cpu": "500m", "memory": "64Mi"})
        );
        assert_eq!(
            containers[1]["resources"]["requests"],
            json!({"cpu": "1", "memory": "256Mi"}),
            "a given request stays; only the missing one comes from the limit"
        );
        assert_eq!(containers[2]["resources"], json!({}));
        assert_eq!(
            pod["spec"]["initContainers"][0]["resources"]["requests"],
            json!({"cpu": "100m"})
        );
    }

    #[test]
    fn a_strategy_given_in_part_is_filled_in_as_kubernetes_defaults_it() {
        let d = |strategy: Value| {
            defaulted(
                ("apps", "v1", "deployments"),
                json!({"spec": {"strategy": strategy}}),
            )["spec"]["strategy"]
                .clone()
        };
        let full = json!({"type": "RollingUpdate",
            "rollingUpdate": {"maxSurge": "25%", "maxUnavailable": "25%"}});
        assert_eq!(d(Value::Null), full);
        assert_eq!(d(json!({})), full);
        assert_eq!(d(json!({"rollingUpdate": {}})), full);
        assert_eq!(
            d(json!({"rollingUpdate": {"maxSurge": 1}})),
            json!({"type": "RollingUpdate",
                "rollingUpdate": {"maxSurge": 1, "maxUnavailable": "25%"}})
        );
        assert_eq!(d(json!({"type": "Recreate"})), json!({"type": "Recreate"}));

        let ds = defaulted(
            ("apps", "v1", "daemonsets"),
            json!({"spec": {"updateStrategy": {"rollingUpdate": {"maxUnavailable": 2}}}}),
        );
        assert_eq!(
            ds["spec"]["updateStrategy"],
            json!({"type": "RollingUpdate", "rollingUpdate": {"maxUnavailable": 2, "maxSurge": 0}})
        );

        // A StatefulSet's maxUnavailable is dropped, as kube-apiserver 1.32 drops it with its
        // feature gate off.
        let sts = defaulted(
            ("apps", "v1", "statefulsets"),
            json!({"spec": {"updateStrategy": {"rollingUpdate": {"maxUnavailable": 2}}}}),
        );
        assert_eq!(
            sts["spec"]["updateStrategy"],
            json!({"type": "RollingUpdate", "rollingUpdate": {"partition": 0}})
        );

        let svc = defaulted(
            ("", "v1", "services"),
            json!({"spec": {"sessionAffinity": "ClientIP", "sessionAffinityConfig": {"clientIP": {}}}}),
        );
        assert_eq!(
            svc["spec"]["sessionAffinityConfig"],
            json!({"clientIP": {"timeoutSeconds": 10800}})
        );
    }

    #[test]
    fn configmaps_and_secrets_hold_at_most_one_mebibyte() {
        let cm = resources::find("", "v1", "configmaps").expect("served");
        let secret = resources::find("", "v1", "secrets").expect("served");
        let big = "x".repeat(v::MAX_CONFIG_BYTES);
        let fields = |res, obj: Value| -> Vec<String> {
            validate(res, &obj).into_iter().map(|c| c.field).collect()
        };
        let meta = json!({"name": "c"});
        assert!(fields(cm, json!({"metadata": meta, "data": {"a": big}})).is_empty());
        assert_eq!(
            fields(cm, json!({"metadata": meta, "data": {"a": big, "b": "y"}})),
            [""]
        );
        // A Secret counts decoded bytes: 1 MiB of base64 is 768 KiB.
        assert!(fields(secret, json!({"metadata": meta, "data": {"a": big}})).is_empty());
        let bigger = "x".repeat(v::MAX_CONFIG_BYTES / 3 * 4 + 8);
        assert_eq!(
            fields(secret, json!({"metadata": meta, "data": {"a": bigger}})),
            ["data"]
        );
    }

    #[test]
    fn secrets_of_built_in_types_hold_their_keys() {
        let secret = resources::find("", "v1", "secrets").expect("served");
        let causes = |obj: Value| -> Vec<(String, String)> {
            validate(secret, &obj)
                .into_iter()
                .map(|c| (c.field, c.message))
                .collect()
        };
        let s = |t: &str, data: Value| json!({"metadata": {"name": "s"}, "type": t, "data": data});
        let required = |f: &str| (f.to_string(), "Required value".to_string());
        let table = [
            (s("Opaque", json!({})), vec![]),
            (s("example.com/custom", json!({})), vec![]),
            (
                s("kubernetes.io/tls", json!({"tls.crt": "YQ=="})),
                vec![required("data[tls.key]")],
            ),
            (
                s("kubernetes.io/tls", json!({"tls.crt": "", "tls.key": ""})),
                vec![],
            ),
            (
                s("kubernetes.io/basic-auth", json!({})),
                vec![required("data[username]"), required("data[password]")],
            ),
            (
                s("kubernetes.io/basic-auth", json!({"password": "cA=="})),
                vec![],
            ),
            (
                s("kubernetes.io/ssh-auth", json!({})),
                vec![required("data[ssh-privatekey]")],
            ),
            (
                s("kubernetes.io/dockerconfigjson", json!({})),
                vec![required("data[.dockerconfigjson]")],
            ),
            // base64 of `{}`, then of `{`.
            (
                s(
                    "kubernetes.io/dockerconfigjson",
                    json!({".dockerconfigjson": "e30="}),
                ),
                vec![],
            ),
            (
                s("kubernetes.io/service-account-token", json!({})),
                vec![required(
                    "metadata.annotations[kubernetes.io/service-account.name]",
                )],
            ),
        ];
        for (obj, want) in table {
            assert_eq!(causes(obj.clone()), want, "{obj}");
        }
        let bad = causes(s("kubernetes.io/dockercfg", json!({".dockercfg": "ew=="})));
        assert_eq!(bad.len(), 1);
        assert_eq!(bad[0].0, "data[.dockercfg]");
        assert!(
            bad[0]
                .1
                .starts_with("Invalid value: \"<secret contents redacted>\": EOF"),
            "{bad:?}"
        );
    }

    #[test]
    fn an_immutable_config_map_or_secret_keeps_its_data_and_stays_immutable() {
        let cm = resources::find("", "v1", "configmaps").expect("served");
        let old = json!({"metadata": {"name": "c"}, "immutable": true, "data": {"a": "1"}, "binaryData": {"b": "YQ=="}});
        let fields = |new: Value| -> Vec<String> {
            validate_update(cm, &new, &old)
                .into_iter()
                .map(|c| c.field)
                .collect()
        };
        assert!(fields(old.clone()).is_empty());
        let mut changed = old.clone();
        changed["data"]["a"] = json!("2");
        assert_eq!(fields(changed), ["data"]);
        let mut changed = old.clone();
        changed["binaryData"] = json!({});
        assert_eq!(fields(changed), ["binaryData"]);
        let mut thawed = old.clone();
        thawed["immutable"] = json!(false);
        assert_eq!(fields(thawed), ["immutable"]);
        let mut mutable = old.clone();
        mutable["immutable"] = json!(false);
        let mut frozen_now = mutable.clone();
        frozen_now["data"]["a"] = json!("3");
        frozen_now["immutable"] = json!(true);
        assert!(
            validate_update(cm, &frozen_now, &mutable).is_empty(),
            "a mutable one may change and become immutable in one update"
        );
    }

    #[test]
    fn a_workloads_pod_template_keeps_its_requests_as_given() {
        let d = defaulted(
            ("apps", "v1", "deployments"),
            json!({"spec": {"template": {"spec": {"containers": [
                {"name": "a", "image": "a:1", "resources": {"limits": {"cpu": "500m"}}}
            ]}}}}),
        );
        assert_eq!(
            d["spec"]["template"]["spec"]["containers"][0]["resources"],
            json!({"limits": {"cpu": "500m"}})
        );
    }
}
