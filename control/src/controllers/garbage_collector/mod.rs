//! The garbage collector: carries out `ownerReferences` cascades.
//!
//! - **Background** (the default): once an owner is gone, its dependents are deleted.
//! - **Foreground**: the owner stays, deleting, with the `foregroundDeletion` finalizer (the
//!   API server adds it); its dependents are deleted (themselves in the foreground) and when
//!   none is left the finalizer is removed, completing the owner's deletion.
//! - **Orphan**: the owner stays with the `orphan` finalizer until its dependents no longer
//!   reference it; then the finalizer goes.
//!
//! As in Kubernetes it keeps a dependency [`graph`] of every object, built from one list of
//! the store and kept current by the store's watch; each change names the few objects to look
//! at again, and those are read live before anything is written. An owner is looked up live
//! before a dependent is deleted for missing it, so an owner created after its dependent is
//! never mistaken for a missing one. A dependent that still has an owner loses only the
//! references to owners that are gone. The graph is rebuilt when the watch breaks, so nothing
//! is lost over a restart or a compaction, and an idle cluster costs nothing however many
//! objects it holds.

pub mod graph;

use std::collections::{HashMap, HashSet, VecDeque};
use std::time::Duration;

use serde_json::Value;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

use self::graph::{Graph, Node};
use super::finalizers;
use super::owner;
use super::runner::retry_delay;
use crate::apiserver::api::{Api, DeleteOptions, Propagation};
use crate::apiserver::error::ApiResult;
use crate::apiserver::objects;
use crate::apiserver::resources::{self, RESOURCES, ResourceInfo};
use crate::store::{EventType, ListOptions, WatchEvent};

/// The finalizer of an owner deleted in the foreground.
pub const FOREGROUND: &str = "foregroundDeletion";
/// The finalizer of an owner whose dependents are orphaned.
pub const ORPHAN: &str = "orphan";

fn tolerate_gone<T>(r: ApiResult<T>) -> ApiResult<()> {
    match r {
        Ok(_) => Ok(()),
        Err(e) if e.code == 404 || e.code == 409 => Ok(()),
        Err(e) => Err(e),
    }
}

/// Whether the owner a reference names still exists (with that uid), read live.
async fn owner_exists(api: &Api, dependent: &Value, r: &Value) -> ApiResult<bool> {
    let Some(res) = resources::find_kind(
        r["apiVersion"].as_str().unwrap_or(""),
        r["kind"].as_str().unwrap_or(""),
    ) else {
        // A kind this server does not serve cannot be checked: keep the dependent.
        return Ok(true);
    };
    let ns = if res.namespaced {
        objects::namespace(dependent)
    } else {
        None
    };
    match api.get(res, ns, r["name"].as_str().unwrap_or("")).await {
        Ok(o) => Ok(owner::uid(&o) == r["uid"].as_str().unwrap_or("")),
        Err(e) if e.code == 404 => Ok(false),
        Err(e) => Err(e),
    }
}

/// Looks at one object of the graph, read live: finishes a foreground or orphan deletion it
/// is in, or deletes it when none of its owners exists any more (and drops the references to
/// owners that are gone when some other owner remains).
async fn attend_to(api: &Api, graph: &Graph, uid: &str) -> ApiResult<()> {
    let Some(node) = graph.node(uid) else {
        return Ok(());
    };
    let obj = match api
        .get(node.res, node.namespace.as_deref(), &node.name)
        .await
    {
        Ok(o) if owner::uid(&o) == uid => o,
        // Gone, or another object of the same name: the watch tells the rest.
        Ok(_) => return Ok(()),
        Err(e) if e.code == 404 => return Ok(()),
        Err(e) => return Err(e),
    };
    if objects::is_deleting(&obj) {
        let finalizers = objects::finalizers(&obj);
        if finalizers.iter().any(|f| f == ORPHAN) {
            for d in graph.dependents(uid) {
                if let Some(dep) = live(api, graph, &d).await? {
                    let res = graph.node(&d).expect("a dependent is in the graph").res;
                    tolerate_gone(owner::release(api, res, &dep, &[uid]).await)?;
                }
            }
            finalizers::remove(api, node.res, &obj, ORPHAN).await?;
        } else if finalizers.iter().any(|f| f == FOREGROUND) {
            let dependents = graph.dependents(uid);
            if dependents.is_empty() {
                return finalizers::remove(api, node.res, &obj, FOREGROUND).await;
            }
            for d in dependents {
                let dep = graph.node(&d).expect("a dependent is in the graph");
                if dep.deleting {
                    continue;
                }
                // Pods own nothing: no need to hold them with a finalizer.
                let propagation = if dep.res.kind == "Pod" {
                    Propagation::Background
                } else {
                    Propagation::Foreground
                };
                let opts = DeleteOptions {
                    propagation: Some(propagation),
                    precondition_uid: Some(d.clone()),
                    ..Default::default()
                };
                tolerate_gone(
                    api.delete(dep.res, dep.namespace.as_deref(), &dep.name, &opts)
                        .await,
                )?;
            }
        }
        return Ok(());
    }
    let refs = obj["metadata"]["ownerReferences"]
        .as_array()
        .cloned()
        .unwrap_or_default();
    if refs.is_empty() {
        return Ok(());
    }
    let mut solid = false;
    let mut dangling: Vec<&str> = Vec::new();
    for r in &refs {
        if owner_exists(api, &obj, r).await? {
            solid = true;
        } else {
            dangling.push(r["uid"].as_str().unwrap_or(""));
        }
    }
    if solid {
        if !dangling.is_empty() {
            tolerate_gone(owner::release(api, node.res, &obj, &dangling).await)?;
        }
        return Ok(());
    }
    let opts = DeleteOptions {
        propagation: Some(Propagation::Background),
        precondition_uid: Some(uid.to_string()),
        ..Default::default()
    };
    tolerate_gone(
        api.delete(node.res, node.namespace.as_deref(), &node.name, &opts)
            .await,
    )
}

/// The object of the graph with this uid, read live (`None` if gone or replaced).
async fn live(api: &Api, graph: &Graph, uid: &str) -> ApiResult<Option<Value>> {
    let Some(node) = graph.node(uid) else {
        return Ok(None);
    };
    match api
        .get(node.res, node.namespace.as_deref(), &node.name)
        .await
    {
        Ok(o) => Ok((owner::uid(&o) == uid).then_some(o)),
        Err(e) if e.code == 404 => Ok(None),
        Err(e) => Err(e),
    }
}

/// The resources the collector follows (all but Events, which own nothing and are owned by
/// nothing), with their store key prefixes.
fn followed() -> Vec<(String, &'static ResourceInfo)> {
    RESOURCES
        .iter()
        .filter(|r| r.kind != "Event")
        .map(|r| (r.key_prefix(), r))
        .collect()
}

fn contains(haystack: &[u8], needle: &[u8]) -> bool {
    memchr::memmem::find(haystack, needle).is_some()
}

/// Whether stored bytes may carry anything the graph keeps beyond the object's identity.
fn has_graph_metadata(bytes: &[u8]) -> bool {
    contains(bytes, b"\"ownerReferences\"")
        || contains(bytes, b"\"deletionTimestamp\"")
        || contains(bytes, b"\"finalizers\"")
}

/// Applies one watch event to the graph; pushes onto `attend` the uids to look at.
fn apply(
    graph: &mut Graph,
    prefixes: &[(String, &'static ResourceInfo)],
    e: &WatchEvent,
    attend: &mut Vec<String>,
) {
    let Some(&(_, res)) = prefixes.iter().find(|(p, _)| e.key.starts_with(p.as_str())) else {
        return;
    };
    // Most writes are status updates of objects that neither have nor had owners,
    // finalizers or a deletion under way: they cannot change the graph.
    if e.event_type == EventType::Modified
        && !has_graph_metadata(&e.value)
        && e.prev.as_deref().is_some_and(|p| !has_graph_metadata(p))
    {
        return;
    }
    let Some((uid, node)) = Node::parse(res, &e.value) else {
        return;
    };
    match e.event_type {
        EventType::Deleted => graph.remove(&uid, attend),
        _ => graph.upsert(uid, node, attend),
    }
}

/// Builds the graph from a list of every followed resource.
async fn build(api: &Api, prefixes: &[(String, &'static ResourceInfo)]) -> ApiResult<Graph> {
    let mut graph = Graph::default();
    let mut ignored = Vec::new();
    for (prefix, res) in prefixes {
        let listed = api
            .store()
            .list(prefix, ListOptions::default())
            .await
            .map_err(|e| crate::apiserver::error::ApiError::from_store(e, res, ""))?;
        for entry in listed.entries {
            if let Some((uid, node)) = Node::parse(res, &entry.value) {
                graph.upsert(uid, node, &mut ignored);
            }
        }
        ignored.clear();
    }
    Ok(graph)
}

/// The uids waiting to be looked at, each once, and those to retry after a failure.
#[derive(Default)]
struct WorkQueue {
    ready: VecDeque<String>,
    queued: HashSet<String>,
    failures: HashMap<String, u32>,
    delayed: Vec<(Instant, String)>,
}

impl WorkQueue {
    fn push(&mut self, uid: String) {
        if self.queued.insert(uid.clone()) {
            self.ready.push_back(uid);
        }
    }

    fn pop(&mut self) -> Option<String> {
        let uid = self.ready.pop_front()?;
        self.queued.remove(&uid);
        Some(uid)
    }

    /// Looks at `uid` again after a delay that grows with its consecutive failures.
    fn failed(&mut self, uid: String) {
        let failures = self.failures.entry(uid.clone()).or_insert(0);
        let delay = retry_delay(*failures);
        *failures += 1;
        self.delayed.push((Instant::now() + delay, uid));
    }

    fn succeeded(&mut self, uid: &str) {
        self.failures.remove(uid);
    }

    /// Makes the retries due at `now` ready; returns when the next one is due.
    fn promote(&mut self, now: Instant) -> Option<Instant> {
        let (due, later): (Vec<_>, Vec<_>) = self.delayed.drain(..).partition(|(at, _)| *at <= now);
        self.delayed = later;
        for (_, uid) in due {
            self.push(uid);
        }
        self.delayed.iter().map(|(at, _)| *at).min()
    }
}

/// Runs the garbage collector until `shutdown`.
pub async fn run(api: Api, shutdown: CancellationToken) {
    let prefixes = followed();
    'rebuild: loop {
        if shutdown.is_cancelled() {
            return;
        }
        // Watch from before the list: events the list already shows are applied again, which
        // leaves the graph as it was.
        let rev = api.store().current_revision();
        let (mut graph, mut watch) =
            match (build(&api, &prefixes).await, api.store().watch("", rev)) {
                (Ok(g), Ok(w)) => (g, w),
                (Err(e), _) => {
                    tracing::debug!(error = %e, "garbage collector: list failed; retrying");
                    tokio::time::sleep(Duration::from_millis(200)).await;
                    continue;
                }
                (_, Err(e)) => {
                    tracing::debug!(error = %e, "garbage collector: watch failed; retrying");
                    tokio::time::sleep(Duration::from_millis(200)).await;
                    continue;
                }
            };
        tracing::debug!(objects = graph.len(), "garbage collector: graph built");
        let mut queue = WorkQueue::default();
        for uid in graph.needing_attention() {
            queue.push(uid);
        }
        let mut attend = Vec::new();
        loop {
            // Bring the graph up to date with every event already delivered, then look at
            // what they named: a dependent is judged against the newest graph.
            while let Some(ev) = watch.try_next() {
                match ev {
                    Some(Ok(e)) => apply(&mut graph, &prefixes, &e, &mut attend),
                    _ => continue 'rebuild,
                }
            }
            for uid in attend.drain(..) {
                queue.push(uid);
            }
            if let Some(uid) = queue.pop() {
                match attend_to(&api, &graph, &uid).await {
                    Ok(()) => queue.succeeded(&uid),
                    Err(e) => {
                        tracing::debug!(%uid, error = %e, "garbage collection failed; retrying");
                        queue.failed(uid);
                    }
                }
                continue;
            }
            let next_retry = queue.promote(Instant::now());
            if !queue.ready.is_empty() {
                continue;
            }
            let retry = async {
                match next_retry {
                    Some(at) => tokio::time::sleep_until(at).await,
                    None => std::future::pending().await,
                }
            };
            tokio::select! {
                _ = shutdown.cancelled() => return,
                _ = retry => {}
                ev = watch.next() => match ev {
                    Some(Ok(e)) => apply(&mut graph, &prefixes, &e, &mut attend),
                    _ => continue 'rebuild,
                },
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::apiserver::api::{ApiConfig, WriteOptions};
    use crate::store::{RedbStore, RedbStoreConfig};
    use serde_json::json;
    use std::sync::Arc;

    fn configmaps() -> &'static ResourceInfo {
        resources::find("", "v1", "configmaps").unwrap()
    }

    async fn create(api: &Api, name: &str, owners: &[(&str, &str)]) -> String {
        let refs: Vec<Value> = owners
            .iter()
            .map(|(n, u)| json!({"apiVersion": "v1", "kind": "ConfigMap", "name": n, "uid": u}))
            .collect();
        let mut cm = json!({"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": name, "namespace": "default"}});
        if !refs.is_empty() {
            cm["metadata"]["ownerReferences"] = json!(refs);
        }
        let created = api
            .create(configmaps(), Some("default"), cm, &WriteOptions::default())
            .await
            .unwrap();
        owner::uid(&created.0).to_string()
    }

    async fn get(api: &Api, name: &str) -> Option<Value> {
        api.get(configmaps(), Some("default"), name).await.ok()
    }

    async fn wait_until<F, Fut>(what: &str, mut f: F)
    where
        F: FnMut() -> Fut,
        Fut: Future<Output = bool>,
    {
        let deadline = Instant::now() + Duration::from_secs(10);
        while !f().await {
            assert!(Instant::now() < deadline, "timed out waiting: {what}");
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    }

    #[tokio::test]
    async fn cascades_follow_the_watch_and_dangling_references_are_dropped() {
        let dir = tempfile::tempdir().unwrap();
        let store = RedbStore::open(RedbStoreConfig::new(dir.path().join("s.redb"))).unwrap();
        let api = Api::new(Arc::new(store), ApiConfig::default());
        let namespaces = resources::find("", "v1", "namespaces").unwrap();
        let ns = json!({"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": "default"}});
        api.create(namespaces, None, ns, &WriteOptions::default())
            .await
            .unwrap();
        // Objects from before the collector starts are in its first graph.
        let owner = create(&api, "owner", &[]).await;
        let keeper = create(&api, "keeper", &[]).await;
        create(&api, "only-child", &[("owner", &owner)]).await;
        create(
            &api,
            "two-owners",
            &[("owner", &owner), ("keeper", &keeper)],
        )
        .await;
        create(&api, "never-owned", &[("ghost", "no-such-uid")]).await;

        let shutdown = CancellationToken::new();
        let task = tokio::spawn(run(api.clone(), shutdown.clone()));
        wait_until(
            "a dependent of an owner that never existed is deleted",
            || {
                let api = api.clone();
                async move { get(&api, "never-owned").await.is_none() }
            },
        )
        .await;

        // Background: the owner goes at once, its only child after it; the child with
        // another owner stays and loses the reference to the one that went.
        api.delete(
            configmaps(),
            Some("default"),
            "owner",
            &DeleteOptions::default(),
        )
        .await
        .unwrap();
        wait_until("the only child is deleted", || {
            let api = api.clone();
            async move { get(&api, "only-child").await.is_none() }
        })
        .await;
        wait_until("the dangling reference is dropped", || {
            let api = api.clone();
            async move {
                get(&api, "two-owners").await.is_some_and(|o| {
                    o["metadata"]["ownerReferences"]
                        .as_array()
                        .is_some_and(|r| r.len() == 1 && r[0]["name"] == "keeper")
                })
            }
        })
        .await;

        // Foreground, on objects created after the graph was built: the child goes first,
        // then the owner.
        let parent = create(&api, "parent", &[]).await;
        create(&api, "child", &[("parent", &parent)]).await;
        let opts = DeleteOptions {
            propagation: Some(Propagation::Foreground),
            ..Default::default()
        };
        api.delete(configmaps(), Some("default"), "parent", &opts)
            .await
            .unwrap();
        wait_until("the foreground owner is gone", || {
            let api = api.clone();
            async move { get(&api, "parent").await.is_none() }
        })
        .await;
        assert!(get(&api, "child").await.is_none(), "the child went first");

        // Orphan: the dependent stays, without the reference.
        let parent = create(&api, "orphaner", &[]).await;
        create(&api, "orphan", &[("orphaner", &parent)]).await;
        let opts = DeleteOptions {
            propagation: Some(Propagation::Orphan),
            ..Default::default()
        };
        api.delete(configmaps(), Some("default"), "orphaner", &opts)
            .await
            .unwrap();
        wait_until("the orphaning owner is gone", || {
            let api = api.clone();
            async move { get(&api, "orphaner").await.is_none() }
        })
        .await;
        let orphan = get(&api, "orphan").await.expect("the orphan stays");
        assert!(orphan["metadata"]["ownerReferences"].is_null(), "{orphan}");
        assert!(get(&api, "keeper").await.is_some());
        shutdown.cancel();
        let _ = task.await;
    }
}
