//! The Endpoints controller: keeps each selector Service's `Endpoints` object (same name) listing
//! its pods' addresses, ready ones under `addresses` and the rest under `notReadyAddresses`, with
//! the ports each pod resolves the Service's target ports to. A Service without a selector is
//! left alone (its Endpoints are the user's); a deleted Service loses its Endpoints.

use serde_json::{Value, json};

use super::service_pods::{self, Key, ServiceReconciler};
use crate::apiserver::api::{Api, DeleteOptions, WriteOptions};
use crate::apiserver::error::ApiResult;
use crate::apiserver::objects;
use crate::apiserver::resources::{self, ResourceInfo};

fn endpoints() -> &'static ResourceInfo {
    resources::find("", "v1", "endpoints").expect("endpoints served")
}

/// The Endpoints `service` should have given the pods its selector matches; `None` when the
/// Service has no selector.
pub fn desired(service: &Value, pods: &[&Value]) -> Option<Value> {
    service_pods::selector(service)?;
    let taking_part: Vec<&Value> = pods
        .iter()
        .copied()
        .filter(|p| service_pods::readiness(service, p).is_some_and(|r| !r.terminating))
        .collect();
    let mut subsets = Vec::new();
    for (ports, members) in service_pods::group_by_ports(service, &taking_part) {
        let mut ready = Vec::new();
        let mut not_ready = Vec::new();
        for pod in members {
            let mut address =
                json!({"ip": pod["status"]["podIP"], "targetRef": service_pods::target_ref(pod)});
            if let Some(node) = pod["spec"]["nodeName"].as_str() {
                address["nodeName"] = json!(node);
            }
            if let Some(h) = service_pods::hostname(service, pod) {
                address["hostname"] = json!(h);
            }
            if service_pods::readiness(service, pod).is_some_and(|r| r.ready) {
                ready.push(address);
            } else {
                not_ready.push(address);
            }
        }
        let mut subset = json!({});
        if !ready.is_empty() {
            subset["addresses"] = json!(ready);
        }
        if !not_ready.is_empty() {
            subset["notReadyAddresses"] = json!(not_ready);
        }
        if !ports.is_empty() {
            subset["ports"] = json!(ports);
        }
        subsets.push(subset);
    }
    let mut labels = service["metadata"]["labels"]
        .as_object()
        .cloned()
        .unwrap_or_default();
    if service["spec"]["clusterIP"] == "None" {
        labels.insert("service.kubernetes.io/headless".into(), json!(""));
    }
    let mut obj = json!({
        "apiVersion": "v1", "kind": "Endpoints",
        "metadata": {
            "name": objects::name(service),
            "namespace": objects::namespace(service).unwrap_or(""),
            "labels": labels,
        },
    });
    if !subsets.is_empty() {
        obj["subsets"] = json!(subsets);
    }
    Some(obj)
}

/// The Endpoints controller (see the module docs).
#[derive(Debug, Default)]
pub struct EndpointsController;

impl ServiceReconciler for EndpointsController {
    fn name(&self) -> &'static str {
        "endpoints"
    }

    async fn reconcile(
        &self,
        api: &Api,
        key: &Key,
        service: Option<&Value>,
        pods: &[&Value],
    ) -> ApiResult<()> {
        let (ns, name) = (key.0.as_str(), key.1.as_str());
        let res = endpoints();
        let current = match api.get(res, Some(ns), name).await {
            Ok(o) => Some(o),
            Err(e) if e.code == 404 => None,
            Err(e) => return Err(e),
        };
        let want = service.and_then(|s| desired(s, pods));
        match (want, current) {
            (None, Some(cur)) => {
                // Only what this controller made goes with the Service (a selector-less
                // Service's Endpoints belong to the user).
                if service.is_none() {
                    let opts = DeleteOptions {
                        precondition_uid: cur["metadata"]["uid"].as_str().map(String::from),
                        ..Default::default()
                    };
                    match api.delete(res, Some(ns), name, &opts).await {
                        Ok(_) => {}
                        Err(e) if e.code == 404 || e.code == 409 => {}
                        Err(e) => return Err(e),
                    }
                }
                Ok(())
            }
            (None, None) => Ok(()),
            (Some(want), None) => match api
                .create(res, Some(ns), want, &WriteOptions::default())
                .await
            {
                Ok(_) => Ok(()),
                // Made meanwhile: the next event reconciles again.
                Err(e) if e.code == 409 => Err(e),
                Err(e) => Err(e),
            },
            (Some(want), Some(cur)) => {
                if want["subsets"] == cur["subsets"]
                    && want["metadata"]["labels"] == cur["metadata"]["labels"]
                {
                    return Ok(());
                }
                let mut next = cur.clone();
                next["metadata"]["labels"] = want["metadata"]["labels"].clone();
                match want.get("subsets") {
                    Some(s) => next["subsets"] = s.clone(),
                    None => {
                        next.as_object_mut().expect("object").remove("subsets");
                    }
                }
                api.update(res, Some(ns), name, next, None, &WriteOptions::default())
                    .await
                    .map(|_| ())
            }
        }
    }
}

/// Runs the controller until `shutdown`.
pub async fn run(api: Api, shutdown: tokio_util::sync::CancellationToken) {
    service_pods::run(api, EndpointsController, shutdown).await
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pod(name: &str, ip: &str, ready: bool, port_name: &str, port: i64) -> Value {
        json!({
            "metadata": {"name": name, "namespace": "ns", "uid": format!("u-{name}"), "labels": {"app": "web"}},
            "spec": {"nodeName": "n1", "containers": [{"name": "c", "ports": [{"name": port_name, "containerPort": port, "protocol": "TCP"}]}]},
            "status": {"phase": "Running", "podIP": ip, "conditions": [{"type": "Ready", "status": if ready { "True" } else { "False" }}]},
        })
    }

    fn service(target: Value) -> Value {
        json!({
            "metadata": {"name": "web", "namespace": "ns", "uid": "s-1", "labels": {"tier": "front"}},
            "spec": {"selector": {"app": "web"}, "clusterIP": "127.2.0.1",
                     "ports": [{"name": "http", "port": 80, "targetPort": target, "protocol": "TCP"}]},
        })
    }

    #[test]
    fn ready_and_not_ready_pods_go_to_their_lists_with_resolved_ports() {
        let a = pod("a", "127.1.0.1", true, "http", 8080);
        let b = pod("b", "127.1.0.2", false, "http", 8080);
        let c = pod("c", "127.1.0.3", true, "http", 9090);
        let mut pending = pod("d", "", true, "http", 8080);
        pending["status"]["podIP"] = Value::Null;
        let mut done = pod("e", "127.1.0.5", true, "http", 8080);
        done["status"]["phase"] = json!("Succeeded");
        let mut leaving = pod("f", "127.1.0.6", true, "http", 8080);
        leaving["metadata"]["deletionTimestamp"] = json!("2026-01-01T00:00:00Z");
        let ep = desired(
            &service(json!("http")),
            &[&a, &b, &c, &pending, &done, &leaving],
        )
        .unwrap();
        let subsets = ep["subsets"].as_array().unwrap();
        assert_eq!(subsets.len(), 2, "{ep:#}");
        assert_eq!(subsets[0]["addresses"][0]["ip"], "127.1.0.1");
        assert_eq!(subsets[0]["addresses"][0]["targetRef"]["name"], "a");
        assert_eq!(subsets[0]["addresses"][0]["nodeName"], "n1");
        assert_eq!(subsets[0]["notReadyAddresses"][0]["ip"], "127.1.0.2");
        assert_eq!(
            subsets[0]["ports"],
            json!([{"name": "http", "port": 8080, "protocol": "TCP"}])
        );
        assert_eq!(subsets[1]["addresses"][0]["ip"], "127.1.0.3");
        assert_eq!(subsets[1]["ports"][0]["port"], 9090);
        assert_eq!(ep["metadata"]["labels"]["tier"], "front");

        let numeric = desired(&service(json!(7000)), &[&a]).unwrap();
        assert_eq!(numeric["subsets"][0]["ports"][0]["port"], 7000);
        let none = desired(&service(json!("http")), &[]).unwrap();
        assert!(none.get("subsets").is_none());
        let mut no_selector = service(json!(80));
        no_selector["spec"]
            .as_object_mut()
            .unwrap()
            .remove("selector");
        assert!(desired(&no_selector, &[&a]).is_none());
    }
}
