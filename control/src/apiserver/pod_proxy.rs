//! `pods/proxy` and `services/proxy`: a request to
//! `/api/v1/namespaces/{ns}/pods/{name}[:port]/proxy/{path}` or
//! `/api/v1/namespaces/{ns}/services/{name}[:port]/proxy/{path}` is forwarded, with its method,
//! query, headers and body, to `http://{pod IP}:{port}/{path}`, and the pod's answer is streamed
//! back, as kube-apiserver does (`kubectl proxy`, `kubectl get --raw`, dashboards and scrapers
//! that reach pods through the API).
//!
//! A pod's port is a number or the name of one of its container ports; without one, its first
//! container port (80 if it declares none). A Service's port is its number or name (the only
//! port when there is one); the request goes to a ready endpoint of it, picked at random.
//! Like kube-apiserver, the API server connects to the pod's address itself, so it must be
//! reachable from the control plane (as pod addresses are on a single machine, `flotilla up`).
//! `https:` targets and connection upgrades are not served.

use axum::body::Body;
use axum::http::{HeaderMap, Method, header};
use axum::response::Response;
use rand::seq::IndexedRandom;
use serde_json::Value;

use super::agent;
use super::api::Api;
use super::error::{ApiError, ApiResult};
use super::resources;

/// Which kind of object a proxy request names.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ProxyKind {
    /// `pods/proxy`.
    Pod,
    /// `services/proxy`.
    Service,
}

/// A `pods/proxy` or `services/proxy` request, parsed from its path.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ProxyTarget<'a> {
    /// Pod or Service.
    pub kind: ProxyKind,
    /// The object's namespace.
    pub namespace: &'a str,
    /// The object's name.
    pub name: &'a str,
    /// `http` or `https` when the request names a scheme (`https:web:443`).
    pub scheme: Option<&'a str>,
    /// The port, as named in the request (a number or a port name).
    pub port: Option<&'a str>,
    /// The path on the pod, with its leading `/`.
    pub path: String,
}

impl<'a> ProxyTarget<'a> {
    /// The proxy request a path names, if any.
    pub fn from_path(path: &'a str) -> Option<ProxyTarget<'a>> {
        let rest = path.strip_prefix("/api/v1/namespaces/")?;
        let (namespace, rest) = rest.split_once('/')?;
        let (kind, rest) = if let Some(r) = rest.strip_prefix("pods/") {
            (ProxyKind::Pod, r)
        } else {
            (ProxyKind::Service, rest.strip_prefix("services/")?)
        };
        let (id, rest) = rest.split_once('/')?;
        let tail = rest.strip_prefix("proxy")?;
        if !(tail.is_empty() || tail.starts_with('/')) || namespace.is_empty() {
            return None;
        }
        // `name`, `name:port` or `scheme:name:port` (also `scheme:name:`).
        let parts: Vec<&str> = id.split(':').collect();
        let (scheme, name, port) = match parts.as_slice() {
            [name] => (None, *name, None),
            [name, port] => (None, *name, Some(*port)),
            [scheme, name, port] => (Some(*scheme), *name, Some(*port)),
            _ => return None,
        };
        if name.is_empty() {
            return None;
        }
        Some(ProxyTarget {
            kind,
            namespace,
            name,
            scheme: scheme.filter(|s| !s.is_empty()),
            port: port.filter(|p| !p.is_empty()),
            path: if tail.is_empty() {
                "/".to_string()
            } else {
                tail.to_string()
            },
        })
    }
}

/// Answers a proxy request: 404 for an unknown pod or Service, 400 for a port it does not
/// have or an `https:` target, 503 when no pod address or ready endpoint is there or the pod
/// cannot be reached; otherwise the pod's answer, streamed.
pub async fn proxy(
    api: &Api,
    method: &Method,
    target: &ProxyTarget<'_>,
    query: Option<&str>,
    headers: &HeaderMap,
    body: Body,
) -> ApiResult<Response> {
    if target.scheme.is_some_and(|s| s != "http") {
        return Err(ApiError::bad_request(format!(
            "{}: only http is proxied to pods",
            target.scheme.unwrap_or_default()
        )));
    }
    if headers.contains_key(header::UPGRADE) {
        return Err(ApiError::bad_request(
            "connection upgrades are not proxied to pods",
        ));
    }
    let (ip, port) = match target.kind {
        ProxyKind::Pod => pod_address(api, target).await?,
        ProxyKind::Service => service_endpoint(api, target).await?,
    };
    let url = match query {
        Some(q) => format!("http://{ip}:{port}{}?{q}", target.path),
        None => format!("http://{ip}:{port}{}", target.path),
    };
    let uri: hyper::Uri = url
        .parse()
        .map_err(|e| ApiError::bad_request(format!("invalid path for the pod: {url}: {e}")))?;
    let mut req = hyper::Request::builder().method(method.clone()).uri(uri);
    for (name, value) in headers {
        if !agent::is_hop_by_hop(name) && name != header::HOST {
            req = req.header(name, value);
        }
    }
    let req = req
        .body(body)
        .map_err(|e| ApiError::internal(e.to_string()))?;
    let resp = agent::client().request(req).await.map_err(|e| {
        ApiError::unavailable(format!(
            "cannot reach {} {}/{} at {ip}:{port}: {}",
            kind_word(target.kind),
            target.namespace,
            target.name,
            agent::error_chain(&e)
        ))
    })?;
    Ok(agent::streamed(resp))
}

fn kind_word(kind: ProxyKind) -> &'static str {
    match kind {
        ProxyKind::Pod => "pod",
        ProxyKind::Service => "service",
    }
}

/// A pod's address and the port the request means.
async fn pod_address(api: &Api, target: &ProxyTarget<'_>) -> ApiResult<(String, u16)> {
    let pods = resources::find("", "v1", "pods").expect("pods served");
    let pod = api.get(pods, Some(target.namespace), target.name).await?;
    let ip = pod["status"]["podIP"]
        .as_str()
        .filter(|ip| !ip.is_empty())
        .ok_or_else(|| {
            ApiError::unavailable(format!(
                "pod {}/{} has no IP address yet",
                target.namespace, target.name
            ))
        })?
        .to_string();
    let ports: Vec<&Value> = pod["spec"]["containers"]
        .as_array()
        .into_iter()
        .flatten()
        .flat_map(|c| c["ports"].as_array().into_iter().flatten())
        .collect();
    let container_port = |p: &Value| {
        p["containerPort"]
            .as_u64()
            .and_then(|n| u16::try_from(n).ok())
    };
    let port = match target.port {
        Some(p) => match p.parse::<u16>() {
            Ok(n) => n,
            Err(_) => ports
                .iter()
                .find(|cp| cp["name"] == p)
                .and_then(|cp| container_port(cp))
                .ok_or_else(|| {
                    ApiError::bad_request(format!(
                        "pod {}/{} has no container port named {p:?}",
                        target.namespace, target.name
                    ))
                })?,
        },
        None => ports
            .first()
            .and_then(|cp| container_port(cp))
            .unwrap_or(80),
    };
    Ok((ip, port))
}

/// A ready endpoint of a Service, for the Service port the request means.
async fn service_endpoint(api: &Api, target: &ProxyTarget<'_>) -> ApiResult<(String, u16)> {
    let services = resources::find("", "v1", "services").expect("services served");
    let service = api
        .get(services, Some(target.namespace), target.name)
        .await?;
    let ports: Vec<&Value> = service["spec"]["ports"]
        .as_array()
        .into_iter()
        .flatten()
        .collect();
    let chosen = match target.port {
        Some(p) => ports
            .iter()
            .find(|sp| sp["name"] == p || sp["port"].as_u64().is_some_and(|n| n.to_string() == p)),
        None if ports.len() == 1 => ports.first(),
        None => None,
    };
    let Some(service_port) = chosen else {
        return Err(ApiError::bad_request(format!(
            "service {}/{} has no port {:?}{}",
            target.namespace,
            target.name,
            target.port.unwrap_or(""),
            if target.port.is_none() {
                " (name one: it has several)"
            } else {
                ""
            }
        )));
    };
    let port_name = service_port["name"].as_str().unwrap_or("");
    let no_endpoints = || {
        ApiError::unavailable(format!(
            "no endpoints available for service \"{}\"",
            target.name
        ))
    };
    let endpoints = resources::find("", "v1", "endpoints").expect("endpoints served");
    let eps = match api
        .get(endpoints, Some(target.namespace), target.name)
        .await
    {
        Ok(eps) => eps,
        Err(e) if e.code == 404 => return Err(no_endpoints()),
        Err(e) => return Err(e),
    };
    let mut candidates = Vec::new();
    for subset in eps["subsets"].as_array().into_iter().flatten() {
        let port = subset["ports"]
            .as_array()
            .into_iter()
            .flatten()
            .find(|p| p["name"].as_str().unwrap_or("") == port_name)
            .and_then(|p| p["port"].as_u64())
            .and_then(|n| u16::try_from(n).ok());
        let Some(port) = port else { continue };
        for address in subset["addresses"].as_array().into_iter().flatten() {
            if let Some(ip) = address["ip"].as_str() {
                candidates.push((ip.to_string(), port));
            }
        }
    }
    candidates
        .choose(&mut rand::rng())
        .cloned()
        .ok_or_else(no_endpoints)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::apiserver::fake_agent;
    use http_body_util::BodyExt;
    use serde_json::json;

    /// Sends `method path` with `body` through the proxy; status and body text.
    async fn send(api: &Api, method: Method, path: &str, body: &str) -> (u16, String) {
        let (path, query) = match path.split_once('?') {
            Some((p, q)) => (p, Some(q)),
            None => (path, None),
        };
        let target = ProxyTarget::from_path(path).expect("a proxy path");
        let mut headers = HeaderMap::new();
        headers.insert("x-test", "1".parse().unwrap());
        match proxy(
            api,
            &method,
            &target,
            query,
            &headers,
            Body::from(body.to_string()),
        )
        .await
        {
            Ok(r) => {
                let status = r.status().as_u16();
                let bytes = r.into_body().collect().await.unwrap().to_bytes();
                (status, String::from_utf8_lossy(&bytes).into_owned())
            }
            Err(e) => (e.code, e.message),
        }
    }

    /// [`send`] of a GET without a body.
    async fn get(api: &Api, path: &str) -> (u16, String) {
        send(api, Method::GET, path, "").await
    }

    #[tokio::test]
    async fn requests_reach_the_pod_and_a_ready_endpoint_of_the_service() {
        use axum::routing::any;
        let upstream = fake_agent::serve(axum::Router::new().route(
            "/{*rest}",
            any(
                |m: Method, uri: axum::http::Uri, h: HeaderMap, body: String| async move {
                    format!(
                        "{m} {uri} x-test={:?} body={body}",
                        h.get("x-test").map(|v| v.to_str().unwrap())
                    )
                },
            ),
        ))
        .await;
        let (api, _dir) = fake_agent::api().await;
        let pod = json!({"apiVersion": "v1", "kind": "Pod",
            "metadata": {"name": "web", "namespace": "default"},
            "spec": {"containers": [{"name": "app", "image": "i",
                "ports": [{"name": "http", "containerPort": upstream.port()}]}]}});
        fake_agent::create(&api, pod).await;
        let (code, msg) = get(&api, "/api/v1/namespaces/default/pods/web/proxy/").await;
        assert_eq!(
            (code, msg.contains("has no IP address")),
            (503, true),
            "{msg}"
        );
        fake_agent::patch_pod_status(&api, "web", json!({"podIP": "127.0.0.1"})).await;

        for path in [
            "/api/v1/namespaces/default/pods/web/proxy/a/b?x=1",
            "/api/v1/namespaces/default/pods/web:http/proxy/a/b?x=1",
            &format!(
                "/api/v1/namespaces/default/pods/web:{}/proxy/a/b?x=1",
                upstream.port()
            ),
        ] {
            let (code, text) = send(&api, Method::POST, path, "hi").await;
            assert_eq!(code, 200, "{path}: {text}");
            assert_eq!(text, "POST /a/b?x=1 x-test=Some(\"1\") body=hi", "{path}");
        }
        let (code, _) = get(&api, "/api/v1/namespaces/default/pods/web:nope/proxy/").await;
        assert_eq!(code, 400);
        let (code, _) = get(&api, "/api/v1/namespaces/default/pods/gone/proxy/").await;
        assert_eq!(code, 404);

        // A Service: no endpoints yet, then one ready address.
        let svc = json!({"apiVersion": "v1", "kind": "Service",
            "metadata": {"name": "web", "namespace": "default"},
            "spec": {"ports": [{"name": "http", "port": 80, "targetPort": "http"}]}});
        fake_agent::create(&api, svc).await;
        let (code, msg) = get(&api, "/api/v1/namespaces/default/services/web/proxy/").await;
        assert_eq!(
            (code, msg.as_str()),
            (503, "no endpoints available for service \"web\"")
        );
        let eps = json!({"apiVersion": "v1", "kind": "Endpoints",
            "metadata": {"name": "web", "namespace": "default"},
            "subsets": [{"addresses": [{"ip": "127.0.0.1"}],
                "ports": [{"name": "http", "port": upstream.port()}]}]});
        fake_agent::create(&api, eps).await;
        for id in ["web", "web:80", "web:http", "http:web:http"] {
            let path = format!("/api/v1/namespaces/default/services/{id}/proxy/s");
            let (code, text) = send(&api, Method::DELETE, &path, "").await;
            assert_eq!(
                (code, text.as_str()),
                (200, "DELETE /s x-test=Some(\"1\") body="),
                "{id}"
            );
        }
        let (code, _) = get(&api, "/api/v1/namespaces/default/services/web:81/proxy/").await;
        assert_eq!(code, 400);
        let (code, _) = get(
            &api,
            "/api/v1/namespaces/default/services/https:web:80/proxy/",
        )
        .await;
        assert_eq!(code, 400);
    }

    #[test]
    fn proxy_paths_name_the_object_port_and_path() {
        let t = ProxyTarget::from_path("/api/v1/namespaces/ns/pods/web:8080/proxy/a/b").unwrap();
        assert_eq!(
            t,
            ProxyTarget {
                kind: ProxyKind::Pod,
                namespace: "ns",
                name: "web",
                scheme: None,
                port: Some("8080"),
                path: "/a/b".into()
            }
        );
        let t =
            ProxyTarget::from_path("/api/v1/namespaces/ns/services/https:web:tls/proxy").unwrap();
        assert_eq!(
            (t.kind, t.scheme, t.name, t.port, t.path.as_str()),
            (ProxyKind::Service, Some("https"), "web", Some("tls"), "/")
        );
        let t = ProxyTarget::from_path("/api/v1/namespaces/ns/services/web/proxy/").unwrap();
        assert_eq!((t.port, t.path.as_str()), (None, "/"));
        for not_proxy in [
            "/api/v1/namespaces/ns/pods/web",
            "/api/v1/namespaces/ns/pods/web/log",
            "/api/v1/namespaces/ns/pods/web/proxyx",
            "/api/v1/namespaces/ns/configmaps/web/proxy",
            "/api/v1/namespaces/ns/pods/:80/proxy",
            "/api/v1/namespaces/ns/pods/a:b:c:d/proxy",
        ] {
            assert_eq!(ProxyTarget::from_path(not_proxy), None, "{not_proxy}");
        }
    }
}
