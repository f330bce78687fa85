//! The node's image storage on disk: blobs by digest, one record per pulled reference.
//!
//! ```text
//! blobs/sha256/<hex>        manifests, configs, layers, Wasm modules; shared by all images
//! images/<hex of ref>.json  what a reference resolved to (an [`ImageRecord`])
//! tmp/                      downloads in progress; renamed into blobs/ once verified
//! ```
//! A blob appears under its digest only after its content was hashed and matched, by an
//! atomic rename, so a crash or a bad download never leaves a wrong file under a digest.

use std::io;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};
use sha2::{Digest as _, Sha256};

use super::ImageError;
use super::media::Descriptor;

/// What one pulled reference resolved to; enough to answer a later pull with no network.
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq, Eq)]
pub struct ImageRecord {
    /// The canonical reference (`registry/repository:tag` or `...@digest`).
    pub reference: String,
    /// The digest of the image manifest (the platform's manifest for an index).
    pub digest: String,
    /// The config blob, if the image has one worth keeping.
    pub config: Option<Descriptor>,
    /// The payload.
    pub content: RecordContent,
    /// Every blob the image needs (manifests, config, layers, extracted module).
    pub blobs: Vec<String>,
    /// When it was pulled, in seconds since the Unix epoch.
    pub pulled_at: u64,
}

/// The payload of an [`ImageRecord`].
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq, Eq)]
#[serde(tag = "kind", rename_all = "lowercase")]
pub enum RecordContent {
    /// A Wasm module or component stored as the blob `module`.
    Wasm {
        /// The module's blob descriptor (for a rootfs module, the extracted file's digest).
        module: Descriptor,
    },
    /// A container image's layers, bottom first.
    Container {
        /// The layer descriptors.
        layers: Vec<Descriptor>,
    },
}

/// Paths and file operations of one cache directory.
#[derive(Debug)]
pub(crate) struct Store {
    root: PathBuf,
}

pub(crate) async fn blocking<T: Send + 'static>(
    work: impl FnOnce() -> io::Result<T> + Send + 'static,
) -> io::Result<T> {
    tokio::task::spawn_blocking(work)
        .await
        .map_err(io::Error::other)?
}

impl Store {
    /// Creates the layout, discarding downloads an earlier process left unfinished.
    pub(crate) fn open(root: &Path) -> Result<Store, ImageError> {
        let tmp = root.join("tmp");
        if tmp.exists() {
            std::fs::remove_dir_all(&tmp).map_err(|e| ImageError::io(&tmp, e))?;
        }
        for dir in ["blobs/sha256", "images", "tmp"] {
            let path = root.join(dir);
            std::fs::create_dir_all(&path).map_err(|e| ImageError::io(&path, e))?;
        }
        Ok(Store {
            root: root.to_path_buf(),
        })
    }

    /// Where the blob `digest` lives; `None` for a digest this store cannot hold.
    pub(crate) fn blob_path(&self, digest: &str) -> Option<PathBuf> {
        let hex = digest.strip_prefix("sha256:")?;
        let valid = hex.len() == 64 && hex.bytes().all(|b| b.is_ascii_hexdigit());
        valid.then(|| self.root.join("blobs/sha256").join(hex))
    }

    /// A fresh scratch path.
    pub(crate) fn temp_path(&self) -> PathBuf {
        self.root.join("tmp").join(uuid::Uuid::new_v4().to_string())
    }

    /// Whether the blob is stored.
    pub(crate) async fn has_blob(&self, digest: &str) -> bool {
        match self.blob_path(digest) {
            Some(path) => tokio::fs::metadata(path).await.is_ok(),
            None => false,
        }
    }

    /// Stores small content under its digest; returns the digest.
    pub(crate) async fn write_blob(&self, content: Vec<u8>) -> Result<String, ImageError> {
        let digest = format!("sha256:{}", hex::encode(Sha256::digest(&content)));
        let target = self.blob_path(&digest).expect("a sha256 digest has a path");
        let temp = self.temp_path();
        let t = target.clone();
        blocking(move || {
            if t.exists() {
                return Ok(());
            }
            // Not synced here: `sync_blobs` makes it durable before a record names it.
            std::fs::write(&temp, &content)?;
            std::fs::rename(&temp, &t)
        })
        .await
        .map_err(|e| ImageError::io(&target, e))?;
        Ok(digest)
    }

    fn record_path(&self, reference: &str) -> PathBuf {
        let key = hex::encode(Sha256::digest(reference.as_bytes()));
        self.root.join("images").join(format!("{key}.json"))
    }

    /// The record of `reference`, if it was pulled and all its blobs are still here.
    pub(crate) async fn load_record(&self, reference: &str) -> Option<ImageRecord> {
        let bytes = tokio::fs::read(self.record_path(reference)).await.ok()?;
        let record: ImageRecord = serde_json::from_slice(&bytes).ok()?;
        if record.reference != reference {
            return None;
        }
        for blob in &record.blobs {
            if !self.has_blob(blob).await {
                return None;
            }
        }
        Some(record)
    }

    /// Flushes blobs (and the directory entries naming them) to disk.
    pub(crate) async fn sync_blobs(&self, digests: Vec<String>) -> Result<(), ImageError> {
        let paths: Vec<PathBuf> = digests.iter().filter_map(|d| self.blob_path(d)).collect();
        let dir = self.root.join("blobs/sha256");
        let d = dir.clone();
        blocking(move || {
            for path in paths {
                std::fs::File::open(path)?.sync_all()?;
            }
            std::fs::File::open(&d)?.sync_all()
        })
        .await
        .map_err(|e| ImageError::io(&dir, e))
    }

    /// Saves a record atomically and durably. Its blobs must already be synced: a record is the
    /// promise, after a crash, that the image is whole on disk.
    pub(crate) async fn save_record(&self, record: &ImageRecord) -> Result<(), ImageError> {
        let target = self.record_path(&record.reference);
        let temp = self.temp_path();
        let content = serde_json::to_vec_pretty(record).map_err(io::Error::other);
        let t = target.clone();
        blocking(move || {
            let mut file = std::fs::File::create(&temp)?;
            std::io::Write::write_all(&mut file, &content?)?;
            file.sync_all()?;
            std::fs::rename(&temp, &t)?;
            match t.parent() {
                Some(dir) => std::fs::File::open(dir)?.sync_all(),
                None => Ok(()),
            }
        })
        .await
        .map_err(|e| ImageError::io(&target, e))
    }

    /// Forgets a reference; returns whether it was recorded. Its blobs go at the next GC.
    pub(crate) async fn remove_record(&self, reference: &str) -> Result<bool, ImageError> {
        let path = self.record_path(reference);
        match tokio::fs::remove_file(&path).await {
            Ok(()) => Ok(true),
            Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(false),
            Err(e) => Err(ImageError::io(&path, e)),
        }
    }

    /// Every record.
    pub(crate) async fn records(&self) -> Result<Vec<ImageRecord>, ImageError> {
        let dir = self.root.join("images");
        let d = dir.clone();
        blocking(move || {
            let mut records = Vec::new();
            for entry in std::fs::read_dir(&d)? {
                let bytes = std::fs::read(entry?.path())?;
                if let Ok(record) = serde_json::from_slice::<ImageRecord>(&bytes) {
                    records.push(record);
                }
            }
            records.sort_by(|a: &ImageRecord, b| a.reference.cmp(&b.reference));
            Ok(records)
        })
        .await
        .map_err(|e| ImageError::io(&dir, e))
    }

    /// Deletes every blob no record names; returns (blobs removed, bytes freed).
    ///
    /// The caller must hold off pulls while this runs (a pull's blobs are not recorded until
    /// it finishes).
    pub(crate) async fn collect_garbage(&self) -> Result<(usize, u64), ImageError> {
        let mut keep = std::collections::HashSet::new();
        for record in self.records().await? {
            keep.extend(
                record
                    .blobs
                    .iter()
                    .filter_map(|d| d.strip_prefix("sha256:").map(String::from)),
            );
        }
        let dir = self.root.join("blobs/sha256");
        let d = dir.clone();
        blocking(move || {
            let (mut count, mut bytes) = (0, 0);
            for entry in std::fs::read_dir(&d)? {
                let entry = entry?;
                let name = entry.file_name().to_string_lossy().into_owned();
                if !keep.contains(&name) {
                    bytes += entry.metadata().map(|m| m.len()).unwrap_or(0);
                    std::fs::remove_file(entry.path())?;
                    count += 1;
                }
            }
            Ok((count, bytes))
        })
        .await
        .map_err(|e| ImageError::io(&dir, e))
    }
}
