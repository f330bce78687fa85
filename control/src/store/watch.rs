//! The watch log: a window of recent events that watches replay from, then follow live, and
//! that lists at a past revision undo (see [`WatchLog::history`]).
//!
//! The log is appended to and subscribed to under the owning store's lock, so a new watch sees
//! every event after its starting revision exactly once: the retained ones by replay, the rest
//! through a broadcast channel.

use std::collections::{BTreeMap, VecDeque};
use std::sync::Arc;

use bytes::Bytes;
use tokio::sync::broadcast;

use super::{Entry, Revision, StoreError};

/// What happened to a key.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum EventType {
    /// The key was created.
    Added,
    /// The key's value was replaced.
    Modified,
    /// The key was deleted.
    Deleted,
}

impl EventType {
    /// The one-byte encoding used in the persisted log.
    pub fn to_byte(self) -> u8 {
        match self {
            EventType::Added => 0,
            EventType::Modified => 1,
            EventType::Deleted => 2,
        }
    }

    /// Decodes [`Self::to_byte`].
    pub fn from_byte(b: u8) -> Option<Self> {
        Some(match b {
            0 => EventType::Added,
            1 => EventType::Modified,
            2 => EventType::Deleted,
            _ => return None,
        })
    }
}

/// One change to one key.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct WatchEvent {
    /// The revision of the write.
    pub revision: Revision,
    /// What happened.
    pub event_type: EventType,
    /// The key written.
    pub key: String,
    /// The new value; for a deletion, the last value before it.
    pub value: Bytes,
    /// The value before the write (none for a creation); lets filtered watches see an object
    /// leave their selection.
    pub prev: Option<Bytes>,
    /// The `mod_revision` of `prev` (0 for a creation, and for events written by a version
    /// that did not record it): lets a list be read as of a past revision.
    pub prev_revision: Revision,
    /// The revision at which the key was created (for a deletion, of the entry deleted).
    pub create_revision: Revision,
    /// Wall-clock time of the write in milliseconds since the Unix epoch (drives compaction).
    pub time_ms: u64,
}

/// Broadcast capacity: how far a slow watcher may fall behind before it is told to re-list.
const BROADCAST_CAPACITY: usize = 1 << 16;

/// The retained window of events plus the live broadcast.
#[derive(Debug)]
pub struct WatchLog {
    events: VecDeque<Arc<WatchEvent>>,
    compacted: Revision,
    tx: broadcast::Sender<Arc<WatchEvent>>,
}

impl WatchLog {
    /// A log whose events after `compacted` are the given ones (in revision order).
    pub fn new(compacted: Revision, events: Vec<WatchEvent>) -> Self {
        let (tx, _) = broadcast::channel(BROADCAST_CAPACITY);
        WatchLog {
            events: events.into_iter().map(Arc::new).collect(),
            compacted,
            tx,
        }
    }

    /// Appends committed events (in revision order) and delivers them to live watchers.
    pub fn append(&mut self, events: impl IntoIterator<Item = Arc<WatchEvent>>) {
        for event in events {
            self.events.push_back(event.clone());
            // No receivers is fine: nobody is watching.
            let _ = self.tx.send(event);
        }
    }

    /// The compaction point: events with a revision greater than it are retained.
    pub fn compacted(&self) -> Revision {
        self.compacted
    }

    /// Drops events written before `cutoff_ms`, but always keeps the newest `keep_at_least`.
    /// Returns the new compaction point.
    pub fn compact_older_than(&mut self, cutoff_ms: u64, keep_at_least: usize) -> Revision {
        while self.events.len() > keep_at_least {
            match self.events.front() {
                Some(e) if e.time_ms < cutoff_ms => {
                    self.compacted = e.revision;
                    self.events.pop_front();
                }
                _ => break,
            }
        }
        self.compacted
    }

    /// Drops every event at or below `revision` (the persisted log was compacted to it).
    pub fn compact_through(&mut self, revision: Revision) {
        while self.events.front().is_some_and(|e| e.revision <= revision) {
            self.events.pop_front();
        }
        self.compacted = self.compacted.max(revision);
    }

    /// The compaction point [`Self::compact_older_than`] would reach, without changing the log.
    pub fn probe_compaction(&self, cutoff_ms: u64, keep_at_least: usize) -> Revision {
        let removable = self.events.len().saturating_sub(keep_at_least);
        self.events
            .iter()
            .take(removable)
            .take_while(|e| e.time_ms < cutoff_ms)
            .last()
            .map(|e| e.revision)
            .unwrap_or(self.compacted)
    }

    /// Number of retained events.
    pub fn len(&self) -> usize {
        self.events.len()
    }

    /// Whether no events are retained.
    pub fn is_empty(&self) -> bool {
        self.events.is_empty()
    }

    /// What differs between the present and revision `at` among the keys under `prefix` (and
    /// after `start_after`): each such key's entry at `at`, `None` where it did not exist. Read
    /// with the present state it gives the state at `at`, as etcd reads a range at a past
    /// revision. [`StoreError::Compacted`] when events after `at` are no longer all retained,
    /// or one of them does not know its previous value's revision.
    pub fn history(
        &self,
        prefix: &str,
        start_after: Option<&str>,
        at: Revision,
    ) -> Result<BTreeMap<String, Option<Entry>>, StoreError> {
        let compacted = || StoreError::Compacted {
            requested: at,
            compacted: self.compacted,
        };
        if at < self.compacted {
            return Err(compacted());
        }
        let mut then: BTreeMap<String, Option<Entry>> = BTreeMap::new();
        let start = self.events.partition_point(|e| e.revision <= at);
        for e in self.events.range(start..) {
            if !e.key.starts_with(prefix)
                || start_after.is_some_and(|after| e.key.as_str() <= after)
                || then.contains_key(&e.key)
            {
                continue;
            }
            // The first change after `at` tells what the key held at `at`.
            let entry = match &e.prev {
                None => None,
                Some(_) if e.prev_revision == 0 => return Err(compacted()),
                Some(prev) => Some(Entry {
                    key: e.key.clone(),
                    value: prev.clone(),
                    create_revision: e.create_revision,
                    mod_revision: e.prev_revision,
                }),
            };
            then.insert(e.key.clone(), entry);
        }
        Ok(then)
    }

    /// Starts a watch of keys under `prefix` for events after revision `after`.
    pub fn subscribe(&self, prefix: &str, after: Revision) -> Result<WatchStream, StoreError> {
        if after < self.compacted {
            return Err(StoreError::Compacted {
                requested: after,
                compacted: self.compacted,
            });
        }
        // Events are in revision order: find the first one after `after`.
        let start = self.events.partition_point(|e| e.revision <= after);
        let replay = self
            .events
            .range(start..)
            .filter(|e| e.key.starts_with(prefix))
            .cloned()
            .collect();
        Ok(WatchStream {
            replay,
            rx: self.tx.subscribe(),
            prefix: prefix.to_string(),
            last: self
                .events
                .back()
                .map(|e| e.revision)
                .unwrap_or(after)
                .max(after),
        })
    }
}

/// A stream of events for one watch, in revision order.
#[derive(Debug)]
pub struct WatchStream {
    replay: VecDeque<Arc<WatchEvent>>,
    rx: broadcast::Receiver<Arc<WatchEvent>>,
    prefix: String,
    /// Live events at or below this revision were already replayed.
    last: Revision,
}

impl WatchStream {
    /// The next event; `None` when the store shut down; [`StoreError::Compacted`] when this
    /// watcher fell too far behind and must re-list.
    pub async fn next(&mut self) -> Option<Result<Arc<WatchEvent>, StoreError>> {
        if let Some(e) = self.replay.pop_front() {
            return Some(Ok(e));
        }
        loop {
            match self.rx.recv().await {
                Ok(e) => {
                    if let Some(e) = self.accept(e) {
                        return Some(Ok(e));
                    }
                }
                Err(broadcast::error::RecvError::Lagged(_)) => return Some(Err(self.lagged())),
                Err(broadcast::error::RecvError::Closed) => return None,
            }
        }
    }

    /// What [`WatchStream::next`] would return at once, without waiting: `None` when no
    /// event has been delivered yet. A loop over it drains every delivered event; unlike
    /// polling `next()`, it is not cut short by tokio's cooperative budget (~128 receives
    /// per poll of a task), which would leave a caller behind after a burst of writes.
    pub fn try_next(&mut self) -> Option<Option<Result<Arc<WatchEvent>, StoreError>>> {
        if let Some(e) = self.replay.pop_front() {
            return Some(Some(Ok(e)));
        }
        loop {
            match self.rx.try_recv() {
                Ok(e) => {
                    if let Some(e) = self.accept(e) {
                        return Some(Some(Ok(e)));
                    }
                }
                Err(broadcast::error::TryRecvError::Empty) => return None,
                Err(broadcast::error::TryRecvError::Lagged(_)) => {
                    return Some(Some(Err(self.lagged())));
                }
                Err(broadcast::error::TryRecvError::Closed) => return Some(None),
            }
        }
    }

    /// A live event for this watch (past what was replayed, under its prefix), or `None`.
    fn accept(&mut self, e: Arc<WatchEvent>) -> Option<Arc<WatchEvent>> {
        if e.revision <= self.last || !e.key.starts_with(&self.prefix) {
            return None;
        }
        self.last = e.revision;
        Some(e)
    }

    /// The error of a watcher the broadcast left behind: it must re-list.
    fn lagged(&self) -> StoreError {
        StoreError::Compacted {
            requested: self.last,
            compacted: self.last + 1,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ev(rev: Revision, key: &str, time_ms: u64) -> WatchEvent {
        WatchEvent {
            revision: rev,
            event_type: EventType::Added,
            key: key.into(),
            value: Bytes::from_static(b"{}"),
            prev: None,
            prev_revision: 0,
            create_revision: rev,
            time_ms,
        }
    }

    /// An update of `key` at `rev` from the value written at `prev_rev`.
    fn update(rev: Revision, key: &str, prev_rev: Revision) -> WatchEvent {
        WatchEvent {
            event_type: EventType::Modified,
            value: Bytes::from(format!("v{rev}")),
            prev: Some(Bytes::from(format!("v{prev_rev}"))),
            prev_revision: prev_rev,
            create_revision: 1,
            ..ev(rev, key, 0)
        }
    }

    #[test]
    fn history_tells_each_key_changed_since_a_revision_what_it_held_then() {
        let deleted = WatchEvent {
            event_type: EventType::Deleted,
            prev: Some(Bytes::from("v2")),
            prev_revision: 2,
            create_revision: 2,
            ..ev(5, "/a/2", 0)
        };
        let log = WatchLog::new(
            0,
            vec![
                ev(1, "/a/1", 0),
                ev(2, "/a/2", 0),
                ev(3, "/a/3", 0),
                update(4, "/a/1", 1),
                deleted,
                update(6, "/a/1", 4),
                ev(7, "/b/1", 0),
            ],
        );
        let then = log.history("/a/", None, 3).unwrap();
        // /a/1 held its first value (not the one of revision 4), /a/2 existed, /a/3 is
        // unchanged, /b/ is another prefix.
        assert_eq!(then.len(), 2);
        let a1 = then["/a/1"].as_ref().unwrap();
        assert_eq!((a1.mod_revision, a1.value.as_ref()), (1, &b"v1"[..]));
        assert_eq!(then["/a/2"].as_ref().unwrap().mod_revision, 2);
        // Keys created after the revision did not exist then.
        assert_eq!(log.history("/a/", None, 1).unwrap()["/a/2"], None);
        // Paging: only keys after the last one listed.
        assert_eq!(
            log.history("/a/", Some("/a/1"), 3)
                .unwrap()
                .keys()
                .collect::<Vec<_>>(),
            ["/a/2"]
        );
        // An event that does not know its previous revision cannot be undone.
        let mut old = update(8, "/a/3", 3);
        old.prev_revision = 0;
        let mut log = log;
        log.append([Arc::new(old)]);
        assert!(log.history("/a/", None, 6).is_err());
        assert!(log.history("/a/", None, 8).unwrap().is_empty());
    }

    #[tokio::test]
    async fn a_watch_replays_retained_events_then_follows_live_ones() {
        let mut log = WatchLog::new(
            0,
            vec![ev(1, "/a/1", 0), ev(2, "/b/1", 0), ev(3, "/a/2", 0)],
        );
        let mut w = log.subscribe("/a/", 1).unwrap();
        log.append([Arc::new(ev(4, "/a/3", 0)), Arc::new(ev(5, "/b/2", 0))]);
        let revs: Vec<_> = [w.next().await, w.next().await]
            .into_iter()
            .map(|e| e.unwrap().unwrap().revision)
            .collect();
        assert_eq!(revs, vec![3, 4]);
    }

    #[test]
    fn compaction_keeps_the_newest_events_and_rejects_older_watches() {
        let mut log = WatchLog::new(0, (1..=10).map(|r| ev(r, "/k", r * 10)).collect());
        assert_eq!(log.compact_older_than(55, 2), 5);
        assert_eq!(log.len(), 5);
        assert!(matches!(
            log.subscribe("/", 4),
            Err(StoreError::Compacted { compacted: 5, .. })
        ));
        assert!(log.subscribe("/", 5).is_ok());
        assert!(matches!(
            log.history("/", None, 4),
            Err(StoreError::Compacted { compacted: 5, .. })
        ));
        assert!(log.history("/", None, 5).is_ok());
        assert_eq!(log.compact_older_than(u64::MAX, 2), 8);
    }
}
