//! The scheduler's watches: list then watch pods, nodes, RuntimeClasses and
//! PodDisruptionBudgets in-process, decode
//! each change into an [`Update`] and send it to the scheduling loop.
//!
//! Each informer is its own task, so decoding (the bulk of the work at tens of thousands of pod
//! events per second) runs beside the scheduling loop rather than in it, and a watch is read
//! as fast as events come, never falling behind the store's broadcast. After a (re)list the
//! informer sends a [`Update::Synced`] with every name it listed, so the loop can drop what
//! disappeared while the watch was down.

use std::collections::BTreeMap;
use std::time::Duration;

use k8s_openapi::api::core::v1::{Namespace, Node};
use k8s_openapi::api::node::v1::RuntimeClass;
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;

use super::pod::{PodInfo, PodKey};
use super::snapshot::Budget;
use crate::apiserver::api::Api;
use crate::apiserver::resources::{self, ResourceInfo};
use crate::store::{EventType, ListOptions, Revision};

/// Which kind an informer follows.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Kind {
    /// `pods`, all namespaces.
    Pods,
    /// `nodes`.
    Nodes,
    /// `runtimeclasses.node.k8s.io`.
    RuntimeClasses,
    /// `poddisruptionbudgets.policy`, which preemption weighs.
    Budgets,
    /// `namespaces`, whose labels inter-pod terms' `namespaceSelector` selects by.
    Namespaces,
    /// `persistentvolumeclaims`, all namespaces: the claims pods mount.
    Claims,
    /// `persistentvolumes`: where bound claims' volumes are.
    Volumes,
}

impl Kind {
    fn resource(self) -> &'static ResourceInfo {
        let found = match self {
            Kind::Pods => resources::find("", "v1", "pods"),
            Kind::Nodes => resources::find("", "v1", "nodes"),
            Kind::RuntimeClasses => resources::find("node.k8s.io", "v1", "runtimeclasses"),
            Kind::Budgets => resources::find("policy", "v1", "poddisruptionbudgets"),
            Kind::Namespaces => resources::find("", "v1", "namespaces"),
            Kind::Claims => resources::find("", "v1", "persistentvolumeclaims"),
            Kind::Volumes => resources::find("", "v1", "persistentvolumes"),
        };
        found.expect("served")
    }
}

/// One change, decoded.
#[derive(Debug)]
pub enum Update {
    /// A pod was added or changed.
    Pod(Box<PodInfo>),
    /// A pod is gone.
    PodDeleted(PodKey),
    /// A node was added or changed.
    Node(Box<Node>),
    /// A node is gone.
    NodeDeleted(String),
    /// A RuntimeClass was added or changed.
    RuntimeClass {
        /// Its name.
        name: String,
        /// Its handler.
        handler: String,
    },
    /// A RuntimeClass is gone.
    RuntimeClassDeleted(String),
    /// A PodDisruptionBudget was added or changed.
    Budget(Box<Budget>),
    /// A PodDisruptionBudget is gone (`namespace/name`).
    BudgetDeleted(String),
    /// A namespace was added or its labels changed.
    Namespace {
        /// Its name.
        name: String,
        /// Its labels.
        labels: BTreeMap<String, String>,
    },
    /// A namespace is gone.
    NamespaceDeleted(String),
    /// A claim was added or changed (`namespace/name`).
    Claim(String, super::volume_binding::Claim),
    /// A claim is gone.
    ClaimDeleted(String),
    /// A volume was added or changed: its name and required node affinity terms.
    Volume(
        String,
        Option<std::sync::Arc<[k8s_openapi::api::core::v1::NodeSelectorTerm]>>,
    ),
    /// A volume is gone.
    VolumeDeleted(String),
    /// A list of `kind` completed; `names` is everything that exists (pod keys for pods).
    Synced {
        /// The kind listed.
        kind: Kind,
        /// Every name (or pod key) listed.
        names: Vec<String>,
    },
}

fn decode(kind: Kind, event_type: EventType, bytes: &[u8], revision: Revision) -> Option<Update> {
    let deleted = event_type == EventType::Deleted;
    match kind {
        Kind::Pods => {
            let pod = PodInfo::from_slice(bytes, revision).ok()?;
            Some(if deleted {
                Update::PodDeleted(pod.key())
            } else {
                Update::Pod(Box::new(pod))
            })
        }
        Kind::Nodes => {
            let node: Node = serde_json::from_slice(bytes).ok()?;
            let name = node.metadata.name.clone()?;
            Some(if deleted {
                Update::NodeDeleted(name)
            } else {
                Update::Node(Box::new(node))
            })
        }
        Kind::Budgets => {
            let budget = Budget::from_slice(bytes)?;
            Some(if deleted {
                Update::BudgetDeleted(budget.key)
            } else {
                Update::Budget(Box::new(budget))
            })
        }
        Kind::RuntimeClasses => {
            let rc: RuntimeClass = serde_json::from_slice(bytes).ok()?;
            let name = rc.metadata.name.clone()?;
            Some(if deleted {
                Update::RuntimeClassDeleted(name)
            } else {
                Update::RuntimeClass {
                    name,
                    handler: rc.handler,
                }
            })
        }
        Kind::Claims => {
            let (key, claim) = super::volume_binding::claim_from_slice(bytes)?;
            Some(if deleted {
                Update::ClaimDeleted(key)
            } else {
                Update::Claim(key, claim)
            })
        }
        Kind::Volumes => {
            let (name, terms) = super::volume_binding::volume_from_slice(bytes)?;
            Some(if deleted {
                Update::VolumeDeleted(name)
            } else {
                Update::Volume(name, terms)
            })
        }
        Kind::Namespaces => {
            let ns: Namespace = serde_json::from_slice(bytes).ok()?;
            let name = ns.metadata.name?;
            Some(if deleted {
                Update::NamespaceDeleted(name)
            } else {
                Update::Namespace {
                    name,
                    labels: ns.metadata.labels.unwrap_or_default(),
                }
            })
        }
    }
}

fn name_of(update: &Update) -> Option<String> {
    match update {
        Update::Pod(p) => Some(p.key()),
        Update::Budget(b) => Some(b.key.clone()),
        Update::Node(n) => n.metadata.name.clone(),
        Update::RuntimeClass { name, .. } | Update::Namespace { name, .. } => Some(name.clone()),
        Update::Claim(key, _) => Some(key.clone()),
        Update::Volume(name, _) => Some(name.clone()),
        _ => None,
    }
}

/// Follows `kind` until `shutdown` or until the receiver is gone: list, send everything and a
/// [`Update::Synced`], then send each watch event; re-list when the watch breaks.
pub async fn run(
    api: Api,
    kind: Kind,
    tx: mpsc::UnboundedSender<Update>,
    shutdown: CancellationToken,
) {
    let res = kind.resource();
    let prefix = res.namespace_prefix(None);
    loop {
        if shutdown.is_cancelled() {
            return;
        }
        let listed = match api.store().list(&prefix, ListOptions::default()).await {
            Ok(l) => l,
            Err(e) => {
                tracing::warn!(error = %e, ?kind, "scheduler: list failed");
                tokio::select! {
                    _ = shutdown.cancelled() => return,
                    _ = tokio::time::sleep(Duration::from_secs(1)) => continue,
                }
            }
        };
        let mut names = Vec::with_capacity(listed.entries.len());
        for entry in &listed.entries {
            if let Some(u) = decode(kind, EventType::Added, &entry.value, entry.mod_revision) {
                names.extend(name_of(&u));
                if tx.send(u).is_err() {
                    return;
                }
            }
        }
        if tx.send(Update::Synced { kind, names }).is_err() {
            return;
        }
        let mut watch = match api.watch(res, None, listed.revision) {
            Ok(w) => w,
            Err(e) => {
                tracing::debug!(error = %e, ?kind, "scheduler: watch failed; re-listing");
                continue;
            }
        };
        loop {
            let event = tokio::select! {
                _ = shutdown.cancelled() => return,
                e = watch.next() => e,
            };
            match event {
                Some(Ok(e)) => {
                    if let Some(u) = decode(kind, e.event_type, &e.value, e.revision)
                        && tx.send(u).is_err()
                    {
                        return;
                    }
                }
                Some(Err(e)) => {
                    tracing::info!(error = %e, ?kind, "scheduler: watch fell behind; re-listing");
                    break;
                }
                None => return,
            }
        }
    }
}
