//! The scheduler's effects: write a decision back through the API, exactly as kube-scheduler
//! does over HTTP.
//!
//! - a fit: a `Binding` through `pods/binding` (which sets `spec.nodeName` and
//!   `PodScheduled=True`), then a `Normal` `Scheduled` event;
//! - no fit: `PodScheduled=False` with reason `Unschedulable` and the message (a strategic merge
//!   patch of the status, skipped when the condition already says exactly that), then a
//!   `Warning` `FailedScheduling` event;
//! - a preemption: each victim gets the `DisruptionTarget` condition, a `Preempted` event and a
//!   graceful delete; the preemptor gets `status.nominatedNodeName`.

use k8s_openapi::api::core::v1::ObjectReference;
use serde_json::json;

use super::pod::PodInfo;
use super::preemption::split_key;
use super::snapshot::Candidate;
use crate::apiserver::api::{Api, DeleteOptions, WriteOptions};
use crate::apiserver::error::{ApiError, ApiResult};
use crate::apiserver::patch::PatchType;
use crate::apiserver::resources::{self, Subresource};
use crate::events::EventRecorder;

/// The `PodScheduled=False` reason for a pod no node fits.
pub const REASON_UNSCHEDULABLE: &str = "Unschedulable";

/// The reference Events use for a pod.
pub fn pod_reference(pod: &PodInfo) -> ObjectReference {
    ObjectReference {
        resource_version: Some(pod.resource_version.to_string()),
        ..reference(&pod.namespace, &pod.name, &pod.uid)
    }
}

/// The reference to pod `namespace/name` with `uid` (none when empty).
fn reference(namespace: &str, name: &str, uid: &str) -> ObjectReference {
    ObjectReference {
        api_version: Some("v1".into()),
        kind: Some("Pod".into()),
        namespace: Some(namespace.to_string()),
        name: Some(name.to_string()),
        uid: Some(uid.to_string()).filter(|u| !u.is_empty()),
        ..Default::default()
    }
}

/// Tells the provisioner where `pod`'s unbound claims (`claims`) are needed: their
/// `volume.kubernetes.io/selected-node` annotation becomes `node` (kube-scheduler's
/// VolumeBinding PreBind, which [`wait_bound`] then completes).
pub async fn select_node(api: &Api, pod: &PodInfo, claims: &[String], node: &str) -> ApiResult<()> {
    let res = crate::controllers::persistent_volume::claims();
    let annotation = crate::controllers::persistent_volume::SELECTED_NODE_ANNOTATION;
    for name in claims {
        for attempt in 0.. {
            let mut claim = api.get(res, Some(&pod.namespace), name).await?;
            if claim["metadata"]["annotations"][annotation] == node
                || !claim["spec"]["volumeName"]
                    .as_str()
                    .unwrap_or("")
                    .is_empty()
            {
                break;
            }
            if !claim["metadata"]["annotations"].is_object() {
                claim["metadata"]["annotations"] = json!({});
            }
            claim["metadata"]["annotations"][annotation] = json!(node);
            match api
                .update(
                    res,
                    Some(&pod.namespace),
                    name,
                    claim,
                    None,
                    &Default::default(),
                )
                .await
            {
                Ok(_) => break,
                Err(e) if e.code == 409 && attempt < 3 => continue,
                Err(e) => return Err(e),
            }
        }
    }
    Ok(())
}

/// How long a pod's claims may take to be bound once their node is chosen (kube-scheduler's
/// `bindTimeoutSeconds`).
pub const BIND_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(600);

/// Waits until each of `pod`'s `claims` is bound to a volume, at most `timeout`: the rest of
/// kube-scheduler's VolumeBinding PreBind, so that the pod reaches its node with its volumes
/// provisioned (the node agent does not start it to find them missing).
pub async fn wait_bound(
    api: &Api,
    pod: &PodInfo,
    claims: &[String],
    timeout: std::time::Duration,
) -> ApiResult<()> {
    let res = crate::controllers::persistent_volume::claims();
    let deadline = tokio::time::Instant::now() + timeout;
    let mut delay = std::time::Duration::from_millis(5);
    for name in claims {
        loop {
            let claim = api.get(res, Some(&pod.namespace), name).await?;
            let volume = claim["spec"]["volumeName"].as_str().unwrap_or("");
            if claim["status"]["phase"] == "Bound" && !volume.is_empty() {
                break;
            }
            if crate::apiserver::objects::is_deleting(&claim) {
                return Err(ApiError::internal(format!(
                    "binding volumes: persistentvolumeclaim {name:?} is being deleted"
                )));
            }
            if tokio::time::Instant::now() + delay > deadline {
                return Err(ApiError::internal(format!(
                    "binding volumes: timed out waiting for persistentvolumeclaim {name:?} to be bound"
                )));
            }
            tokio::time::sleep(delay).await;
            delay = (delay * 2).min(std::time::Duration::from_millis(200));
        }
    }
    Ok(())
}

/// Binds `pod` to `node` and records the `Scheduled` event.
pub async fn bind(api: &Api, events: &EventRecorder, pod: &PodInfo, node: &str) -> ApiResult<()> {
    let binding = json!({
        "apiVersion": "v1", "kind": "Binding",
        "metadata": {"name": pod.name, "namespace": pod.namespace, "uid": pod.uid},
        "target": {"apiVersion": "v1", "kind": "Node", "name": node},
    });
    api.bind(&pod.namespace, &pod.name, &binding).await?;
    events.normal(
        pod_reference(pod),
        "Scheduled",
        format!(
            "Successfully assigned {}/{} to {node}",
            pod.namespace, pod.name
        ),
    );
    Ok(())
}

/// Records that no node fits `pod`: the `PodScheduled=False` condition and the
/// `FailedScheduling` event.
pub async fn report_unschedulable(
    api: &Api,
    events: &EventRecorder,
    pod: &PodInfo,
    message: &str,
) -> ApiResult<()> {
    events.warning(pod_reference(pod), "FailedScheduling", message);
    let current = pod.scheduled_condition.as_ref();
    if current.is_some_and(|(s, r, m)| s == "False" && r == REASON_UNSCHEDULABLE && m == message) {
        return Ok(());
    }
    let mut condition = json!({
        "type": "PodScheduled", "status": "False", "reason": REASON_UNSCHEDULABLE, "message": message,
        "lastProbeTime": null,
    });
    // The transition time only moves when the status does.
    if current.is_none_or(|(s, _, _)| s != "False") {
        condition["lastTransitionTime"] = json!(crate::apiserver::objects::now_rfc3339());
    }
    let patch = json!({"status": {"conditions": [condition]}});
    // Deleted meanwhile: nothing to report on.
    match patch_status(
        api,
        &pod.namespace,
        &pod.name,
        PatchType::StrategicMerge,
        &patch,
    )
    .await
    {
        Err(e) if e.code == 404 => Ok(()),
        other => other,
    }
}

/// Patches the status of pod `namespace/name`.
async fn patch_status(
    api: &Api,
    namespace: &str,
    name: &str,
    patch_type: PatchType,
    patch: &serde_json::Value,
) -> ApiResult<()> {
    let pods = resources::find("", "v1", "pods").expect("pods served");
    api.patch(
        pods,
        Some(namespace),
        name,
        patch_type,
        patch.to_string().as_bytes(),
        Some(Subresource::Status),
        &WriteOptions::default(),
    )
    .await
    .map(drop)
}

/// Evicts `victims` for `pod`, which is to go to `node` once they are gone, as
/// kube-scheduler's DefaultPreemption does: each victim gets `DisruptionTarget=True` (reason
/// `PreemptionByScheduler`), a `Preempted` event and a delete with its own grace period
/// (pinned to its uid); then the preemptor's `status.nominatedNodeName` names the node.
pub async fn preempt(
    api: &Api,
    events: &EventRecorder,
    scheduler: &str,
    pod: &PodInfo,
    node: &str,
    victims: &[Candidate],
) -> ApiResult<()> {
    let pods = resources::find("", "v1", "pods").expect("pods served");
    let gone = |e: &crate::apiserver::error::ApiError| e.code == 404 || e.code == 409;
    for v in victims {
        let (ns, name) = split_key(&v.key);
        let condition = json!({"status": {"conditions": [{
            "type": "DisruptionTarget", "status": "True", "reason": "PreemptionByScheduler",
            "message": format!("{scheduler}: preempting to accommodate a higher priority pod"),
            "lastTransitionTime": crate::apiserver::objects::now_rfc3339(),
        }]}});
        match patch_status(api, ns, name, PatchType::StrategicMerge, &condition).await {
            Ok(_) => {}
            Err(e) if gone(&e) => continue,
            Err(e) => return Err(e),
        }
        events.normal(
            reference(ns, name, &v.uid),
            "Preempted",
            format!("Preempted by pod {} on node {node}", pod.uid),
        );
        let opts = DeleteOptions {
            precondition_uid: Some(v.uid.clone()).filter(|u| !u.is_empty()),
            ..Default::default()
        };
        match api.delete(pods, Some(ns), name, &opts).await {
            Ok(_) => {}
            Err(e) if gone(&e) => {}
            Err(e) => return Err(e),
        }
    }
    let nominated = json!({"status": {"nominatedNodeName": node}});
    match patch_status(api, &pod.namespace, &pod.name, PatchType::Merge, &nominated).await {
        Err(e) if e.code == 404 => Ok(()),
        other => other,
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use serde_json::json;

    use super::*;
    use crate::apiserver::fake_agent;
    use crate::apiserver::resources::Subresource;

    fn claim(name: &str) -> serde_json::Value {
        json!({"apiVersion": "v1", "kind": "PersistentVolumeClaim", "metadata": {"name": name},
            "spec": {"accessModes": ["ReadWriteOnce"], "storageClassName": "manual",
                "resources": {"requests": {"storage": "1Mi"}}}})
    }

    #[tokio::test]
    async fn binding_waits_for_the_pods_claims_to_be_bound_and_gives_up_at_the_timeout() {
        let (api, _dir) = fake_agent::api().await;
        fake_agent::create(&api, claim("data")).await;
        fake_agent::create(&api, claim("never")).await;
        let pod = PodInfo {
            namespace: "default".into(),
            name: "p".into(),
            ..Default::default()
        };
        let binder = {
            let api = api.clone();
            tokio::spawn(async move {
                tokio::time::sleep(Duration::from_millis(100)).await;
                let res = crate::controllers::persistent_volume::claims();
                let mut c = api.get(res, Some("default"), "data").await.unwrap();
                c["spec"]["volumeName"] = json!("pv-data");
                let (mut c, _) = api
                    .update(
                        res,
                        Some("default"),
                        "data",
                        c,
                        None,
                        &WriteOptions::default(),
                    )
                    .await
                    .unwrap();
                c["status"] = json!({"phase": "Bound"});
                api.update(
                    res,
                    Some("default"),
                    "data",
                    c,
                    Some(Subresource::Status),
                    &WriteOptions::default(),
                )
                .await
                .unwrap();
            })
        };
        let started = tokio::time::Instant::now();
        wait_bound(&api, &pod, &["data".into()], Duration::from_secs(10))
            .await
            .unwrap();
        assert!(started.elapsed() >= Duration::from_millis(100));
        binder.await.unwrap();
        let err = wait_bound(&api, &pod, &["never".into()], Duration::from_millis(100))
            .await
            .unwrap_err();
        assert!(
            err.message
                .contains("timed out waiting for persistentvolumeclaim \"never\""),
            "{err:?}"
        );
    }
}
