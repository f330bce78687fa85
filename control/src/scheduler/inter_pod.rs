//! Required inter-pod affinity and anti-affinity (kube-scheduler's InterPodAffinity filter):
//! a pod may ask to run only in a topology domain (the nodes sharing a value of the term's
//! `topologyKey` label) that already holds pods matching a term, or only in one that holds
//! none, and a pod already placed with a required anti-affinity term keeps every pod it
//! matches out of its domain.
//!
//! [`read`] reads the other pods once per decision, for the filter (the domains of the
//! matching pods; [`Prepared::check`] is then a few set lookups per node) and for the score
//! (kube-scheduler's InterPodAffinity score of the preferred terms). A pod with no terms, in a
//! cluster whose pods have none, costs nothing.
//!
//! A term is about the pods in its `namespaces` and in the namespaces its `namespaceSelector`
//! selects by their labels (an empty selector: every namespace; neither: the pod's own), as
//! kube-scheduler reads it; the namespaces' labels come from the snapshot.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::sync::Arc;

use k8s_openapi::api::core::v1::{Affinity, PodAffinityTerm, WeightedPodAffinityTerm};

use super::filter::Unfit;
use super::node::NodeSpecInfo;
use crate::apiserver::selector::LabelSelector;

/// Namespaces' labels by name, which `namespaceSelector`s select by.
pub type NamespaceLabels = HashMap<String, BTreeMap<String, String>>;

/// One required term, resolved.
#[derive(Debug, Clone, PartialEq)]
pub struct Term {
    /// Which pods it is about (`None`: a null `labelSelector`, which matches no pod).
    selector: Option<LabelSelector>,
    /// The namespaces those pods are in, listed (`None`: every namespace).
    namespaces: Option<Vec<String>>,
    /// The namespaces those pods are in, by their labels (a selector with requirements).
    namespace_selector: Option<LabelSelector>,
    /// The node label that makes a topology domain.
    topology_key: String,
}

impl Term {
    fn from_spec(term: &PodAffinityTerm, own_namespace: &str) -> Term {
        let selector = term
            .label_selector
            .as_ref()
            .and_then(|s| LabelSelector::from_k8s(s).ok());
        let listed = term.namespaces.clone().unwrap_or_default();
        let every = term.namespace_selector.as_ref().is_some_and(|s| {
            s.match_labels.as_ref().is_none_or(BTreeMap::is_empty)
                && s.match_expressions.as_ref().is_none_or(Vec::is_empty)
        });
        let with_selector = term.namespace_selector.is_some() && !every;
        // An invalid selector (refused by validation before it is stored) selects nothing.
        let namespace_selector = term
            .namespace_selector
            .as_ref()
            .filter(|_| with_selector)
            .and_then(|s| LabelSelector::from_k8s(s).ok());
        let namespaces = if every {
            None
        } else if listed.is_empty() && !with_selector {
            Some(vec![own_namespace.to_string()])
        } else {
            Some(listed)
        };
        Term {
            selector,
            namespaces,
            namespace_selector,
            topology_key: term.topology_key.clone(),
        }
    }

    /// Whether a pod in `namespace` with `labels` is one this term is about; `namespaces`
    /// has the namespaces' labels (looked up only for a term with a selector).
    pub fn matches(
        &self,
        namespace: &str,
        namespaces: Option<&NamespaceLabels>,
        labels: &BTreeMap<String, String>,
    ) -> bool {
        let in_namespace = match &self.namespaces {
            None => true,
            Some(listed) => {
                listed.iter().any(|n| n == namespace)
                    || self.namespace_selector.as_ref().is_some_and(|s| {
                        namespaces
                            .and_then(|all| all.get(namespace))
                            .is_some_and(|ns_labels| s.matches(ns_labels))
                    })
            }
        };
        in_namespace && self.selector.as_ref().is_some_and(|s| s.matches(labels))
    }
}

/// A pod's inter-pod terms.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct PodTerms {
    /// `podAffinity.requiredDuringSchedulingIgnoredDuringExecution`.
    pub affinity: Vec<Term>,
    /// `podAntiAffinity.requiredDuringSchedulingIgnoredDuringExecution`.
    pub anti_affinity: Vec<Term>,
    /// `podAffinity.preferredDuringSchedulingIgnoredDuringExecution`, with their weights.
    pub preferred_affinity: Vec<(i64, Term)>,
    /// `podAntiAffinity.preferredDuringSchedulingIgnoredDuringExecution`, with their weights.
    pub preferred_anti_affinity: Vec<(i64, Term)>,
}

impl PodTerms {
    /// The required terms of a pod in `namespace`; `None` when it has none.
    pub fn from_affinity(affinity: Option<&Affinity>, namespace: &str) -> Option<Arc<PodTerms>> {
        let affinity = affinity?;
        let terms = |list: Option<&Vec<PodAffinityTerm>>| -> Vec<Term> {
            list.into_iter()
                .flatten()
                .map(|t| Term::from_spec(t, namespace))
                .collect()
        };
        let weighted = |list: Option<&Vec<WeightedPodAffinityTerm>>| -> Vec<(i64, Term)> {
            list.into_iter()
                .flatten()
                .map(|w| {
                    let term = Term::from_spec(&w.pod_affinity_term, namespace);
                    (i64::from(w.weight), term)
                })
                .collect()
        };
        let (aff, anti) = (&affinity.pod_affinity, &affinity.pod_anti_affinity);
        let out = PodTerms {
            affinity: terms(aff.as_ref().and_then(|a| {
                a.required_during_scheduling_ignored_during_execution
                    .as_ref()
            })),
            anti_affinity: terms(anti.as_ref().and_then(|a| {
                a.required_during_scheduling_ignored_during_execution
                    .as_ref()
            })),
            preferred_affinity: weighted(aff.as_ref().and_then(|a| {
                a.preferred_during_scheduling_ignored_during_execution
                    .as_ref()
            })),
            preferred_anti_affinity: weighted(anti.as_ref().and_then(|a| {
                a.preferred_during_scheduling_ignored_during_execution
                    .as_ref()
            })),
        };
        let any = !out.affinity.is_empty()
            || !out.anti_affinity.is_empty()
            || !out.preferred_affinity.is_empty()
            || !out.preferred_anti_affinity.is_empty();
        any.then(|| Arc::new(out))
    }
}

/// A pod placed on a node, as the check sees it.
#[derive(Debug, Clone, Copy)]
pub struct Placed<'a> {
    /// Its namespace.
    pub namespace: &'a str,
    /// The namespaces' labels (`None`: none known).
    pub namespaces: Option<&'a NamespaceLabels>,
    /// Its labels.
    pub labels: &'a BTreeMap<String, String>,
    /// Its inter-pod terms, if any.
    pub terms: Option<&'a PodTerms>,
    /// Its node's labels (`None` for a pod on a name that is not a node).
    pub node_labels: Option<&'a BTreeMap<String, String>>,
    /// Its node's index in the snapshot's node entries.
    pub node: usize,
    /// It is terminating (`deletionTimestamp` set).
    pub deleting: bool,
}

/// The domains one decision must respect.
#[derive(Debug, Default)]
pub struct Prepared {
    /// Per affinity term: its topology key and the values holding a matching pod.
    affinity: Vec<(String, HashSet<String>)>,
    /// Whether affinity may be satisfied anywhere: no pod matches any term and the pod
    /// matches all of its own (the first pod of a group that wants to be together).
    affinity_anywhere: bool,
    /// Per anti-affinity term: its topology key and the values holding a matching pod.
    anti_affinity: Vec<(String, HashSet<String>)>,
    /// (topology key, value) pairs that placed pods' anti-affinity keeps this pod out of.
    existing_anti: HashSet<(String, String)>,
}

/// What the other pods mean for one decision: the domains the filter must respect, and the
/// weights the score gives the domains; each `None` when nothing applies.
#[derive(Debug, Default)]
pub struct InterPod {
    /// For [`Prepared::check`].
    pub filter: Option<Prepared>,
    /// For the InterPodAffinity score.
    pub score: Option<Preferences>,
}

/// Reads `placed` once for a pod in `namespace` with `labels` and `terms` (`namespaces` has
/// the namespaces' labels):
///
/// - the filter: the domains holding pods its required (anti-)affinity terms match, and the
///   domains placed pods' required anti-affinity keeps it out of;
/// - the score (kube-scheduler's InterPodAffinity): how much each domain attracts (positive) or
///   repels (negative) it, from its preferred terms over the placed pods they match, and from
///   the placed pods' preferred terms (and required affinity, at weight 1) that match it.
pub fn read<'a>(
    namespace: &str,
    namespaces: Option<&NamespaceLabels>,
    labels: &BTreeMap<String, String>,
    terms: Option<&PodTerms>,
    placed: impl Iterator<Item = Placed<'a>>,
) -> InterPod {
    let mut p = Prepared::default();
    if let Some(t) = terms {
        p.affinity = t
            .affinity
            .iter()
            .map(|t| (t.topology_key.clone(), HashSet::new()))
            .collect();
        p.anti_affinity = t
            .anti_affinity
            .iter()
            .map(|t| (t.topology_key.clone(), HashSet::new()))
            .collect();
    }
    let mut any_affinity_match = false;
    let mut weights: HashMap<(String, String), i64> = HashMap::new();
    let mut add = |key: &str, node_labels: &BTreeMap<String, String>, w: i64| {
        if let Some(v) = node_labels.get(key) {
            *weights.entry((key.to_string(), v.clone())).or_default() += w;
        }
    };
    for other in placed {
        let Some(node_labels) = other.node_labels else {
            continue;
        };
        // The pod's terms over the other pod.
        let theirs = |term: &Term| term.matches(other.namespace, other.namespaces, other.labels);
        if let Some(t) = terms {
            for (term, (key, values)) in t.affinity.iter().zip(&mut p.affinity) {
                if theirs(term) {
                    any_affinity_match = true;
                    if let Some(v) = node_labels.get(key) {
                        values.insert(v.clone());
                    }
                }
            }
            for (term, (key, values)) in t.anti_affinity.iter().zip(&mut p.anti_affinity) {
                if theirs(term)
                    && let Some(v) = node_labels.get(key)
                {
                    values.insert(v.clone());
                }
            }
            for (w, term) in &t.preferred_affinity {
                if theirs(term) {
                    add(&term.topology_key, node_labels, *w);
                }
            }
            for (w, term) in &t.preferred_anti_affinity {
                if theirs(term) {
                    add(&term.topology_key, node_labels, -*w);
                }
            }
        }
        // The other pod's terms over this one.
        let Some(t) = other.terms else {
            continue;
        };
        let ours = |term: &Term| term.matches(namespace, namespaces, labels);
        for term in t.anti_affinity.iter().filter(|t| ours(t)) {
            if let Some(v) = node_labels.get(&term.topology_key) {
                p.existing_anti
                    .insert((term.topology_key.clone(), v.clone()));
            }
        }
        for term in t.affinity.iter().filter(|t| ours(t)) {
            add(&term.topology_key, node_labels, HARD_POD_AFFINITY_WEIGHT);
        }
        for (w, term) in t.preferred_affinity.iter().filter(|(_, t)| ours(t)) {
            add(&term.topology_key, node_labels, *w);
        }
        for (w, term) in t.preferred_anti_affinity.iter().filter(|(_, t)| ours(t)) {
            add(&term.topology_key, node_labels, -*w);
        }
    }
    p.affinity_anywhere = !any_affinity_match
        && terms.is_some_and(|t| {
            !t.affinity.is_empty()
                && t.affinity
                    .iter()
                    .all(|term| term.matches(namespace, namespaces, labels))
        });
    let nothing = p.affinity.is_empty() && p.anti_affinity.is_empty() && p.existing_anti.is_empty();
    weights.retain(|_, w| *w != 0);
    InterPod {
        filter: (!nothing).then_some(p),
        score: (!weights.is_empty()).then_some(Preferences { weights }),
    }
}

/// kube-scheduler's weight of a placed pod's required affinity term in the score.
const HARD_POD_AFFINITY_WEIGHT: i64 = 1;

/// Topology domain → weight, from [`read`].
#[derive(Debug, Default)]
pub struct Preferences {
    weights: HashMap<(String, String), i64>,
}

impl Preferences {
    /// A node's raw score: the weights of the domains it is in.
    pub fn raw(&self, node: &NodeSpecInfo) -> i64 {
        self.weights
            .iter()
            .filter(|((k, v), _)| node.labels.get(k) == Some(v))
            .map(|(_, w)| *w)
            .sum()
    }
}

impl Prepared {
    /// Whether a node with these labels is allowed, in kube-scheduler's order: existing pods'
    /// anti-affinity, the pod's affinity, then its anti-affinity.
    pub fn check(&self, node: &NodeSpecInfo) -> Result<(), Unfit> {
        let labels = &node.labels;
        if self
            .existing_anti
            .iter()
            .any(|(k, v)| labels.get(k) == Some(v))
        {
            return Err(Unfit::ExistingPodsAntiAffinity);
        }
        if !self.affinity_anywhere
            && !self
                .affinity
                .iter()
                .all(|(key, values)| labels.get(key).is_some_and(|v| values.contains(v)))
        {
            return Err(Unfit::PodAffinity);
        }
        if self
            .anti_affinity
            .iter()
            .any(|(key, values)| labels.get(key).is_some_and(|v| values.contains(v)))
        {
            return Err(Unfit::PodAntiAffinity);
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn labels(pairs: &[(&str, &str)]) -> BTreeMap<String, String> {
        pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect()
    }

    fn terms(affinity: serde_json::Value) -> Arc<PodTerms> {
        let a: Affinity = serde_json::from_value(affinity).unwrap();
        PodTerms::from_affinity(Some(&a), "d").unwrap()
    }

    fn node(host: &str, zone: &str) -> NodeSpecInfo {
        NodeSpecInfo {
            labels: labels(&[("kubernetes.io/hostname", host), ("zone", zone)]),
            ..NodeSpecInfo::default()
        }
    }

    #[test]
    fn anti_affinity_keeps_replicas_apart_both_ways() {
        let anti = terms(
            json!({"podAntiAffinity": {"requiredDuringSchedulingIgnoredDuringExecution": [
            {"labelSelector": {"matchLabels": {"app": "web"}}, "topologyKey": "kubernetes.io/hostname"}]}}),
        );
        let web = labels(&[("app", "web")]);
        let (n1, n2) = (node("n1", "a"), node("n2", "a"));
        let placed = [Placed {
            namespace: "d",
            namespaces: None,
            labels: &web,
            terms: Some(&anti),
            node_labels: Some(&n1.labels),
            node: 0,
            deleting: false,
        }];
        let p = read("d", None, &web, Some(&anti), placed.iter().copied())
            .filter
            .unwrap();
        assert_eq!(p.check(&n1), Err(Unfit::ExistingPodsAntiAffinity));
        assert_eq!(p.check(&n2), Ok(()));
        // Without terms of its own, the existing pod's term still keeps it away.
        let p = read("d", None, &web, None, placed.iter().copied())
            .filter
            .unwrap();
        assert_eq!(p.check(&n1), Err(Unfit::ExistingPodsAntiAffinity));
        // Another namespace is not this term's business.
        assert!(
            read("other", None, &web, None, placed.iter().copied())
                .filter
                .is_none()
        );
        // A pod the selector does not match goes anywhere.
        assert!(
            read(
                "d",
                None,
                &labels(&[("app", "db")]),
                None,
                placed.iter().copied()
            )
            .filter
            .is_none()
        );
        // The incoming pod's own anti-affinity alone (the placed pod has no terms).
        let placed = [Placed {
            terms: None,
            ..placed[0]
        }];
        let p = read("d", None, &web, Some(&anti), placed.iter().copied())
            .filter
            .unwrap();
        assert_eq!(p.check(&n1), Err(Unfit::PodAntiAffinity));
        assert_eq!(p.check(&n2), Ok(()));
    }

    #[test]
    fn affinity_follows_the_matching_pods_domain_and_lets_the_first_pod_anywhere() {
        let with_db = terms(
            json!({"podAffinity": {"requiredDuringSchedulingIgnoredDuringExecution": [
            {"labelSelector": {"matchLabels": {"app": "db"}}, "topologyKey": "zone"}]}}),
        );
        let db = labels(&[("app", "db")]);
        let web = labels(&[("app", "web")]);
        let (n1, n2, n3) = (node("n1", "a"), node("n2", "a"), node("n3", "b"));
        let placed = [Placed {
            namespace: "d",
            namespaces: None,
            labels: &db,
            terms: None,
            node_labels: Some(&n1.labels),
            node: 0,
            deleting: false,
        }];
        let p = read("d", None, &web, Some(&with_db), placed.iter().copied())
            .filter
            .unwrap();
        assert_eq!(p.check(&n2), Ok(()), "same zone as the db");
        assert_eq!(p.check(&n3), Err(Unfit::PodAffinity));
        // No db yet: a web pod waits...
        let p = read("d", None, &web, Some(&with_db), std::iter::empty())
            .filter
            .unwrap();
        assert_eq!(p.check(&n1), Err(Unfit::PodAffinity));
        // ...but a pod that matches its own terms may start the group anywhere.
        let p = read("d", None, &db, Some(&with_db), std::iter::empty())
            .filter
            .unwrap();
        assert_eq!(p.check(&n3), Ok(()));
    }

    #[test]
    fn namespaces_and_selectors_are_read_as_kubernetes_reads_them() {
        let spec = |extra: serde_json::Value| {
            let mut term =
                json!({"labelSelector": {"matchLabels": {"app": "web"}}, "topologyKey": "zone"});
            term.as_object_mut()
                .unwrap()
                .extend(extra.as_object().unwrap().clone());
            terms(
                json!({"podAntiAffinity": {"requiredDuringSchedulingIgnoredDuringExecution": [term]}}),
            )
        };
        let web = labels(&[("app", "web")]);
        assert!(spec(json!({})).anti_affinity[0].matches("d", None, &web));
        assert!(!spec(json!({})).anti_affinity[0].matches("e", None, &web));
        assert!(spec(json!({"namespaces": ["e"]})).anti_affinity[0].matches("e", None, &web));
        assert!(spec(json!({"namespaceSelector": {}})).anti_affinity[0].matches("x", None, &web));
        // A selector with requirements: the namespaces whose labels it selects, and the listed
        // ones, but not the pod's own unless selected.
        let namespaces: NamespaceLabels = [
            ("x", labels(&[("team", "a")])),
            ("y", labels(&[("team", "b")])),
            ("d", labels(&[])),
        ]
        .into_iter()
        .map(|(n, l)| (n.to_string(), l))
        .collect();
        let all = Some(&namespaces);
        let by_team = spec(json!({"namespaceSelector": {"matchLabels": {"team": "a"}}}));
        let term = &by_team.anti_affinity[0];
        assert!(term.matches("x", all, &web));
        assert!(!term.matches("y", all, &web));
        assert!(!term.matches("d", all, &web), "not its own namespace");
        assert!(
            !term.matches("z", all, &web),
            "a namespace not known selects nothing"
        );
        assert!(!term.matches("x", None, &web));
        assert!(!term.matches("x", all, &labels(&[("app", "db")])));
        let both = spec(json!({"namespaces": ["e"],
            "namespaceSelector": {"matchExpressions": [{"key": "team", "operator": "Exists"}]}}));
        assert!(both.anti_affinity[0].matches("e", None, &web));
        assert!(both.anti_affinity[0].matches("y", all, &web));
        assert!(!both.anti_affinity[0].matches("d", all, &web));
        let invalid = spec(json!({"namespaceSelector": {"matchExpressions": [
            {"key": "team", "operator": "Has", "values": ["a"]}]}}));
        for ns in ["x", "y", "d"] {
            assert!(
                !invalid.anti_affinity[0].matches(ns, all, &web),
                "an invalid selector selects no namespace ({ns})"
            );
        }
        let no_selector = terms(
            json!({"podAntiAffinity": {"requiredDuringSchedulingIgnoredDuringExecution": [
            {"topologyKey": "zone"}]}}),
        );
        assert!(
            !no_selector.anti_affinity[0].matches("d", None, &web),
            "a null labelSelector matches no pod"
        );
        assert!(PodTerms::from_affinity(Some(&Affinity::default()), "d").is_none());
    }

    #[test]
    fn preferences_weigh_domains_both_ways() {
        let prefers = terms(json!({
            "podAffinity": {"preferredDuringSchedulingIgnoredDuringExecution": [{"weight": 50,
                "podAffinityTerm": {"labelSelector": {"matchLabels": {"app": "cache"}}, "topologyKey": "zone"}}]},
            "podAntiAffinity": {"preferredDuringSchedulingIgnoredDuringExecution": [{"weight": 20,
                "podAffinityTerm": {"labelSelector": {"matchLabels": {"app": "web"}}, "topologyKey": "kubernetes.io/hostname"}}]}}));
        let (cache, web) = (labels(&[("app", "cache")]), labels(&[("app", "web")]));
        let (n1, n2, n3) = (node("n1", "a"), node("n2", "a"), node("n3", "b"));
        let placed = [
            Placed {
                namespace: "d",
                namespaces: None,
                labels: &cache,
                terms: None,
                node_labels: Some(&n1.labels),
                node: 0,
                deleting: false,
            },
            Placed {
                namespace: "d",
                namespaces: None,
                labels: &web,
                terms: None,
                node_labels: Some(&n2.labels),
                node: 0,
                deleting: false,
            },
        ];
        let p = read("d", None, &web, Some(&prefers), placed.iter().copied())
            .score
            .unwrap();
        assert_eq!((p.raw(&n1), p.raw(&n2), p.raw(&n3)), (50, 30, 0));
        // A placed pod's preferred anti-affinity and required affinity count for the pod too.
        let placed_terms = terms(json!({
            "podAffinity": {"requiredDuringSchedulingIgnoredDuringExecution": [
                {"labelSelector": {"matchLabels": {"app": "web"}}, "topologyKey": "zone"}]},
            "podAntiAffinity": {"preferredDuringSchedulingIgnoredDuringExecution": [{"weight": 7,
                "podAffinityTerm": {"labelSelector": {"matchLabels": {"app": "web"}}, "topologyKey": "kubernetes.io/hostname"}}]}}));
        let placed = [Placed {
            namespace: "d",
            namespaces: None,
            labels: &cache,
            terms: Some(&placed_terms),
            node_labels: Some(&n3.labels),
            node: 0,
            deleting: false,
        }];
        let p = read("d", None, &web, None, placed.iter().copied())
            .score
            .unwrap();
        assert_eq!((p.raw(&n1), p.raw(&n3)), (0, 1 - 7));
        assert!(
            read("d", None, &web, None, std::iter::empty())
                .score
                .is_none()
        );
    }
}
