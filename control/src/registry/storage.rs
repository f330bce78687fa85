//! Content-addressed storage on disk.
//!
//! Layout under the registry directory (modelled on the distribution project's):
//! ```text
//! blobs/sha256/<hex>                                   blob and manifest content
//! repositories/<name>/_manifests/revisions/sha256/<hex>  "this repo holds manifest <hex>",
//!                                                        content = its media type
//! repositories/<name>/_manifests/tags/<tag>              content = the manifest digest
//! uploads/<uuid>                                       blob upload sessions in progress
//! tmp/                                                 scratch for atomic writes
//! ```
//! Every file that appears under a final name is written elsewhere first, synced, and renamed
//! into place, so a crash never leaves a partial blob under its digest. Names and tags are
//! validated by [`super::names`] before they reach a path, so they cannot escape the root.

use std::io::{self, Write};
use std::path::{Path, PathBuf};

use super::digest::Digest;

/// The directory that marks a repository and holds its manifest links and tags.
const MANIFESTS_DIR: &str = "_manifests";

/// Paths and file operations of one registry directory.
#[derive(Debug)]
pub(crate) struct Storage {
    root: PathBuf,
}

/// Runs blocking file IO off the async workers.
async fn blocking<T: Send + 'static>(
    work: impl FnOnce() -> io::Result<T> + Send + 'static,
) -> io::Result<T> {
    tokio::task::spawn_blocking(work)
        .await
        .map_err(io::Error::other)?
}

/// Treats a missing file as `None`.
fn optional<T>(result: io::Result<T>) -> io::Result<Option<T>> {
    match result {
        Ok(value) => Ok(Some(value)),
        Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(None),
        Err(e) => Err(e),
    }
}

impl Storage {
    /// Creates the layout under `root`, discarding upload sessions and scratch files left by an
    /// earlier process (upload sessions live in memory, so their files are orphans now).
    pub(crate) fn open(root: &Path) -> io::Result<Storage> {
        for dir in ["uploads", "tmp"] {
            let path = root.join(dir);
            if path.exists() {
                std::fs::remove_dir_all(&path)?;
            }
        }
        for dir in ["blobs/sha256", "repositories", "uploads", "tmp"] {
            std::fs::create_dir_all(root.join(dir))?;
        }
        Ok(Storage {
            root: root.to_path_buf(),
        })
    }

    /// Where the blob with this digest lives once committed.
    pub(crate) fn blob_path(&self, digest: &Digest) -> PathBuf {
        self.root.join("blobs/sha256").join(digest.hex())
    }

    /// A fresh path for an upload session's data.
    pub(crate) fn upload_path(&self, id: &str) -> PathBuf {
        self.root.join("uploads").join(id)
    }

    fn temp_path(&self) -> PathBuf {
        self.root.join("tmp").join(uuid::Uuid::new_v4().to_string())
    }

    fn manifests_dir(&self, name: &str) -> PathBuf {
        self.root
            .join("repositories")
            .join(name)
            .join(MANIFESTS_DIR)
    }

    fn revision_path(&self, name: &str, digest: &Digest) -> PathBuf {
        self.manifests_dir(name)
            .join("revisions/sha256")
            .join(digest.hex())
    }

    fn tag_path(&self, name: &str, tag: &str) -> PathBuf {
        self.manifests_dir(name).join("tags").join(tag)
    }

    /// The size of a committed blob, or `None` if it is not stored.
    pub(crate) async fn blob_size(&self, digest: &Digest) -> io::Result<Option<u64>> {
        optional(tokio::fs::metadata(self.blob_path(digest)).await).map(|m| m.map(|m| m.len()))
    }

    /// Moves a fully written, synced and verified file into place under its digest.
    pub(crate) async fn commit_blob(&self, written: PathBuf, digest: &Digest) -> io::Result<()> {
        let target = self.blob_path(digest);
        blocking(move || {
            // Rename over an existing blob is fine: same digest, same content.
            std::fs::rename(&written, &target)
        })
        .await
    }

    /// Stores small content (a manifest) under its digest.
    pub(crate) async fn write_blob(&self, content: Vec<u8>) -> io::Result<Digest> {
        let digest = Digest::of(&content);
        let target = self.blob_path(&digest);
        let temp = self.temp_path();
        blocking(move || {
            if target.exists() {
                return Ok(());
            }
            write_atomically(&temp, &target, &content)
        })
        .await?;
        Ok(digest)
    }

    /// Reads a committed blob whole (for manifests, which are size-limited on upload).
    pub(crate) async fn read_blob(&self, digest: &Digest) -> io::Result<Option<Vec<u8>>> {
        optional(tokio::fs::read(self.blob_path(digest)).await)
    }

    /// Removes a blob; returns whether it existed.
    pub(crate) async fn delete_blob(&self, digest: &Digest) -> io::Result<bool> {
        optional(tokio::fs::remove_file(self.blob_path(digest)).await).map(|r| r.is_some())
    }

    /// Records that repository `name` holds manifest `digest` of `media_type`.
    pub(crate) async fn link_manifest(
        &self,
        name: &str,
        digest: &Digest,
        media_type: &str,
    ) -> io::Result<()> {
        let target = self.revision_path(name, digest);
        let temp = self.temp_path();
        let content = media_type.as_bytes().to_vec();
        blocking(move || write_atomically(&temp, &target, &content)).await
    }

    /// The media type of a manifest the repository holds, or `None`.
    pub(crate) async fn manifest_media_type(
        &self,
        name: &str,
        digest: &Digest,
    ) -> io::Result<Option<String>> {
        let path = self.revision_path(name, digest);
        Ok(optional(tokio::fs::read(path).await)?
            .map(|bytes| String::from_utf8_lossy(&bytes).into_owned()))
    }

    /// Points `tag` at `digest`.
    pub(crate) async fn set_tag(&self, name: &str, tag: &str, digest: &Digest) -> io::Result<()> {
        let target = self.tag_path(name, tag);
        let temp = self.temp_path();
        let content = digest.to_string().into_bytes();
        blocking(move || write_atomically(&temp, &target, &content)).await
    }

    /// The digest a tag points at, or `None`.
    pub(crate) async fn resolve_tag(&self, name: &str, tag: &str) -> io::Result<Option<Digest>> {
        let Some(bytes) = optional(tokio::fs::read(self.tag_path(name, tag)).await)? else {
            return Ok(None);
        };
        let text = String::from_utf8_lossy(&bytes);
        Digest::parse(text.trim())
            .map(Some)
            .map_err(|e| io::Error::new(io::ErrorKind::InvalidData, e.to_string()))
    }

    /// Removes a tag; returns whether it existed.
    pub(crate) async fn delete_tag(&self, name: &str, tag: &str) -> io::Result<bool> {
        optional(tokio::fs::remove_file(self.tag_path(name, tag)).await).map(|r| r.is_some())
    }

    /// Removes a manifest from a repository with every tag pointing at it; returns whether the
    /// repository held it.
    pub(crate) async fn unlink_manifest(&self, name: &str, digest: &Digest) -> io::Result<bool> {
        let existed =
            optional(tokio::fs::remove_file(self.revision_path(name, digest)).await)?.is_some();
        if let Some(tags) = self.tags(name).await? {
            for tag in tags {
                if self.resolve_tag(name, &tag).await?.as_ref() == Some(digest) {
                    self.delete_tag(name, &tag).await?;
                }
            }
        }
        Ok(existed)
    }

    /// Whether the repository has ever held a manifest.
    pub(crate) async fn repository_exists(&self, name: &str) -> bool {
        tokio::fs::metadata(self.manifests_dir(name)).await.is_ok()
    }

    /// The repository's tags, sorted, or `None` if the repository is unknown.
    pub(crate) async fn tags(&self, name: &str) -> io::Result<Option<Vec<String>>> {
        if !self.repository_exists(name).await {
            return Ok(None);
        }
        let dir = self.manifests_dir(name).join("tags");
        blocking(move || {
            let mut tags = Vec::new();
            if let Some(entries) = optional(std::fs::read_dir(&dir))? {
                for entry in entries {
                    tags.push(entry?.file_name().to_string_lossy().into_owned());
                }
            }
            tags.sort();
            Ok(Some(tags))
        })
        .await
    }

    /// Every repository name, sorted.
    pub(crate) async fn repositories(&self) -> io::Result<Vec<String>> {
        let root = self.root.join("repositories");
        blocking(move || {
            let mut found = Vec::new();
            let mut pending = vec![(root.clone(), String::new())];
            while let Some((dir, name)) = pending.pop() {
                for entry in std::fs::read_dir(&dir)? {
                    let entry = entry?;
                    if !entry.file_type()?.is_dir() {
                        continue;
                    }
                    let file_name = entry.file_name().to_string_lossy().into_owned();
                    if file_name == MANIFESTS_DIR {
                        found.push(name.clone());
                    } else if !file_name.starts_with('_') {
                        let child = if name.is_empty() {
                            file_name
                        } else {
                            format!("{name}/{file_name}")
                        };
                        pending.push((entry.path(), child));
                    }
                }
            }
            found.sort();
            Ok(found)
        })
        .await
    }
}

/// Writes `content` to `temp`, syncs it, and renames it to `target` (creating parents).
fn write_atomically(temp: &Path, target: &Path, content: &[u8]) -> io::Result<()> {
    let mut file = std::fs::File::create(temp)?;
    file.write_all(content)?;
    file.sync_all()?;
    drop(file);
    if let Some(parent) = target.parent() {
        std::fs::create_dir_all(parent)?;
    }
    std::fs::rename(temp, target)
}
