//! The DaemonSet controller: one pod on every eligible node (its `nodeSelector` matches and
//! the node's `NoSchedule`/`NoExecute` taints are tolerated), following nodes as they come
//! and go. Daemon pods are bound directly (`spec.nodeName`), get the tolerations Kubernetes
//! gives them (not-ready, unreachable, pressure, unschedulable), and are replaced at most
//! `maxUnavailable` at a time when the template changes (`RollingUpdate`; `OnDelete` waits
//! for the user). The template's hash is the `controller-revision-hash` label.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use k8s_openapi::api::core::v1::{Taint, Toleration};
use serde_json::{Value, json};
use tokio_util::sync::CancellationToken;

use super::owner;
use super::pods;
use super::replicaset::write_status;
use super::rollout;
use super::runner::{self, ObjectKey, Reconciler, RunnerConfig, Watched};
use crate::apiserver::api::{Api, ListParams};
use crate::apiserver::error::ApiResult;
use crate::apiserver::objects;
use crate::apiserver::resources::{self, ResourceInfo};
use crate::events::{EventRecorder, EventWriter};
use crate::scheduler::filter::untolerated_taint;

/// The label carrying the template's hash on daemon pods.
pub const REVISION_HASH_LABEL: &str = "controller-revision-hash";
/// The key that stands for "every DaemonSet" (a node changed).
const ALL: &str = "*";

/// The `daemonsets` resource.
pub fn daemonsets() -> &'static ResourceInfo {
    resources::find("apps", "v1", "daemonsets").expect("daemonsets served")
}

fn nodes() -> &'static ResourceInfo {
    resources::find("", "v1", "nodes").expect("nodes served")
}

/// The tolerations every daemon pod gets (Kubernetes' `AddOrUpdateDaemonPodTolerations`).
pub fn daemon_tolerations() -> Vec<Value> {
    let mut t = vec![
        json!({"key": "node.kubernetes.io/not-ready", "operator": "Exists", "effect": "NoExecute"}),
        json!({"key": "node.kubernetes.io/unreachable", "operator": "Exists", "effect": "NoExecute"}),
    ];
    for key in [
        "disk-pressure",
        "memory-pressure",
        "pid-pressure",
        "unschedulable",
    ] {
        t.push(json!({"key": format!("node.kubernetes.io/{key}"), "operator": "Exists", "effect": "NoSchedule"}));
    }
    t
}

/// Whether a daemon pod of `ds` belongs on `node`.
pub fn should_run_on(ds: &Value, node: &Value) -> bool {
    let spec = &ds["spec"]["template"]["spec"];
    if let Some(sel) = spec["nodeSelector"].as_object()
        && !sel.iter().all(|(k, v)| node["metadata"]["labels"][k] == *v)
    {
        return false;
    }
    let taints: Vec<Taint> =
        serde_json::from_value(node["spec"]["taints"].clone()).unwrap_or_default();
    let mut tolerations: Vec<Toleration> =
        serde_json::from_value(spec["tolerations"].clone()).unwrap_or_default();
    tolerations.extend(
        daemon_tolerations()
            .into_iter()
            .filter_map(|t| serde_json::from_value(t).ok()),
    );
    untolerated_taint(&taints, &tolerations).is_none()
}

/// The DaemonSet reconciler.
pub struct DaemonSetController {
    api: Api,
    events: EventRecorder,
}

impl DaemonSetController {
    /// A controller writing through `api`, and the event writer to run beside it.
    pub fn new(api: Api) -> (Self, EventWriter) {
        let (events, writer) = EventRecorder::new(api.clone(), "daemonset-controller");
        (DaemonSetController { api, events }, writer)
    }

    async fn sync(&self, key: &ObjectKey) -> ApiResult<Option<Duration>> {
        let ns = key.namespace.as_deref().unwrap_or("default");
        let ds = match self.api.get(daemonsets(), Some(ns), &key.name).await {
            Ok(d) => d,
            Err(e) if e.code == 404 => return Ok(None),
            Err(e) => return Err(e),
        };
        if objects::is_deleting(&ds) {
            return Ok(None);
        }
        let uid = owner::uid(&ds).to_string();
        let (node_list, _, _) = self.api.list(nodes(), None, &ListParams::default()).await?;
        let all = pods::list(&self.api, ns).await?;
        let mine: Vec<&Value> = all
            .iter()
            .filter(|p| owner::is_controlled_by(p, &uid))
            .collect();
        let hash = rollout::template_hash(
            &ds["spec"]["template"],
            ds["status"]["collisionCount"].as_i64().unwrap_or(0),
        );
        let mut by_node: BTreeMap<&str, Vec<&Value>> = BTreeMap::new();
        for p in &mine {
            by_node
                .entry(p["spec"]["nodeName"].as_str().unwrap_or(""))
                .or_default()
                .push(p);
        }
        let mut create_on: Vec<String> = Vec::new();
        let mut delete: Vec<String> = Vec::new();
        let (mut desired, mut current, mut misscheduled, mut ready, mut updated, mut available) =
            (0i64, 0i64, 0i64, 0i64, 0i64, 0i64);
        let mut old_ready: Vec<&Value> = Vec::new();
        let mut unavailable = 0i64;
        let min_ready = ds["spec"]["minReadySeconds"].as_i64().unwrap_or(0);
        let now = chrono::Utc::now();
        let mut eligible_nodes = std::collections::HashSet::new();
        for node in &node_list {
            let name = objects::name(node);
            let on_node = by_node.get(name).cloned().unwrap_or_default();
            // Failed daemon pods are deleted and replaced.
            for p in on_node
                .iter()
                .filter(|p| pods::is_terminal(p) && !objects::is_deleting(p))
            {
                delete.push(objects::name(p).to_string());
            }
            let mut active: Vec<&Value> = on_node
                .iter()
                .copied()
                .filter(|p| pods::is_active(p))
                .collect();
            let terminating = on_node.iter().any(|p| objects::is_deleting(p));
            if should_run_on(&ds, node) {
                eligible_nodes.insert(name.to_string());
                desired += 1;
                if active.is_empty() {
                    unavailable += 1;
                    if !terminating {
                        create_on.push(name.to_string());
                    }
                    continue;
                }
                current += 1;
                active.sort_by_key(|p| {
                    p["metadata"]["creationTimestamp"]
                        .as_str()
                        .unwrap_or("")
                        .to_string()
                });
                for extra in &active[1..] {
                    delete.push(objects::name(extra).to_string());
                }
                let p = active[0];
                let (is_available, _) = pods::availability(p, min_ready, now);
                if pods::is_ready(p) {
                    ready += 1;
                }
                if is_available {
                    available += 1;
                } else {
                    unavailable += 1;
                }
                if p["metadata"]["labels"][REVISION_HASH_LABEL] == hash.as_str() {
                    updated += 1;
                } else if is_available {
                    old_ready.push(p);
                } else {
                    // An old pod that is not available anyway: replace it at once.
                    delete.push(objects::name(p).to_string());
                }
            } else if !active.is_empty() {
                misscheduled += 1;
                delete.extend(active.iter().map(|p| objects::name(p).to_string()));
            }
        }
        // Pods on nodes that no longer exist.
        for (node, ps) in &by_node {
            if !node_list.iter().any(|n| objects::name(n) == *node) {
                delete.extend(
                    ps.iter()
                        .filter(|p| !objects::is_deleting(p))
                        .map(|p| objects::name(p).to_string()),
                );
            }
        }
        if ds["spec"]["updateStrategy"]["type"] != "OnDelete" {
            let max_unavailable = rollout::int_or_percent(
                &ds["spec"]["updateStrategy"]["rollingUpdate"]["maxUnavailable"],
                desired,
                false,
            )
            .max(1);
            let budget = (max_unavailable - unavailable).max(0) as usize;
            delete.extend(
                old_ready
                    .iter()
                    .take(budget)
                    .map(|p| objects::name(p).to_string()),
            );
        }
        let mut acted = false;
        if !create_on.is_empty() {
            let mut template = ds["spec"]["template"].clone();
            let mut tolerations = template["spec"]["tolerations"]
                .as_array()
                .cloned()
                .unwrap_or_default();
            for t in daemon_tolerations() {
                if !tolerations.contains(&t) {
                    tolerations.push(t);
                }
            }
            template["spec"]["tolerations"] = json!(tolerations);
            let prefix = format!("{}-", objects::name(&ds));
            let new: Vec<Value> = create_on
                .iter()
                .map(|node| {
                    let mut p = pods::from_template(
                        &template,
                        &ds,
                        &prefix,
                        &[(REVISION_HASH_LABEL, hash.as_str())],
                    );
                    p["spec"]["nodeName"] = json!(node);
                    p
                })
                .collect();
            let (created, err) = pods::create_all(&self.api, ns, new).await;
            for n in created {
                self.events.normal(
                    owner::object_reference(&ds),
                    "SuccessfulCreate",
                    format!("Created pod: {n}"),
                );
            }
            if let Some(e) = err {
                self.events.warning(
                    owner::object_reference(&ds),
                    "FailedCreate",
                    format!("Error creating: {}", e.message),
                );
            }
            acted = true;
        }
        if !delete.is_empty() {
            delete.sort();
            delete.dedup();
            let (deleted, _) = pods::delete_all(&self.api, ns, delete, None).await;
            for n in deleted {
                self.events.normal(
                    owner::object_reference(&ds),
                    "SuccessfulDelete",
                    format!("Deleted pod: {n}"),
                );
            }
            acted = true;
        }
        let status = json!({
            "desiredNumberScheduled": desired, "currentNumberScheduled": current,
            "numberMisscheduled": misscheduled, "numberReady": ready,
            "updatedNumberScheduled": updated, "numberAvailable": available,
            "numberUnavailable": (desired - available).max(0),
            "observedGeneration": ds["metadata"]["generation"],
        });
        let mut status = status;
        if let Some(c) = ds["status"].get("collisionCount").filter(|c| !c.is_null()) {
            status["collisionCount"] = c.clone();
        }
        write_status(&self.api, daemonsets(), &ds, status).await?;
        Ok(if acted {
            Some(Duration::from_millis(250))
        } else {
            None
        })
    }
}

impl Reconciler for DaemonSetController {
    async fn reconcile(&self, key: &ObjectKey) -> ApiResult<Option<Duration>> {
        if key.name == ALL {
            let (all, _, _) = self
                .api
                .list(daemonsets(), None, &ListParams::default())
                .await?;
            for ds in &all {
                self.sync(&ObjectKey::of(ds)).await?;
            }
            return Ok(None);
        }
        self.sync(key).await
    }
}

/// Runs the DaemonSet controller until `shutdown`.
pub async fn run(api: Api, shutdown: CancellationToken) {
    let (controller, writer) = DaemonSetController::new(api.clone());
    let events = tokio::spawn(writer.run(shutdown.clone()));
    let watched = vec![
        Watched::primary(daemonsets()),
        Watched::owned_by(pods::pods(), "DaemonSet"),
        Watched::with_map(nodes(), |_| {
            vec![ObjectKey {
                namespace: None,
                name: ALL.into(),
            }]
        }),
    ];
    let config = RunnerConfig {
        name: "daemonset",
        workers: 2,
        resync: Duration::from_secs(10),
    };
    runner::run(api, watched, Arc::new(controller), config, shutdown).await;
    let _ = events.await;
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn daemon_pods_follow_node_selectors_and_taints() {
        let ds = json!({"spec": {"template": {"spec": {"nodeSelector": {"role": "edge"}}}}});
        let edge = json!({"metadata": {"labels": {"role": "edge"}}, "spec": {}});
        let core = json!({"metadata": {"labels": {"role": "core"}}, "spec": {}});
        assert!(should_run_on(&ds, &edge));
        assert!(!should_run_on(&ds, &core));
        let tainted = json!({"metadata": {"labels": {"role": "edge"}}, "spec": {"taints": [{"key": "dedicated", "value": "db", "effect": "NoSchedule"}]}});
        assert!(!should_run_on(&ds, &tainted));
        let tolerant = json!({"spec": {"template": {"spec": {"tolerations": [{"key": "dedicated", "operator": "Exists"}]}}}});
        assert!(should_run_on(&tolerant, &tainted));
        // Unreachable and cordoned nodes keep their daemons.
        let unreachable = json!({"metadata": {}, "spec": {"taints": [
            {"key": "node.kubernetes.io/unreachable", "effect": "NoExecute"},
            {"key": "node.kubernetes.io/unschedulable", "effect": "NoSchedule"}]}});
        assert!(should_run_on(
            &json!({"spec": {"template": {"spec": {}}}}),
            &unreachable
        ));
    }
}
