//! Pod topology spread constraints (kube-scheduler's PodTopologySpread plugin): a pod asks
//! that the pods its constraint selects (in its namespace) be spread over the topology domains
//! of a node label (`topologyKey`), so that no domain holds more than `maxSkew` more of them
//! than the emptiest one.
//!
//! - `whenUnsatisfiable: DoNotSchedule` is a filter: a node is feasible when placing the pod
//!   there keeps the skew within `maxSkew` (the pod counts itself when it matches its own
//!   selector). With `minDomains`, fewer domains than that count as an emptiest domain of 0.
//! - `whenUnsatisfiable: ScheduleAnyway` is a score: nodes in domains holding fewer matching
//!   pods score higher, each constraint weighted by the log of its number of domains, then
//!   normalised as kube-scheduler does (the emptiest node 100).
//!
//! Only nodes with every key of the pod's constraints of the same kind count as domains, and,
//! by the default policies, only nodes the pod's node selector and required node affinity
//! accept (`nodeAffinityPolicy: Honor`), whatever their taints (`nodeTaintsPolicy: Ignore`).
//! `matchLabelKeys` adds the pod's own values of those labels to the selector. Terminating
//! pods are not counted.
//!
//! [`read`] reads the nodes and the placed pods once per decision, and only for a pod that has
//! constraints; a pod without them costs nothing.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::sync::Arc;

use k8s_openapi::api::core::v1::TopologySpreadConstraint;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::LabelSelectorRequirement;

use super::filter::{Unfit, matches_node_selector_and_affinity, untolerated_taint};
use super::inter_pod::Placed;
use super::node::{NodeInfo, NodeSpecInfo};
use super::pod::PodInfo;
use super::score::MAX_NODE_SCORE;
use crate::apiserver::selector::LabelSelector;

/// The label every node carries with its own name.
const HOSTNAME: &str = "kubernetes.io/hostname";

/// One constraint of a pod, resolved.
#[derive(Debug, Clone, PartialEq)]
pub struct Constraint {
    max_skew: i64,
    topology_key: String,
    /// `DoNotSchedule` (a filter) rather than `ScheduleAnyway` (a score).
    hard: bool,
    /// The pods it counts; `None` for a null `labelSelector`, which selects none.
    selector: Option<LabelSelector>,
    min_domains: Option<i64>,
    /// `nodeAffinityPolicy: Honor` (the default).
    honor_affinity: bool,
    /// `nodeTaintsPolicy: Honor` (the default is `Ignore`).
    honor_taints: bool,
}

impl Constraint {
    fn from_spec(c: &TopologySpreadConstraint, labels: &BTreeMap<String, String>) -> Constraint {
        let selector = c.label_selector.as_ref().and_then(|s| {
            let mut s = s.clone();
            for key in c.match_label_keys.iter().flatten() {
                if let Some(value) = labels.get(key) {
                    s.match_expressions.get_or_insert_with(Vec::new).push(
                        LabelSelectorRequirement {
                            key: key.clone(),
                            operator: "In".into(),
                            values: Some(vec![value.clone()]),
                        },
                    );
                }
            }
            LabelSelector::from_k8s(&s).ok()
        });
        Constraint {
            max_skew: i64::from(c.max_skew),
            topology_key: c.topology_key.clone(),
            hard: c.when_unsatisfiable != "ScheduleAnyway",
            selector,
            min_domains: c.min_domains.map(i64::from),
            honor_affinity: c.node_affinity_policy.as_deref() != Some("Ignore"),
            honor_taints: c.node_taints_policy.as_deref() == Some("Honor"),
        }
    }

    fn selects(&self, labels: &BTreeMap<String, String>) -> bool {
        self.selector.as_ref().is_some_and(|s| s.matches(labels))
    }

    /// Whether `node`'s pods count for this constraint of `pod` (the node inclusion policies).
    fn includes(&self, pod: &PodInfo, name: &str, spec: &NodeSpecInfo) -> bool {
        (!self.honor_affinity || matches_node_selector_and_affinity(pod, name, spec))
            && (!self.honor_taints || untolerated_taint(&spec.taints, &pod.tolerations).is_none())
    }
}

/// A pod's topology spread constraints; `None` when it has none.
pub fn constraints(
    list: &[TopologySpreadConstraint],
    labels: &BTreeMap<String, String>,
) -> Option<Arc<[Constraint]>> {
    (!list.is_empty()).then(|| {
        list.iter()
            .map(|c| Constraint::from_spec(c, labels))
            .collect()
    })
}

/// The matching pods per domain of one constraint.
#[derive(Debug, Default)]
struct Tally {
    /// Domain (the topology key's value) → matching pods; every counted node's domain is here.
    counts: HashMap<String, i64>,
}

/// What the placed pods mean for one decision under the pod's constraints.
#[derive(Debug, Default)]
pub struct Spread {
    /// For [`Spread::check`]: the `DoNotSchedule` constraints with their tallies.
    hard: Vec<(Constraint, Tally, i64)>,
    /// For [`Spread::scores`]: the `ScheduleAnyway` constraints with their tallies.
    soft: Vec<(Constraint, Tally)>,
    /// Whether the pod matches each hard constraint's selector itself.
    self_match: Vec<bool>,
}

/// Reads the nodes and the placed pods once for `pod` with `constraints`.
pub fn read<'a>(
    pod: &PodInfo,
    constraints: &[Constraint],
    nodes: &[NodeInfo],
    placed: impl Iterator<Item = Placed<'a>>,
) -> Spread {
    let has_keys = |spec: &NodeSpecInfo, hard: bool| {
        constraints
            .iter()
            .filter(|c| c.hard == hard)
            .all(|c| spec.labels.contains_key(&c.topology_key))
    };
    // Per constraint, the domain of each node whose pods count (None for the others).
    let domains: Vec<Vec<Option<&str>>> = constraints
        .iter()
        .map(|c| {
            nodes
                .iter()
                .map(|n| {
                    let spec = n.node.as_ref()?;
                    (has_keys(spec, c.hard) && c.includes(pod, &n.name, spec))
                        .then(|| spec.labels.get(&c.topology_key).map(String::as_str))
                        .flatten()
                })
                .collect()
        })
        .collect();
    let mut tallies: Vec<Tally> = domains
        .iter()
        .map(|of_node| Tally {
            counts: of_node
                .iter()
                .flatten()
                .map(|d| (d.to_string(), 0))
                .collect(),
        })
        .collect();
    for other in placed {
        if other.deleting || other.namespace != pod.namespace {
            continue;
        }
        for (i, c) in constraints.iter().enumerate() {
            if let Some(Some(domain)) = domains[i].get(other.node)
                && c.selects(other.labels)
                && let Some(n) = tallies[i].counts.get_mut(*domain)
            {
                *n += 1;
            }
        }
    }
    let mut spread = Spread::default();
    for (c, tally) in constraints.iter().zip(tallies) {
        if c.hard {
            let fewest = if c
                .min_domains
                .is_some_and(|m| (tally.counts.len() as i64) < m)
            {
                0
            } else {
                tally.counts.values().copied().min().unwrap_or(0)
            };
            spread.self_match.push(c.selects(&pod.labels));
            spread.hard.push((c.clone(), tally, fewest));
        } else {
            spread.soft.push((c.clone(), tally));
        }
    }
    spread
}

impl Spread {
    /// Whether nothing applies (no constraint of either kind).
    pub fn is_empty(&self) -> bool {
        self.hard.is_empty() && self.soft.is_empty()
    }

    /// The filter: placing the pod on `node` keeps every `DoNotSchedule` constraint within
    /// its `maxSkew`.
    pub fn check(&self, node: &NodeSpecInfo) -> Result<(), Unfit> {
        for ((c, tally, fewest), self_match) in self.hard.iter().zip(&self.self_match) {
            let Some(domain) = node.labels.get(&c.topology_key) else {
                return Err(Unfit::TopologySpreadMissingLabel);
            };
            let here = tally.counts.get(domain).copied().unwrap_or(0);
            if here + i64::from(*self_match) - fewest > c.max_skew {
                return Err(Unfit::TopologySpread);
            }
        }
        Ok(())
    }

    /// The score of each candidate node (0–100) under the `ScheduleAnyway` constraints, as
    /// kube-scheduler's PodTopologySpread scores and normalises; `None` when the pod has none.
    pub fn scores(&self, nodes: &[NodeInfo], candidates: &[usize]) -> Option<Vec<i64>> {
        if self.soft.is_empty() {
            return None;
        }
        let labels = |i: usize| nodes[i].node.as_ref().map(|n| &n.labels);
        // A candidate without every key is left out (scored 0).
        let counted: Vec<bool> = candidates
            .iter()
            .map(|&i| {
                labels(i).is_some_and(|l| {
                    self.soft
                        .iter()
                        .all(|(c, _)| l.contains_key(&c.topology_key))
                })
            })
            .collect();
        // Each constraint weighs the log of its number of domains among the candidates.
        let weights: Vec<f64> = self
            .soft
            .iter()
            .map(|(c, _)| {
                let size = if c.topology_key == HOSTNAME {
                    counted.iter().filter(|&&k| k).count()
                } else {
                    candidates
                        .iter()
                        .zip(&counted)
                        .filter(|(_, k)| **k)
                        .filter_map(|(&i, _)| labels(i)?.get(&c.topology_key))
                        .collect::<HashSet<_>>()
                        .len()
                };
                ((size + 2) as f64).ln()
            })
            .collect();
        let raw: Vec<Option<i64>> = candidates
            .iter()
            .zip(&counted)
            .map(|(&i, &k)| {
                let labels = labels(i).filter(|_| k)?;
                let total: f64 = self
                    .soft
                    .iter()
                    .zip(&weights)
                    .map(|((c, tally), w)| {
                        let domain = &labels[&c.topology_key];
                        let count = tally.counts.get(domain).copied().unwrap_or(0);
                        count as f64 * w + (c.max_skew - 1) as f64
                    })
                    .sum();
                Some(total.round() as i64)
            })
            .collect();
        let min = raw.iter().flatten().copied().min().unwrap_or(0);
        let max = raw.iter().flatten().copied().max().unwrap_or(0);
        Some(
            raw.into_iter()
                .map(|s| match s {
                    None => 0,
                    Some(_) if max == 0 => MAX_NODE_SCORE,
                    Some(s) => MAX_NODE_SCORE * (max + min - s) / max,
                })
                .collect(),
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::{Value, json};

    fn node(name: &str, zone: Option<&str>) -> NodeInfo {
        let mut labels = json!({"kubernetes.io/hostname": name});
        if let Some(z) = zone {
            labels["zone"] = json!(z);
        }
        let n: k8s_openapi::api::core::v1::Node = serde_json::from_value(json!({
            "metadata": {"name": name, "labels": labels},
            "status": {"allocatable": {"cpu": "4", "memory": "4Gi", "pods": "100"},
                "conditions": [{"type": "Ready", "status": "True"}]},
        }))
        .unwrap();
        NodeInfo {
            node: Some(NodeSpecInfo::from_node(&n)),
            ..NodeInfo::new(name)
        }
    }

    fn pod(constraints: Value, extra_spec: Value) -> PodInfo {
        let mut v = json!({"metadata": {"name": "p", "namespace": "d", "labels": {"app": "web", "rev": "2"}},
            "spec": {"containers": [{"name": "c"}], "topologySpreadConstraints": constraints}});
        for (k, val) in extra_spec.as_object().unwrap() {
            v["spec"][k] = val.clone();
        }
        PodInfo::from_value(&v).unwrap()
    }

    fn hard(key: &str, max_skew: i32) -> Value {
        json!({"maxSkew": max_skew, "topologyKey": key, "whenUnsatisfiable": "DoNotSchedule",
            "labelSelector": {"matchLabels": {"app": "web"}}})
    }

    /// `(namespace, labels, node index, deleting)` placed pods.
    fn spread_of(
        pod: &PodInfo,
        nodes: &[NodeInfo],
        placed: &[(&str, BTreeMap<String, String>, usize, bool)],
    ) -> Spread {
        read(
            pod,
            pod.spread.as_deref().unwrap(),
            nodes,
            placed.iter().map(|(ns, labels, node, deleting)| Placed {
                namespace: ns,
                namespaces: None,
                labels,
                terms: None,
                node_labels: nodes[*node].node.as_ref().map(|n| &n.labels),
                node: *node,
                deleting: *deleting,
            }),
        )
    }

    fn web() -> BTreeMap<String, String> {
        [("app".to_string(), "web".to_string())].into()
    }

    #[test]
    fn do_not_schedule_keeps_the_skew_within_max_skew() {
        let nodes = [
            node("a", Some("z1")),
            node("b", Some("z2")),
            node("c", None),
        ];
        let p = pod(json!([hard("zone", 1)]), json!({}));
        // Two web pods in z1, none in z2; an app=db pod, another namespace's web pod and a
        // terminating web pod do not count.
        let db: BTreeMap<String, String> = [("app".to_string(), "db".to_string())].into();
        let placed = [
            ("d", web(), 0, false),
            ("d", web(), 0, false),
            ("d", db, 1, false),
            ("other", web(), 1, false),
            ("d", web(), 1, true),
        ];
        let s = spread_of(&p, &nodes, &placed);
        let spec = |i: usize| nodes[i].node.as_ref().unwrap();
        assert_eq!(s.check(spec(0)), Err(Unfit::TopologySpread));
        assert_eq!(s.check(spec(1)), Ok(()));
        assert_eq!(s.check(spec(2)), Err(Unfit::TopologySpreadMissingLabel));
        // maxSkew 3 lets z1 take a third.
        let loose = pod(json!([hard("zone", 3)]), json!({}));
        assert_eq!(spread_of(&loose, &nodes, &placed).check(spec(0)), Ok(()));
    }

    #[test]
    fn min_domains_counts_missing_domains_as_empty_and_affinity_limits_the_domains() {
        let nodes = [node("a", Some("z1")), node("b", Some("z2"))];
        let placed = [("d", web(), 0, false), ("d", web(), 1, false)];
        let mut c = hard("zone", 1);
        c["minDomains"] = json!(3);
        let p = pod(json!([c]), json!({}));
        let s = spread_of(&p, &nodes, &placed);
        // Only two zones of the three wanted: the emptiest counts as 0, 1 + 1 - 0 > 1.
        assert_eq!(
            s.check(nodes[0].node.as_ref().unwrap()),
            Err(Unfit::TopologySpread)
        );
        // A pod pinned to z1 by its node selector does not count z2 as a domain, so z1 alone
        // is the emptiest; with nodeAffinityPolicy Ignore, z2 counts again.
        let pinned = pod(
            json!([hard("zone", 1)]),
            json!({"nodeSelector": {"zone": "z1"}}),
        );
        let placed = [("d", web(), 0, false)];
        let s = spread_of(&pinned, &nodes, &placed);
        assert_eq!(s.check(nodes[0].node.as_ref().unwrap()), Ok(()));
        let mut ignore = hard("zone", 1);
        ignore["nodeAffinityPolicy"] = json!("Ignore");
        let p = pod(json!([ignore]), json!({"nodeSelector": {"zone": "z1"}}));
        let s = spread_of(&p, &nodes, &placed);
        assert_eq!(
            s.check(nodes[0].node.as_ref().unwrap()),
            Err(Unfit::TopologySpread)
        );
    }

    #[test]
    fn match_label_keys_narrow_the_selector_to_the_pods_own_values() {
        let nodes = [node("a", Some("z1")), node("b", Some("z2"))];
        let mut c = hard("zone", 1);
        c["matchLabelKeys"] = json!(["rev"]);
        let p = pod(json!([c]), json!({}));
        // Two pods of the old revision in z1 do not count against revision 2.
        let old: BTreeMap<String, String> = [
            ("app".to_string(), "web".to_string()),
            ("rev".to_string(), "1".to_string()),
        ]
        .into();
        let placed = [("d", old.clone(), 0, false), ("d", old, 0, false)];
        let s = spread_of(&p, &nodes, &placed);
        assert_eq!(s.check(nodes[0].node.as_ref().unwrap()), Ok(()));
    }

    #[test]
    fn schedule_anyway_scores_emptier_domains_higher_as_kube_scheduler_does() {
        let nodes = [
            node("a", Some("z1")),
            node("b", Some("z2")),
            node("c", Some("z2")),
            node("d", None),
        ];
        let soft = json!([{"maxSkew": 1, "topologyKey": "zone", "whenUnsatisfiable": "ScheduleAnyway",
            "labelSelector": {"matchLabels": {"app": "web"}}}]);
        let p = pod(soft, json!({}));
        let placed = [
            ("d", web(), 0, false),
            ("d", web(), 0, false),
            ("d", web(), 0, false),
            ("d", web(), 1, false),
        ];
        let s = spread_of(&p, &nodes, &placed);
        // No filter from a soft constraint.
        assert_eq!(s.check(nodes[0].node.as_ref().unwrap()), Ok(()));
        // Two zones among the candidates: weight ln(4) = 1.386; z1 = round(3 × 1.386) = 4,
        // z2 = round(1.386) = 1; normalised 100 × (4 + 1 - s) / 4; d has no zone: 0.
        assert_eq!(s.scores(&nodes, &[0, 1, 2, 3]), Some(vec![25, 100, 100, 0]));
        let none = pod(json!([hard("zone", 1)]), json!({}));
        assert_eq!(
            spread_of(&none, &nodes, &placed).scores(&nodes, &[0, 1]),
            None
        );
    }
}
