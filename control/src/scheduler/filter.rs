//! Filters: can this pod run on this node? Pure functions over a [`PodInfo`] and a
//! [`NodeInfo`], in kube-scheduler's plugin order, stopping at the first that fails:
//!
//! 1. NodeUnschedulable: a cordoned node, unless the pod tolerates
//!    `node.kubernetes.io/unschedulable:NoSchedule`;
//! 2. TaintToleration: every `NoSchedule`/`NoExecute` taint (readiness included, see
//!    [`super::node`]) must be tolerated;
//! 3. NodeAffinity: `spec.nodeSelector` and the required node affinity terms;
//! 4. NodeResourcesFit: the pod count, CPU and memory requests against allocatable minus what
//!    the pods already there request;
//! 5. RuntimeHandler (Flotilla's): the pod's RuntimeClass handler must be one the node offers;
//! 6. PodTopologySpread: `DoNotSchedule` topology spread constraints (see
//!    [`super::topology_spread`]);
//! 7. InterPodAffinity: required pod affinity and anti-affinity, the pod's own and the placed
//!    pods' (see [`super::inter_pod`]).
//!
//! 8. VolumeBinding: the node affinity of the volumes of the pod's bound claims (see
//!    [`super::volume_binding`]).
//!
//! The last three need more than the node, so `decide` runs them.

use k8s_openapi::api::core::v1::{NodeSelectorRequirement, NodeSelectorTerm, Taint, Toleration};

use super::node::{NodeInfo, NodeSpecInfo, TAINT_UNSCHEDULABLE};
use super::pod::PodInfo;

/// Why a node cannot take a pod. Its [`Unfit::reasons`] are kube-scheduler's words.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum Unfit {
    /// The node is cordoned.
    Unschedulable,
    /// The first `NoSchedule`/`NoExecute` taint the pod does not tolerate.
    UntoleratedTaint {
        /// The taint's key.
        key: String,
        /// The taint's value (empty when it has none).
        value: String,
    },
    /// `nodeSelector` or required node affinity does not match.
    NodeAffinity,
    /// Not enough room: which of the counted resources fall short.
    Insufficient {
        /// Allocatable pods would be exceeded.
        pods: bool,
        /// Allocatable CPU would be exceeded.
        cpu: bool,
        /// Allocatable memory would be exceeded.
        memory: bool,
    },
    /// The node does not offer the pod's runtime handler.
    RuntimeHandler(String),
    /// The pod's required pod affinity is not met in the node's topology domain.
    PodAffinity,
    /// The pod's required pod anti-affinity is violated in the node's topology domain.
    PodAntiAffinity,
    /// A pod already in the node's topology domain has an anti-affinity this pod matches.
    ExistingPodsAntiAffinity,
    /// Placing the pod here would exceed a `DoNotSchedule` topology spread constraint's skew.
    TopologySpread,
    /// The node lacks the topology key of a `DoNotSchedule` topology spread constraint.
    TopologySpreadMissingLabel,
    /// A bound claim's volume is not reachable from the node (its node affinity).
    VolumeNodeAffinity,
}

impl Unfit {
    /// Whether evicting pods could make the node fit (kube-scheduler's `Unschedulable`, as
    /// opposed to `UnschedulableAndUnresolvable`): resources, the anti-affinity of either
    /// side, and a spread constraint's skew. Taints, cordons, node affinity, runtime
    /// handlers, required pod affinity and a missing topology label are not.
    pub fn resolvable_by_preemption(&self) -> bool {
        matches!(
            self,
            Unfit::Insufficient { .. }
                | Unfit::PodAntiAffinity
                | Unfit::ExistingPodsAntiAffinity
                | Unfit::TopologySpread
        )
    }

    /// The reasons as kube-scheduler words them (one node can give several for resources).
    pub fn reasons(&self) -> Vec<String> {
        match self {
            Unfit::Unschedulable => vec!["node(s) were unschedulable".into()],
            Unfit::UntoleratedTaint { key, value } => {
                vec![format!("node(s) had untolerated taint {{{key}: {value}}}")]
            }
            Unfit::NodeAffinity => vec!["node(s) didn't match Pod's node affinity/selector".into()],
            Unfit::Insufficient { pods, cpu, memory } => {
                let mut r = Vec::new();
                if *pods {
                    r.push("Too many pods".into());
                }
                if *cpu {
                    r.push("Insufficient cpu".into());
                }
                if *memory {
                    r.push("Insufficient memory".into());
                }
                r
            }
            Unfit::RuntimeHandler(h) => {
                vec![format!("node(s) didn't have the runtime handler \"{h}\"")]
            }
            Unfit::PodAffinity => vec!["node(s) didn't match pod affinity rules".into()],
            Unfit::PodAntiAffinity => vec!["node(s) didn't match pod anti-affinity rules".into()],
            Unfit::ExistingPodsAntiAffinity => {
                vec!["node(s) didn't satisfy existing pods anti-affinity rules".into()]
            }
            Unfit::TopologySpread => {
                vec!["node(s) didn't match pod topology spread constraints".into()]
            }
            Unfit::VolumeNodeAffinity => vec!["node(s) had volume node affinity conflict".into()],
            Unfit::TopologySpreadMissingLabel => vec![
                "node(s) didn't match pod topology spread constraints (missing required label)"
                    .into(),
            ],
        }
    }
}

/// Runs every filter; `handler` is the pod's resolved RuntimeClass handler, if it names one.
/// An absent node (no Node object) never fits; callers skip those.
pub fn filter(pod: &PodInfo, handler: Option<&str>, node: &NodeInfo) -> Result<(), Unfit> {
    let Some(spec) = node.node.as_ref() else {
        return Err(Unfit::Unschedulable);
    };
    if spec.unschedulable && !tolerates_cordon(&pod.tolerations) {
        return Err(Unfit::Unschedulable);
    }
    if let Some(t) = untolerated_taint(&spec.taints, &pod.tolerations) {
        return Err(Unfit::UntoleratedTaint {
            key: t.key.clone(),
            value: t.value.clone().unwrap_or_default(),
        });
    }
    if !matches_node_selector_and_affinity(pod, &node.name, spec) {
        return Err(Unfit::NodeAffinity);
    }
    fits_resources(pod, node, spec)?;
    if let Some(h) = handler
        && !spec.handlers.iter().any(|x| x == h)
    {
        return Err(Unfit::RuntimeHandler(h.to_string()));
    }
    Ok(())
}

fn tolerates_cordon(tolerations: &[Toleration]) -> bool {
    let cordon = Taint {
        key: TAINT_UNSCHEDULABLE.into(),
        effect: "NoSchedule".into(),
        ..Default::default()
    };
    tolerations.iter().any(|t| tolerates(t, &cordon))
}

/// Whether a toleration tolerates a taint (Kubernetes' `ToleratesTaint`): the effect matches
/// or the toleration names none; the key matches or the toleration names none (with
/// `Exists`); `Exists` ignores the value, `Equal` (the default) compares it.
pub fn tolerates(t: &Toleration, taint: &Taint) -> bool {
    if let Some(e) = t.effect.as_deref().filter(|e| !e.is_empty())
        && e != taint.effect
    {
        return false;
    }
    if let Some(k) = t.key.as_deref().filter(|k| !k.is_empty())
        && k != taint.key
    {
        return false;
    }
    match t.operator.as_deref().unwrap_or("Equal") {
        "Exists" => true,
        "Equal" | "" => t.value.as_deref().unwrap_or("") == taint.value.as_deref().unwrap_or(""),
        _ => false,
    }
}

/// The first `NoSchedule` or `NoExecute` taint no toleration tolerates.
pub fn untolerated_taint<'a>(taints: &'a [Taint], tolerations: &[Toleration]) -> Option<&'a Taint> {
    taints
        .iter()
        .filter(|t| t.effect == "NoSchedule" || t.effect == "NoExecute")
        .find(|taint| !tolerations.iter().any(|t| tolerates(t, taint)))
}

/// NodeAffinity: the pod's `nodeSelector` and required node affinity terms accept the node.
pub fn matches_node_selector_and_affinity(
    pod: &PodInfo,
    node_name: &str,
    spec: &NodeSpecInfo,
) -> bool {
    if !pod
        .node_selector
        .iter()
        .all(|(k, v)| spec.labels.get(k) == Some(v))
    {
        return false;
    }
    match &pod.required_terms {
        None => true,
        Some(terms) => terms.iter().any(|t| term_matches(t, node_name, spec)),
    }
}

/// Whether a node selector term matches a node: every expression on labels and every field
/// requirement (only `metadata.name` is selectable) holds. An empty term matches nothing.
pub fn term_matches(term: &NodeSelectorTerm, node_name: &str, spec: &NodeSpecInfo) -> bool {
    let exprs = term.match_expressions.as_deref().unwrap_or_default();
    let fields = term.match_fields.as_deref().unwrap_or_default();
    if exprs.is_empty() && fields.is_empty() {
        return false;
    }
    exprs
        .iter()
        .all(|r| requirement_matches(r, spec.labels.get(&r.key).map(String::as_str)))
        && fields
            .iter()
            .all(|r| r.key == "metadata.name" && requirement_matches(r, Some(node_name)))
}

fn requirement_matches(r: &NodeSelectorRequirement, value: Option<&str>) -> bool {
    let values = r.values.as_deref().unwrap_or_default();
    let number = |s: &str| s.parse::<i64>().ok();
    match r.operator.as_str() {
        "In" => value.is_some_and(|v| values.iter().any(|x| x == v)),
        "NotIn" => value.is_none_or(|v| !values.iter().any(|x| x == v)),
        "Exists" => value.is_some(),
        "DoesNotExist" => value.is_none(),
        "Gt" | "Lt" => {
            let (Some(have), [want]) = (value.and_then(number), values) else {
                return false;
            };
            let Some(want) = number(want) else {
                return false;
            };
            if r.operator == "Gt" {
                have > want
            } else {
                have < want
            }
        }
        _ => false,
    }
}

fn fits_resources(pod: &PodInfo, node: &NodeInfo, spec: &NodeSpecInfo) -> Result<(), Unfit> {
    let (req, used, alloc) = (pod.requests, node.requested, spec.allocatable);
    let pods = used.pods + req.pods > alloc.pods;
    // As kube-scheduler: a pod asking for no CPU and no memory only needs a pod slot.
    let asks = req.milli_cpu > 0 || req.memory > 0;
    let cpu = asks && req.milli_cpu > 0 && used.milli_cpu + req.milli_cpu > alloc.milli_cpu;
    let memory = asks && req.memory > 0 && used.memory + req.memory > alloc.memory;
    if pods || cpu || memory {
        Err(Unfit::Insufficient { pods, cpu, memory })
    } else {
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::scheduler::resources::Resources;
    use serde_json::{Value, json};

    fn node(
        labels: Value,
        taints: Value,
        unschedulable: bool,
        ready: &str,
        handlers: &[&str],
    ) -> NodeInfo {
        let mut labels: std::collections::BTreeMap<String, String> =
            serde_json::from_value(labels).unwrap();
        if !handlers.is_empty() {
            labels.insert(
                crate::scheduler::node::RUNTIME_HANDLERS_LABEL.into(),
                handlers.join("."),
            );
        }
        let n: k8s_openapi::api::core::v1::Node = serde_json::from_value(json!({
            "metadata": {"name": "n1", "labels": labels},
            "spec": {"taints": taints, "unschedulable": unschedulable},
            "status": {"allocatable": {"cpu": "1", "memory": "1Gi", "pods": "3"},
                "conditions": [{"type": "Ready", "status": ready}]},
        }))
        .unwrap();
        NodeInfo {
            node: Some(NodeSpecInfo::from_node(&n)),
            ..NodeInfo::new("n1")
        }
    }

    fn plain() -> NodeInfo {
        node(
            json!({"zone": "a", "size": "8"}),
            json!([]),
            false,
            "True",
            &["wasmtime"],
        )
    }

    fn pod(spec: Value) -> PodInfo {
        let mut spec = spec;
        if spec.get("containers").is_none() {
            spec["containers"] = json!([{"name": "c", "resources": {"requests": {"cpu": "100m", "memory": "100Mi"}}}]);
        }
        PodInfo::from_value(&json!({"metadata": {"name": "p", "namespace": "d"}, "spec": spec}))
            .unwrap()
    }

    fn affinity(terms: Value) -> Value {
        json!({"affinity": {"nodeAffinity": {"requiredDuringSchedulingIgnoredDuringExecution": {"nodeSelectorTerms": terms}}}})
    }

    #[test]
    fn filters_decide_like_kube_scheduler() {
        let taint =
            |k: &str, v: Option<&str>, e: &str| json!([{"key": k, "value": v, "effect": e}]);
        let untolerated = |k: &str, v: &str| {
            Err(Unfit::UntoleratedTaint {
                key: k.into(),
                value: v.into(),
            })
        };
        let cases: Vec<(&str, NodeInfo, Value, Result<(), Unfit>)> = vec![
            ("plain pod fits a plain node", plain(), json!({}), Ok(())),
            (
                "cordoned node",
                node(json!({}), json!([]), true, "True", &[]),
                json!({}),
                Err(Unfit::Unschedulable),
            ),
            (
                "cordon tolerated",
                node(json!({}), json!([]), true, "True", &[]),
                json!({"tolerations": [{"key": TAINT_UNSCHEDULABLE, "operator": "Exists", "effect": "NoSchedule"}]}),
                Ok(()),
            ),
            (
                "not-ready node",
                node(json!({}), json!([]), false, "False", &[]),
                json!({}),
                untolerated("node.kubernetes.io/not-ready", ""),
            ),
            (
                "unreachable node",
                node(json!({}), json!([]), false, "Unknown", &[]),
                json!({}),
                untolerated("node.kubernetes.io/unreachable", ""),
            ),
            (
                "NoSchedule taint",
                node(
                    json!({}),
                    taint("gpu", Some("yes"), "NoSchedule"),
                    false,
                    "True",
                    &[],
                ),
                json!({}),
                untolerated("gpu", "yes"),
            ),
            (
                "NoExecute taint",
                node(json!({}), taint("x", None, "NoExecute"), false, "True", &[]),
                json!({}),
                untolerated("x", ""),
            ),
            (
                "PreferNoSchedule only scores",
                node(
                    json!({}),
                    taint("x", None, "PreferNoSchedule"),
                    false,
                    "True",
                    &[],
                ),
                json!({}),
                Ok(()),
            ),
            (
                "Equal toleration",
                node(
                    json!({}),
                    taint("gpu", Some("yes"), "NoSchedule"),
                    false,
                    "True",
                    &[],
                ),
                json!({"tolerations": [{"key": "gpu", "operator": "Equal", "value": "yes", "effect": "NoSchedule"}]}),
                Ok(()),
            ),
            (
                "Equal toleration with another value",
                node(
                    json!({}),
                    taint("gpu", Some("yes"), "NoSchedule"),
                    false,
                    "True",
                    &[],
                ),
                json!({"tolerations": [{"key": "gpu", "value": "no"}]}),
                untolerated("gpu", "yes"),
            ),
            (
                "toleration for another effect",
                node(
                    json!({}),
                    taint("gpu", Some("yes"), "NoSchedule"),
                    false,
                    "True",
                    &[],
                ),
                json!({"tolerations": [{"key": "gpu", "operator": "Exists", "effect": "NoExecute"}]}),
                untolerated("gpu", "yes"),
            ),
            (
                "wildcard toleration",
                node(
                    json!({}),
                    taint("gpu", Some("yes"), "NoExecute"),
                    false,
                    "True",
                    &[],
                ),
                json!({"tolerations": [{"operator": "Exists"}]}),
                Ok(()),
            ),
            (
                "nodeSelector matches",
                plain(),
                json!({"nodeSelector": {"zone": "a"}}),
                Ok(()),
            ),
            (
                "nodeSelector differs",
                plain(),
                json!({"nodeSelector": {"zone": "b"}}),
                Err(Unfit::NodeAffinity),
            ),
            (
                "affinity In",
                plain(),
                affinity(
                    json!([{"matchExpressions": [{"key": "zone", "operator": "In", "values": ["a", "b"]}]}]),
                ),
                Ok(()),
            ),
            (
                "affinity terms are ORed",
                plain(),
                affinity(json!([
                    {"matchExpressions": [{"key": "zone", "operator": "In", "values": ["c"]}]},
                    {"matchExpressions": [{"key": "zone", "operator": "Exists"}]},
                ])),
                Ok(()),
            ),
            (
                "affinity expressions are ANDed",
                plain(),
                affinity(json!([{"matchExpressions": [
                    {"key": "zone", "operator": "In", "values": ["a"]},
                    {"key": "size", "operator": "Gt", "values": ["8"]},
                ]}])),
                Err(Unfit::NodeAffinity),
            ),
            (
                "affinity Lt and DoesNotExist",
                plain(),
                affinity(json!([{"matchExpressions": [
                    {"key": "size", "operator": "Lt", "values": ["9"]},
                    {"key": "gpu", "operator": "DoesNotExist"},
                ]}])),
                Ok(()),
            ),
            (
                "affinity NotIn",
                plain(),
                affinity(
                    json!([{"matchExpressions": [{"key": "zone", "operator": "NotIn", "values": ["a"]}]}]),
                ),
                Err(Unfit::NodeAffinity),
            ),
            (
                "affinity matchFields on the name",
                plain(),
                affinity(
                    json!([{"matchFields": [{"key": "metadata.name", "operator": "In", "values": ["n1"]}]}]),
                ),
                Ok(()),
            ),
            (
                "empty term matches nothing",
                plain(),
                affinity(json!([{}])),
                Err(Unfit::NodeAffinity),
            ),
            (
                "too much memory",
                plain(),
                json!({"containers": [{"name": "c", "resources": {"requests": {"memory": "2Gi"}}}]}),
                Err(Unfit::Insufficient {
                    pods: false,
                    cpu: false,
                    memory: true,
                }),
            ),
            (
                "too much of both",
                plain(),
                json!({"containers": [{"name": "c", "resources": {"requests": {"cpu": "2", "memory": "2Gi"}}}]}),
                Err(Unfit::Insufficient {
                    pods: false,
                    cpu: true,
                    memory: true,
                }),
            ),
            (
                "exactly the allocatable fits",
                plain(),
                json!({"containers": [{"name": "c", "resources": {"requests": {"cpu": "1", "memory": "1Gi"}}}]}),
                Ok(()),
            ),
            (
                "runtime handler offered",
                plain(),
                json!({"runtimeClassName": "wasmtime"}),
                Ok(()),
            ),
        ];
        for (what, node, spec, want) in cases {
            let p = pod(spec);
            let handler = p.runtime_class.clone();
            assert_eq!(filter(&p, handler.as_deref(), &node), want, "{what}");
        }
    }

    #[test]
    fn bound_pods_use_up_room_and_pod_slots() {
        let mut n = plain();
        let used = Resources {
            milli_cpu: 950,
            memory: 0,
            pods: 1,
        };
        n.add_pod(used, used, None);
        assert_eq!(
            filter(&pod(json!({})), None, &n),
            Err(Unfit::Insufficient {
                pods: false,
                cpu: true,
                memory: false
            })
        );
        n.add_pod(
            Resources {
                pods: 2,
                ..Default::default()
            },
            Resources::default(),
            None,
        );
        let empty = pod(json!({"containers": [{"name": "c"}]}));
        assert_eq!(
            filter(&empty, None, &n),
            Err(Unfit::Insufficient {
                pods: true,
                cpu: false,
                memory: false
            })
        );
    }

    #[test]
    fn a_missing_runtime_handler_is_reported_by_name() {
        assert_eq!(
            filter(&pod(json!({})), Some("crun"), &plain()),
            Err(Unfit::RuntimeHandler("crun".into()))
        );
        assert_eq!(
            Unfit::RuntimeHandler("crun".into()).reasons(),
            vec!["node(s) didn't have the runtime handler \"crun\""]
        );
    }
}
