//! VolumeBinding: a pod's PersistentVolumeClaims decide where it may go (kube-scheduler's
//! `VolumeBinding` plugin).
//!
//! - Pre-filter: every claim the pod mounts must exist and not be being deleted, and a bound
//!   claim's volume must exist (kube-scheduler's messages).
//! - Filter: a node must match the required node affinity of every bound claim's volume
//!   ("node(s) had volume node affinity conflict"): a `local-path` volume lives on one node.
//! - Unbound claims fit anywhere. Before the pod is bound, its unbound claims get the
//!   `volume.kubernetes.io/selected-node` annotation, which tells the provisioner where to make
//!   the volume (`WaitForFirstConsumer`), and the binding waits until they are bound
//!   ([`super::binder::wait_bound`]).

use std::collections::HashMap;
use std::sync::Arc;

use k8s_openapi::api::core::v1::NodeSelectorTerm;
use serde::Deserialize;

use super::filter::{Unfit, term_matches};
use super::node::NodeSpecInfo;
use super::pod::PodInfo;

/// A claim as scheduling sees it.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Claim {
    /// `spec.volumeName` ("" while unbound).
    pub volume: String,
    /// Being deleted.
    pub deleting: bool,
}

/// Claims by `namespace/name`.
pub type Claims = HashMap<String, Claim>;
/// Volumes by name: their required node affinity terms (ORed), if any.
pub type Volumes = HashMap<String, Option<Arc<[NodeSelectorTerm]>>>;

#[derive(Deserialize, Default)]
#[serde(default, rename_all = "camelCase")]
struct RawClaim {
    metadata: RawMeta,
    spec: RawClaimSpec,
}

#[derive(Deserialize, Default)]
#[serde(default, rename_all = "camelCase")]
struct RawMeta {
    name: String,
    namespace: String,
    deletion_timestamp: Option<String>,
}

#[derive(Deserialize, Default)]
#[serde(default, rename_all = "camelCase")]
struct RawClaimSpec {
    volume_name: Option<String>,
}

/// Reads a claim's key and view from its stored JSON.
pub fn claim_from_slice(bytes: &[u8]) -> Option<(String, Claim)> {
    let raw: RawClaim = serde_json::from_slice(bytes).ok()?;
    Some((
        format!("{}/{}", raw.metadata.namespace, raw.metadata.name),
        Claim {
            volume: raw.spec.volume_name.unwrap_or_default(),
            deleting: raw.metadata.deletion_timestamp.is_some(),
        },
    ))
}

#[derive(Deserialize, Default)]
#[serde(default, rename_all = "camelCase")]
struct RawVolume {
    metadata: RawMeta,
    spec: RawVolumeSpec,
}

#[derive(Deserialize, Default)]
#[serde(default, rename_all = "camelCase")]
struct RawVolumeSpec {
    node_affinity: Option<RawVolumeAffinity>,
}

#[derive(Deserialize, Default)]
#[serde(default, rename_all = "camelCase")]
struct RawVolumeAffinity {
    required: Option<RawNodeSelector>,
}

#[derive(Deserialize, Default)]
#[serde(default, rename_all = "camelCase")]
struct RawNodeSelector {
    node_selector_terms: Vec<NodeSelectorTerm>,
}

/// Reads a volume's name and required node affinity terms from its stored JSON.
pub fn volume_from_slice(bytes: &[u8]) -> Option<(String, Option<Arc<[NodeSelectorTerm]>>)> {
    let raw: RawVolume = serde_json::from_slice(bytes).ok()?;
    let terms = raw
        .spec
        .node_affinity
        .and_then(|a| a.required)
        .map(|s| Arc::from(s.node_selector_terms));
    Some((raw.metadata.name, terms))
}

/// What a pod's claims require of a node: for each bound claim whose volume has required node
/// affinity, its terms (one of which the node must match).
pub type VolumeTerms = Vec<Arc<[NodeSelectorTerm]>>;

/// The pre-filter: what `pod`'s claims require of a node, or why no node can take it.
pub fn read(claims: &Claims, volumes: &Volumes, pod: &PodInfo) -> Result<VolumeTerms, String> {
    let mut terms = Vec::new();
    let mut unbound_to_missing = false;
    for name in pod.claims.iter().flatten() {
        let Some(claim) = claims.get(&format!("{}/{name}", pod.namespace)) else {
            return Err(format!("persistentvolumeclaim \"{name}\" not found"));
        };
        if claim.deleting {
            return Err(format!("persistentvolumeclaim \"{name}\" is being deleted"));
        }
        if claim.volume.is_empty() {
            continue;
        }
        match volumes.get(&claim.volume) {
            None => unbound_to_missing = true,
            Some(Some(t)) => terms.push(t.clone()),
            Some(None) => {}
        }
    }
    if unbound_to_missing {
        return Err("pvc(s) bound to non-existent pv(s)".into());
    }
    Ok(terms)
}

/// The filter: the node matches one term of every bound volume's node affinity.
pub fn check(terms: &VolumeTerms, node_name: &str, node: &NodeSpecInfo) -> Result<(), Unfit> {
    if terms
        .iter()
        .all(|t| t.iter().any(|term| term_matches(term, node_name, node)))
    {
        Ok(())
    } else {
        Err(Unfit::VolumeNodeAffinity)
    }
}

/// The claims of `pod` still unbound: the binder annotates them with the chosen node.
pub fn unbound(claims: &Claims, pod: &PodInfo) -> Vec<String> {
    pod.claims
        .iter()
        .flatten()
        .filter(|name| {
            claims
                .get(&format!("{}/{name}", pod.namespace))
                .is_some_and(|c| c.volume.is_empty())
        })
        .cloned()
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn pod(claims: &[&str]) -> PodInfo {
        PodInfo {
            namespace: "ns".into(),
            claims: Some(claims.iter().map(|c| c.to_string()).collect()),
            ..Default::default()
        }
    }

    fn local_volume(node: &str) -> Option<Arc<[NodeSelectorTerm]>> {
        let bytes = serde_json::to_vec(&json!({"metadata": {"name": "pv"}, "spec": {"nodeAffinity": {"required": {"nodeSelectorTerms": [
            {"matchExpressions": [{"key": "kubernetes.io/hostname", "operator": "In", "values": [node]}]}
        ]}}}}))
        .unwrap();
        volume_from_slice(&bytes).unwrap().1
    }

    fn node(host: &str) -> NodeSpecInfo {
        NodeSpecInfo {
            labels: [("kubernetes.io/hostname".to_string(), host.to_string())].into(),
            ..Default::default()
        }
    }

    #[test]
    fn claims_must_exist_and_bound_ones_keep_the_pod_on_their_volumes_node() {
        let mut claims = Claims::new();
        let mut volumes = Volumes::new();
        assert_eq!(
            read(&claims, &volumes, &pod(&["data"])),
            Err("persistentvolumeclaim \"data\" not found".into())
        );
        claims.insert("ns/data".into(), Claim::default());
        let terms = read(&claims, &volumes, &pod(&["data"])).unwrap();
        assert!(terms.is_empty(), "an unbound claim fits anywhere");
        assert_eq!(unbound(&claims, &pod(&["data"])), ["data"]);
        claims.insert(
            "ns/data".into(),
            Claim {
                volume: "pv".into(),
                deleting: false,
            },
        );
        assert_eq!(
            read(&claims, &volumes, &pod(&["data"])),
            Err("pvc(s) bound to non-existent pv(s)".into())
        );
        volumes.insert("pv".into(), local_volume("n1"));
        let terms = read(&claims, &volumes, &pod(&["data"])).unwrap();
        assert_eq!(check(&terms, "n1", &node("n1")), Ok(()));
        assert_eq!(
            check(&terms, "n2", &node("n2")),
            Err(Unfit::VolumeNodeAffinity)
        );
        assert!(unbound(&claims, &pod(&["data"])).is_empty());
        claims.get_mut("ns/data").unwrap().deleting = true;
        assert!(read(&claims, &volumes, &pod(&["data"])).is_err());
    }

    #[test]
    fn claims_are_read_from_their_json() {
        let bytes = serde_json::to_vec(
            &json!({"metadata": {"name": "d", "namespace": "ns"}, "spec": {"volumeName": "pv-1"}}),
        )
        .unwrap();
        assert_eq!(
            claim_from_slice(&bytes),
            Some((
                "ns/d".into(),
                Claim {
                    volume: "pv-1".into(),
                    deleting: false
                }
            ))
        );
    }
}
