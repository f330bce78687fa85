//! The persistent-volume controller (Kubernetes' PV binder, with Flotilla's `local-path`
//! provisioner): binds each PersistentVolumeClaim to a PersistentVolume, and provisions one
//! when none fits.
//!
//! - **Binding.** A pending claim takes the smallest `Available` volume of its class whose
//!   access modes include the claim's, whose volume mode matches and whose capacity covers the
//!   request (or the volume its `spec.volumeName` names, or one pre-bound to it). The volume
//!   gets the claim in `spec.claimRef` and turns `Bound`; then the claim gets
//!   `spec.volumeName` and turns `Bound`, with the volume's capacity and access modes.
//! - **Provisioning.** For a class whose provisioner is [`LOCAL_PATH_PROVISIONER`], with
//!   `volumeBindingMode: WaitForFirstConsumer`, the volume is made once the scheduler has
//!   picked the node of the claim's first pod (`volume.kubernetes.io/selected-node`): a CSI
//!   volume of that driver, named `pvc-<claim uid>`, tied to that node by its node affinity,
//!   which the node agent makes a directory of. Other provisioners are left to run outside,
//!   as in Kubernetes.
//! - **Reclaiming.** When its claim is gone, a volume with `persistentVolumeReclaimPolicy:
//!   Delete` is deleted and one with `Retain` turns `Released`. A new volume without a claim
//!   turns `Available`.
//!
//! - **Protection.** A claim being deleted keeps its `kubernetes.io/pvc-protection` finalizer
//!   while a pod that has not finished mounts it, so its volume is not reclaimed under a
//!   running pod; a volume being deleted keeps `kubernetes.io/pv-protection` while a claim is
//!   bound to it.
//!
//! Keys with a namespace are claims; keys without one are volumes.

use std::sync::Arc;
use std::time::Duration;

use serde_json::{Value, json};
use tokio_util::sync::CancellationToken;

use super::finalizers;
use super::owner;
use super::pod_cache::PodCache;
use super::pods;
use super::runner::{self, ObjectKey, Reconciler, RunnerConfig, Watched};
use crate::apiserver::api::{Api, DeleteOptions, ListParams, WriteOptions};
use crate::apiserver::error::ApiResult;
use crate::apiserver::objects;
use crate::apiserver::resources::{self, ResourceInfo, Subresource};
use crate::apiserver::storage_class::{
    CLAIM_PROTECTION_FINALIZER, LOCAL_PATH_PROVISIONER, VOLUME_PROTECTION_FINALIZER,
    storage_classes,
};
use crate::events::{EventRecorder, EventWriter};
use crate::scheduler::quantity::Quantity;

/// The annotation with the node the scheduler picked for a claim's first pod.
pub const SELECTED_NODE_ANNOTATION: &str = "volume.kubernetes.io/selected-node";
/// The annotation naming the provisioner that made a volume.
pub const PROVISIONED_BY_ANNOTATION: &str = "pv.kubernetes.io/provisioned-by";

/// The `persistentvolumeclaims` resource.
pub fn claims() -> &'static ResourceInfo {
    resources::find("", "v1", "persistentvolumeclaims").expect("persistentvolumeclaims served")
}

/// The `persistentvolumes` resource.
pub fn volumes() -> &'static ResourceInfo {
    resources::find("", "v1", "persistentvolumes").expect("persistentvolumes served")
}

fn storage_bytes(v: &Value) -> i64 {
    v.as_str()
        .and_then(|s| Quantity::parse(s).ok())
        .map_or(0, |q| q.value())
}

fn strings(v: &Value) -> Vec<&str> {
    v.as_array()
        .into_iter()
        .flatten()
        .filter_map(Value::as_str)
        .collect()
}

/// The claim's class name ("" for none).
fn class_of(obj: &Value) -> &str {
    obj["spec"]["storageClassName"].as_str().unwrap_or("")
}

/// Whether `volume` can serve `claim`: free (or pre-bound to it), same class and volume mode,
/// the claim's access modes among its own, and room for the request.
pub fn fits(claim: &Value, volume: &Value) -> bool {
    let claim_ref = &volume["spec"]["claimRef"];
    let free = claim_ref.is_null()
        || (claim_ref["name"] == claim["metadata"]["name"]
            && claim_ref["namespace"] == claim["metadata"]["namespace"]
            && (claim_ref["uid"].is_null() || claim_ref["uid"] == claim["metadata"]["uid"]));
    let mode = |o: &Value| {
        o["spec"]["volumeMode"]
            .as_str()
            .unwrap_or("Filesystem")
            .to_string()
    };
    let offered = strings(&volume["spec"]["accessModes"]);
    free && !objects::is_deleting(volume)
        && volume["status"]["phase"] != "Released"
        && volume["status"]["phase"] != "Failed"
        && class_of(claim) == class_of(volume)
        && mode(claim) == mode(volume)
        && strings(&claim["spec"]["accessModes"])
            .iter()
            .all(|m| offered.contains(m))
        && storage_bytes(&volume["spec"]["capacity"]["storage"])
            >= storage_bytes(&claim["spec"]["resources"]["requests"]["storage"])
}

/// The volume `claim` binds to: the one it names, else one pre-bound to it, else the smallest
/// that fits.
pub fn find_volume<'a>(claim: &Value, volumes: &'a [Value]) -> Option<&'a Value> {
    if let Some(name) = claim["spec"]["volumeName"]
        .as_str()
        .filter(|n| !n.is_empty())
    {
        return volumes
            .iter()
            .find(|v| objects::name(v) == name)
            .filter(|v| fits(claim, v));
    }
    let candidates = volumes.iter().filter(|v| fits(claim, v));
    let pre_bound = |v: &&Value| !v["spec"]["claimRef"].is_null();
    candidates
        .clone()
        .find(pre_bound)
        .or_else(|| candidates.min_by_key(|v| storage_bytes(&v["spec"]["capacity"]["storage"])))
}

/// The volume the local-path provisioner makes for `claim` on `node`.
pub fn local_volume(claim: &Value, class: &Value, node: &str) -> Value {
    let name = format!("pvc-{}", claim["metadata"]["uid"].as_str().unwrap_or(""));
    json!({
        "apiVersion": "v1", "kind": "PersistentVolume",
        "metadata": {
            "name": name,
            "annotations": {PROVISIONED_BY_ANNOTATION: LOCAL_PATH_PROVISIONER},
        },
        "spec": {
            "capacity": {"storage": claim["spec"]["resources"]["requests"]["storage"]},
            "accessModes": claim["spec"]["accessModes"],
            "volumeMode": claim["spec"]["volumeMode"],
            "storageClassName": class_of(claim),
            "persistentVolumeReclaimPolicy": class["reclaimPolicy"].as_str().unwrap_or("Delete"),
            "claimRef": claim_ref(claim),
            "csi": {"driver": LOCAL_PATH_PROVISIONER, "volumeHandle": name},
            "nodeAffinity": {"required": {"nodeSelectorTerms": [{"matchExpressions": [
                {"key": "kubernetes.io/hostname", "operator": "In", "values": [node]}
            ]}]}},
        },
    })
}

/// The claims a pod mounts.
pub fn mounts(pod: &Value) -> Vec<&str> {
    pod["spec"]["volumes"]
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(|v| v["persistentVolumeClaim"]["claimName"].as_str())
        .collect()
}

fn claim_ref(claim: &Value) -> Value {
    json!({
        "kind": "PersistentVolumeClaim", "apiVersion": "v1",
        "namespace": claim["metadata"]["namespace"], "name": claim["metadata"]["name"],
        "uid": claim["metadata"]["uid"], "resourceVersion": claim["metadata"]["resourceVersion"],
    })
}

/// The reconciler.
pub struct PersistentVolumeController {
    api: Api,
    events: EventRecorder,
}

impl PersistentVolumeController {
    /// A controller writing through `api`, and the event writer to run beside it.
    pub fn new(api: Api) -> (Self, EventWriter) {
        let (events, writer) = EventRecorder::new(api.clone(), "persistentvolume-controller");
        (PersistentVolumeController { api, events }, writer)
    }

    async fn write(
        &self,
        res: &ResourceInfo,
        obj: Value,
        sub: Option<Subresource>,
    ) -> ApiResult<Value> {
        let ns = objects::namespace(&obj).map(String::from);
        let name = objects::name(&obj).to_string();
        Ok(self
            .api
            .update(
                res,
                ns.as_deref(),
                &name,
                obj,
                sub,
                &WriteOptions::default(),
            )
            .await?
            .0)
    }

    async fn sync_claim(&self, key: &ObjectKey) -> ApiResult<Option<Duration>> {
        let (all, _, _) = self
            .api
            .list(volumes(), None, &ListParams::default())
            .await?;
        let claim = runner::get_object(&self.api, claims(), key).await?;
        // Volumes whose claim is gone (or was made again) are reclaimed.
        for v in all.iter().filter(|v| {
            let r = &v["spec"]["claimRef"];
            r["namespace"].as_str() == key.namespace.as_deref()
                && r["name"] == key.name.as_str()
                && claim
                    .as_ref()
                    .is_none_or(|c| !r["uid"].is_null() && r["uid"] != c["metadata"]["uid"])
        }) {
            self.reclaim(v).await?;
        }
        let Some(claim) = claim else { return Ok(None) };
        if objects::is_deleting(&claim) {
            return self.release_protection(&claim).await;
        }
        let bound_to = claim["spec"]["volumeName"].as_str().unwrap_or("");
        if !bound_to.is_empty() {
            if let Some(v) = all.iter().find(|v| objects::name(v) == bound_to)
                && v["spec"]["claimRef"]["uid"] == claim["metadata"]["uid"]
            {
                self.finish_binding(&claim, v).await?;
                return Ok(None);
            }
            if all.iter().all(|v| objects::name(v) != bound_to) {
                if claim["status"]["phase"] == "Bound" {
                    // Its volume was deleted under it.
                    self.events.warning(
                        owner::object_reference(&claim),
                        "ClaimLost",
                        "Bound claim has lost its PersistentVolume. Data on the volume is lost!",
                    );
                    let mut c = claim.clone();
                    c["status"] = json!({"phase": "Lost"});
                    self.write(claims(), c, Some(Subresource::Status)).await?;
                }
                return Ok(None);
            }
        }
        if let Some(v) = find_volume(&claim, &all) {
            self.bind(&claim, v).await?;
            return Ok(None);
        }
        self.provision(&claim).await
    }

    /// Removes a deleted claim's protection finalizer once no unfinished pod mounts it.
    async fn release_protection(&self, claim: &Value) -> ApiResult<Option<Duration>> {
        if !finalizers::has(claim, CLAIM_PROTECTION_FINALIZER) {
            return Ok(None);
        }
        let ns = objects::namespace(claim).unwrap_or("default");
        let name = objects::name(claim);
        let in_use = pods::list(&self.api, ns)
            .await?
            .iter()
            .any(|p| !pods::is_terminal(p) && mounts(p).contains(&name));
        if !in_use {
            finalizers::remove(&self.api, claims(), claim, CLAIM_PROTECTION_FINALIZER).await?;
        }
        Ok(None)
    }

    /// Removes a deleted volume's protection finalizer once no claim is bound to it.
    async fn release_volume_protection(&self, volume: &Value) -> ApiResult<Option<Duration>> {
        if !finalizers::has(volume, VOLUME_PROTECTION_FINALIZER) {
            return Ok(None);
        }
        let r = &volume["spec"]["claimRef"];
        if let (Some(ns), Some(name)) = (r["namespace"].as_str(), r["name"].as_str()) {
            match self.api.get(claims(), Some(ns), name).await {
                Ok(c)
                    if c["metadata"]["uid"] == r["uid"]
                        && c["spec"]["volumeName"] == objects::name(volume) =>
                {
                    // Still bound: kept until its claim lets go.
                    return Ok(None);
                }
                Ok(_) => {}
                Err(e) if e.code == 404 => {}
                Err(e) => return Err(e),
            }
        }
        finalizers::remove(&self.api, volumes(), volume, VOLUME_PROTECTION_FINALIZER).await?;
        Ok(None)
    }

    /// Makes a volume for `claim`, or says why not.
    async fn provision(&self, claim: &Value) -> ApiResult<Option<Duration>> {
        let reference = owner::object_reference(claim);
        let class_name = class_of(claim);
        if class_name.is_empty() {
            self.events.normal(
                reference,
                "FailedBinding",
                "no persistent volumes available for this claim and no storage class is set",
            );
            return Ok(None);
        }
        let class = match self.api.get(storage_classes(), None, class_name).await {
            Ok(c) => c,
            Err(e) if e.code == 404 => {
                self.events.warning(
                    reference,
                    "ProvisioningFailed",
                    format!("storageclass.storage.k8s.io \"{class_name}\" not found"),
                );
                return Ok(Some(Duration::from_secs(10)));
            }
            Err(e) => return Err(e),
        };
        let provisioner = class["provisioner"].as_str().unwrap_or("");
        if provisioner != LOCAL_PATH_PROVISIONER {
            self.events.normal(
                reference,
                "ExternalProvisioning",
                format!(
                    "Waiting for a volume to be created either by the external provisioner \
                     '{provisioner}' or manually by the system administrator. If volume \
                     creation is delayed, please verify that the provisioner is running and \
                     correctly registered."
                ),
            );
            return Ok(None);
        }
        if class["volumeBindingMode"] != "WaitForFirstConsumer" {
            self.events.warning(
                reference,
                "ProvisioningFailed",
                format!(
                    "{LOCAL_PATH_PROVISIONER} makes a directory on one node, so its class needs \
                     volumeBindingMode: WaitForFirstConsumer"
                ),
            );
            return Ok(None);
        }
        let Some(node) = claim["metadata"]["annotations"][SELECTED_NODE_ANNOTATION].as_str() else {
            self.events.normal(
                reference,
                "WaitForFirstConsumer",
                "waiting for first consumer to be created before binding",
            );
            return Ok(None);
        };
        let volume = local_volume(claim, &class, node);
        let name = objects::name(&volume).to_string();
        let made = match self
            .api
            .create(volumes(), None, volume, &WriteOptions::default())
            .await
        {
            Ok((v, _)) => v,
            // Made by an earlier pass: bind it.
            Err(e) if e.code == 409 => self.api.get(volumes(), None, &name).await?,
            Err(e) => return Err(e),
        };
        self.events.normal(
            reference,
            "ProvisioningSucceeded",
            format!(
                "Successfully provisioned volume {name} on node {node} using {LOCAL_PATH_PROVISIONER}"
            ),
        );
        self.bind(claim, &made).await?;
        Ok(None)
    }

    /// Binds the volume to the claim, then the claim to the volume.
    async fn bind(&self, claim: &Value, volume: &Value) -> ApiResult<()> {
        let mut v = volume.clone();
        if v["spec"]["claimRef"]["uid"] != claim["metadata"]["uid"] {
            v["spec"]["claimRef"] = claim_ref(claim);
            v["metadata"]["annotations"]["pv.kubernetes.io/bound-by-controller"] = json!("yes");
            v = self.write(volumes(), v, None).await?;
        }
        self.finish_binding(claim, &v).await
    }

    /// With the volume naming the claim: the volume's status, the claim's `volumeName` and its
    /// status.
    async fn finish_binding(&self, claim: &Value, volume: &Value) -> ApiResult<()> {
        if volume["status"]["phase"] != "Bound" {
            let mut v = volume.clone();
            v["status"] = json!({"phase": "Bound"});
            self.write(volumes(), v, Some(Subresource::Status)).await?;
        }
        let mut c = claim.clone();
        let name = objects::name(volume);
        if c["spec"]["volumeName"] != name {
            c["spec"]["volumeName"] = json!(name);
            let ann = &mut c["metadata"]["annotations"];
            if !ann.is_object() {
                *ann = json!({});
            }
            ann["pv.kubernetes.io/bind-completed"] = json!("yes");
            ann["pv.kubernetes.io/bound-by-controller"] = json!("yes");
            c = self.write(claims(), c, None).await?;
        }
        let status = json!({
            "phase": "Bound",
            "accessModes": volume["spec"]["accessModes"],
            "capacity": volume["spec"]["capacity"],
        });
        if c["status"] != status {
            c["status"] = status;
            self.write(claims(), c, Some(Subresource::Status)).await?;
            self.events.normal(
                owner::object_reference(claim),
                "Bound",
                format!("Bound to volume {name}"),
            );
        }
        Ok(())
    }

    /// A volume whose claim is gone: deleted, or `Released`.
    async fn reclaim(&self, volume: &Value) -> ApiResult<()> {
        if objects::is_deleting(volume) {
            // Deleted while bound: its claim has let go now.
            return self.release_volume_protection(volume).await.map(|_| ());
        }
        if volume["spec"]["persistentVolumeReclaimPolicy"] == "Delete" {
            let opts = DeleteOptions {
                precondition_uid: Some(owner::uid(volume).to_string()),
                ..Default::default()
            };
            return match self
                .api
                .delete(volumes(), None, objects::name(volume), &opts)
                .await
            {
                Ok(_) => Ok(()),
                Err(e) if e.code == 404 || e.code == 409 => Ok(()),
                Err(e) => Err(e),
            };
        }
        if volume["status"]["phase"] != "Released" {
            let mut v = volume.clone();
            v["status"] = json!({"phase": "Released"});
            self.write(volumes(), v, Some(Subresource::Status)).await?;
        }
        Ok(())
    }

    async fn sync_volume(&self, name: &str) -> ApiResult<Option<Duration>> {
        let key = ObjectKey {
            namespace: None,
            name: name.to_string(),
        };
        let Some(volume) = runner::get_object(&self.api, volumes(), &key).await? else {
            return Ok(None);
        };
        if objects::is_deleting(&volume) {
            return self.release_volume_protection(&volume).await;
        }
        let claim_ref = &volume["spec"]["claimRef"];
        if claim_ref.is_null() {
            if volume["status"]["phase"] != "Available" {
                let mut v = volume.clone();
                v["status"] = json!({"phase": "Available"});
                self.write(volumes(), v, Some(Subresource::Status)).await?;
            }
            return Ok(None);
        }
        // Bound or pre-bound: the claim's sync decides.
        let claim_key = ObjectKey {
            namespace: claim_ref["namespace"].as_str().map(String::from),
            name: claim_ref["name"].as_str().unwrap_or("").to_string(),
        };
        if claim_key.namespace.is_none() || claim_key.name.is_empty() {
            return Ok(None);
        }
        self.sync_claim(&claim_key).await
    }
}

impl Reconciler for PersistentVolumeController {
    async fn reconcile(&self, key: &ObjectKey) -> ApiResult<Option<Duration>> {
        if key.namespace.is_none() {
            return self.sync_volume(&key.name).await;
        }
        runner::sync_each(&self.api, claims(), key, |k| async move {
            self.sync_claim(&k).await
        })
        .await
    }
}

/// Runs the controller until `shutdown`.
pub async fn run(api: Api, pods: PodCache, shutdown: CancellationToken) {
    let (controller, writer) = PersistentVolumeController::new(api.clone());
    let events = tokio::spawn(writer.run(shutdown.clone()));
    let watched = vec![
        Watched::primary(claims()),
        // Volumes are keyed without a namespace.
        Watched::primary(volumes()),
        // A pod that stops or goes may release a deleted claim it mounted.
        Watched::with_map(pods::pods(), |p| {
            mounts(p)
                .into_iter()
                .map(|c| ObjectKey {
                    namespace: objects::namespace(p).map(String::from),
                    name: c.to_string(),
                })
                .collect()
        })
        .from_cache(&pods, |_| {}),
    ];
    let config = RunnerConfig {
        name: "persistentvolume",
        workers: 1,
        resync: Duration::from_secs(15),
        batch: Duration::ZERO,
    };
    runner::run(api, watched, Arc::new(controller), config, shutdown).await;
    let _ = events.await;
}

#[cfg(test)]
mod tests {
    use super::*;

    fn claim(modes: &[&str], size: &str) -> Value {
        json!({"metadata": {"name": "data", "namespace": "ns", "uid": "c1"},
               "spec": {"accessModes": modes, "resources": {"requests": {"storage": size}},
                        "storageClassName": "slow"}})
    }

    fn volume(name: &str, modes: &[&str], size: &str) -> Value {
        json!({"metadata": {"name": name},
               "spec": {"accessModes": modes, "capacity": {"storage": size}, "storageClassName": "slow"},
               "status": {"phase": "Available"}})
    }

    #[test]
    fn a_claim_takes_the_smallest_volume_that_fits() {
        let c = claim(&["ReadWriteOnce"], "1Gi");
        let vs = [
            volume("big", &["ReadWriteOnce"], "10Gi"),
            volume("small", &["ReadWriteOnce", "ReadOnlyMany"], "2Gi"),
            volume("tiny", &["ReadWriteOnce"], "512Mi"),
            volume("ro", &["ReadOnlyMany"], "1Gi"),
        ];
        assert_eq!(find_volume(&c, &vs).map(objects::name), Some("small"));
        // Another class, or a volume bound elsewhere, does not fit.
        let mut other = volume("other", &["ReadWriteOnce"], "1Gi");
        other["spec"]["storageClassName"] = json!("fast");
        let mut taken = volume("taken", &["ReadWriteOnce"], "1Gi");
        taken["spec"]["claimRef"] = json!({"namespace": "ns", "name": "else", "uid": "x"});
        assert!(find_volume(&c, &[other, taken]).is_none());
    }

    #[test]
    fn a_named_or_pre_bound_volume_comes_first() {
        let mut c = claim(&["ReadWriteOnce"], "1Gi");
        let mut pre = volume("pre", &["ReadWriteOnce"], "5Gi");
        pre["spec"]["claimRef"] = json!({"namespace": "ns", "name": "data"});
        let vs = [volume("small", &["ReadWriteOnce"], "1Gi"), pre];
        assert_eq!(find_volume(&c, &vs).map(objects::name), Some("pre"));
        c["spec"]["volumeName"] = json!("small");
        assert_eq!(find_volume(&c, &vs).map(objects::name), Some("small"));
        c["spec"]["volumeName"] = json!("missing");
        assert!(find_volume(&c, &vs).is_none());
    }

    #[test]
    fn a_local_volume_lives_on_the_selected_node() {
        let mut c = claim(&["ReadWriteOnce"], "1Gi");
        c["spec"]["volumeMode"] = json!("Filesystem");
        let v = local_volume(&c, &json!({"reclaimPolicy": "Delete"}), "n1");
        assert_eq!(v["metadata"]["name"], "pvc-c1");
        assert_eq!(v["spec"]["csi"]["driver"], LOCAL_PATH_PROVISIONER);
        assert_eq!(v["spec"]["claimRef"]["uid"], "c1");
        assert_eq!(
            v["spec"]["nodeAffinity"]["required"]["nodeSelectorTerms"][0]["matchExpressions"][0]["values"],
            json!(["n1"])
        );
        assert!(fits(&c, &v), "it fits the claim it was made for");
    }
}
