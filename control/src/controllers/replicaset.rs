//! The ReplicaSet controller: keeps `spec.replicas` active pods matching the selector,
//! adopting matching orphans and releasing pods that stopped matching (through
//! `ownerReferences`), and reports `status` (replicas, fullyLabeledReplicas, readyReplicas,
//! availableReplicas honouring `minReadySeconds`, observedGeneration, the ReplicaFailure
//! condition). Scale-down deletes the least useful pods first ([`pods::deletion_order`]).

use std::sync::Arc;
use std::time::Duration;

use serde_json::{Value, json};
use tokio_util::sync::CancellationToken;

use super::owner;
use super::pods;
use super::runner::{self, ObjectKey, Reconciler, RunnerConfig, Watched};
use crate::apiserver::api::{Api, WriteOptions};
use crate::apiserver::error::ApiResult;
use crate::apiserver::objects;
use crate::apiserver::resources::{self, ResourceInfo, Subresource};
use crate::events::{EventRecorder, EventWriter};

/// The `replicasets` resource.
pub fn replicasets() -> &'static ResourceInfo {
    resources::find("apps", "v1", "replicasets").expect("replicasets served")
}

/// The ReplicaSet reconciler.
pub struct ReplicaSetController {
    api: Api,
    events: EventRecorder,
}

/// What the pods of a ReplicaSet add up to.
#[derive(Debug, Default, PartialEq, Eq)]
pub struct Counts {
    /// Active pods.
    pub replicas: i64,
    /// Active pods with every label of the template.
    pub fully_labeled: i64,
    /// Ready ones.
    pub ready: i64,
    /// Ready for `minReadySeconds`.
    pub available: i64,
}

/// Counts a ReplicaSet's active pods; also returns when the next pod becomes available.
pub fn count(
    rs: &Value,
    active: &[&Value],
    now: chrono::DateTime<chrono::Utc>,
) -> (Counts, Option<Duration>) {
    let min_ready = rs["spec"]["minReadySeconds"].as_i64().unwrap_or(0);
    let template_labels = rs["spec"]["template"]["metadata"]["labels"]
        .as_object()
        .cloned()
        .unwrap_or_default();
    let mut c = Counts {
        replicas: active.len() as i64,
        ..Default::default()
    };
    let mut next: Option<Duration> = None;
    for p in active {
        if template_labels
            .iter()
            .all(|(k, v)| p["metadata"]["labels"][k] == *v)
        {
            c.fully_labeled += 1;
        }
        if pods::is_ready(p) {
            c.ready += 1;
        }
        match pods::availability(p, min_ready, now) {
            (true, _) => c.available += 1,
            (false, Some(d)) => next = Some(next.map_or(d, |n| n.min(d))),
            _ => {}
        }
    }
    (c, next)
}

impl ReplicaSetController {
    /// A controller writing through `api`, and the event writer to run beside it.
    pub fn new(api: Api) -> (Self, EventWriter) {
        let (events, writer) = EventRecorder::new(api.clone(), "replicaset-controller");
        (ReplicaSetController { api, events }, writer)
    }

    async fn sync(&self, key: &ObjectKey) -> ApiResult<Option<Duration>> {
        let ns = key.namespace.as_deref().unwrap_or("default");
        let rs = match self.api.get(replicasets(), Some(ns), &key.name).await {
            Ok(rs) => rs,
            Err(e) if e.code == 404 => return Ok(None),
            Err(e) => return Err(e),
        };
        let uid = owner::uid(&rs).to_string();
        let selector = owner::selector(&rs);
        let deleting = objects::is_deleting(&rs);
        let all = pods::list(&self.api, ns).await?;
        let mut mine: Vec<&Value> = Vec::new();
        for p in &all {
            let matches = selector.as_ref().is_some_and(|s| s.matches_object(p));
            match owner::controller_ref(p) {
                Some(r) if r["uid"] == uid.as_str() => {
                    if matches {
                        mine.push(p);
                    } else if !objects::is_deleting(p) {
                        match owner::release(&self.api, pods::pods(), p, &uid).await {
                            Ok(()) => {}
                            Err(e) if e.code == 404 || e.code == 409 => {}
                            Err(e) => return Err(e),
                        }
                    }
                }
                None if matches && !deleting && !objects::is_deleting(p) => {
                    match owner::adopt(&self.api, pods::pods(), p, &rs).await {
                        Ok(_) => mine.push(p),
                        Err(e) if e.code == 404 || e.code == 409 => {}
                        Err(e) => return Err(e),
                    }
                }
                _ => {}
            }
        }
        let mut active: Vec<&Value> = mine
            .iter()
            .copied()
            .filter(|p| pods::is_active(p))
            .collect();
        let want = rs["spec"]["replicas"].as_i64().unwrap_or(1).max(0);
        let mut changed = false;
        let mut failure: Option<String> = None;
        if !deleting && selector.is_some() {
            let diff = active.len() as i64 - want;
            if diff < 0 {
                let prefix = format!("{}-", objects::name(&rs));
                let new: Vec<Value> = (0..-diff)
                    .map(|_| pods::from_template(&rs["spec"]["template"], &rs, &prefix, &[]))
                    .collect();
                let (_, err) = pods::create_recorded(&self.api, &self.events, &rs, ns, new).await;
                if let Some(e) = err {
                    failure = Some(e.message);
                }
                changed = true;
            } else if diff > 0 {
                active.sort_by(|a, b| pods::deletion_order(a, b));
                let victims: Vec<String> = active
                    .iter()
                    .take(diff as usize)
                    .map(|p| objects::name(p).to_string())
                    .collect();
                let (_, err) =
                    pods::delete_recorded(&self.api, &self.events, &rs, ns, victims).await;
                if let Some(e) = err {
                    failure = Some(e.message.clone());
                }
                active.drain(..diff as usize);
                changed = true;
            }
        }
        let (c, next) = count(&rs, &active, chrono::Utc::now());
        let mut status = json!({
            "replicas": c.replicas, "fullyLabeledReplicas": c.fully_labeled,
            "readyReplicas": c.ready, "availableReplicas": c.available,
            "observedGeneration": rs["metadata"]["generation"],
        });
        let old_conditions: Vec<Value> = rs["status"]["conditions"]
            .as_array()
            .cloned()
            .unwrap_or_default();
        let mut conditions: Vec<Value> = old_conditions
            .iter()
            .filter(|c| c["type"] != "ReplicaFailure")
            .cloned()
            .collect();
        if let Some(msg) = failure {
            let reason = if changed && active.len() as i64 > want {
                "FailedDelete"
            } else {
                "FailedCreate"
            };
            conditions.push(json!({"type": "ReplicaFailure", "status": "True", "reason": reason, "message": msg, "lastTransitionTime": objects::now_rfc3339()}));
        }
        if !conditions.is_empty() {
            status["conditions"] = json!(conditions);
        }
        write_status(&self.api, replicasets(), &rs, status).await?;
        Ok(if changed {
            Some(Duration::from_millis(200))
        } else {
            next.map(|d| d + Duration::from_millis(50))
        })
    }
}

/// Writes `status` if it differs, with compare-and-swap on the object's resourceVersion (a
/// conflict is retried by the queue).
pub async fn write_status(
    api: &Api,
    res: &ResourceInfo,
    obj: &Value,
    status: Value,
) -> ApiResult<()> {
    if obj["status"] == status {
        return Ok(());
    }
    let mut updated = obj.clone();
    updated["status"] = status;
    match api
        .update(
            res,
            objects::namespace(obj),
            objects::name(obj),
            updated,
            Some(Subresource::Status),
            &WriteOptions::default(),
        )
        .await
    {
        Ok(_) => Ok(()),
        Err(e) if e.code == 404 => Ok(()),
        Err(e) => Err(e),
    }
}

impl Reconciler for ReplicaSetController {
    async fn reconcile(&self, key: &ObjectKey) -> ApiResult<Option<Duration>> {
        // An all-key: an orphan pod changed: every ReplicaSet of its namespace looks for it.
        runner::sync_each(&self.api, replicasets(), key, |k| async move {
            self.sync(&k).await
        })
        .await
    }
}

/// Runs the ReplicaSet controller until `shutdown`.
pub async fn run(api: Api, shutdown: CancellationToken) {
    let (controller, writer) = ReplicaSetController::new(api.clone());
    let events = tokio::spawn(writer.run(shutdown.clone()));
    let watched = vec![
        Watched::primary(replicasets()),
        Watched::owned_by_or_orphan(pods::pods(), "ReplicaSet"),
    ];
    let config = RunnerConfig {
        name: "replicaset",
        workers: 4,
        resync: Duration::from_secs(10),
    };
    runner::run(api, watched, Arc::new(controller), config, shutdown).await;
    let _ = events.await;
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn counts_honour_template_labels_readiness_and_min_ready_seconds() {
        let now = pods::parse_time(&json!("2024-01-01T00:00:10Z")).unwrap();
        let rs = json!({"spec": {"minReadySeconds": 5, "template": {"metadata": {"labels": {"app": "a", "tier": "t"}}}}});
        let ready_long = json!({"metadata": {"labels": {"app": "a", "tier": "t"}}, "status": {"conditions": [{"type": "Ready", "status": "True", "lastTransitionTime": "2024-01-01T00:00:00Z"}]}});
        let ready_just = json!({"metadata": {"labels": {"app": "a"}}, "status": {"conditions": [{"type": "Ready", "status": "True", "lastTransitionTime": "2024-01-01T00:00:08Z"}]}});
        let not_ready = json!({"metadata": {"labels": {"app": "a", "tier": "t"}}, "status": {}});
        let (c, next) = count(&rs, &[&ready_long, &ready_just, &not_ready], now);
        assert_eq!(
            c,
            Counts {
                replicas: 3,
                fully_labeled: 2,
                ready: 2,
                available: 1
            }
        );
        assert_eq!(next, Some(Duration::from_secs(3)));
    }
}
