//! The image cache: pulls, the pull policy, deduplication, garbage collection.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use futures::TryStreamExt;
use oci_client::client::{ClientConfig, ClientProtocol};
use oci_client::manifest::OciDescriptor;
use oci_client::secrets::RegistryAuth;
use oci_client::{Client, Reference};
use sha2::{Digest as _, Sha256};
use tokio::io::AsyncWriteExt;
use tokio_util::task::TaskTracker;

use super::auth::PullSecrets;
use super::locks::KeyedLocks;
use super::media::{self, Descriptor, Kind, Manifest};
use super::reference::{self, ImageRef};
use super::rootfs::{self, LayerFile};
use super::store::{ImageRecord, RecordContent, Store, blocking};
use super::{ImageContent, ImageError, LayerBlob, PullPolicy, PulledImage};

/// How many layers of one image download at once.
const PARALLEL_LAYERS: usize = 3;
/// Configs are read whole; anything larger is not a config.
const MAX_CONFIG_BYTES: i64 = 4 << 20;
/// Give up connecting to a registry after this long.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(10);
/// Give up on a registry that sends nothing for this long mid-transfer.
const READ_TIMEOUT: Duration = Duration::from_secs(60);

/// The node's image cache; a cheap handle, clone it freely.
#[derive(Clone)]
pub struct ImageCache {
    inner: Arc<Inner>,
}

struct Inner {
    store: Store,
    default_registry: Option<(String, bool)>,
    insecure: Vec<String>,
    // A std mutex: only map lookups under it.
    clients: Mutex<HashMap<String, Client>>,
    references: KeyedLocks,
    blobs: KeyedLocks,
    /// Pulls (and their persistence) hold it shared, garbage collection exclusively: a pull's
    /// blobs are not recorded until it is persisted, so GC must not run meanwhile. A tokio lock:
    /// held across the pull.
    gc: Arc<tokio::sync::RwLock<()>>,
    /// Pulled images whose record is not yet durable, answered from memory meanwhile.
    // A std mutex: only map operations under it.
    recent: Mutex<HashMap<String, ImageRecord>>,
    /// The background tasks that make fresh pulls durable; [`ImageCache::flush`] waits for them.
    persisting: TaskTracker,
}

impl std::fmt::Debug for ImageCache {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ImageCache")
            .field("store", &self.inner.store)
            .field("default_registry", &self.inner.default_registry)
            .finish_non_exhaustive()
    }
}

/// What a garbage collection removed.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct GcReport {
    /// Blobs deleted.
    pub blobs: usize,
    /// Bytes freed.
    pub bytes: u64,
}

/// Everything one pull needs to report errors about its image.
struct Target {
    image: ImageRef,
    name: String,
}

impl Target {
    fn oci_error(&self, error: oci_client::errors::OciDistributionError) -> ImageError {
        ImageError::from_oci(
            &self.name,
            self.image.registry(),
            self.image.reference.tag(),
            self.image.reference.digest(),
            error,
        )
    }

    fn invalid(&self, what: &str, detail: impl ToString) -> ImageError {
        ImageError::Invalid {
            image: self.name.clone(),
            what: what.to_string(),
            detail: detail.to_string(),
        }
    }
}

impl ImageCache {
    /// Opens the cache stored under `dir`. `default_registry` is where references without a
    /// registry host live (the cluster's registry, `host:port` or `http://host:port`); without
    /// one they mean Docker Hub, as in Kubernetes.
    pub fn new(dir: &Path, default_registry: Option<String>) -> Result<ImageCache, ImageError> {
        ImageCache::with_insecure_registries(dir, default_registry, Vec::new())
    }

    /// Like [`ImageCache::new`], also speaking plain HTTP to the registry hosts (`host:port`) in
    /// `insecure`. Loopback registries always use plain HTTP.
    pub fn with_insecure_registries(
        dir: &Path,
        default_registry: Option<String>,
        insecure: Vec<String>,
    ) -> Result<ImageCache, ImageError> {
        Ok(ImageCache {
            inner: Arc::new(Inner {
                store: Store::open(dir)?,
                default_registry: default_registry.as_deref().map(reference::parse_registry),
                insecure,
                clients: Mutex::new(HashMap::new()),
                references: KeyedLocks::default(),
                blobs: KeyedLocks::default(),
                gc: Arc::new(tokio::sync::RwLock::new(())),
                recent: Mutex::new(HashMap::new()),
                persisting: TaskTracker::new(),
            }),
        })
    }

    /// The canonical form of a reference as this node resolves it (the cache's key).
    pub fn resolve(&self, reference: &str) -> Result<String, ImageError> {
        Ok(self.image_ref(reference)?.whole())
    }

    fn image_ref(&self, reference: &str) -> Result<ImageRef, ImageError> {
        reference::resolve(
            reference,
            self.inner.default_registry.as_ref(),
            &self.inner.insecure,
        )
    }

    /// Pulls `reference` under `policy`, with credentials from `secrets`.
    ///
    /// `IfNotPresent` and `Never` answer from disk with no network round trip when the image
    /// was pulled before; `Always` asks the registry for the manifest and downloads only blobs
    /// not already stored. Concurrent pulls of one reference run one after the other, so the
    /// second finds the first's blobs.
    pub async fn pull(
        &self,
        reference: &str,
        policy: PullPolicy,
        secrets: &PullSecrets,
    ) -> Result<PulledImage, ImageError> {
        let image = self.image_ref(reference)?;
        let name = image.whole();
        let no_gc = self.inner.gc.clone().read_owned().await;
        let _one_pull = self.inner.references.lock(&name).await;
        let cached = self.cached(&name).await;
        match (policy, cached) {
            (PullPolicy::Never, None) => Err(ImageError::NotPresent { image: name }),
            (PullPolicy::Never | PullPolicy::IfNotPresent, Some(record)) => {
                self.pulled(record, false).await
            }
            (_, cached) => {
                let target = Target { image, name };
                let (record, fetched) = self.fetch(&target, secrets, cached).await?;
                if fetched {
                    self.persist(record.clone(), no_gc);
                }
                self.pulled(record, fetched).await
            }
        }
    }

    /// The record of a pulled image: a fresh one from memory, else from disk.
    async fn cached(&self, name: &str) -> Option<ImageRecord> {
        let recent = self.lock_recent().get(name).cloned();
        match recent {
            Some(record) => Some(record),
            None => self.inner.store.load_record(name).await,
        }
    }

    fn lock_recent(&self) -> std::sync::MutexGuard<'_, HashMap<String, ImageRecord>> {
        self.inner.recent.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Makes a fresh pull durable in the background: syncs its blobs, then writes its record.
    /// Syncing 18 MB costs as much as pulling it on a slow disk, and the pod can start from the
    /// page cache meanwhile; after a crash an image without a record is simply pulled again.
    fn persist(&self, record: ImageRecord, no_gc: tokio::sync::OwnedRwLockReadGuard<()>) {
        self.lock_recent()
            .insert(record.reference.clone(), record.clone());
        let cache = self.clone();
        self.inner.persisting.spawn(async move {
            let store = &cache.inner.store;
            let result = match store.sync_blobs(record.blobs.clone()).await {
                Ok(()) => store.save_record(&record).await,
                Err(e) => Err(e),
            };
            if let Err(e) = result {
                tracing::warn!(image = %record.reference, error = %e, "cannot persist a pulled image; it will be pulled again after a restart");
            }
            let mut recent = cache.lock_recent();
            if recent.get(&record.reference) == Some(&record) {
                recent.remove(&record.reference);
            }
            drop(recent);
            drop(no_gc);
        });
    }

    /// Waits until every pull so far is durable on disk (call before shutdown).
    pub async fn flush(&self) {
        self.inner.persisting.close();
        self.inner.persisting.wait().await;
        self.inner.persisting.reopen();
    }

    /// Whether `reference` is in the cache (no network).
    pub async fn contains(&self, reference: &str) -> Result<bool, ImageError> {
        let name = self.resolve(reference)?;
        Ok(self.cached(&name).await.is_some())
    }

    /// Every image in the cache.
    pub async fn images(&self) -> Result<Vec<ImageRecord>, ImageError> {
        self.flush().await;
        self.inner.store.records().await
    }

    /// Forgets an image; its blobs are deleted by the next [`ImageCache::gc`] unless another
    /// image shares them. Returns whether it was cached.
    pub async fn remove(&self, reference: &str) -> Result<bool, ImageError> {
        let name = self.resolve(reference)?;
        let _one_pull = self.inner.references.lock(&name).await;
        // A pull being persisted would write its record back after the removal.
        self.flush().await;
        self.inner.store.remove_record(&name).await
    }

    /// Deletes every blob no cached image references. Waits for pulls in flight to finish.
    pub async fn gc(&self) -> Result<GcReport, ImageError> {
        let _exclusive = self.inner.gc.write().await;
        let (blobs, bytes) = self.inner.store.collect_garbage().await?;
        Ok(GcReport { blobs, bytes })
    }

    /// A client for this registry, protocol and credentials. Clients are kept because they hold
    /// connection pools and tokens; `oci-client` remembers the first credentials it saw for a
    /// registry, so credentials are part of the key.
    fn client(&self, image: &ImageRef, auth: &RegistryAuth) -> Client {
        let fingerprint = match auth {
            RegistryAuth::Anonymous => String::new(),
            RegistryAuth::Basic(u, p) => hex::encode(Sha256::digest(format!("{u}:{p}"))),
            RegistryAuth::Bearer(t) => hex::encode(Sha256::digest(t)),
        };
        let key = format!("{}|{}|{fingerprint}", image.plain_http, image.registry());
        let mut clients = self.inner.clients.lock().unwrap_or_else(|p| p.into_inner());
        clients
            .entry(key)
            .or_insert_with(|| new_client(image.plain_http))
            .clone()
    }

    async fn fetch(
        &self,
        target: &Target,
        secrets: &PullSecrets,
        cached: Option<ImageRecord>,
    ) -> Result<(ImageRecord, bool), ImageError> {
        let reference = &target.image.reference;
        let auth = secrets.auth_for(reference.registry(), reference.repository());
        let client = self.client(&target.image, &auth);
        let (bytes, digest) = client
            .pull_manifest_raw(reference, &auth, media::MANIFEST_TYPES)
            .await
            .map_err(|e| target.oci_error(e))?;
        verify(target, reference.digest().unwrap_or(&digest), &bytes)?;
        let mut blobs = vec![self.inner.store.write_blob(bytes.to_vec()).await?];
        let mut manifest: Manifest =
            serde_json::from_slice(&bytes).map_err(|e| target.invalid("manifest", e))?;
        let mut manifest_digest = blobs[0].clone();

        if let Some(entries) = &manifest.manifests {
            let entry = media::choose_platform(entries, media::node_arch())
                .ok_or_else(|| ImageError::NoMatchingPlatform {
                    image: target.name.clone(),
                    arch: media::node_arch().to_string(),
                })?
                .clone();
            let child = Reference::with_digest(
                reference.registry().to_string(),
                reference.repository().to_string(),
                entry.digest.clone(),
            );
            let (bytes, _) = client
                .pull_manifest_raw(&child, &auth, media::MANIFEST_TYPES)
                .await
                .map_err(|e| target.oci_error(e))?;
            verify(target, &entry.digest, &bytes)?;
            blobs.push(self.inner.store.write_blob(bytes.to_vec()).await?);
            manifest = serde_json::from_slice(&bytes).map_err(|e| target.invalid("manifest", e))?;
            if manifest.is_index() {
                return Err(target.invalid("manifest", "an index inside an index"));
            }
            manifest_digest = entry.digest;
        }

        if let Some(record) = cached
            && record.digest == manifest_digest
        {
            return Ok((record, false));
        }

        let kind =
            media::classify(&manifest).map_err(|media_type| ImageError::UnknownMediaType {
                image: target.name.clone(),
                media_type,
            })?;
        let (config, content) = match kind {
            Kind::Wasm { layer } => {
                let module = manifest.layers[layer].clone();
                self.fetch_blob(target, &client, &module).await?;
                (None, RecordContent::Wasm { module })
            }
            Kind::Image => {
                let config = manifest
                    .config
                    .clone()
                    .ok_or_else(|| target.invalid("manifest", "no config"))?;
                if config.size > MAX_CONFIG_BYTES {
                    return Err(target.invalid("config", "larger than 4 MiB"));
                }
                self.fetch_blob(target, &client, &config).await?;
                let config_json = self.read_json(target, &config.digest).await?;
                self.fetch_layers(target, &client, &manifest.layers).await?;
                let content = match rootfs::entrypoint_wasm(&config_json) {
                    Some(path) => self.extract_wasm(target, &manifest.layers, path).await?,
                    None if rootfs::is_wasm_platform(&config_json) => {
                        return Err(ImageError::WasmNotInRootfs {
                            image: target.name.clone(),
                            path: "(the entrypoint names no .wasm file)".into(),
                        });
                    }
                    None => RecordContent::Container {
                        layers: manifest.layers.clone(),
                    },
                };
                (Some(config), content)
            }
        };
        blobs.extend(config.iter().map(|c| c.digest.clone()));
        match &content {
            RecordContent::Wasm { module } => blobs.push(module.digest.clone()),
            RecordContent::Container { layers } => {
                blobs.extend(layers.iter().map(|l| l.digest.clone()))
            }
        }
        let pulled_at = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.as_secs());
        let record = ImageRecord {
            reference: target.name.clone(),
            digest: manifest_digest,
            config,
            content,
            blobs,
            pulled_at,
        };
        Ok((record, true))
    }

    async fn fetch_layers(
        &self,
        target: &Target,
        client: &Client,
        layers: &[Descriptor],
    ) -> Result<(), ImageError> {
        futures::stream::iter(layers.iter().map(Ok))
            .try_for_each_concurrent(PARALLEL_LAYERS, |layer| {
                self.fetch_blob(target, client, layer)
            })
            .await
    }

    /// Downloads one blob unless it is stored; verifies it before it appears under its digest.
    async fn fetch_blob(
        &self,
        target: &Target,
        client: &Client,
        descriptor: &Descriptor,
    ) -> Result<(), ImageError> {
        let digest = &descriptor.digest;
        let path =
            self.inner.store.blob_path(digest).ok_or_else(|| {
                target.invalid("manifest", format!("unsupported digest {digest}"))
            })?;
        let _one_download = self.inner.blobs.lock(digest).await;
        if tokio::fs::metadata(&path).await.is_ok() {
            return Ok(());
        }
        let temp = self.inner.store.temp_path();
        let result = self.download(target, client, descriptor, &temp).await;
        match result {
            Ok(()) => tokio::fs::rename(&temp, &path)
                .await
                .map_err(|e| ImageError::io(&path, e)),
            Err(e) => {
                let _ = tokio::fs::remove_file(&temp).await;
                Err(e)
            }
        }
    }

    async fn download(
        &self,
        target: &Target,
        client: &Client,
        descriptor: &Descriptor,
        temp: &Path,
    ) -> Result<(), ImageError> {
        let file = tokio::fs::File::create(temp)
            .await
            .map_err(|e| ImageError::io(temp, e))?;
        let mut writer = tokio::io::BufWriter::with_capacity(1 << 20, file);
        let oci = OciDescriptor {
            media_type: descriptor.media_type.clone(),
            digest: descriptor.digest.clone(),
            size: descriptor.size,
            ..OciDescriptor::default()
        };
        client
            .pull_blob(&target.image.reference, &oci, &mut writer)
            .await
            .map_err(|e| target.oci_error(e))?;
        // Synced later, off the pull's critical path, before a record names it (`persist`).
        writer.flush().await.map_err(|e| ImageError::io(temp, e))
    }

    async fn read_json(
        &self,
        target: &Target,
        digest: &str,
    ) -> Result<serde_json::Value, ImageError> {
        let path = self.blob(digest);
        let bytes = tokio::fs::read(&path)
            .await
            .map_err(|e| ImageError::io(&path, e))?;
        serde_json::from_slice(&bytes).map_err(|e| target.invalid("config", e))
    }

    /// Reads the entrypoint's `.wasm` out of the layers and stores it as a blob of its own.
    async fn extract_wasm(
        &self,
        target: &Target,
        layers: &[Descriptor],
        path: String,
    ) -> Result<RecordContent, ImageError> {
        let files: Vec<LayerFile> = layers
            .iter()
            .map(|l| LayerFile {
                path: self.blob(&l.digest),
                media_type: l.media_type.clone(),
            })
            .collect();
        let p = path.clone();
        let content = blocking(move || rootfs::read_file(&files, &p))
            .await
            .map_err(|e| target.invalid("layer", e))?
            .ok_or_else(|| ImageError::WasmNotInRootfs {
                image: target.name.clone(),
                path,
            })?;
        let size = content.len() as i64;
        let digest = self.inner.store.write_blob(content).await?;
        Ok(RecordContent::Wasm {
            module: Descriptor {
                media_type: media::WASM_LAYER.to_string(),
                digest,
                size,
                platform: None,
            },
        })
    }

    fn blob(&self, digest: &str) -> PathBuf {
        // Every digest in a record was validated when its blob was stored.
        self.inner.store.blob_path(digest).unwrap_or_default()
    }

    async fn pulled(&self, record: ImageRecord, fetched: bool) -> Result<PulledImage, ImageError> {
        let config = match &record.config {
            Some(config) => {
                let target = Target {
                    image: self.image_ref(&record.reference)?,
                    name: record.reference.clone(),
                };
                Some(self.read_json(&target, &config.digest).await?)
            }
            None => None,
        };
        let content = match &record.content {
            RecordContent::Wasm { module } => ImageContent::Wasm {
                path: self.blob(&module.digest),
                digest: module.digest.clone(),
                media_type: module.media_type.clone(),
            },
            RecordContent::Container { layers } => ImageContent::Container {
                layers: layers
                    .iter()
                    .map(|l| LayerBlob {
                        path: self.blob(&l.digest),
                        digest: l.digest.clone(),
                        media_type: l.media_type.clone(),
                    })
                    .collect(),
            },
        };
        Ok(PulledImage {
            reference: record.reference,
            digest: record.digest,
            content,
            config,
            fetched,
        })
    }
}

/// A client speaking HTTP or HTTPS to one registry.
pub(crate) fn new_client(plain_http: bool) -> Client {
    // reqwest is built without a crypto provider of its own; ring is the process default unless
    // something installed another first (then that one is used, which is as good).
    let _ = rustls::crypto::ring::default_provider().install_default();
    Client::new(ClientConfig {
        protocol: if plain_http {
            ClientProtocol::Http
        } else {
            ClientProtocol::Https
        },
        connect_timeout: Some(CONNECT_TIMEOUT),
        read_timeout: Some(READ_TIMEOUT),
        use_monolithic_push: true,
        max_concurrent_download: PARALLEL_LAYERS,
        ..ClientConfig::default()
    })
}

/// Checks that `bytes` hash to `expected`.
fn verify(target: &Target, expected: &str, bytes: &[u8]) -> Result<(), ImageError> {
    let actual = format!("sha256:{}", hex::encode(Sha256::digest(bytes)));
    if expected.starts_with("sha256:") && actual != expected {
        return Err(ImageError::DigestMismatch {
            image: target.name.clone(),
            expected: expected.to_string(),
            actual,
        });
    }
    Ok(())
}
