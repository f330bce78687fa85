//! Unit-test support for the parts of the API server that talk to agents (`nodes/proxy`,
//! `metrics.k8s.io`): an API over a fresh store, Nodes pointing at fake agents, and fake agents
//! served by axum on `127.0.0.1:0`. The e2e suite uses the real agent.

use std::net::SocketAddr;
use std::sync::Arc;

use axum::Router;
use serde_json::{Value, json};

use super::api::{Api, ApiConfig, WriteOptions};
use super::resources;
use crate::store::{RedbStore, RedbStoreConfig};

/// An API over a fresh store with the `default` namespace; the directory must outlive it.
pub async fn api() -> (Api, tempfile::TempDir) {
    let dir = tempfile::tempdir().expect("tempdir");
    let store = RedbStore::open(RedbStoreConfig::new(dir.path().join("s.redb"))).expect("store");
    let api = Api::new(Arc::new(store), ApiConfig::default());
    let ns = json!({"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": "default"}});
    create(&api, ns).await;
    (api, dir)
}

/// Merges `status` into the status of pod `name` in `default`.
pub async fn patch_pod_status(api: &Api, name: &str, status: Value) {
    let pods = resources::find("", "v1", "pods").expect("pods served");
    let body = json!({ "status": status }).to_string();
    api.patch(
        pods,
        Some("default"),
        name,
        super::patch::PatchType::Merge,
        body.as_bytes(),
        Some(resources::Subresource::Status),
        &WriteOptions::default(),
    )
    .await
    .expect("status patch");
}

/// Creates an object of a core kind.
pub async fn create(api: &Api, obj: Value) -> Value {
    let kind = obj["kind"].as_str().expect("kind");
    let res = resources::find_kind("v1", kind).expect("core kind");
    let ns = res.namespaced.then(|| {
        obj["metadata"]["namespace"]
            .as_str()
            .unwrap_or("default")
            .to_string()
    });
    api.create(res, ns.as_deref(), obj, &WriteOptions::default())
        .await
        .expect("create")
        .0
}

/// Creates a Node whose agent is at `agent` (none: no address in its status), Ready or not.
pub async fn node(api: &Api, name: &str, agent: Option<SocketAddr>, ready: bool) {
    let mut status = json!({
        "conditions": [{"type": "Ready", "status": if ready { "True" } else { "False" }}],
    });
    if let Some(a) = agent {
        status["addresses"] = json!([{"type": "InternalIP", "address": a.ip().to_string()}]);
        status["daemonEndpoints"] = json!({"kubeletEndpoint": {"Port": a.port()}});
    }
    let node = json!({"apiVersion": "v1", "kind": "Node",
        "metadata": {"name": name, "labels": {"kubernetes.io/hostname": name}},
        "status": status});
    create(api, node).await;
}

/// Creates a pod of one container `app` bound to `node`.
pub async fn pod(api: &Api, name: &str, node: &str, labels: Value) {
    let pod = json!({"apiVersion": "v1", "kind": "Pod",
        "metadata": {"name": name, "namespace": "default", "labels": labels},
        "spec": {"nodeName": node, "containers": [{"name": "app", "image": "i"}]}});
    create(api, pod).await;
}

/// Serves `router` on `127.0.0.1:0` until the test's runtime ends; returns its address.
pub async fn serve(router: Router) -> SocketAddr {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind");
    let addr = listener.local_addr().expect("addr");
    tokio::spawn(async move { axum::serve(listener, router).await });
    addr
}

/// A loopback port nothing listens on, for as long as this value lives.
pub struct ClosedPort {
    /// The address; connections to it are refused.
    pub addr: SocketAddr,
    /// Holds the port bound without listening. A port bound and released at once could be
    /// handed to another test's listener (the tests run in parallel), and the "unreachable"
    /// node would then answer with that test's agent.
    _held: tokio::net::TcpSocket,
}

/// A [`ClosedPort`]; keep it alive while the address is used.
pub fn closed_port() -> ClosedPort {
    let socket = tokio::net::TcpSocket::new_v4().expect("socket");
    socket
        .bind(SocketAddr::from(([127, 0, 0, 1], 0)))
        .expect("bind");
    let addr = socket.local_addr().expect("addr");
    ClosedPort {
        addr,
        _held: socket,
    }
}
