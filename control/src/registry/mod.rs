//! An OCI distribution registry, served on the API server's listener under `/v2/`.
//!
//! It lets a single-machine user push images (`flotilla image push`, skopeo, oras, docker) to
//! the cluster itself and have nodes pull them with no external registry. It implements the
//! pull, push and content-management parts of the OCI distribution spec: blob upload sessions
//! (monolithic, chunked, mounts), blob `HEAD`/`GET` (with byte ranges), manifests by tag and by
//! digest, the tag list and `/v2/_catalog`. Authentication is the API server's job (its
//! middleware runs before these routes).
//!
//! Modules:
//! - [`storage`](self): the content-addressed layout on disk, atomic writes.
//! - `digest`, `names`: the spec's digest, repository-name and tag grammars.
//! - `uploads`: blob upload sessions and their digest check.
//! - `blobs`: blob reads and deletes.
//! - `manifests`: manifests and tags.
//! - `routes`: maps `/v2/...` paths (whose repository names contain `/`) to the above.
//! - [`error`]: [`RegistryError`] and the spec's JSON error body.

mod blobs;
mod digest;
pub mod error;
mod manifests;
mod names;
mod routes;
mod storage;
mod uploads;

use std::path::Path;
use std::sync::Arc;

pub use digest::Digest;
pub use error::RegistryError;
pub use manifests::{
    DOCKER_MANIFEST, DOCKER_MANIFEST_LIST, MAX_MANIFEST_BYTES, OCI_INDEX, OCI_MANIFEST,
};
pub use routes::{router, serve};

/// A handle on one registry's storage and upload sessions; cheap to clone.
#[derive(Clone, Debug)]
pub struct Registry {
    inner: Arc<Inner>,
}

#[derive(Debug)]
struct Inner {
    storage: storage::Storage,
    uploads: uploads::Sessions,
}

/// One repository and its tags, as [`Registry::catalog`] lists them.
#[derive(Clone, Debug, PartialEq, Eq, serde::Serialize)]
pub struct Repository {
    /// The repository name, e.g. `library/hello`.
    pub name: String,
    /// Its tags, sorted.
    pub tags: Vec<String>,
}

impl Registry {
    /// Opens (creating if needed) the registry stored under `dir`.
    ///
    /// Upload sessions do not survive a restart: their leftover files are deleted here.
    pub fn open(dir: &Path) -> Result<Registry, RegistryError> {
        Ok(Registry {
            inner: Arc::new(Inner {
                storage: storage::Storage::open(dir)?,
                uploads: uploads::Sessions::default(),
            }),
        })
    }

    /// Every repository with its tags, sorted by name (what `flotilla image ls` shows).
    pub async fn catalog(&self) -> Result<Vec<Repository>, RegistryError> {
        let mut catalog = Vec::new();
        for name in self.inner.storage.repositories().await? {
            let tags = self.inner.storage.tags(&name).await?.unwrap_or_default();
            catalog.push(Repository { name, tags });
        }
        Ok(catalog)
    }
}
