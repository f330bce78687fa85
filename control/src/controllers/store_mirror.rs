//! A mirror of one store prefix, kept by a list and then the store's watch (a lean informer):
//! each object's stored bytes with a view parsed once per change. A controller that looks at
//! every object of a kind on a timer reads the mirror instead of listing and decoding the
//! store each time, so an unchanged cluster costs it a walk over memory.

use std::collections::BTreeMap;

use crate::store::{Entry, EventType, ListOptions, Store, StoreError, WatchStream};

/// The objects under one prefix, each as its last [`Entry`] and a view of it.
pub struct StoreMirror<V> {
    prefix: String,
    parse: fn(&Entry) -> V,
    objects: BTreeMap<String, (Entry, V)>,
    watch: Option<WatchStream>,
}

impl<V> StoreMirror<V> {
    /// A mirror of the keys under `prefix`, empty until the first [`StoreMirror::sync`].
    pub fn new(prefix: String, parse: fn(&Entry) -> V) -> Self {
        StoreMirror {
            prefix,
            parse,
            objects: BTreeMap::new(),
            watch: None,
        }
    }

    /// Brings the mirror up to date: the first call (and the first after the watch broke)
    /// lists the prefix; later ones apply the watch events already delivered, without
    /// waiting for more.
    pub async fn sync(&mut self, store: &dyn Store) -> Result<(), StoreError> {
        if let Some(watch) = &mut self.watch {
            loop {
                match watch.try_next() {
                    None => return Ok(()),
                    Some(Some(Ok(e))) => {
                        if e.event_type == EventType::Deleted {
                            self.objects.remove(&e.key);
                        } else {
                            let create_revision = self
                                .objects
                                .get(&e.key)
                                .map_or(e.revision, |(old, _)| old.create_revision);
                            let entry = Entry {
                                key: e.key.clone(),
                                value: e.value.clone(),
                                create_revision,
                                mod_revision: e.revision,
                            };
                            let view = (self.parse)(&entry);
                            self.objects.insert(e.key.clone(), (entry, view));
                        }
                    }
                    // Fell behind or the store shut down: list again.
                    Some(_) => break,
                }
            }
        }
        self.watch = None;
        let listed = store.list(&self.prefix, ListOptions::default()).await?;
        let watch = store.watch(&self.prefix, listed.revision)?;
        self.objects = listed
            .entries
            .into_iter()
            .map(|entry| {
                let view = (self.parse)(&entry);
                (entry.key.clone(), (entry, view))
            })
            .collect();
        self.watch = Some(watch);
        Ok(())
    }

    /// Every object, in key order.
    pub fn iter(&self) -> impl Iterator<Item = &(Entry, V)> {
        self.objects.values()
    }

    /// The objects whose keys start with `prefix` (one namespace, say), in key order.
    pub fn under<'a>(&'a self, prefix: &'a str) -> impl Iterator<Item = &'a (Entry, V)> + 'a {
        self.objects
            .range::<str, _>((
                std::ops::Bound::Included(prefix),
                std::ops::Bound::Unbounded,
            ))
            .take_while(move |(k, _)| k.starts_with(prefix))
            .map(|(_, v)| v)
    }

    /// How many objects the mirror holds.
    pub fn len(&self) -> usize {
        self.objects.len()
    }

    /// Whether the mirror holds no object.
    pub fn is_empty(&self) -> bool {
        self.objects.is_empty()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::{RedbStore, RedbStoreConfig};
    use bytes::Bytes;

    fn length(e: &Entry) -> usize {
        e.value.len()
    }

    #[tokio::test]
    async fn the_mirror_lists_once_then_follows_the_watch() {
        let dir = tempfile::tempdir().unwrap();
        let store = RedbStore::open(RedbStoreConfig::new(dir.path().join("s.redb"))).unwrap();
        store
            .create("/a/1".into(), Bytes::from_static(b"x"))
            .await
            .unwrap();
        store
            .create("/b/1".into(), Bytes::from_static(b"other prefix"))
            .await
            .unwrap();
        let mut mirror = StoreMirror::new("/a/".into(), length);
        mirror.sync(&store).await.unwrap();
        assert_eq!(mirror.len(), 1);

        let created = store
            .create("/a/2".into(), Bytes::from_static(b"yy"))
            .await
            .unwrap();
        store
            .update("/a/1".into(), Bytes::from_static(b"xxx"), None)
            .await
            .unwrap();
        store.delete("/a/2".into(), None).await.unwrap();
        store
            .create("/a/3".into(), Bytes::from_static(b"zzzz"))
            .await
            .unwrap();
        // The store wakes watchers just after it acknowledges a write: wait for the events.
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
        let seen = loop {
            mirror.sync(&store).await.unwrap();
            let seen: Vec<(String, usize, u64)> = mirror
                .iter()
                .map(|(e, v)| (e.key.clone(), *v, e.mod_revision))
                .collect();
            if seen.iter().any(|(k, _, _)| k == "/a/3") {
                break seen;
            }
            assert!(std::time::Instant::now() < deadline, "the events arrive");
            tokio::time::sleep(std::time::Duration::from_millis(5)).await;
        };
        assert_eq!(seen.len(), 2, "{seen:?}");
        assert_eq!((seen[0].0.as_str(), seen[0].1), ("/a/1", 3));
        assert_eq!((seen[1].0.as_str(), seen[1].1), ("/a/3", 4));
        assert!(seen[0].2 > created.mod_revision && seen[1].2 > seen[0].2);
        // The update kept the object's creation revision.
        assert!(mirror.iter().next().unwrap().0.create_revision < created.mod_revision);
    }

    #[tokio::test]
    async fn under_gives_the_objects_of_one_prefix_only() {
        let dir = tempfile::tempdir().unwrap();
        let store = RedbStore::open(RedbStoreConfig::new(dir.path().join("s.redb"))).unwrap();
        for key in ["/a/x/1", "/a/x/2", "/a/xy/1", "/a/w/1", "/a/y/1"] {
            store
                .create(key.into(), Bytes::from_static(b"v"))
                .await
                .unwrap();
        }
        let mut mirror = StoreMirror::new("/a/".into(), length);
        mirror.sync(&store).await.unwrap();
        let keys: Vec<&str> = mirror.under("/a/x/").map(|(e, _)| e.key.as_str()).collect();
        assert_eq!(keys, ["/a/x/1", "/a/x/2"]);
        assert_eq!(mirror.under("/a/z/").count(), 0);
    }

    #[tokio::test]
    async fn one_sync_takes_every_delivered_event_even_past_tokios_cooperative_budget() {
        // Tokio's cooperative budget makes a channel answer `Pending` after ~128 receives in
        // one poll of a task; a drain that stopped there would leave a controller hundreds of
        // events behind after a burst of writes (the node lifecycle controller then judged
        // fresh Leases stale).
        let dir = tempfile::tempdir().unwrap();
        let store = RedbStore::open(RedbStoreConfig::new(dir.path().join("s.redb"))).unwrap();
        let mut mirror = StoreMirror::new("/a/".into(), length);
        mirror.sync(&store).await.unwrap();
        let mut delivered = store.watch("/a/", 0).unwrap();
        let burst = 1000;
        let writes: Vec<_> = (0..burst)
            .map(|i| store.create(format!("/a/{i:04}"), Bytes::from_static(b"x")))
            .collect();
        for w in futures::future::join_all(writes).await {
            w.unwrap();
        }
        // Once another watcher of the prefix has every event, the mirror's has them too.
        let wait = async {
            for _ in 0..burst {
                delivered.next().await.unwrap().unwrap();
            }
        };
        tokio::time::timeout(std::time::Duration::from_secs(10), wait)
            .await
            .expect("the events arrive");
        mirror.sync(&store).await.unwrap();
        assert_eq!(mirror.len(), burst);
    }
}
