//! The driver shared by the Endpoints and EndpointSlice controllers: an in-process informer of
//! Services and Pods that reconciles a Service whenever it, or a pod its selector matches
//! (before or after the change), changes.
//!
//! It is watch-driven: a pod's readiness change reaches the reconcile as soon as the pod's
//! status is stored (no polling), which keeps the endpoints within milliseconds of the pods.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::sync::OnceLock;
use std::time::Duration;

use bytes::Bytes;
use serde_json::Value;
use tokio_util::sync::CancellationToken;

use crate::apiserver::api::{Api, ListParams};
use crate::apiserver::error::ApiResult;
use crate::apiserver::objects;
use crate::apiserver::resources::{self, ResourceInfo};
use crate::store::{EventType, Revision};

/// `(namespace, name)`.
pub type Key = (String, String);

/// A controller driven by Services and their pods.
pub trait ServiceReconciler: Send + Sync {
    /// The controller's name, for logs.
    fn name(&self) -> &'static str;

    /// Brings the objects of Service `key` in line with `service` (`None`: it is gone) and the
    /// pods its selector matches.
    fn reconcile(
        &self,
        api: &Api,
        key: &Key,
        service: Option<&Value>,
        pods: &[&Value],
    ) -> impl Future<Output = ApiResult<()>> + Send;
}

fn services() -> &'static ResourceInfo {
    resources::find("", "v1", "services").expect("services served")
}

fn pods() -> &'static ResourceInfo {
    resources::find("", "v1", "pods").expect("pods served")
}

/// `(namespace, name)` of the pod stored under `key` (`/registry/core/pods/NS/NAME`).
fn pod_key(key: &str) -> Key {
    let rest = key.rsplitn(3, '/').collect::<Vec<_>>();
    match rest.as_slice() {
        [name, ns, _] => (ns.to_string(), name.to_string()),
        _ => (String::new(), key.to_string()),
    }
}

fn key_of(obj: &Value) -> Key {
    (
        objects::namespace(obj).unwrap_or("").to_string(),
        objects::name(obj).to_string(),
    )
}

/// The Service's non-empty `spec.selector` object, unparsed.
fn selector_object(service: &Value) -> Option<&serde_json::Map<String, Value>> {
    service["spec"]["selector"]
        .as_object()
        .filter(|sel| !sel.is_empty())
}

/// The Service's `spec.selector`, or `None` when it has none (its endpoints are not managed).
pub fn selector(service: &Value) -> Option<BTreeMap<String, String>> {
    let sel = selector_object(service)?;
    Some(
        sel.iter()
            .map(|(k, v)| (k.clone(), v.as_str().unwrap_or("").to_string()))
            .collect(),
    )
}

/// Whether `labels` satisfy a Service selector.
pub fn selects(selector: &BTreeMap<String, String>, labels: &Value) -> bool {
    selector
        .iter()
        .all(|(k, v)| labels.get(k).and_then(Value::as_str) == Some(v.as_str()))
}

/// A cached pod, decoded the first time a Service needs it: pods in namespaces where no
/// Service selects anything are never decoded (at tens of thousands of pod writes per second,
/// decoding each one for nothing was a tenth of the control plane's CPU).
struct CachedPod {
    bytes: Bytes,
    revision: Revision,
    decoded: OnceLock<Value>,
}

impl CachedPod {
    fn decoded(value: Value) -> Self {
        CachedPod {
            bytes: Bytes::new(),
            revision: 0,
            decoded: OnceLock::from(value),
        }
    }

    fn lazy(bytes: Bytes, revision: Revision) -> Self {
        CachedPod {
            bytes,
            revision,
            decoded: OnceLock::new(),
        }
    }

    fn get(&self) -> &Value {
        self.decoded
            .get_or_init(|| objects::from_bytes(&self.bytes, self.revision))
    }
}

/// The informer's caches.
#[derive(Default)]
struct Cache {
    services: HashMap<Key, Value>,
    pods: HashMap<Key, CachedPod>,
}

impl Cache {
    fn pods_of(&self, service: &Value) -> Vec<&Value> {
        let Some(sel) = selector(service) else {
            return Vec::new();
        };
        let ns = objects::namespace(service).unwrap_or("");
        let mut pods: Vec<&Value> = self
            .pods
            .iter()
            .filter(|((pns, _), _)| pns == ns)
            .map(|(_, p)| p.get())
            .filter(|p| selects(&sel, &p["metadata"]["labels"]))
            .collect();
        pods.sort_by(|a, b| objects::name(a).cmp(objects::name(b)));
        pods
    }

    /// Whether a Service in namespace `ns` has a selector (so its pods matter).
    fn selects_in(&self, ns: &str) -> bool {
        self.services
            .iter()
            .any(|((sns, _), s)| sns == ns && selector_object(s).is_some())
    }

    /// The Services whose selector matches any of `labels` in namespace `ns`.
    fn services_selecting(&self, ns: &str, labels: &[&Value]) -> Vec<Key> {
        self.services
            .iter()
            .filter(|((sns, _), s)| {
                sns == ns && selector(s).is_some_and(|sel| labels.iter().any(|l| selects(&sel, l)))
            })
            .map(|(k, _)| k.clone())
            .collect()
    }
}

/// Runs `r` until `shutdown`: lists Services and Pods, reconciles every Service, then one
/// reconcile per affected Service on each change; failures are retried after a short delay.
pub async fn run<R: ServiceReconciler>(api: Api, r: R, shutdown: CancellationToken) {
    'relist: loop {
        if shutdown.is_cancelled() {
            return;
        }
        let listed = async {
            let (svcs, svc_rev, _) = api.list(services(), None, &ListParams::default()).await?;
            let (pods_list, pod_rev, _) = api.list(pods(), None, &ListParams::default()).await?;
            ApiResult::Ok((svcs, svc_rev, pods_list, pod_rev))
        }
        .await;
        let (svcs, svc_rev, pod_list, pod_rev) = match listed {
            Ok(l) => l,
            Err(e) => {
                tracing::warn!(controller = r.name(), error = %e, "list failed");
                tokio::time::sleep(Duration::from_secs(1)).await;
                continue;
            }
        };
        let mut cache = Cache::default();
        for s in svcs {
            cache.services.insert(key_of(&s), s);
        }
        for p in pod_list {
            cache.pods.insert(key_of(&p), CachedPod::decoded(p));
        }
        let (mut svc_watch, mut pod_watch) = match (
            api.watch(services(), None, svc_rev),
            api.watch(pods(), None, pod_rev),
        ) {
            (Ok(a), Ok(b)) => (a, b),
            _ => continue,
        };
        // Services whose objects may be stale; at the start, all of them (and the gone ones are
        // found by the reconcilers' own listing of what they manage).
        let mut queue: BTreeSet<Key> = cache.services.keys().cloned().collect();
        loop {
            let mut retry = BTreeSet::new();
            for key in std::mem::take(&mut queue) {
                let service = cache.services.get(&key);
                let pods = service.map(|s| cache.pods_of(s)).unwrap_or_default();
                if let Err(e) = r.reconcile(&api, &key, service, &pods).await {
                    tracing::debug!(controller = r.name(), service = %format!("{}/{}", key.0, key.1), error = %e, "reconcile failed; retrying");
                    retry.insert(key);
                }
            }
            let wait = if retry.is_empty() {
                Duration::from_secs(3600)
            } else {
                Duration::from_millis(200)
            };
            queue = retry;
            tokio::select! {
                _ = shutdown.cancelled() => return,
                _ = tokio::time::sleep(wait) => {}
                ev = svc_watch.next() => match ev {
                    Some(Ok(e)) => {
                        let obj = objects::from_bytes(&e.value, e.revision);
                        let key = key_of(&obj);
                        if e.event_type == EventType::Deleted {
                            cache.services.remove(&key);
                        } else {
                            cache.services.insert(key.clone(), obj);
                        }
                        queue.insert(key);
                    }
                    _ => continue 'relist,
                },
                ev = pod_watch.next() => match ev {
                    Some(Ok(e)) => {
                        let key = pod_key(&e.key);
                        if !cache.selects_in(&key.0) {
                            // No Service here to tell: keep the bytes for later.
                            if e.event_type == EventType::Deleted {
                                cache.pods.remove(&key);
                            } else {
                                cache.pods.insert(key, CachedPod::lazy(e.value.clone(), e.revision));
                            }
                            continue;
                        }
                        let obj = objects::from_bytes(&e.value, e.revision);
                        let prev = e.prev.as_ref().map(|b| objects::from_bytes(b, 0));
                        let mut labels = vec![&obj["metadata"]["labels"]];
                        if let Some(p) = &prev {
                            labels.push(&p["metadata"]["labels"]);
                        }
                        queue.extend(cache.services_selecting(&key.0, &labels));
                        if e.event_type == EventType::Deleted {
                            cache.pods.remove(&key);
                        } else {
                            cache.pods.insert(key, CachedPod::decoded(obj));
                        }
                    }
                    _ => continue 'relist,
                },
            }
        }
    }
}

/// The `ownerReferences` entry naming the Service as controller.
pub fn owner_reference(service: &Value) -> Value {
    serde_json::json!({
        "apiVersion": "v1", "kind": "Service", "name": objects::name(service),
        "uid": service["metadata"]["uid"], "controller": true, "blockOwnerDeletion": true,
    })
}

/// The port a Service port's `targetPort` means on `pod`: a number as is, a name looked up in
/// the pod's `containerPorts` (with the Service port's protocol); `None` when the name is not
/// there.
pub fn resolve_target_port(service_port: &Value, pod: &Value) -> Option<i64> {
    let protocol = service_port["protocol"].as_str().unwrap_or("TCP");
    match &service_port["targetPort"] {
        Value::Number(n) => n.as_i64(),
        Value::String(name) => {
            if let Ok(n) = name.parse::<i64>() {
                return Some(n);
            }
            pod["spec"]["containers"].as_array()?.iter().find_map(|c| {
                c["ports"].as_array()?.iter().find_map(|p| {
                    let same = p["name"].as_str() == Some(name)
                        && p["protocol"].as_str().unwrap_or("TCP") == protocol;
                    same.then(|| p["containerPort"].as_i64()).flatten()
                })
            })
        }
        _ => service_port["port"].as_i64(),
    }
}

/// How a pod counts for a Service's endpoints.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PodReadiness {
    /// Its `Ready` condition is `True` (or the Service publishes not-ready addresses).
    pub ready: bool,
    /// It is being deleted.
    pub terminating: bool,
}

/// Whether a pod takes part at all (it has an address and has not finished), and how.
pub fn readiness(service: &Value, pod: &Value) -> Option<PodReadiness> {
    let ip = pod["status"]["podIP"].as_str().unwrap_or("");
    if ip.is_empty()
        || matches!(
            pod["status"]["phase"].as_str(),
            Some("Succeeded" | "Failed")
        )
    {
        return None;
    }
    let condition = pod["status"]["conditions"].as_array().is_some_and(|cs| {
        cs.iter()
            .any(|c| c["type"] == "Ready" && c["status"] == "True")
    });
    let publish = service["spec"]["publishNotReadyAddresses"]
        .as_bool()
        .unwrap_or(false);
    Some(PodReadiness {
        ready: condition || publish,
        terminating: objects::is_deleting(pod),
    })
}

/// The host name a pod has under the Service (its `spec.hostname`, when its `spec.subdomain`
/// names the Service), which endpoints carry so that DNS answers `<hostname>.<service>`: a
/// StatefulSet pod's stable name.
pub fn hostname<'a>(service: &Value, pod: &'a Value) -> Option<&'a str> {
    let hostname = pod["spec"]["hostname"].as_str().filter(|h| !h.is_empty())?;
    (pod["spec"]["subdomain"] == service["metadata"]["name"]
        && objects::namespace(pod) == objects::namespace(service))
    .then_some(hostname)
}

/// The `targetRef` of a pod.
pub fn target_ref(pod: &Value) -> Value {
    serde_json::json!({
        "kind": "Pod", "namespace": objects::namespace(pod).unwrap_or(""),
        "name": objects::name(pod), "uid": pod["metadata"]["uid"],
    })
}

/// Groups `pods` by the ports they resolve the Service's ports to (Kubernetes splits subsets
/// and slices that way, since a named targetPort may differ per pod). Each group: the
/// `[{name, port, protocol, appProtocol}]` list (as an Endpoints subset writes it: no name for
/// an unnamed port) and its pods, in a stable order.
pub fn group_by_ports<'a>(
    service: &Value,
    pods: &[&'a Value],
) -> Vec<(Vec<Value>, Vec<&'a Value>)> {
    let ports = service["spec"]["ports"]
        .as_array()
        .cloned()
        .unwrap_or_default();
    let mut groups: Vec<(Vec<Value>, Vec<&'a Value>)> = Vec::new();
    for pod in pods {
        let resolved: Vec<Value> = ports
            .iter()
            .filter_map(|p| {
                let port = resolve_target_port(p, pod)?;
                let mut out = serde_json::json!({"port": port, "protocol": p["protocol"].as_str().unwrap_or("TCP")});
                if let Some(name) = p["name"].as_str().filter(|n| !n.is_empty()) {
                    out["name"] = Value::from(name);
                }
                if let Some(app) = p["appProtocol"].as_str() {
                    out["appProtocol"] = Value::from(app);
                }
                Some(out)
            })
            .collect();
        match groups.iter_mut().find(|(p, _)| *p == resolved) {
            Some((_, members)) => members.push(pod),
            None => groups.push((resolved, vec![pod])),
        }
    }
    groups
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn a_pod_store_key_names_its_namespace_and_name() {
        let key = pods().key(Some("team-a"), "web-0");
        assert_eq!(pod_key(&key), ("team-a".to_string(), "web-0".to_string()));
    }

    #[test]
    fn pods_kept_undecoded_are_decoded_when_a_service_selects_them() {
        let web =
            json!({"metadata": {"name": "web-0", "namespace": "a", "labels": {"app": "web"}}});
        let db = json!({"metadata": {"name": "db-0", "namespace": "a", "labels": {"app": "db"}}});
        let mut cache = Cache::default();
        for (pod, rev) in [(&web, 7), (&db, 8)] {
            let lazy = CachedPod::lazy(Bytes::from(serde_json::to_vec(pod).unwrap()), rev);
            cache.pods.insert(key_of(pod), lazy);
        }
        assert!(!cache.selects_in("a"));
        let svc = json!({"metadata": {"name": "web", "namespace": "a"}, "spec": {"selector": {"app": "web"}}});
        cache.services.insert(key_of(&svc), svc.clone());
        assert!(cache.selects_in("a"));
        assert!(!cache.selects_in("b"));
        let selected = cache.pods_of(&svc);
        assert_eq!(selected.len(), 1);
        assert_eq!(objects::name(selected[0]), "web-0");
        assert_eq!(selected[0]["metadata"]["resourceVersion"], "7");
    }

    #[test]
    fn target_ports_resolve_by_number_and_by_name() {
        let pod = json!({"spec": {"containers": [{"name": "c", "ports": [
            {"name": "http", "containerPort": 8080, "protocol": "TCP"},
            {"name": "dns", "containerPort": 53, "protocol": "UDP"}]}]}});
        let table = [
            (
                json!({"port": 80, "targetPort": 9090, "protocol": "TCP"}),
                Some(9090),
            ),
            (
                json!({"port": 80, "targetPort": "http", "protocol": "TCP"}),
                Some(8080),
            ),
            (
                json!({"port": 80, "targetPort": "dns", "protocol": "TCP"}),
                None,
            ),
            (
                json!({"port": 53, "targetPort": "dns", "protocol": "UDP"}),
                Some(53),
            ),
            (
                json!({"port": 80, "targetPort": "nope", "protocol": "TCP"}),
                None,
            ),
            (json!({"port": 80}), Some(80)),
        ];
        for (port, want) in table {
            assert_eq!(resolve_target_port(&port, &pod), want, "{port}");
        }
    }

    #[test]
    fn selectors_match_all_their_labels() {
        let sel: BTreeMap<String, String> = [("app".to_string(), "web".to_string())].into();
        assert!(selects(&sel, &json!({"app": "web", "x": "y"})));
        assert!(!selects(&sel, &json!({"app": "db"})));
        assert!(!selects(&sel, &Value::Null));
        assert_eq!(selector(&json!({"spec": {"selector": {}}})), None);
    }
}
