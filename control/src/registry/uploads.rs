//! Blob upload sessions: monolithic (`POST ?digest=`), chunked (`POST`, `PATCH`..., `PUT
//! ?digest=`) and cross-repository mounts.
//!
//! A session's bytes go to `uploads/<uuid>` while a running sha256 follows them, so finishing
//! an upload costs no second read. The digest the client names is checked before the file is
//! renamed under it; on a mismatch the file is deleted and nothing is stored.

use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use axum::body::Body;
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use futures::StreamExt;
use sha2::{Digest as _, Sha256};
use tokio::io::{AsyncWriteExt, BufWriter};

use super::digest::Digest;
use super::{Registry, RegistryError};

/// An upload session untouched for this long is abandoned: the next new session deletes it.
const ABANDONED_AFTER: Duration = Duration::from_secs(3600);

/// Buffer between the request body and the file: large enough that a big blob costs few
/// blocking writes, small enough to hold one per concurrent upload.
const WRITE_BUFFER: usize = 1 << 20;

/// The registry's open upload sessions, by id.
#[derive(Debug, Default)]
pub(crate) struct Sessions {
    // A std mutex: it only guards map lookups and is never held across an await.
    open: Mutex<HashMap<String, Session>>,
}

/// An open session: the repository it was opened under and its state.
#[derive(Debug)]
struct Session {
    name: String,
    upload: Arc<tokio::sync::Mutex<Upload>>,
    touched: Instant,
}

/// One upload in progress.
#[derive(Debug)]
pub(crate) struct Upload {
    path: PathBuf,
    file: Option<BufWriter<tokio::fs::File>>,
    hasher: Sha256,
    size: u64,
}

impl Sessions {
    fn insert(&self, id: String, name: &str, upload: Upload) {
        let session = Session {
            name: name.to_string(),
            upload: Arc::new(tokio::sync::Mutex::new(upload)),
            touched: Instant::now(),
        };
        self.lock().insert(id, session);
    }

    /// Drops sessions idle for [`ABANDONED_AFTER`] that no request is using; returns the paths
    /// of their files for the caller to delete.
    fn sweep(&self) -> Vec<PathBuf> {
        let mut sessions = self.lock();
        let mut abandoned = Vec::new();
        sessions.retain(|_, session| {
            if session.touched.elapsed() < ABANDONED_AFTER {
                return true;
            }
            match session.upload.try_lock() {
                Ok(upload) => {
                    abandoned.push(upload.path.clone());
                    false
                }
                Err(_) => true,
            }
        });
        abandoned
    }

    /// The session `id` if it exists and was opened under repository `name`.
    fn get(&self, name: &str, id: &str) -> Result<Arc<tokio::sync::Mutex<Upload>>, RegistryError> {
        match self.lock().get_mut(id) {
            Some(session) if session.name == name => {
                session.touched = Instant::now();
                Ok(session.upload.clone())
            }
            _ => Err(RegistryError::UploadUnknown(id.to_string())),
        }
    }

    fn remove(&self, id: &str) {
        self.lock().remove(id);
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<String, Session>> {
        self.open
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }
}

impl Registry {
    /// Opens an upload session for repository `name`; returns its id.
    pub(crate) async fn start_upload(&self, name: &str) -> Result<String, RegistryError> {
        for path in self.inner.uploads.sweep() {
            let _ = tokio::fs::remove_file(path).await;
        }
        let id = uuid::Uuid::new_v4().to_string();
        let path = self.inner.storage.upload_path(&id);
        let file = tokio::fs::File::create(&path).await?;
        self.inner.uploads.insert(
            id.clone(),
            name,
            Upload {
                path,
                file: Some(BufWriter::with_capacity(WRITE_BUFFER, file)),
                hasher: Sha256::new(),
                size: 0,
            },
        );
        Ok(id)
    }

    /// Appends a request body to a session. `start` is the first byte offset the client claims
    /// (from `Content-Range`), checked against what the session holds. Returns the new size.
    pub(crate) async fn append_upload(
        &self,
        name: &str,
        id: &str,
        start: Option<u64>,
        body: Body,
    ) -> Result<u64, RegistryError> {
        let session = self.inner.uploads.get(name, id)?;
        // A tokio mutex: the session is held while the body streams in, across awaits; two
        // PATCHes to one session must not interleave their bytes.
        let mut upload = session.lock().await;
        if let Some(start) = start
            && start != upload.size
        {
            return Err(RegistryError::RangeInvalid {
                id: id.to_string(),
                got: start,
                have: upload.size,
            });
        }
        let result = upload.write_body(body).await;
        if let Err(e) = result {
            // The session's bytes no longer match its hash state; it cannot continue.
            let path = upload.path.clone();
            drop(upload);
            self.inner.uploads.remove(id);
            let _ = tokio::fs::remove_file(path).await;
            return Err(RegistryError::UploadInvalid {
                id: id.to_string(),
                reason: e.to_string(),
            });
        }
        Ok(upload.size)
    }

    /// The number of bytes a session holds.
    pub(crate) async fn upload_size(&self, name: &str, id: &str) -> Result<u64, RegistryError> {
        let session = self.inner.uploads.get(name, id)?;
        let upload = session.lock().await;
        Ok(upload.size)
    }

    /// Appends a final body, checks the content against `digest`, and commits it as a blob.
    /// The session ends either way.
    pub(crate) async fn finish_upload(
        &self,
        name: &str,
        id: &str,
        digest: &Digest,
        body: Body,
    ) -> Result<(), RegistryError> {
        self.append_upload(name, id, None, body).await?;
        let session = self.inner.uploads.get(name, id)?;
        let mut upload = session.lock().await;
        self.inner.uploads.remove(id);
        let path = upload.path.clone();
        let result = upload.seal().await;
        let actual = Digest::from_hasher(std::mem::take(&mut upload.hasher));
        drop(upload);
        if let Err(e) = result {
            let _ = tokio::fs::remove_file(&path).await;
            return Err(e.into());
        }
        if &actual != digest {
            let _ = tokio::fs::remove_file(&path).await;
            return Err(RegistryError::DigestInvalid {
                digest: digest.to_string(),
                reason: format!("the uploaded content has digest {actual}"),
            });
        }
        self.inner.storage.commit_blob(path, digest).await?;
        Ok(())
    }

    /// Cancels a session and deletes its bytes.
    pub(crate) async fn cancel_upload(&self, name: &str, id: &str) -> Result<(), RegistryError> {
        let session = self.inner.uploads.get(name, id)?;
        let mut upload = session.lock().await;
        self.inner.uploads.remove(id);
        upload.file = None;
        let _ = tokio::fs::remove_file(&upload.path).await;
        Ok(())
    }
}

impl Upload {
    async fn write_body(&mut self, body: Body) -> std::io::Result<()> {
        let file = self
            .file
            .as_mut()
            .ok_or_else(|| std::io::Error::other("upload is already sealed"))?;
        let mut stream = body.into_data_stream();
        while let Some(chunk) = stream.next().await {
            let chunk = chunk.map_err(std::io::Error::other)?;
            self.hasher.update(&chunk);
            file.write_all(&chunk).await?;
            self.size += chunk.len() as u64;
        }
        Ok(())
    }

    /// Flushes and syncs the data so a commit after it is durable.
    async fn seal(&mut self) -> std::io::Result<()> {
        if let Some(mut file) = self.file.take() {
            file.flush().await?;
            file.into_inner().sync_all().await?;
        }
        Ok(())
    }
}

/// `POST /v2/<name>/blobs/uploads/`: monolithic upload, mount, or a new session.
pub(crate) async fn post(
    registry: &Registry,
    name: &str,
    query: &HashMap<String, String>,
    body: Body,
) -> Result<Response, RegistryError> {
    if let Some(mount) = query.get("mount") {
        let digest = Digest::parse(mount)?;
        // Blobs are shared by every repository, so a mount succeeds whenever the blob exists.
        if registry.inner.storage.blob_size(&digest).await?.is_some() {
            return Ok(blob_created(name, &digest));
        }
    } else if let Some(digest) = query.get("digest") {
        let digest = Digest::parse(digest)?;
        let id = registry.start_upload(name).await?;
        registry.finish_upload(name, &id, &digest, body).await?;
        return Ok(blob_created(name, &digest));
    }
    let id = registry.start_upload(name).await?;
    Ok(upload_accepted(StatusCode::ACCEPTED, name, &id, 0))
}

/// `PATCH /v2/<name>/blobs/uploads/<id>`: one chunk (or a streamed whole).
pub(crate) async fn patch(
    registry: &Registry,
    name: &str,
    id: &str,
    headers: &HeaderMap,
    body: Body,
) -> Result<Response, RegistryError> {
    let start = content_range_start(headers).map_err(|reason| RegistryError::UploadInvalid {
        id: id.to_string(),
        reason,
    })?;
    let size = registry.append_upload(name, id, start, body).await?;
    Ok(upload_accepted(StatusCode::ACCEPTED, name, id, size))
}

/// `PUT /v2/<name>/blobs/uploads/<id>?digest=`: the last chunk, if any, and the commit.
pub(crate) async fn put(
    registry: &Registry,
    name: &str,
    id: &str,
    query: &HashMap<String, String>,
    body: Body,
) -> Result<Response, RegistryError> {
    let digest = query
        .get("digest")
        .ok_or_else(|| RegistryError::DigestInvalid {
            digest: String::new(),
            reason: "the digest query parameter is required to finish an upload".into(),
        })?;
    let digest = match Digest::parse(digest) {
        Ok(digest) => digest,
        Err(e) => {
            let _ = registry.cancel_upload(name, id).await;
            return Err(e);
        }
    };
    registry.finish_upload(name, id, &digest, body).await?;
    Ok(blob_created(name, &digest))
}

/// `GET /v2/<name>/blobs/uploads/<id>`: how far the upload is.
pub(crate) async fn status(
    registry: &Registry,
    name: &str,
    id: &str,
) -> Result<Response, RegistryError> {
    let size = registry.upload_size(name, id).await?;
    Ok(upload_accepted(StatusCode::NO_CONTENT, name, id, size))
}

/// `DELETE /v2/<name>/blobs/uploads/<id>`.
pub(crate) async fn delete(
    registry: &Registry,
    name: &str,
    id: &str,
) -> Result<Response, RegistryError> {
    registry.cancel_upload(name, id).await?;
    Ok(StatusCode::NO_CONTENT.into_response())
}

/// Parses `Content-Range: <start>-<end>` (with or without a `bytes ` prefix).
fn content_range_start(headers: &HeaderMap) -> Result<Option<u64>, String> {
    let Some(value) = headers.get(header::CONTENT_RANGE) else {
        return Ok(None);
    };
    let text = value
        .to_str()
        .map_err(|_| "content-range is not text".to_string())?;
    let text = text
        .trim()
        .trim_start_matches("bytes")
        .trim_start_matches([' ', '=']);
    let (start, _end) = text
        .split_once('-')
        .ok_or_else(|| format!("content-range {text:?} is not start-end"))?;
    start
        .trim()
        .parse()
        .map(Some)
        .map_err(|_| format!("content-range {text:?} is not start-end"))
}

fn upload_accepted(status: StatusCode, name: &str, id: &str, size: u64) -> Response {
    let range = format!("0-{}", size.saturating_sub(1));
    let mut response = status.into_response();
    let headers = response.headers_mut();
    insert(
        headers,
        "location",
        &format!("/v2/{name}/blobs/uploads/{id}"),
    );
    insert(headers, "range", &range);
    insert(headers, "docker-upload-uuid", id);
    insert(headers, "content-length", "0");
    response
}

/// `201 Created` for a committed blob.
pub(crate) fn blob_created(name: &str, digest: &Digest) -> Response {
    let mut response = StatusCode::CREATED.into_response();
    let headers = response.headers_mut();
    insert(headers, "location", &format!("/v2/{name}/blobs/{digest}"));
    insert(headers, "docker-content-digest", &digest.to_string());
    insert(headers, "content-length", "0");
    response
}

/// Inserts a header whose value was built from validated names, ids and digests.
pub(crate) fn insert(headers: &mut HeaderMap, name: &'static str, value: &str) {
    if let Ok(value) = HeaderValue::from_str(value) {
        headers.insert(name, value);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn content_range_accepts_the_forms_clients_send() {
        let cases = [
            ("0-99", Some(0)),
            ("100-199", Some(100)),
            ("bytes 5-9", Some(5)),
            ("bytes=7-", Some(7)),
        ];
        for (value, want) in cases {
            let mut headers = HeaderMap::new();
            headers.insert(header::CONTENT_RANGE, HeaderValue::from_static(value));
            assert_eq!(content_range_start(&headers).unwrap(), want, "{value}");
        }
        let mut headers = HeaderMap::new();
        headers.insert(header::CONTENT_RANGE, HeaderValue::from_static("junk"));
        assert!(content_range_start(&headers).is_err());
        assert_eq!(content_range_start(&HeaderMap::new()).unwrap(), None);
    }
}
