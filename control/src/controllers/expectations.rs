//! Expectations (Kubernetes' `UIDTrackingControllerExpectations`): the pod creations and
//! deletions a controller issued for an owner and its [`pod cache`](super::pod_cache) has not
//! observed yet.
//!
//! A controller that decides from the cache records what it is about to write *before*
//! writing, and does not create or delete for that owner again until every write was observed
//! (the cache's events lower the counts) or [`Expectations::timeout`] passed (an observation
//! was lost, e.g. a pod created and deleted while the cache was re-listing). That way a cache
//! lagging the store by a few events never makes the controller create a replica twice.
//! Expectations live in memory only: after a restart the cache lists the store before any
//! sync, so there is nothing in flight to expect.

use std::collections::{HashMap, HashSet};
use std::sync::Mutex;
use std::time::{Duration, Instant};

use super::runner::ObjectKey;

/// How long Kubernetes waits for a lost observation before acting again (its
/// `ExpectationsTimeout`).
pub const DEFAULT_TIMEOUT: Duration = Duration::from_secs(5 * 60);

/// What an owner still waits for.
#[derive(Debug)]
struct Pending {
    /// Creations not yet observed.
    adds: u64,
    /// Names of pods whose deletion was not yet observed (by name, so the two events of a
    /// graceful deletion — `deletionTimestamp` set, then removal — count once).
    deletes: HashSet<String>,
    /// When these were recorded.
    since: Instant,
}

impl Pending {
    fn is_empty(&self) -> bool {
        self.adds == 0 && self.deletes.is_empty()
    }
}

/// Per-owner expectations; shared between the sync (which raises them) and the cache's event
/// handler (which lowers them).
#[derive(Debug)]
pub struct Expectations {
    // A std mutex: never held across an await.
    pending: Mutex<HashMap<ObjectKey, Pending>>,
    timeout: Duration,
}

impl Default for Expectations {
    fn default() -> Self {
        Self::new(DEFAULT_TIMEOUT)
    }
}

impl Expectations {
    /// Expectations that are given up after `timeout`.
    pub fn new(timeout: Duration) -> Expectations {
        Expectations {
            pending: Mutex::new(HashMap::new()),
            timeout,
        }
    }

    /// How long an unobserved write is waited for.
    pub fn timeout(&self) -> Duration {
        self.timeout
    }

    /// `None` when `owner` may act on what the cache shows (everything it wrote was observed,
    /// or the wait timed out); otherwise how long until the wait times out.
    pub fn unsatisfied(&self, owner: &ObjectKey) -> Option<Duration> {
        let mut pending = self.pending.lock().expect("expectations lock");
        let p = pending.get(owner)?;
        let waited = p.since.elapsed();
        if p.is_empty() || waited >= self.timeout {
            if waited >= self.timeout && !p.is_empty() {
                tracing::info!(owner = %owner, adds = p.adds, deletes = p.deletes.len(), "expectations timed out; syncing from the cache");
            }
            pending.remove(owner);
            return None;
        }
        Some(self.timeout - waited)
    }

    /// Records that `owner` is about to create `n` pods (replaces what was recorded: a
    /// controller only writes once its previous expectations are satisfied).
    pub fn expect_creations(&self, owner: &ObjectKey, n: u64) {
        self.set(owner, n, HashSet::new());
    }

    /// Records that `owner` is about to delete the pods `names`.
    pub fn expect_deletions(&self, owner: &ObjectKey, names: impl IntoIterator<Item = String>) {
        self.set(owner, 0, names.into_iter().collect());
    }

    fn set(&self, owner: &ObjectKey, adds: u64, deletes: HashSet<String>) {
        let p = Pending {
            adds,
            deletes,
            since: Instant::now(),
        };
        let mut pending = self.pending.lock().expect("expectations lock");
        if p.is_empty() {
            pending.remove(owner);
        } else {
            pending.insert(owner.clone(), p);
        }
    }

    /// The cache saw one of `owner`'s pods appear, or a creation failed and will never be
    /// seen.
    pub fn creation_observed(&self, owner: &ObjectKey) {
        self.lower(owner, |p| p.adds = p.adds.saturating_sub(1));
    }

    /// The cache saw `owner`'s pod `name` being deleted or gone, or its deletion failed.
    pub fn deletion_observed(&self, owner: &ObjectKey, name: &str) {
        self.lower(owner, |p| {
            p.deletes.remove(name);
        });
    }

    fn lower(&self, owner: &ObjectKey, f: impl FnOnce(&mut Pending)) {
        let mut pending = self.pending.lock().expect("expectations lock");
        if let Some(p) = pending.get_mut(owner) {
            f(p);
            if p.is_empty() {
                pending.remove(owner);
            }
        }
    }

    /// Drops what `owner` waited for (it is gone).
    pub fn forget(&self, owner: &ObjectKey) {
        self.pending
            .lock()
            .expect("expectations lock")
            .remove(owner);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn key(name: &str) -> ObjectKey {
        ObjectKey {
            namespace: Some("ns".into()),
            name: name.into(),
        }
    }

    #[test]
    fn creations_are_awaited_until_each_is_observed() {
        let e = Expectations::default();
        assert_eq!(e.unsatisfied(&key("rs")), None);
        e.expect_creations(&key("rs"), 2);
        assert!(e.unsatisfied(&key("rs")).is_some());
        // Another owner is not held up.
        assert_eq!(e.unsatisfied(&key("other")), None);
        e.creation_observed(&key("rs"));
        assert!(e.unsatisfied(&key("rs")).is_some());
        e.creation_observed(&key("rs"));
        assert_eq!(e.unsatisfied(&key("rs")), None);
        // More observations than expected (pods created by a relist) are harmless.
        e.creation_observed(&key("rs"));
        assert_eq!(e.unsatisfied(&key("rs")), None);
    }

    #[test]
    fn a_deletion_counts_once_however_often_it_is_observed() {
        let e = Expectations::default();
        e.expect_deletions(&key("rs"), ["a".to_string(), "b".to_string()]);
        e.deletion_observed(&key("rs"), "a");
        e.deletion_observed(&key("rs"), "a");
        assert!(e.unsatisfied(&key("rs")).is_some());
        e.deletion_observed(&key("rs"), "b");
        assert_eq!(e.unsatisfied(&key("rs")), None);
    }

    #[test]
    fn unobserved_writes_are_given_up_after_the_timeout() {
        let e = Expectations::new(Duration::from_millis(30));
        e.expect_creations(&key("rs"), 1);
        let left = e.unsatisfied(&key("rs")).unwrap();
        assert!(left <= Duration::from_millis(30));
        std::thread::sleep(Duration::from_millis(40));
        assert_eq!(e.unsatisfied(&key("rs")), None);
    }

    #[test]
    fn nothing_to_expect_and_forgotten_owners_are_satisfied() {
        let e = Expectations::default();
        e.expect_creations(&key("rs"), 0);
        assert_eq!(e.unsatisfied(&key("rs")), None);
        e.expect_deletions(&key("rs"), ["a".to_string()]);
        e.forget(&key("rs"));
        assert_eq!(e.unsatisfied(&key("rs")), None);
    }
}
