//! What kube-apiserver checks in RBAC objects (`pkg/apis/rbac/validation`), with its messages
//! and field paths. Flotilla stores and serves Roles, ClusterRoles and their bindings so that
//! manifests and charts that carry them apply unchanged; it does not enforce them (as
//! kube-apiserver with `--authorization-mode=AlwaysAllow`).

use serde_json::Value;

use super::error::Cause;
use super::validation::items;

/// The API group of roles a binding may refer to.
pub const RBAC_GROUP: &str = "rbac.authorization.k8s.io";

/// The `rules` of a Role (`namespaced`) or ClusterRole.
pub fn rules(rules: &Value, namespaced: bool, causes: &mut Vec<Cause>) {
    for (i, rule) in items(rules).iter().enumerate() {
        let path = |f: &str| format!("rules[{i}].{f}");
        if items(&rule["verbs"]).is_empty() {
            causes.push(Cause {
                reason: "FieldValueRequired",
                message: "Required value: verbs must contain at least one value".into(),
                field: path("verbs"),
            });
        }
        let urls = items(&rule["nonResourceURLs"]);
        if !urls.is_empty() {
            if namespaced {
                causes.push(Cause::invalid(
                    path("nonResourceURLs"),
                    rule["nonResourceURLs"].to_string(),
                    "namespaced rules cannot apply to non-resource URLs",
                ));
            }
            if !items(&rule["apiGroups"]).is_empty() || !items(&rule["resources"]).is_empty() {
                causes.push(Cause::invalid(
                    path("nonResourceURLs"),
                    rule["nonResourceURLs"].to_string(),
                    "rules cannot apply to both regular resources and non-resource URLs",
                ));
            }
            continue;
        }
        if items(&rule["apiGroups"]).is_empty() {
            causes.push(Cause {
                reason: "FieldValueRequired",
                message: "Required value: resource rules must supply at least one api group".into(),
                field: path("apiGroups"),
            });
        }
        if items(&rule["resources"]).is_empty() {
            causes.push(Cause {
                reason: "FieldValueRequired",
                message: "Required value: resource rules must supply at least one resource".into(),
                field: path("resources"),
            });
        }
    }
}

/// A RoleBinding (`namespaced`) or ClusterRoleBinding: a role of the RBAC group (a
/// ClusterRoleBinding only a ClusterRole) and subjects of known kinds, each named.
pub fn binding(obj: &Value, namespaced: bool, causes: &mut Vec<Cause>) {
    let role = &obj["roleRef"];
    let group = role["apiGroup"].as_str().unwrap_or("");
    if group != RBAC_GROUP {
        causes.push(Cause::not_supported(
            "roleRef.apiGroup",
            group,
            &[RBAC_GROUP],
        ));
    }
    let kinds: &[&str] = if namespaced {
        &["ClusterRole", "Role"]
    } else {
        &["ClusterRole"]
    };
    let kind = role["kind"].as_str().unwrap_or("");
    if !kinds.contains(&kind) {
        causes.push(Cause::not_supported("roleRef.kind", kind, kinds));
    }
    if role["name"].as_str().is_none_or(str::is_empty) {
        causes.push(Cause::required("roleRef.name"));
    }
    const SUBJECTS: &[&str] = &["Group", "ServiceAccount", "User"];
    for (i, s) in items(&obj["subjects"]).iter().enumerate() {
        let path = |f: &str| format!("subjects[{i}].{f}");
        if s["name"].as_str().is_none_or(str::is_empty) {
            causes.push(Cause::required(path("name")));
        }
        match s["kind"].as_str().unwrap_or("") {
            "ServiceAccount" => {
                let g = s["apiGroup"].as_str().unwrap_or("");
                if !g.is_empty() {
                    causes.push(Cause::not_supported(path("apiGroup"), g, &[""]));
                }
                if !namespaced && s["namespace"].as_str().is_none_or(str::is_empty) {
                    causes.push(Cause::required(path("namespace")));
                }
            }
            "User" | "Group" => {
                let g = s["apiGroup"].as_str().unwrap_or("");
                if g != RBAC_GROUP {
                    causes.push(Cause::not_supported(path("apiGroup"), g, &[RBAC_GROUP]));
                }
            }
            other => causes.push(Cause::not_supported(path("kind"), other, SUBJECTS)),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    use crate::apiserver::error::cause_fields as fields;

    #[test]
    fn rules_need_verbs_and_either_resources_or_urls() {
        let good = json!([{"apiGroups": [""], "resources": ["pods"], "verbs": ["get"]}]);
        assert!(fields(|c| rules(&good, true, c)).is_empty());
        let urls = json!([{"nonResourceURLs": ["/healthz"], "verbs": ["get"]}]);
        assert!(fields(|c| rules(&urls, false, c)).is_empty());
        assert_eq!(
            fields(|c| rules(&urls, true, c)),
            ["rules[0].nonResourceURLs"]
        );
        let bad = json!([{"resources": ["pods"]}]);
        assert_eq!(
            fields(|c| rules(&bad, true, c)),
            ["rules[0].verbs", "rules[0].apiGroups"]
        );
    }

    #[test]
    fn bindings_name_an_rbac_role_and_known_subjects() {
        let good = json!({"roleRef": {"apiGroup": RBAC_GROUP, "kind": "Role", "name": "r"},
            "subjects": [{"kind": "ServiceAccount", "name": "default"},
                         {"kind": "User", "apiGroup": RBAC_GROUP, "name": "jane"}]});
        assert!(fields(|c| binding(&good, true, c)).is_empty());
        // A ClusterRoleBinding may not bind a Role, and its ServiceAccounts need a namespace.
        assert_eq!(
            fields(|c| binding(&good, false, c)),
            ["roleRef.kind", "subjects[0].namespace"]
        );
        let bad = json!({"roleRef": {"apiGroup": "x", "kind": "Role"},
            "subjects": [{"kind": "Robot", "name": "r2"}]});
        assert_eq!(
            fields(|c| binding(&bad, true, c)),
            ["roleRef.apiGroup", "roleRef.name", "subjects[0].kind"]
        );
    }
}
