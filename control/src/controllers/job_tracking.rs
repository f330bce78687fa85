//! How a Job counts its finished pods exactly once, as Kubernetes does
//! (`trackJobStatusAndRemoveFinalizers`): every Job pod is created with the
//! `batch.kubernetes.io/job-tracking` finalizer, so it cannot vanish uncounted. A pod that
//! finished (Succeeded or Failed), is being deleted before it succeeded (counted as failed),
//! or belongs to a finished Job is first recorded by UID in
//! `status.uncountedTerminatedPods`; then its finalizer is removed; then the recorded UIDs
//! move into `status.succeeded` / `status.failed`. Each step is its own write, so a restart
//! between them neither loses nor double-counts a pod. A failed pod the Job's
//! `podFailurePolicy` ignores is released without being recorded; one it fails the Job for
//! is recorded with the `FailureTarget` condition, in the same write.

use std::collections::BTreeSet;

use serde_json::{Value, json};

use super::job_failure_policy::{self, Action};
use super::owner;
use super::pods;
use crate::apiserver::api::{Api, WriteOptions};
use crate::apiserver::error::ApiResult;
use crate::apiserver::objects;
use crate::apiserver::patch::PatchType;
use crate::apiserver::resources::{ResourceInfo, Subresource};

/// The finalizer that keeps a Job's pod until the Job counted it.
pub const FINALIZER: &str = "batch.kubernetes.io/job-tracking";

/// Whether a pod still carries the tracking finalizer.
pub fn has_finalizer(pod: &Value) -> bool {
    objects::finalizers(pod).iter().any(|f| f == FINALIZER)
}

/// `status.uncountedTerminatedPods`: UIDs of finished pods not yet in the counters.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Uncounted {
    /// Pods that succeeded.
    pub succeeded: BTreeSet<String>,
    /// Pods that failed.
    pub failed: BTreeSet<String>,
}

impl Uncounted {
    /// Reads them from a Job.
    pub fn of(job: &Value) -> Uncounted {
        let set = |f: &str| {
            job["status"]["uncountedTerminatedPods"][f]
                .as_array()
                .map(|a| {
                    a.iter()
                        .filter_map(|u| u.as_str().map(String::from))
                        .collect()
                })
                .unwrap_or_default()
        };
        Uncounted {
            succeeded: set("succeeded"),
            failed: set("failed"),
        }
    }

    /// The JSON Kubernetes writes (empty lists left out, `{}` when none).
    pub fn to_json(&self) -> Value {
        let mut v = json!({});
        if !self.succeeded.is_empty() {
            v["succeeded"] = json!(self.succeeded);
        }
        if !self.failed.is_empty() {
            v["failed"] = json!(self.failed);
        }
        v
    }
}

/// What tracking does next for a Job's pods (pure; see [`track`]).
#[derive(Debug, Default, PartialEq, Eq)]
pub struct Plan {
    /// The uncounted UIDs once this pass's finished pods are added.
    pub uncounted: Uncounted,
    /// Pods (names) whose finalizer can go: they are recorded in `uncounted`, or ignored.
    pub release: Vec<String>,
    /// Why the Job fails, when a failed pod matched a `FailJob` rule of its
    /// `podFailurePolicy`.
    pub fail_job: Option<String>,
}

/// Records the finished pods among `pods_of_job` (those with the finalizer) in `uncounted`
/// and names the pods whose finalizer can go. With `job_finished`, still-running pods count
/// as failed too (a finished Job stops them). Failed pods go through `job`'s
/// `podFailurePolicy`.
pub fn plan(
    job: &Value,
    uncounted: &Uncounted,
    pods_of_job: &[&Value],
    job_finished: bool,
) -> Plan {
    let mut next = uncounted.clone();
    let mut release = Vec::new();
    let mut fail_job = None;
    for p in pods_of_job.iter().filter(|p| has_finalizer(p)) {
        let uid = owner::uid(p).to_string();
        let succeeded = p["status"]["phase"] == "Succeeded";
        let failed = p["status"]["phase"] == "Failed" || (objects::is_deleting(p) && !succeeded);
        if !(succeeded || failed || job_finished) {
            continue;
        }
        release.push(objects::name(p).to_string());
        if p["status"]["phase"] == "Failed" && !next.failed.contains(&uid) {
            match job_failure_policy::evaluate(job, p) {
                Action::Ignore => continue,
                Action::FailJob(why) => {
                    fail_job.get_or_insert(why);
                }
                Action::Count | Action::FailIndex => {}
            }
        }
        if succeeded {
            if !next.failed.contains(&uid) {
                next.succeeded.insert(uid);
            }
        } else if !next.succeeded.contains(&uid) {
            next.failed.insert(uid);
        }
    }
    Plan {
        uncounted: next,
        release,
        fail_job,
    }
}

/// Moves recorded UIDs whose pods no longer hold the finalizer (`held`: UIDs of pods that
/// still do) into the counters: the new `(succeeded, failed)` and what stays uncounted.
pub fn flush(
    succeeded: i64,
    failed: i64,
    uncounted: &Uncounted,
    held: &BTreeSet<String>,
) -> (i64, i64, Uncounted) {
    let (done_s, left_s): (BTreeSet<String>, BTreeSet<String>) = uncounted
        .succeeded
        .iter()
        .cloned()
        .partition(|u| !held.contains(u));
    let (done_f, left_f): (BTreeSet<String>, BTreeSet<String>) = uncounted
        .failed
        .iter()
        .cloned()
        .partition(|u| !held.contains(u));
    (
        succeeded + done_s.len() as i64,
        failed + done_f.len() as i64,
        Uncounted {
            succeeded: left_s,
            failed: left_f,
        },
    )
}

/// Removes the tracking finalizer from a pod (pinned to its resourceVersion).
pub async fn remove_finalizer(api: &Api, pod: &Value) -> ApiResult<()> {
    let rest: Vec<String> = objects::finalizers(pod)
        .into_iter()
        .filter(|f| f != FINALIZER)
        .collect();
    let patch = json!({"metadata": {
        "finalizers": if rest.is_empty() { Value::Null } else { json!(rest) },
        "resourceVersion": pod["metadata"]["resourceVersion"],
    }});
    match api
        .patch(
            pods::pods(),
            objects::namespace(pod),
            objects::name(pod),
            PatchType::Merge,
            patch.to_string().as_bytes(),
            None,
            &WriteOptions::default(),
        )
        .await
    {
        Ok(_) => Ok(()),
        Err(e) if e.code == 404 => Ok(()),
        Err(e) => Err(e),
    }
}

async fn write_status(
    api: &Api,
    res: &ResourceInfo,
    job: &Value,
    status: Value,
) -> ApiResult<Value> {
    let mut updated = job.clone();
    updated["status"] = status;
    let (out, _) = api
        .update(
            res,
            objects::namespace(job),
            objects::name(job),
            updated,
            Some(Subresource::Status),
            &WriteOptions::default(),
        )
        .await?;
    Ok(out)
}

/// The Job's `FailureTarget=True` condition: it is failing, for the reason and message there.
pub fn failure_target(job: &Value) -> Option<&Value> {
    job["status"]["conditions"]
        .as_array()?
        .iter()
        .find(|c| c["type"] == "FailureTarget" && c["status"] == "True")
}

/// One tracking pass over a Job's pods: records, releases and counts what finished; returns
/// the Job as written (its `status.succeeded`/`failed` then include every finished pod whose
/// finalizer is gone).
pub async fn track(
    api: &Api,
    res: &ResourceInfo,
    job: Value,
    pods_of_job: &[&Value],
    job_finished: bool,
) -> ApiResult<Value> {
    let mut job = job;
    let before = Uncounted::of(&job);
    let p = plan(&job, &before, pods_of_job, job_finished);
    let target = p
        .fail_job
        .as_ref()
        .filter(|_| !job_finished && failure_target(&job).is_none());
    if p.uncounted != before || target.is_some() {
        let mut status = job["status"].clone();
        if !status.is_object() {
            status = json!({});
        }
        status["uncountedTerminatedPods"] = p.uncounted.to_json();
        if let Some(why) = target {
            let now = chrono::Utc::now().to_rfc3339_opts(chrono::SecondsFormat::Secs, true);
            let condition = json!({"type": "FailureTarget", "status": "True",
                "reason": "PodFailurePolicy", "message": why,
                "lastProbeTime": now, "lastTransitionTime": now});
            if !status["conditions"].is_array() {
                status["conditions"] = json!([]);
            }
            status["conditions"]
                .as_array_mut()
                .expect("made an array above")
                .push(condition);
        }
        job = write_status(api, res, &job, status).await?;
    }
    for name in &p.release {
        if let Some(pod) = pods_of_job.iter().find(|x| objects::name(x) == name) {
            remove_finalizer(api, pod).await?;
        }
    }
    let held: BTreeSet<String> = pods_of_job
        .iter()
        .filter(|x| has_finalizer(x) && !p.release.iter().any(|n| n == objects::name(x)))
        .map(|x| owner::uid(x).to_string())
        .collect();
    let count = |f: &str| job["status"][f].as_i64().unwrap_or(0);
    let (succeeded, failed, left) = flush(count("succeeded"), count("failed"), &p.uncounted, &held);
    if left != p.uncounted {
        let mut status = job["status"].clone();
        if !status.is_object() {
            status = json!({});
        }
        status["succeeded"] = json!(succeeded);
        status["failed"] = json!(failed);
        status["uncountedTerminatedPods"] = left.to_json();
        job = write_status(api, res, &job, status).await?;
    }
    Ok(job)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pod(name: &str, phase: &str, deleting: bool, finalizer: bool) -> Value {
        let mut p = json!({"metadata": {"name": name, "uid": format!("u-{name}")}, "status": {"phase": phase}});
        if deleting {
            p["metadata"]["deletionTimestamp"] = json!("2024-01-01T00:00:00Z");
        }
        if finalizer {
            p["metadata"]["finalizers"] = json!([FINALIZER]);
        }
        p
    }

    #[test]
    fn finished_and_deleted_pods_are_recorded_then_released() {
        let ok = pod("ok", "Succeeded", false, true);
        let bad = pod("bad", "Failed", false, true);
        let killed = pod("killed", "Running", true, true);
        let running = pod("running", "Running", false, true);
        let counted = pod("counted", "Failed", false, false);
        let p = plan(
            &json!({}),
            &Uncounted::default(),
            &[&ok, &bad, &killed, &running, &counted],
            false,
        );
        assert_eq!(p.uncounted.succeeded.iter().collect::<Vec<_>>(), ["u-ok"]);
        assert_eq!(
            p.uncounted.failed.iter().collect::<Vec<_>>(),
            ["u-bad", "u-killed"]
        );
        assert_eq!(p.release, ["ok", "bad", "killed"]);
        // A finished Job stops and counts its running pods as failed.
        let p = plan(&json!({}), &Uncounted::default(), &[&running], true);
        assert_eq!(p.release, ["running"]);
        assert!(p.uncounted.failed.contains("u-running"));
    }

    #[tokio::test]
    async fn a_deleted_pod_goes_once_its_tracking_finalizer_is_removed() {
        use crate::apiserver::api::{ApiConfig, DeleteOptions};
        use crate::store::{RedbStore, RedbStoreConfig};
        let dir = tempfile::tempdir().unwrap();
        let store = RedbStore::open(RedbStoreConfig::new(dir.path().join("s.redb"))).unwrap();
        let api = Api::new(std::sync::Arc::new(store), ApiConfig::default());
        let ns = json!({"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": "default"}});
        let namespaces = crate::apiserver::resources::find("", "v1", "namespaces").unwrap();
        api.create(namespaces, None, ns, &WriteOptions::default())
            .await
            .unwrap();
        for (name, node) in [("unbound", ""), ("bound", "n1")] {
            let mut p = json!({"apiVersion": "v1", "kind": "Pod",
                "metadata": {"name": name, "namespace": "default", "finalizers": [FINALIZER]},
                "spec": {"containers": [{"name": "c", "image": "i"}]}});
            if !node.is_empty() {
                p["spec"]["nodeName"] = json!(node);
            }
            api.create(pods::pods(), Some("default"), p, &WriteOptions::default())
                .await
                .unwrap();
            let get = || api.get(pods::pods(), Some("default"), name);
            // Deleted (gracefully when bound, then the node's grace-0 delete): kept.
            api.delete(
                pods::pods(),
                Some("default"),
                name,
                &DeleteOptions::default(),
            )
            .await
            .unwrap();
            let zero = DeleteOptions {
                grace_period_seconds: Some(0),
                ..Default::default()
            };
            api.delete(pods::pods(), Some("default"), name, &zero)
                .await
                .unwrap();
            let kept = get().await.unwrap();
            assert!(objects::is_deleting(&kept), "{name}");
            remove_finalizer(&api, &kept).await.unwrap();
            assert_eq!(get().await.unwrap_err().code, 404, "{name} gone");
        }
    }

    #[test]
    fn recorded_pods_are_counted_once_their_finalizer_is_gone() {
        let uncounted = Uncounted {
            succeeded: ["a".to_string()].into(),
            failed: ["b".to_string(), "c".to_string()].into(),
        };
        let held: BTreeSet<String> = ["c".to_string()].into();
        let (s, f, left) = flush(1, 2, &uncounted, &held);
        assert_eq!((s, f), (2, 3));
        assert_eq!(
            left,
            Uncounted {
                succeeded: BTreeSet::new(),
                failed: ["c".to_string()].into()
            }
        );
        assert_eq!(left.to_json(), json!({"failed": ["c"]}));
        assert_eq!(Uncounted::default().to_json(), json!({}));
        // Recording twice changes nothing.
        let again = plan(&json!({}), &uncounted, &[], false);
        assert_eq!(again.uncounted, uncounted);
    }
}
