//! [`NodeInfo`]: one node as the scheduler sees it: what it offers (labels, taints,
//! allocatable resources, runtime handlers) and what the pods bound to it already take.
//!
//! Readiness is expressed the way Kubernetes' node lifecycle controller expresses it, as
//! condition taints: a node whose `Ready` condition is `False` or missing carries
//! `node.kubernetes.io/not-ready:NoSchedule`, one whose `Ready` is `Unknown` carries
//! `node.kubernetes.io/unreachable:NoSchedule`. So a not-ready node repels pods unless they
//! tolerate that taint, and the failure message names it as kube-scheduler's does.
//!
//! Runtime handlers: Kubernetes has no field for the handlers a node offers, so a node lists
//! them in the label [`RUNTIME_HANDLERS_LABEL`], dot-separated (`wasmtime.runc`): label values
//! cannot hold commas, and handler names are DNS labels, which cannot hold dots.

use std::collections::{BTreeMap, HashMap};

use k8s_openapi::api::core::v1::{Node, Taint};

use super::resources::Resources;

/// The node label listing the runtime handlers a node offers, dot-separated.
pub const RUNTIME_HANDLERS_LABEL: &str = "flotilla.dev/runtime-handlers";
/// Taint of a node whose `Ready` condition is `False` (or absent).
pub const TAINT_NOT_READY: &str = "node.kubernetes.io/not-ready";
/// Taint of a node whose `Ready` condition is `Unknown`.
pub const TAINT_UNREACHABLE: &str = "node.kubernetes.io/unreachable";
/// Taint tolerated to schedule onto a cordoned (`spec.unschedulable`) node.
pub const TAINT_UNSCHEDULABLE: &str = "node.kubernetes.io/unschedulable";

/// The parts of a Node object scheduling reads; compared to tell whether an update could
/// change a decision (heartbeats do not).
#[derive(Debug, Clone, PartialEq, Default)]
pub struct NodeSpecInfo {
    /// `metadata.labels`.
    pub labels: BTreeMap<String, String>,
    /// `spec.taints` plus the condition taint for readiness.
    pub taints: Vec<Taint>,
    /// `spec.unschedulable` (cordoned).
    pub unschedulable: bool,
    /// `status.allocatable` (or `status.capacity` when allocatable is absent).
    pub allocatable: Resources,
    /// Handlers from [`RUNTIME_HANDLERS_LABEL`].
    pub handlers: Vec<String>,
}

impl NodeSpecInfo {
    /// Reads the scheduling view of a Node.
    pub fn from_node(node: &Node) -> NodeSpecInfo {
        let labels = node.metadata.labels.clone().unwrap_or_default();
        let spec = node.spec.clone().unwrap_or_default();
        let status = node.status.clone().unwrap_or_default();
        let mut taints = spec.taints.unwrap_or_default();
        let ready = status
            .conditions
            .as_ref()
            .and_then(|cs| cs.iter().find(|c| c.type_ == "Ready"))
            .map(|c| c.status.as_str());
        let condition_taint = match ready {
            Some("True") => None,
            Some("Unknown") => Some(TAINT_UNREACHABLE),
            _ => Some(TAINT_NOT_READY),
        };
        if let Some(key) = condition_taint
            && !taints
                .iter()
                .any(|t| t.key == key && t.effect == "NoSchedule")
        {
            taints.push(Taint {
                key: key.to_string(),
                effect: "NoSchedule".into(),
                ..Default::default()
            });
        }
        let list = status.allocatable.as_ref().or(status.capacity.as_ref());
        let allocatable = list
            .map(|l| {
                let m: serde_json::Map<String, serde_json::Value> = l
                    .iter()
                    .map(|(k, q)| (k.clone(), serde_json::Value::String(q.0.clone())))
                    .collect();
                Resources::from_list(Some(&m))
            })
            .unwrap_or_default();
        let handlers = labels
            .get(RUNTIME_HANDLERS_LABEL)
            .map(|v| {
                v.split('.')
                    .filter(|h| !h.is_empty())
                    .map(String::from)
                    .collect()
            })
            .unwrap_or_default();
        NodeSpecInfo {
            labels,
            taints,
            unschedulable: spec.unschedulable.unwrap_or(false),
            allocatable,
            handlers,
        }
    }
}

/// One node in the scheduler's snapshot.
#[derive(Debug, Clone, Default)]
pub struct NodeInfo {
    /// `metadata.name`.
    pub name: String,
    /// The Node object's scheduling view; `None` while no Node object exists (pods bound to
    /// a name that is not, or no longer, a node still count here).
    pub node: Option<NodeSpecInfo>,
    /// The sum of the requests of the pods bound (or assumed) here, with `pods` their count.
    pub requested: Resources,
    /// The same with kube-scheduler's non-zero defaults, for scoring.
    pub non_zero_requested: Resources,
    /// How many pods of each controlling owner (by uid) are here, for spreading.
    pub owner_counts: HashMap<String, u32>,
}

impl NodeInfo {
    /// A node entry with nothing on it yet.
    pub fn new(name: &str) -> NodeInfo {
        NodeInfo {
            name: name.to_string(),
            ..Default::default()
        }
    }

    /// Counts a pod's requests on this node.
    pub fn add_pod(&mut self, requests: Resources, non_zero: Resources, owner: Option<&str>) {
        self.requested += requests;
        self.non_zero_requested += non_zero;
        if let Some(o) = owner {
            *self.owner_counts.entry(o.to_string()).or_default() += 1;
        }
    }

    /// Stops counting a pod's requests on this node.
    pub fn remove_pod(&mut self, requests: Resources, non_zero: Resources, owner: Option<&str>) {
        self.requested -= requests;
        self.non_zero_requested -= non_zero;
        if let Some(o) = owner
            && let Some(c) = self.owner_counts.get_mut(o)
        {
            *c -= 1;
            if *c == 0 {
                self.owner_counts.remove(o);
            }
        }
    }

    /// Pods of `owner` on this node.
    pub fn owner_count(&self, owner: &str) -> u32 {
        self.owner_counts.get(owner).copied().unwrap_or(0)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn node(v: serde_json::Value) -> Node {
        serde_json::from_value(v).unwrap()
    }

    #[test]
    fn readiness_becomes_a_condition_taint() {
        let cases = [
            (json!([{"type": "Ready", "status": "True"}]), None),
            (
                json!([{"type": "Ready", "status": "False"}]),
                Some(TAINT_NOT_READY),
            ),
            (
                json!([{"type": "Ready", "status": "Unknown"}]),
                Some(TAINT_UNREACHABLE),
            ),
            (json!([]), Some(TAINT_NOT_READY)),
        ];
        for (conditions, want) in cases {
            let n = node(json!({"metadata": {"name": "n"}, "status": {"conditions": conditions}}));
            let info = NodeSpecInfo::from_node(&n);
            assert_eq!(
                info.taints.first().map(|t| t.key.as_str()),
                want,
                "{conditions}"
            );
        }
    }

    #[test]
    fn allocatable_handlers_and_cordon_are_read() {
        let n = node(json!({
            "metadata": {"name": "n", "labels": {RUNTIME_HANDLERS_LABEL: "wasmtime.runc"}},
            "spec": {"unschedulable": true},
            "status": {"capacity": {"cpu": "8"}, "allocatable": {"cpu": "2", "memory": "4Gi", "pods": "110"},
                "conditions": [{"type": "Ready", "status": "True"}]},
        }));
        let info = NodeSpecInfo::from_node(&n);
        assert_eq!(
            info.allocatable,
            Resources {
                milli_cpu: 2000,
                memory: 4 << 30,
                pods: 110
            }
        );
        assert_eq!(info.handlers, vec!["wasmtime", "runc"]);
        assert!(info.unschedulable);
        assert!(info.taints.is_empty());
    }

    #[test]
    fn pods_are_counted_and_uncounted() {
        let mut n = NodeInfo::new("n");
        let r = Resources {
            milli_cpu: 100,
            memory: 10,
            pods: 1,
        };
        n.add_pod(r, r, Some("rs"));
        n.add_pod(r, r, Some("rs"));
        assert_eq!(n.owner_count("rs"), 2);
        n.remove_pod(r, r, Some("rs"));
        n.remove_pod(r, r, Some("rs"));
        assert_eq!(n.requested, Resources::default());
        assert!(n.owner_counts.is_empty());
    }
}
