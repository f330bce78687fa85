//! Image errors: one variant per cause a user must tell apart (`ErrImagePull` messages).

use oci_client::errors::{OciDistributionError, OciErrorCode};

/// Why an image could not be pulled, pushed or read from the cache.
///
/// Messages are lower-case and name the image, so the agent can show them verbatim in a
/// container's `ErrImagePull` / `ImagePullBackOff` reason.
#[derive(Debug, thiserror::Error)]
pub enum ImageError {
    /// The reference does not parse.
    #[error("image {reference:?}: invalid reference: {reason}")]
    InvalidReference {
        /// The reference as given.
        reference: String,
        /// Why it does not parse.
        reason: String,
    },
    /// The registry has no such repository or tag.
    #[error("image {image}: tag {tag:?} not found in the registry")]
    TagNotFound {
        /// The image.
        image: String,
        /// The tag asked for.
        tag: String,
    },
    /// The registry has no manifest with this digest.
    #[error("image {image}: manifest {digest} not found in the registry")]
    ManifestNotFound {
        /// The image.
        image: String,
        /// The digest asked for.
        digest: String,
    },
    /// `imagePullPolicy: Never` and the image is not in the node's cache.
    #[error("image {image}: not present on this node and the pull policy is Never")]
    NotPresent {
        /// The image.
        image: String,
    },
    /// The registry refused the credentials, or wants some and none were given.
    #[error("image {image}: registry {registry} refused access (authentication failed): {detail}")]
    Unauthorized {
        /// The image.
        image: String,
        /// The registry host.
        registry: String,
        /// What the registry said.
        detail: String,
    },
    /// The registry cannot be reached (connection refused, DNS, TLS, timeout).
    #[error("image {image}: registry {registry} is unreachable: {detail}")]
    Unreachable {
        /// The image.
        image: String,
        /// The registry host.
        registry: String,
        /// The transport error.
        detail: String,
    },
    /// Content does not hash to the digest that names it; nothing was stored.
    #[error("image {image}: digest mismatch for {expected}: content has {actual}")]
    DigestMismatch {
        /// The image.
        image: String,
        /// The digest the manifest (or reference) names.
        expected: String,
        /// The digest of what arrived.
        actual: String,
    },
    /// The manifest names a media type that is neither a known Wasm convention nor a container
    /// image.
    #[error(
        "image {image}: unknown media type {media_type:?}: not a wasm artifact or container image"
    )]
    UnknownMediaType {
        /// The image.
        image: String,
        /// The media type that was not understood.
        media_type: String,
    },
    /// An index holds no manifest for a platform this node runs.
    #[error("image {image}: no manifest for a platform this node runs (wasm, linux/{arch})")]
    NoMatchingPlatform {
        /// The image.
        image: String,
        /// This node's architecture.
        arch: String,
    },
    /// An OCI image's entrypoint names a `.wasm` file its layers do not contain.
    #[error("image {image}: the entrypoint {path} is not a file in the image's layers")]
    WasmNotInRootfs {
        /// The image.
        image: String,
        /// The entrypoint path.
        path: String,
    },
    /// A manifest, config or layer is malformed.
    #[error("image {image}: invalid {what}: {detail}")]
    Invalid {
        /// The image.
        image: String,
        /// Which document ("manifest", "config", "layer sha256:..").
        what: String,
        /// What is wrong.
        detail: String,
    },
    /// An `imagePullSecrets` secret is not a valid `.dockerconfigjson`.
    #[error("invalid image pull secret: {0}")]
    InvalidPullSecret(String),
    /// A file to push cannot be read or is not the expected kind.
    #[error("{path}: {detail}")]
    InvalidInput {
        /// The file or directory.
        path: String,
        /// What is wrong with it.
        detail: String,
    },
    /// Any other registry answer.
    #[error("image {image}: registry error: {detail}")]
    Registry {
        /// The image.
        image: String,
        /// What the registry said.
        detail: String,
    },
    /// The node's cache directory failed.
    #[error("image cache {path}: {source}")]
    Io {
        /// The file involved.
        path: String,
        /// The IO error.
        source: std::io::Error,
    },
}

impl ImageError {
    /// Maps an `oci-client` error for `image` (at `registry`) to the variant the user must see.
    pub(crate) fn from_oci(
        image: &str,
        registry: &str,
        reference_tag: Option<&str>,
        reference_digest: Option<&str>,
        error: OciDistributionError,
    ) -> ImageError {
        let image_s = image.to_string();
        let registry_s = registry.to_string();
        let not_found = || match (reference_digest, reference_tag) {
            (Some(digest), _) => ImageError::ManifestNotFound {
                image: image_s.clone(),
                digest: digest.to_string(),
            },
            (None, tag) => ImageError::TagNotFound {
                image: image_s.clone(),
                tag: tag.unwrap_or("latest").to_string(),
            },
        };
        let unauthorized = |detail: String| ImageError::Unauthorized {
            image: image_s.clone(),
            registry: registry_s.clone(),
            detail,
        };
        match error {
            OciDistributionError::RegistryError { envelope, .. } => {
                let first = envelope.errors.first();
                let detail = first.map(|e| e.message.clone()).unwrap_or_default();
                match first.map(|e| &e.code) {
                    Some(
                        OciErrorCode::ManifestUnknown
                        | OciErrorCode::NameUnknown
                        | OciErrorCode::NotFound,
                    ) => not_found(),
                    Some(OciErrorCode::Unauthorized | OciErrorCode::Denied) => unauthorized(detail),
                    _ => ImageError::Registry {
                        image: image_s,
                        detail: envelope.to_string(),
                    },
                }
            }
            OciDistributionError::ImageManifestNotFoundError(_) => not_found(),
            OciDistributionError::AuthenticationFailure(detail) => unauthorized(detail),
            OciDistributionError::UnauthorizedError { url } => {
                unauthorized(format!("401 unauthorized at {url}"))
            }
            OciDistributionError::ServerError { code, message, .. } => match code {
                404 => not_found(),
                401 | 403 => unauthorized(message),
                _ => ImageError::Registry {
                    image: image_s,
                    detail: format!("http {code}: {message}"),
                },
            },
            OciDistributionError::RequestError(e) => {
                if e.status()
                    .is_some_and(|s| s.as_u16() == 401 || s.as_u16() == 403)
                {
                    return unauthorized(e.to_string());
                }
                ImageError::Unreachable {
                    image: image_s,
                    registry: registry_s,
                    detail: error_chain(&e),
                }
            }
            OciDistributionError::DigestError(
                oci_client::errors::DigestError::VerificationError { expected, actual },
            ) => ImageError::DigestMismatch {
                image: image_s,
                expected,
                actual,
            },
            OciDistributionError::UnsupportedMediaTypeError(media_type)
            | OciDistributionError::IncompatibleLayerMediaTypeError(media_type) => {
                ImageError::UnknownMediaType {
                    image: image_s,
                    media_type,
                }
            }
            other => ImageError::Registry {
                image: image_s,
                detail: other.to_string(),
            },
        }
    }

    /// Wraps an IO error on a cache path.
    pub(crate) fn io(path: &std::path::Path, source: std::io::Error) -> ImageError {
        ImageError::Io {
            path: path.display().to_string(),
            source,
        }
    }
}

/// An error and its causes on one line (reqwest's top-level message hides the useful part).
fn error_chain(error: &dyn std::error::Error) -> String {
    let mut text = error.to_string();
    let mut source = error.source();
    while let Some(cause) = source {
        text.push_str(": ");
        text.push_str(&cause.to_string());
        source = cause.source();
    }
    text
}
