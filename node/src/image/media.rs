//! Manifest shapes and media types: which images are Wasm, which are containers.
//!
//! Wasm images come in several conventions, all accepted:
//! - CNCF Wasm OCI artifact: config `application/vnd.wasm.config.v0+json`, one
//!   `application/wasm` layer (what `flotilla image push` produces; also wkg / oras).
//! - `application/vnd.wasm.content.layer.v1+wasm` (wasm-to-oci, runwasi, Spin's layers).
//! - `application/vnd.bytecodealliance.wasm.component.layer.v0+wasm` (older wasm-pkg-tools).
//! - `application/vnd.module.wasm.content.layer.v1+wasm` (wasmedge / crun's module images).
//! - Spin applications: the first Wasm layer is the component (the rest are static files and the
//!   lock file).
//! - Ordinary OCI images whose entrypoint names a `.wasm` in the rootfs (Docker+Wasm style);
//!   recognised once the config is read (see `rootfs`).
//!
//! Everything else with an image config and tar layers is a container image.

use serde::{Deserialize, Serialize};

/// The CNCF Wasm artifact config.
pub const WASM_CONFIG: &str = "application/vnd.wasm.config.v0+json";
/// The CNCF Wasm artifact layer.
pub const WASM_LAYER: &str = "application/wasm";

/// Layer media types whose content is a Wasm module or component.
pub const WASM_LAYER_TYPES: &[&str] = &[
    WASM_LAYER,
    "application/vnd.wasm.content.layer.v1+wasm",
    "application/vnd.bytecodealliance.wasm.component.layer.v0+wasm",
    "application/vnd.module.wasm.content.layer.v1+wasm",
];

/// Config media types of container images.
pub const IMAGE_CONFIG_TYPES: &[&str] = &[
    "application/vnd.oci.image.config.v1+json",
    "application/vnd.docker.container.image.v1+json",
];

/// Layer media types of container images (tar, optionally compressed).
pub const TAR_LAYER_TYPES: &[&str] = &[
    "application/vnd.oci.image.layer.v1.tar",
    "application/vnd.oci.image.layer.v1.tar+gzip",
    "application/vnd.oci.image.layer.v1.tar+zstd",
    "application/vnd.oci.image.layer.nondistributable.v1.tar",
    "application/vnd.oci.image.layer.nondistributable.v1.tar+gzip",
    "application/vnd.oci.image.layer.nondistributable.v1.tar+zstd",
    "application/vnd.docker.image.rootfs.diff.tar",
    "application/vnd.docker.image.rootfs.diff.tar.gzip",
    "application/vnd.docker.image.rootfs.foreign.diff.tar.gzip",
];

/// Manifest media types asked for when pulling.
pub const MANIFEST_TYPES: &[&str] = &[
    "application/vnd.oci.image.manifest.v1+json",
    "application/vnd.oci.image.index.v1+json",
    "application/vnd.docker.distribution.manifest.v2+json",
    "application/vnd.docker.distribution.manifest.list.v2+json",
];

/// A content descriptor (the fields the cache uses).
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "camelCase")]
pub struct Descriptor {
    /// The content's media type.
    pub media_type: String,
    /// The content's digest.
    pub digest: String,
    /// The content's size in bytes.
    pub size: i64,
    /// An index entry's platform.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub platform: Option<Platform>,
}

/// An index entry's platform.
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq, Eq)]
pub struct Platform {
    /// CPU architecture (`amd64`, `wasm`, ...).
    pub architecture: String,
    /// Operating system (`linux`, `wasi`, `wasip1`, `wasip2`, ...).
    pub os: String,
}

/// An image manifest or an image index, as pulled.
#[derive(Clone, Debug, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Manifest {
    /// The manifest's own media type, if it states one.
    #[serde(default)]
    pub media_type: Option<String>,
    /// The config descriptor (image manifests).
    #[serde(default)]
    pub config: Option<Descriptor>,
    /// The layers (image manifests).
    #[serde(default)]
    pub layers: Vec<Descriptor>,
    /// The child manifests (indexes).
    #[serde(default)]
    pub manifests: Option<Vec<Descriptor>>,
}

impl Manifest {
    /// Whether this is an index (manifest list) rather than an image manifest.
    pub fn is_index(&self) -> bool {
        self.manifests.is_some()
    }
}

/// What an image manifest holds.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Kind {
    /// A Wasm artifact; the index of the layer holding the module or component.
    Wasm {
        /// Index into the manifest's layers.
        layer: usize,
    },
    /// An OCI/Docker image with tar layers (its config may still point at a `.wasm`).
    Image,
}

/// Classifies an image manifest; the error is the media type that is not understood.
pub fn classify(manifest: &Manifest) -> Result<Kind, String> {
    if let Some(layer) = manifest
        .layers
        .iter()
        .position(|l| WASM_LAYER_TYPES.contains(&l.media_type.as_str()))
    {
        return Ok(Kind::Wasm { layer });
    }
    let config = manifest
        .config
        .as_ref()
        .map(|c| c.media_type.as_str())
        .unwrap_or_default();
    if !IMAGE_CONFIG_TYPES.contains(&config) {
        // A Wasm config with no Wasm layer: the layer type is the unknown part.
        return Err(match manifest.layers.first() {
            Some(layer) if config == WASM_CONFIG => layer.media_type.clone(),
            _ => config.to_string(),
        });
    }
    match manifest
        .layers
        .iter()
        .find(|l| !TAR_LAYER_TYPES.contains(&l.media_type.as_str()))
    {
        Some(unknown) => Err(unknown.media_type.clone()),
        None => Ok(Kind::Image),
    }
}

/// Picks the child of an index to pull: a Wasm platform first (`wasi`/`wasip1`/`wasip2` or
/// architecture `wasm`), then `linux` on this node's architecture, then an entry with no platform
/// at all (artifact indexes).
pub fn choose_platform<'a>(entries: &'a [Descriptor], arch: &str) -> Option<&'a Descriptor> {
    let is_wasm = |p: &Platform| p.architecture == "wasm" || p.os.starts_with("wasi");
    entries
        .iter()
        .find(|e| e.platform.as_ref().is_some_and(is_wasm))
        .or_else(|| {
            entries.iter().find(|e| {
                e.platform
                    .as_ref()
                    .is_some_and(|p| p.os == "linux" && p.architecture == arch)
            })
        })
        .or_else(|| entries.iter().find(|e| e.platform.is_none()))
}

/// The node's architecture in OCI terms.
pub fn node_arch() -> &'static str {
    match std::env::consts::ARCH {
        "x86_64" => "amd64",
        "aarch64" => "arm64",
        other => other,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn descriptor(media_type: &str) -> Descriptor {
        Descriptor {
            media_type: media_type.into(),
            digest: "sha256:x".into(),
            size: 1,
            platform: None,
        }
    }

    fn manifest(config: &str, layers: &[&str]) -> Manifest {
        Manifest {
            media_type: None,
            config: Some(descriptor(config)),
            layers: layers.iter().map(|l| descriptor(l)).collect(),
            manifests: None,
        }
    }

    #[test]
    fn every_wasm_convention_and_container_images_classify() {
        let spin_config = "application/vnd.fermyon.spin.application.v1+config";
        let cases: &[(&str, &[&str], Result<Kind, &str>)] = &[
            (WASM_CONFIG, &[WASM_LAYER], Ok(Kind::Wasm { layer: 0 })),
            (
                "application/vnd.wasm.config.v1+json",
                &["application/vnd.wasm.content.layer.v1+wasm"],
                Ok(Kind::Wasm { layer: 0 }),
            ),
            (
                WASM_CONFIG,
                &["application/vnd.bytecodealliance.wasm.component.layer.v0+wasm"],
                Ok(Kind::Wasm { layer: 0 }),
            ),
            (
                spin_config,
                &[
                    "application/vnd.fermyon.spin.application.v1+config",
                    "application/vnd.wasm.content.layer.v1+wasm",
                    "application/vnd.wasm.content.layer.v1+wasm",
                ],
                Ok(Kind::Wasm { layer: 1 }),
            ),
            (
                IMAGE_CONFIG_TYPES[0],
                &["application/vnd.oci.image.layer.v1.tar+gzip"],
                Ok(Kind::Image),
            ),
            (
                IMAGE_CONFIG_TYPES[1],
                &["application/vnd.docker.image.rootfs.diff.tar.gzip"],
                Ok(Kind::Image),
            ),
            (
                "application/vnd.cncf.helm.config.v1+json",
                &["application/vnd.cncf.helm.chart.content.v1.tar+gzip"],
                Err("application/vnd.cncf.helm.config.v1+json"),
            ),
            (
                WASM_CONFIG,
                &["application/x-unknown"],
                Err("application/x-unknown"),
            ),
            (
                IMAGE_CONFIG_TYPES[0],
                &["application/vnd.oci.image.layer.v1.tar", "text/plain"],
                Err("text/plain"),
            ),
        ];
        for (config, layers, want) in cases {
            let got = classify(&manifest(config, layers));
            assert_eq!(
                got,
                want.clone().map_err(String::from),
                "{config} {layers:?}"
            );
        }
    }

    #[test]
    fn index_entries_prefer_wasm_then_linux_on_this_arch() {
        let entry = |os: &str, arch: &str| Descriptor {
            platform: Some(Platform {
                architecture: arch.into(),
                os: os.into(),
            }),
            digest: format!("{os}/{arch}"),
            ..descriptor("m")
        };
        let entries = vec![
            entry("linux", "arm64"),
            entry("linux", "amd64"),
            entry("wasip1", "wasm"),
        ];
        assert_eq!(
            choose_platform(&entries, "amd64").unwrap().digest,
            "wasip1/wasm"
        );
        assert_eq!(
            choose_platform(&entries[..2], "amd64").unwrap().digest,
            "linux/amd64"
        );
        assert!(choose_platform(&entries[..1], "amd64").is_none());
        assert_eq!(
            choose_platform(&[descriptor("m")], "amd64").unwrap().digest,
            "sha256:x"
        );
    }
}
