//! Pods the API server has just written, kept for the in-process pod cache: the cache's watch
//! delivers the same write as stored bytes, and taking the object from here spares it decoding
//! them again (a full decode of every pod change was the largest single cost of a pod write in
//! the server's profile). A miss (the watch got there first, or the entry was pushed out) is
//! harmless: the cache decodes the bytes as before.

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};

use serde_json::Value;

use crate::store::Revision;

/// How many writes are kept at most; older ones are dropped first.
const CAPACITY: usize = 512;

/// Recently written objects by revision.
#[derive(Debug, Default)]
pub struct RecentWrites {
    /// Whether a consumer takes from the set: until one says so, nothing is kept.
    wanted: AtomicBool,
    by_revision: Mutex<BTreeMap<Revision, (String, Arc<Value>)>>,
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

    /// Keeps `object`, stored under `key` at `revision` (its `resourceVersion` set to it), if
    /// a consumer [wants](Self::want) writes.
    pub fn record(&self, key: &str, revision: Revision, object: Arc<Value>) {
        if !self.wanted() {
            return;
        }
        let mut map = self.by_revision.lock().expect("recent writes lock");
        map.insert(revision, (key.to_string(), object));
        while map.len() > CAPACITY {
            map.pop_first();
        }
    }

    /// The object written under `key` at `revision`, removed from the set, if still kept.
    /// The consumer sees writes in revision order, so older ones still kept (its watch got
    /// there before the writer recorded them) are dropped too.
    pub fn take(&self, key: &str, revision: Revision) -> Option<Arc<Value>> {
        let mut map = self.by_revision.lock().expect("recent writes lock");
        while map.first_key_value().is_some_and(|(r, _)| *r < revision) {
            map.pop_first();
        }
        match map.get(&revision) {
            Some((k, _)) if k == key => map.remove(&revision).map(|(_, o)| o),
            _ => None,
        }
    }

    /// How many writes are kept.
    pub fn len(&self) -> usize {
        self.by_revision.lock().expect("recent writes lock").len()
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
}
