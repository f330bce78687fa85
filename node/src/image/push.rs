//! Pushing images (the library behind `flotilla image push` and `flotilla image ls`).
//!
//! - [`push_wasm`] wraps a `.wasm` file as a CNCF Wasm OCI artifact: config
//!   `application/vnd.wasm.config.v0+json` (`architecture: wasm`, `os: wasip1` for a core module
//!   or `wasip2` for a component), one `application/wasm` layer. No timestamps go in, so the same
//!   file always yields the same manifest digest.
//! - [`push_layout`] pushes an OCI image layout, a directory or a tar of one (`skopeo copy ...
//!   oci:DIR`, `docker save` of Docker 25+, buildah/podman `oci-archive`), child manifests first.
//!
//! Blobs the registry already holds are not sent again; blobs go up in one streamed request each.

use std::path::{Path, PathBuf};

use bytes::Bytes;
use oci_client::errors::OciDistributionError;
use oci_client::{Client, Reference};
use serde_json::json;
use sha2::{Digest as _, Sha256};
use tokio::io::AsyncReadExt;

use super::ImageError;
use super::auth::PullSecrets;
use super::cache::new_client;
use super::media::{self, Descriptor, Manifest};
use super::reference::{self, ImageRef};
use super::store::blocking;

/// Bytes per read when streaming a blob up (also the progress granularity).
const CHUNK: usize = 1 << 20;

/// Where and how to push.
#[derive(Clone, Debug, Default)]
pub struct PushOptions {
    /// The registry for references without a host: the cluster's (`http://127.0.0.1:6443`).
    pub default_registry: Option<String>,
    /// Registry hosts spoken to over plain HTTP besides loopback ones.
    pub insecure: Vec<String>,
    /// Credentials (the same `dockerconfigjson` shape pods use).
    pub credentials: PullSecrets,
}

/// Receives push progress (the CLI draws a bar with it).
pub trait Progress: Send + Sync {
    /// The push will move `total` bytes of blobs.
    fn begin(&self, _total: u64) {}
    /// `bytes` more were sent (or found already present).
    fn advance(&self, _bytes: u64) {}
}

/// Progress that is not shown.
#[derive(Clone, Copy, Debug, Default)]
pub struct NoProgress;
impl Progress for NoProgress {}

/// What a push did.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Pushed {
    /// The canonical reference pushed (`registry/repository:tag`).
    pub reference: String,
    /// The digest of the pushed (top-level) manifest.
    pub digest: String,
    /// Bytes of blobs uploaded.
    pub uploaded: u64,
    /// Blobs the registry already had.
    pub skipped: usize,
}

/// One repository of a registry's catalog.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RepositoryTags {
    /// Repository name.
    pub name: String,
    /// Its tags.
    pub tags: Vec<String>,
}

/// The config and manifest of a CNCF Wasm artifact for a module of `size` bytes and `digest`.
pub fn wasm_artifact(digest: &str, size: u64, component: bool) -> (Vec<u8>, Vec<u8>) {
    let config = json!({
        "architecture": "wasm",
        "os": if component { "wasip2" } else { "wasip1" },
        "layerDigests": [digest],
    });
    let config = serde_json::to_vec(&config).unwrap_or_default();
    let manifest = json!({
        "schemaVersion": 2,
        "mediaType": "application/vnd.oci.image.manifest.v1+json",
        "config": {
            "mediaType": media::WASM_CONFIG,
            "digest": sha256(&config),
            "size": config.len(),
        },
        "layers": [{
            "mediaType": media::WASM_LAYER,
            "digest": digest,
            "size": size,
        }],
    });
    (config, serde_json::to_vec(&manifest).unwrap_or_default())
}

/// Pushes the `.wasm` file at `file` as `reference`.
pub async fn push_wasm(
    file: &Path,
    reference: &str,
    options: &PushOptions,
    progress: &dyn Progress,
) -> Result<Pushed, ImageError> {
    let input = |detail: &str| ImageError::InvalidInput {
        path: file.display().to_string(),
        detail: detail.to_string(),
    };
    let path = file.to_path_buf();
    let (digest, size, header) = blocking(move || hash_file(&path))
        .await
        .map_err(|e| input(&e.to_string()))?;
    if header[..4] != *b"\0asm" {
        return Err(input("not a WebAssembly file (no \\0asm header)"));
    }
    // Core modules are version 1; components carry layer 1 in the version field's high half.
    let component = header[4..8] != [1, 0, 0, 0];
    let (config, manifest) = wasm_artifact(&digest, size, component);
    let pusher = Pusher::new(reference, options).await?;
    progress.begin(size + config.len() as u64);
    let mut pushed = pusher.empty_result();
    pusher
        .push_file(file, &digest, size, progress, &mut pushed)
        .await?;
    pusher.push_bytes(config, progress, &mut pushed).await?;
    pushed.digest = pusher
        .push_manifest(
            &pusher.image.reference,
            manifest,
            "application/vnd.oci.image.manifest.v1+json",
        )
        .await?;
    Ok(pushed)
}

/// Pushes the OCI image layout at `path` (a directory or a tar, optionally gzipped) as
/// `reference`. A layout holding several images needs one annotated with the reference's tag.
pub async fn push_layout(
    path: &Path,
    reference: &str,
    options: &PushOptions,
    progress: &dyn Progress,
) -> Result<Pushed, ImageError> {
    let input = |detail: String| ImageError::InvalidInput {
        path: path.display().to_string(),
        detail,
    };
    let unpacked;
    let layout = if path.is_dir() {
        path.to_path_buf()
    } else {
        unpacked = UnpackedTar::new(path).await.map_err(|e| {
            input(format!(
                "neither a WebAssembly file nor an OCI image layout (a directory, or a tar \
                     of one, optionally gzipped): cannot unpack it as a tar: {e}"
            ))
        })?;
        unpacked.dir.clone()
    };
    let pusher = Pusher::new(reference, options).await?;
    let index_path = layout.join("index.json");
    let index: Manifest = serde_json::from_slice(
        &tokio::fs::read(&index_path)
            .await
            .map_err(|e| input(format!("not an OCI image layout (index.json: {e})")))?,
    )
    .map_err(|e| input(format!("index.json: {e}")))?;
    let entries = index.manifests.unwrap_or_default();
    let tag = pusher.image.reference.tag().unwrap_or("latest").to_string();
    let top = match entries.as_slice() {
        [only] => only.clone(),
        [] => return Err(input("the layout's index.json lists no image".into())),
        many => {
            let raw: serde_json::Value =
                serde_json::from_slice(&tokio::fs::read(&index_path).await.unwrap_or_default())
                    .unwrap_or_default();
            let position = raw["manifests"].as_array().and_then(|ms| {
                ms.iter().position(|m| {
                    m.pointer("/annotations/org.opencontainers.image.ref.name")
                        .and_then(|v| v.as_str())
                        == Some(tag.as_str())
                })
            });
            match position {
                Some(i) => many[i].clone(),
                None => {
                    return Err(input(format!(
                        "the layout holds {} images and none is annotated with tag {tag}",
                        many.len()
                    )));
                }
            }
        }
    };

    // Plan: every manifest (children before parents) and every blob they reference.
    let mut manifests: Vec<(Descriptor, Vec<u8>)> = Vec::new();
    let mut blobs: Vec<Descriptor> = Vec::new();
    let mut pending = vec![(top.clone(), 0usize)];
    while let Some((descriptor, depth)) = pending.pop() {
        if depth > 2 {
            return Err(input(
                "manifests nest deeper than an index of indexes".into(),
            ));
        }
        let bytes = read_layout_blob(&layout, &descriptor.digest)
            .await
            .map_err(|e| input(format!("blob {}: {e}", descriptor.digest)))?;
        if sha256(&bytes) != descriptor.digest {
            return Err(ImageError::DigestMismatch {
                image: path.display().to_string(),
                expected: descriptor.digest.clone(),
                actual: sha256(&bytes),
            });
        }
        let manifest: Manifest = serde_json::from_slice(&bytes)
            .map_err(|e| input(format!("manifest {}: {e}", descriptor.digest)))?;
        if let Some(children) = &manifest.manifests {
            pending.extend(children.iter().map(|c| (c.clone(), depth + 1)));
        } else {
            blobs.extend(manifest.config.iter().cloned());
            blobs.extend(manifest.layers.iter().cloned());
        }
        manifests.push((descriptor, bytes));
    }
    blobs.sort_by(|a, b| a.digest.cmp(&b.digest));
    blobs.dedup_by(|a, b| a.digest == b.digest);
    progress.begin(blobs.iter().map(|b| b.size.max(0) as u64).sum());

    let mut pushed = pusher.empty_result();
    for blob in &blobs {
        let file = layout_blob_path(&layout, &blob.digest)
            .ok_or_else(|| input(format!("unsupported digest {}", blob.digest)))?;
        pusher
            .push_file(
                &file,
                &blob.digest,
                blob.size.max(0) as u64,
                progress,
                &mut pushed,
            )
            .await?;
    }
    let reference = &pusher.image.reference;
    for (descriptor, bytes) in manifests.into_iter().rev() {
        let is_top = descriptor.digest == top.digest;
        let target = if is_top {
            reference.clone()
        } else {
            Reference::with_digest(
                reference.registry().to_string(),
                reference.repository().to_string(),
                descriptor.digest.clone(),
            )
        };
        let digest = pusher
            .push_manifest(&target, bytes, &descriptor.media_type)
            .await?;
        if is_top {
            pushed.digest = digest;
        }
    }
    Ok(pushed)
}

/// Lists the repositories and tags of `registry` (`host:port` or a URL).
pub async fn list(
    registry: &str,
    options: &PushOptions,
) -> Result<Vec<RepositoryTags>, ImageError> {
    let (host, plain) = reference::parse_registry(registry);
    let probe = Reference::with_tag(host.clone(), "catalog".into(), "latest".into());
    let auth = options.credentials.auth_for(&host, "");
    let client = new_client(plain || options.insecure.contains(&host));
    let map = |e: OciDistributionError| ImageError::from_oci(&host, &host, None, None, e);
    let mut repositories: Vec<String> = Vec::new();
    let mut last: Option<String> = None;
    loop {
        let page = client
            .catalog(&probe, &auth, Some(1000), last.as_deref())
            .await
            .map_err(map)?;
        let done = page.repositories.len() < 1000;
        last = page.repositories.last().cloned();
        repositories.extend(page.repositories);
        if done || last.is_none() {
            break;
        }
    }
    let mut listed = Vec::new();
    for name in repositories {
        let image = Reference::with_tag(host.clone(), name.clone(), "latest".into());
        let tags = client
            .list_tags(&image, &auth, None, None)
            .await
            .map_err(map)?;
        listed.push(RepositoryTags {
            name,
            tags: tags.tags,
        });
    }
    Ok(listed)
}

/// One push's client, credentials and target.
struct Pusher {
    client: Client,
    image: ImageRef,
    name: String,
}

impl Pusher {
    async fn new(reference: &str, options: &PushOptions) -> Result<Pusher, ImageError> {
        let default = options
            .default_registry
            .as_deref()
            .map(reference::parse_registry);
        let image = reference::resolve(reference, default.as_ref(), &options.insecure)?;
        let auth = options
            .credentials
            .auth_for(image.registry(), image.reference.repository());
        let client = new_client(image.plain_http);
        let name = image.whole();
        client
            .auth(&image.reference, &auth, oci_client::RegistryOperation::Push)
            .await
            .map_err(|e| ImageError::from_oci(&name, image.registry(), None, None, e))?;
        // `auth` also stored the credentials for the requests that follow.
        Ok(Pusher {
            client,
            image,
            name,
        })
    }

    fn empty_result(&self) -> Pushed {
        Pushed {
            reference: self.name.clone(),
            digest: String::new(),
            uploaded: 0,
            skipped: 0,
        }
    }

    fn error(&self, error: OciDistributionError) -> ImageError {
        ImageError::from_oci(&self.name, self.image.registry(), None, None, error)
    }

    async fn exists(&self, digest: &str) -> Result<bool, ImageError> {
        self.client
            .blob_exists(&self.image.reference, digest)
            .await
            .map_err(|e| self.error(e))
    }

    async fn push_file(
        &self,
        file: &Path,
        digest: &str,
        size: u64,
        progress: &dyn Progress,
        pushed: &mut Pushed,
    ) -> Result<(), ImageError> {
        if self.exists(digest).await? {
            progress.advance(size);
            pushed.skipped += 1;
            return Ok(());
        }
        let handle = tokio::fs::File::open(file)
            .await
            .map_err(|e| ImageError::io(file, e))?;
        let (sent_tx, mut sent_rx) = tokio::sync::mpsc::unbounded_channel::<u64>();
        let stream = futures::stream::unfold(Some(handle), move |handle| {
            let sent_tx = sent_tx.clone();
            async move {
                let mut handle = handle?;
                let mut buf = vec![0u8; CHUNK];
                match handle.read(&mut buf).await {
                    Ok(0) => None,
                    Ok(n) => {
                        buf.truncate(n);
                        let _ = sent_tx.send(n as u64);
                        Some((Ok(Bytes::from(buf)), Some(handle)))
                    }
                    Err(e) => Some((Err(OciDistributionError::IoError(e)), None)),
                }
            }
        });
        let upload =
            self.client
                .push_blob_stream(&self.image.reference, stream, digest, Some(size));
        tokio::pin!(upload);
        // Report progress as chunks are read, while the upload runs.
        let result = loop {
            tokio::select! {
                result = &mut upload => break result,
                Some(n) = sent_rx.recv() => progress.advance(n),
            }
        };
        while let Ok(n) = sent_rx.try_recv() {
            progress.advance(n);
        }
        result.map_err(|e| self.error(e))?;
        pushed.uploaded += size;
        Ok(())
    }

    async fn push_bytes(
        &self,
        content: Vec<u8>,
        progress: &dyn Progress,
        pushed: &mut Pushed,
    ) -> Result<(), ImageError> {
        let digest = sha256(&content);
        let size = content.len() as u64;
        if self.exists(&digest).await? {
            pushed.skipped += 1;
        } else {
            self.client
                .push_blob(&self.image.reference, content, &digest)
                .await
                .map_err(|e| self.error(e))?;
            pushed.uploaded += size;
        }
        progress.advance(size);
        Ok(())
    }

    async fn push_manifest(
        &self,
        target: &Reference,
        bytes: Vec<u8>,
        media_type: &str,
    ) -> Result<String, ImageError> {
        let digest = sha256(&bytes);
        let content_type =
            http::HeaderValue::from_str(media_type).map_err(|_| ImageError::UnknownMediaType {
                image: self.name.clone(),
                media_type: media_type.to_string(),
            })?;
        self.client
            .push_manifest_raw(target, bytes, content_type)
            .await
            .map_err(|e| self.error(e))?;
        Ok(digest)
    }
}

fn sha256(bytes: &[u8]) -> String {
    format!("sha256:{}", hex::encode(Sha256::digest(bytes)))
}

/// Hashes a file; returns its digest, size and first 8 bytes.
fn hash_file(path: &Path) -> std::io::Result<(String, u64, [u8; 8])> {
    use std::io::Read;
    let mut file = std::fs::File::open(path)?;
    let mut hasher = Sha256::new();
    let mut header = [0u8; 8];
    let mut buf = vec![0u8; CHUNK];
    let mut size = 0u64;
    loop {
        let n = file.read(&mut buf)?;
        if n == 0 {
            break;
        }
        let filled = (size as usize).min(8);
        if filled < 8 {
            let take = (8 - filled).min(n);
            header[filled..filled + take].copy_from_slice(&buf[..take]);
        }
        hasher.update(&buf[..n]);
        size += n as u64;
    }
    Ok((
        format!("sha256:{}", hex::encode(hasher.finalize())),
        size,
        header,
    ))
}

fn layout_blob_path(layout: &Path, digest: &str) -> Option<PathBuf> {
    let (algorithm, hex) = digest.split_once(':')?;
    let safe = |s: &str| !s.is_empty() && s.bytes().all(|b| b.is_ascii_alphanumeric());
    (safe(algorithm) && safe(hex)).then(|| layout.join("blobs").join(algorithm).join(hex))
}

async fn read_layout_blob(layout: &Path, digest: &str) -> std::io::Result<Vec<u8>> {
    let path = layout_blob_path(layout, digest)
        .ok_or_else(|| std::io::Error::other("malformed digest"))?;
    let size = tokio::fs::metadata(&path).await?.len();
    if size > MAX_MANIFEST {
        return Err(std::io::Error::other("a manifest larger than 4 MiB"));
    }
    tokio::fs::read(path).await
}

/// Manifests larger than this are refused (the registries' own limit).
const MAX_MANIFEST: u64 = 4 << 20;

/// A tar unpacked into a scratch directory, removed on drop.
struct UnpackedTar {
    dir: PathBuf,
}

impl UnpackedTar {
    async fn new(tar: &Path) -> std::io::Result<UnpackedTar> {
        let dir = std::env::temp_dir().join(format!("flotilla-push-{}", uuid::Uuid::new_v4()));
        let unpacked = UnpackedTar { dir: dir.clone() };
        let tar = tar.to_path_buf();
        blocking(move || {
            use std::io::Read;
            std::fs::create_dir_all(&dir)?;
            let mut file = std::fs::File::open(&tar)?;
            let mut magic = [0u8; 2];
            let n = file.read(&mut magic)?;
            let file = Read::chain(std::io::Cursor::new(magic[..n].to_vec()), file);
            let reader: Box<dyn Read> = if n == 2 && magic == [0x1f, 0x8b] {
                Box::new(flate2::read::GzDecoder::new(file))
            } else {
                Box::new(file)
            };
            // `unpack` refuses entries that would land outside `dir`.
            tar::Archive::new(reader).unpack(&dir)
        })
        .await?;
        Ok(unpacked)
    }
}

impl Drop for UnpackedTar {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn wasm_artifacts_follow_the_cncf_layout_and_are_reproducible() {
        let digest = format!("sha256:{}", "b".repeat(64));
        let (config, manifest) = wasm_artifact(&digest, 42, true);
        let (_, again) = wasm_artifact(&digest, 42, true);
        assert_eq!(manifest, again);
        let manifest: serde_json::Value = serde_json::from_slice(&manifest).unwrap();
        assert_eq!(
            manifest["config"]["mediaType"],
            "application/vnd.wasm.config.v0+json"
        );
        assert_eq!(manifest["config"]["digest"], sha256(&config));
        assert_eq!(manifest["layers"][0]["mediaType"], "application/wasm");
        assert_eq!(manifest["layers"][0]["size"], 42);
        let config: serde_json::Value = serde_json::from_slice(&config).unwrap();
        assert_eq!(config["os"], "wasip2");
        assert_eq!(config["layerDigests"][0], digest.as_str());
        let parsed: Manifest =
            serde_json::from_slice(&serde_json::to_vec(&manifest).unwrap()).unwrap();
        assert_eq!(media::classify(&parsed), Ok(media::Kind::Wasm { layer: 0 }));
    }

    #[test]
    fn layout_blob_paths_cannot_escape_the_layout() {
        let layout = Path::new("/l");
        assert_eq!(
            layout_blob_path(layout, "sha256:ab12"),
            Some(PathBuf::from("/l/blobs/sha256/ab12"))
        );
        for bad in ["sha256:../x", "../x:ab", "sha256", "sha256:"] {
            assert_eq!(layout_blob_path(layout, bad), None, "{bad}");
        }
    }
}
