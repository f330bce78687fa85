//! The disruption controller (kube-controller-manager's): keeps each PodDisruptionBudget's
//! status, which the eviction subresource ([`crate::apiserver::eviction`]) reads and
//! decrements.
//!
//! For a budget, the pods it selects in its namespace (from the shared pod cache) give:
//!
//! - `currentHealthy`: those Ready, not being deleted, and not recently evicted
//!   (`disruptedPods`: an eviction records the pod there; the entry goes once the pod is being
//!   deleted, or after two minutes if it never is);
//! - `expectedPods` and `desiredHealthy`: with an integer `minAvailable`, the pods selected and
//!   that number; with a percentage, or with `maxUnavailable`, the replicas their controllers
//!   ask for (a ReplicaSet's, or its Deployment's), scaled with rounding up, as Kubernetes does;
//! - `disruptionsAllowed`: `currentHealthy - desiredHealthy`, never below 0, and 0 when no pod
//!   is expected;
//! - the `DisruptionAllowed` condition (`SufficientPods`, `InsufficientPods`, or `SyncFailed`
//!   when the expected count cannot be worked out, e.g. a selected pod has no controller).

use std::collections::HashSet;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use chrono::{DateTime, Utc};
use serde_json::{Map, Value, json};
use tokio_util::sync::CancellationToken;

use crate::apiserver::api::Api;
use crate::apiserver::error::ApiResult;
use crate::apiserver::eviction::{self, budgets};
use crate::apiserver::objects;

use super::deployment::deployments;
use super::pod_cache::PodCache;
use super::pods;
use super::replicaset::{replicasets, write_status};
use super::runner::{self, ObjectKey, Reconciler, RunnerConfig, Watched};
use super::{owner, pods::is_ready};

/// How long an evicted pod may take to be deleted before it counts as healthy again
/// (Kubernetes' `DeletionTimeout`).
const DELETION_TIMEOUT: chrono::TimeDelta = chrono::TimeDelta::minutes(2);

/// The controller.
struct DisruptionController {
    api: Api,
    pods: PodCache,
    /// Namespaces that hold a budget: only their pods' changes are worth a look.
    with_budgets: Arc<Mutex<HashSet<String>>>,
}

/// An int-or-percent scaled against `total`, rounding up (`GetScaledValueFromIntOrPercent`).
fn scaled(v: &Value, total: i64) -> Result<i64, String> {
    match v {
        Value::Number(n) => n.as_i64().ok_or_else(|| format!("invalid value {n}")),
        Value::String(s) => {
            let pct: i64 = s
                .strip_suffix('%')
                .and_then(|d| d.parse().ok())
                .ok_or_else(|| format!("invalid value for IntOrString: invalid value {s:?}"))?;
            Ok((pct * total + 99) / 100)
        }
        other => Err(format!("invalid value {other}")),
    }
}

/// The evictions still expected to be carried out, and when the next one expires.
fn disrupted_pods(
    budget: &Value,
    selected: &[Arc<Value>],
    now: DateTime<Utc>,
) -> (Map<String, Value>, Option<DateTime<Utc>>) {
    let recorded = budget["status"]["disruptedPods"].as_object();
    let mut kept = Map::new();
    let mut recheck: Option<DateTime<Utc>> = None;
    for pod in selected {
        if objects::is_deleting(pod) {
            continue;
        }
        let name = objects::name(pod);
        let Some(at) = recorded.and_then(|r| r.get(name)) else {
            continue;
        };
        let Some(expires) = pods::parse_time(at).map(|t| t + DELETION_TIMEOUT) else {
            continue;
        };
        if expires > now {
            recheck = Some(recheck.map_or(expires, |r| r.min(expires)));
            kept.insert(name.to_string(), at.clone());
        }
    }
    (kept, recheck)
}

impl DisruptionController {
    /// The replicas the controllers of `selected` ask for, each controller counted once.
    async fn expected_scale(&self, ns: &str, selected: &[Arc<Value>]) -> Result<i64, String> {
        let mut counted: HashSet<String> = HashSet::new();
        let mut total = 0;
        for pod in selected {
            let Some(owner) = owner::controller_ref(pod) else {
                return Err(format!(
                    "found no controllers for pod {:?}",
                    objects::name(pod)
                ));
            };
            let (kind, name) = (
                owner["kind"].as_str().unwrap_or(""),
                owner["name"].as_str().unwrap_or(""),
            );
            if kind != "ReplicaSet" {
                return Err(format!(
                    "found no scale for the controller {kind}/{name} of pod {:?}",
                    objects::name(pod)
                ));
            }
            let rs = self
                .api
                .get(replicasets(), Some(ns), name)
                .await
                .map_err(|e| e.message)?;
            // A Deployment's ReplicaSets count as the Deployment.
            let (uid, replicas) =
                match owner::controller_ref(&rs).filter(|o| o["kind"] == "Deployment") {
                    Some(d) => {
                        let name = d["name"].as_str().unwrap_or("");
                        let deployment = self
                            .api
                            .get(deployments(), Some(ns), name)
                            .await
                            .map_err(|e| e.message)?;
                        (
                            owner::uid(&deployment).to_string(),
                            deployment["spec"]["replicas"].as_i64().unwrap_or(1),
                        )
                    }
                    None => (
                        owner::uid(&rs).to_string(),
                        rs["spec"]["replicas"].as_i64().unwrap_or(1),
                    ),
                };
            if counted.insert(uid) {
                total += replicas;
            }
        }
        Ok(total)
    }

    /// `(expectedPods, desiredHealthy)` of `budget` over `selected`.
    async fn targets(
        &self,
        ns: &str,
        budget: &Value,
        selected: &[Arc<Value>],
    ) -> Result<(i64, i64), String> {
        let spec = &budget["spec"];
        if !spec["maxUnavailable"].is_null() {
            let expected = self.expected_scale(ns, selected).await?;
            let unavailable = scaled(&spec["maxUnavailable"], expected)?;
            return Ok((expected, (expected - unavailable).max(0)));
        }
        match &spec["minAvailable"] {
            Value::Null => Ok((0, 0)),
            Value::Number(n) => Ok((selected.len() as i64, n.as_i64().unwrap_or(0))),
            percent => {
                let expected = self.expected_scale(ns, selected).await?;
                Ok((expected, scaled(percent, expected)?))
            }
        }
    }

    async fn sync(&self, key: &ObjectKey) -> ApiResult<Option<Duration>> {
        let ns = key.namespace.as_deref().unwrap_or("default");
        let Some(budget) = runner::get_object(&self.api, budgets(), key).await? else {
            return Ok(None);
        };
        if objects::is_deleting(&budget) {
            return Ok(None);
        }
        self.with_budgets
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .insert(ns.to_string());
        let selected: Vec<Arc<Value>> = self
            .pods
            .list(ns)
            .into_iter()
            .filter(|p| eviction::selects(&budget, p))
            .collect();
        let now = Utc::now();
        let stamp = objects::now_rfc3339();
        let mut status = budget["status"].clone();
        if !status.is_object() {
            status = json!({});
        }
        let recheck = match self.targets(ns, &budget, &selected).await {
            Ok((expected, desired)) => {
                let (disrupted, recheck) = disrupted_pods(&budget, &selected, now);
                let healthy = selected
                    .iter()
                    .filter(|p| !objects::is_deleting(p))
                    .filter(|p| !disrupted.contains_key(objects::name(p)))
                    .filter(|p| is_ready(p))
                    .count() as i64;
                let allowed = if expected <= 0 {
                    0
                } else {
                    (healthy - desired).max(0)
                };
                status["observedGeneration"] = budget["metadata"]["generation"].clone();
                status["currentHealthy"] = json!(healthy);
                status["desiredHealthy"] = json!(desired);
                status["expectedPods"] = json!(expected);
                status["disruptionsAllowed"] = json!(allowed);
                if disrupted.is_empty() {
                    status.as_object_mut().map(|s| s.remove("disruptedPods"));
                } else {
                    status["disruptedPods"] = Value::Object(disrupted);
                }
                eviction::set_allowed_condition(&mut status, allowed > 0, &stamp);
                recheck
            }
            Err(why) => {
                // Fail safe: no disruption while the budget cannot be worked out.
                status["disruptionsAllowed"] = json!(0);
                eviction::set_condition(&mut status, "False", "SyncFailed", &why, &stamp);
                None
            }
        };
        write_status(&self.api, budgets(), &budget, status).await?;
        Ok(recheck.and_then(|at| (at - now).to_std().ok()))
    }
}

impl Reconciler for DisruptionController {
    async fn reconcile(&self, key: &ObjectKey) -> ApiResult<Option<Duration>> {
        runner::sync_each(
            &self.api,
            budgets(),
            key,
            |k| async move { self.sync(&k).await },
        )
        .await
    }
}

/// Runs the disruption controller until `shutdown`, reading pods from `pods`.
pub async fn run(api: Api, pods: PodCache, shutdown: CancellationToken) {
    let with_budgets: Arc<Mutex<HashSet<String>>> = Arc::default();
    let known = with_budgets.clone();
    let watched = vec![
        Watched::primary(budgets()),
        // A pod change looks at every budget of its namespace, if it has any.
        Watched::with_map(pods::pods(), move |pod| {
            let ns = objects::namespace(pod).unwrap_or("default");
            let has = known.lock().unwrap_or_else(|p| p.into_inner()).contains(ns);
            if has {
                vec![ObjectKey::all_in(Some(ns))]
            } else {
                Vec::new()
            }
        })
        .from_cache(&pods, |_| {}),
        // A Deployment or ReplicaSet scaled changes what its pods' budgets expect.
        Watched::with_map(deployments(), |o| {
            vec![ObjectKey::all_in(objects::namespace(o))]
        }),
        Watched::with_map(replicasets(), |o| {
            vec![ObjectKey::all_in(objects::namespace(o))]
        }),
    ];
    let controller = DisruptionController {
        api: api.clone(),
        pods,
        with_budgets,
    };
    let config = RunnerConfig {
        name: "disruption",
        workers: 2,
        resync: Duration::from_secs(30),
        batch: Duration::from_millis(100),
    };
    runner::run(api, watched, Arc::new(controller), config, shutdown).await;
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn counts_and_percentages_scale_rounding_up() {
        assert_eq!(scaled(&json!(2), 10), Ok(2));
        assert_eq!(scaled(&json!("50%"), 3), Ok(2));
        assert_eq!(scaled(&json!("10%"), 10), Ok(1));
        assert_eq!(scaled(&json!("0%"), 10), Ok(0));
        assert!(scaled(&json!("half"), 10).is_err());
    }

    #[test]
    fn evictions_are_remembered_until_the_pod_goes_or_two_minutes_pass() {
        let now: DateTime<Utc> = "2026-12-07T06:30:00Z".parse().unwrap();
        let budget = json!({"status": {"disruptedPods": {
            "recent": "2026-12-07T06:29:30Z", "stale": "2026-12-07T06:27:00Z",
            "going": "2026-12-07T06:29:50Z"}}});
        let pod = |name: &str, deleting: bool| {
            let mut p = json!({"metadata": {"name": name}});
            if deleting {
                p["metadata"]["deletionTimestamp"] = json!("2026-12-07T06:29:55Z");
            }
            Arc::new(p)
        };
        let selected = [
            pod("recent", false),
            pod("stale", false),
            pod("going", true),
            pod("other", false),
        ];
        let (kept, recheck) = disrupted_pods(&budget, &selected, now);
        assert_eq!(kept.keys().collect::<Vec<_>>(), ["recent"]);
        assert_eq!(
            recheck,
            Some("2026-12-07T06:31:30Z".parse::<DateTime<Utc>>().unwrap())
        );
    }
}
