//! A Job's `podFailurePolicy`: what a failed pod means, decided by the first rule that matches
//! it (Kubernetes' `matchPodFailurePolicy`): `FailJob` fails the Job at once (reason
//! `PodFailurePolicy`), `Ignore` does not count the failure against `backoffLimit` (the pod is
//! replaced), `FailIndex` fails the pod's index for good (with `backoffLimitPerIndex`), `Count`
//! counts it as usual, as does a failure no rule matches.
//!
//! A rule matches on `onExitCodes` (a container, or any, that terminated with a non-zero exit
//! code `In` or `NotIn` the values) or on `onPodConditions` (a condition of the pod with the
//! type and status given, `True` unless said).

use serde_json::Value;

use crate::apiserver::objects;

/// What a failed pod means for its Job.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Action {
    /// Counted against `backoffLimit` (no policy, no rule matched, or a `Count` rule).
    Count,
    /// Not counted.
    Ignore,
    /// The Job fails, with this message.
    FailJob(String),
    /// The pod's index fails for good (with `backoffLimitPerIndex`).
    FailIndex,
}

/// What `pod` (failed) means for `job`.
pub fn evaluate(job: &Value, pod: &Value) -> Action {
    let rules = job["spec"]["podFailurePolicy"]["rules"].as_array();
    for (i, rule) in rules.into_iter().flatten().enumerate() {
        let action = rule["action"].as_str().unwrap_or("");
        let Some(what) = matched(rule, pod) else {
            continue;
        };
        return match action {
            "FailJob" => Action::FailJob(format!("{what} matching FailJob rule at index {i}")),
            "Ignore" => Action::Ignore,
            "FailIndex" => Action::FailIndex,
            _ => Action::Count,
        };
    }
    Action::Count
}

/// Why `rule` matches `pod` ("Container c for pod ns/p failed with exit code 3", "Pod ns/p has
/// condition DisruptionTarget"), or `None`.
fn matched(rule: &Value, pod: &Value) -> Option<String> {
    let who = format!(
        "{}/{}",
        objects::namespace(pod).unwrap_or(""),
        objects::name(pod)
    );
    let on_codes = &rule["onExitCodes"];
    if on_codes.is_object() {
        let wanted = on_codes["containerName"].as_str();
        let values: Vec<i64> = on_codes["values"]
            .as_array()
            .into_iter()
            .flatten()
            .filter_map(Value::as_i64)
            .collect();
        let not_in = on_codes["operator"] == "NotIn";
        let statuses = ["initContainerStatuses", "containerStatuses"]
            .into_iter()
            .flat_map(|f| pod["status"][f].as_array().into_iter().flatten());
        for c in statuses {
            let name = c["name"].as_str().unwrap_or("");
            if wanted.is_some_and(|w| w != name) {
                continue;
            }
            let Some(code) = c["state"]["terminated"]["exitCode"].as_i64() else {
                continue;
            };
            if code != 0 && values.contains(&code) != not_in {
                return Some(format!(
                    "Container {name} for pod {who} failed with exit code {code}"
                ));
            }
        }
        return None;
    }
    let conditions = pod["status"]["conditions"].as_array();
    for want in rule["onPodConditions"].as_array().into_iter().flatten() {
        let kind = want["type"].as_str().unwrap_or("");
        let status = want["status"].as_str().unwrap_or("True");
        if conditions
            .into_iter()
            .flatten()
            .any(|c| c["type"] == kind && c["status"] == status)
        {
            return Some(format!("Pod {who} has condition {kind}"));
        }
    }
    None
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    fn job(rules: Value) -> Value {
        json!({"spec": {"podFailurePolicy": {"rules": rules}}})
    }

    fn failed(codes: &[(&str, i64)], conditions: Value) -> Value {
        let statuses: Vec<Value> = codes
            .iter()
            .map(|(n, c)| json!({"name": n, "state": {"terminated": {"exitCode": c}}}))
            .collect();
        json!({"metadata": {"name": "p", "namespace": "d"},
            "status": {"phase": "Failed", "containerStatuses": statuses, "conditions": conditions}})
    }

    #[test]
    fn the_first_matching_rule_decides() {
        let j = job(json!([
            {"action": "Ignore", "onPodConditions": [{"type": "DisruptionTarget"}]},
            {"action": "FailJob", "onExitCodes": {"containerName": "main", "operator": "In", "values": [3, 4]}},
            {"action": "Count", "onExitCodes": {"operator": "NotIn", "values": [1]}},
            {"action": "FailJob", "onExitCodes": {"operator": "In", "values": [1]}},
        ]));
        let disrupted = failed(
            &[("main", 3)],
            json!([{"type": "DisruptionTarget", "status": "True"}]),
        );
        assert_eq!(evaluate(&j, &disrupted), Action::Ignore);
        assert_eq!(
            evaluate(&j, &failed(&[("side", 0), ("main", 3)], json!([]))),
            Action::FailJob(
                "Container main for pod d/p failed with exit code 3 matching FailJob rule at index 1"
                    .into()
            )
        );
        // Another container's 3 is not main's; NotIn [1] counts it.
        assert_eq!(
            evaluate(&j, &failed(&[("side", 3)], json!([]))),
            Action::Count
        );
        assert_eq!(
            evaluate(&j, &failed(&[("main", 1)], json!([]))),
            Action::FailJob(
                "Container main for pod d/p failed with exit code 1 matching FailJob rule at index 3"
                    .into()
            )
        );
        // Exit code 0 matches no rule, nor does a condition with another status.
        let j0 = job(json!([
            {"action": "FailJob", "onExitCodes": {"operator": "NotIn", "values": [1]}},
            {"action": "FailJob", "onPodConditions": [{"type": "DisruptionTarget", "status": "False"}]},
        ]));
        let clean = failed(
            &[("main", 0)],
            json!([{"type": "DisruptionTarget", "status": "True"}]),
        );
        assert_eq!(evaluate(&j0, &clean), Action::Count);
        assert_eq!(evaluate(&json!({"spec": {}}), &clean), Action::Count);
    }
}
