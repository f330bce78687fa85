//! `pods/log`: like kube-apiserver, the API server proxies a pod's log request to the agent
//! of the node the pod runs on, at `http://{node InternalIP}:{kubeletEndpoint port}/containerLogs/
//! {namespace}/{pod}/{container}`, passing the query (`follow`, `previous`, `tailLines`,
//! `timestamps`, `sinceSeconds`, `sinceTime`, `limitBytes`) through and streaming the answer back.

use axum::body::Body;
use axum::response::Response;
use http_body_util::BodyExt;
use serde_json::Value;

use super::agent;
use super::api::Api;
use super::error::{ApiError, ApiResult};

/// Which container of a pod a log, exec or attach request means: the named one (of any kind,
/// an ephemeral one included, as `kubectl debug` attaches to it), or the only app container.
pub fn pick_container(pod: &Value, requested: Option<&str>) -> ApiResult<String> {
    let name = pod["metadata"]["name"].as_str().unwrap_or("");
    let names: Vec<&str> = ["initContainers", "containers", "ephemeralContainers"]
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
    let node_name = agent::pod_node(pod)?;
    let resp = agent::get(
        api,
        node_name,
        "logs",
        &format!("/containerLogs/{ns}/{name}/{container}?{query}"),
    )
    .await?;
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
        let debugged = json!({"metadata": {"name": "p"}, "spec": {"containers": [{"name": "a"}],
            "ephemeralContainers": [{"name": "debugger"}]}});
        assert_eq!(
            pick_container(&debugged, Some("debugger")).unwrap(),
            "debugger"
        );
        // Still the only app container when none is named.
        assert_eq!(pick_container(&debugged, None).unwrap(), "a");
        assert_eq!(pick_container(&two, Some("z")).unwrap_err().code, 400);
    }
}
