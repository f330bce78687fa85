//! The node agent's HTTP endpoint as the API server reaches it, like kube-apiserver reaches a
//! kubelet: `http://{node InternalIP}:{status.daemonEndpoints.kubeletEndpoint.Port}`. Used by
//! `pods/log` ([`logs`](super::logs)), `nodes/proxy` ([`node_proxy`](super::node_proxy)) and
//! the resource metrics API ([`resource_metrics`](super::resource_metrics)).

use std::time::Duration;

use axum::body::Body;
use hyper_util::client::legacy::Client;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::TokioExecutor;
use serde_json::Value;

use super::api::Api;
use super::error::{ApiError, ApiResult};
use super::resources;

/// How long connecting to an agent may take. A node whose address answers nothing (a
/// registered node without an agent) fails after this instead of the operating system's
/// minutes-long TCP timeout.
pub const CONNECT_TIMEOUT: Duration = Duration::from_secs(5);

/// An HTTP client for agents.
pub type AgentClient = Client<HttpConnector, Body>;

/// A client for agents, with [`CONNECT_TIMEOUT`].
pub fn client() -> AgentClient {
    let mut connector = HttpConnector::new();
    connector.set_connect_timeout(Some(CONNECT_TIMEOUT));
    connector.set_nodelay(true);
    Client::builder(TokioExecutor::new()).build(connector)
}

/// The node a pod is bound to, whose agent serves its logs and execs: 400 for a pod not
/// bound yet, in kube-apiserver's words.
pub fn pod_node(pod: &Value) -> ApiResult<&str> {
    pod["spec"]["nodeName"]
        .as_str()
        .filter(|n| !n.is_empty())
        .ok_or_else(|| {
            let name = pod["metadata"]["name"].as_str().unwrap_or("");
            ApiError::bad_request(format!("pod {name} does not have a host assigned"))
        })
}

/// The agent address of a node: its InternalIP (or first address) and kubelet endpoint port.
pub fn agent_address(node: &Value) -> Option<String> {
    let addresses = node["status"]["addresses"].as_array()?;
    let ip = addresses
        .iter()
        .find(|a| a["type"] == "InternalIP")
        .or_else(|| addresses.first())
        .and_then(|a| a["address"].as_str())?;
    let port = node["status"]["daemonEndpoints"]["kubeletEndpoint"]["Port"].as_i64()?;
    Some(if ip.contains(':') {
        format!("[{ip}]:{port}")
    } else {
        format!("{ip}:{port}")
    })
}

/// The agent address of Node `name`: 404 NotFound for an unknown node, 503
/// ServiceUnavailable for a node that publishes no address or port (`purpose` says what the
/// address was wanted for, e.g. `logs`).
async fn node_agent(api: &Api, name: &str, purpose: &str) -> ApiResult<String> {
    let nodes = resources::find("", "v1", "nodes").expect("nodes served");
    let node = api.get(nodes, None, name).await?;
    agent_address(&node).ok_or_else(|| {
        ApiError::unavailable(format!(
            "node {name} does not publish an agent endpoint for {purpose} (no address or kubelet port in its status)"
        ))
    })
}

/// Sends `GET http://{agent}{path_and_query}` to the agent of node `node` (`purpose` as for
/// `node_agent`) and returns its answer, whatever its status: 404 for an unknown node, 400
/// for a path that makes no URL, 503 when the node has no agent address or its agent cannot be
/// reached.
pub async fn get(
    api: &Api,
    node: &str,
    purpose: &str,
    path_and_query: &str,
) -> ApiResult<hyper::Response<hyper::body::Incoming>> {
    send(
        api,
        node,
        purpose,
        http::Method::GET,
        path_and_query,
        Body::empty(),
    )
    .await
}

/// Sends `method http://{agent}{path_and_query}` with `body` (which may stream) to the agent
/// of node `node`, as [`get`].
pub async fn send(
    api: &Api,
    node: &str,
    purpose: &str,
    method: http::Method,
    path_and_query: &str,
    body: Body,
) -> ApiResult<hyper::Response<hyper::body::Incoming>> {
    let addr = node_agent(api, node, purpose).await?;
    let url = format!("http://{addr}{path_and_query}");
    let uri: hyper::Uri = url
        .parse()
        .map_err(|e| ApiError::bad_request(format!("invalid path for the agent: {url}: {e}")))?;
    let req = hyper::Request::builder()
        .method(method)
        .uri(uri)
        .body(body)
        .map_err(|e| ApiError::internal(e.to_string()))?;
    client().request(req).await.map_err(|e| {
        ApiError::unavailable(format!(
            "cannot reach the agent of node {node} at {addr}: {}",
            error_chain(&e)
        ))
    })
}

/// An upstream's answer (an agent's or a pod's) as the API server's response: its status, its
/// headers less the hop-by-hop ones, and its body, streamed.
pub fn streamed(resp: hyper::Response<hyper::body::Incoming>) -> axum::response::Response {
    let (parts, body) = resp.into_parts();
    let mut r = axum::response::Response::new(Body::new(body));
    *r.status_mut() = parts.status;
    for (name, value) in &parts.headers {
        if !is_hop_by_hop(name) {
            r.headers_mut().append(name, value.clone());
        }
    }
    r
}

/// Whether a header is hop-by-hop (RFC 9110 §7.6.1): a proxy handles those itself and must not
/// copy them from the agent's answer.
pub fn is_hop_by_hop(name: &http::HeaderName) -> bool {
    matches!(
        name.as_str(),
        "connection"
            | "keep-alive"
            | "proxy-authenticate"
            | "proxy-authorization"
            | "te"
            | "trailer"
            | "transfer-encoding"
            | "upgrade"
    )
}

/// An error with its causes, `outer: inner: ...` (hyper's client error alone says only
/// "client error (Connect)").
pub fn error_chain(e: &dyn std::error::Error) -> String {
    let mut out = e.to_string();
    let mut source = e.source();
    while let Some(s) = source {
        out.push_str(": ");
        out.push_str(&s.to_string());
        source = s.source();
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn the_agent_address_comes_from_the_internal_ip_and_kubelet_port() {
        let node = json!({"status": {"addresses": [{"type": "Hostname", "address": "n1"}, {"type": "InternalIP", "address": "127.0.0.1"}],
            "daemonEndpoints": {"kubeletEndpoint": {"Port": 10250}}}});
        assert_eq!(agent_address(&node).unwrap(), "127.0.0.1:10250");
        let v6 = json!({"status": {"addresses": [{"type": "InternalIP", "address": "::1"}],
            "daemonEndpoints": {"kubeletEndpoint": {"Port": 10250}}}});
        assert_eq!(agent_address(&v6).unwrap(), "[::1]:10250");
        assert_eq!(agent_address(&json!({"status": {}})), None);
        let no_port =
            json!({"status": {"addresses": [{"type": "InternalIP", "address": "10.0.0.1"}]}});
        assert_eq!(agent_address(&no_port), None);
    }

    #[test]
    fn hop_by_hop_headers_are_recognised() {
        assert!(is_hop_by_hop(&http::header::TRANSFER_ENCODING));
        assert!(is_hop_by_hop(&http::header::CONNECTION));
        assert!(!is_hop_by_hop(&http::header::CONTENT_TYPE));
    }

    #[test]
    fn error_chains_name_every_cause() {
        #[derive(Debug, thiserror::Error)]
        #[error("client error")]
        struct Outer(#[source] std::io::Error);
        let e = Outer(std::io::Error::new(
            std::io::ErrorKind::ConnectionRefused,
            "connection refused",
        ));
        assert_eq!(error_chain(&e), "client error: connection refused");
    }
}
