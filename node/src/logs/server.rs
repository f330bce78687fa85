//! The agent's HTTP endpoint (the kubelet port): `/containerLogs/...` for `kubectl logs` through
//! the API server, and `/healthz`.

use axum::Router;
use axum::body::Body;
use axum::extract::{Path, RawQuery, State};
use axum::http::{StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use serde_json::json;

use super::cri::LogOptions;
use super::store::{LogError, LogStore};

/// The agent's routes.
pub fn router(logs: LogStore) -> Router {
    Router::new()
        .route(
            "/containerLogs/{namespace}/{pod}/{container}",
            get(container_logs),
        )
        .route("/healthz", get(|| async { "ok" }))
        .with_state(logs)
}

async fn container_logs(
    State(logs): State<LogStore>,
    Path((namespace, pod, container)): Path<(String, String, String)>,
    RawQuery(query): RawQuery,
) -> Response {
    let options = match LogOptions::from_query(query.as_deref().unwrap_or("")) {
        Ok(o) => o,
        Err(e) => return status(StatusCode::BAD_REQUEST, "BadRequest", &e),
    };
    match logs.find(&namespace, &pod, &container, options.previous) {
        Ok(log) => Response::builder()
            .header(header::CONTENT_TYPE, "text/plain")
            .body(Body::from_stream(log.stream(options)))
            .unwrap_or_else(|_| StatusCode::INTERNAL_SERVER_ERROR.into_response()),
        Err(LogError::NotFound(m)) => status(StatusCode::NOT_FOUND, "NotFound", &m),
        Err(LogError::BadRequest(m)) => status(StatusCode::BAD_REQUEST, "BadRequest", &m),
    }
}

/// A Kubernetes `Status` error, which the API server passes on to kubectl as it is.
pub fn status(code: StatusCode, reason: &str, message: &str) -> Response {
    let body = json!({
        "kind": "Status", "apiVersion": "v1", "metadata": {},
        "status": "Failure", "message": message, "reason": reason, "code": code.as_u16(),
    });
    (
        code,
        [(header::CONTENT_TYPE, "application/json")],
        body.to_string(),
    )
        .into_response()
}
