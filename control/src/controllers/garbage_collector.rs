//! The garbage collector: carries out `ownerReferences` cascades.
//!
//! - **Background** (the default): once an owner is gone, its dependents are deleted.
//! - **Foreground**: the owner stays, deleting, with the `foregroundDeletion` finalizer (the
//!   API server adds it); its dependents are deleted (themselves in the foreground) and when
//!   none is left the finalizer is removed, completing the owner's deletion.
//! - **Orphan**: the owner stays with the `orphan` finalizer until its dependents no longer
//!   reference it; then the finalizer goes.
//!
//! It works in scans of every object (the graph is rebuilt each time, so nothing is lost
//! over a restart): a scan runs shortly after any deletion or any object entering foreground
//! or orphan deletion, and every few seconds anyway. Before a dependent is deleted for a
//! missing owner the owner is looked up live, so an owner created after the scan's list is
//! never mistaken for a missing one.

use std::collections::{HashMap, HashSet};
use std::time::Duration;

use serde_json::{Value, json};
use tokio_util::sync::CancellationToken;

use super::owner;
use crate::apiserver::api::{Api, DeleteOptions, ListParams, Propagation, WriteOptions};
use crate::apiserver::error::ApiResult;
use crate::apiserver::objects;
use crate::apiserver::resources::{self, RESOURCES, ResourceInfo};
use crate::store::EventType;

/// The finalizer of an owner deleted in the foreground.
pub const FOREGROUND: &str = "foregroundDeletion";
/// The finalizer of an owner whose dependents are orphaned.
pub const ORPHAN: &str = "orphan";
/// A scan runs at least this often.
const RESCAN: Duration = Duration::from_secs(5);
/// Changes arriving within this window share one scan.
const DEBOUNCE: Duration = Duration::from_millis(100);

fn tolerate_gone<T>(r: ApiResult<T>) -> ApiResult<()> {
    match r {
        Ok(_) => Ok(()),
        Err(e) if e.code == 404 || e.code == 409 => Ok(()),
        Err(e) => Err(e),
    }
}

async fn remove_finalizer(
    api: &Api,
    res: &ResourceInfo,
    obj: &Value,
    finalizer: &str,
) -> ApiResult<()> {
    let mut updated = obj.clone();
    let left: Vec<String> = objects::finalizers(obj)
        .into_iter()
        .filter(|f| f != finalizer)
        .collect();
    objects::meta_mut(&mut updated).insert("finalizers".into(), json!(left));
    tolerate_gone(
        api.update(
            res,
            objects::namespace(obj),
            objects::name(obj),
            updated,
            None,
            &WriteOptions::default(),
        )
        .await,
    )
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

/// One pass over every object; returns whether a foreground deletion is still waiting.
pub async fn scan(api: &Api) -> ApiResult<bool> {
    let mut all: Vec<(&'static ResourceInfo, Value)> = Vec::new();
    for res in RESOURCES.iter().filter(|r| r.kind != "Event") {
        let (items, _, _) = api.list(res, None, &ListParams::default()).await?;
        all.extend(items.into_iter().map(|o| (res, o)));
    }
    let uids: HashSet<String> = all.iter().map(|(_, o)| owner::uid(o).to_string()).collect();
    let mut dependents: HashMap<String, Vec<usize>> = HashMap::new();
    for (i, (_, o)) in all.iter().enumerate() {
        for r in o["metadata"]["ownerReferences"]
            .as_array()
            .into_iter()
            .flatten()
        {
            if let Some(u) = r["uid"].as_str() {
                dependents.entry(u.to_string()).or_default().push(i);
            }
        }
    }
    let mut waiting = false;
    for (res, o) in &all {
        let uid = owner::uid(o);
        let deps = dependents.get(uid).map(Vec::as_slice).unwrap_or_default();
        if objects::is_deleting(o) {
            let fins = objects::finalizers(o);
            if fins.iter().any(|f| f == ORPHAN) {
                for &d in deps {
                    let (dres, dep) = &all[d];
                    tolerate_gone(owner::release(api, dres, dep, uid).await)?;
                }
                remove_finalizer(api, res, o, ORPHAN).await?;
            } else if fins.iter().any(|f| f == FOREGROUND) {
                if deps.is_empty() {
                    remove_finalizer(api, res, o, FOREGROUND).await?;
                } else {
                    waiting = true;
                    for &d in deps {
                        let (dres, dep) = &all[d];
                        if objects::is_deleting(dep) {
                            continue;
                        }
                        // Pods own nothing: no need to hold them with a finalizer.
                        let propagation = if dres.kind == "Pod" {
                            Propagation::Background
                        } else {
                            Propagation::Foreground
                        };
                        let opts = DeleteOptions {
                            propagation: Some(propagation),
                            precondition_uid: Some(owner::uid(dep).to_string()),
                            ..Default::default()
                        };
                        tolerate_gone(
                            api.delete(dres, objects::namespace(dep), objects::name(dep), &opts)
                                .await,
                        )?;
                    }
                }
            }
            continue;
        }
        let refs = o["metadata"]["ownerReferences"]
            .as_array()
            .cloned()
            .unwrap_or_default();
        if refs.is_empty()
            || refs
                .iter()
                .any(|r| r["uid"].as_str().is_some_and(|u| uids.contains(u)))
        {
            continue;
        }
        let mut any = false;
        for r in &refs {
            if owner_exists(api, o, r).await? {
                any = true;
                break;
            }
        }
        if !any {
            let opts = DeleteOptions {
                propagation: Some(Propagation::Background),
                precondition_uid: Some(uid.to_string()),
                ..Default::default()
            };
            tolerate_gone(
                api.delete(res, objects::namespace(o), objects::name(o), &opts)
                    .await,
            )?;
        }
    }
    Ok(waiting)
}

fn contains(haystack: &[u8], needle: &[u8]) -> bool {
    haystack.windows(needle.len()).any(|w| w == needle)
}

/// Runs the garbage collector until `shutdown`.
pub async fn run(api: Api, shutdown: CancellationToken) {
    let mut waiting = false;
    'rewatch: loop {
        let rev = api.store().current_revision();
        let mut watch = match api.store().watch("", rev) {
            Ok(w) => w,
            Err(_) => {
                tokio::time::sleep(Duration::from_millis(200)).await;
                continue;
            }
        };
        let mut due = true;
        loop {
            if due {
                // Let a burst of changes land, then look once.
                tokio::time::sleep(DEBOUNCE).await;
                match scan(&api).await {
                    Ok(w) => waiting = w,
                    Err(e) => {
                        tracing::debug!(error = %e, "garbage collection scan failed; retrying");
                        waiting = true;
                    }
                }
            }
            let timer = tokio::time::sleep(if waiting {
                Duration::from_millis(500)
            } else {
                RESCAN
            });
            tokio::select! {
                _ = shutdown.cancelled() => return,
                _ = timer => due = true,
                ev = watch.next() => match ev {
                    Some(Ok(e)) => {
                        let is_pod_or_event = e.key.contains("/pods/") || e.key.contains("/events/") || e.key.contains("/leases/");
                        due = match e.event_type {
                            EventType::Deleted => waiting || !is_pod_or_event,
                            _ => !is_pod_or_event && (contains(&e.value, FOREGROUND.as_bytes()) || contains(&e.value, b"\"orphan\"")),
                        };
                    }
                    _ => continue 'rewatch,
                },
            }
        }
    }
}
