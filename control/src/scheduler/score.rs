//! Scores: which feasible node suits a pod best. Pure functions; each plugin scores 0–100
//! ([`MAX_NODE_SCORE`]) and the total is their weighted sum, with kube-scheduler's default
//! weights:
//!
//! | plugin | weight | prefers |
//! |---|---|---|
//! | least allocated (NodeResourcesFit) | 1 | nodes with more CPU and memory left |
//! | balanced allocation | 1 | nodes whose CPU and memory fill evenly |
//! | preferred node affinity | 2 | nodes matching heavier preferred terms |
//! | taint toleration | 3 | nodes with fewer untolerated `PreferNoSchedule` taints |
//! | owner spread | 2 | nodes with fewer replicas of the pod's controlling owner |
//! | inter-pod affinity | 2 | domains its preferred terms (and placed pods' terms) favour |
//! | topology spread | 2 | domains with fewer pods its `ScheduleAnyway` constraints count |
//!
//! The last five are normalised over the candidate nodes (the best gets 100), as
//! kube-scheduler's `NormalizeScore` does, so they need every candidate before a total.

use super::filter::{term_matches, tolerates};
use super::inter_pod::Preferences;
use super::node::NodeInfo;
use super::pod::PodInfo;

/// The highest score one plugin gives.
pub const MAX_NODE_SCORE: i64 = 100;

const WEIGHT_LEAST_ALLOCATED: i64 = 1;
const WEIGHT_BALANCED: i64 = 1;
const WEIGHT_NODE_AFFINITY: i64 = 2;
const WEIGHT_TAINT: i64 = 3;
const WEIGHT_SPREAD: i64 = 2;
const WEIGHT_INTER_POD: i64 = 2;
const WEIGHT_TOPOLOGY_SPREAD: i64 = 2;

/// Least allocated: the share of CPU and memory still free after placing the pod, averaged
/// (0–100), counting containers without requests at kube-scheduler's defaults.
pub fn least_allocated(pod: &PodInfo, node: &NodeInfo) -> i64 {
    let Some(spec) = &node.node else { return 0 };
    let free = |requested: i64, capacity: i64| {
        if capacity <= 0 || requested > capacity {
            0
        } else {
            (capacity - requested) * MAX_NODE_SCORE / capacity
        }
    };
    let cpu = free(
        node.non_zero_requested.milli_cpu + pod.non_zero_requests.milli_cpu,
        spec.allocatable.milli_cpu,
    );
    let mem = free(
        node.non_zero_requested.memory + pod.non_zero_requests.memory,
        spec.allocatable.memory,
    );
    (cpu + mem) / 2
}

/// Balanced allocation: 100 when CPU and memory would be used in the same proportion,
/// less as they diverge (`(1 - |cpu% - mem%| / 2) × 100`).
pub fn balanced_allocation(pod: &PodInfo, node: &NodeInfo) -> i64 {
    let Some(spec) = &node.node else { return 0 };
    let fraction = |requested: i64, capacity: i64| {
        if capacity <= 0 {
            1.0
        } else {
            (requested as f64 / capacity as f64).min(1.0)
        }
    };
    let cpu = fraction(
        node.requested.milli_cpu + pod.requests.milli_cpu,
        spec.allocatable.milli_cpu,
    );
    let mem = fraction(
        node.requested.memory + pod.requests.memory,
        spec.allocatable.memory,
    );
    let std = (cpu - mem).abs() / 2.0;
    ((1.0 - std) * MAX_NODE_SCORE as f64) as i64
}

/// Preferred node affinity (raw): the sum of the weights of the preferred terms the node
/// matches.
pub fn preferred_affinity(pod: &PodInfo, node: &NodeInfo) -> i64 {
    let Some(spec) = &node.node else { return 0 };
    pod.preferred_terms
        .iter()
        .filter(|t| term_matches(&t.preference, &node.name, spec))
        .map(|t| i64::from(t.weight))
        .sum()
}

/// Taint toleration (raw): how many `PreferNoSchedule` taints of the node the pod does not
/// tolerate (tolerations with an effect other than `PreferNoSchedule` do not count).
pub fn intolerable_prefer_no_schedule(pod: &PodInfo, node: &NodeInfo) -> i64 {
    let Some(spec) = &node.node else { return 0 };
    spec.taints
        .iter()
        .filter(|t| t.effect == "PreferNoSchedule")
        .filter(|taint| {
            !pod.tolerations
                .iter()
                .filter(|t| {
                    t.effect
                        .as_deref()
                        .is_none_or(|e| e.is_empty() || e == "PreferNoSchedule")
                })
                .any(|t| tolerates(t, taint))
        })
        .count() as i64
}

/// Scales raw scores so the largest becomes 100 (`reverse`: the smallest becomes 100).
fn normalize(raw: &mut [i64], reverse: bool) {
    let max = raw.iter().copied().max().unwrap_or(0);
    for s in raw.iter_mut() {
        *s = match (max, reverse) {
            (0, true) => MAX_NODE_SCORE,
            (0, false) => 0,
            (m, false) => *s * MAX_NODE_SCORE / m,
            (m, true) => MAX_NODE_SCORE - *s * MAX_NODE_SCORE / m,
        };
    }
}

/// The weighted total score of each candidate node (`candidates` are indexes into `nodes`).
/// Plugins with nothing to tell apart (no preferred terms, no owner, no `PreferNoSchedule`
/// taint) add their constant without a pass over the candidates. `spread` is the topology
/// spread score of each candidate, already normalised (see [`super::topology_spread`]).
pub fn score(
    pod: &PodInfo,
    nodes: &[NodeInfo],
    candidates: &[usize],
    inter_pod: Option<&Preferences>,
    spread: Option<Vec<i64>>,
) -> Vec<i64> {
    let mut total: Vec<i64> = candidates
        .iter()
        .map(|&i| {
            WEIGHT_LEAST_ALLOCATED * least_allocated(pod, &nodes[i])
                + WEIGHT_BALANCED * balanced_allocation(pod, &nodes[i])
        })
        .collect();
    let mut add = |raw: Vec<i64>, reverse: bool, weight: i64| {
        let mut raw = raw;
        normalize(&mut raw, reverse);
        for (t, s) in total.iter_mut().zip(raw) {
            *t += weight * s;
        }
    };
    if !pod.preferred_terms.is_empty() {
        let raw = candidates
            .iter()
            .map(|&i| preferred_affinity(pod, &nodes[i]))
            .collect();
        add(raw, false, WEIGHT_NODE_AFFINITY);
    }
    let soft_tainted = candidates.iter().any(|&i| {
        nodes[i]
            .node
            .as_ref()
            .is_some_and(|n| n.taints.iter().any(|t| t.effect == "PreferNoSchedule"))
    });
    let raw = if soft_tainted {
        candidates
            .iter()
            .map(|&i| intolerable_prefer_no_schedule(pod, &nodes[i]))
            .collect()
    } else {
        vec![0; candidates.len()]
    };
    add(raw, true, WEIGHT_TAINT);
    let raw = match &pod.owner {
        Some(owner) => candidates
            .iter()
            .map(|&i| i64::from(nodes[i].owner_count(owner)))
            .collect(),
        None => vec![0; candidates.len()],
    };
    add(raw, true, WEIGHT_SPREAD);
    if let Some(prefs) = inter_pod {
        // kube-scheduler's InterPodAffinity normalisation: from the lowest (0) to the highest
        // (100), since weights can be negative.
        let raw: Vec<i64> = candidates
            .iter()
            .map(|&i| nodes[i].node.as_ref().map_or(0, |n| prefs.raw(n)))
            .collect();
        let (min, max) = (
            raw.iter().copied().min().unwrap_or(0),
            raw.iter().copied().max().unwrap_or(0),
        );
        if max > min {
            for (t, s) in total.iter_mut().zip(raw) {
                *t += WEIGHT_INTER_POD * (s - min) * MAX_NODE_SCORE / (max - min);
            }
        }
    }
    for (t, s) in total.iter_mut().zip(spread.into_iter().flatten()) {
        *t += WEIGHT_TOPOLOGY_SPREAD * s;
    }
    total
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::scheduler::node::NodeSpecInfo;
    use crate::scheduler::resources::Resources;
    use serde_json::{Value, json};

    fn node(name: &str, labels: Value, taints: Value, cpu: &str, mem: &str) -> NodeInfo {
        let n: k8s_openapi::api::core::v1::Node = serde_json::from_value(json!({
            "metadata": {"name": name, "labels": labels},
            "spec": {"taints": taints},
            "status": {"allocatable": {"cpu": cpu, "memory": mem, "pods": "100"},
                "conditions": [{"type": "Ready", "status": "True"}]},
        }))
        .unwrap();
        NodeInfo {
            node: Some(NodeSpecInfo::from_node(&n)),
            ..NodeInfo::new(name)
        }
    }

    fn pod(extra: Value) -> PodInfo {
        let mut v = json!({"metadata": {"name": "p", "namespace": "d"}, "spec": {
            "containers": [{"name": "c", "resources": {"requests": {"cpu": "1", "memory": "1Gi"}}}]}});
        if let Some(o) = extra.get("owner") {
            v["metadata"]["ownerReferences"] = json!([{"apiVersion": "apps/v1", "kind": "ReplicaSet", "name": "rs", "uid": o, "controller": true}]);
        }
        for (k, val) in extra.as_object().unwrap() {
            if k != "owner" {
                v["spec"][k] = val.clone();
            }
        }
        PodInfo::from_value(&v).unwrap()
    }

    #[test]
    fn plugin_scores_match_kube_scheduler_formulas() {
        let n = node("n", json!({}), json!([]), "4", "4Gi");
        let p = pod(json!({}));
        // (4-1)/4 = 75 for both resources.
        assert_eq!(least_allocated(&p, &n), 75);
        assert_eq!(balanced_allocation(&p, &n), 100);
        let lopsided = node("n", json!({}), json!([]), "2", "8Gi");
        // cpu 50% used, memory 12.5%: std = 0.1875 → 81.
        assert_eq!(balanced_allocation(&p, &lopsided), 81);
        // cpu free 50, memory free 87 → 68.
        assert_eq!(least_allocated(&p, &lopsided), 68);
        let mut full = node("n", json!({}), json!([]), "1", "1Gi");
        let used = Resources {
            milli_cpu: 1000,
            memory: 1 << 30,
            pods: 1,
        };
        full.add_pod(used, used, None);
        assert_eq!(least_allocated(&p, &full), 0);
    }

    #[test]
    fn preferences_taints_and_spread_steer_the_total() {
        let nodes = vec![
            node("a", json!({"disk": "ssd"}), json!([]), "4", "4Gi"),
            node("b", json!({"disk": "hdd"}), json!([]), "4", "4Gi"),
            node(
                "c",
                json!({"disk": "ssd"}),
                json!([{"key": "k", "effect": "PreferNoSchedule"}]),
                "4",
                "4Gi",
            ),
        ];
        let all = [0, 1, 2];
        let prefers_ssd = pod(
            json!({"affinity": {"nodeAffinity": {"preferredDuringSchedulingIgnoredDuringExecution": [
            {"weight": 10, "preference": {"matchExpressions": [{"key": "disk", "operator": "In", "values": ["ssd"]}]}}]}}}),
        );
        let s = score(&prefers_ssd, &nodes, &all, None, None);
        // a: ssd and untainted wins; c: ssd but tainted; b: neither preferred.
        assert!(s[0] > s[2] && s[0] > s[1], "{s:?}");
        assert_eq!(s[0] - s[1], WEIGHT_NODE_AFFINITY * 100);
        assert_eq!(s[0] - s[2], WEIGHT_TAINT * 100);
        let tolerant = pod(
            json!({"tolerations": [{"key": "k", "operator": "Exists", "effect": "PreferNoSchedule"}]}),
        );
        let s = score(&tolerant, &nodes, &all, None, None);
        assert_eq!(s[0], s[2]);

        let mut spread_nodes = nodes.clone();
        let r = Resources::default();
        spread_nodes[0].add_pod(r, r, Some("rs-1"));
        spread_nodes[0].add_pod(r, r, Some("rs-1"));
        spread_nodes[1].add_pod(r, r, Some("rs-1"));
        let replica = pod(json!({"owner": "rs-1"}));
        let s = score(&replica, &spread_nodes, &[0, 1], None, None);
        assert_eq!(s[1] - s[0], WEIGHT_SPREAD * 50);
    }

    #[test]
    fn inter_pod_preferences_normalise_from_the_lowest_to_the_highest() {
        use crate::scheduler::inter_pod::{Placed, read};
        let nodes = vec![
            node("n1", json!({"zone": "a"}), json!([]), "4", "8Gi"),
            node("n2", json!({"zone": "b"}), json!([]), "4", "8Gi"),
        ];
        let p = pod(json!({"affinity": {"podAffinity": {
            "preferredDuringSchedulingIgnoredDuringExecution": [{"weight": 100, "podAffinityTerm": {
                "labelSelector": {"matchLabels": {"app": "cache"}}, "topologyKey": "zone"}}]}}}));
        let cache: std::collections::BTreeMap<String, String> =
            [("app".to_string(), "cache".to_string())].into();
        let zone_b = &nodes[1].node.as_ref().unwrap().labels;
        let placed = [Placed {
            namespace: &p.namespace,
            namespaces: None,
            labels: &cache,
            terms: None,
            node_labels: Some(zone_b),
            node: 0,
            deleting: false,
        }];
        let prefs = read(
            &p.namespace,
            None,
            &p.labels,
            p.pod_terms.as_deref(),
            placed.iter().copied(),
        )
        .score
        .unwrap();
        let with = score(&p, &nodes, &[0, 1], Some(&prefs), None);
        let without = score(&p, &nodes, &[0, 1], None, None);
        assert_eq!(
            with[1] - without[1],
            200,
            "the favoured node gains the whole weighted score"
        );
        assert_eq!(with[0], without[0]);
    }
}
