//! Blob reads: `HEAD`, `GET` (whole or one byte range) and `DELETE /v2/<name>/blobs/<digest>`.
//!
//! Blobs are stored once per registry, not per repository, so every repository sees every blob
//! (which is also what makes cross-repository mounts free).

use axum::body::Body;
use axum::http::{HeaderMap, Method, StatusCode, header};
use axum::response::{IntoResponse, Response};
use futures::StreamExt;
use tokio::io::{AsyncReadExt, AsyncSeekExt};

use super::digest::Digest;
use super::uploads::insert;
use super::{Registry, RegistryError};

/// Size of the reads that feed a blob download.
const READ_CHUNK: usize = 256 * 1024;

/// `HEAD` or `GET` of a blob.
pub(crate) async fn get(
    registry: &Registry,
    method: &Method,
    digest: &str,
    headers: &HeaderMap,
) -> Result<Response, RegistryError> {
    let digest = Digest::parse(digest)?;
    let path = registry.inner.storage.blob_path(&digest);
    let mut file = match tokio::fs::File::open(&path).await {
        Ok(file) => file,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            return Err(RegistryError::BlobUnknown(digest.to_string()));
        }
        Err(e) => return Err(e.into()),
    };
    let size = file.metadata().await?.len();
    let range = match headers.get(header::RANGE).and_then(|v| v.to_str().ok()) {
        Some(value) => match parse_range(value, size) {
            Some(range) => Some(range),
            None => {
                let mut response = StatusCode::RANGE_NOT_SATISFIABLE.into_response();
                insert(
                    response.headers_mut(),
                    "content-range",
                    &format!("bytes */{size}"),
                );
                return Ok(response);
            }
        },
        None => None,
    };
    let (status, start, len) = match range {
        Some((start, end)) => (StatusCode::PARTIAL_CONTENT, start, end - start + 1),
        None => (StatusCode::OK, 0, size),
    };
    let body = if method == Method::HEAD {
        Body::empty()
    } else {
        if start > 0 {
            file.seek(std::io::SeekFrom::Start(start)).await?;
        }
        Body::from_stream(read_stream(file.take(len)))
    };
    let mut response = (status, body).into_response();
    let headers = response.headers_mut();
    insert(headers, "content-length", &len.to_string());
    insert(headers, "content-type", "application/octet-stream");
    insert(headers, "docker-content-digest", &digest.to_string());
    insert(headers, "accept-ranges", "bytes");
    if range.is_some() {
        let end = start + len - 1;
        insert(
            headers,
            "content-range",
            &format!("bytes {start}-{end}/{size}"),
        );
    }
    Ok(response)
}

/// `DELETE` of a blob. Manifests that reference it become unpullable; that is the client's call.
pub(crate) async fn delete(registry: &Registry, digest: &str) -> Result<Response, RegistryError> {
    let digest = Digest::parse(digest)?;
    if registry.inner.storage.delete_blob(&digest).await? {
        Ok(StatusCode::ACCEPTED.into_response())
    } else {
        Err(RegistryError::BlobUnknown(digest.to_string()))
    }
}

/// Streams a file in fixed-size reads.
fn read_stream(
    reader: impl tokio::io::AsyncRead + Unpin + Send + 'static,
) -> impl futures::Stream<Item = std::io::Result<bytes::Bytes>> + Send + 'static {
    futures::stream::unfold(Some(reader), |reader| async move {
        let mut reader = reader?;
        let mut buf = vec![0u8; READ_CHUNK];
        match reader.read(&mut buf).await {
            Ok(0) => None,
            Ok(n) => {
                buf.truncate(n);
                Some((Ok(bytes::Bytes::from(buf)), Some(reader)))
            }
            Err(e) => Some((Err(e), None)),
        }
    })
    .boxed()
}

/// Parses a single `bytes=start-end` / `bytes=start-` / `bytes=-suffix` range into inclusive
/// bounds within `size`; `None` when it cannot be satisfied.
fn parse_range(value: &str, size: u64) -> Option<(u64, u64)> {
    let spec = value.trim().strip_prefix("bytes=")?;
    if spec.contains(',') || size == 0 {
        return None;
    }
    let (start, end) = spec.split_once('-')?;
    let (start, end) = match (start.trim(), end.trim()) {
        ("", suffix) => {
            let suffix: u64 = suffix.parse().ok()?;
            (size.saturating_sub(suffix), size - 1)
        }
        (start, "") => (start.parse().ok()?, size - 1),
        (start, end) => (start.parse().ok()?, end.parse::<u64>().ok()?.min(size - 1)),
    };
    (start <= end && start < size).then_some((start, end))
}

#[cfg(test)]
mod tests {
    use super::parse_range;

    #[test]
    fn ranges_resolve_within_the_blob() {
        let cases = [
            ("bytes=0-9", Some((0, 9))),
            ("bytes=5-", Some((5, 99))),
            ("bytes=-10", Some((90, 99))),
            ("bytes=90-500", Some((90, 99))),
            ("bytes=100-", None),
            ("bytes=9-5", None),
            ("bytes=0-1,5-6", None),
            ("items=0-1", None),
        ];
        for (value, want) in cases {
            assert_eq!(parse_range(value, 100), want, "{value}");
        }
    }
}
