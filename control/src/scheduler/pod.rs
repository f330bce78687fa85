//! [`PodInfo`]: what the scheduler needs to know about a pod, read once per change.
//!
//! Pods arrive as JSON from the watch. Only the fields scheduling looks at are decoded (a lean
//! `serde` view that skips the rest without building it), with `k8s-openapi` types for the parts
//! that have them (tolerations, node affinity, owner references); at tens of thousands of pod
//! events per second the full `Pod` type would cost more than the scheduling decision.

use std::collections::BTreeMap;

use k8s_openapi::api::core::v1::{
    Affinity, NodeSelectorTerm, PreferredSchedulingTerm, Toleration, TopologySpreadConstraint,
};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::OwnerReference;
use serde::Deserialize;
use serde_json::{Map, Value};

use super::resources::{DEFAULT_MEMORY_REQUEST, DEFAULT_MILLI_CPU_REQUEST, Resources};
use crate::store::Revision;

/// The name of the scheduler in this process; pods naming another `schedulerName` are left
/// alone.
pub const DEFAULT_SCHEDULER_NAME: &str = "default-scheduler";

/// `namespace/name` of a pod.
pub type PodKey = String;

/// The scheduling view of one pod.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct PodInfo {
    /// `metadata.namespace`.
    pub namespace: String,
    /// `metadata.name`.
    pub name: String,
    /// `metadata.uid`.
    pub uid: String,
    /// The revision this view was read at.
    pub resource_version: Revision,
    /// `spec.schedulerName` (defaulted to `default-scheduler`).
    pub scheduler_name: String,
    /// `spec.nodeName`, when bound.
    pub node_name: Option<String>,
    /// Phase `Succeeded` or `Failed`: the pod no longer holds resources.
    pub terminal: bool,
    /// `metadata.deletionTimestamp` is set.
    pub deleting: bool,
    /// `spec.schedulingGates` is not empty: the pod waits for its gates to be removed.
    pub gated: bool,
    /// The effective requests (the larger of the containers' sum and any init container, plus
    /// the pod overhead) and one pod; what the resource filter checks.
    pub requests: Resources,
    /// The requests with kube-scheduler's non-zero defaults for containers that ask for
    /// nothing; what the scores use.
    pub non_zero_requests: Resources,
    /// `spec.nodeSelector`.
    pub node_selector: BTreeMap<String, String>,
    /// Required node affinity terms (ORed); `None` when the pod has none.
    pub required_terms: Option<Vec<NodeSelectorTerm>>,
    /// Preferred node affinity terms with their weights.
    pub preferred_terms: Vec<PreferredSchedulingTerm>,
    /// `spec.tolerations`.
    pub tolerations: Vec<Toleration>,
    /// `metadata.labels` (what other pods' affinity terms select); shared with the snapshot.
    pub labels: std::sync::Arc<BTreeMap<String, String>>,
    /// Required inter-pod affinity and anti-affinity terms; `None` when it has none.
    pub pod_terms: Option<std::sync::Arc<super::inter_pod::PodTerms>>,
    /// `spec.topologySpreadConstraints`; `None` when it has none.
    pub spread: Option<std::sync::Arc<[super::topology_spread::Constraint]>>,
    /// `spec.priority` (set by the API server from the pod's PriorityClass): the queue takes
    /// higher priorities first.
    pub priority: i32,
    /// `spec.preemptionPolicy` is not `Never`: when nothing fits, the pod may preempt pods of
    /// lower priority.
    pub preempts: bool,
    /// `spec.runtimeClassName`.
    pub runtime_class: Option<String>,
    /// The PersistentVolumeClaims its volumes mount; `None` when it mounts none.
    pub claims: Option<Box<[String]>>,
    /// The uid of the controlling owner (`ownerReferences[controller=true]`), whose replicas
    /// are spread over nodes.
    pub owner: Option<String>,
    /// The current `PodScheduled` condition: (status, reason, message).
    pub scheduled_condition: Option<(String, String, String)>,
}

#[derive(Deserialize, Default)]
#[serde(default, rename_all = "camelCase")]
struct RawPod {
    metadata: RawMeta,
    spec: RawSpec,
    status: RawStatus,
}

#[derive(Deserialize, Default)]
#[serde(default, rename_all = "camelCase")]
struct RawMeta {
    name: String,
    namespace: String,
    labels: BTreeMap<String, String>,
    uid: String,
    deletion_timestamp: Option<String>,
    owner_references: Vec<OwnerReference>,
}

#[derive(Deserialize, Default)]
#[serde(default, rename_all = "camelCase")]
struct RawSpec {
    node_name: Option<String>,
    scheduler_name: Option<String>,
    node_selector: BTreeMap<String, String>,
    affinity: Option<Affinity>,
    tolerations: Vec<Toleration>,
    runtime_class_name: Option<String>,
    containers: Vec<RawContainer>,
    init_containers: Vec<RawContainer>,
    overhead: Option<Map<String, Value>>,
    scheduling_gates: Vec<serde::de::IgnoredAny>,
    topology_spread_constraints: Vec<TopologySpreadConstraint>,
    priority: Option<i32>,
    preemption_policy: Option<String>,
    volumes: Vec<RawVolume>,
}

#[derive(Deserialize, Default)]
#[serde(default, rename_all = "camelCase")]
struct RawVolume {
    persistent_volume_claim: Option<RawClaimSource>,
}

#[derive(Deserialize, Default)]
#[serde(default, rename_all = "camelCase")]
struct RawClaimSource {
    claim_name: String,
}

#[derive(Deserialize, Default)]
#[serde(default, rename_all = "camelCase")]
struct RawContainer {
    resources: RawResources,
    restart_policy: Option<String>,
}

#[derive(Deserialize, Default)]
#[serde(default)]
struct RawResources {
    requests: Option<Map<String, Value>>,
    limits: Option<Map<String, Value>>,
}

#[derive(Deserialize, Default)]
#[serde(default)]
struct RawStatus {
    phase: Option<String>,
    conditions: Vec<RawCondition>,
}

#[derive(Deserialize, Default)]
#[serde(default)]
struct RawCondition {
    #[serde(rename = "type")]
    type_: String,
    status: String,
    reason: Option<String>,
    message: Option<String>,
}

impl RawContainer {
    /// Requests, with limits standing in for absent requests as API defaulting does.
    fn requests(&self) -> (Resources, Resources) {
        let mut merged = self.resources.limits.clone().unwrap_or_default();
        if let Some(req) = &self.resources.requests {
            merged.extend(req.iter().map(|(k, v)| (k.clone(), v.clone())));
        }
        let mut r = Resources::from_list(Some(&merged));
        r.pods = 0;
        let mut non_zero = r;
        if !merged.contains_key("cpu") {
            non_zero.milli_cpu = DEFAULT_MILLI_CPU_REQUEST;
        }
        if !merged.contains_key("memory") {
            non_zero.memory = DEFAULT_MEMORY_REQUEST;
        }
        (r, non_zero)
    }
}

impl PodInfo {
    /// Reads a pod from its stored JSON bytes at `revision`.
    pub fn from_slice(bytes: &[u8], revision: Revision) -> Result<PodInfo, serde_json::Error> {
        let raw: RawPod = serde_json::from_slice(bytes)?;
        Ok(Self::from_raw(raw, revision))
    }

    /// Reads a pod from a JSON value (its `metadata.resourceVersion` becomes the revision).
    pub fn from_value(obj: &Value) -> Result<PodInfo, serde_json::Error> {
        let revision = obj["metadata"]["resourceVersion"]
            .as_str()
            .and_then(|s| s.parse().ok())
            .unwrap_or(0);
        let raw: RawPod = serde_json::from_value(obj.clone())?;
        Ok(Self::from_raw(raw, revision))
    }

    fn from_raw(raw: RawPod, revision: Revision) -> PodInfo {
        let spec = raw.spec;
        // Containers run together; init containers one at a time before them, so the pod needs
        // the larger of the two. Sidecars (restartable init containers) keep running, so they
        // add to both.
        let mut sum = (Resources::default(), Resources::default());
        let mut sidecars = (Resources::default(), Resources::default());
        let mut init_max = (Resources::default(), Resources::default());
        for c in &spec.containers {
            let (r, nz) = c.requests();
            sum.0 += r;
            sum.1 += nz;
        }
        for c in &spec.init_containers {
            let (r, nz) = c.requests();
            if c.restart_policy.as_deref() == Some("Always") {
                sidecars.0 += r;
                sidecars.1 += nz;
            } else {
                init_max.0 = init_max.0.max(r + sidecars.0);
                init_max.1 = init_max.1.max(nz + sidecars.1);
            }
        }
        let overhead = Resources::from_list(spec.overhead.as_ref());
        let one_pod = Resources {
            pods: 1,
            ..Default::default()
        };
        let requests = (sum.0 + sidecars.0).max(init_max.0) + overhead + one_pod;
        let non_zero_requests = (sum.1 + sidecars.1).max(init_max.1) + overhead + one_pod;
        let pod_terms = super::inter_pod::PodTerms::from_affinity(
            spec.affinity.as_ref(),
            &raw.metadata.namespace,
        );
        let spread = super::topology_spread::constraints(
            &spec.topology_spread_constraints,
            &raw.metadata.labels,
        );
        let node_affinity = spec.affinity.and_then(|a| a.node_affinity);
        let (required_terms, preferred_terms) = match node_affinity {
            Some(na) => (
                na.required_during_scheduling_ignored_during_execution
                    .map(|s| s.node_selector_terms),
                na.preferred_during_scheduling_ignored_during_execution
                    .unwrap_or_default(),
            ),
            None => (None, Vec::new()),
        };
        let scheduled_condition = raw
            .status
            .conditions
            .into_iter()
            .find(|c| c.type_ == "PodScheduled")
            .map(|c| {
                (
                    c.status,
                    c.reason.unwrap_or_default(),
                    c.message.unwrap_or_default(),
                )
            });
        let claims: Vec<String> = spec
            .volumes
            .into_iter()
            .filter_map(|v| v.persistent_volume_claim.map(|c| c.claim_name))
            .collect();
        PodInfo {
            namespace: raw.metadata.namespace,
            name: raw.metadata.name,
            uid: raw.metadata.uid,
            resource_version: revision,
            scheduler_name: spec
                .scheduler_name
                .unwrap_or_else(|| DEFAULT_SCHEDULER_NAME.to_string()),
            node_name: spec.node_name.filter(|n| !n.is_empty()),
            terminal: matches!(raw.status.phase.as_deref(), Some("Succeeded" | "Failed")),
            deleting: raw.metadata.deletion_timestamp.is_some(),
            gated: !spec.scheduling_gates.is_empty(),
            requests,
            non_zero_requests,
            node_selector: spec.node_selector,
            required_terms,
            preferred_terms,
            tolerations: spec.tolerations,
            labels: std::sync::Arc::new(raw.metadata.labels),
            pod_terms,
            spread,
            priority: spec.priority.unwrap_or(0),
            preempts: spec.preemption_policy.as_deref() != Some("Never"),
            runtime_class: spec.runtime_class_name.filter(|n| !n.is_empty()),
            claims: (!claims.is_empty()).then(|| claims.into_boxed_slice()),
            owner: raw
                .metadata
                .owner_references
                .into_iter()
                .find(|o| o.controller == Some(true))
                .map(|o| o.uid),
            scheduled_condition,
        }
    }

    /// `namespace/name`.
    pub fn key(&self) -> PodKey {
        format!("{}/{}", self.namespace, self.name)
    }

    /// Whether the scheduler named `scheduler` should place this pod now: unbound, its own,
    /// not being deleted, not finished and not gated.
    pub fn wants_scheduling_by(&self, scheduler: &str) -> bool {
        self.node_name.is_none()
            && self.scheduler_name == scheduler
            && !self.deleting
            && !self.terminal
            && !self.gated
    }

    /// Whether the pod holds resources on a node: bound and not finished.
    pub fn holds_resources(&self) -> bool {
        self.node_name.is_some() && !self.terminal
    }

    /// Whether anything the scheduling decision reads differs (status writes and the revision
    /// do not count), so an update that only records a failure does not retry it at once.
    pub fn scheduling_inputs_differ(&self, other: &PodInfo) -> bool {
        self.requests != other.requests
            || self.node_selector != other.node_selector
            || self.required_terms != other.required_terms
            || self.preferred_terms != other.preferred_terms
            || self.tolerations != other.tolerations
            || self.pod_terms != other.pod_terms
            || self.labels != other.labels
            || self.runtime_class != other.runtime_class
            || self.gated != other.gated
            || self.scheduler_name != other.scheduler_name
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn requests_take_the_larger_of_containers_and_init_containers_plus_overhead() {
        let pod = json!({
            "metadata": {"name": "p", "namespace": "d", "uid": "u1", "resourceVersion": "7",
                "ownerReferences": [{"apiVersion": "apps/v1", "kind": "ReplicaSet", "name": "rs", "uid": "rs-1", "controller": true}]},
            "spec": {
                "containers": [
                    {"name": "a", "resources": {"requests": {"cpu": "100m", "memory": "64Mi"}}},
                    {"name": "b", "resources": {"limits": {"cpu": "200m", "memory": "64Mi"}}},
                ],
                "initContainers": [{"name": "i", "resources": {"requests": {"cpu": "1", "memory": "1Mi"}}}],
                "overhead": {"cpu": "10m"},
            },
            "status": {"phase": "Pending", "conditions": [{"type": "PodScheduled", "status": "False", "reason": "Unschedulable", "message": "m"}]},
        });
        let p = PodInfo::from_value(&pod).unwrap();
        assert_eq!(
            p.requests,
            Resources {
                milli_cpu: 1010,
                memory: 128 << 20,
                pods: 1
            }
        );
        assert_eq!(p.owner.as_deref(), Some("rs-1"));
        assert_eq!(p.resource_version, 7);
        assert_eq!(p.scheduler_name, DEFAULT_SCHEDULER_NAME);
        assert_eq!(
            p.scheduled_condition,
            Some(("False".into(), "Unschedulable".into(), "m".into()))
        );
        assert!(p.wants_scheduling_by(DEFAULT_SCHEDULER_NAME));
        assert!(!p.wants_scheduling_by("other"));
    }

    #[test]
    fn containers_without_requests_count_defaults_only_for_scoring() {
        let pod = json!({"metadata": {"name": "p", "namespace": "d"}, "spec": {"containers": [{"name": "a"}]}});
        let p = PodInfo::from_slice(&serde_json::to_vec(&pod).unwrap(), 3).unwrap();
        assert_eq!(
            p.requests,
            Resources {
                milli_cpu: 0,
                memory: 0,
                pods: 1
            }
        );
        assert_eq!(
            p.non_zero_requests,
            Resources {
                milli_cpu: DEFAULT_MILLI_CPU_REQUEST,
                memory: DEFAULT_MEMORY_REQUEST,
                pods: 1
            }
        );
    }

    #[test]
    fn bound_finished_deleting_and_gated_pods_are_not_scheduled() {
        let base = |spec: Value, status: Value, meta: Value| {
            let mut m = json!({"name": "p", "namespace": "d"});
            m.as_object_mut()
                .unwrap()
                .extend(meta.as_object().unwrap().clone());
            PodInfo::from_value(&json!({"metadata": m, "spec": spec, "status": status})).unwrap()
        };
        assert!(
            !base(json!({"nodeName": "n1"}), json!({}), json!({}))
                .wants_scheduling_by(DEFAULT_SCHEDULER_NAME)
        );
        assert!(
            !base(json!({}), json!({"phase": "Succeeded"}), json!({}))
                .wants_scheduling_by(DEFAULT_SCHEDULER_NAME)
        );
        assert!(
            !base(
                json!({}),
                json!({}),
                json!({"deletionTimestamp": "2026-01-01T00:00:00Z"})
            )
            .wants_scheduling_by(DEFAULT_SCHEDULER_NAME)
        );
        assert!(
            !base(
                json!({"schedulingGates": [{"name": "g"}]}),
                json!({}),
                json!({})
            )
            .wants_scheduling_by(DEFAULT_SCHEDULER_NAME)
        );
        let bound = base(
            json!({"nodeName": "n1"}),
            json!({"phase": "Running"}),
            json!({}),
        );
        assert!(bound.holds_resources());
        assert!(
            !base(
                json!({"nodeName": "n1"}),
                json!({"phase": "Failed"}),
                json!({})
            )
            .holds_resources()
        );
    }
}
