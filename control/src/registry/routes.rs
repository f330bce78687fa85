//! Routing of `/v2/...` requests.
//!
//! Repository names contain slashes (`library/busybox`), so axum's path parameters cannot split
//! them; every `/v2/` path goes to one handler that reads the route from the path's tail, the
//! way the distribution project's own router does.

use std::collections::HashMap;

use axum::Router;
use axum::body::Body;
use axum::extract::{Query, Request, State};
use axum::http::{HeaderValue, Method, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::{any, get};

use super::manifests::paginate;
use super::names::validate_name;
use super::{Registry, RegistryError, blobs, manifests, uploads};

/// The registry's routes, all under `/v2`, ready to be merged into the API server's router.
///
/// The router carries its own state, so it merges into a router of any state type `S`.
pub fn router<S>(registry: Registry) -> Router<S>
where
    S: Clone + Send + Sync + 'static,
{
    Router::new()
        .route("/v2", get(base))
        .route("/v2/", get(base))
        .route("/v2/{*path}", any(dispatch))
        .with_state(registry)
}

/// Serves the registry alone on `listener` until the task is dropped (tests, and a registry
/// without an API server).
pub async fn serve(listener: tokio::net::TcpListener, registry: Registry) -> std::io::Result<()> {
    axum::serve(listener, router::<()>(registry)).await
}

/// `GET /v2/`: tells clients this is a distribution API.
async fn base() -> Response {
    with_api_version(axum::Json(serde_json::json!({})).into_response())
}

/// What a `/v2/<path>` names.
#[derive(Debug, PartialEq, Eq)]
enum Route<'a> {
    Catalog,
    Tags { name: &'a str },
    Manifest { name: &'a str, reference: &'a str },
    Blob { name: &'a str, digest: &'a str },
    Uploads { name: &'a str },
    Upload { name: &'a str, id: &'a str },
}

/// Splits the part of the path after `/v2/` into a route, reading the route's fixed words from
/// the end so that the name keeps its slashes.
fn parse_route(path: &str) -> Option<Route<'_>> {
    if path == "_catalog" {
        return Some(Route::Catalog);
    }
    let trimmed = path.strip_suffix('/').unwrap_or(path);
    if let Some(name) = trimmed.strip_suffix("/tags/list") {
        return Some(Route::Tags { name });
    }
    if let Some(name) = trimmed.strip_suffix("/blobs/uploads") {
        return Some(Route::Uploads { name });
    }
    let (head, last) = trimmed.rsplit_once('/')?;
    let (name, kind) = head.rsplit_once('/')?;
    match kind {
        "manifests" => Some(Route::Manifest {
            name,
            reference: last,
        }),
        "blobs" => Some(Route::Blob { name, digest: last }),
        "uploads" => {
            let name = name.strip_suffix("/blobs")?;
            Some(Route::Upload { name, id: last })
        }
        _ => None,
    }
}

async fn dispatch(
    State(registry): State<Registry>,
    Query(query): Query<HashMap<String, String>>,
    request: Request,
) -> Response {
    let response = match handle(&registry, &query, request).await {
        Ok(response) => response,
        Err(e) => e.into_response(),
    };
    with_api_version(response)
}

async fn handle(
    registry: &Registry,
    query: &HashMap<String, String>,
    request: Request,
) -> Result<Response, RegistryError> {
    let (parts, body): (_, Body) = request.into_parts();
    let path = parts.uri.path().strip_prefix("/v2/").unwrap_or_default();
    let unsupported =
        || RegistryError::Unsupported(format!("{} {}", parts.method, parts.uri.path()));
    let route = parse_route(path).ok_or_else(unsupported)?;
    if let Route::Tags { name }
    | Route::Manifest { name, .. }
    | Route::Blob { name, .. }
    | Route::Uploads { name }
    | Route::Upload { name, .. } = &route
    {
        validate_name(name)?;
    }
    let method = &parts.method;
    match (route, method.clone()) {
        (Route::Catalog, Method::GET) => {
            let names = registry.inner.storage.repositories().await?;
            let (page, more) = paginate(names, query);
            let mut response =
                axum::Json(serde_json::json!({ "repositories": page })).into_response();
            if let Some(last) = more {
                let n = query.get("n").map(String::as_str).unwrap_or_default();
                uploads::insert(
                    response.headers_mut(),
                    "link",
                    &format!("</v2/_catalog?n={n}&last={last}>; rel=\"next\""),
                );
            }
            Ok(response)
        }
        (Route::Tags { name }, Method::GET) => manifests::tags(registry, name, query).await,
        (Route::Manifest { name, reference }, Method::GET | Method::HEAD) => {
            manifests::get(registry, method, name, reference).await
        }
        (Route::Manifest { name, reference }, Method::PUT) => {
            manifests::put(registry, name, reference, &parts.headers, body).await
        }
        (Route::Manifest { name, reference }, Method::DELETE) => {
            manifests::delete(registry, name, reference).await
        }
        (Route::Blob { digest, .. }, Method::GET | Method::HEAD) => {
            blobs::get(registry, method, digest, &parts.headers).await
        }
        (Route::Blob { digest, .. }, Method::DELETE) => blobs::delete(registry, digest).await,
        (Route::Uploads { name }, Method::POST) => uploads::post(registry, name, query, body).await,
        (Route::Upload { name, id }, Method::PATCH) => {
            uploads::patch(registry, name, id, &parts.headers, body).await
        }
        (Route::Upload { name, id }, Method::PUT) => {
            uploads::put(registry, name, id, query, body).await
        }
        (Route::Upload { name, id }, Method::GET) => uploads::status(registry, name, id).await,
        (Route::Upload { name, id }, Method::DELETE) => uploads::delete(registry, name, id).await,
        _ => {
            let mut response = unsupported().into_response();
            *response.status_mut() = StatusCode::METHOD_NOT_ALLOWED;
            Ok(response)
        }
    }
}

fn with_api_version(mut response: Response) -> Response {
    response.headers_mut().insert(
        "docker-distribution-api-version",
        HeaderValue::from_static("registry/2.0"),
    );
    response
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn routes_keep_slashes_in_repository_names() {
        let d = "sha256:abc";
        let cases = [
            ("_catalog", Some(Route::Catalog)),
            ("a/b/tags/list", Some(Route::Tags { name: "a/b" })),
            (
                "a/manifests/v1",
                Some(Route::Manifest {
                    name: "a",
                    reference: "v1",
                }),
            ),
            (
                "x/blobs/y/manifests/v1",
                Some(Route::Manifest {
                    name: "x/blobs/y",
                    reference: "v1",
                }),
            ),
            (
                "a/b/blobs/sha256:abc",
                Some(Route::Blob {
                    name: "a/b",
                    digest: d,
                }),
            ),
            ("a/b/blobs/uploads/", Some(Route::Uploads { name: "a/b" })),
            ("a/b/blobs/uploads", Some(Route::Uploads { name: "a/b" })),
            (
                "a/b/blobs/uploads/123",
                Some(Route::Upload {
                    name: "a/b",
                    id: "123",
                }),
            ),
            ("a/uploads/123", None),
            ("a", None),
            ("a/b/c", None),
        ];
        for (path, want) in cases {
            assert_eq!(parse_route(path), want, "{path}");
        }
    }
}
