//! The StatefulSet controller: pods with a stable identity, `<set>-<ordinal>`, made, replaced
//! and removed in order (Kubernetes' `StatefulSetControl`).
//!
//! - **Identity.** Pod `<set>-<n>` for each ordinal `n` of `[start, start + replicas)`
//!   (`spec.ordinals.start`, default 0), with the labels `statefulset.kubernetes.io/pod-name`
//!   and `apps.kubernetes.io/pod-index`, the host name `<set>-<n>` and the subdomain
//!   `spec.serviceName`.
//! - **`OrderedReady`** (the default): a pod is made only once every lower ordinal is Running
//!   and Ready (and available for `minReadySeconds`); on scale-down the highest ordinal goes
//!   first, one at a time, and only while the others are healthy. **`Parallel`** makes and
//!   removes them all at once.
//! - **Revisions.** Every template is a `ControllerRevision` ([`controller_history`]), and pods
//!   carry its name in `controller-revision-hash`. `RollingUpdate` replaces the pods from the
//!   highest ordinal down to `partition`, one at a time, each once the one above it is healthy
//!   again; pods below the partition are remade from the current revision. `OnDelete` only
//!   makes the pods the user deletes anew. `status.currentRevision` becomes the update
//!   revision once every pod runs it and is ready.
//! - Finished (Succeeded or Failed) pods are deleted and made again.

use std::collections::{BTreeMap, HashSet};
use std::sync::Arc;
use std::time::Duration;

use serde_json::{Value, json};
use tokio_util::sync::CancellationToken;

use super::controller_history;
use super::owner;
use super::persistent_volume;
use super::pod_cache::PodCache;
use super::pods;
use super::replicaset::write_status;
use super::runner::{self, ObjectKey, Reconciler, RunnerConfig, Watched};
use crate::apiserver::api::{Api, ListParams, WriteOptions};
use crate::apiserver::error::ApiResult;
use crate::apiserver::objects;
use crate::apiserver::resources::{self, ResourceInfo};
use crate::events::{EventRecorder, EventWriter};

pub use super::controller_history::REVISION_HASH_LABEL;

/// The label with a StatefulSet pod's name (what a per-pod Service selects).
pub const POD_NAME_LABEL: &str = "statefulset.kubernetes.io/pod-name";
/// The label with a StatefulSet pod's ordinal.
pub const POD_INDEX_LABEL: &str = "apps.kubernetes.io/pod-index";

/// The `statefulsets` resource.
pub fn statefulsets() -> &'static ResourceInfo {
    resources::find("apps", "v1", "statefulsets").expect("statefulsets served")
}

/// The ordinal of the pod `pod_name` in the StatefulSet `set_name`: the name is
/// `<set_name>-<digits>` (Kubernetes' `getParentNameAndOrdinal`).
pub fn ordinal_of(set_name: &str, pod_name: &str) -> Option<i64> {
    let digits = pod_name.strip_prefix(set_name)?.strip_prefix('-')?;
    if digits.is_empty() || !digits.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    digits.parse().ok()
}

/// One of a StatefulSet's pods as the plan sees it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Member {
    /// Its ordinal.
    pub ordinal: i64,
    /// Its name.
    pub name: String,
    /// The revision it was made from (`controller-revision-hash`).
    pub revision: String,
    /// Being deleted.
    pub terminating: bool,
    /// Running and Ready.
    pub ready: bool,
    /// Ready for `minReadySeconds`.
    pub available: bool,
    /// Succeeded or Failed.
    pub finished: bool,
}

impl Member {
    /// Running, ready and not being deleted (Kubernetes' `isHealthy`).
    fn healthy(&self) -> bool {
        self.ready && !self.terminating
    }
}

/// What the plan reads from the StatefulSet.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Settings {
    /// `spec.ordinals.start`.
    pub start: i64,
    /// `spec.replicas`.
    pub replicas: i64,
    /// `podManagementPolicy: Parallel`.
    pub parallel: bool,
    /// `updateStrategy.type: RollingUpdate` (else `OnDelete`).
    pub rolling: bool,
    /// `updateStrategy.rollingUpdate.partition`.
    pub partition: i64,
    /// The current revision's name.
    pub current_revision: String,
    /// The update revision's name.
    pub update_revision: String,
}

/// One step of the plan.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Action {
    /// Make the pod with this ordinal from this revision.
    Create {
        /// The ordinal.
        ordinal: i64,
        /// The revision's name.
        revision: String,
    },
    /// Delete this pod.
    Delete(String),
}

/// The actions of one pass (Kubernetes' `updateStatefulSet`): finished pods go; missing pods
/// are made, lowest ordinal first; pods beyond the replicas go, highest first; then one pod
/// of an old revision is replaced, from the highest ordinal down to the partition. With
/// `OrderedReady` the pass stops at the first pod that is made, being deleted, not healthy or
/// deleted; with `Parallel` it goes on.
pub fn plan(s: &Settings, members: &[Member]) -> Vec<Action> {
    let ordered = !s.parallel;
    let mut slots: Vec<Option<&Member>> = vec![None; s.replicas.max(0) as usize];
    let mut condemned: Vec<&Member> = Vec::new();
    for m in members {
        let i = m.ordinal - s.start;
        if (0..s.replicas).contains(&i) {
            slots[i as usize] = Some(m);
        } else {
            condemned.push(m);
        }
    }
    condemned.sort_by_key(|m| std::cmp::Reverse(m.ordinal));
    let first_unhealthy = slots
        .iter()
        .flatten()
        .copied()
        .chain(condemned.iter().rev().copied())
        .find(|m| !m.healthy())
        .map(|m| m.ordinal);
    let mut actions = Vec::new();
    for (i, slot) in slots.iter().enumerate() {
        let ordinal = s.start + i as i64;
        let Some(m) = slot else {
            let revision = if s.rolling && (i as i64) < s.partition {
                &s.current_revision
            } else {
                &s.update_revision
            };
            actions.push(Action::Create {
                ordinal,
                revision: revision.clone(),
            });
            if ordered {
                return actions;
            }
            continue;
        };
        if m.finished {
            // Made again once it is gone.
            if !m.terminating {
                actions.push(Action::Delete(m.name.clone()));
            }
            if ordered {
                return actions;
            }
            continue;
        }
        if ordered && (m.terminating || !m.ready || !m.available) {
            return actions;
        }
    }
    for m in &condemned {
        if m.terminating {
            if ordered {
                return actions;
            }
            continue;
        }
        // Only the first unhealthy pod may go while it is itself unhealthy.
        if ordered && (!m.ready || !m.available) && first_unhealthy != Some(m.ordinal) {
            return actions;
        }
        actions.push(Action::Delete(m.name.clone()));
        if ordered {
            return actions;
        }
    }
    if !s.rolling || !actions.is_empty() && ordered {
        return actions;
    }
    for i in (s.partition.max(0) as usize..slots.len()).rev() {
        let Some(m) = slots[i] else {
            // Being made this pass.
            return actions;
        };
        if m.revision != s.update_revision && !m.terminating {
            actions.push(Action::Delete(m.name.clone()));
            return actions;
        }
        if !m.healthy() {
            return actions;
        }
    }
    actions
}

/// The counts of `status` (Kubernetes' `computeReplicaStatus`).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Counts {
    /// Pods made.
    pub replicas: i64,
    /// Running and Ready.
    pub ready: i64,
    /// Ready for `minReadySeconds`.
    pub available: i64,
    /// Not being deleted and at the current revision.
    pub current: i64,
    /// Not being deleted and at the update revision.
    pub updated: i64,
}

/// Counts `members` against the two revisions.
pub fn counts(s: &Settings, members: &[Member]) -> Counts {
    let mut c = Counts::default();
    for m in members {
        c.replicas += 1;
        if m.ready {
            c.ready += 1;
            if m.available {
                c.available += 1;
            }
        }
        if !m.terminating {
            if m.revision == s.current_revision {
                c.current += 1;
            }
            if m.revision == s.update_revision {
                c.updated += 1;
            }
        }
    }
    c
}

/// The PersistentVolumeClaims of the pod with `ordinal`, one per `volumeClaimTemplates` entry:
/// `<template>-<set>-<ordinal>`, labelled with the template's labels and the set's
/// `matchLabels`, owned by the set when `persistentVolumeClaimRetentionPolicy.whenDeleted` is
/// `Delete` (so they go with it), else by nothing (they outlive it).
pub fn claims_for(set: &Value, ordinal: i64) -> Vec<Value> {
    let set_name = objects::name(set);
    let delete_with_set =
        set["spec"]["persistentVolumeClaimRetentionPolicy"]["whenDeleted"] == "Delete";
    set["spec"]["volumeClaimTemplates"]
        .as_array()
        .into_iter()
        .flatten()
        .map(|t| {
            let template_name = t["metadata"]["name"].as_str().unwrap_or("");
            let mut labels = t["metadata"]["labels"].clone();
            if !labels.is_object() {
                labels = json!({});
            }
            for (k, v) in set["spec"]["selector"]["matchLabels"].as_object().into_iter().flatten() {
                labels[k] = v.clone();
            }
            let mut meta = json!({
                "name": format!("{template_name}-{set_name}-{ordinal}"),
                "namespace": objects::namespace(set),
                "labels": labels,
            });
            if t["metadata"]["annotations"].is_object() {
                meta["annotations"] = t["metadata"]["annotations"].clone();
            }
            if delete_with_set {
                let mut r = owner::reference_to(set);
                r["controller"] = json!(false);
                meta["ownerReferences"] = json!([r]);
            }
            json!({"apiVersion": "v1", "kind": "PersistentVolumeClaim", "metadata": meta, "spec": t["spec"]})
        })
        .collect()
}

/// The pod with `ordinal` made from `template` (a revision's pod template).
pub fn new_pod(set: &Value, template: &Value, revision: &str, ordinal: i64) -> Value {
    let name = format!("{}-{ordinal}", objects::name(set));
    let index = ordinal.to_string();
    let mut pod = pods::from_template(
        template,
        set,
        "",
        &[
            (REVISION_HASH_LABEL, revision),
            (POD_NAME_LABEL, &name),
            (POD_INDEX_LABEL, &index),
        ],
    );
    let meta = pod["metadata"].as_object_mut().expect("made an object");
    meta.remove("generateName");
    meta.insert("name".into(), json!(name));
    pod["spec"]["hostname"] = json!(name);
    // Each claim template is a volume of that name (replacing one the template has).
    let set_name = objects::name(set);
    let mut volumes = pod["spec"]["volumes"]
        .as_array()
        .cloned()
        .unwrap_or_default();
    for t in set["spec"]["volumeClaimTemplates"]
        .as_array()
        .into_iter()
        .flatten()
    {
        let template_name = t["metadata"]["name"].as_str().unwrap_or("");
        volumes.retain(|v| v["name"] != template_name);
        volumes.push(json!({
            "name": template_name,
            "persistentVolumeClaim": {"claimName": format!("{template_name}-{set_name}-{ordinal}")},
        }));
    }
    if !volumes.is_empty() {
        pod["spec"]["volumes"] = json!(volumes);
    }
    match set["spec"]["serviceName"].as_str() {
        Some(service) if !service.is_empty() => pod["spec"]["subdomain"] = json!(service),
        _ => {}
    }
    pod
}

/// The StatefulSet reconciler.
pub struct StatefulSetController {
    api: Api,
    events: EventRecorder,
}

impl StatefulSetController {
    /// A controller writing through `api`, and the event writer to run beside it.
    pub fn new(api: Api) -> (Self, EventWriter) {
        let (events, writer) = EventRecorder::new(api.clone(), "statefulset-controller");
        (StatefulSetController { api, events }, writer)
    }

    async fn sync(&self, key: &ObjectKey) -> ApiResult<Option<Duration>> {
        let ns = key.namespace.as_deref().unwrap_or("default");
        let Some(set) = runner::get_object(&self.api, statefulsets(), key).await? else {
            return Ok(None);
        };
        if objects::is_deleting(&set) {
            return Ok(None);
        }
        let (update, history) =
            controller_history::sync_hashed(&self.api, statefulsets(), &set).await?;
        let update_name = objects::name(&update).to_string();
        // The current revision is the status's while it is still in the history.
        let current = set["status"]["currentRevision"]
            .as_str()
            .and_then(|c| history.iter().find(|r| objects::name(r) == c))
            .unwrap_or(&update)
            .clone();
        let set_name = objects::name(&set);
        let spec = &set["spec"];
        let settings = Settings {
            start: spec["ordinals"]["start"].as_i64().unwrap_or(0),
            replicas: spec["replicas"].as_i64().unwrap_or(1),
            parallel: spec["podManagementPolicy"] == "Parallel",
            rolling: spec["updateStrategy"]["type"] != "OnDelete",
            partition: spec["updateStrategy"]["rollingUpdate"]["partition"]
                .as_i64()
                .unwrap_or(0),
            current_revision: objects::name(&current).to_string(),
            update_revision: update_name.clone(),
        };
        // Its pods: those named as its members, adopting orphans and releasing what stopped
        // matching (Kubernetes claims only members).
        let candidates: Vec<Value> = pods::list(&self.api, ns)
            .await?
            .into_iter()
            .filter(|p| ordinal_of(set_name, objects::name(p)).is_some())
            .collect();
        let mine = owner::claim(&self.api, pods::pods(), &set, candidates).await?;
        let min_ready = spec["minReadySeconds"].as_i64().unwrap_or(0);
        let now = chrono::Utc::now();
        let mut next_available: Option<Duration> = None;
        let members: Vec<Member> = mine
            .iter()
            .filter_map(|p| {
                let ordinal = ordinal_of(set_name, objects::name(p))?;
                let running = p["status"]["phase"] == "Running";
                let (available, later) = pods::availability(p, min_ready, now);
                if let Some(d) = later {
                    next_available = Some(next_available.map_or(d, |n| n.min(d)));
                }
                Some(Member {
                    ordinal,
                    name: objects::name(p).to_string(),
                    revision: p["metadata"]["labels"][REVISION_HASH_LABEL]
                        .as_str()
                        .unwrap_or("")
                        .to_string(),
                    terminating: objects::is_deleting(p),
                    ready: running && pods::is_ready(p),
                    available: running && available,
                    finished: pods::is_terminal(p),
                })
            })
            .collect();
        let actions = plan(&settings, &members);
        // The claims of the namespace, read once: only missing ones are made.
        let existing: HashSet<String> = if spec["volumeClaimTemplates"]
            .as_array()
            .is_some_and(|t| !t.is_empty())
        {
            let (claims, _, _) = self
                .api
                .list(
                    persistent_volume::claims(),
                    Some(ns),
                    &ListParams::default(),
                )
                .await?;
            claims
                .iter()
                .map(|c| objects::name(c).to_string())
                .collect()
        } else {
            HashSet::new()
        };
        // A pending pod whose claim went away (deleted while it waited) gets it made again,
        // as Kubernetes' createMissingPersistentVolumeClaims does.
        for p in mine
            .iter()
            .filter(|p| p["status"]["phase"] == "Pending" && !objects::is_deleting(p))
        {
            if let Some(ordinal) = ordinal_of(set_name, objects::name(p)) {
                self.create_claims(&set, ns, ordinal, objects::name(p), &existing)
                    .await;
            }
        }
        if spec["persistentVolumeClaimRetentionPolicy"]["whenScaled"] == "Delete" {
            // The claims of pods removed by a scale-down go with them.
            let range = settings.start..settings.start + settings.replicas;
            for a in &actions {
                let Action::Delete(name) = a else { continue };
                let condemned = mine.iter().find(|p| {
                    objects::name(p) == name
                        && ordinal_of(set_name, name).is_some_and(|o| !range.contains(&o))
                });
                if let Some(pod) = condemned {
                    self.give_claims_to(&set, pod).await?;
                }
            }
        }
        self.act(&set, ns, (&current, &update), &actions, &existing)
            .await;
        // Revisions neither current, nor updating, nor run by a live pod, beyond
        // revisionHistoryLimit, go.
        let by_name: BTreeMap<&str, &str> = history
            .iter()
            .map(|r| {
                (
                    objects::name(r),
                    r["metadata"]["labels"][REVISION_HASH_LABEL]
                        .as_str()
                        .unwrap_or(""),
                )
            })
            .collect();
        let live: Vec<&str> = members
            .iter()
            .map(|m| m.revision.as_str())
            .chain([objects::name(&current)])
            .filter_map(|r| by_name.get(r).copied())
            .collect();
        controller_history::prune(&self.api, &set, &history, &update_name, &live).await?;
        let c = counts(&settings, &members);
        let mut status = json!({
            "observedGeneration": set["metadata"]["generation"],
            "replicas": c.replicas, "readyReplicas": c.ready, "availableReplicas": c.available,
            "currentReplicas": c.current, "updatedReplicas": c.updated,
            "currentRevision": settings.current_revision, "updateRevision": update_name,
        });
        // The rolling update is complete: the update revision becomes the current one.
        if settings.rolling && c.updated == c.replicas && c.ready == c.replicas {
            status["currentReplicas"] = json!(c.updated);
            status["currentRevision"] = json!(update_name);
        }
        if let Some(n) = set["status"].get("collisionCount").filter(|c| !c.is_null()) {
            status["collisionCount"] = n.clone();
        }
        write_status(&self.api, statefulsets(), &set, status).await?;
        Ok(if actions.is_empty() {
            next_available.map(|d| d + Duration::from_millis(50))
        } else {
            Some(Duration::from_millis(250))
        })
    }

    /// Makes the claims of the pod `pod_name` (with `ordinal`) that are not among `existing`,
    /// with Kubernetes' events; whether they all exist now.
    async fn create_claims(
        &self,
        set: &Value,
        ns: &str,
        ordinal: i64,
        pod_name: &str,
        existing: &HashSet<String>,
    ) -> bool {
        let set_name = objects::name(set);
        for claim in claims_for(set, ordinal) {
            let claim_name = objects::name(&claim).to_string();
            if existing.contains(&claim_name) {
                continue;
            }
            let made = self
                .api
                .create(
                    persistent_volume::claims(),
                    Some(ns),
                    claim,
                    &WriteOptions::default(),
                )
                .await;
            match made {
                Ok(_) => self.events.normal(
                    owner::object_reference(set),
                    "SuccessfulCreate",
                    format!(
                        "create Claim {claim_name} Pod {pod_name} in StatefulSet {set_name} success"
                    ),
                ),
                Err(e) if e.code == 409 => {}
                Err(e) => {
                    self.events.warning(
                        owner::object_reference(set),
                        "FailedCreate",
                        format!(
                            "create Claim {claim_name} for Pod {pod_name} in StatefulSet {set_name} failed error: {}",
                            e.message
                        ),
                    );
                    return false;
                }
            }
        }
        true
    }

    /// Makes `pod` an owner of its claims, so that they are deleted with it.
    async fn give_claims_to(&self, set: &Value, pod: &Value) -> ApiResult<()> {
        let ordinal = ordinal_of(objects::name(set), objects::name(pod)).unwrap_or(0);
        let ns = objects::namespace(set);
        for claim in claims_for(set, ordinal) {
            let mut c = match self
                .api
                .get(persistent_volume::claims(), ns, objects::name(&claim))
                .await
            {
                Ok(c) => c,
                Err(e) if e.code == 404 => continue,
                Err(e) => return Err(e),
            };
            let mut refs = c["metadata"]["ownerReferences"]
                .as_array()
                .cloned()
                .unwrap_or_default();
            if refs.iter().any(|r| r["uid"] == pod["metadata"]["uid"]) {
                continue;
            }
            let mut r = owner::reference_to(pod);
            r["controller"] = json!(false);
            refs.push(r);
            c["metadata"]["ownerReferences"] = json!(refs);
            let name = objects::name(&c).to_string();
            self.api
                .update(
                    persistent_volume::claims(),
                    ns,
                    &name,
                    c,
                    None,
                    &WriteOptions::default(),
                )
                .await?;
        }
        Ok(())
    }

    /// Carries `actions` out, with the events Kubernetes records for them; `revisions` are the
    /// current and the update revision, `existing` the claims of the namespace.
    async fn act(
        &self,
        set: &Value,
        ns: &str,
        (current, update): (&Value, &Value),
        actions: &[Action],
        existing: &HashSet<String>,
    ) {
        let reference = owner::object_reference(set);
        let set_name = objects::name(set);
        let mut create = Vec::new();
        let mut delete = Vec::new();
        for a in actions {
            match a {
                Action::Create { ordinal, revision } => {
                    let rev = if revision == objects::name(update) {
                        update
                    } else {
                        current
                    };
                    let template = controller_history::template_of(rev);
                    create.push((*ordinal, new_pod(set, &template, revision, *ordinal)));
                }
                Action::Delete(name) => delete.push(name.clone()),
            }
        }
        // Each pod's claims come first; a pod whose claims cannot be made waits.
        let mut ready = Vec::with_capacity(create.len());
        for (ordinal, pod) in create {
            if self
                .create_claims(set, ns, ordinal, objects::name(&pod), existing)
                .await
            {
                ready.push(pod);
            }
        }
        let create = ready;
        if !create.is_empty() {
            let names: Vec<String> = create
                .iter()
                .map(|p| objects::name(p).to_string())
                .collect();
            let (created, err) = pods::create_all(&self.api, ns, create).await;
            for n in &created {
                self.events.normal(
                    reference.clone(),
                    "SuccessfulCreate",
                    format!("create Pod {n} in StatefulSet {set_name} successful"),
                );
            }
            if let Some(e) = err {
                let failed = names.iter().find(|n| !created.contains(n));
                self.events.warning(
                    reference.clone(),
                    "FailedCreate",
                    format!(
                        "create Pod {} in StatefulSet {set_name} failed error: {}",
                        failed.map_or("", String::as_str),
                        e.message
                    ),
                );
            }
        }
        if !delete.is_empty() {
            let (deleted, err) = pods::delete_all(&self.api, ns, delete.clone(), None).await;
            for n in &deleted {
                self.events.normal(
                    reference.clone(),
                    "SuccessfulDelete",
                    format!("delete Pod {n} in StatefulSet {set_name} successful"),
                );
            }
            if let Some(e) = err {
                let failed = delete.iter().find(|n| !deleted.contains(n));
                self.events.warning(
                    reference,
                    "FailedDelete",
                    format!(
                        "delete Pod {} in StatefulSet {set_name} failed error: {}",
                        failed.map_or("", String::as_str),
                        e.message
                    ),
                );
            }
        }
    }
}

impl Reconciler for StatefulSetController {
    async fn reconcile(&self, key: &ObjectKey) -> ApiResult<Option<Duration>> {
        // An all-key: an orphan pod changed: every StatefulSet of its namespace looks for it.
        runner::sync_each(&self.api, statefulsets(), key, |k| async move {
            self.sync(&k).await
        })
        .await
    }
}

/// Runs the StatefulSet controller until `shutdown`.
pub async fn run(api: Api, pods: PodCache, shutdown: CancellationToken) {
    let (controller, writer) = StatefulSetController::new(api.clone());
    let events = tokio::spawn(writer.run(shutdown.clone()));
    let watched = vec![
        Watched::primary(statefulsets()),
        // From the shared pod cache, which has decoded every pod change already.
        Watched::owned_by_or_orphan(pods::pods(), "StatefulSet").from_cache(&pods, |_| {}),
    ];
    let config = RunnerConfig {
        name: "statefulset",
        workers: 2,
        resync: Duration::from_secs(10),
        batch: Duration::ZERO,
    };
    runner::run(api, watched, Arc::new(controller), config, shutdown).await;
    let _ = events.await;
}

#[cfg(test)]
mod tests {
    use super::*;

    fn settings(replicas: i64) -> Settings {
        Settings {
            start: 0,
            replicas,
            parallel: false,
            rolling: true,
            partition: 0,
            current_revision: "web-1".into(),
            update_revision: "web-1".into(),
        }
    }

    fn pod(ordinal: i64, revision: &str, ready: bool) -> Member {
        Member {
            ordinal,
            name: format!("web-{ordinal}"),
            revision: revision.into(),
            terminating: false,
            ready,
            available: ready,
            finished: false,
        }
    }

    fn create(ordinal: i64, revision: &str) -> Action {
        Action::Create {
            ordinal,
            revision: revision.into(),
        }
    }

    fn delete(ordinal: i64) -> Action {
        Action::Delete(format!("web-{ordinal}"))
    }

    #[test]
    fn ordinals_are_read_from_member_names_only() {
        assert_eq!(ordinal_of("web", "web-0"), Some(0));
        assert_eq!(ordinal_of("web", "web-12"), Some(12));
        assert_eq!(ordinal_of("web", "web-x"), None);
        assert_eq!(ordinal_of("web", "web-"), None);
        assert_eq!(ordinal_of("web", "web-1-a"), None);
        assert_eq!(ordinal_of("web", "webb-1"), None);
        assert_eq!(ordinal_of("web", "web--1"), None);
        assert_eq!(ordinal_of("web-1", "web-1-0"), Some(0));
    }

    #[test]
    fn ordered_ready_makes_one_pod_at_a_time_each_after_the_one_below_is_ready() {
        let s = settings(3);
        assert_eq!(plan(&s, &[]), [create(0, "web-1")]);
        // web-0 is not ready yet: nothing.
        assert_eq!(plan(&s, &[pod(0, "web-1", false)]), []);
        assert_eq!(plan(&s, &[pod(0, "web-1", true)]), [create(1, "web-1")]);
        // A gap is filled first.
        assert_eq!(
            plan(&s, &[pod(0, "web-1", true), pod(2, "web-1", true)]),
            [create(1, "web-1")]
        );
        let all = [
            pod(0, "web-1", true),
            pod(1, "web-1", true),
            pod(2, "web-1", true),
        ];
        assert_eq!(plan(&s, &all), []);
        // Parallel makes them all.
        let p = Settings {
            parallel: true,
            ..settings(3)
        };
        assert_eq!(
            plan(&p, &[pod(1, "web-1", false)]),
            [create(0, "web-1"), create(2, "web-1")]
        );
    }

    #[test]
    fn scale_down_removes_the_highest_ordinal_first_one_at_a_time() {
        let s = settings(1);
        let three = [
            pod(0, "web-1", true),
            pod(1, "web-1", true),
            pod(2, "web-1", true),
        ];
        assert_eq!(plan(&s, &three), [delete(2)]);
        let mut going = three.clone();
        going[2].terminating = true;
        assert_eq!(plan(&s, &going), []);
        // An unhealthy pod below blocks the removal of a healthy one above it.
        let blocked = [
            pod(0, "web-1", true),
            pod(1, "web-1", true),
            pod(2, "web-1", false),
            pod(3, "web-1", true),
        ];
        let s2 = settings(2);
        assert_eq!(plan(&s2, &blocked), [delete(3)]);
        let blocked = [pod(0, "web-1", false), pod(1, "web-1", true)];
        assert_eq!(plan(&settings(1), &blocked), []);
        // Parallel removes them all.
        let p = Settings {
            parallel: true,
            ..settings(1)
        };
        assert_eq!(plan(&p, &three), [delete(2), delete(1)]);
    }

    #[test]
    fn a_finished_pod_is_deleted_to_be_made_again() {
        let mut failed = pod(0, "web-1", false);
        failed.finished = true;
        assert_eq!(plan(&settings(2), &[failed.clone()]), [delete(0)]);
        failed.terminating = true;
        assert_eq!(plan(&settings(2), &[failed]), []);
    }

    #[test]
    fn a_rolling_update_replaces_from_the_highest_ordinal_down_to_the_partition() {
        let s = Settings {
            update_revision: "web-2".into(),
            ..settings(3)
        };
        let old = [
            pod(0, "web-1", true),
            pod(1, "web-1", true),
            pod(2, "web-1", true),
        ];
        assert_eq!(plan(&s, &old), [delete(2)]);
        // Gone: made again at the update revision.
        assert_eq!(plan(&s, &old[..2]), [create(2, "web-2")]);
        // Not ready yet: wait.
        let mut step = old.clone();
        step[2] = pod(2, "web-2", false);
        assert_eq!(plan(&s, &step), []);
        step[2] = pod(2, "web-2", true);
        assert_eq!(plan(&s, &step), [delete(1)]);
        // With a partition of 2, ordinals 0 and 1 stay at the current revision, and are made
        // again from it.
        let part = Settings {
            partition: 2,
            ..s.clone()
        };
        assert_eq!(plan(&part, &step), []);
        assert_eq!(plan(&part, &step[1..]), [create(0, "web-1")]);
        // OnDelete replaces nothing, and makes deleted pods at the update revision.
        let on_delete = Settings {
            rolling: false,
            ..s.clone()
        };
        assert_eq!(plan(&on_delete, &old), []);
        assert_eq!(plan(&on_delete, &old[1..]), [create(0, "web-2")]);
    }

    #[test]
    fn ordinals_start_where_the_set_says() {
        let s = Settings {
            start: 5,
            ..settings(2)
        };
        assert_eq!(plan(&s, &[]), [create(5, "web-1")]);
        assert_eq!(
            plan(&s, &[pod(5, "web-1", true), pod(0, "web-1", true)]),
            [create(6, "web-1")]
        );
        assert_eq!(
            plan(
                &s,
                &[
                    pod(5, "web-1", true),
                    pod(6, "web-1", true),
                    pod(0, "web-1", true)
                ]
            ),
            [delete(0)]
        );
    }

    #[test]
    fn status_counts_pods_by_revision() {
        let s = Settings {
            update_revision: "web-2".into(),
            ..settings(3)
        };
        let mut going = pod(2, "web-2", true);
        going.terminating = true;
        let c = counts(&s, &[pod(0, "web-1", true), pod(1, "web-2", false), going]);
        assert_eq!(
            c,
            Counts {
                replicas: 3,
                ready: 2,
                available: 2,
                current: 1,
                updated: 1
            }
        );
    }

    #[test]
    fn a_pod_gets_its_identity_from_the_set() {
        let set = json!({"metadata": {"name": "web", "namespace": "ns", "uid": "u"},
            "spec": {"serviceName": "nginx"}, "apiVersion": "apps/v1", "kind": "StatefulSet"});
        let template = json!({"metadata": {"labels": {"app": "web"}}, "spec": {"containers": [{"name": "c", "image": "i"}]}});
        let p = new_pod(&set, &template, "web-abc", 3);
        assert_eq!(p["metadata"]["name"], "web-3");
        assert!(p["metadata"].get("generateName").is_none());
        assert_eq!(
            p["metadata"]["labels"],
            json!({"app": "web", REVISION_HASH_LABEL: "web-abc", POD_NAME_LABEL: "web-3", POD_INDEX_LABEL: "3"})
        );
        assert_eq!(p["spec"]["hostname"], "web-3");
        assert_eq!(p["spec"]["subdomain"], "nginx");
        assert_eq!(p["metadata"]["ownerReferences"][0]["kind"], "StatefulSet");
    }
}
