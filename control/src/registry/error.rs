//! Registry errors and their mapping to the distribution spec's JSON error format.

use axum::Json;
use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use serde_json::json;

/// Everything the registry can refuse or fail at.
///
/// Each variant maps to one error code of the OCI distribution spec (see [`RegistryError::code`])
/// and one HTTP status; [`IntoResponse`] renders it as `{"errors":[{"code":..,"message":..}]}`.
#[derive(Debug, thiserror::Error)]
pub enum RegistryError {
    /// The repository name does not match the spec's name grammar.
    #[error("repository name {0:?} is invalid")]
    NameInvalid(String),
    /// The repository holds no manifest.
    #[error("repository {0} is not known to this registry")]
    NameUnknown(String),
    /// A tag does not match the spec's tag grammar.
    #[error("tag {0:?} is invalid")]
    TagInvalid(String),
    /// A digest is malformed, uses an unsupported algorithm, or does not match the content.
    #[error("digest {digest:?} is invalid: {reason}")]
    DigestInvalid {
        /// The digest as the client sent it.
        digest: String,
        /// Why it was refused.
        reason: String,
    },
    /// No blob with this digest is stored.
    #[error("blob {0} is not known to this registry")]
    BlobUnknown(String),
    /// The upload session does not exist (never started, finished, or cancelled).
    #[error("upload {0} is not known to this registry")]
    UploadUnknown(String),
    /// A chunk does not continue the upload where it stands.
    #[error("upload {id}: chunk starts at {got} but the upload holds {have} bytes")]
    RangeInvalid {
        /// The upload session.
        id: String,
        /// The chunk's first byte offset.
        got: u64,
        /// The bytes the session already holds.
        have: u64,
    },
    /// The request is malformed in a way the spec calls `BLOB_UPLOAD_INVALID`.
    #[error("upload {id} is invalid: {reason}")]
    UploadInvalid {
        /// The upload session, or the repository for a monolithic upload.
        id: String,
        /// Why it was refused.
        reason: String,
    },
    /// No manifest with this tag or digest in the repository.
    #[error("manifest {name}:{reference} is not known to this registry")]
    ManifestUnknown {
        /// The repository.
        name: String,
        /// The tag or digest asked for.
        reference: String,
    },
    /// The manifest is not valid JSON, too large, or of an unsupported shape.
    #[error("manifest for {name} is invalid: {reason}")]
    ManifestInvalid {
        /// The repository.
        name: String,
        /// Why it was refused.
        reason: String,
    },
    /// The manifest references a blob or child manifest that is not stored.
    #[error("manifest for {name} references unknown {digest}")]
    ManifestBlobUnknown {
        /// The repository.
        name: String,
        /// The missing digest.
        digest: String,
    },
    /// The route exists in the spec but not here, or the path is not a registry route.
    #[error("{0} is not supported by this registry")]
    Unsupported(String),
    /// Storage failed; nothing the client did wrong.
    #[error("registry storage: {0}")]
    Io(#[from] std::io::Error),
}

impl RegistryError {
    /// The distribution spec's error code for this error.
    pub fn code(&self) -> &'static str {
        match self {
            RegistryError::NameInvalid(_) => "NAME_INVALID",
            RegistryError::NameUnknown(_) => "NAME_UNKNOWN",
            RegistryError::TagInvalid(_) => "TAG_INVALID",
            RegistryError::DigestInvalid { .. } => "DIGEST_INVALID",
            RegistryError::BlobUnknown(_) => "BLOB_UNKNOWN",
            RegistryError::UploadUnknown(_) => "BLOB_UPLOAD_UNKNOWN",
            RegistryError::RangeInvalid { .. } | RegistryError::UploadInvalid { .. } => {
                "BLOB_UPLOAD_INVALID"
            }
            RegistryError::ManifestUnknown { .. } => "MANIFEST_UNKNOWN",
            RegistryError::ManifestInvalid { .. } => "MANIFEST_INVALID",
            RegistryError::ManifestBlobUnknown { .. } => "MANIFEST_BLOB_UNKNOWN",
            RegistryError::Unsupported(_) => "UNSUPPORTED",
            RegistryError::Io(_) => "UNKNOWN",
        }
    }

    /// The HTTP status the spec prescribes for this error.
    pub fn status(&self) -> StatusCode {
        match self {
            RegistryError::NameInvalid(_)
            | RegistryError::TagInvalid(_)
            | RegistryError::DigestInvalid { .. }
            | RegistryError::UploadInvalid { .. }
            | RegistryError::ManifestInvalid { .. }
            | RegistryError::ManifestBlobUnknown { .. } => StatusCode::BAD_REQUEST,
            RegistryError::NameUnknown(_)
            | RegistryError::BlobUnknown(_)
            | RegistryError::UploadUnknown(_)
            | RegistryError::ManifestUnknown { .. } => StatusCode::NOT_FOUND,
            RegistryError::RangeInvalid { .. } => StatusCode::RANGE_NOT_SATISFIABLE,
            RegistryError::Unsupported(_) => StatusCode::NOT_FOUND,
            RegistryError::Io(_) => StatusCode::INTERNAL_SERVER_ERROR,
        }
    }
}

impl IntoResponse for RegistryError {
    fn into_response(self) -> Response {
        if matches!(self, RegistryError::Io(_)) {
            tracing::error!(error = %self, "registry storage failed");
        }
        let body = json!({
            "errors": [{ "code": self.code(), "message": self.to_string(), "detail": null }]
        });
        let mut response = (self.status(), Json(body)).into_response();
        response.headers_mut().insert(
            "Docker-Distribution-API-Version",
            HeaderValue::from_static("registry/2.0"),
        );
        response.headers_mut().insert(
            header::CONTENT_TYPE,
            HeaderValue::from_static("application/json"),
        );
        response
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_error_maps_to_a_spec_code_and_status() {
        let cases = [
            (RegistryError::NameInvalid("A".into()), "NAME_INVALID", 400),
            (RegistryError::NameUnknown("a".into()), "NAME_UNKNOWN", 404),
            (
                RegistryError::BlobUnknown("sha256:x".into()),
                "BLOB_UNKNOWN",
                404,
            ),
            (
                RegistryError::UploadUnknown("u".into()),
                "BLOB_UPLOAD_UNKNOWN",
                404,
            ),
            (
                RegistryError::DigestInvalid {
                    digest: "x".into(),
                    reason: "r".into(),
                },
                "DIGEST_INVALID",
                400,
            ),
            (
                RegistryError::RangeInvalid {
                    id: "u".into(),
                    got: 5,
                    have: 0,
                },
                "BLOB_UPLOAD_INVALID",
                416,
            ),
            (
                RegistryError::ManifestUnknown {
                    name: "a".into(),
                    reference: "v1".into(),
                },
                "MANIFEST_UNKNOWN",
                404,
            ),
            (
                RegistryError::ManifestBlobUnknown {
                    name: "a".into(),
                    digest: "d".into(),
                },
                "MANIFEST_BLOB_UNKNOWN",
                400,
            ),
        ];
        for (error, code, status) in cases {
            assert_eq!(error.code(), code, "{error}");
            assert_eq!(error.status().as_u16(), status, "{error}");
        }
    }
}
