//! The ReplicaSet controller: keeps `spec.replicas` active pods matching the selector,
//! adopting matching orphans and releasing pods that stopped matching (through
//! `ownerReferences`), and reports `status` (replicas, fullyLabeledReplicas, readyReplicas,
//! availableReplicas honouring `minReadySeconds`, observedGeneration, the ReplicaFailure
//! condition). Scale-down deletes the least useful pods first ([`pods::deletion_order`]).
//!
//! It reads pods from the shared [`PodCache`] and guards its creates and deletes with
//! [`Expectations`]: after writing for a ReplicaSet it does not write for it again until the
//! cache has observed those writes (or they time out), so a cache a few events behind never
//! makes it create or delete twice.

use std::sync::Arc;
use std::time::Duration;

use serde_json::{Value, json};
use tokio_util::sync::CancellationToken;

use super::expectations::Expectations;
use super::owner;
use super::pod_cache::{PodCache, PodEvent};
use super::pods;
use super::runner::{self, ObjectKey, Reconciler, RunnerConfig, Watched};
use crate::apiserver::api::{Api, WriteOptions};
use crate::apiserver::error::ApiResult;
use crate::apiserver::objects;
use crate::apiserver::resources::{self, ResourceInfo, Subresource};
use crate::events::{EventRecorder, EventWriter};
use crate::store::EventType;

/// The `replicasets` resource.
pub fn replicasets() -> &'static ResourceInfo {
    resources::find("apps", "v1", "replicasets").expect("replicasets served")
}

/// The ReplicaSet reconciler.
pub struct ReplicaSetController {
    api: Api,
    events: EventRecorder,
    pods: PodCache,
    expectations: Arc<Expectations>,
}

/// What the pods of a ReplicaSet add up to.
#[derive(Debug, Default, PartialEq, Eq)]
pub struct Counts {
    /// Active pods.
    pub replicas: i64,
    /// Active pods with every label of the template.
    pub fully_labeled: i64,
    /// Ready ones.
    pub ready: i64,
    /// Ready for `minReadySeconds`.
    pub available: i64,
}

/// Counts a ReplicaSet's active pods; also returns when the next pod becomes available.
pub fn count(
    rs: &Value,
    active: &[&Value],
    now: chrono::DateTime<chrono::Utc>,
) -> (Counts, Option<Duration>) {
    let min_ready = rs["spec"]["minReadySeconds"].as_i64().unwrap_or(0);
    let template_labels = rs["spec"]["template"]["metadata"]["labels"]
        .as_object()
        .cloned()
        .unwrap_or_default();
    let mut c = Counts {
        replicas: active.len() as i64,
        ..Default::default()
    };
    let mut next: Option<Duration> = None;
    for p in active {
        if template_labels
            .iter()
            .all(|(k, v)| p["metadata"]["labels"][k] == *v)
        {
            c.fully_labeled += 1;
        }
        if pods::is_ready(p) {
            c.ready += 1;
        }
        match pods::availability(p, min_ready, now) {
            (true, _) => c.available += 1,
            (false, Some(d)) => next = Some(next.map_or(d, |n| n.min(d))),
            _ => {}
        }
    }
    (c, next)
}

/// The key of the ReplicaSet controlling `pod`, if one does.
fn owner_key(pod: &Value) -> Option<ObjectKey> {
    let r = owner::controller_ref(pod).filter(|r| r["kind"] == "ReplicaSet")?;
    Some(ObjectKey {
        namespace: objects::namespace(pod).map(String::from),
        name: r["name"].as_str()?.to_string(),
    })
}

/// Lowers `expectations` for what a pod cache event shows (Kubernetes' `addPod`, `updatePod`
/// and `deletePod` handlers): a controlled pod appearing is an observed creation; one being
/// deleted (`deletionTimestamp` set) or gone is an observed deletion.
pub fn observe(expectations: &Expectations, e: &PodEvent) {
    let Some(owner) = owner_key(&e.pod) else {
        return;
    };
    let name = objects::name(&e.pod);
    match e.event_type {
        EventType::Deleted => expectations.deletion_observed(&owner, name),
        _ if objects::is_deleting(&e.pod) => expectations.deletion_observed(&owner, name),
        EventType::Added => expectations.creation_observed(&owner),
        EventType::Modified => {}
    }
}

impl ReplicaSetController {
    /// A controller writing through `api` and reading pods from `pods`, and the event writer
    /// to run beside it.
    pub fn new(api: Api, pods: PodCache) -> (Self, EventWriter) {
        let (events, writer) = EventRecorder::new(api.clone(), "replicaset-controller");
        let controller = ReplicaSetController {
            api,
            events,
            pods,
            expectations: Arc::new(Expectations::default()),
        };
        (controller, writer)
    }

    /// The same controller giving up on unobserved writes after `timeout` instead of
    /// [`super::expectations::DEFAULT_TIMEOUT`].
    pub fn with_expectations_timeout(mut self, timeout: Duration) -> Self {
        self.expectations = Arc::new(Expectations::new(timeout));
        self
    }

    /// The creations and deletions this controller waits to observe.
    pub fn expectations(&self) -> &Arc<Expectations> {
        &self.expectations
    }

    async fn sync(&self, key: &ObjectKey) -> ApiResult<Option<Duration>> {
        self.pods.wait_synced().await;
        let ns = key.namespace.as_deref().unwrap_or("default");
        let rs = match self.api.get(replicasets(), Some(ns), &key.name).await {
            Ok(rs) => rs,
            Err(e) if e.code == 404 => {
                self.expectations.forget(key);
                return Ok(None);
            }
            Err(e) => return Err(e),
        };
        let uid = owner::uid(&rs).to_string();
        let selector = owner::selector(&rs);
        let deleting = objects::is_deleting(&rs);
        // Before reading the cache: whatever it observes after this check only makes the
        // read newer, never older than the expectations say.
        let may_write = self.expectations.unsatisfied(key).is_none();
        let mut candidates = self.pods.controlled_by(ns, &uid);
        candidates.extend(self.pods.orphans(ns));
        let mut mine: Vec<Arc<Value>> = Vec::new();
        for p in candidates {
            let matches = selector.as_ref().is_some_and(|s| s.matches_object(&p));
            match owner::controller_ref(&p) {
                Some(r) if r["uid"] == uid.as_str() => {
                    if matches {
                        mine.push(p);
                    } else if !objects::is_deleting(&p) {
                        match owner::release(&self.api, pods::pods(), &p, &[uid.as_str()]).await {
                            Ok(()) => {}
                            Err(e) if e.code == 404 || e.code == 409 => {}
                            Err(e) => return Err(e),
                        }
                    }
                }
                None if matches && !deleting && !objects::is_deleting(&p) => {
                    match owner::adopt(&self.api, pods::pods(), &p, &rs).await {
                        Ok(adopted) => mine.push(Arc::new(adopted)),
                        // A conflict fails the pass (retried): going on without the pod
                        // would make one too many.
                        Err(e) if e.code == 404 => {}
                        Err(e) => return Err(e),
                    }
                }
                _ => {}
            }
        }
        let mut active: Vec<&Value> = mine
            .iter()
            .map(|p| p.as_ref())
            .filter(|p| pods::is_active(p))
            .collect();
        let want = rs["spec"]["replicas"].as_i64().unwrap_or(1).max(0);
        let mut changed = false;
        let mut failure: Option<String> = None;
        if !deleting && selector.is_some() && may_write {
            let diff = active.len() as i64 - want;
            if diff < 0 {
                let prefix = format!("{}-", objects::name(&rs));
                let new: Vec<Value> = (0..-diff)
                    .map(|_| pods::from_template(&rs["spec"]["template"], &rs, &prefix, &[]))
                    .collect();
                self.expectations.expect_creations(key, new.len() as u64);
                let wanted = new.len();
                let (created, err) =
                    pods::create_recorded(&self.api, &self.events, &rs, ns, new).await;
                // A failed creation will never be observed.
                for _ in created.len()..wanted {
                    self.expectations.creation_observed(key);
                }
                if let Some(e) = err {
                    failure = Some(e.message);
                }
                changed = true;
            } else if diff > 0 {
                active.sort_by(|a, b| pods::deletion_order(a, b));
                let victims: Vec<String> = active
                    .iter()
                    .take(diff as usize)
                    .map(|p| objects::name(p).to_string())
                    .collect();
                self.expectations
                    .expect_deletions(key, victims.iter().cloned());
                let (deleted, err) =
                    pods::delete_recorded(&self.api, &self.events, &rs, ns, victims.clone()).await;
                for v in &victims {
                    // A failed deletion will never be observed; one the cache already shows
                    // (the pod was gone before we asked) was observed before it was expected.
                    let seen = self
                        .pods
                        .get(ns, v)
                        .is_none_or(|p| objects::is_deleting(&p));
                    if !deleted.contains(v) || seen {
                        self.expectations.deletion_observed(key, v);
                    }
                }
                if let Some(e) = err {
                    failure = Some(e.message.clone());
                }
                active.drain(..diff as usize);
                changed = true;
            }
        }
        let (c, next) = count(&rs, &active, chrono::Utc::now());
        let mut status = json!({
            "replicas": c.replicas, "fullyLabeledReplicas": c.fully_labeled,
            "readyReplicas": c.ready, "availableReplicas": c.available,
            "observedGeneration": rs["metadata"]["generation"],
        });
        let old_conditions: Vec<Value> = rs["status"]["conditions"]
            .as_array()
            .cloned()
            .unwrap_or_default();
        let mut conditions: Vec<Value> = old_conditions
            .iter()
            .filter(|c| c["type"] != "ReplicaFailure")
            .cloned()
            .collect();
        let failed = failure.is_some();
        if let Some(msg) = failure {
            let reason = if changed && active.len() as i64 > want {
                "FailedDelete"
            } else {
                "FailedCreate"
            };
            conditions.push(json!({"type": "ReplicaFailure", "status": "True", "reason": reason, "message": msg, "lastTransitionTime": objects::now_rfc3339()}));
        }
        if !conditions.is_empty() {
            status["conditions"] = json!(conditions);
        }
        write_status(&self.api, replicasets(), &rs, status).await?;
        // Writes that succeeded are followed up by the cache's events (and, if an observation
        // is lost, by the resync once the expectations time out); a failure is retried soon.
        Ok(if failed {
            Some(Duration::from_millis(200))
        } else {
            next.map(|d| d + Duration::from_millis(50))
        })
    }
}

/// Writes `status` if it differs, with compare-and-swap on the object's resourceVersion (a
/// conflict is retried by the queue).
pub async fn write_status(
    api: &Api,
    res: &ResourceInfo,
    obj: &Value,
    status: Value,
) -> ApiResult<()> {
    if obj["status"] == status {
        return Ok(());
    }
    let mut updated = obj.clone();
    updated["status"] = status;
    match api
        .update(
            res,
            objects::namespace(obj),
            objects::name(obj),
            updated,
            Some(Subresource::Status),
            &WriteOptions::default(),
        )
        .await
    {
        Ok(_) => Ok(()),
        Err(e) if e.code == 404 => Ok(()),
        Err(e) => Err(e),
    }
}

impl Reconciler for ReplicaSetController {
    async fn reconcile(&self, key: &ObjectKey) -> ApiResult<Option<Duration>> {
        // An all-key: an orphan pod changed: every ReplicaSet of its namespace looks for it.
        runner::sync_each(&self.api, replicasets(), key, |k| async move {
            self.sync(&k).await
        })
        .await
    }
}

/// Runs the ReplicaSet controller until `shutdown`, reading pods from `pods` (which the
/// caller feeds).
pub async fn run(api: Api, pods: PodCache, shutdown: CancellationToken) {
    let (controller, writer) = ReplicaSetController::new(api.clone(), pods.clone());
    let events = tokio::spawn(writer.run(shutdown.clone()));
    let expectations = controller.expectations().clone();
    let watched = vec![
        Watched::primary(replicasets()),
        Watched::owned_by_or_orphan(pods::pods(), "ReplicaSet")
            .from_cache(&pods, move |e| observe(&expectations, e)),
    ];
    let config = RunnerConfig {
        name: "replicaset",
        workers: 4,
        resync: Duration::from_secs(10),
        // A sync counts every pod of the ReplicaSet; while a thousand of them start, one
        // sync per 100 ms instead of one per pod event.
        batch: Duration::from_millis(100),
    };
    runner::run(api, watched, Arc::new(controller), config, shutdown).await;
    let _ = events.await;
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::apiserver::api::{ApiConfig, ListParams};
    use crate::store::{RedbStore, RedbStoreConfig};
    use tokio::sync::mpsc;

    /// A store, an API over it, a `default` namespace, and a ReplicaSet `web` of `replicas`.
    async fn cluster(replicas: i64) -> (tempfile::TempDir, Api) {
        let dir = tempfile::tempdir().unwrap();
        let store = RedbStore::open(RedbStoreConfig::new(dir.path().join("s.redb"))).unwrap();
        let api = Api::new(Arc::new(store), ApiConfig::default());
        let namespaces = resources::find("", "v1", "namespaces").unwrap();
        let ns = json!({"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": "default"}});
        api.create(namespaces, None, ns, &WriteOptions::default())
            .await
            .unwrap();
        let rs = json!({"apiVersion": "apps/v1", "kind": "ReplicaSet",
            "metadata": {"name": "web", "namespace": "default"},
            "spec": {"replicas": replicas, "selector": {"matchLabels": {"app": "web"}},
                "template": {"metadata": {"labels": {"app": "web"}},
                    "spec": {"containers": [{"name": "c", "image": "i"}]}}}});
        api.create(replicasets(), Some("default"), rs, &WriteOptions::default())
            .await
            .unwrap();
        (dir, api)
    }

    /// A ReplicaSet controller over an empty, synced pod cache, with a subscription to the
    /// cache's events and the controller's event writer.
    fn controller(
        api: &Api,
    ) -> (
        PodCache,
        mpsc::UnboundedReceiver<PodEvent>,
        ReplicaSetController,
        EventWriter,
    ) {
        let cache = PodCache::new();
        let events = cache.subscribe();
        cache.replace(vec![], api.store().current_revision());
        let (rsc, writer) = ReplicaSetController::new(api.clone(), cache.clone());
        (cache, events, rsc, writer)
    }

    fn web() -> ObjectKey {
        ObjectKey {
            namespace: Some("default".into()),
            name: "web".into(),
        }
    }

    async fn stored_pods(api: &Api) -> Vec<Value> {
        api.list(pods::pods(), Some("default"), &ListParams::default())
            .await
            .unwrap()
            .0
    }

    /// Brings the cache up to the store, showing each change to the controller's
    /// expectations as the runner would; `observe: false` loses the observations.
    async fn catch_up(
        api: &Api,
        cache: &PodCache,
        events: &mut mpsc::UnboundedReceiver<PodEvent>,
        rsc: &ReplicaSetController,
        observe_events: bool,
    ) {
        let rev = api.store().current_revision();
        cache.replace(stored_pods(api).await, rev);
        while let Ok(e) = events.try_recv() {
            if observe_events {
                observe(rsc.expectations(), &e);
            }
        }
    }

    async fn scale(api: &Api, replicas: i64) {
        let mut rs = api
            .get(replicasets(), Some("default"), "web")
            .await
            .unwrap();
        rs["spec"]["replicas"] = json!(replicas);
        api.update(
            replicasets(),
            Some("default"),
            "web",
            rs,
            None,
            &WriteOptions::default(),
        )
        .await
        .unwrap();
    }

    #[tokio::test]
    async fn a_sync_right_after_creating_does_not_create_again_from_a_stale_cache() {
        let (_dir, api) = cluster(3).await;
        let (cache, mut events, rsc, _writer) = controller(&api);
        rsc.sync(&web()).await.unwrap();
        assert_eq!(stored_pods(&api).await.len(), 3);
        // The cache has not seen them yet: the controller waits rather than creating more.
        assert!(rsc.expectations().unsatisfied(&web()).is_some());
        rsc.sync(&web()).await.unwrap();
        assert_eq!(stored_pods(&api).await.len(), 3);
        // Once it has, the controller is free to act, and has nothing to do.
        catch_up(&api, &cache, &mut events, &rsc, true).await;
        assert_eq!(rsc.expectations().unsatisfied(&web()), None);
        rsc.sync(&web()).await.unwrap();
        assert_eq!(stored_pods(&api).await.len(), 3);
        let rs = api
            .get(replicasets(), Some("default"), "web")
            .await
            .unwrap();
        assert_eq!(rs["status"]["replicas"], 3);
    }

    #[tokio::test]
    async fn observed_deletions_lower_the_expectations_of_a_scale_down() {
        let (_dir, api) = cluster(3).await;
        let (cache, mut events, rsc, _writer) = controller(&api);
        rsc.sync(&web()).await.unwrap();
        catch_up(&api, &cache, &mut events, &rsc, true).await;
        scale(&api, 1).await;
        rsc.sync(&web()).await.unwrap();
        let active = |pods: Vec<Value>| pods.iter().filter(|p| pods::is_active(p)).count();
        assert_eq!(active(stored_pods(&api).await), 1);
        // The deletions are observed (pods going or gone), and nothing more is deleted.
        catch_up(&api, &cache, &mut events, &rsc, true).await;
        assert_eq!(rsc.expectations().unsatisfied(&web()), None);
        rsc.sync(&web()).await.unwrap();
        assert_eq!(active(stored_pods(&api).await), 1);
    }

    #[tokio::test]
    async fn unobserved_writes_time_out_and_the_controller_syncs_from_the_cache_again() {
        let (_dir, api) = cluster(2).await;
        let (cache, mut events, rsc, _writer) = controller(&api);
        let rsc = rsc.with_expectations_timeout(Duration::from_millis(300));
        rsc.sync(&web()).await.unwrap();
        // The cache gets the pods but the controller never hears of them.
        catch_up(&api, &cache, &mut events, &rsc, false).await;
        scale(&api, 4).await;
        rsc.sync(&web()).await.unwrap();
        assert_eq!(stored_pods(&api).await.len(), 2, "waits for its creations");
        tokio::time::sleep(Duration::from_millis(350)).await;
        rsc.sync(&web()).await.unwrap();
        assert_eq!(stored_pods(&api).await.len(), 4, "acts on the cache again");
    }

    #[test]
    fn counts_honour_template_labels_readiness_and_min_ready_seconds() {
        let now = pods::parse_time(&json!("2024-01-01T00:00:10Z")).unwrap();
        let rs = json!({"spec": {"minReadySeconds": 5, "template": {"metadata": {"labels": {"app": "a", "tier": "t"}}}}});
        let ready_long = json!({"metadata": {"labels": {"app": "a", "tier": "t"}}, "status": {"conditions": [{"type": "Ready", "status": "True", "lastTransitionTime": "2024-01-01T00:00:00Z"}]}});
        let ready_just = json!({"metadata": {"labels": {"app": "a"}}, "status": {"conditions": [{"type": "Ready", "status": "True", "lastTransitionTime": "2024-01-01T00:00:08Z"}]}});
        let not_ready = json!({"metadata": {"labels": {"app": "a", "tier": "t"}}, "status": {}});
        let (c, next) = count(&rs, &[&ready_long, &ready_just, &not_ready], now);
        assert_eq!(
            c,
            Counts {
                replicas: 3,
                fully_labeled: 2,
                ready: 2,
                available: 1
            }
        );
        assert_eq!(next, Some(Duration::from_secs(3)));
    }
}
