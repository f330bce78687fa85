//! The scheduler inside a real control plane (store, API, controllers) started in-process on a
//! loopback port: nodes and pods are written through the same `Api` the HTTP handlers use, and
//! the tests watch where pods land, and what a pod that fits nowhere is told.

use std::sync::Arc;
use std::time::Duration;

use flotilla_control::apiserver::api::{Api, ApiConfig, ListParams, WriteOptions};
use flotilla_control::apiserver::resources::{self, ResourceInfo};
use flotilla_control::server::{ServerConfig, serve_with_store};
use flotilla_control::store::{RedbStore, RedbStoreConfig};
use serde_json::{Value, json};
use tokio_util::sync::CancellationToken;

/// Every wait gives up after this long.
const TIMEOUT: Duration = Duration::from_secs(20);

struct Cluster {
    api: Api,
    shutdown: CancellationToken,
    task: tokio::task::JoinHandle<()>,
    store: RedbStore,
    _dir: tempfile::TempDir,
}

impl Cluster {
    async fn start() -> Cluster {
        let dir = tempfile::tempdir().unwrap();
        let store = RedbStore::open(RedbStoreConfig::new(dir.path().join("store.redb"))).unwrap();
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let shutdown = CancellationToken::new();
        let config = ServerConfig::new(dir.path());
        let task = tokio::spawn({
            let (store, shutdown) = (Arc::new(store.clone()), shutdown.clone());
            async move {
                serve_with_store(listener, config, store, shutdown)
                    .await
                    .unwrap();
            }
        });
        let api = Api::new(Arc::new(store.clone()), ApiConfig::default());
        // The default namespace exists once the server has bootstrapped.
        wait_for("bootstrap", || async {
            api.get(res("namespaces"), None, "default").await.ok()
        })
        .await;
        Cluster {
            api,
            shutdown,
            task,
            store,
            _dir: dir,
        }
    }

    async fn stop(self) {
        self.shutdown.cancel();
        tokio::time::timeout(TIMEOUT, self.task)
            .await
            .expect("server stops")
            .unwrap();
        self.store.close();
    }

    async fn node(
        &self,
        name: &str,
        labels: Value,
        taints: Value,
        cpu: &str,
        memory: &str,
        ready: &str,
    ) {
        let obj = json!({
            "apiVersion": "v1", "kind": "Node",
            "metadata": {"name": name, "labels": labels},
            "spec": {"taints": taints},
            "status": {
                "capacity": {"cpu": cpu, "memory": memory, "pods": "110"},
                "allocatable": {"cpu": cpu, "memory": memory, "pods": "110"},
                "conditions": [{"type": "Ready", "status": ready, "reason": "KubeletReady"}],
            },
        });
        self.api
            .create(res("nodes"), None, obj, &WriteOptions::default())
            .await
            .unwrap();
    }

    async fn pod(&self, name: &str, spec: Value) {
        self.pod_with_meta(name, json!({}), spec).await;
    }

    async fn pod_with_meta(&self, name: &str, meta: Value, spec: Value) {
        let mut spec = spec;
        if spec.get("containers").is_none() {
            spec["containers"] = json!([{"name": "app", "image": "hello:v1", "resources": {"requests": {"cpu": "100m", "memory": "128Mi"}}}]);
        }
        let mut metadata = json!({"name": name, "namespace": "default"});
        metadata
            .as_object_mut()
            .unwrap()
            .extend(meta.as_object().unwrap().clone());
        let obj = json!({"apiVersion": "v1", "kind": "Pod", "metadata": metadata, "spec": spec});
        self.api
            .create(res("pods"), Some("default"), obj, &WriteOptions::default())
            .await
            .unwrap();
    }

    async fn get_pod(&self, name: &str) -> Value {
        self.api
            .get(res("pods"), Some("default"), name)
            .await
            .unwrap()
    }

    /// Waits until the pod is bound; returns its node.
    async fn bound_node(&self, name: &str) -> String {
        wait_for(&format!("pod {name} bound"), || async {
            self.get_pod(name).await["spec"]["nodeName"]
                .as_str()
                .map(String::from)
        })
        .await
    }

    /// Waits until the pod has `PodScheduled=False`; returns the condition.
    async fn unschedulable_condition(&self, name: &str) -> Value {
        wait_for(&format!("pod {name} marked unschedulable"), || async {
            let pod = self.get_pod(name).await;
            pod["status"]["conditions"]
                .as_array()
                .and_then(|cs| {
                    cs.iter()
                        .find(|c| c["type"] == "PodScheduled" && c["status"] == "False")
                })
                .cloned()
        })
        .await
    }

    /// Waits for an event about the pod with this reason.
    async fn event(&self, pod: &str, reason: &str) -> Value {
        wait_for(&format!("{reason} event for {pod}"), || async {
            let (items, _, _) = self
                .api
                .list(res("events"), Some("default"), &ListParams::default())
                .await
                .unwrap();
            items
                .into_iter()
                .find(|e| e["involvedObject"]["name"] == pod && e["reason"] == reason)
        })
        .await
    }
}

fn res(plural: &str) -> &'static ResourceInfo {
    let group = if plural == "runtimeclasses" {
        "node.k8s.io"
    } else {
        ""
    };
    resources::find(group, "v1", plural).unwrap()
}

async fn wait_for<T, F, Fut>(what: &str, mut f: F) -> T
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Option<T>>,
{
    let deadline = tokio::time::Instant::now() + TIMEOUT;
    loop {
        if let Some(v) = f().await {
            return v;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "timed out waiting for {what}"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

const READY: &str = "True";

#[tokio::test]
async fn pods_go_to_fitting_nodes_and_one_too_big_waits_for_a_node_that_fits() {
    let c = Cluster::start().await;
    c.node("n1", json!({}), json!([]), "2", "2Gi", READY).await;
    c.node("n2", json!({}), json!([]), "2", "2Gi", READY).await;
    c.node("lost", json!({}), json!([]), "8", "16Gi", "Unknown")
        .await;
    c.pod("small", json!({})).await;
    let node = c.bound_node("small").await;
    assert!(node == "n1" || node == "n2", "small went to {node}");
    let pod = c.get_pod("small").await;
    let scheduled = pod["status"]["conditions"]
        .as_array()
        .unwrap()
        .iter()
        .find(|c| c["type"] == "PodScheduled")
        .unwrap();
    assert_eq!(scheduled["status"], "True");
    let ev = c.event("small", "Scheduled").await;
    assert_eq!(ev["type"], "Normal");
    assert_eq!(
        ev["message"],
        format!("Successfully assigned default/small to {node}")
    );

    c.pod("huge", json!({"containers": [{"name": "app", "image": "hello:v1", "resources": {"requests": {"memory": "4Gi"}}}]}))
        .await;
    let want = "0/3 nodes are available: 1 node(s) had untolerated taint {node.kubernetes.io/unreachable: }, 2 Insufficient memory. preemption: 0/3 nodes are available: 1 Preemption is not helpful for scheduling, 2 No preemption victims found for incoming pod..";
    let cond = c.unschedulable_condition("huge").await;
    assert_eq!(cond["reason"], "Unschedulable");
    assert_eq!(cond["message"], want);
    let ev = c.event("huge", "FailedScheduling").await;
    assert_eq!(ev["type"], "Warning");
    assert_eq!(ev["message"], want);
    assert_eq!(ev["source"]["component"], "default-scheduler");
    assert_eq!(ev["reportingComponent"], "default-scheduler");
    assert_eq!(ev["involvedObject"]["kind"], "Pod");
    assert_eq!(
        ev["involvedObject"]["uid"],
        c.get_pod("huge").await["metadata"]["uid"]
    );
    assert!(ev["count"].as_i64().unwrap() >= 1);
    assert!(c.get_pod("huge").await["spec"]["nodeName"].is_null());

    // A node big enough appears: the pending pod is retried and lands there.
    c.node("big", json!({}), json!([]), "4", "8Gi", READY).await;
    assert_eq!(c.bound_node("huge").await, "big");
    c.stop().await;
}

#[tokio::test]
async fn node_selectors_affinity_and_taints_place_pods_as_asked() {
    let c = Cluster::start().await;
    c.node("a", json!({"zone": "a"}), json!([]), "2", "2Gi", READY)
        .await;
    c.node("b", json!({"zone": "b"}), json!([]), "2", "2Gi", READY)
        .await;
    c.node(
        "gpu",
        json!({"gpu": "yes"}),
        json!([{"key": "dedicated", "value": "gpu", "effect": "NoSchedule"}]),
        "8",
        "8Gi",
        READY,
    )
    .await;
    c.pod("to-b", json!({"nodeSelector": {"zone": "b"}})).await;
    c.pod(
        "to-a",
        json!({"affinity": {"nodeAffinity": {"requiredDuringSchedulingIgnoredDuringExecution": {"nodeSelectorTerms": [
            {"matchExpressions": [{"key": "zone", "operator": "In", "values": ["a", "c"]}]}]}}}}),
    )
    .await;
    c.pod(
        "prefers-b",
        json!({"affinity": {"nodeAffinity": {"preferredDuringSchedulingIgnoredDuringExecution": [
            {"weight": 50, "preference": {"matchExpressions": [{"key": "zone", "operator": "In", "values": ["b"]}]}}]}}}),
    )
    .await;
    c.pod(
        "tolerates-gpu",
        json!({"nodeSelector": {"gpu": "yes"}, "tolerations": [{"key": "dedicated", "operator": "Equal", "value": "gpu", "effect": "NoSchedule"}]}),
    )
    .await;
    c.pod("wants-gpu", json!({"nodeSelector": {"gpu": "yes"}}))
        .await;
    assert_eq!(c.bound_node("to-b").await, "b");
    assert_eq!(c.bound_node("to-a").await, "a");
    assert_eq!(c.bound_node("prefers-b").await, "b");
    assert_eq!(c.bound_node("tolerates-gpu").await, "gpu");
    // The untainted nodes do not match, the matching one repels the pod.
    let cond = c.unschedulable_condition("wants-gpu").await;
    assert_eq!(
        cond["message"],
        "0/3 nodes are available: 1 node(s) had untolerated taint {dedicated: gpu}, 2 node(s) didn't match Pod's node affinity/selector. preemption: 0/3 nodes are available: 3 Preemption is not helpful for scheduling.."
    );
    c.stop().await;
}

#[tokio::test]
async fn an_anti_affinity_namespace_selector_follows_the_namespaces_labels() {
    let c = Cluster::start().await;
    c.node("a", json!({"zone": "a"}), json!([]), "2", "2Gi", READY)
        .await;
    c.node("b", json!({"zone": "b"}), json!([]), "2", "2Gi", READY)
        .await;
    for (ns, team) in [("team-a", "a"), ("team-b", "b")] {
        let obj = json!({"apiVersion": "v1", "kind": "Namespace",
            "metadata": {"name": ns, "labels": {"team": team}}});
        c.api
            .create(res("namespaces"), None, obj, &WriteOptions::default())
            .await
            .unwrap();
    }
    // A web pod of team a, in zone a.
    let web = json!({"apiVersion": "v1", "kind": "Pod",
        "metadata": {"name": "web", "namespace": "team-a", "labels": {"app": "web"}},
        "spec": {"nodeSelector": {"zone": "a"}, "containers": [{"name": "app", "image": "hello:v1"}]}});
    c.api
        .create(res("pods"), Some("team-a"), web, &WriteOptions::default())
        .await
        .unwrap();
    let away_from_team = |team: &str| {
        json!({"podAntiAffinity": {"requiredDuringSchedulingIgnoredDuringExecution": [{
            "topologyKey": "zone", "labelSelector": {"matchLabels": {"app": "web"}},
            "namespaceSelector": {"matchLabels": {"team": team}}}]}})
    };
    // Pods in `default` that must not share a zone with web pods of team a's namespaces.
    c.pod("apart", json!({"affinity": away_from_team("a")}))
        .await;
    assert_eq!(c.bound_node("apart").await, "b");
    c.pod(
        "blocked",
        json!({"nodeSelector": {"zone": "a"}, "affinity": away_from_team("a")}),
    )
    .await;
    let cond = c.unschedulable_condition("blocked").await;
    assert!(
        cond["message"]
            .as_str()
            .unwrap()
            .contains("didn't match pod anti-affinity rules"),
        "{cond}"
    );
    // A selector of another team's namespaces, and one with no selector (its own namespace,
    // `default`), do not see the web pod.
    c.pod(
        "other-team",
        json!({"nodeSelector": {"zone": "a"}, "affinity": away_from_team("b")}),
    )
    .await;
    assert_eq!(c.bound_node("other-team").await, "a");
    // Once team-a's namespace is relabelled, the blocked pod is retried and placed.
    let patch = json!({"metadata": {"labels": {"team": "c"}}}).to_string();
    c.api
        .patch(
            res("namespaces"),
            None,
            "team-a",
            flotilla_control::apiserver::patch::PatchType::Merge,
            patch.as_bytes(),
            None,
            &WriteOptions::default(),
        )
        .await
        .unwrap();
    assert_eq!(c.bound_node("blocked").await, "a");
    c.stop().await;
}

#[tokio::test]
async fn runtime_handlers_and_scheduler_names_are_respected() {
    let c = Cluster::start().await;
    c.node(
        "oci",
        json!({"flotilla.dev/runtime-handlers": "crun.runc"}),
        json!([]),
        "8",
        "8Gi",
        READY,
    )
    .await;
    c.node(
        "wasm",
        json!({"flotilla.dev/runtime-handlers": "wasmtime"}),
        json!([]),
        "2",
        "2Gi",
        READY,
    )
    .await;
    // `wasmtime` is created at bootstrap; the pod must land where that handler exists.
    c.pod("wasm-pod", json!({"runtimeClassName": "wasmtime"}))
        .await;
    assert_eq!(c.bound_node("wasm-pod").await, "wasm");
    c.pod("unknown-class", json!({"runtimeClassName": "gvisor"}))
        .await;
    let cond = c.unschedulable_condition("unknown-class").await;
    assert_eq!(
        cond["message"],
        "0/2 nodes are available: runtimeclass.node.k8s.io \"gvisor\" not found. preemption: 0/2 nodes are available: 2 Preemption is not helpful for scheduling.."
    );
    // A RuntimeClass whose handler no node has.
    let rc = json!({"apiVersion": "node.k8s.io/v1", "kind": "RuntimeClass", "metadata": {"name": "kata"}, "handler": "kata"});
    c.api
        .create(res("runtimeclasses"), None, rc, &WriteOptions::default())
        .await
        .unwrap();
    c.pod("kata-pod", json!({"runtimeClassName": "kata"})).await;
    // The scheduler may try the pod before its informer has the new RuntimeClass (then it
    // says the class is not found); the class's arrival retries the pod.
    let want = "0/2 nodes are available: 2 node(s) didn't have the runtime handler \"kata\". preemption: 0/2 nodes are available: 2 Preemption is not helpful for scheduling..";
    wait_for(&format!("kata-pod's condition to say {want:?}"), || async {
        let cond = c.unschedulable_condition("kata-pod").await;
        (cond["message"] == want).then_some(())
    })
    .await;

    c.pod("elsewhere", json!({"schedulerName": "my-scheduler"}))
        .await;
    c.pod("after", json!({})).await;
    c.bound_node("after").await;
    // Decisions are made in order: by the time `after` is bound, `elsewhere` was seen and
    // skipped. Give it a little longer anyway.
    tokio::time::sleep(Duration::from_millis(300)).await;
    let pod = c.get_pod("elsewhere").await;
    assert!(
        pod["spec"]["nodeName"].is_null(),
        "a pod for another scheduler was bound"
    );
    assert!(
        pod["status"]["conditions"].is_null(),
        "a pod for another scheduler got a condition: {pod}"
    );
    c.stop().await;
}

#[tokio::test]
async fn replicas_of_one_owner_spread_over_nodes() {
    let c = Cluster::start().await;
    // Least-allocated alone would stack everything on the big node.
    c.node("big", json!({}), json!([]), "64", "64Gi", READY)
        .await;
    c.node("s1", json!({}), json!([]), "4", "4Gi", READY).await;
    c.node("s2", json!({}), json!([]), "4", "4Gi", READY).await;
    // The owner must exist: the garbage collector deletes dependents of a missing owner as
    // soon as it sees them. A ConfigMap, so that no controller manages the pods.
    let owner = c
        .api
        .create(
            res("configmaps"),
            Some("default"),
            json!({"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "web-abc", "namespace": "default"}}),
            &WriteOptions::default(),
        )
        .await
        .unwrap();
    let owner = json!({"ownerReferences": [{"apiVersion": "v1", "kind": "ConfigMap", "name": "web-abc", "uid": owner.0["metadata"]["uid"], "controller": true}]});
    for i in 0..6 {
        c.pod_with_meta(&format!("web-{i}"), owner.clone(), json!({}))
            .await;
    }
    for i in 0..6 {
        c.pod(&format!("solo-{i}"), json!({})).await;
    }
    let mut per_node = std::collections::BTreeMap::new();
    for i in 0..6 {
        *per_node
            .entry(c.bound_node(&format!("web-{i}")).await)
            .or_insert(0) += 1;
    }
    assert_eq!(per_node.len(), 3, "replicas on {per_node:?}");
    assert!(
        per_node.values().all(|n| *n == 2),
        "replicas on {per_node:?}"
    );
    for i in 0..6 {
        assert_eq!(c.bound_node(&format!("solo-{i}")).await, "big");
    }
    c.stop().await;
}
