//! `nodes/proxy`: `GET /api/v1/nodes/{name}/proxy/{path}` is forwarded to the node's agent at
//! `http://{agent address}/{path}?{query}` and its answer (status, content type, body) is
//! streamed back, as kube-apiserver does for a kubelet (`kubectl get --raw
//! /api/v1/nodes/$NODE/proxy/metrics`).
//!
//! Only `GET` and the plain node-name form are served; kube-apiserver also takes the other
//! verbs and `{name}:{port}`, which nothing here needs yet.

use axum::http::Method;
use axum::response::Response;

use super::agent;
use super::api::Api;
use super::error::{ApiError, ApiResult};

/// A `nodes/proxy` request: the node and the path (with its leading `/`) on its agent.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ProxyTarget<'a> {
    /// The node's name.
    pub node: &'a str,
    /// The path on the agent, `/` when the request names none.
    pub path: String,
}

impl<'a> ProxyTarget<'a> {
    /// The proxy request a path names, if any: `/api/v1/nodes/{name}/proxy` followed by
    /// nothing, `/`, or `/{path...}`.
    pub fn from_path(path: &'a str) -> Option<ProxyTarget<'a>> {
        let rest = path.strip_prefix("/api/v1/nodes/")?;
        let (node, rest) = rest.split_once('/')?;
        if node.is_empty() {
            return None;
        }
        let tail = rest.strip_prefix("proxy")?;
        if !(tail.is_empty() || tail.starts_with('/')) {
            return None;
        }
        let path = if tail.is_empty() {
            "/".to_string()
        } else {
            tail.to_string()
        };
        Some(ProxyTarget { node, path })
    }
}

/// Answers a `nodes/proxy` request: 405 for anything but `GET`, 404 for an unknown node, 503
/// when the node has no agent address or its agent cannot be reached; otherwise the agent's
/// answer, streamed.
pub async fn proxy(
    api: &Api,
    method: &Method,
    target: &ProxyTarget<'_>,
    query: Option<&str>,
) -> ApiResult<Response> {
    if method != Method::GET {
        return Err(ApiError::method_not_allowed(&format!(
            "{method} nodes/proxy (only GET is proxied)"
        )));
    }
    let path = match query {
        Some(q) => format!("{}?{q}", target.path),
        None => target.path.clone(),
    };
    let resp = agent::get(api, target.node, "proxying", &path).await?;
    Ok(agent::streamed(resp))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::apiserver::fake_agent;

    #[test]
    fn proxy_paths_name_the_node_and_the_agent_path() {
        let cases: &[(&str, Option<(&str, &str)>)] = &[
            ("/api/v1/nodes/n1/proxy/healthz", Some(("n1", "/healthz"))),
            (
                "/api/v1/nodes/n1/proxy/metrics/resource",
                Some(("n1", "/metrics/resource")),
            ),
            ("/api/v1/nodes/n1/proxy", Some(("n1", "/"))),
            ("/api/v1/nodes/n1/proxy/", Some(("n1", "/"))),
            ("/api/v1/nodes/n1/proxyx", None),
            ("/api/v1/nodes/n1/status", None),
            ("/api/v1/nodes/n1", None),
            ("/api/v1/nodes//proxy/x", None),
            ("/api/v1/namespaces/default/pods/p/proxy/x", None),
        ];
        for (path, want) in cases {
            let got = ProxyTarget::from_path(path);
            assert_eq!(
                got.as_ref().map(|t| (t.node, t.path.as_str())),
                *want,
                "{path}"
            );
        }
    }

    async fn body(r: Response) -> (u16, String, String) {
        use http_body_util::BodyExt;
        let ct = r
            .headers()
            .get(http::header::CONTENT_TYPE)
            .and_then(|v| v.to_str().ok())
            .unwrap_or("")
            .to_string();
        let status = r.status().as_u16();
        let bytes = r.into_body().collect().await.unwrap().to_bytes();
        (status, ct, String::from_utf8_lossy(&bytes).into_owned())
    }

    #[tokio::test]
    async fn get_requests_reach_the_agent_with_their_path_and_query() {
        use axum::routing::get;
        let (api, _dir) = fake_agent::api().await;
        let agent = axum::Router::new()
            .route("/healthz", get(|| async { "ok" }))
            .route(
                "/metrics",
                get(|uri: http::Uri| async move {
                    (
                        [(http::header::CONTENT_TYPE, "text/plain; version=0.0.4")],
                        format!("query={}", uri.query().unwrap_or("")),
                    )
                }),
            )
            .route(
                "/broken",
                get(|| async { (http::StatusCode::INTERNAL_SERVER_ERROR, "broken") }),
            );
        let addr = fake_agent::serve(agent).await;
        fake_agent::node(&api, "n1", Some(addr), true).await;
        let gone = fake_agent::closed_port();
        fake_agent::node(&api, "gone", Some(gone.addr), true).await;
        fake_agent::node(&api, "no-address", None, true).await;
        let call = |path: &'static str, query: Option<&'static str>| {
            let api = api.clone();
            async move {
                let target = ProxyTarget::from_path(path).unwrap();
                proxy(&api, &Method::GET, &target, query).await
            }
        };

        let (status, _, text) =
            body(call("/api/v1/nodes/n1/proxy/healthz", None).await.unwrap()).await;
        assert_eq!((status, text.as_str()), (200, "ok"));
        let r = call("/api/v1/nodes/n1/proxy/metrics", Some("a=1&b=%2F"))
            .await
            .unwrap();
        assert_eq!(
            body(r).await,
            (
                200,
                "text/plain; version=0.0.4".into(),
                "query=a=1&b=%2F".into()
            )
        );
        let (status, _, text) =
            body(call("/api/v1/nodes/n1/proxy/broken", None).await.unwrap()).await;
        assert_eq!((status, text.as_str()), (500, "broken"));

        let e = call("/api/v1/nodes/nosuch/proxy/healthz", None)
            .await
            .unwrap_err();
        assert_eq!(
            (e.code, e.message.as_str()),
            (404, "nodes \"nosuch\" not found")
        );
        let e = call("/api/v1/nodes/no-address/proxy/healthz", None)
            .await
            .unwrap_err();
        assert_eq!((e.code, e.reason), (503, "ServiceUnavailable"));
        assert!(
            e.message
                .contains("node no-address does not publish an agent endpoint"),
            "{}",
            e.message
        );
        let e = call("/api/v1/nodes/gone/proxy/healthz", None)
            .await
            .unwrap_err();
        assert_eq!((e.code, e.reason), (503, "ServiceUnavailable"));
        assert!(
            e.message
                .starts_with("cannot reach the agent of node gone at 127.0.0.1:"),
            "{}",
            e.message
        );

        let target = ProxyTarget::from_path("/api/v1/nodes/n1/proxy/healthz").unwrap();
        let e = proxy(&api, &Method::POST, &target, None).await.unwrap_err();
        assert_eq!((e.code, e.reason), (405, "MethodNotAllowed"));
    }
}
