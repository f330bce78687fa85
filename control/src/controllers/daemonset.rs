//! The DaemonSet controller: one pod on every eligible node (its `nodeSelector` matches and
//! the node's `NoSchedule`/`NoExecute` taints are tolerated), following nodes as they come
//! and go. Daemon pods are bound directly (`spec.nodeName`) and get the tolerations
//! Kubernetes gives them (not-ready, unreachable, pressure, unschedulable). Every template
//! is a `ControllerRevision` ([`controller_history`]; `kubectl rollout history/undo ds`), and
//! pods carry its `controller-revision-hash`. A template change replaces pods with
//! `RollingUpdate` ([`rolling_update`]: `maxUnavailable` old pods at a time, or with
//! `maxSurge` a new pod beside the old one first) or, with `OnDelete`, only as the user
//! deletes them.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use k8s_openapi::api::core::v1::{Taint, Toleration};
use serde_json::{Value, json};
use tokio_util::sync::CancellationToken;

use super::controller_history;
use super::owner;
use super::pod_cache::PodCache;
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

pub use super::controller_history::REVISION_HASH_LABEL;

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
        let Some(ds) = runner::get_object(&self.api, daemonsets(), key).await? else {
            return Ok(None);
        };
        if objects::is_deleting(&ds) {
            return Ok(None);
        }
        let (current, history) =
            controller_history::sync_hashed(&self.api, daemonsets(), &ds).await?;
        let hash = current["metadata"]["labels"][REVISION_HASH_LABEL]
            .as_str()
            .unwrap_or("")
            .to_string();
        let (node_list, _, _) = self.api.list(nodes(), None, &ListParams::default()).await?;
        // Its pods, adopting matching orphans and releasing what stopped matching.
        let all = owner::claim(
            &self.api,
            pods::pods(),
            &ds,
            pods::list(&self.api, ns).await?,
        )
        .await?;
        let mine: Vec<&Value> = all.iter().collect();
        let mut by_node: BTreeMap<&str, Vec<&Value>> = BTreeMap::new();
        for p in &mine {
            by_node
                .entry(p["spec"]["nodeName"].as_str().unwrap_or(""))
                .or_default()
                .push(p);
        }
        let rolling = ds["spec"]["updateStrategy"]["type"] != "OnDelete";
        let ru = &ds["spec"]["updateStrategy"]["rollingUpdate"];
        let surge_allowed = rolling && rollout::int_or_percent(&ru["maxSurge"], 1, true) > 0;
        let mut create_on: Vec<String> = Vec::new();
        let mut delete: Vec<String> = Vec::new();
        let mut states: Vec<NodeState> = Vec::new();
        let (mut desired, mut current_n, mut misscheduled, mut ready, mut updated, mut available) =
            (0i64, 0i64, 0i64, 0i64, 0i64, 0i64);
        let min_ready = ds["spec"]["minReadySeconds"].as_i64().unwrap_or(0);
        let now = chrono::Utc::now();
        let mut next_available: Option<Duration> = None;
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
            active.sort_by_key(|p| {
                (
                    p["metadata"]["creationTimestamp"]
                        .as_str()
                        .unwrap_or("")
                        .to_string(),
                    objects::name(p).to_string(),
                )
            });
            let terminating = on_node.iter().any(|p| objects::is_deleting(p));
            if !should_run_on(&ds, node) {
                if !active.is_empty() {
                    misscheduled += 1;
                    delete.extend(active.iter().map(|p| objects::name(p).to_string()));
                }
                continue;
            }
            desired += 1;
            if active.is_empty() {
                if !terminating {
                    create_on.push(name.to_string());
                }
                states.push(NodeState::default());
                continue;
            }
            // Status from the oldest pod, as Kubernetes counts.
            current_n += 1;
            let oldest = active[0];
            if pods::is_ready(oldest) {
                ready += 1;
                match pods::availability(oldest, min_ready, now) {
                    (true, _) => available += 1,
                    (false, Some(d)) => {
                        next_available = Some(next_available.map_or(d, |n| n.min(d)))
                    }
                    _ => {}
                }
            }
            if oldest["metadata"]["labels"][REVISION_HASH_LABEL] == hash.as_str() {
                updated += 1;
            }
            let (keep, extra) = node_pods(&active, &hash, surge_allowed);
            delete.extend(extra);
            let view = |p: &Value| PodView {
                name: objects::name(p).to_string(),
                available: pods::availability(p, min_ready, now).0,
            };
            states.push(NodeState {
                node: name.to_string(),
                old: keep.old.map(view),
                new: keep.new.map(view),
            });
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
        if rolling {
            let max_surge = rollout::int_or_percent(&ru["maxSurge"], desired, true);
            let mut max_unavailable = rollout::int_or_percent(&ru["maxUnavailable"], desired, true);
            if desired > 0 && max_surge == 0 && max_unavailable == 0 {
                max_unavailable = 1;
            }
            let (old_to_delete, new_on) = rolling_update(&states, max_surge, max_unavailable);
            delete.extend(old_to_delete);
            create_on.extend(new_on);
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
            pods::create_recorded(&self.api, &self.events, &ds, ns, new).await;
            acted = true;
        }
        if !delete.is_empty() {
            delete.sort();
            delete.dedup();
            pods::delete_recorded(&self.api, &self.events, &ds, ns, delete).await;
            acted = true;
        }
        // Revisions no live pod uses, beyond revisionHistoryLimit, go.
        let live: Vec<&str> = mine
            .iter()
            .filter(|p| !objects::is_deleting(p))
            .filter_map(|p| p["metadata"]["labels"][REVISION_HASH_LABEL].as_str())
            .collect();
        controller_history::prune(&self.api, &ds, &history, objects::name(&current), &live).await?;
        let status = json!({
            "desiredNumberScheduled": desired, "currentNumberScheduled": current_n,
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
            next_available.map(|d| d + Duration::from_millis(50))
        })
    }
}

/// The pods a node keeps out of its active daemon pods (`active`, oldest first).
#[derive(Debug, Default)]
pub struct Kept<'a> {
    /// The oldest pod of an older revision.
    pub old: Option<&'a Value>,
    /// The oldest pod of the current revision.
    pub new: Option<&'a Value>,
}

/// Which of a node's active daemon pods (oldest first) stay, and which go (Kubernetes'
/// `podsShouldBeOnNode`): without surge only the oldest stays; with surge the oldest current
/// and the oldest old pod stay together only while the old one is ready and the current one
/// is not yet.
pub fn node_pods<'a>(active: &[&'a Value], hash: &str, surge: bool) -> (Kept<'a>, Vec<String>) {
    let is_new = |p: &Value| p["metadata"]["labels"][REVISION_HASH_LABEL] == hash;
    let mut kept = Kept::default();
    let mut extra = Vec::new();
    if !surge {
        if let Some((first, rest)) = active.split_first() {
            if is_new(first) {
                kept.new = Some(first);
            } else {
                kept.old = Some(first);
            }
            extra.extend(rest.iter().map(|p| objects::name(p).to_string()));
        }
        return (kept, extra);
    }
    for p in active {
        let slot = if is_new(p) {
            &mut kept.new
        } else {
            &mut kept.old
        };
        if slot.is_none() {
            *slot = Some(p);
        } else {
            extra.push(objects::name(p).to_string());
        }
    }
    if let (Some(new), Some(old)) = (kept.new, kept.old)
        && (!pods::is_ready(old) || pods::is_ready(new))
    {
        extra.push(objects::name(old).to_string());
        kept.old = None;
    }
    (kept, extra)
}

/// A daemon pod as the rolling update sees it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PodView {
    /// Its name.
    pub name: String,
    /// Ready for `minReadySeconds`.
    pub available: bool,
}

/// An eligible node's daemon pods after [`node_pods`]; `node` is empty for a node with none.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct NodeState {
    /// The node's name.
    pub node: String,
    /// Its pod of an older revision.
    pub old: Option<PodView>,
    /// Its pod of the current revision.
    pub new: Option<PodView>,
}

/// One step of a DaemonSet rolling update (Kubernetes' `rollingUpdate`): the old pods to
/// delete and the nodes to start a current pod on beside its old one. Without surge, old
/// pods go while no more than `max_unavailable` nodes lack an available pod (unavailable
/// old pods go at once); with surge, up to `max_surge` nodes get a current pod before their
/// old one goes (at once where the old one is unavailable), and an old pod goes once its
/// replacement is available.
pub fn rolling_update(
    nodes: &[NodeState],
    max_surge: i64,
    max_unavailable: i64,
) -> (Vec<String>, Vec<String>) {
    if max_surge == 0 {
        let mut unavailable = 0i64;
        let mut replace_now = Vec::new();
        let mut candidates = Vec::new();
        for n in nodes {
            match (&n.old, &n.new) {
                (None, None) | (Some(_), Some(_)) => unavailable += 1,
                (None, Some(new)) => {
                    if !new.available {
                        unavailable += 1;
                    }
                }
                (Some(old), None) => {
                    if !old.available {
                        replace_now.push(old.name.clone());
                    } else if unavailable < max_unavailable {
                        candidates.push(old.name.clone());
                    }
                }
            }
        }
        let room = (max_unavailable - unavailable).clamp(0, candidates.len() as i64) as usize;
        replace_now.extend(candidates.into_iter().take(room));
        return (replace_now, Vec::new());
    }
    let mut old_to_delete = Vec::new();
    let mut surge_now = Vec::new();
    let mut candidates = Vec::new();
    let mut surging = 0i64;
    for n in nodes {
        match (&n.old, &n.new) {
            (None, _) => {}
            (Some(old), None) => {
                if !old.available {
                    surge_now.push(n.node.clone());
                } else {
                    candidates.push(n.node.clone());
                }
            }
            (Some(old), Some(new)) => {
                if new.available {
                    old_to_delete.push(old.name.clone());
                } else {
                    surging += 1;
                }
            }
        }
    }
    let room = (max_surge - surging).clamp(0, candidates.len() as i64) as usize;
    surge_now.extend(candidates.into_iter().take(room));
    (old_to_delete, surge_now)
}

impl Reconciler for DaemonSetController {
    async fn reconcile(&self, key: &ObjectKey) -> ApiResult<Option<Duration>> {
        // An all-key: a node changed (every DaemonSet) or an orphan pod did (those of its namespace).
        runner::sync_each(&self.api, daemonsets(), key, |k| async move {
            self.sync(&k).await
        })
        .await
    }
}

/// Runs the DaemonSet controller until `shutdown`.
pub async fn run(api: Api, pods: PodCache, shutdown: CancellationToken) {
    let (controller, writer) = DaemonSetController::new(api.clone());
    let events = tokio::spawn(writer.run(shutdown.clone()));
    let watched = vec![
        Watched::primary(daemonsets()),
        // From the shared pod cache, which has decoded every pod change already.
        Watched::owned_by_or_orphan(pods::pods(), "DaemonSet").from_cache(&pods, |_| {}),
        Watched::with_map(nodes(), |_| vec![ObjectKey::all_in(None)]),
    ];
    let config = RunnerConfig {
        name: "daemonset",
        workers: 2,
        resync: Duration::from_secs(10),
        batch: Duration::ZERO,
    };
    runner::run(api, watched, Arc::new(controller), config, shutdown).await;
    let _ = events.await;
}

#[cfg(test)]
mod tests {
    use super::*;

    fn view(name: &str, available: bool) -> Option<PodView> {
        Some(PodView {
            name: name.into(),
            available,
        })
    }

    fn node(name: &str, old: Option<PodView>, new: Option<PodView>) -> NodeState {
        NodeState {
            node: name.into(),
            old,
            new,
        }
    }

    #[test]
    fn without_surge_old_pods_go_while_at_most_max_unavailable_nodes_lack_an_available_pod() {
        let nodes = [
            node("a", view("a-old", true), None),
            node("b", view("b-old", true), None),
            node("c", view("c-old", false), None),
            node("d", None, view("d-new", true)),
        ];
        // The unavailable old pod goes at once and does not use the budget.
        assert_eq!(
            rolling_update(&nodes, 0, 1),
            (vec!["c-old".into(), "a-old".into()], vec![])
        );
        assert_eq!(
            rolling_update(&nodes, 0, 2),
            (vec!["c-old".into(), "a-old".into(), "b-old".into()], vec![])
        );
        // A node being replaced (no pod, or a new one not yet available) uses the budget.
        let busy = [
            node("a", None, view("a-new", false)),
            node("b", view("b-old", true), None),
        ];
        assert_eq!(rolling_update(&busy, 0, 1), (vec![], vec![]));
        let empty = [node("", None, None), node("b", view("b-old", true), None)];
        assert_eq!(rolling_update(&empty, 0, 1), (vec![], vec![]));
    }

    #[test]
    fn with_surge_a_new_pod_starts_beside_the_old_one_which_goes_once_it_is_available() {
        let nodes = [
            node("a", view("a-old", true), None),
            node("b", view("b-old", true), None),
            node("c", view("c-old", false), None),
        ];
        // Unavailable old pods get their replacement at once; then max_surge more.
        assert_eq!(
            rolling_update(&nodes, 1, 0),
            (vec![], vec!["c".into(), "a".into()])
        );
        let surging = [
            node("a", view("a-old", true), view("a-new", false)),
            node("b", view("b-old", true), None),
        ];
        assert_eq!(rolling_update(&surging, 1, 0), (vec![], vec![]));
        let done = [
            node("a", view("a-old", true), view("a-new", true)),
            node("b", view("b-old", true), None),
        ];
        assert_eq!(
            rolling_update(&done, 1, 0),
            (vec!["a-old".into()], vec!["b".into()])
        );
    }

    #[test]
    fn a_node_keeps_its_oldest_pod_or_with_surge_an_old_ready_one_beside_a_new_unready_one() {
        let pod = |name: &str, hash: &str, ready: bool| {
            json!({"metadata": {"name": name, "labels": {REVISION_HASH_LABEL: hash}},
                   "status": {"conditions": [{"type": "Ready", "status": if ready {"True"} else {"False"}}]}})
        };
        let old = pod("old", "h1", true);
        let new = pod("new", "h2", false);
        let new2 = pod("new2", "h2", true);
        let (k, extra) = node_pods(&[&old, &new, &new2], "h2", false);
        assert_eq!(
            (k.old.map(objects::name), k.new.is_none()),
            (Some("old"), true)
        );
        assert_eq!(extra, ["new", "new2"]);
        let (k, extra) = node_pods(&[&old, &new, &new2], "h2", true);
        assert_eq!(
            (k.old.map(objects::name), k.new.map(objects::name)),
            (Some("old"), Some("new"))
        );
        assert_eq!(extra, ["new2"]);
        // The new pod is ready: the old one goes.
        let (k, extra) = node_pods(&[&old, &new2], "h2", true);
        assert!(k.old.is_none());
        assert_eq!(extra, ["old"]);
    }

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
