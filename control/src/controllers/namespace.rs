//! The namespace controller: when a namespace is deleted it turns `Terminating`; this
//! controller deletes everything in it, then removes the `kubernetes` finalizer so the namespace
//! itself disappears. It also makes sure every active namespace has its `default`
//! ServiceAccount, as Kubernetes' service-account controller does.

use std::collections::BTreeSet;
use std::time::Duration;

use serde_json::{Value, json};
use tokio_util::sync::CancellationToken;

use crate::apiserver::api::{Api, DeleteOptions, ListParams, Propagation, WriteOptions};
use crate::apiserver::error::ApiResult;
use crate::apiserver::resources::{self, RESOURCES, ResourceInfo};
use crate::apiserver::{events_v1, objects};

fn namespaces() -> &'static ResourceInfo {
    resources::find("", "v1", "namespaces").expect("namespaces served")
}

/// What one reconcile concluded.
#[derive(Debug, PartialEq, Eq)]
pub enum Action {
    /// Nothing more to do until the namespace changes.
    Done,
    /// Content is still being removed: look again shortly.
    RequeueAfter(Duration),
}

/// Reconciles one namespace.
pub async fn reconcile(api: &Api, ns: &Value) -> ApiResult<Action> {
    let name = objects::name(ns).to_string();
    if !objects::is_deleting(ns) {
        ensure_default_service_account(api, &name).await?;
        return Ok(Action::Done);
    }
    let mut remaining = 0usize;
    // A view of another resource's objects (events.k8s.io/v1 Events) holds none of its own.
    for res in RESOURCES
        .iter()
        .filter(|r| r.namespaced && !events_v1::is_view(r))
    {
        let (items, _, _) = api.list(res, Some(&name), &ListParams::default()).await?;
        remaining += items.len();
        for item in items.iter().filter(|i| !objects::is_deleting(i)) {
            let opts = DeleteOptions {
                propagation: Some(Propagation::Background),
                ..Default::default()
            };
            match api
                .delete(res, Some(&name), objects::name(item), &opts)
                .await
            {
                Ok(_) => {}
                Err(e) if e.code == 404 => {}
                Err(e) => return Err(e),
            }
        }
    }
    if remaining > 0 {
        return Ok(Action::RequeueAfter(Duration::from_millis(500)));
    }
    // Empty: drop our finalizer; with no finalizers left the namespace is removed.
    let mut updated = ns.clone();
    let finalizers: Vec<Value> = ns["spec"]["finalizers"]
        .as_array()
        .map(|a| a.iter().filter(|f| *f != "kubernetes").cloned().collect())
        .unwrap_or_default();
    updated["spec"]["finalizers"] = json!(finalizers);
    let rv = objects::resource_version(ns)
        .and_then(Result::ok)
        .unwrap_or(0);
    if finalizers.is_empty() && objects::finalizers(ns).is_empty() {
        match api.finalize_removal(namespaces(), None, &name, rv).await {
            Ok(_) => {}
            Err(e) if e.code == 404 => {}
            Err(e) => return Err(e),
        }
    } else {
        api.update(
            namespaces(),
            None,
            &name,
            updated,
            None,
            &WriteOptions::default(),
        )
        .await?;
    }
    Ok(Action::Done)
}

async fn ensure_default_service_account(api: &Api, ns: &str) -> ApiResult<()> {
    let sa = resources::find("", "v1", "serviceaccounts").expect("serviceaccounts served");
    match api.get(sa, Some(ns), "default").await {
        Ok(_) => Ok(()),
        Err(e) if e.code == 404 => {
            let obj = json!({"apiVersion": "v1", "kind": "ServiceAccount", "metadata": {"name": "default", "namespace": ns}});
            match api
                .create(sa, Some(ns), obj, &WriteOptions::default())
                .await
            {
                Ok(_) => Ok(()),
                // Already made by a concurrent pass, or the namespace is going away.
                Err(e) if e.code == 409 || e.code == 403 || e.code == 404 => Ok(()),
                Err(e) => Err(e),
            }
        }
        Err(e) => Err(e),
    }
}

/// Runs the controller until `shutdown`: a full pass at start and after every watch restart,
/// then one reconcile per changed namespace, requeueing terminating ones.
pub async fn run(api: Api, shutdown: CancellationToken) {
    let res = namespaces();
    'relist: loop {
        if shutdown.is_cancelled() {
            return;
        }
        let (items, rev, _) = match api.list(res, None, &ListParams::default()).await {
            Ok(l) => l,
            Err(e) => {
                tracing::warn!(error = %e, "namespace controller: list failed");
                tokio::time::sleep(Duration::from_secs(1)).await;
                continue;
            }
        };
        let mut queue: BTreeSet<String> =
            items.iter().map(|n| objects::name(n).to_string()).collect();
        let mut watch = match api.watch(res, None, rev) {
            Ok(w) => w,
            Err(_) => continue,
        };
        loop {
            let mut requeue = BTreeSet::new();
            for name in std::mem::take(&mut queue) {
                let ns = match api.get(res, None, &name).await {
                    Ok(ns) => ns,
                    Err(_) => continue,
                };
                match reconcile(&api, &ns).await {
                    Ok(Action::Done) => {}
                    Ok(Action::RequeueAfter(_)) => {
                        requeue.insert(name);
                    }
                    Err(e) => {
                        tracing::debug!(namespace = %name, error = %e, "namespace reconcile failed; retrying");
                        requeue.insert(name);
                    }
                }
            }
            let wait = if requeue.is_empty() {
                Duration::from_secs(3600)
            } else {
                Duration::from_millis(500)
            };
            queue = requeue;
            tokio::select! {
                _ = shutdown.cancelled() => return,
                _ = tokio::time::sleep(wait) => {}
                ev = watch.next() => match ev {
                    Some(Ok(e)) => {
                        let obj = objects::from_bytes(&e.value, e.revision);
                        queue.insert(objects::name(&obj).to_string());
                    }
                    _ => continue 'relist,
                },
            }
        }
    }
}
