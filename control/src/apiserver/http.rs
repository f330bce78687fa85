//! HTTP routing and encoding of the Kubernetes API: paths, query parameters, content
//! negotiation (JSON, YAML, server-side tables), warnings, and streaming watches.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use axum::Router;
use axum::body::{Body, Bytes};
use axum::extract::{Path, Request, State};
use axum::http::{HeaderMap, HeaderValue, Method, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use serde_json::{Value, json};
use tokio_util::sync::CancellationToken;

use crate::store::{EventType, Revision};

use super::api::{
    Api, DeleteOptions, FieldValidation, ListParams, ScaleChange, WriteOptions, parse_propagation,
};
use super::error::{ApiError, ApiResult, Cause};
use super::metrics::{self, ApiMetrics};
use super::objects;
use super::patch::PatchType;
use super::resources::{self, ResourceInfo, Subresource};
use super::selector::{FieldSelector, LabelSelector};
use super::table::{self, IncludeObject, TableOptions};
use super::{
    discovery, events_v1, eviction, node_proxy, openapi, pod_proxy, resource_metrics, self_review,
};

/// The Kubernetes version this server presents itself as (the `k8s-openapi` API level).
pub const KUBERNETES_MINOR: &str = "33";

/// State shared by the HTTP handlers.
#[derive(Clone, Debug)]
pub struct HttpState {
    /// The API.
    pub api: Api,
    /// Cancelled at shutdown: ends open watches.
    pub shutdown: CancellationToken,
    /// Scrapes agents for `metrics.k8s.io` and keeps their latest samples.
    pub metrics_scraper: resource_metrics::Scraper,
}

/// The router of the Kubernetes API (everything but the OCI registry).
pub fn router(state: HttpState) -> Router {
    let metrics = Arc::new(ApiMetrics::new());
    let scraped = metrics.clone();
    Router::new()
        .route(
            "/metrics",
            get(move |State(s): State<HttpState>| async move {
                let store = s.api.store();
                metrics::response(&scraped, store.current_revision(), store.stats())
            }),
        )
        .route("/version", get(version))
        // The official clients' generated code asks for `/version/` (kube-apiserver's OpenAPI
        // path), as kube-apiserver serves it.
        .route("/version/", get(version))
        .route("/healthz", get(ok))
        .route("/livez", get(ok))
        .route("/readyz", get(ok))
        .route("/healthz/{check}", get(ok))
        .route("/livez/{check}", get(ok))
        .route("/readyz/{check}", get(ok))
        .route("/openapi/v2", get(openapi_v2))
        .route("/swagger.json", get(openapi_v2))
        .route("/openapi/v3", get(openapi_v3_index))
        .route("/openapi/v3/{*path}", get(openapi_v3))
        .fallback(dispatch)
        .with_state(state)
        .layer(axum::middleware::from_fn_with_state(
            metrics,
            metrics::record,
        ))
}

async fn ok() -> &'static str {
    "ok"
}

async fn version() -> Response {
    json_response(
        StatusCode::OK,
        &json!({
            "major": "1",
            "minor": KUBERNETES_MINOR,
            "gitVersion": format!("v1.{KUBERNETES_MINOR}.0-flotilla.{}", env!("CARGO_PKG_VERSION")),
            "gitCommit": "",
            "gitTreeState": "clean",
            "buildDate": "1970-01-01T00:00:00Z",
            "goVersion": "rust",
            "compiler": "rustc",
            "platform": format!("{}/{}", std::env::consts::OS, go_arch()),
        }),
    )
}

/// The Go name of this machine's architecture, as Kubernetes labels and versions use.
pub fn go_arch() -> &'static str {
    match std::env::consts::ARCH {
        "x86_64" => "amd64",
        "aarch64" => "arm64",
        other => other,
    }
}

async fn openapi_v2(headers: HeaderMap) -> Response {
    let wants_protobuf = accept(&headers)
        .split(',')
        .next()
        .is_some_and(|first| first.trim().starts_with(openapi::V2_PROTOBUF));
    if wants_protobuf {
        // kubectl asks for the protobuf form, and only that, when a kind of a manifest is not
        // in the v3 documents (an unserved kind such as CronJob, or a review). The v2
        // document is not encoded as protobuf: an empty `openapi_v2.Document` (zero bytes is
        // a valid message) says "no v2 schemas", so kubectl skips its client-side validation
        // of that kind as it does for any unknown kind, and reports "no matches for kind"
        // while applying the manifest's other objects. Answering JSON here made it fail the
        // whole manifest with "proto: cannot parse invalid wire-format data".
        let mut r = (StatusCode::OK, Vec::<u8>::new()).into_response();
        r.headers_mut().insert(
            header::CONTENT_TYPE,
            HeaderValue::from_static(openapi::V2_PROTOBUF_SERVED),
        );
        return r;
    }
    json_response(StatusCode::OK, openapi::v2())
}

async fn openapi_v3_index() -> Response {
    json_response(StatusCode::OK, openapi::v3_index())
}

async fn openapi_v3(Path(path): Path<String>) -> Response {
    match openapi::v3_group_version(&path) {
        Some(doc) => json_response(StatusCode::OK, doc),
        None => ApiError::no_route().into_response(),
    }
}

fn json_response(code: StatusCode, v: &Value) -> Response {
    json_bytes_response(code, serde_json::to_vec(v).unwrap_or_default())
}

/// A response whose body is JSON already encoded.
fn json_bytes_response(code: StatusCode, body: Vec<u8>) -> Response {
    let mut r = (code, body).into_response();
    r.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/json"),
    );
    r
}

fn with_warnings(mut r: Response, warnings: &[String]) -> Response {
    for w in warnings {
        let escaped = w.replace('\\', "\\\\").replace('"', "\\\"");
        if let Ok(v) = HeaderValue::from_str(&format!("299 - \"{escaped}\"")) {
            r.headers_mut().append(header::WARNING, v);
        }
    }
    r
}

/// What a request addresses.
#[derive(Debug)]
struct Target {
    res: &'static ResourceInfo,
    ns: Option<String>,
    name: Option<String>,
    sub: Option<String>,
    watch_path: bool,
}

enum Route {
    Discovery(Value),
    Target(Target),
}

fn parse_path(path: &str, headers: &HeaderMap, api: &Api) -> ApiResult<Route> {
    let segs: Vec<&str> = path
        .trim_matches('/')
        .split('/')
        .filter(|s| !s.is_empty())
        .collect();
    let accept = accept(headers);
    let (group, version, rest): (&str, &str, &[&str]) = match segs.as_slice() {
        ["api"] => {
            return Ok(Route::Discovery(
                if discovery::wants_aggregated(accept).is_some() {
                    discovery::aggregated_core()
                } else {
                    discovery::api_versions(&api.config().advertise_address)
                },
            ));
        }
        ["apis"] => {
            return Ok(Route::Discovery(
                if discovery::wants_aggregated(accept).is_some() {
                    discovery::aggregated_apis()
                } else {
                    discovery::api_group_list()
                },
            ));
        }
        ["apis", group] => {
            return discovery::api_group(group)
                .map(Route::Discovery)
                .ok_or_else(ApiError::no_route);
        }
        ["api", version, rest @ ..] => ("", *version, rest),
        ["apis", group, version, rest @ ..] => (*group, *version, rest),
        _ => return Err(ApiError::no_route()),
    };
    if rest.is_empty() {
        return discovery::api_resource_list(group, version)
            .map(Route::Discovery)
            .ok_or_else(ApiError::no_route);
    }
    let (watch_path, rest) = match rest {
        ["watch", tail @ ..] => (true, tail),
        _ => (false, rest),
    };
    let find = |name: &str| resources::find(group, version, name).filter(|r| r.plural == name);
    let target = match rest {
        ["namespaces", ns, plural, tail @ ..] if find(plural).is_some_and(|r| r.namespaced) => {
            Target {
                res: find(plural).expect("checked"),
                ns: Some(ns.to_string()),
                name: tail.first().map(|s| s.to_string()),
                sub: tail.get(1).map(|s| s.to_string()),
                watch_path,
            }
            .checked(tail.len())?
        }
        [plural, tail @ ..] => {
            let res = find(plural).ok_or_else(ApiError::no_route)?;
            Target {
                res,
                ns: None,
                name: tail.first().map(|s| s.to_string()),
                sub: tail.get(1).map(|s| s.to_string()),
                watch_path,
            }
            .checked(tail.len())?
        }
        [] => return Err(ApiError::no_route()),
    };
    Ok(Route::Target(target))
}

impl Target {
    fn checked(self, tail_len: usize) -> ApiResult<Self> {
        if tail_len > 2 {
            return Err(ApiError::no_route());
        }
        if let Some(sub) = &self.sub {
            let ok = match Subresource::parse(sub) {
                Some(s) => self.res.has(s),
                None => sub == "finalize" && self.res.kind == "Namespace",
            };
            if !ok {
                return Err(ApiError::no_route());
            }
        }
        Ok(self)
    }
}

fn query_map(uri: &axum::http::Uri) -> HashMap<String, String> {
    uri.query().map(url_decode_pairs).unwrap_or_default()
}

fn url_decode_pairs(q: &str) -> HashMap<String, String> {
    form_urlencoded::parse(q.as_bytes()).into_owned().collect()
}

fn write_options(q: &HashMap<String, String>, headers: &HeaderMap) -> ApiResult<WriteOptions> {
    let field_validation = match q.get("fieldValidation").map(String::as_str) {
        None | Some("") => FieldValidation::Warn,
        Some("Strict") => FieldValidation::Strict,
        Some("Warn") => FieldValidation::Warn,
        Some("Ignore") => FieldValidation::Ignore,
        Some(other) => {
            return Err(ApiError::bad_request(format!(
                "fieldValidation: Unsupported value: \"{other}\": supported values: \"Ignore\", \"Strict\", \"Warn\""
            )));
        }
    };
    Ok(WriteOptions {
        dry_run: dry_run(q)?,
        field_validation,
        field_manager: Some(field_manager(q, headers)?),
        field_manager_named: q.get("fieldManager").is_some_and(|m| !m.is_empty()),
    })
}

/// The field manager of a write: `fieldManager`, else the product of the `User-Agent`
/// (`kubectl` for `kubectl/v1.32.0 (linux/amd64) …`), as kube-apiserver names it.
fn field_manager(q: &HashMap<String, String>, headers: &HeaderMap) -> ApiResult<String> {
    if let Some(m) = q.get("fieldManager").filter(|m| !m.is_empty()) {
        if m.len() > 128 || m.chars().any(char::is_control) {
            return Err(ApiError::bad_request(
                "fieldManager: Invalid value: must be at most 128 printable characters",
            ));
        }
        return Ok(m.clone());
    }
    let agent = headers
        .get(header::USER_AGENT)
        .and_then(|v| v.to_str().ok())
        .and_then(|ua| ua.split('/').next())
        .map(str::trim)
        .filter(|p| !p.is_empty())
        .unwrap_or("unknown");
    Ok(agent.chars().take(128).collect())
}

fn dry_run(q: &HashMap<String, String>) -> ApiResult<bool> {
    match q.get("dryRun").map(String::as_str) {
        None | Some("") => Ok(false),
        Some("All") => Ok(true),
        Some(other) => Err(ApiError::bad_request(format!(
            "dryRun: Unsupported value: \"{other}\": supported values: \"All\""
        ))),
    }
}

fn list_params(res: &ResourceInfo, q: &HashMap<String, String>) -> ApiResult<ListParams> {
    let label_selector = match q.get("labelSelector").filter(|s| !s.is_empty()) {
        Some(s) => Some(
            LabelSelector::parse(s)
                .map_err(|e| ApiError::bad_request(format!("unable to parse requirement: {e}")))?,
        ),
        None => None,
    };
    let field_selector = match q.get("fieldSelector").filter(|s| !s.is_empty()) {
        Some(s) => Some(
            FieldSelector::parse_for(res, s).map_err(|e| ApiError::bad_request(e.to_string()))?,
        ),
        None => None,
    };
    let limit = match q.get("limit").filter(|s| !s.is_empty()) {
        Some(l) => l
            .parse::<i64>()
            .map_err(|_| ApiError::bad_request(format!("limit: invalid value {l:?}")))?
            .max(0) as usize,
        None => 0,
    };
    let continue_token = q.get("continue").filter(|s| !s.is_empty()).cloned();
    Ok(ListParams {
        label_selector,
        field_selector,
        limit,
        continue_token,
        exact_revision: None,
    })
}

fn table_options(headers: &HeaderMap, q: &HashMap<String, String>) -> Option<TableOptions> {
    let wants_table = accept(headers).split(',').any(|part| {
        let p = part.replace(' ', "");
        p.contains("as=Table")
            && p.contains("g=meta.k8s.io")
            && (p.contains("v=v1;") || p.ends_with("v=v1") || p.contains("v=v1beta1"))
    });
    if !wants_table {
        return None;
    }
    let include_object = match q.get("includeObject").map(String::as_str) {
        Some("None") => IncludeObject::None,
        Some("Object") => IncludeObject::Object,
        _ => IncludeObject::Metadata,
    };
    Some(TableOptions {
        include_object,
        no_headers: false,
    })
}

async fn read_body(api: &Api, body: Body) -> ApiResult<Bytes> {
    let limit = api.config().max_body_bytes;
    axum::body::to_bytes(body, limit)
        .await
        .map_err(|_| ApiError::too_large(limit))
}

/// The media type of a server-side apply `PATCH`.
const APPLY_PATCH: &str = "application/apply-patch+yaml";

/// The request's `Accept` header, empty when absent or not text.
fn accept(headers: &HeaderMap) -> &str {
    headers
        .get(header::ACCEPT)
        .and_then(|v| v.to_str().ok())
        .unwrap_or("")
}

fn content_type(headers: &HeaderMap) -> String {
    headers
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .unwrap_or("application/json")
        .split(';')
        .next()
        .unwrap_or("")
        .trim()
        .to_ascii_lowercase()
}

fn decode_object(headers: &HeaderMap, body: &[u8]) -> ApiResult<Value> {
    let ct = content_type(headers);
    let v: Value = match ct.as_str() {
        "application/json" | "" | "*/*" => serde_json::from_slice(body)
            .map_err(|e| ApiError::bad_request(format!("error decoding JSON body: {e}")))?,
        "application/yaml" | "application/x-yaml" | "text/yaml" => serde_yaml::from_slice(body)
            .map_err(|e| ApiError::bad_request(format!("error decoding YAML body: {e}")))?,
        super::protobuf::CONTENT_TYPE => super::protobuf::decode(body).map_err(|e| match e {
            super::protobuf::ProtobufError::UnsupportedKind { .. }
            | super::protobuf::ProtobufError::UnsupportedEncoding(_) => {
                ApiError::unsupported_media_type(&e.to_string())
            }
            other => ApiError::bad_request(other.to_string()),
        })?,
        other => return Err(ApiError::unsupported_media_type(other)),
    };
    if !v.is_object() {
        return Err(ApiError::bad_request(
            "the body of the request must be an object",
        ));
    }
    Ok(v)
}

async fn dispatch(State(state): State<HttpState>, req: Request) -> Response {
    for what in [super::exec::Streaming::Exec, super::exec::Streaming::Attach] {
        let path = req.uri().path();
        if let Some(target) = super::exec::ExecTarget::for_subresource(path, what.name()) {
            return super::exec::serve(&state.api, &target, what, req)
                .await
                .unwrap_or_else(|e| e.into_response());
        }
    }
    if let Some(target) = super::exec::ExecTarget::for_subresource(req.uri().path(), "portforward")
    {
        return super::port_forward::serve(&state.api, &target, req)
            .await
            .unwrap_or_else(|e| e.into_response());
    }
    let (parts, body) = req.into_parts();
    match handle(&state, &parts.method, &parts.uri, &parts.headers, body).await {
        Ok(r) => r,
        Err(e) => e.into_response(),
    }
}

async fn handle(
    state: &HttpState,
    method: &Method,
    uri: &axum::http::Uri,
    headers: &HeaderMap,
    body: Body,
) -> ApiResult<Response> {
    let api = &state.api;
    if let Some(review) = self_review::Review::from_path(uri.path()) {
        if method != Method::POST {
            return Err(ApiError::method_not_allowed(uri.path()));
        }
        let bytes = read_body(api, body).await?;
        let answered = self_review::answer(review, decode_object(headers, &bytes)?)?;
        return Ok(json_response(StatusCode::CREATED, &answered));
    }
    if let Some(target) = node_proxy::ProxyTarget::from_path(uri.path()) {
        return node_proxy::proxy(api, method, &target, uri.query()).await;
    }
    if let Some(target) = pod_proxy::ProxyTarget::from_path(uri.path()) {
        return pod_proxy::proxy(api, method, &target, uri.query(), headers, body).await;
    }
    if let Some(req) = resource_metrics::MetricsRequest::from_path(uri.path()) {
        return metrics_answer(state, method, uri, &req).await;
    }
    let route = parse_path(uri.path(), headers, api)?;
    let t = match route {
        Route::Discovery(doc) => {
            if method != Method::GET {
                return Err(ApiError::method_not_allowed(uri.path()));
            }
            let mut r = json_response(StatusCode::OK, &doc);
            if doc["kind"] == "APIGroupDiscoveryList"
                && let Some(ct) = discovery::wants_aggregated(accept(headers))
            {
                r.headers_mut()
                    .insert(header::CONTENT_TYPE, HeaderValue::from_static(ct));
            }
            return Ok(r);
        }
        Route::Target(t) => t,
    };
    let q = query_map(uri);
    let res = t.res;
    let ns = t.ns.as_deref();
    let sub = t.sub.as_deref();
    let wants_watch = t.watch_path || q.get("watch").is_some_and(|w| w == "true" || w == "1");
    if events_v1::is_view(res) {
        return handle_events_v1(state, method, &t, &q, wants_watch, headers, body).await;
    }
    match (method.clone(), t.name.as_deref(), sub) {
        (Method::GET, None, None) if wants_watch => {
            watch(state, res, res, ns, None, &q, headers).await
        }
        (Method::GET, Some(name), None) if wants_watch => {
            watch(state, res, res, ns, Some(name), &q, headers).await
        }
        (Method::GET, None, None) => list(api, res, res, ns, &q, headers).await,
        (Method::GET, Some(name), None | Some("status" | "ephemeralcontainers")) => {
            let entry = api.get_entry(res, ns, name).await?;
            Ok(if table_options(headers, &q).is_some() {
                let obj = objects::from_entry(&entry);
                object_response(StatusCode::OK, res, obj, headers, &q)
            } else {
                let json = objects::served_json(&entry.value, entry.mod_revision);
                json_bytes_response(StatusCode::OK, json)
            })
        }
        (Method::GET, Some(name), Some("scale")) => {
            let obj = api.get(res, ns, name).await?;
            Ok(json_response(StatusCode::OK, &Api::scale_of(res, &obj)))
        }
        (Method::GET, Some(name), Some("log")) => {
            let pod = api.get(res, ns, name).await?;
            super::logs::proxy(api, &pod, uri.query().unwrap_or("")).await
        }
        (Method::POST, None, None) => {
            let bytes = read_body(api, body).await?;
            let obj = decode_object(headers, &bytes)?;
            let (created, warnings) = api
                .create_written(res, ns, obj, &write_options(&q, headers)?)
                .await?;
            Ok(with_warnings(
                json_bytes_response(StatusCode::CREATED, created.to_json()),
                &warnings,
            ))
        }
        (Method::POST, Some(name), Some("binding")) => {
            let bytes = read_body(api, body).await?;
            let binding = decode_object(headers, &bytes)?;
            api.bind(ns.unwrap_or("default"), name, &binding).await?;
            Ok(json_response(StatusCode::CREATED, &success_status()))
        }
        (Method::POST, Some(name), Some("eviction")) => {
            let bytes = read_body(api, body).await?;
            let eviction = decode_object(headers, &bytes)?;
            let mut opts = DeleteOptions::default();
            if let Some(d) = eviction.get("deleteOptions") {
                opts.merge_json(d)?;
            }
            eviction::evict(api, ns.unwrap_or("default"), name, &opts).await?;
            Ok(json_response(StatusCode::CREATED, &success_status()))
        }
        (Method::PUT, Some(name), None | Some("status" | "finalize" | "ephemeralcontainers")) => {
            let bytes = read_body(api, body).await?;
            let obj = decode_object(headers, &bytes)?;
            // `finalize` is no subresource of the table: a namespace's update as any other.
            let subresource = sub.and_then(Subresource::parse);
            let (updated, warnings) = api
                .update_written(
                    res,
                    ns,
                    name,
                    obj,
                    subresource,
                    &write_options(&q, headers)?,
                )
                .await?;
            Ok(with_warnings(
                json_bytes_response(StatusCode::OK, updated.to_json()),
                &warnings,
            ))
        }
        (Method::PUT, Some(name), Some("scale")) => {
            let bytes = read_body(api, body).await?;
            let scale = decode_object(headers, &bytes)?;
            let out = api
                .write_scale(
                    res,
                    ns,
                    name,
                    ScaleChange::Replace(&scale),
                    &write_options(&q, headers)?,
                )
                .await?;
            Ok(json_response(StatusCode::OK, &out))
        }
        (Method::PATCH, Some(name), None | Some("status" | "scale" | "ephemeralcontainers")) => {
            let ct = content_type(headers);
            if ct == APPLY_PATCH {
                if let Some(sub @ ("scale" | "ephemeralcontainers")) = sub {
                    return Err(ApiError::unsupported_media_type(&format!(
                        "application/apply-patch+yaml on the {sub} subresource (apply to the object itself)"
                    )));
                }
                let bytes = read_body(api, body).await?;
                let opts = write_options(&q, headers)?;
                let force = match q.get("force").map(String::as_str) {
                    None | Some("" | "false") => false,
                    Some("true") => true,
                    Some(other) => {
                        return Err(ApiError::bad_request(format!(
                            "force: Invalid value: \"{other}\": must be true or false"
                        )));
                    }
                };
                let manager = q.get("fieldManager").map(String::as_str).unwrap_or("");
                let subresource = (sub == Some("status")).then_some(Subresource::Status);
                let (obj, warnings, created) = api
                    .apply(res, ns, name, &bytes, manager, force, subresource, &opts)
                    .await?;
                let code = if created {
                    StatusCode::CREATED
                } else {
                    StatusCode::OK
                };
                return Ok(with_warnings(json_response(code, &obj), &warnings));
            }
            let Some(ty) = PatchType::from_content_type(&ct) else {
                return Err(ApiError::unsupported_media_type(&ct));
            };
            let bytes = read_body(api, body).await?;
            let opts = write_options(&q, headers)?;
            if sub == Some("scale") {
                let out = api
                    .write_scale(res, ns, name, ScaleChange::Patch(ty, &bytes), &opts)
                    .await?;
                return Ok(json_response(StatusCode::OK, &out));
            }
            let subresource = sub.and_then(Subresource::parse);
            let (patched, warnings) = api
                .patch_written(res, ns, name, ty, &bytes, subresource, &opts)
                .await?;
            Ok(with_warnings(
                json_bytes_response(StatusCode::OK, patched.to_json()),
                &warnings,
            ))
        }
        (Method::DELETE, Some(name), None) => {
            let opts = delete_options(api, &q, headers, body).await?;
            let deleted = api.delete(res, ns, name, &opts).await?;
            let code = if deleted.gone {
                StatusCode::OK
            } else {
                StatusCode::ACCEPTED
            };
            Ok(json_response(code, &deleted.object))
        }
        (Method::DELETE, None, None) => {
            let params = list_params(res, &q)?;
            let opts = delete_options(api, &q, headers, body).await?;
            let (items, rev) = api.delete_collection(res, ns, &params, &opts).await?;
            Ok(json_response(
                StatusCode::OK,
                &json!({"kind": res.list_kind(), "apiVersion": res.api_version(), "metadata": {"resourceVersion": rev.to_string()}, "items": items}),
            ))
        }
        _ => Err(ApiError::method_not_allowed(&format!(
            "{} {}",
            method,
            uri.path()
        ))),
    }
}

/// A list of `view`'s objects (stored as `res`'s: the same resource but for
/// [`events_v1`]), as JSON or as a table.
async fn list(
    api: &Api,
    res: &'static ResourceInfo,
    view: &'static ResourceInfo,
    ns: Option<&str>,
    q: &HashMap<String, String>,
    headers: &HeaderMap,
) -> ApiResult<Response> {
    let mut params = list_params(view, q)?;
    let wanted = list_resource_version(q)?;
    if let Some((rv, matching)) = wanted {
        wait_for_revision(api, rv).await?;
        // Exact, or (kube-apiserver's legacy rule) a paged list naming a revision and no match.
        let exact = matching == Some(RvMatch::Exact) || (matching.is_none() && params.limit > 0);
        if exact {
            params.exact_revision = Some(rv);
        }
    }
    let (items, rev, next) = api.list(res, ns, &params).await?;
    if let Some(opts) = table_options(headers, q) {
        let mut t = table::table(res, &items, &opts, chrono::Utc::now());
        t["metadata"]["resourceVersion"] = json!(rev.to_string());
        if let Some(c) = next {
            t["metadata"]["continue"] = json!(c);
        }
        return Ok(json_response(StatusCode::OK, &t));
    }
    let items = in_view(view, items)?;
    let mut list = json!({
        "kind": view.list_kind(),
        "apiVersion": view.api_version(),
        "metadata": {"resourceVersion": rev.to_string()},
        "items": items,
    });
    if let Some(c) = next {
        list["metadata"]["continue"] = json!(c);
    }
    Ok(json_response(StatusCode::OK, &list))
}

/// Stored objects as `view` serves them.
fn in_view(view: &ResourceInfo, items: Vec<Value>) -> ApiResult<Vec<Value>> {
    if events_v1::is_view(view) {
        items.into_iter().map(events_v1::served).collect()
    } else {
        Ok(items)
    }
}

/// A request for `events.k8s.io/v1` Events, answered from the `core/v1` Events they are
/// stored as (see [`events_v1`]). Server-side apply is the one write it refuses.
async fn handle_events_v1(
    state: &HttpState,
    method: &Method,
    t: &Target,
    q: &HashMap<String, String>,
    wants_watch: bool,
    headers: &HeaderMap,
    body: Body,
) -> ApiResult<Response> {
    let api = &state.api;
    let view = t.res;
    let res = events_v1::storage();
    let ns = t.ns.as_deref();
    match (method.clone(), t.name.as_deref()) {
        (Method::GET, name) if wants_watch => watch(state, res, view, ns, name, q, headers).await,
        (Method::GET, None) => list(api, res, view, ns, q, headers).await,
        (Method::GET, Some(name)) => {
            let entry = api
                .get_entry(res, ns, name)
                .await
                .map_err(events_v1::relabel)?;
            Ok(if table_options(headers, q).is_some() {
                object_response(StatusCode::OK, res, objects::from_entry(&entry), headers, q)
            } else {
                let json = events_v1::served_bytes(&entry.value, entry.mod_revision)?;
                json_bytes_response(StatusCode::OK, json)
            })
        }
        (Method::POST, None) => {
            let bytes = read_body(api, body).await?;
            let obj = decode_object(headers, &bytes)?;
            let (created, warnings) =
                events_v1::create(api, ns, obj, &write_options(q, headers)?).await?;
            Ok(with_warnings(
                json_response(StatusCode::CREATED, &created),
                &warnings,
            ))
        }
        (Method::PUT | Method::PATCH, Some(name)) => {
            let bytes = read_body(api, body).await?;
            let change = if method == Method::PUT {
                events_v1::Change::Replace(decode_object(headers, &bytes)?)
            } else {
                let ct = content_type(headers);
                if ct == APPLY_PATCH {
                    return Err(ApiError::unsupported_media_type(
                        "application/apply-patch+yaml on events.k8s.io/v1 Events (create them, or patch them with a merge patch)",
                    ));
                }
                let ty = PatchType::from_content_type(&ct)
                    .ok_or_else(|| ApiError::unsupported_media_type(&ct))?;
                events_v1::Change::Patch(ty, &bytes)
            };
            let (changed, warnings) =
                events_v1::change(api, ns, name, change, &write_options(q, headers)?).await?;
            Ok(with_warnings(
                json_response(StatusCode::OK, &changed),
                &warnings,
            ))
        }
        (Method::DELETE, Some(name)) => {
            let opts = delete_options(api, q, headers, body).await?;
            let deleted = api
                .delete(res, ns, name, &opts)
                .await
                .map_err(events_v1::relabel)?;
            let code = if deleted.gone {
                StatusCode::OK
            } else {
                StatusCode::ACCEPTED
            };
            let object = if deleted.object["kind"] == "Event" {
                events_v1::served(deleted.object)?
            } else {
                deleted.object
            };
            Ok(json_response(code, &object))
        }
        (Method::DELETE, None) => {
            let params = list_params(view, q)?;
            let opts = delete_options(api, q, headers, body).await?;
            let (items, rev) = api.delete_collection(res, ns, &params, &opts).await?;
            Ok(json_response(
                StatusCode::OK,
                &json!({"kind": view.list_kind(), "apiVersion": view.api_version(), "metadata": {"resourceVersion": rev.to_string()}, "items": in_view(view, items)?}),
            ))
        }
        _ => Err(ApiError::method_not_allowed(&format!(
            "{} {}",
            method,
            view.plural_qualified()
        ))),
    }
}

/// Answers a `metrics.k8s.io` request (read-only: `get` and `list`, no watch).
async fn metrics_answer(
    state: &HttpState,
    method: &Method,
    uri: &axum::http::Uri,
    req: &resource_metrics::MetricsRequest,
) -> ApiResult<Response> {
    let q = query_map(uri);
    let watch = q.get("watch").is_some_and(|w| w == "true" || w == "1");
    if method != Method::GET || watch {
        let verb = if watch { "WATCH" } else { method.as_str() };
        return Err(ApiError::method_not_allowed(&format!(
            "{verb} {} (resource metrics are read-only: get and list)",
            uri.path()
        )));
    }
    let params = list_params(req.selects(), &q)?;
    let doc = resource_metrics::answer(&state.api, &state.metrics_scraper, req, &params).await?;
    Ok(json_response(StatusCode::OK, &doc))
}

fn success_status() -> Value {
    json!({"kind": "Status", "apiVersion": "v1", "metadata": {}, "status": "Success", "code": 201})
}

fn object_response(
    code: StatusCode,
    res: &ResourceInfo,
    obj: Value,
    headers: &HeaderMap,
    q: &HashMap<String, String>,
) -> Response {
    match table_options(headers, q) {
        Some(opts) => {
            let rv = obj["metadata"]["resourceVersion"].clone();
            let mut t = table::table(res, std::slice::from_ref(&obj), &opts, chrono::Utc::now());
            t["metadata"]["resourceVersion"] = rv;
            json_response(code, &t)
        }
        None => json_response(code, &obj),
    }
}

async fn delete_options(
    api: &Api,
    q: &HashMap<String, String>,
    headers: &HeaderMap,
    body: Body,
) -> ApiResult<DeleteOptions> {
    let mut opts = DeleteOptions {
        dry_run: dry_run(q)?,
        ..Default::default()
    };
    if let Some(g) = q.get("gracePeriodSeconds").filter(|s| !s.is_empty()) {
        opts.grace_period_seconds = Some(g.parse().map_err(|_| {
            ApiError::bad_request(format!("gracePeriodSeconds: invalid value {g:?}"))
        })?);
    }
    if let Some(p) = q.get("propagationPolicy").filter(|s| !s.is_empty()) {
        opts.propagation = Some(parse_propagation(p)?);
    }
    let bytes = read_body(api, body).await?;
    if !bytes.iter().all(u8::is_ascii_whitespace) {
        let v: Value = if content_type(headers) == super::protobuf::CONTENT_TYPE {
            super::protobuf::decode(&bytes)
                .map_err(|e| ApiError::bad_request(format!("error decoding DeleteOptions: {e}")))?
        } else {
            serde_json::from_slice(&bytes)
                .map_err(|e| ApiError::bad_request(format!("error decoding DeleteOptions: {e}")))?
        };
        opts.merge_json(&v)?;
    }
    Ok(opts)
}

fn watch_event(ty: &str, obj: Value) -> Bytes {
    let mut line = serde_json::to_vec(&json!({"type": ty, "object": obj})).unwrap_or_default();
    line.push(b'\n');
    Bytes::from(line)
}

/// A watch event line around an object already encoded as JSON.
fn raw_watch_event(ty: &str, object: &[u8]) -> Bytes {
    let mut line = Vec::with_capacity(object.len() + ty.len() + 24);
    line.extend_from_slice(b"{\"type\":\"");
    line.extend_from_slice(ty.as_bytes());
    line.extend_from_slice(b"\",\"object\":");
    line.extend_from_slice(object);
    line.extend_from_slice(b"}\n");
    Bytes::from(line)
}

/// How a list's `resourceVersion` applies (`resourceVersionMatch`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum RvMatch {
    /// The list is exactly at that revision.
    Exact,
    /// At that revision or later (also what a revision without a match means).
    NotOlderThan,
}

/// A list's `resourceVersion` (none for unset and "0": any state will do) and its match, checked
/// as kube-apiserver's `ValidateListOptions` does (422 for combinations it forbids). A match
/// beside `continue` is let through, unlike there: kube-apiserver ignores `limit` for
/// `resourceVersion=0` and so never gives such a list a continue token, which this server
/// does, and the kube crate's watcher sends all three on its next page.
fn list_resource_version(
    q: &HashMap<String, String>,
) -> ApiResult<Option<(Revision, Option<RvMatch>)>> {
    let given = q.get("resourceVersion").map(String::as_str).unwrap_or("");
    let forbidden =
        |why: &str| ApiError::invalid_list_options(Cause::forbidden("resourceVersionMatch", why));
    let matching = match q.get("resourceVersionMatch").map(String::as_str) {
        None | Some("") => None,
        Some(_) if given.is_empty() => {
            return Err(forbidden(
                "resourceVersionMatch is forbidden unless resourceVersion is provided",
            ));
        }
        Some("Exact") if given == "0" => {
            return Err(forbidden(
                "resourceVersionMatch \"exact\" is forbidden for resourceVersion \"0\"",
            ));
        }
        Some("Exact") => Some(RvMatch::Exact),
        Some("NotOlderThan") => Some(RvMatch::NotOlderThan),
        Some(other) => {
            return Err(ApiError::invalid_list_options(Cause::not_supported(
                "resourceVersionMatch",
                other,
                &["Exact", "NotOlderThan"],
            )));
        }
    };
    Ok(parse_rv(q)?.map(|rv| (rv, matching)))
}

/// How long a read waits for a revision the store has not reached yet (kube-apiserver's 3 s).
const REVISION_WAIT: std::time::Duration = std::time::Duration::from_secs(3);

/// Waits until the store has reached `rv`; 504 "Too large resource version" after
/// [`REVISION_WAIT`], as kube-apiserver answers.
async fn wait_for_revision(api: &Api, rv: Revision) -> ApiResult<()> {
    let deadline = tokio::time::Instant::now() + REVISION_WAIT;
    loop {
        let current = api.store().current_revision();
        if current >= rv {
            return Ok(());
        }
        if tokio::time::Instant::now() >= deadline {
            return Err(ApiError::resource_version_too_large(rv, current));
        }
        tokio::time::sleep(std::time::Duration::from_millis(10)).await;
    }
}

fn parse_rv(q: &HashMap<String, String>) -> ApiResult<Option<Revision>> {
    match q.get("resourceVersion").map(String::as_str) {
        None | Some("") | Some("0") => Ok(None),
        Some(s) => s.parse().map(Some).map_err(|_| {
            ApiError::bad_request(format!(
                "resourceVersion: Invalid value: \"{s}\": must be a number"
            ))
        }),
    }
}

/// A watch of `view`'s objects, stored as `res`'s (the same resource but for [`events_v1`]).
#[allow(clippy::too_many_arguments)]
async fn watch(
    state: &HttpState,
    res: &'static ResourceInfo,
    view: &'static ResourceInfo,
    ns: Option<&str>,
    name: Option<&str>,
    q: &HashMap<String, String>,
    headers: &HeaderMap,
) -> ApiResult<Response> {
    let api = state.api.clone();
    let mut params = list_params(view, q)?;
    if let Some(name) = name {
        // A watch on one object is a watch with a name field selector.
        params.field_selector = Some(
            FieldSelector::parse(res.kind, &format!("metadata.name={name}"))
                .map_err(|e| ApiError::bad_request(e.to_string()))?,
        );
    }
    let converted = events_v1::is_view(view);
    let from = parse_rv(q)?;
    let send_initial = q.get("sendInitialEvents").is_some_and(|v| v == "true") || from.is_none();
    let bookmarks = q.get("allowWatchBookmarks").is_some_and(|v| v == "true");
    let timeout = q
        .get("timeoutSeconds")
        .and_then(|t| t.parse::<u64>().ok())
        .map(Duration::from_secs)
        .unwrap_or(Duration::from_secs(1800));
    let table_opts = table_options(headers, q);

    // Initial state: a consistent list, then the watch from its revision.
    let (initial, start) = if send_initial && from.is_none() {
        let (items, rev, _) = api
            .list(
                res,
                ns,
                &ListParams {
                    limit: 0,
                    continue_token: None,
                    ..params.clone()
                },
            )
            .await?;
        let items = if table_opts.is_some() {
            items
        } else {
            in_view(view, items)?
        };
        (items, rev)
    } else {
        (
            Vec::new(),
            from.unwrap_or_else(|| api.store().current_revision()),
        )
    };
    let initial_end_bookmark = q.get("sendInitialEvents").is_some_and(|v| v == "true");
    let (tx, rx) = tokio::sync::mpsc::channel::<Result<Bytes, std::convert::Infallible>>(256);
    let stream_result = api.watch(res, ns, start);
    let shutdown = state.shutdown.clone();
    let ns_owned = ns.map(String::from);
    tokio::spawn(async move {
        let mut headers_sent = false;
        let mut render = |obj: Value| -> Value {
            match &table_opts {
                Some(opts) => {
                    let opts = TableOptions {
                        no_headers: headers_sent,
                        ..opts.clone()
                    };
                    headers_sent = true;
                    let rv = obj["metadata"]["resourceVersion"].clone();
                    let mut t =
                        table::table(res, std::slice::from_ref(&obj), &opts, chrono::Utc::now());
                    t["metadata"]["resourceVersion"] = rv;
                    t
                }
                None => obj,
            }
        };
        let mut stream = match stream_result {
            Ok(s) => s,
            Err(e) => {
                let _ = tx.send(Ok(watch_event("ERROR", e.to_status()))).await;
                return;
            }
        };
        for obj in initial {
            if tx
                .send(Ok(watch_event("ADDED", render(obj))))
                .await
                .is_err()
            {
                return;
            }
        }
        let bookmark = |rev: Revision, end: bool| {
            let mut meta = json!({"resourceVersion": rev.to_string()});
            if end {
                meta["annotations"] = json!({"k8s.io/initial-events-end": "true"});
            }
            watch_event(
                "BOOKMARK",
                json!({"kind": view.kind, "apiVersion": view.api_version(), "metadata": meta}),
            )
        };
        if initial_end_bookmark && tx.send(Ok(bookmark(start, true))).await.is_err() {
            return;
        }
        let _ = ns_owned;
        let matches = params.bytes_matcher();
        let mut last = start;
        let deadline = tokio::time::Instant::now() + timeout;
        let mut tick = tokio::time::interval(Duration::from_secs(60));
        tick.tick().await;
        loop {
            let event = tokio::select! {
                e = stream.next() => e,
                _ = tokio::time::sleep_until(deadline) => break,
                _ = tick.tick() => {
                    if bookmarks && tx.send(Ok(bookmark(last, false))).await.is_err() {
                        return;
                    }
                    continue;
                }
                _ = tx.closed() => return,
                _ = shutdown.cancelled() => break,
            };
            let event = match event {
                None => break,
                Some(Err(e)) => {
                    let err = ApiError::expired(format!("watch fell behind: {e}"));
                    let _ = tx.send(Ok(watch_event("ERROR", err.to_status()))).await;
                    break;
                }
                Some(Ok(e)) => e,
            };
            last = event.revision;
            // A selector is matched on the fields it reads (the previous version too: an
            // object can move in or out of it); a JSON watch sends the stored bytes as they
            // are, with the resourceVersion written in; only a table needs the whole object.
            let now_matches = matches(&event.value);
            let was_matching = event.prev.as_deref().is_some_and(&matches);
            let ty = match event.event_type {
                EventType::Added if now_matches => "ADDED",
                EventType::Modified if now_matches && was_matching => "MODIFIED",
                EventType::Modified if now_matches => "ADDED",
                EventType::Modified if was_matching => "DELETED",
                EventType::Deleted if now_matches => "DELETED",
                _ => continue,
            };
            let line = if table_opts.is_some() {
                watch_event(
                    ty,
                    render(objects::from_bytes(&event.value, event.revision)),
                )
            } else if converted {
                match events_v1::served_bytes(&event.value, event.revision) {
                    Ok(json) => raw_watch_event(ty, &json),
                    Err(e) => watch_event("ERROR", e.to_status()),
                }
            } else {
                raw_watch_event(ty, &objects::served_json(&event.value, event.revision))
            };
            if tx.send(Ok(line)).await.is_err() {
                return;
            }
        }
    });
    let body = Body::from_stream(tokio_stream::wrappers::ReceiverStream::new(rx));
    let mut r = Response::new(body);
    r.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/json"),
    );
    r.headers_mut().insert(
        header::CACHE_CONTROL,
        HeaderValue::from_static("no-cache, private"),
    );
    Ok(r)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Sends one request through the router; returns the status and the JSON body.
    async fn send(router: &Router, method: Method, uri: &str) -> (StatusCode, Value) {
        use http_body_util::BodyExt;
        use tower::Service;
        let req = Request::builder()
            .method(method)
            .uri(uri)
            .body(Body::empty())
            .unwrap();
        let r = router.clone().call(req).await.unwrap();
        let status = r.status();
        let bytes = r.into_body().collect().await.unwrap().to_bytes();
        (
            status,
            serde_json::from_slice(&bytes).unwrap_or(Value::Null),
        )
    }

    /// The router over `api`, as the server builds it.
    fn test_router(api: Api) -> Router {
        router(HttpState {
            api,
            shutdown: CancellationToken::new(),
            metrics_scraper: Default::default(),
        })
    }

    #[tokio::test]
    async fn node_proxy_and_resource_metrics_are_routed_with_kubernetes_errors() {
        let (api, _dir) = super::super::fake_agent::api().await;
        let router = test_router(api);
        let metrics = "/apis/metrics.k8s.io/v1beta1";

        let (code, doc) = send(&router, Method::GET, &format!("{metrics}/nodes")).await;
        assert_eq!(code, StatusCode::OK);
        assert_eq!(
            doc,
            json!({"kind": "NodeMetricsList", "apiVersion": "metrics.k8s.io/v1beta1", "metadata": {}, "items": []})
        );
        let (code, doc) = send(&router, Method::GET, metrics).await;
        assert_eq!(
            (code, doc["kind"].as_str()),
            (StatusCode::OK, Some("APIResourceList"))
        );
        let (code, doc) = send(&router, Method::GET, &format!("{metrics}/pods/x")).await;
        assert_eq!(
            (code, doc["reason"].as_str()),
            (StatusCode::NOT_FOUND, Some("NotFound"))
        );
        let (code, doc) = send(
            &router,
            Method::GET,
            &format!("{metrics}/namespaces/default/pods/x"),
        )
        .await;
        assert_eq!(code, StatusCode::NOT_FOUND);
        assert_eq!(
            doc["message"],
            "podmetrics.metrics.k8s.io \"default/x\" not found"
        );
        let (code, doc) = send(&router, Method::DELETE, &format!("{metrics}/nodes/n1")).await;
        assert_eq!(
            (code, doc["reason"].as_str()),
            (StatusCode::METHOD_NOT_ALLOWED, Some("MethodNotAllowed"))
        );
        let (code, _) = send(&router, Method::GET, &format!("{metrics}/nodes?watch=true")).await;
        assert_eq!(code, StatusCode::METHOD_NOT_ALLOWED);
        let (code, doc) = send(
            &router,
            Method::GET,
            &format!("{metrics}/namespaces/default/pods?labelSelector=a%20in%20b"),
        )
        .await;
        assert_eq!(
            (code, doc["reason"].as_str()),
            (StatusCode::BAD_REQUEST, Some("BadRequest"))
        );

        let (code, doc) = send(&router, Method::GET, "/api/v1/nodes/x/proxy/healthz").await;
        assert_eq!(code, StatusCode::NOT_FOUND);
        assert_eq!(doc["message"], "nodes \"x\" not found");
        assert_eq!(doc["details"]["kind"], "nodes");
        let (code, doc) = send(&router, Method::DELETE, "/api/v1/nodes/x/proxy/healthz").await;
        assert_eq!(
            (code, doc["reason"].as_str()),
            (StatusCode::METHOD_NOT_ALLOWED, Some("MethodNotAllowed"))
        );
    }

    #[tokio::test]
    async fn version_answers_with_and_without_a_trailing_slash_as_the_clients_ask() {
        let (api, _dir) = super::super::fake_agent::api().await;
        let router = test_router(api);
        for path in ["/version", "/version/"] {
            let (code, doc) = send(&router, Method::GET, path).await;
            assert_eq!(
                (code, doc["major"].as_str()),
                (StatusCode::OK, Some("1")),
                "{path}"
            );
        }
    }

    #[tokio::test]
    async fn a_lists_resource_version_and_match_are_honoured_or_refused_as_kubernetes_does() {
        let (api, _dir) = super::super::fake_agent::api().await;
        let router = test_router(api.clone());
        let list = |q: String| {
            let router = router.clone();
            async move { send(&router, Method::GET, &format!("/api/v1/namespaces?{q}")).await }
        };
        for (q, why) in [
            (
                "resourceVersionMatch=Exact",
                "forbidden unless resourceVersion is provided",
            ),
            (
                "resourceVersion=0&resourceVersionMatch=Exact",
                "forbidden for resourceVersion \"0\"",
            ),
            (
                "resourceVersion=1&resourceVersionMatch=Newest",
                "Unsupported value: \"Newest\"",
            ),
        ] {
            let (code, status) = list(q.into()).await;
            assert_eq!(code, StatusCode::UNPROCESSABLE_ENTITY, "{q}");
            assert_eq!(
                status["details"]["causes"][0]["field"],
                "resourceVersionMatch"
            );
            assert!(
                status["message"].as_str().unwrap().contains(why),
                "{q}: {status}"
            );
        }
        let current = api.store().current_revision();
        let (code, doc) = list(format!(
            "resourceVersion={current}&resourceVersionMatch=Exact"
        ))
        .await;
        assert_eq!(code, StatusCode::OK);
        assert_eq!(doc["metadata"]["resourceVersion"], current.to_string());
        let (code, _) = list(format!(
            "resourceVersion={current}&resourceVersionMatch=NotOlderThan"
        ))
        .await;
        assert_eq!(code, StatusCode::OK);
        // After one more write, the older revision is still listed exactly, as it was.
        super::super::fake_agent::create(
            &api,
            json!({"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": "later"}}),
        )
        .await;
        let names = |doc: &Value| -> Vec<String> {
            doc["items"]
                .as_array()
                .unwrap()
                .iter()
                .map(|i| i["metadata"]["name"].as_str().unwrap().to_string())
                .collect()
        };
        let (code, then) = list(format!(
            "resourceVersion={current}&resourceVersionMatch=Exact"
        ))
        .await;
        assert_eq!(code, StatusCode::OK, "{then}");
        assert_eq!(then["metadata"]["resourceVersion"], current.to_string());
        assert!(!names(&then).contains(&"later".to_string()), "{then}");
        let (_, now) = list(format!("resourceVersion={current}")).await;
        assert!(names(&now).contains(&"later".to_string()), "{now}");
        // A revision the store has not reached: kube-apiserver waits 3 s, then says so.
        let ahead = api.store().current_revision() + 100;
        let started = std::time::Instant::now();
        let (code, status) = list(format!("resourceVersion={ahead}")).await;
        assert_eq!(code, StatusCode::GATEWAY_TIMEOUT, "{status}");
        assert_eq!(
            status["details"]["causes"][0]["reason"],
            "ResourceVersionTooLarge"
        );
        assert!(started.elapsed() >= REVISION_WAIT);
    }

    #[tokio::test]
    async fn pods_ephemeralcontainers_is_read_and_patched_as_kubectl_debug_does() {
        use http_body_util::BodyExt;
        use tower::Service;
        let (api, _dir) = super::super::fake_agent::api().await;
        super::super::fake_agent::create(
            &api,
            json!({"apiVersion": "v1", "kind": "Pod", "metadata": {"name": "web"},
                "spec": {"containers": [{"name": "app", "image": "nginx"}]}}),
        )
        .await;
        let router = test_router(api);
        let call = |method: Method, uri: &str, ct: &str, body: Value| {
            let req = Request::builder()
                .method(method)
                .uri(uri)
                .header(header::CONTENT_TYPE, ct)
                .body(Body::from(body.to_string()))
                .unwrap();
            let router = router.clone();
            async move {
                let r = router.clone().call(req).await.unwrap();
                let code = r.status();
                let bytes = r.into_body().collect().await.unwrap().to_bytes();
                (
                    code,
                    serde_json::from_slice::<Value>(&bytes).unwrap_or(Value::Null),
                )
            }
        };
        let path = "/api/v1/namespaces/default/pods/web/ephemeralcontainers";
        let (code, pod) = send(&router, Method::GET, path).await;
        assert_eq!((code, pod["kind"].as_str()), (StatusCode::OK, Some("Pod")));
        let debugger = json!({"spec": {"ephemeralContainers": [
            {"name": "debugger", "image": "busybox", "targetContainerName": "app"}]}});
        let smp = "application/strategic-merge-patch+json";
        let dry_run = format!("{path}?dryRun=All");
        let (code, _) = call(Method::PATCH, &dry_run, smp, debugger.clone()).await;
        assert_eq!(code, StatusCode::OK);
        let (_, unchanged) = send(&router, Method::GET, path).await;
        assert!(unchanged["spec"]["ephemeralContainers"].is_null());
        let (code, pod) = call(Method::PATCH, path, smp, debugger.clone()).await;
        assert_eq!(
            (code, pod["spec"]["ephemeralContainers"][0]["name"].as_str()),
            (StatusCode::OK, Some("debugger"))
        );
        let (code, status) = call(
            Method::PATCH,
            path,
            "application/apply-patch+yaml",
            debugger.clone(),
        )
        .await;
        assert_eq!(
            (code, status["reason"].as_str()),
            (
                StatusCode::UNSUPPORTED_MEDIA_TYPE,
                Some("UnsupportedMediaType")
            )
        );
        let (code, _) = call(Method::PUT, path, "application/json", pod).await;
        assert_eq!(code, StatusCode::OK);
        // A PUT of the pod as read before the patch names a revision that is gone.
        let (code, _) = call(Method::PUT, path, "application/json", unchanged).await;
        assert_eq!(code, StatusCode::CONFLICT);
        // Only pods have it: a missing route is a 404 with empty details, as `kubectl debug`
        // reads it.
        let (code, status) = send(
            &router,
            Method::GET,
            "/api/v1/namespaces/default/configmaps/x/ephemeralcontainers",
        )
        .await;
        assert_eq!(
            (code, &status["details"]),
            (StatusCode::NOT_FOUND, &json!({}))
        );
    }

    #[test]
    fn query_strings_are_percent_decoded() {
        let q = url_decode_pairs("labelSelector=app%3Dweb%2Ctier+in+%28a%29&limit=5&watch");
        assert_eq!(q["labelSelector"], "app=web,tier in (a)");
        assert_eq!(q["limit"], "5");
        assert_eq!(q["watch"], "");
    }
}
