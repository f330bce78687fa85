//! The pod cache (Kubernetes' shared pod informer and lister): every pod of the cluster,
//! decoded once per change from the store's watch, indexed by namespace and by the uid of its
//! controller (`ownerReferences` with `controller: true`), and handed to the controllers that
//! share it as cheap [`Arc`]s instead of each re-listing and re-decoding a namespace per sync.
//!
//! The cache lags the store by the time its feed takes to apply an event, so a controller that
//! creates or deletes pods from what it reads here must not act on the same owner again until
//! the cache has observed those writes: see [`super::expectations`]. Subscribers get every
//! change as a [`PodEvent`] after the cache has applied it, so a controller woken by an event
//! reads a cache at least as new as that event.

use std::collections::{BTreeMap, HashMap};
use std::sync::{Arc, Mutex, RwLock};
use std::time::Duration;

use serde_json::Value;
use tokio::sync::{mpsc, watch};
use tokio_util::sync::CancellationToken;

use super::owner;
use super::pods;
use crate::apiserver::api::Api;
use crate::apiserver::objects;
use crate::store::{EventType, ListOptions, Revision};

/// One change the cache applied.
#[derive(Debug, Clone)]
pub struct PodEvent {
    /// What happened to the pod.
    pub event_type: EventType,
    /// The pod as now cached; for a deletion, its last state.
    pub pod: Arc<Value>,
    /// The cached pod this one replaced (none for an addition).
    pub prev: Option<Arc<Value>>,
}

impl PodEvent {
    /// `pod` stored in the cache in place of `prev`: an addition, or a modification.
    fn stored(pod: Arc<Value>, prev: Option<Arc<Value>>) -> PodEvent {
        let event_type = if prev.is_some() {
            EventType::Modified
        } else {
            EventType::Added
        };
        PodEvent {
            event_type,
            pod,
            prev,
        }
    }
}

/// The pods of one namespace.
#[derive(Debug, Default)]
struct Namespace {
    /// By name.
    pods: BTreeMap<String, Arc<Value>>,
    /// Names by controller uid; orphans under `""`.
    by_controller: HashMap<String, BTreeMap<String, Arc<Value>>>,
}

impl Namespace {
    fn insert(&mut self, name: &str, pod: Arc<Value>) -> Option<Arc<Value>> {
        // Most changes replace a pod under the same controller: one lookup in each map.
        let prev = match self.pods.get_mut(name) {
            Some(slot) => Some(std::mem::replace(slot, pod.clone())),
            None => {
                self.pods.insert(name.to_string(), pod.clone());
                None
            }
        };
        let uid = controller_uid(&pod);
        if let Some(old) = prev
            .as_deref()
            .map(controller_uid)
            .filter(|old| *old != uid)
        {
            self.unindex(old, name);
        }
        let set = match self.by_controller.get_mut(uid) {
            Some(set) => set,
            None => self.by_controller.entry(uid.to_string()).or_default(),
        };
        match set.get_mut(name) {
            Some(slot) => *slot = pod,
            None => {
                set.insert(name.to_string(), pod);
            }
        }
        prev
    }

    fn remove(&mut self, name: &str) -> Option<Arc<Value>> {
        let prev = self.pods.remove(name)?;
        self.unindex(controller_uid(&prev), name);
        Some(prev)
    }

    /// Drops `name` from the pods of controller `uid` (and the set, once empty).
    fn unindex(&mut self, uid: &str, name: &str) {
        if let Some(set) = self.by_controller.get_mut(uid) {
            set.remove(name);
            if set.is_empty() {
                self.by_controller.remove(uid);
            }
        }
    }
}

/// The uid of a pod's controller, `""` for an orphan.
fn controller_uid(pod: &Value) -> &str {
    owner::controller_ref(pod)
        .and_then(|r| r["uid"].as_str())
        .unwrap_or("")
}

#[derive(Debug, Default)]
struct State {
    namespaces: HashMap<String, Namespace>,
    /// The store revision the cache reflects.
    revision: Revision,
}

#[derive(Debug)]
struct Shared {
    state: RwLock<State>,
    synced: watch::Sender<bool>,
    subscribers: Mutex<Vec<mpsc::UnboundedSender<PodEvent>>>,
}

/// A cheap handle to the shared pod cache. [`PodCache::run`] feeds it; controllers read it and
/// [`PodCache::subscribe`] to its changes.
#[derive(Debug, Clone)]
pub struct PodCache {
    shared: Arc<Shared>,
}

impl Default for PodCache {
    fn default() -> Self {
        Self::new()
    }
}

impl PodCache {
    /// An empty cache, not yet synced.
    pub fn new() -> PodCache {
        PodCache {
            shared: Arc::new(Shared {
                state: RwLock::new(State::default()),
                synced: watch::channel(false).0,
                subscribers: Mutex::new(Vec::new()),
            }),
        }
    }

    /// Every change from now on, after the cache applied it; starts with an
    /// [`EventType::Added`] for each pod already cached, so a subscriber misses nothing.
    pub fn subscribe(&self) -> mpsc::UnboundedReceiver<PodEvent> {
        let (tx, rx) = mpsc::unbounded_channel();
        // Under the state lock, so no change slips between the snapshot and the live events.
        let state = self.shared.state.read().expect("pod cache lock");
        for ns in state.namespaces.values() {
            for pod in ns.pods.values() {
                let _ = tx.send(PodEvent {
                    event_type: EventType::Added,
                    pod: pod.clone(),
                    prev: None,
                });
            }
        }
        self.shared
            .subscribers
            .lock()
            .expect("pod cache subscribers")
            .push(tx);
        rx
    }

    /// Waits until the cache has listed the store once (Kubernetes' `HasSynced`): before
    /// that, an empty cache says nothing about what exists.
    pub async fn wait_synced(&self) {
        let mut rx = self.shared.synced.subscribe();
        // The sender lives as long as `self`, so this cannot fail.
        let _ = rx.wait_for(|synced| *synced).await;
    }

    /// Whether the cache has listed the store once.
    pub fn is_synced(&self) -> bool {
        *self.shared.synced.borrow()
    }

    /// The store revision the cache reflects.
    pub fn revision(&self) -> Revision {
        self.shared.state.read().expect("pod cache lock").revision
    }

    /// One pod.
    pub fn get(&self, ns: &str, name: &str) -> Option<Arc<Value>> {
        let state = self.shared.state.read().expect("pod cache lock");
        state.namespaces.get(ns)?.pods.get(name).cloned()
    }

    /// The pods of a namespace, by name.
    pub fn list(&self, ns: &str) -> Vec<Arc<Value>> {
        let state = self.shared.state.read().expect("pod cache lock");
        state
            .namespaces
            .get(ns)
            .map(|n| n.pods.values().cloned().collect())
            .unwrap_or_default()
    }

    /// Every pod of the cluster, by namespace and name.
    pub fn all(&self) -> Vec<Arc<Value>> {
        let state = self.shared.state.read().expect("pod cache lock");
        state
            .namespaces
            .values()
            .flat_map(|n| n.pods.values().cloned())
            .collect()
    }

    /// The pods of a namespace whose controller has `uid`, by name.
    pub fn controlled_by(&self, ns: &str, uid: &str) -> Vec<Arc<Value>> {
        if uid.is_empty() {
            return Vec::new();
        }
        self.by_controller(ns, uid)
    }

    /// The pods of a namespace without a controller, by name (candidates for adoption).
    pub fn orphans(&self, ns: &str) -> Vec<Arc<Value>> {
        self.by_controller(ns, "")
    }

    fn by_controller(&self, ns: &str, uid: &str) -> Vec<Arc<Value>> {
        let state = self.shared.state.read().expect("pod cache lock");
        state
            .namespaces
            .get(ns)
            .and_then(|n| n.by_controller.get(uid))
            .map(|set| set.values().cloned().collect())
            .unwrap_or_default()
    }

    /// Applies one watch event (the pod decoded, `resourceVersion` set) at `revision`.
    pub fn apply(&self, event_type: EventType, pod: Value, revision: Revision) {
        self.apply_shared(event_type, Arc::new(pod), revision);
    }

    /// [`PodCache::apply`] of a pod already shared.
    fn apply_shared(&self, event_type: EventType, pod: Arc<Value>, revision: Revision) {
        let ns = objects::namespace(&pod).unwrap_or("").to_string();
        let name = objects::name(&pod).to_string();
        let mut state = self.shared.state.write().expect("pod cache lock");
        state.revision = state.revision.max(revision);
        let event = if event_type == EventType::Deleted {
            let prev = state.namespaces.get_mut(&ns).and_then(|n| n.remove(&name));
            if state.namespaces.get(&ns).is_some_and(|n| n.pods.is_empty()) {
                state.namespaces.remove(&ns);
            }
            PodEvent {
                event_type,
                pod,
                prev,
            }
        } else {
            let prev = state
                .namespaces
                .entry(ns)
                .or_default()
                .insert(&name, pod.clone());
            PodEvent::stored(pod, prev)
        };
        self.notify(&state, vec![event]);
    }

    /// Replaces the whole content with a fresh list at `revision` (the first list, or a
    /// re-list after the watch fell behind): subscribers get the difference as events, and
    /// the cache becomes synced.
    pub fn replace(&self, listed: Vec<Value>, revision: Revision) {
        let mut state = self.shared.state.write().expect("pod cache lock");
        let mut old = std::mem::take(&mut state.namespaces);
        let mut events = Vec::new();
        for pod in listed {
            let pod = Arc::new(pod);
            let ns = objects::namespace(&pod).unwrap_or("").to_string();
            let name = objects::name(&pod).to_string();
            let prev = old.get_mut(&ns).and_then(|n| n.remove(&name));
            let unchanged = prev.as_ref().is_some_and(|p| {
                p["metadata"]["resourceVersion"] == pod["metadata"]["resourceVersion"]
            });
            state
                .namespaces
                .entry(ns)
                .or_default()
                .insert(&name, pod.clone());
            if !unchanged {
                events.push(PodEvent::stored(pod, prev));
            }
        }
        for ns in old.into_values() {
            for pod in ns.pods.into_values() {
                events.push(PodEvent {
                    event_type: EventType::Deleted,
                    pod: pod.clone(),
                    prev: Some(pod),
                });
            }
        }
        state.revision = revision;
        self.notify(&state, events);
        drop(state);
        self.shared.synced.send_replace(true);
    }

    /// Sends `events` to every live subscriber (called under the state's write lock, so
    /// subscribers see changes in the order they were applied).
    fn notify(&self, _applied: &State, events: Vec<PodEvent>) {
        if events.is_empty() {
            return;
        }
        let mut subs = self
            .shared
            .subscribers
            .lock()
            .expect("pod cache subscribers");
        subs.retain(|tx| events.iter().all(|e| tx.send(e.clone()).is_ok()));
    }

    /// Feeds the cache from the store until `shutdown`: list every pod, then follow the watch
    /// from the list's revision; re-list when the watch falls behind or breaks.
    pub async fn run(self, api: Api, shutdown: CancellationToken) {
        let res = pods::pods();
        let prefix = res.namespace_prefix(None);
        api.recent_writes().want();
        let cache = self.clone();
        api.decoded_pods()
            .serve_from(Box::new(move |ns, name| cache.get(ns, name)));
        loop {
            if shutdown.is_cancelled() {
                return;
            }
            let listed = match api.store().list(&prefix, ListOptions::default()).await {
                Ok(l) => l,
                Err(e) => {
                    tracing::warn!(error = %e, "pod cache: list failed");
                    tokio::select! {
                        _ = shutdown.cancelled() => return,
                        _ = tokio::time::sleep(Duration::from_millis(500)) => continue,
                    }
                }
            };
            let mut watch = match api.watch(res, None, listed.revision) {
                Ok(w) => w,
                Err(e) => {
                    tracing::debug!(error = %e, "pod cache: watch failed; re-listing");
                    continue;
                }
            };
            let pods = listed.entries.iter().map(objects::from_entry).collect();
            self.replace(pods, listed.revision);
            loop {
                let event = tokio::select! {
                    _ = shutdown.cancelled() => return,
                    e = watch.next() => e,
                };
                match event {
                    Some(Ok(e)) => {
                        // The API server's own writes come decoded (see RecentWrites).
                        let written = match e.event_type {
                            EventType::Deleted => None,
                            _ => api.recent_writes().take_written(&e.key, e.revision).await,
                        };
                        let pod = written
                            .unwrap_or_else(|| Arc::new(objects::from_bytes(&e.value, e.revision)));
                        self.apply_shared(e.event_type, pod, e.revision);
                    }
                    Some(Err(e)) => {
                        tracing::info!(error = %e, "pod cache: watch fell behind; re-listing");
                        break;
                    }
                    None => return,
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn pod(ns: &str, name: &str, owner_uid: Option<&str>, rv: u64) -> Value {
        let mut p =
            json!({"metadata": {"namespace": ns, "name": name, "resourceVersion": rv.to_string()}});
        if let Some(uid) = owner_uid {
            p["metadata"]["ownerReferences"] =
                json!([{"kind": "ReplicaSet", "name": "rs", "uid": uid, "controller": true}]);
        }
        p
    }

    fn names(pods: &[Arc<Value>]) -> Vec<&str> {
        pods.iter().map(|p| objects::name(p)).collect()
    }

    #[test]
    fn pods_are_indexed_by_namespace_and_controller_and_move_when_adopted() {
        let cache = PodCache::new();
        cache.replace(
            vec![pod("a", "p1", Some("u1"), 1), pod("a", "p2", None, 2)],
            2,
        );
        cache.apply(EventType::Added, pod("b", "p3", Some("u1"), 3), 3);
        assert_eq!(names(&cache.controlled_by("a", "u1")), vec!["p1"]);
        assert_eq!(names(&cache.orphans("a")), vec!["p2"]);
        assert_eq!(names(&cache.list("b")), vec!["p3"]);
        // Adoption: the orphan gets a controller.
        cache.apply(EventType::Modified, pod("a", "p2", Some("u1"), 4), 4);
        assert_eq!(names(&cache.controlled_by("a", "u1")), vec!["p1", "p2"]);
        assert!(cache.orphans("a").is_empty());
        cache.apply(EventType::Deleted, pod("a", "p1", Some("u1"), 5), 5);
        assert_eq!(names(&cache.controlled_by("a", "u1")), vec!["p2"]);
        assert!(cache.get("a", "p1").is_none());
        assert_eq!(cache.revision(), 5);
        assert!(cache.controlled_by("a", "").is_empty());
        // A change under the same controller replaces the pod in both indexes.
        cache.apply(EventType::Modified, pod("a", "p2", Some("u1"), 6), 6);
        let rv = |pods: Vec<Arc<Value>>| -> Vec<Value> {
            pods.iter()
                .map(|p| p["metadata"]["resourceVersion"].clone())
                .collect()
        };
        assert_eq!(rv(cache.controlled_by("a", "u1")), vec![json!("6")]);
        assert_eq!(rv(cache.list("a")), vec![json!("6")]);
        // Orphaned again: back under `""`.
        cache.apply(EventType::Modified, pod("a", "p2", None, 7), 7);
        assert!(cache.controlled_by("a", "u1").is_empty());
        assert_eq!(names(&cache.orphans("a")), vec!["p2"]);
    }

    #[tokio::test]
    async fn the_pods_the_api_hands_over_are_the_stored_ones_and_the_cache_follows_them() {
        use crate::apiserver::fake_agent;
        let (api, _dir) = fake_agent::api().await;
        let res = pods::pods();
        let recent = api.recent_writes();
        let new_pod = |name: &str| {
            json!({"apiVersion": "v1", "kind": "Pod", "metadata": {"name": name, "labels": {"a": "b"}},
                "spec": {"containers": [{"name": "c", "image": "hello:v1"}]}})
        };
        // Nothing is kept while no cache wants it.
        fake_agent::create(&api, new_pod("before")).await;
        assert!(recent.is_empty());

        recent.want();
        let created = fake_agent::create(&api, new_pod("p")).await;
        let rv: Revision = created["metadata"]["resourceVersion"]
            .as_str()
            .unwrap()
            .parse()
            .unwrap();
        let key = res.key(Some("default"), "p");
        let entry = api.get_entry(res, Some("default"), "p").await.unwrap();
        // What a create hands over is exactly what decoding the stored bytes gives.
        let handed = recent.take(&key, rv).expect("the create was kept");
        assert_eq!(*handed, objects::from_entry(&entry));

        api.bind("default", "p", &json!({"target": {"name": "n1"}}))
            .await
            .unwrap();
        let entry = api.get_entry(res, Some("default"), "p").await.unwrap();
        let handed = recent
            .take(&key, entry.mod_revision)
            .expect("the binding was kept");
        assert_eq!(*handed, objects::from_entry(&entry));
        assert_eq!(handed["spec"]["nodeName"], "n1");

        // A status patch (the agent's write) is handed over too, and its response is built
        // from the stored bytes.
        let status = br#"{"status": {"phase": "Running", "podIP": "10.1.0.7"}}"#;
        let (written, _) = api
            .patch_written(
                res,
                Some("default"),
                "p",
                crate::apiserver::patch::PatchType::Merge,
                status,
                Some(crate::apiserver::resources::Subresource::Status),
                &crate::apiserver::api::WriteOptions::default(),
            )
            .await
            .unwrap();
        let entry = api.get_entry(res, Some("default"), "p").await.unwrap();
        let handed = recent
            .take(&key, entry.mod_revision)
            .expect("the status patch was kept");
        assert_eq!(*handed, objects::from_entry(&entry));
        assert_eq!(handed["status"]["phase"], "Running");
        let served: Value = serde_json::from_slice(&written.to_json()).unwrap();
        assert_eq!(served, objects::from_entry(&entry));

        // A running cache ends up with the bound pod whether it takes the hand-over or decodes.
        let cache = PodCache::new();
        let shutdown = CancellationToken::new();
        let task = tokio::spawn(cache.clone().run(api.clone(), shutdown.clone()));
        fake_agent::create(&api, new_pod("q")).await;
        api.bind("default", "q", &json!({"target": {"name": "n2"}}))
            .await
            .unwrap();
        let want = objects::from_entry(&api.get_entry(res, Some("default"), "q").await.unwrap());
        tokio::time::timeout(Duration::from_secs(10), async {
            while cache.get("default", "q").as_deref() != Some(&want) {
                tokio::time::sleep(Duration::from_millis(10)).await;
            }
        })
        .await
        .expect("the cache has the bound pod within 10 s");
        shutdown.cancel();
        task.await.unwrap();
    }

    #[tokio::test]
    async fn subscribers_get_what_is_cached_then_each_change_after_it_is_applied() {
        let cache = PodCache::new();
        cache.replace(vec![pod("a", "p1", Some("u"), 1)], 1);
        cache.wait_synced().await;
        let mut rx = cache.subscribe();
        let first = rx.recv().await.unwrap();
        assert_eq!(first.event_type, EventType::Added);
        cache.apply(EventType::Modified, pod("a", "p1", Some("u"), 2), 2);
        let e = rx.recv().await.unwrap();
        assert_eq!(e.event_type, EventType::Modified);
        assert_eq!(e.prev.unwrap()["metadata"]["resourceVersion"], "1");
        // Whoever gets the event reads a cache at least as new.
        assert_eq!(
            cache.get("a", "p1").unwrap()["metadata"]["resourceVersion"],
            "2"
        );
    }

    #[tokio::test]
    async fn a_relist_reports_only_what_changed_while_the_watch_was_down() {
        let cache = PodCache::new();
        assert!(!cache.is_synced());
        cache.replace(
            vec![pod("a", "same", None, 1), pod("a", "gone", None, 2)],
            2,
        );
        let mut rx = cache.subscribe();
        rx.recv().await.unwrap();
        rx.recv().await.unwrap();
        cache.replace(vec![pod("a", "same", None, 1), pod("a", "new", None, 7)], 9);
        let mut got: Vec<(EventType, String)> = Vec::new();
        while let Ok(e) = rx.try_recv() {
            got.push((e.event_type, objects::name(&e.pod).to_string()));
        }
        got.sort_by(|a, b| a.1.cmp(&b.1));
        assert_eq!(
            got,
            vec![
                (EventType::Deleted, "gone".to_string()),
                (EventType::Added, "new".to_string()),
            ]
        );
        assert_eq!(cache.revision(), 9);
        assert!(cache.is_synced());
    }
}
