//! `pods/eviction`: a pod's deletion that honours its PodDisruptionBudget, as kube-apiserver's
//! eviction subresource does. It is what `kubectl drain` and the node lifecycle's evictions of
//! other orchestrators call; a plain `DELETE` ignores budgets.
//!
//! A running pod selected by a budget may be evicted only while the budget's status (kept by
//! the disruption controller) allows a disruption: the eviction takes one (decrementing
//! `disruptionsAllowed` and recording the pod in `disruptedPods`, with compare-and-swap on the
//! budget) before deleting the pod, so two evictions racing for the last disruption cannot
//! both succeed. Otherwise the answer is 429 TooManyRequests with kube-apiserver's message,
//! which `kubectl drain` retries. Pods that are not running (Pending, Succeeded, Failed) or
//! already being deleted are deleted without a budget; a pod that is not Ready may be evicted
//! while the budget is met (`unhealthyPodEvictionPolicy: IfHealthyBudget`, the default) or
//! always (`AlwaysAllow`), without taking a disruption.

use serde_json::{Value, json};

use super::api::{Api, DeleteOptions, Deleted, ListParams, WriteOptions};
use super::error::{ApiError, ApiResult, Cause};
use super::objects;
use super::resources::{self, ResourceInfo, Subresource};
use super::selector::LabelSelector;

/// Times an eviction is tried again after losing a race on its budget's status.
const ATTEMPTS: usize = 8;

/// kube-apiserver refuses evictions while this many are recorded and not yet seen through.
const MAX_DISRUPTED_PODS: usize = 2000;

/// The message of every eviction a budget refuses.
const REFUSED: &str = "Cannot evict pod as it would violate the pod's disruption budget.";

fn pods() -> &'static ResourceInfo {
    resources::find("", "v1", "pods").expect("pods are served")
}

/// The PodDisruptionBudget resource.
pub fn budgets() -> &'static ResourceInfo {
    resources::find("policy", "v1", "poddisruptionbudgets").expect("PDBs are served")
}

/// Whether `budget` selects a pod with `labels` (policy/v1: a null selector selects no pod,
/// an empty one every pod of the namespace).
pub fn selects(budget: &Value, pod: &Value) -> bool {
    let selector = &budget["spec"]["selector"];
    if selector.is_null() {
        return false;
    }
    let Ok(parsed) = serde_json::from_value(selector.clone()) else {
        return false;
    };
    LabelSelector::from_k8s(&parsed).is_ok_and(|s| s.matches(&objects::labels(pod)))
}

/// A pod whose eviction no budget can refuse: not running, or already being deleted.
fn ignores_budgets(pod: &Value) -> bool {
    objects::is_deleting(pod)
        || matches!(
            pod["status"]["phase"].as_str(),
            Some("Pending" | "Succeeded" | "Failed") | None
        )
}

fn is_ready(pod: &Value) -> bool {
    pod["status"]["conditions"]
        .as_array()
        .into_iter()
        .flatten()
        .any(|c| c["type"] == "Ready" && c["status"] == "True")
}

fn int(v: &Value) -> i64 {
    v.as_i64().unwrap_or(0)
}

/// What the budget says about evicting one more pod now.
enum Verdict {
    /// The pod may go without taking a disruption (it is not Ready).
    Free,
    /// The pod may go, taking one: the budget's status with it taken.
    Take(Value),
}

/// Checks `budget` for evicting the Ready or unready `pod` named `name` at `now`.
fn verdict(budget: &Value, pod: &Value, name: &str, now: &str) -> ApiResult<Verdict> {
    let status = &budget["status"];
    let budget_name = objects::name(budget);
    let (current, desired) = (
        int(&status["currentHealthy"]),
        int(&status["desiredHealthy"]),
    );
    if !is_ready(pod) {
        let always = budget["spec"]["unhealthyPodEvictionPolicy"] == "AlwaysAllow";
        if always || (current >= desired && desired > 0) {
            return Ok(Verdict::Free);
        }
    }
    if int(&status["observedGeneration"]) < int(&budget["metadata"]["generation"]) {
        return Err(ApiError::too_many_requests(
            REFUSED,
            vec![disruption_cause(format!(
                "The disruption budget {budget_name} is still being processed by the server."
            ))],
        ));
    }
    let allowed = int(&status["disruptionsAllowed"]);
    if allowed < 0 {
        return Err(forbidden("pdb disruptions allowed is negative"));
    }
    let disrupted = status["disruptedPods"].as_object();
    if disrupted.is_some_and(|d| d.len() > MAX_DISRUPTED_PODS) {
        return Err(forbidden(
            "DisruptedPods map too big - too many evictions not confirmed by PDB controller",
        ));
    }
    if allowed == 0 {
        return Err(ApiError::too_many_requests(
            REFUSED,
            vec![disruption_cause(format!(
                "The disruption budget {budget_name} needs {desired} healthy pods and has \
                 {current} currently"
            ))],
        ));
    }
    let mut taken = status.clone();
    taken["disruptionsAllowed"] = json!(allowed - 1);
    taken["disruptedPods"][name] = json!(now);
    if allowed == 1 {
        set_allowed_condition(&mut taken, false, now);
    }
    Ok(Verdict::Take(taken))
}

/// Sets the budget status's `DisruptionAllowed` condition (`SufficientPods` or
/// `InsufficientPods`), its transition time moving only when its status changes.
pub fn set_allowed_condition(status: &mut Value, allowed: bool, now: &str) {
    let (value, reason) = if allowed {
        ("True", "SufficientPods")
    } else {
        ("False", "InsufficientPods")
    };
    set_condition(status, value, reason, "", now);
}

/// Sets the `DisruptionAllowed` condition to `value` with `reason` and `message`.
pub fn set_condition(status: &mut Value, value: &str, reason: &str, message: &str, now: &str) {
    let mut conditions: Vec<Value> = status["conditions"].as_array().cloned().unwrap_or_default();
    let old = conditions
        .iter()
        .position(|c| c["type"] == "DisruptionAllowed");
    let since = old
        .map(|i| &conditions[i])
        .filter(|c| c["status"] == value)
        .map_or_else(|| json!(now), |c| c["lastTransitionTime"].clone());
    let condition = json!({
        "type": "DisruptionAllowed",
        "status": value,
        "reason": reason,
        "message": message,
        "lastTransitionTime": since,
        "observedGeneration": status["observedGeneration"],
    });
    match old {
        Some(i) => conditions[i] = condition,
        None => conditions.push(condition),
    }
    status["conditions"] = Value::Array(conditions);
}

fn disruption_cause(message: String) -> Cause {
    Cause {
        reason: "DisruptionBudget",
        message,
        field: String::new(),
    }
}

fn forbidden(message: &str) -> ApiError {
    ApiError {
        code: 403,
        reason: "Forbidden",
        ..ApiError::too_many_requests(message, Vec::new())
    }
}

/// Evicts pod `name` in `ns`: deletes it with `opts` if its budget allows (see the module
/// documentation). A dry run checks the budget and changes nothing.
pub async fn evict(api: &Api, ns: &str, name: &str, opts: &DeleteOptions) -> ApiResult<Deleted> {
    for _ in 0..ATTEMPTS {
        let pod = api.get(pods(), Some(ns), name).await?;
        if ignores_budgets(&pod) {
            return api.delete(pods(), Some(ns), name, opts).await;
        }
        let (listed, _, _) = api
            .list(budgets(), Some(ns), &ListParams::default())
            .await?;
        let mut matching = listed.iter().filter(|b| selects(b, &pod));
        let (Some(budget), None) = (matching.next(), matching.next()) else {
            if listed.iter().any(|b| selects(b, &pod)) {
                return Err(ApiError::internal(
                    "This pod has more than one PodDisruptionBudget, which the eviction \
                     subresource does not support.",
                ));
            }
            return api.delete(pods(), Some(ns), name, opts).await;
        };
        let mut opts = opts.clone();
        let taken = match verdict(budget, &pod, name, &objects::now_rfc3339())? {
            // The pod must still be the unready one that was judged.
            Verdict::Free => {
                opts.precondition_resource_version = pod["metadata"]["resourceVersion"]
                    .as_str()
                    .map(String::from);
                None
            }
            Verdict::Take(status) => Some(status),
        };
        if let Some(status) = taken
            && !opts.dry_run
        {
            let mut updated = budget.clone();
            updated["status"] = status;
            match api
                .update(
                    budgets(),
                    Some(ns),
                    objects::name(budget),
                    updated,
                    Some(Subresource::Status),
                    &WriteOptions::default(),
                )
                .await
            {
                Ok(_) => {}
                Err(e) if e.reason == "Conflict" => continue,
                Err(e) => return Err(e),
            }
        }
        return match api.delete(pods(), Some(ns), name, &opts).await {
            // The unready pod changed meanwhile: judge it again.
            Err(e) if e.reason == "Conflict" => continue,
            other => other,
        };
    }
    Err(ApiError::conflict(
        pods(),
        name,
        "the pod's disruption budget kept changing; try again",
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn budget(status: Value) -> Value {
        json!({"metadata": {"name": "web", "generation": 2},
            "spec": {"minAvailable": 2, "selector": {"matchLabels": {"app": "web"}}},
            "status": status})
    }

    fn pod(ready: bool) -> Value {
        json!({"metadata": {"name": "web-1", "labels": {"app": "web"}},
            "status": {"phase": "Running", "conditions": [
                {"type": "Ready", "status": if ready { "True" } else { "False" }}]}})
    }

    const NOW: &str = "2026-12-07T06:30:00Z";

    #[test]
    fn an_eviction_takes_a_disruption_or_is_refused_with_kube_apiservers_words() {
        let ok = budget(json!({"observedGeneration": 2, "disruptionsAllowed": 1,
            "currentHealthy": 3, "desiredHealthy": 2}));
        let Verdict::Take(status) = verdict(&ok, &pod(true), "web-1", NOW).unwrap() else {
            panic!("a Ready pod takes a disruption")
        };
        assert_eq!(status["disruptionsAllowed"], 0);
        assert_eq!(status["disruptedPods"]["web-1"], NOW);
        assert_eq!(status["conditions"][0]["reason"], "InsufficientPods");

        let none = budget(json!({"observedGeneration": 2, "disruptionsAllowed": 0,
            "currentHealthy": 2, "desiredHealthy": 2}));
        let err = verdict(&none, &pod(true), "web-1", NOW).err().unwrap();
        assert_eq!((err.code, err.reason), (429, "TooManyRequests"));
        assert_eq!(err.message, REFUSED);
        assert_eq!(
            err.causes[0].message,
            "The disruption budget web needs 2 healthy pods and has 2 currently"
        );

        let stale = budget(json!({"observedGeneration": 1, "disruptionsAllowed": 5}));
        let err = verdict(&stale, &pod(true), "web-1", NOW).err().unwrap();
        assert!(err.causes[0].message.contains("still being processed"));
    }

    #[test]
    fn an_unready_pod_goes_freely_while_the_budget_is_met_or_always_if_allowed() {
        let met = budget(json!({"observedGeneration": 2, "disruptionsAllowed": 0,
            "currentHealthy": 2, "desiredHealthy": 2}));
        assert!(matches!(
            verdict(&met, &pod(false), "web-1", NOW),
            Ok(Verdict::Free)
        ));
        let short = budget(json!({"observedGeneration": 2, "disruptionsAllowed": 0,
            "currentHealthy": 1, "desiredHealthy": 2}));
        assert!(verdict(&short, &pod(false), "web-1", NOW).is_err());
        let mut always = short.clone();
        always["spec"]["unhealthyPodEvictionPolicy"] = json!("AlwaysAllow");
        assert!(matches!(
            verdict(&always, &pod(false), "web-1", NOW),
            Ok(Verdict::Free)
        ));
    }

    #[test]
    fn a_null_selector_selects_nothing_and_an_empty_one_everything() {
        let mut b = budget(json!({}));
        assert!(selects(&b, &pod(true)));
        b["spec"]["selector"] = json!({"matchLabels": {"app": "db"}});
        assert!(!selects(&b, &pod(true)));
        b["spec"]["selector"] = json!({});
        assert!(selects(&b, &pod(true)));
        b["spec"]["selector"] = Value::Null;
        assert!(!selects(&b, &pod(true)));
    }
}
