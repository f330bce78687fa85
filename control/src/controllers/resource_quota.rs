//! The resource-quota controller (kube-controller-manager's): keeps each ResourceQuota's
//! status, which the ResourceQuota admission step ([`crate::apiserver::resource_quota`])
//! reads and charges.
//!
//! `status.hard` is the quota's `spec.hard`; `status.used` is counted, for each resource of
//! it, from the objects of the quota's namespace that the quota selects
//! ([`quota_usage`](crate::apiserver::quota_usage)). A namespace is recounted when a quota's
//! `spec.hard` differs from its `status.hard` (a new or changed quota), when one of its pods
//! is deleted, starts being deleted, or stops counting (it finished, or passed its deletion
//! grace period, which a recount schedules a look at), when one
//! of its Services, claims, ConfigMaps, Secrets or workloads changes, and every five minutes
//! (Kubernetes' `--resource-quota-sync-period`) for the rest. A pod's creation needs no
//! recount (admission charged it), which keeps a namespace with many pods cheap. A recount
//! holds the namespace's charge lock, so it sees every object admission has charged for.

use std::collections::{HashMap, HashSet};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use chrono::{DateTime, Utc};
use serde_json::{Value, json};
use tokio_util::sync::CancellationToken;

use crate::apiserver::api::{Api, ListParams};
use crate::apiserver::error::ApiResult;
use crate::apiserver::objects;
use crate::apiserver::quota_usage::{self as usage, Amount, ResourceList, ScopeSelector};
use crate::apiserver::resource_quota::resource_quotas;
use crate::apiserver::resources::{self, ResourceInfo};

use super::pod_cache::{PodCache, PodEvent};
use super::pods::{self, parse_time};
use super::replicaset::write_status;
use super::runner::{self, ObjectKey, Reconciler, RunnerConfig, Watched};
use crate::store::EventType;

/// How often every quota is recounted even if nothing it watches changed.
const RESYNC: Duration = Duration::from_secs(300);

/// The controller.
struct QuotaController {
    api: Api,
    /// Namespaces that hold a quota: only their objects' changes are worth a recount.
    with_quotas: Arc<Mutex<HashSet<String>>>,
    /// When each namespace was last recounted.
    counted: Mutex<HashMap<String, tokio::time::Instant>>,
}

/// Whether a quota's status is what its spec asks for: `status.hard` is `spec.hard` and
/// `status.used` has every resource of it.
fn status_current(quota: &Value) -> bool {
    let status = &quota["status"];
    status["hard"] == quota["spec"]["hard"]
        && quota["spec"]["hard"]
            .as_object()
            .into_iter()
            .flatten()
            .all(|(k, _)| status["used"].get(k).is_some())
}

/// Whether a pod change gives quota back: a deletion, a pod that stops counting, or one
/// that starts being deleted (its recount looks again when its grace period runs out).
fn gives_back(e: &PodEvent) -> bool {
    let now = Utc::now();
    match e.event_type {
        EventType::Deleted => true,
        _ => e.prev.as_ref().is_some_and(|prev| {
            (usage::pod_is_counted(prev, now) && !usage::pod_is_counted(&e.pod, now))
                || (!objects::is_deleting(prev) && objects::is_deleting(&e.pod))
        }),
    }
}

/// A quota as a recount sees it: its hard amounts and scopes.
struct Limits {
    hard: ResourceList,
    scopes: Vec<ScopeSelector>,
}

impl Limits {
    /// The limits of `quota` (a ResourceQuota's JSON).
    fn of(quota: &Value) -> Limits {
        Limits {
            hard: usage::list_from_json(&quota["spec"]["hard"]),
            scopes: usage::scope_selectors(quota),
        }
    }

    /// Nothing used yet of each resource in `hard`: where a recount starts.
    fn nothing_used(&self) -> ResourceList {
        self.hard
            .keys()
            .map(|k| (k.clone(), Amount::count(0)))
            .collect()
    }
}

/// Adds to each quota's `used` (by index of `limits`) the usage of the `objects` of `res` it
/// selects, for each resource of its `hard`. An object's usage is worked out once, whatever
/// the number of quotas.
fn count(
    used: &mut [ResourceList],
    limits: &[Limits],
    res: &ResourceInfo,
    objects: &[Value],
    now: DateTime<Utc>,
) {
    for obj in objects {
        let mut all: Option<ResourceList> = None;
        for (l, used) in limits.iter().zip(used.iter_mut()) {
            let names = usage::matching_resources(&l.hard, &l.scopes, res, obj);
            if names.is_empty() {
                continue;
            }
            let all = all.get_or_insert_with(|| usage::usage(res, obj, now));
            let mine: ResourceList = all
                .iter()
                .filter(|(k, _)| names.contains(k))
                .map(|(k, v)| (k.clone(), *v))
                .collect();
            *used = usage::add(used, &mine);
        }
    }
}

/// When the first pod of `pods` still counted stops counting because its deletion grace
/// period runs out.
fn next_grace_expiry(pods: &[Value], now: DateTime<Utc>) -> Option<DateTime<Utc>> {
    pods.iter()
        .filter(|p| usage::pod_is_counted(p, now))
        .filter_map(|p| {
            let at = parse_time(&p["metadata"]["deletionTimestamp"])?;
            let grace = p["metadata"]["deletionGracePeriodSeconds"].as_i64()?;
            Some(at + chrono::TimeDelta::seconds(grace) + chrono::TimeDelta::milliseconds(10))
        })
        .min()
}

impl QuotaController {
    /// Recounts the quotas of `ns`.
    async fn sync_namespace(&self, ns: &str) -> ApiResult<Option<Duration>> {
        let _held = self.api.quota_charge_locks().recount(ns).await;
        self.counted
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .insert(ns.to_string(), tokio::time::Instant::now());
        let (quotas, _, _) = self
            .api
            .list(resource_quotas(), Some(ns), &ListParams::default())
            .await?;
        let quotas: Vec<Value> = quotas
            .into_iter()
            .filter(|q| !objects::is_deleting(q))
            .collect();
        if quotas.is_empty() {
            return Ok(None);
        }
        self.with_quotas
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .insert(ns.to_string());
        let limits: Vec<Limits> = quotas.iter().map(Limits::of).collect();
        let now = Utc::now();
        let mut used: Vec<ResourceList> = limits.iter().map(Limits::nothing_used).collect();
        let mut recheck = None;
        // Each kind any quota counts is listed once, from the store.
        for res in resources::RESOURCES {
            if !limits
                .iter()
                .any(|l| l.hard.keys().any(|k| usage::tracks(res, k)))
            {
                continue;
            }
            let (listed, _, _) = self.api.list(res, Some(ns), &ListParams::default()).await?;
            if res.group.is_empty() && res.kind == "Pod" {
                recheck = next_grace_expiry(&listed, now);
            }
            count(&mut used, &limits, res, &listed, now);
        }
        for ((q, used), limits) in quotas.iter().zip(&used).zip(&limits) {
            let mut status = q["status"].clone();
            if !status.is_object() {
                status = json!({});
            }
            status["hard"] = q["spec"]["hard"].clone();
            if limits.hard.is_empty() && q["spec"]["hard"].is_null() {
                status.as_object_mut().map(|s| s.remove("hard"));
            }
            status["used"] = usage::list_to_json(used);
            write_status(&self.api, resource_quotas(), q, status).await?;
        }
        Ok(recheck.and_then(|at| (at - now).to_std().ok()))
    }
}

impl Reconciler for QuotaController {
    async fn reconcile(&self, key: &ObjectKey) -> ApiResult<Option<Duration>> {
        let ns = key.namespace.as_deref().unwrap_or("default");
        if !key.is_all() {
            // A quota's own change (most often admission charging it) needs a recount only
            // when its spec changed, or when the namespace is due one.
            let Some(quota) = runner::get_object(&self.api, resource_quotas(), key).await? else {
                return Ok(None);
            };
            let due = self
                .counted
                .lock()
                .unwrap_or_else(|p| p.into_inner())
                .get(ns)
                .is_none_or(|at| at.elapsed() >= RESYNC / 2);
            if status_current(&quota) && !due {
                return Ok(None);
            }
        }
        self.sync_namespace(ns).await
    }
}

/// Runs the resource-quota controller until `shutdown`, following pods through `pods`.
pub async fn run(api: Api, pods: PodCache, shutdown: CancellationToken) {
    let with_quotas: Arc<Mutex<HashSet<String>>> = Arc::default();
    let in_quota_namespace = |known: Arc<Mutex<HashSet<String>>>| {
        move |obj: &Value| {
            let ns = objects::namespace(obj).unwrap_or("default");
            if known.lock().unwrap_or_else(|p| p.into_inner()).contains(ns) {
                vec![ObjectKey::all_in(Some(ns))]
            } else {
                Vec::new()
            }
        }
    };
    let mut watched = vec![
        Watched::primary(resource_quotas()),
        Watched::with_map(pods::pods(), in_quota_namespace(with_quotas.clone()))
            .from_cache(&pods, |_| {})
            .only_when(gives_back),
    ];
    for (group, plural) in [
        ("", "services"),
        ("", "persistentvolumeclaims"),
        ("", "configmaps"),
        ("", "secrets"),
        ("apps", "deployments"),
        ("apps", "replicasets"),
        ("apps", "statefulsets"),
        ("apps", "daemonsets"),
        ("batch", "jobs"),
        ("batch", "cronjobs"),
    ] {
        let res = resources::find(group, "v1", plural).expect("a served kind");
        watched.push(Watched::with_map(
            res,
            in_quota_namespace(with_quotas.clone()),
        ));
    }
    let controller = QuotaController {
        api: api.clone(),
        with_quotas,
        counted: Mutex::default(),
    };
    let config = RunnerConfig {
        name: "resourcequota",
        workers: 2,
        resync: RESYNC,
        batch: Duration::from_millis(100),
    };
    runner::run(api, watched, Arc::new(controller), config, shutdown).await;
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn each_quota_counts_what_it_selects_and_zero_for_the_rest() {
        let pods = resources::find("", "v1", "pods").unwrap();
        let quota = json!({"spec": {"hard": {"pods": "5", "requests.cpu": "2",
            "services": "1"}, "scopes": ["NotBestEffort"]}});
        let best_effort = json!({"spec": {"hard": {"pods": "9"}, "scopes": ["BestEffort"]}});
        let limits: Vec<Limits> = [&quota, &best_effort]
            .iter()
            .map(|q| Limits::of(q))
            .collect();
        let mut used: Vec<ResourceList> = limits.iter().map(Limits::nothing_used).collect();
        let pod = |cpu: Option<&str>, phase: &str| {
            let mut p = json!({"spec": {"containers": [{"name": "c"}]},
                "status": {"phase": phase}});
            if let Some(cpu) = cpu {
                p["spec"]["containers"][0]["resources"] = json!({"requests": {"cpu": cpu}});
            }
            p
        };
        let listed = [
            pod(Some("500m"), "Running"),
            pod(Some("1"), "Pending"),
            pod(None, "Running"),
            pod(Some("1"), "Succeeded"),
        ];
        count(&mut used, &limits, pods, &listed, Utc::now());
        assert_eq!(
            usage::list_to_json(&used[0]),
            json!({"pods": "2", "requests.cpu": "1500m", "services": "0"})
        );
        assert_eq!(usage::list_to_json(&used[1]), json!({"pods": "1"}));
    }

    #[test]
    fn deletions_and_pods_that_stop_counting_give_back_and_creations_do_not() {
        let running = Arc::new(json!({"status": {"phase": "Running"}}));
        let done = Arc::new(json!({"status": {"phase": "Failed"}}));
        let event = |event_type, pod: &Arc<Value>, prev: Option<&Arc<Value>>| PodEvent {
            event_type,
            pod: pod.clone(),
            prev: prev.cloned(),
        };
        assert!(!gives_back(&event(EventType::Added, &running, None)));
        assert!(!gives_back(&event(
            EventType::Modified,
            &running,
            Some(&running)
        )));
        assert!(gives_back(&event(
            EventType::Modified,
            &done,
            Some(&running)
        )));
        assert!(!gives_back(&event(EventType::Modified, &done, Some(&done))));
        assert!(gives_back(&event(EventType::Deleted, &running, None)));
        let deleting = Arc::new(
            json!({"metadata": {"deletionTimestamp": "2026-12-07T20:00:00Z",
            "deletionGracePeriodSeconds": 30000}, "status": {"phase": "Running"}}),
        );
        assert!(gives_back(&event(
            EventType::Modified,
            &deleting,
            Some(&running)
        )));
        assert!(!gives_back(&event(
            EventType::Modified,
            &deleting,
            Some(&deleting)
        )));
    }

    #[test]
    fn a_quota_whose_status_lacks_its_spec_is_recounted() {
        let q = |status: Value| json!({"spec": {"hard": {"pods": "2"}}, "status": status});
        assert!(status_current(&q(
            json!({"hard": {"pods": "2"}, "used": {"pods": "1"}})
        )));
        assert!(!status_current(&q(
            json!({"hard": {"pods": "3"}, "used": {"pods": "1"}})
        )));
        assert!(!status_current(&q(
            json!({"hard": {"pods": "2"}, "used": {}})
        )));
        assert!(!status_current(&q(Value::Null)));
    }

    #[test]
    fn a_pod_past_its_grace_period_is_looked_at_again_when_it_stops_counting() {
        let now: DateTime<Utc> = "2026-12-07T20:00:00Z".parse().unwrap();
        let deleting = |at: &str, grace: i64| {
            json!({"metadata": {"deletionTimestamp": at, "deletionGracePeriodSeconds": grace},
                "status": {"phase": "Running"}})
        };
        let listed = [
            deleting("2026-12-07T19:59:50Z", 30),
            deleting("2026-12-07T19:59:55Z", 30),
            deleting("2026-12-07T19:58:00Z", 30),
            json!({"status": {"phase": "Running"}}),
        ];
        assert_eq!(
            next_grace_expiry(&listed, now),
            Some("2026-12-07T20:00:20.010Z".parse().unwrap())
        );
    }
}
