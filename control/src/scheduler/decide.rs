//! One scheduling decision: filter the nodes, score the feasible ones, pick the best. Pure:
//! it reads the [`Snapshot`] and returns a choice; the caller assumes and binds it.
//!
//! Like kube-scheduler it does not look at every node of a large cluster: it walks the nodes
//! from a rotating start index and stops once it has found [`feasible_nodes_to_find`] feasible
//! ones (`percentageOfNodesToScore`; by default adaptive: 50% minus 1% per 125 nodes, at least
//! 5%, and never fewer than 100 nodes), then scores only those. The next decision starts where
//! this one stopped, so every node gets its turn. At 5,000 nodes that is 500 nodes per pod
//! instead of 5,000; when nothing fits, every node has been looked at, so the failure message
//! covers them all.

use super::explain::Diagnosis;
use super::filter::{Unfit, filter};
use super::inter_pod::InterPod;
use super::node::NodeInfo;
use super::pod::PodInfo;
use super::resources::Resources;
use super::score::score;
use super::snapshot::Snapshot;
use super::topology_spread::Spread;

/// Below this many nodes every node is considered (kube-scheduler's `minFeasibleNodesToFind`).
pub const MIN_FEASIBLE_NODES_TO_FIND: usize = 100;
/// The floor of the adaptive percentage (`minFeasibleNodesPercentageToFind`).
pub const MIN_FEASIBLE_NODES_PERCENTAGE: usize = 5;

/// The choice for one pod.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Decision {
    /// Bind to the node at this index of [`Snapshot::nodes`].
    Bind(usize),
    /// No node fits; the diagnosis says why, node by node.
    Unschedulable(Diagnosis),
}

/// How many feasible nodes to find before scoring, out of `nodes`; `percentage` 0 means
/// adaptive, as kube-scheduler's `percentageOfNodesToScore`.
pub fn feasible_nodes_to_find(nodes: usize, percentage: u32) -> usize {
    if nodes < MIN_FEASIBLE_NODES_TO_FIND {
        return nodes;
    }
    let pct = match percentage as usize {
        0 => (50usize.saturating_sub(nodes / 125)).max(MIN_FEASIBLE_NODES_PERCENTAGE),
        p => p,
    };
    if pct >= 100 {
        return nodes;
    }
    (nodes * pct / 100).max(MIN_FEASIBLE_NODES_TO_FIND)
}

/// What a decision checks beyond [`filter`], read once per decision: inter-pod affinity
/// (only when some term, the pod's own or a placed pod's, can matter) and topology spread
/// (for a pod with constraints).
pub struct Constraints {
    inter_pod: InterPod,
    spread: Option<Spread>,
    volumes: super::volume_binding::VolumeTerms,
}

impl Constraints {
    /// Reads what `pod`'s decision needs from `snapshot`.
    pub fn read(snapshot: &Snapshot, pod: &PodInfo) -> Constraints {
        // A pod whose claims fail the pre-filter never gets this far.
        let volumes = if pod.claims.is_some() {
            super::volume_binding::read(snapshot.claims(), snapshot.volumes(), pod)
                .unwrap_or_default()
        } else {
            Vec::new()
        };
        Self::read_with_volumes(snapshot, pod, volumes)
    }

    /// [`Constraints::read`] with what the pod's claims require, read already.
    fn read_with_volumes(
        snapshot: &Snapshot,
        pod: &PodInfo,
        volumes: super::volume_binding::VolumeTerms,
    ) -> Constraints {
        let inter_pod = if pod.pod_terms.is_some() || snapshot.has_terms() {
            super::inter_pod::read(
                &pod.namespace,
                Some(snapshot.namespaces()),
                &pod.labels,
                pod.pod_terms.as_deref(),
                snapshot.placed(),
            )
        } else {
            InterPod::default()
        };
        let spread = pod.spread.as_deref().map(|constraints| {
            super::topology_spread::read(pod, constraints, snapshot.nodes(), snapshot.placed())
        });
        Constraints {
            inter_pod,
            spread,
            volumes,
        }
    }

    /// Whether there is anything to check beyond [`filter`].
    fn is_empty(&self) -> bool {
        self.inter_pod.filter.is_none()
            && self.spread.as_ref().is_none_or(|s| s.is_empty())
            && self.volumes.is_empty()
    }

    /// [`filter`], then inter-pod affinity and topology spread.
    pub fn fits(&self, pod: &PodInfo, handler: Option<&str>, node: &NodeInfo) -> Result<(), Unfit> {
        filter(pod, handler, node)?;
        if self.is_empty() {
            return Ok(());
        }
        let Some(spec) = node.node.as_ref() else {
            return Ok(());
        };
        super::volume_binding::check(&self.volumes, &node.name, spec)?;
        if let Some(s) = self.spread.as_ref().filter(|s| !s.is_empty()) {
            s.check(spec)?;
        }
        self.inter_pod
            .filter
            .as_ref()
            .map_or(Ok(()), |c| c.check(spec))
    }
}

/// The handler of the pod's RuntimeClass: `Ok(None)` when it names none, `Err` with the
/// pre-filter message when the class does not exist.
pub fn runtime_handler<'a>(
    snapshot: &'a Snapshot,
    pod: &PodInfo,
) -> Result<Option<&'a str>, String> {
    match &pod.runtime_class {
        Some(rc) => snapshot
            .runtime_handler(rc)
            .map(Some)
            .ok_or_else(|| format!("runtimeclass.node.k8s.io \"{rc}\" not found")),
        None => Ok(None),
    }
}

/// `node` as a pod of `pod`'s priority sees it: with what the pods nominated there with a
/// priority at least as high will take (`extra`), if any.
pub fn with_nominated<'a>(
    node: &'a NodeInfo,
    extra: Option<&Resources>,
) -> std::borrow::Cow<'a, NodeInfo> {
    match extra {
        None => std::borrow::Cow::Borrowed(node),
        Some(r) => {
            let mut n = node.clone();
            n.requested += *r;
            std::borrow::Cow::Owned(n)
        }
    }
}

/// Decides where `pod` goes. `start` is the node index to begin the walk at; returns the
/// decision and the index the next decision should start at. `seed` breaks ties between
/// equally good nodes (kube-scheduler picks one of them at random).
pub fn decide(
    snapshot: &Snapshot,
    pod: &PodInfo,
    start: usize,
    percentage: u32,
    seed: u64,
) -> (Decision, usize) {
    let total = snapshot.node_count();
    let mut diagnosis = Diagnosis::new(total);
    let handler = match runtime_handler(snapshot, pod) {
        Ok(h) => h,
        Err(message) => {
            diagnosis.pre_filter = Some(message);
            return (Decision::Unschedulable(diagnosis), start);
        }
    };
    let volumes = if pod.claims.is_some() {
        match super::volume_binding::read(snapshot.claims(), snapshot.volumes(), pod) {
            Ok(terms) => terms,
            Err(message) => {
                diagnosis.pre_filter = Some(message);
                return (Decision::Unschedulable(diagnosis), start);
            }
        }
    } else {
        Vec::new()
    };
    let nodes = snapshot.nodes();
    let constraints = Constraints::read_with_volumes(snapshot, pod, volumes);
    let nominated = snapshot.nominated_against(pod);
    // The common case (no inter-pod terms anywhere, no spread constraints, no nominated
    // pods) stays the bare filter.
    let bare = constraints.is_empty() && nominated.is_empty();
    let want = feasible_nodes_to_find(total, percentage);
    let mut feasible = Vec::with_capacity(want.min(nodes.len()));
    let len = nodes.len();
    let start = if len == 0 { 0 } else { start % len };
    let mut walked = 0;
    while walked < len && feasible.len() < want {
        let i = (start + walked) % len;
        walked += 1;
        let node = &nodes[i];
        if node.node.is_none() {
            continue;
        }
        let fits = if bare {
            filter(pod, handler, node)
        } else {
            constraints.fits(pod, handler, &with_nominated(node, nominated.get(&i)))
        };
        match fits {
            Ok(()) => feasible.push(i),
            Err(why) => diagnosis.record(why),
        }
    }
    let next = if len == 0 { 0 } else { (start + walked) % len };
    if feasible.is_empty() {
        return (Decision::Unschedulable(diagnosis), next);
    }
    if feasible.len() == 1 {
        return (Decision::Bind(feasible[0]), next);
    }
    let spread_scores = constraints
        .spread
        .as_ref()
        .and_then(|s| s.scores(nodes, &feasible));
    let scores = score(
        pod,
        nodes,
        &feasible,
        constraints.inter_pod.score.as_ref(),
        spread_scores,
    );
    (Decision::Bind(feasible[pick_best(&scores, seed)]), next)
}

/// The index of the highest score; among equals, one chosen uniformly by reservoir sampling
/// driven by `seed`.
pub fn pick_best(scores: &[i64], seed: u64) -> usize {
    // splitmix64 of the seed, so that nearby seeds give unrelated sequences.
    let mut rng = seed.wrapping_add(0x9e37_79b9_7f4a_7c15);
    rng = (rng ^ (rng >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    rng = (rng ^ (rng >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    rng = (rng ^ (rng >> 31)) | 1;
    let mut next = || {
        // xorshift64: cheap and good enough to spread ties.
        rng ^= rng << 13;
        rng ^= rng >> 7;
        rng ^= rng << 17;
        rng
    };
    let mut best = 0;
    let mut ties = 1u64;
    for (i, &s) in scores.iter().enumerate().skip(1) {
        if s > scores[best] {
            best = i;
            ties = 1;
        } else if s == scores[best] {
            ties += 1;
            if next() % ties == 0 {
                best = i;
            }
        }
    }
    best
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::scheduler::filter::Unfit;
    use serde_json::json;

    fn node(name: &str, mem: &str) -> k8s_openapi::api::core::v1::Node {
        serde_json::from_value(json!({"metadata": {"name": name, "labels": {"flotilla.dev/runtime-handlers": "wasmtime"}},
            "status": {"allocatable": {"cpu": "4", "memory": mem, "pods": "110"},
                "conditions": [{"type": "Ready", "status": "True"}]}}))
        .unwrap()
    }

    fn pod(mem: &str, rc: Option<&str>) -> PodInfo {
        PodInfo::from_value(
            &json!({"metadata": {"name": "p", "namespace": "d"}, "spec": {"runtimeClassName": rc,
            "containers": [{"name": "c", "resources": {"requests": {"memory": mem}}}]}}),
        )
        .unwrap()
    }

    #[test]
    fn the_number_of_nodes_examined_follows_kube_scheduler() {
        let cases = [
            (0, 0, 0),
            (50, 0, 50),
            (99, 0, 99),
            (100, 0, 100),
            (1000, 0, 420),
            (5000, 0, 500),
            (5000, 5, 250),
            (10000, 0, 500),
            (200, 30, 100),
            (6000, 100, 6000),
        ];
        for (nodes, pct, want) in cases {
            assert_eq!(
                feasible_nodes_to_find(nodes, pct),
                want,
                "{nodes} nodes at {pct}%"
            );
        }
    }

    #[test]
    fn the_best_fitting_node_is_chosen_and_failures_are_diagnosed() {
        let mut s = Snapshot::new();
        s.apply_node(&node("small", "1Gi"));
        s.apply_node(&node("big", "8Gi"));
        s.apply_runtime_class("wasmtime", "wasmtime");
        // Least allocated prefers the big node for a 512Mi pod.
        let (d, _) = decide(&s, &pod("512Mi", Some("wasmtime")), 0, 0, 7);
        assert_eq!(d, Decision::Bind(1));
        let (d, _) = decide(&s, &pod("16Gi", None), 0, 0, 7);
        let Decision::Unschedulable(diag) = d else {
            panic!("should not fit")
        };
        assert_eq!(
            diag.unfit.get(&Unfit::Insufficient {
                pods: false,
                cpu: false,
                memory: true
            }),
            Some(&2)
        );
        assert_eq!(
            diag.message(),
            "0/2 nodes are available: 2 Insufficient memory."
        );
        let (d, _) = decide(&s, &pod("1Mi", Some("gvisor")), 0, 0, 7);
        let Decision::Unschedulable(diag) = d else {
            panic!("unknown runtime class")
        };
        assert_eq!(
            diag.message(),
            "0/2 nodes are available: runtimeclass.node.k8s.io \"gvisor\" not found."
        );
    }

    #[test]
    fn large_clusters_are_sampled_from_a_rotating_start() {
        let mut s = Snapshot::new();
        for i in 0..1000 {
            s.apply_node(&node(&format!("n{i}"), "8Gi"));
        }
        let (_, next) = decide(&s, &pod("1Mi", None), 0, 0, 1);
        assert_eq!(next, 420);
        let (_, next) = decide(&s, &pod("1Mi", None), 900, 0, 1);
        assert_eq!(next, 320);
    }

    #[test]
    fn ties_are_broken_among_the_best_only() {
        let mut seen = std::collections::HashSet::new();
        for seed in 0..64 {
            let i = pick_best(&[5, 9, 9, 1, 9], seed);
            assert!([1, 2, 4].contains(&i));
            seen.insert(i);
        }
        assert_eq!(seen.len(), 3);
        assert_eq!(pick_best(&[3], 1), 0);
    }
}
