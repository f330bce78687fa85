//! What workload controllers read from their pods (active, ready, available, which to delete
//! first) and how they make pods from a template.

use std::cmp::Ordering;
use std::sync::Arc;
use std::time::Duration;

use chrono::{DateTime, Utc};
use futures::StreamExt;
use serde_json::{Value, json};

use crate::apiserver::api::{Api, DeleteOptions, ListParams, WriteOptions};
use crate::apiserver::error::{ApiError, ApiResult};
use crate::apiserver::objects;
use crate::apiserver::resources::{self, ResourceInfo};
use crate::events::EventRecorder;

/// Pod creations or deletions a controller has in flight at once (the store group-commits
/// them).
pub const BURST: usize = 256;

/// The `pods` resource.
pub fn pods() -> &'static ResourceInfo {
    resources::find("", "v1", "pods").expect("pods served")
}

/// Lists the pods of a namespace.
pub async fn list(api: &Api, ns: &str) -> ApiResult<Vec<Value>> {
    Ok(api.list(pods(), Some(ns), &ListParams::default()).await?.0)
}

/// Not being deleted and not finished: counts toward a controller's replicas.
pub fn is_active(pod: &Value) -> bool {
    !objects::is_deleting(pod) && !is_terminal(pod)
}

/// Phase `Succeeded` or `Failed`.
pub fn is_terminal(pod: &Value) -> bool {
    matches!(
        pod["status"]["phase"].as_str(),
        Some("Succeeded" | "Failed")
    )
}

fn ready_condition(pod: &Value) -> Option<&Value> {
    pod["status"]["conditions"]
        .as_array()?
        .iter()
        .find(|c| c["type"] == "Ready")
}

/// The `Ready` condition is `True`.
pub fn is_ready(pod: &Value) -> bool {
    ready_condition(pod).is_some_and(|c| c["status"] == "True")
}

/// Parses an RFC 3339 time.
pub fn parse_time(v: &Value) -> Option<DateTime<Utc>> {
    v.as_str()
        .and_then(|s| DateTime::parse_from_rfc3339(s).ok())
        .map(|t| t.with_timezone(&Utc))
}

/// Whether a pod is available (ready for at least `min_ready_seconds`) at `now`; if it is
/// ready but not yet available, how long until it will be.
pub fn availability(
    pod: &Value,
    min_ready_seconds: i64,
    now: DateTime<Utc>,
) -> (bool, Option<Duration>) {
    if !is_ready(pod) {
        return (false, None);
    }
    if min_ready_seconds <= 0 {
        return (true, None);
    }
    let since = ready_condition(pod)
        .and_then(|c| parse_time(&c["lastTransitionTime"]))
        .unwrap_or(now);
    let at = since + chrono::Duration::seconds(min_ready_seconds);
    if at <= now {
        (true, None)
    } else {
        (false, (at - now).to_std().ok())
    }
}

fn phase_rank(pod: &Value) -> u8 {
    match pod["status"]["phase"].as_str() {
        Some("Pending") => 0,
        Some("Unknown") => 1,
        Some("Running") => 2,
        _ => 3,
    }
}

fn restarts(pod: &Value) -> i64 {
    pod["status"]["containerStatuses"]
        .as_array()
        .map(|a| {
            a.iter()
                .map(|c| c["restartCount"].as_i64().unwrap_or(0))
                .sum()
        })
        .unwrap_or(0)
}

/// Kubernetes' order for deleting pods on scale-down (`ActivePods`): the first is deleted
/// first — unscheduled before scheduled, pending before running, not ready before ready,
/// ready for less time first, more restarts first, newer first.
pub fn deletion_order(a: &Value, b: &Value) -> Ordering {
    let bound = |p: &Value| {
        p["spec"]["nodeName"]
            .as_str()
            .is_some_and(|n| !n.is_empty())
    };
    bound(a)
        .cmp(&bound(b))
        .then(phase_rank(a).cmp(&phase_rank(b)))
        .then(is_ready(a).cmp(&is_ready(b)))
        .then_with(|| {
            let t =
                |p: &Value| ready_condition(p).and_then(|c| parse_time(&c["lastTransitionTime"]));
            // Ready more recently first.
            t(b).cmp(&t(a))
        })
        .then(restarts(b).cmp(&restarts(a)))
        .then_with(|| {
            let c = |p: &Value| parse_time(&p["metadata"]["creationTimestamp"]);
            c(b).cmp(&c(a))
        })
}

/// A pod for `template` (a `PodTemplateSpec`) controlled by `owner`, named
/// `<generate_name><random>`, with `extra_labels` added.
pub fn from_template(
    template: &Value,
    owner: &Value,
    generate_name: &str,
    extra_labels: &[(&str, &str)],
) -> Value {
    let mut labels = template["metadata"]["labels"].clone();
    if !labels.is_object() {
        labels = json!({});
    }
    for (k, v) in extra_labels {
        labels[*k] = json!(v);
    }
    let mut meta = json!({
        "generateName": generate_name,
        "namespace": objects::namespace(owner),
        "labels": labels,
        "ownerReferences": [super::owner::reference_to(owner)],
    });
    if template["metadata"]["annotations"].is_object() {
        meta["annotations"] = template["metadata"]["annotations"].clone();
    }
    json!({"apiVersion": "v1", "kind": "Pod", "metadata": meta, "spec": template["spec"]})
}

/// Creates pods concurrently; returns the names created and the first error.
pub async fn create_all(
    api: &Api,
    ns: &str,
    pods_to_create: Vec<Value>,
) -> (Vec<String>, Option<ApiError>) {
    let results: Vec<ApiResult<Arc<Value>>> = futures::stream::iter(pods_to_create)
        .map(|p| async move {
            // The shared object, not a copy: only its name is read here.
            api.create_written(pods(), Some(ns), p, &WriteOptions::default())
                .await
                .map(|(w, _)| w.object)
        })
        .buffer_unordered(BURST)
        .collect()
        .await;
    let mut names = Vec::new();
    let mut first = None;
    for r in results {
        match r {
            Ok(o) => names.push(objects::name(&o).to_string()),
            Err(e) => {
                first.get_or_insert(e);
            }
        }
    }
    (names, first)
}

/// Creates `owner`'s pods concurrently and records what Kubernetes' controllers do: a
/// `SuccessfulCreate` event per pod and a `FailedCreate` one for the first error. Returns the
/// names created and that error.
pub async fn create_recorded(
    api: &Api,
    events: &EventRecorder,
    owner: &Value,
    ns: &str,
    pods_to_create: Vec<Value>,
) -> (Vec<String>, Option<ApiError>) {
    let (created, err) = create_all(api, ns, pods_to_create).await;
    for n in &created {
        events.normal(
            super::owner::object_reference(owner),
            "SuccessfulCreate",
            format!("Created pod: {n}"),
        );
    }
    if let Some(e) = &err {
        events.warning(
            super::owner::object_reference(owner),
            "FailedCreate",
            format!("Error creating: {}", e.message),
        );
    }
    (created, err)
}

/// Deletes `owner`'s pods `names` gracefully and records a `SuccessfulDelete` event per pod
/// deleted. Returns the names deleted (or already gone) and the first error.
pub async fn delete_recorded(
    api: &Api,
    events: &EventRecorder,
    owner: &Value,
    ns: &str,
    names: Vec<String>,
) -> (Vec<String>, Option<ApiError>) {
    let (deleted, err) = delete_all(api, ns, names, None).await;
    for n in &deleted {
        events.normal(
            super::owner::object_reference(owner),
            "SuccessfulDelete",
            format!("Deleted pod: {n}"),
        );
    }
    (deleted, err)
}

/// Deletes pods concurrently (gracefully, or with `grace` seconds); returns the names
/// deleted (or already gone) and the first error.
pub async fn delete_all(
    api: &Api,
    ns: &str,
    names: Vec<String>,
    grace: Option<i64>,
) -> (Vec<String>, Option<ApiError>) {
    let opts = DeleteOptions {
        grace_period_seconds: grace,
        ..Default::default()
    };
    let results: Vec<(String, ApiResult<()>)> = futures::stream::iter(names)
        .map(|n| {
            let opts = &opts;
            async move {
                let r = match api.delete(pods(), Some(ns), &n, opts).await {
                    Ok(_) => Ok(()),
                    Err(e) if e.code == 404 => Ok(()),
                    Err(e) => Err(e),
                };
                (n, r)
            }
        })
        .buffer_unordered(BURST)
        .collect()
        .await;
    let mut names = Vec::new();
    let mut first = None;
    for (n, r) in results {
        match r {
            Ok(()) => names.push(n),
            Err(e) => {
                first.get_or_insert(e);
            }
        }
    }
    (names, first)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pod(node: &str, phase: &str, ready: bool, created: &str) -> Value {
        json!({
            "metadata": {"creationTimestamp": created},
            "spec": {"nodeName": node},
            "status": {"phase": phase, "conditions": [{"type": "Ready", "status": if ready {"True"} else {"False"}, "lastTransitionTime": created}]},
        })
    }

    #[test]
    fn scale_down_deletes_unscheduled_then_not_ready_then_newest_pods_first() {
        let old_ready = pod("n", "Running", true, "2024-01-01T00:00:00Z");
        let new_ready = pod("n", "Running", true, "2024-01-02T00:00:00Z");
        let not_ready = pod("n", "Running", false, "2023-01-01T00:00:00Z");
        let pending = pod("n", "Pending", false, "2023-01-01T00:00:00Z");
        let unbound = pod("", "Pending", false, "2023-01-01T00:00:00Z");
        let mut all = vec![
            old_ready.clone(),
            new_ready.clone(),
            not_ready.clone(),
            pending.clone(),
            unbound.clone(),
        ];
        all.sort_by(deletion_order);
        assert_eq!(all, vec![unbound, pending, not_ready, new_ready, old_ready]);
    }

    #[test]
    fn a_pod_is_available_once_ready_for_min_ready_seconds() {
        let now = parse_time(&json!("2024-01-01T00:00:10Z")).unwrap();
        let p = pod("n", "Running", true, "2024-01-01T00:00:05Z");
        assert_eq!(availability(&p, 0, now), (true, None));
        assert_eq!(availability(&p, 5, now), (true, None));
        assert_eq!(
            availability(&p, 8, now),
            (false, Some(Duration::from_secs(3)))
        );
        assert_eq!(
            availability(&pod("n", "Running", false, "2024-01-01T00:00:00Z"), 0, now),
            (false, None)
        );
    }

    #[test]
    fn pods_from_a_template_carry_labels_and_the_controller_reference() {
        let owner = json!({"apiVersion": "apps/v1", "kind": "ReplicaSet", "metadata": {"name": "web-1", "namespace": "ns", "uid": "u"}});
        let t = json!({"metadata": {"labels": {"app": "web"}}, "spec": {"containers": [{"name": "c", "image": "i"}]}});
        let p = from_template(&t, &owner, "web-1-", &[("extra", "x")]);
        assert_eq!(p["metadata"]["labels"], json!({"app": "web", "extra": "x"}));
        assert_eq!(p["metadata"]["ownerReferences"][0]["uid"], "u");
        assert_eq!(p["metadata"]["ownerReferences"][0]["controller"], true);
        assert_eq!(p["metadata"]["generateName"], "web-1-");
        assert_eq!(p["spec"]["containers"][0]["image"], "i");
    }
}
