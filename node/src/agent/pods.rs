//! Watches the pods bound to this node (`fieldSelector=spec.nodeName=NAME`) through kube's
//! watcher (list, then watch, re-listing after errors with backoff) and hands each pod to its
//! worker: a new pod starts a worker, an update is passed on, a deletion stops it.

use std::collections::{HashMap, HashSet};
use std::sync::Arc;

use futures::StreamExt;
use k8s_openapi::api::core::v1::Pod;
use kube::Api;
use kube::runtime::WatchStreamExt;
use kube::runtime::watcher::{self, Event};
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use crate::pod::{PodContext, PodWorker};

fn key(pod: &Pod) -> String {
    match &pod.metadata.uid {
        Some(uid) => uid.clone(),
        None => format!(
            "{}/{}",
            pod.metadata.namespace.as_deref().unwrap_or(""),
            pod.metadata.name.as_deref().unwrap_or("")
        ),
    }
}

/// Runs until `shutdown`; workers are spawned on `tasks` and stop with `shutdown` too.
pub async fn dispatch(ctx: Arc<PodContext>, tasks: TaskTracker, shutdown: CancellationToken) {
    let api: Api<Pod> = Api::all(ctx.client.clone());
    let config = watcher::Config::default().fields(&format!("spec.nodeName={}", ctx.node_name));
    let stream = watcher::watcher(api, config).default_backoff();
    futures::pin_mut!(stream);
    let mut workers: HashMap<String, PodWorker> = HashMap::new();
    let mut listed: Option<HashSet<String>> = None;
    loop {
        let event = tokio::select! {
            e = stream.next() => e,
            _ = shutdown.cancelled() => return,
        };
        let apply = |pod: Pod, workers: &mut HashMap<String, PodWorker>| {
            let k = key(&pod);
            match workers.get(&k) {
                Some(w) => w.update(pod),
                None => {
                    tracing::debug!(pod = ?pod.metadata.name, "pod worker started");
                    let w = PodWorker::spawn(ctx.clone(), pod, &tasks, shutdown.child_token());
                    workers.insert(k, w);
                }
            }
        };
        match event {
            Some(Ok(Event::Init)) => listed = Some(HashSet::new()),
            Some(Ok(Event::InitApply(pod))) => {
                if let Some(l) = listed.as_mut() {
                    l.insert(key(&pod));
                }
                apply(pod, &mut workers);
            }
            Some(Ok(Event::InitDone)) => {
                if let Some(listed) = listed.take() {
                    // Pods that vanished while the watch was down.
                    workers.retain(|k, w| {
                        let keep = listed.contains(k);
                        if !keep {
                            w.gone();
                        }
                        keep
                    });
                }
            }
            Some(Ok(Event::Apply(pod))) => apply(pod, &mut workers),
            Some(Ok(Event::Delete(pod))) => {
                if let Some(w) = workers.remove(&key(&pod)) {
                    w.gone();
                }
            }
            Some(Err(e)) => {
                tracing::warn!(error = %e, "watching this node's pods failed; retrying")
            }
            None => return,
        }
    }
}
