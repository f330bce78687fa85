//! `pods/ephemeralcontainers`: how `kubectl debug` adds a container to a running pod, as
//! kube-apiserver serves it (its `podEphemeralContainersStrategy`, `validateEphemeralContainers`
//! and `ValidatePodEphemeralContainersUpdate`).
//!
//! - A write through the subresource (a PUT of the Pod, or any patch of it) changes
//!   `spec.ephemeralContainers` and nothing else: [`written`] keeps the rest of the current pod.
//! - Ephemeral containers are only ever added: [`validate_update`] refuses a write that removes
//!   or changes one. The main resource cannot change them at all (the pod update rules in
//!   `strategy`), and a pod is created without them ([`forbid_on_create`]).
//! - Each is a container with nothing a pod could come to depend on: no ports, resources,
//!   probes, lifecycle hooks, restart policy or sub-path mounts ([`validate`]).

use std::collections::HashSet;

use serde_json::Value;

use super::error::Cause;
use super::validation::{self as v, items};

/// The field of a pod spec that holds the ephemeral containers.
pub const FIELD: &str = "ephemeralContainers";

/// The fields of a container an ephemeral container may not set (those kube-apiserver's
/// `allowedEphemeralContainerFields` does not allow): nothing the pod's scheduling, readiness or
/// restarts could come to depend on.
const NOT_ALLOWED: &[&str] = &[
    "ports",
    "resources",
    "resizePolicy",
    "restartPolicy",
    "livenessProbe",
    "readinessProbe",
    "startupProbe",
    "lifecycle",
];

/// Why a field in [`NOT_ALLOWED`] (or a sub-path mount) is refused, in kube-apiserver's words.
const NOT_FOR_EPHEMERAL: &str = "cannot be set for an Ephemeral Container";

/// The annotation of a mirror (static) pod, which has no ephemeral containers: its kubelet
/// runs it from a file, not from the API.
const MIRROR_ANNOTATION: &str = "kubernetes.io/config.mirror";

/// Validates the ephemeral containers of the pod spec at `path` (part of every pod spec's
/// validation): each a container as the others are, named apart from every container in
/// `names` (the pod's app and init containers, which it is added to), with none of the fields
/// a pod could come to depend on (ports, resources, probes, …), no sub-path mounts, and a
/// `targetContainerName` that names an app or init container.
pub fn validate(
    spec: &Value,
    path: &str,
    volumes: &HashSet<String>,
    names: &mut HashSet<String>,
    causes: &mut Vec<Cause>,
) {
    let list = items(&spec[FIELD]);
    if list.is_empty() {
        return;
    }
    let targets: HashSet<&str> = ["containers", "initContainers"]
        .iter()
        .flat_map(|l| items(&spec[*l]))
        .filter_map(|c| c["name"].as_str())
        .collect();
    for (i, c) in list.iter().enumerate() {
        let cpath = format!("{path}.{FIELD}[{i}]");
        v::container_name(c, &cpath, names, causes);
        v::container(c, &cpath, volumes, causes);
        if let Some(target) = c["targetContainerName"].as_str()
            && !target.is_empty()
            && !targets.contains(target)
        {
            causes.push(Cause::not_found(
                format!("{cpath}.targetContainerName"),
                target,
            ));
        }
        for field in NOT_ALLOWED {
            if is_set(field, &c[*field]) {
                causes.push(Cause::forbidden(
                    format!("{cpath}.{field}"),
                    NOT_FOR_EPHEMERAL,
                ));
            }
        }
        for (j, mount) in items(&c["volumeMounts"]).iter().enumerate() {
            for field in ["subPath", "subPathExpr"] {
                if mount[field].as_str().is_some_and(|p| !p.is_empty()) {
                    causes.push(Cause::forbidden(
                        format!("{cpath}.volumeMounts[{j}].{field}"),
                        NOT_FOR_EPHEMERAL,
                    ));
                }
            }
        }
    }
}

/// Whether a container sets `field` to something other than its zero value. `resources` is
/// the one such field that is not optional in Kubernetes' Go types: its zero value, `{}`, is
/// what clients send for "none" (`kubectl debug` does) and what defaulting fills in.
fn is_set(field: &str, value: &Value) -> bool {
    match value {
        Value::Null => false,
        Value::Object(o) if field == "resources" => o.values().any(|v| !v.is_null()),
        _ => true,
    }
}

/// A new pod has no ephemeral containers: they are added once it runs, through the
/// subresource (kube-apiserver's `ValidatePodCreate`).
pub fn forbid_on_create(spec: &Value, causes: &mut Vec<Cause>) {
    if !items(&spec[FIELD]).is_empty() {
        causes.push(Cause::forbidden(
            format!("spec.{FIELD}"),
            "cannot be set on create",
        ));
    }
}

/// What the subresource's write of `incoming` (the pod a PUT sent or a patch made) stores in
/// place of `current`: `current` with the ephemeral containers of `incoming`, so its metadata,
/// status and the rest of its spec stay as they are.
pub fn written(current: &Value, mut incoming: Value) -> Value {
    let mut pod = current.clone();
    let wanted = incoming
        .get_mut("spec")
        .and_then(|s| s.get_mut(FIELD))
        .map(Value::take)
        .filter(|l| !l.is_null());
    if let Some(spec) = pod.get_mut("spec").and_then(Value::as_object_mut) {
        match wanted {
            Some(list) => spec.insert(FIELD.into(), list),
            None => spec.remove(FIELD),
        };
    }
    pod
}

/// The update rules of a write through the subresource, from the stored pod `old` to `new`:
/// an ephemeral container, once added, stays as it is (matched by name, as a patch may reorder
/// the list), and a mirror pod gets none.
pub fn validate_update(new: &Value, old: &Value) -> Vec<Cause> {
    if old["metadata"]["annotations"]
        .get(MIRROR_ANNOTATION)
        .is_some()
    {
        return vec![Cause::forbidden(
            "",
            "static pods do not support ephemeral containers",
        )];
    }
    let mut causes = Vec::new();
    let path = format!("spec.{FIELD}");
    let added = items(&new["spec"][FIELD]);
    for before in items(&old["spec"][FIELD]) {
        let name = before["name"].as_str().unwrap_or("");
        match added.iter().find(|c| c["name"] == name) {
            None => causes.push(Cause::forbidden(
                &path,
                format!("existing ephemeral containers \"{name}\" may not be removed"),
            )),
            Some(now) if !same(now, before) => causes.push(Cause::forbidden(
                format!("{path}[{name}]"),
                format!("existing ephemeral containers \"{name}\" may not be changed"),
            )),
            Some(_) => {}
        }
    }
    causes
}

/// Whether two containers are the same as Kubernetes' semantic equality sees them: a field
/// that is null or an empty list is the same as one left out (an empty object may be a set
/// struct, as `securityContext: {}` is, so it counts).
fn same(a: &Value, b: &Value) -> bool {
    fn normal(v: &Value) -> Value {
        match v {
            Value::Object(o) => Value::Object(
                o.iter()
                    .filter(|(_, v)| !is_empty(v))
                    .map(|(k, v)| (k.clone(), normal(v)))
                    .collect(),
            ),
            Value::Array(a) => Value::Array(a.iter().map(normal).collect()),
            other => other.clone(),
        }
    }
    fn is_empty(v: &Value) -> bool {
        match v {
            Value::Null => true,
            Value::Array(a) => a.is_empty(),
            _ => false,
        }
    }
    normal(a) == normal(b)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::apiserver::api::{Api, WriteOptions};
    use crate::apiserver::error::ApiError;
    use crate::apiserver::fake_agent;
    use crate::apiserver::patch::PatchType;
    use crate::apiserver::resources::{self, ResourceInfo, Subresource};
    use serde_json::json;

    fn pods() -> &'static ResourceInfo {
        resources::find_kind("v1", "Pod").unwrap()
    }

    /// An API holding pod `default/web` (containers `app` and `init`, volume `data`) with
    /// label `app: web` and a Running status.
    async fn api_with_pod() -> (Api, tempfile::TempDir, Value) {
        let (api, dir) = fake_agent::api().await;
        fake_agent::create(
            &api,
            json!({"apiVersion": "v1", "kind": "Pod",
                "metadata": {"name": "web", "namespace": "default", "labels": {"app": "web"}},
                "spec": {"containers": [{"name": "app", "image": "nginx:1.27"}],
                    "initContainers": [{"name": "init", "image": "busybox:1.36"}],
                    "volumes": [{"name": "data", "emptyDir": {}}]}}),
        )
        .await;
        fake_agent::patch_pod_status(&api, "web", json!({"phase": "Running"})).await;
        let pod = api.get(pods(), Some("default"), "web").await.unwrap();
        (api, dir, pod)
    }

    async fn patch(
        api: &Api,
        ty: PatchType,
        body: Value,
        sub: Option<Subresource>,
    ) -> Result<Value, ApiError> {
        api.patch(
            pods(),
            Some("default"),
            "web",
            ty,
            body.to_string().as_bytes(),
            sub,
            &WriteOptions::default(),
        )
        .await
        .map(|(pod, _)| pod)
    }

    /// Adds ephemeral container `d` to pod `web` through the subresource with `opts`: the
    /// patched pod.
    async fn add_d(api: &Api, opts: &WriteOptions) -> Value {
        let body = json!({"spec": {"ephemeralContainers": [{"name": "d", "image": "busybox"}]}});
        let patch = body.to_string();
        let sub = Some(Subresource::EphemeralContainers);
        let (ns, ty) = (Some("default"), PatchType::StrategicMerge);
        let (pod, _) = api
            .patch(pods(), ns, "web", ty, patch.as_bytes(), sub, opts)
            .await
            .unwrap();
        pod
    }

    /// A strategic merge patch through the subresource adding `container`, as `kubectl debug`
    /// sends it.
    async fn add(api: &Api, container: Value) -> Result<Value, ApiError> {
        patch(
            api,
            PatchType::StrategicMerge,
            json!({"spec": {"ephemeralContainers": [container]}}),
            Some(Subresource::EphemeralContainers),
        )
        .await
    }

    fn fields(e: &ApiError) -> Vec<&str> {
        e.causes.iter().map(|c| c.field.as_str()).collect()
    }

    #[tokio::test]
    async fn kubectl_debugs_patch_adds_one_container_and_changes_nothing_else() {
        let (api, _dir, before) = api_with_pod().await;
        let added = patch(
            &api,
            PatchType::StrategicMerge,
            json!({
                "metadata": {"labels": {"app": "other", "extra": "x"}},
                "status": {"phase": "Failed"},
                "spec": {"activeDeadlineSeconds": 5,
                    "containers": [{"name": "app", "image": "nginx:1.28"}],
                    "ephemeralContainers": [{"name": "debugger", "image": "busybox",
                        "targetContainerName": "app", "stdin": true, "tty": true,
                        "resources": {}, "terminationMessagePolicy": "File"}]},
            }),
            Some(Subresource::EphemeralContainers),
        )
        .await
        .unwrap();
        let ec = &added["spec"]["ephemeralContainers"];
        assert_eq!(ec.as_array().unwrap().len(), 1);
        // Defaulted as an app container is (`busybox` has no tag: pulled Always).
        assert_eq!(
            ec[0],
            json!({"name": "debugger", "image": "busybox", "targetContainerName": "app",
                "stdin": true, "tty": true, "resources": {}, "imagePullPolicy": "Always",
                "terminationMessagePath": "/dev/termination-log",
                "terminationMessagePolicy": "File"})
        );
        assert_eq!(added["metadata"]["labels"], json!({"app": "web"}));
        assert_eq!(added["status"], before["status"]);
        assert_eq!(
            added["metadata"]["generation"],
            before["metadata"]["generation"]
        );
        let mut spec = added["spec"].clone();
        spec.as_object_mut().unwrap().remove(FIELD);
        assert_eq!(spec, before["spec"]);
        assert_ne!(
            added["metadata"]["resourceVersion"],
            before["metadata"]["resourceVersion"]
        );
        // A second one joins the first (merged by name); GET sees both.
        let second = add(&api, json!({"name": "debugger-2", "image": "busybox:1.36"}))
            .await
            .unwrap();
        let mut names: Vec<&str> = items(&second["spec"][FIELD])
            .iter()
            .filter_map(|c| c["name"].as_str())
            .collect();
        names.sort_unstable();
        assert_eq!(names, ["debugger", "debugger-2"]);
        let stored = api.get(pods(), Some("default"), "web").await.unwrap();
        assert_eq!(stored["spec"][FIELD], second["spec"][FIELD]);
    }

    #[tokio::test]
    async fn a_put_through_the_subresource_takes_only_the_ephemeral_containers_and_checks_the_version()
     {
        let (api, _dir, before) = api_with_pod().await;
        let mut body = before.clone();
        body["metadata"]["labels"] = json!({"changed": "yes"});
        body["spec"]["containers"][0]["image"] = json!("nginx:1.28");
        body["spec"][FIELD] = json!([{"name": "debugger", "image": "busybox:1.36"}]);
        let sub = Some(Subresource::EphemeralContainers);
        let opts = WriteOptions::default();
        let (put, _) = api
            .update(pods(), Some("default"), "web", body.clone(), sub, &opts)
            .await
            .unwrap();
        assert_eq!(put["metadata"]["labels"], json!({"app": "web"}));
        assert_eq!(put["spec"]["containers"][0]["image"], "nginx:1.27");
        assert_eq!(put["spec"][FIELD][0]["name"], "debugger");
        // The same body again names a revision that is gone.
        let stale = api
            .update(pods(), Some("default"), "web", body, sub, &opts)
            .await
            .unwrap_err();
        assert_eq!(stale.code, 409);
    }

    #[tokio::test]
    async fn a_dry_run_adds_nothing() {
        let (api, _dir, before) = api_with_pod().await;
        let opts = WriteOptions {
            dry_run: true,
            ..WriteOptions::default()
        };
        let answered = add_d(&api, &opts).await;
        assert_eq!(answered["spec"][FIELD][0]["name"], "d");
        let stored = api.get(pods(), Some("default"), "web").await.unwrap();
        assert_eq!(stored, before);
    }

    #[tokio::test]
    async fn the_main_resource_and_a_create_cannot_set_ephemeral_containers() {
        let (api, _dir, before) = api_with_pod().await;
        let ec = json!({"spec": {"ephemeralContainers": [{"name": "d", "image": "busybox"}]}});
        for ty in [PatchType::StrategicMerge, PatchType::Merge] {
            let e = patch(&api, ty, ec.clone(), None).await.unwrap_err();
            assert_eq!((e.code, fields(&e)), (422, vec!["spec"]));
        }
        let mut pod = json!({"apiVersion": "v1", "kind": "Pod",
            "metadata": {"name": "new", "namespace": "default"},
            "spec": {"containers": [{"name": "app", "image": "nginx"}]}});
        pod["spec"][FIELD] = ec["spec"][FIELD].clone();
        let e = api
            .create(pods(), Some("default"), pod, &WriteOptions::default())
            .await
            .unwrap_err();
        assert_eq!(
            (e.code, fields(&e)),
            (422, vec!["spec.ephemeralContainers"])
        );
        assert_eq!(e.causes[0].message, "Forbidden: cannot be set on create");
        let stored = api.get(pods(), Some("default"), "web").await.unwrap();
        assert_eq!(stored, before);
    }

    #[tokio::test]
    async fn each_field_a_pod_could_depend_on_is_forbidden() {
        let (api, _dir, before) = api_with_pod().await;
        let set: [(&str, Value); 8] = [
            ("ports", json!([{"containerPort": 80}])),
            ("resources", json!({"limits": {"cpu": "1"}})),
            (
                "resizePolicy",
                json!([{"resourceName": "cpu", "restartPolicy": "NotRequired"}]),
            ),
            ("restartPolicy", json!("Always")),
            ("livenessProbe", json!({"exec": {"command": ["true"]}})),
            ("readinessProbe", json!({"exec": {"command": ["true"]}})),
            ("startupProbe", json!({"exec": {"command": ["true"]}})),
            (
                "lifecycle",
                json!({"preStop": {"exec": {"command": ["true"]}}}),
            ),
        ];
        for (field, value) in set {
            let mut c = json!({"name": "d", "image": "busybox"});
            c[field] = value;
            let e = add(&api, c).await.unwrap_err();
            let path = format!("spec.ephemeralContainers[0].{field}");
            let forbidden = e.causes.iter().find(|c| c.field == path);
            assert_eq!(
                (e.code, forbidden.map(|c| c.message.as_str())),
                (
                    422,
                    Some("Forbidden: cannot be set for an Ephemeral Container")
                ),
                "{field}: {e:?}"
            );
        }
        let mounts = json!({"name": "d", "image": "busybox", "volumeMounts": [
            {"name": "data", "mountPath": "/a", "subPath": "x"},
            {"name": "data", "mountPath": "/b", "subPathExpr": "$(X)"},
            {"name": "nope", "mountPath": "/c"}]});
        let e = add(&api, mounts).await.unwrap_err();
        assert_eq!(
            fields(&e),
            [
                "spec.ephemeralContainers[0].volumeMounts[2].name",
                "spec.ephemeralContainers[0].volumeMounts[0].subPath",
                "spec.ephemeralContainers[0].volumeMounts[1].subPathExpr",
            ]
        );
        let stored = api.get(pods(), Some("default"), "web").await.unwrap();
        assert_eq!(stored, before);
    }

    #[tokio::test]
    async fn names_images_and_targets_are_checked() {
        let (api, _dir, _) = api_with_pod().await;
        for (c, field, reason) in [
            (
                json!({"name": "app", "image": "busybox"}),
                "name",
                "FieldValueDuplicate",
            ),
            (
                json!({"name": "init", "image": "busybox"}),
                "name",
                "FieldValueDuplicate",
            ),
            (
                json!({"name": "Bad_Name", "image": "busybox"}),
                "name",
                "FieldValueInvalid",
            ),
            (json!({"name": "d"}), "image", "FieldValueRequired"),
            (
                json!({"name": "d", "image": "busybox", "targetContainerName": "nope"}),
                "targetContainerName",
                "FieldValueNotFound",
            ),
            (
                json!({"name": "d", "image": "busybox", "imagePullPolicy": "Sometimes"}),
                "imagePullPolicy",
                "FieldValueNotSupported",
            ),
            (
                json!({"name": "d", "image": "busybox", "env": [{"name": ""}]}),
                "env[0].name",
                "FieldValueRequired",
            ),
        ] {
            let e = add(&api, c.clone()).await.unwrap_err();
            let at = format!("spec.ephemeralContainers[0].{field}");
            assert_eq!(
                (
                    e.code,
                    e.causes
                        .iter()
                        .map(|c| (c.field.as_str(), c.reason))
                        .collect()
                ),
                (422, vec![(at.as_str(), reason)]),
                "{c}"
            );
        }
        // A PUT can send what a strategic merge patch cannot: a nameless one (no merge key),
        // or two with one name (merged into one).
        let pod = api.get(pods(), Some("default"), "web").await.unwrap();
        for (list, field, reason) in [
            (json!([{"image": "a"}]), "[0].name", "FieldValueRequired"),
            (
                json!([{"name": "d", "image": "a"}, {"name": "d", "image": "b"}]),
                "[1].name",
                "FieldValueDuplicate",
            ),
        ] {
            let mut body = pod.clone();
            body["spec"][FIELD] = list;
            let e = api
                .update(
                    pods(),
                    Some("default"),
                    "web",
                    body,
                    Some(Subresource::EphemeralContainers),
                    &WriteOptions::default(),
                )
                .await
                .unwrap_err();
            let at = format!("spec.ephemeralContainers{field}");
            assert_eq!(
                e.causes
                    .iter()
                    .map(|c| (c.field.as_str(), c.reason))
                    .collect::<Vec<_>>(),
                [(at.as_str(), reason)]
            );
        }
        // An init container is a target too.
        add(
            &api,
            json!({"name": "d", "image": "busybox", "targetContainerName": "init"}),
        )
        .await
        .unwrap();
    }

    #[tokio::test]
    async fn an_added_container_is_never_removed_or_changed() {
        let (api, _dir, _) = api_with_pod().await;
        let sub = Some(Subresource::EphemeralContainers);
        add(&api, json!({"name": "d", "image": "busybox"}))
            .await
            .unwrap();
        let removed = patch(
            &api,
            PatchType::Merge,
            json!({"spec": {"ephemeralContainers": null}}),
            sub,
        )
        .await
        .unwrap_err();
        assert_eq!(
            (removed.code, fields(&removed)),
            (422, vec!["spec.ephemeralContainers"])
        );
        assert_eq!(
            removed.causes[0].message,
            "Forbidden: existing ephemeral containers \"d\" may not be removed"
        );
        let changed = add(&api, json!({"name": "d", "image": "alpine"}))
            .await
            .unwrap_err();
        assert_eq!(
            (changed.code, fields(&changed)),
            (422, vec!["spec.ephemeralContainers[d]"])
        );
        assert_eq!(
            changed.causes[0].message,
            "Forbidden: existing ephemeral containers \"d\" may not be changed"
        );
        // Reordered is not changed (JSON patch: add a second one in front).
        let reordered = patch(
            &api,
            PatchType::Json,
            json!([{"op": "add", "path": "/spec/ephemeralContainers/0",
                "value": {"name": "e", "image": "busybox"}}]),
            sub,
        )
        .await
        .unwrap();
        assert_eq!(reordered["spec"][FIELD][1]["name"], "d");
    }

    #[tokio::test]
    async fn the_writer_owns_the_ephemeral_containers_and_nothing_else() {
        let (api, _dir) = fake_agent::api().await;
        let manager = |m: &str| WriteOptions {
            field_manager: Some(m.into()),
            field_manager_named: true,
            ..WriteOptions::default()
        };
        let pod = json!({"apiVersion": "v1", "kind": "Pod",
            "metadata": {"name": "web", "namespace": "default"},
            "spec": {"containers": [{"name": "app", "image": "nginx"}]}});
        api.create(pods(), Some("default"), pod, &manager("creator"))
            .await
            .unwrap();
        let pod = add_d(&api, &manager("kubectl-debug")).await;
        let entries = pod["metadata"]["managedFields"].as_array().unwrap();
        let debug = entries
            .iter()
            .find(|e| e["manager"] == "kubectl-debug")
            .unwrap();
        assert_eq!(
            (&debug["operation"], &debug["subresource"]),
            (&json!("Update"), &json!("ephemeralcontainers"))
        );
        let owned = debug["fieldsV1"].as_object().unwrap();
        assert_eq!(owned.keys().collect::<Vec<_>>(), ["f:spec"]);
        assert_eq!(
            owned["f:spec"]
                .as_object()
                .unwrap()
                .keys()
                .collect::<Vec<_>>(),
            ["f:ephemeralContainers"]
        );
    }

    #[test]
    fn a_pod_template_has_no_ephemeral_containers() {
        let spec = json!({"restartPolicy": "Always",
            "containers": [{"name": "app", "image": "nginx"}],
            "ephemeralContainers": [{"name": "d", "image": "busybox"}]});
        let fields = crate::apiserver::error::cause_fields(|causes| {
            v::pod_spec(&spec, "spec.template.spec", causes, Some(&["Always"]))
        });
        assert_eq!(fields, ["spec.template.spec.ephemeralContainers"]);
    }

    #[test]
    fn a_mirror_pod_gets_no_ephemeral_containers() {
        let old = json!({"metadata": {"annotations": {MIRROR_ANNOTATION: "x"}}, "spec": {}});
        let new = json!({"metadata": {}, "spec": {FIELD: [{"name": "d"}]}});
        let causes = validate_update(&new, &old);
        assert_eq!(
            causes[0].message,
            "Forbidden: static pods do not support ephemeral containers"
        );
    }
}
