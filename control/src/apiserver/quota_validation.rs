//! A ResourceQuota's spec, as kube-apiserver's `ValidateResourceQuota` checks it: resource
//! names a quota can count, non-negative (and for counts whole) amounts, known scopes that
//! apply to the quota's resources and do not contradict each other, and well-formed scope
//! selector expressions.

use serde_json::Value;

use super::error::Cause;
use super::validation::{items, qualified_name, shown};
use crate::scheduler::quantity::Quantity;

/// The amounts of compute a quota may hold without a domain.
const COMPUTE: &[&str] = &[
    "cpu",
    "memory",
    "ephemeral-storage",
    "requests.cpu",
    "requests.memory",
    "requests.storage",
    "requests.ephemeral-storage",
    "limits.cpu",
    "limits.memory",
    "limits.ephemeral-storage",
];

/// The object counts a quota may hold without a domain; their amounts must be whole
/// (`IsIntegerResourceName`).
const COUNTS: &[&str] = &[
    "pods",
    "services",
    "replicationcontrollers",
    "resourcequotas",
    "secrets",
    "persistentvolumeclaims",
    "configmaps",
    "services.nodeports",
    "services.loadbalancers",
];

/// The scopes Kubernetes knows.
const SCOPES: &[&str] = &[
    "Terminating",
    "NotTerminating",
    "BestEffort",
    "NotBestEffort",
    "PriorityClass",
    "CrossNamespacePodAffinity",
];

/// Scopes that only take the `Exists` operator in a selector.
const EXISTS_ONLY: &[&str] = &[
    "Terminating",
    "NotTerminating",
    "BestEffort",
    "NotBestEffort",
    "CrossNamespacePodAffinity",
];

/// Whether a name's amounts must be whole (`IsIntegerResourceName`): the counts, and names in
/// a domain other than Kubernetes' own (extended resources, `count/...`) unless they name
/// requests.
fn must_be_whole(name: &str) -> bool {
    COUNTS.contains(&name) || super::quota_usage::is_extended(name)
}

/// Whether a name without a domain is one a quota may hold (`IsStandardQuotaResourceName`).
fn is_standard(name: &str) -> bool {
    COMPUTE.contains(&name)
        || COUNTS.contains(&name)
        || name.starts_with("hugepages-")
        || name.starts_with("requests.hugepages-")
}

/// Whether a scope can restrict a standard resource (`IsResourceQuotaScopeValidForResource`):
/// `BestEffort` only counts pods; the other scopes pods and their compute resources.
fn scope_fits(scope: &str, name: &str) -> bool {
    const COMPUTE: &[&str] = &[
        "pods",
        "cpu",
        "memory",
        "requests.cpu",
        "requests.memory",
        "limits.cpu",
        "limits.memory",
    ];
    match scope {
        "BestEffort" => name == "pods",
        "Terminating"
        | "NotTerminating"
        | "NotBestEffort"
        | "PriorityClass"
        | "CrossNamespacePodAffinity" => COMPUTE.contains(&name),
        _ => true,
    }
}

/// A Go-style rendering of a list of scopes, as kube-apiserver's messages show it.
fn go_scopes(scopes: &[&str]) -> String {
    let quoted: Vec<String> = scopes.iter().map(|s| format!("{s:?}")).collect();
    format!("[]core.ResourceQuotaScope{{{}}}", quoted.join(", "))
}

/// `FieldValueInvalid` showing a value that is not a string bare, as Go prints a struct or a
/// slice.
fn invalid_bare(field: &str, value: &str, why: &str) -> Cause {
    Cause {
        reason: "FieldValueInvalid",
        message: format!("Invalid value: {value}: {why}"),
        field: field.into(),
    }
}

/// The amounts of a resource list (`spec.hard`) at `path`.
pub fn resource_list(list: &Value, path: &str, causes: &mut Vec<Cause>) {
    for (k, v) in list.as_object().into_iter().flatten() {
        let at = format!("{path}[{k}]");
        if let Some(why) = qualified_name(k) {
            causes.push(Cause::invalid(at.clone(), k.as_str(), why));
        } else if !k.contains('/') && !is_standard(k) {
            causes.push(Cause::invalid(
                at.clone(),
                k.as_str(),
                "must be a standard resource for quota",
            ));
        }
        let Ok(q) = Quantity::parse(&shown(v)) else {
            causes.push(Cause::invalid(
                at,
                shown(v),
                "must match the regular expression '^([+-]?[0-9.]+)([eEinumkKMGTP]*[-+]?[0-9]*)$'",
            ));
            continue;
        };
        if q.milli_value() < 0 {
            causes.push(Cause::invalid(
                at,
                shown(v),
                "must be greater than or equal to 0",
            ));
        } else if must_be_whole(k) && q.milli_value() % 1000 != 0 {
            causes.push(Cause::invalid(at, shown(v), "must be an integer"));
        }
    }
}

/// A ResourceQuota's spec.
pub fn resource_quota_spec(spec: &Value, causes: &mut Vec<Cause>) {
    resource_list(&spec["hard"], "spec.hard", causes);
    let hard: Vec<&str> = spec["hard"]
        .as_object()
        .into_iter()
        .flatten()
        .map(|(k, _)| k.as_str())
        .filter(|k| is_standard(k))
        .collect();
    let conflicting = |set: &[&str]| {
        [
            ("Terminating", "NotTerminating"),
            ("BestEffort", "NotBestEffort"),
        ]
        .iter()
        .filter(|(a, b)| set.contains(a) && set.contains(b))
        .count()
    };

    let scopes: Vec<&str> = items(&spec["scopes"])
        .iter()
        .map(|s| s.as_str().unwrap_or_default())
        .collect();
    if !scopes.is_empty() {
        let shown_scopes = go_scopes(&scopes);
        for scope in &scopes {
            if !SCOPES.contains(scope) {
                causes.push(invalid_bare(
                    "spec.scopes",
                    &shown_scopes,
                    "unsupported scope",
                ));
            }
            for k in &hard {
                if !scope_fits(scope, k) {
                    causes.push(invalid_bare(
                        "spec.scopes",
                        &shown_scopes,
                        "unsupported scope applied to resource",
                    ));
                }
            }
        }
        for _ in 0..conflicting(&scopes) {
            causes.push(invalid_bare(
                "spec.scopes",
                &shown_scopes,
                "conflicting scopes",
            ));
        }
    }

    let selector = &spec["scopeSelector"];
    let path = "spec.scopeSelector.matchExpressions";
    let mut names = Vec::new();
    for e in items(&selector["matchExpressions"]) {
        let scope = e["scopeName"].as_str().unwrap_or_default();
        let op = e["operator"].as_str().unwrap_or_default();
        let values = items(&e["values"]);
        if !SCOPES.contains(&scope) {
            causes.push(Cause::invalid(
                format!("{path}.scopeName"),
                scope,
                "unsupported scope",
            ));
        }
        for k in &hard {
            if !scope_fits(scope, k) {
                causes.push(invalid_bare(
                    path,
                    &selector.to_string(),
                    "unsupported scope applied to resource",
                ));
            }
        }
        if EXISTS_ONLY.contains(&scope) && op != "Exists" {
            causes.push(Cause::invalid(
                format!("{path}.operator"),
                op,
                "must be 'Exist' when scope is any of ResourceQuotaScopeTerminating, \
                 ResourceQuotaScopeNotTerminating, ResourceQuotaScopeBestEffort, \
                 ResourceQuotaScopeNotBestEffort or ResourceQuotaScopeCrossNamespacePodAffinity",
            ));
        }
        match op {
            "In" | "NotIn" if values.is_empty() => causes.push(Cause {
                message: "Required value: must be at least one value when `operator` is 'In' or \
                          'NotIn' for scope selector"
                    .into(),
                ..Cause::required(format!("{path}.values"))
            }),
            "Exists" | "DoesNotExist" if !values.is_empty() => causes.push(Cause::invalid(
                format!("{path}.values"),
                e["values"].to_string(),
                "must be no value when `operator` is 'Exist' or 'DoesNotExist' for scope selector",
            )),
            "In" | "NotIn" | "Exists" | "DoesNotExist" => {}
            other => causes.push(Cause::invalid(
                format!("{path}.operator"),
                other,
                "not a valid selector operator",
            )),
        }
        names.push(scope);
    }
    for _ in 0..conflicting(&names) {
        causes.push(invalid_bare(
            path,
            &selector.to_string(),
            "conflicting scopes",
        ));
    }
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;
    use crate::apiserver::error::cause_fields;

    fn messages(spec: Value) -> Vec<String> {
        let mut causes = Vec::new();
        resource_quota_spec(&spec, &mut causes);
        causes
            .into_iter()
            .map(|c| format!("{}: {}", c.field, c.message))
            .collect()
    }

    #[test]
    fn a_well_formed_quota_passes() {
        let spec = json!({"hard": {"pods": "10", "requests.cpu": "2", "limits.memory": "4Gi",
            "count/deployments.apps": "3", "gold.storageclass.storage.k8s.io/requests.storage":
            "10Gi", "requests.example.com/gpu": "2"},
            "scopeSelector": {"matchExpressions": [
                {"scopeName": "PriorityClass", "operator": "In", "values": ["high"]}]}});
        assert_eq!(messages(spec), Vec::<String>::new());
    }

    #[test]
    fn names_amounts_and_scopes_are_refused_with_kubes_words() {
        assert_eq!(
            messages(
                json!({"hard": {"widgets": "1", "pods": "1.5", "cpu": "-1", "memory": "lots"}})
            ),
            [
                "spec.hard[widgets]: Invalid value: \"widgets\": must be a standard resource for quota",
                "spec.hard[pods]: Invalid value: \"1.5\": must be an integer",
                "spec.hard[cpu]: Invalid value: \"-1\": must be greater than or equal to 0",
                "spec.hard[memory]: Invalid value: \"lots\": must match the regular expression \
                 '^([+-]?[0-9.]+)([eEinumkKMGTP]*[-+]?[0-9]*)$'",
            ]
        );
        assert_eq!(
            messages(json!({"hard": {"services": "1"}, "scopes": ["BestEffort", "NotBestEffort"]})),
            [
                "spec.scopes: Invalid value: []core.ResourceQuotaScope{\"BestEffort\", \
                 \"NotBestEffort\"}: unsupported scope applied to resource",
                "spec.scopes: Invalid value: []core.ResourceQuotaScope{\"BestEffort\", \
                 \"NotBestEffort\"}: unsupported scope applied to resource",
                "spec.scopes: Invalid value: []core.ResourceQuotaScope{\"BestEffort\", \
                 \"NotBestEffort\"}: conflicting scopes",
            ]
        );
        assert_eq!(
            cause_fields(|c| resource_quota_spec(
                &json!({"hard": {"pods": "1"}, "scopeSelector": {"matchExpressions": [
                    {"scopeName": "BestEffort", "operator": "In", "values": ["x"]},
                    {"scopeName": "PriorityClass", "operator": "In"},
                    {"scopeName": "PriorityClass", "operator": "Exists", "values": ["x"]},
                    {"scopeName": "Sometimes", "operator": "Is"}]}}),
                c
            )),
            [
                "spec.scopeSelector.matchExpressions.operator",
                "spec.scopeSelector.matchExpressions.values",
                "spec.scopeSelector.matchExpressions.values",
                "spec.scopeSelector.matchExpressions.scopeName",
                "spec.scopeSelector.matchExpressions.operator",
            ]
        );
    }
}
