//! The store: a revisioned key-value map with compare-and-swap writes and a watch log.
//!
//! - [`Store`]: the trait every backend implements (the API server only talks to this).
//! - [`redb`]: the embedded default backend, with group commit and an in-memory read index.
//! - [`wal`]: its write-ahead log, where a batch of writes becomes durable with one flush.
//! - [`watch`]: the watch log shared by backends: a bounded window of events, resumable from any
//!   retained revision, from which a list is also read as of any retained revision.
//!
//! Keys look like `/registry/<group>/<resource>/<namespace>/<name>`; values are opaque bytes (the
//! API server stores object JSON without `metadata.resourceVersion`, which is the entry's
//! `mod_revision`). One global revision counts every write.

pub mod redb;
pub mod stats;
pub mod wal;
pub mod watch;

use std::future::Future;
use std::pin::Pin;

use bytes::Bytes;

pub use self::redb::{DEFAULT_WAL_SIZE, RedbStore, RedbStoreConfig};
pub use self::stats::StoreStats;
pub use self::watch::{EventType, WatchEvent, WatchStream};

/// A store revision; the `resourceVersion` of Kubernetes objects.
pub type Revision = u64;

/// One stored key with its value and revisions.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Entry {
    /// The key.
    pub key: String,
    /// The value bytes (object JSON).
    pub value: Bytes,
    /// Revision at which the key was created.
    pub create_revision: Revision,
    /// Revision of the last write to the key (its `resourceVersion`).
    pub mod_revision: Revision,
}

/// Options of a list call.
#[derive(Debug, Clone, Default)]
pub struct ListOptions {
    /// Only keys strictly greater than this one (for paging with `continue`).
    pub start_after: Option<String>,
    /// At most this many entries (0 = no limit).
    pub limit: usize,
    /// Read as of this past revision instead of the present ([`StoreError::Compacted`] once
    /// the watch log no longer retains every event after it); `None` for the present.
    pub revision: Option<Revision>,
}

/// The result of a list call.
#[derive(Debug, Clone)]
pub struct ListResult {
    /// The entries, in key order.
    pub entries: Vec<Entry>,
    /// The store revision the list was read at (the one asked for, or the present).
    pub revision: Revision,
    /// Whether entries remain after the last one returned.
    pub more: bool,
}

/// Errors of store operations.
#[derive(Debug, thiserror::Error, Clone, PartialEq, Eq)]
pub enum StoreError {
    /// The key does not exist.
    #[error("key not found: {0}")]
    NotFound(String),
    /// A create found the key present.
    #[error("key already exists: {0}")]
    AlreadyExists(String),
    /// A compare-and-swap found a different revision.
    #[error("revision conflict on {key}: expected {expected}, found {actual}")]
    Conflict {
        /// The key written.
        key: String,
        /// The revision the caller expected.
        expected: Revision,
        /// The revision found.
        actual: Revision,
    },
    /// A watch asked for a revision older than the retained window.
    #[error("revision {requested} is compacted (oldest retained is {compacted})")]
    Compacted {
        /// The revision asked for.
        requested: Revision,
        /// The compaction point: events after it are retained.
        compacted: Revision,
    },
    /// The backend failed (I/O, corruption, shut down).
    #[error("storage failure: {0}")]
    Backend(String),
}

/// A boxed future, so that [`Store`] is object safe.
pub type StoreFuture<'a, T> = Pin<Box<dyn Future<Output = Result<T, StoreError>> + Send + 'a>>;

/// A revisioned key-value store with compare-and-swap writes and resumable watches.
///
/// Every write is durable when its future resolves; every successful write gets a new, strictly
/// increasing revision and exactly one watch event.
pub trait Store: Send + Sync + 'static {
    /// Reads one key.
    fn get<'a>(&'a self, key: &'a str) -> StoreFuture<'a, Option<Entry>>;

    /// Lists keys starting with `prefix`, in key order, as of the present or of a past
    /// revision still in the watch log's window.
    fn list<'a>(&'a self, prefix: &'a str, options: ListOptions) -> StoreFuture<'a, ListResult>;

    /// Creates a key; fails with [`StoreError::AlreadyExists`] if present.
    fn create(&self, key: String, value: Bytes) -> StoreFuture<'_, Entry>;

    /// Replaces a key's value; when `expected` is given the write only happens if the key's
    /// `mod_revision` still equals it ([`StoreError::Conflict`] otherwise).
    fn update(
        &self,
        key: String,
        value: Bytes,
        expected: Option<Revision>,
    ) -> StoreFuture<'_, Entry>;

    /// Deletes a key (optionally compare-and-swap); returns the deleted entry, whose
    /// `mod_revision` is the revision of the deletion.
    fn delete(&self, key: String, expected: Option<Revision>) -> StoreFuture<'_, Entry>;

    /// Watches keys starting with `prefix` for events with revision greater than `after`.
    /// Fails with [`StoreError::Compacted`] if `after` is older than the retained window.
    fn watch(&self, prefix: &str, after: Revision) -> Result<WatchStream, StoreError>;

    /// The current (latest committed) revision.
    fn current_revision(&self) -> Revision;

    /// Counters of the work done since the store opened, for `/metrics`. A backend that
    /// counts nothing answers zeros.
    fn stats(&self) -> StoreStats {
        StoreStats::default()
    }
}
