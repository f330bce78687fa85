//! Preemption (kube-scheduler's DefaultPreemption): when no node fits a pod, find the node
//! where evicting pods of lower priority would make it fit, evicting as few and as
//! unimportant pods as possible.
//!
//! For each node with pods of lower priority, all of them are taken away in thought; if the
//! pod then fits, they are given back one by one, each kept when the pod still fits beside
//! it: first those whose eviction would exceed a PodDisruptionBudget's
//! `disruptionsAllowed`, then the others, each group most important first (highest
//! priority, then name). What could not be given back are the node's victims. Of the nodes
//! with victims, the chosen one has the fewest budget violations, then the lowest
//! highest-victim priority, then the lowest sum of victim priorities, then the fewest
//! victims (kube-scheduler's `pickOneNodeForPreemption`, without its start-time criterion).
//! A budget does not forbid preemption: when nothing else makes room, it is violated.
//!
//! A pod whose `preemptionPolicy` is `Never` preempts nothing; nor does one already
//! nominated to a node where pods of lower priority are still terminating (it waits for
//! them, as kube-scheduler's `PodEligibleToPreemptOthers`). Inter-pod affinity and topology
//! spread are checked as the cluster stands, with the victims still there: preemption frees
//! resources, it does not move pods out of the way of an anti-affinity term.

use std::collections::HashMap;

use super::decide::{Constraints, runtime_handler, with_nominated};
use super::explain::{Diagnosis, fit_message};
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

/// How a node's victims compare (lower is better): budget violations, the highest victim
/// priority, the sum of victim priorities, the number of victims, the node's index.
type Rank = (usize, i32, i64, usize, usize);

/// kube-scheduler's word for a node whose failure no eviction can fix.
pub const NOT_HELPFUL: &str = "Preemption is not helpful for scheduling";

/// kube-scheduler's word for a node that fails for lack of room but holds no pod of lower
/// priority.
pub const NO_VICTIMS: &str = "No preemption victims found for incoming pod";

/// The preemption that makes room for `pod`, given `diagnosis`, what the filters said about
/// every node; or, when there is none, why, as kube-scheduler words it after `preemption: `.
pub fn plan(snapshot: &Snapshot, pod: &PodInfo, diagnosis: &Diagnosis) -> Result<Plan, String> {
    if !pod.preempts {
        return Err("not eligible due to preemptionPolicy=Never".into());
    }
    let all = diagnosis.nodes;
    let Ok(handler) = runtime_handler(snapshot, pod) else {
        return Err(fit_message(
            all,
            None,
            HashMap::from([(NOT_HELPFUL.to_string(), all)]),
        ));
    };
    // Nodes whose failure an eviction could fix, and the others.
    let (mut resolvable, unresolvable) =
        diagnosis
            .unfit
            .iter()
            .fold((0, 0), |(yes, no), (why, count)| {
                if why.resolvable_by_preemption() {
                    (yes + count, no)
                } else {
                    (yes, no + count)
                }
            });
    let mut why: HashMap<String, usize> = HashMap::new();
    let explain = |mut why: HashMap<String, usize>, resolvable: usize| {
        *why.entry(NO_VICTIMS.to_string()).or_default() += resolvable;
        *why.entry(NOT_HELPFUL.to_string()).or_default() += unresolvable;
        fit_message(all, None, why)
    };
    // The common case: nothing placed has a lower priority, so nothing is read further.
    if !snapshot.has_lower_priority(pod.priority) {
        return Err(explain(why, resolvable));
    }
    let (mut lower, terminating) = snapshot.lower_priority(pod.priority);
    if snapshot
        .nominated_node(&pod.key())
        .is_some_and(|n| terminating.contains(&n))
    {
        return Err("not eligible due to a terminating pod on the nominated node".into());
    }
    let constraints = Constraints::read(snapshot, pod);
    let nominated = snapshot.nominated_against(pod);
    let nodes = snapshot.nodes();
    let mut best: Option<(Rank, Plan)> = None;
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
        // Only a node that failed for a reason evictions can fix is tried (it fits as it
        // stands when a nomination or the walk's sample kept it from being chosen: nothing
        // to preempt there).
        match constraints.fits(pod, handler, &node) {
            Err(unfit) if unfit.resolvable_by_preemption() => {
                resolvable = resolvable.saturating_sub(1);
            }
            _ => continue,
        }
        for c in &candidates {
            node.remove_pod(c.requests, c.non_zero, c.owner.as_deref());
        }
        if let Err(unfit) = constraints.fits(pod, handler, &node) {
            for reason in unfit.reasons() {
                *why.entry(reason).or_default() += 1;
            }
            continue;
        }
        // Most important first: they are the ones to give back if they can be; those a
        // budget protects before the others.
        candidates.sort_by(|a, b| b.priority.cmp(&a.priority).then_with(|| a.key.cmp(&b.key)));
        let (violating, free) = split_by_budgets(snapshot, candidates);
        let mut victims = Vec::new();
        let mut violations = 0;
        for (c, violates) in violating
            .into_iter()
            .map(|c| (c, true))
            .chain(free.into_iter().map(|c| (c, false)))
        {
            node.add_pod(c.requests, c.non_zero, c.owner.as_deref());
            if constraints.fits(pod, handler, &node).is_err() {
                node.remove_pod(c.requests, c.non_zero, c.owner.as_deref());
                violations += usize::from(violates);
                victims.push(c);
            }
        }
        let rank = (
            violations,
            victims.iter().map(|v| v.priority).max().unwrap_or(i32::MIN),
            victims.iter().map(|v| i64::from(v.priority)).sum::<i64>(),
            victims.len(),
            i,
        );
        if best.as_ref().is_none_or(|(r, _)| rank < *r) {
            best = Some((rank, Plan { node: i, victims }));
        }
    }
    match best {
        Some((_, plan)) => Ok(plan),
        None => Err(explain(why, resolvable)),
    }
}

/// Splits a node's candidates (most important first) into those whose eviction would take a
/// budget below zero and the others, counting each against every budget that covers it in
/// that order (kube-scheduler's `filterPodsWithPDBViolation`).
fn split_by_budgets(
    snapshot: &Snapshot,
    candidates: Vec<Candidate>,
) -> (Vec<Candidate>, Vec<Candidate>) {
    let mut budgets: Vec<(&super::snapshot::Budget, i32)> =
        snapshot.budgets().map(|b| (b, b.allowed)).collect();
    if budgets.is_empty() {
        return (Vec::new(), candidates);
    }
    let (mut violating, mut free) = (Vec::new(), Vec::new());
    for c in candidates {
        let (ns, name) = split_key(&c.key);
        let mut violates = false;
        for (b, allowed) in budgets.iter_mut() {
            if b.covers(ns, name, &c.labels) {
                *allowed -= 1;
                violates |= *allowed < 0;
            }
        }
        if violates {
            violating.push(c);
        } else {
            free.push(c);
        }
    }
    (violating, free)
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

    /// The plan for `p` after a decision found no node for it.
    fn try_plan(s: &Snapshot, p: &PodInfo) -> Result<Plan, String> {
        match super::super::decide::decide(s, p, 0, 100, 1).0 {
            super::super::decide::Decision::Unschedulable(d) => plan(s, p, &d),
            super::super::decide::Decision::Bind(i) => Err(format!("fits on node {i}")),
        }
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
        let plan = try_plan(&s, &pod("p", None, 10, "1")).unwrap();
        assert_eq!((plan.node, victims(&plan)), (0, vec!["d/b"]));
        // Two CPUs: on n1, b is given back and a goes (priority 5); on n2, c goes (priority
        // 7). The lower highest victim priority wins: n1.
        let plan = try_plan(&s, &pod("p", None, 10, "2")).unwrap();
        assert_eq!((plan.node, victims(&plan)), (0, vec!["d/a"]));
        // Four CPUs: both of n1's pods (priority 5 at most) rather than n2's one (7).
        let plan = try_plan(&s, &pod("p", None, 10, "4")).unwrap();
        let mut v = victims(&plan);
        v.sort();
        assert_eq!((plan.node, v), (0, vec!["d/a", "d/b"]));
    }

    #[test]
    fn equal_or_higher_priorities_never_policies_and_unfixable_nodes_preempt_nothing() {
        let mut s = Snapshot::new();
        s.apply_node(&node("n1", 1));
        s.apply_pod(&pod("a", Some("n1"), 10, "1"));
        assert_eq!(
            try_plan(&s, &pod("p", None, 10, "1")),
            Err("0/1 nodes are available: 1 No preemption victims found for incoming pod.".into())
        );
        s.apply_pod(&pod("a", Some("n1"), 1, "1"));
        let mut never = pod("p", None, 10, "1");
        never.preempts = false;
        assert_eq!(
            try_plan(&s, &never),
            Err("not eligible due to preemptionPolicy=Never".into())
        );
        // More than the whole node: no eviction helps, and the node says why once its pods
        // of lower priority are taken away in thought.
        assert_eq!(
            try_plan(&s, &pod("p", None, 10, "5")),
            Err("0/1 nodes are available: 1 Insufficient cpu.".into())
        );
        // The pod count is a resource like any other.
        assert_eq!(
            victims(&try_plan(&s, &pod("p", None, 10, "1")).unwrap()),
            ["d/a"]
        );
    }

    fn budget(name: &str, app: &str, allowed: i32) -> super::super::snapshot::Budget {
        let pdb = json!({"apiVersion": "policy/v1", "kind": "PodDisruptionBudget",
            "metadata": {"name": name, "namespace": "d"},
            "spec": {"selector": {"matchLabels": {"app": app}}},
            "status": {"disruptionsAllowed": allowed, "currentHealthy": 1, "desiredHealthy": 1,
                       "expectedPods": 1, "observedGeneration": 1}});
        super::super::snapshot::Budget::from_slice(pdb.to_string().as_bytes()).unwrap()
    }

    fn labelled(name: &str, node: &str, priority: i32, cpu: &str, app: &str) -> PodInfo {
        PodInfo::from_value(&json!({
            "metadata": {"name": name, "namespace": "d", "uid": format!("uid-{name}"),
                         "labels": {"app": app}},
            "spec": {"nodeName": node, "priority": priority, "containers": [
                {"name": "c", "resources": {"requests": {"cpu": cpu}}}]},
            "status": {"phase": "Running"},
        }))
        .unwrap()
    }

    #[test]
    fn victims_a_disruption_budget_protects_are_spared_when_others_will_do() {
        let mut s = Snapshot::new();
        s.apply_node(&node("n1", 10));
        s.apply_node(&node("n2", 10));
        // n1: a protected pod of priority 1; n2: an unprotected one of priority 5.
        s.apply_pod(&labelled("guarded", "n1", 1, "4", "db"));
        s.apply_pod(&labelled("plain", "n2", 5, "4", "web"));
        s.apply_budget(budget("db-pdb", "db", 0));
        let p = pod("p", None, 10, "1");
        // Fewer budget violations first, although n1's victim has the lower priority.
        let plan = try_plan(&s, &p).unwrap();
        assert_eq!((plan.node, victims(&plan)), (1, vec!["d/plain"]));
        // A budget that allows one disruption is not violated by one victim.
        s.apply_budget(budget("db-pdb", "db", 1));
        let plan = try_plan(&s, &p).unwrap();
        assert_eq!((plan.node, victims(&plan)), (0, vec!["d/guarded"]));
        // On one node, the protected pod is given back first when either would do.
        let mut s = Snapshot::new();
        s.apply_node(&node("n1", 10));
        s.apply_pod(&labelled("guarded", "n1", 1, "2", "db"));
        s.apply_pod(&labelled("plain", "n1", 5, "2", "web"));
        s.apply_budget(budget("db-pdb", "db", 0));
        let plan = try_plan(&s, &pod("p", None, 10, "2")).unwrap();
        assert_eq!(victims(&plan), ["d/plain"]);
        // And when only evicting it makes room, the budget is violated.
        let plan = try_plan(&s, &pod("p", None, 10, "4")).unwrap();
        let mut v = victims(&plan);
        v.sort();
        assert_eq!(v, ["d/guarded", "d/plain"]);
    }

    #[test]
    fn a_nominated_pod_waits_for_its_victims_and_keeps_lower_pods_out() {
        let mut s = Snapshot::new();
        s.apply_node(&node("n1", 1));
        s.apply_pod(&pod("a", Some("n1"), 1, "1"));
        let p = pod("p", None, 10, "1");
        let plan = try_plan(&s, &p).unwrap();
        s.nominate(&p, plan.node);
        // The victim is terminating: no second preemption.
        let mut going = pod("a", Some("n1"), 1, "1");
        going.deleting = true;
        s.apply_pod(&going);
        assert_eq!(
            try_plan(&s, &p),
            Err("not eligible due to a terminating pod on the nominated node".into())
        );
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

    #[test]
    fn nodes_no_eviction_can_fix_are_not_tried_and_are_counted_as_such() {
        let mut s = Snapshot::new();
        s.apply_node(&node("full", 1));
        s.apply_node(&node("empty-full", 1));
        let tainted: Node = serde_json::from_value(json!({"metadata": {"name": "tainted"},
            "spec": {"taints": [{"key": "dedicated", "value": "gpu", "effect": "NoSchedule"}]},
            "status": {"allocatable": {"cpu": "4", "memory": "4Gi", "pods": "10"},
                       "conditions": [{"type": "Ready", "status": "True"}]}}))
        .unwrap();
        s.apply_node(&tainted);
        // full: a pod of higher priority; empty-full: one of equal priority; tainted: a pod of
        // lower priority, but evicting it would not take the taint away.
        s.apply_pod(&pod("high", Some("full"), 20, "1"));
        s.apply_pod(&pod("same", Some("empty-full"), 10, "1"));
        s.apply_pod(&pod("low", Some("tainted"), 1, "1"));
        assert_eq!(
            try_plan(&s, &pod("p", None, 10, "1")),
            Err("0/3 nodes are available: 1 Preemption is not helpful for scheduling, 2 No preemption victims found for incoming pod.".into())
        );
    }
}
