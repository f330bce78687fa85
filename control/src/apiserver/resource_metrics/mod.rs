//! `metrics.k8s.io/v1beta1`, the resource metrics API `kubectl top` reads, served the way
//! metrics-server serves it: read-only `NodeMetrics` and `PodMetrics` computed from the agents'
//! `/metrics/resource` (kubelet's resource metrics), with nothing written to the store.
//!
//! - [`sample`]: the text format of one scrape, read into node and container points.
//! - [`usage`](mod@usage): CPU rates and memory from two points, and their text forms.
//! - [`scraper`]: scraping on request and the samples kept between requests.
//!
//! Which objects are asked about comes from the store: `labelSelector` and `fieldSelector`
//! select Nodes and Pods as they would on `/api/v1`, and a pod's node is its `spec.nodeName`.
//! Only Ready nodes are scraped; unreachable ones are left out, and so are nodes and pods
//! without two usable samples. A node or pod asked for by name without metrics is 404.

pub mod sample;
pub mod scraper;
pub mod usage;

use std::collections::{BTreeSet, HashMap};

use chrono::{DateTime, SecondsFormat, Utc};
use serde_json::{Map, Value, json};

use self::sample::ContainerKey;
pub use self::scraper::Scraper;
use self::scraper::{Pair, Target};
use self::usage::{Usage, cpu_quantity, go_duration, memory_quantity, usage};
use super::agent;
use super::api::{Api, ListParams};
use super::error::{ApiError, ApiResult};
use super::resources::{self, ResourceInfo};

/// The API group.
pub const GROUP: &str = "metrics.k8s.io";

/// The API version.
pub const VERSION: &str = "v1beta1";

/// The resources as discovery lists them (not in the storage table,
/// [`RESOURCES`](super::resources::RESOURCES)): `nodes` (`NodeMetrics`, cluster-scoped) and
/// `pods` (`PodMetrics`), read-only ([`VERBS`]). Their singular names are empty, as
/// metrics-server's discovery has them.
pub static RESOURCES: [ResourceInfo; 2] = [
    metrics_info("NodeMetrics", "nodes", false),
    metrics_info("PodMetrics", "pods", true),
];

/// The verbs the resource metrics take.
pub const VERBS: &[&str] = &["get", "list"];

const fn metrics_info(kind: &'static str, plural: &'static str, namespaced: bool) -> ResourceInfo {
    ResourceInfo {
        group: GROUP,
        version: VERSION,
        kind,
        plural,
        singular: "",
        namespaced,
        short_names: &[],
        categories: &[],
        subresources: &[],
    }
}

/// A request of the resource metrics API.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum MetricsRequest {
    /// `/nodes` or `/nodes/{name}`.
    Nodes {
        /// The node asked for, or `None` for the list.
        name: Option<String>,
    },
    /// `/pods`, `/namespaces/{ns}/pods` or `/namespaces/{ns}/pods/{name}`.
    Pods {
        /// The namespace, or `None` for all of them.
        namespace: Option<String>,
        /// The pod asked for, or `None` for the list.
        name: Option<String>,
    },
}

impl MetricsRequest {
    /// The request a path names, if it names one (other paths under the group-version are
    /// discovery or unknown, answered by the generic routing).
    pub fn from_path(path: &str) -> Option<MetricsRequest> {
        let rest = path
            .strip_prefix("/apis/")?
            .strip_prefix(GROUP)?
            .strip_prefix('/')?
            .strip_prefix(VERSION)?
            .strip_prefix('/')?;
        let segs: Vec<&str> = rest.split('/').filter(|s| !s.is_empty()).collect();
        let s = |x: &&str| Some(x.to_string());
        Some(match segs.as_slice() {
            ["nodes"] => MetricsRequest::Nodes { name: None },
            ["nodes", name] => MetricsRequest::Nodes { name: s(name) },
            ["pods"] => MetricsRequest::Pods {
                namespace: None,
                name: None,
            },
            ["namespaces", ns, "pods"] => MetricsRequest::Pods {
                namespace: s(ns),
                name: None,
            },
            ["namespaces", ns, "pods", name] => MetricsRequest::Pods {
                namespace: s(ns),
                name: s(name),
            },
            _ => return None,
        })
    }

    /// The stored resource the request's selectors apply to: Nodes or Pods.
    pub fn selects(&self) -> &'static ResourceInfo {
        let plural = match self {
            MetricsRequest::Nodes { .. } => "nodes",
            MetricsRequest::Pods { .. } => "pods",
        };
        resources::find("", "v1", plural).expect("nodes and pods are served")
    }
}

/// Answers a request: the `NodeMetrics`/`PodMetrics` object or list, scraping the agents of
/// the nodes concerned. `params` are the list's selectors, parsed for [`MetricsRequest::selects`].
pub async fn answer(
    api: &Api,
    scraper: &Scraper,
    req: &MetricsRequest,
    params: &ListParams,
) -> ApiResult<Value> {
    let params = ListParams {
        limit: 0,
        continue_token: None,
        ..params.clone()
    };
    let res = req.selects();
    match req {
        MetricsRequest::Nodes { name: Some(name) } => {
            let node = api
                .get(res, None, name)
                .await
                .map_err(|e| missing(e, "nodemetrics", name))?;
            let pairs = scraper.pairs(targets(std::slice::from_ref(&node))).await;
            let item = node_metrics(&node, &pairs, Utc::now())
                .ok_or_else(|| not_found("nodemetrics", name))?;
            Ok(typed("NodeMetrics", item))
        }
        MetricsRequest::Nodes { name: None } => {
            let (nodes, _, _) = api.list(res, None, &params).await?;
            let pairs = scraper.pairs(targets(&nodes)).await;
            let now = Utc::now();
            let items = nodes
                .iter()
                .filter_map(|n| node_metrics(n, &pairs, now))
                .collect();
            Ok(list("NodeMetricsList", items))
        }
        MetricsRequest::Pods {
            namespace,
            name: Some(name),
        } => {
            let ns = namespace.as_deref();
            // metrics-server names a missing pod's metrics `namespace/name`.
            let shown = format!("{}/{name}", ns.unwrap_or("default"));
            let pod = api
                .get(res, ns, name)
                .await
                .map_err(|e| missing(e, "podmetrics", &shown))?;
            let nodes = nodes_of(api, std::slice::from_ref(&pod)).await;
            let pairs = scraper.pairs(targets(&nodes)).await;
            let item = pod_metrics(&pod, &pairs, Utc::now())
                .ok_or_else(|| not_found("podmetrics", &shown))?;
            Ok(typed("PodMetrics", item))
        }
        MetricsRequest::Pods {
            namespace,
            name: None,
        } => {
            let (pods, _, _) = api.list(res, namespace.as_deref(), &params).await?;
            let nodes = nodes_of(api, &pods).await;
            let pairs = scraper.pairs(targets(&nodes)).await;
            let now = Utc::now();
            let items = pods
                .iter()
                .filter_map(|p| pod_metrics(p, &pairs, now))
                .collect();
            Ok(list("PodMetricsList", items))
        }
    }
}

/// 404 NotFound for metrics of `name`, as metrics-server words it
/// (`podmetrics.metrics.k8s.io "default/web-1" not found`).
fn not_found(resource: &str, name: &str) -> ApiError {
    ApiError {
        message: format!("{resource}.{GROUP} \"{name}\" not found"),
        name: Some(name.to_string()),
        group: Some(GROUP.to_string()),
        kind: Some(resource.to_string()),
        ..ApiError::no_route()
    }
}

/// A missing Node or Pod is missing metrics; other errors pass.
fn missing(e: ApiError, resource: &str, name: &str) -> ApiError {
    if e.code == 404 {
        not_found(resource, name)
    } else {
        e
    }
}

/// The Nodes the pods are bound to (each once; unknown ones left out).
async fn nodes_of(api: &Api, pods: &[Value]) -> Vec<Value> {
    let names: BTreeSet<&str> = pods
        .iter()
        .filter_map(|p| p["spec"]["nodeName"].as_str())
        .filter(|n| !n.is_empty())
        .collect();
    let nodes = resources::find("", "v1", "nodes").expect("nodes served");
    let mut out = Vec::with_capacity(names.len());
    for name in names {
        if let Ok(node) = api.get(nodes, None, name).await {
            out.push(node);
        }
    }
    out
}

/// The agents of the Ready nodes among `nodes` that publish an address.
fn targets(nodes: &[Value]) -> Vec<Target> {
    nodes
        .iter()
        .filter(|n| is_ready(n))
        .filter_map(|n| {
            Some(Target {
                node: n["metadata"]["name"].as_str()?.to_string(),
                addr: agent::agent_address(n)?,
            })
        })
        .collect()
}

/// Whether the node's `Ready` condition is `True`.
fn is_ready(node: &Value) -> bool {
    node["status"]["conditions"].as_array().is_some_and(|cs| {
        cs.iter()
            .any(|c| c["type"] == "Ready" && c["status"] == "True")
    })
}

/// The `NodeMetrics` of a node (without its type meta), if its samples make a window.
fn node_metrics(node: &Value, pairs: &HashMap<String, Pair>, now: DateTime<Utc>) -> Option<Value> {
    let name = node["metadata"]["name"].as_str()?;
    let pair = pairs.get(name)?;
    let u = usage(pair.prev.node.as_ref()?, pair.last.node.as_ref()?)?;
    Some(json!({
        "metadata": metadata(node, now),
        "timestamp": rfc3339(u.timestamp),
        "window": go_duration(u.window),
        "usage": usage_json(&u),
    }))
}

/// The usage of each container of a pod over its window, if every container of it in the
/// latest sample of its node has an earlier one: as metrics-server, a pod shows up only when
/// all its containers can be reported. Returns the containers and the earliest window's end.
fn container_usages(pod: &Value, pairs: &HashMap<String, Pair>) -> Option<Vec<(String, Usage)>> {
    let name = pod["metadata"]["name"].as_str()?;
    let ns = pod["metadata"]["namespace"].as_str()?;
    let pair = pairs.get(pod["spec"]["nodeName"].as_str()?)?;
    let from = ContainerKey {
        namespace: ns.to_string(),
        pod: name.to_string(),
        container: String::new(),
    };
    let mut containers = Vec::new();
    for (key, last) in pair
        .last
        .containers
        .range(from..)
        .take_while(|(k, _)| k.namespace == ns && k.pod == name)
    {
        let prev = pair.prev.containers.get(key)?;
        if let Some(u) = usage(prev, last) {
            containers.push((key.container.clone(), u));
        }
    }
    (!containers.is_empty()).then_some(containers)
}

/// The `PodMetrics` of a pod (without its type meta), with the earliest container window.
fn pod_metrics(pod: &Value, pairs: &HashMap<String, Pair>, now: DateTime<Utc>) -> Option<Value> {
    let containers = container_usages(pod, pairs)?;
    let u = containers
        .iter()
        .map(|(_, u)| u)
        .min_by_key(|u| u.timestamp)?;
    Some(json!({
        "metadata": metadata(pod, now),
        "timestamp": rfc3339(u.timestamp),
        "window": go_duration(u.window),
        "containers": containers
            .iter()
            .map(|(name, u)| json!({"name": name, "usage": usage_json(u)}))
            .collect::<Vec<_>>(),
    }))
}

/// A pod's usage summed over its containers: CPU in millicores, memory in bytes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PodUsage {
    /// CPU, in millicores (rounded down).
    pub cpu_millis: i64,
    /// Working-set memory, in bytes.
    pub memory_bytes: i64,
}

/// The usage of each of `pods` that the metrics API would report, by pod name, scraping the
/// agents of their nodes: what the HorizontalPodAutoscaler controller reads (it asks the
/// metrics API in-process rather than over HTTP).
pub async fn pod_usage(api: &Api, scraper: &Scraper, pods: &[Value]) -> HashMap<String, PodUsage> {
    let nodes = nodes_of(api, pods).await;
    let pairs = scraper.pairs(targets(&nodes)).await;
    pods.iter()
        .filter_map(|p| {
            let containers = container_usages(p, &pairs)?;
            let sum = |f: fn(&Usage) -> u64| containers.iter().map(|(_, u)| f(u) as i64).sum();
            Some((
                p["metadata"]["name"].as_str()?.to_string(),
                PodUsage {
                    cpu_millis: sum(|u| u.nanocores / 1_000_000),
                    memory_bytes: sum(|u| u.memory_bytes),
                },
            ))
        })
        .collect()
}

/// `metadata` of a metrics object: the object's name, namespace and labels; created now, as
/// metrics-server has it.
fn metadata(obj: &Value, now: DateTime<Utc>) -> Value {
    let mut meta = Map::new();
    meta.insert("name".into(), obj["metadata"]["name"].clone());
    if let Some(ns) = obj["metadata"]["namespace"].as_str() {
        meta.insert("namespace".into(), ns.into());
    }
    meta.insert("creationTimestamp".into(), rfc3339(now).into());
    if let Some(labels) = obj["metadata"]["labels"]
        .as_object()
        .filter(|l| !l.is_empty())
    {
        meta.insert("labels".into(), Value::Object(labels.clone()));
    }
    Value::Object(meta)
}

fn usage_json(u: &Usage) -> Value {
    json!({"cpu": cpu_quantity(u.nanocores), "memory": memory_quantity(u.memory_bytes)})
}

/// A time as `metav1.Time` marshals it: RFC 3339, whole seconds, UTC.
fn rfc3339(t: DateTime<Utc>) -> String {
    t.to_rfc3339_opts(SecondsFormat::Secs, true)
}

/// One object with its type meta first.
fn typed(kind: &str, item: Value) -> Value {
    let mut obj = Map::new();
    obj.insert("kind".into(), kind.into());
    obj.insert("apiVersion".into(), format!("{GROUP}/{VERSION}").into());
    if let Value::Object(fields) = item {
        obj.extend(fields);
    }
    Value::Object(obj)
}

fn list(kind: &str, items: Vec<Value>) -> Value {
    json!({
        "kind": kind,
        "apiVersion": format!("{GROUP}/{VERSION}"),
        "metadata": {},
        "items": items,
    })
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;
    use std::sync::atomic::{AtomicU64, Ordering};
    use std::time::Duration;

    use axum::Router;
    use axum::routing::get;

    use super::scraper::Timing;
    use super::*;
    use crate::apiserver::fake_agent;
    use crate::apiserver::selector::LabelSelector;

    /// A fake agent whose counters advance by a fixed amount per scrape, one second apart in
    /// its timestamps: 2 cores for the node, 250 millicores for `web-1`'s container. Returns
    /// its address and how many scrapes it answered.
    async fn agent() -> (std::net::SocketAddr, Arc<AtomicU64>) {
        let scrapes = Arc::new(AtomicU64::new(0));
        let counted = scrapes.clone();
        let router = Router::new().route(
            "/metrics/resource",
            get(move || {
                let n = counted.fetch_add(1, Ordering::SeqCst) + 1;
                async move {
                    let ts = 1_764_690_000_000 + n * 1000;
                    format!(
                        "# TYPE node_cpu_usage_seconds_total counter\n\
                         node_cpu_usage_seconds_total {node_cpu} {ts}\n\
                         node_memory_working_set_bytes 1.073741824e+09 {ts}\n\
                         container_cpu_usage_seconds_total{{container=\"app\",namespace=\"default\",pod=\"web-1\"}} {pod_cpu} {ts}\n\
                         container_memory_working_set_bytes{{pod=\"web-1\",namespace=\"default\",container=\"app\"}} 65536 {ts}\n\
                         container_start_time_seconds{{container=\"app\",namespace=\"default\",pod=\"web-1\"}} 1764689000.5 {ts}\n\
                         scrape_error 0\n",
                        node_cpu = n * 2,
                        pod_cpu = n as f64 * 0.25,
                    )
                }
            }),
        );
        (fake_agent::serve(router).await, scrapes)
    }

    fn fast() -> Scraper {
        Scraper::new(Timing {
            timeout: Duration::from_millis(500),
            min_window: Duration::from_millis(100),
            max_age: Duration::from_secs(600),
        })
    }

    fn nodes(name: Option<&str>) -> MetricsRequest {
        MetricsRequest::Nodes {
            name: name.map(String::from),
        }
    }

    fn pods(name: Option<&str>) -> MetricsRequest {
        MetricsRequest::Pods {
            namespace: Some("default".into()),
            name: name.map(String::from),
        }
    }

    fn names(list: &Value) -> Vec<&str> {
        list["items"]
            .as_array()
            .unwrap()
            .iter()
            .map(|i| i["metadata"]["name"].as_str().unwrap())
            .collect()
    }

    #[test]
    fn paths_name_requests() {
        let base = "/apis/metrics.k8s.io/v1beta1";
        assert_eq!(
            MetricsRequest::from_path(&format!("{base}/nodes")),
            Some(nodes(None))
        );
        assert_eq!(
            MetricsRequest::from_path(&format!("{base}/nodes/n1")),
            Some(nodes(Some("n1")))
        );
        assert_eq!(
            MetricsRequest::from_path(&format!("{base}/namespaces/default/pods/p")),
            Some(pods(Some("p")))
        );
        assert_eq!(
            MetricsRequest::from_path(&format!("{base}/pods")),
            Some(MetricsRequest::Pods {
                namespace: None,
                name: None
            })
        );
        for other in [
            base.to_string(),
            format!("{base}/"),
            format!("{base}/services"),
            format!("{base}/nodes/n1/status"),
            "/apis/metrics.k8s.io/v1/nodes".into(),
            "/api/v1/nodes".into(),
        ] {
            assert_eq!(MetricsRequest::from_path(&other), None, "{other}");
        }
    }

    #[tokio::test]
    async fn node_metrics_come_from_ready_reachable_nodes_with_a_rate() {
        let (api, _dir) = fake_agent::api().await;
        let (addr, scrapes) = agent().await;
        fake_agent::node(&api, "n1", Some(addr), true).await;
        let gone = fake_agent::closed_port();
        fake_agent::node(&api, "gone", Some(gone.addr), true).await;
        fake_agent::node(&api, "not-ready", Some(addr), false).await;
        fake_agent::node(&api, "no-address", None, true).await;
        let scraper = fast();

        let list = answer(&api, &scraper, &nodes(None), &ListParams::default())
            .await
            .unwrap();
        assert_eq!(list["kind"], "NodeMetricsList");
        assert_eq!(list["apiVersion"], "metrics.k8s.io/v1beta1");
        assert_eq!(list["metadata"], json!({}));
        assert_eq!(names(&list), ["n1"]);
        let n1 = &list["items"][0];
        assert_eq!(n1["usage"], json!({"cpu": "2", "memory": "1Gi"}));
        assert_eq!(n1["window"], "1s");
        assert_eq!(n1["timestamp"], "2025-12-02T15:40:02Z");
        assert_eq!(n1["metadata"]["labels"]["kubernetes.io/hostname"], "n1");
        assert!(n1["metadata"]["creationTimestamp"].is_string());
        // The first request scraped twice; the next, a window later, once.
        assert_eq!(scrapes.load(Ordering::SeqCst), 2);
        tokio::time::sleep(Duration::from_millis(150)).await;
        let one = answer(&api, &scraper, &nodes(Some("n1")), &ListParams::default())
            .await
            .unwrap();
        assert_eq!(scrapes.load(Ordering::SeqCst), 3);
        assert_eq!(one["kind"], "NodeMetrics");
        assert_eq!(one["usage"]["cpu"], "2");

        for name in ["gone", "not-ready", "no-address", "nosuch"] {
            let e = answer(&api, &scraper, &nodes(Some(name)), &ListParams::default())
                .await
                .unwrap_err();
            assert_eq!(e.code, 404, "{name}");
            assert_eq!(
                e.message,
                format!("nodemetrics.metrics.k8s.io \"{name}\" not found")
            );
            assert_eq!(e.to_status()["reason"], "NotFound");
        }
        let selected = ListParams {
            label_selector: Some(LabelSelector::parse("kubernetes.io/hostname=gone").unwrap()),
            ..Default::default()
        };
        let list = answer(&api, &scraper, &nodes(None), &selected)
            .await
            .unwrap();
        assert!(names(&list).is_empty());
    }

    #[tokio::test]
    async fn pod_metrics_list_the_pods_with_metrics_and_404_the_others() {
        let (api, _dir) = fake_agent::api().await;
        let (addr, _) = agent().await;
        fake_agent::node(&api, "n1", Some(addr), true).await;
        let gone = fake_agent::closed_port();
        fake_agent::node(&api, "gone", Some(gone.addr), true).await;
        fake_agent::pod(&api, "web-1", "n1", json!({"app": "web"})).await;
        fake_agent::pod(&api, "idle", "n1", json!({"app": "web"})).await;
        fake_agent::pod(&api, "web-2", "gone", json!({"app": "web"})).await;
        let scraper = fast();

        let list = answer(&api, &scraper, &pods(None), &ListParams::default())
            .await
            .unwrap();
        assert_eq!(list["kind"], "PodMetricsList");
        assert_eq!(names(&list), ["web-1"]);
        let web = &list["items"][0];
        assert_eq!(web["metadata"]["namespace"], "default");
        assert_eq!(web["metadata"]["labels"], json!({"app": "web"}));
        assert_eq!(web["window"], "1s");
        assert_eq!(
            web["containers"],
            json!([{"name": "app", "usage": {"cpu": "250m", "memory": "64Ki"}}])
        );

        let all = MetricsRequest::Pods {
            namespace: None,
            name: None,
        };
        let list = answer(&api, &scraper, &all, &ListParams::default())
            .await
            .unwrap();
        assert_eq!(names(&list), ["web-1"]);
        let other_ns = MetricsRequest::Pods {
            namespace: Some("kube-system".into()),
            name: None,
        };
        let list = answer(&api, &scraper, &other_ns, &ListParams::default())
            .await
            .unwrap();
        assert!(names(&list).is_empty());
        let selected = ListParams {
            label_selector: Some(LabelSelector::parse("app!=web").unwrap()),
            ..Default::default()
        };
        let list = answer(&api, &scraper, &pods(None), &selected)
            .await
            .unwrap();
        assert!(names(&list).is_empty());

        let one = answer(&api, &scraper, &pods(Some("web-1")), &ListParams::default())
            .await
            .unwrap();
        assert_eq!(one["kind"], "PodMetrics");
        assert_eq!(one["containers"][0]["usage"]["cpu"], "250m");
        for name in ["idle", "web-2", "nosuch"] {
            let e = answer(&api, &scraper, &pods(Some(name)), &ListParams::default())
                .await
                .unwrap_err();
            assert_eq!(
                (e.code, e.message.as_str()),
                (
                    404,
                    format!("podmetrics.metrics.k8s.io \"default/{name}\" not found").as_str()
                )
            );
        }
    }
}
