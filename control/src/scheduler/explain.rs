//! Why a pod fits nowhere, in kube-scheduler's words: the `FailedScheduling` event message and
//! the `PodScheduled=False` condition message.
//!
//! The format is kube-scheduler's `FitError`: `0/<nodes> nodes are available: ` then either
//! the reason that ruled out every node before any was looked at (an unknown RuntimeClass),
//! or each per-node reason with the number of nodes that gave it, as `"<count> <reason>"`
//! strings sorted as strings and joined by `, `, ending in a full stop:
//!
//! `0/3 nodes are available: 1 node(s) had untolerated taint {node.kubernetes.io/unreachable: }, 2 Insufficient memory.`
//!
//! With no nodes at all the message is kube-scheduler's `no nodes available to schedule pods`.
//! When preemption cannot help, a last sentence says why, as kube-scheduler's DefaultPreemption
//! does: `preemption: ` and either why the pod may not preempt (`not eligible due to
//! preemptionPolicy=Never`) or the same kind of count over the nodes, whose own full stop
//! kube-scheduler keeps before adding another:
//!
//! `0/1 nodes are available: 1 Insufficient cpu. preemption: 0/1 nodes are available: 1 No preemption victims found for incoming pod..`
//!
//! When preemption makes room, the message has no such sentence (the victims get `Preempted`
//! events and the pod `status.nominatedNodeName`).

use std::collections::HashMap;

use super::filter::Unfit;

/// What the filters said about every node, gathered while looking for a fit.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Diagnosis {
    /// The nodes that exist.
    pub nodes: usize,
    /// A reason that ruled out all nodes at once (kube-scheduler's PreFilter message).
    pub pre_filter: Option<String>,
    /// How many nodes gave each unfit verdict.
    pub unfit: HashMap<Unfit, usize>,
    /// Why preemption could not help, when it was tried and could not (kube-scheduler's
    /// PostFilter message, without its `preemption: ` prefix).
    pub post_filter: Option<String>,
}

impl Diagnosis {
    /// An empty diagnosis over `nodes` nodes.
    pub fn new(nodes: usize) -> Diagnosis {
        Diagnosis {
            nodes,
            ..Default::default()
        }
    }

    /// Records one node's verdict.
    pub fn record(&mut self, why: Unfit) {
        *self.unfit.entry(why).or_default() += 1;
    }

    /// The message, exactly as kube-scheduler builds it.
    pub fn message(&self) -> String {
        if self.nodes == 0 {
            return "no nodes available to schedule pods".into();
        }
        let mut histogram: HashMap<String, usize> = HashMap::new();
        for (why, count) in &self.unfit {
            for reason in why.reasons() {
                *histogram.entry(reason).or_default() += count;
            }
        }
        let mut msg = fit_message(self.nodes, self.pre_filter.as_deref(), histogram);
        if let Some(post) = &self.post_filter {
            msg.push_str(&format!(" preemption: {post}."));
        }
        msg
    }
}

/// kube-scheduler's `FitError` text: `0/<nodes> nodes are available:`, then the reason that
/// ruled out every node at once, or each reason with the number of nodes that gave it, sorted
/// as strings, each form ending in a full stop.
pub fn fit_message(
    nodes: usize,
    pre_filter: Option<&str>,
    histogram: HashMap<String, usize>,
) -> String {
    let mut msg = format!("0/{nodes} nodes are available:");
    if let Some(pre) = pre_filter {
        msg.push_str(&format!(" {pre}."));
        return msg;
    }
    let mut parts: Vec<String> = histogram
        .into_iter()
        .filter(|(_, count)| *count > 0)
        .map(|(reason, count)| format!("{count} {reason}"))
        .collect();
    parts.sort();
    if !parts.is_empty() {
        msg.push_str(&format!(" {}.", parts.join(", ")));
    }
    msg
}

#[cfg(test)]
mod tests {
    use super::*;

    fn diag(nodes: usize, verdicts: &[Unfit]) -> Diagnosis {
        let mut d = Diagnosis::new(nodes);
        for v in verdicts {
            d.record(v.clone());
        }
        d
    }

    #[test]
    fn messages_read_as_kube_scheduler_writes_them() {
        let mem = Unfit::Insufficient {
            pods: false,
            cpu: false,
            memory: true,
        };
        let both = Unfit::Insufficient {
            pods: false,
            cpu: true,
            memory: true,
        };
        let unreachable = Unfit::UntoleratedTaint {
            key: "node.kubernetes.io/unreachable".into(),
            value: "".into(),
        };
        let cases: Vec<(Diagnosis, &str)> = vec![
            (
                diag(3, &[unreachable.clone(), mem.clone(), mem.clone()]),
                "0/3 nodes are available: 1 node(s) had untolerated taint {node.kubernetes.io/unreachable: }, 2 Insufficient memory.",
            ),
            (
                diag(3, &[mem.clone(), mem.clone(), Unfit::NodeAffinity]),
                "0/3 nodes are available: 1 node(s) didn't match Pod's node affinity/selector, 2 Insufficient memory.",
            ),
            (
                // One node short of both counts for each reason.
                diag(2, &[both, mem]),
                "0/2 nodes are available: 1 Insufficient cpu, 2 Insufficient memory.",
            ),
            (
                diag(
                    2,
                    &[
                        Unfit::Unschedulable,
                        Unfit::UntoleratedTaint {
                            key: "dedicated".into(),
                            value: "gpu".into(),
                        },
                    ],
                ),
                "0/2 nodes are available: 1 node(s) had untolerated taint {dedicated: gpu}, 1 node(s) were unschedulable.",
            ),
            (
                diag(
                    1,
                    &[Unfit::Insufficient {
                        pods: true,
                        cpu: false,
                        memory: false,
                    }],
                ),
                "0/1 nodes are available: 1 Too many pods.",
            ),
            (
                diag(1, &[Unfit::RuntimeHandler("crun".into())]),
                "0/1 nodes are available: 1 node(s) didn't have the runtime handler \"crun\".",
            ),
            (diag(0, &[]), "no nodes available to schedule pods"),
            (
                Diagnosis {
                    nodes: 2,
                    pre_filter: Some("runtimeclass.node.k8s.io \"gvisor\" not found".into()),
                    ..Default::default()
                },
                "0/2 nodes are available: runtimeclass.node.k8s.io \"gvisor\" not found.",
            ),
        ];
        for (d, want) in cases {
            assert_eq!(d.message(), want);
        }
    }

    #[test]
    fn why_preemption_cannot_help_ends_the_message_as_kube_scheduler_ends_it() {
        let cpu = Unfit::Insufficient {
            pods: false,
            cpu: true,
            memory: false,
        };
        let mut d = diag(1, &[cpu]);
        d.post_filter =
            Some("0/1 nodes are available: 1 No preemption victims found for incoming pod.".into());
        // The inner count keeps its own full stop, and kube-scheduler adds one more.
        assert_eq!(
            d.message(),
            "0/1 nodes are available: 1 Insufficient cpu. preemption: 0/1 nodes are available: 1 No preemption victims found for incoming pod.."
        );
        d.post_filter = Some("not eligible due to preemptionPolicy=Never".into());
        assert_eq!(
            d.message(),
            "0/1 nodes are available: 1 Insufficient cpu. preemption: not eligible due to preemptionPolicy=Never."
        );
        let mut d = Diagnosis {
            nodes: 2,
            pre_filter: Some("runtimeclass.node.k8s.io \"gvisor\" not found".into()),
            ..Default::default()
        };
        d.post_filter =
            Some("0/2 nodes are available: 2 Preemption is not helpful for scheduling.".into());
        assert_eq!(
            d.message(),
            "0/2 nodes are available: runtimeclass.node.k8s.io \"gvisor\" not found. preemption: 0/2 nodes are available: 2 Preemption is not helpful for scheduling.."
        );
    }

    #[test]
    fn counts_sort_as_strings_like_kube_scheduler() {
        let mut d = Diagnosis::new(12);
        for _ in 0..10 {
            d.record(Unfit::NodeAffinity);
        }
        d.record(Unfit::Unschedulable);
        d.record(Unfit::Unschedulable);
        assert_eq!(
            d.message(),
            "0/12 nodes are available: 10 node(s) didn't match Pod's node affinity/selector, 2 node(s) were unschedulable."
        );
    }
}
