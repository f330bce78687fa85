//! The EndpointSlice controller: keeps the `discovery.k8s.io/v1` EndpointSlices of each selector
//! Service (labelled `kubernetes.io/service-name`), one slice per set of resolved ports, each
//! endpoint with its `ready`, `serving` and `terminating` conditions. The node proxy routes from
//! these. Slices are named `<service>-<hash of the port set>`, so a reconcile is idempotent;
//! stale slices of the Service (and all of them when it is gone) are deleted.

use std::collections::BTreeMap;

use serde_json::{Value, json};

use super::service_pods::{self, Key, ServiceReconciler};
use crate::apiserver::api::{Api, DeleteOptions, ListParams, WriteOptions};
use crate::apiserver::error::ApiResult;
use crate::apiserver::objects;
use crate::apiserver::resources::{self, ResourceInfo};
use crate::apiserver::selector::LabelSelector;

/// The label naming a slice's Service.
pub const SERVICE_NAME_LABEL: &str = "kubernetes.io/service-name";
/// The label naming who manages a slice.
pub const MANAGED_BY_LABEL: &str = "endpointslice.kubernetes.io/managed-by";
/// This controller's value of [`MANAGED_BY_LABEL`] (the Kubernetes controller's own).
pub const MANAGED_BY: &str = "endpointslice-controller.k8s.io";

fn slices() -> &'static ResourceInfo {
    resources::find("discovery.k8s.io", "v1", "endpointslices").expect("endpointslices served")
}

/// A short stable hash (FNV-1a) for slice names.
fn short_hash(text: &str) -> String {
    let mut h: u64 = 0xcbf29ce484222325;
    for b in text.bytes() {
        h ^= b as u64;
        h = h.wrapping_mul(0x100000001b3);
    }
    let alphabet = b"bcdfghjklmnpqrstvwxz2456789";
    (0..5)
        .map(|i| alphabet[((h >> (i * 8)) % alphabet.len() as u64) as usize] as char)
        .collect()
}

/// The slices `service` should have given the pods its selector matches, by name; `None` when
/// the Service has no selector.
pub fn desired(service: &Value, pods: &[&Value]) -> Option<BTreeMap<String, Value>> {
    service_pods::selector(service)?;
    let name = objects::name(service);
    let ns = objects::namespace(service).unwrap_or("");
    let taking_part: Vec<&Value> = pods
        .iter()
        .copied()
        .filter(|p| service_pods::readiness(service, p).is_some())
        .collect();
    let mut groups = service_pods::group_by_ports(service, &taking_part);
    if groups.is_empty() {
        // No pods: one empty slice with the Service's ports, as Kubernetes keeps.
        let ports: Vec<Value> = service["spec"]["ports"]
            .as_array()
            .into_iter()
            .flatten()
            .filter_map(|p| {
                let port = p["targetPort"].as_i64()?;
                let mut out =
                    json!({"port": port, "protocol": p["protocol"].as_str().unwrap_or("TCP")});
                if let Some(n) = p["name"].as_str().filter(|n| !n.is_empty()) {
                    out["name"] = json!(n);
                }
                if let Some(app) = p["appProtocol"].as_str() {
                    out["appProtocol"] = json!(app);
                }
                Some(out)
            })
            .collect();
        groups.push((ports, Vec::new()));
    }
    let mut labels = service["metadata"]["labels"]
        .as_object()
        .cloned()
        .unwrap_or_default();
    labels.insert(SERVICE_NAME_LABEL.into(), json!(name));
    labels.insert(MANAGED_BY_LABEL.into(), json!(MANAGED_BY));
    if service["spec"]["clusterIP"] == "None" {
        labels.insert("service.kubernetes.io/headless".into(), json!(""));
    }
    let mut out = BTreeMap::new();
    for (mut ports, members) in groups {
        // A slice's port always has a name, empty for an unnamed Service port (its `name` is a
        // pointer that the EndpointSlice controller always sets, and clients such as `kubectl
        // describe service` dereference it).
        for port in ports.iter_mut().filter_map(Value::as_object_mut) {
            port.entry("name").or_insert_with(|| json!(""));
        }
        let slice_name = format!(
            "{name}-{}",
            short_hash(&serde_json::to_string(&ports).unwrap_or_default())
        );
        let endpoints: Vec<Value> = members
            .iter()
            .map(|pod| {
                let r = service_pods::readiness(service, pod).expect("filtered above");
                let mut ep = json!({
                    "addresses": [pod["status"]["podIP"]],
                    "conditions": {"ready": r.ready && !r.terminating, "serving": r.ready, "terminating": r.terminating},
                    "targetRef": service_pods::target_ref(pod),
                });
                if let Some(node) = pod["spec"]["nodeName"].as_str() {
                    ep["nodeName"] = json!(node);
                }
                if let Some(h) = service_pods::hostname(service, pod) {
                    ep["hostname"] = json!(h);
                }
                ep
            })
            .collect();
        let slice = json!({
            "apiVersion": "discovery.k8s.io/v1", "kind": "EndpointSlice",
            "metadata": {
                "name": slice_name, "namespace": ns, "labels": labels,
                "ownerReferences": [service_pods::owner_reference(service)],
            },
            "addressType": "IPv4",
            "endpoints": endpoints,
            "ports": ports,
        });
        out.insert(slice_name, slice);
    }
    Some(out)
}

/// The EndpointSlice controller (see the module docs).
#[derive(Debug, Default)]
pub struct EndpointSliceController;

fn same(want: &Value, cur: &Value) -> bool {
    let norm = |v: &Value| if v.is_null() { json!([]) } else { v.clone() };
    norm(&want["endpoints"]) == norm(&cur["endpoints"])
        && norm(&want["ports"]) == norm(&cur["ports"])
        && want["metadata"]["labels"] == cur["metadata"]["labels"]
}

impl ServiceReconciler for EndpointSliceController {
    fn name(&self) -> &'static str {
        "endpointslice"
    }

    async fn reconcile(
        &self,
        api: &Api,
        key: &Key,
        service: Option<&Value>,
        pods: &[&Value],
    ) -> ApiResult<()> {
        let (ns, name) = (key.0.as_str(), key.1.as_str());
        let res = slices();
        let selector = LabelSelector::parse(&format!(
            "{SERVICE_NAME_LABEL}={name},{MANAGED_BY_LABEL}={MANAGED_BY}"
        ))
        .map_err(|e| crate::apiserver::error::ApiError::internal(e.to_string()))?;
        let params = ListParams {
            label_selector: Some(selector),
            ..Default::default()
        };
        let (current, _, _) = api.list(res, Some(ns), &params).await?;
        let want = service.and_then(|s| desired(s, pods)).unwrap_or_default();
        for (slice_name, slice) in &want {
            match current.iter().find(|c| objects::name(c) == slice_name) {
                Some(cur) if same(slice, cur) => {}
                Some(cur) => {
                    let mut next = cur.clone();
                    next["metadata"]["labels"] = slice["metadata"]["labels"].clone();
                    next["endpoints"] = slice["endpoints"].clone();
                    next["ports"] = slice["ports"].clone();
                    api.update(
                        res,
                        Some(ns),
                        slice_name,
                        next,
                        None,
                        &WriteOptions::default(),
                    )
                    .await?;
                }
                None => {
                    api.create(res, Some(ns), slice.clone(), &WriteOptions::default())
                        .await?;
                }
            }
        }
        for cur in current
            .iter()
            .filter(|c| !want.contains_key(objects::name(c)))
        {
            match api
                .delete(res, Some(ns), objects::name(cur), &DeleteOptions::default())
                .await
            {
                Ok(_) => {}
                Err(e) if e.code == 404 => {}
                Err(e) => return Err(e),
            }
        }
        Ok(())
    }
}

/// Runs the controller until `shutdown`.
pub async fn run(api: Api, shutdown: tokio_util::sync::CancellationToken) {
    service_pods::run(api, EndpointSliceController, shutdown).await
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pod(name: &str, ip: &str, ready: bool, terminating: bool) -> Value {
        let mut p = json!({
            "metadata": {"name": name, "namespace": "ns", "uid": format!("u-{name}"), "labels": {"app": "web"}},
            "spec": {"nodeName": "n1", "containers": [{"name": "c", "ports": [{"name": "http", "containerPort": 8080, "protocol": "TCP"}]}]},
            "status": {"phase": "Running", "podIP": ip, "conditions": [{"type": "Ready", "status": if ready { "True" } else { "False" }}]},
        });
        if terminating {
            p["metadata"]["deletionTimestamp"] = json!("2026-01-01T00:00:00Z");
        }
        p
    }

    fn service() -> Value {
        json!({
            "metadata": {"name": "web", "namespace": "ns", "uid": "s-1"},
            "spec": {"selector": {"app": "web"}, "clusterIP": "127.2.0.1", "ports": [
                {"name": "http", "port": 80, "targetPort": "http", "protocol": "TCP"},
                {"name": "raw", "port": 81, "targetPort": 9000, "protocol": "TCP"}]},
        })
    }

    #[test]
    fn a_pod_whose_subdomain_names_the_service_has_its_hostname_on_the_endpoint() {
        let mut named = pod("db-0", "127.1.0.1", true, false);
        named["spec"]["hostname"] = json!("db-0");
        named["spec"]["subdomain"] = json!("web");
        let mut elsewhere = pod("db-1", "127.1.0.2", true, false);
        elsewhere["spec"]["hostname"] = json!("db-1");
        elsewhere["spec"]["subdomain"] = json!("other");
        let slices = desired(&service(), &[&named, &elsewhere]).unwrap();
        let (_, slice) = slices.iter().next().unwrap();
        let hosts: Vec<(Value, Value)> = slice["endpoints"]
            .as_array()
            .unwrap()
            .iter()
            .map(|e| (e["targetRef"]["name"].clone(), e["hostname"].clone()))
            .collect();
        assert!(hosts.contains(&(json!("db-0"), json!("db-0"))), "{hosts:?}");
        assert!(hosts.contains(&(json!("db-1"), Value::Null)), "{hosts:?}");
    }

    #[test]
    fn endpoints_carry_ready_serving_and_terminating_conditions() {
        let (a, b, c) = (
            pod("a", "127.1.0.1", true, false),
            pod("b", "127.1.0.2", false, false),
            pod("c", "127.1.0.3", true, true),
        );
        let slices = desired(&service(), &[&a, &b, &c]).unwrap();
        assert_eq!(slices.len(), 1);
        let (name, slice) = slices.iter().next().unwrap();
        assert!(name.starts_with("web-") && name.len() == 9, "{name}");
        assert_eq!(slice["metadata"]["labels"][SERVICE_NAME_LABEL], "web");
        assert_eq!(slice["metadata"]["ownerReferences"][0]["uid"], "s-1");
        assert_eq!(
            slice["ports"],
            json!([{"name": "http", "port": 8080, "protocol": "TCP"}, {"name": "raw", "port": 9000, "protocol": "TCP"}])
        );
        let conds: Vec<(Value, Value, Value)> = slice["endpoints"]
            .as_array()
            .unwrap()
            .iter()
            .map(|e| {
                (
                    e["conditions"]["ready"].clone(),
                    e["conditions"]["serving"].clone(),
                    e["conditions"]["terminating"].clone(),
                )
            })
            .collect();
        assert_eq!(
            conds,
            [
                (json!(true), json!(true), json!(false)),
                (json!(false), json!(false), json!(false)),
                (json!(false), json!(true), json!(true))
            ]
        );
        // Same input, same names: reconciles are idempotent.
        assert_eq!(
            desired(&service(), &[&a, &b, &c])
                .unwrap()
                .keys()
                .collect::<Vec<_>>(),
            slices.keys().collect::<Vec<_>>()
        );
        let empty = desired(&service(), &[]).unwrap();
        let only = empty.values().next().unwrap();
        assert_eq!(only["endpoints"], json!([]));
        assert_eq!(
            only["ports"],
            json!([{"name": "raw", "port": 9000, "protocol": "TCP"}])
        );
    }

    #[test]
    fn an_unnamed_service_port_gets_an_empty_name_and_keeps_its_app_protocol() {
        let mut svc = service();
        svc["spec"]["ports"] =
            json!([{"port": 80, "targetPort": 8080, "protocol": "TCP", "appProtocol": "http"}]);
        let a = pod("a", "127.1.0.1", true, false);
        let want = json!([{"name": "", "port": 8080, "protocol": "TCP", "appProtocol": "http"}]);
        for pods in [vec![&a], vec![]] {
            let slices = desired(&svc, &pods).unwrap();
            assert_eq!(slices.values().next().unwrap()["ports"], want, "{pods:?}");
        }
    }
}
