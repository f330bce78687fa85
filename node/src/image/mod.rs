//! The node's image cache, and the OCI client side of `flotilla image push`.
//!
//! A pod names its image the Kubernetes way; [`ImageCache::pull`] resolves the reference (no
//! registry host = the cluster's registry), honours `imagePullPolicy` and `imagePullSecrets`,
//! pulls with `oci-client` from any registry, verifies every digest, and stores blobs by digest so
//! pods and images share them. The result, [`PulledImage`], says whether the image is Wasm (the
//! module on disk) or a container image (its layers, bottom first, and config) for the container
//! runtime to unpack.
//!
//! Modules:
//! - `cache`: [`ImageCache`]: pull, policy, per-image and per-blob deduplication, GC.
//! - `media`: manifest shapes and the Wasm media-type conventions ([`media`] lists them).
//! - `rootfs`: finding an entrypoint's `.wasm` inside an ordinary image's layers.
//! - `reference`: reference resolution against the cluster's registry.
//! - `auth`: [`PullSecrets`] from `kubernetes.io/dockerconfigjson` secrets.
//! - `store`: the on-disk layout and atomic writes.
//! - `locks`: per-key async locks.
//! - [`push`]: pushing a `.wasm` as a CNCF Wasm artifact, or an OCI image layout.
//! - `error`: [`ImageError`].

mod auth;
mod cache;
mod error;
mod locks;
pub mod media;
pub mod push;
mod reference;
mod rootfs;
mod store;

use std::path::PathBuf;

pub use auth::PullSecrets;
pub use cache::{GcReport, ImageCache};
pub use error::ImageError;
pub use reference::{is_loopback, parse_registry};
pub use store::{ImageRecord, RecordContent};

/// Kubernetes' `imagePullPolicy`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default)]
pub enum PullPolicy {
    /// Ask the registry every time (downloading only blobs not already stored).
    Always,
    /// Use the cached image if there is one, with no network round trip.
    #[default]
    IfNotPresent,
    /// Never pull; fail if the image is not cached.
    Never,
}

impl PullPolicy {
    /// Parses the Kubernetes spelling; `None` for anything else.
    pub fn parse(text: &str) -> Option<PullPolicy> {
        match text {
            "Always" => Some(PullPolicy::Always),
            "IfNotPresent" => Some(PullPolicy::IfNotPresent),
            "Never" => Some(PullPolicy::Never),
            _ => None,
        }
    }

    /// Kubernetes' default for an image reference: `Always` for `:latest` or no tag (and no
    /// digest), `IfNotPresent` otherwise.
    pub fn default_for(reference: &str) -> PullPolicy {
        let last = reference.rsplit('/').next().unwrap_or(reference);
        if reference.contains('@') {
            return PullPolicy::IfNotPresent;
        }
        match last.split_once(':') {
            Some((_, "latest")) | None => PullPolicy::Always,
            Some(_) => PullPolicy::IfNotPresent,
        }
    }
}

/// An image ready on disk.
#[derive(Clone, Debug)]
pub struct PulledImage {
    /// The canonical reference it was pulled as (e.g. `127.0.0.1:6443/hello:v1`).
    pub reference: String,
    /// The digest of its image manifest (for an index, the chosen platform's manifest).
    pub digest: String,
    /// What it holds.
    pub content: ImageContent,
    /// The image config JSON (OCI/Docker images), if it has one.
    pub config: Option<serde_json::Value>,
    /// Whether this pull downloaded anything (false: answered from the cache).
    pub fetched: bool,
}

/// The payload of a [`PulledImage`].
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum ImageContent {
    /// A Wasm module or component.
    Wasm {
        /// The `.wasm` on disk (a blob, shared; read-only by convention).
        path: PathBuf,
        /// Its digest (the compile cache's key).
        digest: String,
        /// The layer media type it came in (`application/wasm` for a rootfs module).
        media_type: String,
    },
    /// A container image for the OCI runtime path.
    Container {
        /// The layers, bottom first, verified and stored compressed as pulled.
        layers: Vec<LayerBlob>,
    },
}

/// One verified layer blob of a container image.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct LayerBlob {
    /// The blob on disk.
    pub path: PathBuf,
    /// Its digest.
    pub digest: String,
    /// Its media type (tells the compression: `...tar`, `...tar+gzip`, `...tar+zstd`).
    pub media_type: String,
}

#[cfg(test)]
mod tests {
    use super::PullPolicy;

    #[test]
    fn default_pull_policy_follows_kubernetes() {
        let cases = [
            ("busybox", PullPolicy::Always),
            ("busybox:latest", PullPolicy::Always),
            ("localhost:5000/app", PullPolicy::Always),
            ("localhost:5000/app:v1", PullPolicy::IfNotPresent),
            ("app@sha256:abc", PullPolicy::IfNotPresent),
        ];
        for (reference, want) in cases {
            assert_eq!(PullPolicy::default_for(reference), want, "{reference}");
        }
        assert_eq!(PullPolicy::parse("Never"), Some(PullPolicy::Never));
        assert_eq!(PullPolicy::parse("never"), None);
    }
}
