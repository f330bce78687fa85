//! Security contexts, as kube-apiserver validates them (`ValidatePodSecurityContext`,
//! `ValidateSecurityContext`): user and group ids in range, and no `allowPrivilegeEscalation:
//! false` beside what escalates anyway (`privileged`, `CAP_SYS_ADMIN`).

use serde_json::Value;

use super::error::Cause;

/// kube-apiserver's words for an id out of range.
const ID_RANGE: &str = "must be between 0 and 2147483647, inclusive";

/// A user or group id at `field`, when set.
fn id(value: &Value, field: String, causes: &mut Vec<Cause>) {
    if value.is_null() {
        return;
    }
    if !value
        .as_i64()
        .is_some_and(|n| (0..=i64::from(i32::MAX)).contains(&n))
    {
        causes.push(Cause::invalid(field, value, ID_RANGE));
    }
}

/// A pod's `securityContext` at `path` (the context itself).
pub fn pod(sc: &Value, path: &str, causes: &mut Vec<Cause>) {
    for field in ["runAsUser", "runAsGroup", "fsGroup"] {
        id(&sc[field], format!("{path}.{field}"), causes);
    }
    let groups = sc["supplementalGroups"].as_array().into_iter().flatten();
    for (i, g) in groups.enumerate() {
        id(g, format!("{path}.supplementalGroups[{i}]"), causes);
    }
}

/// A container's `securityContext` at `path` (the context itself).
pub fn container(sc: &Value, path: &str, causes: &mut Vec<Cause>) {
    for field in ["runAsUser", "runAsGroup"] {
        id(&sc[field], format!("{path}.{field}"), causes);
    }
    if sc["allowPrivilegeEscalation"] != Value::Bool(false) {
        return;
    }
    if sc["privileged"] == Value::Bool(true) {
        causes.push(Cause::invalid(
            path,
            sc,
            "cannot set `allowPrivilegeEscalation` to false and `privileged` to true",
        ));
    }
    let adds = sc["capabilities"]["add"].as_array().into_iter().flatten();
    if adds
        .filter_map(Value::as_str)
        .any(|c| c == "CAP_SYS_ADMIN" || c == "SYS_ADMIN")
    {
        causes.push(Cause::invalid(
            path,
            sc,
            "cannot set `allowPrivilegeEscalation` to false and `capabilities.Add` CAP_SYS_ADMIN",
        ));
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn fields(f: impl Fn(&mut Vec<Cause>)) -> Vec<String> {
        let mut causes = Vec::new();
        f(&mut causes);
        causes.iter().map(|c| c.field.clone()).collect()
    }

    #[test]
    fn ids_must_be_in_range_and_escalation_must_be_consistent() {
        let p = "spec.securityContext";
        assert!(fields(|c| pod(&json!({"runAsUser": 0, "fsGroup": 2000}), p, c)).is_empty());
        assert_eq!(
            fields(|c| pod(
                &json!({"runAsUser": -1, "runAsGroup": 2147483648_i64, "supplementalGroups": [1, -5]}),
                p,
                c
            )),
            [
                "spec.securityContext.runAsUser",
                "spec.securityContext.runAsGroup",
                "spec.securityContext.supplementalGroups[1]"
            ]
        );
        let c = "spec.containers[0].securityContext";
        assert!(fields(|x| container(&json!({"privileged": true}), c, x)).is_empty());
        assert_eq!(
            fields(|x| container(
                &json!({"privileged": true, "allowPrivilegeEscalation": false,
                    "capabilities": {"add": ["SYS_ADMIN"]}}),
                c,
                x
            )),
            [c, c]
        );
        assert_eq!(
            fields(|x| container(&json!({"runAsUser": "root"}), c, x)),
            ["spec.containers[0].securityContext.runAsUser"]
        );
    }
}
