//! The machinery every workload controller shares: watches that turn changes into keys of the
//! controller's own kind, a periodic resync, and a work queue that runs one reconcile per key
//! at a time (a key changed while it is being reconciled is reconciled again afterwards),
//! retries failures with a growing delay and honours requeue-after requests.
//!
//! A watched kind's changes come either from the store's watch or, for pods, from the shared
//! [`PodCache`] ([`Source`]). Reconcilers that read the store through [`Api`] always see what
//! was last written; those that read the pod cache guard their writes with
//! [`expectations`](super::expectations). Either way the queue only decides *when* to look
//! again, never *what* is true: every controller is level-triggered and resumes after a
//! restart from nothing but the store.

use std::collections::{BTreeMap, HashMap, HashSet, VecDeque};
use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use serde_json::Value;
use tokio::sync::mpsc;
use tokio::task::JoinSet;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

use crate::apiserver::api::{Api, ListParams};
use crate::apiserver::error::ApiResult;
use crate::apiserver::objects;
use crate::apiserver::resources::ResourceInfo;
use crate::store::EventType;

use super::pod_cache::{PodCache, PodEvent};

/// The namespace and name of an object a controller reconciles.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct ObjectKey {
    /// `metadata.namespace` (`None` for cluster-scoped kinds).
    pub namespace: Option<String>,
    /// `metadata.name`.
    pub name: String,
}

impl ObjectKey {
    /// The name of the key standing for every object of the controller's kind in a namespace
    /// (no object can be named `*`).
    pub const ALL: &'static str = "*";

    /// The key standing for every object of the controller's kind in `namespace`.
    pub fn all_in(namespace: Option<&str>) -> ObjectKey {
        ObjectKey {
            namespace: namespace.map(String::from),
            name: Self::ALL.to_string(),
        }
    }

    /// Whether this key stands for every object in its namespace.
    pub fn is_all(&self) -> bool {
        self.name == Self::ALL
    }

    /// The key of an object.
    pub fn of(obj: &Value) -> ObjectKey {
        ObjectKey {
            namespace: objects::namespace(obj).map(String::from),
            name: objects::name(obj).to_string(),
        }
    }
}

impl std::fmt::Display for ObjectKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match &self.namespace {
            Some(ns) => write!(f, "{ns}/{}", self.name),
            None => f.write_str(&self.name),
        }
    }
}

/// Maps a changed object of a watched kind to the keys of the controller's kind to reconcile;
/// it sees the object's `metadata` only.
pub type KeyMapper = Arc<dyn Fn(&Value) -> Vec<ObjectKey> + Send + Sync>;

/// Sees each pod change of a cache-fed [`Watched`] before its keys are queued (e.g. to lower
/// [`expectations`](super::expectations)).
pub type PodObserver = Arc<dyn Fn(&PodEvent) + Send + Sync>;

/// Decides whether a pod change of a cache-fed [`Watched`] is mapped to keys at all.
pub type PodFilter = Arc<dyn Fn(&PodEvent) -> bool + Send + Sync>;

/// Where a [`Watched`] kind's changes come from.
#[derive(Clone)]
pub enum Source {
    /// The store's watch of the kind (each event's metadata decoded).
    Store,
    /// The shared pod cache's events (the kind is pods).
    Pods {
        /// The cache.
        cache: PodCache,
        /// Shown every event first.
        observe: PodObserver,
        /// Only the events it accepts are mapped (all, without one).
        accept: Option<PodFilter>,
    },
}

/// A kind a controller watches, with how its changes map to the controller's keys.
#[derive(Clone)]
pub struct Watched {
    /// The kind.
    pub res: &'static ResourceInfo,
    /// The mapping.
    pub map: KeyMapper,
    /// Where the changes come from.
    pub source: Source,
}

impl Watched {
    /// The controller's own kind: a change enqueues the object itself.
    pub fn primary(res: &'static ResourceInfo) -> Watched {
        Watched {
            res,
            map: Arc::new(|o| vec![ObjectKey::of(o)]),
            source: Source::Store,
        }
    }

    /// Objects controlled (`ownerReferences` with `controller: true`) by the controller's
    /// kind `owner_kind`: a change enqueues the owner.
    pub fn owned_by(res: &'static ResourceInfo, owner_kind: &'static str) -> Watched {
        Watched {
            res,
            map: Arc::new(move |o| {
                super::owner::controller_ref(o)
                    .filter(|r| r["kind"] == owner_kind)
                    .and_then(|r| r["name"].as_str())
                    .map(|name| {
                        vec![ObjectKey {
                            namespace: objects::namespace(o).map(String::from),
                            name: name.to_string(),
                        }]
                    })
                    .unwrap_or_default()
            }),
            source: Source::Store,
        }
    }

    /// [`Watched::owned_by`], and objects without a controller too: their change enqueues
    /// [`ObjectKey::all_in`] their namespace, so the controller looks for an owner to adopt
    /// them (Kubernetes enqueues every controller whose selector matches an orphan). One
    /// watch for both, so every change is decoded once.
    pub fn owned_by_or_orphan(res: &'static ResourceInfo, owner_kind: &'static str) -> Watched {
        let owned = Self::owned_by(res, owner_kind).map;
        Watched {
            res,
            map: Arc::new(move |o| {
                if super::owner::controller_ref(o).is_some() {
                    return owned(o);
                }
                vec![ObjectKey::all_in(objects::namespace(o))]
            }),
            source: Source::Store,
        }
    }

    /// Any change enqueues `key` (e.g. a node change for a singleton pass).
    pub fn with_map(
        res: &'static ResourceInfo,
        map: impl Fn(&Value) -> Vec<ObjectKey> + Send + Sync + 'static,
    ) -> Watched {
        Watched {
            res,
            map: Arc::new(map),
            source: Source::Store,
        }
    }

    /// The same mapping, fed by `cache`'s events (showing each to `observe` first) instead of
    /// a store watch of its own; `res` must be pods.
    pub fn from_cache(
        self,
        cache: &PodCache,
        observe: impl Fn(&PodEvent) + Send + Sync + 'static,
    ) -> Watched {
        Watched {
            source: Source::Pods {
                cache: cache.clone(),
                observe: Arc::new(observe),
                accept: None,
            },
            ..self
        }
    }

    /// Of a cache-fed watch ([`Watched::from_cache`]), maps only the pod changes `accept`
    /// takes (e.g. deletions).
    pub fn only_when(self, accept: impl Fn(&PodEvent) -> bool + Send + Sync + 'static) -> Watched {
        match self.source {
            Source::Pods { cache, observe, .. } => Watched {
                source: Source::Pods {
                    cache,
                    observe,
                    accept: Some(Arc::new(accept)),
                },
                ..self
            },
            source @ Source::Store => Watched { source, ..self },
        }
    }
}

/// The keys of every object of `res` in `key`'s namespace: what an [`ObjectKey::all_in`] key
/// stands for.
pub async fn expand(api: &Api, res: &ResourceInfo, key: &ObjectKey) -> ApiResult<Vec<ObjectKey>> {
    let (items, _, _) = api
        .list(res, key.namespace.as_deref(), &ListParams::default())
        .await?;
    Ok(items.iter().map(ObjectKey::of).collect())
}

/// The object `key` names, or `None` once it is gone (a reconcile of a deleted object has
/// nothing to do).
pub async fn get_object(
    api: &Api,
    res: &ResourceInfo,
    key: &ObjectKey,
) -> ApiResult<Option<Value>> {
    match api.get(res, key.namespace.as_deref(), &key.name).await {
        Ok(obj) => Ok(Some(obj)),
        Err(e) if e.code == 404 => Ok(None),
        Err(e) => Err(e),
    }
}

/// Reconciles `key` with `sync`: an [`ObjectKey::all_in`] key (an orphan, or a node, changed)
/// syncs every object of `res` in its namespace, one after another; any other key its object.
pub async fn sync_each<F, Fut>(
    api: &Api,
    res: &ResourceInfo,
    key: &ObjectKey,
    sync: F,
) -> ApiResult<Option<Duration>>
where
    F: Fn(ObjectKey) -> Fut,
    Fut: Future<Output = ApiResult<Option<Duration>>>,
{
    if !key.is_all() {
        return sync(key.clone()).await;
    }
    for k in expand(api, res, key).await? {
        sync(k).await?;
    }
    Ok(None)
}

/// A controller's reconcile function.
pub trait Reconciler: Send + Sync + 'static {
    /// Brings the object named by `key` (which may be gone) towards its desired state.
    /// `Ok(Some(d))` asks to look again after `d` even if nothing changes.
    fn reconcile(
        &self,
        key: &ObjectKey,
    ) -> impl Future<Output = ApiResult<Option<Duration>>> + Send;
}

/// Settings of a controller's loop.
#[derive(Debug, Clone)]
pub struct RunnerConfig {
    /// Name for logs.
    pub name: &'static str,
    /// Keys reconciled concurrently.
    pub workers: usize,
    /// Every object of the primary kind is reconciled at least this often.
    pub resync: Duration,
    /// Least time between the starts of two reconciles of one key (Kubernetes' endpoint
    /// controllers' "batch period"): changes arriving sooner are handled together by the next
    /// reconcile. A key's first reconcile is never held back. Zero: no batching.
    pub batch: Duration,
}

/// Delay before the `n`th retry of a failing key: 20 ms doubling to 5 s.
pub fn retry_delay(failures: u32) -> Duration {
    Duration::from_millis(20u64.saturating_mul(1 << failures.min(8))).min(Duration::from_secs(5))
}

/// Runs a controller until `shutdown`: watches (the first of `watched` should be the primary
/// kind, used for the resync) feed the queue; up to `workers` reconciles run at once.
pub async fn run<R: Reconciler>(
    api: Api,
    watched: Vec<Watched>,
    reconciler: Arc<R>,
    config: RunnerConfig,
    shutdown: CancellationToken,
) {
    let (tx, mut rx) = mpsc::unbounded_channel::<ObjectKey>();
    let mut watchers = JoinSet::new();
    for w in &watched {
        match &w.source {
            Source::Store => {
                watchers.spawn(watch_kind(
                    api.clone(),
                    w.clone(),
                    tx.clone(),
                    shutdown.clone(),
                    config.name,
                ));
            }
            Source::Pods {
                cache,
                observe,
                accept,
            } => {
                watchers.spawn(follow_cache(
                    cache.clone(),
                    observe.clone(),
                    accept.clone(),
                    w.map.clone(),
                    tx.clone(),
                    shutdown.clone(),
                ));
            }
        }
    }
    if let Some(primary) = watched.first() {
        watchers.spawn(resync(
            api.clone(),
            primary.res,
            config.resync,
            tx.clone(),
            shutdown.clone(),
        ));
    }
    drop(tx);

    let mut pending: VecDeque<ObjectKey> = VecDeque::new();
    let mut queued: HashSet<ObjectKey> = HashSet::new();
    let mut processing: HashSet<ObjectKey> = HashSet::new();
    let mut dirty: HashSet<ObjectKey> = HashSet::new();
    let mut delayed: BTreeMap<(Instant, u64), ObjectKey> = BTreeMap::new();
    let mut seq = 0u64;
    let mut failures: HashMap<ObjectKey, u32> = HashMap::new();
    // When each recently started key may start again, and the keys waiting for that in
    // `delayed` (so a burst of changes holds one entry per key).
    let mut not_before: HashMap<ObjectKey, Instant> = HashMap::new();
    let mut held: HashSet<ObjectKey> = HashSet::new();
    let mut running: JoinSet<(ObjectKey, ApiResult<Option<Duration>>)> = JoinSet::new();

    let add =
        |key: ObjectKey, pending: &mut VecDeque<ObjectKey>, queued: &mut HashSet<ObjectKey>| {
            if queued.insert(key.clone()) {
                pending.push_back(key);
            }
        };
    loop {
        // Start what can start.
        while running.len() < config.workers.max(1) {
            let Some(key) = pending.pop_front() else {
                break;
            };
            queued.remove(&key);
            if processing.contains(&key) {
                dirty.insert(key);
                continue;
            }
            let now = Instant::now();
            if let Some(&at) = not_before.get(&key)
                && at > now
            {
                if held.insert(key.clone()) {
                    seq += 1;
                    delayed.insert((at, seq), key);
                }
                continue;
            }
            if !config.batch.is_zero() {
                if not_before.len() > 4096 {
                    not_before.retain(|_, at| *at > now);
                }
                not_before.insert(key.clone(), now + config.batch);
            }
            processing.insert(key.clone());
            let r = reconciler.clone();
            running.spawn(async move {
                let result = r.reconcile(&key).await;
                (key, result)
            });
        }
        let next_due = delayed.keys().next().map(|(t, _)| *t);
        tokio::select! {
            _ = shutdown.cancelled() => {
                running.abort_all();
                watchers.abort_all();
                return;
            }
            key = rx.recv() => match key {
                Some(k) => add(k, &mut pending, &mut queued),
                None => tokio::time::sleep(Duration::from_millis(100)).await,
            },
            Some(done) = running.join_next(), if !running.is_empty() => {
                let Ok((key, result)) = done else { continue };
                processing.remove(&key);
                let after = match result {
                    Ok(after) => {
                        failures.remove(&key);
                        after
                    }
                    Err(e) => {
                        let n = failures.entry(key.clone()).or_insert(0);
                        *n += 1;
                        tracing::debug!(controller = config.name, key = %key, error = %e, failures = *n, "reconcile failed; retrying");
                        Some(retry_delay(*n))
                    }
                };
                if dirty.remove(&key) {
                    add(key.clone(), &mut pending, &mut queued);
                } else if let Some(d) = after {
                    if d.is_zero() {
                        add(key.clone(), &mut pending, &mut queued);
                    } else {
                        seq += 1;
                        delayed.insert((Instant::now() + d, seq), key);
                    }
                }
            }
            _ = sleep_until_opt(next_due), if next_due.is_some() => {
                let now = Instant::now();
                while let Some(entry) = delayed.first_entry() {
                    if entry.key().0 > now {
                        break;
                    }
                    let key = entry.remove();
                    held.remove(&key);
                    add(key, &mut pending, &mut queued);
                }
            }
        }
    }
}

async fn sleep_until_opt(t: Option<Instant>) {
    if let Some(t) = t {
        tokio::time::sleep_until(t).await;
    }
}

/// Lists then watches one kind, sending the mapped keys of every object listed and of both
/// the old and the new version of every change; re-lists when the watch ends.
async fn watch_kind(
    api: Api,
    w: Watched,
    tx: mpsc::UnboundedSender<ObjectKey>,
    shutdown: CancellationToken,
    name: &'static str,
) {
    loop {
        if shutdown.is_cancelled() {
            return;
        }
        let (items, rev, _) = match api.list(w.res, None, &ListParams::default()).await {
            Ok(l) => l,
            Err(e) => {
                tracing::warn!(controller = name, kind = w.res.kind, error = %e, "list failed");
                tokio::time::sleep(Duration::from_millis(500)).await;
                continue;
            }
        };
        for item in &items {
            for k in (w.map)(item) {
                let _ = tx.send(k);
            }
        }
        let mut watch = match api.watch(w.res, None, rev) {
            Ok(s) => s,
            Err(_) => continue,
        };
        loop {
            tokio::select! {
                _ = shutdown.cancelled() => return,
                ev = watch.next() => match ev {
                    Some(Ok(e)) => {
                        let obj = metadata_only(&e.value);
                        let mut keys = (w.map)(&obj);
                        if e.event_type != EventType::Added
                            && let Some(prev) = &e.prev {
                                keys.extend((w.map)(&metadata_only(prev)));
                            }
                        keys.sort();
                        keys.dedup();
                        for k in keys {
                            let _ = tx.send(k);
                        }
                    }
                    _ => break,
                },
            }
        }
    }
}

/// Sends the mapped keys of both the old and the new version of every change of the pod
/// cache, after showing the change to `observe`.
async fn follow_cache(
    cache: PodCache,
    observe: PodObserver,
    accept: Option<PodFilter>,
    map: KeyMapper,
    tx: mpsc::UnboundedSender<ObjectKey>,
    shutdown: CancellationToken,
) {
    let mut events = cache.subscribe();
    loop {
        let e = tokio::select! {
            _ = shutdown.cancelled() => return,
            e = events.recv() => match e {
                Some(e) => e,
                None => return,
            },
        };
        observe(&e);
        if accept.as_ref().is_some_and(|accept| !accept(&e)) {
            continue;
        }
        let mut keys = map(&e.pod);
        if let Some(prev) = &e.prev {
            keys.extend(map(prev));
        }
        keys.sort();
        keys.dedup();
        for k in keys {
            let _ = tx.send(k);
        }
    }
}

/// Decodes only the `metadata` of stored object bytes (all a [`KeyMapper`] looks at): watch
/// events of thousands of pods are cheap to map this way.
fn metadata_only(bytes: &[u8]) -> Value {
    #[derive(serde::Deserialize)]
    struct Meta {
        #[serde(default)]
        metadata: Value,
    }
    match serde_json::from_slice::<Meta>(bytes) {
        Ok(m) => serde_json::json!({ "metadata": m.metadata }),
        Err(_) => Value::Null,
    }
}

/// Enqueues every object of the primary kind every `period`.
async fn resync(
    api: Api,
    res: &'static ResourceInfo,
    period: Duration,
    tx: mpsc::UnboundedSender<ObjectKey>,
    shutdown: CancellationToken,
) {
    loop {
        tokio::select! {
            _ = shutdown.cancelled() => return,
            _ = tokio::time::sleep(period) => {}
        }
        if let Ok((items, _, _)) = api.list(res, None, &ListParams::default()).await {
            for item in &items {
                let _ = tx.send(ObjectKey::of(item));
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::apiserver::api::{ApiConfig, WriteOptions};
    use crate::apiserver::resources;
    use crate::store::{RedbStore, RedbStoreConfig};
    use serde_json::json;
    use std::sync::Mutex;

    /// Records when each reconcile started and the `v` it read.
    struct Recording {
        api: Api,
        seen: Mutex<Vec<(Instant, String)>>,
    }

    impl Reconciler for Recording {
        async fn reconcile(&self, key: &ObjectKey) -> ApiResult<Option<Duration>> {
            let start = Instant::now();
            let res = resources::find("", "v1", "configmaps").unwrap();
            let cm = self
                .api
                .get(res, key.namespace.as_deref(), &key.name)
                .await?;
            let v = cm["data"]["v"].as_str().unwrap_or("").to_string();
            self.seen.lock().unwrap().push((start, v));
            Ok(None)
        }
    }

    #[tokio::test]
    async fn a_key_changed_in_a_burst_is_reconciled_once_per_batch_period_and_after_the_last_change()
     {
        let dir = tempfile::tempdir().unwrap();
        let store = RedbStore::open(RedbStoreConfig::new(dir.path().join("s.redb"))).unwrap();
        let api = Api::new(Arc::new(store), ApiConfig::default());
        let namespaces = resources::find("", "v1", "namespaces").unwrap();
        let configmaps = resources::find("", "v1", "configmaps").unwrap();
        let ns = json!({"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": "default"}});
        api.create(namespaces, None, ns, &WriteOptions::default())
            .await
            .unwrap();
        let cm = |v: usize| json!({"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "c", "namespace": "default"}, "data": {"v": v.to_string()}});
        api.create(configmaps, Some("default"), cm(0), &WriteOptions::default())
            .await
            .unwrap();
        let recording = Arc::new(Recording {
            api: api.clone(),
            seen: Mutex::new(Vec::new()),
        });
        let shutdown = CancellationToken::new();
        let batch = Duration::from_millis(100);
        let config = RunnerConfig {
            name: "test",
            workers: 2,
            resync: Duration::from_secs(3600),
            batch,
        };
        let task = tokio::spawn(run(
            api.clone(),
            vec![Watched::primary(configmaps)],
            recording.clone(),
            config,
            shutdown.clone(),
        ));
        for v in 1..=30 {
            api.update(
                configmaps,
                Some("default"),
                "c",
                cm(v),
                None,
                &WriteOptions::default(),
            )
            .await
            .unwrap();
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        let deadline = Instant::now() + Duration::from_secs(10);
        while recording
            .seen
            .lock()
            .unwrap()
            .last()
            .is_none_or(|(_, v)| v != "30")
        {
            assert!(Instant::now() < deadline, "the last change is reconciled");
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        shutdown.cancel();
        let _ = task.await;
        let seen = recording.seen.lock().unwrap();
        // 30 changes ~10 ms apart: a handful of reconciles, a batch period apart (less a
        // margin for a loaded machine's scheduling), not one per change.
        assert!(seen.len() <= 8, "{} reconciles", seen.len());
        for pair in seen.windows(2) {
            let gap = pair[1].0 - pair[0].0;
            assert!(gap >= batch / 2, "{gap:?} apart");
        }
    }

    #[test]
    fn retry_delays_grow_and_are_capped() {
        assert_eq!(retry_delay(0), Duration::from_millis(20));
        assert_eq!(retry_delay(1), Duration::from_millis(40));
        assert!(retry_delay(5) > retry_delay(4));
        assert_eq!(retry_delay(30), Duration::from_secs(5));
    }
}
