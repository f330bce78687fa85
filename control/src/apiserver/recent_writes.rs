//! Pods the API server has just written, kept for the in-process pod cache: the cache's watch
//! delivers the same write as stored bytes, and taking the object from here spares it decoding
//! them again (a full decode of every pod change was the largest single cost of a pod write in
//! the server's profile). A miss (the watch got there first, or the entry was pushed out) is
//! harmless: the cache decodes the bytes as before.

use std::collections::{BTreeMap, HashMap};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use serde_json::Value;
use tokio::sync::Notify;

use crate::store::Revision;

/// How many writes are kept at most; older ones are dropped first.
const CAPACITY: usize = 512;

/// How long [`RecentWrites::take_written`] waits at most for a writer still between its store
/// write and its [`record`](RecentWrites::record) (a writer that runs that long is starved, and
/// decoding is then the quicker way).
const PENDING_WAIT: Duration = Duration::from_millis(20);

/// Recently written objects by revision.
///
/// The store acknowledges a writer and wakes the watchers at the same moment, so the consumer's
/// watch often reaches a write before its writer has recorded it (on two runtime workers,
/// about half the time). A writer therefore announces its key first ([`RecentWrites::pending`])
/// and the consumer waits for a pending key's record rather than decoding.
#[derive(Debug, Default)]
pub struct RecentWrites {
    /// Whether a consumer takes from the set: until one says so, nothing is kept.
    wanted: AtomicBool,
    writes: Mutex<Writes>,
    /// Woken on every record and every pending write that ends.
    changed: Notify,
}

#[derive(Debug, Default)]
struct Writes {
    by_revision: BTreeMap<Revision, (String, Arc<Value>)>,
    /// Keys with a write in flight (announced, not yet recorded or abandoned), and how many.
    pending: HashMap<String, usize>,
}

/// What the set holds for a write the consumer has seen.
enum Lookup {
    Taken(Arc<Value>),
    /// Not recorded, but a writer of that key has not finished: its record may still come.
    Pending,
    Absent,
}

/// A write announced by [`RecentWrites::pending`]; dropping it ends the announcement (after
/// the writer recorded, or when it failed or was cancelled).
#[must_use = "the announcement ends when this is dropped"]
#[derive(Debug)]
pub struct PendingWrite<'a> {
    recent: &'a RecentWrites,
    key: String,
}

impl Drop for PendingWrite<'_> {
    fn drop(&mut self) {
        {
            let mut writes = self.recent.writes.lock().expect("recent writes lock");
            if let Some(n) = writes.pending.get_mut(&self.key) {
                *n -= 1;
                if *n == 0 {
                    writes.pending.remove(&self.key);
                }
            }
        }
        self.recent.changed.notify_waiters();
    }
}

impl RecentWrites {
    /// Starts keeping writes (called by the consumer that takes them).
    pub fn want(&self) {
        self.wanted.store(true, Ordering::Relaxed);
    }

    /// Whether writes are kept.
    pub fn wanted(&self) -> bool {
        self.wanted.load(Ordering::Relaxed)
    }

    /// Announces a write of `key` about to go to the store, if a consumer
    /// [wants](Self::want) writes: until the returned guard is dropped, the consumer waits for
    /// its record instead of decoding the stored bytes.
    pub fn pending(&self, key: &str) -> Option<PendingWrite<'_>> {
        if !self.wanted() {
            return None;
        }
        let mut writes = self.writes.lock().expect("recent writes lock");
        *writes.pending.entry(key.to_string()).or_default() += 1;
        Some(PendingWrite {
            recent: self,
            key: key.to_string(),
        })
    }

    /// Keeps `object`, stored under `key` at `revision` (its `resourceVersion` set to it), if
    /// a consumer [wants](Self::want) writes.
    pub fn record(&self, key: &str, revision: Revision, object: Arc<Value>) {
        if !self.wanted() {
            return;
        }
        {
            let mut writes = self.writes.lock().expect("recent writes lock");
            writes
                .by_revision
                .insert(revision, (key.to_string(), object));
            while writes.by_revision.len() > CAPACITY {
                writes.by_revision.pop_first();
            }
        }
        self.changed.notify_waiters();
    }

    /// The object written under `key` at `revision`, removed from the set, if still kept.
    /// The consumer sees writes in revision order, so older ones still kept (its watch got
    /// there before the writer recorded them) are dropped too.
    pub fn take(&self, key: &str, revision: Revision) -> Option<Arc<Value>> {
        match self.lookup(key, revision) {
            Lookup::Taken(object) => Some(object),
            Lookup::Pending | Lookup::Absent => None,
        }
    }

    /// [`RecentWrites::take`], waiting (up to 20 ms) while a writer of `key` is still
    /// [pending](Self::pending).
    pub async fn take_written(&self, key: &str, revision: Revision) -> Option<Arc<Value>> {
        let deadline = tokio::time::Instant::now() + PENDING_WAIT;
        loop {
            let changed = self.changed.notified();
            tokio::pin!(changed);
            // Registered before the look-up, so a record in between still wakes us.
            changed.as_mut().enable();
            match self.lookup(key, revision) {
                Lookup::Taken(object) => return Some(object),
                Lookup::Absent => return None,
                Lookup::Pending => {}
            }
            if tokio::time::timeout_at(deadline, changed).await.is_err() {
                return self.take(key, revision);
            }
        }
    }

    fn lookup(&self, key: &str, revision: Revision) -> Lookup {
        let mut guard = self.writes.lock().expect("recent writes lock");
        let writes = &mut *guard;
        let map = &mut writes.by_revision;
        while map.first_key_value().is_some_and(|(r, _)| *r < revision) {
            map.pop_first();
        }
        match map.get(&revision) {
            Some((k, _)) if k == key => map
                .remove(&revision)
                .map_or(Lookup::Absent, |(_, o)| Lookup::Taken(o)),
            _ if writes.pending.contains_key(key) => Lookup::Pending,
            _ => Lookup::Absent,
        }
    }

    /// How many writes are kept.
    pub fn len(&self) -> usize {
        self.writes
            .lock()
            .expect("recent writes lock")
            .by_revision
            .len()
    }

    /// Whether none is kept.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn a_write_is_taken_once_by_key_and_revision_and_the_oldest_go_first() {
        let recent = RecentWrites::default();
        recent.record("/pods/a", 7, Arc::new(json!({"n": 7})));
        assert!(
            recent.is_empty(),
            "nothing is kept before a consumer wants it"
        );
        recent.want();
        recent.record("/pods/a", 7, Arc::new(json!({"n": 7})));
        assert_eq!(
            recent.take("/pods/b", 7),
            None,
            "another key at that revision"
        );
        assert_eq!(recent.take("/pods/a", 7).as_deref(), Some(&json!({"n": 7})));
        assert_eq!(recent.take("/pods/a", 7), None, "taken already");
        recent.record("/pods/a", 8, Arc::new(json!(8)));
        recent.record("/pods/a", 10, Arc::new(json!(10)));
        assert_eq!(recent.take("/pods/b", 9), None);
        assert_eq!(recent.len(), 1, "revision 8 was passed over and dropped");
        assert!(recent.take("/pods/a", 10).is_some());
        for rev in 0..(CAPACITY as u64 + 10) {
            recent.record("/pods/x", rev, Arc::new(json!(rev)));
        }
        assert_eq!(recent.len(), CAPACITY);
        assert_eq!(recent.take("/pods/x", 9), None, "pushed out");
        assert!(recent.take("/pods/x", CAPACITY as u64 + 9).is_some());
    }

    #[tokio::test]
    async fn a_consumer_waits_for_a_pending_writer_and_not_for_one_that_gave_up() {
        let recent = Arc::new(RecentWrites::default());
        assert!(
            recent.pending("/pods/a").is_none(),
            "nobody wants writes yet"
        );
        recent.want();

        // The watch saw revision 3 before its writer recorded it: the consumer waits for it.
        let guard = recent.pending("/pods/a").unwrap();
        let waiting = tokio::spawn({
            let recent = recent.clone();
            async move { recent.take_written("/pods/a", 3).await }
        });
        tokio::task::yield_now().await;
        assert!(!waiting.is_finished(), "the writer has not recorded yet");
        recent.record("/pods/a", 3, Arc::new(json!(3)));
        drop(guard);
        let taken = tokio::time::timeout(Duration::from_secs(5), waiting)
            .await
            .expect("the record ends the wait")
            .unwrap();
        assert_eq!(taken.as_deref(), Some(&json!(3)));

        // A writer that fails (or is cancelled) ends the wait with nothing to take.
        let guard = recent.pending("/pods/a").unwrap();
        let waiting = tokio::spawn({
            let recent = recent.clone();
            async move { recent.take_written("/pods/a", 4).await }
        });
        tokio::task::yield_now().await;
        drop(guard);
        let taken = tokio::time::timeout(Duration::from_secs(5), waiting)
            .await
            .expect("the dropped announcement ends the wait")
            .unwrap();
        assert_eq!(taken, None);

        // Another key's pending writer does not hold up this one, and a writer that never
        // finishes holds it up no longer than PENDING_WAIT.
        let _other = recent.pending("/pods/b").unwrap();
        assert_eq!(recent.take_written("/pods/a", 5).await, None);
        let started = std::time::Instant::now();
        assert_eq!(recent.take_written("/pods/b", 6).await, None);
        let waited = started.elapsed();
        assert!(
            waited >= PENDING_WAIT && waited < Duration::from_secs(5),
            "waited {waited:?}"
        );
    }
}
