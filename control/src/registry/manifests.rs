//! Manifests: `PUT`, `GET`, `HEAD`, `DELETE /v2/<name>/manifests/<tag|digest>` and the tag
//! list `GET /v2/<name>/tags/list`.
//!
//! A manifest is stored as a blob under its digest and linked into the repository with its
//! media type; a tag is a file holding a digest. A manifest is accepted only when everything it
//! references (config and layers, or the child manifests of an index) is already stored.

use std::collections::HashMap;

use axum::body::Body;
use axum::http::{HeaderMap, Method, StatusCode, header};
use axum::response::{IntoResponse, Response};
use futures::StreamExt;
use serde_json::Value;

use super::digest::Digest;
use super::names::validate_tag;
use super::uploads::insert;
use super::{Registry, RegistryError};

/// The largest manifest accepted (the distribution project's limit).
pub const MAX_MANIFEST_BYTES: usize = 4 << 20;

/// OCI image manifest.
pub const OCI_MANIFEST: &str = "application/vnd.oci.image.manifest.v1+json";
/// OCI image index.
pub const OCI_INDEX: &str = "application/vnd.oci.image.index.v1+json";
/// Docker image manifest, schema 2.
pub const DOCKER_MANIFEST: &str = "application/vnd.docker.distribution.manifest.v2+json";
/// Docker manifest list.
pub const DOCKER_MANIFEST_LIST: &str = "application/vnd.docker.distribution.manifest.list.v2+json";

/// A tag or a digest, as it appears in a manifest URL.
enum Reference {
    Tag(String),
    Digest(Digest),
}

impl Reference {
    fn parse(text: &str) -> Result<Reference, RegistryError> {
        if text.contains(':') {
            Digest::parse(text).map(Reference::Digest)
        } else {
            validate_tag(text)?;
            Ok(Reference::Tag(text.to_string()))
        }
    }
}

impl Registry {
    /// The digest a tag or digest reference names in repository `name`, if it holds it.
    async fn resolve(&self, name: &str, reference: &Reference) -> Result<Digest, RegistryError> {
        let unknown = |reference: &str| RegistryError::ManifestUnknown {
            name: name.to_string(),
            reference: reference.to_string(),
        };
        if !self.inner.storage.repository_exists(name).await {
            return Err(RegistryError::NameUnknown(name.to_string()));
        }
        match reference {
            Reference::Tag(tag) => self
                .inner
                .storage
                .resolve_tag(name, tag)
                .await?
                .ok_or_else(|| unknown(tag)),
            Reference::Digest(digest) => Ok(digest.clone()),
        }
    }
}

/// `PUT` of a manifest.
pub(crate) async fn put(
    registry: &Registry,
    name: &str,
    reference: &str,
    headers: &HeaderMap,
    body: Body,
) -> Result<Response, RegistryError> {
    let reference = Reference::parse(reference)?;
    let invalid = |reason: String| RegistryError::ManifestInvalid {
        name: name.to_string(),
        reason,
    };
    let content = read_limited(body, MAX_MANIFEST_BYTES)
        .await
        .map_err(invalid)?;
    let digest = Digest::of(&content);
    if let Reference::Digest(expected) = &reference
        && expected != &digest
    {
        return Err(RegistryError::DigestInvalid {
            digest: expected.to_string(),
            reason: format!("the manifest content has digest {digest}"),
        });
    }
    let json: Value =
        serde_json::from_slice(&content).map_err(|e| invalid(format!("not valid JSON: {e}")))?;
    let header_type = headers
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .map(|v| v.split(';').next().unwrap_or(v).trim().to_string());
    let media_type = media_type_of(&json, header_type.as_deref()).map_err(invalid)?;
    check_references(registry, name, &json, &media_type).await?;

    let stored = registry.inner.storage.write_blob(content.clone()).await?;
    debug_assert_eq!(stored, digest);
    registry
        .inner
        .storage
        .link_manifest(name, &digest, &media_type)
        .await?;
    if let Reference::Tag(tag) = &reference {
        registry.inner.storage.set_tag(name, tag, &digest).await?;
    }
    let mut response = StatusCode::CREATED.into_response();
    let headers = response.headers_mut();
    insert(
        headers,
        "location",
        &format!("/v2/{name}/manifests/{digest}"),
    );
    insert(headers, "docker-content-digest", &digest.to_string());
    insert(headers, "content-length", "0");
    if let Some(subject) = json.pointer("/subject/digest").and_then(Value::as_str) {
        insert(headers, "oci-subject", subject);
    }
    Ok(response)
}

/// `GET` or `HEAD` of a manifest.
pub(crate) async fn get(
    registry: &Registry,
    method: &Method,
    name: &str,
    reference: &str,
) -> Result<Response, RegistryError> {
    let parsed = Reference::parse(reference)?;
    let digest = registry.resolve(name, &parsed).await?;
    let unknown = || RegistryError::ManifestUnknown {
        name: name.to_string(),
        reference: reference.to_string(),
    };
    let media_type = registry
        .inner
        .storage
        .manifest_media_type(name, &digest)
        .await?
        .ok_or_else(unknown)?;
    let content = registry
        .inner
        .storage
        .read_blob(&digest)
        .await?
        .ok_or_else(unknown)?;
    let len = content.len();
    let body = if method == Method::HEAD {
        Body::empty()
    } else {
        Body::from(content)
    };
    let mut response = (StatusCode::OK, body).into_response();
    let headers = response.headers_mut();
    insert(headers, "content-type", &media_type);
    insert(headers, "content-length", &len.to_string());
    insert(headers, "docker-content-digest", &digest.to_string());
    Ok(response)
}

/// `DELETE` of a manifest (by digest: the manifest and its tags) or of a tag.
pub(crate) async fn delete(
    registry: &Registry,
    name: &str,
    reference: &str,
) -> Result<Response, RegistryError> {
    let parsed = Reference::parse(reference)?;
    if !registry.inner.storage.repository_exists(name).await {
        return Err(RegistryError::NameUnknown(name.to_string()));
    }
    let existed = match &parsed {
        Reference::Tag(tag) => registry.inner.storage.delete_tag(name, tag).await?,
        Reference::Digest(digest) => registry.inner.storage.unlink_manifest(name, digest).await?,
    };
    if existed {
        Ok(StatusCode::ACCEPTED.into_response())
    } else {
        Err(RegistryError::ManifestUnknown {
            name: name.to_string(),
            reference: reference.to_string(),
        })
    }
}

/// `GET /v2/<name>/tags/list[?n=&last=]`.
pub(crate) async fn tags(
    registry: &Registry,
    name: &str,
    query: &HashMap<String, String>,
) -> Result<Response, RegistryError> {
    let tags = registry
        .inner
        .storage
        .tags(name)
        .await?
        .ok_or_else(|| RegistryError::NameUnknown(name.to_string()))?;
    let (page, more) = paginate(tags, query);
    let mut response =
        axum::Json(serde_json::json!({ "name": name, "tags": page })).into_response();
    if let Some(last) = more {
        let n = query.get("n").map(String::as_str).unwrap_or_default();
        insert(
            response.headers_mut(),
            "link",
            &format!("</v2/{name}/tags/list?n={n}&last={last}>; rel=\"next\""),
        );
    }
    Ok(response)
}

/// Applies `last` (exclusive start) and `n` (page size) to a sorted list; returns the page and,
/// when more follow, the last entry of the page.
pub(crate) fn paginate(
    items: Vec<String>,
    query: &HashMap<String, String>,
) -> (Vec<String>, Option<String>) {
    let mut items: Vec<String> = match query.get("last") {
        Some(last) => items.into_iter().filter(|t| t > last).collect(),
        None => items,
    };
    match query.get("n").and_then(|n| n.parse::<usize>().ok()) {
        Some(n) if items.len() > n => {
            items.truncate(n);
            let last = items.last().cloned();
            (items, last)
        }
        _ => (items, None),
    }
}

/// The manifest's media type: the `Content-Type` the client sent when it is a manifest type,
/// else the body's `mediaType`, else the OCI type its shape implies. The two must agree when
/// both are given.
fn media_type_of(json: &Value, header: Option<&str>) -> Result<String, String> {
    if json.get("schemaVersion").and_then(Value::as_i64) != Some(2) {
        return Err("only schemaVersion 2 manifests are accepted".into());
    }
    let body_type = json.get("mediaType").and_then(Value::as_str);
    let header =
        header.filter(|h| !matches!(*h, "" | "application/json" | "application/octet-stream"));
    if let (Some(h), Some(b)) = (header, body_type)
        && h != b
    {
        return Err(format!("content-type {h} disagrees with mediaType {b}"));
    }
    if let Some(t) = header.or(body_type) {
        return Ok(t.to_string());
    }
    if json.get("manifests").is_some() {
        Ok(OCI_INDEX.to_string())
    } else if json.get("config").is_some() {
        Ok(OCI_MANIFEST.to_string())
    } else {
        Err("cannot tell the manifest's media type".into())
    }
}

/// Refuses a manifest whose config, layers or child manifests are not stored.
async fn check_references(
    registry: &Registry,
    name: &str,
    json: &Value,
    media_type: &str,
) -> Result<(), RegistryError> {
    let invalid = |reason: &str| RegistryError::ManifestInvalid {
        name: name.to_string(),
        reason: reason.to_string(),
    };
    let descriptor_digest = |d: &Value| -> Result<Digest, RegistryError> {
        let text = d
            .get("digest")
            .and_then(Value::as_str)
            .ok_or_else(|| invalid("a descriptor has no digest"))?;
        Digest::parse(text)
    };
    let is_index = media_type == OCI_INDEX
        || media_type == DOCKER_MANIFEST_LIST
        || (json.get("manifests").is_some() && json.get("layers").is_none());
    if is_index {
        let children = json
            .get("manifests")
            .and_then(Value::as_array)
            .ok_or_else(|| invalid("an index needs a manifests array"))?;
        for child in children {
            let digest = descriptor_digest(child)?;
            let linked = registry
                .inner
                .storage
                .manifest_media_type(name, &digest)
                .await?;
            if linked.is_none() {
                return Err(RegistryError::ManifestBlobUnknown {
                    name: name.to_string(),
                    digest: digest.to_string(),
                });
            }
        }
        return Ok(());
    }
    let mut descriptors = Vec::new();
    match json.get("config") {
        Some(config) => descriptors.push(config),
        None => return Err(invalid("an image manifest needs a config descriptor")),
    }
    if let Some(layers) = json.get("layers") {
        let layers = layers
            .as_array()
            .ok_or_else(|| invalid("layers must be an array"))?;
        // Foreign layers (with `urls`) live elsewhere by design.
        descriptors.extend(layers.iter().filter(|l| l.get("urls").is_none()));
    }
    for descriptor in descriptors {
        let digest = descriptor_digest(descriptor)?;
        if registry.inner.storage.blob_size(&digest).await?.is_none() {
            return Err(RegistryError::ManifestBlobUnknown {
                name: name.to_string(),
                digest: digest.to_string(),
            });
        }
    }
    Ok(())
}

/// Reads a body up to `limit` bytes.
async fn read_limited(body: Body, limit: usize) -> Result<Vec<u8>, String> {
    let mut stream = body.into_data_stream();
    let mut content = Vec::new();
    while let Some(chunk) = stream.next().await {
        let chunk = chunk.map_err(|e| format!("reading the body: {e}"))?;
        if content.len() + chunk.len() > limit {
            return Err(format!("larger than {limit} bytes"));
        }
        content.extend_from_slice(&chunk);
    }
    Ok(content)
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn media_type_comes_from_header_body_or_shape() {
        let manifest = json!({"schemaVersion": 2, "config": {}, "layers": []});
        let typed = json!({"schemaVersion": 2, "mediaType": OCI_INDEX, "manifests": []});
        let index = json!({"schemaVersion": 2, "manifests": []});
        assert_eq!(media_type_of(&manifest, None).unwrap(), OCI_MANIFEST);
        assert_eq!(
            media_type_of(&manifest, Some(DOCKER_MANIFEST)).unwrap(),
            DOCKER_MANIFEST
        );
        assert_eq!(
            media_type_of(&manifest, Some("application/json")).unwrap(),
            OCI_MANIFEST
        );
        assert_eq!(media_type_of(&typed, None).unwrap(), OCI_INDEX);
        assert_eq!(media_type_of(&index, None).unwrap(), OCI_INDEX);
        assert!(media_type_of(&typed, Some(OCI_MANIFEST)).is_err());
        assert!(media_type_of(&json!({"schemaVersion": 1}), None).is_err());
        assert!(media_type_of(&json!({"schemaVersion": 2}), None).is_err());
    }

    #[test]
    fn pagination_honours_last_and_n() {
        let tags: Vec<String> = ["a", "b", "c", "d"].iter().map(|s| s.to_string()).collect();
        let query = |pairs: &[(&str, &str)]| {
            pairs
                .iter()
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect::<HashMap<_, _>>()
        };
        assert_eq!(paginate(tags.clone(), &query(&[])).0.len(), 4);
        let (page, more) = paginate(tags.clone(), &query(&[("n", "2")]));
        assert_eq!(
            (page, more),
            (
                vec!["a".to_string(), "b".to_string()],
                Some("b".to_string())
            )
        );
        let (page, more) = paginate(tags, &query(&[("n", "2"), ("last", "b")]));
        assert_eq!((page, more), (vec!["c".to_string(), "d".to_string()], None));
    }
}
