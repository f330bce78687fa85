//! What kube-apiserver checks in Ingresses and NetworkPolicies
//! (`pkg/apis/networking/validation`), with its messages and field paths. Flotilla stores and
//! serves them so that manifests carrying them apply unchanged; no ingress controller serves
//! Ingresses and nothing enforces NetworkPolicies (as on a cluster whose network plugin does not
//! implement them).

use serde_json::Value;

use super::error::Cause;
use super::validation::items;

/// An Ingress backend at `path`: a Service with a port name or number, or a resource; not both.
fn backend(b: &Value, path: &str, causes: &mut Vec<Cause>) {
    let service = &b["service"];
    let resource = &b["resource"];
    match (service.is_null(), resource.is_null()) {
        (false, false) => causes.push(Cause::invalid(
            path,
            b.to_string(),
            "cannot set both resource and service backends",
        )),
        (true, true) => causes.push(Cause::invalid(
            path,
            b.to_string(),
            "resource or service backend is required",
        )),
        (false, true) => {
            if service["name"].as_str().is_none_or(str::is_empty) {
                causes.push(Cause::required(format!("{path}.service.name")));
            }
            let port = &service["port"];
            let named = port["name"].as_str().is_some_and(|n| !n.is_empty());
            let numbered = port["number"].as_i64().is_some_and(|n| n != 0);
            match (named, numbered) {
                (true, true) => causes.push(Cause::invalid(
                    format!("{path}.service.port"),
                    port.to_string(),
                    "cannot set both port name & port number",
                )),
                (false, false) => causes.push(Cause::invalid(
                    format!("{path}.service.port"),
                    port.to_string(),
                    "port name or number is required",
                )),
                (false, true) => {
                    let n = port["number"].as_i64().unwrap_or(0);
                    if !(1..=65535).contains(&n) {
                        causes.push(Cause::invalid(
                            format!("{path}.service.port.number"),
                            n,
                            "must be between 1 and 65535, inclusive",
                        ));
                    }
                }
                (true, false) => {}
            }
        }
        (true, false) => {
            if resource["kind"].as_str().is_none_or(str::is_empty) {
                causes.push(Cause::required(format!("{path}.resource.kind")));
            }
            if resource["name"].as_str().is_none_or(str::is_empty) {
                causes.push(Cause::required(format!("{path}.resource.name")));
            }
        }
    }
}

/// An Ingress's spec: a default backend or rules; every path with a known `pathType` (an
/// absolute path for `Exact` and `Prefix`) and a valid backend.
pub fn ingress(spec: &Value, causes: &mut Vec<Cause>) {
    let rules = items(&spec["rules"]);
    if spec["defaultBackend"].is_null() && rules.is_empty() {
        causes.push(Cause::invalid(
            "spec",
            spec.to_string(),
            "either `defaultBackend` or `rules` must be specified",
        ));
    }
    if !spec["defaultBackend"].is_null() {
        backend(&spec["defaultBackend"], "spec.defaultBackend", causes);
    }
    const PATH_TYPES: &[&str] = &["Exact", "ImplementationSpecific", "Prefix"];
    for (i, rule) in rules.iter().enumerate() {
        if let Some(host) = rule["host"].as_str()
            && host.parse::<std::net::IpAddr>().is_ok()
        {
            causes.push(Cause::invalid(
                format!("spec.rules[{i}].host"),
                host,
                "must be a DNS name, not an IP address",
            ));
        }
        if rule["http"].is_null() {
            continue;
        }
        let paths = items(&rule["http"]["paths"]);
        if paths.is_empty() {
            causes.push(Cause::required(format!("spec.rules[{i}].http.paths")));
        }
        for (j, p) in paths.iter().enumerate() {
            let at = format!("spec.rules[{i}].http.paths[{j}]");
            // The typed decode writes an absent pathType as "".
            match p["pathType"].as_str().filter(|t| !t.is_empty()) {
                None => causes.push(Cause {
                    reason: "FieldValueRequired",
                    message: "Required value: pathType must be specified".into(),
                    field: format!("{at}.pathType"),
                }),
                Some(t) if !PATH_TYPES.contains(&t) => {
                    causes.push(Cause::not_supported(
                        format!("{at}.pathType"),
                        t,
                        PATH_TYPES,
                    ));
                }
                Some("Exact" | "Prefix") => {
                    let path = p["path"].as_str().unwrap_or("");
                    if !path.starts_with('/') {
                        causes.push(Cause::invalid(
                            format!("{at}.path"),
                            path,
                            "must be an absolute path",
                        ));
                    }
                }
                Some(_) => {}
            }
            backend(&p["backend"], &format!("{at}.backend"), causes);
        }
    }
}

/// A NetworkPolicy's spec: known `policyTypes` and ports.
pub fn network_policy(spec: &Value, causes: &mut Vec<Cause>) {
    const TYPES: &[&str] = &["Egress", "Ingress"];
    for (i, t) in items(&spec["policyTypes"]).iter().enumerate() {
        let t = t.as_str().unwrap_or("");
        if !TYPES.contains(&t) {
            causes.push(Cause::not_supported(
                format!("spec.policyTypes[{i}]"),
                t,
                TYPES,
            ));
        }
    }
    const PROTOCOLS: &[&str] = &["SCTP", "TCP", "UDP"];
    for section in ["ingress", "egress"] {
        for (i, rule) in items(&spec[section]).iter().enumerate() {
            for (j, port) in items(&rule["ports"]).iter().enumerate() {
                if let Some(p) = port["protocol"].as_str()
                    && !PROTOCOLS.contains(&p)
                {
                    causes.push(Cause::not_supported(
                        format!("spec.{section}[{i}].ports[{j}].protocol"),
                        p,
                        PROTOCOLS,
                    ));
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    use crate::apiserver::error::cause_fields as fields;

    #[test]
    fn an_ingress_needs_backends_and_typed_paths() {
        let good = json!({"rules": [{"host": "shop.example", "http": {"paths": [
            {"path": "/", "pathType": "Prefix", "backend": {"service": {"name": "web", "port": {"number": 80}}}}
        ]}}]});
        assert!(fields(|c| ingress(&good, c)).is_empty());
        assert_eq!(fields(|c| ingress(&json!({}), c)), ["spec"]);
        let bad = json!({"rules": [{"host": "10.0.0.1", "http": {"paths": [
            {"path": "api", "pathType": "Exact", "backend": {"service": {"name": "web", "port": {}}}},
            {"path": "/", "backend": {"service": {"name": "web", "port": {"name": "http"}}}}
        ]}}]});
        assert_eq!(
            fields(|c| ingress(&bad, c)),
            [
                "spec.rules[0].host",
                "spec.rules[0].http.paths[0].path",
                "spec.rules[0].http.paths[0].backend.service.port",
                "spec.rules[0].http.paths[1].pathType"
            ]
        );
    }

    #[test]
    fn a_network_policy_names_known_types_and_protocols() {
        let good = json!({"podSelector": {}, "policyTypes": ["Ingress"],
            "ingress": [{"ports": [{"protocol": "TCP", "port": 80}]}]});
        assert!(fields(|c| network_policy(&good, c)).is_empty());
        let bad =
            json!({"policyTypes": ["Sideways"], "egress": [{"ports": [{"protocol": "ICMP"}]}]});
        assert_eq!(
            fields(|c| network_policy(&bad, c)),
            ["spec.policyTypes[0]", "spec.egress[0].ports[0].protocol"]
        );
    }
}
