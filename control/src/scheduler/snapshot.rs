//! The scheduler's cache of the cluster (an informer cache): every node with the requests of
//! the pods bound to it, the pods counted, and the RuntimeClasses.
//!
//! It is fed by the watches of nodes, pods and RuntimeClasses, and by the scheduler itself:
//! when it picks a node for a pod it *assumes* the pod there at once (as kube-scheduler's
//! cache does), so the next decision already sees the reservation while the binding is still
//! being written. When the watch later shows the pod bound, the assumption is confirmed; when
//! the binding fails, it is forgotten.
//!
//! Node entries are never removed, only marked absent (their `node` is `None`), so indexes
//! stay stable: a deleted node's name is rarely reused and an entry is small.

use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;

use k8s_openapi::api::core::v1::Node;

use super::inter_pod::{NamespaceLabels, Placed, PodTerms};
use super::node::{NodeInfo, NodeSpecInfo};
use super::pod::{PodInfo, PodKey};
use super::resources::Resources;

/// Where a counted pod is and what it takes there.
#[derive(Debug, Clone, PartialEq)]
struct Placement {
    node: usize,
    uid: String,
    priority: i32,
    requests: Resources,
    non_zero: Resources,
    owner: Option<String>,
    labels: Arc<BTreeMap<String, String>>,
    terms: Option<Arc<PodTerms>>,
    /// Terminating: not counted by topology spread.
    deleting: bool,
    /// Placed by this scheduler and not yet seen bound through the watch.
    assumed: bool,
}

impl Placement {
    /// `pod` on node `node`, assumed.
    fn of(pod: &PodInfo, node: usize) -> Placement {
        Placement {
            node,
            uid: pod.uid.clone(),
            priority: pod.priority,
            requests: pod.requests,
            non_zero: pod.non_zero_requests,
            owner: pod.owner.clone(),
            labels: pod.labels.clone(),
            terms: pod.pod_terms.clone(),
            deleting: pod.deleting,
            assumed: true,
        }
    }
}

/// A placed pod that a pod of higher priority could preempt.
#[derive(Debug, Clone, PartialEq)]
pub struct Candidate {
    /// `namespace/name`.
    pub key: PodKey,
    /// `metadata.uid`.
    pub uid: String,
    /// `spec.priority`.
    pub priority: i32,
    /// What it takes on its node.
    pub requests: Resources,
    /// The same with the non-zero defaults.
    pub non_zero: Resources,
    /// Its controlling owner's uid.
    pub owner: Option<String>,
    /// Its labels (what disruption budgets select).
    pub labels: Arc<BTreeMap<String, String>>,
}

/// A PodDisruptionBudget as preemption weighs it.
#[derive(Debug, Clone)]
pub struct Budget {
    /// `namespace/name`.
    pub key: String,
    /// `metadata.namespace`.
    pub namespace: String,
    /// `spec.selector`; `None` when absent or empty (kube-scheduler's preemption then counts
    /// no pod against it).
    pub selector: Option<crate::apiserver::selector::LabelSelector>,
    /// `status.disruptionsAllowed`.
    pub allowed: i32,
    /// `status.disruptedPods`: pods already being evicted, not counted again.
    pub disrupted: std::collections::HashSet<String>,
}

impl Budget {
    /// Reads a stored PodDisruptionBudget.
    pub fn from_slice(bytes: &[u8]) -> Option<Budget> {
        let pdb: k8s_openapi::api::policy::v1::PodDisruptionBudget =
            serde_json::from_slice(bytes).ok()?;
        let namespace = pdb.metadata.namespace.clone()?;
        let name = pdb.metadata.name.clone()?;
        let selector = pdb
            .spec
            .and_then(|s| s.selector)
            .and_then(|s| crate::apiserver::selector::LabelSelector::from_k8s(&s).ok())
            .filter(|s| !s.is_empty());
        let status = pdb.status.unwrap_or_default();
        Some(Budget {
            key: format!("{namespace}/{name}"),
            namespace,
            selector,
            allowed: status.disruptions_allowed,
            disrupted: status
                .disrupted_pods
                .unwrap_or_default()
                .into_keys()
                .collect(),
        })
    }

    /// Whether evicting the pod `name` of `namespace` with `labels` counts against it.
    pub fn covers(&self, namespace: &str, name: &str, labels: &BTreeMap<String, String>) -> bool {
        self.namespace == namespace
            && !self.disrupted.contains(name)
            && self.selector.as_ref().is_some_and(|s| s.matches(labels))
    }
}

/// A pod nominated to a node by preemption: it waits there for its victims to go, and pods
/// of lower priority may not take what it needs (kube-scheduler's nominator).
#[derive(Debug, Clone, PartialEq)]
struct Nomination {
    node: usize,
    priority: i32,
    requests: Resources,
}

/// What a node change means for pods waiting to be scheduled.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum NodeChange {
    /// Nothing scheduling reads changed (a heartbeat).
    None,
    /// The node appeared or changed in a way that may let waiting pods fit.
    Changed,
}

/// The cache. Owned by the scheduling loop; no locking.
#[derive(Debug, Default)]
pub struct Snapshot {
    nodes: Vec<NodeInfo>,
    index: HashMap<String, usize>,
    present: usize,
    pods: HashMap<PodKey, Placement>,
    runtime_classes: HashMap<String, String>,
    /// Placed pods with inter-pod terms (which every decision must read).
    with_terms: usize,
    /// Pods nominated to a node by preemption, until they are placed or gone.
    nominated: HashMap<PodKey, Nomination>,
    /// PodDisruptionBudgets by `namespace/name`.
    budgets: HashMap<String, Budget>,
    /// How many placed pods have each priority, so that preemption knows at once whether any
    /// pod is below a preemptor (usually none: every pod at the default 0).
    priorities: BTreeMap<i32, usize>,
    /// Namespaces' labels, which inter-pod terms' `namespaceSelector` selects by.
    namespaces: NamespaceLabels,
    /// PersistentVolumeClaims, which pods mounting them need.
    claims: super::volume_binding::Claims,
    /// PersistentVolumes' node affinity.
    volumes: super::volume_binding::Volumes,
}

impl Snapshot {
    /// An empty snapshot.
    pub fn new() -> Snapshot {
        Snapshot::default()
    }

    /// All node entries (including absent ones: check [`NodeInfo::node`]).
    pub fn nodes(&self) -> &[NodeInfo] {
        &self.nodes
    }

    /// The number of nodes that exist.
    pub fn node_count(&self) -> usize {
        self.present
    }

    /// The entry index of a node name.
    pub fn node_index(&self, name: &str) -> Option<usize> {
        self.index.get(name).copied()
    }

    fn entry(&mut self, name: &str) -> usize {
        if let Some(&i) = self.index.get(name) {
            return i;
        }
        self.nodes.push(NodeInfo::new(name));
        self.index.insert(name.to_string(), self.nodes.len() - 1);
        self.nodes.len() - 1
    }

    /// Adds or updates a node.
    pub fn apply_node(&mut self, node: &Node) -> NodeChange {
        let Some(name) = node.metadata.name.as_deref() else {
            return NodeChange::None;
        };
        let info = NodeSpecInfo::from_node(node);
        let i = self.entry(name);
        let slot = &mut self.nodes[i].node;
        if slot.as_ref() == Some(&info) {
            return NodeChange::None;
        }
        if slot.is_none() {
            self.present += 1;
        }
        *slot = Some(info);
        NodeChange::Changed
    }

    /// Marks a node deleted (pods bound to it keep counting until they go).
    pub fn delete_node(&mut self, name: &str) {
        if let Some(&i) = self.index.get(name)
            && self.nodes[i].node.take().is_some()
        {
            self.present -= 1;
        }
    }

    /// The node names present, for resynchronising after a re-list.
    pub fn node_names(&self) -> Vec<String> {
        self.nodes
            .iter()
            .filter(|n| n.node.is_some())
            .map(|n| n.name.clone())
            .collect()
    }

    /// Records a pod as seen by the watch: counts it on its node if bound and running,
    /// confirms an assumption, or uncounts it when it finished. An unbound version of an
    /// assumed pod (an older event) leaves the assumption alone.
    pub fn apply_pod(&mut self, pod: &PodInfo) {
        let key = pod.key();
        if !pod.holds_resources() {
            if pod.node_name.is_some() || !self.pods.get(&key).is_some_and(|p| p.assumed) {
                self.remove(&key);
            }
            return;
        }
        let node_name = pod.node_name.as_deref().unwrap_or_default();
        let i = self.entry(node_name);
        let want = Placement {
            assumed: false,
            ..Placement::of(pod, i)
        };
        match self.pods.get_mut(&key) {
            Some(p)
                if Placement {
                    assumed: false,
                    ..p.clone()
                } == want =>
            {
                p.assumed = false
            }
            _ => {
                self.remove(&key);
                self.insert(key, want);
            }
        }
    }

    /// Uncounts a deleted pod, and drops its nomination.
    pub fn delete_pod(&mut self, key: &str) {
        self.nominated.remove(key);
        self.remove(key);
    }

    /// The keys of the pods counted, for resynchronising after a re-list.
    pub fn pod_keys(&self) -> Vec<PodKey> {
        self.pods.keys().cloned().collect()
    }

    /// Whether a pod is counted on a node (bound, or assumed by this scheduler).
    pub fn is_placed(&self, key: &str) -> bool {
        self.pods.contains_key(key)
    }

    /// Counts a pod on node `node` before its binding is written.
    pub fn assume(&mut self, pod: &PodInfo, node: usize) {
        let key = pod.key();
        self.nominated.remove(&key);
        self.remove(&key);
        self.insert(
            key,
            Placement {
                assumed: true,
                ..Placement::of(pod, node)
            },
        );
    }

    /// Drops an assumption whose binding failed; a placement the watch confirmed stays.
    pub fn forget(&mut self, key: &str) {
        if self.pods.get(key).is_some_and(|p| p.assumed) {
            self.remove(key);
        }
    }

    /// Adds or updates a RuntimeClass.
    pub fn apply_runtime_class(&mut self, name: &str, handler: &str) {
        self.runtime_classes
            .insert(name.to_string(), handler.to_string());
    }

    /// Removes a RuntimeClass.
    pub fn delete_runtime_class(&mut self, name: &str) {
        self.runtime_classes.remove(name);
    }

    /// Adds or updates a claim; whether it changed.
    pub fn apply_claim(&mut self, key: String, claim: super::volume_binding::Claim) -> bool {
        self.claims.insert(key, claim.clone()) != Some(claim)
    }

    /// Removes a claim.
    pub fn delete_claim(&mut self, key: &str) {
        self.claims.remove(key);
    }

    /// Adds or updates a volume's node affinity; whether it changed.
    pub fn apply_volume(
        &mut self,
        name: String,
        terms: Option<std::sync::Arc<[k8s_openapi::api::core::v1::NodeSelectorTerm]>>,
    ) -> bool {
        self.volumes.insert(name, terms.clone()) != Some(terms)
    }

    /// Removes a volume.
    pub fn delete_volume(&mut self, name: &str) {
        self.volumes.remove(name);
    }

    /// The claims known (`namespace/name`), for resynchronising after a re-list.
    pub fn claim_keys(&self) -> Vec<String> {
        self.claims.keys().cloned().collect()
    }

    /// The volumes known, for resynchronising after a re-list.
    pub fn volume_names(&self) -> Vec<String> {
        self.volumes.keys().cloned().collect()
    }

    /// Every claim.
    pub fn claims(&self) -> &super::volume_binding::Claims {
        &self.claims
    }

    /// Every volume's node affinity.
    pub fn volumes(&self) -> &super::volume_binding::Volumes {
        &self.volumes
    }

    /// Adds or updates a namespace's labels.
    pub fn apply_namespace(&mut self, name: &str, labels: BTreeMap<String, String>) {
        self.namespaces.insert(name.to_string(), labels);
    }

    /// Removes a namespace.
    pub fn delete_namespace(&mut self, name: &str) {
        self.namespaces.remove(name);
    }

    /// The names of the namespaces known, for resynchronising after a re-list.
    pub fn namespace_names(&self) -> Vec<String> {
        self.namespaces.keys().cloned().collect()
    }

    /// A namespace's labels, if it is known.
    pub fn namespace_labels(&self, name: &str) -> Option<&BTreeMap<String, String>> {
        self.namespaces.get(name)
    }

    /// Every known namespace's labels.
    pub fn namespaces(&self) -> &NamespaceLabels {
        &self.namespaces
    }

    /// The names of the RuntimeClasses known, for resynchronising after a re-list.
    pub fn runtime_class_names(&self) -> Vec<String> {
        self.runtime_classes.keys().cloned().collect()
    }

    /// The handler of a RuntimeClass.
    pub fn runtime_handler(&self, runtime_class: &str) -> Option<&str> {
        self.runtime_classes.get(runtime_class).map(String::as_str)
    }

    /// Nominates `pod` to node `node`: its victims are going, and until it is placed (or
    /// gone) pods of lower priority see its requests taken there.
    pub fn nominate(&mut self, pod: &PodInfo, node: usize) {
        self.nominated.insert(
            pod.key(),
            Nomination {
                node,
                priority: pod.priority,
                requests: pod.requests,
            },
        );
    }

    /// Drops a nomination (the pod was placed, deleted, or no longer waits).
    pub fn clear_nomination(&mut self, key: &str) {
        self.nominated.remove(key);
    }

    /// The node `key` is nominated to, if any.
    pub fn nominated_node(&self, key: &str) -> Option<usize> {
        self.nominated.get(key).map(|n| n.node)
    }

    /// Per node, what the pods nominated there with a priority of at least `pod`'s (other
    /// than `pod` itself) will take: `pod` must fit beside them. Empty in the common case.
    pub fn nominated_against(&self, pod: &PodInfo) -> HashMap<usize, Resources> {
        let mut out: HashMap<usize, Resources> = HashMap::new();
        if self.nominated.is_empty() {
            return out;
        }
        let key = pod.key();
        for (k, n) in &self.nominated {
            if *k != key && n.priority >= pod.priority {
                *out.entry(n.node).or_default() += n.requests;
            }
        }
        out
    }

    /// Whether any placed pod has a priority below `priority`.
    pub fn has_lower_priority(&self, priority: i32) -> bool {
        self.priorities
            .first_key_value()
            .is_some_and(|(&lowest, _)| lowest < priority)
    }

    /// Per node index, the placed pods (not terminating) with a priority below `priority`,
    /// and the nodes holding terminating pods below it.
    pub fn lower_priority(
        &self,
        priority: i32,
    ) -> (
        HashMap<usize, Vec<Candidate>>,
        std::collections::HashSet<usize>,
    ) {
        let mut by_node: HashMap<usize, Vec<Candidate>> = HashMap::new();
        let mut terminating = std::collections::HashSet::new();
        for (key, p) in &self.pods {
            if p.priority >= priority {
                continue;
            }
            if p.deleting {
                terminating.insert(p.node);
                continue;
            }
            by_node.entry(p.node).or_default().push(Candidate {
                key: key.clone(),
                uid: p.uid.clone(),
                priority: p.priority,
                requests: p.requests,
                non_zero: p.non_zero,
                owner: p.owner.clone(),
                labels: p.labels.clone(),
            });
        }
        (by_node, terminating)
    }

    /// Adds or updates a PodDisruptionBudget.
    pub fn apply_budget(&mut self, budget: Budget) {
        self.budgets.insert(budget.key.clone(), budget);
    }

    /// Removes a PodDisruptionBudget.
    pub fn delete_budget(&mut self, key: &str) {
        self.budgets.remove(key);
    }

    /// The keys of the PodDisruptionBudgets known, for resynchronising after a re-list.
    pub fn budget_keys(&self) -> Vec<String> {
        self.budgets.keys().cloned().collect()
    }

    /// Every PodDisruptionBudget, in no particular order.
    pub fn budgets(&self) -> impl Iterator<Item = &Budget> {
        self.budgets.values()
    }

    /// Whether any placed pod has inter-pod terms of any kind.
    pub fn has_terms(&self) -> bool {
        self.with_terms > 0
    }

    /// Every placed pod with its node's labels, for inter-pod affinity and topology spread.
    pub fn placed(&self) -> impl Iterator<Item = Placed<'_>> {
        self.pods.iter().map(|(key, p)| {
            // A key is `namespace/name`.
            let namespace = key.split_once('/').map_or("", |(ns, _)| ns);
            Placed {
                namespace,
                namespaces: Some(&self.namespaces),
                labels: &p.labels,
                terms: p.terms.as_deref(),
                node_labels: self.nodes[p.node].node.as_ref().map(|n| &n.labels),
                node: p.node,
                deleting: p.deleting,
            }
        })
    }

    fn insert(&mut self, key: PodKey, p: Placement) {
        self.nodes[p.node].add_pod(p.requests, p.non_zero, p.owner.as_deref());
        *self.priorities.entry(p.priority).or_default() += 1;
        if p.terms.is_some() {
            self.with_terms += 1;
        }
        self.pods.insert(key, p);
    }

    fn remove(&mut self, key: &str) {
        if let Some(p) = self.pods.remove(key) {
            self.nodes[p.node].remove_pod(p.requests, p.non_zero, p.owner.as_deref());
            if let Some(n) = self.priorities.get_mut(&p.priority) {
                *n -= 1;
                if *n == 0 {
                    self.priorities.remove(&p.priority);
                }
            }
            if p.terms.is_some() {
                self.with_terms -= 1;
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn node(name: &str) -> Node {
        serde_json::from_value(json!({"metadata": {"name": name}, "status": {
            "allocatable": {"cpu": "1", "memory": "1Gi", "pods": "10"},
            "conditions": [{"type": "Ready", "status": "True"}]}}))
        .unwrap()
    }

    fn pod(name: &str, node: Option<&str>, phase: &str) -> PodInfo {
        PodInfo::from_value(&json!({
            "metadata": {"name": name, "namespace": "d"},
            "spec": {"nodeName": node, "containers": [{"name": "c", "resources": {"requests": {"cpu": "100m"}}}]},
            "status": {"phase": phase},
        }))
        .unwrap()
    }

    #[test]
    fn bound_pods_count_against_their_node_until_they_finish() {
        let mut s = Snapshot::new();
        assert_eq!(s.apply_node(&node("n1")), NodeChange::Changed);
        assert_eq!(s.apply_node(&node("n1")), NodeChange::None);
        s.apply_pod(&pod("a", Some("n1"), "Running"));
        s.apply_pod(&pod("b", Some("n1"), "Running"));
        s.apply_pod(&pod("a", Some("n1"), "Running"));
        assert_eq!(s.nodes()[0].requested.milli_cpu, 200);
        assert_eq!(s.nodes()[0].requested.pods, 2);
        s.apply_pod(&pod("b", Some("n1"), "Succeeded"));
        s.delete_pod("d/a");
        assert_eq!(s.nodes()[0].requested, Resources::default());
    }

    #[test]
    fn an_assumption_holds_until_confirmed_or_forgotten() {
        let mut s = Snapshot::new();
        s.apply_node(&node("n1"));
        s.apply_node(&node("n2"));
        let p = pod("a", None, "Pending");
        s.assume(&p, 0);
        // A stale unbound event does not undo the reservation.
        s.apply_pod(&p);
        assert_eq!(s.nodes()[0].requested.pods, 1);
        // Forgetting drops it.
        s.forget("d/a");
        assert_eq!(s.nodes()[0].requested.pods, 0);
        // Confirmed on another node than assumed: the watch wins, and forget is then a no-op.
        s.assume(&p, 0);
        s.apply_pod(&pod("a", Some("n2"), "Pending"));
        s.forget("d/a");
        assert_eq!(
            (s.nodes()[0].requested.pods, s.nodes()[1].requested.pods),
            (0, 1)
        );
    }

    #[test]
    fn the_lowest_placed_priority_follows_pods_coming_and_going() {
        let mut s = Snapshot::new();
        s.apply_node(&node("n1"));
        let ranked = |name: &str, priority: i32| {
            PodInfo::from_value(&json!({
                "metadata": {"name": name, "namespace": "d"},
                "spec": {"nodeName": "n1", "priority": priority, "containers": [{"name": "c"}]},
                "status": {"phase": "Running"},
            }))
            .unwrap()
        };
        assert!(!s.has_lower_priority(i32::MAX));
        s.apply_pod(&ranked("a", 5));
        s.apply_pod(&ranked("b", 5));
        assert!(s.has_lower_priority(6) && !s.has_lower_priority(5));
        // A changed priority moves the pod's count.
        s.apply_pod(&ranked("a", 1));
        assert!(s.has_lower_priority(2));
        s.delete_pod("d/a");
        assert!(!s.has_lower_priority(5) && s.has_lower_priority(6));
        s.delete_pod("d/b");
        assert!(!s.has_lower_priority(i32::MAX));
    }

    #[test]
    fn pods_on_unknown_nodes_count_once_the_node_appears() {
        let mut s = Snapshot::new();
        s.apply_pod(&pod("a", Some("later"), "Running"));
        assert_eq!(s.node_count(), 0);
        s.apply_node(&node("later"));
        assert_eq!(s.node_count(), 1);
        assert_eq!(s.nodes()[s.node_index("later").unwrap()].requested.pods, 1);
        s.delete_node("later");
        assert_eq!(s.node_count(), 0);
    }
}
