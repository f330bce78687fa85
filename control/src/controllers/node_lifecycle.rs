//! The node lifecycle controller: watches the Leases nodes renew in `kube-node-lease`. A node
//! whose Lease has not changed for the grace period turns `Ready=Unknown` and gets the
//! `node.kubernetes.io/unreachable:NoExecute` taint; its pods are then evicted (force-deleted,
//! since the node cannot confirm) once their toleration of that taint runs out — a pod
//! without such a toleration gets the default toleration time, as Kubernetes'
//! DefaultTolerationSeconds admission gives every pod — so their controllers recreate them
//! elsewhere. The taint goes when the Lease is renewed again. Pods bound to nodes that no
//! longer exist are deleted (Kubernetes' pod garbage collector).
//!
//! Renewals are timed by this controller's own clock (when it saw the Lease change), so
//! clock skew between machines does not matter, and after a control-plane restart every node
//! gets a full grace period again.

use std::collections::{HashMap, HashSet};
use std::time::Duration;

use k8s_openapi::api::core::v1::{Taint, Toleration};
use serde::Deserialize;
use serde_json::{Value, json};
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

use super::owner;
use super::pod_cache::PodCache;
use super::pods;
use super::store_mirror::StoreMirror;
use crate::apiserver::api::{Api, WriteOptions};
use crate::apiserver::error::{ApiError, ApiResult};
use crate::apiserver::objects;
use crate::apiserver::patch::PatchType;
use crate::apiserver::resources::{self, ResourceInfo, Subresource};
use crate::events::{EventRecorder, EventWriter};
use crate::scheduler::filter::tolerates;
use crate::store::Entry;

/// The taint of a node whose agent stopped renewing its Lease.
pub const UNREACHABLE_TAINT: &str = "node.kubernetes.io/unreachable";
/// The namespace of node Leases.
pub const LEASE_NAMESPACE: &str = "kube-node-lease";

/// Settings of the node lifecycle controller.
#[derive(Debug, Clone)]
pub struct NodeLifecycleConfig {
    /// How long a Lease may go unrenewed before the node is unreachable (Kubernetes:
    /// `--node-monitor-grace-period`, 40 s there).
    pub grace_period: Duration,
    /// How long pods without their own toleration of the unreachable taint stay on an
    /// unreachable node (Kubernetes: `--default-unreachable-toleration-seconds`, 300 s there).
    pub default_toleration: Duration,
    /// How often nodes are checked.
    pub period: Duration,
}

impl Default for NodeLifecycleConfig {
    fn default() -> Self {
        NodeLifecycleConfig {
            grace_period: Duration::from_secs(4),
            default_toleration: Duration::from_secs(2),
            period: Duration::from_millis(250),
        }
    }
}

fn nodes() -> &'static ResourceInfo {
    resources::find("", "v1", "nodes").expect("nodes served")
}

fn leases() -> &'static ResourceInfo {
    resources::find("coordination.k8s.io", "v1", "leases").expect("leases served")
}

/// How long a pod may stay on a node tainted unreachable: `None` forever (a toleration
/// without `tolerationSeconds`), else the pod's own `tolerationSeconds` or the default.
pub fn toleration_time(pod: &Value, default: Duration) -> Option<Duration> {
    let taint = Taint {
        key: UNREACHABLE_TAINT.into(),
        effect: "NoExecute".into(),
        ..Default::default()
    };
    let tolerations: Vec<Toleration> =
        serde_json::from_value(pod["spec"]["tolerations"].clone()).unwrap_or_default();
    let mut best: Option<Option<Duration>> = None;
    for t in tolerations.iter().filter(|t| tolerates(t, &taint)) {
        let this = t
            .toleration_seconds
            .map(|s| Duration::from_secs(s.max(0) as u64));
        best = Some(match (best, this) {
            (None, x) => x,
            (Some(None), _) | (Some(_), None) => None,
            (Some(Some(a)), Some(b)) => Some(a.max(b)),
        });
    }
    best.unwrap_or(Some(default))
}

/// What a pass reads of a Node.
struct NodeView {
    name: String,
    /// The `node.kubernetes.io/unreachable:NoExecute` taint, when the node has it.
    unreachable_taint: Option<Value>,
    /// Whether the `Ready` condition is `Unknown`.
    ready_unknown: bool,
}

impl NodeView {
    fn of(entry: &Entry) -> Self {
        #[derive(Deserialize, Default)]
        #[serde(default)]
        struct Raw {
            metadata: MetaView,
            spec: RawSpec,
            status: RawStatus,
        }
        #[derive(Deserialize, Default)]
        #[serde(default)]
        struct RawSpec {
            taints: Option<Vec<Value>>,
        }
        #[derive(Deserialize, Default)]
        #[serde(default)]
        struct RawStatus {
            conditions: Option<Vec<RawCondition>>,
        }
        #[derive(Deserialize, Default)]
        #[serde(default)]
        struct RawCondition {
            #[serde(rename = "type")]
            type_: Option<String>,
            status: Option<String>,
        }
        let raw: Raw = serde_json::from_slice(&entry.value).unwrap_or_default();
        NodeView {
            // The key names the node even if its JSON could not be read.
            name: raw
                .metadata
                .name
                .unwrap_or_else(|| entry.key.rsplit('/').next().unwrap_or_default().to_string()),
            unreachable_taint: raw
                .spec
                .taints
                .unwrap_or_default()
                .into_iter()
                .find(|t| t["key"] == UNREACHABLE_TAINT && t["effect"] == "NoExecute"),
            ready_unknown: raw.status.conditions.unwrap_or_default().iter().any(|c| {
                c.type_.as_deref() == Some("Ready") && c.status.as_deref() == Some("Unknown")
            }),
        }
    }
}

/// An object's `metadata.name`, read alone.
#[derive(Deserialize, Default)]
#[serde(default)]
struct MetaView {
    name: Option<String>,
}

/// What a pass reads of a Lease.
#[derive(Deserialize, Default)]
#[serde(default)]
struct LeaseView {
    metadata: MetaView,
    spec: LeaseSpecView,
}

#[derive(Deserialize, Default)]
#[serde(default, rename_all = "camelCase")]
struct LeaseSpecView {
    renew_time: Option<String>,
}

struct Seen {
    renew: String,
    at: Instant,
}

struct NodeLifecycle {
    api: Api,
    config: NodeLifecycleConfig,
    events: EventRecorder,
    seen: HashMap<String, Seen>,
    known_nodes: HashSet<String>,
    last_pod_gc: Instant,
    pods: PodCache,
    nodes: StoreMirror<NodeView>,
    /// Each node Lease's name and `renewTime`.
    leases: StoreMirror<(String, String)>,
}

/// How often pods are checked for nodes that no longer exist when no node was seen leaving.
const POD_GC_PERIOD: Duration = Duration::from_secs(20);

impl NodeLifecycle {
    async fn pass(&mut self) -> ApiResult<()> {
        // A pass runs every `period` over every node and Lease. Both kinds are mirrored from
        // the store's watch as lean views (most of a Node, such as images, addresses and
        // capacity, is skipped rather than decoded), so a pass decodes only what changed since
        // the last one, and the whole Node only when it writes to it.
        let store = self.api.store();
        self.nodes
            .sync(store.as_ref())
            .await
            .map_err(|e| ApiError::from_store(e, nodes(), ""))?;
        self.leases
            .sync(store.as_ref())
            .await
            .map_err(|e| ApiError::from_store(e, leases(), ""))?;
        let now = Instant::now();
        // Indexed once per pass: with thousands of nodes, a scan per node (or per pod) would
        // make a pass quadratic.
        let renewals: HashMap<&str, &str> = self
            .leases
            .iter()
            .map(|(_, (name, renew))| (name.as_str(), renew.as_str()))
            .collect();
        let mut unreachable: HashMap<String, chrono::DateTime<chrono::Utc>> = HashMap::new();
        let mut names: HashSet<String> = HashSet::with_capacity(self.nodes.len());
        for (entry, view) in self.nodes.iter() {
            let name = view.name.clone();
            names.insert(name.clone());
            let renew = renewals.get(name.as_str()).copied().unwrap_or_default();
            let seen = self.seen.entry(name.clone()).or_insert_with(|| Seen {
                renew: renew.to_string(),
                at: now,
            });
            if seen.renew != renew {
                seen.renew = renew.to_string();
                seen.at = now;
            }
            let stale = now.duration_since(seen.at) > self.config.grace_period;
            let taint = &view.unreachable_taint;
            if !stale && taint.is_none() {
                continue;
            }
            let node = objects::from_entry(entry);
            if stale {
                if !view.ready_unknown {
                    self.mark_unknown(&node).await?;
                    self.events.normal(
                        owner::object_reference(&node),
                        "NodeNotReady",
                        format!("Node {name} status is now: NodeNotReady"),
                    );
                }
                let added = match taint {
                    Some(t) => pods::parse_time(&t["timeAdded"]).unwrap_or_else(chrono::Utc::now),
                    None => {
                        let at = chrono::Utc::now();
                        self.set_taint(&node, true).await?;
                        at
                    }
                };
                unreachable.insert(name, added);
            } else {
                self.set_taint(&node, false).await?;
            }
        }
        // Pods bound to missing nodes are looked for when a node went away, and now and
        // then (going over every pod of the shared cache is the longest part of a pass).
        self.seen.retain(|n, _| names.contains(n));
        let node_left = self.known_nodes.iter().any(|n| !names.contains(n));
        self.known_nodes = names;
        let gc_due = node_left || now.duration_since(self.last_pod_gc) > POD_GC_PERIOD;
        if unreachable.is_empty() && !gc_due {
            return Ok(());
        }
        // From the shared pod cache: nothing is listed or decoded for this.
        if !self.pods.is_synced() {
            return Ok(());
        }
        let all_pods = self.pods.all();
        let mut evict: Vec<(String, String)> = Vec::new();
        for p in all_pods.iter().map(|p| p.as_ref()) {
            let Some(node) = p["spec"]["nodeName"].as_str().filter(|n| !n.is_empty()) else {
                continue;
            };
            if let Some(added) = unreachable.get(node) {
                let Some(tolerated) = toleration_time(p, self.config.default_toleration) else {
                    continue;
                };
                let due = *added + chrono::Duration::from_std(tolerated).unwrap_or_default();
                if due <= chrono::Utc::now() {
                    self.events.normal(
                        owner::object_reference(p),
                        "TaintManagerEviction",
                        format!(
                            "Marking for deletion Pod {}/{}",
                            objects::namespace(p).unwrap_or(""),
                            objects::name(p)
                        ),
                    );
                    evict.push((
                        objects::namespace(p).unwrap_or("default").to_string(),
                        objects::name(p).to_string(),
                    ));
                }
            } else if gc_due && !self.known_nodes.contains(node) {
                // Bound to a node that is gone.
                evict.push((
                    objects::namespace(p).unwrap_or("default").to_string(),
                    objects::name(p).to_string(),
                ));
            }
        }
        if gc_due {
            self.last_pod_gc = now;
        }
        let mut by_ns: HashMap<String, Vec<String>> = HashMap::new();
        for (ns, name) in evict {
            by_ns.entry(ns).or_default().push(name);
        }
        for (ns, names) in by_ns {
            let (_, err) = pods::delete_all(&self.api, &ns, names, Some(0)).await;
            if let Some(e) = err {
                return Err(e);
            }
        }
        Ok(())
    }

    async fn mark_unknown(&self, node: &Value) -> ApiResult<()> {
        let now = objects::now_rfc3339();
        let conditions: Vec<Value> = node["status"]["conditions"]
            .as_array()
            .cloned()
            .unwrap_or_default()
            .into_iter()
            .map(|mut c| {
                if c["status"] != "Unknown" {
                    c["status"] = json!("Unknown");
                    c["reason"] = json!("NodeStatusUnknown");
                    c["message"] = json!("Kubelet stopped posting node status.");
                    c["lastTransitionTime"] = json!(now);
                }
                c
            })
            .collect();
        let patch = json!({"status": {"conditions": conditions}});
        self.api
            .patch(
                nodes(),
                None,
                objects::name(node),
                PatchType::Merge,
                patch.to_string().as_bytes(),
                Some(Subresource::Status),
                &WriteOptions::default(),
            )
            .await?;
        Ok(())
    }

    async fn set_taint(&self, node: &Value, on: bool) -> ApiResult<()> {
        let mut taints: Vec<Value> = node["spec"]["taints"]
            .as_array()
            .cloned()
            .unwrap_or_default();
        taints.retain(|t| !(t["key"] == UNREACHABLE_TAINT && t["effect"] == "NoExecute"));
        if on {
            taints.push(json!({"key": UNREACHABLE_TAINT, "effect": "NoExecute", "timeAdded": objects::now_rfc3339()}));
        }
        let taints = if taints.is_empty() {
            Value::Null
        } else {
            json!(taints)
        };
        let patch = json!({"spec": {"taints": taints}, "metadata": {"resourceVersion": node["metadata"]["resourceVersion"]}});
        match self
            .api
            .patch(
                nodes(),
                None,
                objects::name(node),
                PatchType::Merge,
                patch.to_string().as_bytes(),
                None,
                &WriteOptions::default(),
            )
            .await
        {
            Ok(_) => Ok(()),
            // Changed meanwhile (a heartbeat): the next pass looks again.
            Err(e) if e.code == 409 || e.code == 404 => Ok(()),
            Err(e) => Err(e),
        }
    }
}

/// Runs the node lifecycle controller until `shutdown`.
pub async fn run(
    api: Api,
    pods: PodCache,
    config: NodeLifecycleConfig,
    shutdown: CancellationToken,
) {
    let (events, writer): (EventRecorder, EventWriter) =
        EventRecorder::new(api.clone(), "node-controller");
    let events_task = tokio::spawn(writer.run(shutdown.clone()));
    let period = config.period;
    let mut c = NodeLifecycle {
        api,
        config,
        events,
        seen: HashMap::new(),
        known_nodes: Default::default(),
        last_pod_gc: Instant::now(),
        pods,
        nodes: StoreMirror::new(nodes().key_prefix(), NodeView::of),
        leases: StoreMirror::new(leases().namespace_prefix(Some(LEASE_NAMESPACE)), |e| {
            let lease: LeaseView = serde_json::from_slice(&e.value).unwrap_or_default();
            (
                lease.metadata.name.unwrap_or_default(),
                lease.spec.renew_time.unwrap_or_default(),
            )
        }),
    };
    loop {
        tokio::select! {
            _ = shutdown.cancelled() => break,
            _ = tokio::time::sleep(period) => {}
        }
        if let Err(e) = c.pass().await {
            tracing::debug!(error = %e, "node lifecycle pass failed; retrying");
        }
    }
    drop(c);
    let _ = events_task.await;
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pods_stay_as_long_as_they_tolerate_the_unreachable_taint() {
        let default = Duration::from_secs(2);
        assert_eq!(
            toleration_time(&json!({"spec": {}}), default),
            Some(default)
        );
        let own = json!({"spec": {"tolerations": [{"key": UNREACHABLE_TAINT, "operator": "Exists", "effect": "NoExecute", "tolerationSeconds": 30}]}});
        assert_eq!(
            toleration_time(&own, default),
            Some(Duration::from_secs(30))
        );
        let forever = json!({"spec": {"tolerations": [{"operator": "Exists"}]}});
        assert_eq!(toleration_time(&forever, default), None);
        let unrelated = json!({"spec": {"tolerations": [{"key": "other", "operator": "Exists"}]}});
        assert_eq!(toleration_time(&unrelated, default), Some(default));
    }
}
