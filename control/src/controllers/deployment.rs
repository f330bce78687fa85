//! The Deployment controller: one ReplicaSet per pod template (named
//! `<deployment>-<pod-template-hash>`), rolled with `RollingUpdate` (maxSurge/maxUnavailable,
//! see [`rollout`]) or `Recreate`; revisions in `deployment.kubernetes.io/revision` on the
//! ReplicaSets (what `kubectl rollout history/undo` read), old ReplicaSets kept up to
//! `revisionHistoryLimit`; `spec.paused`; status with the Available and Progressing conditions
//! (Progressing=False, ProgressDeadlineExceeded after `progressDeadlineSeconds` without
//! progress) and ScalingReplicaSet events.
//!
//! `kubectl rollout undo` copies an old ReplicaSet's template back into the Deployment; the
//! controller then finds that ReplicaSet by template equality (ignoring the hash label),
//! gives it the next revision and scales it up.

use std::sync::Arc;
use std::time::Duration;

use serde_json::{Value, json};
use tokio_util::sync::CancellationToken;

use super::owner;
use super::pods;
use super::replicaset::{replicasets, write_status};
use super::rollout::{self, OldSet};
use super::runner::{self, ObjectKey, Reconciler, RunnerConfig, Watched};
use super::store_mirror::StoreMirror;
use crate::apiserver::api::{Api, DeleteOptions, ListParams, Propagation, WriteOptions};
use crate::apiserver::error::{ApiError, ApiResult};
use crate::apiserver::objects;
use crate::apiserver::resources::{self, ResourceInfo};
use crate::events::{EventRecorder, EventWriter};

/// The label telling a Deployment's ReplicaSets (and their pods) apart.
pub const HASH_LABEL: &str = "pod-template-hash";
/// The revision annotation on Deployments and ReplicaSets.
pub const REVISION: &str = "deployment.kubernetes.io/revision";
/// Earlier revisions a ReplicaSet had (after rollbacks).
pub const REVISION_HISTORY: &str = "deployment.kubernetes.io/revision-history";
const DESIRED_REPLICAS: &str = "deployment.kubernetes.io/desired-replicas";
const MAX_REPLICAS: &str = "deployment.kubernetes.io/max-replicas";
/// Annotations of a Deployment not copied to its ReplicaSets.
const NOT_COPIED: &[&str] = &[
    "kubectl.kubernetes.io/last-applied-configuration",
    REVISION,
    REVISION_HISTORY,
    DESIRED_REPLICAS,
    MAX_REPLICAS,
];

/// The `deployments` resource.
pub fn deployments() -> &'static ResourceInfo {
    resources::find("apps", "v1", "deployments").expect("deployments served")
}

/// A ReplicaSet's revision.
pub fn revision(rs: &Value) -> i64 {
    rs["metadata"]["annotations"][REVISION]
        .as_str()
        .and_then(|s| s.parse().ok())
        .unwrap_or(0)
}

fn spec_replicas(rs: &Value) -> i64 {
    rs["spec"]["replicas"].as_i64().unwrap_or(0)
}

fn status_i64(rs: &Value, field: &str) -> i64 {
    rs["status"][field].as_i64().unwrap_or(0)
}

/// The Deployment reconciler.
pub struct DeploymentController {
    api: Api,
    events: EventRecorder,
    /// Every ReplicaSet, decoded once per change: a sync reads its namespace's from here
    /// (as kube-controller-manager reads its informer's lister) instead of listing and
    /// decoding all of them, which made a resync of N Deployments cost N² decodes.
    replicasets: tokio::sync::Mutex<StoreMirror<MirroredReplicaSet>>,
}

/// A ReplicaSet in the controller's mirror: the object and the uid of its controller, read
/// out once so that picking one Deployment's ReplicaSets compares strings.
struct MirroredReplicaSet {
    controller: Option<String>,
    object: Arc<Value>,
}

impl MirroredReplicaSet {
    fn of(entry: &crate::store::Entry) -> Self {
        let object = objects::from_entry(entry);
        MirroredReplicaSet {
            controller: owner::controller_ref(&object)
                .map(|r| r["uid"].as_str().unwrap_or_default().to_string()),
            object: Arc::new(object),
        }
    }
}

impl DeploymentController {
    /// A controller writing through `api`, and the event writer to run beside it.
    pub fn new(api: Api) -> (Self, EventWriter) {
        let (events, writer) = EventRecorder::new(api.clone(), "deployment-controller");
        let replicasets = tokio::sync::Mutex::new(StoreMirror::new(
            replicasets().key_prefix(),
            MirroredReplicaSet::of,
        ));
        (
            DeploymentController {
                api,
                events,
                replicasets,
            },
            writer,
        )
    }

    /// The ReplicaSets of `ns` that the Deployment `uid` controls or that nothing controls
    /// (what it may adopt), as of every write the store has delivered to its watchers.
    async fn replicasets_of(&self, ns: &str, uid: &str) -> ApiResult<Vec<Value>> {
        let mut mirror = self.replicasets.lock().await;
        mirror
            .sync(self.api.store().as_ref())
            .await
            .map_err(|e| ApiError::from_store(e, replicasets(), ns))?;
        let prefix = replicasets().namespace_prefix(Some(ns));
        Ok(mirror
            .under(&prefix)
            .filter(|(_, rs)| rs.controller.as_deref().is_none_or(|c| c == uid))
            .map(|(_, rs)| Value::clone(&rs.object))
            .collect())
    }

    async fn scale(&self, d: &Value, rs: &Value, to: i64, max_surge: i64) -> ApiResult<Value> {
        let from = spec_replicas(rs);
        let mut updated = rs.clone();
        updated["spec"]["replicas"] = json!(to);
        let d_replicas = d["spec"]["replicas"].as_i64().unwrap_or(1);
        let ann = owner_annotations(&mut updated);
        ann.insert(DESIRED_REPLICAS.into(), json!(d_replicas.to_string()));
        ann.insert(
            MAX_REPLICAS.into(),
            json!((d_replicas + max_surge).to_string()),
        );
        if updated == *rs {
            return Ok(updated);
        }
        let ns = objects::namespace(rs);
        let (out, _) = self
            .api
            .update(
                replicasets(),
                ns,
                objects::name(rs),
                updated,
                None,
                &WriteOptions::default(),
            )
            .await?;
        if from != to {
            let dir = if to > from { "up" } else { "down" };
            self.events.normal(
                owner::object_reference(d),
                "ScalingReplicaSet",
                format!(
                    "Scaled {dir} replica set {} from {from} to {to}",
                    objects::name(rs)
                ),
            );
        }
        Ok(out)
    }

    async fn sync(&self, key: &ObjectKey) -> ApiResult<Option<Duration>> {
        let ns = key.namespace.as_deref().unwrap_or("default");
        let Some(d) = runner::get_object(&self.api, deployments(), key).await? else {
            return Ok(None);
        };
        if objects::is_deleting(&d) {
            return Ok(None);
        }
        let uid = owner::uid(&d).to_string();
        let all_rs = self.replicasets_of(ns, &uid).await?;
        // Its ReplicaSets, adopting matching orphans and releasing what stopped matching.
        let mut mine: Vec<Value> = owner::claim(&self.api, replicasets(), &d, all_rs)
            .await?
            .into_iter()
            .filter(|rs| !objects::is_deleting(rs))
            .collect();
        mine.sort_by_key(|rs| {
            (
                revision(rs),
                rs["metadata"]["creationTimestamp"]
                    .as_str()
                    .unwrap_or("")
                    .to_string(),
            )
        });
        let template = &d["spec"]["template"];
        let new_pos = mine
            .iter()
            .position(|rs| rollout::templates_equal(&rs["spec"]["template"], template));
        let replicas = d["spec"]["replicas"].as_i64().unwrap_or(1).max(0);
        let strategy = d["spec"]["strategy"]["type"]
            .as_str()
            .unwrap_or("RollingUpdate")
            .to_string();
        let (surge, unavailable) = if strategy == "Recreate" {
            (0, replicas)
        } else {
            let ru = &d["spec"]["strategy"]["rollingUpdate"];
            let s = if ru["maxSurge"].is_null() {
                json!("25%")
            } else {
                ru["maxSurge"].clone()
            };
            let u = if ru["maxUnavailable"].is_null() {
                json!("25%")
            } else {
                ru["maxUnavailable"].clone()
            };
            rollout::fenceposts(&s, &u, replicas)
        };
        let paused = d["spec"]["paused"].as_bool().unwrap_or(false);
        let mut new_created = false;
        let mut acted = false;
        // Whether this sync wrote a ReplicaSet (besides `acted` and `new_created`).
        let mut revised = false;

        let mut new_rs: Option<Value> = new_pos.map(|i| mine.remove(i));
        let old: Vec<Value> = mine;
        let max_old_revision = old.iter().map(revision).max().unwrap_or(0);

        if paused || is_scaling_event(replicas, new_rs.iter().chain(&old)) {
            // Only scaling (Kubernetes' `sync`): while paused, or when spec.replicas changed
            // since the sets were last scaled; the rollout goes on at the next pass.
            acted = self
                .scale_to_spec(&d, new_rs.as_ref(), &old, replicas, surge, &strategy)
                .await?;
        } else {
            // The new ReplicaSet, with the newest revision.
            let want_revision = max_old_revision + 1;
            match &mut new_rs {
                Some(rs) => {
                    // Kubernetes' SetNewReplicaSetAnnotations: the newest revision, and the
                    // Deployment's own annotations (`kubernetes.io/change-cause`, say) copied
                    // onto its new ReplicaSet at every sync, not only when it is made.
                    let mut updated = rs.clone();
                    let old_rev = revision(rs);
                    let bump = old_rev < want_revision;
                    let ann = owner_annotations(&mut updated);
                    if bump {
                        if old_rev > 0 {
                            let hist = ann
                                .get(REVISION_HISTORY)
                                .and_then(Value::as_str)
                                .map(|h| format!("{h},{old_rev}"))
                                .unwrap_or(old_rev.to_string());
                            ann.insert(REVISION_HISTORY.into(), json!(hist));
                        }
                        ann.insert(REVISION.into(), json!(want_revision.to_string()));
                    }
                    copy_annotations(&d, ann);
                    if updated != *rs {
                        let (out, _) = self
                            .api
                            .update(
                                replicasets(),
                                Some(ns),
                                objects::name(rs),
                                updated,
                                None,
                                &WriteOptions::default(),
                            )
                            .await?;
                        *rs = out;
                        revised = bump;
                    }
                }
                None => {
                    let initial = if strategy == "Recreate" {
                        0
                    } else {
                        let total: i64 = old.iter().map(spec_replicas).sum();
                        rollout::new_replica_set_size(replicas, surge, 0, total)
                    };
                    new_rs = Some(
                        self.create_new_rs(&d, want_revision, initial, surge)
                            .await?,
                    );
                    new_created = true;
                    acted = true;
                }
            }
            let rs = new_rs.clone().expect("made above");
            if d["metadata"]["annotations"][REVISION].as_str()
                != rs["metadata"]["annotations"][REVISION].as_str()
            {
                let mut updated = d.clone();
                owner_annotations(&mut updated).insert(
                    REVISION.into(),
                    rs["metadata"]["annotations"][REVISION].clone(),
                );
                self.api
                    .update(
                        deployments(),
                        Some(ns),
                        objects::name(&d),
                        updated,
                        None,
                        &WriteOptions::default(),
                    )
                    .await?;
                // The write changes the Deployment: the watch brings us back with it.
                return Ok(None);
            }
            if !new_created {
                acted = if strategy == "Recreate" {
                    self.recreate(&d, &rs, &old, replicas).await?
                } else {
                    self.rolling(&d, &rs, &old, replicas, surge, unavailable)
                        .await?
                };
            }
            if !acted
                && old
                    .iter()
                    .all(|o| spec_replicas(o) == 0 && status_i64(o, "replicas") == 0)
            {
                self.cleanup(&d, &old).await?;
            }
        }

        // Status, from what the ReplicaSets report now. After this sync's own writes the
        // mirror may not have them yet (the store delivers them just after it acknowledges),
        // and a status from before them would be written only to be corrected at once: read
        // the store then, as before the mirror. A sync that wrote nothing (every resync of a
        // settled Deployment) reads the mirror.
        let rs_now = if acted || new_created || revised {
            self.api
                .list(replicasets(), Some(ns), &ListParams::default())
                .await?
                .0
        } else {
            self.replicasets_of(ns, &uid).await?
        };
        let rs_now: Vec<&Value> = rs_now
            .iter()
            .filter(|rs| owner::is_controlled_by(rs, &uid) && !objects::is_deleting(rs))
            .collect();
        let new_now = rs_now
            .iter()
            .copied()
            .find(|rs| rollout::templates_equal(&rs["spec"]["template"], template));
        let sum = |f: &str| rs_now.iter().map(|rs| status_i64(rs, f)).sum::<i64>();
        let updated = new_now.map(|rs| status_i64(rs, "replicas")).unwrap_or(0);
        let available = sum("availableReplicas");
        let mut status = json!({
            "observedGeneration": d["metadata"]["generation"],
            "replicas": sum("replicas"),
            "updatedReplicas": updated,
            "readyReplicas": sum("readyReplicas"),
            "availableReplicas": available,
            "unavailableReplicas": (replicas - available).max(0),
        });
        if let Some(c) = d["status"].get("collisionCount").filter(|c| !c.is_null()) {
            status["collisionCount"] = c.clone();
        }
        let new_name = new_now
            .map(|rs| objects::name(rs).to_string())
            .unwrap_or_default();
        let now = chrono::Utc::now();
        let (conditions, requeue) = conditions(
            &d,
            &status,
            &new_name,
            paused,
            new_created,
            replicas - unavailable,
            now,
        );
        status["conditions"] = json!(conditions);
        write_status(&self.api, deployments(), &d, status).await?;
        Ok(if acted {
            Some(Duration::from_millis(250))
        } else {
            requeue
        })
    }

    async fn create_new_rs(
        &self,
        d: &Value,
        rev: i64,
        initial: i64,
        surge: i64,
    ) -> ApiResult<Value> {
        let ns = objects::namespace(d);
        let collisions = d["status"]["collisionCount"].as_i64().unwrap_or(0);
        let hash = rollout::template_hash(&d["spec"]["template"], collisions);
        let mut template = d["spec"]["template"].clone();
        if !template["metadata"].is_object() {
            template["metadata"] = json!({});
        }
        if !template["metadata"]["labels"].is_object() {
            template["metadata"]["labels"] = json!({});
        }
        template["metadata"]["labels"][HASH_LABEL] = json!(hash);
        let mut selector = d["spec"]["selector"].clone();
        if !selector["matchLabels"].is_object() {
            selector["matchLabels"] = json!({});
        }
        selector["matchLabels"][HASH_LABEL] = json!(hash);
        let mut labels = template["metadata"]["labels"].clone();
        labels[HASH_LABEL] = json!(hash);
        let mut annotations = serde_json::Map::new();
        copy_annotations(d, &mut annotations);
        let replicas = d["spec"]["replicas"].as_i64().unwrap_or(1);
        annotations.insert(REVISION.into(), json!(rev.to_string()));
        annotations.insert(DESIRED_REPLICAS.into(), json!(replicas.to_string()));
        annotations.insert(MAX_REPLICAS.into(), json!((replicas + surge).to_string()));
        let name = format!("{}-{hash}", objects::name(d));
        let rs = json!({
            "apiVersion": "apps/v1", "kind": "ReplicaSet",
            "metadata": {"name": name, "namespace": ns, "labels": labels, "annotations": annotations,
                         "ownerReferences": [owner::reference_to(d)]},
            "spec": {"replicas": initial, "minReadySeconds": d["spec"]["minReadySeconds"].as_i64().unwrap_or(0),
                     "selector": selector, "template": template},
        });
        match self
            .api
            .create(replicasets(), ns, rs, &WriteOptions::default())
            .await
        {
            Ok((rs, _)) => {
                self.events.normal(
                    owner::object_reference(d),
                    "ScalingReplicaSet",
                    format!("Scaled up replica set {name} from 0 to {initial}"),
                );
                Ok(rs)
            }
            Err(e) if e.code == 409 => {
                // Someone else's ReplicaSet has our name: count the collision, hash again.
                let existing = self.api.get(replicasets(), ns, &name).await?;
                if owner::is_controlled_by(&existing, owner::uid(d))
                    && rollout::templates_equal(
                        &existing["spec"]["template"],
                        &d["spec"]["template"],
                    )
                {
                    return Ok(existing);
                }
                let mut status = d["status"].clone();
                if !status.is_object() {
                    status = json!({});
                }
                status["collisionCount"] = json!(collisions + 1);
                write_status(&self.api, deployments(), d, status).await?;
                Err(e)
            }
            Err(e) => Err(e),
        }
    }

    /// Brings the ReplicaSets to the Deployment's `replicas` without rolling (Kubernetes'
    /// `scale`): the only active set (or the newest one) takes them all; a saturated new set
    /// makes the old ones go; otherwise, in a rolling update, the change is spread over the
    /// active sets in proportion ([`rollout::proportional_sizes`]). Whether anything was
    /// scaled.
    async fn scale_to_spec(
        &self,
        d: &Value,
        new_rs: Option<&Value>,
        old: &[Value],
        replicas: i64,
        surge: i64,
        strategy: &str,
    ) -> ApiResult<bool> {
        let active: Vec<&Value> = new_rs
            .into_iter()
            .chain(old)
            .filter(|rs| spec_replicas(rs) > 0)
            .collect();
        let latest = new_rs.or_else(|| {
            old.iter()
                .max_by_key(|rs| rs["metadata"]["creationTimestamp"].as_str().unwrap_or(""))
        });
        let only = match active.len() {
            0 => latest,
            1 => Some(active[0]),
            _ => None,
        };
        if let Some(rs) = only {
            let before = spec_replicas(rs);
            self.scale(d, rs, replicas, surge).await?;
            return Ok(before != replicas);
        }
        let mut acted = false;
        if new_rs.is_some_and(|n| is_saturated(replicas, n)) {
            for o in old.iter().filter(|o| spec_replicas(o) > 0) {
                self.scale(d, o, 0, surge).await?;
                acted = true;
            }
            return Ok(acted);
        }
        if strategy == "Recreate" {
            return Ok(false);
        }
        let sets: Vec<rollout::ScaledSet> = active
            .iter()
            .map(|rs| rollout::ScaledSet {
                replicas: spec_replicas(rs),
                max_replicas: annotation_i64(rs, MAX_REPLICAS),
                created: rs["metadata"]["creationTimestamp"]
                    .as_str()
                    .unwrap_or("")
                    .to_string(),
            })
            .collect();
        let status_replicas = d["status"]["replicas"].as_i64().unwrap_or(0);
        let sizes = rollout::proportional_sizes(replicas, surge, status_replicas, &sets);
        for (rs, to) in active.iter().zip(sizes) {
            acted |= to != spec_replicas(rs);
            self.scale(d, rs, to, surge).await?;
        }
        Ok(acted)
    }

    /// One step of a rolling update; whether anything was scaled.
    async fn rolling(
        &self,
        d: &Value,
        new_rs: &Value,
        old: &[Value],
        replicas: i64,
        surge: i64,
        unavailable: i64,
    ) -> ApiResult<bool> {
        let total: i64 = old.iter().map(spec_replicas).sum::<i64>() + spec_replicas(new_rs);
        let target = rollout::new_replica_set_size(replicas, surge, spec_replicas(new_rs), total);
        if target != spec_replicas(new_rs) {
            self.scale(d, new_rs, target, surge).await?;
            return Ok(true);
        }
        let active_old: Vec<&Value> = old.iter().filter(|o| spec_replicas(o) > 0).collect();
        let sets: Vec<OldSet> = active_old
            .iter()
            .map(|o| OldSet {
                replicas: spec_replicas(o),
                available: status_i64(o, "availableReplicas"),
            })
            .collect();
        let new_set = OldSet {
            replicas: spec_replicas(new_rs),
            available: status_i64(new_rs, "availableReplicas"),
        };
        let take = rollout::old_scale_down(replicas, unavailable, &new_set, &sets);
        let mut acted = false;
        for (o, n) in active_old.iter().zip(take) {
            if n > 0 {
                self.scale(d, o, spec_replicas(o) - n, surge).await?;
                acted = true;
            }
        }
        Ok(acted)
    }

    /// One step of a Recreate rollout; whether anything was scaled.
    async fn recreate(
        &self,
        d: &Value,
        new_rs: &Value,
        old: &[Value],
        replicas: i64,
    ) -> ApiResult<bool> {
        let mut acted = false;
        for o in old.iter().filter(|o| spec_replicas(o) > 0) {
            self.scale(d, o, 0, 0).await?;
            acted = true;
        }
        if acted {
            return Ok(true);
        }
        // Wait until no old pod runs any more.
        let old_uids: Vec<&str> = old.iter().map(owner::uid).collect();
        let ns = objects::namespace(d).unwrap_or("default");
        let all = pods::list(&self.api, ns).await?;
        let running = all.iter().any(|p| {
            !pods::is_terminal(p)
                && owner::controller_ref(p).is_some_and(|r| old_uids.iter().any(|u| r["uid"] == *u))
        });
        if running {
            return Ok(false);
        }
        if spec_replicas(new_rs) != replicas {
            self.scale(d, new_rs, replicas, 0).await?;
            return Ok(true);
        }
        Ok(false)
    }

    /// Deletes the oldest unused ReplicaSets beyond `revisionHistoryLimit`.
    async fn cleanup(&self, d: &Value, old: &[Value]) -> ApiResult<()> {
        let limit = d["spec"]["revisionHistoryLimit"]
            .as_i64()
            .unwrap_or(10)
            .max(0) as usize;
        let unused: Vec<&Value> = old
            .iter()
            .filter(|o| spec_replicas(o) == 0 && status_i64(o, "replicas") == 0)
            .collect();
        if unused.len() <= limit {
            return Ok(());
        }
        for o in unused.iter().take(unused.len() - limit) {
            let opts = DeleteOptions {
                propagation: Some(Propagation::Background),
                precondition_uid: Some(owner::uid(o).to_string()),
                ..Default::default()
            };
            match self
                .api
                .delete(
                    replicasets(),
                    objects::namespace(o),
                    objects::name(o),
                    &opts,
                )
                .await
            {
                Ok(_) => {}
                Err(e) if e.code == 404 || e.code == 409 => {}
                Err(e) => return Err(e),
            }
        }
        Ok(())
    }
}

fn annotation_i64(rs: &Value, key: &str) -> Option<i64> {
    rs["metadata"]["annotations"][key]
        .as_str()
        .and_then(|s| s.parse().ok())
}

/// Whether the Deployment was scaled since its active ReplicaSets were (Kubernetes'
/// `isScalingEvent`): one of them has a `desired-replicas` annotation other than `replicas`.
pub fn is_scaling_event<'a>(replicas: i64, sets: impl IntoIterator<Item = &'a Value>) -> bool {
    sets.into_iter()
        .filter(|rs| spec_replicas(rs) > 0)
        .any(|rs| annotation_i64(rs, DESIRED_REPLICAS).is_some_and(|n| n != replicas))
}

/// Whether the new ReplicaSet has all of `replicas`, for this size, all available.
fn is_saturated(replicas: i64, new_rs: &Value) -> bool {
    spec_replicas(new_rs) == replicas
        && annotation_i64(new_rs, DESIRED_REPLICAS) == Some(replicas)
        && status_i64(new_rs, "availableReplicas") == replicas
}

/// Copies a Deployment's annotations (but the ones it keeps for itself) onto its new
/// ReplicaSet's; annotations the Deployment no longer has stay, as in Kubernetes.
fn copy_annotations(d: &Value, onto: &mut serde_json::Map<String, Value>) {
    for (k, v) in d["metadata"]["annotations"]
        .as_object()
        .into_iter()
        .flatten()
    {
        if !NOT_COPIED.contains(&k.as_str()) && onto.get(k) != Some(v) {
            onto.insert(k.clone(), v.clone());
        }
    }
}

fn owner_annotations(obj: &mut Value) -> &mut serde_json::Map<String, Value> {
    let meta = objects::meta_mut(obj);
    if !meta.get("annotations").is_some_and(Value::is_object) {
        meta.insert("annotations".into(), json!({}));
    }
    meta.get_mut("annotations")
        .and_then(Value::as_object_mut)
        .expect("just made")
}

fn condition(
    kind: &str,
    status: &str,
    reason: &str,
    message: String,
    now: &str,
    previous: Option<&Value>,
) -> Value {
    let transition = match previous {
        Some(p) if p["status"] == status => p["lastTransitionTime"].clone(),
        _ => json!(now),
    };
    json!({"type": kind, "status": status, "reason": reason, "message": message, "lastUpdateTime": now, "lastTransitionTime": transition})
}

/// The Available and Progressing conditions for a Deployment whose next status is `status`,
/// and when to look again for the progress deadline.
pub fn conditions(
    d: &Value,
    status: &Value,
    new_rs: &str,
    paused: bool,
    new_created: bool,
    min_available: i64,
    now: chrono::DateTime<chrono::Utc>,
) -> (Vec<Value>, Option<Duration>) {
    let now_s = now.to_rfc3339_opts(chrono::SecondsFormat::Secs, true);
    let previous: Vec<Value> = d["status"]["conditions"]
        .as_array()
        .cloned()
        .unwrap_or_default();
    let prev = |t: &str| previous.iter().find(|c| c["type"] == t);
    let replicas = d["spec"]["replicas"].as_i64().unwrap_or(1);
    let get = |v: &Value, f: &str| v[f].as_i64().unwrap_or(0);
    let available = if get(status, "availableReplicas") >= min_available {
        let p = prev("Available")
            .filter(|p| p["status"] == "True" && p["reason"] == "MinimumReplicasAvailable");
        p.cloned().unwrap_or_else(|| {
            condition(
                "Available",
                "True",
                "MinimumReplicasAvailable",
                "Deployment has minimum availability.".into(),
                &now_s,
                prev("Available"),
            )
        })
    } else {
        let p = prev("Available").filter(|p| p["status"] == "False");
        p.cloned().unwrap_or_else(|| {
            condition(
                "Available",
                "False",
                "MinimumReplicasUnavailable",
                "Deployment does not have minimum availability.".into(),
                &now_s,
                prev("Available"),
            )
        })
    };
    let old_status = &d["status"];
    let complete = get(status, "updatedReplicas") == replicas
        && get(status, "replicas") == replicas
        && get(status, "availableReplicas") == replicas;
    let progressed = ["updatedReplicas", "readyReplicas", "availableReplicas"]
        .iter()
        .any(|f| get(status, f) > get(old_status, f))
        || get(status, "replicas") - get(status, "updatedReplicas")
            < get(old_status, "replicas") - get(old_status, "updatedReplicas");
    let p = prev("Progressing");
    let deadline = d["spec"]["progressDeadlineSeconds"].as_i64();
    let mut requeue = None;
    let progressing = if paused {
        match p.filter(|c| c["reason"] == "DeploymentPaused") {
            Some(c) => c.clone(),
            None => condition(
                "Progressing",
                "Unknown",
                "DeploymentPaused",
                "Deployment is paused".into(),
                &now_s,
                p,
            ),
        }
    } else if p.is_some_and(|c| c["reason"] == "DeploymentPaused") {
        condition(
            "Progressing",
            "Unknown",
            "DeploymentResumed",
            "Deployment is resumed".into(),
            &now_s,
            p,
        )
    } else if complete {
        match p.filter(|c| c["reason"] == "NewReplicaSetAvailable") {
            Some(c) => c.clone(),
            None => condition(
                "Progressing",
                "True",
                "NewReplicaSetAvailable",
                format!("ReplicaSet \"{new_rs}\" has successfully progressed."),
                &now_s,
                p,
            ),
        }
    } else if new_created {
        condition(
            "Progressing",
            "True",
            "NewReplicaSetCreated",
            format!("Created new replica set \"{new_rs}\""),
            &now_s,
            p,
        )
    } else if let Some(p) = p.filter(|c| !progressed && c["reason"] != "NewReplicaSetAvailable") {
        let last = pods::parse_time(&p["lastUpdateTime"]).unwrap_or(now);
        match deadline {
            Some(secs)
                if p["reason"] == "ProgressDeadlineExceeded"
                    || last + chrono::Duration::seconds(secs) <= now =>
            {
                if p["reason"] == "ProgressDeadlineExceeded" {
                    p.clone()
                } else {
                    condition(
                        "Progressing",
                        "False",
                        "ProgressDeadlineExceeded",
                        format!("ReplicaSet \"{new_rs}\" has timed out progressing."),
                        &now_s,
                        Some(p),
                    )
                }
            }
            Some(secs) => {
                requeue = (last + chrono::Duration::seconds(secs) - now)
                    .to_std()
                    .ok()
                    .map(|d| d + Duration::from_millis(100));
                p.clone()
            }
            None => p.clone(),
        }
    } else {
        condition(
            "Progressing",
            "True",
            "ReplicaSetUpdated",
            format!("ReplicaSet \"{new_rs}\" is progressing."),
            &now_s,
            p,
        )
    };
    if progressing["status"] == "True"
        && progressing["reason"] != "NewReplicaSetAvailable"
        && requeue.is_none()
        && let Some(secs) = deadline
    {
        requeue = Some(Duration::from_secs(secs.max(0) as u64) + Duration::from_millis(100));
    }
    (vec![available, progressing], requeue)
}

impl Reconciler for DeploymentController {
    async fn reconcile(&self, key: &ObjectKey) -> ApiResult<Option<Duration>> {
        // An all-key: an orphan ReplicaSet changed: every Deployment of its namespace looks for it.
        runner::sync_each(&self.api, deployments(), key, |k| async move {
            self.sync(&k).await
        })
        .await
    }
}

/// Runs the Deployment controller until `shutdown`.
pub async fn run(api: Api, shutdown: CancellationToken) {
    let (controller, writer) = DeploymentController::new(api.clone());
    let events = tokio::spawn(writer.run(shutdown.clone()));
    let watched = vec![
        Watched::primary(deployments()),
        Watched::owned_by_or_orphan(replicasets(), "Deployment"),
    ];
    let config = RunnerConfig {
        name: "deployment",
        workers: 4,
        resync: Duration::from_secs(10),
        batch: Duration::ZERO,
    };
    runner::run(api, watched, Arc::new(controller), config, shutdown).await;
    let _ = events.await;
}

#[cfg(test)]
mod tests {
    use super::*;

    fn at(s: &str) -> chrono::DateTime<chrono::Utc> {
        pods::parse_time(&json!(s)).unwrap()
    }

    #[test]
    fn a_complete_rollout_is_available_and_has_progressed() {
        let d = json!({"spec": {"replicas": 3, "progressDeadlineSeconds": 600}, "status": {}});
        let status = json!({"replicas": 3, "updatedReplicas": 3, "availableReplicas": 3});
        let (c, requeue) = conditions(
            &d,
            &status,
            "web-abc",
            false,
            false,
            2,
            at("2024-01-01T00:00:00Z"),
        );
        assert_eq!(
            (c[0]["type"].as_str(), c[0]["status"].as_str()),
            (Some("Available"), Some("True"))
        );
        assert_eq!(c[1]["reason"], "NewReplicaSetAvailable");
        assert_eq!(
            c[1]["message"],
            "ReplicaSet \"web-abc\" has successfully progressed."
        );
        assert_eq!(requeue, None);
    }

    #[test]
    fn no_progress_past_the_deadline_is_progress_deadline_exceeded() {
        let d = json!({"spec": {"replicas": 3, "progressDeadlineSeconds": 10}, "status": {
            "replicas": 4, "updatedReplicas": 1, "availableReplicas": 3,
            "conditions": [{"type": "Progressing", "status": "True", "reason": "ReplicaSetUpdated", "lastUpdateTime": "2024-01-01T00:00:00Z", "lastTransitionTime": "2024-01-01T00:00:00Z"}]}});
        let status = json!({"replicas": 4, "updatedReplicas": 1, "availableReplicas": 3});
        let (c, requeue) = conditions(
            &d,
            &status,
            "web-new",
            false,
            false,
            2,
            at("2024-01-01T00:00:05Z"),
        );
        assert_eq!(c[1]["reason"], "ReplicaSetUpdated");
        assert_eq!(requeue, Some(Duration::from_millis(5100)));
        let (c, _) = conditions(
            &d,
            &status,
            "web-new",
            false,
            false,
            2,
            at("2024-01-01T00:00:11Z"),
        );
        assert_eq!(
            (c[1]["status"].as_str(), c[1]["reason"].as_str()),
            (Some("False"), Some("ProgressDeadlineExceeded"))
        );
        // Progress resets the clock.
        let better = json!({"replicas": 4, "updatedReplicas": 2, "availableReplicas": 3});
        let (c, _) = conditions(
            &d,
            &better,
            "web-new",
            false,
            false,
            2,
            at("2024-01-01T00:00:11Z"),
        );
        assert_eq!(
            (c[1]["status"].as_str(), c[1]["reason"].as_str()),
            (Some("True"), Some("ReplicaSetUpdated"))
        );
    }

    #[test]
    fn a_scaling_event_is_an_active_set_annotated_with_other_desired_replicas() {
        let rs = |replicas: i64, desired: Option<&str>| {
            let mut v = json!({"metadata": {"annotations": {}}, "spec": {"replicas": replicas}});
            if let Some(d) = desired {
                v["metadata"]["annotations"][DESIRED_REPLICAS] = json!(d);
            }
            v
        };
        assert!(!is_scaling_event(3, [&rs(3, Some("3")), &rs(1, Some("3"))]));
        assert!(is_scaling_event(5, [&rs(3, Some("3")), &rs(1, Some("3"))]));
        // Scaled-down sets and sets without the annotation (adopted) do not count.
        assert!(!is_scaling_event(5, [&rs(0, Some("3")), &rs(5, None)]));
        assert!(is_saturated(
            2,
            &json!({"metadata": {"annotations": {DESIRED_REPLICAS: "2"}}, "spec": {"replicas": 2}, "status": {"availableReplicas": 2}})
        ));
    }

    #[test]
    fn a_paused_deployment_says_so() {
        let d = json!({"spec": {"replicas": 1}, "status": {}});
        let (c, _) = conditions(
            &d,
            &json!({}),
            "x",
            true,
            false,
            1,
            at("2024-01-01T00:00:00Z"),
        );
        assert_eq!(
            (c[0]["status"].as_str(), c[1]["reason"].as_str()),
            (Some("False"), Some("DeploymentPaused"))
        );
    }
}
