//! `pods/log`: like kube-apiserver, the API server proxies a pod's log request to the agent
//! of the node the pod runs on, at `http://{node InternalIP}:{kubeletEndpoint port}/containerLogs/
//! {namespace}/{pod}/{container}`, passing the query (`follow`, `previous`, `tailLines`,
//! `timestamps`, `sinceSeconds`, `limitBytes`) through and streaming the answer back.

use axum::body::Body;
use axum::response::Response;
use http_body_util::BodyExt;
use hyper_util::client::legacy::Client;
use hyper_util::rt::TokioExecutor;
use serde_json::Value;

use super::api::Api;
use super::error::{ApiError, ApiResult};
use super::resources;

/// Which container of a pod a log request means: the named one, or the only one.
pub fn pick_container(pod: &Value, requested: Option<&str>) -> ApiResult<String> {
    let name = pod["metadata"]["name"].as_str().unwrap_or("");
    let names: Vec<&str> = ["initContainers", "containers"]
        .iter()
        .filter_map(|l| pod["spec"][l].as_array())
        .flatten()
        .filter_map(|c| c["name"].as_str())
        .collect();
    match requested {
        Some(c) if names.contains(&c) => Ok(c.to_string()),
        Some(c) => Err(ApiError::bad_request(format!(
            "container {c} is not valid for pod {name}"
        ))),
        None => {
            let main: Vec<&str> = pod["spec"]["containers"]
                .as_array()
                .into_iter()
                .flatten()
                .filter_map(|c| c["name"].as_str())
                .collect();
            match main.as_slice() {
                [only] => Ok(only.to_string()),
                _ => Err(ApiError::bad_request(format!(
                    "a container name must be specified for pod {name}, choose one of: [{}]",
                    main.join(" ")
                ))),
            }
        }
    }
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

/// Proxies a log request for `pod` to its node's agent.
pub async fn proxy(api: &Api, pod: &Value, query: &str) -> ApiResult<Response> {
    let name = pod["metadata"]["name"].as_str().unwrap_or("");
    let ns = pod["metadata"]["namespace"].as_str().unwrap_or("default");
    let q: std::collections::HashMap<String, String> = form_urlencoded::parse(query.as_bytes())
        .into_owned()
        .collect();
    let container = pick_container(
        pod,
        q.get("container")
            .map(String::as_str)
            .filter(|c| !c.is_empty()),
    )?;
    let node_name = pod["spec"]["nodeName"]
        .as_str()
        .filter(|n| !n.is_empty())
        .ok_or_else(|| {
            ApiError::bad_request(format!("pod {name} does not have a host assigned"))
        })?;
    let nodes = resources::find("", "v1", "nodes").expect("nodes served");
    let node = api.get(nodes, None, node_name).await?;
    let addr = agent_address(&node).ok_or_else(|| {
        ApiError::unavailable(format!(
            "node {node_name} does not publish an agent endpoint for logs"
        ))
    })?;
    let url = format!("http://{addr}/containerLogs/{ns}/{name}/{container}?{query}");
    let uri: hyper::Uri = url
        .parse()
        .map_err(|e| ApiError::internal(format!("bad agent url {url}: {e}")))?;
    let client: Client<_, Body> = Client::builder(TokioExecutor::new()).build_http();
    let req = hyper::Request::get(uri)
        .body(Body::empty())
        .map_err(|e| ApiError::internal(e.to_string()))?;
    let resp = client.request(req).await.map_err(|e| {
        ApiError::unavailable(format!(
            "cannot reach the agent of node {node_name} at {addr}: {e}"
        ))
    })?;
    let status = resp.status();
    let (parts, body) = resp.into_parts();
    if !status.is_success() {
        // The agent answers errors as Kubernetes Status objects; pass them on as they are.
        let bytes = body
            .collect()
            .await
            .map(|b| b.to_bytes())
            .unwrap_or_default();
        let mut r = Response::new(Body::from(bytes));
        *r.status_mut() = status;
        *r.headers_mut() = parts.headers;
        return Ok(r);
    }
    let mut r = Response::new(Body::new(body));
    *r.headers_mut() = parts.headers;
    Ok(r)
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn the_only_container_is_picked_and_ambiguity_is_an_error() {
        let one = json!({"metadata": {"name": "p"}, "spec": {"containers": [{"name": "a"}]}});
        assert_eq!(pick_container(&one, None).unwrap(), "a");
        let two = json!({"metadata": {"name": "p"}, "spec": {"containers": [{"name": "a"}, {"name": "b"}], "initContainers": [{"name": "i"}]}});
        let e = pick_container(&two, None).unwrap_err();
        assert_eq!(
            e.message,
            "a container name must be specified for pod p, choose one of: [a b]"
        );
        assert_eq!(pick_container(&two, Some("i")).unwrap(), "i");
        assert_eq!(pick_container(&two, Some("z")).unwrap_err().code, 400);
    }

    #[test]
    fn the_agent_address_comes_from_the_internal_ip_and_kubelet_port() {
        let node = json!({"status": {"addresses": [{"type": "Hostname", "address": "n1"}, {"type": "InternalIP", "address": "127.0.0.1"}],
            "daemonEndpoints": {"kubeletEndpoint": {"Port": 10250}}}});
        assert_eq!(agent_address(&node).unwrap(), "127.0.0.1:10250");
        assert_eq!(agent_address(&json!({"status": {}})), None);
    }
}
