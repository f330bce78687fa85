//! Preemption (kube-scheduler's DefaultPreemption): when no node fits a pod, find the node
//! where evicting pods of lower priority would make it fit, evicting as few and as
//! unimportant pods as possible.
//!
//! For each node with pods of lower priority, all of them are taken away in thought; if the
//! pod then fits, they are given back one by one, most important first (highest priority,
//! then oldest name), each kept when the pod still fits beside it. What could not be given
//! back are the node's victims. Of the nodes with victims, the chosen one has the lowest
//! highest-victim priority, then the lowest sum of victim priorities, then the fewest
//! victims (kube-scheduler's `pickOneNodeForPreemption`, without its PodDisruptionBudget
//! and start-time criteria).
//!
//! A pod whose `preemptionPolicy` is `Never` preempts nothing; nor does one already
//! nominated to a node where pods of lower priority are still terminating (it waits for
//! them, as kube-scheduler's `PodEligibleToPreemptOthers`). Inter-pod affinity and topology
//! spread are checked as the cluster stands, with the victims still there: preemption frees
//! resources, it does not move pods out of the way of an anti-affinity term.

use super::decide::{Constraints, runtime_handler, with_nominated};
use super::pod::{PodInfo, PodKey};
use super::snapshot::{Candidate, Snapshot};

/// Where a pod goes once its victims are gone.
#[derive(Debug, Clone, PartialEq)]
pub struct Plan {
    /// The node's index in the snapshot's node entries.
    pub node: usize,
    /// The pods to evict from it.
    pub victims: Vec<Candidate>,
}

/// The preemption that makes room for `pod`, if any.
pub fn plan(snapshot: &Snapshot, pod: &PodInfo) -> Option<Plan> {
    if !pod.preempts {
        return None;
    }
    let handler = runtime_handler(snapshot, pod).ok()?;
    let (mut lower, terminating) = snapshot.lower_priority(pod.priority);
    if snapshot
        .nominated_node(&pod.key())
        .is_some_and(|n| terminating.contains(&n))
    {
        return None;
    }
    if lower.is_empty() {
        return None;
    }
    let constraints = Constraints::read(snapshot, pod);
    let nominated = snapshot.nominated_against(pod);
    let nodes = snapshot.nodes();
    let mut best: Option<((i32, i64, usize, usize), Plan)> = None;
    let mut indexes: Vec<usize> = lower.keys().copied().collect();
    indexes.sort_unstable();
    for i in indexes {
        let Some(mut candidates) = lower.remove(&i) else {
            continue;
        };
        if nodes[i].node.is_none() {
            continue;
        }
        let mut node = with_nominated(&nodes[i], nominated.get(&i)).into_owned();
        for c in &candidates {
            node.remove_pod(c.requests, c.non_zero, c.owner.as_deref());
        }
        if constraints.fits(pod, handler, &node).is_err() {
            continue;
        }
        // Most important first: they are the ones to give back if they can be.
        candidates.sort_by(|a, b| b.priority.cmp(&a.priority).then_with(|| a.key.cmp(&b.key)));
        let mut victims = Vec::new();
        for c in candidates {
            node.add_pod(c.requests, c.non_zero, c.owner.as_deref());
            if constraints.fits(pod, handler, &node).is_err() {
                node.remove_pod(c.requests, c.non_zero, c.owner.as_deref());
                victims.push(c);
            }
        }
        if victims.is_empty() {
            // It fits without evicting anything (a nomination or the walk's sample kept it
            // from being chosen): nothing to preempt here.
            continue;
        }
        let rank = (
            victims.iter().map(|v| v.priority).max().unwrap_or(i32::MIN),
            victims.iter().map(|v| i64::from(v.priority)).sum::<i64>(),
            victims.len(),
            i,
        );
        if best.as_ref().is_none_or(|(r, _)| rank < *r) {
            best = Some((rank, Plan { node: i, victims }));
        }
    }
    best.map(|(_, plan)| plan)
}

/// The namespace and name of a pod key.
pub fn split_key(key: &PodKey) -> (&str, &str) {
    key.split_once('/').unwrap_or(("", key.as_str()))
}

#[cfg(test)]
mod tests {
    use super::*;
    use k8s_openapi::api::core::v1::Node;
    use serde_json::json;

    fn node(name: &str, pods: u32) -> Node {
        serde_json::from_value(json!({"metadata": {"name": name}, "status": {
            "allocatable": {"cpu": "4", "memory": "4Gi", "pods": pods.to_string()},
            "conditions": [{"type": "Ready", "status": "True"}]}}))
        .unwrap()
    }

    fn pod(name: &str, node: Option<&str>, priority: i32, cpu: &str) -> PodInfo {
        PodInfo::from_value(&json!({
            "metadata": {"name": name, "namespace": "d", "uid": format!("uid-{name}")},
            "spec": {"nodeName": node, "priority": priority, "containers": [
                {"name": "c", "resources": {"requests": {"cpu": cpu}}}]},
            "status": {"phase": if node.is_some() { "Running" } else { "Pending" }},
        }))
        .unwrap()
    }

    fn victims(plan: &Plan) -> Vec<&str> {
        plan.victims.iter().map(|v| v.key.as_str()).collect()
    }

    #[test]
    fn the_fewest_least_important_pods_go_and_the_cheapest_node_is_chosen() {
        let mut s = Snapshot::new();
        s.apply_node(&node("n1", 10));
        s.apply_node(&node("n2", 10));
        // n1: 3 CPUs at priority 5 and 1 CPU at priority 1; n2: 4 CPUs at priority 7.
        s.apply_pod(&pod("a", Some("n1"), 5, "3"));
        s.apply_pod(&pod("b", Some("n1"), 1, "1"));
        s.apply_pod(&pod("c", Some("n2"), 7, "4"));
        // One CPU: evicting b on n1 is enough, and cheaper than c on n2.
        let plan = plan(&s, &pod("p", None, 10, "1")).unwrap();
        assert_eq!((plan.node, victims(&plan)), (0, vec!["d/b"]));
        // Two CPUs: on n1, b is given back and a goes (priority 5); on n2, c goes (priority
        // 7). The lower highest victim priority wins: n1.
        let plan = super::plan(&s, &pod("p", None, 10, "2")).unwrap();
        assert_eq!((plan.node, victims(&plan)), (0, vec!["d/a"]));
        // Four CPUs: both of n1's pods (priority 5 at most) rather than n2's one (7).
        let plan = super::plan(&s, &pod("p", None, 10, "4")).unwrap();
        let mut v = victims(&plan);
        v.sort();
        assert_eq!((plan.node, v), (0, vec!["d/a", "d/b"]));
    }

    #[test]
    fn equal_or_higher_priorities_never_policies_and_unfixable_nodes_preempt_nothing() {
        let mut s = Snapshot::new();
        s.apply_node(&node("n1", 1));
        s.apply_pod(&pod("a", Some("n1"), 10, "1"));
        assert_eq!(plan(&s, &pod("p", None, 10, "1")), None);
        s.apply_pod(&pod("a", Some("n1"), 1, "1"));
        let mut never = pod("p", None, 10, "1");
        never.preempts = false;
        assert_eq!(plan(&s, &never), None);
        // More than the whole node: no eviction helps.
        assert_eq!(plan(&s, &pod("p", None, 10, "5")), None);
        // The pod count is a resource like any other.
        assert_eq!(
            victims(&plan(&s, &pod("p", None, 10, "1")).unwrap()),
            ["d/a"]
        );
    }

    #[test]
    fn a_nominated_pod_waits_for_its_victims_and_keeps_lower_pods_out() {
        let mut s = Snapshot::new();
        s.apply_node(&node("n1", 1));
        s.apply_pod(&pod("a", Some("n1"), 1, "1"));
        let p = pod("p", None, 10, "1");
        let plan = plan(&s, &p).unwrap();
        s.nominate(&p, plan.node);
        // The victim is terminating: no second preemption.
        let mut going = pod("a", Some("n1"), 1, "1");
        going.deleting = true;
        s.apply_pod(&going);
        assert_eq!(super::plan(&s, &p), None);
        // Once it is gone, the node is the nominated pod's: a pod of lower priority does not
        // fit there, the nominated one does.
        s.delete_pod("d/a");
        let (decision, _) = super::super::decide::decide(&s, &pod("low", None, 5, "1"), 0, 100, 1);
        assert!(matches!(
            decision,
            super::super::decide::Decision::Unschedulable(_)
        ));
        let (decision, _) = super::super::decide::decide(&s, &p, 0, 100, 1);
        assert_eq!(decision, super::super::decide::Decision::Bind(0));
        s.assume(&p, 0);
        assert_eq!(s.nominated_node("d/p"), None);
    }
}
