//! The garbage collector's dependency graph, after kube-controller-manager's `GraphBuilder`:
//! every object (Events aside) by uid, with its owners' uids and, for each uid, the objects
//! that name it as an owner. It is fed by one list of the store and then its watch, and each
//! change says which objects the collector must look at again:
//!
//! - an object whose owner is not in the graph (the owner may be gone: it is checked live);
//! - the dependents of an object that disappeared;
//! - an object being deleted with the `foregroundDeletion` or `orphan` finalizer, and such a
//!   foreground owner again whenever one of its dependents comes, goes or drops it.
//!
//! So the work follows the changes, not the size of the cluster: nothing is scanned.

use std::collections::{HashMap, HashSet};

use serde::Deserialize;
use serde::de::IgnoredAny;

use super::{FOREGROUND, ORPHAN};
use crate::apiserver::resources::ResourceInfo;

/// What the collector keeps of one object.
#[derive(Debug, Clone, PartialEq)]
pub struct Node {
    /// Its resource.
    pub res: &'static ResourceInfo,
    /// Its namespace (none if cluster-scoped).
    pub namespace: Option<String>,
    /// Its name.
    pub name: String,
    /// The uids its `ownerReferences` name.
    pub owners: Vec<String>,
    /// Whether it has a `deletionTimestamp`.
    pub deleting: bool,
    /// Whether it has the `foregroundDeletion` finalizer.
    pub foreground: bool,
    /// Whether it has the `orphan` finalizer.
    pub orphan: bool,
}

impl Node {
    /// Reads the metadata the graph needs from an object's stored bytes, skipping the rest;
    /// returns its uid and node, or `None` for bytes that are not an object with a uid.
    pub fn parse(res: &'static ResourceInfo, bytes: &[u8]) -> Option<(String, Node)> {
        #[derive(Deserialize)]
        struct Object {
            metadata: Meta,
        }
        #[derive(Deserialize)]
        #[serde(rename_all = "camelCase")]
        struct Meta {
            #[serde(default)]
            uid: String,
            #[serde(default)]
            name: String,
            #[serde(default)]
            namespace: Option<String>,
            #[serde(default)]
            deletion_timestamp: Option<IgnoredAny>,
            #[serde(default)]
            finalizers: Option<Vec<String>>,
            #[serde(default)]
            owner_references: Option<Vec<Reference>>,
        }
        #[derive(Deserialize)]
        struct Reference {
            #[serde(default)]
            uid: String,
        }
        let meta = serde_json::from_slice::<Object>(bytes).ok()?.metadata;
        if meta.uid.is_empty() {
            return None;
        }
        let finalizers = meta.finalizers.unwrap_or_default();
        let node = Node {
            res,
            namespace: meta.namespace.filter(|n| !n.is_empty()),
            name: meta.name,
            owners: meta
                .owner_references
                .unwrap_or_default()
                .into_iter()
                .map(|r| r.uid)
                .filter(|u| !u.is_empty())
                .collect(),
            deleting: meta.deletion_timestamp.is_some(),
            foreground: finalizers.iter().any(|f| f == FOREGROUND),
            orphan: finalizers.iter().any(|f| f == ORPHAN),
        };
        Some((meta.uid, node))
    }

    /// Whether it waits, being deleted in the foreground, for its dependents to go.
    fn waits_for_dependents(&self) -> bool {
        self.deleting && self.foreground
    }
}

/// The objects and who owns whom.
#[derive(Debug, Default)]
pub struct Graph {
    nodes: HashMap<String, Node>,
    dependents: HashMap<String, HashSet<String>>,
}

impl Graph {
    /// The object with this uid.
    pub fn node(&self, uid: &str) -> Option<&Node> {
        self.nodes.get(uid)
    }

    /// How many objects the graph holds.
    pub fn len(&self) -> usize {
        self.nodes.len()
    }

    /// Whether the graph holds no object.
    pub fn is_empty(&self) -> bool {
        self.nodes.is_empty()
    }

    /// The uids of the objects in the graph that name `uid` as an owner, sorted.
    pub fn dependents(&self, uid: &str) -> Vec<String> {
        let mut out: Vec<String> = self
            .dependents
            .get(uid)
            .into_iter()
            .flatten()
            .filter(|d| self.nodes.contains_key(*d))
            .cloned()
            .collect();
        out.sort();
        out
    }

    /// Adds or replaces the object `uid`; pushes onto `attend` the uids to look at because of
    /// the change.
    pub fn upsert(&mut self, uid: String, node: Node, attend: &mut Vec<String>) {
        let old_owners = self
            .nodes
            .get(&uid)
            .map(|n| n.owners.clone())
            .unwrap_or_default();
        for gone in old_owners.iter().filter(|o| !node.owners.contains(o)) {
            self.unlink(gone, &uid);
            if self.nodes.get(gone).is_some_and(Node::waits_for_dependents) {
                attend.push(gone.clone());
            }
        }
        for new in node.owners.iter().filter(|o| !old_owners.contains(o)) {
            self.dependents
                .entry(new.clone())
                .or_default()
                .insert(uid.clone());
            if self.nodes.get(new).is_some_and(Node::waits_for_dependents) {
                attend.push(new.clone());
            }
        }
        let finalizing = node.deleting && (node.foreground || node.orphan);
        let unknown_owner = node.owners.iter().any(|o| !self.nodes.contains_key(o));
        if finalizing || unknown_owner {
            attend.push(uid.clone());
        }
        self.nodes.insert(uid, node);
    }

    /// Removes the object `uid` (it is gone from the store); pushes onto `attend` its
    /// dependents and its owners that wait for their dependents to go.
    pub fn remove(&mut self, uid: &str, attend: &mut Vec<String>) {
        if let Some(node) = self.nodes.remove(uid) {
            for owner in &node.owners {
                self.unlink(owner, uid);
                if self
                    .nodes
                    .get(owner)
                    .is_some_and(Node::waits_for_dependents)
                {
                    attend.push(owner.clone());
                }
            }
        }
        if let Some(dependents) = self.dependents.remove(uid) {
            let mut dependents: Vec<String> = dependents
                .into_iter()
                .filter(|d| self.nodes.contains_key(d))
                .collect();
            dependents.sort();
            attend.extend(dependents);
        }
    }

    /// The uids that need a look right after the graph was built from a list: objects being
    /// finalized by the collector and objects with an owner the list did not have.
    pub fn needing_attention(&self) -> Vec<String> {
        let mut out: Vec<String> = self
            .nodes
            .iter()
            .filter(|(_, n)| {
                (n.deleting && (n.foreground || n.orphan))
                    || n.owners.iter().any(|o| !self.nodes.contains_key(o))
            })
            .map(|(uid, _)| uid.clone())
            .collect();
        out.sort();
        out
    }

    fn unlink(&mut self, owner: &str, dependent: &str) {
        if let Some(set) = self.dependents.get_mut(owner) {
            set.remove(dependent);
            if set.is_empty() {
                self.dependents.remove(owner);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::apiserver::resources;
    use serde_json::json;

    fn pods() -> &'static ResourceInfo {
        resources::find("", "v1", "pods").unwrap()
    }

    fn node(owners: &[&str]) -> Node {
        Node {
            res: pods(),
            namespace: Some("default".into()),
            name: "x".into(),
            owners: owners.iter().map(|o| o.to_string()).collect(),
            deleting: false,
            foreground: false,
            orphan: false,
        }
    }

    fn deleting(owners: &[&str], finalizer: &str) -> Node {
        Node {
            deleting: true,
            foreground: finalizer == FOREGROUND,
            orphan: finalizer == ORPHAN,
            ..node(owners)
        }
    }

    fn upsert(g: &mut Graph, uid: &str, n: Node) -> Vec<String> {
        let mut attend = Vec::new();
        g.upsert(uid.into(), n, &mut attend);
        attend
    }

    fn remove(g: &mut Graph, uid: &str) -> Vec<String> {
        let mut attend = Vec::new();
        g.remove(uid, &mut attend);
        attend
    }

    #[test]
    fn parse_reads_only_the_metadata_the_graph_needs() {
        let rs = json!({"metadata": {"name": "web-1", "namespace": "default", "uid": "u1",
            "deletionTimestamp": "2026-12-02T00:00:00Z", "finalizers": ["foregroundDeletion", "x/y"],
            "ownerReferences": [{"apiVersion": "apps/v1", "kind": "Deployment", "name": "web", "uid": "d1"}]},
            "spec": {"replicas": 3}});
        let (uid, n) = Node::parse(pods(), rs.to_string().as_bytes()).unwrap();
        assert_eq!(uid, "u1");
        assert_eq!(n.name, "web-1");
        assert_eq!(n.namespace.as_deref(), Some("default"));
        assert_eq!(n.owners, ["d1"]);
        assert!(n.deleting && n.foreground && !n.orphan);

        let plain = json!({"metadata": {"name": "a", "uid": "u2", "deletionTimestamp": null,
            "ownerReferences": null, "finalizers": null}});
        let (_, n) = Node::parse(pods(), plain.to_string().as_bytes()).unwrap();
        assert!(n.owners.is_empty() && !n.deleting && !n.foreground && n.namespace.is_none());

        assert!(Node::parse(pods(), b"{\"metadata\": {\"name\": \"no-uid\"}}").is_none());
        assert!(Node::parse(pods(), b"not json").is_none());
    }

    #[test]
    fn a_dependent_whose_owner_is_not_known_is_looked_at() {
        let mut g = Graph::default();
        assert_eq!(upsert(&mut g, "pod", node(&["rs"])), ["pod"]);
        assert_eq!(upsert(&mut g, "rs", node(&[])), Vec::<String>::new());
        // Its owner is known now: an update of the dependent needs nothing.
        assert_eq!(upsert(&mut g, "pod", node(&["rs"])), Vec::<String>::new());
        assert_eq!(g.dependents("rs"), ["pod"]);
        assert_eq!(g.needing_attention(), Vec::<String>::new());
    }

    #[test]
    fn an_owner_that_goes_sends_its_dependents_to_be_looked_at() {
        let mut g = Graph::default();
        upsert(&mut g, "rs", node(&[]));
        upsert(&mut g, "a", node(&["rs"]));
        upsert(&mut g, "b", node(&["rs", "other"]));
        assert_eq!(remove(&mut g, "rs"), ["a", "b"]);
        assert!(g.node("rs").is_none());
        assert_eq!(g.dependents("rs"), Vec::<String>::new());
        // A dependent gone meanwhile is not sent.
        upsert(&mut g, "dep", node(&[]));
        upsert(&mut g, "c", node(&["dep"]));
        remove(&mut g, "c");
        assert_eq!(remove(&mut g, "dep"), Vec::<String>::new());
        assert_eq!(g.len(), 2);
    }

    #[test]
    fn a_foreground_owner_is_looked_at_whenever_its_dependents_change() {
        let mut g = Graph::default();
        upsert(&mut g, "rs", node(&[]));
        upsert(&mut g, "a", node(&["rs"]));
        upsert(&mut g, "b", node(&["rs"]));
        // Deletion in the foreground starts.
        assert_eq!(upsert(&mut g, "rs", deleting(&[], FOREGROUND)), ["rs"]);
        // A dependent being deleted changes nothing for the owner yet...
        assert_eq!(
            upsert(&mut g, "a", deleting(&["rs"], "")),
            Vec::<String>::new()
        );
        // ...its removal does, and so does one dropping its reference or a new one appearing.
        assert_eq!(remove(&mut g, "a"), ["rs"]);
        assert_eq!(upsert(&mut g, "b", node(&[])), ["rs"]);
        assert_eq!(upsert(&mut g, "c", node(&["rs"])), ["rs"]);
        assert_eq!(g.dependents("rs"), ["c"]);
        assert_eq!(g.needing_attention(), ["rs"]);
        // An owner deleted in the background waits for nobody.
        upsert(&mut g, "bg", deleting(&[], ""));
        upsert(&mut g, "d", node(&["bg"]));
        assert_eq!(remove(&mut g, "d"), Vec::<String>::new());
    }

    #[test]
    fn an_orphaning_owner_is_looked_at() {
        let mut g = Graph::default();
        upsert(&mut g, "dep", node(&[]));
        upsert(&mut g, "rs", node(&["dep"]));
        assert_eq!(upsert(&mut g, "dep", deleting(&[], ORPHAN)), ["dep"]);
        assert_eq!(g.dependents("dep"), ["rs"]);
    }
}
